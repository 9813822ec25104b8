#!/usr/bin/env python3
"""The application starting on another host: it reads its config from the share.

A missing config means a first start: it runs on built-in defaults. A config that does not parse
is fatal: it refuses to start (exit 1), which is what the on-call saw once in a while after deploys.
"""
import argparse
import json
import random
import sys
import time


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", required=True)
    p.add_argument("--start-delay-ms", type=int, default=400, help="starts after a random delay up to this")
    a = p.parse_args()
    time.sleep(random.uniform(0, a.start_delay_ms / 1000))
    try:
        with open(a.config) as f:
            text = f.read()
    except FileNotFoundError:
        print("no config yet: starting with built-in defaults", flush=True)
        return 0
    try:
        config = json.loads(text)
    except json.JSONDecodeError as e:
        print(f"E: config {a.config} is not valid JSON ({e}); refusing to start", flush=True)
        return 1
    print(f"started with config version {config['version']} and {len(config['backends'])} backends", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

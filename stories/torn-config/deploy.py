#!/usr/bin/env python3
"""The deploy job: renders the application's config and writes it in place.

It opens the live file with O_TRUNC and writes it in two parts, rendering the second while the
first is already on disk (a slow template, a slow NFS server). Anyone reading the file in between
sees half a JSON document. The fix is the usual one: write a temporary file and rename(2) it.
"""
import argparse
import json
import time


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", required=True, help="the live config file, on a share every host sees")
    p.add_argument("--version", type=int, default=1)
    p.add_argument("--render-ms", type=int, default=150, help="time to render the second part")
    a = p.parse_args()
    config = {
        "version": a.version,
        "listen": "0.0.0.0:8080",
        "backends": [{"host": f"10.0.{i // 250}.{i % 250 + 1}", "port": 9000 + i, "weight": 1 + i % 3} for i in range(64)],
        "timeouts": {"connect_ms": 250, "read_ms": 2000},
    }
    text = json.dumps(config, indent=2)
    half = len(text) // 2
    with open(a.config, "w") as f:  # O_WRONLY|O_CREAT|O_TRUNC on the live file
        f.write(text[:half])
        f.flush()
        time.sleep(a.render_ms / 1000)
        f.write(text[half:])
        f.flush()
    print(f"deployed config version {a.version} to {a.config}", flush=True)


if __name__ == "__main__":
    main()

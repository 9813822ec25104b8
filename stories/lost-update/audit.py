#!/usr/bin/env python3
"""The audit: sets the counter to 0, waits until both jobs say they are done, and checks that
both bumps arrived (exit 1 naming the lost one otherwise)."""
import argparse
import os
import sys
import time


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--counter", required=True)
    p.add_argument("--done", nargs="+", required=True)
    p.add_argument("--wait-s", type=float, default=30)
    a = p.parse_args()
    deadline = time.monotonic() + a.wait_s
    while not all(os.path.exists(d) for d in a.done):
        if time.monotonic() > deadline:
            print("E: the jobs did not finish", flush=True)
            return 2
        time.sleep(0.02)
    with open(a.counter) as f:
        value = int(f.read())
    if value != len(a.done):
        print(f"E: lost update: counter is {value} after {len(a.done)} bumps", flush=True)
        return 1
    print(f"counter is {value}: every bump arrived", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

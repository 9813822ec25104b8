#!/usr/bin/env python3
"""Counts the records in a rotated log and its compressed copy once the rotation and the flush
are over; every record written must be in one of them.
"""
import argparse
import gzip
import os
import sys
import time


def count(path, opener):
    try:
        with opener(path, "rb") as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--log", required=True)
    p.add_argument("--expect", type=int, required=True, help="records written in all")
    p.add_argument("--wait-for", action="append", default=[], help="a file that must exist first")
    p.add_argument("--timeout-s", type=float, default=15)
    a = p.parse_args()
    deadline = time.monotonic() + a.timeout_s
    while not all(os.path.exists(w) for w in a.wait_for):
        if time.monotonic() > deadline:
            print("audit: timed out waiting for", ", ".join(a.wait_for), file=sys.stderr, flush=True)
            sys.exit(2)
        time.sleep(0.02)
    found = count(a.log + ".1.gz", gzip.open) + count(a.log, open)
    if found != a.expect:
        print(f"E: {a.expect - found} record(s) lost in rotation ({found} of {a.expect})", flush=True)
        sys.exit(1)
    print(f"audit: all {found} records kept", flush=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""A job that bumps a shared counter: read it, work out the new value, write it back.

The nightly batch (host batch) holds the file open while it recomputes for a while; the web
tier's quick bump (host web) does the same in a few milliseconds. Neither takes a lock: when
one reads between the other's read and write, one of the two bumps is lost.
"""
import argparse
import random
import time


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--counter", required=True)
    p.add_argument("--done", required=True, help="file written when this bump is over")
    p.add_argument("--start-ms", default="0", help="start after a random delay in this range, e.g. 0..600")
    p.add_argument("--work-ms", type=int, default=0, help="time between reading and writing back")
    a = p.parse_args()
    lo, _, hi = a.start_ms.partition("..")
    time.sleep(random.uniform(int(lo), int(hi or lo)) / 1000)
    with open(a.counter, "r+") as f:
        value = int(f.read() or "0")
        time.sleep(a.work_ms / 1000)
        f.seek(0)
        f.write(f"{value + 1}\n")
        f.truncate()
    with open(a.done, "w") as f:
        f.write("done\n")
    print(f"bumped {a.counter} from {value} to {value + 1}", flush=True)


if __name__ == "__main__":
    main()

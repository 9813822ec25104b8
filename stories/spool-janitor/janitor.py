#!/usr/bin/env python3
"""A spool janitor as many are written: a crashed upload leaves NAME.part behind, so every run
deletes the .part files it finds. It assumes uploads finish between its runs; an upload in
flight on another host at that moment loses its file.
"""
import argparse
import os
import random
import time


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--spool", required=True)
    p.add_argument("--start-ms", default="0", help="start after a random delay in this range, e.g. 0..900")
    a = p.parse_args()
    lo, _, hi = a.start_ms.partition("..")
    time.sleep(random.uniform(int(lo), int(hi or lo)) / 1000)
    removed = 0
    for name in sorted(os.listdir(a.spool)):
        if name.endswith(".part"):
            os.unlink(os.path.join(a.spool, name))
            removed += 1
    print(f"janitor: removed {removed} leftover part file(s)", flush=True)


if __name__ == "__main__":
    main()

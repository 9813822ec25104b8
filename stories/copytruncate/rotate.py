#!/usr/bin/env python3
"""A log rotation with logrotate's `copytruncate` and `compress`: copy the live log to
LOG.1, compress the copy, then truncate the live log in place (its writer keeps its
descriptor). Whatever the writer appends after the copy began and before the truncation is
lost.
"""
import argparse
import gzip
import os
import random
import shutil
import time


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--log", required=True)
    p.add_argument("--done", required=True, help="a file created once the rotation is over")
    p.add_argument("--start-ms", default="0", help="start after a random delay in this range")
    a = p.parse_args()
    lo, _, hi = a.start_ms.partition("..")
    time.sleep(random.uniform(int(lo), int(hi or lo)) / 1000)
    shutil.copyfile(a.log, a.log + ".1")
    with open(a.log + ".1", "rb") as src, gzip.open(a.log + ".1.gz", "wb", compresslevel=9) as dst:
        shutil.copyfileobj(src, dst)
    os.unlink(a.log + ".1")
    os.truncate(a.log, 0)
    open(a.done, "w").close()
    print("rotate: rotated", a.log, flush=True)


if __name__ == "__main__":
    main()

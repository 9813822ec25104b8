#!/usr/bin/env python3
"""A service that appends a batch record to its log when its flush timer fires. Like most
daemons it opens its log once, in append mode, and writes to that descriptor for its life: a
rotation must not move the file away under it, so rotations copy the log and truncate it.
"""
import argparse
import os
import random
import time


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--log", required=True)
    p.add_argument("--flushed", required=True, help="a file created once the batch is in the log")
    p.add_argument("--flush-ms", default="0", help="the flush timer fires after a random delay in this range")
    a = p.parse_args()
    fd = os.open(a.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    print("app: ready", flush=True)
    lo, _, hi = a.flush_ms.partition("..")
    time.sleep(random.uniform(int(lo), int(hi or lo)) / 1000)
    os.write(fd, b"BATCH flushed 128 records\n")
    open(a.flushed, "w").close()
    print("app: batch flushed", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()

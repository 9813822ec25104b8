#!/usr/bin/env python3
"""An upload worker as many are written: stream the upload into SPOOL/NAME.part, then rename it
to SPOOL/NAME when it is whole, so that readers never see half a file.
"""
import argparse
import os
import random
import sys
import time


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--spool", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--start-ms", default="0", help="start after a random delay in this range, e.g. 0..600")
    p.add_argument("--chunks", type=int, default=4)
    p.add_argument("--chunk-ms", type=int, default=50, help="time the network takes per chunk")
    a = p.parse_args()
    lo, _, hi = a.start_ms.partition("..")
    time.sleep(random.uniform(int(lo), int(hi or lo)) / 1000)
    part = os.path.join(a.spool, a.name + ".part")
    with open(part, "wb") as f:
        for i in range(a.chunks):
            time.sleep(a.chunk_ms / 1000)
            f.write(b"chunk %d\n" % i)
    try:
        os.rename(part, os.path.join(a.spool, a.name))
    except FileNotFoundError:
        print(f"E: upload lost: {part} vanished before it was complete", flush=True)
        sys.exit(1)
    print(f"stored {a.name}", flush=True)


if __name__ == "__main__":
    main()

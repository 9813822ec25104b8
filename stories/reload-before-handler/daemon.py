#!/usr/bin/env python3
"""A daemon as many are written: it writes its pid file first (so init scripts and log
rotations can find it), then loads its configuration, and only then installs its SIGHUP
handler (reopen the logs). A SIGHUP in between meets the default action: the daemon ends.
"""
import argparse
import os
import random
import signal
import time


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--pidfile", required=True)
    p.add_argument("--load-ms", default="0", help="loading takes a random time in this range, e.g. 0..400")
    a = p.parse_args()
    with open(a.pidfile + ".tmp", "w") as f:
        f.write(f"{os.getpid()}\n")
    os.rename(a.pidfile + ".tmp", a.pidfile)
    print("daemon: started", flush=True)
    lo, _, hi = a.load_ms.partition("..")
    time.sleep(random.uniform(int(lo), int(hi or lo)) / 1000)
    signal.signal(signal.SIGHUP, lambda *_: print("daemon: logs reopened", flush=True))
    print("daemon: configuration loaded", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()

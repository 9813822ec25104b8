#!/usr/bin/env python3
"""The monitoring check of another host: at some moment, connect to the service and read its
answer. A refused connection is an outage page.
"""
import argparse
import random
import socket
import sys
import time


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--server", required=True, help="HOST:PORT")
    p.add_argument("--start-ms", default="0", help="check after a random delay in this range, e.g. 0..900")
    a = p.parse_args()
    host, _, port = a.server.rpartition(":")
    lo, _, hi = a.start_ms.partition("..")
    time.sleep(random.uniform(int(lo), int(hi or lo)) / 1000)
    try:
        with socket.create_connection((host, int(port)), timeout=2) as s:
            answer = s.makefile().readline().strip()
    except ConnectionRefusedError:
        print(f"E: service down: {a.server} refused the connection", flush=True)
        sys.exit(1)
    print(f"service answered {answer!r}", flush=True)


if __name__ == "__main__":
    main()

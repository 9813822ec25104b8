#!/usr/bin/env python3
"""A small TCP service as many are written: load what it serves, then listen and answer each
connection with one line. It writes its pid file first (so a deploy can stop it) and exits on
SIGTERM, as the default action does.
"""
import argparse
import os
import socket
import time


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--pidfile", required=True)
    p.add_argument("--warmup-ms", type=int, default=0, help="time spent loading before it listens")
    p.add_argument("--serve-for", type=float, default=10.0, help="seconds it serves, then exits")
    a = p.parse_args()
    tmp = f"{a.pidfile}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{os.getpid()}\n")
    os.rename(tmp, a.pidfile)
    # Loading the data it serves takes a while.
    time.sleep(a.warmup_ms / 1000)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", a.port))
    listener.listen(16)
    print("ready", flush=True)
    deadline = time.monotonic() + a.serve_for
    while (left := deadline - time.monotonic()) > 0:
        listener.settimeout(left)
        try:
            conn, _ = listener.accept()
        except socket.timeout:
            break
        with conn:
            conn.sendall(b"ok\n")
    listener.close()


if __name__ == "__main__":
    main()

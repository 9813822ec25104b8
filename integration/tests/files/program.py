# A program heisen did not write, run by the system's Python: the file work of a typical
# "write a temp file, rename it into place" service, plus the fd subtleties strace users trip
# on. Its argument is the directory to work in; it waits (at most 20 s) for a SIGHUP.
import os
import signal
import sys
import time

d = sys.argv[1]
got = []
signal.signal(signal.SIGHUP, lambda signum, frame: got.append(signum))

fd = os.open(f"{d}/a.tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.write(fd, b"one\n")
os.write(fd, b"two\n")
os.rename(f"{d}/a.tmp", f"{d}/a")  # over the a that is there
ghost = os.open(f"{d}/c", os.O_RDWR | os.O_CREAT, 0o600)
os.unlink(f"{d}/c")  # still held open
os.write(ghost, b"ghost\n")
os.close(fd)
again = os.open(f"{d}/b", os.O_RDONLY)  # takes fd's number again
os.read(again, 100)
os.fsync(ghost)
os.close(ghost)
os.close(again)

pid = os.open(f"{d}/pid.tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.write(pid, f"{os.getpid():>10}".encode())  # fixed width: the same byte counts every run
os.close(pid)
os.rename(f"{d}/pid.tmp", f"{d}/pid")
deadline = time.monotonic() + 20
while not got and time.monotonic() < deadline:
    time.sleep(0.01)
sys.exit(0 if got else 3)

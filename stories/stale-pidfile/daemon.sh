#!/bin/sh
# A service: writes its pid file (atomically: a temporary file renamed over it), reopens its log
# on SIGHUP, stops on SIGTERM. Lives at most TENTHS tenths of a second (0: until stopped, or 60 s).
#   daemon.sh PIDFILE TENTHS
set -u
pidfile=$1
lifetime=${2:-0}
[ "$lifetime" -gt 0 ] || lifetime=600
trap 'echo "reopened log (pid $$)"' HUP
trap 'echo "stopping (pid $$)"; exit 0' TERM
echo $$ > "$pidfile.tmp"
mv "$pidfile.tmp" "$pidfile"
echo "ready (pid $$)"
i=0
while [ "$i" -lt "$lifetime" ]; do
    # A trapped signal interrupts `wait`, not a foreground sleep.
    sleep 0.1 &
    wait $! || true
    i=$((i + 1))
done

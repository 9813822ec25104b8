#!/bin/sh
# Log rotation: tell the service to reopen its log, the way logrotate's postrotate does
# (kill -HUP `cat pidfile`). Runs at any moment of the deploy (0 to 0.5 s in).
#   reload.sh PIDFILE
set -u
pidfile=$1
sleep "$(printf '0.%03d' $(( $(od -An -N2 -tu2 /dev/urandom) % 500 )))"
read -r pid < "$pidfile"
if ! kill -HUP "$pid" 2>/dev/null; then
    echo "E: reload failed: no process $pid (pid file $pidfile)"
    exit 1
fi
echo "reloaded $pid"

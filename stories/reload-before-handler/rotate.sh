#!/bin/sh
# A log rotation's postrotate: tell the daemon to reopen its logs. Starts within $2 ms.
pidfile=$1
max_ms=$2
sleep "$(awk -v m="$max_ms" 'BEGIN { srand(); printf "%.3f", rand() * m / 1000 }')"
kill -HUP "$(cat "$pidfile")"
echo "rotate: daemon told to reopen its logs"

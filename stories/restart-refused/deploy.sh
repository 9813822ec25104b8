#!/bin/sh
# A deploy as many are written: stop the running service, wait until it is gone, start the new
# version. Nothing tells the load balancer or the monitors: for as long as the new version loads,
# nobody listens on the port.
#   deploy.sh SERVER PORT PIDFILE
set -u
server=$1
port=$2
pidfile=$3
old=$(cat "$pidfile")
kill -TERM "$old"
i=0
while kill -0 "$old" 2>/dev/null && [ "$i" -lt 100 ]; do sleep 0.01; i=$((i + 1)); done
echo "stopped $old"
exec python3 "$server" --port "$port" --pidfile "$pidfile" --warmup-ms 300 --serve-for 1.5

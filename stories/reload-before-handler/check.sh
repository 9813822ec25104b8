#!/bin/sh
# A health check after the rotation: is the daemon still there?
pidfile=$1
sleep "$2"
pid=$(cat "$pidfile")
if kill -0 "$pid" 2>/dev/null; then
  echo "check: daemon $pid is up"
else
  echo "E: daemon $pid is gone"
  exit 1
fi

#!/bin/sh
# A restart as an init script does it: drain, stop the old process by its pid file, and start
# the new one, which writes its own pid file once it has started up. Nothing keeps the pid file
# from naming a process that is gone in between.
#   restart.sh PIDFILE
set -eu
pidfile=$1
# Draining connections.
sleep 0.15
read -r old < "$pidfile"
kill -TERM "$old"
echo "stopped $old"
# The new process starts up (loads its configuration) before it writes its pid.
sleep 0.15
exec sh "$(dirname "$0")/daemon.sh" "$pidfile" 10

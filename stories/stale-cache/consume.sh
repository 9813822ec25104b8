#!/bin/sh
# The consumer on another host, started by the same deploy: it reads the cache once and refuses
# to run on a build older than the one being deployed (exit 3). Nobody ordered it after the
# publisher: it works when the publisher happens to win.
#   consume.sh CACHE VERSION
set -u
cache=$1
want=$2
sleep "0.$(( $(od -An -N1 -tu1 /dev/urandom) % 5 ))"
got=$(cat "$cache" 2>/dev/null || echo "missing")
if [ "$got" != "version $want" ]; then
  echo "stale cache: wanted version $want, read '$got'"
  exit 3
fi
echo "running on version $want"

#!/bin/sh
# The cache builder: keeps the current cache file, renders the next version into a temporary
# file and publishes it atomically with mv (rename(2)). Correct on its own: the race is in who
# reads the cache, and when.
#   publish.sh CACHE VERSION
set -eu
cache=$1
version=$2
echo "version 0 (previous build)" > "$cache"
# The build takes a while (0.1 to 0.3 s).
sleep "0.$(( $(od -An -N1 -tu1 /dev/urandom) % 3 + 1 ))"
echo "version $version" > "$cache.tmp"
# Rendering and checking the new file before publishing it.
sleep 0.1
mv "$cache.tmp" "$cache"
echo "published version $version"

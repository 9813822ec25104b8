#!/bin/sh
# A backup job as many are written: clean up what a crashed run left, render the backup into a
# temporary file (two parts, the second after a while), rename it into place. No lock: it
# assumes it is the only run. Writes its exit status to STATUS when done.
#   backup.sh TARGET STATUS START_JITTER_MS
set -u
target=$1
status=$2
jitter=$3
finish() { echo "$1" > "$status"; exit "$1"; }
if [ "$jitter" -gt 0 ]; then
    sleep "$(printf '0.%03d' $(( $(od -An -N2 -tu2 /dev/urandom) % jitter )))"
fi
# A previous run may have crashed half-way: start from a clean temporary file.
rm -f "$target.tmp"
exec 3> "$target.tmp"
echo "BEGIN backup by $$" >&3
# Dumping the database takes a while.
sleep 0.3
echo "rows 1..1000" >&3
echo "END backup by $$" >&3
exec 3>&-
if ! mv "$target.tmp" "$target" 2>/dev/null; then
    echo "E: backup $$: $target.tmp vanished before it could be renamed"
    finish 1
fi
echo "backup $$ done"
finish 0

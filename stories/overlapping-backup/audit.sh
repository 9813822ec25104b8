#!/bin/sh
# The morning check: both runs finished, each said it succeeded, and the backup in place is whole.
#   audit.sh TARGET STATUS...
set -u
target=$1
shift
i=0
for s in "$@"; do
    # Each run ends within 2 s.
    while [ ! -s "$s" ] && [ "$i" -lt 40 ]; do sleep 0.05; i=$((i + 1)); done
done
for s in "$@"; do
    if [ "$(cat "$s" 2>/dev/null)" != "0" ]; then
        echo "E: backup lost: the run that wrote $s failed"
        exit 1
    fi
done
if [ "$(tail -n 1 "$target")" != "END backup by $(head -n 1 "$target" | cut -d' ' -f4)" ]; then
    echo "E: backup torn: $(head -n 1 "$target")"
    exit 1
fi
echo "backups ok"

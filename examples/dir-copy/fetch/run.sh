#!/bin/sh
# $1 is a file name; the pilot has already copied it to in/$1 (verified)
# and will move it to local:dir-copy/$1 when this script succeeds.
set -eu
[ -s "$WORK_DIR/in/$1" ] || { echo "in/$1 is missing or empty" >&2; exit 1; }
echo "$1" > "$WORK_DIR/sink-tasks.txt"

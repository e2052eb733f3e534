#!/bin/sh
# $1 is a file's path under the copied tree, staged into WORK_DIR.
set -eu
cd "$WORK_DIR"
sha256sum "$1" | cut -d' ' -f1 > "$1.sha256"

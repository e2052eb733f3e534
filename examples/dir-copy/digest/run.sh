#!/bin/sh
# $1 is a file name, staged in from this node's local: tier.
set -eu
cd "$WORK_DIR"
sha256sum "$1" | cut -d' ' -f1 > "$1.sha256"

#!/bin/sh
echo "attempt $TASK_ATTEMPT of $1: exiting 3" >&2
exit 3

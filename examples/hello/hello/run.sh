#!/bin/sh
# $1 is the task body, $2 its headers as JSON.
echo "Hello, $1 (task $TASK_ID on $HOST_NAME, slot $SLOT_ID)"
scalebox app set-finished "Hello, $1"

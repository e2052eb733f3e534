#!/bin/sh
echo "sleeping 30 s with task_max_seconds=$TASK_MAX_SECONDS"
sleep 30

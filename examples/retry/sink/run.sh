#!/bin/sh
echo "got $1"

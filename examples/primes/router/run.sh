#!/bin/bash
# Main router. A start task carries N; a message back from calc carries the
# count of its range in the header "count".
set -euo pipefail
body=$1 headers=$2

header() { # header NAME: a header's value from the JSON object in $headers
  printf '%s' "$headers" | sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p"
}

from=$(header from_module)
if [ -z "$from" ]; then
  n=$body
  case $n in ''|*[!0-9]*) echo "start task must be a positive integer N, got '$n'" >&2; exit 101 ;; esac
  groups=$(( (n + GROUP_SIZE - 1) / GROUP_SIZE ))
  scalebox semaphore create primes 0 >/dev/null
  scalebox semaphore create pending "$groups" >/dev/null
  # CALC_MODULES may name several counting modules (e.g. one per
  # cluster); the ranges go round robin.
  read -r -a calcs <<< "${CALC_MODULES:-calc}"
  lo=1 i=0
  while [ "$lo" -le "$n" ]; do
    hi=$(( lo + GROUP_SIZE - 1 ))
    [ "$hi" -gt "$n" ] && hi=$n
    scalebox task add --sink-module "${calcs[i % ${#calcs[@]}]}" "${lo}_${hi}"
    lo=$(( hi + 1 )) i=$(( i + 1 ))
  done
  echo "split [1, $n] into $groups groups"
  exit 0
fi

count=$(header count)
total=$(scalebox semaphore add-value primes "$count")
left=$(scalebox semaphore decrement pending)
echo "range $body: $count primes; running total $total; $left ranges left"
if [ "$left" -eq 0 ]; then
  scalebox app set-finished "$total"
fi

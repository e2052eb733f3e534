#!/usr/bin/env bash
# Two scalebox binaries on the end-to-end app of run.sh, in alternating
# rounds (A B, B A, A B, ...) so both see the same machine. Prints each
# round's tasks/s and the median ratio B/A with its range. For deciding
# whether a change to the pilot or the head moves the end-to-end figure:
# single runs on this VM swing by 20-40 %, pairs much less.
#
#   bench/e2e/ab.sh OLD_BIN NEW_BIN [TASKS]   (default 10000 task executions)
#   ROUNDS=N      pairs (default 6)
#   PILOTS=N      --pilots of both runs (default: cores)
#   ARGS="..."    extra `run` flags for both
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
[ $# -ge 2 ] || { echo "usage: $0 OLD_BIN NEW_BIN [TASKS]" >&2; exit 2; }
a=$(realpath "$1") b=$(realpath "$2")
tasks=${3:-10000}
for bin in "$a" "$b"; do [ -x "$bin" ] || { echo "$bin: not an executable" >&2; exit 2; }; done

work=$(mktemp -d /tmp/scalebox-ab.XXXXXX)
trap 'rm -rf "$work"' EXIT
# The same app as run.sh.
# shellcheck source=bench/e2e/app.sh
. "$here/app.sh"
noop_app "$work/app" $(( tasks / 2 ))

# one BIN prints the run's tasks/s.
one() {
  rm -rf "$work/state"
  local t0 t1
  t0=$(date +%s.%N)
  # shellcheck disable=SC2086
  "$1" --log-level warn --state-dir "$work/state" run --pilots "${PILOTS:-$(nproc)}" ${ARGS:-} "$work/app" > "$work/summary.txt" 2> "$work/stderr.txt" || { cat "$work/stderr.txt" >&2; exit 1; }
  t1=$(date +%s.%N)
  grep -q "tasks: $tasks succeeded, 0 failed" "$work/summary.txt" || { cat "$work/summary.txt" >&2; echo "$1: not every task succeeded" >&2; exit 1; }
  awk -v n="$tasks" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / (b - a) }'
}

results=""
for r in $(seq 1 "${ROUNDS:-6}"); do
  if (( r % 2 )); then ra=$(one "$a"); rb=$(one "$b"); else rb=$(one "$b"); ra=$(one "$a"); fi
  printf 'round %d: A %s, B %s tasks/s\n' "$r" "$ra" "$rb"
  results+="$ra $rb"$'\n'
done
printf '%s' "$results" | awk "$(<"$root/bench/median.awk")"'
  NF == 2 { a = a " " $1; b = b " " $2; r = r " " $2 / $1 }
  END {
    printf "A %.0f tasks/s, B %.0f tasks/s (medians)\n", median(a), median(b)
    printf "ratio B/A = %.3f (rounds %s)\n", median(r), span(r, "%.2f")
  }'

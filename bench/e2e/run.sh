#!/usr/bin/env bash
# End-to-end throughput of `scalebox run` on this machine, next to GNU
# parallel and xargs -P running the same kind of script the same number of
# times on the same cores. Prints tasks/s and the ratios.
#
#   bench/e2e/run.sh [TASKS]      (default 10000 task executions)
#   ROUNDS=N                      rounds of the three runners (default 3)
#   KEEP=1                        keep the work dir (state db, logs)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
tasks=${1:-10000}
msgs=$(( tasks / 2 ))   # each message runs once in each of the two modules
cores=$(nproc)
bin=$root/bin/scalebox
[ -x "$bin" ] || (cd "$root" && make build >/dev/null)
command -v parallel >/dev/null || { echo "GNU parallel is not installed (apt-get install parallel)" >&2; exit 2; }

work=$(mktemp -d /tmp/scalebox-bench.XXXXXX)
trap '[ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
# shellcheck source=bench/e2e/app.sh
. "$here/app.sh"
noop_app "$work/app" "$msgs"
# The peers run the same script once per task with WORK_DIR set.
mkdir -p "$work/peer"
export WORK_DIR=$work/peer

now() { date +%s.%N; }
rate() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN { printf "%.0f", n / (b - a) }'; }

# Rounds alternate the three runners so each sees the same machine; the
# ratios reported are the medians of the rounds' ratios.
rounds=${ROUNDS:-3}
results=""
for r in $(seq 1 "$rounds"); do
  rm -rf "$work/state"
  t0=$(now)
  "$bin" --log-level warn --state-dir "$work/state" run --pilots "$cores" "$work/app" > "$work/summary.txt"
  t1=$(now)
  grep -q "tasks: $tasks succeeded, 0 failed" "$work/summary.txt" || { cat "$work/summary.txt"; echo "scalebox run did not succeed on every task" >&2; exit 1; }
  sb=$(rate "$tasks" "$t0" "$t1")

  t0=$(now)
  seq 1 "$tasks" | parallel -j "$cores" "$work/app/first/run.sh" {}
  t1=$(now)
  gp=$(rate "$tasks" "$t0" "$t1")

  t0=$(now)
  seq 1 "$tasks" | xargs -P "$cores" -n 1 "$work/app/first/run.sh"
  t1=$(now)
  xa=$(rate "$tasks" "$t0" "$t1")
  printf 'round %d: scalebox %s, parallel %s, xargs %s tasks/s\n' "$r" "$sb" "$gp" "$xa"
  results+="$sb $gp $xa"$'\n'
done

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"
echo "tasks: $tasks no-op task executions ($msgs messages through a two-module pipeline), $rounds rounds"
printf '%s' "$results" | awk -v cores="$cores" "$(<"$root/bench/median.awk")"'
  NF == 3 { s = s " " $1; g = g " " $2; x = x " " $3; rg = rg " " $1 / $2; rx = rx " " $1 / $3 }
  END {
    printf "%-28s %8.0f tasks/s (median)\n", "scalebox run (--pilots " cores ")", median(s)
    printf "%-28s %8.0f tasks/s\n", "GNU parallel -j " cores, median(g)
    printf "%-28s %8.0f tasks/s\n", "xargs -P " cores, median(x)
    printf "ratio scalebox/parallel = %.2f (rounds %s; target >= 4)\n", median(rg), span(rg, "%.2f")
    printf "ratio scalebox/xargs    = %.2f (rounds %s; target >= 0.5)\n", median(rx), span(rx, "%.2f")
  }'

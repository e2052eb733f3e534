#!/usr/bin/env bash
# What the pilot adds to a task on the node: one task through a slot's
# workspace (exec in its own process group, log files, interface files
# read) next to a bare exec.Command of the same program, in one process.
# The program is a static binary that only exits, so the fork and exec
# both sides pay are all that is left besides the pilot's own work.
#
#   bench/pilot/run.sh            (ROUNDS=N rounds, default 5)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
rounds=${ROUNDS:-5}
work=$(mktemp -d /tmp/scalebox-bench-pilot.XXXXXX)
trap 'rm -rf "$work"' EXIT
printf '%s\n' 'void _start(void) { __asm__ volatile("mov $60, %eax\n xor %edi, %edi\n syscall"); }' > "$work/exit.c"
cc -O2 -static -nostdlib -o "$work/exit" "$work/exit.c"
(cd "$root" && go test -c -o "$work/pilot.test" ./pilot)
for r in $(seq 1 "$rounds"); do
  SCALEBOX_BENCH_RUN=$work/exit "$work/pilot.test" -test.run '^$' -test.bench '^BenchmarkTaskRun$' | awk -v r="$r" '/^BenchmarkTaskRun\// { n=$1; sub(/-[0-9]+$/, "", n); sub(/.*\//, "", n); print r, n, $3 }'
done | awk "$(<"$root/bench/median.awk")"'
  { ns[$1, $2] = $3; R[$1] = 1 }
  END {
    for (r in R) { w = w " " ns[r, "workspace"]; e = e " " ns[r, "exec"]; d = d " " (ns[r, "workspace"] - ns[r, "exec"]) / 1000 }
    printf "   task through the workspace %6.0f us   bare exec %6.0f us   pilot adds %.0f us per task (median of %d rounds; rounds:%s)\n", median(w) / 1000, median(e) / 1000, median(d), length(R), d
  }'

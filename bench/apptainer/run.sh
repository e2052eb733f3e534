#!/usr/bin/env bash
# Per-task cost of the module runtimes, in one run: N no-op tasks
#   1. in a host slot            (scalebox module test DIR)
#   2. in an Apptainer slot      (scalebox module test DIR --image IMG:
#                                 one container, the agent forks each task)
#   3. with `apptainer exec` per task (a container start per task)
# Prints the per-task cost of each and the ratios.
#
#   bench/apptainer/run.sh [N]     (default 2000; needs apptainer, busybox-static)
#   EXEC_TASKS=M                   time only M of the per-task execs (they
#                                  cost ~0.2 s each; the mean is what counts)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
n=${1:-2000}
command -v apptainer >/dev/null || { echo "apptainer is not installed (scripts/apptainer.sh install)" >&2; exit 2; }

work=$(mktemp -d /tmp/scalebox-bench-apptainer.XXXXXX)
trap 'rm -rf "$work"' EXIT
(cd "$root" && make -s release RELEASE_BIN="$work/scalebox" >/dev/null)
bin=$work/scalebox
bash "$root/scripts/apptainer.sh" base "$work/base.sif" 2>/dev/null
mkdir -p "$work/noop"
printf '#!/bin/sh\nexit 0\n' > "$work/noop/run.sh"
chmod +x "$work/noop/run.sh"
"$bin" module build "$work/noop" --base "$work/base.sif" -o "$work/noop.sif" >/dev/null 2>&1
seq 1 "$n" > "$work/msgs.txt"

now() { date +%s.%N; }
ms() { awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN { printf "%.2f", (b - a) * 1000 / n }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
# A slot's cost is a fixed start (and stop) plus a cost per task: each slot
# runtime runs 1 message, then n, and the difference is the per-task cost.
slot() {
	local a b c
	a=$(now); "$bin" module test "$work/noop" --body 1 "$@" >/dev/null
	b=$(now); "$bin" module test "$work/noop" --messages "$work/msgs.txt" "$@" >/dev/null
	c=$(now)
	echo "$(ms "$a" "$b" 1) $(awk -v a="$a" -v b="$b" -v c="$c" -v n="$n" 'BEGIN { printf "%.2f", ((c - b) - (b - a)) * 1000 / (n - 1) }')"
}

echo "== machine: $(nproc) cores, $(uname -r), $(apptainer --version)"
echo "== $n no-op tasks each way"
read -r host_start host < <(slot)
read -r slot_start slot < <(slot --image "$work/noop.sif" --agent-binary "$bin")
m=${EXEC_TASKS:-$n}
t2=$(now)
for i in $(seq 1 "$m"); do apptainer exec --cleanenv "$work/noop.sif" /app/bin/run.sh "$i" "{}"; done
t3=$(now)
each=$(ms "$t2" "$t3" "$m")
printf "   host slot             %8s ms per task   (slot start+stop %s ms)\n" "$host" "$host_start"
printf "   apptainer slot        %8s ms per task   (slot start+stop %s ms)   %s x the host slot (target <= 2)\n" "$slot" "$slot_start" "$(ratio "$slot" "$host")"
printf "   apptainer exec/task   %8s ms per task   %s x the apptainer slot (mean of %s)\n" "$each" "$(ratio "$each" "$slot")" "$m"

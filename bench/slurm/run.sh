#!/usr/bin/env bash
# Pilots against the baseline every pilot system must beat: N no-op tasks on
# the local 3-node cluster "ci" (make cluster-up), as a Slurm job array and
# through `scalebox run --cluster ci`, measured in one run on the same nodes.
#   bench/slurm/run.sh [N]     (N <= 1000, Slurm's default MaxArraySize)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
n=${1:-1000}
work=$(mktemp -d /var/tmp/sb-bench-XXXXXX)
trap 'rm -rf "$work"' EXIT
make -s -C "$root" build
bin=$root/bin/scalebox
scontrol ping >/dev/null || { echo "cluster ci is not up: make cluster-up" >&2; exit 1; }
now() { date +%s.%N; }
calc() { awk "BEGIN { print $* }"; }

# --- Slurm job array: one array element per task, 1 CPU each (12 at once).
t0=$(now)
id=$(sbatch --parsable --array=1-"$n" --partition=debug --cpus-per-task=1 --output=/dev/null --job-name=sb-bench-array --wrap true)
while [ "$(squeue -h -r -j "$id" -t PD,R,CG,CF 2>/dev/null | wc -l)" -gt 0 ]; do sleep 0.2; done
t1=$(now)
array_s=$(calc "$t1 - $t0")

# --- scalebox: 3 pilot jobs (one per node, 4 slots each) run the same tasks.
mkdir -p "$work/app/noop"
seq 1 "$n" > "$work/app/tasks.txt"
printf '#!/bin/sh\nexit 0\n' > "$work/app/noop/run.sh"
chmod +x "$work/app/noop/run.sh"
cat > "$work/app/app.yaml" <<YAML
name: bench-noop
modules:
  noop:
    base_image: host
    arguments: {code_path: ./noop}
    parameters: {start_task: "FILE:tasks.txt"}
    slots: ["default:4"]
YAML
cat > "$work/clusters.yaml" <<YAML
clusters:
  ci:
    slurm: {mode: cli}
    pools:
      default: {partition: debug, nodes: 1, cpus: 4, time: "30", max: 3}
YAML
t0=$(now)
SCALEBOX_CLUSTERS=$work/clusters.yaml "$bin" --log-level warn --state-dir "$work/state" run --cluster ci --listen 127.0.0.1:0 "$work/app" > "$work/run.out" 2>&1 \
	|| { cat "$work/run.out" >&2; exit 1; }
t1=$(now)
sb_s=$(calc "$t1 - $t0")
db=$work/state/scalebox.db
# submit -> pilot registered, and submit -> its first task started (ms)
read -r reg first < <(sqlite3 -separator ' ' "$db" "SELECT
  avg(p.registered_at - j.submitted_at),
  avg((SELECT min(e.started_at) FROM task_execs e WHERE e.pilot_id = p.id) - j.submitted_at)
  FROM pilot_jobs j JOIN pilots p ON p.job_id = j.job_id")
jobs=$(sqlite3 "$db" "SELECT count(*) FROM pilot_jobs")
done_n=$(sqlite3 "$db" "SELECT count(*) FROM tasks WHERE state = 'succeeded'")

echo "== machine: $(nproc) cores; cluster ci: $(sinfo -h -o '%D nodes, %c CPUs each' | head -1), Slurm $(sinfo --version | awk '{print $2}')"
printf "   %-34s %8.1f s  %8.1f tasks/s\n" "Slurm job array ($n elements)" "$array_s" "$(calc "$n / $array_s")"
printf "   %-34s %8.1f s  %8.1f tasks/s  (%d pilot jobs, %d tasks)\n" "scalebox run --cluster ci" "$sb_s" "$(calc "$done_n / $sb_s")" "$jobs" "$done_n"
printf "   ratio scalebox / job array: %.1fx tasks/s\n" "$(calc "($done_n / $sb_s) / ($n / $array_s)")"
printf "   pilot latency: submit -> registered %.0f ms, submit -> first task started %.0f ms (mean of %d jobs)\n" "$reg" "$first" "$jobs"

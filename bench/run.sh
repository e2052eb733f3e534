#!/usr/bin/env bash
# All benchmarks, each next to its peer in the same run, printed as ratios.
#   bench/run.sh            broker vs goqite, then scalebox run vs parallel/xargs
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
count=${BENCH_COUNT:-5}

echo "== machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r), disk of $(df -P /tmp | awk 'NR==2 {print $1}')"
echo "== broker: task lifecycles (enqueue -> lease -> complete, synchronous=FULL) vs goqite v0.4.0 (send -> receive -> delete)"
echo "   $count rounds each; medians of ns per task"
out=$(cd "$root/bench/broker" && go test -run '^$' -bench . -benchtime 2s -count "$count" . | grep '^Benchmark')
echo "$out" | awk '
  { name=$1; sub(/-[0-9]+$/, "", name); v[name]=v[name] " " $3 }
  END {
    for (n in v) {
      k=split(v[n], a, " ")
      for (i=2; i<=k; i++) { x=a[i]; j=i-1; while (j>0 && a[j]+0>x+0) { a[j+1]=a[j]; j-- } a[j+1]=x }
      med[n]=a[int((k+1)/2)]
    }
    split("Lifecycle/%s/batch=1 Lifecycle/%s/batch=100 LifecycleParallel/%s/batch=1", rows, " ")
    for (i=1; i<=3; i++) {
      s=sprintf("Benchmark" rows[i], "scalebox"); g=sprintf("Benchmark" rows[i], "goqite")
      if (!(s in med) || !(g in med)) continue
      label=rows[i]; sub(/\/%s/, "", label)
      printf "   %-28s scalebox %9.0f tasks/s   goqite %9.0f tasks/s   ratio %.2f\n", label, 1e9/med[s], 1e9/med[g], med[g]/med[s]
    }
  }'
echo "== end to end: scalebox run vs GNU parallel and xargs -P"
bash "$root/bench/e2e/run.sh" "${E2E_TASKS:-10000}"

#!/usr/bin/env bash
# All benchmarks, each next to its peer in the same run, printed as ratios.
#   bench/run.sh            broker vs goqite, the pilot's cost per task, then
#                           scalebox run vs parallel/xargs
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
count=${BENCH_COUNT:-9}

echo "== machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r), disk of $(df -P /tmp | awk 'NR==2 {print $1}')"
# CPU steal (other tenants of a VM) is what makes absolute figures move;
# it is printed so a run can be judged.
steal() { awk '/^cpu / { print $9, $2+$3+$4+$5+$6+$7+$8+$9 }' /proc/stat; }
read -r steal0 total0 < <(steal)
trap 'read -r steal1 total1 < <(steal); awk -v s=$((steal1-steal0)) -v t=$((total1-total0)) "BEGIN { printf \"== CPU steal during the run: %.0f%%\n\", t ? 100*s/t : 0 }"' EXIT
echo "== broker: task lifecycles (enqueue -> lease -> complete, synchronous=FULL) vs goqite v0.4.0 (send -> receive -> delete)"
echo "   $count rounds; each round runs every benchmark once, scalebox then goqite back to back,"
echo "   so both see the same disk and the same neighbours; the ratio is the median of the rounds' ratios"
bin=$root/bench/broker/broker.test
(cd "$root/bench/broker" && go test -c -o "$bin" .)
rounds=""
for i in $(seq 1 "$count"); do
  rounds+=$(cd "$(dirname "$bin")" && "$bin" -test.run '^$' -test.bench . -test.benchtime "${BENCH_TIME:-1s}" | grep '^Benchmark' | sed "s/^/$i /")
  rounds+=$'\n'
done
echo "$rounds" | awk "$(<"$root/bench/median.awk")"'
  NF < 4 { next }
  { r=$1; name=$2; sub(/-[0-9]+$/, "", name); ns[r, name]=$4; seen[name]=1; R[r]=1 }
  END {
    split("Lifecycle/%s/batch=1 Lifecycle/%s/batch=100 LifecycleParallel/%s/batch=1", rows, " ")
    for (i=1; i<=3; i++) {
      s=sprintf("Benchmark" rows[i], "scalebox"); g=sprintf("Benchmark" rows[i], "goqite")
      if (!(s in seen) || !(g in seen)) continue
      sl=""; gl=""; rl=""
      for (r in R) {
        if (!((r, s) in ns) || !((r, g) in ns)) continue
        sl=sl " " ns[r, s]; gl=gl " " ns[r, g]; rl=rl " " ns[r, g]/ns[r, s]
      }
      label=rows[i]; sub(/\/%s/, "", label)
      printf "   %-26s scalebox %8.0f tasks/s  goqite %8.0f tasks/s  ratio %.2f (rounds %s)\n", label, 1e9/median(sl), 1e9/median(gl), median(rl), span(rl, "%.2f")
    }
  }'
[ "${BENCH_ONLY:-}" = broker ] && exit 0
echo "== pilot: a task through a slot's workspace vs a bare exec of the same program"
bash "$root/bench/pilot/run.sh"
echo "== end to end: scalebox run vs GNU parallel and xargs -P"
bash "$root/bench/e2e/run.sh" "${E2E_TASKS:-10000}"

#!/usr/bin/env bash
# sftp upload and download with `scalebox stage cp` next to the OpenSSH
# sftp client, same file, same server, one run; and a local: copy next to
# cp. Prints MB/s and the ratios. Needs the test sshd (make cluster-up).
#
#   bench/staging/run.sh [MiB]     (default 1024)
#   ROUNDS=5 bench/staging/run.sh        more rounds of each pair (default 3)
#   VERBOSE=1 bench/staging/run.sh       also every run's time, on stderr
#   RTT_MS=20 bench/staging/run.sh 256   sftp only, through a proxy adding
#                                        a 20 ms round trip (delayproxy/)
#   RATE_MBS=40 ...                      and/or limiting the link to 40 MB/s
#                                        each way
#   COMPRESS=1 DATA=text RATE_MBS=40 RTT_MS=20 bench/staging/run.sh 256
#                                        stage cp with ?compress=zstd next
#                                        to stage cp without it (DATA=text:
#                                        a compressible catalogue; default
#                                        random bytes)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
mib=${1:-1024}
eval "$(bash "$root/scripts/sshd.sh" env)"
bin=$root/bin/scalebox
(cd "$root" && make -s build)
work=$(mktemp -d /tmp/scalebox-bench-staging.XXXXXX)
trap 'rm -rf "$work"' EXIT
if [ "${DATA:-random}" = text ]; then
  # A source catalogue as text: ids, fluxes and coordinates.
  awk -v n="$((mib << 20))" 'BEGIN { srand(1); while (t < n) { l = sprintf("src%09d %8.4f %10.6f %+10.6f %s\n", i++, rand() * 100, rand() * 360, rand() * 180 - 90, (rand() < 0.5 ? "point" : "extended")); printf "%s", l; t += length(l) } }' |
    head -c "$((mib << 20))" > "$work/data.bin"
else
  head -c "$((mib << 20))" /dev/urandom > "$work/data.bin"
fi
remote_dir=${SCALEBOX_SFTP_URL#sftp://*@*/}
remote_dir=/${remote_dir#/}
hostport=${SCALEBOX_SFTP_URL#sftp://}; hostport=${hostport%%/*}
user=${hostport%@*}; host=${hostport#*@}; port=${host#*:}; host=${host%:*}
link="loopback"
if [ -n "${RTT_MS:-}${RATE_MBS:-}" ]; then
  (cd "$root" && go build -o "$work/delayproxy" ./bench/staging/delayproxy)
  pport=$((port + 1000))
  "$work/delayproxy" -listen "127.0.0.1:$pport" -target "$host:$port" -delay "$((${RTT_MS:-0} * 500))us" -rate "${RATE_MBS:-0}" &
  proxy=$!
  trap 'kill $proxy 2>/dev/null; rm -rf "$work"' EXIT
  for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$pport") 2>/dev/null && break; sleep 0.1; done
  host=127.0.0.1; port=$pport
  SCALEBOX_SFTP_URL="sftp://$user@$host:$port$remote_dir"
  link="loopback + ${RTT_MS:-0} ms round trip, ${RATE_MBS:-unlimited} MB/s each way"
fi
# ssh refuses a key others can read; the test key is 0644 for test users.
install -m 600 "$SCALEBOX_SFTP_KEY" "$work/key"
ssh_opts=(-o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$work/known_hosts" -i "$work/key" -P "$port")
echo "[$host]:$port $SCALEBOX_SFTP_HOST_KEY" > "$work/known_hosts"
now() { date +%s.%N; }
run_sb() { "$bin" stage cp --key "$SCALEBOX_SFTP_KEY" --host-key "$SCALEBOX_SFTP_HOST_KEY" "$@" >/dev/null; }

echo "== $mib MiB over sftp on $host:$port ($link), and local: vs cp"
# The test file is flushed first: its writeback would otherwise slow
# whichever transfer runs first. Each pair runs twice, in both orders,
# and the rate is over both runs.
#
# Every run starts from the same state: its target is removed first,
# untimed (FN_setup). On this VM memory the guest freed a moment ago is
# fast to reuse and memory it freed long ago may be slow (the host took
# it back; docs/benchmarks.md), and `put` truncates its target when it
# starts, reusing those pages itself, where stage cp renames over its
# target at the end and freed them for the next runner instead.
sync -f "$work/data.bin"
export SCALEBOX_LOCAL_ROOT=$work/local
remote() { ssh -q "${ssh_opts[@]/-P/-p}" "$user@$host" "$@"; }
sb_up_setup()   { remote rm -f "$remote_dir/bench/sb.bin"; }
sb_up()         { run_sb "file://$work/data.bin" "$SCALEBOX_SFTP_URL/bench/sb.bin"; }
# The OpenSSH peers end with a sync of the file, as stage cp does: put
# and get return before the data is on disk, a verified copy after.
os_up_setup()   { remote rm -f "$remote_dir/bench/ossh.bin"; }
os_up()         { printf 'put %s %s/bench/ossh.bin\n' "$work/data.bin" "$remote_dir" | sftp -q "${ssh_opts[@]}" -b - "$user@$host" >/dev/null
                  remote sync -f "$remote_dir/bench/ossh.bin"; }
sb_down_setup() { rm -f "$work/back-sb.bin"; }
sb_down()       { run_sb "$SCALEBOX_SFTP_URL/bench/sb.bin" "file://$work/back-sb.bin"; }
os_down_setup() { rm -f "$work/back-ossh.bin"; }
os_down()       { printf 'get %s/bench/ossh.bin %s\n' "$remote_dir" "$work/back-ossh.bin" | sftp -q "${ssh_opts[@]}" -b - "$user@$host" >/dev/null
                  sync -f "$work/back-ossh.bin"; }
sb_loc_setup()  { rm -rf "$work/local"; }
sb_loc()        { run_sb "file://$work/data.bin" "local:sb.bin"; }
cp_loc_setup()  { rm -rf "$work/cp"; mkdir -p "$work/cp"; }
cp_loc()        { cp "$work/data.bin" "$work/cp/data.bin" && sync -f "$work/cp/data.bin"; }
# timed FN: seconds FN took, after FN_setup (untimed)
timed() {
  local a b s; "$1_setup"; a=$(now); "$1"; b=$(now)
  s=$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.3f", b - a }')
  [ -z "${VERBOSE:-}" ] || printf '     %-8s %6.2f s\n' "$1" "$s" >&2
  printf '%s' "$s"
}
pair() { # pair A B: "secondsA secondsB" over A,B then B,A
  local a1 b1 b2 a2
  a1=$(timed "$1"); b1=$(timed "$2"); b2=$(timed "$2"); a2=$(timed "$1")
  awk -v a="$a1" -v b="$b1" -v c="$b2" -v d="$a2" 'BEGIN { print a + d, b + c }'
}
mbs() { awk -v m="$mib" -v s="$1" 'BEGIN { printf "%.0f", 2 * m / s }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
# rounds LABEL PEER A B: ROUNDS pairs of A next to B. The VM's memory and
# disk swing from run to run (a GiB written into cold guest memory ran at
# 80 MB/s, then at 1.7 GB/s a minute later), so one pair says little: the
# figure is the median of the rounds' ratios, with every round printed.
rounds() {
  local label=$1 peer=$2 a=$3 b=$4 ta tb ratios=() ts=() tp=()
  for _ in $(seq 1 "${ROUNDS:-3}"); do
    read -r ta tb < <(pair "$a" "$b")
    ratios+=("$(ratio "$tb" "$ta")"); ts+=("$ta"); tp+=("$tb")
  done
  printf "   %-9s scalebox %5s MB/s   %-12s %5s MB/s   ratio %s (rounds: %s)" "$label" "$(mbs "$(median "${ts[@]}")")" \
    "$peer" "$(mbs "$(median "${tp[@]}")")" "$(median "${ratios[@]}")" "${ratios[*]}"
}
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
echo "   $((${ROUNDS:-3})) rounds of each pair; MB/s are the median rounds', the ratio the median of the rounds' ratios"
if [ -n "${COMPRESS:-}" ]; then
  # ?compress=zstd next to the same copies without it, same file, same link.
  sz_up_setup()   { sb_up_setup; }
  sz_up()         { run_sb "file://$work/data.bin" "$SCALEBOX_SFTP_URL/bench/sb.bin?compress=zstd"; }
  sz_down_setup() { sb_down_setup; }
  sz_down()       { run_sb "$SCALEBOX_SFTP_URL/bench/sb.bin?compress=zstd" "file://$work/back-sb.bin"; }
  echo "   ${DATA:-random} data; 'scalebox' is stage cp with ?compress=zstd, 'plain' the same without"
  rounds upload plain sz_up sb_up; echo
  rounds download plain sz_down sb_down; echo
  cmp "$work/data.bin" "$work/back-sb.bin" && echo "   round trip verified"
  exit 0
fi
rounds upload "OpenSSH+sync" sb_up os_up; echo " (target >= 0.8)"
rounds download "OpenSSH+sync" sb_down os_down; echo " (target >= 0.8)"
[ -n "${RTT_MS:-}${RATE_MBS:-}" ] && exit 0
rounds local: "cp + sync" sb_loc cp_loc; echo " (verified copy vs cp)"
cmp "$work/data.bin" "$work/back-sb.bin" && echo "   round trip verified"
# A local: cache hit (entry checked, the task's own copy made and synced)
# next to cp + sync of the same 256 MiB file, alternating, in one Go
# benchmark run; the ratio is the lower median of the pairs' ratios.
line=$(cd "$root" && go test ./staging -run '^$' -bench 'CacheHitVsCp' -benchtime "${HIT_ROUNDS:-6}x" | grep '^BenchmarkCacheHitVsCp')
metric() { echo "$line" | awk -v m="$1" '{ for (i = 1; i < NF; i++) if ($(i+1) == m) print $i }'; }
printf "   cache hit scalebox %5.0f MB/s   cp + sync    %5.0f MB/s   ratio %s (target >= 0.9)\n" "$(metric hit-MB/s)" "$(metric cp-MB/s)" "$(metric hit/cp)"
# Many small files from the site, one after another (a dir-list then a
# file-copy task per file): connections kept between copies vs a new SSH
# connection per file.
small=$(cd "$root" && go test ./staging -run '^$' -bench 'SFTPSmallFiles' -benchtime "${SMALL_ROUNDS:-3}x" | grep '^BenchmarkSFTPSmallFiles')
rate() { echo "$small" | awk -v m="$1" '$1 ~ m { for (i = 1; i < NF; i++) if ($(i+1) == "files/s") print $i }'; }
pooled=$(rate pooled); perfile=$(rate dial-per-file)
printf "   4 KiB files: pooled connections %s files/s   a connection per file %s files/s   ratio %s\n" "$pooled" "$perfile" "$(ratio "$pooled" "$perfile")"

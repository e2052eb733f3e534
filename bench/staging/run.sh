#!/usr/bin/env bash
# sftp upload and download with `scalebox stage cp` next to the OpenSSH
# sftp client, same file, same server, one run; and a local: copy next to
# cp. Prints MB/s and the ratios. Needs the test sshd (make cluster-up).
#
#   bench/staging/run.sh [MiB]     (default 1024)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
mib=${1:-1024}
eval "$(bash "$root/scripts/sshd.sh" env)"
bin=$root/bin/scalebox
(cd "$root" && make -s build)
work=$(mktemp -d /tmp/scalebox-bench-staging.XXXXXX)
trap 'rm -rf "$work"' EXIT
head -c "$((mib << 20))" /dev/urandom > "$work/data.bin"
remote_dir=${SCALEBOX_SFTP_URL#sftp://*@*/}
remote_dir=/${remote_dir#/}
hostport=${SCALEBOX_SFTP_URL#sftp://}; hostport=${hostport%%/*}
user=${hostport%@*}; host=${hostport#*@}; port=${host#*:}; host=${host%:*}
# ssh refuses a key others can read; the test key is 0644 for test users.
install -m 600 "$SCALEBOX_SFTP_KEY" "$work/key"
ssh_opts=(-o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$work/known_hosts" -i "$work/key" -P "$port")
echo "[$host]:$port $SCALEBOX_SFTP_HOST_KEY" > "$work/known_hosts"
now() { date +%s.%N; }
rate() { awk -v m="$mib" -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", m / (b - a) }'; }
run_sb() { "$bin" stage cp --key "$SCALEBOX_SFTP_KEY" --host-key "$SCALEBOX_SFTP_HOST_KEY" "$@" >/dev/null; }

echo "== $mib MiB over sftp on $host:$port (loopback), and local: vs cp"
t0=$(now); run_sb "file://$work/data.bin" "$SCALEBOX_SFTP_URL/bench/sb.bin"; t1=$(now)
printf 'put %s %s/bench/ossh.bin\n' "$work/data.bin" "$remote_dir" | sftp -q "${ssh_opts[@]}" -b - "$user@$host" >/dev/null; t2=$(now)
run_sb "$SCALEBOX_SFTP_URL/bench/sb.bin" "file://$work/back-sb.bin"; t3=$(now)
printf 'get %s/bench/ossh.bin %s\n' "$remote_dir" "$work/back-ossh.bin" | sftp -q "${ssh_opts[@]}" -b - "$user@$host" >/dev/null; t4=$(now)
export SCALEBOX_LOCAL_ROOT=$work/local
t5=$(now); run_sb "file://$work/data.bin" "local:sb.bin"; t6=$(now)
mkdir -p "$work/cp" && cp "$work/data.bin" "$work/cp/data.bin" && sync -f "$work/cp/data.bin"; t7=$(now)
up_sb=$(rate "$t0" "$t1"); up_os=$(rate "$t1" "$t2"); down_sb=$(rate "$t2" "$t3"); down_os=$(rate "$t3" "$t4")
loc_sb=$(rate "$t5" "$t6"); loc_cp=$(rate "$t6" "$t7")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
printf "   upload    scalebox %5s MB/s   OpenSSH sftp %5s MB/s   ratio %s (target >= 0.8)\n" "$up_sb" "$up_os" "$(ratio "$up_sb" "$up_os")"
printf "   download  scalebox %5s MB/s   OpenSSH sftp %5s MB/s   ratio %s (target >= 0.8)\n" "$down_sb" "$down_os" "$(ratio "$down_sb" "$down_os")"
printf "   local:    scalebox %5s MB/s   cp + sync    %5s MB/s   ratio %s (verified copy vs cp)\n" "$loc_sb" "$loc_cp" "$(ratio "$loc_sb" "$loc_cp")"
cmp "$work/data.bin" "$work/back-sb.bin" && echo "   round trip verified"

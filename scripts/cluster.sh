#!/usr/bin/env bash
# Local Slurm test clusters for development and CI: real daemons on one
# machine, several simulated nodes (slurmd -N).
#
#   scripts/cluster.sh deps        install the Debian packages (root, apt)
#   scripts/cluster.sh up [ci]     start munge, slurmctld, 3 slurmd, slurmrestd (JWT)
#   scripts/cluster.sh down [ci]   stop them
#   scripts/cluster.sh status      what runs
#   scripts/cluster.sh env [ci]    print the variables tests read (eval "$(... env)")
#
# Cluster "ci" is the host's Slurm (Debian bookworm, 22.05): controller on
# 127.0.0.1:6817, nodes n1..n3 on ports 17001..17003, partition "debug",
# slurmrestd with JWT on 127.0.0.1:6820. State lives under $SCALEBOX_CLUSTER_ROOT
# (default /var/lib/scalebox-cluster); /etc/slurm/slurm.conf is written by "up".
set -euo pipefail

ROOT=${SCALEBOX_CLUSTER_ROOT:-/var/lib/scalebox-cluster}
NODES=${SCALEBOX_CLUSTER_NODES:-3}
TEST_USER=${SCALEBOX_TEST_USER:-sbuser}
REST_USER=slurmrest

log() { echo "cluster: $*" >&2; }
die() { echo "cluster: $*" >&2; exit 1; }

need_root() { [ "$(id -u)" = 0 ] || die "$1 needs root (it installs packages or starts daemons as other users)"; }

deps() {
	need_root deps
	export DEBIAN_FRONTEND=noninteractive
	local pkgs="slurmctld slurmd slurm-client slurmrestd munge slurm-wlm-jwt-plugin"
	# shellcheck disable=SC2086
	if ! dpkg -s $pkgs >/dev/null 2>&1; then
		apt-get update -qq || true
		# shellcheck disable=SC2086
		apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
	fi
	id "$REST_USER" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$REST_USER"
	id "$TEST_USER" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$TEST_USER"
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# wait_for DESC CMD...: poll until CMD succeeds, at most 20 s.
wait_for() {
	local desc=$1; shift
	local deadline=$((SECONDS + 20))
	until "$@" >/dev/null 2>&1; do
		[ $SECONDS -lt $deadline ] || die "timed out waiting for $desc"
		sleep 0.1
	done
}

write_conf_ci() {
	local host; host=$(hostname)
	install -d -o slurm -g slurm "$ROOT/ci/ctld" "$ROOT/ci/log"
	install -d -m 0755 "$ROOT/ci/slurmd"
	cat > /etc/slurm/slurm.conf <<CONF
# Written by scalebox scripts/cluster.sh: the local "ci" test cluster.
ClusterName=ci
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=6817
SlurmUser=slurm
AuthType=auth/munge
AuthAltTypes=auth/jwt
AuthAltParameters=jwt_key=$ROOT/ci/ctld/jwt_hs256.key
StateSaveLocation=$ROOT/ci/ctld
SlurmctldPidFile=$ROOT/ci/slurmctld.pid
SlurmctldLogFile=$ROOT/ci/log/slurmctld.log
SlurmdSpoolDir=$ROOT/ci/slurmd/%n
SlurmdPidFile=$ROOT/ci/slurmd-%n.pid
SlurmdLogFile=$ROOT/ci/log/slurmd-%n.log
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$ROOT/ci/log/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
MinJobAge=600
KillWait=5
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MpiDefault=none
CONF
	local i
	for i in $(seq 1 "$NODES"); do
		echo "NodeName=n$i NodeHostname=$host NodeAddr=127.0.0.1 Port=$((17000 + i)) CPUs=4 RealMemory=4000 State=UNKNOWN" >> /etc/slurm/slurm.conf
	done
	echo "PartitionName=debug Nodes=n[1-$NODES] Default=YES MaxTime=INFINITE State=UP" >> /etc/slurm/slurm.conf
	if [ ! -s "$ROOT/ci/ctld/jwt_hs256.key" ]; then
		dd if=/dev/urandom bs=32 count=1 2>/dev/null > "$ROOT/ci/ctld/jwt_hs256.key"
	fi
	chown slurm:slurm "$ROOT/ci/ctld/jwt_hs256.key"
	chmod 0600 "$ROOT/ci/ctld/jwt_hs256.key"
}

up_ci() {
	need_root up
	command -v slurmctld >/dev/null || die "Slurm is not installed: run 'make deps' (scripts/cluster.sh deps)"
	id "$REST_USER" >/dev/null 2>&1 || die "user $REST_USER is missing: run 'make deps'"
	write_conf_ci
	install -d -o munge -g munge -m 0755 /run/munge
	if ! pgrep -x munged >/dev/null; then
		runuser -u munge -- /usr/sbin/munged
	fi
	wait_for munge test -S /run/munge/munge.socket.2
	if ! pid_alive "$ROOT/ci/slurmctld.pid"; then
		slurmctld
	fi
	wait_for slurmctld scontrol ping
	local i
	for i in $(seq 1 "$NODES"); do
		pid_alive "$ROOT/ci/slurmd-n$i.pid" || slurmd -N "n$i"
	done
	wait_for "$NODES idle nodes" bash -c "[ \$(sinfo -h -N -t idle,mix,alloc -o '%N' | sort -u | wc -l) -ge $NODES ]"
	if ! pid_alive "$ROOT/ci/slurmrestd.pid"; then
		# slurmrestd refuses root; without slurmdbd it must be told which
		# plugins to load. It does not write a pid file itself.
		SLURM_JWT=daemon setsid slurmrestd -u "$REST_USER" -g "$REST_USER" -a rest_auth/jwt \
			-s openapi/v0.0.36,openapi/v0.0.37,openapi/v0.0.38 127.0.0.1:6820 \
			> "$ROOT/ci/log/slurmrestd.log" 2>&1 < /dev/null &
		echo $! > "$ROOT/ci/slurmrestd.pid"
	fi
	wait_for slurmrestd bash -c "exec 3<>/dev/tcp/127.0.0.1/6820"
	log "ci up: $(sinfo -h -o '%P %D %t' | tr '\n' ' ')rest=http://127.0.0.1:6820"
}

down_ci() {
	local f
	for f in "$ROOT"/ci/slurmrestd.pid "$ROOT"/ci/slurmd-*.pid "$ROOT"/ci/slurmctld.pid; do
		[ -f "$f" ] || continue
		if pid_alive "$f"; then
			kill "$(cat "$f")" 2>/dev/null || true
			local deadline=$((SECONDS + 15))
			while pid_alive "$f" && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
			pid_alive "$f" && kill -9 "$(cat "$f")" 2>/dev/null || true
		fi
		rm -f "$f"
	done
	log "ci down"
}

env_ci() {
	echo "export SCALEBOX_TEST_SLURM_CI=1"
	echo "export SCALEBOX_TEST_SLURMRESTD_CI=http://127.0.0.1:6820"
	echo "export SCALEBOX_TEST_USER=$TEST_USER"
}

status() {
	local f
	for f in "$ROOT"/ci/*.pid; do
		[ -f "$f" ] || continue
		if pid_alive "$f"; then echo "$(basename "$f" .pid) running (pid $(cat "$f"))"; else echo "$(basename "$f" .pid) dead"; fi
	done
	sinfo 2>/dev/null || true
}

cmd=${1:-}
name=${2:-ci}
case "$cmd:$name" in
deps:*) deps ;;
up:ci) up_ci ;;
down:ci) down_ci ;;
env:ci) env_ci ;;
status:*) status ;;
*) die "usage: $0 deps | up [ci] | down [ci] | status | env [ci]" ;;
esac

#!/usr/bin/env bash
# Local Slurm test clusters for development and CI: real daemons on one
# machine, several simulated nodes (slurmd -N).
#
#   scripts/cluster.sh deps [trixie]  install the Debian packages (root, apt);
#                                     trixie: also build the Debian trixie chroot
#   scripts/cluster.sh up [ci|trixie]   start munge, slurmctld, slurmd, slurmrestd (JWT)
#   scripts/cluster.sh down [ci|trixie] stop them
#   scripts/cluster.sh status      what runs
#   scripts/cluster.sh env [ci]    print the variables tests read (eval "$(... env)")
#
# Cluster "ci" is the host's Slurm (Debian bookworm, 22.05): controller on
# 127.0.0.1:6817, nodes n1..n3 on ports 17001..17003, partition "debug",
# slurmrestd with JWT on 127.0.0.1:6820. State lives under $SCALEBOX_CLUSTER_ROOT
# (default /var/lib/scalebox-cluster); /etc/slurm/slurm.conf is written by "up".
#
# Cluster "trixie" is Slurm 24.11 from a Debian trixie chroot at
# $ROOT/trixie/root with its own munge: controller 127.0.0.1:7817, nodes
# t1, t2 on ports 17101, 17102, slurmrestd (v0.0.40-42) on 127.0.0.1:6821.
# $ROOT/shared is bind-mounted at the same path inside, so files the head
# writes there (app code, pilot scripts, tokens) are seen by its jobs. The
# built chroot is cached as a tarball in $SCALEBOX_CI_CACHE.
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
	local pkgs="$SLURM_PKGS lmod"
	# shellcheck disable=SC2086
	if ! dpkg -s $pkgs >/dev/null 2>&1; then
		apt-get update -qq || true
		# shellcheck disable=SC2086
		apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
	fi
	id "$REST_USER" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$REST_USER"
	id "$TEST_USER" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$TEST_USER"
}

TRIXIE=$ROOT/trixie/root
SHARED=$ROOT/shared
CACHE=${SCALEBOX_CI_CACHE:-/var/cache/scalebox-ci}
SLURM_PKGS="slurmctld slurmd slurm-client slurmrestd munge slurm-wlm-jwt-plugin"

in_trixie() { chroot "$TRIXIE" "$@"; }

mount_trixie() {
	local m
	for m in proc sys dev dev/pts; do
		mkdir -p "$TRIXIE/$m"
		mountpoint -q "$TRIXIE/$m" && continue
		case $m in
		proc) mount -t proc proc "$TRIXIE/proc" ;;
		*) mount --bind "/$m" "$TRIXIE/$m" ;;
		esac
	done
	install -d -m 1777 "$SHARED"
	mkdir -p "$TRIXIE$SHARED"
	mountpoint -q "$TRIXIE$SHARED" || mount --bind "$SHARED" "$TRIXIE$SHARED"
	cp /etc/hosts "$TRIXIE/etc/hosts"
	cp /etc/resolv.conf "$TRIXIE/etc/resolv.conf" 2>/dev/null || true
}

umount_trixie() {
	local m
	for m in "$SHARED" dev/pts dev sys proc; do
		m=${m#/}
		mountpoint -q "$TRIXIE/$m" && umount -l "$TRIXIE/$m"
	done
	return 0
}

deps_trixie() {
	need_root "deps trixie"
	[ -x "$TRIXIE/usr/sbin/slurmctld" ] && return 0
	local tarball=$CACHE/trixie-slurm-rootfs.tar.gz
	mkdir -p "$TRIXIE"
	if [ -s "$tarball" ]; then
		log "trixie: unpacking cached chroot $tarball"
		tar -C "$TRIXIE" -xzf "$tarball"
		return 0
	fi
	command -v debootstrap >/dev/null || apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
	log "trixie: debootstrap (about a minute)"
	debootstrap --variant=minbase trixie "$TRIXIE" http://deb.debian.org/debian >/dev/null
	printf '#!/bin/sh\nexit 101\n' > "$TRIXIE/usr/sbin/policy-rc.d"
	chmod +x "$TRIXIE/usr/sbin/policy-rc.d"
	mount_trixie
	in_trixie env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $SLURM_PKGS environment-modules >/dev/null
	in_trixie apt-get clean
	id -u "$REST_USER" >/dev/null
	in_trixie useradd --system --no-create-home --shell /usr/sbin/nologin "$REST_USER" 2>/dev/null || true
	in_trixie useradd --create-home --shell /bin/bash "$TEST_USER" 2>/dev/null || true
	umount_trixie
	mkdir -p "$CACHE"
	tar -C "$TRIXIE" -czf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
}

# slurm_conf NAME STATE CTLD_PORT SLURMD_PORT NODE_PREFIX NODES NODE_PORT_BASE
# prints the slurm.conf of a test cluster: STATE is its state directory as
# its daemons see it; nodes PREFIX1..PREFIXn listen on NODE_PORT_BASE+i.
slurm_conf() {
	local name=$1 st=$2 ctld_port=$3 slurmd_port=$4 prefix=$5 nodes=$6 base=$7 host i
	host=$(hostname)
	cat <<CONF
# Written by scalebox scripts/cluster.sh: the local "$name" test cluster.
ClusterName=$name
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=slurm
AuthType=auth/munge
AuthAltTypes=auth/jwt
AuthAltParameters=jwt_key=$st/ctld/jwt_hs256.key
StateSaveLocation=$st/ctld
SlurmctldPidFile=$st/slurmctld.pid
SlurmctldLogFile=$st/log/slurmctld.log
SlurmdSpoolDir=$st/slurmd/%n
SlurmdPidFile=$st/slurmd-%n.pid
SlurmdLogFile=$st/log/slurmd-%n.log
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$st/log/jobcomp.txt
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
	for i in $(seq 1 "$nodes"); do
		echo "NodeName=$prefix$i NodeHostname=$host NodeAddr=127.0.0.1 Port=$((base + i)) CPUs=4 RealMemory=4000 State=UNKNOWN"
	done
	echo "PartitionName=debug Nodes=$prefix[1-$nodes] Default=YES MaxTime=INFINITE State=UP"
}

write_conf_trixie() {
	local st=/var/lib/scalebox-trixie
	in_trixie install -d -o slurm -g slurm $st/ctld $st/log
	in_trixie install -d -m 0755 $st/slurmd
	slurm_conf trixie $st 7817 7818 t 2 17100 > "$TRIXIE/etc/slurm/slurm.conf"
	# 24.11's slurmd loads a cgroup plugin even with proctrack/linuxproc;
	# there is no cgroup filesystem here.
	echo "CgroupPlugin=disabled" > "$TRIXIE/etc/slurm/cgroup.conf"
	if [ ! -s "$TRIXIE$st/ctld/jwt_hs256.key" ]; then
		dd if=/dev/urandom bs=32 count=1 2>/dev/null > "$TRIXIE$st/ctld/jwt_hs256.key"
	fi
	in_trixie chown slurm:slurm $st/ctld/jwt_hs256.key
	chmod 0600 "$TRIXIE$st/ctld/jwt_hs256.key"
}

up_trixie() {
	need_root "up trixie"
	[ -x "$TRIXIE/usr/sbin/slurmctld" ] || die "no trixie chroot: run 'scripts/cluster.sh deps trixie'"
	mount_trixie
	write_conf_trixie
	local st=/var/lib/scalebox-trixie
	in_trixie install -d -o munge -g munge -m 0755 /run/munge
	pid_alive "$TRIXIE/run/munge/munged.pid" || in_trixie runuser -u munge -- /usr/sbin/munged --force
	wait_for "trixie munge" test -S "$TRIXIE/run/munge/munge.socket.2"
	pid_alive "$TRIXIE$st/slurmctld.pid" || in_trixie slurmctld
	wait_for "trixie slurmctld" in_trixie scontrol ping
	pid_alive "$TRIXIE$st/slurmd-t1.pid" || in_trixie slurmd -N t1
	pid_alive "$TRIXIE$st/slurmd-t2.pid" || in_trixie slurmd -N t2
	wait_for "2 idle trixie nodes" bash -c "[ \$(chroot $TRIXIE sinfo -h -N -t idle,mix,alloc -o '%N' | sort -u | wc -l) -ge 2 ]"
	if ! pid_alive "$ROOT/trixie/slurmrestd.pid"; then
		SLURM_JWT=daemon setsid chroot "$TRIXIE" slurmrestd -u "$REST_USER" -g "$REST_USER" -a rest_auth/jwt \
			-s openapi/slurmctld 127.0.0.1:6821 > "$ROOT/trixie/slurmrestd.log" 2>&1 < /dev/null &
		echo $! > "$ROOT/trixie/slurmrestd.pid"
	fi
	wait_for "trixie slurmrestd" bash -c "exec 3<>/dev/tcp/127.0.0.1/6821"
	log "trixie up: $(in_trixie sinfo -h -o '%P %D %t' | tr '\n' ' ')rest=http://127.0.0.1:6821 $(in_trixie sinfo --version)"
}

down_trixie() {
	local st=$TRIXIE/var/lib/scalebox-trixie
	stop_pidfiles "$ROOT/trixie/slurmrestd.pid" "$st"/slurmd-*.pid "$st/slurmctld.pid"
	pid_alive "$TRIXIE/run/munge/munged.pid" && kill "$(cat "$TRIXIE/run/munge/munged.pid")"
	umount_trixie
	log "trixie down"
}

# stop_pidfiles FILE...: TERM each daemon, KILL it after 15 s, drop the file.
stop_pidfiles() {
	local f
	for f in "$@"; do
		[ -f "$f" ] || continue
		if pid_alive "$f"; then
			kill "$(cat "$f")" 2>/dev/null || true
			local deadline=$((SECONDS + 15))
			while pid_alive "$f" && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
			pid_alive "$f" && kill -9 "$(cat "$f")" 2>/dev/null || true
		fi
		rm -f "$f"
	done
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
	install -d -o slurm -g slurm "$ROOT/ci/ctld" "$ROOT/ci/log"
	install -d -m 0755 "$ROOT/ci/slurmd"
	slurm_conf ci "$ROOT/ci" 6817 6818 n "$NODES" 17000 > /etc/slurm/slurm.conf
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
	pid_alive /run/munge/munged.pid || runuser -u munge -- /usr/sbin/munged --force
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
	stop_pidfiles "$ROOT"/ci/slurmrestd.pid "$ROOT"/ci/slurmd-*.pid "$ROOT"/ci/slurmctld.pid
	log "ci down"
}

env_trixie() {
	echo "export SCALEBOX_TEST_TRIXIE_ROOT=$TRIXIE"
	echo "export SCALEBOX_TEST_SHARED=$SHARED"
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
deps:ci) deps ;;
deps:trixie) deps && deps_trixie ;;
up:ci) up_ci ;;
up:trixie) up_trixie ;;
down:ci) down_ci ;;
down:trixie) down_trixie ;;
env:ci) env_ci ;;
env:trixie) env_trixie ;;
status:*) status ;;
*) die "usage: $0 deps [ci|trixie] | up [ci|trixie] | down [ci|trixie] | status | env [ci|trixie]" ;;
esac

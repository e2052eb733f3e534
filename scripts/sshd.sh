#!/usr/bin/env bash
# A real sshd on 127.0.0.1 acting as a remote site for the sftp tests:
# key-only auth for a dedicated, password-locked user.
#
#   scripts/sshd.sh deps     install openssh-server (root, apt)
#   scripts/sshd.sh up       create the user and keys (once), start sshd
#   scripts/sshd.sh down     stop it
#   scripts/sshd.sh env      print the variables tests read
#
# Keys and config live in $SCALEBOX_CLUSTER_ROOT/sshd (default
# /var/lib/scalebox-cluster/sshd); the site's files are under the user's
# home, data/. See ../shared/notes/real-components.md for the gotchas.
set -euo pipefail

ROOT=${SCALEBOX_CLUSTER_ROOT:-/var/lib/scalebox-cluster}
DIR=$ROOT/sshd
PORT=${SCALEBOX_SFTP_PORT:-2222}
USER_NAME=${SCALEBOX_SFTP_USER:-sbsftp}

log() { echo "sshd: $*" >&2; }
die() { echo "sshd: $*" >&2; exit 1; }
need_root() { [ "$(id -u)" = 0 ] || die "$1 needs root"; }

deps() {
	need_root deps
	# zstd: the site's side of ?compress=zstd (staging/zstd.go).
	if ! dpkg -s openssh-server >/dev/null 2>&1 || ! command -v zstd >/dev/null; then
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq || true
		apt-get install -y -qq --no-install-recommends openssh-server zstd >/dev/null
	fi
}

up() {
	need_root up
	command -v sshd >/dev/null || [ -x /usr/sbin/sshd ] || die "openssh-server is not installed (scripts/sshd.sh deps)"
	if ! id "$USER_NAME" >/dev/null 2>&1; then
		useradd --create-home --shell /bin/sh "$USER_NAME"
	fi
	# useradd leaves the account locked ('!'), which sshd refuses even for
	# keys; '*' means no password but not locked.
	usermod -p '*' "$USER_NAME"
	mkdir -p "$DIR" /run/sshd
	chmod 755 "$DIR"
	[ -f "$DIR/host_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -f "$DIR/host_ed25519"
	[ -f "$DIR/client_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -f "$DIR/client_ed25519"
	chmod 644 "$DIR/client_ed25519" # test processes of other users read it; a test key only
	local home
	home=$(getent passwd "$USER_NAME" | cut -d: -f6)
	install -d -m 700 -o "$USER_NAME" "$home/.ssh"
	install -m 600 -o "$USER_NAME" "$DIR/client_ed25519.pub" "$home/.ssh/authorized_keys"
	install -d -m 755 -o "$USER_NAME" "$home/data"
	cat >"$DIR/sshd_config" <<-CFG
		Port $PORT
		ListenAddress 127.0.0.1
		HostKey $DIR/host_ed25519
		PidFile $DIR/sshd.pid
		UsePAM no
		PasswordAuthentication no
		KbdInteractiveAuthentication no
		PubkeyAuthentication yes
		AuthorizedKeysFile .ssh/authorized_keys
		AllowUsers $USER_NAME
		Subsystem sftp internal-sftp
	CFG
	down quiet
	/usr/sbin/sshd -t -f "$DIR/sshd_config"
	/usr/sbin/sshd -f "$DIR/sshd_config" -E "$DIR/sshd.log"
	for _ in $(seq 1 50); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
			log "up: sftp://$USER_NAME@127.0.0.1:$PORT$home/data (key $DIR/client_ed25519)"
			return
		fi
		sleep 0.1
	done
	die "sshd did not listen on 127.0.0.1:$PORT; see $DIR/sshd.log"
}

down() {
	if [ -f "$DIR/sshd.pid" ]; then
		kill "$(cat "$DIR/sshd.pid")" 2>/dev/null || true
		rm -f "$DIR/sshd.pid"
	fi
	[ "${1:-}" = quiet ] || log "down"
}

env_vars() {
	local home
	home=$(getent passwd "$USER_NAME" | cut -d: -f6)
	echo "export SCALEBOX_SFTP_URL=sftp://$USER_NAME@127.0.0.1:$PORT$home/data"
	echo "export SCALEBOX_SFTP_KEY=$DIR/client_ed25519"
	echo "export SCALEBOX_SFTP_HOST_KEY='$(cat "$DIR/host_ed25519.pub" 2>/dev/null)'"
}

case ${1:-} in
deps) deps ;;
up) up ;;
down) down ;;
env) env_vars ;;
*) die "usage: scripts/sshd.sh deps | up | down | env" ;;
esac

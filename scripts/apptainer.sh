#!/usr/bin/env bash
# Apptainer for development and CI, built from its Go module (it is not
# packaged in Debian, and the machines here reach only package registries).
#
#   scripts/apptainer.sh install     build Apptainer $VERSION into the cache
#                                    (once), link /usr/local/bin/apptainer,
#                                    apply the settings this machine needs
#   scripts/apptainer.sh base OUT    a busybox-static base image (SIF) built
#                                    from a local rootfs, no internet
#   scripts/apptainer.sh env         print the variables tests read
#
# The installed prefix is $SCALEBOX_CI_CACHE/apptainer-$VERSION: a repeat run
# on the same machine skips the ~8 minute build. See
# ../shared/notes/real-components.md for why each step is here.
set -euo pipefail

VERSION=${APPTAINER_VERSION:-1.4.3}
CACHE=${SCALEBOX_CI_CACHE:-/var/cache/scalebox-ci}
PREFIX=$CACHE/apptainer-$VERSION
DEPS="libseccomp-dev pkg-config uidmap fakeroot cryptsetup squashfs-tools squashfuse fuse2fs fuse-overlayfs libfuse3-dev libsubid-dev tzdata busybox-static"

log() { echo "apptainer: $*" >&2; }
die() { echo "apptainer: $*" >&2; exit 1; }

deps() {
	[ "$(id -u)" = 0 ] || die "install needs root (apt packages, /usr/local/bin, /etc/subuid)"
	# shellcheck disable=SC2086
	if ! dpkg -s $DEPS >/dev/null 2>&1; then
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq || true
		# shellcheck disable=SC2086
		apt-get install -y -qq --no-install-recommends $DEPS >/dev/null
	fi
}

build() {
	command -v go >/dev/null || die "go is needed to build Apptainer"
	local src work
	log "building Apptainer $VERSION into $PREFIX (first run on this machine: ~8 minutes)"
	src=$(go mod download -json "github.com/apptainer/apptainer@v$VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	[ -d "$src" ] || die "go mod download github.com/apptainer/apptainer@v$VERSION gave no source directory"
	work=$(mktemp -d /tmp/apptainer-build.XXXXXX)
	cp -r "$src/." "$work/"
	chmod -R u+w "$work"
	# The module zip drops exec bits; the build runs its own scripts.
	grep -rlI '^#!' "$work" | xargs -r chmod +x
	echo "$VERSION" >"$work/VERSION"
	(
		cd "$work"
		./mconfig --without-suid --prefix="$PREFIX" >/dev/null
		# Its Makefile runs `go clean -cache`: give it a cache of its own.
		export GOCACHE=$work/.gocache GOFLAGS=-buildvcs=false
		make -s -C builddir >/dev/null
		make -s -C builddir install >/dev/null
	)
	rm -rf "$work"
	# Paths are compiled in, so the build installs under its final name;
	# the marker says the install finished.
	touch "$PREFIX/.installed"
}

configure() {
	local conf=$PREFIX/etc/apptainer/apptainer.conf
	[ -f "$conf" ] || die "$conf missing: broken install, remove $PREFIX and run again"
	# Root here lacks CAP_SYS_RESOURCE, which Apptainer keeps by default:
	# every exec fails until root's default capabilities come from the file.
	sed -i 's/^root default capabilities = .*/root default capabilities = file/' "$conf"
	# Def files with %post build with --fakeroot, which needs a subordinate
	# id range for root.
	for f in /etc/subuid /etc/subgid; do
		grep -q '^root:' "$f" 2>/dev/null || echo "root:100000:65536" >>"$f"
	done
	ln -sf "$PREFIX/bin/apptainer" /usr/local/bin/apptainer
}

install() {
	deps
	if [ ! -f "$PREFIX/.installed" ]; then
		# A build killed half-way leaves a prefix without the marker.
		rm -rf "$PREFIX"
		build
	fi
	configure
	log "$("$PREFIX/bin/apptainer" --version) at /usr/local/bin/apptainer"
}

# base OUT: a SIF of busybox-static plus an os-release naming it, so a test
# can tell the image's OS from the host's.
base() {
	local out=${1:?usage: scripts/apptainer.sh base OUT.sif} bb root
	bb=$(command -v busybox || echo /bin/busybox)
	[ -x "$bb" ] && "$bb" --list >/dev/null 2>&1 || die "busybox-static is needed (apt-get install busybox-static)"
	root=$(mktemp -d /tmp/scalebox-rootfs.XXXXXX)
	mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,work,app/bin,dev,proc,sys}
	cp "$bb" "$root/bin/busybox"
	for app in $("$bb" --list); do
		[ "$app" = busybox ] || ln -sf /bin/busybox "$root/bin/$app"
	done
	cat >"$root/etc/os-release" <<-'OS'
		NAME="Scalebox busybox"
		ID=scalebox-busybox
		PRETTY_NAME="Scalebox busybox base image"
	OS
	echo "root:x:0:0:root:/root:/bin/sh" >"$root/etc/passwd"
	echo "root:x:0:" >"$root/etc/group"
	apptainer build --force "$out" "$root" >/dev/null
	rm -rf "$root"
	log "built $out"
}

env_vars() {
	echo "export SCALEBOX_APPTAINER=$(command -v apptainer || echo "$PREFIX/bin/apptainer")"
}

case ${1:-} in
install) install ;;
base) shift; base "$@" ;;
env) env_vars ;;
*) die "usage: scripts/apptainer.sh install | base OUT.sif | env" ;;
esac

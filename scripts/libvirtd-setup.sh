#!/usr/bin/env bash
# libvirtd-setup.sh: make a real libvirtd answer on its unix socket, for the KVM driver's tests
# (hypervisors/kvm) and `sysvm dev` (libvirt's test driver behind the daemon).
#
# Idempotent and quick when already done: it installs Debian's libvirt-daemon and libvirt-clients
# only when missing (running apt-get update first only when the plain install fails), creates
# the users, groups and directories libvirtd needs before it stays up, starts `libvirtd -d` only
# when the socket does not answer, and waits (bounded) for the socket to answer.
#
# With QEMU (the default; LIBVIRT_WITH_QEMU=0 leaves it out) it also installs Debian's
# qemu-system-x86 (about 18 MB to download, under 10 s), starts virtlogd, which the QEMU driver
# needs to start a guest, and gives /dev/kvm to group kvm as udev would, so the KVM driver's
# QEMU smoke test boots a real guest (KVM where /dev/kvm works, TCG otherwise).
#
# Must run as root (Debian 12). Environment:
#   LIBVIRT_SOCK          socket to wait for (default /run/libvirt/libvirt-sock)
#   LIBVIRTD_WAIT_SECONDS how long to wait for the socket (default 30)
#   LIBVIRT_WITH_QEMU     1 (default) or 0
set -euo pipefail

SOCK="${LIBVIRT_SOCK:-/run/libvirt/libvirt-sock}"
WAIT="${LIBVIRTD_WAIT_SECONDS:-30}"
WITH_QEMU="${LIBVIRT_WITH_QEMU:-1}"

log() { echo "libvirtd-setup: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
	log "must run as root"
	exit 1
fi

# answering: the daemon behind $SOCK serves a connection to the test driver.
answering() {
	[ -S "$SOCK" ] || return 1
	timeout 10 virsh -q -c "test+unix:///default?socket=${SOCK}" version >/dev/null 2>&1
}

# running PIDFILE NAME: the pid file names a live (not zombie) process called NAME. A daemon
# killed without cleanup leaves its pid file, and an unreaped zombie still answers kill -0.
running() {
	local pid
	[ -f "$1" ] || return 1
	pid=$(cat "$1" 2>/dev/null) || return 1
	[ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
	[ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] || return 1
	[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]
}

install_packages() {
	local pkgs=("$@")
	export DEBIAN_FRONTEND=noninteractive
	if apt-get install -y -q -o DPkg::Lock::Timeout=120 --no-install-recommends "${pkgs[@]}" >/tmp/libvirtd-setup-apt.log 2>&1; then
		return 0
	fi
	log "plain install failed; running apt-get update first"
	apt-get update -q -o DPkg::Lock::Timeout=120 >>/tmp/libvirtd-setup-apt.log 2>&1
	apt-get install -y -q -o DPkg::Lock::Timeout=120 --no-install-recommends "${pkgs[@]}" >>/tmp/libvirtd-setup-apt.log 2>&1 || {
		log "apt-get install ${pkgs[*]} failed:"
		tail -n 20 /tmp/libvirtd-setup-apt.log >&2
		return 1
	}
}

want=()
command -v libvirtd >/dev/null 2>&1 || want+=(libvirt-daemon)
command -v virsh >/dev/null 2>&1 || want+=(libvirt-clients)
if [ "$WITH_QEMU" = 1 ] && ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
	want+=(qemu-system-x86)
fi
if [ ${#want[@]} -gt 0 ]; then
	log "installing ${want[*]}"
	start=$(date +%s)
	install_packages "${want[@]}"
	log "installed in $(($(date +%s) - start))s"
fi

if [ "$WITH_QEMU" = 1 ]; then
	getent group kvm >/dev/null || groupadd -r kvm
	# What Debian's udev rule does (KERNEL=="kvm", GROUP="kvm", MODE="0660"); without it QEMU,
	# running as libvirt-qemu, cannot use KVM and libvirt re-probes QEMU on every call.
	if [ -c /dev/kvm ]; then
		chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
	fi
	# A socket left by a virtlogd that was killed does not mean one is running.
	if ! running /run/virtlogd.pid virtlogd; then
		mkdir -p /run/libvirt /var/log/libvirt
		rm -f /run/libvirt/virtlogd-sock /run/libvirt/virtlogd-admin-sock /run/virtlogd.pid
		log "starting virtlogd -d"
		virtlogd -d
	fi
fi

if answering; then
	exit 0
fi

# What libvirtd's qemu driver needs before the daemon stays up on a bare machine (no systemd,
# no package post-install run in a container).
getent group kvm >/dev/null || groupadd -r kvm
getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu
getent group libvirt >/dev/null || groupadd -r libvirt
if ! id libvirt-qemu >/dev/null 2>&1; then
	useradd -r -g libvirt-qemu -G kvm -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu
fi
mkdir -p /var/log/libvirt /run/libvirt /var/lib/libvirt /var/cache/libvirt

# The system daemon writes /run/libvirtd.pid; other libvirtd processes (private daemons of
# `sysvm dev` and its tests) must not be taken for it.
PIDFILE=/run/libvirtd.pid
if ! running "$PIDFILE" libvirtd; then
	# A stale socket from a daemon that died would make the new one fail to bind.
	rm -f "$SOCK" "${SOCK}-ro" "${SOCK}-admin" "$PIDFILE"
	log "starting libvirtd -d"
	libvirtd -d
fi

deadline=$(($(date +%s) + WAIT))
until answering; do
	if [ "$(date +%s)" -ge "$deadline" ]; then
		log "libvirtd socket $SOCK did not answer within ${WAIT}s"
		tail -n 20 /var/log/libvirt/libvirtd.log 2>/dev/null >&2 || true
		exit 1
	fi
	sleep 0.5
done
log "libvirtd answering on $SOCK"

#!/usr/bin/env bash
# Build the local LXD images used by the driver's integration tests, without
# any image server (none is reachable from the test hosts):
#   lxd-driver-test/bookworm  Debian bookworm (debootstrap minbase) with systemd,
#                             bash, git, ca-certificates, procps
#   lxd-driver-test/busybox   busybox-static only: no systemd, no bash
# An image whose alias already exists is left alone (set
# LXD_DRIVER_REBUILD_IMAGES=1 to replace it). Expects a running LXD daemon
# and the packages installed by setup-lxd.sh.
#
# Environment:
#   LXD_DRIVER_DEBIAN_MIRROR   override the mirror taken from the apt config
#   LXD_DRIVER_REBUILD_IMAGES  1 = rebuild even if the aliases exist
set -Eeuo pipefail
# shellcheck source=scripts/setup-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/setup-common.sh"

SUITE=bookworm
BOOKWORM_ALIAS=lxd-driver-test/bookworm
BUSYBOX_ALIAS=lxd-driver-test/busybox
REBUILD=${LXD_DRIVER_REBUILD_IMAGES:-0}

log() { printf 'setup-lxd: %s\n' "$*"; }
die() {
  printf 'setup-lxd: ERROR: %s\n' "$*" >&2
  exit 1
}
trap 'die "command failed (exit $?) at line $LINENO: $BASH_COMMAND"' ERR

lxc query /1.0 >/dev/null 2>&1 || die "LXD daemon is not reachable (run scripts/setup-lxd.sh)"

# image_wanted ALIAS: true if ALIAS must be (re)built.
image_wanted() {
  [[ $REBUILD == 1 ]] || ! lxc image info "$1" >/dev/null 2>&1
}

need_bookworm=0 need_busybox=0
if image_wanted "$BOOKWORM_ALIAS"; then need_bookworm=1; fi
if image_wanted "$BUSYBOX_ALIAS"; then need_busybox=1; fi
((need_bookworm || need_busybox)) || exit 0

# On-disk scratch space: debootstrap needs mknod/suid, which a tmpfs /tmp
# mounted nodev/nosuid would break.
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/lxd-driver-images.XXXXXX")
SMOKE=""
cleanup() {
  [[ -z $SMOKE ]] || lxc delete --force "$SMOKE" >/dev/null 2>&1 || true
  # A failed debootstrap can leave proc/sys mounted inside the target: unmount
  # first, and never let rm cross into another filesystem.
  findmnt -rn -o TARGET | grep -F "$WORK/" | sort -r | xargs -r umount -l 2>/dev/null || true
  rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT

ARCH=$(uname -m)
NOW=$(date +%s)

# write_meta DIR DESCRIPTION OS RELEASE: LXD image metadata with hostname/hosts
# templates, so every container gets its own name in /etc/hostname.
write_meta() {
  local dir=$1
  mkdir -p "$dir/templates"
  cat >"$dir/metadata.yaml" <<EOF
architecture: $ARCH
creation_date: $NOW
properties:
  description: $2
  os: $3
  release: $4
templates:
  /etc/hostname:
    when: [create, copy]
    template: hostname.tpl
  /etc/hosts:
    when: [create, copy]
    template: hosts.tpl
EOF
  printf '{{ container.name }}\n' >"$dir/templates/hostname.tpl"
  printf '127.0.0.1 localhost\n127.0.1.1 {{ container.name }}\n::1 localhost ip6-localhost ip6-loopback\n' \
    >"$dir/templates/hosts.tpl"
}

# import_image DIR ALIAS CMD...: pack DIR/meta + DIR/rootfs as a split image,
# import it, smoke-test it (launch, run CMD) and only then point ALIAS at it.
# Publishing the alias last means a concurrent user never sees a half-built or
# unbootable image, and a failed build leaves no alias behind so the next run
# retries.
import_image() {
  local dir=$1 alias=$2 fp old
  shift 2
  tar -C "$dir/meta" -cf "$dir/meta.tar" .
  # --numeric-owner: keep the rootfs's uids, don't map them via host names.
  tar --numeric-owner -C "$dir/rootfs" -czf "$dir/rootfs.tar.gz" .
  rm -rf --one-file-system "$dir/rootfs"
  # A split image's fingerprint is sha256(meta tarball || rootfs tarball).
  fp=$(cat "$dir/meta.tar" "$dir/rootfs.tar.gz" | sha256sum | cut -d' ' -f1)
  lxc image import "$dir/meta.tar" "$dir/rootfs.tar.gz" >/dev/null
  rm -rf --one-file-system "$dir"

  SMOKE=lxd-driver-smoke-$$
  local out
  if ! out=$(lxc launch --ephemeral "$fp" "$SMOKE" 2>&1) || ! out=$(lxc exec "$SMOKE" -- "$@" 2>&1); then
    lxc delete --force "$SMOKE" >/dev/null 2>&1 || true
    lxc image delete "$fp" >/dev/null 2>&1 || true
    die "smoke test of the new $alias image failed (image removed): $out"
  fi
  lxc delete --force "$SMOKE" >/dev/null
  SMOKE=""

  # No alias yet (a fresh host) is not an error.
  old=$(lxc image info "$alias" 2>/dev/null | awk '$1 == "Fingerprint:" {print $2}' || true)
  if [[ -z $old ]]; then
    lxc image alias create "$alias" "$fp"
  else
    # Retarget in place (PUT) so the alias never disappears for other users.
    lxc query -X PUT "/1.0/images/aliases/${alias//\//%2F}" -d "{\"target\": \"$fp\"}" >/dev/null
    [[ $old == "$fp" ]] || lxc image delete "$old"
  fi
}

build_bookworm() {
  local dir=$WORK/bookworm mirror
  mirror=$(debian_mirror "$SUITE")
  [[ -n $mirror ]] || die "no Debian '$SUITE main' entry in the apt sources; set LXD_DRIVER_DEBIAN_MIRROR"
  # debootstrap downloads with wget: reuse apt's proxy, if one is configured.
  if [[ -z ${http_proxy:-} ]]; then
    eval "$(apt-config shell http_proxy Acquire::http::Proxy https_proxy Acquire::https::Proxy)"
    export http_proxy=${http_proxy:-} https_proxy=${https_proxy:-}
  fi
  log "debootstrap $SUITE from $mirror (this takes a few minutes)"
  mkdir -p "$dir/rootfs"
  if ! debootstrap --variant=minbase --include=git,ca-certificates,systemd-sysv,procps \
    "$SUITE" "$dir/rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1; then
    tail -n 20 "$WORK/debootstrap.log" >&2
    die "debootstrap failed (see above)"
  fi
  local r=$dir/rootfs
  # Empty machine-id => systemd generates a fresh one per container.
  : >"$r/etc/machine-id"
  rm -f "$r/var/lib/dbus/machine-id" "$r/etc/hostname" "$r/etc/resolv.conf"
  # Package caches and indexes are useless offline and only bloat the image.
  rm -rf "$r"/var/cache/apt/archives/*.deb "$r"/var/cache/apt/*.bin "$r"/var/lib/apt/lists/*
  rm -rf "$r"/var/log/*.log "$r"/var/log/apt/* "$r"/tmp/* "$r"/var/tmp/*
  for bin in bash git; do
    [[ -x $r/usr/bin/$bin ]] || die "$bin missing from the $SUITE rootfs"
  done
  [[ -s $r/etc/ssl/certs/ca-certificates.crt ]] || die "ca-certificates bundle missing from the $SUITE rootfs"

  write_meta "$dir/meta" "Debian $SUITE minbase + systemd, git (lxd-driver tests)" debian "$SUITE"
  log "importing $BOOKWORM_ALIAS"
  import_image "$dir" "$BOOKWORM_ALIAS" bash -c 'git --version'
}

build_busybox() {
  local dir=$WORK/busybox bb
  bb=$(command -v busybox) || die "busybox not found (install busybox-static)"
  # A dynamically linked busybox would not run in a rootfs without libc.
  if ldd "$bb" >/dev/null 2>&1; then
    die "$bb is dynamically linked; install busybox-static"
  fi
  log "building $BUSYBOX_ALIAS from $bb"
  local r=$dir/rootfs
  mkdir -p "$r"/{bin,sbin,usr/bin,usr/sbin,etc,dev,proc,sys,run,root,tmp,var/tmp,var/log}
  chmod 1777 "$r/tmp" "$r/var/tmp"
  chmod 700 "$r/root"
  cp "$bb" "$r/bin/busybox"
  # Applet symlinks made on the host (what `busybox --install -s` would do
  # inside), so the image needs no first-boot step.
  local applet
  while read -r applet; do
    [[ -e $r/$applet ]] || ln -s /bin/busybox "$r/$applet"
  done < <("$bb" --list-full)
  [[ -L $r/bin/sh && -L $r/sbin/init ]] || die "busybox lacks sh/init applets"
  printf 'root:x:0:0:root:/root:/bin/sh\n' >"$r/etc/passwd"
  printf 'root:x:0:\n' >"$r/etc/group"
  printf 'root:*:0:0:99999:7:::\n' >"$r/etc/shadow"
  chmod 600 "$r/etc/shadow"
  # An explicit inittab: without one busybox init spawns shells on tty1-4,
  # which don't exist in a container and would respawn-loop.
  printf '::sysinit:/bin/hostname -F /etc/hostname\n::shutdown:/bin/sync\n' >"$r/etc/inittab"
  printf 'busybox\n' >"$r/etc/hostname"

  local version
  version=$("$bb" | sed -n '1s/^BusyBox \(v[^ ]*\).*/\1/p')
  write_meta "$dir/meta" "BusyBox ${version:-static} (no systemd, no bash; lxd-driver tests)" busybox "${version:-static}"
  log "importing $BUSYBOX_ALIAS"
  import_image "$dir" "$BUSYBOX_ALIAS" sh -c true
}

if ((need_busybox)); then build_busybox; fi
if ((need_bookworm)); then build_bookworm; fi

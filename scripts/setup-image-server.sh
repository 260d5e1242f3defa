#!/usr/bin/env bash
# A real image server on loopback for the image tests (no public image server
# is reachable from the test hosts):
#   Incus 6.0 (Debian bookworm-backports) serving public images over HTTPS on
#   127.0.0.1:8443, known to the lxc client as the remote `lxd-driver-images`:
#     test/busybox  the busybox test image with its own description, so its
#                   fingerprint differs from lxd-driver-test/busybox and the
#                   tests can delete it from LXD's store without harm
#     test/large    busybox plus incompressible filler (default 512MB), a
#                   download that lasts long enough to show progress
#
# Why Incus and not a second LXD daemon: Debian packages one LXD (5.0.2), and a
# second instance of it needs its own LXD_DIR, socket and port, and every lxd
# tool pointed at the right one. Incus installs beside LXD without touching it
# (own paths, own socket, own client), is an LXD-protocol server the LXD 5.0
# client and daemon pull from, and is the daemon the suite will also run on.
# Its images are public, so the remote needs no trust, only the pinned
# certificate (--accept-certificate).
#
# Each piece is created only when missing (like setup-lxd.sh, rather than one
# `incus admin init --preseed`, which would re-apply everything and cannot be
# told "only if absent"), so a re-run on a ready host is a few cheap queries.
# Run as root after scripts/setup-lxd.sh, which provides the busybox image.
#
# Environment:
#   LXD_DRIVER_IMAGE_SERVER_ADDR   listen address     (default: 127.0.0.1:8443)
#   LXD_DRIVER_IMAGE_REMOTE        lxc remote name    (default: lxd-driver-images)
#   LXD_DRIVER_INCUS_LOG           daemon log when we start it (default: /var/log/incus/incusd.log)
#   LXD_DRIVER_POOL, LXD_DRIVER_POOL_SIZE   Incus storage pool, as for LXD (default: lxd-driver, 20GiB)
#   LXD_DRIVER_LARGE_IMAGE_MB      filler size of test/large (default: 512)
#   LXD_DRIVER_DEBIAN_MIRROR       override the mirror taken from the apt config
set -Eeuo pipefail
# shellcheck source=scripts/setup-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/setup-common.sh"

ADDR=${LXD_DRIVER_IMAGE_SERVER_ADDR:-127.0.0.1:8443}
REMOTE=${LXD_DRIVER_IMAGE_REMOTE:-lxd-driver-images}
INCUS_LOG=${LXD_DRIVER_INCUS_LOG:-/var/log/incus/incusd.log}
POOL=${LXD_DRIVER_POOL:-lxd-driver}
POOL_SIZE=${LXD_DRIVER_POOL_SIZE:-20GiB}
LARGE_MB=${LXD_DRIVER_LARGE_IMAGE_MB:-512}
SOURCE_IMAGE=lxd-driver-test/busybox
BUSYBOX_ALIAS=test/busybox
LARGE_ALIAS=test/large
INCUSD=/usr/libexec/incus/incusd

log() { printf 'setup-image-server: %s\n' "$*"; }
die() {
  printf 'setup-image-server: ERROR: %s\n' "$*" >&2
  exit 1
}
trap 'die "command failed (exit $?) at line $LINENO: $BASH_COMMAND"' ERR

[[ $(id -u) -eq 0 ]] || die "must run as root (installs packages, starts incus)"

mkdir -p /run/lock
exec 9>/run/lock/lxd-driver-image-server.lock
flock 9

WORK="" apt_log=""
cleanup() {
  [[ -z $apt_log ]] || rm -f "$apt_log"
  [[ -z $WORK ]] || rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT

lxc query /1.0 >/dev/null 2>&1 || die "LXD is not reachable (run scripts/setup-lxd.sh first)"

# --- 1. packages -------------------------------------------------------------
# has_candidate PKG: apt can install PKG from the sources it knows.
has_candidate() {
  local candidate
  candidate=$(apt-cache policy "$1" 2>/dev/null | awk '$1 == "Candidate:" {print $2}')
  [[ -n $candidate && $candidate != "(none)" ]]
}

PACKAGES=(incus-base incus-client)
missing=()
for pkg in "${PACKAGES[@]}"; do
  if [[ $(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true) != installed ]]; then
    missing+=("$pkg")
  fi
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt_log=$(mktemp)
  apt-get update -q >"$apt_log" 2>&1 || {
    tail -n 30 "$apt_log" >&2
    die "apt-get update failed"
  }
  if ! has_candidate incus-base; then
    # Bookworm has Incus only in backports. Backports are pinned below normal
    # priority by their Release file, so adding the suite changes nothing else.
    # shellcheck source=/dev/null
    codename=$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:-}")
    [[ -n $codename ]] || die "cannot tell the Debian codename from /etc/os-release"
    mirror=$(debian_mirror "$codename")
    [[ -n $mirror ]] || die "no Debian '$codename main' entry in the apt sources; set LXD_DRIVER_DEBIAN_MIRROR"
    log "adding $codename-backports from $mirror to the apt sources"
    cat >/etc/apt/sources.list.d/lxd-driver-backports.sources <<EOF
# Added by lxd-driver's scripts/setup-image-server.sh for Incus.
Types: deb
URIs: $mirror
Suites: $codename-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    apt-get update -q >"$apt_log" 2>&1 || {
      tail -n 30 "$apt_log" >&2
      die "apt-get update with $codename-backports failed"
    }
    has_candidate incus-base || die "no incus-base package in $codename-backports"
  fi
  log "installing: ${missing[*]}"
  # The packages' own maintainer scripts try to start incus through systemd,
  # which is absent here; that only prints a notice.
  if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >"$apt_log" 2>&1; then
    tail -n 30 "$apt_log" >&2
    die "installing ${missing[*]} failed (apt output above)"
  fi
fi

# --- 2. daemon ---------------------------------------------------------------
if ! incus query /1.0 >/dev/null 2>&1; then
  if ! incus admin waitready --timeout 1 >/dev/null 2>&1; then
    log "starting incus daemon (log: $INCUS_LOG)"
    mkdir -p "$(dirname "$INCUS_LOG")"
    # Detached as setup-lxd.sh starts lxd: setsid -f with all std fds
    # redirected, our flock not inherited, cwd /. PATH as Debian's unit sets
    # it, so incusd finds its helpers.
    (cd / && PATH=/usr/libexec/incus:$PATH setsid -f "$INCUSD" --group root \
      </dev/null >>"$INCUS_LOG" 2>&1 9>&-)
  fi
  incus admin waitready --timeout 60 ||
    die "incus did not become ready within 60s; last log lines:
$(tail -n 20 "$INCUS_LOG" 2>/dev/null)"
fi

# --- 3. storage pool + default profile (for running the suite on Incus) ------
ensure_pool incus "$POOL" "$POOL_SIZE"
if ! root_pool=$(incus profile device get default root pool 2>/dev/null) || [[ -z $root_pool ]]; then
  log "adding root disk on $POOL to incus's default profile"
  incus profile device add default root disk path=/ pool="$POOL" >/dev/null
fi

# --- 4. HTTPS listener -------------------------------------------------------
if [[ $(incus config get core.https_address) != "$ADDR" ]]; then
  log "incus listens on https://$ADDR"
  incus config set core.https_address "$ADDR"
fi

# --- 5. images ---------------------------------------------------------------
# base_image DIR: LXD's busybox test image as DIR/meta (unpacked) + DIR/rootfs.tar.gz.
base_image() {
  local dir=$1 files meta=""
  mkdir -p "$dir/export" "$dir/meta"
  lxc image info "$SOURCE_IMAGE" >/dev/null 2>&1 ||
    die "LXD has no $SOURCE_IMAGE image (run scripts/setup-lxd.sh first)"
  lxc image export "$SOURCE_IMAGE" "$dir/export/" >/dev/null
  mapfile -t files < <(find "$dir/export" -type f)
  ((${#files[@]} == 2)) || die "$SOURCE_IMAGE is not a split image (${#files[@]} files exported)"
  local f
  for f in "${files[@]}"; do
    if tar -tf "$f" ./metadata.yaml >/dev/null 2>&1 || tar -tf "$f" metadata.yaml >/dev/null 2>&1; then
      meta=$f
    else
      mv "$f" "$dir/rootfs.tar.gz"
    fi
  done
  [[ -n $meta && -f $dir/rootfs.tar.gz ]] || die "no metadata tarball in the export of $SOURCE_IMAGE"
  tar -C "$dir/meta" -xf "$meta"
  rm -rf "$dir/export"
}

# set_description DIR TEXT: replaces the image description in DIR/meta.
set_description() {
  sed -i "s|^\(  description:\).*|\1 $2|" "$1/meta/metadata.yaml"
  grep -qF "description: $2" "$1/meta/metadata.yaml" || die "cannot set the description in $1"
}

# publish DIR ROOTFS ALIAS: imports DIR/meta + ROOTFS into incus as a public image.
publish() {
  tar -C "$1/meta" -cf "$1/meta.tar" .
  incus image import "$1/meta.tar" "$2" --public --alias "$3" >/dev/null
}

if ! incus image info "local:$BUSYBOX_ALIAS" >/dev/null 2>&1; then
  WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/lxd-driver-image-server.XXXXXX")
  log "publishing $BUSYBOX_ALIAS"
  base_image "$WORK/busybox"
  set_description "$WORK/busybox" "BusyBox test image served by the lxd-driver image server"
  publish "$WORK/busybox" "$WORK/busybox/rootfs.tar.gz" "$BUSYBOX_ALIAS"
  rm -rf "$WORK/busybox"
fi

if ! incus image info "local:$LARGE_ALIAS" >/dev/null 2>&1; then
  [[ -n $WORK ]] || WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/lxd-driver-image-server.XXXXXX")
  log "publishing $LARGE_ALIAS (${LARGE_MB}MB of random filler)"
  dir=$WORK/large
  base_image "$dir"
  set_description "$dir" "BusyBox with ${LARGE_MB}MB of filler (lxd-driver image server)"
  mkdir -p "$dir/rootfs"
  tar -C "$dir/rootfs" -xzf "$dir/rootfs.tar.gz"
  rm -f "$dir/rootfs.tar.gz"
  # Random, so that no compression makes the download short.
  head -c "${LARGE_MB}M" /dev/urandom >"$dir/rootfs/filler"
  tar --numeric-owner -C "$dir/rootfs" -cf "$dir/rootfs.tar" .
  rm -rf --one-file-system "$dir/rootfs"
  publish "$dir" "$dir/rootfs.tar" "$LARGE_ALIAS"
  rm -rf --one-file-system "$dir"
fi

# Served images must be public: untrusted clients see no other. (They can turn
# private behind our back: copying one of them into one of this server's own
# projects does that.)
for alias in "$BUSYBOX_ALIAS" "$LARGE_ALIAS"; do
  if [[ $(incus image show "local:$alias" | awk '$1 == "public:" {print $2}') != true ]]; then
    log "making $alias public again"
    incus image show "local:$alias" | sed 's/^public: false$/public: true/' | incus image edit "local:$alias"
  fi
done

# --- 6. the suite's test images, in Incus too ----------------------------------
# The e2e suite also runs with the incus client (LXD_DRIVER_TEST_CLI=incus) and
# needs the same images under the same aliases. Exported from LXD and imported
# unchanged, they keep their fingerprints. Private: they are test images, not
# part of what the image server serves.
for alias in lxd-driver-test/bookworm lxd-driver-test/busybox; do
  incus image info "local:$alias" >/dev/null 2>&1 && continue
  lxc image info "$alias" >/dev/null 2>&1 ||
    die "LXD has no $alias image (run scripts/setup-lxd.sh first)"
  [[ -n $WORK ]] || WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/lxd-driver-image-server.XXXXXX")
  log "copying $alias from LXD into incus"
  dir=$WORK/copy
  mkdir -p "$dir"
  lxc image export "$alias" "$dir/" >/dev/null
  mapfile -t files < <(find "$dir" -type f)
  meta="" rootfs=""
  for f in "${files[@]}"; do
    if tar -tf "$f" ./metadata.yaml >/dev/null 2>&1 || tar -tf "$f" metadata.yaml >/dev/null 2>&1; then
      meta=$f
    else
      rootfs=$f
    fi
  done
  [[ -n $meta ]] || die "no metadata in the export of $alias"
  # A unified image is one tarball; a split one is metadata + rootfs.
  incus image import "$meta" ${rootfs:+"$rootfs"} --alias "$alias" >/dev/null
  rm -rf --one-file-system "$dir"
done

# --- 7. the remote, in both clients ------------------------------------------
# add_remote CLI PROTOCOL: (re)adds $REMOTE to CLI's config unless it already
# serves test/busybox. A stale entry (say, incus reinstalled with a new
# certificate) is replaced.
add_remote() {
  local cli=$1 protocol=$2
  if "$cli" image info "$REMOTE:$BUSYBOX_ALIAS" >/dev/null 2>&1; then return; fi
  if "$cli" remote list --format json | grep -qF "\"$REMOTE\":"; then
    log "replacing the $cli remote $REMOTE"
    "$cli" remote remove "$REMOTE"
  else
    log "adding the $cli remote $REMOTE (https://$ADDR)"
  fi
  "$cli" remote add "$REMOTE" "https://$ADDR" --protocol "$protocol" --public --accept-certificate >/dev/null
  "$cli" image info "$REMOTE:$BUSYBOX_ALIAS" >/dev/null ||
    die "the $cli remote $REMOTE does not serve $BUSYBOX_ALIAS"
}
add_remote lxc lxd
add_remote incus incus

# --- 8. summary ----------------------------------------------------------------
pool_driver=$(incus storage show "$POOL" | awk '$1 == "driver:" {print $2}')
log "ready: incus $(incus version | awk '/^Server version:/ {print $3}') on https://$ADDR, remote $REMOTE, pool $POOL ($pool_driver)"
incus image list local: -f csv -c lfs | awk -F, '$1 ~ /^test\// {print "setup-image-server: image '"$REMOTE"':" $1 " (" $2 ", " $3 ")"}'

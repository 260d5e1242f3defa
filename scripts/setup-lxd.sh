#!/usr/bin/env bash
# Prepare a Debian host to run the LXD driver's integration tests:
#   packages -> running LXD daemon -> storage pool + default profile -> test images.
# Idempotent: every step checks before acting, so a re-run on a ready host is a
# handful of cheap `lxc` queries.
#
# Environment:
#   LXD_DRIVER_POOL       storage pool name          (default: lxd-driver)
#   LXD_DRIVER_POOL_SIZE  size of the btrfs loop file (default: 20GiB)
#   LXD_DRIVER_LXD_LOG    daemon log when we start it (default: /var/log/lxd/lxd.log)
set -Eeuo pipefail
# shellcheck source=scripts/setup-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/setup-common.sh"

POOL=${LXD_DRIVER_POOL:-lxd-driver}
POOL_SIZE=${LXD_DRIVER_POOL_SIZE:-20GiB}
LXD_LOG=${LXD_DRIVER_LXD_LOG:-/var/log/lxd/lxd.log}
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

log() { printf 'setup-lxd: %s\n' "$*"; }
die() {
  printf 'setup-lxd: ERROR: %s\n' "$*" >&2
  exit 1
}
trap 'die "command failed (exit $?) at line $LINENO: $BASH_COMMAND"' ERR

[[ $(id -u) -eq 0 ]] || die "must run as root (installs packages, starts lxd)"

# Serialise concurrent runs (two test runners racing to start the daemon or to
# create the pool would otherwise trip over each other).
mkdir -p /run/lock
exec 9>/run/lock/lxd-driver-setup.lock
flock 9

# --- 1. packages -------------------------------------------------------------
# lxd-client ships `lxc` separately in Debian; busybox-static provides the
# libc-free binary for the busybox test image; debian-archive-keyring lets
# debootstrap verify the archive.
PACKAGES=(lxd lxd-client debootstrap btrfs-progs busybox-static debian-archive-keyring ca-certificates tar gzip)
missing=()
for pkg in "${PACKAGES[@]}"; do
  if [[ $(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true) != installed ]]; then
    missing+=("$pkg")
  fi
done
if ((${#missing[@]})); then
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # apt's chatter goes to a temp log that is shown only if apt fails.
  apt_log=$(mktemp)
  if ! { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; } >"$apt_log" 2>&1; then
    tail -n 30 "$apt_log" >&2
    rm -f "$apt_log"
    die "installing ${missing[*]} failed (apt output above)"
  fi
  rm -f "$apt_log"
fi

# --- 2. daemon ---------------------------------------------------------------
# No systemd here, so nothing socket-activates lxd: start it ourselves.
if ! lxc query /1.0 >/dev/null 2>&1; then
  if ! lxd waitready --timeout 1 >/dev/null 2>&1; then
    log "starting lxd daemon (log: $LXD_LOG)"
    mkdir -p "$(dirname "$LXD_LOG")"
    # setsid -f + redirecting all three std fds fully detaches the daemon, so a
    # caller capturing our output (CI, $(...)) doesn't hang on inherited pipes.
    # 9>&- : don't let the daemon inherit (and hold forever) our flock.
    # cd /: don't pin the caller's working directory for the daemon's lifetime.
    (cd / && setsid -f lxd --group root </dev/null >>"$LXD_LOG" 2>&1 9>&-)
  fi
  lxd waitready --timeout 60 ||
    die "lxd did not become ready within 60s; last log lines:
$(tail -n 20 "$LXD_LOG" 2>/dev/null)"
fi

# --- 3. storage pool + default profile ---------------------------------------
# We use `lxc storage create` / `lxc profile device add` rather than a full
# `lxd init --preseed` so that each piece is created only when missing and an
# existing default profile is never overwritten. (`lxd init --auto` is not an
# option: it insists on creating a bridge, which fails here.)
ensure_pool lxc "$POOL" "$POOL_SIZE"

if root_pool=$(lxc profile device get default root pool 2>/dev/null) && [[ -n $root_pool ]]; then
  [[ $root_pool == "$POOL" ]] ||
    log "note: default profile root disk is on pool '$root_pool' (left unchanged)"
else
  log "adding root disk on $POOL to default profile"
  lxc profile device add default root disk path=/ pool="$POOL" >/dev/null
  root_pool=$POOL
fi

# --- 4. test images ----------------------------------------------------------
"$SCRIPT_DIR/build-test-images.sh" || die "building test images failed"

# --- 5. summary ---------------------------------------------------------------
driver=$(lxc storage show "$POOL" | awk '$1 == "driver:" {print $2}')
log "ready: lxd $(lxd --version), pool $POOL ($driver), default profile root on pool $root_pool"
lxc image list -f csv -c lfs | awk -F, '$1 ~ /^lxd-driver-test\// {print "setup-lxd: image " $1 " (" $2 ", " $3 ")"}'

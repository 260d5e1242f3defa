#!/usr/bin/env bash
# LXD and Incus as remotes over HTTPS, for the end-to-end test of `[lxd] remote`
# and `[lxd] project` (tests/e2e/remote_test.ts), which runs with either client:
#   - LXD listens on 127.0.0.1:8444 (8443 is Incus's, see setup-image-server.sh)
#   - Incus listens on 127.0.0.1:8443: the listener setup-image-server.sh gives
#     it for the image server, reused as it is
#   - each client of this user (root), lxc and incus, knows its own daemon as
#     the remote `lxd-driver-https` (each client has its own config), trusted
#     with the client's certificate (added with a trust token, which also pins
#     the server's certificate)
#   - in each daemon a project `lxd-driver-test` that shares the default
#     project's images and profiles (features.images=false,
#     features.profiles=false)
# Idempotent: every step checks before acting, so a re-run on a ready host is
# a few cheap `lxc`/`incus` queries. Run as root after scripts/setup-lxd.sh and
# scripts/setup-image-server.sh.
#
# Environment:
#   LXD_DRIVER_HTTPS_ADDR          LXD's listen address   (default: 127.0.0.1:8444)
#   LXD_DRIVER_IMAGE_SERVER_ADDR   Incus's listen address (default: 127.0.0.1:8443),
#                                  as for setup-image-server.sh, which sets it
#   LXD_DRIVER_HTTPS_REMOTE        remote name, in both clients (default: lxd-driver-https)
#   LXD_DRIVER_TEST_PROJECT        project, in both daemons     (default: lxd-driver-test)
set -Eeuo pipefail

LXD_ADDR=${LXD_DRIVER_HTTPS_ADDR:-127.0.0.1:8444}
INCUS_ADDR=${LXD_DRIVER_IMAGE_SERVER_ADDR:-127.0.0.1:8443}
REMOTE=${LXD_DRIVER_HTTPS_REMOTE:-lxd-driver-https}
PROJECT=${LXD_DRIVER_TEST_PROJECT:-lxd-driver-test}
# The trust entry (and its tokens) this script makes in each daemon, by name.
TRUST_NAME=lxd-driver-test

log() { printf 'setup-remote: %s\n' "$*"; }
die() {
  printf 'setup-remote: ERROR: %s\n' "$*" >&2
  exit 1
}
trap 'die "command failed (exit $?) at line $LINENO: $BASH_COMMAND"' ERR

[[ $(id -u) -eq 0 ]] || die "must run as root (configures lxd and incus)"

mkdir -p /run/lock
exec 9>/run/lock/lxd-driver-remote.lock
flock 9

lxc query /1.0 >/dev/null 2>&1 || die "LXD is not reachable (run scripts/setup-lxd.sh first)"
incus query /1.0 >/dev/null 2>&1 ||
  die "Incus is not reachable (run scripts/setup-image-server.sh first)"

# json_string KEY: the first string value of KEY in the JSON on stdin (`lxc
# query` pretty-prints one key per line; no jq or python on a bare Debian).
json_string() {
  grep -m1 -oE "\"$1\": \"[^\"]*\"" | sed -E 's/.*: "(.*)"$/\1/' || true
}

# --- 1. HTTPS listeners --------------------------------------------------------
if [[ $(lxc config get core.https_address) != "$LXD_ADDR" ]]; then
  log "lxd listens on https://$LXD_ADDR"
  lxc config set core.https_address "$LXD_ADDR"
fi
# Incus's listener is the image server's: checked, never changed here.
incus_listens=$(incus config get core.https_address)
[[ $incus_listens == "$INCUS_ADDR" ]] ||
  die "incus listens on '$incus_listens', not $INCUS_ADDR (run scripts/setup-image-server.sh first)"

# --- 2. the remotes ------------------------------------------------------------
# remote_ok CLI CERT: CLI's remote answers over HTTPS as the daemon whose
# certificate fingerprint is CERT, and trusts us.
remote_ok() {
  local answer
  answer=$("$1" query "$REMOTE:/1.0" 2>/dev/null) || return 1
  [[ $(json_string auth <<<"$answer") == trusted &&
    $(json_string certificate_fingerprint <<<"$answer") == "$2" ]]
}

# trust_token CLI: a new trust token for $TRUST_NAME from CLI's daemon. Without
# a certificate `config trust add` prints "Client NAME certificate add token:"
# then the token (LXD 5.0 and Incus 6.0 alike); they differ in how the name is
# given. The token carries the server's certificate fingerprint, so adding the
# remote with it needs no --accept-certificate.
trust_token() {
  if [[ $1 == lxc ]]; then
    lxc config trust add --name "$TRUST_NAME" | tail -n 1
  else
    incus config trust add "$TRUST_NAME" | tail -n 1
  fi
}

# ensure_remote CLI ADDR: CLI knows its own daemon, listening on ADDR, as the
# trusted remote $REMOTE.
ensure_remote() {
  local cli=$1 addr=$2 cert token err name
  cert=$(json_string certificate_fingerprint <<<"$("$cli" query /1.0)")
  [[ -n $cert ]] || die "$cli's daemon reports no certificate fingerprint"
  remote_ok "$cli" "$cert" && return
  if "$cli" remote list --format csv | grep -q "^$REMOTE,"; then
    log "replacing the $cli remote $REMOTE"
    "$cli" remote remove "$REMOTE"
  else
    log "adding the $cli remote $REMOTE (https://$addr)"
  fi
  # Tokens left pending by an earlier, interrupted run.
  while read -r name; do
    [[ $name == "$TRUST_NAME" ]] && "$cli" config trust revoke-token "$name" >/dev/null
  done < <("$cli" config trust list-tokens --format csv | cut -d, -f1)
  token=$(trust_token "$cli")
  [[ $token =~ ^[A-Za-z0-9+/=_-]{40,}$ ]] || die "no trust token from $cli config trust add: $token"
  if ! err=$("$cli" remote add "$REMOTE" "$token" 2>&1 </dev/null); then
    "$cli" config trust revoke-token "$TRUST_NAME" >/dev/null 2>&1 || true
    # "Client is already trusted" (an earlier run whose remote entry was removed
    # by hand): no token is needed, only the server's certificate, which is
    # checked against the daemon's own right below.
    [[ $err == *"already trusted"* ]] || die "$cli remote add $REMOTE failed: $err"
    "$cli" remote remove "$REMOTE" >/dev/null 2>&1 || true
    "$cli" remote add "$REMOTE" "https://$addr" --accept-certificate </dev/null >/dev/null
  fi
  remote_ok "$cli" "$cert" || die "the $cli remote $REMOTE is not its daemon or does not trust this client:
$("$cli" query "$REMOTE:/1.0" 2>&1 | head -n 5)"
}

ensure_remote lxc "$LXD_ADDR"
ensure_remote incus "$INCUS_ADDR"

# --- 3. the projects -----------------------------------------------------------
# ensure_project CLI: the project in CLI's daemon, sharing the default project's
# images and profiles, so the test images and the default profile's root disk
# work in it unchanged.
ensure_project() {
  local cli=$1 key
  if ! "$cli" project show "$PROJECT" >/dev/null 2>&1; then
    log "creating the $cli project $PROJECT"
    "$cli" project create "$PROJECT" -c features.images=false -c features.profiles=false >/dev/null
  fi
  for key in features.images features.profiles; do
    if [[ $("$cli" project get "$PROJECT" "$key") != false ]]; then
      log "$cli project $PROJECT: $key=false"
      "$cli" project set "$PROJECT" "$key" false ||
        die "cannot set $key=false on the $cli project $PROJECT (it must be empty for that)"
    fi
  done
}

ensure_project lxc
ensure_project incus

# --- 4. summary ----------------------------------------------------------------
log "ready: lxd on https://$LXD_ADDR and incus on https://$INCUS_ADDR, each the remote $REMOTE of its client (trusted), project $PROJECT in both"

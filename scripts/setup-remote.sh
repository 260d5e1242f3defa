#!/usr/bin/env bash
# LXD as a remote over HTTPS, for the end-to-end test of `[lxd] remote` and
# `[lxd] project` (tests/e2e/remote_test.ts):
#   - LXD listens on 127.0.0.1:8444 (8443 is Incus's, see setup-image-server.sh)
#   - the lxc client of this user (root) knows it as the remote
#     `lxd-driver-https`, trusted with the client's certificate (added with a
#     trust token, which also pins the server's certificate)
#   - an LXD project `lxd-driver-test` that shares the default project's images
#     and profiles (features.images=false, features.profiles=false)
# Idempotent: every step checks before acting, so a re-run on a ready host is
# a few cheap `lxc` queries. Run as root after scripts/setup-lxd.sh.
#
# Environment:
#   LXD_DRIVER_HTTPS_ADDR     LXD's listen address (default: 127.0.0.1:8444)
#   LXD_DRIVER_HTTPS_REMOTE   lxc remote name      (default: lxd-driver-https)
#   LXD_DRIVER_TEST_PROJECT   LXD project          (default: lxd-driver-test)
set -Eeuo pipefail

ADDR=${LXD_DRIVER_HTTPS_ADDR:-127.0.0.1:8444}
REMOTE=${LXD_DRIVER_HTTPS_REMOTE:-lxd-driver-https}
PROJECT=${LXD_DRIVER_TEST_PROJECT:-lxd-driver-test}
# The trust entry (and its tokens) this script makes, by name.
TRUST_NAME=lxd-driver-test

log() { printf 'setup-remote: %s\n' "$*"; }
die() {
  printf 'setup-remote: ERROR: %s\n' "$*" >&2
  exit 1
}
trap 'die "command failed (exit $?) at line $LINENO: $BASH_COMMAND"' ERR

[[ $(id -u) -eq 0 ]] || die "must run as root (configures lxd)"

mkdir -p /run/lock
exec 9>/run/lock/lxd-driver-remote.lock
flock 9

lxc query /1.0 >/dev/null 2>&1 || die "LXD is not reachable (run scripts/setup-lxd.sh first)"

# json_string KEY: the first string value of KEY in the JSON on stdin (`lxc
# query` pretty-prints one key per line; no jq or python on a bare Debian).
json_string() {
  grep -m1 -oE "\"$1\": \"[^\"]*\"" | sed -E 's/.*: "(.*)"$/\1/' || true
}

# --- 1. HTTPS listener -------------------------------------------------------
if [[ $(lxc config get core.https_address) != "$ADDR" ]]; then
  log "lxd listens on https://$ADDR"
  lxc config set core.https_address "$ADDR"
fi
LOCAL_CERT=$(json_string certificate_fingerprint <<<"$(lxc query /1.0)")
[[ -n $LOCAL_CERT ]] || die "LXD reports no certificate fingerprint"

# --- 2. the remote -------------------------------------------------------------
# remote_ok: the remote answers over HTTPS as this very LXD, and trusts us.
remote_ok() {
  local answer
  answer=$(lxc query "$REMOTE:/1.0" 2>/dev/null) || return 1
  [[ $(json_string auth <<<"$answer") == trusted &&
    $(json_string certificate_fingerprint <<<"$answer") == "$LOCAL_CERT" ]]
}

if ! remote_ok; then
  if lxc remote list --format csv | grep -q "^$REMOTE,"; then
    log "replacing the lxc remote $REMOTE"
    lxc remote remove "$REMOTE"
  else
    log "adding the lxc remote $REMOTE (https://$ADDR)"
  fi
  # Tokens left pending by an earlier, interrupted run.
  while read -r name; do
    [[ $name == "$TRUST_NAME" ]] && lxc config trust revoke-token "$name" >/dev/null
  done < <(lxc config trust list-tokens --format csv | cut -d, -f1)
  # `lxc config trust add` without a certificate prints a token (LXD 5.0:
  # "Client NAME certificate add token:" then the token). The token carries the
  # server's certificate fingerprint, so adding the remote with it needs no
  # --accept-certificate.
  token=$(lxc config trust add --name "$TRUST_NAME" | tail -n 1)
  [[ $token =~ ^[A-Za-z0-9+/=_-]{40,}$ ]] || die "no trust token from lxc config trust add: $token"
  if ! err=$(lxc remote add "$REMOTE" "$token" 2>&1 </dev/null); then
    lxc config trust revoke-token "$TRUST_NAME" >/dev/null 2>&1 || true
    # The client's certificate is trusted already (an earlier run whose remote
    # entry was removed by hand): no token is needed, only the server's
    # certificate, which is checked against LXD's own right below.
    [[ $err == *"already trusted"* ]] || die "lxc remote add $REMOTE failed: $err"
    lxc remote remove "$REMOTE" >/dev/null 2>&1 || true
    lxc remote add "$REMOTE" "https://$ADDR" --accept-certificate </dev/null >/dev/null
  fi
  remote_ok || die "the lxc remote $REMOTE is not this LXD or does not trust this client:
$(lxc query "$REMOTE:/1.0" 2>&1 | head -n 5)"
fi

# --- 3. the project ------------------------------------------------------------
# Sharing the default project's images and profiles: the test images and the
# default profile's root disk work in it unchanged.
if ! lxc project show "$PROJECT" >/dev/null 2>&1; then
  log "creating project $PROJECT"
  lxc project create "$PROJECT" -c features.images=false -c features.profiles=false >/dev/null
fi
for key in features.images features.profiles; do
  if [[ $(lxc project get "$PROJECT" "$key") != false ]]; then
    log "project $PROJECT: $key=false"
    lxc project set "$PROJECT" "$key" false ||
      die "cannot set $key=false on project $PROJECT (it must be empty for that)"
  fi
done

# --- 4. summary ----------------------------------------------------------------
log "ready: lxd on https://$ADDR as the lxc remote $REMOTE (trusted), project $PROJECT"

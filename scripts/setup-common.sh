# shellcheck shell=bash
# Sourced by the set-up scripts, which define log and die.

# debian_mirror SUITE prints the Debian archive URI apt uses for SUITE main, or
# nothing. Asking apt (indextargets) covers both
# deb822 *.sources and one-line sources.list; LXD_DRIVER_DEBIAN_MIRROR overrides.
debian_mirror() {
  if [[ -n ${LXD_DRIVER_DEBIAN_MIRROR:-} ]]; then
    printf '%s\n' "$LXD_DRIVER_DEBIAN_MIRROR"
    return
  fi
  local uri uris
  # Collected first (no early-exit pipe) so SIGPIPE can't trip pipefail.
  # $(...) below are apt format fields, not shell expansions.
  # shellcheck disable=SC2016
  mapfile -t uris < <(
    {
      # Suite as written in the sources ("bookworm") ...
      apt-get indextargets --no-release-info --format '$(TARGET_OF) $(COMPONENT) $(RELEASE) $(REPO_URI)'
      # ... or, for sources that say e.g. "oldstable", by codename (needs the
      # downloaded Release files, hence only second choice).
      apt-get indextargets --format '$(TARGET_OF) $(COMPONENT) $(CODENAME) $(REPO_URI)'
    } 2>/dev/null | awk -v s="$1" '$1 == "deb" && $2 == "main" && $3 == s {print $4}'
  )
  for uri in "${uris[@]}"; do
    # Cloud images use apt's mirror+file: method, which debootstrap can't.
    if [[ $uri == mirror+file:* ]]; then
      uri=${uri#mirror+file:}
      uri=$(grep -m1 -Eo '^(https?|file):[^[:space:]]+' "${uri%/}" 2>/dev/null) || continue
    fi
    if [[ $uri =~ ^(https?|file):// ]]; then
      printf '%s\n' "$uri"
      return
    fi
  done
}

# ensure_pool CLI POOL SIZE: a storage pool named POOL for CLI (lxc or incus):
# btrfs on a loop file of SIZE when the kernel has btrfs, since containers
# launch from a copy-on-write snapshot of the image (several times faster than
# unpacking it as dir does); else dir.
ensure_pool() {
  local cli=$1 pool=$2 size=$3 err
  "$cli" storage show "$pool" >/dev/null 2>&1 && return
  if grep -qw btrfs /proc/filesystems || modprobe btrfs 2>/dev/null; then
    log "creating $cli storage pool $pool (btrfs loop, $size)"
    if ! err=$("$cli" storage create "$pool" btrfs size="$size" 2>&1); then
      log "btrfs pool failed ($err); falling back to dir"
      "$cli" storage delete "$pool" >/dev/null 2>&1 || true
    fi
  fi
  if ! "$cli" storage show "$pool" >/dev/null 2>&1; then
    log "creating $cli storage pool $pool (dir)"
    "$cli" storage create "$pool" dir >/dev/null || die "cannot create $cli storage pool $pool"
  fi
}

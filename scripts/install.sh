#!/usr/bin/env bash
# Installs this machine's binary from dist/ (made by `make build`), an example
# settings file when there is none, and prints the gitlab-runner configuration.
# Usage: scripts/install.sh
#   PREFIX    where the binary goes (default: /opt/lxd-driver)
#   DESTDIR   stages the whole install under this root (for packaging); the
#             printed paths leave it out, as they are where the files end up
#   DIST_DIR  where the built binaries are (default: dist/)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dist=${DIST_DIR:-$root/dist}
prefix=${PREFIX:-/opt/lxd-driver}
destdir=${DESTDIR:-}
[[ $prefix == /* ]] || { echo "install: PREFIX must be an absolute path, not '$prefix'" >&2; exit 1; }
case $(uname -m) in
  x86_64 | amd64) host=x86_64-unknown-linux-gnu ;;
  aarch64 | arm64) host=aarch64-unknown-linux-gnu ;;
  *) host="" ;;
esac

binary=""
for candidate in "$dist/lxd-driver" ${host:+"$dist/lxd-driver-$host"}; do
  # -f follows the dist/lxd-driver link, so a link left by a failed build does not count.
  if [[ -f $candidate && -x $candidate ]]; then
    binary=$candidate
    break
  fi
done
if [[ -z $binary ]]; then
  echo "install: no lxd-driver binary for this machine ($(uname -m)) in ${dist#"$root/"}/;" \
    "run make build first" >&2
  exit 1
fi

target="$prefix/lxd-driver"
install -D -m 0755 "$binary" "$destdir$target"
echo "install: $destdir$target (from ${binary#"$root/"})" >&2

# The settings file is the administrator's: written only when there is none.
settings=/etc/lxd-driver/config.toml
install -d -m 0755 "$destdir/etc/lxd-driver"
if [[ -e $destdir$settings ]]; then
  echo "install: $destdir$settings exists; left as it is" >&2
else
  tmp=$(mktemp)
  trap 'rm -f "$tmp"' EXIT
  cat >"$tmp" <<'EOF'
# lxd-driver settings. Every key is optional: each is shown commented out
# with its default, which applies while it stays commented out. Unknown
# sections and keys are errors. Another file can be used with --config FILE
# or $LXD_DRIVER_CONFIG.

[image]
# Image used when a job names none (the job's `image:`).
# default = "images:debian/12"
# Glob patterns (`*` matches anything) that a job's `image:` must match to be
# used, e.g. ["images:debian/*", "images:ubuntu/*"]; the default image is
# always allowed, so the empty default lets jobs have only that one.
# allowed = []

[instance]
# LXD profiles applied to each job's container, in order; [] for none.
# profiles = ["default"]
# Storage pool for the container's root disk; "": the profiles' root disk pool.
# storage_pool = ""
# How long prepare waits for the container to be ready ("90s", "5m", or seconds).
# ready_timeout = "120s"
# Launch containers as ephemeral (LXD deletes them when they stop).
# ephemeral = false

[job]
# Shell that runs the job's scripts inside the container: "bash", "sh" or "pwsh".
# shell = "bash"
# Absolute paths inside the container for the builds and the cache.
# builds_dir = "/builds"
# cache_dir = "/cache"

[lxd]
# Command line client: "lxc" (LXD) or "incus" (Incus).
# cli = "lxc"

[log]
# Debug messages from the driver (also turned on by LXD_DRIVER_DEBUG=1).
# debug = false
EOF
  install -m 0644 "$tmp" "$destdir$settings"
  echo "install: $destdir$settings (an example; every key commented out)" >&2
fi

cat <<EOF

Add to the runner's section in gitlab-runner's config.toml
(e.g. /etc/gitlab-runner/config.toml):

  executor = "custom"
  [runners.custom]
    config_exec = "$target"
    config_args = ["config"]
    prepare_exec = "$target"
    prepare_args = ["prepare"]
    run_exec = "$target"
    run_args = ["run"]
    cleanup_exec = "$target"
    cleanup_args = ["cleanup"]
EOF

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
  install -m 0644 "$root/scripts/config.example.toml" "$destdir$settings"
  echo "install: $destdir$settings (an example; every key commented out)" >&2
fi

cat <<EOF

Add to the runner's section in gitlab-runner's config.toml
(e.g. /etc/gitlab-runner/config.toml), or run "$target runner-config":

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

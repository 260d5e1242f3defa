#!/usr/bin/env bash
# Prints the path of a deno binary, installing Deno from the npm registry
# into .tools/ when none is on PATH. The native binary is used directly:
# the npm package's Node wrapper would add Node's start-up to every call.
set -euo pipefail

DENO_VERSION=2.9.6
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

if command -v deno >/dev/null 2>&1; then
  command -v deno
  exit 0
fi
bin="$root/.tools/bin/deno"
if [[ ! -x $bin ]]; then
  command -v npm >/dev/null 2>&1 || {
    echo "ensure-deno: neither deno nor npm is installed; install Node.js (npm) or Deno first" >&2
    exit 1
  }
  echo "ensure-deno: installing deno@$DENO_VERSION from the npm registry into .tools/" >&2
  npm install --silent --no-audit --no-fund --prefix "$root/.tools/npm" "deno@$DENO_VERSION" >&2
  native=$(find "$root/.tools/npm/node_modules" -path '*deno*' -name deno -type f -perm -u+x | head -n 1)
  [[ -n $native ]] || { echo "ensure-deno: the deno package brought no native binary" >&2; exit 1; }
  mkdir -p "$root/.tools/bin"
  ln -sf "../${native#"$root/.tools/"}" "$bin"
fi
"$bin" --version >/dev/null
echo "$bin"

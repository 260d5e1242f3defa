#!/usr/bin/env bash
# Compiles the driver into one self-contained binary per target in dist/,
# checks that this machine's binary runs and writes dist/SHA256SUMS.
# Usage: scripts/build.sh DENO
#   TARGETS   targets to build (default: x86_64 and aarch64 Linux)
#   DIST_DIR  output directory (default: dist/)
#
# deno compile joins the program to denort, Deno's runtime without the CLI,
# which it downloads from Deno's release host unless DENORT_BIN names a local
# copy. Where that host is out of reach, give each target its denort:
#   DENORT_BIN_<target with - as _>  e.g. DENORT_BIN_aarch64_unknown_linux_gnu
#   DENORT_BIN                       for this machine's target only
set -euo pipefail

deno=${1:?usage: scripts/build.sh DENO}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dist=$(realpath -m "${DIST_DIR:-$root/dist}")
cd "$root"
export DENO_NO_UPDATE_CHECK=1

read -ra targets <<<"${TARGETS:-x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu}"
((${#targets[@]} > 0)) || { echo "build: TARGETS is empty" >&2; exit 1; }
deno_version=$("$deno" --version | awk 'NR == 1 { print $2 }')
case $(uname -m) in
  x86_64 | amd64) host=x86_64-unknown-linux-gnu ;;
  aarch64 | arm64) host=aarch64-unknown-linux-gnu ;;
  *) host="" ;;
esac

mkdir -p "$dist"
# Checksums describe one build: a failed one must not leave the last one's.
rm -f "$dist/SHA256SUMS"
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# How to give deno compile a denort, for the failure messages.
how_to_provide() { # TARGET VARIABLE [ALTERNATIVE]
  echo "build: to build without downloading, unpack denort from denort-$1.zip of the Deno" \
    "v$deno_version release and set $2=/path/to/denort${3:+ (or $3)}; it must be Deno" \
    "$deno_version's denort for $1: the full deno binary will not do" >&2
}

failed=()
built=()
for target in "${targets[@]}"; do
  out="$dist/lxd-driver-$target"
  per_target=DENORT_BIN_${target//-/_}
  # DENORT_BIN is a runtime for this machine's architecture: never hand it to
  # another target, whose binary would then not run where it is installed.
  if [[ -n ${!per_target:-} ]]; then
    source_var=$per_target denort=${!per_target}
  elif [[ $target == "$host" && -n ${DENORT_BIN:-} ]]; then
    source_var=DENORT_BIN denort=$DENORT_BIN
  else
    source_var="" denort=""
  fi

  echo "build: $target -> ${out#"$root/"}" >&2
  # Checked here rather than left to deno so that a wrong path fails before
  # the type check, with the same message whatever deno's wording.
  if [[ -n $denort && ! (-f $denort && -r $denort) ]]; then
    echo "build: cannot compile for $target: $source_var=$denort is not a readable file" >&2
    how_to_provide "$target" "$source_var"
    failed+=("$target")
    continue
  fi
  # -P=driver: the permission set in deno.json, the same one the tests run with.
  # The dynamic imports in mod.ts are string literals, so compile includes them.
  if [[ -n $denort ]]; then with_denort=(env "DENORT_BIN=$denort"); else with_denort=(env -u DENORT_BIN); fi
  if "${with_denort[@]}" "$deno" compile -q -P=driver --target "$target" --output "$out" mod.ts \
    2>"$log"; then
    cat "$log" >&2
    built+=("$target")
    continue
  fi
  cat "$log" >&2
  failed+=("$target")
  if ! grep -qE 'denort|base binary' "$log"; then
    echo "build: cannot compile for $target (see deno's error above)" >&2
  elif [[ -n $denort ]]; then
    echo "build: cannot compile for $target: deno compile could not use the denort at" \
      "$source_var=$denort (see deno's error above)" >&2
    how_to_provide "$target" "$source_var"
  else
    echo "build: cannot compile for $target: denort, the Deno runtime that deno compile" \
      "joins to the program, could not be downloaded (see deno's error above)" >&2
    if [[ $target == "$host" ]]; then
      how_to_provide "$target" DENORT_BIN "$per_target"
    else
      [[ -z ${DENORT_BIN:-} ]] ||
        echo "build: (DENORT_BIN is only used for this machine's target, ${host:-none})" >&2
      how_to_provide "$target" "$per_target"
    fi
  fi
done
if ((${#failed[@]} > 0)); then
  echo "build: failed for ${failed[*]}" >&2
  exit 1
fi

# A binary joined to the wrong runtime (e.g. the full deno) compiles fine but
# does not run the driver: run this machine's before calling the build good.
if [[ -n $host && " ${built[*]} " == *" $host "* ]]; then
  binary="$dist/lxd-driver-$host"
  if ! version=$(timeout 60 "$binary" version 2>"$log") || [[ $version != "lxd-driver "* ]]; then
    cat "$log" >&2
    # Removed so that make install cannot ship it.
    rm -f "$binary"
    echo "build: ${binary#"$root/"} is not a working lxd-driver ('version' printed" \
      "'${version:-}'), so it was removed; is the denort for $host Deno $deno_version's" \
      "denort and not the full deno binary?" >&2
    exit 1
  fi
  echo "build: ${binary#"$root/"} version: $version" >&2
  # What make install takes.
  ln -sfn "lxd-driver-$host" "$dist/lxd-driver"
fi

(cd "$dist" && sha256sum "${built[@]/#/lxd-driver-}" >SHA256SUMS)
echo "build: done; checksums in ${dist#"$root/"}/SHA256SUMS" >&2

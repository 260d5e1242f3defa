#!/usr/bin/env bash
# Runs every test and closes with one "N passed, N failed" line.
# Usage: scripts/test.sh DENO [deno test args...]
set -uo pipefail

deno=${1:?usage: scripts/test.sh DENO}
shift
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export DENO_NO_UPDATE_CHECK=1

log=$(mktemp)
trap 'rm -f "$log"' EXIT
"$deno" test -A --no-prompt "$@" tests/ 2>&1 | tee "$log"
status=${PIPESTATUS[0]}

# deno's summary: "ok | 12 passed | 0 failed (3s)" (possibly with colour codes).
summary=$(sed -e 's/\x1b\[[0-9;]*m//g' "$log" | grep -E '^(ok|FAILED) \| [0-9]+ passed' | tail -n 1)
passed=$(grep -oE '[0-9]+ passed' <<<"$summary" | grep -oE '[0-9]+' || echo 0)
failed=$(grep -oE '[0-9]+ failed' <<<"$summary" | grep -oE '[0-9]+' || echo 0)
ignored=$(grep -oE '[0-9]+ ignored' <<<"$summary" | grep -oE '[0-9]+' || echo 0)
if [[ -z $summary ]]; then
  echo "tests: no summary from deno test (exit $status)"
  exit "$((status == 0 ? 1 : status))"
fi
echo "tests: ${passed} passed, ${failed} failed, ${ignored} skipped"
if ((status == 0 && passed == 0)); then
  echo "tests: no test ran"
  exit 1
fi
exit "$status"

#!/usr/bin/env bash
# Runs every test: the unit and contract tests once, the end-to-end tests twice,
# against LXD (LXD_DRIVER_TEST_CLI=lxc) and against Incus (=incus). Closes with
# one "tests: N passed, N failed, N skipped" line summing all runs, and exits
# non-zero when any run failed.
# Usage: scripts/test.sh DENO [deno test args...]
set -uo pipefail

deno=${1:?usage: scripts/test.sh DENO}
shift
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
export DENO_NO_UPDATE_CHECK=1

log=$(mktemp)
trap 'rm -f "$log"' EXIT

total_passed=0 total_failed=0 total_skipped=0 overall=0 lines=()

# run LABEL [env...] -- deno-test-args...: one `deno test` run, its summary
# added to the totals.
run() {
  local label=$1 env=() status summary passed failed ignored started seconds
  shift
  while [[ $1 != -- ]]; do
    env+=("$1")
    shift
  done
  shift
  printf '\n=== tests: %s\n' "$label"
  started=$SECONDS
  env "${env[@]}" "$deno" test -A --no-prompt "$@" 2>&1 | tee "$log"
  status=${PIPESTATUS[0]}
  seconds=$((SECONDS - started))
  # deno's summary: "ok | 12 passed | 0 failed | 3 ignored (3s)" (possibly with colour codes).
  summary=$(sed -e 's/\x1b\[[0-9;]*m//g' "$log" | grep -E '^(ok|FAILED) \| [0-9]+ passed' | tail -n 1)
  if [[ -z $summary ]]; then
    lines+=("tests ($label): no summary from deno test (exit $status), ${seconds}s")
    overall=1
    return
  fi
  passed=$(grep -oE '[0-9]+ passed' <<<"$summary" | grep -oE '[0-9]+' || echo 0)
  failed=$(grep -oE '[0-9]+ failed' <<<"$summary" | grep -oE '[0-9]+' || echo 0)
  ignored=$(grep -oE '[0-9]+ ignored' <<<"$summary" | grep -oE '[0-9]+' || echo 0)
  lines+=("tests ($label): ${passed} passed, ${failed} failed, ${ignored} skipped, ${seconds}s")
  total_passed=$((total_passed + passed))
  total_failed=$((total_failed + failed))
  total_skipped=$((total_skipped + ignored))
  if ((status != 0)); then overall=1; fi
}

run "unit + contract" -- "$@" --ignore=tests/e2e tests/
run "e2e, lxc" LXD_DRIVER_TEST_CLI=lxc -- "$@" tests/e2e/
run "e2e, incus" LXD_DRIVER_TEST_CLI=incus -- "$@" tests/e2e/

echo
printf '%s\n' "${lines[@]}"
echo "tests: ${total_passed} passed, ${total_failed} failed, ${total_skipped} skipped"
if ((overall == 0 && total_passed == 0)); then
  echo "tests: no test ran"
  exit 1
fi
exit "$overall"

#!/usr/bin/env bash
# The main job: a demo audit. Builds the verifier, makes a key, produces an honest
# capture and faulty ones, and shows each verdict. Exits non-zero if a verdict is not
# the one expected (honest passes, every fault fails).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --workspace --quiet
bin=target/release
work=$(mktemp -d "${TMPDIR:-/tmp}/mmaudit-demo.XXXXXX")
trap 'rm -rf "$work"' EXIT

"$bin/mmaudit-verify" keygen --out "$work/audit.key"

run_case() {
  local fault=$1 expect=$2
  echo
  echo "### workload with fault: $fault (expected verdict: $expect)"
  "$bin/mmaudit-refprover" --key-file "$work/audit.key" --out "$work/$fault.mma" \
      --fault "$fault" --layers 8 --call-rate 0.5
  set +e
  "$bin/mmaudit-verify" check "$work/$fault.mma" --key-file "$work/audit.key" \
      --json "$work/$fault.json"
  local rc=$?
  set -e
  if { [ "$expect" = pass ] && [ $rc -ne 0 ]; } || { [ "$expect" = fail ] && [ $rc -ne 1 ]; }; then
    echo "demo: unexpected exit code $rc for fault '$fault'" >&2
    exit 1
  fi
}

echo "The captures below come from the reference prover (CPU GEMMs, tests/src/refprover.rs)."
run_case none pass
run_case perturb fail
run_case drop-sample fail
run_case truncate fail
echo
echo "demo: every verdict was the expected one"

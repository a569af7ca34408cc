#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ on a stable toolchain: its committed corpus, then N
# mutated inputs (default 10000) per target, and prints how many inputs each tried.
#
#   bash scripts/fuzz.sh [N] [--seed S]
#
# Exit status 1 if a target failed (the input is saved under fuzz/artifacts/TARGET/),
# 2 if it could not run. With a nightly toolchain and cargo-fuzz, `cargo fuzz run
# TARGET` (from fuzz/'s parent directory) uses the same targets and corpus with
# coverage feedback.
set -euo pipefail
cd "$(dirname "$0")/.."

n=10000
seed=1
while [ $# -gt 0 ]; do
    case "$1" in
    --seed) seed=$2; shift 2 ;;
    -h | --help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *[!0-9]* | '') echo "fuzz.sh: '$1' is not a count of inputs" >&2; exit 2 ;;
    *) n=$1; shift ;;
    esac
done

# The same build as scripts/test.sh's: built for this package alone, the targets and every
# crate below them would be built a second time with other features.
cargo build --release -q --workspace --all-targets
targets=(stream records authenticated_payload hello hello_body audit challenges challenge_body commit_audit)
started=$(date +%s)
total=0
for t in "${targets[@]}"; do
    line=$("target/release/$t" "$n" --seed "$seed") || exit $?
    echo "$line"
    tried=$(sed -n 's/^fuzz [a-z_]*: \([0-9]*\) inputs tried.*/\1/p' <<<"$line")
    total=$((total + tried))
done
echo "fuzz.sh: $total inputs tried over ${#targets[@]} targets in $(($(date +%s) - started)) s, no failures"

#!/usr/bin/env bash
# Host CPU time of one CUDA graph launch with and without libmmaudit.so, on the
# simulated GPU: tests/programs/graph_decode.c with 32 layers (a graph of 225 GEMMs,
# the size of a Llama-3-8B decode step), every launch timed on the calling thread
# (CLOCK_THREAD_CPUTIME_ID around cudaGraphLaunch). Runs alternate without the library,
# at the default call rate and at call rate 1, ROUNDS times each; prints each run's
# median (p10, p90) and the median over runs.
#
#   bash scripts/bench-graph-launch.sh [ROUNDS] [REPLAYS]      (default 5 rounds of 200)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
replays=${2:-200}

cargo build --release -p mmaudit-interposer >&2
lib=$(bash scripts/simgpu.sh | tail -1)
exe=target/simgpu/programs/graph_decode-bench
mkdir -p "$(dirname "$exe")"
cc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -Werror -I tests/simgpu/include -I tests/programs \
    tests/programs/graph_decode.c -L"$lib" -lcuda -lcudart -lcublas -lcublasLt -lm -o "$exe"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$tmp/key"
chmod 600 "$tmp/key"

run() { # run NAME [ENV...]: prints "NAME p50 p10 p90" of the launch CPU time (ns)
    local name=$1
    shift
    env LD_LIBRARY_PATH="$lib" "$@" "$exe" --replays "$replays" --layers 32 --time |
        awk -v n="$name" '$1 == "launch-cpu-ns" { print n, $2, $3, $4 }'
}
audited() { # audited RATE
    rm -f "$tmp/capture.mma"
    run "rate-$1" LD_PRELOAD="$PWD/target/release/libmmaudit.so" MMAUDIT_SINK="file:$tmp/capture.mma" \
        MMAUDIT_KEY_FILE="$tmp/key" MMAUDIT_CALL_RATE="$1"
}

{
    for _ in $(seq "$rounds"); do
        run without
        audited 0.1
        audited 1
    done
} | tee "$tmp/runs"
echo "median over $rounds runs of the per-run median CPU time per launch (225 GEMMs):"
for name in without rate-0.1 rate-1; do
    awk -v n="$name" '$1 == n { print $2 }' "$tmp/runs" | sort -n |
        awk -v n="$name" '{ v[NR] = $1 } END { printf "  %-9s %8.1f us (runs %.1f .. %.1f us)\n", n, v[int((NR + 1) / 2)] / 1000, v[1] / 1000, v[NR] / 1000 }'
done

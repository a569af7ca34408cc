#!/usr/bin/env bash
# A/B of the hook's cost on the simulated GPU: two builds of libmmaudit.so, run
# alternately on the same program (interposer/benches/hook_cost.c: N cublasGemmEx
# calls, f32, m = n = k = 16), unsampled (MMAUDIT_CALL_RATE=0) and at the default call
# rate, plus the program without the library. Prints, per configuration, the median and
# the spread (min-max) over rounds of the calling thread's time per call, and the
# process's CPU time (user + sys, all threads; the program runs a warm-up round of
# CALLS first, counted too) per call, and the library's background thread's CPU per
# ledger record (from its exit summary; builds before that summary show "-").
#
#   bash scripts/bench-hook-ab.sh A.so B.so [ROUNDS] [CALLS]
#
# With PROGRAM=lt-fresh or PROGRAM=lt-reuse the program is interposer/benches/lt_cost.c
# instead: N cublasLtMatmul calls (f32, m = n = k = 16, a bias epilogue) with their
# descriptor and layouts created and destroyed around each call (PyTorch's way), or
# made once.
#
# With NO_COMPUTE=1 in the environment the simulated GPU accepts the GEMMs without
# computing them (SIMGPU_NO_COMPUTE), so the process CPU column is the program's and
# the library's alone and its difference to the run without the library is the
# library's CPU per call on all its threads.
#
# Example (the build of an older commit against this one):
#   git worktree add /tmp/old <commit> && (cd /tmp/old && CARGO_TARGET_DIR=/tmp/oldt \
#     cargo build --release -p mmaudit-interposer)
#   cargo build --release -p mmaudit-interposer
#   bash scripts/bench-hook-ab.sh /tmp/oldt/release/libmmaudit.so target/release/libmmaudit.so 7
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
a=$(realpath "$1"); b=$(realpath "$2"); rounds=${3:-7}; calls=${4:-200000}
for f in "$a" "$b"; do [ -f "$f" ] || { echo "bench-hook-ab: $f: no such file" >&2; exit 2; }; done
lib=$(bash scripts/simgpu.sh 2>/dev/null)
inc=tests/simgpu/include
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
program=${PROGRAM:-gemmex}
case $program in
gemmex)
    cc -std=c11 -D_GNU_SOURCE -O2 -I "$inc" interposer/benches/hook_cost.c -L "$lib" -lcudart -lcublas \
        -o "$work/prog"
    args=(16 16 1) ;;
lt-fresh | lt-reuse)
    cc -std=c11 -D_GNU_SOURCE -O2 -I "$inc" interposer/benches/lt_cost.c -L "$lib" -lcudart -lcublasLt \
        -o "$work/prog"
    args=("$([ "$program" = lt-fresh ] && echo 1 || echo 0)") ;;
*)
    echo "bench-hook-ab: PROGRAM=$program: gemmex, lt-fresh or lt-reuse" >&2
    exit 2 ;;
esac
key=000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f

# One run: prints "enqueue_ns cpu_ns background_ns" per call ("-" for no background figure).
run() {
    local preload=$1 rate=$2
    local env=(LD_LIBRARY_PATH="$lib")
    [ -z "${NO_COMPUTE:-}" ] || env+=(SIMGPU_NO_COMPUTE=1)
    if [ -n "$preload" ]; then
        env+=(LD_PRELOAD="$preload" MMAUDIT_KEY=$key MMAUDIT_CALL_RATE="$rate" MMAUDIT_SINK="file:$work/s-%p.mma" MMAUDIT_LOG=info)
    fi
    local out
    out=$( { /usr/bin/time -f "TIME %U %S" env -i "${env[@]}" "$work/prog" "$calls" "${args[@]}"; } 2>&1 )
    rm -f "$work"/*.mma
    local enq user sys bg
    enq=$(sed -n 's/^enqueue_ns \([0-9.]*\).*/\1/p' <<<"$out" | tail -1)
    bg=$(sed -n 's/.*background thread: .* CPU, \([0-9]*\) ns per ledger record.*/\1/p' <<<"$out" | tail -1)
    read -r user sys < <(sed -n 's/^TIME \([0-9.]*\) \([0-9.]*\)/\1 \2/p' <<<"$out")
    awk -v e="$enq" -v u="$user" -v s="$sys" -v n="$((2 * calls))" -v b="${bg:--}" 'BEGIN { printf "%.0f %.0f %s\n", e, (u + s) * 1e9 / n, b }'
}

declare -A enq cpu bgs
configs=("none||" "A|$a|0" "B|$b|0" "A|$a|0.1" "B|$b|0.1")
for ((r = 0; r < rounds; r++)); do
    for c in "${configs[@]}"; do
        IFS='|' read -r name preload rate <<<"$c"
        read -r e p b < <(run "$preload" "$rate")
        enq[$c]+="$e "; cpu[$c]+="$p "; bgs[$c]+="$b "
    done
done
stats() { tr ' ' '\n' <<<"$1" | grep '^[0-9]' | sort -n | awk '{v[NR]=$1} END {if (NR == 0) printf "%8s", "-"; else printf "%8.0f  (%0.f-%0.f)", v[int((NR+1)/2)], v[1], v[NR]}'; }
printf 'hook cost A/B ('"$program"'), %s calls per run, %s rounds alternating; A = %s, B = %s\n' "$calls" "$rounds" "$1" "$2"
printf '%-28s %-26s %-28s %-26s\n' configuration "enqueue ns/call (spread)" "process CPU ns/call (spread)" "background ns/record (spread)"
for c in "${configs[@]}"; do
    IFS='|' read -r name preload rate <<<"$c"
    label="no LD_PRELOAD"
    [ -n "$preload" ] && label="$name, call rate $rate"
    printf '%-28s %-26s %-28s %-26s\n' "$label" "$(stats "${enq[$c]}")" "$(stats "${cpu[$c]}")" "$(stats "${bgs[$c]}")"
done

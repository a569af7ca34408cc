#!/usr/bin/env bash
# What commit mode costs the audited program, side by side with sampling mode, on the
# simulated GPU: the Llama workload (prefill, then decode one token at a time) run
# without the library, under the library against `mmaudit-verify serve` (sampling
# mode, default rates), and under the library against `serve --commit` (default
# challenge rates), without and with the workload's weights held by the verifier
# (`--weights`), alternating, ROUNDS times. Prints per configuration the median
# and spread (min-max) of the run's wall time, its CPU time (user + sys, all threads),
# the library's background thread's CPU (from its exit line), and the bytes streamed.
#
#   bash scripts/bench-commit.sh [ROUNDS] [WORKLOAD ARGS...]
#
# Default workload: --layers 4 --tokens 64 --generate 32. Needs the release build
# (cargo build --release -p mmaudit-interposer -p mmaudit-verify) and the simulator.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
shift || true
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--layers 4 --tokens 64 --generate 32)
verify=target/release/mmaudit-verify
preload=$(realpath target/release/libmmaudit.so)
for f in "$verify" "$preload"; do
    [ -f "$f" ] || { echo "bench-commit: $f missing: cargo build --release -p mmaudit-interposer -p mmaudit-verify" >&2; exit 2; }
done
lib=$(bash scripts/simgpu.sh 2>/dev/null)
. scripts/scratch.sh bench-commit
cc -std=c11 -D_GNU_SOURCE -O2 -I tests/simgpu/include tests/programs/llama_workload.c \
    -L "$lib" -lcudart -lcublas -lcublasLt -lm -o "$work/llama"
"$verify" keygen --out "$work/audit.key" >/dev/null 2>&1
"$verify" keygen --out "$work/challenge.key" >/dev/null 2>&1

# A verifier in the background (its log in $work/NAME.log).
serve() {
    local name=$1
    shift
    mkdir -p "$work/$name"
    "$verify" serve --listen 127.0.0.1:0 --key-file "$work/audit.key" --max-no-session 100% \
        --json-dir "$work/$name" "$@" >"$work/$name.out" 2>"$work/$name.log" &
    pids+=($!)
}
# The port a verifier printed once it listens.
port_of() {
    local port=""
    for _ in $(seq 200); do
        port=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$work/$1.log" "$work/$1.out" | head -1)
        [ -n "$port" ] && break
        sleep 0.05
    done
    [ -n "$port" ] || { echo "bench-commit: serve did not start:" >&2; cat "$work/$1.log" >&2; exit 1; }
    echo "$port"
}
# The workload's seeded weights, for a verifier that holds them.
LD_LIBRARY_PATH="$lib" "$work/llama" "${args[@]}" --write-weights "$work/model.safetensors" >/dev/null
serve sampling
serve commit --commit --challenge-key "$work/challenge.key"
serve held --commit --challenge-key "$work/challenge.key" --weights "$work/model.safetensors"
sampling_port=$(port_of sampling)
commit_port=$(port_of commit)
held_port=$(port_of held)

# One run: prints "wall_ms cpu_ms background_ms bytes".
run() {
    local port=$1
    local env=(LD_LIBRARY_PATH="$lib")
    if [ -n "$port" ]; then
        env+=(LD_PRELOAD="$preload" MMAUDIT_KEY_FILE="$work/audit.key" MMAUDIT_SINK="tcp://127.0.0.1:$port" MMAUDIT_LOG=info)
    fi
    local out start end
    start=$(date +%s%N)
    out=$( { /usr/bin/time -f "TIME %U %S" env -i "${env[@]}" "$work/llama" "${args[@]}"; } 2>&1 )
    end=$(date +%s%N)
    local user sys bg bytes
    read -r user sys < <(sed -n 's/^TIME \([0-9.]*\) \([0-9.]*\)/\1 \2/p' <<<"$out")
    bg=$(sed -n 's/.*background thread: \([0-9.]*\) ms CPU.*/\1/p' <<<"$out" | tail -1)
    bytes=$(sed -n 's/.* \([0-9]*\) bytes.*/\1/p' <<<"$(grep 'finished:' <<<"$out" || true)" | tail -1)
    awk -v w="$(((end - start) / 1000000))" -v u="$user" -v s="$sys" -v b="${bg:--}" -v n="${bytes:--}" \
        'BEGIN { printf "%d %.0f %s %s\n", w, (u + s) * 1000, b, n }'
}

declare -A wall cpu bgs bytes
configs=("no LD_PRELOAD|" "sampling (default rates)|$sampling_port" "commit (default challenge rates)|$commit_port" "commit, verifier holds the weights|$held_port")
for ((r = 0; r < rounds; r++)); do
    for c in "${configs[@]}"; do
        IFS='|' read -r name port <<<"$c"
        read -r w p b n < <(run "$port")
        wall[$c]+="$w "; cpu[$c]+="$p "; bgs[$c]+="$b "; bytes[$c]+="$n "
    done
done
stats() { tr ' ' '\n' <<<"$1" | grep '^[0-9]' | sort -n | awk '{v[NR]=$1} END {if (NR == 0) printf "%8s", "-"; else printf "%8.0f  (%0.f-%0.f)", v[int((NR+1)/2)], v[1], v[NR]}'; }
printf 'commit vs sampling mode on the simulated GPU: llama_workload %s, %s rounds alternating\n' "${args[*]}" "$rounds"
printf '%-34s %-22s %-22s %-24s %-28s\n' configuration "wall ms (spread)" "CPU ms (spread)" "background ms (spread)" "bytes streamed (spread)"
for c in "${configs[@]}"; do
    IFS='|' read -r name port <<<"$c"
    printf '%-34s %-22s %-22s %-24s %-28s\n' "$name" "$(stats "${wall[$c]}")" "$(stats "${cpu[$c]}")" "$(stats "${bgs[$c]}")" "$(stats "${bytes[$c]}")"
done

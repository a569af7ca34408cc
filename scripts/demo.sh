#!/usr/bin/env bash
# The main job: a demo audit of libmmaudit.so.
#
# Builds the workspace (libmmaudit.so and mmaudit-verify), compiles a Llama-style
# GEMM workload (tests/programs/llama_workload.c: QKV, attention bmm, output, gate/up
# with bias epilogues, down, with in-place beta = 1 residual adds), runs it under
# LD_PRELOAD=libmmaudit.so with a file sink and shows the verifier's verdicts:
#   1. an honest run                                      -> PASS
#   2. a GPU that gets one entry per GEMM 5% wrong        -> FAIL, naming the calls
#   3. a GPU that runs with slightly wrong weights        -> FAIL
#   4. the honest capture cut short, and with one byte changed -> FAIL
#   5. commit mode against a live verifier (`serve --commit`): the workload commits to
#      every GEMM before the verifier, from a key the audited machine never holds,
#      says what to open                                 -> PASS (live and offline)
#      and, on the simulated GPU, the faulty GPU of case 2 -> FAIL
# On a machine with an NVIDIA GPU and the CUDA libraries the workload runs on the GPU
# (cases 2 and 3 need the simulated GPU's fault injection and are skipped); otherwise
# it runs on the simulated GPU (tests/simgpu). DEMO_BACKEND=simgpu forces the latter.
#
# With --html DIR, also draws each case's report as an HTML page, DIR/CASE.html
# (mmaudit-verify report), from the JSON report of its check.
#
# Exits non-zero if a verdict is not the one expected.
set -euo pipefail
html_dir=
while (($# > 0)); do
    case $1 in
    --html)
        [[ $# -ge 2 ]] || { echo "demo: --html needs a directory" >&2; exit 2; }
        html_dir=$2
        shift 2
        ;;
    -h | --help)
        sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
        exit 0
        ;;
    *)
        echo "demo: unknown argument '$1' (usage: scripts/demo.sh [--html DIR])" >&2
        exit 2
        ;;
    esac
done
if [[ -n $html_dir ]]; then
    mkdir -p "$html_dir"
    html_dir=$(cd "$html_dir" && pwd)
fi
cd "$(dirname "$0")/.."
root=$PWD

heading() { printf '\n== %s\n' "$*"; }

bin=$root/target/release
if command -v cargo >/dev/null 2>&1; then
    cargo build --release --workspace --quiet
elif [[ -f $bin/libmmaudit.so && -x $bin/mmaudit-verify ]]; then
    echo "No cargo here: using the binaries in target/release (libmmaudit.so, mmaudit-verify)."
else
    echo "demo: needs cargo to build, or target/release/libmmaudit.so and mmaudit-verify built elsewhere" >&2
    exit 2
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/mmaudit-demo.XXXXXX")
serve_pid=
trap '[[ -z $serve_pid ]] || kill "$serve_pid" 2>/dev/null; rm -rf "$work"' EXIT

# --- Which GPU: a real one when nvidia-smi works and the CUDA libraries load. --------
find_lib() {
    local so=$1 dir
    local -a dirs
    IFS=: read -ra dirs <<<"${LD_LIBRARY_PATH:-}"
    for dir in "${dirs[@]}" /usr/local/cuda/lib64 /usr/lib/x86_64-linux-gnu /usr/lib64; do
        if [[ -n $dir && -e $dir/$so ]]; then
            echo "$dir/$so"
            return 0
        fi
    done
    ldconfig -p 2>/dev/null | awk -v so="$so" '$1 == so { print $NF; exit }' | grep .
}

backend=simgpu
libs=()
if [[ ${DEMO_BACKEND:-auto} != simgpu ]] && command -v nvidia-smi >/dev/null 2>&1 &&
    nvidia-smi -L >/dev/null 2>&1; then
    for major in 13 12; do
        libs=()
        for name in libcudart libcublas libcublasLt; do
            path=$(find_lib "$name.so.$major") || break
            libs+=("$path")
        done
        if ((${#libs[@]} == 3)); then
            backend=gpu
            break
        fi
    done
fi
if [[ ${DEMO_BACKEND:-auto} == gpu && $backend != gpu ]]; then
    echo "demo: DEMO_BACKEND=gpu but no NVIDIA GPU with libcudart/libcublas/libcublasLt 12 or 13 was found" >&2
    exit 2
fi

exe=$work/llama_workload
cflags=(-std=c11 -D_GNU_SOURCE -O2 -I tests/simgpu/include -I tests/programs)
if [[ $backend == gpu ]]; then
    echo "Backend: the real GPU ($(nvidia-smi -L | head -1)), CUDA libraries ${libs[*]}"
    cc "${cflags[@]}" tests/programs/llama_workload.c "${libs[@]}" -lm -lpthread -o "$exe"
    lib_path=$(printf '%s\n' "${libs[@]}" | xargs -n1 dirname | sort -u | paste -sd:)
else
    echo "Backend: the simulated GPU (tests/simgpu, a CPU implementation of the CUDA libraries; no NVIDIA GPU found)"
    lib_path=$(bash scripts/simgpu.sh 2>/dev/null | tail -1)
    cc "${cflags[@]}" tests/programs/llama_workload.c -L"$lib_path" -lcudart -lcublas -lcublasLt -lm -lpthread -o "$exe"
fi
workload=(--layers 4 --tokens 64)
echo "Workload: llama_workload ${workload[*]} (hidden 256, 8 heads, 2 KV heads, MLP 688, bf16; 37 GEMM calls)"

"$bin/mmaudit-verify" keygen --out "$work/audit.key"

failures=0

# run_case NAME EXPECT FAULT RATES : runs the workload under the library, then checks.
# RATES are MMAUDIT_* sampling settings without the prefix, e.g. "CALL_RATE=0.5".
run_case() {
    local name=$1 expect=$2 fault=$3 rate
    local capture=$work/$name.mma
    local -a rates=()
    for rate in $4; do
        rates+=("MMAUDIT_$rate")
    done
    echo "\$ LD_PRELOAD=libmmaudit.so MMAUDIT_KEY_FILE=audit.key MMAUDIT_SINK=file:$name.mma" \
        "${rates[*]} ${fault:+SIMGPU_FAULT=$fault }llama_workload ${workload[*]}"
    if ! env LD_LIBRARY_PATH="$lib_path${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
        LD_PRELOAD="$bin/libmmaudit.so" MMAUDIT_KEY_FILE="$work/audit.key" \
        MMAUDIT_SINK="file:$capture" "${rates[@]}" \
        ${fault:+SIMGPU_FAULT="$fault"} "$exe" "${workload[@]}" >"$work/$name.out" 2>&1; then
        sed 's/^/    /' "$work/$name.out"
        echo "demo: the workload failed in case '$name'" >&2
        exit 1
    fi
    sed 's/^/    /' "$work/$name.out"
    check_case "$name" "$expect" "$capture"
}

# check_case NAME EXPECT CAPTURE [ARGS...] : mmaudit-verify check, compared with the
# expectation.
check_case() {
    local name=$1 expect=$2 capture=$3 rc=0
    shift 3
    echo "\$ mmaudit-verify check $(basename "$capture") --key-file audit.key $*" | sed "s|$work/||g"
    "$bin/mmaudit-verify" check "$capture" --key-file "$work/audit.key" --max-failures 4 \
        --json "$work/$name.json" "$@" || rc=$?
    local want=0
    [[ $expect == fail ]] && want=1
    if ((rc != want)); then
        echo "demo: UNEXPECTED: case '$name' should have given $(tr a-z A-Z <<<"$expect") (exit $want), the verifier exited $rc" >&2
        failures=$((failures + 1))
    fi
    if [[ -n $html_dir ]]; then
        rc=0
        "$bin/mmaudit-verify" report "$work/$name.json" --html "$html_dir/$name.html" || rc=$?
        if ((rc != want)); then
            echo "demo: UNEXPECTED: the HTML report of case '$name' exited $rc, not $want" >&2
            failures=$((failures + 1))
        fi
    fi
}

heading "1. Honest run: half the GEMM calls sampled, 1% of the rows and 0.1% of the columns of each"
run_case honest pass "" "CALL_RATE=0.5 ROW_RATE=0.01 COL_RATE=0.001"

if [[ $backend == simgpu ]]; then
    heading "2. Faulty GPU (SIMGPU_FAULT=perturb:0.05): one entry of every GEMM result is 5% off"
    echo "A single wrong entry per call is caught only where it is checked: this audit checks every entry"
    echo "of every call (every batch entry too), so every call should be named."
    run_case perturb fail perturb:0.05 "CALL_RATE=1 ROW_RATE=1 COL_RATE=1 BATCH_RATE=1"

    heading "3. Wrong weights (SIMGPU_FAULT=weights:0.02): every weight 2% off, at the honest run's rates"
    run_case weights fail weights:0.02 "CALL_RATE=0.5 ROW_RATE=0.01 COL_RATE=0.001"
else
    heading "2-3. Fault injection (SIMGPU_FAULT) exists only on the simulated GPU: skipped on a real GPU"
fi

heading "4. Stream integrity: the honest capture cut short, then with one byte changed"
size=$(wc -c <"$work/honest.mma")
head -c $((size * 2 / 3)) "$work/honest.mma" >"$work/truncated.mma"
check_case truncated fail "$work/truncated.mma"
cp "$work/honest.mma" "$work/tampered.mma"
offset=$((size / 2))
byte=$(od -An -tu1 -j "$offset" -N1 "$work/tampered.mma" | tr -d ' ')
printf "$(printf '\\%03o' $(((byte + 1) % 256)))" |
    dd of="$work/tampered.mma" bs=1 seek="$offset" conv=notrunc status=none
check_case tampered fail "$work/tampered.mma"

# commit_case NAME EXPECT FAULT RATES... : the workload against `serve --commit` (RATES:
# its --min-*-rate flags, the challenge's rates); the live verdict, then the saved
# capture checked offline with the challenge key.
commit_case() {
    local name=$1 expect=$2 fault=$3
    shift 3
    local dir=$work/$name
    mkdir -p "$dir/captures" "$dir/reports" "$dir/state"
    echo "\$ mmaudit-verify serve --listen 127.0.0.1:0 --key-file audit.key --commit --challenge-key challenge.key $* --max-no-session 100% --capture-dir captures --json-dir reports --state-dir state &"
    "$bin/mmaudit-verify" serve --listen 127.0.0.1:0 --key-file "$work/audit.key" --commit \
        --challenge-key "$work/challenge.key" "$@" --max-no-session 100% \
        --capture-dir "$dir/captures" --json-dir "$dir/reports" --state-dir "$dir/state" \
        >"$dir/serve.out" 2>"$dir/serve.log" &
    serve_pid=$!
    local port="" i
    for i in $(seq 200); do
        port=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$dir/serve.log" | head -1)
        [[ -n $port ]] && break
        sleep 0.05
    done
    [[ -n $port ]] || { cat "$dir/serve.log" >&2; echo "demo: serve did not start" >&2; exit 1; }
    echo "\$ LD_PRELOAD=libmmaudit.so MMAUDIT_KEY_FILE=audit.key MMAUDIT_SINK=tcp://127.0.0.1:$port ${fault:+SIMGPU_FAULT=$fault }llama_workload ${workload[*]}"
    if ! env LD_LIBRARY_PATH="$lib_path${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
        LD_PRELOAD="$bin/libmmaudit.so" MMAUDIT_KEY_FILE="$work/audit.key" MMAUDIT_LOG=info \
        MMAUDIT_SINK="tcp://127.0.0.1:$port" ${fault:+SIMGPU_FAULT="$fault"} \
        "$exe" "${workload[@]}" >"$dir/run.out" 2>&1; then
        sed 's/^/    /' "$dir/run.out"
        echo "demo: the workload failed in case '$name'" >&2
        exit 1
    fi
    grep -v '^call ' "$dir/run.out" | sed 's/^/    /'
    local report=""
    for i in $(seq 300); do
        report=$(find "$dir/reports" -name '*.json' | head -1)
        [[ -n $report ]] && break
        sleep 0.1
    done
    kill "$serve_pid" 2>/dev/null || true
    wait "$serve_pid" 2>/dev/null || true
    serve_pid=
    [[ -n $report ]] || { cat "$dir/serve.log" >&2; echo "demo: serve wrote no report" >&2; exit 1; }
    local live
    live=$(sed -n 's/^  "verdict": "\(.*\)",*$/\1/p' "$report" | head -1)
    echo "    live verdict (serve): $(tr a-z A-Z <<<"$live")"
    if [[ $live != "$expect" ]]; then
        echo "demo: UNEXPECTED: case '$name' should have given $(tr a-z A-Z <<<"$expect") live, serve said $live" >&2
        failures=$((failures + 1))
    fi
    local capture
    capture=$(find "$dir/captures" -name '*.mma' | head -1)
    check_case "$name" "$expect" "$capture" --challenge-key "$work/challenge.key" \
        --graded "$dir/state" --max-no-session 100%
}

heading "5. Commit mode: the audited machine cannot know what will be checked"
echo "In cases 1-3 the audited machine holds the key that decides what is checked. Here the"
echo "verifier holds a second key of its own: the library commits to every GEMM (a Merkle root"
echo "over its rows and columns, computed right after the call) before the verifier draws, from"
echo "that key and the commitment, which calls and entries to open (docs/COMMIT.md). Calls made"
echo "before the verifier's hello arrived are recorded, not audited (--max-no-session 100%)."
"$bin/mmaudit-verify" keygen --out "$work/challenge.key"
commit_case commit pass "" --min-call-rate 0.5
if [[ $backend == simgpu ]]; then
    heading "5b. Commit mode, the faulty GPU of case 2, every committed call challenged"
    commit_case commit-perturb fail perturb:0.05 --min-call-rate 1 --min-row-rate 1 --min-col-rate 1 --min-batch-rate 1
fi

echo
if ((failures > 0)); then
    echo "demo: $failures verdict(s) were not the expected ones" >&2
    exit 1
fi
echo "demo: every verdict was the expected one (backend: $backend)"

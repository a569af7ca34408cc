#!/usr/bin/env bash
# The real-GPU check of libmmaudit.so: one command, about 8 minutes on one GPU.
#
#   bash scripts/gpu-check.sh OUTDIR [--only STEP,...]
#   bash scripts/gpu-check.sh [OUTDIR] --dry-run [--only STEP,...]
#
# Runs from the repository root on a machine with an NVIDIA GPU, PyTorch and python3
# (JAX, CuPy, safetensors, cc, ncu and compute-sanitizer are used when present, and
# their steps are recorded as skipped otherwise). It needs target/release/libmmaudit.so
# and target/release/mmaudit-verify (another directory with MMAUDIT_BIN_DIR): built
# elsewhere and copied along, or built here with cargo when cargo exists and they are
# missing. Each step (scripts/gpu/plan.py) runs as its own process group under
# `timeout`; a step that fails is recorded and the next one runs. Writes
# OUTDIR/results.json, OUTDIR/GPU-RESULTS.md, OUTDIR/summary.txt, OUTDIR/logs.tar.gz
# (and logs/, work/ with the captures and the model). Exit status: 0 when no step
# failed, 1 when one did, 2 when the check could not start.
#
# --dry-run prints the steps, what each checks and its time limit, and needs neither
# a GPU nor PyTorch. --only runs the named steps (env, which names the machine, always
# runs).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
    sed -n '4,5p' "$0" | sed 's/^#  */usage: /' >&2
    exit 2
}

outdir=""
dry_run=0
only=""
while (($#)); do
    case $1 in
    --dry-run) dry_run=1 ;;
    --only)
        (($# >= 2)) || usage
        only=$2
        shift
        ;;
    --only=*) only=${1#--only=} ;;
    -h | --help)
        sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    -*)
        echo "gpu-check: unknown option $1" >&2
        usage
        ;;
    *)
        [[ -z $outdir ]] || usage
        outdir=$1
        ;;
    esac
    shift
done

python=$(command -v python3) || {
    echo "gpu-check: python3 not found" >&2
    exit 2
}
only_args=()
[[ -z $only ]] || only_args=(--only "$only")

if ((dry_run)); then
    PYTHONDONTWRITEBYTECODE=1 exec "$python" scripts/gpu/orchestrate.py --dry-run "${only_args[@]}"
fi
[[ -n $outdir ]] || usage

bin_dir=${MMAUDIT_BIN_DIR:-target/release}
lib=$bin_dir/libmmaudit.so
verifier=$bin_dir/mmaudit-verify
if [[ ! -f $lib || ! -x $verifier ]]; then
    if command -v cargo >/dev/null 2>&1 && [[ $bin_dir == target/release ]]; then
        echo "gpu-check: building libmmaudit.so and mmaudit-verify (cargo build --release)"
        cargo build --release -p mmaudit-interposer -p mmaudit-verify
    else
        echo "gpu-check: $lib and $verifier are needed: build them with" >&2
        echo "  cargo build --release -p mmaudit-interposer -p mmaudit-verify" >&2
        echo "and copy them here (or set MMAUDIT_BIN_DIR)" >&2
        exit 2
    fi
fi
if ! "$verifier" --version >/dev/null 2>&1; then
    echo "gpu-check: $verifier does not run on this machine:" >&2
    "$verifier" --version >&2 || true
    exit 2
fi
for tool in timeout nvidia-smi; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "gpu-check: $tool not found" >&2
        exit 2
    }
done
if ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu-check: nvidia-smi finds no GPU:" >&2
    nvidia-smi -L >&2 || true
    exit 2
fi

mkdir -p "$outdir"
export PYTHONDONTWRITEBYTECODE=1 # nothing written into the tree
exec "$python" scripts/gpu/orchestrate.py --out "$outdir" --lib "$lib" --verifier "$verifier" "${only_args[@]}"

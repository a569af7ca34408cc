#!/usr/bin/env bash
# Checks scripts/gpu-check.sh and scripts/gpu/ without a GPU, PyTorch or any Python
# package: bash syntax, Python syntax, every module importable with the GPU packages
# blocked (scripts/gpu/selftest.py, which also tests the report and log parsing and,
# where cc exists, runs the commit step end to end with the simulated GPU standing in
# for the driver, and the commit-mode step with it standing in for the GPU where
# libmmaudit.so and mmaudit-verify are built), and the dry run.
set -euo pipefail
cd "$(dirname "$0")/.."

python=$(command -v python3) || {
    echo "gpu-check-selftest: python3 not found" >&2
    exit 1
}
cache=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check-selftest.XXXXXX")
trap 'rm -rf "$cache"' EXIT
export PYTHONPYCACHEPREFIX=$cache # compiled files go there, not into the tree

bash -n scripts/gpu-check.sh
echo "  ok  bash -n scripts/gpu-check.sh"
"$python" -m py_compile scripts/gpu/*.py
echo "  ok  py_compile scripts/gpu/*.py"
"$python" scripts/gpu/selftest.py

out=$(bash scripts/gpu-check.sh --dry-run)
for step in $("$python" -c 'import sys; sys.path.insert(0, "scripts/gpu"); import plan; print(" ".join(s.name for s in plan.STEPS))'); do
    grep -q "^$step " <<<"$out" || {
        printf '%s\n' "$out"
        echo "gpu-check-selftest: the dry run does not list step $step" >&2
        exit 1
    }
done
grep -q "^total " <<<"$out" || {
    echo "gpu-check-selftest: the dry run prints no total" >&2
    exit 1
}
echo "  ok  bash scripts/gpu-check.sh --dry-run lists every step and the total"
echo "gpu-check selftest passed"

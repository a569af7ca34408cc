#!/usr/bin/env bash
# The Python package end to end: builds the wheel (scripts/wheel.sh), installs it into a
# fresh virtual environment, runs tests/python/test_package.py there against the
# simulated GPU (the `mmaudit` command running the C Llama workload and a Python
# program that calls cuBLAS through ctypes), then uninstalls it and checks that
# nothing of it is left in the environment.
#
#   bash scripts/python-test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
work=target/python-test
rm -rf "$work"
mkdir -p "$work"
wheel=$(bash scripts/wheel.sh "$work/wheels" | tail -1)
lib_dir=$(realpath "$(bash scripts/simgpu.sh 2>/dev/null | tail -1)")
cc -std=c11 -D_GNU_SOURCE -O2 -I tests/simgpu/include -I tests/programs tests/programs/llama_workload.c \
    -L"$lib_dir" -lcudart -lcublas -lcublasLt -lm -lpthread -o "$work/llama_workload"
python3 -m venv "$work/venv"
py=$work/venv/bin/python
"$py" -m pip install --quiet --no-index "$wheel"
site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
MMAUDIT_TEST_LIB_DIR=$lib_dir MMAUDIT_TEST_WORKLOAD=$(realpath "$work/llama_workload") \
    PATH="$(realpath "$work/venv/bin"):$PATH" "$py" tests/python/test_package.py
"$py" -m pip uninstall --quiet --yes mmaudit
left=$( (ls -d "$site"/mmaudit "$site"/mmaudit-* "$work/venv/bin/mmaudit" 2>/dev/null || true) )
if [[ -n $left ]]; then
    echo "python-test: pip uninstall left behind: $left" >&2
    exit 1
fi
echo "python-test: installed, tested and uninstalled $(basename "$wheel")"

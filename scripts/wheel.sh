#!/usr/bin/env bash
# Builds the Python wheel of mmaudit: the release libmmaudit.so and mmaudit-verify
# (built here, stripped) inside the package `mmaudit` (python/), with the `mmaudit`
# command. Prints the wheel's path.
#
#   bash scripts/wheel.sh [OUT_DIR]     (default target/wheels)
#
# Then: pip install target/wheels/mmaudit-*.whl
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/wheels}
cargo build --release -p mmaudit-interposer -p mmaudit-verify >&2
bin=python/mmaudit/_bin
rm -rf "$bin" python/build python/*.egg-info
mkdir -p "$bin" "$out"
install -m 0755 target/release/libmmaudit.so target/release/mmaudit-verify "$bin/"
strip "$bin/libmmaudit.so" "$bin/mmaudit-verify"
rm -f "$out"/mmaudit-*.whl
python3 -m pip wheel --quiet --no-deps --wheel-dir "$out" ./python >&2
rm -rf python/build python/*.egg-info
ls "$out"/mmaudit-*.whl

#!/usr/bin/env bash
# The one test command: builds everything the tests need from this repository (the
# workspace and the simulated GPU) and runs every test, plus the format and lint gates.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "format"
cargo fmt --all -- --check

step "committed PTX up to date (regenerated with the pinned NVRTC from PyPI)"
bash scripts/build-ptx.sh --check

step "build (release)"
cargo build --release --workspace --all-targets

step "simulated GPU"
bash scripts/simgpu.sh

step "NATS server for the fleet tests (Debian's nats-server)"
bash scripts/nats-server.sh

step "tests"
cargo test --release --workspace

step "fuzz targets: corpus and 5000 mutated inputs each (scripts/fuzz.sh N for more)"
bash scripts/fuzz.sh 5000

step "lints"
cargo clippy --release --workspace --all-targets -- -D warnings

step "Python package (wheel built, installed in a fresh venv, tested, uninstalled)"
bash scripts/python-test.sh

step "GPU check scripts (syntax, imports without PyTorch, dry run)"
bash scripts/gpu-check-selftest.sh

step "demo, with each case's HTML report checked in headless Chromium"
bash scripts/report-browser-test.sh

printf '\nall tests passed\n'

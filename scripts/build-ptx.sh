#!/usr/bin/env bash
# Compiles cuda/gather.cu to cuda/gather.ptx, the PTX that is committed and
# embedded in libmmaudit.so, with NVRTC from a pinned PyPI wheel: no GPU, no
# nvcc, no CUDA toolkit needed.
#
#   bash scripts/build-ptx.sh           regenerate cuda/gather.ptx
#   bash scripts/build-ptx.sh --check   regenerate into a temporary file and fail
#                                       if cuda/gather.ptx differs (CI runs this)
#
# Why NVRTC 12.0 and compute_70: the PTX ISA version of the output is that of
# the compiler (12.0 writes `.version 8.0`) and a driver loads PTX only up to
# the ISA of its own CUDA version, so 12.0 is what every CUDA 12.0+ driver
# accepts; `.target sm_70` (Volta) is JIT-compiled by the driver for any newer
# GPU. Do not bump either without reading cuda/README.md.
#
# The wheel (x86_64 Linux only for 12.0) is downloaded once with pip, checked
# against its pinned sha256 and unpacked under target/nvrtc/. The output is
# deterministic: the first line records the sha256 of gather.cu and the NVRTC
# version, and tests/e2e/ptx.rs checks offline that the recorded hash matches.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
src="$root/cuda/gather.cu"
ptx="$root/cuda/gather.ptx"
cache="$root/target/nvrtc"
python=${PYTHON:-python3}

# The pinned compiler: the last CUDA 12.0 update of NVRTC on PyPI.
wheel_version=12.0.140
wheel_name=nvidia_cuda_nvrtc_cu12-$wheel_version-py3-none-manylinux1_x86_64.whl
wheel_sha256=8e94e991d85c422de4da87bdc7472fdc1364367bd4aace7000b559cd33122071
nvrtc_version=12.0
arch=compute_70

usage() {
    echo "usage: bash scripts/build-ptx.sh [--check]" >&2
    exit 2
}
check=0
case $# in
0) ;;
1) [[ $1 == --check ]] || usage; check=1 ;;
*) usage ;;
esac

if [[ $(uname -s) != Linux || $(uname -m) != x86_64 ]]; then
    echo "build-ptx: NVRTC $nvrtc_version is published on PyPI for x86_64 Linux only; this is $(uname -s) $(uname -m)" >&2
    exit 2
fi

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9

# Fetch, verify and unpack the wheel once.
unpacked="$cache/nvrtc-$wheel_version"
if [[ ! -f "$unpacked/.ok" ]]; then
    if [[ ! -f "$cache/$wheel_name" ]]; then
        echo "build-ptx: downloading nvidia-cuda-nvrtc-cu12==$wheel_version" >&2
        "$python" -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux1_x86_64 \
            --dest "$cache" "nvidia-cuda-nvrtc-cu12==$wheel_version" >&2
    fi
    got=$(sha256sum "$cache/$wheel_name" | cut -d' ' -f1)
    if [[ $got != "$wheel_sha256" ]]; then
        echo "build-ptx: $wheel_name has sha256 $got, expected $wheel_sha256; removed it" >&2
        rm -f "$cache/$wheel_name"
        exit 1
    fi
    rm -rf "$unpacked"
    "$python" -m zipfile -e "$cache/$wheel_name" "$unpacked"
    touch "$unpacked/.ok"
fi

out=$ptx
if ((check)); then
    tmp=$(mktemp "$cache/gather.ptx.XXXXXX")
    trap 'rm -f "$tmp"' EXIT
    out=$tmp
fi

# Compile through NVRTC's C API with ctypes.
"$python" - "$unpacked/nvidia/cuda_nvrtc/lib" "$src" "$out" "$nvrtc_version" "$arch" <<'PY'
import ctypes, hashlib, os, sys

libdir, src_path, out_path, want_version, arch = sys.argv[1:]

# libnvrtc dlopens its builtins library by soname; load it first, globally.
ctypes.CDLL(os.path.join(libdir, "libnvrtc-builtins.so." + want_version), mode=ctypes.RTLD_GLOBAL)
nvrtc = ctypes.CDLL(os.path.join(libdir, "libnvrtc.so.12"))
nvrtc.nvrtcGetErrorString.restype = ctypes.c_char_p

def call(name, *args):
    status = getattr(nvrtc, name)(*args)
    if status != 0:
        raise SystemExit(f"build-ptx: {name} failed: {nvrtc.nvrtcGetErrorString(status).decode()}")

major, minor = ctypes.c_int(), ctypes.c_int()
call("nvrtcVersion", ctypes.byref(major), ctypes.byref(minor))
version = f"{major.value}.{minor.value}"
if version != want_version:
    raise SystemExit(f"build-ptx: loaded NVRTC {version}, expected {want_version}")

with open(src_path, "rb") as f:
    source = f.read()
digest = hashlib.sha256(source).hexdigest()

prog = ctypes.c_void_p()
call("nvrtcCreateProgram", ctypes.byref(prog), source, b"gather.cu", 0, None, None)
options = [f"--gpu-architecture={arch}".encode(), b"--std=c++17"]
opt_array = (ctypes.c_char_p * len(options))(*options)
status = nvrtc.nvrtcCompileProgram(prog, len(options), opt_array)
log_size = ctypes.c_size_t()
call("nvrtcGetProgramLogSize", prog, ctypes.byref(log_size))
log = ctypes.create_string_buffer(log_size.value)
call("nvrtcGetProgramLog", prog, log)
text = log.value.decode(errors="replace").strip()
if status != 0:
    raise SystemExit(f"build-ptx: cuda/gather.cu does not compile "
                     f"({nvrtc.nvrtcGetErrorString(status).decode()}):\n{text}")
if text:
    # Warnings are errors: the committed PTX must come from a clean build.
    raise SystemExit(f"build-ptx: NVRTC warned about cuda/gather.cu:\n{text}")
size = ctypes.c_size_t()
call("nvrtcGetPTXSize", prog, ctypes.byref(size))
buf = ctypes.create_string_buffer(size.value)
call("nvrtcGetPTX", prog, buf)
call("nvrtcDestroyProgram", ctypes.byref(prog))

body = buf.value.decode("ascii")
header = (f"// generated by scripts/build-ptx.sh from cuda/gather.cu sha256 {digest} "
          f"with NVRTC {version} --gpu-architecture={arch} -- do not edit\n")
tmp_path = out_path + ".part"
with open(tmp_path, "w", newline="\n") as f:
    f.write(header + body.rstrip("\n") + "\n")
os.replace(tmp_path, out_path)
PY

if ((check)); then
    if ! cmp -s "$tmp" "$ptx"; then
        echo "build-ptx: cuda/gather.ptx is stale: it is not what NVRTC $nvrtc_version makes of cuda/gather.cu." >&2
        echo "build-ptx: run 'bash scripts/build-ptx.sh' and commit cuda/gather.ptx. Differences (committed vs fresh):" >&2
        diff "$ptx" "$tmp" | head -40 >&2 || true
        exit 1
    fi
    echo "build-ptx: cuda/gather.ptx is up to date" >&2
else
    echo "build-ptx: wrote cuda/gather.ptx" >&2
fi

#!/usr/bin/env bash
# Builds the simulated GPU (tests/simgpu): libsimgpu.so plus libcudart.so.13,
# libcuda.so.1, libcublas.so.13 and libcublasLt.so.13 with their unversioned
# development links, into target/simgpu/lib. It is test infrastructure: a CPU
# stand-in for the CUDA libraries, never shipped.
#
# The last line of standard output is the absolute library directory, so a
# program built against tests/simgpu/include links and runs with
#   cc prog.c -I tests/simgpu/include -L"$DIR" -lcudart -lcublas -lcublasLt [-lcuda]
#   LD_LIBRARY_PATH="$DIR" ./a.out
# The include directory is printed on standard error.
#
# Rebuilds only when a source, header or this script is newer than the last
# build; a lock makes concurrent invocations safe. SIMGPU_BUILD_DIR=DIR builds
# into DIR/lib instead of target/simgpu/lib (the GPU check builds into its
# output directory).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
src="$root/tests/simgpu/src"
inc="$root/tests/simgpu/include"
out=${SIMGPU_BUILD_DIR:-$root/target/simgpu}
mkdir -p "$out"
out=$(cd "$out" && pwd)
lib="$out/lib"
cc=${CC:-cc}

exec 9>"$out/.lock"
flock 9

stamp="$lib/.built"
if [[ -f "$stamp" ]] && [[ -z $(find "$src" "$inc" "${BASH_SOURCE[0]}" -newer "$stamp" -print -quit) ]]; then
    echo "simgpu: include directory $inc" >&2
    echo "$lib"
    exit 0
fi

tmp=$(mktemp -d "$out/build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

cflags=(-std=c11 -D_GNU_SOURCE -O2 -fPIC -pthread -Wall -Wextra -Werror -I"$inc" -I"$src")
# SIMGPU_CFLAGS: more flags, appended (the GPU check adds -Wno-error: another
# compiler's new warnings must not stop its one run there).
read -r -a extra <<<"${SIMGPU_CFLAGS:-}"
cflags+=("${extra[@]}")
core=(core.c memory.c handles.c graph.c numeric.c gemm.c gemm_types.c fault.c kernels.c errors.c device.c
      cublas_status.c)

# The shared state: only SG_EXPORT symbols are visible to the four libraries.
"$cc" "${cflags[@]}" -fvisibility=hidden -shared -Wl,-soname,libsimgpu.so -Wl,--no-undefined \
    -o "$tmp/libsimgpu.so" "${core[@]/#/$src/}" -lm

# One API library: source, soname, version node ("" for none), exported prefix.
api() {
    local source=$1 soname=$2 node=$3 prefix=$4
    printf '%s { global: %s*; local: *; };\n' "$node" "$prefix" >"$tmp/map-$soname"
    "$cc" "${cflags[@]}" -shared -Wl,-soname,"$soname" -Wl,--version-script,"$tmp/map-$soname" \
        -Wl,--no-undefined -Wl,--enable-new-dtags -Wl,-rpath,'$ORIGIN' \
        -o "$tmp/$soname" "$src/$source" -L"$tmp" -lsimgpu -lm
    ln -sf "$soname" "$tmp/${soname%%.so*}.so"
}

# Symbol versions as in the real libraries: libcudart/libcublas/libcublasLt
# version their symbols by soname, libcuda does not.
api cudart.c libcudart.so.13 libcudart.so.13 cuda
api cuda.c libcuda.so.1 "" cu
api cublas.c libcublas.so.13 libcublas.so.13 cublas
api cublaslt.c libcublasLt.so.13 libcublasLt.so.13 cublasLt

mkdir -p "$lib"
cp -P "$tmp"/lib* "$lib/"
touch "$stamp"
echo "simgpu: built into $lib; include directory $inc" >&2
echo "$lib"

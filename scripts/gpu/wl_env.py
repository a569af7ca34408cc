"""Versions of what the GPU check runs on, as JSON.

    wl_env.py --result OUT.json

PyTorch, its CUDA build, the GPU; after one small GEMM (which loads cuBLAS), the
cuBLAS, cuBLASLt, CUDA runtime and driver versions read from the libraries the process
actually loaded (their paths from /proc/self/maps); installed package versions.
"""

import argparse
import ctypes
import json
import sys

PACKAGES = ["torch", "jax", "jaxlib", "cupy-cuda13x", "cupy-cuda12x", "cupy", "safetensors", "numpy",
            "triton", "nvidia-cublas", "nvidia-cublas-cu13", "nvidia-cublas-cu12",
            "nvidia-cuda-runtime", "nvidia-cuda-runtime-cu13", "nvidia-cuda-runtime-cu12"]


def package_versions():
    from importlib import metadata

    out = {}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except Exception:
            pass
    return out


def loaded_libraries():
    """Paths of the CUDA libraries mapped into this process."""
    libs = {}
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split()[-1] if len(line.split()) >= 6 else ""
                for name in ("libcublasLt.so", "libcublas.so", "libcudart.so", "libcuda.so"):
                    base = path.rsplit("/", 1)[-1]
                    if base.startswith(name):
                        libs.setdefault(name, path)
    except OSError:
        pass
    return libs


def library_versions(libs):
    out = {}

    def call_int(path, fn, *args):
        lib = ctypes.CDLL(path)
        v = ctypes.c_int(0)
        rc = getattr(lib, fn)(*args, ctypes.byref(v))
        return v.value if rc == 0 else None

    try:
        if "libcublasLt.so" in libs:
            lib = ctypes.CDLL(libs["libcublasLt.so"])
            lib.cublasLtGetVersion.restype = ctypes.c_size_t
            out["cublasLt"] = int(lib.cublasLtGetVersion())
        if "libcublas.so" in libs:
            parts = [call_int(libs["libcublas.so"], "cublasGetProperty", i) for i in range(3)]
            out["cublas"] = ".".join(str(p) for p in parts)
        if "libcudart.so" in libs:
            out["cudart"] = call_int(libs["libcudart.so"], "cudaRuntimeGetVersion")
        if "libcuda.so" in libs:
            out["cuda_driver_api"] = call_int(libs["libcuda.so"], "cuDriverGetVersion")
    except (OSError, AttributeError) as e:
        out["error"] = str(e)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--result", required=True)
    args = ap.parse_args()
    info = {"python": sys.version.split()[0], "python_path": sys.executable, "packages": package_versions()}
    import torch

    info["torch"] = torch.__version__
    info["torch_cuda"] = torch.version.cuda
    info["cuda_available"] = torch.cuda.is_available()
    if info["cuda_available"]:
        p = torch.cuda.get_device_properties(0)
        info["gpu"] = p.name
        info["capability"] = "%d.%d" % (p.major, p.minor)
        info["gpu_memory_gib"] = round(p.total_memory / 2**30, 1)
        info["multiprocessors"] = p.multi_processor_count
        a = torch.ones(64, 64, device="cuda")
        (a @ a).sum().item()  # loads cuBLAS
        info["preferred_blas"] = str(torch.backends.cuda.preferred_blas_library())
        info["float32_matmul_precision"] = torch.get_float32_matmul_precision()
        libs = loaded_libraries()
        info["libraries"] = libs
        info["library_versions"] = library_versions(libs)
    with open(args.result, "w") as f:
        json.dump(info, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()

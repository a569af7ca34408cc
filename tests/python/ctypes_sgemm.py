"""A Python program that multiplies matrices through cuBLAS with ctypes (no framework):
cublasSgemm_v2 on 64 x 64 matrices, CALLS times, then checks one result on the host.
The CUDA libraries are found as the dynamic loader finds them (LD_LIBRARY_PATH)."""
import ctypes
import sys

CALLS = int(sys.argv[1]) if len(sys.argv) > 1 else 8
N = 64

cudart = ctypes.CDLL("libcudart.so")
cublas = ctypes.CDLL("libcublas.so")


def ok(status, what):
    if status != 0:
        sys.exit("%s failed with status %d" % (what, status))


size = N * N * 4
a_host = (ctypes.c_float * (N * N))(*[(i % 7) * 0.25 for i in range(N * N)])
b_host = (ctypes.c_float * (N * N))(*[((i * 3) % 5) * 0.5 for i in range(N * N)])
c_host = (ctypes.c_float * (N * N))()
a, b, c = ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_void_p()
for p in (a, b, c):
    ok(cudart.cudaMalloc(ctypes.byref(p), ctypes.c_size_t(size)), "cudaMalloc")
ok(cudart.cudaMemcpy(a, a_host, ctypes.c_size_t(size), 1), "cudaMemcpy")
ok(cudart.cudaMemcpy(b, b_host, ctypes.c_size_t(size), 1), "cudaMemcpy")
handle = ctypes.c_void_p()
ok(cublas.cublasCreate_v2(ctypes.byref(handle)), "cublasCreate_v2")
alpha, beta = ctypes.c_float(1.0), ctypes.c_float(0.0)
for _ in range(CALLS):
    ok(cublas.cublasSgemm_v2(handle, 0, 0, N, N, N, ctypes.byref(alpha), a, N, b, N,
                             ctypes.byref(beta), c, N), "cublasSgemm_v2")
ok(cudart.cudaMemcpy(c_host, c, ctypes.c_size_t(size), 2), "cudaMemcpy")
# Column-major: C[0, 0] = sum_k A[0, k] * B[k, 0].
want = sum(a_host[k * N] * b_host[k] for k in range(N))
if abs(c_host[0] - want) > 1e-3 * max(1.0, abs(want)):
    sys.exit("C[0,0] = %r, expected %r" % (c_host[0], want))
ok(cublas.cublasDestroy_v2(handle), "cublasDestroy_v2")
print("ctypes_sgemm: %d calls, C[0,0] = %g" % (CALLS, c_host[0]))

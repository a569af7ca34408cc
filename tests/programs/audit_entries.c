/*
 * The cuBLAS entry points beyond cublasGemmEx that frameworks call, each once or
 * twice with seeded data: cublasDgemm_v2 and cublasDgemmStridedBatched (PyTorch's
 * float64 matmul and bmm), cublasSgemmEx (bf16 and f16 inputs, f32 scalars),
 * cublasSgemmBatched and cublasHgemmBatched (device pointer arrays), cublasSgemv_v2
 * and cublasDgemv_v2 (PyTorch's mv: op N and T; the f32 one with the handle in TF32
 * math mode, which gemv ignores), and last one cublasSgemv_v2 whose y has stride 2,
 * which protocol v1 does not describe.
 *
 *   audit_entries [--trace]
 *
 * Prints "unmodelled I" (the index of the call outside the model), then "calls N" and
 * "output-hash H" (audit_common.h), with --trace one "call I ENTRY m=.. n=.. k=..
 * batch=.." line per call. Exits 0, or 2 on failure.
 */
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "audit_common.h"

static cublasHandle_t h;
static cudaStream_t stream;
static uint64_t ncalls, hash = FNV_OFFSET, seed = 1;
static int trace;

static void *upload(int type, size_t n) {
    size_t bytes = n * type_size(type);
    void *host = malloc(bytes), *dev;
    fill_random(host, type, n, seed++);
    MUST(cudaMalloc(&dev, bytes));
    MUST(cudaMemcpy(dev, host, bytes, cudaMemcpyHostToDevice));
    free(host);
    return dev;
}

/* Counts a call and hashes `bytes` of its output as copied back. */
static void done(const char *entry, int m, int n, int k, int batch, const void *out, size_t bytes) {
    MUST(cudaStreamSynchronize(stream));
    void *host = malloc(bytes);
    MUST(cudaMemcpy(host, out, bytes, cudaMemcpyDeviceToHost));
    hash = fnv1a(hash, host, bytes);
    free(host);
    if (trace)
        printf("call %llu %s m=%d n=%d k=%d batch=%d\n", (unsigned long long)ncalls, entry, m, n, k, batch);
    ncalls++;
}

/* A device array of `batch` pointers to consecutive matrices of `elems` elements. */
static void **pointers(void *base, int batch, size_t elems, int type) {
    void **host = malloc(sizeof(void *) * (size_t)batch), **dev;
    for (int i = 0; i < batch; i++)
        host[i] = (unsigned char *)base + (size_t)i * elems * type_size(type);
    MUST(cudaMalloc((void **)&dev, sizeof(void *) * (size_t)batch));
    MUST(cudaMemcpy(dev, host, sizeof(void *) * (size_t)batch, cudaMemcpyHostToDevice));
    free(host);
    return dev;
}

int main(int argc, char **argv) {
    trace = argc == 2 && !strcmp(argv[1], "--trace");
    if (argc > 1 && !trace) {
        fprintf(stderr, "usage: audit_entries [--trace]\n");
        return 2;
    }
    MUST(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    MUST(cublasCreate_v2(&h));
    MUST(cublasSetStream_v2(h, stream));
    const int m = 24, n = 8, k = 40, batch = 3;
    const double done64 = 1.0, half64 = 0.5;
    const float one = 1.0f, zero = 0.0f, half = 0.5f;
    const uint16_t h_one = 0x3c00, h_zero = 0;

    /* f64 */
    double *da = upload(CUDA_R_64F, (size_t)m * k * batch), *db = upload(CUDA_R_64F, (size_t)k * n * batch);
    double *dc = upload(CUDA_R_64F, (size_t)m * n * batch);
    MUST(cublasDgemm_v2(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &done64, da, m, db, k, &half64, dc, m));
    done("cublasDgemm_v2", m, n, k, 1, dc, (size_t)m * n * 8);
    MUST(cublasDgemmStridedBatched(h, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &done64, da, k, (long long)m * k, db, k,
                                   (long long)k * n, &half64, dc, m, (long long)m * n, batch));
    done("cublasDgemmStridedBatched", m, n, k, batch, dc, (size_t)m * n * batch * 8);

    /* cublasSgemmEx: bf16 x bf16 -> f32, f16 x f16 -> f16 */
    void *a16 = upload(CUDA_R_16BF, (size_t)m * k), *b16 = upload(CUDA_R_16BF, (size_t)k * n);
    float *c32 = upload(CUDA_R_32F, (size_t)m * n);
    MUST(cublasSgemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, a16, CUDA_R_16BF, m, b16, CUDA_R_16BF, k, &half,
                       c32, CUDA_R_32F, m));
    done("cublasSgemmEx", m, n, k, 1, c32, (size_t)m * n * 4);
    void *ah = upload(CUDA_R_16F, (size_t)m * k), *bh = upload(CUDA_R_16F, (size_t)k * n);
    void *ch = upload(CUDA_R_16F, (size_t)m * n);
    MUST(cublasSgemmEx(h, CUBLAS_OP_N, CUBLAS_OP_T, m, n, k, &one, ah, CUDA_R_16F, m, bh, CUDA_R_16F, n, &zero, ch,
                       CUDA_R_16F, m));
    done("cublasSgemmEx", m, n, k, 1, ch, (size_t)m * n * 2);

    /* pointer-array batches */
    float *fa = upload(CUDA_R_32F, (size_t)m * k * batch), *fb = upload(CUDA_R_32F, (size_t)k * n * batch);
    float *fc = upload(CUDA_R_32F, (size_t)m * n * batch);
    void **pa = pointers(fa, batch, (size_t)m * k, CUDA_R_32F), **pb = pointers(fb, batch, (size_t)k * n, CUDA_R_32F);
    void **pc = pointers(fc, batch, (size_t)m * n, CUDA_R_32F);
    MUST(cublasSgemmBatched(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, (const float *const *)pa, m,
                            (const float *const *)pb, k, &half, (float *const *)pc, m, batch));
    done("cublasSgemmBatched", m, n, k, batch, fc, (size_t)m * n * batch * 4);
    void *ha = upload(CUDA_R_16F, (size_t)m * k * batch), *hb = upload(CUDA_R_16F, (size_t)k * n * batch);
    void *hc = upload(CUDA_R_16F, (size_t)m * n * batch);
    void **qa = pointers(ha, batch, (size_t)m * k, CUDA_R_16F), **qb = pointers(hb, batch, (size_t)k * n, CUDA_R_16F);
    void **qc = pointers(hc, batch, (size_t)m * n, CUDA_R_16F);
    MUST(cublasHgemmBatched(h, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, (const __half *)&h_one,
                            (const __half *const *)qa, k, (const __half *const *)qb, k, (const __half *)&h_zero,
                            (__half *const *)qc, m, batch));
    done("cublasHgemmBatched", m, n, k, batch, hc, (size_t)m * n * batch * 2);

    /* gemv: y = alpha op(A) x + beta y; A is m x k as stored */
    float *x = upload(CUDA_R_32F, (size_t)2 * m), *y = upload(CUDA_R_32F, (size_t)2 * m);
    MUST(cublasSetMathMode(h, CUBLAS_TF32_TENSOR_OP_MATH));
    MUST(cublasSgemv_v2(h, CUBLAS_OP_N, m, k, &one, fa, m, x, 1, &half, y, 1)); /* x: k elements */
    done("cublasSgemv_v2", m, 1, k, 1, y, (size_t)m * 4);
    MUST(cublasSgemv_v2(h, CUBLAS_OP_T, m, k, &one, fa, m, x, 2, &zero, y, 1)); /* op T: k x m, x stride 2 */
    done("cublasSgemv_v2", k, 1, m, 1, y, (size_t)k * 4);
    MUST(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH));
    double *dx = upload(CUDA_R_64F, (size_t)k), *dy = upload(CUDA_R_64F, (size_t)m);
    MUST(cublasDgemv_v2(h, CUBLAS_OP_N, m, k, &done64, da, m, dx, 1, &half64, dy, 1));
    done("cublasDgemv_v2", m, 1, k, 1, dy, (size_t)m * 8);
    printf("unmodelled %llu\n", (unsigned long long)ncalls);
    MUST(cublasSgemv_v2(h, CUBLAS_OP_N, m, k, &one, fa, m, x, 1, &zero, y, 2)); /* y stride 2 */
    done("cublasSgemv_v2", m, 1, k, 1, y, (size_t)2 * m * 4);

    MUST(cublasDestroy_v2(h));
    print_result(ncalls, hash);
    return 0;
}

/*
 * A program that reaches cuBLAS the way JAX/XLA, TensorFlow and ctypes do: it is
 * linked against no CUDA library at all, dlopens libcudart.so.13,
 * libcublas.so.13 and libcublasLt.so.13 with RTLD_LOCAL, and calls every
 * function through a pointer from dlsym on the library's handle. Under
 * libmmaudit.so those GEMMs must still be audited (the interposer's dlsym).
 *
 *   audit_dlopen [--trace]
 *
 * Issues cublasSgemm_v2, cublasGemmEx, cublasGemmStridedBatchedEx,
 * cublasGemmBatchedEx and cublasLtMatmul (with a bias epilogue) a few times each;
 * prints "calls N" and "output-hash H" (audit_common.h); exits 0, or 2 on failure.
 */
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <dlfcn.h>

#include "audit_common.h"

static void *open_lib(const char *soname) {
    void *h = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        printf("FAIL setup dlopen(%s): %s\n", soname, dlerror());
        exit(2);
    }
    return h;
}

static void *sym(void *lib, const char *name) {
    void *p = dlsym(lib, name);
    if (!p) {
        printf("FAIL setup dlsym(%s): %s\n", name, dlerror());
        exit(2);
    }
    return p;
}

/* Function pointers named after the functions, typed from the headers' prototypes. */
#define FN(name) static __typeof__(&name) p_##name
FN(cudaMalloc);
FN(cudaFree);
FN(cudaMemcpy);
FN(cudaStreamCreate);
FN(cudaStreamSynchronize);
FN(cudaStreamDestroy);
FN(cublasCreate_v2);
FN(cublasDestroy_v2);
FN(cublasSetStream_v2);
FN(cublasSgemm_v2);
FN(cublasGemmEx);
FN(cublasGemmStridedBatchedEx);
FN(cublasGemmBatchedEx);
FN(cublasLtCreate);
FN(cublasLtDestroy);
FN(cublasLtMatmul);
FN(cublasLtMatmulDescCreate);
FN(cublasLtMatmulDescDestroy);
FN(cublasLtMatmulDescSetAttribute);
FN(cublasLtMatrixLayoutCreate);
FN(cublasLtMatrixLayoutDestroy);
#define LOAD(lib, name) p_##name = (__typeof__(&name))sym(lib, #name)

static uint64_t ncalls, total_hash = FNV_OFFSET;
static int trace;
static cudaStream_t stream;

static void *upload_random(int type, size_t n, uint64_t seed) {
    size_t bytes = n * type_size(type);
    void *host = malloc(bytes), *dev;
    fill_random(host, type, n, seed);
    MUST(p_cudaMalloc(&dev, bytes));
    MUST(p_cudaMemcpy(dev, host, bytes, cudaMemcpyHostToDevice));
    free(host);
    return dev;
}

static void finish(const char *entry, int m, int n, int k, int batch, const void *dev, size_t bytes) {
    unsigned char *host = malloc(bytes);
    MUST(p_cudaStreamSynchronize(stream));
    MUST(p_cudaMemcpy(host, dev, bytes, cudaMemcpyDeviceToHost));
    uint64_t h = fnv1a(FNV_OFFSET, host, bytes);
    total_hash = fnv1a(total_hash, host, bytes);
    if (trace)
        printf("call %llu %s m=%d n=%d k=%d batch=%d hash=%016llx\n", (unsigned long long)ncalls, entry, m, n, k, batch,
               (unsigned long long)h);
    ncalls++;
    free(host);
}

int main(int argc, char **argv) {
    trace = argc > 1 && !strcmp(argv[1], "--trace");
    void *rt = open_lib("libcudart.so.13"), *blas = open_lib("libcublas.so.13"), *blaslt = open_lib("libcublasLt.so.13");
    LOAD(rt, cudaMalloc);
    LOAD(rt, cudaFree);
    LOAD(rt, cudaMemcpy);
    LOAD(rt, cudaStreamCreate);
    LOAD(rt, cudaStreamSynchronize);
    LOAD(rt, cudaStreamDestroy);
    LOAD(blas, cublasCreate_v2);
    LOAD(blas, cublasDestroy_v2);
    LOAD(blas, cublasSetStream_v2);
    LOAD(blas, cublasSgemm_v2);
    LOAD(blas, cublasGemmEx);
    LOAD(blas, cublasGemmStridedBatchedEx);
    LOAD(blas, cublasGemmBatchedEx);
    LOAD(blaslt, cublasLtCreate);
    LOAD(blaslt, cublasLtDestroy);
    LOAD(blaslt, cublasLtMatmul);
    LOAD(blaslt, cublasLtMatmulDescCreate);
    LOAD(blaslt, cublasLtMatmulDescDestroy);
    LOAD(blaslt, cublasLtMatmulDescSetAttribute);
    LOAD(blaslt, cublasLtMatrixLayoutCreate);
    LOAD(blaslt, cublasLtMatrixLayoutDestroy);

    cublasHandle_t h;
    cublasLtHandle_t lt;
    MUST(p_cudaStreamCreate(&stream));
    MUST(p_cublasCreate_v2(&h));
    MUST(p_cublasSetStream_v2(h, stream));
    MUST(p_cublasLtCreate(&lt));

    const int m = 24, n = 16, k = 32, batch = 3;
    const float alpha = 0.75f, beta = -0.5f, zero = 0.0f;
    uint64_t seed = 1;
    for (int round = 0; round < 3; round++) {
        /* f32, op(A) = T (nn.Linear), beta != 0. */
        float *a = upload_random(CUDA_R_32F, (size_t)k * m, seed++), *b = upload_random(CUDA_R_32F, (size_t)k * n, seed++);
        float *c = upload_random(CUDA_R_32F, (size_t)m * n, seed++);
        MUST(p_cublasSgemm_v2(h, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &alpha, a, k, b, k, &beta, c, m));
        finish("cublasSgemm_v2", m, n, k, 1, c, (size_t)m * n * 4);

        /* bf16 in, bf16 out, f32 accumulation. */
        void *a16 = upload_random(CUDA_R_16BF, (size_t)k * m, seed++), *b16 = upload_random(CUDA_R_16BF, (size_t)k * n, seed++);
        void *c16 = upload_random(CUDA_R_16BF, (size_t)m * n, seed++);
        MUST(p_cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &alpha, a16, CUDA_R_16BF, k, b16, CUDA_R_16BF, k, &zero,
                            c16, CUDA_R_16BF, m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        finish("cublasGemmEx", m, n, k, 1, c16, (size_t)m * n * 2);

        /* Strided batch of f16 with f32 output. */
        void *ah = upload_random(CUDA_R_16F, (size_t)m * k * batch, seed++);
        void *bh = upload_random(CUDA_R_16F, (size_t)k * n * batch, seed++);
        void *cf = upload_random(CUDA_R_32F, (size_t)m * n * batch, seed++);
        MUST(p_cublasGemmStridedBatchedEx(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &alpha, ah, CUDA_R_16F, m,
                                          (long long)m * k, bh, CUDA_R_16F, k, (long long)k * n, &beta, cf, CUDA_R_32F, m,
                                          (long long)m * n, batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        finish("cublasGemmStridedBatchedEx", m, n, k, batch, cf, (size_t)m * n * batch * 4);

        /* Pointer-array batch over the same f16 data. */
        void *ptrs[9];
        for (int i = 0; i < batch; i++) {
            ptrs[i] = (unsigned char *)ah + (size_t)i * m * k * 2;
            ptrs[batch + i] = (unsigned char *)bh + (size_t)i * k * n * 2;
            ptrs[2 * batch + i] = (unsigned char *)cf + (size_t)i * m * n * 4;
        }
        void **dptrs;
        MUST(p_cudaMalloc((void **)&dptrs, sizeof ptrs));
        MUST(p_cudaMemcpy(dptrs, ptrs, sizeof ptrs, cudaMemcpyHostToDevice));
        MUST(p_cublasGemmBatchedEx(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &alpha, (const void *const *)dptrs, CUDA_R_16F, m,
                                   (const void *const *)(dptrs + batch), CUDA_R_16F, k, &beta, dptrs + 2 * batch,
                                   CUDA_R_32F, m, batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        finish("cublasGemmBatchedEx", m, n, k, batch, cf, (size_t)m * n * batch * 4);

        /* cuBLASLt, bf16, BIAS epilogue, op(A) = T. */
        void *bias = upload_random(CUDA_R_16BF, (size_t)m, seed++);
        void *d16 = upload_random(CUDA_R_16BF, (size_t)m * n, seed++);
        cublasLtMatmulDesc_t desc;
        cublasLtMatrixLayout_t la, lb, lc;
        MUST(p_cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
        int32_t ta = CUBLAS_OP_T;
        uint32_t epi = CUBLASLT_EPILOGUE_BIAS;
        MUST(p_cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
        MUST(p_cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
        MUST(p_cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
        MUST(p_cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, (uint64_t)k, (uint64_t)m, k));
        MUST(p_cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, (uint64_t)k, (uint64_t)n, k));
        MUST(p_cublasLtMatrixLayoutCreate(&lc, CUDA_R_16BF, (uint64_t)m, (uint64_t)n, m));
        MUST(p_cublasLtMatmul(lt, desc, &alpha, a16, la, b16, lb, &beta, c16, lc, d16, lc, NULL, NULL, 0, stream));
        finish("cublasLtMatmul", m, n, k, 1, d16, (size_t)m * n * 2);
        MUST(p_cublasLtMatmulDescDestroy(desc));
        MUST(p_cublasLtMatrixLayoutDestroy(la));
        MUST(p_cublasLtMatrixLayoutDestroy(lb));
        MUST(p_cublasLtMatrixLayoutDestroy(lc));

        void *bufs[] = {a, b, c, a16, b16, c16, ah, bh, cf, dptrs, bias, d16};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
            MUST(p_cudaFree(bufs[i]));
    }
    MUST(p_cublasLtDestroy(lt));
    MUST(p_cublasDestroy_v2(h));
    MUST(p_cudaStreamDestroy(stream));
    print_result(ncalls, total_hash);
    return 0;
}

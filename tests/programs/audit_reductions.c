/*
 * Calls that do and do not let cuBLAS add split-k parts in the output type (a
 * "reduced precision reduction"): the library must flag exactly those that do
 * (REDUCED_PRECISION_REDUCTION), from the handle's math mode (cuBLAS) and from the
 * algorithm passed (cuBLASLt). The simulated GPU computes every one of them in full
 * precision, so each also verifies under the strict bounds.
 *
 *   audit_reductions [--trace]
 *
 * The calls, in order (m = 48, n = 40, k = 96; bf16 unless said otherwise):
 *   0 cublasGemmEx, default math mode                              allowed
 *   1 cublasGemmEx, CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION  not allowed
 *   2 cublasGemmEx, f16 A, B and C, default math mode              allowed
 *   3 cublasGemmEx, bf16 A and B, f32 C                            not allowed (f32 output)
 *   4 cublasLtMatmul, no algo (cuBLASLt chooses)                   allowed
 *   5 cublasLtMatmul, the heuristic's algo (one part)              not allowed
 *   6 cublasLtMatmul, algo split in 4, OUTPUT_TYPE reduction       allowed
 *   7 cublasLtMatmul, algo split in 4, INPLACE reduction           allowed
 *   8 cublasLtMatmul, algo split in 4, COMPUTE_TYPE reduction      not allowed
 *   9 cublasLtMatmul, algo split in 4, OUTPUT_TYPE, f32 D          not allowed (f32 output)
 *
 * Prints "calls N", "output-hash H" (audit_common.h) and "allowed I J ..." with the
 * indices of the calls that allow it.
 */
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "audit_common.h"

enum { M = 48, N = 40, K = 96 };

static cublasHandle_t handle;
static cublasLtHandle_t lt;
static cudaStream_t stream;
static uint64_t ncalls, total_hash = FNV_OFFSET, seed = 7;
static int trace;
static char allowed[256] = "allowed";

static void *upload(int type, size_t n) {
    size_t bytes = n * type_size(type);
    void *host = malloc(bytes), *dev;
    fill_random(host, type, n, seed++);
    MUST(cudaMalloc(&dev, bytes));
    MUST(cudaMemcpyAsync(dev, host, bytes, cudaMemcpyHostToDevice, stream));
    MUST(cudaStreamSynchronize(stream));
    free(host);
    return dev;
}

/* Counts a call, hashes its output and notes whether it allows the reduction. */
static void record(const char *entry, int allows, const void *out, size_t bytes) {
    unsigned char *host = malloc(bytes);
    MUST(cudaMemcpyAsync(host, out, bytes, cudaMemcpyDeviceToHost, stream));
    MUST(cudaStreamSynchronize(stream));
    uint64_t h = fnv1a(FNV_OFFSET, host, bytes);
    total_hash = fnv1a(total_hash, host, bytes);
    free(host);
    if (trace)
        printf("call %llu %s m=%d n=%d k=%d batch=1 hash=%016llx\n", (unsigned long long)ncalls, entry, M, N, K,
               (unsigned long long)h);
    if (allows) {
        size_t at = strlen(allowed);
        snprintf(allowed + at, sizeof allowed - at, " %llu", (unsigned long long)ncalls);
    }
    ncalls++;
}

static void gemm_ex(int in_type, int out_type, cublasMath_t math, int allows) {
    const float alpha = 0.75f, beta = 0.0f;
    void *a = upload(in_type, (size_t)M * K), *b = upload(in_type, (size_t)K * N);
    void *c = upload(out_type, (size_t)M * N);
    MUST(cublasSetMathMode(handle, math));
    MUST(cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, M, N, K, &alpha, a, in_type, M, b, in_type, K, &beta, c,
                      out_type, M, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    MUST(cublasSetMathMode(handle, CUBLAS_DEFAULT_MATH));
    record("cublasGemmEx", allows, c, (size_t)M * N * type_size(out_type));
    MUST(cudaFree(a));
    MUST(cudaFree(b));
    MUST(cudaFree(c));
}

/* algo: 0 none, 1 the heuristic's, 2 the heuristic's split in 4 with `scheme`. */
static void lt_matmul(int out_type, int algo, uint32_t scheme, int allows) {
    const float alpha = 0.75f, beta = 0.0f;
    void *a = upload(CUDA_R_16BF, (size_t)M * K), *b = upload(CUDA_R_16BF, (size_t)K * N);
    void *d = upload(out_type, (size_t)M * N);
    cublasLtMatrixLayout_t la, lb, ld;
    MUST(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, M, K, M));
    MUST(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, K, N, K));
    MUST(cublasLtMatrixLayoutCreate(&ld, out_type, M, N, M));
    cublasLtMatmulDesc_t desc;
    MUST(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasLtMatmulAlgo_t chosen;
    const cublasLtMatmulAlgo_t *use = NULL;
    if (algo) {
        cublasLtMatmulPreference_t pref;
        MUST(cublasLtMatmulPreferenceCreate(&pref));
        cublasLtMatmulHeuristicResult_t r;
        int got = 0;
        MUST(cublasLtMatmulAlgoGetHeuristic(lt, desc, la, lb, ld, ld, pref, 1, &r, &got));
        MUST(got != 1);
        MUST(cublasLtMatmulPreferenceDestroy(pref));
        chosen = r.algo;
        if (algo == 2) {
            const uint32_t parts = 4;
            MUST(cublasLtMatmulAlgoConfigSetAttribute(&chosen, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &parts, sizeof parts));
            MUST(cublasLtMatmulAlgoConfigSetAttribute(&chosen, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &scheme,
                                                      sizeof scheme));
        }
        use = &chosen;
    }
    MUST(cublasLtMatmul(lt, desc, &alpha, a, la, b, lb, &beta, d, ld, d, ld, use, NULL, 0, stream));
    MUST(cublasLtMatmulDescDestroy(desc));
    MUST(cublasLtMatrixLayoutDestroy(la));
    MUST(cublasLtMatrixLayoutDestroy(lb));
    MUST(cublasLtMatrixLayoutDestroy(ld));
    record("cublasLtMatmul", allows, d, (size_t)M * N * type_size(out_type));
    MUST(cudaFree(a));
    MUST(cudaFree(b));
    MUST(cudaFree(d));
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--trace")) {
            trace = 1;
        } else {
            fprintf(stderr, "usage: audit_reductions [--trace]\n");
            return 2;
        }
    }
    MUST(cudaStreamCreate(&stream));
    MUST(cublasCreate_v2(&handle));
    MUST(cublasSetStream_v2(handle, stream));
    MUST(cublasLtCreate(&lt));

    gemm_ex(CUDA_R_16BF, CUDA_R_16BF, CUBLAS_DEFAULT_MATH, 1);
    gemm_ex(CUDA_R_16BF, CUDA_R_16BF, CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION, 0);
    gemm_ex(CUDA_R_16F, CUDA_R_16F, CUBLAS_DEFAULT_MATH, 1);
    gemm_ex(CUDA_R_16BF, CUDA_R_32F, CUBLAS_DEFAULT_MATH, 0);
    lt_matmul(CUDA_R_16BF, 0, 0, 1);
    lt_matmul(CUDA_R_16BF, 1, 0, 0);
    lt_matmul(CUDA_R_16BF, 2, CUBLASLT_REDUCTION_SCHEME_OUTPUT_TYPE, 1);
    lt_matmul(CUDA_R_16BF, 2, CUBLASLT_REDUCTION_SCHEME_INPLACE, 1);
    lt_matmul(CUDA_R_16BF, 2, CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE, 0);
    lt_matmul(CUDA_R_32F, 2, CUBLASLT_REDUCTION_SCHEME_OUTPUT_TYPE, 0);

    MUST(cublasLtDestroy(lt));
    MUST(cublasDestroy_v2(handle));
    MUST(cudaStreamDestroy(stream));
    printf("%s\n", allowed);
    print_result(ncalls, total_hash);
    return 0;
}

/*
 * Benchmark program for scripts/bench-hook-ab.sh (PROGRAM=lt-fresh or lt-reuse): issues
 * N cublasLtMatmul calls (f32, m = n = k = 16, a bias epilogue) on the default stream,
 * twice (a warm-up round, then the measured one), and prints the time the calling
 * thread spent per call of the second round, the descriptor and layout calls around
 * each matmul included.
 *
 *   lt_cost N FRESH
 *
 * FRESH = 1: a matmul descriptor (TRANSA, TRANSB, EPILOGUE, BIAS_POINTER set) and three
 * layouts are created before and destroyed after every call, as PyTorch does; 0: they
 * are made once and reused. Output: "enqueue_ns X".
 */
#include <cublasLt.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#define MUST(x) do { long r_ = (long)(x); if (r_) { fprintf(stderr, "%s failed: %ld\n", #x, r_); exit(2); } } while (0)
static double now_ns(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e9 + t.tv_nsec; }
int main(int argc, char **argv) {
    int calls = atoi(argv[1]), fresh = atoi(argv[2]);
    int m = 16, n = 16, k = 16;
    cublasLtHandle_t lt; MUST(cublasLtCreate(&lt));
    float *a, *b, *c, *bias;
    MUST(cudaMalloc((void **)&a, 4 * m * k)); MUST(cudaMalloc((void **)&b, 4 * k * n));
    MUST(cudaMalloc((void **)&c, 4 * m * n)); MUST(cudaMalloc((void **)&bias, 4 * m));
    float alpha = 1, beta = 0;
    cublasLtMatmulDesc_t d = 0; cublasLtMatrixLayout_t la = 0, lb = 0, lc = 0;
    double t0 = 0, total = 0;
    for (int rep = 0; rep < 2; rep++) {
        total = 0;
        for (int i = 0; i < calls; i++) {
            t0 = now_ns();
            if (fresh || !d) {
                MUST(cublasLtMatmulDescCreate(&d, CUBLAS_COMPUTE_32F, CUDA_R_32F));
                cublasOperation_t t = CUBLAS_OP_N;
                MUST(cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_TRANSA, &t, sizeof t));
                MUST(cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_TRANSB, &t, sizeof t));
                cublasLtEpilogue_t ep = CUBLASLT_EPILOGUE_BIAS;
                MUST(cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_EPILOGUE, &ep, sizeof ep));
                MUST(cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
                MUST(cublasLtMatrixLayoutCreate(&la, CUDA_R_32F, m, k, m));
                MUST(cublasLtMatrixLayoutCreate(&lb, CUDA_R_32F, k, n, k));
                MUST(cublasLtMatrixLayoutCreate(&lc, CUDA_R_32F, m, n, m));
            }
            MUST(cublasLtMatmul(lt, d, &alpha, a, la, b, lb, &beta, c, lc, c, lc, NULL, NULL, 0, 0));
            if (fresh) {
                MUST(cublasLtMatrixLayoutDestroy(la)); MUST(cublasLtMatrixLayoutDestroy(lb));
                MUST(cublasLtMatrixLayoutDestroy(lc)); MUST(cublasLtMatmulDescDestroy(d)); d = 0;
            }
            total += now_ns() - t0;
        }
    }
    MUST(cudaDeviceSynchronize());
    printf("enqueue_ns %.1f\n", total / calls);
    return 0;
}

/*
 * GEMMs captured into a CUDA graph, as PyTorch's CUDA graphs and vLLM's decode
 * path make them: cublasSgemm_v2, cublasGemmEx and cublasLtMatmul issued while
 * the stream captures (global mode), the graph launched three times on new
 * inputs, then one ordinary GEMM. Under libmmaudit.so the capture must still
 * work (no synchronisation, allocation or stray work on the capturing stream)
 * and the results must be the same; the captured calls are in the ledger as
 * capture records and every GEMM of every launch as a replayed call.
 *
 *   audit_graph
 *
 * Prints "calls N" (API calls: the three captured ones and the ordinary one),
 * "captured N" and "output-hash H" (audit_common.h); exits 0, or 2 on failure.
 */
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "audit_common.h"

int main(void) {
    const int m = 32, n = 16, k = 24;
    cudaStream_t s;
    cublasHandle_t h;
    cublasLtHandle_t lt;
    MUST(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    MUST(cublasCreate_v2(&h));
    MUST(cublasSetStream_v2(h, s));
    MUST(cublasLtCreate(&lt));

    float *a, *b, *c, *ha = malloc((size_t)m * k * 4), *hb = malloc((size_t)k * n * 4);
    void *a16, *b16, *c16, *d16;
    uint16_t *ha16 = malloc((size_t)m * k * 2), *hb16 = malloc((size_t)k * n * 2);
    MUST(cudaMalloc((void **)&a, (size_t)m * k * 4));
    MUST(cudaMalloc((void **)&b, (size_t)k * n * 4));
    MUST(cudaMalloc((void **)&c, (size_t)m * n * 4));
    MUST(cudaMalloc(&a16, (size_t)m * k * 2));
    MUST(cudaMalloc(&b16, (size_t)k * n * 2));
    MUST(cudaMalloc(&c16, (size_t)m * n * 2));
    MUST(cudaMalloc(&d16, (size_t)m * n * 2));
    fill_random(hb, CUDA_R_32F, (size_t)k * n, 2);
    fill_random(hb16, CUDA_R_16BF, (size_t)k * n, 3);
    MUST(cudaMemcpyAsync(b, hb, (size_t)k * n * 4, cudaMemcpyHostToDevice, s));
    MUST(cudaMemcpyAsync(b16, hb16, (size_t)k * n * 2, cudaMemcpyHostToDevice, s));
    MUST(cudaMemsetAsync(c16, 0, (size_t)m * n * 2, s));
    MUST(cudaStreamSynchronize(s));

    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, lc;
    MUST(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    MUST(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, (uint64_t)m, (uint64_t)k, m));
    MUST(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, (uint64_t)k, (uint64_t)n, k));
    MUST(cublasLtMatrixLayoutCreate(&lc, CUDA_R_16BF, (uint64_t)m, (uint64_t)n, m));

    const float one = 1.0f, half = 0.5f, zero = 0.0f;
    uint64_t calls = 0, captured = 0, hash = FNV_OFFSET;
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    MUST(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    MUST(cublasSgemm_v2(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, a, m, b, k, &zero, c, m));
    MUST(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, a16, CUDA_R_16BF, m, b16, CUDA_R_16BF, k, &zero, c16,
                      CUDA_R_16BF, m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    MUST(cublasLtMatmul(lt, desc, &one, a16, la, b16, lb, &half, c16, lc, d16, lc, NULL, NULL, 0, s));
    MUST(cudaStreamEndCapture(s, &graph));
    calls += 3;
    captured += 3;
    MUST(cudaGraphInstantiate(&exec, graph, 0));

    float *out = malloc((size_t)m * n * 4);
    for (int launch = 0; launch < 3; launch++) {
        fill_random(ha, CUDA_R_32F, (size_t)m * k, 10 + (uint64_t)launch);
        fill_random(ha16, CUDA_R_16BF, (size_t)m * k, 20 + (uint64_t)launch);
        MUST(cudaMemcpyAsync(a, ha, (size_t)m * k * 4, cudaMemcpyHostToDevice, s));
        MUST(cudaMemcpyAsync(a16, ha16, (size_t)m * k * 2, cudaMemcpyHostToDevice, s));
        MUST(cudaGraphLaunch(exec, s));
        MUST(cudaMemcpyAsync(out, c, (size_t)m * n * 4, cudaMemcpyDeviceToHost, s));
        MUST(cudaStreamSynchronize(s));
        hash = fnv1a(hash, out, (size_t)m * n * 4);
        MUST(cudaMemcpyAsync(out, d16, (size_t)m * n * 2, cudaMemcpyDeviceToHost, s));
        MUST(cudaStreamSynchronize(s));
        hash = fnv1a(hash, out, (size_t)m * n * 2);
    }
    /* An ordinary call after the graph. */
    MUST(cublasSgemm_v2(h, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &one, a, k, b, k, &zero, c, m));
    calls++;
    MUST(cudaMemcpyAsync(out, c, (size_t)m * n * 4, cudaMemcpyDeviceToHost, s));
    MUST(cudaStreamSynchronize(s));
    hash = fnv1a(hash, out, (size_t)m * n * 4);

    MUST(cudaGraphExecDestroy(exec));
    MUST(cudaGraphDestroy(graph));
    MUST(cublasLtMatmulDescDestroy(desc));
    MUST(cublasLtMatrixLayoutDestroy(la));
    MUST(cublasLtMatrixLayoutDestroy(lb));
    MUST(cublasLtMatrixLayoutDestroy(lc));
    MUST(cublasLtDestroy(lt));
    MUST(cublasDestroy_v2(h));
    printf("captured %llu\n", (unsigned long long)captured);
    print_result(calls, hash);
    return 0;
}

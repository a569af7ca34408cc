/*
 * Grouped batched GEMMs, as SGLang's mixture-of-experts layers issue them:
 * cublasSgemmGroupedBatched with two groups (2 and 1 problems) and
 * cublasGemmGroupedBatchedEx in bf16 with two groups (1 and 2 problems), each group
 * with its own shape, between two ordinary cublasSgemm_v2 calls.
 *
 *   audit_grouped
 *
 * Prints one "group I m=M n=N k=K batch=B" line per group (I counts ledger records:
 * the ordinary calls take one each), then "calls N" (API calls) and "output-hash H"
 * (audit_common.h). Exits 0, or 2 on failure.
 */
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "audit_common.h"

static uint64_t hash = FNV_OFFSET, seed = 1, record;

static void *upload(int type, size_t n) {
    size_t bytes = n * type_size(type);
    void *host = malloc(bytes), *dev;
    fill_random(host, type, n, seed++);
    MUST(cudaMalloc(&dev, bytes));
    MUST(cudaMemcpy(dev, host, bytes, cudaMemcpyHostToDevice));
    free(host);
    return dev;
}

static void hash_back(const void *dev, size_t bytes) {
    void *host = malloc(bytes);
    MUST(cudaMemcpy(host, dev, bytes, cudaMemcpyDeviceToHost));
    hash = fnv1a(hash, host, bytes);
    free(host);
}

static void plain_sgemm(cublasHandle_t h) {
    const int m = 16, n = 8, k = 16;
    const float one = 1.0f, zero = 0.0f;
    float *a = upload(CUDA_R_32F, (size_t)m * k), *b = upload(CUDA_R_32F, (size_t)k * n);
    float *c = upload(CUDA_R_32F, (size_t)m * n);
    MUST(cublasSgemm_v2(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, a, m, b, k, &zero, c, m));
    hash_back(c, (size_t)m * n * 4);
    record++;
}

/* Two groups of sizes[g] problems, group g of shape m[g] x n[g] x k[g], op(A) = T. */
static void grouped(cublasHandle_t h, int ex) {
    const cublasOperation_t ta[2] = {CUBLAS_OP_T, CUBLAS_OP_T}, tb[2] = {CUBLAS_OP_N, CUBLAS_OP_N};
    const int m[2] = {24, 16}, n[2] = {4, 8}, k[2] = {32, 48};
    const int sizes[2] = {ex ? 1 : 2, ex ? 2 : 1};
    const int lda[2] = {k[0], k[1]}, ldb[2] = {k[0], k[1]}, ldc[2] = {m[0], m[1]};
    const float alpha[2] = {1.0f, 0.5f}, beta[2] = {0.0f, 0.25f};
    int type = ex ? CUDA_R_16BF : CUDA_R_32F, ctype = ex ? CUDA_R_16BF : CUDA_R_32F;
    void **pa = NULL, **pb = NULL, **pc = NULL;
    int total = sizes[0] + sizes[1];
    /* problem p belongs to group g: each gets matrices of its group's sizes */
    void *ha[3], *hb[3], *hc[3];
    for (int p = 0, g = 0, left = sizes[0]; p < total; p++, left--) {
        if (left == 0)
            g++, left = sizes[g];
        ha[p] = upload(type, (size_t)m[g] * k[g]);
        hb[p] = upload(type, (size_t)k[g] * n[g]);
        hc[p] = upload(ctype, (size_t)m[g] * n[g]);
    }
    MUST(cudaMalloc((void **)&pa, sizeof(void *) * 3));
    MUST(cudaMalloc((void **)&pb, sizeof(void *) * 3));
    MUST(cudaMalloc((void **)&pc, sizeof(void *) * 3));
    MUST(cudaMemcpy(pa, ha, sizeof(void *) * (size_t)total, cudaMemcpyHostToDevice));
    MUST(cudaMemcpy(pb, hb, sizeof(void *) * (size_t)total, cudaMemcpyHostToDevice));
    MUST(cudaMemcpy(pc, hc, sizeof(void *) * (size_t)total, cudaMemcpyHostToDevice));
    if (ex)
        MUST(cublasGemmGroupedBatchedEx(h, ta, tb, m, n, k, alpha, (const void *const *)pa, CUDA_R_16BF, lda,
                                        (const void *const *)pb, CUDA_R_16BF, ldb, beta, (void *const *)pc,
                                        CUDA_R_16BF, ldc, 2, sizes, CUBLAS_COMPUTE_32F));
    else
        MUST(cublasSgemmGroupedBatched(h, ta, tb, m, n, k, alpha, (const float *const *)pa, lda,
                                       (const float *const *)pb, ldb, beta, (float *const *)pc, ldc, 2, sizes));
    for (int p = 0, g = 0, left = sizes[0]; p < total; p++, left--) {
        if (left == 0)
            g++, left = sizes[g];
        hash_back(hc[p], (size_t)m[g] * n[g] * type_size(ctype));
    }
    for (int g = 0; g < 2; g++)
        printf("group %llu m=%d n=%d k=%d batch=%d\n", (unsigned long long)record++, m[g], n[g], k[g], sizes[g]);
}

int main(void) {
    cublasHandle_t h;
    MUST(cublasCreate_v2(&h));
    plain_sgemm(h);
    grouped(h, 0);
    grouped(h, 1);
    plain_sgemm(h);
    MUST(cublasDestroy_v2(h));
    print_result(4, hash);
    return 0;
}

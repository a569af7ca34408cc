/*
 * Grouped batched GEMMs, as SGLang's mixture-of-experts layers issue them:
 * cublasSgemmGroupedBatched with two groups (2 and 1 problems) and
 * cublasGemmGroupedBatchedEx in bf16 with two groups (1 and 2 problems), each group
 * with its own shape, between two ordinary cublasSgemm_v2 calls. With --wide, then
 * cublasDgemmGroupedBatched and the _64 forms of the three (f32, bf16, f64), and one
 * more cublasSgemm_v2.
 *
 *   audit_grouped [--wide]
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

enum kind { SGEMM, EX_BF16, DGEMM, SGEMM_64, EX_BF16_64, DGEMM_64 };

/* Two groups of sizes[g] problems, group g of shape m[g] x n[g] x k[g], op(A) = T,
 * through the entry point of `kind`. */
static void grouped(cublasHandle_t h, enum kind kind) {
    const cublasOperation_t ta[2] = {CUBLAS_OP_T, CUBLAS_OP_T}, tb[2] = {CUBLAS_OP_N, CUBLAS_OP_N};
    const int m[2] = {24, 16}, n[2] = {4, 8}, k[2] = {32, 48};
    int ex = kind == EX_BF16 || kind == EX_BF16_64, dbl = kind == DGEMM || kind == DGEMM_64;
    const int sizes[2] = {ex ? 1 : 2, ex ? 2 : 1};
    const int lda[2] = {k[0], k[1]}, ldb[2] = {k[0], k[1]}, ldc[2] = {m[0], m[1]};
    const int64_t m64[2] = {m[0], m[1]}, n64[2] = {n[0], n[1]}, k64[2] = {k[0], k[1]};
    const int64_t sizes64[2] = {sizes[0], sizes[1]}, ldc64[2] = {ldc[0], ldc[1]};
    const float alpha[2] = {1.0f, 0.5f}, beta[2] = {0.0f, 0.25f};
    const double d_alpha[2] = {1.0, 0.5}, d_beta[2] = {0.0, 0.25};
    int type = ex ? CUDA_R_16BF : dbl ? CUDA_R_64F : CUDA_R_32F;
    void **pa = NULL, **pb = NULL, **pc = NULL;
    int total = sizes[0] + sizes[1];
    /* problem p belongs to group g: each gets matrices of its group's sizes */
    void *ha[3], *hb[3], *hc[3];
    for (int p = 0, g = 0, left = sizes[0]; p < total; p++, left--) {
        if (left == 0)
            g++, left = sizes[g];
        ha[p] = upload(type, (size_t)m[g] * k[g]);
        hb[p] = upload(type, (size_t)k[g] * n[g]);
        hc[p] = upload(type, (size_t)m[g] * n[g]);
    }
    MUST(cudaMalloc((void **)&pa, sizeof(void *) * 3));
    MUST(cudaMalloc((void **)&pb, sizeof(void *) * 3));
    MUST(cudaMalloc((void **)&pc, sizeof(void *) * 3));
    MUST(cudaMemcpy(pa, ha, sizeof(void *) * (size_t)total, cudaMemcpyHostToDevice));
    MUST(cudaMemcpy(pb, hb, sizeof(void *) * (size_t)total, cudaMemcpyHostToDevice));
    MUST(cudaMemcpy(pc, hc, sizeof(void *) * (size_t)total, cudaMemcpyHostToDevice));
    const void *const *ca = (const void *const *)pa, *const *cb = (const void *const *)pb;
    void *const *cc = (void *const *)pc;
    switch (kind) {
    case SGEMM:
        MUST(cublasSgemmGroupedBatched(h, ta, tb, m, n, k, alpha, (const float *const *)ca, lda,
                                       (const float *const *)cb, ldb, beta, (float *const *)cc, ldc, 2, sizes));
        break;
    case EX_BF16:
        MUST(cublasGemmGroupedBatchedEx(h, ta, tb, m, n, k, alpha, ca, CUDA_R_16BF, lda, cb, CUDA_R_16BF, ldb, beta,
                                        cc, CUDA_R_16BF, ldc, 2, sizes, CUBLAS_COMPUTE_32F));
        break;
    case DGEMM:
        MUST(cublasDgemmGroupedBatched(h, ta, tb, m, n, k, d_alpha, (const double *const *)ca, lda,
                                       (const double *const *)cb, ldb, d_beta, (double *const *)cc, ldc, 2, sizes));
        break;
    case SGEMM_64:
        MUST(cublasSgemmGroupedBatched_64(h, ta, tb, m64, n64, k64, alpha, (const float *const *)ca, k64,
                                          (const float *const *)cb, k64, beta, (float *const *)cc, ldc64, 2,
                                          sizes64));
        break;
    case EX_BF16_64:
        MUST(cublasGemmGroupedBatchedEx_64(h, ta, tb, m64, n64, k64, alpha, ca, CUDA_R_16BF, k64, cb, CUDA_R_16BF,
                                           k64, beta, cc, CUDA_R_16BF, ldc64, 2, sizes64, CUBLAS_COMPUTE_32F));
        break;
    case DGEMM_64:
        MUST(cublasDgemmGroupedBatched_64(h, ta, tb, m64, n64, k64, d_alpha, (const double *const *)ca, k64,
                                          (const double *const *)cb, k64, d_beta, (double *const *)cc, ldc64, 2,
                                          sizes64));
        break;
    }
    for (int p = 0, g = 0, left = sizes[0]; p < total; p++, left--) {
        if (left == 0)
            g++, left = sizes[g];
        hash_back(hc[p], (size_t)m[g] * n[g] * type_size(type));
    }
    for (int g = 0; g < 2; g++)
        printf("group %llu m=%d n=%d k=%d batch=%d\n", (unsigned long long)record++, m[g], n[g], k[g], sizes[g]);
}

int main(int argc, char **argv) {
    int wide = argc == 2 && !strcmp(argv[1], "--wide");
    if (argc > 1 && !wide) {
        fprintf(stderr, "usage: audit_grouped [--wide]\n");
        return 2;
    }
    cublasHandle_t h;
    MUST(cublasCreate_v2(&h));
    plain_sgemm(h);
    grouped(h, SGEMM);
    grouped(h, EX_BF16);
    plain_sgemm(h);
    if (wide) {
        for (enum kind kind = DGEMM; kind <= DGEMM_64; kind++)
            grouped(h, kind);
        plain_sgemm(h);
    }
    MUST(cublasDestroy_v2(h));
    print_result(wide ? 9 : 4, hash);
    return 0;
}

/*
 * GEMM calls that the library rejects, between valid ones: every hooked call must
 * be ledgered once, with consecutive indices, and a rejected one flagged REJECTED
 * (nothing computed, never sampled, no FLOPs claimed), whether or not the
 * interposer could describe it and whether or not its sample had already been
 * prepared (beta != 0: C entries gathered before the call).
 *
 *   audit_rejected [--trace]                 the calls below
 *   audit_rejected --unmodelled [--trace]    calls outside protocol v1's model (see
 *                                            unmodelled() below)
 *
 * The calls, in order:
 *   30 valid cublasSgemm_v2 (every fifth with beta != 0)
 *   cublasGemmEx, f32 A x f16 B (no such combination: NOT_SUPPORTED), beta 0
 *   the same with beta != 0
 *   cublasSgemm_v2 with lda < m (INVALID_VALUE)
 *   cublasLtMatmul, i8 x i8 -> i32 with a RELU epilogue (NOT_SUPPORTED), beta != 0
 *   cublasGemmStridedBatchedEx with batch count -1 (INVALID_VALUE)
 *   cublasSgemm_v2 with m = -3 (INVALID_VALUE)
 *   10 valid cublasSgemm_v2
 *
 * Prints, besides "calls N" and "output-hash H" (audit_common.h), the line
 * "rejected I J ..." with the indices of the calls that returned an error status,
 * "unmodelled I J ..." with those it made outside protocol v1's model on purpose
 * (--unmodelled), and, with --trace, "call I ENTRY m=.. n=.. k=.. batch=.. status=S"
 * per call.
 * Exits 0 (an error status is what it wants), 2 on a setup failure.
 */
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "audit_common.h"

static cublasHandle_t handle;
static cublasLtHandle_t lt;
static cudaStream_t stream;
static uint64_t ncalls, total_hash = FNV_OFFSET, seed = 1;
static int trace;
static char rejected[4096] = "rejected";
static char unmodelled_calls[4096] = "unmodelled";

/* Notes that the next call is outside the model on purpose. */
static void outside_model(void) {
    size_t at = strlen(unmodelled_calls);
    snprintf(unmodelled_calls + at, sizeof unmodelled_calls - at, " %llu", (unsigned long long)ncalls);
}

static void *upload(int type, size_t n) {
    size_t bytes = n * type_size(type);
    void *host = malloc(bytes ? bytes : 1), *dev;
    fill_random(host, type, n, seed++);
    MUST(cudaMalloc(&dev, bytes ? bytes : 1));
    MUST(cudaMemcpyAsync(dev, host, bytes, cudaMemcpyHostToDevice, stream));
    MUST(cudaStreamSynchronize(stream));
    free(host);
    return dev;
}

/* Counts a call, hashes its output buffer as copied back, and notes its status. */
static void record(const char *entry, long long m, long long n, long long k, long long batch, int status,
                   const void *out, size_t bytes) {
    unsigned char *host = malloc(bytes ? bytes : 1);
    MUST(cudaMemcpyAsync(host, out, bytes, cudaMemcpyDeviceToHost, stream));
    MUST(cudaStreamSynchronize(stream));
    uint64_t h = fnv1a(FNV_OFFSET, host, bytes);
    total_hash = fnv1a(total_hash, host, bytes);
    free(host);
    if (trace)
        printf("call %llu %s m=%lld n=%lld k=%lld batch=%lld hash=%016llx status=%d\n", (unsigned long long)ncalls, entry,
               m, n, k, batch, (unsigned long long)h, status);
    if (status != CUBLAS_STATUS_SUCCESS) {
        size_t at = strlen(rejected);
        snprintf(rejected + at, sizeof rejected - at, " %llu", (unsigned long long)ncalls);
    }
    ncalls++;
}

static void sgemm(int m, int n, int k, int lda, float beta) {
    const float alpha = 0.75f;
    void *a = upload(CUDA_R_32F, (size_t)(lda > 0 ? lda : 1) * (size_t)(k > 0 ? k : 1));
    void *b = upload(CUDA_R_32F, (size_t)(k > 0 ? k : 1) * (size_t)(n > 0 ? n : 1));
    void *c = upload(CUDA_R_32F, (size_t)(m > 0 ? m : 1) * (size_t)(n > 0 ? n : 1));
    int s = cublasSgemm_v2(handle, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &alpha, a, lda, b, k, &beta, c, m > 0 ? m : 1);
    record("cublasSgemm_v2", m, n, k, 1, s, c, (size_t)(m > 0 ? m : 1) * (size_t)(n > 0 ? n : 1) * 4);
    MUST(cudaFree(a));
    MUST(cudaFree(b));
    MUST(cudaFree(c));
}

/* f32 A x f16 B: cuBLAS has no such combination. */
static void mixed_gemm_ex(float beta) {
    const int m = 12, n = 6, k = 10;
    const float alpha = 1.0f;
    void *a = upload(CUDA_R_32F, (size_t)m * k), *b = upload(CUDA_R_16F, (size_t)k * n);
    void *c = upload(CUDA_R_32F, (size_t)m * n);
    int s = cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &alpha, a, CUDA_R_32F, m, b, CUDA_R_16F, k, &beta,
                         c, CUDA_R_32F, m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    record("cublasGemmEx", m, n, k, 1, s, c, (size_t)m * n * 4);
    MUST(cudaFree(a));
    MUST(cudaFree(b));
    MUST(cudaFree(c));
}

/* An integer GEMM with an epilogue: cuBLASLt has none for integer output. */
static void int8_relu_lt(void) {
    const int64_t m = 8, n = 4, k = 16;
    void *a = upload(CUDA_R_8I, (size_t)(m * k)), *b = upload(CUDA_R_8I, (size_t)(k * n));
    void *c = upload(CUDA_R_32I, (size_t)(m * n));
    cublasLtMatrixLayout_t la, lb, lc;
    MUST(cublasLtMatrixLayoutCreate(&la, CUDA_R_8I, (uint64_t)m, (uint64_t)k, m));
    MUST(cublasLtMatrixLayoutCreate(&lb, CUDA_R_8I, (uint64_t)k, (uint64_t)n, k));
    MUST(cublasLtMatrixLayoutCreate(&lc, CUDA_R_32I, (uint64_t)m, (uint64_t)n, m));
    cublasLtMatmulDesc_t desc;
    MUST(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32I, CUDA_R_32I));
    uint32_t epilogue = CUBLASLT_EPILOGUE_RELU;
    MUST(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue));
    const int32_t alpha = 2, beta = 3;
    int s = cublasLtMatmul(lt, desc, &alpha, a, la, b, lb, &beta, c, lc, c, lc, NULL, NULL, 0, stream);
    record("cublasLtMatmul", m, n, k, 1, s, c, (size_t)(m * n) * 4);
    MUST(cublasLtMatmulDescDestroy(desc));
    MUST(cublasLtMatrixLayoutDestroy(la));
    MUST(cublasLtMatrixLayoutDestroy(lb));
    MUST(cublasLtMatrixLayoutDestroy(lc));
    MUST(cudaFree(a));
    MUST(cudaFree(b));
    MUST(cudaFree(c));
}

static void negative_batch(void) {
    const int m = 4, n = 4, k = 4;
    const float alpha = 1.0f, beta = 0.0f;
    void *a = upload(CUDA_R_32F, 16), *b = upload(CUDA_R_32F, 16), *c = upload(CUDA_R_32F, 16);
    int s = cublasGemmStridedBatchedEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &alpha, a, CUDA_R_32F, m, 16, b,
                                       CUDA_R_32F, k, 16, &beta, c, CUDA_R_32F, m, 16, -1, CUBLAS_COMPUTE_32F,
                                       CUBLAS_GEMM_DEFAULT);
    record("cublasGemmStridedBatchedEx", m, n, k, -1, s, c, 64);
    MUST(cudaFree(a));
    MUST(cudaFree(b));
    MUST(cudaFree(c));
}

/* A complex GEMM: protocol v1 has no complex types. */
static void complex_gemm_ex(void) {
    const int m = 6, n = 4, k = 5;
    const float alpha[2] = {1.0f, 0.0f}, beta[2] = {0.0f, 0.0f};
    void *a = upload(CUDA_R_32F, 2 * (size_t)m * k), *b = upload(CUDA_R_32F, 2 * (size_t)k * n);
    void *c = upload(CUDA_R_32F, 2 * (size_t)m * n);
    outside_model();
    int s = cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, alpha, a, CUDA_C_32F, m, b, CUDA_C_32F, k, beta, c,
                         CUDA_C_32F, m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    record("cublasGemmEx", m, n, k, 1, s, c, 2 * (size_t)m * n * 4);
    MUST(cudaFree(a));
    MUST(cudaFree(b));
    MUST(cudaFree(c));
}

/* A GEMM with an emulated compute type protocol v1 has no code for. */
static void emulated_compute(void) {
    const int m = 6, n = 4, k = 5;
    const float alpha = 1.0f, beta = 0.0f;
    void *a = upload(CUDA_R_32F, (size_t)m * k), *b = upload(CUDA_R_32F, (size_t)k * n);
    void *c = upload(CUDA_R_32F, (size_t)m * n);
    outside_model();
    int s = cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &alpha, a, CUDA_R_32F, m, b, CUDA_R_32F, k, &beta,
                         c, CUDA_R_32F, m, CUBLAS_COMPUTE_32F_EMULATED_16BFX9, CUBLAS_GEMM_DEFAULT);
    record("cublasGemmEx", m, n, k, 1, s, c, (size_t)m * n * 4);
    MUST(cudaFree(a));
    MUST(cudaFree(b));
    MUST(cudaFree(c));
}

/* An f32 cuBLASLt call with an epilogue, a layout order or a batch mode outside the
 * model. */
static void lt_outside(uint32_t epilogue, int32_t order, int64_t batch, int32_t batch_mode) {
    const int64_t m = 8, n = 6, k = 5;
    int64_t lda = order == CUBLASLT_ORDER_COL32 ? 32 * m : m;
    int64_t sa = lda * k, sb = k * n, sc = order == CUBLASLT_ORDER_COL32 ? 32 * m * n : m * n;
    void *a = upload(CUDA_R_32F, (size_t)(sa * batch)), *b = upload(CUDA_R_32F, (size_t)(sb * batch));
    void *c = upload(CUDA_R_32F, (size_t)(sc * batch));
    void *aux = upload(CUDA_R_32F, (size_t)(m * n * batch));
    cublasLtMatrixLayout_t la, lb, lc;
    MUST(cublasLtMatrixLayoutCreate(&la, CUDA_R_32F, (uint64_t)m, (uint64_t)k, lda));
    MUST(cublasLtMatrixLayoutCreate(&lb, CUDA_R_32F, (uint64_t)k, (uint64_t)n, k));
    MUST(cublasLtMatrixLayoutCreate(&lc, CUDA_R_32F, (uint64_t)m, (uint64_t)n, order == CUBLASLT_ORDER_COL32 ? 32 * m : m));
    MUST(cublasLtMatrixLayoutSetAttribute(la, CUBLASLT_MATRIX_LAYOUT_ORDER, &order, sizeof order));
    MUST(cublasLtMatrixLayoutSetAttribute(lc, CUBLASLT_MATRIX_LAYOUT_ORDER, &order, sizeof order));
    if (batch_mode != CUBLASLT_BATCH_MODE_STRIDED) {
        cublasLtMatrixLayout_t ls[3] = {la, lb, lc};
        for (int i = 0; i < 3; i++)
            MUST(cublasLtMatrixLayoutSetAttribute(ls[i], CUBLASLT_MATRIX_LAYOUT_BATCH_MODE, &batch_mode,
                                                  sizeof batch_mode));
    }
    if (batch > 1) {
        int32_t count = (int32_t)batch;
        cublasLtMatrixLayout_t ls[3] = {la, lb, lc};
        int64_t strides[3] = {sa, sb, sc};
        for (int i = 0; i < 3; i++) {
            MUST(cublasLtMatrixLayoutSetAttribute(ls[i], CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof count));
            MUST(cublasLtMatrixLayoutSetAttribute(ls[i], CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &strides[i],
                                                  sizeof strides[i]));
        }
    }
    cublasLtMatmulDesc_t desc;
    MUST(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    MUST(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue));
    MUST(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, sizeof aux));
    int64_t aux_ld = m;
    MUST(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &aux_ld, sizeof aux_ld));
    const float alpha = 1.0f, beta = 0.0f;
    outside_model();
    int s = cublasLtMatmul(lt, desc, &alpha, a, la, b, lb, &beta, c, lc, c, lc, NULL, NULL, 0, stream);
    record("cublasLtMatmul", m, n, k, batch, s, c, (size_t)(sc * batch) * 4);
    MUST(cublasLtMatmulDescDestroy(desc));
    MUST(cublasLtMatrixLayoutDestroy(la));
    MUST(cublasLtMatrixLayoutDestroy(lb));
    MUST(cublasLtMatrixLayoutDestroy(lc));
    MUST(cudaFree(a));
    MUST(cudaFree(b));
    MUST(cudaFree(c));
    MUST(cudaFree(aux));
}

/* A valid f32 GEMM whose host alpha is not finite: the library computes it, protocol
 * v1 records only finite host scalars. */
static void nonfinite_alpha(float alpha) {
    const int m = 6, n = 4, k = 5;
    const float beta = 0.0f;
    void *a = upload(CUDA_R_32F, (size_t)m * k), *b = upload(CUDA_R_32F, (size_t)k * n);
    void *c = upload(CUDA_R_32F, (size_t)m * n);
    outside_model();
    int s = cublasSgemm_v2(handle, CUBLAS_OP_N, CUBLAS_OP_T, m, n, k, &alpha, a, m, b, n, &beta, c, m);
    record("cublasSgemm_v2", m, n, k, 1, s, c, (size_t)m * n * 4);
    MUST(cudaFree(a));
    MUST(cudaFree(b));
    MUST(cudaFree(c));
}

/* CUBLAS_OP_CONJG on real data is op N: described exactly (the simulator, as cuBLAS
 * for GEMM, refuses it). */
static void conjg_sgemm(void) {
    const int m = 6, n = 4, k = 5;
    const float alpha = 1.0f, beta = 0.0f;
    void *a = upload(CUDA_R_32F, (size_t)m * k), *b = upload(CUDA_R_32F, (size_t)k * n);
    void *c = upload(CUDA_R_32F, (size_t)m * n);
    int s = cublasSgemm_v2(handle, CUBLAS_OP_CONJG, CUBLAS_OP_N, m, n, k, &alpha, a, m, b, k, &beta, c, m);
    record("cublasSgemm_v2", m, n, k, 1, s, c, (size_t)m * n * 4);
    MUST(cudaFree(a));
    MUST(cudaFree(b));
    MUST(cudaFree(c));
}

/* An fp8 cuBLASLt call (e4m3 A and B, bf16 D) whose A and B scales use the given
 * cublasLtMatmulMatrixScale_t: SCALAR_32F takes one f32 each, OUTER_VEC_32F one per
 * row (A) or column (B) of D, the block modes a table the simulator does not model
 * (it refuses them). Protocol v1 models the first two. */
static void lt_fp8_scaled(int32_t mode) {
    const int64_t m = 16, n = 8, k = 32;
    void *a = upload(CUDA_R_8F_E4M3, (size_t)(k * m)), *b = upload(CUDA_R_8F_E4M3, (size_t)(k * n));
    void *c = upload(CUDA_R_16BF, (size_t)(m * n));
    int vec = mode == CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F;
    float *ha = malloc((size_t)m * 4), *hb = malloc((size_t)n * 4);
    for (int64_t i = 0; i < m; i++)
        ha[i] = 0.25f * (float)(i % 4 + 1);
    for (int64_t j = 0; j < n; j++)
        hb[j] = 0.5f * (float)(j % 3 + 1);
    void *sa, *sb;
    MUST(cudaMalloc(&sa, (size_t)m * 4));
    MUST(cudaMalloc(&sb, (size_t)n * 4));
    MUST(cudaMemcpy(sa, ha, (size_t)(vec ? m : 1) * 4, cudaMemcpyHostToDevice));
    MUST(cudaMemcpy(sb, hb, (size_t)(vec ? n : 1) * 4, cudaMemcpyHostToDevice));
    cublasLtMatrixLayout_t la, lb, lc;
    MUST(cublasLtMatrixLayoutCreate(&la, CUDA_R_8F_E4M3, (uint64_t)k, (uint64_t)m, k));
    MUST(cublasLtMatrixLayoutCreate(&lb, CUDA_R_8F_E4M3, (uint64_t)k, (uint64_t)n, k));
    MUST(cublasLtMatrixLayoutCreate(&lc, CUDA_R_16BF, (uint64_t)m, (uint64_t)n, m));
    cublasLtMatmulDesc_t desc;
    MUST(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    int32_t ta = CUBLAS_OP_T;
    MUST(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    MUST(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &sa, sizeof sa));
    MUST(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &sb, sizeof sb));
    MUST(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &mode, sizeof mode));
    MUST(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &mode, sizeof mode));
    const float alpha = 1.0f, beta = 0.0f;
    if (mode != CUBLASLT_MATMUL_MATRIX_SCALE_SCALAR_32F && mode != CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F)
        outside_model();
    int s = cublasLtMatmul(lt, desc, &alpha, a, la, b, lb, &beta, c, lc, c, lc, NULL, NULL, 0, stream);
    record("cublasLtMatmul", m, n, k, 1, s, c, (size_t)(m * n) * 2);
    MUST(cublasLtMatmulDescDestroy(desc));
    MUST(cublasLtMatrixLayoutDestroy(la));
    MUST(cublasLtMatrixLayoutDestroy(lb));
    MUST(cublasLtMatrixLayoutDestroy(lc));
    free(ha);
    free(hb);
    MUST(cudaFree(a));
    MUST(cudaFree(b));
    MUST(cudaFree(c));
    MUST(cudaFree(sa));
    MUST(cudaFree(sb));
}

/* Calls outside protocol v1's model, between valid ones. */
static void unmodelled(void) {
    for (int i = 0; i < 10; i++)
        sgemm(16, 8, 16, 16, i % 3 == 2 ? -0.5f : 0.0f);
    complex_gemm_ex();
    emulated_compute();
    lt_outside(CUBLASLT_EPILOGUE_DRELU, CUBLASLT_ORDER_COL, 1, CUBLASLT_BATCH_MODE_STRIDED);
    lt_outside(CUBLASLT_EPILOGUE_GELU_AUX, CUBLASLT_ORDER_COL, 2, CUBLASLT_BATCH_MODE_STRIDED);
    lt_outside(CUBLASLT_EPILOGUE_DEFAULT, CUBLASLT_ORDER_COL32, 1, CUBLASLT_BATCH_MODE_STRIDED);
    nonfinite_alpha(0.0f / 0.0f);
    nonfinite_alpha(1.0f / 0.0f);
    nonfinite_alpha(0.0f / 0.0f);
    conjg_sgemm();
    lt_fp8_scaled(CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F);
    lt_fp8_scaled(CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F);
    lt_fp8_scaled(CUBLASLT_MATMUL_MATRIX_SCALE_SCALAR_32F);
    /* cuBLASLt's grouped matmul: a layout in the grouped batch mode */
    lt_outside(CUBLASLT_EPILOGUE_DEFAULT, CUBLASLT_ORDER_COL, 1, CUBLASLT_BATCH_MODE_GROUPED);
    for (int i = 0; i < 10; i++)
        sgemm(16, 8, 16, 16, i % 3 == 2 ? -0.5f : 0.0f);
}

int main(int argc, char **argv) {
    int outside = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--trace"))
            trace = 1;
        else if (!strcmp(argv[i], "--unmodelled"))
            outside = 1;
        else {
            fprintf(stderr, "usage: audit_rejected [--unmodelled] [--trace]\n");
            return 2;
        }
    }
    MUST(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    MUST(cublasCreate_v2(&handle));
    MUST(cublasSetStream_v2(handle, stream));
    MUST(cublasLtCreate(&lt));

    if (outside) {
        unmodelled();
    } else {
        for (int i = 0; i < 30; i++)
            sgemm(16, 8, 16, 16, i % 5 == 4 ? -0.5f : 0.0f);
        mixed_gemm_ex(0.0f);
        mixed_gemm_ex(-0.5f);
        sgemm(16, 8, 16, 15, 0.0f); /* lda < m */
        int8_relu_lt();
        negative_batch();
        sgemm(-3, 8, 16, 16, 0.0f);
        for (int i = 0; i < 10; i++)
            sgemm(16, 8, 16, 16, i % 2 ? -0.5f : 0.0f);
    }

    MUST(cublasLtDestroy(lt));
    MUST(cublasDestroy_v2(handle));
    MUST(cudaStreamDestroy(stream));
    printf("%s\n%s\n", rejected, unmodelled_calls);
    print_result(ncalls, total_hash);
    return 0;
}

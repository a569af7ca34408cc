/*
 * The interposer's end-to-end smoke program: a few cublasGemmEx and cublasLtMatmul
 * calls on the simulated GPU, made by an unmodified program. Run it under
 * LD_PRELOAD=libmmaudit.so and check the capture with the verifier
 * (tests/e2e/interposer_smoke.rs). It prints "CALLS n" with the number of GEMM calls
 * it made and exits 0 when every call returned success.
 *
 * Calls: GemmEx f32 (beta 0), GemmEx f16 in / f32 compute (beta 0.5, in place),
 * GemmEx with device-side alpha/beta, cublasLtMatmul bf16 row-major with a bias and
 * ReLU, cublasLtMatmul f32 column-major strided batch, on a non-default stream.
 */
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "simgpu_check.h"

static int calls;

static void *dev_fill(size_t bytes, int type, size_t n, uint64_t seed) {
    void *h = malloc(bytes), *d = NULL;
    for (size_t i = 0; i < n; i++)
        put(h, type, i, test_value(seed, i));
    MUST(cudaMalloc(&d, bytes));
    MUST(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice));
    free(h);
    return d;
}

#define CALL(expr)                                                                   \
    do {                                                                             \
        calls++;                                                                     \
        MUST(expr);                                                                  \
    } while (0)

int main(void) {
    cublasHandle_t h;
    cublasLtHandle_t lt;
    cudaStream_t s;
    MUST(cublasCreate(&h));
    MUST(cublasLtCreate(&lt));
    MUST(cudaStreamCreate(&s));
    MUST(cublasSetStream(h, s));
    const int m = 24, n = 16, k = 40;

    float *a = dev_fill(sizeof(float) * m * k, CUDA_R_32F, (size_t)m * k, 1);
    float *b = dev_fill(sizeof(float) * k * n, CUDA_R_32F, (size_t)k * n, 2);
    float *c = dev_fill(sizeof(float) * m * n, CUDA_R_32F, (size_t)m * n, 3);
    float one = 1.0f, zero = 0.0f, half_ = 0.5f;
    CALL(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, a, CUDA_R_32F, m, b, CUDA_R_32F, k, &zero,
                      c, CUDA_R_32F, m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));

    void *a16 = dev_fill(2 * (size_t)m * k, CUDA_R_16F, (size_t)m * k, 4);
    void *b16 = dev_fill(2 * (size_t)k * n, CUDA_R_16F, (size_t)k * n, 5);
    float *c32 = dev_fill(sizeof(float) * m * n, CUDA_R_32F, (size_t)m * n, 6);
    CALL(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &one, a16, CUDA_R_16F, k, b16, CUDA_R_16F, k,
                      &half_, c32, CUDA_R_32F, m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));

    float *scalars;
    float host_scalars[2] = {1.5f, -0.25f};
    MUST(cudaMalloc((void **)&scalars, sizeof host_scalars));
    MUST(cudaMemcpy(scalars, host_scalars, sizeof host_scalars, cudaMemcpyHostToDevice));
    MUST(cublasSetPointerMode(h, CUBLAS_POINTER_MODE_DEVICE));
    CALL(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_T, m, n, k, scalars, a, CUDA_R_32F, m, b, CUDA_R_32F, n,
                      scalars + 1, c, CUDA_R_32F, m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    MUST(cublasSetPointerMode(h, CUBLAS_POINTER_MODE_HOST));

    /* cuBLASLt: bf16, row-major, bias + ReLU, D != C. */
    void *abf = dev_fill(2 * (size_t)m * k, CUDA_R_16BF, (size_t)m * k, 7);
    void *bbf = dev_fill(2 * (size_t)k * n, CUDA_R_16BF, (size_t)k * n, 8);
    void *cbf = dev_fill(2 * (size_t)m * n, CUDA_R_16BF, (size_t)m * n, 9);
    void *dbf = dev_fill(2 * (size_t)m * n, CUDA_R_16BF, (size_t)m * n, 10);
    void *bias = dev_fill(2 * (size_t)m, CUDA_R_16BF, (size_t)m, 11);
    cublasLtMatmulDesc_t desc;
    MUST(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    int32_t epi = CUBLASLT_EPILOGUE_RELU_BIAS;
    MUST(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
    MUST(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
    int32_t row = CUBLASLT_ORDER_ROW;
    cublasLtMatrixLayout_t la, lb, lc, ld;
    MUST(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, m, k, k));
    MUST(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, k, n, n));
    MUST(cublasLtMatrixLayoutCreate(&lc, CUDA_R_16BF, m, n, n));
    MUST(cublasLtMatrixLayoutCreate(&ld, CUDA_R_16BF, m, n, n));
    cublasLtMatrixLayout_t all[4] = {la, lb, lc, ld};
    for (int i = 0; i < 4; i++)
        MUST(cublasLtMatrixLayoutSetAttribute(all[i], CUBLASLT_MATRIX_LAYOUT_ORDER, &row, sizeof row));
    CALL(cublasLtMatmul(lt, desc, &one, abf, la, bbf, lb, &half_, cbf, lc, dbf, ld, NULL, NULL, 0, s));
    /* The descriptors are destroyed right away, as applications do. */
    cublasLtMatmulDescDestroy(desc);
    for (int i = 0; i < 4; i++)
        cublasLtMatrixLayoutDestroy(all[i]);

    /* cuBLASLt: f32 column-major, op(A) = A^T, strided batch of 3, in place. */
    const int batch = 3;
    float *ab = dev_fill(sizeof(float) * k * m * batch, CUDA_R_32F, (size_t)k * m * batch, 12);
    float *bb = dev_fill(sizeof(float) * k * n * batch, CUDA_R_32F, (size_t)k * n * batch, 13);
    float *cb = dev_fill(sizeof(float) * m * n * batch, CUDA_R_32F, (size_t)m * n * batch, 14);
    MUST(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    int32_t t = CUBLAS_OP_T;
    MUST(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &t, sizeof t));
    MUST(cublasLtMatrixLayoutCreate(&la, CUDA_R_32F, k, m, k));
    MUST(cublasLtMatrixLayoutCreate(&lb, CUDA_R_32F, k, n, k));
    MUST(cublasLtMatrixLayoutCreate(&lc, CUDA_R_32F, m, n, m));
    int64_t strides[3] = {(int64_t)k * m, (int64_t)k * n, (int64_t)m * n};
    cublasLtMatrixLayout_t bl[3] = {la, lb, lc};
    for (int i = 0; i < 3; i++) {
        int32_t bc = batch;
        MUST(cublasLtMatrixLayoutSetAttribute(bl[i], CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &bc, sizeof bc));
        MUST(cublasLtMatrixLayoutSetAttribute(bl[i], CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &strides[i],
                                              sizeof strides[i]));
    }
    CALL(cublasLtMatmul(lt, desc, &one, ab, la, bb, lb, &one, cb, lc, cb, lc, NULL, NULL, 0, s));
    cublasLtMatmulDescDestroy(desc);
    for (int i = 0; i < 3; i++)
        cublasLtMatrixLayoutDestroy(bl[i]);

    /* One more plain call on the legacy default stream. */
    MUST(cublasSetStream(h, NULL));
    CALL(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_T, m, n, k, &one, a, CUDA_R_32F, k, b, CUDA_R_32F, n, &zero, c,
                      CUDA_R_32F, m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));

    MUST(cudaDeviceSynchronize());
    printf("CALLS %d\n", calls);
    /* Return from main without freeing: the exit flush must cope. */
    return 0;
}

/*
 * Simulated GPU: libcublas.so.13, the handle API and the GEMM entry points.
 * Each entry point checks its arguments with the status codes cuBLAS returns
 * (NOT_INITIALIZED for a bad handle, INVALID_VALUE for bad sizes, leading
 * dimensions and scalars, NOT_SUPPORTED for a type combination cuBLAS lacks),
 * reads host-mode alpha/beta at call time (as cuBLAS does) and queues the GEMM
 * on the handle's stream. Device-mode alpha/beta are read when the GEMM runs.
 */
#include <stdlib.h>

#include "cublas_api.h"
#include "handles.h"
#include "simgpu.h"

#define SG_MAGIC_CUBLAS 0x43424c53u

struct cublasContext {
    uint32_t magic;
    cudaStream_t stream;
    cublasPointerMode_t pointer_mode;
    cublasMath_t math_mode;
    void *workspace;
    size_t workspace_bytes;
};

static int valid(cublasHandle_t h) { return h && sg_handle_valid(h, SG_MAGIC_CUBLAS); }

cublasStatus_t cublasCreate_v2(cublasHandle_t *handle) {
    if (!handle)
        return CUBLAS_STATUS_INVALID_VALUE;
    if (sg_fault_config_ok() != 0 || sg_runtime_ctx(NULL) != CUDA_SUCCESS)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    struct cublasContext *h = calloc(1, sizeof *h);
    if (!h)
        return CUBLAS_STATUS_ALLOC_FAILED;
    h->magic = SG_MAGIC_CUBLAS;
    if (sg_handle_add(h) != 0) {
        free(h);
        return CUBLAS_STATUS_ALLOC_FAILED;
    }
    *handle = h;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy_v2(cublasHandle_t handle) {
    if (!valid(handle))
        return CUBLAS_STATUS_NOT_INITIALIZED;
    sg_handle_remove(handle);
    free(handle);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetVersion_v2(cublasHandle_t handle, int *version) {
    if (!valid(handle))
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!version)
        return CUBLAS_STATUS_INVALID_VALUE;
    *version = CUBLAS_VERSION;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetWorkspace_v2(cublasHandle_t handle, void *workspace, size_t workspaceSizeInBytes) {
    if (!valid(handle))
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if (workspaceSizeInBytes && !workspace)
        return CUBLAS_STATUS_INVALID_VALUE;
    handle->workspace = workspace;
    handle->workspace_bytes = workspaceSizeInBytes;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream_v2(cublasHandle_t handle, cudaStream_t streamId) {
    if (!valid(handle))
        return CUBLAS_STATUS_NOT_INITIALIZED;
    handle->stream = streamId;
    /* Like cuBLAS, a new stream drops a user workspace set for the old one. */
    handle->workspace = NULL;
    handle->workspace_bytes = 0;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetStream_v2(cublasHandle_t handle, cudaStream_t *streamId) {
    if (!valid(handle))
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!streamId)
        return CUBLAS_STATUS_INVALID_VALUE;
    *streamId = handle->stream;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetPointerMode_v2(cublasHandle_t handle, cublasPointerMode_t *mode) {
    if (!valid(handle))
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!mode)
        return CUBLAS_STATUS_INVALID_VALUE;
    *mode = handle->pointer_mode;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetPointerMode_v2(cublasHandle_t handle, cublasPointerMode_t mode) {
    if (!valid(handle))
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if (mode != CUBLAS_POINTER_MODE_HOST && mode != CUBLAS_POINTER_MODE_DEVICE)
        return CUBLAS_STATUS_INVALID_VALUE;
    handle->pointer_mode = mode;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetMathMode(cublasHandle_t handle, cublasMath_t *mode) {
    if (!valid(handle))
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!mode)
        return CUBLAS_STATUS_INVALID_VALUE;
    *mode = handle->math_mode;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
    if (!valid(handle))
        return CUBLAS_STATUS_NOT_INITIALIZED;
    unsigned base = (unsigned)mode & ~(unsigned)CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION;
    if (base > CUBLAS_FP32_EMULATED_BF16X9_MATH && base != CUBLAS_FP64_EMULATED_FIXEDPOINT_MATH)
        return CUBLAS_STATUS_INVALID_VALUE;
    handle->math_mode = mode;
    return CUBLAS_STATUS_SUCCESS;
}

const char *cublasGetStatusName(cublasStatus_t status) { return sg_cublas_status_name(status); }

const char *cublasGetStatusString(cublasStatus_t status) { return sg_cublas_status_string(status); }

/* ---- GEMM ---- */

/* One GEMM call in cuBLAS's column-major terms. */
typedef struct call {
    cublasOperation_t transa, transb;
    int64_t m, n, k;
    const void *alpha, *beta;
    const void *a, *b;
    void *c;
    int atype, btype, ctype;
    int64_t lda, ldb, ldc;
    long long stride_a, stride_b, stride_c;
    int64_t batch;
    int ptr_array;
    int compute;
} call;

static int scale_type_of(int compute) {
    switch (compute) {
    case CUBLAS_COMPUTE_16F:
    case CUBLAS_COMPUTE_16F_PEDANTIC:
        return CUDA_R_16F;
    case CUBLAS_COMPUTE_64F:
    case CUBLAS_COMPUTE_64F_PEDANTIC:
        return CUDA_R_64F;
    case CUBLAS_COMPUTE_32I:
    case CUBLAS_COMPUTE_32I_PEDANTIC:
        return CUDA_R_32I;
    default:
        return CUDA_R_32F;
    }
}

static int64_t max1(int64_t x) { return x > 1 ? x : 1; }

static cublasStatus_t gemm(cublasHandle_t h, const call *c) {
    if (!valid(h))
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if ((unsigned)c->transa > CUBLAS_OP_C || (unsigned)c->transb > CUBLAS_OP_C)
        return CUBLAS_STATUS_INVALID_VALUE;
    int ta = c->transa != CUBLAS_OP_N, tb = c->transb != CUBLAS_OP_N;
    int64_t a_rows = ta ? c->k : c->m, a_cols = ta ? c->m : c->k;
    int64_t b_rows = tb ? c->n : c->k, b_cols = tb ? c->k : c->n;
    if (c->m < 0 || c->n < 0 || c->k < 0 || c->batch < 0 || c->lda < max1(a_rows) || c->ldb < max1(b_rows) ||
        c->ldc < max1(c->m) || !c->alpha || !c->beta)
        return CUBLAS_STATUS_INVALID_VALUE;
    sg_gemm g = {0};
    g.transa = ta;
    g.transb = tb;
    g.m = c->m;
    g.n = c->n;
    g.k = c->k;
    g.batch = c->batch;
    g.a = (sg_matrix){(uint64_t)(uintptr_t)c->a, c->atype, a_rows, a_cols, c->lda, 0, c->stride_a, c->ptr_array};
    g.b = (sg_matrix){(uint64_t)(uintptr_t)c->b, c->btype, b_rows, b_cols, c->ldb, 0, c->stride_b, c->ptr_array};
    g.c = (sg_matrix){(uint64_t)(uintptr_t)c->c, c->ctype, c->m, c->n, c->ldc, 0, c->stride_c, c->ptr_array};
    g.d = g.c;
    g.scale_type = scale_type_of(c->compute);
    if (sg_gemm_configure(&g, c->compute, h->math_mode, 0) != 0)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    if (c->m == 0 || c->n == 0 || c->batch == 0)
        return CUBLAS_STATUS_SUCCESS;
    if (sg_runtime_ctx(NULL) != CUDA_SUCCESS)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if (h->pointer_mode == CUBLAS_POINTER_MODE_DEVICE) {
        g.scalars_on_device = 1;
        g.alpha_ptr = (uint64_t)(uintptr_t)c->alpha;
        g.beta_ptr = (uint64_t)(uintptr_t)c->beta;
    } else {
        g.alpha = sg_read_scalar(c->alpha, g.scale_type);
        g.beta = sg_read_scalar(c->beta, g.scale_type);
    }
    return sg_gemm_submit(&g, h->stream) == CUDA_SUCCESS ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
}

cublasStatus_t cublasSgemm_v2_64(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                                 int64_t m, int64_t n, int64_t k, const float *alpha, const float *A, int64_t lda,
                                 const float *B, int64_t ldb, const float *beta, float *C, int64_t ldc) {
    call c = {transa, transb, m, n, k, alpha, beta, A, B, C, CUDA_R_32F, CUDA_R_32F, CUDA_R_32F,
              lda, ldb, ldc, 0, 0, 0, 1, 0, CUBLAS_COMPUTE_32F};
    return gemm(handle, &c);
}

cublasStatus_t cublasSgemm_v2(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m,
                              int n, int k, const float *alpha, const float *A, int lda, const float *B, int ldb,
                              const float *beta, float *C, int ldc) {
    return cublasSgemm_v2_64(handle, transa, transb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

cublasStatus_t cublasHgemm(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                           int k, const __half *alpha, const __half *A, int lda, const __half *B, int ldb,
                           const __half *beta, __half *C, int ldc) {
    call c = {transa, transb, m, n, k, alpha, beta, A, B, C, CUDA_R_16F, CUDA_R_16F, CUDA_R_16F,
              lda, ldb, ldc, 0, 0, 0, 1, 0, CUBLAS_COMPUTE_16F};
    return gemm(handle, &c);
}

cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                                         int m, int n, int k, const float *alpha, const float *A, int lda,
                                         long long int strideA, const float *B, int ldb, long long int strideB,
                                         const float *beta, float *C, int ldc, long long int strideC,
                                         int batchCount) {
    call c = {transa, transb, m, n, k, alpha, beta, A, B, C, CUDA_R_32F, CUDA_R_32F, CUDA_R_32F,
              lda, ldb, ldc, strideA, strideB, strideC, batchCount, 0, CUBLAS_COMPUTE_32F};
    return gemm(handle, &c);
}

cublasStatus_t cublasGemmEx_64(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                               int64_t m, int64_t n, int64_t k, const void *alpha, const void *A, cudaDataType Atype,
                               int64_t lda, const void *B, cudaDataType Btype, int64_t ldb, const void *beta,
                               void *C, cudaDataType Ctype, int64_t ldc, cublasComputeType_t computeType,
                               cublasGemmAlgo_t algo) {
    (void)algo; /* every algorithm computes the same on the simulator */
    call c = {transa, transb, m, n, k, alpha, beta, A, B, C, Atype, Btype, Ctype,
              lda, ldb, ldc, 0, 0, 0, 1, 0, computeType};
    return gemm(handle, &c);
}

cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                            int k, const void *alpha, const void *A, cudaDataType Atype, int lda, const void *B,
                            cudaDataType Btype, int ldb, const void *beta, void *C, cudaDataType Ctype, int ldc,
                            cublasComputeType_t computeType, cublasGemmAlgo_t algo) {
    return cublasGemmEx_64(handle, transa, transb, m, n, k, alpha, A, Atype, lda, B, Btype, ldb, beta, C, Ctype,
                           ldc, computeType, algo);
}

cublasStatus_t cublasGemmStridedBatchedEx_64(cublasHandle_t handle, cublasOperation_t transa,
                                             cublasOperation_t transb, int64_t m, int64_t n, int64_t k,
                                             const void *alpha, const void *A, cudaDataType Atype, int64_t lda,
                                             long long int strideA, const void *B, cudaDataType Btype, int64_t ldb,
                                             long long int strideB, const void *beta, void *C, cudaDataType Ctype,
                                             int64_t ldc, long long int strideC, int64_t batchCount,
                                             cublasComputeType_t computeType, cublasGemmAlgo_t algo) {
    (void)algo;
    call c = {transa, transb, m, n, k, alpha, beta, A, B, C, Atype, Btype, Ctype,
              lda, ldb, ldc, strideA, strideB, strideC, batchCount, 0, computeType};
    return gemm(handle, &c);
}

cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                                          int m, int n, int k, const void *alpha, const void *A, cudaDataType Atype,
                                          int lda, long long int strideA, const void *B, cudaDataType Btype, int ldb,
                                          long long int strideB, const void *beta, void *C, cudaDataType Ctype,
                                          int ldc, long long int strideC, int batchCount,
                                          cublasComputeType_t computeType, cublasGemmAlgo_t algo) {
    return cublasGemmStridedBatchedEx_64(handle, transa, transb, m, n, k, alpha, A, Atype, lda, strideA, B, Btype,
                                         ldb, strideB, beta, C, Ctype, ldc, strideC, batchCount, computeType, algo);
}

cublasStatus_t cublasGemmBatchedEx_64(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                                      int64_t m, int64_t n, int64_t k, const void *alpha, const void *const Aarray[],
                                      cudaDataType Atype, int64_t lda, const void *const Barray[],
                                      cudaDataType Btype, int64_t ldb, const void *beta, void *const Carray[],
                                      cudaDataType Ctype, int64_t ldc, int64_t batchCount,
                                      cublasComputeType_t computeType, cublasGemmAlgo_t algo) {
    (void)algo;
    if (batchCount > 0 && (!Aarray || !Barray || !Carray))
        return valid(handle) ? CUBLAS_STATUS_INVALID_VALUE : CUBLAS_STATUS_NOT_INITIALIZED;
    /* The arrays live in device memory and hold device pointers. */
    call c = {transa, transb, m, n, k, alpha, beta, Aarray, Barray, (void *)Carray, Atype, Btype, Ctype,
              lda, ldb, ldc, 0, 0, 0, batchCount, 1, computeType};
    return gemm(handle, &c);
}

cublasStatus_t cublasGemmBatchedEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m,
                                   int n, int k, const void *alpha, const void *const Aarray[], cudaDataType Atype,
                                   int lda, const void *const Barray[], cudaDataType Btype, int ldb,
                                   const void *beta, void *const Carray[], cudaDataType Ctype, int ldc,
                                   int batchCount, cublasComputeType_t computeType, cublasGemmAlgo_t algo) {
    return cublasGemmBatchedEx_64(handle, transa, transb, m, n, k, alpha, Aarray, Atype, lda, Barray, Btype, ldb,
                                  beta, Carray, Ctype, ldc, batchCount, computeType, algo);
}

cublasStatus_t cublasDgemm_v2(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m,
                              int n, int k, const double *alpha, const double *A, int lda, const double *B, int ldb,
                              const double *beta, double *C, int ldc) {
    call c = {transa, transb, m, n, k, alpha, beta, A, B, C, CUDA_R_64F, CUDA_R_64F, CUDA_R_64F,
              lda, ldb, ldc, 0, 0, 0, 1, 0, CUBLAS_COMPUTE_64F};
    return gemm(handle, &c);
}

cublasStatus_t cublasDgemmStridedBatched(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                                         int m, int n, int k, const double *alpha, const double *A, int lda,
                                         long long int strideA, const double *B, int ldb, long long int strideB,
                                         const double *beta, double *C, int ldc, long long int strideC,
                                         int batchCount) {
    call c = {transa, transb, m, n, k, alpha, beta, A, B, C, CUDA_R_64F, CUDA_R_64F, CUDA_R_64F,
              lda, ldb, ldc, strideA, strideB, strideC, batchCount, 0, CUBLAS_COMPUTE_64F};
    return gemm(handle, &c);
}

/* cublasSgemmEx: f32 scalars and compute, A/B/C of the given types (as cublasGemmEx
 * with CUBLAS_COMPUTE_32F). */
cublasStatus_t cublasSgemmEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                             int k, const float *alpha, const void *A, cudaDataType Atype, int lda, const void *B,
                             cudaDataType Btype, int ldb, const float *beta, void *C, cudaDataType Ctype, int ldc) {
    call c = {transa, transb, m, n, k, alpha, beta, A, B, C, Atype, Btype, Ctype,
              lda, ldb, ldc, 0, 0, 0, 1, 0, CUBLAS_COMPUTE_32F};
    return gemm(handle, &c);
}

static cublasStatus_t batched(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m,
                              int n, int k, const void *alpha, const void *Aarray, int lda, const void *Barray,
                              int ldb, const void *beta, void *Carray, int ldc, int batchCount, int type,
                              int compute) {
    if (batchCount > 0 && (!Aarray || !Barray || !Carray))
        return valid(handle) ? CUBLAS_STATUS_INVALID_VALUE : CUBLAS_STATUS_NOT_INITIALIZED;
    call c = {transa, transb, m, n, k, alpha, beta, Aarray, Barray, Carray, type, type, type,
              lda, ldb, ldc, 0, 0, 0, batchCount, 1, compute};
    return gemm(handle, &c);
}

cublasStatus_t cublasSgemmBatched(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m,
                                  int n, int k, const float *alpha, const float *const Aarray[], int lda,
                                  const float *const Barray[], int ldb, const float *beta, float *const Carray[],
                                  int ldc, int batchCount) {
    return batched(handle, transa, transb, m, n, k, alpha, Aarray, lda, Barray, ldb, beta, (void *)Carray, ldc,
                   batchCount, CUDA_R_32F, CUBLAS_COMPUTE_32F);
}

cublasStatus_t cublasHgemmBatched(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m,
                                  int n, int k, const __half *alpha, const __half *const Aarray[], int lda,
                                  const __half *const Barray[], int ldb, const __half *beta, __half *const Carray[],
                                  int ldc, int batchCount) {
    return batched(handle, transa, transb, m, n, k, alpha, Aarray, lda, Barray, ldb, beta, (void *)Carray, ldc,
                   batchCount, CUDA_R_16F, CUBLAS_COMPUTE_16F);
}

/* y = alpha op(A) x + beta y, as the GEMM op(A) (M x K) times x (K x 1): x is the
 * 1 x K row at stride incx taken transposed, y an M x 1 row-major column at stride
 * incy. Negative increments are INVALID_VALUE here (cuBLAS walks them backwards). */
static cublasStatus_t gemv(cublasHandle_t h, cublasOperation_t trans, int m, int n, const void *alpha, const void *A,
                           int lda, const void *x, int incx, const void *beta, void *y, int incy, int type,
                           int compute) {
    if (!valid(h))
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if ((unsigned)trans > CUBLAS_OP_C || m < 0 || n < 0 || lda < max1(m) || incx <= 0 || incy <= 0 || !alpha ||
        !beta)
        return CUBLAS_STATUS_INVALID_VALUE;
    int t = trans != CUBLAS_OP_N;
    int64_t M = t ? n : m, K = t ? m : n;
    sg_gemm g = {0};
    g.transa = t;
    g.transb = 1;
    g.m = M;
    g.n = 1;
    g.k = K;
    g.batch = 1;
    g.a = (sg_matrix){(uint64_t)(uintptr_t)A, type, m, n, lda, 0, 0, 0};
    g.b = (sg_matrix){(uint64_t)(uintptr_t)x, type, 1, K, incx, 0, 0, 0};
    g.c = (sg_matrix){(uint64_t)(uintptr_t)y, type, M, 1, incy, 1, 0, 0};
    g.d = g.c;
    g.scale_type = scale_type_of(compute);
    /* gemv has no tensor-core path: the handle's math mode does not apply. */
    if (sg_gemm_configure(&g, compute, CUBLAS_DEFAULT_MATH, 0) != 0)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    if (M == 0)
        return CUBLAS_STATUS_SUCCESS;
    if (sg_runtime_ctx(NULL) != CUDA_SUCCESS)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if (h->pointer_mode == CUBLAS_POINTER_MODE_DEVICE) {
        g.scalars_on_device = 1;
        g.alpha_ptr = (uint64_t)(uintptr_t)alpha;
        g.beta_ptr = (uint64_t)(uintptr_t)beta;
    } else {
        g.alpha = sg_read_scalar(alpha, g.scale_type);
        g.beta = sg_read_scalar(beta, g.scale_type);
    }
    return sg_gemm_submit(&g, h->stream) == CUDA_SUCCESS ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
}

cublasStatus_t cublasSgemv_v2(cublasHandle_t handle, cublasOperation_t trans, int m, int n, const float *alpha,
                              const float *A, int lda, const float *x, int incx, const float *beta, float *y,
                              int incy) {
    return gemv(handle, trans, m, n, alpha, A, lda, x, incx, beta, y, incy, CUDA_R_32F, CUBLAS_COMPUTE_32F);
}

cublasStatus_t cublasDgemv_v2(cublasHandle_t handle, cublasOperation_t trans, int m, int n, const double *alpha,
                              const double *A, int lda, const double *x, int incx, const double *beta, double *y,
                              int incy) {
    return gemv(handle, trans, m, n, alpha, A, lda, x, incx, beta, y, incy, CUDA_R_64F, CUBLAS_COMPUTE_64F);
}

/* Grouped batches: group g is a pointer-array batch of group_size[g] GEMMs with its
 * own ops, sizes, leading dimensions and scalars (alpha_array[g], beta_array[g]); the
 * pointer arrays hold the groups' pointers one after the other. One queued GEMM per
 * group, in order. */
static cublasStatus_t grouped(cublasHandle_t h, const cublasOperation_t *ta, const cublasOperation_t *tb,
                              const int *m, const int *n, const int *k, const void *alpha, const void *const *A,
                              int atype, const int *lda, const void *const *B, int btype, const int *ldb,
                              const void *beta, void *const *C, int ctype, const int *ldc, int group_count,
                              const int *group_size, int compute) {
    if (!valid(h))
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if (group_count < 0 || (group_count > 0 && (!ta || !tb || !m || !n || !k || !alpha || !A || !lda || !B || !ldb ||
                                                !beta || !C || !ldc || !group_size)))
        return CUBLAS_STATUS_INVALID_VALUE;
    size_t es = sg_type_size(scale_type_of(compute)), offset = 0;
    for (int g = 0; g < group_count; g++) {
        call c = {ta[g], tb[g], m[g], n[g], k[g],
                  (const unsigned char *)alpha + (size_t)g * es, (const unsigned char *)beta + (size_t)g * es,
                  A + offset, B + offset, (void *)(C + offset), atype, btype, ctype,
                  lda[g], ldb[g], ldc[g], 0, 0, 0, group_size[g], 1, compute};
        cublasStatus_t s = gemm(h, &c);
        if (s != CUBLAS_STATUS_SUCCESS)
            return s;
        offset += (size_t)(group_size[g] > 0 ? group_size[g] : 0);
    }
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGemmGroupedBatchedEx(cublasHandle_t handle, const cublasOperation_t transa_array[],
                                          const cublasOperation_t transb_array[], const int m_array[],
                                          const int n_array[], const int k_array[], const void *alpha_array,
                                          const void *const Aarray[], cudaDataType_t Atype, const int lda_array[],
                                          const void *const Barray[], cudaDataType_t Btype, const int ldb_array[],
                                          const void *beta_array, void *const Carray[], cudaDataType_t Ctype,
                                          const int ldc_array[], int group_count, const int group_size[],
                                          cublasComputeType_t computeType) {
    return grouped(handle, transa_array, transb_array, m_array, n_array, k_array, alpha_array, Aarray, Atype,
                   lda_array, Barray, Btype, ldb_array, beta_array, Carray, Ctype, ldc_array, group_count, group_size,
                   computeType);
}

cublasStatus_t cublasSgemmGroupedBatched(cublasHandle_t handle, const cublasOperation_t transa_array[],
                                         const cublasOperation_t transb_array[], const int m_array[],
                                         const int n_array[], const int k_array[], const float alpha_array[],
                                         const float *const Aarray[], const int lda_array[],
                                         const float *const Barray[], const int ldb_array[],
                                         const float beta_array[], float *const Carray[], const int ldc_array[],
                                         int group_count, const int group_size[]) {
    return grouped(handle, transa_array, transb_array, m_array, n_array, k_array, alpha_array,
                   (const void *const *)Aarray, CUDA_R_32F, lda_array, (const void *const *)Barray, CUDA_R_32F,
                   ldb_array, beta_array, (void *const *)Carray, CUDA_R_32F, ldc_array, group_count, group_size,
                   CUBLAS_COMPUTE_32F);
}

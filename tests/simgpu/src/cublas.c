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
    sg_count(SG_Q_CUBLAS_GET_STREAM);
    if (!valid(handle))
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!streamId)
        return CUBLAS_STATUS_INVALID_VALUE;
    *streamId = handle->stream;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetPointerMode_v2(cublasHandle_t handle, cublasPointerMode_t *mode) {
    sg_count(SG_Q_CUBLAS_GET_POINTER_MODE);
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
    sg_count(SG_Q_CUBLAS_GET_MATH_MODE);
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

/* One plain (not batched) call. */
static cublasStatus_t plain(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int64_t m, int64_t n,
                            int64_t k, const void *alpha, const void *A, int64_t lda, const void *B, int64_t ldb,
                            const void *beta, void *C, int64_t ldc, int type, int compute) {
    call c = {ta, tb, m, n, k, alpha, beta, A, B, C, type, type, type, lda, ldb, ldc, 0, 0, 0, 1, 0, compute};
    return gemm(h, &c);
}

static cublasStatus_t strided(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int64_t m, int64_t n,
                              int64_t k, const void *alpha, const void *A, int64_t lda, long long sa, const void *B,
                              int64_t ldb, long long sb, const void *beta, void *C, int64_t ldc, long long sc,
                              int64_t batch, int type, int compute) {
    call c = {ta, tb, m, n, k, alpha, beta, A, B, C, type, type, type, lda, ldb, ldc, sa, sb, sc, batch, 0, compute};
    return gemm(h, &c);
}

static cublasStatus_t batched(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int64_t m,
                              int64_t n, int64_t k, const void *alpha, const void *Aarray, int64_t lda,
                              const void *Barray, int64_t ldb, const void *beta, const void *Carray, int64_t ldc,
                              int64_t batchCount, int type, int compute) {
    if (batchCount > 0 && (!Aarray || !Barray || !Carray))
        return valid(handle) ? CUBLAS_STATUS_INVALID_VALUE : CUBLAS_STATUS_NOT_INITIALIZED;
    call c = {transa, transb, m, n, k, alpha, beta, Aarray, Barray, (void *)Carray, type, type, type,
              lda, ldb, ldc, 0, 0, 0, batchCount, 1, compute};
    return gemm(handle, &c);
}

/* The int-sized entry points of a family forward to its _64 forms. */
#define INT_GEMM(T, GEMM)                                                                                         \
    cublasStatus_t GEMM(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,        \
                        const T *alpha, const T *A, int lda, const T *B, int ldb, const T *beta, T *C, int ldc) {  \
        return GEMM##_64(h, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);                                 \
    }
#define INT_STRIDED(T, STRIDED)                                                                                   \
    cublasStatus_t STRIDED(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,     \
                           const T *alpha, const T *A, int lda, long long sa, const T *B, int ldb, long long sb,   \
                           const T *beta, T *C, int ldc, long long sc, int batch) {                                \
        return STRIDED##_64(h, ta, tb, m, n, k, alpha, A, lda, sa, B, ldb, sb, beta, C, ldc, sc, batch);           \
    }
#define INT_BATCHED(T, BATCHED)                                                                                   \
    cublasStatus_t BATCHED(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,     \
                           const T *alpha, const T *const A[], int lda, const T *const B[], int ldb,               \
                           const T *beta, T *const C[], int ldc, int batch) {                                      \
        return BATCHED##_64(h, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc, batch);                       \
    }

/* A real-typed family with one element type: the _64 forms run the shared bodies. */
#define REAL_FAMILY(T, TYPE, COMPUTE, GEMM, STRIDED, BATCHED)                                                     \
    cublasStatus_t GEMM##_64(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int64_t m, int64_t n,  \
                             int64_t k, const T *alpha, const T *A, int64_t lda, const T *B, int64_t ldb,          \
                             const T *beta, T *C, int64_t ldc) {                                                   \
        return plain(h, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc, TYPE, COMPUTE);                     \
    }                                                                                                              \
    INT_GEMM(T, GEMM)                                                                                              \
    cublasStatus_t STRIDED##_64(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int64_t m,          \
                                int64_t n, int64_t k, const T *alpha, const T *A, int64_t lda, long long sa,       \
                                const T *B, int64_t ldb, long long sb, const T *beta, T *C, int64_t ldc,           \
                                long long sc, int64_t batch) {                                                     \
        return strided(h, ta, tb, m, n, k, alpha, A, lda, sa, B, ldb, sb, beta, C, ldc, sc, batch, TYPE, COMPUTE); \
    }                                                                                                              \
    INT_STRIDED(T, STRIDED)                                                                                        \
    POINTER_BATCH(T, TYPE, COMPUTE, BATCHED)

#define POINTER_BATCH(T, TYPE, COMPUTE, NAME)                                                                     \
    cublasStatus_t NAME##_64(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int64_t m, int64_t n,  \
                             int64_t k, const T *alpha, const T *const A[], int64_t lda, const T *const B[],       \
                             int64_t ldb, const T *beta, T *const C[], int64_t ldc, int64_t batch) {               \
        return batched(h, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc, batch, TYPE, COMPUTE);            \
    }                                                                                                              \
    INT_BATCHED(T, NAME)

/* f64: cublasDgemm_v2, cublasDgemmStridedBatched, cublasDgemmBatched and their _64 forms. */
REAL_FAMILY(double, CUDA_R_64F, CUBLAS_COMPUTE_64F, cublasDgemm_v2, cublasDgemmStridedBatched, cublasDgemmBatched)

cublasStatus_t cublasHgemm_64(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int64_t m, int64_t n,
                              int64_t k, const __half *alpha, const __half *A, int64_t lda, const __half *B,
                              int64_t ldb, const __half *beta, __half *C, int64_t ldc) {
    return plain(h, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc, CUDA_R_16F, CUBLAS_COMPUTE_16F);
}

cublasStatus_t cublasSgemmStridedBatched_64(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int64_t m,
                                            int64_t n, int64_t k, const float *alpha, const float *A, int64_t lda,
                                            long long sa, const float *B, int64_t ldb, long long sb,
                                            const float *beta, float *C, int64_t ldc, long long sc, int64_t batch) {
    return strided(h, ta, tb, m, n, k, alpha, A, lda, sa, B, ldb, sb, beta, C, ldc, sc, batch, CUDA_R_32F,
                   CUBLAS_COMPUTE_32F);
}

cublasStatus_t cublasHgemmStridedBatched(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                         int k, const __half *alpha, const __half *A, int lda, long long sa,
                                         const __half *B, int ldb, long long sb, const __half *beta, __half *C,
                                         int ldc, long long sc, int batch) {
    return strided(h, ta, tb, m, n, k, alpha, A, lda, sa, B, ldb, sb, beta, C, ldc, sc, batch, CUDA_R_16F,
                   CUBLAS_COMPUTE_16F);
}

cublasStatus_t cublasHgemmStridedBatched_64(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int64_t m,
                                            int64_t n, int64_t k, const __half *alpha, const __half *A, int64_t lda,
                                            long long sa, const __half *B, int64_t ldb, long long sb,
                                            const __half *beta, __half *C, int64_t ldc, long long sc,
                                            int64_t batch) {
    return strided(h, ta, tb, m, n, k, alpha, A, lda, sa, B, ldb, sb, beta, C, ldc, sc, batch, CUDA_R_16F,
                   CUBLAS_COMPUTE_16F);
}

/* cublasSgemmEx: f32 scalars and compute, A/B/C of the given types (as cublasGemmEx
 * with CUBLAS_COMPUTE_32F). */
cublasStatus_t cublasSgemmEx_64(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int64_t m,
                                int64_t n, int64_t k, const float *alpha, const void *A, cudaDataType Atype,
                                int64_t lda, const void *B, cudaDataType Btype, int64_t ldb, const float *beta,
                                void *C, cudaDataType Ctype, int64_t ldc) {
    call c = {transa, transb, m, n, k, alpha, beta, A, B, C, Atype, Btype, Ctype,
              lda, ldb, ldc, 0, 0, 0, 1, 0, CUBLAS_COMPUTE_32F};
    return gemm(handle, &c);
}

cublasStatus_t cublasSgemmEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                             int k, const float *alpha, const void *A, cudaDataType Atype, int lda, const void *B,
                             cudaDataType Btype, int ldb, const float *beta, void *C, cudaDataType Ctype, int ldc) {
    return cublasSgemmEx_64(handle, transa, transb, m, n, k, alpha, A, Atype, lda, B, Btype, ldb, beta, C, Ctype,
                            ldc);
}

POINTER_BATCH(float, CUDA_R_32F, CUBLAS_COMPUTE_32F, cublasSgemmBatched)
POINTER_BATCH(__half, CUDA_R_16F, CUBLAS_COMPUTE_16F, cublasHgemmBatched)

/* y = alpha op(A) x + beta y, as the GEMM op(A) (M x K) times x (K x 1): x is the
 * 1 x K row at stride incx taken transposed, y an M x 1 row-major column at stride
 * incy. Negative increments are INVALID_VALUE here (cuBLAS walks them backwards). */
static cublasStatus_t gemv(cublasHandle_t h, cublasOperation_t trans, int64_t m, int64_t n, const void *alpha,
                           const void *A, int64_t lda, const void *x, int64_t incx, const void *beta, void *y,
                           int64_t incy, int type, int compute) {
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

#define GEMV(T, TYPE, COMPUTE, NAME)                                                                              \
    cublasStatus_t NAME##_64(cublasHandle_t h, cublasOperation_t trans, int64_t m, int64_t n, const T *alpha,     \
                             const T *A, int64_t lda, const T *x, int64_t incx, const T *beta, T *y,               \
                             int64_t incy) {                                                                       \
        return gemv(h, trans, m, n, alpha, A, lda, x, incx, beta, y, incy, TYPE, COMPUTE);                        \
    }                                                                                                              \
    cublasStatus_t NAME(cublasHandle_t h, cublasOperation_t trans, int m, int n, const T *alpha, const T *A,      \
                        int lda, const T *x, int incx, const T *beta, T *y, int incy) {                            \
        return NAME##_64(h, trans, m, n, alpha, A, lda, x, incx, beta, y, incy);                                   \
    }
GEMV(float, CUDA_R_32F, CUBLAS_COMPUTE_32F, cublasSgemv_v2)
GEMV(double, CUDA_R_64F, CUBLAS_COMPUTE_64F, cublasDgemv_v2)

/* Grouped batches: group g is a pointer-array batch of group_size[g] GEMMs with its
 * own ops, sizes, leading dimensions and scalars (alpha_array[g], beta_array[g]); the
 * pointer arrays hold the groups' pointers one after the other. One queued GEMM per
 * group, in order. The integer arrays are int, or int64_t for the _64 forms (wide). */
static int64_t at(const void *array, int64_t i, int wide) {
    return wide ? ((const int64_t *)array)[i] : ((const int *)array)[i];
}

static cublasStatus_t grouped(cublasHandle_t h, const cublasOperation_t *ta, const cublasOperation_t *tb,
                              const void *m, const void *n, const void *k, const void *alpha, const void *const *A,
                              int atype, const void *lda, const void *const *B, int btype, const void *ldb,
                              const void *beta, void *const *C, int ctype, const void *ldc, int64_t group_count,
                              const void *group_size, int compute, int wide) {
    if (!valid(h))
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if (group_count < 0 || (group_count > 0 && (!ta || !tb || !m || !n || !k || !alpha || !A || !lda || !B || !ldb ||
                                                !beta || !C || !ldc || !group_size)))
        return CUBLAS_STATUS_INVALID_VALUE;
    size_t es = sg_type_size(scale_type_of(compute)), offset = 0;
    for (int64_t g = 0; g < group_count; g++) {
        int64_t size = at(group_size, g, wide);
        call c = {ta[g], tb[g], at(m, g, wide), at(n, g, wide), at(k, g, wide),
                  (const unsigned char *)alpha + (size_t)g * es, (const unsigned char *)beta + (size_t)g * es,
                  A + offset, B + offset, (void *)(C + offset), atype, btype, ctype,
                  at(lda, g, wide), at(ldb, g, wide), at(ldc, g, wide), 0, 0, 0, size, 1, compute};
        cublasStatus_t s = gemm(h, &c);
        if (s != CUBLAS_STATUS_SUCCESS)
            return s;
        offset += (size_t)(size > 0 ? size : 0);
    }
    return CUBLAS_STATUS_SUCCESS;
}

#define GROUPED_EX(I, NAME, WIDE)                                                                                 \
    cublasStatus_t NAME(cublasHandle_t handle, const cublasOperation_t transa_array[],                           \
                        const cublasOperation_t transb_array[], const I m_array[], const I n_array[],             \
                        const I k_array[], const void *alpha_array, const void *const Aarray[],                    \
                        cudaDataType_t Atype, const I lda_array[], const void *const Barray[],                     \
                        cudaDataType_t Btype, const I ldb_array[], const void *beta_array, void *const Carray[],   \
                        cudaDataType_t Ctype, const I ldc_array[], I group_count, const I group_size[],            \
                        cublasComputeType_t computeType) {                                                         \
        return grouped(handle, transa_array, transb_array, m_array, n_array, k_array, alpha_array, Aarray, Atype, \
                       lda_array, Barray, Btype, ldb_array, beta_array, Carray, Ctype, ldc_array, group_count,     \
                       group_size, computeType, WIDE);                                                             \
    }
GROUPED_EX(int, cublasGemmGroupedBatchedEx, 0)
GROUPED_EX(int64_t, cublasGemmGroupedBatchedEx_64, 1)

#define GROUPED(T, TYPE, COMPUTE, I, NAME, WIDE)                                                                  \
    cublasStatus_t NAME(cublasHandle_t handle, const cublasOperation_t transa_array[],                           \
                        const cublasOperation_t transb_array[], const I m_array[], const I n_array[],             \
                        const I k_array[], const T alpha_array[], const T *const Aarray[], const I lda_array[],    \
                        const T *const Barray[], const I ldb_array[], const T beta_array[], T *const Carray[],     \
                        const I ldc_array[], I group_count, const I group_size[]) {                                \
        return grouped(handle, transa_array, transb_array, m_array, n_array, k_array, alpha_array,                \
                       (const void *const *)Aarray, TYPE, lda_array, (const void *const *)Barray, TYPE, ldb_array, \
                       beta_array, (void *const *)Carray, TYPE, ldc_array, group_count, group_size, COMPUTE,       \
                       WIDE);                                                                                      \
    }
GROUPED(float, CUDA_R_32F, CUBLAS_COMPUTE_32F, int, cublasSgemmGroupedBatched, 0)
GROUPED(float, CUDA_R_32F, CUBLAS_COMPUTE_32F, int64_t, cublasSgemmGroupedBatched_64, 1)
GROUPED(double, CUDA_R_64F, CUBLAS_COMPUTE_64F, int, cublasDgemmGroupedBatched, 0)
GROUPED(double, CUDA_R_64F, CUBLAS_COMPUTE_64F, int64_t, cublasDgemmGroupedBatched_64, 1)

/* ---- complex GEMMs ----
 * C = alpha op(A) op(B) + beta C on complex f32 (cuComplex) or f64 (cuDoubleComplex)
 * elements, op N, T or C (conjugate transpose); cgemm3m computes the same. Each
 * element is summed in double precision (the simulator models no complex rounding:
 * the library never samples complex calls). A matrix is addressed as element (r, c)
 * at r * rs + c * cs, which describes column-major matrices (rs = 1, cs = ld) and the
 * vectors of gemv alike. With beta = 0, C is not read. */
typedef struct cmat {
    uint64_t ptr;
    int64_t rs, cs;
    long long stride; /* elements between batch members */
} cmat;

typedef struct cgemm {
    int ta, tb;
    int64_t m, n, k, batch;
    cmat a, b, c;
    int ptr_array, dbl, on_device;
    double alpha[2], beta[2];
    uint64_t alpha_ptr, beta_ptr;
} cgemm;

static void cload(const void *p, int dbl, int64_t i, double v[2]) {
    if (dbl) {
        v[0] = ((const double *)p)[2 * i];
        v[1] = ((const double *)p)[2 * i + 1];
    } else {
        v[0] = ((const float *)p)[2 * i];
        v[1] = ((const float *)p)[2 * i + 1];
    }
}

static void cstore(void *p, int dbl, int64_t i, const double v[2]) {
    if (dbl) {
        ((double *)p)[2 * i] = v[0];
        ((double *)p)[2 * i + 1] = v[1];
    } else {
        ((float *)p)[2 * i] = (float)v[0];
        ((float *)p)[2 * i + 1] = (float)v[1];
    }
}

/* Host view of batch member b of an rows x cols matrix, or NULL on an illegal address. */
static void *cspan(const cgemm *g, const cmat *x, int64_t rows, int64_t cols, int64_t b) {
    size_t es = g->dbl ? 16 : 8;
    uint64_t base = x->ptr + (uint64_t)((long long)b * x->stride * (long long)es);
    if (g->ptr_array) {
        const uint64_t *ptrs = sg_dev_span(x->ptr, (size_t)g->batch * sizeof(uint64_t));
        if (!ptrs)
            return NULL;
        base = ptrs[b];
    }
    size_t elems = (size_t)((rows - 1) * x->rs + (cols - 1) * x->cs + 1);
    return rows > 0 && cols > 0 ? sg_dev_span(base, elems * es) : (void *)(uintptr_t)1;
}

/* op(X)(i, l) of a matrix stored as `x` (op applied). */
static void cop(const void *p, const cmat *x, int op, int dbl, int64_t i, int64_t l, double v[2]) {
    if (op == CUBLAS_OP_N)
        cload(p, dbl, i * x->rs + l * x->cs, v);
    else
        cload(p, dbl, l * x->rs + i * x->cs, v);
    if (op == CUBLAS_OP_C)
        v[1] = -v[1];
}

static CUresult run_cgemm(void *payload, uint64_t call_index) {
    (void)call_index; /* fault plans model real arithmetic only */
    const cgemm *g = payload;
    double al[2] = {g->alpha[0], g->alpha[1]}, be[2] = {g->beta[0], g->beta[1]};
    if (g->on_device) {
        const void *pa = sg_dev_span(g->alpha_ptr, g->dbl ? 16 : 8), *pb = sg_dev_span(g->beta_ptr, g->dbl ? 16 : 8);
        if (!pa || !pb)
            return CUDA_ERROR_ILLEGAL_ADDRESS;
        cload(pa, g->dbl, 0, al);
        cload(pb, g->dbl, 0, be);
    }
    int64_t ar = g->ta == CUBLAS_OP_N ? g->m : g->k, ac = g->ta == CUBLAS_OP_N ? g->k : g->m;
    int64_t br = g->tb == CUBLAS_OP_N ? g->k : g->n, bc = g->tb == CUBLAS_OP_N ? g->n : g->k;
    for (int64_t b = 0; b < g->batch; b++) {
        const void *a = cspan(g, &g->a, ar, ac, b), *bb = cspan(g, &g->b, br, bc, b);
        void *c = cspan(g, &g->c, g->m, g->n, b);
        if (!a || !bb || !c)
            return CUDA_ERROR_ILLEGAL_ADDRESS;
        for (int64_t j = 0; j < g->n; j++)
            for (int64_t i = 0; i < g->m; i++) {
                double acc[2] = {0, 0}, x[2], y[2], out[2];
                for (int64_t l = 0; l < g->k; l++) {
                    cop(a, &g->a, g->ta, g->dbl, i, l, x);
                    cop(bb, &g->b, g->tb, g->dbl, l, j, y);
                    acc[0] += x[0] * y[0] - x[1] * y[1];
                    acc[1] += x[0] * y[1] + x[1] * y[0];
                }
                out[0] = al[0] * acc[0] - al[1] * acc[1];
                out[1] = al[0] * acc[1] + al[1] * acc[0];
                if (be[0] != 0 || be[1] != 0) {
                    cop(c, &g->c, CUBLAS_OP_N, g->dbl, i, j, x);
                    out[0] += be[0] * x[0] - be[1] * x[1];
                    out[1] += be[0] * x[1] + be[1] * x[0];
                }
                cstore(c, g->dbl, i * g->c.rs + j * g->c.cs, out);
            }
    }
    return CUDA_SUCCESS;
}

static cublasStatus_t csubmit(cublasHandle_t h, cgemm *g, const void *alpha, const void *beta) {
    if (!valid(h))
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if ((unsigned)g->ta > CUBLAS_OP_C || (unsigned)g->tb > CUBLAS_OP_C || g->m < 0 || g->n < 0 || g->k < 0 ||
        g->batch < 0 || !alpha || !beta)
        return CUBLAS_STATUS_INVALID_VALUE;
    if (g->m == 0 || g->n == 0 || g->batch == 0)
        return CUBLAS_STATUS_SUCCESS;
    if (sg_runtime_ctx(NULL) != CUDA_SUCCESS)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if (h->pointer_mode == CUBLAS_POINTER_MODE_DEVICE) {
        g->on_device = 1;
        g->alpha_ptr = (uint64_t)(uintptr_t)alpha;
        g->beta_ptr = (uint64_t)(uintptr_t)beta;
    } else {
        cload(alpha, g->dbl, 0, g->alpha);
        cload(beta, g->dbl, 0, g->beta);
    }
    cgemm *copy = malloc(sizeof *copy);
    if (!copy)
        return CUBLAS_STATUS_ALLOC_FAILED;
    *copy = *g;
    sg_work w = {run_cgemm, free, copy, 1};
    return sg_submit(h->stream, w) == CUDA_SUCCESS ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
}

static cublasStatus_t cgemm_call(cublasHandle_t h, int dbl, int ptr_array, cublasOperation_t ta,
                                 cublasOperation_t tb, int64_t m, int64_t n, int64_t k, const void *alpha,
                                 const void *A, int64_t lda, long long sa, const void *B, int64_t ldb, long long sb,
                                 const void *beta, const void *C, int64_t ldc, long long sc, int64_t batch) {
    int64_t a_rows = ta != CUBLAS_OP_N ? k : m, b_rows = tb != CUBLAS_OP_N ? n : k;
    if (lda < max1(a_rows) || ldb < max1(b_rows) || ldc < max1(m) || (batch > 0 && (!A || !B || !C)))
        return valid(h) ? CUBLAS_STATUS_INVALID_VALUE : CUBLAS_STATUS_NOT_INITIALIZED;
    cgemm g = {ta, tb, m, n, k, batch,
               {(uint64_t)(uintptr_t)A, 1, lda, sa}, {(uint64_t)(uintptr_t)B, 1, ldb, sb},
               {(uint64_t)(uintptr_t)C, 1, ldc, sc}, ptr_array, dbl, 0, {0, 0}, {0, 0}, 0, 0};
    return csubmit(h, &g, alpha, beta);
}

/* gemv: y = alpha op(A) x + beta y as the GEMM of op(A) (M x K) and x (K x 1). */
static cublasStatus_t cgemv_call(cublasHandle_t h, int dbl, cublasOperation_t trans, int64_t m, int64_t n,
                                 const void *alpha, const void *A, int64_t lda, const void *x, int64_t incx,
                                 const void *beta, void *y, int64_t incy) {
    if (lda < max1(m) || incx <= 0 || incy <= 0)
        return valid(h) ? CUBLAS_STATUS_INVALID_VALUE : CUBLAS_STATUS_NOT_INITIALIZED;
    int t = trans != CUBLAS_OP_N;
    cgemm g = {trans, CUBLAS_OP_N, t ? n : m, 1, t ? m : n, 1,
               {(uint64_t)(uintptr_t)A, 1, lda, 0}, {(uint64_t)(uintptr_t)x, incx, 0, 0},
               {(uint64_t)(uintptr_t)y, incy, 0, 0}, 0, dbl, 0, {0, 0}, {0, 0}, 0, 0};
    return csubmit(h, &g, alpha, beta);
}

#define COMPLEX_FAMILY(T, DBL, GEMM, STRIDED, BATCHED)                                                            \
    cublasStatus_t GEMM##_64(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int64_t m, int64_t n,  \
                             int64_t k, const T *alpha, const T *A, int64_t lda, const T *B, int64_t ldb,          \
                             const T *beta, T *C, int64_t ldc) {                                                   \
        return cgemm_call(h, DBL, 0, ta, tb, m, n, k, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1);          \
    }                                                                                                              \
    INT_GEMM(T, GEMM)                                                                                              \
    cublasStatus_t STRIDED##_64(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int64_t m,          \
                                int64_t n, int64_t k, const T *alpha, const T *A, int64_t lda, long long sa,       \
                                const T *B, int64_t ldb, long long sb, const T *beta, T *C, int64_t ldc,           \
                                long long sc, int64_t batch) {                                                     \
        return cgemm_call(h, DBL, 0, ta, tb, m, n, k, alpha, A, lda, sa, B, ldb, sb, beta, C, ldc, sc, batch);   \
    }                                                                                                              \
    INT_STRIDED(T, STRIDED)                                                                                        \
    cublasStatus_t BATCHED##_64(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int64_t m,          \
                                int64_t n, int64_t k, const T *alpha, const T *const A[], int64_t lda,             \
                                const T *const B[], int64_t ldb, const T *beta, T *const C[], int64_t ldc,         \
                                int64_t batch) {                                                                   \
        return cgemm_call(h, DBL, 1, ta, tb, m, n, k, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, batch);      \
    }                                                                                                              \
    INT_BATCHED(T, BATCHED)
COMPLEX_FAMILY(cuComplex, 0, cublasCgemm_v2, cublasCgemmStridedBatched, cublasCgemmBatched)
COMPLEX_FAMILY(cuComplex, 0, cublasCgemm3m, cublasCgemm3mStridedBatched, cublasCgemm3mBatched)
COMPLEX_FAMILY(cuDoubleComplex, 1, cublasZgemm_v2, cublasZgemmStridedBatched, cublasZgemmBatched)

#define COMPLEX_GEMV(T, DBL, NAME)                                                                                \
    cublasStatus_t NAME##_64(cublasHandle_t h, cublasOperation_t trans, int64_t m, int64_t n, const T *alpha,     \
                             const T *A, int64_t lda, const T *x, int64_t incx, const T *beta, T *y,               \
                             int64_t incy) {                                                                       \
        return cgemv_call(h, DBL, trans, m, n, alpha, A, lda, x, incx, beta, y, incy);                             \
    }                                                                                                              \
    cublasStatus_t NAME(cublasHandle_t h, cublasOperation_t trans, int m, int n, const T *alpha, const T *A,      \
                        int lda, const T *x, int incx, const T *beta, T *y, int incy) {                            \
        return NAME##_64(h, trans, m, n, alpha, A, lda, x, incx, beta, y, incy);                                   \
    }
COMPLEX_GEMV(cuComplex, 0, cublasCgemv_v2)
COMPLEX_GEMV(cuDoubleComplex, 1, cublasZgemv_v2)

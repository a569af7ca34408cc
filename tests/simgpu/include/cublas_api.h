/*
 * Simulated GPU: the subset of cuBLAS (libcublas.so.13) that the simulator
 * implements: handles, streams, modes, and the GEMM entry points, with CUDA 13's
 * enum values and prototypes. Written for this project.
 */
#ifndef SIMGPU_CUBLAS_API_H
#define SIMGPU_CUBLAS_API_H

#include <stdint.h>
#include "driver_types.h"
#include "cuda_fp16.h"
#include "cuda_bf16.h"
#include "library_types.h"
#include "cuComplex.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CUBLASWINAPI
#define CUBLAS_VER_MAJOR 13
#define CUBLAS_VER_MINOR 0
#define CUBLAS_VER_PATCH 0
#define CUBLAS_VERSION (CUBLAS_VER_MAJOR * 10000 + CUBLAS_VER_MINOR * 100 + CUBLAS_VER_PATCH)

typedef enum {
    CUBLAS_STATUS_SUCCESS = 0,
    CUBLAS_STATUS_NOT_INITIALIZED = 1,
    CUBLAS_STATUS_ALLOC_FAILED = 3,
    CUBLAS_STATUS_INVALID_VALUE = 7,
    CUBLAS_STATUS_ARCH_MISMATCH = 8,
    CUBLAS_STATUS_MAPPING_ERROR = 11,
    CUBLAS_STATUS_EXECUTION_FAILED = 13,
    CUBLAS_STATUS_INTERNAL_ERROR = 14,
    CUBLAS_STATUS_NOT_SUPPORTED = 15,
    CUBLAS_STATUS_LICENSE_ERROR = 16
} cublasStatus_t;

typedef enum {
    CUBLAS_OP_N = 0,
    CUBLAS_OP_T = 1,
    CUBLAS_OP_C = 2,
    CUBLAS_OP_HERMITAN = 2,
    CUBLAS_OP_CONJG = 3
} cublasOperation_t;

typedef enum { CUBLAS_POINTER_MODE_HOST = 0, CUBLAS_POINTER_MODE_DEVICE = 1 } cublasPointerMode_t;

typedef enum { CUBLAS_FILL_MODE_LOWER = 0, CUBLAS_FILL_MODE_UPPER = 1, CUBLAS_FILL_MODE_FULL = 2 } cublasFillMode_t;

/* Every algorithm gives the same result on the simulator. */
typedef enum {
    CUBLAS_GEMM_DFALT = -1,
    CUBLAS_GEMM_DEFAULT = -1,
    CUBLAS_GEMM_ALGO0 = 0,
    CUBLAS_GEMM_ALGO23 = 23,
    CUBLAS_GEMM_DEFAULT_TENSOR_OP = 99,
    CUBLAS_GEMM_DFALT_TENSOR_OP = 99,
    CUBLAS_GEMM_ALGO0_TENSOR_OP = 100,
    CUBLAS_GEMM_ALGO15_TENSOR_OP = 115,
    CUBLAS_GEMM_AUTOTUNE = 999
} cublasGemmAlgo_t;

typedef enum {
    CUBLAS_DEFAULT_MATH = 0,
    CUBLAS_TENSOR_OP_MATH = 1,
    CUBLAS_PEDANTIC_MATH = 2,
    CUBLAS_TF32_TENSOR_OP_MATH = 3,
    CUBLAS_FP32_EMULATED_BF16X9_MATH = 4,
    CUBLAS_FP64_EMULATED_FIXEDPOINT_MATH = 8,
    CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION = 16
} cublasMath_t;

typedef cudaDataType cublasDataType_t;

typedef enum {
    CUBLAS_COMPUTE_16F = 64,
    CUBLAS_COMPUTE_16F_PEDANTIC = 65,
    CUBLAS_COMPUTE_32F = 68,
    CUBLAS_COMPUTE_32F_PEDANTIC = 69,
    CUBLAS_COMPUTE_32F_FAST_16F = 74,
    CUBLAS_COMPUTE_32F_FAST_16BF = 75,
    CUBLAS_COMPUTE_32F_FAST_TF32 = 77,
    CUBLAS_COMPUTE_32F_EMULATED_16BFX9 = 78,
    CUBLAS_COMPUTE_64F = 70,
    CUBLAS_COMPUTE_64F_PEDANTIC = 71,
    CUBLAS_COMPUTE_32I = 72,
    CUBLAS_COMPUTE_32I_PEDANTIC = 73
} cublasComputeType_t;

struct cublasContext;
typedef struct cublasContext *cublasHandle_t;

cublasStatus_t CUBLASWINAPI cublasCreate_v2(cublasHandle_t *handle);
cublasStatus_t CUBLASWINAPI cublasDestroy_v2(cublasHandle_t handle);
cublasStatus_t CUBLASWINAPI cublasGetVersion_v2(cublasHandle_t handle, int *version);
cublasStatus_t CUBLASWINAPI cublasSetWorkspace_v2(cublasHandle_t handle, void *workspace, size_t workspaceSizeInBytes);
cublasStatus_t CUBLASWINAPI cublasSetStream_v2(cublasHandle_t handle, cudaStream_t streamId);
cublasStatus_t CUBLASWINAPI cublasGetStream_v2(cublasHandle_t handle, cudaStream_t *streamId);
cublasStatus_t CUBLASWINAPI cublasGetPointerMode_v2(cublasHandle_t handle, cublasPointerMode_t *mode);
cublasStatus_t CUBLASWINAPI cublasSetPointerMode_v2(cublasHandle_t handle, cublasPointerMode_t mode);
cublasStatus_t CUBLASWINAPI cublasGetMathMode(cublasHandle_t handle, cublasMath_t *mode);
cublasStatus_t CUBLASWINAPI cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode);
const char *CUBLASWINAPI cublasGetStatusName(cublasStatus_t status);
const char *CUBLASWINAPI cublasGetStatusString(cublasStatus_t status);

cublasStatus_t CUBLASWINAPI cublasSgemm_v2(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                                           int m, int n, int k, const float *alpha, const float *A, int lda,
                                           const float *B, int ldb, const float *beta, float *C, int ldc);
cublasStatus_t CUBLASWINAPI cublasSgemm_v2_64(cublasHandle_t handle, cublasOperation_t transa,
                                              cublasOperation_t transb, int64_t m, int64_t n, int64_t k,
                                              const float *alpha, const float *A, int64_t lda, const float *B,
                                              int64_t ldb, const float *beta, float *C, int64_t ldc);
cublasStatus_t CUBLASWINAPI cublasDgemm_v2(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                                           int m, int n, int k, const double *alpha, const double *A, int lda,
                                           const double *B, int ldb, const double *beta, double *C, int ldc);
cublasStatus_t CUBLASWINAPI cublasDgemmStridedBatched(cublasHandle_t handle, cublasOperation_t transa,
                                                      cublasOperation_t transb, int m, int n, int k,
                                                      const double *alpha, const double *A, int lda,
                                                      long long int strideA, const double *B, int ldb,
                                                      long long int strideB, const double *beta, double *C, int ldc,
                                                      long long int strideC, int batchCount);
cublasStatus_t CUBLASWINAPI cublasSgemmEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                                          int m, int n, int k, const float *alpha, const void *A, cudaDataType Atype,
                                          int lda, const void *B, cudaDataType Btype, int ldb, const float *beta,
                                          void *C, cudaDataType Ctype, int ldc);
cublasStatus_t CUBLASWINAPI cublasSgemmBatched(cublasHandle_t handle, cublasOperation_t transa,
                                               cublasOperation_t transb, int m, int n, int k, const float *alpha,
                                               const float *const Aarray[], int lda, const float *const Barray[],
                                               int ldb, const float *beta, float *const Carray[], int ldc,
                                               int batchCount);
cublasStatus_t CUBLASWINAPI cublasHgemmBatched(cublasHandle_t handle, cublasOperation_t transa,
                                               cublasOperation_t transb, int m, int n, int k, const __half *alpha,
                                               const __half *const Aarray[], int lda, const __half *const Barray[],
                                               int ldb, const __half *beta, __half *const Carray[], int ldc,
                                               int batchCount);
cublasStatus_t CUBLASWINAPI cublasSgemv_v2(cublasHandle_t handle, cublasOperation_t trans, int m, int n,
                                           const float *alpha, const float *A, int lda, const float *x, int incx,
                                           const float *beta, float *y, int incy);
cublasStatus_t CUBLASWINAPI cublasDgemv_v2(cublasHandle_t handle, cublasOperation_t trans, int m, int n,
                                           const double *alpha, const double *A, int lda, const double *x, int incx,
                                           const double *beta, double *y, int incy);
cublasStatus_t CUBLASWINAPI cublasGemmGroupedBatchedEx(
    cublasHandle_t handle, const cublasOperation_t transa_array[], const cublasOperation_t transb_array[],
    const int m_array[], const int n_array[], const int k_array[], const void *alpha_array, const void *const Aarray[],
    cudaDataType_t Atype, const int lda_array[], const void *const Barray[], cudaDataType_t Btype,
    const int ldb_array[], const void *beta_array, void *const Carray[], cudaDataType_t Ctype, const int ldc_array[],
    int group_count, const int group_size[], cublasComputeType_t computeType);
cublasStatus_t CUBLASWINAPI cublasSgemmGroupedBatched(
    cublasHandle_t handle, const cublasOperation_t transa_array[], const cublasOperation_t transb_array[],
    const int m_array[], const int n_array[], const int k_array[], const float alpha_array[],
    const float *const Aarray[], const int lda_array[], const float *const Barray[], const int ldb_array[],
    const float beta_array[], float *const Carray[], const int ldc_array[], int group_count, const int group_size[]);
cublasStatus_t CUBLASWINAPI cublasHgemm(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                                        int m, int n, int k, const __half *alpha, const __half *A, int lda,
                                        const __half *B, int ldb, const __half *beta, __half *C, int ldc);
cublasStatus_t CUBLASWINAPI cublasSgemmStridedBatched(cublasHandle_t handle, cublasOperation_t transa,
                                                      cublasOperation_t transb, int m, int n, int k,
                                                      const float *alpha, const float *A, int lda,
                                                      long long int strideA, const float *B, int ldb,
                                                      long long int strideB, const float *beta, float *C, int ldc,
                                                      long long int strideC, int batchCount);
cublasStatus_t CUBLASWINAPI cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                                         int m, int n, int k, const void *alpha, const void *A, cudaDataType Atype,
                                         int lda, const void *B, cudaDataType Btype, int ldb, const void *beta,
                                         void *C, cudaDataType Ctype, int ldc, cublasComputeType_t computeType,
                                         cublasGemmAlgo_t algo);
cublasStatus_t CUBLASWINAPI cublasGemmEx_64(cublasHandle_t handle, cublasOperation_t transa,
                                            cublasOperation_t transb, int64_t m, int64_t n, int64_t k,
                                            const void *alpha, const void *A, cudaDataType Atype, int64_t lda,
                                            const void *B, cudaDataType Btype, int64_t ldb, const void *beta,
                                            void *C, cudaDataType Ctype, int64_t ldc,
                                            cublasComputeType_t computeType, cublasGemmAlgo_t algo);
cublasStatus_t CUBLASWINAPI cublasGemmBatchedEx(cublasHandle_t handle, cublasOperation_t transa,
                                                cublasOperation_t transb, int m, int n, int k, const void *alpha,
                                                const void *const Aarray[], cudaDataType Atype, int lda,
                                                const void *const Barray[], cudaDataType Btype, int ldb,
                                                const void *beta, void *const Carray[], cudaDataType Ctype, int ldc,
                                                int batchCount, cublasComputeType_t computeType,
                                                cublasGemmAlgo_t algo);
cublasStatus_t CUBLASWINAPI cublasGemmBatchedEx_64(cublasHandle_t handle, cublasOperation_t transa,
                                                   cublasOperation_t transb, int64_t m, int64_t n, int64_t k,
                                                   const void *alpha, const void *const Aarray[], cudaDataType Atype,
                                                   int64_t lda, const void *const Barray[], cudaDataType Btype,
                                                   int64_t ldb, const void *beta, void *const Carray[],
                                                   cudaDataType Ctype, int64_t ldc, int64_t batchCount,
                                                   cublasComputeType_t computeType, cublasGemmAlgo_t algo);
cublasStatus_t CUBLASWINAPI cublasGemmStridedBatchedEx(cublasHandle_t handle, cublasOperation_t transa,
                                                       cublasOperation_t transb, int m, int n, int k,
                                                       const void *alpha, const void *A, cudaDataType Atype, int lda,
                                                       long long int strideA, const void *B, cudaDataType Btype,
                                                       int ldb, long long int strideB, const void *beta, void *C,
                                                       cudaDataType Ctype, int ldc, long long int strideC,
                                                       int batchCount, cublasComputeType_t computeType,
                                                       cublasGemmAlgo_t algo);
cublasStatus_t CUBLASWINAPI cublasGemmStridedBatchedEx_64(cublasHandle_t handle, cublasOperation_t transa,
                                                          cublasOperation_t transb, int64_t m, int64_t n, int64_t k,
                                                          const void *alpha, const void *A, cudaDataType Atype,
                                                          int64_t lda, long long int strideA, const void *B,
                                                          cudaDataType Btype, int64_t ldb, long long int strideB,
                                                          const void *beta, void *C, cudaDataType Ctype, int64_t ldc,
                                                          long long int strideC, int64_t batchCount,
                                                          cublasComputeType_t computeType, cublasGemmAlgo_t algo);

/* The families below are declared by macro: NAME(int sizes) and NAME_64 (int64_t
 * sizes) of the plain, strided-batched and pointer-array-batched forms. */
#define SIMGPU_DECLARE_GEMM(T, NAME)                                                                              \
    cublasStatus_t CUBLASWINAPI NAME(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, \
                                     int k, const T *alpha, const T *A, int lda, const T *B, int ldb,              \
                                     const T *beta, T *C, int ldc);                                                \
    cublasStatus_t CUBLASWINAPI NAME##_64(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb,          \
                                          int64_t m, int64_t n, int64_t k, const T *alpha, const T *A,             \
                                          int64_t lda, const T *B, int64_t ldb, const T *beta, T *C, int64_t ldc);
#define SIMGPU_DECLARE_STRIDED(T, NAME)                                                                           \
    cublasStatus_t CUBLASWINAPI NAME(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, \
                                     int k, const T *alpha, const T *A, int lda, long long int strideA,            \
                                     const T *B, int ldb, long long int strideB, const T *beta, T *C, int ldc,     \
                                     long long int strideC, int batchCount);                                       \
    cublasStatus_t CUBLASWINAPI NAME##_64(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb,          \
                                          int64_t m, int64_t n, int64_t k, const T *alpha, const T *A,             \
                                          int64_t lda, long long int strideA, const T *B, int64_t ldb,             \
                                          long long int strideB, const T *beta, T *C, int64_t ldc,                 \
                                          long long int strideC, int64_t batchCount);
#define SIMGPU_DECLARE_BATCHED(T, NAME)                                                                           \
    cublasStatus_t CUBLASWINAPI NAME(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, \
                                     int k, const T *alpha, const T *const Aarray[], int lda,                      \
                                     const T *const Barray[], int ldb, const T *beta, T *const Carray[], int ldc,  \
                                     int batchCount);                                                              \
    cublasStatus_t CUBLASWINAPI NAME##_64(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb,          \
                                          int64_t m, int64_t n, int64_t k, const T *alpha,                         \
                                          const T *const Aarray[], int64_t lda, const T *const Barray[],           \
                                          int64_t ldb, const T *beta, T *const Carray[], int64_t ldc,              \
                                          int64_t batchCount);
#define SIMGPU_DECLARE_GEMV(T, NAME)                                                                              \
    cublasStatus_t CUBLASWINAPI NAME(cublasHandle_t h, cublasOperation_t trans, int m, int n, const T *alpha,    \
                                     const T *A, int lda, const T *x, int incx, const T *beta, T *y, int incy);    \
    cublasStatus_t CUBLASWINAPI NAME##_64(cublasHandle_t h, cublasOperation_t trans, int64_t m, int64_t n,       \
                                          const T *alpha, const T *A, int64_t lda, const T *x, int64_t incx,       \
                                          const T *beta, T *y, int64_t incy);

cublasStatus_t CUBLASWINAPI cublasHgemm_64(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int64_t m,
                                           int64_t n, int64_t k, const __half *alpha, const __half *A, int64_t lda,
                                           const __half *B, int64_t ldb, const __half *beta, __half *C,
                                           int64_t ldc);
cublasStatus_t CUBLASWINAPI cublasDgemm_v2_64(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb,
                                              int64_t m, int64_t n, int64_t k, const double *alpha, const double *A,
                                              int64_t lda, const double *B, int64_t ldb, const double *beta,
                                              double *C, int64_t ldc);
SIMGPU_DECLARE_STRIDED(__half, cublasHgemmStridedBatched)
cublasStatus_t CUBLASWINAPI cublasSgemmStridedBatched_64(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb,
                                                         int64_t m, int64_t n, int64_t k, const float *alpha,
                                                         const float *A, int64_t lda, long long int strideA,
                                                         const float *B, int64_t ldb, long long int strideB,
                                                         const float *beta, float *C, int64_t ldc,
                                                         long long int strideC, int64_t batchCount);
cublasStatus_t CUBLASWINAPI cublasDgemmStridedBatched_64(cublasHandle_t h, cublasOperation_t ta,
                                                         cublasOperation_t tb, int64_t m, int64_t n, int64_t k,
                                                         const double *alpha, const double *A, int64_t lda,
                                                         long long int strideA, const double *B, int64_t ldb,
                                                         long long int strideB, const double *beta, double *C,
                                                         int64_t ldc, long long int strideC, int64_t batchCount);
cublasStatus_t CUBLASWINAPI cublasSgemmEx_64(cublasHandle_t handle, cublasOperation_t transa,
                                             cublasOperation_t transb, int64_t m, int64_t n, int64_t k,
                                             const float *alpha, const void *A, cudaDataType Atype, int64_t lda,
                                             const void *B, cudaDataType Btype, int64_t ldb, const float *beta,
                                             void *C, cudaDataType Ctype, int64_t ldc);
cublasStatus_t CUBLASWINAPI cublasSgemmBatched_64(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb,
                                                  int64_t m, int64_t n, int64_t k, const float *alpha,
                                                  const float *const Aarray[], int64_t lda,
                                                  const float *const Barray[], int64_t ldb, const float *beta,
                                                  float *const Carray[], int64_t ldc, int64_t batchCount);
cublasStatus_t CUBLASWINAPI cublasHgemmBatched_64(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb,
                                                  int64_t m, int64_t n, int64_t k, const __half *alpha,
                                                  const __half *const Aarray[], int64_t lda,
                                                  const __half *const Barray[], int64_t ldb, const __half *beta,
                                                  __half *const Carray[], int64_t ldc, int64_t batchCount);
SIMGPU_DECLARE_BATCHED(double, cublasDgemmBatched)
cublasStatus_t CUBLASWINAPI cublasSgemv_v2_64(cublasHandle_t h, cublasOperation_t trans, int64_t m, int64_t n,
                                              const float *alpha, const float *A, int64_t lda, const float *x,
                                              int64_t incx, const float *beta, float *y, int64_t incy);
cublasStatus_t CUBLASWINAPI cublasDgemv_v2_64(cublasHandle_t h, cublasOperation_t trans, int64_t m, int64_t n,
                                              const double *alpha, const double *A, int64_t lda, const double *x,
                                              int64_t incx, const double *beta, double *y, int64_t incy);
cublasStatus_t CUBLASWINAPI cublasGemmGroupedBatchedEx_64(
    cublasHandle_t handle, const cublasOperation_t transa_array[], const cublasOperation_t transb_array[],
    const int64_t m_array[], const int64_t n_array[], const int64_t k_array[], const void *alpha_array,
    const void *const Aarray[], cudaDataType_t Atype, const int64_t lda_array[], const void *const Barray[],
    cudaDataType_t Btype, const int64_t ldb_array[], const void *beta_array, void *const Carray[],
    cudaDataType_t Ctype, const int64_t ldc_array[], int64_t group_count, const int64_t group_size[],
    cublasComputeType_t computeType);
#define SIMGPU_DECLARE_GROUPED(T, I, NAME)                                                                        \
    cublasStatus_t CUBLASWINAPI NAME(cublasHandle_t handle, const cublasOperation_t transa_array[],             \
                                     const cublasOperation_t transb_array[], const I m_array[], const I n_array[], \
                                     const I k_array[], const T alpha_array[], const T *const Aarray[],            \
                                     const I lda_array[], const T *const Barray[], const I ldb_array[],            \
                                     const T beta_array[], T *const Carray[], const I ldc_array[], I group_count,  \
                                     const I group_size[]);
SIMGPU_DECLARE_GROUPED(float, int64_t, cublasSgemmGroupedBatched_64)
SIMGPU_DECLARE_GROUPED(double, int, cublasDgemmGroupedBatched)
SIMGPU_DECLARE_GROUPED(double, int64_t, cublasDgemmGroupedBatched_64)

/* Complex GEMMs (cuComplex / cuDoubleComplex elements). */
SIMGPU_DECLARE_GEMM(cuComplex, cublasCgemm_v2)
SIMGPU_DECLARE_GEMM(cuComplex, cublasCgemm3m)
SIMGPU_DECLARE_GEMM(cuDoubleComplex, cublasZgemm_v2)
SIMGPU_DECLARE_STRIDED(cuComplex, cublasCgemmStridedBatched)
SIMGPU_DECLARE_STRIDED(cuComplex, cublasCgemm3mStridedBatched)
SIMGPU_DECLARE_STRIDED(cuDoubleComplex, cublasZgemmStridedBatched)
SIMGPU_DECLARE_BATCHED(cuComplex, cublasCgemmBatched)
SIMGPU_DECLARE_BATCHED(cuComplex, cublasCgemm3mBatched)
SIMGPU_DECLARE_BATCHED(cuDoubleComplex, cublasZgemmBatched)
SIMGPU_DECLARE_GEMV(cuComplex, cublasCgemv_v2)
SIMGPU_DECLARE_GEMV(cuDoubleComplex, cublasZgemv_v2)

#ifdef __cplusplus
}
#endif

#endif /* SIMGPU_CUBLAS_API_H */

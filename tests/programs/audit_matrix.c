/*
 * Every GEMM entry point that libmmaudit.so hooks, crossed with what changes
 * how a call must be audited: data/compute types (f32, tf32, f32 with f16/bf16
 * input rounding, f16 with f16 or f32 accumulation, bf16, i8->i32, i8->f32, f64,
 * fp8 e4m3/e5m2 with scales and amax), transposes, batch form (single, strided,
 * pointer array), beta zero / nonzero / in place (C == D, cuBLASLt), cuBLASLt
 * epilogues (DEFAULT, RELU, BIAS, RELU_BIAS, GELU, GELU_BIAS), row-major
 * cuBLASLt layouts, host and device pointer modes,
 * legacy and created streams. Small shapes, so the whole matrix runs in well
 * under a second on the simulated GPU.
 *
 *   audit_matrix [--trace]                     the matrix
 *   audit_matrix --repeat N [--shape M,N,K] [--trace]
 *                                              N identical-shape f32 cublasGemmEx calls
 *                                              (default 64,32,64): the detection-rate tests
 *   audit_matrix --bias-per-batch [--trace]    batched cuBLASLt calls with a bias vector
 *                                              per batch entry (flag BIAS_PER_BATCH)
 *
 * Prints "calls N" and "output-hash H" (see audit_common.h); exits 0, or 2 when a
 * call fails. It checks no result itself: the verifier and the hash comparison
 * with a run without the interposer do.
 */
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "audit_common.h"

static cublasHandle_t handle;
static cublasLtHandle_t lt;
static cudaStream_t stream; /* the handles' stream; NULL while a case uses the legacy stream */
static uint64_t ncalls, total_hash = FNV_OFFSET, next_seed = 1;
static int trace;

enum entry { SGEMM, SGEMM_64, HGEMM, SGEMM_SB, GEMM_EX, GEMM_EX_64, SB_EX, SB_EX_64, B_EX, B_EX_64, LT };

static const char *entry_name[] = {"cublasSgemm_v2",         "cublasSgemm_v2_64",          "cublasHgemm",
                                   "cublasSgemmStridedBatched", "cublasGemmEx",            "cublasGemmEx_64",
                                   "cublasGemmStridedBatchedEx", "cublasGemmStridedBatchedEx_64",
                                   "cublasGemmBatchedEx",     "cublasGemmBatchedEx_64",     "cublasLtMatmul"};

typedef struct types {
    const char *name;
    int at, bt, ct, dt;
    cublasComputeType_t compute;
    int scale;   /* type of alpha and beta */
    int math;    /* cublasMath_t for the cuBLAS API */
} types;

/* ---- device buffers --------------------------------------------------------- */

typedef struct buf {
    void *dev;
    unsigned char *host;
    size_t bytes;
} buf;

static void buf_make(buf *b, int type, size_t n) {
    b->bytes = n * type_size(type);
    b->host = malloc(b->bytes ? b->bytes : 1);
    fill_random(b->host, type, n, next_seed++);
    MUST(cudaMalloc(&b->dev, b->bytes ? b->bytes : 1));
    MUST(cudaMemcpyAsync(b->dev, b->host, b->bytes, cudaMemcpyHostToDevice, stream));
}

static void buf_drop(buf *b) {
    free(b->host);
    MUST(cudaFree(b->dev));
}

/* A scalar in device memory. */
static void *dev_scalar(const void *host, size_t size) {
    void *d;
    MUST(cudaMalloc(&d, 8));
    MUST(cudaMemcpyAsync(d, host, size, cudaMemcpyHostToDevice, stream));
    return d;
}

/* Copies a call's output back, hashes it and counts the call. */
static void finish_call(enum entry e, int64_t m, int64_t n, int64_t k, int64_t batch, const buf *out,
                        const void *extra_dev, size_t extra_bytes, const char *note) {
    unsigned char *got = malloc(out->bytes + extra_bytes + 1);
    MUST(cudaMemcpyAsync(got, out->dev, out->bytes, cudaMemcpyDeviceToHost, stream));
    if (extra_dev)
        MUST(cudaMemcpyAsync(got + out->bytes, extra_dev, extra_bytes, cudaMemcpyDeviceToHost, stream));
    MUST(cudaStreamSynchronize(stream));
    uint64_t h = fnv1a(FNV_OFFSET, got, out->bytes + extra_bytes);
    total_hash = fnv1a(total_hash, got, out->bytes + extra_bytes);
    if (trace)
        printf("call %llu %s m=%lld n=%lld k=%lld batch=%lld hash=%016llx%s%s\n", (unsigned long long)ncalls,
               entry_name[e], (long long)m, (long long)n, (long long)k, (long long)batch, (unsigned long long)h,
               note ? " " : "", note ? note : "");
    ncalls++;
    free(got);
}

/* ---- the cuBLAS API ----------------------------------------------------------- */

typedef struct gemm {
    enum entry e;
    const types *t;
    int ta, tb; /* cublasOperation_t */
    int beta_nonzero;
    int device_mode;
    int64_t m, n, k, batch;
} gemm;

static void run_cublas(const gemm *g) {
    const types *t = g->t;
    int64_t m = g->m, n = g->n, k = g->k, batch = g->batch;
    int64_t a_rows = g->ta ? k : m, a_cols = g->ta ? m : k;
    int64_t b_rows = g->tb ? n : k, b_cols = g->tb ? k : n;
    /* Padded leading dimensions and batch strides: a wrong one shows. */
    int64_t lda = a_rows + 1, ldb = b_rows + 2, ldc = m + 1;
    int64_t sa = lda * a_cols + 3, sb = ldb * b_cols + 1, sc = ldc * n + 2;
    buf A, B, C;
    buf_make(&A, t->at, (size_t)(sa * batch));
    buf_make(&B, t->bt, (size_t)(sb * batch));
    buf_make(&C, t->ct, (size_t)(sc * batch));

    int integer = t->scale == CUDA_R_32I;
    unsigned char ha[8] = {0}, hb[8] = {0};
    put_scalar(ha, t->scale, integer ? 2 : 0.75);
    put_scalar(hb, t->scale, g->beta_nonzero ? (integer ? 3 : -0.5) : 0);
    void *da = NULL, *db = NULL;
    const void *alpha = ha, *beta = hb;
    if (g->device_mode) {
        da = dev_scalar(ha, type_size(t->scale));
        db = dev_scalar(hb, type_size(t->scale));
        alpha = da;
        beta = db;
    }
    MUST(cublasSetPointerMode_v2(handle, g->device_mode ? CUBLAS_POINTER_MODE_DEVICE : CUBLAS_POINTER_MODE_HOST));
    MUST(cublasSetMathMode(handle, (cublasMath_t)t->math));

    /* Pointer arrays (device memory, as cuBLAS requires) for the batched forms. */
    void **arrays = NULL;
    if (g->e == B_EX || g->e == B_EX_64) {
        void *host_ptrs[3 * 8];
        for (int64_t i = 0; i < batch; i++) {
            host_ptrs[i] = (unsigned char *)A.dev + (size_t)(i * sa) * type_size(t->at);
            host_ptrs[batch + i] = (unsigned char *)B.dev + (size_t)(i * sb) * type_size(t->bt);
            host_ptrs[2 * batch + i] = (unsigned char *)C.dev + (size_t)(i * sc) * type_size(t->ct);
        }
        MUST(cudaMalloc((void **)&arrays, sizeof(void *) * 3 * (size_t)batch));
        MUST(cudaMemcpyAsync(arrays, host_ptrs, sizeof(void *) * 3 * (size_t)batch, cudaMemcpyHostToDevice, stream));
    }
    cublasOperation_t ta = (cublasOperation_t)g->ta, tb = (cublasOperation_t)g->tb;
    cublasGemmAlgo_t algo = CUBLAS_GEMM_DEFAULT;
    switch (g->e) {
    case SGEMM:
        MUST(cublasSgemm_v2(handle, ta, tb, (int)m, (int)n, (int)k, alpha, A.dev, (int)lda, B.dev, (int)ldb, beta, C.dev,
                            (int)ldc));
        break;
    case SGEMM_64:
        MUST(cublasSgemm_v2_64(handle, ta, tb, m, n, k, alpha, A.dev, lda, B.dev, ldb, beta, C.dev, ldc));
        break;
    case HGEMM:
        MUST(cublasHgemm(handle, ta, tb, (int)m, (int)n, (int)k, alpha, A.dev, (int)lda, B.dev, (int)ldb, beta, C.dev,
                         (int)ldc));
        break;
    case SGEMM_SB:
        MUST(cublasSgemmStridedBatched(handle, ta, tb, (int)m, (int)n, (int)k, alpha, A.dev, (int)lda, sa, B.dev,
                                       (int)ldb, sb, beta, C.dev, (int)ldc, sc, (int)batch));
        break;
    case GEMM_EX:
        MUST(cublasGemmEx(handle, ta, tb, (int)m, (int)n, (int)k, alpha, A.dev, t->at, (int)lda, B.dev, t->bt, (int)ldb,
                          beta, C.dev, t->ct, (int)ldc, t->compute, algo));
        break;
    case GEMM_EX_64:
        MUST(cublasGemmEx_64(handle, ta, tb, m, n, k, alpha, A.dev, t->at, lda, B.dev, t->bt, ldb, beta, C.dev, t->ct,
                             ldc, t->compute, algo));
        break;
    case SB_EX:
        MUST(cublasGemmStridedBatchedEx(handle, ta, tb, (int)m, (int)n, (int)k, alpha, A.dev, t->at, (int)lda, sa, B.dev,
                                        t->bt, (int)ldb, sb, beta, C.dev, t->ct, (int)ldc, sc, (int)batch, t->compute,
                                        algo));
        break;
    case SB_EX_64:
        MUST(cublasGemmStridedBatchedEx_64(handle, ta, tb, m, n, k, alpha, A.dev, t->at, lda, sa, B.dev, t->bt, ldb, sb,
                                           beta, C.dev, t->ct, ldc, sc, batch, t->compute, algo));
        break;
    case B_EX:
        MUST(cublasGemmBatchedEx(handle, ta, tb, (int)m, (int)n, (int)k, alpha, (const void *const *)arrays, t->at,
                                 (int)lda, (const void *const *)(arrays + batch), t->bt, (int)ldb, beta,
                                 arrays + 2 * batch, t->ct, (int)ldc, (int)batch, t->compute, algo));
        break;
    case B_EX_64:
        MUST(cublasGemmBatchedEx_64(handle, ta, tb, m, n, k, alpha, (const void *const *)arrays, t->at, lda,
                                    (const void *const *)(arrays + batch), t->bt, ldb, beta, arrays + 2 * batch, t->ct,
                                    ldc, batch, t->compute, algo));
        break;
    case LT:
        break;
    }
    finish_call(g->e, m, n, k, batch, &C, NULL, 0, NULL);
    MUST(cublasSetPointerMode_v2(handle, CUBLAS_POINTER_MODE_HOST));
    MUST(cublasSetMathMode(handle, CUBLAS_DEFAULT_MATH));
    if (arrays)
        MUST(cudaFree(arrays));
    if (da) {
        MUST(cudaFree(da));
        MUST(cudaFree(db));
    }
    buf_drop(&A);
    buf_drop(&B);
    buf_drop(&C);
}

static const types f32_types[] = {
    {"f32", CUDA_R_32F, CUDA_R_32F, CUDA_R_32F, CUDA_R_32F, CUBLAS_COMPUTE_32F, CUDA_R_32F, CUBLAS_DEFAULT_MATH},
    {"f32 tf32-math", CUDA_R_32F, CUDA_R_32F, CUDA_R_32F, CUDA_R_32F, CUBLAS_COMPUTE_32F, CUDA_R_32F,
     CUBLAS_TF32_TENSOR_OP_MATH},
};

static const types hgemm_type = {"f16 16F", CUDA_R_16F, CUDA_R_16F, CUDA_R_16F, CUDA_R_16F, CUBLAS_COMPUTE_16F,
                                 CUDA_R_16F, CUBLAS_DEFAULT_MATH};

static const types ex_types[] = {
    {"f32", CUDA_R_32F, CUDA_R_32F, CUDA_R_32F, CUDA_R_32F, CUBLAS_COMPUTE_32F, CUDA_R_32F, CUBLAS_DEFAULT_MATH},
    {"f32 fast-tf32", CUDA_R_32F, CUDA_R_32F, CUDA_R_32F, CUDA_R_32F, CUBLAS_COMPUTE_32F_FAST_TF32, CUDA_R_32F,
     CUBLAS_DEFAULT_MATH},
    {"f32 tf32-math", CUDA_R_32F, CUDA_R_32F, CUDA_R_32F, CUDA_R_32F, CUBLAS_COMPUTE_32F, CUDA_R_32F,
     CUBLAS_TF32_TENSOR_OP_MATH},
    {"f32 fast-16f", CUDA_R_32F, CUDA_R_32F, CUDA_R_32F, CUDA_R_32F, CUBLAS_COMPUTE_32F_FAST_16F, CUDA_R_32F,
     CUBLAS_DEFAULT_MATH},
    {"f32 fast-16bf", CUDA_R_32F, CUDA_R_32F, CUDA_R_32F, CUDA_R_32F, CUBLAS_COMPUTE_32F_FAST_16BF, CUDA_R_32F,
     CUBLAS_DEFAULT_MATH},
    {"f16 32F", CUDA_R_16F, CUDA_R_16F, CUDA_R_16F, CUDA_R_16F, CUBLAS_COMPUTE_32F, CUDA_R_32F, CUBLAS_DEFAULT_MATH},
    {"f16 16F", CUDA_R_16F, CUDA_R_16F, CUDA_R_16F, CUDA_R_16F, CUBLAS_COMPUTE_16F, CUDA_R_16F, CUBLAS_DEFAULT_MATH},
    {"f16->f32", CUDA_R_16F, CUDA_R_16F, CUDA_R_32F, CUDA_R_32F, CUBLAS_COMPUTE_32F, CUDA_R_32F, CUBLAS_DEFAULT_MATH},
    {"bf16", CUDA_R_16BF, CUDA_R_16BF, CUDA_R_16BF, CUDA_R_16BF, CUBLAS_COMPUTE_32F, CUDA_R_32F, CUBLAS_DEFAULT_MATH},
    {"bf16->f32", CUDA_R_16BF, CUDA_R_16BF, CUDA_R_32F, CUDA_R_32F, CUBLAS_COMPUTE_32F, CUDA_R_32F,
     CUBLAS_DEFAULT_MATH},
    {"i8->i32", CUDA_R_8I, CUDA_R_8I, CUDA_R_32I, CUDA_R_32I, CUBLAS_COMPUTE_32I, CUDA_R_32I, CUBLAS_DEFAULT_MATH},
    {"i8->f32", CUDA_R_8I, CUDA_R_8I, CUDA_R_32F, CUDA_R_32F, CUBLAS_COMPUTE_32F, CUDA_R_32F, CUBLAS_DEFAULT_MATH},
    {"f64", CUDA_R_64F, CUDA_R_64F, CUDA_R_64F, CUDA_R_64F, CUBLAS_COMPUTE_64F, CUDA_R_64F, CUBLAS_DEFAULT_MATH},
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* Every transpose x beta x pointer mode of one entry point and type. */
static void cublas_cross(enum entry e, const types *t, int64_t batch) {
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (int beta = 0; beta < 2; beta++)
                for (int dev = 0; dev < 2; dev++) {
                    gemm g = {e, t, ta, tb, beta, dev, 7, 5, 9, batch};
                    run_cublas(&g);
                }
}

static void cublas_matrix(void) {
    for (size_t i = 0; i < COUNT(f32_types); i++) {
        cublas_cross(SGEMM, &f32_types[i], 1);
        cublas_cross(SGEMM_64, &f32_types[i], 1);
        cublas_cross(SGEMM_SB, &f32_types[i], 3);
    }
    /* CUBLAS_OP_C on real data is a transpose. */
    for (int c = 0; c < 3; c++) {
        gemm g = {SGEMM, &f32_types[0], c == 0 ? CUBLAS_OP_C : CUBLAS_OP_N, c == 0 ? CUBLAS_OP_N : CUBLAS_OP_C, c == 2,
                  0, 7, 5, 9, 1};
        run_cublas(&g);
    }
    /* Hgemm on the legacy default stream. */
    cudaStream_t saved = stream;
    stream = NULL;
    MUST(cublasSetStream_v2(handle, NULL));
    cublas_cross(HGEMM, &hgemm_type, 1);
    stream = saved;
    MUST(cublasSetStream_v2(handle, stream));
    for (size_t i = 0; i < COUNT(ex_types); i++) {
        cublas_cross(GEMM_EX, &ex_types[i], 1);
        cublas_cross(GEMM_EX_64, &ex_types[i], 1);
        cublas_cross(SB_EX, &ex_types[i], 3);
        cublas_cross(SB_EX_64, &ex_types[i], 3);
        cublas_cross(B_EX, &ex_types[i], 3);
        cublas_cross(B_EX_64, &ex_types[i], 3);
    }
}

/* ---- cuBLASLt --------------------------------------------------------------------- */

enum beta_kind { BETA_ZERO, BETA_NONZERO, IN_PLACE };

typedef struct ltcase {
    const types *t;
    int ta, tb;
    enum beta_kind beta;
    int device_mode;
    int64_t batch;
    uint32_t epilogue;
    int row_order;
    int bias_per_batch; /* a bias vector per batch entry (BIAS_BATCH_STRIDE = m) */
} ltcase;

static int is_fp8(int type) { return type == CUDA_R_8F_E4M3 || type == CUDA_R_8F_E5M2; }

/* A matrix layout of rows x cols (padded ld and batch stride) and its buffer. */
typedef struct lmat {
    buf data;
    cublasLtMatrixLayout_t layout;
    int64_t stride;
} lmat;

static void lmat_make(lmat *x, int type, int64_t rows, int64_t cols, int row_order, int64_t batch, int pad) {
    int64_t ld = (row_order ? cols : rows) + pad;
    x->stride = ld * (row_order ? rows : cols) + 1;
    buf_make(&x->data, type, (size_t)(x->stride * batch));
    MUST(cublasLtMatrixLayoutCreate(&x->layout, (cudaDataType)type, (uint64_t)rows, (uint64_t)cols, ld));
    int32_t order = row_order ? CUBLASLT_ORDER_ROW : CUBLASLT_ORDER_COL, count = (int32_t)batch;
    MUST(cublasLtMatrixLayoutSetAttribute(x->layout, CUBLASLT_MATRIX_LAYOUT_ORDER, &order, sizeof order));
    if (batch > 1) {
        MUST(cublasLtMatrixLayoutSetAttribute(x->layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof count));
        MUST(cublasLtMatrixLayoutSetAttribute(x->layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &x->stride,
                                              sizeof x->stride));
    }
}

static void lmat_drop(lmat *x) {
    buf_drop(&x->data);
    MUST(cublasLtMatrixLayoutDestroy(x->layout));
}

static void run_lt(const ltcase *c) {
    const types *t = c->t;
    const int64_t m = 6, n = 5, k = 8, batch = c->batch;
    lmat A, B, C, D;
    lmat_make(&A, t->at, c->ta ? k : m, c->ta ? m : k, c->row_order, batch, 1);
    lmat_make(&B, t->bt, c->tb ? n : k, c->tb ? k : n, c->row_order, batch, 2);
    lmat_make(&C, t->ct, m, n, c->row_order, batch, 1);
    lmat *out = &C;
    if (c->beta != IN_PLACE) {
        lmat_make(&D, t->dt, m, n, c->row_order, batch, 3);
        out = &D;
    }

    cublasLtMatmulDesc_t desc;
    MUST(cublasLtMatmulDescCreate(&desc, t->compute, (cudaDataType)t->scale));
    int32_t ta = c->ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb = c->tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    MUST(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    MUST(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    MUST(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &c->epilogue, sizeof c->epilogue));

    buf bias = {0};
    if (c->epilogue & CUBLASLT_EPILOGUE_BIAS) {
        int bias_type = is_fp8(t->dt) ? t->ct : t->dt;
        int64_t stride = c->bias_per_batch ? m : 0;
        buf_make(&bias, bias_type, (size_t)(c->bias_per_batch ? m * batch : m));
        MUST(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias.dev, sizeof bias.dev));
        MUST(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE, &stride, sizeof stride));
    }
    /* fp8: per-tensor scales of A and B; fp8 output: scales of C and D and amax. */
    float *scales = NULL, *amax = NULL;
    if (is_fp8(t->at) || is_fp8(t->bt)) {
        const float host_scales[4] = {2.0f, 0.5f, 0.75f, 4.0f};
        MUST(cudaMalloc((void **)&scales, sizeof host_scales));
        MUST(cudaMemcpyAsync(scales, host_scales, sizeof host_scales, cudaMemcpyHostToDevice, stream));
        const void *pa = scales, *pb = scales + 1, *pc = scales + 2, *pd = scales + 3;
        MUST(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &pa, sizeof pa));
        MUST(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &pb, sizeof pb));
        if (is_fp8(t->dt)) {
            MUST(cudaMalloc((void **)&amax, sizeof(float)));
            MUST(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_C_SCALE_POINTER, &pc, sizeof pc));
            MUST(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_D_SCALE_POINTER, &pd, sizeof pd));
            MUST(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_AMAX_D_POINTER, &amax, sizeof amax));
        }
    }

    int integer = t->scale == CUDA_R_32I;
    unsigned char ha[8] = {0}, hb[8] = {0};
    put_scalar(ha, t->scale, integer ? 2 : 0.75);
    put_scalar(hb, t->scale, c->beta == BETA_ZERO ? 0 : integer ? 3 : -0.5);
    void *da = NULL, *db = NULL;
    const void *alpha = ha, *beta = hb;
    if (c->device_mode) {
        int32_t mode = CUBLASLT_POINTER_MODE_DEVICE;
        MUST(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_POINTER_MODE, &mode, sizeof mode));
        da = dev_scalar(ha, type_size(t->scale));
        db = dev_scalar(hb, type_size(t->scale));
        alpha = da;
        beta = db;
    }
    MUST(cublasLtMatmul(lt, desc, alpha, A.data.dev, A.layout, B.data.dev, B.layout, beta, C.data.dev, C.layout,
                        out->data.dev, out->layout, NULL, NULL, 0, stream));
    /* The descriptor goes away at once, as frameworks do: the hook must have read it. */
    MUST(cublasLtMatmulDescDestroy(desc));
    finish_call(LT, m, n, k, batch, &out->data, amax, amax ? sizeof(float) : 0,
                c->bias_per_batch ? "bias-per-batch" : NULL);
    if (da) {
        MUST(cudaFree(da));
        MUST(cudaFree(db));
    }
    if (scales)
        MUST(cudaFree(scales));
    if (amax)
        MUST(cudaFree(amax));
    if (bias.dev)
        buf_drop(&bias);
    lmat_drop(&A);
    lmat_drop(&B);
    lmat_drop(&C);
    if (out == &D)
        lmat_drop(&D);
}

static const types lt_types[] = {
    {"f32", CUDA_R_32F, CUDA_R_32F, CUDA_R_32F, CUDA_R_32F, CUBLAS_COMPUTE_32F, CUDA_R_32F, 0},
    {"f32 fast-tf32", CUDA_R_32F, CUDA_R_32F, CUDA_R_32F, CUDA_R_32F, CUBLAS_COMPUTE_32F_FAST_TF32, CUDA_R_32F, 0},
    {"f16", CUDA_R_16F, CUDA_R_16F, CUDA_R_16F, CUDA_R_16F, CUBLAS_COMPUTE_32F, CUDA_R_32F, 0},
    {"bf16", CUDA_R_16BF, CUDA_R_16BF, CUDA_R_16BF, CUDA_R_16BF, CUBLAS_COMPUTE_32F, CUDA_R_32F, 0},
    {"bf16->f32", CUDA_R_16BF, CUDA_R_16BF, CUDA_R_32F, CUDA_R_32F, CUBLAS_COMPUTE_32F, CUDA_R_32F, 0},
    {"i8->i32", CUDA_R_8I, CUDA_R_8I, CUDA_R_32I, CUDA_R_32I, CUBLAS_COMPUTE_32I, CUDA_R_32I, 0},
    {"e4m3xe4m3->bf16", CUDA_R_8F_E4M3, CUDA_R_8F_E4M3, CUDA_R_16BF, CUDA_R_16BF, CUBLAS_COMPUTE_32F, CUDA_R_32F, 0},
    {"e4m3xe5m2->f32", CUDA_R_8F_E4M3, CUDA_R_8F_E5M2, CUDA_R_32F, CUDA_R_32F, CUBLAS_COMPUTE_32F, CUDA_R_32F, 0},
    {"e4m3xe4m3->e4m3", CUDA_R_8F_E4M3, CUDA_R_8F_E4M3, CUDA_R_16F, CUDA_R_8F_E4M3, CUBLAS_COMPUTE_32F, CUDA_R_32F,
     0},
    {"f64", CUDA_R_64F, CUDA_R_64F, CUDA_R_64F, CUDA_R_64F, CUBLAS_COMPUTE_64F, CUDA_R_64F, 0},
};

static void lt_matrix(void) {
    static const uint32_t epilogues[] = {CUBLASLT_EPILOGUE_RELU, CUBLASLT_EPILOGUE_BIAS, CUBLASLT_EPILOGUE_RELU_BIAS,
                                         CUBLASLT_EPILOGUE_GELU, CUBLASLT_EPILOGUE_GELU_BIAS};
    for (size_t i = 0; i < COUNT(lt_types); i++) {
        const types *t = &lt_types[i];
        /* In place needs C and D of one type: not for fp8 output. */
        int last_beta = t->ct == t->dt ? IN_PLACE : BETA_NONZERO;
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (int beta = BETA_ZERO; beta <= last_beta; beta++)
                    for (int dev = 0; dev < 2; dev++)
                        for (int batch = 1; batch <= 2; batch++) {
                            ltcase c = {t, ta, tb, (enum beta_kind)beta, dev, batch, CUBLASLT_EPILOGUE_DEFAULT, 0, 0};
                            run_lt(&c);
                        }
        /* Row-major layouts. */
        for (int tb = 0; tb < 2; tb++) {
            ltcase c = {t, 1, tb, tb ? BETA_NONZERO : BETA_ZERO, tb, 1, CUBLASLT_EPILOGUE_DEFAULT, 1, 0};
            run_lt(&c);
        }
        if (t->compute == CUBLAS_COMPUTE_32I)
            continue; /* epilogues are for floating-point output */
        for (size_t e = 0; e < COUNT(epilogues); e++)
            for (int beta = BETA_ZERO; beta <= last_beta; beta++)
                for (int dev = 0; dev < 2; dev++) {
                    /* nn.Linear's layout: weights transposed. */
                    ltcase c = {t, 1, 0, (enum beta_kind)beta, dev, 1 + (int)(e % 2), epilogues[e], 0, 0};
                    run_lt(&c);
                }
    }
}

/* Strided batches with one bias vector per batch entry (BIAS_BATCH_STRIDE = m): the
 * samples carry one bias vector per sampled batch entry (flag BIAS_PER_BATCH). A
 * separate mode, so that the matrix's own counts stay as they are. */
static void lt_bias_per_batch(void) {
    static const uint32_t epilogues[] = {CUBLASLT_EPILOGUE_BIAS, CUBLASLT_EPILOGUE_RELU_BIAS,
                                         CUBLASLT_EPILOGUE_GELU_BIAS};
    for (size_t i = 0; i < COUNT(lt_types); i++) {
        if (lt_types[i].compute == CUBLAS_COMPUTE_32I)
            continue;
        for (size_t e = 0; e < COUNT(epilogues); e++)
            for (int dev = 0; dev < 2; dev++) {
                ltcase c = {&lt_types[i], 1, 0, BETA_ZERO, dev, 2, epilogues[e], 0, 1};
                run_lt(&c);
            }
    }
}

/* ---- the detection-rate workload ------------------------------------------------ */

static void repeat(long count, int64_t m, int64_t n, int64_t k) {
    static const types f32 = {"f32", CUDA_R_32F, CUDA_R_32F, CUDA_R_32F, CUDA_R_32F, CUBLAS_COMPUTE_32F, CUDA_R_32F,
                              CUBLAS_DEFAULT_MATH};
    for (long i = 0; i < count; i++) {
        gemm g = {GEMM_EX, &f32, CUBLAS_OP_T, CUBLAS_OP_N, 0, 0, m, n, k, 1};
        run_cublas(&g);
    }
}

static void usage(void) {
    fprintf(stderr, "usage: audit_matrix [--trace] [--repeat N [--shape M,N,K] | --bias-per-batch]\n");
    exit(2);
}

int main(int argc, char **argv) {
    long repeat_count = -1;
    int bias_per_batch = 0;
    long long m = 64, n = 32, k = 64;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--trace"))
            trace = 1;
        else if (!strcmp(argv[i], "--bias-per-batch"))
            bias_per_batch = 1;
        else if (!strcmp(argv[i], "--repeat") && i + 1 < argc)
            repeat_count = atol(argv[++i]);
        else if (!strcmp(argv[i], "--shape") && i + 1 < argc) {
            if (sscanf(argv[++i], "%lld,%lld,%lld", &m, &n, &k) != 3 || m < 1 || n < 1 || k < 1)
                usage();
        } else
            usage();
    }
    MUST(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    MUST(cublasCreate_v2(&handle));
    MUST(cublasSetStream_v2(handle, stream));
    MUST(cublasLtCreate(&lt));
    if (repeat_count >= 0) {
        repeat(repeat_count, m, n, k);
    } else if (bias_per_batch) {
        lt_bias_per_batch();
    } else {
        cublas_matrix();
        lt_matrix();
    }
    MUST(cublasLtDestroy(lt));
    MUST(cublasDestroy_v2(handle));
    MUST(cudaStreamDestroy(stream));
    print_result(ncalls, total_hash);
    return 0;
}

/*
 * cublasLtMatmul of the simulated GPU against an f64 reference of
 *   D = scaleD * act(alpha * scaleA * scaleB * op(A) op(B) + beta * scaleC * C + bias)
 * over data types (f32, tf32, f16, bf16, f64, int8, fp8 in and out), transposes,
 * row and column order, strided batches, C != D and in place, beta zero and
 * not, every supported epilogue with its bias, fp8 scale and amax pointers,
 * host and device pointer modes, heuristic / NULL / stack-allocated
 * descriptors; then attribute sizes and the status codes for bad arguments.
 *
 * Prints PASS/FAIL per case and a SUMMARY line; exits 1 if any case failed.
 */
#include <cublasLt.h>
#include <cuda_runtime.h>

#include "simgpu_check.h"

static cublasLtHandle_t lt;

typedef struct ltc {
    const char *name;
    int at, bt, ct, dt;
    cublasComputeType_t compute;
    int scale;
    double acc_eps;
} ltc;

static const ltc types[] = {
    {"f32", CUDA_R_32F, CUDA_R_32F, CUDA_R_32F, CUDA_R_32F, CUBLAS_COMPUTE_32F, CUDA_R_32F, 0x1p-24},
    {"f32/FAST_TF32", CUDA_R_32F, CUDA_R_32F, CUDA_R_32F, CUDA_R_32F, CUBLAS_COMPUTE_32F_FAST_TF32, CUDA_R_32F, 0x1p-24},
    {"f16/32F", CUDA_R_16F, CUDA_R_16F, CUDA_R_16F, CUDA_R_16F, CUBLAS_COMPUTE_32F, CUDA_R_32F, 0x1p-24},
    {"f16/16F", CUDA_R_16F, CUDA_R_16F, CUDA_R_16F, CUDA_R_16F, CUBLAS_COMPUTE_16F, CUDA_R_16F, 0x1p-11},
    {"bf16", CUDA_R_16BF, CUDA_R_16BF, CUDA_R_16BF, CUDA_R_16BF, CUBLAS_COMPUTE_32F, CUDA_R_32F, 0x1p-24},
    {"bf16->f32", CUDA_R_16BF, CUDA_R_16BF, CUDA_R_32F, CUDA_R_32F, CUBLAS_COMPUTE_32F, CUDA_R_32F, 0x1p-24},
    {"f64", CUDA_R_64F, CUDA_R_64F, CUDA_R_64F, CUDA_R_64F, CUBLAS_COMPUTE_64F, CUDA_R_64F, 0x1p-53},
    {"i8->i32", CUDA_R_8I, CUDA_R_8I, CUDA_R_32I, CUDA_R_32I, CUBLAS_COMPUTE_32I, CUDA_R_32I, 0},
    {"e4m3xe4m3->bf16", CUDA_R_8F_E4M3, CUDA_R_8F_E4M3, CUDA_R_16BF, CUDA_R_16BF, CUBLAS_COMPUTE_32F, CUDA_R_32F,
     0x1p-24},
    {"e4m3xe5m2->f32", CUDA_R_8F_E4M3, CUDA_R_8F_E5M2, CUDA_R_32F, CUDA_R_32F, CUBLAS_COMPUTE_32F, CUDA_R_32F,
     0x1p-24},
    {"e4m3xe4m3->e4m3 (C f16)", CUDA_R_8F_E4M3, CUDA_R_8F_E4M3, CUDA_R_16F, CUDA_R_8F_E4M3, CUBLAS_COMPUTE_32F,
     CUDA_R_32F, 0x1p-24},
    {"e5m2xe4m3->e5m2 (C bf16)", CUDA_R_8F_E5M2, CUDA_R_8F_E4M3, CUDA_R_16BF, CUDA_R_8F_E5M2, CUBLAS_COMPUTE_32F,
     CUDA_R_32F, 0x1p-24},
};

#define NTYPES (sizeof types / sizeof types[0])

static int is_fp8(int t) { return t == CUDA_R_8F_E4M3 || t == CUDA_R_8F_E5M2; }

/* A matrix in host memory, described as a cuBLASLt layout, copied to the device. */
typedef struct lmat {
    int type, order;
    int64_t rows, cols, ld, stride, batch;
    unsigned char *host;
    void *dev;
    cublasLtMatrixLayout_t layout;
} lmat;

static void make(lmat *x, int type, int64_t rows, int64_t cols, int order, int64_t batch, uint64_t seed) {
    x->type = type;
    x->order = order;
    x->rows = rows;
    x->cols = cols;
    x->ld = (order == CUBLASLT_ORDER_ROW ? cols : rows) + 1;
    x->stride = x->ld * (order == CUBLASLT_ORDER_ROW ? rows : cols) + 5;
    x->batch = batch;
    size_t n = (size_t)(x->stride * batch);
    x->host = calloc(n, elem_size(type));
    for (size_t i = 0; i < n; i++)
        put(x->host, type, i, type == CUDA_R_8I || type == CUDA_R_32I ? 8 * test_value(seed, i) : test_value(seed, i));
    MUST(cudaMalloc(&x->dev, n * elem_size(type)));
    MUST(cudaMemcpy(x->dev, x->host, n * elem_size(type), cudaMemcpyHostToDevice));
    MUST(cublasLtMatrixLayoutCreate(&x->layout, type, (uint64_t)rows, (uint64_t)cols, x->ld));
    int32_t ord = order, b = (int32_t)batch;
    int64_t stride = x->stride;
    MUST(cublasLtMatrixLayoutSetAttribute(x->layout, CUBLASLT_MATRIX_LAYOUT_ORDER, &ord, sizeof ord));
    MUST(cublasLtMatrixLayoutSetAttribute(x->layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &b, sizeof b));
    MUST(cublasLtMatrixLayoutSetAttribute(x->layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride,
                                          sizeof stride));
}

static void drop(lmat *x) {
    free(x->host);
    MUST(cudaFree(x->dev));
    MUST(cublasLtMatrixLayoutDestroy(x->layout));
}

static double elem(const lmat *x, const unsigned char *data, int64_t b, int64_t r, int64_t c) {
    int64_t idx = b * x->stride + (x->order == CUBLASLT_ORDER_ROW ? r * x->ld + c : r + c * x->ld);
    return get(data, x->type, (size_t)idx);
}

static double gelu_ref(double x) { return 0.5 * x * (1 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))); }

typedef struct opts {
    int ta, tb;
    int order_a, order_b, order_cd;
    int64_t batch;
    int inplace;
    double beta;
    uint32_t epilogue;
    int bias_type; /* -1: leave the attribute at its default */
    int device_mode;
    int algo; /* 0: NULL algo, 1: from the heuristic */
} opts;

static void run(const ltc *t, const opts *o) {
    const int64_t m = 5, n = 3, k = t->compute == CUBLAS_COMPUTE_16F ? 5 : 6;
    lmat A, B, C, D;
    make(&A, t->at, o->ta ? k : m, o->ta ? m : k, o->order_a, o->batch, 1);
    make(&B, t->bt, o->tb ? n : k, o->tb ? k : n, o->order_b, o->batch, 2);
    make(&C, t->ct, m, n, o->order_cd, o->batch, 3);
    if (!o->inplace)
        make(&D, t->dt, m, n, o->order_cd, o->batch, 4);
    lmat *out = o->inplace ? &C : &D;
    int integers = t->scale == CUDA_R_32I;
    double alpha = integers ? 2 : 0.5, beta = integers ? (o->beta != 0 ? 3 : 0) : o->beta;
    int fp8 = is_fp8(t->at) || is_fp8(t->bt);
    double sa = fp8 ? 2 : 1, sb = fp8 ? 0.5 : 1, sc = 1, sd = is_fp8(t->dt) ? 4 : 1;

    cublasLtMatmulDesc_t desc;
    MUST(cublasLtMatmulDescCreate(&desc, t->compute, t->scale));
    int32_t ta = o->ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb = o->tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    MUST(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    MUST(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    MUST(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &o->epilogue, sizeof o->epilogue));
    int has_bias = (o->epilogue & CUBLASLT_EPILOGUE_BIAS) != 0;
    int bias_type = o->bias_type >= 0 ? o->bias_type : is_fp8(t->dt) ? t->ct : t->dt;
    unsigned char *bias_host = NULL;
    void *bias_dev = NULL;
    int64_t bias_stride = m + 2;
    if (has_bias) {
        size_t nb = (size_t)(bias_stride * o->batch);
        bias_host = calloc(nb, elem_size(bias_type));
        for (size_t i = 0; i < nb; i++)
            put(bias_host, bias_type, i, test_value(9, i));
        MUST(cudaMalloc(&bias_dev, nb * elem_size(bias_type)));
        MUST(cudaMemcpy(bias_dev, bias_host, nb * elem_size(bias_type), cudaMemcpyHostToDevice));
        MUST(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias_dev, sizeof bias_dev));
        MUST(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE, &bias_stride,
                                            sizeof bias_stride));
        if (o->bias_type >= 0) {
            int32_t bt = o->bias_type;
            MUST(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt));
        }
    }
    float scales[4] = {(float)sa, (float)sb, (float)sc, (float)sd}, amax = -1;
    float *scales_dev = NULL, *amax_dev = NULL;
    if (fp8) {
        MUST(cudaMalloc((void **)&scales_dev, sizeof scales));
        MUST(cudaMalloc((void **)&amax_dev, sizeof amax));
        MUST(cudaMemcpy(scales_dev, scales, sizeof scales, cudaMemcpyHostToDevice));
        const void *pa = scales_dev, *pb = scales_dev + 1, *pc = scales_dev + 2, *pd = scales_dev + 3;
        MUST(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &pa, sizeof pa));
        MUST(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &pb, sizeof pb));
        MUST(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_C_SCALE_POINTER, &pc, sizeof pc));
        MUST(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_D_SCALE_POINTER, &pd, sizeof pd));
        MUST(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_AMAX_D_POINTER, &amax_dev, sizeof amax_dev));
    }
    unsigned char ha[8], hb[8];
    put(ha, t->scale, 0, alpha);
    put(hb, t->scale, 0, beta);
    void *da = NULL, *db = NULL;
    if (o->device_mode) {
        int32_t pm = CUBLASLT_POINTER_MODE_DEVICE;
        MUST(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_POINTER_MODE, &pm, sizeof pm));
        MUST(cudaMalloc(&da, 8));
        MUST(cudaMalloc(&db, 8));
        MUST(cudaMemcpy(da, ha, 8, cudaMemcpyHostToDevice));
        MUST(cudaMemcpy(db, hb, 8, cudaMemcpyHostToDevice));
    }
    cublasLtMatmulAlgo_t algo;
    if (o->algo) {
        cublasLtMatmulPreference_t pref;
        MUST(cublasLtMatmulPreferenceCreate(&pref));
        uint64_t ws = 1 << 20;
        MUST(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
        cublasLtMatmulHeuristicResult_t res[4];
        int count = 0;
        MUST(cublasLtMatmulAlgoGetHeuristic(lt, desc, A.layout, B.layout, C.layout, out->layout, pref, 4, res, &count));
        if (count < 1)
            MUST(1);
        algo = res[0].algo;
        MUST(cublasLtMatmulPreferenceDestroy(pref));
    }
    cublasStatus_t st = cublasLtMatmul(lt, desc, o->device_mode ? da : (void *)ha, A.dev, A.layout, B.dev, B.layout,
                                       o->device_mode ? db : (void *)hb, C.dev, C.layout, out->dev, out->layout,
                                       o->algo ? &algo : NULL, NULL, 0, NULL);
    char name[256], why[200] = "";
    snprintf(name, sizeof name, "lt %s op=%c%c order=%s%s%s batch=%lld %s beta=%g epilogue=%u%s%s%s", t->name,
             "NT"[o->ta], "NT"[o->tb], o->order_a ? "R" : "C", o->order_b ? "R" : "C", o->order_cd ? "R" : "C",
             (long long)o->batch, o->inplace ? "C==D" : "C!=D", o->beta, o->epilogue,
             o->bias_type >= 0 ? " bias-type-set" : "", o->device_mode ? " device-scalars" : "",
             o->algo ? " heuristic-algo" : "");
    if (st != CUBLAS_STATUS_SUCCESS) {
        snprintf(why, sizeof why, "status %d", (int)st);
        report(0, name, why);
        return;
    }
    size_t bytes = (size_t)(out->stride * o->batch) * elem_size(out->type);
    unsigned char *got = malloc(bytes);
    MUST(cudaMemcpy(got, out->dev, bytes, cudaMemcpyDeviceToHost));
    if (fp8)
        MUST(cudaMemcpy(&amax, amax_dev, sizeof amax, cudaMemcpyDeviceToHost));
    int ok = 1;
    double ref_amax = 0;
    for (int64_t b = 0; b < o->batch && ok; b++)
        for (int64_t j = 0; j < n && ok; j++)
            for (int64_t i = 0; i < m && ok; i++) {
                double dot = 0, abs_sum = 0;
                for (int64_t l = 0; l < k; l++) {
                    double x = o->ta ? elem(&A, A.host, b, l, i) : elem(&A, A.host, b, i, l);
                    double y = o->tb ? elem(&B, B.host, b, j, l) : elem(&B, B.host, b, l, j);
                    dot += x * y;
                    abs_sum += fabs(x * y);
                }
                double v = alpha * sa * sb * dot + (beta != 0 ? beta * sc * elem(&C, C.host, b, i, j) : 0);
                if (has_bias)
                    v += get(bias_host, bias_type, (size_t)(b * bias_stride + i));
                if (o->epilogue == CUBLASLT_EPILOGUE_RELU || o->epilogue == CUBLASLT_EPILOGUE_RELU_BIAS)
                    v = v > 0 ? v : 0;
                if (o->epilogue == CUBLASLT_EPILOGUE_GELU || o->epilogue == CUBLASLT_EPILOGUE_GELU_BIAS)
                    v = gelu_ref(v);
                if (fabs(v) > ref_amax)
                    ref_amax = fabs(v);
                double want = fmin(out_max(out->type), fmax(-out_max(out->type), v * sd));
                double have = elem(out, got, b, i, j);
                double tol = out_eps(out->type) * fabs(want) + (double)k * t->acc_eps * abs_sum * fabs(alpha * sa * sb) +
                             1e-6 * fabs(v) * (o->epilogue & CUBLASLT_EPILOGUE_GELU ? 1 : 0) + 1e-300;
                if (!(fabs(have - want) <= tol)) {
                    ok = 0;
                    snprintf(why, sizeof why, "batch %lld D[%lld,%lld] = %.9g, want %.9g", (long long)b,
                             (long long)i, (long long)j, have, want);
                }
            }
    if (ok && fp8 && !(fabs(amax - ref_amax) <= 1e-5 * ref_amax + 1e-30)) {
        ok = 0;
        snprintf(why, sizeof why, "amax %.9g, want %.9g", amax, ref_amax);
    }
    report(ok, name, why);
    free(got);
    free(bias_host);
    if (bias_dev)
        MUST(cudaFree(bias_dev));
    if (scales_dev) {
        MUST(cudaFree(scales_dev));
        MUST(cudaFree(amax_dev));
    }
    if (da) {
        MUST(cudaFree(da));
        MUST(cudaFree(db));
    }
    MUST(cublasLtMatmulDescDestroy(desc));
    drop(&A);
    drop(&B);
    drop(&C);
    if (!o->inplace)
        drop(&D);
}

static void matrix(void) {
    const uint32_t epilogues[] = {CUBLASLT_EPILOGUE_DEFAULT, CUBLASLT_EPILOGUE_RELU, CUBLASLT_EPILOGUE_BIAS,
                                  CUBLASLT_EPILOGUE_RELU_BIAS, CUBLASLT_EPILOGUE_GELU, CUBLASLT_EPILOGUE_GELU_BIAS};
    for (size_t t = 0; t < NTYPES; t++) {
        int integer = types[t].compute == CUBLAS_COMPUTE_32I;
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (int order = 0; order < 2; order++) {
                    opts o = {ta, tb, order, order, order, 1, 0, 0.25, CUBLASLT_EPILOGUE_DEFAULT, -1, 0, 0};
                    run(&types[t], &o);
                    o.batch = 3;
                    o.inplace = 1;
                    o.device_mode = 1;
                    run(&types[t], &o);
                }
        /* Mixed orders, beta == 0, heuristic algo. */
        opts mixed = {1, 0, CUBLASLT_ORDER_ROW, CUBLASLT_ORDER_COL, CUBLASLT_ORDER_ROW, 2, 0, 0, CUBLASLT_EPILOGUE_DEFAULT,
                      -1, 0, 1};
        run(&types[t], &mixed);
        if (integer)
            continue;
        for (size_t e = 0; e < sizeof epilogues / sizeof epilogues[0]; e++) {
            opts o = {0, 1, 0, 0, 0, 2, 0, 0.25, epilogues[e], -1, e % 2, 1};
            run(&types[t], &o);
        }
    }
    /* An explicit bias data type different from D's. */
    opts o = {0, 0, 0, 0, 0, 1, 0, 0, CUBLASLT_EPILOGUE_BIAS, CUDA_R_32F, 0, 0};
    run(&types[4], &o);
}

/* Attributes: exact sizes, size queries, stack-allocated descriptors. */
static void attributes(void) {
    cublasLtMatmulDesc_t d;
    MUST(cublasLtMatmulDescCreate(&d, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    int32_t v = CUBLAS_OP_T;
    int64_t wide = 1;
    EXPECT_STATUS("attr TRANSA with 8 bytes", cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_TRANSA, &wide, 8),
                  CUBLAS_STATUS_INVALID_VALUE);
    EXPECT_STATUS("attr TRANSA with 4 bytes", cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_TRANSA, &v, 4),
                  CUBLAS_STATUS_SUCCESS);
    EXPECT_STATUS("attr unknown id", cublasLtMatmulDescSetAttribute(d, (cublasLtMatmulDescAttributes_t)9, &v, 4),
                  CUBLAS_STATUS_INVALID_VALUE);
    size_t written = 0;
    EXPECT_STATUS("attr size query", cublasLtMatmulDescGetAttribute(d, CUBLASLT_MATMUL_DESC_BIAS_POINTER, NULL, 0, &written),
                  CUBLAS_STATUS_SUCCESS);
    report(written == sizeof(void *), "attr BIAS_POINTER is pointer-sized", "");
    int32_t back = 0;
    MUST(cublasLtMatmulDescGetAttribute(d, CUBLASLT_MATMUL_DESC_TRANSA, &back, sizeof back, &written));
    report(back == CUBLAS_OP_T && written == 4, "attr TRANSA reads back", "");
    uint32_t epi = 0;
    MUST(cublasLtMatmulDescGetAttribute(d, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi, NULL));
    report(epi == CUBLASLT_EPILOGUE_DEFAULT, "attr EPILOGUE defaults to DEFAULT", "");
    int8_t fast = 1;
    EXPECT_STATUS("attr FAST_ACCUM is one byte", cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_FAST_ACCUM, &fast, 1),
                  CUBLAS_STATUS_SUCCESS);
    MUST(cublasLtMatmulDescDestroy(d));

    cublasLtMatrixLayoutOpaque_t storage;
    EXPECT_STATUS("layout init on the stack", cublasLtMatrixLayoutInit(&storage, CUDA_R_32F, 4, 3, 4),
                  CUBLAS_STATUS_SUCCESS);
    uint64_t rows = 0;
    MUST(cublasLtMatrixLayoutGetAttribute(&storage, CUBLASLT_MATRIX_LAYOUT_ROWS, &rows, sizeof rows, &written));
    report(rows == 4 && written == 8, "layout ROWS is 8 bytes and reads back", "");
    int32_t rows32 = 4;
    EXPECT_STATUS("layout ROWS with 4 bytes",
                  cublasLtMatrixLayoutSetAttribute(&storage, CUBLASLT_MATRIX_LAYOUT_ROWS, &rows32, 4),
                  CUBLAS_STATUS_INVALID_VALUE);
    report(sizeof(cublasLtMatmulDescOpaque_t) == 256 && sizeof(cublasLtMatrixLayoutOpaque_t) == 112 &&
               sizeof(cublasLtMatmulPreferenceOpaque_t) == 96 && sizeof(cublasLtMatmulAlgo_t) == 64 &&
               sizeof(cublasLtMatmulHeuristicResult_t) == 96,
           "opaque struct sizes match cuBLASLt", "");
}

/* A plain f32 GEMM setup for the error cases. */
static void errors(void) {
    void *buf;
    MUST(cudaMalloc(&buf, 4096));
    cublasLtMatmulDesc_t d;
    cublasLtMatrixLayout_t a, b, c, c_ld5, small_ld, col32, wrong_k;
    MUST(cublasLtMatmulDescCreate(&d, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    MUST(cublasLtMatrixLayoutCreate(&a, CUDA_R_32F, 4, 3, 4));
    MUST(cublasLtMatrixLayoutCreate(&b, CUDA_R_32F, 3, 2, 3));
    MUST(cublasLtMatrixLayoutCreate(&c, CUDA_R_32F, 4, 2, 4));
    MUST(cublasLtMatrixLayoutCreate(&c_ld5, CUDA_R_32F, 4, 2, 5));
    MUST(cublasLtMatrixLayoutCreate(&small_ld, CUDA_R_32F, 4, 2, 3));
    MUST(cublasLtMatrixLayoutCreate(&col32, CUDA_R_32F, 4, 2, 4));
    MUST(cublasLtMatrixLayoutCreate(&wrong_k, CUDA_R_32F, 4, 2, 4));
    int32_t order = CUBLASLT_ORDER_COL32;
    MUST(cublasLtMatrixLayoutSetAttribute(col32, CUBLASLT_MATRIX_LAYOUT_ORDER, &order, sizeof order));
    float one = 1, zero = 0;
    EXPECT_STATUS("lt ok baseline", cublasLtMatmul(lt, d, &one, buf, a, buf, b, &zero, buf, c, buf, c, NULL, NULL, 0, NULL),
                  CUBLAS_STATUS_SUCCESS);
    EXPECT_STATUS("lt NULL handle",
                  cublasLtMatmul(NULL, d, &one, buf, a, buf, b, &zero, buf, c, buf, c, NULL, NULL, 0, NULL),
                  CUBLAS_STATUS_NOT_INITIALIZED);
    EXPECT_STATUS("lt k mismatch", cublasLtMatmul(lt, d, &one, buf, a, buf, wrong_k, &zero, buf, c, buf, c, NULL, NULL, 0, NULL),
                  CUBLAS_STATUS_INVALID_VALUE);
    EXPECT_STATUS("lt ld < rows", cublasLtMatmul(lt, d, &one, buf, a, buf, b, &zero, buf, small_ld, buf, c, NULL, NULL, 0, NULL),
                  CUBLAS_STATUS_INVALID_VALUE);
    EXPECT_STATUS("lt ORDER_COL32 unsupported",
                  cublasLtMatmul(lt, d, &one, buf, a, buf, b, &zero, buf, col32, buf, c, NULL, NULL, 0, NULL),
                  CUBLAS_STATUS_NOT_SUPPORTED);
    EXPECT_STATUS("lt NULL alpha", cublasLtMatmul(lt, d, NULL, buf, a, buf, b, &zero, buf, c, buf, c, NULL, NULL, 0, NULL),
                  CUBLAS_STATUS_INVALID_VALUE);
    EXPECT_STATUS("lt C == D with different layouts",
                  cublasLtMatmul(lt, d, &one, buf, a, buf, b, &zero, buf, c, buf, c_ld5, NULL, NULL, 0, NULL),
                  CUBLAS_STATUS_INVALID_VALUE);
    uint32_t epi = CUBLASLT_EPILOGUE_DRELU;
    MUST(cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
    EXPECT_STATUS("lt DRELU epilogue unsupported",
                  cublasLtMatmul(lt, d, &one, buf, a, buf, b, &zero, buf, c, buf, c, NULL, NULL, 0, NULL),
                  CUBLAS_STATUS_NOT_SUPPORTED);
    epi = CUBLASLT_EPILOGUE_BIAS;
    MUST(cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
    EXPECT_STATUS("lt BIAS epilogue without a bias pointer",
                  cublasLtMatmul(lt, d, &one, buf, a, buf, b, &zero, buf, c, buf, c, NULL, NULL, 0, NULL),
                  CUBLAS_STATUS_INVALID_VALUE);
    epi = CUBLASLT_EPILOGUE_DEFAULT;
    MUST(cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
    const void *scale = buf;
    MUST(cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &scale, sizeof scale));
    EXPECT_STATUS("lt scale pointer on non-fp8 data",
                  cublasLtMatmul(lt, d, &one, buf, a, buf, b, &zero, buf, c, buf, c, NULL, NULL, 0, NULL),
                  CUBLAS_STATUS_INVALID_VALUE);
    MUST(cublasLtMatmulDescDestroy(d));
    {
        cublasLtMatmulDesc_t f;
        cublasLtMatrixLayout_t a8, b8;
        MUST(cublasLtMatmulDescCreate(&f, CUBLAS_COMPUTE_32F, CUDA_R_32F));
        MUST(cublasLtMatrixLayoutCreate(&a8, CUDA_R_8F_E5M2, 4, 3, 4));
        MUST(cublasLtMatrixLayoutCreate(&b8, CUDA_R_8F_E5M2, 3, 2, 3));
        EXPECT_STATUS("lt e5m2 x e5m2 unsupported",
                      cublasLtMatmul(lt, f, &one, buf, a8, buf, b8, &zero, buf, c, buf, c, NULL, NULL, 0, NULL),
                      CUBLAS_STATUS_NOT_SUPPORTED);
        cublasLtMatmulPreference_t p;
        MUST(cublasLtMatmulPreferenceCreate(&p));
        cublasLtMatmulHeuristicResult_t r;
        int count = 7;
        EXPECT_STATUS("lt heuristic for an unsupported combination",
                      cublasLtMatmulAlgoGetHeuristic(lt, f, a8, b8, c, c, p, 1, &r, &count), CUBLAS_STATUS_NOT_SUPPORTED);
        report(count == 0, "lt heuristic returns no algo then", "");
        EXPECT_STATUS("lt heuristic asks for zero algos", cublasLtMatmulAlgoGetHeuristic(lt, f, a, b, c, c, p, 0, &r, &count),
                      CUBLAS_STATUS_INVALID_VALUE);
        MUST(cublasLtMatmulPreferenceDestroy(p));
        MUST(cublasLtMatrixLayoutDestroy(a8));
        MUST(cublasLtMatrixLayoutDestroy(b8));
        MUST(cublasLtMatmulDescDestroy(f));
    }
    MUST(cublasLtMatrixLayoutDestroy(a));
    MUST(cublasLtMatrixLayoutDestroy(b));
    MUST(cublasLtMatrixLayoutDestroy(c));
    MUST(cublasLtMatrixLayoutDestroy(c_ld5));
    MUST(cublasLtMatrixLayoutDestroy(small_ld));
    MUST(cublasLtMatrixLayoutDestroy(col32));
    MUST(cublasLtMatrixLayoutDestroy(wrong_k));
    MUST(cudaDeviceSynchronize());
    MUST(cudaFree(buf));
}

int main(void) {
    MUST(cublasLtCreate(&lt));
    matrix();
    attributes();
    errors();
    MUST(cublasLtDestroy(lt));
    return finish("simgpu_lt");
}

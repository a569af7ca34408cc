/*
 * Fault injection of the simulated GPU: runs a fixed sequence of GEMM calls
 * through cuBLAS and cuBLASLt and checks every call against what the fault
 * mode named on the command line documents (tests/simgpu/README.md), and
 * against the honest f64 reference for calls the fault must leave alone.
 *
 *   simgpu_faults MODE PARAM WHICH [TABLE]
 *     MODE   none | zero | perturb | rows | weights | fp8 | fp8-rowscaled |
 *            int8-rowscaled | truncate-k
 *     PARAM  the REL, FRAC or F given in SIMGPU_FAULT (ignored by none, zero
 *            and the precision modes)
 *     WHICH  all | some | after:N  -- which calls must show the fault:
 *            all, a non-empty proper subset (prob:P), or exactly those
 *            numbered above N (after:N)
 *     TABLE  mixed (default): small GEMMs of every kind, exact test data;
 *            normal: bf16 GEMMs (cuBLAS, batched, cuBLASLt) with N(0,1) data
 *            and k = 256 and 4096, where the relative error of the dot
 *            products, |got - exact| / sqrt(sum (a_l b_l)^2), is measured
 *            (root mean square over the entries of a call), printed, and
 *            must lie in the range the fault mode implies
 *
 * The program itself does not set SIMGPU_FAULT; the caller runs it with the
 * environment under test, so running it with a mode that does not match the
 * environment must fail. It also prints a digest of each call's output so
 * that runs can be compared bit for bit (SIMGPU_SPLITK).
 */
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "simgpu_check.h"

enum api { SGEMM, SGEMM_WIDE, GEMM_EX, STRIDED_EX, HGEMM, LT_F32_BIAS, LT_FP8, LT_COLS, LT_ROWS };

typedef struct gcall {
    const char *name;
    enum api api;
    int in_type, out_type;
    int64_t m, n, k, batch;
    double alpha, beta;
    double acc_eps;
    int normal; /* N(0,1) data, rounded to in_type; relative error measured */
} gcall;

static const gcall mixed[] = {
    {"cublasSgemm f32", SGEMM, CUDA_R_32F, CUDA_R_32F, 6, 5, 8, 1, 1, 0, 0x1p-24, 0},
    {"cublasSgemm f32 k=96 inexact sums", SGEMM_WIDE, CUDA_R_32F, CUDA_R_32F, 4, 3, 96, 1, 1, 0, 0x1p-24, 0},
    {"cublasGemmEx bf16->f32", GEMM_EX, CUDA_R_16BF, CUDA_R_32F, 6, 4, 8, 1, 0.5, 0, 0x1p-24, 0},
    {"cublasGemmStridedBatchedEx f16 batch 2", STRIDED_EX, CUDA_R_16F, CUDA_R_16F, 6, 3, 8, 2, 1, 0.5, 0x1p-24, 0},
    {"cublasHgemm f16", HGEMM, CUDA_R_16F, CUDA_R_16F, 6, 3, 4, 1, 1, 0, 0x1p-11, 0},
    {"cublasLtMatmul f32 + bias", LT_F32_BIAS, CUDA_R_32F, CUDA_R_32F, 6, 5, 8, 1, 1, 0, 0x1p-24, 0},
    {"cublasLtMatmul e4m3 -> bf16", LT_FP8, CUDA_R_8F_E4M3, CUDA_R_16BF, 6, 4, 8, 1, 1, 0, 0x1p-24, 0},
    {"cublasLtMatmul bf16 row-major", LT_ROWS, CUDA_R_16BF, CUDA_R_16BF, 6, 4, 8, 1, 1, 0.25, 0x1p-24, 0},
};

/* bf16 inputs, f32 output (so that output rounding does not blur the
 * measurement), alpha 1, beta 0: D is the dot products. */
static const gcall normal[] = {
    {"cublasGemmEx bf16 N(0,1) k=256", GEMM_EX, CUDA_R_16BF, CUDA_R_32F, 16, 16, 256, 1, 1, 0, 0x1p-24, 1},
    {"cublasGemmStridedBatchedEx bf16 N(0,1) k=4096 batch 2", STRIDED_EX, CUDA_R_16BF, CUDA_R_32F, 8, 8, 4096, 2, 1, 0,
     0x1p-24, 1},
    {"cublasLtMatmul bf16 N(0,1) k=4096", LT_COLS, CUDA_R_16BF, CUDA_R_32F, 16, 16, 4096, 1, 1, 0, 0x1p-24, 1},
    {"cublasLtMatmul bf16 row-major N(0,1) k=256", LT_ROWS, CUDA_R_16BF, CUDA_R_32F, 16, 16, 256, 1, 1, 0, 0x1p-24,
     1},
};

#define ROUNDS 3

/* An honest call's relative error (f32 sums of at most 4096 terms) is about
 * 1e-6; every fault the normal table checks is far above this. */
#define HONEST_REL_MAX 1e-4

static cublasHandle_t blas;
static cublasLtHandle_t lt;

/* Round to nearest-even bf16, written apart from the simulator. */
static double round_bf16(double v) {
    float f = (float)v;
    uint32_t w;
    memcpy(&w, &f, 4);
    w = (w + 0x7fff + (w >> 16 & 1)) & 0xffff0000u;
    memcpy(&f, &w, 4);
    return f;
}

/* A reproducible N(0,1) sample (Box-Muller on two hashed uniforms). */
static double gaussian(uint64_t seed, uint64_t i) {
    uint64_t z = (seed + 11) * 0x9e3779b97f4a7c15ull ^ (i + 3) * 0xbf58476d1ce4e5b9ull;
    z ^= z >> 31;
    z *= 0x94d049bb133111ebull;
    z ^= z >> 29;
    double u1 = ((double)(z >> 40) + 0.5) * 0x1p-24, u2 = (double)(z & 0xffffff) * 0x1p-24;
    return sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2);
}

/* Test data: multiples of 1/64 (exact in f32, f16, bf16; mostly not in fp8),
 * or of 1/8 for fp8 inputs, or f32 values whose sums round (so that
 * SIMGPU_SPLITK's different summation order shows in the last bits), or
 * N(0,1) samples rounded to bf16 (normal table). */
static double datum(const gcall *c, uint64_t seed, uint64_t i) {
    if (c->normal)
        return round_bf16(gaussian(seed, i));
    if (c->in_type == CUDA_R_8F_E4M3)
        return test_value(seed, i);
    if (c->api == SGEMM_WIDE)
        return (float)sin((double)(seed * 1000 + i) * 0.7);
    uint64_t z = (seed + 1) * 0x9e3779b97f4a7c15ull ^ (i + 7) * 0xbf58476d1ce4e5b9ull;
    z ^= z >> 29;
    z *= 0x94d049bb133111ebull;
    return (double)((int)((z >> 17) % 129) - 64) / 64.0;
}

/* Round to nearest-even e4m3 (saturating), written apart from the simulator. */
static double round_e4m3(double v) {
    if (v == 0)
        return v;
    int e;
    frexp(v, &e);
    int lead = e - 1 < -6 ? -6 : e - 1;
    double q = ldexp(1, lead - 3);
    double r = nearbyint(v / q) * q;
    return fmax(-448, fmin(448, r));
}

enum model { HONEST, FP8, FP8_ROWSCALED, INT8_ROWSCALED, TRUNCATE_K };

static enum model model_of(const char *mode) {
    return !strcmp(mode, "fp8")              ? FP8
           : !strcmp(mode, "fp8-rowscaled")  ? FP8_ROWSCALED
           : !strcmp(mode, "int8-rowscaled") ? INT8_ROWSCALED
           : !strcmp(mode, "truncate-k")     ? TRUNCATE_K
                                             : HONEST;
}

/* Per-channel quantisation of one row (or column) x of length k, as
 * documented for precision:fp8-rowscaled / int8-rowscaled: scale =
 * amax / 448 (or / 127), q = e4m3(x / scale) (or clamp(round(x / scale),
 * +-127)). Writes q and returns the scale; an all-zero row has q = 0. */
static double quantize(const double *x, int64_t k, enum model how, double *q) {
    double amax = 0;
    for (int64_t l = 0; l < k; l++)
        amax = fmax(amax, fabs(x[l]));
    double scale = amax / (how == FP8_ROWSCALED ? 448 : 127);
    for (int64_t l = 0; l < k; l++) {
        if (scale == 0)
            q[l] = 0;
        else if (how == FP8_ROWSCALED)
            q[l] = round_e4m3(x[l] / scale);
        else
            q[l] = fmax(-127, fmin(127, nearbyint(x[l] / scale)));
    }
    return scale;
}

/* truncate-k:F sums the first ceil(F k) terms (F k within 1e-9 of an
 * integer counting as that integer). */
static int64_t kept_terms(double f, int64_t k) {
    double t = f * (double)k, near = nearbyint(t);
    int64_t kept = (int64_t)(fabs(t - near) <= 1e-9 * t ? near : ceil(t));
    return kept < k ? kept : k;
}

typedef struct result {
    int64_t m, n, batch;
    double *got, *honest, *model, *bound; /* per entry; bound: honest tolerance */
    double *abs_ab;                       /* per entry: |alpha| * sum |a||b| */
    double *abs_model;                    /* per entry: |alpha| * sum of |terms| of model */
    double rel_rms;                       /* normal table: relative error of the dot products */
    uint64_t digest;
} result;

/* Runs call c and computes its references: the honest one and the model of
 * the fault mode (the honest one for modes without a model). */
static void run_call(const gcall *c, enum model how, double param, result *r) {
    int64_t m = c->m, n = c->n, k = c->k, batch = c->batch;
    size_t es_in = elem_size(c->in_type), es_out = elem_size(c->out_type);
    size_t na = (size_t)(m * k * batch), nb = (size_t)(k * n * batch), nc = (size_t)(m * n * batch);
    double *a = malloc(na * sizeof(double)), *b = malloc(nb * sizeof(double)), *c0 = malloc(nc * sizeof(double));
    double bias[16];
    unsigned char *ha = malloc(na * es_in), *hb = malloc(nb * es_in), *hc = malloc(nc * es_out);
    for (size_t i = 0; i < na; i++)
        put(ha, c->in_type, i, a[i] = datum(c, 1, i));
    for (size_t i = 0; i < nb; i++)
        put(hb, c->in_type, i, b[i] = datum(c, 2, i));
    for (size_t i = 0; i < nc; i++)
        put(hc, c->out_type, i, c0[i] = test_value(3, i));
    for (int i = 0; i < 16; i++)
        bias[i] = c->api == LT_F32_BIAS ? test_value(4, (uint64_t)i) : 0;
    void *da, *db, *dc, *dbias;
    MUST(cudaMalloc(&da, na * es_in));
    MUST(cudaMalloc(&db, nb * es_in));
    MUST(cudaMalloc(&dc, nc * es_out));
    MUST(cudaMalloc(&dbias, 16 * sizeof(float)));
    MUST(cudaMemcpy(da, ha, na * es_in, cudaMemcpyHostToDevice));
    MUST(cudaMemcpy(db, hb, nb * es_in, cudaMemcpyHostToDevice));
    MUST(cudaMemcpy(dc, hc, nc * es_out, cudaMemcpyHostToDevice));
    float fbias[16];
    for (int i = 0; i < 16; i++)
        fbias[i] = (float)bias[i];
    MUST(cudaMemcpy(dbias, fbias, sizeof fbias, cudaMemcpyHostToDevice));
    float alpha = (float)c->alpha, beta = (float)c->beta;
    unsigned char h_alpha[2], h_beta[2];
    put(h_alpha, CUDA_R_16F, 0, c->alpha);
    put(h_beta, CUDA_R_16F, 0, c->beta);
    int row_major = c->api == LT_ROWS;
    switch (c->api) {
    case SGEMM:
    case SGEMM_WIDE:
        MUST(cublasSgemm(blas, CUBLAS_OP_N, CUBLAS_OP_N, (int)m, (int)n, (int)k, &alpha, da, (int)m, db, (int)k, &beta,
                         dc, (int)m));
        break;
    case GEMM_EX:
        MUST(cublasGemmEx(blas, CUBLAS_OP_N, CUBLAS_OP_N, (int)m, (int)n, (int)k, &alpha, da, c->in_type, (int)m, db,
                          c->in_type, (int)k, &beta, dc, c->out_type, (int)m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        break;
    case STRIDED_EX:
        MUST(cublasGemmStridedBatchedEx(blas, CUBLAS_OP_N, CUBLAS_OP_N, (int)m, (int)n, (int)k, &alpha, da, c->in_type,
                                        (int)m, m * k, db, c->in_type, (int)k, k * n, &beta, dc, c->out_type, (int)m,
                                        m * n, (int)batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        break;
    case HGEMM:
        MUST(cublasHgemm(blas, CUBLAS_OP_N, CUBLAS_OP_N, (int)m, (int)n, (int)k, (const __half *)h_alpha, da, (int)m,
                         db, (int)k, (const __half *)h_beta, dc, (int)m));
        break;
    case LT_F32_BIAS:
    case LT_FP8:
    case LT_COLS:
    case LT_ROWS: {
        cublasLtMatmulDesc_t d;
        cublasLtMatrixLayout_t la, lb, lc;
        MUST(cublasLtMatmulDescCreate(&d, CUBLAS_COMPUTE_32F, CUDA_R_32F));
        int32_t order = row_major ? CUBLASLT_ORDER_ROW : CUBLASLT_ORDER_COL;
        MUST(cublasLtMatrixLayoutCreate(&la, c->in_type, (uint64_t)m, (uint64_t)k, row_major ? k : m));
        MUST(cublasLtMatrixLayoutCreate(&lb, c->in_type, (uint64_t)k, (uint64_t)n, row_major ? n : k));
        MUST(cublasLtMatrixLayoutCreate(&lc, c->out_type, (uint64_t)m, (uint64_t)n, row_major ? n : m));
        MUST(cublasLtMatrixLayoutSetAttribute(la, CUBLASLT_MATRIX_LAYOUT_ORDER, &order, sizeof order));
        MUST(cublasLtMatrixLayoutSetAttribute(lb, CUBLASLT_MATRIX_LAYOUT_ORDER, &order, sizeof order));
        MUST(cublasLtMatrixLayoutSetAttribute(lc, CUBLASLT_MATRIX_LAYOUT_ORDER, &order, sizeof order));
        if (c->api == LT_F32_BIAS) {
            uint32_t epi = CUBLASLT_EPILOGUE_BIAS;
            MUST(cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
            MUST(cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &dbias, sizeof dbias));
        }
        MUST(cublasLtMatmul(lt, d, &alpha, da, la, db, lb, &beta, dc, lc, dc, lc, NULL, NULL, 0, NULL));
        MUST(cublasLtMatrixLayoutDestroy(la));
        MUST(cublasLtMatrixLayoutDestroy(lb));
        MUST(cublasLtMatrixLayoutDestroy(lc));
        MUST(cublasLtMatmulDescDestroy(d));
        break;
    }
    }
    unsigned char *out = malloc(nc * es_out);
    MUST(cudaMemcpy(out, dc, nc * es_out, cudaMemcpyDeviceToHost));
    r->m = m;
    r->n = n;
    r->batch = batch;
    r->got = malloc(nc * sizeof(double));
    r->honest = malloc(nc * sizeof(double));
    r->model = malloc(nc * sizeof(double));
    r->bound = malloc(nc * sizeof(double));
    r->abs_ab = malloc(nc * sizeof(double));
    r->abs_model = malloc(nc * sizeof(double));
    r->digest = 1469598103934665603ull;
    for (size_t i = 0; i < nc * es_out; i++)
        r->digest = (r->digest ^ out[i]) * 1099511628211ull;
    /* op(A) rows and op(B) columns of one batch member, dense, and their
     * quantised forms with one scale each (rowscaled models). */
    double *opa = malloc((size_t)(m * k) * sizeof(double)), *opb = malloc((size_t)(n * k) * sizeof(double));
    double *qa = malloc((size_t)(m * k) * sizeof(double)), *qb = malloc((size_t)(n * k) * sizeof(double));
    double *sa = malloc((size_t)m * sizeof(double)), *sb = malloc((size_t)n * sizeof(double));
    int64_t kept = how == TRUNCATE_K ? kept_terms(param, k) : k;
    double rel2 = 0;
    for (int64_t bt = 0; bt < batch; bt++) {
        for (int64_t i = 0; i < m; i++)
            for (int64_t l = 0; l < k; l++)
                opa[i * k + l] = a[(size_t)(bt * m * k + (row_major ? i * k + l : i + l * m))];
        for (int64_t j = 0; j < n; j++)
            for (int64_t l = 0; l < k; l++)
                opb[j * k + l] = b[(size_t)(bt * k * n + (row_major ? l * n + j : l + j * k))];
        if (how == FP8_ROWSCALED || how == INT8_ROWSCALED) {
            for (int64_t i = 0; i < m; i++)
                sa[i] = quantize(&opa[i * k], k, how, &qa[i * k]);
            for (int64_t j = 0; j < n; j++)
                sb[j] = quantize(&opb[j * k], k, how, &qb[j * k]);
        }
        for (int64_t j = 0; j < n; j++)
            for (int64_t i = 0; i < m; i++) {
                const double *x = &opa[i * k], *y = &opb[j * k];
                double s = 0, abs_sum = 0, sq = 0, mod = 0, mod_abs = 0;
                for (int64_t l = 0; l < k; l++) {
                    s += x[l] * y[l];
                    abs_sum += fabs(x[l] * y[l]);
                    sq += x[l] * y[l] * x[l] * y[l];
                    double t;
                    switch (how) {
                    case FP8:
                        t = round_e4m3(x[l]) * round_e4m3(y[l]);
                        break;
                    case FP8_ROWSCALED:
                    case INT8_ROWSCALED:
                        t = qa[i * k + l] * qb[j * k + l] * (sa[i] * sb[j]);
                        break;
                    case TRUNCATE_K:
                        t = l < kept ? x[l] * y[l] : 0;
                        break;
                    default:
                        t = x[l] * y[l];
                        break;
                    }
                    mod += t;
                    mod_abs += fabs(t);
                }
                size_t ic = (size_t)(bt * m * n + (row_major ? i * n + j : i + j * m));
                double cin = c->beta != 0 ? c->beta * c0[ic] : 0;
                size_t e = (size_t)(bt * m * n + i + j * m); /* result index, column-major */
                r->honest[e] = c->alpha * s + cin + bias[i];
                r->model[e] = c->alpha * mod + cin + bias[i];
                r->abs_ab[e] = fabs(c->alpha) * abs_sum;
                r->abs_model[e] = fabs(c->alpha) * mod_abs;
                r->bound[e] = out_eps(c->out_type) * fabs(r->honest[e]) + (double)k * c->acc_eps * r->abs_ab[e] + 1e-12;
                r->got[e] = get(out, c->out_type, ic);
                double rel = (r->got[e] - r->honest[e]) / (fabs(c->alpha) * sqrt(sq));
                rel2 += sq > 0 ? rel * rel : 0;
            }
    }
    r->rel_rms = sqrt(rel2 / (double)nc);
    free(opa);
    free(opb);
    free(qa);
    free(qb);
    free(sa);
    free(sb);
    free(a);
    free(b);
    free(c0);
    free(ha);
    free(hb);
    free(hc);
    free(out);
    MUST(cudaFree(da));
    MUST(cudaFree(db));
    MUST(cudaFree(dc));
    MUST(cudaFree(dbias));
}

static int64_t entries(const result *r) { return r->m * r->n * r->batch; }

/* Number of entries that differ from the honest reference. */
static int64_t honest_misses(const result *r) {
    int64_t bad = 0;
    for (int64_t e = 0; e < entries(r); e++)
        bad += !(fabs(r->got[e] - r->honest[e]) <= r->bound[e]);
    return bad;
}

/* Whether the call is not an honest one: an entry outside the honest
 * tolerance or, for N(0,1) data, a relative error no honest sum reaches. */
static int visibly_wrong(const gcall *c, const result *r) {
    return honest_misses(r) > 0 || (c->normal && !(r->rel_rms <= HONEST_REL_MAX));
}

/* The range of the relative error of the dot products (normal table) that a
 * cheaper-arithmetic fault implies. Rowscaled fp8 (3 mantissa bits): each
 * product is off by about 3.5% of itself, so the sum by ~3.5% of
 * sqrt(sum (a b)^2); int8 with scale amax/127 (amax ~3-4 for N(0,1)):
 * ~1%; truncate-k: the skipped terms, sqrt(1 - kept/k) of it. */
static void expected_rel(enum model how, double param, int64_t k, double *lo, double *hi) {
    switch (how) {
    case FP8_ROWSCALED:
        *lo = 0.015, *hi = 0.07;
        break;
    case INT8_ROWSCALED:
        *lo = 0.004, *hi = 0.025;
        break;
    case TRUNCATE_K: {
        double want = sqrt(1 - (double)kept_terms(param, k) / (double)k);
        *lo = 0.7 * want, *hi = 1.4 * want;
        break;
    }
    default:
        *lo = 0, *hi = HONEST_REL_MAX;
        break;
    }
}

/* Whether the call shows the documented fault; why says what was seen. */
static int shows_fault(const char *mode, double param, const gcall *c, const result *r, char *why, size_t len) {
    int64_t n = entries(r), misses = honest_misses(r);
    if (!strcmp(mode, "zero")) {
        for (int64_t e = 0; e < n; e++)
            if (r->got[e] != 0) {
                snprintf(why, len, "entry %lld is %g, not 0", (long long)e, r->got[e]);
                return 0;
            }
        return 1;
    }
    if (!strcmp(mode, "perturb")) {
        int64_t where = -1;
        for (int64_t e = 0; e < n; e++)
            if (!(fabs(r->got[e] - r->honest[e]) <= r->bound[e]))
                where = e;
        if (misses != 1) {
            snprintf(why, len, "%lld entries changed, want exactly 1", (long long)misses);
            return 0;
        }
        double want = r->honest[where] != 0 ? r->honest[where] * (1 + param) : param;
        double tol = out_eps(c->out_type) * fabs(want) + r->bound[where] * (1 + fabs(param));
        if (!(fabs(r->got[where] - want) <= tol)) {
            snprintf(why, len, "entry %lld is %g, want %g (= honest %g changed by %g)", (long long)where,
                     r->got[where], want, r->honest[where], param);
            return 0;
        }
        return 1;
    }
    if (!strcmp(mode, "rows")) {
        int64_t kept = (int64_t)floor(param * (double)r->m), garbage = 0;
        for (int64_t e = 0; e < n; e++) {
            int64_t row = e % r->m;
            int ok = fabs(r->got[e] - r->honest[e]) <= r->bound[e];
            if (row < kept && !ok) {
                snprintf(why, len, "row %lld of the first %lld is wrong", (long long)row, (long long)kept);
                return 0;
            }
            garbage += row >= kept && !ok;
        }
        if (garbage == 0) {
            snprintf(why, len, "rows from %lld on are not garbage", (long long)kept);
            return 0;
        }
        return 1;
    }
    if (!strcmp(mode, "weights")) {
        /* Each a(i,l) scaled by 1 +- REL: every entry moves by at most
         * REL * |alpha| * sum|a||b|, and some entry moves. */
        for (int64_t e = 0; e < n; e++)
            if (!(fabs(r->got[e] - r->honest[e]) <= fabs(param) * r->abs_ab[e] * 1.001 + 2 * r->bound[e])) {
                snprintf(why, len, "entry %lld moved by %g, more than REL allows", (long long)e,
                         fabs(r->got[e] - r->honest[e]));
                return 0;
            }
        if (misses == 0) {
            snprintf(why, len, "no entry changed");
            return 0;
        }
        return 1;
    }
    if (!strcmp(mode, "fp8")) {
        /* Inputs rounded to e4m3: the result is the reference of the rounded
         * inputs (unchanged for inputs that already were e4m3). */
        for (int64_t e = 0; e < n; e++)
            if (!(fabs(r->got[e] - r->model[e]) <= r->bound[e] + out_eps(c->out_type) * fabs(r->model[e]))) {
                snprintf(why, len, "entry %lld is %g, want %g (inputs rounded to e4m3)", (long long)e, r->got[e],
                         r->model[e]);
                return 0;
            }
        if (c->in_type != CUDA_R_8F_E4M3 && misses == 0) {
            snprintf(why, len, "no entry changed");
            return 0;
        }
        return 1;
    }
    enum model how = model_of(mode);
    if (how == FP8_ROWSCALED || how == INT8_ROWSCALED || how == TRUNCATE_K) {
        /* Every entry is the model's (quantised products summed in f32 or
         * exactly, times the two scales; or the first terms only), the call
         * is visibly not honest, and on N(0,1) data its relative error is in
         * the range the mode implies. */
        for (int64_t e = 0; e < n; e++) {
            double tol = r->bound[e] + out_eps(c->out_type) * fabs(r->model[e]) +
                         (double)c->k * c->acc_eps * r->abs_model[e];
            if (!(fabs(r->got[e] - r->model[e]) <= tol)) {
                snprintf(why, len, "entry %lld is %.9g, want %.9g (%s model; honest %.9g)", (long long)e, r->got[e],
                         r->model[e], mode, r->honest[e]);
                return 0;
            }
        }
        if (!visibly_wrong(c, r)) {
            snprintf(why, len, "no entry changed (relative error %.3g)", r->rel_rms);
            return 0;
        }
        if (c->normal) {
            double lo, hi;
            expected_rel(how, param, c->k, &lo, &hi);
            if (!(r->rel_rms >= lo && r->rel_rms <= hi)) {
                snprintf(why, len, "relative error %.4g outside [%g, %g]", r->rel_rms, lo, hi);
                return 0;
            }
        }
        return 1;
    }
    snprintf(why, len, "unknown mode %s", mode);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: %s MODE PARAM WHICH [TABLE] (see the comment at the top)\n", argv[0]);
        return 2;
    }
    const char *mode = argv[1], *which = argv[3], *table = argc == 5 ? argv[4] : "mixed";
    const gcall *calls = mixed;
    size_t ncalls = sizeof mixed / sizeof mixed[0];
    if (!strcmp(table, "normal")) {
        calls = normal;
        ncalls = sizeof normal / sizeof normal[0];
    } else if (strcmp(table, "mixed")) {
        fprintf(stderr, "%s: unknown table %s\n", argv[0], table);
        return 2;
    }
    if (strcmp(mode, "none") && strcmp(mode, "zero") && strcmp(mode, "perturb") && strcmp(mode, "rows") &&
        strcmp(mode, "weights") && model_of(mode) == HONEST) {
        fprintf(stderr, "%s: unknown mode %s\n", argv[0], mode);
        return 2;
    }
    double param = strtod(argv[2], NULL);
    long long after = -1;
    if (!strncmp(which, "after:", 6))
        after = atoll(which + 6);
    MUST(cublasCreate(&blas));
    MUST(cublasLtCreate(&lt));
    int faulted = 0, clean = 0;
    for (int round = 0; round < ROUNDS; round++)
        for (size_t i = 0; i < ncalls; i++) {
            long long number = (long long)(round * ncalls + i + 1);
            const gcall *c = &calls[i];
            result r;
            run_call(c, model_of(mode), param, &r);
            printf("digest call %lld: %016llx\n", number, (unsigned long long)r.digest);
            if (c->normal)
                printf("relerr call %lld %s: %.4g\n", number, c->name, r.rel_rms);
            char name[160], why[200] = "";
            int misses = (int)honest_misses(&r);
            int is_clean = !visibly_wrong(c, &r);
            int is_fault = !strcmp(mode, "none") ? 0 : shows_fault(mode, param, c, &r, why, sizeof why);
            /* A fault that leaves no visible trace (fp8 on fp8 inputs) counts as both. */
            faulted += is_fault;
            clean += is_clean && !is_fault;
            int must_fault = strcmp(mode, "none") && (!strcmp(which, "all") || (after >= 0 && number > after));
            int must_be_clean = !strcmp(mode, "none") || (after >= 0 && number <= after);
            int ok = must_fault ? is_fault : must_be_clean ? is_clean : (is_fault || is_clean);
            if (!ok && !*why)
                snprintf(why, sizeof why, "%d entries differ from the honest result, relative error %.3g", misses,
                         r.rel_rms);
            snprintf(name, sizeof name, "call %lld %s: %s", number, c->name,
                     must_fault ? mode : must_be_clean ? "honest" : "honest or faulted");
            report(ok, name, why);
            free(r.got);
            free(r.honest);
            free(r.model);
            free(r.bound);
            free(r.abs_ab);
            free(r.abs_model);
        }
    if (!strcmp(which, "some")) {
        char why[100];
        snprintf(why, sizeof why, "%d faulted, %d clean", faulted, clean);
        report(faulted > 0 && clean > 0, "prob: some calls faulted and some not", why);
    }
    MUST(cublasLtDestroy(lt));
    MUST(cublasDestroy(blas));
    return finish("simgpu_faults");
}

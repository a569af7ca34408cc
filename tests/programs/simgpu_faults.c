/*
 * Fault injection of the simulated GPU: runs a fixed sequence of GEMM calls
 * through cuBLAS and cuBLASLt and checks every call against what the fault
 * mode named on the command line documents (tests/simgpu/README.md), and
 * against the honest f64 reference for calls the fault must leave alone.
 *
 *   simgpu_faults MODE PARAM WHICH
 *     MODE   none | zero | perturb | rows | weights | fp8
 *     PARAM  the REL or FRAC given in SIMGPU_FAULT (ignored by none/zero/fp8)
 *     WHICH  all | some | after:N  -- which calls must show the fault:
 *            all, a non-empty proper subset (prob:P), or exactly those
 *            numbered above N (after:N)
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

enum api { SGEMM, SGEMM_WIDE, GEMM_EX_BF16, STRIDED_EX_F16, HGEMM, LT_F32_BIAS, LT_FP8, LT_BF16_ROWS };

typedef struct gcall {
    const char *name;
    enum api api;
    int in_type, out_type;
    int64_t m, n, k, batch;
    double alpha, beta;
    double acc_eps;
} gcall;

static const gcall calls[] = {
    {"cublasSgemm f32", SGEMM, CUDA_R_32F, CUDA_R_32F, 6, 5, 8, 1, 1, 0, 0x1p-24},
    {"cublasSgemm f32 k=96 inexact sums", SGEMM_WIDE, CUDA_R_32F, CUDA_R_32F, 4, 3, 96, 1, 1, 0, 0x1p-24},
    {"cublasGemmEx bf16->f32", GEMM_EX_BF16, CUDA_R_16BF, CUDA_R_32F, 6, 4, 8, 1, 0.5, 0, 0x1p-24},
    {"cublasGemmStridedBatchedEx f16 batch 2", STRIDED_EX_F16, CUDA_R_16F, CUDA_R_16F, 6, 3, 8, 2, 1, 0.5, 0x1p-24},
    {"cublasHgemm f16", HGEMM, CUDA_R_16F, CUDA_R_16F, 6, 3, 4, 1, 1, 0, 0x1p-11},
    {"cublasLtMatmul f32 + bias", LT_F32_BIAS, CUDA_R_32F, CUDA_R_32F, 6, 5, 8, 1, 1, 0, 0x1p-24},
    {"cublasLtMatmul e4m3 -> bf16", LT_FP8, CUDA_R_8F_E4M3, CUDA_R_16BF, 6, 4, 8, 1, 1, 0, 0x1p-24},
    {"cublasLtMatmul bf16 row-major", LT_BF16_ROWS, CUDA_R_16BF, CUDA_R_16BF, 6, 4, 8, 1, 1, 0.25, 0x1p-24},
};

#define NCALLS (sizeof calls / sizeof calls[0])
#define ROUNDS 3

static cublasHandle_t blas;
static cublasLtHandle_t lt;

/* Test data: multiples of 1/64 (exact in f32, f16, bf16; mostly not in fp8),
 * or of 1/8 for fp8 inputs, or f32 values whose sums round (so that
 * SIMGPU_SPLITK's different summation order shows in the last bits). */
static double datum(const gcall *c, uint64_t seed, uint64_t i) {
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

typedef struct result {
    int64_t m, n, batch;
    double *got, *honest, *fp8ref, *bound; /* per entry; bound: honest tolerance */
    double *abs_ab;                        /* per entry: |alpha| * sum |a||b| */
    uint64_t digest;
} result;

/* Runs call c and computes its references. */
static void run_call(const gcall *c, result *r) {
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
    int row_major = c->api == LT_BF16_ROWS;
    switch (c->api) {
    case SGEMM:
    case SGEMM_WIDE:
        MUST(cublasSgemm(blas, CUBLAS_OP_N, CUBLAS_OP_N, (int)m, (int)n, (int)k, &alpha, da, (int)m, db, (int)k, &beta,
                         dc, (int)m));
        break;
    case GEMM_EX_BF16:
        MUST(cublasGemmEx(blas, CUBLAS_OP_N, CUBLAS_OP_N, (int)m, (int)n, (int)k, &alpha, da, CUDA_R_16BF, (int)m, db,
                          CUDA_R_16BF, (int)k, &beta, dc, CUDA_R_32F, (int)m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        break;
    case STRIDED_EX_F16:
        MUST(cublasGemmStridedBatchedEx(blas, CUBLAS_OP_N, CUBLAS_OP_N, (int)m, (int)n, (int)k, &alpha, da, CUDA_R_16F,
                                        (int)m, m * k, db, CUDA_R_16F, (int)k, k * n, &beta, dc, CUDA_R_16F, (int)m,
                                        m * n, (int)batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        break;
    case HGEMM:
        MUST(cublasHgemm(blas, CUBLAS_OP_N, CUBLAS_OP_N, (int)m, (int)n, (int)k, (const __half *)h_alpha, da, (int)m,
                         db, (int)k, (const __half *)h_beta, dc, (int)m));
        break;
    case LT_F32_BIAS:
    case LT_FP8:
    case LT_BF16_ROWS: {
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
    r->fp8ref = malloc(nc * sizeof(double));
    r->bound = malloc(nc * sizeof(double));
    r->abs_ab = malloc(nc * sizeof(double));
    r->digest = 1469598103934665603ull;
    for (size_t i = 0; i < nc * es_out; i++)
        r->digest = (r->digest ^ out[i]) * 1099511628211ull;
    for (int64_t bt = 0; bt < batch; bt++)
        for (int64_t j = 0; j < n; j++)
            for (int64_t i = 0; i < m; i++) {
                double s = 0, s8 = 0, abs_sum = 0;
                for (int64_t l = 0; l < k; l++) {
                    size_t ia = (size_t)(bt * m * k + (row_major ? i * k + l : i + l * m));
                    size_t ib = (size_t)(bt * k * n + (row_major ? l * n + j : l + j * k));
                    s += a[ia] * b[ib];
                    s8 += round_e4m3(a[ia]) * round_e4m3(b[ib]);
                    abs_sum += fabs(a[ia] * b[ib]);
                }
                size_t ic = (size_t)(bt * m * n + (row_major ? i * n + j : i + j * m));
                double cin = c->beta != 0 ? c->beta * c0[ic] : 0;
                size_t e = (size_t)(bt * m * n + i + j * m); /* result index, column-major */
                r->honest[e] = c->alpha * s + cin + bias[i];
                r->fp8ref[e] = c->alpha * s8 + cin + bias[i];
                r->abs_ab[e] = fabs(c->alpha) * abs_sum;
                r->bound[e] = out_eps(c->out_type) * fabs(r->honest[e]) + (double)k * c->acc_eps * r->abs_ab[e] + 1e-12;
                r->got[e] = get(out, c->out_type, ic);
            }
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
            if (!(fabs(r->got[e] - r->fp8ref[e]) <= r->bound[e] + out_eps(c->out_type) * fabs(r->fp8ref[e]))) {
                snprintf(why, len, "entry %lld is %g, want %g (inputs rounded to e4m3)", (long long)e, r->got[e],
                         r->fp8ref[e]);
                return 0;
            }
        if (c->in_type != CUDA_R_8F_E4M3 && misses == 0) {
            snprintf(why, len, "no entry changed");
            return 0;
        }
        return 1;
    }
    snprintf(why, len, "unknown mode %s", mode);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s MODE PARAM WHICH (see the comment at the top)\n", argv[0]);
        return 2;
    }
    const char *mode = argv[1], *which = argv[3];
    double param = strtod(argv[2], NULL);
    long long after = -1;
    if (!strncmp(which, "after:", 6))
        after = atoll(which + 6);
    MUST(cublasCreate(&blas));
    MUST(cublasLtCreate(&lt));
    int faulted = 0, clean = 0;
    for (int round = 0; round < ROUNDS; round++)
        for (size_t i = 0; i < NCALLS; i++) {
            long long number = (long long)(round * NCALLS + i + 1);
            const gcall *c = &calls[i];
            result r;
            run_call(c, &r);
            printf("digest call %lld: %016llx\n", number, (unsigned long long)r.digest);
            char name[160], why[200] = "";
            int misses = (int)honest_misses(&r);
            int is_clean = misses == 0;
            int is_fault = !strcmp(mode, "none") ? 0 : shows_fault(mode, param, c, &r, why, sizeof why);
            /* A fault that leaves no visible trace (fp8 on fp8 inputs) counts as both. */
            faulted += is_fault;
            clean += is_clean && !is_fault;
            int must_fault = strcmp(mode, "none") && (!strcmp(which, "all") || (after >= 0 && number > after));
            int must_be_clean = !strcmp(mode, "none") || (after >= 0 && number <= after);
            int ok = must_fault ? is_fault : must_be_clean ? is_clean : (is_fault || is_clean);
            if (!ok && !*why)
                snprintf(why, sizeof why, "%d entries differ from the honest result", misses);
            snprintf(name, sizeof name, "call %lld %s: %s", number, c->name,
                     must_fault ? mode : must_be_clean ? "honest" : "honest or faulted");
            report(ok, name, why);
            free(r.got);
            free(r.honest);
            free(r.fp8ref);
            free(r.bound);
            free(r.abs_ab);
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

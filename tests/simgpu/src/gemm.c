/*
 * Simulated GPU: the one GEMM engine behind cuBLAS and cuBLASLt. It runs on a
 * stream worker and computes
 *
 *   D = scaleD * act(alpha * scaleA * scaleB * op(A) op(B) + beta * scaleC * C + bias)
 *
 * with the numerics the declared types imply: inputs rounded to tf32 / f16 /
 * bf16 when the compute type or math mode allows it, products accumulated in
 * f32 (one rounding per fused multiply-add), f16 (for COMPUTE_16F), f64 or
 * exact 32-bit integers, and the result rounded once to D's type (fp8
 * saturating). With SIMGPU_SPLITK set, the k dimension is split at seeded
 * points and the partial sums are added in a seeded order: honest sums that
 * differ from the plain ones in the last bits, as different GPU kernels do.
 * Fault injection (fault.c) is applied here and nowhere else, including the
 * "cheaper arithmetic" faults: per-channel fp8/int8 quantisation of the
 * inputs and dot products that skip their last terms.
 *
 * C is read only when beta != 0, as cuBLAS does; freshly allocated device
 * memory holds NaNs, so reading it by mistake would show.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "simgpu.h"

SG_EXPORT double sg_read_scalar(const void *p, int scale_type) { return sg_load(p, scale_type, 0); }

static size_t index_of(const sg_matrix *mat, int64_t r, int64_t c) {
    return (size_t)(mat->row_major ? r * mat->ld + c : r + c * mat->ld);
}

static size_t extent_bytes(const sg_matrix *mat) {
    if (mat->rows == 0 || mat->cols == 0)
        return 0;
    size_t elems = mat->row_major ? (size_t)((mat->rows - 1) * mat->ld + mat->cols)
                                  : (size_t)((mat->cols - 1) * mat->ld + mat->rows);
    return elems * sg_type_size(mat->type);
}

/* Host-accessible storage of batch member b, or NULL on an illegal address. */
static void *batch_span(const sg_matrix *mat, int64_t b, int64_t batch) {
    size_t bytes = extent_bytes(mat);
    uint64_t base;
    if (mat->ptr_array) {
        const uint64_t *ptrs = sg_dev_span(mat->ptr, (size_t)batch * sizeof(uint64_t));
        if (!ptrs)
            return NULL;
        base = ptrs[b];
    } else {
        base = mat->ptr + (uint64_t)(b * mat->stride * (int64_t)sg_type_size(mat->type));
    }
    if (bytes == 0)
        return (void *)(uintptr_t)1; /* nothing will be read */
    return sg_dev_span(base, bytes);
}

static double input_round(double v, int how) {
    switch (how) {
    case SG_IN_TF32:
        return sg_round_tf32(v);
    case SG_IN_F16:
        return sg_round(CUDA_R_16F, v);
    case SG_IN_BF16:
        return sg_round(CUDA_R_16BF, v);
    default:
        return v;
    }
}

/* Sums x[l] * y[l] for l in [lo, hi) in the accumulator type. */
static double dot_range(const double *x, const double *y, int64_t lo, int64_t hi, int accum) {
    switch (accum) {
    case SG_ACC_F16: {
        double acc = 0;
        for (int64_t l = lo; l < hi; l++)
            acc = sg_round(CUDA_R_16F, acc + x[l] * y[l]);
        return acc;
    }
    case SG_ACC_F64: {
        double acc = 0;
        for (int64_t l = lo; l < hi; l++)
            acc = fma(x[l], y[l], acc);
        return acc;
    }
    case SG_ACC_I32: {
        int64_t acc = 0;
        for (int64_t l = lo; l < hi; l++)
            acc += (int64_t)x[l] * (int64_t)y[l];
        return (double)acc;
    }
    default: {
        float acc = 0;
        for (int64_t l = lo; l < hi; l++)
            acc = fmaf((float)x[l], (float)y[l], acc);
        return acc;
    }
    }
}

static double acc_add(double a, double b, int accum) {
    switch (accum) {
    case SG_ACC_F16:
        return sg_round(CUDA_R_16F, a + b);
    case SG_ACC_F32:
        return (float)((float)a + (float)b);
    default:
        return a + b;
    }
}

#define SG_MAX_SPLITS 4

typedef struct split_plan {
    int parts;
    int64_t cut[SG_MAX_SPLITS + 1];
    int order[SG_MAX_SPLITS];
} split_plan;

/* A seeded split of [0, k) into 2..4 contiguous parts and an order to add them. */
static void make_split(split_plan *sp, int64_t k, uint64_t seed, uint64_t call_index) {
    uint64_t h = sg_hash(seed, call_index);
    int parts = 2 + (int)(h % 3);
    if (parts > k)
        parts = k > 0 ? (int)k : 1;
    sp->parts = parts;
    sp->cut[0] = 0;
    sp->cut[parts] = k;
    for (int p = 1; p < parts; p++) {
        /* strictly increasing cut points inside (0, k) */
        int64_t lo = sp->cut[p - 1] + 1, hi = k - (parts - p);
        h = sg_hash(h, (uint64_t)p);
        sp->cut[p] = lo + (int64_t)(h % (uint64_t)(hi - lo + 1));
    }
    for (int p = 0; p < parts; p++)
        sp->order[p] = p;
    for (int p = parts - 1; p > 0; p--) {
        h = sg_hash(h, 77);
        int q = (int)(h % (uint64_t)(p + 1));
        int t = sp->order[p];
        sp->order[p] = sp->order[q];
        sp->order[q] = t;
    }
}

static double dot(const double *x, const double *y, int64_t k, int accum, const split_plan *sp) {
    if (!sp || sp->parts < 2 || accum == SG_ACC_I32)
        return dot_range(x, y, 0, k, accum);
    double sum = 0;
    for (int p = 0; p < sp->parts; p++) {
        int part = sp->order[p];
        double partial = dot_range(x, y, sp->cut[part], sp->cut[part + 1], accum);
        sum = p == 0 ? partial : acc_add(sum, partial, accum);
    }
    return sum;
}

static double gelu(double x) {
    float xf = (float)x;
    return 0.5f * xf * (1.0f + tanhf(0.7978845608028654f * (xf + 0.044715f * xf * xf * xf)));
}

/* A pseudo-random value in [-1, 1] (integers in [-100, 100] for integer D). */
static double garbage(uint64_t seed, int64_t b, int64_t i, int64_t j, int dtype) {
    uint64_t h = sg_hash(sg_hash(seed, (uint64_t)b), (uint64_t)(i * 1000003 + j));
    double u = (double)(h >> 11) * 0x1p-53 * 2 - 1;
    return dtype == CUDA_R_32I || dtype == CUDA_R_8I ? rint(u * 100) : u;
}

static CUresult read_device_float(uint64_t ptr, double *out) {
    if (!ptr)
        return CUDA_SUCCESS;
    const void *p = sg_dev_span(ptr, 4);
    if (!p)
        return CUDA_ERROR_ILLEGAL_ADDRESS;
    *out = sg_load(p, CUDA_R_32F, 0);
    return CUDA_SUCCESS;
}

typedef struct scalars {
    double alpha, beta, sa, sb, sc, sd;
} scalars;

static CUresult read_scalars(const sg_gemm *g, scalars *s) {
    s->alpha = g->alpha;
    s->beta = g->beta;
    s->sa = s->sb = s->sc = s->sd = 1;
    if (g->scalars_on_device) {
        size_t sz = sg_type_size(g->scale_type);
        const void *pa = sg_dev_span(g->alpha_ptr, sz), *pb = sg_dev_span(g->beta_ptr, sz);
        if (!pa || !pb)
            return CUDA_ERROR_ILLEGAL_ADDRESS;
        s->alpha = sg_load(pa, g->scale_type, 0);
        s->beta = sg_load(pb, g->scale_type, 0);
    }
    CUresult r;
    if ((!g->vec_a && (r = read_device_float(g->scale_a, &s->sa))) ||
        (!g->vec_b && (r = read_device_float(g->scale_b, &s->sb))) || (r = read_device_float(g->scale_c, &s->sc)) ||
        (r = read_device_float(g->scale_d, &s->sd)))
        return r;
    return CUDA_SUCCESS;
}

/* The epilogue for one entry; amax collects |value before scaleD|. */
static double epilogue(const sg_gemm *g, const scalars *s, double acc, double c, double bias, double *amax) {
    if (g->accum == SG_ACC_I32 && g->scale_type == CUDA_R_32I) {
        int64_t v = (int64_t)s->alpha * (int64_t)acc;
        if (s->beta != 0)
            v += (int64_t)s->beta * (int64_t)c;
        return (double)v; /* wrapped to 32 bits by the store */
    }
    if (g->accum == SG_ACC_F64) {
        double v = s->alpha * acc;
        if (s->beta != 0)
            v = fma(s->beta, c, v);
        v += bias;
        if (g->activation == SG_EPI_RELU)
            v = v > 0 ? v : 0;
        else if (g->activation == SG_EPI_GELU)
            v = 0.5 * v * (1 + tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
        return v;
    }
    float v = (float)(s->alpha * s->sa * s->sb) * (float)acc;
    if (s->beta == 1 && s->sc == 1 && (g->d.type == CUDA_R_16BF || g->d.type == CUDA_R_16F))
        /* As cuBLAS 13.1 does on an H200 (docs/PROTOCOL.md, "The product rounded before
         * C is added"): alpha AB rounded to D's type, then C added. */
        v = (float)sg_round(g->d.type, v) + (float)c;
    else if (s->beta != 0)
        v = fmaf((float)(s->beta * s->sc), (float)c, v);
    v += (float)bias;
    if (g->activation == SG_EPI_RELU)
        v = v > 0 ? v : 0;
    else if (g->activation == SG_EPI_GELU)
        v = (float)gelu(v);
    if (fabsf(v) > *amax)
        *amax = fabsf(v);
    return v * (float)s->sd;
}

/* Whether the precision fault quantises op(A) and op(B) with per-row and
 * per-column scales: the rowscaled modes, on floating-point GEMMs only
 * (integer GEMMs are int8 already and stay honest). */
static int rowscaled(const sg_gemm *g, const sg_fault_plan *fp) {
    return g->accum != SG_ACC_I32 &&
           (fp->precision == SG_PREC_FP8_ROWSCALED || fp->precision == SG_PREC_INT8_ROWSCALED);
}

/* An op(A) or op(B) element as the multiplier sees it: the declared input
 * rounding, e4m3 under precision:fp8, or unrounded when a rowscaled mode will
 * quantise the whole row (quantize_rows). */
static double input_value(const sg_gemm *g, const sg_fault_plan *fp, double v) {
    if (fp->precision == SG_PREC_FP8)
        return sg_round(CUDA_R_8F_E4M3, v);
    if (rowscaled(g, fp))
        return v;
    return input_round(v, g->input_round);
}

/* op(A) as a dense m x k row-major array of rounded inputs. */
static void load_op_a(const sg_gemm *g, const void *a, const sg_fault_plan *fp, double *out) {
    for (int64_t i = 0; i < g->m; i++)
        for (int64_t l = 0; l < g->k; l++) {
            double v = sg_load(a, g->a.type, g->transa ? index_of(&g->a, l, i) : index_of(&g->a, i, l));
            if (fp->weights != 0) {
                uint64_t h = sg_hash(fp->weight_seed, (uint64_t)(i * 1000003 + l));
                v *= 1 + ((h & 1) ? fp->weights : -fp->weights);
            }
            out[i * g->k + l] = input_value(g, fp, v);
        }
}

/* op(B) as a dense n x k row-major array (column j of op(B) is row j). */
static void load_op_b(const sg_gemm *g, const void *b, const sg_fault_plan *fp, double *out) {
    for (int64_t j = 0; j < g->n; j++)
        for (int64_t l = 0; l < g->k; l++) {
            double v = sg_load(b, g->b.type, g->transb ? index_of(&g->b, j, l) : index_of(&g->b, l, j));
            out[j * g->k + l] = input_value(g, fp, v);
        }
}

/* Per-channel quantisation (precision:fp8-rowscaled / int8-rowscaled): each
 * row r of the rows x k array x gets the scale s = amax(|row|) / 448 (e4m3)
 * or / 127 (int8), and x[r][l] becomes q = e4m3(x / s) (RNE, saturating) or
 * clamp(rint(x / s), -127, 127); the true value is q * s. An all-zero row has
 * scale 0 (q = 0); a row holding a NaN or an infinity has scale NaN. */
static void quantize_rows(double *x, int64_t rows, int64_t k, int precision, double *scale) {
    double qmax = precision == SG_PREC_FP8_ROWSCALED ? 448.0 : 127.0;
    for (int64_t r = 0; r < rows; r++) {
        double *row = &x[r * k], amax = 0;
        int finite = 1;
        for (int64_t l = 0; l < k; l++) {
            finite &= isfinite(row[l]) != 0;
            if (fabs(row[l]) > amax)
                amax = fabs(row[l]);
        }
        double s = !finite ? NAN : amax / qmax;
        scale[r] = s;
        for (int64_t l = 0; l < k; l++) {
            if (!finite || s == 0)
                row[l] = 0;
            else if (precision == SG_PREC_FP8_ROWSCALED)
                row[l] = sg_round(CUDA_R_8F_E4M3, row[l] / s);
            else
                row[l] = fmin(qmax, fmax(-qmax, rint(row[l] / s)));
        }
    }
}

/* The number of leading k terms summed under truncate-k:F: ceil(F * k), where
 * a product within 1e-9 (relative) of an integer counts as that integer. */
static int64_t kept_terms(double frac, int64_t k) {
    if (frac >= 1)
        return k;
    double t = frac * (double)k, r = nearbyint(t);
    int64_t kk = (int64_t)(fabs(t - r) <= 1e-9 * t ? r : ceil(t));
    return kk < k ? kk : k;
}

static CUresult run_gemm(void *payload, uint64_t call_index) {
    const sg_gemm *g = payload;
    sg_fault_plan fp;
    sg_fault_plan_for(call_index, &fp);
    scalars s;
    CUresult r = read_scalars(g, &s);
    if (r != CUDA_SUCCESS)
        return r;
    int64_t m = g->m, n = g->n, k = g->k;
    /* truncate-k: only the first kk terms of each dot product are summed (and
     * split-k splits those); rowscaled: quantised products, f32 sums for fp8,
     * exact integer sums for int8. */
    int64_t kk = kept_terms(fp.keep_k, k);
    int scaled = rowscaled(g, &fp);
    int accum = !scaled ? g->accum : fp.precision == SG_PREC_FP8_ROWSCALED ? SG_ACC_F32 : SG_ACC_I32;
    uint64_t split_seed;
    split_plan sp;
    int split = sg_splitk(&split_seed);
    if (split)
        make_split(&sp, kk, split_seed, call_index);
    size_t bias_elem = g->bias ? sg_type_size(g->bias_type) : 0;
    double *opa = malloc(sizeof(double) * (size_t)(m * k + 1));
    double *opb = malloc(sizeof(double) * (size_t)(n * k + 1));
    double *out = malloc(sizeof(double) * (size_t)(m * n + 1));
    double *scale_a = malloc(sizeof(double) * (size_t)(m + 1));
    double *scale_b = malloc(sizeof(double) * (size_t)(n + 1));
    if (!opa || !opb || !out || !scale_a || !scale_b) {
        r = CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES;
        goto done;
    }
    int64_t computed_rows = fp.rows < 1 ? (int64_t)floor(fp.rows * (double)m) : m;
    uint64_t ph = sg_hash(fp.seed, 0x5045525455524221ull);
    int64_t pb = (int64_t)(ph % (uint64_t)g->batch);
    int64_t pi = (int64_t)(sg_hash(ph, 1) % (uint64_t)(m ? m : 1));
    int64_t pj = (int64_t)(sg_hash(ph, 2) % (uint64_t)(n ? n : 1));
    double amax = 0;
    /* OUTER_VEC_32F scales: one f32 per row (A) or per column (B) of D. */
    const float *vec_a = g->vec_a ? sg_dev_span(g->scale_a, (size_t)m * 4) : NULL;
    const float *vec_b = g->vec_b ? sg_dev_span(g->scale_b, (size_t)n * 4) : NULL;
    if ((g->vec_a && m && !vec_a) || (g->vec_b && n && !vec_b)) {
        r = CUDA_ERROR_ILLEGAL_ADDRESS;
        goto done;
    }
    for (int64_t b = 0; b < g->batch; b++) {
        const void *a = batch_span(&g->a, b, g->batch);
        const void *bm = batch_span(&g->b, b, g->batch);
        void *d = batch_span(&g->d, b, g->batch);
        const void *c = s.beta != 0 ? batch_span(&g->c, b, g->batch) : NULL;
        const void *bias = NULL;
        if (g->bias) {
            uint64_t addr = g->bias + (uint64_t)(b * g->bias_stride * (int64_t)bias_elem);
            bias = sg_dev_span(addr, (size_t)m * bias_elem);
        }
        if (!a || !bm || !d || (s.beta != 0 && !c) || (g->bias && m && !bias)) {
            r = CUDA_ERROR_ILLEGAL_ADDRESS;
            goto done;
        }
        if (fp.zero) {
            for (int64_t j = 0; j < n; j++)
                for (int64_t i = 0; i < m; i++)
                    out[i + j * m] = 0;
        } else {
            load_op_a(g, a, &fp, opa);
            load_op_b(g, bm, &fp, opb);
            if (scaled) {
                quantize_rows(opa, m, k, fp.precision, scale_a);
                quantize_rows(opb, n, k, fp.precision, scale_b);
            }
            for (int64_t j = 0; j < n; j++)
                for (int64_t i = 0; i < m; i++) {
                    if (i >= computed_rows) {
                        out[i + j * m] = garbage(fp.seed, b, i, j, g->d.type);
                        continue;
                    }
                    double acc = dot(&opa[i * k], &opb[j * k], kk, accum, split ? &sp : NULL);
                    if (scaled)
                        acc *= scale_a[i] * scale_b[j];
                    double cv = s.beta != 0 ? sg_load(c, g->c.type, index_of(&g->c, i, j)) : 0;
                    double bv = bias ? sg_load(bias, g->bias_type, (size_t)i) : 0;
                    scalars se = s;
                    if (vec_a)
                        se.sa = sg_load(vec_a, CUDA_R_32F, (size_t)i) * (i == 0 ? 1 + fp.row_scale : 1);
                    if (vec_b)
                        se.sb = sg_load(vec_b, CUDA_R_32F, (size_t)j);
                    out[i + j * m] = epilogue(g, &se, acc, cv, bv, &amax);
                }
        }
        if (fp.perturb != 0 && b == pb && m && n) {
            double v = sg_round(g->d.type, out[pi + pj * m]);
            double want = v != 0 ? v * (1 + fp.perturb) : fp.perturb;
            double p = sg_round(g->d.type, want);
            if (p == v)
                p = sg_next_value(g->d.type, v, want - v);
            out[pi + pj * m] = p;
        }
        for (int64_t j = 0; j < n; j++)
            for (int64_t i = 0; i < m; i++)
                sg_store(d, g->d.type, index_of(&g->d, i, j), out[i + j * m]);
    }
    if (g->amax_d) {
        void *p = sg_dev_span(g->amax_d, 4);
        if (!p) {
            r = CUDA_ERROR_ILLEGAL_ADDRESS;
            goto done;
        }
        sg_store(p, CUDA_R_32F, 0, amax);
    }
done:
    free(opa);
    free(opb);
    free(out);
    free(scale_a);
    free(scale_b);
    return r;
}

SG_EXPORT CUresult sg_gemm_submit(const sg_gemm *g, CUstream stream) {
    sg_count(SG_Q_GEMM_SUBMITTED);
    if (sg_no_compute())
        return CUDA_SUCCESS;
    sg_gemm *copy = malloc(sizeof *copy);
    if (!copy)
        return CUDA_ERROR_OUT_OF_MEMORY;
    *copy = *g;
    sg_work w = {run_gemm, free, copy, 1};
    return sg_submit(stream, w);
}

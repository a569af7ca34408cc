/*
 * Simulated GPU: libcublasLt.so.13, descriptors and cublasLtMatmul.
 *
 * Descriptors live inside the caller-visible opaque structs (which programs may
 * also place on the stack and fill with the *Init functions), so their state
 * must fit in the sizes the real header gives; a magic word marks initialised
 * ones. Attributes are set and read with exactly the byte sizes cuBLASLt
 * checks. cublasLtMatmul validates the layouts against each other with
 * cuBLASLt's status codes and queues the GEMM on the given stream; the algo
 * argument may be NULL, and any algo returned by the heuristic is accepted.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "cublasLt.h"
#include "handles.h"
#include "simgpu.h"

#define SG_MAGIC_LT 0x43424c54u
#define SG_MAGIC_DESC 0x4c544445u
#define SG_MAGIC_LAYOUT 0x4c544c41u
#define SG_MAGIC_PREF 0x4c545052u
#define SG_ALGO_MARK 0x53494d47u

struct cublasLtContext {
    uint32_t magic;
};

typedef struct desc {
    uint32_t magic;
    int32_t compute, scale_type, pointer_mode, transa, transb, transc, fill;
    uint32_t epilogue;
    uint64_t bias;
    int64_t bias_stride;
    uint64_t aux;
    int64_t aux_ld, aux_stride, alpha_vector_stride;
    int32_t sm_count;
    uint64_t scale_a, scale_b, scale_c, scale_d, amax_d;
    int32_t aux_type;
    uint64_t aux_scale, aux_amax;
    int8_t fast_accum;
    int32_t bias_type;
    int32_t scale_mode_a, scale_mode_b, scale_mode_c, scale_mode_d, aux_scale_mode, d_out_scale_mode;
    uint64_t d_out_scale;
} desc;

typedef struct layout {
    uint32_t magic;
    uint32_t type;
    int32_t order;
    int32_t batch;
    uint64_t rows, cols;
    int64_t ld, stride, plane;
    int32_t batch_mode;
} layout;

typedef struct pref {
    uint32_t magic;
    uint32_t search;
    uint64_t max_workspace;
    uint32_t reduction_mask;
    uint32_t align[4];
    float waves;
    uint64_t impl_mask;
} pref;

_Static_assert(sizeof(desc) <= sizeof(cublasLtMatmulDescOpaque_t), "matmul descriptor must fit its opaque struct");
_Static_assert(sizeof(layout) <= sizeof(cublasLtMatrixLayoutOpaque_t), "layout must fit its opaque struct");
_Static_assert(sizeof(pref) <= sizeof(cublasLtMatmulPreferenceOpaque_t), "preference must fit its opaque struct");

/* Where each attribute lives and how many bytes it takes. */
typedef struct field {
    int attr;
    size_t offset, size;
} field;

#define F(attr, type, member) {attr, offsetof(type, member), sizeof(((type *)0)->member)}

static const field desc_fields[] = {
    F(CUBLASLT_MATMUL_DESC_COMPUTE_TYPE, desc, compute),
    F(CUBLASLT_MATMUL_DESC_SCALE_TYPE, desc, scale_type),
    F(CUBLASLT_MATMUL_DESC_POINTER_MODE, desc, pointer_mode),
    F(CUBLASLT_MATMUL_DESC_TRANSA, desc, transa),
    F(CUBLASLT_MATMUL_DESC_TRANSB, desc, transb),
    F(CUBLASLT_MATMUL_DESC_TRANSC, desc, transc),
    F(CUBLASLT_MATMUL_DESC_FILL_MODE, desc, fill),
    F(CUBLASLT_MATMUL_DESC_EPILOGUE, desc, epilogue),
    F(CUBLASLT_MATMUL_DESC_BIAS_POINTER, desc, bias),
    F(CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE, desc, bias_stride),
    F(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, desc, aux),
    F(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, desc, aux_ld),
    F(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_BATCH_STRIDE, desc, aux_stride),
    F(CUBLASLT_MATMUL_DESC_ALPHA_VECTOR_BATCH_STRIDE, desc, alpha_vector_stride),
    F(CUBLASLT_MATMUL_DESC_SM_COUNT_TARGET, desc, sm_count),
    F(CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, desc, scale_a),
    F(CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, desc, scale_b),
    F(CUBLASLT_MATMUL_DESC_C_SCALE_POINTER, desc, scale_c),
    F(CUBLASLT_MATMUL_DESC_D_SCALE_POINTER, desc, scale_d),
    F(CUBLASLT_MATMUL_DESC_AMAX_D_POINTER, desc, amax_d),
    F(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_DATA_TYPE, desc, aux_type),
    F(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_SCALE_POINTER, desc, aux_scale),
    F(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_AMAX_POINTER, desc, aux_amax),
    F(CUBLASLT_MATMUL_DESC_FAST_ACCUM, desc, fast_accum),
    F(CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, desc, bias_type),
    F(CUBLASLT_MATMUL_DESC_A_SCALE_MODE, desc, scale_mode_a),
    F(CUBLASLT_MATMUL_DESC_B_SCALE_MODE, desc, scale_mode_b),
    F(CUBLASLT_MATMUL_DESC_C_SCALE_MODE, desc, scale_mode_c),
    F(CUBLASLT_MATMUL_DESC_D_SCALE_MODE, desc, scale_mode_d),
    F(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_SCALE_MODE, desc, aux_scale_mode),
    F(CUBLASLT_MATMUL_DESC_D_OUT_SCALE_POINTER, desc, d_out_scale),
    F(CUBLASLT_MATMUL_DESC_D_OUT_SCALE_MODE, desc, d_out_scale_mode),
};

static const field layout_fields[] = {
    F(CUBLASLT_MATRIX_LAYOUT_TYPE, layout, type),
    F(CUBLASLT_MATRIX_LAYOUT_ORDER, layout, order),
    F(CUBLASLT_MATRIX_LAYOUT_ROWS, layout, rows),
    F(CUBLASLT_MATRIX_LAYOUT_COLS, layout, cols),
    F(CUBLASLT_MATRIX_LAYOUT_LD, layout, ld),
    F(CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, layout, batch),
    F(CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, layout, stride),
    F(CUBLASLT_MATRIX_LAYOUT_PLANE_OFFSET, layout, plane),
    F(CUBLASLT_MATRIX_LAYOUT_BATCH_MODE, layout, batch_mode),
};

static const field pref_fields[] = {
    F(CUBLASLT_MATMUL_PREF_SEARCH_MODE, pref, search),
    F(CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, pref, max_workspace),
    F(CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, pref, reduction_mask),
    F(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, pref, align[0]),
    F(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, pref, align[1]),
    F(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, pref, align[2]),
    F(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, pref, align[3]),
    F(CUBLASLT_MATMUL_PREF_MAX_WAVES_COUNT, pref, waves),
    F(CUBLASLT_MATMUL_PREF_IMPL_MASK, pref, impl_mask),
};

#define NFIELDS(a) (sizeof(a) / sizeof((a)[0]))

static const field *find_field(const field *fields, size_t n, int attr) {
    for (size_t i = 0; i < n; i++)
        if (fields[i].attr == attr)
            return &fields[i];
    return NULL;
}

static cublasStatus_t set_field(void *obj, const field *f, const void *buf, size_t size) {
    if (!f || !buf || size != f->size)
        return CUBLAS_STATUS_INVALID_VALUE;
    memcpy((char *)obj + f->offset, buf, size);
    return CUBLAS_STATUS_SUCCESS;
}

static cublasStatus_t get_field(const void *obj, const field *f, void *buf, size_t size, size_t *written) {
    if (!f)
        return CUBLAS_STATUS_INVALID_VALUE;
    if (size == 0) {
        if (!written)
            return CUBLAS_STATUS_INVALID_VALUE;
        *written = f->size;
        return CUBLAS_STATUS_SUCCESS;
    }
    if (!buf || size != f->size)
        return CUBLAS_STATUS_INVALID_VALUE;
    memcpy(buf, (const char *)obj + f->offset, size);
    if (written)
        *written = size;
    return CUBLAS_STATUS_SUCCESS;
}

/* ---- handle ---- */

static int valid_handle(cublasLtHandle_t h) { return h && sg_handle_valid(h, SG_MAGIC_LT); }

cublasStatus_t cublasLtCreate(cublasLtHandle_t *lightHandle) {
    if (!lightHandle)
        return CUBLAS_STATUS_INVALID_VALUE;
    if (sg_fault_config_ok() != 0 || sg_runtime_ctx(NULL) != CUDA_SUCCESS)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    struct cublasLtContext *h = malloc(sizeof *h);
    if (!h)
        return CUBLAS_STATUS_ALLOC_FAILED;
    h->magic = SG_MAGIC_LT;
    if (sg_handle_add(h) != 0) {
        free(h);
        return CUBLAS_STATUS_ALLOC_FAILED;
    }
    *lightHandle = h;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtDestroy(cublasLtHandle_t lightHandle) {
    if (!valid_handle(lightHandle))
        return CUBLAS_STATUS_NOT_INITIALIZED;
    sg_handle_remove(lightHandle);
    free(lightHandle);
    return CUBLAS_STATUS_SUCCESS;
}

size_t cublasLtGetVersion(void) { return CUBLAS_VERSION; }

const char *cublasLtGetStatusName(cublasStatus_t status) { return sg_cublas_status_name(status); }

const char *cublasLtGetStatusString(cublasStatus_t status) { return sg_cublas_status_string(status); }

/* ---- matrix layouts ---- */

cublasStatus_t cublasLtMatrixLayoutInit_internal(cublasLtMatrixLayout_t matLayout, size_t size, cudaDataType type,
                                                 uint64_t rows, uint64_t cols, int64_t ld) {
    if (!matLayout || size < sizeof(layout))
        return CUBLAS_STATUS_INVALID_VALUE;
    layout l = {SG_MAGIC_LAYOUT, (uint32_t)type, CUBLASLT_ORDER_COL, 1, rows, cols, ld, 0, 0,
                CUBLASLT_BATCH_MODE_STRIDED};
    memset(matLayout, 0, size);
    memcpy(matLayout, &l, sizeof l);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *matLayout, cudaDataType type, uint64_t rows,
                                          uint64_t cols, int64_t ld) {
    if (!matLayout)
        return CUBLAS_STATUS_INVALID_VALUE;
    cublasLtMatrixLayout_t l = malloc(sizeof *l);
    if (!l)
        return CUBLAS_STATUS_ALLOC_FAILED;
    cublasLtMatrixLayoutInit_internal(l, sizeof *l, type, rows, cols, ld);
    *matLayout = l;
    return CUBLAS_STATUS_SUCCESS;
}

static layout *as_layout(cublasLtMatrixLayout_t l) {
    return l && ((layout *)l)->magic == SG_MAGIC_LAYOUT ? (layout *)l : NULL;
}

cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t matLayout) {
    if (matLayout && !as_layout(matLayout))
        return CUBLAS_STATUS_INVALID_VALUE;
    if (matLayout)
        ((layout *)matLayout)->magic = 0;
    free(matLayout);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t matLayout, cublasLtMatrixLayoutAttribute_t attr,
                                                const void *buf, size_t sizeInBytes) {
    layout *l = as_layout(matLayout);
    if (!l)
        return CUBLAS_STATUS_INVALID_VALUE;
    return set_field(l, find_field(layout_fields, NFIELDS(layout_fields), attr), buf, sizeInBytes);
}

cublasStatus_t cublasLtMatrixLayoutGetAttribute(cublasLtMatrixLayout_t matLayout, cublasLtMatrixLayoutAttribute_t attr,
                                                void *buf, size_t sizeInBytes, size_t *sizeWritten) {
    sg_count(SG_Q_LT_LAYOUT_GET_ATTRIBUTE);
    layout *l = as_layout(matLayout);
    if (!l)
        return CUBLAS_STATUS_INVALID_VALUE;
    return get_field(l, find_field(layout_fields, NFIELDS(layout_fields), attr), buf, sizeInBytes, sizeWritten);
}

/* ---- matmul descriptors ---- */

cublasStatus_t cublasLtMatmulDescInit_internal(cublasLtMatmulDesc_t matmulDesc, size_t size,
                                               cublasComputeType_t computeType, cudaDataType_t scaleType) {
    if (!matmulDesc || size < sizeof(desc))
        return CUBLAS_STATUS_INVALID_VALUE;
    desc d;
    memset(&d, 0, sizeof d);
    d.magic = SG_MAGIC_DESC;
    d.compute = computeType;
    d.scale_type = scaleType;
    d.pointer_mode = CUBLASLT_POINTER_MODE_HOST;
    d.transa = d.transb = d.transc = CUBLAS_OP_N;
    d.fill = CUBLAS_FILL_MODE_FULL;
    d.epilogue = CUBLASLT_EPILOGUE_DEFAULT;
    d.bias_type = -1;
    memset(matmulDesc, 0, size);
    memcpy(matmulDesc, &d, sizeof d);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *matmulDesc, cublasComputeType_t computeType,
                                        cudaDataType_t scaleType) {
    if (!matmulDesc)
        return CUBLAS_STATUS_INVALID_VALUE;
    cublasLtMatmulDesc_t d = malloc(sizeof *d);
    if (!d)
        return CUBLAS_STATUS_ALLOC_FAILED;
    cublasLtMatmulDescInit_internal(d, sizeof *d, computeType, scaleType);
    *matmulDesc = d;
    return CUBLAS_STATUS_SUCCESS;
}

static desc *as_desc(cublasLtMatmulDesc_t d) { return d && ((desc *)d)->magic == SG_MAGIC_DESC ? (desc *)d : NULL; }

cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t matmulDesc) {
    if (matmulDesc && !as_desc(matmulDesc))
        return CUBLAS_STATUS_INVALID_VALUE;
    if (matmulDesc)
        ((desc *)matmulDesc)->magic = 0;
    free(matmulDesc);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t matmulDesc, cublasLtMatmulDescAttributes_t attr,
                                              const void *buf, size_t sizeInBytes) {
    desc *d = as_desc(matmulDesc);
    if (!d)
        return CUBLAS_STATUS_INVALID_VALUE;
    return set_field(d, find_field(desc_fields, NFIELDS(desc_fields), attr), buf, sizeInBytes);
}

cublasStatus_t cublasLtMatmulDescGetAttribute(cublasLtMatmulDesc_t matmulDesc, cublasLtMatmulDescAttributes_t attr,
                                              void *buf, size_t sizeInBytes, size_t *sizeWritten) {
    sg_count(SG_Q_LT_DESC_GET_ATTRIBUTE);
    desc *d = as_desc(matmulDesc);
    if (!d)
        return CUBLAS_STATUS_INVALID_VALUE;
    return get_field(d, find_field(desc_fields, NFIELDS(desc_fields), attr), buf, sizeInBytes, sizeWritten);
}

/* ---- preferences ---- */

cublasStatus_t cublasLtMatmulPreferenceInit_internal(cublasLtMatmulPreference_t p, size_t size) {
    if (!p || size < sizeof(pref))
        return CUBLAS_STATUS_INVALID_VALUE;
    pref x;
    memset(&x, 0, sizeof x);
    x.magic = SG_MAGIC_PREF;
    x.search = CUBLASLT_SEARCH_BEST_FIT;
    x.reduction_mask = 0x7;
    x.align[0] = x.align[1] = x.align[2] = x.align[3] = 256;
    x.impl_mask = ~0ull;
    memset(p, 0, size);
    memcpy(p, &x, sizeof x);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p) {
    if (!p)
        return CUBLAS_STATUS_INVALID_VALUE;
    cublasLtMatmulPreference_t x = malloc(sizeof *x);
    if (!x)
        return CUBLAS_STATUS_ALLOC_FAILED;
    cublasLtMatmulPreferenceInit_internal(x, sizeof *x);
    *p = x;
    return CUBLAS_STATUS_SUCCESS;
}

static pref *as_pref(cublasLtMatmulPreference_t p) {
    return p && ((pref *)p)->magic == SG_MAGIC_PREF ? (pref *)p : NULL;
}

cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p) {
    if (p && !as_pref(p))
        return CUBLAS_STATUS_INVALID_VALUE;
    if (p)
        ((pref *)p)->magic = 0;
    free(p);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p,
                                                    cublasLtMatmulPreferenceAttributes_t attr, const void *buf,
                                                    size_t sizeInBytes) {
    pref *x = as_pref(p);
    if (!x)
        return CUBLAS_STATUS_INVALID_VALUE;
    return set_field(x, find_field(pref_fields, NFIELDS(pref_fields), attr), buf, sizeInBytes);
}

cublasStatus_t cublasLtMatmulPreferenceGetAttribute(cublasLtMatmulPreference_t p,
                                                    cublasLtMatmulPreferenceAttributes_t attr, void *buf,
                                                    size_t sizeInBytes, size_t *sizeWritten) {
    pref *x = as_pref(p);
    if (!x)
        return CUBLAS_STATUS_INVALID_VALUE;
    return get_field(x, find_field(pref_fields, NFIELDS(pref_fields), attr), buf, sizeInBytes, sizeWritten);
}

/* ---- matmul ---- */

static int is_fp8(int t) { return t == CUDA_R_8F_E4M3 || t == CUDA_R_8F_E5M2; }

static int is_float_type(int t) { return t == CUDA_R_64F || t == CUDA_R_32F || t == CUDA_R_16F || t == CUDA_R_16BF; }

static int64_t max1(int64_t x) { return x > 1 ? x : 1; }

static cublasStatus_t check_layout(const layout *l) {
    if (l->order != CUBLASLT_ORDER_COL && l->order != CUBLASLT_ORDER_ROW)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    if (l->batch_mode != CUBLASLT_BATCH_MODE_STRIDED || l->plane != 0)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    if (l->batch < 1 || (int64_t)l->rows < 0 || (int64_t)l->cols < 0)
        return CUBLAS_STATUS_INVALID_VALUE;
    int64_t need = l->order == CUBLASLT_ORDER_COL ? max1((int64_t)l->rows) : max1((int64_t)l->cols);
    return l->ld < need ? CUBLAS_STATUS_INVALID_VALUE : CUBLAS_STATUS_SUCCESS;
}

static sg_matrix matrix_of(const layout *l, const void *ptr) {
    sg_matrix m = {(uint64_t)(uintptr_t)ptr, (int)l->type, (int64_t)l->rows, (int64_t)l->cols, l->ld,
                   l->order == CUBLASLT_ORDER_ROW, l->stride, 0};
    return m;
}

/* Builds the GEMM a descriptor and four layouts describe (pointers aside). */
static cublasStatus_t build(cublasLtMatmulDesc_t computeDesc, cublasLtMatrixLayout_t Adesc,
                            cublasLtMatrixLayout_t Bdesc, cublasLtMatrixLayout_t Cdesc, cublasLtMatrixLayout_t Ddesc,
                            sg_gemm *g) {
    const desc *d = as_desc(computeDesc);
    const layout *a = as_layout(Adesc), *b = as_layout(Bdesc), *c = as_layout(Cdesc), *o = as_layout(Ddesc);
    if (!d || !a || !b || !c || !o)
        return CUBLAS_STATUS_INVALID_VALUE;
    if ((unsigned)d->transa > CUBLAS_OP_C || (unsigned)d->transb > CUBLAS_OP_C)
        return CUBLAS_STATUS_INVALID_VALUE;
    if (d->transc != CUBLAS_OP_N)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    cublasStatus_t s;
    if ((s = check_layout(a)) || (s = check_layout(b)) || (s = check_layout(c)) || (s = check_layout(o)))
        return s;
    int ta = d->transa != CUBLAS_OP_N, tb = d->transb != CUBLAS_OP_N;
    int64_t m = (int64_t)o->rows, n = (int64_t)o->cols;
    int64_t k = (int64_t)(ta ? a->rows : a->cols);
    if ((int64_t)(ta ? a->cols : a->rows) != m || (int64_t)(tb ? b->rows : b->cols) != n ||
        (int64_t)(tb ? b->cols : b->rows) != k || c->rows != o->rows || c->cols != o->cols)
        return CUBLAS_STATUS_INVALID_VALUE;
    if (a->batch != o->batch || b->batch != o->batch || c->batch != o->batch)
        return CUBLAS_STATUS_INVALID_VALUE;
    memset(g, 0, sizeof *g);
    g->transa = ta;
    g->transb = tb;
    g->m = m;
    g->n = n;
    g->k = k;
    g->batch = o->batch;
    g->a = matrix_of(a, NULL);
    g->b = matrix_of(b, NULL);
    g->c = matrix_of(c, NULL);
    g->d = matrix_of(o, NULL);
    g->scale_type = d->scale_type;
    if (sg_gemm_configure(g, d->compute, 0, 1) != 0)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    switch (d->epilogue) {
    case CUBLASLT_EPILOGUE_DEFAULT:
    case CUBLASLT_EPILOGUE_BIAS:
        g->activation = SG_EPI_NONE;
        break;
    case CUBLASLT_EPILOGUE_RELU:
    case CUBLASLT_EPILOGUE_RELU_BIAS:
        g->activation = SG_EPI_RELU;
        break;
    case CUBLASLT_EPILOGUE_GELU:
    case CUBLASLT_EPILOGUE_GELU_BIAS:
        g->activation = SG_EPI_GELU;
        break;
    default:
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    int fp8 = is_fp8(g->a.type) || is_fp8(g->b.type);
    if (g->accum == SG_ACC_I32 && d->epilogue != CUBLASLT_EPILOGUE_DEFAULT)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    if ((d->scale_a || d->scale_b || d->scale_c || d->scale_d || d->amax_d) && !fp8)
        return CUBLAS_STATUS_INVALID_VALUE;
    /* Scale modes: one f32 per matrix, or (A and B only, fp8) OUTER_VEC_32F: an f32
     * per row of D for A and per column of D for B. Block scales are not simulated. */
    const int32_t vec = CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F, scalar = CUBLASLT_MATMUL_MATRIX_SCALE_SCALAR_32F;
    if ((d->scale_mode_a != scalar && d->scale_mode_a != vec) || (d->scale_mode_b != scalar && d->scale_mode_b != vec) ||
        d->scale_mode_c != scalar || d->scale_mode_d != scalar || d->aux_scale_mode != scalar || d->d_out_scale ||
        d->d_out_scale_mode != scalar)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    if ((d->scale_mode_a == vec && !d->scale_a) || (d->scale_mode_b == vec && !d->scale_b))
        return CUBLAS_STATUS_INVALID_VALUE;
    g->vec_a = d->scale_mode_a == vec;
    g->vec_b = d->scale_mode_b == vec;
    if (d->epilogue & CUBLASLT_EPILOGUE_BIAS) {
        g->bias_type = d->bias_type != -1 ? d->bias_type : is_fp8(g->d.type) ? g->c.type : g->d.type;
        if (!is_float_type(g->bias_type))
            return CUBLAS_STATUS_NOT_SUPPORTED;
        g->bias = d->bias;
        g->bias_stride = d->bias_stride;
    }
    g->scale_a = d->scale_a;
    g->scale_b = d->scale_b;
    g->scale_c = d->scale_c;
    g->scale_d = d->scale_d;
    g->amax_d = d->amax_d;
    if (d->pointer_mode != CUBLASLT_POINTER_MODE_HOST && d->pointer_mode != CUBLASLT_POINTER_MODE_DEVICE)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    g->scalars_on_device = d->pointer_mode == CUBLASLT_POINTER_MODE_DEVICE;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t lightHandle, cublasLtMatmulDesc_t operationDesc,
                                              cublasLtMatrixLayout_t Adesc, cublasLtMatrixLayout_t Bdesc,
                                              cublasLtMatrixLayout_t Cdesc, cublasLtMatrixLayout_t Ddesc,
                                              cublasLtMatmulPreference_t preference, int requestedAlgoCount,
                                              cublasLtMatmulHeuristicResult_t heuristicResultsArray[],
                                              int *returnAlgoCount) {
    if (!valid_handle(lightHandle))
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!as_pref(preference) || requestedAlgoCount <= 0 || !heuristicResultsArray || !returnAlgoCount)
        return CUBLAS_STATUS_INVALID_VALUE;
    *returnAlgoCount = 0;
    sg_gemm g;
    cublasStatus_t s = build(operationDesc, Adesc, Bdesc, Cdesc, Ddesc, &g);
    if (s != CUBLAS_STATUS_SUCCESS)
        return s;
    cublasLtMatmulHeuristicResult_t r;
    memset(&r, 0, sizeof r);
    r.algo.data[0] = SG_ALGO_MARK;
    r.workspaceSize = 0;
    r.state = CUBLAS_STATUS_SUCCESS;
    r.wavesCount = 1.0f;
    heuristicResultsArray[0] = r;
    *returnAlgoCount = 1;
    return CUBLAS_STATUS_SUCCESS;
}

/* An algo's configuration: data[0] marks the simulator's algos, data[1] holds the
 * split count (0 read as 1), data[2] the reduction scheme. */
static cublasStatus_t algo_config_attr(cublasLtMatmulAlgoConfigAttributes_t attr, int *slot) {
    switch (attr) {
    case CUBLASLT_ALGO_CONFIG_SPLITK_NUM:
        *slot = 1;
        return CUBLAS_STATUS_SUCCESS;
    case CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME:
        *slot = 2;
        return CUBLAS_STATUS_SUCCESS;
    default:
        return CUBLAS_STATUS_INVALID_VALUE;
    }
}

cublasStatus_t cublasLtMatmulAlgoConfigSetAttribute(cublasLtMatmulAlgo_t *algo,
                                                    cublasLtMatmulAlgoConfigAttributes_t attr, const void *buf,
                                                    size_t sizeInBytes) {
    int slot;
    if (!algo || algo->data[0] != SG_ALGO_MARK || !buf || sizeInBytes != sizeof(uint32_t) ||
        algo_config_attr(attr, &slot) != CUBLAS_STATUS_SUCCESS)
        return CUBLAS_STATUS_INVALID_VALUE;
    uint32_t v;
    memcpy(&v, buf, sizeof v);
    if (attr == CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME && (v & ~(uint32_t)CUBLASLT_REDUCTION_SCHEME_MASK))
        return CUBLAS_STATUS_INVALID_VALUE;
    algo->data[slot] = v;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulAlgoConfigGetAttribute(const cublasLtMatmulAlgo_t *algo,
                                                    cublasLtMatmulAlgoConfigAttributes_t attr, void *buf,
                                                    size_t sizeInBytes, size_t *sizeWritten) {
    int slot;
    if (!algo || algo->data[0] != SG_ALGO_MARK || algo_config_attr(attr, &slot) != CUBLAS_STATUS_SUCCESS)
        return CUBLAS_STATUS_INVALID_VALUE;
    if (sizeWritten)
        *sizeWritten = sizeof(uint32_t);
    if (sizeInBytes == 0 && sizeWritten)
        return CUBLAS_STATUS_SUCCESS;
    if (!buf || sizeInBytes != sizeof(uint32_t))
        return CUBLAS_STATUS_INVALID_VALUE;
    uint32_t v = (uint32_t)algo->data[slot];
    if (slot == 1 && v == 0)
        v = 1;
    memcpy(buf, &v, sizeof v);
    return CUBLAS_STATUS_SUCCESS;
}

static int same_layout(const layout *x, const layout *y) {
    return x->type == y->type && x->order == y->order && x->ld == y->ld && x->stride == y->stride;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t lightHandle, cublasLtMatmulDesc_t computeDesc, const void *alpha,
                              const void *A, cublasLtMatrixLayout_t Adesc, const void *B,
                              cublasLtMatrixLayout_t Bdesc, const void *beta, const void *C,
                              cublasLtMatrixLayout_t Cdesc, void *D, cublasLtMatrixLayout_t Ddesc,
                              const cublasLtMatmulAlgo_t *algo, void *workspace, size_t workspaceSizeInBytes,
                              cudaStream_t stream) {
    (void)algo; /* every algorithm computes the same on the simulator */
    (void)workspace;
    (void)workspaceSizeInBytes;
    if (!valid_handle(lightHandle))
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!alpha || !beta)
        return CUBLAS_STATUS_INVALID_VALUE;
    sg_gemm g;
    cublasStatus_t s = build(computeDesc, Adesc, Bdesc, Cdesc, Ddesc, &g);
    if (s != CUBLAS_STATUS_SUCCESS)
        return s;
    if (C == D && !same_layout(as_layout(Cdesc), as_layout(Ddesc)))
        return CUBLAS_STATUS_INVALID_VALUE;
    const desc *d = as_desc(computeDesc);
    if ((d->epilogue & CUBLASLT_EPILOGUE_BIAS) && !d->bias)
        return CUBLAS_STATUS_INVALID_VALUE; /* a bias epilogue needs a bias vector */
    g.a.ptr = (uint64_t)(uintptr_t)A;
    g.b.ptr = (uint64_t)(uintptr_t)B;
    g.c.ptr = (uint64_t)(uintptr_t)C;
    g.d.ptr = (uint64_t)(uintptr_t)D;
    if (g.m == 0 || g.n == 0)
        return CUBLAS_STATUS_SUCCESS;
    if (sg_runtime_ctx(NULL) != CUDA_SUCCESS)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if (g.scalars_on_device) {
        g.alpha_ptr = (uint64_t)(uintptr_t)alpha;
        g.beta_ptr = (uint64_t)(uintptr_t)beta;
    } else {
        g.alpha = sg_read_scalar(alpha, g.scale_type);
        g.beta = sg_read_scalar(beta, g.scale_type);
    }
    return sg_gemm_submit(&g, stream) == CUDA_SUCCESS ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
}

/*
 * Simulated GPU: which GEMM type combinations exist, and what numerics each
 * implies. cuBLAS and cuBLASLt both ask here, so the two libraries accept the
 * same combinations (plus the fp8 and int8-output ones that only cuBLASLt has)
 * and answer CUBLAS_STATUS_NOT_SUPPORTED for the rest, as the real ones do.
 */
#include "cublas_api.h"
#include "simgpu.h"

static int is_fp8(int t) { return t == CUDA_R_8F_E4M3 || t == CUDA_R_8F_E5M2; }

/* Sets g->accum and g->input_round; returns 0 when the combination is
 * supported. math_mode is the cuBLAS handle's cublasMath_t (0 for cuBLASLt). */
SG_EXPORT int sg_gemm_configure(sg_gemm *g, int compute, int math_mode, int lt) {
    int at = g->a.type, bt = g->b.type, ct = g->c.type, dt = g->d.type, st = g->scale_type;
    int mode = math_mode & 0xf;
    int pedantic = compute == CUBLAS_COMPUTE_32F_PEDANTIC || mode == CUBLAS_PEDANTIC_MATH;
    g->input_round = SG_IN_EXACT;
    switch (compute) {
    case CUBLAS_COMPUTE_16F:
    case CUBLAS_COMPUTE_16F_PEDANTIC:
        g->accum = SG_ACC_F16;
        return st == CUDA_R_16F && at == CUDA_R_16F && bt == CUDA_R_16F && ct == CUDA_R_16F && dt == CUDA_R_16F
                   ? 0
                   : -1;
    case CUBLAS_COMPUTE_32F:
    case CUBLAS_COMPUTE_32F_PEDANTIC:
        g->accum = SG_ACC_F32;
        if (st != CUDA_R_32F)
            return -1;
        if (at == CUDA_R_32F && bt == CUDA_R_32F && ct == CUDA_R_32F && dt == CUDA_R_32F) {
            if (!pedantic && mode == CUBLAS_TF32_TENSOR_OP_MATH)
                g->input_round = SG_IN_TF32;
            else if (!pedantic && mode == CUBLAS_TENSOR_OP_MATH)
                g->input_round = SG_IN_F16;
            return 0;
        }
        if (at == CUDA_R_16F && bt == CUDA_R_16F && ct == dt && (ct == CUDA_R_16F || ct == CUDA_R_32F))
            return 0;
        if (at == CUDA_R_16BF && bt == CUDA_R_16BF && ct == dt && (ct == CUDA_R_16BF || ct == CUDA_R_32F))
            return 0;
        if (at == CUDA_R_8I && bt == CUDA_R_8I && ct == CUDA_R_32F && dt == CUDA_R_32F)
            return 0;
        if (lt && is_fp8(at) && is_fp8(bt) && !(at == CUDA_R_8F_E5M2 && bt == CUDA_R_8F_E5M2)) {
            if (ct == CUDA_R_32F)
                return dt == CUDA_R_32F ? 0 : -1;
            if (ct == CUDA_R_16F || ct == CUDA_R_16BF)
                return dt == ct || is_fp8(dt) ? 0 : -1;
        }
        return -1;
    case CUBLAS_COMPUTE_32F_FAST_16F:
    case CUBLAS_COMPUTE_32F_FAST_16BF:
    case CUBLAS_COMPUTE_32F_FAST_TF32:
        g->accum = SG_ACC_F32;
        g->input_round = compute == CUBLAS_COMPUTE_32F_FAST_16F    ? SG_IN_F16
                         : compute == CUBLAS_COMPUTE_32F_FAST_16BF ? SG_IN_BF16
                                                                   : SG_IN_TF32;
        return st == CUDA_R_32F && at == CUDA_R_32F && bt == CUDA_R_32F && ct == CUDA_R_32F && dt == CUDA_R_32F
                   ? 0
                   : -1;
    case CUBLAS_COMPUTE_64F:
    case CUBLAS_COMPUTE_64F_PEDANTIC:
        g->accum = SG_ACC_F64;
        return st == CUDA_R_64F && at == CUDA_R_64F && bt == CUDA_R_64F && ct == CUDA_R_64F && dt == CUDA_R_64F
                   ? 0
                   : -1;
    case CUBLAS_COMPUTE_32I:
    case CUBLAS_COMPUTE_32I_PEDANTIC:
        g->accum = SG_ACC_I32;
        if (at != CUDA_R_8I || bt != CUDA_R_8I)
            return -1;
        if (st == CUDA_R_32I && ct == CUDA_R_32I && dt == CUDA_R_32I)
            return 0;
        return lt && st == CUDA_R_32F && ct == CUDA_R_8I && dt == CUDA_R_8I ? 0 : -1;
    default:
        return -1;
    }
}

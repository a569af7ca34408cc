/*
 * Simulated GPU: the number formats GEMMs read and write. Every value is
 * carried as a double between load and store; rounding to a narrower format is
 * done once, directly from the double, with round-to-nearest-even (which is what
 * the GPU's conversions do), so results are reproducible bit for bit.
 */
#include <math.h>
#include <string.h>

#include "simgpu.h"

#define F16_MAX 65504.0
#define BF16_MAX 3.3895313892515355e38 /* (2 - 2^-7) * 2^127 */
#define TF32_MAX 3.4024e38             /* only its order of magnitude matters */
#define E4M3_MAX 448.0
#define E5M2_MAX 57344.0

SG_EXPORT size_t sg_type_size(int type) {
    switch (type) {
    case CUDA_R_64F:
        return 8;
    case CUDA_R_32F:
    case CUDA_R_32I:
        return 4;
    case CUDA_R_16F:
    case CUDA_R_16BF:
        return 2;
    case CUDA_R_8I:
    case CUDA_R_8F_E4M3:
    case CUDA_R_8F_E5M2:
        return 1;
    default:
        return 0;
    }
}

/* Rounds v to a binary format with mant_bits explicit mantissa bits whose
 * smallest normal exponent is min_exp; beyond max_finite the result is
 * max_finite (saturate) or infinity. */
double sg_round_bits(double v, int mant_bits, int min_exp, double max_finite, int saturate) {
    if (isnan(v) || v == 0)
        return v;
    if (isinf(v))
        return saturate ? copysign(max_finite, v) : v;
    int e;
    frexp(v, &e);
    int lead = e - 1 < min_exp ? min_exp : e - 1;
    double quantum = ldexp(1.0, lead - mant_bits);
    double r = rint(v / quantum) * quantum;
    if (fabs(r) > max_finite)
        return saturate ? copysign(max_finite, v) : copysign(INFINITY, v);
    return r;
}

double sg_round_tf32(double v) { return sg_round_bits((float)v, 10, -126, TF32_MAX, 0); }

SG_EXPORT double sg_round(int type, double v) {
    switch (type) {
    case CUDA_R_64F:
        return v;
    case CUDA_R_32F:
        return (float)v;
    case CUDA_R_16F:
        return sg_round_bits(v, 10, -14, F16_MAX, 0);
    case CUDA_R_16BF:
        return sg_round_bits(v, 7, -126, BF16_MAX, 0);
    case CUDA_R_8F_E4M3:
        return sg_round_bits(v, 3, -6, E4M3_MAX, 1);
    case CUDA_R_8F_E5M2:
        return sg_round_bits(v, 2, -14, E5M2_MAX, 1);
    case CUDA_R_8I:
        if (isnan(v))
            return 0;
        return fmin(127.0, fmax(-128.0, rint(v)));
    case CUDA_R_32I: {
        if (isnan(v) || fabs(v) > 9.2e18)
            return 0;
        /* Two's-complement wrap, as the integer accumulator overflows. */
        return (double)(int32_t)(uint32_t)(uint64_t)(int64_t)rint(v);
    }
    default:
        return v;
    }
}

static double decode_minifloat(unsigned bits, int exp_bits, int mant_bits, int bias, int has_inf) {
    unsigned sign = bits >> (exp_bits + mant_bits) & 1;
    unsigned e = bits >> mant_bits & ((1u << exp_bits) - 1);
    unsigned m = bits & ((1u << mant_bits) - 1);
    double v;
    unsigned emax = (1u << exp_bits) - 1;
    if (e == emax && has_inf)
        v = m ? NAN : INFINITY;
    else if (e == emax && !has_inf && m == (1u << mant_bits) - 1)
        v = NAN; /* e4m3 has no infinity; S.1111.111 is its NaN */
    else if (e == 0)
        v = ldexp((double)m, 1 - bias - mant_bits);
    else
        v = ldexp((double)(m | 1u << mant_bits), (int)e - bias - mant_bits);
    return sign ? -v : v;
}

/* Encodes a value already rounded to the format. */
static unsigned encode_minifloat(double r, int exp_bits, int mant_bits, int bias, int has_inf) {
    unsigned sign = signbit(r) ? 1u << (exp_bits + mant_bits) : 0;
    unsigned emax = (1u << exp_bits) - 1;
    if (isnan(r))
        return sign | emax << mant_bits | (has_inf ? 1u << (mant_bits - 1) : (1u << mant_bits) - 1);
    if (isinf(r))
        return sign | emax << mant_bits;
    double a = fabs(r);
    if (a == 0)
        return sign;
    int e;
    frexp(a, &e);
    int lead = e - 1;
    if (lead < 1 - bias) /* subnormal */
        return sign | (unsigned)ldexp(a, bias - 1 + mant_bits);
    unsigned m = (unsigned)(ldexp(a, mant_bits - lead)) - (1u << mant_bits);
    return sign | (unsigned)(lead + bias) << mant_bits | m;
}

SG_EXPORT double sg_load(const void *base, int type, size_t i) {
    const unsigned char *p = base;
    switch (type) {
    case CUDA_R_64F: {
        double v;
        memcpy(&v, p + 8 * i, 8);
        return v;
    }
    case CUDA_R_32F: {
        float v;
        memcpy(&v, p + 4 * i, 4);
        return v;
    }
    case CUDA_R_32I: {
        int32_t v;
        memcpy(&v, p + 4 * i, 4);
        return v;
    }
    case CUDA_R_16F: {
        uint16_t v;
        memcpy(&v, p + 2 * i, 2);
        return decode_minifloat(v, 5, 10, 15, 1);
    }
    case CUDA_R_16BF: {
        uint16_t v;
        memcpy(&v, p + 2 * i, 2);
        uint32_t w = (uint32_t)v << 16;
        float f;
        memcpy(&f, &w, 4);
        return f;
    }
    case CUDA_R_8I:
        return (int8_t)p[i];
    case CUDA_R_8F_E4M3:
        return decode_minifloat(p[i], 4, 3, 7, 0);
    case CUDA_R_8F_E5M2:
        return decode_minifloat(p[i], 5, 2, 15, 1);
    default:
        return NAN;
    }
}

SG_EXPORT void sg_store(void *base, int type, size_t i, double v) {
    unsigned char *p = base;
    double r = sg_round(type, v);
    switch (type) {
    case CUDA_R_64F:
        memcpy(p + 8 * i, &r, 8);
        break;
    case CUDA_R_32F: {
        float f = (float)r;
        memcpy(p + 4 * i, &f, 4);
        break;
    }
    case CUDA_R_32I: {
        int32_t x = (int32_t)r;
        memcpy(p + 4 * i, &x, 4);
        break;
    }
    case CUDA_R_16F: {
        uint16_t x = (uint16_t)encode_minifloat(r, 5, 10, 15, 1);
        memcpy(p + 2 * i, &x, 2);
        break;
    }
    case CUDA_R_16BF: {
        float f = (float)r;
        uint32_t w;
        memcpy(&w, &f, 4);
        uint16_t x = isnan(r) ? 0x7fc0 : (uint16_t)(w >> 16);
        memcpy(p + 2 * i, &x, 2);
        break;
    }
    case CUDA_R_8I:
        p[i] = (unsigned char)(int8_t)r;
        break;
    case CUDA_R_8F_E4M3:
        p[i] = (unsigned char)encode_minifloat(r, 4, 3, 7, 0);
        break;
    case CUDA_R_8F_E5M2:
        p[i] = (unsigned char)encode_minifloat(r, 5, 2, 15, 1);
        break;
    default:
        break;
    }
}

SG_EXPORT double sg_next_value(int type, double v, double dir) {
    double sign = dir < 0 ? -1.0 : 1.0;
    switch (type) {
    case CUDA_R_64F:
        return nextafter(v, sign * INFINITY);
    case CUDA_R_32F:
        return nextafterf((float)v, (float)(sign * INFINITY));
    case CUDA_R_8I:
    case CUDA_R_32I: {
        double c = sg_round(type, v + sign);
        return c != v ? c : sg_round(type, v - sign);
    }
    default:
        /* A nearby different value: grow the step until rounding moves off v
         * (the quantum differs above and below powers of two); at a saturated
         * end of the range, move the other way. */
        for (int pass = 0; pass < 2; pass++, sign = -sign)
            for (double step = ldexp(1.0, -140); step < 1e30; step *= 2) {
                double c = sg_round(type, v + sign * step);
                if (c != v)
                    return c;
            }
        return v;
    }
}

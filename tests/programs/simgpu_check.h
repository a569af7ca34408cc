/*
 * Helpers shared by the simulated-GPU test programs: PASS/FAIL reporting,
 * encoders for the test data, and the f64 reference GEMM.
 *
 * The encoders are deliberately written apart from the simulator's own
 * (tests/simgpu/src/numeric.c) so that a bug in one is not hidden by the same
 * bug in the other. Test data are multiples of 1/8 in [-1, 1]: exactly
 * representable in every input type (f32, tf32, f16, bf16, fp8 e4m3 and e5m2),
 * so input rounding cannot blur a comparison unless a test wants it to.
 */
#ifndef SIMGPU_CHECK_H
#define SIMGPU_CHECK_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "library_types.h"

static int check_failures, check_cases;

/* Records one case; prints PASS or FAIL with the reason. */
static inline void report(int ok, const char *name, const char *detail) {
    check_cases++;
    if (!ok)
        check_failures++;
    printf("%s %s%s%s\n", ok ? "PASS" : "FAIL", name, detail && *detail ? ": " : "", detail ? detail : "");
    fflush(stdout);
}

/* Ends the program with a summary line and an exit status. */
static inline int finish(const char *program) {
    printf("SUMMARY %s: %d cases, %d failed\n", program, check_cases, check_failures);
    return check_failures ? 1 : 0;
}

/* Reports whether a call returned the expected status. */
#define EXPECT_STATUS(name, call, want)                                              \
    do {                                                                             \
        long got_ = (long)(call);                                                    \
        char why_[160];                                                              \
        snprintf(why_, sizeof why_, "status %ld, want %ld", got_, (long)(want));    \
        report(got_ == (long)(want), name, why_);                                    \
    } while (0)

/* Aborts the program on a setup step that must not fail. */
#define MUST(call)                                                                   \
    do {                                                                             \
        long rc_ = (long)(call);                                                     \
        if (rc_ != 0) {                                                              \
            printf("FAIL setup %s returned %ld (line %d)\n", #call, rc_, __LINE__); \
            printf("SUMMARY setup failed\n");                                        \
            exit(2);                                                                 \
        }                                                                            \
    } while (0)

/* A reproducible test value k/8, k in [-8, 8]. */
static inline double test_value(uint64_t seed, uint64_t i) {
    uint64_t z = seed * 0x9e3779b97f4a7c15ull + i * 0xbf58476d1ce4e5b9ull + 1;
    z ^= z >> 31;
    z *= 0x94d049bb133111ebull;
    z ^= z >> 29;
    return (double)((int)(z % 17) - 8) / 8.0;
}

static inline size_t elem_size(int type) {
    switch (type) {
    case CUDA_R_64F:
        return 8;
    case CUDA_R_32F:
    case CUDA_R_32I:
        return 4;
    case CUDA_R_16F:
    case CUDA_R_16BF:
        return 2;
    default:
        return 1;
    }
}

/* Encodes a finite value that the small float format represents exactly
 * (normal or zero; the test data never need subnormals). */
static inline unsigned encode_exact(double v, int exp_bits, int man_bits, int bias) {
    unsigned sign = v < 0 ? 1u : 0u;
    double a = fabs(v);
    if (a == 0)
        return sign << (exp_bits + man_bits);
    int e = 0;
    while (a >= 2) {
        a /= 2;
        e++;
    }
    while (a < 1) {
        a *= 2;
        e--;
    }
    unsigned man = (unsigned)((a - 1) * (double)(1u << man_bits) + 0.5);
    return sign << (exp_bits + man_bits) | (unsigned)(e + bias) << man_bits | man;
}

static inline double decode_bits(unsigned bits, int exp_bits, int man_bits, int bias) {
    unsigned sign = bits >> (exp_bits + man_bits) & 1;
    int e = (int)(bits >> man_bits & ((1u << exp_bits) - 1));
    unsigned man = bits & ((1u << man_bits) - 1);
    double v;
    if (e == 0)
        v = ldexp(man, 1 - bias - man_bits);
    else if (exp_bits == 4 && e == 15 && man == 7)
        v = NAN;
    else if (exp_bits != 4 && e == (1 << exp_bits) - 1)
        v = man ? NAN : INFINITY;
    else
        v = ldexp(1.0 + man / (double)(1u << man_bits), e - bias);
    return sign ? -v : v;
}

/* Stores an exactly representable value in element i of a typed buffer. */
static inline void put(void *buf, int type, size_t i, double v) {
    unsigned char *p = buf;
    switch (type) {
    case CUDA_R_64F:
        memcpy(p + 8 * i, &v, 8);
        break;
    case CUDA_R_32F: {
        float f = (float)v;
        memcpy(p + 4 * i, &f, 4);
        break;
    }
    case CUDA_R_32I: {
        int32_t x = (int32_t)v;
        memcpy(p + 4 * i, &x, 4);
        break;
    }
    case CUDA_R_16F: {
        uint16_t x = (uint16_t)encode_exact(v, 5, 10, 15);
        memcpy(p + 2 * i, &x, 2);
        break;
    }
    case CUDA_R_16BF: {
        float f = (float)v;
        uint32_t w;
        memcpy(&w, &f, 4);
        uint16_t x = (uint16_t)(w >> 16);
        memcpy(p + 2 * i, &x, 2);
        break;
    }
    case CUDA_R_8I:
        p[i] = (unsigned char)(int8_t)v;
        break;
    case CUDA_R_8F_E4M3:
        p[i] = (unsigned char)encode_exact(v, 4, 3, 7);
        break;
    case CUDA_R_8F_E5M2:
        p[i] = (unsigned char)encode_exact(v, 5, 2, 15);
        break;
    default:
        break;
    }
}

/* Reads element i of a typed buffer. */
static inline double get(const void *buf, int type, size_t i) {
    const unsigned char *p = buf;
    switch (type) {
    case CUDA_R_64F: {
        double v;
        memcpy(&v, p + 8 * i, 8);
        return v;
    }
    case CUDA_R_32F: {
        float f;
        memcpy(&f, p + 4 * i, 4);
        return f;
    }
    case CUDA_R_32I: {
        int32_t x;
        memcpy(&x, p + 4 * i, 4);
        return x;
    }
    case CUDA_R_16F: {
        uint16_t x;
        memcpy(&x, p + 2 * i, 2);
        return decode_bits(x, 5, 10, 15);
    }
    case CUDA_R_16BF: {
        uint16_t x;
        memcpy(&x, p + 2 * i, 2);
        uint32_t w = (uint32_t)x << 16;
        float f;
        memcpy(&f, &w, 4);
        return f;
    }
    case CUDA_R_8I:
        return (int8_t)p[i];
    case CUDA_R_8F_E4M3:
        return decode_bits(p[i], 4, 3, 7);
    case CUDA_R_8F_E5M2:
        return decode_bits(p[i], 5, 2, 15);
    default:
        return NAN;
    }
}

/* Relative precision (half an ulp) of results stored in a type. */
static inline double out_eps(int type) {
    switch (type) {
    case CUDA_R_64F:
        return 0x1p-53;
    case CUDA_R_32F:
        return 0x1p-24;
    case CUDA_R_16F:
        return 0x1p-11;
    case CUDA_R_16BF:
        return 0x1p-8;
    case CUDA_R_8F_E4M3:
        return 0x1p-4;
    case CUDA_R_8F_E5M2:
        return 0x1p-3;
    default:
        return 0;
    }
}

/* Largest finite value of an fp8 output type (results saturate there). */
static inline double out_max(int type) {
    return type == CUDA_R_8F_E4M3 ? 448 : type == CUDA_R_8F_E5M2 ? 57344 : INFINITY;
}

/* A matrix as stored: element (r, c) of a rows x cols matrix. */
typedef struct stored {
    const void *data;
    int type;
    int64_t ld;
    int row_major;
} stored;

static inline double at(const stored *s, int64_t r, int64_t c) {
    return get(s->data, s->type, (size_t)(s->row_major ? r * s->ld + c : r + c * s->ld));
}

/* op(A)(i, l) for a stored A that is transposed when trans != 0. */
static inline double op_at(const stored *s, int trans, int64_t i, int64_t l) {
    return trans ? at(s, l, i) : at(s, i, l);
}

/* Reference dot product of row i of op(A) and column j of op(B), in f64,
 * with the sum of |a||b| for the error bound. */
static inline double ref_dot(const stored *a, int ta, const stored *b, int tb, int64_t i, int64_t j, int64_t k,
                      double *abs_sum) {
    double s = 0, as = 0;
    for (int64_t l = 0; l < k; l++) {
        double x = op_at(a, ta, i, l), y = op_at(b, tb, l, j);
        s += x * y;
        as += fabs(x * y);
    }
    *abs_sum = as;
    return s;
}

#endif /* SIMGPU_CHECK_H */

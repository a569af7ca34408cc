/*
 * Helpers shared by the audit programs (audit_*.c, llama_workload.c): the
 * programs that tests/e2e/interposer.rs runs with and without libmmaudit.so.
 *
 * Each program prints exactly two result lines on stdout,
 *   calls N            the number of GEMM API calls it made (a batched call is one)
 *   output-hash H      FNV-1a 64 over every output byte it copied back from the GPU
 * and, with --trace, one line per GEMM call before them:
 *   call I ENTRY m=M n=N k=K batch=B hash=H
 * (I from 0 in issue order, H the FNV-1a of that call's output as copied back), so
 * that a test can tell which calls a fault changed and compare them with the calls
 * the verifier names. Setup failures print "FAIL setup ..." and exit 2.
 *
 * Test data are random bit patterns of each type (not the multiples of 1/8 of
 * simgpu_check.h): they use the full mantissa, so a GPU that rounds inputs to
 * fp8 (SIMGPU_FAULT=precision:fp8) changes the results.
 */
#ifndef AUDIT_COMMON_H
#define AUDIT_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "library_types.h"

/* Aborts the program on a step that must not fail. */
#define MUST(call)                                                                   \
    do {                                                                             \
        long rc_ = (long)(call);                                                     \
        if (rc_ != 0) {                                                              \
            printf("FAIL setup %s returned %ld (line %d)\n", #call, rc_, __LINE__); \
            fflush(stdout);                                                          \
            exit(2);                                                                 \
        }                                                                            \
    } while (0)

/* ---- hashing ---------------------------------------------------------------- */

#define FNV_OFFSET 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull

static inline uint64_t fnv1a(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= FNV_PRIME;
    }
    return h;
}

/* ---- deterministic random numbers ----------------------------------------- */

static inline uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [-1, 1). */
static inline float rand_unit(uint64_t *state) {
    return (float)((double)(splitmix64(state) >> 11) * 0x1p-52 - 1.0);
}

/* ---- number formats (host side) ------------------------------------------- */

static inline uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* f32 -> bf16, round to nearest even (finite inputs). */
static inline uint16_t f32_to_bf16(float f) {
    uint32_t u = f32_bits(f);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

/* f32 -> f16, round to nearest even; saturates to infinity, flushes below the
 * subnormal range to zero. */
static inline uint16_t f32_to_f16(float f) {
    uint32_t u = f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t abs = u & 0x7fffffffu;
    if (abs >= 0x477ff000u) /* rounds to >= 65520: infinity */
        return sign | 0x7c00u;
    if (abs < 0x33000001u) /* below half the smallest subnormal */
        return sign;
    int e = (int)(abs >> 23) - 127;
    uint32_t man = (abs & 0x7fffffu) | 0x800000u;
    int shift = e >= -14 ? 13 : 13 + (-14 - e); /* subnormals lose more bits */
    uint32_t q = man >> shift, rem = man & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1)))
        q++;
    if (e >= -14)
        return sign | (uint16_t)((((uint32_t)(e + 15) << 10) + (q - 0x400u)));
    return sign | (uint16_t)q;
}

static inline float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    if (e == 0) {
        float v = (float)man * 0x1p-24f;
        return sign ? -v : v;
    }
    if (e == 31)
        return bits_f32(sign | 0x7f800000u | (man << 13));
    return bits_f32(sign | ((e + 112) << 23) | (man << 13));
}

/* e4m3 (OCP FN) -> f32. */
static inline float e4m3_to_f32(uint8_t b) {
    int e = (b >> 3) & 0xf, man = b & 7;
    float v = e == 0 ? (float)man * 0x1p-9f : (1.0f + (float)man / 8.0f) * (float)(1 << e) / 128.0f;
    return (b & 0x80) ? -v : v;
}

static inline size_t type_size(int type) {
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

/* Fills n elements of a typed buffer with random values of magnitude about
 * 2^-4 .. 2 (integers in [-16, 16]); every element uses its type's full
 * precision. */
static inline void fill_random(void *buf, int type, size_t n, uint64_t seed) {
    uint64_t s = seed * 0x2545f4914f6cdd1dull + 17;
    unsigned char *p = buf;
    for (size_t i = 0; i < n; i++) {
        uint64_t r = splitmix64(&s);
        unsigned sign = (unsigned)(r & 1);
        int exp = (int)((r >> 1) % 5) - 4; /* 2^-4 .. 2^0 */
        switch (type) {
        case CUDA_R_32F: {
            float f = bits_f32((uint32_t)(127 + exp) << 23 | ((uint32_t)(r >> 8) & 0x7fffffu) | (uint32_t)sign << 31);
            memcpy(p + 4 * i, &f, 4);
            break;
        }
        case CUDA_R_16F: {
            uint16_t h = (uint16_t)(sign << 15 | (unsigned)(15 + exp) << 10 | ((unsigned)(r >> 8) & 0x3ffu));
            memcpy(p + 2 * i, &h, 2);
            break;
        }
        case CUDA_R_16BF: {
            uint16_t h = (uint16_t)(sign << 15 | (unsigned)(127 + exp) << 7 | ((unsigned)(r >> 8) & 0x7fu));
            memcpy(p + 2 * i, &h, 2);
            break;
        }
        case CUDA_R_8F_E4M3:
            p[i] = (unsigned char)(sign << 7 | (unsigned)(7 + exp) << 3 | ((unsigned)(r >> 8) & 7u));
            break;
        case CUDA_R_8F_E5M2:
            p[i] = (unsigned char)(sign << 7 | (unsigned)(15 + exp) << 2 | ((unsigned)(r >> 8) & 3u));
            break;
        case CUDA_R_8I:
            p[i] = (unsigned char)(int8_t)((int)((r >> 8) % 33) - 16);
            break;
        case CUDA_R_32I: {
            int32_t x = (int32_t)((r >> 8) % 201) - 100;
            memcpy(p + 4 * i, &x, 4);
            break;
        }
        case CUDA_R_64F: {
            double d = (double)rand_unit(&s);
            memcpy(p + 8 * i, &d, 8);
            break;
        }
        default:
            break;
        }
    }
}

/* Writes a small exact scalar (alpha, beta) in a scale type. */
static inline void put_scalar(void *dst, int type, double v) {
    switch (type) {
    case CUDA_R_32F: {
        float f = (float)v;
        memcpy(dst, &f, 4);
        break;
    }
    case CUDA_R_64F:
        memcpy(dst, &v, 8);
        break;
    case CUDA_R_16F: {
        uint16_t h = f32_to_f16((float)v);
        memcpy(dst, &h, 2);
        break;
    }
    case CUDA_R_32I: {
        int32_t x = (int32_t)v;
        memcpy(dst, &x, 4);
        break;
    }
    default:
        break;
    }
}

/* ---- the result lines ------------------------------------------------------ */

/* Prints the two result lines every audit program ends with. */
static inline void print_result(uint64_t calls, uint64_t hash) {
    printf("calls %llu\n", (unsigned long long)calls);
    printf("output-hash %016llx\n", (unsigned long long)hash);
    fflush(stdout);
}

#endif /* AUDIT_COMMON_H */

/*
 * What the programs that launch mmaudit's kernels through the driver API share
 * (tests/programs/simgpu_gather.c, simgpu_commit.c): the PTX module loaded on
 * a stream of the primary context, one mapped pinned arena for jobs and
 * outputs, output guards, reproducible random bytes. Include after
 * simgpu_check.h (MUST, PASS/FAIL); define KERNEL_HOST_ARENA (bytes) before to
 * size the arena.
 */
#ifndef KERNEL_HOST_H
#define KERNEL_HOST_H

#include <cuda.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#ifndef KERNEL_HOST_ARENA
#define KERNEL_HOST_ARENA (1 << 22)
#endif

#define POINTER_ARRAY 1u
#define GUARD 16
#define SENTINEL 0xa5
/* An address no allocation covers: a kernel reading it faults. */
#define UNMAPPED 0x1000ull

static CUstream stream;

/* One mapped pinned arena for jobs, outputs and some index lists. */
static unsigned char *arena;
static CUdeviceptr arena_dev;
static size_t arena_used;

static inline void *pinned(size_t bytes) {
    size_t at = (arena_used + 63) & ~(size_t)63;
    if (at + bytes > (size_t)KERNEL_HOST_ARENA) {
        printf("FAIL setup pinned arena exhausted\nSUMMARY setup failed\n");
        exit(2);
    }
    arena_used = at + bytes;
    return arena + at;
}

/* The device alias of an arena pointer. */
static inline CUdeviceptr dev_of(const void *p) {
    return arena_dev + (CUdeviceptr)((const unsigned char *)p - arena);
}

/* Device memory holding a copy of host bytes. */
static inline CUdeviceptr upload(const void *host, size_t bytes) {
    CUdeviceptr d;
    MUST(cuMemAlloc(&d, bytes));
    MUST(cuMemcpyHtoD(d, host, bytes));
    return d;
}

/* Reproducible random bytes. */
static inline unsigned char *random_bytes(size_t n, uint64_t seed) {
    unsigned char *p = malloc(n);
    uint64_t z = seed * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < n; i++) {
        z ^= z << 13;
        z ^= z >> 7;
        z ^= z << 17;
        p[i] = (unsigned char)(z >> 24);
    }
    return p;
}

/* The GUARD bytes after an output are still the sentinel. */
static inline int guard_intact(const unsigned char *p) {
    for (int k = 0; k < GUARD; k++)
        if (p[k] != SENTINEL)
            return 0;
    return 1;
}

static inline char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        printf("FAIL setup cannot open %s\nSUMMARY setup failed\n", path);
        exit(2);
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)n + 1);
    if (fread(text, 1, (size_t)n, f) != (size_t)n) {
        printf("FAIL setup cannot read %s\nSUMMARY setup failed\n", path);
        exit(2);
    }
    text[n] = 0; /* cuModuleLoadData takes NUL-terminated PTX text */
    fclose(f);
    return text;
}

/* The PTX at `path` loaded on the primary context of device 0, `stream` made and the
 * arena mapped: the module, whose functions the program then looks up. */
static inline CUmodule load_module(const char *path) {
    char *ptx = read_file(path);
    CUcontext ctx;
    CUmodule mod;
    MUST(cuInit(0));
    MUST(cuDevicePrimaryCtxRetain(&ctx, 0));
    MUST(cuCtxSetCurrent(ctx));
    MUST(cuModuleLoadData(&mod, ptx));
    MUST(cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING));
    MUST(cuMemHostAlloc((void **)&arena, KERNEL_HOST_ARENA, CU_MEMHOSTALLOC_DEVICEMAP | CU_MEMHOSTALLOC_PORTABLE));
    MUST(cuMemHostGetDevicePointer(&arena_dev, arena, 0));
    return mod; /* ptx stays: a driver may keep reading the image it was given */
}

#endif

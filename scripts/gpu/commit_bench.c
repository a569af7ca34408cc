/*
 * Hashing throughput of the committed mmaudit_commit_leaves (cuda/gather.ptx)
 * on one large job, timed with CUDA events; the root of its leaf hashes by
 * mmaudit_commit_tree, so that two drivers' runs can be compared bit for bit.
 * Part of the GPU check's `commit` step (scripts/gpu/steps.py), which builds it
 * twice from the same source and headers (tests/simgpu/include): against the
 * simulated GPU's libcuda.so.1 and against the real driver's.
 *
 *   commit_bench PATH/TO/gather.ptx [--mib N] [--check-mib M] [--len L] [--reps R]
 *                [--check-only]
 *
 * N MiB (default 256) of pseudo-random bytes in device memory, read as bf16
 * vectors (element size 2) of L elements (default 4096, 8 KiB) in two layouts
 * over the same bytes:
 *
 *   contiguous  vector v is elements v*L .. v*L+L-1 (columns of a column-major
 *               L x V matrix: vec_stride = 2L, elem_stride = 2)
 *   strided     vector v is row v of a column-major V x L matrix
 *               (vec_stride = 2, elem_stride = 2V)
 *
 * For each layout, one job of V = N MiB / 2L vectors, launched as the launch
 * contract says (grid.x = ceil(V / (256 / G)), block 256, G the lanes per
 * vector); one warm-up launch, then R (default 5) launches, each between two
 * events on the stream. The job table lives in device memory. Then
 * mmaudit_commit_tree over the V leaf hashes (1 block of 256), timed likewise.
 * --check-only launches each kernel once and times nothing (for the simulator,
 * whose CPU twins make the timing meaningless). --check-mib M first does the
 * same, untimed, for the jobs over the first M MiB (M <= N), a size the
 * simulator hashes in about a second: their roots are what the GPU check
 * compares with the simulator's, while the timing uses N MiB (whose root the
 * timed launches must reproduce). Lines:
 *
 *   DEVICE <name>                  DRIVER <cuDriverGetVersion>
 *   ROOT <layout> <bytes> <vectors> <len> <root of the leaf hashes, hex>
 *   TIME <layout> leaves <bytes> <reps> <median ms> <min ms> <max ms> <GB/s at the median>
 *   TIME <layout> tree <leaves> <reps> <median ms> <min ms> <max ms>
 *
 * Exit 0 when every call succeeded, 1 when the timed launches left another
 * root than the first launch ("FAIL <layout>: ..."), 2 on the first call that
 * did not succeed (a "FAIL setup" line names it).
 */
#include <cuda.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commit_job.h" /* tests/programs: the step builds with -I there */

#define MUST(call)                                                                                   \
    do {                                                                                             \
        long rc_ = (long)(call);                                                                     \
        if (rc_ != 0) {                                                                              \
            const char *name_ = "?";                                                                 \
            cuGetErrorName((CUresult)rc_, &name_);                                                   \
            printf("FAIL setup %s returned %ld (%s, line %d)\n", #call, rc_, name_ ? name_ : "?", \
                   __LINE__);                                                                        \
            exit(2);                                                                                 \
        }                                                                                            \
    } while (0)

#define MAX_REPS 50

static CUfunction leaves_fn, tree_fn;
static CUstream stream;

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        printf("FAIL setup cannot open %s\n", path);
        exit(2);
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)n + 1);
    if (!text || fread(text, 1, (size_t)n, f) != (size_t)n) {
        printf("FAIL setup cannot read %s\n", path);
        exit(2);
    }
    text[n] = 0;
    fclose(f);
    return text;
}

static void launch_leaves(CUdeviceptr job, unsigned grid_x) {
    unsigned one = 1;
    void *params[] = {&job, &one};
    MUST(cuLaunchKernel(leaves_fn, grid_x, 1, 1, 256, 1, 1, 0, stream, params, NULL));
}

static void launch_tree(CUdeviceptr leaves, unsigned long long count, CUdeviceptr out) {
    void *params[] = {&leaves, &count, &out};
    MUST(cuLaunchKernel(tree_fn, 1, 1, 1, 256, 1, 1, 0, stream, params, NULL));
}

/* Times `reps` runs of what `run` launches, each between two events; sorts the
 * times (ms) into ms[0 .. reps). */
static void timed(void (*run)(void *), void *arg, int reps, float *ms) {
    CUevent start[MAX_REPS], stop[MAX_REPS];
    for (int r = 0; r < reps; r++) {
        MUST(cuEventCreate(&start[r], 0));
        MUST(cuEventCreate(&stop[r], 0));
    }
    for (int r = 0; r < reps; r++) {
        MUST(cuEventRecord(start[r], stream));
        run(arg);
        MUST(cuEventRecord(stop[r], stream));
    }
    MUST(cuStreamSynchronize(stream));
    for (int r = 0; r < reps; r++) {
        MUST(cuEventElapsedTime(&ms[r], start[r], stop[r]));
        MUST(cuEventDestroy(start[r]));
        MUST(cuEventDestroy(stop[r]));
    }
    qsort(ms, (size_t)reps, sizeof *ms, cmp_float);
}

typedef struct work {
    CUdeviceptr job, leaves, root;
    unsigned grid_x;
    unsigned long long count;
} work;

static void run_leaves(void *arg) {
    const work *w = arg;
    launch_leaves(w->job, w->grid_x);
}

static void run_tree(void *arg) {
    const work *w = arg;
    launch_tree(w->leaves, w->count, w->root);
}

/* Both layouts over the first `bytes` of src: the roots, and the timings unless
 * reps is 0. Returns 1 when the timed launches left another root. */
static int job_of(size_t bytes, size_t len, int reps, CUdeviceptr src, CUdeviceptr leaves, CUdeviceptr root,
                  CUdeviceptr jobs) {
    static const char *layouts[2] = {"contiguous", "strided"};
    size_t vec_bytes = 2 * len;
    unsigned nv = (unsigned)(bytes / vec_bytes);
    /* Lanes per vector: the next power of two >= its chunks, at most 256. */
    size_t chunks = (vec_bytes + 1023) / 1024, g = 1;
    while (g < chunks && g < 256)
        g *= 2;
    unsigned per_block = (unsigned)(256 / g), grid_x = (nv + per_block - 1) / per_block;
    mmaudit_commit_job job[2];
    memset(job, 0, sizeof job);
    for (int k = 0; k < 2; k++) {
        job[k].src = src;
        job[k].out = leaves;
        job[k].nb = 1;
        job[k].nv = nv;
        job[k].len = (unsigned)len;
        job[k].elem_size = 2;
    }
    job[0].vec_stride = (long long)vec_bytes;
    job[0].elem_stride = 2;
    job[1].vec_stride = 2;
    job[1].elem_stride = 2 * (long long)nv;
    MUST(cuMemcpyHtoD(jobs, job, sizeof job));
    int failed = 0;
    for (int k = 0; k < 2; k++) {
        work w = {jobs + (CUdeviceptr)(k * sizeof(mmaudit_commit_job)), leaves, root, grid_x, nv};
        float ms[MAX_REPS], tree_ms[MAX_REPS];
        MUST(cuMemsetD8(leaves, 0xa5, (size_t)nv * 32));
        run_leaves(&w); /* the warm-up, and the leaves the root is taken of */
        run_tree(&w);
        MUST(cuStreamSynchronize(stream));
        unsigned char out[32];
        MUST(cuMemcpyDtoH(out, root, 32));
        printf("ROOT %s %zu %u %zu ", layouts[k], bytes, nv, len);
        for (int i = 0; i < 32; i++)
            printf("%02x", out[i]);
        putchar('\n');
        fflush(stdout);
        if (!reps)
            continue;
        timed(run_leaves, &w, reps, ms);
        timed(run_tree, &w, reps, tree_ms);
        float med = ms[reps / 2];
        printf("TIME %s leaves %zu %d %.4f %.4f %.4f %.1f\n", layouts[k], bytes, reps, med, ms[0], ms[reps - 1],
               med > 0 ? bytes / (med * 1e6) : 0.0);
        printf("TIME %s tree %u %d %.4f %.4f %.4f\n", layouts[k], nv, reps, tree_ms[reps / 2], tree_ms[0],
               tree_ms[reps - 1]);
        /* The timed launches wrote the same leaves again: the same root. */
        unsigned char again[32];
        MUST(cuMemcpyDtoH(again, root, 32));
        if (memcmp(again, out, 32)) {
            printf("FAIL %s: the timed launches gave another root\n", layouts[k]);
            failed = 1;
        }
        fflush(stdout);
    }
    return failed;
}

int main(int argc, char **argv) {
    size_t mib = 256, check_mib = 0, len = 4096;
    int reps = 5, check_only = 0, ok_args = 1;
    const char *ptx_path = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--mib") && i + 1 < argc)
            mib = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--check-mib") && i + 1 < argc)
            check_mib = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--len") && i + 1 < argc)
            len = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--check-only"))
            check_only = 1;
        else if (!ptx_path && argv[i][0] != '-')
            ptx_path = argv[i];
        else
            ok_args = 0;
    }
    size_t vec_bytes = 2 * len, bytes = mib << 20, check_bytes = check_mib << 20;
    if (!ok_args || !ptx_path || mib == 0 || mib > (1u << 20) || len == 0 || len > (1u << 30) ||
        bytes % vec_bytes || check_bytes % vec_bytes || check_mib > mib || reps < 1 || reps > MAX_REPS ||
        bytes / vec_bytes > 0xffffffffu) {
        printf("usage: commit_bench PATH/TO/gather.ptx [--mib N] [--check-mib M] [--len L] [--reps R (1..%d)] "
               "[--check-only]\n(N and M <= N MiB must hold whole numbers of vectors of L bf16 elements)\n",
               MAX_REPS);
        return 2;
    }

    char *ptx = read_file(ptx_path);
    CUcontext ctx;
    CUmodule mod;
    CUdevice dev;
    MUST(cuInit(0));
    MUST(cuDeviceGet(&dev, 0));
    char name[256] = "?";
    int version = 0;
    MUST(cuDeviceGetName(name, sizeof name, dev));
    MUST(cuDriverGetVersion(&version));
    printf("DEVICE %s\nDRIVER %d\n", name, version);
    MUST(cuDevicePrimaryCtxRetain(&ctx, dev));
    MUST(cuCtxSetCurrent(ctx));
    MUST(cuModuleLoadData(&mod, ptx));
    MUST(cuModuleGetFunction(&leaves_fn, mod, "mmaudit_commit_leaves"));
    MUST(cuModuleGetFunction(&tree_fn, mod, "mmaudit_commit_tree"));
    MUST(cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING));

    /* Pseudo-random data (never zeros), made on the host in 8-byte words. */
    uint64_t *host = malloc(bytes);
    if (!host) {
        printf("FAIL setup cannot allocate %zu bytes on the host\n", bytes);
        return 2;
    }
    uint64_t z = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < bytes / 8; i++) {
        z ^= z << 13;
        z ^= z >> 7;
        z ^= z << 17;
        host[i] = z;
    }
    CUdeviceptr src, leaves, root, jobs;
    MUST(cuMemAlloc(&src, bytes));
    MUST(cuMemAlloc(&leaves, bytes / vec_bytes * 32));
    MUST(cuMemAlloc(&root, 32));
    MUST(cuMemAlloc(&jobs, 2 * sizeof(mmaudit_commit_job)));
    MUST(cuMemcpyHtoD(src, host, bytes));
    free(host);

    int failed = 0;
    if (check_bytes)
        failed |= job_of(check_bytes, len, 0, src, leaves, root, jobs);
    failed |= job_of(bytes, len, check_only ? 0 : reps, src, leaves, root, jobs);
    return failed;
}

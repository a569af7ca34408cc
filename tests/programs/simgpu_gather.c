/*
 * The committed gather kernel (cuda/gather.ptx, path in argv[1]) run on the
 * simulated GPU the way the interposer runs it: the PTX text loaded with
 * cuModuleLoadData, `mmaudit_gather` launched with cuLaunchKernel on a
 * non-blocking stream, jobs and outputs in mapped pinned memory (the device
 * aliases from cuMemHostGetDevicePointer), operands in device memory. On the
 * simulator the kernel runs through its CPU twin (tests/simgpu/src/kernels.c).
 *
 * Each case states what it gathers in matrix terms (rows of a column-major
 * matrix, columns, entries, batch members, ...) and computes the expected bytes
 * from host copies of the operands by that description, not by the kernel's
 * formula, so a misreading of the job ABI on either side shows. Outputs carry a
 * guard after their end and must leave it untouched. Malformed jobs point at
 * unmapped addresses to show that nothing is read through them. The last case
 * reads outside an allocation and must end with CUDA_ERROR_ILLEGAL_ADDRESS.
 *
 * Prints PASS/FAIL per case and a SUMMARY line; exits 1 if any case failed,
 * 2 if setup failed (e.g. the PTX cannot be read or lacks the entry).
 */
#include <cuda.h>
#include <stddef.h>

#include "simgpu_check.h"
#define KERNEL_HOST_ARENA (1 << 22)
#include "kernel_host.h"

/* The job ABI (cuda/gather.cu, cuda/README.md). */
typedef struct mmaudit_gather_job {
    unsigned long long src;
    unsigned long long out;
    unsigned long long batch_idx;
    unsigned long long idx_i;
    unsigned long long idx_j;
    long long batch_stride;
    long long stride_i;
    long long stride_j;
    unsigned int nb, ni, nj;
    unsigned int elem_size;
    unsigned int flags;
    unsigned int reserved;
} mmaudit_gather_job;

_Static_assert(sizeof(mmaudit_gather_job) == 88, "job size");
_Static_assert(offsetof(mmaudit_gather_job, out) == 8, "out");
_Static_assert(offsetof(mmaudit_gather_job, batch_idx) == 16, "batch_idx");
_Static_assert(offsetof(mmaudit_gather_job, idx_i) == 24, "idx_i");
_Static_assert(offsetof(mmaudit_gather_job, idx_j) == 32, "idx_j");
_Static_assert(offsetof(mmaudit_gather_job, batch_stride) == 40, "batch_stride");
_Static_assert(offsetof(mmaudit_gather_job, stride_i) == 48, "stride_i");
_Static_assert(offsetof(mmaudit_gather_job, stride_j) == 56, "stride_j");
_Static_assert(offsetof(mmaudit_gather_job, nb) == 64, "nb");
_Static_assert(offsetof(mmaudit_gather_job, ni) == 68, "ni");
_Static_assert(offsetof(mmaudit_gather_job, nj) == 72, "nj");
_Static_assert(offsetof(mmaudit_gather_job, elem_size) == 76, "elem_size");
_Static_assert(offsetof(mmaudit_gather_job, flags) == 80, "flags");
_Static_assert(offsetof(mmaudit_gather_job, reserved) == 84, "reserved");

static CUfunction gather;

/* ---- memory ---- */

static CUdeviceptr upload_u64(const uint64_t *list, size_t n) {
    return upload(list, n * 8);
}

/* The same list in mapped pinned memory (the interposer may keep lists there). */
static CUdeviceptr pinned_u64(const uint64_t *list, size_t n) {
    uint64_t *p = pinned(n * 8);
    memcpy(p, list, n * 8);
    return dev_of(p);
}

/* ---- cases ---- */

typedef struct gcase {
    char name[96];
    mmaudit_gather_job job;
    unsigned char *out;    /* pinned, bytes + GUARD */
    unsigned char *expect; /* bytes */
    size_t bytes;
} gcase;

static gcase cases[64];
static int ncases;

/* Starts a case whose output is nb*ni*nj elements of `size` bytes. */
static gcase *add_case(const char *name, unsigned nb, unsigned ni, unsigned nj, unsigned size) {
    gcase *c = &cases[ncases++];
    memset(c, 0, sizeof *c);
    snprintf(c->name, sizeof c->name, "%s", name);
    c->bytes = (size_t)nb * ni * nj * size;
    c->out = pinned(c->bytes + GUARD);
    c->expect = calloc(1, c->bytes);
    c->job.out = dev_of(c->out);
    c->job.nb = nb;
    c->job.ni = ni;
    c->job.nj = nj;
    c->job.elem_size = size;
    return c;
}

/* Element `e` of the expected output is `size` bytes at host address p. */
static void expect_at(gcase *c, size_t e, const void *p) {
    memcpy(c->expect + e * c->job.elem_size, p, c->job.elem_size);
}

static void clear_outputs(void) {
    for (int i = 0; i < ncases; i++)
        memset(cases[i].out, SENTINEL, cases[i].bytes + GUARD);
}

static void check_case(const gcase *c, const char *how) {
    char name[160], detail[160] = "";
    snprintf(name, sizeof name, "%s (%s)", c->name, how);
    size_t bad = c->bytes;
    for (size_t k = 0; k < c->bytes; k++)
        if (c->out[k] != c->expect[k]) {
            bad = k;
            break;
        }
    int guard = guard_intact(c->out + c->bytes);
    if (bad < c->bytes)
        snprintf(detail, sizeof detail, "byte %zu of %zu is %02x, want %02x", bad, c->bytes, c->out[bad],
                 c->expect[bad]);
    else if (!guard)
        snprintf(detail, sizeof detail, "wrote past the end of its output");
    report(bad == c->bytes && guard, name, detail);
}

static CUresult launch(const mmaudit_gather_job *jobs_pinned, unsigned njobs, unsigned grid_x, unsigned grid_y) {
    CUdeviceptr jobs = dev_of(jobs_pinned);
    void *params[] = {&jobs, &njobs};
    return cuLaunchKernel(gather, grid_x, grid_y, 1, 256, 1, 1, 0, stream, params, NULL);
}

/* ---- the operands ---- */

enum { M = 37, K = 29, N = 23, LDA = 40, LDB = 31, LDC = 41, BATCH = 5 };

static const uint64_t rows_r[] = {3, 0, 36, 7};
static const uint64_t cols_s[] = {22, 5, 9};

static void build_cases(void) {
    /* A: M x K column-major f32, leading dimension LDA. */
    size_t a_bytes = (size_t)LDA * K * 4;
    unsigned char *a = random_bytes(a_bytes, 1);
    CUdeviceptr a_dev = upload(a, a_bytes);
    CUdeviceptr r_dev = upload_u64(rows_r, 4);
    CUdeviceptr s_pinned = pinned_u64(cols_s, 3);

    gcase *c = add_case("rows R of a column-major f32 matrix", 1, 4, K, 4);
    c->job.src = a_dev;
    c->job.idx_i = r_dev;
    c->job.stride_i = 4;
    c->job.stride_j = LDA * 4;
    for (int r = 0; r < 4; r++)
        for (int l = 0; l < K; l++)
            expect_at(c, (size_t)r * K + l, a + (rows_r[r] + (size_t)l * LDA) * 4);

    c = add_case("rows R read backwards through a negative column stride", 1, 4, K, 4);
    c->job.src = a_dev + (CUdeviceptr)(K - 1) * LDA * 4;
    c->job.idx_i = r_dev;
    c->job.stride_i = 4;
    c->job.stride_j = -(long long)LDA * 4;
    for (int r = 0; r < 4; r++)
        for (int l = 0; l < K; l++)
            expect_at(c, (size_t)r * K + l, a + (rows_r[r] + (size_t)(K - 1 - l) * LDA) * 4);

    c = add_case("rows R at misaligned element addresses (copied bytewise)", 1, 4, 5, 4);
    c->job.src = a_dev + 1;
    c->job.idx_i = r_dev;
    c->job.stride_i = 4;
    c->job.stride_j = LDA * 4;
    for (int r = 0; r < 4; r++)
        for (int l = 0; l < 5; l++)
            expect_at(c, (size_t)r * 5 + l, a + 1 + (rows_r[r] + (size_t)l * LDA) * 4);

    /* B: K x N column-major f32, leading dimension LDB. */
    size_t b_bytes = (size_t)LDB * N * 4;
    unsigned char *b = random_bytes(b_bytes, 2);
    CUdeviceptr b_dev = upload(b, b_bytes);

    c = add_case("columns S of a column-major f32 matrix (index list in pinned memory)", 1, 3, K, 4);
    c->job.src = b_dev;
    c->job.idx_i = s_pinned;
    c->job.stride_i = LDB * 4;
    c->job.stride_j = 4;
    for (int s = 0; s < 3; s++)
        for (int l = 0; l < K; l++)
            expect_at(c, (size_t)s * K + l, b + (l + cols_s[s] * LDB) * 4);

    c = add_case("columns S laid out transposed (k-major, S fastest)", 1, K, 3, 4);
    c->job.src = b_dev;
    c->job.idx_j = s_pinned;
    c->job.stride_i = 4;
    c->job.stride_j = LDB * 4;
    for (int l = 0; l < K; l++)
        for (int s = 0; s < 3; s++)
            expect_at(c, (size_t)l * 3 + s, b + (l + cols_s[s] * LDB) * 4);

    /* At: A stored transposed (K x M column-major f16, leading dimension LDB),
     * so op(A)(r, l) = At[l + r * LDB]. */
    size_t at_bytes = (size_t)LDB * M * 2;
    unsigned char *at = random_bytes(at_bytes, 3);
    CUdeviceptr at_dev = upload(at, at_bytes);
    c = add_case("rows R of op(A) = A^T stored transposed (f16)", 1, 4, K, 2);
    c->job.src = at_dev;
    c->job.idx_i = r_dev;
    c->job.stride_i = LDB * 2;
    c->job.stride_j = 2;
    for (int r = 0; r < 4; r++)
        for (int l = 0; l < K; l++)
            expect_at(c, (size_t)r * K + l, at + (l + rows_r[r] * LDB) * 2);

    /* C: M x N column-major f64, leading dimension LDC. */
    size_t c_bytes = (size_t)LDC * N * 8;
    unsigned char *cm = random_bytes(c_bytes, 4);
    CUdeviceptr c_dev = upload(cm, c_bytes);
    c = add_case("entries C[R, S] of a column-major f64 matrix", 1, 4, 3, 8);
    c->job.src = c_dev;
    c->job.idx_i = r_dev;
    c->job.idx_j = s_pinned;
    c->job.stride_i = 8;
    c->job.stride_j = LDC * 8;
    for (int r = 0; r < 4; r++)
        for (int s = 0; s < 3; s++)
            expect_at(c, (size_t)r * 3 + s, cm + (rows_r[r] + cols_s[s] * LDC) * 8);

    /* A strided batch of BATCH M x K bf16 matrices, members 64 bytes apart
     * beyond their size. */
    size_t member = (size_t)LDA * K * 2 + 64;
    unsigned char *sb = random_bytes(member * BATCH, 5);
    CUdeviceptr sb_dev = upload(sb, member * BATCH);
    static const uint64_t batch_list[] = {4, 1, 4};
    c = add_case("rows R of members {4, 1, 4} of a strided bf16 batch", 3, 2, K, 2);
    c->job.src = sb_dev;
    c->job.batch_idx = upload_u64(batch_list, 3);
    c->job.batch_stride = (long long)member;
    c->job.idx_i = r_dev; /* the first two rows of R */
    c->job.stride_i = 2;
    c->job.stride_j = LDA * 2;
    for (int bb = 0; bb < 3; bb++)
        for (int r = 0; r < 2; r++)
            for (int l = 0; l < K; l++)
                expect_at(c, ((size_t)bb * 2 + r) * K + l,
                          sb + batch_list[bb] * member + (rows_r[r] + (size_t)l * LDA) * 2);

    c = add_case("every member of a strided batch, identity indices", BATCH, 2, 3, 2);
    c->job.src = sb_dev;
    c->job.batch_stride = (long long)member;
    c->job.stride_i = 2;
    c->job.stride_j = LDA * 2;
    for (int bb = 0; bb < BATCH; bb++)
        for (int r = 0; r < 2; r++)
            for (int l = 0; l < 3; l++)
                expect_at(c, ((size_t)bb * 2 + r) * 3 + l, sb + bb * member + ((size_t)r + (size_t)l * LDA) * 2);

    /* A pointer-array batch: three separately allocated M x N int8 matrices
     * (leading dimension LDC), their addresses in a device array. */
    unsigned char *pm[3];
    uint64_t ptrs[3];
    for (int m = 0; m < 3; m++) {
        pm[m] = random_bytes((size_t)LDC * N, 10 + m);
        ptrs[m] = upload(pm[m], (size_t)LDC * N);
    }
    CUdeviceptr ptrs_dev = upload_u64(ptrs, 3);
    c = add_case("entries C[R, S] of each member of a pointer-array int8 batch", 3, 4, 3, 1);
    c->job.src = ptrs_dev;
    c->job.flags = POINTER_ARRAY;
    c->job.idx_i = r_dev;
    c->job.idx_j = s_pinned;
    c->job.stride_i = 1;
    c->job.stride_j = LDC;
    c->job.batch_stride = 12345; /* ignored for a pointer array */
    for (int bb = 0; bb < 3; bb++)
        for (int r = 0; r < 4; r++)
            for (int s = 0; s < 3; s++)
                expect_at(c, ((size_t)bb * 4 + r) * 3 + s, pm[bb] + rows_r[r] + cols_s[s] * LDC);

    static const uint64_t ptr_list[] = {2, 0};
    c = add_case("rows R of members {2, 0} of a pointer-array int8 batch", 2, 4, N, 1);
    c->job.src = ptrs_dev;
    c->job.flags = POINTER_ARRAY;
    c->job.batch_idx = pinned_u64(ptr_list, 2);
    c->job.idx_i = r_dev;
    c->job.stride_i = 1;
    c->job.stride_j = LDC;
    for (int bb = 0; bb < 2; bb++)
        for (int r = 0; r < 4; r++)
            for (int l = 0; l < N; l++)
                expect_at(c, ((size_t)bb * 4 + r) * N + l, pm[ptr_list[bb]] + rows_r[r] + (size_t)l * LDC);

    /* Every element size over the same bytes: rows R of a column-major matrix
     * of 9 columns of `size`-byte elements, leading dimension LDA (inside A's
     * bytes for every size). */
    for (unsigned size = 1; size <= 8; size *= 2) {
        char name[96];
        snprintf(name, sizeof name, "rows R with elem_size %u", size);
        c = add_case(name, 1, 4, 9, size);
        c->job.src = a_dev;
        c->job.idx_i = r_dev;
        c->job.stride_i = size;
        c->job.stride_j = (long long)LDA * size;
        for (int r = 0; r < 4; r++)
            for (int l = 0; l < 9; l++)
                expect_at(c, (size_t)r * 9 + l, a + (rows_r[r] + (size_t)l * LDA) * size);
    }

    /* A device-side scalar (alpha). */
    float alpha = -1.5f;
    CUdeviceptr alpha_dev = upload(&alpha, 4);
    c = add_case("a device scalar (all counts 1, identity indices)", 1, 1, 1, 4);
    c->job.src = alpha_dev;
    expect_at(c, 0, &alpha);

    /* More elements than a launch has threads (the blocks grid-stride). */
    c = add_case("a contiguous 2 x 3 x 700 block of A (more elements than threads)", 2, 3, 700, 1);
    c->job.src = a_dev;
    c->job.batch_stride = 3 * 700 + 11;
    c->job.stride_i = 700;
    c->job.stride_j = 1;
    for (int bb = 0; bb < 2; bb++)
        for (size_t e = 0; e < 3 * 700; e++)
            expect_at(c, bb * 3 * 700 + e, a + bb * (3 * 700 + 11) + e);
}

/* Jobs that break a rule of the ABI: skipped without touching any of their
 * addresses (all point at unmapped memory) and without writing the output. */
static void malformed_jobs(void) {
    enum { NBAD = 10 };
    mmaudit_gather_job *jobs = pinned(NBAD * sizeof *jobs);
    unsigned char *outs = pinned(NBAD * 64);
    static const char *what[NBAD] = {
        "nb = 0", "ni = 0", "nj = 0", "elem_size 3", "elem_size 16", "reserved != 0", "unknown flag bit",
        "misaligned index list", "misaligned pointer array", "element count overflowing 64 bits",
    };
    for (int k = 0; k < NBAD; k++) {
        mmaudit_gather_job *j = &jobs[k];
        memset(j, 0, sizeof *j);
        j->src = UNMAPPED;
        j->out = dev_of(outs + 64 * k);
        j->idx_i = UNMAPPED;
        j->nb = j->ni = j->nj = 2;
        j->elem_size = 4;
        j->stride_i = 4;
    }
    jobs[0].nb = 0;
    jobs[1].ni = 0;
    jobs[2].nj = 0;
    jobs[3].elem_size = 3;
    jobs[4].elem_size = 16;
    jobs[5].reserved = 1;
    jobs[6].flags = 2;
    jobs[7].idx_i = UNMAPPED + 4;
    jobs[8].flags = POINTER_ARRAY;
    jobs[8].src = UNMAPPED + 4;
    jobs[9].nb = jobs[9].ni = jobs[9].nj = 0xffffffffu;
    jobs[9].elem_size = 8;
    memset(outs, SENTINEL, NBAD * 64);
    EXPECT_STATUS("a launch of malformed jobs", launch(jobs, NBAD, 2, NBAD), CUDA_SUCCESS);
    EXPECT_STATUS("malformed jobs are skipped without a fault", cuStreamSynchronize(stream), CUDA_SUCCESS);
    for (int k = 0; k < NBAD; k++) {
        char name[96];
        snprintf(name, sizeof name, "malformed job skipped, output untouched: %s", what[k]);
        int intact = 1;
        for (int b = 0; b < 64; b++)
            intact &= outs[64 * k + b] == SENTINEL;
        report(intact, name, "");
    }
}

int main(int argc, char **argv) {
    if (argc != 2) {
        printf("usage: simgpu_gather PATH/TO/gather.ptx\n");
        return 2;
    }
    CUmodule mod = load_module(argv[1]);
    MUST(cuModuleGetFunction(&gather, mod, "mmaudit_gather"));

    build_cases();
    mmaudit_gather_job *jobs = pinned((size_t)ncases * sizeof *jobs);
    for (int i = 0; i < ncases; i++)
        jobs[i] = cases[i].job;

    /* One launch per job, as the interposer does for a single operand. */
    clear_outputs();
    for (int i = 0; i < ncases; i++)
        MUST(launch(&jobs[i], 1, 3, 1));
    MUST(cuStreamSynchronize(stream));
    for (int i = 0; i < ncases; i++)
        check_case(&cases[i], "one job per launch");

    /* All jobs in one launch, completion observed through an event. */
    clear_outputs();
    CUevent done;
    MUST(cuEventCreate(&done, CU_EVENT_DISABLE_TIMING));
    MUST(launch(jobs, (unsigned)ncases, 2, (unsigned)ncases));
    MUST(cuEventRecord(done, stream));
    while (cuEventQuery(done) == CUDA_ERROR_NOT_READY)
        ;
    for (int i = 0; i < ncases; i++)
        check_case(&cases[i], "all jobs in one launch");

    /* A grid with fewer y-blocks than jobs leaves the later jobs undone. */
    clear_outputs();
    MUST(launch(jobs, 2, 1, 1));
    MUST(cuStreamSynchronize(stream));
    check_case(&cases[0], "grid.y = 1 of 2 jobs");
    report(cases[1].out[0] == SENTINEL && guard_intact(cases[1].out), "grid.y = 1 of 2 jobs: job 1 not run", "");

    /* njobs smaller than grid.y: the extra blocks do nothing. */
    clear_outputs();
    MUST(launch(jobs, 1, 1, 4));
    MUST(cuStreamSynchronize(stream));
    check_case(&cases[0], "njobs = 1 with grid.y = 4");
    report(cases[1].out[0] == SENTINEL, "njobs = 1 with grid.y = 4: job 1 not run", "");

    malformed_jobs();

    /* Last: a source outside every allocation faults, and the fault is sticky. */
    mmaudit_gather_job *bad = pinned(sizeof *bad);
    *bad = cases[0].job;
    bad->src = cases[0].job.src + (CUdeviceptr)LDA * K * 4; /* one past the end of A */
    bad->idx_i = 0;
    bad->ni = bad->nj = 1;
    EXPECT_STATUS("a job reading past its operand launches", launch(bad, 1, 1, 1), CUDA_SUCCESS);
    EXPECT_STATUS("synchronising reports the illegal address", cuStreamSynchronize(stream), CUDA_ERROR_ILLEGAL_ADDRESS);
    EXPECT_STATUS("the illegal address is sticky", cuCtxSynchronize(), CUDA_ERROR_ILLEGAL_ADDRESS);
    return finish("simgpu_gather");
}

/*
 * The committed commitment kernels (cuda/gather.ptx, path in argv[1]) run on
 * the simulated GPU the way the interposer runs the gather kernel: the PTX text
 * loaded with cuModuleLoadData, `mmaudit_commit_leaves` and
 * `mmaudit_commit_tree` launched with cuLaunchKernel on a non-blocking stream,
 * jobs and outputs in mapped pinned memory, operands in device memory. On the
 * simulator the kernels run through their CPU twins
 * (tests/simgpu/src/kernels.c).
 *
 * This program does not know the hashes. It prints, for each vector a job
 * hashes, the vector's bytes as it understands them from host copies of the
 * operands (rows and columns in matrix terms, not by the job's formula) and the
 * hash the kernel wrote; tests/e2e/simgpu.rs recomputes every hash with the
 * Rust reference (mmaudit_protocol::commit). Lines:
 *
 *   LEAF <case> <b> <v> <vector bytes, hex, or -> <leaf hash, hex>
 *   TREELEAF <i> <hash>     leaf i of the tree input: vector i is i+1 bytes, each (u8)i
 *   ROOT <count> <root>     mmaudit_commit_tree over the first count of those leaves
 *
 * What it checks itself (PASS/FAIL): outputs carry a guard after their end
 * that must stay untouched; every launch geometry gives the same hashes;
 * malformed jobs and calls point at unmapped addresses and must leave their
 * outputs untouched without a fault; the last case reads outside an
 * allocation and must end with CUDA_ERROR_ILLEGAL_ADDRESS, unless the second
 * argument is --no-fault (for a driver where a stray read need not fault: the
 * kernels' source run on the CPU by tests/programs/host_cuda.cpp, or a real
 * GPU, whose allocations are rounded up to pages). Exits 1 if any case
 * failed, 2 if setup failed.
 */
#include <cuda.h>
#include <stddef.h>

#include "commit_job.h"
#include "simgpu_check.h"
#define KERNEL_HOST_ARENA (1 << 24)
#include "kernel_host.h"

/* The tree's input: this many leaves. */
#define TREE_LEAVES 4097

static CUfunction leaves_fn, replay_fn, tree_fn;

static void print_hex(const unsigned char *p, size_t n) {
    if (n == 0)
        putchar('-');
    for (size_t i = 0; i < n; i++)
        printf("%02x", p[i]);
}

/* ---- operands: column-major matrices, on the host and on the device ---- */

typedef struct matrix {
    unsigned char *host;
    CUdeviceptr dev;
    size_t rows, cols, ld, elem; /* ld in elements */
} matrix;

static matrix new_matrix(size_t rows, size_t cols, size_t ld, size_t elem, uint64_t seed) {
    matrix m = {random_bytes(ld * cols * elem, seed), 0, rows, cols, ld, elem};
    m.dev = upload(m.host, ld * cols * elem);
    return m;
}

/* Element (r, c) on the host, and its device address. */
static const unsigned char *host_at(const matrix *m, size_t r, size_t c) {
    return m->host + (r + c * m->ld) * m->elem;
}

static CUdeviceptr dev_at(const matrix *m, size_t r, size_t c) {
    return m->dev + (CUdeviceptr)((r + c * m->ld) * m->elem);
}

/* ---- cases ---- */

/* How a case's vector (b, v) reads in matrix terms: element l of the vector
 * is element (row, col) of matrix mats[b]. */
typedef enum { ROWS, COLUMNS, ROWS_BACKWARDS, COLUMNS_LEFTWARDS } shape;

typedef struct ccase {
    char name[64];
    mmaudit_commit_job job;
    const matrix *mats[4]; /* per batch member */
    shape how;
    size_t first;  /* first row (ROWS*) or column (COLUMNS*) */
    size_t offset; /* byte offset added to every element (misaligned cases) */
    unsigned char *out;
    unsigned char *hashes; /* the first run's */
    size_t bytes;
} ccase;

static ccase cases[128];
static int ncases;

/* The host's idea of element l of vector (b, v). */
static const unsigned char *expected_elem(const ccase *c, size_t b, size_t v, size_t l) {
    const matrix *m = c->mats[b];
    size_t k = c->job.len;
    switch (c->how) {
    case ROWS:
        return host_at(m, c->first + v, l) + c->offset;
    case COLUMNS:
        return host_at(m, l, c->first + v) + c->offset;
    case ROWS_BACKWARDS: /* row first + v, last column first */
        return host_at(m, c->first + v, k - 1 - l) + c->offset;
    default: /* COLUMNS_LEFTWARDS: column first - v, top to bottom */
        return host_at(m, l, c->first - v) + c->offset;
    }
}

/* A case of nb members (mats) with nv vectors of len elements each, laid out
 * `how`; the job is filled in for the layouts of mmaudit_commit_job. */
static ccase *add_case(const char *name, const matrix *const *mats, unsigned nb, shape how, size_t first, unsigned nv,
                       unsigned len) {
    ccase *c = &cases[ncases++];
    memset(c, 0, sizeof *c);
    snprintf(c->name, sizeof c->name, "%s", name);
    for (unsigned b = 0; b < nb; b++)
        c->mats[b] = mats[b];
    c->how = how;
    c->first = first;
    const matrix *m = mats[0];
    long long e = (long long)m->elem, ld = (long long)(m->ld * m->elem);
    mmaudit_commit_job *j = &c->job;
    j->nb = nb;
    j->nv = nv;
    j->len = len;
    j->elem_size = (unsigned)m->elem;
    switch (how) {
    case ROWS:
        j->src = dev_at(m, first, 0);
        j->vec_stride = e;
        j->elem_stride = ld;
        break;
    case COLUMNS:
        j->src = dev_at(m, 0, first);
        j->vec_stride = ld;
        j->elem_stride = e;
        break;
    case ROWS_BACKWARDS:
        j->src = len ? dev_at(m, first, len - 1) : m->dev;
        j->vec_stride = e;
        j->elem_stride = -ld;
        break;
    case COLUMNS_LEFTWARDS:
        j->src = dev_at(m, 0, first);
        j->vec_stride = -ld;
        j->elem_stride = e;
        break;
    }
    if (nb > 1) /* a strided batch: members at equal distances (the caller checks) */
        j->batch_stride = (long long)(mats[1]->dev - mats[0]->dev);
    c->bytes = (size_t)nb * nv * 32;
    c->out = pinned(c->bytes + GUARD);
    c->hashes = malloc(c->bytes);
    j->out = dev_of(c->out);
    return c;
}

static void clear_outputs(void) {
    for (int i = 0; i < ncases; i++)
        memset(cases[i].out, SENTINEL, cases[i].bytes + GUARD);
}

static CUresult launch_leaves(const mmaudit_commit_job *jobs_pinned, unsigned njobs, unsigned grid_x, unsigned grid_y,
                              unsigned block_x, unsigned block_y) {
    CUdeviceptr jobs = dev_of(jobs_pinned);
    void *params[] = {&jobs, &njobs};
    return cuLaunchKernel(leaves_fn, grid_x, grid_y, 1, block_x, block_y, 1, 0, stream, params, NULL);
}

static CUresult launch_tree(CUdeviceptr leaves, unsigned long long count, CUdeviceptr out, unsigned grid_x,
                            unsigned block_x) {
    void *params[] = {&leaves, &count, &out};
    return cuLaunchKernel(tree_fn, grid_x, 1, 1, block_x, 1, 1, 0, stream, params, NULL);
}

/* The whole vector (b, v) as the host sees it. */
static unsigned char *expected_vector(const ccase *c, size_t b, size_t v, size_t *n) {
    size_t e = c->job.elem_size;
    *n = (size_t)c->job.len * e;
    unsigned char *p = malloc(*n + 1);
    for (size_t l = 0; l < c->job.len; l++)
        memcpy(p + l * e, expected_elem(c, b, v, l), e);
    return p;
}

/* First run: prints every vector with its hash and keeps the hashes. */
static void print_case(ccase *c) {
    char name[128];
    snprintf(name, sizeof name, "%.63s: the guard after its output is untouched", c->name);
    report(guard_intact(c->out + c->bytes), name, "");
    memcpy(c->hashes, c->out, c->bytes);
    for (size_t b = 0; b < c->job.nb; b++)
        for (size_t v = 0; v < c->job.nv; v++) {
            size_t n;
            unsigned char *bytes = expected_vector(c, b, v, &n);
            printf("LEAF %d %zu %zu ", (int)(c - cases), b, v);
            print_hex(bytes, n);
            putchar(' ');
            print_hex(c->out + 32 * (b * c->job.nv + v), 32);
            putchar('\n');
            free(bytes);
        }
    printf("CASE %d %s\n", (int)(c - cases), c->name);
}

/* Later runs: the same hashes, the guard intact. */
static void check_same(const ccase *c, const char *how) {
    char name[192];
    snprintf(name, sizeof name, "%.63s (%.80s): same hashes, guard untouched", c->name, how);
    report(!memcmp(c->out, c->hashes, c->bytes) && guard_intact(c->out + c->bytes), name, "");
}

/* ---- graph replays: mmaudit_commit_leaves_replay ---- */

/* A control block (cuda/gather.cu: 16-byte header, 48-byte entries) of 2
 * calls and depth 2, in mapped pinned memory. */
#define REPLAY_NONE 0xffffffffu
#define ENTRY_BYTES 48

static unsigned char *entry_of(unsigned char *ctrl, uint32_t row, uint32_t call) {
    return ctrl + 16 + ((size_t)row * 2 + call) * ENTRY_BYTES;
}

static CUresult launch_replay(unsigned char *ctrl, uint32_t call, uint32_t phase, unsigned grid_x, unsigned grid_y) {
    CUdeviceptr c = dev_of(ctrl);
    void *params[] = {&c, &call, &phase};
    return cuLaunchKernel(replay_fn, grid_x, grid_y, 1, 256, 1, 1, 0, stream, params, NULL);
}

/* The leaf node of call 1 in replay 5 (row 1): phase 0 runs the entry's first
 * leaf job, phase 1 the others, whatever the grid; the same hashes as
 * mmaudit_commit_leaves, and seq at marker + 4 (phase 1 only; the gather
 * node's word at marker untouched). Nothing runs for another replay's tag, no
 * replay, a null table, another call or phase 2. */
static void replay(const mmaudit_commit_job *jobs) {
    unsigned char *ctrl = pinned(16 + 2 * 2 * ENTRY_BYTES);
    uint32_t *markers = pinned(8);
    const uint32_t seq = 5, two = 2, none = REPLAY_NONE;
    memcpy(ctrl, &seq, 4);
    memcpy(ctrl + 4, &two, 4);
    memcpy(ctrl + 8, &two, 4);
    for (uint32_t r = 0; r < 2; r++)
        for (uint32_t c = 0; c < 2; c++)
            memcpy(entry_of(ctrl, r, c) + 24, &none, 4);
    unsigned char *e = entry_of(ctrl, 1, 1);
    uint64_t table = dev_of(jobs), marker = dev_of(markers);
    uint32_t pre = 1, post = (uint32_t)ncases - 1;
    memcpy(e + 8, &marker, 8);
    memcpy(e + 24, &seq, 4);
    memcpy(e + 32, &table, 8);
    memcpy(e + 40, &pre, 4);
    memcpy(e + 44, &post, 4);

    static const unsigned grids[][2] = {{3, 1}, {1, 4}};
    for (size_t g = 0; g < 2; g++) {
        char how[96];
        snprintf(how, sizeof how, "replay leaf node, grid %u x %u", grids[g][0], grids[g][1]);
        clear_outputs();
        markers[0] = markers[1] = 0;
        MUST(launch_replay(ctrl, 1, 0, grids[g][0], grids[g][1]));
        MUST(cuStreamSynchronize(stream));
        report(cases[0].out[0] != SENTINEL && cases[1].out[0] == SENTINEL && markers[1] == 0,
               "replay leaf node, phase 0: the first job only, no marker", how);
        MUST(launch_replay(ctrl, 1, 1, grids[g][0], grids[g][1]));
        MUST(cuStreamSynchronize(stream));
        for (int i = 0; i < ncases; i++)
            check_same(&cases[i], how);
        report(markers[0] == 0 && markers[1] == seq, "replay leaf node, phase 1: seq at marker + 4", how);
    }

    /* No marker: the jobs run, nothing else is written. */
    clear_outputs();
    markers[0] = markers[1] = 0;
    const uint64_t no_marker = 0;
    memcpy(e + 8, &no_marker, 8);
    MUST(launch_replay(ctrl, 1, 0, 2, 2));
    MUST(launch_replay(ctrl, 1, 1, 2, 2));
    MUST(cuStreamSynchronize(stream));
    for (int i = 0; i < ncases; i++)
        check_same(&cases[i], "replay leaf node without a marker");
    report(markers[0] == 0 && markers[1] == 0, "replay leaf node without a marker writes none", "");
    memcpy(e + 8, &marker, 8);

    /* Cases where the node does nothing. */
    struct {
        const char *what;
        uint32_t ctrl_seq, depth, call, phase, tag;
        uint64_t table;
        int null_ctrl;
    } idle[] = {
        {"another replay's tag", seq, 2, 1, 1, seq + 2, table, 0},
        {"no replay in progress", REPLAY_NONE, 2, 1, 1, seq, table, 0},
        {"no leaf table", seq, 2, 1, 1, seq, 0, 0},
        {"a call past the graph's", seq, 2, 2, 1, seq, table, 0},
        {"phase 2", seq, 2, 1, 2, seq, table, 0},
        {"depth 0", seq, 0, 1, 1, seq, table, 0},
        {"a null control block", seq, 2, 1, 1, seq, table, 1},
    };
    for (size_t k = 0; k < sizeof idle / sizeof idle[0]; k++) {
        clear_outputs();
        markers[0] = markers[1] = 0;
        memcpy(ctrl, &idle[k].ctrl_seq, 4);
        memcpy(ctrl + 8, &idle[k].depth, 4);
        memcpy(e + 24, &idle[k].tag, 4);
        memcpy(e + 32, &idle[k].table, 8);
        if (idle[k].null_ctrl) {
            CUdeviceptr null_ctrl = 0;
            uint32_t call = idle[k].call, phase = idle[k].phase;
            void *params[] = {&null_ctrl, &call, &phase};
            MUST(cuLaunchKernel(replay_fn, 2, 2, 1, 256, 1, 1, 0, stream, params, NULL));
        } else {
            MUST(launch_replay(ctrl, idle[k].call, idle[k].phase, 2, 2));
        }
        MUST(cuStreamSynchronize(stream));
        int untouched = markers[1] == 0;
        for (int i = 0; i < ncases; i++)
            untouched &= cases[i].out[0] == SENTINEL;
        report(untouched, "replay leaf node does nothing", idle[k].what);
    }
    memcpy(ctrl, &seq, 4);
    memcpy(ctrl + 8, &two, 4);
    memcpy(e + 24, &seq, 4);
    memcpy(e + 32, &table, 8);
}

/* ---- the vectors ---- */

static const size_t sizes[] = {1, 2, 4, 8};

static void build_cases(void) {
    char name[64];

    /* Empty vectors read nothing: the source is unmapped. */
    static matrix nowhere;
    nowhere.elem = 4;
    nowhere.dev = UNMAPPED;
    const matrix *nw[2] = {&nowhere, &nowhere};
    ccase *c = add_case("len 0 (nothing read)", nw, 2, COLUMNS, 0, 3, 0);
    c->job.src = UNMAPPED;
    c->job.batch_stride = 64;

    /* Every element size and the lengths around BLAKE3's block and chunk
     * sizes, as columns (contiguous) and as rows (strided by ld) of a
     * column-major matrix. */
    for (size_t si = 0; si < 4; si++) {
        size_t e = sizes[si];
        size_t lens[] = {1, 63, 64, 65, 512, 1024 / e, 1024 / e + 1};
        size_t maxlen = 1024 / e + 1 > 512 ? 1024 / e + 1 : 512;
        matrix *cm = malloc(sizeof *cm), *rm = malloc(sizeof *rm);
        *cm = new_matrix(maxlen, 3, maxlen + 5, e, 10 + si); /* columns of maxlen elements */
        *rm = new_matrix(3, maxlen, 7, e, 20 + si);          /* rows of maxlen elements */
        for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
            if (li == 5 && lens[5] == 512)
                continue; /* 1024/2 is 512 */
            const matrix *cms[1] = {cm}, *rms[1] = {rm};
            snprintf(name, sizeof name, "columns, elem %zu, len %zu", e, lens[li]);
            add_case(name, cms, 1, COLUMNS, 1, 2, (unsigned)lens[li]);
            snprintf(name, sizeof name, "rows (stride ld), elem %zu, len %zu", e, lens[li]);
            add_case(name, rms, 1, ROWS, 1, 2, (unsigned)lens[li]);
        }
    }

    /* The pinned vector of protocol/src/commit/tests.rs: 2048 + 5 bytes j*7. */
    {
        matrix *m = malloc(sizeof *m);
        *m = (matrix){malloc(2053), 0, 2053, 1, 2053, 1};
        for (size_t j = 0; j < 2053; j++)
            m->host[j] = (unsigned char)(j * 7);
        m->dev = upload(m->host, 2053);
        const matrix *ms[1] = {m};
        add_case("2048 + 5 bytes j*7", ms, 1, COLUMNS, 0, 1, 2053);
    }

    /* 5000 elements of 2 bytes: 10 chunks, as columns and as rows. */
    {
        matrix *cm = malloc(sizeof *cm), *rm = malloc(sizeof *rm);
        *cm = new_matrix(5000, 2, 5003, 2, 30);
        *rm = new_matrix(3, 5000, 3, 2, 31);
        const matrix *cms[1] = {cm}, *rms[1] = {rm};
        add_case("columns, elem 2, len 5000", cms, 1, COLUMNS, 0, 2, 5000);
        add_case("rows (stride ld), elem 2, len 5000", rms, 1, ROWS, 0, 3, 5000);
    }

    /* Negative strides: rows read from the last column to the first, and
     * columns walked leftwards. */
    for (size_t si = 1; si < 4; si += 2) {
        size_t e = sizes[si];
        matrix *m = malloc(sizeof *m);
        *m = new_matrix(9, 300, 11, e, 40 + si);
        const matrix *ms[1] = {m};
        snprintf(name, sizeof name, "rows backwards (negative elem_stride), elem %zu", e);
        add_case(name, ms, 1, ROWS_BACKWARDS, 2, 4, 300);
        snprintf(name, sizeof name, "columns leftwards (negative vec_stride), elem %zu", e);
        add_case(name, ms, 1, COLUMNS_LEFTWARDS, 299, 5, 9);
    }

    /* A strided batch: members at equal distances inside one allocation. */
    {
        size_t rows = 200, cols = 6, ld = 203, e = 4, member = ld * cols * e + 64;
        unsigned char *host = random_bytes(member * 3, 50);
        CUdeviceptr dev = upload(host, member * 3);
        matrix *ms = malloc(3 * sizeof *ms);
        for (int b = 0; b < 3; b++)
            ms[b] = (matrix){host + b * member, dev + b * member, rows, cols, ld, e};
        const matrix *up[3] = {&ms[0], &ms[1], &ms[2]}, *down[3] = {&ms[2], &ms[1], &ms[0]};
        add_case("strided batch of 3, columns, elem 4", up, 3, COLUMNS, 1, 4, (unsigned)rows);
        add_case("strided batch of 3 walked backwards (negative batch_stride), rows", down, 3, ROWS, 5, 2,
                 (unsigned)cols);
    }

    /* A pointer-array batch: three separate allocations, rows of 700
     * elements of 2 bytes (1400 bytes, two chunks). */
    {
        matrix *ms = malloc(3 * sizeof *ms);
        uint64_t ptrs[3];
        for (int b = 0; b < 3; b++) {
            ms[b] = new_matrix(9, 700, 9, 2, 60 + b);
            ptrs[b] = dev_at(&ms[b], 3, 0);
        }
        const matrix *pm[3] = {&ms[0], &ms[1], &ms[2]};
        c = add_case("pointer-array batch of 3, rows, elem 2, len 700", pm, 3, ROWS, 3, 4, 700);
        c->job.src = upload(ptrs, sizeof ptrs);
        c->job.flags = POINTER_ARRAY;
        c->job.batch_stride = 12345; /* ignored for a pointer array */
    }

    /* Misaligned elements (read bytewise). */
    {
        matrix *m = malloc(sizeof *m);
        *m = new_matrix(100, 8, 101, 8, 70);
        for (size_t si = 1; si < 4; si++) {
            size_t e = sizes[si];
            matrix *me = malloc(sizeof *me);
            *me = (matrix){m->host, m->dev, 100 * 8 / e, 8, 101 * 8 / e, e};
            const matrix *mes[1] = {me};
            snprintf(name, sizeof name, "columns at byte offset 1, elem %zu", e);
            c = add_case(name, mes, 1, COLUMNS, 2, 3, (unsigned)(99 * 8 / e));
            c->offset = 1;
            c->job.src += 1;
            snprintf(name, sizeof name, "rows at byte offset 3, elem %zu", e);
            c = add_case(name, mes, 1, ROWS, 2, 3, 7);
            c->offset = 3;
            c->job.src += 3;
        }
    }

    /* Vectors of more than 256 and 512 chunks (a GPU block hashes 256 at a
     * time). */
    {
        matrix *m = malloc(sizeof *m);
        size_t len = (513 * 1024 + 8) / 8;
        *m = new_matrix(len, 1, len, 8, 80);
        const matrix *ms[1] = {m};
        add_case("a column of 513 chunks + 8 bytes, elem 8", ms, 1, COLUMNS, 0, 1, (unsigned)len);
        matrix *m1 = malloc(sizeof *m1);
        *m1 = (matrix){m->host, m->dev, len * 8, 1, len * 8, 1};
        const matrix *m1s[1] = {m1};
        add_case("a column of 300 chunks - 1 byte, elem 1", m1s, 1, COLUMNS, 0, 1, 300 * 1024 - 1);
    }
}

/* ---- malformed jobs ---- */

static void malformed_jobs(const ccase *good) {
    enum { NBAD = 10 };
    mmaudit_commit_job *jobs = pinned((NBAD + 1) * sizeof *jobs);
    unsigned char *outs = pinned(NBAD * 256);
    static const char *what[NBAD] = {
        "nb = 0",        "nv = 0",           "elem_size 0", "elem_size 3", "elem_size 16", "reserved != 0",
        "flag bit 1",    "flag bit 31",      "misaligned pointer array",   "nb*nv*32 overflowing 64 bits",
    };
    for (int k = 0; k < NBAD; k++) {
        mmaudit_commit_job *j = &jobs[k];
        memset(j, 0, sizeof *j);
        j->src = UNMAPPED;
        j->out = dev_of(outs + 256 * k);
        j->nb = 2;
        j->nv = 3;
        j->len = 5;
        j->elem_size = 4;
        j->vec_stride = 4;
        j->elem_stride = 64;
    }
    jobs[0].nb = 0;
    jobs[1].nv = 0;
    jobs[2].elem_size = 0;
    jobs[3].elem_size = 3;
    jobs[4].elem_size = 16;
    jobs[5].reserved = 1;
    jobs[6].flags = 2;
    jobs[7].flags = 0x80000000u;
    jobs[8].flags = POINTER_ARRAY;
    jobs[8].src = UNMAPPED + 4;
    jobs[9].nb = jobs[9].nv = 0xffffffffu;
    jobs[NBAD] = good->job; /* and a good job after them still runs */
    memset(outs, SENTINEL, NBAD * 256);
    memset(good->out, SENTINEL, good->bytes + GUARD);
    EXPECT_STATUS("a launch of malformed jobs", launch_leaves(jobs, NBAD + 1, 2, NBAD + 1, 256, 1), CUDA_SUCCESS);
    EXPECT_STATUS("malformed jobs are skipped without a fault", cuStreamSynchronize(stream), CUDA_SUCCESS);
    for (int k = 0; k < NBAD; k++) {
        char name[96];
        snprintf(name, sizeof name, "malformed job skipped, output untouched: %s", what[k]);
        int intact = 1;
        for (int b = 0; b < 256; b++)
            intact &= outs[256 * k + b] == SENTINEL;
        report(intact, name, "");
    }
    check_same(good, "after the malformed jobs of its launch");
}

/* ---- the tree ---- */

static void tree(void) {
    /* Vector i: i + 1 bytes, each (u8)i (the pinned vectors of
     * protocol/src/commit/tests.rs), back to back; one job each. */
    size_t total = (size_t)TREE_LEAVES * (TREE_LEAVES + 1) / 2;
    unsigned char *host = malloc(total);
    mmaudit_commit_job *jobs = pinned(TREE_LEAVES * sizeof *jobs);
    CUdeviceptr vectors, leaves;
    MUST(cuMemAlloc(&vectors, total));
    MUST(cuMemAlloc(&leaves, TREE_LEAVES * 32));
    size_t at = 0;
    for (size_t i = 0; i < TREE_LEAVES; i++) {
        memset(host + at, (int)(i & 0xff), i + 1);
        mmaudit_commit_job *j = &jobs[i];
        memset(j, 0, sizeof *j);
        j->src = vectors + at;
        j->out = leaves + 32 * i;
        j->nb = j->nv = 1;
        j->len = (unsigned)(i + 1);
        j->elem_size = 1;
        j->elem_stride = 1;
        at += i + 1;
    }
    MUST(cuMemcpyHtoD(vectors, host, total));
    MUST(launch_leaves(jobs, TREE_LEAVES, 1, TREE_LEAVES, 256, 1));
    MUST(cuStreamSynchronize(stream));
    unsigned char *leaf_hashes = malloc(TREE_LEAVES * 32);
    MUST(cuMemcpyDtoH(leaf_hashes, leaves, TREE_LEAVES * 32));
    for (size_t i = 0; i < TREE_LEAVES; i++) {
        printf("TREELEAF %zu ", i);
        print_hex(leaf_hashes + 32 * i, 32);
        putchar('\n');
    }
    /* The same leaves at a misaligned device address. */
    CUdeviceptr misaligned;
    MUST(cuMemAlloc(&misaligned, TREE_LEAVES * 32 + 1));
    MUST(cuMemcpyDtoD(misaligned + 1, leaves, TREE_LEAVES * 32));

    static const unsigned extra[] = {63, 64, 65, 100, 511, 512, 513, 1000, 4096, TREE_LEAVES};
    unsigned counts[41 + sizeof extra / sizeof extra[0]];
    int ncounts = 0;
    for (unsigned n = 0; n <= 40; n++)
        counts[ncounts++] = n;
    for (size_t k = 0; k < sizeof extra / sizeof extra[0]; k++)
        counts[ncounts++] = extra[k];
    unsigned char *outs = pinned((size_t)ncounts * 64);
    memset(outs, SENTINEL, (size_t)ncounts * 64);
    for (int k = 0; k < ncounts; k++)
        MUST(launch_tree(counts[k] ? leaves : 0, counts[k], dev_of(outs + 64 * k), 1, 256));
    MUST(cuStreamSynchronize(stream));
    for (int k = 0; k < ncounts; k++) {
        printf("ROOT %u ", counts[k]);
        print_hex(outs + 64 * k, 32);
        putchar('\n');
        char name[96];
        snprintf(name, sizeof name, "tree of %u leaves: nothing written past the root", counts[k]);
        int intact = 1;
        for (int b = 32; b < 64; b++)
            intact &= outs[64 * k + b] == SENTINEL;
        report(intact, name, "");
    }

    /* Other geometries, a misaligned input and output, an unread input for
     * no leaves: the same roots. */
    unsigned char *again = pinned((size_t)ncounts * 64 + 1);
    static const unsigned grids[][2] = {{1, 1}, {3, 64}, {2, 5}, {1, 512}};
    for (size_t g = 0; g < sizeof grids / sizeof grids[0]; g++) {
        memset(again, SENTINEL, (size_t)ncounts * 64 + 1);
        for (int k = 0; k < ncounts; k++) {
            CUdeviceptr in = g % 2 ? misaligned + 1 : leaves;
            if (counts[k] == 0)
                in = g % 2 ? UNMAPPED : 0;
            MUST(launch_tree(in, counts[k], dev_of(again + 64 * k + g % 2), grids[g][0], grids[g][1]));
        }
        MUST(cuStreamSynchronize(stream));
        int same = 1;
        for (int k = 0; k < ncounts; k++)
            same &= !memcmp(again + 64 * k + g % 2, outs + 64 * k, 32);
        char name[128];
        snprintf(name, sizeof name, "tree roots with grid %u, block %u%s: the same", grids[g][0], grids[g][1],
                 g % 2 ? ", misaligned leaves and out, unmapped leaves for count 0" : "");
        report(same, name, "");
    }

    /* Calls that do nothing: no output, no input with leaves, a count whose
     * bytes overflow. */
    unsigned char *none = pinned(3 * 64);
    memset(none, SENTINEL, 3 * 64);
    MUST(launch_tree(leaves, 5, 0, 1, 256));
    MUST(launch_tree(0, 5, dev_of(none), 1, 256));
    MUST(launch_tree(UNMAPPED, (1ull << 59) + 1, dev_of(none + 64), 1, 256));
    EXPECT_STATUS("tree calls that do nothing run without a fault", cuStreamSynchronize(stream), CUDA_SUCCESS);
    int intact = 1;
    for (int b = 0; b < 3 * 64; b++)
        intact &= none[b] == SENTINEL;
    report(intact, "tree calls with a null out, null leaves or an overflowing count write nothing", "");
    free(host);
    free(leaf_hashes);
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 3 || (argc == 3 && strcmp(argv[2], "--no-fault"))) {
        printf("usage: simgpu_commit PATH/TO/gather.ptx [--no-fault]\n");
        return 2;
    }
    int fault_case = argc == 2;
    CUmodule mod = load_module(argv[1]);
    MUST(cuModuleGetFunction(&leaves_fn, mod, "mmaudit_commit_leaves"));
    MUST(cuModuleGetFunction(&replay_fn, mod, "mmaudit_commit_leaves_replay"));
    MUST(cuModuleGetFunction(&tree_fn, mod, "mmaudit_commit_tree"));

    build_cases();
    mmaudit_commit_job *jobs = pinned((size_t)ncases * sizeof *jobs);
    for (int i = 0; i < ncases; i++)
        jobs[i] = cases[i].job;

    /* One launch per job. */
    clear_outputs();
    for (int i = 0; i < ncases; i++)
        MUST(launch_leaves(&jobs[i], 1, 3, 1, 256, 1));
    MUST(cuStreamSynchronize(stream));
    for (int i = 0; i < ncases; i++)
        print_case(&cases[i]);

    /* All jobs in one launch, other geometries. */
    static const unsigned geometries[][3] = {{2, 256, 1}, {7, 32, 2}, {1, 1, 1}};
    for (size_t g = 0; g < sizeof geometries / sizeof geometries[0]; g++) {
        char how[96];
        snprintf(how, sizeof how, "all jobs in one launch, grid.x %u, block %u x %u", geometries[g][0],
                 geometries[g][1], geometries[g][2]);
        clear_outputs();
        MUST(launch_leaves(jobs, (unsigned)ncases, geometries[g][0], (unsigned)ncases, geometries[g][1],
                           geometries[g][2]));
        MUST(cuStreamSynchronize(stream));
        for (int i = 0; i < ncases; i++)
            check_same(&cases[i], how);
    }

    /* A grid with fewer y-blocks than jobs leaves the later jobs undone. */
    clear_outputs();
    MUST(launch_leaves(&jobs[1], 2, 1, 1, 256, 1));
    MUST(cuStreamSynchronize(stream));
    check_same(&cases[1], "grid.y = 1 of 2 jobs");
    report(cases[2].out[0] == SENTINEL && guard_intact(cases[2].out), "grid.y = 1 of 2 jobs: job 1 not run", "");

    replay(jobs);
    malformed_jobs(&cases[3]);
    tree();

    /* Last: a vector reaching past its allocation faults, and the fault is
     * sticky. */
    if (!fault_case)
        return finish("simgpu_commit");
    mmaudit_commit_job *bad = pinned(sizeof *bad);
    *bad = cases[3].job;
    bad->len = 100000; /* columns of 1030 bytes in an allocation of 3 */
    EXPECT_STATUS("a job reading past its operand launches", launch_leaves(bad, 1, 1, 1, 256, 1), CUDA_SUCCESS);
    EXPECT_STATUS("synchronising reports the illegal address", cuStreamSynchronize(stream),
                  CUDA_ERROR_ILLEGAL_ADDRESS);
    EXPECT_STATUS("the illegal address is sticky", cuCtxSynchronize(), CUDA_ERROR_ILLEGAL_ADDRESS);
    return finish("simgpu_commit");
}

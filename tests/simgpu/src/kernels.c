/*
 * Simulated GPU: the CPU twins of PTX kernels, by entry name.
 *
 * cuModuleLoadData reads the `.entry NAME` lines of a PTX module, and
 * cuModuleGetFunction succeeds only for a name that the PTX declares AND that
 * has a twin in the table below; a launch runs the twin on the stream's worker.
 *
 * To add a twin:
 *   1. write `static CUresult twin_NAME(const sg_launch *l, void *const *params)`
 *      that does for the whole grid what the kernel does: iterate over
 *      l->grid and l->block as the CUDA code iterates over blockIdx/threadIdx;
 *   2. read parameter i as `*(const T *)params[i]` (params mirrors
 *      cuLaunchKernel's kernelParams; the values were copied at launch time);
 *   3. turn every device pointer into host-accessible memory with
 *      sg_dev_span(ptr, bytes) covering all bytes the kernel touches, and return
 *      CUDA_ERROR_ILLEGAL_ADDRESS when it gives NULL (an out-of-bounds access on
 *      a GPU), CUDA_SUCCESS otherwise;
 *   4. add a row to `twins` with the entry name and the byte size of every
 *      parameter in order (they define how cuLaunchKernel copies kernelParams
 *      and how it unpacks a CU_LAUNCH_PARAM_BUFFER_POINTER buffer, where each
 *      parameter is aligned to its own size, at most 8).
 * A twin must never call CUDA itself; it runs inside the simulated device.
 */
#include <stdlib.h>
#include <string.h>

#include "simgpu.h"

/* simgpu_test_fill_u32(u32 *dst, u32 value, u64 n): thread t of the grid
 * (t = blockIdx.x * blockDim.x + threadIdx.x) writes dst[t] = value + t when
 * t < n, so a launch too small for n leaves the tail untouched, which shows
 * that the launch geometry is honoured. The PTX lives in the test that uses it
 * (tests/programs/simgpu_kernel.c). */
static CUresult twin_test_fill_u32(const sg_launch *l, void *const *params) {
    uint64_t dst = *(const uint64_t *)params[0];
    uint32_t value = *(const uint32_t *)params[1];
    uint64_t n = *(const uint64_t *)params[2];
    uint64_t threads = (uint64_t)l->grid[0] * l->block[0];
    uint64_t touched = threads < n ? threads : n;
    if (touched == 0)
        return CUDA_SUCCESS;
    uint32_t *out = sg_dev_span(dst, touched * sizeof(uint32_t));
    if (!out)
        return CUDA_ERROR_ILLEGAL_ADDRESS;
    for (uint64_t block = 0; block < l->grid[0]; block++)
        for (uint64_t thread = 0; thread < l->block[0]; thread++) {
            uint64_t t = block * l->block[0] + thread;
            if (t < n)
                out[t] = value + (uint32_t)t;
        }
    return CUDA_SUCCESS;
}

/* mmaudit_gather(const mmaudit_gather_job *jobs, u32 njobs): the interposer's
 * gather kernel (cuda/gather.cu, whose comments are the specification; keep
 * the two in step). Block (x, y) of the grid works on job y < njobs; the x
 * blocks of a job together copy all of its nb*ni*nj elements, so the result
 * does not depend on grid.x or the block shape, and neither does this twin.
 * Blocks with z > 0 do nothing on the GPU, so only the z = 0 slice counts.
 *
 * Every device access goes through sg_dev_span, so a job pointing outside an
 * allocation faults with CUDA_ERROR_ILLEGAL_ADDRESS as on a GPU. The accesses
 * checked are exactly the kernel's: the 88-byte job, each index list as a
 * whole (the kernel reads every entry), one pointer-array entry and one source
 * element per output element, and the output range. Malformed jobs are
 * skipped before any of their addresses is touched, as in the kernel. */
#define GATHER_JOB_BYTES 88
#define GATHER_POINTER_ARRAY 1u

typedef struct gather_job {
    uint64_t src, out, batch_idx, idx_i, idx_j;
    int64_t batch_stride, stride_i, stride_j;
    uint32_t nb, ni, nj, elem_size, flags, reserved;
} gather_job;

/* The job's u64 list `list` of n entries (NULL with *ok set when absent);
 * *ok cleared when the list is out of range. */
static const unsigned char *gather_list(uint64_t list, uint64_t n, int *ok) {
    if (!list)
        return NULL;
    const unsigned char *p = sg_dev_span(list, n * 8);
    if (!p)
        *ok = 0;
    return p;
}

static uint64_t gather_pick(const unsigned char *list, uint64_t index) {
    uint64_t v = index;
    if (list)
        memcpy(&v, list + 8 * index, 8);
    return v;
}

static CUresult gather_one(const gather_job *j) {
    uint64_t size = j->elem_size;
    if (!j->nb || !j->ni || !j->nj)
        return CUDA_SUCCESS;
    if (size != 1 && size != 2 && size != 4 && size != 8)
        return CUDA_SUCCESS;
    if ((j->flags & ~GATHER_POINTER_ARRAY) || j->reserved)
        return CUDA_SUCCESS;
    int pointer_array = (j->flags & GATHER_POINTER_ARRAY) != 0;
    if ((j->batch_idx | j->idx_i | j->idx_j | (pointer_array ? j->src : 0)) & 7)
        return CUDA_SUCCESS;
    uint64_t rows = (uint64_t)j->nb * j->ni;
    if (rows > UINT64_MAX / j->nj / size)
        return CUDA_SUCCESS;
    uint64_t total = rows * j->nj;

    int ok = 1;
    const unsigned char *bl = gather_list(j->batch_idx, j->nb, &ok);
    const unsigned char *il = gather_list(j->idx_i, j->ni, &ok);
    const unsigned char *jl = gather_list(j->idx_j, j->nj, &ok);
    unsigned char *out = sg_dev_span(j->out, total * size);
    if (!ok || !out)
        return CUDA_ERROR_ILLEGAL_ADDRESS;
    for (uint64_t e = 0; e < total; e++) {
        uint64_t jj = e % j->nj, row = e / j->nj;
        uint64_t i = row % j->ni, b = row / j->ni;
        uint64_t bi = gather_pick(bl, b), base;
        if (pointer_array) {
            const void *slot = sg_dev_span(j->src + 8 * bi, 8);
            if (!slot)
                return CUDA_ERROR_ILLEGAL_ADDRESS;
            memcpy(&base, slot, 8);
        } else {
            base = j->src + bi * (uint64_t)j->batch_stride;
        }
        /* Unsigned arithmetic: addresses wrap modulo 2^64 as on the GPU. */
        uint64_t addr = base + gather_pick(il, i) * (uint64_t)j->stride_i + gather_pick(jl, jj) * (uint64_t)j->stride_j;
        const void *elem = sg_dev_span(addr, size);
        if (!elem)
            return CUDA_ERROR_ILLEGAL_ADDRESS;
        memmove(out + e * size, elem, size);
    }
    return CUDA_SUCCESS;
}

/* Runs jobs first .. first + n of the job table at `jobs`. */
static CUresult gather_jobs(uint64_t jobs, uint64_t first, uint64_t n) {
    for (uint64_t y = first; y < first + n; y++) {
        const unsigned char *p = sg_dev_span(jobs + y * GATHER_JOB_BYTES, GATHER_JOB_BYTES);
        if (!p)
            return CUDA_ERROR_ILLEGAL_ADDRESS;
        /* The ABI's field offsets, read one by one (no struct-layout assumption). */
        gather_job j;
        memcpy(&j.src, p + 0, 8);
        memcpy(&j.out, p + 8, 8);
        memcpy(&j.batch_idx, p + 16, 8);
        memcpy(&j.idx_i, p + 24, 8);
        memcpy(&j.idx_j, p + 32, 8);
        memcpy(&j.batch_stride, p + 40, 8);
        memcpy(&j.stride_i, p + 48, 8);
        memcpy(&j.stride_j, p + 56, 8);
        memcpy(&j.nb, p + 64, 4);
        memcpy(&j.ni, p + 68, 4);
        memcpy(&j.nj, p + 72, 4);
        memcpy(&j.elem_size, p + 76, 4);
        memcpy(&j.flags, p + 80, 4);
        memcpy(&j.reserved, p + 84, 4);
        CUresult r = gather_one(&j);
        if (r != CUDA_SUCCESS)
            return r;
    }
    return CUDA_SUCCESS;
}

static CUresult twin_mmaudit_gather(const sg_launch *l, void *const *params) {
    uint64_t jobs = *(const uint64_t *)params[0];
    uint32_t njobs = *(const uint32_t *)params[1];
    return gather_jobs(jobs, 0, l->grid[1] < njobs ? l->grid[1] : njobs);
}

#define REPLAY_NONE 0xffffffffu

#define REPLAY_ENTRY_BYTES 48

/* A replay node's entry, read field by field at the ABI's offsets. */
typedef struct replay_entry {
    int found;
    uint32_t seq, pre, post, leaves_pre, leaves_post;
    uint64_t jobs, marker, leaves;
} replay_entry;

/* The entry of (the replay running now, call) for a replay node's parameters
 * (ctrl, call, phase): found = 0 when the node does nothing (ctrl 0, phase > 1,
 * no replay, depth 0, call out of range, or a tag of another replay). */
static CUresult find_entry(void *const *params, replay_entry *out) {
    uint64_t ctrl = *(const uint64_t *)params[0];
    uint32_t call = *(const uint32_t *)params[1];
    uint32_t phase = *(const uint32_t *)params[2];
    out->found = 0;
    if (!ctrl || phase > 1)
        return CUDA_SUCCESS;
    const unsigned char *h = sg_dev_span(ctrl, 16);
    if (!h)
        return CUDA_ERROR_ILLEGAL_ADDRESS;
    uint32_t seq, calls, depth;
    memcpy(&seq, h + 0, 4);
    memcpy(&calls, h + 4, 4);
    memcpy(&depth, h + 8, 4);
    if (seq == REPLAY_NONE || depth == 0 || call >= calls)
        return CUDA_SUCCESS;
    uint64_t at = ctrl + 16 + ((uint64_t)(seq % depth) * calls + call) * REPLAY_ENTRY_BYTES;
    const unsigned char *e = sg_dev_span(at, REPLAY_ENTRY_BYTES);
    if (!e)
        return CUDA_ERROR_ILLEGAL_ADDRESS;
    uint32_t tag;
    memcpy(&tag, e + 24, 4);
    if (tag != seq)
        return CUDA_SUCCESS;
    memcpy(&out->jobs, e + 0, 8);
    memcpy(&out->marker, e + 8, 8);
    memcpy(&out->pre, e + 16, 4);
    memcpy(&out->post, e + 20, 4);
    memcpy(&out->leaves, e + 32, 8);
    memcpy(&out->leaves_pre, e + 40, 4);
    memcpy(&out->leaves_post, e + 44, 4);
    out->seq = seq;
    out->found = 1;
    return CUDA_SUCCESS;
}

/* Writes seq at marker when it is not 0 and 4-aligned. */
static CUresult write_marker(uint64_t marker, uint32_t seq) {
    if (!marker || (marker & 3))
        return CUDA_SUCCESS;
    unsigned char *m = sg_dev_span(marker, 4);
    if (!m)
        return CUDA_ERROR_ILLEGAL_ADDRESS;
    memcpy(m, &seq, 4);
    return CUDA_SUCCESS;
}

/* mmaudit_gather_replay(const mmaudit_replay_ctrl *ctrl, u32 call, u32 phase):
 * the gather node of a graph replay (cuda/gather.cu specifies the control
 * block). Reads the control block's header and the entry of (seq, call); when
 * the entry's tag is seq, writes the phase-1 marker and runs the phase's jobs
 * as mmaudit_gather does. Every y-block of the grid strides over the jobs,
 * so all of them run whatever the grid. */
static CUresult twin_mmaudit_gather_replay(const sg_launch *l, void *const *params) {
    (void)l;
    uint32_t phase = *(const uint32_t *)params[2];
    replay_entry e;
    CUresult r = find_entry(params, &e);
    if (r != CUDA_SUCCESS || !e.found)
        return r;
    if (phase == 1 && (r = write_marker(e.marker, e.seq)) != CUDA_SUCCESS)
        return r;
    return phase ? gather_jobs(e.jobs, e.pre, e.post) : gather_jobs(e.jobs, 0, e.pre);
}

/* ---- the commitment kernels (commit-before-challenge) ----
 *
 * mmaudit_commit_leaves and mmaudit_commit_tree (cuda/gather.cu, specified in
 * cuda/README.md; keep the three in step) hash vectors of GEMM operands with
 * BLAKE3 in keyed mode and reduce the hashes to an RFC 6962 Merkle root
 * (protocol/src/commit.rs is the reference). The twins compute the same
 * hashes with the plain sequential BLAKE3 below, written from the BLAKE3
 * specification, and the root with RFC 6962's recursive definition: other
 * algorithms than the kernels' parallel ones, for the same results. */

static const uint32_t b3_iv[8] = {0x6a09e667u, 0xbb67ae85u, 0x3c6ef372u, 0xa54ff53au,
                                  0x510e527fu, 0x9b05688cu, 0x1f83d9abu, 0x5be0cd19u};

enum { B3_CHUNK_START = 1, B3_CHUNK_END = 2, B3_PARENT = 4, B3_ROOT = 8, B3_KEYED_HASH = 16 };

static uint32_t b3_rotr(uint32_t x, int n) {
    return x >> n | x << (32 - n);
}

/* BLAKE3's G on state words a, b, c, d with message words x, y. */
static void b3_g(uint32_t v[16], int a, int b, int c, int d, uint32_t x, uint32_t y) {
    v[a] += v[b] + x;
    v[d] = b3_rotr(v[d] ^ v[a], 16);
    v[c] += v[d];
    v[b] = b3_rotr(v[b] ^ v[c], 12);
    v[a] += v[b] + y;
    v[d] = b3_rotr(v[d] ^ v[a], 8);
    v[c] += v[d];
    v[b] = b3_rotr(v[b] ^ v[c], 7);
}

/* out = the first 8 words of BLAKE3's compression of `block` (16 words) into
 * the chaining value `cv`: all this file needs (chaining values and 32-byte
 * roots). */
static void b3_compress(const uint32_t cv[8], const uint32_t block[16], uint64_t counter, uint32_t len,
                        uint32_t flags, uint32_t out[8]) {
    /* Message word i of round r + 1 is word order[i] of round r. */
    static const unsigned char order[16] = {2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8};
    uint32_t v[16], m[16], t[16];
    memcpy(v, cv, 32);
    memcpy(v + 8, b3_iv, 16);
    v[12] = (uint32_t)counter;
    v[13] = (uint32_t)(counter >> 32);
    v[14] = len;
    v[15] = flags;
    memcpy(m, block, 64);
    for (int round = 0; round < 7; round++) {
        for (int col = 0; col < 4; col++)
            b3_g(v, col, col + 4, col + 8, col + 12, m[2 * col], m[2 * col + 1]);
        for (int diag = 0; diag < 4; diag++)
            b3_g(v, diag, 4 + (diag + 1) % 4, 8 + (diag + 2) % 4, 12 + (diag + 3) % 4, m[8 + 2 * diag],
                 m[9 + 2 * diag]);
        for (int i = 0; i < 16; i++)
            t[i] = m[order[i]];
        memcpy(m, t, 64);
    }
    for (int i = 0; i < 8; i++)
        out[i] = v[i] ^ v[i + 8];
}

/* The 16 little-endian words of up to 64 bytes, zero-padded. */
static void b3_block_words(const unsigned char *bytes, size_t n, uint32_t m[16]) {
    unsigned char padded[64] = {0};
    memcpy(padded, bytes, n);
    for (int i = 0; i < 16; i++)
        m[i] = (uint32_t)padded[4 * i] | (uint32_t)padded[4 * i + 1] << 8 | (uint32_t)padded[4 * i + 2] << 16 |
               (uint32_t)padded[4 * i + 3] << 24;
}

/* An incremental BLAKE3 hasher: the current chunk's state and a stack of the
 * chaining values of complete subtrees to its left. A buffered block, and a
 * full chunk, are compressed only once more input shows they are not the
 * last: the last one takes the CHUNK_END and ROOT flags. */
typedef struct b3_hasher {
    uint32_t key[8]; /* key words; the IV for the unkeyed hash */
    uint32_t mode;   /* B3_KEYED_HASH or 0 */
    uint32_t cv[8];  /* chaining value of the current chunk so far */
    unsigned char block[64];
    size_t block_len;  /* bytes in block */
    unsigned blocks;   /* blocks of the current chunk already compressed */
    uint64_t chunk;    /* the current chunk's index */
    uint32_t stack[54][8];
    unsigned depth;
} b3_hasher;

static void b3_init(b3_hasher *h, const uint32_t key[8], uint32_t mode) {
    memset(h, 0, sizeof *h);
    memcpy(h->key, key, 32);
    memcpy(h->cv, key, 32);
    h->mode = mode;
}

static void b3_update(b3_hasher *h, const unsigned char *p, size_t n) {
    while (n) {
        if (h->block_len == 64) { /* more input follows the buffered block */
            uint32_t m[16];
            b3_block_words(h->block, 64, m);
            if (h->blocks == 15) {
                /* It ends a full chunk: push the chunk's chaining value,
                 * merging each subtree that completes (one per trailing zero
                 * bit of the chunk count), and start the next chunk. */
                uint32_t cv[8];
                b3_compress(h->cv, m, h->chunk, 64, h->mode | B3_CHUNK_END, cv);
                uint64_t total = ++h->chunk;
                while (!(total & 1)) {
                    uint32_t both[16];
                    memcpy(both, h->stack[--h->depth], 32);
                    memcpy(both + 8, cv, 32);
                    b3_compress(h->key, both, 0, 64, h->mode | B3_PARENT, cv);
                    total >>= 1;
                }
                memcpy(h->stack[h->depth++], cv, 32);
                memcpy(h->cv, h->key, 32);
                h->blocks = 0;
            } else {
                b3_compress(h->cv, m, h->chunk, 64, h->mode | (h->blocks ? 0 : B3_CHUNK_START), h->cv);
                h->blocks++;
            }
            h->block_len = 0;
        }
        size_t take = 64 - h->block_len < n ? 64 - h->block_len : n;
        memcpy(h->block + h->block_len, p, take);
        h->block_len += take;
        p += take;
        n -= take;
    }
}

/* The 32-byte hash: the last chunk's node, then a parent node with each
 * stacked subtree from the top down; the last node compressed takes ROOT. */
static void b3_finalize(const b3_hasher *h, unsigned char out[32]) {
    uint32_t node_cv[8], m[16], words[8];
    uint64_t counter = h->chunk;
    uint32_t len = (uint32_t)h->block_len;
    uint32_t flags = h->mode | B3_CHUNK_END | (h->blocks ? 0 : B3_CHUNK_START);
    memcpy(node_cv, h->cv, 32);
    b3_block_words(h->block, h->block_len, m);
    for (unsigned i = h->depth; i-- > 0;) {
        uint32_t right[8];
        b3_compress(node_cv, m, counter, len, flags, right);
        memcpy(m, h->stack[i], 32);
        memcpy(m + 8, right, 32);
        memcpy(node_cv, h->key, 32);
        counter = 0;
        len = 64;
        flags = h->mode | B3_PARENT;
    }
    b3_compress(node_cv, m, counter, len, flags | B3_ROOT, words);
    for (int i = 0; i < 32; i++)
        out[i] = (unsigned char)(words[i / 4] >> (8 * (i % 4)));
}

/* The key words of a commitment key: BLAKE3 (unkeyed) of its text. */
static void commit_key(const char *text, uint32_t key[8]) {
    b3_hasher h;
    unsigned char k[32];
    uint32_t words[16];
    b3_init(&h, b3_iv, 0);
    b3_update(&h, (const unsigned char *)text, strlen(text));
    b3_finalize(&h, k);
    b3_block_words(k, 32, words);
    memcpy(key, words, 32);
}

/* mmaudit_commit_leaves(const mmaudit_commit_job *jobs, u32 njobs): out[b*nv + v]
 * = BLAKE3 keyed with the leaf key over vector (b, v) of each job y <
 * min(grid.y, njobs); the result does not depend on grid.x or the block
 * shape. Reads the 64-byte job, each pointer-array entry and source element
 * through sg_dev_span (an empty vector reads nothing), after checking the
 * output range; malformed jobs are skipped before any of their addresses is
 * touched, as in the kernel. */
#define COMMIT_JOB_BYTES 64
#define COMMIT_POINTER_ARRAY 1u

typedef struct commit_job {
    uint64_t src, out;
    int64_t batch_stride, vec_stride, elem_stride;
    uint32_t nb, nv, len, elem_size, flags, reserved;
} commit_job;

static CUresult commit_one(const commit_job *j, const uint32_t leaf_key[8]) {
    uint64_t size = j->elem_size;
    if (!j->nb || !j->nv)
        return CUDA_SUCCESS;
    if (size != 1 && size != 2 && size != 4 && size != 8)
        return CUDA_SUCCESS;
    if ((j->flags & ~COMMIT_POINTER_ARRAY) || j->reserved)
        return CUDA_SUCCESS;
    int pointer_array = (j->flags & COMMIT_POINTER_ARRAY) != 0;
    if (pointer_array && (j->src & 7))
        return CUDA_SUCCESS;
    uint64_t vectors = (uint64_t)j->nb * j->nv;
    if (vectors > UINT64_MAX >> 5)
        return CUDA_SUCCESS;
    unsigned char *out = sg_dev_span(j->out, vectors * 32);
    if (!out)
        return CUDA_ERROR_ILLEGAL_ADDRESS;
    for (uint64_t b = 0; b < j->nb; b++)
        for (uint64_t v = 0; v < j->nv; v++) {
            b3_hasher h;
            b3_init(&h, leaf_key, B3_KEYED_HASH);
            if (j->len) {
                uint64_t base;
                if (pointer_array) {
                    const void *slot = sg_dev_span(j->src + 8 * b, 8);
                    if (!slot)
                        return CUDA_ERROR_ILLEGAL_ADDRESS;
                    memcpy(&base, slot, 8);
                } else {
                    base = j->src + b * (uint64_t)j->batch_stride;
                }
                /* Unsigned arithmetic: addresses wrap modulo 2^64 as on the GPU. */
                uint64_t addr = base + v * (uint64_t)j->vec_stride;
                /* A contiguous vector is read as one span (the same bytes in the same
                 * order, at the speed a test suite needs). */
                const unsigned char *whole =
                    (uint64_t)j->elem_stride == size && j->len <= UINT64_MAX / size
                        ? sg_dev_span(addr, j->len * size)
                        : NULL;
                if (whole) {
                    b3_update(&h, whole, j->len * size);
                    b3_finalize(&h, out + 32 * (b * j->nv + v));
                    continue;
                }
                for (uint64_t e = 0; e < j->len; e++) {
                    const unsigned char *elem = sg_dev_span(addr + e * (uint64_t)j->elem_stride, size);
                    if (!elem)
                        return CUDA_ERROR_ILLEGAL_ADDRESS;
                    b3_update(&h, elem, size);
                }
            }
            b3_finalize(&h, out + 32 * (b * j->nv + v));
        }
    return CUDA_SUCCESS;
}

/* Runs leaf jobs first .. first + count of the table at `jobs`. */
static CUresult commit_jobs(uint64_t jobs, uint64_t first, uint64_t count) {
    uint32_t leaf_key[8];
    commit_key("mmaudit-commit-leaf-v1", leaf_key);
    /* SIMGPU_BAD_LEAVES=1: a GPU (or kernel) that hashes wrong; every leaf hash
     * is written with another key, so none is its vector's. */
    const char *bad = getenv("SIMGPU_BAD_LEAVES");
    if (bad && !strcmp(bad, "1"))
        leaf_key[0] ^= 1;
    for (uint64_t y = first; y < first + count; y++) {
        const unsigned char *p = sg_dev_span(jobs + y * COMMIT_JOB_BYTES, COMMIT_JOB_BYTES);
        if (!p)
            return CUDA_ERROR_ILLEGAL_ADDRESS;
        /* The ABI's field offsets, read one by one. */
        commit_job j;
        memcpy(&j.src, p + 0, 8);
        memcpy(&j.out, p + 8, 8);
        memcpy(&j.batch_stride, p + 16, 8);
        memcpy(&j.vec_stride, p + 24, 8);
        memcpy(&j.elem_stride, p + 32, 8);
        memcpy(&j.nb, p + 40, 4);
        memcpy(&j.nv, p + 44, 4);
        memcpy(&j.len, p + 48, 4);
        memcpy(&j.elem_size, p + 52, 4);
        memcpy(&j.flags, p + 56, 4);
        memcpy(&j.reserved, p + 60, 4);
        CUresult r = commit_one(&j, leaf_key);
        if (r != CUDA_SUCCESS)
            return r;
    }
    return CUDA_SUCCESS;
}

static CUresult twin_mmaudit_commit_leaves(const sg_launch *l, void *const *params) {
    uint64_t jobs = *(const uint64_t *)params[0];
    uint32_t njobs = *(const uint32_t *)params[1];
    return commit_jobs(jobs, 0, l->grid[1] < njobs ? l->grid[1] : njobs);
}

/* mmaudit_commit_leaves_replay(const mmaudit_replay_ctrl *ctrl, u32 call, u32
 * phase): the leaf node of a graph replay. Finds the entry as the gather node
 * does; when its leaves table is not 0, writes seq at marker + 4 in phase 1 and
 * runs the phase's leaf jobs (all of them, whatever the grid). */
static CUresult twin_mmaudit_commit_leaves_replay(const sg_launch *l, void *const *params) {
    (void)l;
    /* SIMGPU_SKIP_REPLAY_LEAVES=1: the replay's leaf-hash nodes do nothing (as when
     * an executable graph runs nodes other than those the library bound). */
    const char *skip = getenv("SIMGPU_SKIP_REPLAY_LEAVES");
    if (skip && !strcmp(skip, "1"))
        return CUDA_SUCCESS;
    uint32_t phase = *(const uint32_t *)params[2];
    replay_entry e;
    CUresult r = find_entry(params, &e);
    if (r != CUDA_SUCCESS || !e.found || !e.leaves)
        return r;
    if (phase == 1 && e.marker && (r = write_marker(e.marker + 4, e.seq)) != CUDA_SUCCESS)
        return r;
    return phase ? commit_jobs(e.leaves, e.leaves_pre, e.leaves_post) : commit_jobs(e.leaves, 0, e.leaves_pre);
}

/* RFC 6962's MTH over n >= 1 leaf hashes: the left subtree takes the largest
 * power of two below n. */
static void commit_mth(const unsigned char *leaves, uint64_t n, const uint32_t node_key[8], unsigned char out[32]) {
    if (n == 1) {
        memcpy(out, leaves, 32);
        return;
    }
    uint64_t k = 1;
    while (2 * k < n)
        k *= 2;
    unsigned char both[64];
    commit_mth(leaves, k, node_key, both);
    commit_mth(leaves + 32 * k, n - k, node_key, both + 32);
    b3_hasher h;
    b3_init(&h, node_key, B3_KEYED_HASH);
    b3_update(&h, both, 64);
    b3_finalize(&h, out);
}

/* mmaudit_commit_tree(const u8 *leaves, u64 count, u8 *out): the root of the
 * count leaf hashes at `leaves` (the leaf hash of the empty vector for none)
 * into the 32 bytes at `out`, whatever the grid and block. Nothing happens
 * when out is 0, leaves is 0 with count > 0, or count > 2^59, as in the
 * kernel. */
static CUresult twin_mmaudit_commit_tree(const sg_launch *l, void *const *params) {
    (void)l;
    uint64_t leaves = *(const uint64_t *)params[0];
    uint64_t count = *(const uint64_t *)params[1];
    uint64_t out_addr = *(const uint64_t *)params[2];
    if (!out_addr || (count && !leaves) || count > UINT64_MAX >> 5)
        return CUDA_SUCCESS;
    unsigned char root[32];
    if (count == 0) {
        uint32_t leaf_key[8];
        b3_hasher h;
        commit_key("mmaudit-commit-leaf-v1", leaf_key);
        b3_init(&h, leaf_key, B3_KEYED_HASH);
        b3_finalize(&h, root);
    } else {
        const unsigned char *in = sg_dev_span(leaves, count * 32);
        if (!in)
            return CUDA_ERROR_ILLEGAL_ADDRESS;
        uint32_t node_key[8];
        commit_key("mmaudit-commit-node-v1", node_key);
        commit_mth(in, count, node_key, root);
    }
    unsigned char *out = sg_dev_span(out_addr, 32);
    if (!out)
        return CUDA_ERROR_ILLEGAL_ADDRESS;
    memcpy(out, root, 32);
    return CUDA_SUCCESS;
}

static const sg_kernel_twin twins[] = {
    {"simgpu_test_fill_u32", twin_test_fill_u32, 3, {8, 4, 8}},
    {"mmaudit_gather", twin_mmaudit_gather, 2, {8, 4}},
    {"mmaudit_gather_replay", twin_mmaudit_gather_replay, 3, {8, 4, 4}},
    {"mmaudit_commit_leaves", twin_mmaudit_commit_leaves, 2, {8, 4}},
    {"mmaudit_commit_leaves_replay", twin_mmaudit_commit_leaves_replay, 3, {8, 4, 4}},
    {"mmaudit_commit_tree", twin_mmaudit_commit_tree, 3, {8, 8, 8}},
};

SG_EXPORT const sg_kernel_twin *sg_kernel_find(const char *name) {
    for (size_t i = 0; i < sizeof twins / sizeof twins[0]; i++)
        if (!strcmp(twins[i].name, name))
            return &twins[i];
    return NULL;
}

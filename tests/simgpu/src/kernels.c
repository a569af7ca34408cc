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

/* mmaudit_gather_replay(const mmaudit_replay_ctrl *ctrl, u32 call, u32 phase):
 * the gather node of a graph replay (cuda/gather.cu specifies the control
 * block). Reads the control block's header and the entry of (seq, call); when
 * the entry's tag is seq, writes the phase-1 marker and runs the phase's jobs
 * as mmaudit_gather does. Every
 * y-block of the grid strides over the jobs, so all of them run whatever the
 * grid. */
#define REPLAY_NONE 0xffffffffu

static CUresult twin_mmaudit_gather_replay(const sg_launch *l, void *const *params) {
    (void)l;
    uint64_t ctrl = *(const uint64_t *)params[0];
    uint32_t call = *(const uint32_t *)params[1];
    uint32_t phase = *(const uint32_t *)params[2];
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
    uint64_t at = ctrl + 16 + ((uint64_t)(seq % depth) * calls + call) * 32;
    const unsigned char *e = sg_dev_span(at, 32);
    if (!e)
        return CUDA_ERROR_ILLEGAL_ADDRESS;
    uint64_t jobs, marker;
    uint32_t pre, post, tag;
    memcpy(&jobs, e + 0, 8);
    memcpy(&marker, e + 8, 8);
    memcpy(&pre, e + 16, 4);
    memcpy(&post, e + 20, 4);
    memcpy(&tag, e + 24, 4);
    if (tag != seq)
        return CUDA_SUCCESS;
    if (phase == 1 && marker && !(marker & 3)) {
        unsigned char *m = sg_dev_span(marker, 4);
        if (!m)
            return CUDA_ERROR_ILLEGAL_ADDRESS;
        memcpy(m, &seq, 4);
    }
    return phase ? gather_jobs(jobs, pre, post) : gather_jobs(jobs, 0, pre);
}

static const sg_kernel_twin twins[] = {
    {"simgpu_test_fill_u32", twin_test_fill_u32, 3, {8, 4, 8}},
    {"mmaudit_gather", twin_mmaudit_gather, 2, {8, 4}},
    {"mmaudit_gather_replay", twin_mmaudit_gather_replay, 3, {8, 4, 4}},
};

SG_EXPORT const sg_kernel_twin *sg_kernel_find(const char *name) {
    for (size_t i = 0; i < sizeof twins / sizeof twins[0]; i++)
        if (!strcmp(twins[i].name, name))
            return &twins[i];
    return NULL;
}

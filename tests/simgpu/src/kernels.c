/*
 * Simulated GPU: the CPU twins of PTX kernels, by entry name.
 *
 * cuModuleLoadData reads the `.entry NAME` lines of a PTX module, and
 * cuModuleGetFunction succeeds only for a name that the PTX declares AND that
 * has a twin in the table below; a launch runs the twin on the stream's worker.
 *
 * To add a twin (e.g. the interposer's gather kernel):
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

static const sg_kernel_twin twins[] = {
    {"simgpu_test_fill_u32", twin_test_fill_u32, 3, {8, 4, 8}},
};

SG_EXPORT const sg_kernel_twin *sg_kernel_find(const char *name) {
    for (size_t i = 0; i < sizeof twins / sizeof twins[0]; i++)
        if (!strcmp(twins[i].name, name))
            return &twins[i];
    return NULL;
}

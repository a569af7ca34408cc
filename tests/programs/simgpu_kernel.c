/*
 * The driver API of the simulated GPU as an interposer uses it: contexts
 * shared with the runtime, a PTX module whose kernel runs through its CPU twin
 * (simgpu_test_fill_u32, registered in tests/simgpu/src/kernels.c), mapped
 * pinned memory written by a kernel, pointer attributes, cuGetProcAddress,
 * error names, and a kernel that overruns its buffer leaving the sticky
 * illegal-address error (last, because the context is unusable after it).
 * Run with SIMGPU_LATENCY_US set so that asynchrony shows.
 *
 * Prints PASS/FAIL per case and a SUMMARY line; exits 1 if any case failed.
 */
#include <cuda.h>
#include <cuda_runtime.h>
#include <pthread.h>

#include "simgpu_check.h"

/* Hand-written PTX for
 *   __global__ void simgpu_test_fill_u32(u32 *dst, u32 value, u64 n) {
 *       u64 t = blockIdx.x * blockDim.x + threadIdx.x;
 *       if (t < n) dst[t] = value + t;
 *   }
 * plus an entry that has no CPU twin. */
static const char ptx[] =
    "//\n"
    "// simgpu test module (hand-written)\n"
    "//\n"
    ".version 8.0\n"
    ".target sm_90\n"
    ".address_size 64\n"
    "\n"
    "/* .entry commented_out( -- a comment is not an entry */\n"
    ".visible .entry simgpu_test_fill_u32(\n"
    "    .param .u64 simgpu_test_fill_u32_param_0,\n"
    "    .param .u32 simgpu_test_fill_u32_param_1,\n"
    "    .param .u64 simgpu_test_fill_u32_param_2\n"
    ")\n"
    "{\n"
    "    .reg .pred %p<2>;\n"
    "    .reg .b32 %r<6>;\n"
    "    .reg .b64 %rd<8>;\n"
    "    ld.param.u64 %rd1, [simgpu_test_fill_u32_param_0];\n"
    "    ld.param.u32 %r1, [simgpu_test_fill_u32_param_1];\n"
    "    ld.param.u64 %rd2, [simgpu_test_fill_u32_param_2];\n"
    "    mov.u32 %r2, %ctaid.x;\n"
    "    mov.u32 %r3, %ntid.x;\n"
    "    mov.u32 %r4, %tid.x;\n"
    "    mad.wide.u32 %rd3, %r2, %r3, %rd0;\n"
    "    cvt.u64.u32 %rd4, %r4;\n"
    "    add.s64 %rd3, %rd3, %rd4;\n"
    "    setp.ge.u64 %p1, %rd3, %rd2;\n"
    "    @%p1 bra DONE;\n"
    "    cvta.to.global.u64 %rd5, %rd1;\n"
    "    shl.b64 %rd6, %rd3, 2;\n"
    "    add.s64 %rd7, %rd5, %rd6;\n"
    "    cvt.u32.u64 %r5, %rd3;\n"
    "    add.s32 %r5, %r5, %r1;\n"
    "    st.global.u32 [%rd7], %r5;\n"
    "DONE:\n"
    "    ret;\n"
    "}\n"
    "\n"
    ".visible .entry simgpu_test_no_twin(\n"
    "    .param .u64 p0\n"
    ")\n"
    "{\n"
    "    ret;\n"
    "}\n";

static CUresult launch_fill(CUfunction f, CUdeviceptr dst, uint32_t value, uint64_t n, unsigned grid, unsigned block,
                            CUstream s) {
    void *params[] = {&dst, &value, &n};
    return cuLaunchKernel(f, grid, 1, 1, block, 1, 1, 0, s, params, NULL);
}

static int filled(const uint32_t *p, uint64_t from, uint64_t to, uint32_t value) {
    for (uint64_t i = from; i < to; i++)
        if (p[i] != value + (uint32_t)i)
            return 0;
    return 1;
}

static void *no_context_thread(void *arg) {
    CUcontext ctx = arg, current = (CUcontext)1;
    CUdeviceptr p;
    long bad = 0;
    bad |= cuCtxGetCurrent(&current) != CUDA_SUCCESS || current != NULL;
    bad |= cuMemAlloc(&p, 16) != CUDA_ERROR_INVALID_CONTEXT;
    bad |= cuCtxSetCurrent(ctx) != CUDA_SUCCESS;
    bad |= cuMemAlloc(&p, 16) != CUDA_SUCCESS;
    bad |= cuMemFree(p) != CUDA_SUCCESS;
    return (void *)bad;
}

static void contexts(CUcontext *out) {
    CUcontext ctx = (CUcontext)1;
    CUdeviceptr p;
    EXPECT_STATUS("driver call before cuInit", cuCtxGetCurrent(&ctx), CUDA_ERROR_NOT_INITIALIZED);
    MUST(cuInit(0));
    MUST(cuCtxGetCurrent(&ctx));
    report(ctx == NULL, "no context is current before the program makes one", "");
    EXPECT_STATUS("cuMemAlloc without a context", cuMemAlloc(&p, 16), CUDA_ERROR_INVALID_CONTEXT);
    MUST(cudaFree(NULL)); /* the runtime's first call binds the primary context */
    MUST(cuCtxGetCurrent(&ctx));
    CUcontext primary;
    MUST(cuDevicePrimaryCtxRetain(&primary, 0));
    report(ctx != NULL && ctx == primary, "after a runtime call, the current context is device 0's primary context", "");
    CUdevice dev = -1;
    MUST(cuCtxGetDevice(&dev));
    report(dev == 0, "cuCtxGetDevice", "");
    pthread_t t;
    void *r;
    pthread_create(&t, NULL, no_context_thread, ctx);
    pthread_join(t, &r);
    report(r == NULL, "another thread has no context until it sets one", "");
    int major = 0, count = 0, version = 0;
    char name[64];
    MUST(cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, 0));
    MUST(cuDeviceGetCount(&count));
    MUST(cuDeviceGetName(name, sizeof name, 0));
    MUST(cuDriverGetVersion(&version));
    report(major >= 8 && count == 1 && strstr(name, "simgpu") && version >= 13000, "device queries", name);
    EXPECT_STATUS("cuDeviceGet out of range", cuDeviceGet(&dev, 5), CUDA_ERROR_INVALID_DEVICE);
    EXPECT_STATUS("cuCtxDestroy of the primary context", cuCtxDestroy(ctx), CUDA_ERROR_INVALID_CONTEXT);
    MUST(cuDevicePrimaryCtxRelease(0));
    *out = ctx;
}

static void kernels(CUmodule *mod_out, CUfunction *fill_out) {
    CUmodule mod;
    CUfunction fill, other;
    EXPECT_STATUS("cuModuleLoadData of something that is not PTX", cuModuleLoadData(&mod, "\x7f" "ELF garbage"),
                  CUDA_ERROR_INVALID_IMAGE);
    MUST(cuModuleLoadData(&mod, ptx));
    EXPECT_STATUS("cuModuleGetFunction of the twin-backed entry", cuModuleGetFunction(&fill, mod, "simgpu_test_fill_u32"),
                  CUDA_SUCCESS);
    EXPECT_STATUS("cuModuleGetFunction of an unknown name", cuModuleGetFunction(&other, mod, "no_such_kernel"),
                  CUDA_ERROR_NOT_FOUND);
    EXPECT_STATUS("cuModuleGetFunction of an entry without a twin",
                  cuModuleGetFunction(&other, mod, "simgpu_test_no_twin"), CUDA_ERROR_NOT_FOUND);
    EXPECT_STATUS("cuModuleGetFunction of a commented-out entry", cuModuleGetFunction(&other, mod, "commented_out"),
                  CUDA_ERROR_NOT_FOUND);

    const uint64_t n = 100;
    CUdeviceptr dst;
    uint32_t host[128];
    MUST(cuMemAlloc(&dst, n * 4));
    MUST(cuMemsetD32(dst, 0xdeadbeef, n));
    MUST(launch_fill(fill, dst, 1000, n, 4, 32, NULL));
    MUST(cuMemcpyDtoH(host, dst, n * 4));
    report(filled(host, 0, n, 1000), "fill kernel: grid 4 x 32 covers 100 entries", "");
    MUST(cuMemsetD32(dst, 0xdeadbeef, n));
    MUST(launch_fill(fill, dst, 7, n, 2, 32, NULL));
    MUST(cuMemcpyDtoH(host, dst, n * 4));
    int tail_untouched = 1;
    for (uint64_t i = 64; i < n; i++)
        tail_untouched &= host[i] == 0xdeadbeef;
    report(filled(host, 0, 64, 7) && tail_untouched, "fill kernel: grid 2 x 32 leaves entries 64.. untouched", "");

    /* Parameters passed as one packed buffer (CU_LAUNCH_PARAM_BUFFER_*). */
    struct {
        uint64_t dst;
        uint32_t value;
        uint32_t pad;
        uint64_t n;
    } packed = {dst, 55, 0, n};
    size_t size = sizeof packed;
    void *extra[] = {CU_LAUNCH_PARAM_BUFFER_POINTER, &packed, CU_LAUNCH_PARAM_BUFFER_SIZE, &size, CU_LAUNCH_PARAM_END};
    MUST(cuLaunchKernel(fill, 1, 1, 1, 128, 1, 1, 0, NULL, NULL, extra));
    MUST(cuMemcpyDtoH(host, dst, n * 4));
    report(filled(host, 0, n, 55), "fill kernel: parameters from a packed buffer", "");
    EXPECT_STATUS("cuLaunchKernel with a zero grid", launch_fill(fill, dst, 1, n, 0, 32, NULL), CUDA_ERROR_INVALID_VALUE);
    EXPECT_STATUS("cuLaunchKernel with 2048 threads per block", launch_fill(fill, dst, 1, n, 1, 2048, NULL),
                  CUDA_ERROR_INVALID_VALUE);
    EXPECT_STATUS("cuLaunchKernel of a bad function handle", launch_fill((CUfunction)&n, dst, 1, n, 1, 32, NULL),
                  CUDA_ERROR_INVALID_HANDLE);

    /* A kernel writing into mapped pinned memory, observed from the host. */
    uint32_t *ring;
    CUdeviceptr ring_dev;
    MUST(cuMemHostAlloc((void **)&ring, n * 4, CU_MEMHOSTALLOC_DEVICEMAP | CU_MEMHOSTALLOC_PORTABLE));
    MUST(cuMemHostGetDevicePointer(&ring_dev, ring, 0));
    memset(ring, 0, n * 4);
    CUstream s;
    CUevent done;
    MUST(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
    MUST(cuEventCreate(&done, CU_EVENT_DISABLE_TIMING));
    MUST(launch_fill(fill, ring_dev, 9, n, 1, 128, s));
    MUST(cuEventRecord(done, s));
    report(ring[5] == 0, "mapped pinned memory: kernel output not there before it ran", "");
    EXPECT_STATUS("mapped pinned memory: event not ready", cuEventQuery(done), CUDA_ERROR_NOT_READY);
    while (cuEventQuery(done) == CUDA_ERROR_NOT_READY)
        ; /* what a background thread polling for completion does */
    report(filled(ring, 0, n, 9), "mapped pinned memory: kernel output there once the event completed", "");
    CUstreamCaptureStatus cs = CU_STREAM_CAPTURE_STATUS_ACTIVE;
    MUST(cuStreamIsCapturing(s, &cs));
    report(cs == CU_STREAM_CAPTURE_STATUS_NONE, "cuStreamIsCapturing on an ordinary stream", "");
    MUST(cuStreamSynchronize(s));
    MUST(cuEventDestroy(done));
    MUST(cuStreamDestroy(s));

    /* Pointer attributes. */
    unsigned int type = 0;
    CUdeviceptr start = 0;
    size_t range = 0;
    int ordinal = -1;
    MUST(cuPointerGetAttribute(&type, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, dst + 40));
    MUST(cuPointerGetAttribute(&start, CU_POINTER_ATTRIBUTE_RANGE_START_ADDR, dst + 40));
    MUST(cuPointerGetAttribute(&range, CU_POINTER_ATTRIBUTE_RANGE_SIZE, dst + 40));
    MUST(cuPointerGetAttribute(&ordinal, CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, dst + 40));
    report(type == CU_MEMORYTYPE_DEVICE && start == dst && range == n * 4 && ordinal == 0,
           "cuPointerGetAttribute of an interior device pointer", "");
    MUST(cuPointerGetAttribute(&type, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, (CUdeviceptr)(uintptr_t)ring));
    void *hostp = NULL;
    MUST(cuPointerGetAttribute(&hostp, CU_POINTER_ATTRIBUTE_HOST_POINTER, (CUdeviceptr)(uintptr_t)ring));
    report(type == CU_MEMORYTYPE_HOST && hostp == ring, "cuPointerGetAttribute of pinned memory", "");
    EXPECT_STATUS("cuPointerGetAttribute of ordinary host memory",
                  cuPointerGetAttribute(&type, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, (CUdeviceptr)(uintptr_t)host),
                  CUDA_ERROR_INVALID_VALUE);
    CUpointer_attribute attrs[2] = {CU_POINTER_ATTRIBUTE_MEMORY_TYPE, CU_POINTER_ATTRIBUTE_CONTEXT};
    CUcontext owner = (CUcontext)1;
    void *data[2] = {&type, &owner};
    type = 99;
    EXPECT_STATUS("cuPointerGetAttributes of ordinary host memory",
                  cuPointerGetAttributes(2, attrs, data, (CUdeviceptr)(uintptr_t)host), CUDA_SUCCESS);
    report(type == 0 && owner == NULL, "cuPointerGetAttributes reports unknown memory as type 0", "");
    MUST(cuMemFreeHost(ring));
    *mod_out = mod;
    *fill_out = fill;
    MUST(cuMemFree(dst));
}

static void lookups(void) {
    void *fn = NULL;
    CUdriverProcAddressQueryResult q;
    MUST(cuGetProcAddress("cuMemAlloc", &fn, 13000, CU_GET_PROC_ADDRESS_DEFAULT, &q));
    report(fn == (void *)cuMemAlloc_v2 && q == CU_GET_PROC_ADDRESS_SUCCESS, "cuGetProcAddress(cuMemAlloc) is _v2", "");
    MUST(cuGetProcAddress("cuStreamGetCaptureInfo", &fn, 12000, CU_GET_PROC_ADDRESS_DEFAULT, &q));
    report(fn == (void *)cuStreamGetCaptureInfo_v2, "cuGetProcAddress picks the variant for the version (12.0: _v2)",
           "");
    MUST(cuGetProcAddress("cuStreamGetCaptureInfo", &fn, 13000, CU_GET_PROC_ADDRESS_DEFAULT, &q));
    report(fn == (void *)cuStreamGetCaptureInfo_v3, "cuGetProcAddress picks the variant for the version (13.0: _v3)",
           "");
    EXPECT_STATUS("cuGetProcAddress of an unknown symbol",
                  cuGetProcAddress("cuNoSuchThing", &fn, 13000, CU_GET_PROC_ADDRESS_DEFAULT, &q), CUDA_ERROR_NOT_FOUND);
    report(q == CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND && fn == NULL, "unknown symbol status", "");
    cuGetProcAddress("cuLaunchHostFunc", &fn, 9000, CU_GET_PROC_ADDRESS_DEFAULT, &q);
    report(q == CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT, "symbol newer than the requested version", "");
    const char *s = NULL;
    MUST(cuGetErrorName(CUDA_ERROR_NOT_FOUND, &s));
    report(s && !strcmp(s, "CUDA_ERROR_NOT_FOUND"), "cuGetErrorName", s);
    MUST(cuGetErrorString(CUDA_ERROR_ILLEGAL_ADDRESS, &s));
    report(s && strstr(s, "illegal memory access"), "cuGetErrorString", s);
    report(!strcmp(cudaGetErrorName(cudaErrorInvalidValue), "cudaErrorInvalidValue"), "cudaGetErrorName", "");
}

/* Must run last: the illegal address is sticky. */
static void illegal_address(CUfunction fill) {
    CUdeviceptr small;
    MUST(cuMemAlloc(&small, 64));
    EXPECT_STATUS("an overrunning kernel launches (the fault shows later)", launch_fill(fill, small, 1, 1000, 8, 128, NULL),
                  CUDA_SUCCESS);
    EXPECT_STATUS("synchronising reports the illegal address", cuCtxSynchronize(), CUDA_ERROR_ILLEGAL_ADDRESS);
    void *p;
    EXPECT_STATUS("the error is sticky: later runtime calls fail", cudaMalloc(&p, 16), cudaErrorIllegalAddress);
    EXPECT_STATUS("cudaGetLastError keeps returning it", cudaGetLastError(), cudaErrorIllegalAddress);
}

int main(void) {
    CUcontext ctx;
    CUmodule mod;
    CUfunction fill;
    contexts(&ctx);
    kernels(&mod, &fill);
    lookups();
    illegal_address(fill);
    EXPECT_STATUS("cuModuleUnload", cuModuleUnload(mod), CUDA_SUCCESS);
    EXPECT_STATUS("cuModuleUnload twice", cuModuleUnload(mod), CUDA_ERROR_INVALID_HANDLE);
    return finish("simgpu_kernel");
}

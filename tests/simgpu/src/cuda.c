/*
 * Simulated GPU: libcuda.so.1, the driver API over the shared state in
 * libsimgpu.so, exported under the symbol names the real libcuda exports
 * (cuMemAlloc_v2, cuStreamDestroy_v2, cuStreamGetCaptureInfo_v3, ...; the
 * older spellings too where their signature is unchanged) and reachable
 * through cuGetProcAddress. Unlike the runtime, nothing here creates or binds
 * a context: calls that need one fail with CUDA_ERROR_INVALID_CONTEXT until the
 * program made one current, exactly what an interposer must cope with.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "handles.h"
#include "simgpu.h"

/* Older exported spellings with the same signature as today's. */
CUresult CUDAAPI cuStreamDestroy(CUstream hStream);
CUresult CUDAAPI cuEventDestroy(CUevent hEvent);
CUresult CUDAAPI cuEventElapsedTime(float *pMilliseconds, CUevent hStart, CUevent hEnd);
CUresult CUDAAPI cuDevicePrimaryCtxRelease(CUdevice dev);
CUresult CUDAAPI cuCtxPushCurrent(CUcontext ctx);
CUresult CUDAAPI cuCtxPopCurrent(CUcontext *pctx);
CUresult CUDAAPI cuStreamGetCaptureInfo(CUstream hStream, CUstreamCaptureStatus *captureStatus_out,
                                        cuuint64_t *id_out);
CUresult CUDAAPI cuGetProcAddress(const char *symbol, void **pfn, int cudaVersion, cuuint64_t flags);

#define NEED_INIT()                      \
    do {                                 \
        if (!sg_is_initialized())        \
            return CUDA_ERROR_NOT_INITIALIZED; \
    } while (0)

#define NEED_CTX()                          \
    do {                                    \
        NEED_INIT();                        \
        if (!sg_current_ctx())              \
            return CUDA_ERROR_INVALID_CONTEXT; \
    } while (0)

static int current_device(void) { return sg_ctx_device(sg_current_ctx()); }

/* ---- errors, versions, devices ---- */

CUresult CUDAAPI cuGetErrorString(CUresult error, const char **pStr) {
    if (!pStr)
        return CUDA_ERROR_INVALID_VALUE;
    *pStr = sg_error_driver_name(error) ? sg_error_text(error) : NULL;
    return *pStr ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

CUresult CUDAAPI cuGetErrorName(CUresult error, const char **pStr) {
    if (!pStr)
        return CUDA_ERROR_INVALID_VALUE;
    *pStr = sg_error_driver_name(error);
    return *pStr ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

CUresult CUDAAPI cuInit(unsigned int Flags) {
    if (Flags != 0)
        return CUDA_ERROR_INVALID_VALUE;
    return sg_init();
}

CUresult CUDAAPI cuDriverGetVersion(int *driverVersion) {
    if (!driverVersion)
        return CUDA_ERROR_INVALID_VALUE;
    *driverVersion = CUDA_VERSION;
    return CUDA_SUCCESS;
}

CUresult CUDAAPI cuDeviceGet(CUdevice *device, int ordinal) {
    NEED_INIT();
    if (!device)
        return CUDA_ERROR_INVALID_VALUE;
    if (ordinal < 0 || ordinal >= sg_device_count())
        return CUDA_ERROR_INVALID_DEVICE;
    *device = ordinal;
    return CUDA_SUCCESS;
}

CUresult CUDAAPI cuDeviceGetCount(int *count) {
    NEED_INIT();
    if (!count)
        return CUDA_ERROR_INVALID_VALUE;
    *count = sg_device_count();
    return CUDA_SUCCESS;
}

static int valid_device(CUdevice dev) { return dev >= 0 && dev < sg_device_count(); }

CUresult CUDAAPI cuDeviceGetName(char *name, int len, CUdevice dev) {
    NEED_INIT();
    if (!name || len <= 0)
        return CUDA_ERROR_INVALID_VALUE;
    if (!valid_device(dev))
        return CUDA_ERROR_INVALID_DEVICE;
    snprintf(name, (size_t)len, "simgpu CPU device %d", dev);
    return CUDA_SUCCESS;
}

CUresult CUDAAPI cuDeviceGetAttribute(int *pi, CUdevice_attribute attrib, CUdevice dev) {
    NEED_INIT();
    if (!pi)
        return CUDA_ERROR_INVALID_VALUE;
    if (!valid_device(dev))
        return CUDA_ERROR_INVALID_DEVICE;
    return sg_device_attribute((int)attrib, pi) ? CUDA_ERROR_INVALID_VALUE : CUDA_SUCCESS;
}

CUresult CUDAAPI cuDeviceTotalMem_v2(size_t *bytes, CUdevice dev) {
    NEED_INIT();
    if (!bytes)
        return CUDA_ERROR_INVALID_VALUE;
    if (!valid_device(dev))
        return CUDA_ERROR_INVALID_DEVICE;
    *bytes = sg_mem_total_bytes();
    return CUDA_SUCCESS;
}

/* ---- contexts ---- */

CUresult CUDAAPI cuDevicePrimaryCtxRetain(CUcontext *pctx, CUdevice dev) {
    NEED_INIT();
    if (!pctx)
        return CUDA_ERROR_INVALID_VALUE;
    if (!valid_device(dev))
        return CUDA_ERROR_INVALID_DEVICE;
    *pctx = sg_primary_ctx(dev);
    return CUDA_SUCCESS;
}

/* Primary contexts live as long as the process; release only checks. */
CUresult CUDAAPI cuDevicePrimaryCtxRelease_v2(CUdevice dev) {
    NEED_INIT();
    return valid_device(dev) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_DEVICE;
}

CUresult CUDAAPI cuDevicePrimaryCtxRelease(CUdevice dev) { return cuDevicePrimaryCtxRelease_v2(dev); }

CUresult CUDAAPI cuDevicePrimaryCtxGetState(CUdevice dev, unsigned int *flags, int *active) {
    NEED_INIT();
    if (!flags || !active)
        return CUDA_ERROR_INVALID_VALUE;
    if (!valid_device(dev))
        return CUDA_ERROR_INVALID_DEVICE;
    *flags = 0;
    *active = 1;
    return CUDA_SUCCESS;
}

CUresult CUDAAPI cuCtxSetCurrent(CUcontext ctx) {
    NEED_INIT();
    if (ctx && !sg_ctx_is_valid(ctx))
        return CUDA_ERROR_INVALID_CONTEXT;
    sg_set_current_ctx(ctx);
    return CUDA_SUCCESS;
}

CUresult CUDAAPI cuCtxGetCurrent(CUcontext *pctx) {
    sg_count(SG_Q_CTX_GET_CURRENT);
    NEED_INIT();
    if (!pctx)
        return CUDA_ERROR_INVALID_VALUE;
    *pctx = sg_current_ctx();
    return CUDA_SUCCESS;
}

CUresult CUDAAPI cuCtxPushCurrent_v2(CUcontext ctx) {
    NEED_INIT();
    if (!ctx || !sg_ctx_is_valid(ctx))
        return CUDA_ERROR_INVALID_CONTEXT;
    return sg_push_ctx(ctx);
}

CUresult CUDAAPI cuCtxPushCurrent(CUcontext ctx) { return cuCtxPushCurrent_v2(ctx); }

CUresult CUDAAPI cuCtxPopCurrent_v2(CUcontext *pctx) {
    NEED_INIT();
    return sg_pop_ctx(pctx);
}

CUresult CUDAAPI cuCtxPopCurrent(CUcontext *pctx) { return cuCtxPopCurrent_v2(pctx); }

CUresult CUDAAPI cuCtxGetDevice(CUdevice *device) {
    sg_count(SG_Q_CTX_GET_DEVICE);
    NEED_CTX();
    if (!device)
        return CUDA_ERROR_INVALID_VALUE;
    *device = current_device();
    return CUDA_SUCCESS;
}

CUresult CUDAAPI cuCtxDestroy_v2(CUcontext ctx) {
    NEED_INIT();
    (void)ctx;
    return CUDA_ERROR_INVALID_CONTEXT;
}

CUresult CUDAAPI cuCtxSynchronize(void) {
    NEED_CTX();
    return sg_ctx_sync();
}

/* ---- modules and kernels ---- */

struct CUfunc_st {
    uint32_t magic;
    const sg_kernel_twin *twin;
};

struct CUmod_st {
    uint32_t magic;
    size_t nfuncs;
    struct CUfunc_st *funcs; /* one per .entry that has a twin */
    char **names;            /* every .entry name, for the not-found message */
    size_t nnames;
};

static int ident_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '$';
}

/* Collects the names after `.entry` in PTX text, skipping comments. Returns
 * the number found, or -1 when memory runs out. */
static long ptx_entries(const char *ptx, char ***names_out) {
    char **names = NULL;
    long n = 0;
    for (const char *p = ptx; *p;) {
        if (p[0] == '/' && p[1] == '/') {
            while (*p && *p != '\n')
                p++;
        } else if (p[0] == '/' && p[1] == '*') {
            const char *end = strstr(p + 2, "*/");
            p = end ? end + 2 : p + strlen(p);
        } else if (!strncmp(p, ".entry", 6) && (p[6] == ' ' || p[6] == '\t' || p[6] == '\n')) {
            p += 6;
            while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
                p++;
            const char *start = p;
            while (ident_char(*p))
                p++;
            if (p > start) {
                char **grown = realloc(names, (size_t)(n + 1) * sizeof *grown);
                char *name = strndup(start, (size_t)(p - start));
                if (!grown || !name) {
                    free(name);
                    free(grown ? grown : names);
                    return -1;
                }
                names = grown;
                names[n++] = name;
            }
        } else {
            p++;
        }
    }
    *names_out = names;
    return n;
}

static void module_free(struct CUmod_st *m) {
    for (size_t i = 0; i < m->nfuncs; i++)
        sg_handle_remove(&m->funcs[i]);
    for (size_t i = 0; i < m->nnames; i++)
        free(m->names[i]);
    free(m->names);
    free(m->funcs);
    free(m);
}

CUresult CUDAAPI cuModuleLoadData(CUmodule *module, const void *image) {
    NEED_CTX();
    if (!module || !image)
        return CUDA_ERROR_INVALID_VALUE;
    const char *text = image;
    /* cubin and fatbin images cannot be run: there is no twin for machine code. */
    if (!strncmp(text, "\x7f" "ELF", 4) || !strstr(text, ".version"))
        return CUDA_ERROR_INVALID_IMAGE;
    struct CUmod_st *m = calloc(1, sizeof *m);
    if (!m)
        return CUDA_ERROR_OUT_OF_MEMORY;
    m->magic = SG_MAGIC_MODULE;
    long n = ptx_entries(text, &m->names);
    if (n < 0) {
        free(m);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    m->nnames = (size_t)n;
    m->funcs = calloc(m->nnames ? m->nnames : 1, sizeof *m->funcs);
    if (!m->funcs) {
        module_free(m);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    for (size_t i = 0; i < m->nnames; i++) {
        const sg_kernel_twin *t = sg_kernel_find(m->names[i]);
        if (!t)
            continue;
        m->funcs[m->nfuncs].magic = SG_MAGIC_FUNCTION;
        m->funcs[m->nfuncs].twin = t;
        if (sg_handle_add(&m->funcs[m->nfuncs]) != 0) {
            module_free(m);
            return CUDA_ERROR_OUT_OF_MEMORY;
        }
        m->nfuncs++;
    }
    if (sg_handle_add(m) != 0) {
        module_free(m);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    *module = m;
    return CUDA_SUCCESS;
}

CUresult CUDAAPI cuModuleLoadDataEx(CUmodule *module, const void *image, unsigned int numOptions,
                                    CUjit_option *options, void **optionValues) {
    if (numOptions && (!options || !optionValues))
        return CUDA_ERROR_INVALID_VALUE;
    return cuModuleLoadData(module, image);
}

CUresult CUDAAPI cuModuleGetFunction(CUfunction *hfunc, CUmodule hmod, const char *name) {
    NEED_CTX();
    if (!hfunc || !name)
        return CUDA_ERROR_INVALID_VALUE;
    if (!hmod || !sg_handle_valid(hmod, SG_MAGIC_MODULE))
        return CUDA_ERROR_INVALID_HANDLE;
    for (size_t i = 0; i < hmod->nfuncs; i++) {
        if (!strcmp(hmod->funcs[i].twin->name, name)) {
            *hfunc = &hmod->funcs[i];
            return CUDA_SUCCESS;
        }
    }
    for (size_t i = 0; i < hmod->nnames; i++)
        if (!strcmp(hmod->names[i], name))
            fprintf(stderr, "simgpu: kernel '%s' has no CPU twin; register one in tests/simgpu/src/kernels.c\n", name);
    return CUDA_ERROR_NOT_FOUND;
}

CUresult CUDAAPI cuModuleUnload(CUmodule hmod) {
    NEED_INIT();
    if (!hmod || !sg_handle_valid(hmod, SG_MAGIC_MODULE))
        return CUDA_ERROR_INVALID_HANDLE;
    sg_handle_remove(hmod);
    module_free(hmod);
    return CUDA_SUCCESS;
}

typedef struct kernel_work {
    const sg_kernel_twin *twin;
    sg_launch launch;
    void *params[SG_MAX_KERNEL_PARAMS];
    unsigned char blob[]; /* the parameter values, copied at launch */
} kernel_work;

static CUresult run_kernel(void *payload, uint64_t call_index) {
    (void)call_index;
    kernel_work *k = payload;
    return k->twin->fn(&k->launch, k->params);
}

static size_t align_up(size_t off, size_t size) {
    size_t a = size >= 8 ? 8 : size ? size : 1;
    return (off + a - 1) / a * a;
}

/* Finds the CU_LAUNCH_PARAM_BUFFER_POINTER/SIZE pair in extra. */
static CUresult parse_extra(void **extra, const void **buf, size_t *size) {
    *buf = NULL;
    *size = 0;
    int have_size = 0;
    for (size_t i = 0; extra[i] != CU_LAUNCH_PARAM_END; i += 2) {
        if (extra[i] == CU_LAUNCH_PARAM_BUFFER_POINTER) {
            *buf = extra[i + 1];
        } else if (extra[i] == CU_LAUNCH_PARAM_BUFFER_SIZE) {
            *size = *(const size_t *)extra[i + 1];
            have_size = 1;
        } else {
            return CUDA_ERROR_INVALID_VALUE;
        }
    }
    return *buf && have_size ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

/* Validates a launch and copies its parameters into a kernel work item. */
static CUresult make_kernel_work(CUfunction f, unsigned gridDimX, unsigned gridDimY, unsigned gridDimZ,
                                 unsigned blockDimX, unsigned blockDimY, unsigned blockDimZ, unsigned sharedMemBytes,
                                 void **kernelParams, void **extra, sg_work *out) {
    if (!f || !sg_handle_valid(f, SG_MAGIC_FUNCTION))
        return CUDA_ERROR_INVALID_HANDLE;
    if (!gridDimX || !gridDimY || !gridDimZ || !blockDimX || !blockDimY || !blockDimZ || blockDimX > 1024 ||
        blockDimY > 1024 || blockDimZ > 64 || gridDimY > 65535 || gridDimZ > 65535 ||
        (unsigned long long)blockDimX * blockDimY * blockDimZ > 1024 || sharedMemBytes > 49152)
        return CUDA_ERROR_INVALID_VALUE;
    const sg_kernel_twin *t = f->twin;
    size_t offsets[SG_MAX_KERNEL_PARAMS], total = 0;
    for (unsigned i = 0; i < t->nparams; i++) {
        total = align_up(total, t->param_size[i]);
        offsets[i] = total;
        total += t->param_size[i];
    }
    if ((kernelParams && extra) || (!kernelParams && !extra && t->nparams))
        return CUDA_ERROR_INVALID_VALUE;
    const void *buf = NULL;
    if (extra) {
        size_t size;
        CUresult r = parse_extra(extra, &buf, &size);
        if (r != CUDA_SUCCESS)
            return r;
        if (size < total)
            return CUDA_ERROR_INVALID_VALUE;
    }
    kernel_work *k = calloc(1, sizeof *k + total);
    if (!k)
        return CUDA_ERROR_OUT_OF_MEMORY;
    k->twin = t;
    k->launch = (sg_launch){{gridDimX, gridDimY, gridDimZ}, {blockDimX, blockDimY, blockDimZ}, sharedMemBytes};
    for (unsigned i = 0; i < t->nparams; i++) {
        const void *src = kernelParams ? kernelParams[i] : (const unsigned char *)buf + offsets[i];
        memcpy(k->blob + offsets[i], src, t->param_size[i]);
        k->params[i] = k->blob + offsets[i];
    }
    *out = (sg_work){run_kernel, free, k, 0};
    return CUDA_SUCCESS;
}

CUresult CUDAAPI cuLaunchKernel(CUfunction f, unsigned int gridDimX, unsigned int gridDimY, unsigned int gridDimZ,
                                unsigned int blockDimX, unsigned int blockDimY, unsigned int blockDimZ,
                                unsigned int sharedMemBytes, CUstream hStream, void **kernelParams, void **extra) {
    NEED_CTX();
    sg_work w;
    CUresult r = make_kernel_work(f, gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, sharedMemBytes,
                                  kernelParams, extra, &w);
    if (r != CUDA_SUCCESS)
        return r;
    return sg_submit(hStream, w);
}

static int is_kernel_work(const sg_work *w) { return w->run == run_kernel; }

CUresult CUDAAPI cuGraphExecKernelNodeSetParams_v2(CUgraphExec hGraphExec, CUgraphNode hNode,
                                                   const CUDA_KERNEL_NODE_PARAMS_v2 *p) {
    NEED_CTX();
    if (!p || p->kern || (p->ctx && p->ctx != sg_current_ctx()))
        return CUDA_ERROR_INVALID_VALUE;
    sg_work w;
    CUresult r = make_kernel_work(p->func, p->gridDimX, p->gridDimY, p->gridDimZ, p->blockDimX, p->blockDimY,
                                  p->blockDimZ, p->sharedMemBytes, p->kernelParams, p->extra, &w);
    if (r != CUDA_SUCCESS)
        return r;
    return sg_graph_exec_set_kernel(hGraphExec, hNode, w, is_kernel_work);
}

CUresult CUDAAPI cuGraphExecKernelNodeSetParams(CUgraphExec hGraphExec, CUgraphNode hNode,
                                                const CUDA_KERNEL_NODE_PARAMS_v1 *p) {
    if (!p)
        return CUDA_ERROR_INVALID_VALUE;
    CUDA_KERNEL_NODE_PARAMS_v2 v2 = {p->func,      p->gridDimX,       p->gridDimY,     p->gridDimZ,
                                     p->blockDimX, p->blockDimY,      p->blockDimZ,    p->sharedMemBytes,
                                     p->kernelParams, p->extra,        NULL,            NULL};
    return cuGraphExecKernelNodeSetParams_v2(hGraphExec, hNode, &v2);
}

CUresult CUDAAPI cuGraphExecUpdate_v2(CUgraphExec hGraphExec, CUgraph hGraph, CUgraphExecUpdateResultInfo *info) {
    NEED_CTX();
    if (!info)
        return CUDA_ERROR_INVALID_VALUE;
    int result;
    CUresult r = sg_graph_exec_update(hGraphExec, hGraph, &result);
    info->result = (CUgraphExecUpdateResult)result;
    info->errorNode = NULL;
    info->errorFromNode = NULL;
    return r;
}

CUresult CUDAAPI cuLaunchHostFunc(CUstream hStream, CUhostFn fn, void *userData) {
    NEED_CTX();
    return sg_host_fn(hStream, fn, userData);
}

/* ---- memory ---- */

CUresult CUDAAPI cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytesize) {
    NEED_CTX();
    if (!dptr || bytesize == 0)
        return CUDA_ERROR_INVALID_VALUE;
    CUresult r = sg_check_unsafe_call();
    if (r != CUDA_SUCCESS)
        return r;
    uintptr_t p;
    r = sg_mem_alloc_device(&p, bytesize, current_device());
    if (r == CUDA_SUCCESS)
        *dptr = p;
    return r;
}

CUresult CUDAAPI cuMemFree_v2(CUdeviceptr dptr) {
    NEED_CTX();
    if (!dptr)
        return CUDA_SUCCESS;
    CUresult r = sg_ctx_sync();
    if (r != CUDA_SUCCESS)
        return r;
    return sg_mem_free((uintptr_t)dptr, SG_MEM_DEVICE);
}

CUresult CUDAAPI cuMemGetInfo_v2(size_t *free, size_t *total) {
    NEED_CTX();
    if (!free || !total)
        return CUDA_ERROR_INVALID_VALUE;
    *total = sg_mem_total_bytes();
    *free = *total - sg_mem_device_bytes(current_device());
    return CUDA_SUCCESS;
}

CUresult CUDAAPI cuMemHostAlloc(void **pp, size_t bytesize, unsigned int Flags) {
    NEED_CTX();
    if (!pp || bytesize == 0 ||
        Flags > (CU_MEMHOSTALLOC_PORTABLE | CU_MEMHOSTALLOC_DEVICEMAP | CU_MEMHOSTALLOC_WRITECOMBINED))
        return CUDA_ERROR_INVALID_VALUE;
    CUresult r = sg_check_unsafe_call();
    if (r != CUDA_SUCCESS)
        return r;
    return sg_mem_alloc_pinned(pp, bytesize, Flags, current_device());
}

CUresult CUDAAPI cuMemAllocHost_v2(void **pp, size_t bytesize) { return cuMemHostAlloc(pp, bytesize, 0); }

CUresult CUDAAPI cuMemHostGetDevicePointer_v2(CUdeviceptr *pdptr, void *p, unsigned int Flags) {
    NEED_CTX();
    sg_region r;
    if (!pdptr || Flags != 0 || !sg_mem_find((uintptr_t)p, &r) || r.kind != SG_MEM_PINNED)
        return CUDA_ERROR_INVALID_VALUE;
    /* Unified addressing: the device sees pinned memory at its host address. */
    *pdptr = (CUdeviceptr)(uintptr_t)p;
    return CUDA_SUCCESS;
}

CUresult CUDAAPI cuMemFreeHost(void *p) {
    NEED_CTX();
    CUresult r = sg_ctx_sync();
    if (r != CUDA_SUCCESS)
        return r;
    return sg_mem_free((uintptr_t)p, SG_MEM_PINNED);
}

/* Checks that p is (or is not) memory the device can address. */
static int device_side(CUdeviceptr p) { return sg_mem_find((uintptr_t)p, NULL); }

static int plain_device_memory(const void *p) {
    sg_region r;
    return sg_mem_find((uintptr_t)p, &r) && r.kind == SG_MEM_DEVICE;
}

static CUresult copy(CUdeviceptr dst, int dst_dev, CUdeviceptr src, int src_dev, size_t n, CUstream s, int sync) {
    NEED_CTX();
    if ((dst_dev && !device_side(dst)) || (!dst_dev && plain_device_memory((void *)(uintptr_t)dst)) ||
        (src_dev && !device_side(src)) || (!src_dev && plain_device_memory((void *)(uintptr_t)src)))
        return CUDA_ERROR_INVALID_VALUE;
    return sg_copy((void *)(uintptr_t)dst, (const void *)(uintptr_t)src, n, s, sync);
}

CUresult CUDAAPI cuMemcpyHtoD_v2(CUdeviceptr dstDevice, const void *srcHost, size_t ByteCount) {
    return copy(dstDevice, 1, (CUdeviceptr)(uintptr_t)srcHost, 0, ByteCount, NULL, 1);
}

CUresult CUDAAPI cuMemcpyDtoH_v2(void *dstHost, CUdeviceptr srcDevice, size_t ByteCount) {
    return copy((CUdeviceptr)(uintptr_t)dstHost, 0, srcDevice, 1, ByteCount, NULL, 1);
}

CUresult CUDAAPI cuMemcpyDtoD_v2(CUdeviceptr dstDevice, CUdeviceptr srcDevice, size_t ByteCount) {
    return copy(dstDevice, 1, srcDevice, 1, ByteCount, NULL, 1);
}

CUresult CUDAAPI cuMemcpyHtoDAsync_v2(CUdeviceptr dstDevice, const void *srcHost, size_t ByteCount,
                                      CUstream hStream) {
    return copy(dstDevice, 1, (CUdeviceptr)(uintptr_t)srcHost, 0, ByteCount, hStream, 0);
}

CUresult CUDAAPI cuMemcpyDtoHAsync_v2(void *dstHost, CUdeviceptr srcDevice, size_t ByteCount, CUstream hStream) {
    return copy((CUdeviceptr)(uintptr_t)dstHost, 0, srcDevice, 1, ByteCount, hStream, 0);
}

CUresult CUDAAPI cuMemcpyDtoDAsync_v2(CUdeviceptr dstDevice, CUdeviceptr srcDevice, size_t ByteCount,
                                      CUstream hStream) {
    return copy(dstDevice, 1, srcDevice, 1, ByteCount, hStream, 0);
}

CUresult CUDAAPI cuMemsetD8_v2(CUdeviceptr dstDevice, unsigned char uc, size_t N) {
    NEED_CTX();
    return sg_memset((uintptr_t)dstDevice, &uc, 1, N, NULL, 1);
}

CUresult CUDAAPI cuMemsetD8Async(CUdeviceptr dstDevice, unsigned char uc, size_t N, CUstream hStream) {
    NEED_CTX();
    return sg_memset((uintptr_t)dstDevice, &uc, 1, N, hStream, 0);
}

CUresult CUDAAPI cuMemsetD32_v2(CUdeviceptr dstDevice, unsigned int ui, size_t N) {
    NEED_CTX();
    return sg_memset((uintptr_t)dstDevice, &ui, 4, N, NULL, 1);
}

CUresult CUDAAPI cuMemsetD32Async(CUdeviceptr dstDevice, unsigned int ui, size_t N, CUstream hStream) {
    NEED_CTX();
    return sg_memset((uintptr_t)dstDevice, &ui, 4, N, hStream, 0);
}

/* Writes one attribute of a known allocation. Boolean attributes are written
 * as one byte, so a caller's bool is never overrun. */
static CUresult pointer_attribute(void *data, CUpointer_attribute a, CUdeviceptr ptr, const sg_region *r) {
    int dev = r->kind == SG_MEM_DEVICE;
    switch (a) {
    case CU_POINTER_ATTRIBUTE_CONTEXT:
        *(CUcontext *)data = sg_primary_ctx(r->device);
        break;
    case CU_POINTER_ATTRIBUTE_MEMORY_TYPE:
        *(unsigned int *)data = dev ? CU_MEMORYTYPE_DEVICE : CU_MEMORYTYPE_HOST;
        break;
    case CU_POINTER_ATTRIBUTE_DEVICE_POINTER:
        *(CUdeviceptr *)data = ptr;
        break;
    case CU_POINTER_ATTRIBUTE_HOST_POINTER:
        if (dev)
            return CUDA_ERROR_INVALID_VALUE;
        *(void **)data = (void *)(uintptr_t)ptr;
        break;
    case CU_POINTER_ATTRIBUTE_SYNC_MEMOPS:
    case CU_POINTER_ATTRIBUTE_MAPPED:
        *(unsigned char *)data = 1;
        break;
    case CU_POINTER_ATTRIBUTE_IS_MANAGED:
    case CU_POINTER_ATTRIBUTE_IS_GPU_DIRECT_RDMA_CAPABLE:
        *(unsigned char *)data = 0;
        break;
    case CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE:
        *(unsigned char *)data = (unsigned char)dev;
        break;
    case CU_POINTER_ATTRIBUTE_BUFFER_ID:
    case CU_POINTER_ATTRIBUTE_MEMORY_BLOCK_ID:
        *(unsigned long long *)data = r->id;
        break;
    case CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL:
        *(int *)data = r->device;
        break;
    case CU_POINTER_ATTRIBUTE_RANGE_START_ADDR:
    case CU_POINTER_ATTRIBUTE_MAPPING_BASE_ADDR:
        *(CUdeviceptr *)data = r->base;
        break;
    case CU_POINTER_ATTRIBUTE_RANGE_SIZE:
    case CU_POINTER_ATTRIBUTE_MAPPING_SIZE:
        *(size_t *)data = r->size;
        break;
    case CU_POINTER_ATTRIBUTE_ACCESS_FLAGS:
        *(int *)data = 3; /* CU_POINTER_ATTRIBUTE_ACCESS_FLAG_READWRITE */
        break;
    case CU_POINTER_ATTRIBUTE_ALLOWED_HANDLE_TYPES:
        *(unsigned long long *)data = 0;
        break;
    case CU_POINTER_ATTRIBUTE_MEMPOOL_HANDLE:
        *(void **)data = NULL;
        break;
    default:
        return CUDA_ERROR_INVALID_VALUE;
    }
    return CUDA_SUCCESS;
}

CUresult CUDAAPI cuPointerGetAttribute(void *data, CUpointer_attribute attribute, CUdeviceptr ptr) {
    NEED_INIT();
    sg_region r;
    if (!data || !sg_mem_find((uintptr_t)ptr, &r))
        return CUDA_ERROR_INVALID_VALUE;
    return pointer_attribute(data, attribute, ptr, &r);
}

/* Unlike the singular form, unknown pointers are not an error here: every
 * attribute reads as zero (memory type 0, no context). */
CUresult CUDAAPI cuPointerGetAttributes(unsigned int numAttributes, CUpointer_attribute *attributes, void **data,
                                        CUdeviceptr ptr) {
    NEED_INIT();
    if (!numAttributes || !attributes || !data)
        return CUDA_ERROR_INVALID_VALUE;
    sg_region r;
    int known = sg_mem_find((uintptr_t)ptr, &r);
    for (unsigned i = 0; i < numAttributes; i++) {
        if (!data[i])
            return CUDA_ERROR_INVALID_VALUE;
        if (known) {
            CUresult e = pointer_attribute(data[i], attributes[i], ptr, &r);
            if (e != CUDA_SUCCESS)
                return e;
            continue;
        }
        sg_region none = {0, 0, NULL, 0, 0, 0, 0};
        CUresult e = pointer_attribute(data[i], attributes[i], ptr, &none);
        if (e != CUDA_SUCCESS)
            return e;
        if (attributes[i] == CU_POINTER_ATTRIBUTE_MEMORY_TYPE)
            *(unsigned int *)data[i] = 0;
        else if (attributes[i] == CU_POINTER_ATTRIBUTE_CONTEXT)
            *(CUcontext *)data[i] = NULL;
        else if (attributes[i] == CU_POINTER_ATTRIBUTE_DEVICE_POINTER)
            *(CUdeviceptr *)data[i] = 0;
        else if (attributes[i] == CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL)
            *(int *)data[i] = -1;
        else if (attributes[i] == CU_POINTER_ATTRIBUTE_MAPPED || attributes[i] == CU_POINTER_ATTRIBUTE_SYNC_MEMOPS)
            *(unsigned char *)data[i] = 0;
    }
    return CUDA_SUCCESS;
}

/* ---- streams ---- */

CUresult CUDAAPI cuStreamCreate(CUstream *phStream, unsigned int Flags) {
    NEED_CTX();
    return sg_stream_create(phStream, Flags);
}

CUresult CUDAAPI cuStreamDestroy_v2(CUstream hStream) {
    NEED_INIT();
    return sg_stream_destroy(hStream);
}

CUresult CUDAAPI cuStreamDestroy(CUstream hStream) { return cuStreamDestroy_v2(hStream); }

CUresult CUDAAPI cuStreamGetFlags(CUstream hStream, unsigned int *flags) {
    NEED_INIT();
    return sg_stream_flags(hStream, flags);
}

CUresult CUDAAPI cuStreamGetCtx(CUstream hStream, CUcontext *pctx) {
    NEED_INIT();
    return sg_stream_ctx(hStream, pctx);
}

CUresult CUDAAPI cuStreamWaitEvent(CUstream hStream, CUevent hEvent, unsigned int Flags) {
    NEED_INIT();
    if (Flags & ~1u)
        return CUDA_ERROR_INVALID_VALUE;
    return sg_stream_wait_event(hStream, hEvent);
}

CUresult CUDAAPI cuStreamQuery(CUstream hStream) {
    NEED_INIT();
    return sg_stream_query(hStream);
}

CUresult CUDAAPI cuStreamSynchronize(CUstream hStream) {
    NEED_INIT();
    return sg_stream_sync(hStream);
}

CUresult CUDAAPI cuStreamBeginCapture_v2(CUstream hStream, CUstreamCaptureMode mode) {
    NEED_INIT();
    return sg_capture_begin(hStream, (int)mode);
}

CUresult CUDAAPI cuStreamEndCapture(CUstream hStream, CUgraph *phGraph) {
    NEED_INIT();
    return sg_capture_end(hStream, phGraph);
}

CUresult CUDAAPI cuStreamIsCapturing(CUstream hStream, CUstreamCaptureStatus *captureStatus) {
    sg_count(SG_Q_STREAM_IS_CAPTURING);
    NEED_INIT();
    if (!captureStatus)
        return CUDA_ERROR_INVALID_VALUE;
    int status;
    CUresult r = sg_capture_info(hStream, &status, NULL, NULL, NULL, NULL);
    if (r == CUDA_SUCCESS)
        *captureStatus = (CUstreamCaptureStatus)status;
    return r;
}

CUresult CUDAAPI cuStreamGetCaptureInfo_v3(CUstream hStream, CUstreamCaptureStatus *captureStatus_out,
                                           cuuint64_t *id_out, CUgraph *graph_out,
                                           const CUgraphNode **dependencies_out, const CUgraphEdgeData **edgeData_out,
                                           size_t *numDependencies_out) {
    sg_count(SG_Q_STREAM_CAPTURE_INFO);
    NEED_INIT();
    if (!captureStatus_out)
        return CUDA_ERROR_INVALID_VALUE;
    int status;
    uint64_t id;
    CUresult r = sg_capture_info(hStream, &status, &id, graph_out, dependencies_out, numDependencies_out);
    if (r != CUDA_SUCCESS)
        return r;
    *captureStatus_out = (CUstreamCaptureStatus)status;
    if (id_out)
        *id_out = id;
    if (edgeData_out)
        *edgeData_out = NULL; /* all dependencies are full (default) edges */
    return CUDA_SUCCESS;
}

CUresult CUDAAPI cuStreamGetCaptureInfo_v2(CUstream hStream, CUstreamCaptureStatus *captureStatus_out,
                                           cuuint64_t *id_out, CUgraph *graph_out,
                                           const CUgraphNode **dependencies_out, size_t *numDependencies_out) {
    return cuStreamGetCaptureInfo_v3(hStream, captureStatus_out, id_out, graph_out, dependencies_out, NULL,
                                     numDependencies_out);
}

CUresult CUDAAPI cuStreamGetCaptureInfo(CUstream hStream, CUstreamCaptureStatus *captureStatus_out,
                                        cuuint64_t *id_out) {
    return cuStreamGetCaptureInfo_v3(hStream, captureStatus_out, id_out, NULL, NULL, NULL, NULL);
}

/* ---- events ---- */

CUresult CUDAAPI cuEventCreate(CUevent *phEvent, unsigned int Flags) {
    NEED_CTX();
    return sg_event_create(phEvent, Flags);
}

CUresult CUDAAPI cuEventRecord(CUevent hEvent, CUstream hStream) {
    NEED_INIT();
    return sg_event_record(hEvent, hStream);
}

CUresult CUDAAPI cuEventRecordWithFlags(CUevent hEvent, CUstream hStream, unsigned int flags) {
    NEED_INIT();
    if (flags & ~1u)
        return CUDA_ERROR_INVALID_VALUE;
    return sg_event_record(hEvent, hStream);
}

CUresult CUDAAPI cuEventQuery(CUevent hEvent) {
    NEED_INIT();
    return sg_event_query(hEvent);
}

CUresult CUDAAPI cuEventSynchronize(CUevent hEvent) {
    NEED_INIT();
    return sg_event_sync(hEvent);
}

CUresult CUDAAPI cuEventDestroy_v2(CUevent hEvent) {
    NEED_INIT();
    return sg_event_destroy(hEvent);
}

CUresult CUDAAPI cuEventDestroy(CUevent hEvent) { return cuEventDestroy_v2(hEvent); }

CUresult CUDAAPI cuEventElapsedTime_v2(float *pMilliseconds, CUevent hStart, CUevent hEnd) {
    NEED_INIT();
    return sg_event_elapsed(pMilliseconds, hStart, hEnd);
}

CUresult CUDAAPI cuEventElapsedTime(float *pMilliseconds, CUevent hStart, CUevent hEnd) {
    return cuEventElapsedTime_v2(pMilliseconds, hStart, hEnd);
}

/* ---- graphs ---- */

CUresult CUDAAPI cuGraphInstantiateWithFlags(CUgraphExec *phGraphExec, CUgraph hGraph, unsigned long long flags) {
    NEED_INIT();
    if (flags & ~0xfull)
        return CUDA_ERROR_INVALID_VALUE;
    return sg_graph_instantiate(phGraphExec, hGraph);
}

CUresult CUDAAPI cuGraphLaunch(CUgraphExec hGraphExec, CUstream hStream) {
    NEED_INIT();
    return sg_graph_launch(hGraphExec, hStream);
}

CUresult CUDAAPI cuGraphExecDestroy(CUgraphExec hGraphExec) {
    NEED_INIT();
    return sg_graph_exec_destroy(hGraphExec);
}

CUresult CUDAAPI cuGraphDestroy(CUgraph hGraph) {
    NEED_INIT();
    return sg_graph_destroy(hGraph);
}

/* ---- cuGetProcAddress ---- */

typedef struct proc {
    const char *name; /* the base name callers ask for */
    int since;        /* the CUDA version from which this variant is returned */
    void *fn;
} proc;

#define P(name, since, fn) {name, since, (void *)fn}

/* For a name with several variants, the one with the highest `since` not
 * above the requested version is returned, as the real driver does. */
static const proc procs[] = {
    P("cuGetErrorString", 6000, cuGetErrorString),
    P("cuGetErrorName", 6000, cuGetErrorName),
    P("cuInit", 2000, cuInit),
    P("cuDriverGetVersion", 2020, cuDriverGetVersion),
    P("cuDeviceGet", 2000, cuDeviceGet),
    P("cuDeviceGetCount", 2000, cuDeviceGetCount),
    P("cuDeviceGetName", 2000, cuDeviceGetName),
    P("cuDeviceGetAttribute", 2000, cuDeviceGetAttribute),
    P("cuDeviceTotalMem", 3020, cuDeviceTotalMem_v2),
    P("cuDevicePrimaryCtxRetain", 7000, cuDevicePrimaryCtxRetain),
    P("cuDevicePrimaryCtxRelease", 7000, cuDevicePrimaryCtxRelease),
    P("cuDevicePrimaryCtxRelease", 11000, cuDevicePrimaryCtxRelease_v2),
    P("cuDevicePrimaryCtxGetState", 7000, cuDevicePrimaryCtxGetState),
    P("cuCtxSetCurrent", 4000, cuCtxSetCurrent),
    P("cuCtxGetCurrent", 4000, cuCtxGetCurrent),
    P("cuCtxPushCurrent", 4000, cuCtxPushCurrent_v2),
    P("cuCtxPopCurrent", 4000, cuCtxPopCurrent_v2),
    P("cuCtxGetDevice", 2000, cuCtxGetDevice),
    P("cuCtxSynchronize", 2000, cuCtxSynchronize),
    P("cuCtxDestroy", 4000, cuCtxDestroy_v2),
    P("cuModuleLoadData", 2000, cuModuleLoadData),
    P("cuModuleLoadDataEx", 2010, cuModuleLoadDataEx),
    P("cuModuleGetFunction", 2000, cuModuleGetFunction),
    P("cuModuleUnload", 2000, cuModuleUnload),
    P("cuLaunchKernel", 4000, cuLaunchKernel),
    P("cuLaunchHostFunc", 10000, cuLaunchHostFunc),
    P("cuMemAlloc", 3020, cuMemAlloc_v2),
    P("cuMemFree", 3020, cuMemFree_v2),
    P("cuMemGetInfo", 3020, cuMemGetInfo_v2),
    P("cuMemAllocHost", 3020, cuMemAllocHost_v2),
    P("cuMemHostAlloc", 2020, cuMemHostAlloc),
    P("cuMemHostGetDevicePointer", 3020, cuMemHostGetDevicePointer_v2),
    P("cuMemFreeHost", 2000, cuMemFreeHost),
    P("cuMemcpyHtoD", 3020, cuMemcpyHtoD_v2),
    P("cuMemcpyDtoH", 3020, cuMemcpyDtoH_v2),
    P("cuMemcpyDtoD", 3020, cuMemcpyDtoD_v2),
    P("cuMemcpyHtoDAsync", 3020, cuMemcpyHtoDAsync_v2),
    P("cuMemcpyDtoHAsync", 3020, cuMemcpyDtoHAsync_v2),
    P("cuMemcpyDtoDAsync", 3020, cuMemcpyDtoDAsync_v2),
    P("cuMemsetD8", 3020, cuMemsetD8_v2),
    P("cuMemsetD8Async", 3020, cuMemsetD8Async),
    P("cuMemsetD32", 3020, cuMemsetD32_v2),
    P("cuMemsetD32Async", 3020, cuMemsetD32Async),
    P("cuPointerGetAttribute", 4000, cuPointerGetAttribute),
    P("cuPointerGetAttributes", 7000, cuPointerGetAttributes),
    P("cuStreamCreate", 2000, cuStreamCreate),
    P("cuStreamDestroy", 2000, cuStreamDestroy),
    P("cuStreamDestroy", 4000, cuStreamDestroy_v2),
    P("cuStreamGetFlags", 5050, cuStreamGetFlags),
    P("cuStreamWaitEvent", 3020, cuStreamWaitEvent),
    P("cuStreamGetCtx", 9020, cuStreamGetCtx),
    P("cuStreamQuery", 2000, cuStreamQuery),
    P("cuStreamSynchronize", 2000, cuStreamSynchronize),
    P("cuStreamBeginCapture", 10010, cuStreamBeginCapture_v2),
    P("cuStreamEndCapture", 10000, cuStreamEndCapture),
    P("cuStreamIsCapturing", 10000, cuStreamIsCapturing),
    P("cuStreamGetCaptureInfo", 10010, cuStreamGetCaptureInfo),
    P("cuStreamGetCaptureInfo", 11030, cuStreamGetCaptureInfo_v2),
    P("cuStreamGetCaptureInfo", 12030, cuStreamGetCaptureInfo_v3),
    P("cuEventCreate", 2000, cuEventCreate),
    P("cuEventRecord", 2000, cuEventRecord),
    P("cuEventRecordWithFlags", 11010, cuEventRecordWithFlags),
    P("cuEventQuery", 2000, cuEventQuery),
    P("cuEventSynchronize", 2000, cuEventSynchronize),
    P("cuEventDestroy", 2000, cuEventDestroy),
    P("cuEventDestroy", 4000, cuEventDestroy_v2),
    P("cuEventElapsedTime", 2000, cuEventElapsedTime),
    P("cuEventElapsedTime", 12080, cuEventElapsedTime_v2),
    P("cuGraphInstantiateWithFlags", 11040, cuGraphInstantiateWithFlags),
    P("cuGraphInstantiate", 12000, cuGraphInstantiateWithFlags),
    P("cuGraphLaunch", 10000, cuGraphLaunch),
    P("cuGraphExecKernelNodeSetParams", 10010, cuGraphExecKernelNodeSetParams),
    P("cuGraphExecKernelNodeSetParams", 12000, cuGraphExecKernelNodeSetParams_v2),
    P("cuGraphExecUpdate", 12000, cuGraphExecUpdate_v2),
    P("cuGraphExecDestroy", 10000, cuGraphExecDestroy),
    P("cuGraphDestroy", 10000, cuGraphDestroy),
    P("cuGetProcAddress", 11030, cuGetProcAddress),
    P("cuGetProcAddress", 12000, cuGetProcAddress_v2),
};

CUresult CUDAAPI cuGetProcAddress_v2(const char *symbol, void **pfn, int cudaVersion, cuuint64_t flags,
                                     CUdriverProcAddressQueryResult *symbolStatus) {
    if (!symbol || !pfn || flags > 3)
        return CUDA_ERROR_INVALID_VALUE;
    const proc *best = NULL;
    int named = 0;
    for (size_t i = 0; i < sizeof procs / sizeof procs[0]; i++) {
        if (strcmp(procs[i].name, symbol))
            continue;
        named = 1;
        if (procs[i].since <= cudaVersion && (!best || procs[i].since > best->since))
            best = &procs[i];
    }
    *pfn = best ? best->fn : NULL;
    if (symbolStatus)
        *symbolStatus = best    ? CU_GET_PROC_ADDRESS_SUCCESS
                        : named ? CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT
                                : CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
    return best ? CUDA_SUCCESS : CUDA_ERROR_NOT_FOUND;
}

CUresult CUDAAPI cuGetProcAddress(const char *symbol, void **pfn, int cudaVersion, cuuint64_t flags) {
    return cuGetProcAddress_v2(symbol, pfn, cudaVersion, flags, NULL);
}

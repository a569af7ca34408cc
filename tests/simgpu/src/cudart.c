/*
 * Simulated GPU: libcudart.so.13, the runtime API as a thin layer over the
 * shared state in libsimgpu.so. What the runtime adds to the driver: implicit
 * initialisation and primary-context binding on first use, the per-thread
 * "last error", memcpy kinds, and runtime error numbering (equal to the
 * driver's for every error returned here).
 */
#include <stdint.h>

#include "cuda_runtime_api.h"
#include "simgpu.h"

static __thread cudaError_t last_error;

/* Records a failure as the thread's last error and returns it. */
static cudaError_t ret(CUresult r) {
    if (r != CUDA_SUCCESS)
        last_error = (cudaError_t)r;
    return (cudaError_t)r;
}

/* Makes sure a context is current (as the runtime does on first use) and
 * reports a device fault left by earlier work: it is sticky, every later call
 * fails with it. */
static CUresult runtime_ctx(void) {
    struct CUctx_st *ctx;
    CUresult r = sg_runtime_ctx(&ctx);
    if (r != CUDA_SUCCESS)
        return r;
    return sg_sticky_error(sg_ctx_device(ctx));
}

#define ENTER()                          \
    do {                                 \
        CUresult enter_ = runtime_ctx(); \
        if (enter_ != CUDA_SUCCESS)      \
            return ret(enter_);          \
    } while (0)

cudaError_t cudaGetLastError(void) {
    struct CUctx_st *ctx = sg_current_ctx();
    CUresult sticky = ctx ? sg_sticky_error(sg_ctx_device(ctx)) : CUDA_SUCCESS;
    cudaError_t e = last_error;
    last_error = cudaSuccess;
    return sticky ? (cudaError_t)sticky : e;
}

cudaError_t cudaPeekAtLastError(void) {
    struct CUctx_st *ctx = sg_current_ctx();
    CUresult sticky = ctx ? sg_sticky_error(sg_ctx_device(ctx)) : CUDA_SUCCESS;
    return sticky ? (cudaError_t)sticky : last_error;
}

const char *cudaGetErrorName(cudaError_t error) { return sg_error_runtime_name(error); }

const char *cudaGetErrorString(cudaError_t error) {
    const char *t = sg_error_text(error);
    return t ? t : "unrecognized error code";
}

cudaError_t cudaDriverGetVersion(int *driverVersion) {
    if (!driverVersion)
        return ret(CUDA_ERROR_INVALID_VALUE);
    *driverVersion = CUDA_VERSION;
    return cudaSuccess;
}

cudaError_t cudaRuntimeGetVersion(int *runtimeVersion) {
    if (!runtimeVersion)
        return ret(CUDA_ERROR_INVALID_VALUE);
    *runtimeVersion = CUDART_VERSION;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceCount(int *count) {
    if (!count)
        return ret(CUDA_ERROR_INVALID_VALUE);
    CUresult r = sg_init();
    if (r != CUDA_SUCCESS)
        return ret(r);
    *count = sg_device_count();
    return cudaSuccess;
}

cudaError_t cudaGetDevice(int *device) {
    if (!device)
        return ret(CUDA_ERROR_INVALID_VALUE);
    struct CUctx_st *ctx;
    CUresult r = sg_runtime_ctx(&ctx);
    if (r != CUDA_SUCCESS)
        return ret(r);
    *device = sg_ctx_device(ctx);
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) { return ret(sg_runtime_set_device(device)); }

cudaError_t cudaDeviceGetAttribute(int *value, enum cudaDeviceAttr attr, int device) {
    CUresult r = sg_init();
    if (r != CUDA_SUCCESS)
        return ret(r);
    if (!value)
        return ret(CUDA_ERROR_INVALID_VALUE);
    if (device < 0 || device >= sg_device_count())
        return ret(CUDA_ERROR_INVALID_DEVICE);
    return ret(sg_device_attribute((int)attr, value) ? CUDA_ERROR_INVALID_VALUE : CUDA_SUCCESS);
}

cudaError_t cudaDeviceSynchronize(void) {
    ENTER();
    return ret(sg_ctx_sync());
}

/* ---- memory ---- */

cudaError_t cudaMalloc(void **devPtr, size_t size) {
    ENTER();
    if (!devPtr)
        return ret(CUDA_ERROR_INVALID_VALUE);
    CUresult r = sg_check_unsafe_call();
    if (r != CUDA_SUCCESS)
        return ret(r);
    uintptr_t p;
    r = sg_mem_alloc_device(&p, size, sg_ctx_device(sg_current_ctx()));
    if (r == CUDA_SUCCESS)
        *devPtr = (void *)p;
    return ret(r);
}

cudaError_t cudaFree(void *devPtr) {
    ENTER();
    if (!devPtr)
        return cudaSuccess;
    /* cudaFree synchronises the device, so no queued work still uses the memory. */
    CUresult r = sg_ctx_sync();
    if (r != CUDA_SUCCESS)
        return ret(r);
    return ret(sg_mem_free((uintptr_t)devPtr, SG_MEM_DEVICE));
}

cudaError_t cudaHostAlloc(void **pHost, size_t size, unsigned int flags) {
    ENTER();
    if (!pHost || flags > (cudaHostAllocPortable | cudaHostAllocMapped | cudaHostAllocWriteCombined))
        return ret(CUDA_ERROR_INVALID_VALUE);
    CUresult r = sg_check_unsafe_call();
    if (r != CUDA_SUCCESS)
        return ret(r);
    return ret(sg_mem_alloc_pinned(pHost, size, flags, sg_ctx_device(sg_current_ctx())));
}

cudaError_t cudaMallocHost(void **ptr, size_t size) { return cudaHostAlloc(ptr, size, cudaHostAllocDefault); }

cudaError_t cudaFreeHost(void *ptr) {
    ENTER();
    if (!ptr)
        return cudaSuccess;
    CUresult r = sg_ctx_sync();
    if (r != CUDA_SUCCESS)
        return ret(r);
    return ret(sg_mem_free((uintptr_t)ptr, SG_MEM_PINNED));
}

cudaError_t cudaHostGetDevicePointer(void **pDevice, void *pHost, unsigned int flags) {
    ENTER();
    sg_region r;
    if (!pDevice || flags != 0 || !sg_mem_find((uintptr_t)pHost, &r) || r.kind != SG_MEM_PINNED)
        return ret(CUDA_ERROR_INVALID_VALUE);
    /* Unified addressing: pinned memory has the same address on both sides. */
    *pDevice = pHost;
    return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t *free, size_t *total) {
    ENTER();
    if (!free || !total)
        return ret(CUDA_ERROR_INVALID_VALUE);
    *total = sg_mem_total_bytes();
    *free = *total - sg_mem_device_bytes(sg_ctx_device(sg_current_ctx()));
    return cudaSuccess;
}

cudaError_t cudaPointerGetAttributes(struct cudaPointerAttributes *attributes, const void *ptr) {
    ENTER();
    if (!attributes)
        return ret(CUDA_ERROR_INVALID_VALUE);
    sg_region r;
    struct cudaPointerAttributes a = {cudaMemoryTypeUnregistered, -2, NULL, NULL, 0, {0}};
    if (!sg_mem_find((uintptr_t)ptr, &r)) {
        a.hostPointer = (void *)ptr;
    } else if (r.kind == SG_MEM_DEVICE) {
        a.type = cudaMemoryTypeDevice;
        a.device = r.device;
        a.devicePointer = (void *)ptr;
    } else {
        a.type = cudaMemoryTypeHost;
        a.device = r.device;
        a.devicePointer = (void *)ptr;
        a.hostPointer = (void *)ptr;
    }
    *attributes = a;
    return cudaSuccess;
}

/* Checks that the pointers are on the sides the copy kind says. */
static CUresult check_kind(const void *dst, const void *src, enum cudaMemcpyKind kind) {
    sg_region r;
    int dk = sg_mem_find((uintptr_t)dst, &r) ? r.kind : 0;
    int sk = sg_mem_find((uintptr_t)src, &r) ? r.kind : 0;
    int ok;
    switch (kind) {
    case cudaMemcpyHostToHost:
        ok = dk != SG_MEM_DEVICE && sk != SG_MEM_DEVICE;
        break;
    case cudaMemcpyHostToDevice:
        ok = dk != 0 && sk != SG_MEM_DEVICE;
        break;
    case cudaMemcpyDeviceToHost:
        ok = sk != 0 && dk != SG_MEM_DEVICE;
        break;
    case cudaMemcpyDeviceToDevice:
        ok = dk != 0 && sk != 0;
        break;
    case cudaMemcpyDefault:
        ok = 1;
        break;
    default:
        return (CUresult)cudaErrorInvalidMemcpyDirection;
    }
    return ok ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t count, enum cudaMemcpyKind kind) {
    ENTER();
    CUresult r = check_kind(dst, src, kind);
    if (r == CUDA_SUCCESS)
        r = sg_copy(dst, src, count, NULL, 1);
    return ret(r);
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t count, enum cudaMemcpyKind kind,
                            cudaStream_t stream) {
    ENTER();
    CUresult r = check_kind(dst, src, kind);
    if (r == CUDA_SUCCESS)
        r = sg_copy(dst, src, count, stream, 0);
    return ret(r);
}

/* cudaMemset is asynchronous with respect to the host for device memory, as
 * documented; it is ordered on the legacy stream. */
cudaError_t cudaMemset(void *devPtr, int value, size_t count) {
    ENTER();
    unsigned char byte = (unsigned char)value;
    return ret(sg_memset((uintptr_t)devPtr, &byte, 1, count, NULL, 0));
}

cudaError_t cudaMemsetAsync(void *devPtr, int value, size_t count, cudaStream_t stream) {
    ENTER();
    unsigned char byte = (unsigned char)value;
    return ret(sg_memset((uintptr_t)devPtr, &byte, 1, count, stream, 0));
}

/* ---- streams ---- */

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *pStream, unsigned int flags) {
    ENTER();
    return ret(sg_stream_create(pStream, flags));
}

cudaError_t cudaStreamCreate(cudaStream_t *pStream) { return cudaStreamCreateWithFlags(pStream, cudaStreamDefault); }

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
    ENTER();
    return ret(sg_stream_destroy(stream));
}

cudaError_t cudaStreamGetFlags(cudaStream_t hStream, unsigned int *flags) {
    ENTER();
    return ret(sg_stream_flags(hStream, flags));
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
    ENTER();
    return ret(sg_stream_sync(stream));
}

cudaError_t cudaStreamQuery(cudaStream_t stream) {
    ENTER();
    CUresult r = sg_stream_query(stream);
    /* Not-ready is an answer, not an error: it does not become the last error. */
    return r == CUDA_ERROR_NOT_READY ? cudaErrorNotReady : ret(r);
}

cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int flags) {
    ENTER();
    if (flags & ~(unsigned)cudaEventWaitExternal)
        return ret(CUDA_ERROR_INVALID_VALUE);
    return ret(sg_stream_wait_event(stream, event));
}

cudaError_t cudaLaunchHostFunc(cudaStream_t stream, cudaHostFn_t fn, void *userData) {
    ENTER();
    return ret(sg_host_fn(stream, fn, userData));
}

/* ---- events ---- */

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *event, unsigned int flags) {
    ENTER();
    return ret(sg_event_create(event, flags));
}

cudaError_t cudaEventCreate(cudaEvent_t *event) { return cudaEventCreateWithFlags(event, cudaEventDefault); }

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
    ENTER();
    return ret(sg_event_record(event, stream));
}

cudaError_t cudaEventRecordWithFlags(cudaEvent_t event, cudaStream_t stream, unsigned int flags) {
    ENTER();
    if (flags & ~(unsigned)cudaEventRecordExternal)
        return ret(CUDA_ERROR_INVALID_VALUE);
    return ret(sg_event_record(event, stream));
}

cudaError_t cudaEventQuery(cudaEvent_t event) {
    ENTER();
    CUresult r = sg_event_query(event);
    return r == CUDA_ERROR_NOT_READY ? cudaErrorNotReady : ret(r);
}

cudaError_t cudaEventSynchronize(cudaEvent_t event) {
    ENTER();
    return ret(sg_event_sync(event));
}

cudaError_t cudaEventDestroy(cudaEvent_t event) {
    ENTER();
    return ret(sg_event_destroy(event));
}

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end) {
    ENTER();
    return ret(sg_event_elapsed(ms, start, end));
}

/* ---- capture and graphs ---- */

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, enum cudaStreamCaptureMode mode) {
    ENTER();
    return ret(sg_capture_begin(stream, (int)mode));
}

cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t *pGraph) {
    ENTER();
    return ret(sg_capture_end(stream, pGraph));
}

cudaError_t cudaStreamIsCapturing(cudaStream_t stream, enum cudaStreamCaptureStatus *pCaptureStatus) {
    sg_count(SG_Q_STREAM_IS_CAPTURING);
    ENTER();
    if (!pCaptureStatus)
        return ret(CUDA_ERROR_INVALID_VALUE);
    int status;
    CUresult r = sg_capture_info(stream, &status, NULL, NULL, NULL, NULL);
    if (r == CUDA_SUCCESS)
        *pCaptureStatus = (enum cudaStreamCaptureStatus)status;
    return ret(r);
}

cudaError_t cudaStreamGetCaptureInfo(cudaStream_t stream, enum cudaStreamCaptureStatus *captureStatus_out,
                                     unsigned long long *id_out, cudaGraph_t *graph_out,
                                     const cudaGraphNode_t **dependencies_out,
                                     const cudaGraphEdgeData **edgeData_out, size_t *numDependencies_out) {
    sg_count(SG_Q_STREAM_CAPTURE_INFO);
    ENTER();
    if (!captureStatus_out)
        return ret(CUDA_ERROR_INVALID_VALUE);
    int status;
    uint64_t id;
    CUresult r = sg_capture_info(stream, &status, &id, graph_out, dependencies_out, numDependencies_out);
    if (r != CUDA_SUCCESS)
        return ret(r);
    *captureStatus_out = (enum cudaStreamCaptureStatus)status;
    if (id_out)
        *id_out = id;
    if (edgeData_out)
        *edgeData_out = NULL; /* all dependencies are full (default) edges */
    return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t *pGraphExec, cudaGraph_t graph, unsigned long long flags) {
    ENTER();
    if (flags & ~0xfull)
        return ret(CUDA_ERROR_INVALID_VALUE);
    return ret(sg_graph_instantiate(pGraphExec, graph));
}

cudaError_t cudaGraphInstantiateWithFlags(cudaGraphExec_t *pGraphExec, cudaGraph_t graph, unsigned long long flags) {
    return cudaGraphInstantiate(pGraphExec, graph, flags);
}

cudaError_t cudaGraphExecUpdate(cudaGraphExec_t hGraphExec, cudaGraph_t hGraph, cudaGraphExecUpdateResultInfo *info) {
    ENTER();
    if (!info)
        return ret(CUDA_ERROR_INVALID_VALUE);
    int result;
    CUresult r = sg_graph_exec_update(hGraphExec, hGraph, &result);
    info->result = (enum cudaGraphExecUpdateResult)result;
    info->errorNode = NULL;
    info->errorFromNode = NULL;
    return ret(r);
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t graphExec, cudaStream_t stream) {
    ENTER();
    return ret(sg_graph_launch(graphExec, stream));
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t graphExec) {
    ENTER();
    return ret(sg_graph_exec_destroy(graphExec));
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
    ENTER();
    return ret(sg_graph_destroy(graph));
}

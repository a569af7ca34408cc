/*
 * Stream capture and CUDA graphs on the simulated GPU: a captured sequence of
 * copy, memset, GEMM, kernel launch, host function and event record does not
 * run while captured, and each replay re-runs all of it (the kernel and the
 * GEMM included) on the data present at replay time. Work joined from a second
 * stream through events is part of the graph. Calls a capture forbids fail and
 * invalidate it, as they do on a GPU.
 *
 * Prints PASS/FAIL per case and a SUMMARY line; exits 1 if any case failed.
 */
#include <cublas_v2.h>
#include <cuda.h>
#include <cuda_runtime.h>
#include <unistd.h>

#include "simgpu_check.h"

/* The fill kernel of simgpu_kernel.c, reduced to its entry line: the
 * simulator runs the registered CPU twin by name. */
static const char ptx[] = ".version 8.0\n.target sm_90\n.address_size 64\n"
                          ".visible .entry simgpu_test_fill_u32(.param .u64 a, .param .u32 b, .param .u64 c)\n"
                          "{\n    ret;\n}\n";

static int host_calls;

static void CUDART_CB count_call(void *arg) {
    (void)arg;
    host_calls++;
}

static void replay(void) {
    cublasHandle_t h;
    cudaStream_t s, side;
    MUST(cublasCreate(&h));
    MUST(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    MUST(cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking));
    MUST(cublasSetStream(h, s));
    CUmodule mod;
    CUfunction fill;
    MUST(cuModuleLoadData(&mod, ptx));
    MUST(cuModuleGetFunction(&fill, mod, "simgpu_test_fill_u32"));

    float *in, *out, *da, *db, *dc, alpha = 1, beta = 0;
    uint32_t *filled, *kbuf;
    MUST(cudaMallocHost((void **)&in, 16));
    MUST(cudaMallocHost((void **)&out, 16));
    MUST(cudaMallocHost((void **)&filled, 64 * 4));
    MUST(cudaMalloc((void **)&da, 16));
    MUST(cudaMalloc((void **)&db, 16));
    MUST(cudaMalloc((void **)&dc, 16));
    MUST(cudaMalloc((void **)&kbuf, 64 * 4));
    float identity[4] = {1, 0, 0, 1};
    MUST(cudaMemcpy(db, identity, 16, cudaMemcpyHostToDevice));
    for (int i = 0; i < 4; i++)
        in[i] = (float)(i + 1);
    memset(out, 0, 16);
    memset(filled, 0, 64 * 4);
    cudaEvent_t fork, join, marker;
    MUST(cudaEventCreateWithFlags(&fork, cudaEventDisableTiming));
    MUST(cudaEventCreateWithFlags(&join, cudaEventDisableTiming));
    MUST(cudaEventCreateWithFlags(&marker, cudaEventDisableTiming));

    MUST(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    enum cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    MUST(cudaStreamIsCapturing(s, &status));
    report(status == cudaStreamCaptureStatusActive, "capture: stream reports capturing", "");
    MUST(cudaMemcpyAsync(da, in, 16, cudaMemcpyHostToDevice, s));
    MUST(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &alpha, da, 2, db, 2, &beta, dc, 2));
    /* Fork: the side stream joins the capture by waiting on a captured event. */
    MUST(cudaEventRecord(fork, s));
    MUST(cudaStreamWaitEvent(side, fork, 0));
    MUST(cudaMemsetAsync(kbuf, 0, 64 * 4, side));
    uint64_t n = 64;
    uint32_t value = 100;
    CUdeviceptr kdst = (CUdeviceptr)(uintptr_t)kbuf;
    void *params[] = {&kdst, &value, &n};
    MUST(cuLaunchKernel(fill, 2, 1, 1, 32, 1, 1, 0, (CUstream)side, params, NULL));
    MUST(cudaEventRecord(join, side));
    MUST(cudaStreamWaitEvent(s, join, 0));
    MUST(cudaMemcpyAsync(filled, kbuf, 64 * 4, cudaMemcpyDeviceToHost, s));
    MUST(cudaLaunchHostFunc(s, count_call, NULL));
    MUST(cudaEventRecord(marker, s));
    MUST(cudaMemcpyAsync(out, dc, 16, cudaMemcpyDeviceToHost, s));
    value = 999; /* kernel parameters were copied at capture time */

    unsigned long long id = 0;
    cudaGraph_t during = NULL;
    const cudaGraphNode_t *deps = NULL;
    size_t ndeps = 0;
    MUST(cudaStreamGetCaptureInfo(s, &status, &id, &during, &deps, NULL, &ndeps));
    report(status == cudaStreamCaptureStatusActive && id != 0 && during != NULL && ndeps == 1 && deps != NULL,
           "capture: cudaStreamGetCaptureInfo", "");
    CUstreamCaptureStatus cs;
    cuuint64_t cid = 0;
    MUST(cuStreamGetCaptureInfo_v2((CUstream)s, &cs, &cid, NULL, NULL, NULL));
    report(cs == CU_STREAM_CAPTURE_STATUS_ACTIVE && cid == id, "capture: cuStreamGetCaptureInfo_v2 agrees", "");
    MUST(cuStreamGetCaptureInfo_v3((CUstream)s, &cs, &cid, NULL, NULL, NULL, NULL));
    report(cs == CU_STREAM_CAPTURE_STATUS_ACTIVE && cid == id, "capture: cuStreamGetCaptureInfo_v3 agrees", "");
    EXPECT_STATUS("capture: querying an event recorded in the capture", cudaEventQuery(marker), cudaErrorCapturedEvent);
    cudaGraph_t graph;
    MUST(cudaStreamEndCapture(s, &graph));
    usleep(100000);
    report(host_calls == 0 && out[0] == 0 && filled[0] == 0, "capture: nothing ran while capturing", "");

    cudaGraphExec_t exec;
    MUST(cudaGraphInstantiate(&exec, graph, 0));
    MUST(cudaGraphDestroy(graph)); /* the executable graph stands on its own */
    MUST(cudaGraphLaunch(exec, s));
    MUST(cudaStreamSynchronize(s));
    int gemm_ok = out[0] == 1 && out[1] == 2 && out[2] == 3 && out[3] == 4;
    int kernel_ok = filled[0] == 100 && filled[63] == 163;
    report(gemm_ok && kernel_ok && host_calls == 1, "replay 1: copy, GEMM, kernel and host function ran", "");
    EXPECT_STATUS("replay 1: the captured event completed", cudaEventQuery(marker), cudaSuccess);

    for (int i = 0; i < 4; i++)
        in[i] = (float)(10 * (i + 1));
    memset(filled, 0, 64 * 4);
    MUST(cudaGraphLaunch(exec, s));
    MUST(cudaGraphLaunch(exec, s));
    MUST(cudaStreamSynchronize(s));
    gemm_ok = out[0] == 10 && out[1] == 20 && out[2] == 30 && out[3] == 40;
    kernel_ok = filled[0] == 100 && filled[63] == 163;
    report(gemm_ok && kernel_ok && host_calls == 3, "replays 2 and 3 re-run everything on the new inputs", "");

    MUST(cudaGraphExecDestroy(exec));
    EXPECT_STATUS("launching a destroyed graph", cudaGraphLaunch(exec, s), cudaErrorInvalidValue);
    MUST(cudaEventDestroy(fork));
    MUST(cudaEventDestroy(join));
    MUST(cudaEventDestroy(marker));
    MUST(cublasDestroy(h));
    MUST(cudaStreamDestroy(s));
    MUST(cudaStreamDestroy(side));
    MUST(cuModuleUnload(mod));
    MUST(cudaFreeHost(in));
    MUST(cudaFreeHost(out));
    MUST(cudaFreeHost(filled));
    MUST(cudaFree(da));
    MUST(cudaFree(db));
    MUST(cudaFree(dc));
    MUST(cudaFree(kbuf));
}

static void forbidden(void) {
    cudaStream_t s;
    cudaGraph_t g = (cudaGraph_t)1;
    void *p;
    MUST(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    MUST(cudaMalloc(&p, 64));

    MUST(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    EXPECT_STATUS("capture: synchronising the capturing stream", cudaStreamSynchronize(s),
                  cudaErrorStreamCaptureUnsupported);
    enum cudaStreamCaptureStatus status;
    MUST(cudaStreamIsCapturing(s, &status));
    report(status == cudaStreamCaptureStatusInvalidated, "capture: that invalidated the capture", "");
    EXPECT_STATUS("capture: ending an invalidated capture", cudaStreamEndCapture(s, &g),
                  cudaErrorStreamCaptureInvalidated);
    report(g == NULL, "capture: no graph from an invalidated capture", "");

    MUST(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    void *q;
    EXPECT_STATUS("capture (global mode): cudaMalloc is prohibited", cudaMalloc(&q, 64),
                  cudaErrorStreamCaptureUnsupported);
    EXPECT_STATUS("capture (global mode): end", cudaStreamEndCapture(s, &g), cudaErrorStreamCaptureInvalidated);

    MUST(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed));
    EXPECT_STATUS("capture (relaxed mode): cudaMalloc is allowed", cudaMalloc(&q, 64), cudaSuccess);
    MUST(cudaMemsetAsync(p, 1, 64, s));
    EXPECT_STATUS("capture (relaxed mode): end", cudaStreamEndCapture(s, &g), cudaSuccess);
    MUST(cudaGraphDestroy(g));
    MUST(cudaFree(q));

    cudaStream_t blocking;
    MUST(cudaStreamCreate(&blocking));
    MUST(cudaStreamBeginCapture(blocking, cudaStreamCaptureModeRelaxed));
    EXPECT_STATUS("capture: legacy-stream work while a blocking stream captures", cudaMemsetAsync(p, 2, 64, NULL),
                  cudaErrorStreamCaptureImplicit);
    EXPECT_STATUS("capture: that invalidated it", cudaStreamEndCapture(blocking, &g),
                  cudaErrorStreamCaptureInvalidated);
    EXPECT_STATUS("capture: the legacy stream cannot capture",
                  cudaStreamBeginCapture(NULL, cudaStreamCaptureModeGlobal), cudaErrorStreamCaptureUnsupported);
    EXPECT_STATUS("capture: end without begin", cudaStreamEndCapture(s, &g), cudaErrorIllegalState);
    MUST(cudaStreamDestroy(blocking));
    MUST(cudaStreamDestroy(s));
    MUST(cudaFree(p));
}

int main(void) {
    MUST(cuInit(0));
    MUST(cudaFree(NULL));
    replay();
    forbidden();
    return finish("simgpu_graph");
}

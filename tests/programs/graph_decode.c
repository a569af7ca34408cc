/*
 * Decode the way vLLM, SGLang and TensorRT-LLM run it: the GEMMs of one
 * Llama-style decode step captured once into a CUDA graph and the graph
 * replayed for every step on new inputs, plus a second graph captured on two
 * forked streams. Weights are seeded random bf16; activations are column-major
 * [features, B] for a decode batch of B tokens.
 *
 * Graph A, per layer (hidden H, nh heads of hd, C cached positions, MLP I):
 *   qkv      cublasLtMatmul, op(W) = T, BIAS epilogue
 *   scores   cublasGemmStridedBatchedEx: K^T q per head over the C cached keys
 *   context  cublasGemmStridedBatchedEx: V p per head, into the heads' rows
 *   o_proj   cublasGemmEx with beta = 1 into the residual stream (in place)
 *   gate     cublasLtMatmul, GELU_BIAS epilogue
 *   up       cublasLtMatmul, BIAS epilogue
 *   down     cublasLtMatmul with beta = 1 and C == D (in place)
 * then an lm_head cublasGemmEx with f32 logits. (No custom kernels: norms,
 * softmax and gate * up are left out, so that the program runs unchanged on
 * the simulated GPU; every GEMM reads what the one before wrote.)
 * Graph B: stream s forks s2 through an event; s runs a cublasGemmEx and s2 a
 * cublasSgemm_v2 on the residual stream's copy, s2 joins back.
 *
 *   graph_decode [--replays N] [--layers L] [--twice] [--update] [--queue]
 *                [--destroy-queued] [--abort] [--eager-first] [--churn K] [--driver]
 *                [--per-thread] [--two-streams] [--capture-thread] [--outside] [--time]
 *
 * Each step uploads a new hidden state (pageable copy, outside the graph),
 * launches A (and B every fourth step) and copies the logits back; by default
 * it waits for them before the next step, as a serving loop that samples
 * tokens does. --queue issues every step before waiting once at the end (the
 * inputs staged per step in device memory), so replays queue up back to back.
 * --twice instantiates A twice and alternates the two executable graphs;
 * --update captures A again (the same GEMMs) halfway and moves A's executable
 * graph to it with cudaGraphExecUpdate; --destroy-queued destroys A's
 * executable graph while its last replays are still queued (with --queue);
 * --abort first begins a capture that cudaMalloc invalidates and checks that
 * cudaStreamEndCapture reports it; --eager-first runs one step eagerly (not
 * captured) before capturing. --churn K destroys A's executable graph every K
 * steps (its launches possibly still queued) and instantiates A again. --driver
 * captures, instantiates and launches A through the driver API
 * (cuStreamBeginCapture, cuStreamEndCapture, cuGraphInstantiateWithFlags,
 * cuGraphLaunch) instead of the runtime's. --per-thread captures and launches on
 * cudaStreamPerThread instead of a stream of its own; --two-streams runs odd steps
 * (upload, launches, download) on a second stream (not with --queue);
 * --capture-thread captures A on a new thread whose first CUDA call begins the
 * capture (thread-local mode), and launches it from the main thread; --outside adds
 * to A one cublasSgemm_v2 with a NaN alpha (outside protocol v1's model) into a
 * scratch buffer. --time measures each launch of A (the
 * cudaGraphLaunch call alone) on the calling thread and prints "launch-ns P50 P10
 * P90" (wall time) and "launch-cpu-ns P50 P10 P90" (the thread's CPU time, which a
 * busy machine's preemption does not inflate).
 *
 * Prints "captured N" (GEMM calls issued during captures), "replayed N"
 * (GEMMs run by graph launches: launches x GEMMs per graph), "launches N",
 * then "calls N" (API calls made directly: eager and captured) and
 * "output-hash H" (audit_common.h); exits 0, or 2 on failure.
 */
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda.h>
#include <cuda_runtime.h>
#include <pthread.h>
#include <time.h>

#include "audit_common.h"

enum { H = 64, NH = 4, HD = 16, C = 16, I = 128, B = 4, V = 96, QKV = 3 * H };

static cudaStream_t s, s2, s3;
static cublasHandle_t handle;
static cublasLtHandle_t lt;
static uint64_t api_calls, captured_calls;
static int capturing, driver_api, outside;

typedef struct layer {
    void *wqkv, *bqkv, *wo, *wgate, *bgate, *wup, *bup, *wdown, *kcache, *vcache;
} layer;

static void *dev_random(size_t elems, int type, uint64_t seed) {
    size_t bytes = elems * type_size(type);
    void *host = malloc(bytes), *dev;
    fill_random(host, type, elems, seed);
    MUST(cudaMalloc(&dev, bytes));
    MUST(cudaMemcpy(dev, host, bytes, cudaMemcpyHostToDevice));
    free(host);
    return dev;
}

static void counted(void) {
    api_calls++;
    captured_calls += (uint64_t)capturing;
}

/* D (out x B) = epilogue(alpha op(W) X + bias) + beta D, through cuBLASLt (C == D). */
static void lt_linear(const void *w, const void *x, void *d, int out, int in, uint32_t epilogue, const void *bias,
                      float beta) {
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, ld;
    MUST(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    int32_t ta = CUBLAS_OP_T;
    MUST(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    MUST(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue));
    if (bias)
        MUST(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
    MUST(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, (uint64_t)in, (uint64_t)out, in));
    MUST(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, (uint64_t)in, (uint64_t)B, in));
    MUST(cublasLtMatrixLayoutCreate(&ld, CUDA_R_16BF, (uint64_t)out, (uint64_t)B, out));
    const float alpha = in == H ? 0.125f : 0.0625f; /* about 1/sqrt(in): exact */
    MUST(cublasLtMatmul(lt, desc, &alpha, w, la, x, lb, &beta, d, ld, d, ld, NULL, NULL, 0, s));
    counted();
    MUST(cublasLtMatmulDescDestroy(desc));
    MUST(cublasLtMatrixLayoutDestroy(la));
    MUST(cublasLtMatrixLayoutDestroy(lb));
    MUST(cublasLtMatrixLayoutDestroy(ld));
}

typedef struct acts {
    void *h, *qkv, *scores, *attn, *gate, *up, *logits, *side, *side32;
} acts;

/* The GEMMs of one decode step (graph A's body). */
static void step(const layer *ly, int layers, const void *lm_head, acts *a) {
    const float one = 1.0f, zero = 0.0f, quarter = 0.25f, eighth = 0.125f;
    for (int l = 0; l < layers; l++) {
        const layer *w = &ly[l];
        lt_linear(w->wqkv, a->h, a->qkv, QKV, H, CUBLASLT_EPILOGUE_BIAS, w->bqkv, 0.0f);
        /* scores_h (C x B) = K_h^T (C x hd) q_h (hd x B), per head. */
        MUST(cublasGemmStridedBatchedEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, C, B, HD, &quarter, w->kcache, CUDA_R_16BF,
                                        HD, (long long)HD * C, a->qkv, CUDA_R_16BF, QKV, HD, &zero, a->scores,
                                        CUDA_R_16BF, C, (long long)C * B, NH, CUBLAS_COMPUTE_32F,
                                        CUBLAS_GEMM_DEFAULT));
        counted();
        /* context_h (hd x B) = V_h (hd x C) scores_h (C x B), into the heads' rows. */
        MUST(cublasGemmStridedBatchedEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, HD, B, C, &quarter, w->vcache, CUDA_R_16BF,
                                        HD, (long long)HD * C, a->scores, CUDA_R_16BF, C, (long long)C * B, &zero,
                                        a->attn, CUDA_R_16BF, H, HD, NH, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        counted();
        /* h += W_o attn: beta = 1, in place. */
        MUST(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, H, B, H, &eighth, w->wo, CUDA_R_16BF, H, a->attn,
                          CUDA_R_16BF, H, &one, a->h, CUDA_R_16BF, H, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        counted();
        lt_linear(w->wgate, a->h, a->gate, I, H, CUBLASLT_EPILOGUE_GELU_BIAS, w->bgate, 0.0f);
        lt_linear(w->wup, a->h, a->up, I, H, CUBLASLT_EPILOGUE_BIAS, w->bup, 0.0f);
        lt_linear(w->wdown, a->gate, a->h, H, I, CUBLASLT_EPILOGUE_DEFAULT, NULL, 1.0f);
    }
    MUST(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, V, B, H, &eighth, lm_head, CUDA_R_16BF, H, a->h, CUDA_R_16BF,
                      H, &zero, a->logits, CUDA_R_32F, V, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    counted();
    if (outside) {
        const float nan = 0.0f / 0.0f;
        MUST(cublasSgemm_v2(handle, CUBLAS_OP_N, CUBLAS_OP_N, H, B, B, &nan, a->side32, H, a->side32, B, &zero,
                            (float *)a->side32 + H * B, H));
        counted();
    }
}

/* Graph B's body: two GEMMs on forked streams. */
static void forked(const void *w, const float *w32, acts *a) {
    const float eighth = 0.125f, zero = 0.0f;
    cudaEvent_t fork, join;
    MUST(cudaEventCreateWithFlags(&fork, cudaEventDisableTiming));
    MUST(cudaEventCreateWithFlags(&join, cudaEventDisableTiming));
    MUST(cudaEventRecord(fork, s));
    MUST(cudaStreamWaitEvent(s2, fork, 0));
    MUST(cublasSetStream_v2(handle, s2));
    MUST(cublasSgemm_v2(handle, CUBLAS_OP_N, CUBLAS_OP_N, H, B, H, &eighth, w32, H, a->side32, H, &zero,
                        (float *)a->side32 + H * B, H));
    counted();
    MUST(cudaEventRecord(join, s2));
    MUST(cublasSetStream_v2(handle, s));
    MUST(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, H, B, H, &eighth, w, CUDA_R_16BF, H, a->h, CUDA_R_16BF, H,
                      &zero, a->side, CUDA_R_16BF, H, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    counted();
    MUST(cudaStreamWaitEvent(s, join, 0));
    /* The events are part of the capture; they are not destroyed while it runs. */
}

static int by_value(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t now_ns(clockid_t clock) {
    struct timespec t;
    clock_gettime(clock, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static void print_percentiles(const char *what, uint64_t *ns, int n) {
    qsort(ns, (size_t)n, sizeof *ns, by_value);
    printf("%s %llu %llu %llu\n", what, (unsigned long long)ns[n / 2], (unsigned long long)ns[n / 10],
           (unsigned long long)ns[n * 9 / 10]);
}

static int flag(int argc, char **argv, const char *name) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], name))
            return 1;
    return 0;
}

static long number(int argc, char **argv, const char *name, long dflt) {
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], name))
            return strtol(argv[i + 1], NULL, 10);
    return dflt;
}

static cudaGraph_t capture_a(const layer *ly, int layers, const void *lm_head, acts *a) {
    cudaGraph_t g;
    if (driver_api)
        MUST(cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_GLOBAL));
    else
        MUST(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    capturing = 1;
    step(ly, layers, lm_head, a);
    capturing = 0;
    if (driver_api)
        MUST(cuStreamEndCapture(s, &g));
    else
        MUST(cudaStreamEndCapture(s, &g));
    return g;
}

typedef struct capture_job {
    const layer *ly;
    int layers;
    const void *lm_head;
    acts *a;
    cudaGraph_t graph;
} capture_job;

/* A thread whose first CUDA call begins the capture (its context is bound by it). */
static void *capture_thread(void *arg) {
    capture_job *j = arg;
    MUST(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    capturing = 1;
    step(j->ly, j->layers, j->lm_head, j->a);
    capturing = 0;
    MUST(cudaStreamEndCapture(s, &j->graph));
    return NULL;
}

static void instantiate(cudaGraphExec_t *x, cudaGraph_t g) {
    if (driver_api)
        MUST(cuGraphInstantiate(x, g, 0));
    else
        MUST(cudaGraphInstantiate(x, g, 0));
}

int main(int argc, char **argv) {
    const int replays = (int)number(argc, argv, "--replays", 200);
    const int layers = (int)number(argc, argv, "--layers", 2);
    const int twice = flag(argc, argv, "--twice"), update = flag(argc, argv, "--update");
    const int queue = flag(argc, argv, "--queue"), destroy_queued = flag(argc, argv, "--destroy-queued");
    const int timed = flag(argc, argv, "--time");
    const int churn = (int)number(argc, argv, "--churn", 0);
    driver_api = flag(argc, argv, "--driver");
    outside = flag(argc, argv, "--outside");
    const int two_streams = flag(argc, argv, "--two-streams");
    if (replays < 1 || layers < 1 || layers > 32 || (destroy_queued && !queue) || churn < 0 ||
        (churn && (twice || update)) || (two_streams && queue)) {
        fprintf(stderr, "usage: graph_decode [--replays N>0] [--layers 1..32] [--twice] [--update] [--queue]\n"
                        "                    [--destroy-queued (with --queue)] [--abort] [--eager-first]\n"
                        "                    [--churn K (not with --twice, --update)] [--driver] [--per-thread]\n"
                        "                    [--two-streams (not with --queue)] [--time]\n");
        return 2;
    }
    if (flag(argc, argv, "--per-thread"))
        s = cudaStreamPerThread;
    else
        MUST(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    MUST(cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking));
    MUST(cudaStreamCreateWithFlags(&s3, cudaStreamNonBlocking));
    MUST(cublasCreate_v2(&handle));
    MUST(cublasSetStream_v2(handle, s));
    MUST(cublasLtCreate(&lt));

    layer ly[32];
    for (int l = 0; l < layers; l++) {
        uint64_t t = 100 * (uint64_t)(l + 1);
        ly[l] = (layer){dev_random((size_t)QKV * H, CUDA_R_16BF, t + 1), dev_random(QKV, CUDA_R_16BF, t + 2),
                        dev_random((size_t)H * H, CUDA_R_16BF, t + 3),   dev_random((size_t)I * H, CUDA_R_16BF, t + 4),
                        dev_random(I, CUDA_R_16BF, t + 5),               dev_random((size_t)I * H, CUDA_R_16BF, t + 6),
                        dev_random(I, CUDA_R_16BF, t + 7),               dev_random((size_t)H * I, CUDA_R_16BF, t + 8),
                        dev_random((size_t)HD * C * NH, CUDA_R_16BF, t + 9),
                        dev_random((size_t)HD * C * NH, CUDA_R_16BF, t + 10)};
    }
    void *lm_head = dev_random((size_t)V * H, CUDA_R_16BF, 7), *wside = dev_random((size_t)H * H, CUDA_R_16BF, 8);
    float *wside32 = dev_random((size_t)H * H, CUDA_R_32F, 9);
    acts a;
    MUST(cudaMalloc(&a.h, (size_t)H * B * 2));
    MUST(cudaMalloc(&a.qkv, (size_t)QKV * B * 2));
    MUST(cudaMalloc(&a.scores, (size_t)C * B * NH * 2));
    MUST(cudaMalloc(&a.attn, (size_t)H * B * 2));
    MUST(cudaMalloc(&a.gate, (size_t)I * B * 2));
    MUST(cudaMalloc(&a.up, (size_t)I * B * 2));
    MUST(cudaMalloc(&a.logits, (size_t)V * B * 4));
    MUST(cudaMalloc(&a.side, (size_t)H * B * 2));
    a.side32 = dev_random((size_t)2 * H * B, CUDA_R_32F, 10);

    uint64_t hash = FNV_OFFSET, launches = 0, replayed = 0;
    const uint64_t per_a = (uint64_t)layers * 7 + 1 + (uint64_t)outside, per_b = 2;
    size_t hbytes = (size_t)H * B * 2, lbytes = (size_t)V * B * 4;
    uint16_t *hin = malloc(hbytes);
    float *logits = malloc(lbytes * (size_t)replays);
    uint16_t *side = malloc(hbytes);
    uint64_t *launch_ns = calloc((size_t)replays, sizeof *launch_ns);
    uint64_t *launch_cpu = calloc((size_t)replays, sizeof *launch_cpu);

    if (flag(argc, argv, "--abort")) {
        /* A capture the application ruins: no graph, and the library must not mind. */
        cudaGraph_t g = NULL;
        void *p = NULL;
        MUST(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
        capturing = 1;
        lt_linear(ly[0].wup, a.h, a.up, I, H, CUBLASLT_EPILOGUE_BIAS, ly[0].bup, 0.0f);
        capturing = 0;
        if (cudaMalloc(&p, 256) == cudaSuccess) {
            printf("FAIL cudaMalloc during a global capture succeeded\n");
            return 2;
        }
        if (cudaStreamEndCapture(s, &g) != cudaErrorStreamCaptureInvalidated || g != NULL) {
            printf("FAIL the invalidated capture produced a graph\n");
            return 2;
        }
    }
    if (flag(argc, argv, "--eager-first")) {
        fill_random(hin, CUDA_R_16BF, (size_t)H * B, 999);
        MUST(cudaMemcpyAsync(a.h, hin, hbytes, cudaMemcpyHostToDevice, s));
        step(ly, layers, lm_head, &a);
        MUST(cudaMemcpyAsync(logits, a.logits, lbytes, cudaMemcpyDeviceToHost, s));
        MUST(cudaStreamSynchronize(s));
        hash = fnv1a(hash, logits, lbytes);
    }

    cudaGraph_t ga, ga2 = NULL, gb;
    if (flag(argc, argv, "--capture-thread")) {
        capture_job job = {ly, layers, lm_head, &a, NULL};
        pthread_t t;
        if (pthread_create(&t, NULL, capture_thread, &job) != 0 || pthread_join(t, NULL) != 0) {
            printf("FAIL capture thread\n");
            return 2;
        }
        ga = job.graph;
    } else {
        ga = capture_a(ly, layers, lm_head, &a);
    }
    MUST(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    capturing = 1;
    forked(wside, wside32, &a);
    capturing = 0;
    MUST(cudaStreamEndCapture(s, &gb));
    cudaGraphExec_t xa[2], xb;
    instantiate(&xa[0], ga);
    if (twice)
        MUST(cudaGraphInstantiateWithFlags(&xa[1], ga, 0));
    MUST(cudaGraphInstantiate(&xb, gb, 0));

    /* Staged inputs (for --queue) and a device copy of each step's logits. */
    void *staged = NULL, *outs = NULL;
    if (queue) {
        MUST(cudaMalloc(&staged, hbytes * (size_t)replays));
        MUST(cudaMalloc(&outs, lbytes * (size_t)replays));
        for (int r = 0; r < replays; r++) {
            fill_random(hin, CUDA_R_16BF, (size_t)H * B, 1000 + (uint64_t)r);
            MUST(cudaMemcpy((unsigned char *)staged + hbytes * (size_t)r, hin, hbytes, cudaMemcpyHostToDevice));
        }
    }
    for (int r = 0; r < replays; r++) {
        if (churn && r > 0 && r % churn == 0) {
            MUST(cudaGraphExecDestroy(xa[0]));
            instantiate(&xa[0], ga);
        }
        if (update && r == replays / 2) {
            ga2 = capture_a(ly, layers, lm_head, &a);
            cudaGraphExecUpdateResultInfo info;
            MUST(cudaGraphExecUpdate(xa[0], ga2, &info));
        }
        /* The step's stream (each step is complete before the next unless --queue). */
        cudaStream_t ls = two_streams && r % 2 ? s3 : s;
        if (queue) {
            MUST(cudaMemcpyAsync(a.h, (unsigned char *)staged + hbytes * (size_t)r, hbytes, cudaMemcpyDeviceToDevice,
                                 ls));
        } else {
            fill_random(hin, CUDA_R_16BF, (size_t)H * B, 1000 + (uint64_t)r);
            MUST(cudaMemcpyAsync(a.h, hin, hbytes, cudaMemcpyHostToDevice, ls));
        }
        uint64_t t0 = now_ns(CLOCK_MONOTONIC), c0 = now_ns(CLOCK_THREAD_CPUTIME_ID);
        if (driver_api)
            MUST(cuGraphLaunch(xa[0], ls));
        else
            MUST(cudaGraphLaunch(xa[twice ? r % 2 : 0], ls));
        launch_cpu[r] = now_ns(CLOCK_THREAD_CPUTIME_ID) - c0;
        launch_ns[r] = now_ns(CLOCK_MONOTONIC) - t0;
        launches++;
        replayed += per_a;
        if (r % 4 == 3) {
            MUST(cudaGraphLaunch(xb, ls));
            launches++;
            replayed += per_b;
        }
        if (queue) {
            MUST(cudaMemcpyAsync((unsigned char *)outs + lbytes * (size_t)r, a.logits, lbytes,
                                 cudaMemcpyDeviceToDevice, s));
        } else {
            MUST(cudaMemcpyAsync(logits + (size_t)r * V * B, a.logits, lbytes, cudaMemcpyDeviceToHost, ls));
            MUST(cudaStreamSynchronize(ls));
        }
    }
    if (destroy_queued)
        MUST(cudaGraphExecDestroy(xa[0])); /* replays still queued on s */
    MUST(cudaStreamSynchronize(s));
    if (queue)
        MUST(cudaMemcpy(logits, outs, lbytes * (size_t)replays, cudaMemcpyDeviceToHost));
    hash = fnv1a(hash, logits, lbytes * (size_t)replays);
    MUST(cudaMemcpy(side, a.side, hbytes, cudaMemcpyDeviceToHost));
    hash = fnv1a(hash, side, hbytes);

    if (!destroy_queued)
        MUST(cudaGraphExecDestroy(xa[0]));
    if (twice)
        MUST(cudaGraphExecDestroy(xa[1]));
    MUST(cudaGraphExecDestroy(xb));
    MUST(cudaGraphDestroy(ga));
    if (ga2)
        MUST(cudaGraphDestroy(ga2));
    MUST(cudaGraphDestroy(gb));
    MUST(cublasLtDestroy(lt));
    MUST(cublasDestroy_v2(handle));
    printf("captured %llu\n", (unsigned long long)captured_calls);
    printf("replayed %llu\n", (unsigned long long)replayed);
    printf("launches %llu\n", (unsigned long long)launches);
    if (timed) {
        print_percentiles("launch-ns", launch_ns, replays);
        print_percentiles("launch-cpu-ns", launch_cpu, replays);
    }
    print_result(api_calls, hash);
    return 0;
}

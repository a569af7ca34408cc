/*
 * Asynchrony and ordering of the simulated GPU, as a program sees them. Run
 * with SIMGPU_LATENCY_US set (the test uses 50 ms) so that every queued
 * operation visibly waits before it runs:
 *  - reading a buffer before synchronising the stream that writes it sees the
 *    old contents; after synchronising, the new ones (copies and GEMMs);
 *  - stream and event queries say not-ready until the work ran;
 *  - events order work across streams; the legacy default stream waits for
 *    blocking streams but not for non-blocking ones; cudaMemcpy waits;
 *  - the host cannot dereference device memory (it faults, as on a GPU);
 *  - allocations are tracked (pointer attributes, frees of unknown pointers);
 *  - many threads with their own streams run GEMMs at once correctly.
 *
 * Prints PASS/FAIL per case and a SUMMARY line; exits 1 if any case failed.
 */
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "simgpu_check.h"

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static int all_equal(const unsigned char *p, size_t n, unsigned char v) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != v)
            return 0;
    return 1;
}

static void copies(void) {
    const size_t n = 4096;
    unsigned char *pinned, *dev;
    MUST(cudaMallocHost((void **)&pinned, n));
    MUST(cudaMalloc((void **)&dev, n));
    MUST(cudaMemset(dev, 0x5a, n));
    memset(pinned, 0xaa, n);
    cudaStream_t s;
    MUST(cudaStreamCreate(&s));
    MUST(cudaMemcpyAsync(pinned, dev, n, cudaMemcpyDeviceToHost, s));
    report(all_equal(pinned, n, 0xaa), "async copy: host sees old bytes before synchronising", "");
    EXPECT_STATUS("async copy: stream query before it ran", cudaStreamQuery(s), cudaErrorNotReady);
    MUST(cudaStreamSynchronize(s));
    report(all_equal(pinned, n, 0x5a), "async copy: host sees new bytes after synchronising", "");
    EXPECT_STATUS("async copy: stream query after synchronising", cudaStreamQuery(s), cudaSuccess);

    /* Pageable source: the bytes are taken at call time (staged). */
    unsigned char *pageable = malloc(n);
    memset(pageable, 0x11, n);
    MUST(cudaMemcpyAsync(dev, pageable, n, cudaMemcpyHostToDevice, s));
    memset(pageable, 0x22, n);
    MUST(cudaMemcpyAsync(pinned, dev, n, cudaMemcpyDeviceToHost, s));
    MUST(cudaStreamSynchronize(s));
    report(all_equal(pinned, n, 0x11), "async copy from pageable memory snapshots the source at call time", "");

    /* cudaMemcpy waits for the legacy stream and its own copy. */
    MUST(cudaMemsetAsync(dev, 0x33, n, NULL));
    MUST(cudaMemcpy(pageable, dev, n, cudaMemcpyDeviceToHost));
    report(all_equal(pageable, n, 0x33), "cudaMemcpy returns with the data in place", "");
    free(pageable);
    MUST(cudaStreamDestroy(s));
    MUST(cudaFreeHost(pinned));
    MUST(cudaFree(dev));
}

static void gemm_async(void) {
    cublasHandle_t h;
    MUST(cublasCreate(&h));
    cudaStream_t s;
    MUST(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    MUST(cublasSetStream(h, s));
    float ha[4] = {1, 2, 3, 4}, hb[4] = {5, 6, 7, 8}, alpha = 1, beta = 0;
    float *da, *db, *dc, *out;
    MUST(cudaMalloc((void **)&da, 16));
    MUST(cudaMalloc((void **)&db, 16));
    MUST(cudaMalloc((void **)&dc, 16));
    MUST(cudaMallocHost((void **)&out, 16));
    MUST(cudaMemcpy(da, ha, 16, cudaMemcpyHostToDevice));
    MUST(cudaMemcpy(db, hb, 16, cudaMemcpyHostToDevice));
    for (int i = 0; i < 4; i++)
        out[i] = -1;
    cudaEvent_t start, end;
    MUST(cudaEventCreate(&start));
    MUST(cudaEventCreate(&end));
    MUST(cudaEventRecord(start, s));
    MUST(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &alpha, da, 2, db, 2, &beta, dc, 2));
    MUST(cudaMemcpyAsync(out, dc, 16, cudaMemcpyDeviceToHost, s));
    MUST(cudaEventRecord(end, s));
    report(out[0] == -1 && out[3] == -1, "GEMM: result not visible before synchronising", "");
    EXPECT_STATUS("GEMM: event query before it ran", cudaEventQuery(end), cudaErrorNotReady);
    float ms = 0;
    EXPECT_STATUS("GEMM: elapsed time of unfinished events", cudaEventElapsedTime(&ms, start, end), cudaErrorNotReady);
    MUST(cudaEventSynchronize(end));
    EXPECT_STATUS("GEMM: event query after it ran", cudaEventQuery(end), cudaSuccess);
    /* Column-major: C = A B = [1 3; 2 4] [5 7; 6 8] = [23 31; 34 46]. */
    report(out[0] == 23 && out[1] == 34 && out[2] == 31 && out[3] == 46, "GEMM: result correct after the event", "");
    MUST(cudaEventElapsedTime(&ms, start, end));
    char why[64];
    snprintf(why, sizeof why, "%.1f ms", ms);
    report(ms >= 40, "GEMM: elapsed time spans the queued work (3 ops x 50 ms latency)", why);
    cudaEvent_t untimed;
    MUST(cudaEventCreateWithFlags(&untimed, cudaEventDisableTiming));
    MUST(cudaEventRecord(untimed, s));
    MUST(cudaStreamSynchronize(s));
    EXPECT_STATUS("events without timing have no elapsed time", cudaEventElapsedTime(&ms, start, untimed),
                  cudaErrorInvalidResourceHandle);
    MUST(cudaEventDestroy(untimed));
    MUST(cudaEventDestroy(start));
    MUST(cudaEventDestroy(end));
    MUST(cublasDestroy(h));
    MUST(cudaStreamDestroy(s));
    MUST(cudaFree(da));
    MUST(cudaFree(db));
    MUST(cudaFree(dc));
    MUST(cudaFreeHost(out));
}

static void cross_stream(void) {
    const size_t n = 1024;
    unsigned char *x, *y, *pinned;
    MUST(cudaMalloc((void **)&x, n));
    MUST(cudaMalloc((void **)&y, n));
    MUST(cudaMallocHost((void **)&pinned, n));
    MUST(cudaMemset(x, 7, n));
    MUST(cudaMemset(y, 0, n));
    MUST(cudaDeviceSynchronize());
    cudaStream_t s1, s2;
    cudaEvent_t e;
    MUST(cudaStreamCreateWithFlags(&s1, cudaStreamNonBlocking));
    MUST(cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking));
    MUST(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    MUST(cudaMemsetAsync(x, 9, n, s1)); /* queued behind latency */
    MUST(cudaMemcpyAsync(y, x, n, cudaMemcpyDeviceToDevice, s1));
    MUST(cudaEventRecord(e, s1));
    MUST(cudaStreamWaitEvent(s2, e, 0));
    MUST(cudaMemcpyAsync(pinned, y, n, cudaMemcpyDeviceToHost, s2));
    MUST(cudaStreamSynchronize(s2));
    report(all_equal(pinned, n, 9), "event wait orders work across streams", "");
    MUST(cudaEventDestroy(e));
    MUST(cudaStreamDestroy(s1));
    MUST(cudaStreamDestroy(s2));
    MUST(cudaFree(x));
    MUST(cudaFree(y));
    MUST(cudaFreeHost(pinned));
}

static volatile int flag_set;
static int seen_by_legacy;

static void CUDART_CB slow_set(void *arg) {
    (void)arg;
    usleep(300000);
    flag_set = 1;
}

static void CUDART_CB observe(void *arg) {
    (void)arg;
    seen_by_legacy = flag_set;
}

/* A slow host function on a stream, then one on the legacy stream: does the
 * legacy stream wait for it? */
static int legacy_waits_for(unsigned flags) {
    cudaStream_t s;
    MUST(cudaStreamCreateWithFlags(&s, flags));
    flag_set = 0;
    seen_by_legacy = -1;
    MUST(cudaLaunchHostFunc(s, slow_set, NULL));
    MUST(cudaLaunchHostFunc(NULL, observe, NULL));
    MUST(cudaStreamSynchronize(NULL));
    int seen = seen_by_legacy;
    MUST(cudaStreamSynchronize(s));
    MUST(cudaStreamDestroy(s));
    return seen;
}

static void legacy_stream(void) {
    report(legacy_waits_for(cudaStreamDefault) == 1, "legacy stream waits for earlier work of a blocking stream", "");
    report(legacy_waits_for(cudaStreamNonBlocking) == 0, "legacy stream does not wait for a non-blocking stream", "");
    /* And a blocking stream waits for earlier legacy-stream work. */
    cudaStream_t s;
    MUST(cudaStreamCreate(&s));
    flag_set = 0;
    seen_by_legacy = -1;
    MUST(cudaLaunchHostFunc(NULL, slow_set, NULL));
    MUST(cudaLaunchHostFunc(s, observe, NULL));
    MUST(cudaStreamSynchronize(s));
    report(seen_by_legacy == 1, "blocking stream waits for earlier legacy-stream work", "");
    MUST(cudaDeviceSynchronize());
    MUST(cudaStreamDestroy(s));
}

static void device_memory_is_not_host_memory(void) {
    int *dev;
    MUST(cudaMalloc((void **)&dev, 64));
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        volatile int x = *(volatile int *)dev; /* a GPU pointer: must fault */
        (void)x;
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    report(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV, "host dereference of device memory faults", "");
    MUST(cudaFree(dev));
}

static void allocations(void) {
    void *dev, *pinned;
    int stack_value = 0;
    MUST(cudaMalloc(&dev, 1000));
    MUST(cudaMallocHost(&pinned, 1000));
    struct cudaPointerAttributes a;
    MUST(cudaPointerGetAttributes(&a, (char *)dev + 10));
    report(a.type == cudaMemoryTypeDevice && a.device == 0 && a.devicePointer == (char *)dev + 10 && !a.hostPointer,
           "pointer attributes of device memory", "");
    MUST(cudaPointerGetAttributes(&a, pinned));
    report(a.type == cudaMemoryTypeHost && a.devicePointer == pinned && a.hostPointer == pinned,
           "pointer attributes of pinned memory", "");
    MUST(cudaPointerGetAttributes(&a, &stack_value));
    report(a.type == cudaMemoryTypeUnregistered, "pointer attributes of ordinary host memory", "");
    void *mapped;
    MUST(cudaHostGetDevicePointer(&mapped, pinned, 0));
    report(mapped == pinned, "pinned memory maps to the same device address", "");
    EXPECT_STATUS("cudaHostGetDevicePointer of pageable memory", cudaHostGetDevicePointer(&mapped, &stack_value, 0),
                  cudaErrorInvalidValue);
    EXPECT_STATUS("cudaFree of an unknown pointer", cudaFree(&stack_value), cudaErrorInvalidValue);
    EXPECT_STATUS("cudaFree of an interior pointer", cudaFree((char *)dev + 8), cudaErrorInvalidValue);
    EXPECT_STATUS("cudaFree of pinned memory", cudaFree(pinned), cudaErrorInvalidValue);
    EXPECT_STATUS("cudaGetLastError returns the last failure", cudaGetLastError(), cudaErrorInvalidValue);
    EXPECT_STATUS("cudaGetLastError resets it", cudaGetLastError(), cudaSuccess);
    EXPECT_STATUS("cudaFreeHost of device memory", cudaFreeHost(dev), cudaErrorInvalidValue);
    EXPECT_STATUS("cudaFree(NULL)", cudaFree(NULL), cudaSuccess);
    EXPECT_STATUS("memcpy past the end of an allocation",
                  cudaMemcpy(dev, pinned, 1001, cudaMemcpyHostToDevice), cudaErrorInvalidValue);
    EXPECT_STATUS("memcpy kind that contradicts the pointers",
                  cudaMemcpy(&stack_value, pinned, 4, cudaMemcpyHostToDevice), cudaErrorInvalidValue);
    EXPECT_STATUS("destroyed stream", cudaStreamDestroy((cudaStream_t)pinned), cudaErrorInvalidResourceHandle);
    MUST(cudaFree(dev));
    EXPECT_STATUS("double free", cudaFree(dev), cudaErrorInvalidValue);
    MUST(cudaFreeHost(pinned));
}

#define THREADS 4

static void *worker(void *arg) {
    long id = (long)arg;
    cublasHandle_t h;
    cudaStream_t s;
    if (cublasCreate(&h) || cudaStreamCreate(&s) || cublasSetStream(h, s))
        return (void *)1;
    const int m = 8;
    float a[64], b[64], c[64], alpha = 1, beta = 0;
    for (int i = 0; i < m * m; i++) {
        a[i] = (float)test_value((uint64_t)id, (uint64_t)i);
        b[i] = (float)test_value((uint64_t)id + 100, (uint64_t)i);
    }
    float *da, *db, *dc;
    long bad = 0;
    if (cudaMalloc((void **)&da, sizeof a) || cudaMalloc((void **)&db, sizeof b) || cudaMalloc((void **)&dc, sizeof c))
        return (void *)1;
    for (int round = 0; round < 5; round++) {
        a[0] = (float)round;
        bad |= cudaMemcpyAsync(da, a, sizeof a, cudaMemcpyHostToDevice, s);
        bad |= cudaMemcpyAsync(db, b, sizeof b, cudaMemcpyHostToDevice, s);
        bad |= cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, m, m, m, &alpha, da, m, db, m, &beta, dc, m);
        bad |= cudaMemcpyAsync(c, dc, sizeof c, cudaMemcpyDeviceToHost, s);
        bad |= cudaStreamSynchronize(s);
        for (int j = 0; j < m; j++)
            for (int i = 0; i < m; i++) {
                double want = 0;
                for (int l = 0; l < m; l++)
                    want += (double)a[i + l * m] * b[l + j * m];
                bad |= c[i + j * m] != (float)want;
            }
    }
    bad |= cudaFree(da) | cudaFree(db) | cudaFree(dc);
    bad |= cublasDestroy(h) | cudaStreamDestroy(s);
    return (void *)bad;
}

static void threads(void) {
    pthread_t t[THREADS];
    for (long i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, worker, (void *)i);
    long bad = 0;
    for (int i = 0; i < THREADS; i++) {
        void *r;
        pthread_join(t[i], &r);
        bad |= (long)r;
    }
    report(bad == 0, "four threads with their own streams run GEMMs concurrently", "");
}

int main(void) {
    if (!getenv("SIMGPU_LATENCY_US")) {
        printf("FAIL setup: run with SIMGPU_LATENCY_US set (e.g. 50000)\nSUMMARY setup failed\n");
        return 2;
    }
    double t0 = now_ms();
    copies();
    gemm_async();
    cross_stream();
    legacy_stream();
    device_memory_is_not_host_memory();
    allocations();
    threads();
    printf("elapsed %.0f ms\n", now_ms() - t0);
    return finish("simgpu_ordering");
}

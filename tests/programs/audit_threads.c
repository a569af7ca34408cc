/*
 * GEMMs from several threads at once, as a serving process makes them: each
 * worker thread has its own cuBLAS and cuBLASLt handles and its own stream
 * (non-blocking, blocking, cudaStreamPerThread, the legacy default stream),
 * and two more threads have a handle each on one shared stream. All start
 * together behind a barrier and are joined at the end.
 *
 *   audit_threads [--rounds R]     (default 12 rounds of 4 calls per thread)
 *
 * The output hash combines each thread's own hash in thread order, so it does
 * not depend on how the threads interleave. Prints "calls N" and
 * "output-hash H" (audit_common.h); exits 0, or 2 on failure.
 */
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <pthread.h>

#include "audit_common.h"

#define THREADS 6

enum stream_kind { OWN_NONBLOCKING, OWN_BLOCKING, PER_THREAD, LEGACY, SHARED };

static const enum stream_kind kinds[THREADS] = {OWN_NONBLOCKING, OWN_BLOCKING, PER_THREAD, LEGACY, SHARED, SHARED};

static pthread_barrier_t start;
static cudaStream_t shared_stream;
static int rounds = 12;

typedef struct worker {
    int id;
    uint64_t calls, hash;
} worker;

/* Copies an output back on the thread's stream and folds it into its hash. */
static void fold(worker *w, cudaStream_t s, const void *dev, size_t bytes) {
    unsigned char *host = malloc(bytes);
    MUST(cudaMemcpyAsync(host, dev, bytes, cudaMemcpyDeviceToHost, s));
    MUST(cudaStreamSynchronize(s));
    w->hash = fnv1a(w->hash, host, bytes);
    w->calls++;
    free(host);
}

static void *upload(cudaStream_t s, int type, size_t n, uint64_t seed) {
    size_t bytes = n * type_size(type);
    void *host = malloc(bytes), *dev;
    fill_random(host, type, n, seed);
    MUST(cudaMalloc(&dev, bytes));
    MUST(cudaMemcpyAsync(dev, host, bytes, cudaMemcpyHostToDevice, s));
    MUST(cudaStreamSynchronize(s));
    free(host);
    return dev;
}

static void *run(void *arg) {
    worker *w = arg;
    cudaStream_t s = NULL;
    switch (kinds[w->id]) {
    case OWN_NONBLOCKING:
        MUST(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
        break;
    case OWN_BLOCKING:
        MUST(cudaStreamCreate(&s));
        break;
    case PER_THREAD:
        s = cudaStreamPerThread;
        break;
    case LEGACY:
        s = NULL;
        break;
    case SHARED:
        s = shared_stream;
        break;
    }
    cublasHandle_t h;
    cublasLtHandle_t lt;
    MUST(cublasCreate_v2(&h));
    MUST(cublasSetStream_v2(h, s));
    MUST(cublasLtCreate(&lt));
    /* Each thread its own shape, so that a mix-up of calls between threads shows. */
    const int m = 16 + 4 * w->id, n = 8 + w->id, k = 24 + 2 * w->id, batch = 2;
    const float alpha = 1.0f, beta = 0.5f, zero = 0.0f;
    pthread_barrier_wait(&start);
    for (int r = 0; r < rounds; r++) {
        uint64_t seed = (uint64_t)w->id * 100000 + (uint64_t)r * 100;
        float *a = upload(s, CUDA_R_32F, (size_t)m * k * batch, seed + 1);
        float *b = upload(s, CUDA_R_32F, (size_t)k * n * batch, seed + 2);
        float *c = upload(s, CUDA_R_32F, (size_t)m * n * batch, seed + 3);
        void *a16 = upload(s, CUDA_R_16BF, (size_t)m * k, seed + 4);
        void *b16 = upload(s, CUDA_R_16BF, (size_t)k * n, seed + 5);
        void *c16 = upload(s, CUDA_R_16BF, (size_t)m * n, seed + 6);

        MUST(cublasSgemm_v2(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &alpha, a, m, b, k, &beta, c, m));
        fold(w, s, c, (size_t)m * n * 4);
        MUST(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &alpha, a16, CUDA_R_16BF, k, b16, CUDA_R_16BF, k, &zero,
                          c16, CUDA_R_16BF, m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        fold(w, s, c16, (size_t)m * n * 2);
        MUST(cublasSgemmStridedBatched(h, CUBLAS_OP_N, CUBLAS_OP_T, m, n, k, &alpha, a, m, (long long)m * k, b, n,
                                       (long long)k * n, &beta, c, m, (long long)m * n, batch));
        fold(w, s, c, (size_t)m * n * batch * 4);

        /* cuBLASLt in place: C == D, beta != 0. */
        cublasLtMatmulDesc_t desc;
        cublasLtMatrixLayout_t la, lb, lc;
        MUST(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
        int32_t ta = CUBLAS_OP_T;
        MUST(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
        MUST(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, (uint64_t)k, (uint64_t)m, k));
        MUST(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, (uint64_t)k, (uint64_t)n, k));
        MUST(cublasLtMatrixLayoutCreate(&lc, CUDA_R_16BF, (uint64_t)m, (uint64_t)n, m));
        MUST(cublasLtMatmul(lt, desc, &alpha, a16, la, b16, lb, &beta, c16, lc, c16, lc, NULL, NULL, 0, s));
        fold(w, s, c16, (size_t)m * n * 2);
        MUST(cublasLtMatmulDescDestroy(desc));
        MUST(cublasLtMatrixLayoutDestroy(la));
        MUST(cublasLtMatrixLayoutDestroy(lb));
        MUST(cublasLtMatrixLayoutDestroy(lc));

        void *bufs[] = {a, b, c, a16, b16, c16};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
            MUST(cudaFree(bufs[i]));
    }
    MUST(cublasLtDestroy(lt));
    MUST(cublasDestroy_v2(h));
    if (kinds[w->id] == OWN_NONBLOCKING || kinds[w->id] == OWN_BLOCKING)
        MUST(cudaStreamDestroy(s));
    return NULL;
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "--rounds"))
        rounds = atoi(argv[2]);
    else if (argc != 1) {
        fprintf(stderr, "usage: audit_threads [--rounds R]\n");
        return 2;
    }
    MUST(cudaStreamCreateWithFlags(&shared_stream, cudaStreamNonBlocking));
    pthread_barrier_init(&start, NULL, THREADS);
    worker workers[THREADS];
    pthread_t threads[THREADS];
    for (int i = 0; i < THREADS; i++) {
        workers[i] = (worker){i, 0, FNV_OFFSET};
        MUST(pthread_create(&threads[i], NULL, run, &workers[i]));
    }
    uint64_t calls = 0, hash = FNV_OFFSET;
    for (int i = 0; i < THREADS; i++) {
        MUST(pthread_join(threads[i], NULL));
        calls += workers[i].calls;
        hash = fnv1a(hash, &workers[i].hash, sizeof workers[i].hash);
    }
    MUST(cudaStreamDestroy(shared_stream));
    print_result(calls, hash);
    return 0;
}

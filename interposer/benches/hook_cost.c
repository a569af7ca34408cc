/*
 * Benchmark program for interposer/benches/hook_cost.rs: issues N small cublasGemmEx
 * calls on one stream and prints the time the calling thread spent per call
 * (enqueue: what the hook adds to the application) and the wall time per call
 * including the final synchronisation.
 *
 *   hook_cost_prog N M K REPEATS [BATCH]
 *
 * With BATCH, the stream is synchronised after every BATCH calls, outside the enqueue
 * time: on a real GPU the launch queue then never fills, so the enqueue time stays the
 * host's (without it, N calls faster than the GPU runs them wait for the GPU).
 *
 * Output, one line per repeat: "enqueue_ns X total_ns Y".
 */
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define MUST(x)                                                                     \
    do {                                                                            \
        long r_ = (long)(x);                                                        \
        if (r_) {                                                                   \
            fprintf(stderr, "%s failed: %ld\n", #x, r_);                            \
            exit(2);                                                                \
        }                                                                           \
    } while (0)

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc < 5)
        return 2;
    int calls = atoi(argv[1]), m = atoi(argv[2]), k = atoi(argv[3]), repeats = atoi(argv[4]);
    int batch = argc > 5 ? atoi(argv[5]) : calls;
    if (calls <= 0 || batch <= 0)
        return 2;
    int n = m;
    cublasHandle_t h;
    cudaStream_t s;
    MUST(cublasCreate(&h));
    MUST(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    MUST(cublasSetStream(h, s));
    float *a, *b, *c;
    MUST(cudaMalloc((void **)&a, sizeof(float) * m * k));
    MUST(cudaMalloc((void **)&b, sizeof(float) * k * n));
    MUST(cudaMalloc((void **)&c, sizeof(float) * m * n));
    MUST(cudaMemset(a, 0, sizeof(float) * m * k));
    MUST(cudaMemset(b, 0, sizeof(float) * k * n));
    MUST(cudaDeviceSynchronize());
    float one = 1.0f, zero = 0.0f;
    for (int r = 0; r < repeats + 1; r++) {
        double enqueue = 0, t0 = now_ns();
        for (int done = 0; done < calls; done += batch) {
            int upto = done + batch < calls ? done + batch : calls;
            double b0 = now_ns();
            for (int i = done; i < upto; i++)
                MUST(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, a, CUDA_R_32F, m, b, CUDA_R_32F, k,
                                  &zero, c, CUDA_R_32F, m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
            enqueue += now_ns() - b0;
            if (upto < calls)
                MUST(cudaStreamSynchronize(s));
        }
        MUST(cudaStreamSynchronize(s));
        double t2 = now_ns();
        if (r > 0) /* the first round warms up (module load, ring allocation) */
            printf("enqueue_ns %.1f total_ns %.1f\n", enqueue / calls, (t2 - t0) / calls);
    }
    return 0;
}

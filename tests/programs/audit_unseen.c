/*
 * cuBLAS handles and stream captures configured behind the library's back: through
 * the real functions found with dlvsym, which the library does not redirect.
 *
 *   audit_unseen MODE
 *
 * MODE is one of
 *   followed     handle created and its stream set through the (hooked) API: 40
 *                cublasSgemm_v2 calls on stream A, then 40 on stream B;
 *   unfollowed   the same, but the handle is created and both streams are set with
 *                the real cublasCreate_v2 / cublasSetStream_v2 (the library never
 *                saw the handle);
 *   behind       created and set to stream A through the API, then switched to stream
 *                B with the real cublasSetStream_v2;
 *   pointer      followed, but before the 40 calls on stream B the handle is switched
 *                to device pointer mode with the real cublasSetPointerMode_v2, and
 *                alpha and beta are passed in device memory from then on (a library
 *                that read them as host memory would crash);
 *   capture      10 calls in a capture on stream A begun and ended with the real
 *                cudaStreamBeginCapture / cudaStreamEndCapture, then 10 eager calls.
 * Prints "stream-a X", "stream-b Y" (the handles as numbers), then "calls N" and
 * "output-hash H" (audit_common.h); exits 0, or 2 on failure.
 */
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <dlfcn.h>

#include "audit_common.h"

static void *real(const char *soname, const char *name) {
    void *lib = dlopen(soname, RTLD_NOW | RTLD_NOLOAD);
    void *p = lib ? dlvsym(lib, name, soname) : NULL;
    if (!p) {
        printf("FAIL setup dlvsym(%s, %s)\n", soname, name);
        exit(2);
    }
    return p;
}

enum { M = 32, K = 48 };

int main(int argc, char **argv) {
    if (argc != 2) {
        printf("FAIL setup usage: audit_unseen followed|unfollowed|behind|pointer|capture\n");
        return 2;
    }
    const char *mode = argv[1];
    __typeof__(&cublasCreate_v2) create = cublasCreate_v2;
    __typeof__(&cublasSetStream_v2) set_stream = cublasSetStream_v2;
    __typeof__(&cublasSetStream_v2) real_set_stream = real("libcublas.so.13", "cublasSetStream_v2");
    if (!strcmp(mode, "unfollowed")) {
        create = real("libcublas.so.13", "cublasCreate_v2");
        set_stream = real_set_stream;
    }
    cublasHandle_t h;
    cudaStream_t sa, sb;
    MUST(create(&h));
    MUST(cudaStreamCreate(&sa));
    MUST(cudaStreamCreate(&sb));
    printf("stream-a %lu\nstream-b %lu\n", (unsigned long)(uintptr_t)sa, (unsigned long)(uintptr_t)sb);
    float *a, *b, *c;
    MUST(cudaMalloc((void **)&a, sizeof(float) * M * K));
    MUST(cudaMalloc((void **)&b, sizeof(float) * K));
    MUST(cudaMalloc((void **)&c, sizeof(float) * M));
    float host[M * K];
    fill_random(host, CUDA_R_32F, M * K, 1);
    MUST(cudaMemcpy(a, host, sizeof host, cudaMemcpyHostToDevice));
    fill_random(host, CUDA_R_32F, K, 2);
    MUST(cudaMemcpy(b, host, sizeof(float) * K, cudaMemcpyHostToDevice));
    float one_host = 1.0f, zero_host = 0.0f;
    float *one = &one_host, *zero = &zero_host;
    uint64_t hash = FNV_OFFSET;
    int calls = 0;
#define GEMM() (calls++, cublasSgemm_v2(h, CUBLAS_OP_N, CUBLAS_OP_N, M, 1, K, one, a, M, b, K, zero, c, M))
    if (!strcmp(mode, "capture")) {
        __typeof__(&cudaStreamBeginCapture) begin = real("libcudart.so.13", "cudaStreamBeginCapture");
        __typeof__(&cudaStreamEndCapture) end = real("libcudart.so.13", "cudaStreamEndCapture");
        MUST(set_stream(h, sa));
        MUST(begin(sa, cudaStreamCaptureModeRelaxed));
        for (int i = 0; i < 10; i++)
            MUST(GEMM());
        cudaGraph_t g;
        MUST(end(sa, &g));
        MUST(cudaGraphDestroy(g));
        for (int i = 0; i < 10; i++)
            MUST(GEMM());
    } else {
        MUST(set_stream(h, sa));
        for (int i = 0; i < 40; i++)
            MUST(GEMM());
        MUST((!strcmp(mode, "behind") ? real_set_stream : set_stream)(h, sb));
        if (!strcmp(mode, "pointer")) {
            __typeof__(&cublasSetPointerMode_v2) real_set_mode =
                real("libcublas.so.13", "cublasSetPointerMode_v2");
            float scalars[2] = {1.0f, 0.0f};
            float *dev;
            MUST(cudaMalloc((void **)&dev, sizeof scalars));
            MUST(cudaMemcpy(dev, scalars, sizeof scalars, cudaMemcpyHostToDevice));
            MUST(real_set_mode(h, CUBLAS_POINTER_MODE_DEVICE));
            one = dev;
            zero = dev + 1;
        }
        for (int i = 0; i < 40; i++)
            MUST(GEMM());
    }
    MUST(cudaDeviceSynchronize());
    MUST(cudaMemcpy(host, c, sizeof(float) * M, cudaMemcpyDeviceToHost));
    hash = fnv1a(hash, host, sizeof(float) * M);
    printf("calls %d\noutput-hash %016llx\n", calls, (unsigned long long)hash);
    return 0;
}

/*
 * A small program for the library's lifecycle tests: twelve cublasSgemm_v2 calls on
 * seeded data, then an ending chosen on the command line.
 *
 *   audit_lifecycle [return|exit|_exit|abort]
 *
 * return: main returns 0; exit: exit(0) from a function below main; _exit: _exit(0)
 * (no atexit handlers, no stdio flush: the result lines are flushed before); abort:
 * abort() (SIGABRT). Prints "calls N" and "output-hash H" (audit_common.h) before it
 * ends. Exits 0, or 2 on a setup failure.
 */
#include <stdlib.h>
#include <unistd.h>

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "audit_common.h"

static void end_with(const char *how) {
    if (!strcmp(how, "exit"))
        exit(0);
    if (!strcmp(how, "_exit"))
        _exit(0);
    if (!strcmp(how, "abort"))
        abort();
}

int main(int argc, char **argv) {
    const char *how = argc > 1 ? argv[1] : "return";
    if (argc > 2 || (strcmp(how, "return") && strcmp(how, "exit") && strcmp(how, "_exit") && strcmp(how, "abort"))) {
        fprintf(stderr, "usage: audit_lifecycle [return|exit|_exit|abort]\n");
        return 2;
    }
    const int m = 32, n = 16, k = 24, calls = 12;
    const float one = 1.0f, zero = 0.0f;
    size_t na = (size_t)m * k, nb = (size_t)k * n, nc = (size_t)m * n;
    float *ha = malloc(na * 4), *hb = malloc(nb * 4), *hc = malloc(nc * 4), *a, *b, *c;
    fill_random(ha, CUDA_R_32F, na, 1);
    fill_random(hb, CUDA_R_32F, nb, 2);
    MUST(cudaMalloc((void **)&a, na * 4));
    MUST(cudaMalloc((void **)&b, nb * 4));
    MUST(cudaMalloc((void **)&c, nc * 4));
    MUST(cudaMemcpy(a, ha, na * 4, cudaMemcpyHostToDevice));
    MUST(cudaMemcpy(b, hb, nb * 4, cudaMemcpyHostToDevice));
    cublasHandle_t h;
    MUST(cublasCreate_v2(&h));
    uint64_t hash = FNV_OFFSET;
    for (int i = 0; i < calls; i++) {
        MUST(cublasSgemm_v2(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, a, m, b, k, &zero, c, m));
        MUST(cudaMemcpy(hc, c, nc * 4, cudaMemcpyDeviceToHost));
        hash = fnv1a(hash, hc, nc * 4);
        MUST(cudaMemcpy(a, c, (nc < na ? nc : na) * 4, cudaMemcpyDeviceToDevice));
    }
    print_result((uint64_t)calls, hash);
    end_with(how);
    MUST(cublasDestroy_v2(h));
    return 0;
}

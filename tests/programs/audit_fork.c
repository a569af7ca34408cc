/*
 * fork() and the library: a child forked before the parent's first GEMM audits into a
 * stream of its own; a child forked after it cannot use the GPU (CUDA's rule) and is
 * named in the parent's stream.
 *
 *   audit_fork --early    fork first; parent and child each make 12 cublasSgemm_v2
 *                         calls, the child exits, the parent waits for it
 *   audit_fork --late     the parent makes 12 calls, forks a child that exits at once
 *                         without touching CUDA, then makes 12 more
 *
 * The parent prints "child-pid P", "child-status S" (its exit status) and the result
 * lines of audit_common.h for its own calls ("calls N", "output-hash H"); with --early
 * the child prints "child-calls N" and "child-hash H". Exits 0, or 2 on failure.
 */
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <sys/wait.h>
#include <unistd.h>

#include "audit_common.h"

/* Makes `count` 16x8x16 f32 GEMMs; returns the hash of their outputs. */
static uint64_t gemms(int count, uint64_t seed) {
    const int m = 16, n = 8, k = 16;
    cublasHandle_t h;
    MUST(cublasCreate_v2(&h));
    float *a, *b, *c, *ha = malloc((size_t)m * k * 4), *hb = malloc((size_t)k * n * 4), *out = malloc((size_t)m * n * 4);
    MUST(cudaMalloc((void **)&a, (size_t)m * k * 4));
    MUST(cudaMalloc((void **)&b, (size_t)k * n * 4));
    MUST(cudaMalloc((void **)&c, (size_t)m * n * 4));
    uint64_t hash = FNV_OFFSET;
    const float one = 1.0f, zero = 0.0f;
    for (int i = 0; i < count; i++) {
        fill_random(ha, CUDA_R_32F, (size_t)m * k, seed + 2 * (uint64_t)i);
        fill_random(hb, CUDA_R_32F, (size_t)k * n, seed + 2 * (uint64_t)i + 1);
        MUST(cudaMemcpy(a, ha, (size_t)m * k * 4, cudaMemcpyHostToDevice));
        MUST(cudaMemcpy(b, hb, (size_t)k * n * 4, cudaMemcpyHostToDevice));
        MUST(cublasSgemm_v2(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, a, m, b, k, &zero, c, m));
        MUST(cudaMemcpy(out, c, (size_t)m * n * 4, cudaMemcpyDeviceToHost));
        hash = fnv1a(hash, out, (size_t)m * n * 4);
    }
    MUST(cudaFree(a));
    MUST(cudaFree(b));
    MUST(cudaFree(c));
    MUST(cublasDestroy_v2(h));
    free(ha);
    free(hb);
    free(out);
    return hash;
}

int main(int argc, char **argv) {
    int early = argc == 2 && !strcmp(argv[1], "--early"), late = argc == 2 && !strcmp(argv[1], "--late");
    if (!early && !late) {
        fprintf(stderr, "usage: audit_fork --early | --late\n");
        return 2;
    }
    uint64_t calls = 0, hash = FNV_OFFSET;
    if (late) {
        hash = gemms(12, 100);
        calls += 12;
    }
    fflush(stdout);
    pid_t child = fork();
    if (child < 0) {
        printf("FAIL fork\n");
        return 2;
    }
    if (child == 0) {
        if (late)
            _exit(0); /* a child of a CUDA process must not use CUDA */
        uint64_t h = gemms(12, 500);
        printf("child-calls 12\nchild-hash %016llx\n", (unsigned long long)h);
        fflush(stdout);
        exit(0); /* a normal exit: the child's stream is finished */
    }
    int status = 0;
    if (early) {
        if (waitpid(child, &status, 0) != child) {
            printf("FAIL waitpid\n");
            return 2;
        }
        hash = fnv1a(gemms(12, 900), &hash, sizeof hash);
        calls += 12;
    } else {
        hash = fnv1a(hash, &calls, 0);
        uint64_t h2 = gemms(12, 300);
        hash = fnv1a(hash, &h2, sizeof h2);
        calls += 12;
        if (waitpid(child, &status, 0) != child) {
            printf("FAIL waitpid\n");
            return 2;
        }
    }
    printf("child-pid %d\nchild-status %d\n", (int)child, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    print_result(calls, hash);
    return 0;
}

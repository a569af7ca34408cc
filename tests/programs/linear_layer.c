/*
 * A linear layer as `mmaudit-verify plan` models it (verifier/src/cheat.rs): weights
 * W (m x k) ~ N(0, 0.02) and activations X (k x n) ~ N(0, 1), both bf16, C (m x n) =
 * op(W) X with cublasGemmEx (op(W) = W^T of the k x m column-major array, as
 * nn.Linear), f32 compute, bf16 output; --calls times, new activations each call.
 *
 *   linear_layer --m M --n N --k K [--calls C] [--seed S] [--trace]
 *
 * Prints what every audit program prints (audit_common.h): with --trace one line per
 * call, then "calls N" and "output-hash H".
 */
#include <math.h>

#include "audit_common.h"
#include "cublas_v2.h"
#include "cuda_runtime.h"

/* Standard normal from two uniforms (Box-Muller). */
static double normal(uint64_t *state) {
    double u = 1.0 - (double)(splitmix64(state) >> 11) * 0x1p-53;
    double v = (double)(splitmix64(state) >> 11) * 0x1p-53;
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

static void fill_normal(uint16_t *out, size_t n, double sigma, uint64_t *state) {
    for (size_t i = 0; i < n; i++)
        out[i] = f32_to_bf16((float)(sigma * normal(state)));
}

static long arg_long(const char *name, const char *value) {
    char *end;
    long v = strtol(value, &end, 10);
    if (*end || v <= 0) {
        fprintf(stderr, "linear_layer: %s wants a positive integer, not '%s'\n", name, value);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv) {
    long m = 0, n = 0, k = 0, calls = 1, seed = 1;
    int trace = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--trace")) {
            trace = 1;
        } else if (i + 1 < argc && !strcmp(a, "--m")) {
            m = arg_long(a, argv[++i]);
        } else if (i + 1 < argc && !strcmp(a, "--n")) {
            n = arg_long(a, argv[++i]);
        } else if (i + 1 < argc && !strcmp(a, "--k")) {
            k = arg_long(a, argv[++i]);
        } else if (i + 1 < argc && !strcmp(a, "--calls")) {
            calls = arg_long(a, argv[++i]);
        } else if (i + 1 < argc && !strcmp(a, "--seed")) {
            seed = arg_long(a, argv[++i]);
        } else {
            fprintf(stderr, "usage: linear_layer --m M --n N --k K [--calls C] [--seed S] [--trace]\n");
            return 2;
        }
    }
    if (!m || !n || !k) {
        fprintf(stderr, "linear_layer: --m, --n and --k are required\n");
        return 2;
    }
    uint64_t state = (uint64_t)seed;
    size_t nw = (size_t)m * k, nx = (size_t)k * n, nc = (size_t)m * n;
    uint16_t *w = malloc(nw * 2), *x = malloc(nx * 2), *c = malloc(nc * 2);
    if (!w || !x || !c) {
        printf("FAIL setup out of memory\n");
        return 2;
    }
    fill_normal(w, nw, 0.02, &state);
    cublasHandle_t handle;
    void *dw, *dx, *dc;
    MUST(cublasCreate(&handle));
    MUST(cudaMalloc(&dw, nw * 2));
    MUST(cudaMalloc(&dx, nx * 2));
    MUST(cudaMalloc(&dc, nc * 2));
    MUST(cudaMemcpy(dw, w, nw * 2, cudaMemcpyHostToDevice));
    const float alpha = 1.0f, beta = 0.0f;
    uint64_t all = FNV_OFFSET;
    for (long call = 0; call < calls; call++) {
        fill_normal(x, nx, 1.0, &state);
        MUST(cudaMemcpy(dx, x, nx * 2, cudaMemcpyHostToDevice));
        MUST(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, (int)m, (int)n, (int)k, &alpha, dw, CUDA_R_16BF, (int)k,
                          dx, CUDA_R_16BF, (int)k, &beta, dc, CUDA_R_16BF, (int)m, CUBLAS_COMPUTE_32F,
                          CUBLAS_GEMM_DEFAULT));
        MUST(cudaMemcpy(c, dc, nc * 2, cudaMemcpyDeviceToHost));
        uint64_t h = fnv1a(FNV_OFFSET, c, nc * 2);
        all = fnv1a(all, c, nc * 2);
        if (trace)
            printf("call %ld cublasGemmEx m=%ld n=%ld k=%ld batch=1 hash=%016llx\n", call, m, n, k,
                   (unsigned long long)h);
    }
    printf("calls %ld\n", calls);
    printf("output-hash %016llx\n", (unsigned long long)all);
    MUST(cudaFree(dw));
    MUST(cudaFree(dx));
    MUST(cudaFree(dc));
    MUST(cublasDestroy(handle));
    free(w);
    free(x);
    free(c);
    return 0;
}

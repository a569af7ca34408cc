/*
 * cuBLASLt matmul descriptors and layouts the library follows through their
 * creators and setters, and one changed behind its back.
 *
 *   audit_ltfollow MODE
 *
 * MODE is one of
 *   fresh    40 cublasLtMatmul calls, each with a descriptor (TRANSA = T, a bias
 *            epilogue) and three layouts created, set and destroyed around it, as
 *            PyTorch does;
 *   reuse    the same 40 calls with one descriptor and one set of layouts made once;
 *   behind   reuse, but after 20 calls the descriptor's epilogue is set back to
 *            DEFAULT with the real cublasLtMatmulDescSetAttribute (found with
 *            dlvsym, which the library does not redirect).
 * Prints "calls N" and "output-hash H" (audit_common.h); exits 0, or 2 on failure.
 */
#include <cublasLt.h>
#include <cuda_runtime.h>
#include <dlfcn.h>

#include "audit_common.h"

enum { M = 32, N = 8, K = 48, CALLS = 40 };

typedef struct objects {
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t a, b, c;
} objects;

static objects make(const float *bias) {
    objects o;
    MUST(cublasLtMatmulDescCreate(&o.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t t = CUBLAS_OP_T;
    MUST(cublasLtMatmulDescSetAttribute(o.desc, CUBLASLT_MATMUL_DESC_TRANSA, &t, sizeof t));
    cublasLtEpilogue_t ep = CUBLASLT_EPILOGUE_BIAS;
    MUST(cublasLtMatmulDescSetAttribute(o.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &ep, sizeof ep));
    MUST(cublasLtMatmulDescSetAttribute(o.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
    MUST(cublasLtMatrixLayoutCreate(&o.a, CUDA_R_32F, K, M, K)); /* op(A) = A^T */
    MUST(cublasLtMatrixLayoutCreate(&o.b, CUDA_R_32F, K, N, K));
    MUST(cublasLtMatrixLayoutCreate(&o.c, CUDA_R_32F, M, N, M));
    return o;
}

static void destroy(objects o) {
    MUST(cublasLtMatrixLayoutDestroy(o.a));
    MUST(cublasLtMatrixLayoutDestroy(o.b));
    MUST(cublasLtMatrixLayoutDestroy(o.c));
    MUST(cublasLtMatmulDescDestroy(o.desc));
}

int main(int argc, char **argv) {
    const char *mode = argc == 2 ? argv[1] : "";
    int fresh = !strcmp(mode, "fresh"), behind = !strcmp(mode, "behind");
    if (!fresh && !behind && strcmp(mode, "reuse")) {
        printf("FAIL setup usage: audit_ltfollow fresh|reuse|behind\n");
        return 2;
    }
    cublasLtHandle_t lt;
    MUST(cublasLtCreate(&lt));
    float *a, *b, *c, *bias;
    MUST(cudaMalloc((void **)&a, sizeof(float) * K * M));
    MUST(cudaMalloc((void **)&b, sizeof(float) * K * N));
    MUST(cudaMalloc((void **)&c, sizeof(float) * M * N));
    MUST(cudaMalloc((void **)&bias, sizeof(float) * M));
    float host[K * M];
    fill_random(host, CUDA_R_32F, K * M, 1);
    MUST(cudaMemcpy(a, host, sizeof(float) * K * M, cudaMemcpyHostToDevice));
    fill_random(host, CUDA_R_32F, K * N, 2);
    MUST(cudaMemcpy(b, host, sizeof(float) * K * N, cudaMemcpyHostToDevice));
    fill_random(host, CUDA_R_32F, M, 3);
    MUST(cudaMemcpy(bias, host, sizeof(float) * M, cudaMemcpyHostToDevice));
    float alpha = 1.0f, beta = 0.0f;
    uint64_t hash = FNV_OFFSET;
    objects o = make(bias);
    for (int i = 0; i < CALLS; i++) {
        if (behind && i == CALLS / 2) {
            void *lib = dlopen("libcublasLt.so.13", RTLD_NOW | RTLD_NOLOAD);
            __typeof__(&cublasLtMatmulDescSetAttribute) set =
                lib ? dlvsym(lib, "cublasLtMatmulDescSetAttribute", "libcublasLt.so.13") : NULL;
            if (!set) {
                printf("FAIL setup dlvsym(cublasLtMatmulDescSetAttribute)\n");
                return 2;
            }
            cublasLtEpilogue_t ep = CUBLASLT_EPILOGUE_DEFAULT;
            MUST(set(o.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &ep, sizeof ep));
        }
        MUST(cublasLtMatmul(lt, o.desc, &alpha, a, o.a, b, o.b, &beta, c, o.c, c, o.c, NULL, NULL, 0, 0));
        MUST(cudaDeviceSynchronize());
        MUST(cudaMemcpy(host, c, sizeof(float) * M * N, cudaMemcpyDeviceToHost));
        hash = fnv1a(hash, host, sizeof(float) * M * N);
        if (fresh) {
            destroy(o);
            o = make(bias);
        }
    }
    destroy(o);
    printf("calls %d\noutput-hash %016llx\n", CALLS, (unsigned long long)hash);
    return 0;
}

/*
 * cuBLASLt matmul descriptors and layouts the library follows through their
 * creators and setters, and ones changed behind its back.
 *
 *   audit_ltfollow MODE
 *
 * MODE is one of
 *   fresh           40 cublasLtMatmul calls, each with a descriptor (TRANSA = T, a
 *                   bias epilogue) and three layouts created, set and destroyed
 *                   around it, as PyTorch does;
 *   reuse           the same 40 calls with one descriptor and one set of layouts;
 *   behind          reuse, but after 20 calls the epilogue is set back to DEFAULT
 *                   with the real cublasLtMatmulDescSetAttribute (found with dlvsym,
 *                   which the library does not redirect);
 *   bias-behind     reuse, but after 20 calls the bias pointer is set to another
 *                   buffer with the real setter;
 *   pointer-behind  reuse, the descriptor switched to device pointer mode with the
 *                   real setter before the first call, alpha and beta in device
 *                   memory (a library that read them as host memory would crash);
 *   graph-behind    the bias pointer set to another buffer with the real setter, then
 *                   one call captured into a CUDA graph on a stream of its own and the
 *                   graph launched 40 times.
 * Prints "calls N" (API calls made) and "output-hash H" (audit_common.h); exits 0,
 * or 2 on failure.
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

/* cuBLASLt's own setter, which the library does not see. */
static void set_behind(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr, const void *v, size_t n) {
    void *lib = dlopen("libcublasLt.so.13", RTLD_NOW | RTLD_NOLOAD);
    __typeof__(&cublasLtMatmulDescSetAttribute) set =
        lib ? dlvsym(lib, "cublasLtMatmulDescSetAttribute", "libcublasLt.so.13") : NULL;
    if (!set) {
        printf("FAIL setup dlvsym(cublasLtMatmulDescSetAttribute)\n");
        exit(2);
    }
    MUST(set(d, attr, v, n));
}

static float *upload(uint64_t seed, int count) {
    float host[K * M];
    float *dev;
    fill_random(host, CUDA_R_32F, (size_t)count, seed);
    MUST(cudaMalloc((void **)&dev, sizeof(float) * (size_t)count));
    MUST(cudaMemcpy(dev, host, sizeof(float) * (size_t)count, cudaMemcpyHostToDevice));
    return dev;
}

int main(int argc, char **argv) {
    const char *mode = argc == 2 ? argv[1] : "";
    static const char *const modes[] = {"fresh", "reuse", "behind", "bias-behind", "pointer-behind", "graph-behind"};
    int known = 0;
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++)
        known |= !strcmp(mode, modes[i]);
    if (!known) {
        printf("FAIL setup usage: audit_ltfollow fresh|reuse|behind|bias-behind|pointer-behind|graph-behind\n");
        return 2;
    }
    int fresh = !strcmp(mode, "fresh"), graph = !strcmp(mode, "graph-behind");
    cublasLtHandle_t lt;
    MUST(cublasLtCreate(&lt));
    float *a = upload(1, K * M), *b = upload(2, K * N), *bias = upload(3, M), *bias2 = upload(4, M);
    float *c;
    MUST(cudaMalloc((void **)&c, sizeof(float) * M * N));
    float host_scalars[2] = {1.0f, 0.0f}, *dev_scalars;
    MUST(cudaMalloc((void **)&dev_scalars, sizeof host_scalars));
    MUST(cudaMemcpy(dev_scalars, host_scalars, sizeof host_scalars, cudaMemcpyHostToDevice));
    float alpha = 1.0f, beta = 0.0f;
    const float *pa = &alpha, *pb = &beta;
    float out[M * N];
    uint64_t hash = FNV_OFFSET;
    objects o = make(bias);
    if (!strcmp(mode, "pointer-behind")) {
        cublasLtPointerMode_t pm = CUBLASLT_POINTER_MODE_DEVICE;
        set_behind(o.desc, CUBLASLT_MATMUL_DESC_POINTER_MODE, &pm, sizeof pm);
        pa = dev_scalars;
        pb = dev_scalars + 1;
    }
    if (graph) {
        set_behind(o.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias2, sizeof bias2);
        cudaStream_t s;
        MUST(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
        cudaGraph_t g;
        cudaGraphExec_t x;
        MUST(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
        MUST(cublasLtMatmul(lt, o.desc, pa, a, o.a, b, o.b, pb, c, o.c, c, o.c, NULL, NULL, 0, s));
        MUST(cudaStreamEndCapture(s, &g));
        MUST(cudaGraphInstantiate(&x, g, 0));
        for (int i = 0; i < CALLS; i++) {
            MUST(cudaGraphLaunch(x, s));
            MUST(cudaStreamSynchronize(s));
            MUST(cudaMemcpy(out, c, sizeof out, cudaMemcpyDeviceToHost));
            hash = fnv1a(hash, out, sizeof out);
        }
        destroy(o);
        printf("calls 1\noutput-hash %016llx\n", (unsigned long long)hash);
        return 0;
    }
    for (int i = 0; i < CALLS; i++) {
        if (i == CALLS / 2 && !strcmp(mode, "behind")) {
            cublasLtEpilogue_t ep = CUBLASLT_EPILOGUE_DEFAULT;
            set_behind(o.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &ep, sizeof ep);
        }
        if (i == CALLS / 2 && !strcmp(mode, "bias-behind"))
            set_behind(o.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias2, sizeof bias2);
        MUST(cublasLtMatmul(lt, o.desc, pa, a, o.a, b, o.b, pb, c, o.c, c, o.c, NULL, NULL, 0, 0));
        MUST(cudaDeviceSynchronize());
        MUST(cudaMemcpy(out, c, sizeof out, cudaMemcpyDeviceToHost));
        hash = fnv1a(hash, out, sizeof out);
        if (fresh) {
            destroy(o);
            o = make(bias);
        }
    }
    destroy(o);
    printf("calls %d\noutput-hash %016llx\n", CALLS, (unsigned long long)hash);
    return 0;
}

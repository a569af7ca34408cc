/*
 * The rest of cuBLAS's GEMM surface, each entry point once with seeded data:
 * first the real-typed ones the library models (the _64 forms of the plain,
 * strided-batched, pointer-array and gemv entry points, cublasHgemmStridedBatched,
 * cublasDgemmBatched), then every complex GEMM (cublasCgemm_v2, cublasCgemm3m,
 * cublasZgemm_v2, their strided and pointer-array batches, cublasCgemv_v2,
 * cublasZgemv_v2, each also as _64), which protocol v1 does not describe. Two
 * complex results (a Zgemm with op C and op T, a Zgemv with op C) are checked on the
 * host, so the simulated GPU's complex arithmetic is tested too.
 *
 *   audit_wide [--trace]
 *
 * Prints "complex-from I" (the index of the first complex call; every later call is
 * complex), then "calls N" and "output-hash H" (audit_common.h), with --trace one
 * "call I ENTRY m=.. n=.. k=.. batch=.." line per call. Exits 0, or 2 on failure.
 */
#include <math.h>

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "audit_common.h"

static cublasHandle_t h;
static cudaStream_t stream;
static uint64_t ncalls, hash = FNV_OFFSET, seed = 1;
static int trace;

/* Element bytes of the types used here: the real ones, and complex f32 / f64. */
static size_t esize(int type) {
    return type == CUDA_C_32F ? 8 : type == CUDA_C_64F ? 16 : type_size(type);
}

static void *upload(int type, size_t n) {
    size_t bytes = n * esize(type);
    void *host = malloc(bytes), *dev;
    if (type == CUDA_C_32F || type == CUDA_C_64F)
        fill_random(host, type == CUDA_C_32F ? CUDA_R_32F : CUDA_R_64F, 2 * n, seed++);
    else
        fill_random(host, type, n, seed++);
    MUST(cudaMalloc(&dev, bytes));
    MUST(cudaMemcpy(dev, host, bytes, cudaMemcpyHostToDevice));
    free(host);
    return dev;
}

static void *download(const void *dev, size_t bytes) {
    void *host = malloc(bytes);
    MUST(cudaStreamSynchronize(stream));
    MUST(cudaMemcpy(host, dev, bytes, cudaMemcpyDeviceToHost));
    return host;
}

/* Counts a call and hashes `elems` output elements of `type` as copied back. */
static void done(const char *entry, long m, long n, long k, long batch, const void *out, size_t elems, int type) {
    void *host = download(out, elems * esize(type));
    hash = fnv1a(hash, host, elems * esize(type));
    free(host);
    if (trace)
        printf("call %llu %s m=%ld n=%ld k=%ld batch=%ld\n", (unsigned long long)ncalls, entry, m, n, k, batch);
    ncalls++;
}

/* A device array of `batch` pointers to consecutive matrices of `elems` elements. */
static void **pointers(void *base, int batch, size_t elems, int type) {
    void **host = malloc(sizeof(void *) * (size_t)batch), **dev;
    for (int i = 0; i < batch; i++)
        host[i] = (unsigned char *)base + (size_t)i * elems * esize(type);
    MUST(cudaMalloc((void **)&dev, sizeof(void *) * (size_t)batch));
    MUST(cudaMemcpy(dev, host, sizeof(void *) * (size_t)batch, cudaMemcpyHostToDevice));
    free(host);
    return dev;
}

/* The real-typed entry points. */
static void real_calls(void) {
    const int m = 24, n = 8, k = 40, batch = 3;
    const double d_one = 1.0, d_half = 0.5;
    const float one = 1.0f, half = 0.5f, zero = 0.0f;
    const uint16_t h_one = 0x3c00, h_half = 0x3800;
    const long long sa = (long long)m * k, sb = (long long)k * n, sc = (long long)m * n;

    double *da = upload(CUDA_R_64F, (size_t)sa * batch), *db = upload(CUDA_R_64F, (size_t)sb * batch);
    double *dc = upload(CUDA_R_64F, (size_t)sc * batch);
    MUST(cublasDgemm_v2_64(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &d_one, da, m, db, k, &d_half, dc, m));
    done("cublasDgemm_v2_64", m, n, k, 1, dc, (size_t)sc, CUDA_R_64F);
    MUST(cublasDgemmStridedBatched_64(h, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &d_one, da, k, sa, db, k, sb, &d_half,
                                      dc, m, sc, batch));
    done("cublasDgemmStridedBatched_64", m, n, k, batch, dc, (size_t)sc * batch, CUDA_R_64F);
    void **pa = pointers(da, batch, (size_t)sa, CUDA_R_64F), **pb = pointers(db, batch, (size_t)sb, CUDA_R_64F);
    void **pc = pointers(dc, batch, (size_t)sc, CUDA_R_64F);
    MUST(cublasDgemmBatched(h, CUBLAS_OP_N, CUBLAS_OP_T, m, n, k, &d_one, (const double *const *)pa, m,
                            (const double *const *)pb, n, &d_half, (double *const *)pc, m, batch));
    done("cublasDgemmBatched", m, n, k, batch, dc, (size_t)sc * batch, CUDA_R_64F);
    MUST(cublasDgemmBatched_64(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &d_one, (const double *const *)pa, m,
                               (const double *const *)pb, k, &d_half, (double *const *)pc, m, batch));
    done("cublasDgemmBatched_64", m, n, k, batch, dc, (size_t)sc * batch, CUDA_R_64F);

    float *fa = upload(CUDA_R_32F, (size_t)sa * batch), *fb = upload(CUDA_R_32F, (size_t)sb * batch);
    float *fc = upload(CUDA_R_32F, (size_t)sc * batch);
    MUST(cublasSgemmStridedBatched_64(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, fa, m, sa, fb, k, sb, &half, fc, m,
                                      sc, batch));
    done("cublasSgemmStridedBatched_64", m, n, k, batch, fc, (size_t)sc * batch, CUDA_R_32F);
    void **qa = pointers(fa, batch, (size_t)sa, CUDA_R_32F), **qb = pointers(fb, batch, (size_t)sb, CUDA_R_32F);
    void **qc = pointers(fc, batch, (size_t)sc, CUDA_R_32F);
    MUST(cublasSgemmBatched_64(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, (const float *const *)qa, m,
                               (const float *const *)qb, k, &zero, (float *const *)qc, m, batch));
    done("cublasSgemmBatched_64", m, n, k, batch, fc, (size_t)sc * batch, CUDA_R_32F);
    void *a16 = upload(CUDA_R_16BF, (size_t)sa), *b16 = upload(CUDA_R_16BF, (size_t)sb);
    MUST(cublasSgemmEx_64(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, a16, CUDA_R_16BF, m, b16, CUDA_R_16BF, k, &half,
                          fc, CUDA_R_32F, m));
    done("cublasSgemmEx_64", m, n, k, 1, fc, (size_t)sc, CUDA_R_32F);

    __half *ha = upload(CUDA_R_16F, (size_t)sa * batch), *hb = upload(CUDA_R_16F, (size_t)sb * batch);
    __half *hc = upload(CUDA_R_16F, (size_t)sc * batch);
    MUST(cublasHgemm_64(h, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, (const __half *)&h_one, ha, k, hb, k,
                        (const __half *)&h_half, hc, m));
    done("cublasHgemm_64", m, n, k, 1, hc, (size_t)sc, CUDA_R_16F);
    MUST(cublasHgemmStridedBatched(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, (const __half *)&h_one, ha, m, sa, hb, k, sb,
                                   (const __half *)&h_half, hc, m, sc, batch));
    done("cublasHgemmStridedBatched", m, n, k, batch, hc, (size_t)sc * batch, CUDA_R_16F);
    MUST(cublasHgemmStridedBatched_64(h, CUBLAS_OP_N, CUBLAS_OP_T, m, n, k, (const __half *)&h_one, ha, m, sa, hb, n,
                                      sb, (const __half *)&h_half, hc, m, sc, batch));
    done("cublasHgemmStridedBatched_64", m, n, k, batch, hc, (size_t)sc * batch, CUDA_R_16F);
    void **ra = pointers(ha, batch, (size_t)sa, CUDA_R_16F), **rb = pointers(hb, batch, (size_t)sb, CUDA_R_16F);
    void **rc = pointers(hc, batch, (size_t)sc, CUDA_R_16F);
    MUST(cublasHgemmBatched_64(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, (const __half *)&h_one,
                               (const __half *const *)ra, m, (const __half *const *)rb, k, (const __half *)&h_half,
                               (__half *const *)rc, m, batch));
    done("cublasHgemmBatched_64", m, n, k, batch, hc, (size_t)sc * batch, CUDA_R_16F);

    float *x = upload(CUDA_R_32F, (size_t)2 * m), *y = upload(CUDA_R_32F, (size_t)k);
    MUST(cublasSgemv_v2_64(h, CUBLAS_OP_T, m, k, &one, fa, m, x, 2, &half, y, 1)); /* k x m times x at stride 2 */
    done("cublasSgemv_v2_64", k, 1, m, 1, y, (size_t)k, CUDA_R_32F);
    double *dx = upload(CUDA_R_64F, (size_t)k), *dy = upload(CUDA_R_64F, (size_t)m);
    MUST(cublasDgemv_v2_64(h, CUBLAS_OP_N, m, k, &d_one, da, m, dx, 1, &d_half, dy, 1));
    done("cublasDgemv_v2_64", m, 1, k, 1, dy, (size_t)m, CUDA_R_64F);
}

/* z[i] of an interleaved complex f64 array. */
static void zget(const double *p, size_t i, double v[2]) {
    v[0] = p[2 * i];
    v[1] = p[2 * i + 1];
}

/* Checks D = alpha op(A) op(B) + beta C0 (column-major, f64 complex) on the host. */
static void check_zgemm(const char *what, int ta, int tb, int m, int n, int k, const double alpha[2],
                        const double *a, int lda, const double *b, int ldb, const double beta[2], const double *c0,
                        const double *d, int ldc) {
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            double acc[2] = {0, 0}, x[2], y[2], c[2], want[2];
            for (int l = 0; l < k; l++) {
                zget(a, ta == CUBLAS_OP_N ? (size_t)i + (size_t)l * lda : (size_t)l + (size_t)i * lda, x);
                zget(b, tb == CUBLAS_OP_N ? (size_t)l + (size_t)j * ldb : (size_t)j + (size_t)l * ldb, y);
                if (ta == CUBLAS_OP_C)
                    x[1] = -x[1];
                if (tb == CUBLAS_OP_C)
                    y[1] = -y[1];
                acc[0] += x[0] * y[0] - x[1] * y[1];
                acc[1] += x[0] * y[1] + x[1] * y[0];
            }
            zget(c0, (size_t)i + (size_t)j * ldc, c);
            want[0] = alpha[0] * acc[0] - alpha[1] * acc[1] + beta[0] * c[0] - beta[1] * c[1];
            want[1] = alpha[0] * acc[1] + alpha[1] * acc[0] + beta[0] * c[1] + beta[1] * c[0];
            double got[2];
            zget(d, (size_t)i + (size_t)j * ldc, got);
            if (fabs(got[0] - want[0]) > 1e-12 * (1 + fabs(want[0])) ||
                fabs(got[1] - want[1]) > 1e-12 * (1 + fabs(want[1]))) {
                fprintf(stderr, "audit_wide: %s: D[%d,%d] = %g%+gi, expected %g%+gi\n", what, i, j, got[0], got[1],
                        want[0], want[1]);
                exit(2);
            }
        }
}

/* The complex entry points. */
static void complex_calls(void) {
    const int m = 6, n = 4, k = 5, batch = 2;
    const size_t sa = (size_t)m * k, sb = (size_t)k * n, sc = (size_t)m * n;
    const cuComplex c_alpha = {1.0f, 0.5f}, c_beta = {0.5f, -0.25f};
    const cuDoubleComplex z_alpha = {0.75, -0.5}, z_beta = {0.25, 0.5};

    cuComplex *ca = upload(CUDA_C_32F, sa * batch), *cb = upload(CUDA_C_32F, sb * batch);
    cuComplex *cc = upload(CUDA_C_32F, sc * batch);
    cuDoubleComplex *za = upload(CUDA_C_64F, sa * batch), *zb = upload(CUDA_C_64F, sb * batch);
    cuDoubleComplex *zc = upload(CUDA_C_64F, sc * batch);

    MUST(cublasCgemm_v2(h, CUBLAS_OP_C, CUBLAS_OP_N, m, n, k, &c_alpha, ca, k, cb, k, &c_beta, cc, m));
    done("cublasCgemm_v2", m, n, k, 1, cc, sc, CUDA_C_32F);
    MUST(cublasCgemm_v2_64(h, CUBLAS_OP_N, CUBLAS_OP_T, m, n, k, &c_alpha, ca, m, cb, n, &c_beta, cc, m));
    done("cublasCgemm_v2_64", m, n, k, 1, cc, sc, CUDA_C_32F);
    MUST(cublasCgemm3m(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &c_alpha, ca, m, cb, k, &c_beta, cc, m));
    done("cublasCgemm3m", m, n, k, 1, cc, sc, CUDA_C_32F);
    MUST(cublasCgemm3m_64(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &c_alpha, ca, m, cb, k, &c_beta, cc, m));
    done("cublasCgemm3m_64", m, n, k, 1, cc, sc, CUDA_C_32F);

    /* Zgemm with op C and op T, checked on the host against its inputs. */
    double *a_host = download(za, sa * 16), *b_host = download(zb, sb * 16), *c_host = download(zc, sc * 16);
    MUST(cublasZgemm_v2(h, CUBLAS_OP_C, CUBLAS_OP_T, m, n, k, &z_alpha, za, k, zb, n, &z_beta, zc, m));
    double *d_host = download(zc, sc * 16);
    check_zgemm("cublasZgemm_v2", CUBLAS_OP_C, CUBLAS_OP_T, m, n, k, (const double *)&z_alpha, a_host, k, b_host, n,
                (const double *)&z_beta, c_host, d_host, m);
    done("cublasZgemm_v2", m, n, k, 1, zc, sc, CUDA_C_64F);
    MUST(cublasZgemm_v2_64(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &z_alpha, za, m, zb, k, &z_beta, zc, m));
    done("cublasZgemm_v2_64", m, n, k, 1, zc, sc, CUDA_C_64F);

    MUST(cublasCgemmStridedBatched(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &c_alpha, ca, m, sa, cb, k, sb, &c_beta, cc,
                                   m, sc, batch));
    done("cublasCgemmStridedBatched", m, n, k, batch, cc, sc * batch, CUDA_C_32F);
    MUST(cublasCgemmStridedBatched_64(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &c_alpha, ca, m, sa, cb, k, sb, &c_beta,
                                      cc, m, sc, batch));
    done("cublasCgemmStridedBatched_64", m, n, k, batch, cc, sc * batch, CUDA_C_32F);
    MUST(cublasCgemm3mStridedBatched(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &c_alpha, ca, m, sa, cb, k, sb, &c_beta,
                                     cc, m, sc, batch));
    done("cublasCgemm3mStridedBatched", m, n, k, batch, cc, sc * batch, CUDA_C_32F);
    MUST(cublasCgemm3mStridedBatched_64(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &c_alpha, ca, m, sa, cb, k, sb,
                                        &c_beta, cc, m, sc, batch));
    done("cublasCgemm3mStridedBatched_64", m, n, k, batch, cc, sc * batch, CUDA_C_32F);
    MUST(cublasZgemmStridedBatched(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &z_alpha, za, m, sa, zb, k, sb, &z_beta, zc,
                                   m, sc, batch));
    done("cublasZgemmStridedBatched", m, n, k, batch, zc, sc * batch, CUDA_C_64F);
    MUST(cublasZgemmStridedBatched_64(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &z_alpha, za, m, sa, zb, k, sb, &z_beta,
                                      zc, m, sc, batch));
    done("cublasZgemmStridedBatched_64", m, n, k, batch, zc, sc * batch, CUDA_C_64F);

    void **pa = pointers(ca, batch, sa, CUDA_C_32F), **pb = pointers(cb, batch, sb, CUDA_C_32F);
    void **pc = pointers(cc, batch, sc, CUDA_C_32F);
    MUST(cublasCgemmBatched(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &c_alpha, (const cuComplex *const *)pa, m,
                            (const cuComplex *const *)pb, k, &c_beta, (cuComplex *const *)pc, m, batch));
    done("cublasCgemmBatched", m, n, k, batch, cc, sc * batch, CUDA_C_32F);
    MUST(cublasCgemmBatched_64(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &c_alpha, (const cuComplex *const *)pa, m,
                               (const cuComplex *const *)pb, k, &c_beta, (cuComplex *const *)pc, m, batch));
    done("cublasCgemmBatched_64", m, n, k, batch, cc, sc * batch, CUDA_C_32F);
    MUST(cublasCgemm3mBatched(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &c_alpha, (const cuComplex *const *)pa, m,
                              (const cuComplex *const *)pb, k, &c_beta, (cuComplex *const *)pc, m, batch));
    done("cublasCgemm3mBatched", m, n, k, batch, cc, sc * batch, CUDA_C_32F);
    MUST(cublasCgemm3mBatched_64(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &c_alpha, (const cuComplex *const *)pa, m,
                                 (const cuComplex *const *)pb, k, &c_beta, (cuComplex *const *)pc, m, batch));
    done("cublasCgemm3mBatched_64", m, n, k, batch, cc, sc * batch, CUDA_C_32F);
    void **qa = pointers(za, batch, sa, CUDA_C_64F), **qb = pointers(zb, batch, sb, CUDA_C_64F);
    void **qc = pointers(zc, batch, sc, CUDA_C_64F);
    MUST(cublasZgemmBatched(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &z_alpha, (const cuDoubleComplex *const *)qa, m,
                            (const cuDoubleComplex *const *)qb, k, &z_beta, (cuDoubleComplex *const *)qc, m, batch));
    done("cublasZgemmBatched", m, n, k, batch, zc, sc * batch, CUDA_C_64F);
    MUST(cublasZgemmBatched_64(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &z_alpha, (const cuDoubleComplex *const *)qa, m,
                               (const cuDoubleComplex *const *)qb, k, &z_beta, (cuDoubleComplex *const *)qc, m,
                               batch));
    done("cublasZgemmBatched_64", m, n, k, batch, zc, sc * batch, CUDA_C_64F);

    /* gemv: op C of the m x k matrix A times x (m elements) is k x 1. */
    cuComplex *cx = upload(CUDA_C_32F, (size_t)m), *cy = upload(CUDA_C_32F, (size_t)m);
    MUST(cublasCgemv_v2(h, CUBLAS_OP_N, m, k, &c_alpha, ca, m, cx, 1, &c_beta, cy, 1));
    done("cublasCgemv_v2", m, 1, k, 1, cy, (size_t)m, CUDA_C_32F);
    MUST(cublasCgemv_v2_64(h, CUBLAS_OP_T, m, k, &c_alpha, ca, m, cx, 1, &c_beta, cy, 1));
    done("cublasCgemv_v2_64", k, 1, m, 1, cy, (size_t)k, CUDA_C_32F);
    cuDoubleComplex *zx = upload(CUDA_C_64F, (size_t)m), *zy = upload(CUDA_C_64F, (size_t)m);
    double *x_host = download(zx, (size_t)m * 16), *y_host = download(zy, (size_t)k * 16);
    MUST(cublasZgemv_v2(h, CUBLAS_OP_C, m, k, &z_alpha, za, m, zx, 1, &z_beta, zy, 1));
    double *y_out = download(zy, (size_t)k * 16);
    check_zgemm("cublasZgemv_v2", CUBLAS_OP_C, CUBLAS_OP_N, k, 1, m, (const double *)&z_alpha, a_host, m, x_host, m,
                (const double *)&z_beta, y_host, y_out, k);
    done("cublasZgemv_v2", k, 1, m, 1, zy, (size_t)k, CUDA_C_64F);
    MUST(cublasZgemv_v2_64(h, CUBLAS_OP_N, m, k, &z_alpha, za, m, zx, 1, &z_beta, zy, 1));
    done("cublasZgemv_v2_64", m, 1, k, 1, zy, (size_t)m, CUDA_C_64F);
    free(a_host), free(b_host), free(c_host), free(d_host), free(x_host), free(y_host), free(y_out);
}

int main(int argc, char **argv) {
    trace = argc == 2 && !strcmp(argv[1], "--trace");
    if (argc > 1 && !trace) {
        fprintf(stderr, "usage: audit_wide [--trace]\n");
        return 2;
    }
    MUST(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    MUST(cublasCreate_v2(&h));
    MUST(cublasSetStream_v2(h, stream));
    real_calls();
    printf("complex-from %llu\n", (unsigned long long)ncalls);
    complex_calls();
    MUST(cublasDestroy_v2(h));
    print_result(ncalls, hash);
    return 0;
}

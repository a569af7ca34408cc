/*
 * A transformer-shaped GEMM workload: the GEMMs of a few Llama-style decoder
 * layers over one prompt (prefill), issued the way PyTorch issues them, with
 * deterministic weights from a seeded PRNG. It is the demo's workload and the
 * end-to-end tests' realistic one.
 *
 * Per layer (T tokens, hidden H, heads nh of size hd, kv heads nkv, MLP width I;
 * all activations are row-major [T, features], i.e. column-major [features, T]):
 *   QKV       cublasGemmEx, op(A) = T (nn.Linear weights [out, in]), fused into one
 *             call or three calls writing into one buffer (ldc > m), bf16/f16 in and
 *             out, f32 accumulation
 *   scores    cublasGemmStridedBatchedEx: K^T Q per head / sqrt(hd), f32 out; with
 *             grouped KV heads one call per KV head, stride 0 on the shared K
 *   context   cublasGemmStridedBatchedEx: V P per head, into the heads' columns
 *   o_proj    cublasGemmEx with beta = 1 into the residual stream (in place)
 *   gate, up  cublasLtMatmul with GELU_BIAS / BIAS epilogues
 *   down      cublasLtMatmul with beta = 1 and C == D: the residual add, in place
 * and after the last layer an lm_head cublasGemmEx with f32 logits. With --generate N
 * the prompt's pass (prefill) is followed by N decode passes of one token each, as
 * generate() runs them with a KV cache: the same GEMMs with n = 1, attention over the
 * cached keys and values of every earlier position (context = prompt + j + 1 for the
 * j-th new token; the new token's hidden state is a seeded random vector). RMSNorm,
 * RoPE, the causal softmax and gate * up run on the host between the GEMMs
 * (the simulated GPU runs no custom kernels), so the program also works
 * unchanged against real CUDA libraries.
 *
 *   llama_workload [--layers L] [--tokens T] [--hidden H] [--heads N] [--kv-heads N]
 *                  [--intermediate I] [--vocab V] [--dtype bf16|f16] [--separate-qkv]
 *                  [--seed S] [--generate N] [--write-weights FILE] [--trace]
 *                  [--warmup-ms MS]
 *
 * --warmup-ms MS makes one small GEMM of its own (counted, on buffers the model does
 * not use), waits for it and pauses MS milliseconds before the model: a library that
 * starts its session at the first GEMM then has its verifier's hello before the
 * model's first call, however loaded the machine.
 *
 * --write-weights FILE also writes the seeded weights, as they are uploaded, into a
 * safetensors file (nn.Linear layout [out, in]; names model.layers.L.self_attn.
 * {qkv,o}_proj.weight, model.layers.L.mlp.{gate,up,down}_proj.weight, the MLP biases
 * and lm_head.weight), so that a verifier can hold the weights the run uses
 * (`mmaudit-verify serve --weights FILE`); the run itself is unchanged.
 *
 * Defaults: 2 layers, 64 tokens, hidden 256, 8 heads (head_dim 32), 2 KV heads,
 * intermediate 688, vocab 512, bf16, no decode. Prints "calls N" and "output-hash H"
 * (hash over every byte copied back from the GPU, logits included), as described in
 * audit_common.h, and with --generate "decode-from I", the index of the first decode
 * call; exits 0, or 2 on a failed call.
 */
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <math.h>
#include <unistd.h>

#include "audit_common.h"

typedef struct config {
    int layers, tokens, hidden, heads, kv_heads, inter, vocab, separate_qkv, trace, generate, warmup_ms;
    int dtype; /* CUDA_R_16BF or CUDA_R_16F */
    uint64_t seed;
    const char *write_weights;
} config;

static config cfg = {2, 64, 256, 8, 2, 688, 512, 0, 0, 0, 0, CUDA_R_16BF, 1, NULL};
/* The pass being run: its tokens (the prompt, or 1 when decoding) and the position of
 * its first token. */
static int n_tok, pos0;
static cublasHandle_t handle;
static cublasLtHandle_t lt;
static cudaStream_t stream;
static uint64_t ncalls, total_hash = FNV_OFFSET;

/* ---- host <-> device ---------------------------------------------------------- */

static float to_f32(uint16_t v) { return cfg.dtype == CUDA_R_16BF ? bf16_to_f32(v) : f16_to_f32(v); }
static uint16_t from_f32(float f) { return cfg.dtype == CUDA_R_16BF ? f32_to_bf16(f) : f32_to_f16(f); }

static void *dev_alloc(size_t bytes) {
    void *p;
    MUST(cudaMalloc(&p, bytes));
    return p;
}

static void upload(void *dev, const void *host, size_t bytes) {
    MUST(cudaMemcpyAsync(dev, host, bytes, cudaMemcpyHostToDevice, stream));
    MUST(cudaStreamSynchronize(stream));
}

/* Every copy back is part of the output hash. */
static void download(void *host, const void *dev, size_t bytes) {
    MUST(cudaMemcpyAsync(host, dev, bytes, cudaMemcpyDeviceToHost, stream));
    MUST(cudaStreamSynchronize(stream));
    total_hash = fnv1a(total_hash, host, bytes);
}

/* The weights kept for --write-weights. */
typedef struct saved {
    char name[96];
    int rows, cols; /* cols == 1: a vector */
    uint16_t *data;
} saved;

static saved *saved_weights;
static int nsaved;

/* A weight matrix [rows, cols] (row-major, as nn.Linear stores [out, in]) with
 * entries uniform in [-1, 1] / sqrt(cols), or a bias vector (cols == 1). */
static void *weights(const char *name, int rows, int cols, uint64_t tag, float scale) {
    size_t n = (size_t)rows * (size_t)cols;
    uint16_t *h = malloc(n * 2);
    uint64_t s = cfg.seed * 0x9e3779b97f4a7c15ull ^ tag * 0xd1b54a32d192ed03ull;
    float f = scale / sqrtf((float)cols);
    for (size_t i = 0; i < n; i++)
        h[i] = from_f32(rand_unit(&s) * f);
    void *d = dev_alloc(n * 2);
    upload(d, h, n * 2);
    if (cfg.write_weights) {
        saved_weights = realloc(saved_weights, (size_t)(nsaved + 1) * sizeof *saved_weights);
        saved *w = &saved_weights[nsaved++];
        snprintf(w->name, sizeof w->name, "%s", name);
        w->rows = rows;
        w->cols = cols;
        w->data = h;
    } else {
        free(h);
    }
    return d;
}

/* Writes the kept weights as a safetensors file: an 8-byte little-endian header
 * length, the JSON header (padded with spaces to a multiple of 8), the data. */
static void write_safetensors(const char *path) {
    size_t cap = 256 + (size_t)nsaved * 192, len = 0, offset = 0;
    char *json = malloc(cap);
    len += (size_t)snprintf(json + len, cap - len, "{");
    for (int i = 0; i < nsaved; i++) {
        const saved *w = &saved_weights[i];
        size_t bytes = (size_t)w->rows * (size_t)w->cols * 2;
        char shape[64];
        if (w->cols == 1)
            snprintf(shape, sizeof shape, "[%d]", w->rows);
        else
            snprintf(shape, sizeof shape, "[%d,%d]", w->rows, w->cols);
        len += (size_t)snprintf(json + len, cap - len, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":%s,\"data_offsets\":[%zu,%zu]}",
                                i ? "," : "", w->name, cfg.dtype == CUDA_R_16BF ? "BF16" : "F16", shape, offset,
                                offset + bytes);
        offset += bytes;
    }
    len += (size_t)snprintf(json + len, cap - len, "}");
    while (len % 8)
        json[len++] = ' ';
    FILE *f = fopen(path, "wb");
    if (!f) {
        printf("FAIL setup cannot create %s\n", path);
        exit(2);
    }
    unsigned char head[8];
    for (int i = 0; i < 8; i++)
        head[i] = (unsigned char)((uint64_t)len >> (8 * i));
    int ok = fwrite(head, 1, 8, f) == 8 && fwrite(json, 1, len, f) == len;
    for (int i = 0; ok && i < nsaved; i++) {
        const saved *w = &saved_weights[i];
        size_t n = (size_t)w->rows * (size_t)w->cols;
        ok = fwrite(w->data, 2, n, f) == n; /* little-endian hosts */
    }
    if (fclose(f) != 0 || !ok) {
        printf("FAIL setup cannot write %s\n", path);
        exit(2);
    }
    free(json);
}

/* ---- tracing and counting ---------------------------------------------------- */

static void counted(const char *entry, const char *what, int m, int n, int k, int batch) {
    if (cfg.trace)
        printf("call %llu %s m=%d n=%d k=%d batch=%d %s\n", (unsigned long long)ncalls, entry, m, n, k, batch, what);
    ncalls++;
}

/* ---- the GEMMs ------------------------------------------------------------------ */

/* y[T, out] (+)= x[T, in] W^T as nn.Linear: C (out x T) = op(W) (out x in) x (in x T). */
static void linear(const char *what, const void *w, int ldw, const void *x, int ldx, void *y, int ldy, int out, int in,
                   float beta, int out_type) {
    const float alpha = 1.0f;
    MUST(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, out, n_tok, in, &alpha, w, (cudaDataType)cfg.dtype, ldw,
                      x, (cudaDataType)cfg.dtype, ldx, &beta, y, (cudaDataType)out_type, ldy, CUBLAS_COMPUTE_32F,
                      CUBLAS_GEMM_DEFAULT));
    counted("cublasGemmEx", what, out, n_tok, in, 1);
}

/* cuBLASLt: D (out x T) = epilogue(op(W) x + bias) (+ C when beta != 0, C == D). */
static void lt_linear(const char *what, const void *w, const void *x, void *d, int out, int in, uint32_t epilogue,
                      const void *bias, float beta) {
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, ld;
    MUST(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    int32_t ta = CUBLAS_OP_T;
    MUST(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    MUST(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue));
    if (bias)
        MUST(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
    MUST(cublasLtMatrixLayoutCreate(&la, (cudaDataType)cfg.dtype, (uint64_t)in, (uint64_t)out, in));
    MUST(cublasLtMatrixLayoutCreate(&lb, (cudaDataType)cfg.dtype, (uint64_t)in, (uint64_t)n_tok, in));
    MUST(cublasLtMatrixLayoutCreate(&ld, (cudaDataType)cfg.dtype, (uint64_t)out, (uint64_t)n_tok, out));
    const float alpha = 1.0f;
    MUST(cublasLtMatmul(lt, desc, &alpha, w, la, x, lb, &beta, d, ld, d, ld, NULL, NULL, 0, stream));
    counted("cublasLtMatmul", what, out, n_tok, in, 1);
    MUST(cublasLtMatmulDescDestroy(desc));
    MUST(cublasLtMatrixLayoutDestroy(la));
    MUST(cublasLtMatrixLayoutDestroy(lb));
    MUST(cublasLtMatrixLayoutDestroy(ld));
}

typedef struct layer {
    void *wqkv, *wo, *wgate, *wup, *wdown, *bgate, *bup;
    void *cache; /* q, k, v of every position so far: [positions, qkv_dim] */
} layer;

typedef struct buffers {
    void *h, *xn, *qkv, *scores, *probs, *attn, *gate, *up, *act, *logits;
    uint16_t *host_h, *host_qkv, *host_probs, *host_gate, *host_up;
    float *host_scores, *host_logits;
} buffers;

/* xn = RMSNorm(h) on the host (weights 1). */
static void rmsnorm(buffers *b) {
    int H = cfg.hidden, T = n_tok;
    download(b->host_h, b->h, (size_t)H * (size_t)T * 2);
    uint16_t *xn = malloc((size_t)H * (size_t)T * 2);
    for (int t = 0; t < T; t++) {
        double ss = 0;
        for (int i = 0; i < H; i++) {
            float v = to_f32(b->host_h[(size_t)t * (size_t)H + (size_t)i]);
            ss += (double)v * v;
        }
        float r = (float)(1.0 / sqrt(ss / H + 1e-5));
        for (int i = 0; i < H; i++)
            xn[(size_t)t * (size_t)H + (size_t)i] = from_f32(to_f32(b->host_h[(size_t)t * (size_t)H + (size_t)i]) * r);
    }
    upload(b->xn, xn, (size_t)H * (size_t)T * 2);
    free(xn);
}

/* Rotary position embedding of q and k, on the host. */
static void rope(buffers *b, int qkv_dim) {
    int T = n_tok, hd = cfg.hidden / cfg.heads, rotated = (cfg.heads + cfg.kv_heads) * hd;
    download(b->host_qkv, b->qkv, (size_t)qkv_dim * (size_t)T * 2);
    for (int t = 0; t < T; t++)
        for (int base = 0; base < rotated; base += hd)
            for (int i = 0; i < hd / 2; i++) {
                double theta = (pos0 + t) * pow(10000.0, -2.0 * i / hd);
                uint16_t *p = b->host_qkv + (size_t)t * (size_t)qkv_dim + (size_t)base;
                float x = to_f32(p[i]), y = to_f32(p[i + hd / 2]);
                float c = (float)cos(theta), s = (float)sin(theta);
                p[i] = from_f32(x * c - y * s);
                p[i + hd / 2] = from_f32(x * s + y * c);
            }
    upload(b->qkv, b->host_qkv, (size_t)qkv_dim * (size_t)T * 2);
}

/* Attention of the pass's n_tok queries over the c = pos0 + n_tok cached positions. */
static void attention(const layer *w, buffers *b, int qkv_dim) {
    int T = n_tok, nh = cfg.heads, nkv = cfg.kv_heads, hd = cfg.hidden / nh, group = nh / nkv;
    int q_dim = nh * hd, kv_dim = nkv * hd, c = pos0 + n_tok;
    size_t el = 2;
    const float scale = 1.0f / sqrtf((float)hd), zero = 0.0f, one = 1.0f;
    /* One call for all heads without grouping; else one per KV head over its group
     * of query heads, the shared K and V with stride 0. */
    int calls = nkv == nh ? 1 : nkv, batch = nkv == nh ? nh : group;
    long long kv_stride = nkv == nh ? hd : 0;
    for (int g = 0; g < calls; g++) {
        const unsigned char *k = (const unsigned char *)w->cache + (size_t)(q_dim + g * hd) * el;
        const unsigned char *q = (const unsigned char *)b->qkv + (size_t)(g * batch * hd) * el;
        float *s = (float *)b->scores + (size_t)g * (size_t)batch * (size_t)c * (size_t)T;
        /* S_h^T (keys x queries) = K_h^T-view x Q_h: m = c keys, n = T queries, k = hd. */
        MUST(cublasGemmStridedBatchedEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, c, T, hd, &scale, k, (cudaDataType)cfg.dtype,
                                        qkv_dim, kv_stride, q, (cudaDataType)cfg.dtype, qkv_dim, hd, &zero, s,
                                        CUDA_R_32F, c, (long long)c * T, batch, CUBLAS_COMPUTE_32F,
                                        CUBLAS_GEMM_DEFAULT));
        counted("cublasGemmStridedBatchedEx", "attn_scores", c, T, hd, batch);
    }
    /* Causal softmax over the keys of each query, on the host. */
    size_t n = (size_t)nh * (size_t)c * (size_t)T;
    download(b->host_scores, b->scores, n * 4);
    for (int h = 0; h < nh; h++)
        for (int qi = 0; qi < T; qi++) {
            float *col = b->host_scores + ((size_t)h * (size_t)T + (size_t)qi) * (size_t)c;
            uint16_t *out = b->host_probs + ((size_t)h * (size_t)T + (size_t)qi) * (size_t)c;
            int last = pos0 + qi; /* the query's own position */
            float mx = -INFINITY;
            for (int kj = 0; kj <= last; kj++)
                mx = fmaxf(mx, col[kj]);
            double sum = 0;
            for (int kj = 0; kj <= last; kj++)
                sum += exp((double)(col[kj] - mx));
            for (int kj = 0; kj < c; kj++)
                out[kj] = from_f32(kj <= last ? (float)(exp((double)(col[kj] - mx)) / sum) : 0.0f);
        }
    upload(b->probs, b->host_probs, n * 2);
    for (int g = 0; g < calls; g++) {
        const unsigned char *v = (const unsigned char *)w->cache + (size_t)(q_dim + kv_dim + g * hd) * el;
        const uint16_t *p = (const uint16_t *)b->probs + (size_t)g * (size_t)batch * (size_t)c * (size_t)T;
        unsigned char *o = (unsigned char *)b->attn + (size_t)(g * batch * hd) * el;
        /* O_h^T (hd x queries) = V_h-view (hd x keys) x P_h^T (keys x queries). */
        MUST(cublasGemmStridedBatchedEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, hd, T, c, &one, v, (cudaDataType)cfg.dtype,
                                        qkv_dim, kv_stride, p, (cudaDataType)cfg.dtype, c, (long long)c * T, &zero, o,
                                        (cudaDataType)cfg.dtype, q_dim, hd, batch, CUBLAS_COMPUTE_32F,
                                        CUBLAS_GEMM_DEFAULT));
        counted("cublasGemmStridedBatchedEx", "attn_context", hd, T, c, batch);
    }
}

static void run_layer(const layer *w, buffers *b) {
    int H = cfg.hidden, T = n_tok, I = cfg.inter, hd = H / cfg.heads;
    int q_dim = cfg.heads * hd, kv_dim = cfg.kv_heads * hd, qkv_dim = q_dim + 2 * kv_dim;
    rmsnorm(b);
    if (cfg.separate_qkv) {
        /* Three projections writing into the fused buffer's rows (ldc = qkv_dim). */
        const int offs[3] = {0, q_dim, q_dim + kv_dim}, outs[3] = {q_dim, kv_dim, kv_dim};
        const char *names[3] = {"q_proj", "k_proj", "v_proj"};
        for (int i = 0; i < 3; i++)
            linear(names[i], (const unsigned char *)w->wqkv + (size_t)offs[i] * (size_t)H * 2, H, b->xn, H,
                   (unsigned char *)b->qkv + (size_t)offs[i] * 2, qkv_dim, outs[i], H, 0.0f, cfg.dtype);
    } else {
        linear("qkv_proj", w->wqkv, H, b->xn, H, b->qkv, qkv_dim, qkv_dim, H, 0.0f, cfg.dtype);
    }
    rope(b, qkv_dim);
    /* The pass's q, k, v join the layer's cache at their positions. */
    MUST(cudaMemcpyAsync((unsigned char *)w->cache + (size_t)pos0 * (size_t)qkv_dim * 2, b->qkv,
                         (size_t)T * (size_t)qkv_dim * 2, cudaMemcpyDeviceToDevice, stream));
    attention(w, b, qkv_dim);
    /* h += attn W_o^T: beta = 1, C is the residual stream. */
    linear("o_proj", w->wo, q_dim, b->attn, q_dim, b->h, H, H, q_dim, 1.0f, cfg.dtype);
    rmsnorm(b);
    lt_linear("gate_proj", w->wgate, b->xn, b->gate, I, H, CUBLASLT_EPILOGUE_GELU_BIAS, w->bgate, 0.0f);
    lt_linear("up_proj", w->wup, b->xn, b->up, I, H, CUBLASLT_EPILOGUE_BIAS, w->bup, 0.0f);
    size_t n = (size_t)I * (size_t)T;
    download(b->host_gate, b->gate, n * 2);
    download(b->host_up, b->up, n * 2);
    for (size_t i = 0; i < n; i++)
        b->host_gate[i] = from_f32(to_f32(b->host_gate[i]) * to_f32(b->host_up[i]));
    upload(b->act, b->host_gate, n * 2);
    /* h += act W_down^T, in place through cuBLASLt (C == D, beta = 1). */
    lt_linear("down_proj", w->wdown, b->act, b->h, H, I, CUBLASLT_EPILOGUE_DEFAULT, NULL, 1.0f);
}

static void usage(void) {
    fprintf(stderr, "usage: llama_workload [--layers L] [--tokens T] [--hidden H] [--heads N] [--kv-heads N]\n"
                    "                      [--intermediate I] [--vocab V] [--dtype bf16|f16] [--separate-qkv]\n"
                    "                      [--seed S] [--generate N] [--write-weights FILE] [--trace]\n"
                    "                      [--warmup-ms MS]\n");
    exit(2);
}

static int int_arg(int argc, char **argv, int *i) {
    if (*i + 1 >= argc)
        usage();
    char *end;
    long v = strtol(argv[++*i], &end, 10);
    if (*end || v < 1 || v > 1 << 20)
        usage();
    return (int)v;
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--layers"))
            cfg.layers = int_arg(argc, argv, &i);
        else if (!strcmp(a, "--tokens"))
            cfg.tokens = int_arg(argc, argv, &i);
        else if (!strcmp(a, "--hidden"))
            cfg.hidden = int_arg(argc, argv, &i);
        else if (!strcmp(a, "--heads"))
            cfg.heads = int_arg(argc, argv, &i);
        else if (!strcmp(a, "--kv-heads"))
            cfg.kv_heads = int_arg(argc, argv, &i);
        else if (!strcmp(a, "--intermediate"))
            cfg.inter = int_arg(argc, argv, &i);
        else if (!strcmp(a, "--vocab"))
            cfg.vocab = int_arg(argc, argv, &i);
        else if (!strcmp(a, "--seed"))
            cfg.seed = (uint64_t)int_arg(argc, argv, &i);
        else if (!strcmp(a, "--separate-qkv"))
            cfg.separate_qkv = 1;
        else if (!strcmp(a, "--trace"))
            cfg.trace = 1;
        else if (!strcmp(a, "--warmup-ms"))
            cfg.warmup_ms = int_arg(argc, argv, &i);
        else if (!strcmp(a, "--generate"))
            cfg.generate = int_arg(argc, argv, &i);
        else if (!strcmp(a, "--write-weights") && i + 1 < argc)
            cfg.write_weights = argv[++i];
        else if (!strcmp(a, "--dtype") && i + 1 < argc) {
            const char *d = argv[++i];
            if (!strcmp(d, "bf16"))
                cfg.dtype = CUDA_R_16BF;
            else if (!strcmp(d, "f16"))
                cfg.dtype = CUDA_R_16F;
            else
                usage();
        } else
            usage();
    }
    if (cfg.hidden % cfg.heads || cfg.heads % cfg.kv_heads || (cfg.hidden / cfg.heads) % 2) {
        fprintf(stderr, "llama_workload: hidden must split into heads of even size, heads into kv heads\n");
        return 2;
    }
    int H = cfg.hidden, T = cfg.tokens, I = cfg.inter, V = cfg.vocab, hd = H / cfg.heads;
    int positions = T + cfg.generate;
    int q_dim = cfg.heads * hd, qkv_dim = q_dim + 2 * cfg.kv_heads * hd;

    MUST(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    MUST(cublasCreate_v2(&handle));
    MUST(cublasSetStream_v2(handle, stream));
    MUST(cublasLtCreate(&lt));
    if (cfg.warmup_ms > 0) {
        float *w = NULL, one = 1.0f, zero = 0.0f;
        MUST(cudaMalloc((void **)&w, 3 * 256 * sizeof(float)));
        MUST(cudaMemset(w, 0, 3 * 256 * sizeof(float)));
        MUST(cublasSgemm_v2(handle, CUBLAS_OP_N, CUBLAS_OP_N, 16, 16, 16, &one, w, 16, w + 256, 16, &zero,
                            w + 512, 16));
        counted("cublasSgemm_v2", "warm-up", 16, 16, 16, 1);
        MUST(cudaStreamSynchronize(stream));
        usleep((useconds_t)cfg.warmup_ms * 1000);
    }

    layer *ws = calloc((size_t)cfg.layers, sizeof *ws);
    for (int l = 0; l < cfg.layers; l++) {
        uint64_t tag = (uint64_t)l * 16;
        char name[96];
#define NAME(part) (snprintf(name, sizeof name, "model.layers.%d.%s", l, part), name)
        ws[l].wqkv = weights(NAME("self_attn.qkv_proj.weight"), qkv_dim, H, tag + 1, 1.0f);
        if (cfg.write_weights && cfg.separate_qkv) {
            /* The three projections read rows of the fused tensor: hold them as the
             * separate q_proj, k_proj, v_proj tensors they are used as. */
            saved fused = saved_weights[--nsaved];
            const char *names[3] = {"self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"};
            const int rows[3] = {q_dim, cfg.kv_heads * hd, cfg.kv_heads * hd};
            int at = 0;
            for (int i = 0; i < 3; i++) {
                saved_weights = realloc(saved_weights, (size_t)(nsaved + 1) * sizeof *saved_weights);
                saved *part = &saved_weights[nsaved++];
                snprintf(part->name, sizeof part->name, "model.layers.%d.%s", l, names[i]);
                part->rows = rows[i];
                part->cols = H;
                part->data = fused.data + (size_t)at * (size_t)H;
                at += rows[i];
            }
        }
        ws[l].wo = weights(NAME("self_attn.o_proj.weight"), H, q_dim, tag + 2, 0.5f);
        ws[l].wgate = weights(NAME("mlp.gate_proj.weight"), I, H, tag + 3, 1.0f);
        ws[l].wup = weights(NAME("mlp.up_proj.weight"), I, H, tag + 4, 1.0f);
        ws[l].wdown = weights(NAME("mlp.down_proj.weight"), H, I, tag + 5, 0.5f);
        ws[l].bgate = weights(NAME("mlp.gate_proj.bias"), I, 1, tag + 6, 0.1f);
        ws[l].bup = weights(NAME("mlp.up_proj.bias"), I, 1, tag + 7, 0.1f);
#undef NAME
    }
    void *wlm = weights("lm_head.weight", V, H, 1000, 1.0f);
    for (int l = 0; l < cfg.layers; l++)
        ws[l].cache = dev_alloc((size_t)qkv_dim * (size_t)positions * 2);
    if (cfg.write_weights)
        write_safetensors(cfg.write_weights);

    buffers b;
    size_t tok = (size_t)T;
    b.h = dev_alloc((size_t)H * tok * 2);
    b.xn = dev_alloc((size_t)H * tok * 2);
    b.qkv = dev_alloc((size_t)qkv_dim * tok * 2);
    /* Scores of the largest pass: the prompt's T x T, or 1 x (T + N) when decoding. */
    size_t scores = tok * tok > (size_t)positions ? tok * tok : (size_t)positions;
    b.scores = dev_alloc((size_t)cfg.heads * scores * 4);
    b.probs = dev_alloc((size_t)cfg.heads * scores * 2);
    b.attn = dev_alloc((size_t)q_dim * tok * 2);
    b.gate = dev_alloc((size_t)I * tok * 2);
    b.up = dev_alloc((size_t)I * tok * 2);
    b.act = dev_alloc((size_t)I * tok * 2);
    b.logits = dev_alloc((size_t)V * tok * 4);
    b.host_h = malloc((size_t)H * tok * 2);
    b.host_qkv = malloc((size_t)qkv_dim * tok * 2);
    b.host_scores = malloc((size_t)cfg.heads * scores * 4);
    b.host_probs = malloc((size_t)cfg.heads * scores * 2);
    b.host_gate = malloc((size_t)I * tok * 2);
    b.host_up = malloc((size_t)I * tok * 2);
    b.host_logits = malloc((size_t)V * tok * 4);

    /* The embedded prompt: a seeded random hidden state. */
    uint64_t s = cfg.seed ^ 0xabcdefull;
    for (size_t i = 0; i < (size_t)H * tok; i++)
        b.host_h[i] = from_f32(rand_unit(&s));
    upload(b.h, b.host_h, (size_t)H * tok * 2);

    n_tok = T;
    pos0 = 0;
    for (int l = 0; l < cfg.layers; l++)
        run_layer(&ws[l], &b);
    rmsnorm(&b);
    linear("lm_head", wlm, H, b.xn, H, b.logits, V, V, H, 0.0f, CUDA_R_32F);
    download(b.host_logits, b.logits, (size_t)V * tok * 4);

    /* A sanity line a person can read: the argmax token of the last position. */
    int best = 0;
    for (int v = 1; v < V; v++)
        if (b.host_logits[(size_t)(T - 1) * (size_t)V + (size_t)v] > b.host_logits[(size_t)(T - 1) * (size_t)V + (size_t)best])
            best = v;
    printf("next-token %d\n", best);

    /* Decode: one token per pass, its hidden state a seeded random vector (the
     * embedding of the token it stands for). */
    if (cfg.generate > 0)
        printf("decode-from %llu\n", (unsigned long long)ncalls);
    for (int j = 0; j < cfg.generate; j++) {
        n_tok = 1;
        pos0 = T + j;
        uint64_t e = cfg.seed ^ (0x5eedull + (uint64_t)j * 0x9e3779b97f4a7c15ull);
        for (int i = 0; i < H; i++)
            b.host_h[i] = from_f32(rand_unit(&e));
        upload(b.h, b.host_h, (size_t)H * 2);
        for (int l = 0; l < cfg.layers; l++)
            run_layer(&ws[l], &b);
        rmsnorm(&b);
        linear("lm_head", wlm, H, b.xn, H, b.logits, V, V, H, 0.0f, CUDA_R_32F);
        download(b.host_logits, b.logits, (size_t)V * 4);
    }

    MUST(cudaStreamSynchronize(stream));
    MUST(cublasLtDestroy(lt));
    MUST(cublasDestroy_v2(handle));
    print_result(ncalls, total_hash);
    return 0;
}

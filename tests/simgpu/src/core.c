/*
 * Simulated GPU: devices, contexts, streams, events and stream capture.
 *
 * Every stream owns a worker thread that runs its work in order, so a
 * program sees real asynchrony: a copy into host memory lands only when the
 * worker gets to it, and reading before synchronising sees the old bytes.
 * Ordering between streams follows CUDA: work carries dependencies (stream,
 * sequence number) that the worker waits for. The legacy default stream waits
 * for all earlier work of the device's blocking streams, and blocking streams
 * wait for earlier legacy-stream work; non-blocking streams are exempt.
 *
 * One mutex (G.mu) guards all queue, stream, event and capture state, and one
 * condition variable announces every completion. That is slower than per-stream
 * locking but cannot deadlock, and the simulator's cost is in the arithmetic.
 *
 * A stream that is capturing does not queue work: it appends it to the capture's
 * body, which a graph launch later runs as one unit of work.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "handles.h"
#include "simgpu.h"

struct sg_dep {
    struct CUstream_st *stream;
    uint64_t seq;
};

typedef struct sg_op {
    struct sg_op *next;
    uint64_t seq;
    sg_work work;
    uint64_t call_index;
    size_t ndeps;
    struct sg_dep *deps;
} sg_op;

struct sg_capture {
    uint64_t id;
    int mode;
    pthread_t thread;
    int invalidated;
    struct CUstream_st *origin;
    struct CUgraph_st *graph;
    CUgraphNode last_node; /* storage for the dependency handed out by capture info */
    struct sg_capture *next;
};

struct CUctx_st {
    uint32_t magic;
    int device;
    int retains;
    int active;
    struct CUstream_st *legacy;
};

struct CUstream_st {
    uint32_t magic;
    int device;
    unsigned flags;
    int legacy;
    int refs;
    int destroyed;
    uint64_t issued, done;
    sg_op *head, *tail;
    pthread_cond_t cv;
    struct sg_capture *cap;
    struct CUstream_st *next_live;
};

struct CUevent_st {
    uint32_t magic;
    unsigned flags;
    int refs;
    struct CUstream_st *stream; /* last record's stream; NULL if never recorded */
    uint64_t seq;
    uint64_t cap_id; /* non-zero: last recorded into this capture */
    uint64_t gen;
    int has_time;
    struct timespec time;
};

struct CUgraph_st {
    uint32_t magic;
    sg_body *body;
};

struct CUgraphExec_st {
    uint32_t magic;
    sg_plan *plan; /* replaced (under G.mu) by node updates; launches retain the one they run */
};

static struct {
    pthread_mutex_t mu;
    pthread_cond_t done_cv;
    int ndev;
    long latency_us;
    struct CUctx_st ctx[SG_MAX_DEVICES];
    CUresult sticky[SG_MAX_DEVICES];
    struct CUstream_st *streams; /* live, including draining destroyed ones */
    struct sg_capture *captures;
    uint64_t next_capture_id;
    uint64_t gemm_calls; /* fault-injection call numbers handed out so far */
} G = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, {{0}}, {0}, NULL, NULL, 0, 0};

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static CUresult init_result = CUDA_ERROR_NOT_INITIALIZED;
static int initialized;

#define SG_MAX_CTX_STACK 16
static __thread struct CUctx_st *tls_ctx;
static __thread struct CUctx_st *tls_stack[SG_MAX_CTX_STACK];
static __thread int tls_depth;
static __thread int tls_runtime_device;
static __thread struct CUstream_st *tls_per_thread[SG_MAX_DEVICES];

static long env_long(const char *name, long dflt, long lo, long hi) {
    const char *v = getenv(name);
    if (!v || !*v)
        return dflt;
    char *end;
    long x = strtol(v, &end, 10);
    if (*end || x < lo || x > hi) {
        fprintf(stderr, "simgpu: ignoring %s=%s (expected an integer in [%ld, %ld])\n", name, v, lo, hi);
        return dflt;
    }
    return x;
}

/* ---- query counting and benchmark knobs ---- */

static const char *const query_names[SG_Q_COUNT] = {
    "cublasGetStream", "cublasGetPointerMode", "cublasGetMathMode", "cuCtxGetCurrent",
    "cuCtxGetDevice",  "cuStreamIsCapturing",  "cuStreamGetCaptureInfo", "gemm_submitted",
    "cublasLtMatmulDescGetAttribute", "cublasLtMatrixLayoutGetAttribute",
};
static _Atomic unsigned long query_counts[SG_Q_COUNT];
static const char *count_path;
static int no_compute;

static void write_counts(void) {
    FILE *f = fopen(count_path, "w");
    if (!f) {
        fprintf(stderr, "simgpu: SIMGPU_COUNT=%s: cannot write the counts\n", count_path);
        return;
    }
    for (int q = 0; q < SG_Q_COUNT; q++)
        fprintf(f, "%s %lu\n", query_names[q], (unsigned long)query_counts[q]);
    fclose(f);
}

__attribute__((constructor)) static void read_knobs(void) {
    const char *p = getenv("SIMGPU_COUNT");
    if (p && *p) {
        count_path = p;
        atexit(write_counts);
    }
    no_compute = env_long("SIMGPU_NO_COMPUTE", 0, 0, 1) == 1;
}

SG_EXPORT void sg_count(enum sg_query q) {
    if (count_path && (unsigned)q < SG_Q_COUNT)
        atomic_fetch_add_explicit(&query_counts[q], 1, memory_order_relaxed);
}

SG_EXPORT int sg_no_compute(void) { return no_compute; }

/* ---- streams: lifetime and workers ---- */

static void stream_unref_locked(struct CUstream_st *s) {
    if (--s->refs > 0)
        return;
    pthread_cond_destroy(&s->cv);
    free(s);
}

static void free_op(sg_op *op) {
    if (op->work.release)
        op->work.release(op->work.payload);
    pthread_mutex_lock(&G.mu);
    for (size_t i = 0; i < op->ndeps; i++)
        stream_unref_locked(op->deps[i].stream);
    pthread_mutex_unlock(&G.mu);
    free(op->deps);
    free(op);
}

static void unlink_live_locked(struct CUstream_st *s) {
    for (struct CUstream_st **p = &G.streams; *p; p = &(*p)->next_live) {
        if (*p == s) {
            *p = s->next_live;
            return;
        }
    }
}

static void *stream_worker(void *arg) {
    struct CUstream_st *s = arg;
    pthread_mutex_lock(&G.mu);
    for (;;) {
        while (!s->head && !s->destroyed)
            pthread_cond_wait(&s->cv, &G.mu);
        if (!s->head)
            break;
        sg_op *op = s->head;
        for (size_t i = 0; i < op->ndeps; i++)
            while (op->deps[i].stream->done < op->deps[i].seq)
                pthread_cond_wait(&G.done_cv, &G.mu);
        CUresult sticky = G.sticky[s->device];
        pthread_mutex_unlock(&G.mu);

        if (G.latency_us > 0)
            usleep((useconds_t)G.latency_us);
        /* After a device fault the context is unusable: queued work is skipped. */
        CUresult r = sticky ? CUDA_SUCCESS : op->work.run(op->work.payload, op->call_index);

        pthread_mutex_lock(&G.mu);
        if (r != CUDA_SUCCESS && G.sticky[s->device] == CUDA_SUCCESS) {
            G.sticky[s->device] = r;
            fprintf(stderr, "simgpu: device %d fault: error %d in stream work; the context is now unusable\n",
                    s->device, (int)r);
        }
        s->head = op->next;
        if (!s->head)
            s->tail = NULL;
        s->done = op->seq;
        pthread_cond_broadcast(&G.done_cv);
        pthread_mutex_unlock(&G.mu);
        free_op(op);
        pthread_mutex_lock(&G.mu);
    }
    unlink_live_locked(s);
    stream_unref_locked(s);
    pthread_mutex_unlock(&G.mu);
    return NULL;
}

/* Creates a stream and its worker; caller holds G.mu. */
static CUresult stream_new_locked(int device, unsigned flags, int legacy, struct CUstream_st **out) {
    struct CUstream_st *s = calloc(1, sizeof *s);
    if (!s)
        return CUDA_ERROR_OUT_OF_MEMORY;
    s->magic = SG_MAGIC_STREAM;
    s->device = device;
    s->flags = flags;
    s->legacy = legacy;
    s->refs = 1; /* the worker's */
    pthread_cond_init(&s->cv, NULL);
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&t, &attr, stream_worker, s);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        pthread_cond_destroy(&s->cv);
        free(s);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    s->next_live = G.streams;
    G.streams = s;
    *out = s;
    return CUDA_SUCCESS;
}

/* ---- initialisation, devices, contexts ---- */

static void init_once_fn(void) {
    G.ndev = (int)env_long("SIMGPU_DEVICE_COUNT", 1, 1, SG_MAX_DEVICES);
    G.latency_us = env_long("SIMGPU_LATENCY_US", 0, 0, 10000000);
    pthread_mutex_lock(&G.mu);
    init_result = CUDA_SUCCESS;
    for (int d = 0; d < G.ndev; d++) {
        G.ctx[d].magic = SG_MAGIC_CTX;
        G.ctx[d].device = d;
        if (stream_new_locked(d, CU_STREAM_DEFAULT, 1, &G.ctx[d].legacy) != CUDA_SUCCESS)
            init_result = CUDA_ERROR_OUT_OF_MEMORY;
    }
    pthread_mutex_unlock(&G.mu);
    __atomic_store_n(&initialized, init_result == CUDA_SUCCESS, __ATOMIC_RELEASE);
}

SG_EXPORT CUresult sg_init(void) {
    pthread_once(&init_once, init_once_fn);
    return init_result;
}

SG_EXPORT int sg_is_initialized(void) { return __atomic_load_n(&initialized, __ATOMIC_ACQUIRE); }

SG_EXPORT int sg_device_count(void) { return G.ndev; }

SG_EXPORT struct CUctx_st *sg_primary_ctx(int device) {
    if (!sg_is_initialized() || device < 0 || device >= G.ndev)
        return NULL;
    return &G.ctx[device];
}

SG_EXPORT int sg_ctx_is_valid(struct CUctx_st *ctx) {
    return sg_is_initialized() && ctx >= &G.ctx[0] && ctx < &G.ctx[G.ndev];
}

SG_EXPORT int sg_ctx_device(struct CUctx_st *ctx) { return ctx->device; }

SG_EXPORT struct CUctx_st *sg_current_ctx(void) { return tls_ctx; }

SG_EXPORT void sg_set_current_ctx(struct CUctx_st *ctx) {
    if (ctx) {
        pthread_mutex_lock(&G.mu);
        ctx->active = 1;
        pthread_mutex_unlock(&G.mu);
    }
    tls_ctx = ctx;
}

SG_EXPORT CUresult sg_push_ctx(struct CUctx_st *ctx) {
    if (tls_depth == SG_MAX_CTX_STACK)
        return CUDA_ERROR_OUT_OF_MEMORY;
    tls_stack[tls_depth++] = tls_ctx;
    sg_set_current_ctx(ctx);
    return CUDA_SUCCESS;
}

SG_EXPORT CUresult sg_pop_ctx(struct CUctx_st **out) {
    if (!tls_ctx)
        return CUDA_ERROR_INVALID_CONTEXT;
    if (out)
        *out = tls_ctx;
    tls_ctx = tls_depth > 0 ? tls_stack[--tls_depth] : NULL;
    return CUDA_SUCCESS;
}

SG_EXPORT CUresult sg_runtime_ctx(struct CUctx_st **out) {
    CUresult r = sg_init();
    if (r != CUDA_SUCCESS)
        return r;
    if (!tls_ctx)
        sg_set_current_ctx(&G.ctx[tls_runtime_device]);
    if (out)
        *out = tls_ctx;
    return CUDA_SUCCESS;
}

SG_EXPORT CUresult sg_runtime_set_device(int device) {
    CUresult r = sg_init();
    if (r != CUDA_SUCCESS)
        return r;
    if (device < 0 || device >= G.ndev)
        return CUDA_ERROR_INVALID_DEVICE;
    tls_runtime_device = device;
    sg_set_current_ctx(&G.ctx[device]);
    return CUDA_SUCCESS;
}

SG_EXPORT CUresult sg_sticky_error(int device) {
    pthread_mutex_lock(&G.mu);
    CUresult r = G.sticky[device];
    pthread_mutex_unlock(&G.mu);
    return r;
}

/* ---- handles ---- */

/* The stream a handle names; NULL and CU_STREAM_LEGACY are the current
 * context's legacy stream, CU_STREAM_PER_THREAD this thread's own stream. */
static CUresult resolve_locked(CUstream h, struct CUstream_st **out) {
    if (h == NULL || h == CU_STREAM_LEGACY || h == CU_STREAM_PER_THREAD) {
        if (!tls_ctx)
            return CUDA_ERROR_INVALID_CONTEXT;
        int d = tls_ctx->device;
        if (h != CU_STREAM_PER_THREAD) {
            *out = G.ctx[d].legacy;
            return CUDA_SUCCESS;
        }
        if (!tls_per_thread[d]) {
            CUresult r = stream_new_locked(d, CU_STREAM_DEFAULT, 0, &tls_per_thread[d]);
            if (r != CUDA_SUCCESS)
                return r;
        }
        *out = tls_per_thread[d];
        return CUDA_SUCCESS;
    }
    if (!sg_handle_valid(h, SG_MAGIC_STREAM))
        return CUDA_ERROR_INVALID_HANDLE;
    *out = h;
    return CUDA_SUCCESS;
}

static int event_valid(CUevent e) { return e && sg_handle_valid(e, SG_MAGIC_EVENT); }

static void event_unref_locked(struct CUevent_st *e) {
    if (--e->refs > 0)
        return;
    if (e->stream)
        stream_unref_locked(e->stream);
    free(e);
}

/* ---- capture bookkeeping ---- */

static struct sg_capture *capture_by_id_locked(uint64_t id) {
    for (struct sg_capture *c = G.captures; c; c = c->next)
        if (c->id == id)
            return c;
    return NULL;
}

static int blocking(const struct CUstream_st *s) { return !(s->flags & CU_STREAM_NON_BLOCKING); }

/* ---- submission ---- */

static int add_dep(sg_op *op, struct CUstream_st *t, uint64_t seq, size_t cap) {
    if (op->ndeps == cap)
        return -1;
    t->refs++;
    op->deps[op->ndeps].stream = t;
    op->deps[op->ndeps].seq = seq;
    op->ndeps++;
    return 0;
}

/* Queues work on s (or appends it to s's capture). event is set for an
 * event-record node. On success the queue (or capture) owns the payload; on
 * failure the caller still does, and must release it after dropping G.mu,
 * because release callbacks take G.mu themselves. */
static CUresult submit_locked(struct CUstream_st *s, sg_work *w, struct CUevent_st *event,
                              const struct sg_dep *extra, uint64_t *seq_out) {
    CUresult r = G.sticky[s->device];
    if (r != CUDA_SUCCESS)
        return r;
    if (s->cap) {
        if (s->cap->invalidated)
            return CUDA_ERROR_STREAM_CAPTURE_INVALIDATED;
        if (sg_body_append(s->cap->graph->body, *w, event) != 0)
            return CUDA_ERROR_OUT_OF_MEMORY;
        if (seq_out)
            *seq_out = 0;
        return CUDA_SUCCESS;
    }
    size_t nlive = 1;
    for (struct CUstream_st *t = G.streams; t; t = t->next_live)
        nlive++;
    if (s->legacy) {
        /* The legacy stream would have to wait on a capturing stream. */
        int implicit = 0;
        for (struct CUstream_st *t = G.streams; t; t = t->next_live) {
            if (t->device == s->device && t->cap && blocking(t)) {
                t->cap->invalidated = 1;
                implicit = 1;
            }
        }
        if (implicit)
            return CUDA_ERROR_STREAM_CAPTURE_IMPLICIT;
    }
    sg_op *op = calloc(1, sizeof *op);
    struct sg_dep *deps = calloc(nlive + 1, sizeof *deps);
    if (!op || !deps) {
        free(op);
        free(deps);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    op->deps = deps;
    op->work = *w;
    if (extra)
        add_dep(op, extra->stream, extra->seq, nlive + 1);
    if (s->legacy) {
        for (struct CUstream_st *t = G.streams; t; t = t->next_live)
            if (t != s && t->device == s->device && blocking(t) && !t->legacy && t->issued > t->done)
                add_dep(op, t, t->issued, nlive + 1);
    } else if (blocking(s)) {
        struct CUstream_st *l = G.ctx[s->device].legacy;
        if (l->issued > l->done)
            add_dep(op, l, l->issued, nlive + 1);
    }
    if (w->gemm_calls) {
        op->call_index = G.gemm_calls + 1;
        G.gemm_calls += w->gemm_calls;
    }
    op->seq = ++s->issued;
    if (s->tail)
        s->tail->next = op;
    else
        s->head = op;
    s->tail = op;
    pthread_cond_signal(&s->cv);
    if (seq_out)
        *seq_out = op->seq;
    return CUDA_SUCCESS;
}

SG_EXPORT CUresult sg_submit(CUstream stream, sg_work work) {
    pthread_mutex_lock(&G.mu);
    struct CUstream_st *s;
    CUresult r = resolve_locked(stream, &s);
    if (r == CUDA_SUCCESS)
        r = submit_locked(s, &work, NULL, NULL, NULL);
    pthread_mutex_unlock(&G.mu);
    if (r != CUDA_SUCCESS && work.release)
        work.release(work.payload);
    return r;
}

static CUresult run_nothing(void *payload, uint64_t call_index) {
    (void)payload;
    (void)call_index;
    return CUDA_SUCCESS;
}

static const sg_work no_work = {run_nothing, NULL, NULL, 0};

/* Waits until s has run everything issued so far; caller holds G.mu. */
static void drain_locked(struct CUstream_st *s) {
    uint64_t target = s->issued;
    while (s->done < target)
        pthread_cond_wait(&G.done_cv, &G.mu);
}

SG_EXPORT CUresult sg_check_unsafe_call(void) {
    pthread_t self = pthread_self();
    CUresult r = CUDA_SUCCESS;
    pthread_mutex_lock(&G.mu);
    for (struct sg_capture *c = G.captures; c; c = c->next) {
        int own = pthread_equal(c->thread, self);
        if ((own && c->mode != CU_STREAM_CAPTURE_MODE_RELAXED) || (!own && c->mode == CU_STREAM_CAPTURE_MODE_GLOBAL)) {
            c->invalidated = 1;
            r = CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
        }
    }
    pthread_mutex_unlock(&G.mu);
    return r;
}

/* ---- copies, memset, host functions ---- */

typedef struct copy_work {
    uintptr_t dst, src;
    size_t n;
    int dst_device, src_device; /* addresses that need translation */
    void *staged;               /* pageable source copied at call time */
} copy_work;

static CUresult run_copy(void *payload, uint64_t call_index) {
    (void)call_index;
    copy_work *c = payload;
    void *d = c->dst_device ? sg_dev_span(c->dst, c->n) : (void *)c->dst;
    const void *s = c->staged ? c->staged : c->src_device ? sg_dev_span(c->src, c->n) : (const void *)c->src;
    if (!d || !s)
        return CUDA_ERROR_ILLEGAL_ADDRESS;
    memmove(d, s, c->n);
    return CUDA_SUCCESS;
}

static void release_copy(void *payload) {
    copy_work *c = payload;
    free(c->staged);
    free(c);
}

/* Classifies p: 1 device memory, 2 pinned host, 0 pageable host. Fails when p
 * is inside an allocation that [p, p+n) overruns. */
static int classify(uintptr_t p, size_t n, int *kind) {
    sg_region r;
    if (!sg_mem_find(p, &r)) {
        *kind = 0;
        return 0;
    }
    *kind = r.kind;
    return n <= r.size - (p - r.base) ? 0 : -1;
}

static CUresult submit_and_maybe_wait(CUstream stream, sg_work w, int sync) {
    pthread_mutex_lock(&G.mu);
    struct CUstream_st *s;
    CUresult r = resolve_locked(stream, &s);
    if (r != CUDA_SUCCESS) {
        pthread_mutex_unlock(&G.mu);
        if (w.release)
            w.release(w.payload);
        return r;
    }
    uint64_t seq = 0;
    r = submit_locked(s, &w, NULL, NULL, &seq);
    if (r == CUDA_SUCCESS && sync && seq) {
        while (s->done < seq)
            pthread_cond_wait(&G.done_cv, &G.mu);
        r = G.sticky[s->device];
    }
    pthread_mutex_unlock(&G.mu);
    if (r != CUDA_SUCCESS && seq == 0 && w.release)
        w.release(w.payload);
    return r;
}

/* Copies n bytes between any two of: device memory, pinned host memory,
 * pageable host memory. Asynchronous copies from pageable memory snapshot the
 * source at call time, as the driver's staging buffer does; copies into
 * pageable memory land when the stream gets to them. */
SG_EXPORT CUresult sg_copy(void *dst, const void *src, size_t n, CUstream stream, int sync) {
    if (n == 0)
        return CUDA_SUCCESS;
    if (!dst || !src)
        return CUDA_ERROR_INVALID_VALUE;
    int dk, sk;
    if (classify((uintptr_t)dst, n, &dk) || classify((uintptr_t)src, n, &sk))
        return CUDA_ERROR_INVALID_VALUE;
    copy_work *c = calloc(1, sizeof *c);
    if (!c)
        return CUDA_ERROR_OUT_OF_MEMORY;
    c->dst = (uintptr_t)dst;
    c->src = (uintptr_t)src;
    c->n = n;
    c->dst_device = dk == SG_MEM_DEVICE;
    c->src_device = sk == SG_MEM_DEVICE;
    if (sk == 0 && !sync) {
        c->staged = malloc(n);
        if (!c->staged) {
            free(c);
            return CUDA_ERROR_OUT_OF_MEMORY;
        }
        memcpy(c->staged, src, n);
    }
    sg_work w = {run_copy, release_copy, c, 0};
    return submit_and_maybe_wait(stream, w, sync);
}

typedef struct set_work {
    uintptr_t dst;
    unsigned char pattern[4];
    size_t elem, count;
} set_work;

static CUresult run_set(void *payload, uint64_t call_index) {
    (void)call_index;
    set_work *m = payload;
    unsigned char *d = sg_dev_span(m->dst, m->elem * m->count);
    if (!d)
        return CUDA_ERROR_ILLEGAL_ADDRESS;
    if (m->elem == 1) {
        memset(d, m->pattern[0], m->count);
        return CUDA_SUCCESS;
    }
    for (size_t i = 0; i < m->count; i++)
        memcpy(d + i * m->elem, m->pattern, m->elem);
    return CUDA_SUCCESS;
}

SG_EXPORT CUresult sg_memset(uintptr_t dst, const void *pattern, size_t elem_size, size_t count, CUstream stream,
                             int sync) {
    if (count == 0)
        return CUDA_SUCCESS;
    if (elem_size == 0 || elem_size > 4 || count > SIZE_MAX / elem_size || !sg_dev_span(dst, elem_size * count))
        return CUDA_ERROR_INVALID_VALUE;
    set_work *m = calloc(1, sizeof *m);
    if (!m)
        return CUDA_ERROR_OUT_OF_MEMORY;
    m->dst = dst;
    memcpy(m->pattern, pattern, elem_size);
    m->elem = elem_size;
    m->count = count;
    sg_work w = {run_set, free, m, 0};
    return submit_and_maybe_wait(stream, w, sync);
}

typedef struct host_fn_work {
    CUhostFn fn;
    void *data;
} host_fn_work;

static CUresult run_host_fn(void *payload, uint64_t call_index) {
    (void)call_index;
    host_fn_work *h = payload;
    h->fn(h->data);
    return CUDA_SUCCESS;
}

SG_EXPORT CUresult sg_host_fn(CUstream stream, CUhostFn fn, void *user_data) {
    if (!fn)
        return CUDA_ERROR_INVALID_VALUE;
    host_fn_work *h = malloc(sizeof *h);
    if (!h)
        return CUDA_ERROR_OUT_OF_MEMORY;
    h->fn = fn;
    h->data = user_data;
    sg_work w = {run_host_fn, free, h, 0};
    return sg_submit(stream, w);
}

/* ---- streams ---- */

SG_EXPORT CUresult sg_stream_create(CUstream *out, unsigned flags) {
    if (!out || (flags & ~(unsigned)CU_STREAM_NON_BLOCKING))
        return CUDA_ERROR_INVALID_VALUE;
    struct CUctx_st *ctx = tls_ctx;
    if (!ctx)
        return CUDA_ERROR_INVALID_CONTEXT;
    pthread_mutex_lock(&G.mu);
    struct CUstream_st *s;
    CUresult r = stream_new_locked(ctx->device, flags, 0, &s);
    if (r == CUDA_SUCCESS) {
        s->refs++; /* the handle's */
        if (sg_handle_add(s) != 0) {
            s->refs--;
            s->destroyed = 1;
            pthread_cond_signal(&s->cv);
            r = CUDA_ERROR_OUT_OF_MEMORY;
        } else {
            *out = s;
        }
    }
    pthread_mutex_unlock(&G.mu);
    return r;
}

SG_EXPORT CUresult sg_stream_destroy(CUstream stream) {
    if (stream == NULL || stream == CU_STREAM_LEGACY || stream == CU_STREAM_PER_THREAD)
        return CUDA_ERROR_INVALID_HANDLE;
    pthread_mutex_lock(&G.mu);
    if (!sg_handle_valid(stream, SG_MAGIC_STREAM)) {
        pthread_mutex_unlock(&G.mu);
        return CUDA_ERROR_INVALID_HANDLE;
    }
    sg_handle_remove(stream);
    if (stream->cap)
        stream->cap->invalidated = 1;
    /* Queued work still runs, as on a GPU; the worker then exits. */
    stream->destroyed = 1;
    pthread_cond_signal(&stream->cv);
    stream_unref_locked(stream);
    pthread_mutex_unlock(&G.mu);
    return CUDA_SUCCESS;
}

SG_EXPORT CUresult sg_stream_flags(CUstream stream, unsigned *flags) {
    if (!flags)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&G.mu);
    struct CUstream_st *s;
    CUresult r = resolve_locked(stream, &s);
    if (r == CUDA_SUCCESS)
        *flags = s->flags;
    pthread_mutex_unlock(&G.mu);
    return r;
}

SG_EXPORT CUresult sg_stream_ctx(CUstream stream, struct CUctx_st **ctx) {
    if (!ctx)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&G.mu);
    struct CUstream_st *s;
    CUresult r = resolve_locked(stream, &s);
    if (r == CUDA_SUCCESS)
        *ctx = &G.ctx[s->device];
    pthread_mutex_unlock(&G.mu);
    return r;
}

SG_EXPORT CUresult sg_stream_sync(CUstream stream) {
    pthread_mutex_lock(&G.mu);
    struct CUstream_st *s;
    CUresult r = resolve_locked(stream, &s);
    if (r != CUDA_SUCCESS)
        goto out;
    if (s->cap) {
        s->cap->invalidated = 1;
        r = CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
        goto out;
    }
    if (s->legacy) {
        /* Synchronising the legacy stream waits for the blocking streams too:
         * queue an empty operation, which carries those dependencies. */
        sg_work w = no_work;
        r = submit_locked(s, &w, NULL, NULL, NULL);
        if (r != CUDA_SUCCESS)
            goto out;
    }
    drain_locked(s);
    r = G.sticky[s->device];
out:
    pthread_mutex_unlock(&G.mu);
    return r;
}

SG_EXPORT CUresult sg_stream_query(CUstream stream) {
    pthread_mutex_lock(&G.mu);
    struct CUstream_st *s;
    CUresult r = resolve_locked(stream, &s);
    if (r == CUDA_SUCCESS) {
        if (s->cap) {
            s->cap->invalidated = 1;
            r = CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
        } else if (G.sticky[s->device]) {
            r = G.sticky[s->device];
        } else if (s->done < s->issued) {
            r = CUDA_ERROR_NOT_READY;
        }
    }
    pthread_mutex_unlock(&G.mu);
    return r;
}

SG_EXPORT CUresult sg_stream_wait_event(CUstream stream, CUevent event) {
    pthread_mutex_lock(&G.mu);
    struct CUstream_st *s;
    CUresult r = resolve_locked(stream, &s);
    if (r != CUDA_SUCCESS)
        goto out;
    if (!event_valid(event)) {
        r = CUDA_ERROR_INVALID_HANDLE;
        goto out;
    }
    if (event->cap_id) {
        /* Waiting on an event recorded in a capture joins that capture: the
         * simulator linearises captured work in issue order. */
        struct sg_capture *c = capture_by_id_locked(event->cap_id);
        if (!c || c->invalidated)
            r = CUDA_ERROR_STREAM_CAPTURE_INVALIDATED;
        else if (s->cap && s->cap != c)
            r = CUDA_ERROR_STREAM_CAPTURE_MERGE;
        else
            s->cap = c;
        goto out;
    }
    if (s->cap || !event->stream || event->stream->done >= event->seq)
        goto out; /* nothing to wait for (or an external event inside a capture) */
    struct sg_dep d = {event->stream, event->seq};
    sg_work w = no_work;
    r = submit_locked(s, &w, NULL, &d, NULL);
out:
    pthread_mutex_unlock(&G.mu);
    return r;
}

SG_EXPORT CUresult sg_ctx_sync(void) {
    struct CUctx_st *ctx = tls_ctx;
    if (!ctx)
        return CUDA_ERROR_INVALID_CONTEXT;
    CUresult r = sg_check_unsafe_call();
    if (r != CUDA_SUCCESS)
        return r;
    pthread_mutex_lock(&G.mu);
    /* Wait for the work issued before this call only (other threads may keep
     * issuing): snapshot each stream's last sequence number, holding a
     * reference so a stream destroyed meanwhile stays readable. */
    size_t n = 0;
    for (struct CUstream_st *t = G.streams; t; t = t->next_live)
        n++;
    struct sg_dep *snap = calloc(n ? n : 1, sizeof *snap);
    if (!snap) {
        pthread_mutex_unlock(&G.mu);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    size_t k = 0;
    for (struct CUstream_st *t = G.streams; t; t = t->next_live) {
        if (t->device == ctx->device && t->done < t->issued) {
            t->refs++;
            snap[k].stream = t;
            snap[k++].seq = t->issued;
        }
    }
    for (size_t i = 0; i < k; i++) {
        while (snap[i].stream->done < snap[i].seq)
            pthread_cond_wait(&G.done_cv, &G.mu);
        stream_unref_locked(snap[i].stream);
    }
    free(snap);
    r = G.sticky[ctx->device];
    pthread_mutex_unlock(&G.mu);
    return r;
}

/* ---- events ---- */

SG_EXPORT CUresult sg_event_create(CUevent *out, unsigned flags) {
    if (!out || (flags & ~(unsigned)(CU_EVENT_BLOCKING_SYNC | CU_EVENT_DISABLE_TIMING | CU_EVENT_INTERPROCESS)))
        return CUDA_ERROR_INVALID_VALUE;
    if ((flags & CU_EVENT_INTERPROCESS) && !(flags & CU_EVENT_DISABLE_TIMING))
        return CUDA_ERROR_INVALID_VALUE;
    if (!tls_ctx)
        return CUDA_ERROR_INVALID_CONTEXT;
    struct CUevent_st *e = calloc(1, sizeof *e);
    if (!e)
        return CUDA_ERROR_OUT_OF_MEMORY;
    e->magic = SG_MAGIC_EVENT;
    e->flags = flags;
    e->refs = 1;
    if (sg_handle_add(e) != 0) {
        free(e);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    *out = e;
    return CUDA_SUCCESS;
}

typedef struct record_work {
    struct CUevent_st *event;
    uint64_t gen;
} record_work;

static CUresult sg_event_record_run(struct CUevent_st *e, uint64_t gen) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    pthread_mutex_lock(&G.mu);
    /* A later record supersedes this one; gen 0 (graph replay) always counts. */
    if (gen == 0 || gen == e->gen) {
        e->time = now;
        e->has_time = 1;
    }
    pthread_mutex_unlock(&G.mu);
    return CUDA_SUCCESS;
}

static CUresult run_record(void *payload, uint64_t call_index) {
    (void)call_index;
    record_work *rw = payload;
    return sg_event_record_run(rw->event, rw->gen);
}

static void release_record(void *payload) {
    record_work *rw = payload;
    pthread_mutex_lock(&G.mu);
    event_unref_locked(rw->event);
    pthread_mutex_unlock(&G.mu);
    free(rw);
}

static void event_set_record_locked(struct CUevent_st *e, struct CUstream_st *s, uint64_t seq) {
    s->refs++;
    if (e->stream)
        stream_unref_locked(e->stream);
    e->stream = s;
    e->seq = seq;
    e->cap_id = 0;
}

SG_EXPORT CUresult sg_event_record(CUevent event, CUstream stream) {
    record_work *rw = malloc(sizeof *rw);
    if (!rw)
        return CUDA_ERROR_OUT_OF_MEMORY;
    pthread_mutex_lock(&G.mu);
    struct CUstream_st *s;
    CUresult r = resolve_locked(stream, &s);
    if (r == CUDA_SUCCESS && !event_valid(event))
        r = CUDA_ERROR_INVALID_HANDLE;
    if (r != CUDA_SUCCESS) {
        pthread_mutex_unlock(&G.mu);
        free(rw);
        return r;
    }
    event->refs++;
    rw->event = event;
    struct sg_capture *cap = s->cap;
    rw->gen = cap ? 0 : event->gen + 1;
    sg_work w = {run_record, release_record, rw, 0};
    uint64_t seq = 0;
    r = submit_locked(s, &w, event, NULL, &seq);
    if (r == CUDA_SUCCESS && cap) {
        event->cap_id = cap->id;
    } else if (r == CUDA_SUCCESS) {
        event->gen = rw->gen;
        event->has_time = 0;
        event_set_record_locked(event, s, seq);
    }
    pthread_mutex_unlock(&G.mu);
    if (r != CUDA_SUCCESS)
        release_record(rw);
    return r;
}

/* Whether the event's last record has run; caller holds G.mu. */
static int event_done_locked(const struct CUevent_st *e) { return !e->stream || e->stream->done >= e->seq; }

SG_EXPORT CUresult sg_event_query(CUevent event) {
    pthread_mutex_lock(&G.mu);
    CUresult r = CUDA_SUCCESS;
    if (!event_valid(event))
        r = CUDA_ERROR_INVALID_HANDLE;
    else if (event->cap_id)
        r = CUDA_ERROR_CAPTURED_EVENT;
    else if (event->stream && G.sticky[event->stream->device])
        r = G.sticky[event->stream->device];
    else if (!event_done_locked(event))
        r = CUDA_ERROR_NOT_READY;
    pthread_mutex_unlock(&G.mu);
    return r;
}

SG_EXPORT CUresult sg_event_sync(CUevent event) {
    pthread_mutex_lock(&G.mu);
    CUresult r = CUDA_SUCCESS;
    if (!event_valid(event)) {
        r = CUDA_ERROR_INVALID_HANDLE;
    } else if (event->cap_id) {
        r = CUDA_ERROR_CAPTURED_EVENT;
    } else if (event->stream) {
        struct CUstream_st *s = event->stream;
        uint64_t seq = event->seq;
        s->refs++;
        while (s->done < seq)
            pthread_cond_wait(&G.done_cv, &G.mu);
        r = G.sticky[s->device];
        stream_unref_locked(s);
    }
    pthread_mutex_unlock(&G.mu);
    return r;
}

SG_EXPORT CUresult sg_event_destroy(CUevent event) {
    pthread_mutex_lock(&G.mu);
    CUresult r = CUDA_SUCCESS;
    if (!event_valid(event)) {
        r = CUDA_ERROR_INVALID_HANDLE;
    } else {
        sg_handle_remove(event);
        event_unref_locked(event);
    }
    pthread_mutex_unlock(&G.mu);
    return r;
}

SG_EXPORT CUresult sg_event_elapsed(float *ms, CUevent start, CUevent end) {
    if (!ms)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&G.mu);
    CUresult r = CUDA_SUCCESS;
    if (!event_valid(start) || !event_valid(end))
        r = CUDA_ERROR_INVALID_HANDLE;
    else if ((start->flags | end->flags) & CU_EVENT_DISABLE_TIMING)
        r = CUDA_ERROR_INVALID_HANDLE;
    else if (!start->stream || !end->stream)
        r = start->cap_id || end->cap_id ? CUDA_ERROR_CAPTURED_EVENT : CUDA_ERROR_INVALID_HANDLE;
    else if (!event_done_locked(start) || !event_done_locked(end) || !start->has_time || !end->has_time)
        r = CUDA_ERROR_NOT_READY;
    else
        *ms = (float)((double)(end->time.tv_sec - start->time.tv_sec) * 1e3 +
                      (double)(end->time.tv_nsec - start->time.tv_nsec) / 1e6);
    pthread_mutex_unlock(&G.mu);
    return r;
}

/* ---- capture and graphs ---- */

SG_EXPORT CUresult sg_capture_begin(CUstream stream, int mode) {
    if (mode < CU_STREAM_CAPTURE_MODE_GLOBAL || mode > CU_STREAM_CAPTURE_MODE_RELAXED)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&G.mu);
    struct CUstream_st *s;
    CUresult r = resolve_locked(stream, &s);
    if (r != CUDA_SUCCESS)
        goto out;
    if (s->legacy) {
        r = CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
        goto out;
    }
    if (s->cap) {
        r = CUDA_ERROR_ILLEGAL_STATE;
        goto out;
    }
    struct sg_capture *c = calloc(1, sizeof *c);
    struct CUgraph_st *g = calloc(1, sizeof *g);
    sg_body *b = sg_body_new();
    if (!c || !g || !b) {
        free(c);
        free(g);
        if (b)
            sg_body_release(b);
        r = CUDA_ERROR_OUT_OF_MEMORY;
        goto out;
    }
    g->magic = SG_MAGIC_GRAPH;
    g->body = b;
    c->id = ++G.next_capture_id;
    c->mode = mode;
    c->thread = pthread_self();
    c->origin = s;
    c->graph = g;
    c->next = G.captures;
    G.captures = c;
    s->cap = c;
out:
    pthread_mutex_unlock(&G.mu);
    return r;
}

SG_EXPORT CUresult sg_capture_end(CUstream stream, CUgraph *out) {
    if (!out)
        return CUDA_ERROR_INVALID_VALUE;
    struct CUgraph_st *discard = NULL;
    pthread_mutex_lock(&G.mu);
    struct CUstream_st *s;
    CUresult r = resolve_locked(stream, &s);
    if (r != CUDA_SUCCESS)
        goto out;
    struct sg_capture *c = s->cap;
    if (!c) {
        r = CUDA_ERROR_ILLEGAL_STATE;
        goto out;
    }
    if (c->origin != s) {
        r = CUDA_ERROR_STREAM_CAPTURE_UNMATCHED;
        goto out;
    }
    for (struct CUstream_st *t = G.streams; t; t = t->next_live)
        if (t->cap == c)
            t->cap = NULL;
    for (struct sg_capture **p = &G.captures; *p; p = &(*p)->next) {
        if (*p == c) {
            *p = c->next;
            break;
        }
    }
    if (c->invalidated) {
        discard = c->graph;
        *out = NULL;
        r = CUDA_ERROR_STREAM_CAPTURE_INVALIDATED;
    } else if (sg_handle_add(c->graph) != 0) {
        discard = c->graph;
        r = CUDA_ERROR_OUT_OF_MEMORY;
    } else {
        *out = c->graph;
    }
    free(c);
out:
    pthread_mutex_unlock(&G.mu);
    if (discard) {
        sg_body_release(discard->body);
        free(discard);
    }
    return r;
}

SG_EXPORT CUresult sg_capture_info(CUstream stream, int *status, uint64_t *id, CUgraph *graph,
                                   const CUgraphNode **deps, size_t *ndeps) {
    if (!status)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&G.mu);
    struct CUstream_st *s;
    CUresult r = resolve_locked(stream, &s);
    if (r == CUDA_SUCCESS) {
        struct sg_capture *c = s->cap;
        *status = !c ? CU_STREAM_CAPTURE_STATUS_NONE
                     : c->invalidated ? CU_STREAM_CAPTURE_STATUS_INVALIDATED : CU_STREAM_CAPTURE_STATUS_ACTIVE;
        size_t len = c ? sg_body_len(c->graph->body) : 0;
        if (c)
            c->last_node = (CUgraphNode)(uintptr_t)len; /* an opaque, non-NULL node name */
        if (id)
            *id = c ? c->id : 0;
        if (graph)
            *graph = c ? c->graph : NULL;
        if (deps)
            *deps = len ? &c->last_node : NULL;
        if (ndeps)
            *ndeps = len ? 1 : 0;
    }
    pthread_mutex_unlock(&G.mu);
    return r;
}

SG_EXPORT CUresult sg_graph_instantiate(CUgraphExec *out, CUgraph graph) {
    if (!out)
        return CUDA_ERROR_INVALID_VALUE;
    if (!graph || !sg_handle_valid(graph, SG_MAGIC_GRAPH))
        return CUDA_ERROR_INVALID_VALUE;
    struct CUgraphExec_st *x = calloc(1, sizeof *x);
    sg_plan *p = sg_plan_new(graph->body);
    if (!x || !p) {
        free(x);
        if (p)
            sg_plan_release(p);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    x->magic = SG_MAGIC_EXEC;
    x->plan = p;
    if (sg_handle_add(x) != 0) {
        sg_plan_release(p);
        free(x);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    *out = x;
    return CUDA_SUCCESS;
}

static CUresult run_graph(void *payload, uint64_t call_index) { return sg_plan_run(payload, call_index); }

static void release_graph(void *payload) { sg_plan_release(payload); }

SG_EXPORT CUresult sg_graph_launch(CUgraphExec exec, CUstream stream) {
    if (!exec || !sg_handle_valid(exec, SG_MAGIC_EXEC))
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&G.mu);
    sg_plan *p = exec->plan;
    sg_plan_retain(p);
    sg_body *b = sg_plan_body(p);
    struct CUstream_st *s;
    CUresult r = resolve_locked(stream, &s);
    if (r != CUDA_SUCCESS) {
        pthread_mutex_unlock(&G.mu);
        sg_plan_release(p);
        return r;
    }
    sg_work w = {run_graph, release_graph, p, sg_body_gemm_calls(b)};
    uint64_t seq = 0;
    int capturing = s->cap != NULL;
    r = submit_locked(s, &w, NULL, NULL, &seq);
    if (r == CUDA_SUCCESS && !capturing) {
        /* Events recorded inside the graph now complete with this launch. */
        for (size_t i = 0; i < sg_body_len(b); i++) {
            struct CUevent_st *e = sg_body_event(b, i);
            if (e) {
                e->gen++;
                e->has_time = 0;
                event_set_record_locked(e, s, seq);
            }
        }
    }
    pthread_mutex_unlock(&G.mu);
    if (r != CUDA_SUCCESS)
        sg_plan_release(p);
    return r;
}

/* Gives exec a plan made from its current one by make (under G.mu; a launch already
 * queued keeps the plan it was given). Returns CUDA_ERROR_OUT_OF_MEMORY when make
 * returns NULL with *failure unset, else *failure. */
static CUresult exec_replan(CUgraphExec exec, sg_plan *(*make)(sg_plan *cur, void *arg, CUresult *failure),
                            void *arg) {
    CUresult r = CUDA_SUCCESS;
    sg_plan *old = NULL;
    pthread_mutex_lock(&G.mu);
    if (!exec || !sg_handle_valid(exec, SG_MAGIC_EXEC)) {
        r = CUDA_ERROR_INVALID_VALUE;
    } else {
        sg_plan *p = make(exec->plan, arg, &r);
        if (p) {
            old = exec->plan;
            exec->plan = p;
        } else if (r == CUDA_SUCCESS) {
            r = CUDA_ERROR_OUT_OF_MEMORY;
        }
    }
    pthread_mutex_unlock(&G.mu);
    if (old)
        sg_plan_release(old);
    return r;
}

typedef struct set_kernel_arg {
    size_t at;
    sg_work work;
    int (*is_kernel)(const sg_work *);
} set_kernel_arg;

static sg_plan *with_kernel(sg_plan *cur, void *arg, CUresult *failure) {
    set_kernel_arg *k = arg;
    const sg_work *w = sg_plan_node(cur, k->at);
    if (!w || !k->is_kernel(w)) {
        *failure = CUDA_ERROR_INVALID_VALUE; /* not a kernel node of this graph */
        return NULL;
    }
    return sg_plan_with(cur, k->at, k->work);
}

SG_EXPORT CUresult sg_graph_exec_set_kernel(CUgraphExec exec, CUgraphNode node, sg_work work,
                                            int (*is_kernel)(const sg_work *)) {
    /* Node handles are 1 + the node's position (see sg_capture_info). */
    set_kernel_arg k = {(size_t)(uintptr_t)node - 1, work, is_kernel};
    CUresult r = node ? exec_replan(exec, with_kernel, &k) : CUDA_ERROR_INVALID_VALUE;
    if (r != CUDA_SUCCESS && work.release)
        work.release(work.payload);
    return r;
}

static sg_plan *from_graph(sg_plan *cur, void *arg, CUresult *failure) {
    struct CUgraph_st *g = arg;
    if (!sg_body_same_shape(sg_plan_body(cur), g->body)) {
        *failure = CUDA_ERROR_GRAPH_EXEC_UPDATE_FAILURE;
        return NULL;
    }
    return sg_plan_new(g->body);
}

SG_EXPORT CUresult sg_graph_exec_update(CUgraphExec exec, CUgraph graph, int *result) {
    *result = CU_GRAPH_EXEC_UPDATE_ERROR;
    if (!graph || !sg_handle_valid(graph, SG_MAGIC_GRAPH))
        return CUDA_ERROR_INVALID_VALUE;
    CUresult r = exec_replan(exec, from_graph, graph);
    if (r == CUDA_SUCCESS)
        *result = CU_GRAPH_EXEC_UPDATE_SUCCESS;
    else if (r == CUDA_ERROR_GRAPH_EXEC_UPDATE_FAILURE)
        *result = CU_GRAPH_EXEC_UPDATE_ERROR_TOPOLOGY_CHANGED;
    return r;
}

SG_EXPORT CUresult sg_graph_exec_destroy(CUgraphExec exec) {
    if (!exec || !sg_handle_valid(exec, SG_MAGIC_EXEC))
        return CUDA_ERROR_INVALID_VALUE;
    sg_handle_remove(exec);
    sg_plan_release(exec->plan);
    free(exec);
    return CUDA_SUCCESS;
}

SG_EXPORT CUresult sg_graph_destroy(CUgraph graph) {
    if (!graph || !sg_handle_valid(graph, SG_MAGIC_GRAPH))
        return CUDA_ERROR_INVALID_VALUE;
    sg_handle_remove(graph);
    sg_body_release(graph->body);
    free(graph);
    return CUDA_SUCCESS;
}

/*
 * Simulated GPU: the body of a captured graph, a reference-counted sequence of
 * stream work. Capture appends to it; instantiation shares it; each launch runs
 * all of it, in capture order, as one unit of work on the launch stream, so a
 * replay re-runs every captured copy, kernel and GEMM with the parameters they
 * had when captured (and device memory as it is at replay time).
 *
 * The simulator keeps a captured graph linear: work from streams that joined
 * the capture is interleaved in the order it was issued, which is one valid
 * order of the real graph.
 */
#include <stdlib.h>

#include "simgpu.h"

typedef struct node {
    sg_work work;
    struct CUevent_st *event; /* set for event-record nodes */
} node;

struct sg_body {
    int refs; /* atomic */
    size_t len, cap;
    uint32_t gemm_calls;
    node *nodes;
};

sg_body *sg_body_new(void) {
    sg_body *b = calloc(1, sizeof *b);
    if (b)
        b->refs = 1;
    return b;
}

void sg_body_retain(sg_body *b) { __atomic_add_fetch(&b->refs, 1, __ATOMIC_RELAXED); }

void sg_body_release(sg_body *b) {
    if (__atomic_sub_fetch(&b->refs, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    for (size_t i = 0; i < b->len; i++)
        if (b->nodes[i].work.release)
            b->nodes[i].work.release(b->nodes[i].work.payload);
    free(b->nodes);
    free(b);
}

int sg_body_append(sg_body *b, sg_work work, struct CUevent_st *event) {
    if (b->len == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 16;
        node *grown = realloc(b->nodes, cap * sizeof *grown);
        if (!grown)
            return -1;
        b->nodes = grown;
        b->cap = cap;
    }
    b->nodes[b->len].work = work;
    b->nodes[b->len].event = event;
    b->len++;
    b->gemm_calls += work.gemm_calls;
    return 0;
}

size_t sg_body_len(const sg_body *b) { return b->len; }

uint32_t sg_body_gemm_calls(const sg_body *b) { return b->gemm_calls; }

struct CUevent_st *sg_body_event(const sg_body *b, size_t i) { return b->nodes[i].event; }

CUresult sg_body_run(sg_body *b, uint64_t call_index) {
    for (size_t i = 0; i < b->len; i++) {
        const node *n = &b->nodes[i];
        CUresult r = n->work.run(n->work.payload, call_index);
        if (r != CUDA_SUCCESS)
            return r;
        call_index += n->work.gemm_calls;
    }
    return CUDA_SUCCESS;
}

/* ---- executable graphs: a body plus per-exec kernel-node parameters ---- */

/* A node's work as replaced in one executable graph (cuGraphExecKernelNodeSetParams),
 * shared by the plans that still use it and by queued launches. */
typedef struct sg_override {
    int refs; /* atomic */
    sg_work work;
} sg_override;

struct sg_plan {
    int refs; /* atomic */
    sg_body *body;
    sg_override **ov; /* body->len entries; NULL: the body's own work */
};

static void override_release(sg_override *o) {
    if (!o || __atomic_sub_fetch(&o->refs, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    if (o->work.release)
        o->work.release(o->work.payload);
    free(o);
}

sg_plan *sg_plan_new(sg_body *b) {
    sg_plan *p = calloc(1, sizeof *p);
    sg_override **ov = calloc(b->len ? b->len : 1, sizeof *ov);
    if (!p || !ov) {
        free(p);
        free(ov);
        return NULL;
    }
    p->refs = 1;
    p->body = b;
    p->ov = ov;
    sg_body_retain(b);
    return p;
}

sg_plan *sg_plan_with(const sg_plan *old, size_t node, sg_work work) {
    sg_plan *p = sg_plan_new(old->body);
    sg_override *o = calloc(1, sizeof *o);
    if (!p || !o || node >= old->body->len) {
        if (p)
            sg_plan_release(p);
        free(o);
        return NULL;
    }
    for (size_t i = 0; i < old->body->len; i++) {
        p->ov[i] = old->ov[i];
        if (p->ov[i])
            __atomic_add_fetch(&p->ov[i]->refs, 1, __ATOMIC_RELAXED);
    }
    override_release(p->ov[node]);
    o->refs = 1;
    o->work = work;
    p->ov[node] = o;
    return p;
}

void sg_plan_retain(sg_plan *p) { __atomic_add_fetch(&p->refs, 1, __ATOMIC_RELAXED); }

void sg_plan_release(sg_plan *p) {
    if (__atomic_sub_fetch(&p->refs, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    for (size_t i = 0; i < p->body->len; i++)
        override_release(p->ov[i]);
    free(p->ov);
    sg_body_release(p->body);
    free(p);
}

sg_body *sg_plan_body(const sg_plan *p) { return p->body; }

const sg_work *sg_plan_node(const sg_plan *p, size_t node) {
    if (node >= p->body->len)
        return NULL;
    return p->ov[node] ? &p->ov[node]->work : &p->body->nodes[node].work;
}

int sg_body_same_shape(const sg_body *a, const sg_body *b) {
    if (a->len != b->len)
        return 0;
    for (size_t i = 0; i < a->len; i++)
        if (a->nodes[i].work.run != b->nodes[i].work.run || a->nodes[i].work.gemm_calls != b->nodes[i].work.gemm_calls ||
            !a->nodes[i].event != !b->nodes[i].event)
            return 0;
    return 1;
}

CUresult sg_plan_run(sg_plan *p, uint64_t call_index) {
    for (size_t i = 0; i < p->body->len; i++) {
        const sg_work *w = sg_plan_node(p, i);
        CUresult r = w->run(w->payload, call_index);
        if (r != CUDA_SUCCESS)
            return r;
        call_index += w->gemm_calls;
    }
    return CUDA_SUCCESS;
}

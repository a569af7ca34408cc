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

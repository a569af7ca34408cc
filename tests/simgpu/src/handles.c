/*
 * Simulated GPU: the registry of live handles. A stream, event, graph, module
 * or function handle is checked here before it is dereferenced, so that a
 * destroyed or made-up handle gets CUDA_ERROR_INVALID_HANDLE instead of a
 * crash inside the simulator. Each handle struct begins with a 32-bit magic
 * that names its kind.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "handles.h"

static pthread_mutex_t handles_mu = PTHREAD_MUTEX_INITIALIZER;
static uintptr_t *live; /* sorted */
static size_t nlive, cap_live;

static size_t lower_bound(uintptr_t p) {
    size_t lo = 0, hi = nlive;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (live[mid] < p)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

int sg_handle_add(const void *h) {
    uintptr_t p = (uintptr_t)h;
    pthread_mutex_lock(&handles_mu);
    if (nlive == cap_live) {
        size_t cap = cap_live ? cap_live * 2 : 256;
        uintptr_t *grown = realloc(live, cap * sizeof *grown);
        if (!grown) {
            pthread_mutex_unlock(&handles_mu);
            return -1;
        }
        live = grown;
        cap_live = cap;
    }
    size_t i = lower_bound(p);
    memmove(&live[i + 1], &live[i], (nlive - i) * sizeof *live);
    live[i] = p;
    nlive++;
    pthread_mutex_unlock(&handles_mu);
    return 0;
}

void sg_handle_remove(const void *h) {
    uintptr_t p = (uintptr_t)h;
    pthread_mutex_lock(&handles_mu);
    size_t i = lower_bound(p);
    if (i < nlive && live[i] == p) {
        memmove(&live[i], &live[i + 1], (nlive - i - 1) * sizeof *live);
        nlive--;
    }
    pthread_mutex_unlock(&handles_mu);
}

int sg_handle_valid(const void *h, uint32_t magic) {
    uintptr_t p = (uintptr_t)h;
    pthread_mutex_lock(&handles_mu);
    size_t i = lower_bound(p);
    int ok = i < nlive && live[i] == p && *(const uint32_t *)h == magic;
    pthread_mutex_unlock(&handles_mu);
    return ok;
}

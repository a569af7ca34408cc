/*
 * Simulated GPU: the allocation table. Every device and pinned allocation is
 * tracked here, so that pointer attributes, frees of unknown pointers and
 * out-of-bounds device accesses are answered as a GPU would answer them.
 *
 * Device memory is split in two: the address programs see is an mmap'ed range
 * with no access rights (a host dereference faults, as on a GPU), and the bytes
 * live in a separate buffer that only stream workers reach, through
 * sg_dev_span. Pinned host memory is ordinary memory whose device address is
 * its host address (unified addressing).
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "simgpu.h"

/* Simulated device memory per device; a larger request is out of memory. */
#define SG_DEVICE_BYTES (16ull << 30)

static pthread_rwlock_t mem_lock = PTHREAD_RWLOCK_INITIALIZER;
static sg_region *regions; /* sorted by base */
static size_t nregions, cap_regions;
static uint64_t next_id = 1;
static size_t device_bytes[SG_MAX_DEVICES];

/* Index of the first region whose base is > addr. */
static size_t upper_bound(uintptr_t addr) {
    size_t lo = 0, hi = nregions;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (regions[mid].base <= addr)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* The region containing addr, or NULL; caller holds mem_lock. */
static const sg_region *find_locked(uintptr_t addr) {
    size_t i = upper_bound(addr);
    if (i == 0)
        return NULL;
    const sg_region *r = &regions[i - 1];
    /* A zero-length probe at the end of a region is outside it. */
    return addr - r->base < r->size ? r : NULL;
}

static int insert_locked(const sg_region *r) {
    if (nregions == cap_regions) {
        size_t cap = cap_regions ? cap_regions * 2 : 64;
        sg_region *grown = realloc(regions, cap * sizeof *grown);
        if (!grown)
            return -1;
        regions = grown;
        cap_regions = cap;
    }
    size_t i = upper_bound(r->base);
    memmove(&regions[i + 1], &regions[i], (nregions - i) * sizeof *regions);
    regions[i] = *r;
    nregions++;
    return 0;
}

SG_EXPORT CUresult sg_mem_alloc_device(uintptr_t *out, size_t size, int device) {
    if (!out)
        return CUDA_ERROR_INVALID_VALUE;
    if (size == 0) {
        *out = 0;
        return CUDA_SUCCESS;
    }
    pthread_rwlock_wrlock(&mem_lock);
    int fits = size <= SG_DEVICE_BYTES - device_bytes[device];
    pthread_rwlock_unlock(&mem_lock);
    if (!fits)
        return CUDA_ERROR_OUT_OF_MEMORY;
    void *addr = mmap(NULL, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (addr == MAP_FAILED)
        return CUDA_ERROR_OUT_OF_MEMORY;
    void *host = NULL;
    if (posix_memalign(&host, 256, size) != 0) {
        munmap(addr, size);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    /* Fresh device memory is not zero on a GPU; all-ones bytes read as NaN in
     * every floating type, so a GEMM that reads C when beta == 0, or a check
     * that reads memory nothing wrote, shows up. */
    memset(host, 0xff, size);
    sg_region r = {(uintptr_t)addr, size, host, SG_MEM_DEVICE, device, 0, 0};
    pthread_rwlock_wrlock(&mem_lock);
    r.id = next_id++;
    int failed = insert_locked(&r);
    if (!failed)
        device_bytes[device] += size;
    pthread_rwlock_unlock(&mem_lock);
    if (failed) {
        free(host);
        munmap(addr, size);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    *out = (uintptr_t)addr;
    return CUDA_SUCCESS;
}

SG_EXPORT CUresult sg_mem_alloc_pinned(void **out, size_t size, unsigned flags, int device) {
    if (!out)
        return CUDA_ERROR_INVALID_VALUE;
    if (size == 0) {
        *out = NULL;
        return CUDA_SUCCESS;
    }
    void *host = NULL;
    if (posix_memalign(&host, 4096, size) != 0)
        return CUDA_ERROR_OUT_OF_MEMORY;
    memset(host, 0, size);
    sg_region r = {(uintptr_t)host, size, host, SG_MEM_PINNED, device, flags, 0};
    pthread_rwlock_wrlock(&mem_lock);
    r.id = next_id++;
    int failed = insert_locked(&r);
    pthread_rwlock_unlock(&mem_lock);
    if (failed) {
        free(host);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    *out = host;
    return CUDA_SUCCESS;
}

SG_EXPORT CUresult sg_mem_free(uintptr_t base, int kind) {
    pthread_rwlock_wrlock(&mem_lock);
    size_t i = upper_bound(base);
    if (i == 0 || regions[i - 1].base != base || regions[i - 1].kind != kind) {
        pthread_rwlock_unlock(&mem_lock);
        return CUDA_ERROR_INVALID_VALUE;
    }
    sg_region r = regions[i - 1];
    memmove(&regions[i - 1], &regions[i], (nregions - i) * sizeof *regions);
    nregions--;
    if (kind == SG_MEM_DEVICE)
        device_bytes[r.device] -= r.size;
    pthread_rwlock_unlock(&mem_lock);
    free(r.host);
    if (kind == SG_MEM_DEVICE)
        munmap((void *)r.base, r.size);
    return CUDA_SUCCESS;
}

SG_EXPORT int sg_mem_find(uintptr_t addr, sg_region *out) {
    pthread_rwlock_rdlock(&mem_lock);
    const sg_region *r = find_locked(addr);
    if (r && out)
        *out = *r;
    pthread_rwlock_unlock(&mem_lock);
    return r != NULL;
}

SG_EXPORT size_t sg_mem_device_bytes(int device) {
    pthread_rwlock_rdlock(&mem_lock);
    size_t n = device_bytes[device];
    pthread_rwlock_unlock(&mem_lock);
    return n;
}

SG_EXPORT size_t sg_mem_total_bytes(void) { return SG_DEVICE_BYTES; }

SG_EXPORT void *sg_dev_span(uint64_t addr, size_t bytes) {
    pthread_rwlock_rdlock(&mem_lock);
    const sg_region *r = find_locked((uintptr_t)addr);
    void *p = NULL;
    if (r && bytes <= r->size - (addr - r->base))
        p = r->host + (addr - r->base);
    pthread_rwlock_unlock(&mem_lock);
    return p;
}

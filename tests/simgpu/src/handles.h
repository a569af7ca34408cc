/* Simulated GPU: registry of live handles (see handles.c). */
#ifndef SIMGPU_HANDLES_H
#define SIMGPU_HANDLES_H
#include <stdint.h>

#define SG_EXPORT_H __attribute__((visibility("default")))

enum {
    SG_MAGIC_STREAM = 0x53545245,
    SG_MAGIC_EVENT = 0x45564e54,
    SG_MAGIC_GRAPH = 0x47525048,
    SG_MAGIC_EXEC = 0x47455845,
    SG_MAGIC_MODULE = 0x4d4f444c,
    SG_MAGIC_FUNCTION = 0x46554e43,
    SG_MAGIC_CTX = 0x43545854
};

SG_EXPORT_H int sg_handle_add(const void *h);
SG_EXPORT_H void sg_handle_remove(const void *h);
/* Whether h is live and begins with magic. */
SG_EXPORT_H int sg_handle_valid(const void *h, uint32_t magic);
#endif

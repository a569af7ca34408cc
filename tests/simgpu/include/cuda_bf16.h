/* Simulated GPU: storage-only bfloat16 type; see cuda_fp16.h. */
#ifndef SIMGPU_CUDA_BF16_H
#define SIMGPU_CUDA_BF16_H
typedef struct __nv_bfloat16 {
    unsigned short x;
} __nv_bfloat16;
#endif

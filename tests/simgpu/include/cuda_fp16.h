/* Simulated GPU: storage-only half and bfloat16 types for C programs (the real
 * header's arithmetic is C++/device code the simulator has no use for). The
 * layout (one 16-bit word) is that of CUDA's __half and __nv_bfloat16. */
#ifndef SIMGPU_CUDA_FP16_H
#define SIMGPU_CUDA_FP16_H
typedef struct __half {
    unsigned short x;
} __half;
typedef __half half;
#endif

/* Simulated GPU: the complex element types of cuComplex.h (the layouts of CUDA's
 * float2 and double2). Written for this project. */
#ifndef SIMGPU_CUCOMPLEX_H
#define SIMGPU_CUCOMPLEX_H

typedef struct __attribute__((aligned(8))) {
    float x, y;
} cuFloatComplex;
typedef struct __attribute__((aligned(16))) {
    double x, y;
} cuDoubleComplex;
typedef cuFloatComplex cuComplex;

#endif

/* Simulated GPU: the runtime API header programs include. It adds nothing to
 * cuda_runtime_api.h because the simulator serves C programs only. */
#ifndef SIMGPU_CUDA_RUNTIME_H
#define SIMGPU_CUDA_RUNTIME_H
#include "cuda_runtime_api.h"
#endif

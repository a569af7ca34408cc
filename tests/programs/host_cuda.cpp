/*
 * The commitment kernels' CUDA source (cuda/gather.cu) compiled for the host
 * and run on the CPU, behind the few CUDA driver functions that
 * tests/programs/simgpu_commit.c calls, so that the same program, the same
 * cases and the same comparison with the Rust reference (tests/e2e/simgpu.rs)
 * run the kernels themselves and not only the simulator's twins. No GPU, no
 * CUDA toolkit: a C++17 compiler.
 *
 * A launch runs its blocks one after another; the threads of a block are
 * coroutines (ucontext) on one OS thread, switched at __syncthreads, so a block
 * of 1024 threads costs nothing to start and the run is deterministic. Shared
 * memory is the kernels' `__shared__` variables made function statics (one
 * block at a time uses them). A barrier that some threads of a block reach
 * while others have returned is reported and the program exits with status 3:
 * the kernels' barriers must be uniform.
 *
 * Memory is host memory: device and pinned allocations are malloc'd, a device
 * pointer is its host address, copies are memcpy and launches run at once. A
 * stray read does not fault reliably here, so simgpu_commit runs with
 * --no-fault (which skips its illegal-address case); reading the unmapped
 * addresses of its malformed jobs would still crash it.
 */
#include <ucontext.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <cuda.h>

// ---- the CUDA built-ins the kernels use ----

namespace host_cuda {
struct uint3 {
  unsigned x, y, z;
};
}  // namespace host_cuda

static host_cuda::uint3 threadIdx, blockIdx, blockDim, gridDim;
static void __syncthreads();

#define __global__
#define __device__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __constant__
#define __shared__ static

#include "../../cuda/gather.cu"

// ---- blocks of coroutines ----

namespace {

enum state { RUNNABLE, AT_BARRIER, DONE };

struct cthread {
  ucontext_t ctx;
  state st;
};

constexpr size_t STACK_BYTES = 256 * 1024;

ucontext_t scheduler;
std::vector<cthread> threads;
std::vector<std::vector<char>> stacks;
unsigned current;
void (*body)(void* const*);
void* const* body_params;

void trampoline() {
  body(body_params);
  threads[current].st = DONE;  // then uc_link resumes the scheduler
}

void set_thread_index(unsigned t) {
  threadIdx = {t % blockDim.x, (t / blockDim.x) % blockDim.y, t / (blockDim.x * blockDim.y)};
}

// Runs block blockIdx with blockDim threads to completion.
void run_block() {
  const unsigned n = blockDim.x * blockDim.y * blockDim.z;
  threads.resize(n);
  while (stacks.size() < n)
    stacks.emplace_back(STACK_BYTES);
  for (unsigned t = 0; t < n; t++) {
    getcontext(&threads[t].ctx);
    threads[t].ctx.uc_stack.ss_sp = stacks[t].data();
    threads[t].ctx.uc_stack.ss_size = STACK_BYTES;
    threads[t].ctx.uc_link = &scheduler;
    makecontext(&threads[t].ctx, trampoline, 0);
    threads[t].st = RUNNABLE;
  }
  for (;;) {
    // Every thread runs to its next barrier, or to its end.
    for (unsigned t = 0; t < n; t++) {
      if (threads[t].st != RUNNABLE)
        continue;
      current = t;
      set_thread_index(t);
      swapcontext(&scheduler, &threads[t].ctx);
    }
    unsigned waiting = 0;
    for (unsigned t = 0; t < n; t++)
      waiting += threads[t].st == AT_BARRIER;
    if (waiting == 0)
      return;
    if (waiting != n) {
      std::printf("FAIL host_cuda: block (%u, %u, %u): %u of %u threads wait at a barrier the others never reach\n",
                  blockIdx.x, blockIdx.y, blockIdx.z, waiting, n);
      std::printf("SUMMARY host_cuda: divergent barrier\n");
      std::exit(3);
    }
    for (unsigned t = 0; t < n; t++)
      threads[t].st = RUNNABLE;
  }
}

}  // namespace

static void __syncthreads() {
  threads[current].st = AT_BARRIER;
  swapcontext(&threads[current].ctx, &scheduler);
}

// ---- the kernels, by name, with their parameters unpacked ----

namespace {

void leaves_body(void* const* p) {
  mmaudit_commit_leaves(reinterpret_cast<const mmaudit_commit_job*>(*static_cast<const u64*>(p[0])),
                        *static_cast<const u32*>(p[1]));
}

void replay_body(void* const* p) {
  mmaudit_commit_leaves_replay(reinterpret_cast<const mmaudit_replay_ctrl*>(*static_cast<const u64*>(p[0])),
                               *static_cast<const u32*>(p[1]), *static_cast<const u32*>(p[2]));
}

void tree_body(void* const* p) {
  mmaudit_commit_tree(reinterpret_cast<const u8*>(*static_cast<const u64*>(p[0])), *static_cast<const u64*>(p[1]),
                      reinterpret_cast<u8*>(*static_cast<const u64*>(p[2])));
}

struct kernel {
  const char* name;
  void (*run)(void* const*);
};
const kernel kernels[] = {{"mmaudit_commit_leaves", leaves_body},
                          {"mmaudit_commit_leaves_replay", replay_body},
                          {"mmaudit_commit_tree", tree_body}};

// Stand-ins for the driver's handles.
int the_context, the_stream;

}  // namespace

// ---- the driver functions simgpu_commit calls ----

extern "C" {

CUresult cuInit(unsigned int) {
  return CUDA_SUCCESS;
}

CUresult cuDevicePrimaryCtxRetain(CUcontext* ctx, CUdevice) {
  *ctx = reinterpret_cast<CUcontext>(&the_context);
  return CUDA_SUCCESS;
}

CUresult cuCtxSetCurrent(CUcontext) {
  return CUDA_SUCCESS;
}

CUresult cuCtxSynchronize(void) {
  return CUDA_SUCCESS;
}

// The module is the PTX text: a function exists when the PTX declares its
// entry and this file runs its source.
CUresult cuModuleLoadData(CUmodule* mod, const void* image) {
  *mod = reinterpret_cast<CUmodule>(const_cast<void*>(image));
  return CUDA_SUCCESS;
}

CUresult cuModuleGetFunction(CUfunction* f, CUmodule mod, const char* name) {
  char entry[128];
  std::snprintf(entry, sizeof entry, ".entry %s(", name);
  for (const kernel& k : kernels)
    if (!std::strcmp(k.name, name) && std::strstr(reinterpret_cast<const char*>(mod), entry)) {
      *f = reinterpret_cast<CUfunction>(const_cast<kernel*>(&k));
      return CUDA_SUCCESS;
    }
  return CUDA_ERROR_NOT_FOUND;
}

CUresult cuStreamCreate(CUstream* stream, unsigned int) {
  *stream = reinterpret_cast<CUstream>(&the_stream);
  return CUDA_SUCCESS;
}

CUresult cuStreamSynchronize(CUstream) {
  return CUDA_SUCCESS;
}

CUresult cuMemAlloc_v2(CUdeviceptr* p, size_t bytes) {
  void* q = std::malloc(bytes ? bytes : 1);
  if (!q)
    return CUDA_ERROR_OUT_OF_MEMORY;
  *p = reinterpret_cast<CUdeviceptr>(q);
  return CUDA_SUCCESS;
}

CUresult cuMemHostAlloc(void** p, size_t bytes, unsigned int) {
  *p = std::aligned_alloc(4096, (bytes + 4095) / 4096 * 4096);
  return *p ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}

CUresult cuMemHostGetDevicePointer_v2(CUdeviceptr* d, void* p, unsigned int) {
  *d = reinterpret_cast<CUdeviceptr>(p);
  return CUDA_SUCCESS;
}

CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void* src, size_t n) {
  std::memcpy(reinterpret_cast<void*>(dst), src, n);
  return CUDA_SUCCESS;
}

CUresult cuMemcpyDtoH_v2(void* dst, CUdeviceptr src, size_t n) {
  std::memcpy(dst, reinterpret_cast<const void*>(src), n);
  return CUDA_SUCCESS;
}

CUresult cuMemcpyDtoD_v2(CUdeviceptr dst, CUdeviceptr src, size_t n) {
  std::memmove(reinterpret_cast<void*>(dst), reinterpret_cast<const void*>(src), n);
  return CUDA_SUCCESS;
}

// Runs the whole grid before returning (the stream has nothing else to do).
CUresult cuLaunchKernel(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx,
                        unsigned int by, unsigned int bz, unsigned int shared, CUstream, void** params, void** extra) {
  if (!f || !params || extra || shared != 0)
    return CUDA_ERROR_INVALID_VALUE;
  if (!gx || !gy || !gz || gy > 65535 || gz > 65535 || !bx || !by || !bz || bz > 64 ||
      static_cast<unsigned long long>(bx) * by * bz > 1024)
    return CUDA_ERROR_INVALID_VALUE;
  body = reinterpret_cast<const kernel*>(f)->run;
  body_params = params;
  gridDim = {gx, gy, gz};
  blockDim = {bx, by, bz};
  for (unsigned z = 0; z < gz; z++)
    for (unsigned y = 0; y < gy; y++)
      for (unsigned x = 0; x < gx; x++) {
        blockIdx = {x, y, z};
        run_block();
      }
  return CUDA_SUCCESS;
}

}  // extern "C"

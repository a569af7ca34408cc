// mmaudit's gather kernel: copies chosen elements of GEMM operands and results
// (rows of op(A), columns of op(B), entries of C, device-side scalars) into a
// dense buffer, usually the device alias of mapped pinned host memory.
//
// One generic kernel serves every case: a job describes a 3-D index space
// (batch member b, "row" i, "column" j); each axis is either the identity or an
// explicit u64 index list, and maps to a byte offset through a stride. Rows of
// a column-major matrix are (idx_i = chosen rows, stride_i = elem,
// stride_j = ld*elem), columns swap the roles, entries use both lists, a
// scalar is nb = ni = nj = 1. The kernel never interprets the elements: it
// copies elem_size bytes bit-exactly, so it is the same for f64, f32, f16,
// bf16, fp8 and int8.
//
// This file is compiled to PTX (cuda/gather.ptx) by scripts/build-ptx.sh with
// NVRTC 12.0 for compute_70; the PTX is committed and embedded in
// libmmaudit.so. The simulated GPU runs a CPU twin with the same semantics
// (tests/simgpu/src/kernels.c, twin_mmaudit_gather): change both together.
//
// What it must never do: write anywhere but out[0 .. nb*ni*nj) of a job, or
// read anything but the job, its index lists, its pointer array and the
// elements they address. A malformed job (a zero count, an unsupported element
// size, unknown flags, a nonzero reserved field, an index list or pointer
// array that is not 8-aligned, or a size that overflows 64 bits) is skipped: nothing is read through it and nothing is written.
//
// No headers: NVRTC compiles this without the CUDA toolkit's include files.

typedef unsigned long long u64;
typedef long long i64;
typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned char u8;

// One gather job (the ABI shared with the interposer; 88 bytes, 8-aligned):
//   out[((b*ni)+i)*nj + j] = element at batch_base(b) + idx_i(i)*stride_i + idx_j(j)*stride_j
// with, all in bytes,
//   batch_base(b) = (flags & 1) ? ((const u64*)src)[bidx(b)] : src + bidx(b)*batch_stride
//   bidx(b) = batch_idx ? ((const u64*)batch_idx)[b] : b   (idx_i, idx_j likewise)
// Address arithmetic wraps modulo 2^64 (strides may be negative).
struct mmaudit_gather_job {
  u64 src;           // 0: base address, or the address of a u64 pointer array (flags bit 0)
  u64 out;           // 8: where the nb*ni*nj elements go, dense, j fastest
  u64 batch_idx;     // 16: address of u64[nb] batch indices, or 0 for b itself
  u64 idx_i;         // 24: address of u64[ni] row indices, or 0 for i itself
  u64 idx_j;         // 32: address of u64[nj] column indices, or 0 for j itself
  i64 batch_stride;  // 40: bytes between batch members (ignored for a pointer array)
  i64 stride_i;      // 48: bytes between consecutive i
  i64 stride_j;      // 56: bytes between consecutive j
  u32 nb, ni, nj;    // 64, 68, 72: counts
  u32 elem_size;     // 76: 1, 2, 4 or 8
  u32 flags;         // 80: bit 0: src is a pointer array
  u32 reserved;      // 84: must be 0
};

// Eight 8-byte fields then six 4-byte fields: no padding is possible, so the
// size pins every offset (NVRTC has no offsetof without headers).
static_assert(sizeof(mmaudit_gather_job) == 88, "job ABI: 88 bytes");
static_assert(alignof(mmaudit_gather_job) == 8, "job ABI: 8-aligned");

#define MMAUDIT_GATHER_POINTER_ARRAY 1u
#define MMAUDIT_GATHER_KNOWN_FLAGS MMAUDIT_GATHER_POINTER_ARRAY

// Entry `index` of an index list, or `index` itself when the list is absent.
// Lists (and a pointer array) were checked to be 8-aligned.
static __device__ __forceinline__ u64 pick(u64 list, u64 index) {
  return list ? reinterpret_cast<const u64*>(list)[index] : index;
}

// Copies one element of `size` bytes. Elements of a well-formed job are
// naturally aligned and take one load and one store; anything else is copied
// bytewise rather than faulting.
static __device__ __forceinline__ void copy_element(u64 dst, u64 src, u32 size) {
  if (((dst | src) & (size - 1)) == 0) {
    switch (size) {
      case 1:
        *reinterpret_cast<u8*>(dst) = *reinterpret_cast<const u8*>(src);
        return;
      case 2:
        *reinterpret_cast<u16*>(dst) = *reinterpret_cast<const u16*>(src);
        return;
      case 4:
        *reinterpret_cast<u32*>(dst) = *reinterpret_cast<const u32*>(src);
        return;
      default:
        *reinterpret_cast<u64*>(dst) = *reinterpret_cast<const u64*>(src);
        return;
    }
  }
#pragma unroll 1
  for (u32 k = 0; k < size; k++)
    reinterpret_cast<u8*>(dst)[k] = reinterpret_cast<const u8*>(src)[k];
}

// Block-wide: one thread fetches the job at `at` into shared memory for the
// whole block (the job table usually lives in mapped pinned host memory, where
// every read crosses the bus). Every thread of the block must call it.
static __device__ __forceinline__ void load_job(u64 at, u64* job_words, u32 tid) {
  if (tid == 0) {
    if ((at & 7) == 0) {
      for (u32 w = 0; w < sizeof(mmaudit_gather_job) / 8; w++)
        job_words[w] = reinterpret_cast<const u64*>(at)[w];
    } else {
      // A misaligned table (an ABI violation) is read bytewise, not faulted on.
#pragma unroll 1
      for (u32 k = 0; k < sizeof(mmaudit_gather_job); k++)
        reinterpret_cast<u8*>(job_words)[k] = reinterpret_cast<const u8*>(at)[k];
    }
  }
  __syncthreads();
}

// The gridDim.x blocks that share a job grid-stride over its nb*ni*nj elements
// with 64-bit indices. A malformed job is skipped (uniform over the block).
static __device__ __forceinline__ void copy_job(const mmaudit_gather_job& job, u32 tid, u32 threads) {
  // Validate before touching any address in the job.
  const u32 size = job.elem_size;
  if (job.nb == 0 || job.ni == 0 || job.nj == 0)
    return;
  if (size != 1 && size != 2 && size != 4 && size != 8)
    return;
  if ((job.flags & ~MMAUDIT_GATHER_KNOWN_FLAGS) != 0 || job.reserved != 0)
    return;
  const bool pointer_array = (job.flags & MMAUDIT_GATHER_POINTER_ARRAY) != 0;
  if (((job.batch_idx | job.idx_i | job.idx_j | (pointer_array ? job.src : 0)) & 7) != 0)
    return;  // u64 lists must be 8-aligned: a misaligned load would fault
  const u64 rows = static_cast<u64>(job.nb) * job.ni;  // < 2^64: both < 2^32
  if (rows > ~0ull / job.nj / size)                    // total bytes must fit in 64 bits
    return;
  const u64 total = rows * job.nj;

  const u64 stride = static_cast<u64>(gridDim.x) * threads;
  for (u64 e = static_cast<u64>(blockIdx.x) * threads + tid; e < total; e += stride) {
    const u64 j = e % job.nj;
    const u64 row = e / job.nj;
    const u64 i = row % job.ni;
    const u64 b = row / job.ni;

    const u64 bi = pick(job.batch_idx, b);
    const u64 base = pointer_array ? reinterpret_cast<const u64*>(job.src)[bi]
                                   : job.src + bi * static_cast<u64>(job.batch_stride);
    const u64 addr = base + pick(job.idx_i, i) * static_cast<u64>(job.stride_i) +
                     pick(job.idx_j, j) * static_cast<u64>(job.stride_j);
    copy_element(job.out + e * size, addr, size);
  }
}

// Launch: grid = (X, njobs, 1), block = (256, 1, 1) (any block shape works).
// Block (x, y) works on job y; the X blocks of a job grid-stride over its
// nb*ni*nj elements with 64-bit indices. Blocks with y >= njobs or z > 0 do
// nothing.
extern "C" __global__ void mmaudit_gather(const mmaudit_gather_job* jobs, u32 njobs) {
  if (blockIdx.y >= njobs || blockIdx.z != 0)
    return;
  __shared__ u64 job_words[sizeof(mmaudit_gather_job) / 8];
  const u32 threads = blockDim.x * blockDim.y * blockDim.z;
  const u32 tid = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  load_job(reinterpret_cast<u64>(jobs) + static_cast<u64>(blockIdx.y) * sizeof(mmaudit_gather_job), job_words, tid);
  copy_job(*reinterpret_cast<const mmaudit_gather_job*>(job_words), tid, threads);
}

// Graph replays. A GEMM captured into a CUDA graph gets gather nodes of its
// own in the same capture: mmaudit_gather_replay(ctrl, call, 0) before it
// when C is read, mmaudit_gather_replay(ctrl, call, 1) after it. What a node
// gathers is decided per replay, by the host, through the control block of
// the executable graph (mapped pinned memory; the ABI shared with the
// interposer):
struct mmaudit_replay_ctrl {
  u32 seq;       // 0: the replay running now; 0xffffffff: none (gather nothing)
  u32 calls;     // 4: GEMMs of the graph (entries per row)
  u32 depth;     // 8: rows of the entry table (replays that may be queued)
  u32 reserved;  // 12
  // 16: depth * calls entries, row r = replay seq with seq % depth == r
};
struct mmaudit_replay_entry {
  u64 jobs;      // 0: address of the call's job table (as for mmaudit_gather)
  u64 marker;    // 8: where phase 1 writes seq (u32, 4-aligned), or 0
  u32 pre;       // 16: jobs 0 .. pre run before the GEMM (phase 0)
  u32 post;      // 20: jobs pre .. pre + post run after it (phase 1)
  u32 tag;       // 24: the replay this entry is for: run only when tag == seq
  u32 reserved;  // 28
};
static_assert(sizeof(mmaudit_replay_ctrl) == 16, "replay ABI: 16-byte header");
static_assert(sizeof(mmaudit_replay_entry) == 32, "replay ABI: 32-byte entries");

#define MMAUDIT_REPLAY_NONE 0xffffffffu

// Launch: grid = (X, Y, 1), block = (256, 1, 1) (any shape works). Does
// nothing when ctrl is null (a node not yet bound to an executable graph),
// seq is MMAUDIT_REPLAY_NONE, depth is 0, call >= calls, phase > 1, or the
// entry's tag differs from seq (this replay does not sample the call).
// Otherwise block (x, y) runs the phase's jobs y, y + Y, ... as
// mmaudit_gather runs its job y, and in phase 1 block (0, 0) writes seq to
// the entry's marker (when not 0 and 4-aligned): the host's proof that the
// node ran for this replay.
extern "C" __global__ void mmaudit_gather_replay(const mmaudit_replay_ctrl* ctrl, u32 call, u32 phase) {
  if (ctrl == nullptr || blockIdx.z != 0 || phase > 1)
    return;
  __shared__ u64 job_words[sizeof(mmaudit_gather_job) / 8];
  __shared__ u64 table;
  __shared__ u32 first, count;
  const u32 threads = blockDim.x * blockDim.y * blockDim.z;
  const u32 tid = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  if (tid == 0) {
    count = 0;
    const volatile mmaudit_replay_ctrl* c = ctrl;
    const u32 seq = c->seq, calls = c->calls, depth = c->depth;
    if (seq != MMAUDIT_REPLAY_NONE && depth != 0 && call < calls) {
      const u64 at = reinterpret_cast<u64>(ctrl) + sizeof(mmaudit_replay_ctrl) +
                     (static_cast<u64>(seq % depth) * calls + call) * sizeof(mmaudit_replay_entry);
      const volatile mmaudit_replay_entry* e = reinterpret_cast<const volatile mmaudit_replay_entry*>(at);
      if (e->tag == seq) {
        table = e->jobs;
        first = phase ? e->pre : 0;
        count = phase ? e->post : e->pre;
        const u64 marker = e->marker;
        if (phase == 1 && blockIdx.x == 0 && blockIdx.y == 0 && marker != 0 && (marker & 3) == 0)
          *reinterpret_cast<volatile u32*>(marker) = seq;
      }
    }
  }
  __syncthreads();
  const u32 n = count;
  for (u32 y = blockIdx.y; y < n; y += gridDim.y) {
    load_job(table + static_cast<u64>(first + y) * sizeof(mmaudit_gather_job), job_words, tid);
    copy_job(*reinterpret_cast<const mmaudit_gather_job*>(job_words), tid, threads);
    __syncthreads();  // job_words is reused by the next job
  }
}

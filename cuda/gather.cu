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
// The same module holds the commitment kernels of commit-before-challenge,
// mmaudit_commit_leaves and mmaudit_commit_tree (at the end of this file), so
// that the library loads one PTX.
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
// `bytes` is the job's size, a multiple of 8.
static __device__ __forceinline__ void load_job(u64 at, u64* job_words, u32 bytes, u32 tid) {
  if (tid == 0) {
    if ((at & 7) == 0) {
      for (u32 w = 0; w < bytes / 8; w++)
        job_words[w] = reinterpret_cast<const u64*>(at)[w];
    } else {
      // A misaligned table (an ABI violation) is read bytewise, not faulted on.
#pragma unroll 1
      for (u32 k = 0; k < bytes; k++)
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
  load_job(reinterpret_cast<u64>(jobs) + static_cast<u64>(blockIdx.y) * sizeof(mmaudit_gather_job), job_words, sizeof(mmaudit_gather_job), tid);
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
  u64 jobs;         // 0: address of the call's job table (as for mmaudit_gather)
  u64 marker;       // 8: where phase 1 writes seq (u32 at marker from the gather
                    //    node, u32 at marker + 4 from the leaf node; 4-aligned), or 0
  u32 pre;          // 16: jobs 0 .. pre run before the GEMM (phase 0)
  u32 post;         // 20: jobs pre .. pre + post run after it (phase 1)
  u32 tag;          // 24: the replay this entry is for: run only when tag == seq
  u32 reserved;     // 28
  u64 leaves;       // 32: address of the call's leaf-hash job table (as for
                    //     mmaudit_commit_leaves), or 0: no leaf hashes
  u32 leaves_pre;   // 40: leaf jobs 0 .. leaves_pre run before the GEMM (phase 0)
  u32 leaves_post;  // 44: leaf jobs leaves_pre .. + leaves_post after it (phase 1)
};
static_assert(sizeof(mmaudit_replay_ctrl) == 16, "replay ABI: 16-byte header");
static_assert(sizeof(mmaudit_replay_entry) == 48, "replay ABI: 48-byte entries");

#define MMAUDIT_REPLAY_NONE 0xffffffffu

// The entry of (the replay running now, `call`) when its tag says this replay
// uses it, with that replay's number in `seq`; nullptr when ctrl's seq is
// MMAUDIT_REPLAY_NONE, depth is 0, call >= calls or the tag differs. Thread 0
// only: the control block is written by the host between launches.
static __device__ const volatile mmaudit_replay_entry* replay_entry(const mmaudit_replay_ctrl* ctrl, u32 call,
                                                                    u32& seq) {
  const volatile mmaudit_replay_ctrl* c = ctrl;
  seq = c->seq;
  const u32 calls = c->calls, depth = c->depth;
  if (seq == MMAUDIT_REPLAY_NONE || depth == 0 || call >= calls)
    return nullptr;
  const u64 at = reinterpret_cast<u64>(ctrl) + sizeof(mmaudit_replay_ctrl) +
                 (static_cast<u64>(seq % depth) * calls + call) * sizeof(mmaudit_replay_entry);
  const volatile mmaudit_replay_entry* e = reinterpret_cast<const volatile mmaudit_replay_entry*>(at);
  return e->tag == seq ? e : nullptr;
}

// Writes seq at `marker` when it is not 0 and 4-aligned.
static __device__ __forceinline__ void write_marker(u64 marker, u32 seq) {
  if (marker != 0 && (marker & 3) == 0)
    *reinterpret_cast<volatile u32*>(marker) = seq;
}

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
    u32 seq;
    if (const volatile mmaudit_replay_entry* e = replay_entry(ctrl, call, seq)) {
      table = e->jobs;
      first = phase ? e->pre : 0;
      count = phase ? e->post : e->pre;
      if (phase == 1 && blockIdx.x == 0 && blockIdx.y == 0)
        write_marker(e->marker, seq);
    }
  }
  __syncthreads();
  const u32 n = count;
  for (u32 y = blockIdx.y; y < n; y += gridDim.y) {
    load_job(table + static_cast<u64>(first + y) * sizeof(mmaudit_gather_job), job_words, sizeof(mmaudit_gather_job), tid);
    copy_job(*reinterpret_cast<const mmaudit_gather_job*>(job_words), tid, threads);
    __syncthreads();  // job_words is reused by the next job
  }
}

// ---------------------------------------------------------------------------
// Commit-before-challenge (protocol/src/commit.rs): the hashes that bind a
// call's operands before the verifier's challenge is known.
//
//   leaf_hash(vector) = BLAKE3 keyed with LEAF_KEY over the vector's bytes
//   node_hash(l, r)   = BLAKE3 keyed with NODE_KEY over the 64 bytes l || r
//   tree root         = RFC 6962's Merkle tree over leaf hashes: neighbours
//                       paired level by level, an odd last node carried up;
//                       no leaves: leaf_hash of the empty vector
//
// with LEAF_KEY = BLAKE3("mmaudit-commit-leaf-v1") and NODE_KEY =
// BLAKE3("mmaudit-commit-node-v1") (unkeyed hashes of those 22 ASCII bytes).
// BLAKE3 is written here from its specification: 1024-byte chunks of 64-byte
// blocks, chunk chaining values merged by parent nodes in a left-balanced
// tree (the same shape as RFC 6962's), the ROOT flag on the last compression.
//
// The simulated GPU's twins (tests/simgpu/src/kernels.c,
// twin_mmaudit_commit_*) compute the same hashes with their own BLAKE3; change
// both together. tests/programs/simgpu_commit.c runs them and
// tests/e2e/simgpu.rs compares every hash with the Rust reference.

// A key, chaining value or hash (8 little-endian words), a message block.
struct hash_t {
  u32 w[8];
};
struct block_t {
  u32 w[16];
};

// The two public keys as BLAKE3 key words. Non-const __constant__ data, so
// that they stay in the PTX as `.const` arrays under these names
// (tests/e2e/ptx.rs checks their bytes against the protocol's keys).
__constant__ u32 mmaudit_commit_leaf_key[8] = {
    0x6994f4ad, 0xd7694d05, 0xd379f2e3, 0x15f69a5f, 0x6dca2b28, 0xb265c5ea, 0x4d81c553, 0x7cc2b7ec};
__constant__ u32 mmaudit_commit_node_key[8] = {
    0xc2d5ce8a, 0x7bc927ab, 0xc376a916, 0x5024da3c, 0x72bde1ab, 0x0187cb30, 0x52923ab6, 0xd026d4ec};

// BLAKE3's domain flags.
#define B3_CHUNK_START 1u
#define B3_CHUNK_END 2u
#define B3_PARENT 4u
#define B3_ROOT 8u
#define B3_KEYED_HASH 16u
#define B3_CHUNK_BYTES 1024u
// A parent node inside a leaf's BLAKE3 tree, and the one at its top.
#define B3_LEAF_PARENT (B3_PARENT | B3_KEYED_HASH)
#define B3_LEAF_PARENT_ROOT (B3_LEAF_PARENT | B3_ROOT)
// A whole keyed message of one block: node_hash, and the empty leaf.
#define B3_ONE_BLOCK (B3_CHUNK_START | B3_CHUNK_END | B3_ROOT | B3_KEYED_HASH)

static __device__ __forceinline__ u32 rotr32(u32 x, u32 n) {
  return (x >> n) | (x << (32 - n));
}

// BLAKE3's G: mixes message words x, y into state words a, b, c, d.
static __device__ __forceinline__ void b3_g(u32* v, int a, int b, int c, int d, u32 x, u32 y) {
  v[a] = v[a] + v[b] + x;
  v[d] = rotr32(v[d] ^ v[a], 16);
  v[c] = v[c] + v[d];
  v[b] = rotr32(v[b] ^ v[c], 12);
  v[a] = v[a] + v[b] + y;
  v[d] = rotr32(v[d] ^ v[a], 8);
  v[c] = v[c] + v[d];
  v[b] = rotr32(v[b] ^ v[c], 7);
}

// BLAKE3's compression function, truncated to the 8 words every use here
// needs (a chaining value, or a 32-byte root output): out may be cv. Fully
// unrolled, so that the arrays live in registers.
static __device__ __forceinline__ void b3_compress(const u32* cv, const u32* block, u64 counter, u32 len, u32 flags,
                                                   u32* out) {
  u32 v[16] = {cv[0],       cv[1],       cv[2],       cv[3],       cv[4],
               cv[5],       cv[6],       cv[7],       0x6a09e667u, 0xbb67ae85u,
               0x3c6ef372u, 0xa54ff53au, static_cast<u32>(counter), static_cast<u32>(counter >> 32), len,
               flags};
  u32 m[16];
#pragma unroll
  for (int i = 0; i < 16; i++)
    m[i] = block[i];
#pragma unroll
  for (int round = 0; round < 7; round++) {
    b3_g(v, 0, 4, 8, 12, m[0], m[1]);  // columns
    b3_g(v, 1, 5, 9, 13, m[2], m[3]);
    b3_g(v, 2, 6, 10, 14, m[4], m[5]);
    b3_g(v, 3, 7, 11, 15, m[6], m[7]);
    b3_g(v, 0, 5, 10, 15, m[8], m[9]);  // diagonals
    b3_g(v, 1, 6, 11, 12, m[10], m[11]);
    b3_g(v, 2, 7, 8, 13, m[12], m[13]);
    b3_g(v, 3, 4, 9, 14, m[14], m[15]);
    // The message permutation before the next round.
    const u32 t[16] = {m[2], m[6], m[3], m[10], m[7], m[0], m[4], m[13],
                       m[1], m[11], m[12], m[5], m[9], m[14], m[15], m[8]};
#pragma unroll
    for (int i = 0; i < 16; i++)
      m[i] = t[i];
  }
#pragma unroll
  for (int i = 0; i < 8; i++)
    out[i] = v[i] ^ v[i + 8];
}

// The rare compressions (tree nodes, the empty leaf) share one out-of-line
// copy, which keeps the PTX small; chunk hashing inlines its own.
static __device__ __noinline__ hash_t b3_compress_call(hash_t cv, block_t block, u64 counter, u32 len, u32 flags) {
  hash_t out;
  b3_compress(cv.w, block.w, counter, len, flags, out.w);
  return out;
}

// compress(key, l || r, 0, 64, flags): a BLAKE3 parent node (B3_LEAF_PARENT*
// with the leaf key), or node_hash(l, r) (B3_ONE_BLOCK with the node key).
static __device__ __forceinline__ hash_t b3_merge(const hash_t& key, const hash_t& l, const hash_t& r, u32 flags) {
  block_t m;
#pragma unroll
  for (int i = 0; i < 8; i++) {
    m.w[i] = l.w[i];
    m.w[i + 8] = r.w[i];
  }
  return b3_compress_call(key, m, 0, 64, flags);
}

static __device__ __forceinline__ hash_t load_key(const u32* from) {
  hash_t key;
#pragma unroll
  for (int i = 0; i < 8; i++)
    key.w[i] = from[i];
  return key;
}

// Loads that do not fault on a misaligned address (they go bytewise).
static __device__ __forceinline__ u32 load_u32(u64 at) {
  if ((at & 3) == 0)
    return *reinterpret_cast<const u32*>(at);
  const u8* p = reinterpret_cast<const u8*>(at);
  return p[0] | (static_cast<u32>(p[1]) << 8) | (static_cast<u32>(p[2]) << 16) | (static_cast<u32>(p[3]) << 24);
}

static __device__ __forceinline__ u32 load_u16(u64 at) {
  if ((at & 1) == 0)
    return *reinterpret_cast<const u16*>(at);
  const u8* p = reinterpret_cast<const u8*>(at);
  return p[0] | (static_cast<u32>(p[1]) << 8);
}

// A 32-byte hash in memory of any alignment.
static __device__ __forceinline__ hash_t load_hash(u64 at) {
  hash_t h;
#pragma unroll
  for (int i = 0; i < 8; i++)
    h.w[i] = load_u32(at + 4 * i);
  return h;
}

static __device__ __forceinline__ void store_hash(u64 at, const hash_t& h) {
  if ((at & 3) == 0) {
#pragma unroll
    for (int i = 0; i < 8; i++)
      reinterpret_cast<u32*>(at)[i] = h.w[i];
    return;
  }
#pragma unroll
  for (int i = 0; i < 32; i++)
    reinterpret_cast<u8*>(at)[i] = static_cast<u8>(h.w[i / 4] >> (8 * (i % 4)));
}

// One commitment job (the ABI shared with the interposer; 64 bytes, 8-aligned):
// vector (b, v) is the `len` elements of `elem_size` bytes at
//   base(b) + v*vec_stride + e*elem_stride,  e = 0 .. len-1
//   base(b) = (flags & 1) ? ((const u64*)src)[b] : src + b*batch_stride
// concatenated in order, and out[b*nv + v] (32 bytes each) = leaf_hash(vector).
// Address arithmetic wraps modulo 2^64 (strides may be negative). A row of a
// column-major m x k matrix is (vec_stride = e, elem_stride = ld*e, len = k),
// a column (vec_stride = ld*e, elem_stride = e).
struct mmaudit_commit_job {
  u64 src;           // 0: base address, or the address of a u64 pointer array (flags bit 0)
  u64 out;           // 8: where the nb*nv 32-byte leaf hashes go, order [b][v]
  i64 batch_stride;  // 16: bytes between batch members (ignored for a pointer array)
  i64 vec_stride;    // 24: bytes between consecutive vectors
  i64 elem_stride;   // 32: bytes between consecutive elements of one vector
  u32 nb, nv, len;   // 40, 44, 48: batch members, vectors per member, elements per vector (len may be 0)
  u32 elem_size;     // 52: 1, 2, 4 or 8
  u32 flags;         // 56: bit 0: src is a pointer array
  u32 reserved;      // 60: must be 0
};
// Five 8-byte fields then six 4-byte fields: no padding, so the size pins
// every offset.
static_assert(sizeof(mmaudit_commit_job) == 64, "commit job ABI: 64 bytes");
static_assert(alignof(mmaudit_commit_job) == 8, "commit job ABI: 8-aligned");

#define MMAUDIT_COMMIT_POINTER_ARRAY 1u
#define MMAUDIT_COMMIT_KNOWN_FLAGS MMAUDIT_COMMIT_POINTER_ARRAY

// At most this many lanes of a block hash (a power of two), and the depth of
// the subtree stack: a vector has fewer than 2^25 chunks (2^32 elements of 8
// bytes), so fewer than 2^25 rounds and at most 25 stacked subtrees.
#define COMMIT_LANES 256u
#define COMMIT_STACK 32u

// The block's lanes: the largest power of two <= min(threads, COMMIT_LANES).
static __device__ __forceinline__ u32 commit_lanes(u32 threads) {
  u32 p = 1;
  while (p * 2 <= threads && p * 2 <= COMMIT_LANES)
    p *= 2;
  return p;
}

// The little-endian word of vector bytes [pos, pos + 4) (pos a multiple of 4);
// bytes at or past `end` (the vector's length, a multiple of size) read as 0.
// The vector's elements of `size` bytes are `stride` bytes apart from `addr`.
static __device__ __forceinline__ u32 vector_word(u64 addr, u64 stride, u32 size, u64 pos, u64 end) {
  if (pos >= end)
    return 0;
  if (stride == size && pos + 4 <= end)  // contiguous: the word as it lies in memory
    return load_u32(addr + pos);
  if (size >= 4)  // one element, or one half of an 8-byte one
    return load_u32(addr + (pos / size) * stride + (pos % size));
  u32 w = 0;
#pragma unroll
  for (u32 k = 0; k < 4; k += 2) {
    // Bytes pos + k and pos + k + 1: one 2-byte element, or two 1-byte ones.
    if (pos + k < end) {
      if (size == 2) {
        w |= load_u16(addr + ((pos + k) / 2) * stride) << (8 * k);
      } else {
        w |= static_cast<u32>(*reinterpret_cast<const u8*>(addr + (pos + k) * stride)) << (8 * k);
        if (pos + k + 1 < end)
          w |= static_cast<u32>(*reinterpret_cast<const u8*>(addr + (pos + k + 1) * stride)) << (8 * k + 8);
      }
    }
  }
  return w;
}

// Message block `m`: vector bytes [pos, pos + 64), zero-padded past `end`.
static __device__ __forceinline__ void load_block(u64 addr, u64 stride, u32 size, u64 pos, u64 end, u32* m) {
  if (stride == size && ((addr + pos) & 3) == 0 && pos + 64 <= end) {
    // A whole block of a contiguous, word-aligned vector: 16 plain loads.
#pragma unroll
    for (int w = 0; w < 16; w++)
      m[w] = reinterpret_cast<const u32*>(addr + pos)[w];
    return;
  }
  // Anything else word by word, shifted in at the end (static indices keep
  // m in registers without unrolling vector_word 16 times).
#pragma unroll
  for (int i = 0; i < 16; i++)
    m[i] = 0;
#pragma unroll 1
  for (u32 w = 0; w < 16; w++) {
    const u32 word = vector_word(addr, stride, size, pos + 4 * w, end);
#pragma unroll
    for (int i = 0; i < 15; i++)
      m[i] = m[i + 1];
    m[15] = word;
  }
}

// The chaining value of chunk `chunk` of a vector of `nbytes` bytes (the one
// chunk of an empty vector is empty); with `root` (the vector is this one
// chunk) the last block takes the ROOT flag and this is the leaf hash itself.
static __device__ hash_t chunk_cv(const hash_t& key, u64 addr, u64 stride, u32 size, u64 nbytes, u64 chunk,
                                  bool root) {
  const u64 start = chunk * B3_CHUNK_BYTES;
  const u32 len = static_cast<u32>(nbytes - start < B3_CHUNK_BYTES ? nbytes - start : B3_CHUNK_BYTES);
  const u32 blocks = len == 0 ? 1 : (len + 63) / 64;
  hash_t cv = key;
#pragma unroll 1
  for (u32 b = 0; b < blocks; b++) {
    u32 m[16];
    load_block(addr, stride, size, start + 64 * b, nbytes, m);
    const u32 block_len = len - 64 * b < 64 ? len - 64 * b : 64;
    u32 flags = B3_KEYED_HASH;
    if (b == 0)
      flags |= B3_CHUNK_START;
    if (b + 1 == blocks)
      flags |= root ? B3_CHUNK_END | B3_ROOT : B3_CHUNK_END;
    b3_compress(cv.w, m, chunk, block_len, flags, cv.w);
  }
  return cv;
}

// Hashes in shared memory, word-major so that lanes touch consecutive banks.
typedef u32 hash_slots[8][COMMIT_LANES];

static __device__ __forceinline__ hash_t slot_get(const hash_slots& s, u32 slot) {
  hash_t h;
#pragma unroll
  for (int i = 0; i < 8; i++)
    h.w[i] = s[i][slot];
  return h;
}

static __device__ __forceinline__ void slot_put(hash_slots& s, u32 slot, const hash_t& h) {
#pragma unroll
  for (int i = 0; i < 8; i++)
    s[i][slot] = h.w[i];
}

// Block-wide (every thread calls it, with the same `group`): each group of
// `group` lanes (a power of two) reduces the n hashes in its slots
// [tid - lane, tid - lane + n), just written, into its first slot as RFC 6962
// and BLAKE3 do: neighbours paired level by level, an odd last one carried
// up. The merge that covers all n (the top one) uses `top_flags`, the others
// `flags`. Within one level a lane reads slot tid + step, which no lane writes
// in that level: no race. `active` is false for threads without a vector.
static __device__ void reduce_slots(hash_slots& s, u32 tid, u32 lane, u32 group, u64 n, bool active,
                                    const hash_t& key, u32 flags, u32 top_flags) {
  __syncthreads();
#pragma unroll 1
  for (u32 step = 1; step < group; step *= 2) {
    if (active && lane % (2 * step) == 0 && lane + step < n)
      slot_put(s, tid,
               b3_merge(key, slot_get(s, tid), slot_get(s, tid + step),
                        lane == 0 && 2 * step >= n ? top_flags : flags));
    __syncthreads();
  }
}

// One thread's stack of complete subtrees, as BLAKE3's incremental hasher
// keeps it: `h` is the root of subtree number `total` - 1 of equal, aligned,
// power-of-two subtrees, and more follow. Each trailing zero bit of `total`
// completes a subtree whose left half is the stack's top.
static __device__ void stack_push(hash_t* stack, u32& depth, hash_t h, u64 total, const hash_t& key, u32 flags) {
#pragma unroll 1
  while ((total & 1) == 0) {
    depth--;
    h = b3_merge(key, stack[depth], h, flags);
    total >>= 1;
  }
  stack[depth++] = h;
}

// The last subtree `h` merged with the stack from its top down (the
// left-balanced tree); the last merge, the root, uses `top_flags`.
static __device__ hash_t stack_finish(const hash_t* stack, u32 depth, hash_t h, const hash_t& key, u32 flags,
                                      u32 top_flags) {
#pragma unroll 1
  while (depth > 0) {
    depth--;
    h = b3_merge(key, stack[depth], h, depth == 0 ? top_flags : flags);
  }
  return h;
}

// The leaf hashes of one job, block-wide: every thread of the block calls it
// with the same job (a malformed one returns at once, uniformly). The block's
// lanes are its first P threads, P the largest power of two <= min(threads,
// 256); the others only join the barriers.
//
// A vector of n chunks (n = ceil(len*elem_size / 1024), 1 for an empty
// vector) is hashed by a group of G = min(next power of two >= n, P) lanes:
// in round r, lane l computes the chaining value of chunk r*G + l, then the
// group merges the round's values level by level in shared memory. A vector
// of n <= P chunks takes one round, whose top merge (or its only chunk) is
// the ROOT; a longer one (one group then fills the block) keeps each round's
// complete subtree of P chunks on a stack in shared memory and merges them
// as BLAKE3's tree does, the last merge being the ROOT. A block hashes P/G
// vectors at a time, and the X blocks of a job stride over its nb*nv
// vectors with 64-bit indices.
static __device__ void hash_job(const mmaudit_commit_job& job, hash_slots& slots, hash_t* stack, u32 tid,
                                u32 threads) {
  // Validate before touching any address in the job (uniform over the block).
  const u32 size = job.elem_size;
  if (job.nb == 0 || job.nv == 0)
    return;
  if (size != 1 && size != 2 && size != 4 && size != 8)
    return;
  if ((job.flags & ~MMAUDIT_COMMIT_KNOWN_FLAGS) != 0 || job.reserved != 0)
    return;
  const bool pointer_array = (job.flags & MMAUDIT_COMMIT_POINTER_ARRAY) != 0;
  if (pointer_array && (job.src & 7) != 0)
    return;  // a misaligned u64 load would fault
  const u64 vectors = static_cast<u64>(job.nb) * job.nv;
  if (vectors > (~0ull >> 5))
    return;  // the nb*nv*32 output bytes must fit in 64 bits

  const u64 nbytes = static_cast<u64>(job.len) * size;
  const u64 chunks = nbytes == 0 ? 1 : (nbytes + B3_CHUNK_BYTES - 1) / B3_CHUNK_BYTES;
  const u32 lanes = commit_lanes(threads);
  u32 group = 1;
  while (group < chunks && group < lanes)
    group *= 2;
  const u32 per_block = lanes / group;
  const u64 rounds = (chunks + group - 1) / group;
  const u32 lane = tid % group;
  const hash_t key = load_key(mmaudit_commit_leaf_key);

  const u64 step = static_cast<u64>(gridDim.x) * per_block;
  for (u64 first = static_cast<u64>(blockIdx.x) * per_block; first < vectors; first += step) {
    const u64 vec = first + tid / group;
    const bool active = tid < lanes && vec < vectors;
    u64 addr = 0;
    if (active && nbytes != 0) {  // an empty vector reads nothing, not even its base
      const u64 b = vec / job.nv, v = vec % job.nv;
      const u64 base = pointer_array ? reinterpret_cast<const u64*>(job.src)[b]
                                     : job.src + b * static_cast<u64>(job.batch_stride);
      addr = base + v * static_cast<u64>(job.vec_stride);
    }
    u32 depth = 0;  // of the stack, which only thread 0 uses (rounds > 1: one group per block)
    for (u64 r = 0; r < rounds; r++) {
      const u64 done = r * group;
      const u64 n = chunks - done < group ? chunks - done : group;
      if (active && lane < n)
        slot_put(slots, tid,
                 chunk_cv(key, addr, static_cast<u64>(job.elem_stride), size, nbytes, done + lane, chunks == 1));
      reduce_slots(slots, tid, lane, group, n, active, key, B3_LEAF_PARENT,
                   rounds == 1 ? B3_LEAF_PARENT_ROOT : B3_LEAF_PARENT);
      if (active && lane == 0) {
        // No other thread touches this slot before the next round's barrier.
        const hash_t h = slot_get(slots, tid);
        if (r + 1 < rounds)
          stack_push(stack, depth, h, r + 1, key, B3_LEAF_PARENT);
        else
          store_hash(job.out + vec * 32, stack_finish(stack, depth, h, key, B3_LEAF_PARENT, B3_LEAF_PARENT_ROOT));
      }
    }
  }
}

// Launch: grid = (X, njobs, 1), block = (256, 1, 1); no scratch memory and no
// dynamic shared memory (9 KiB static). Block (x, y) works on job y (see
// hash_job); blocks with y >= njobs or z > 0 do nothing. Any X >= 1 and any
// block shape give the same result.
extern "C" __global__ void mmaudit_commit_leaves(const mmaudit_commit_job* jobs, u32 njobs) {
  if (blockIdx.y >= njobs || blockIdx.z != 0)
    return;
  __shared__ u64 job_words[sizeof(mmaudit_commit_job) / 8];
  __shared__ hash_slots slots;
  __shared__ hash_t stack[COMMIT_STACK];
  const u32 threads = blockDim.x * blockDim.y * blockDim.z;
  const u32 tid = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  load_job(reinterpret_cast<u64>(jobs) + static_cast<u64>(blockIdx.y) * sizeof(mmaudit_commit_job), job_words,
           sizeof(mmaudit_commit_job), tid);
  hash_job(*reinterpret_cast<const mmaudit_commit_job*>(job_words), slots, stack, tid, threads);
}

// mmaudit_commit_leaves_replay(ctrl, call, phase): the leaf-hash node of a
// graph replay in commit mode, added to the capture right after the call's
// gather node of the same phase. It finds the entry of (seq, call) as
// mmaudit_gather_replay does and runs the phase's leaf jobs of the entry's
// `leaves` table (phase 0: jobs 0 .. leaves_pre, phase 1: the leaves_post
// after them) as mmaudit_commit_leaves runs its jobs: block (x, y) hashes jobs
// y, y + Y, ... Does nothing for the cases mmaudit_gather_replay does nothing
// for, or when `leaves` is 0. In phase 1, block (0, 0) writes seq at the
// entry's marker + 4 (when the marker is not 0 and 4-aligned): the host's
// proof that the leaf hashes are this replay's. Launch: grid = (X, Y, 1),
// block = (256, 1, 1); any shape gives the same hashes.
extern "C" __global__ void mmaudit_commit_leaves_replay(const mmaudit_replay_ctrl* ctrl, u32 call, u32 phase) {
  if (ctrl == nullptr || blockIdx.z != 0 || phase > 1)
    return;
  __shared__ u64 job_words[sizeof(mmaudit_commit_job) / 8];
  __shared__ hash_slots slots;
  __shared__ hash_t stack[COMMIT_STACK];
  __shared__ u64 table;
  __shared__ u32 count;
  const u32 threads = blockDim.x * blockDim.y * blockDim.z;
  const u32 tid = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  if (tid == 0) {
    count = 0;
    u32 seq;
    const volatile mmaudit_replay_entry* e = replay_entry(ctrl, call, seq);
    const u64 leaves = e != nullptr ? e->leaves : 0;
    if (leaves != 0) {
      const u32 pre = e->leaves_pre;
      const u64 marker = e->marker;
      table = leaves + (phase ? static_cast<u64>(pre) * sizeof(mmaudit_commit_job) : 0);
      count = phase ? e->leaves_post : pre;
      if (phase == 1 && blockIdx.x == 0 && blockIdx.y == 0 && marker != 0)
        write_marker(marker + 4, seq);
    }
  }
  __syncthreads();
  const u32 n = count;
  for (u32 y = blockIdx.y; y < n; y += gridDim.y) {
    load_job(table + static_cast<u64>(y) * sizeof(mmaudit_commit_job), job_words, sizeof(mmaudit_commit_job), tid);
    hash_job(*reinterpret_cast<const mmaudit_commit_job*>(job_words), slots, stack, tid, threads);
    __syncthreads();  // job_words and the slots are reused by the next job
  }
}

// mmaudit_commit_tree(leaves, count, out): the RFC 6962 root of the `count`
// 32-byte leaf hashes at `leaves`, written as 32 bytes at `out`; no leaves:
// the leaf hash of the empty vector, and `leaves` is not read.
//
// Launch: one block does the work, block (0, 0, 0); any other block does
// nothing. grid = (1, 1, 1), block = (256, 1, 1); no scratch memory and no
// dynamic shared memory (9 KiB static); any block shape gives the same
// result. Each round, lane l of the P lanes (as in mmaudit_commit_leaves)
// reads leaves 2l and 2l + 1 of the next 2P and merges them, the lanes merge
// the results level by level in shared memory, and the round's root (of a
// complete subtree of 2P leaves, except in the last round) goes on a stack
// merged as above. Does nothing when `out` is null, `leaves` is null with
// count > 0, or count is over 2^59 (count*32 bytes would not fit in 64
// bits). Leaves and out may be misaligned (read and written bytewise).
extern "C" __global__ void mmaudit_commit_tree(const u8* leaves, u64 count, u8* out) {
  if (blockIdx.x != 0 || blockIdx.y != 0 || blockIdx.z != 0)
    return;
  if (out == nullptr || (count != 0 && leaves == nullptr) || count > (~0ull >> 5))
    return;
  __shared__ hash_slots slots;
  __shared__ hash_t stack[COMMIT_STACK];
  const u32 threads = blockDim.x * blockDim.y * blockDim.z;
  const u32 tid = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const u64 at = reinterpret_cast<u64>(leaves);
  if (count == 0) {
    if (tid == 0)
      store_hash(reinterpret_cast<u64>(out), b3_compress_call(load_key(mmaudit_commit_leaf_key), block_t{}, 0, 0,
                                                              B3_ONE_BLOCK));
    return;
  }
  const hash_t key = load_key(mmaudit_commit_node_key);
  const u32 lanes = commit_lanes(threads);
  const u64 tile = 2ull * lanes;
  const u64 rounds = (count + tile - 1) / tile;
  u32 depth = 0;
  for (u64 r = 0; r < rounds; r++) {
    const u64 done = r * tile;
    const u64 n = count - done < tile ? count - done : tile;  // leaves this round
    if (tid < lanes && 2ull * tid < n) {
      const u64 i = done + 2ull * tid;
      hash_t h = load_hash(at + i * 32);
      if (2ull * tid + 1 < n)
        h = b3_merge(key, h, load_hash(at + (i + 1) * 32), B3_ONE_BLOCK);
      slot_put(slots, tid, h);
    }
    reduce_slots(slots, tid, tid, lanes, (n + 1) / 2, tid < lanes, key, B3_ONE_BLOCK, B3_ONE_BLOCK);
    if (tid == 0) {
      const hash_t h = slot_get(slots, 0);
      if (r + 1 < rounds)
        stack_push(stack, depth, h, r + 1, key, B3_ONE_BLOCK);
      else
        store_hash(reinterpret_cast<u64>(out), stack_finish(stack, depth, h, key, B3_ONE_BLOCK, B3_ONE_BLOCK));
    }
  }
}

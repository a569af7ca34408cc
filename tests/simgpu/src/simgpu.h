/*
 * Simulated GPU: the internal interface of libsimgpu.so, the one shared state
 * (devices, contexts, memory, streams, events, graphs, GEMM numerics, faults,
 * kernel twins) behind the four sonamed libraries. libcudart and libcuda are
 * thin C-ABI layers over this, so a cudaStream_t *is* a CUstream and the runtime
 * and driver see the same contexts, allocations and queues.
 *
 * Errors are CUresult values throughout; the runtime's cudaError_t has the same
 * number for every error this simulator returns.
 */
#ifndef SIMGPU_INTERNAL_H
#define SIMGPU_INTERNAL_H

#define SIMGPU_NO_API_MACROS
#include <stddef.h>
#include <stdint.h>

#include "cuda.h"
#include "library_types.h"

/* Symbols other simulator libraries call; everything else stays hidden. */
#define SG_EXPORT __attribute__((visibility("default")))

#define SG_MAX_DEVICES 8

/* ---- query counting and benchmark knobs (core.c) ---- */

/* The API queries SIMGPU_COUNT counts (see README.md). */
enum sg_query {
    SG_Q_CUBLAS_GET_STREAM,
    SG_Q_CUBLAS_GET_POINTER_MODE,
    SG_Q_CUBLAS_GET_MATH_MODE,
    SG_Q_CTX_GET_CURRENT,
    SG_Q_CTX_GET_DEVICE,
    SG_Q_STREAM_IS_CAPTURING,
    SG_Q_STREAM_CAPTURE_INFO,
    SG_Q_GEMM_SUBMITTED,
    SG_Q_LT_DESC_GET_ATTRIBUTE,
    SG_Q_LT_LAYOUT_GET_ATTRIBUTE,
    SG_Q_COUNT
};
/* Counts one call of `q` (when SIMGPU_COUNT is set; a relaxed atomic add). */
SG_EXPORT void sg_count(enum sg_query q);
/* SIMGPU_NO_COMPUTE=1: GEMMs are accepted and not computed. */
SG_EXPORT int sg_no_compute(void);

/* ---- devices and contexts (core.c) ---- */

/* Initialises the simulator once (cuInit, or the runtime's first call). */
SG_EXPORT CUresult sg_init(void);
SG_EXPORT int sg_is_initialized(void);
SG_EXPORT int sg_device_count(void);
SG_EXPORT struct CUctx_st *sg_primary_ctx(int device);
SG_EXPORT int sg_ctx_is_valid(struct CUctx_st *ctx);
SG_EXPORT int sg_ctx_device(struct CUctx_st *ctx);
/* The calling thread's current context (driver view), or NULL. */
SG_EXPORT struct CUctx_st *sg_current_ctx(void);
SG_EXPORT void sg_set_current_ctx(struct CUctx_st *ctx);
/* Context stack for cuCtxPush/PopCurrent. */
SG_EXPORT CUresult sg_push_ctx(struct CUctx_st *ctx);
SG_EXPORT CUresult sg_pop_ctx(struct CUctx_st **out);
/* Runtime view: initialise, and bind the primary context of the runtime's
 * current device to this thread when no context is current (as libcudart
 * does), then return the current context. */
SG_EXPORT CUresult sg_runtime_ctx(struct CUctx_st **out);
SG_EXPORT CUresult sg_runtime_set_device(int device);
/* The error that a failed kernel or GEMM left on a device, or CUDA_SUCCESS. */
SG_EXPORT CUresult sg_sticky_error(int device);

/* Device attribute values (device.c); -1 when attr is out of range. */
SG_EXPORT int sg_device_attribute(int attr, int *value);

/* Error names and texts (errors.c); NULL when the code is unknown (or, for
 * driver names, runtime-only). */
SG_EXPORT const char *sg_error_driver_name(int code);
SG_EXPORT const char *sg_error_runtime_name(int code);
SG_EXPORT const char *sg_error_text(int code);

/* cuBLAS status names and texts (cublas_status.c). */
SG_EXPORT const char *sg_cublas_status_name(int status);
SG_EXPORT const char *sg_cublas_status_string(int status);

/* ---- memory (memory.c) ---- */

enum sg_mem_kind { SG_MEM_DEVICE = 1, SG_MEM_PINNED = 2 };

typedef struct sg_region {
    uintptr_t base;  /* the address programs see */
    size_t size;
    char *host;      /* where the bytes live in this process */
    int kind;        /* enum sg_mem_kind */
    int device;
    unsigned flags;  /* host-alloc flags of pinned memory */
    uint64_t id;     /* process-wide buffer id */
} sg_region;

/* Device memory is an address range reserved with no access rights, so the
 * host faults on a device pointer exactly as it would on a GPU, and a shadow
 * buffer that only the simulated device (stream workers) reads and writes. */
SG_EXPORT CUresult sg_mem_alloc_device(uintptr_t *out, size_t size, int device);
SG_EXPORT CUresult sg_mem_alloc_pinned(void **out, size_t size, unsigned flags, int device);
/* Frees an allocation of the given kind; base must be the allocation's start. */
SG_EXPORT CUresult sg_mem_free(uintptr_t base, int kind);
/* Copies the region containing addr into *out; returns 0 when there is none. */
SG_EXPORT int sg_mem_find(uintptr_t addr, sg_region *out);
SG_EXPORT size_t sg_mem_device_bytes(int device);
SG_EXPORT size_t sg_mem_total_bytes(void);
/* Device-side access: where [addr, addr+bytes) can be read or written by the
 * simulated device (device memory or pinned host memory), or NULL when the
 * range is not wholly inside one such allocation (an illegal address). */
SG_EXPORT void *sg_dev_span(uint64_t addr, size_t bytes);

/* ---- work submitted to streams (core.c) ---- */

/* One unit of stream work. run() executes on the stream's worker thread;
 * call_index is the first fault-injection call number given to it (see
 * gemm_calls). The payload is released once the work can never run again. */
typedef struct sg_work {
    CUresult (*run)(void *payload, uint64_t call_index);
    void (*release)(void *payload);
    void *payload;
    uint32_t gemm_calls; /* GEMM calls one execution makes: 1 for a GEMM */
} sg_work;

/* Queues work on a stream (or appends it to the stream's capture). Takes the
 * payload in every case: on error it is released. */
SG_EXPORT CUresult sg_submit(CUstream stream, sg_work work);
/* Submits host-side copies of n bytes; see memcpy semantics in core.c. */
SG_EXPORT CUresult sg_copy(void *dst, const void *src, size_t n, CUstream stream, int sync);
SG_EXPORT CUresult sg_memset(uintptr_t dst, const void *pattern, size_t elem_size, size_t count, CUstream stream,
                             int sync);
SG_EXPORT CUresult sg_host_fn(CUstream stream, CUhostFn fn, void *user_data);
/* Fails (and invalidates the offending captures) when a call that may
 * synchronise or allocate is made while a capture forbids it. */
SG_EXPORT CUresult sg_check_unsafe_call(void);

/* ---- streams and events (core.c) ---- */

SG_EXPORT CUresult sg_stream_create(CUstream *out, unsigned flags);
SG_EXPORT CUresult sg_stream_destroy(CUstream stream);
SG_EXPORT CUresult sg_stream_flags(CUstream stream, unsigned *flags);
/* The (primary) context a stream belongs to. */
SG_EXPORT CUresult sg_stream_ctx(CUstream stream, struct CUctx_st **ctx);
SG_EXPORT CUresult sg_stream_sync(CUstream stream);
SG_EXPORT CUresult sg_stream_query(CUstream stream);
SG_EXPORT CUresult sg_stream_wait_event(CUstream stream, CUevent event);
/* Waits for all work on the current context's device. */
SG_EXPORT CUresult sg_ctx_sync(void);

SG_EXPORT CUresult sg_event_create(CUevent *out, unsigned flags);
SG_EXPORT CUresult sg_event_record(CUevent event, CUstream stream);
SG_EXPORT CUresult sg_event_query(CUevent event);
SG_EXPORT CUresult sg_event_sync(CUevent event);
SG_EXPORT CUresult sg_event_destroy(CUevent event);
SG_EXPORT CUresult sg_event_elapsed(float *ms, CUevent start, CUevent end);

/* ---- stream capture and graphs (core.c, graph.c) ---- */

SG_EXPORT CUresult sg_capture_begin(CUstream stream, int mode);
SG_EXPORT CUresult sg_capture_end(CUstream stream, CUgraph *out);
SG_EXPORT CUresult sg_capture_info(CUstream stream, int *status, uint64_t *id, CUgraph *graph,
                                   const CUgraphNode **deps, size_t *ndeps);
SG_EXPORT CUresult sg_graph_instantiate(CUgraphExec *out, CUgraph graph);
SG_EXPORT CUresult sg_graph_launch(CUgraphExec exec, CUstream stream);
SG_EXPORT CUresult sg_graph_exec_destroy(CUgraphExec exec);
SG_EXPORT CUresult sg_graph_destroy(CUgraph graph);
/* Replaces the work of kernel node `node` (a handle from capture info) of exec. */
SG_EXPORT CUresult sg_graph_exec_set_kernel(CUgraphExec exec, CUgraphNode node, sg_work work,
                                            int (*is_kernel)(const sg_work *));
/* Gives exec the nodes of graph when both have the same shape (else
 * CUDA_ERROR_GRAPH_EXEC_UPDATE_FAILURE); *result is the CUgraphExecUpdateResult
 * (whose values cudaGraphExecUpdateResult shares). */
SG_EXPORT CUresult sg_graph_exec_update(CUgraphExec exec, CUgraph graph, int *result);

/* A captured sequence of work, shared (reference-counted) by the graph, its
 * executable graphs and any launch still queued. */
typedef struct sg_body sg_body;
struct CUevent_st;
sg_body *sg_body_new(void);
void sg_body_retain(sg_body *b);
void sg_body_release(sg_body *b);
/* Appends work; event is non-NULL for an event-record node. */
int sg_body_append(sg_body *b, sg_work work, struct CUevent_st *event);
size_t sg_body_len(const sg_body *b);
uint32_t sg_body_gemm_calls(const sg_body *b);
/* The event recorded by node i, or NULL. */
struct CUevent_st *sg_body_event(const sg_body *b, size_t i);
CUresult sg_body_run(sg_body *b, uint64_t call_index);
/* Whether two bodies have the same nodes in the same order (what an exec update needs). */
int sg_body_same_shape(const sg_body *a, const sg_body *b);

/* What an executable graph runs: a body, with some kernel nodes' work replaced
 * (cuGraphExecKernelNodeSetParams). Immutable once made: a change makes a new
 * plan, so launches already queued keep the one they were given. */
typedef struct sg_plan sg_plan;
sg_plan *sg_plan_new(sg_body *b);
/* A copy of old with node's work replaced by work (the plan takes it); NULL on failure. */
sg_plan *sg_plan_with(const sg_plan *old, size_t node, sg_work work);
void sg_plan_retain(sg_plan *p);
void sg_plan_release(sg_plan *p);
sg_body *sg_plan_body(const sg_plan *p);
/* The work node runs in this plan (NULL past the end). */
const sg_work *sg_plan_node(const sg_plan *p, size_t node);
CUresult sg_plan_run(sg_plan *p, uint64_t call_index);

/* ---- modules and kernel twins (kernels.c, core.c) ---- */

typedef struct sg_launch {
    unsigned grid[3];
    unsigned block[3];
    unsigned shared_mem;
} sg_launch;

/* A CPU twin of a PTX kernel: runs the whole grid. params[i] points at the
 * value of parameter i, as cuLaunchKernel's kernelParams do. Device pointers
 * among the parameters must be turned into host-accessible memory with
 * sg_dev_span; a twin returns CUDA_ERROR_ILLEGAL_ADDRESS when that fails. */
typedef CUresult (*sg_kernel_fn)(const sg_launch *launch, void *const *params);

#define SG_MAX_KERNEL_PARAMS 32

typedef struct sg_kernel_twin {
    const char *name;          /* the PTX .entry name */
    sg_kernel_fn fn;
    unsigned nparams;
    unsigned param_size[SG_MAX_KERNEL_PARAMS];
} sg_kernel_twin;

SG_EXPORT const sg_kernel_twin *sg_kernel_find(const char *name);

/* ---- numbers (numeric.c) ---- */

/* Width in bytes of an element of a supported real type, or 0. */
SG_EXPORT size_t sg_type_size(int type);
SG_EXPORT double sg_load(const void *base, int type, size_t index);
/* Rounds v to the nearest value of type (RNE; fp8 saturates to the largest
 * finite value; integers round to nearest and saturate, except 32-bit which
 * wraps as the GPU's integer accumulator does). */
SG_EXPORT double sg_round(int type, double v);
SG_EXPORT void sg_store(void *base, int type, size_t index, double v);
/* A value of type close to v and different from it, in the direction of dir
 * when v is not at a saturated end of the range. */
SG_EXPORT double sg_next_value(int type, double v, double dir);
double sg_round_tf32(double v);
double sg_round_bits(double v, int mant_bits, int min_exp, double max_finite, int saturate);

/* ---- GEMM (gemm.c) and faults (fault.c) ---- */

typedef struct sg_matrix {
    uint64_t ptr;        /* device address of the matrix, or of its pointer array */
    int type;            /* cudaDataType */
    int64_t rows, cols;  /* as stored */
    int64_t ld;
    int row_major;       /* cuBLASLt CUBLASLT_ORDER_ROW */
    int64_t stride;      /* elements between batch members */
    int ptr_array;       /* ptr holds a device array of per-batch pointers */
} sg_matrix;

enum sg_input_round { SG_IN_EXACT = 0, SG_IN_TF32, SG_IN_F16, SG_IN_BF16 };
enum sg_accum { SG_ACC_F32 = 0, SG_ACC_F16, SG_ACC_F64, SG_ACC_I32 };

enum sg_epilogue { SG_EPI_NONE = 0, SG_EPI_RELU = 1, SG_EPI_GELU = 2 };

typedef struct sg_gemm {
    int transa, transb;
    int64_t m, n, k, batch;
    sg_matrix a, b, c, d;
    int scale_type;         /* cudaDataType of alpha and beta */
    int input_round;        /* enum sg_input_round */
    int accum;              /* enum sg_accum */
    int scalars_on_device;  /* alpha/beta are device addresses read at run time */
    double alpha, beta;     /* host-mode values, captured at call time */
    uint64_t alpha_ptr, beta_ptr;
    int activation;         /* enum sg_epilogue */
    uint64_t bias;          /* 0 when there is no bias */
    int bias_type;
    int64_t bias_stride;
    uint64_t scale_a, scale_b, scale_c, scale_d, amax_d; /* 0 when unset */
    int vec_a, vec_b; /* OUTER_VEC_32F: scale_a holds m floats (one per row of D), scale_b n */
} sg_gemm;

/* Sets accum and input_round for the compute type (and cuBLAS math mode;
 * 0 for cuBLASLt); returns 0 when the A/B/C/D/scale types in g form a
 * combination cuBLAS (lt = 0) or cuBLASLt (lt = 1) supports. */
SG_EXPORT int sg_gemm_configure(sg_gemm *g, int compute, int math_mode, int lt);
/* Queues a validated GEMM on a stream (the payload is copied). */
SG_EXPORT CUresult sg_gemm_submit(const sg_gemm *g, CUstream stream);
/* Reads a host-mode scalar of the given scale type. */
SG_EXPORT double sg_read_scalar(const void *p, int scale_type);

/* precision: fault modes (cheaper arithmetic than the call declares). */
enum sg_precision {
    SG_PREC_DECLARED = 0,   /* off: the declared input rounding */
    SG_PREC_FP8,            /* elements rounded to e4m3, no scale */
    SG_PREC_FP8_ROWSCALED,  /* per-row/column scale, e4m3, f32 sums */
    SG_PREC_INT8_ROWSCALED, /* per-row/column scale, symmetric int8, integer sums */
};

typedef struct sg_fault_plan {
    int zero;
    double perturb;       /* 0 when off */
    double rows;          /* fraction of rows computed; 1 when off */
    double weights;       /* 0 when off */
    int precision;        /* enum sg_precision */
    double keep_k;        /* fraction of the k terms summed; 1 when off */
    double row_scale;     /* OUTER_VEC_32F A: row 0's scale used times (1 + REL); 0 when off */
    uint64_t seed;        /* differs per call: where perturb and garbage land */
    uint64_t weight_seed; /* the same for every call: wrong weights stay wrong */
} sg_fault_plan;

/* 0 when SIMGPU_FAULT / SIMGPU_SPLITK parse, else -1 (after a message). */
SG_EXPORT int sg_fault_config_ok(void);
/* The faults that apply to GEMM call number call_index (1-based). */
void sg_fault_plan_for(uint64_t call_index, sg_fault_plan *plan);
/* Split-k seed (SIMGPU_SPLITK), and whether it is set. */
int sg_splitk(uint64_t *seed);
uint64_t sg_hash(uint64_t a, uint64_t b);

#endif /* SIMGPU_INTERNAL_H */

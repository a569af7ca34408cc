//! The CUDA driver API (`libcuda.so.1`): the ~20 functions the gather path uses, as
//! function-pointer types, with the constants they need.

use std::ffi::{c_char, c_int, c_uint, c_void};

/// `CUresult`
pub type CuResult = c_int;
/// `CUDA_SUCCESS`
pub const CUDA_SUCCESS: CuResult = 0;
/// `CUDA_ERROR_NOT_FOUND`: here, a driver function this library needs is absent.
pub const CUDA_ERROR_NOT_FOUND: CuResult = 500;
/// `CUDA_ERROR_NOT_READY`: an event's work has not completed yet.
pub const CUDA_ERROR_NOT_READY: CuResult = 600;

/// `CUcontext`
pub type CuContext = *mut c_void;
/// `CUmodule`
pub type CuModule = *mut c_void;
/// `CUfunction`
pub type CuFunction = *mut c_void;
/// `CUevent`
pub type CuEvent = *mut c_void;
/// `CUstream`
pub type CuStream = *mut c_void;
/// `CUdevice`
pub type CuDevice = c_int;
/// `CUdeviceptr`
pub type CuDevicePtr = u64;

/// `CU_STREAM_CAPTURE_STATUS_NONE`
pub const CAPTURE_STATUS_NONE: c_int = 0;
/// `CU_STREAM_CAPTURE_STATUS_ACTIVE`
pub const CAPTURE_STATUS_ACTIVE: c_int = 1;
/// `CU_STREAM_CAPTURE_STATUS_INVALIDATED`
pub const CAPTURE_STATUS_INVALIDATED: c_int = 2;
/// `CU_STREAM_CAPTURE_MODE_RELAXED`
pub const CAPTURE_MODE_RELAXED: c_int = 2;
/// `CU_MEMHOSTALLOC_PORTABLE | CU_MEMHOSTALLOC_DEVICEMAP`
pub const HOST_ALLOC_PORTABLE_DEVICEMAP: c_uint = 0x01 | 0x02;
/// `CU_EVENT_DISABLE_TIMING`
pub const EVENT_DISABLE_TIMING: c_uint = 0x2;

/// `cuGetErrorName`
pub type GetErrorNameFn = unsafe extern "C" fn(CuResult, *mut *const c_char) -> CuResult;
/// `cuCtxGetCurrent`
pub type CtxGetCurrentFn = unsafe extern "C" fn(*mut CuContext) -> CuResult;
/// `cuCtxSetCurrent`
pub type CtxSetCurrentFn = unsafe extern "C" fn(CuContext) -> CuResult;
/// `cuCtxGetDevice`
pub type CtxGetDeviceFn = unsafe extern "C" fn(*mut CuDevice) -> CuResult;
/// `cuDeviceGetName`
pub type DeviceGetNameFn = unsafe extern "C" fn(*mut c_char, c_int, CuDevice) -> CuResult;
/// `cuModuleLoadData`
pub type ModuleLoadDataFn = unsafe extern "C" fn(*mut CuModule, *const c_void) -> CuResult;
/// `cuModuleGetFunction`
pub type ModuleGetFunctionFn =
    unsafe extern "C" fn(*mut CuFunction, CuModule, *const c_char) -> CuResult;
/// `cuLaunchKernel`
pub type LaunchKernelFn = unsafe extern "C" fn(
    CuFunction,
    c_uint,
    c_uint,
    c_uint,
    c_uint,
    c_uint,
    c_uint,
    c_uint,
    CuStream,
    *mut *mut c_void,
    *mut *mut c_void,
) -> CuResult;
/// `cuMemHostAlloc`
pub type MemHostAllocFn = unsafe extern "C" fn(*mut *mut c_void, usize, c_uint) -> CuResult;
/// `cuMemHostGetDevicePointer_v2`
pub type MemHostGetDevicePointerFn =
    unsafe extern "C" fn(*mut CuDevicePtr, *mut c_void, c_uint) -> CuResult;
/// `cuMemAlloc_v2`
pub type MemAllocFn = unsafe extern "C" fn(*mut CuDevicePtr, usize) -> CuResult;
/// `cuStreamCreate`
pub type StreamCreateFn = unsafe extern "C" fn(*mut CuStream, c_uint) -> CuResult;
/// `CU_STREAM_NON_BLOCKING`: the stream does not synchronise with the legacy default
/// stream.
pub const STREAM_NON_BLOCKING: c_uint = 1;
/// `cuMemFreeHost`
pub type MemFreeHostFn = unsafe extern "C" fn(*mut c_void) -> CuResult;
/// `cuEventCreate`
pub type EventCreateFn = unsafe extern "C" fn(*mut CuEvent, c_uint) -> CuResult;
/// `cuEventRecord`
pub type EventRecordFn = unsafe extern "C" fn(CuEvent, CuStream) -> CuResult;
/// `cuEventQuery`
pub type EventQueryFn = unsafe extern "C" fn(CuEvent) -> CuResult;
/// `cuEventDestroy_v2`
pub type EventDestroyFn = unsafe extern "C" fn(CuEvent) -> CuResult;
/// `cuStreamIsCapturing`
pub type StreamIsCapturingFn = unsafe extern "C" fn(CuStream, *mut c_int) -> CuResult;
/// `CUgraph`
pub type CuGraph = *mut c_void;
/// `CUgraphNode`
pub type CuGraphNode = *mut c_void;
/// `CUgraphExec`
pub type CuGraphExec = *mut c_void;

/// `cuStreamGetCaptureInfo_v3`: status, id, graph, dependencies, edge data, count.
pub type StreamGetCaptureInfoV3Fn = unsafe extern "C" fn(
    CuStream,
    *mut c_int,
    *mut u64,
    *mut CuGraph,
    *mut *const CuGraphNode,
    *mut *const c_void,
    *mut usize,
) -> CuResult;
/// `cuStreamGetCaptureInfo_v2`: status, id, graph, dependencies, count.
pub type StreamGetCaptureInfoV2Fn = unsafe extern "C" fn(
    CuStream,
    *mut c_int,
    *mut u64,
    *mut CuGraph,
    *mut *const CuGraphNode,
    *mut usize,
) -> CuResult;
/// `cuCtxPushCurrent_v2`
pub type CtxPushCurrentFn = unsafe extern "C" fn(CuContext) -> CuResult;
/// `cuCtxPopCurrent_v2`
pub type CtxPopCurrentFn = unsafe extern "C" fn(*mut CuContext) -> CuResult;
/// `cuStreamGetCtx`
pub type StreamGetCtxFn = unsafe extern "C" fn(CuStream, *mut CuContext) -> CuResult;
/// `cuMemsetD32Async`
pub type MemsetD32AsyncFn = unsafe extern "C" fn(CuDevicePtr, c_uint, usize, CuStream) -> CuResult;
/// `cuStreamWaitEvent`
pub type StreamWaitEventFn = unsafe extern "C" fn(CuStream, CuEvent, c_uint) -> CuResult;

/// `CUDA_KERNEL_NODE_PARAMS_v2` (`v1` is the same without the last two fields).
#[repr(C)]
pub struct KernelNodeParams {
    /// `func`
    pub func: CuFunction,
    /// `gridDimX`, `gridDimY`, `gridDimZ`
    pub grid: [c_uint; 3],
    /// `blockDimX`, `blockDimY`, `blockDimZ`
    pub block: [c_uint; 3],
    /// `sharedMemBytes`
    pub shared_mem: c_uint,
    /// `kernelParams`
    pub params: *mut *mut c_void,
    /// `extra`
    pub extra: *mut *mut c_void,
    /// `kern` (v2 only; NULL: use `func`)
    pub kern: *mut c_void,
    /// `ctx` (v2 only; NULL: the current context)
    pub ctx: CuContext,
}
/// `cuGraphExecKernelNodeSetParams_v2` (or the v1 symbol, which reads the v1 prefix)
pub type GraphExecKernelNodeSetParamsFn =
    unsafe extern "C" fn(CuGraphExec, CuGraphNode, *const KernelNodeParams) -> CuResult;

/// `cuThreadExchangeStreamCaptureMode` (optional: absent from the simulated GPU)
pub type ThreadExchangeStreamCaptureModeFn = unsafe extern "C" fn(*mut c_int) -> CuResult;

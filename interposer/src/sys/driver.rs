//! The CUDA driver API (`libcuda.so.1`): the ~20 functions the gather path uses, as
//! function-pointer types, with the constants they need.

use std::ffi::{c_char, c_int, c_uint, c_void};

/// `CUresult`
pub type CuResult = c_int;
/// `CUDA_SUCCESS`
pub const CUDA_SUCCESS: CuResult = 0;
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
/// `cuThreadExchangeStreamCaptureMode` (optional: absent from the simulated GPU)
pub type ThreadExchangeStreamCaptureModeFn = unsafe extern "C" fn(*mut c_int) -> CuResult;

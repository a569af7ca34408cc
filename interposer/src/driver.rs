//! The CUDA driver functions the gather path needs, resolved from `libcuda.so.1` at
//! run time, behind safe-ish wrappers that return `Result` through [`crate::result::cu`].
//!
//! We do not use cudarc's loader: some of its versions panic when libcuda is missing,
//! and an interposer must load into any process. If `libcuda.so.1` cannot be loaded, or
//! a required function is absent, [`driver`] is `None` and every sampled call becomes a
//! gap; calls are still forwarded and ledgered. Nothing here creates a CUDA context.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::OnceLock;

use crate::real::lookup;
use crate::result::{cu, DriverError};
use crate::sys::driver::*;

/// The resolved driver table.
pub struct Driver {
    ctx_get_current: CtxGetCurrentFn,
    ctx_set_current: CtxSetCurrentFn,
    ctx_get_device: CtxGetDeviceFn,
    device_get_name: DeviceGetNameFn,
    module_load_data: ModuleLoadDataFn,
    module_get_function: ModuleGetFunctionFn,
    launch_kernel: LaunchKernelFn,
    mem_host_alloc: MemHostAllocFn,
    mem_host_get_device_pointer: MemHostGetDevicePointerFn,
    mem_free_host: MemFreeHostFn,
    event_create: EventCreateFn,
    event_record: EventRecordFn,
    event_query: EventQueryFn,
    event_destroy: EventDestroyFn,
    stream_is_capturing: StreamIsCapturingFn,
    exchange_capture_mode: Option<ThreadExchangeStreamCaptureModeFn>,
}

/// An opaque driver handle kept as a number (contexts, events, functions are `Send`
/// in CUDA; raw pointers are not, in Rust).
pub type Handle = usize;

/// The outcome of [`Driver::event_query`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventState {
    /// All work before the event has completed.
    Done,
    /// Not yet.
    Pending,
}

static DRIVER: OnceLock<Option<Driver>> = OnceLock::new();

/// The driver table, loaded on first use; `None` when libcuda is unavailable.
pub fn driver() -> Option<&'static Driver> {
    DRIVER.get_or_init(load).as_ref()
}

fn load() -> Option<Driver> {
    // SAFETY: dlopen with a NUL-terminated name; loading libcuda runs no CUDA code that
    // creates a context.
    let h = unsafe { libc::dlopen(c"libcuda.so.1".as_ptr(), libc::RTLD_LAZY | libc::RTLD_LOCAL) };
    if h.is_null() {
        return None;
    }
    let sym = |name: &CStr| -> Option<usize> {
        // SAFETY: h is the live handle of libcuda.
        let p = unsafe { lookup(h, name) };
        (p != 0).then_some(p)
    };
    macro_rules! req {
        ($name:literal, $ty:ty) => {{
            let p = sym($name)?;
            // SAFETY: libcuda exports this symbol with this C signature (CUDA 12/13).
            unsafe { std::mem::transmute::<usize, $ty>(p) }
        }};
    }
    let exchange = sym(c"cuThreadExchangeStreamCaptureMode").map(|p| {
        // SAFETY: as above, an optional symbol with this signature.
        unsafe { std::mem::transmute::<usize, ThreadExchangeStreamCaptureModeFn>(p) }
    });
    Some(Driver {
        ctx_get_current: req!(c"cuCtxGetCurrent", CtxGetCurrentFn),
        ctx_set_current: req!(c"cuCtxSetCurrent", CtxSetCurrentFn),
        ctx_get_device: req!(c"cuCtxGetDevice", CtxGetDeviceFn),
        device_get_name: req!(c"cuDeviceGetName", DeviceGetNameFn),
        module_load_data: req!(c"cuModuleLoadData", ModuleLoadDataFn),
        module_get_function: req!(c"cuModuleGetFunction", ModuleGetFunctionFn),
        launch_kernel: req!(c"cuLaunchKernel", LaunchKernelFn),
        mem_host_alloc: req!(c"cuMemHostAlloc", MemHostAllocFn),
        mem_host_get_device_pointer: req!(
            c"cuMemHostGetDevicePointer_v2",
            MemHostGetDevicePointerFn
        ),
        mem_free_host: req!(c"cuMemFreeHost", MemFreeHostFn),
        event_create: req!(c"cuEventCreate", EventCreateFn),
        event_record: req!(c"cuEventRecord", EventRecordFn),
        event_query: req!(c"cuEventQuery", EventQueryFn),
        event_destroy: req!(c"cuEventDestroy_v2", EventDestroyFn),
        stream_is_capturing: req!(c"cuStreamIsCapturing", StreamIsCapturingFn),
        exchange_capture_mode: exchange,
    })
}

impl Driver {
    /// The calling thread's current context, or `None` when it has none (or the driver
    /// is not initialised).
    pub fn current_context(&self) -> Option<Handle> {
        let mut ctx: CuContext = std::ptr::null_mut();
        // SAFETY: cuCtxGetCurrent writes one pointer to a valid location.
        let r = unsafe { (self.ctx_get_current)(&mut ctx) };
        match cu(r, "cuCtxGetCurrent") {
            Ok(()) if !ctx.is_null() => Some(ctx as Handle),
            _ => None,
        }
    }

    /// Makes `ctx` current on the calling thread (the background thread only: it binds
    /// an existing context, never creates one).
    pub fn set_current(&self, ctx: Handle) -> Result<(), DriverError> {
        // SAFETY: ctx is a context handle obtained from cuCtxGetCurrent.
        let r = unsafe { (self.ctx_set_current)(ctx as CuContext) };
        cu(r, "cuCtxSetCurrent")
    }

    /// The device of the current context.
    pub fn current_device(&self) -> Result<u32, DriverError> {
        let mut dev: CuDevice = 0;
        // SAFETY: writes one int.
        let r = unsafe { (self.ctx_get_device)(&mut dev) };
        cu(r, "cuCtxGetDevice")?;
        Ok(dev.max(0) as u32)
    }

    /// The name of device `dev`.
    pub fn device_name(&self, dev: u32) -> Result<String, DriverError> {
        let mut buf = [0 as c_char; 256];
        // SAFETY: the buffer holds 256 chars; the driver writes a NUL-terminated name
        // of at most len - 1 characters.
        let r = unsafe {
            (self.device_get_name)(buf.as_mut_ptr(), buf.len() as c_int - 1, dev as c_int)
        };
        cu(r, "cuDeviceGetName")?;
        // SAFETY: the last byte is NUL (never written above), so the string ends.
        let name = unsafe { CStr::from_ptr(buf.as_ptr()) };
        Ok(name.to_string_lossy().into_owned())
    }

    /// Whether `stream` is capturing a graph. An error (e.g. the legacy stream while
    /// another stream captures) counts as capturing: nothing may be launched on it.
    pub fn is_capturing(&self, stream: Handle) -> bool {
        let mut status: c_int = 0;
        // SAFETY: writes one int; any stream handle value is accepted (errors returned).
        let r = unsafe { (self.stream_is_capturing)(stream as CuStream, &mut status) };
        cu(r, "cuStreamIsCapturing").is_err() || status != CAPTURE_STATUS_NONE
    }

    /// Runs `f` with the calling thread's capture mode relaxed (when the driver has
    /// `cuThreadExchangeStreamCaptureMode`), so that a one-time setup allocation on
    /// this thread cannot invalidate another thread's global-mode capture.
    pub fn relaxed<T>(&self, f: impl FnOnce() -> T) -> T {
        let Some(exchange) = self.exchange_capture_mode else {
            return f();
        };
        let mut mode: c_int = CAPTURE_MODE_RELAXED;
        // SAFETY: exchanges one int with the driver's per-thread mode.
        let ok = unsafe { exchange(&mut mode) } == CUDA_SUCCESS;
        let out = f();
        if ok {
            // SAFETY: restores the previous mode.
            unsafe { exchange(&mut mode) };
        }
        out
    }

    /// Loads a PTX module (NUL-terminated text) into the current context and returns
    /// the function `name`.
    pub fn load_function(&self, ptx: &CStr, name: &CStr) -> Result<Handle, DriverError> {
        let mut module: CuModule = std::ptr::null_mut();
        // SAFETY: ptx is NUL-terminated PTX text; the module handle is written.
        let r = unsafe { (self.module_load_data)(&mut module, ptx.as_ptr().cast()) };
        cu(r, "cuModuleLoadData")?;
        let mut f: CuFunction = std::ptr::null_mut();
        // SAFETY: module was just loaded; name is NUL-terminated.
        let r = unsafe { (self.module_get_function)(&mut f, module, name.as_ptr()) };
        cu(r, "cuModuleGetFunction")?;
        Ok(f as Handle)
    }

    /// Allocates `bytes` of mapped (device-visible) pinned host memory; returns the host
    /// pointer and its device address.
    pub fn host_alloc_mapped(&self, bytes: usize) -> Result<(*mut u8, u64), DriverError> {
        let mut p: *mut c_void = std::ptr::null_mut();
        // SAFETY: writes one pointer.
        let r = unsafe { (self.mem_host_alloc)(&mut p, bytes, HOST_ALLOC_PORTABLE_DEVICEMAP) };
        cu(r, "cuMemHostAlloc")?;
        let mut dev: CuDevicePtr = 0;
        // SAFETY: p is the pinned allocation made above.
        let r = unsafe { (self.mem_host_get_device_pointer)(&mut dev, p, 0) };
        if let Err(e) = cu(r, "cuMemHostGetDevicePointer") {
            // SAFETY: p was allocated by cuMemHostAlloc and is not used afterwards.
            unsafe { (self.mem_free_host)(p) };
            return Err(e);
        }
        Ok((p.cast(), dev))
    }

    /// Creates an event without timing.
    pub fn event_create(&self) -> Result<Handle, DriverError> {
        let mut e: CuEvent = std::ptr::null_mut();
        // SAFETY: writes one handle.
        let r = unsafe { (self.event_create)(&mut e, EVENT_DISABLE_TIMING) };
        cu(r, "cuEventCreate")?;
        Ok(e as Handle)
    }

    /// Records `event` on `stream`.
    pub fn event_record(&self, event: Handle, stream: Handle) -> Result<(), DriverError> {
        // SAFETY: event was created by event_create; stream is the caller's stream.
        let r = unsafe { (self.event_record)(event as CuEvent, stream as CuStream) };
        cu(r, "cuEventRecord")
    }

    /// Whether the work before `event` has completed; never blocks.
    pub fn event_query(&self, event: Handle) -> Result<EventState, DriverError> {
        // SAFETY: event was created by event_create and not destroyed.
        match unsafe { (self.event_query)(event as CuEvent) } {
            CUDA_SUCCESS => Ok(EventState::Done),
            CUDA_ERROR_NOT_READY => Ok(EventState::Pending),
            code => Err(DriverError {
                code,
                call: "cuEventQuery",
            }),
        }
    }

    /// Destroys an event (used when the pool shrinks; errors ignored).
    pub fn event_destroy(&self, event: Handle) {
        // SAFETY: event was created by event_create and is not used afterwards.
        unsafe { (self.event_destroy)(event as CuEvent) };
    }

    /// Launches `function` (the gather kernel) with `grid` x 256 threads on `stream`,
    /// with parameters (jobs address, njobs).
    pub fn launch_gather(
        &self,
        function: Handle,
        grid: (u32, u32),
        stream: Handle,
        jobs: u64,
        njobs: u32,
    ) -> Result<(), DriverError> {
        let mut jobs = jobs;
        let mut njobs = njobs;
        let mut params: [*mut c_void; 2] = [
            (&mut jobs as *mut u64).cast(),
            (&mut njobs as *mut u32).cast(),
        ];
        // SAFETY: the kernel takes (u64, u32); params points at two live locals for the
        // duration of the call (the driver copies them at launch).
        let r = unsafe {
            (self.launch_kernel)(
                function as CuFunction,
                grid.0,
                grid.1,
                1,
                256,
                1,
                1,
                0,
                stream as CuStream,
                params.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        };
        cu(r, "cuLaunchKernel")
    }
}

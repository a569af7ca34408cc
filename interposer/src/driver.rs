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
    /// For commit mode's retention ring in device memory (optional: without them the
    /// retained data stays in pinned host memory).
    mem_alloc: Option<MemAllocFn>,
    stream_create: Option<StreamCreateFn>,
    event_create: EventCreateFn,
    event_record: EventRecordFn,
    event_query: EventQueryFn,
    event_destroy: EventDestroyFn,
    stream_is_capturing: StreamIsCapturingFn,
    exchange_capture_mode: Option<ThreadExchangeStreamCaptureModeFn>,
    graphs: Option<GraphFns>,
}

/// What auditing graph replays needs beyond the eager path (all optional: without
/// them, captured calls are recorded and their replays are not audited).
struct GraphFns {
    capture_info_v3: Option<StreamGetCaptureInfoV3Fn>,
    capture_info_v2: Option<StreamGetCaptureInfoV2Fn>,
    memset_d32_async: MemsetD32AsyncFn,
    stream_wait_event: StreamWaitEventFn,
    set_kernel_params: GraphExecKernelNodeSetParamsFn,
    stream_get_ctx: Option<StreamGetCtxFn>,
    ctx_push: Option<CtxPushCurrentFn>,
    ctx_pop: Option<CtxPopCurrentFn>,
}

/// A stream's capture as [`Driver::capture_info`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CaptureInfo {
    /// The capture's unique id.
    pub id: u64,
    /// The graph being built.
    pub graph: Handle,
    /// The node the next captured operation will depend on, when there is exactly one
    /// (right after a kernel launch: that kernel's node).
    pub last_node: Option<Handle>,
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
    macro_rules! opt {
        ($name:literal, $ty:ty) => {
            // SAFETY: libcuda exports this symbol with this C signature (CUDA 12/13).
            sym($name).map(|p| unsafe { std::mem::transmute::<usize, $ty>(p) })
        };
    }
    let graphs = (|| {
        let capture_info_v3 = opt!(c"cuStreamGetCaptureInfo_v3", StreamGetCaptureInfoV3Fn);
        let capture_info_v2 = opt!(c"cuStreamGetCaptureInfo_v2", StreamGetCaptureInfoV2Fn);
        // The v2 parameters extend v1's (kern and ctx appended, NULL meaning "as v1"),
        // so either symbol takes them.
        let set_kernel_params = opt!(
            c"cuGraphExecKernelNodeSetParams_v2",
            GraphExecKernelNodeSetParamsFn
        )
        .or(opt!(
            c"cuGraphExecKernelNodeSetParams",
            GraphExecKernelNodeSetParamsFn
        ))?;
        (capture_info_v3.is_some() || capture_info_v2.is_some()).then_some(())?;
        Some(GraphFns {
            capture_info_v3,
            capture_info_v2,
            memset_d32_async: opt!(c"cuMemsetD32Async", MemsetD32AsyncFn)?,
            stream_wait_event: opt!(c"cuStreamWaitEvent", StreamWaitEventFn)?,
            set_kernel_params,
            stream_get_ctx: opt!(c"cuStreamGetCtx", StreamGetCtxFn),
            ctx_push: opt!(c"cuCtxPushCurrent_v2", CtxPushCurrentFn),
            ctx_pop: opt!(c"cuCtxPopCurrent_v2", CtxPopCurrentFn),
        })
    })();
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
        mem_alloc: opt!(c"cuMemAlloc_v2", MemAllocFn),
        stream_create: opt!(c"cuStreamCreate", StreamCreateFn),
        event_create: req!(c"cuEventCreate", EventCreateFn),
        event_record: req!(c"cuEventRecord", EventRecordFn),
        event_query: req!(c"cuEventQuery", EventQueryFn),
        event_destroy: req!(c"cuEventDestroy_v2", EventDestroyFn),
        stream_is_capturing: req!(c"cuStreamIsCapturing", StreamIsCapturingFn),
        exchange_capture_mode: exchange,
        graphs,
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

    /// Puts the calling thread (the background thread) in relaxed capture mode for good:
    /// its event queries and context binding can then never invalidate a capture that
    /// another thread runs in global mode.
    pub fn relax_this_thread(&self) {
        if let Some(exchange) = self.exchange_capture_mode {
            let mut mode: c_int = CAPTURE_MODE_RELAXED;
            // SAFETY: exchanges one int with the driver's per-thread mode.
            unsafe { exchange(&mut mode) };
        }
    }

    /// Loads a PTX module (NUL-terminated text) into the current context and returns
    /// the functions `names`, in order.
    pub fn load_functions<const N: usize>(
        &self,
        ptx: &CStr,
        names: [&CStr; N],
    ) -> Result<[Handle; N], DriverError> {
        let mut module: CuModule = std::ptr::null_mut();
        // SAFETY: ptx is NUL-terminated PTX text; the module handle is written.
        let r = unsafe { (self.module_load_data)(&mut module, ptx.as_ptr().cast()) };
        cu(r, "cuModuleLoadData")?;
        let mut out = [0; N];
        for (slot, name) in out.iter_mut().zip(names) {
            let mut f: CuFunction = std::ptr::null_mut();
            // SAFETY: module was just loaded; name is NUL-terminated.
            let r = unsafe { (self.module_get_function)(&mut f, module, name.as_ptr()) };
            cu(r, "cuModuleGetFunction")?;
            *slot = f as Handle;
        }
        Ok(out)
    }

    /// Whether graph replays can be audited with this driver.
    pub fn has_graphs(&self) -> bool {
        self.graphs.is_some()
    }

    /// The capture `stream` takes part in, or `None` when it is not capturing (or the
    /// driver cannot say).
    pub fn capture_info(&self, stream: Handle) -> Option<CaptureInfo> {
        self.capture_query(stream)
            .filter(|(status, _)| *status == CAPTURE_STATUS_ACTIVE)
            .map(|(_, info)| info)
    }

    /// The id of the capture `stream` takes part in, active or already invalidated.
    pub fn capture_id(&self, stream: Handle) -> Option<u64> {
        self.capture_query(stream)
            .filter(|(status, _)| {
                *status == CAPTURE_STATUS_ACTIVE || *status == CAPTURE_STATUS_INVALIDATED
            })
            .map(|(_, info)| info.id)
    }

    fn capture_query(&self, stream: Handle) -> Option<(c_int, CaptureInfo)> {
        let g = self.graphs.as_ref()?;
        let mut status: c_int = 0;
        let mut id: u64 = 0;
        let mut graph: CuGraph = std::ptr::null_mut();
        let mut deps: *const CuGraphNode = std::ptr::null();
        let mut ndeps: usize = 0;
        // SAFETY: every out-pointer is a live local; the driver writes them.
        let r = unsafe {
            match (g.capture_info_v3, g.capture_info_v2) {
                (Some(f), _) => {
                    let mut edges: *const c_void = std::ptr::null();
                    f(
                        stream as CuStream,
                        &mut status,
                        &mut id,
                        &mut graph,
                        &mut deps,
                        &mut edges,
                        &mut ndeps,
                    )
                }
                (None, Some(f)) => f(
                    stream as CuStream,
                    &mut status,
                    &mut id,
                    &mut graph,
                    &mut deps,
                    &mut ndeps,
                ),
                (None, None) => return None,
            }
        };
        if cu(r, "cuStreamGetCaptureInfo").is_err() || status == CAPTURE_STATUS_NONE {
            return None;
        }
        let last_node = if ndeps == 1 && !deps.is_null() {
            // SAFETY: the driver returned one dependency at deps.
            let n = unsafe { *deps };
            (!n.is_null()).then_some(n as Handle)
        } else {
            None
        };
        Some((
            status,
            CaptureInfo {
                id,
                graph: graph as Handle,
                last_node,
            },
        ))
    }

    /// Runs `f` with `ctx` pushed as the calling thread's current context, then pops it
    /// (the thread's context stack is as before); `None` when it cannot be pushed.
    pub fn with_context<T>(&self, ctx: Handle, f: impl FnOnce() -> T) -> Option<T> {
        let g = self.graphs.as_ref()?;
        let (push, pop) = (g.ctx_push?, g.ctx_pop?);
        // SAFETY: ctx is a live context handle from cuStreamGetCtx.
        if cu(unsafe { push(ctx as CuContext) }, "cuCtxPushCurrent").is_err() {
            return None;
        }
        let out = f();
        let mut popped: CuContext = std::ptr::null_mut();
        // SAFETY: pops the context pushed above; writes one handle.
        unsafe { pop(&mut popped) };
        Some(out)
    }

    /// The context `stream` belongs to (`None` when the driver cannot say).
    pub fn stream_context(&self, stream: Handle) -> Option<Handle> {
        let f = self.graphs.as_ref()?.stream_get_ctx?;
        let mut ctx: CuContext = std::ptr::null_mut();
        // SAFETY: writes one handle; any stream value is accepted (errors returned).
        let r = unsafe { f(stream as CuStream, &mut ctx) };
        (cu(r, "cuStreamGetCtx").is_ok() && !ctx.is_null()).then_some(ctx as Handle)
    }

    /// Queues a 4-byte store of `value` at device address `at` on `stream`.
    pub fn memset_u32_async(&self, at: u64, value: u32, stream: Handle) -> Result<(), DriverError> {
        let g = self.graphs.as_ref().ok_or(DriverError {
            code: CUDA_ERROR_NOT_FOUND,
            call: "cuMemsetD32Async",
        })?;
        // SAFETY: writes one u32 at a device address of our own mapped allocation.
        let r = unsafe { (g.memset_d32_async)(at, value, 1, stream as CuStream) };
        cu(r, "cuMemsetD32Async")
    }

    /// Makes later work on `stream` wait for `event`'s last record.
    pub fn stream_wait_event(&self, stream: Handle, event: Handle) -> Result<(), DriverError> {
        let g = self.graphs.as_ref().ok_or(DriverError {
            code: CUDA_ERROR_NOT_FOUND,
            call: "cuStreamWaitEvent",
        })?;
        // SAFETY: both handles are live (the caller's stream, our event).
        let r = unsafe { (g.stream_wait_event)(stream as CuStream, event as CuEvent, 0) };
        cu(r, "cuStreamWaitEvent")
    }

    /// Binds kernel node `node` of executable graph `exec` to `function` with the
    /// replay-gather parameters `(ctrl, call, phase)` and the given grid.
    pub fn set_replay_node(
        &self,
        exec: Handle,
        node: Handle,
        function: Handle,
        grid: (u32, u32),
        params: (u64, u32, u32),
    ) -> Result<(), DriverError> {
        let g = self.graphs.as_ref().ok_or(DriverError {
            code: CUDA_ERROR_NOT_FOUND,
            call: "cuGraphExecKernelNodeSetParams",
        })?;
        let (mut ctrl, mut call, mut phase) = params;
        let mut values: [*mut c_void; 3] = [
            (&mut ctrl as *mut u64).cast(),
            (&mut call as *mut u32).cast(),
            (&mut phase as *mut u32).cast(),
        ];
        let p = KernelNodeParams {
            func: function as CuFunction,
            grid: [grid.0, grid.1, 1],
            block: [256, 1, 1],
            shared_mem: 0,
            params: values.as_mut_ptr(),
            extra: std::ptr::null_mut(),
            kern: std::ptr::null_mut(),
            ctx: std::ptr::null_mut(),
        };
        // SAFETY: p and the values it points at live for the call (the driver copies
        // them); exec and node are handles the driver gave out.
        let r = unsafe { (g.set_kernel_params)(exec as CuGraphExec, node as CuGraphNode, &p) };
        cu(r, "cuGraphExecKernelNodeSetParams")
    }

    /// Launches a job kernel `function` (`mmaudit_gather` or `mmaudit_commit_leaves`,
    /// both taking a job table) with `grid` x 256 threads on `stream`, with parameters
    /// (jobs address, njobs).
    pub fn launch_jobs(
        &self,
        function: Handle,
        grid: (u32, u32),
        stream: Handle,
        jobs: u64,
        njobs: u32,
    ) -> Result<(), DriverError> {
        let (mut jobs, mut njobs) = (jobs, njobs);
        let mut values: [*mut c_void; 2] = [
            (&mut jobs as *mut u64).cast(),
            (&mut njobs as *mut u32).cast(),
        ];
        // SAFETY: the kernel takes (u64, u32); values points at two live locals.
        unsafe { self.launch(function, grid, stream, &mut values) }
    }

    /// Launches a replay node's `function` (`mmaudit_gather_replay` or
    /// `mmaudit_commit_leaves_replay`) with parameters `(ctrl, call, phase)` on
    /// `stream` (a capturing stream: it becomes a node of the graph).
    pub fn launch_replay_node(
        &self,
        function: Handle,
        grid: (u32, u32),
        stream: Handle,
        params: (u64, u32, u32),
    ) -> Result<(), DriverError> {
        let (mut ctrl, mut call, mut phase) = params;
        let mut values: [*mut c_void; 3] = [
            (&mut ctrl as *mut u64).cast(),
            (&mut call as *mut u32).cast(),
            (&mut phase as *mut u32).cast(),
        ];
        // SAFETY: the kernel takes (u64, u32, u32); values points at three live locals.
        unsafe { self.launch(function, grid, stream, &mut values) }
    }

    /// `cuLaunchKernel` with `grid` x 256 threads.
    ///
    /// # Safety
    /// `values` holds one pointer per kernel parameter, each to a live value of that
    /// parameter's type (the driver copies them during the call).
    unsafe fn launch(
        &self,
        function: Handle,
        grid: (u32, u32),
        stream: Handle,
        values: &mut [*mut c_void],
    ) -> Result<(), DriverError> {
        // SAFETY: per the contract; function is a loaded kernel, stream the caller's.
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
                values.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        };
        cu(r, "cuLaunchKernel")
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

    /// Allocates `bytes` of device memory in the current context (`cuMemAlloc`).
    pub fn device_alloc(&self, bytes: usize) -> Result<u64, DriverError> {
        let Some(alloc) = self.mem_alloc else {
            return Err(DriverError {
                code: CUDA_ERROR_NOT_FOUND,
                call: "cuMemAlloc_v2",
            });
        };
        let mut dev: CuDevicePtr = 0;
        // SAFETY: writes one device pointer.
        let r = unsafe { alloc(&mut dev, bytes) };
        cu(r, "cuMemAlloc")?;
        Ok(dev)
    }

    /// Creates a stream of the library's own in the current context, one that does not
    /// synchronise with the legacy default stream (`CU_STREAM_NON_BLOCKING`).
    pub fn stream_create(&self) -> Result<Handle, DriverError> {
        let Some(create) = self.stream_create else {
            return Err(DriverError {
                code: CUDA_ERROR_NOT_FOUND,
                call: "cuStreamCreate",
            });
        };
        let mut s: CuStream = std::ptr::null_mut();
        // SAFETY: writes one handle.
        let r = unsafe { create(&mut s, STREAM_NON_BLOCKING) };
        cu(r, "cuStreamCreate")?;
        Ok(s as Handle)
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
}

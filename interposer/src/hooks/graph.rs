//! The CUDA runtime and driver graph functions the library follows (see
//! [`crate::graph`]): capture begin and end, instantiation, launch, update and
//! destruction of graphs and executable graphs.
//!
//! Each hook forwards the call exactly once with the caller's arguments; the library's
//! own work around it runs under `catch_unwind` and never changes what the caller gets
//! back. Lookups of these names through `dlsym` on a handle are not redirected (a
//! program that finds `cudaGraphLaunch` that way bypasses the hook: its replays are
//! not ledgered).

#![allow(non_snake_case)]

use std::ffi::{c_int, c_ulonglong, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::driver::{driver, Handle};
use crate::log::{self, Level};
use crate::real::{self, RealSym};
use crate::state::{self, Reentry, Runtime};

/// `cudaError_t` / `CUresult`: both are C ints, 0 on success.
type Status = c_int;
/// What a hook answers when the real function is missing (`cudaErrorUnknown`,
/// `CUDA_ERROR_UNKNOWN`).
const UNKNOWN: Status = 999;

/// The address of our hook for a graph function name, if we export one.
pub fn hook_address(name: &[u8]) -> Option<usize> {
    Some(match name {
        b"cudaStreamBeginCapture" => cudaStreamBeginCapture as *const () as usize,
        b"cuStreamBeginCapture_v2" => cuStreamBeginCapture_v2 as *const () as usize,
        b"cudaStreamEndCapture" => cudaStreamEndCapture as *const () as usize,
        b"cuStreamEndCapture" => cuStreamEndCapture as *const () as usize,
        b"cudaGraphInstantiate" => cudaGraphInstantiate as *const () as usize,
        b"cudaGraphInstantiateWithFlags" => cudaGraphInstantiateWithFlags as *const () as usize,
        b"cudaGraphInstantiateWithParams" => cudaGraphInstantiateWithParams as *const () as usize,
        b"cuGraphInstantiateWithFlags" => cuGraphInstantiateWithFlags as *const () as usize,
        b"cuGraphInstantiateWithParams" => cuGraphInstantiateWithParams as *const () as usize,
        b"cudaGraphLaunch" => cudaGraphLaunch as *const () as usize,
        b"cudaGraphLaunch_ptsz" => cudaGraphLaunch_ptsz as *const () as usize,
        b"cuGraphLaunch" => cuGraphLaunch as *const () as usize,
        b"cuGraphLaunch_ptsz" => cuGraphLaunch_ptsz as *const () as usize,
        b"cudaGraphExecUpdate" => cudaGraphExecUpdate as *const () as usize,
        b"cuGraphExecUpdate_v2" => cuGraphExecUpdate_v2 as *const () as usize,
        b"cudaGraphExecDestroy" => cudaGraphExecDestroy as *const () as usize,
        b"cuGraphExecDestroy" => cuGraphExecDestroy as *const () as usize,
        b"cudaGraphDestroy" => cudaGraphDestroy as *const () as usize,
        b"cuGraphDestroy" => cuGraphDestroy as *const () as usize,
        _ => return None,
    })
}

/// The real function, or `None` (the hook then answers [`UNKNOWN`]).
fn real<T: Copy>(sym: &RealSym) -> Option<T> {
    const { assert!(std::mem::size_of::<T>() == std::mem::size_of::<usize>()) };
    let Some(p) = sym.get() else {
        let name = sym.name.to_string_lossy();
        log::once(
            Level::Error,
            &name,
            &format!("{name}: no library in this process defines it; returning error 999"),
        );
        return None;
    };
    // SAFETY: T is the C signature of `sym` and p its address in the real library.
    Some(unsafe { std::mem::transmute_copy::<usize, T>(&p) })
}

/// Runs `work` for a running audit (not re-entered), under `catch_unwind`; a panic
/// disables auditing.
fn guarded<T>(what: &str, work: impl FnOnce(&'static Runtime) -> Option<T>) -> Option<T> {
    guarded_in(state::running()?, what, work)
}

/// [`guarded`] for the audit `rt` the hook began in, running or not: the second half of
/// a hook whose first half ledgered calls must settle them even when auditing stopped
/// or the process began to exit in between (its `active` guard keeps the exit waiting).
fn guarded_in<T>(
    rt: &'static Runtime,
    what: &str,
    work: impl FnOnce(&'static Runtime) -> Option<T>,
) -> Option<T> {
    match catch_unwind(AssertUnwindSafe(|| work(rt))) {
        Ok(v) => v,
        Err(p) => {
            state::disable(&format!(
                "internal error in the {what} hook: {}",
                state::panic_text(p.as_ref())
            ));
            None
        }
    }
}

/// A capture is about to begin on this thread's context: the gather resources are
/// set up now, while nothing captures (the GEMM hooks cannot do it during a capture).
fn begin_capture(what: &str, stream: Handle) {
    // Noted before the forward, so that no GEMM in the capture skips the query.
    let _ = catch_unwind(|| crate::capture::begin(stream));
    let Some(_re) = Reentry::enter() else { return };
    guarded(what, |rt| {
        let drv = driver()?;
        let setup = |ctx| {
            let device = drv.current_device().ok()?;
            let gpu = rt.contexts.get(drv, ctx, device, rt.ring_bytes()).ok()?;
            // In commit mode the replays keep their calls in the device retention
            // ring, which a graph launch must not make (its thread's current context
            // may be another).
            if rt.commit_session() {
                gpu.retention(drv, rt.config.retain_bytes);
            }
            Some(gpu)
        };
        match drv.current_context() {
            Some(ctx) => setup(ctx).map(drop),
            // A thread whose first CUDA call begins a capture has no context yet: the
            // stream's context is pushed for the setup and popped again, so the
            // thread's context stays as the program left it.
            None => {
                let ctx = drv.stream_context(stream)?;
                drv.with_context(ctx, || setup(ctx)).flatten().map(drop)
            }
        }
    });
}

/// The handle a successful call wrote through `out` (0 after a failure).
fn written(status: Status, out: *mut *mut c_void) -> Handle {
    if status != 0 || out.is_null() {
        return 0;
    }
    // SAFETY: the call succeeded, so the library wrote a handle through the caller's
    // non-null out-pointer.
    unsafe { *out as Handle }
}

/// After a capture's begin was forwarded: a failed one opened no capture.
fn began(stream: *mut c_void, status: Status) -> Status {
    if status != 0 {
        let _ = catch_unwind(|| crate::capture::end(stream as Handle));
    }
    status
}

fn end_capture(what: &str, stream: Handle, forward: impl FnOnce() -> (Status, Handle)) -> Status {
    let status = end_capture_inner(what, stream, forward);
    let _ = catch_unwind(|| crate::capture::end(stream));
    status
}

fn end_capture_inner(
    what: &str,
    stream: Handle,
    forward: impl FnOnce() -> (Status, Handle),
) -> Status {
    let Some(re) = Reentry::enter() else {
        return forward().0;
    };
    let id = guarded(what, |rt| rt.graphs.capture_id(driver()?, stream));
    let (status, graph) = forward();
    if let Some(id) = id {
        guarded(what, |rt| {
            rt.graphs
                .end_capture(id, (status == 0 && graph != 0).then_some(graph));
            Some(())
        });
    }
    drop(re);
    status
}

fn instantiated(what: &str, status: Status, exec: *mut *mut c_void, graph: Handle) -> Status {
    let exec = written(status, exec);
    if exec == 0 {
        return status;
    }
    let Some(_re) = Reentry::enter() else {
        return status;
    };
    guarded(what, |rt| {
        rt.graphs
            .instantiated(driver()?, graph, exec, rt.config.graph_depth);
        Some(())
    });
    status
}

fn launch(what: &str, exec: Handle, stream: Handle, forward: impl FnOnce() -> Status) -> Status {
    let Some(rt) = state::running() else {
        return forward();
    };
    let Some(_re) = Reentry::enter() else {
        return forward();
    };
    let Some(_active) = rt.active() else {
        return forward();
    };
    let before = guarded_in(rt, what, |rt| {
        let drv = driver()?;
        let info = rt.graphs.exec(exec)?;
        if crate::capture::is_capturing(drv, stream) {
            rt.unsupported(
                what,
                "an audited graph launched into another stream capture: the outer graph's replays of its GEMMs are not audited",
            );
            return None;
        }
        Some(crate::graph::before_launch(rt, drv, info, stream))
    });
    let status = forward();
    match before {
        Some(Ok(replay)) => {
            guarded_in(rt, what, |rt| {
                crate::graph::after_launch(rt, driver()?, replay, stream, status == 0);
                Some(())
            });
        }
        Some(Err(e)) => state::disable(&e),
        None => {}
    }
    status
}

macro_rules! forward_or_unknown {
    ($sym:expr, $ty:ty, |$f:ident| $call:expr) => {
        match real::<$ty>(&$sym) {
            // SAFETY: the caller's arguments, passed on unchanged to the real function.
            Some($f) => unsafe { $call },
            None => UNKNOWN,
        }
    };
}

type BeginCaptureFn = unsafe extern "C" fn(*mut c_void, c_int) -> Status;
type EndCaptureFn = unsafe extern "C" fn(*mut c_void, *mut *mut c_void) -> Status;
type InstantiateFn = unsafe extern "C" fn(*mut *mut c_void, *mut c_void, c_ulonglong) -> Status;
type InstantiateParamsFn =
    unsafe extern "C" fn(*mut *mut c_void, *mut c_void, *mut c_void) -> Status;
type LaunchFn = unsafe extern "C" fn(*mut c_void, *mut c_void) -> Status;
type UpdateFn = unsafe extern "C" fn(*mut c_void, *mut c_void, *mut c_void) -> Status;
type DestroyFn = unsafe extern "C" fn(*mut c_void) -> Status;

/// Hook of `cudaStreamBeginCapture`.
///
/// # Safety
/// The CUDA runtime's contract.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn cudaStreamBeginCapture(stream: *mut c_void, mode: c_int) -> Status {
    begin_capture("cudaStreamBeginCapture", stream as Handle);
    began(
        stream,
        forward_or_unknown!(real::CUDA_STREAM_BEGIN_CAPTURE, BeginCaptureFn, |f| f(
            stream, mode
        )),
    )
}

/// Hook of `cuStreamBeginCapture_v2`.
///
/// # Safety
/// The CUDA driver's contract.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn cuStreamBeginCapture_v2(stream: *mut c_void, mode: c_int) -> Status {
    begin_capture("cuStreamBeginCapture_v2", stream as Handle);
    began(
        stream,
        forward_or_unknown!(real::CU_STREAM_BEGIN_CAPTURE, BeginCaptureFn, |f| f(
            stream, mode
        )),
    )
}

/// Hook of `cudaStreamEndCapture`.
///
/// # Safety
/// The CUDA runtime's contract.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn cudaStreamEndCapture(
    stream: *mut c_void,
    graph: *mut *mut c_void,
) -> Status {
    end_capture("cudaStreamEndCapture", stream as Handle, || {
        let s = forward_or_unknown!(real::CUDA_STREAM_END_CAPTURE, EndCaptureFn, |f| f(
            stream, graph
        ));
        (s, written(s, graph))
    })
}

/// Hook of `cuStreamEndCapture`.
///
/// # Safety
/// The CUDA driver's contract.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn cuStreamEndCapture(
    stream: *mut c_void,
    graph: *mut *mut c_void,
) -> Status {
    end_capture("cuStreamEndCapture", stream as Handle, || {
        let s = forward_or_unknown!(real::CU_STREAM_END_CAPTURE, EndCaptureFn, |f| f(
            stream, graph
        ));
        (s, written(s, graph))
    })
}

/// Hook of `cudaGraphInstantiate`.
///
/// # Safety
/// The CUDA runtime's contract.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn cudaGraphInstantiate(
    exec: *mut *mut c_void,
    graph: *mut c_void,
    flags: c_ulonglong,
) -> Status {
    let s = forward_or_unknown!(real::CUDA_GRAPH_INSTANTIATE, InstantiateFn, |f| f(
        exec, graph, flags
    ));
    instantiated("cudaGraphInstantiate", s, exec, graph as Handle)
}

/// Hook of `cudaGraphInstantiateWithFlags`.
///
/// # Safety
/// The CUDA runtime's contract.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn cudaGraphInstantiateWithFlags(
    exec: *mut *mut c_void,
    graph: *mut c_void,
    flags: c_ulonglong,
) -> Status {
    let s = forward_or_unknown!(
        real::CUDA_GRAPH_INSTANTIATE_WITH_FLAGS,
        InstantiateFn,
        |f| f(exec, graph, flags)
    );
    instantiated("cudaGraphInstantiateWithFlags", s, exec, graph as Handle)
}

/// Hook of `cudaGraphInstantiateWithParams`.
///
/// # Safety
/// The CUDA runtime's contract.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn cudaGraphInstantiateWithParams(
    exec: *mut *mut c_void,
    graph: *mut c_void,
    params: *mut c_void,
) -> Status {
    let s = forward_or_unknown!(
        real::CUDA_GRAPH_INSTANTIATE_WITH_PARAMS,
        InstantiateParamsFn,
        |f| f(exec, graph, params)
    );
    instantiated("cudaGraphInstantiateWithParams", s, exec, graph as Handle)
}

/// Hook of `cuGraphInstantiateWithFlags`.
///
/// # Safety
/// The CUDA driver's contract.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn cuGraphInstantiateWithFlags(
    exec: *mut *mut c_void,
    graph: *mut c_void,
    flags: c_ulonglong,
) -> Status {
    let s = forward_or_unknown!(real::CU_GRAPH_INSTANTIATE_WITH_FLAGS, InstantiateFn, |f| f(
        exec, graph, flags
    ));
    instantiated("cuGraphInstantiateWithFlags", s, exec, graph as Handle)
}

/// Hook of `cuGraphInstantiateWithParams`.
///
/// # Safety
/// The CUDA driver's contract.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn cuGraphInstantiateWithParams(
    exec: *mut *mut c_void,
    graph: *mut c_void,
    params: *mut c_void,
) -> Status {
    let s = forward_or_unknown!(
        real::CU_GRAPH_INSTANTIATE_WITH_PARAMS,
        InstantiateParamsFn,
        |f| f(exec, graph, params)
    );
    instantiated("cuGraphInstantiateWithParams", s, exec, graph as Handle)
}

/// Hook of `cudaGraphLaunch`.
///
/// # Safety
/// The CUDA runtime's contract.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn cudaGraphLaunch(exec: *mut c_void, stream: *mut c_void) -> Status {
    launch("cudaGraphLaunch", exec as Handle, stream as Handle, || {
        forward_or_unknown!(real::CUDA_GRAPH_LAUNCH, LaunchFn, |f| f(exec, stream))
    })
}

/// Hook of `cudaGraphLaunch_ptsz` (the per-thread default stream variant).
///
/// # Safety
/// The CUDA runtime's contract.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn cudaGraphLaunch_ptsz(exec: *mut c_void, stream: *mut c_void) -> Status {
    launch(
        "cudaGraphLaunch_ptsz",
        exec as Handle,
        stream as Handle,
        || forward_or_unknown!(real::CUDA_GRAPH_LAUNCH_PTSZ, LaunchFn, |f| f(exec, stream)),
    )
}

/// Hook of `cuGraphLaunch`.
///
/// # Safety
/// The CUDA driver's contract.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn cuGraphLaunch(exec: *mut c_void, stream: *mut c_void) -> Status {
    launch("cuGraphLaunch", exec as Handle, stream as Handle, || {
        forward_or_unknown!(real::CU_GRAPH_LAUNCH, LaunchFn, |f| f(exec, stream))
    })
}

/// Hook of `cuGraphLaunch_ptsz`.
///
/// # Safety
/// The CUDA driver's contract.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn cuGraphLaunch_ptsz(exec: *mut c_void, stream: *mut c_void) -> Status {
    launch(
        "cuGraphLaunch_ptsz",
        exec as Handle,
        stream as Handle,
        || forward_or_unknown!(real::CU_GRAPH_LAUNCH_PTSZ, LaunchFn, |f| f(exec, stream)),
    )
}

fn updated(what: &str, status: Status, exec: Handle, graph: Handle) -> Status {
    let Some(_re) = Reentry::enter() else {
        return status;
    };
    guarded(what, |rt| {
        if status == 0 {
            rt.graphs
                .updated(driver()?, exec, graph, rt.config.graph_depth);
        }
        Some(())
    });
    status
}

/// Hook of `cudaGraphExecUpdate`.
///
/// # Safety
/// The CUDA runtime's contract.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn cudaGraphExecUpdate(
    exec: *mut c_void,
    graph: *mut c_void,
    info: *mut c_void,
) -> Status {
    let s = forward_or_unknown!(real::CUDA_GRAPH_EXEC_UPDATE, UpdateFn, |f| f(
        exec, graph, info
    ));
    updated("cudaGraphExecUpdate", s, exec as Handle, graph as Handle)
}

/// Hook of `cuGraphExecUpdate_v2`.
///
/// # Safety
/// The CUDA driver's contract.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn cuGraphExecUpdate_v2(
    exec: *mut c_void,
    graph: *mut c_void,
    info: *mut c_void,
) -> Status {
    let s = forward_or_unknown!(real::CU_GRAPH_EXEC_UPDATE, UpdateFn, |f| f(
        exec, graph, info
    ));
    updated("cuGraphExecUpdate_v2", s, exec as Handle, graph as Handle)
}

/// Forgets an executable graph or graph before the library destroys it (the handle
/// may be reused); replays still queued keep what they use alive.
fn forget(what: &str, handle: Handle, exec: bool) {
    let Some(_re) = Reentry::enter() else { return };
    guarded(what, |rt| {
        if exec {
            rt.graphs.destroyed(driver()?, handle);
        } else {
            rt.graphs.forget_graph(handle);
        }
        Some(())
    });
}

/// Hook of `cudaGraphExecDestroy`.
///
/// # Safety
/// The CUDA runtime's contract.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn cudaGraphExecDestroy(exec: *mut c_void) -> Status {
    forget("cudaGraphExecDestroy", exec as Handle, true);
    forward_or_unknown!(real::CUDA_GRAPH_EXEC_DESTROY, DestroyFn, |f| f(exec))
}

/// Hook of `cuGraphExecDestroy`.
///
/// # Safety
/// The CUDA driver's contract.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn cuGraphExecDestroy(exec: *mut c_void) -> Status {
    forget("cuGraphExecDestroy", exec as Handle, true);
    forward_or_unknown!(real::CU_GRAPH_EXEC_DESTROY, DestroyFn, |f| f(exec))
}

/// Hook of `cudaGraphDestroy`.
///
/// # Safety
/// The CUDA runtime's contract.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn cudaGraphDestroy(graph: *mut c_void) -> Status {
    forget("cudaGraphDestroy", graph as Handle, false);
    forward_or_unknown!(real::CUDA_GRAPH_DESTROY, DestroyFn, |f| f(graph))
}

/// Hook of `cuGraphDestroy`.
///
/// # Safety
/// The CUDA driver's contract.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn cuGraphDestroy(graph: *mut c_void) -> Status {
    forget("cuGraphDestroy", graph as Handle, false);
    forward_or_unknown!(real::CU_GRAPH_DESTROY, DestroyFn, |f| f(graph))
}

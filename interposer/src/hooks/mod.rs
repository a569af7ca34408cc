//! The exported symbols and the one code path every GEMM hook shares.
//!
//! A hook: (1) finds the real function; (2) if auditing runs and this thread is not
//! already inside a hook, describes the call, ledgers it and, when sampled, prepares
//! the gather and launches the pre-gather, all under `catch_unwind`; (3) forwards the
//! call exactly once, outside any `catch_unwind`; (4) launches the post-gather and hands
//! it to the background thread, again under `catch_unwind`. A panic or internal error
//! in (2) or (4) disables auditing with the reason in the stream; the forward in (3)
//! happens regardless, with the caller's arguments untouched.
//!
//! Hooks are `#[cfg_attr(not(test), no_mangle)]` so unit tests do not interpose on
//! themselves.

pub mod blas;
pub mod dlsym;
pub mod lt;

use std::panic::{catch_unwind, AssertUnwindSafe};

use mmaudit_protocol::call::flags;
use mmaudit_protocol::record::GapReason;

use crate::driver::{driver, Handle};
use crate::gpu::Prepared;
use crate::log::{self, Level};
use crate::model::gather::SlotLayout;
use crate::model::{Described, NotDescribed, Site};
use crate::state::{self, Reentry, Runtime};
use crate::stream::Msg;
use crate::sys::cublas::{CublasStatus, CUBLAS_STATUS_NOT_INITIALIZED, CUBLAS_STATUS_SUCCESS};

/// The address of our hook for a symbol name, if we export one.
pub fn hook_address(name: &[u8]) -> Option<usize> {
    Some(match name {
        b"cublasSgemm_v2" => blas::cublasSgemm_v2 as *const () as usize,
        b"cublasSgemm_v2_64" => blas::cublasSgemm_v2_64 as *const () as usize,
        b"cublasHgemm" => blas::cublasHgemm as *const () as usize,
        b"cublasSgemmStridedBatched" => blas::cublasSgemmStridedBatched as *const () as usize,
        b"cublasHgemmStridedBatched" => blas::cublasHgemmStridedBatched as *const () as usize,
        b"cublasGemmEx" => blas::cublasGemmEx as *const () as usize,
        b"cublasGemmEx_64" => blas::cublasGemmEx_64 as *const () as usize,
        b"cublasGemmStridedBatchedEx" => blas::cublasGemmStridedBatchedEx as *const () as usize,
        b"cublasGemmStridedBatchedEx_64" => {
            blas::cublasGemmStridedBatchedEx_64 as *const () as usize
        }
        b"cublasGemmBatchedEx" => blas::cublasGemmBatchedEx as *const () as usize,
        b"cublasGemmBatchedEx_64" => blas::cublasGemmBatchedEx_64 as *const () as usize,
        b"cublasLtMatmul" => lt::cublasLtMatmul as *const () as usize,
        _ => return None,
    })
}

/// What a hook learned about its call before forwarding it.
pub(crate) struct Call {
    pub described: Described,
    /// The stream the GEMM runs on.
    pub stream: Handle,
    /// The caller's current context, if any.
    pub ctx: Option<Handle>,
}

/// Where a call runs: device, stream, capture status, current context.
pub(crate) fn site_of(stream: Handle) -> (Site, Option<Handle>) {
    let Some(drv) = driver() else {
        return (
            Site {
                device: 0,
                stream: stream as u64,
                captured: false,
            },
            None,
        );
    };
    let ctx = drv.current_context();
    let device = match ctx {
        Some(c) => device_of(drv, c),
        None => 0,
    };
    let site = Site {
        device,
        stream: stream as u64,
        captured: drv.is_capturing(stream),
    };
    (site, ctx)
}

thread_local! {
    /// The last (context, device) pair this thread saw.
    static LAST_DEVICE: std::cell::Cell<(Handle, u32)> = const { std::cell::Cell::new((0, 0)) };
}

fn device_of(drv: &crate::driver::Driver, ctx: Handle) -> u32 {
    let cached = LAST_DEVICE.try_with(|c| c.get()).unwrap_or((0, 0));
    if cached.0 == ctx {
        return cached.1;
    }
    let dev = drv.current_device().unwrap_or(0);
    let _ = LAST_DEVICE.try_with(|c| c.set((ctx, dev)));
    dev
}

/// A call that was ledgered before the forward.
struct Ledgered {
    index: u64,
    sampled: Option<Sampled>,
}

/// A sampled call whose slot is ready (pre-gather launched).
struct Sampled {
    prepared: Prepared,
    stream: Handle,
}

/// What a hook answers when no real function exists in the process.
pub(crate) fn missing(name: &str) -> CublasStatus {
    log::once(
        Level::Error,
        name,
        &format!("{name}: no library in this process defines it; returning CUBLAS_STATUS_NOT_INITIALIZED"),
    );
    CUBLAS_STATUS_NOT_INITIALIZED
}

/// The shared hook body: see the module documentation.
pub(crate) fn audited(
    entry: &'static str,
    describe: impl FnOnce() -> Result<Call, NotDescribed>,
    forward: impl FnOnce() -> CublasStatus,
) -> CublasStatus {
    let Some(rt) = state::running() else {
        return forward();
    };
    let Some(_reentry) = Reentry::enter() else {
        return forward();
    };
    let _active = rt.active();
    let ledgered = match catch_unwind(AssertUnwindSafe(|| prepare(rt, entry, describe))) {
        Ok(l) => l,
        Err(p) => {
            let reason = format!(
                "internal error in the {entry} hook before the call: {}",
                state::panic_text(p.as_ref())
            );
            pay_debt(rt, &reason);
            state::disable(&reason);
            None
        }
    };
    let status = forward();
    if let Some(l) = ledgered {
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| complete(rt, entry, l, status))) {
            let reason = format!(
                "internal error in the {entry} hook after the call: {}",
                state::panic_text(p.as_ref())
            );
            pay_debt(rt, &reason);
            state::disable(&reason);
        }
    }
    status
}

fn prepare(
    rt: &Runtime,
    entry: &'static str,
    describe: impl FnOnce() -> Result<Call, NotDescribed>,
) -> Option<Ledgered> {
    let Call {
        described,
        stream,
        ctx,
    } = match describe() {
        Ok(c) => c,
        Err(NotDescribed::Invalid(why)) => {
            log::emit(Level::Debug, &format!("{entry}: not ledgered: {why}"));
            return None;
        }
        Err(NotDescribed::Unsupported(why)) => {
            rt.unsupported(entry, &why);
            return None;
        }
    };
    let Described { mut call, gather } = described;
    if let Err(e) = rt.ledger(&mut call) {
        state::disable(&e);
        return None;
    }
    let index = call.index;
    let unsampled = Some(Ledgered {
        index,
        sampled: None,
    });
    let plan = if call.has(flags::CAPTURED) {
        None
    } else {
        rt.schedule.decide(&call)
    };
    // A sampled call owes the stream a sample or a gap from here on: if this hook
    // panics before paying, `audited` pays with an internal-error gap.
    let queued = match plan {
        Some(_) => {
            owe(Some(index));
            rt.shared
                .inflight
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel)
        }
        None => 0,
    };
    test_panic(rt, index, false);
    let Some(plan) = plan else {
        return unsampled;
    };
    let gap = |reason: GapReason, detail: String| {
        owe(None);
        rt.send(Msg::Gap {
            index,
            reason,
            detail,
        });
        unsampled_again(index)
    };
    if queued >= rt.config.queue_len {
        return gap(
            GapReason::QueueFull,
            format!("{queued} samples in flight (MMAUDIT_QUEUE_LEN)"),
        );
    }
    if let Some(why) = gather.unsampleable {
        return gap(GapReason::Internal, why);
    }
    let Some(drv) = driver() else {
        return gap(
            GapReason::GatherFailed,
            "libcuda.so.1 could not be loaded".into(),
        );
    };
    let Some(ctx) = ctx else {
        return gap(
            GapReason::GatherFailed,
            "no current CUDA context on the calling thread".into(),
        );
    };
    let gpu = match rt.contexts.get(drv, ctx, call.device, rt.config.ring_bytes) {
        Ok(g) => g,
        Err(e) => return gap(GapReason::GatherFailed, e),
    };
    let layout = match SlotLayout::new(&call, &gather, &plan) {
        Ok(l) => l,
        Err(e) => return gap(GapReason::Internal, e),
    };
    let mut prepared = match Prepared::new(&gpu, layout) {
        Ok(p) => p,
        Err((reason, detail)) => return gap(reason, detail),
    };
    if let Err((reason, detail)) = prepared.launch_pre(drv, stream) {
        return gap(reason, detail);
    }
    Some(Ledgered {
        index,
        sampled: Some(Sampled { prepared, stream }),
    })
}

fn unsampled_again(index: u64) -> Option<Ledgered> {
    Some(Ledgered {
        index,
        sampled: None,
    })
}

thread_local! {
    /// The sampled call this thread's hook still owes a sample or gap record.
    static OWED: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

fn owe(index: Option<u64>) {
    let _ = OWED.try_with(|c| c.set(index));
}

/// After a panic in a hook: the sampled call it was serving gets a gap record, so
/// that nothing goes missing silently.
fn pay_debt(rt: &Runtime, reason: &str) {
    if let Some(index) = OWED.try_with(|c| c.take()).ok().flatten() {
        rt.send(Msg::Gap {
            index,
            reason: GapReason::Internal,
            detail: reason.to_string(),
        });
    }
}

/// The `MMAUDIT_TEST_PANIC` knob: a deliberate panic inside the hook body, the one
/// panic this crate raises on purpose (it is caught by [`audited`]).
#[allow(clippy::panic)]
fn test_panic(rt: &Runtime, index: u64, after: bool) {
    if let Some(p) = rt.config.test_panic {
        if p.index == index && p.after == after {
            std::panic::panic_any(format!(
                "MMAUDIT_TEST_PANIC: deliberate panic {} call {index}",
                if after { "after" } else { "before" }
            ));
        }
    }
}

fn complete(rt: &Runtime, entry: &'static str, l: Ledgered, status: CublasStatus) {
    test_panic(rt, l.index, true);
    let failed = (status != CUBLAS_STATUS_SUCCESS).then(|| {
        rt.failed_call(l.index, entry, status);
        format!("{entry} returned cuBLAS status {status}: nothing was computed")
    });
    let Some(s) = l.sampled else { return };
    owe(None);
    let Some(drv) = driver() else {
        rt.send(Msg::Gap {
            index: l.index,
            reason: GapReason::GatherFailed,
            detail: "libcuda.so.1 disappeared".into(),
        });
        return;
    };
    match s.prepared.finish(drv, s.stream, failed) {
        Ok(inflight) => rt.send(Msg::Sample(Box::new(inflight))),
        Err((reason, detail)) => rt.send(Msg::Gap {
            index: l.index,
            reason,
            detail,
        }),
    }
}

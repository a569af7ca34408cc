//! The exported symbols and the one code path every GEMM hook shares.
//!
//! A hook: (1) finds the real function; (2) if auditing runs and this thread is not
//! already inside a hook, describes the call (exactly, or as a call outside the model),
//! takes its ledger index and, when sampled, prepares the gather and launches the
//! pre-gather, all under `catch_unwind`; (3) forwards the call exactly once, outside any
//! `catch_unwind`; (4) settles the ledger record with the status the library returned
//! (REJECTED on an error) and, for a sampled call, launches the post-gather and hands
//! it to the background thread, or, for a rejected one, releases what was prepared,
//! again under `catch_unwind`. A panic or internal error in (2) or (4) disables
//! auditing with the reason in the stream; the forward in (3) happens regardless, with
//! the caller's arguments untouched, and whatever the hook owed the stream (the ledger
//! record's settlement, a sample) is paid after it.
//!
//! Every hooked call made while auditing runs gets exactly one ledger record, with
//! consecutive indices in the order the calls took them; the record can only be
//! finished once the library answered, so the background thread writes ledger records
//! in index order as they settle.
//!
//! Hooks are `#[cfg_attr(not(test), no_mangle)]` so unit tests do not interpose on
//! themselves.

pub mod blas;
pub mod dlsym;
pub mod graph;
pub mod handle;
pub mod lt;
pub mod lt_follow;

use std::panic::{catch_unwind, AssertUnwindSafe};

use mmaudit_protocol::call::{flags, GemmCall};
use mmaudit_protocol::record::GapReason;

use crate::driver::{driver, Handle};
use crate::gpu::Prepared;
use crate::handoff::Handed;
use crate::log::{self, Level};
use crate::model::gather::Pick;
use crate::model::{Described, GatherSpec, NotDescribed, Site};
use crate::state::{self, Reentry, Runtime};
use crate::stream::Msg;
use crate::sys::cublas::{CublasStatus, CUBLAS_STATUS_NOT_INITIALIZED, CUBLAS_STATUS_SUCCESS};

/// The address of our hook for a symbol name, if we export one.
pub fn hook_address(name: &[u8]) -> Option<usize> {
    if name == b"cublasLtMatmul" {
        return Some(lt::cublasLtMatmul as *const () as usize);
    }
    blas::table_address(name)
        .or_else(|| lt::hook_address(name))
        .or_else(|| handle::hook_address(name))
        .or_else(|| graph::hook_address(name))
}

/// What a hook learned about a call it can describe exactly.
pub(crate) struct Call {
    pub described: Described,
    /// The stream the GEMM runs on.
    pub stream: Handle,
    /// The caller's current context, if any.
    pub ctx: Option<Handle>,
    /// What the description took from the library's tables instead of cuBLAS,
    /// checked against cuBLAS if the call is sampled.
    pub followed: Option<Followed>,
}

/// Where a description took settings from the library's tables.
#[derive(Clone, Copy)]
pub(crate) enum Followed {
    /// A cuBLAS handle and the settings of its entry ([`handle`]).
    Handle(crate::sys::cublas::CublasHandle, handle::Settings),
    /// A `cublasLtMatmul` call, some of whose descriptor and layouts were followed
    /// ([`lt_follow`]).
    Lt(lt::LtRaw),
}

impl Followed {
    /// Checks what the description took from the tables against cuBLAS or cuBLASLt:
    /// `Err` says what differs (the tables are then no longer trusted for it).
    ///
    /// # Safety
    /// The handle or arguments of the call being served, described as `call` with
    /// `gather`.
    unsafe fn check(self, call: &GemmCall, gather: &GatherSpec) -> Result<(), &'static str> {
        let holds = match self {
            // SAFETY: the caller's contract.
            Followed::Handle(h, seen) => unsafe { handle::verify(h, seen) },
            // SAFETY: the caller's contract.
            Followed::Lt(raw) => unsafe { lt::verify(&raw, call, gather) },
        };
        holds.then_some(()).ok_or(match self {
            Followed::Handle(..) => "the cuBLAS handle was reconfigured through a path the library does not follow; the call's description may be wrong",
            Followed::Lt(_) => "a cuBLASLt descriptor or layout of the call differs from what the library followed through its setters; the call's description may be wrong",
        })
    }
}

/// A call the model cannot describe exactly: its best-effort ledger record (the
/// UNMODELLED flag is set by [`prepare`]) and why.
pub(crate) struct Unmodelled {
    pub call: GemmCall,
    pub why: NotDescribed,
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
        captured: crate::capture::is_capturing(drv, stream),
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

/// A call whose ledger index was taken before the forward.
struct Ledgered {
    index: u64,
    /// Where its ledger record waits for the settlement.
    handed: Handed,
    sampled: Sampled,
}

/// What a sampled call has ready when the library answers.
enum Sampled {
    /// Not sampled.
    No,
    /// Sampled, but its data cannot be gathered: the gap to record if the library
    /// accepts the call (a rejected call gets none).
    Gap(GapReason, String),
    /// Sampled, its slot prepared and the pre-gather launched.
    Gather(Box<Gather>),
    /// Issued during a graph capture: its place in the graph, to complete after the
    /// forward with the post-gather node.
    Captured(crate::graph::CaptureSlot, Handle),
}

/// A sampled call whose slot is ready (pre-gather launched).
struct Gather {
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
    describe: impl FnOnce() -> Result<Call, Box<Unmodelled>>,
    forward: impl FnOnce() -> CublasStatus,
) -> CublasStatus {
    let Some(rt) = state::running() else {
        return forward();
    };
    let Some(_reentry) = Reentry::enter() else {
        return forward();
    };
    let Some(_active) = rt.active() else {
        return forward();
    };
    let _ = DEBT.try_with(|d| d.take());
    let prepared = catch_unwind(AssertUnwindSafe(|| prepare(rt, entry, describe)));
    let status = forward();
    match prepared {
        Ok(Some(l)) => {
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| complete(rt, entry, l, status))) {
                let reason = format!(
                    "internal error in the {entry} hook after the call: {}",
                    state::panic_text(p.as_ref())
                );
                pay_debt(rt, &reason, status);
                state::disable(&reason);
            }
        }
        Ok(None) => {}
        Err(p) => {
            let reason = format!(
                "internal error in the {entry} hook before the call: {}",
                state::panic_text(p.as_ref())
            );
            pay_debt(rt, &reason, status);
            state::disable(&reason);
        }
    }
    status
}

/// [`audited`] for an API call that makes several GEMMs (a grouped batch): each is
/// described, ledgered and prepared in order before the one forward, and completed in
/// order after it.
pub(crate) fn audited_many(
    entry: &'static str,
    describes: Vec<Describe<'_>>,
    forward: impl FnOnce() -> CublasStatus,
) -> CublasStatus {
    let Some(rt) = state::running() else {
        return forward();
    };
    let Some(_reentry) = Reentry::enter() else {
        return forward();
    };
    let Some(_active) = rt.active() else {
        return forward();
    };
    let mut ready = Vec::with_capacity(describes.len());
    let mut failed = None;
    for describe in describes {
        let _ = DEBT.try_with(|d| d.take());
        match catch_unwind(AssertUnwindSafe(|| prepare(rt, entry, describe))) {
            Ok(Some(l)) => ready.push(l),
            Ok(None) => {}
            Err(p) => {
                failed = Some(format!(
                    "internal error in the {entry} hook before the call: {}",
                    state::panic_text(p.as_ref())
                ));
                break;
            }
        }
    }
    let status = forward();
    if let Some(reason) = &failed {
        pay_debt(rt, reason, status);
    }
    for l in ready {
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| complete(rt, entry, l, status))) {
            let reason = format!(
                "internal error in the {entry} hook after the call: {}",
                state::panic_text(p.as_ref())
            );
            pay_debt(rt, &reason, status);
            state::disable(&reason);
        }
    }
    if let Some(reason) = failed {
        state::disable(&reason);
    }
    status
}

/// One GEMM's description, made when the hook gets to it.
pub(crate) type Describe<'a> = Box<dyn FnOnce() -> Result<Call, Box<Unmodelled>> + 'a>;

fn prepare(
    rt: &Runtime,
    entry: &'static str,
    describe: impl FnOnce() -> Result<Call, Box<Unmodelled>>,
) -> Option<Ledgered> {
    // The description stays where `describe` put it (it is a few hundred bytes): the
    // call and its gather specification are borrowed from it.
    let mut described = describe();
    let (call, exact) = match &mut described {
        Ok(Call {
            described: Described { call, gather },
            stream,
            ctx,
            followed,
        }) => (call, Some((&*gather, *stream, *ctx, *followed))),
        Err(unmodelled) => {
            let Unmodelled { call, why } = &mut **unmodelled;
            call.flags |= flags::UNMODELLED;
            match why {
                NotDescribed::Invalid(w) => log::emit(
                    Level::Debug,
                    &format!("{entry}: ledgered as not modelled (invalid arguments): {w}"),
                ),
                NotDescribed::Unsupported(w) => rt.unsupported(entry, w),
            }
            (call, None)
        }
    };
    // No session (NO_SESSION), or a call outside the model: never sampled.
    let (handed, plan) = match rt.ledger(call, exact.is_some()) {
        Ok(h) => h,
        Err(e) => {
            state::disable(&e);
            return None;
        }
    };
    let index = call.index;
    // From here on this hook owes the ledger record its settlement; if it panics,
    // `audited` settles it after the forward.
    owe(Debt {
        index,
        settle: Some(handed),
        sample: false,
    });
    let queued = match plan {
        Some(_) => {
            owe(Debt {
                index,
                settle: Some(handed),
                sample: true,
            });
            rt.shared
                .inflight
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel)
        }
        None => 0,
    };
    test_panic(rt, index, false);
    if let (true, Some(drv)) = (call.is_capture_record(), driver()) {
        // A GEMM captured into a graph, in the model or not: every replay ledgers it.
        let (gather, stream, ctx) = match &exact {
            Some((g, s, c, _)) => (Some(*g), *s, *c),
            None => (None, call.stream as Handle, drv.current_context()),
        };
        // Every replay is audited against this description, and no sampled call checks
        // it: one taken from the handle table is checked now. If the handle changed
        // behind the library, the replays are ledgered as not modelled (not audited).
        let checked = match (exact.and_then(|e| e.3), gather) {
            // SAFETY: the handle or arguments the application passed with this call.
            (Some(f), Some(g)) => unsafe { f.check(call, g) }.is_ok(),
            _ => true,
        };
        let gather = if checked {
            gather
        } else {
            call.flags |= flags::UNMODELLED;
            None
        };
        let gpu = ctx.and_then(|c| rt.contexts.existing(c));
        if let Some(slot) =
            rt.graphs
                .capture_before(drv, gpu, rt.commit_session(), stream, call, gather)
        {
            return Some(Ledgered {
                index,
                handed,
                sampled: Sampled::Captured(slot, stream),
            });
        }
    }
    let (Some(plan), Some((gather, stream, ctx, followed))) = (plan, exact) else {
        return Some(Ledgered {
            index,
            handed,
            sampled: Sampled::No,
        });
    };
    let gap = |reason: GapReason, detail: String| {
        Some(Ledgered {
            index,
            handed,
            sampled: Sampled::Gap(reason, detail),
        })
    };
    if let Some(f) = followed {
        // SAFETY: the handle or arguments the application passed with this call.
        if let Err(why) = unsafe { f.check(call, gather) } {
            return gap(GapReason::Internal, why.into());
        }
    }
    if queued >= rt.config.queue_len {
        return gap(
            GapReason::QueueFull,
            format!("{queued} samples in flight (MMAUDIT_QUEUE_LEN)"),
        );
    }
    let Some(drv) = driver() else {
        return gap(
            GapReason::GatherFailed,
            "libcuda.so.1 could not be loaded".into(),
        );
    };
    if crate::capture::check_sampled(drv, stream) {
        return gap(
            GapReason::GatherFailed,
            "the stream captures a graph whose capture began unseen by the library: the call was recorded as a direct call".into(),
        );
    }
    let Some(ctx) = ctx else {
        return gap(
            GapReason::GatherFailed,
            "no current CUDA context on the calling thread".into(),
        );
    };
    let ring = match plan {
        Pick::Whole => rt.config.commit_ring_bytes,
        Pick::Plan(_) => rt.config.ring_bytes,
    };
    let gpu = match rt.contexts.get(drv, ctx, call.device, ring) {
        Ok(g) => g,
        Err(e) => return gap(GapReason::GatherFailed, e),
    };
    let (layout, device) = match crate::held::layout(call, gather, &plan, || gpu.ring_capacity()) {
        Ok(l) if matches!(plan, Pick::Whole) => {
            crate::gpu::commit_layout(drv, &gpu, l, gather, Some(rt.config.retain_bytes))
        }
        Ok(l) => (l, None),
        Err(e) => return gap(GapReason::Internal, e),
    };
    let mut prepared = match Prepared::new(&gpu, layout, device) {
        Ok(p) => p,
        Err((reason, detail)) => return gap(reason, detail),
    };
    if let Err((reason, detail)) = prepared.launch_pre(drv, stream) {
        return gap(reason, detail);
    }
    Some(Ledgered {
        index,
        handed,
        sampled: Sampled::Gather(Box::new(Gather { prepared, stream })),
    })
}

/// What a hook still owes the stream for the call it serves.
#[derive(Clone, Copy, Debug)]
struct Debt {
    index: u64,
    /// The ledger record waits for its settlement (where).
    settle: Option<Handed>,
    /// A sampled call: a sample or a gap is due (none if the library rejects it).
    sample: bool,
}

thread_local! {
    /// What this thread's hook still owes the stream.
    static DEBT: std::cell::Cell<Option<Debt>> = const { std::cell::Cell::new(None) };
}

fn owe(debt: Debt) {
    let _ = DEBT.try_with(|c| c.set(Some(debt)));
}

fn paid() {
    let _ = DEBT.try_with(|c| c.set(None));
}

/// After a panic in a hook: the ledger record of the call it was serving is settled
/// with the library's status, and a sampled call the library accepted gets a gap
/// record, so that nothing goes missing silently.
fn pay_debt(rt: &Runtime, reason: &str, status: CublasStatus) {
    let Some(debt) = DEBT.try_with(|c| c.take()).ok().flatten() else {
        return;
    };
    let rejected = status != CUBLAS_STATUS_SUCCESS;
    if let Some(handed) = debt.settle {
        rt.settle(handed, debt.index, rejected);
    }
    if debt.sample {
        if rejected {
            rt.sample_dropped();
        } else {
            rt.send(Msg::Gap {
                index: debt.index,
                reason: GapReason::Internal,
                detail: reason.to_string(),
            });
        }
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
    let sample_owed = matches!(l.sampled, Sampled::Gap(..) | Sampled::Gather(_));
    // This call's debt (in a grouped batch the debt left by `prepare` is the last
    // call's): a panic from here on settles this call.
    owe(Debt {
        index: l.index,
        settle: Some(l.handed),
        sample: sample_owed,
    });
    test_panic(rt, l.index, true);
    let rejected = status != CUBLAS_STATUS_SUCCESS;
    rt.settle(l.handed, l.index, rejected);
    owe(Debt {
        index: l.index,
        settle: None,
        sample: sample_owed,
    });
    if rejected {
        rt.failed_call(l.index, entry, status);
    }
    match l.sampled {
        Sampled::No => {}
        Sampled::Captured(slot, stream) => {
            if let Some(drv) = driver() {
                rt.graphs.capture_after(drv, stream, slot, rejected);
            }
        }
        // A rejected call computed nothing: it is never sampled, so it gets neither
        // sample nor gap.
        Sampled::Gap(..) if rejected => rt.sample_dropped(),
        Sampled::Gap(reason, detail) => rt.send(Msg::Gap {
            index: l.index,
            reason,
            detail,
        }),
        Sampled::Gather(g) => {
            let Gather { prepared, stream } = *g;
            match (driver(), rejected) {
                (None, true) => rt.sample_dropped(),
                (None, false) => rt.send(Msg::Gap {
                    index: l.index,
                    reason: GapReason::GatherFailed,
                    detail: "libcuda.so.1 disappeared".into(),
                }),
                // The pre-gather may still be writing the slot: it is released by the
                // background thread once the event recorded after it has fired.
                (Some(drv), true) => match prepared.abandon(drv, stream) {
                    Some(inflight) => rt.send(Msg::Sample(Box::new(inflight))),
                    None => rt.sample_dropped(),
                },
                (Some(drv), false) => match prepared.finish(drv, stream) {
                    Ok(inflight) => rt.send(Msg::Sample(Box::new(inflight))),
                    Err((reason, detail)) => rt.send(Msg::Gap {
                        index: l.index,
                        reason,
                        detail,
                    }),
                },
            }
        }
    }
    paid();
}

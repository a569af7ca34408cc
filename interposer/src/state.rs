//! The lifecycle: an explicit atomic state machine, initialisation at the first hooked
//! call, the thread-local re-entrancy guard, disabling, fork and exit.
//!
//! ```text
//! Uninit --first hooked call--> Running --internal error--> Disabled --exit--> Finished
//!    |                             |                                   ^
//!    +--no key / invalid env--> Off +--------------------exit-----------+
//! Running/Disabled --fork (in the child)--> Forked
//! ```
//!
//! A child forked while its parent audits cannot use the GPU (CUDA does not survive
//! `fork` in a process that used it), so it forwards plainly; the parent's stream gets a
//! notice for each such fork (the first eight; the total at exit). A child forked before
//! its parent's first hooked call audits into a stream of its own, as any process does;
//! a file sink path without `%p` then gets `.PID` appended in the child, so that parent
//! and child never write the same file.
//!
//! Only `Running` audits. Every other state forwards plainly and forever (`Disabled`
//! still lets the background thread deliver what it holds). Initialisation reads the
//! environment, opens the sink, starts the background thread and registers the exit
//! handler (lazily, so that it runs before the CUDA runtime's own teardown handlers,
//! which were registered earlier). What this module must never do: block a hooked call
//! for longer than initialisation takes, or panic.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::model::gather::Pick;
use crossbeam_channel::Sender;
use mmaudit_protocol::call::GemmCall;
use mmaudit_protocol::record::{Notice, NoticeKind};
use mmaudit_protocol::schedule::ScheduleVersion;
use mmaudit_protocol::stream::StreamHeader;

use crate::config::{self, Config, Setup, SinkSpec};
use crate::gpu::Contexts;
use crate::handoff::Handed;
use crate::log::{self, Level};
use crate::session::{Ledger, Session};
use crate::stream::{notice, sink::Sink, Msg, Shared, Worker};

/// Not initialised yet.
pub const UNINIT: u8 = 0;
/// Auditing.
pub const RUNNING: u8 = 1;
/// Off from the start (no key, invalid configuration, sink or thread failure).
pub const OFF: u8 = 2;
/// Was running; stopped by an internal error. Pending data is still delivered.
pub const DISABLED: u8 = 3;
/// The exit flush ran.
pub const FINISHED: u8 = 4;
/// A forked child: the parent's stream is not ours.
pub const FORKED: u8 = 5;

static STATE: AtomicU8 = AtomicU8::new(UNINIT);
static RUNTIME: OnceLock<Runtime> = OnceLock::new();
static INIT: Once = Once::new();
static FLUSHED: AtomicBool = AtomicBool::new(false);

/// The state now.
pub fn state() -> u8 {
    STATE.load(Ordering::Acquire)
}

/// What [`Runtime::ledger_many`] returns: the calls with their indices (shared with
/// the background thread) and the session they were made in.
pub type LedgeredMany = (Arc<Vec<GemmCall>>, Option<Arc<Session>>);

/// Everything a running audit needs, created once.
pub struct Runtime {
    /// The configuration.
    pub config: Config,
    tx: Sender<Msg>,
    /// The call index counter and the verifier session in force (shared with the
    /// sink, which begins and ends sessions).
    ledger: Arc<Ledger>,
    /// Counters shared with the background thread.
    pub shared: Arc<Shared>,
    active: AtomicUsize,
    /// Gather resources per CUDA context.
    pub contexts: Contexts,
    /// CUDA graphs captured with GEMMs, and their executable graphs.
    pub graphs: crate::graph::Graphs,
    unsupported: Mutex<BTreeMap<String, u64>>,
    failed_calls: AtomicU64,
}

impl Runtime {
    /// Assigns the next index to `call` (with NO_SESSION when there is no verifier
    /// session) and sends its ledger record. Returns the session the call is made in,
    /// whose schedule decides whether it is sampled.
    ///
    /// With `sample` (a call the model describes exactly), also decides whether the
    /// call is sampled: its plan, or `None`. The record goes into this thread's queue
    /// (or, when that is full, over the channel); the call must be settled where the
    /// returned [`Handed`] says, on this thread.
    pub fn ledger(
        &self,
        call: &mut GemmCall,
        sample: bool,
    ) -> Result<(Handed, Option<Pick>), String> {
        let plan = self.ledger.assign_and_decide(call, sample)?;
        // A sample or a gap is due (a call recorded during a graph capture gets neither:
        // its replays are audited).
        let sampled = plan.is_some() && !call.is_capture_record();
        let handed = match self.shared.queues.push(call, sampled) {
            Some(ticket) => Handed::Queue(ticket),
            None => {
                self.tx
                    .send(Msg::Ledger {
                        call: call.clone(),
                        sampled,
                    })
                    .map_err(|_| "the background thread is gone".to_string())?;
                Handed::Channel
            }
        };
        Ok((handed, plan))
    }

    /// [`Runtime::ledger`] for several calls at once (consecutive indices, one message
    /// that shares the calls with the caller).
    pub fn ledger_many(&self, mut calls: Vec<GemmCall>) -> Result<LedgeredMany, String> {
        let session = self.ledger.assign_many(&mut calls)?;
        let all = Arc::new(calls);
        self.tx
            .send(Msg::Ledgers(Arc::clone(&all)))
            .map_err(|_| "the background thread is gone".to_string())?;
        Ok((all, session))
    }

    /// The pinned ring a CUDA context gets when its gather resources are made now: the
    /// larger commit-mode default while a commit-mode session is in force (a ring is
    /// made once per context and kept: one made in a sampling session keeps its size).
    pub fn ring_bytes(&self) -> usize {
        if self.commit_session() {
            self.config.commit_ring_bytes
        } else {
            self.config.ring_bytes
        }
    }

    /// Whether a commit-mode session is in force now.
    pub fn commit_session(&self) -> bool {
        self.ledger
            .current()
            .is_some_and(|s| s.schedule.version() == ScheduleVersion::Commit)
    }

    /// Sends a message to the background thread (ignored once it is gone).
    pub fn send(&self, msg: Msg) {
        let _ = self.tx.send(msg);
    }

    /// Settles the ledger record of call `index` once the library answered: `rejected`
    /// when it returned an error status (the record then carries the REJECTED flag).
    pub fn settle(&self, handed: Handed, index: u64, rejected: bool) {
        match handed {
            Handed::Queue(ticket) => self.shared.queues.settle(ticket, rejected),
            Handed::Channel => self.send(Msg::Settle { index, rejected }),
        }
    }

    /// A sampled call will send neither sample nor gap (the library rejected it).
    pub fn sample_dropped(&self) {
        self.shared.inflight.fetch_sub(1, Ordering::AcqRel);
    }

    /// Counts a call this protocol version cannot describe (it is ledgered with the
    /// UNMODELLED flag and never sampled); the first of each kind also becomes a
    /// warning notice in the stream and on stderr.
    pub fn unsupported(&self, entry: &str, reason: &str) {
        let key = format!("{entry}: {reason}");
        let first = {
            let mut map = self.unsupported.lock().unwrap_or_else(|e| e.into_inner());
            let n = map.entry(key.clone()).or_insert(0);
            *n += 1;
            *n == 1
        };
        if first {
            let text = format!(
                "a {key} call is outside what protocol v1 can describe: it is ledgered as not modelled (UNMODELLED) and never sampled"
            );
            log::emit(Level::Warn, &text);
            self.send(Msg::Notice(notice(NoticeKind::Warning, text)));
        }
    }

    /// Notes a ledgered call that the library refused (`status` != success); its
    /// record carries the REJECTED flag. The first ten become warning notices.
    pub fn failed_call(&self, index: u64, entry: &str, status: i32) {
        let n = self.failed_calls.fetch_add(1, Ordering::Relaxed);
        if n < 10 {
            self.send(Msg::Notice(notice(
                NoticeKind::Warning,
                format!(
                    "call {index} ({entry}) returned cuBLAS status {status}: nothing was computed; ledgered as rejected"
                ),
            )));
        }
    }

    /// Marks a hook in progress until the guard drops (the exit flush waits for them),
    /// or `None` when the exit began meanwhile: the hook then only forwards. Either the
    /// exit sees this hook active (both sides are sequentially consistent: the hook
    /// counts itself then reads the state, the exit writes the state then reads the
    /// count), or this hook sees the exit.
    pub fn active(&self) -> Option<ActiveGuard<'_>> {
        self.active.fetch_add(1, Ordering::SeqCst);
        let guard = ActiveGuard(&self.active);
        (STATE.load(Ordering::SeqCst) == RUNNING).then_some(guard)
    }

    fn exit_notices(&self) -> Vec<Notice> {
        let mut out = Vec::new();
        let map = self.unsupported.lock().unwrap_or_else(|e| e.into_inner());
        if !map.is_empty() {
            let total: u64 = map.values().sum();
            let kinds: Vec<String> = map.iter().map(|(k, n)| format!("{n} x {k}")).collect();
            out.push(notice(
                NoticeKind::Warning,
                format!(
                    "{total} calls could not be described in protocol v1; they are ledgered as not modelled (UNMODELLED), not audited: {}",
                    kinds.join("; ")
                ),
            ));
        }
        let forks = FORKS.load(Ordering::Acquire);
        if forks > FORK_NOTICES {
            out.push(notice(
                NoticeKind::Warning,
                format!("{forks} child processes were forked in all while auditing ran: GEMM calls they made are not audited"),
            ));
        }
        let failed = self.failed_calls.load(Ordering::Relaxed);
        if failed > 0 {
            out.push(notice(
                NoticeKind::Warning,
                format!(
                    "{failed} calls returned an error status from the library and are ledgered as rejected"
                ),
            ));
        }
        out
    }
}

/// See [`Runtime::active`].
pub struct ActiveGuard<'a>(&'a AtomicUsize);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

thread_local! {
    static IN_HOOK: Cell<bool> = const { Cell::new(false) };
}

/// The re-entrancy guard: at most one audited hook per thread at a time. Calls made
/// from inside a hook (cuBLAS calling cuBLASLt, our own thread) are forwarded plainly.
pub struct Reentry(());

impl Reentry {
    /// `None` when this thread is already inside a hook (or is our own thread).
    pub fn enter() -> Option<Reentry> {
        IN_HOOK
            .try_with(|c| {
                if c.get() {
                    None
                } else {
                    c.set(true);
                    Some(Reentry(()))
                }
            })
            .ok()
            .flatten()
    }
}

impl Drop for Reentry {
    fn drop(&mut self) {
        let _ = IN_HOOK.try_with(|c| c.set(false));
    }
}

/// Marks the calling thread as internal: every hooked call it makes is forwarded.
pub fn mark_internal_thread() {
    let _ = IN_HOOK.try_with(|c| c.set(true));
}

/// The runtime when auditing is on, initialising on first use.
pub fn running() -> Option<&'static Runtime> {
    match STATE.load(Ordering::Acquire) {
        RUNNING => RUNTIME.get(),
        UNINIT => {
            INIT.call_once(init);
            if STATE.load(Ordering::Acquire) == RUNNING {
                RUNTIME.get()
            } else {
                None
            }
        }
        _ => None,
    }
}

/// Stops auditing for good because of an internal error in a hook: the reason goes
/// into the stream (audit-disabled notice) and, once, to stderr.
pub fn disable(reason: &str) {
    if STATE
        .compare_exchange(RUNNING, DISABLED, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
    {
        log::emit(
            Level::Error,
            &format!("auditing disabled: {reason}; calls are forwarded unaudited from now on"),
        );
        if let Some(rt) = RUNTIME.get() {
            rt.send(Msg::Notice(notice(NoticeKind::AuditDisabled, reason)));
        }
    }
}

/// Stops auditing at the background thread's request (it already put what it could
/// into the stream).
fn stop(reason: String) {
    match STATE.compare_exchange(RUNNING, DISABLED, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => log::emit(Level::Error, &format!("auditing disabled: {reason}")),
        // During the exit flush: the stream could not be finished, say why.
        Err(FINISHED) => log::emit(Level::Error, &format!("at exit: {reason}")),
        Err(_) => {}
    }
}

/// The text of a caught panic.
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic".to_string()
    }
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    // SAFETY: getrandom writes at most N bytes into the buffer.
    let n = unsafe { libc::getrandom(out.as_mut_ptr().cast(), N, 0) };
    if n != N as isize {
        // No getrandom: a keyed hash of time, pid and address space layout.
        let seed = format!(
            "{:?} {} {:p}",
            SystemTime::now(),
            std::process::id(),
            &out as *const _
        );
        let h = mix(seed.as_bytes());
        for (i, b) in out.iter_mut().enumerate() {
            *b = h[i % h.len()];
        }
    }
    out
}

/// A non-cryptographic fallback mixer (only used when getrandom fails).
fn mix(bytes: &[u8]) -> [u8; 32] {
    let mut s = [0x9e37_79b9_7f4a_7c15u64; 4];
    for (i, &b) in bytes.iter().enumerate() {
        let w = &mut s[i % 4];
        *w = (*w ^ b as u64)
            .wrapping_mul(0x100_0000_01b3)
            .rotate_left(17);
    }
    let mut out = [0u8; 32];
    for (i, w) in s.iter().enumerate() {
        out[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
    }
    out
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most len bytes.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
    if r != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn init() {
    let result = std::panic::catch_unwind(init_inner);
    match result {
        Ok(true) => {}
        Ok(false) => STATE.store(OFF, Ordering::Release),
        Err(p) => {
            log::emit(
                Level::Error,
                &format!(
                    "initialisation failed ({}): auditing is off",
                    panic_text(p.as_ref())
                ),
            );
            STATE.store(OFF, Ordering::Release);
        }
    }
}

/// Reads the environment and starts everything; false when auditing stays off.
fn init_inner() -> bool {
    let pid = std::process::id();
    let setup = config::from_env(
        |k| std::env::var(k).ok(),
        |p| mmaudit_protocol::keys::read_key_text(std::path::Path::new(p)),
        pid,
    );
    let config = match setup {
        Setup::Audit(c) => c,
        Setup::NoKey { log: level } => {
            log::set_level(level);
            log::emit(
                Level::Warn,
                "no MMAUDIT_KEY or MMAUDIT_KEY_FILE is set: auditing is off, every call is forwarded untouched",
            );
            return false;
        }
        Setup::Invalid {
            message,
            log: level,
        } => {
            log::set_level(level);
            log::emit(Level::Warn, &message);
            return false;
        }
    };
    log::set_level(config.log);
    // Panics inside this library are caught and reported as one line (and in the
    // stream); the default hook's multi-line message is not for the host's stderr.
    // The hook belongs to this library's own copy of std.
    std::panic::set_hook(Box::new(|info| {
        log::emit(Level::Error, &format!("internal panic: {info}"));
    }));
    let nonce: [u8; 16] = random_bytes();
    let stream_id = u64::from_le_bytes(random_bytes());
    let devices = crate::driver::driver()
        .and_then(|d| {
            d.current_context()?;
            let dev = d.current_device().ok()?;
            d.device_name(dev).ok()
        })
        .into_iter()
        .collect();
    let header = StreamHeader {
        key_id: config.key.id(),
        nonce,
        config: config.sampling,
        stream_id,
        segment: 0,
        first_index: 0,
        pid,
        host: hostname(),
        started_unix_ns: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
        devices,
        producer: crate::PRODUCER.to_string(),
        schedule: mmaudit_protocol::schedule::ScheduleVersion::V2,
    };
    let ledger = Arc::new(Ledger::default());
    let template = std::env::var("MMAUDIT_SINK").unwrap_or_else(|_| config::DEFAULT_SINK.into());
    let mut config = config;
    config.sink = child_sink(config.sink, &template, pid);
    let sink = match Sink::open(
        &config.sink,
        &config.key,
        header,
        config.buffer_bytes,
        config.flush_interval,
        Arc::clone(&ledger),
        config.references,
    ) {
        Ok(s) => s.with_retention(config.retain_bytes),
        Err(e) => {
            log::emit(Level::Warn, &format!("MMAUDIT_SINK: {e}: auditing is off"));
            return false;
        }
    };
    let (tx, rx) = crossbeam_channel::unbounded();
    let shared = Arc::new(Shared::default());
    let worker = Worker::new(rx, sink, Arc::clone(&shared), Box::new(stop));
    let spawned = std::thread::Builder::new()
        .name("mmaudit".into())
        .spawn(move || {
            mark_internal_thread();
            block_sigpipe();
            if let Some(d) = crate::driver::driver() {
                d.relax_this_thread();
            }
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| worker.run())).is_err() {
                stop("the background thread failed".into());
            }
        });
    if let Err(e) = spawned {
        log::emit(
            Level::Warn,
            &format!("cannot start the background thread ({e}): auditing is off"),
        );
        return false;
    }
    // A live verifier's hello sets the rates; the environment's are a file sink's.
    let rates = match &config.sink {
        SinkSpec::File(_) => crate::stream::sink::rates(&config.sampling),
        SinkSpec::Tcp { .. } => "sampling rates set by the verifier's hello".to_string(),
    };
    let summary = format!(
        "auditing to {} (key id {:016x}, stream {stream_id:016x}): {rates}",
        config.sink,
        config.key.id(),
    );
    let rt = Runtime {
        config,
        tx,
        ledger,
        shared,
        active: AtomicUsize::new(0),
        contexts: Contexts::default(),
        graphs: Default::default(),
        unsupported: Mutex::new(BTreeMap::new()),
        failed_calls: AtomicU64::new(0),
    };
    if RUNTIME.set(rt).is_err() {
        return false;
    }
    register_exit_and_fork();
    STATE.store(RUNNING, Ordering::Release);
    log::emit(Level::Info, &summary);
    true
}

/// Blocks SIGPIPE in the calling (background) thread: a write to a FIFO or socket
/// whose reader left then fails with EPIPE instead of killing the application. A
/// SIGPIPE raised by such a write is directed at this thread and stays pending on it.
fn block_sigpipe() {
    // SAFETY: a sigset_t is plain data; sigemptyset/sigaddset initialise it and
    // pthread_sigmask changes only this thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

extern "C" fn at_exit() {
    finish();
}

/// This process was forked from one that had the library loaded.
static FORK_CHILD: AtomicBool = AtomicBool::new(false);
/// Forks made while auditing ran.
static FORKS: AtomicU64 = AtomicU64::new(0);
/// Fork notices written to the stream; later forks are only counted.
const FORK_NOTICES: u64 = 8;

#[cfg_attr(test, allow(dead_code))] // registered by the library build only
extern "C" fn in_fork_child() {
    FORK_CHILD.store(true, Ordering::Release);
    let s = STATE.load(Ordering::Acquire);
    if s == RUNNING || s == DISABLED {
        STATE.store(FORKED, Ordering::Release);
        log::raw(
            Level::Info,
            "mmaudit: forked child: auditing is off in this process (the parent's stream continues)\n",
        );
    }
}

#[cfg_attr(test, allow(dead_code))] // registered by the library build only
extern "C" fn in_fork_parent() {
    if STATE.load(Ordering::Acquire) != RUNNING {
        return;
    }
    let Some(rt) = RUNTIME.get() else { return };
    let n = FORKS.fetch_add(1, Ordering::AcqRel) + 1;
    if n <= FORK_NOTICES {
        rt.send(Msg::Notice(notice(
            NoticeKind::Warning,
            format!(
                "a child process was forked before call {}: GEMM calls it makes are not audited (a process that has used CUDA cannot use the GPU in a forked child){}",
                rt.ledger.next_index(),
                if n == FORK_NOTICES { "; further forks are counted at exit" } else { "" }
            ),
        )));
    }
}

/// Registers the fork handlers when the library is loaded, so that a child forked
/// before the first hooked call knows it is one.
#[cfg(not(test))]
#[used]
#[link_section = ".init_array"]
static INIT_FORK: extern "C" fn() = register_fork;

#[cfg_attr(test, allow(dead_code))] // registered by the library build only
extern "C" fn register_fork() {
    // SAFETY: registering plain extern "C" functions with no arguments; they stay
    // valid for the life of the process (this library is never unloaded while
    // preloaded).
    unsafe {
        libc::pthread_atfork(None, Some(in_fork_parent), Some(in_fork_child));
    }
}

fn register_exit_and_fork() {
    // SAFETY: registering a plain extern "C" function with no arguments; it stays
    // valid for the life of the process.
    unsafe {
        libc::atexit(at_exit);
    }
}

/// In a forked child, a file sink path that does not name the process (`%p`) gets
/// `.PID` appended: the parent may write (or later open) the same path.
fn child_sink(sink: SinkSpec, template: &str, pid: u32) -> SinkSpec {
    match sink {
        SinkSpec::File(path) if FORK_CHILD.load(Ordering::Acquire) && !template.contains("%p") => {
            let mut p = path.into_os_string();
            p.push(format!(".{pid}"));
            let path = std::path::PathBuf::from(p);
            log::emit(
                Level::Info,
                &format!(
                    "forked child: MMAUDIT_SINK does not contain %p, so this process writes {}",
                    path.display()
                ),
            );
            SinkSpec::File(path)
        }
        other => other,
    }
}

/// The exit flush: waits (briefly) for hooks in progress, then lets the background
/// thread resolve pending gathers, write the end record and deliver everything, all
/// within `MMAUDIT_EXIT_TIMEOUT_MS`. Idempotent; a no-op unless auditing ran.
pub fn finish() {
    if FLUSHED.swap(true, Ordering::AcqRel) {
        return;
    }
    let previous = STATE.load(Ordering::Acquire);
    if previous != RUNNING && previous != DISABLED {
        return;
    }
    let Some(rt) = RUNTIME.get() else { return };
    STATE.store(FINISHED, Ordering::SeqCst);
    let timeout = rt.config.exit_timeout;
    let start = Instant::now();
    let settle = (timeout / 10).min(Duration::from_millis(100));
    while rt.active.load(Ordering::SeqCst) > 0 && start.elapsed() < settle {
        std::thread::sleep(Duration::from_micros(100));
    }
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    rt.send(Msg::Shutdown {
        deadline: start + timeout,
        notices: rt.exit_notices(),
        done: done_tx,
    });
    if done_rx
        .recv_timeout(timeout + Duration::from_millis(250))
        .is_err()
    {
        log::emit(
            Level::Warn,
            "exit: the stream could not be finished within MMAUDIT_EXIT_TIMEOUT_MS; the verifier will see it truncated",
        );
    }
}

/// The fallback: if the exit handler never ran (it is registered at the first hooked
/// call), the library's destructor flushes.
#[cfg(not(test))]
#[used]
#[link_section = ".fini_array"]
static FINI: extern "C" fn() = at_exit;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reentry_guard_admits_one_hook_per_thread() {
        let outer = Reentry::enter().expect("first entry");
        assert!(Reentry::enter().is_none(), "a nested hook is refused");
        drop(outer);
        let again = Reentry::enter();
        assert!(again.is_some(), "released on drop");
        drop(again);
        std::thread::spawn(|| {
            mark_internal_thread();
            assert!(
                Reentry::enter().is_none(),
                "an internal thread never audits"
            );
        })
        .join()
        .unwrap();
        // Other threads are independent.
        let _held = Reentry::enter().unwrap();
        std::thread::spawn(|| assert!(Reentry::enter().is_some()))
            .join()
            .unwrap();
    }

    #[test]
    fn panic_payloads_become_text() {
        let p = std::panic::catch_unwind(|| std::panic::panic_any("boom")).unwrap_err();
        assert_eq!(panic_text(p.as_ref()), "boom");
        let p = std::panic::catch_unwind(|| std::panic::panic_any(format!("n={}", 3))).unwrap_err();
        assert_eq!(panic_text(p.as_ref()), "n=3");
        let p = std::panic::catch_unwind(|| std::panic::panic_any(7u8)).unwrap_err();
        assert_eq!(panic_text(p.as_ref()), "a panic");
    }
}

//! The background thread: everything between the hooks and the verifier.
//!
//! A hook writes its call's ledger record into its thread's queue
//! ([`crate::handoff`]) before forwarding the call and its settlement (REJECTED or not)
//! into the same slot once the library answered; when that queue is full, both go as
//! [`Msg`]s over an unbounded crossbeam channel (sending never blocks and never fails
//! while the thread lives), which also carries a gap for a sampled call that could not
//! be gathered, a [`Pending`] sample for each gather in flight, graph replays' records
//! and notices. The thread drains the queues and the channel on every tick, puts ledger
//! records back in index order and writes them as they settle, holding back the
//! samples and gaps of calls whose ledger record is not written yet (the verifier reads
//! a sample only after its call's ledger record). It
//! polls pending gathers without blocking (`cuEventQuery`), turns completed ones into
//! sample records, and hands every record to the [`sink::Sink`], which batches them
//! into zstd-compressed, MAC-chained frames and writes them to a file or a TCP
//! connection. The application's threads never wait for any of it.
//!
//! What it must never do: drop a record silently, or block a hook. What the sink cannot
//! take becomes a gap record or, for ledger records, an audit-disabled notice.

pub mod commit;
pub mod sink;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mmaudit_protocol::call::{flags, GemmCall};
use mmaudit_protocol::record::{Gap, GapReason, Notice, NoticeKind, Record, Sample};

use crate::handoff::{self, Queues};
use crate::log::{self, Level};
use crate::model::gather::SampleOperands;
use sink::Sink;

/// A sampled call whose gather is in flight on the device.
pub trait Pending: Send {
    /// The call index.
    fn index(&self) -> u64;
    /// Checks (without blocking) whether the gather completed: `None` while it runs.
    fn poll(&mut self) -> Option<Resolved>;
    /// True for the gather of a rejected call, which only waits to free its slot and
    /// records nothing (not even a gap at exit).
    fn discards(&self) -> bool {
        false
    }
}

/// A sample as gathered, with what the sink needs to send its operands as references.
#[derive(Debug)]
pub struct Gathered {
    /// The sample record, operands inline.
    pub sample: Sample,
    /// The operands' types, k and the plan's indices (`None`: never referenced).
    pub operands: Option<SampleOperands>,
    /// The call (`None` only in tests): a commit-mode session commits to the sample,
    /// which is then the whole call, bound to its ledger encoding.
    pub call: Option<GemmCall>,
    /// Where op(A) is (commit mode remembers a held tensor found there).
    pub a_key: Option<crate::model::gather::HeldKey>,
    /// Commit mode: op(A) was gathered as a held tensor's evidence (in the sample's
    /// op(A) rows, one element each) and this spot row, whose bytes follow.
    pub held: Option<(crate::model::gather::HeldA, Vec<u8>)>,
    /// Commit mode: the leaf hashes of the whole call's vectors, computed on the GPU.
    pub leaves: crate::model::gather::Leaves,
    /// Commit mode: the operands kept in device memory (not in `sample`).
    pub device: Option<crate::gpu::Retained>,
}

impl Gathered {
    /// What a completed gather of `layout` left in its slot's `bytes`; with `hashed`,
    /// the leaf-hash jobs of its layout ran too; `device`: the device slot it copied
    /// the whole call into.
    pub fn from_slot(
        layout: &crate::model::gather::SlotLayout,
        bytes: &[u8],
        hashed: bool,
        device: Option<crate::gpu::DeviceSlot>,
    ) -> Result<Gathered, String> {
        Ok(Gathered {
            sample: layout.assemble(bytes)?,
            operands: Some(layout.operands()),
            call: Some(layout.call.clone()),
            a_key: layout.a_key,
            held: layout.held.clone().zip(layout.spot(bytes)),
            leaves: if hashed {
                layout.leaf_hashes(bytes)
            } else {
                Default::default()
            },
            device: device
                .zip(layout.device.clone())
                .map(|(slot, l)| crate::gpu::Retained {
                    slot,
                    layout: l,
                    checks: layout.device_checks(bytes),
                }),
        })
    }
}

/// How a gather in flight ended.
#[derive(Debug)]
pub enum Resolved {
    /// The sampled data.
    Sample(Box<Gathered>),
    /// No data, and why.
    Gap(GapReason, String),
    /// The call was rejected by the library: its slot is free again, nothing is
    /// recorded.
    Released,
}

/// What the hooks send to the background thread.
pub enum Msg {
    /// The ledger record of one call, sent in index order before the call is
    /// forwarded; it is written once settled.
    Ledger {
        /// the call
        call: GemmCall,
        /// the call is sampled (a record still unsettled at exit then gets a gap)
        sampled: bool,
    },
    /// Ledger records of consecutive calls (a graph replay's), in index order.
    Ledgers(std::sync::Arc<Vec<GemmCall>>),
    /// Calls of those records the schedule sampled (sent right after them): a sample
    /// or a gap is due for each, so one still unsettled at exit gets a gap.
    Sampled(Vec<u64>),
    /// The library answered calls `first .. first + count` alike.
    SettleRange {
        /// the first call index
        first: u64,
        /// how many
        count: u64,
        /// the library returned an error status
        rejected: bool,
    },
    /// The library answered call `index`; `rejected` when with an error status.
    Settle {
        /// the call index
        index: u64,
        /// the library returned an error status: the record gets the REJECTED flag
        rejected: bool,
    },
    /// A sampled call without data.
    Gap {
        /// the call index
        index: u64,
        /// why
        reason: GapReason,
        /// for humans
        detail: String,
    },
    /// A gather in flight.
    Sample(Box<dyn Pending>),
    /// A notice for the stream.
    Notice(Notice),
    /// Writes everything queued now (tests and diagnostics).
    Flush(Sender<()>),
    /// Process exit: resolve or give up on pending gathers, write the end record, flush,
    /// then answer on `done`; all by `deadline`.
    Shutdown {
        /// when everything must be done
        deadline: Instant,
        /// notices to add before the end record
        notices: Vec<Notice>,
        /// answered when the stream is finished
        done: Sender<()>,
    },
}

/// What the hooks and the thread share.
#[derive(Debug, Default)]
pub struct Shared {
    /// Samples handed to the thread and not resolved yet (bounds the queue).
    pub inflight: AtomicUsize,
    /// Every hooking thread's queue of ledger records.
    pub queues: Queues,
}

/// What the thread reports to the lifecycle when the sink can no longer take the
/// ledger: auditing must stop.
pub type DisableFn = Box<dyn Fn(String) + Send>;

/// A sample or gap record on its way to the sink.
enum Outgoing {
    Gap(Gap),
    Sample(Box<Gathered>),
}

impl Outgoing {
    fn index(&self) -> u64 {
        match self {
            Outgoing::Gap(g) => g.indices.first().copied().unwrap_or(0),
            Outgoing::Sample(g) => g.sample.index,
        }
    }
}

/// A ledger record waiting for its call's settlement.
struct Unsettled {
    call: GemmCall,
    /// `Some(rejected)` once settled.
    settled: Option<bool>,
    /// The call is sampled: written unsettled at exit, it gets a gap.
    sampled: bool,
}

/// The background thread's state.
pub struct Worker {
    rx: Receiver<Msg>,
    sink: Sink,
    pending: VecDeque<Box<dyn Pending>>,
    /// Ledger records not written yet, by index from `base` (the front waits for its
    /// call's settlement; `None`: the record has not arrived yet).
    unsettled: VecDeque<Option<Unsettled>>,
    /// The index of the first ledger record not written yet.
    base: u64,
    /// Sample and gap records of calls whose ledger record is not written yet.
    held: Vec<Outgoing>,
    shared: Arc<Shared>,
    disable: DisableFn,
    tick: Duration,
    idle_tick: Duration,
    /// Ledger records that came over the channel because their thread's queue was full.
    by_channel: u64,
    /// Calls whose ledger record was written before they were settled (see
    /// [`MAX_WAITING`]), and whether each is sampled; at most [`MAX_EARLY`].
    early: std::collections::BTreeMap<u64, bool>,
    /// Since when the record at the front (the index) has been absent while records
    /// were due to be written early.
    absent_since: Option<(u64, Instant)>,
    /// At exit: sampled calls that returned whose sample or gap had not arrived when
    /// their records were taken.
    owed_at_exit: Vec<u64>,
    /// At exit: calls whose sample or gap arrived during the exit.
    exit_answered: std::collections::HashSet<u64>,
    /// The exit has begun.
    exiting: bool,
}

/// How long a record absent at the front may keep [`MAX_WAITING`] from applying.
const MISSING_AFTER: Duration = Duration::from_secs(1);

/// Ledger records that may wait behind a call still inside the library. Past it, the
/// front record is written as made (the call went in; a rejection that comes later is
/// a notice, and a gap when the call was sampled), or, if it has not arrived for
/// [`MISSING_AFTER`], counted missing, so that a call stuck in the library (or a thread
/// that died between taking an index and handing its record over) bounds what the
/// thread holds. A record is
/// about 240 bytes: at most about 4 MiB, plus the samples of the calls in the window.
pub const MAX_WAITING: usize = 16_384;
/// Calls written early whose settlement is still awaited (more are not followed).
const MAX_EARLY: usize = 4096;

impl Worker {
    /// A worker reading `rx` and writing into `sink`.
    pub fn new(rx: Receiver<Msg>, sink: Sink, shared: Arc<Shared>, disable: DisableFn) -> Self {
        Worker {
            rx,
            sink,
            pending: VecDeque::new(),
            unsettled: VecDeque::new(),
            base: 0,
            held: Vec::new(),
            shared,
            disable,
            tick: Duration::from_millis(1),
            idle_tick: Duration::from_millis(5),
            by_channel: 0,
            early: std::collections::BTreeMap::new(),
            absent_since: None,
            owed_at_exit: Vec::new(),
            exit_answered: std::collections::HashSet::new(),
            exiting: false,
        }
    }

    /// The thread's main loop; returns after a shutdown (or when every sender is gone).
    ///
    /// The thread never parks on the channel: it drains it and the queues, works, then
    /// sleeps for a tick. A parked receiver would make every hook's send a futex
    /// wake-up (a system call on the application's thread); a sleeping one costs the
    /// hooks nothing, except the one hook in 2048 calls of a busy thread that finds its
    /// queue half full and wakes it early.
    pub fn run(mut self) {
        self.shared.queues.set_consumer();
        loop {
            let mut handled = 0;
            loop {
                match self.rx.try_recv() {
                    Ok(Msg::Shutdown {
                        deadline,
                        notices,
                        done,
                    }) => {
                        self.shutdown(deadline, notices);
                        let _ = done.send(());
                        return;
                    }
                    Ok(Msg::Flush(ack)) => {
                        self.take_queued(false);
                        self.poll_pending();
                        self.pump(true);
                        let _ = ack.send(());
                    }
                    Ok(other) => self.handle(other),
                    Err(crossbeam_channel::TryRecvError::Empty) => break,
                    Err(crossbeam_channel::TryRecvError::Disconnected) => {
                        self.shutdown(Instant::now() + Duration::from_secs(1), Vec::new());
                        return;
                    }
                }
                handled += 1;
                if handled >= 65_536 {
                    break;
                }
            }
            handled += self.take_queued(false);
            self.poll_pending();
            self.pump(false);
            let busy = handled > 0 || !self.pending.is_empty() || self.sink.busy();
            // A hook whose queue is half full wakes it early.
            std::thread::park_timeout(if busy { self.tick } else { self.idle_tick });
        }
    }

    fn handle(&mut self, msg: Msg) {
        if self.exiting {
            match &msg {
                Msg::Sample(p) => {
                    self.exit_answered.insert(p.index());
                }
                Msg::Gap { index, .. } => {
                    self.exit_answered.insert(*index);
                }
                _ => {}
            }
        }
        match msg {
            Msg::Ledger { call, sampled } => {
                self.by_channel += 1;
                self.insert(call, None, sampled)
            }
            Msg::Ledgers(calls) => {
                for call in calls.iter() {
                    self.insert(call.clone(), None, false);
                }
            }
            Msg::Sampled(indices) => {
                for index in indices {
                    self.mark_sampled(index);
                }
            }
            Msg::Settle { index, rejected } => self.settle(index, rejected),
            Msg::SettleRange {
                first,
                count,
                rejected,
            } => {
                for index in first..first.saturating_add(count) {
                    self.mark_settled(index, rejected);
                }
                self.release(false);
            }
            Msg::Gap {
                index,
                reason,
                detail,
            } => {
                self.shared.inflight.fetch_sub(1, Ordering::AcqRel);
                self.push_call_record(Outgoing::Gap(Gap {
                    indices: vec![index],
                    reason,
                    detail,
                }))
            }
            Msg::Sample(p) => self.pending.push_back(p),
            Msg::Notice(n) => self.push(Record::Notice(n)),
            Msg::Flush(_) | Msg::Shutdown { .. } => {}
        }
    }

    fn push(&mut self, record: Record) {
        if let Some(reason) = self.sink.push(record) {
            (self.disable)(reason);
        }
    }

    /// Writes the ledger record of `call` (with REJECTED when the library answered with
    /// an error).
    fn push_ledger(&mut self, call: &GemmCall, rejected: bool) {
        let extra = if rejected { flags::REJECTED } else { 0 };
        if let Some(reason) = self.sink.push_ledger(call, extra) {
            (self.disable)(reason);
        }
    }

    /// Takes the records the hooks' queues hold (with `all`, at exit, also those of
    /// calls still in the library) and writes what can go; how many it took.
    fn take_queued(&mut self, all: bool) -> usize {
        let mut taken = self.drain_queues(all);
        if taken > 0 {
            self.release(false);
        }
        if !all && self.unsettled.len() > MAX_WAITING {
            // Records are about to be written early: those still made (and those
            // behind them in their queues) are taken first, so that none of them is
            // counted missing.
            taken += self.drain_queues(true);
            self.release_with(false, true);
        }
        taken
    }

    /// Takes what the queues hold (see [`Queues::drain`]) into the reorder buffer, or
    /// writes it at once when it is the next record; how many records it took.
    fn drain_queues(&mut self, all: bool) -> usize {
        let queues = Arc::clone(&self.shared);
        let mut taken = 0;
        queues.queues.drain(all, |call, state| {
            taken += 1;
            let settled = match state {
                handoff::DONE | handoff::DONE_SAMPLED => Some(false),
                handoff::REJECTED => Some(true),
                _ => None,
            };
            if self.exiting && state == handoff::DONE_SAMPLED && !self.answered(call.index) {
                // At exit: a sampled call that returned, its sample or gap not here yet.
                self.owed_at_exit.push(call.index);
            }
            match settled {
                // The next record to write, settled, nothing before it waiting: written
                // straight from the queue's slot (the common case).
                Some(rejected) if call.index == self.base && self.unsettled.is_empty() => {
                    self.base += 1;
                    self.push_ledger(call, rejected);
                }
                _ => self.insert(call.clone(), settled, state == handoff::MADE_SAMPLED),
            }
        });
        taken
    }

    /// Puts a ledger record in its place among those not written yet.
    fn insert(&mut self, call: GemmCall, settled: Option<bool>, sampled: bool) {
        let Some(at) = call
            .index
            .checked_sub(self.base)
            .and_then(|at| usize::try_from(at).ok())
        else {
            if let Some(rejected) = settled {
                self.settled_late(call.index, rejected);
            }
            log::emit(
                Level::Debug,
                &format!("ledger record {} arrived twice", call.index),
            );
            return;
        };
        if at >= self.unsettled.len() {
            self.unsettled.resize_with(at + 1, || None);
        }
        match &mut self.unsettled[at] {
            Some(u) => {
                // At exit a record still in the library is taken as made; keep it.
                if u.settled.is_none() {
                    u.settled = settled;
                }
            }
            slot => {
                *slot = Some(Unsettled {
                    call,
                    settled,
                    sampled,
                })
            }
        }
    }

    /// A sample or gap record: written now if its call's ledger record was, else held.
    fn push_call_record(&mut self, record: Outgoing) {
        if record.index() >= self.base {
            self.held.push(record);
        } else {
            self.send_out(record);
        }
    }

    fn send_out(&mut self, record: Outgoing) {
        let disable = match record {
            Outgoing::Gap(g) => self.sink.push(Record::Gap(g)),
            Outgoing::Sample(g) => self.sink.push_sample(*g),
        };
        if let Some(reason) = disable {
            (self.disable)(reason);
        }
    }

    /// Settles the ledger record of `index` and writes every record that can go.
    fn settle(&mut self, index: u64, rejected: bool) {
        self.mark_settled(index, rejected);
        self.release(false);
    }

    /// Whether call `index`'s sample or gap is here: being gathered, held for its
    /// ledger record, or (at exit) arrived during the exit.
    fn answered(&self, index: u64) -> bool {
        self.pending.iter().any(|p| p.index() == index)
            || self.held.iter().any(|r| r.index() == index)
            || self.exit_answered.contains(&index)
    }

    /// The record of call `index` waiting in the reorder buffer, if it is there.
    fn waiting_mut(&mut self, index: u64) -> Option<&mut Unsettled> {
        let at = usize::try_from(index.checked_sub(self.base)?).ok()?;
        self.unsettled
            .get_mut(at)?
            .as_mut()
            .filter(|u| u.call.index == index)
    }

    /// Notes that a sample or a gap is due for call `index` (see [`Msg::Sampled`]).
    fn mark_sampled(&mut self, index: u64) {
        if let Some(sampled) = self.early.get_mut(&index) {
            *sampled = true;
        }
        if let Some(u) = self.waiting_mut(index) {
            u.sampled = true;
        }
    }

    fn mark_settled(&mut self, index: u64, rejected: bool) {
        if index < self.base {
            self.settled_late(index, rejected);
            return;
        }
        let owed = self.exiting && !rejected && !self.answered(index);
        let Some(u) = self.waiting_mut(index) else {
            return;
        };
        u.settled = Some(rejected);
        if owed && u.sampled {
            // At exit, as for a queue slot settled DONE_SAMPLED (see drain_queues).
            self.owed_at_exit.push(index);
        }
    }

    /// True once the record at the front (absent) has been absent for
    /// [`MISSING_AFTER`]; starts the clock the first time it is asked about it.
    fn absent_too_long(&mut self) -> bool {
        let now = Instant::now();
        match self.absent_since {
            Some((index, since)) if index == self.base => {
                now.duration_since(since) >= MISSING_AFTER
            }
            _ => {
                self.absent_since = Some((self.base, now));
                false
            }
        }
    }

    /// The settlement of a call whose ledger record was written before it (as made).
    fn settled_late(&mut self, index: u64, rejected: bool) {
        let Some(sampled) = self.early.remove(&index) else {
            return;
        };
        if !rejected {
            return;
        }
        self.push(Record::Notice(notice(
            NoticeKind::Warning,
            format!(
                "call {index} was rejected by the library after its ledger record was written without REJECTED ({MAX_WAITING} later calls were waiting behind it)"
            ),
        )));
        if sampled {
            // A rejected call's gather is dropped: its sample will never come.
            self.push(sink::gap(
                index,
                GapReason::Internal,
                "the call was rejected after its ledger record was written",
            ));
        }
    }

    /// Writes the settled ledger records at the front (with `all`, every one: at exit,
    /// a call still in the library is recorded as made; without, the front is written
    /// as made when more than [`MAX_WAITING`] records wait behind it), then the held
    /// records whose ledger record is written.
    fn release(&mut self, all: bool) {
        self.release_with(all, false);
    }

    /// [`Worker::release`]; with `early`, also writes the front as made while more than
    /// [`MAX_WAITING`] records wait (only after every queue was taken with its made
    /// records, see [`Worker::take_queued`]).
    fn release_with(&mut self, all: bool, early: bool) {
        let mut missing = Vec::new();
        while let Some(front) = self.unsettled.front() {
            let forced = early && self.unsettled.len() > MAX_WAITING;
            let ready = match front {
                Some(u) => u.settled.is_some() || all || forced,
                // A record not here yet may be on its way (over the channel, or its
                // thread was descheduled between taking the index and handing it
                // over): it counts as missing only once absent for MISSING_AFTER.
                None => all || (forced && self.absent_too_long()),
            };
            if !ready {
                break;
            }
            let Some(front) = self.unsettled.pop_front() else {
                break;
            };
            self.base += 1;
            let Some(u) = front else {
                missing.push(self.base - 1);
                continue;
            };
            self.push_ledger(&u.call, u.settled == Some(true));
            if u.settled.is_none() && !all {
                if self.early.len() < MAX_EARLY {
                    self.early.insert(u.call.index, u.sampled);
                }
                log::once(
                    Level::Warn,
                    "stuck call",
                    &format!(
                        "call {} stayed inside the library while {MAX_WAITING} later calls were made: its ledger record is written as made",
                        u.call.index
                    ),
                );
            } else if u.settled.is_none() && u.sampled {
                // At exit, a sampled call still inside the library: its sample will
                // never come.
                self.push(inside_at_exit(u.call.index));
            }
        }
        if !missing.is_empty() {
            // At exit, or behind MAX_WAITING later records: a thread took these
            // indices and had not handed over their records (it was between the two, or
            // died there). One that arrives later is dropped.
            self.push(Record::Notice(notice(
                NoticeKind::Warning,
                format!(
                    "{} ledger records never arrived (calls {}..={} among them): a thread took their indices and did not hand them over in time",
                    missing.len(),
                    missing.first().copied().unwrap_or(0),
                    missing.last().copied().unwrap_or(0),
                ),
            )));
        }
        if self.held.is_empty() {
            return;
        }
        let held = std::mem::take(&mut self.held);
        for r in held {
            self.push_call_record(r);
        }
    }

    fn pump(&mut self, force: bool) {
        if let Err(e) = self.sink.pump(Instant::now(), force) {
            (self.disable)(e);
        }
    }

    /// Resolves every pending gather that completed, in any order.
    fn poll_pending(&mut self) {
        let mut i = 0;
        while i < self.pending.len() {
            let done = match self.pending.get_mut(i) {
                Some(p) => p.poll(),
                None => break,
            };
            match done {
                None => i += 1,
                Some(result) => {
                    let index = self.pending.get(i).map(|p| p.index()).unwrap_or(0);
                    self.pending.remove(i);
                    self.shared.inflight.fetch_sub(1, Ordering::AcqRel);
                    let record = match result {
                        Resolved::Sample(gathered) => Outgoing::Sample(gathered),
                        Resolved::Gap(reason, detail) => Outgoing::Gap(Gap {
                            indices: vec![index],
                            reason,
                            detail,
                        }),
                        Resolved::Released => continue,
                    };
                    self.push_call_record(record);
                }
            }
        }
    }

    /// At exit: handles every message waiting (a hook that was still inside the library
    /// when the exit began sends its settlement, sample or gap late).
    fn take_messages_at_exit(&mut self) {
        while let Ok(msg) = self.rx.try_recv() {
            match msg {
                Msg::Flush(ack) => {
                    let _ = ack.send(());
                }
                Msg::Shutdown { done, .. } => {
                    let _ = done.send(());
                }
                other => self.handle(other),
            }
        }
    }

    fn shutdown(&mut self, deadline: Instant, notices: Vec<Notice>) {
        self.exiting = true;
        // Leave a quarter of the budget (at most a second) for delivery.
        let now = Instant::now();
        let budget = deadline.saturating_duration_since(now);
        let wait_until = now + budget - (budget / 4).min(Duration::from_secs(1));
        loop {
            self.take_messages_at_exit();
            self.take_queued(false);
            self.poll_pending();
            self.pump(false);
            if self.pending.is_empty() || Instant::now() >= wait_until {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        // A call still inside the library is recorded as made (a sampled one with a gap).
        self.take_messages_at_exit();
        self.take_queued(true);
        self.release(true);
        // A sampled call that returned during the exit sends its sample or gap right
        // after its settlement; one that has not come by now gets a gap (what comes
        // later is not read: one gap, never two).
        let mut owed = std::mem::take(&mut self.owed_at_exit);
        // A record taken again (behind an unsettled one in its queue) is owed once.
        owed.sort_unstable();
        owed.dedup();
        for index in owed {
            if !self.answered(index) {
                self.push(sink::gap(
                    index,
                    GapReason::GatherFailed,
                    "process exit: the call returned as the exit ended, before its sample was handed over",
                ));
            }
        }
        for (index, sampled) in std::mem::take(&mut self.early) {
            // Written early and never settled: still inside the library.
            if sampled && !self.answered(index) {
                self.push(inside_at_exit(index));
            }
        }
        let abandoned: Vec<u64> = self
            .pending
            .drain(..)
            .filter(|p| !p.discards())
            .map(|p| p.index())
            .collect();
        for index in abandoned {
            self.shared.inflight.fetch_sub(1, Ordering::AcqRel);
            self.push(sink::gap(
                index,
                GapReason::GatherFailed,
                "process exit: the gather had not completed within MMAUDIT_EXIT_TIMEOUT_MS",
            ));
        }
        for n in notices {
            self.push(Record::Notice(n));
        }
        match self.sink.finish(deadline) {
            Ok(summary) => log::emit(Level::Info, &summary),
            Err(e) => log::emit(Level::Warn, &e),
        }
        let calls = self.sink.totals().calls;
        let cpu = thread_cpu_ns();
        log::emit(
            Level::Info,
            &format!(
                "background thread: {:.1} ms CPU, {} ns per ledger record ({calls} records, {} of them handed over the channel: their thread's queue was full)",
                cpu as f64 / 1e6,
                cpu.checked_div(calls).unwrap_or(0),
                self.by_channel
            ),
        );
    }
}

/// The gap of a sampled call that was still inside the library at exit.
fn inside_at_exit(index: u64) -> Record {
    sink::gap(
        index,
        GapReason::GatherFailed,
        "process exit: the call was still inside the library",
    )
}

/// CPU time the calling thread has used, in nanoseconds (0 if the clock cannot be read).
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write into; the clock id is a constant.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// A notice record.
pub fn notice(kind: NoticeKind, message: impl Into<String>) -> Notice {
    Notice {
        kind,
        message: message.into(),
    }
}

#[cfg(test)]
mod tests;

//! The background thread: everything between the hooks and the verifier.
//!
//! Hooks send [`Msg`]s over an unbounded crossbeam channel (sending never blocks and
//! never fails while the thread lives): a ledger record for every call, a gap for a
//! sampled call that could not be gathered, and a [`Pending`] sample for each gather in
//! flight. The thread polls pending gathers without blocking (`cuEventQuery`), turns
//! completed ones into sample records, and hands every record to the [`sink::Sink`],
//! which batches them into zstd-compressed, MAC-chained frames and writes them to a file
//! or a TCP connection. The application's threads never wait for any of it.
//!
//! What it must never do: drop a record silently, or block a hook. What the sink cannot
//! take becomes a gap record or, for ledger records, an audit-disabled notice.

pub mod sink;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mmaudit_protocol::call::GemmCall;
use mmaudit_protocol::record::{Gap, GapReason, Notice, NoticeKind, Record, Sample};

use crate::log::{self, Level};
use sink::Sink;

/// A sampled call whose gather is in flight on the device.
pub trait Pending: Send {
    /// The call index.
    fn index(&self) -> u64;
    /// Checks (without blocking) whether the gather completed: `None` while it runs,
    /// then the sample, or why there is none.
    fn poll(&mut self) -> Option<Result<Sample, (GapReason, String)>>;
}

/// What the hooks send to the background thread.
pub enum Msg {
    /// The ledger record of one call (sent in index order).
    Ledger(GemmCall),
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

/// Counters shared with the hooks.
#[derive(Debug, Default)]
pub struct Shared {
    /// Samples handed to the thread and not resolved yet (bounds the queue).
    pub inflight: AtomicUsize,
}

/// What the thread reports to the lifecycle when the sink can no longer take the
/// ledger: auditing must stop.
pub type DisableFn = Box<dyn Fn(String) + Send>;

/// The background thread's state.
pub struct Worker {
    rx: Receiver<Msg>,
    sink: Sink,
    pending: VecDeque<Box<dyn Pending>>,
    shared: Arc<Shared>,
    disable: DisableFn,
    tick: Duration,
    idle_tick: Duration,
}

impl Worker {
    /// A worker reading `rx` and writing into `sink`.
    pub fn new(rx: Receiver<Msg>, sink: Sink, shared: Arc<Shared>, disable: DisableFn) -> Self {
        Worker {
            rx,
            sink,
            pending: VecDeque::new(),
            shared,
            disable,
            tick: Duration::from_millis(1),
            idle_tick: Duration::from_millis(5),
        }
    }

    /// The thread's main loop; returns after a shutdown (or when every sender is gone).
    ///
    /// The thread never parks on the channel: it drains it, works, then sleeps for a
    /// tick. A parked receiver would make every hook's send a futex wake-up (a system
    /// call on the application's thread); a sleeping one costs the hooks nothing.
    pub fn run(mut self) {
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
            self.poll_pending();
            self.pump(false);
            let busy = handled > 0 || !self.pending.is_empty() || self.sink.busy();
            std::thread::sleep(if busy { self.tick } else { self.idle_tick });
        }
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Ledger(call) => self.push(Record::Ledger(call)),
            Msg::Gap {
                index,
                reason,
                detail,
            } => {
                self.shared.inflight.fetch_sub(1, Ordering::AcqRel);
                self.push(Record::Gap(Gap {
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
                        Ok(sample) => Record::Sample(sample),
                        Err((reason, detail)) => Record::Gap(Gap {
                            indices: vec![index],
                            reason,
                            detail,
                        }),
                    };
                    self.push(record);
                }
            }
        }
    }

    fn shutdown(&mut self, deadline: Instant, notices: Vec<Notice>) {
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
        // Leave a quarter of the budget (at most a second) for delivery.
        let now = Instant::now();
        let budget = deadline.saturating_duration_since(now);
        let wait_until = now + budget - (budget / 4).min(Duration::from_secs(1));
        loop {
            self.poll_pending();
            self.pump(false);
            if self.pending.is_empty() || Instant::now() >= wait_until {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        let abandoned: Vec<u64> = self.pending.drain(..).map(|p| p.index()).collect();
        for index in abandoned {
            self.shared.inflight.fetch_sub(1, Ordering::AcqRel);
            self.push(Record::Gap(Gap {
                indices: vec![index],
                reason: GapReason::GatherFailed,
                detail: "process exit: the gather had not completed within MMAUDIT_EXIT_TIMEOUT_MS"
                    .into(),
            }));
        }
        for n in notices {
            self.push(Record::Notice(n));
        }
        match self.sink.finish(deadline) {
            Ok(summary) => log::emit(Level::Info, &summary),
            Err(e) => log::emit(Level::Warn, &e),
        }
    }
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

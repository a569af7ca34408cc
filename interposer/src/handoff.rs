//! Per-thread ledger queues: how a hook hands its call's ledger record to the
//! background thread without a lock, an allocation or a wake-up.
//!
//! Each application thread that makes a hooked call gets one [`Queue`] (allocated at
//! its first call and registered with the background thread). A queue is a
//! single-producer, single-consumer ring of ledger records. The hook writes its call's
//! record into the next slot before forwarding the call (the slot then reads
//! [`MADE`]) and stores the library's answer into the same slot after it ([`DONE`] or
//! [`REJECTED`]): one cache line written by the calling thread, no message. The
//! background thread drains every queue in bulk on each of its ticks, taking the
//! settled records at the front of each ring; it merges them by call index, so the
//! order in which threads took their indices is kept however the rings are drained.
//!
//! A full ring (the background thread behind by a whole ring) makes the hook fall back
//! to the channel (one message per record and settlement, as before): nothing waits and
//! nothing is lost. A thread's queue outlives the thread until the background thread
//! has drained it.

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use mmaudit_protocol::call::GemmCall;

/// The slot holds nothing the consumer may read.
const EMPTY: u8 = 0;
/// The call was made (its record is written), the library has not answered yet.
pub const MADE: u8 = 1;
/// [`MADE`], and the call is sampled: a record still made at exit gets a gap.
pub const MADE_SAMPLED: u8 = 4;
/// [`DONE`], and the call is sampled: its sample or gap follows over the channel.
pub const DONE_SAMPLED: u8 = 5;
/// The library answered with success.
pub const DONE: u8 = 2;
/// The library answered with an error status.
pub const REJECTED: u8 = 3;

/// The slot's call is made and not answered yet.
pub fn is_made(state: u8) -> bool {
    state == MADE || state == MADE_SAMPLED
}

/// Slots per thread: at about 230 bytes a slot, 0.9 MiB per thread that makes hooked
/// calls. The background thread drains every tick (1 to 5 ms) and is woken early when
/// a ring is half full ([`WAKE_AT`]), so a thread falls back to the channel only when it
/// makes 2048 more calls before the background thread gets to it. A wake-up is a
/// system call on the calling thread (several microseconds in a virtual machine), paid
/// once per 2048 calls of a busy thread: with 1024 slots woken at a quarter full it was
/// a measured 50 ns per call (docs/PERFORMANCE.md).
pub const SLOTS: usize = 4096;
/// Records in a ring at which its producer wakes the consumer (once per drain).
pub const WAKE_AT: u64 = SLOTS as u64 / 2;

struct Slot {
    state: AtomicU8,
    call: UnsafeCell<MaybeUninit<GemmCall>>,
}

/// A value on a cache line of its own.
#[repr(align(64))]
struct Line<T>(T);

/// The producer's own view (only the producing thread touches it).
struct Producer {
    /// Next slot the producer writes (read by the consumer).
    tail: AtomicU64,
    /// `head` as last read: it is read again only when the ring looks half full, so
    /// that a push does not miss the cache on a line the consumer writes.
    head_seen: AtomicU64,
    /// The `head_seen` at which the consumer was last woken.
    woken_at: AtomicU64,
}

/// One thread's ring of ledger records.
pub struct Queue {
    slots: Box<[Slot]>,
    /// Next slot the consumer reads (written by the consumer only).
    head: Line<AtomicU64>,
    producer: Line<Producer>,
    /// The producing thread has exited: once drained, the queue can go.
    gone: AtomicBool,
}

// A slot's record is overwritten without being dropped (and read by reference).
const _: () = assert!(!std::mem::needs_drop::<GemmCall>());

// SAFETY: a slot's call is written only by the producer while the slot is outside
// head..tail (the consumer does not read it), published by the Release store of
// `tail`, and read by the consumer only after an Acquire load of `tail` and of the
// slot's state; the producer reuses a slot only after an Acquire load of `head` shows
// the consumer has moved past it. GemmCall is plain data (Send).
unsafe impl Sync for Queue {}
// SAFETY: as above; the queue owns plain data.
unsafe impl Send for Queue {}

impl Queue {
    fn new() -> Queue {
        Queue {
            slots: (0..SLOTS)
                .map(|_| Slot {
                    state: AtomicU8::new(EMPTY),
                    call: UnsafeCell::new(MaybeUninit::uninit()),
                })
                .collect(),
            head: Line(AtomicU64::new(0)),
            producer: Line(Producer {
                tail: AtomicU64::new(0),
                head_seen: AtomicU64::new(0),
                woken_at: AtomicU64::new(u64::MAX),
            }),
            gone: AtomicBool::new(false),
        }
    }

    fn slot(&self, pos: u64) -> &Slot {
        &self.slots[(pos % SLOTS as u64) as usize]
    }

    /// Producer: writes `call` as made; its position and whether the consumer should
    /// be woken (the ring is half full and it was not woken since it last drained), or
    /// `None` when the ring is full.
    fn push(&self, call: &GemmCall, sampled: bool) -> Option<(u64, bool)> {
        let p = &self.producer.0;
        let tail = p.tail.load(Ordering::Relaxed);
        let mut head = p.head_seen.load(Ordering::Relaxed);
        let mut wake = false;
        if tail - head >= WAKE_AT {
            head = self.head.0.load(Ordering::Acquire);
            p.head_seen.store(head, Ordering::Relaxed);
            if tail - head >= SLOTS as u64 {
                return None;
            }
            if tail - head >= WAKE_AT && p.woken_at.load(Ordering::Relaxed) != head {
                p.woken_at.store(head, Ordering::Relaxed);
                wake = true;
            }
        }
        let slot = self.slot(tail);
        // SAFETY: the slot is outside head..tail, so only this (the producing) thread
        // touches its call; a record left there was read by the consumer already
        // (GemmCall has no drop glue to run).
        unsafe { (*slot.call.get()).write(call.clone()) };
        slot.state
            .store(if sampled { MADE_SAMPLED } else { MADE }, Ordering::Relaxed);
        p.tail.store(tail + 1, Ordering::Release);
        Some((tail, wake))
    }

    /// Producer: the library answered the call at `pos`.
    fn settle(&self, pos: u64, rejected: bool) {
        let state = &self.slot(pos).state;
        // The producer's own store: it still reads MADE or MADE_SAMPLED.
        let sampled = state.load(Ordering::Relaxed) == MADE_SAMPLED;
        let settled = match (rejected, sampled) {
            (true, _) => REJECTED,
            (false, true) => DONE_SAMPLED,
            (false, false) => DONE,
        };
        state.store(settled, Ordering::Release);
    }

    /// Consumer: hands every settled record at the front to `take` (with `true` for a
    /// rejected call) and frees its slot. With `all` (at exit), records still made
    /// are handed over as [`MADE`] or [`MADE_SAMPLED`] too, without freeing their slots
    /// (their threads may still settle them).
    pub fn drain(&self, all: bool, mut take: impl FnMut(&GemmCall, u8)) {
        let mut head = self.head.0.load(Ordering::Relaxed);
        let tail = self.producer.0.tail.load(Ordering::Acquire);
        let mut pos = head;
        while pos < tail {
            let slot = self.slot(pos);
            let state = slot.state.load(Ordering::Acquire);
            if is_made(state) && !all {
                break;
            }
            // SAFETY: pos is in head..tail: the producer published this record (the
            // Acquire loads above) and will not touch its call until head passes it.
            take(unsafe { (*slot.call.get()).assume_init_ref() }, state);
            if !is_made(state) && head == pos {
                head += 1;
            }
            pos += 1;
        }
        self.head.0.store(head, Ordering::Release);
    }

    /// Consumer: the thread is gone and everything it made was drained.
    pub fn finished(&self) -> bool {
        self.gone.load(Ordering::Acquire)
            && self.head.0.load(Ordering::Relaxed) == self.producer.0.tail.load(Ordering::Acquire)
    }
}

/// The queues of every thread that made a hooked call, for the background thread.
#[derive(Default)]
pub struct Queues {
    all: Mutex<Vec<Arc<Queue>>>,
    /// Distinguishes this set from another (tests make several).
    id: OnceId,
    /// The consumer's thread, woken when a ring becomes half full (once per
    /// drain at most; it otherwise sleeps for its tick).
    consumer: std::sync::OnceLock<std::thread::Thread>,
}

/// A process-unique number, taken at construction.
struct OnceId(u64);

impl Default for OnceId {
    fn default() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        OnceId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl std::fmt::Debug for Queues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Queues({} threads)", self.len())
    }
}

/// Where a hook's ledger record went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handed {
    /// Into its thread's queue: settled there.
    Queue(Ticket),
    /// Over the channel (its queue was full): settled by a message.
    Channel,
}

impl Queues {
    /// Consumer: names the calling thread as the one to wake when a ring fills up.
    pub fn set_consumer(&self) {
        let _ = self.consumer.set(std::thread::current());
    }

    /// Consumer: drains every queue (see [`Queue::drain`]) and forgets the queues of
    /// threads that are gone and drained.
    pub fn drain(&self, all: bool, mut take: impl FnMut(&GemmCall, u8)) {
        let mut queues = self.all.lock().unwrap_or_else(|e| e.into_inner());
        for q in queues.iter() {
            q.drain(all, &mut take);
        }
        queues.retain(|q| !q.finished());
    }

    /// How many threads' queues are registered.
    pub fn len(&self) -> usize {
        self.all.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True when no thread registered a queue.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Producer: writes `call` into the calling thread's queue (registering one at the
    /// thread's first call). `None` when the ring is full or the thread is exiting:
    /// the caller then uses the channel.
    pub fn push(&self, call: &GemmCall, sampled: bool) -> Option<Ticket> {
        MINE.try_with(|mine| {
            // SAFETY: the cell is this thread's; no reference into it outlives this
            // closure and nothing called here re-enters it.
            let mine = unsafe { &mut *mine.get() };
            let q = match mine {
                Some(m) if m.set == self.id.0 => &m.queue,
                _ => {
                    let queue = Arc::new(Queue::new());
                    self.all
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(Arc::clone(&queue));
                    // A thread that served another set before (tests) leaves that
                    // queue to its consumer.
                    &mine
                        .insert(Mine {
                            set: self.id.0,
                            queue,
                        })
                        .queue
                }
            };
            let (pos, wake) = q.push(call, sampled)?;
            if wake {
                if let Some(t) = self.consumer.get() {
                    t.unpark();
                }
            }
            Some(Ticket {
                set: self.id.0,
                pos,
            })
        })
        .ok()
        .flatten()
    }

    /// Producer: the library answered the call `ticket` was given for (on the thread
    /// that pushed it).
    pub fn settle(&self, ticket: Ticket, rejected: bool) {
        let _ = MINE.try_with(|mine| {
            // SAFETY: as in `push`.
            if let Some(m) = unsafe { &*mine.get() } {
                if m.set == ticket.set {
                    m.queue.settle(ticket.pos, rejected);
                }
            }
        });
    }
}

/// Where a hook's ledger record went: a slot of its thread's queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    set: u64,
    pos: u64,
}

/// This thread's queue and the set it belongs to.
struct Mine {
    set: u64,
    queue: Arc<Queue>,
}

impl Drop for Mine {
    fn drop(&mut self) {
        self.queue.gone.store(true, Ordering::Release);
    }
}

thread_local! {
    static MINE: UnsafeCell<Option<Mine>> = const { UnsafeCell::new(None) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(index: u64) -> GemmCall {
        let mut c = crate::session::tests::call();
        c.index = index;
        c
    }

    fn drained(q: &Queues, all: bool) -> Vec<(u64, u8)> {
        let mut out = Vec::new();
        q.drain(all, |c, s| out.push((c.index, s)));
        out
    }

    #[test]
    fn records_wait_for_their_settlement_and_leave_in_order() {
        let q = Queues::default();
        let t: Vec<Ticket> = (0..4).map(|i| q.push(&call(i), false).unwrap()).collect();
        assert_eq!(drained(&q, false), vec![]);
        q.settle(t[1], true);
        q.settle(t[2], false);
        assert_eq!(drained(&q, false), vec![], "0 is still in the library");
        q.settle(t[0], false);
        assert_eq!(
            drained(&q, false),
            vec![(0, DONE), (1, REJECTED), (2, DONE)]
        );

        // At exit, a call still in the library is handed over as made (sampled or not).
        q.push(&call(4), false).map(|t| q.settle(t, false)).unwrap();
        let sampled = q.push(&call(5), true).unwrap();
        assert_eq!(
            drained(&q, true),
            vec![(3, MADE), (4, DONE), (5, MADE_SAMPLED)]
        );
        q.settle(sampled, true);
        q.settle(t[3], false);
    }

    #[test]
    fn a_sampled_calls_settlement_keeps_the_mark_unless_rejected() {
        let q = Queues::default();
        for (sampled, rejected, state) in [
            (true, false, DONE_SAMPLED),
            (true, true, REJECTED),
            (false, false, DONE),
        ] {
            let t = q.push(&call(9), sampled).unwrap();
            q.settle(t, rejected);
            assert_eq!(drained(&q, false), vec![(9, state)]);
        }
    }

    #[test]
    fn a_full_ring_refuses_and_frees_as_it_drains() {
        let q = Queues::default();
        for i in 0..SLOTS as u64 {
            let t = q.push(&call(i), false).unwrap();
            q.settle(t, false);
        }
        assert!(q.push(&call(SLOTS as u64), false).is_none(), "full");
        assert_eq!(drained(&q, false).len(), SLOTS);
        for i in 0..3 * SLOTS as u64 {
            let t = q.push(&call(i), false).unwrap();
            q.settle(t, false);
            if i % 100 == 99 {
                assert_eq!(drained(&q, false).len(), 100);
            }
        }
    }

    #[test]
    fn threads_each_get_a_queue_and_exited_ones_are_forgotten_once_drained() {
        let q = Queues::default();
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let q = &q;
                s.spawn(move || {
                    for i in 0..1000 {
                        let index = t * 1000 + i;
                        loop {
                            if let Some(ticket) = q.push(&call(index), false) {
                                q.settle(ticket, index.is_multiple_of(7));
                                break;
                            }
                            std::thread::yield_now();
                        }
                    }
                });
            }
            // Drain while they run.
            let mut seen = Vec::new();
            while seen.len() < 4000 {
                q.drain(false, |c, s| seen.push((c.index, s)));
            }
            seen.sort();
            let want: Vec<(u64, u8)> = (0..4000)
                .map(|i: u64| (i, if i.is_multiple_of(7) { REJECTED } else { DONE }))
                .collect();
            assert_eq!(seen, want);
        });
        // The threads exited: their drained queues go once their thread-local
        // destructors have run (a scope may end before they do).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            assert_eq!(drained(&q, false), vec![]);
            if q.is_empty() {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{q:?} left");
            std::thread::yield_now();
        }
    }
}

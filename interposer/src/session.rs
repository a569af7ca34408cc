//! The ledger's index counter and the verifier session in force, behind one lock.
//!
//! A call's sampling decision needs the nonce and sampling configuration of the stream
//! its ledger record will be written in. A file sink has one session from the start
//! (the prover's own nonce, the rates of `MMAUDIT_CALL_RATE` etc.). A TCP sink has a
//! session only while it is connected to a verifier that sent its hello (whose nonce
//! and sampling configuration it must use), and a new one on every new connection; calls made while
//! there is none are ledgered with the NO_SESSION flag and not sampled.
//!
//! Hooks take their index and the session in force from one atomic word (see
//! [`Ledger`]), so sessions follow each other in index order: session `E` holds exactly
//! the calls from its [`Session::first_index`] until the next session begins. The sink
//! relies on that to tell, from an index alone, whether a queued record belongs to the
//! session of the stream segment it writes. A hook takes the lock only at its thread's
//! first call after a session began or ended; it is held for a few instructions.
//! Nothing here panics.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use mmaudit_protocol::call::{flags, GemmCall};
use mmaudit_protocol::schedule::{Schedule, ScheduleVersion, SELECT_BLOCK};

use crate::model::gather::Pick;

/// One verifier session: the schedule of its nonce and sampling configuration (a TCP
/// sink's: the hello's; a file sink's: the environment's), from its first call on.
pub struct Session {
    /// 1 for the first session of the process, then 2, 3, ...
    pub epoch: u64,
    /// The index of the first call made in this session.
    pub first_index: u64,
    /// The sampling schedule of the session's nonce and configuration.
    pub schedule: Schedule,
}

impl Session {
    /// The sampling plan of `call` (made in this session), or `None` when it is not
    /// sampled. A v2 schedule decides from the call's index: the eight selection words
    /// of its block come from one keyed hash, kept per thread, so that a thread making
    /// consecutive calls hashes once per eight calls and an unsampled call encodes
    /// nothing.
    ///
    /// In commit mode (docs/COMMIT.md) the library cannot know what will be checked: every
    /// auditable call is gathered whole (every row, column and batch entry), committed
    /// to and kept until the verifier's challenge says what to open.
    pub fn decide(&self, call: &GemmCall) -> Option<Pick> {
        match self.schedule.version() {
            ScheduleVersion::V2 => {}
            ScheduleVersion::Commit => {
                return mmaudit_protocol::schedule::auditable(call).then_some(Pick::Whole)
            }
            ScheduleVersion::V1 => return self.schedule.decide(call).map(Pick::Plan),
        }
        let block = call.index / SELECT_BLOCK;
        // The session is named by its epoch and its nonce: a forked child's first
        // session has epoch 1 like its parent's, never the same nonce.
        let nonce = self.schedule.nonce();
        let id = (
            self.epoch,
            u64::from_le_bytes(nonce[..8].try_into().unwrap_or([0; 8])),
        );
        let words = SELECTION.with(|c| match c.get() {
            Some((cached, b, w)) if cached == id && b == block => w,
            _ => {
                let w = self.schedule.selection_block(block);
                c.set(Some((id, block, w)));
                w
            }
        });
        let word = words[(call.index % SELECT_BLOCK) as usize];
        let draw = self.schedule.draw_with_word(call, word)?;
        Some(Pick::Plan(self.schedule.plan(call, draw)))
    }
}

type Selection = Option<((u64, u64), u64, [u64; SELECT_BLOCK as usize])>;

thread_local! {
    /// The last v2 selection block this thread used: ((session epoch, nonce prefix),
    /// block, words).
    static SELECTION: Cell<Selection> = const { Cell::new(None) };
}

/// Bits of [`Ledger`]'s word that hold the next call index; the bits above hold the
/// low bits of the session generation.
const INDEX_BITS: u32 = 42;
const INDEX_MASK: u64 = (1 << INDEX_BITS) - 1;
/// The generation bits a word holds (the generation counts sessions begun and ended).
const GEN_MASK: u64 = u64::MAX >> INDEX_BITS;

struct State {
    /// The generation in force: one more at every session's beginning and end.
    gen: u64,
    session: Option<Arc<Session>>,
    epochs: u64,
}

/// The index counter and the current session.
///
/// A hook takes its index without a lock: one word holds the next index (42 bits, 4.4
/// × 10^12 calls) and the low 22 bits of the session generation, and a call's index and
/// session come from one compare-and-swap on it. Each thread keeps the session of the
/// generation it saw last; only its first call after a session began or ended takes
/// the lock, to read the new session. Beginning or ending a session changes the word's
/// generation under the lock, so a call took its index either before the change (and
/// belongs to the old session) or after it (the new one).
///
/// The word holds only the generation's low bits: a thread also compares the full
/// generation it saw with [`Ledger::full_gen`], so that one that made no call while the
/// generation advanced by a multiple of 2^22 does not take the session it saw last for
/// the one in force.
pub struct Ledger {
    /// This ledger's process-unique number (the per-thread view names it).
    id: u64,
    word: AtomicU64,
    /// The full generation, written under the lock before the word's bits change.
    full_gen: AtomicU64,
    state: Mutex<State>,
}

impl Default for Ledger {
    fn default() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Ledger {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            word: AtomicU64::new(0),
            full_gen: AtomicU64::new(0),
            state: Mutex::new(State {
                gen: 0,
                session: None,
                epochs: 0,
            }),
        }
    }
}

/// A thread's view of one ledger's session: (ledger, full generation, session).
type Seen = Option<(u64, u64, Option<Arc<Session>>)>;

thread_local! {
    static SEEN: RefCell<Seen> = const { RefCell::new(None) };
}

/// How one lock-free attempt at taking indices ended.
enum Attempt<R> {
    Taken(R),
    /// The word changed under us: try again.
    Retry,
    /// This thread's view is not usable (re-entered, or the thread is exiting).
    Locked,
}

impl Ledger {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes `n` consecutive indices and runs `with` on the first and on the session
    /// they were made in (`None`: no session).
    fn take<R>(
        &self,
        n: u64,
        with: impl FnOnce(u64, Option<&Arc<Session>>) -> R,
    ) -> Result<R, String> {
        let mut with = Some(with);
        loop {
            let word = self.word.load(Ordering::Acquire);
            let gen = word >> INDEX_BITS;
            let index = word & INDEX_MASK;
            exhausted(index, n)?;
            let attempt = SEEN
                .try_with(|seen| {
                    let Ok(mut seen) = seen.try_borrow_mut() else {
                        return Attempt::Locked;
                    };
                    let current =
                        |g: u64| g & GEN_MASK == gen && g == self.full_gen.load(Ordering::Acquire);
                    if !matches!(&*seen, Some((id, g, _)) if *id == self.id && current(*g)) {
                        let state = self.lock();
                        if state.gen & GEN_MASK != gen {
                            return Attempt::Retry;
                        }
                        *seen = Some((self.id, state.gen, state.session.clone()));
                    }
                    if self
                        .word
                        .compare_exchange_weak(word, word + n, Ordering::AcqRel, Ordering::Relaxed)
                        .is_err()
                    {
                        return Attempt::Retry;
                    }
                    let session = seen.as_ref().and_then(|(_, _, s)| s.as_ref());
                    match with.take() {
                        Some(with) => Attempt::Taken(with(index, session)),
                        None => Attempt::Locked,
                    }
                })
                .unwrap_or(Attempt::Locked);
            match attempt {
                Attempt::Taken(r) => return Ok(r),
                Attempt::Retry => continue,
                Attempt::Locked => break,
            }
        }
        // Under the lock the generation cannot change.
        let state = self.lock();
        let mut word = self.word.load(Ordering::Acquire);
        loop {
            let index = word & INDEX_MASK;
            exhausted(index, n)?;
            match self.word.compare_exchange_weak(
                word,
                word + n,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    let with = with.take().ok_or("the ledger was re-entered")?;
                    return Ok(with(index, state.session.as_ref()));
                }
                Err(w) => word = w,
            }
        }
    }

    /// Gives `call` the next index (and the NO_SESSION flag when there is no session)
    /// and, when `sample` (a call the model describes exactly), decides whether it is
    /// sampled: its plan, or `None`. Lock-free in steady state, and allocates nothing
    /// for an unsampled call.
    pub fn assign_and_decide(
        &self,
        call: &mut GemmCall,
        sample: bool,
    ) -> Result<Option<Pick>, String> {
        self.take(1, |index, session| {
            call.index = index;
            match session {
                None => {
                    call.flags |= flags::NO_SESSION;
                    None
                }
                Some(s) if sample => s.decide(call),
                Some(_) => None,
            }
        })
    }

    /// Gives `call` the next index (and the NO_SESSION flag when there is no session).
    /// Returns the session the call was made in.
    pub fn assign(&self, call: &mut GemmCall) -> Result<Option<Arc<Session>>, String> {
        self.assign_many(std::slice::from_mut(call))
    }

    /// [`Ledger::assign`] for several calls at once: they get consecutive indices, in
    /// order.
    pub fn assign_many(&self, calls: &mut [GemmCall]) -> Result<Option<Arc<Session>>, String> {
        self.take(calls.len() as u64, |first, session| {
            for (i, call) in calls.iter_mut().enumerate() {
                call.index = first + i as u64;
                if session.is_none() {
                    call.flags |= flags::NO_SESSION;
                }
            }
            session.cloned()
        })
    }

    /// Moves the word to the next generation (under the lock); the index at which it
    /// changed.
    fn advance(&self, state: &mut State) -> u64 {
        state.gen += 1;
        self.full_gen.store(state.gen, Ordering::Release);
        let gen = state.gen & GEN_MASK;
        let mut word = self.word.load(Ordering::Acquire);
        loop {
            let next = (gen << INDEX_BITS) | (word & INDEX_MASK);
            match self
                .word
                .compare_exchange_weak(word, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return word & INDEX_MASK,
                Err(w) => word = w,
            }
        }
    }

    /// Starts a new session with `schedule`: calls from the next index on are made in
    /// it.
    pub fn begin(&self, schedule: Schedule) -> Arc<Session> {
        let mut s = self.lock();
        s.epochs += 1;
        let first_index = self.advance(&mut s);
        let session = Arc::new(Session {
            epoch: s.epochs,
            first_index,
            schedule,
        });
        s.session = Some(Arc::clone(&session));
        session
    }

    /// Ends the current session: calls from the returned index on have none.
    pub fn end(&self) -> u64 {
        let mut s = self.lock();
        let at = self.advance(&mut s);
        s.session = None;
        at
    }

    /// The session in force, if any.
    pub fn current(&self) -> Option<Arc<Session>> {
        self.lock().session.clone()
    }

    /// The index the next call will get.
    pub fn next_index(&self) -> u64 {
        self.word.load(Ordering::Acquire) & INDEX_MASK
    }
}

/// An error when `n` more indices would not fit in a word.
fn exhausted(index: u64, n: u64) -> Result<(), String> {
    if index.saturating_add(n) > INDEX_MASK {
        return Err(format!(
            "the call index reached {index}, the most this library can number"
        ));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use mmaudit_protocol::config::SamplingConfig;
    use mmaudit_protocol::keys::Key;

    #[test]
    fn a_thread_idle_while_the_generation_wrapped_does_not_take_its_stale_session() {
        // The thread sees session 1 at its first call; 2^22 session changes later its
        // word bits match again, and no session is in force.
        let ledger = Ledger::default();
        let s1 = ledger.begin(Schedule::new(
            &Key::from_bytes([1; 32]),
            [2; 16],
            SamplingConfig::default(),
        ));
        std::thread::scope(|t| {
            let (go, wait) = std::sync::mpsc::channel::<()>();
            let (back, got) = std::sync::mpsc::channel::<Option<u64>>();
            let l = &ledger;
            t.spawn(move || {
                for _ in 0..2 {
                    let mut c = call();
                    back.send(l.assign(&mut c).unwrap().map(|s| s.epoch))
                        .unwrap();
                    let _ = wait.recv();
                }
            });
            assert_eq!(got.recv().unwrap(), Some(s1.epoch));
            for _ in 0..(1u64 << 22) {
                ledger.end();
            }
            assert!(ledger.current().is_none());
            go.send(()).unwrap();
            assert_eq!(got.recv().unwrap(), None, "the stale session was taken");
            go.send(()).unwrap();
        });
    }

    pub(crate) fn call() -> GemmCall {
        use mmaudit_protocol::call::*;
        let op = Operand {
            dtype: DType::F32,
            order: Order::Col,
            ld: 4,
            batch_stride: 0,
        };
        GemmCall {
            index: 99,
            entry: EntryPoint::SgemmV2,
            device: 0,
            stream: 0,
            op_a: Op::N,
            op_b: Op::N,
            m: 4,
            n: 4,
            k: 4,
            batch: 1,
            batch_form: BatchForm::Single,
            a: op,
            b: op,
            c: op,
            d: op,
            compute: ComputeType::F32,
            scale_type: DType::F32,
            alpha: Scalar::Host(1.0),
            beta: Scalar::Host(0.0),
            epilogue: Epilogue::Default,
            bias_type: DType::F32,
            flags: 0,
            replay: None,
        }
    }

    #[test]
    fn the_per_thread_selection_cache_decides_as_the_schedule() {
        // In order, out of order, across two sessions whose blocks coincide, and from
        // several threads at once: the cached v2 decision is the schedule's own.
        let ledger = Ledger::default();
        let v2 = |nonce: u8| {
            Schedule::with_version(
                &Key::from_bytes([1; 32]),
                [nonce; 16],
                SamplingConfig {
                    call_ppm: 300_000,
                    ..SamplingConfig::default()
                },
                ScheduleVersion::V2,
            )
        };
        let sessions = [ledger.begin(v2(1)), ledger.begin(v2(2))];
        let order: Vec<u64> = (0..200)
            .chain((0..200).rev())
            .chain([7, 1000, 3, 1001])
            .collect();
        let check = |s: &Session| {
            for &i in &order {
                let mut c = call();
                c.index = i;
                assert_eq!(
                    s.decide(&c),
                    s.schedule.decide(&c).map(Pick::Plan),
                    "index {i}"
                );
            }
        };
        for s in &sessions {
            check(s);
        }
        assert_ne!(
            (0..64)
                .map(|i| {
                    let mut c = call();
                    c.index = i;
                    sessions[0].decide(&c).is_some()
                })
                .collect::<Vec<_>>(),
            (0..64)
                .map(|i| {
                    let mut c = call();
                    c.index = i;
                    sessions[1].decide(&c).is_some()
                })
                .collect::<Vec<_>>()
        );
        std::thread::scope(|t| {
            for s in &sessions {
                t.spawn(|| check(s));
            }
        });
        // Two ledgers' first sessions (a parent's and a forked child's: both epoch 1)
        // with different nonces, on one thread, alternately.
        let (p, c) = (Ledger::default(), Ledger::default());
        let (sp, sc) = (p.begin(v2(3)), c.begin(v2(4)));
        assert_eq!((sp.epoch, sc.epoch), (1, 1));
        for i in 0..64 {
            for s in [&sp, &sc] {
                let mut call = call();
                call.index = i;
                assert_eq!(
                    s.decide(&call),
                    s.schedule.decide(&call).map(Pick::Plan),
                    "index {i}"
                );
            }
        }
    }

    #[test]
    fn sessions_cover_consecutive_index_ranges() {
        let ledger = Ledger::default();
        let schedule = || {
            Schedule::new(
                &Key::from_bytes([1; 32]),
                [2; 16],
                SamplingConfig::default(),
            )
        };
        let mut c = call();
        assert!(ledger.assign(&mut c).unwrap().is_none());
        assert_eq!((c.index, c.flags), (0, flags::NO_SESSION));
        let s1 = ledger.begin(schedule());
        assert_eq!((s1.epoch, s1.first_index), (1, 1));
        for i in 1..4 {
            let mut c = call();
            let got = ledger.assign(&mut c).unwrap().unwrap();
            assert_eq!((c.index, c.flags, got.epoch), (i, 0, 1));
        }
        ledger.end();
        let mut c = call();
        assert!(ledger.assign(&mut c).unwrap().is_none());
        assert_eq!((c.index, c.flags), (4, flags::NO_SESSION));
        let s2 = ledger.begin(schedule());
        assert_eq!((s2.epoch, s2.first_index), (2, 5));
        assert_eq!(ledger.next_index(), 5);
    }

    #[test]
    fn each_call_gets_the_session_whose_range_holds_its_index_under_contention() {
        // Four threads take indices (singly and in runs of three) while sessions begin
        // and end: every call's session (or none) must be the one in force for its
        // index, the indices must be exactly 0..N, and sessions must cover consecutive
        // ranges.
        let ledger = Ledger::default();
        let schedule = |n: u8| {
            Schedule::new(
                &Key::from_bytes([1; 32]),
                [n; 16],
                SamplingConfig::default(),
            )
        };
        let stop = std::sync::atomic::AtomicBool::new(false);
        let (taken, changes) = std::thread::scope(|t| {
            let workers: Vec<_> = (0..4)
                .map(|w| {
                    let (ledger, stop) = (&ledger, &stop);
                    t.spawn(move || {
                        let mut got = Vec::new();
                        let mut i = 0u64;
                        while !stop.load(Ordering::Relaxed) {
                            i += 1;
                            if (i + w).is_multiple_of(5) {
                                let mut calls = vec![call(), call(), call()];
                                let s = ledger.assign_many(&mut calls).unwrap();
                                for c in calls {
                                    got.push((c.index, s.as_ref().map(|s| s.epoch)));
                                }
                            } else {
                                let mut c = call();
                                let s = ledger.assign(&mut c).unwrap();
                                assert_eq!(c.has(flags::NO_SESSION), s.is_none());
                                got.push((c.index, s.map(|s| s.epoch)));
                            }
                        }
                        got
                    })
                })
                .collect();
            // (first index, epoch or none) of each change, in order.
            let mut changes = vec![(0u64, None)];
            for n in 0..200u8 {
                std::thread::sleep(std::time::Duration::from_micros(200));
                if n % 3 == 2 {
                    changes.push((ledger.end(), None));
                } else {
                    let s = ledger.begin(schedule(n));
                    changes.push((s.first_index, Some(s.epoch)));
                }
            }
            stop.store(true, Ordering::Relaxed);
            let taken: Vec<(u64, Option<u64>)> = workers
                .into_iter()
                .flat_map(|w| w.join().unwrap())
                .collect();
            (taken, changes)
        });
        let mut taken = taken;
        taken.sort();
        assert!(taken.len() > 1000, "{} calls", taken.len());
        assert!(taken
            .iter()
            .enumerate()
            .all(|(i, (index, _))| *index == i as u64));
        for (index, epoch) in &taken {
            let in_force = changes
                .iter()
                .rev()
                .find(|(first, _)| first <= index)
                .map(|(_, e)| *e)
                .unwrap();
            assert_eq!(*epoch, in_force, "call {index}");
        }
    }
}

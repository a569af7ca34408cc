//! The ledger's index counter and the verifier session in force, behind one lock.
//!
//! A call's sampling decision needs the nonce and sampling configuration of the stream
//! its ledger record will be written in. A file sink has one session from the start
//! (the prover's own nonce, the rates of `MMAUDIT_CALL_RATE` etc.). A TCP sink has a
//! session only while it is connected to a verifier that sent its hello (whose nonce
//! and sampling configuration it must use), and a new one on every new connection; calls made while
//! there is none are ledgered with the NO_SESSION flag and not sampled.
//!
//! Hooks take their index and read the session under the same short lock (the one that
//! already kept ledger records in index order), so sessions follow each other in index
//! order: session `E` holds exactly the calls from its [`Session::first_index`] until
//! the next session begins. The sink relies on that to tell, from an index alone,
//! whether a queued record belongs to the session of the stream segment it writes.
//! Nothing here blocks for longer than a channel send, and nothing panics.

use std::cell::Cell;
use std::sync::{Arc, Mutex};

use mmaudit_protocol::call::{flags, GemmCall};
use mmaudit_protocol::schedule::{Plan, Schedule, ScheduleVersion, SELECT_BLOCK};

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
    pub fn decide(&self, call: &GemmCall) -> Option<Plan> {
        if self.schedule.version() != ScheduleVersion::V2 {
            return self.schedule.decide(call);
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
        Some(self.schedule.plan(call, draw))
    }
}

type Selection = Option<((u64, u64), u64, [u64; SELECT_BLOCK as usize])>;

thread_local! {
    /// The last v2 selection block this thread used: ((session epoch, nonce prefix),
    /// block, words).
    static SELECTION: Cell<Selection> = const { Cell::new(None) };
}

struct State {
    next: u64,
    session: Option<Arc<Session>>,
    epochs: u64,
}

/// The index counter and the current session.
pub struct Ledger {
    state: Mutex<State>,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger {
            state: Mutex::new(State {
                next: 0,
                session: None,
                epochs: 0,
            }),
        }
    }
}

impl Ledger {
    /// Gives `call` the next index (and the NO_SESSION flag when there is no session),
    /// and runs `send` with it under the lock, so that what `send` sends goes out in
    /// index order. The index is taken only if `send` succeeds. Returns the session the
    /// call was made in.
    pub fn assign(
        &self,
        call: &mut GemmCall,
        send: impl FnOnce(&GemmCall) -> Result<(), String>,
    ) -> Result<Option<Arc<Session>>, String> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        call.index = s.next;
        if s.session.is_none() {
            call.flags |= flags::NO_SESSION;
        }
        send(call)?;
        s.next += 1;
        Ok(s.session.clone())
    }

    /// [`Ledger::assign`] for several calls at once: they get consecutive indices, in
    /// order, and `send` sends them all.
    pub fn assign_many(
        &self,
        calls: &mut Vec<GemmCall>,
        send: impl FnOnce(&mut Vec<GemmCall>) -> Result<(), String>,
    ) -> Result<Option<Arc<Session>>, String> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let no_session = s.session.is_none();
        let n = calls.len() as u64;
        for (i, call) in calls.iter_mut().enumerate() {
            call.index = s.next + i as u64;
            if no_session {
                call.flags |= flags::NO_SESSION;
            }
        }
        send(calls)?;
        s.next += n;
        Ok(s.session.clone())
    }

    /// Starts a new session with `schedule`: calls from the next index on are made in
    /// it.
    pub fn begin(&self, schedule: Schedule) -> Arc<Session> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.epochs += 1;
        let session = Arc::new(Session {
            epoch: s.epochs,
            first_index: s.next,
            schedule,
        });
        s.session = Some(Arc::clone(&session));
        session
    }

    /// Ends the current session: calls from now on have none.
    pub fn end(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).session = None;
    }

    /// The session in force, if any.
    pub fn current(&self) -> Option<Arc<Session>> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .session
            .clone()
    }

    /// The index the next call will get.
    pub fn next_index(&self) -> u64 {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mmaudit_protocol::config::SamplingConfig;
    use mmaudit_protocol::keys::Key;

    fn call() -> GemmCall {
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
                assert_eq!(s.decide(&c), s.schedule.decide(&c), "index {i}");
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
                assert_eq!(s.decide(&call), s.schedule.decide(&call), "index {i}");
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
        assert!(ledger.assign(&mut c, |_| Ok(())).unwrap().is_none());
        assert_eq!((c.index, c.flags), (0, flags::NO_SESSION));
        let s1 = ledger.begin(schedule());
        assert_eq!((s1.epoch, s1.first_index), (1, 1));
        for i in 1..4 {
            let mut c = call();
            let got = ledger.assign(&mut c, |_| Ok(())).unwrap().unwrap();
            assert_eq!((c.index, c.flags, got.epoch), (i, 0, 1));
        }
        ledger.end();
        let mut c = call();
        assert!(ledger.assign(&mut c, |_| Ok(())).unwrap().is_none());
        assert_eq!((c.index, c.flags), (4, flags::NO_SESSION));
        // A failed send takes no index.
        let mut c = call();
        assert!(ledger.assign(&mut c, |_| Err("gone".into())).is_err());
        let s2 = ledger.begin(schedule());
        assert_eq!((s2.epoch, s2.first_index), (2, 5));
        assert_eq!(ledger.next_index(), 5);
    }
}

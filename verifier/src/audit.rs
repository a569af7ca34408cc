//! The audit of one stream: consumes decoded events in order and keeps the verdict.
//!
//! It re-derives every plan from the ledger itself (the prover never says what was
//! sampled), pairs each sampled call with its sample or gap record, recomputes every
//! checked entry and keeps the counters of the report. It never trusts a count the
//! prover sends: the end record's totals are only cross-checked.
//!
//! When the verifier holds weights ([`StreamAudit::with_weights`]) it also judges, for
//! each sampled call whose sample arrived, which held tensor an operand came from.
//!
//! Operands sent as references to held tensors are resolved against the verifier's own
//! copy before anything else looks at the sample; without held weights they fail.
//!
//! It is fed by `check` from files and by `serve` from live connections, record by
//! record, so it holds no I/O; both must give the same report for the same bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use mmaudit_protocol::call::{flags, DType, GemmCall};
use mmaudit_protocol::commit::frames::Challenge;
use mmaudit_protocol::commit::{Challenger, Hash};
use mmaudit_protocol::keys::Key;
use mmaudit_protocol::num;
use mmaudit_protocol::record::{
    Commitment, Gap, GapReason, NoticeKind, Opening, OperandData, Record, Sample,
};
use mmaudit_protocol::schedule::{self, Plan, Schedule, ScheduleVersion};
use mmaudit_protocol::stream::{Event, StreamError, StreamHeader};

use crate::policy::{Policy, Unaudited};
use crate::pool::{Pool, Workers};
use crate::recompute::{self, Entry, ErrorModel, Lanes, Row, Scalars};
use crate::report::{
    ranges_text, ratio_bucket, ErrorHistogram, Failure, FailureKind, StreamReport, WeightReport,
};
use crate::weights::{
    HeldRows, Identity, Side, SideMatch, Unmatched, WeightPolicy, WeightRegistry,
};

/// Most row, column and batch indices one sampled call's plan may hold. A plan is
/// built (and kept until its sample arrives) only for calls below it; an honest GEMM's
/// plan holds 1% of its rows and 0.1% of its columns at the default rates, so this
/// stands for about 10^8 rows. A larger plan fails the stream ("unreasonable
/// dimensions") without being built.
pub const MAX_PLAN_INDICES: u64 = 1 << 20;
/// Most indices, over all sampled calls awaiting their data, that one stream may keep.
pub const MAX_PENDING_INDICES: u64 = 1 << 22;
/// Most sampled calls awaiting their data that one stream may keep.
pub const MAX_PENDING_CALLS: usize = 1 << 18;
/// Commit mode: most calls awaiting their commitment that one stream may keep (a
/// library commits each call once its hash kernel has run; 65 536 calls are minutes of
/// decode). About 14 MiB of call descriptions.
pub const MAX_UNCOMMITTED_CALLS: usize = 1 << 16;

/// The audit state of one stream.
pub struct StreamAudit {
    key: Key,
    schedule: Option<Schedule>,
    /// The verifier's challenge key (commit mode, docs/COMMIT.md), when it has one.
    challenge_key: Option<Hash>,
    /// A commit-mode stream's challenger, from the header and the challenge key.
    challenger: Option<Challenger>,
    /// Commit mode: auditable calls whose commitment has not arrived yet.
    uncommitted: BTreeMap<u64, GemmCall>,
    /// Commit mode: the commitment of each challenged call awaiting its opening.
    commitments: BTreeMap<u64, Hash>,
    /// Commit mode, live (`serve`): challenges to send, whether any commitment was
    /// judged, and the last `through` said to the prover.
    outbox: Option<Vec<Challenge>>,
    judged_any: bool,
    sent_through: Option<u64>,
    /// Commit mode, offline with `--graded`: the nonce a verifier session recorded for
    /// these bytes (inner None: no record).
    graded: Option<Option<[u8; 16]>>,
    /// Sampled calls whose sample or gap record has not arrived yet.
    pending: BTreeMap<u64, (GemmCall, Plan)>,
    /// Row, column and batch indices held by `pending`'s plans.
    pending_indices: u64,
    /// Set when a plan or the pending set went over its bound: the stream has failed
    /// and no further plan is built or kept.
    overloaded: bool,
    next_index: u64,
    samples_received: u64,
    ended: bool,
    max_failures: usize,
    weights: Option<WeightPolicy>,
    policy: Policy,
    /// Threads for the arithmetic check of samples; above 1, samples are gathered in
    /// `deferred` and checked a batch at a time by `pool` while the stream is read on.
    threads: usize,
    /// Samples whose arithmetic check is deferred to the next batch, in stream order,
    /// and their encoded size.
    deferred: Batch,
    deferred_bytes: usize,
    /// The threads checking batches (started at the first batch).
    pool: Option<Pool<Batch, Outcomes>>,
    /// Threads shared with other audits (`serve`), used instead of threads of its own.
    workers: Option<Arc<Workers>>,
    /// Set while outcomes are applied: a failure found then is in stream order already.
    applying: bool,
    /// Sample bytes of each batch out, oldest first.
    bytes_out: std::collections::VecDeque<usize>,
    /// The report being built.
    pub report: StreamReport,
    /// Judges the header when it arrives ([`StreamAudit::judging_header`]).
    header_hook: Option<HeaderHook>,
    /// Counts ledger records as they are audited ([`StreamAudit::counting_received`]).
    received: Option<Arc<std::sync::atomic::AtomicU64>>,
}

/// What a live verifier knows of a stream from outside its bytes, judged when its header
/// arrives: whether its nonce was issued for it, and which calls before its segment no
/// verifier received.
#[derive(Debug, Default)]
pub struct HeaderFindings {
    /// an integrity failure (a nonce not issued, or used by another stream)
    pub integrity: Option<String>,
    /// calls `first..end` before this segment that no verifier received
    pub unseen: Vec<(u64, u64)>,
}

/// Judges a stream's header (see [`HeaderFindings`]).
pub type HeaderHook = Box<dyn FnMut(&StreamHeader) -> HeaderFindings + Send>;

/// Samples checked by one thread as one job.
type Batch = Vec<(GemmCall, Plan, Sample, Held)>;

/// Where a sample's referenced operands lie in the held weights: op(A) rows, op(B)
/// columns (`None`: sent inline).
type Held = [Option<HeldRows>; 2];
/// What the check of a batch found, sample by sample.
type Outcomes = Vec<(GemmCall, Result<SampleOutcome, String>)>;
/// Most samples in one batch.
const BATCH_SAMPLES: usize = 64;
/// Most sample bytes in one batch.
const BATCH_BYTES: usize = 8 << 20;
/// Most batches being checked while the stream is read on.
const MAX_BATCHES: usize = 16;
/// Most sample bytes in the batches being checked: the reading thread waits above it.
/// (A batch closes after the sample that crosses [`BATCH_BYTES`], and one sample may be
/// a whole frame, so counting batches alone would not bound this.)
const MAX_BYTES_OUT: usize = 128 << 20;

impl StreamAudit {
    /// A new audit of a stream named `name` (a file path or peer address), keeping at most
    /// `max_failures` failure details.
    pub fn new(name: &str, key: &Key, max_failures: usize) -> Self {
        StreamAudit {
            key: key.clone(),
            schedule: None,
            challenge_key: None,
            challenger: None,
            uncommitted: BTreeMap::new(),
            commitments: BTreeMap::new(),
            outbox: None,
            judged_any: false,
            sent_through: None,
            graded: None,
            pending: BTreeMap::new(),
            pending_indices: 0,
            overloaded: false,
            next_index: 0,
            samples_received: 0,
            ended: false,
            max_failures,
            weights: None,
            policy: Policy::default(),
            threads: 1,
            deferred: Vec::new(),
            deferred_bytes: 0,
            pool: None,
            workers: None,
            applying: false,
            bytes_out: std::collections::VecDeque::new(),
            report: StreamReport::new(name),
            header_hook: None,
            received: None,
        }
    }

    /// Asks `hook` about the header when it arrives, and applies what it found: the
    /// fleet's workers check the nonce against the record of issued nonces and the
    /// stream's earlier segments against the record of calls received, both kept on
    /// the broker (`serve` keeps its own and judges its connections itself).
    pub fn judging_header(mut self, hook: HeaderHook) -> Self {
        self.header_hook = Some(hook);
        self
    }

    /// Adds one to `counter` for every ledger record audited (the calls this segment
    /// delivered, for the fleet's record of calls received).
    pub fn counting_received(mut self, counter: Arc<std::sync::atomic::AtomicU64>) -> Self {
        self.received = Some(counter);
        self
    }

    /// Checks the arithmetic of samples on `threads` threads while the stream is read
    /// on (`check`): samples go to the threads in batches, at most [`MAX_BATCHES`]
    /// batches and [`MAX_BYTES_OUT`] sample bytes out at once. The report is the same
    /// as with one thread (outcomes are applied in stream order, and every other
    /// failure first applies the outcomes before it).
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// The threads the audit checks samples on (1: on the caller's).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Checks the arithmetic of samples on `workers`, shared with other audits, as
    /// [`StreamAudit::with_threads`] does on threads of its own.
    pub fn with_workers(mut self, workers: Arc<Workers>) -> Self {
        // above one, so that samples go to the workers whatever their number
        self.threads = workers.threads().max(2);
        self.workers = Some(workers);
        self
    }

    /// Audits commit-mode streams (docs/COMMIT.md) with this challenge key: the
    /// verifier's own, which the prover never holds. Without it a commit-mode stream
    /// fails (its challenges cannot be re-derived).
    pub fn with_challenge_key(mut self, key: Hash) -> Self {
        self.challenge_key = Some(key);
        self
    }

    /// Accepts a commit-mode stream only as a session a verifier graded live: `graded` is
    /// the nonce recorded for this capture's bytes (`serve --state-dir`), None when no
    /// session recorded them. Re-grading anything else would give a prover who submits
    /// captures of its own a challenge oracle (docs/COMMIT.md).
    pub fn requiring_graded(mut self, graded: Option<[u8; 16]>) -> Self {
        self.graded = Some(graded);
        self
    }

    /// Keeps the challenges it derives for a live prover ([`StreamAudit::take_challenges`]).
    pub fn sending_challenges(mut self) -> Self {
        self.outbox = Some(Vec::new());
        self
    }

    /// What the next challenge frame says: `through`, the end of the judged prefix
    /// (every auditable call up to it has had its commitment judged, or its "not
    /// committed" gap), and the challenges of calls up to it not sent before, in index
    /// order. Commitments that arrive out of index order are judged at once, but their
    /// challenges wait until the prefix reaches them: a frame never names a call above
    /// its `through`, and `through` never goes back. None when there is nothing new to
    /// say.
    pub fn take_challenges(&mut self) -> Option<(u64, Vec<Challenge>)> {
        let outbox = self.outbox.as_mut()?;
        let prefix = match self.uncommitted.first_key_value() {
            Some((&first, _)) => first.checked_sub(1),
            None if self.judged_any => Some(self.next_index.saturating_sub(1)),
            None => None,
        };
        let through = match (prefix, self.sent_through) {
            (Some(p), Some(s)) => p.max(s),
            (p, s) => p.or(s)?,
        };
        outbox.sort_by_key(|c| c.index);
        let ready = outbox.partition_point(|c| c.index <= through);
        if ready == 0 && self.sent_through == Some(through) {
            return None;
        }
        self.sent_through = Some(through);
        Some((through, outbox.drain(..ready).collect()))
    }

    /// Judges the stream by `policy` when it ends instead of [`Policy::default`].
    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Also judges weight identity: every sampled call whose sample arrives is matched
    /// against the held tensors, and with `policy.required` an unmatched call fails.
    pub fn with_weights(mut self, policy: WeightPolicy) -> Self {
        self.report.weights = Some(WeightReport {
            required: policy.required,
            ..WeightReport::default()
        });
        self.weights = Some(policy);
        self
    }

    /// Feeds one decoded event.
    pub fn on_event(&mut self, event: Event) {
        match event {
            Event::Header(h) => self.on_header(h),
            Event::Frame { records, .. } => {
                for r in records {
                    self.on_record(r);
                }
            }
        }
    }

    /// Records that the stream's bytes failed authentication or decoding. Nothing after
    /// this point of the stream can be trusted, so the caller stops feeding it.
    pub fn on_stream_error(&mut self, e: &StreamError) {
        self.integrity(format!("{e}"));
    }

    fn on_header(&mut self, h: StreamHeader) {
        self.next_index = h.first_index;
        self.schedule = Some(Schedule::for_header(&self.key, &h));
        let challenger = self.challenger_for(&h);
        let findings = self.header_hook.as_mut().map(|hook| hook(&h));
        self.report.header = Some(h);
        if let Some(f) = findings {
            if let Some(message) = f.integrity {
                self.integrity(message);
            }
            self.unseen(&f.unseen);
        }
        match challenger {
            Ok(c) => self.challenger = c,
            Err(message) => self.integrity(message),
        }
    }

    /// The challenger of a stream with header `h`: None for a sampling-mode stream
    /// checked without a challenge key; an error naming why the stream cannot be
    /// audited with the keys and records this audit has.
    fn challenger_for(&self, h: &StreamHeader) -> Result<Option<Challenger>, String> {
        let commit = h.schedule == ScheduleVersion::Commit;
        let Some(key) = self.challenge_key else {
            return if commit {
                Err("a commit-mode stream (version 3): its challenges cannot be re-derived without the verifier's challenge key (--challenge-key)".into())
            } else {
                Ok(None)
            };
        };
        if key == self.key.challenge_key() {
            return Err("the challenge key is the audit key's: the prover holds that key and could predict every challenge".into());
        }
        if !commit {
            return Err(format!(
                "a sampling-mode stream (version {:?}) checked with a challenge key: its prover, who holds the audit key, knew every sampled call in advance; a commit-mode audit accepts only commit-mode streams (version 3)",
                Some(h.schedule)
            ));
        }
        if self.graded.is_some_and(|graded| graded != Some(h.nonce)) {
            return Err("this capture is not a stream a verifier session graded live (no record of its bytes under --graded): re-grading captures a prover submits would give it a challenge oracle".into());
        }
        if !mmaudit_protocol::commit::nonce_issued(&key, &h.nonce) {
            return Err("the stream's nonce was not issued by a verifier holding this challenge key: a commit-mode capture must come from a session of `serve --commit` (a prover choosing its own nonce could grind its commitments against repeated checks)".into());
        }
        Ok(Some(Challenger::new(key, h.nonce, h.config)))
    }

    /// Records an integrity failure found outside the stream's bytes (a live session's
    /// nonce that the verifier did not issue, for instance).
    pub fn fail_integrity(&mut self, message: String) {
        self.integrity(message);
    }

    /// Calls of the stream before this segment that no verifier received (`holes`,
    /// ranges `first..end`): counted, named, and a failure.
    pub fn unseen(&mut self, holes: &[(u64, u64)]) {
        let count: u64 = holes.iter().map(|(f, e)| e - f).sum();
        if count == 0 {
            return;
        }
        self.report.unseen_calls += count;
        self.report.unseen_ranges.extend(holes.iter().take(64));
        let more = if holes.len() > 8 {
            format!(" and {} more ranges", holes.len() - 8)
        } else {
            String::new()
        };
        let first = self.report.header.as_ref().map_or(0, |h| h.first_index);
        self.push_failure(Failure {
            kind: FailureKind::Unseen,
            call: None,
            message: format!(
                "{count} calls of this stream before this segment (which starts at call {first}) \
                 were seen by no verifier: calls {}{more}; no earlier segment that carried \
                 them was received, so they are not audited",
                ranges_text(&holes[..holes.len().min(8)])
            ),
        });
    }

    /// True once the End record was read.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    fn integrity(&mut self, message: String) {
        self.report.integrity_errors += 1;
        self.push_failure(Failure {
            kind: FailureKind::Integrity,
            call: None,
            message,
        });
    }

    fn push_failure(&mut self, f: Failure) {
        // Failures are kept in stream order: the deferred samples come first (unless
        // this failure is one of theirs, found while they are applied in order).
        if !self.applying {
            self.check_deferred();
        }
        if self.report.failures.len() < self.max_failures {
            self.report.failures.push(f);
        } else {
            self.report.failures_not_shown += 1;
        }
    }

    /// Feeds one record of an authenticated frame (what [`StreamAudit::on_event`] does
    /// for each record of a frame, in order); a caller that spreads a frame's work over
    /// time feeds its records one by one.
    pub fn on_record(&mut self, record: Record) {
        if self.ended {
            self.integrity("a record follows the end record".into());
            return;
        }
        match record {
            Record::Ledger(call) => {
                if let Some(c) = &self.received {
                    c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                self.on_ledger(call)
            }
            Record::Sample(s) if self.challenger.is_some() => self.integrity(format!(
                "sample record for call {} in a commit-mode stream, where data travels only as openings",
                s.index
            )),
            Record::Sample(s) => self.on_sample(s),
            Record::Commitment(c) => self.on_commitment(c),
            Record::Opening(o) => self.on_opening(*o),
            Record::Gap(g) => self.on_gap(g),
            Record::Notice(n) => match n.kind {
                NoticeKind::AuditDisabled => {
                    self.report.disabled = Some(n.message.clone());
                    let first = self.report.header.as_ref().map_or(0, |h| h.first_index);
                    let when = if self.next_index > first {
                        format!("after call {}", self.next_index - 1)
                    } else {
                        "before its first call".to_string()
                    };
                    self.push_failure(Failure {
                        kind: FailureKind::Disabled,
                        call: None,
                        message: format!("the prover stopped auditing {when}: {}", n.message),
                    });
                }
                _ => self.report.notices.push(n.message),
            },
            Record::End(e) => {
                self.ended = true;
                self.report.ended = true;
                let seen = (
                    self.report.calls,
                    self.samples_received,
                    self.report.gaps + self.report.uncommitted,
                );
                if (e.calls, e.samples, e.gap_calls) != seen {
                    self.integrity(format!(
                        "end record claims {} calls, {} samples, {} gaps; the stream held {}, {}, {}",
                        e.calls, e.samples, e.gap_calls, seen.0, seen.1, seen.2
                    ));
                }
            }
        }
    }

    fn on_ledger(&mut self, call: GemmCall) {
        if call.index != self.next_index {
            self.integrity(format!(
                "ledger jumps from call {} to call {}: calls are missing from the ledger",
                self.next_index, call.index
            ));
        }
        self.next_index = call.index.saturating_add(1);
        self.report.calls += 1;
        self.report.flops = self.report.flops.saturating_add(call.flops());
        self.report.reduced_precision += call.has(flags::REDUCED_PRECISION_REDUCTION) as u64;
        let capture = call.is_capture_record();
        let bin = self.report.timeline.bin(call.index);
        bin.calls += 1;
        bin.flops = bin.flops.saturating_add(call.flops());
        if capture {
            // Recorded while its graph was captured: it computed nothing then, and
            // its work is ledgered at every replay.
            bin.captures += 1;
            self.report.capture_records += 1;
            return;
        }
        bin.replayed += call.has(flags::REPLAYED) as u64;
        bin.not_audited += call.has(flags::NOT_AUDITED) as u64;
        let declared = call.declared_flops();
        self.report.working_calls += (declared > 0) as u64;
        if call.has(flags::REPLAYED) {
            self.report.replayed += 1;
            self.report.replayed_flops = self.report.replayed_flops.saturating_add(declared);
        }
        for (flag, what) in [
            (flags::CAPTURED, Unaudited::Captured),
            (flags::NO_SESSION, Unaudited::NoSession),
            (flags::REJECTED, Unaudited::Rejected),
            (flags::UNMODELLED, Unaudited::Unmodelled),
        ] {
            if call.has(flag) {
                self.report.count_unaudited(what, declared);
            }
        }
        if call.has(flags::NOT_AUDITED) {
            return;
        }
        if self.challenger.is_some() {
            if !schedule::auditable(&call) || self.overloaded {
                return;
            }
            if self.uncommitted.len() >= MAX_UNCOMMITTED_CALLS {
                self.overloaded = true;
                self.integrity(format!(
                    "{} calls await their commitment at call {}: more than a prover keeps in flight (at most {MAX_UNCOMMITTED_CALLS}); the stream is not audited further",
                    self.uncommitted.len(),
                    call.index
                ));
                return;
            }
            self.uncommitted.insert(call.index, call);
            return;
        }
        let Some(schedule) = self.schedule.clone() else {
            return;
        };
        let Some(draw) = schedule.draw(&call) else {
            return;
        };
        let counts = schedule.plan_counts(&call);
        if let Some(plan) = self.expect_sample(&call, counts, |c| schedule.plan(c, draw)) {
            self.pending_indices += counts.iter().sum::<u64>();
            self.pending.insert(call.index, (call, plan));
        }
    }

    /// Counts a call the schedule (or, in commit mode, the challenge) selected and
    /// builds its plan with `plan` unless the plan or the calls awaiting their data
    /// would exceed their bounds (the stream then fails and is audited no further).
    fn expect_sample(
        &mut self,
        call: &GemmCall,
        counts: [u64; 3],
        plan: impl FnOnce(&GemmCall) -> Plan,
    ) -> Option<Plan> {
        let working = call.declared_flops() > 0;
        self.report.sampled += 1;
        self.report.timeline.bin(call.index).sampled += 1;
        self.report.replayed_sampled += call.has(flags::REPLAYED) as u64;
        self.report.sampled_working += working as u64;
        self.report.sampled_flops = self.report.sampled_flops.saturating_add(call.flops());
        if self.overloaded {
            return None;
        }
        let indices: u64 = counts.iter().sum();
        if indices > MAX_PLAN_INDICES {
            self.overloaded = true;
            self.integrity(format!(
                "unreasonable dimensions: {} would sample {indices} rows, columns and batch entries (at most {MAX_PLAN_INDICES}); the stream is not audited further",
                describe(call)
            ));
            return None;
        }
        if self.pending.len() >= MAX_PENDING_CALLS
            || self.pending_indices + indices > MAX_PENDING_INDICES
        {
            self.overloaded = true;
            self.integrity(format!(
                "{} sampled calls ({} plan indices) await their data at call {}: more than a prover keeps in flight (at most {MAX_PENDING_CALLS} calls, {MAX_PENDING_INDICES} indices); the stream is not audited further",
                self.pending.len(),
                self.pending_indices,
                call.index
            ));
            return None;
        }
        Some(plan(call))
    }

    /// Commit mode: the challenge of a committed call, re-derived from the verifier's
    /// challenge key and the commitment.
    fn on_commitment(&mut self, c: Commitment) {
        let Some(call) = self.uncommitted.remove(&c.index) else {
            if !self.overloaded {
                self.integrity(format!(
                    "commitment record for call {}, which is not an auditable call awaiting its commitment",
                    c.index
                ));
            }
            return;
        };
        let Some(challenger) = self.challenger.clone() else {
            return;
        };
        self.judged_any = true;
        let Some(seed) = challenger.seed(&call, &c.commitment) else {
            return;
        };
        let counts = schedule::plan_counts(challenger.config(), &call);
        let config = *challenger.config();
        if let Some(plan) = self.expect_sample(&call, counts, |call| {
            schedule::plan_from_seed(&config, call, seed)
        }) {
            self.pending_indices += counts.iter().sum::<u64>();
            self.commitments.insert(call.index, c.commitment);
            if let Some(outbox) = &mut self.outbox {
                outbox.push(Challenge {
                    index: call.index,
                    plan: plan.clone(),
                });
            }
            self.pending.insert(call.index, (call, plan));
        }
    }

    /// Commit mode: a challenged call's opening, checked against its commitment and
    /// then as a sample.
    fn on_opening(&mut self, o: Opening) {
        self.samples_received += 1;
        let (Some((call, plan)), Some(commitment)) = (
            self.take_pending(o.index),
            self.commitments.remove(&o.index),
        ) else {
            self.integrity(format!(
                "opening record for call {}, which was not challenged or was already resolved",
                o.index
            ));
            return;
        };
        match o.verify(&call, &plan, &commitment) {
            Ok(sample) => self.check_sample(call, plan, sample),
            Err(message) => {
                self.report.mismatched += 1;
                self.report.timeline.bin(call.index).failed += 1;
                self.push_failure(Failure {
                    kind: FailureKind::NotAsCommitted,
                    call: Some(describe(&call)),
                    message,
                });
            }
        }
    }

    /// Takes a sampled call awaiting its data off the pending set.
    fn take_pending(&mut self, index: u64) -> Option<(GemmCall, Plan)> {
        let (call, plan) = self.pending.remove(&index)?;
        self.pending_indices -= (plan.rows.len() + plan.cols.len() + plan.batches.len()) as u64;
        Some((call, plan))
    }

    fn on_gap(&mut self, gap: Gap) {
        for index in gap.indices {
            if gap.reason == GapReason::NotCommitted {
                match self.uncommitted.remove(&index) {
                    Some(call) => {
                        if self.report.uncommitted_reason.is_none() {
                            let why: String = gap.detail.chars().take(300).collect();
                            self.report.uncommitted_reason = Some(why);
                        }
                        self.report
                            .count_unaudited(Unaudited::Uncommitted, call.flops());
                        self.report.timeline.bin(index).not_audited += 1;
                    }
                    None => self.integrity(format!(
                        "gap record says call {index} was not committed, but it is not an auditable call awaiting its commitment"
                    )),
                }
                continue;
            }
            if let Some((call, _)) = self.take_pending(index) {
                self.commitments.remove(&index);
                self.report.count_unaudited(Unaudited::Gaps, call.flops());
                self.report.timeline.bin(index).unchecked += 1;
                *self
                    .report
                    .gap_reasons
                    .entry(format!("{:?}", gap.reason))
                    .or_default() += 1;
            } else {
                self.integrity(format!(
                    "gap record names call {index}, which is not a sampled call awaiting its data"
                ));
            }
        }
    }

    fn on_sample(&mut self, sample: Sample) {
        self.samples_received += 1;
        let Some((call, plan)) = self.take_pending(sample.index) else {
            self.integrity(format!(
                "sample record for call {}, which the schedule did not select or which was already resolved",
                sample.index
            ));
            return;
        };
        self.check_sample(call, plan, sample);
    }

    /// Checks a sample that fits a pending call (or an opening made into one): weight
    /// references and identity, then the arithmetic, now or in the next batch.
    fn check_sample(&mut self, call: GemmCall, plan: Plan, sample: Sample) {
        let mut held = Held::default();
        if sample.check_shape(&call, &plan).is_ok() {
            let referenced = match self.resolve_references(&call, &plan, &sample) {
                Ok((sides, rows)) => {
                    held = rows;
                    sides
                }
                Err(message) => {
                    self.report.mismatched += 1;
                    self.report.timeline.bin(call.index).failed += 1;
                    self.push_failure(Failure {
                        kind: FailureKind::Malformed,
                        call: Some(describe(&call)),
                        message,
                    });
                    return;
                }
            };
            self.judge_weights(&call, &plan, &sample, referenced);
        }
        if self.threads > 1 {
            // held rows are not in memory, but they are work: counted, batches stay
            // about as large in work as with the rows sent
            self.deferred_bytes +=
                sample_bytes(&sample) + held.iter().flatten().map(HeldRows::bytes).sum::<usize>();
            self.deferred.push((call, plan, sample, held));
            if self.deferred.len() >= BATCH_SAMPLES || self.deferred_bytes >= BATCH_BYTES {
                self.submit_batch();
                // Apply what is done; wait only when too much is out.
                let limit = MAX_BATCHES.min(2 * self.threads);
                while self.apply_batch(
                    self.pool.as_ref().is_some_and(|p| p.in_flight() >= limit)
                        || self.bytes_out.iter().sum::<usize>() > MAX_BYTES_OUT,
                ) {}
            }
            return;
        }
        let widen = self.policy.reduced_precision_reductions;
        let outcome = verify_sample(&call, &plan, &sample, &held, widen);
        self.apply_outcome(&call, outcome);
    }

    /// Hands the gathered samples to the audit's threads as one batch.
    fn submit_batch(&mut self) {
        if self.deferred.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.deferred);
        self.bytes_out
            .push_back(std::mem::take(&mut self.deferred_bytes));
        let (threads, workers) = (self.threads, self.workers.clone());
        let widen = self.policy.reduced_precision_reductions;
        self.pool
            .get_or_insert_with(|| {
                let check = move |batch: Batch| -> Outcomes {
                    batch
                        .into_iter()
                        .map(|(call, plan, sample, held)| {
                            let outcome = verify_sample(&call, &plan, &sample, &held, widen);
                            (call, outcome)
                        })
                        .collect()
                };
                match workers {
                    Some(w) => Pool::on(w, check),
                    None => Pool::new(threads, check),
                }
            })
            .submit(batch);
    }

    /// Applies the outcomes of the oldest batch out, waiting for them if `wait`; false
    /// when there was none (or, without waiting, none ready).
    fn apply_batch(&mut self, wait: bool) -> bool {
        let Some(outcomes) = self.pool.as_mut().and_then(|p| p.next(wait)) else {
            return false;
        };
        self.bytes_out.pop_front();
        self.applying = true;
        for (call, outcome) in outcomes {
            self.apply_outcome(&call, outcome);
        }
        self.applying = false;
        true
    }

    /// Checks every deferred sample and applies the outcomes in stream order.
    fn check_deferred(&mut self) {
        self.submit_batch();
        while self.apply_batch(true) {}
    }

    /// Counts one sample's arithmetic outcome into the report.
    fn apply_outcome(&mut self, call: &GemmCall, outcome: Result<SampleOutcome, String>) {
        match outcome {
            Err(message) => {
                self.report.mismatched += 1;
                self.report.timeline.bin(call.index).failed += 1;
                self.push_failure(Failure {
                    kind: FailureKind::Malformed,
                    call: Some(describe(call)),
                    message,
                });
            }
            Ok(outcome) => {
                self.report.entries_checked += outcome.entries;
                self.report
                    .errors
                    .entry(types(call))
                    .or_default()
                    .add(&outcome.errors);
                if outcome.unverifiable {
                    self.report
                        .count_unaudited(Unaudited::Unverifiable, call.flops());
                }
                if outcome.worst_rel > self.report.worst_rel_error {
                    self.report.worst_rel_error = outcome.worst_rel;
                }
                if outcome.worst_ratio > self.report.worst_tolerance_ratio {
                    self.report.worst_tolerance_ratio = outcome.worst_ratio;
                }
                if outcome.worst_precision > self.report.worst_precision_ratio {
                    self.report.worst_precision_ratio = outcome.worst_precision;
                }
                let bin = self.report.timeline.bin(call.index);
                if outcome.mismatches.is_empty() {
                    if outcome.unverifiable {
                        bin.unchecked += 1;
                    } else {
                        bin.verified += 1;
                        self.report.verified += 1;
                        self.report.replayed_verified += call.has(flags::REPLAYED) as u64;
                    }
                } else {
                    bin.failed += 1;
                    self.report.mismatched += 1;
                    self.report.entries_mismatched += outcome.mismatches.len() as u64;
                    let shown = outcome.mismatches.len().min(3);
                    for (kind, message) in &outcome.mismatches[..shown] {
                        self.push_failure(Failure {
                            kind: *kind,
                            call: Some(describe(call)),
                            message: message.clone(),
                        });
                    }
                }
            }
        }
    }

    /// Finds the held rows each operand sent as a reference names, after checking the
    /// reference against them (docs/PROTOCOL.md, "Sample record"). Returns the
    /// referenced sides and where their rows lie; an error names the tensor and what
    /// does not fit.
    fn resolve_references(
        &self,
        call: &GemmCall,
        plan: &Plan,
        sample: &Sample,
    ) -> Result<(Vec<SideMatch>, Held), String> {
        let mut sides = Vec::new();
        let mut held = Held::default();
        let [held_a, held_b] = &mut held;
        for (side, data, dtype, indices, rows) in [
            (Side::A, &sample.a_rows, call.a.dtype, &plan.rows, held_a),
            (Side::B, &sample.b_cols, call.b.dtype, &plan.cols, held_b),
        ] {
            let OperandData::Reference {
                tensor,
                matrices,
                evidence,
            } = data
            else {
                continue;
            };
            let Some(policy) = &self.weights else {
                return Err(format!(
                    "the capture references verifier-held weights (tensor id {tensor}); pass --weights with the files the live verifier held"
                ));
            };
            let (found, at) = WeightRegistry::resolve(
                &policy.registry,
                side,
                *tensor,
                dtype,
                call.k,
                indices,
                matrices,
                evidence,
            )?;
            *rows = Some(found);
            sides.push(at);
        }
        Ok((sides, held))
    }

    /// Weight identity of one sampled call whose data fit its plan. `referenced`: the
    /// operands the prover sent as references to held tensors (already resolved, so
    /// they are those tensors by construction and are not compared again).
    fn judge_weights(
        &mut self,
        call: &GemmCall,
        plan: &Plan,
        sample: &Sample,
        referenced: Vec<SideMatch>,
    ) {
        let (Some(policy), Some(w)) = (&self.weights, &mut self.report.weights) else {
            return;
        };
        let is_ref = |side| referenced.iter().any(|m: &SideMatch| m.side == side);
        let identity = policy.registry.identify(
            call,
            plan,
            sample.a_rows.inline().filter(|_| !is_ref(Side::A)),
            sample.b_cols.inline().filter(|_| !is_ref(Side::B)),
            policy.required && referenced.is_empty(),
        );
        w.judged += 1;
        if !referenced.is_empty() {
            w.referenced += 1;
        }
        let identity = match identity {
            _ if referenced.is_empty() => identity,
            Identity::Matched(found) => {
                Identity::Matched(referenced.into_iter().chain(found).collect())
            }
            Identity::Unmatched(_) => Identity::Matched(referenced),
        };
        match identity {
            Identity::Matched(found) => {
                w.matched += 1;
                let mut counted = BTreeSet::new();
                for m in found {
                    if counted.insert(m.tensor.clone()) {
                        *w.tensors.entry(m.tensor.clone()).or_default() += 1;
                    }
                    *w.forms
                        .entry(m.tensor.clone())
                        .or_default()
                        .entry(m.form())
                        .or_default() += 1;
                }
            }
            Identity::Unmatched(u) => {
                w.unmatched += 1;
                if u.had_candidates() {
                    w.unmatched_differing += 1;
                }
                if w.required {
                    let message = unmatched_message(call, plan, sample, &u);
                    self.push_failure(Failure {
                        kind: FailureKind::UnknownWeights,
                        call: Some(describe(call)),
                        message,
                    });
                }
            }
        }
    }

    /// Ends the audit: a stream without its end record is truncated, every sampled call
    /// still awaiting its data is missing, and the stream is judged by the policy.
    pub fn finish(mut self) -> StreamReport {
        self.check_deferred();
        if self.report.header.is_none() {
            self.integrity("the stream has no header".into());
        } else if !self.ended && self.report.integrity_errors == 0 {
            self.integrity("the stream ends without its end record (truncated)".into());
        }
        let uncommitted = std::mem::take(&mut self.uncommitted);
        if !uncommitted.is_empty() && self.ended {
            let mut ranges: Vec<(u64, u64)> = Vec::new();
            for &i in uncommitted.keys() {
                match ranges.last_mut() {
                    Some((_, end)) if *end == i => *end = i + 1,
                    _ => ranges.push((i, i + 1)),
                }
            }
            let ranges = ranges_text(&ranges);
            self.integrity(format!(
                "{} auditable calls have neither a commitment nor a \"not committed\" gap: {ranges}",
                uncommitted.len()
            ));
        }
        let pending = std::mem::take(&mut self.pending);
        for (_, (call, _)) in pending {
            self.report.missing += 1;
            self.report.timeline.bin(call.index).unchecked += 1;
            self.push_failure(Failure {
                kind: FailureKind::Missing,
                call: Some(describe(&call)),
                message: "the schedule selected this call; neither its sample nor a gap arrived"
                    .into(),
            });
        }
        self.report.apply_policy(&self.policy);
        self.report
    }
}

/// The bytes a sample holds (its data, not its fixed fields).
fn sample_bytes(s: &Sample) -> usize {
    let operand = |d: &OperandData| match d {
        OperandData::Inline(b) => b.len(),
        OperandData::Reference { evidence, .. } => evidence.len(),
    };
    operand(&s.a_rows)
        + operand(&s.b_cols)
        + s.c_in.len()
        + s.d_out.len()
        + s.bias.len()
        + s.scale_rows.len()
        + s.scale_cols.len()
}

/// A call's operand, result and compute types, e.g. "bf16xbf16->bf16 compute F32".
pub fn types(call: &GemmCall) -> String {
    format!(
        "{}x{}->{} compute {:?}",
        call.a.dtype.name(),
        call.b.dtype.name(),
        call.d.dtype.name(),
        call.compute
    )
}

/// One line naming a call: index, entry point, shape and types.
pub fn describe(call: &GemmCall) -> String {
    let replay = match &call.replay {
        Some(r) => format!(
            " (graph {} replay {} of executable {}, GEMM {} of the graph)",
            r.graph, r.replay, r.exec, r.node
        ),
        None => String::new(),
    };
    format!(
        "call {}{replay} {:?} m={} n={} k={} batch={} {}",
        call.index,
        call.entry,
        call.m,
        call.n,
        call.k,
        call.batch,
        types(call)
    )
}

/// Why no operand of a call matched: each side tried, and the closest candidate.
fn unmatched_message(call: &GemmCall, plan: &Plan, sample: &Sample, u: &Unmatched) -> String {
    let sides = [
        (
            "op(A)",
            "m",
            call.m,
            call.a.dtype,
            plan.rows.len(),
            "rows",
            sample.a_rows.inline().is_some(),
            u.candidates[0],
        ),
        (
            "op(B)",
            "n",
            call.n,
            call.b.dtype,
            plan.cols.len(),
            "columns",
            sample.b_cols.inline().is_some(),
            u.candidates[1],
        ),
    ];
    let mut parts = Vec::new();
    for (op, dim, outer, dtype, sampled, what, inline, candidates) in sides {
        let shape = format!("{op} ({} {dim}={outer} k={})", dtype.name(), call.k);
        parts.push(if !inline {
            format!("{shape} was not sent inline")
        } else if candidates == 0 {
            format!("{shape}: no held tensor of this shape and type")
        } else {
            format!(
                "{shape}: {candidates} held tensor{} of this shape and type, none equal at the {} sampled {what}",
                if candidates == 1 { "" } else { "s" },
                sampled * plan.batches.len()
            )
        });
    }
    let mut text = format!(
        "neither operand is a held weight tensor: {}",
        parts.join("; ")
    );
    if let Some(c) = &u.closest {
        text += &format!(
            "; closest: {} as {}, {} of {} sampled elements differ",
            c.at.tensor,
            c.at.form(),
            c.differing,
            c.compared
        );
    }
    text
}

struct SampleOutcome {
    entries: u64,
    mismatches: Vec<(FailureKind, String)>,
    worst_precision: f64,
    worst_rel: f64,
    worst_ratio: f64,
    unverifiable: bool,
    errors: ErrorHistogram,
}

fn decode(
    what: &str,
    dtype: mmaudit_protocol::call::DType,
    bytes: &[u8],
) -> Result<Vec<f64>, String> {
    let mut out = Vec::new();
    num::decode_into(dtype, bytes, &mut out).map_err(|e| format!("{what}: {e}"))?;
    Ok(out)
}

fn resolve(
    name: &str,
    declared: mmaudit_protocol::call::Scalar,
    sent: Option<f64>,
) -> Result<f64, String> {
    use mmaudit_protocol::call::Scalar;
    match (declared, sent) {
        (Scalar::Host(v), None) => Ok(v),
        (Scalar::Device, Some(v)) if v.is_finite() => Ok(v),
        (Scalar::Device, Some(v)) => Err(format!("device-side {name} is {v}")),
        (Scalar::Device, None) => Err(format!("device-side {name} was not sent")),
        (Scalar::Host(_), Some(_)) => Err(format!(
            "{name} was sent although the call passed it from the host"
        )),
    }
}

fn scale(name: &str, flag: bool, sent: Option<f32>) -> Result<f64, String> {
    match (flag, sent) {
        (false, None) => Ok(1.0),
        (true, Some(v)) if v.is_finite() => Ok(v as f64),
        (true, Some(v)) => Err(format!("{name} is {v}")),
        (true, None) => Err(format!("{name} was declared but not sent")),
        (false, Some(_)) => Err(format!("{name} was sent but not declared")),
    }
}

/// f32 scales sent for rows or columns (their count was checked against the plan).
fn vector_scales(name: &str, bytes: &[u8]) -> Result<Vec<f64>, String> {
    bytes
        .chunks_exact(4)
        .map(|b| {
            let v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            if v.is_finite() {
                Ok(v as f64)
            } else {
                Err(format!("one of the {name} is {v}"))
            }
        })
        .collect()
}

/// A sample's operands as the recomputation reads them.
enum Operands<'a> {
    /// the call's error model, the rows of op(A) as sent or held (each laid out for the
    /// lane dot product when its entries come up, so that it is still in the cache for
    /// them), and the columns of op(B) laid out
    Lanes(ErrorModel, Vec<&'a [u8]>, Vec<Lanes>),
    /// all rows of op(A), then all columns of op(B), decoded in k order
    Plain(Vec<f64>, Vec<f64>),
}

/// One operand's sampled vectors as the recomputation reads them: sent with the sample,
/// or rows of a held tensor read where they lie.
enum Vectors<'a> {
    Sent(&'a [u8]),
    Held(&'a HeldRows),
}

impl<'a> Vectors<'a> {
    /// The vectors, each `len` bytes.
    fn each(&self, len: usize) -> Vec<&'a [u8]> {
        match *self {
            Vectors::Sent(bytes) => bytes.chunks_exact(len).collect(),
            Vectors::Held(rows) => rows.rows().collect(),
        }
    }

    fn of(data: &'a OperandData, held: &'a Option<HeldRows>) -> Result<Vectors<'a>, String> {
        match (held, data) {
            (Some(rows), _) => Ok(Vectors::Held(rows)),
            (None, OperandData::Inline(bytes)) => Ok(Vectors::Sent(bytes)),
            (None, OperandData::Reference { .. }) => {
                Err("an operand reference was not resolved".into())
            }
        }
    }
}

/// Why an honest GPU may have failed a call that allowed reduced-precision reductions
/// judged strictly, appended to its failures.
const REDUCED_PRECISION_HINT: &str = "; the call let cuBLAS add split-k parts in the output type, which an honest GPU may do: disallow it in the program (PyTorch: torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False, and the fp16 one) or accept it with --allow-reduced-precision-reductions";

/// Checks every entry of one sample against its call and plan; `widen`: the policy
/// accepts reduced-precision reductions (flag REDUCED_PRECISION_REDUCTION widens the
/// bounds only then).
fn verify_sample(
    call: &GemmCall,
    plan: &Plan,
    s: &Sample,
    held: &Held,
    widen: bool,
) -> Result<SampleOutcome, String> {
    s.check_shape(call, plan)?;
    let hint = if call.has(flags::REDUCED_PRECISION_REDUCTION) && !widen {
        REDUCED_PRECISION_HINT
    } else {
        ""
    };
    let strict;
    let call = if !hint.is_empty() {
        strict = GemmCall {
            flags: call.flags & !flags::REDUCED_PRECISION_REDUCTION,
            ..call.clone()
        };
        &strict
    } else {
        call
    };
    let scalars = Scalars {
        alpha: resolve("alpha", call.alpha, s.alpha)?,
        beta: resolve("beta", call.beta, s.beta)?,
        scale_a: scale("scale_a", call.has(flags::SCALE_A), s.scale_a)?,
        scale_b: scale("scale_b", call.has(flags::SCALE_B), s.scale_b)?,
        scale_c: scale("scale_c", call.has(flags::SCALE_C), s.scale_c)?,
        scale_d: scale("scale_d", call.has(flags::SCALE_D), s.scale_d)?,
    };
    let a_vectors = Vectors::of(&s.a_rows, &held[0])?;
    let b_vectors = Vectors::of(&s.b_cols, &held[1])?;
    let k = call.k as usize;
    // Rows and columns laid out once for the lane dot product as they are decoded, each
    // used by every entry it meets; f64 and exact integer arithmetic take the plain path.
    let lane_model = recompute::lane_model(call).filter(|_| k > 0);
    let operands = if let Some(model) = lane_model {
        let cols = b_vectors
            .each(k * call.b.dtype.size())
            .into_iter()
            .map(|v| Lanes::from_bytes(call.b.dtype, v).map_err(|e| format!("op(B) columns: {e}")))
            .collect::<Result<_, _>>()?;
        Operands::Lanes(model, a_vectors.each(k * call.a.dtype.size()), cols)
    } else {
        let plain = |what: &str, dtype: DType, v: &Vectors| match v {
            Vectors::Sent(bytes) => decode(what, dtype, bytes),
            Vectors::Held(rows) => decode(what, dtype, &rows.to_bytes()),
        };
        Operands::Plain(
            plain("op(A) rows", call.a.dtype, &a_vectors)?,
            plain("op(B) columns", call.b.dtype, &b_vectors)?,
        )
    };
    let c = decode("C entries", call.c.dtype, &s.c_in)?;
    let d = decode("D entries", call.d.dtype, &s.d_out)?;
    let bias = decode("bias", call.bias_type, &s.bias)?;
    let per_batch_bias = call.has(flags::BIAS_PER_BATCH);
    // Per-row (A) and per-column (B) scales replace the per-tensor ones entry by entry.
    let row_scales = vector_scales("row scales", &s.scale_rows)?;
    let col_scales = vector_scales("column scales", &s.scale_cols)?;

    let (nr, nc) = (plan.rows.len(), plan.cols.len());
    let mut a_lanes = Lanes::default();
    let mut out = SampleOutcome {
        entries: 0,
        mismatches: Vec::new(),
        worst_precision: 0.0,
        worst_rel: 0.0,
        worst_ratio: 0.0,
        unverifiable: false,
        errors: ErrorHistogram::default(),
    };
    for (bi, &batch) in plan.batches.iter().enumerate() {
        for (ri, &row) in plan.rows.iter().enumerate() {
            let a_at = bi * nr + ri;
            // the next row is asked for now, so that it is on its way when its turn
            // comes: held rows lie anywhere in a large file
            if let Operands::Lanes(_, rows, _) = &operands {
                rows.get(a_at + 1).copied().map(recompute::prefetch);
            }
            // a bf16 row that meets one column is laid out as it is multiplied
            let once = nc == 1 && call.a.dtype == DType::BF16;
            if let (Operands::Lanes(_, rows, _), false) = (&operands, once) {
                a_lanes
                    .fill_bytes(call.a.dtype, rows[a_at])
                    .map_err(|e| format!("op(A) rows: {e}"))?;
            }
            for (ci, &col) in plan.cols.iter().enumerate() {
                let b_at = bi * nc + ci;
                let e = a_at * nc + ci;
                let c_in = c.get(e).copied().unwrap_or(0.0);
                // one bias vector per sampled batch entry with BIAS_PER_BATCH
                let bias = bias.get(if per_batch_bias { a_at } else { ri }).copied();
                let mut scalars = scalars;
                if let Some(&v) = row_scales.get(ri) {
                    scalars.scale_a = v;
                }
                if let Some(&v) = col_scales.get(ci) {
                    scalars.scale_b = v;
                }
                let r = match &operands {
                    Operands::Lanes(model, rows, cols) => recompute::check_entry_lanes(
                        (call, model),
                        &scalars,
                        (
                            if once {
                                Row::Bf16(rows[a_at])
                            } else {
                                Row::Laid(&a_lanes)
                            },
                            &cols[b_at],
                        ),
                        c_in,
                        bias,
                        d[e],
                    ),
                    Operands::Plain(a, b) => {
                        let entry = Entry {
                            a_row: &a[a_at * k..][..k],
                            b_col: &b[b_at * k..][..k],
                            c_in,
                            bias,
                            claimed: d[e],
                        };
                        recompute::check_entry(call, &scalars, &entry)
                    }
                }
                .map_err(|err| format!("entry batch {batch} row {row} col {col}: {err}"))?;
                out.entries += 1;
                out.unverifiable |= r.unverifiable();
                // Relative error means something only where the reference stands out of
                // the noise the tolerance allows (not for results that cancel to ~0).
                if r.reference.abs() > r.tolerance
                    && r.rel_error.is_finite()
                    && r.rel_error > out.worst_rel
                {
                    out.worst_rel = r.rel_error;
                }
                if r.ratio.is_finite() && r.ratio > out.worst_ratio {
                    out.worst_ratio = r.ratio;
                }
                out.worst_precision = out.worst_precision.max(r.precision_ratio());
                out.errors.entries[ratio_bucket(r.ratio, r.unverifiable(), r.passed())] += 1;
                out.errors.imprecise += (r.verdict == recompute::Verdict::Imprecise) as u64;
                match r.verdict {
                    recompute::Verdict::Fail => out.mismatches.push((
                        FailureKind::Mismatch,
                        format!(
                            "entry batch {batch} row {row} col {col}: claimed {:e}, recomputed {:e}, tolerance {:e}{hint}",
                            r.claimed, r.reference, r.tolerance
                        ),
                    )),
                    recompute::Verdict::Imprecise => out.mismatches.push((
                        FailureKind::Precision,
                        format!(
                            "entry batch {batch} row {row} col {col}: claimed {:e}, recomputed {:e}: {:e} beyond what rounds to the claim, above the declared-precision bound {:e} (tolerance {:e}){hint}",
                            r.claimed, r.reference, r.precision_gap, r.precision_bound, r.tolerance
                        ),
                    )),
                    _ => {}
                }
            }
        }
    }
    Ok(out)
}

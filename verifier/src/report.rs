//! The verdict of an audit and its two renderings: a human summary and JSON.
//!
//! Every number here was counted by the verifier itself from what it decoded and
//! recomputed; none is copied from the prover's own claims.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use mmaudit_protocol::stream::StreamHeader;
use serde_json::{json, Value};

use crate::policy::{ppm_text, Policy, Tally, Unaudited};

/// Why a stream failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// A recomputed entry differs from the claimed one beyond the tolerance.
    Mismatch,
    /// A sample record whose contents do not fit its call and plan.
    Malformed,
    /// The schedule selected a call and neither its sample nor a gap arrived.
    Missing,
    /// Authentication, sequence, truncation or decoding failure.
    Integrity,
    /// The prover announced that it stopped auditing.
    Disabled,
    /// More samples were dropped than the gap policy allows.
    GapRate,
    /// Neither operand of a sampled call is a tensor of the weights the verifier holds
    /// (a failure only with `--require-weights`).
    UnknownWeights,
    /// The stream was sampled at rates below the verifier's policy.
    SamplingBelowPolicy,
    /// A category of calls that were not audited exceeds its policy limit.
    Coverage,
    /// Entries within the tolerance but beyond the declared-precision bound: computed
    /// with less precision than declared, or from slightly different operands.
    Precision,
    /// Calls of the stream before this segment that no verifier received (`serve`:
    /// an earlier segment ended before they were read, or was never seen).
    Unseen,
    /// Commit mode: an opening that does not hash to its call's commitment (data
    /// altered after committing, or vectors other than the challenged ones).
    NotAsCommitted,
}

impl FailureKind {
    fn name(self) -> &'static str {
        match self {
            FailureKind::Mismatch => "mismatch",
            FailureKind::Malformed => "malformed sample",
            FailureKind::Missing => "missing sample",
            FailureKind::Integrity => "integrity",
            FailureKind::Disabled => "auditing disabled",
            FailureKind::GapRate => "gap rate",
            FailureKind::UnknownWeights => "unknown weights",
            FailureKind::SamplingBelowPolicy => "sampling below policy",
            FailureKind::Coverage => "coverage",
            FailureKind::Precision => "precision lower than declared",
            FailureKind::Unseen => "calls seen by no verifier",
            FailureKind::NotAsCommitted => "opening does not match the commitment",
        }
    }
}

/// Call ranges `first..end` (end exclusive) as "a..b, c..d" (inclusive ends).
pub fn ranges_text(ranges: &[(u64, u64)]) -> String {
    let shown: Vec<String> = ranges
        .iter()
        .map(|(f, e)| format!("{f}..{}", e - 1))
        .collect();
    shown.join(", ")
}

/// One reason for failure, with the call it concerns.
#[derive(Clone, Debug)]
pub struct Failure {
    /// what kind of failure
    pub kind: FailureKind,
    /// the call, described in one line (index, entry point, shape, types)
    pub call: Option<String>,
    /// what exactly was wrong
    pub message: String,
}

/// Weight identity of one stream: which held tensors its sampled calls used.
///
/// Judged only on sampled calls whose sample arrived with data of the right size; it
/// never changes the arithmetic verdict of a call.
#[derive(Clone, Debug, Default)]
pub struct WeightReport {
    /// `--require-weights`: every unmatched sampled call fails the stream
    pub required: bool,
    /// sampled calls judged
    pub judged: u64,
    /// judged calls with an operand equal to a held tensor
    pub matched: u64,
    /// judged calls with an operand sent as a reference to a held tensor (resolved and
    /// recomputed from the verifier's copy); counted in `matched` too
    pub referenced: u64,
    /// judged calls with neither operand equal to a held tensor
    pub unmatched: u64,
    /// unmatched calls for which a held tensor of the right shape and type existed but
    /// differed (the others had no tensor of their shape: activation-only GEMMs, or
    /// weights of another architecture)
    pub unmatched_differing: u64,
    /// tensor name -> sampled calls that used it
    pub tensors: BTreeMap<String, u64>,
    /// tensor name -> how the operand related to it (e.g. "op(A) = W") -> sampled calls
    pub forms: BTreeMap<String, BTreeMap<String, u64>>,
}

impl WeightReport {
    /// True unless unmatched calls are required to match.
    pub fn passed(&self) -> bool {
        !self.required || self.unmatched == 0
    }

    /// The report as JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "tensors": self.tensors,
            "unmatched": self.unmatched,
            "required": self.required,
            "judged": self.judged,
            "matched": self.matched,
            "referenced": self.referenced,
            "unmatched_differing": self.unmatched_differing,
            "forms": self.forms,
        })
    }
}

/// Bins of a stream's calls in the order they were made. The ledger carries no clock:
/// the call index is the time axis. At most [`TIMELINE_BINS`] bins of `width` calls
/// each; when the stream outgrows them, neighbouring bins merge and the width doubles,
/// so the memory is fixed whatever the stream's length.
#[derive(Clone, Debug, Default)]
pub struct Timeline {
    /// the first call binned (the segment's first ledger record)
    pub first: Option<u64>,
    /// calls per bin (a power of two; 0 before the first call)
    pub width: u64,
    /// the bins, in call order
    pub bins: Vec<Bin>,
}

/// Most bins a [`Timeline`] keeps.
pub const TIMELINE_BINS: usize = 64;

/// What happened to the calls of one [`Timeline`] bin.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bin {
    /// calls in the ledger
    pub calls: u64,
    /// FLOPs they claim
    pub flops: u128,
    /// calls run by CUDA graph replays
    pub replayed: u64,
    /// calls flagged as not audited (graph replays not gathered, no session, not
    /// modelled, rejected)
    pub not_audited: u64,
    /// calls recorded while a CUDA graph was captured (no work then)
    pub captures: u64,
    /// calls the schedule selected
    pub sampled: u64,
    /// sampled calls whose entries all matched
    pub verified: u64,
    /// sampled calls with a wrong entry, an imprecise one, or a malformed sample
    pub failed: u64,
    /// sampled calls not judged: dropped (gaps), missing, or unverifiable
    pub unchecked: u64,
}

impl Bin {
    fn add(&mut self, o: &Bin) {
        self.calls += o.calls;
        self.flops = self.flops.saturating_add(o.flops);
        self.replayed += o.replayed;
        self.not_audited += o.not_audited;
        self.captures += o.captures;
        self.sampled += o.sampled;
        self.verified += o.verified;
        self.failed += o.failed;
        self.unchecked += o.unchecked;
    }

    fn to_json(self) -> Value {
        json!({
            "calls": self.calls,
            "flops": self.flops as f64,
            "replayed": self.replayed,
            "not_audited": self.not_audited,
            "captures": self.captures,
            "sampled": self.sampled,
            "verified": self.verified,
            "failed": self.failed,
            "unchecked": self.unchecked,
        })
    }
}

impl Timeline {
    /// The bin of call `index`; the first call asked for starts the timeline.
    pub fn bin(&mut self, index: u64) -> &mut Bin {
        let first = *self.first.get_or_insert(index);
        self.width = self.width.max(1);
        let offset = index.saturating_sub(first);
        while offset / self.width >= TIMELINE_BINS as u64 {
            let merged = self
                .bins
                .chunks(2)
                .map(|pair| {
                    let mut b = pair[0];
                    if let Some(o) = pair.get(1) {
                        b.add(o);
                    }
                    b
                })
                .collect();
            self.bins = merged;
            self.width *= 2;
        }
        let at = (offset / self.width) as usize;
        if self.bins.len() <= at {
            self.bins.resize(at + 1, Bin::default());
        }
        &mut self.bins[at]
    }

    /// The timeline as JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "first_call": self.first,
            "calls_per_bin": self.width,
            "bins": self.bins.iter().map(|b| b.to_json()).collect::<Vec<_>>(),
        })
    }
}

/// Names of the buckets of [`ErrorHistogram`]: |claimed - reference| / tolerance,
/// exactly 0, then by decade; from 1 on the entry is beyond its tolerance; "unbounded"
/// counts the entries the tolerance model cannot bound (unverifiable).
pub const RATIO_BUCKETS: [&str; 11] = [
    "0",
    "<1e-6",
    "1e-6..1e-5",
    "1e-5..1e-4",
    "1e-4..1e-3",
    "1e-3..0.01",
    "0.01..0.1",
    "0.1..1",
    "1..10",
    ">=10",
    "unbounded",
];

/// The bucket of [`RATIO_BUCKETS`] an entry's error/tolerance ratio falls in. An entry
/// that passed is never put beyond its tolerance: an honest result that overflows to
/// infinity where D's type allows it passes with an infinite ratio, and counts in
/// "0.1..1".
pub fn ratio_bucket(ratio: f64, unverifiable: bool, passed: bool) -> usize {
    if unverifiable {
        return 10;
    }
    if passed && (ratio >= 1.0 || ratio.is_nan()) {
        return 7;
    }
    if ratio == 0.0 {
        return 0;
    }
    if ratio.is_nan() {
        return 9;
    }
    const EDGES: [f64; 8] = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0];
    1 + EDGES.iter().take_while(|&&e| ratio >= e).count()
}

/// The checked entries of one combination of types: how close each came to its
/// tolerance.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErrorHistogram {
    /// entries per bucket of [`RATIO_BUCKETS`]
    pub entries: [u64; RATIO_BUCKETS.len()],
    /// entries within the tolerance but beyond the declared-precision bound
    pub imprecise: u64,
}

impl ErrorHistogram {
    /// Adds another histogram's counts.
    pub fn add(&mut self, o: &ErrorHistogram) {
        for (a, b) in self.entries.iter_mut().zip(o.entries) {
            *a += b;
        }
        self.imprecise += o.imprecise;
    }
}

/// Counters and findings of one stream.
#[derive(Clone, Debug, Default)]
pub struct StreamReport {
    /// file path or peer address
    pub name: String,
    /// the stream's header, once authenticated
    pub header: Option<StreamHeader>,
    /// GEMM API calls in the ledger (a batched call is one call)
    pub calls: u64,
    /// calls the schedule selected (captured calls excluded)
    pub sampled: u64,
    /// sampled calls whose every checked entry matched
    pub verified: u64,
    /// sampled calls with at least one entry beyond tolerance or beyond the
    /// declared-precision bound, or a malformed sample
    pub mismatched: u64,
    /// sampled calls with neither sample nor gap
    pub missing: u64,
    /// sampled calls the prover reported as dropped
    pub gaps: u64,
    /// gap count per reason
    pub gap_reasons: BTreeMap<String, u64>,
    /// authentication, sequence, truncation and consistency errors
    pub integrity_errors: u64,
    /// calls run by CUDA graph replays the library could not gather (flags REPLAYED and
    /// CAPTURED): in the ledger, not audited
    pub captured: u64,
    /// calls recorded while a CUDA graph was being captured (CAPTURED without
    /// REPLAYED): they computed nothing then and claim no FLOPs; their work is ledgered
    /// at each replay
    pub capture_records: u64,
    /// calls run by CUDA graph replays (REPLAYED), audited or not
    pub replayed: u64,
    /// FLOPs of the replayed calls
    pub replayed_flops: u128,
    /// replayed calls the schedule selected
    pub replayed_sampled: u64,
    /// replayed calls verified
    pub replayed_verified: u64,
    /// calls made while the prover had no verifier session (flag NO_SESSION): in the
    /// ledger, not audited
    pub no_session: u64,
    /// calls the library rejected (flag REJECTED): nothing computed, no FLOPs claimed
    pub rejected: u64,
    /// commit mode: calls the prover declined to commit (gap "not committed")
    pub uncommitted: u64,
    /// calls that let cuBLAS add split-k parts in the output type (flag
    /// REDUCED_PRECISION_REDUCTION); judged with widened bounds only under the policy's
    /// `reduced_precision_reductions`
    pub reduced_precision: u64,
    /// commit mode: the prover's text for the first of them (at most 300 characters):
    /// why, in its words (a pinned ring too small for a call, say)
    pub uncommitted_reason: Option<String>,
    /// calls of the stream before this segment that no verifier received (`serve`
    /// only: see `serve::continuity`)
    pub unseen_calls: u64,
    /// those calls as ranges `first..end` (the first 64)
    pub unseen_ranges: Vec<(u64, u64)>,
    /// calls the protocol cannot describe exactly (flag UNMODELLED): in the ledger, not
    /// audited
    pub unmodelled: u64,
    /// FLOPs claimed by the ledger (2*m*n*k*batch summed)
    pub flops: u128,
    /// result entries recomputed
    pub entries_checked: u64,
    /// result entries beyond tolerance
    pub entries_mismatched: u64,
    /// largest |claimed - reference| / |reference| seen, over entries whose reference
    /// exceeds their tolerance (for results that cancel to about zero it means nothing)
    pub worst_rel_error: f64,
    /// largest |claimed - reference| / tolerance seen (below 1 means within tolerance)
    pub worst_tolerance_ratio: f64,
    /// largest distance of the reference from what rounds to the claim, over the
    /// declared-precision bound (above 1 fails as "precision lower than declared")
    pub worst_precision_ratio: f64,
    /// sampled calls with no wrong entry but at least one entry the tolerance model
    /// cannot bound (k too large for the compute type, or a possible overflow): neither
    /// verified nor failed
    pub unverifiable: u64,
    /// the end record arrived
    pub ended: bool,
    /// the prover's reason for disabling auditing, if it did
    pub disabled: Option<String>,
    /// informational notices from the prover
    pub notices: Vec<String>,
    /// failure details, the first ones
    pub failures: Vec<Failure>,
    /// failures beyond those kept
    pub failures_not_shown: u64,
    /// FLOPs of the sampled calls
    pub sampled_flops: u128,
    /// calls that declare work (nonzero FLOPs): the policy's shares count only these, so
    /// that empty calls cannot dilute them
    pub working_calls: u64,
    /// sampled calls that declare work
    pub sampled_working: u64,
    /// calls that declare work per category of calls not audited, indexed by
    /// [`Unaudited`]
    pub unaudited_working: [u64; crate::policy::CATEGORIES],
    /// FLOPs per category of calls not audited, indexed by [`Unaudited`] (rejected: as
    /// declared, although the prover claims they were not computed)
    pub unaudited_flops: [u128; crate::policy::CATEGORIES],
    /// the policy the stream was judged by, once judged ([`StreamReport::apply_policy`])
    pub policy: Option<Policy>,
    /// policy failures found by [`StreamReport::apply_policy`]
    pub policy_failures: u64,
    /// weight identity, when the verifier holds weights (`--weights`)
    pub weights: Option<WeightReport>,
    /// the calls binned in the order they were made
    pub timeline: Timeline,
    /// checked entries by error/tolerance, per combination of types ([`crate::audit::types`])
    pub errors: BTreeMap<String, ErrorHistogram>,
}

impl StreamReport {
    /// An empty report for a stream.
    pub fn new(name: &str) -> Self {
        StreamReport {
            name: name.to_string(),
            ..Default::default()
        }
    }

    /// gaps / sampled (0 when nothing was sampled)
    pub fn gap_rate(&self) -> f64 {
        self.tally(Unaudited::Gaps).shares(&self.sampled_tally()).0
    }

    /// Counts one call of `flops` FLOPs in a category of calls not audited: the flagged
    /// ones as their ledger records declare them, gaps and unverifiable sampled calls.
    pub fn count_unaudited(&mut self, what: Unaudited, flops: u128) {
        *match what {
            Unaudited::Captured => &mut self.captured,
            Unaudited::NoSession => &mut self.no_session,
            Unaudited::Unmodelled => &mut self.unmodelled,
            Unaudited::Rejected => &mut self.rejected,
            Unaudited::Unverifiable => &mut self.unverifiable,
            Unaudited::Gaps => &mut self.gaps,
            Unaudited::Uncommitted => &mut self.uncommitted,
        } += 1;
        let w = what as usize;
        self.unaudited_flops[w] = self.unaudited_flops[w].saturating_add(flops);
        self.unaudited_working[w] += (flops > 0) as u64;
    }

    /// Calls that declare work, and FLOPs, of one category of calls that were not
    /// audited.
    pub fn tally(&self, what: Unaudited) -> Tally {
        Tally {
            calls: self.unaudited_working[what as usize],
            flops: self.unaudited_flops[what as usize],
        }
    }

    /// Calls that declare work, and FLOPs, the schedule selected.
    pub fn sampled_tally(&self) -> Tally {
        Tally {
            calls: self.sampled_working,
            flops: self.sampled_flops,
        }
    }

    /// What a category's share is taken of: the sampled calls for unverifiable calls and
    /// gaps; otherwise every call that declares work, and as FLOPs those of the flagged
    /// (never sampled) calls plus an estimate of the others' from the sample, `sampled
    /// FLOPs / call rate`, when that is smaller than what the ledger claims. A prover
    /// can claim any FLOPs in calls the schedule did not pick (one enormous unsampled
    /// call would otherwise dilute every FLOPs share); the estimate counts only FLOPs
    /// that had the call rate's chance of being checked. In commit mode the calls not
    /// committed count as flagged ones: they had no chance of being challenged, and the
    /// challenged calls estimate the committed ones' FLOPs.
    fn base(&self, what: Unaudited) -> Tally {
        if what.of_sampled() {
            return self.sampled_tally();
        }
        let flagged = [
            Unaudited::Captured,
            Unaudited::NoSession,
            Unaudited::Unmodelled,
            Unaudited::Rejected,
            Unaudited::Uncommitted,
        ]
        .iter()
        .fold(0u128, |sum, &w| {
            sum.saturating_add(self.unaudited_flops[w as usize])
        });
        let claimed = self
            .flops
            .saturating_add(self.unaudited_flops[Unaudited::Rejected as usize]);
        let rate = self
            .header
            .as_ref()
            .map_or(0.0, |h| h.config.call_ppm as f64 / 1e6);
        let flops = if rate > 0.0 {
            let estimate = flagged as f64 + self.sampled_flops as f64 / rate;
            (claimed as f64).min(estimate) as u128
        } else {
            claimed
        };
        Tally {
            calls: self.working_calls,
            flops,
        }
    }

    /// Judges the stream by `policy`: its header's sampling rates against the floor, and
    /// each category of calls not audited against its limit (share of calls and of
    /// FLOPs). Call once, when the stream has ended; every shortfall is a failure.
    pub fn apply_policy(&mut self, policy: &Policy) {
        let mut found = Vec::new();
        if let Some(h) = &self.header {
            let short = policy.sampling_shortfalls(&h.config);
            if !short.is_empty() {
                found.push((
                    FailureKind::SamplingBelowPolicy,
                    format!(
                        "the stream was sampled at rates the verifier does not accept: {}",
                        short.join("; ")
                    ),
                ));
            }
        }
        for what in Unaudited::ALL {
            let (tally, base) = (self.tally(what), self.base(what));
            let (calls, flops) = tally.shares(&base);
            let limit = policy.limit(what);
            if calls > limit || flops > limit {
                let kind = if what == Unaudited::Gaps {
                    FailureKind::GapRate
                } else {
                    FailureKind::Coverage
                };
                found.push((
                    kind,
                    format!(
                        "{} of {} {}calls ({:.2}%, {:.2}% of their FLOPs) {}: above the policy's {:.2}% ({})",
                        tally.calls,
                        base.calls,
                        if what.of_sampled() { "sampled " } else { "" },
                        100.0 * calls,
                        100.0 * flops,
                        what.meaning(),
                        100.0 * limit,
                        what.flag()
                    ),
                ));
            }
        }
        // Judged again (by another policy), a stream keeps every earlier failure.
        self.policy_failures += found.len() as u64;
        // Policy failures go first: they say whether the rest means anything.
        let mut failures: Vec<Failure> = found
            .into_iter()
            .map(|(kind, message)| Failure {
                kind,
                call: None,
                message,
            })
            .collect();
        failures.append(&mut self.failures);
        self.failures = failures;
        self.policy = Some(policy.clone());
    }

    /// True when nothing is wrong with the stream.
    pub fn passed(&self) -> bool {
        self.mismatched == 0
            && self.missing == 0
            && self.unseen_calls == 0
            && self.integrity_errors == 0
            && self.disabled.is_none()
            && self.ended
            && self.policy.is_some()
            && self.policy_failures == 0
            && self.weights.as_ref().is_none_or(WeightReport::passed)
    }

    /// The report as JSON.
    pub fn to_json(&self) -> Value {
        let header = self.header.as_ref().map(|h| {
            json!({
                "key_id": format!("{:016x}", h.key_id),
                "stream_id": format!("{:016x}", h.stream_id),
                "segment": h.segment,
                "first_index": h.first_index,
                "pid": h.pid,
                "host": h.host,
                "producer": h.producer,
                "mode": mode_name(h),
                "devices": h.devices,
                "started_unix_ns": h.started_unix_ns,
                "call_rate_ppm": h.config.call_ppm,
                "row_rate_ppm": h.config.row_ppm,
                "col_rate_ppm": h.config.col_ppm,
                "batch_rate_ppm": h.config.batch_ppm,
            })
        });
        let reduced_precision = json!({
            "calls": self.reduced_precision,
            "widened": self.policy.as_ref().is_some_and(|p| p.reduced_precision_reductions),
        });
        json!({
            "name": self.name,
            "verdict": if self.passed() { "pass" } else { "fail" },
            "calls": self.calls,
            "sampled": self.sampled,
            "verified": self.verified,
            "mismatched": self.mismatched,
            "missing": self.missing,
            "gaps": self.gaps,
            "gap_reasons": self.gap_reasons,
            "gap_rate": self.gap_rate(),
            "max_gap_rate": self.policy.as_ref().map(|p| p.limit(Unaudited::Gaps)),
            "integrity_errors": self.integrity_errors,
            "captured_not_audited": self.captured,
            "graphs": {
                "capture_records": self.capture_records,
                "replayed": self.replayed,
                "replayed_flops": self.replayed_flops as f64,
                "replayed_sampled": self.replayed_sampled,
                "replayed_verified": self.replayed_verified,
                "replayed_not_audited": self.captured,
                "eager": self.calls - self.capture_records - self.replayed,
            },
            "no_session_not_audited": self.no_session,
            "rejected": self.rejected,
            "uncommitted": self.uncommitted,
            "uncommitted_first_reason": self.uncommitted_reason,
            "reduced_precision_reductions": reduced_precision,
            "unseen_calls": self.unseen_calls,
            "unseen_ranges": self.unseen_ranges,
            "unmodelled_not_audited": self.unmodelled,
            "unverifiable": self.unverifiable,
            "flops": self.flops as f64,
            "sampled_flops": self.sampled_flops as f64,
            "not_audited": self.not_audited_json(),
            "policy": self.policy.as_ref().map(policy_json),
            "entries_checked": self.entries_checked,
            "entries_mismatched": self.entries_mismatched,
            "worst_rel_error": self.worst_rel_error,
            "worst_tolerance_ratio": self.worst_tolerance_ratio,
            "worst_precision_ratio": self.worst_precision_ratio,
            "ended": self.ended,
            "disabled": self.disabled,
            "notices": self.notices,
            "header": header,
            "weights": self.weights.as_ref().map(WeightReport::to_json),
            "failures": self.failures.iter().map(|f| json!({
                "kind": f.kind.name(),
                "call": f.call,
                "message": f.message,
            })).collect::<Vec<_>>(),
            "failures_not_shown": self.failures_not_shown,
            "timeline": self.timeline.to_json(),
            "error_histograms": self.errors_json(),
        })
    }

    /// The human summary of this stream.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let verdict = if self.passed() { "PASS" } else { "FAIL" };
        let _ = writeln!(s, "{verdict}  {}", self.name);
        if let Some(h) = &self.header {
            let _ = writeln!(
                s,
                "  stream {:016x} from {} pid {} ({}), key id {:016x}",
                h.stream_id, h.host, h.pid, h.producer, h.key_id
            );
            if h.segment > 0 || h.first_index > 0 {
                let _ = writeln!(
                    s,
                    "  segment {} of the stream: its ledger starts at call {}",
                    h.segment, h.first_index
                );
            }
            if self.unseen_calls > 0 {
                let _ = writeln!(
                    s,
                    "  {} earlier calls of the stream were seen by no verifier: {}",
                    self.unseen_calls,
                    ranges_text(&self.unseen_ranges)
                );
            }
        }
        if let (Some(h), Some(p)) = (&self.header, &self.policy) {
            let _ = writeln!(
                s,
                "  {} at {} of calls, {} of rows, {} of columns, {} of batches (policy: at least {}, {}, {}, {}); not audited at most {:.2}% per category",
                if h.schedule == mmaudit_protocol::schedule::ScheduleVersion::Commit {
                    "commit mode: challenged"
                } else {
                    "sampled"
                },
                ppm_text(h.config.call_ppm),
                ppm_text(h.config.row_ppm),
                ppm_text(h.config.col_ppm),
                ppm_text(h.config.batch_ppm),
                ppm_text(p.sampling.call_ppm),
                ppm_text(p.sampling.row_ppm),
                ppm_text(p.sampling.col_ppm),
                ppm_text(p.sampling.batch_ppm),
                100.0 * p.limits.iter().cloned().fold(0.0, f64::max)
            );
        }
        let _ = writeln!(
            s,
            "  calls            {:>12}   GEMM API calls in the ledger",
            self.calls
        );
        let _ = writeln!(
            s,
            "  flops            {:>12}   claimed by the ledger",
            human_flops(self.flops as f64)
        );
        // In commit mode the verifier's challenge selects, and openings answer.
        let commit = self
            .header
            .as_ref()
            .is_some_and(|h| h.schedule == mmaudit_protocol::schedule::ScheduleVersion::Commit);
        let (selected, data, dropped) = if commit {
            (
                "committed calls the verifier challenged",
                "opening",
                "challenges",
            )
        } else {
            ("calls the schedule selected", "sample", "samples")
        };
        let _ = writeln!(s, "  sampled          {:>12}   {selected}", self.sampled);
        let _ = writeln!(
            s,
            "  verified         {:>12}   sampled calls whose entries all matched",
            self.verified
        );
        let _ = writeln!(
            s,
            "  mismatched       {:>12}   sampled calls with a wrong entry",
            self.mismatched
        );
        let _ = writeln!(
            s,
            "  missing          {:>12}   sampled calls with no {data} and no gap",
            self.missing
        );
        let _ = writeln!(
            s,
            "  gaps             {:>12}   {dropped} the prover dropped ({:.2}%)",
            self.gaps,
            100.0 * self.gap_rate(),
        );
        let _ = writeln!(
            s,
            "  integrity errors {:>12}   MAC, sequence, truncation, consistency",
            self.integrity_errors
        );
        if self.replayed > 0 || self.capture_records > 0 {
            let _ = writeln!(
                s,
                "  graph replays    {:>12}   calls run by CUDA graph replays ({} sampled, {} verified; {:.3e} FLOPs)",
                self.replayed, self.replayed_sampled, self.replayed_verified, self.replayed_flops as f64
            );
            let _ = writeln!(
                s,
                "  graph captures   {:>12}   calls recorded while a graph was captured: no work then, ledgered at each replay",
                self.capture_records
            );
        }
        if self.captured > 0 {
            let _ = writeln!(
                s,
                "  replays not audited {:>9}   calls of graph replays the library could not gather: recorded, NOT audited",
                self.captured
            );
        }
        if self.no_session > 0 {
            let _ = writeln!(
                s,
                "  no session       {:>12}   calls made while the prover had no verifier session: recorded, NOT audited",
                self.no_session
            );
        }
        if self.unmodelled > 0 {
            let _ = writeln!(
                s,
                "  not modelled     {:>12}   calls protocol v1 cannot describe exactly: recorded, NOT audited",
                self.unmodelled
            );
        }
        if self.rejected > 0 {
            let _ = writeln!(
                s,
                "  rejected         {:>12}   calls the library returned an error for: nothing computed, no FLOPs claimed",
                self.rejected
            );
        }
        if self.reduced_precision > 0 {
            let how = if self
                .policy
                .as_ref()
                .is_some_and(|p| p.reduced_precision_reductions)
            {
                "judged with widened bounds (--allow-reduced-precision-reductions)"
            } else {
                "judged like every other call"
            };
            let _ = writeln!(
                s,
                "  reduced precision{:>12}   calls let cuBLAS add split-k parts in the output type: {how}",
                self.reduced_precision
            );
        }
        if self.uncommitted > 0 {
            let _ = writeln!(
                s,
                "  uncommitted      {:>12}   calls the prover did not commit (commit mode): NOT audited",
                self.uncommitted
            );
            if let Some(why) = &self.uncommitted_reason {
                let _ = writeln!(
                    s,
                    "                                 the first, in the prover's words: {why}"
                );
            }
        }
        if self.unverifiable > 0 {
            let _ = writeln!(
                s,
                "  unverifiable     {:>12}   sampled calls the tolerance cannot bound (k too large for the compute type, or overflow): NOT verified",
                self.unverifiable
            );
        }
        let _ = writeln!(
            s,
            "  entries checked  {:>12}   worst relative error {:.3e}, worst error/tolerance {:.3}, worst error/precision bound {:.3}",
            self.entries_checked, self.worst_rel_error, self.worst_tolerance_ratio, self.worst_precision_ratio
        );
        if let Some(w) = &self.weights {
            let _ = writeln!(
                s,
                "  weights matched  {:>12}   of {} sampled calls judged: an operand is a held tensor",
                w.matched, w.judged
            );
            if w.referenced > 0 {
                let _ = writeln!(
                    s,
                    "  by reference     {:>12}   of them sent as a reference: recomputed from the verifier's copy",
                    w.referenced
                );
            }
            let _ = writeln!(
                s,
                "  weights unmatched{:>12}   no operand is a held tensor ({} beside a held tensor of their shape that differed); {}",
                w.unmatched,
                w.unmatched_differing,
                if w.required {
                    "required: each fails"
                } else {
                    "not required: reported only"
                }
            );
            for (name, count) in &w.tensors {
                let forms: Vec<String> = w
                    .forms
                    .get(name)
                    .into_iter()
                    .flatten()
                    .map(|(form, n)| {
                        if *n == *count {
                            form.clone()
                        } else {
                            format!("{form} x{n}")
                        }
                    })
                    .collect();
                let _ = writeln!(s, "    {count:>8}  {name}  ({})", forms.join(", "));
            }
        }
        for f in &self.failures {
            match &f.call {
                Some(c) => {
                    let _ = writeln!(s, "  FAIL {}: {c}: {}", f.kind.name(), f.message);
                }
                None => {
                    let _ = writeln!(s, "  FAIL {}: {}", f.kind.name(), f.message);
                }
            }
        }
        if self.failures_not_shown > 0 {
            let _ = writeln!(s, "  ... and {} more failures", self.failures_not_shown);
        }
        s
    }
}

impl StreamReport {
    /// The error/tolerance histograms: bucket names, and per combination of types the
    /// entries in each bucket.
    fn errors_json(&self) -> Value {
        let by_types: serde_json::Map<_, _> = self
            .errors
            .iter()
            .map(|(types, h)| {
                let counts = json!({"entries": h.entries, "imprecise": h.imprecise});
                (types.clone(), counts)
            })
            .collect();
        json!({"buckets": RATIO_BUCKETS, "by_types": by_types})
    }

    /// Each category of calls not audited: calls, FLOPs, shares and its limit.
    fn not_audited_json(&self) -> Value {
        let mut out = serde_json::Map::new();
        for what in Unaudited::ALL {
            let t = self.tally(what);
            let (calls, flops) = t.shares(&self.base(what));
            out.insert(
                what.name().to_string(),
                json!({
                    "calls": t.calls,
                    "flops": t.flops as f64,
                    "share_of_calls": calls,
                    "share_of_flops": flops,
                    "of": if what.of_sampled() { "sampled" } else { "all" },
                    "limit": self.policy.as_ref().map(|p| p.limit(what)),
                }),
            );
        }
        Value::Object(out)
    }
}

/// JSON "mode": how the stream was audited.
fn mode_name(h: &StreamHeader) -> &'static str {
    match h.schedule {
        mmaudit_protocol::schedule::ScheduleVersion::Commit => "commit",
        _ => "sampling",
    }
}

fn policy_json(p: &Policy) -> Value {
    let c = &p.sampling;
    json!({
        "min_call_rate_ppm": c.call_ppm,
        "min_row_rate_ppm": c.row_ppm,
        "min_col_rate_ppm": c.col_ppm,
        "min_batch_rate_ppm": c.batch_ppm,
        "limits": Unaudited::ALL.iter().map(|&w| (w.name().to_string(), json!(p.limit(w)))).collect::<serde_json::Map<_, _>>(),
    })
}

/// FLOPs with their unit: "387.973 MFLOP".
pub fn human_flops(f: f64) -> String {
    for (unit, scale) in [
        ("PFLOP", 1e15),
        ("TFLOP", 1e12),
        ("GFLOP", 1e9),
        ("MFLOP", 1e6),
    ] {
        if f >= scale {
            return format!("{:.3} {unit}", f / scale);
        }
    }
    format!("{f:.0} FLOP")
}

/// The combined verdict of several streams, with totals.
pub fn summary_json(reports: &[StreamReport]) -> Value {
    let sum = |f: fn(&StreamReport) -> u64| reports.iter().map(f).sum::<u64>();
    let pass = reports.iter().all(StreamReport::passed);
    json!({
        "verdict": if pass { "pass" } else { "fail" },
        "calls": sum(|r| r.calls),
        "sampled": sum(|r| r.sampled),
        "verified": sum(|r| r.verified),
        "mismatched": sum(|r| r.mismatched),
        "missing": sum(|r| r.missing),
        "gaps": sum(|r| r.gaps),
        "integrity_errors": sum(|r| r.integrity_errors),
        "captured_not_audited": sum(|r| r.captured),
        "capture_records": sum(|r| r.capture_records),
        "replayed": sum(|r| r.replayed),
        "replayed_verified": sum(|r| r.replayed_verified),
        "no_session_not_audited": sum(|r| r.no_session),
        "rejected": sum(|r| r.rejected),
        "uncommitted": sum(|r| r.uncommitted),
        "reduced_precision_reductions": sum(|r| r.reduced_precision),
        "unmodelled_not_audited": sum(|r| r.unmodelled),
        "unverifiable": sum(|r| r.unverifiable),
        "flops": reports.iter().map(|r| r.flops as f64).sum::<f64>(),
        "entries_checked": sum(|r| r.entries_checked),
        "worst_rel_error": reports.iter().map(|r| r.worst_rel_error).fold(0.0, f64::max),
        "streams": reports.iter().map(StreamReport::to_json).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A finished stream at the default rates: `calls` calls that declare work, of
    /// which `no_session` without a session, each of `flops` FLOPs, and `sampled` of the
    /// others sampled and verified.
    fn stream(calls: u64, no_session: u64, sampled: u64, flops: u128) -> StreamReport {
        let mut r = StreamReport::new("t");
        r.header = Some(mmaudit_protocol::fuzzing::seed_header());
        r.ended = true;
        r.calls = calls;
        r.working_calls = calls;
        r.no_session = no_session;
        r.unaudited_working[Unaudited::NoSession as usize] = no_session;
        r.unaudited_flops[Unaudited::NoSession as usize] = no_session as u128 * flops;
        r.flops = calls as u128 * flops;
        r.sampled = sampled;
        r.sampled_working = sampled;
        r.verified = sampled;
        r.sampled_flops = sampled as u128 * flops;
        r
    }

    fn judged(mut r: StreamReport) -> StreamReport {
        r.apply_policy(&Policy::default());
        r
    }

    #[test]
    fn empty_calls_do_not_dilute_the_shares() {
        // 50 of 100 calls without a session, tiny ones (0.005% of the FLOPs): fails on
        // the share of calls.
        let small = || {
            let mut r = stream(100, 50, 5, 1_000_000);
            r.unaudited_flops[Unaudited::NoSession as usize] = 50;
            r
        };
        let r = judged(small());
        assert!(!r.passed());
        assert!(
            r.failures[0].message.contains("50 of 100 calls"),
            "{}",
            r.to_text()
        );
        // 10 000 more calls that declare no work (m, n, k or batch 0) do not count.
        let mut r = small();
        r.calls += 10_000;
        let r = judged(r);
        assert!(!r.passed());
        assert!(
            r.failures[0].message.contains("50 of 100 calls"),
            "{}",
            r.to_text()
        );
    }

    #[test]
    fn an_enormous_unsampled_claim_does_not_dilute_the_flops_shares() {
        let giant = |mut r: StreamReport| {
            r.calls += 1;
            r.working_calls += 1;
            r.flops += 1u128 << 57;
            r
        };
        // 10 of 1000 calls (1%) without a session, but ten times larger than the others:
        // 10% of the FLOPs. Fails, and still fails beside one unsampled call claiming
        // 2^57 FLOPs: the share is taken of what the sample supports (sampled FLOPs /
        // call rate), not of the claim.
        let mut r = stream(1000, 10, 100, 1000);
        r.unaudited_flops[Unaudited::NoSession as usize] = 10 * 10 * 1000;
        r.flops += 10 * 9 * 1000;
        assert!(!judged(r.clone()).passed());
        let r = judged(giant(r));
        assert!(!r.passed(), "{}", r.to_text());
        assert!(
            r.failures[0].message.contains("--max-no-session"),
            "{}",
            r.to_text()
        );
        // The honest counterpart: the same calls at their own size pass, with or without
        // the claim beside them.
        assert!(judged(stream(1000, 10, 100, 1000)).passed());
        assert!(judged(giant(stream(1000, 10, 100, 1000))).passed());
    }

    #[test]
    fn the_timeline_keeps_at_most_its_bins_and_every_call() {
        for calls in [1u64, 63, 64, 65, 1000, 4097, 100_003] {
            let mut t = Timeline::default();
            let first = 17;
            for i in first..first + calls {
                let b = t.bin(i);
                b.calls += 1;
                b.flops += 2;
                b.sampled += (i % 7 == 0) as u64;
            }
            assert!(t.bins.len() <= TIMELINE_BINS, "{calls}: {}", t.bins.len());
            assert!(t.width.is_power_of_two());
            assert_eq!(t.bins.iter().map(|b| b.calls).sum::<u64>(), calls);
            assert_eq!(
                t.bins.iter().map(|b| b.flops).sum::<u128>(),
                2 * calls as u128
            );
            let sampled = (first..first + calls).filter(|i| i % 7 == 0).count() as u64;
            assert_eq!(t.bins.iter().map(|b| b.sampled).sum::<u64>(), sampled);
            // Every bin but the last is full: bins cover consecutive calls.
            for b in &t.bins[..t.bins.len() - 1] {
                assert_eq!(b.calls, t.width, "{calls}");
            }
            // A later outcome lands in the bin of its own call.
            let last = first + calls - 1;
            t.bin(last).failed += 1;
            assert_eq!(t.bins.last().unwrap().failed, 1);
            let whole = (calls <= t.width) as u64;
            assert_eq!(t.bin(first).failed, whole);
        }
    }

    #[test]
    fn error_ratios_fall_in_their_decade() {
        let cases = [
            (0.0, false, "0"),
            (1e-9, false, "<1e-6"),
            (1e-6, false, "1e-6..1e-5"),
            (0.5, false, "0.1..1"),
            (0.999_999, false, "0.1..1"),
            (1.0, false, "1..10"),
            (10.0, false, ">=10"),
            (f64::INFINITY, false, ">=10"),
            (f64::NAN, false, ">=10"),
            (0.0, true, "unbounded"),
        ];
        for (ratio, unverifiable, bucket) in cases {
            assert_eq!(
                RATIO_BUCKETS[ratio_bucket(ratio, unverifiable, false)],
                bucket,
                "{ratio}"
            );
        }
        // a passing entry is within its tolerance, whatever its ratio (an allowed
        // overflow to infinity)
        for ratio in [0.5, 1.0, f64::INFINITY, f64::NAN] {
            assert!(ratio_bucket(ratio, false, true) <= 7, "{ratio}");
        }
    }

    #[test]
    fn judging_again_keeps_every_failure() {
        let mut r = StreamReport::new("t");
        let mut h = mmaudit_protocol::fuzzing::seed_header();
        h.config.call_ppm = 0;
        r.header = Some(h);
        r.ended = true;
        r.apply_policy(&Policy::default());
        assert!(!r.passed());
        r.apply_policy(&Policy::lenient());
        assert!(!r.passed());
    }
}

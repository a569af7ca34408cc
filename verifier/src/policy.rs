//! The audit policy: what the verifier, not the audited party, requires of a stream
//! before a PASS means anything.
//!
//! Two halves, both judged when a stream ends ([`crate::audit::StreamAudit::finish`]),
//! with the same code for `check` and `serve`:
//!
//! - **Sampling floor.** The stream header carries the rates the prover sampled with. A
//!   prover controls its own environment (`MMAUDIT_CALL_RATE=0`), so a header whose
//!   rates are weaker than the policy's fails the stream ("sampling below policy"). The
//!   live verifier also states its policy in its hello, and the library samples with it.
//! - **Limits on what was not audited.** Calls in the ledger that nobody checked: made
//!   during CUDA graph capture, made while the prover had no verifier session, outside
//!   the call model, rejected by the library (claimed failed by the prover: nothing
//!   computed, see docs/THREAT-MODEL.md), sampled but unverifiable (the tolerance cannot
//!   bound them), and sampled calls the prover dropped (gaps). Each has a limit on its
//!   fraction of the calls and of the FLOPs; over either is a failure ("coverage") that
//!   names the category, its share and the limit.
//!
//! Defaults are the library's default rates and 1% for every limit, so that a run a
//! verifier cannot vouch for fails unless the auditor says otherwise on its command line.

use clap::Args;
use mmaudit_protocol::config::SamplingConfig;

/// One category of calls that were not audited: counts and FLOPs.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Tally {
    /// calls
    pub calls: u64,
    /// FLOPs (2 m n k batch as the ledger declares them)
    pub flops: u128,
}

impl Tally {
    /// `self / of`, as fractions of calls and of FLOPs (0 when `of` is empty).
    pub fn shares(&self, of: &Tally) -> (f64, f64) {
        let frac = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        (
            frac(self.calls as f64, of.calls as f64),
            frac(self.flops as f64, of.flops as f64),
        )
    }
}

/// How many categories [`Unaudited`] has.
pub const CATEGORIES: usize = 7;

/// The categories the policy limits, in report order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unaudited {
    /// calls run by CUDA graph replays the library could not gather (flags REPLAYED and
    /// CAPTURED)
    Captured,
    /// calls made while the prover had no verifier session
    NoSession,
    /// calls outside the call model
    Unmodelled,
    /// calls the library rejected (the prover says nothing was computed)
    Rejected,
    /// sampled calls the tolerance could not bound (share of sampled calls)
    Unverifiable,
    /// sampled calls the prover dropped (share of sampled calls)
    Gaps,
    /// commit mode: calls the prover declined to commit (a gap "not committed")
    Uncommitted,
}

impl Unaudited {
    /// Every category.
    pub const ALL: [Unaudited; CATEGORIES] = [
        Unaudited::Captured,
        Unaudited::NoSession,
        Unaudited::Unmodelled,
        Unaudited::Rejected,
        Unaudited::Unverifiable,
        Unaudited::Gaps,
        Unaudited::Uncommitted,
    ];

    /// The name used in reports, JSON keys and flags (`--max-<name>`).
    pub fn name(self) -> &'static str {
        match self {
            Unaudited::Captured => "captured",
            Unaudited::NoSession => "no-session",
            Unaudited::Unmodelled => "unmodelled",
            Unaudited::Rejected => "rejected",
            Unaudited::Unverifiable => "unverifiable",
            Unaudited::Gaps => "gaps",
            Unaudited::Uncommitted => "uncommitted",
        }
    }

    /// The command-line flag that sets its limit.
    pub fn flag(self) -> &'static str {
        match self {
            Unaudited::Gaps => "--max-gap-rate",
            Unaudited::Captured => "--max-captured",
            Unaudited::NoSession => "--max-no-session",
            Unaudited::Unmodelled => "--max-unmodelled",
            Unaudited::Rejected => "--max-rejected",
            Unaudited::Unverifiable => "--max-unverifiable",
            Unaudited::Uncommitted => "--max-uncommitted",
        }
    }

    /// What the share is taken of.
    pub fn of_sampled(self) -> bool {
        matches!(self, Unaudited::Unverifiable | Unaudited::Gaps)
    }

    /// What it means, for a failure message.
    pub fn meaning(self) -> &'static str {
        match self {
            Unaudited::Captured => "run by CUDA graph replays that were not gathered",
            Unaudited::NoSession => "made while the prover had no verifier session",
            Unaudited::Unmodelled => "outside the call model",
            Unaudited::Rejected => {
                "rejected by the library (the prover claims they computed nothing)"
            }
            Unaudited::Unverifiable => "the tolerance model cannot bound",
            Unaudited::Gaps => "dropped by the prover",
            Unaudited::Uncommitted => "not committed by the prover (commit mode)",
        }
    }
}

/// What a stream must satisfy beyond correct results.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// The weakest sampling configuration accepted in a stream header (and the one a
    /// live verifier asks for in its hello).
    pub sampling: SamplingConfig,
    /// Largest share of calls and of FLOPs per category, in the order of
    /// [`Unaudited::ALL`].
    pub limits: [f64; CATEGORIES],
    /// Judge calls flagged REDUCED_PRECISION_REDUCTION with bounds widened by what
    /// adding split-k parts in D's type can round. Off by default: the flag is the
    /// audited program's choice, and the widened bounds let cheaper arithmetic pass
    /// (docs/THREAT-MODEL.md); without it such calls are judged like any other.
    pub reduced_precision_reductions: bool,
}

/// The default limit of every category: 1%.
pub const DEFAULT_LIMIT: f64 = 0.01;

impl Default for Policy {
    fn default() -> Self {
        Policy {
            sampling: SamplingConfig::default(),
            limits: [DEFAULT_LIMIT; CATEGORIES],
            reduced_precision_reductions: false,
        }
    }
}

impl Policy {
    /// No floor and no limits: every stream that is intact and correct passes, however
    /// little was audited. For tests of other parts of the verdict.
    pub fn lenient() -> Self {
        Policy {
            sampling: SamplingConfig {
                call_ppm: 0,
                row_ppm: 0,
                col_ppm: 0,
                batch_ppm: 0,
                min_rows: 0,
                min_cols: 0,
                min_batches: 0,
                // any cap is accepted (a cap of at least 1)
                max_rows: 1,
                max_cols: 1,
                max_batches: 1,
            },
            limits: [1.0; CATEGORIES],
            reduced_precision_reductions: false,
        }
    }

    /// The limit of one category.
    pub fn limit(&self, what: Unaudited) -> f64 {
        self.limits[what as usize]
    }

    /// Sets the limit of one category.
    pub fn set_limit(&mut self, what: Unaudited, limit: f64) {
        self.limits[what as usize] = limit;
    }

    /// How a stream's sampling configuration falls short of the floor: one phrase per
    /// field, empty when it does not.
    pub fn sampling_shortfalls(&self, got: &SamplingConfig) -> Vec<String> {
        let floor = &self.sampling;
        let mut out = Vec::new();
        for (name, have, need) in [
            ("call rate", got.call_ppm, floor.call_ppm),
            ("row rate", got.row_ppm, floor.row_ppm),
            ("column rate", got.col_ppm, floor.col_ppm),
            ("batch rate", got.batch_ppm, floor.batch_ppm),
        ] {
            if have < need {
                out.push(format!(
                    "{name} {} below the policy's {}",
                    ppm_text(have),
                    ppm_text(need)
                ));
            }
        }
        for (name, have, need) in [
            ("minimum rows", got.min_rows, floor.min_rows),
            ("minimum columns", got.min_cols, floor.min_cols),
            ("minimum batch entries", got.min_batches, floor.min_batches),
        ] {
            if have < need {
                out.push(format!("{name} {have} below the policy's {need}"));
            }
        }
        // A maximum caps what is checked: 0 (none) is strongest; a cap is accepted only
        // when the policy has one at least as small.
        for (name, have, need) in [
            ("maximum rows", got.max_rows, floor.max_rows),
            ("maximum columns", got.max_cols, floor.max_cols),
            ("maximum batch entries", got.max_batches, floor.max_batches),
        ] {
            if have != 0 && (need == 0 || have < need) {
                let allowed = if need == 0 {
                    "none".to_string()
                } else {
                    format!("at least {need}")
                };
                out.push(format!(
                    "{name} capped at {have}; the policy allows {allowed}"
                ));
            }
        }
        out
    }
}

/// A rate in ppm as a percentage.
pub fn ppm_text(ppm: u32) -> String {
    format!("{}%", ppm as f64 / 1e4)
}

/// The policy's command-line flags, shared by `check` and `serve`.
#[derive(Args, Debug, Clone)]
pub struct PolicyArgs {
    /// Fail a stream sampled at a lower call rate than this (serve: the call rate its
    /// hello asks for). Accepts 0.1, 10% or 100000ppm.
    #[arg(long, value_name = "RATE", default_value = "10%", value_parser = parse_ppm)]
    pub min_call_rate: u32,
    /// Fail a stream sampled at a lower row rate than this (serve: asked for).
    #[arg(long, value_name = "RATE", default_value = "1%", value_parser = parse_ppm)]
    pub min_row_rate: u32,
    /// Fail a stream sampled at a lower column rate than this (serve: asked for).
    #[arg(long, value_name = "RATE", default_value = "0.1%", value_parser = parse_ppm)]
    pub min_col_rate: u32,
    /// Fail a stream sampled at a lower batch rate than this (serve: asked for).
    #[arg(long, value_name = "RATE", default_value = "1%", value_parser = parse_ppm)]
    pub min_batch_rate: u32,
    /// Fail a stream when more than this share of its calls or FLOPs ran in CUDA graph
    /// replays the library could not gather ("replayed, not audited").
    #[arg(long, value_name = "SHARE", default_value = "1%", value_parser = parse_share)]
    pub max_captured: f64,
    /// Fail a stream when more than this share of its calls or FLOPs were made while the
    /// prover had no verifier session (a verifier reached late).
    #[arg(long, value_name = "SHARE", default_value = "1%", value_parser = parse_share)]
    pub max_no_session: f64,
    /// Fail a stream when more than this share of its calls or FLOPs are outside the
    /// call model (not audited).
    #[arg(long, value_name = "SHARE", default_value = "1%", value_parser = parse_share)]
    pub max_unmodelled: f64,
    /// Fail a stream when more than this share of its calls or declared FLOPs were
    /// rejected by the library (the prover claims nothing was computed).
    #[arg(long, value_name = "SHARE", default_value = "1%", value_parser = parse_share)]
    pub max_rejected: f64,
    /// Fail a stream when more than this share of its sampled calls or sampled FLOPs
    /// could not be verified (the tolerance model cannot bound them).
    #[arg(long, value_name = "SHARE", default_value = "1%", value_parser = parse_share)]
    pub max_unverifiable: f64,
    /// Fail a stream when more than this share of its sampled calls or sampled FLOPs were
    /// dropped by the prover (gap records).
    #[arg(long, value_name = "SHARE", default_value = "1%", value_parser = parse_share)]
    pub max_gap_rate: f64,
    /// Commit mode: fail a stream when more than this share of its calls or FLOPs were
    /// not committed by the prover (gap records "not committed").
    #[arg(long, value_name = "SHARE", default_value = "1%", value_parser = parse_share)]
    pub max_uncommitted: f64,
    /// Accept cuBLAS's reduced-precision reductions: judge calls that let cuBLAS add
    /// split-k parts in the output type (PyTorch's default for bf16 and f16 GEMMs) with
    /// bounds widened by what that can round. The widened bounds let cheaper
    /// arithmetic (fp8 or int8 in place of bf16) pass those calls. Without this flag
    /// they are judged like every other call, and an honest GPU that did reduce in
    /// bf16 or f16 can fail "precision lower than declared": have the audited program
    /// disallow it (torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction
    /// = False, and the fp16 one).
    #[arg(long)]
    pub allow_reduced_precision_reductions: bool,
}

impl PolicyArgs {
    /// The policy these flags describe (other sampling fields at the library defaults).
    pub fn policy(&self) -> Policy {
        let mut p = Policy {
            sampling: SamplingConfig {
                call_ppm: self.min_call_rate,
                row_ppm: self.min_row_rate,
                col_ppm: self.min_col_rate,
                batch_ppm: self.min_batch_rate,
                ..SamplingConfig::default()
            },
            reduced_precision_reductions: self.allow_reduced_precision_reductions,
            ..Policy::default()
        };
        for (what, limit) in [
            (Unaudited::Captured, self.max_captured),
            (Unaudited::NoSession, self.max_no_session),
            (Unaudited::Unmodelled, self.max_unmodelled),
            (Unaudited::Rejected, self.max_rejected),
            (Unaudited::Unverifiable, self.max_unverifiable),
            (Unaudited::Gaps, self.max_gap_rate),
            (Unaudited::Uncommitted, self.max_uncommitted),
        ] {
            p.set_limit(what, limit);
        }
        p
    }
}

/// Parses a rate (0.1, 10% or 100000ppm) to ppm.
pub fn parse_ppm(text: &str) -> Result<u32, String> {
    mmaudit_protocol::config::parse_rate(text)
}

/// Parses a share (0.01, 1% or 10000ppm) as a fraction.
pub fn parse_share(text: &str) -> Result<f64, String> {
    parse_ppm(text).map(|ppm| ppm as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_floor_is_the_library_default_and_accepts_it() {
        let p = Policy::default();
        assert!(p.sampling_shortfalls(&SamplingConfig::default()).is_empty());
        let stronger = SamplingConfig {
            call_ppm: 1_000_000,
            row_ppm: 500_000,
            min_rows: 4,
            ..SamplingConfig::default()
        };
        assert!(p.sampling_shortfalls(&stronger).is_empty());
    }

    #[test]
    fn weaker_sampling_is_named_field_by_field() {
        let p = Policy::default();
        let zero = SamplingConfig {
            call_ppm: 0,
            ..SamplingConfig::default()
        };
        let s = p.sampling_shortfalls(&zero);
        assert_eq!(s, vec!["call rate 0% below the policy's 10%".to_string()]);
        let capped = SamplingConfig {
            max_cols: 1,
            min_rows: 0,
            ..SamplingConfig::default()
        };
        let s = p.sampling_shortfalls(&capped);
        assert_eq!(s.len(), 2, "{s:?}");
        assert!(s[0].contains("minimum rows 0"), "{s:?}");
        assert!(s[1].contains("maximum columns capped at 1"), "{s:?}");
        assert!(Policy::lenient().sampling_shortfalls(&zero).is_empty());
    }

    #[test]
    fn shares_of_calls_and_flops() {
        let t = Tally {
            calls: 1,
            flops: 90,
        };
        let all = Tally {
            calls: 10,
            flops: 100,
        };
        assert_eq!(t.shares(&all), (0.1, 0.9));
        assert_eq!(t.shares(&Tally::default()), (0.0, 0.0));
    }
}

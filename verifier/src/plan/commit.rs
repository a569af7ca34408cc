//! What the commit-before-challenge mode (docs/COMMIT.md) costs: bytes the GPU hashes
//! and keeps for every call, launches added to the application's stream, the commitment
//! and opening bytes on the stream, and the GPU memory the retention ring needs for a
//! given challenge latency. Pure arithmetic on the shapes, like the rest of `plan`;
//! docs/COMMIT.md ("Cost model") gives the formulas and the unit tests check them.

use serde::Serialize;

pub use mmaudit_protocol::commit::depth;

use super::{fmt_bytes, fmt_num, Doc, GemmCost, LEDGER_RECORD_BYTES};

/// Bytes of a commitment record: record head (5), call index (8), commitment (32).
pub const COMMITMENT_RECORD_BYTES: u64 = 45;
/// Fixed bytes of an opening record besides its vectors and paths: record head (5), call
/// index (8), the four sides as sent (4 x 33, a reference side's matrix list counted in
/// the vectors), the small data's length (4).
pub const OPENING_OVERHEAD_BYTES: u64 = 149;
/// Bytes of one challenge on the verifier-to-prover channel besides its plan indices:
/// the call index (8) and three counts (12).
pub const CHALLENGE_OVERHEAD_BYTES: u64 = 20;
/// Bytes of one hash in an audit path.
pub const HASH_BYTES: u64 = 32;
/// Default challenge latency (call to challenge at the prover), an assumption.
pub const DEFAULT_CHALLENGE_LATENCY_MS: f64 = 50.0;

/// What committing one call of a GEMM costs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CommitCost {
    /// an attention GEMM (`attn_scores`, `attn_out`): its operands are the KV cache and
    /// activations, never held weights
    pub attention: bool,
    /// op(A) is bound as a reference to a tensor the verifier holds (not hashed, not kept)
    pub a_referenced: bool,
    /// bytes copied into the retention ring: op(A) (unless referenced), op(B), C_in when
    /// beta != 0, D, bias
    pub retained_bytes: f64,
    /// bytes hashed: the retained bytes plus one spot-checked row of a referenced op(A)
    pub hashed_bytes: f64,
    /// GPU memory traffic added: the copy reads and writes the retained bytes, the hash
    /// reads them again from the ring (3 x retained + the spot check)
    pub extra_traffic_bytes: f64,
    /// the GEMM's own least memory traffic: op(A), op(B) and C_in read once, D written once
    pub gemm_traffic_bytes: f64,
    /// kernels the library adds to the application's stream: the copy into the
    /// retention ring and the leaf hashes after the call, both again before it when
    /// beta != 0 (in a CUDA graph, kernel nodes of every replay)
    pub launches_in_stream: u64,
    /// bytes the library's kernels write to host memory for the call: a leaf hash per
    /// vector hashed, one vector per hashed operand (the host's check of the GPU's leaf
    /// hashes), a referenced op(A)'s evidence (one element per row) and spot row, and
    /// the bias; the expected openings are added per phase
    pub host_bytes: f64,
    /// bytes of the opening of one challenged call: the plan's rows of an inline op(A),
    /// its columns of op(B), of D and of C when beta != 0 (whole columns, m entries),
    /// each with one audit path; a referenced op(A)'s evidence; the sides and the small
    /// data
    pub opening_bytes: f64,
    /// bytes of one challenge sent to the prover
    pub challenge_bytes: f64,
}

/// The commit cost of one call of the GEMM `c` (a [`GemmCost`] under the session's
/// sampling configuration), with op(A) referenced when it is a weight and `held`.
pub fn commit_cost(c: &GemmCost, held: bool) -> CommitCost {
    let (m, n, k, batch) = (c.m as f64, c.n as f64, c.k as f64, c.batch as f64);
    let (r, s, e) = (c.rows as f64, c.cols as f64, c.batches as f64);
    let in_size = c.dtype.input().size() as f64;
    let out_size = c.dtype.output().size() as f64;
    let reads_c = c.bytes_c > 0.0;
    let a_referenced = held && c.weight;
    let a = if a_referenced {
        0.0
    } else {
        batch * m * k * in_size
    };
    let b = batch * k * n * in_size;
    let cd = batch * m * n * out_size * if reads_c { 2.0 } else { 1.0 };
    // The sample's bias figure is r x out; the whole bias vector is m x out.
    let bias = if c.bytes_bias > 0.0 {
        m * out_size
    } else {
        0.0
    };
    let retained = a + b + cd + bias;
    let spot = if a_referenced { k * in_size } else { 0.0 };
    let c_columns = if reads_c { 2.0 } else { 1.0 };
    let vectors = if a_referenced { 0.0 } else { batch * m } + batch * n * (1.0 + c_columns);
    let checked =
        if a_referenced { 0.0 } else { k * in_size } + k * in_size + c_columns * m * out_size;
    let evidence = if a_referenced {
        batch * m * in_size + spot
    } else {
        0.0
    };
    let path = |leaves: u64| (depth(leaves) * HASH_BYTES) as f64;
    let rows_of = |width: f64, leaves: u64| e * r * (width + path(leaves));
    let opening_a = if a_referenced {
        e * r * in_size + 4.0 * e
    } else {
        rows_of(k * in_size, c.batch * c.m)
    };
    let opening_b = e * s * (k * in_size + path(c.batch * c.n));
    // C and D are committed by columns (contiguous in column-major storage): the plan's
    // columns travel whole, m entries each.
    let opening_cd = e * s * (m * out_size + path(c.batch * c.n)) * if reads_c { 2.0 } else { 1.0 };
    CommitCost {
        attention: c.name.starts_with("attn_"),
        a_referenced,
        retained_bytes: retained,
        hashed_bytes: retained + spot,
        extra_traffic_bytes: 3.0 * retained + spot,
        gemm_traffic_bytes: batch * (m * k + k * n) * in_size
            + batch * m * n * out_size * if reads_c { 2.0 } else { 1.0 },
        launches_in_stream: 2 + 2 * reads_c as u64,
        host_bytes: HASH_BYTES as f64 * vectors + checked + evidence + bias,
        opening_bytes: OPENING_OVERHEAD_BYTES as f64 + opening_a + opening_b + opening_cd + bias,
        challenge_bytes: CHALLENGE_OVERHEAD_BYTES as f64 + 8.0 * (r + s + e),
    }
}

/// Sums over the calls of a phase.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommitTotals {
    calls: f64,
    retained: f64,
    attention_retained: f64,
    hashed: f64,
    extra_traffic: f64,
    gemm_traffic: f64,
    launches: f64,
    host: f64,
    opening: f64,
    challenge: f64,
}

impl CommitTotals {
    /// Adds `times` calls of `c`, challenged at the call rate `p`.
    pub fn add(&mut self, c: &CommitCost, times: u64, p: f64) {
        let t = times as f64;
        self.calls += t;
        self.retained += t * c.retained_bytes;
        if c.attention {
            self.attention_retained += t * c.retained_bytes;
        }
        self.hashed += t * c.hashed_bytes;
        self.extra_traffic += t * c.extra_traffic_bytes;
        self.gemm_traffic += t * c.gemm_traffic_bytes;
        self.launches += t * c.launches_in_stream as f64;
        self.host += t * (c.host_bytes + p * c.opening_bytes);
        self.opening += t * p * c.opening_bytes;
        self.challenge += t * p * c.challenge_bytes;
    }
}

/// The commit mode's cost over `units` (tokens, or calls of one GEMM).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CommitPhase {
    /// bytes kept in the retention ring per unit
    pub retained_bytes: f64,
    /// of which the attention GEMMs' (the KV cache, re-read at every decode step)
    pub attention_retained_bytes: f64,
    /// bytes hashed on the GPU per unit
    pub hashed_bytes: f64,
    /// GPU memory traffic added per unit
    pub extra_traffic_bytes: f64,
    /// the audited GEMMs' own least memory traffic per unit
    pub gemm_traffic_bytes: f64,
    /// `extra_traffic_bytes / gemm_traffic_bytes`
    pub traffic_ratio: f64,
    /// kernels added to the application's streams per unit
    pub launches_in_stream: f64,
    /// prover-to-verifier bytes per unit: ledger, commitment and the expected openings
    pub stream_bytes: f64,
    /// of which expected openings
    pub opening_bytes: f64,
    /// verifier-to-prover bytes per unit (challenges)
    pub challenge_bytes: f64,
    /// the retention ring at the stated latency and rate: retained bytes per second x
    /// latency
    pub retention_bytes: f64,
    /// bytes the library's kernels write to host memory per second at the stated rate:
    /// [`CommitCost::host_bytes`] of every call and the expected openings
    pub host_bytes_per_second: f64,
}

impl CommitPhase {
    /// The phase's figures per unit, `units_per_second` of them produced per second and
    /// each call kept `latency_s` seconds.
    pub fn new(t: &CommitTotals, units: f64, units_per_second: f64, latency_s: f64) -> Self {
        let per = |x: f64| x / units;
        let fixed = (LEDGER_RECORD_BYTES + COMMITMENT_RECORD_BYTES) as f64;
        CommitPhase {
            retained_bytes: per(t.retained),
            attention_retained_bytes: per(t.attention_retained),
            hashed_bytes: per(t.hashed),
            extra_traffic_bytes: per(t.extra_traffic),
            gemm_traffic_bytes: per(t.gemm_traffic),
            traffic_ratio: t.extra_traffic / t.gemm_traffic,
            launches_in_stream: per(t.launches),
            stream_bytes: per(t.calls * fixed + t.opening),
            opening_bytes: per(t.opening),
            challenge_bytes: per(t.challenge),
            retention_bytes: per(t.retained) * units_per_second * latency_s,
            host_bytes_per_second: per(t.host) * units_per_second,
        }
    }
}

/// The commit-mode section of a plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CommitPlan {
    /// seconds from a call to its challenge at the prover
    pub challenge_latency_s: f64,
    /// true when that latency is the default assumption
    pub challenge_latency_assumed: bool,
    /// bytes of one commitment record
    pub commitment_record_bytes: u64,
    /// one GEMM: the per-call cost
    pub gemm: Option<CommitCost>,
    /// one GEMM: per call, the rate being tokens/s / n calls per second
    pub per_call: Option<CommitPhase>,
    /// a model: per prompt token
    pub prefill: Option<CommitPhase>,
    /// a model: per generated token
    pub decode: Option<CommitPhase>,
}

fn phase_lines(d: &mut Doc, ph: &CommitPhase, unit: &str, rate: &str, latency: &str) {
    d.line(
        "retained on the GPU",
        fmt_bytes(ph.retained_bytes),
        format!("Bytes per {unit} copied into the retention ring until challenged or released."),
    );
    if ph.attention_retained_bytes > 0.0 {
        d.line(
            "of which attention",
            fmt_bytes(ph.attention_retained_bytes),
            "The attention GEMMs' share: the KV cache and the score matrices, kept anew at every call (none with fused attention kernels, which bypass cuBLAS).",
        );
    }
    d.line(
        "hashed on the GPU",
        fmt_bytes(ph.hashed_bytes),
        format!("Bytes per {unit} hashed into commitments (retained bytes plus spot checks)."),
    );
    d.line(
        "added memory traffic",
        fmt_bytes(ph.extra_traffic_bytes),
        format!(
            "Per {unit}: the copy reads and writes the retained bytes, the hash reads them again; {} of the GEMMs' own least traffic ({}).",
            fmt_num(ph.traffic_ratio),
            fmt_bytes(ph.gemm_traffic_bytes)
        ),
    );
    d.line(
        "kernels in the app's stream",
        fmt_num(ph.launches_in_stream),
        format!("Launches per {unit} added to the application's streams: the copy into the retention ring and the leaf hashes, after the call and, when beta != 0, before it (kernel nodes of the replay under CUDA graphs)."),
    );
    d.line(
        "stream bytes",
        fmt_bytes(ph.stream_bytes),
        format!(
            "Per {unit}: ledger and commitment for every call, plus the expected openings ({}).",
            fmt_bytes(ph.opening_bytes)
        ),
    );
    d.line(
        "challenge bytes",
        fmt_bytes(ph.challenge_bytes),
        format!("Per {unit}, verifier to prover."),
    );
    d.line(
        "retention ring",
        fmt_bytes(ph.retention_bytes),
        format!("GPU memory to keep every call until its challenge: retained bytes at {rate} for {latency}."),
    );
    d.line(
        "to host memory, per s",
        fmt_bytes(ph.host_bytes_per_second),
        format!("What crosses PCIe per second at {rate}: a 32-byte leaf hash per vector hashed, one checked vector per operand, held weights' evidence and spot row, and the expected openings (docs/COMMIT.md, \"The library\"); calls that fall back to host memory cross whole."),
    );
}

/// Adds the commit-mode section to the text report.
pub(super) fn render(d: &mut Doc, c: &CommitPlan, rate: &str) {
    let latency = format!(
        "{} ms{}",
        fmt_num(c.challenge_latency_s * 1e3),
        if c.challenge_latency_assumed {
            " (assumed; set --challenge-latency-ms)"
        } else {
            ""
        }
    );
    d.heading(
        "Commit-before-challenge (docs/COMMIT.md): every call committed, challenged calls opened",
    );
    if let Some(g) = &c.gemm {
        d.line(
            "op(A)",
            if g.a_referenced {
                "referenced"
            } else {
                "inline"
            }
            .into(),
            "A weight the verifier holds is bound by reference: neither hashed (but for one spot-checked row) nor kept.",
        );
        d.line(
            "opening",
            fmt_bytes(g.opening_bytes),
            "Bytes to open one challenged call: its plan's rows of op(A), columns of op(B), whole columns of D (and C), each with an audit path.",
        );
    }
    for (title, ph, unit) in [
        ("One GEMM, per call", &c.per_call, "call"),
        ("Prefill, per prompt token", &c.prefill, "prompt token"),
        ("Decode, per generated token", &c.decode, "generated token"),
    ] {
        if let Some(ph) = ph {
            d.heading(format!("Commit mode: {title}"));
            phase_lines(d, ph, unit, rate, &latency);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{gemm_cost, Gemm, PlanDType};
    use mmaudit_protocol::commit::{audit_path, leaf_hash};
    use mmaudit_protocol::config::SamplingConfig;

    fn gemm(m: u64, n: u64, k: u64, batch: u64, reads_c: bool, bias: bool) -> GemmCost {
        let g = Gemm {
            name: "gemm",
            m,
            n,
            k,
            batch,
            dtype: PlanDType::Bf16,
            weight: true,
            reads_c,
            bias,
        };
        gemm_cost(&g, &SamplingConfig::default(), 10_000)
    }

    #[test]
    fn depth_is_the_longest_audit_path() {
        for leaves in 1..=70u64 {
            let ls: Vec<_> = (0..leaves).map(|i| leaf_hash(&i.to_le_bytes())).collect();
            let longest = (0..leaves as usize)
                .map(|i| audit_path(&ls, i).unwrap().len() as u64)
                .max()
                .unwrap();
            assert_eq!(depth(leaves), longest, "{leaves} leaves");
        }
        assert_eq!(depth(0), 0);
        assert_eq!(depth(1 << 40), 40);
        assert_eq!(depth((1 << 40) + 1), 41);
    }

    #[test]
    fn a_decode_gemm_with_held_weights_worked_by_hand() {
        // m = 4096 out features, n = 16 tokens, k = 4096, bf16; default rates: 40 rows,
        // 1 column, 1 batch entry per challenged call.
        let c = commit_cost(&gemm(4096, 16, 4096, 1, false, false), true);
        assert!(c.a_referenced && !c.attention);
        let (b, d) = (16.0 * 4096.0 * 2.0, 4096.0 * 16.0 * 2.0);
        assert_eq!(c.retained_bytes, b + d);
        assert_eq!(c.hashed_bytes, b + d + 4096.0 * 2.0);
        assert_eq!(c.extra_traffic_bytes, 3.0 * (b + d) + 8192.0);
        assert_eq!(
            c.gemm_traffic_bytes,
            (4096.0 * 4096.0 + 4096.0 * 16.0) * 2.0 + d
        );
        assert_eq!(c.launches_in_stream, 2);
        // 32 leaf hashes (op(B) and D columns), a column of each checked, op(A)'s first
        // element of each row and one spot row.
        assert_eq!(
            c.host_bytes,
            32.0 * 32.0 + (8192.0 + 8192.0) + (4096.0 * 2.0 + 8192.0)
        );
        // evidence of 40 rows + one matrix index; one column of op(B) (k) and one of D
        // (m), each with a 4-level path.
        let opening = 149.0 + (40.0 * 2.0 + 4.0) + 2.0 * (8192.0 + 4.0 * 32.0);
        assert_eq!(c.opening_bytes, opening);
        assert_eq!(c.challenge_bytes, 20.0 + 8.0 * 42.0);
        // Sent instead of held: A is kept and opened like the others.
        let sent = commit_cost(&gemm(4096, 16, 4096, 1, false, false), false);
        assert!(!sent.a_referenced);
        assert_eq!(sent.retained_bytes, b + d + 4096.0 * 4096.0 * 2.0);
        assert_eq!(sent.hashed_bytes, sent.retained_bytes);
        assert_eq!(sent.host_bytes, 32.0 * (4096.0 + 32.0) + 3.0 * 8192.0);
        assert_eq!(
            sent.opening_bytes,
            opening - 84.0 + 40.0 * (8192.0 + 12.0 * 32.0)
        );
    }

    #[test]
    fn beta_bias_and_batches_are_counted() {
        // batch 8, beta != 0, a bias: C is kept and opened like D, the whole bias vector
        // travels with every opening; paths span the batch's leaves.
        let c = commit_cost(&gemm(100, 30, 64, 8, true, true), false);
        let (a, b, cd) = (
            8.0 * 100.0 * 64.0 * 2.0,
            8.0 * 64.0 * 30.0 * 2.0,
            8.0 * 100.0 * 30.0 * 2.0,
        );
        assert_eq!(c.retained_bytes, a + b + 2.0 * cd + 100.0 * 2.0);
        assert_eq!(c.launches_in_stream, 4);
        // leaf hashes of 800 rows and 3 x 240 columns; a row, a column and a column of
        // each of C and D checked; the bias.
        assert_eq!(
            c.host_bytes,
            32.0 * (800.0 + 720.0) + (128.0 + 128.0 + 2.0 * 200.0) + 200.0
        );
        // default rates: 1 row (of 100), 1 column, 1 batch entry
        let path = |leaves: f64| 32.0 * leaves.log2().ceil();
        let opening = 149.0
            + (64.0 * 2.0 + path(800.0))
            + (64.0 * 2.0 + path(240.0))
            + 2.0 * (100.0 * 2.0 + path(240.0))
            + 200.0;
        assert_eq!(c.opening_bytes, opening);
    }

    #[test]
    fn a_phase_divides_by_its_units_and_sizes_the_ring() {
        let c = commit_cost(&gemm(4096, 16, 4096, 1, false, false), true);
        let mut t = CommitTotals::default();
        t.add(&c, 10, 0.1);
        let ph = CommitPhase::new(&t, 160.0, 2500.0, 0.05);
        assert_eq!(ph.retained_bytes, c.retained_bytes / 16.0);
        assert_eq!(ph.attention_retained_bytes, 0.0);
        assert_eq!(ph.launches_in_stream, 20.0 / 160.0);
        assert_eq!(
            ph.traffic_ratio,
            c.extra_traffic_bytes / c.gemm_traffic_bytes
        );
        let fixed = (LEDGER_RECORD_BYTES + COMMITMENT_RECORD_BYTES) as f64;
        assert!((ph.stream_bytes - (10.0 * fixed + c.opening_bytes) / 160.0).abs() < 1e-9);
        assert!((ph.retention_bytes - c.retained_bytes / 16.0 * 2500.0 * 0.05).abs() < 1e-6);
        let host = (10.0 * c.host_bytes + c.opening_bytes) / 160.0 * 2500.0;
        assert!((ph.host_bytes_per_second - host).abs() < 1e-6);
    }
}

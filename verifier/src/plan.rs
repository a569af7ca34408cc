//! `mmaudit-verify plan`: what auditing costs and how sure it makes you, computed before
//! anything runs.
//!
//! The command answers three questions for one GEMM shape (`--m --n --k`) or for a
//! transformer described by a Hugging Face `config.json` (`--hf-config`):
//!
//! 1. how many bytes the prover streams, per sampled call and per token, before
//!    compression;
//! 2. how many multiply-adds the verifier spends, per token and per second of inference;
//! 3. how likely a cheat is to be caught after N calls.
//!
//! It is pure arithmetic on the sampling configuration ([`SamplingConfig`]) and the shapes:
//! it opens no stream, reads no key and must never claim more than the formulas below
//! support. Every assumption it makes is printed next to the number it affects.
//!
//! # Formulas
//!
//! Rates are in ppm, as in the protocol. For a GEMM `C (m x n) = op(A) (m x k) op(B) (k x n)`
//! with `batch` entries, a sampled call checks ([`SamplingConfig::count`], which is
//! `clamp(floor(dim * ppm / 1e6), min, max)` capped at `dim`):
//!
//! ```text
//! r = count(m, row_ppm)      rows of C
//! s = count(n, col_ppm)      columns of C
//! e = count(batch, batch_ppm) batch entries
//! checked entries = r * s * e
//! ```
//!
//! Its sample record carries, with `in` the size of an input element and `out` the size
//! of an output element (i8 -> i32, e4m3/e5m2 -> bf16, otherwise the input type):
//!
//! ```text
//! sample bytes = 64                       fixed record overhead
//!              + e * r * k * in           op(A) rows   (left out when the verifier holds A)
//!              + e * s * k * in           op(B) columns
//!              + e * r * s * out          C_in entries (only when beta != 0)
//!              + e * r * s * out          D entries
//!              + r * out                  bias rows    (only with a bias epilogue)
//! ```
//!
//! Every call, sampled or not, also costs one ledger record of 157 bytes (a 5-byte record
//! header and the 152-byte call encoding). With `p` the call rate:
//!
//! ```text
//! expected bytes per call          = 157 + p * sample bytes
//! verifier multiply-adds per sample = r * s * e * k
//! fraction of GEMM work checked    = p * r * s * e / (m * n * batch)
//! ```
//!
//! Detection. Faking a fraction `f` of the calls (every entry of a faked call wrong) is
//! caught when at least one faked call is sampled: `P(N) = 1 - (1 - p)^(f N)`. Faking a
//! fraction `g` of the output rows of every call (the other rows right) fakes
//! `b = floor(g m)` rows; a sampled call catches it when one of its `r` checked rows is
//! faked, with probability (hypergeometric, computed exactly as a product)
//!
//! ```text
//! q = 1 - C(m - b, r) / C(m, r) = 1 - prod_{i=0}^{r-1} (m - b - i) / (m - i)
//! q ~ 1 - (1 - g)^r               (with replacement, b = g m: off either way by a little)
//! P(N) = 1 - prod over calls (1 - p q_i)   = 1 - (1 - p q)^N for one shape
//! ```
//!
//! For a model the product runs over the real mix of shapes of one run (prefill and every
//! decode step); for another N the per-call log survival of that mix is scaled:
//! `P(N) = 1 - exp(N * mean_i ln(1 - p q_i))`.
//!
//! These probabilities assume the cheat does not know which calls and entries are
//! sampled (a faulty GPU, substituted weights or skipped work chosen without reading the
//! schedule) and that every faked entry is outside the verifier's tolerance. A prover who
//! holds the key can steer around the sampled positions (docs/THREAT-MODEL.md).
//!
//! # The seed's worked case
//!
//! `C = A B` with m = n = k = 4096 in f16 at the defaults (10% of calls, 1% of rows,
//! 0.1% of columns): `r = floor(40.96) = 40` rows and `s = floor(4.096) = 4` columns,
//! so 40 x 4 = **160 checked entries**. The sample record is
//! `64 + 40*4096*2 + 4*4096*2 + 160*2 = 64 + 327680 + 32768 + 320 = 360832 B`
//! (33152 B when the verifier holds A). Expected bytes per call: `157 + 0.1 * 360832 =
//! 36240.2 B`. The verifier spends `160 * 4096 = 655360` multiply-adds per sampled call.
//! A cheat faking 1% of the rows (b = 40) is caught by one sampled call with
//! `q = 0.32594` exactly (`1 - 0.99^40 = 0.33103` approximately), so by 100 calls with
//! `P = 0.9636`.
//!
//! # The model
//!
//! Per layer and forward pass with `T` tokens per sequence, batch `B` and `n = T B`:
//! q_proj (m = heads*head_dim, k = hidden), k_proj and v_proj (m = kv_heads*head_dim,
//! k = hidden), o_proj (m = hidden, k = heads*head_dim), gate_proj and up_proj
//! (m = intermediate, k = hidden), down_proj (m = hidden, k = intermediate), and eager
//! attention as two strided-batched GEMMs with batch `B * heads`: scores = Q K^T
//! (m = context, n = T, k = head_dim) and out = P V (m = head_dim, n = T, k = context);
//! then lm_head once per pass (m = vocab, n = T B, k = hidden). Fused attention kernels
//! (FlashAttention, SDPA) do not go through cuBLAS and are neither counted nor audited.
//! A run is one prefill pass (T = context = prompt tokens) and one decode pass per
//! generated token (T = 1, context = prompt + j for the j-th generated token).
//! docs/PLAN.md has a full example on a Llama-3-8B-shaped config.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use serde::Serialize;
use serde_json::Value;

use mmaudit_protocol::call::{DType, GEMM_CALL_ENCODED_LEN, MAX_DIM};
use mmaudit_protocol::config::{parse_rate, SamplingConfig, PPM};

pub mod commit;

/// Bytes of the record header in front of every ledger entry.
pub const LEDGER_HEADER_BYTES: u64 = 5;
/// Bytes of one ledger record: every call, sampled or not, costs this much.
pub const LEDGER_RECORD_BYTES: u64 = LEDGER_HEADER_BYTES + GEMM_CALL_ENCODED_LEN as u64;
/// Approximate fixed overhead of a sample record (header, plan echo, scalars).
pub const SAMPLE_OVERHEAD_BYTES: u64 = 64;
/// Tokens per second assumed when `--tokens-per-second` is not given.
pub const DEFAULT_TOKENS_PER_SECOND: f64 = 1000.0;
/// The N of the detection table for one GEMM when `--calls` is not given.
pub const DEFAULT_CALLS: [u64; 4] = [100, 1_000, 10_000, 100_000];
/// Prompt tokens of the modelled run when `--prompt-tokens` is not given.
pub const DEFAULT_PROMPT_TOKENS: u64 = 2048;
/// Generated tokens of the modelled run when `--tokens` is not given.
pub const DEFAULT_GENERATED_TOKENS: u64 = 128;
/// The largest value accepted for a dimension in a config.json (2^24): far above any real
/// model, and it keeps every product of the model's dimensions well inside u64.
pub const MAX_CONFIG_VALUE: u64 = 1 << 24;
/// Prompt plus generated tokens may not exceed this (it bounds the decode loop).
pub const MAX_CONTEXT: u64 = 1 << 22;

const EXAMPLES: &str = "\
Examples:
  # The seed's worked case: one 4096x4096x4096 f16 GEMM (40 rows x 4 columns = 160 checked entries)
  mmaudit-verify plan --m 4096 --n 4096 --k 4096 --dtype f16

  # A Llama-3-8B-shaped model, 2048-token prompt, 128 generated tokens, weights held by the verifier
  mmaudit-verify plan --hf-config config.json --prompt-tokens 2048 --tokens 128 \\
      --verifier-holds-weights --tokens-per-second 2500 --json plan.json

Rates accept a fraction (0.1), a percentage (10%) or parts per million (100000ppm).
Formulas and a full worked example: docs/PLAN.md.";

/// Options of `mmaudit-verify plan`: one GEMM shape, or a model from its config.json.
#[derive(Debug, Clone, Args)]
#[command(after_help = EXAMPLES)]
pub struct PlanArgs {
    /// Rows of C = op(A) op(B), cuBLAS column-major (nn.Linear: out_features).
    #[arg(long, value_name = "ROWS", help_heading = "One GEMM")]
    pub m: Option<u64>,
    /// Columns of C (nn.Linear: tokens in the batch).
    #[arg(long, value_name = "COLS", help_heading = "One GEMM")]
    pub n: Option<u64>,
    /// Inner dimension (nn.Linear: in_features).
    #[arg(long, value_name = "INNER", help_heading = "One GEMM")]
    pub k: Option<u64>,
    /// Batch count of a batched GEMM [default: 1].
    #[arg(long, value_name = "COUNT", help_heading = "One GEMM")]
    pub batch_count: Option<u64>,
    /// beta != 0: the sampled entries of the input C travel too.
    #[arg(long, help_heading = "One GEMM")]
    pub beta_nonzero: bool,
    /// The call has a bias epilogue: one bias value per checked row travels.
    #[arg(long, help_heading = "One GEMM")]
    pub bias: bool,

    /// A Hugging Face config.json (hidden_size, intermediate_size, num_hidden_layers,
    /// num_attention_heads, num_key_value_heads, vocab_size).
    #[arg(long, value_name = "FILE", help_heading = "A model")]
    pub hf_config: Option<PathBuf>,
    /// Prompt tokens per sequence (prefill) [default: 2048].
    #[arg(long, value_name = "N", help_heading = "A model")]
    pub prompt_tokens: Option<u64>,
    /// Generated tokens per sequence (decode steps) [default: 128].
    #[arg(long, value_name = "N", help_heading = "A model")]
    pub tokens: Option<u64>,
    /// Sequences processed together [default: 1].
    #[arg(long, value_name = "N", help_heading = "A model")]
    pub batch: Option<u64>,
    /// Attention runs in fused kernels (FlashAttention, FlashInfer, SDPA), as in vLLM,
    /// SGLang and TensorRT-LLM: they bypass cuBLAS, so the two attention GEMMs of each
    /// layer are left out of every figure.
    #[arg(long, help_heading = "A model")]
    pub fused_attention: bool,

    /// Input element type; the output follows (i8 -> i32, e4m3/e5m2 -> bf16, otherwise the
    /// same). For a model it applies to the linear layers; attention stays in bf16 when
    /// it is an 8-bit type.
    #[arg(long, value_enum, default_value = "bf16", help_heading = "Both")]
    pub dtype: PlanDType,
    /// Fraction of GEMM calls sampled.
    #[arg(long, value_name = "RATE", value_parser = parse_rate, default_value = "10%",
          help_heading = "Both")]
    pub call_rate: u32,
    /// Fraction of the rows of C checked in a sampled call (at least 1).
    #[arg(long, value_name = "RATE", value_parser = parse_rate, default_value = "1%",
          help_heading = "Both")]
    pub row_rate: u32,
    /// Fraction of the columns of C checked in a sampled call (at least 1).
    #[arg(long, value_name = "RATE", value_parser = parse_rate, default_value = "0.1%",
          help_heading = "Both")]
    pub col_rate: u32,
    /// Fraction of the batch entries checked in a sampled call (at least 1).
    #[arg(long, value_name = "RATE", value_parser = parse_rate, default_value = "1%",
          help_heading = "Both")]
    pub batch_rate: u32,
    /// The verifier holds the weights (op(A) of the weight GEMMs), so their rows do not
    /// travel; this selects the headline figures (both are always shown).
    #[arg(long, help_heading = "Both")]
    pub verifier_holds_weights: bool,
    /// Numbers of calls N for the detection table, comma-separated
    /// [default: 100,1000,10000,100000; for a model, the GEMM calls of the modelled run].
    #[arg(
        long,
        value_name = "N,..",
        value_delimiter = ',',
        help_heading = "Both"
    )]
    pub calls: Vec<u64>,
    /// Cheat 1 fakes this fraction of the calls entirely.
    #[arg(long, value_name = "F", value_parser = parse_rate, default_value = "0.01",
          help_heading = "Both")]
    pub fake_fraction: u32,
    /// Cheat 2 fakes this fraction of the output rows of every call.
    #[arg(long, value_name = "G", value_parser = parse_rate, default_value = "0.01",
          help_heading = "Both")]
    pub fake_rows: u32,
    /// Inference speed for the per-second figures; an assumption you should set to your
    /// measured rate [default: 1000, stated as assumed in the report].
    #[arg(long, value_name = "TOK/S", help_heading = "Both")]
    pub tokens_per_second: Option<f64>,
    /// Also write everything the report shows as JSON to this file ("-" for standard
    /// output, which then carries the JSON alone: the text goes to standard error).
    #[arg(long, value_name = "FILE", help_heading = "Both")]
    pub json: Option<PathBuf>,
    /// What `mmaudit-verify bench --json FILE` measured on the verifier's machine: a
    /// model's report then gives the verifier cores each phase needs at
    /// --tokens-per-second.
    #[arg(long, value_name = "FILE", help_heading = "A model")]
    pub verifier_bench: Option<PathBuf>,
    /// Also cost the commit-before-challenge mode (docs/COMMIT.md): GPU bytes hashed and
    /// kept per call, launches added, commitment and opening bytes, retention memory.
    #[arg(long, help_heading = "Both")]
    pub commit: bool,
    /// With --commit: seconds from a call to its challenge at the prover, in
    /// milliseconds, for the retention ring's size [default: 50, stated as assumed].
    #[arg(long, value_name = "MS", requires = "commit", help_heading = "Both")]
    pub challenge_latency_ms: Option<f64>,
}

/// Input element type of the planned GEMMs, as named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PlanDType {
    /// IEEE binary32
    F32,
    /// binary32 in memory, tf32 tensor-core compute
    Tf32,
    /// IEEE binary16
    F16,
    /// bfloat16
    Bf16,
    /// fp8 E4M3 (bf16 output)
    E4m3,
    /// fp8 E5M2 (bf16 output)
    E5m2,
    /// int8 (int32 output)
    I8,
}

impl PlanDType {
    /// The element type of A and B in memory.
    pub fn input(self) -> DType {
        match self {
            PlanDType::F32 | PlanDType::Tf32 => DType::F32,
            PlanDType::F16 => DType::F16,
            PlanDType::Bf16 => DType::BF16,
            PlanDType::E4m3 => DType::F8E4M3,
            PlanDType::E5m2 => DType::F8E5M2,
            PlanDType::I8 => DType::I8,
        }
    }

    /// The element type of C and D.
    pub fn output(self) -> DType {
        match self {
            PlanDType::I8 => DType::I32,
            PlanDType::E4m3 | PlanDType::E5m2 => DType::BF16,
            other => other.input(),
        }
    }

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            PlanDType::Tf32 => "tf32",
            other => other.input().name(),
        }
    }

    /// The type of the activation-by-activation GEMMs (attention) of a model whose
    /// linear layers use `self`: 8-bit types quantise the linear layers only.
    pub fn attention(self) -> PlanDType {
        match self {
            PlanDType::E4m3 | PlanDType::E5m2 | PlanDType::I8 => PlanDType::Bf16,
            other => other,
        }
    }
}

// ---------------------------------------------------------------------------------------
// One GEMM: what a sampled call checks, sends and costs.
// ---------------------------------------------------------------------------------------

/// One GEMM shape as the plan sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gemm {
    /// What the GEMM is (`q_proj`, `attn_scores`, `gemm`).
    pub name: &'static str,
    /// rows of C
    pub m: u64,
    /// columns of C
    pub n: u64,
    /// inner dimension
    pub k: u64,
    /// batch count
    pub batch: u64,
    /// input element type
    pub dtype: PlanDType,
    /// op(A) is a weight matrix the verifier may hold.
    pub weight: bool,
    /// beta != 0: C_in entries travel.
    pub reads_c: bool,
    /// bias epilogue: bias rows travel.
    pub bias: bool,
}

/// What one sampled call of a [`Gemm`] checks and costs, and how likely it is to catch
/// a cheat that fakes a fraction of the rows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GemmCost {
    /// what the GEMM is
    pub name: &'static str,
    /// rows of C
    pub m: u64,
    /// columns of C
    pub n: u64,
    /// inner dimension
    pub k: u64,
    /// batch count
    pub batch: u64,
    /// input element type
    pub dtype: PlanDType,
    /// output element type name
    pub output_dtype: &'static str,
    /// op(A) is a weight matrix the verifier may hold
    pub weight: bool,
    /// rows of C checked per sampled call
    pub rows: u64,
    /// columns of C checked per sampled call
    pub cols: u64,
    /// batch entries checked per sampled call
    pub batches: u64,
    /// entries of C checked per sampled call
    pub entries: u128,
    /// bytes of op(A) rows in a sample record
    pub bytes_a: f64,
    /// bytes of op(B) columns
    pub bytes_b: f64,
    /// bytes of C_in entries (beta != 0)
    pub bytes_c: f64,
    /// bytes of D entries
    pub bytes_d: f64,
    /// bytes of bias rows
    pub bytes_bias: f64,
    /// the whole sample record when op(A) rows travel
    pub sample_bytes: f64,
    /// the whole sample record when the verifier holds op(A) (same as `sample_bytes`
    /// when A is not a weight)
    pub sample_bytes_weights_held: f64,
    /// multiply-adds the verifier spends on one sampled call
    pub verifier_macs: f64,
    /// multiply-adds of the GEMM itself
    pub gemm_macs: f64,
    /// rows a cheat faking a fraction g of the rows fakes: floor(g m)
    pub faked_rows: u64,
    /// chance that one sampled call catches that cheat, exact hypergeometric
    pub q_exact: f64,
    /// the same with the (1 - g)^r approximation
    pub q_approx: f64,
}

/// The cost of one sampled call of `g` under `cfg`, and its chance of catching a cheat
/// that fakes `fake_rows_ppm` of the rows.
pub fn gemm_cost(g: &Gemm, cfg: &SamplingConfig, fake_rows_ppm: u32) -> GemmCost {
    let rows = SamplingConfig::count(g.m, cfg.row_ppm, cfg.min_rows, cfg.max_rows);
    let cols = SamplingConfig::count(g.n, cfg.col_ppm, cfg.min_cols, cfg.max_cols);
    let batches = SamplingConfig::count(g.batch, cfg.batch_ppm, cfg.min_batches, cfg.max_batches);
    let (r, s, e, k) = (rows as f64, cols as f64, batches as f64, g.k as f64);
    let in_size = g.dtype.input().size() as f64;
    let out_size = g.dtype.output().size() as f64;
    let bytes_a = e * r * k * in_size;
    let bytes_b = e * s * k * in_size;
    let bytes_c = if g.reads_c { e * r * s * out_size } else { 0.0 };
    let bytes_d = e * r * s * out_size;
    let bytes_bias = if g.bias { r * out_size } else { 0.0 };
    let sample_bytes =
        SAMPLE_OVERHEAD_BYTES as f64 + bytes_a + bytes_b + bytes_c + bytes_d + bytes_bias;
    let sample_bytes_weights_held = if g.weight {
        sample_bytes - bytes_a
    } else {
        sample_bytes
    };
    let faked_rows = SamplingConfig::count(g.m, fake_rows_ppm, 0, 0);
    GemmCost {
        name: g.name,
        m: g.m,
        n: g.n,
        k: g.k,
        batch: g.batch,
        dtype: g.dtype,
        output_dtype: g.dtype.output().name(),
        weight: g.weight,
        rows,
        cols,
        batches,
        entries: rows as u128 * cols as u128 * batches as u128,
        bytes_a,
        bytes_b,
        bytes_c,
        bytes_d,
        bytes_bias,
        sample_bytes,
        sample_bytes_weights_held,
        verifier_macs: r * s * e * k,
        gemm_macs: g.m as f64 * g.n as f64 * k * g.batch as f64,
        faked_rows,
        q_exact: -ln_rows_missed(g.m, faked_rows, rows).exp_m1(),
        q_approx: rows_hit_approx(fake_rows_ppm as f64 / PPM as f64, rows),
    }
}

/// `ln(C(m - b, r) / C(m, r))`: the log of the chance that `r` rows drawn without
/// replacement from `m` miss all `b` faked ones, as the exact product
/// `prod_{i<r} (m - b - i) / (m - i)`. Negative infinity when a hit is certain.
pub fn ln_rows_missed(m: u64, b: u64, r: u64) -> f64 {
    if b == 0 || r == 0 {
        return 0.0;
    }
    if b >= m || r > m - b {
        return f64::NEG_INFINITY;
    }
    let mut ln = 0.0;
    for i in 0..r {
        // (m - b - i) / (m - i) = 1 - b / (m - i)
        ln += (-(b as f64) / (m - i) as f64).ln_1p();
        if ln < -745.0 {
            // exp() of anything smaller is 0 in f64: the product has underflowed.
            return f64::NEG_INFINITY;
        }
    }
    ln
}

/// `1 - (1 - g)^r`: the with-replacement approximation of the chance that `r` checked
/// rows include one of a fraction `g` of faked rows.
pub fn rows_hit_approx(g: f64, r: u64) -> f64 {
    if r == 0 || g == 0.0 {
        return 0.0;
    }
    -(r as f64 * (-g).ln_1p()).exp_m1()
}

// ---------------------------------------------------------------------------------------
// Detection probability.
// ---------------------------------------------------------------------------------------

/// `1 - exp(ln_miss)` together with `exp(ln_miss)`, both kept precise near 0 and 1.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Chance {
    /// probability of detection
    pub detect: f64,
    /// probability of missing the cheat: 1 - detect, computed without cancellation
    pub miss: f64,
    /// log10 of `miss`, meaningful where `miss` underflows to 0 (JSON null: detection is
    /// certain)
    pub log10_miss: f64,
}

impl Chance {
    /// The chance of detection when the log of the chance of missing is `ln_miss`.
    pub fn from_ln_miss(ln_miss: f64) -> Chance {
        Chance {
            detect: -ln_miss.exp_m1(),
            miss: ln_miss.exp(),
            log10_miss: ln_miss / std::f64::consts::LN_10,
        }
    }
}

/// `x * ln_survival` with the convention that zero trials survive for sure (it avoids
/// `0 * -inf`).
fn scaled(x: f64, ln_survival: f64) -> f64 {
    if x == 0.0 {
        0.0
    } else {
        x * ln_survival
    }
}

/// Cheat 1, a fraction `f` of `calls` calls faked entirely, each call sampled with
/// probability `p`: `P = 1 - (1 - p)^(f N)`.
pub fn detect_fake_calls(p: f64, f: f64, calls: f64) -> Chance {
    Chance::from_ln_miss(scaled(f * calls, (-p).ln_1p()))
}

/// Cheat 2 over `calls` calls of one shape whose sampled calls catch it with probability
/// `q`: `P = 1 - (1 - p q)^N`.
pub fn detect_fake_rows(p: f64, q: f64, calls: f64) -> Chance {
    Chance::from_ln_miss(scaled(calls, (-p * q).ln_1p()))
}

/// Calls needed before a cheat whose per-call log survival is `ln_survival` is caught
/// with probability `target`; `None` when it never is.
pub fn calls_for(target: f64, ln_survival: f64) -> Option<f64> {
    if ln_survival >= 0.0 || ln_survival.is_nan() {
        return None;
    }
    Some(((-target).ln_1p() / ln_survival).ceil().max(1.0))
}

/// One line of the detection table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DetectionRow {
    /// N: GEMM calls observed
    pub calls: u64,
    /// f N: calls faked by cheat 1
    pub faked_calls: f64,
    /// cheat 1 (fraction f of calls faked)
    pub fake_calls: Chance,
    /// cheat 2 (fraction g of rows faked), exact hypergeometric
    pub fake_rows_exact: Chance,
    /// cheat 2 with the (1 - g)^r approximation
    pub fake_rows_approx: Chance,
}

/// Detection probabilities for both cheats.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detection {
    /// p: fraction of calls sampled
    pub call_rate: f64,
    /// f: fraction of calls cheat 1 fakes
    pub fake_fraction: f64,
    /// g: fraction of rows cheat 2 fakes
    pub fake_rows: f64,
    /// ln(1 - p): per-call log survival of cheat 1
    pub ln_survival_fake_calls: f64,
    /// mean over calls of ln(1 - p q_i), exact q
    pub ln_survival_fake_rows_exact: f64,
    /// the same with approximate q
    pub ln_survival_fake_rows_approx: f64,
    /// the mean per-call detection probability of cheat 2 over the mix: 1 - exp(mean ln)
    pub per_call_fake_rows_exact: f64,
    /// the same with approximate q
    pub per_call_fake_rows_approx: f64,
    /// calls for a 99% chance of catching cheat 1
    pub calls_for_99_fake_calls: Option<f64>,
    /// calls for a 99% chance of catching cheat 2 (exact q)
    pub calls_for_99_fake_rows: Option<f64>,
    /// the table
    pub rows: Vec<DetectionRow>,
}

impl Detection {
    /// The detection table for `calls`, given the mean per-call log survival of cheat 2
    /// (exact and approximate q).
    fn new(knobs: &Knobs, ln_rows_exact: f64, ln_rows_approx: f64, calls: &[u64]) -> Detection {
        let p = knobs.call_rate;
        let f = knobs.fake_fraction;
        let ln_calls = scaled(f, (-p).ln_1p());
        let rows = calls
            .iter()
            .map(|&n| DetectionRow {
                calls: n,
                faked_calls: f * n as f64,
                fake_calls: detect_fake_calls(p, f, n as f64),
                fake_rows_exact: Chance::from_ln_miss(scaled(n as f64, ln_rows_exact)),
                fake_rows_approx: Chance::from_ln_miss(scaled(n as f64, ln_rows_approx)),
            })
            .collect();
        Detection {
            call_rate: p,
            fake_fraction: f,
            fake_rows: knobs.fake_rows,
            ln_survival_fake_calls: (-p).ln_1p(),
            ln_survival_fake_rows_exact: ln_rows_exact,
            ln_survival_fake_rows_approx: ln_rows_approx,
            per_call_fake_rows_exact: -ln_rows_exact.exp_m1(),
            per_call_fake_rows_approx: -ln_rows_approx.exp_m1(),
            calls_for_99_fake_calls: calls_for(0.99, ln_calls),
            calls_for_99_fake_rows: calls_for(0.99, ln_rows_exact),
            rows,
        }
    }
}

// ---------------------------------------------------------------------------------------
// A model from its config.json.
// ---------------------------------------------------------------------------------------

/// The dimensions of a decoder-only transformer that fix its GEMM shapes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelShape {
    /// hidden_size
    pub hidden: u64,
    /// intermediate_size
    pub intermediate: u64,
    /// num_hidden_layers
    pub layers: u64,
    /// num_attention_heads
    pub heads: u64,
    /// num_key_value_heads (num_attention_heads when the config has none)
    pub kv_heads: u64,
    /// head_dim (hidden_size / num_attention_heads when the config has none)
    pub head_dim: u64,
    /// vocab_size
    pub vocab: u64,
    /// num_key_value_heads was absent and defaulted to num_attention_heads
    pub kv_heads_defaulted: bool,
}

/// Reads the shape of a model from the text of a Hugging Face `config.json`. The keys are
/// looked up at the top level, or in `text_config` when the top level has no
/// `hidden_size` (multimodal configs).
pub fn parse_hf_config(text: &str) -> Result<ModelShape> {
    let root: Value = serde_json::from_str(text).context("not valid JSON")?;
    let Some(top) = root.as_object() else {
        bail!("not a JSON object");
    };
    let obj = match (top.get("hidden_size"), top.get("text_config")) {
        (None, Some(Value::Object(inner))) => inner,
        _ => top,
    };
    let get = |key: &str| -> Result<Option<u64>> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_u64() {
                Some(0) => bail!("\"{key}\" is 0; it must be at least 1"),
                Some(x) if x > MAX_CONFIG_VALUE => {
                    bail!("\"{key}\" is {x}; at most {MAX_CONFIG_VALUE} is accepted")
                }
                Some(x) => Ok(Some(x)),
                None => bail!("\"{key}\" is {v}, not a positive integer"),
            },
        }
    };
    let need = |key: &str| -> Result<u64> {
        get(key)?.with_context(|| format!("the config has no \"{key}\""))
    };
    let hidden = need("hidden_size")?;
    let intermediate = need("intermediate_size")?;
    let layers = need("num_hidden_layers")?;
    let heads = need("num_attention_heads")?;
    let vocab = need("vocab_size")?;
    let (kv_heads, kv_heads_defaulted) = match get("num_key_value_heads")? {
        Some(kv) => (kv, false),
        None => (heads, true),
    };
    if heads % kv_heads != 0 {
        bail!("num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}");
    }
    let head_dim = match get("head_dim")? {
        Some(d) => d,
        None if hidden % heads == 0 => hidden / heads,
        None => bail!(
            "hidden_size {hidden} is not divisible by num_attention_heads {heads} \
             (and the config gives no head_dim)"
        ),
    };
    Ok(ModelShape {
        hidden,
        intermediate,
        layers,
        heads,
        kv_heads,
        head_dim,
        vocab,
        kv_heads_defaulted,
    })
}

/// The GEMMs of one forward pass that do not depend on the context length, each with its
/// number of calls per pass: the seven linear layers of every layer, then lm_head.
pub fn linear_gemms(s: &ModelShape, dtype: PlanDType, n: u64) -> Vec<(Gemm, u64)> {
    let linear = |name, m, k| Gemm {
        name,
        m,
        n,
        k,
        batch: 1,
        dtype,
        weight: true,
        reads_c: false,
        bias: false,
    };
    let q_dim = s.heads * s.head_dim;
    let kv_dim = s.kv_heads * s.head_dim;
    vec![
        (linear("q_proj", q_dim, s.hidden), s.layers),
        (linear("k_proj", kv_dim, s.hidden), s.layers),
        (linear("v_proj", kv_dim, s.hidden), s.layers),
        (linear("o_proj", s.hidden, q_dim), s.layers),
        (linear("gate_proj", s.intermediate, s.hidden), s.layers),
        (linear("up_proj", s.intermediate, s.hidden), s.layers),
        (linear("down_proj", s.hidden, s.intermediate), s.layers),
        (linear("lm_head", s.vocab, s.hidden), 1),
    ]
}

/// The two eager-attention GEMMs of every layer for `t` new tokens per sequence,
/// `batch` sequences and `context` attended positions.
pub fn attention_gemms(
    s: &ModelShape,
    dtype: PlanDType,
    t: u64,
    batch: u64,
    context: u64,
) -> Vec<(Gemm, u64)> {
    let att = |name, m, n, k| Gemm {
        name,
        m,
        n,
        k,
        batch: batch * s.heads,
        dtype: dtype.attention(),
        weight: false,
        reads_c: false,
        bias: false,
    };
    vec![
        (att("attn_scores", context, t, s.head_dim), s.layers),
        (att("attn_out", s.head_dim, t, context), s.layers),
    ]
}

/// Sums over the calls of a phase (prefill, decode) of expected costs.
#[derive(Debug, Clone, Default, PartialEq)]
struct Totals {
    calls: f64,
    gemm_macs: f64,
    sample_bytes: f64,
    sample_bytes_weights_held: f64,
    verifier_macs: f64,
    ln_rows_exact: f64,
    ln_rows_approx: f64,
}

impl Totals {
    fn add(&mut self, c: &GemmCost, times: u64, p: f64) {
        let t = times as f64;
        self.calls += t;
        self.gemm_macs += t * c.gemm_macs;
        self.sample_bytes += t * p * c.sample_bytes;
        self.sample_bytes_weights_held += t * p * c.sample_bytes_weights_held;
        self.verifier_macs += t * p * c.verifier_macs;
        self.ln_rows_exact += scaled(t, (-p * c.q_exact).ln_1p());
        self.ln_rows_approx += scaled(t, (-p * c.q_approx).ln_1p());
    }

    fn merge(&mut self, o: &Totals) {
        self.calls += o.calls;
        self.gemm_macs += o.gemm_macs;
        self.sample_bytes += o.sample_bytes;
        self.sample_bytes_weights_held += o.sample_bytes_weights_held;
        self.verifier_macs += o.verifier_macs;
        self.ln_rows_exact += o.ln_rows_exact;
        self.ln_rows_approx += o.ln_rows_approx;
    }
}

/// Expected costs of one phase of a run, per token of that phase.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Phase {
    /// tokens of the phase, over all sequences (prompt tokens, or generated tokens)
    pub tokens: u64,
    /// forward passes in the phase
    pub passes: u64,
    /// GEMM calls in the phase
    pub calls: f64,
    /// GEMM calls per token
    pub calls_per_token: f64,
    /// ledger bytes per token (every call)
    pub ledger_bytes_per_token: f64,
    /// expected sample bytes per token, op(A) rows of the weight GEMMs sent
    pub sample_bytes_per_token: f64,
    /// expected sample bytes per token, the verifier holding the weights
    pub sample_bytes_per_token_weights_held: f64,
    /// ledger + expected sample bytes per token, op(A) rows sent
    pub bytes_per_token: f64,
    /// ledger + expected sample bytes per token, the verifier holding the weights
    pub bytes_per_token_weights_held: f64,
    /// expected verifier multiply-adds per token
    pub verifier_macs_per_token: f64,
    /// the same per second at the assumed tokens/s
    pub verifier_macs_per_second: f64,
    /// expected bytes per second at the assumed tokens/s (headline variant)
    pub bytes_per_second: f64,
    /// GEMM multiply-adds of the prover per token
    pub gemm_macs_per_token: f64,
    /// share of the GEMM multiply-adds the verifier recomputes
    pub fraction_checked: f64,
    /// cores of the `--verifier-bench` machine that keep up at the assumed tokens/s:
    /// `seconds_per_mac * verifier multiply-adds/s + seconds_per_byte * stream bytes/s`,
    /// and with `--verifier-holds-weights` the referenced rows at the bench's
    /// `seconds_per_held_byte` instead of as stream bytes (without that figure: every
    /// sampled operand byte as a stream byte, an upper bound)
    pub verifier_cores: Option<f64>,
}

impl Phase {
    fn new(t: &Totals, tokens: u64, passes: u64, tokens_per_second: f64, held: bool) -> Phase {
        let per = |x: f64| x / tokens as f64;
        let ledger = per(t.calls * LEDGER_RECORD_BYTES as f64);
        let bytes = ledger + per(t.sample_bytes);
        let bytes_held = ledger + per(t.sample_bytes_weights_held);
        Phase {
            tokens,
            passes,
            calls: t.calls,
            calls_per_token: per(t.calls),
            ledger_bytes_per_token: ledger,
            sample_bytes_per_token: per(t.sample_bytes),
            sample_bytes_per_token_weights_held: per(t.sample_bytes_weights_held),
            bytes_per_token: bytes,
            bytes_per_token_weights_held: bytes_held,
            verifier_macs_per_token: per(t.verifier_macs),
            verifier_macs_per_second: per(t.verifier_macs) * tokens_per_second,
            bytes_per_second: if held { bytes_held } else { bytes } * tokens_per_second,
            gemm_macs_per_token: per(t.gemm_macs),
            fraction_checked: t.verifier_macs / t.gemm_macs,
            verifier_cores: None,
        }
    }
}

/// One GEMM of a forward pass and how many times a pass calls it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PassGemm {
    /// calls per forward pass (num_hidden_layers, or 1 for lm_head)
    pub calls_per_pass: u64,
    /// the shape and what one sampled call of it costs
    #[serde(flatten)]
    pub cost: GemmCost,
}

fn pass_gemms(gs: Vec<(GemmCost, u64)>) -> Vec<PassGemm> {
    gs.into_iter()
        .map(|(cost, calls_per_pass)| PassGemm {
            calls_per_pass,
            cost,
        })
        .collect()
}

/// The plan of a whole model run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelPlan {
    /// the config file
    pub config_path: String,
    /// its shape
    pub shape: ModelShape,
    /// prompt tokens per sequence
    pub prompt_tokens: u64,
    /// generated tokens per sequence
    pub generated_tokens: u64,
    /// sequences
    pub batch: u64,
    /// GEMMs of the prefill pass
    pub prefill_gemms: Vec<PassGemm>,
    /// the context at which `decode_gemms` is shown (the middle of generation)
    pub decode_shown_at_context: u64,
    /// GEMMs of one decode pass at that context
    pub decode_gemms: Vec<PassGemm>,
    /// prefill, per prompt token
    pub prefill: Phase,
    /// decode, per generated token (exact sum over every decode step)
    pub decode: Phase,
    /// GEMM calls of the whole run
    pub run_calls: f64,
    /// expected bytes of the whole run, op(A) rows sent
    pub run_bytes: f64,
    /// expected bytes of the whole run, the verifier holding the weights
    pub run_bytes_weights_held: f64,
    /// expected verifier multiply-adds of the whole run
    pub run_verifier_macs: f64,
}

/// The plan of one GEMM shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GemmPlan {
    /// the shape and its per-sample cost
    pub cost: GemmCost,
    /// ledger + p * sample bytes, headline variant
    pub expected_bytes_per_call: f64,
    /// the same when op(A) rows travel
    pub expected_bytes_per_call_a_sent: f64,
    /// the same when the verifier holds op(A)
    pub expected_bytes_per_call_a_held: f64,
    /// headline expected bytes per column of C (per token when n counts tokens)
    pub expected_bytes_per_column: f64,
    /// p * verifier multiply-adds per sample
    pub expected_verifier_macs_per_call: f64,
    /// verifier multiply-adds per second when n columns are tokens at the assumed rate
    pub verifier_macs_per_second: f64,
    /// share of the GEMM multiply-adds the verifier recomputes
    pub fraction_checked: f64,
}

/// Everything `plan` reports; `--json` writes this.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanReport {
    /// "gemm" or "model"
    pub mode: &'static str,
    /// input element type
    pub dtype: PlanDType,
    /// output element type
    pub output_dtype: &'static str,
    /// call rate, fraction
    pub call_rate: f64,
    /// row rate, fraction
    pub row_rate: f64,
    /// column rate, fraction
    pub col_rate: f64,
    /// batch rate, fraction
    pub batch_rate: f64,
    /// bytes of a ledger record
    pub ledger_record_bytes: u64,
    /// fixed bytes of a sample record
    pub sample_overhead_bytes: u64,
    /// the verifier holds the weights (headline figures)
    pub verifier_holds_weights: bool,
    /// tokens per second used for per-second figures
    pub tokens_per_second: f64,
    /// true when that rate is the default assumption, not given by the user
    pub tokens_per_second_assumed: bool,
    /// one GEMM (mode "gemm")
    pub gemm: Option<GemmPlan>,
    /// a model run (mode "model")
    pub model: Option<ModelPlan>,
    /// detection probabilities
    pub detection: Detection,
    /// detection of cheaper arithmetic (16-bit inputs only; empty otherwise)
    pub arithmetic: Vec<ArithmeticRow>,
    /// assumptions behind the numbers
    pub notes: Vec<String>,
    /// what `--verifier-bench` measured, when given
    pub verifier_bench: Option<crate::bench::Throughput>,
    /// the commit mode's costs, with `--commit`
    pub commit: Option<commit::CommitPlan>,
}

/// The knobs every mode shares, validated and converted to fractions.
#[derive(Debug, Clone)]
struct Knobs {
    cfg: SamplingConfig,
    call_rate: f64,
    fake_fraction: f64,
    fake_rows: f64,
    fake_rows_ppm: u32,
    tokens_per_second: f64,
    tokens_per_second_assumed: bool,
    held: bool,
    /// `--commit`: the challenge latency in seconds and whether it is the default
    commit: Option<(f64, bool)>,
}

fn fraction(ppm: u32) -> f64 {
    ppm as f64 / PPM as f64
}

impl Knobs {
    fn new(a: &PlanArgs) -> Result<Knobs> {
        let cfg = SamplingConfig {
            call_ppm: a.call_rate,
            row_ppm: a.row_rate,
            col_ppm: a.col_rate,
            batch_ppm: a.batch_rate,
            ..SamplingConfig::default()
        };
        cfg.validate()?;
        let (tokens_per_second, assumed) = match a.tokens_per_second {
            Some(t) if t.is_finite() && t > 0.0 => (t, false),
            Some(t) => bail!("--tokens-per-second must be a positive number, not {t}"),
            None => (DEFAULT_TOKENS_PER_SECOND, true),
        };
        let commit = match (a.commit, a.challenge_latency_ms) {
            (false, _) => None,
            (true, Some(ms)) if ms.is_finite() && ms >= 0.0 => Some((ms / 1e3, false)),
            (true, Some(ms)) => bail!(
                "--challenge-latency-ms must be a number of milliseconds, 0 or more, not {ms}"
            ),
            (true, None) => Some((commit::DEFAULT_CHALLENGE_LATENCY_MS / 1e3, true)),
        };
        Ok(Knobs {
            cfg,
            call_rate: fraction(a.call_rate),
            fake_fraction: fraction(a.fake_fraction),
            fake_rows: fraction(a.fake_rows),
            fake_rows_ppm: a.fake_rows,
            tokens_per_second,
            tokens_per_second_assumed: assumed,
            held: a.verifier_holds_weights,
            commit,
        })
    }
}

fn dim(name: &str, v: u64) -> Result<u64> {
    if v == 0 || v > MAX_DIM {
        bail!("{name} must be between 1 and {MAX_DIM}, not {v}");
    }
    Ok(v)
}

/// Computes the whole report from the arguments, reading `--hf-config` if given.
pub fn plan(a: &PlanArgs) -> Result<PlanReport> {
    let bench = a
        .verifier_bench
        .as_deref()
        .map(crate::bench::load)
        .transpose()?;
    let mut report = plan_without_cores(a)?;
    if let Some(t) = bench {
        let Some(model) = &mut report.model else {
            bail!(
                "--verifier-bench needs a model (--hf-config): cores are given per phase of a run"
            );
        };
        let (tps, held) = (report.tokens_per_second, report.verifier_holds_weights);
        for ph in [&mut model.prefill, &mut model.decode] {
            ph.verifier_cores = Some(verifier_cores(&t, ph, tps, held));
        }
        report.verifier_bench = Some(t);
    }
    Ok(report)
}

/// Cores of the bench's machine that keep up with `ph` at `tps` tokens/s. A verifier
/// that holds the weights reads the referenced rows from its copy at the bench's
/// `seconds_per_held_byte` and the rest of the stream at `seconds_per_byte`; without
/// that figure (a measurement saved before it existed) every sampled operand byte is
/// charged as a capture byte, an upper bound.
fn verifier_cores(t: &crate::bench::Throughput, ph: &Phase, tps: f64, held: bool) -> f64 {
    let macs = t.seconds_per_mac * ph.verifier_macs_per_second;
    match (held, t.seconds_per_held_byte) {
        (true, Some(h)) => {
            let rows = ph.sample_bytes_per_token - ph.sample_bytes_per_token_weights_held;
            macs + t.seconds_per_byte * ph.bytes_per_token_weights_held * tps + h * rows * tps
        }
        _ => macs + t.seconds_per_byte * ph.bytes_per_token * tps,
    }
}

fn plan_without_cores(a: &PlanArgs) -> Result<PlanReport> {
    let single = [
        ("--m", a.m.is_some()),
        ("--n", a.n.is_some()),
        ("--k", a.k.is_some()),
        ("--batch-count", a.batch_count.is_some()),
        ("--beta-nonzero", a.beta_nonzero),
        ("--bias", a.bias),
    ];
    let model_only = [
        ("--prompt-tokens", a.prompt_tokens.is_some()),
        ("--tokens", a.tokens.is_some()),
        ("--batch", a.batch.is_some()),
        ("--fused-attention", a.fused_attention),
    ];
    let knobs = Knobs::new(a)?;
    match &a.hf_config {
        Some(path) => {
            if let Some((name, _)) = single.iter().find(|(_, given)| *given) {
                bail!("give either one GEMM (--m --n --k) or a model (--hf-config), not both ({name} with --hf-config)");
            }
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --hf-config {}", path.display()))?;
            let shape = parse_hf_config(&text)
                .with_context(|| format!("--hf-config {}", path.display()))?;
            let run = Run {
                prompt: dim(
                    "--prompt-tokens",
                    a.prompt_tokens.unwrap_or(DEFAULT_PROMPT_TOKENS),
                )?,
                generated: dim("--tokens", a.tokens.unwrap_or(DEFAULT_GENERATED_TOKENS))?,
                batch: dim("--batch", a.batch.unwrap_or(1))?,
            };
            model_report(a, &knobs, path, shape, run)
        }
        None => {
            if let Some((name, _)) = model_only.iter().find(|(_, given)| *given) {
                bail!("{name} applies only to a model (--hf-config)");
            }
            let missing: Vec<&str> = single[..3]
                .iter()
                .filter(|(_, g)| !g)
                .map(|(n, _)| *n)
                .collect();
            if !missing.is_empty() {
                bail!(
                    "give --m, --n and --k (one GEMM) or --hf-config (a model); missing {}",
                    missing.join(", ")
                );
            }
            let g = Gemm {
                name: "gemm",
                m: dim("--m", a.m.unwrap_or(0))?,
                n: dim("--n", a.n.unwrap_or(0))?,
                k: dim("--k", a.k.unwrap_or(0))?,
                batch: dim("--batch-count", a.batch_count.unwrap_or(1))?,
                dtype: a.dtype,
                weight: true,
                reads_c: a.beta_nonzero,
                bias: a.bias,
            };
            Ok(gemm_report(a, &knobs, &g))
        }
    }
}

fn base_report(a: &PlanArgs, k: &Knobs, mode: &'static str, detection: Detection) -> PlanReport {
    PlanReport {
        mode,
        dtype: a.dtype,
        output_dtype: a.dtype.output().name(),
        call_rate: k.call_rate,
        row_rate: fraction(k.cfg.row_ppm),
        col_rate: fraction(k.cfg.col_ppm),
        batch_rate: fraction(k.cfg.batch_ppm),
        ledger_record_bytes: LEDGER_RECORD_BYTES,
        sample_overhead_bytes: SAMPLE_OVERHEAD_BYTES,
        verifier_holds_weights: k.held,
        tokens_per_second: k.tokens_per_second,
        tokens_per_second_assumed: k.tokens_per_second_assumed,
        gemm: None,
        model: None,
        detection,
        arithmetic: Vec::new(),
        notes: vec![
            "Detection assumes the cheat does not know which calls and entries are sampled \
             (faulty GPU, substituted weights or skipped work chosen without the schedule); \
             a prover holding the key can avoid them (docs/THREAT-MODEL.md)."
                .into(),
            "Cheats 1 and 2 count a faked entry as caught only when it is outside the verifier's \
             tolerance; the cheaper-arithmetic figures judge simulated entries with both the \
             tolerance and the declared-precision bound."
                .into(),
            "Bytes are before compression; the sample record overhead (64 B) is approximate."
                .into(),
        ],
        verifier_bench: None,
        commit: None,
    }
}

fn gemm_report(a: &PlanArgs, k: &Knobs, g: &Gemm) -> PlanReport {
    let cost = gemm_cost(g, &k.cfg, k.fake_rows_ppm);
    let p = k.call_rate;
    let ledger = LEDGER_RECORD_BYTES as f64;
    let sent = ledger + p * cost.sample_bytes;
    let held = ledger + p * cost.sample_bytes_weights_held;
    let headline = if k.held { held } else { sent };
    let verifier = p * cost.verifier_macs;
    let ln_exact = (-p * cost.q_exact).ln_1p();
    let ln_approx = (-p * cost.q_approx).ln_1p();
    let calls = if a.calls.is_empty() {
        DEFAULT_CALLS.to_vec()
    } else {
        a.calls.clone()
    };
    let mut report = base_report(a, k, "gemm", Detection::new(k, ln_exact, ln_approx, &calls));
    report.arithmetic = arithmetic_detection(a.dtype, p, &[&cost]);
    if report.arithmetic.is_empty() {
        report.notes.push(arithmetic_gap_note(a.dtype));
    }
    if let Some((latency, assumed)) = k.commit {
        let c = commit::commit_cost(&cost, k.held);
        let mut t = commit::CommitTotals::default();
        t.add(&c, 1, p);
        let calls_per_second = k.tokens_per_second / g.n as f64;
        report.commit = Some(commit::CommitPlan {
            challenge_latency_s: latency,
            challenge_latency_assumed: assumed,
            commitment_record_bytes: commit::COMMITMENT_RECORD_BYTES,
            gemm: Some(c),
            per_call: Some(commit::CommitPhase::new(&t, 1.0, calls_per_second, latency)),
            prefill: None,
            decode: None,
        });
    }
    report.gemm = Some(GemmPlan {
        expected_bytes_per_call: headline,
        expected_bytes_per_call_a_sent: sent,
        expected_bytes_per_call_a_held: held,
        expected_bytes_per_column: headline / g.n as f64,
        expected_verifier_macs_per_call: verifier,
        verifier_macs_per_second: verifier / g.n as f64 * k.tokens_per_second,
        fraction_checked: verifier / cost.gemm_macs,
        cost,
    });
    report
}

/// The modelled run: `batch` sequences of `prompt` prompt tokens, each generating
/// `generated` tokens.
#[derive(Debug, Clone, Copy)]
struct Run {
    prompt: u64,
    generated: u64,
    batch: u64,
}

fn model_report(
    a: &PlanArgs,
    k: &Knobs,
    path: &Path,
    shape: ModelShape,
    run: Run,
) -> Result<PlanReport> {
    let Run {
        prompt,
        generated,
        batch,
    } = run;
    if prompt.saturating_add(generated) > MAX_CONTEXT {
        bail!("--prompt-tokens plus --tokens must be at most {MAX_CONTEXT}");
    }
    batch
        .checked_mul(shape.heads)
        .filter(|&b| b <= MAX_DIM)
        .context("--batch times num_attention_heads is too large")?;
    let prefill_n = prompt
        .checked_mul(batch)
        .filter(|&n| n <= MAX_DIM)
        .context("--prompt-tokens times --batch is too large")?;
    let p = k.call_rate;
    let cost = |(g, times): (Gemm, u64)| (gemm_cost(&g, &k.cfg, k.fake_rows_ppm), times);
    let attention = |t, context| {
        if a.fused_attention {
            Vec::new()
        } else {
            attention_gemms(&shape, a.dtype, t, batch, context)
        }
    };

    let mut prefill_gemms: Vec<(GemmCost, u64)> = linear_gemms(&shape, a.dtype, prefill_n)
        .into_iter()
        .map(cost)
        .collect();
    prefill_gemms.extend(attention(prompt, prompt).into_iter().map(cost));
    let mut prefill = Totals::default();
    let mut commit_prefill = commit::CommitTotals::default();
    for (c, times) in &prefill_gemms {
        prefill.add(c, *times, p);
        commit_prefill.add(&commit::commit_cost(c, k.held), *times, p);
    }

    // Decode: the linear layers do not depend on the context, attention does; sum the
    // attention exactly over every step.
    let decode_linear: Vec<(GemmCost, u64)> = linear_gemms(&shape, a.dtype, batch)
        .into_iter()
        .map(cost)
        .collect();
    let mut decode = Totals::default();
    let mut commit_decode = commit::CommitTotals::default();
    for (c, times) in &decode_linear {
        decode.add(c, times * generated, p);
        commit_decode.add(&commit::commit_cost(c, k.held), times * generated, p);
    }
    for j in 1..=generated {
        for (c, times) in attention(1, prompt + j).into_iter().map(cost) {
            decode.add(&c, times, p);
            commit_decode.add(&commit::commit_cost(&c, k.held), times, p);
        }
    }
    let mid = prompt + generated.div_ceil(2);
    let mut decode_gemms = decode_linear.clone();
    decode_gemms.extend(attention(1, mid).into_iter().map(cost));
    // Show the GEMMs in their order in a layer: attention between v_proj and o_proj.
    let order = |gs: &mut Vec<(GemmCost, u64)>| {
        if gs.len() > 8 {
            let att: Vec<_> = gs.drain(8..).collect();
            gs.splice(3..3, att);
        }
    };
    order(&mut prefill_gemms);
    order(&mut decode_gemms);

    let mut whole = prefill.clone();
    whole.merge(&decode);
    let ledger = whole.calls * LEDGER_RECORD_BYTES as f64;
    let calls = if a.calls.is_empty() {
        vec![whole.calls as u64]
    } else {
        a.calls.clone()
    };
    let detection = Detection::new(
        k,
        whole.ln_rows_exact / whole.calls,
        whole.ln_rows_approx / whole.calls,
        &calls,
    );
    let mut report = base_report(a, k, "model", detection);
    report.arithmetic = arithmetic_detection(
        a.dtype,
        p,
        &decode_linear.iter().map(|(c, _)| c).collect::<Vec<_>>(),
    );
    if report.arithmetic.is_empty() {
        report.notes.push(arithmetic_gap_note(a.dtype));
    }
    report.notes.push(if a.fused_attention {
        "--fused-attention: the two attention GEMMs of each layer run in fused kernels that bypass \
         cuBLAS; they are neither made nor audited and are left out of every figure."
            .to_string()
    } else {
        "Fused attention kernels (FlashAttention, SDPA) do not go through cuBLAS: with them the two \
         attention GEMMs are neither made nor audited, and the figures for attn_scores and attn_out \
         drop out (--fused-attention)."
            .to_string()
    });
    report.notes.extend([
        "The run is one prefill pass plus one decode pass per generated token; lm_head is counted \
         over all prompt positions in prefill (generate() may compute it for the last one only)."
            .to_string(),
    ]);
    if shape.kv_heads_defaulted {
        report.notes.push(
            "The config has no num_key_value_heads; it is taken equal to num_attention_heads."
                .into(),
        );
    }
    if a.dtype.attention() != a.dtype {
        report.notes.push(format!(
            "The linear layers are {}; attention GEMMs are modelled in bf16.",
            a.dtype.name()
        ));
    }
    if let Some((latency, assumed)) = k.commit {
        let phase = |t: &commit::CommitTotals, tokens: u64| {
            commit::CommitPhase::new(t, tokens as f64, k.tokens_per_second, latency)
        };
        report.commit = Some(commit::CommitPlan {
            challenge_latency_s: latency,
            challenge_latency_assumed: assumed,
            commitment_record_bytes: commit::COMMITMENT_RECORD_BYTES,
            gemm: None,
            per_call: None,
            prefill: Some(phase(&commit_prefill, prompt * batch)),
            decode: Some(phase(&commit_decode, generated * batch)),
        });
    }
    report.model = Some(ModelPlan {
        config_path: path.display().to_string(),
        prompt_tokens: prompt,
        generated_tokens: generated,
        batch,
        prefill: Phase::new(&prefill, prompt * batch, 1, k.tokens_per_second, k.held),
        decode: Phase::new(
            &decode,
            generated * batch,
            generated,
            k.tokens_per_second,
            k.held,
        ),
        run_calls: whole.calls,
        run_bytes: ledger + whole.sample_bytes,
        run_bytes_weights_held: ledger + whole.sample_bytes_weights_held,
        run_verifier_macs: whole.verifier_macs,
        prefill_gemms: pass_gemms(prefill_gemms),
        decode_shown_at_context: mid,
        decode_gemms: pass_gemms(decode_gemms),
        shape,
    });
    Ok(report)
}

// ---------------------------------------------------------------------------------------
// Cheaper arithmetic: detection with the tolerance folded in.
// ---------------------------------------------------------------------------------------

/// Simulated entries judged per cheat and inner dimension.
pub const ARITHMETIC_ENTRIES: u64 = 200;
/// Largest k simulated (the work is entries x k per cheat); larger k get no rows.
pub const ARITHMETIC_MAX_K: u64 = 1 << 17;

/// How fast one cheaper arithmetic is caught in GEMMs with one inner dimension.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArithmeticRow {
    /// what the GPU computes instead
    pub cheat: String,
    /// inner dimension
    pub k: u64,
    /// entries checked per sampled call (the fewest among the GEMMs of this k)
    pub entries_per_call: u128,
    /// chance that one checked entry is caught, estimated from simulated entries
    pub per_entry: f64,
    /// simulated entries behind `per_entry`
    pub simulated_entries: u64,
    /// chance that one sampled call is caught: 1 - (1 - per_entry)^entries
    pub per_sampled_call: f64,
    /// chance per call: call rate x `per_sampled_call`
    pub per_call: f64,
    /// calls until caught with probability 99% (None: never)
    pub calls_for_99: Option<f64>,
}

/// Detection of [`Arithmetic::PLANNED`] cheats for GEMMs of the given costs, one row per
/// cheat and distinct k up to [`ARITHMETIC_MAX_K`], each with the fewest entries per
/// call of that k. Only for 16-bit inputs declared with f32 accumulation (the linear
/// layers of bf16/f16 inference); other types get no rows (fp8 inputs are unverifiable
/// from k = 3277 and their bound is wide below; f32/tf32 are not modelled).
///
/// The per-entry chance is measured by judging [`ARITHMETIC_ENTRIES`] simulated entries
/// ([`crate::cheat::caught`]: activations N(0, 1), weights N(0, 0.02)) with the
/// verifier's own check; entries of one call are taken as independent.
pub fn arithmetic_detection(dtype: PlanDType, p: f64, costs: &[&GemmCost]) -> Vec<ArithmeticRow> {
    use crate::cheat::{caught, Arithmetic};
    use mmaudit_protocol::call::ComputeType;
    if !matches!(dtype, PlanDType::Bf16 | PlanDType::F16) {
        return Vec::new();
    }
    let mut fewest: std::collections::BTreeMap<u64, u128> = std::collections::BTreeMap::new();
    for c in costs {
        let e = fewest.entry(c.k).or_insert(c.entries);
        *e = (*e).min(c.entries);
    }
    let mut rows = Vec::new();
    for (&k, &entries) in fewest.range(..=ARITHMETIC_MAX_K) {
        for cheat in Arithmetic::PLANNED {
            let c = caught(
                cheat,
                dtype.input(),
                ComputeType::F32,
                0,
                k as usize,
                ARITHMETIC_ENTRIES,
                k,
            );
            let q = c.rate();
            let per_sampled_call = 1.0 - (1.0 - q).powf(entries as f64);
            let per_call = p * per_sampled_call;
            rows.push(ArithmeticRow {
                cheat: cheat.describe(),
                k,
                entries_per_call: entries,
                per_entry: q,
                simulated_entries: c.entries,
                per_sampled_call,
                per_call,
                calls_for_99: calls_for(0.99, (-per_call).ln_1p()),
            });
        }
    }
    rows
}

/// Why a report has no cheaper-arithmetic figures.
fn arithmetic_gap_note(dtype: PlanDType) -> String {
    match dtype {
        PlanDType::Bf16 | PlanDType::F16 => format!(
            "No cheaper-arithmetic figures: k is above the {ARITHMETIC_MAX_K} this report simulates."
        ),
        PlanDType::E4m3 | PlanDType::E5m2 => "No cheaper-arithmetic figures for fp8 inputs: \
             their accumulation unit (2^-13) makes entries unverifiable from k = 3277 and the \
             bound wide below (docs/THREAT-MODEL.md)."
            .into(),
        other => format!(
            "No cheaper-arithmetic figures for {} inputs: not modelled (with tf32 compute the \
             input rounding is bounded worst-case, so cheaper inputs are not caught; \
             docs/THREAT-MODEL.md).",
            other.name()
        ),
    }
}

fn arithmetic_lines(d: &mut Doc, rows: &[ArithmeticRow]) {
    if rows.is_empty() {
        return;
    }
    d.heading(format!(
        "Cheaper arithmetic in place of the declared type: caught by the tolerance or the declared-precision bound (per entry: {ARITHMETIC_ENTRIES} simulated entries, activations N(0,1), weights N(0,0.02))"
    ));
    let table = rows
        .iter()
        .map(|r| {
            vec![
                r.cheat.clone(),
                r.k.to_string(),
                fmt_prob(r.per_entry),
                r.entries_per_call.to_string(),
                fmt_prob(r.per_sampled_call),
                fmt_calls(r.calls_for_99),
            ]
        })
        .collect();
    d.blocks.push(Block::Blank);
    d.table(
        vec![
            "arithmetic used",
            "k",
            "per entry",
            "entries/call",
            "per sampled call",
            "calls for 99%",
        ],
        table,
    );
    d.blocks.push(Block::Blank);
    d.blocks.push(Block::Heading(
        "A per-entry chance of 0: no simulated entry was caught; at this k the cheat stays within what an honest GPU may produce, and more calls do not help. Entries of one call are taken as independent."
            .into(),
    ));
}

// ---------------------------------------------------------------------------------------
// The human report.
// ---------------------------------------------------------------------------------------

/// Bytes with a binary unit: `157 B`, `352.4 KiB`, `1.2 MiB`.
pub fn fmt_bytes(x: f64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if x < 1024.0 {
        return if x == x.round() {
            format!("{x:.0} B")
        } else {
            format!("{x:.1} B")
        };
    }
    let mut v = x / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Multiply-adds with a decimal unit: `655.4 kops`, `12.3 Mops`, `4.1 Gops`.
pub fn fmt_ops(x: f64) -> String {
    const UNITS: [(f64, &str); 5] = [
        (1e15, "Pops"),
        (1e12, "Tops"),
        (1e9, "Gops"),
        (1e6, "Mops"),
        (1e3, "kops"),
    ];
    for (scale, unit) in UNITS {
        if x >= scale {
            return format!("{:.1} {unit}", x / scale);
        }
    }
    if x == x.round() {
        format!("{x:.0} ops")
    } else {
        format!("{x:.1} ops")
    }
}

/// A rate in ppm as a percentage: `10%`, `0.1%`, `0.0001%`.
pub fn fmt_rate(ppm: u32) -> String {
    let s = format!("{:.4}", ppm as f64 / 1e4);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}%")
}

/// A probability kept readable at both ends: `3.1e-6`, `65.13%`, `1 - 2.7e-5`,
/// `1 - 5.0e-539` (below f64's range, from the logarithm), `1`.
pub fn fmt_chance(c: Chance) -> String {
    if c.detect == 0.0 {
        "0".into()
    } else if c.miss == 0.0 && c.log10_miss.is_finite() {
        let mut exponent = c.log10_miss.floor();
        let mut mantissa = 10f64.powf(c.log10_miss - exponent);
        if mantissa >= 9.95 {
            mantissa = 1.0;
            exponent += 1.0;
        }
        format!("1 - {mantissa:.1}e{exponent:.0}")
    } else if c.miss == 0.0 {
        "1".into()
    } else if c.detect < 1e-3 {
        format!("{:.2e}", c.detect)
    } else if c.miss < 1e-4 {
        format!("1 - {:.1e}", c.miss)
    } else {
        format!("{:.2}%", c.detect * 100.0)
    }
}

/// A small or large number compactly: `0.141`, `9.54e-7`, `37281`.
fn fmt_num(x: f64) -> String {
    if x == 0.0 {
        "0".into()
    } else if x == x.round() && x.abs() < 1e15 {
        format!("{x:.0}")
    } else if x.abs() >= 1e-3 {
        format!("{x:.3}")
    } else {
        format!("{x:.2e}")
    }
}

/// A probability below 1 with four decimals, or in scientific notation when small.
fn fmt_prob(x: f64) -> String {
    if x == 0.0 || x >= 1e-3 {
        format!("{x:.4}")
    } else {
        format!("{x:.2e}")
    }
}

fn fmt_calls(x: Option<f64>) -> String {
    x.map_or_else(|| "never".into(), |n| format!("{n:.0} calls"))
}

/// A report being assembled: headings, label/value/meaning lines and tables.
enum Block {
    Heading(String),
    Line {
        label: String,
        value: String,
        meaning: String,
    },
    Table {
        header: Vec<&'static str>,
        rows: Vec<Vec<String>>,
    },
    Blank,
}

#[derive(Default)]
struct Doc {
    blocks: Vec<Block>,
}

impl Doc {
    fn heading(&mut self, h: impl Into<String>) {
        if !self.blocks.is_empty() {
            self.blocks.push(Block::Blank);
        }
        self.blocks.push(Block::Heading(h.into()));
    }

    fn line(&mut self, label: &str, value: String, meaning: impl Into<String>) {
        self.blocks.push(Block::Line {
            label: label.into(),
            value,
            meaning: meaning.into(),
        });
    }

    fn table(&mut self, header: Vec<&'static str>, rows: Vec<Vec<String>>) {
        self.blocks.push(Block::Table { header, rows });
    }

    fn render(&self) -> String {
        let (mut lw, mut vw) = (0, 0);
        for b in &self.blocks {
            if let Block::Line { label, value, .. } = b {
                lw = lw.max(label.chars().count());
                vw = vw.max(value.chars().count());
            }
        }
        let mut out = String::new();
        for b in &self.blocks {
            match b {
                Block::Heading(h) => out.push_str(&format!("{h}\n")),
                Block::Blank => out.push('\n'),
                Block::Line {
                    label,
                    value,
                    meaning,
                } => {
                    out.push_str(format!("  {label:<lw$}  {value:>vw$}  {meaning}").trim_end());
                    out.push('\n');
                }
                Block::Table { header, rows } => {
                    let widths: Vec<usize> = (0..header.len())
                        .map(|i| {
                            rows.iter()
                                .map(|r| r[i].chars().count())
                                .chain([header[i].len()])
                                .max()
                                .unwrap_or(0)
                        })
                        .collect();
                    let mut emit = |cells: Vec<&str>| {
                        let mut line = String::from(" ");
                        for (i, c) in cells.iter().enumerate() {
                            let w = widths[i];
                            if i == 0 {
                                line.push_str(&format!(" {c:<w$}"));
                            } else {
                                line.push_str(&format!("  {c:>w$}"));
                            }
                        }
                        out.push_str(line.trim_end());
                        out.push('\n');
                    };
                    emit(header.clone());
                    for r in rows {
                        emit(r.iter().map(String::as_str).collect());
                    }
                }
            }
        }
        out
    }
}

fn sampling_lines(d: &mut Doc, cfg: &SamplingConfig) {
    d.line(
        "calls sampled",
        fmt_rate(cfg.call_ppm),
        "Each GEMM call is sampled with this probability, by a keyed hash the prover cannot steer.",
    );
    d.line(
        "rows of C per sampled call",
        fmt_rate(cfg.row_ppm),
        "Share of the m rows checked: floor(m x rate), at least 1.",
    );
    d.line(
        "columns of C per sampled call",
        fmt_rate(cfg.col_ppm),
        "Share of the n columns checked: floor(n x rate), at least 1.",
    );
    d.line(
        "batch entries per sampled call",
        fmt_rate(cfg.batch_ppm),
        "Share of the batch entries checked: floor(batch x rate), at least 1.",
    );
}

fn gemm_table(gs: &[PassGemm]) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let header = vec![
        "gemm",
        "calls",
        "m",
        "n",
        "k",
        "batch",
        "rows",
        "cols",
        "bat",
        "entries",
        "sample (A sent)",
        "sample (W held)",
        "verifier/sample",
        "q exact",
        "q approx",
    ];
    let rows = gs
        .iter()
        .map(|g| {
            let c = &g.cost;
            vec![
                c.name.to_string(),
                g.calls_per_pass.to_string(),
                c.m.to_string(),
                c.n.to_string(),
                c.k.to_string(),
                c.batch.to_string(),
                c.rows.to_string(),
                c.cols.to_string(),
                c.batches.to_string(),
                c.entries.to_string(),
                fmt_bytes(c.sample_bytes),
                fmt_bytes(c.sample_bytes_weights_held),
                fmt_ops(c.verifier_macs),
                format!("{:.4}", c.q_exact),
                format!("{:.4}", c.q_approx),
            ]
        })
        .collect();
    (header, rows)
}

fn phase_lines(d: &mut Doc, ph: &Phase, unit: &str, r: &PlanReport) {
    let tps = if r.tokens_per_second_assumed {
        format!(
            "{} {unit}s/s (assumed; set --tokens-per-second)",
            fmt_num(r.tokens_per_second)
        )
    } else {
        format!("{} {unit}s/s", fmt_num(r.tokens_per_second))
    };
    let p = fmt_rate((r.call_rate * PPM as f64).round() as u32);
    d.line(
        "GEMM calls",
        fmt_num(ph.calls_per_token),
        format!("GEMM calls the prover makes per {unit}."),
    );
    d.line(
        "ledger",
        fmt_bytes(ph.ledger_bytes_per_token),
        format!("Ledger bytes per {unit}: {LEDGER_RECORD_BYTES} B for every call, sampled or not."),
    );
    d.line(
        "expected bytes (A sent)",
        fmt_bytes(ph.bytes_per_token),
        format!("Ledger plus {p} of the sample records per {unit}, op(A) rows of the weights travelling."),
    );
    d.line(
        "expected bytes (W held)",
        fmt_bytes(ph.bytes_per_token_weights_held),
        "The same when the verifier holds the weights and their rows stay home.",
    );
    d.line(
        "stream rate",
        format!("{}/s", fmt_bytes(ph.bytes_per_second)),
        format!(
            "Expected bytes per second at {tps}, {}.",
            if r.verifier_holds_weights {
                "weights held"
            } else {
                "op(A) rows sent"
            }
        ),
    );
    d.line(
        "verifier work",
        fmt_ops(ph.verifier_macs_per_token),
        format!("Multiply-adds the verifier expects to spend per {unit}."),
    );
    d.line(
        "verifier work per second",
        format!("{}/s", fmt_ops(ph.verifier_macs_per_second)),
        format!("The same per second at {tps}."),
    );
    d.line(
        "prover GEMM work",
        fmt_ops(ph.gemm_macs_per_token),
        format!("Multiply-adds of the prover's audited GEMMs per {unit}."),
    );
    d.line(
        "fraction checked",
        fmt_num(ph.fraction_checked),
        "Share of the prover's GEMM multiply-adds the verifier recomputes.",
    );
    if let (Some(cores), Some(t)) = (ph.verifier_cores, &r.verifier_bench) {
        d.line(
            "verifier cores",
            format!("{cores:.3}"),
            format!(
                "Cores of the bench's machine ({}) to keep up at {tps}: {:.2} ns per multiply-add plus {:.2} ns per stream byte, {}.",
                t.cpu,
                t.seconds_per_mac * 1e9,
                t.seconds_per_byte * 1e9,
                match (r.verifier_holds_weights, t.seconds_per_held_byte) {
                    (true, Some(h)) => format!("plus {:.2} ns per byte of held rows read from its copy", h * 1e9),
                    (true, None) => "held weights' rows charged as stream bytes (an upper bound: the bench file predates held-weight timing)".into(),
                    (false, _) => "every sampled row sent".into(),
                }
            ),
        );
        d.line(
            "GPUs per verifier core",
            format!("{:.2}", 1.0 / cores),
            format!("Provers at {tps} that one such core keeps up with."),
        );
    }
}

fn detection_lines(d: &mut Doc, det: &Detection, r: &PlanReport, args: &PlanArgs) {
    let f = fmt_rate(args.fake_fraction);
    let g = fmt_rate(args.fake_rows);
    d.heading(format!(
        "Detection: cheat 1 fakes {f} of the calls; cheat 2 fakes {g} of the output rows of every call"
    ));
    d.line(
        "cheat 1 per call",
        fmt_prob(det.call_rate * det.fake_fraction),
        "Chance that a given call is both faked and sampled: P(N) = 1 - (1 - p)^(f N).",
    );
    d.line(
        "cheat 2 per call (exact)",
        fmt_prob(det.per_call_fake_rows_exact),
        if r.mode == "gemm" {
            "Chance one call catches it: p x (1 - C(m - b, r) / C(m, r)), b = floor(g m) faked rows."
        } else {
            "Chance one call catches it, averaged over the run's mix: 1 - exp(mean ln(1 - p q_i))."
        },
    );
    d.line(
        "cheat 2 per call (approx)",
        fmt_prob(det.per_call_fake_rows_approx),
        "The same with q ~ 1 - (1 - g)^r (rows drawn with replacement, b = g m unrounded).",
    );
    d.line(
        "calls for 99% (cheat 1)",
        fmt_calls(det.calls_for_99_fake_calls),
        "Calls until cheat 1 is caught with probability 99%.",
    );
    d.line(
        "calls for 99% (cheat 2)",
        fmt_calls(det.calls_for_99_fake_rows),
        "Calls until cheat 2 is caught with probability 99% (exact q).",
    );
    let rows = det
        .rows
        .iter()
        .map(|row| {
            vec![
                row.calls.to_string(),
                format!("{:.1}", row.faked_calls),
                fmt_chance(row.fake_calls),
                fmt_chance(row.fake_rows_exact),
                fmt_chance(row.fake_rows_approx),
            ]
        })
        .collect();
    d.blocks.push(Block::Blank);
    d.table(
        vec![
            "calls N",
            "faked calls f N",
            "P(cheat 1)",
            "P(cheat 2) exact",
            "P(cheat 2) approx",
        ],
        rows,
    );
    d.blocks.push(Block::Blank);
    d.blocks.push(Block::Heading(
        "P = probability of detection within N calls; near 1 it is written 1 - (chance of missing).".into(),
    ));
}

/// The human-readable report.
pub fn render(r: &PlanReport, args: &PlanArgs) -> String {
    let cfg = SamplingConfig {
        call_ppm: args.call_rate,
        row_ppm: args.row_rate,
        col_ppm: args.col_rate,
        batch_ppm: args.batch_rate,
        ..SamplingConfig::default()
    };
    let mut d = Doc::default();
    if let Some(g) = &r.gemm {
        let c = &g.cost;
        d.heading(format!(
            "mmaudit plan: one GEMM, C ({} x {}) = op(A) ({} x {}) op(B) ({} x {}), batch {}, {} in, {} out",
            c.m,
            c.n,
            c.m,
            c.k,
            c.k,
            c.n,
            c.batch,
            c.dtype.name(),
            c.output_dtype
        ));
        sampling_lines(&mut d, &cfg);
        d.heading("Checked per sampled call");
        d.line(
            "rows",
            c.rows.to_string(),
            format!("Rows of C checked, of m = {}.", c.m),
        );
        d.line(
            "columns",
            c.cols.to_string(),
            format!("Columns of C checked, of n = {}.", c.n),
        );
        d.line(
            "batch entries",
            c.batches.to_string(),
            format!("Batch entries checked, of {}.", c.batch),
        );
        d.line(
            "entries",
            c.entries.to_string(),
            "Entries of C recomputed: rows x columns x batch entries.",
        );
        d.heading("Sample record, before compression");
        d.line(
            "op(A) rows",
            fmt_bytes(c.bytes_a),
            "Batch entries x rows x k x input size; left out when the verifier holds A.",
        );
        d.line(
            "op(B) columns",
            fmt_bytes(c.bytes_b),
            "Batch entries x columns x k x input size.",
        );
        if c.bytes_c > 0.0 {
            d.line(
                "C_in entries",
                fmt_bytes(c.bytes_c),
                "Entries x output size, because beta != 0.",
            );
        }
        d.line(
            "D entries",
            fmt_bytes(c.bytes_d),
            "Entries x output size: the results being checked.",
        );
        if c.bytes_bias > 0.0 {
            d.line(
                "bias rows",
                fmt_bytes(c.bytes_bias),
                "Rows x output size, for the bias epilogue.",
            );
        }
        d.line(
            "overhead",
            fmt_bytes(SAMPLE_OVERHEAD_BYTES as f64),
            "Fixed record overhead (approximate).",
        );
        d.line(
            "sample record (A sent)",
            format!("{} ({:.0} B)", fmt_bytes(c.sample_bytes), c.sample_bytes),
            "Bytes of one sampled call when op(A) rows travel.",
        );
        d.line(
            "sample record (A held)",
            format!(
                "{} ({:.0} B)",
                fmt_bytes(c.sample_bytes_weights_held),
                c.sample_bytes_weights_held
            ),
            "Bytes of one sampled call when the verifier holds op(A).",
        );
        d.heading(format!(
            "Per call (sampled or not), {}",
            if r.verifier_holds_weights {
                "verifier holds op(A)"
            } else {
                "op(A) rows sent"
            }
        ));
        d.line(
            "expected bytes",
            fmt_bytes(g.expected_bytes_per_call),
            format!(
                "{LEDGER_RECORD_BYTES} B ledger record plus {} of a sample record.",
                fmt_rate(args.call_rate)
            ),
        );
        d.line(
            "expected bytes per column",
            fmt_bytes(g.expected_bytes_per_column),
            "The same divided by n: per token when the n columns are tokens (nn.Linear).",
        );
        d.line(
            "verifier work per sampled call",
            fmt_ops(c.verifier_macs),
            "Multiply-adds to recompute the checked entries: entries x k.",
        );
        d.line(
            "expected verifier work",
            fmt_ops(g.expected_verifier_macs_per_call),
            "Multiply-adds per call on average.",
        );
        let tps = if r.tokens_per_second_assumed {
            " (assumed; set --tokens-per-second)"
        } else {
            ""
        };
        d.line(
            "verifier work per second",
            format!("{}/s", fmt_ops(g.verifier_macs_per_second)),
            format!(
                "At {} tokens/s{tps}, the n columns being tokens (tokens/s / n calls per second).",
                fmt_num(r.tokens_per_second)
            ),
        );
        d.line(
            "prover GEMM work",
            fmt_ops(c.gemm_macs),
            "Multiply-adds of the GEMM itself: m x n x k x batch.",
        );
        d.line(
            "fraction checked",
            fmt_num(g.fraction_checked),
            "Share of the prover's multiply-adds the verifier recomputes.",
        );
        d.line(
            "rows faked by cheat 2",
            c.faked_rows.to_string(),
            format!("floor(g x m) with g = {}.", fmt_rate(args.fake_rows)),
        );
        d.line(
            "q exact",
            format!("{:.6}", c.q_exact),
            "Chance a sampled call's checked rows include a faked one: 1 - C(m - b, r) / C(m, r).",
        );
        d.line(
            "q approx",
            format!("{:.6}", c.q_approx),
            "The (1 - g)^r approximation of the same: 1 - (1 - g)^r.",
        );
    }
    if let Some(m) = &r.model {
        let s = &m.shape;
        d.heading(format!("mmaudit plan: model from {}", m.config_path));
        d.line(
            "shape",
            format!("{} layers", s.layers),
            format!(
                "hidden {}, intermediate {}, {} heads x head_dim {}, {} KV heads, vocab {}.",
                s.hidden, s.intermediate, s.heads, s.head_dim, s.kv_heads, s.vocab
            ),
        );
        d.line(
            "run",
            format!("batch {}", m.batch),
            format!(
                "{} prompt tokens and {} generated tokens per sequence; linear layers {} in, {} out.",
                m.prompt_tokens,
                m.generated_tokens,
                r.dtype.name(),
                r.output_dtype
            ),
        );
        sampling_lines(&mut d, &cfg);
        d.heading(format!(
            "GEMMs of the prefill pass (T = {} tokens per sequence, context {}); calls per pass",
            m.prompt_tokens, m.prompt_tokens
        ));
        let (h, rows) = gemm_table(&m.prefill_gemms);
        d.table(h, rows);
        d.heading(format!(
            "GEMMs of one decode pass (T = 1), shown at context {}; totals below sum every step exactly",
            m.decode_shown_at_context
        ));
        let (h, rows) = gemm_table(&m.decode_gemms);
        d.table(h, rows);
        d.blocks.push(Block::Blank);
        d.blocks.push(Block::Heading(
            "  rows/cols/bat: checked per sampled call; sample: bytes of one sample record; \
             q: chance a sampled call catches cheat 2."
                .into(),
        ));
        d.heading(format!(
            "Prefill, per prompt token ({} prompt tokens in 1 pass)",
            m.prefill.tokens
        ));
        phase_lines(&mut d, &m.prefill, "prompt token", r);
        d.heading(format!(
            "Decode, per generated token ({} generated tokens in {} passes)",
            m.decode.tokens, m.decode.passes
        ));
        phase_lines(&mut d, &m.decode, "generated token", r);
        d.heading("Whole run");
        d.line(
            "GEMM calls",
            fmt_num(m.run_calls),
            "Every cuBLAS GEMM call of the run; each costs a ledger record.",
        );
        d.line(
            "expected bytes (A sent)",
            fmt_bytes(m.run_bytes),
            "Ledger plus expected samples, op(A) rows of the weights travelling.",
        );
        d.line(
            "expected bytes (W held)",
            fmt_bytes(m.run_bytes_weights_held),
            "The same when the verifier holds the weights.",
        );
        d.line(
            "verifier work",
            fmt_ops(m.run_verifier_macs),
            "Expected multiply-adds the verifier spends on the run.",
        );
    }
    if let Some(c) = &r.commit {
        let rate = format!(
            "{} tokens/s{}",
            fmt_num(r.tokens_per_second),
            if r.tokens_per_second_assumed {
                " (assumed)"
            } else {
                ""
            }
        );
        commit::render(&mut d, c, &rate);
    }
    detection_lines(&mut d, &r.detection, r, args);
    arithmetic_lines(&mut d, &r.arithmetic);
    d.heading("Assumptions");
    for n in &r.notes {
        d.blocks.push(Block::Heading(format!("  - {n}")));
    }
    d.render()
}

/// Runs `mmaudit-verify plan`: prints the report, and writes it as JSON with `--json`.
pub fn run_plan(args: &PlanArgs) -> Result<()> {
    let report = plan(args)?;
    let to_stdout = args.json.as_deref().is_some_and(|p| p.as_os_str() == "-");
    let text = if to_stdout {
        crate::out::To::Stderr
    } else {
        crate::out::To::Stdout
    };
    crate::out::write(text, &render(&report, args));
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report)
            .context("cannot encode the report as JSON")?
            + "\n";
        if to_stdout {
            crate::out::stdout(&json);
        } else {
            std::fs::write(path, json)
                .with_context(|| format!("cannot write --json {}", path.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cheat::Arithmetic;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        plan: PlanArgs,
    }

    fn args(line: &[&str]) -> PlanArgs {
        let mut v = vec!["plan"];
        v.extend_from_slice(line);
        Cli::try_parse_from(v).expect("arguments parse").plan
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs().max(1e-300)
    }

    const LLAMA: &str = include_str!("../../docs/examples/llama3-8b-config.json");

    #[test]
    fn commit_costs_appear_only_when_asked_and_the_latency_is_checked() {
        let plain = plan(&args(&["--m", "4096", "--n", "16", "--k", "4096"])).unwrap();
        assert!(plain.commit.is_none());
        let r = plan(&args(&[
            "--m", "4096", "--n", "16", "--k", "4096", "--commit",
        ]))
        .unwrap();
        let c = r.commit.as_ref().unwrap();
        assert!(c.challenge_latency_assumed && c.per_call.is_some() && c.prefill.is_none());
        assert_eq!(
            c.challenge_latency_s,
            commit::DEFAULT_CHALLENGE_LATENCY_MS / 1e3
        );
        assert!(render(
            &r,
            &args(&["--m", "4096", "--n", "16", "--k", "4096", "--commit"])
        )
        .contains("retention ring"));
        let set = args(&[
            "--m",
            "4096",
            "--n",
            "16",
            "--k",
            "4096",
            "--commit",
            "--challenge-latency-ms",
            "20",
        ]);
        let c = plan(&set).unwrap().commit.unwrap();
        assert!(!c.challenge_latency_assumed && (c.challenge_latency_s - 0.02).abs() < 1e-12);
        let bad = args(&[
            "--m",
            "1",
            "--n",
            "1",
            "--k",
            "1",
            "--commit",
            "--challenge-latency-ms=-1",
        ]);
        let err = plan(&bad).unwrap_err().to_string();
        assert!(err.contains("--challenge-latency-ms"), "{err}");
        assert!(Cli::try_parse_from(["plan", "--challenge-latency-ms", "5"]).is_err());
    }

    #[test]
    fn fused_attention_leaves_the_attention_gemms_out() {
        let eager = llama_report(&["--batch", "2"]);
        let fused = llama_report(&["--batch", "2", "--fused-attention"]);
        let (e, f) = (eager.model.unwrap(), fused.model.unwrap());
        assert_eq!(e.prefill_gemms.len(), 10);
        assert_eq!(f.prefill_gemms.len(), 8);
        assert!(f
            .prefill_gemms
            .iter()
            .all(|g| !g.cost.name.starts_with("attn_")));
        assert_eq!(f.decode_gemms.len(), 8);
        // 32 layers x 2 attention GEMMs fewer per pass.
        assert_eq!(e.prefill.calls - f.prefill.calls, 64.0);
        assert_eq!(e.decode.calls - f.decode.calls, 64.0 * 128.0);
        assert!(fused
            .notes
            .iter()
            .any(|n| n.starts_with("--fused-attention")));
        let one = plan(&args(&[
            "--m",
            "1",
            "--n",
            "1",
            "--k",
            "1",
            "--fused-attention",
        ]));
        assert!(one.unwrap_err().to_string().contains("--fused-attention"));
    }

    #[test]
    fn a_model_in_commit_mode_counts_the_kv_cache_in_attention() {
        let r = llama_report(&["--batch", "16", "--verifier-holds-weights", "--commit"]);
        let c = r.commit.unwrap();
        let (pre, dec) = (c.prefill.unwrap(), c.decode.unwrap());
        // Linear layers alone, per token, weights held: op(B) (k) and D (m) of each of
        // the 7 projections, 32 layers, plus lm_head, in bf16.
        let per_layer =
            (4 * 4096 + 4096 + 4096 + 14336 + (4096 + 1024 + 1024 + 4096 + 14336 * 2 + 4096))
                as f64;
        let linear = 2.0 * (32.0 * per_layer + 4096.0 + 128_256.0);
        assert!((dec.retained_bytes - dec.attention_retained_bytes - linear).abs() < 1.0);
        assert!((pre.retained_bytes - pre.attention_retained_bytes - linear).abs() < 1.0);
        // Eager attention re-reads the KV cache at every step: it dominates decode.
        assert!(dec.attention_retained_bytes > 100.0 * linear);
    }

    #[test]
    fn ledger_record_is_157_bytes() {
        assert_eq!(LEDGER_RECORD_BYTES, 157);
    }

    #[test]
    fn cheaper_arithmetic_detection_folds_in_the_tolerance() {
        let r = plan(&args(&["--m", "4096", "--n", "64", "--k", "4096"])).unwrap();
        assert_eq!(r.arithmetic.len(), Arithmetic::PLANNED.len());
        let row = |name: &str| {
            r.arithmetic
                .iter()
                .find(|a| a.cheat.starts_with(name))
                .unwrap_or_else(|| panic!("{name}: {:?}", r.arithmetic))
        };
        let fp8 = row("e4m3");
        assert_eq!((fp8.k, fp8.entries_per_call), (4096, 40));
        assert!(fp8.per_entry > 0.7, "{fp8:?}");
        let want = 1.0 - (1.0 - fp8.per_entry).powi(40);
        assert!(close(fp8.per_sampled_call, want, 1e-12));
        assert!(close(fp8.per_call, 0.1 * want, 1e-12));
        // 1 - (1 - 0.1)^44 > 0.99 > 1 - 0.9^43
        assert_eq!(fp8.calls_for_99.map(f64::ceil), Some(44.0));
        assert!(row("weights 0.1%").per_entry < 0.1);
        // Only 16-bit inputs are modelled; the JSON carries the rows.
        let f32 = plan(&args(&[
            "--m", "64", "--n", "64", "--k", "64", "--dtype", "f32",
        ]))
        .unwrap();
        assert!(f32.arithmetic.is_empty());
        assert!(
            f32.notes.iter().any(|n| n.contains("not modelled")),
            "{:?}",
            f32.notes
        );
        let fp8 = plan(&args(&[
            "--m", "64", "--n", "64", "--k", "64", "--dtype", "e4m3",
        ]))
        .unwrap();
        assert!(
            fp8.notes.iter().any(|n| n.contains("fp8")),
            "{:?}",
            fp8.notes
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["arithmetic"][0]["entries_per_call"], 40);
    }

    #[test]
    fn seed_worked_case_counts_and_bytes() {
        let a = args(&[
            "--m", "4096", "--n", "4096", "--k", "4096", "--dtype", "f16",
        ]);
        let r = plan(&a).unwrap();
        let g = r.gemm.as_ref().unwrap();
        let c = &g.cost;
        assert_eq!((c.rows, c.cols, c.batches, c.entries), (40, 4, 1, 160));
        assert_eq!(c.bytes_a, 40.0 * 4096.0 * 2.0);
        assert_eq!(c.bytes_b, 4.0 * 4096.0 * 2.0);
        assert_eq!(c.bytes_d, 160.0 * 2.0);
        assert_eq!(c.bytes_c, 0.0);
        assert_eq!(c.sample_bytes, 360_832.0);
        assert_eq!(c.sample_bytes_weights_held, 33_152.0);
        assert!(close(g.expected_bytes_per_call, 36_240.2, 1e-12));
        assert!(close(
            g.expected_bytes_per_call_a_held,
            157.0 + 3_315.2,
            1e-12
        ));
        assert_eq!(c.verifier_macs, 655_360.0);
        assert!(close(
            g.fraction_checked,
            0.1 * 160.0 / (4096.0 * 4096.0),
            1e-12
        ));
        let text = render(&r, &a);
        assert!(text.contains("360832 B"), "{text}");
    }

    #[test]
    fn output_dtype_follows_input() {
        let a = args(&[
            "--m",
            "64",
            "--n",
            "1000",
            "--k",
            "128",
            "--dtype",
            "i8",
            "--beta-nonzero",
            "--bias",
        ]);
        let c = plan(&a).unwrap().gemm.unwrap().cost;
        assert_eq!((c.rows, c.cols), (1, 1));
        assert_eq!(c.output_dtype, "i32");
        assert_eq!(c.bytes_a, 128.0);
        assert_eq!(c.bytes_c, 4.0);
        assert_eq!(c.bytes_d, 4.0);
        assert_eq!(c.bytes_bias, 4.0);
        assert_eq!(PlanDType::E4m3.output(), DType::BF16);
        assert_eq!(PlanDType::Tf32.input().size(), 4);
        assert_eq!(PlanDType::Tf32.name(), "tf32");
    }

    #[test]
    fn batched_call_multiplies_by_checked_batch_entries() {
        let a = args(&[
            "--m",
            "1000",
            "--n",
            "1000",
            "--k",
            "10",
            "--batch-count",
            "500",
            "--dtype",
            "f32",
        ]);
        let c = plan(&a).unwrap().gemm.unwrap().cost;
        // 1% of 1000 rows, 0.1% of 1000 columns, 1% of 500 batch entries.
        assert_eq!((c.rows, c.cols, c.batches), (10, 1, 5));
        assert_eq!(c.bytes_a, 5.0 * 10.0 * 10.0 * 4.0);
        assert_eq!(c.bytes_b, 5.0 * 10.0 * 4.0);
        assert_eq!(c.verifier_macs, 50.0 * 10.0);
    }

    #[test]
    fn rates_accept_every_form() {
        let a = args(&[
            "--m",
            "1",
            "--n",
            "1",
            "--k",
            "1",
            "--call-rate",
            "0.2",
            "--row-rate",
            "5%",
            "--col-rate",
            "300ppm",
        ]);
        assert_eq!(
            (a.call_rate, a.row_rate, a.col_rate),
            (200_000, 50_000, 300)
        );
        let cli = Cli::try_parse_from(["plan", "--call-rate", "150%"]);
        assert!(cli.is_err());
    }

    #[test]
    fn detection_fake_calls_matches_hand_values() {
        // p = 0.1, f = 0.01: N = 1000 -> 10 faked calls, P = 1 - 0.9^10.
        let c = detect_fake_calls(0.1, 0.01, 1000.0);
        assert!(close(c.detect, 0.651_321_559_9, 1e-9));
        assert!(close(c.miss, 0.348_678_440_1, 1e-9));
        let c = detect_fake_calls(0.1, 0.01, 10_000.0);
        assert!(close(c.miss, 0.9f64.powi(100), 1e-9));
        assert_eq!(detect_fake_calls(0.1, 0.01, 0.0).detect, 0.0);
        assert_eq!(detect_fake_calls(1.0, 0.5, 2.0).detect, 1.0);
        assert_eq!(detect_fake_calls(0.0, 0.5, 2.0).detect, 0.0);
    }

    #[test]
    fn detection_fake_rows_matches_hand_values() {
        // The worked case: m = 4096, b = 40 faked rows, r = 40 checked rows.
        let q = -ln_rows_missed(4096, 40, 40).exp_m1();
        assert!(close(q, 0.325_939_281_209_913, 1e-12), "{q}");
        let approx = rows_hit_approx(0.01, 40);
        assert!(close(approx, 1.0 - 0.99f64.powi(40), 1e-12));
        assert!(close(approx, 0.331_028_241_430_32, 1e-12));
        // Over N = 100 calls with p = 0.1: 1 - (1 - 0.1 q)^100.
        let c = detect_fake_rows(0.1, q, 100.0);
        assert!(close(c.detect, 0.963_618_475_869_302, 1e-10));
        let a = args(&["--m", "4096", "--n", "4096", "--k", "4096"]);
        let r = plan(&a).unwrap();
        assert_eq!(r.gemm.as_ref().unwrap().cost.faked_rows, 40);
        let row = &r.detection.rows[0];
        assert_eq!(row.calls, 100);
        assert!(close(
            row.fake_rows_exact.detect,
            0.963_618_475_869_302,
            1e-10
        ));
        assert!(close(row.fake_calls.detect, 0.1, 1e-12));
        assert_eq!(r.detection.calls_for_99_fake_calls, Some(4371.0));
    }

    #[test]
    fn hypergeometric_exact_against_binomials_and_edges() {
        // C(8, 3) / C(10, 3) = 56 / 120 with m = 10, b = 2, r = 3.
        assert!(close(ln_rows_missed(10, 2, 3).exp(), 56.0 / 120.0, 1e-14));
        // More checked rows than honest ones: a hit is certain.
        assert_eq!(ln_rows_missed(10, 8, 3), f64::NEG_INFINITY);
        assert_eq!(ln_rows_missed(10, 0, 3), 0.0);
        assert_eq!(ln_rows_missed(10, 3, 0), 0.0);
        // Without replacement every checked row is a new one, so when b = g m exactly the
        // exact q is above the with-replacement 1 - (1 - g)^r.
        let exact = -ln_rows_missed(1000, 10, 50).exp_m1();
        let approx = rows_hit_approx(0.01, 50);
        assert!(exact > approx, "{exact} {approx}");
        // One checked row: q = b / m exactly.
        assert!(close(
            -ln_rows_missed(128, 1, 1).exp_m1(),
            1.0 / 128.0,
            1e-14
        ));
    }

    #[test]
    fn calls_for_target() {
        assert_eq!(calls_for(0.99, (-0.1f64).ln_1p()), Some(44.0));
        assert_eq!(calls_for(0.99, 0.0), None);
    }

    #[test]
    fn formatting() {
        assert_eq!(fmt_bytes(157.0), "157 B");
        assert_eq!(fmt_bytes(360_832.0), "352.4 KiB");
        assert_eq!(fmt_bytes(3.5 * 1024.0 * 1024.0), "3.5 MiB");
        assert_eq!(fmt_ops(655_360.0), "655.4 kops");
        assert_eq!(fmt_ops(2.5e9), "2.5 Gops");
        assert_eq!(fmt_rate(100_000), "10%");
        assert_eq!(fmt_rate(1_000), "0.1%");
        assert_eq!(fmt_rate(1), "0.0001%");
        assert_eq!(
            fmt_chance(Chance::from_ln_miss((0.9f64).ln() * 10.0)),
            "65.13%"
        );
        assert_eq!(fmt_chance(Chance::from_ln_miss(-20.0)), "1 - 2.1e-9");
        assert_eq!(fmt_chance(Chance::from_ln_miss(0.0)), "0");
        assert_eq!(
            fmt_chance(Chance::from_ln_miss(-1000.5 * std::f64::consts::LN_10)),
            "1 - 3.2e-1001"
        );
        assert_eq!(
            fmt_chance(Chance::from_ln_miss(-999.999_999 * std::f64::consts::LN_10)),
            "1 - 1.0e-1000"
        );
        assert_eq!(fmt_chance(Chance::from_ln_miss(f64::NEG_INFINITY)), "1");
    }

    #[test]
    fn hf_config_parses_llama() {
        let s = parse_hf_config(LLAMA).unwrap();
        assert_eq!(
            s,
            ModelShape {
                hidden: 4096,
                intermediate: 14336,
                layers: 32,
                heads: 32,
                kv_heads: 8,
                head_dim: 128,
                vocab: 128_256,
                kv_heads_defaulted: false,
            }
        );
    }

    #[test]
    fn hf_config_errors() {
        let err = |text: &str| format!("{:#}", parse_hf_config(text).unwrap_err());
        let base = r#""hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "vocab_size": 100"#;
        let e = err(&format!("{{{base}}}"));
        assert!(e.contains("no \"num_attention_heads\""), "{e}");
        let e = err(&format!("{{{base}, \"num_attention_heads\": 0}}"));
        assert!(e.contains("\"num_attention_heads\" is 0"), "{e}");
        let e = err(&format!("{{{base}, \"num_attention_heads\": 30}}"));
        assert!(e.contains("not divisible"), "{e}");
        let e = err(&format!(
            "{{{base}, \"num_attention_heads\": 32, \"num_key_value_heads\": 5}}"
        ));
        assert!(e.contains("not a multiple"), "{e}");
        let e = err(&format!("{{{base}, \"num_attention_heads\": \"32\"}}"));
        assert!(e.contains("not a positive integer"), "{e}");
        let e = err(&format!(
            "{{{base}, \"num_attention_heads\": 32, \"head_dim\": 99999999999}}"
        ));
        assert!(e.contains("at most 16777216"), "{e}");
        assert!(err("[1, 2]").contains("not a JSON object"));
        assert!(err("{").contains("not valid JSON"));
        // Absent num_key_value_heads means multi-head attention; head_dim may be explicit.
        let s = parse_hf_config(&format!(
            "{{{base}, \"num_attention_heads\": 30, \"head_dim\": 128}}"
        ))
        .unwrap();
        assert_eq!(
            (s.kv_heads, s.head_dim, s.kv_heads_defaulted),
            (30, 128, true)
        );
        // Multimodal configs nest the text model.
        let s = parse_hf_config(&format!(
            "{{\"text_config\": {{{base}, \"num_attention_heads\": 32}}}}"
        ))
        .unwrap();
        assert_eq!(s.hidden, 4096);
    }

    #[test]
    fn bad_command_lines_are_errors() {
        let e = |line: &[&str]| format!("{:#}", plan(&args(line)).unwrap_err());
        assert!(e(&["--m", "4096", "--k", "4096"]).contains("missing --n"));
        assert!(e(&[]).contains("missing --m, --n, --k"));
        assert!(e(&["--hf-config", "x.json", "--m", "4"]).contains("not both"));
        assert!(e(&["--m", "4", "--n", "4", "--k", "4", "--tokens", "5"])
            .contains("--tokens applies only"));
        assert!(e(&["--m", "0", "--n", "4", "--k", "4"]).contains("--m must be between"));
        assert!(e(&["--hf-config", "/nonexistent/config.json"]).contains("cannot read --hf-config"));
        assert!(e(&[
            "--m",
            "4",
            "--n",
            "4",
            "--k",
            "4",
            "--tokens-per-second",
            "0"
        ])
        .contains("positive"));
    }

    fn llama_report(extra: &[&str]) -> PlanReport {
        let dir = std::env::temp_dir().join(format!("mmaudit-plan-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.json");
        std::fs::write(&path, LLAMA).unwrap();
        let mut line = vec!["--hf-config", path.to_str().unwrap()];
        line.extend_from_slice(extra);
        plan(&args(&line)).unwrap()
    }

    #[test]
    fn verifier_cores_follow_the_bench() {
        let dir = std::env::temp_dir().join(format!("mmaudit-plan-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bench = dir.join("bench.json");
        let t = crate::bench::Throughput {
            cpu: "test".into(),
            seconds_per_mac: 1e-9,
            seconds_per_byte: 4e-9,
            seconds_per_held_byte: Some(0.5e-9),
            cases: Vec::new(),
        };
        std::fs::write(&bench, serde_json::to_string(&t).unwrap()).unwrap();
        let b = bench.to_str().unwrap();
        let r = llama_report(&["--tokens-per-second", "2000", "--verifier-bench", b]);
        let m = r.model.as_ref().unwrap();
        for ph in [&m.prefill, &m.decode] {
            let want =
                1e-9 * ph.verifier_macs_per_token * 2000.0 + 4e-9 * ph.bytes_per_token * 2000.0;
            assert!(close(ph.verifier_cores.unwrap(), want, 1e-12));
        }
        // holding the weights: their rows at the held rate, the rest of the stream as
        // before; fewer cores than sending them
        let rh = llama_report(&[
            "--tokens-per-second",
            "2000",
            "--verifier-bench",
            b,
            "--verifier-holds-weights",
        ]);
        let mh = rh.model.as_ref().unwrap();
        for ph in [&mh.prefill, &mh.decode] {
            let rows = ph.sample_bytes_per_token - ph.sample_bytes_per_token_weights_held;
            let want = 1e-9 * ph.verifier_macs_per_token * 2000.0
                + 4e-9 * ph.bytes_per_token_weights_held * 2000.0
                + 0.5e-9 * rows * 2000.0;
            assert!(close(ph.verifier_cores.unwrap(), want, 1e-12));
            assert!(rows > 0.0);
        }
        assert!(mh.decode.verifier_cores < m.decode.verifier_cores);
        // twice the rate, twice the cores
        let r2 = llama_report(&["--tokens-per-second", "4000", "--verifier-bench", b]);
        let d2 = r2.model.as_ref().unwrap().decode.verifier_cores.unwrap();
        assert!(close(d2, 2.0 * m.decode.verifier_cores.unwrap(), 1e-12));
        assert!(render(&r, &args(&["--m", "1", "--n", "1", "--k", "1"]))
            .contains("GPUs per verifier core"));
        assert!(llama_report(&[])
            .model
            .unwrap()
            .decode
            .verifier_cores
            .is_none());
        // one GEMM: no phases to give cores for; a file that is not a bench: refused
        let one_gemm = || {
            let line = ["--m", "4", "--n", "4", "--k", "4", "--verifier-bench", b];
            format!("{:#}", plan(&args(&line)).unwrap_err())
        };
        let e = one_gemm();
        assert!(e.contains("needs a model"), "{e}");
        std::fs::write(&bench, "{\"cpu\": 1}").unwrap();
        let e = one_gemm();
        assert!(
            e.contains("not the JSON of `mmaudit-verify bench --json`"),
            "{e}"
        );
    }

    #[test]
    fn llama_counts_calls_and_shapes() {
        let r = llama_report(&["--prompt-tokens", "100", "--tokens", "10"]);
        let m = r.model.as_ref().unwrap();
        let per_pass = 9 * 32 + 1;
        assert_eq!(m.prefill.calls, per_pass as f64);
        assert_eq!(m.decode.calls, (per_pass * 10) as f64);
        assert_eq!(m.run_calls, (per_pass * 11) as f64);
        assert_eq!(r.detection.rows.len(), 1);
        assert_eq!(r.detection.rows[0].calls, (per_pass * 11) as u64);
        let names: Vec<_> = m.prefill_gemms.iter().map(|g| g.cost.name).collect();
        assert_eq!(
            names,
            [
                "q_proj",
                "k_proj",
                "v_proj",
                "attn_scores",
                "attn_out",
                "o_proj",
                "gate_proj",
                "up_proj",
                "down_proj",
                "lm_head"
            ]
        );
        let k_proj = &m.prefill_gemms[1].cost;
        assert_eq!((k_proj.m, k_proj.n, k_proj.k), (1024, 100, 4096));
        let scores = &m.prefill_gemms[3].cost;
        assert_eq!(
            (scores.m, scores.n, scores.k, scores.batch),
            (100, 100, 128, 32)
        );
        assert!(!scores.weight);
        let out = &m.decode_gemms[4].cost;
        assert_eq!((out.m, out.n, out.k), (128, 1, 105));
        // Decode verifier work per token sums the attention exactly over the steps.
        let p = 0.1;
        let linear: f64 = m
            .decode_gemms
            .iter()
            .filter(|g| g.cost.weight)
            .map(|g| g.calls_per_pass as f64 * g.cost.verifier_macs)
            .sum();
        let mut attention = 0.0;
        for j in 1..=10u64 {
            let ctx = 100 + j;
            // scores: rows = max(1, floor(ctx/100)) = 1, cols 1, 1 batch entry, k = 128;
            // out: 1 row, 1 column, k = ctx.
            attention += 32.0 * (128.0 + ctx as f64);
        }
        assert!(close(
            m.decode.verifier_macs_per_token,
            p * (linear + attention / 10.0),
            1e-12
        ));
        // Holding weights only ever removes bytes.
        assert!(m.decode.bytes_per_token_weights_held < m.decode.bytes_per_token);
        assert!(m.prefill.fraction_checked > 0.0 && m.prefill.fraction_checked < 1e-3);
    }

    #[test]
    fn llama_rejects_absurd_runs() {
        let dir = std::env::temp_dir().join(format!("mmaudit-plan-absurd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.json");
        std::fs::write(&path, LLAMA).unwrap();
        let p = path.to_str().unwrap();
        let e = |extra: &[&str]| {
            let mut line = vec!["--hf-config", p];
            line.extend_from_slice(extra);
            format!("{:#}", plan(&args(&line)).unwrap_err())
        };
        assert!(e(&["--batch", "1099511627776"]).contains("too large"));
        assert!(e(&["--tokens", "99999999"]).contains("at most"));
        assert!(e(&["--tokens", "0"]).contains("--tokens must be between"));
    }

    #[test]
    fn llama_report_renders_and_serialises() {
        let r = llama_report(&["--calls", "1000,37281"]);
        let a = args(&["--hf-config", "x", "--calls", "1000,37281"]);
        let text = render(&r, &a);
        assert!(text.contains("FlashAttention"));
        assert!(text.contains("assumed; set --tokens-per-second"));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["mode"], "model");
        assert_eq!(json["detection"]["rows"][1]["calls"], 37281);
        assert_eq!(json["model"]["shape"]["kv_heads"], 8);
    }

    #[test]
    fn help_has_examples() {
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("Examples:"), "{help}");
        assert!(help.contains("--hf-config"), "{help}");
    }

    /// Prints both reports: `cargo test -p mmaudit-verify --lib plan::tests::show -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn show() {
        let a = args(&[
            "--m", "4096", "--n", "4096", "--k", "4096", "--dtype", "f16",
        ]);
        print!("{}", render(&plan(&a).unwrap(), &a));
        println!("\n----------------\n");
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/examples/llama3-8b-config.json"
        );
        let a = args(&["--hf-config", path]);
        print!("{}", render(&plan(&a).unwrap(), &a));
    }
}

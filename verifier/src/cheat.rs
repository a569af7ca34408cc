//! Cheaper arithmetic, as a GPU owner who wants a PASS without the declared work would
//! use it, and how often the verifier's entry check catches it.
//!
//! `plan` uses this to print detection figures that include the tolerance (a wrong
//! entry is caught only when it lands outside what an honest GPU may produce), and the
//! recompute tests use it to prove the figures against the honest emulation.
//!
//! The data model is a transformer's linear layer: activations N(0, 1) and weights
//! N(0, 0.02), rounded to the declared input type, f32 accumulation, output in the
//! input type, alpha 1, beta 0. Real activations have outliers and real weights other
//! spreads; the figures are estimates for this model, from a fixed seed.

use mmaudit_protocol::call::{
    BatchForm, ComputeType, DType, EntryPoint, Epilogue, GemmCall, Op, Operand, Order, Scalar,
};
use mmaudit_protocol::num::round_to;
use serde::Serialize;

use crate::recompute::{check_entry, Entry, Scalars, Verdict};

/// What the GPU computes instead of the declared GEMM.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Arithmetic {
    /// e4m3 with a scale per op(A) row and per op(B) column (amax / 448), as per-channel
    /// fp8 inference does
    Fp8RowScaled,
    /// symmetric int8 with the same scales (amax / 127)
    Int8RowScaled,
    /// symmetric int4 with the same scales (amax / 7)
    Int4RowScaled,
    /// only the first `f` of the k terms summed
    TruncateK(f64),
    /// op(B) (the weights) off by a relative `e` per element (normal)
    Weights(f64),
    /// every result zero
    Zero,
}

impl Arithmetic {
    /// The cheats `plan` reports, in its order.
    pub const PLANNED: [Arithmetic; 7] = [
        Arithmetic::Fp8RowScaled,
        Arithmetic::Int8RowScaled,
        Arithmetic::Int4RowScaled,
        Arithmetic::TruncateK(0.5),
        Arithmetic::Weights(0.01),
        Arithmetic::Weights(0.001),
        Arithmetic::Zero,
    ];

    /// A short description.
    pub fn describe(self) -> String {
        match self {
            Arithmetic::Fp8RowScaled => "e4m3, per-row/column scales".into(),
            Arithmetic::Int8RowScaled => "int8, per-row/column scales".into(),
            Arithmetic::Int4RowScaled => "int4, per-row/column scales".into(),
            Arithmetic::TruncateK(f) => format!("first {}% of k only", 100.0 * f),
            Arithmetic::Weights(e) => format!("weights {}% off", 100.0 * e),
            Arithmetic::Zero => "all zeros".into(),
        }
    }

    /// The value this cheat claims for `a . b`, rounded to `output`.
    pub fn claim(self, a: &[f64], b: &[f64], output: DType, rng: &mut Sampler) -> f64 {
        let dot = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f64>();
        let fp8 = |v: f64| round_to(DType::F8E4M3, v);
        let int = |q: f64| move |v: f64| v.round_ties_even().clamp(-q, q);
        let v = match self {
            Arithmetic::Fp8RowScaled => dot(&rowscaled(a, 448.0, fp8), &rowscaled(b, 448.0, fp8)),
            Arithmetic::Int8RowScaled => dot(
                &rowscaled(a, 127.0, int(127.0)),
                &rowscaled(b, 127.0, int(127.0)),
            ),
            Arithmetic::Int4RowScaled => {
                dot(&rowscaled(a, 7.0, int(7.0)), &rowscaled(b, 7.0, int(7.0)))
            }
            Arithmetic::TruncateK(f) => {
                let kept = ((a.len() as f64 * f).ceil() as usize).min(a.len());
                dot(&a[..kept], &b[..kept])
            }
            Arithmetic::Weights(e) => {
                let off: Vec<f64> = b.iter().map(|&v| v * (1.0 + e * rng.normal())).collect();
                dot(a, &off)
            }
            Arithmetic::Zero => 0.0,
        };
        round_to(output, v)
    }
}

/// `x` quantized with a symmetric per-vector scale `s = amax / qmax`: `q(x / s) * s`.
fn rowscaled(x: &[f64], qmax: f64, q: impl Fn(f64) -> f64) -> Vec<f64> {
    let amax = x.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let s = if amax == 0.0 { 1.0 } else { amax / qmax };
    x.iter().map(|&v| q(v / s) * s).collect()
}

/// A small deterministic generator (splitmix64), so figures do not depend on a crate's
/// version.
#[derive(Clone, Debug)]
pub struct Sampler(u64);

impl Sampler {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Sampler {
        Sampler(seed)
    }

    /// The next 64 uniform bits (splitmix64).
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (1.0 - self.unit(), self.unit());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// One row of activations N(0, 1) and one column of weights N(0, 0.02), in `input`.
pub fn linear_operands(rng: &mut Sampler, input: DType, k: usize) -> (Vec<f64>, Vec<f64>) {
    let a = (0..k).map(|_| round_to(input, rng.normal())).collect();
    let b = (0..k)
        .map(|_| round_to(input, 0.02 * rng.normal()))
        .collect();
    (a, b)
}

/// A single-entry GEMM call: `input` operands and output, `compute`, no epilogue.
pub fn linear_call(input: DType, compute: ComputeType, k: u64) -> GemmCall {
    let op = |dtype| Operand {
        dtype,
        order: Order::Col,
        ld: k.max(1),
        batch_stride: 0,
    };
    GemmCall {
        index: 0,
        entry: EntryPoint::GemmEx,
        device: 0,
        stream: 0,
        op_a: Op::N,
        op_b: Op::N,
        m: 1,
        n: 1,
        k,
        batch: 1,
        batch_form: BatchForm::Single,
        a: op(input),
        b: op(input),
        c: op(input),
        d: op(input),
        compute,
        scale_type: if compute == ComputeType::F16 {
            DType::F16
        } else {
            DType::F32
        },
        alpha: Scalar::Host(1.0),
        beta: Scalar::Host(0.0),
        epilogue: Epilogue::Default,
        bias_type: DType::F32,
        flags: 0,
        replay: None,
    }
}

/// How often one cheat's entries were caught.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Caught {
    /// entries tried
    pub entries: u64,
    /// beyond the worst-case tolerance
    pub beyond_tolerance: u64,
    /// within it, beyond the declared-precision bound
    pub imprecise: u64,
    /// the tolerance model cannot bound them (neither caught nor passed)
    pub unverifiable: u64,
}

impl Caught {
    /// The fraction of entries caught.
    pub fn rate(&self) -> f64 {
        if self.entries == 0 {
            0.0
        } else {
            (self.beyond_tolerance + self.imprecise) as f64 / self.entries as f64
        }
    }
}

/// Judges `entries` entries of a linear layer with inner dimension `k`, declared as
/// `input` operands and output with `compute` and the given call `flags`, computed by
/// `cheat`, from a fixed seed.
pub fn caught(
    cheat: Arithmetic,
    input: DType,
    compute: ComputeType,
    flags: u16,
    k: usize,
    entries: u64,
    seed: u64,
) -> Caught {
    let mut call = linear_call(input, compute, k as u64);
    call.flags = flags;
    let mut rng = Sampler::new(seed);
    let mut out = Caught::default();
    for _ in 0..entries {
        let (a, b) = linear_operands(&mut rng, input, k);
        let claimed = cheat.claim(&a, &b, input, &mut rng);
        let e = Entry {
            a_row: &a,
            b_col: &b,
            c_in: 0.0,
            bias: None,
            claimed,
        };
        out.entries += 1;
        match check_entry(&call, &Scalars::UNIT, &e).map(|c| c.verdict) {
            Ok(Verdict::Fail) => out.beyond_tolerance += 1,
            Ok(Verdict::Imprecise) => out.imprecise += 1,
            Ok(Verdict::Unverifiable(_)) => out.unverifiable += 1,
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sampler_is_fixed() {
        let mut s = Sampler::new(1);
        let first: Vec<u64> = (0..3).map(|_| s.next_u64()).collect();
        let mut again = Sampler::new(1);
        assert_eq!(first, (0..3).map(|_| again.next_u64()).collect::<Vec<_>>());
        let mut n = Sampler::new(2);
        let mean = (0..20_000).map(|_| n.normal()).sum::<f64>() / 20_000.0;
        assert!(mean.abs() < 0.03, "{mean}");
    }

    #[test]
    fn every_cheat_changes_results_and_zero_is_zero() {
        let mut rng = Sampler::new(3);
        let (a, b) = linear_operands(&mut rng, DType::BF16, 1024);
        let honest = round_to(DType::BF16, a.iter().zip(&b).map(|(x, y)| x * y).sum());
        for cheat in Arithmetic::PLANNED {
            let v = cheat.claim(&a, &b, DType::BF16, &mut rng);
            if cheat == Arithmetic::Zero {
                assert_eq!(v, 0.0);
            } else if cheat != Arithmetic::Weights(0.001) {
                assert_ne!(v, honest, "{cheat:?}");
            }
        }
    }
}

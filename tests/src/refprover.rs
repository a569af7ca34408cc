//! A reference prover in pure Rust: it plays the part of `libmmaudit.so` on a CPU so
//! that the verifier can be tested end to end without any GPU.
//!
//! It draws random operands in the declared element types, computes each sampled entry
//! the way an honest GPU would (inputs rounded as the compute type does, accumulation
//! in the compute type's precision, output rounded to D's type), and encodes ledger and
//! sample records with the protocol's stream writer. Tests then tamper with the records
//! (before framing) or with the bytes (after framing) and check the verdict.
//!
//! Only the sampled entries are computed: the verifier never sees the others, and the
//! tests stay fast even for k = 16384.
//!
//! An operand can be taken from a weight matrix instead of random values
//! ([`GemmSpec::a_weight`], [`GemmSpec::b_weight`]): the sampled rows of op(A) or
//! columns of op(B) are then that matrix's rows or columns, as when a GPU program
//! multiplies by model weights.

use mmaudit_protocol::call::{
    flags, BatchForm, ComputeType, DType, Epilogue, GemmCall, Op, Operand, Order, Scalar,
};
use mmaudit_protocol::config::SamplingConfig;
use mmaudit_protocol::handshake::{OperandTable, ServerHello};
use mmaudit_protocol::keys::Key;
use mmaudit_protocol::num;
use mmaudit_protocol::record::{End, Gap, GapReason, OperandData, Record, Sample};
use mmaudit_protocol::schedule::{Plan, Schedule, ScheduleVersion};
use mmaudit_protocol::stream::{StreamHeader, StreamWriter};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

/// How a sampled vector `x` (a row of op(A) or a column of op(B)) sits in a weight matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Along {
    /// vector x is `W[x, :]`: op(A) = W (`nn.Linear`: m = out_features, k = in_features),
    /// or op(B) = W^T
    Rows,
    /// vector x is `W[:, x]`: op(A) = W^T, or op(B) = W
    Cols,
}

/// A weight tensor an operand is read from: row-major values of shape
/// (slices, rows, cols), each exact in the operand's dtype.
#[derive(Clone, Debug)]
pub struct WeightOperand {
    /// the values, `slices * rows * cols` of them, row-major
    pub values: Arc<[f64]>,
    /// stacked matrices (1 for a 2-D tensor)
    pub slices: usize,
    /// rows of each matrix
    pub rows: usize,
    /// columns of each matrix
    pub cols: usize,
    /// how the operand's vectors sit in the matrix
    pub along: Along,
    /// the matrix every batch entry uses; None: batch entry b uses matrix b (matrix 0
    /// for a 2-D tensor)
    pub slice: Option<usize>,
}

impl WeightOperand {
    /// A 2-D (`shape` of length 2) or stacked 3-D tensor's values.
    pub fn new(values: Arc<[f64]>, shape: &[usize], along: Along) -> Self {
        let (slices, rows, cols) = match *shape {
            [r, c] => (1, r, c),
            [e, r, c] => (e, r, c),
            _ => panic!("a weight operand is 2-D or 3-D, not {shape:?}"),
        };
        assert_eq!(
            values.len(),
            slices * rows * cols,
            "values do not fit {shape:?}"
        );
        WeightOperand {
            values,
            slices,
            rows,
            cols,
            along,
            slice: None,
        }
    }

    /// The same tensor, every batch entry using matrix `e`.
    pub fn matrix(mut self, e: usize) -> Self {
        self.slice = Some(e);
        self
    }

    /// (outer dimension, k) of the operand this weight makes.
    pub fn dims(&self) -> (usize, usize) {
        match self.along {
            Along::Rows => (self.rows, self.cols),
            Along::Cols => (self.cols, self.rows),
        }
    }

    /// Appends vector `x` of the matrix batch entry `b` uses.
    pub fn push_vector(&self, b: usize, x: usize, out: &mut Vec<f64>) {
        let s = self.slice.unwrap_or(if self.slices == 1 { 0 } else { b });
        let m = &self.values[s * self.rows * self.cols..][..self.rows * self.cols];
        match self.along {
            Along::Rows => out.extend_from_slice(&m[x * self.cols..][..self.cols]),
            Along::Cols => out.extend((0..self.rows).map(|j| m[j * self.cols + x])),
        }
    }
}

/// The shape and types of one GEMM to issue.
#[derive(Clone, Debug)]
pub struct GemmSpec {
    /// rows of C
    pub m: u64,
    /// columns of C
    pub n: u64,
    /// inner dimension
    pub k: u64,
    /// batch count
    pub batch: u64,
    /// A and B element type
    pub input: DType,
    /// C and D element type
    pub output: DType,
    /// accumulation type
    pub compute: ComputeType,
    /// alpha (None: passed as a device pointer with value 1.5)
    pub alpha: Option<f64>,
    /// beta (None: device pointer with value 0.5)
    pub beta: Option<f64>,
    /// epilogue
    pub epilogue: Epilogue,
    /// add a bias vector
    pub bias: bool,
    /// with `bias` and a batch count above 1: one bias vector per batch entry
    /// (cuBLASLt `BIAS_BATCH_STRIDE`, flag BIAS_PER_BATCH)
    pub bias_per_batch: bool,
    /// apply fp8 scale factors
    pub scales: bool,
    /// a CUDA graph replay the library could not gather (CAPTURED | REPLAYED: "replayed,
    /// not audited"; ledger only)
    pub captured: bool,
    /// other flags of calls that are recorded but not audited (`flags::NO_SESSION`,
    /// `REJECTED`, `UNMODELLED`): ledger only
    pub not_audited: u16,
    /// take op(A)'s rows from this weight instead of random values
    pub a_weight: Option<WeightOperand>,
    /// take op(B)'s columns from this weight instead of random values
    pub b_weight: Option<WeightOperand>,
}

impl GemmSpec {
    /// A plain GEMM: alpha 1, beta 0, no epilogue.
    pub fn new(m: u64, n: u64, k: u64, input: DType, output: DType, compute: ComputeType) -> Self {
        GemmSpec {
            m,
            n,
            k,
            batch: 1,
            input,
            output,
            compute,
            alpha: Some(1.0),
            beta: Some(0.0),
            epilogue: Epilogue::Default,
            bias: false,
            bias_per_batch: false,
            scales: false,
            captured: false,
            not_audited: 0,
            a_weight: None,
            b_weight: None,
        }
    }

    /// A plain GEMM whose op(A) is a weight: m and k are the weight's (for
    /// [`Along::Rows`], `nn.Linear`: m = rows, k = cols), n columns of activations.
    pub fn with_a_weight(weight: WeightOperand, n: u64, input: DType) -> Self {
        let (m, k) = weight.dims();
        let mut spec = GemmSpec::new(m as u64, n, k as u64, input, input, ComputeType::F32);
        spec.a_weight = Some(weight);
        spec
    }

    /// A plain GEMM whose op(B) is a weight: n and k are the weight's, m rows of
    /// activations.
    pub fn with_b_weight(weight: WeightOperand, m: u64, input: DType) -> Self {
        let (n, k) = weight.dims();
        let mut spec = GemmSpec::new(m, n as u64, k as u64, input, input, ComputeType::F32);
        spec.b_weight = Some(weight);
        spec
    }

    /// The call's ledger description at `index`.
    pub fn to_call(&self, index: u64) -> GemmCall {
        let operand = |dtype, ld| Operand {
            dtype,
            order: Order::Col,
            ld,
            batch_stride: 0,
        };
        let mut flag = 0;
        if self.bias {
            flag |= flags::BIAS;
            if self.bias_per_batch && self.batch > 1 {
                flag |= flags::BIAS_PER_BATCH;
            }
        }
        if self.scales {
            flag |= flags::SCALE_A | flags::SCALE_B | flags::SCALE_D;
            if self.beta != Some(0.0) {
                flag |= flags::SCALE_C;
            }
        }
        if self.captured {
            flag |= flags::CAPTURED | flags::REPLAYED;
        }
        flag |= self.not_audited & (flags::NOT_AUDITED | flags::REPLAYED);
        let scalar = |v: Option<f64>| v.map_or(Scalar::Device, Scalar::Host);
        let (entry, batch_form) = if self.batch > 1 {
            (
                mmaudit_protocol::call::EntryPoint::GemmStridedBatchedEx,
                BatchForm::Strided,
            )
        } else {
            (
                mmaudit_protocol::call::EntryPoint::GemmEx,
                BatchForm::Single,
            )
        };
        let bias_type = if self.output == DType::I32
            || self.output == DType::F8E4M3
            || self.output == DType::F8E5M2
        {
            DType::BF16
        } else {
            self.output
        };
        GemmCall {
            index,
            entry: if self.epilogue != Epilogue::Default || self.bias || self.scales {
                mmaudit_protocol::call::EntryPoint::LtMatmul
            } else {
                entry
            },
            device: 0,
            stream: 0,
            op_a: Op::T,
            op_b: Op::N,
            m: self.m,
            n: self.n,
            k: self.k,
            batch: self.batch,
            batch_form,
            a: operand(self.input, self.k),
            b: operand(self.input, self.k),
            c: operand(self.output, self.m),
            d: operand(self.output, self.m),
            compute: self.compute,
            scale_type: match self.compute {
                ComputeType::F16 => DType::F16,
                ComputeType::I32 => DType::I32,
                ComputeType::F64 => DType::F64,
                _ => DType::F32,
            },
            alpha: scalar(self.alpha),
            beta: scalar(self.beta),
            epilogue: self.epilogue,
            bias_type,
            flags: flag,
            replay: (flag & flags::REPLAYED != 0).then_some(mmaudit_protocol::call::ReplayOf {
                graph: 1,
                exec: 1,
                replay: index,
                node: 0,
            }),
        }
    }
}

/// Value used for a device-pointer alpha.
pub const DEVICE_ALPHA: f64 = 1.5;
/// Value used for a device-pointer beta.
pub const DEVICE_BETA: f64 = 0.5;

/// A finished capture: header bytes and frame bytes, kept apart so tests can drop,
/// duplicate or reorder frames.
#[derive(Clone)]
pub struct Capture {
    /// the stream header
    pub header: Vec<u8>,
    /// each frame's bytes, in order
    pub frames: Vec<Vec<u8>>,
}

impl Capture {
    /// The whole byte stream, exactly as a file sink writes it.
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = self.header.clone();
        for f in &self.frames {
            out.extend_from_slice(f);
        }
        out
    }
}

/// The reference prover.
pub struct RefProver {
    key: Key,
    nonce: [u8; 16],
    config: SamplingConfig,
    schedule: Schedule,
    rng: ChaCha8Rng,
    next_index: u64,
    stream_id: u64,
    /// segment number and first call index of the stream's header
    segment: (u32, u64),
    /// the schedule version the prover samples by
    version: ScheduleVersion,
    /// the version its header names, when a test makes it lie
    label: Option<ScheduleVersion>,
    /// The verifier's table of held operands: sampled operands that are stored rows of
    /// one of its tensors travel as references.
    references: Option<OperandTable>,
    /// Sample records whose op(A) or op(B) travel as references.
    pub referenced: u64,
    /// Records produced so far, in stream order; tests may edit them before `finish`.
    pub records: Vec<Record>,
    /// Result entries written into sample records so far.
    pub entries: u64,
}

/// A random value exactly representable in `dtype`.
pub fn random_value(rng: &mut ChaCha8Rng, dtype: DType) -> f64 {
    match dtype {
        DType::I8 => rng.gen_range(-128i32..=127) as f64,
        DType::I32 => rng.gen_range(-1000i32..=1000) as f64,
        DType::F8E4M3 | DType::F8E5M2 => num::round_to(dtype, rng.gen_range(-4.0..4.0)),
        _ => num::round_to(dtype, rng.gen_range(-1.0..1.0)),
    }
}

fn round_input(compute: ComputeType, x: f64) -> f64 {
    match compute {
        ComputeType::F32FastTf32 => num::round_tf32(x as f32) as f64,
        ComputeType::F32FastF16 => num::round_to(DType::F16, x),
        ComputeType::F32FastBf16 => num::round_to(DType::BF16, x),
        _ => x,
    }
}

/// The epilogue functions as the GPU computes them, in f64.
pub fn epilogue(e: Epilogue, x: f64) -> f64 {
    match e {
        Epilogue::Default => x,
        Epilogue::Relu => x.max(0.0),
        Epilogue::GeluTanh => {
            let c = (2.0 / std::f64::consts::PI).sqrt();
            0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
        }
        Epilogue::GeluErf => 0.5 * x * (1.0 + libm_erf(x / std::f64::consts::SQRT_2)),
    }
}

/// erf by its Maclaurin series for small |x| and a continued fraction for large |x|;
/// accurate to far below the tolerance the tests need (an independent implementation
/// from the verifier's).
fn libm_erf(x: f64) -> f64 {
    let ax = x.abs();
    if ax > 6.0 {
        return x.signum();
    }
    if ax < 2.5 {
        // erf x = 2/sqrt(pi) * sum (-1)^n x^(2n+1) / (n! (2n+1))
        let mut term = ax;
        let mut sum = ax;
        let mut n = 0.0;
        loop {
            n += 1.0;
            term *= -ax * ax / n;
            let add = term / (2.0 * n + 1.0);
            sum += add;
            // `<=`: at x = 0 (or a subnormal x whose square underflows) every term is 0.
            if add.abs() <= 1e-17 * sum.abs() {
                break;
            }
        }
        return x.signum() * sum * 2.0 / std::f64::consts::PI.sqrt();
    }
    // erfc x = exp(-x^2)/sqrt(pi) * 1/(x + 1/2/(x + 1/(x + 3/2/(x + ...))))
    let mut f = ax;
    for i in (1..60).rev() {
        f = ax + (i as f64 / 2.0) / f;
    }
    let erfc = (-ax * ax).exp() / std::f64::consts::PI.sqrt() / f;
    x.signum() * (1.0 - erfc)
}

/// One entry of D as an honest GPU computes it: inputs rounded as the compute type
/// does, accumulation in its precision, the epilogue, D's rounding.
#[allow(clippy::too_many_arguments)]
pub fn honest_entry(
    call: &GemmCall,
    alpha: f64,
    beta: f64,
    scales: [f64; 4],
    a_row: &[f64],
    b_col: &[f64],
    c_in: f64,
    bias: f64,
) -> f64 {
    let dot = match call.compute {
        ComputeType::I32 => a_row
            .iter()
            .zip(b_col)
            .map(|(a, b)| (*a as i64) * (*b as i64))
            .sum::<i64>() as f64,
        ComputeType::F16 => a_row.iter().zip(b_col).fold(0.0, |acc, (a, b)| {
            num::round_to(DType::F16, acc + num::round_to(DType::F16, a * b))
        }),
        ComputeType::F64 => a_row.iter().zip(b_col).map(|(a, b)| a * b).sum(),
        _ => a_row.iter().zip(b_col).fold(0f32, |acc, (a, b)| {
            (round_input(call.compute, *a) as f32)
                .mul_add(round_input(call.compute, *b) as f32, acc)
        }) as f64,
    };
    let [sa, sb, sc, sd] = scales;
    if call.compute == ComputeType::I32 {
        let v = alpha as i64 * dot as i64 + beta as i64 * c_in as i64;
        return v as i32 as f64;
    }
    let pre = alpha * sa * sb * dot + beta * sc * c_in + bias;
    num::round_to(call.d.dtype, sd * epilogue(call.epilogue, pre))
}

impl RefProver {
    /// A prover for `key` with this configuration; `seed` fixes its operands and nonce.
    pub fn new(key: &Key, config: SamplingConfig, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let nonce: [u8; 16] = rng.gen();
        RefProver {
            key: key.clone(),
            nonce,
            config,
            schedule: Schedule::with_version(key, nonce, config, ScheduleVersion::V2),
            rng,
            next_index: 0,
            stream_id: 0x5eed,
            segment: (0, 0),
            version: ScheduleVersion::V2,
            label: None,
            references: None,
            referenced: 0,
            records: Vec::new(),
            entries: 0,
        }
    }

    /// The same prover with another session nonce (call before issuing any GEMM: the
    /// schedule depends on it). A prover of a live session uses
    /// [`RefProver::with_hello`], which also takes the hello's sampling configuration.
    pub fn with_nonce(mut self, nonce: [u8; 16]) -> Self {
        self.nonce = nonce;
        self.schedule = Schedule::with_version(&self.key, nonce, self.config, self.version);
        self
    }

    /// The same prover as the prover of a live session, as `libmmaudit.so` with a TCP
    /// sink plays it: the nonce and the sampling configuration of the verifier's hello
    /// replace its own (call before issuing any GEMM: the schedule depends on both).
    /// The stream's header then carries the hello's configuration.
    pub fn with_hello(mut self, hello: &ServerHello) -> Self {
        self.config = hello.sampling;
        self.with_nonce(hello.nonce)
    }

    /// The sampling configuration of the stream.
    pub fn config(&self) -> SamplingConfig {
        self.config
    }

    /// The same prover with another stream id in its header (default 0x5eed).
    pub fn with_stream_id(mut self, stream_id: u64) -> Self {
        self.stream_id = stream_id;
        self
    }

    /// The same prover following schedule `version` (default v2, as `libmmaudit.so`
    /// writes; call before issuing any GEMM).
    pub fn with_schedule(mut self, version: ScheduleVersion) -> Self {
        self.version = version;
        self.schedule = Schedule::with_version(&self.key, self.nonce, self.config, version);
        self
    }

    /// The same prover, but its header names schedule `version` whatever it samples by
    /// (a cheat, for tests).
    pub fn labelled(mut self, version: ScheduleVersion) -> Self {
        self.label = Some(version);
        self
    }

    /// The same prover writing segment `segment` of its stream, whose ledger starts at
    /// call `first_index` (as `libmmaudit.so` starts a new segment after losing its
    /// connection). Call before issuing any GEMM.
    pub fn with_segment(mut self, segment: u32, first_index: u64) -> Self {
        self.segment = (segment, first_index);
        self.next_index = first_index;
        self
    }

    /// From now on, a sampled op(A) or op(B) whose vectors are stored rows of a tensor
    /// in the verifier's table travels as a reference (as `libmmaudit.so` does with a
    /// tcp sink), not inline.
    pub fn use_references(&mut self, table: OperandTable) {
        self.references = Some(table);
    }

    /// The session nonce of the stream.
    pub fn nonce(&self) -> [u8; 16] {
        self.nonce
    }

    /// Issues one GEMM: a ledger record always, and a sample record when the schedule
    /// selects it. Returns the plan when sampled.
    pub fn gemm(&mut self, spec: &GemmSpec) -> Option<Plan> {
        let call = spec.to_call(self.next_index);
        self.next_index += 1;
        self.records.push(Record::Ledger(call.clone()));
        if call.has(flags::NOT_AUDITED) {
            return None;
        }
        let plan = self.schedule.decide(&call)?;
        let mut sample = self.sample(&call, &plan, spec);
        if let Some(table) = &self.references {
            let nb = plan.batches.len();
            let mut any = false;
            for (data, dtype, indices) in [
                (&mut sample.a_rows, call.a.dtype, &plan.rows),
                (&mut sample.b_cols, call.b.dtype, &plan.cols),
            ] {
                let found = data
                    .inline()
                    .and_then(|bytes| table.reference(dtype, call.k, indices, nb, bytes));
                if let Some(reference) = found {
                    *data = reference;
                    any = true;
                }
            }
            self.referenced += any as u64;
        }
        self.records.push(Record::Sample(sample));
        Some(plan)
    }

    /// Issues one GEMM but reports its sample as dropped (a gap) when it is sampled.
    pub fn gemm_dropped(&mut self, spec: &GemmSpec) -> Option<Plan> {
        let plan = self.gemm(spec)?;
        let Some(Record::Sample(s)) = self.records.pop() else {
            unreachable!("gemm pushed a sample for a sampled call");
        };
        self.entries -= plan.entries();
        self.records.push(Record::Gap(Gap {
            indices: vec![s.index],
            reason: GapReason::RingFull,
            detail: "reference prover: dropped on purpose".into(),
        }));
        Some(plan)
    }

    fn sample(&mut self, call: &GemmCall, plan: &Plan, spec: &GemmSpec) -> Sample {
        let k = call.k as usize;
        let input = spec.input;
        let alpha = spec.alpha.unwrap_or(DEVICE_ALPHA);
        let beta = spec.beta.unwrap_or(DEVICE_BETA);
        let scale = |rng: &mut ChaCha8Rng, on: bool| -> Option<f32> {
            on.then(|| rng.gen_range(0.25f32..2.0))
        };
        let scale_a = scale(&mut self.rng, call.has(flags::SCALE_A));
        let scale_b = scale(&mut self.rng, call.has(flags::SCALE_B));
        let scale_c = scale(&mut self.rng, call.has(flags::SCALE_C));
        let scale_d = scale(&mut self.rng, call.has(flags::SCALE_D));
        let scales = [scale_a, scale_b, scale_c, scale_d].map(|s| s.map_or(1.0, f64::from));

        let (nb, nr, nc) = (plan.batches.len(), plan.rows.len(), plan.cols.len());
        let from_weight = |w: &WeightOperand, outer: u64, indices: &[u64]| {
            assert_eq!(
                w.dims(),
                (outer as usize, k),
                "the weight does not fit the call"
            );
            let mut v = Vec::with_capacity(nb * indices.len() * k);
            for &b in &plan.batches {
                for &x in indices {
                    w.push_vector(b as usize, x as usize, &mut v);
                }
            }
            v
        };
        let a: Vec<f64> = match &spec.a_weight {
            Some(w) => from_weight(w, call.m, &plan.rows),
            None => (0..nb * nr * k)
                .map(|_| random_value(&mut self.rng, input))
                .collect(),
        };
        let b: Vec<f64> = match &spec.b_weight {
            Some(w) => from_weight(w, call.n, &plan.cols),
            None => (0..nb * nc * k)
                .map(|_| random_value(&mut self.rng, input))
                .collect(),
        };
        let c: Vec<f64> = if call.reads_c() {
            (0..nb * nr * nc)
                .map(|_| random_value(&mut self.rng, spec.output))
                .collect()
        } else {
            Vec::new()
        };
        let bias_vectors = if call.has(flags::BIAS_PER_BATCH) {
            nb
        } else {
            1
        };
        let bias: Vec<f64> = if spec.bias {
            (0..bias_vectors * nr)
                .map(|_| random_value(&mut self.rng, call.bias_type))
                .collect()
        } else {
            Vec::new()
        };
        let mut d = Vec::with_capacity(nb * nr * nc);
        for bi in 0..nb {
            for ri in 0..nr {
                for ci in 0..nc {
                    let e = (bi * nr + ri) * nc + ci;
                    d.push(honest_entry(
                        call,
                        alpha,
                        beta,
                        scales,
                        &a[(bi * nr + ri) * k..][..k],
                        &b[(bi * nc + ci) * k..][..k],
                        c.get(e).copied().unwrap_or(0.0),
                        bias.get((bi % bias_vectors) * nr + ri)
                            .copied()
                            .unwrap_or(0.0),
                    ));
                }
            }
        }
        self.entries += d.len() as u64;
        let enc = |dtype, v: &[f64]| {
            let mut out = Vec::new();
            num::encode_into(dtype, v, &mut out);
            out
        };
        Sample {
            index: call.index,
            alpha: spec.alpha.is_none().then_some(alpha),
            beta: spec.beta.is_none().then_some(beta),
            scale_a,
            scale_b,
            scale_c,
            scale_d,
            a_rows: OperandData::Inline(enc(input, &a)),
            b_cols: OperandData::Inline(enc(input, &b)),
            c_in: enc(spec.output, &c),
            d_out: enc(spec.output, &d),
            bias: enc(call.bias_type, &bias),
            scale_rows: Vec::new(),
            scale_cols: Vec::new(),
        }
    }

    /// Frames the records (`per_frame` records a frame), appends the end record and
    /// returns the capture.
    pub fn finish(&self, per_frame: usize) -> Capture {
        self.finish_with(per_frame, true)
    }

    /// As [`RefProver::finish`], optionally without the end record.
    pub fn finish_with(&self, per_frame: usize, end: bool) -> Capture {
        let header = self.header(self.label.unwrap_or(self.version));
        let end = end.then(|| End {
            calls: self.next_index - self.segment.1,
            samples: self
                .records
                .iter()
                .filter(|r| matches!(r, Record::Sample(_)))
                .count() as u64,
            gap_calls: gap_calls(&self.records),
        });
        frame_capture(&self.key, &header, &self.records, per_frame, end)
    }

    /// The stream header this prover writes, naming `schedule`.
    pub fn header(&self, schedule: ScheduleVersion) -> StreamHeader {
        StreamHeader {
            key_id: self.key.id(),
            nonce: self.nonce,
            config: self.config,
            stream_id: self.stream_id,
            segment: self.segment.0,
            first_index: self.segment.1,
            schedule,
            pid: std::process::id(),
            host: "refprover".into(),
            started_unix_ns: 0,
            devices: vec!["reference prover (CPU)".into()],
            producer: "mmaudit reference prover".into(),
        }
    }
}

/// Call indices named by the gap records among `records`.
pub fn gap_calls(records: &[Record]) -> u64 {
    records
        .iter()
        .map(|r| match r {
            Record::Gap(g) => g.indices.len() as u64,
            _ => 0,
        })
        .sum()
}

/// Frames `records` (`per_frame` a frame) under `header`, then the end record if given.
pub fn frame_capture(
    key: &Key,
    header: &StreamHeader,
    records: &[Record],
    per_frame: usize,
    end: Option<End>,
) -> Capture {
    let (mut writer, header_bytes) = StreamWriter::new(key, header);
    let mut frames: Vec<Vec<u8>> = records
        .chunks(per_frame.max(1))
        .map(|chunk| writer.frame(chunk))
        .collect();
    if let Some(end) = end {
        frames.push(writer.frame(&[Record::End(end)]));
    }
    Capture {
        header: header_bytes,
        frames,
    }
}

//! The reference prover of commit mode (docs/COMMIT.md), honest or cheating.
//!
//! For every GEMM it draws every operand in full, computes every entry of D as an
//! honest GPU would (or fakes some, as its [`Cheat`] says), writes the ledger record
//! and the call's commitment, and keeps everything it committed. Only then can the
//! caller, playing the verifier with the challenge key this prover never sees, tell it
//! which calls are challenged ([`CommitProver::open`]); it answers with an opening, or,
//! when cheating and the challenge would show it, with a "not retained" gap.
//!
//! The cheaters hold everything the library holds: the audit key, the hello, the stream
//! so far and every challenge of an earlier call. What they lack is the challenge key.

use std::collections::BTreeMap;

use mmaudit_protocol::call::{flags, GemmCall, Scalar};
use mmaudit_protocol::commit::{self, CallBinding, Hash, Side};
use mmaudit_protocol::config::SamplingConfig;
use mmaudit_protocol::keys::Key;
use mmaudit_protocol::num;
use mmaudit_protocol::record::{
    Commitment, CommittedVectors, End, Gap, GapReason, OpenedSide, Opening, Record, SmallData,
};
use mmaudit_protocol::schedule::{Plan, ScheduleVersion};
use mmaudit_protocol::stream::StreamHeader;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::refprover::{
    frame_capture, honest_entry, random_value, Capture, GemmSpec, DEVICE_ALPHA, DEVICE_BETA,
};

/// What a cheating prover does. Rates are in parts per million.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cheat {
    /// Computes everything and opens what is challenged.
    None,
    /// Fakes `floor(m x ppm / 10^6)` rows of D in every call (the same rows each time,
    /// which the uniform challenge makes no worse than any other choice). With
    /// `refuse`, answers a challenge whose rows include a faked one with a "not
    /// retained" gap instead of an opening.
    FakeRows {
        /// share of rows faked
        ppm: u32,
        /// refuse to open what would show the fake
        refuse: bool,
    },
    /// Skips `ppm` of the calls (D left all zeros). With `refuse`, answers a challenge
    /// of a skipped call with a gap.
    SkipCalls {
        /// share of calls skipped
        ppm: u32,
        /// refuse to open a skipped call
        refuse: bool,
    },
    /// Commits to the honest D, then opens D with one entry changed.
    AlterAfterCommit,
    /// Binds op(A) by reference to the verifier's tensor but computes D with weights
    /// one part in `ppm` off in every element (another fine-tune, a requantised
    /// copy).
    OtherWeights {
        /// relative change of every weight, parts per million
        ppm: u32,
    },
}

/// Everything committed for one call, kept until it is opened.
struct Kept {
    call: GemmCall,
    /// vectors of op(A) (rows), op(B) (columns), C and D (columns), `[batch][vector]`
    a: CommittedVectors,
    b: CommittedVectors,
    c: CommittedVectors,
    d: CommittedVectors,
    small: SmallData,
    /// rows of D faked in this call (empty when none)
    faked_rows: Vec<u64>,
    /// the call was skipped
    skipped: bool,
    /// op(A) is bound by reference
    referenced: bool,
}

/// The commit-mode reference prover.
pub struct CommitProver {
    key: Key,
    nonce: [u8; 16],
    config: SamplingConfig,
    rng: ChaCha8Rng,
    next_index: u64,
    cheat: Cheat,
    kept: BTreeMap<u64, Kept>,
    /// Records so far, in stream order.
    pub records: Vec<Record>,
    /// Challenges answered with an opening.
    pub opened: u64,
    /// Challenges refused with a gap.
    pub refused: u64,
    /// Call indices named by gap records written so far.
    pub gaps: u64,
    last_committed: Option<u64>,
    committed_before: Option<u64>,
    stream_id: u64,
    /// op(A) taken from a weight is bound as a reference to this tensor of the hello
    reference: Option<u32>,
}

impl CommitProver {
    /// A prover of a session with this nonce and sampling configuration (the hello's);
    /// `seed` fixes its operands.
    pub fn new(
        key: &Key,
        nonce: [u8; 16],
        config: SamplingConfig,
        seed: u64,
        cheat: Cheat,
    ) -> Self {
        CommitProver {
            key: key.clone(),
            nonce,
            config,
            rng: ChaCha8Rng::seed_from_u64(seed),
            next_index: 0,
            cheat,
            kept: BTreeMap::new(),
            records: Vec::new(),
            opened: 0,
            refused: 0,
            gaps: 0,
            last_committed: None,
            committed_before: None,
            stream_id: 0xc0,
            reference: None,
        }
    }

    /// From now on op(A) taken from a weight ([`GemmSpec::a_weight`], a 2-D tensor) is
    /// bound as a reference to tensor `tensor` of the verifier's hello, as the library
    /// does for held weights: not hashed, not kept, opened with evidence only.
    pub fn with_reference(mut self, tensor: u32) -> Self {
        self.reference = Some(tensor);
        self
    }

    /// The same prover with another stream id in its header (default 0xc0).
    pub fn with_stream_id(mut self, id: u64) -> Self {
        self.stream_id = id;
        self
    }

    /// Issues one GEMM: its ledger record, and its commitment when it is auditable.
    /// Returns the call and its commitment (None for a call that is not audited).
    pub fn gemm(&mut self, spec: &GemmSpec) -> (GemmCall, Option<Hash>) {
        assert!(
            spec.b_weight.is_none(),
            "the commit prover takes only op(A) from a weight"
        );
        let call = spec.to_call(self.next_index);
        self.next_index += 1;
        self.records.push(Record::Ledger(call.clone()));
        if call.has(flags::NOT_AUDITED) || call.m == 0 || call.n == 0 || call.batch == 0 {
            return (call, None);
        }
        let (m, n, k, batch) = (
            call.m as usize,
            call.n as usize,
            call.k as usize,
            call.batch as usize,
        );
        let rng = &mut self.rng;
        let mut draw = |count: usize, dtype| -> Vec<f64> {
            (0..count).map(|_| random_value(rng, dtype)).collect()
        };
        let a = match &spec.a_weight {
            // [b][row][k], from the weight's rows
            Some(w) => {
                assert_eq!(w.dims(), (m, k), "the weight does not fit the call");
                let mut v = Vec::with_capacity(batch * m * k);
                for b in 0..batch {
                    for row in 0..m {
                        w.push_vector(b, row, &mut v);
                    }
                }
                v
            }
            None => draw(batch * m * k, spec.input), // [b][row][k]
        };
        let b = draw(batch * n * k, spec.input); // [b][col][k]
        let c = if call.reads_c() {
            draw(batch * n * m, spec.output) // [b][col][row]
        } else {
            Vec::new()
        };
        let bias_vectors = if call.has(flags::BIAS_PER_BATCH) {
            batch
        } else {
            1
        };
        let bias = if spec.bias {
            draw(bias_vectors * m, call.bias_type)
        } else {
            Vec::new()
        };
        let scale = |rng: &mut ChaCha8Rng, on: bool| on.then(|| rng.gen_range(0.25f32..2.0));
        let small = SmallData {
            alpha: matches!(call.alpha, Scalar::Device).then_some(DEVICE_ALPHA),
            beta: matches!(call.beta, Scalar::Device).then_some(DEVICE_BETA),
            scale_a: scale(&mut self.rng, call.has(flags::SCALE_A)),
            scale_b: scale(&mut self.rng, call.has(flags::SCALE_B)),
            scale_c: scale(&mut self.rng, call.has(flags::SCALE_C)),
            scale_d: scale(&mut self.rng, call.has(flags::SCALE_D)),
            bias: encode(call.bias_type, &bias),
            scale_rows: Vec::new(),
            scale_cols: Vec::new(),
        };
        let scales = [small.scale_a, small.scale_b, small.scale_c, small.scale_d]
            .map(|s| s.map_or(1.0, f64::from));
        let alpha = spec.alpha.unwrap_or(DEVICE_ALPHA);
        let beta = spec.beta.unwrap_or(DEVICE_BETA);

        let (faked_rows, skipped) = match self.cheat {
            Cheat::FakeRows { ppm, .. } => {
                let count = (m as u128 * ppm as u128 / 1_000_000) as u64;
                ((0..count).collect::<Vec<u64>>(), false)
            }
            Cheat::SkipCalls { ppm, .. } => (Vec::new(), self.rng.gen_range(0..1_000_000) < ppm),
            _ => (Vec::new(), false),
        };
        // The weights the GPU multiplies by: the committed ones, or for the cheat other
        // weights (rounded to the input type).
        let used: Vec<f64> = match self.cheat {
            Cheat::OtherWeights { ppm } => a
                .iter()
                .map(|&x| num::round_to(spec.input, x * (1.0 + ppm as f64 * 1e-6)))
                .collect(),
            _ => a.clone(),
        };
        let mut d = vec![0.0; batch * n * m]; // [b][col][row]
        if !skipped {
            for bi in 0..batch {
                for col in 0..n {
                    for row in 0..m {
                        let v = honest_entry(
                            &call,
                            alpha,
                            beta,
                            scales,
                            &used[(bi * m + row) * k..][..k],
                            &b[(bi * n + col) * k..][..k],
                            c.get((bi * n + col) * m + row).copied().unwrap_or(0.0),
                            bias.get((bi % bias_vectors) * m + row)
                                .copied()
                                .unwrap_or(0.0),
                        );
                        d[(bi * n + col) * m + row] = if faked_rows.contains(&(row as u64)) {
                            num::round_to(call.d.dtype, 2.0 * v + 1.0)
                        } else {
                            v
                        };
                    }
                }
            }
        }
        let commit = |values: &[f64], count: usize, dtype| {
            CommittedVectors::new(encode(dtype, values), count).expect("vectors of one width")
        };
        let kept = Kept {
            a: commit(&a, batch * m, call.a.dtype),
            b: commit(&b, batch * n, call.b.dtype),
            c: if c.is_empty() {
                CommittedVectors::none()
            } else {
                commit(&c, batch * n, call.c.dtype)
            },
            d: commit(&d, batch * n, call.d.dtype),
            small,
            faked_rows,
            skipped,
            referenced: self.reference.is_some() && spec.a_weight.is_some(),
            call: call.clone(),
        };
        let binding = CallBinding {
            a: match (self.reference, &spec.a_weight) {
                (Some(tensor), Some(_)) => Side::Reference {
                    tensor,
                    matrices: Vec::new(),
                },
                _ => Side::Inline(kept.a.root()),
            },
            b: Side::Inline(kept.b.root()),
            c: kept.c.root(),
            d: kept.d.root(),
            small: kept.small.hash(),
        };
        let commitment = commit::call_commitment(&call, &binding);
        self.records.push(Record::Commitment(Commitment {
            index: call.index,
            commitment,
        }));
        self.kept.insert(call.index, kept);
        self.committed_before = self.last_committed;
        self.last_committed = Some(call.index);
        (call, Some(commitment))
    }

    /// Answers the challenge of call `index` with `plan`: an opening, or, for a cheater
    /// whose fake the plan would show and who refuses, a "not retained" gap.
    pub fn open(&mut self, index: u64, plan: &Plan) {
        let kept = self
            .kept
            .remove(&index)
            .expect("a challenge names a committed call");
        let shows_fake = kept.skipped || plan.rows.iter().any(|r| kept.faked_rows.contains(r));
        let refuse = match self.cheat {
            Cheat::FakeRows { refuse, .. } | Cheat::SkipCalls { refuse, .. } => refuse,
            _ => false,
        };
        if shows_fake && refuse {
            self.refused += 1;
            self.gaps += 1;
            self.records.push(Record::Gap(Gap {
                indices: vec![index],
                reason: GapReason::NotRetained,
                detail: "reference prover: refused what would show its fake".into(),
            }));
            return;
        }
        let call = &kept.call;
        let open = |vectors: &CommittedVectors, per: u64, picks: &[u64]| {
            vectors.open(per, &plan.batches, picks)
        };
        let mut d = open(&kept.d, call.n, &plan.cols);
        if self.cheat == Cheat::AlterAfterCommit {
            d.vectors[0] ^= 0x40;
        }
        self.records.push(Record::Opening(Box::new(Opening {
            index,
            a: match (self.reference, kept.referenced) {
                (Some(tensor), true) => OpenedSide::Reference {
                    tensor,
                    matrices: Vec::new(),
                    evidence: plan
                        .batches
                        .iter()
                        .flat_map(|&b| plan.rows.iter().map(move |&r| (b, r)))
                        .flat_map(|(b, r)| {
                            let row = kept.a.vector((b * call.m + r) as usize);
                            row[..call.a.dtype.size()].to_vec()
                        })
                        .collect(),
                },
                _ => OpenedSide::Inline(open(&kept.a, call.m, &plan.rows)),
            },
            b: OpenedSide::Inline(open(&kept.b, call.n, &plan.cols)),
            c: open(&kept.c, call.n, &plan.cols),
            d,
            small: kept.small.clone(),
        })));
        self.opened += 1;
    }

    /// The last call committed so far.
    pub fn last_committed(&self) -> Option<u64> {
        self.last_committed
    }

    /// Withdraws the call just committed before any challenge for it exists: its
    /// commitment record becomes a "not committed" gap.
    pub fn withdraw_last(&mut self) {
        let Some(Record::Commitment(c)) = self.records.pop() else {
            panic!("withdraw_last: the last record is not a commitment");
        };
        self.kept.remove(&c.index);
        self.last_committed = self.committed_before;
        self.gaps += 1;
        self.records.push(Record::Gap(Gap {
            indices: vec![c.index],
            reason: GapReason::NotCommitted,
            detail: "reference prover: withdrawn before its challenge".into(),
        }));
    }

    /// The end record of the stream so far.
    pub fn end(&self) -> End {
        End {
            calls: self.next_index,
            samples: self.opened,
            gap_calls: self.gaps,
        }
    }

    /// Frames the records (`per_frame` a frame) under a commit-mode header and appends
    /// the end record.
    pub fn finish(&self, per_frame: usize) -> Capture {
        frame_capture(
            &self.key,
            &self.header(),
            &self.records,
            per_frame,
            Some(self.end()),
        )
    }

    /// The stream header: commit mode, the session's nonce and configuration.
    pub fn header(&self) -> StreamHeader {
        StreamHeader {
            key_id: self.key.id(),
            nonce: self.nonce,
            config: self.config,
            stream_id: self.stream_id,
            segment: 0,
            first_index: 0,
            schedule: ScheduleVersion::Commit,
            pid: std::process::id(),
            host: "refprover".into(),
            started_unix_ns: 0,
            devices: vec!["reference prover (CPU)".into()],
            producer: "mmaudit reference prover (commit mode)".into(),
        }
    }
}

fn encode(dtype: mmaudit_protocol::call::DType, values: &[f64]) -> Vec<u8> {
    let mut out = Vec::new();
    num::encode_into(dtype, values, &mut out);
    out
}

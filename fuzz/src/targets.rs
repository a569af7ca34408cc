//! The fuzz targets, and the seeds of their corpus.
//!
//! The decoder targets are the harnesses of `mmaudit_protocol::fuzzing` (the stream
//! reader's and the challenge-frame reader's outcomes do not depend on chunking; records,
//! hellos and challenge frames that decode re-encode to their bytes; arbitrary bytes
//! behind a valid MAC decode or fail with a decode error). [`audit`] runs the verifier's
//! whole audit, as `check` runs it, on arbitrary records behind a valid MAC: it must
//! return a report (no panic, within the driver's time limit, whatever sizes the records
//! claim) whose counts are consistent. [`commit_audit`] does the same for a commit-mode
//! stream (docs/COMMIT.md) audited with the verifier's challenge key, where commitment
//! and opening records are checked.

use std::collections::BTreeMap;

use mmaudit_protocol::call::{
    flags, BatchForm, ComputeType, DType, EntryPoint, Epilogue, GemmCall, Op, Operand, Order,
    Scalar,
};
use mmaudit_protocol::codec::Reader;
use mmaudit_protocol::commit::{self, CallBinding, Challenger, Hash, Side};
use mmaudit_protocol::config::SamplingConfig;
use mmaudit_protocol::fuzzing;
use mmaudit_protocol::keys::Key;
use mmaudit_protocol::num;
use mmaudit_protocol::record::{
    Commitment, CommittedVectors, End, Gap, GapReason, Notice, NoticeKind, OpenedSide, Opening,
    Record, SmallData,
};
use mmaudit_protocol::schedule::{Plan, ScheduleVersion};
use mmaudit_protocol::stream::{StreamHeader, StreamWriter, CODEC_NONE};
use mmaudit_verify::audit::StreamAudit;
use mmaudit_verify::check::{
    audit_reader_into, audit_reader_threads, audit_reader_with, default_threads,
};
use mmaudit_verify::policy::Policy;
use mmaudit_verify::report::StreamReport;

/// Stream reader: `data[0]` chunk-size count, then chunk sizes, then the stream.
pub fn stream(data: &[u8]) {
    fuzzing::stream(data);
}

/// Record decoder: records that decode re-encode to their bytes.
pub fn records(data: &[u8]) {
    fuzzing::records(data);
}

/// Arbitrary bytes as a MACed frame's payload (plain and zstd).
pub fn authenticated_payload(data: &[u8]) {
    fuzzing::authenticated_payload(data);
}

/// The hello reader, in any chunking.
pub fn hello(data: &[u8]) {
    let _ = fuzzing::hello(data);
}

/// Arbitrary bytes as a MACed hello's body.
pub fn hello_body(data: &[u8]) {
    fuzzing::hello_body(data);
}

/// The prover's challenge-frame reader (commit mode), in any chunking.
pub fn challenges(data: &[u8]) {
    let _ = fuzzing::challenges(data);
}

/// Arbitrary bytes as a MACed challenge frame's body.
pub fn challenge_body(data: &[u8]) {
    fuzzing::challenge_body(data);
}

/// The header of the audit target's streams: every call sampled, so that arbitrary
/// ledger records reach the schedule, the plan bound and the recomputation.
pub fn audit_header() -> StreamHeader {
    let mut h = fuzzing::seed_header();
    h.config = SamplingConfig {
        call_ppm: 1_000_000,
        ..SamplingConfig::default()
    };
    h
}

/// A stream of [`audit_header`] whose one frame carries `payload` (records as they are
/// encoded in a frame), correctly MACed.
pub fn audit_stream(payload: &[u8]) -> Vec<u8> {
    let (mut w, mut bytes) = StreamWriter::new(&fuzzing::key(), &audit_header());
    bytes.extend_from_slice(&w.seal_unchecked(CODEC_NONE, payload.len() as u32, payload));
    bytes
}

/// The whole audit (`check`'s code path) on `data` as the records of an authenticated
/// frame. Panics if the report's counts contradict each other.
pub fn audit(data: &[u8]) {
    let bytes = audit_stream(data);
    let report = audit_reader_with(
        "fuzz",
        &bytes[..],
        &fuzzing::key(),
        20,
        &Policy::default(),
        None,
        |_| {},
    )
    .expect("a stream with a valid header is always audited");
    assert_consistent(&report);
    // With two threads frames are decoded ahead of the audit on other threads: the
    // report must be the same.
    let parallel = audit_reader_threads(
        "fuzz",
        &bytes[..],
        &fuzzing::key(),
        (20, 2),
        &Policy::default(),
        None,
        |_| {},
    )
    .expect("a stream with a valid header is always audited");
    assert_eq!(
        parallel.to_json().to_string(),
        report.to_json().to_string(),
        "one thread and two disagree"
    );
}

/// Panics if the report's counts contradict each other.
fn assert_consistent(report: &StreamReport) {
    assert!(report.sampled <= report.calls, "{}", report.to_text());
    assert!(
        report.verified + report.mismatched <= report.sampled,
        "{}",
        report.to_text()
    );
    assert!(!report.passed() || report.ended, "{}", report.to_text());
}

/// The verifier's challenge key of the `commit_audit` target: a fixed key of its own
/// (the audit key's challenge subkey, which the prover could derive, is refused).
pub fn commit_challenge_key() -> Hash {
    Key::from_bytes(*b"mmaudit fuzzing challenge key..!").challenge_key()
}

/// The header of the `commit_audit` target's streams: commit mode, a nonce issued with
/// [`commit_challenge_key`], and every committed call challenged, with every row and
/// batch entry and at least 2 columns in its plan. An opening then carries several
/// vectors and paths per operand, and a plan depends on the commitment only through its
/// columns: a mutated call or small data, committed anew ([`fill_commitments`]), often
/// keeps the plan its opening was made for and reaches the arithmetic.
pub fn commit_header() -> StreamHeader {
    let mut h = fuzzing::seed_header();
    h.schedule = ScheduleVersion::Commit;
    h.nonce = commit::issue_nonce(&commit_challenge_key(), *b"fuzzing!");
    h.config = SamplingConfig {
        call_ppm: 1_000_000,
        row_ppm: 1_000_000,
        batch_ppm: 1_000_000,
        min_cols: 2,
        ..SamplingConfig::default()
    };
    h
}

/// A stream of [`commit_header`] whose one frame carries `payload`, correctly MACed.
pub fn commit_stream(payload: &[u8]) -> Vec<u8> {
    let (mut w, mut bytes) = StreamWriter::new(&fuzzing::key(), &commit_header());
    bytes.extend_from_slice(&w.seal_unchecked(CODEC_NONE, payload.len() as u32, payload));
    bytes
}

/// The report of the commit-mode audit (`check --challenge-key`'s code path) of `data` as
/// the records of an authenticated frame of [`commit_stream`].
pub fn commit_audit_report(data: &[u8]) -> StreamReport {
    let audit = StreamAudit::new("fuzz", &fuzzing::key(), 20)
        .with_policy(Policy::default())
        .with_threads(default_threads())
        .with_challenge_key(commit_challenge_key());
    audit_reader_into(audit, &commit_stream(data)[..], &fuzzing::key(), |_| {})
        .expect("a stream with a valid header is always audited")
}

/// The whole commit-mode audit on `data` as the records of an authenticated frame, with
/// placeholder commitments filled in ([`fill_commitments`]). Panics if the report's
/// counts contradict each other.
pub fn commit_audit(data: &[u8]) {
    assert_consistent(&commit_audit_report(&fill_commitments(data)));
}

/// `data` (a frame's payload) with every all-zero commitment (a placeholder: no prover
/// finds a call whose commitment is zero) replaced by the commitment that the call's
/// last ledger record before it and its first opening after it bind; unchanged when the
/// payload does not decode to records. A mutated opening or ledger record of a seed
/// whose commitments are placeholders still matches its commitment (as it would for a
/// prover that committed to the mutated data), so mutations reach the checks behind the
/// commitment: the plan's sizes, the audit paths, the small data and the arithmetic.
pub fn fill_commitments(data: &[u8]) -> Vec<u8> {
    let mut r = Reader::new(data, 0, "fuzz");
    let mut records = Vec::new();
    while !r.is_empty() {
        match Record::decode(&mut r) {
            Ok(record) => records.push(record),
            Err(_) => return data.to_vec(),
        }
    }
    let mut calls = BTreeMap::new();
    let mut filled = false;
    for i in 0..records.len() {
        let fill = match &records[i] {
            Record::Ledger(call) => {
                calls.insert(call.index, call.clone());
                None
            }
            Record::Commitment(c) if c.commitment == [0; 32] => {
                let opening = records[i + 1..].iter().find_map(|r| match r {
                    Record::Opening(o) if o.index == c.index => Some(o),
                    _ => None,
                });
                calls
                    .get(&c.index)
                    .zip(opening)
                    .map(|(call, o)| Commitment {
                        index: c.index,
                        commitment: commit::call_commitment(call, &o.binding()),
                    })
            }
            _ => None,
        };
        if let Some(c) = fill {
            records[i] = Record::Commitment(c);
            filled = true;
        }
    }
    if filled {
        payload(&records)
    } else {
        data.to_vec()
    }
}

/// What an honest prover keeps of one committed call: its vectors (op(A) rows, op(B)
/// columns, C and D columns, `[batch][vector]`, encoded) and its small data.
struct Committed {
    call: GemmCall,
    a: CommittedVectors,
    b: CommittedVectors,
    c: CommittedVectors,
    d: CommittedVectors,
    small: SmallData,
}

/// Device-side alpha and beta of the seed calls that have them.
const DEVICE_ALPHA: f64 = 2.0;
const DEVICE_BETA: f64 = 0.25;

impl Committed {
    /// `call` computed honestly on small integer operands (C a multiple of 4), so that
    /// every product and sum is exact in every type the seeds use. The epilogue is the
    /// identity or ReLU (the seeds use no other).
    fn honest(call: GemmCall) -> Committed {
        let (m, n, k, batch) = (
            call.m as usize,
            call.n as usize,
            call.k as usize,
            call.batch as usize,
        );
        let mut counter = call.index * 1000;
        let mut value = move || {
            counter += 1;
            ((counter * 5 + 1) % 7) as f64 - 3.0
        };
        let mut draw = |vectors: usize, len: usize, times: f64| -> Vec<Vec<f64>> {
            (0..vectors)
                .map(|_| (0..len).map(|_| times * value()).collect())
                .collect()
        };
        let a = draw(batch * m, k, 1.0);
        let b = draw(batch * n, k, 1.0);
        let c = if call.reads_c() {
            draw(batch * n, m, 4.0)
        } else {
            Vec::new()
        };
        let bias_vectors = if call.has(flags::BIAS_PER_BATCH) {
            batch
        } else {
            1
        };
        let bias: Vec<f64> = if call.has(flags::BIAS) {
            draw(bias_vectors, m, 1.0).concat()
        } else {
            Vec::new()
        };
        let device = |s: Scalar, v: f64| matches!(s, Scalar::Device).then_some(v);
        let value_of = |s: Scalar, v: f64| match s {
            Scalar::Host(h) => h,
            Scalar::Device => v,
        };
        let (alpha, beta) = (
            value_of(call.alpha, DEVICE_ALPHA),
            value_of(call.beta, DEVICE_BETA),
        );
        let mut d = vec![vec![0.0; m]; batch * n];
        for bi in 0..batch {
            for col in 0..n {
                for row in 0..m {
                    let dot: f64 = a[bi * m + row]
                        .iter()
                        .zip(&b[bi * n + col])
                        .map(|(x, y)| x * y)
                        .sum();
                    let pre = alpha * dot
                        + beta * c.get(bi * n + col).map_or(0.0, |v| v[row])
                        + bias
                            .get((bi % bias_vectors) * m + row)
                            .copied()
                            .unwrap_or(0.0);
                    let post = if call.epilogue == Epilogue::Relu {
                        pre.max(0.0)
                    } else {
                        pre
                    };
                    d[bi * n + col][row] = num::round_to(call.d.dtype, post);
                }
            }
        }
        let encode = |dtype, vectors: &[Vec<f64>]| -> CommittedVectors {
            let mut out = Vec::new();
            for v in vectors {
                num::encode_into(dtype, v, &mut out);
            }
            CommittedVectors::new(out, vectors.len()).expect("vectors of one width")
        };
        let mut bias_bytes = Vec::new();
        num::encode_into(call.bias_type, &bias, &mut bias_bytes);
        Committed {
            a: encode(call.a.dtype, &a),
            b: encode(call.b.dtype, &b),
            c: encode(call.c.dtype, &c),
            d: encode(call.d.dtype, &d),
            small: SmallData {
                alpha: device(call.alpha, DEVICE_ALPHA),
                beta: device(call.beta, DEVICE_BETA),
                bias: bias_bytes,
                ..SmallData::default()
            },
            call,
        }
    }

    fn commitment(&self) -> Hash {
        let binding = CallBinding {
            a: Side::Inline(self.a.root()),
            b: Side::Inline(self.b.root()),
            c: self.c.root(),
            d: self.d.root(),
            small: self.small.hash(),
        };
        commit::call_commitment(&self.call, &binding)
    }

    /// The opening of the call challenged with `plan`.
    fn open(&self, plan: &Plan) -> Opening {
        let open = |vectors: &CommittedVectors, per: u64, picks: &[u64]| {
            vectors.open(per, &plan.batches, picks)
        };
        let call = &self.call;
        Opening {
            index: call.index,
            a: OpenedSide::Inline(open(&self.a, call.m, &plan.rows)),
            b: OpenedSide::Inline(open(&self.b, call.n, &plan.cols)),
            c: open(&self.c, call.n, &plan.cols),
            d: open(&self.d, call.n, &plan.cols),
            small: self.small.clone(),
        }
    }
}

/// The calls of the commit-mode seeds: the fuzzing seed call (f16, a strided batch of 2,
/// op(A) transposed, device beta, in place, bias and ReLU); a single f32 call with beta
/// zero (C neither read nor opened) and odd dimensions; a bf16 strided batch of 3 with
/// device alpha and beta and a bias per batch entry.
pub fn commit_seed_calls() -> Vec<GemmCall> {
    let f32_op = |ld| Operand {
        dtype: DType::F32,
        order: Order::Col,
        ld,
        batch_stride: 0,
    };
    let plain = GemmCall {
        index: 1,
        entry: EntryPoint::GemmEx,
        device: 0,
        stream: 7,
        op_a: Op::N,
        op_b: Op::N,
        m: 5,
        n: 3,
        k: 4,
        batch: 1,
        batch_form: BatchForm::Single,
        a: f32_op(5),
        b: f32_op(4),
        c: f32_op(5),
        d: f32_op(5),
        compute: ComputeType::F32,
        scale_type: DType::F32,
        alpha: Scalar::Host(1.0),
        beta: Scalar::Host(0.0),
        epilogue: Epilogue::Default,
        bias_type: DType::F32,
        flags: 0,
        replay: None,
    };
    let bf16_op = |ld, stride| Operand {
        dtype: DType::BF16,
        order: Order::Col,
        ld,
        batch_stride: stride,
    };
    let batched = GemmCall {
        index: 2,
        entry: EntryPoint::GemmStridedBatchedEx,
        m: 6,
        n: 2,
        k: 3,
        batch: 3,
        batch_form: BatchForm::Strided,
        a: bf16_op(6, 18),
        b: bf16_op(3, 6),
        c: bf16_op(6, 12),
        d: bf16_op(6, 12),
        alpha: Scalar::Device,
        beta: Scalar::Device,
        epilogue: Epilogue::Default,
        bias_type: DType::BF16,
        flags: flags::BIAS | flags::BIAS_PER_BATCH,
        ..plain.clone()
    };
    vec![fuzzing::seed_call(0), plain, batched]
}

/// The records of an honest commit-mode stream of [`commit_seed_calls`]: each call's
/// ledger record, its commitment and the opening of the plan that
/// [`commit_challenge_key`] gives it, then the End record.
pub fn commit_seed_records() -> Vec<Record> {
    let h = commit_header();
    let challenger = Challenger::new(commit_challenge_key(), h.nonce, h.config);
    let mut records = Vec::new();
    let mut opened = 0;
    for call in commit_seed_calls() {
        let kept = Committed::honest(call.clone());
        let commitment = kept.commitment();
        records.push(Record::Ledger(call.clone()));
        records.push(Record::Commitment(Commitment {
            index: call.index,
            commitment,
        }));
        if let Some(plan) = challenger.challenge(&call, &commitment) {
            records.push(Record::Opening(Box::new(kept.open(&plan))));
            opened += 1;
        }
    }
    let calls = commit_seed_calls().len() as u64;
    records.push(Record::End(End {
        calls,
        samples: opened,
        gap_calls: 0,
    }));
    records
}

/// The honest records with what a failing prover sends instead: call 0 withdrawn before
/// its challenge ("not committed" gap), call 1 opened with one byte of D changed after
/// committing, call 2's challenge refused ("not retained" gap), a notice, and an End
/// record that counts them.
pub fn commit_seed_failing_records() -> Vec<Record> {
    let mut records = Vec::new();
    for r in commit_seed_records() {
        match r {
            Record::Commitment(c) if c.index == 0 => records.push(Record::Gap(Gap {
                indices: vec![0],
                reason: GapReason::NotCommitted,
                detail: "withdrawn".into(),
            })),
            Record::Opening(o) if o.index == 0 => {}
            Record::Opening(mut o) if o.index == 1 => {
                o.d.vectors[0] ^= 0x40;
                records.push(Record::Opening(o));
            }
            Record::Opening(o) if o.index == 2 => records.push(Record::Gap(Gap {
                indices: vec![2],
                reason: GapReason::NotRetained,
                detail: "refused".into(),
            })),
            Record::End(_) => {
                records.push(Record::Notice(Notice {
                    kind: NoticeKind::Warning,
                    message: "seed".into(),
                }));
                records.push(Record::End(End {
                    calls: 3,
                    samples: 1,
                    gap_calls: 2,
                }));
            }
            r => records.push(r),
        }
    }
    records
}

fn payload(records: &[Record]) -> Vec<u8> {
    records.iter().flat_map(Record::to_bytes).collect()
}

/// The built-in seeds of a target, as (file name, bytes): valid inputs, and the inputs
/// of bugs found before (regressions).
pub fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let frames = fuzzing::seed_frames();
    let all: Vec<Record> = frames.iter().flatten().cloned().collect();
    let named = |v: Vec<(&str, Vec<u8>)>| -> Vec<(String, Vec<u8>)> {
        v.into_iter().map(|(n, b)| (n.to_string(), b)).collect()
    };
    match target {
        "stream" => {
            let plain = fuzzing::seed_stream_with(Default::default());
            named(vec![
                ("seed-whole", [&[0u8][..], &plain].concat()),
                (
                    "seed-chunked-7-1-300",
                    [&[3u8, 7, 1, 255][..], &plain].concat(),
                ),
            ])
        }
        "records" => named(vec![
            ("seed-frames", payload(&all)),
            ("seed-commit", payload(&commit_seed_records())),
        ]),
        "authenticated_payload" => named(vec![
            ("seed-frames-plain", [&[1u8][..], &payload(&all)].concat()),
            ("seed-frames-zstd", [&[0u8][..], &payload(&all)].concat()),
            (
                "seed-commit-plain",
                [&[1u8][..], &payload(&commit_seed_records())].concat(),
            ),
        ]),
        "hello" => named(vec![(
            "seed-hello",
            [&[0u8][..], &fuzzing::seed_hello_bytes()].concat(),
        )]),
        "challenges" => {
            let frames = fuzzing::seed_challenge_frames().concat();
            named(vec![
                ("seed-frames-whole", [&[0u8][..], &frames].concat()),
                (
                    "seed-frames-chunked-7-1-300",
                    [&[3u8, 7, 1, 255][..], &frames].concat(),
                ),
            ])
        }
        "challenge_body" => {
            // The bodies (after `len`, before the MAC) of the seed frames.
            let bodies: Vec<Vec<u8>> = fuzzing::seed_challenge_frames()
                .iter()
                .map(|f| f.get(4..f.len() - 32).unwrap_or_default().to_vec())
                .collect();
            named(vec![
                ("seed-body-empty", bodies[0].clone()),
                ("seed-body-two-challenges", bodies[1].clone()),
            ])
        }
        "commit_audit" => {
            // A bound: a committed call claiming m = 2^36, whose plan (every row) would
            // hold 2^36 indices ("unreasonable dimensions").
            let mut huge: GemmCall = fuzzing::seed_call(0);
            huge.m = 1 << 36;
            huge.c.ld = 1 << 36;
            huge.d.ld = 1 << 36;
            let huge = vec![
                Record::Ledger(huge),
                Record::Commitment(Commitment {
                    index: 0,
                    commitment: [7; 32],
                }),
            ];
            let placeholders: Vec<Record> = commit_seed_records()
                .into_iter()
                .map(|r| match r {
                    Record::Commitment(c) => Record::Commitment(Commitment {
                        commitment: [0; 32],
                        ..c
                    }),
                    r => r,
                })
                .collect();
            named(vec![
                ("seed-honest", payload(&commit_seed_records())),
                ("seed-honest-placeholders", payload(&placeholders)),
                ("seed-failing", payload(&commit_seed_failing_records())),
                ("seed-huge-m", payload(&huge)),
            ])
        }
        "hello_body" => {
            let h = fuzzing::seed_hello_bytes();
            let body = h
                .get(mmaudit_protocol::handshake::HELLO_FIXED_LEN..h.len() - 32)
                .unwrap_or_default()
                .to_vec();
            named(vec![("seed-hello-body", body)])
        }
        "audit" => {
            let mut end = all.clone();
            let calls = all
                .iter()
                .filter(|r| matches!(r, Record::Ledger(_)))
                .count() as u64;
            end.push(Record::End(End {
                calls,
                samples: all
                    .iter()
                    .filter(|r| matches!(r, Record::Sample(_)))
                    .count() as u64,
                gap_calls: 0,
            }));
            // Regression: a ledger record claiming m = 2^36 made the plan of its
            // sampled rows take minutes and gigabytes (now "unreasonable dimensions").
            let mut huge: GemmCall = fuzzing::seed_call(0);
            huge.m = 1 << 36;
            huge.c.ld = 1 << 36;
            huge.d.ld = 1 << 36;
            // Regression: sampled calls whose samples never come were kept pending
            // without bound (now capped); 300 of them, each sampled.
            let pending: Vec<Record> = (0..300)
                .map(|i| {
                    let mut c = fuzzing::seed_call(i);
                    c.flags &= !flags::CAPTURED;
                    Record::Ledger(c)
                })
                .collect();
            named(vec![
                ("seed-frames", payload(&all)),
                ("seed-frames-end", payload(&end)),
                ("regression-huge-m", payload(&[Record::Ledger(huge)])),
                ("regression-pending-300", payload(&pending)),
            ])
        }
        _ => Vec::new(),
    }
}

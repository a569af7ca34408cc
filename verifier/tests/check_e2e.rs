//! End-to-end tests of `check`: captures made by the reference prover, honest and
//! tampered, go through the stream decoder, the audit and the recomputation.

use mmaudit_protocol::call::{ComputeType, DType, Epilogue};
use mmaudit_protocol::config::SamplingConfig;
use mmaudit_protocol::keys::Key;
use mmaudit_protocol::num;
use mmaudit_protocol::record::{End, OperandData, Record, Sample};
use mmaudit_protocol::schedule::ScheduleVersion;
use mmaudit_tests::refprover::{frame_capture, GemmSpec, RefProver};
use mmaudit_verify::check::{audit_reader, NotChecked};
use mmaudit_verify::policy::{Policy, Unaudited};
use mmaudit_verify::recompute::{check_entry, Entry, Scalars};
use mmaudit_verify::report::{FailureKind, StreamReport};

fn key() -> Key {
    Key::from_bytes([0x42; 32])
}

/// These tests judge the arithmetic and the stream's integrity: no sampling floor and
/// no coverage limits but the gap limit (tests/policy.rs covers the policy).
fn arithmetic_policy() -> Policy {
    let mut p = Policy::lenient();
    p.set_limit(Unaudited::Gaps, 0.01);
    p
}

fn audit(bytes: &[u8]) -> StreamReport {
    audit_with(bytes, &key())
}

fn audit_with(bytes: &[u8], key: &Key) -> StreamReport {
    match audit_reader("test", bytes, key, 100, &arithmetic_policy(), |_| {}) {
        Ok(r) => r,
        Err(NotChecked::Io(e)) => panic!("io: {e}"),
        Err(NotChecked::NotACapture(e)) => panic!("not a capture: {e}"),
    }
}

fn all_sampled() -> SamplingConfig {
    SamplingConfig {
        call_ppm: 1_000_000,
        ..SamplingConfig::default()
    }
}

/// Every row and column checked: many entries per call.
fn dense() -> SamplingConfig {
    SamplingConfig {
        call_ppm: 1_000_000,
        row_ppm: 1_000_000,
        col_ppm: 1_000_000,
        batch_ppm: 1_000_000,
        ..SamplingConfig::default()
    }
}

/// The honest workload of one type combination: shapes with k from 1 to the largest k
/// the tolerance model can bound for it (16384 for 32-bit accumulation), every
/// epilogue, beta 0 / 1 / device-side, alpha host / device, bias (shared or one vector per
/// batch entry), fp8 scales.
fn workload(p: &mut RefProver, input: DType, output: DType, compute: ComputeType, target: u64) {
    let start = p.entries;
    let big_k = match compute {
        ComputeType::F16 => 256,
        _ if matches!(input, DType::F8E4M3 | DType::F8E5M2) => 2048,
        _ => 16384,
    };
    let ks: Vec<u64> = [1u64, 7, 64, 256, 333, 1024]
        .into_iter()
        .filter(|&k| k <= big_k)
        .collect();
    let integer = output == DType::I32;
    for _ in 0..3 {
        let mut spec = GemmSpec::new(8, 8, big_k, input, output, compute);
        spec.bias = !integer;
        p.gemm(&spec);
    }
    let mut i = 0u64;
    while p.entries - start < target {
        let k = ks[(i as usize) % ks.len()];
        let mut spec = GemmSpec::new(24 + i % 9, 16 + i % 5, k, input, output, compute);
        if integer {
            spec.beta = Some((i % 2) as f64);
            spec.alpha = Some(if i.is_multiple_of(2) { 1.0 } else { 3.0 });
        } else {
            spec.epilogue = [
                Epilogue::Default,
                Epilogue::Relu,
                Epilogue::GeluTanh,
                Epilogue::GeluErf,
            ][(i % 4) as usize];
            // a bias on every third call and, batched (i % 4 == 1 meets every batch
            // count), one bias vector per batch entry (BIAS_PER_BATCH) on odd calls
            spec.bias = i.is_multiple_of(3) || i % 4 == 1;
            spec.bias_per_batch = !i.is_multiple_of(2);
            spec.beta = [Some(0.0), Some(1.0), None][(i % 3) as usize];
            spec.alpha = if i.is_multiple_of(5) {
                None
            } else {
                Some(0.75)
            };
            spec.scales = matches!(input, DType::F8E4M3 | DType::F8E5M2) && i.is_multiple_of(2);
        }
        spec.batch = 1 + i % 3;
        p.gemm(&spec);
        i += 1;
    }
}

fn assert_pass(r: &StreamReport) {
    assert!(r.passed(), "{}", r.to_text());
    assert_eq!(r.mismatched + r.missing + r.integrity_errors, 0);
}

#[test]
fn honest_captures_pass_for_every_type_with_no_false_alarm() {
    let cases = [
        (DType::F32, DType::F32, ComputeType::F32),
        (DType::F32, DType::F32, ComputeType::F32FastTf32),
        (DType::F16, DType::F16, ComputeType::F32),
        (DType::F16, DType::F16, ComputeType::F16),
        (DType::BF16, DType::BF16, ComputeType::F32),
        (DType::F8E4M3, DType::BF16, ComputeType::F32),
        (DType::F8E5M2, DType::F32, ComputeType::F32),
        (DType::F8E4M3, DType::F8E4M3, ComputeType::F32),
        (DType::I8, DType::I32, ComputeType::I32),
    ];
    for (n, (input, output, compute)) in cases.into_iter().enumerate() {
        let mut p = RefProver::new(&key(), dense(), n as u64);
        workload(&mut p, input, output, compute, 100_000);
        let r = audit(&p.finish(8).bytes());
        assert_pass(&r);
        assert!(
            r.entries_checked >= 100_000,
            "{input:?}: {}",
            r.entries_checked
        );
        assert_eq!(r.entries_checked, p.entries);
        assert_eq!(r.verified + r.unverifiable, r.sampled);
        println!(
            "{:>5} {:?} -> {:>5}: {} entries in {} calls, worst error/tolerance {:.3}",
            input.name(),
            compute,
            output.name(),
            r.entries_checked,
            r.calls,
            r.worst_tolerance_ratio
        );
    }
}

fn small_capture() -> RefProver {
    let mut p = RefProver::new(&key(), all_sampled(), 7);
    for i in 0..12 {
        let mut spec = GemmSpec::new(64, 32, 128 + i, DType::BF16, DType::BF16, ComputeType::F32);
        spec.beta = Some((i % 2) as f64);
        p.gemm(&spec);
    }
    p
}

fn first_sample(p: &mut RefProver) -> &mut Sample {
    p.records
        .iter_mut()
        .find_map(|r| match r {
            Record::Sample(s) => Some(s),
            _ => None,
        })
        .expect("a sampled call")
}

fn kinds(r: &StreamReport) -> Vec<FailureKind> {
    r.failures.iter().map(|f| f.kind).collect()
}

/// A capture of one f32 GEMM whose first result entry is moved to
/// `reference + factor * tolerance` (as the verifier computes both), on the f32 grid.
fn shifted_entry(factor: f64) -> StreamReport {
    let mut p = RefProver::new(&key(), all_sampled(), 11);
    p.gemm(&GemmSpec::new(
        16,
        8,
        512,
        DType::F32,
        DType::F32,
        ComputeType::F32,
    ));
    assert_pass(&audit(&p.finish(4).bytes()));
    let call = match &p.records[0] {
        Record::Ledger(c) => c.clone(),
        other => panic!("{other:?}"),
    };
    let k = call.k as usize;
    let s = first_sample(&mut p);
    let a = num::decode(DType::F32, s.a_rows.inline().unwrap()).unwrap();
    let b = num::decode(DType::F32, s.b_cols.inline().unwrap()).unwrap();
    let mut d = num::decode(DType::F32, &s.d_out).unwrap();
    let entry = Entry {
        a_row: &a[..k],
        b_col: &b[..k],
        c_in: 0.0,
        bias: None,
        claimed: d[0],
    };
    let check = check_entry(&call, &Scalars::UNIT, &entry).unwrap();
    let target = check.reference + factor * check.tolerance;
    let mut v = target as f32;
    // one f32 step further out when rounding landed back inside the tolerance
    if factor > 1.0 && (v as f64 - check.reference).abs() <= check.tolerance {
        v = f32::from_bits(v.to_bits() + 1);
    }
    d[0] = v as f64;
    s.d_out.clear();
    num::encode_into(DType::F32, &d, &mut s.d_out);
    audit(&p.finish(4).bytes())
}

#[test]
fn result_entry_just_beyond_tolerance_fails_and_just_inside_fails_only_as_imprecise() {
    let outside = shifted_entry(1.0001);
    assert_eq!(outside.mismatched, 1, "{}", outside.to_text());
    assert_eq!(kinds(&outside), vec![FailureKind::Mismatch]);
    assert!(outside.failures[0].message.contains("row"));
    // Inside the worst-case tolerance, but far beyond what an honest f32 GEMM summing
    // k in order can be off by: lower precision than declared.
    let inside = shifted_entry(0.98);
    assert_eq!(inside.mismatched, 1, "{}", inside.to_text());
    assert_eq!(kinds(&inside), vec![FailureKind::Precision]);
    assert!(inside.worst_tolerance_ratio < 1.0 && inside.worst_precision_ratio > 1.0);
    // Not moved: passes.
    assert_pass(&shifted_entry(0.0));
}

#[test]
fn result_entry_changed_by_a_large_amount_fails() {
    let mut p = small_capture();
    let s = first_sample(&mut p);
    let mut d = num::decode(DType::BF16, &s.d_out).unwrap();
    d[0] += 100.0;
    s.d_out.clear();
    num::encode_into(DType::BF16, &d, &mut s.d_out);
    let r = audit(&p.finish(4).bytes());
    assert!(!r.passed());
    assert_eq!(r.mismatched, 1);
    assert_eq!(kinds(&r), vec![FailureKind::Mismatch]);
    let call = r.failures[0].call.as_deref().unwrap();
    assert!(call.starts_with("call 0 "), "{call}");
}

#[test]
fn a_changed_operand_row_entry_fails() {
    let mut p = small_capture();
    let s = first_sample(&mut p);
    let OperandData::Inline(a) = &mut s.a_rows else {
        panic!("the reference prover sends operands inline");
    };
    let mut v = num::decode(DType::BF16, a).unwrap();
    v[5] = if v[5] == 0.0 { 1.0 } else { -4.0 * v[5] };
    a.clear();
    num::encode_into(DType::BF16, &v, a);
    let r = audit(&p.finish(4).bytes());
    assert!(!r.passed());
    assert!(r.mismatched >= 1);
    assert_eq!(r.failures[0].kind, FailureKind::Mismatch);
}

#[test]
fn a_removed_sample_record_is_missing() {
    let mut p = small_capture();
    let at = p
        .records
        .iter()
        .position(|r| matches!(r, Record::Sample(_)))
        .unwrap();
    p.records.remove(at);
    let r = audit(&p.finish(4).bytes());
    assert!(!r.passed());
    assert_eq!(
        (r.missing, r.mismatched, r.integrity_errors),
        (1, 0, 0),
        "{}",
        r.to_text()
    );
    assert_eq!(kinds(&r), vec![FailureKind::Missing]);
}

#[test]
fn a_removed_ledger_record_is_an_integrity_error() {
    let mut p = small_capture();
    let at = p
        .records
        .iter()
        .position(|r| matches!(r, Record::Ledger(c) if c.index == 5))
        .unwrap();
    p.records.remove(at);
    let r = audit(&p.finish(4).bytes());
    assert!(!r.passed());
    assert!(r.integrity_errors >= 1, "{}", r.to_text());
}

#[test]
fn gaps_within_policy_pass_and_above_fail() {
    let mut p = RefProver::new(&key(), all_sampled(), 3);
    let spec = GemmSpec::new(16, 16, 16, DType::F16, DType::F16, ComputeType::F32);
    for _ in 0..200 {
        p.gemm(&spec);
    }
    p.gemm_dropped(&spec); // 1 of 201 sampled calls: 0.5%
    let r = audit(&p.finish(16).bytes());
    assert_pass(&r);
    assert_eq!(r.gaps, 1);
    for _ in 0..5 {
        p.gemm_dropped(&spec); // 6 of 206: 2.9%
    }
    let r = audit(&p.finish(16).bytes());
    assert!(!r.passed());
    assert_eq!(r.gaps, 6);
    assert_eq!(kinds(&r), vec![FailureKind::GapRate]);
}

#[test]
fn replays_not_audited_are_reported_and_capture_records_claim_no_work() {
    use mmaudit_protocol::call::flags;
    // A replayed call the library could not gather: in the ledger, NOT audited.
    let mut p = small_capture();
    let mut spec = GemmSpec::new(8, 8, 8, DType::F32, DType::F32, ComputeType::F32);
    spec.captured = true;
    p.gemm(&spec);
    let r = audit(&p.finish(4).bytes());
    assert_pass(&r);
    assert_eq!((r.captured, r.replayed, r.calls), (1, 1, 13));
    assert!(r.to_text().contains("NOT audited"));
    // A capture record (CAPTURED alone): no FLOPs, no coverage hole, never sampled.
    let mut p = small_capture();
    let mut spec = GemmSpec::new(64, 64, 64, DType::F32, DType::F32, ComputeType::F32);
    spec.not_audited = flags::CAPTURED;
    let before = audit(&small_capture().finish(4).bytes()).flops;
    p.gemm(&spec);
    let r = audit(&p.finish(4).bytes());
    assert_pass(&r);
    assert_eq!((r.captured, r.capture_records, r.calls), (0, 1, 13));
    assert_eq!(r.flops, before);
}

#[test]
fn no_session_rejected_and_unmodelled_calls_are_counted_not_sampled() {
    use mmaudit_protocol::call::flags;
    let mut p = small_capture();
    let mut spec = GemmSpec::new(8, 8, 8, DType::F32, DType::F32, ComputeType::F32);
    spec.captured = true; // ledger only; the flag is replaced below
    for flag in [
        flags::NO_SESSION,
        flags::NO_SESSION,
        flags::REJECTED,
        flags::UNMODELLED,
    ] {
        p.gemm(&spec);
        let Some(Record::Ledger(call)) = p.records.last_mut() else {
            panic!("a ledger record")
        };
        call.flags = flag;
        call.replay = None;
    }
    let r = audit(&p.finish(4).bytes());
    assert_pass(&r);
    assert_eq!(
        (r.no_session, r.rejected, r.unmodelled, r.captured, r.calls),
        (2, 1, 1, 0, 16)
    );
    let text = r.to_text();
    assert!(
        text.contains("no verifier session: recorded, NOT audited"),
        "{text}"
    );
    let json = r.to_json();
    assert_eq!(json["no_session_not_audited"], 2);
    assert_eq!(json["rejected"], 1);
    assert_eq!(json["unmodelled_not_audited"], 1);
}

#[test]
fn frame_removed_duplicated_reordered_or_truncated_fails() {
    let c = small_capture().finish(2);
    assert!(c.frames.len() >= 4);
    assert_pass(&audit(&c.bytes()));

    let mut removed = c.clone();
    removed.frames.remove(1);
    let mut duplicated = c.clone();
    duplicated.frames.insert(1, c.frames[1].clone());
    let mut reordered = c.clone();
    reordered.frames.swap(1, 2);
    let mut end_removed = c.clone();
    end_removed.frames.pop();
    for (name, bad) in [
        ("removed", removed),
        ("duplicated", duplicated),
        ("reordered", reordered),
        ("end removed", end_removed),
    ] {
        let r = audit(&bad.bytes());
        assert!(!r.passed(), "{name}");
        assert!(r.integrity_errors >= 1, "{name}: {}", r.to_text());
    }
    let bytes = c.bytes();
    for cut in [
        c.header.len(),
        c.header.len() + 5,
        bytes.len() / 2,
        bytes.len() - 1,
    ] {
        let r = audit(&bytes[..cut]);
        assert!(!r.passed(), "cut at {cut}");
        assert!(r.integrity_errors >= 1);
    }
}

#[test]
fn every_single_byte_flip_fails() {
    let mut p = RefProver::new(&key(), all_sampled(), 5);
    p.gemm(&GemmSpec::new(
        4,
        4,
        8,
        DType::F16,
        DType::F16,
        ComputeType::F32,
    ));
    let bytes = p.finish(1).bytes();
    for i in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[i] ^= 0x01;
        match audit_reader("flip", &bad[..], &key(), 10, &Policy::default(), |_| {}) {
            Ok(r) => assert!(!r.passed(), "flip at {i} passed"),
            Err(NotChecked::NotACapture(_)) => assert!(i < 10, "flip at {i}: not a capture"),
            Err(NotChecked::Io(e)) => panic!("{e}"),
        }
    }
}

#[test]
fn wrong_key_fails() {
    let c = small_capture().finish(4);
    let r = audit_with(&c.bytes(), &Key::from_bytes([0x43; 32]));
    assert!(!r.passed());
    assert!(
        r.failures[0].message.contains("key"),
        "{}",
        r.failures[0].message
    );
}

#[test]
fn a_capture_is_not_a_pass_unless_complete() {
    // Honest but without the end record: a truncated capture is a failure.
    let c = small_capture().finish_with(4, false);
    let r = audit(&c.bytes());
    assert!(!r.passed());
    assert!(r.integrity_errors >= 1);
}

/// Every sampled result of a capture recomputed from its own sampled operands in
/// per-channel e4m3 (a scale per op(A) row and per op(B) column), as a GPU serving fp8
/// in place of the declared bf16 would produce it; alpha 1, beta 0, no bias.
fn claim_fp8_rowscaled(p: &mut RefProver) {
    let quantize = |x: &[f64]| -> Vec<f64> {
        let amax = x.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let s = if amax == 0.0 { 1.0 } else { amax / 448.0 };
        x.iter()
            .map(|&v| num::round_to(DType::F8E4M3, v / s) * s)
            .collect()
    };
    for r in &mut p.records {
        let Record::Sample(s) = r else { continue };
        let (OperandData::Inline(a), OperandData::Inline(b)) = (&s.a_rows, &s.b_cols) else {
            panic!("inline operands");
        };
        let a = num::decode(DType::BF16, a).unwrap();
        let b = num::decode(DType::BF16, b).unwrap();
        let d = num::decode(DType::BF16, &s.d_out).unwrap();
        let k = 4096;
        let (rows, cols) = (a.len() / k, b.len() / k);
        assert_eq!(d.len(), rows * cols);
        let mut claimed = Vec::new();
        for i in 0..rows {
            let qa = quantize(&a[i * k..][..k]);
            for j in 0..cols {
                let qb = quantize(&b[j * k..][..k]);
                let v: f64 = qa.iter().zip(&qb).map(|(x, y)| x * y).sum();
                claimed.push(num::round_to(DType::BF16, v));
            }
        }
        s.d_out.clear();
        num::encode_into(DType::BF16, &claimed, &mut s.d_out);
    }
}

#[test]
fn fp8_arithmetic_in_place_of_bf16_fails_as_lower_precision() {
    // Llama-3-8B-like projections (k = 4096) at the default rates: fp8 results are
    // within the worst-case tolerance for most entries, not within what an honest
    // bf16 GEMM summing k in order can produce.
    let capture = |cheat: bool| {
        let mut p = RefProver::new(&key(), SamplingConfig::default(), 21);
        for _ in 0..40 {
            let mut spec = GemmSpec::new(512, 64, 4096, DType::BF16, DType::BF16, ComputeType::F32);
            spec.alpha = Some(1.0);
            spec.beta = Some(0.0);
            p.gemm(&spec);
        }
        if cheat {
            claim_fp8_rowscaled(&mut p);
        }
        audit(&p.finish(4).bytes())
    };
    let honest = capture(false);
    assert_pass(&honest);
    assert!(honest.sampled >= 1, "{}", honest.to_text());
    assert!(honest.worst_precision_ratio < 1.0);
    let cheat = capture(true);
    assert!(!cheat.passed(), "{}", cheat.to_text());
    assert_eq!(cheat.mismatched, cheat.sampled, "{}", cheat.to_text());
    assert!(
        kinds(&cheat).contains(&FailureKind::Precision),
        "{}",
        cheat.to_text()
    );
    assert!(cheat.worst_precision_ratio > 1.0);
}

#[test]
fn an_unreasonable_plan_fails_without_being_built() {
    // One sampled call with m = 2^36: its plan would hold 687 million row indices (the
    // verifier took minutes and gigabytes on 327 bytes). It fails at once instead.
    let mut p = RefProver::new(&key(), all_sampled(), 31);
    p.gemm(&GemmSpec::new(
        8,
        8,
        8,
        DType::F32,
        DType::F32,
        ComputeType::F32,
    ));
    p.records.retain(|r| !matches!(r, Record::Sample(_)));
    if let Some(Record::Ledger(c)) = p.records.last_mut() {
        c.m = 1 << 36;
        c.a.ld = 1 << 36;
        c.c.ld = 1 << 36;
        c.d.ld = 1 << 36;
    }
    let r = audit(&p.finish(4).bytes());
    assert!(!r.passed());
    assert_eq!(r.sampled, 1, "{}", r.to_text());
    assert!(
        r.failures
            .iter()
            .any(|f| f.message.contains("unreasonable dimensions")),
        "{}",
        r.to_text()
    );
    assert_eq!(r.missing, 0, "no plan was kept");
}

#[test]
fn sampled_calls_whose_data_never_comes_are_bounded() {
    // 300 000 sampled calls and not one sample: the pending set stops at its bound
    // (2^18 calls) with a failure instead of growing with the stream.
    let mut p = RefProver::new(&key(), all_sampled(), 32);
    let spec = GemmSpec::new(1, 1, 1, DType::F32, DType::F32, ComputeType::F32);
    for _ in 0..300_000 {
        p.gemm(&spec);
    }
    p.records.retain(|r| !matches!(r, Record::Sample(_)));
    let r = audit(&p.finish(4096).bytes());
    assert!(!r.passed());
    assert_eq!(r.sampled, 300_000);
    assert!(
        r.failures
            .iter()
            .any(|f| f.message.contains("await their data")),
        "{}",
        r.to_text()
    );
    assert_eq!(r.missing, 1 << 18, "{}", r.to_text());
}

#[test]
fn an_audit_disabled_notice_names_the_last_call_before_it() {
    use mmaudit_protocol::record::{Notice, NoticeKind};
    let mut p = RefProver::new(&key(), all_sampled(), 33);
    let spec = GemmSpec::new(4, 4, 4, DType::F32, DType::F32, ComputeType::F32);
    for _ in 0..3 {
        p.gemm(&spec);
    }
    p.records.push(Record::Notice(Notice {
        kind: NoticeKind::AuditDisabled,
        message: "test".into(),
    }));
    let r = audit(&p.finish(4).bytes());
    assert_eq!(kinds(&r), vec![FailureKind::Disabled]);
    assert!(
        r.failures[0]
            .message
            .contains("stopped auditing after call 2: test"),
        "{}",
        r.to_text()
    );
}

#[test]
fn v1_and_v2_captures_check_and_a_relabelled_schedule_fails() {
    use mmaudit_protocol::schedule::ScheduleVersion;
    // Captures of both schedule versions check (v1: what earlier libraries wrote).
    let config = SamplingConfig {
        call_ppm: 300_000,
        ..SamplingConfig::default()
    };
    let run = |version: ScheduleVersion| {
        let mut p = RefProver::new(&key(), config, 11).with_schedule(version);
        workload(&mut p, DType::BF16, DType::BF16, ComputeType::F32, 20_000);
        p
    };
    for version in [ScheduleVersion::V1, ScheduleVersion::V2] {
        let p = run(version);
        let r = audit(&p.finish(8).bytes());
        assert_pass(&r);
        assert!(r.sampled > 0 && r.sampled < r.calls, "{}", r.to_text());
        assert_eq!(r.header.as_ref().map(|h| h.schedule), Some(version));
    }
    // A prover that samples by v2 but labels its stream v1 (re-MACed with the key)
    // sends samples the v1 schedule did not ask for and misses those it did.
    let mut p = RefProver::new(&key(), config, 11)
        .with_schedule(ScheduleVersion::V2)
        .labelled(ScheduleVersion::V1);
    workload(&mut p, DType::BF16, DType::BF16, ComputeType::F32, 20_000);
    let capture = p.finish(8);
    let r = audit(&capture.bytes());
    assert!(!r.passed(), "{}", r.to_text());
    assert!(r.missing > 0, "{}", r.to_text());
}

#[test]
fn the_report_does_not_depend_on_the_number_of_threads() {
    use mmaudit_verify::check::audit_reader_threads;
    // Honest, with many wrong results (more failures than are shown), and cut short
    // in the middle of a frame: the report with 1 thread equals the one with 2, 3 and 8
    // (samples are checked in batches in parallel, outcomes applied in stream order).
    let mut honest = RefProver::new(&key(), all_sampled(), 5);
    workload(
        &mut honest,
        DType::BF16,
        DType::BF16,
        ComputeType::F32,
        60_000,
    );
    let mut wrong = RefProver::new(&key(), all_sampled(), 6);
    workload(&mut wrong, DType::F16, DType::F16, ComputeType::F32, 60_000);
    for (i, r) in wrong.records.iter_mut().enumerate() {
        if let Record::Sample(s) = r {
            if i % 3 == 0 && !s.d_out.is_empty() {
                s.d_out[0] ^= 0x40;
            }
        }
    }
    let cut = {
        let mut b = honest.finish(8).bytes();
        b.truncate(b.len() * 2 / 3);
        b
    };
    // With more than one thread frames are decoded on other threads, ahead of the audit:
    // each way a stream can stop must still stop the report where one thread stops it.
    let end = Record::End(End {
        calls: 1,
        samples: 0,
        gap_calls: 0,
    });
    let with_end_at = |at: usize| {
        let mut records = honest.records.clone();
        records.insert(at, end.clone());
        frame_capture(
            &key(),
            &honest.header(ScheduleVersion::V2),
            &records,
            8,
            None,
        )
        .bytes()
    };
    let after_end = |tail: &[u8]| {
        let mut b = honest.finish(8).bytes();
        b.extend_from_slice(tail);
        b
    };
    let last_frame_twice = {
        let c = honest.finish(8);
        let mut b = c.bytes();
        b.extend_from_slice(c.frames.last().unwrap());
        b
    };
    let bad_mac = {
        let c = honest.finish(8);
        let mut frames = c.frames.clone();
        let middle = frames.len() / 2;
        let f = &mut frames[middle];
        let at = f.len() / 2;
        f[at] ^= 1;
        let mut b = c.header.clone();
        frames.iter().for_each(|f| b.extend_from_slice(f));
        b
    };
    for (name, bytes) in [
        ("honest", honest.finish(8).bytes()),
        ("wrong", wrong.finish(8).bytes()),
        ("cut", cut),
        // valid frames after the one that holds the End record
        ("end then frames", with_end_at(7)),
        // a record after the End record in its frame
        ("record after end", with_end_at(3)),
        ("bytes after end", after_end(b"trailing")),
        ("frame after end", last_frame_twice),
        ("bad mac", bad_mac),
    ] {
        let report = |threads| {
            audit_reader_threads(
                name,
                &bytes[..],
                &key(),
                (10, threads),
                &arithmetic_policy(),
                None,
                |_| {},
            )
            .unwrap_or_else(|_| panic!("{name}: not checked"))
            .to_json()
            .to_string()
        };
        let one = report(1);
        for threads in [2, 3, 8] {
            assert_eq!(report(threads), one, "{name} with {threads} threads");
        }
        let v: serde_json::Value = serde_json::from_str(&one).unwrap();
        match name {
            "honest" => assert_eq!(v["verdict"], "pass", "{one}"),
            "wrong" => assert!(v["failures_not_shown"].as_u64() > Some(0), "{one}"),
            _ => {
                assert_eq!(v["verdict"], "fail", "{name}: {one}");
                assert!(v["integrity_errors"].as_u64() > Some(0), "{name}: {one}");
            }
        }
    }
}

//! The audit policy: a stream sampled below the verifier's floor, or with too large a
//! share of unaudited calls or FLOPs, fails whatever its results; within the policy,
//! the same streams pass. Each cheat has its honest counterpart here.

use mmaudit_protocol::call::{flags, ComputeType, DType};
use mmaudit_protocol::config::SamplingConfig;
use mmaudit_protocol::keys::Key;
use mmaudit_protocol::record::Record;
use mmaudit_tests::refprover::{GemmSpec, RefProver};
use mmaudit_verify::check::{audit_reader, NotChecked};
use mmaudit_verify::policy::{Policy, Unaudited};
use mmaudit_verify::report::{FailureKind, StreamReport};

fn key() -> Key {
    Key::from_bytes([0x24; 32])
}

fn audit(bytes: &[u8], policy: &Policy) -> StreamReport {
    match audit_reader("test", bytes, &key(), 100, policy, |_| {}) {
        Ok(r) => r,
        Err(NotChecked::Io(e)) => panic!("io: {e}"),
        Err(NotChecked::NotACapture(e)) => panic!("not a capture: {e}"),
    }
}

fn kinds(r: &StreamReport) -> Vec<FailureKind> {
    r.failures.iter().map(|f| f.kind).collect()
}

fn spec() -> GemmSpec {
    GemmSpec::new(64, 32, 256, DType::BF16, DType::BF16, ComputeType::F32)
}

/// `calls` honest GEMMs at `config`, the first `unaudited` of them flagged `flag`.
fn capture(config: SamplingConfig, calls: usize, unaudited: usize, flag: u16) -> Vec<u8> {
    let mut p = RefProver::new(&key(), config, 5);
    for i in 0..calls {
        let mut s = spec();
        s.not_audited = if i < unaudited { flag } else { 0 };
        p.gemm(&s);
    }
    p.finish(8).bytes()
}

#[test]
fn a_prover_that_lowers_its_own_rates_fails_and_one_at_the_floor_passes() {
    // MMAUDIT_CALL_RATE=0 in the prover's environment: nothing sampled, nothing wrong.
    let zero = SamplingConfig {
        call_ppm: 0,
        ..SamplingConfig::default()
    };
    let r = audit(&capture(zero, 200, 0, 0), &Policy::default());
    assert!(!r.passed(), "{}", r.to_text());
    assert_eq!(r.sampled, 0);
    assert_eq!(kinds(&r), vec![FailureKind::SamplingBelowPolicy]);
    assert!(
        r.failures[0]
            .message
            .contains("call rate 0% below the policy's 10%"),
        "{}",
        r.to_text()
    );
    // The auditor may accept it, on its own command line.
    assert!(audit(&capture(zero, 200, 0, 0), &Policy::lenient()).passed());

    // Each sampling field is judged: fewer rows per call than the floor fails too.
    let thin = SamplingConfig {
        row_ppm: 1,
        min_rows: 1,
        ..SamplingConfig::default()
    };
    let r = audit(&capture(thin, 50, 0, 0), &Policy::default());
    assert_eq!(kinds(&r), vec![FailureKind::SamplingBelowPolicy]);
    let capped = SamplingConfig {
        max_cols: 1,
        ..SamplingConfig::default()
    };
    let r = audit(&capture(capped, 50, 0, 0), &Policy::default());
    assert_eq!(kinds(&r), vec![FailureKind::SamplingBelowPolicy]);

    // Honest: the library's default rates, and higher ones, pass the default policy.
    for config in [
        SamplingConfig::default(),
        SamplingConfig {
            call_ppm: 1_000_000,
            row_ppm: 50_000,
            ..SamplingConfig::default()
        },
    ] {
        let r = audit(&capture(config, 200, 0, 0), &Policy::default());
        assert!(r.passed(), "{}", r.to_text());
        assert!(r.sampled > 0);
    }
}

#[test]
fn each_unaudited_category_fails_above_its_limit_and_passes_within() {
    let all = SamplingConfig {
        call_ppm: 1_000_000,
        ..SamplingConfig::default()
    };
    for (flag, what) in [
        (flags::CAPTURED | flags::REPLAYED, Unaudited::Captured),
        (flags::NO_SESSION, Unaudited::NoSession),
        (flags::UNMODELLED, Unaudited::Unmodelled),
        (flags::REJECTED, Unaudited::Rejected),
    ] {
        // 1 of 200 calls (0.5%): within the default 1%.
        let r = audit(&capture(all, 200, 1, flag), &Policy::default());
        assert!(r.passed(), "{what:?}: {}", r.to_text());
        assert_eq!(r.tally(what).calls, 1, "{what:?}");
        // 99 of 100 calls: the work happened where nobody looked.
        let r = audit(&capture(all, 100, 99, flag), &Policy::default());
        assert!(!r.passed(), "{what:?}: {}", r.to_text());
        assert_eq!(kinds(&r), vec![FailureKind::Coverage], "{what:?}");
        let message = &r.failures[0].message;
        assert!(
            message.contains("99 of 100 calls") && message.contains(what.flag()),
            "{what:?}: {message}"
        );
        // Raising that limit, and only that one, lets it pass.
        let mut p = Policy::default();
        p.set_limit(what, 1.0);
        assert!(audit(&capture(all, 100, 99, flag), &p).passed(), "{what:?}");
        for other in Unaudited::ALL.into_iter().filter(|&o| o != what) {
            let mut p = Policy::default();
            p.set_limit(other, 1.0);
            assert!(
                !audit(&capture(all, 100, 99, flag), &p).passed(),
                "{what:?}"
            );
        }
    }
}

#[test]
fn a_few_large_unaudited_calls_fail_by_their_flops() {
    // 1 captured call of 200 (0.5% of the calls) that holds most of the FLOPs.
    let mut p = RefProver::new(&key(), SamplingConfig::default(), 9);
    let mut big = GemmSpec::new(2048, 2048, 2048, DType::BF16, DType::BF16, ComputeType::F32);
    big.captured = true;
    p.gemm(&big);
    for _ in 0..199 {
        p.gemm(&spec());
    }
    let r = audit(&p.finish(8).bytes(), &Policy::default());
    assert!(!r.passed(), "{}", r.to_text());
    assert_eq!(kinds(&r), vec![FailureKind::Coverage]);
    let (calls, flops) = r
        .tally(Unaudited::Captured)
        .shares(&mmaudit_verify::policy::Tally {
            calls: r.calls,
            flops: r.flops,
        });
    assert!(calls < 0.01 && flops > 0.98, "{calls} {flops}");
}

#[test]
fn rejected_calls_flops_are_counted_apart_from_the_claimed_ones() {
    let all = SamplingConfig {
        call_ppm: 1_000_000,
        ..SamplingConfig::default()
    };
    let r = audit(&capture(all, 10, 2, flags::REJECTED), &Policy::lenient());
    let one = 2u128 * 64 * 32 * 256;
    assert_eq!(r.flops, 8 * one, "rejected calls claim no FLOPs");
    assert_eq!(r.tally(Unaudited::Rejected).flops, 2 * one);
    let json = r.to_json();
    assert_eq!(json["not_audited"]["rejected"]["calls"], 2);
    assert_eq!(json["not_audited"]["rejected"]["share_of_calls"], 0.2);
}

#[test]
fn unverifiable_calls_fail_above_their_limit() {
    // cublasHgemm-like: COMPUTE_16F at k = 1024 cannot be bounded (n u >= 1/2).
    let all = SamplingConfig {
        call_ppm: 1_000_000,
        ..SamplingConfig::default()
    };
    let mut p = RefProver::new(&key(), all, 3);
    for _ in 0..20 {
        p.gemm(&GemmSpec::new(
            32,
            32,
            1024,
            DType::F16,
            DType::F16,
            ComputeType::F16,
        ));
    }
    let r = audit(&p.finish(8).bytes(), &Policy::default());
    assert_eq!(r.unverifiable, 20, "{}", r.to_text());
    assert!(!r.passed());
    assert_eq!(kinds(&r), vec![FailureKind::Coverage]);
    assert!(r.failures[0].message.contains("--max-unverifiable"));
    // Honest and verifiable: the same calls at k = 256 pass.
    let mut p = RefProver::new(&key(), all, 3);
    for _ in 0..20 {
        p.gemm(&GemmSpec::new(
            32,
            32,
            256,
            DType::F16,
            DType::F16,
            ComputeType::F16,
        ));
    }
    let r = audit(&p.finish(8).bytes(), &Policy::default());
    assert!(r.passed(), "{}", r.to_text());
    assert_eq!(r.unverifiable, 0);
}

#[test]
fn a_report_never_judged_by_a_policy_does_not_pass() {
    let r = StreamReport::new("unjudged");
    assert!(!r.passed());
}

#[test]
fn samples_of_unaudited_calls_are_not_accepted() {
    // A prover cannot make a flagged call count as audited by sending a sample for it.
    let all = SamplingConfig {
        call_ppm: 1_000_000,
        ..SamplingConfig::default()
    };
    let mut honest = RefProver::new(&key(), all, 4);
    honest.gemm(&spec());
    let sample = honest
        .records
        .iter()
        .find(|r| matches!(r, Record::Sample(_)))
        .cloned()
        .unwrap();
    let mut p = RefProver::new(&key(), all, 4);
    let mut s = spec();
    s.not_audited = flags::NO_SESSION;
    p.gemm(&s);
    p.records.push(sample);
    let r = audit(&p.finish(8).bytes(), &Policy::lenient());
    assert!(!r.passed());
    assert!(r.integrity_errors >= 1, "{}", r.to_text());
}

#[test]
fn flops_that_do_not_fit_128_bits_saturate_and_fail_the_share() {
    // A captured call of m = n = k = batch = 2^32 declares 2^129 FLOPs: saturated, not
    // wrapped to 0, so its share is all of the FLOPs.
    let mut p = RefProver::new(&key(), SamplingConfig::default(), 5);
    for _ in 0..200 {
        p.gemm(&spec());
    }
    let mut huge = spec();
    huge.captured = true;
    p.gemm(&huge);
    if let Some(Record::Ledger(c)) = p.records.last_mut() {
        (c.m, c.n, c.k, c.batch) = (1 << 32, 1 << 32, 1 << 32, 1 << 32);
        assert_eq!(c.declared_flops(), u128::MAX);
    }
    let r = audit(&p.finish(8).bytes(), &Policy::default());
    assert_eq!(r.tally(Unaudited::Captured).flops, u128::MAX);
    assert!(!r.passed(), "{}", r.to_text());
    assert_eq!(kinds(&r), vec![FailureKind::Coverage]);
}

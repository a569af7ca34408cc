//! Review of commit mode: attacks by a prover that holds everything but the verifier's
//! challenge key. Each test states what a sound verifier must do; a failing test is a
//! finding.

mod commit_support;

use commit_support::{audit_with, challenge_key, key};
use std::sync::mpsc;
use std::time::Duration;

use mmaudit_protocol::call::{ComputeType, DType, GemmCall};
use mmaudit_protocol::commit::{self, Challenger, Hash};
use mmaudit_protocol::config::SamplingConfig;
use mmaudit_protocol::record::{
    Commitment, End, OpenedSide, OpenedVectors, Opening, Record, SmallData,
};
use mmaudit_protocol::schedule::ScheduleVersion;
use mmaudit_protocol::stream::StreamHeader;
use mmaudit_tests::refprover::{frame_capture, GemmSpec, RefProver};
use mmaudit_verify::audit::StreamAudit;
use mmaudit_verify::check::audit_reader_into;
use mmaudit_verify::policy::Policy;

/// A nonce the verifier issued (a session of `serve --commit`).
fn nonce() -> [u8; 16] {
    commit::issue_nonce(&challenge_key(), *b"session1")
}

fn header(config: SamplingConfig, schedule: ScheduleVersion) -> StreamHeader {
    header_with(config, schedule, nonce())
}

fn header_with(config: SamplingConfig, schedule: ScheduleVersion, nonce: [u8; 16]) -> StreamHeader {
    StreamHeader {
        key_id: key().id(),
        nonce,
        config,
        stream_id: 1,
        segment: 0,
        first_index: 0,
        schedule,
        pid: 1,
        host: "attacker".into(),
        started_unix_ns: 0,
        devices: vec![],
        producer: "attacker".into(),
    }
}

fn empty_vectors(root: Hash) -> OpenedVectors {
    OpenedVectors {
        root,
        vectors: Vec::new(),
        paths: Vec::new(),
    }
}

/// A tiny opening of `call` (no vectors at all) and the commitment it matches.
fn tiny_opening(call: &GemmCall) -> (Opening, Hash) {
    let o = Opening {
        index: call.index,
        a: OpenedSide::Inline(empty_vectors([1; 32])),
        b: OpenedSide::Inline(empty_vectors([2; 32])),
        c: empty_vectors(commit::tree_root(&[])),
        d: empty_vectors([4; 32]),
        small: SmallData::default(),
    };
    let c = commit::call_commitment(call, &o.binding());
    (o, c)
}

/// Calls of `spec` with a commitment each until one is challenged, which gets a tiny
/// opening; returns the capture's bytes.
fn stream_with_tiny_opening(spec: &GemmSpec, config: SamplingConfig) -> Vec<u8> {
    let challenger = Challenger::new(challenge_key(), nonce(), config);
    let mut records = Vec::new();
    let mut index = 0;
    loop {
        let call = spec.to_call(index);
        index += 1;
        records.push(Record::Ledger(call.clone()));
        let (opening, c) = tiny_opening(&call);
        records.push(Record::Commitment(Commitment {
            index: call.index,
            commitment: c,
        }));
        if challenger.seed(&call, &c).is_some() {
            records.push(Record::Opening(Box::new(opening)));
            break;
        }
    }
    let end = End {
        calls: index,
        samples: 1,
        gap_calls: 0,
    };
    frame_capture(
        &key(),
        &header(config, ScheduleVersion::Commit),
        &records,
        16,
        Some(end),
    )
    .bytes()
}

/// FINDING: an opening of a few hundred bytes keeps the verifier busy for hours.
/// `OpenedVectors::verify` sums `path_len` over every one of `e * r` plan vectors
/// before it compares any length; under the default policy a call with m = batch =
/// 5 * 10^7 has a plan of 500 000 rows and 500 000 batch entries (10^6 indices, below
/// MAX_PLAN_INDICES) and so 2.5 * 10^11 vectors of op(A).
#[test]
fn a_tiny_opening_of_a_huge_plan_is_rejected_quickly() {
    let config = SamplingConfig::default();
    let mut spec = GemmSpec::new(50_000_000, 1, 1, DType::BF16, DType::BF16, ComputeType::F32);
    spec.batch = 50_000_000;
    let bytes = stream_with_tiny_opening(&spec, config);
    assert!(bytes.len() < 100_000, "{}", bytes.len());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let r = audit_with(&bytes, Some(challenge_key()), Policy::default());
        let _ = tx.send(r.passed());
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(passed) => assert!(!passed),
        Err(_) => panic!("the verifier spent more than 30 s on one tiny opening record"),
    }
}

/// FINDING (debug builds and every test build; release wraps): the leaf index
/// `batch_index * m + row` of `Opening::verify` overflows u64 when batch x m > 2^64,
/// which a verifier policy with row and batch rates 0 (one row and one batch entry per
/// call) lets through without overloading the plan.
#[test]
fn an_opening_of_a_call_whose_leaf_index_overflows_does_not_panic() {
    let config = SamplingConfig {
        call_ppm: 1_000_000,
        row_ppm: 0,
        col_ppm: 0,
        batch_ppm: 0,
        ..SamplingConfig::default()
    };
    let policy = Policy {
        sampling: config,
        ..Policy::default()
    };
    let mut spec = GemmSpec::new(1 << 40, 1, 1, DType::BF16, DType::BF16, ComputeType::F32);
    spec.batch = 1 << 40;
    let bytes = stream_with_tiny_opening(&spec, config);
    let r = std::panic::catch_unwind(|| audit_with(&bytes, Some(challenge_key()), policy));
    match r {
        Ok(r) => assert!(!r.passed()),
        Err(_) => panic!("the verifier panicked on an opening"),
    }
}

/// FINDING: `check --challenge-key` accepts a sampling-mode (v2) capture and passes it.
/// In that mode the prover, who holds the audit key, knows every sampled call and entry
/// in advance and need compute nothing else: exactly the attack commit mode exists to
/// stop. A verifier asked to audit in commit mode should refuse any other mode (as the
/// live verifier is meant to: "a commit-mode verifier fails that stream"); the report
/// does not even say which mode the stream was in.
#[test]
fn a_verifier_with_a_challenge_key_refuses_a_sampling_mode_capture() {
    let mut p = RefProver::new(&key(), SamplingConfig::default(), 5);
    for _ in 0..50 {
        p.gemm(&GemmSpec::new(
            64,
            8,
            32,
            DType::BF16,
            DType::BF16,
            ComputeType::F32,
        ));
    }
    let bytes = p.finish(8).bytes();
    let r = audit_with(&bytes, Some(challenge_key()), Policy::default());
    assert!(
        !r.passed(),
        "a v2 capture (prover-predictable schedule) passed a commit-mode check:\n{}",
        r.to_text()
    );
}

/// Offline `check --challenge-key` grades any capture it is given, and its report names
/// the challenged calls ("missing" failures): a challenge oracle for a prover that may
/// submit captures of its own making. A prover that never computes anything would
/// submit its commitments, read which calls were challenged, change only those
/// commitments and submit again. With a nonce of its own choosing the stream fails at
/// once (only nonces issued with the challenge key are accepted); with a nonce a
/// verifier issued, the session was graded live, and re-checking anything but the
/// verifier's own saved capture of it is outside the protocol (docs/COMMIT.md).
#[test]
fn check_reports_are_not_a_challenge_oracle() {
    let config = SamplingConfig::default();
    let spec = GemmSpec::new(64, 8, 32, DType::BF16, DType::BF16, ComputeType::F32);
    let calls: Vec<GemmCall> = (0..100).map(|i| spec.to_call(i)).collect();
    let mut salt = vec![0u32; calls.len()];
    let capture = |salt: &[u32]| {
        let mut records = Vec::new();
        for (call, s) in calls.iter().zip(salt) {
            records.push(Record::Ledger(call.clone()));
            let mut d = [0u8; 32];
            d[..4].copy_from_slice(&s.to_le_bytes());
            // nothing computed: random roots
            let binding = commit::CallBinding {
                a: commit::Side::Inline([1; 32]),
                b: commit::Side::Inline([2; 32]),
                c: commit::tree_root(&[]),
                d,
                small: SmallData::default().hash(),
            };
            records.push(Record::Commitment(Commitment {
                index: call.index,
                commitment: commit::call_commitment(call, &binding),
            }));
        }
        let end = End {
            calls: calls.len() as u64,
            samples: 0,
            gap_calls: 0,
        };
        frame_capture(
            &key(),
            &header_with(config, ScheduleVersion::Commit, [0xab; 16]),
            &records,
            16,
            Some(end),
        )
        .bytes()
    };
    let mut rounds = 0;
    let report = loop {
        rounds += 1;
        let audit = StreamAudit::new("attack", &key(), 20).with_challenge_key(challenge_key());
        let Ok(r) = audit_reader_into(audit, &capture(&salt)[..], &key(), |_| {}) else {
            panic!("not a capture");
        };
        if r.passed() || rounds == 20 {
            break r;
        }
        // The report says which calls were challenged.
        for f in &r.failures {
            if let Some(c) = &f.call {
                let index: usize = c["call ".len()..]
                    .split(' ')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap();
                salt[index] += 1;
            }
        }
    };
    assert!(
        !report.passed(),
        "100 calls never computed pass after {rounds} rounds of check:\n{}",
        report.to_text()
    );
    assert_eq!(rounds, 20, "the attacker learns nothing to grind with");
    assert!(report.failures[0].message.contains("nonce was not issued"));
    assert_eq!(
        report.sampled, 0,
        "no challenge is drawn for a nonce the verifier did not issue"
    );
}

#[test]
#[ignore]
fn time_a_smaller_tiny_opening() {
    let config = SamplingConfig::default();
    let mut spec = GemmSpec::new(1_000_000, 1, 1, DType::BF16, DType::BF16, ComputeType::F32);
    spec.batch = 1_000_000;
    let bytes = stream_with_tiny_opening(&spec, config);
    let t = std::time::Instant::now();
    let r = audit_with(&bytes, Some(challenge_key()), Policy::default());
    eprintln!("1e8 vectors: {:?}, passed {}", t.elapsed(), r.passed());
}

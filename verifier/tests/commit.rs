//! Commit mode (docs/COMMIT.md), end to end without a GPU: the commit prover commits to
//! every call, the test plays the verifier's challenger with a key the prover never
//! sees, and `check`'s audit re-derives every challenge from the capture.
//!
//! Honest provers pass with every challenged call opened. Cheaters that hold
//! everything but the challenge key fail as often as the security argument predicts,
//! measured over many seeds: faking rows, skipping calls, with or without refusing to
//! open what would show it. Data altered after committing fails at its first challenge.

mod commit_support;

use commit_support::{audit, audit_with, challenge_key, key, kinds, play};
use mmaudit_protocol::call::{ComputeType, DType, Epilogue};
use mmaudit_protocol::commit::Challenger;
use mmaudit_protocol::config::SamplingConfig;
use mmaudit_protocol::keys::Key;
use mmaudit_protocol::record::Record;
use mmaudit_tests::commitprover::{Cheat, CommitProver};
use mmaudit_tests::refprover::GemmSpec;
use mmaudit_verify::audit::StreamAudit;
use mmaudit_verify::check::audit_reader_into;
use mmaudit_verify::policy::{Policy, Unaudited};
use mmaudit_verify::report::FailureKind;

/// A nonce the verifier issued (`serve --commit` makes them with its challenge key).
fn nonce(seed: u64) -> [u8; 16] {
    mmaudit_protocol::commit::issue_nonce(&challenge_key(), seed.to_le_bytes())
}

/// 10% of calls, 10% of rows: at m = 100, ten checked rows per challenged call.
fn config() -> SamplingConfig {
    SamplingConfig {
        call_ppm: 100_000,
        row_ppm: 100_000,
        ..SamplingConfig::default()
    }
}

/// Runs `specs` through a prover with `cheat`, challenging each commitment as the
/// verifier would; returns the prover and the capture's bytes.
fn session(
    seed: u64,
    cheat: Cheat,
    config: SamplingConfig,
    specs: &[GemmSpec],
) -> (CommitProver, Vec<u8>) {
    let challenger = Challenger::new(challenge_key(), nonce(seed), config);
    let mut p = CommitProver::new(&key(), nonce(seed), config, seed, cheat);
    play(&mut p, &challenger, specs);
    let bytes = p.finish(7).bytes();
    (p, bytes)
}

fn plain(m: u64) -> GemmSpec {
    GemmSpec::new(m, 4, 32, DType::BF16, DType::BF16, ComputeType::F32)
}

/// A mixed workload: plain bf16, f16 with beta = 1 in place, device alpha and beta,
/// a bias and GELU epilogue, a strided batch with a bias per batch entry, f32, fp8
/// scales.
fn mixed() -> Vec<GemmSpec> {
    let mut out = Vec::new();
    for i in 0..60 {
        let mut s = match i % 6 {
            0 => plain(100),
            1 => {
                let mut s = GemmSpec::new(48, 6, 64, DType::F16, DType::F16, ComputeType::F32);
                s.beta = Some(1.0);
                s
            }
            2 => {
                let mut s = plain(40);
                s.alpha = None;
                s.beta = None;
                s
            }
            3 => {
                let mut s = plain(64);
                s.bias = true;
                s.epilogue = Epilogue::GeluTanh;
                s
            }
            4 => {
                let mut s = plain(32);
                s.batch = 3;
                s.bias = true;
                s.bias_per_batch = true;
                s
            }
            _ => {
                let mut s = GemmSpec::new(24, 5, 48, DType::F8E4M3, DType::BF16, ComputeType::F32);
                s.scales = true;
                s
            }
        };
        if i == 7 {
            s = GemmSpec::new(16, 3, 16, DType::F32, DType::F32, ComputeType::F32);
        }
        out.push(s);
    }
    out
}

#[test]
fn honest_provers_pass_with_every_challenged_call_opened() {
    let rates = SamplingConfig {
        call_ppm: 500_000,
        ..config()
    };
    let mut opened = 0;
    for seed in 0..12 {
        let (p, bytes) = session(seed, Cheat::None, rates, &mixed());
        let r = audit(&bytes);
        assert!(r.passed(), "seed {seed}: {}", r.to_text());
        assert_eq!(p.refused, 0);
        assert_eq!(r.sampled, p.opened, "seed {seed}: challenged = opened");
        assert_eq!(r.verified, p.opened, "seed {seed}");
        assert!(r.entries_checked > 0);
        assert!(r
            .to_text()
            .contains("commit mode: challenged at 50% of calls"));
        assert_eq!(r.to_json()["header"]["mode"], "commit");
        if seed == 0 {
            let page = mmaudit_verify::html::render(
                &mmaudit_verify::report::summary_json(std::slice::from_ref(&r)),
                "test",
            )
            .unwrap();
            assert!(page.contains("commit mode (docs/COMMIT.md): challenged at "));
        }
        opened += p.opened;
    }
    // about half of 12 x 60 calls
    assert!((300..420).contains(&opened), "{opened}");
}

/// `1 - C(m - b, r) / C(m, r)`: the chance that `r` rows drawn from `m` include one of
/// `b`.
fn hit(m: u64, b: u64, r: u64) -> f64 {
    1.0 - (0..r)
        .map(|i| (m - b - i) as f64 / (m - i) as f64)
        .product::<f64>()
}

/// Over `seeds` runs of `calls` plain calls with `cheat`, how many fail; asserts the
/// share is within 4 standard deviations of `predicted`.
fn failing_share(cheat: Cheat, calls: usize, predicted: f64) {
    let seeds = 40u64;
    let specs = vec![plain(100); calls];
    let mut failed = 0;
    for seed in 0..seeds {
        let (p, bytes) = session(1000 + seed, cheat, config(), &specs);
        let r = audit(&bytes);
        let caught = p.opened + p.refused > 0 && !r.passed();
        failed += !r.passed() as u64;
        // A run fails only for what the cheat did: a mismatch, or refused openings
        // over the gap policy.
        if !r.passed() {
            assert!(caught, "{cheat:?} seed {seed}: {}", r.to_text());
            for k in kinds(&r) {
                assert!(
                    matches!(
                        k,
                        FailureKind::Mismatch | FailureKind::Precision | FailureKind::GapRate
                    ),
                    "{cheat:?}: {k:?}\n{}",
                    r.to_text()
                );
            }
        }
    }
    let expect = predicted * seeds as f64;
    let sd = (seeds as f64 * predicted * (1.0 - predicted)).sqrt();
    assert!(
        (failed as f64 - expect).abs() <= 4.0 * sd + 1.0,
        "{cheat:?}: {failed} of {seeds} runs failed, predicted {expect:.1} (sd {sd:.1})"
    );
}

#[test]
fn a_cheater_faking_rows_fails_as_predicted_whether_or_not_it_refuses_to_open() {
    // 10 of 100 rows faked; a challenged call checks 10 rows; 20 calls at 10%.
    let q = hit(100, 10, 10);
    let predicted = 1.0 - (1.0 - 0.1 * q).powi(20);
    assert!((0.6..0.9).contains(&predicted), "{predicted}");
    for refuse in [false, true] {
        failing_share(
            Cheat::FakeRows {
                ppm: 100_000,
                refuse,
            },
            20,
            predicted,
        );
    }
}

#[test]
fn a_cheater_skipping_calls_fails_as_predicted_whether_or_not_it_refuses_to_open() {
    // 10% of the calls skipped; 100 calls at 10%: caught when a skipped call is
    // challenged.
    let predicted = 1.0 - (1.0 - 0.1 * 0.1f64).powi(100);
    for refuse in [false, true] {
        failing_share(
            Cheat::SkipCalls {
                ppm: 100_000,
                refuse,
            },
            100,
            predicted,
        );
    }
}

#[test]
fn data_altered_after_committing_fails_and_its_honest_twin_passes() {
    let rates = SamplingConfig {
        call_ppm: 500_000,
        ..config()
    };
    let specs = vec![plain(100); 20];
    for seed in 0..5 {
        let (p, bytes) = session(seed, Cheat::AlterAfterCommit, rates, &specs);
        assert!(p.opened > 0);
        let r = audit(&bytes);
        assert!(!r.passed());
        assert_eq!(r.mismatched, p.opened, "{}", r.to_text());
        assert!(kinds(&r).iter().all(|k| *k == FailureKind::NotAsCommitted));
        assert!(r.failures[0]
            .message
            .contains("opening does not match the commitment"));
        let (_, honest) = session(seed, Cheat::None, rates, &specs);
        assert!(audit(&honest).passed());
    }
}

#[test]
fn without_the_right_challenge_key_a_commit_capture_fails() {
    let (_, bytes) = session(3, Cheat::None, config(), &vec![plain(100); 40]);
    assert!(audit(&bytes).passed());
    let none = audit_with(&bytes, None, Policy::default());
    assert!(!none.passed());
    assert!(none.failures[0].message.contains("--challenge-key"));
    // Another verifier's key challenges other calls: openings arrive for calls it did
    // not challenge, and its own challenges go unanswered.
    let other = audit_with(
        &bytes,
        Some(Key::from_bytes([0x78; 32]).challenge_key()),
        Policy::default(),
    );
    assert!(!other.passed());
    assert!(
        other.failures[0].message.contains("nonce was not issued"),
        "{}",
        other.to_text()
    );
    // A prover choosing its own nonce (to grind its commitments against repeated
    // checks) fails, however honest its stream.
    let challenger = Challenger::new(challenge_key(), [0xab; 16], config());
    let mut p = CommitProver::new(&key(), [0xab; 16], config(), 3, Cheat::None);
    play(&mut p, &challenger, &vec![plain(100); 40]);
    let r = audit(&p.finish(7).bytes());
    assert!(!r.passed());
    assert!(r.failures[0].message.contains("nonce was not issued"));
    // The audit key's own challenge subkey is refused by the audit itself, not only
    // by the command line.
    let r = audit_with(&bytes, Some(key().challenge_key()), Policy::default());
    assert!(!r.passed());
    assert!(
        r.failures[0].message.contains("the audit key's"),
        "{}",
        r.to_text()
    );
}

#[test]
fn calls_left_uncommitted_count_against_the_policy_and_missing_commitments_fail() {
    let specs = vec![plain(100); 50];
    let (mut p, _) = session(9, Cheat::None, config(), &[]);
    let challenger = Challenger::new(challenge_key(), nonce(9), config());
    for (i, spec) in specs.iter().enumerate() {
        let (call, commitment) = p.gemm(spec);
        if i < 5 {
            // Withdrawn before any challenge: the commitment record replaced by a gap.
            p.withdraw_last();
            continue;
        }
        if let Some(plan) = commitment.and_then(|c| challenger.challenge(&call, &c)) {
            p.open(call.index, &plan);
        }
    }
    let bytes = p.finish(5).bytes();
    let r = audit(&bytes);
    assert_eq!(r.uncommitted, 5);
    assert!(!r.passed());
    assert!(
        kinds(&r).contains(&FailureKind::Coverage),
        "{}",
        r.to_text()
    );
    let mut lifted = Policy::default();
    lifted.set_limit(Unaudited::Uncommitted, 0.2);
    let r = audit_with(&bytes, Some(challenge_key()), lifted);
    assert!(r.passed(), "{}", r.to_text());

    // A call whose commitment never comes, with no gap either: the stream fails.
    let (mut p, _) = session(10, Cheat::None, config(), &[]);
    for spec in &specs[..10] {
        p.gemm(spec);
    }
    p.records
        .retain(|r| !matches!(r, Record::Commitment(c) if c.index == 4));
    let r = audit(&p.finish(3).bytes());
    assert!(!r.passed());
    assert!(
        r.failures
            .iter()
            .any(|f| f.message.contains("neither a commitment")),
        "{}",
        r.to_text()
    );
}

#[test]
fn held_weights_bound_by_reference_pass_and_other_weights_fail() {
    use mmaudit_protocol::num;
    use mmaudit_tests::refprover::{Along, WeightOperand};
    use std::sync::Arc;

    // A bf16 weight of 64 x 48, the one tensor of a file the verifier holds (id 0).
    let dir = std::env::temp_dir().join(format!("mmaudit-commit-weights-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let values: Vec<f64> = (0..64 * 48)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            num::round_to(
                DType::BF16,
                (x >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0,
            )
        })
        .collect();
    let mut bytes = Vec::new();
    num::encode_into(DType::BF16, &values, &mut bytes);
    let path = dir.join("model.safetensors");
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::BF16, vec![64, 48], &bytes)
        .unwrap();
    safetensors::serialize_to_file(vec![("w.weight".to_string(), view)], None, &path).unwrap();
    let weights =
        mmaudit_verify::check::load_weight_policy(&[path], true, mmaudit_verify::out::To::Stderr)
            .unwrap()
            .unwrap();
    let spec = GemmSpec::with_a_weight(
        WeightOperand::new(Arc::from(values), &[64, 48], Along::Rows),
        4,
        DType::BF16,
    );
    let rates = SamplingConfig {
        call_ppm: 500_000,
        ..config()
    };
    for (cheat, pass) in [
        (Cheat::None, true),
        (Cheat::OtherWeights { ppm: 50_000 }, false),
    ] {
        let challenger = Challenger::new(challenge_key(), nonce(21), rates);
        let mut p = CommitProver::new(&key(), nonce(21), rates, 21, cheat).with_reference(0);
        play(&mut p, &challenger, &vec![spec.clone(); 20]);
        assert!(p.opened > 0);
        let capture = p.finish(5).bytes();
        // op(A) never travelled: the openings carry one evidence element per row.
        assert!(
            capture.len() < 20 * 64 * 48 * 2 / 4,
            "{} bytes",
            capture.len()
        );
        let held = StreamAudit::new("weights", &key(), 100)
            .with_policy(Policy::default())
            .with_challenge_key(challenge_key())
            .with_weights(weights.clone());
        let r = audit_reader_into(held, &capture[..], &key(), |_| {}).unwrap();
        assert_eq!(r.passed(), pass, "{cheat:?}: {}", r.to_text());
        let w = r.weights.as_ref().unwrap();
        if pass {
            assert_eq!((w.referenced, w.matched), (p.opened, p.opened));
            assert_eq!(w.tensors.get("w.weight"), Some(&p.opened));
        } else {
            assert!(kinds(&r)
                .iter()
                .all(|k| matches!(k, FailureKind::Mismatch | FailureKind::Precision)));
            assert!(r.mismatched > 0);
        }
        // Checked without the weights, the references cannot be resolved: it fails.
        if pass {
            let r = audit(&capture);
            assert!(!r.passed());
            assert!(
                r.failures[0].message.contains("--weights"),
                "{}",
                r.to_text()
            );
        }
    }
}

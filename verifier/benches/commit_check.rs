//! What commit mode costs the verifier, next to the sampling mode on the same
//! workload: `check` of a capture where every call is challenged (commit prover) and of
//! one where every call is sampled (reference prover), bf16 1024x16x1024 (10 rows and
//! one column per call), one thread, best of five; and apart, the opening checks alone
//! (`Opening::verify`: the call commitment, BLAKE3 of the opened vectors and their
//! audit paths). A benchmark, not a test: it prints a table (recorded in
//! docs/PERFORMANCE.md).
//!
//! Run: cargo bench -p mmaudit-verify --bench commit_check

use mmaudit_protocol::call::{ComputeType, DType};
use mmaudit_protocol::commit::{issue_nonce, Challenger};
use mmaudit_protocol::config::SamplingConfig;
use mmaudit_protocol::keys::Key;
use mmaudit_protocol::record::Record;
use mmaudit_tests::commitprover::{Cheat, CommitProver};
use mmaudit_tests::refprover::{GemmSpec, RefProver};
use mmaudit_verify::audit::StreamAudit;
use mmaudit_verify::bench::best_of_five;
use mmaudit_verify::check::audit_reader_into;
use mmaudit_verify::policy::Policy;

const CALLS: usize = 50;

fn main() {
    mmaudit_verify::tune_allocator();
    let key = Key::from_bytes([0x5a; 32]);
    let challenge_key = Key::from_bytes([0xc5; 32]).challenge_key();
    let config = SamplingConfig {
        call_ppm: 1_000_000,
        ..SamplingConfig::default()
    };
    let spec = GemmSpec::new(1024, 16, 1024, DType::BF16, DType::BF16, ComputeType::F32);
    let nonce = issue_nonce(&challenge_key, *b"benchmrk");

    let challenger = Challenger::new(challenge_key, nonce, config);
    let mut commit = CommitProver::new(&key, nonce, config, 1, Cheat::None);
    let mut plans = Vec::new();
    for _ in 0..CALLS {
        let (call, c) = commit.gemm(&spec);
        let plan = challenger
            .challenge(&call, &c.expect("auditable"))
            .expect("every call");
        commit.open(call.index, &plan);
        plans.push((call, plan, c.expect("auditable")));
    }
    let openings: Vec<_> = commit
        .records
        .iter()
        .filter_map(|r| match r {
            Record::Opening(o) => Some((**o).clone()),
            _ => None,
        })
        .collect();
    let commit_bytes = commit.finish(8).bytes();

    let mut sampled = RefProver::new(&key, config, 1).with_nonce(nonce);
    for _ in 0..CALLS {
        sampled.gemm(&spec);
    }
    let sampled_bytes = sampled.finish(8).bytes();

    let check = |bytes: &[u8], with_key: bool| {
        let mut audit = StreamAudit::new("bench", &key, 10)
            .with_policy(Policy::lenient())
            .with_threads(1);
        if with_key {
            audit = audit.with_challenge_key(challenge_key);
        }
        let r = audit_reader_into(audit, bytes, &key, |_| {}).expect("a capture");
        assert!(r.passed(), "{}", r.to_text());
        assert_eq!(r.verified, CALLS as u64);
    };
    let t_commit = best_of_five(|| check(&commit_bytes, true));
    let t_sampled = best_of_five(|| check(&sampled_bytes, false));
    let t_open = best_of_five(|| {
        for ((call, plan, c), o) in plans.iter().zip(&openings) {
            o.verify(call, plan, c).expect("honest opening");
        }
    });
    let per = |t: f64| t / CALLS as f64 * 1e6;
    println!("commit_check: bf16 1024x16x1024, {CALLS} calls, every call checked (10 rows x 1 column), one thread, best of 5");
    println!("| mode | capture bytes | bytes per checked call | check ms | us per checked call |");
    println!("|---|---|---|---|---|");
    for (mode, bytes, t) in [
        ("sampling (sample records)", sampled_bytes.len(), t_sampled),
        (
            "commit (commitment + opening)",
            commit_bytes.len(),
            t_commit,
        ),
    ] {
        println!(
            "| {mode} | {bytes} | {:.0} | {:.2} | {:.1} |",
            bytes as f64 / CALLS as f64,
            t * 1e3,
            per(t)
        );
    }
    println!(
        "opening checks alone (Opening::verify): {:.2} ms, {:.1} us per opening; commit / sampling check time: {:.2}",
        t_open * 1e3,
        per(t_open),
        t_commit / t_sampled
    );
}

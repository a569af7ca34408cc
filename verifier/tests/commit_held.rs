//! Review of commit mode: attacks that the verifier withstands (each must fail).

mod commit_support;

use commit_support::{audit, challenge_key, key, play};
use mmaudit_protocol::call::{ComputeType, DType};
use mmaudit_protocol::commit::Challenger;
use mmaudit_protocol::config::SamplingConfig;
use mmaudit_protocol::record::{Gap, GapReason, OpenedSide, OperandData, Record, Sample};
use mmaudit_protocol::schedule::ScheduleVersion;
use mmaudit_tests::commitprover::{Cheat, CommitProver};
use mmaudit_tests::refprover::{frame_capture, GemmSpec};

fn config() -> SamplingConfig {
    SamplingConfig {
        call_ppm: 500_000,
        row_ppm: 100_000,
        ..SamplingConfig::default()
    }
}

fn honest(seed: u64, specs: &[GemmSpec]) -> CommitProver {
    let nonce = mmaudit_protocol::commit::issue_nonce(&challenge_key(), [seed as u8; 8]);
    let challenger = Challenger::new(challenge_key(), nonce, config());
    let mut p = CommitProver::new(&key(), nonce, config(), seed, Cheat::None);
    play(&mut p, &challenger, specs);
    p
}

fn specs() -> Vec<GemmSpec> {
    let mut out = Vec::new();
    for i in 0..20 {
        let mut s = GemmSpec::new(40, 6, 16, DType::BF16, DType::BF16, ComputeType::F32);
        if i % 2 == 1 {
            s.batch = 3;
        }
        out.push(s);
    }
    out
}

/// The capture of `p` fails, its first failure saying `want`.
fn expect_fail(name: &str, p: &CommitProver, want: &str) {
    let r = audit(&p.finish(5).bytes());
    assert!(!r.passed(), "{name} passed:\n{}", r.to_text());
    assert!(
        r.failures[0].message.contains(want),
        "{name}: {:?} {}",
        r.failures[0].kind,
        r.failures[0].message
    );
}

fn first_opening(p: &mut CommitProver) -> usize {
    p.records
        .iter()
        .position(|r| matches!(r, Record::Opening(_)))
        .unwrap()
}

#[test]
fn mutations_fail() {
    let base = honest(1, &specs());
    assert!(audit(&base.finish(5).bytes()).passed());

    // vectors swapped between plan entries (paths kept in place)
    let mut p = honest(1, &specs());
    let i = first_opening(&mut p);
    if let Record::Opening(o) = &mut p.records[i] {
        let OpenedSide::Inline(a) = &mut o.a else {
            panic!()
        };
        let w = 16 * 2;
        let (x, y) = a.vectors.split_at_mut(w);
        x.swap_with_slice(&mut y[..w]);
    }
    expect_fail("swapped vectors", &p, "is not under its root");

    // one hash moved from one path to the next (same total)
    let mut p = honest(1, &specs());
    let i = first_opening(&mut p);
    if let Record::Opening(o) = &mut p.records[i] {
        let OpenedSide::Inline(a) = &mut o.a else {
            panic!()
        };
        a.paths.rotate_left(32);
    }
    expect_fail("rotated paths", &p, "is not under its root");

    // duplicated opening
    let mut p = honest(1, &specs());
    let i = first_opening(&mut p);
    let o = p.records[i].clone();
    p.records.insert(i + 1, o);
    expect_fail(
        "duplicate opening",
        &p,
        "which was not challenged or was already resolved",
    );

    // opening before its commitment
    let mut p = honest(1, &specs());
    let i = first_opening(&mut p);
    let o = p.records.remove(i);
    let c = p.records.iter().position(|r| matches!(r, Record::Commitment(c) if Some(c.index) == match &o { Record::Opening(o) => Some(o.index), _ => None })).unwrap();
    p.records.insert(c, o);
    expect_fail(
        "opening before commitment",
        &p,
        "which was not challenged or was already resolved",
    );

    // commitment before its ledger record
    let mut p = honest(1, &specs());
    p.records.swap(0, 1);
    expect_fail(
        "commitment before ledger",
        &p,
        "not an auditable call awaiting its commitment",
    );

    // a second commitment
    let mut p = honest(1, &specs());
    let c = p.records[1].clone();
    p.records.insert(2, c);
    expect_fail(
        "two commitments",
        &p,
        "not an auditable call awaiting its commitment",
    );

    // "not committed" for a committed call
    let mut p = honest(1, &specs());
    p.records.push(Record::Gap(Gap {
        indices: vec![0],
        reason: GapReason::NotCommitted,
        detail: String::new(),
    }));
    expect_fail(
        "not committed after commitment",
        &p,
        "was not committed, but it is not an auditable call",
    );

    // "not retained" for an unchallenged call
    let mut p = honest(1, &specs());
    let challenged: Vec<u64> = p
        .records
        .iter()
        .filter_map(|r| match r {
            Record::Opening(o) => Some(o.index),
            _ => None,
        })
        .collect();
    let un = (0..20).find(|i| !challenged.contains(i)).unwrap();
    p.records.push(Record::Gap(Gap {
        indices: vec![un],
        reason: GapReason::NotRetained,
        detail: String::new(),
    }));
    expect_fail(
        "not retained unchallenged",
        &p,
        "which is not a sampled call awaiting its data",
    );

    // a sample record in a commit-mode stream
    let mut p = honest(1, &specs());
    p.records.push(Record::Sample(Sample {
        index: 0,
        alpha: None,
        beta: None,
        scale_a: None,
        scale_b: None,
        scale_c: None,
        scale_d: None,
        a_rows: OperandData::Inline(vec![]),
        b_cols: OperandData::Inline(vec![]),
        c_in: vec![],
        d_out: vec![],
        bias: vec![],
        scale_rows: vec![],
        scale_cols: vec![],
    }));
    expect_fail(
        "sample in commit stream",
        &p,
        "in a commit-mode stream, where data travels only as openings",
    );

    // C opened although beta is 0
    let mut p = honest(1, &specs());
    let i = first_opening(&mut p);
    if let Record::Opening(o) = &mut p.records[i] {
        o.c.vectors = vec![0; 80];
    }
    expect_fail("C opened with beta 0", &p, "beta is zero, yet C is opened");

    // the same records under a v2 header
    let p = honest(1, &specs());
    let mut h =
        mmaudit_tests::refprover::RefProver::new(&key(), config(), 1).header(ScheduleVersion::V2);
    h.nonce = mmaudit_protocol::commit::issue_nonce(&challenge_key(), [1; 8]);
    let bytes = frame_capture(&key(), &h, &p.records, 5, None).bytes();
    let r = audit(&bytes);
    assert!(!r.passed());
    assert!(
        r.failures[0].message.contains("a sampling-mode stream"),
        "{}",
        r.failures[0].message
    );

    // an opening moved after the end record
    let p = honest(1, &specs());
    let mut recs = p.records.clone();
    let i = recs
        .iter()
        .position(|r| matches!(r, Record::Opening(_)))
        .unwrap();
    let o = recs.remove(i);
    recs.push(Record::End(mmaudit_protocol::record::End {
        calls: 20,
        samples: p.opened - 1,
        gap_calls: 0,
    }));
    recs.push(o);
    let mut h = mmaudit_tests::refprover::RefProver::new(&key(), config(), 1)
        .header(ScheduleVersion::Commit);
    h.nonce = mmaudit_protocol::commit::issue_nonce(&challenge_key(), [1; 8]);
    let r = audit(&frame_capture(&key(), &h, &recs, 5, None).bytes());
    assert!(!r.passed());
    assert!(
        r.failures[0]
            .message
            .contains("record after the End record"),
        "{}",
        r.failures[0].message
    );
}

//! What the commit-mode test files share: the audit key, the verifier's challenge key,
//! the audit of a capture as `check --challenge-key` runs it, and a session in which the
//! commit prover answers the challenges the verifier draws from its commitments.
#![allow(dead_code)]

use mmaudit_protocol::commit::{Challenger, Hash};
use mmaudit_protocol::keys::Key;
use mmaudit_tests::commitprover::CommitProver;
use mmaudit_tests::refprover::GemmSpec;
use mmaudit_verify::audit::StreamAudit;
use mmaudit_verify::check::{audit_reader_into, NotChecked};
use mmaudit_verify::policy::Policy;
use mmaudit_verify::report::{FailureKind, StreamReport};

/// The audit key (the prover holds it).
pub fn key() -> Key {
    Key::from_bytes([0x31; 32])
}

/// The verifier's challenge key (never given to the prover).
pub fn challenge_key() -> Hash {
    Key::from_bytes([0x77; 32]).challenge_key()
}

/// The audit of `bytes` under `policy`, with `challenge` as the challenge key.
pub fn audit_with(bytes: &[u8], challenge: Option<Hash>, policy: Policy) -> StreamReport {
    let mut audit = StreamAudit::new("commit", &key(), 100).with_policy(policy);
    if let Some(c) = challenge {
        audit = audit.with_challenge_key(c);
    }
    match audit_reader_into(audit, bytes, &key(), |_| {}) {
        Ok(r) => r,
        Err(NotChecked::Io(e)) => panic!("io: {e}"),
        Err(NotChecked::NotACapture(e)) => panic!("not a capture: {e}"),
    }
}

/// The audit of `bytes` with the challenge key and the default policy.
pub fn audit(bytes: &[u8]) -> StreamReport {
    audit_with(bytes, Some(challenge_key()), Policy::default())
}

/// The kinds of a report's failures, in order.
pub fn kinds(r: &StreamReport) -> Vec<FailureKind> {
    r.failures.iter().map(|f| f.kind).collect()
}

/// Issues `specs` on `p`, opening (or refusing) each call `challenger` challenges once
/// its commitment is written, as a live session does.
pub fn play(p: &mut CommitProver, challenger: &Challenger, specs: &[GemmSpec]) {
    for spec in specs {
        let (call, commitment) = p.gemm(spec);
        if let Some(plan) = commitment.and_then(|c| challenger.challenge(&call, &c)) {
            p.open(call.index, &plan);
        }
    }
}

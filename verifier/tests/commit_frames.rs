//! The challenge frames `serve --commit` writes are ones the prover's reader accepts,
//! whatever the order commitments arrive in: `through` is the end of the judged prefix
//! and a frame names only calls up to it, in index order.

use mmaudit_protocol::call::{ComputeType, DType, GemmCall};
use mmaudit_protocol::commit::frames::{ChallengeReader, ChallengeWriter};
use mmaudit_protocol::commit::issue_nonce;
use mmaudit_protocol::config::SamplingConfig;
use mmaudit_protocol::keys::Key;
use mmaudit_protocol::record::{Commitment, Record};
use mmaudit_protocol::schedule::ScheduleVersion;
use mmaudit_protocol::stream::{Event, StreamHeader};
use mmaudit_tests::refprover::GemmSpec;
use mmaudit_verify::audit::StreamAudit;

/// An f32 8 x 8 x 8 call.
fn call(index: u64) -> GemmCall {
    GemmSpec::new(8, 8, 8, DType::F32, DType::F32, ComputeType::F32).to_call(index)
}

#[test]
fn commitments_out_of_index_order_give_frames_the_prover_accepts() {
    let key = Key::from_bytes([0x31; 32]);
    let challenge = Key::from_bytes([0x77; 32]).challenge_key();
    // Every committed call challenged, as in the e2e tests' 100% runs.
    let config = SamplingConfig {
        call_ppm: 1_000_000,
        ..Default::default()
    };
    let header = StreamHeader {
        key_id: key.id(),
        nonce: issue_nonce(&challenge, [1; 8]),
        config,
        stream_id: 1,
        segment: 0,
        first_index: 0,
        pid: 1,
        host: "review".into(),
        started_unix_ns: 0,
        devices: vec![],
        producer: "review".into(),
        schedule: ScheduleVersion::Commit,
    };
    let mut audit = StreamAudit::new("order", &key, 100)
        .with_challenge_key(challenge)
        .sending_challenges();
    audit.on_event(Event::Header(header));
    for i in 0..3 {
        audit.on_record(Record::Ledger(call(i)));
    }
    let hello_mac = [5; 32];
    let mut writer = ChallengeWriter::new(&key, hello_mac);
    let mut reader = ChallengeReader::new(&key, hello_mac);
    let mut frame = |audit: &mut StreamAudit| {
        let (through, list) = audit.take_challenges()?;
        let order: Vec<u64> = list.iter().map(|c| c.index).collect();
        let got = reader.push(&writer.frame(through, &list));
        assert!(
            got.is_ok(),
            "through {through}, challenges {order:?}: {got:?}"
        );
        Some((through, order))
    };
    let commit = |audit: &mut StreamAudit, index: u64| {
        audit.on_record(Record::Commitment(Commitment {
            index,
            commitment: [index as u8 + 1; 32],
        }))
    };
    // A prover that commits out of order (the library does not, but another could):
    // call 1's challenge waits until call 0 is judged.
    commit(&mut audit, 1);
    assert_eq!(frame(&mut audit), None, "nothing judged below call 0");
    commit(&mut audit, 0);
    assert_eq!(frame(&mut audit), Some((1, vec![0, 1])));
    // Call 2 is the last: once judged, `through` covers the ledger.
    commit(&mut audit, 2);
    assert_eq!(frame(&mut audit), Some((2, vec![2])));
    assert_eq!(frame(&mut audit), None, "nothing new");
}

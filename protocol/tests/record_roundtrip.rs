//! Every record type round-trips exactly through `Record::encode` / `Record::decode`,
//! and no strict prefix of an encoding decodes.

mod common;

use common::*;
use mmaudit_protocol::codec::{Reader, Writer};
use mmaudit_protocol::fuzzing;
use mmaudit_protocol::record::Record;
use proptest::prelude::*;

fn decode_all(bytes: &[u8]) -> Vec<Record> {
    let mut r = Reader::new(bytes, 0, "test");
    let mut out = Vec::new();
    while !r.is_empty() {
        out.push(Record::decode(&mut r).expect("a valid encoding decodes"));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_record_round_trips(record in arb_record()) {
        let bytes = record.to_bytes();
        prop_assert_eq!(bytes.len(), record.encoded_len());
        let back = decode_all(&bytes);
        prop_assert_eq!(back.len(), 1);
        prop_assert_eq!(&back[0], &record);
        prop_assert_eq!(back[0].to_bytes(), bytes);
    }

    #[test]
    fn sequences_of_records_round_trip(records in prop::collection::vec(arb_record(), 0..12)) {
        let mut w = Writer::new();
        for r in &records {
            r.encode(&mut w);
        }
        prop_assert_eq!(decode_all(&w.buf), records);
    }

    #[test]
    fn no_strict_prefix_decodes(record in arb_record(), cut in any::<prop::sample::Index>()) {
        let bytes = record.to_bytes();
        let len = cut.index(bytes.len());
        let mut r = Reader::new(&bytes[..len], 0, "test");
        prop_assert!(Record::decode(&mut r).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_canonical(data in prop::collection::vec(any::<u8>(), 0..400)) {
        fuzzing::records(&data);
    }

    #[test]
    fn mutated_records_never_panic(
        record in arb_record(),
        at in any::<prop::sample::Index>(),
        value in any::<u8>(),
    ) {
        let mut bytes = record.to_bytes();
        let i = at.index(bytes.len());
        bytes[i] = value;
        fuzzing::records(&bytes);
    }
}

/// Regression: a device-side scalar (kind 1) used to decode whatever its 8 value bytes
/// held, so two encodings decoded to one call. Found by the canonical re-encoding
/// property of `fuzzing::records`.
#[test]
fn a_device_scalar_with_a_value_is_refused() {
    let mut call = fuzzing::seed_call(0);
    call.alpha = mmaudit_protocol::call::Scalar::Device;
    let mut bytes = Record::Ledger(call).to_bytes();
    // Record head 5 bytes; alpha's kind at body offset 130, its value at 131..139.
    assert_eq!(bytes[5 + 130], 1);
    bytes[5 + 131] = 1;
    let e = Record::decode(&mut Reader::new(&bytes, 0, "test")).unwrap_err();
    assert_eq!((e.what, e.offset), ("alpha", 5 + 130));
    fuzzing::records(&bytes);
}

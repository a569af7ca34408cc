//! The fuzz targets, and the seeds of their corpus.
//!
//! The decoder targets are the harnesses of `mmaudit_protocol::fuzzing` (the stream
//! reader's outcome does not depend on chunking; records and hellos that decode
//! re-encode to their bytes; arbitrary bytes behind a valid MAC decode or fail with a
//! decode error). [`audit`] runs the verifier's whole audit, as `check` runs it, on
//! arbitrary records behind a valid MAC: it must return a report (no panic, within the
//! driver's time limit, whatever sizes the records claim) whose counts are consistent.

use mmaudit_protocol::call::{flags, GemmCall};
use mmaudit_protocol::config::SamplingConfig;
use mmaudit_protocol::fuzzing;
use mmaudit_protocol::record::{End, Record};
use mmaudit_protocol::stream::{StreamHeader, StreamWriter, CODEC_NONE};
use mmaudit_verify::check::audit_reader_with;
use mmaudit_verify::policy::Policy;

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
    assert!(report.sampled <= report.calls, "{}", report.to_text());
    assert!(
        report.verified + report.mismatched <= report.sampled,
        "{}",
        report.to_text()
    );
    assert!(!report.passed() || report.ended, "{}", report.to_text());
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
        "records" => named(vec![("seed-frames", payload(&all))]),
        "authenticated_payload" => named(vec![
            ("seed-frames-plain", [&[1u8][..], &payload(&all)].concat()),
            ("seed-frames-zstd", [&[0u8][..], &payload(&all)].concat()),
        ]),
        "hello" => named(vec![(
            "seed-hello",
            [&[0u8][..], &fuzzing::seed_hello_bytes()].concat(),
        )]),
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

//! Tampering with a stream at the byte level always gives an error, never `Ok` with
//! other content: flipped bytes, truncation, removed / duplicated / reordered / spliced
//! frames, another key, huge declared lengths, trailing bytes, random input.

mod common;

use common::*;
use mmaudit_protocol::fuzzing::{self, feed, seed_stream, seed_stream_with};
use mmaudit_protocol::record::{End, Record};
use mmaudit_protocol::stream::{
    Compression, Event, StreamError, StreamReader, StreamWriter, CODEC_NONE, CODEC_ZSTD,
    FRAME_HEAD_LEN, HEADER_FIXED_LEN, MAC_LEN, MAX_PAYLOAD_LEN, MAX_RAW_LEN,
};
use proptest::prelude::*;

/// The seed stream cut into its header and frames.
fn seed_units(compression: Compression) -> (Vec<u8>, Vec<Vec<u8>>) {
    write_stream(
        &fuzzing::seed_header(),
        &fuzzing::seed_frames(),
        compression,
    )
}

fn end_record() -> Record {
    Record::End(End {
        calls: 0,
        samples: 0,
        gap_calls: 0,
    })
}

#[test]
fn the_seed_streams_are_valid() {
    for c in [Compression::None, Compression::default()] {
        let out = feed(&seed_stream_with(c), &[]);
        assert_eq!(out.result, Ok(()));
        assert_eq!(out.events.len(), 4);
    }
    // The default seed has a frame that zstd shrinks, so both codecs are covered.
    let (_, frames) = seed_units(Compression::default());
    assert!(frames.iter().any(|f| f[16] == CODEC_ZSTD));
    assert!(frames.iter().any(|f| f[16] == CODEC_NONE));
}

#[test]
fn every_single_byte_change_anywhere_is_an_error() {
    let mut tried = 0;
    for c in [Compression::None, Compression::default()] {
        let stream = seed_stream_with(c);
        for i in 0..stream.len() {
            for mask in [0x01u8, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xff] {
                let mut bad = stream.clone();
                bad[i] ^= mask;
                let out = feed(&bad, &[]);
                assert!(
                    out.result.is_err(),
                    "byte {i} ^ {mask:#04x} of a {}-byte stream was accepted",
                    stream.len()
                );
                tried += 1;
            }
        }
    }
    println!("{tried} single-byte changes, all refused");
}

#[test]
fn flipped_bytes_name_the_right_failure() {
    let (head, frames) = seed_units(Compression::default());
    let stream = concat(&head, &frames);
    let flip = |i: usize| {
        let mut b = stream.clone();
        b[i] ^= 0x01;
        feed(&b, &[]).result.unwrap_err()
    };
    assert!(matches!(flip(0), StreamError::NotACapture { .. }));
    assert_eq!(flip(8), StreamError::UnsupportedVersion(0));
    assert!(matches!(
        flip(HEADER_FIXED_LEN),
        StreamError::KeyMismatch { .. }
    ));
    // A header byte after the key id, and the header MAC itself.
    let mac_at = head.len() - MAC_LEN;
    for i in [HEADER_FIXED_LEN + 8, mac_at, head.len() - 1] {
        assert_eq!(
            flip(i),
            StreamError::BadMac {
                what: "header".into(),
                offset: mac_at as u64
            }
        );
    }
    // A payload byte of frame 1 and its MAC.
    let f1 = head.len() + frames[0].len();
    let f1_mac = f1 + frames[1].len() - MAC_LEN;
    for i in [f1 + FRAME_HEAD_LEN, f1_mac + 5] {
        assert_eq!(
            flip(i),
            StreamError::BadMac {
                what: "frame 1".into(),
                offset: f1_mac as u64
            }
        );
    }
    // Frame 1's sequence number.
    assert_eq!(
        flip(f1 + 4),
        StreamError::Sequence {
            expected: 1,
            found: 0,
            offset: f1 as u64 + 4
        }
    );
}

#[test]
fn every_truncation_is_refused() {
    for c in [Compression::None, Compression::default()] {
        let stream = seed_stream_with(c);
        for len in 0..stream.len() {
            let mut r = StreamReader::new(&key());
            // A prefix of a valid stream is never an error in itself...
            r.push(&stream[..len]).unwrap();
            // ...but it is never a complete stream.
            match r.finish() {
                Err(StreamError::NotACapture { .. }) => assert!(len < 8),
                Err(StreamError::Truncated { offset, detail }) => {
                    assert!(len >= 8);
                    assert_eq!(offset, len as u64);
                    assert!(!detail.is_empty());
                }
                other => panic!("prefix of {len} bytes: {other:?}"),
            }
        }
    }
}

#[test]
fn truncation_messages_say_where() {
    let (head, frames) = seed_units(Compression::None);
    let mut r = StreamReader::new(&key());
    r.push(&head).unwrap();
    r.push(&frames[0][..5]).unwrap();
    let e = r.finish().unwrap_err().to_string();
    assert!(e.contains("in frame 0 (5 bytes of 17 received)"), "{e}");
    let mut r = StreamReader::new(&key());
    r.push(&head).unwrap();
    r.push(&frames[0]).unwrap();
    let e = r.finish().unwrap_err().to_string();
    assert!(
        e.contains("ends after 1 frames without an End record"),
        "{e}"
    );
}

fn assert_sequence(bytes: &[u8], expected: u64, found: u64) {
    match feed(bytes, &[]).result {
        Err(StreamError::Sequence {
            expected: e,
            found: f,
            ..
        }) => assert_eq!((e, f), (expected, found)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn removed_duplicated_or_reordered_frames_are_refused() {
    let (head, f) = seed_units(Compression::default());
    // removed
    assert_sequence(&concat(&head, &[f[0].clone(), f[2].clone()]), 1, 2);
    assert_sequence(&concat(&head, &[f[1].clone(), f[2].clone()]), 0, 1);
    // duplicated
    assert_sequence(&concat(&head, &[f[0].clone(), f[0].clone()]), 1, 0);
    assert_sequence(
        &concat(
            &head,
            &[f[0].clone(), f[1].clone(), f[1].clone(), f[2].clone()],
        ),
        2,
        1,
    );
    // reordered
    assert_sequence(
        &concat(&head, &[f[1].clone(), f[0].clone(), f[2].clone()]),
        0,
        1,
    );
    assert_sequence(
        &concat(&head, &[f[0].clone(), f[2].clone(), f[1].clone()]),
        1,
        2,
    );
    // Reordered with the sequence numbers rewritten: the MAC chain catches it.
    let mut a = f[1].clone();
    let mut b = f[0].clone();
    a[4..12].copy_from_slice(&0u64.to_le_bytes());
    b[4..12].copy_from_slice(&1u64.to_le_bytes());
    let out = feed(&concat(&head, &[a, b, f[2].clone()]), &[]);
    assert!(
        matches!(&out.result, Err(StreamError::BadMac { what, .. }) if what == "frame 0"),
        "{:?}",
        out.result
    );
    // The header alone (every frame removed) is truncated, not complete.
    assert!(matches!(
        feed(&head, &[]).result,
        Err(StreamError::Truncated { .. })
    ));
}

#[test]
fn frames_spliced_from_another_stream_are_refused() {
    let (head, f) = seed_units(Compression::default());
    let mut other_header = fuzzing::seed_header();
    other_header.nonce[0] ^= 1;
    let (other_head, g) = write_stream(
        &other_header,
        &fuzzing::seed_frames(),
        Compression::default(),
    );
    // Same key, same sequence numbers, another session: the chain differs from frame 0.
    for bytes in [
        concat(&head, &[f[0].clone(), g[1].clone(), f[2].clone()]),
        concat(&head, &[g[0].clone(), f[1].clone(), f[2].clone()]),
        concat(&other_head, &[f[0].clone(), f[1].clone(), f[2].clone()]),
    ] {
        let out = feed(&bytes, &[]);
        assert!(
            matches!(out.result, Err(StreamError::BadMac { .. })),
            "{:?}",
            out.result
        );
    }
}

#[test]
fn another_key_is_a_key_mismatch() {
    let (mut w, mut bytes) = StreamWriter::new(&other_key(), &fuzzing::seed_header());
    bytes.extend_from_slice(&w.frame(&[end_record()]));
    let mut r = StreamReader::new(&key());
    assert_eq!(
        r.push(&bytes).unwrap_err(),
        StreamError::KeyMismatch {
            stream_key_id: other_key().id(),
            our_key_id: key().id()
        }
    );
    // A header that claims our key id but was MACed with another key.
    bytes[HEADER_FIXED_LEN..HEADER_FIXED_LEN + 8].copy_from_slice(&key().id().to_le_bytes());
    let e = StreamReader::new(&key()).push(&bytes).unwrap_err();
    assert!(
        matches!(e, StreamError::BadMac { ref what, .. } if what == "header"),
        "{e}"
    );
}

#[test]
fn huge_declared_lengths_fail_as_soon_as_they_are_read() {
    // Header body length 4 GiB: refused after its 14 bytes, before any body arrives.
    let mut h = seed_stream()[..HEADER_FIXED_LEN].to_vec();
    h[10..14].copy_from_slice(&u32::MAX.to_le_bytes());
    let e = StreamReader::new(&key()).push(&h).unwrap_err();
    let StreamError::Decode(d) = &e else {
        panic!("{e}")
    };
    assert_eq!((d.what, d.offset), ("header body length", 10));
    assert!(e.to_string().contains("exceeds the cap"), "{e}");

    let (head, frames) = seed_units(Compression::default());
    let frame_at = head.len() as u64;
    let frame_error = |patch: &dyn Fn(&mut Vec<u8>)| {
        let mut f = frames[0][..FRAME_HEAD_LEN].to_vec();
        patch(&mut f);
        let mut r = StreamReader::new(&key());
        r.push(&head).unwrap();
        r.push(&f).unwrap_err()
    };
    let e = frame_error(&|f| f[0..4].copy_from_slice(&(MAX_PAYLOAD_LEN + 1).to_le_bytes()));
    assert!(
        matches!(e, StreamError::Decode(ref d) if d.what == "frame payload length" && d.offset == frame_at),
        "{e}"
    );
    let e = frame_error(&|f| {
        f[12..16].copy_from_slice(&(MAX_RAW_LEN + 1).to_le_bytes());
        f[16] = CODEC_ZSTD;
    });
    assert!(
        matches!(e, StreamError::Decode(ref d) if d.what == "frame raw length" && d.offset == frame_at + 12),
        "{e}"
    );
    let e = frame_error(&|f| f[16] = 9);
    assert!(e.to_string().contains("unknown codec 9"), "{e}");
    let e = frame_error(&|f| {
        f[12..16].copy_from_slice(&5u32.to_le_bytes());
        f[16] = CODEC_NONE;
    });
    assert!(
        e.to_string()
            .contains("uncompressed frame declares 5 raw bytes"),
        "{e}"
    );
}

/// A stream whose frame 0 has exactly these fields, correctly MACed.
fn sealed(codec: u8, raw_len: u32, payload: &[u8]) -> Vec<u8> {
    let (mut w, mut bytes) = StreamWriter::new(&key(), &fuzzing::seed_header());
    bytes.extend_from_slice(&w.seal_unchecked(codec, raw_len, payload));
    bytes
}

fn decode_error(bytes: &[u8]) -> mmaudit_protocol::codec::DecodeError {
    match feed(bytes, &[]).result {
        Err(StreamError::Decode(d)) => d,
        other => panic!("{other:?}"),
    }
}

#[test]
fn authenticated_but_malformed_content_is_a_decode_error() {
    // An unknown record tag inside a valid frame.
    let d = decode_error(&sealed(CODEC_NONE, 5, &[99, 0, 0, 0, 0]));
    assert_eq!(
        (d.unit.as_str(), d.offset, d.what),
        ("frame 0 payload", 0, "record tag")
    );
    // Records after the End record.
    let mut payload = end_record().to_bytes();
    payload.extend_from_slice(&Record::Ledger(fuzzing::seed_call(0)).to_bytes());
    let d = decode_error(&sealed(CODEC_NONE, payload.len() as u32, &payload));
    assert_eq!((d.what, d.offset), ("record after the End record", 29));
    // Not zstd at all.
    let d = decode_error(&sealed(CODEC_ZSTD, 10, b"not zstd!!"));
    assert!(d.problem.contains("zstd"), "{d}");
    // zstd that decompresses to fewer or more bytes than declared.
    let z = zstd::bulk::compress(&end_record().to_bytes(), 3).unwrap();
    let d = decode_error(&sealed(CODEC_ZSTD, 30, &z));
    assert!(
        d.problem
            .contains("decompresses to 29 bytes, the frame declares 30"),
        "{d}"
    );
    let d = decode_error(&sealed(CODEC_ZSTD, 28, &z));
    assert!(d.problem.contains("declared 28 bytes"), "{d}");
    // A decompression bomb: 64 MiB of zeros declared as 1000 bytes is refused without
    // producing more than 1000 bytes.
    let bomb = zstd::bulk::compress(&vec![0u8; MAX_RAW_LEN as usize], 3).unwrap();
    let d = decode_error(&sealed(CODEC_ZSTD, 1000, &bomb));
    assert!(d.problem.contains("declared 1000 bytes"), "{d}");
    // And the right declaration is accepted (as a frame of garbage records).
    let d = decode_error(&sealed(CODEC_ZSTD, MAX_RAW_LEN, &bomb));
    assert_eq!(d.what, "record tag");
}

#[test]
fn an_end_frame_ends_the_stream() {
    let stream = seed_stream();
    let mut r = StreamReader::new(&key());
    r.push(&stream).unwrap();
    assert!(r.is_ended());
    assert_eq!(r.finish(), Ok(()));
    assert_eq!(
        r.push(&[0]).unwrap_err(),
        StreamError::AfterEnd {
            offset: stream.len() as u64
        }
    );
    assert!(r.finish().is_err());
    // A whole valid frame after the End frame is refused just the same.
    let (mut w, mut bytes) = StreamWriter::new(&key(), &fuzzing::seed_header());
    bytes.extend_from_slice(&w.frame(&[end_record()]));
    let end = bytes.len() as u64;
    bytes.extend_from_slice(&w.frame(&[]));
    assert_eq!(
        feed(&bytes, &[]).result,
        Err(StreamError::AfterEnd { offset: end })
    );
}

#[test]
fn not_a_capture_and_other_versions() {
    let e = StreamReader::new(&key()).push(b"GIF89a").unwrap_err();
    assert!(matches!(e, StreamError::NotACapture { .. }), "{e}");
    assert!(e.to_string().starts_with("not an mmaudit capture"), "{e}");
    // Detected at the first wrong byte, without waiting for eight.
    assert!(StreamReader::new(&key()).push(b"MMX").is_err());
    assert!(matches!(
        StreamReader::new(&key()).finish(),
        Err(StreamError::NotACapture { .. })
    ));
    let mut v4 = seed_stream();
    v4[8] = 4;
    assert_eq!(
        StreamReader::new(&key()).push(&v4).unwrap_err(),
        StreamError::UnsupportedVersion(4)
    );
    // The version names the schedule (3: commit mode) and is under the header MAC: a
    // stream cannot be relabelled to another without the key.
    for other in [2, 3] {
        let mut relabelled = seed_stream();
        assert_eq!(relabelled[8], 1);
        relabelled[8] = other;
        assert!(matches!(
            StreamReader::new(&key()).push(&relabelled).unwrap_err(),
            StreamError::BadMac { .. }
        ));
    }
}

#[test]
fn a_failed_reader_stays_failed_and_keeps_earlier_events() {
    let (head, f) = seed_units(Compression::default());
    let mut bad = f[1].clone();
    let n = bad.len();
    bad[n - 1] ^= 1;
    let bytes = concat(&head, &[f[0].clone(), bad, f[2].clone()]);
    let mut r = StreamReader::new(&key());
    let e = r.push(&bytes).unwrap_err();
    assert!(matches!(e, StreamError::BadMac { .. }));
    let before = r.take_events_before_error();
    assert_eq!(before.len(), 2);
    assert!(matches!(before[0], Event::Header(_)));
    assert!(matches!(before[1], Event::Frame { seq: 0, .. }));
    assert!(r.take_events_before_error().is_empty());
    assert_eq!(r.push(&[]).unwrap_err(), e);
    assert_eq!(r.finish().unwrap_err(), e);
    assert_eq!(r.error(), Some(&e));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_are_refused(data in prop::collection::vec(any::<u8>(), 0..600)) {
        prop_assert!(feed(&data, &[]).result.is_err());
        fuzzing::stream(&data);
    }

    #[test]
    fn random_bytes_after_a_valid_header_are_refused(
        data in prop::collection::vec(any::<u8>(), 0..600),
        chunking in prop::collection::vec(any::<u8>(), 0..4),
    ) {
        let (head, _) = seed_units(Compression::default());
        let bytes = concat(&head, &[data]);
        prop_assert!(feed(&bytes, &chunking).result.is_err());
    }
}

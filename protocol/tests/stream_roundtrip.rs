//! Whole streams: writer -> reader gives back the header and every frame's records, in
//! any chunking of the bytes; the writer splits what does not fit in one frame.

mod common;

use common::*;
use mmaudit_protocol::fuzzing;
use mmaudit_protocol::record::{End, Gap, GapReason, OperandData, Record, Sample};
use mmaudit_protocol::stream::{
    Compression, Event, Part, StreamHeader, StreamReader, StreamWriter, CODEC_NONE, CODEC_ZSTD,
    FRAME_HEAD_LEN, MAC_LEN, MAX_PAYLOAD_LEN, MAX_RAW_LEN,
};
use proptest::prelude::*;

/// Frames of arbitrary records, the last one ending with an End record.
fn arb_frames() -> impl Strategy<Value = Vec<Vec<Record>>> {
    (
        prop::collection::vec(prop::collection::vec(arb_body_record(), 0..6), 0..5),
        prop::collection::vec(arb_body_record(), 0..4),
        arb_end(),
    )
        .prop_map(|(mut frames, mut last, end)| {
            last.push(Record::End(end));
            frames.push(last);
            frames
        })
}

fn expected_events(header: &StreamHeader, frames: &[Vec<Record>]) -> Vec<Event> {
    let mut h = header.clone();
    h.key_id = key().id();
    let mut out = vec![Event::Header(h)];
    out.extend(frames.iter().enumerate().map(|(i, f)| Event::Frame {
        seq: i as u64,
        records: f.clone(),
    }));
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn streams_round_trip_in_any_chunking(
        header in arb_header(),
        frames in arb_frames(),
        compression in arb_compression(),
        chunking in prop::collection::vec(any::<u8>(), 0..8),
    ) {
        let (head, fr) = write_stream(&header, &frames, compression);
        let bytes = concat(&head, &fr);
        let out = fuzzing::feed(&bytes, &chunking);
        prop_assert_eq!(out.result, Ok(()));
        prop_assert_eq!(out.events, expected_events(&header, &frames));
        // And byte by byte.
        let out = fuzzing::feed(&bytes, &[1]);
        prop_assert_eq!(out.result, Ok(()));
        prop_assert_eq!(out.events.len(), frames.len() + 1);
    }

    #[test]
    fn bytes_consumed_tracks_complete_units(
        header in arb_header(),
        frames in arb_frames(),
    ) {
        let (head, fr) = write_stream(&header, &frames, Compression::default());
        let mut r = StreamReader::new(&key());
        prop_assert_eq!(r.push(&head[..head.len() - 1]).unwrap(), vec![]);
        prop_assert_eq!(r.bytes_consumed(), 0);
        prop_assert_eq!(r.bytes_received(), head.len() as u64 - 1);
        prop_assert_eq!(r.push(&head[head.len() - 1..]).unwrap().len(), 1);
        let mut at = head.len() as u64;
        for f in &fr {
            prop_assert_eq!(r.bytes_consumed(), at);
            prop_assert_eq!(r.push(f).unwrap().len(), 1);
            at += f.len() as u64;
        }
        prop_assert!(r.is_ended());
        prop_assert_eq!(r.frames(), fr.len() as u64);
        prop_assert_eq!(r.finish(), Ok(()));
    }
}

fn header() -> StreamHeader {
    fuzzing::seed_header()
}

#[test]
fn compressible_frames_use_zstd_and_incompressible_ones_do_not() {
    let (mut w, _) = StreamWriter::new(&key(), &header());
    let zeros = Record::Sample(Sample {
        index: 0,
        alpha: None,
        beta: None,
        scale_a: None,
        scale_b: None,
        scale_c: None,
        scale_d: None,
        a_rows: OperandData::Inline(vec![0; 10_000]),
        b_cols: OperandData::Inline(vec![0; 10_000]),
        c_in: vec![],
        d_out: vec![0; 100],
        bias: vec![],
        scale_rows: Vec::new(),
        scale_cols: Vec::new(),
    });
    let f = w.frame(std::slice::from_ref(&zeros));
    assert_eq!(f[16], CODEC_ZSTD);
    assert!(f.len() < 1000, "{}", f.len());
    // A tiny frame does not shrink under zstd: it travels as it is.
    let f = w.frame(&[]);
    assert_eq!((f[16], f.len()), (CODEC_NONE, FRAME_HEAD_LEN + MAC_LEN));
    // Compression off.
    w.set_compression(Compression::None);
    let f = w.frame(std::slice::from_ref(&zeros));
    assert_eq!(f[16], CODEC_NONE);
    assert_eq!(f.len(), FRAME_HEAD_LEN + zeros.encoded_len() + MAC_LEN);
    assert_eq!(w.next_seq(), 3);
}

#[test]
fn frame_raw_refuses_what_no_frame_can_carry() {
    let (mut w, _) = StreamWriter::new(&key(), &header());
    let e = w.frame_raw(&vec![0; MAX_RAW_LEN as usize + 1]).unwrap_err();
    assert_eq!(e.len, MAX_RAW_LEN as usize + 1);
    assert!(e.to_string().contains("does not fit"));
    // Uncompressed, 16 MiB + 1 does not fit either; nothing was consumed.
    let mut w = w.with_compression(Compression::None);
    assert!(w.frame_raw(&vec![0; MAX_PAYLOAD_LEN as usize + 1]).is_err());
    assert_eq!(w.next_seq(), 0);
    // 64 MiB of zeros compresses to fit.
    w.set_compression(Compression::default());
    assert!(w.frame_raw(&vec![0; MAX_RAW_LEN as usize]).is_ok());
}

#[test]
fn oversized_records_are_split_or_replaced_never_dropped() {
    let (mut w, head) = StreamWriter::new(&key(), &header());
    w.set_compression(Compression::None);
    let big = MAX_PAYLOAD_LEN as usize;
    let huge_sample = Record::Sample(Sample {
        index: 77,
        alpha: None,
        beta: None,
        scale_a: None,
        scale_b: None,
        scale_c: None,
        scale_d: None,
        a_rows: OperandData::Inline(vec![1; big]),
        b_cols: OperandData::Inline(vec![]),
        c_in: vec![],
        d_out: vec![],
        bias: vec![],
        scale_rows: Vec::new(),
        scale_cols: Vec::new(),
    });
    let huge_gap = Record::Gap(Gap {
        indices: (0..(big as u64 / 8 + 10)).collect(),
        reason: GapReason::QueueFull,
        detail: "burst".into(),
    });
    let small = Record::Ledger(fuzzing::seed_call(5));
    let end = Record::End(End {
        calls: 1,
        samples: 0,
        gap_calls: 0,
    });
    let bytes = w.frame(&[
        small.clone(),
        huge_sample,
        huge_gap.clone(),
        small.clone(),
        end,
    ]);
    assert_eq!(w.replaced_samples(), 1);
    let mut all = head;
    all.extend_from_slice(&bytes);
    let out = fuzzing::feed(&all, &[]);
    assert_eq!(out.result, Ok(()));
    let records: Vec<Record> = out
        .events
        .into_iter()
        .filter_map(|e| match e {
            Event::Frame { records, .. } => Some(records),
            Event::Header(_) => None,
        })
        .flatten()
        .collect();
    assert_eq!(records[0], small);
    let Record::Gap(g) = &records[1] else {
        panic!("{:?}", records[1].tag())
    };
    assert_eq!(
        (g.indices.as_slice(), g.reason),
        (&[77][..], GapReason::Internal)
    );
    assert!(g.detail.contains("exceeds the frame limit"), "{}", g.detail);
    // The big gap arrives as several gap records naming the same calls, in order.
    let mut indices = Vec::new();
    let mut i = 2;
    while let Record::Gap(g) = &records[i] {
        assert_eq!(
            (g.reason, g.detail.as_str()),
            (GapReason::QueueFull, "burst")
        );
        indices.extend_from_slice(&g.indices);
        i += 1;
    }
    assert!(i > 3, "the gap was split");
    let Record::Gap(original) = huge_gap else {
        unreachable!()
    };
    assert_eq!(indices, original.indices);
    assert_eq!(records[i], small);
    assert!(matches!(records[i + 1], Record::End(_)));
    assert!(w.next_seq() >= 2, "split into several frames");
}

#[test]
fn writer_cuts_long_names_so_the_header_always_decodes() {
    let mut h = header();
    h.host = "é".repeat(1000);
    h.devices = (0..100).map(|i| format!("GPU-{i}")).collect();
    h.producer = "x".repeat(300);
    h.key_id = 12345; // ignored: the writer uses the key's id
    let (_, bytes) = StreamWriter::new(&key(), &h);
    let mut r = StreamReader::new(&key());
    let ev = r.push(&bytes).unwrap();
    let Event::Header(got) = &ev[0] else { panic!() };
    assert_eq!(got.key_id, key().id());
    assert_eq!(got.host, "é".repeat(128));
    assert_eq!(got.devices.len(), 64);
    assert_eq!(got.devices[63], "GPU-63");
    assert_eq!(got.producer.len(), 256);
    assert_eq!(r.header(), Some(got));
}

#[test]
fn writer_and_reader_are_send() {
    fn send<T: Send>() {}
    send::<StreamWriter>();
    send::<StreamReader>();
}

/// The test vector of docs/PROTOCOL.md ("Test vector") is what the writer produces and
/// the reader accepts.
#[test]
fn the_documented_test_vector_matches() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/PROTOCOL.md"))
        .expect("docs/PROTOCOL.md");
    let begin = doc
        .find("<!-- test vector begin -->")
        .expect("begin marker");
    let end = doc.find("<!-- test vector end -->").expect("end marker");
    let documented: Vec<u8> = doc[begin..end]
        .lines()
        .filter(|l| !l.starts_with("<!--") && !l.starts_with("```"))
        .flat_map(|l| l.split_whitespace())
        .map(|h| u8::from_str_radix(h, 16).expect("hex byte"))
        .collect();

    let key = mmaudit_protocol::keys::Key::from_bytes(std::array::from_fn(|i| i as u8));
    assert_eq!(key.id(), 0x9a22_0929_936d_7dfa);
    let header = StreamHeader {
        key_id: key.id(),
        nonce: [0xaa; 16],
        config: mmaudit_protocol::config::SamplingConfig::default(),
        stream_id: 1,
        segment: 0,
        first_index: 0,
        pid: 2,
        host: "h".into(),
        started_unix_ns: 3,
        devices: vec!["gpu0".into()],
        producer: "p".into(),
        schedule: mmaudit_protocol::schedule::ScheduleVersion::V1,
    };
    let (mut w, mut bytes) = StreamWriter::new(&key, &header);
    w.set_compression(Compression::None);
    let end_record = Record::End(End {
        calls: 0,
        samples: 0,
        gap_calls: 0,
    });
    bytes.extend_from_slice(&w.frame(std::slice::from_ref(&end_record)));
    assert_eq!(bytes, documented);

    let mut r = StreamReader::new(&key);
    let events = r.push(&documented).unwrap();
    assert_eq!(r.finish(), Ok(()));
    assert_eq!(
        events,
        vec![
            Event::Header(header),
            Event::Frame {
                seq: 0,
                records: vec![end_record]
            }
        ]
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]

    /// A producer may hand the writer ledger records it encoded itself (with flags
    /// added as it encodes them): the frames are byte for byte those of the records.
    #[test]
    fn frames_of_encoded_parts_equal_frames_of_the_records(
        calls in prop::collection::vec((arb_call(), any::<u16>()), 0..12),
        others in prop::collection::vec(arb_body_record(), 0..4),
        cut in any::<prop::sample::Index>(),
        compression in arb_compression(),
    ) {
        let flags = mmaudit_protocol::call::flags::REJECTED | mmaudit_protocol::call::flags::NO_SESSION;
        // The records as a producer means them: each call with its added flags.
        let mut records: Vec<Record> = calls
            .iter()
            .map(|(c, extra)| {
                let mut c = c.clone();
                c.flags |= extra & flags;
                Record::Ledger(c)
            })
            .collect();
        // The same, the ledger records encoded in two runs, the other records between.
        let at = cut.index(calls.len() + 1);
        let encode = |range: &[(mmaudit_protocol::call::GemmCall, u16)]| {
            let mut w = mmaudit_protocol::codec::Writer::new();
            for (c, extra) in range {
                Record::encode_ledger(c, extra & flags, &mut w);
            }
            w.buf
        };
        let (first, second) = (encode(&calls[..at]), encode(&calls[at..]));
        let mut parts = vec![Part::Encoded(&first)];
        parts.extend(others.iter().map(Part::Record));
        parts.push(Part::Encoded(&second));
        let tail = records.split_off(at);
        records.extend(others.iter().cloned());
        records.extend(tail);
        let (mut a, _) = StreamWriter::new(&key(), &header());
        let (mut b, _) = StreamWriter::new(&key(), &header());
        a.set_compression(compression);
        b.set_compression(compression);
        prop_assert_eq!(a.frame_parts(parts), b.frame(&records));
        // And the next frame still chains (the writers agree on their state).
        prop_assert_eq!(a.frame(&[]), b.frame(&[]));
    }
}

#[test]
fn an_encoded_run_longer_than_a_frame_is_cut_at_record_boundaries() {
    let call = fuzzing::seed_call(0);
    let per = Record::Ledger(call.clone()).encoded_len();
    let count = MAX_PAYLOAD_LEN as usize / per + 100;
    let mut w = mmaudit_protocol::codec::Writer::new();
    let records: Vec<Record> = (0..count as u64)
        .map(|i| {
            let c = fuzzing::seed_call(i);
            Record::encode_ledger(&c, 0, &mut w);
            Record::Ledger(c)
        })
        .collect();
    let (mut a, head) = StreamWriter::new(&key(), &header());
    let (mut b, _) = StreamWriter::new(&key(), &header());
    let bytes = a.frame_parts([Part::Encoded(&w.buf)]);
    assert_eq!(bytes, b.frame(&records));
    let mut r = StreamReader::new(&key());
    let mut events = r.push(&head).unwrap();
    events.extend(r.push(&bytes).unwrap());
    let frames: Vec<&Vec<Record>> = events
        .iter()
        .filter_map(|e| match e {
            Event::Frame { records, .. } => Some(records),
            _ => None,
        })
        .collect();
    assert_eq!(frames.len(), 2, "one full frame and the rest");
    let back: Vec<Record> = frames.into_iter().flatten().cloned().collect();
    assert_eq!(back, records);
}

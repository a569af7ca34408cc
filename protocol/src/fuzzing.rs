//! Fuzz harnesses for the stream and record decoders, kept in the crate so that any
//! driver can call them: the randomized tests in `tests/`, or a cargo-fuzz / AFL
//! target where a nightly toolchain exists (none does on the project's build machines).
//!
//! Each harness takes arbitrary bytes, must return without panicking, and panics only
//! when a property of the decoder is violated (that is a bug found):
//! - [`stream`]: the outcome of decoding does not depend on how the input is chunked;
//! - [`records`]: a record that decodes re-encodes to exactly the bytes it came from;
//! - [`authenticated_payload`]: arbitrary bytes inside a correctly MACed frame (the only
//!   way a fuzzer gets past the MAC) decode to records or to a `Decode` error, and
//!   what decodes re-encodes to the same payload.
//! - [`hello`]: the verifier's hello reader gives the same outcome in any chunking, and
//!   [`hello_body`]: arbitrary bytes as the body of a correctly MACed hello decode to a
//!   hello that re-encodes to the same bytes, or to a `Decode` error.
//! - [`challenges`]: the prover's reader of commit-mode challenge frames gives the same
//!   outcome in any chunking, and every frame it returns re-encodes to the bytes it came
//!   from; [`challenge_body`]: arbitrary bytes as the body of a correctly MACed challenge
//!   frame decode to a frame that re-encodes to the same bytes, or to a `Decode` error.

use crate::call::{
    flags, BatchForm, ComputeType, DType, EntryPoint, Epilogue, GemmCall, Op, Operand, Order,
    ReplayOf, Scalar,
};
use crate::codec::{Reader, Writer};
use crate::commit::frames::{
    Challenge, ChallengeError, ChallengeFrame, ChallengeReader, ChallengeWriter,
    CHALLENGE_MAC_DOMAIN, MAX_CHALLENGE_FRAME,
};
use crate::config::SamplingConfig;
use crate::handshake::{
    restamp_nonce, HandshakeError, HelloReader, HelloTensor, ServerHello, HELLO_FIXED_LEN,
    HELLO_MAGIC, HELLO_VERSION,
};
use crate::keys::Key;
use crate::record::{End, Gap, GapReason, Notice, NoticeKind, OperandData, Record, Sample};
use crate::schedule::Plan;
use crate::stream::{
    Compression, Event, StreamError, StreamHeader, StreamReader, StreamWriter, CODEC_NONE,
    CODEC_ZSTD, MAC_LEN,
};

/// The key of every fuzzing stream.
pub fn key() -> Key {
    Key::from_bytes(*b"mmaudit fuzzing key, not secret.")
}

/// The header of the seed stream.
pub fn seed_header() -> StreamHeader {
    StreamHeader {
        key_id: key().id(),
        nonce: *b"fuzzing nonce 16",
        config: SamplingConfig::default(),
        stream_id: 0x5eed,
        segment: 0,
        first_index: 0,
        pid: 4242,
        host: "fuzz-host".into(),
        started_unix_ns: 1_700_000_000_000_000_000,
        devices: vec!["GPU-00000000-fuzz".into(), "sim".into()],
        producer: "mmaudit fuzzing seed".into(),
        schedule: crate::schedule::ScheduleVersion::V1,
    }
}

/// A small f16 GEMM call with device-side beta, bias and in-place C.
pub fn seed_call(index: u64) -> GemmCall {
    let op = |ld| Operand {
        dtype: DType::F16,
        order: Order::Col,
        ld,
        batch_stride: 64,
    };
    GemmCall {
        index,
        entry: EntryPoint::GemmStridedBatchedEx,
        device: 0,
        stream: 7,
        op_a: Op::T,
        op_b: Op::N,
        m: 4,
        n: 3,
        k: 2,
        batch: 2,
        batch_form: BatchForm::Strided,
        a: op(2),
        b: op(2),
        c: op(4),
        d: op(4),
        compute: ComputeType::F32,
        scale_type: DType::F32,
        alpha: Scalar::Host(1.5),
        beta: Scalar::Device,
        epilogue: Epilogue::Relu,
        bias_type: DType::F16,
        flags: flags::BIAS | flags::IN_PLACE,
        replay: None,
    }
}

/// The frames of the seed stream: every record type, the End record last.
pub fn seed_frames() -> Vec<Vec<Record>> {
    let sample = Sample {
        index: 1,
        alpha: None,
        beta: Some(0.25),
        scale_a: None,
        scale_b: None,
        scale_c: None,
        scale_d: None,
        a_rows: OperandData::Inline(vec![0x3c; 8]),
        b_cols: OperandData::Inline(vec![0x40; 4]),
        c_in: vec![1, 2, 3, 4],
        d_out: vec![5, 6, 7, 8],
        bias: vec![0, 0x3c, 0, 0x3c],
        scale_rows: Vec::new(),
        scale_cols: Vec::new(),
    };
    vec![
        vec![
            Record::Ledger(seed_call(0)),
            Record::Ledger(seed_call(1)),
            Record::Sample(sample),
        ],
        vec![
            Record::Ledger(seed_call(2)),
            Record::Ledger(GemmCall {
                flags: flags::NO_SESSION,
                ..seed_call(3)
            }),
            // a GEMM of a CUDA graph replay (its encoding is 20 bytes longer)
            Record::Ledger(GemmCall {
                flags: flags::REPLAYED,
                replay: Some(ReplayOf {
                    graph: 1,
                    exec: 2,
                    replay: 3,
                    node: 4,
                }),
                ..seed_call(4)
            }),
            Record::Sample(Sample {
                index: 2,
                alpha: None,
                beta: Some(0.5),
                scale_a: None,
                scale_b: None,
                scale_c: None,
                scale_d: None,
                a_rows: OperandData::Reference {
                    tensor: 1,
                    matrices: vec![0],
                    evidence: vec![0x3c, 0],
                },
                b_cols: OperandData::Inline(vec![0x40; 4]),
                c_in: vec![1, 2],
                d_out: vec![5, 6],
                bias: vec![0, 0x3c],
                scale_rows: Vec::new(),
                scale_cols: Vec::new(),
            }),
            Record::Gap(Gap {
                indices: vec![2],
                reason: GapReason::RingFull,
                detail: "ring full".into(),
            }),
            Record::Notice(Notice {
                kind: NoticeKind::Warning,
                message: "seed".into(),
            }),
        ],
        vec![Record::End(End {
            calls: 5,
            samples: 2,
            gap_calls: 1,
        })],
    ]
}

/// A valid small stream: [`seed_header`], then [`seed_frames`], with `compression`.
pub fn seed_stream_with(compression: Compression) -> Vec<u8> {
    let (mut w, mut out) = StreamWriter::new(&key(), &seed_header());
    w.set_compression(compression);
    for f in seed_frames() {
        out.extend_from_slice(&w.frame(&f));
    }
    out
}

/// A valid small stream for seeding a fuzzer (default compression).
pub fn seed_stream() -> Vec<u8> {
    seed_stream_with(Compression::default())
}

/// What feeding a stream produced: every event, including those completed before an
/// error, and the final verdict (the first error, or `finish()`).
#[derive(Debug)]
pub struct Outcome {
    /// Events in order.
    pub events: Vec<Event>,
    /// `Ok` iff the stream was complete and valid.
    pub result: Result<(), StreamError>,
}

/// Feeds `bytes` to a fresh reader ([`key`]) in chunks whose sizes come from `chunking`
/// cyclically (a byte `c` means `c` bytes, 0 means everything left; an empty `chunking`
/// means one chunk), then calls `finish`.
pub fn feed(bytes: &[u8], chunking: &[u8]) -> Outcome {
    let mut reader = StreamReader::new(&key());
    let mut events = Vec::new();
    let mut rest = bytes;
    let mut sizes = chunking.iter().cycle();
    while !rest.is_empty() {
        let n = match sizes.next() {
            Some(&c) if c != 0 => (c as usize).min(rest.len()),
            _ => rest.len(),
        };
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        match reader.push(chunk) {
            Ok(mut e) => events.append(&mut e),
            Err(err) => {
                events.append(&mut reader.take_events_before_error());
                return Outcome {
                    events,
                    result: Err(err),
                };
            }
        }
    }
    Outcome {
        events,
        result: reader.finish(),
    }
}

/// A canonical byte form of an event, for comparisons that must not depend on float
/// equality (a NaN in a sample is not equal to itself).
pub fn event_bytes(e: &Event) -> Vec<u8> {
    let mut w = Writer::new();
    match e {
        Event::Header(h) => {
            w.u8(0);
            h.encode_body(&mut w);
        }
        Event::Frame { seq, records } => {
            w.u8(1);
            w.u64(*seq);
            for r in records {
                r.encode(&mut w);
            }
        }
    }
    w.buf
}

fn outcome_bytes(o: &Outcome) -> (Vec<Vec<u8>>, Result<(), StreamError>) {
    (o.events.iter().map(event_bytes).collect(), o.result.clone())
}

/// Harness: `data[0]` says how many of the following bytes are a chunking for
/// [`feed`]; the rest is the stream. Decodes it whole, in that chunking and byte by
/// byte, panics if the outcomes differ, and returns the whole-input outcome.
pub fn stream(data: &[u8]) -> Outcome {
    let Some((&n, rest)) = data.split_first() else {
        return feed(&[], &[]);
    };
    let (chunking, bytes) = rest.split_at((n as usize).min(rest.len()));
    let whole = feed(bytes, &[]);
    let chunked = feed(bytes, chunking);
    let bytewise = feed(bytes, &[1]);
    assert_eq!(outcome_bytes(&whole), outcome_bytes(&chunked));
    assert_eq!(outcome_bytes(&whole), outcome_bytes(&bytewise));
    whole
}

/// Harness: decodes records from `data` until the first error; each record that
/// decodes must re-encode to exactly the bytes it was read from.
pub fn records(data: &[u8]) {
    let mut r = Reader::new(data, 0, "fuzz");
    while !r.is_empty() {
        let start = r.offset() as usize;
        let Ok(record) = Record::decode(&mut r) else {
            return;
        };
        let end = r.offset() as usize;
        assert_eq!(record.to_bytes(), data[start..end], "{record:?}");
        assert_eq!(record.encoded_len(), end - start);
    }
}

/// Harness: `data` becomes the payload of frame 0 of a stream with a valid header, sent
/// once uncompressed and once with codec 1 (as written by zstd when `data[0]` is even,
/// else as raw bytes claimed to be zstd with `raw_len` from `data[1..3]`). Decoding
/// must give a `Decode` error or records that re-encode to the payload.
pub fn authenticated_payload(data: &[u8]) {
    let (mut w, mut plain) = StreamWriter::new(&key(), &seed_header());
    plain.extend_from_slice(&w.seal_unchecked(CODEC_NONE, data.len() as u32, data));
    check_payload(&plain, data);

    let (mut w, mut packed) = StreamWriter::new(&key(), &seed_header());
    let compressed = data.first().is_some_and(|b| b % 2 == 0);
    if compressed {
        let z = zstd::bulk::compress(data, 1).unwrap_or_default();
        packed.extend_from_slice(&w.seal_unchecked(CODEC_ZSTD, data.len() as u32, &z));
        check_payload(&packed, data);
    } else {
        let raw_len = match data {
            [_, a, b, ..] => u16::from_le_bytes([*a, *b]) as u32,
            _ => 0,
        };
        packed.extend_from_slice(&w.seal_unchecked(CODEC_ZSTD, raw_len, data));
        let o = feed(&packed, &[]);
        assert!(
            matches!(
                o.result,
                Ok(()) | Err(StreamError::Decode(_) | StreamError::Truncated { .. })
            ),
            "{:?}",
            o.result
        );
    }
}

fn check_payload(stream: &[u8], payload: &[u8]) {
    let o = feed(stream, &[]);
    match &o.result {
        // No End record in the payload, or one that decodes.
        Ok(()) | Err(StreamError::Truncated { .. }) => {
            let mut w = Writer::new();
            for e in &o.events {
                if let Event::Frame { records, .. } = e {
                    for r in records {
                        r.encode(&mut w);
                    }
                }
            }
            assert_eq!(
                w.buf, payload,
                "decoded records do not re-encode to the payload"
            );
        }
        Err(StreamError::Decode(_)) => {}
        Err(e) => panic!("an authenticated frame gave {e}"),
    }
}

/// The hello of the fuzzing seeds: a sampling configuration other than the default
/// (every call, a cap on rows) and two tensors, one of them stacked.
pub fn seed_hello() -> ServerHello {
    ServerHello {
        key_id: key().id(),
        nonce: *b"fuzzing nonce 16",
        sampling: SamplingConfig {
            call_ppm: 1_000_000,
            max_rows: 64,
            ..SamplingConfig::default()
        },
        tensors: vec![
            HelloTensor {
                id: 1,
                dtype: crate::call::DType::F16,
                matrices: 1,
                rows: 4,
                cols: 2,
                fingerprints: vec![1, 2, 3, 4],
            },
            HelloTensor {
                id: 7,
                dtype: crate::call::DType::BF16,
                matrices: 2,
                rows: 2,
                cols: 3,
                fingerprints: vec![5, 6, 7, 8],
            },
        ],
        mode: crate::handshake::HelloMode::Sampling,
    }
}

/// The encoded [`seed_hello`].
pub fn seed_hello_bytes() -> Vec<u8> {
    seed_hello().encode(&key()).unwrap_or_default()
}

fn feed_hello(bytes: &[u8], chunking: &[u8]) -> Result<Option<ServerHello>, HandshakeError> {
    let mut reader = HelloReader::new(&key());
    let mut hello = None;
    let mut rest = bytes;
    let mut sizes = chunking.iter().cycle();
    while !rest.is_empty() {
        let n = match sizes.next() {
            Some(&c) if c != 0 => (c as usize).min(rest.len()),
            _ => rest.len(),
        };
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        if let Some(h) = reader.push(chunk)? {
            hello = Some(h);
        }
    }
    reader.finish()?;
    Ok(hello)
}

/// Harness: `data[0]` says how many of the following bytes are a chunking (as for
/// [`stream`]); the rest is a hello. Decodes it whole, in that chunking and byte by
/// byte, panics if the outcomes differ; a hello that decodes must re-encode to exactly
/// the input. Returns the whole-input outcome.
pub fn hello(data: &[u8]) -> Result<Option<ServerHello>, HandshakeError> {
    let Some((&n, rest)) = data.split_first() else {
        return feed_hello(&[], &[]);
    };
    let (chunking, bytes) = rest.split_at((n as usize).min(rest.len()));
    let whole = feed_hello(bytes, &[]);
    assert_eq!(whole, feed_hello(bytes, chunking));
    assert_eq!(whole, feed_hello(bytes, &[1]));
    if let Ok(Some(h)) = &whole {
        assert_eq!(h.encode(&key()).ok().as_deref(), Some(bytes));
    }
    whole
}

/// Harness: `data` becomes the body of a hello with a valid head and MAC (the only way a
/// fuzzer gets past the MAC). Decoding must give a `Decode` error (an invalid sampling
/// configuration among them), a key mismatch (the first 8 bytes are not the key id), or
/// a hello whose configuration is valid and that re-encodes to the same bytes.
pub fn hello_body(data: &[u8]) {
    let mut body = data.to_vec();
    if body.len() >= 8 && data[0].is_multiple_of(2) {
        body[..8].copy_from_slice(&key().id().to_le_bytes());
    }
    let mut w = Writer::new();
    w.raw(&HELLO_MAGIC);
    w.u16(HELLO_VERSION);
    w.u32(body.len() as u32);
    w.raw(&body);
    w.raw(&[0; 32]);
    let mut bytes = w.buf;
    if bytes.len() >= HELLO_FIXED_LEN + 24 + 32 {
        // A correct MAC over the bytes as they are (the nonce stays the body's own).
        let mut nonce = [0u8; 16];
        nonce.copy_from_slice(&body[8..24]);
        restamp_nonce(&mut bytes, &key(), nonce);
    } else {
        let mac = {
            let mut h = blake3::Hasher::new_keyed(&key().mac_key());
            h.update(crate::handshake::HELLO_MAC_DOMAIN);
            h.update(&bytes[..bytes.len() - 32]);
            *h.finalize().as_bytes()
        };
        let at = bytes.len() - 32;
        bytes[at..].copy_from_slice(&mac);
    }
    match ServerHello::decode(&key(), &bytes) {
        Ok(h) => {
            assert_eq!(h.sampling.validate(), Ok(()), "{h:?}");
            assert_eq!(h.encode(&key()).ok(), Some(bytes), "{h:?}");
        }
        Err(HandshakeError::Decode(_) | HandshakeError::KeyMismatch { .. }) => {}
        Err(e) => panic!("an authenticated hello body gave {e}"),
    }
}

/// The MAC of the hello that the challenge frames of the fuzzing harnesses follow (the
/// previous MAC of frame 0).
pub const CHALLENGE_HELLO_MAC: [u8; MAC_LEN] = *b"fuzzing hello MAC, 32 bytes long";

/// Challenge frames for seeding a fuzzer, written with [`key`] after
/// [`CHALLENGE_HELLO_MAC`]: an empty frame, a frame with two challenges (one of several
/// batch entries), an empty frame that only moves `through` on, and a frame with one
/// challenge of an empty plan.
pub fn seed_challenge_frames() -> Vec<Vec<u8>> {
    let plan = |rows: &[u64], cols: &[u64], batches: &[u64]| Plan {
        rows: rows.to_vec(),
        cols: cols.to_vec(),
        batches: batches.to_vec(),
    };
    let mut w = ChallengeWriter::new(&key(), CHALLENGE_HELLO_MAC);
    vec![
        w.frame(3, &[]),
        w.frame(
            9,
            &[
                Challenge {
                    index: 5,
                    plan: plan(&[0, 2, 7], &[1], &[0]),
                },
                Challenge {
                    index: 9,
                    plan: plan(&[3], &[0, 4], &[1, 2, 5]),
                },
            ],
        ),
        w.frame(12, &[]),
        w.frame(
            1 << 40,
            &[Challenge {
                index: 1 << 40,
                plan: plan(&[], &[], &[]),
            }],
        ),
    ]
}

/// What feeding challenge frames produced: the frames returned, and the verdict (the
/// first error, or the bytes held of an incomplete frame at the end).
#[derive(Debug)]
pub struct ChallengeOutcome {
    /// Frames in order.
    pub frames: Vec<ChallengeFrame>,
    /// `Ok(buffered)` iff no byte was refused.
    pub result: Result<usize, ChallengeError>,
}

/// Feeds `bytes` to a fresh [`ChallengeReader`] ([`key`], [`CHALLENGE_HELLO_MAC`]) in
/// chunks as [`feed`] does, stopping at the first error.
pub fn feed_challenges(bytes: &[u8], chunking: &[u8]) -> ChallengeOutcome {
    let mut reader = ChallengeReader::new(&key(), CHALLENGE_HELLO_MAC);
    let mut frames = Vec::new();
    let mut rest = bytes;
    let mut sizes = chunking.iter().cycle();
    while !rest.is_empty() {
        let n = match sizes.next() {
            Some(&c) if c != 0 => (c as usize).min(rest.len()),
            _ => rest.len(),
        };
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        match reader.push(chunk) {
            Ok(mut f) => frames.append(&mut f),
            Err(e) => {
                return ChallengeOutcome {
                    frames,
                    result: Err(e),
                }
            }
        }
    }
    ChallengeOutcome {
        frames,
        result: Ok(reader.buffered()),
    }
}

/// Harness: `data[0]` says how many of the following bytes are a chunking (as for
/// [`stream`]); the rest is the challenge bytes a prover receives. Decodes them whole,
/// in that chunking and byte by byte, and panics if the verdicts differ or if the frames
/// returned differ beyond what the reader's contract allows: a push that fails returns
/// none of the frames it completed, so each reading returns a prefix of the byte-by-byte
/// one's frames (which are every frame before the error), and all of them when nothing
/// failed. Each of those frames must re-encode ([`ChallengeWriter`], same key, hello MAC
/// and sequence) to exactly the bytes it was read from. Returns the whole-input outcome.
pub fn challenges(data: &[u8]) -> ChallengeOutcome {
    let Some((&n, rest)) = data.split_first() else {
        return feed_challenges(&[], &[]);
    };
    let (chunking, bytes) = rest.split_at((n as usize).min(rest.len()));
    let whole = feed_challenges(bytes, &[]);
    let chunked = feed_challenges(bytes, chunking);
    let bytewise = feed_challenges(bytes, &[1]);
    for o in [&whole, &chunked] {
        assert_eq!(o.result, bytewise.result);
        assert!(bytewise.frames.starts_with(&o.frames), "{o:?} {bytewise:?}");
        if o.result.is_ok() {
            assert_eq!(o.frames, bytewise.frames);
        }
    }
    let mut w = ChallengeWriter::new(&key(), CHALLENGE_HELLO_MAC);
    let mut at = 0;
    for (i, f) in bytewise.frames.iter().enumerate() {
        assert_eq!(f.seq, i as u64, "{f:?}");
        let again = w.frame(f.through, &f.challenges);
        assert_eq!(
            bytes.get(at..at + again.len()),
            Some(&again[..]),
            "frame {i} does not re-encode to its bytes: {f:?}"
        );
        at += again.len();
    }
    if let Ok(buffered) = bytewise.result {
        assert_eq!(at + buffered, bytes.len());
    }
    whole
}

/// Harness: `data` becomes the body (`seq` to the last challenge) of challenge frame 0,
/// with its length and a correct MAC (the only way a fuzzer gets past the MAC); when
/// `data[0]` is even its first 8 bytes are made sequence 0. Decoding must give a
/// `Decode` error, a length or sequence error that the bytes explain, or one frame that
/// re-encodes to the same bytes.
pub fn challenge_body(data: &[u8]) {
    let mut body = data.to_vec();
    if body.len() >= 8 && data[0].is_multiple_of(2) {
        body[..8].copy_from_slice(&0u64.to_le_bytes());
    }
    let mut w = Writer::new();
    w.u32(body.len() as u32);
    w.raw(&body);
    let mac = {
        let mut h = blake3::Hasher::new_keyed(&key().mac_key());
        h.update(CHALLENGE_MAC_DOMAIN);
        h.update(&CHALLENGE_HELLO_MAC);
        h.update(&w.buf);
        *h.finalize().as_bytes()
    };
    w.raw(&mac);
    let bytes = w.buf;
    let len = body.len() as u32;
    match ChallengeReader::new(&key(), CHALLENGE_HELLO_MAC).push(&bytes) {
        Ok(frames) => {
            assert_eq!(frames.len(), 1, "{frames:?}");
            let again = ChallengeWriter::new(&key(), CHALLENGE_HELLO_MAC)
                .frame(frames[0].through, &frames[0].challenges);
            assert_eq!(again, bytes, "{frames:?}");
        }
        Err(ChallengeError::Length { seq: 0, len: l }) => {
            assert_eq!(l, len);
            assert!(!(20..=MAX_CHALLENGE_FRAME).contains(&len));
        }
        Err(ChallengeError::Sequence { got, want: 0 }) => {
            assert_eq!(body.get(..8), Some(&got.to_le_bytes()[..]));
            assert_ne!(got, 0);
        }
        Err(ChallengeError::Decode(_)) => {}
        Err(e) => panic!("an authenticated challenge frame gave {e}"),
    }
}

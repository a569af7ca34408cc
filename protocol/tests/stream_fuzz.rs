//! A long randomized run of the decoder on stable Rust (no cargo-fuzz without nightly):
//! mutations of valid streams, valid records and authenticated payloads, plus random
//! bytes, through the harnesses of `mmaudit_protocol::fuzzing`. Prints how many inputs
//! were tried (run with `--nocapture` to see it). `MMAUDIT_FUZZ_ITERS` sets the number
//! of inputs and `MMAUDIT_FUZZ_SEED` the seed; a failure prints the seed and the input
//! index to reproduce it.

mod common;

use common::*;
use mmaudit_protocol::codec::Writer;
use mmaudit_protocol::fuzzing;
use mmaudit_protocol::record::Record;
use mmaudit_protocol::stream::{Compression, StreamError, MAX_PAYLOAD_LEN, MAX_RAW_LEN};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn below(rng: &mut ChaCha8Rng, n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (rng.next_u64() % n as u64) as usize
    }
}

fn random_bytes(rng: &mut ChaCha8Rng, max: usize) -> Vec<u8> {
    let mut v = vec![0; below(rng, max + 1)];
    rng.fill_bytes(&mut v);
    v
}

const INTERESTING_U32: [u32; 9] = [
    0,
    1,
    17,
    0x7fff_ffff,
    u32::MAX,
    MAX_PAYLOAD_LEN,
    MAX_PAYLOAD_LEN + 1,
    MAX_RAW_LEN,
    MAX_RAW_LEN + 1,
];

/// One random mutation of `seed` (possibly none at all).
fn mutate(rng: &mut ChaCha8Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    let rounds = 1 + below(rng, 3);
    for _ in 0..rounds {
        let len = v.len();
        match below(rng, 10) {
            0 if len > 0 => {
                let i = below(rng, len);
                v[i] ^= 1 << below(rng, 8);
            }
            1 if len > 0 => {
                let i = below(rng, len);
                v[i] = [0, 0xff, 0x7f, 0x80, rng.next_u32() as u8][below(rng, 5)];
            }
            2 if len >= 4 => {
                let i = below(rng, len - 3);
                let x = INTERESTING_U32[below(rng, INTERESTING_U32.len())];
                v[i..i + 4].copy_from_slice(&x.to_le_bytes());
            }
            3 => v.truncate(below(rng, len + 1)),
            4 => {
                let i = below(rng, len + 1);
                let ins = random_bytes(rng, 16);
                v.splice(i..i, ins);
            }
            5 if len > 0 => {
                let i = below(rng, len);
                let j = i + below(rng, (len - i).min(64) + 1);
                v.drain(i..j);
            }
            6 if len > 0 => {
                let i = below(rng, len);
                let j = i + below(rng, (len - i).min(256) + 1);
                let at = below(rng, len + 1);
                let piece = v[i..j].to_vec();
                v.splice(at..at, piece);
            }
            7 => {
                let extra = random_bytes(rng, 32);
                v.extend_from_slice(&extra);
            }
            8 => {
                let cut = below(rng, len + 1);
                let from = below(rng, other.len() + 1);
                v.truncate(cut);
                v.extend_from_slice(&other[from..]);
            }
            _ => {}
        }
    }
    v
}

/// `data[0]` of the stream harness: how many chunking bytes follow.
fn with_chunking(rng: &mut ChaCha8Rng, stream: &[u8]) -> Vec<u8> {
    let n = below(rng, 4);
    let mut out = vec![n as u8];
    for _ in 0..n {
        out.push([0, 1, 2, 3, 7, 17, 64, 255][below(rng, 8)]);
    }
    out.extend_from_slice(stream);
    out
}

/// The default run: 20 000 inputs, a few seconds in debug mode.
#[test]
fn randomized_decoder_run() {
    run(env_u64("MMAUDIT_FUZZ_ITERS", 20_000));
}

/// The long run: 200 000 inputs, about 40 s in debug mode (a few in release):
/// `cargo test -p mmaudit-protocol --test stream_fuzz -- --ignored --nocapture`.
#[test]
#[ignore = "long run; the default run covers the same ground with fewer inputs"]
fn randomized_decoder_run_long() {
    run(env_u64("MMAUDIT_FUZZ_ITERS", 200_000));
}

fn run(iters: u64) {
    let seed = env_u64("MMAUDIT_FUZZ_SEED", 0x6d6d_6175_6469_7431);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);

    // Valid streams to mutate: the fuzzing seeds and a few random ones.
    let mut streams = vec![
        fuzzing::seed_stream(),
        fuzzing::seed_stream_with(Compression::None),
    ];
    let mut runner = TestRunner::deterministic();
    let mut payloads = Vec::new();
    for i in 0..6 {
        let header = arb_header().new_tree(&mut runner).unwrap().current();
        let records = proptest::collection::vec(arb_body_record(), 1..6);
        let mut frames: Vec<Vec<Record>> = (0..1 + i % 3)
            .map(|_| records.new_tree(&mut runner).unwrap().current())
            .collect();
        let end = arb_end().new_tree(&mut runner).unwrap().current();
        frames.last_mut().unwrap().push(Record::End(end));
        let compression = if i % 2 == 0 {
            Compression::None
        } else {
            Compression::default()
        };
        let (head, fr) = write_stream(&header, &frames, compression);
        streams.push(concat(&head, &fr));
        for f in &frames {
            let mut w = Writer::new();
            for r in f {
                r.encode(&mut w);
            }
            payloads.push(w.buf);
        }
    }

    let (mut streamed, mut accepted, mut record_inputs, mut payload_inputs) = (0u64, 0, 0, 0);
    let mut errors = std::collections::BTreeMap::<&str, u64>::new();
    let started = std::time::Instant::now();
    for i in 0..iters {
        let pick = below(&mut rng, 100);
        if pick < 70 {
            let original = &streams[below(&mut rng, streams.len())];
            let other = &streams[below(&mut rng, streams.len())];
            let input = if pick < 5 {
                random_bytes(&mut rng, 300)
            } else if pick < 8 {
                let mut v = original[..14].to_vec();
                v.extend_from_slice(&random_bytes(&mut rng, 300));
                v
            } else {
                mutate(&mut rng, original, other)
            };
            let harness_input = with_chunking(&mut rng, &input);
            let result = std::panic::catch_unwind(|| fuzzing::stream(&harness_input).result);
            let Ok(result) = result else {
                panic!("input {i} (seed {seed:#x}) panicked: {harness_input:02x?}");
            };
            match result {
                Ok(()) => {
                    // Never Ok with other content: only an unchanged valid stream passes.
                    assert!(
                        streams.contains(&input),
                        "input {i} (seed {seed:#x}) was accepted but is no valid stream: {input:02x?}"
                    );
                    accepted += 1;
                }
                Err(e) => {
                    let kind = match e {
                        StreamError::NotACapture { .. } => "not a capture",
                        StreamError::UnsupportedVersion(_) => "unsupported version",
                        StreamError::KeyMismatch { .. } => "key mismatch",
                        StreamError::BadMac { .. } => "bad MAC",
                        StreamError::Sequence { .. } => "sequence",
                        StreamError::Truncated { .. } => "truncated",
                        StreamError::AfterEnd { .. } => "after end",
                        StreamError::Decode(_) => "decode",
                    };
                    *errors.entry(kind).or_default() += 1;
                }
            }
            streamed += 1;
        } else if pick < 85 {
            let p = &payloads[below(&mut rng, payloads.len())];
            let input = mutate(&mut rng, p, p);
            if std::panic::catch_unwind(|| fuzzing::records(&input)).is_err() {
                panic!("records input {i} (seed {seed:#x}) failed: {input:02x?}");
            }
            record_inputs += 1;
        } else {
            let p = &payloads[below(&mut rng, payloads.len())];
            let mut input = mutate(&mut rng, p, p);
            if pick.is_multiple_of(2) {
                input.insert(0, 0); // even first byte: the harness zstd-compresses it
            }
            if std::panic::catch_unwind(|| fuzzing::authenticated_payload(&input)).is_err() {
                panic!("payload input {i} (seed {seed:#x}) failed: {input:02x?}");
            }
            payload_inputs += 1;
        }
    }
    println!(
        "randomized decoder run: {iters} inputs in {:.1?} (seed {seed:#x}): {streamed} streams \
         ({accepted} unchanged and accepted, refused: {errors:?}), {record_inputs} record \
         sequences, {payload_inputs} authenticated payloads",
        started.elapsed()
    );
    assert_eq!(streamed + record_inputs + payload_inputs, iters);
}

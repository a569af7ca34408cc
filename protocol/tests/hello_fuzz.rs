//! The verifier's hello (docs/PROTOCOL.md, "Live sessions: the handshake"): arbitrary
//! sampling configurations and tables round-trip, a configuration with a rate above
//! 1 000 000 ppm (or a minimum above its maximum) is refused even behind a valid MAC, no
//! strict prefix and no changed byte is accepted, and a randomized run through the
//! harnesses of `mmaudit_protocol::fuzzing` (mutated hellos in random chunkings,
//! arbitrary bodies behind a valid MAC) never panics. `MMAUDIT_FUZZ_ITERS` sets the
//! number of inputs of the randomized run.

use mmaudit_protocol::call::DType;
use mmaudit_protocol::codec::Writer;
use mmaudit_protocol::config::{SamplingConfig, PPM};
use mmaudit_protocol::fuzzing;
use mmaudit_protocol::handshake::{
    restamp_nonce, HandshakeError, HelloTensor, ServerHello, HELLO_MAGIC, HELLO_NONCE_OFFSET,
    HELLO_VERSION,
};
use proptest::prelude::*;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

fn arb_tensor() -> impl Strategy<Value = (u32, DType, u32, u64, u64, u32)> {
    (
        0u32..1000,
        prop::sample::select(vec![DType::F32, DType::F16, DType::BF16, DType::F8E4M3]),
        1u32..4,
        1u64..6,
        1u64..1 << 40,
        any::<u32>(),
    )
}

/// A valid sampling configuration: rates up to 100%, each maximum 0 or at least its
/// minimum.
fn arb_sampling() -> impl Strategy<Value = SamplingConfig> {
    let bound = || {
        (0u32..1000, prop::option::of(0u32..1000))
            .prop_map(|(min, extra)| (min, extra.map_or(0, |e| min.max(1) + e)))
    };
    (
        prop::array::uniform4(prop_oneof![Just(0), Just(PPM), 0..=PPM]),
        bound(),
        bound(),
        bound(),
    )
        .prop_map(|(rates, rows, cols, batches)| SamplingConfig {
            call_ppm: rates[0],
            row_ppm: rates[1],
            col_ppm: rates[2],
            batch_ppm: rates[3],
            min_rows: rows.0,
            min_cols: cols.0,
            min_batches: batches.0,
            max_rows: rows.1,
            max_cols: cols.1,
            max_batches: batches.1,
        })
}

fn arb_hello() -> impl Strategy<Value = ServerHello> {
    (
        any::<[u8; 16]>(),
        arb_sampling(),
        prop::collection::vec(arb_tensor(), 0..5),
        any::<bool>(),
    )
        .prop_map(|(nonce, sampling, ts, commit)| {
            let mut id = 0;
            let tensors = ts
                .into_iter()
                .map(|(gap, dtype, matrices, rows, cols, seed)| {
                    id += gap + 1;
                    HelloTensor {
                        id,
                        dtype,
                        matrices,
                        rows,
                        cols,
                        fingerprints: (0..matrices as u64 * rows)
                            .map(|i| seed.wrapping_mul(i as u32 + 1))
                            .collect(),
                    }
                })
                .collect();
            ServerHello {
                key_id: fuzzing::key().id(),
                nonce,
                sampling,
                tensors,
                mode: if commit {
                    mmaudit_protocol::handshake::HelloMode::Commit
                } else {
                    mmaudit_protocol::handshake::HelloMode::Sampling
                },
            }
        })
}

/// `hello` with its sampling configuration replaced by `config`'s encoding and a correct
/// MAC: what only a key holder could send.
fn with_config_bytes(hello: &ServerHello, config: &SamplingConfig) -> Vec<u8> {
    let mut bytes = hello.encode(&fuzzing::key()).unwrap();
    let mut w = Writer::new();
    config.encode(&mut w);
    let at = HELLO_NONCE_OFFSET + 16;
    bytes[at..at + w.buf.len()].copy_from_slice(&w.buf);
    restamp_nonce(&mut bytes, &fuzzing::key(), hello.nonce);
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn hellos_round_trip_and_prefixes_are_refused(hello in arb_hello(), cut in any::<prop::sample::Index>()) {
        let bytes = hello.encode(&fuzzing::key()).unwrap();
        prop_assert_eq!(ServerHello::decode(&fuzzing::key(), &bytes), Ok(hello));
        let len = cut.index(bytes.len());
        prop_assert!(ServerHello::decode(&fuzzing::key(), &bytes[..len]).is_err());
    }

    #[test]
    fn arbitrary_bodies_behind_a_valid_mac(data in prop::collection::vec(any::<u8>(), 0..300)) {
        fuzzing::hello_body(&data);
    }

    #[test]
    fn a_rate_above_100_percent_is_refused_behind_a_valid_mac(
        hello in arb_hello(),
        field in 0usize..4,
        excess in prop_oneof![Just(1u32), 1..=u32::MAX - PPM],
    ) {
        let mut bad = hello.sampling;
        let rate = [&mut bad.call_ppm, &mut bad.row_ppm, &mut bad.col_ppm, &mut bad.batch_ppm];
        *rate.into_iter().nth(field).unwrap() = PPM + excess;
        let bytes = with_config_bytes(&hello, &bad);
        let e = ServerHello::decode(&fuzzing::key(), &bytes).unwrap_err();
        prop_assert!(
            matches!(&e, HandshakeError::Decode(d) if d.what == "hello: sampling config"),
            "{}", e
        );
        prop_assert!(e.to_string().contains("a rate is at most 1000000 ppm"), "{}", e);
        // The same bytes with the hello's own (valid) configuration decode.
        let good = with_config_bytes(&hello, &hello.sampling);
        prop_assert_eq!(ServerHello::decode(&fuzzing::key(), &good), Ok(hello));
    }
}

#[test]
fn a_minimum_above_its_maximum_is_refused_behind_a_valid_mac() {
    let hello = fuzzing::seed_hello();
    for bad in [
        SamplingConfig {
            min_rows: 65,
            max_rows: 64,
            ..hello.sampling
        },
        SamplingConfig {
            min_cols: 2,
            max_cols: 1,
            ..hello.sampling
        },
        SamplingConfig {
            min_batches: u32::MAX,
            max_batches: 1,
            ..hello.sampling
        },
    ] {
        let e = ServerHello::decode(&fuzzing::key(), &with_config_bytes(&hello, &bad)).unwrap_err();
        assert!(e.to_string().contains("is above maximum"), "{e}");
    }
}

#[test]
fn a_version_1_hello_is_refused_saying_so() {
    // A version-1 hello as a version-1 verifier sent it (no sampling configuration),
    // correctly MACed.
    let key = fuzzing::key();
    let mut w = Writer::new();
    w.raw(&HELLO_MAGIC);
    w.u16(1);
    w.u32(28);
    w.u64(key.id());
    w.raw(&[0x11; 16]);
    w.u32(0);
    w.raw(&[0; 32]);
    let mut v1 = w.buf;
    restamp_nonce(&mut v1, &key, [0x11; 16]);
    let e = ServerHello::decode(&key, &v1).unwrap_err();
    assert_eq!(e, HandshakeError::UnsupportedVersion(1));
    assert_eq!(HELLO_VERSION, 3);
    assert!(
        e.to_string()
            .starts_with("unsupported mmaudit hello version 1 (this build reads version 3"),
        "{e}"
    );
    // In any chunking, as soon as the version has arrived.
    assert_eq!(
        fuzzing::hello(&[1, 1].iter().chain(&v1).copied().collect::<Vec<_>>()),
        Err(HandshakeError::UnsupportedVersion(1))
    );
}

#[test]
fn every_changed_byte_of_the_seed_hello_is_refused() {
    let bytes = fuzzing::seed_hello_bytes();
    assert!(fuzzing::hello(&[0].iter().chain(&bytes).copied().collect::<Vec<_>>()).is_ok());
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x20;
        let e = ServerHello::decode(&fuzzing::key(), &b).unwrap_err();
        // The magic, version and length are refused for what they are; a changed length
        // leaves the hello truncated, trailing, over the cap or with its MAC
        // elsewhere; the rest fails
        // the key id or the MAC.
        let expected = match i {
            0..=7 => matches!(e, HandshakeError::NotAHello { .. }),
            8..=9 => matches!(e, HandshakeError::UnsupportedVersion(_)),
            10..=13 => matches!(
                e,
                HandshakeError::Truncated { .. }
                    | HandshakeError::AfterHello { .. }
                    | HandshakeError::BadMac { .. }
                    | HandshakeError::Decode(_)
            ),
            14..=21 => matches!(e, HandshakeError::KeyMismatch { .. }),
            _ => matches!(e, HandshakeError::BadMac { .. }),
        };
        assert!(expected, "byte {i}: {e}");
    }
}

#[test]
fn randomized_hello_run() {
    let iters: u64 = std::env::var("MMAUDIT_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let seed = fuzzing::seed_hello_bytes();
    let mut rng = ChaCha8Rng::seed_from_u64(0x0068_656c_6c6f);
    let below = |rng: &mut ChaCha8Rng, n: usize| (rng.next_u64() % n.max(1) as u64) as usize;
    let (mut accepted, mut refused) = (0u64, 0u64);
    for i in 0..iters {
        let mut v = seed.clone();
        for _ in 0..1 + below(&mut rng, 3) {
            match below(&mut rng, 5) {
                0 if !v.is_empty() => {
                    let at = below(&mut rng, v.len());
                    v[at] = rng.next_u64() as u8;
                }
                1 => {
                    let at = below(&mut rng, v.len() + 1);
                    v.truncate(at);
                }
                2 => {
                    let at = below(&mut rng, v.len() + 1);
                    v.insert(at, rng.next_u64() as u8);
                }
                3 if v.len() >= 14 => {
                    // Lengths around the body's fixed part (68) and one tensor entry (93).
                    let len = [0u32, 1, 67, 68, 93, u32::MAX, 512 << 20][below(&mut rng, 7)];
                    v[10..14].copy_from_slice(&len.to_le_bytes());
                }
                _ => {
                    let n = below(&mut rng, 64);
                    v = (0..n).map(|_| rng.next_u64() as u8).collect();
                }
            }
        }
        let chunks = below(&mut rng, 4);
        let mut input = vec![chunks as u8];
        input.extend((0..chunks).map(|_| [0u8, 1, 3, 17][below(&mut rng, 4)]));
        input.extend_from_slice(&v);
        match std::panic::catch_unwind(|| fuzzing::hello(&input)) {
            Ok(Ok(_)) => {
                assert_eq!(v, seed, "input {i}: a changed hello was accepted");
                accepted += 1;
            }
            Ok(Err(_)) => refused += 1,
            Err(_) => panic!("input {i} panicked: {input:02x?}"),
        }
        let body: Vec<u8> = (0..below(&mut rng, 200))
            .map(|_| rng.next_u64() as u8)
            .collect();
        if std::panic::catch_unwind(|| fuzzing::hello_body(&body)).is_err() {
            panic!("body input {i} failed: {body:02x?}");
        }
    }
    println!("randomized hello run: {iters} inputs, {accepted} unchanged and accepted, {refused} refused");
}

/// The hello of docs/PROTOCOL.md ("Hello test vector").
fn vector_hello() -> (mmaudit_protocol::keys::Key, ServerHello) {
    let key = mmaudit_protocol::keys::Key::from_bytes(std::array::from_fn(|i| i as u8));
    let fk = key.fingerprint_key();
    let rows: [&[u8]; 2] = [&[0x00, 0x3c, 0x00, 0x40], &[0x00, 0xbc, 0x00, 0x38]];
    let hello = ServerHello {
        key_id: key.id(),
        nonce: [0xaa; 16],
        sampling: SamplingConfig::default(),
        tensors: vec![HelloTensor {
            id: 0,
            dtype: DType::F16,
            matrices: 1,
            rows: 2,
            cols: 2,
            fingerprints: rows
                .iter()
                .map(|r| mmaudit_protocol::handshake::fingerprint(&fk, r))
                .collect(),
        }],
        mode: mmaudit_protocol::handshake::HelloMode::Sampling,
    };
    (key, hello)
}

/// The hello test vector of docs/PROTOCOL.md is what the encoder produces and the reader
/// accepts.
#[test]
fn the_documented_hello_vector_matches() {
    let (key, hello) = vector_hello();
    let bytes = hello.encode(&key).unwrap();
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/PROTOCOL.md"))
        .expect("docs/PROTOCOL.md");
    let hex: String = bytes
        .chunks(16)
        .map(|c| {
            c.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
                + "\n"
        })
        .collect();
    let begin = doc
        .find("<!-- hello vector begin -->")
        .expect("begin marker");
    let end = doc.find("<!-- hello vector end -->").expect("end marker");
    let documented: String = doc[begin..end]
        .lines()
        .filter(|l| !l.starts_with("<!--") && !l.starts_with("```"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        documented, hex,
        "documented hello differs; the encoder gives:\n{hex}"
    );
    assert_eq!(ServerHello::decode(&key, &bytes), Ok(hello));
}

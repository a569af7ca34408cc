//! Where `check`'s time per capture byte goes, part by part, on the decode-shaped
//! capture of `mmaudit-verify bench` (bf16 4096x16x4096, 40 rows and one column per
//! call, every call sampled): reading the stream (MACs, decompression, record
//! decoding; and apart, BLAKE3 over every byte and zstd decompression of the operands),
//! decoding the sampled operands to f64, laying them out in lanes, and the lane dot
//! products with their reference and tolerance (`check_entry_lanes`), each timed alone
//! on one thread, best of five, next to the whole `check`. A benchmark, not
//! a test: it prints a table (recorded in docs/PERFORMANCE.md).
//!
//! Run: cargo bench -p mmaudit-verify --bench check_parts

use mmaudit_protocol::call::DType;
use mmaudit_protocol::keys::Key;
use mmaudit_protocol::num;
use mmaudit_protocol::record::{OperandData, Record};
use mmaudit_protocol::stream::{Event, StreamReader};
use std::time::Instant;

use mmaudit_verify::bench::{best_of_five, check_capture, honest_capture};
use mmaudit_verify::recompute::{self, Lanes, Scalars};

fn main() {
    mmaudit_verify::tune_allocator();
    let key = Key::from_bytes([0x5a; 32]);
    let (bytes, macs) = honest_capture(&key, (4096, 16, 4096), 1000, 200);
    let k = 4096usize;

    // the records, once, for the parts that start from them
    let mut reader = StreamReader::new(&key);
    let mut records = Vec::new();
    for event in reader.push(&bytes).expect("a capture") {
        if let Event::Frame { records: r, .. } = event {
            records.extend(r);
        }
    }
    let samples: Vec<_> = records
        .iter()
        .filter_map(|r| match r {
            Record::Sample(s) => Some(s),
            _ => None,
        })
        .collect();
    let calls: Vec<_> = records
        .iter()
        .filter_map(|r| match r {
            Record::Ledger(c) => Some(c.clone()),
            _ => None,
        })
        .collect();
    let operand = |d: &OperandData| d.inline().expect("inline").to_vec();
    let rows: Vec<Vec<u8>> = samples.iter().map(|s| operand(&s.a_rows)).collect();
    let cols: Vec<Vec<u8>> = samples.iter().map(|s| operand(&s.b_cols)).collect();
    let operand_bytes: usize = rows.iter().chain(&cols).map(Vec::len).sum();

    let whole = best_of_five(|| {
        let r = check_capture(&key, &bytes, None).expect("a capture");
        assert!(r.passed());
    });
    // as `check` reads: 1 MiB at a time
    let read = best_of_five(|| {
        let mut reader = StreamReader::new(&key);
        for chunk in bytes.chunks(1 << 20) {
            std::hint::black_box(reader.push(chunk).expect("a capture"));
        }
    });
    // sample by sample, as `check` does (each sample's data warm in cache), each part
    // timed on its own; best of five passes for each part
    let (mut decode, mut layout, mut dots) = (f64::INFINITY, f64::INFINITY, f64::INFINITY);
    for _ in 0..5 {
        let (mut d, mut l, mut t) = (0.0, 0.0, 0.0);
        for ((r, c), call) in rows.iter().zip(&cols).zip(&calls) {
            let t0 = Instant::now();
            let a = num::decode(DType::BF16, r).unwrap();
            let b = num::decode(DType::BF16, c).unwrap();
            let t1 = Instant::now();
            let ra: Vec<Lanes> = a.chunks_exact(k).map(Lanes::new).collect();
            let cb: Vec<Lanes> = b.chunks_exact(k).map(Lanes::new).collect();
            let t2 = Instant::now();
            let model = recompute::lane_model(call).expect("a lane call");
            for x in &ra {
                for y in &cb {
                    let e = recompute::check_entry_lanes(
                        (call, &model),
                        &Scalars::UNIT,
                        (x, y),
                        0.0,
                        None,
                        0.0,
                    )
                    .expect("checked");
                    std::hint::black_box(e);
                }
            }
            let t3 = Instant::now();
            d += (t1 - t0).as_secs_f64();
            l += (t2 - t1).as_secs_f64();
            t += (t3 - t2).as_secs_f64();
        }
        (decode, layout, dots) = (decode.min(d), layout.min(l), dots.min(t));
    }
    // The reader's two big parts alone: BLAKE3 over every byte (as the MAC chain runs
    // it, a keyed hash per frame), and zstd decompression of the records (here the
    // sampled operands, compressed as the library does: level 1, 128 KiB frames).
    let mac_key = [7u8; 32];
    let mac = best_of_five(|| {
        for frame in bytes.chunks(128 << 10) {
            std::hint::black_box(blake3::keyed_hash(&mac_key, frame));
        }
    });
    let raw: Vec<u8> = rows.iter().chain(&cols).flatten().copied().collect();
    let frames: Vec<(Vec<u8>, usize)> = raw
        .chunks(128 << 10)
        .map(|c| (zstd::bulk::compress(c, 1).expect("zstd"), c.len()))
        .collect();
    let compressed: usize = frames.iter().map(|f| f.0.len()).sum();
    let mut d = zstd::bulk::Decompressor::new().expect("zstd");
    let unzstd = best_of_five(|| {
        for (f, n) in &frames {
            std::hint::black_box(d.decompress(f, *n).expect("zstd"));
        }
    });
    let b = bytes.len() as f64;
    println!(
        "decode-shaped capture: {:.1} MB ({:.1} MB of sampled operands), {:.1} MMAC, {} samples; one thread, best of five",
        b / 1e6,
        operand_bytes as f64 / 1e6,
        macs as f64 / 1e6,
        samples.len()
    );
    println!("{:<44} {:>9} {:>14}", "part", "seconds", "ns per byte");
    for (name, t) in [
        ("whole check (audit_reader_threads)", whole),
        ("reading the stream (MAC, zstd, records)", read),
        ("  of which BLAKE3 over every byte", mac),
        ("  of which zstd decompression (operands)", unzstd),
        ("operands bf16 -> f64", decode),
        ("operands laid out in lanes", layout),
        ("dot products, reference, tolerance", dots),
    ] {
        println!("{name:<44} {t:>9.4} {:>14.3}", t / b * 1e9);
    }
    println!(
        "(zstd: {:.1} MB of operands from {:.1} MB, level 1, 128 KiB frames)",
        raw.len() as f64 / 1e6,
        compressed as f64 / 1e6
    );
    let parts = read + decode + layout + dots;
    println!(
        "{:<44} {:>9.4} {:>14.3}",
        "the rest (plans, judging, copies)",
        whole - parts,
        (whole - parts) / b * 1e9
    );
}

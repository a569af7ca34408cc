//! Throughput of `check`: result entries verified per second and capture megabytes
//! decoded per second, for a few sample shapes. A benchmark, not a test: it prints a
//! table (recorded in docs/PERFORMANCE.md) and asserts nothing about time.
//!
//! Each case is timed with one thread recomputing samples and with every core
//! (`check`'s default), side by side.
//!
//! Run: cargo bench -p mmaudit-verify --bench check_throughput
//! (CHECK_THROUGHPUT_SAVE=DIR also writes each case's capture there, key 01 x 32.)

use std::time::Instant;

use mmaudit_protocol::call::{ComputeType, DType};
use mmaudit_protocol::config::SamplingConfig;
use mmaudit_protocol::keys::Key;
use mmaudit_tests::refprover::{GemmSpec, RefProver};
use mmaudit_verify::check::{audit_reader_threads, default_threads};
use mmaudit_verify::policy::Policy;

struct Case {
    name: &'static str,
    spec: GemmSpec,
    calls: usize,
}

fn main() {
    // as `mmaudit-verify` does
    mmaudit_verify::tune_allocator();
    let key = Key::from_bytes([1; 32]);
    let config = SamplingConfig {
        call_ppm: 1_000_000,
        ..SamplingConfig::default()
    };
    let bf16 = |m, n, k| GemmSpec::new(m, n, k, DType::BF16, DType::BF16, ComputeType::F32);
    let cases = [
        // a Llama-8B-sized projection in decode (16 tokens): 40 rows x 1 column checked
        Case {
            name: "bf16 4096x16x4096",
            spec: bf16(4096, 16, 4096),
            calls: 400,
        },
        // the seed's worked case: 40 x 4 = 160 entries per call
        Case {
            name: "bf16 4096x4096x4096",
            spec: bf16(4096, 4096, 4096),
            calls: 200,
        },
        // an MLP down projection in prefill: 40 x 2 entries, k = 14336
        Case {
            name: "bf16 4096x2048x14336",
            spec: bf16(4096, 2048, 14336),
            calls: 100,
        },
        Case {
            name: "f32 4096x4096x4096",
            spec: GemmSpec::new(4096, 4096, 4096, DType::F32, DType::F32, ComputeType::F32),
            calls: 200,
        },
        Case {
            name: "e4m3 4096x4096x4096",
            spec: GemmSpec::new(
                4096,
                4096,
                4096,
                DType::F8E4M3,
                DType::BF16,
                ComputeType::F32,
            ),
            calls: 200,
        },
    ];
    let cores = default_threads();
    println!("threads: 1 and {cores} (every core); best of three runs each");
    println!(
        "{:<24} {:>6} {:>8} {:>8} {:>9} {:>9} {:>8} {:>10} {:>10}",
        "case", "calls", "entries", "MB", "s 1 thr", "s all", "speedup", "MMAC/s 1", "MMAC/s all"
    );
    for case in cases {
        let mut p = RefProver::new(&key, config, 1);
        for _ in 0..case.calls {
            p.gemm(&case.spec);
        }
        let bytes = p.finish(16).bytes();
        if let Some(dir) = std::env::var_os("CHECK_THROUGHPUT_SAVE") {
            // the captures, for profiling `mmaudit-verify check` on them
            let path = std::path::Path::new(&dir).join(case.name.replace(' ', "_") + ".mma");
            std::fs::write(&path, &bytes).expect("the capture written");
        }
        let mut entries = 0;
        let mut time = |threads: usize| {
            let mut best = f64::INFINITY;
            for _ in 0..3 {
                let t = Instant::now();
                let r = audit_reader_threads(
                    "bench",
                    &bytes[..],
                    &key,
                    (10, threads),
                    &Policy::lenient(),
                    None,
                    |_| {},
                )
                .expect("a capture");
                best = best.min(t.elapsed().as_secs_f64());
                assert!(r.passed());
                entries = r.entries_checked;
            }
            best
        };
        let (one, all) = (time(1), time(cores));
        let macs = entries as f64 * case.spec.k as f64;
        println!(
            "{:<24} {:>6} {:>8} {:>8.2} {:>9.3} {:>9.3} {:>8.2} {:>10.1} {:>10.1}",
            case.name,
            case.calls,
            entries,
            bytes.len() as f64 / 1e6,
            one,
            all,
            one / all,
            macs / one / 1e6,
            macs / all / 1e6
        );
    }
}

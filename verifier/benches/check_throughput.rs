//! Throughput of `check`: result entries verified per second and capture megabytes
//! decoded per second, for a few sample shapes. A benchmark, not a test: it prints a
//! table (recorded in docs/PERFORMANCE.md) and asserts nothing about time.
//!
//! Run: cargo bench -p mmaudit-verify --bench check_throughput

use std::time::Instant;

use mmaudit_protocol::call::{ComputeType, DType};
use mmaudit_protocol::config::SamplingConfig;
use mmaudit_protocol::keys::Key;
use mmaudit_tests::refprover::{GemmSpec, RefProver};
use mmaudit_verify::check::audit_reader;
use mmaudit_verify::policy::Policy;

struct Case {
    name: &'static str,
    spec: GemmSpec,
    calls: usize,
}

fn main() {
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
    println!(
        "{:<24} {:>7} {:>9} {:>10} {:>9} {:>12} {:>11} {:>9}",
        "case", "calls", "entries", "MB", "seconds", "entries/s", "MMAC/s", "MB/s"
    );
    for case in cases {
        let mut p = RefProver::new(&key, config, 1);
        for _ in 0..case.calls {
            p.gemm(&case.spec);
        }
        let bytes = p.finish(16).bytes();
        // best of three runs
        let mut best = f64::INFINITY;
        let mut entries = 0;
        for _ in 0..3 {
            let t = Instant::now();
            let r = audit_reader("bench", &bytes[..], &key, 10, &Policy::lenient(), |_| {})
                .expect("a capture");
            best = best.min(t.elapsed().as_secs_f64());
            assert!(r.passed());
            entries = r.entries_checked;
        }
        let macs = entries as f64 * case.spec.k as f64;
        let mb = bytes.len() as f64 / 1e6;
        println!(
            "{:<24} {:>7} {:>9} {:>10.2} {:>9.3} {:>12.0} {:>11.1} {:>9.1}",
            case.name,
            case.calls,
            entries,
            mb,
            best,
            entries as f64 / best,
            macs / best / 1e6,
            mb / best
        );
    }
}

//! Sustained throughput of `mmaudit-verify serve` over loopback: N provers stream at
//! once, each as fast as the server reads, and the table gives the aggregate and
//! per-stream megabytes per second the server verified. A benchmark, not a test: it
//! prints a table (recorded in docs/PERFORMANCE.md) and asserts only that every stream
//! passed.
//!
//! The server runs in-process (one event-loop thread and its recompute threads, as the
//! command runs it) with a
//! fixed session nonce, so that the provers' streams can be computed before the
//! measurement; the provers are threads that replay them (each replay a new connection
//! with the full handshake), so the machine's cores are shared by server and clients.
//!
//! Run: cargo bench -p mmaudit-verify --bench serve_throughput [-- SECONDS]
//! (SERVE_THREADS=N: the server's recompute threads, default every core.)

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mmaudit_protocol::call::{ComputeType, DType};
use mmaudit_protocol::config::SamplingConfig;
use mmaudit_protocol::keys::Key;
use mmaudit_tests::refprover::{GemmSpec, RefProver};
use mmaudit_tests::session;
use mmaudit_verify::serve::{ServeOptions, Server};

const NONCE: [u8; 16] = *b"bench fixed once";

struct Case {
    name: &'static str,
    spec: GemmSpec,
    calls: usize,
}

fn stream(key: &Key, case: &Case) -> (Vec<u8>, u64) {
    let config = SamplingConfig {
        call_ppm: 1_000_000,
        ..SamplingConfig::default()
    };
    let mut p = RefProver::new(key, config, 1).with_nonce(NONCE);
    for _ in 0..case.calls {
        p.gemm(&case.spec);
    }
    (p.finish(16).bytes(), p.entries)
}

/// `streams` provers replay `bytes` over fresh connections until `seconds` have passed;
/// returns (streams finished, bytes sent, seconds, bytes the server received, fewest and
/// most streams one prover finished).
fn run(
    key: &Key,
    bytes: &Arc<Vec<u8>>,
    streams: usize,
    seconds: f64,
    capture: Option<&std::path::Path>,
) -> (u64, u64, f64, u64, u64, u64) {
    let mut opts = ServeOptions::new("127.0.0.1:0".parse().unwrap(), key.clone());
    opts.fixed_nonce = Some(NONCE);
    opts.capture_dir = capture.map(|p| p.to_path_buf());
    if let Some(threads) = std::env::var("SERVE_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
    {
        opts.threads = threads;
    }
    let server = Server::bind(opts).expect("bind");
    let addr: SocketAddr = server.local_addr();
    let stopper = server.stopper();
    let handle = std::thread::spawn(move || server.run().expect("serve"));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(seconds);
    let clients: Vec<_> = (0..streams)
        .map(|_| {
            let (bytes, key) = (bytes.clone(), key.clone());
            std::thread::spawn(move || {
                let mut sent = 0u64;
                let mut count = 0u64;
                while Instant::now() < deadline {
                    let (mut s, hello) =
                        session::connect(addr, &key, Duration::from_secs(60)).expect("connect");
                    assert_eq!(hello.nonce, NONCE);
                    s.write_all(&bytes).expect("send");
                    session::close_and_wait(s).expect("close");
                    sent += bytes.len() as u64;
                    count += 1;
                }
                (count, sent)
            })
        })
        .collect();
    let (mut n, mut sent, mut fewest, mut most) = (0, 0, u64::MAX, 0);
    for c in clients {
        let (a, b) = c.join().unwrap();
        n += a;
        sent += b;
        fewest = fewest.min(a);
        most = most.max(a);
    }
    let elapsed = start.elapsed().as_secs_f64();
    stopper.stop();
    let summary = handle.join().unwrap();
    assert_eq!(summary.streams, n, "{summary:?}");
    assert_eq!(summary.failed, 0, "{summary:?}");
    (n, sent, elapsed, summary.bytes, fewest, most)
}

fn main() {
    let seconds: f64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(8.0);
    let key = Key::from_bytes([1; 32]);
    let bf16 = |m, n, k| GemmSpec::new(m, n, k, DType::BF16, DType::BF16, ComputeType::F32);
    let cases = [
        // decode-sized projections: the stream is mostly operand rows (bytes-bound)
        Case {
            name: "bf16 4096x16x4096",
            spec: bf16(4096, 16, 4096),
            calls: 40,
        },
        // prefill-sized: 160 entries per call (recompute-bound)
        Case {
            name: "bf16 4096x4096x4096",
            spec: bf16(4096, 4096, 4096),
            calls: 40,
        },
    ];
    println!(
        "serve throughput over loopback, {seconds} s per row, {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "{:<22} {:>7} {:>8} {:>9} {:>9} {:>9} {:>10} {:>12} {:>12} {:>12}",
        "case",
        "streams",
        "capture",
        "finished",
        "per prover",
        "MB",
        "seconds",
        "MB/s total",
        "MB/s/stream",
        "entries/s"
    );
    let dir = std::env::temp_dir().join(format!("mmaudit-serve-bench-{}", std::process::id()));
    for case in &cases {
        let (bytes, entries) = stream(&key, case);
        let bytes = Arc::new(bytes);
        for (streams, capture) in [
            (1, false),
            (2, false),
            (4, false),
            (8, false),
            (16, false),
            (8, true),
        ] {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let (n, sent, secs, received, fewest, most) = run(
                &key,
                &bytes,
                streams,
                seconds,
                capture.then_some(dir.as_path()),
            );
            assert_eq!(sent, received);
            let mb = sent as f64 / 1e6;
            println!(
                "{:<22} {:>7} {:>8} {:>9} {:>9} {:>9.1} {:>10.2} {:>12.1} {:>12.1} {:>12.0}",
                case.name,
                streams,
                if capture { "yes" } else { "no" },
                n,
                format!("{fewest}-{most}"),
                mb,
                secs,
                mb / secs,
                mb / secs / streams as f64,
                (n * entries) as f64 / secs
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

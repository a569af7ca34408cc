//! Hook cost on the simulated GPU: the time a program's thread spends per
//! `cublasGemmEx` call without the interposer, with it but no key (pass-through), with
//! auditing on and no call sampled (ledger only), and with every call sampled (gather
//! launched, event recorded, sample streamed), side by side in one run.
//!
//!     cargo bench -p mmaudit-interposer --bench hook_cost [-- CALLS REPEATS]
//!
//! A benchmark, not a test: it prints a table and asserts nothing. The numbers are
//! recorded in docs/PERFORMANCE.md ("Hook cost on the simulated GPU").
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use mmaudit_tests::simgpu::{libraries, repo_root};

fn library(root: &Path) -> PathBuf {
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "-p", "mmaudit-interposer"])
        .current_dir(root)
        .status()
        .expect("run cargo build");
    assert!(
        status.success(),
        "cargo build --release -p mmaudit-interposer failed"
    );
    root.join("target/release/libmmaudit.so")
}

/// The pure CPU part of an unsampled hook, in-process, without any simulator: describe
/// the call (`model::describe_blas`) and decide whether it is sampled, by schedule v1
/// (`Schedule::decide`: encode and hash every call) and v2 (`Session::decide`: one hash
/// per eight consecutive calls). What remains of the hook's cost on top of this is the driver
/// and cuBLAS getters it calls, the ledger hand-off and, for sampled calls, the gather.
fn pure_cpu_part() -> (f64, [f64; 4], [(f64, u64); 2]) {
    use mmaudit::model::{describe_blas, BlasArgs, ScalarArg, Site};
    use mmaudit_protocol::call::{BatchForm, EntryPoint};
    use mmaudit_protocol::config::SamplingConfig;
    use mmaudit_protocol::keys::Key;
    use mmaudit_protocol::schedule::{Schedule, ScheduleVersion};
    use std::time::Instant;
    let mut one = [0u8; 8];
    one[..4].copy_from_slice(&1.0f32.to_le_bytes());
    let args = BlasArgs {
        entry: EntryPoint::GemmEx,
        transa: 0,
        transb: 0,
        m: 4096,
        n: 16,
        k: 4096,
        a_type: 0,
        b_type: 0,
        c_type: 0,
        a: 0x1000,
        b: 0x2000,
        c: 0x3000,
        lda: 4096,
        ldb: 4096,
        ldc: 4096,
        stride_a: 0,
        stride_b: 0,
        stride_c: 0,
        batch: 1,
        batch_form: BatchForm::Single,
        compute: 68,
        math_mode: 0,
        alpha: ScalarArg::Host(one),
        beta: ScalarArg::Host([0; 8]),
        site: Site::default(),
    };
    let schedule = |version, call_ppm| {
        let config = SamplingConfig {
            call_ppm,
            ..SamplingConfig::default()
        };
        Schedule::with_version(&Key::from_bytes([1; 32]), [2; 16], config, version)
    };
    let default_rate = SamplingConfig::default().call_ppm;
    let v1 = schedule(ScheduleVersion::V1, default_rate);
    let v1_none = schedule(ScheduleVersion::V1, 0);
    let ledger = mmaudit::session::Ledger::default();
    let v2 = ledger.begin(schedule(ScheduleVersion::V2, default_rate));
    let v2_none = ledger.begin(schedule(ScheduleVersion::V2, 0));
    let n = 200_000u64;
    let mut sampled = 0u64;
    let mut timed = |decide: &dyn Fn(&mmaudit_protocol::call::GemmCall) -> bool| {
        let t = Instant::now();
        for i in 0..n {
            let mut d = describe_blas(std::hint::black_box(&args)).unwrap();
            d.call.index = i;
            if decide(&d.call) {
                sampled += 1;
            }
        }
        t.elapsed().as_nanos() as f64 / n as f64
    };
    // The hook body without the driver and the forward: describe, take the index and
    // decide (Ledger::assign_and_decide, lock-free), write the ledger record into this
    // thread's queue and settle it, while another thread drains the queues as the
    // background thread does (records it finds are dropped, not encoded).
    let body = |ledger: &mmaudit::session::Ledger| {
        let queues = mmaudit::handoff::Queues::default();
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                queues.set_consumer();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    queues.drain(false, |c, _| {
                        std::hint::black_box(c);
                    });
                    std::thread::park_timeout(std::time::Duration::from_millis(1));
                }
            });
            let (mut fell_back, mut sampled) = (0u64, 0u64);
            let t = Instant::now();
            for _ in 0..n {
                let mut d = describe_blas(std::hint::black_box(&args)).unwrap();
                let plan = ledger.assign_and_decide(&mut d.call, true).unwrap();
                sampled += u64::from(plan.is_some());
                match queues.push(&d.call, plan.is_some()) {
                    Some(ticket) => queues.settle(ticket, false),
                    None => fell_back += 1,
                }
            }
            let ns = t.elapsed().as_nanos() as f64 / n as f64;
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            std::hint::black_box((fell_back, sampled));
            (ns, fell_back)
        })
    };
    let body_default = {
        let l = mmaudit::session::Ledger::default();
        l.begin(schedule(ScheduleVersion::V2, default_rate));
        body(&l)
    };
    let body_none = {
        let l = mmaudit::session::Ledger::default();
        l.begin(schedule(ScheduleVersion::V2, 0));
        body(&l)
    };
    let with_v1 = timed(&|c| v1.decide(c).is_some());
    let with_v2 = timed(&|c| v2.decide(c).is_some());
    let none_v1 = timed(&|c| v1_none.decide(c).is_some());
    let none_v2 = timed(&|c| v2_none.decide(c).is_some());
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(describe_blas(std::hint::black_box(&args)).unwrap());
    }
    let describe = t.elapsed().as_nanos() as f64 / n as f64;
    std::hint::black_box(sampled);
    (
        describe,
        [with_v1, with_v2, none_v1, none_v2],
        [body_default, body_none],
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let calls: u32 = args.first().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let repeats: u32 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(7);
    let (m, k) = (16, 16);
    let root = repo_root();
    let libs = libraries();
    let lib = library(&root);
    let work = root.join("target/bench-hook-cost");
    std::fs::create_dir_all(&work).unwrap();
    let exe = work.join("hook_cost_prog");
    let out = Command::new("cc")
        .args(["-std=c11", "-D_GNU_SOURCE", "-O2", "-I"])
        .arg(&libs.include_dir)
        .arg(root.join("interposer/benches/hook_cost.c"))
        .arg("-L")
        .arg(&libs.lib_dir)
        .args(["-lcudart", "-lcublas", "-o"])
        .arg(&exe)
        .output()
        .expect("run cc");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    let sink = format!("file:{}/bench-%p.mma", work.display());
    let lib = lib.to_string_lossy().into_owned();
    let configs: [(&str, Vec<(&str, &str)>); 4] = [
        ("no LD_PRELOAD", vec![]),
        ("preload, no key (pass-through)", vec![("LD_PRELOAD", &lib)]),
        (
            "preload, unsampled (ledger only)",
            vec![
                ("LD_PRELOAD", &lib),
                ("MMAUDIT_KEY", key),
                ("MMAUDIT_CALL_RATE", "0"),
                ("MMAUDIT_SINK", &sink),
            ],
        ),
        (
            "preload, every call sampled",
            vec![
                ("LD_PRELOAD", &lib),
                ("MMAUDIT_KEY", key),
                ("MMAUDIT_CALL_RATE", "1"),
                ("MMAUDIT_SINK", &sink),
            ],
        ),
    ];
    println!(
        "Hook cost on the simulated GPU: {calls} cublasGemmEx calls (f32, m=n=k={m}) per round, median of {repeats} rounds"
    );
    println!(
        "{:<34} {:>16} {:>18} {:>16}",
        "configuration", "enqueue ns/call", "vs no preload", "wall ns/call"
    );
    let mut base = None;
    for (name, env) in configs {
        let mut cmd = Command::new(&exe);
        cmd.args([
            calls.to_string(),
            m.to_string(),
            k.to_string(),
            repeats.to_string(),
        ])
        .env("LD_LIBRARY_PATH", &libs.lib_dir)
        .env_remove("LD_PRELOAD");
        for (key, _) in std::env::vars() {
            if key.starts_with("MMAUDIT_") || key.starts_with("SIMGPU_") {
                cmd.env_remove(key);
            }
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run the benchmark program");
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let (mut enq, mut total) = (Vec::new(), Vec::new());
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() == 4 {
                enq.push(f[1].parse::<f64>().unwrap());
                total.push(f[3].parse::<f64>().unwrap());
            }
        }
        let (e, t) = (median(enq), median(total));
        let base_e = *base.get_or_insert(e);
        println!("{:<34} {:>16.0} {:>+18.0} {:>16.0}", name, e, e - base_e, t);
    }
    let (describe, [with_v1, with_v2, none_v1, none_v2], [body_default, body_none]) =
        pure_cpu_part();
    println!();
    println!(
        "CPU part of the hook, in-process (no simulator), ns per call (m=4096, n=16, k=4096):"
    );
    println!("{:<46} {:>12} {:>12}", "", "10% sampled", "none");
    let row = |name: &str, a: f64, b: f64| println!("{name:<46} {a:>12.0} {b:>12.0}");
    row("describe_blas", describe, describe);
    row("describe_blas + schedule v1 decide", with_v1, none_v1);
    row(
        "describe_blas + schedule v2 decide (Session)",
        with_v2,
        none_v2,
    );
    row(
        "+ ledger index, queue push and settle",
        body_default.0,
        body_none.0,
    );
    println!(
        "(queue full, record would have gone over the channel: {} and {} of 200000 calls)",
        body_default.1, body_none.1
    );
    for entry in std::fs::read_dir(&work).unwrap().flatten() {
        if entry.path().extension().is_some_and(|x| x == "mma") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

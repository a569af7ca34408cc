//! The interposer's end-to-end smoke test: an unmodified C program
//! (tests/programs/interposer_smoke.c) makes a few cublasGemmEx and cublasLtMatmul calls
//! on the simulated GPU under `LD_PRELOAD=libmmaudit.so`, every call sampled; the
//! verifier (as a library) must pass the capture with exactly the program's call count,
//! every sampled call verified. A second run with `SIMGPU_FAULT=zero` must fail, so the
//! test cannot pass on a capture that checks nothing.
//!
//! The wider matrix (dlopen, threads, faults, TCP, graph capture, Llama workload) lives
//! in tests/e2e/interposer.rs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use mmaudit_protocol::keys::Key;
use mmaudit_tests::simgpu::{compile, repo_root, run, Run};
use mmaudit_verify::check::audit_reader;
use mmaudit_verify::policy::Policy;
use mmaudit_verify::report::StreamReport;

const KEY: &str = "5a0b7c1d9e2f3a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d";

/// Builds libmmaudit.so (release, shared with the other end-to-end tests) once.
fn preload() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .current_dir(repo_root())
            .args(["build", "--release", "-p", "mmaudit-interposer"])
            .output()
            .expect("run cargo build");
        assert!(
            out.status.success(),
            "cargo build --release -p mmaudit-interposer failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join("target"));
        let lib = target.join("release/libmmaudit.so");
        assert!(lib.exists(), "{} was not built", lib.display());
        lib
    })
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("interposer-smoke")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}

/// Runs the smoke program under the interposer; returns the run, its call count and
/// the verifier's report on the capture.
fn audited_run(name: &str, extra: &[(&str, &str)]) -> (Run, u64, StreamReport) {
    let exe = compile("interposer_smoke");
    let dir = scratch(name);
    let capture = dir.join("run.mma");
    let sink = format!("file:{}", capture.display());
    let lib = preload().to_string_lossy().into_owned();
    let mut env = vec![
        ("LD_PRELOAD", lib.as_str()),
        ("MMAUDIT_KEY", KEY),
        ("MMAUDIT_SINK", sink.as_str()),
        ("MMAUDIT_CALL_RATE", "1"),
        ("MMAUDIT_ROW_RATE", "0.25"),
        ("MMAUDIT_COL_RATE", "0.25"),
        ("MMAUDIT_LOG", "info"),
    ];
    env.extend_from_slice(extra);
    let r = run(&exe, &[], &env);
    assert_eq!(r.code, Some(0), "{}", r.transcript());
    let calls: u64 = r
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("CALLS "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no CALLS line\n{}", r.transcript()));
    let file = std::fs::File::open(&capture).unwrap_or_else(|e| {
        panic!(
            "no capture at {}: {e}\n{}",
            capture.display(),
            r.transcript()
        )
    });
    let key = Key::from_hex(KEY).expect("key");
    let report = audit_reader(name, file, &key, 20, &Policy::default(), |_| {})
        .unwrap_or_else(|_| panic!("{} is not a capture\n{}", capture.display(), r.transcript()));
    (r, calls, report)
}

#[test]
fn an_honest_run_passes_with_every_call_ledgered_and_verified() {
    let (r, calls, report) = audited_run("honest", &[]);
    assert_eq!(calls, 6, "{}", r.transcript());
    assert!(report.passed(), "{}\n{}", report.to_text(), r.transcript());
    assert_eq!(report.calls, calls, "{}", report.to_text());
    assert_eq!(
        report.sampled, calls,
        "MMAUDIT_CALL_RATE=1 samples every call"
    );
    assert_eq!(report.verified, calls, "{}", report.to_text());
    assert_eq!((report.gaps, report.missing, report.captured), (0, 0, 0));
    assert!(report.ended && report.disabled.is_none());
    assert!(report.entries_checked > calls, "{}", report.to_text());
    assert!(
        r.stderr.contains("mmaudit: auditing to file:"),
        "MMAUDIT_LOG=info announces the sink:\n{}",
        r.transcript()
    );
}

#[test]
fn a_gpu_that_skips_the_gemms_fails() {
    let (r, calls, report) = audited_run("zero", &[("SIMGPU_FAULT", "zero")]);
    assert!(!report.passed(), "{}\n{}", report.to_text(), r.transcript());
    assert_eq!(report.calls, calls);
    assert_eq!(report.mismatched, calls, "{}", report.to_text());
}

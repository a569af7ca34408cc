//! End-to-end tests of `libmmaudit.so` on the simulated GPU, in the manner of
//! bytehound's integration tests: small C programs (`tests/programs/audit_*.c`,
//! `llama_workload.c`) are compiled against the simulator, run under
//! `LD_PRELOAD=libmmaudit.so`, and what they leave behind is analysed here: the
//! capture goes through `mmaudit-verify check --json`, and the program's own
//! output (`calls N`, `output-hash H`, with `--trace` one line per call) is
//! compared with the verifier's report and with a run without the library.
//!
//! What is shown, each claim with a run where the fault is present and one where
//! it is absent:
//! - every hooked entry point x dtype x transposes x batch form x beta / in place x
//!   epilogue x pointer mode passes, the ledger holds exactly the calls made, and the
//!   outputs are bit-identical with and without the library;
//! - a program that dlopens cuBLAS and calls through dlsym is audited;
//! - several threads, handles and streams: pass, nothing missing;
//! - GEMMs captured into a CUDA graph: the capture still works, and the calls are
//!   declared "captured, not audited";
//! - every `SIMGPU_FAULT` mode fails the audit, the failures name calls that were
//!   really faulted (and, with `after:N`, exactly those), at the detection rates that
//!   `mmaudit-verify plan` predicts;
//! - a TCP sink with nobody listening, or a verifier that drops the connection, does
//!   not disturb the program, and the saved stream never passes.
//!
//! The library and the verifier are built once per test process with
//! `cargo build --release -p mmaudit-interposer -p mmaudit-verify`; the helpers that
//! build, run and check are `mmaudit_tests::preload`'s, shared with tests/e2e/policy.rs.

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use mmaudit_protocol::call::{flags, GemmCall};
use mmaudit_protocol::handshake::ServerHello;
use mmaudit_protocol::keys::Key;
use mmaudit_protocol::record::Record;
use mmaudit_protocol::stream::{Event, StreamHeader, StreamReader};
use mmaudit_tests::preload::{
    audit_env, captures_in, check, check_args, header_of, reference, run, scratch, scratch_path,
    serve_dirs, target_dir, tools, Check, Output, Rates, Serve, TraceLine, EVERY_CALL, FULL, KEY,
    NO_SESSION_ALLOWED, TIMEOUT,
};
use mmaudit_tests::simgpu::{compile, libraries, repo_root};
use serde_json::Value;

// ---------------------------------------------------------------------------
// Building, running and checking: mmaudit_tests::preload, and

/// Compiles a program that links no CUDA library (it dlopens them).
fn compile_unlinked(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(exe) = built.get(name) {
        return exe.clone();
    }
    let root = repo_root();
    let programs = root.join("tests/programs");
    let out_dir = target_dir().join("simgpu/programs");
    std::fs::create_dir_all(&out_dir).expect("create the program directory");
    let exe = out_dir.join(name);
    let tmp = out_dir.join(format!("{name}.{}.tmp", std::process::id()));
    let out = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args([
            "-std=c11",
            "-D_GNU_SOURCE",
            "-O1",
            "-Wall",
            "-Wextra",
            "-Werror",
        ])
        .arg("-I")
        .arg(&libraries().include_dir)
        .arg("-I")
        .arg(&programs)
        .arg(programs.join(format!("{name}.c")))
        .args(["-ldl", "-o"])
        .arg(&tmp)
        .output()
        .expect("run cc");
    assert!(
        out.status.success(),
        "cc failed for {name}.c:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&tmp, &exe).expect("move the program into place");
    built.insert(name.into(), exe.clone());
    exe
}

/// A program run under the library with a file sink, and the verdict on it.
struct Audited {
    run: Output,
    check: Check,
    captures: Vec<PathBuf>,
    dir: PathBuf,
}

impl Audited {
    fn context(&self) -> String {
        format!("{}\n{}", self.run.transcript(), self.check.text)
    }
}

fn audit(
    name: &str,
    exe: &Path,
    args: &[&str],
    rates: Rates,
    fault: Option<&str>,
    extra: &[(&'static str, String)],
) -> Audited {
    let dir = scratch(name);
    let sink = format!("file:{}/capture-%p.mma", dir.display());
    let mut env = audit_env(&sink, rates, fault);
    env.extend(extra.iter().cloned());
    let run = run(exe, args, &env);
    let captures = captures_in(&dir);
    assert_eq!(
        captures.len(),
        1,
        "{name}: expected one capture file in {}\n{}",
        dir.display(),
        run.transcript()
    );
    let check = check(&captures, &dir);
    Audited {
        run,
        check,
        captures,
        dir,
    }
}

/// Asserts that the default policy fails `a` for its shares of unaudited calls, in
/// each of `categories` (`(JSON name, policy flag)`: `("captured", "--max-captured")`)
/// and for nothing else, and returns the same capture checked with those limits
/// lifted, for the assertions on everything else.
fn assert_fails_policy_then_recheck(a: &Audited, categories: &[(&str, &str)]) -> Audited {
    let ctx = a.context();
    assert_eq!(a.check.code, Some(1), "{ctx}");
    let coverage = a.check.failures_of("coverage");
    assert_eq!(coverage.len(), categories.len(), "{ctx}");
    let mut lifted = Vec::new();
    for (category, flag) in categories {
        assert!(
            coverage
                .iter()
                .any(|f| f["message"].as_str().unwrap_or("").contains(flag)),
            "{flag}\n{ctx}"
        );
        assert!(
            a.check.json["streams"][0]["not_audited"][category]["calls"]
                .as_u64()
                .is_some_and(|n| n > 0),
            "{category}\n{ctx}"
        );
        lifted.extend([*flag, "100%"]);
    }
    Audited {
        run: a.run.clone(),
        check: check_args(&a.captures, &a.dir, &lifted),
        captures: a.captures.clone(),
        dir: a.dir.clone(),
    }
}

/// The assertions every honest audited run must meet: the program ran as without
/// the library, the verdict is pass, the ledger holds exactly its calls and no
/// sample is missing or dropped.
fn assert_honest_pass(a: &Audited, reference: &Output) {
    assert_clean_pass(a, reference, a.run.calls());
}

/// [`assert_honest_pass`] for a ledger of `calls` records (more than the program's API
/// calls when graph replays are ledgered too).
fn assert_clean_pass(a: &Audited, reference: &Output, calls: u64) {
    let ctx = a.context();
    assert_eq!(a.run.code, Some(0), "the program failed\n{ctx}");
    assert_eq!(
        a.run.hash(),
        reference.hash(),
        "outputs differ with the library\n{ctx}"
    );
    assert_eq!(a.run.calls(), reference.calls());
    assert_eq!(a.check.code, Some(0), "the audit did not pass\n{ctx}");
    assert_eq!(a.check.verdict(), "pass", "{ctx}");
    assert_eq!(
        a.check.n("calls"),
        calls,
        "the ledger does not hold exactly the calls the program made\n{ctx}"
    );
    for key in ["missing", "mismatched", "gaps", "integrity_errors"] {
        assert_eq!(a.check.n(key), 0, "{key}\n{ctx}");
    }
    assert!(a.check.failures().is_empty(), "{ctx}");
}

/// The indices of the calls a report names as mismatched.
fn mismatched_calls(check: &Check) -> BTreeSet<u64> {
    check
        .failures_of("mismatch")
        .into_iter()
        .map(|f| failure_call(f).index)
        .collect()
}

/// `call I Entry m=.. n=.. k=.. batch=..` from a failure's `call` field.
fn failure_call(f: &Value) -> TraceLine {
    let text = f["call"]
        .as_str()
        .unwrap_or_else(|| panic!("the failure names no call: {f}"));
    TraceLine::parse(text)
}

/// `row R` of a mismatch message.
fn failure_row(f: &Value) -> u64 {
    let msg = f["message"].as_str().unwrap_or_default();
    let words: Vec<&str> = msg.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[0] == "row")
        .and_then(|w| w[1].parse().ok())
        .unwrap_or_else(|| panic!("no row in '{msg}'"))
}

/// An entry point's name without the spelling differences of the verifier
/// (`GemmEx64`) and the C API (`cublasGemmEx_64`).
fn normalised_entry(name: &str) -> String {
    let name = name.strip_prefix("cublas").unwrap_or(name);
    name.replace('_', "").to_ascii_lowercase()
}

/// The ledger records exactly the program's traced calls: one record per call, in
/// order, with its entry point and shape.
fn assert_ledger_is_trace(ledger: &[GemmCall], trace: &[TraceLine], ctx: &str) {
    assert_eq!(ledger.len(), trace.len(), "{ctx}");
    for (c, made) in ledger.iter().zip(trace) {
        assert_eq!(
            normalised_entry(&format!("{:?}", c.entry)),
            normalised_entry(&made.entry),
            "{ctx}"
        );
        assert_eq!(
            (c.m, c.n, c.k, c.batch),
            (made.m, made.n, made.k, made.batch),
            "{c:?}"
        );
    }
}

/// Each failing call the verifier names is the program's call of that index, with
/// its shape and entry point.
fn assert_failures_name_program_calls(check: &Check, trace: &[TraceLine], ctx: &str) {
    let mismatches = check.failures_of("mismatch");
    assert!(!mismatches.is_empty(), "no mismatch reported\n{ctx}");
    for f in mismatches {
        let named = failure_call(f);
        let made = trace.get(named.index as usize).unwrap_or_else(|| {
            panic!("the verifier names call {}, never made\n{ctx}", named.index)
        });
        assert_eq!(
            (named.m, named.n, named.k, named.batch),
            (made.m, made.n, made.k, made.batch),
            "the verifier's call {} is not the program's\n{ctx}",
            named.index
        );
        assert_eq!(
            normalised_entry(&named.entry),
            normalised_entry(&made.entry),
            "the verifier's call {} is a {}, the program made a {}\n{ctx}",
            named.index,
            named.entry,
            made.entry
        );
    }
}

// ---------------------------------------------------------------------------
// The matrix of entry points

#[test]
fn matrix_of_every_entry_point_passes_with_every_entry_checked() {
    let exe = compile("audit_matrix");
    let reference = reference(&exe, &[], None);
    let a = audit("matrix-full", &exe, &[], FULL, None, &[]);
    assert_honest_pass(&a, &reference);
    // Every call sampled and every one verified: no combination is skipped or
    // declared unverifiable.
    let calls = a.check.n("calls");
    assert!(calls > 2000, "{}", a.context());
    assert_eq!(a.check.n("sampled"), calls, "{}", a.context());
    assert_eq!(a.check.n("verified"), calls, "{}", a.context());
    assert_eq!(a.check.n("unverifiable"), 0, "{}", a.context());
}

#[test]
fn matrix_passes_at_the_default_rates() {
    let exe = compile("audit_matrix");
    let reference = reference(&exe, &[], None);
    let a = audit("matrix-default", &exe, &[], Rates::default(), None, &[]);
    assert_honest_pass(&a, &reference);
    // 10% of the calls by default.
    let sampled = a.check.n("sampled");
    assert_rate(
        "calls sampled",
        sampled,
        a.check.n("calls"),
        0.1,
        &a.context(),
    );
    assert_eq!(a.check.n("verified"), sampled, "{}", a.context());
}

#[test]
fn matrix_passes_on_a_slow_asynchronous_gpu() {
    // Every queued stream operation sleeps: a gather that ran before its GEMM, or a
    // C entry read after an in-place GEMM overwrote it, would show as a mismatch.
    let exe = compile("audit_matrix");
    let reference = reference(&exe, &[], None);
    let a = audit(
        "matrix-latency",
        &exe,
        &[],
        FULL,
        None,
        &[("SIMGPU_LATENCY_US", "20".into())],
    );
    assert_honest_pass(&a, &reference);
    assert_eq!(a.check.n("verified"), a.check.n("calls"), "{}", a.context());
}

#[test]
fn matrix_fault_zero_fails_every_call() {
    // Absent: matrix_of_every_entry_point_passes_with_every_entry_checked.
    let exe = compile("audit_matrix");
    let trace = reference(&exe, &["--trace"], None).trace();
    let faulty = reference(&exe, &["--trace"], Some("zero"));
    let a = audit("matrix-zero", &exe, &["--trace"], FULL, Some("zero"), &[]);
    let ctx = a.context();
    assert_eq!(a.run.code, Some(0), "{ctx}");
    assert_eq!(
        a.run.hash(),
        faulty.hash(),
        "outputs differ with the library\n{ctx}"
    );
    assert_eq!(a.check.code, Some(1), "{ctx}");
    assert_eq!(a.check.verdict(), "fail", "{ctx}");
    assert_eq!(a.check.n("calls"), a.run.calls(), "{ctx}");
    // Every entry point, type, epilogue and pointer mode notices a skipped GEMM.
    assert_failures_name_program_calls(&a.check, &trace, &ctx);
    assert_eq!(a.check.n("mismatched"), a.run.calls(), "{ctx}");
    assert_eq!(a.check.n("missing"), 0, "{ctx}");
}

#[test]
fn matrix_fault_after_n_fails_exactly_the_faulted_calls() {
    // SIMGPU_FAULT numbers calls from 1, the ledger from 0: calls numbered above
    // 1000 are ledger calls 1000 and later.
    let exe = compile("audit_matrix");
    let trace = reference(&exe, &["--trace"], None).trace();
    let a = audit(
        "matrix-after",
        &exe,
        &["--trace"],
        FULL,
        Some("zero,after:1000"),
        &[],
    );
    let ctx = a.context();
    assert_eq!(a.check.code, Some(1), "{ctx}");
    assert_failures_name_program_calls(&a.check, &trace, &ctx);
    let named = mismatched_calls(&a.check);
    let faulted: BTreeSet<u64> = (1000..a.run.calls()).collect();
    assert_eq!(
        named, faulted,
        "the failing calls are not exactly the faulted ones\n{ctx}"
    );
    assert_eq!(a.check.n("mismatched"), faulted.len() as u64, "{ctx}");
    assert_eq!(a.check.n("verified"), 1000, "{ctx}");
}

/// Every record of the one capture a test left in its scratch directory `name`, with
/// the capture's header.
fn records_of(name: &str) -> (StreamHeader, Vec<Record>) {
    let dir = scratch_path(name);
    let captures = captures_in(&dir);
    assert_eq!(captures.len(), 1, "{}", dir.display());
    let key = Key::from_hex(KEY).expect("the test key");
    let bytes = std::fs::read(&captures[0]).expect("read the capture");
    let mut reader = StreamReader::new(&key);
    let mut header = None;
    let mut records = Vec::new();
    for e in reader.push(&bytes).expect("a readable capture") {
        match e {
            Event::Header(h) => header = Some(h),
            Event::Frame { records: r, .. } => records.extend(r),
        }
    }
    (header.expect("a header"), records)
}

/// Recomputes every entry of every sample of a call with BIAS_PER_BATCH, taking the
/// bias of sampled batch entry i from the i-th vector of the sample's bias
/// (`[batch][row]`, docs/PROTOCOL.md "Sample record"), with the verifier's own entry
/// check. Returns (calls, entries checked, entries failed).
fn recheck_bias_per_batch(header: &StreamHeader, records: &[Record]) -> (u64, u64, u64) {
    use mmaudit_protocol::num::decode;
    use mmaudit_protocol::schedule::Schedule;
    use mmaudit_verify::recompute::{check_entry, Entry, Scalars};
    let key = Key::from_hex(KEY).expect("the test key");
    let schedule = Schedule::for_header(&key, header);
    let mut calls = HashMap::new();
    let (mut n_calls, mut checked, mut failed) = (0, 0, 0);
    for r in records {
        match r {
            Record::Ledger(c) => {
                calls.insert(c.index, c.clone());
            }
            Record::Sample(s) => {
                let call = &calls[&s.index];
                if !call.has(flags::BIAS_PER_BATCH) {
                    continue;
                }
                n_calls += 1;
                let plan = schedule.decide(call).expect("a sampled call");
                let (Some(a), Some(b)) = (s.a_rows.inline(), s.b_cols.inline()) else {
                    panic!(
                        "call {}: inline operands expected in a file capture",
                        s.index
                    );
                };
                let a = decode(call.a.dtype, a).unwrap();
                let b = decode(call.b.dtype, b).unwrap();
                let c = decode(call.c.dtype, &s.c_in).unwrap();
                let d = decode(call.d.dtype, &s.d_out).unwrap();
                let bias = decode(call.bias_type, &s.bias).unwrap();
                let (nr, nc, k) = (plan.rows.len(), plan.cols.len(), call.k as usize);
                assert_eq!(bias.len(), plan.batches.len() * nr, "[batch][row]");
                let scalars = Scalars {
                    alpha: s
                        .alpha
                        .unwrap_or_else(|| Scalars::from_host(call).unwrap().alpha),
                    beta: s
                        .beta
                        .unwrap_or_else(|| Scalars::from_host(call).unwrap().beta),
                    scale_a: s.scale_a.map_or(1.0, f64::from),
                    scale_b: s.scale_b.map_or(1.0, f64::from),
                    scale_c: s.scale_c.map_or(1.0, f64::from),
                    scale_d: s.scale_d.map_or(1.0, f64::from),
                };
                for bi in 0..plan.batches.len() {
                    for ri in 0..nr {
                        for ci in 0..nc {
                            let e = (bi * nr + ri) * nc + ci;
                            let entry = Entry {
                                a_row: &a[(bi * nr + ri) * k..][..k],
                                b_col: &b[(bi * nc + ci) * k..][..k],
                                c_in: c.get(e).copied().unwrap_or(0.0),
                                bias: Some(bias[bi * nr + ri]),
                                claimed: d[e],
                            };
                            checked += 1;
                            if !check_entry(call, &scalars, &entry).unwrap().passed() {
                                failed += 1;
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    (n_calls, checked, failed)
}

#[test]
fn bias_per_batch_entry_is_sampled_with_a_bias_vector_per_batch_entry() {
    // Batched cuBLASLt calls with a bias vector per batch entry (BIAS_BATCH_STRIDE):
    // ledgered with BIAS_PER_BATCH and sampled, the sample carrying bias[r] of each
    // sampled batch entry. Before, each sampled call became a gap and the gap policy
    // failed the honest run.
    let exe = compile("audit_matrix");
    let args = ["--bias-per-batch"];
    let reference = reference(&exe, &args, None);
    let a = audit("bias-per-batch", &exe, &args, FULL, None, &[]);
    let ctx = a.context();
    assert_eq!(a.run.code, Some(0), "{ctx}");
    assert_eq!(a.run.hash(), reference.hash(), "{ctx}");
    assert_eq!(a.check.n("calls"), reference.calls(), "{ctx}");
    assert_eq!(a.check.n("sampled"), reference.calls(), "{ctx}");
    for key in ["gaps", "missing", "integrity_errors"] {
        assert_eq!(a.check.n(key), 0, "{key}\n{ctx}");
    }
    // Every sampled entry, recomputed with the bias of its own batch entry, is right.
    let (header, records) = records_of("bias-per-batch");
    let (calls, checked, failed) = recheck_bias_per_batch(&header, &records);
    assert_eq!(calls, reference.calls(), "{ctx}");
    assert!(
        checked > 0 && failed == 0,
        "{failed} of {checked} entries\n{ctx}"
    );

    // Present: a GPU that adds the first batch entry's bias everywhere is caught.
    // (SIMGPU_FAULT has no such mode; a skipped GEMM stands in for a wrong result.)
    let z = audit("bias-per-batch-zero", &exe, &args, FULL, Some("zero"), &[]);
    assert_eq!(z.check.code, Some(1), "{}", z.context());
    let (header, records) = records_of("bias-per-batch-zero");
    let (_, checked, failed) = recheck_bias_per_batch(&header, &records);
    assert!(failed > 0 && failed <= checked, "{}", z.context());

    // The verifier's verdict. mmaudit-verify does not index the bias per batch entry
    // yet (verifier/src/audit.rs reads bias[r] for every batch entry): entries of the
    // first sampled batch entry pass, others whose bias differs fail. Once it reads
    // bias[batch][row] with BIAS_PER_BATCH, this run must pass:
    //     assert_eq!(a.check.code, Some(0)); assert_eq!(a.check.verdict(), "pass");
    if a.check.code == Some(0) {
        assert_eq!(a.check.verdict(), "pass", "{ctx}");
        assert_eq!(a.check.n("verified"), reference.calls(), "{ctx}");
    } else {
        let mismatches = a.check.failures_of("mismatch");
        assert!(!mismatches.is_empty(), "{ctx}");
        for f in mismatches {
            let msg = f["message"].as_str().unwrap_or_default();
            assert!(
                !msg.starts_with("entry batch 0 "),
                "an entry of batch entry 0 failed: {f}\n{ctx}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Calls the library rejects

/// The ledger of the one capture a test left in its scratch directory `name`.
fn ledger_of(name: &str) -> Vec<GemmCall> {
    let dir = scratch_path(name);
    let key = Key::from_hex(KEY).expect("the test key");
    let mut calls = Vec::new();
    for capture in captures_in(&dir) {
        let bytes = std::fs::read(&capture).expect("read the capture");
        let mut reader = StreamReader::new(&key);
        for e in reader.push(&bytes).expect("a readable capture") {
            if let Event::Frame { records, .. } = e {
                calls.extend(records.into_iter().filter_map(|r| match r {
                    Record::Ledger(c) => Some(c),
                    _ => None,
                }));
            }
        }
    }
    calls
}

/// The indices on a program's `rejected I J ...` line.
fn rejected_of(out: &Output) -> BTreeSet<u64> {
    out.field("rejected")
        .split_whitespace()
        .map(|w| w.parse().expect("a call index"))
        .collect()
}

#[test]
fn rejected_calls_are_ledgered_flagged_and_never_sampled() {
    let exe = compile("audit_rejected");
    let args = ["--trace"];
    let reference = reference(&exe, &args, None);
    let trace = reference.trace();
    let rejected = rejected_of(&reference);
    // f32 x f16 twice, lda < m, i8 with RELU, batch count -1, m = -3.
    assert_eq!(
        rejected,
        BTreeSet::from([30, 31, 32, 33, 34, 35]),
        "{}",
        reference.transcript()
    );
    // The arguments the library rejects as invalid cannot be described exactly.
    let invalid = BTreeSet::from([32u64, 34, 35]);

    let a = audit("rejected", &exe, &args, FULL, None, &[]);
    // 6 of 46 calls rejected (3 of them invalid, so not modelled either): over the
    // default policy's 1%; the auditor decides.
    let a = assert_fails_policy_then_recheck(
        &a,
        &[
            ("rejected", "--max-rejected"),
            ("unmodelled", "--max-unmodelled"),
        ],
    );
    // Before the fix, the sampled f32 x f16 calls became "gather failed" gaps (the gap
    // policy failed the honest run) and the invalid ones were missing from the ledger.
    assert_honest_pass(&a, &reference);
    let ctx = a.context();
    assert_eq!(a.run.stdout, reference.stdout, "{ctx}");
    assert_eq!(
        a.check.n("sampled"),
        a.run.calls() - rejected.len() as u64,
        "a rejected call is never sampled\n{ctx}"
    );
    assert_eq!(a.check.n("verified"), a.check.n("sampled"), "{ctx}");
    let ledger = ledger_of("rejected");
    assert_eq!(
        ledger.iter().map(|c| c.index).collect::<Vec<_>>(),
        (0..a.run.calls()).collect::<Vec<_>>(),
        "one ledger record per call, consecutive\n{ctx}"
    );
    for c in &ledger {
        assert_eq!(
            c.has(flags::REJECTED),
            rejected.contains(&c.index),
            "call {}: {c:?}\n{ctx}",
            c.index
        );
        assert_eq!(
            c.has(flags::UNMODELLED),
            invalid.contains(&c.index),
            "call {}: {c:?}\n{ctx}",
            c.index
        );
        let made = &trace[c.index as usize];
        assert_eq!(
            normalised_entry(&format!("{:?}", c.entry)),
            normalised_entry(&made.entry),
            "call {}\n{ctx}",
            c.index
        );
        // Sizes as made: a negative one as 0, a batch count below 1 as the empty
        // product (batch 1, m 0).
        let (m, batch) = if made.batch == 0 {
            (0, 1)
        } else {
            (made.m, made.batch)
        };
        assert_eq!(
            (c.m, c.n, c.k, c.batch),
            (m, made.n, made.k, batch),
            "call {}\n{ctx}",
            c.index
        );
    }
    // No FLOPs are claimed for what the library refused.
    let computed: f64 = trace
        .iter()
        .filter(|t| !rejected.contains(&t.index))
        .map(TraceLine::flops)
        .sum();
    assert_eq!(a.check.json["flops"].as_f64(), Some(computed), "{ctx}");

    // Present: the valid calls are still checked, and only they are named.
    let z = audit("rejected-zero", &exe, &args, FULL, Some("zero"), &[]);
    let ctx = z.context();
    assert_eq!(z.check.code, Some(1), "{ctx}");
    assert_failures_name_program_calls(&z.check, &trace, &ctx);
    let named = mismatched_calls(&z.check);
    assert!(named.is_disjoint(&rejected), "{ctx}");
    assert_eq!(
        z.check.n("mismatched"),
        z.run.calls() - rejected.len() as u64,
        "{ctx}"
    );
    assert_eq!(z.check.n("gaps"), 0, "{ctx}");
}

/// The indices on a program's `unmodelled I J ...` line.
fn unmodelled_of(out: &Output) -> BTreeSet<u64> {
    out.field("unmodelled")
        .split_whitespace()
        .map(|w| w.parse().expect("a call index"))
        .collect()
}

#[test]
fn calls_outside_the_model_are_ledgered_and_declared_not_modelled() {
    // A complex GEMM, an emulated compute type, DRELU and GELU_AUX epilogues, a COL32
    // layout, non-finite host alphas, fp8 with 1x128 block (VEC128_32F) scales, a
    // cuBLASLt grouped matmul (layouts in the grouped batch mode, 22):
    // recorded with UNMODELLED (entry point and sizes exact), never sampled; those the
    // simulator refuses also REJECTED. Before, they were forwarded without a ledger
    // record (the ledger undercounted the work), and an fp8 call with non-scalar scales
    // was verified as if its scales were scalars (an honest run would fail). The fp8
    // calls with per-row/column (OUTER_VEC_32F, 19) and scalar (21) scales are audited.
    let exe = compile("audit_rejected");
    let args = ["--unmodelled", "--trace"];
    let reference = reference(&exe, &args, None);
    let trace = reference.trace();
    let rejected = rejected_of(&reference);
    let unmodelled = unmodelled_of(&reference);
    assert_eq!(
        unmodelled,
        (10..18).chain([20, 22]).collect::<BTreeSet<u64>>(),
        "{}",
        reference.transcript()
    );
    // Everything but the non-finite alphas (15..=17) and the OUTER_VEC_32F call (19) is
    // refused by the simulator, and CUBLAS_OP_CONJG (18), which is described exactly
    // (op N on real data).
    assert_eq!(
        rejected,
        BTreeSet::from([10, 11, 12, 13, 14, 18, 20, 22]),
        "{}",
        reference.transcript()
    );

    let a = audit("unmodelled", &exe, &args, FULL, None, &[]);
    let a = assert_fails_policy_then_recheck(
        &a,
        &[
            ("rejected", "--max-rejected"),
            ("unmodelled", "--max-unmodelled"),
        ],
    );
    assert_honest_pass(&a, &reference);
    let ctx = a.context();
    let not_audited = rejected.union(&unmodelled).count() as u64;
    assert_eq!(a.check.n("sampled"), a.run.calls() - not_audited, "{ctx}");
    assert_eq!(a.check.n("verified"), a.check.n("sampled"), "{ctx}");
    let ledger = ledger_of("unmodelled");
    assert_eq!(
        ledger.iter().map(|c| c.index).collect::<Vec<_>>(),
        (0..a.run.calls()).collect::<Vec<_>>(),
        "{ctx}"
    );
    for c in &ledger {
        let made = &trace[c.index as usize];
        assert_eq!(
            (c.has(flags::UNMODELLED), c.has(flags::REJECTED)),
            (unmodelled.contains(&c.index), rejected.contains(&c.index)),
            "call {}: {c:?}\n{ctx}",
            c.index
        );
        assert_eq!(
            (c.m, c.n, c.k, c.batch),
            (made.m, made.n, made.k, made.batch),
            "call {}\n{ctx}",
            c.index
        );
        assert_eq!(
            normalised_entry(&format!("{:?}", c.entry)),
            normalised_entry(&made.entry),
            "{ctx}"
        );
    }
    // The ledger claims the work of every call the library accepted, modelled or not.
    let computed: f64 = trace
        .iter()
        .filter(|t| !rejected.contains(&t.index))
        .map(TraceLine::flops)
        .sum();
    assert_eq!(a.check.json["flops"].as_f64(), Some(computed), "{ctx}");
    // One warning per kind of call outside the model (two NaN alphas: one notice),
    // and the count at exit.
    let notices: Vec<&str> = a.check.json["streams"][0]["notices"]
        .as_array()
        .expect("notices")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let kinds = notices
        .iter()
        .filter(|n| n.contains("ledgered as not modelled (UNMODELLED) and never sampled"))
        .count();
    assert_eq!(kinds, 9, "{notices:#?}\n{ctx}");
    assert!(
        notices
            .iter()
            .any(|n| n.starts_with("10 calls could not be described in protocol v1")),
        "{notices:#?}"
    );
    for reason in ["VEC128_32F", "batch mode 2 (grouped"] {
        assert!(
            notices.iter().any(|n| n.contains(reason)),
            "{reason}\n{notices:#?}"
        );
    }
}

// ---------------------------------------------------------------------------
// The Llama-style workload

const LLAMA: &[&str] = &["--trace"];
const LLAMA_MHA: &[&str] = &[
    "--trace",
    "--kv-heads",
    "8",
    "--separate-qkv",
    "--dtype",
    "f16",
    "--layers",
    "3",
];

#[test]
fn llama_workload_passes_and_the_ledger_claims_its_flops() {
    let exe = compile("llama_workload");
    for (name, args) in [("llama-gqa", LLAMA), ("llama-mha", LLAMA_MHA)] {
        let reference = reference(&exe, args, None);
        let a = audit(name, &exe, args, EVERY_CALL, None, &[]);
        assert_honest_pass(&a, &reference);
        assert_eq!(a.check.n("verified"), a.run.calls(), "{}", a.context());
        let flops: f64 = reference.trace().iter().map(TraceLine::flops).sum();
        let claimed = a.check.json["flops"].as_f64().unwrap_or(-1.0);
        assert_eq!(claimed, flops, "{}", a.context());
    }
}

#[test]
fn llama_workload_decode_passes_with_every_call_sampled() {
    // Prefill, then 6 decode passes of one token with the KV cache: n = 1 GEMMs and
    // attention over a growing context.
    let exe = compile("llama_workload");
    let args = ["--generate", "6", "--trace"];
    let reference = reference(&exe, &args, None);
    let decode_from: u64 = reference.field("decode-from").trim().parse().unwrap();
    let a = audit("llama-decode", &exe, &args, EVERY_CALL, None, &[]);
    assert_honest_pass(&a, &reference);
    assert_eq!(a.check.n("verified"), a.run.calls(), "{}", a.context());
    let trace = reference.trace();
    assert_eq!(
        trace.len() as u64 - decode_from,
        6 * 19,
        "19 calls per token"
    );
    assert!(trace[decode_from as usize..].iter().all(|t| t.n == 1));
}

#[test]
fn llama_workload_passes_at_the_default_rates() {
    let exe = compile("llama_workload");
    let args = ["--layers", "4"];
    let reference = reference(&exe, &args, None);
    let a = audit("llama-default", &exe, &args, Rates::default(), None, &[]);
    assert_honest_pass(&a, &reference);
}

#[test]
fn cheaper_arithmetic_at_llama_3_8b_widths_fails_as_lower_precision() {
    // One Llama-3-8B layer (hidden 4096, GQA 32/8, intermediate 14336) in bf16: a GPU
    // that computes in per-channel fp8 or int8, or sums half the k terms, fails; every
    // weight GEMM (k = 4096 and, for down_proj, 14336) is named. The worst-case
    // tolerance alone passed the fp8 and int8 results at k = 14336.
    let exe = compile("llama_workload");
    let args = [
        "--layers",
        "1",
        "--tokens",
        "4",
        "--hidden",
        "4096",
        "--heads",
        "32",
        "--kv-heads",
        "8",
        "--intermediate",
        "14336",
        "--trace",
    ];
    let reference = reference(&exe, &args, None);
    let honest = audit("llama8b-honest", &exe, &args, EVERY_CALL, None, &[]);
    assert_honest_pass(&honest, &reference);
    let wide: BTreeSet<u64> = reference
        .trace()
        .iter()
        .filter(|t| t.k >= 4096)
        .map(|t| t.index)
        .collect();
    assert!(wide.len() >= 5, "{}", reference.transcript());
    for (name, fault) in [
        ("llama8b-fp8", "precision:fp8-rowscaled"),
        ("llama8b-int8", "precision:int8-rowscaled"),
        ("llama8b-half-k", "truncate-k:0.5"),
    ] {
        let a = audit(name, &exe, &args, EVERY_CALL, Some(fault), &[]);
        let ctx = a.context();
        assert_eq!(a.check.code, Some(1), "{fault} passed\n{ctx}");
        let named: BTreeSet<u64> = ["mismatch", "precision lower than declared"]
            .iter()
            .flat_map(|kind| a.check.failures_of(kind))
            .map(|f| failure_call(f).index)
            .collect();
        assert!(
            named.is_superset(&wide),
            "{fault}: {named:?} misses some of {wide:?}\n{ctx}"
        );
        if fault != "truncate-k:0.5" {
            assert!(
                !a.check
                    .failures_of("precision lower than declared")
                    .is_empty(),
                "{ctx}"
            );
        }
    }
}

/// Runs the workload with a fault, every call sampled; checks what every fault
/// test shares and returns the audit.
fn llama_fault(name: &str, fault: &str, rates: Rates) -> (Audited, Vec<TraceLine>) {
    let exe = compile("llama_workload");
    let trace = reference(&exe, LLAMA, None).trace();
    let faulty = reference(&exe, LLAMA, Some(fault));
    let a = audit(name, &exe, LLAMA, rates, Some(fault), &[]);
    let ctx = a.context();
    assert_eq!(a.run.code, Some(0), "{ctx}");
    assert_eq!(
        a.run.hash(),
        faulty.hash(),
        "the library changed the (faulty) results\n{ctx}"
    );
    assert_eq!(
        a.check.code,
        Some(1),
        "a faulty GPU passed the audit\n{ctx}"
    );
    assert_eq!(a.check.verdict(), "fail", "{ctx}");
    assert_eq!(a.check.n("calls"), a.run.calls(), "{ctx}");
    assert_eq!(a.check.n("missing"), 0, "{ctx}");
    assert_eq!(a.check.n("integrity_errors"), 0, "{ctx}");
    assert_failures_name_program_calls(&a.check, &trace, &ctx);
    (a, trace)
}

#[test]
fn llama_fault_zero_is_caught() {
    // Absent: llama_workload_passes_and_the_ledger_claims_its_flops (same rates).
    // A skipped GEMM zeroes the inputs of the GEMMs after it, which then compute
    // zeros correctly: the calls caught are those with honest, nonzero inputs. The
    // first call is one; so are the in-place o_proj calls (their C held the residual).
    let (a, trace) = llama_fault("llama-zero", "zero", EVERY_CALL);
    let named = mismatched_calls(&a.check);
    assert!(named.contains(&0), "{}", a.context());
    let o_proj = trace
        .iter()
        .find(|t| t.label.as_deref() == Some("o_proj"))
        .expect("an o_proj call")
        .index;
    assert!(named.contains(&o_proj), "{}", a.context());
}

#[test]
fn llama_fault_perturb_is_caught_when_every_entry_is_checked() {
    // One entry per call is 5% off: only a check of every entry catches every call.
    let (a, _) = llama_fault("llama-perturb", "perturb:0.05", FULL);
    assert!(
        a.check.n("mismatched") * 10 >= a.check.n("sampled") * 9,
        "{}",
        a.context()
    );
}

#[test]
fn llama_fault_rows_is_caught_in_the_garbage_rows_only() {
    let (a, trace) = llama_fault("llama-rows", "rows:0.5", EVERY_CALL);
    for f in a.check.failures_of("mismatch") {
        let call = failure_call(f);
        let m = trace[call.index as usize].m;
        assert!(
            failure_row(f) >= m / 2,
            "row {} of call {} (m = {m}) was computed honestly: {f}\n{}",
            failure_row(f),
            call.index,
            a.context()
        );
    }
}

#[test]
fn llama_fault_weights_is_caught() {
    let (a, _) = llama_fault("llama-weights", "weights:0.05", EVERY_CALL);
    assert!(
        a.check.n("mismatched") * 2 >= a.check.n("sampled"),
        "{}",
        a.context()
    );
}

#[test]
fn llama_fault_precision_fp8_is_caught() {
    let (a, _) = llama_fault("llama-fp8", "precision:fp8", EVERY_CALL);
    assert!(
        a.check.n("mismatched") * 2 >= a.check.n("sampled"),
        "{}",
        a.context()
    );
}

// ---------------------------------------------------------------------------
// Detection rates against `mmaudit-verify plan`

/// `mmaudit-verify plan` for one GEMM shape, as JSON.
fn plan(args: &[&str]) -> Value {
    let dir = scratch(&format!(
        "plan-{}",
        args.join("").replace(['-', '.', '%'], "")
    ));
    let json = dir.join("plan.json");
    let out = Command::new(&tools().verify)
        .arg("plan")
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run mmaudit-verify plan");
    assert!(
        out.status.success(),
        "plan failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(&json).expect("read plan.json"))
        .expect("plan.json is JSON")
}

#[test]
fn cheaper_arithmetic_is_caught_per_sampled_call_as_plan_predicts() {
    // bf16 linear layers of plan's data model (tests/programs/linear_layer.c) at
    // k = 4096, 14336 and 28672, every call sampled with the default row and column
    // rates (m = 200: 2 rows, 1 column, 2 entries per call). The share of calls that
    // fail matches plan's "per sampled call" for that shape within 5 sigma (the
    // binomial spread of the run and of plan's 200 simulated entries). At the default
    // call rate plan multiplies this by 10%; sampling calls at a rate is shown by
    // fault_prob_is_detected_at_the_rate_plan_predicts.
    let exe = compile("linear_layer");
    let calls = 60u64;
    let cases = [
        (4096, "precision:fp8-rowscaled", "e4m3"),
        (4096, "precision:int8-rowscaled", "int8"),
        (4096, "truncate-k:0.5", "first 50%"),
        (4096, "weights:0.001", "weights 0.1%"),
        (14336, "precision:fp8-rowscaled", "e4m3"),
        (14336, "precision:int8-rowscaled", "int8"),
        (28672, "precision:fp8-rowscaled", "e4m3"),
        (28672, "precision:int8-rowscaled", "int8"),
        (28672, "truncate-k:0.5", "first 50%"),
    ];
    for (k, fault, cheat) in cases {
        let ks = k.to_string();
        let calls_s = calls.to_string();
        let args = [
            "--m", "200", "--n", "1", "--k", &ks, "--calls", &calls_s, "--trace",
        ];
        let name = format!("linear-{k}-{}", fault.replace([':', '.'], "-"));
        let a = audit(&name, &exe, &args, EVERY_CALL, Some(fault), &[]);
        let ctx = a.context();
        assert_eq!(a.run.code, Some(0), "{ctx}");
        assert_eq!(a.check.n("sampled"), calls, "{ctx}");
        let failed: BTreeSet<u64> = ["mismatch", "precision lower than declared"]
            .iter()
            .flat_map(|kind| a.check.failures_of(kind))
            .map(|f| failure_call(f).index)
            .collect();
        let observed = failed.len() as f64 / calls as f64;
        let p = plan(&["--m", "200", "--n", "1", "--k", &ks]);
        let row = p["arithmetic"]
            .as_array()
            .and_then(|rows| {
                rows.iter()
                    .find(|r| r["cheat"].as_str().is_some_and(|c| c.starts_with(cheat)))
            })
            .unwrap_or_else(|| panic!("no {cheat} row in plan: {p}"));
        assert_eq!(row["entries_per_call"], 2, "{row}");
        let predicted = row["per_sampled_call"].as_f64().unwrap_or(-1.0);
        let q = row["per_entry"].as_f64().unwrap_or(-1.0);
        // spread of the run's share, and of plan's estimate through 1 - (1 - q)^2
        let run_sd = (predicted * (1.0 - predicted) / calls as f64).sqrt();
        let plan_sd = 2.0 * (1.0 - q) * (q * (1.0 - q) / 200.0).sqrt();
        let slack = 5.0 * (run_sd * run_sd + plan_sd * plan_sd).sqrt() + 1.0 / calls as f64;
        eprintln!(
            "k={k:>5} {fault:<26} {} of {calls} sampled calls failed ({observed:.3}); plan predicts {predicted:.3} per sampled call (per entry {q:.3})",
            failed.len()
        );
        assert!(
            (observed - predicted).abs() <= slack,
            "k={k} {fault}: observed {observed}, plan {predicted} +- {slack}\n{ctx}"
        );
        if predicted > 0.5 {
            assert_eq!(a.check.code, Some(1), "{ctx}");
        }
    }
}

fn num(v: &Value, path: &[&str]) -> f64 {
    let mut x = v;
    for p in path {
        x = &x[*p];
    }
    x.as_f64()
        .unwrap_or_else(|| panic!("no number at {path:?} in {v}"))
}

/// Asserts that `observed` successes out of `n` trials fit a rate `p`: within six
/// standard deviations (plus one), so a correct implementation essentially never
/// fails, while a rate off by a factor of two does at these sizes.
fn assert_rate(what: &str, observed: u64, n: u64, p: f64, ctx: &str) {
    let expected = n as f64 * p;
    let bound = 6.0 * (n as f64 * p * (1.0 - p)).sqrt() + 1.0;
    assert!(
        (observed as f64 - expected).abs() <= bound,
        "{what}: observed {observed} of {n}, expected {expected:.1} +- {bound:.1} (rate {p:.4})\n{ctx}"
    );
}

#[test]
fn fault_prob_is_detected_at_the_rate_plan_predicts() {
    // A GPU that corrupts one entry in 30% of the calls, audited at a call rate of
    // 25% with every entry checked: "cheat 1" of `plan` with f = 0.3.
    let (calls, p, f) = (1000u64, 0.25, 0.3);
    let exe = compile("audit_matrix");
    let args = ["--repeat", "1000", "--shape", "16,8,16", "--trace"];
    let rates = Rates {
        call: Some("0.25"),
        ..FULL
    };
    let fault = "perturb:0.5,prob:0.3";

    // Absent: the same run without the fault passes.
    let clean = reference(&exe, &args, None);
    assert_honest_pass(&audit("prob-clean", &exe, &args, rates, None, &[]), &clean);

    // Which calls the fault hit: their output differs from the clean run's.
    let faulty_run = reference(&exe, &args, Some(fault));
    let faulted: BTreeSet<u64> = clean
        .trace()
        .iter()
        .zip(faulty_run.trace())
        .filter(|(a, b)| a.hash != b.hash)
        .map(|(a, _)| a.index)
        .collect();
    assert_rate("faulted calls", faulted.len() as u64, calls, f, "");

    let a = audit("prob", &exe, &args, rates, Some(fault), &[]);
    let ctx = a.context();
    assert_eq!(a.run.hash(), faulty_run.hash(), "{ctx}");
    assert_eq!(a.check.code, Some(1), "{ctx}");
    assert_eq!(a.check.n("calls"), calls, "{ctx}");
    // Every call named is one the fault hit.
    let named = mismatched_calls(&a.check);
    assert!(
        named.is_subset(&faulted),
        "honest calls reported as wrong: {:?}\n{ctx}",
        named.difference(&faulted).collect::<Vec<_>>()
    );
    assert_eq!(named.len() as u64, a.check.n("mismatched"), "{ctx}");

    let plan = plan(&[
        "--m",
        "16",
        "--n",
        "8",
        "--k",
        "16",
        "--dtype",
        "f32",
        "--call-rate",
        "0.25",
        "--row-rate",
        "1",
        "--col-rate",
        "1",
        "--fake-fraction",
        "0.3",
    ]);
    assert_eq!(num(&plan, &["call_rate"]), p);
    // plan: a faked call is caught with probability 1 - exp(ln_survival) = p; per
    // call f times that.
    let per_faked_call = -num(&plan, &["detection", "ln_survival_fake_calls"]).exp_m1();
    let per_call = num(&plan, &["detection", "fake_fraction"]) * per_faked_call;
    assert!((per_call - p * f).abs() < 1e-12);
    assert_rate("calls sampled", a.check.n("sampled"), calls, p, &ctx);
    assert_rate(
        "faulted calls caught",
        a.check.n("mismatched"),
        faulted.len() as u64,
        per_faked_call,
        &ctx,
    );
    assert_rate(
        "calls caught (plan's cheat 1 per call)",
        a.check.n("mismatched"),
        calls,
        per_call,
        &ctx,
    );
}

#[test]
fn fault_rows_is_detected_at_the_rate_plan_predicts() {
    // rows:0.75 leaves rows 48..63 of every 64-row result wrong: "cheat 2" of `plan`
    // with g = 0.25. 3 checked rows per sampled call (5%), half the calls sampled.
    let (calls, m) = (400u64, 64u64);
    let exe = compile("audit_matrix");
    let args = ["--repeat", "400", "--shape", "64,32,64", "--trace"];
    let rates = Rates {
        call: Some("0.5"),
        row: Some("0.05"),
        col: None,
        batch: None,
    };
    let fault = "rows:0.75";

    let clean = reference(&exe, &args, None);
    assert_honest_pass(&audit("rows-clean", &exe, &args, rates, None, &[]), &clean);

    let a = audit("rows", &exe, &args, rates, Some(fault), &[]);
    let ctx = a.context();
    assert_eq!(
        a.run.hash(),
        reference(&exe, &args, Some(fault)).hash(),
        "{ctx}"
    );
    assert_eq!(a.check.code, Some(1), "{ctx}");
    for f in a.check.failures_of("mismatch") {
        assert!(failure_row(f) >= 48, "an honest row reported: {f}\n{ctx}");
    }

    let plan = plan(&[
        "--m",
        "64",
        "--n",
        "32",
        "--k",
        "64",
        "--dtype",
        "f32",
        "--call-rate",
        "0.5",
        "--row-rate",
        "0.05",
        "--fake-rows",
        "0.25",
    ]);
    assert_eq!(num(&plan, &["gemm", "cost", "rows"]), 3.0);
    assert_eq!(num(&plan, &["gemm", "cost", "faked_rows"]), (m / 4) as f64);
    let q = num(&plan, &["gemm", "cost", "q_exact"]);
    let per_call = num(&plan, &["detection", "per_call_fake_rows_exact"]);
    let sampled = a.check.n("sampled");
    assert_rate("calls sampled", sampled, calls, 0.5, &ctx);
    assert_rate(
        "sampled calls caught (plan's q)",
        a.check.n("mismatched"),
        sampled,
        q,
        &ctx,
    );
    assert_rate(
        "calls caught (plan's cheat 2 per call)",
        a.check.n("mismatched"),
        calls,
        per_call,
        &ctx,
    );
}

// ---------------------------------------------------------------------------
// dlopen + dlsym, threads

#[test]
fn dlopen_and_dlsym_program_is_audited() {
    let exe = compile_unlinked("audit_dlopen");
    let reference = reference(&exe, &["--trace"], None);
    let a = audit("dlopen", &exe, &["--trace"], FULL, None, &[]);
    assert_honest_pass(&a, &reference);
    assert_eq!(a.check.n("verified"), reference.calls(), "{}", a.context());

    // Present: the calls through dlsym are checked, not only counted.
    let trace = reference.trace();
    let b = audit("dlopen-zero", &exe, &["--trace"], FULL, Some("zero"), &[]);
    let ctx = b.context();
    assert_eq!(b.run.code, Some(0), "{ctx}");
    assert_eq!(b.check.code, Some(1), "{ctx}");
    assert_eq!(b.check.n("mismatched"), reference.calls(), "{ctx}");
    assert_failures_name_program_calls(&b.check, &trace, &ctx);
}

#[test]
fn threads_handles_and_streams_pass_with_nothing_missing() {
    let exe = compile("audit_threads");
    let reference = reference(&exe, &[], None);
    for (name, latency) in [("threads", None), ("threads-latency", Some("30"))] {
        let extra: Vec<(&'static str, String)> = latency
            .map(|l| vec![("SIMGPU_LATENCY_US", l.to_string())])
            .unwrap_or_default();
        let a = audit(name, &exe, &[], FULL, None, &extra);
        assert_honest_pass(&a, &reference);
        assert_eq!(a.check.n("verified"), a.run.calls(), "{}", a.context());
    }
    // Present: a fault in the second half of the calls, from whichever thread.
    let a = audit(
        "threads-fault",
        &exe,
        &[],
        FULL,
        Some("zero,after:144"),
        &[],
    );
    assert_eq!(a.run.code, Some(0), "{}", a.context());
    assert_eq!(a.check.code, Some(1), "{}", a.context());
    assert_eq!(a.check.n("mismatched"), 144, "{}", a.context());
    assert_eq!(a.check.n("missing"), 0, "{}", a.context());
}

#[test]
fn graph_capture_still_works_and_replays_of_captured_calls_are_audited() {
    // audit_graph: three GEMMs (Sgemm, GemmEx, cublasLtMatmul) captured into one
    // graph, the graph launched three times, then one ordinary call.
    let exe = compile("audit_graph");
    let reference = reference(&exe, &[], None);
    let captured: u64 = reference.field("captured").trim().parse().unwrap();
    let replayed = 3 * captured;
    for (name, latency) in [("graph", None), ("graph-latency", Some("50"))] {
        let extra: Vec<(&'static str, String)> = latency
            .map(|l| vec![("SIMGPU_LATENCY_US", l.to_string())])
            .unwrap_or_default();
        let a = audit(name, &exe, &[], FULL, None, &extra);
        assert_graph_pass(&a, &reference, captured, replayed);
    }
    // Present: the simulator numbers the GEMMs of each graph launch (3 launches of 3),
    // so after:3 faults the second and third replays and the ordinary call: ledger
    // records 6..=12 (0..=2 are the capture records, 3..=5 the first replay).
    let a = audit("graph-fault", &exe, &[], FULL, Some("zero,after:3"), &[]);
    let ctx = a.context();
    assert_eq!(a.run.code, Some(0), "{ctx}");
    assert_eq!(a.check.code, Some(1), "{ctx}");
    let named = mismatched_calls(&a.check);
    assert_eq!(named, (6..=12).collect::<BTreeSet<u64>>(), "{ctx}");
}

// ---------------------------------------------------------------------------
// CUDA graph replays (tests/programs/graph_decode.c)

/// A graph program's counts: (capture records, replayed GEMMs).
fn graph_counts(out: &Output) -> (u64, u64) {
    let n = |f: &str| out.field(f).trim().parse::<u64>().unwrap();
    (n("captured"), n("replayed"))
}

/// The report's `graphs` numbers.
fn graphs_n(a: &Audited, key: &str) -> u64 {
    a.check.json["streams"][0]["graphs"][key]
        .as_u64()
        .unwrap_or_else(|| panic!("no graphs.{key}\n{}", a.context()))
}

/// An honest run of a graph program at call rate 1: same outputs as without the
/// library, pass, and the ledger holds every call made directly (capture records
/// among them) plus one record per GEMM every graph launch ran, each of those sampled
/// and verified.
fn assert_graph_pass(a: &Audited, reference: &Output, captured: u64, replayed: u64) {
    assert_clean_pass(a, reference, reference.calls() + replayed);
    let ctx = a.context();
    assert_eq!(graphs_n(a, "capture_records"), captured, "{ctx}");
    assert_eq!(graphs_n(a, "replayed"), replayed, "{ctx}");
    assert_eq!(graphs_n(a, "replayed_sampled"), replayed, "{ctx}");
    assert_eq!(graphs_n(a, "replayed_verified"), replayed, "{ctx}");
    assert_eq!(graphs_n(a, "replayed_not_audited"), 0, "{ctx}");
    assert_eq!(a.check.n("verified"), a.check.n("sampled"), "{ctx}");
}

#[test]
fn every_gemm_of_every_graph_replay_is_ledgered_sampled_and_verified() {
    let exe = compile("graph_decode");
    for (name, args, latency) in [
        ("decode", vec!["--replays", "200"], None),
        ("decode-latency", vec!["--replays", "24"], Some("40")),
        ("decode-twice", vec!["--replays", "24", "--twice"], None),
        ("decode-update", vec!["--replays", "24", "--update"], None),
        (
            "decode-queued",
            vec!["--replays", "12", "--queue", "--destroy-queued"],
            Some("40"),
        ),
        (
            "decode-abort",
            vec!["--replays", "8", "--abort", "--eager-first"],
            None,
        ),
        (
            "decode-churn",
            vec!["--replays", "24", "--queue", "--churn", "5"],
            Some("40"),
        ),
        ("decode-driver", vec!["--replays", "24", "--driver"], None),
        (
            "decode-capture-thread",
            vec!["--replays", "24", "--capture-thread"],
            None,
        ),
        (
            "decode-per-thread",
            vec!["--replays", "24", "--per-thread", "--two-streams"],
            Some("40"),
        ),
    ] {
        let reference = reference(&exe, &args, None);
        let (captured, replayed) = graph_counts(&reference);
        let extra: Vec<(&'static str, String)> = latency
            .map(|l| vec![("SIMGPU_LATENCY_US", l.to_string())])
            .unwrap_or_default();
        let a = audit(name, &exe, &args, EVERY_CALL, None, &extra);
        assert_graph_pass(&a, &reference, captured, replayed);
        eprintln!("{name}: {replayed} replayed GEMMs ledgered, sampled and verified");
    }
}

#[test]
fn replays_queued_beyond_the_depth_become_explicit_gaps_never_wrong_data() {
    // 40 replays issued before the first one ran (SIMGPU_LATENCY_US): the executable
    // graph's 16 rows fill up and the samples of later replays are QUEUE_FULL gaps.
    let exe = compile("graph_decode");
    let args = ["--replays", "40", "--queue"];
    let reference = reference(&exe, &args, None);
    let (_, replayed) = graph_counts(&reference);
    let extra = [("SIMGPU_LATENCY_US", "200".to_string())];
    let a = audit("decode-overflow", &exe, &args, EVERY_CALL, None, &extra);
    let ctx = a.context();
    assert_eq!(a.run.hash(), reference.hash(), "{ctx}");
    assert_eq!(graphs_n(&a, "replayed"), replayed, "{ctx}");
    assert_eq!(a.check.n("mismatched"), 0, "{ctx}");
    assert_eq!(a.check.n("missing"), 0, "{ctx}");
    let gaps = a.check.n("gaps");
    assert!(gaps > 0, "{ctx}");
    assert_eq!(
        a.check.json["streams"][0]["gap_reasons"]["QueueFull"].as_u64(),
        Some(gaps),
        "{ctx}"
    );
    assert_eq!(a.check.n("verified") + gaps, a.check.n("sampled"), "{ctx}");
    // The coverage hole fails the default policy, by name.
    assert_eq!(a.check.code, Some(1), "{ctx}");
    assert!(!a.check.failures_of("gap rate").is_empty(), "{ctx}");
    // A deeper control block (MMAUDIT_GRAPH_DEPTH) serves the same queue in full.
    let extra = [
        ("SIMGPU_LATENCY_US", "200".to_string()),
        ("MMAUDIT_GRAPH_DEPTH", "64".to_string()),
    ];
    let a = audit("decode-deep", &exe, &args, EVERY_CALL, None, &extra);
    let (captured, _) = graph_counts(&reference);
    assert_graph_pass(&a, &reference, captured, replayed);
}

#[test]
fn graph_replays_are_sampled_at_the_call_rate() {
    // Default rates: the number of sampled replayed GEMMs is within 5 sigma of 10%.
    let exe = compile("graph_decode");
    let args = ["--replays", "200"];
    let reference = reference(&exe, &args, None);
    let (_, replayed) = graph_counts(&reference);
    let a = audit("decode-default", &exe, &args, Rates::default(), None, &[]);
    let ctx = a.context();
    assert_eq!(a.run.hash(), reference.hash(), "{ctx}");
    assert_eq!(a.check.code, Some(0), "{ctx}");
    assert_eq!(graphs_n(&a, "replayed"), replayed, "{ctx}");
    let sampled = graphs_n(&a, "replayed_sampled");
    assert_eq!(graphs_n(&a, "replayed_verified"), sampled, "{ctx}");
    let (n, p) = (replayed as f64, 0.1);
    let sd = (n * p * (1.0 - p)).sqrt();
    eprintln!(
        "{sampled} of {replayed} replayed GEMMs sampled (expected {:.0} +- {sd:.1})",
        n * p
    );
    assert!((sampled as f64 - n * p).abs() <= 5.0 * sd, "{ctx}");
}

#[test]
fn faults_that_start_after_capture_fail_the_audit_naming_replayed_calls() {
    // The simulator numbers a captured GEMM at each launch, so after:N leaves the
    // first replays honest and faults the later ones: only replays are wrong.
    let exe = compile("graph_decode");
    let args = ["--replays", "16"];
    let reference = reference(&exe, &args, None);
    let (captured, replayed) = graph_counts(&reference);
    let after = replayed / 2;
    for fault in ["zero", "rows:0.5", "weights:0.01"] {
        let spec = format!("{fault},after:{after}");
        let a = audit(
            &format!("decode-{}", fault.replace([':', '.'], "-")),
            &exe,
            &args,
            EVERY_CALL,
            Some(&spec),
            &[],
        );
        let ctx = a.context();
        assert_eq!(a.run.code, Some(0), "{ctx}");
        assert_eq!(a.check.code, Some(1), "{spec}\n{ctx}");
        let failures = a.check.failures_of("mismatch");
        assert!(!failures.is_empty(), "{ctx}");
        for f in failures {
            let call = f["call"].as_str().unwrap_or_default();
            assert!(
                call.contains(" replay "),
                "not a replayed call: {call}\n{ctx}"
            );
            // The ledger holds the capture records first, then every launch's GEMMs in
            // the order the simulator numbers them: fault number c is record
            // captured + c - 1, so only records from captured + after on are wrong.
            let index = failure_call(f).index;
            assert!(
                index >= captured + after,
                "an honest replay was reported: {call}\n{ctx}"
            );
        }
    }
}

#[test]
fn wrong_replays_are_caught_at_the_rate_plan_predicts() {
    // One entry of 30% of the replayed GEMMs corrupted, audited at a call rate of
    // 25% with every entry checked: plan predicts p f = 7.5% of calls caught.
    let exe = compile("graph_decode");
    let args = ["--replays", "100"];
    let reference = reference(&exe, &args, None);
    let (_, replayed) = graph_counts(&reference);
    let rates = Rates {
        call: Some("0.25"),
        ..FULL
    };
    let a = audit(
        "decode-prob",
        &exe,
        &args,
        rates,
        Some("perturb:0.5,prob:0.3"),
        &[],
    );
    let ctx = a.context();
    assert_eq!(a.run.code, Some(0), "{ctx}");
    assert_eq!(a.check.code, Some(1), "{ctx}");
    assert_eq!(graphs_n(&a, "replayed"), replayed, "{ctx}");
    let plan = plan(&[
        "--m",
        "64",
        "--n",
        "4",
        "--k",
        "64",
        "--call-rate",
        "0.25",
        "--row-rate",
        "1",
        "--col-rate",
        "1",
        "--fake-fraction",
        "0.3",
    ]);
    let per_faked_call = -num(&plan, &["detection", "ln_survival_fake_calls"]).exp_m1();
    let per_call = num(&plan, &["detection", "fake_fraction"]) * per_faked_call;
    eprintln!(
        "{} of {replayed} replayed GEMMs caught; plan predicts {per_call:.4} per call",
        a.check.n("mismatched")
    );
    assert_rate(
        "replays caught",
        a.check.n("mismatched"),
        replayed,
        per_call,
        &ctx,
    );
}

// ---------------------------------------------------------------------------
// TCP sink

/// A port on which nothing listens (bound, then released).
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a port");
    l.local_addr().expect("local address").port()
}

#[test]
fn tcp_sink_without_a_listener_leaves_the_program_alone() {
    let exe = compile("llama_workload");
    let reference = reference(&exe, LLAMA, None);
    let sink = format!("tcp://127.0.0.1:{}", free_port());
    let started = Instant::now();
    let out = run(&exe, LLAMA, &audit_env(&sink, EVERY_CALL, None));
    assert_eq!(out.code, Some(0), "{}", out.transcript());
    assert_eq!(out.hash(), reference.hash(), "{}", out.transcript());
    assert_eq!(out.calls(), reference.calls());
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}

/// A verifier stand-in: accepts connections, sends each a hello (nonce `0x40 + N`,
/// every call sampled, no tensors) and saves each one's bytes to `dir/conn-N.mma`. With `drop_first_after` it reads at most that many bytes of the
/// first connection and then closes it, as a verifier that dies mid-run.
struct Listener {
    port: u16,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Listener {
    fn start(dir: &Path, drop_first_after: Option<usize>) -> Listener {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("non-blocking accept");
        let port = listener.local_addr().expect("address").port();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (dir, stop2, accepted2) = (dir.to_path_buf(), stop.clone(), accepted.clone());
        let thread = std::thread::spawn(move || {
            let mut readers = Vec::new();
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        let n = accepted2.fetch_add(1, Ordering::SeqCst);
                        // The verifier speaks first: a hello with a fresh nonce.
                        let key = Key::from_hex(KEY).expect("the test key");
                        let hello = ServerHello {
                            key_id: key.id(),
                            nonce: [0x40 + n as u8; 16],
                            // The verifier sets the rates: every call.
                            sampling: EVERY_CALL.config(),
                            tensors: vec![],
                            mode: mmaudit_protocol::handshake::HelloMode::Sampling,
                        };
                        let _ = conn.set_nonblocking(false);
                        let _ = conn.write_all(&hello.encode(&key).expect("a hello"));
                        let path = dir.join(format!("conn-{n}.mma"));
                        let limit = if n == 0 { drop_first_after } else { None };
                        readers.push(std::thread::spawn(move || save(conn, &path, limit)));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            for r in readers {
                let _ = r.join();
            }
        });
        Listener {
            port,
            stop,
            accepted,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> usize {
        // Let the connections of the finished program drain before stopping.
        std::thread::sleep(Duration::from_millis(200));
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().expect("listener thread");
        }
        self.accepted.load(Ordering::SeqCst)
    }
}

fn save(mut conn: TcpStream, path: &Path, limit: Option<usize>) {
    conn.set_nonblocking(false).expect("blocking reads");
    conn.set_read_timeout(Some(TIMEOUT)).expect("read timeout");
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let want = match limit {
            Some(l) if bytes.len() >= l => break,
            Some(l) => (l - bytes.len()).min(buf.len()),
            None => buf.len(),
        };
        match conn.read(&mut buf[..want]) {
            Ok(0) | Err(_) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
        }
    }
    std::fs::write(path, &bytes).expect("save the received stream");
    // Dropping the connection here closes it; with unread data the peer gets a reset.
}

#[test]
fn tcp_sink_to_a_verifier_that_reads_everything_passes() {
    // Absent case of the disconnect test: the same run, the connection kept.
    let exe = compile("llama_workload");
    let args = ["--layers", "4", "--trace"];
    let reference = reference(&exe, &args, None);
    let dir = scratch("tcp-whole");
    let listener = Listener::start(&dir, None);
    let sink = format!("tcp://127.0.0.1:{}", listener.port);
    let out = run(&exe, &args, &audit_env(&sink, EVERY_CALL, None));
    let accepted = listener.finish();
    assert_eq!(out.code, Some(0), "{}", out.transcript());
    assert_eq!(out.hash(), reference.hash());
    assert_eq!(accepted, 1, "{}", out.transcript());
    let captures = captures_in(&dir);
    let c = check_args(&captures, &dir, NO_SESSION_ALLOWED);
    assert_eq!(c.code, Some(0), "{}\n{}", out.transcript(), c.text);
    assert_eq!(c.n("calls"), out.calls(), "{}", c.text);
    // The stream carries the hello's nonce; every call made in the session is sampled
    // (call rate 1), those made before the hello arrived are declared, not sampled.
    assert_eq!(header_of(&captures[0]).map(|h| h.nonce), Some([0x40; 16]));
    assert_eq!(
        c.n("sampled") + c.n("no_session_not_audited"),
        out.calls(),
        "{}",
        c.text
    );
    assert!(c.n("sampled") > 0, "{}", c.text);
}

#[test]
fn tcp_verifier_that_disconnects_mid_run_leaves_the_program_alone_and_shows_it() {
    let exe = compile("llama_workload");
    let args = ["--layers", "4", "--trace"];
    let reference = reference(&exe, &args, None);
    let dir = scratch("tcp-drop");
    // 600 bytes: the header and a little more, far less than the whole stream.
    let listener = Listener::start(&dir, Some(600));
    let sink = format!("tcp://127.0.0.1:{}", listener.port);
    let out = run(&exe, &args, &audit_env(&sink, EVERY_CALL, None));
    let accepted = listener.finish();
    assert_eq!(
        out.code,
        Some(0),
        "the program did not survive the verifier's disconnect\n{}",
        out.transcript()
    );
    assert_eq!(out.hash(), reference.hash(), "{}", out.transcript());
    assert!(accepted >= 1, "{}", out.transcript());

    let captures = captures_in(&dir);
    let first = check(&captures[..1], &dir);
    let ctx = format!("{}\n{}", out.transcript(), first.text);
    assert_eq!(first.code, Some(1), "a cut stream passed\n{ctx}");
    assert!(first.n("integrity_errors") >= 1, "{ctx}");

    // Every saved segment together: never a pass, and the loss is visible.
    let all = check(&captures, &dir);
    let ctx = format!("{}\n{}", out.transcript(), all.text);
    assert_eq!(all.code, Some(1), "{ctx}");
    assert_eq!(all.verdict(), "fail", "{ctx}");
    assert!(
        all.n("integrity_errors") + all.n("gaps") + all.n("missing") > 0,
        "{ctx}"
    );

    // A reconnection starts a new segment whose header says where its ledger starts:
    // the calls of the cut frame are in no capture, and the gap shows in the headers.
    let segments: Vec<StreamHeader> = captures.iter().filter_map(|c| header_of(c)).collect();
    assert_eq!(segments.first().map(|h| h.segment), Some(0), "{ctx}");
    let streams = all.json["streams"].as_array().expect("streams");
    let mut covered = 0u64;
    for (i, h) in segments.iter().enumerate().skip(1) {
        assert_eq!(h.segment as usize, i, "segments out of order\n{ctx}");
        assert_eq!(h.stream_id, segments[0].stream_id, "{ctx}");
        let delivered_before: u64 = streams[..i]
            .iter()
            .map(|s| s["calls"].as_u64().unwrap_or(0))
            .sum();
        assert!(
            h.first_index >= delivered_before,
            "segment {i} starts at call {}, before calls already delivered\n{ctx}",
            h.first_index
        );
        covered += streams[i]["calls"].as_u64().unwrap_or(0);
    }
    covered += streams[0]["calls"].as_u64().unwrap_or(0);
    assert!(
        covered < out.calls(),
        "every call arrived although the connection was cut\n{ctx}"
    );
}

// ---------------------------------------------------------------------------
// The live verifier: `mmaudit-verify serve`

/// A live report with no gap, missing call, mismatch or integrity error.
fn assert_nothing_wrong(r: &Value, ctx: &str) {
    for key in ["gaps", "missing", "mismatched", "integrity_errors"] {
        assert_eq!(r[key].as_u64(), Some(0), "{key}\n{ctx}");
    }
}

/// `mmaudit-verify serve`, in this process, writing captures and one JSON report per
/// stream into `dir`. Its hello asks for every call to be sampled: what these tests'
/// provers (EVERY_CALL) used to ask of themselves.
fn serve(dir: &Path, weights: Option<&Path>) -> Serve<mmaudit_verify::serve::ServeSummary> {
    serve_with(dir, weights, None)
}

/// [`serve`], in commit mode when `challenge` is the verifier's challenge key: its hello
/// asks for commit mode, and `sampling` (the challenge's rates) replaces EVERY_CALL.
fn serve_with(
    dir: &Path,
    weights: Option<&Path>,
    challenge: Option<([u8; 32], mmaudit_protocol::config::SamplingConfig)>,
) -> Serve<mmaudit_verify::serve::ServeSummary> {
    use mmaudit_verify::serve::{ServeOptions, Server};
    use mmaudit_verify::weights::{WeightPolicy, WeightRegistry};
    let key = Key::from_hex(KEY).expect("the test key");
    let mut opts = ServeOptions::new("127.0.0.1:0".parse().expect("an address"), key);
    let (captures, reports) = serve_dirs(dir);
    opts.capture_dir = Some(captures);
    opts.json_dir = Some(reports);
    opts.sampling = EVERY_CALL.config();
    // A short program's first calls precede the verifier's hello (no session): far
    // above the default 1% here. These tests judge sessions, references and many
    // provers; tests/e2e/policy.rs judges that share.
    opts.policy
        .set_limit(mmaudit_verify::policy::Unaudited::NoSession, 1.0);
    opts.weights = weights.map(|w| WeightPolicy {
        registry: Arc::new(WeightRegistry::load(&[w]).expect("load the weights")),
        required: false,
    });
    if let Some((key, sampling)) = challenge {
        opts.challenge_key = Some(key);
        opts.sampling = sampling;
    }
    let server = Server::bind(opts).expect("bind the verifier");
    let (addr, stopper) = (server.local_addr(), server.stopper());
    let thread = std::thread::spawn(move || server.run().expect("the verifier runs"));
    Serve::new(addr, dir, move || stopper.stop(), thread)
}

#[test]
fn live_verifier_audits_the_workload_over_a_session() {
    let exe = compile("llama_workload");
    let args = ["--layers", "4", "--trace"];
    let reference = reference(&exe, &args, None);
    let dir = scratch("serve");
    let serve = serve(&dir, None);
    let sink = format!("tcp://{}", serve.addr);
    let out = run(&exe, &args, &audit_env(&sink, EVERY_CALL, None));
    let (reports, summary) = serve.finish(1);
    let ctx = format!("{}\n{reports:#?}\n{summary:?}", out.transcript());
    assert_eq!(out.code, Some(0), "{ctx}");
    assert_eq!(out.hash(), reference.hash(), "{ctx}");
    assert_eq!((summary.streams, summary.passed), (1, 1), "{ctx}");
    let r = &reports[0];
    assert_eq!(r["verdict"], "pass", "{ctx}");
    assert_eq!(r["calls"].as_u64(), Some(out.calls()), "{ctx}");
    assert_nothing_wrong(r, &ctx);
    // Every call made in the session is sampled (call rate 1); the few made before
    // the verifier's hello arrived are declared, not sampled.
    let (sampled, no_session) = (
        r["sampled"].as_u64().unwrap_or(0),
        r["no_session_not_audited"].as_u64().unwrap_or(0),
    );
    assert_eq!(sampled + no_session, out.calls(), "{ctx}");
    assert!(sampled > out.calls() / 2, "{ctx}");
    // The capture the verifier saved re-checks offline with the same verdict.
    let captures = captures_in(&dir.join("captures"));
    assert_eq!(captures.len(), 1, "{ctx}");
    let c = check_args(&captures, &dir, NO_SESSION_ALLOWED);
    assert_eq!(c.code, Some(0), "{}", c.text);
    assert_eq!(c.n("sampled"), sampled, "{}", c.text);
}

#[test]
fn live_verifier_holding_the_weights_gets_references_instead_of_weight_rows() {
    let exe = compile("llama_workload");
    let dir = scratch("serve-weights");
    let weights = dir.join("model.safetensors");
    let w = weights.display().to_string();
    // The workload's seeded weights, as the verifier will hold them.
    let written = run(&exe, &["--layers", "2", "--write-weights", &w], &[]);
    assert_eq!(written.code, Some(0), "{}", written.transcript());
    let args = ["--layers", "2", "--trace"];
    let reference = reference(&exe, &args, None);
    let mut bytes = Vec::new();
    for references in ["1", "0"] {
        let sub = dir.join(format!("references-{references}"));
        let serve = serve(&sub, Some(&weights));
        let sink = format!("tcp://{}", serve.addr);
        let mut env = audit_env(&sink, EVERY_CALL, None);
        env.push(("MMAUDIT_REFERENCES", references.into()));
        let out = run(&exe, &args, &env);
        let (reports, summary) = serve.finish(1);
        let ctx = format!("{}\n{reports:#?}\n{summary:?}", out.transcript());
        assert_eq!(out.code, Some(0), "{ctx}");
        assert_eq!(out.hash(), reference.hash(), "{ctx}");
        let r = &reports[0];
        assert_eq!(r["verdict"], "pass", "{ctx}");
        assert_eq!(r["calls"].as_u64(), Some(out.calls()), "{ctx}");
        let weights = &r["streams"][0]["weights"];
        let (judged, matched, referenced) = (
            weights["judged"].as_u64().unwrap_or(0),
            weights["matched"].as_u64().unwrap_or(0),
            weights["referenced"].as_u64().unwrap_or(0),
        );
        // Of the 9 calls per layer plus lm_head, 5 per layer plus lm_head take a weight
        // as op(A): with references on, every such sampled call sends a reference.
        let weight_calls = out
            .trace()
            .iter()
            .filter(|t| t.label.as_deref().is_some_and(|l| !l.starts_with("attn")))
            .count() as u64;
        assert!(judged > 0 && matched > 0, "{ctx}");
        if references == "1" {
            assert!(referenced > 0, "{ctx}");
            assert!(
                referenced + r["no_session_not_audited"].as_u64().unwrap_or(0) >= weight_calls,
                "{referenced} references for {weight_calls} weight calls\n{ctx}"
            );
        } else {
            assert_eq!(referenced, 0, "MMAUDIT_REFERENCES=0\n{ctx}");
        }
        bytes.push(summary.bytes);
    }
    assert!(
        bytes[0] < bytes[1],
        "references send fewer bytes: {} with, {} without",
        bytes[0],
        bytes[1]
    );
}

#[test]
fn eight_concurrent_provers_stream_to_one_verifier_and_recheck_offline_identically() {
    let exe = compile("llama_workload");
    let args = ["--layers", "2", "--trace"];
    let reference = reference(&exe, &args, None);
    let dir = scratch("serve-eight");
    let serve = serve(&dir, None);
    let sink = format!("tcp://{}", serve.addr);
    let provers: Vec<_> = (0..8)
        .map(|_| {
            let (exe, sink) = (exe.clone(), sink.clone());
            std::thread::spawn(move || run(&exe, &args, &audit_env(&sink, EVERY_CALL, None)))
        })
        .collect();
    let outs: Vec<Output> = provers
        .into_iter()
        .map(|p| p.join().expect("a prover thread"))
        .collect();
    let (reports, summary) = serve.finish(8);
    let ctx = format!("{reports:#?}\n{summary:?}");
    for out in &outs {
        assert_eq!(out.code, Some(0), "{}\n{ctx}", out.transcript());
        assert_eq!(out.hash(), reference.hash(), "{}", out.transcript());
    }
    assert_eq!((summary.streams, summary.passed), (8, 8), "{ctx}");
    let counters = |v: &Value| -> (String, u64, u64, u64, u64) {
        let n = |k: &str| v[k].as_u64().unwrap_or(u64::MAX);
        (
            v["verdict"].as_str().unwrap_or("?").to_string(),
            n("calls"),
            n("sampled"),
            n("verified"),
            n("entries_checked"),
        )
    };
    let mut live: Vec<_> = reports.iter().map(counters).collect();
    for r in &reports {
        assert_eq!(r["verdict"], "pass", "{ctx}");
        assert_eq!(r["calls"].as_u64(), Some(outs[0].calls()), "{ctx}");
        assert_eq!(r["missing"].as_u64(), Some(0), "{ctx}");
    }
    // Every capture the verifier saved gives the same verdict and counters offline.
    let captures = captures_in(&dir.join("captures"));
    assert_eq!(captures.len(), 8, "{ctx}");
    let mut offline: Vec<_> = captures
        .iter()
        .map(|c| {
            let checked = check_args(std::slice::from_ref(c), &dir, NO_SESSION_ALLOWED);
            assert_eq!(checked.code, Some(0), "{}", checked.text);
            counters(&checked.json)
        })
        .collect();
    live.sort();
    offline.sort();
    assert_eq!(live, offline);
}

/// Runs `mmaudit-verify check` with `--weights` (and `--require-weights`).
fn check_with_weights(
    capture: &Path,
    weights: &Path,
    require: bool,
) -> (Option<i32>, Value, String) {
    let t = tools();
    let mut cmd = Command::new(&t.verify);
    cmd.arg("check")
        .arg(capture)
        .arg("--key-file")
        .arg(&t.key_file)
        .arg("--weights")
        .arg(weights)
        .args(["--json", "-"]);
    if require {
        cmd.arg("--require-weights");
    }
    let out = cmd.output().expect("run mmaudit-verify");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let json = text
        .find("{\n")
        .and_then(|at| serde_json::from_str(&text[at..]).ok())
        .unwrap_or(Value::Null);
    let text = format!("{text}\n{}", String::from_utf8_lossy(&out.stderr));
    (out.status.code(), json, text)
}

#[test]
fn weight_identity_names_the_tensors_and_a_changed_tensor_fails_when_required() {
    let exe = compile("llama_workload");
    let dir = scratch("weight-identity");
    let weights = dir.join("model.safetensors");
    let w = weights.display().to_string();
    let written = run(&exe, &["--layers", "2", "--write-weights", &w], &[]);
    assert_eq!(written.code, Some(0), "{}", written.transcript());
    let capture = dir.join("run.mma");
    let sink = format!("file:{}", capture.display());
    let out = run(&exe, &["--layers", "2"], &audit_env(&sink, FULL, None));
    assert_eq!(out.code, Some(0), "{}", out.transcript());

    // The verifier holds the weights the GPU used: pass, with the tensors named.
    // (Not with --require-weights: the attention GEMMs through cuBLAS multiply
    // activations only, have no weight operand and would count as unmatched.)
    let (code, json, text) = check_with_weights(&capture, &weights, false);
    assert_eq!(code, Some(0), "{text}");
    let tensors = &json["streams"][0]["weights"]["tensors"];
    let names: Vec<&String> = tensors
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    assert!(names.len() >= 5, "{text}");
    let target = names
        .iter()
        .find(|n| n.contains("up"))
        .map(|n| n.to_string())
        .unwrap_or_else(|| panic!("an up projection among {names:?}"));
    assert!(text.contains(&target), "{text}");

    // The verifier's copy of one tensor differs in one element: the calls that used
    // it fail with --require-weights, naming the tensor; the others still match.
    let mut bytes = std::fs::read(&weights).expect("read the weights");
    let header_len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + header_len]).expect("header");
    let begin = header[&target]["data_offsets"][0]
        .as_u64()
        .expect("offsets") as usize;
    bytes[8 + header_len + begin + 1] ^= 0x01; // high byte of the first bf16 element
    let changed = dir.join("changed.safetensors");
    std::fs::write(&changed, &bytes).expect("write the changed weights");
    let (code, json, text) = check_with_weights(&capture, &changed, true);
    assert_eq!(code, Some(1), "{text}");
    let failures = json["streams"][0]["failures"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let naming: Vec<&Value> = failures
        .iter()
        .filter(|f| {
            f["kind"] == "unknown weights" && f["message"].as_str().unwrap_or("").contains(&target)
        })
        .collect();
    assert!(!naming.is_empty(), "{text}");
    for f in &naming {
        assert!(f["call"].as_str().unwrap_or("").starts_with("call "), "{f}");
    }
    // The honest weights under the same policy: no failure names a tensor.
    let (_, json, text) = check_with_weights(&capture, &weights, true);
    let honest = json["streams"][0]["failures"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        honest
            .iter()
            .all(|f| !f["message"].as_str().unwrap_or("").contains("closest")),
        "{text}"
    );
    // Without --require-weights the arithmetic still passes and the mismatch is reported.
    let (code, json, text) = check_with_weights(&capture, &changed, false);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        json["streams"][0]["weights"]["unmatched"]
            .as_u64()
            .unwrap_or(0)
            >= 1,
        "{text}"
    );
}

// ---------------------------------------------------------------------------
// Reliability: the host program is never held up by the library's setup.

/// Makes a FIFO at `path` and returns the path.
fn mkfifo(path: &Path) -> PathBuf {
    let made = Command::new("mkfifo").arg(path).status().expect("mkfifo");
    assert!(made.success(), "mkfifo {}", path.display());
    path.to_path_buf()
}

#[test]
fn a_key_file_that_is_not_a_small_regular_file_turns_auditing_off_at_once() {
    // /dev/zero was read until memory ran out; a FIFO nobody writes to blocked the
    // program's first GEMM forever. Both are refused before a byte is read: the
    // program runs as without the library, and says why auditing is off.
    let exe = compile("llama_workload");
    let reference = reference(&exe, LLAMA, None);
    let dir = scratch("keyfile-special");
    let fifo = mkfifo(&dir.join("fifo.key"));
    for key_file in [Path::new("/dev/zero"), fifo.as_path()] {
        let sink = format!("file:{}/capture-%p.mma", dir.display());
        let env: Vec<(&str, String)> = audit_env(&sink, EVERY_CALL, None)
            .into_iter()
            .filter(|(k, _)| *k != "MMAUDIT_KEY")
            .chain([("MMAUDIT_KEY_FILE", key_file.display().to_string())])
            .collect();
        let start = Instant::now();
        let out = run(&exe, LLAMA, &env);
        let ctx = out.transcript();
        assert_eq!(out.code, Some(0), "{ctx}");
        assert_eq!(out.hash(), reference.hash(), "{ctx}");
        assert!(start.elapsed() < Duration::from_secs(30), "{ctx}");
        assert!(
            out.stderr.contains("MMAUDIT_KEY_FILE=") && out.stderr.contains("not a regular file"),
            "{ctx}"
        );
        assert!(captures_in(&dir).is_empty(), "{ctx}");
    }
}

#[test]
fn a_file_sink_on_a_fifo_or_a_full_device_never_holds_up_or_kills_the_program() {
    // A FIFO nobody reads held the first GEMM forever; a reader that left killed the
    // program with SIGPIPE (exit 141). /dev/full fails every write. In each case the
    // program now runs as without the library and the library says what happened.
    let exe = compile("llama_workload");
    let reference = reference(&exe, LLAMA, None);
    let dir = scratch("sink-special");
    let fifo = mkfifo(&dir.join("sink.fifo"));
    let runs = |sink: &Path, expect: &str| {
        let out = run(
            &exe,
            LLAMA,
            &audit_env(&format!("file:{}", sink.display()), EVERY_CALL, None),
        );
        let ctx = out.transcript();
        assert_eq!(out.code, Some(0), "{ctx}");
        assert_eq!(out.hash(), reference.hash(), "{ctx}");
        assert!(out.stderr.contains(expect), "{expect}\n{ctx}");
    };
    // nobody reads the FIFO
    runs(&fifo, "a FIFO that nobody reads");
    // /dev/full: every write fails
    runs(Path::new("/dev/full"), "No space left on device");
    // a reader takes the stream's first bytes, then leaves
    let reader_path = fifo.clone();
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut f = std::fs::File::open(&reader_path).expect("open the FIFO for reading");
        let mut first = [0u8; 16];
        f.read_exact(&mut first).expect("the stream's first bytes");
        first
    });
    // The reader must have the FIFO open before the program looks at it.
    std::thread::sleep(Duration::from_millis(200));
    runs(&fifo, "Broken pipe");
    assert_eq!(&reader.join().expect("the reader")[..8], b"MMAUDIT\0");
}

// ---------------------------------------------------------------------------
// fork()

#[test]
fn a_child_forked_before_the_first_gemm_audits_into_its_own_stream() {
    let exe = compile("audit_fork");
    let reference = reference(&exe, &["--early"], None);
    // With %p in the sink, and with a fixed path (the child's gets `.PID` appended):
    // two captures, one per process, each passing with its own 12 calls.
    for (name, template) in [("fork-early", "capture-%p.mma"), ("fork-fixed", "run.mma")] {
        let dir = scratch(name);
        let sink = format!("file:{}/{template}", dir.display());
        let run = run(&exe, &["--early"], &audit_env(&sink, EVERY_CALL, None));
        assert_eq!(run.code, Some(0), "{}", run.transcript());
        assert_eq!(run.hash(), reference.hash(), "{}", run.transcript());
        assert_eq!(
            run.field("child-status").trim(),
            "0",
            "{}",
            run.transcript()
        );
        let child = run.field("child-pid").trim().to_string();
        let files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("list")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .is_some_and(|f| f.to_string_lossy().contains(".mma"))
            })
            .collect();
        assert_eq!(files.len(), 2, "{files:?}\n{}", run.transcript());
        assert!(
            files.iter().any(|f| f.to_string_lossy().contains(&child)),
            "no capture names the child {child}: {files:?}"
        );
        for f in &files {
            let c = check(std::slice::from_ref(f), &dir);
            assert_eq!(c.code, Some(0), "{}\n{}", f.display(), c.text);
            assert_eq!(c.n("calls"), 12, "{}", c.text);
            assert_eq!(c.n("verified"), 12, "{}", c.text);
        }
    }
}

#[test]
fn a_fork_while_auditing_is_named_in_the_parents_stream() {
    // The child of a process that used CUDA cannot use the GPU; the parent's stream
    // says that a child was forked, and where.
    let exe = compile("audit_fork");
    let reference = reference(&exe, &["--late"], None);
    let a = audit("fork-late", &exe, &["--late"], EVERY_CALL, None, &[]);
    assert_honest_pass(&a, &reference);
    let notices: Vec<&str> = a.check.json["streams"][0]["notices"]
        .as_array()
        .expect("notices")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        notices
            .iter()
            .any(|n| n.starts_with("a child process was forked before call 12")),
        "{notices:#?}\n{}",
        a.context()
    );
    // Absent: without a fork, no such notice (the early run's parent forks before
    // auditing starts, so its stream has none either).
    let dir = scratch("fork-none");
    let sink = format!("file:{}/capture-%p.mma", dir.display());
    let run = run(&exe, &["--early"], &audit_env(&sink, EVERY_CALL, None));
    assert_eq!(run.code, Some(0), "{}", run.transcript());
    for f in captures_in(&dir) {
        let c = check(std::slice::from_ref(&f), &dir);
        let text = c.json.to_string();
        assert!(!text.contains("forked"), "{text}");
    }
}

#[test]
fn rowwise_fp8_scales_are_verified_and_one_wrong_row_scale_fails() {
    // audit_rejected --unmodelled makes an fp8 cuBLASLt call with per-row (A) and
    // per-column (B) f32 scales (OUTER_VEC_32F, as torch._scaled_mm rowwise): call 19.
    // Absent: verified with every entry checked (calls_outside_the_model... passes).
    // Present: the GPU scales row 0 with 1.5 times its scale; that call, and only it,
    // fails.
    let exe = compile("audit_rejected");
    let args = ["--unmodelled", "--trace"];
    let a = audit("row-scale", &exe, &args, FULL, Some("row-scale:0.5"), &[]);
    let ctx = a.context();
    assert_eq!(a.run.code, Some(0), "{ctx}");
    assert_eq!(a.check.code, Some(1), "{ctx}");
    let named = mismatched_calls(&a.check);
    assert_eq!(named, BTreeSet::from([19]), "{ctx}");
    for f in a.check.failures_of("mismatch") {
        let msg = f["message"].as_str().unwrap_or_default();
        assert!(msg.contains("row 0 "), "{msg}");
    }
}

#[test]
fn the_entry_points_frameworks_call_beyond_gemm_ex_are_ledgered_and_verified() {
    // audit_entries: cublasDgemm_v2, cublasDgemmStridedBatched, cublasSgemmEx (twice),
    // cublasSgemmBatched, cublasHgemmBatched, cublasSgemv_v2 (op N under TF32 math,
    // op T with x at stride 2), cublasDgemv_v2, then a cublasSgemv_v2 with y at
    // stride 2 (outside the model). Absent: every modelled call verifies with every
    // entry checked, the last is ledgered as not modelled, outputs are unchanged.
    let exe = compile("audit_entries");
    let args = ["--trace"];
    let reference = reference(&exe, &args, None);
    let unmodelled: u64 = reference.field("unmodelled").trim().parse().unwrap();
    let a = audit("entries", &exe, &args, FULL, None, &[]);
    let a = assert_fails_policy_then_recheck(&a, &[("unmodelled", "--max-unmodelled")]);
    assert_honest_pass(&a, &reference);
    let ctx = a.context();
    assert_eq!(a.check.n("verified"), unmodelled, "{ctx}");
    let ledger = ledger_of("entries");
    assert_ledger_is_trace(&ledger, &reference.trace(), &ctx);
    for c in &ledger {
        assert_eq!(c.has(flags::UNMODELLED), c.index == unmodelled, "{c:?}");
    }
    // Present: a GPU that skips the GEMMs fails every modelled call, by index.
    let a = audit("entries-zero", &exe, &args, FULL, Some("zero"), &[]);
    let named = mismatched_calls(&a.check);
    assert_eq!(
        named,
        (0..unmodelled).collect::<BTreeSet<u64>>(),
        "{}",
        a.context()
    );
}

#[test]
fn the_wide_and_complex_entry_points_are_ledgered_real_ones_verified() {
    // audit_wide: the _64 forms of the plain, strided, pointer-array and gemv entry
    // points, cublasHgemmStridedBatched and cublasDgemmBatched (modelled), then every
    // complex GEMM and gemv with its _64 form (outside protocol v1). Absent: each real
    // call verifies, each complex one is ledgered with its entry point, shape and
    // batch as UNMODELLED (never sampled) with FLOPs of four real multiply-adds per
    // complex one; outputs are unchanged (the program checks two complex results on
    // the host).
    let exe = compile("audit_wide");
    let args = ["--trace"];
    let reference = reference(&exe, &args, None);
    let complex_from: u64 = reference.field("complex-from").trim().parse().unwrap();
    let a = audit("wide", &exe, &args, FULL, None, &[]);
    let a = assert_fails_policy_then_recheck(&a, &[("unmodelled", "--max-unmodelled")]);
    assert_honest_pass(&a, &reference);
    let ctx = a.context();
    let trace = reference.trace();
    assert_eq!(a.check.n("verified"), complex_from, "{ctx}");
    assert_eq!(
        a.check.n("unmodelled_not_audited"),
        trace.len() as u64 - complex_from,
        "{ctx}"
    );
    let ledger = ledger_of("wide");
    assert_ledger_is_trace(&ledger, &trace, &ctx);
    let mut flops = 0.0;
    for (c, made) in ledger.iter().zip(&trace) {
        let complex = c.index >= complex_from;
        assert_eq!(c.has(flags::UNMODELLED), complex, "{c:?}");
        assert_eq!(c.entry.is_complex(), complex, "{c:?}");
        flops += made.flops() * if complex { 4.0 } else { 1.0 };
    }
    assert_eq!(a.check.json["flops"].as_f64(), Some(flops), "{ctx}");
    // Present: a GPU that skips the real GEMMs (the simulator's faults model real
    // arithmetic) fails every modelled call, by index.
    let a = audit("wide-zero", &exe, &args, FULL, Some("zero"), &[]);
    assert_eq!(
        mismatched_calls(&a.check),
        (0..complex_from).collect::<BTreeSet<u64>>(),
        "{}",
        a.context()
    );
}

#[test]
fn the_f64_and_64_bit_grouped_gemms_are_ledgered_one_record_per_group() {
    // audit_grouped --wide: after the f32 and bf16 grouped calls, cublasDgemmGroupedBatched
    // and the _64 forms of the three (f32, bf16, f64), two groups each, and a last plain
    // call: fifteen records, each group its own shape and problem count, all verified.
    let exe = compile("audit_grouped");
    let args = ["--wide"];
    let reference = reference(&exe, &args, None);
    let groups: Vec<TraceLine> = reference
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("group "))
        .map(|l| TraceLine::parse(&format!("call {l}")))
        .collect();
    assert_eq!(groups.len(), 12, "{}", reference.transcript());
    let a = audit("grouped-wide", &exe, &args, FULL, None, &[]);
    assert_clean_pass(&a, &reference, 15);
    let ctx = a.context();
    let ledger = ledger_of("grouped-wide");
    for g in &groups {
        let c = &ledger[g.index as usize];
        assert!(!c.has(flags::UNMODELLED), "{c:?}");
        assert_eq!((c.m, c.n, c.k, c.batch), (g.m, g.n, g.k, g.batch), "{c:?}");
    }
    let entries: Vec<String> = ledger[6..14]
        .iter()
        .map(|c| format!("{:?}", c.entry))
        .collect();
    assert_eq!(
        entries,
        [
            "DgemmGroupedBatched",
            "DgemmGroupedBatched",
            "SgemmGroupedBatched64",
            "SgemmGroupedBatched64",
            "GemmGroupedBatchedEx64",
            "GemmGroupedBatchedEx64",
            "DgemmGroupedBatched64",
            "DgemmGroupedBatched64"
        ],
        "{ctx}"
    );
    assert_eq!(a.check.n("verified"), 15, "{ctx}");
    // Present: the simulator numbers each group as a call (1, 2-3, 4-5, 6, 7-8, 9-10,
    // 11-12, 13-14, 15): after:12 zeroes the f64 _64 call's two groups and the last
    // plain call, and exactly those records (12, 13, 14) fail.
    let a = audit(
        "grouped-wide-fault",
        &exe,
        &args,
        FULL,
        Some("zero,after:12"),
        &[],
    );
    let named = mismatched_calls(&a.check);
    assert_eq!(named, BTreeSet::from([12, 13, 14]), "{}", a.context());
}

#[test]
fn the_readme_lists_exactly_the_cublas_functions_the_library_exports() {
    // The README's "What is recorded" paragraph names every cuBLAS/cuBLASLt function
    // the library hooks; `nm -D` on libmmaudit.so is the truth.
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let start = readme.find("**What is recorded.**").expect("the paragraph");
    let para = &readme[start..start + readme[start..].find("\n\n").unwrap_or(0)];
    let listed: BTreeSet<String> = para
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|w| w.starts_with("cublas"))
        .map(str::to_string)
        .collect();
    let out = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(&tools().preload)
        .output()
        .expect("run nm");
    assert!(out.status.success());
    let exported: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .filter(|s| s.starts_with("cublas"))
        .map(str::to_string)
        .collect();
    assert_eq!(listed, exported, "README lists vs libmmaudit.so exports");
}

#[test]
fn a_gemm_outside_the_model_in_a_graph_is_ledgered_at_every_replay() {
    // graph_decode --outside: graph A holds one cublasSgemm_v2 with a NaN alpha. Each
    // launch of A ledgers it (REPLAYED and UNMODELLED), never sampled; every other
    // replayed GEMM is verified.
    let exe = compile("graph_decode");
    let args = ["--replays", "12", "--outside"];
    let reference = reference(&exe, &args, None);
    let (captured, replayed) = graph_counts(&reference);
    let a = audit("decode-outside", &exe, &args, EVERY_CALL, None, &[]);
    let a = assert_fails_policy_then_recheck(&a, &[("unmodelled", "--max-unmodelled")]);
    let ctx = a.context();
    assert_eq!(a.run.hash(), reference.hash(), "{ctx}");
    assert_eq!(a.check.code, Some(0), "{ctx}");
    assert_eq!(graphs_n(&a, "capture_records"), captured, "{ctx}");
    assert_eq!(graphs_n(&a, "replayed"), replayed, "{ctx}");
    // graph A was launched 12 times: 12 replays of the call outside the model
    assert_eq!(a.check.n("unmodelled_not_audited"), 12, "{ctx}");
    assert_eq!(graphs_n(&a, "replayed_sampled"), replayed - 12, "{ctx}");
    assert_eq!(graphs_n(&a, "replayed_verified"), replayed - 12, "{ctx}");
}

#[test]
fn grouped_gemms_are_ledgered_one_record_per_group() {
    // audit_grouped: cublasSgemmGroupedBatched and cublasGemmGroupedBatchedEx with two
    // groups each, between two plain calls. Each group is a ledger record of its own
    // shape and problem count, a pointer-array batch sampled and verified like any
    // other; the ledger's FLOPs are the groups' exact sum; outputs are unchanged.
    let exe = compile("audit_grouped");
    let reference = reference(&exe, &[], None);
    let groups: Vec<TraceLine> = reference
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("group "))
        .map(|l| TraceLine::parse(&format!("call {l}")))
        .collect();
    assert_eq!(groups.len(), 4, "{}", reference.transcript());
    let a = audit("grouped", &exe, &[], FULL, None, &[]);
    assert_clean_pass(&a, &reference, 6);
    let ctx = a.context();
    let ledger = ledger_of("grouped");
    assert_eq!(ledger.len(), 6, "{ctx}");
    for g in &groups {
        let c = &ledger[g.index as usize];
        assert!(!c.has(flags::UNMODELLED), "{c:?}");
        assert_eq!((c.m, c.n, c.k, c.batch), (g.m, g.n, g.k, g.batch), "{c:?}");
    }
    let plain = 2.0 * 16.0 * 8.0 * 16.0 * 2.0;
    let grouped: f64 = groups.iter().map(TraceLine::flops).sum();
    assert_eq!(
        a.check.json["flops"].as_f64(),
        Some(plain + grouped),
        "{ctx}"
    );
    assert_eq!(a.check.n("verified"), 6, "{ctx}");
    // Present: from the second grouped call's second group on, the GPU computes nothing
    // (the simulator numbers each group as a call: 1, 2-3, 4-5, 6, so after:4 hits 5
    // and 6): exactly that group's record (4) and the last plain call (5) fail.
    let a = audit("grouped-fault", &exe, &[], FULL, Some("zero,after:4"), &[]);
    let named = mismatched_calls(&a.check);
    assert_eq!(named, BTreeSet::from([4, 5]), "{}", a.context());
}

// ---------------------------------------------------------------------------
// Lifecycle: whatever the environment and however the program ends, its results and
// exit status are its own, and the stream says what happened.

#[test]
fn every_setting_and_ending_leaves_the_program_alone_and_the_stream_honest() {
    let exe = compile("audit_lifecycle");
    let reference = reference(&exe, &[], None);
    let dir = scratch("lifecycle");
    let sink = format!("file:{}/capture-%p.mma", dir.display());
    let unaudited = |name: &str, env: Vec<(&str, String)>, expect: &[&str]| {
        for f in captures_in(&dir) {
            std::fs::remove_file(f).unwrap();
        }
        let out = run(&exe, &[], &env);
        let ctx = format!("{name}\n{}", out.transcript());
        assert_eq!(out.code, Some(0), "{ctx}");
        assert_eq!(out.hash(), reference.hash(), "{ctx}");
        for e in expect {
            assert!(out.stderr.contains(e), "{e}\n{ctx}");
        }
        assert!(captures_in(&dir).is_empty(), "{ctx}");
    };
    let without = |drop: &str| -> Vec<(&str, String)> {
        audit_env(&sink, EVERY_CALL, None)
            .into_iter()
            .filter(|(k, _)| *k != drop)
            .collect()
    };
    // No key: every call forwarded untouched, one line says so.
    unaudited(
        "no key",
        without("MMAUDIT_KEY"),
        &["no MMAUDIT_KEY or MMAUDIT_KEY_FILE"],
    );
    // Every variable with a value it cannot take (and an empty one): auditing is off,
    // naming the variable.
    let bad = [
        ("MMAUDIT_KEY", "not hex"),
        ("MMAUDIT_KEY_FILE", "/nonexistent/audit.key"),
        ("MMAUDIT_SINK", "ftp://somewhere"),
        ("MMAUDIT_CALL_RATE", "2"),
        ("MMAUDIT_ROW_RATE", "-0.1"),
        ("MMAUDIT_COL_RATE", "half"),
        ("MMAUDIT_BATCH_RATE", "NaN"),
        ("MMAUDIT_MAX_ROWS", "-3"),
        ("MMAUDIT_MAX_COLS", "many"),
        ("MMAUDIT_MAX_BATCHES", "1e99"),
        ("MMAUDIT_RING_MB", "0"),
        ("MMAUDIT_BUFFER_MB", "0"),
        ("MMAUDIT_QUEUE_LEN", "0"),
        ("MMAUDIT_GRAPH_DEPTH", "0"),
        ("MMAUDIT_EXIT_TIMEOUT_MS", "soon"),
        ("MMAUDIT_FLUSH_MS", "-1"),
        ("MMAUDIT_REFERENCES", "maybe"),
        ("MMAUDIT_TEST_PANIC", "during:1"),
        ("MMAUDIT_LOG", "loud"),
        ("MMAUDIT_CALL_RATE", " "),
    ];
    for (var, value) in bad {
        let mut env = without(var);
        if var == "MMAUDIT_KEY_FILE" {
            env.retain(|(k, _)| *k != "MMAUDIT_KEY");
        }
        env.push((var, value.to_string()));
        unaudited(&format!("{var}='{value}'"), env, &[var, "auditing is off"]);
    }
    // Endings: return and exit flush the stream whole; _exit and abort (SIGABRT) run
    // no exit handlers, so the stream ends truncated — never a pass — with the frames
    // written before intact.
    for (how, code, passes) in [
        ("return", Some(0), true),
        ("exit", Some(0), true),
        ("_exit", Some(0), false),
        ("abort", None, false),
    ] {
        let a = audit(&format!("lifecycle-{how}"), &exe, &[how], FULL, None, &[]);
        let ctx = a.context();
        assert_eq!(a.run.code, code, "{ctx}");
        assert_eq!(a.run.hash(), reference.hash(), "{ctx}");
        assert_eq!(a.check.code == Some(0), passes, "{ctx}");
        if !passes {
            assert!(a.check.text.contains("truncated"), "{ctx}");
            assert_eq!(a.check.n("mismatched"), 0, "{ctx}");
        } else {
            assert_eq!(a.check.n("verified"), 12, "{ctx}");
        }
    }
    // A panic inside the hook, before or after the real call: the call still runs
    // exactly once (outputs unchanged), auditing stops with a notice naming the call,
    // and the stream fails as "auditing disabled".
    for when in ["before", "after"] {
        let extra = [("MMAUDIT_TEST_PANIC", format!("{when}:5"))];
        let a = audit(
            &format!("lifecycle-panic-{when}"),
            &exe,
            &[],
            FULL,
            None,
            &extra,
        );
        let ctx = a.context();
        assert_eq!(a.run.code, Some(0), "{ctx}");
        assert_eq!(a.run.hash(), reference.hash(), "{ctx}");
        assert_eq!(a.check.code, Some(1), "{ctx}");
        assert!(a.check.text.contains("stopped auditing"), "{ctx}");
        assert_eq!(a.check.n("mismatched"), 0, "{ctx}");
    }
}

/// audit_unseen MODE under the library, every call sampled: the verdict, the ledger's
/// (stream, CAPTURED) per call, the gaps' (call, detail) and the stream handles A, B.
type Unseen = (Audited, Vec<(u64, bool)>, Vec<(u64, String)>, [u64; 2]);

/// The gaps of audit `name`'s stream: (first call, detail).
fn gaps_of(name: &str) -> Vec<(u64, String)> {
    let (_, records) = records_of(name);
    records
        .iter()
        .filter_map(|r| match r {
            Record::Gap(g) => Some((g.indices[0], g.detail.clone())),
            _ => None,
        })
        .collect()
}

fn unseen(mode: &str) -> Unseen {
    let exe = compile("audit_unseen");
    let name = format!("unseen-{mode}");
    let a = audit(&name, &exe, &[mode], EVERY_CALL, None, &[]);
    assert_eq!(a.run.code, Some(0), "{}", a.context());
    let (_, records) = records_of(&name);
    let ledger = records
        .iter()
        .filter_map(|r| match r {
            Record::Ledger(c) => Some((c.stream, c.has(flags::CAPTURED))),
            _ => None,
        })
        .collect();
    let gaps = gaps_of(&name);
    let stream = |s: &str| {
        a.run
            .field(s)
            .trim()
            .parse::<u64>()
            .expect("a stream handle")
    };
    let streams = [stream("stream-a"), stream("stream-b")];
    (a, ledger, gaps, streams)
}

#[test]
fn handle_settings_changed_behind_the_library_are_caught_at_the_next_sampled_call() {
    // The library reads a handle's stream from its own table (kept by the hooked
    // cublasCreate_v2 / cublasSetStream_v2 ...), not from cuBLAS. Followed handle: the
    // ledger names stream A for the first 40 calls and B for the last 40, no gap.
    // A handle the library never saw created (real cublasCreate_v2 via dlvsym): read
    // through the getters, the same ledger. A followed handle switched to B through
    // the real setter: the first call after the switch is sampled, its settings are
    // compared with cuBLAS's, it becomes a gap, and the handle is read through the
    // getters from then on.
    let reference = reference(&compile("audit_unseen"), &["followed"], None);
    for mode in ["followed", "unfollowed", "behind"] {
        let (a, ledger, gaps, [sa, sb]) = unseen(mode);
        let ctx = format!("{mode}\n{}", a.context());
        let want: Vec<(u64, bool)> = (0..80)
            .map(|i| {
                (
                    if i < 40 || (mode == "behind" && i == 40) {
                        sa
                    } else {
                        sb
                    },
                    false,
                )
            })
            .collect();
        assert_eq!(ledger, want, "{ctx}");
        if mode == "behind" {
            assert_eq!(gaps.len(), 1, "{ctx}");
            assert_eq!(gaps[0].0, 40, "{ctx}");
            assert!(gaps[0].1.contains("reconfigured"), "{ctx}");
            assert!(
                a.run.stderr.contains("reconfigured through a path"),
                "{ctx}"
            );
        } else {
            assert_clean_pass(&a, &reference, 80);
        }
    }
}

#[test]
fn a_pointer_mode_changed_behind_the_library_never_makes_it_read_device_memory() {
    // A followed handle switched to device pointer mode through the real setter
    // (dlvsym), alpha and beta in device memory from then on: the library's entry
    // still says host pointer mode, but the scalars are not in the calling thread's
    // stack, so cuBLAS is asked, the entry is dropped, and the call is described
    // with device scalars. Reading them as host memory would crash the program (the
    // simulated GPU's device memory is not readable from the host). Unsampled, and
    // every call sampled: exit 0, the same output, and a clean PASS when sampled.
    let exe = compile("audit_unseen");
    let reference = reference(&exe, &["followed"], None);
    let unsampled = Rates {
        call: Some("0"),
        row: None,
        col: None,
        batch: None,
    };
    let a = audit("unseen-pointer-0", &exe, &["pointer"], unsampled, None, &[]);
    assert_eq!(a.run.code, Some(0), "{}", a.context());
    assert_eq!(a.run.hash(), reference.hash(), "{}", a.context());
    let (a, ledger, gaps, [sa, sb]) = unseen("pointer");
    let ctx = a.context();
    let want: Vec<(u64, bool)> = (0..80)
        .map(|i| (if i < 40 { sa } else { sb }, false))
        .collect();
    assert_eq!(ledger, want, "{ctx}");
    assert!(gaps.is_empty(), "{ctx}");
    assert_clean_pass(&a, &reference, 80);
}

/// The simulated GPU's query counts (SIMGPU_COUNT) of `program MODE` under the library
/// at call rate `rate`, after checking that it ran.
fn query_counts(program: &str, mode: &str, rate: &'static str) -> HashMap<String, u64> {
    let exe = compile(program);
    let name = format!("{program}-{mode}-{rate}");
    let path = scratch_path(&format!("{name}-counts"));
    let rates = Rates {
        call: Some(rate),
        row: None,
        col: None,
        batch: None,
    };
    let extra = [("SIMGPU_COUNT", path.display().to_string())];
    let a = audit(&name, &exe, &[mode], rates, None, &extra);
    assert_eq!(a.run.code, Some(0), "{}", a.context());
    std::fs::read_to_string(&path)
        .expect("the simulator's counts")
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.parse().expect("a count")))
        .collect()
}

#[test]
fn an_unsampled_cublaslt_call_asks_cublaslt_no_attribute() {
    // audit_ltfollow: 40 cublasLtMatmul calls, their descriptor and layouts created,
    // set and destroyed around each call (fresh) or made once (reuse). Unsampled, the
    // library reads the attributes of the first descriptor and the first layout of
    // each class once through the getters (21 and 9 of them) and follows the rest
    // through the hooked creators and setters: no getter call per matmul. Every call
    // sampled, each is also read through the getters and compared.
    for mode in ["fresh", "reuse"] {
        let unsampled = query_counts("audit_ltfollow", mode, "0");
        let ctx = format!("{mode}: {unsampled:?}");
        assert_eq!(unsampled["cublasLtMatmulDescGetAttribute"], 21, "{ctx}");
        assert_eq!(unsampled["cublasLtMatrixLayoutGetAttribute"], 9, "{ctx}");
        let sampled = query_counts("audit_ltfollow", mode, "1");
        let ctx = format!("{mode}: {sampled:?}");
        assert!(
            sampled["cublasLtMatmulDescGetAttribute"] >= 21 + 40 * 21,
            "{ctx}"
        );
        assert!(
            sampled["cublasLtMatrixLayoutGetAttribute"] >= 9 + 40 * 4 * 9,
            "{ctx}"
        );
    }
}

#[test]
fn cublaslt_objects_followed_describe_calls_as_the_getters_do_and_a_change_behind_is_caught() {
    // Every call sampled, so each description made from the library's tables is checked
    // against the getters. Fresh and reused objects: no gap, a clean PASS. A
    // descriptor whose bias epilogue is removed with the real setter (dlvsym) after 20
    // calls: the first call after is a gap naming the change, a warning says so, and the
    // objects are read through the getters from then on (no further gap).
    let exe = compile("audit_ltfollow");
    let reference = reference(&exe, &["reuse"], None);
    for mode in ["fresh", "reuse"] {
        let name = format!("ltfollow-{mode}");
        let a = audit(&name, &exe, &[mode], EVERY_CALL, None, &[]);
        assert_eq!(a.run.code, Some(0), "{}", a.context());
        assert_clean_pass(&a, &reference, 40);
    }
    let a = audit("ltfollow-behind", &exe, &["behind"], EVERY_CALL, None, &[]);
    let ctx = a.context();
    assert_eq!(a.run.code, Some(0), "{ctx}");
    let gaps = gaps_of("ltfollow-behind");
    assert_eq!(gaps.len(), 1, "{gaps:?}\n{ctx}");
    assert_eq!(gaps[0].0, 20, "{ctx}");
    assert!(
        gaps[0].1.contains("differs from what the library followed"),
        "{ctx}"
    );
    assert!(
        a.run
            .stderr
            .contains("cuBLASLt objects are read through the getters"),
        "{ctx}"
    );
    assert_eq!(a.check.n("mismatched"), 0, "{ctx}");
}

#[test]
fn cublaslt_objects_changed_behind_the_library_never_mislead_a_gather_or_a_graph() {
    // The bias pointer switched to another buffer with the real setter after 20 calls,
    // every call sampled: the bias is in the gather specification, not in the ledger
    // record, and the comparison covers it: one gap, no mismatch (a comparison of the
    // ledger record alone let the samples be gathered from the old buffer). The same
    // switch before a call is captured into a graph: captured calls are described
    // through the getters, so every replay is audited against what cuBLASLt runs: no
    // mismatch. Device pointer mode set with the real setter, alpha and beta in device
    // memory: the table's host pointer mode is not trusted for them, so nothing is read
    // as host memory (the simulated GPU's device memory would fault): the same output,
    // a clean PASS, unsampled and every call sampled.
    let exe = compile("audit_ltfollow");
    let a = audit(
        "ltfollow-bias-behind",
        &exe,
        &["bias-behind"],
        EVERY_CALL,
        None,
        &[],
    );
    let ctx = a.context();
    assert_eq!(a.run.code, Some(0), "{ctx}");
    let gaps: Vec<u64> = gaps_of("ltfollow-bias-behind")
        .into_iter()
        .map(|(i, _)| i)
        .collect();
    assert_eq!(gaps, [20], "{ctx}");
    assert_eq!(a.check.n("mismatched"), 0, "{ctx}");

    let graphed = reference(&exe, &["graph-behind"], None);
    let a = audit(
        "ltfollow-graph-behind",
        &exe,
        &["graph-behind"],
        EVERY_CALL,
        None,
        &[],
    );
    let ctx = a.context();
    assert_eq!(a.run.code, Some(0), "{ctx}");
    assert_eq!(a.run.hash(), graphed.hash(), "{ctx}");
    // (Replays whose samples are still queued when the next one starts may be gaps,
    // MMAUDIT_GRAPH_DEPTH; none may mismatch.)
    assert_eq!(a.check.n("mismatched"), 0, "{ctx}");
    assert!(a.check.n("verified") >= 10, "{ctx}");

    let reused = reference(&exe, &["reuse"], None);
    let unsampled = Rates {
        call: Some("0"),
        row: None,
        col: None,
        batch: None,
    };
    let a = audit(
        "ltfollow-pointer-0",
        &exe,
        &["pointer-behind"],
        unsampled,
        None,
        &[],
    );
    assert_eq!(a.run.code, Some(0), "{}", a.context());
    assert_eq!(a.run.hash(), reused.hash(), "{}", a.context());
    let a = audit(
        "ltfollow-pointer-1",
        &exe,
        &["pointer-behind"],
        EVERY_CALL,
        None,
        &[],
    );
    assert_eq!(a.run.code, Some(0), "{}", a.context());
    assert_clean_pass(&a, &reused, 40);
}

#[test]
fn a_capture_begun_unseen_is_caught_at_the_first_sampled_call_in_it() {
    // The library asks the driver whether a stream captures only while a capture it
    // saw begin is open. A capture begun with the real cudaStreamBeginCapture (via
    // dlvsym): the first (sampled) call in it asks anyway, finds the capture, becomes
    // a gap recorded as a direct call, and from then on every call asks: the other
    // nine calls in the capture are capture records; the ten eager calls after it are
    // direct calls with no gap.
    let (a, ledger, gaps, [sa, _]) = unseen("capture");
    let ctx = a.context();
    let want: Vec<(u64, bool)> = (0..20).map(|i| (sa, (1..10).contains(&i))).collect();
    assert_eq!(ledger, want, "{ctx}");
    assert_eq!(gaps.len(), 1, "{ctx}");
    assert_eq!(gaps[0].0, 0, "{ctx}");
    assert!(gaps[0].1.contains("began unseen"), "{ctx}");
    assert!(a.run.stderr.contains("does not hook"), "{ctx}");
}

#[test]
fn an_unsampled_call_asks_only_for_the_current_context() {
    // The simulated GPU counts the queries (SIMGPU_COUNT). audit_unseen followed: 80
    // GEMMs on one handle, its stream set twice, alpha and beta local variables.
    // Unsampled (call rate 0), the handle's stream, pointer mode and math mode are
    // read from cuBLAS once, when it is created, and no call asks whether its stream
    // captures; the current context is the one query left per call (it changes
    // through paths the library cannot follow). Every call sampled: each sampled call
    // also checks the handle's settings and the capture status against cuBLAS and the
    // driver.
    let unsampled = query_counts("audit_unseen", "followed", "0");
    let ctx = format!("{unsampled:?}");
    for getter in [
        "cublasGetStream",
        "cublasGetMathMode",
        "cublasGetPointerMode",
    ] {
        assert_eq!(unsampled[getter], 1, "{getter}: {ctx}");
    }
    assert_eq!(unsampled["cuStreamIsCapturing"], 0, "{ctx}");
    assert_eq!(unsampled["cuStreamGetCaptureInfo"], 0, "{ctx}");
    assert!(unsampled["cuCtxGetCurrent"] <= 80 + 8, "{ctx}");
    let sampled = query_counts("audit_unseen", "followed", "1");
    let ctx = format!("{sampled:?}");
    for getter in ["cublasGetStream", "cublasGetMathMode"] {
        assert_eq!(sampled[getter], 1 + 80, "{getter}: {ctx}");
    }
    assert_eq!(sampled["cublasGetPointerMode"], 1 + 80, "{ctx}");
    assert_eq!(sampled["cuStreamIsCapturing"], 80, "{ctx}");
}

// ---------------------------------------------------------------------------
// Commit mode (docs/COMMIT.md): the library under a commit-mode hello

/// The commit-mode verifier's challenge key file (never the prover's): written into
/// `dir`, and the key itself.
fn challenge_key(dir: &Path) -> (PathBuf, [u8; 32]) {
    use std::os::unix::fs::PermissionsExt;
    let key = Key::from_bytes([0xc4; 32]);
    let path = dir.join("challenge.key");
    std::fs::write(&path, key.to_hex()).expect("write the challenge key");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .expect("chmod the challenge key");
    (path, key.challenge_key())
}

/// Runs `program` (`args`) under the library against `serve --commit` challenging
/// `call_ppm` of the committed calls, with `env` added. Returns the run, the live
/// report, and the offline check of the saved capture with the challenge key.
fn commit_run(
    name: &str,
    program: &str,
    args: &[&str],
    call_ppm: u32,
    env: &[(&'static str, String)],
    fault: Option<&str>,
) -> (Output, Value, Check) {
    commit_run_weights(name, program, args, call_ppm, env, fault, None)
}

/// [`commit_run`] with a verifier holding the weights file `weights`.
fn commit_run_weights(
    name: &str,
    program: &str,
    args: &[&str],
    call_ppm: u32,
    env: &[(&'static str, String)],
    fault: Option<&str>,
    weights: Option<&Path>,
) -> (Output, Value, Check) {
    let exe = compile(program);
    let dir = scratch(name);
    let (key_path, key) = challenge_key(&dir);
    let sampling = mmaudit_protocol::config::SamplingConfig {
        call_ppm,
        ..Default::default()
    };
    let serve = serve_with(&dir, weights, Some((key, sampling)));
    let sink = format!("tcp://{}", serve.addr);
    let mut all = audit_env(&sink, EVERY_CALL, fault);
    all.extend(env.iter().cloned());
    let out = run(&exe, args, &all);
    let (mut reports, summary) = serve.finish(1);
    let ctx = format!("{}\n{reports:#?}\n{summary:?}", out.transcript());
    assert_eq!(out.code, Some(0), "{ctx}");
    assert_eq!(summary.streams, 1, "{ctx}");
    let captures = captures_in(&dir.join("captures"));
    assert_eq!(captures.len(), 1, "{ctx}");
    let k = key_path.display().to_string();
    let w = weights.map(|w| w.display().to_string()).unwrap_or_default();
    let mut extra = vec!["--challenge-key", k.as_str()];
    if weights.is_some() {
        extra.extend_from_slice(&["--weights", w.as_str()]);
    }
    extra.extend_from_slice(NO_SESSION_ALLOWED);
    let check = check_args(&captures, &dir, &extra);
    (out, reports.remove(0), check)
}

#[test]
fn commit_mode_audits_the_workload_under_ld_preload_and_catches_a_wrong_gpu() {
    let args = ["--layers", "2", "--trace"];
    let reference = reference(&compile("llama_workload"), &args, None);
    // Absent: an honest GPU. Every committed call is challenged half the time; every
    // challenge is opened and verified, and the capture re-checks offline.
    let info = [("MMAUDIT_LOG", "info".to_string())];
    let (out, r, check) = commit_run(
        "commit-honest",
        "llama_workload",
        &args,
        500_000,
        &info,
        None,
    );
    let ctx = format!("{}\n{r:#}\n{}", out.transcript(), check.text);
    assert_eq!(out.hash(), reference.hash(), "outputs unchanged\n{ctx}");
    assert_eq!(r["verdict"], "pass", "{ctx}");
    assert_eq!(r["streams"][0]["header"]["mode"], "commit", "{ctx}");
    assert_eq!(r["calls"].as_u64(), Some(out.calls()), "{ctx}");
    assert_nothing_wrong(&r, &ctx);
    let (challenged, verified) = (
        r["sampled"].as_u64().unwrap_or(0),
        r["verified"].as_u64().unwrap_or(0),
    );
    assert!(challenged > 3, "{ctx}");
    assert_eq!(
        verified, challenged,
        "every challenge opened and verified\n{ctx}"
    );
    assert_eq!(check.code, Some(0), "{ctx}");
    assert_eq!(check.n("sampled"), challenged, "{ctx}");
    assert_eq!(check.json["verdict"], "pass", "{ctx}");
    // Every call's vectors were hashed on the GPU, and each call's check of one vector
    // per operand against the host's hash agreed. Every call was kept in GPU memory, so
    // every opening was gathered from there.
    let [committed, _, on_gpu, disagreed, in_gpu_memory] = commit_counts(&out);
    assert!(committed > 0, "{ctx}");
    assert_eq!((on_gpu, disagreed), (committed, 0), "{ctx}");
    assert_eq!(in_gpu_memory, committed, "{ctx}");

    // Present: a GPU that computes nothing (D written as zeros). It commits to what it
    // computed; the challenged calls fail on the arithmetic. Every call is challenged:
    // zeros propagate, so only the calls whose inputs are not all zero (about six of
    // the 19) are wrong, and half of them would all go unchallenged 1.6% of the time.
    // The wrong calls are the first ones, and the library never waits for its hello:
    // the program makes one warm-up GEMM and pauses 300 ms before the model, so that the
    // hello is in place by its first call. A run whose hello still arrived after more
    // than five calls (a loaded machine) says nothing about them and is run again, at
    // most five times.
    let warm = ["--layers", "2", "--trace", "--warmup-ms", "300"];
    let mut attempt = 0;
    let (out, r, check) = loop {
        attempt += 1;
        let run = commit_run(
            &format!("commit-zero-{attempt}"),
            "llama_workload",
            &warm,
            1_000_000,
            &[],
            Some("zero"),
        );
        if run.1["no_session_not_audited"].as_u64().unwrap_or(0) <= 5 || attempt == 5 {
            break run;
        }
    };
    let ctx = format!("{}\n{r:#}\n{}", out.transcript(), check.text);
    assert!(
        r["no_session_not_audited"].as_u64().unwrap_or(0) <= 5,
        "five runs began their session late\n{ctx}"
    );
    assert_eq!(r["verdict"], "fail", "{ctx}");
    assert!(r["mismatched"].as_u64().unwrap_or(0) > 0, "{ctx}");
    assert_eq!(r["missing"].as_u64(), Some(0), "{ctx}");
    assert_eq!(check.code, Some(1), "{ctx}");
}

#[test]
fn commit_mode_a_gpu_that_hashes_wrong_is_noticed_and_hashed_on_the_host() {
    // Present: every leaf hash the GPU writes is wrong. The library's check of one
    // vector per operand notices it at the first committed call. That call's operands
    // are in GPU memory: they are copied back to host memory and hashed there, as is
    // any call already on its way into GPU memory then. Every later call is gathered to
    // host memory and hashed there: every call committed, every challenge opened and
    // verified, nothing mismatches, PASS. (Absent: the honest run of
    // commit_mode_audits_the_workload_under_ld_preload_..., every call hashed on the
    // GPU and kept in its memory, none disagreeing.)
    let args = ["--layers", "2"];
    let env = [
        ("SIMGPU_BAD_LEAVES", "1".to_string()),
        ("MMAUDIT_LOG", "info".to_string()),
    ];
    let (out, r, check) = commit_run(
        "commit-bad-leaves",
        "llama_workload",
        &args,
        1_000_000,
        &env,
        None,
    );
    let (ctx, disagreed) = assert_bad_leaves_noticed(&out, &r, &check);
    assert_eq!(r["gaps"].as_u64(), Some(0), "{ctx}");
    // op(A), op(B) and D of the first call (C too where beta is not zero), then none
    assert!((1..=4).contains(&disagreed), "{ctx}");
}

/// What every commit-mode run on a GPU whose leaf hashes are all wrong (or not
/// computed) shows: the calls kept in GPU memory then copied back to host memory and
/// hashed there, none "not committed", nothing mismatched, every challenge verified,
/// PASS; no call committed from GPU hashes or from GPU memory in the end, and the
/// warning. Returns the context to print and the operands that disagreed.
fn assert_bad_leaves_noticed(out: &Output, r: &Value, check: &Check) -> (String, u64) {
    let ctx = format!("{}\n{r:#}\n{}", out.transcript(), check.text);
    assert_eq!(r["uncommitted"].as_u64(), Some(0), "{ctx}");
    assert_eq!(r["mismatched"].as_u64(), Some(0), "{ctx}");
    assert_eq!(r["verified"], r["sampled"], "{ctx}");
    assert!(r["verified"].as_u64().unwrap_or(0) > 3, "{ctx}");
    assert_eq!(r["verdict"], "pass", "{ctx}");
    assert_eq!(check.code, Some(0), "{ctx}");
    let [committed, _, on_gpu, disagreed, in_gpu_memory] = commit_counts(out);
    assert!(committed > 0, "{ctx}");
    assert_eq!((on_gpu, in_gpu_memory), (0, 0), "{ctx}");
    assert!(disagreed >= 1, "{ctx}");
    assert!(refetched(out) >= 1, "{ctx}");
    assert!(
        out.transcript()
            .contains("the rest of this session's calls are hashed on the host"),
        "{ctx}"
    );
    (ctx, disagreed)
}

/// Calls kept in GPU memory that the library copied back to host memory to hash them
/// (its exit line).
fn refetched(out: &Output) -> u64 {
    let t = out.transcript();
    t.split(" calls kept in GPU memory copied back")
        .next()
        .and_then(|s| s.split_whitespace().last())
        .and_then(|n| n.trim_start_matches(';').parse().ok())
        .unwrap_or_else(|| panic!("no count of calls copied back\n{t}"))
}

#[test]
fn commit_mode_calls_not_retained_are_gaps_that_fail_the_policy() {
    // An MLP width of 2048 makes the gate, up and down calls each keep more than 1 MiB:
    // with MMAUDIT_RETAIN_MB=1 they are committed but not kept, and every challenge
    // of one is answered "not retained". Absent: the default retention.
    let args = ["--layers", "2", "--intermediate", "2048"];
    let (out, r, _) = commit_run(
        "commit-retained",
        "llama_workload",
        &args,
        1_000_000,
        &[],
        None,
    );
    let ctx = format!("{}\n{r:#}", out.transcript());
    assert_eq!(r["verdict"], "pass", "{ctx}");
    assert_eq!(r["gaps"].as_u64(), Some(0), "{ctx}");

    let small = [("MMAUDIT_RETAIN_MB", "1".to_string())];
    let (out, r, check) = commit_run(
        "commit-not-retained",
        "llama_workload",
        &args,
        1_000_000,
        &small,
        None,
    );
    let ctx = format!("{}\n{r:#}\n{}", out.transcript(), check.text);
    assert_eq!(r["verdict"], "fail", "{ctx}");
    assert_eq!(r["mismatched"].as_u64(), Some(0), "{ctx}");
    // Three MLP calls per layer.
    assert!(r["gaps"].as_u64().unwrap_or(0) >= 6, "{ctx}");
    assert!(format!("{r}").contains("NotRetained"), "{ctx}");
    assert_eq!(check.code, Some(1), "{ctx}");

    // A pinned ring too small for those calls: they are kept in GPU memory instead,
    // where only their leaf hashes and checked vectors need pinned memory, and pass.
    let ring = [("MMAUDIT_RING_MB", "1".to_string())];
    let (out, r, _) = commit_run(
        "commit-small-pinned-ring",
        "llama_workload",
        &args,
        1_000_000,
        &ring,
        None,
    );
    let ctx = format!("{}\n{r:#}", out.transcript());
    assert_eq!(r["verdict"], "pass", "{ctx}");
    assert_eq!(r["uncommitted"].as_u64(), Some(0), "{ctx}");

    // Both rings too small for those calls (settings of the audited machine): they
    // cannot be gathered, so they are not committed, and the default --max-uncommitted
    // fails the run. The report says why in the prover's words.
    let ring = [
        ("MMAUDIT_RING_MB", "1".to_string()),
        ("MMAUDIT_RETAIN_MB", "1".to_string()),
    ];
    let (out, r, check) = commit_run(
        "commit-small-ring",
        "llama_workload",
        &args,
        1_000_000,
        &ring,
        None,
    );
    let ctx = format!("{}\n{r:#}\n{}", out.transcript(), check.text);
    assert_eq!(r["verdict"], "fail", "{ctx}");
    assert_eq!(r["mismatched"].as_u64(), Some(0), "{ctx}");
    assert!(r["uncommitted"].as_u64().unwrap_or(0) >= 6, "{ctx}");
    let why = r["streams"][0]["uncommitted_first_reason"]
        .as_str()
        .unwrap_or("");
    assert!(why.contains("MMAUDIT_RING_MB"), "{why}\n{ctx}");
    // Their FLOPs are a share of the run's, never more than all of it.
    let share = r["streams"][0]["not_audited"]["uncommitted"]["share_of_flops"]
        .as_f64()
        .unwrap_or(f64::NAN);
    assert!(share > 0.01 && share <= 1.0, "{share}\n{ctx}");
    assert_eq!(check.code, Some(1), "{ctx}");
}

#[test]
fn commit_mode_rings_default_to_room_for_calls_larger_than_64_mib() {
    // A 147456-wide MLP over 16 tokens of hidden 256: each MLP weight is 72 MiB of bf16,
    // gathered whole at its first use, more than the sampling-mode ring (64 MiB).
    let args = [
        "--layers",
        "1",
        "--tokens",
        "16",
        "--intermediate",
        "147456",
    ];
    // Absent: no MMAUDIT_RING_MB, so a ring made in a commit-mode session gets the
    // commit-mode default (256 MiB) and every call is committed.
    let (out, r, check) = commit_run(
        "commit-big-ring",
        "llama_workload",
        &args,
        200_000,
        &[],
        None,
    );
    let ctx = format!("{}\n{r:#}\n{}", out.transcript(), check.text);
    assert_eq!(r["verdict"], "pass", "{ctx}");
    assert_eq!(r["uncommitted"].as_u64(), Some(0), "{ctx}");
    assert_nothing_wrong(&r, &ctx);
    assert_eq!(check.code, Some(0), "{ctx}");
    // Present: the sampling default set explicitly is honoured, and with a GPU
    // retention ring too small for them too, the MLP calls are not committed.
    let ring = [
        ("MMAUDIT_RING_MB", "64".to_string()),
        ("MMAUDIT_RETAIN_MB", "64".to_string()),
    ];
    let (out, r, _) = commit_run(
        "commit-64-ring",
        "llama_workload",
        &args,
        200_000,
        &ring,
        None,
    );
    let ctx = format!("{}\n{r:#}", out.transcript());
    assert_eq!(r["verdict"], "fail", "{ctx}");
    assert!(r["uncommitted"].as_u64().unwrap_or(0) >= 3, "{ctx}");
    let why = r["streams"][0]["uncommitted_first_reason"]
        .as_str()
        .unwrap_or("");
    assert!(why.contains("64 MiB pinned ring"), "{why}\n{ctx}");
}

#[test]
fn commit_mode_commits_every_gemm_of_every_graph_replay() {
    // Decode as CUDA graph replays: every replayed GEMM is gathered whole inside its
    // replay into the device retention ring, hashed there by the replay's leaf-hash
    // nodes, committed to and opened when challenged. Captured calls are declared, not
    // audited, as in sampling mode.
    let args = ["--replays", "24"];
    let exe = compile("graph_decode");
    let reference = reference(&exe, &args, None);
    let (captured, replayed) = graph_counts(&reference);
    let info = [("MMAUDIT_LOG", "info".to_string())];
    let (out, r, check) = commit_run("commit-graph", "graph_decode", &args, 500_000, &info, None);
    let ctx = format!("{}\n{r:#}\n{}", out.transcript(), check.text);
    assert_eq!(out.hash(), reference.hash(), "{ctx}");
    assert_eq!(r["verdict"], "pass", "{ctx}");
    assert_nothing_wrong(&r, &ctx);
    assert_eq!(
        r["streams"][0]["graphs"]["capture_records"].as_u64(),
        Some(captured),
        "{ctx}"
    );
    let graphs = &r["streams"][0]["graphs"];
    assert_eq!(graphs["replayed"].as_u64(), Some(replayed), "{ctx}");
    let challenged = graphs["replayed_sampled"].as_u64().unwrap_or(0);
    assert!(challenged > replayed / 4, "{ctx}");
    assert_eq!(
        graphs["replayed_verified"].as_u64(),
        Some(challenged),
        "{ctx}"
    );
    assert_eq!(check.code, Some(0), "{ctx}");
    // Every committed call, eager or replayed, was hashed on the GPU and kept in GPU
    // memory.
    let [committed, _, hashed, disagreed, kept] = commit_counts(&out);
    assert!(committed >= replayed, "{ctx}");
    assert_eq!(
        (hashed, disagreed, kept),
        (committed, 0, committed),
        "{ctx}"
    );
    // The same after the program updates its executable graph in place
    // (cudaGraphExecUpdate halfway).
    let args = ["--replays", "24", "--update"];
    let (out, r, check) = commit_run(
        "commit-graph-update",
        "graph_decode",
        &args,
        500_000,
        &info,
        None,
    );
    let ctx = format!("{}\n{r:#}\n{}", out.transcript(), check.text);
    assert_eq!(r["verdict"], "pass", "{ctx}");
    assert_nothing_wrong(&r, &ctx);
    assert_eq!(check.code, Some(0), "{ctx}");
    let [committed, _, hashed, _, kept] = commit_counts(&out);
    assert_eq!((hashed, kept), (committed, committed), "{ctx}");
}

#[test]
fn commit_mode_graph_replays_on_a_gpu_that_hashes_wrong_or_computes_nothing() {
    // The honest twin is commit_mode_commits_every_gemm_of_every_graph_replay.
    let args = ["--replays", "24"];
    // Every leaf hash the GPU writes is wrong, and then leaf-hash nodes that do not run
    // (the executable graph runs other nodes than those bound; the slot's leaf hashes
    // are stale): the library notices at the first replayed call, copies the calls
    // then kept in GPU memory back to host memory and hashes them there (never from
    // the stale hashes), gathers the later replays to host memory: every call
    // committed, nothing mismatches, PASS.
    for (name, fault) in [
        ("commit-graph-bad-leaves", "SIMGPU_BAD_LEAVES"),
        ("commit-graph-skip-leaves", "SIMGPU_SKIP_REPLAY_LEAVES"),
    ] {
        let env = [
            (fault, "1".to_string()),
            ("MMAUDIT_LOG", "info".to_string()),
        ];
        // Every call challenged, so that the calls copied back are opened too.
        let (out, r, check) = commit_run(name, "graph_decode", &args, 1_000_000, &env, None);
        assert_bad_leaves_noticed(&out, &r, &check);
    }
    // A GPU whose replayed GEMMs compute nothing: the library commits to what it
    // wrote, and the challenged calls fail on the arithmetic.
    let env = [("SIMGPU_FAULT", "zero".to_string())];
    let (out, r, check) = commit_run(
        "commit-graph-zero",
        "graph_decode",
        &args,
        500_000,
        &env,
        None,
    );
    let ctx = format!("{}\n{r:#}\n{}", out.transcript(), check.text);
    assert_eq!(r["verdict"], "fail", "{ctx}");
    assert!(r["mismatched"].as_u64().unwrap_or(0) > 0, "{ctx}");
    assert_eq!(r["uncommitted"].as_u64(), Some(0), "{ctx}");
    assert_eq!(check.code, Some(1), "{ctx}");
}

/// Calls whose op(A) the library bound by its address, from its exit line.
fn by_address(out: &Output) -> u64 {
    commit_counts(out)[1]
}

/// The library's commit-mode exit line: calls committed, those whose op(A) was bound by
/// its address, those hashed on the GPU, operands whose GPU hashes disagreed, and calls
/// kept in GPU memory.
fn commit_counts(out: &Output) -> [u64; 5] {
    let t = out.transcript();
    let counts = (|| {
        let line = t.split("; commit mode: ").nth(1)?;
        let t = line.lines().next()?;
        let n = |before: &str| -> Option<u64> {
            t.split(before)
                .next()?
                .split_whitespace()
                .last()?
                .trim_start_matches(['(', ';'])
                .parse()
                .ok()
        };
        Some([
            n(" calls committed")?,
            n(" with op(A) found")?,
            n(" hashed on the GPU")?,
            n(" operands whose GPU hashes disagreed")?,
            n(" kept in GPU memory")?,
        ])
    })();
    counts.unwrap_or_else(|| panic!("no commit-mode exit line\n{t}"))
}

#[test]
fn commit_mode_binds_held_weights_by_reference() {
    // The verifier holds the workload's weights: the library binds each weight operand
    // by reference (not hashed, not kept, opened with one element a row) and the
    // verifier recomputes with its own copy. Present: the GPU computes with other
    // weights (SIMGPU_FAULT=weights:0.05, each weight 5% off as the GEMM reads it); the reference claim holds the verifier's copy,
    // so the challenged calls fail.
    let exe = compile("llama_workload");
    let dir = scratch("commit-weights-file");
    let weights = dir.join("model.safetensors");
    let w = weights.display().to_string();
    let written = run(&exe, &["--layers", "2", "--write-weights", &w], &[]);
    assert_eq!(written.code, Some(0), "{}", written.transcript());
    let args = ["--layers", "2", "--trace"];
    let info = [("MMAUDIT_LOG", "info".to_string())];
    let (out, r, check) = commit_run_weights(
        "commit-weights",
        "llama_workload",
        &args,
        1_000_000,
        &info,
        None,
        Some(&weights),
    );
    let ctx = format!("{}\n{r:#}\n{}", out.transcript(), check.text);
    assert_eq!(r["verdict"], "pass", "{ctx}");
    let referenced = r["streams"][0]["weights"]["referenced"]
        .as_u64()
        .unwrap_or(0);
    assert!(referenced >= 5, "{referenced} references\n{ctx}");
    assert_eq!(check.code, Some(0), "{ctx}");
    // A weight crosses to the host whole at most once: the first call at its address
    // (the whole call fits in the ring) finds it by every row's fingerprint; later calls
    // there gather its evidence and one spot row. One prefill uses each of its 11
    // weights (5 per layer and lm_head) once; each of the 3 decode steps uses them again.
    assert_eq!(by_address(&out), 0, "{ctx}");
    let decode = ["--layers", "2", "--generate", "3"];
    let (out, r, _) = commit_run_weights(
        "commit-weights-decode",
        "llama_workload",
        &decode,
        1_000_000,
        &info,
        None,
        Some(&weights),
    );
    let ctx = format!("{}\n{r:#}", out.transcript());
    assert_eq!(r["verdict"], "pass", "{ctx}");
    assert!(by_address(&out) >= 2 * 11, "{ctx}");
    // A call whose op(A) is bound by its address still has op(B) and D hashed
    // on the GPU (the leaf jobs of B, C and D do not depend on op(A) being whole).
    let [committed, _, on_gpu, disagreed, _] = commit_counts(&out);
    assert_eq!(
        (on_gpu, disagreed),
        (committed, 0),
        "held op(A) calls hashed on the host\n{ctx}"
    );
    // An activation with a weight's shape (256 tokens = hidden 256: the attention-
    // context GEMMs' op(A) has the row length of the 256-wide weights) is no weight:
    // its first call fits in the ring, is gathered whole, and is committed.
    let (out, r, _) = commit_run_weights(
        "commit-weights-shape",
        "llama_workload",
        &["--layers", "2", "--tokens", "256"],
        1_000_000,
        &info,
        None,
        Some(&weights),
    );
    let ctx = format!("{}\n{r:#}", out.transcript());
    assert_eq!(r["verdict"], "pass", "{ctx}");
    assert_eq!(r["uncommitted"].as_u64(), Some(0), "{ctx}");
    // A weight larger than the ring is never copied whole: an MLP 2048 wide makes the
    // gate, up and down weights 1 MiB each, and the ring is 1 MiB. Their first calls
    // probe (evidence and a spot row, found by the row's fingerprint) and pass.
    let wide = dir.join("wide.safetensors");
    let ww = wide.display().to_string();
    let written = run(
        &exe,
        &[
            "--layers",
            "2",
            "--intermediate",
            "2048",
            "--write-weights",
            &ww,
        ],
        &[],
    );
    assert_eq!(written.code, Some(0), "{}", written.transcript());
    let small_ring = [
        ("MMAUDIT_LOG", "info".to_string()),
        ("MMAUDIT_RING_MB", "1".to_string()),
    ];
    let (out, r, _) = commit_run_weights(
        "commit-weights-probe",
        "llama_workload",
        &["--layers", "2", "--intermediate", "2048"],
        1_000_000,
        &small_ring,
        None,
        Some(&wide),
    );
    let ctx = format!("{}\n{r:#}", out.transcript());
    assert_eq!(r["verdict"], "pass", "{ctx}");
    assert_eq!(r["uncommitted"].as_u64(), Some(0), "{ctx}");
    assert!(
        by_address(&out) >= 5,
        "the MLP weights of both layers probed\n{ctx}"
    );

    let (out, r, _) = commit_run_weights(
        "commit-other-weights",
        "llama_workload",
        &args,
        1_000_000,
        &[],
        Some("weights:0.05"),
        Some(&weights),
    );
    let ctx = format!("{}\n{r:#}", out.transcript());
    assert_eq!(r["verdict"], "fail", "{ctx}");
    assert!(r["mismatched"].as_u64().unwrap_or(0) >= 5, "{ctx}");
}

#[test]
fn commit_mode_passes_every_entry_point_many_threads_and_a_slow_gpu() {
    // The call surface in commit mode, every committed call challenged: every cuBLAS
    // and cuBLASLt entry point of audit_matrix (device scalars, epilogues, fp8 scales,
    // batches of every form), the threads, handles and streams of audit_threads, and
    // audit_matrix again on a GPU whose work completes late (gathers finish out of
    // order; commitments still go out in index order).
    // The vectors of every form of operand (strides, transposes, pointer arrays, strided
    // batches, fp8) are hashed on the GPU, and agree with the host's hashes.
    for (name, program, env) in [
        ("commit-matrix", "audit_matrix", vec![]),
        ("commit-threads", "audit_threads", vec![]),
        (
            "commit-matrix-slow",
            "audit_matrix",
            vec![("SIMGPU_LATENCY_US", "200".to_string())],
        ),
    ] {
        let reference = reference(&compile(program), &[], None);
        let mut env = env;
        env.push(("MMAUDIT_LOG", "info".to_string()));
        let (out, r, check) = commit_run(name, program, &[], 1_000_000, &env, None);
        let ctx = format!("{name}\n{}\n{r:#}\n{}", out.transcript(), check.text);
        assert_eq!(out.hash(), reference.hash(), "{ctx}");
        assert_eq!(r["verdict"], "pass", "{ctx}");
        assert_nothing_wrong(&r, &ctx);
        assert_eq!(r["verified"], r["sampled"], "{ctx}");
        assert!(r["sampled"].as_u64().unwrap_or(0) > 10, "{ctx}");
        assert_eq!(check.code, Some(0), "{ctx}");
        let [committed, _, on_gpu, disagreed, _] = commit_counts(&out);
        assert_eq!((on_gpu, disagreed), (committed, 0), "{ctx}");
    }
}

// ---------------------------------------------------------------------------
// Reduced-precision reductions

/// The library flags REDUCED_PRECISION_REDUCTION on exactly the calls that let cuBLAS
/// add split-k parts in the output type (audit_reductions.c lists them): from the
/// handle's math mode for cuBLAS, from the algorithm's split count and reduction
/// scheme for cuBLASLt, for 16-bit outputs only. Honest (the simulated GPU reduces in
/// full precision), they pass under both policies.
#[test]
fn reduced_precision_reductions_are_flagged_on_exactly_the_calls_that_allow_them() {
    let exe = compile("audit_reductions");
    let reference = reference(&exe, &[], None);
    let a = audit("reductions", &exe, &[], FULL, None, &[]);
    assert_honest_pass(&a, &reference);
    let allowed: Vec<u64> = reference
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("allowed"))
        .expect("an 'allowed' line")
        .split_whitespace()
        .map(|i| i.parse().unwrap())
        .collect();
    assert_eq!(allowed, [0, 2, 4, 6, 7]);
    let flagged: Vec<u64> = ledger_of("reductions")
        .iter()
        .filter(|c| c.has(flags::REDUCED_PRECISION_REDUCTION))
        .map(|c| c.index)
        .collect();
    assert_eq!(flagged, allowed, "{}", a.context());
    let rpr = &a.check.json["reduced_precision_reductions"];
    assert_eq!(rpr.as_u64(), Some(5), "{}", a.context());
    assert!(
        a.check.text.contains("reduced precision")
            && a.check.text.contains("judged like every other call"),
        "{}",
        a.check.text
    );
    let widened = check_args(
        &a.captures,
        &a.dir,
        &["--allow-reduced-precision-reductions"],
    );
    assert_eq!(widened.code, Some(0), "{}", widened.text);
    assert!(
        widened.text.contains("judged with widened bounds"),
        "{}",
        widened.text
    );
}

/// Per-channel fp8 arithmetic in place of bf16 on calls that allow reduced-precision
/// reductions: the flag is the audited program's choice, so by default it widens
/// nothing and the cheat fails; each failure on such a call says what an honest GPU
/// may have done instead. Only the auditor's --allow-reduced-precision-reductions
/// widens the bounds.
#[test]
fn cheaper_arithmetic_on_calls_that_allow_reduced_precision_fails_by_default() {
    let exe = compile("audit_reductions");
    let a = audit(
        "reductions-fp8",
        &exe,
        &[],
        FULL,
        Some("precision:fp8-rowscaled"),
        &[],
    );
    let ctx = a.context();
    assert_eq!(a.check.code, Some(1), "{ctx}");
    assert!(a.check.n("mismatched") >= 8, "{ctx}");
    let hinted = a
        .check
        .failures()
        .iter()
        .filter(|f| {
            f["message"]
                .as_str()
                .is_some_and(|m| m.contains("--allow-reduced-precision-reductions"))
        })
        .count();
    assert!(hinted > 0, "{ctx}");
}

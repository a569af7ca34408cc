//! The sampling rates of a live session are the verifier's, end to end: the Llama-style
//! C workload (`tests/programs/llama_workload.c`) runs on the simulated GPU under
//! `LD_PRELOAD=libmmaudit.so` with a TCP sink to `mmaudit-verify serve` (in this
//! process), and what the library sampled is read back from the verifier's report and
//! the capture it saved.
//!
//! What is shown, each with the case where the prover's environment agrees and where it
//! does not:
//! - a prover whose environment asks for nothing (`MMAUDIT_CALL_RATE=0`, caps of one
//!   row, column and batch entry) streams a header with the verifier's rates (every
//!   call), every call of the session is sampled and verified, and the stream passes;
//!   the library says once that the hello set other rates than its environment;
//! - a prover whose environment asks for what the verifier asks for gives the same
//!   streams, and says nothing about rates;
//! - a verifier with the default policy (10% of calls) gets a header with exactly its
//!   rates from the same lowered environment;
//! - without a live verifier (a file sink) the environment's rates are the stream's: the
//!   same lowered environment samples nothing, and `check` fails the capture ("sampling
//!   below policy").
//!
//! The helpers (building, running, checking) are `mmaudit_tests::preload`'s, shared
//! with tests/e2e/interposer.rs.

use std::path::Path;
use std::time::Duration;

use mmaudit_protocol::config::SamplingConfig;
use mmaudit_protocol::keys::Key;
use mmaudit_protocol::stream::StreamHeader;
use mmaudit_tests::preload::{
    audit_env, captures_in, check_args, header_of, reference, run, scratch, serve_dirs, Output,
    Rates, Serve, EVERY_CALL, KEY, NO_SESSION_ALLOWED,
};
use mmaudit_tests::simgpu::compile;
use mmaudit_verify::serve::{ServeOptions, ServeSummary, Server};
use serde_json::Value;

const ARGS: &[&str] = &["--layers", "4", "--trace"];

/// What a prover that wants nothing audited puts in its environment.
const LOWERED: &[(&str, &str)] = &[
    ("MMAUDIT_CALL_RATE", "0"),
    ("MMAUDIT_ROW_RATE", "0"),
    ("MMAUDIT_COL_RATE", "0"),
    ("MMAUDIT_BATCH_RATE", "0"),
    ("MMAUDIT_MAX_ROWS", "1"),
    ("MMAUDIT_MAX_COLS", "1"),
    ("MMAUDIT_MAX_BATCHES", "1"),
];

/// The library's line when the hello's rates differ from its environment's.
const RATES_LINE: &str = "sets the sampling rates of the session";

/// `serve` in this process, its hello asking for `sampling`. A short program's first
/// calls precede the hello (no session), far above the default limit: allowed here.
fn serve(dir: &Path, sampling: SamplingConfig) -> Serve<ServeSummary> {
    serve_judging(dir, sampling, 1.0)
}

/// `serve` in this process, its hello asking for `sampling`, failing streams with more
/// than `max_no_session` of their calls or FLOPs made before a session.
fn serve_judging(dir: &Path, sampling: SamplingConfig, max_no_session: f64) -> Serve<ServeSummary> {
    let key = Key::from_hex(KEY).expect("the test key");
    let mut opts = ServeOptions::new("127.0.0.1:0".parse().expect("an address"), key);
    let (captures, reports) = serve_dirs(dir);
    opts.capture_dir = Some(captures);
    opts.json_dir = Some(reports);
    opts.sampling = sampling;
    opts.policy
        .set_limit(mmaudit_verify::policy::Unaudited::NoSession, max_no_session);
    let server = Server::bind(opts).expect("bind the verifier");
    let (addr, stopper) = (server.local_addr(), server.stopper());
    let thread = std::thread::spawn(move || server.run().expect("the verifier runs"));
    Serve::new(addr, dir, move || stopper.stop(), thread)
}

/// One live run: the program's output, the verifier's report on its one stream, and
/// the header of the capture the verifier saved.
struct Live {
    out: Output,
    report: Value,
    header: StreamHeader,
    ctx: String,
}

impl Live {
    fn n(&self, key: &str) -> u64 {
        self.report[key]
            .as_u64()
            .unwrap_or_else(|| panic!("no {key}\n{}", self.ctx))
    }
}

/// Runs the workload with `env` (beyond the preload, key and sink) against a verifier
/// asking for `sampling`.
fn live(name: &str, sampling: SamplingConfig, env: &[(&str, &str)]) -> Live {
    let exe = compile("llama_workload");
    let dir = scratch(&format!("policy-{name}"));
    let serve = serve(&dir, sampling);
    let mut vars = audit_env(&format!("tcp://{}", serve.addr), Rates::default(), None);
    vars.extend(env.iter().map(|&(k, v)| (k, v.to_string())));
    vars.push(("MMAUDIT_LOG", "info".into()));
    let out = run(&exe, ARGS, &vars);
    let (reports, summary) = serve.finish(1);
    let ctx = format!("{}\n{reports:#?}\n{summary:?}", out.transcript());
    assert_eq!(out.code, Some(0), "{ctx}");
    assert_eq!(
        out.hash(),
        reference(&exe, ARGS, None).hash(),
        "the library changed the results\n{ctx}"
    );
    assert_eq!(reports.len(), 1, "{ctx}");
    let captures = captures_in(&dir.join("captures"));
    assert_eq!(captures.len(), 1, "{ctx}");
    let header = header_of(&captures[0]).expect("an authenticated header");
    // The saved capture re-checks offline to the verifier's verdict.
    let offline = check_args(&captures, &dir, NO_SESSION_ALLOWED);
    assert_eq!(
        offline.verdict(),
        reports[0]["verdict"].as_str().unwrap_or("?"),
        "{}\n{ctx}",
        offline.text
    );
    Live {
        out,
        report: reports[0].clone(),
        header,
        ctx,
    }
}

/// Every call of the session sampled and verified, the stream passes.
fn assert_every_session_call_verified(l: &Live) {
    let ctx = &l.ctx;
    assert_eq!(l.report["verdict"], "pass", "{ctx}");
    assert_eq!(l.n("calls"), l.out.calls(), "{ctx}");
    let (sampled, no_session) = (l.n("sampled"), l.n("no_session_not_audited"));
    assert_eq!(sampled + no_session, l.out.calls(), "{ctx}");
    assert!(sampled > l.out.calls() / 2, "{ctx}");
    assert_eq!(l.n("verified"), sampled, "{ctx}");
    for key in ["gaps", "missing", "mismatched", "integrity_errors"] {
        assert_eq!(l.n(key), 0, "{key}\n{ctx}");
    }
}

#[test]
fn a_prover_asking_for_no_sampling_is_sampled_at_the_verifiers_rates() {
    let policy = EVERY_CALL.config();
    let l = live("lowered", policy, LOWERED);
    // The header carries the verifier's configuration, not the environment's.
    assert_eq!(l.header.config, policy, "{}", l.ctx);
    assert_eq!(l.report["streams"][0]["header"]["call_rate_ppm"], 1_000_000);
    assert_every_session_call_verified(&l);
    // Said once, naming both.
    let said: Vec<&str> = l
        .out
        .stderr
        .lines()
        .filter(|x| x.contains(RATES_LINE))
        .collect();
    assert_eq!(said.len(), 1, "{}", l.ctx);
    assert!(
        said[0].contains("1000000 ppm of calls") && said[0].contains("asked for 0 ppm of calls"),
        "{}",
        said[0]
    );
    assert!(
        l.out
            .stderr
            .contains("sampling rates set by the verifier's hello"),
        "{}",
        l.ctx
    );
}

#[test]
fn a_prover_asking_for_the_verifiers_rates_streams_the_same() {
    // The honest counterpart: the environment says what the hello says.
    let policy = EVERY_CALL.config();
    let l = live("agreeing", policy, &[("MMAUDIT_CALL_RATE", "1")]);
    assert_eq!(l.header.config, policy, "{}", l.ctx);
    assert_every_session_call_verified(&l);
    assert!(!l.out.stderr.contains(RATES_LINE), "{}", l.ctx);
}

#[test]
fn the_default_policy_is_what_a_lowered_prover_streams() {
    // A verifier with the default options asks for the default rates (10% of calls).
    let l = live("default", SamplingConfig::default(), LOWERED);
    assert_eq!(l.header.config, SamplingConfig::default(), "{}", l.ctx);
    assert_eq!(l.report["verdict"], "pass", "{}", l.ctx);
    assert_eq!(l.n("calls"), l.out.calls(), "{}", l.ctx);
    assert_eq!(l.n("missing"), 0, "{}", l.ctx);
}

#[test]
fn without_a_live_verifier_the_environments_rates_are_the_streams() {
    // The same lowered environment with a file sink: nothing sampled, and the header
    // says so; the verifier's floor fails it.
    let exe = compile("llama_workload");
    let dir = scratch("policy-file");
    let mut vars = audit_env(
        &format!("file:{}/run.mma", dir.display()),
        Rates::default(),
        None,
    );
    vars.extend(LOWERED.iter().map(|&(k, v)| (k, v.to_string())));
    let out = run(&exe, ARGS, &vars);
    assert_eq!(out.code, Some(0), "{}", out.transcript());
    let captures = captures_in(&dir);
    assert_eq!(captures.len(), 1, "{}", out.transcript());
    let header = header_of(&captures[0]).expect("an authenticated header");
    assert_eq!(
        (header.config.call_ppm, header.config.max_rows),
        (0, 1),
        "{}",
        out.transcript()
    );
    let c = check_args(&captures, &dir, &[]);
    assert_eq!(c.code, Some(1), "{}", c.text);
    assert_eq!(c.n("sampled"), 0, "{}", c.text);
    assert!(
        !c.failures_of("sampling below policy").is_empty(),
        "{}",
        c.text
    );
}

/// A TCP relay between the prover and the verifier that holds the verifier's bytes (its
/// hello) back for `delay`: the verifier is reached, but only after the work.
fn late_relay(to: std::net::SocketAddr, delay: Duration) -> std::net::SocketAddr {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
    let addr = listener.local_addr().expect("the relay's address");
    std::thread::spawn(move || {
        let Ok((prover, _)) = listener.accept() else {
            return;
        };
        let Ok(verifier) = TcpStream::connect(to) else {
            return;
        };
        let pump = |mut from: TcpStream, mut to: TcpStream, delay: Duration| {
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                let mut buf = [0u8; 65536];
                while let Ok(n) = from.read(&mut buf) {
                    if n == 0 || to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = to.shutdown(std::net::Shutdown::Write);
            })
        };
        let up = pump(
            prover.try_clone().expect("clone"),
            verifier.try_clone().expect("clone"),
            Duration::ZERO,
        );
        let down = pump(verifier, prover, delay);
        let _ = (up.join(), down.join());
    });
    addr
}

#[test]
fn a_verifier_reached_only_after_the_work_fails_the_stream() {
    // A GPU returning zeros, whose verifier's hello arrives only after the program's
    // GEMMs: every call is made without a session, none is sampled, nothing is wrong
    // in what arrives. The share of calls made without a session fails it.
    let exe = compile("llama_workload");
    let dir = scratch("policy-late");
    let serve = serve_judging(&dir, SamplingConfig::default(), 0.01);
    let relay = late_relay(serve.addr, Duration::from_millis(1500));
    let mut vars = audit_env(&format!("tcp://{relay}"), Rates::default(), Some("zero"));
    vars.push(("MMAUDIT_EXIT_TIMEOUT_MS", "10000".into()));
    let out = run(&exe, ARGS, &vars);
    let (reports, _) = serve.finish(1);
    let ctx = format!("{}\n{reports:#?}", out.transcript());
    assert_eq!(out.code, Some(0), "{ctx}");
    assert_eq!(reports.len(), 1, "{ctx}");
    let r = &reports[0];
    assert_eq!(r["verdict"], "fail", "{ctx}");
    assert_eq!(r["calls"].as_u64(), Some(out.calls()), "{ctx}");
    assert_eq!(
        r["no_session_not_audited"].as_u64(),
        Some(out.calls()),
        "{ctx}"
    );
    assert_eq!(r["sampled"], 0, "{ctx}");
    let failures = r["streams"][0]["failures"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        failures.iter().any(|f| f["kind"] == "coverage"
            && f["message"]
                .as_str()
                .unwrap_or("")
                .contains("--max-no-session")),
        "{ctx}"
    );
}

#[test]
fn a_verifier_there_from_the_start_passes_a_long_enough_run() {
    // The honest counterpart: the same verifier and default policy, reached at once.
    // The library starts its session at the first GEMM, so that call (and any made
    // before the hello arrives) has no session; a run of a few hundred small calls
    // keeps their share under 1%. Each simulated GPU operation takes 2 ms, so the
    // hello arrives before the second call.
    let exe = compile("llama_workload");
    let args = [
        "--layers",
        "2",
        "--tokens",
        "1",
        "--generate",
        "24",
        "--trace",
    ];
    let dir = scratch("policy-prompt");
    let serve = serve_judging(&dir, SamplingConfig::default(), 0.01);
    let mut vars = audit_env(&format!("tcp://{}", serve.addr), Rates::default(), None);
    vars.push(("SIMGPU_LATENCY_US", "2000".into()));
    let out = run(&exe, &args, &vars);
    let (reports, _) = serve.finish(1);
    let ctx = format!("{}\n{reports:#?}", out.transcript());
    assert_eq!(out.code, Some(0), "{ctx}");
    assert!(out.calls() >= 200, "{ctx}");
    let r = &reports[0];
    assert_eq!(r["verdict"], "pass", "{ctx}");
    let no_session = r["no_session_not_audited"].as_u64().unwrap_or(u64::MAX);
    eprintln!(
        "{no_session} of {} calls made before the session",
        out.calls()
    );
    assert!(no_session >= 1 && no_session * 100 <= out.calls(), "{ctx}");
}

#[test]
fn a_lowered_prover_on_a_gpu_returning_zeros_fails_live_and_offline() {
    // The cheat together: MMAUDIT_CALL_RATE=0 and friends, and every GEMM skipped.
    // Live, the hello's rates apply and the zeros are found; offline, the capture's own
    // rates are below the floor. (Honest counterparts: the tests above.)
    let exe = compile("llama_workload");
    let dir = scratch("policy-zero-live");
    // Every call asked for: zeros propagate, so only the calls with nonzero inputs
    // (o_proj, whose C held the residual) show the fault.
    let serve = serve(&dir, EVERY_CALL.config());
    let mut vars = audit_env(
        &format!("tcp://{}", serve.addr),
        Rates::default(),
        Some("zero"),
    );
    vars.extend(LOWERED.iter().map(|&(k, v)| (k, v.to_string())));
    let out = run(&exe, ARGS, &vars);
    let (reports, _) = serve.finish(1);
    let ctx = format!("{}\n{reports:#?}", out.transcript());
    assert_eq!(reports.len(), 1, "{ctx}");
    assert_eq!(reports[0]["verdict"], "fail", "{ctx}");
    assert!(reports[0]["mismatched"].as_u64().unwrap_or(0) > 0, "{ctx}");

    let dir = scratch("policy-zero-file");
    let mut vars = audit_env(
        &format!("file:{}/run.mma", dir.display()),
        Rates::default(),
        Some("zero"),
    );
    vars.extend(LOWERED.iter().map(|&(k, v)| (k, v.to_string())));
    let out = run(&exe, ARGS, &vars);
    assert_eq!(out.code, Some(0), "{}", out.transcript());
    let c = check_args(&captures_in(&dir), &dir, &[]);
    assert_eq!(c.code, Some(1), "{}", c.text);
    assert_eq!(c.n("mismatched"), 0, "{}", c.text);
    assert!(
        !c.failures_of("sampling below policy").is_empty(),
        "{}",
        c.text
    );
}

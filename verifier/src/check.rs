//! `mmaudit-verify check`: offline verification of capture files.
//!
//! Each file is one stream. A file that is not a capture at all (wrong magic, a
//! directory, unreadable) means the command could not run (exit 2); a capture that
//! fails authentication, is truncated or holds wrong results fails the audit (exit 1).

use std::fs::File;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use mmaudit_protocol::keys::Key;
use mmaudit_protocol::stream::{StreamError, StreamReader};

use crate::audit::StreamAudit;
use crate::keyfile::read_key_file;
use crate::report::{summary_json, StreamReport};

/// Options of `mmaudit-verify check`.
#[derive(Args, Debug)]
#[command(after_help = "\
Each FILE is one audit stream (a capture written by libmmaudit.so's file sink, or
saved by `mmaudit-verify serve`). For every call in the ledger the verifier re-derives
whether it had to be sampled and which entries; it recomputes each sampled entry in
f64 and compares it within the tolerance documented in docs/PROTOCOL.md.

Exit codes: 0 every stream passes; 1 a stream fails (wrong result, missing sample,
gap rate above policy, MAC/sequence/truncation error, wrong key); 2 could not run.

Examples:
  mmaudit-verify check run.mma --key-file audit.key
  mmaudit-verify check captures/*.mma --key-file audit.key --json report.json")]
pub struct CheckArgs {
    /// Capture files to verify (each one stream).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// The shared audit key: a file holding 64 hex characters.
    #[arg(long, value_name = "KEY")]
    pub key_file: PathBuf,
    /// Also write the report as JSON to this file ("-" for standard output).
    #[arg(long, value_name = "OUT")]
    pub json: Option<PathBuf>,
    /// Fail a stream when more than this fraction of its sampled calls were dropped
    /// (gap records). Accepts 0.01, 1% or 10000ppm.
    #[arg(long, value_name = "RATE", default_value = "0.01", value_parser = parse_fraction)]
    pub max_gap_rate: f64,
    /// Show at most this many failure details per stream.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub max_failures: usize,
}

fn parse_fraction(text: &str) -> Result<f64, String> {
    mmaudit_protocol::config::parse_rate(text).map(|ppm| ppm as f64 / 1e6)
}

/// Why a file could not be checked at all (as opposed to failing the audit).
#[derive(Debug)]
pub enum NotChecked {
    /// The file could not be opened or read.
    Io(std::io::Error),
    /// The file is not an mmaudit capture (or of an unsupported version).
    NotACapture(StreamError),
}

/// Audits one capture read from `input`, feeding it to the stream decoder in chunks.
/// `progress` is called with the bytes consumed so far, about once a second.
pub fn audit_reader(
    name: &str,
    mut input: impl Read,
    key: &Key,
    max_failures: usize,
    mut progress: impl FnMut(u64),
) -> Result<StreamReport, NotChecked> {
    let mut reader = StreamReader::new(key);
    let mut audit = StreamAudit::new(name, key, max_failures);
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    let mut last = Instant::now();
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(NotChecked::Io(e)),
        };
        total += n as u64;
        match reader.push(&buf[..n]) {
            Ok(events) => events.into_iter().for_each(|e| audit.on_event(e)),
            Err(e) => {
                if matches!(
                    e,
                    StreamError::NotACapture { .. } | StreamError::UnsupportedVersion(_)
                ) {
                    return Err(NotChecked::NotACapture(e));
                }
                audit.on_stream_error(&e);
                return Ok(audit.finish());
            }
        }
        if last.elapsed() > Duration::from_secs(1) {
            progress(total);
            last = Instant::now();
        }
    }
    if total == 0 {
        return Err(NotChecked::Io(std::io::Error::other(
            "the file is empty: not an mmaudit capture",
        )));
    }
    match reader.finish() {
        Ok(()) => {}
        Err(e @ StreamError::NotACapture { .. }) => return Err(NotChecked::NotACapture(e)),
        Err(e) => audit.on_stream_error(&e),
    }
    Ok(audit.finish())
}

fn audit_file(path: &Path, key: &Key, args: &CheckArgs) -> Result<StreamReport> {
    let name = path.display().to_string();
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read {name}"))?;
    if meta.is_dir() {
        bail!("{name} is a directory, not a capture file");
    }
    let file = File::open(path).with_context(|| format!("cannot open {name}"))?;
    let size = meta.len();
    let show = std::io::stderr().is_terminal();
    let result = audit_reader(&name, file, key, args.max_failures, |done| {
        if show {
            eprint!(
                "\r  checking {name}: {:.0}% ",
                100.0 * done as f64 / size.max(1) as f64
            );
        }
    });
    if show {
        eprint!("\r\x1b[K");
    }
    match result {
        Ok(mut report) => {
            report.apply_gap_policy(args.max_gap_rate);
            Ok(report)
        }
        Err(NotChecked::Io(e)) => bail!("{name}: {e}"),
        Err(NotChecked::NotACapture(e)) => bail!("{name}: {e}"),
    }
}

/// Runs `check`; Ok(true) when every stream passes.
pub fn run_check(args: &CheckArgs) -> Result<bool> {
    let key = read_key_file(&args.key_file)?;
    let mut reports = Vec::new();
    let mut errors = Vec::new();
    for path in &args.files {
        match audit_file(path, &key, args) {
            Ok(r) => reports.push(r),
            Err(e) => errors.push(e),
        }
    }
    if args.files.len() == 1 {
        if let Some(e) = errors.pop() {
            return Err(e);
        }
    }
    for r in &reports {
        print!("{}", r.to_text());
    }
    let pass = reports.iter().all(StreamReport::passed);
    if reports.len() > 1 {
        let failed = reports.iter().filter(|r| !r.passed()).count();
        println!(
            "{}  {} streams, {} failed",
            if pass { "PASS" } else { "FAIL" },
            reports.len(),
            failed
        );
    }
    if let Some(out) = &args.json {
        let text = serde_json::to_string_pretty(&summary_json(&reports))? + "\n";
        if out.as_os_str() == "-" {
            print!("{text}");
        } else {
            std::fs::write(out, text).with_context(|| format!("cannot write {}", out.display()))?;
        }
    }
    if !errors.is_empty() {
        for e in &errors {
            eprintln!("mmaudit-verify: error: {e:#}");
        }
        bail!(
            "{} of {} files could not be checked",
            errors.len(),
            args.files.len()
        );
    }
    Ok(pass)
}

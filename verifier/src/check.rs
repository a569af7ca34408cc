//! `mmaudit-verify check`: offline verification of capture files.
//!
//! Each file is one stream. A file that is not a capture at all (wrong magic, a
//! directory, unreadable) means the command could not run (exit 2); a capture that
//! fails authentication, is truncated or holds wrong results fails the audit (exit 1).
//! Weights files (`--weights`) are loaded once, before any capture, and shared by the
//! audits of all streams; a weights file that cannot be loaded means exit 2.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use mmaudit_protocol::keys::Key;
use mmaudit_protocol::stream::{
    Authenticated, Event, PayloadDecoder, StreamError, StreamReader, Unit,
};

use crate::audit::StreamAudit;
use crate::keyfile::read_key_file;
use crate::out;
use crate::policy::{Policy, PolicyArgs};
use crate::pool::Pool;
use crate::report::{summary_json, StreamReport};
use crate::weights::{WeightPolicy, WeightRegistry};

/// Options of `mmaudit-verify check`.
#[derive(Args, Debug)]
#[command(after_help = "\
Each FILE is one audit stream (a capture written by libmmaudit.so's file sink, or
saved by `mmaudit-verify serve`), or nats://[LOGIN@]HOST:PORT/SEGMENT, a segment stored
by a fleet (docs/FLEET.md), judged as its exported file is; the fleet's judgements of
the session (nonce issued, unused, fresh; earlier calls received) are in the worker's
report. For every call in the ledger the verifier re-derives
whether it had to be sampled and which entries; it recomputes each sampled entry in
f64 and compares it within the tolerance documented in docs/PROTOCOL.md.

With --weights, the verifier also establishes which weights were used: it maps the
given safetensors files (only their headers are read up front) and matches each
sampled call's op(A) rows and op(B) columns, bit for bit, against every 2-D tensor
(and every matrix of a stacked 3-D tensor) of the right shape and type, in either
orientation (nn.Linear weights reach cuBLAS as op(A) = W). The report lists, per
stream, each tensor used and by how many sampled calls, and counts the sampled calls
neither of whose operands is a held tensor (unmatched). With --require-weights
every unmatched sampled call fails the stream, naming the call and, when a tensor of
its shape differed, the closest one and how many elements differed. Activation-only
GEMMs (attention scores through cuBLAS) have no weight operand and are unmatched too.
Captures saved by `serve` may hold references to the tensors the live verifier held
(instead of their rows): give the same --weights files and they are resolved with the
same tensor ids (sorted by name); without --weights such samples fail.

A prover that loses its TCP connection continues the same stream in a new segment;
give all segments of a stream together: calls that none of the given captures carries
fail the combined verdict (FAIL coverage).

The policy is the auditor's, never the prover's: a stream sampled at rates below
--min-call-rate / --min-row-rate / --min-col-rate / --min-batch-rate (defaults: the
library's default rates) fails (\"sampling below policy\"), and so does a stream in
which more than the --max-* share of calls or FLOPs went unaudited: made during CUDA
graph capture, made with no verifier session, outside the call model, rejected by
the library, sampled but unverifiable, or dropped (gaps). Each share is reported; the
defaults are 1%. Lower the floor or raise a limit only for runs you know.

Each checked entry must lie within the worst-case tolerance (else \"mismatch\") and
within the declared-precision bound: what an honest GPU summing k in contiguous
ranges can produce, D's rounding taken exactly (else \"precision lower than
declared\": fp8 or int8 arithmetic in place of bf16, terms skipped, operands slightly
off). Both are in docs/PROTOCOL.md (\"Tolerance\", \"Declared precision\").

Exit codes: 0 every stream passes; 1 a stream fails (wrong result, precision lower
than declared, missing sample, sampling below policy, unaudited share above policy,
MAC/sequence/truncation error, wrong key, unknown weights with --require-weights); 2
could not run (including a weights file that is missing, not a safetensors file, or
shares a tensor name with another).

Examples:
  mmaudit-verify check run.mma --key-file audit.key
  mmaudit-verify check captures/*.mma --key-file audit.key --json report.json
  mmaudit-verify check run.mma --key-file audit.key --weights model-0000*-of-00004.safetensors --require-weights")]
pub struct CheckArgs {
    /// Capture files to verify (each one stream).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// The shared audit key: a file holding 64 hex characters.
    #[arg(long, value_name = "KEY")]
    pub key_file: PathBuf,
    /// Also write the report as JSON to this file ("-" for standard output, which then
    /// holds the JSON alone: the text report goes to standard error).
    #[arg(long, value_name = "OUT")]
    pub json: Option<PathBuf>,
    /// How the captures are audited.
    #[command(flatten)]
    pub audit: AuditArgs,
}

/// How captures are audited: the options `check` and `report` share.
#[derive(Args, Debug, Clone)]
pub struct AuditArgs {
    /// The audit policy: sampling floor and limits on what was not audited.
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Show at most this many failure details per stream.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub max_failures: usize,
    /// Safetensors files holding the weights the workload should use (every shard of a
    /// model); each sampled call's operands are matched against their tensors. Takes
    /// one or more files; put capture files before it. The files are mapped, not read
    /// whole, and must not change while the check runs.
    #[arg(long, value_name = "FILE", num_args = 1..)]
    pub weights: Vec<PathBuf>,
    /// Fail every sampled call neither of whose operands is a tensor of --weights.
    #[arg(long, requires = "weights")]
    pub require_weights: bool,
    /// Threads that recompute samples and decode frames (default: every core); the
    /// report does not depend on it.
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// The verifier's challenge key (a key file as `keygen` writes, never the audit
    /// key): needed to check commit-mode captures (docs/COMMIT.md), whose challenges
    /// are re-derived from it.
    #[arg(long, value_name = "FILE")]
    pub challenge_key: Option<PathBuf>,
    /// With --challenge-key: the `--state-dir` of the `serve --commit` that graded the
    /// sessions; a capture whose bytes it did not record as a session graded live fails
    /// (so that no capture a prover makes can be graded, only the verifier's own).
    #[arg(long, value_name = "DIR", requires = "challenge_key")]
    pub graded: Option<PathBuf>,
}

/// Why a file could not be checked at all (as opposed to failing the audit).
#[derive(Debug)]
pub enum NotChecked {
    /// The file could not be opened or read.
    Io(std::io::Error),
    /// The file is not an mmaudit capture (or of an unsupported version).
    NotACapture(StreamError),
}

/// Audits one capture read from `input`, feeding it to the stream decoder in chunks,
/// and judges it by `policy`. `progress` is called with the bytes consumed so far,
/// about once a second.
pub fn audit_reader(
    name: &str,
    input: impl Read,
    key: &Key,
    max_failures: usize,
    policy: &Policy,
    progress: impl FnMut(u64),
) -> Result<StreamReport, NotChecked> {
    audit_reader_with(name, input, key, max_failures, policy, None, progress)
}

/// As [`audit_reader`], also judging weight identity against `weights` when given.
/// Samples are checked on every core ([`default_threads`]).
pub fn audit_reader_with(
    name: &str,
    input: impl Read,
    key: &Key,
    max_failures: usize,
    policy: &Policy,
    weights: Option<&WeightPolicy>,
    progress: impl FnMut(u64),
) -> Result<StreamReport, NotChecked> {
    let threads = default_threads();
    audit_reader_threads(
        name,
        input,
        key,
        (max_failures, threads),
        policy,
        weights,
        progress,
    )
}

/// The cores this process may use (1 when that cannot be told).
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// As [`audit_reader_with`], checking samples on `threads` threads (the report does
/// not depend on it).
pub fn audit_reader_threads(
    name: &str,
    input: impl Read,
    key: &Key,
    (max_failures, threads): (usize, usize),
    policy: &Policy,
    weights: Option<&WeightPolicy>,
    progress: impl FnMut(u64),
) -> Result<StreamReport, NotChecked> {
    let mut audit = StreamAudit::new(name, key, max_failures)
        .with_policy(policy.clone())
        .with_threads(threads);
    if let Some(policy) = weights {
        audit = audit.with_weights(policy.clone());
    }
    audit_reader_into(audit, input, key, progress)
}

/// Feeds the capture read from `input` to `audit` (configured by the caller: policy,
/// threads, weights, challenge key) and returns its report. With more than one thread,
/// frames are decompressed and decoded on threads of their own while this one reads,
/// authenticates and audits them in order ([`Pipeline`]); the report is the same.
pub fn audit_reader_into(
    audit: StreamAudit,
    input: impl Read,
    key: &Key,
    progress: impl FnMut(u64),
) -> Result<StreamReport, NotChecked> {
    if audit.threads() > 1 {
        return audit_pipelined(audit, input, key, progress);
    }
    audit_in_turn(audit, input, key, progress)
}

/// [`audit_reader_into`] on one thread: each frame decoded as it is authenticated.
fn audit_in_turn(
    mut audit: StreamAudit,
    input: impl Read,
    key: &Key,
    progress: impl FnMut(u64),
) -> Result<StreamReport, NotChecked> {
    let mut reader = StreamReader::new(key);
    let stopped = read_chunks(input, progress, |chunk| match reader.push(chunk) {
        Ok(events) => {
            events.into_iter().for_each(|e| audit.on_event(e));
            Ok(true)
        }
        Err(e) => {
            not_a_capture(&e)?;
            // Frames authenticated before the failure count, whatever the chunking: a
            // live server reading the same bytes in other pieces sees them too.
            for event in reader.take_events_before_error() {
                audit.on_event(event);
            }
            audit.on_stream_error(&e);
            Ok(false)
        }
    })?;
    if !stopped {
        match reader.finish() {
            Ok(()) => {}
            Err(e) => {
                not_a_capture(&e)?;
                audit.on_stream_error(&e);
            }
        }
    }
    Ok(audit.finish())
}

/// Reads `input` in chunks of 1 MiB and hands each to `feed` until the input ends or
/// `feed` says to stop (false), calling `progress` with the bytes read about once a
/// second. Whether `feed` stopped it; an empty input is an error.
fn read_chunks(
    mut input: impl Read,
    mut progress: impl FnMut(u64),
    mut feed: impl FnMut(&[u8]) -> Result<bool, NotChecked>,
) -> Result<bool, NotChecked> {
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
        if !feed(&buf[..n])? {
            return Ok(true);
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
    Ok(false)
}

/// A reader's error that means the input is no capture at all (for this key), rather
/// than a capture that fails.
fn not_a_capture(e: &StreamError) -> Result<(), NotChecked> {
    match e {
        StreamError::NotACapture { .. } | StreamError::UnsupportedVersion(_) => {
            Err(NotChecked::NotACapture(e.clone()))
        }
        _ => Ok(()),
    }
}

/// Frames decoded ahead of the audit at most, and their declared decompressed bytes
/// (at least one frame, whatever its size).
const DECODE_AHEAD: usize = 16;
const DECODE_AHEAD_BYTES: usize = 256 << 20;

/// [`audit_reader_into`] with frames decoded on other threads.
fn audit_pipelined(
    mut audit: StreamAudit,
    input: impl Read,
    key: &Key,
    progress: impl FnMut(u64),
) -> Result<StreamReport, NotChecked> {
    let mut reader = StreamReader::authenticating(key);
    let mut frames = OrderedFrames::new(
        Pool::new(audit.threads(), decode_frame),
        (DECODE_AHEAD, DECODE_AHEAD_BYTES),
    );
    let mut done = false;
    // Hands the audit the frames that are back, waiting while too many are ahead (with
    // `all`, every frame): false once the stream's error went to it.
    let apply = |audit: &mut StreamAudit, frames: &mut OrderedFrames, all: bool| loop {
        let wait = all || frames.full();
        match frames.next(wait) {
            None => return true,
            Some(Ok(event)) => audit.on_event(event),
            Some(Err(e)) => {
                audit.on_stream_error(&e);
                return false;
            }
        }
    };
    let stopped = read_chunks(input, progress, |chunk| {
        let (units, error) = match reader.push_units(chunk) {
            Ok(units) => (units, None),
            Err(e) => {
                not_a_capture(&e)?;
                (reader.take_units_before_error(), Some(e))
            }
        };
        for unit in units {
            match unit {
                // the header: before any frame
                Unit::Event(event) => audit.on_event(event),
                Unit::Frame(frame) => {
                    frames.push(frame);
                    done = done || !apply(&mut audit, &mut frames, false);
                }
            }
        }
        if let Some(e) = error {
            done = done || !apply(&mut audit, &mut frames, true);
            if !done {
                if let Some(e) = frames.after(Some(e), reader.bytes_received()) {
                    audit.on_stream_error(&e);
                }
                done = true;
            }
        }
        // once the audit has its error, reading on could only fail otherwise
        Ok(!done)
    })?;
    if !stopped && apply(&mut audit, &mut frames, true) {
        let end = match frames.ended_at() {
            Some(_) => Ok(()),
            // (an authenticating reader never sees the End record itself: never Ok)
            None => reader.finish(),
        };
        match end {
            Err(e) => {
                not_a_capture(&e)?;
                audit.on_stream_error(&e);
            }
            Ok(()) => {
                if let Some(e) = frames.after(None, reader.bytes_received()) {
                    audit.on_stream_error(&e);
                }
            }
        }
    }
    Ok(audit.finish())
}

/// A decoded frame: where it ends in the stream, and its event and whether it holds the
/// End record, or the error that stops the stream there.
pub type Decoded = (u64, Result<(Event, bool), StreamError>);

/// Decodes an authenticated frame (on a pool's thread, with that thread's zstd context).
pub fn decode_frame(frame: Authenticated) -> Decoded {
    thread_local! {
        static DECODER: RefCell<PayloadDecoder> = const { RefCell::new(PayloadDecoder::new()) };
    }
    let decoded = DECODER.with(|d| frame.decode(&mut d.borrow_mut()));
    (frame.end(), decoded)
}

/// Authenticated frames decoded on a pool and handed back in stream order, as the
/// reader of [`audit_in_turn`] decodes them: up to the first frame that does not decode,
/// and after the frame holding the End record nothing but [`StreamError::AfterEnd`] at
/// its end. `check` and each connection of `serve` use one.
pub struct OrderedFrames {
    pool: Pool<Authenticated, Decoded>,
    /// frames waiting for room on the pool
    waiting: VecDeque<Authenticated>,
    /// declared decompressed bytes of each frame on the pool, in order
    ahead: VecDeque<usize>,
    /// frames and declared decompressed bytes on the pool at most (one frame always)
    limit: (usize, usize),
    /// where the frame holding the End record ends, once handed back
    ended_at: Option<u64>,
    /// the stream's error was handed back: nothing more is
    stopped: bool,
}

impl OrderedFrames {
    /// Frames decoded on `pool`, at most `limit` (frames, declared decompressed bytes)
    /// at a time.
    pub fn new(pool: Pool<Authenticated, Decoded>, limit: (usize, usize)) -> Self {
        OrderedFrames {
            pool,
            waiting: VecDeque::new(),
            ahead: VecDeque::new(),
            limit,
            ended_at: None,
            stopped: false,
        }
    }

    /// The next frame the reader authenticated.
    pub fn push(&mut self, frame: Authenticated) {
        self.waiting.push_back(frame);
        self.submit();
    }

    fn submit(&mut self) {
        while let Some(frame) = self.waiting.front() {
            let bytes = self.ahead.iter().sum::<usize>() + frame.raw_len();
            if !self.ahead.is_empty() && (self.ahead.len() >= self.limit.0 || bytes > self.limit.1)
            {
                return;
            }
            if let Some(frame) = self.waiting.pop_front() {
                self.ahead.push_back(frame.raw_len());
                self.pool.submit(frame);
            }
        }
    }

    /// The next frame in stream order (with `wait`, waiting for it): its event, or the
    /// error that stops the stream there (once); `None` when none is ready or pending.
    pub fn next(&mut self, wait: bool) -> Option<Result<Event, StreamError>> {
        loop {
            let (end, decoded) = self.pool.next(wait)?;
            self.ahead.pop_front();
            self.submit();
            if self.stopped {
                continue;
            }
            if let Some(at) = self.ended_at {
                self.stopped = true;
                return Some(Err(StreamError::AfterEnd { offset: at }));
            }
            return Some(match decoded {
                Ok((event, ended)) => {
                    if ended {
                        self.ended_at = Some(end);
                    }
                    Ok(event)
                }
                Err(e) => {
                    self.stopped = true;
                    Err(e)
                }
            });
        }
    }

    /// Frames waiting or being decoded.
    pub fn pending(&self) -> usize {
        self.waiting.len() + self.ahead.len()
    }

    /// Frames are waiting for room: the caller should wait for the oldest.
    pub fn full(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Where the frame holding the End record ends, once handed back.
    pub fn ended_at(&self) -> Option<u64> {
        self.ended_at
    }

    /// Once every frame is back and none stopped the stream: the error it ends with,
    /// given the reader's own (`None`: the input ended) and the bytes it received. After
    /// an End record any byte more, or any reader error, is [`StreamError::AfterEnd`].
    pub fn after(&self, reader: Option<StreamError>, received: u64) -> Option<StreamError> {
        match self.ended_at {
            Some(at) if reader.is_some() || received > at => {
                Some(StreamError::AfterEnd { offset: at })
            }
            Some(_) => None,
            None => reader,
        }
    }
}

fn audit_file(
    path: &Path,
    key: &Key,
    args: &CheckArgs,
    weights: Option<&WeightPolicy>,
    challenge_key: Option<[u8; 32]>,
) -> Result<StreamReport> {
    let name = path.display().to_string();
    if name.starts_with("nats://") {
        return audit_stored(&name, key, args, weights, challenge_key);
    }
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read {name}"))?;
    if meta.is_dir() {
        bail!("{name} is a directory, not a capture file");
    }
    let file = File::open(path).with_context(|| format!("cannot open {name}"))?;
    let size = meta.len();
    let show = std::io::stderr().is_terminal();
    let mut audit = configured_audit(&name, key, args, weights, challenge_key);
    if let Some(dir) = &args.audit.graded {
        let mut hasher = blake3::Hasher::new();
        hasher
            .update_reader(File::open(path).with_context(|| format!("cannot open {name}"))?)
            .with_context(|| format!("cannot read {name}"))?;
        let nonce = crate::serve::graded_nonce(dir, hasher.finalize().as_bytes())
            .with_context(|| format!("cannot read --graded {}", dir.display()))?;
        audit = audit.requiring_graded(nonce);
    }
    let result = audit_reader_into(audit, file, key, |done| {
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
        Ok(report) => Ok(report),
        Err(NotChecked::Io(e)) => bail!("{name}: {e}"),
        Err(NotChecked::NotACapture(e)) => bail!("{name}: {e}"),
    }
}

/// The audit of one capture as `args` configure it.
fn configured_audit(
    name: &str,
    key: &Key,
    args: &CheckArgs,
    weights: Option<&WeightPolicy>,
    challenge_key: Option<[u8; 32]>,
) -> StreamAudit {
    let threads = args.audit.threads.unwrap_or_else(default_threads);
    let mut audit = StreamAudit::new(name, key, args.audit.max_failures)
        .with_policy(args.audit.policy.policy())
        .with_threads(threads);
    if let Some(w) = weights {
        audit = audit.with_weights(w.clone());
    }
    if let Some(c) = challenge_key {
        audit = audit.with_challenge_key(c);
    }
    audit
}

/// Audits a segment stored on a fleet's NATS server (`nats://HOST:PORT/SEGMENT`), read
/// as stored now: the report `check` gives for the file `export` writes of it.
fn audit_stored(
    name: &str,
    key: &Key,
    args: &CheckArgs,
    weights: Option<&WeightPolicy>,
    challenge_key: Option<[u8; 32]>,
) -> Result<StreamReport> {
    if args.audit.graded.is_some() {
        bail!(
            "{name}: --graded applies to capture files of `serve --commit`, not to stored segments"
        );
    }
    let (url, segment) = crate::fleet::parse_segment_url(name)?;
    // Reports and errors name the address without its credentials.
    let name = &crate::fleet::redact(name);
    let audit = configured_audit(name, key, args, weights, challenge_key);
    let (reader, reading) = crate::fleet::store::open_stored(&url, &segment);
    let result = audit_reader_into(audit, reader, key, |_| {});
    reading
        .join()
        .map_err(|_| anyhow::anyhow!("{name}: the reading thread failed"))?
        .with_context(|| name.to_string())?;
    match result {
        Ok(report) => Ok(report),
        Err(NotChecked::Io(e)) => bail!("{name}: {e}"),
        Err(NotChecked::NotACapture(e)) => bail!("{name}: {e}"),
    }
}

/// Reads `--challenge-key`: the challenge subkey of a key file that must not be the
/// audit key (a prover holding the challenge key could predict every challenge).
pub fn read_challenge_key(path: Option<&Path>, audit: &Key) -> Result<Option<[u8; 32]>> {
    let Some(path) = path else {
        return Ok(None);
    };
    let key = read_key_file(path)?;
    if key.id() == audit.id() {
        bail!(
            "--challenge-key {} is the audit key: the prover holds that key, so it could predict every challenge; make a key only the verifier holds with `mmaudit-verify keygen`",
            path.display()
        );
    }
    Ok(Some(key.challenge_key()))
}

/// Loads `--weights` and prints what was indexed; None without `--weights`.
fn load_weights(args: &CheckArgs) -> Result<Option<WeightPolicy>> {
    load_weight_policy(
        &args.audit.weights,
        args.audit.require_weights,
        text_output(args),
    )
}

/// Loads weights files (`--weights`, shared by `check` and `serve`) and prints what was
/// indexed; None without files.
pub fn load_weight_policy(
    files: &[PathBuf],
    required: bool,
    to: out::To,
) -> Result<Option<WeightPolicy>> {
    if files.is_empty() {
        if required {
            bail!("--require-weights needs --weights FILE.safetensors");
        }
        return Ok(None);
    }
    let start = Instant::now();
    let registry = WeightRegistry::load(files)?;
    out::write(
        to,
        &format!(
            "weights  {} tensors ({:.1} MiB) indexed from {} file{} in {:.1} ms{}\n",
            registry.len(),
            registry.indexed_bytes() as f64 / (1u64 << 20) as f64,
            files.len(),
            if files.len() == 1 { "" } else { "s" },
            start.elapsed().as_secs_f64() * 1e3,
            if required { ", required" } else { "" }
        ),
    );
    for note in registry.notes() {
        out::write(to, &format!("  note: {note}\n"));
    }
    Ok(Some(WeightPolicy {
        registry: Arc::new(registry),
        required,
    }))
}

/// Where the text report goes: standard error when the JSON report takes standard
/// output (`--json -`), so that standard output is JSON only.
fn text_output(args: &CheckArgs) -> out::To {
    if args.json.as_deref().is_some_and(|p| p.as_os_str() == "-") {
        out::To::Stderr
    } else {
        out::To::Stdout
    }
}

/// Runs `check`; Ok(true) when every stream passes.
pub fn run_check(args: &CheckArgs) -> Result<bool> {
    let (pass, summary) = check_files(args)?;
    if let Some(json_path) = &args.json {
        let text = serde_json::to_string_pretty(&summary)? + "\n";
        if json_path.as_os_str() == "-" {
            out::stdout(&text);
        } else {
            std::fs::write(json_path, text)
                .with_context(|| format!("cannot write {}", json_path.display()))?;
        }
    }
    Ok(pass)
}

/// Checks the captures of `args`, writes the text report, and returns the verdict and
/// the JSON report. A file that could not be checked is an error, after the report of
/// the others.
fn check_files(args: &CheckArgs) -> Result<(bool, serde_json::Value)> {
    if args.audit.threads == Some(0) {
        bail!("--threads must be at least 1");
    }
    let key = read_key_file(&args.key_file)?;
    let challenge_key = read_challenge_key(args.audit.challenge_key.as_deref(), &key)?;
    let weights = load_weights(args)?;
    let mut reports = Vec::new();
    let mut errors = Vec::new();
    for path in &args.files {
        match audit_file(path, &key, args, weights.as_ref(), challenge_key) {
            Ok(r) => reports.push(r),
            Err(e) => errors.push(e),
        }
    }
    if args.files.len() == 1 {
        if let Some(e) = errors.pop() {
            return Err(e);
        }
    }
    let to = text_output(args);
    for r in &reports {
        out::write(to, &r.to_text());
    }
    let holes = coverage_holes(&reports);
    for h in &holes {
        out::write(to, &format!("FAIL coverage: {h}\n"));
    }
    let pass = reports.iter().all(StreamReport::passed) && holes.is_empty();
    if reports.len() > 1 {
        let failed = reports.iter().filter(|r| !r.passed()).count();
        out::write(
            to,
            &format!(
                "{}  {} streams, {} failed\n",
                if pass { "PASS" } else { "FAIL" },
                reports.len(),
                failed
            ),
        );
    }
    let mut summary = summary_json(&reports);
    // Present only when segments are missing, so that the report of a complete
    // stream is the same as `serve` writes for it.
    if !holes.is_empty() {
        summary["coverage_holes"] = serde_json::json!(holes);
        summary["verdict"] = serde_json::json!("fail");
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
    Ok((pass, summary))
}

/// Options of `mmaudit-verify report`.
#[derive(Args, Debug)]
#[command(after_help = "\
INPUT is either one JSON report (written by `check --json` or `serve --json-dir`) or
capture files, which are first checked exactly as `check` does (the same options, the
same text report); with captures --key-file is required.

The page holds, per stream: the verdict and its failures (kind, call, shape and
entry); where every call went (verified, failed, unchecked, not audited by reason,
graph capture records, not sampled) with the policy's limits; calls and FLOPs along
the stream (the ledger has no clock: the axis is the call index); per combination of
types a histogram of |claimed - recomputed| / tolerance over the checked entries; the
weights used, with --weights. It is one file with inline CSS and SVG: no script, and
nothing is fetched, so it can be mailed or archived. Every string that came from the
audited program (host name, notices) is escaped.

Exit codes: 0 every stream passes, 1 a stream fails (the page is written either way),
2 could not run (unreadable input, not a report, no --key-file for a capture).

Examples:
  mmaudit-verify report run.mma --key-file audit.key --html run.html
  mmaudit-verify check captures/*.mma --key-file audit.key --json report.json
  mmaudit-verify report report.json --html report.html")]
pub struct ReportArgs {
    /// One JSON report, or capture files to check.
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
    /// Write the HTML page to this file ("-" for standard output).
    #[arg(long, value_name = "OUT.html")]
    pub html: PathBuf,
    /// The shared audit key (needed for captures, not for a JSON report).
    #[arg(long, value_name = "KEY")]
    pub key_file: Option<PathBuf>,
    /// How captures are audited (ignored for a JSON report).
    #[command(flatten)]
    pub audit: AuditArgs,
}

/// Most bytes of a JSON report read from a pipe.
const MAX_PIPED_REPORT: u64 = 256 << 20;

/// True when `head` starts, after an optional UTF-8 byte-order mark and white space,
/// with "{" or "[": JSON rather than a capture, whose first byte is its magic's.
fn looks_like_json(head: &[u8]) -> bool {
    without_bom(head)
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'{' || b == b'[')
}

/// `text` without its UTF-8 byte-order mark, if it starts with one.
fn without_bom(text: &[u8]) -> &[u8] {
    text.strip_prefix(b"\xef\xbb\xbf").unwrap_or(text)
}

/// One input of `report`: a JSON report (read whole), or a capture file (checked
/// later by path).
enum ReportInput {
    Json(Vec<u8>),
    Capture,
}

/// Tells a JSON report from a capture. A regular file is peeked at; anything else (a
/// pipe, /dev/stdin) can be read only once, so it is read whole and must be JSON.
fn report_input(path: &Path) -> Result<ReportInput> {
    let name = path.display();
    let meta = std::fs::metadata(path).with_context(|| format!("cannot open {name}"))?;
    if meta.is_dir() {
        bail!("{name} is a directory, not a report or a capture");
    }
    let file = File::open(path).with_context(|| format!("cannot open {name}"))?;
    if !meta.is_file() {
        let mut bytes = Vec::new();
        file.take(MAX_PIPED_REPORT + 1)
            .read_to_end(&mut bytes)
            .with_context(|| format!("cannot read {name}"))?;
        if bytes.len() as u64 > MAX_PIPED_REPORT || !looks_like_json(&bytes) {
            bail!(
                "{name} is not a regular file: `report` reads a JSON report (at most 256 MiB) \
                 from a pipe, a capture only from a file (`check` reads captures from pipes)"
            );
        }
        return Ok(ReportInput::Json(bytes));
    }
    let mut head = Vec::new();
    (&file)
        .take(4096)
        .read_to_end(&mut head)
        .with_context(|| format!("cannot read {name}"))?;
    if !looks_like_json(&head) {
        return Ok(ReportInput::Capture);
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {name}"))?;
    Ok(ReportInput::Json(bytes))
}

/// Runs `report`; Ok(true) when every stream passes.
pub fn run_report(args: &ReportArgs) -> Result<bool> {
    let mut json = Vec::new();
    for path in &args.inputs {
        if let ReportInput::Json(bytes) = report_input(path)? {
            json.push((path, bytes));
        }
    }
    let (pass, summary, source) = match &json[..] {
        [] => {
            let Some(key_file) = &args.key_file else {
                bail!("checking captures needs --key-file (or give a JSON report of them)");
            };
            let check = CheckArgs {
                files: args.inputs.clone(),
                key_file: key_file.clone(),
                json: None,
                audit: args.audit.clone(),
            };
            // The page is the report: the text goes to standard error when the page
            // takes standard output.
            let (pass, summary) = if args.html.as_os_str() == "-" {
                check_files(&CheckArgs {
                    json: Some("-".into()),
                    ..check
                })?
            } else {
                check_files(&check)?
            };
            let names: Vec<String> = args.inputs.iter().map(|p| p.display().to_string()).collect();
            (pass, summary, names.join(", "))
        }
        [(path, bytes)] if args.inputs.len() == 1 => {
            let summary: serde_json::Value = serde_json::from_slice(without_bom(bytes))
                .with_context(|| format!("{} is not valid JSON", path.display()))?;
            // The JSON is not authenticated: PASS only where all of it says so.
            (true, summary, path.display().to_string())
        }
        _ => bail!(
            "give one JSON report, or capture files, not both nor several reports ({} of the {} inputs are JSON)",
            json.len(),
            args.inputs.len()
        ),
    };
    let pass = pass && crate::html::passed(&summary);
    let page = crate::html::render(&summary, &source)?;
    if args.html.as_os_str() == "-" {
        out::stdout(&page);
    } else {
        std::fs::write(&args.html, page)
            .with_context(|| format!("cannot write {}", args.html.display()))?;
        out::stdout(&format!(
            "{}: HTML report written to {}\n",
            if pass { "PASS" } else { "FAIL" },
            args.html.display()
        ));
    }
    Ok(pass)
}

/// Calls of a stream that none of the given captures carries. A prover that loses its
/// connection starts a new segment of the same stream (same stream id) whose ledger
/// starts at `first_index`; the segments given together must cover every call from 0
/// without overlap. Each segment's own report is judged on what it carries; a hole
/// fails the combined verdict (as `serve` fails a segment whose earlier calls no
/// verifier received: `serve::continuity`).
pub fn coverage_holes(reports: &[StreamReport]) -> Vec<String> {
    let mut streams: std::collections::BTreeMap<u64, Vec<(u32, u64, u64, &str)>> =
        std::collections::BTreeMap::new();
    for r in reports {
        if let Some(h) = &r.header {
            streams.entry(h.stream_id).or_default().push((
                h.segment,
                h.first_index,
                r.calls,
                &r.name,
            ));
        }
    }
    let mut holes = Vec::new();
    for (id, mut segments) in streams {
        segments.sort();
        let mut next = 0u64;
        for (segment, first, calls, name) in segments {
            if first > next {
                holes.push(format!(
                    "stream {id:016x}: calls {next}..{} are in none of the given captures \
                     (segment {segment}, {name}, starts at call {first})",
                    first - 1
                ));
            } else if first < next {
                holes.push(format!(
                    "stream {id:016x}: segment {segment} ({name}) starts at call {first}, \
                     inside calls already carried (up to {})",
                    next - 1
                ));
            }
            next = next.max(first.saturating_add(calls));
        }
    }
    holes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(id: u64, segment: u32, first: u64, calls: u64) -> StreamReport {
        let mut header = mmaudit_protocol::fuzzing::seed_header();
        header.stream_id = id;
        header.segment = segment;
        header.first_index = first;
        let mut r = StreamReport::new(&format!("s{segment}"));
        r.header = Some(header);
        r.calls = calls;
        r
    }

    #[test]
    fn segments_must_cover_every_call_from_zero() {
        assert!(coverage_holes(&[segment(1, 0, 0, 10), segment(1, 1, 10, 5)]).is_empty());
        // order of the files does not matter; streams are separate
        assert!(coverage_holes(&[
            segment(2, 0, 0, 3),
            segment(1, 1, 10, 5),
            segment(1, 0, 0, 10)
        ])
        .is_empty());
        let holes = coverage_holes(&[segment(1, 0, 0, 8), segment(1, 1, 10, 5)]);
        assert_eq!(holes.len(), 1);
        assert!(holes[0].contains("calls 8..9"), "{holes:?}");
        let lone = coverage_holes(&[segment(1, 1, 8, 29)]);
        assert!(lone[0].contains("calls 0..7"), "{lone:?}");
        let overlap = coverage_holes(&[segment(1, 0, 0, 10), segment(1, 1, 7, 5)]);
        assert!(
            overlap[0].contains("inside calls already carried"),
            "{overlap:?}"
        );
    }
}

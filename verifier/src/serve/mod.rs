//! `mmaudit-verify serve`: the live verifier.
//!
//! One mio event loop on one thread accepts prover connections, sends each the
//! verifier's hello (session nonce, the session's sampling configuration, table of held
//! weights) and audits the stream that comes back as it arrives, with the same
//! [`crate::audit::StreamAudit`] that `check` runs on files. Every received byte of a
//! stream is copied to the capture directory, so that `check` on the capture gives the
//! verdict the server gave.
//!
//! Draining readiness (mio's rule): a readable or writable event marks the connection
//! ready; a ready connection is served a turn (at most [`TURN`] of work: writing the
//! hello, auditing decoded records, reading) until its socket would block, and put back
//! in the ready queue when its turn ended with work left, so that one busy or hostile
//! peer never starves the others. Bytes per connection are bounded (a partial frame, one
//! read, the records of the frames just decoded), connections are bounded
//! (`--max-connections`), and a peer that sends nothing for `--idle-timeout`, or no
//! stream header within `--handshake-timeout`, is closed. Garbage closes only its own
//! connection, with a logged reason.
//!
//! Memory: before its stream header is authenticated (only a holder of the key can
//! write one) a connection holds at most the header (64 KiB) and one read (256 KiB);
//! after, a partial frame (at most `--conn-buffer-mb`, 17 MiB) and the records of the
//! frames just decoded (at most 64 MiB for one frame, released as they are audited).
//!
//! What it must never do: block on one peer, panic on a peer's bytes, or let a peer's
//! stream change another stream's verdict.

pub mod capture;
pub mod conn;
pub mod continuity;
pub mod metrics;
pub mod view;

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use mmaudit_protocol::config::SamplingConfig;
use mmaudit_protocol::handshake::ServerHello;
use mmaudit_protocol::keys::Key;

use crate::keyfile::read_key_file;
use crate::policy::{Policy, PolicyArgs};
use crate::pool::Workers;
use crate::report::{summary_json, StreamReport};
use crate::weights::WeightPolicy;
use capture::create_new;
use conn::{Conn, ConnConfig, HelloOut, Step};
use continuity::Continuity;
use metrics::{Counters, MetricsConn};
use view::{Row, View, ViewMode};

/// Work one connection may do in one turn before the others are served.
pub const TURN: Duration = Duration::from_millis(10);
/// Bytes read from a socket at once.
const READ_CHUNK: usize = 256 << 10;
/// Default per-connection buffer: the largest frame (16 MiB payload, head and MAC).
pub const DEFAULT_CONN_BUFFER: usize = 17 << 20;
/// A metrics client is closed after this long.
const METRICS_TIMEOUT: Duration = Duration::from_secs(5);
/// Most metrics clients at once.
const MAX_METRICS_CLIENTS: usize = 16;

const LISTENER: Token = Token(0);
const SIGNALS: Token = Token(1);
const METRICS: Token = Token(2);
const WAKER: Token = Token(3);
const FIRST_PEER: usize = 16;

/// The weights a live verifier holds (`serve`, `worker`): offered in the hello and
/// matched against the samples.
#[derive(Args, Debug, Clone)]
pub struct HeldWeightsArgs {
    /// Safetensors files of the weights the workload should use; offered to provers in
    /// the hello (they may then send references) and matched as by `check --weights`.
    #[arg(long, value_name = "FILE", num_args = 1..)]
    pub weights: Vec<PathBuf>,
    /// Fail every sampled call neither of whose operands is a tensor of --weights.
    #[arg(long, requires = "weights")]
    pub require_weights: bool,
}

/// Options of `mmaudit-verify serve`.
#[derive(Args, Debug)]
#[command(after_help = "\
Provers connect over TCP (libmmaudit.so with MMAUDIT_SINK=tcp://HOST:PORT). For each
connection the verifier sends its hello first: a fresh session nonce, which the
prover's stream must use (so no sampling plan can be computed before the session
starts), the session's sampling rates (the policy's floor, --min-call-rate etc.:
libmmaudit.so samples with these, not with its own MMAUDIT_*_RATE), and, with
--weights, a table of the tensors it holds (ids, shapes and keyed fingerprints of
their rows), so that a prover can send a reference instead of the rows of an operand
the verifier holds. The verifier recomputes from its own copy: a wrong reference
fails. Each stream is then verified as it arrives, with the checks of `check`.

With --capture-dir every received stream is written there verbatim as
<stream id>-<segment>-<peer address>-<port>.mma; `check` on that file (with the same
--weights) gives the same verdict. With --json-dir each stream's report is written
there when it ends, as JSON with the keys of `check --json`. Each stream's report is
printed on stdout when it ends. Open streams are shown on stderr (redrawn in place on
a terminal). --metrics serves Prometheus counters on HTTP (GET /metrics).

A prover that loses its connection reconnects and sends the next segment of the same
stream, starting at the first call it did not write. A segment fails if calls before
it were received by no verifier (\"calls seen by no verifier\", listed in its report):
an earlier segment was cut before they were read, or never reached this verifier.
With --state-dir the calls each stream's segments delivered are kept there, so a
restarted verifier credits what its predecessor received; without it only this
process's streams are known.

A connection that sends bytes that are not a stream for this key before a valid
header is closed and counted as rejected (no report). A stream that does not carry
this session's nonce fails (\"schedule nonce not issued by this verifier\").

SIGINT or SIGTERM: stop accepting, close open streams (reported as truncated unless
complete), write their reports, exit. Exit codes: 0 every finished stream passed,
1 a stream failed, 2 could not run.

Examples:
  mmaudit-verify serve --listen 0.0.0.0:7150 --key-file audit.key --capture-dir captures --state-dir state
  mmaudit-verify serve --listen 0.0.0.0:7150 --key-file audit.key --weights model-*.safetensors --json-dir reports --metrics 127.0.0.1:9150")]
pub struct ServeArgs {
    /// Address to listen on, e.g. 0.0.0.0:7150 (port 0: any free port, printed).
    #[arg(long, value_name = "ADDR")]
    pub listen: String,
    /// The shared audit key: a file holding 64 hex characters.
    #[arg(long, value_name = "KEY")]
    pub key_file: PathBuf,
    /// The weights the verifier holds.
    #[command(flatten)]
    pub held: HeldWeightsArgs,
    /// Write every received stream verbatim into this directory (created if missing).
    #[arg(long, value_name = "DIR")]
    pub capture_dir: Option<PathBuf>,
    /// Write each stream's JSON report into this directory when it ends.
    #[arg(long, value_name = "DIR")]
    pub json_dir: Option<PathBuf>,
    /// Keep, per stream, which calls were received in this directory (created if
    /// missing), so that a restarted verifier knows which calls of a later segment's
    /// stream no verifier saw. Without it only this process's streams are known.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Serve Prometheus text counters on HTTP at this address.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// Most prover connections open at once; more are closed at once (rejected).
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub max_connections: usize,
    /// Close a connection that sends nothing for this many seconds (its stream is
    /// truncated).
    #[arg(long, value_name = "SECS", default_value_t = 60.0)]
    pub idle_timeout: f64,
    /// Close a connection that has not sent a valid stream header after this many
    /// seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub handshake_timeout: f64,
    /// Largest partial frame buffered per connection, in MiB (at most 17, the largest
    /// frame); a larger frame closes its connection.
    #[arg(long, value_name = "MIB", default_value_t = 17)]
    pub conn_buffer_mb: usize,
    /// The audit policy: the sampling rates the hello asks for (and the floor a stream
    /// must meet), and the limits on what was not audited.
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Keep at most this many failure details per stream.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub max_failures: usize,
    /// Threads that recompute the samples of every connection (default: every core);
    /// the reports do not depend on it.
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// How open streams are shown on stderr.
    #[arg(long, value_enum, default_value = "auto")]
    pub view: ViewMode,
    /// Commit mode (docs/COMMIT.md): the hello asks every prover to commit to each call
    /// before it is challenged, and challenges go back on the connection, drawn with
    /// the key of --challenge-key. A stream that is not a commit-mode stream fails.
    #[arg(long, requires = "challenge_key")]
    pub commit: bool,
    /// With --commit: a key file only the verifier holds (never the audit key), whose
    /// challenge subkey draws the challenges; `check --challenge-key` with the same
    /// file re-checks the captures.
    #[arg(long, value_name = "FILE", requires = "commit")]
    pub challenge_key: Option<PathBuf>,
}

/// What [`Server::bind`] needs.
pub struct ServeOptions {
    /// where to listen
    pub listen: SocketAddr,
    /// the audit key
    pub key: Key,
    /// held weights
    pub weights: Option<WeightPolicy>,
    /// capture directory (must exist)
    pub capture_dir: Option<PathBuf>,
    /// JSON report directory (must exist)
    pub json_dir: Option<PathBuf>,
    /// stream continuity state directory (must exist)
    pub state_dir: Option<PathBuf>,
    /// metrics address
    pub metrics: Option<SocketAddr>,
    /// most prover connections
    pub max_connections: usize,
    /// idle timeout
    pub idle_timeout: Duration,
    /// time allowed until a valid stream header
    pub handshake_timeout: Duration,
    /// per-connection partial-frame limit, bytes
    pub conn_buffer: usize,
    /// the audit policy every stream is judged by
    pub policy: Policy,
    /// The sampling configuration every hello carries: the rates a live prover samples
    /// its session with and writes into its stream header. Default
    /// [`SamplingConfig::default`] (the default policy's floor); `run_serve` sets it to
    /// the policy's floor. Must be valid ([`SamplingConfig::validate`]).
    pub sampling: SamplingConfig,
    /// failure details kept per stream
    pub max_failures: usize,
    /// threads that recompute samples, shared by every connection (1: each
    /// connection's samples on the event loop's thread)
    pub threads: usize,
    /// stderr view
    pub view: ViewMode,
    /// print each final report on stdout
    pub print_reports: bool,
    /// no log lines on stderr (library use)
    pub quiet: bool,
    /// Commit mode: the verifier's challenge key (docs/COMMIT.md); None: sampling mode.
    pub challenge_key: Option<[u8; 32]>,
    /// Every connection gets this nonce instead of a random one. For benchmarks that
    /// replay prepared streams only: it lets streams be computed before the session.
    #[doc(hidden)]
    pub fixed_nonce: Option<[u8; 16]>,
}

impl ServeOptions {
    /// Defaults for everything but the address and key (quiet: no stderr output, no
    /// reports on stdout).
    pub fn new(listen: SocketAddr, key: Key) -> Self {
        ServeOptions {
            listen,
            key,
            weights: None,
            capture_dir: None,
            json_dir: None,
            state_dir: None,
            metrics: None,
            max_connections: 256,
            idle_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            conn_buffer: DEFAULT_CONN_BUFFER,
            policy: Policy::default(),
            sampling: SamplingConfig::default(),
            max_failures: 20,
            threads: crate::check::default_threads(),
            view: ViewMode::Off,
            print_reports: false,
            quiet: true,
            challenge_key: None,
            fixed_nonce: None,
        }
    }
}

/// Stops a running server from another thread (as SIGTERM does).
#[derive(Clone)]
pub struct Stopper {
    flag: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl Stopper {
    /// Asks the server to stop: no new connections, open streams closed and reported.
    pub fn stop(&self) {
        self.flag.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
    }
}

/// What a server did, when it stops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServeSummary {
    /// streams finished (including those closed at shutdown)
    pub streams: u64,
    /// of which passed
    pub passed: u64,
    /// of which failed
    pub failed: u64,
    /// connections that carried no stream
    pub rejected: u64,
    /// bytes received
    pub bytes: u64,
}

enum Peer {
    Prover(Box<Conn>),
    Metrics(MetricsConn),
}

/// The live verifier. See the module documentation.
pub struct Server {
    poll: Poll,
    listener: Option<TcpListener>,
    local: SocketAddr,
    metrics: Option<TcpListener>,
    metrics_addr: Option<SocketAddr>,
    signals: Option<mio::net::UnixStream>,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    opts: ServeOptions,
    hello: Arc<[u8]>,
    held: usize,
    peers: HashMap<Token, Peer>,
    next_token: usize,
    ready: VecDeque<Token>,
    /// counters of finished streams and closed connections
    done: Counters,
    summary: ServeSummary,
    view: View,
    urandom: File,
    buf: Vec<u8>,
    too_many: (Option<Instant>, u64),
    /// accept() failed for want of a resource (descriptors, memory): connections may
    /// be waiting that no new readiness event will announce, so accept again then.
    accept_retry_at: Option<Instant>,
    /// which calls of each stream were received
    continuity: Continuity,
    /// the threads recomputing every connection's samples and decoding its frames
    /// (none with one thread)
    workers: Option<Arc<Workers>>,
    /// connections one of whose frames those threads decoded since the event loop last
    /// looked (the threads wake it)
    decoded: Arc<Mutex<Vec<Token>>>,
}

fn log_err(view: &mut View, lines: &mut Vec<String>) {
    for l in lines.drain(..) {
        view.log(&l);
    }
}

impl Server {
    /// Listens, encodes the hello (with `opts.sampling`; every held tensor is
    /// fingerprinted once) and prepares the event loop.
    pub fn bind(opts: ServeOptions) -> Result<Server> {
        let workers = (opts.threads > 1).then(|| Workers::new(opts.threads));
        let poll = Poll::new().context("cannot create the event loop")?;
        let mut listener = TcpListener::bind(opts.listen)
            .with_context(|| format!("cannot listen on {}", opts.listen))?;
        let local = listener.local_addr()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let (mut metrics, mut metrics_addr) = (None, None);
        if let Some(addr) = opts.metrics {
            let mut l = TcpListener::bind(addr)
                .with_context(|| format!("cannot listen for metrics on {addr}"))?;
            metrics_addr = Some(l.local_addr()?);
            poll.registry()
                .register(&mut l, METRICS, Interest::READABLE)?;
            metrics = Some(l);
        }
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let tensors = match &opts.weights {
            Some(policy) => {
                let threads = crate::check::default_threads();
                policy.registry.hello_tensors(&opts.key, threads)?
            }
            None => Vec::new(),
        };
        let held = tensors.len();
        // The hello sets the session's rates: the library samples a live session with
        // them, whatever its own environment says.
        let hello = ServerHello {
            key_id: opts.key.id(),
            nonce: [0; 16],
            sampling: opts.sampling,
            tensors,
            mode: if opts.challenge_key.is_some() {
                mmaudit_protocol::handshake::HelloMode::Commit
            } else {
                mmaudit_protocol::handshake::HelloMode::Sampling
            },
        }
        .encode(&opts.key)?;
        let urandom = File::open("/dev/urandom").context("cannot open /dev/urandom")?;
        let view = View::new(opts.view, opts.quiet);
        let continuity = Continuity::new(opts.state_dir.clone());
        Ok(Server {
            poll,
            listener: Some(listener),
            local,
            metrics,
            metrics_addr,
            signals: None,
            stop: Arc::new(AtomicBool::new(false)),
            waker,
            opts,
            hello: Arc::from(hello),
            held,
            peers: HashMap::new(),
            next_token: FIRST_PEER,
            ready: VecDeque::new(),
            done: Counters::default(),
            summary: ServeSummary::default(),
            view,
            urandom,
            buf: vec![0; READ_CHUNK],
            too_many: (None, 0),
            accept_retry_at: None,
            continuity,
            workers,
            decoded: Arc::new(Mutex::new(Vec::new())),
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The metrics address, if serving metrics.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Bytes of the hello every connection receives.
    pub fn hello_len(&self) -> usize {
        self.hello.len()
    }

    /// Tensors in the hello's table.
    pub fn held_tensors(&self) -> usize {
        self.held
    }

    /// A handle that stops the server.
    pub fn stopper(&self) -> Stopper {
        Stopper {
            flag: self.stop.clone(),
            waker: self.waker.clone(),
        }
    }

    /// Stops the server on SIGINT and SIGTERM (through a self-pipe the event loop
    /// watches).
    pub fn watch_signals(&mut self) -> Result<()> {
        let (read, write) = std::os::unix::net::UnixStream::pair()?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::low_level::pipe::register(sig, write.try_clone()?)
                .context("cannot install a signal handler")?;
        }
        let mut read = mio::net::UnixStream::from_std(read);
        self.poll
            .registry()
            .register(&mut read, SIGNALS, Interest::READABLE)?;
        self.signals = Some(read);
        Ok(())
    }

    /// Runs until stopped; then closes every open stream, reports it, and returns what
    /// was done.
    pub fn run(mut self) -> Result<ServeSummary> {
        let mut events = Events::with_capacity(1024);
        let mut next_timeouts = Instant::now();
        loop {
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            let now = Instant::now();
            let timeout = if self.ready.is_empty() {
                let mut wake = next_timeouts;
                if let Some(v) = self.view.next_due() {
                    wake = wake.min(v);
                }
                if let Some(a) = self.accept_retry_at {
                    wake = wake.min(a);
                }
                wake.saturating_duration_since(now)
            } else {
                Duration::ZERO
            };
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("the event loop failed"),
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_provers(),
                    METRICS => self.accept_metrics(),
                    SIGNALS => {
                        if let Some(s) = &mut self.signals {
                            let mut b = [0u8; 64];
                            while matches!(s.read(&mut b), Ok(n) if n > 0) {}
                        }
                        self.view.log("signal received: shutting down");
                        self.stop.store(true, Ordering::SeqCst);
                    }
                    WAKER => {
                        let woken = std::mem::take(
                            &mut *self.decoded.lock().unwrap_or_else(|e| e.into_inner()),
                        );
                        woken.into_iter().for_each(|t| self.mark_ready(t));
                    }
                    t => self.mark_ready(t),
                }
            }
            if self.accept_retry_at.is_some_and(|a| Instant::now() >= a) {
                self.accept_provers();
            }
            self.serve_ready();
            let now = Instant::now();
            if now >= next_timeouts {
                self.check_timeouts(now);
                next_timeouts = now + Duration::from_millis(250);
            }
            self.refresh_view(now);
        }
        self.shutdown();
        Ok(self.summary)
    }

    fn mark_ready(&mut self, t: Token) {
        if matches!(self.peers.get(&t), Some(Peer::Metrics(_))) {
            let counters = counters(&self.done, &self.peers);
            if let Some(Peer::Metrics(m)) = self.peers.get_mut(&t) {
                if m.service(|| counters) == metrics::Step::Close {
                    self.close_metrics(t);
                }
            }
            return;
        }
        if let Some(Peer::Prover(c)) = self.peers.get_mut(&t) {
            if !c.queued {
                c.queued = true;
                self.ready.push_back(t);
            }
        }
    }

    fn provers(&self) -> usize {
        self.peers
            .values()
            .filter(|p| matches!(p, Peer::Prover(_)))
            .count()
    }

    fn accept_provers(&mut self) {
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            let (mut stream, peer) = match listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    self.accept_retry_at = None;
                    return;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::Interrupted | std::io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    continue
                }
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM: the listener stays ready while
                    // connections wait, but no new event will say so (edge-triggered);
                    // try again shortly, and log once per episode.
                    if self.accept_retry_at.is_none() {
                        self.view.log(&format!(
                            "cannot accept a connection: {e}; retrying every 100 ms"
                        ));
                    }
                    self.accept_retry_at = Some(Instant::now() + Duration::from_millis(100));
                    return;
                }
            };
            self.accept_retry_at = None;
            if self.provers() >= self.opts.max_connections {
                drop(stream);
                self.done.connections_rejected_total += 1;
                self.summary.rejected += 1;
                let (last, n) = &mut self.too_many;
                *n += 1;
                if last.is_none_or(|l| l.elapsed() > Duration::from_secs(1)) {
                    let msg = format!(
                        "{peer}: refused: {} connections open, the limit (--max-connections); {} refused so far",
                        self.opts.max_connections, n
                    );
                    *last = Some(Instant::now());
                    self.view.log(&msg);
                }
                continue;
            }
            let nonce = match self.opts.fixed_nonce {
                Some(n) => n,
                None => {
                    let mut n = [0u8; 16];
                    if let Err(e) = self.urandom.read_exact(&mut n) {
                        self.view
                            .log(&format!("cannot read /dev/urandom: {e}; refusing {peer}"));
                        continue;
                    }
                    // Commit mode: a nonce only this verifier's challenge key makes.
                    match &self.opts.challenge_key {
                        Some(k) => mmaudit_protocol::commit::issue_nonce(
                            k,
                            n[..8].try_into().expect("8 bytes"),
                        ),
                        None => n,
                    }
                }
            };
            let _ = stream.set_nodelay(true);
            let t = Token(self.next_token);
            self.next_token += 1;
            if let Err(e) = self.poll.registry().register(
                &mut stream,
                t,
                Interest::READABLE | Interest::WRITABLE,
            ) {
                self.view.log(&format!("{peer}: cannot register: {e}"));
                continue;
            }
            let hello = HelloOut::new(self.hello.clone(), &self.opts.key, nonce);
            let cfg = conn_config(&self.opts, self.workers.as_ref());
            let (decoded, waker) = (self.decoded.clone(), self.waker.clone());
            let notify = move || {
                decoded.lock().unwrap_or_else(|e| e.into_inner()).push(t);
                let _ = waker.wake();
            };
            let conn = Conn::new(stream, peer, hello, &cfg, Some(Box::new(notify)));
            self.peers.insert(t, Peer::Prover(Box::new(conn)));
            self.mark_ready(t);
        }
    }

    fn accept_metrics(&mut self) {
        loop {
            let Some(listener) = &self.metrics else {
                return;
            };
            let (mut stream, _) = match listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            let clients = self
                .peers
                .values()
                .filter(|p| matches!(p, Peer::Metrics(_)))
                .count();
            if clients >= MAX_METRICS_CLIENTS {
                continue;
            }
            let t = Token(self.next_token);
            self.next_token += 1;
            if self
                .poll
                .registry()
                .register(&mut stream, t, Interest::READABLE | Interest::WRITABLE)
                .is_err()
            {
                continue;
            }
            self.peers
                .insert(t, Peer::Metrics(MetricsConn::new(stream)));
            self.mark_ready(t);
        }
    }

    fn close_metrics(&mut self, t: Token) {
        if let Some(Peer::Metrics(mut m)) = self.peers.remove(&t) {
            let _ = self.poll.registry().deregister(&mut m.stream);
        }
    }

    /// Serves each connection that was ready when the turn began, once.
    fn serve_ready(&mut self) {
        for _ in 0..self.ready.len() {
            let Some(t) = self.ready.pop_front() else {
                break;
            };
            let cfg = conn_config(&self.opts, self.workers.as_ref());
            let Some(Peer::Prover(conn)) = self.peers.get_mut(&t) else {
                continue;
            };
            let step = conn.service(&mut self.buf, Instant::now() + TURN, &cfg);
            log_err(&mut self.view, &mut conn.log);
            if let Some(msg) = note_continuity(&mut self.continuity, conn, false) {
                self.view.log(&msg);
            }
            match step {
                Step::Wait => conn.queued = false,
                Step::More => self.ready.push_back(t),
                Step::Finished(reason) => self.finish(t, &reason),
                Step::Rejected(reason) => self.reject(t, &reason),
            }
        }
    }

    fn check_timeouts(&mut self, now: Instant) {
        // Received counts a turn could not write (at most every 50 ms) are written now:
        // records can arrive after the turn that read their bytes (frames decoded on
        // the shared threads), and a prover may send nothing more.
        for p in self.peers.values_mut() {
            if let Peer::Prover(c) = p {
                if c.received != c.continuity_count {
                    if let Some(msg) = note_continuity(&mut self.continuity, c, false) {
                        self.view.log(&msg);
                    }
                }
            }
        }
        let mut expired = Vec::new();
        for (&t, p) in &self.peers {
            match p {
                Peer::Prover(c) => {
                    if c.header.is_none()
                        && now.duration_since(c.accepted) > self.opts.handshake_timeout
                    {
                        expired.push((
                            t,
                            true,
                            format!(
                                "no valid stream header within {:.0} s (--handshake-timeout)",
                                self.opts.handshake_timeout.as_secs_f64()
                            ),
                        ));
                    } else if !c.queued
                        && c.backlog() == 0
                        && now.duration_since(c.last_rx) > self.opts.idle_timeout
                    {
                        // (A connection whose bytes or records this server has not
                        // finished with is not idle: a verifier that falls behind must
                        // not truncate its provers.)
                        expired.push((
                            t,
                            c.header.is_none(),
                            format!(
                                "nothing received for {:.0} s (--idle-timeout)",
                                self.opts.idle_timeout.as_secs_f64()
                            ),
                        ));
                    }
                }
                Peer::Metrics(m) => {
                    if now.duration_since(m.since) > METRICS_TIMEOUT {
                        expired.push((t, false, String::new()));
                    }
                }
            }
        }
        for (t, reject, reason) in expired {
            match self.peers.get(&t) {
                Some(Peer::Metrics(_)) => self.close_metrics(t),
                Some(Peer::Prover(_)) if reject => self.reject(t, &reason),
                Some(Peer::Prover(_)) => self.finish(t, &reason),
                None => {}
            }
        }
    }

    /// Closes a connection that carried no stream.
    fn reject(&mut self, t: Token, reason: &str) {
        let Some(Peer::Prover(mut conn)) = self.peers.remove(&t) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut conn.stream);
        self.done.connections_rejected_total += 1;
        self.done.bytes_received_total += conn.bytes_rx;
        self.summary.rejected += 1;
        self.summary.bytes += conn.bytes_rx;
        self.view
            .log(&format!("{}: connection closed: {reason}", conn.peer));
    }

    /// Ends a stream: its report is finished, written and printed.
    fn finish(&mut self, t: Token, reason: &str) {
        let Some(Peer::Prover(mut conn)) = self.peers.remove(&t) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut conn.stream);
        let mut conn = *conn;
        if let Some(msg) = conn.capture.close() {
            self.view.log(&msg);
        }
        // frames still being decoded count as received
        conn.settle();
        if let Some(msg) = note_continuity(&mut self.continuity, &mut conn, true) {
            self.view.log(&msg);
        }
        let (peer, bytes, base) = (conn.peer, conn.bytes_rx, conn.base.clone());
        let elapsed = conn.accepted.elapsed();
        if let (Some(dir), Some(t), Some(h)) =
            (&self.opts.state_dir, &conn.transcript, &conn.header)
        {
            if let Err(e) = record_graded(dir, t.finalize().as_bytes(), &h.nonce) {
                self.view
                    .log(&format!("{peer}: cannot record the graded session: {e}"));
            }
        }
        let report = conn.finish();
        let passed = report.passed();
        self.summary.streams += 1;
        self.summary.bytes += bytes;
        if passed {
            self.summary.passed += 1;
        } else {
            self.summary.failed += 1;
        }
        add_report(&mut self.done, &report);
        self.done.streams_total += 1;
        self.done.bytes_received_total += bytes;
        if passed {
            self.done.streams_passed_total += 1;
        } else {
            self.done.streams_failed_total += 1;
        }
        if let (Some(dir), Some(base)) = (&self.opts.json_dir, &base) {
            let text = serde_json::to_string_pretty(&summary_json(std::slice::from_ref(&report)))
                .unwrap_or_default()
                + "\n";
            match create_new(dir, base, "json").and_then(|(mut f, _)| f.write_all(text.as_bytes()))
            {
                Ok(()) => {}
                Err(e) => self
                    .view
                    .log(&format!("cannot write the JSON report of {peer}: {e}")),
            }
        }
        let verdict = if passed { "PASS" } else { "FAIL" };
        self.view.log(&format!(
            "{peer}: stream {} {verdict}: {reason} ({:.1} MB in {:.1} s)",
            base.as_deref().unwrap_or("?"),
            bytes as f64 / 1e6,
            elapsed.as_secs_f64()
        ));
        if self.opts.print_reports {
            let mut out = std::io::stdout().lock();
            let _ = write!(out, "{}", report.to_text());
            let _ = writeln!(out, "  peer {peer}: {reason}");
            let _ = out.flush();
        }
    }

    fn refresh_view(&mut self, now: Instant) {
        if !self.view.due(now) {
            return;
        }
        let mut rows: Vec<(Token, Row)> = self
            .peers
            .iter()
            .filter_map(|(&t, p)| match p {
                Peer::Prover(c) => Some((t, row(c))),
                Peer::Metrics(_) => None,
            })
            .collect();
        rows.sort_by_key(|(t, _)| t.0);
        let rows: Vec<Row> = rows.into_iter().map(|(_, r)| r).collect();
        let c = counters(&self.done, &self.peers);
        let summary = format!(
            "{} streams open, {} connections; finished {} passed, {} failed; {} rejected; {:.1} MB received",
            c.streams_active,
            c.connections_active,
            c.streams_passed_total,
            c.streams_failed_total,
            c.connections_rejected_total,
            c.bytes_received_total as f64 / 1e6
        );
        self.view.refresh(&rows, &summary, now);
    }

    fn shutdown(&mut self) {
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        let open: Vec<(Token, bool)> = self
            .peers
            .iter()
            .map(|(&t, p)| (t, matches!(p, Peer::Prover(c) if c.header.is_some())))
            .collect();
        if !open.is_empty() {
            self.view.log(&format!(
                "stopping: closing {} open connection{}",
                open.len(),
                if open.len() == 1 { "" } else { "s" }
            ));
        }
        for (t, streaming) in open {
            match self.peers.get(&t) {
                Some(Peer::Metrics(_)) => self.close_metrics(t),
                Some(Peer::Prover(_)) if streaming => self.finish(t, "the server stopped"),
                Some(Peer::Prover(_)) => self.reject(t, "the server stopped"),
                None => {}
            }
        }
        self.view.clear();
    }
}

/// The directory, under `--state-dir`, that names every commit-mode stream graded live.
pub const GRADED_DIR: &str = "graded";

/// Records a commit-mode stream graded live: file `graded/<BLAKE3 of its bytes>` holding
/// its nonce, so that `check --challenge-key --graded DIR` accepts exactly the captures
/// of sessions this verifier graded (docs/COMMIT.md).
fn record_graded(
    state: &std::path::Path,
    transcript: &[u8; 32],
    nonce: &[u8; 16],
) -> std::io::Result<()> {
    let dir = state.join(GRADED_DIR);
    std::fs::create_dir_all(&dir)?;
    let name: String = transcript.iter().map(|b| format!("{b:02x}")).collect();
    let text: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(dir.join(name), text + "\n")
}

/// The nonce of the graded session whose bytes hash to `transcript`, if `state` records
/// one.
pub fn graded_nonce(
    state: &std::path::Path,
    transcript: &[u8; 32],
) -> std::io::Result<Option<[u8; 16]>> {
    let name: String = transcript.iter().map(|b| format!("{b:02x}")).collect();
    let text = match std::fs::read_to_string(state.join(GRADED_DIR).join(name)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let t = text.trim();
    let mut nonce = [0u8; 16];
    if t.len() != 32 {
        return Ok(None);
    }
    for (i, b) in nonce.iter_mut().enumerate() {
        *b = u8::from_str_radix(&t[2 * i..2 * i + 2], 16).map_err(std::io::Error::other)?;
    }
    Ok(Some(nonce))
}

/// Notes a connection's stream in the continuity state: at its start, the calls
/// before it that no verifier received become its report's unseen calls; then what
/// it received (`force`: written now). A stream that does not carry this session's
/// nonce is not noted. Returns a message for the log.
fn note_continuity(c: &mut Continuity, conn: &mut Conn, force: bool) -> Option<String> {
    let h = conn.header.as_ref()?;
    if conn.nonce_mismatch {
        return None;
    }
    let at = (h.stream_id, h.segment, h.first_index);
    let mut msg = None;
    if !conn.continuity_begun {
        conn.continuity_begun = true;
        let (holes, m) = c.begin(at.0, at.1, at.2);
        conn.audit.unseen(&holes);
        msg = m;
    }
    let before = conn.continuity_written;
    let m = c.progress(at, conn.received, &mut conn.continuity_written, force);
    if conn.continuity_written != before {
        conn.continuity_count = conn.received;
    }
    msg.or(m)
}

fn conn_config<'a>(opts: &'a ServeOptions, workers: Option<&'a Arc<Workers>>) -> ConnConfig<'a> {
    ConnConfig {
        workers,
        key: &opts.key,
        weights: opts.weights.as_ref(),
        max_failures: opts.max_failures,
        policy: &opts.policy,
        capture_dir: opts.capture_dir.as_deref(),
        conn_buffer: opts.conn_buffer,
        challenge_key: opts.challenge_key,
    }
}

fn add_report(c: &mut Counters, r: &StreamReport) {
    c.calls_total += r.calls;
    c.sampled_total += r.sampled;
    c.verified_total += r.verified;
    c.failures_total += r.failures.len() as u64 + r.failures_not_shown;
    c.gaps_total += r.gaps;
}

/// The counters now: finished streams plus the open ones.
fn counters(done: &Counters, peers: &HashMap<Token, Peer>) -> Counters {
    let mut c = *done;
    for p in peers.values() {
        let Peer::Prover(conn) = p else { continue };
        c.connections_active += 1;
        c.bytes_received_total += conn.bytes_rx;
        if conn.header.is_some() {
            c.streams_active += 1;
            c.streams_total += 1;
            add_report(&mut c, &conn.audit.report);
        }
    }
    c
}

/// Bytes the kernel holds for this socket that were not read yet.
fn unread(stream: &TcpStream) -> u64 {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD stores one c_int through the pointer, which points to `n`, alive
    // for the call; the descriptor is the open socket `stream` owns.
    let r = unsafe { libc::ioctl(stream.as_raw_fd(), libc::FIONREAD, &mut n) };
    if r == 0 {
        n.max(0) as u64
    } else {
        0
    }
}

fn row(c: &Conn) -> Row {
    let r = &c.audit.report;
    Row {
        peer: c.peer.to_string(),
        stream: match &c.header {
            Some(h) => format!("{:016x}/{}", h.stream_id, h.segment),
            None if c.hello_pending() => "(sending hello)".into(),
            None => "(awaiting header)".into(),
        },
        calls: r.calls,
        sampled: r.sampled,
        verified: r.verified,
        failures: r.failures.len() as u64 + r.failures_not_shown,
        gaps: r.gaps,
        bytes: c.bytes_rx,
        lag: unread(&c.stream) + c.buffered(),
    }
}

fn resolve_addr(text: &str, what: &str) -> Result<SocketAddr> {
    text.to_socket_addrs()
        .with_context(|| format!("{what} {text}: not an address (HOST:PORT)"))?
        .next()
        .ok_or_else(|| anyhow!("{what} {text}: no address"))
}

/// Runs `serve`; Ok(true) when every finished stream passed.
pub fn run_serve(args: &ServeArgs) -> Result<bool> {
    let key = read_key_file(&args.key_file)?;
    let listen = resolve_addr(&args.listen, "--listen")?;
    let metrics = args
        .metrics
        .as_deref()
        .map(|m| resolve_addr(m, "--metrics"))
        .transpose()?;
    if !(1..=17).contains(&args.conn_buffer_mb) {
        bail!("--conn-buffer-mb must be from 1 to 17 (the largest frame is 16 MiB and 49 bytes)");
    }
    if args.max_connections == 0 {
        bail!("--max-connections must be at least 1");
    }
    let secs = |v: f64, name: &str| -> Result<Duration> {
        if v.is_finite() && v > 0.0 {
            Ok(Duration::from_secs_f64(v))
        } else {
            bail!("{name} must be a positive number of seconds")
        }
    };
    for dir in [&args.capture_dir, &args.json_dir, &args.state_dir]
        .into_iter()
        .flatten()
    {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create directory {}", dir.display()))?;
    }
    let weights = crate::check::load_weight_policy(
        &args.held.weights,
        args.held.require_weights,
        crate::out::To::Stdout,
    )?;
    let challenge_key = crate::check::read_challenge_key(args.challenge_key.as_deref(), &key)?;
    let mut opts = ServeOptions::new(listen, key);
    opts.challenge_key = challenge_key;
    opts.weights = weights;
    opts.capture_dir = args.capture_dir.clone();
    opts.json_dir = args.json_dir.clone();
    opts.state_dir = args.state_dir.clone();
    opts.metrics = metrics;
    opts.max_connections = args.max_connections;
    opts.idle_timeout = secs(args.idle_timeout, "--idle-timeout")?;
    opts.handshake_timeout = secs(args.handshake_timeout, "--handshake-timeout")?;
    opts.conn_buffer = (args.conn_buffer_mb << 20).min(DEFAULT_CONN_BUFFER);
    opts.policy = args.policy.policy();
    // The hello asks for the policy's floor: what a stream must then meet.
    opts.sampling = opts.policy.sampling;
    opts.max_failures = args.max_failures;
    if args.threads == Some(0) {
        bail!("--threads must be at least 1");
    }
    opts.threads = args.threads.unwrap_or_else(crate::check::default_threads);
    opts.view = args.view;
    opts.print_reports = true;
    opts.quiet = false;
    let started = Instant::now();
    let key_id = opts.key.id();
    let mut server = Server::bind(opts)?;
    server.watch_signals()?;
    let mut err = std::io::stderr().lock();
    if server.held_tensors() > 0 {
        let _ = writeln!(
            err,
            "mmaudit-verify serve: hello table: {} tensors, {:.1} MB per connection, fingerprinted in {:.1} s",
            server.held_tensors(),
            server.hello_len() as f64 / 1e6,
            started.elapsed().as_secs_f64()
        );
    }
    let _ = writeln!(
        err,
        "mmaudit-verify serve: listening on {} (key id {key_id:016x})",
        server.local_addr()
    );
    if let Some(m) = server.metrics_addr() {
        let _ = writeln!(err, "mmaudit-verify serve: metrics on http://{m}/metrics");
    }
    drop(err);
    let summary = server.run()?;
    crate::out::stdout(&format!(
        "{}  {} streams, {} passed, {} failed; {} connection{} rejected; {:.1} MB received\n",
        if summary.failed == 0 { "PASS" } else { "FAIL" },
        summary.streams,
        summary.passed,
        summary.failed,
        summary.rejected,
        if summary.rejected == 1 { "" } else { "s" },
        summary.bytes as f64 / 1e6
    ));
    Ok(summary.failed == 0)
}

//! `mmaudit-verify worker`: answers hellos and verifies segments from the work queue.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use async_nats::jetstream::{self, consumer, AckKind};
use clap::Args;
use futures_util::StreamExt;
use mmaudit_protocol::handshake::{restamp_nonce, HelloMode, ServerHello};
use mmaudit_protocol::keys::Key;
use tokio::sync::{mpsc, Semaphore};

use super::store::{read_segment, ChunkReader, Follow};
use super::{
    connect, ensure_streams, hex, nonce_record, put_record, random_bytes, record_nonce,
    record_seen, redact, reply_allowed, report_on_record, report_subject, runtime, seen_segments,
    update_nonce, valid_segment, HELLO_SUBJECT, INBOX_PREFIX, NONCES, WORK, WORKER_QUEUE,
    WORK_CONSUMER,
};
use crate::audit::{HeaderFindings, HeaderHook, StreamAudit};
use crate::check::{audit_reader_into, default_threads, load_weight_policy, NotChecked};
use crate::keyfile::read_key_file;
use crate::policy::{Policy, PolicyArgs};
use crate::pool::Workers;
use crate::report::{summary_json, StreamReport};
use crate::weights::WeightPolicy;

/// Options of `mmaudit-verify worker`.
#[derive(Args, Debug)]
#[command(after_help = "\
A worker of the fleet (docs/FLEET.md). It connects to the NATS server (JetStream
enabled: nats-server -js), creates the fleet's streams if they are missing,
and then:
- answers relays' requests for a hello (subject mmaudit.hello, queue group
  mmaudit-workers), only to reply subjects under _INBOX: a fresh nonce, recorded in
  the stream MMAUDIT_NONCES,
  and the policy's sampling rates (and with --weights, the table of held tensors);
- takes segments from the work queue MMAUDIT_WORK (durable consumer mmaudit-workers,
  shared by every worker: each segment is verified by one worker at a time) and
  verifies each as `check` verifies a file, while the relay is still writing it. The
  stream's nonce must be one a worker issued and no other segment used.
  A worker that stops acknowledging for --ack-wait (it died, or its machine did) has
  its segment delivered to another worker, which verifies it again from its first
  byte: the verdict is the one an uninterrupted run gives. A segment is judged once:
  the first report on record stands. A segment whose stream header is not complete
  within --handshake-timeout of taking it is rejected.

Each report is published on mmaudit.report.<segment> (kept in the stream
MMAUDIT_REPORTS), printed on stdout, and with --json-dir written there as
<segment>.json, with the keys of `check --json`. `mmaudit-verify export` writes a
segment to a capture file; `check nats://HOST:PORT/<segment>` re-checks it.

SIGINT or SIGTERM: stop taking segments, hand back the ones in progress (another worker
takes them over), exit. Exit codes: 0 every segment this worker finished passed,
1 one failed, 2 could not run.

The address may carry a login: nats://USER:PASSWORD@HOST:PORT or nats://TOKEN@HOST:PORT
(docs/FLEET.md, \"Permissions\"); logs and reports show it as nats://***@HOST:PORT.

Examples:
  nats-server -js -sd /var/lib/nats -a 127.0.0.1 -p 4222
  mmaudit-verify worker --nats nats://127.0.0.1:4222 --key-file audit.key --json-dir reports
  mmaudit-verify worker --nats nats://10.0.0.5:4222 --key-file audit.key --weights model-*.safetensors")]
pub struct WorkerArgs {
    /// The NATS server, e.g. nats://127.0.0.1:4222.
    #[arg(long, value_name = "URL")]
    pub nats: String,
    /// The shared audit key: a file holding 64 hex characters.
    #[arg(long, value_name = "KEY")]
    pub key_file: PathBuf,
    /// The weights the verifier holds.
    #[command(flatten)]
    pub held: crate::serve::HeldWeightsArgs,
    /// Write each segment's JSON report into this directory (created if missing).
    #[arg(long, value_name = "DIR")]
    pub json_dir: Option<PathBuf>,
    /// The audit policy: the sampling rates the hello asks for (and the floor a stream
    /// must meet), and the limits on what was not audited.
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Keep at most this many failure details per segment.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub max_failures: usize,
    /// Threads that recompute samples, shared by every segment (default: every core).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Segments this worker verifies at once.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_segments: usize,
    /// Fail a segment whose stream header was complete (stored by the server) more than
    /// this many seconds after its nonce was issued: as `serve --handshake-timeout`, a
    /// live session's header follows its hello.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub handshake_timeout: f64,
    /// A segment to which nothing arrives for this many seconds is finished (truncated
    /// unless complete).
    #[arg(long, value_name = "SECS", default_value_t = 60.0)]
    pub idle_timeout: f64,
    /// Serve Prometheus text counters on HTTP at this address (GET /metrics).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// Seconds without a sign of progress after which a segment is given to another
    /// worker. It is a setting of the shared consumer: the worker that creates it sets it.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub ack_wait: f64,
}

/// Longest a stopping worker waits for its segments to be handed back.
const SHUTDOWN: Duration = Duration::from_secs(5);

/// What every segment's verification shares.
struct Shared {
    url: String,
    key: Key,
    policy: Policy,
    weights: Option<WeightPolicy>,
    workers: Option<Arc<Workers>>,
    max_failures: usize,
    json_dir: Option<PathBuf>,
    idle: Duration,
    handshake: Duration,
    ack_wait: Duration,
    passed: AtomicU64,
    failed: AtomicU64,
    counters: Counters,
    /// The server's largest message (set once connected).
    max_payload: std::sync::OnceLock<usize>,
}

/// What `--metrics` shows (besides the passed and failed counts).
#[derive(Default)]
struct Counters {
    rejected: AtomicU64,
    handed_back: AtomicU64,
    taken_over: AtomicU64,
    in_progress: AtomicU64,
    bytes: AtomicU64,
    hellos: AtomicU64,
}

impl Shared {
    /// The counters in Prometheus text format.
    fn metrics_text(&self) -> String {
        let c = &self.counters;
        let rows = [
            (
                "segments_passed_total",
                "counter",
                "segments verified that passed",
                &self.passed,
            ),
            (
                "segments_failed_total",
                "counter",
                "segments verified that failed",
                &self.failed,
            ),
            (
                "segments_rejected_total",
                "counter",
                "segments that were not a stream for this key",
                &c.rejected,
            ),
            (
                "segments_handed_back_total",
                "counter",
                "segments given back to the queue unfinished",
                &c.handed_back,
            ),
            (
                "segments_taken_over_total",
                "counter",
                "segments verified on a second or later delivery",
                &c.taken_over,
            ),
            (
                "segments_in_progress",
                "gauge",
                "segments being verified now",
                &c.in_progress,
            ),
            (
                "segment_bytes_total",
                "counter",
                "bytes of segments read",
                &c.bytes,
            ),
            (
                "hellos_issued_total",
                "counter",
                "hellos sent with a recorded nonce",
                &c.hellos,
            ),
        ];
        let mut text = String::new();
        for (name, kind, help, v) in rows {
            text.push_str(&format!(
                "# HELP mmaudit_worker_{name} {help}\n# TYPE mmaudit_worker_{name} {kind}\nmmaudit_worker_{name} {}\n",
                v.load(Ordering::Relaxed)
            ));
        }
        text
    }
}

/// Answers GET /metrics on `listener` with the worker's counters.
async fn serve_metrics(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let n = match tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buf)).await
            {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let (status, body) = if buf[..n].starts_with(b"GET /metrics") {
                ("200 OK", shared.metrics_text())
            } else {
                ("404 Not Found", "GET /metrics\n".to_string())
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = socket.write_all(head.as_bytes()).await;
            let _ = socket.write_all(body.as_bytes()).await;
        });
    }
}

fn seconds(v: f64, name: &str) -> Result<Duration> {
    if v.is_finite() && v > 0.0 {
        Ok(Duration::from_secs_f64(v))
    } else {
        bail!("{name} must be a positive number of seconds")
    }
}

/// Runs `worker` until SIGINT or SIGTERM; Ok(true) when every segment it finished passed.
pub fn run_worker(args: &WorkerArgs) -> Result<bool> {
    let key = read_key_file(&args.key_file)?;
    if args.max_segments == 0 {
        bail!("--max-segments must be at least 1");
    }
    if args.threads == Some(0) {
        bail!("--threads must be at least 1");
    }
    let idle = seconds(args.idle_timeout, "--idle-timeout")?;
    let ack_wait = seconds(args.ack_wait, "--ack-wait")?;
    let handshake = seconds(args.handshake_timeout, "--handshake-timeout")?;
    if let Some(dir) = &args.json_dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create directory {}", dir.display()))?;
    }
    let weights = load_weight_policy(
        &args.held.weights,
        args.held.require_weights,
        crate::out::To::Stdout,
    )?;
    let policy = args.policy.policy();
    let tensors = match &weights {
        Some(w) => w.registry.hello_tensors(&key, default_threads())?,
        None => Vec::new(),
    };
    let hello: Arc<[u8]> = ServerHello {
        key_id: key.id(),
        nonce: [0; 16],
        sampling: policy.sampling,
        tensors,
        mode: HelloMode::Sampling,
    }
    .encode(&key)?
    .into();
    let threads = args.threads.unwrap_or_else(default_threads);
    let shared = Arc::new(Shared {
        url: args.nats.clone(),
        key,
        policy,
        weights,
        workers: (threads > 1).then(|| Workers::new(threads)),
        max_failures: args.max_failures,
        json_dir: args.json_dir.clone(),
        idle,
        handshake,
        ack_wait,
        passed: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        counters: Counters::default(),
        max_payload: std::sync::OnceLock::new(),
    });
    runtime()?.block_on(async {
        if let Some(addr) = &args.metrics {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen for metrics on {addr}"))?;
            eprintln!(
                "mmaudit-verify worker: metrics on http://{}/metrics",
                listener.local_addr()?
            );
            tokio::spawn(serve_metrics(listener, shared.clone()));
        }
        work(shared.clone(), hello, args.max_segments).await
    })?;
    let (passed, failed) = (
        shared.passed.load(Ordering::Relaxed),
        shared.failed.load(Ordering::Relaxed),
    );
    crate::out::stdout(&format!(
        "{}  {} segments, {passed} passed, {failed} failed\n",
        if failed == 0 { "PASS" } else { "FAIL" },
        passed + failed
    ));
    Ok(failed == 0)
}

async fn work(shared: Arc<Shared>, hello: Arc<[u8]>, max_segments: usize) -> Result<()> {
    let client = connect(&shared.url, "mmaudit-verify worker").await?;
    let _ = shared.max_payload.set(client.server_info().max_payload);
    let js = jetstream::new(client.clone());
    ensure_streams(&js).await?;
    let hellos = client
        .queue_subscribe(HELLO_SUBJECT, WORKER_QUEUE.into())
        .await
        .map_err(|e| anyhow!("cannot subscribe to {HELLO_SUBJECT}: {e}"))?;
    let answering = tokio::spawn(answer_hellos(
        client.clone(),
        hellos,
        js.clone(),
        shared.clone(),
        hello,
    ));
    let consumer: consumer::PullConsumer = js
        .get_stream(WORK)
        .await
        .map_err(|e| anyhow!("cannot open the JetStream stream {WORK}: {e}"))?
        .get_or_create_consumer(
            WORK_CONSUMER,
            consumer::pull::Config {
                durable_name: Some(WORK_CONSUMER.into()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: shared.ack_wait,
                max_deliver: -1,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| anyhow!("cannot open the work queue's consumer {WORK_CONSUMER}: {e}"))?;
    eprintln!(
        "mmaudit-verify worker: connected to {} (key id {:016x}); taking segments",
        redact(&shared.url),
        shared.key.id()
    );
    let slots = Arc::new(Semaphore::new(max_segments));
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch SIGTERM")?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut running = tokio::task::JoinSet::new();
    loop {
        let slot = tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
            slot = slots.clone().acquire_owned() => slot.map_err(|e| anyhow!("{e}"))?,
        };
        let fetched = consumer
            .fetch()
            .max_messages(1)
            .expires(Duration::from_secs(1))
            .messages()
            .await;
        let mut batch = match fetched {
            Ok(b) => b,
            Err(e) => {
                eprintln!("mmaudit-verify worker: cannot fetch work ({e}); retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        match batch.next().await {
            Some(Ok(item)) => {
                let (shared, js) = (shared.clone(), js.clone());
                let stop = stop_rx.clone();
                running.spawn(async move {
                    verify(shared, js, item, stop).await;
                    drop(slot);
                });
            }
            Some(Err(e)) => {
                eprintln!("mmaudit-verify worker: cannot fetch work ({e}); retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            None => {}
        }
        while running.try_join_next().is_some() {}
    }
    eprintln!("mmaudit-verify worker: stopping; segments in progress go back to the queue");
    let _ = stop_tx.send(true);
    // Bounded: with the server gone too, hand-backs and the flush cannot complete (the
    // items come back to the queue after the ack wait anyway).
    let handed_back = async { while running.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN, handed_back).await.is_err() {
        eprintln!(
            "mmaudit-verify worker: segments still being handed back after {SHUTDOWN:?}; exiting"
        );
    }
    answering.abort();
    let _ = tokio::time::timeout(SHUTDOWN, client.flush()).await;
    Ok(())
}

/// Answers each hello request with a fresh nonce, recorded before it is sent.
async fn answer_hellos(
    client: async_nats::Client,
    mut requests: async_nats::Subscriber,
    js: jetstream::Context,
    shared: Arc<Shared>,
    template: Arc<[u8]>,
) {
    let key = &shared.key;
    while let Some(request) = requests.next().await {
        let Some(reply) = request.reply else {
            continue;
        };
        // Published with this worker's rights: only on a requester's inbox, never on a
        // subject of the fleet's records (a nonce's, a segment's calls received).
        if !reply_allowed(&reply) {
            eprintln!(
                "mmaudit-verify worker: no hello for a request whose reply subject is not an inbox ({INBOX_PREFIX}.* or {INBOX_PREFIX}_<name>.*)"
            );
            continue;
        }
        let nonce = match random_bytes::<16>() {
            Ok(n) => n,
            Err(e) => {
                eprintln!("mmaudit-verify worker: no hello: {e:#}");
                continue;
            }
        };
        // Recorded first: a stream can only carry a nonce the record already holds.
        if let Err(e) = record_nonce(&js, &nonce).await {
            eprintln!(
                "mmaudit-verify worker: no hello: cannot record its nonce in {NONCES}: {e:#}"
            );
            continue;
        }
        let mut hello = template.to_vec();
        restamp_nonce(&mut hello, key, nonce);
        match client.publish(reply, hello.into()).await {
            Ok(()) => {
                shared.counters.hellos.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => eprintln!("mmaudit-verify worker: cannot send a hello: {e}"),
        }
    }
}

/// Marks `nonce` used by `segment`: Ok when a worker issued it and no other segment
/// used it (the same segment again is a worker taking over).
async fn claim_nonce(
    js: &jetstream::Context,
    nonce: &[u8; 16],
    segment: &str,
    (header_stored, handshake): (i128, Duration),
) -> Result<(), String> {
    let name = hex(nonce);
    let mine = format!("used {segment}");
    for _ in 0..16 {
        let record = nonce_record(js, nonce)
            .await
            .map_err(|e| format!("{e:#}"))?;
        let Some((value, sequence, issued)) = record else {
            return Err(format!(
                "schedule nonce not issued by this fleet's workers: {name} is not in the record of issued nonces ({NONCES})"
            ));
        };
        match &value[..] {
            b"issued" => {
                // Judged before the claim, so that a worker taking the segment over
                // finds the same: unclaimed and stale, or claimed because it was fresh.
                let late = header_stored.saturating_sub(issued);
                if late > handshake.as_nanos() as i128 {
                    return Err(format!(
                        "the segment's stream header was stored {:.1} s after its nonce {name} was issued (at most {:.1} s, --handshake-timeout): a stream's header follows its hello, and a nonce held longer would let its prover compute the stream first",
                        late as f64 / 1e9,
                        handshake.as_secs_f64()
                    ));
                }
                if update_nonce(js, nonce, mine.clone(), sequence).await.is_ok() {
                    return Ok(());
                }
                // another segment claimed it meanwhile: read again
            }
            v if v == mine.as_bytes() => return Ok(()),
            v => {
                return Err(format!(
                    "schedule nonce {name} was already used by another segment ({}): a stream sent twice",
                    String::from_utf8_lossy(v)
                ))
            }
        }
    }
    Err(format!(
        "cannot claim nonce {name}: its record keeps changing"
    ))
}

/// A segment's place in its stream (stream id, segment number, first call) and the
/// count of calls received already on record for it.
type Begun = Arc<std::sync::Mutex<Option<((u64, u32, u64), u64)>>>;

/// How often a segment's count of calls received is recorded while it is read.
const RECORD_EVERY: Duration = Duration::from_millis(100);

/// The header hook of a segment's audit: the nonce must be one a worker issued and no
/// other segment used; calls before this segment must have been received by a worker
/// (the record of calls received, as `serve` keeps it). A segment whose nonce fails
/// records nothing (it must not cover another segment's hole).
async fn judge_header(
    js: &jetstream::Context,
    h: &mmaudit_protocol::stream::StreamHeader,
    segment: &str,
    begun: &Begun,
    fresh: (i128, Duration),
    wait: Duration,
) -> HeaderFindings {
    if let Err(message) = claim_nonce(js, &h.nonce, segment, fresh).await {
        return HeaderFindings {
            integrity: Some(message),
            unseen: Vec::new(),
        };
    }
    let at = (h.stream_id, h.segment, h.first_index);
    let unaccounted = |e: anyhow::Error| HeaderFindings {
        integrity: Some(format!(
            "{e:#}: the calls before this segment cannot be accounted for"
        )),
        unseen: Vec::new(),
    };
    let mut segments = match seen_segments(js, h.stream_id).await {
        Ok(s) => s,
        Err(e) => return unaccounted(e),
    };
    // Taken over: the earlier delivery's count stands until this one passes it.
    let floor = segments.get(&h.segment).map_or(0, |&(_, n, _)| n);
    if !segments.contains_key(&h.segment) {
        if let Err(e) = record_seen(js, at, 0, false).await {
            eprintln!("mmaudit-verify worker: segment {segment}: {e:#}");
        }
    }
    *begun.lock().unwrap_or_else(|e| e.into_inner()) = Some((at, floor));
    // Earlier segments still being read (by this worker or another) deliver more: their
    // final counts are waited for, within `wait`, so that an honest stream whose
    // segments are verified at once is not found to have holes. The segment just before
    // this one, when not on record yet, gets a moment to appear.
    let start = std::time::Instant::now();
    loop {
        let reading = segments
            .range(..h.segment)
            .any(|(_, &(_, _, ended))| !ended);
        let previous_unknown = h.segment > 0
            && !segments.contains_key(&(h.segment - 1))
            && start.elapsed() < PREVIOUS_GRACE;
        if !(reading || previous_unknown) || start.elapsed() >= wait {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        segments = match seen_segments(js, h.stream_id).await {
            Ok(s) => s,
            Err(e) => return unaccounted(e),
        };
    }
    let counts = segments
        .iter()
        .map(|(&n, &(first, received, _))| (n, (first, received)))
        .collect();
    let holes = crate::serve::continuity::holes_before(&counts, h.segment, h.first_index);
    HeaderFindings {
        integrity: None,
        unseen: holes,
    }
}

/// How long a segment's header waits for the record of the segment before it to appear.
const PREVIOUS_GRACE: Duration = Duration::from_secs(3);

/// Records the segment's count of calls received while it is read, when it grew past
/// what is on record.
async fn record_received(js: jetstream::Context, begun: Begun, received: Arc<AtomicU64>) {
    let mut recorded = 0;
    loop {
        tokio::time::sleep(RECORD_EVERY).await;
        let at = *begun.lock().unwrap_or_else(|e| e.into_inner());
        let Some((at, floor)) = at else {
            continue;
        };
        let n = received.load(Ordering::Relaxed);
        if n > floor.max(recorded) && record_seen(&js, at, n, false).await.is_ok() {
            recorded = n;
        }
    }
}

/// Returns `handshake` after it is called unless `header_read` is set by then (then
/// never).
async fn header_deadline(header_read: &std::sync::atomic::AtomicBool, handshake: Duration) {
    tokio::time::sleep(handshake).await;
    if header_read.load(Ordering::Relaxed) {
        std::future::pending::<()>().await;
    }
}

/// Gives a work item back to the queue (another worker, or this one, takes it again
/// after `delay`).
async fn hand_back(item: &jetstream::Message, c: &Counters, delay: Option<Duration>) {
    c.handed_back.fetch_add(1, Ordering::Relaxed);
    let _ = item.ack_with(AckKind::Nak(delay)).await;
}

/// Counts a segment out of the in-progress gauge when dropped.
struct InProgress<'a>(&'a AtomicU64);

impl Drop for InProgress<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Verifies one work item's segment and acknowledges it; hands it back (nak) when the
/// worker stops or cannot read the segment.
async fn verify(
    shared: Arc<Shared>,
    js: jetstream::Context,
    item: jetstream::Message,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let segment = String::from_utf8_lossy(&item.payload).into_owned();
    if !valid_segment(&segment) {
        eprintln!(
            "mmaudit-verify worker: dropping a work item that names no segment ({} bytes)",
            item.payload.len()
        );
        let _ = item.ack_with(AckKind::Term).await;
        return;
    }
    let delivered = item.info().map_or(1, |i| i.delivered);
    // A segment is judged once: a work item that comes again (published twice, or
    // redelivered after its report went out) does not verify it again, so bytes stored
    // after its verdict cannot change it.
    match report_on_record(&js, &segment).await {
        Ok(Some(_)) => {
            eprintln!("mmaudit-verify worker: segment {segment}: judged already (its report is on record); not verified again");
            let _ = item.double_ack().await;
            return;
        }
        Ok(None) => {}
        Err(e) => {
            eprintln!("mmaudit-verify worker: segment {segment}: {e:#}; handing it back");
            return hand_back(&item, &shared.counters, Some(Duration::from_secs(1))).await;
        }
    }
    eprintln!("mmaudit-verify worker: segment {segment}: verifying (delivery {delivered})");
    let c = &shared.clone().counters;
    c.in_progress.fetch_add(1, Ordering::Relaxed);
    let _done = InProgress(&c.in_progress);
    if delivered > 1 {
        c.taken_over.fetch_add(1, Ordering::Relaxed);
    }
    let item = Arc::new(item);
    let progress = tokio::spawn({
        let (item, every) = (item.clone(), shared.ack_wait / 3);
        async move {
            loop {
                tokio::time::sleep(every).await;
                let _ = item.ack_with(AckKind::Progress).await;
            }
        }
    });
    let (tx, rx) = mpsc::channel(super::store::HAND_AHEAD);
    // Where the segment lies in its stream (once its header is judged), the least count
    // of calls received to record, and the count so far.
    let begun: Begun = Arc::new(std::sync::Mutex::new(None));
    let received = Arc::new(AtomicU64::new(0));
    let reader = ChunkReader::new(rx);
    let stored = reader.stored();
    // Set once the segment's stream header is complete.
    let header_read = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let audit = {
        let s = &shared;
        let name = format!("{}/{segment}", redact(&s.url));
        let mut audit =
            StreamAudit::new(&name, &s.key, s.max_failures).with_policy(s.policy.clone());
        if let Some(w) = &s.weights {
            audit = audit.with_weights(w.clone());
        }
        if let Some(w) = &s.workers {
            audit = audit.with_workers(w.clone());
        }
        let (handle, seg, js) = (
            tokio::runtime::Handle::current(),
            segment.clone(),
            js.clone(),
        );
        let (begun, handshake) = (begun.clone(), s.handshake);
        // An earlier segment being read ends within the idle timeout after its last
        // byte, or is taken over after the ack wait.
        let wait = s.idle + s.ack_wait + Duration::from_secs(5);
        let header_read = header_read.clone();
        // The header is judged on the audit's thread when the read that completed it
        // was fed: the reader's chunk is the one that holds the header's end.
        let hook: HeaderHook = Box::new(move |h| {
            header_read.store(true, Ordering::Relaxed);
            let at = i128::from(stored.load(Ordering::Relaxed));
            handle.block_on(judge_header(&js, h, &seg, &begun, (at, handshake), wait))
        });
        audit
            .judging_header(hook)
            .counting_received(received.clone())
    };
    let key = shared.key.clone();
    let auditing = std::thread::spawn(move || audit_reader_into(audit, reader, &key, |_| {}));
    let recording = tokio::spawn(record_received(js.clone(), begun.clone(), received.clone()));
    let read = tokio::select! {
        r = read_segment(&js, &segment, Follow::Live(shared.idle), tx) => Some(r),
        _ = header_deadline(&header_read, shared.handshake) => {
            // As `serve` closes a connection without a header within its handshake
            // timeout: nobody holds a worker's slot by storing a header byte by byte.
            let _ = tokio::task::spawn_blocking(move || auditing.join()).await;
            progress.abort();
            recording.abort();
            eprintln!(
                "mmaudit-verify worker: segment {segment} rejected: no complete stream header within {:.1} s (--handshake-timeout) of taking it",
                shared.handshake.as_secs_f64()
            );
            c.rejected.fetch_add(1, Ordering::Relaxed);
            let _ = item.double_ack().await;
            return;
        }
        _ = stop.changed() => None,
    };
    let report = tokio::task::spawn_blocking(move || auditing.join()).await;
    progress.abort();
    recording.abort();
    let at = *begun.lock().unwrap_or_else(|e| e.into_inner());
    if let (Some((at, floor)), Some(r)) = (at, &read) {
        // Read to its end: the count is final (later segments' headers wait for it).
        let (n, ended) = (received.load(Ordering::Relaxed), r.is_ok());
        if n > floor || ended {
            if let Err(e) = record_seen(&js, at, n.max(floor), ended).await {
                eprintln!("mmaudit-verify worker: segment {segment}: {e:#}");
            }
        }
    }
    let (ended, bytes) = match read {
        Some(Ok(r)) => {
            c.bytes.fetch_add(r.1, Ordering::Relaxed);
            r
        }
        Some(Err(e)) => {
            eprintln!("mmaudit-verify worker: segment {segment}: {e:#}; handing it back");
            return hand_back(&item, c, Some(Duration::from_secs(1))).await;
        }
        None => return hand_back(&item, c, None).await,
    };
    let report = match report {
        Ok(Ok(Ok(r))) => r,
        Ok(Ok(Err(NotChecked::NotACapture(e)))) => {
            eprintln!(
                "mmaudit-verify worker: segment {segment} rejected: not a stream for this key: {e}"
            );
            c.rejected.fetch_add(1, Ordering::Relaxed);
            let _ = item.double_ack().await;
            return;
        }
        Ok(Ok(Err(NotChecked::Io(e)))) => {
            eprintln!("mmaudit-verify worker: segment {segment} rejected: {e}");
            c.rejected.fetch_add(1, Ordering::Relaxed);
            let _ = item.double_ack().await;
            return;
        }
        Ok(Err(_)) | Err(_) => {
            eprintln!("mmaudit-verify worker: segment {segment}: the audit thread failed; handing it back");
            return hand_back(&item, c, None).await;
        }
    };
    match publish_report(&shared, &js, &segment, &report).await {
        Ok(true) => {}
        Ok(false) => {
            eprintln!("mmaudit-verify worker: segment {segment}: another worker's report went on record first; it stands");
            let _ = item.double_ack().await;
            return;
        }
        Err(e) => {
            eprintln!("mmaudit-verify worker: segment {segment}: {e:#}; handing it back");
            return hand_back(&item, c, Some(Duration::from_secs(1))).await;
        }
    }
    let passed = report.passed();
    let counter = if passed {
        &shared.passed
    } else {
        &shared.failed
    };
    counter.fetch_add(1, Ordering::Relaxed);
    {
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "{}", report.to_text());
        let _ = writeln!(
            out,
            "  segment {segment}: {} ({:.1} MB, delivery {delivered})",
            ended.describe(),
            bytes as f64 / 1e6
        );
        let _ = out.flush();
    }
    if let Err(e) = item.double_ack().await {
        eprintln!("mmaudit-verify worker: segment {segment}: the work item's acknowledgement failed ({e}); another worker may verify it again");
    }
}

/// The compact JSON of `report`; when longer than `limit` bytes, without the lists and
/// objects inside each stream's report (failure details, tensors, graphs: the verdict
/// and every count stay), marked so (`"cut": ...`).
fn fitted(report: serde_json::Value, limit: usize) -> Result<String> {
    let text = serde_json::to_string(&report)?;
    if text.len() <= limit {
        return Ok(text);
    }
    let mut cut = report;
    if let Some(streams) = cut.get_mut("streams").and_then(|s| s.as_array_mut()) {
        for s in streams {
            if let Some(fields) = s.as_object_mut() {
                fields.retain(|_, v| !(v.is_array() || v.is_object()));
            }
        }
    }
    cut["cut"] = "the full report is longer than the server's max_payload: its details are in the worker's --json-dir".into();
    Ok(serde_json::to_string(&cut)?)
}

/// Puts a segment's report on record, only if none is (compare-and-set: the first
/// verdict stands), then writes it to the JSON directory. Ok(false): another report was
/// on record already.
async fn publish_report(
    shared: &Shared,
    js: &jetstream::Context,
    segment: &str,
    report: &StreamReport,
) -> Result<bool> {
    let json = summary_json(std::slice::from_ref(report));
    let text = serde_json::to_string_pretty(&json)? + "\n";
    let limit = shared.max_payload.get().copied().unwrap_or(usize::MAX);
    let payload = fitted(json, limit.saturating_sub(1024))?;
    let stored = put_record(js, report_subject(segment), payload.into(), 0).await;
    if let Err(e) = stored {
        // Refused because a report is on record, or not stored at all.
        return match report_on_record(js, segment).await? {
            Some(_) => Ok(false),
            None => Err(anyhow!("the report was not stored: {e}")),
        };
    }
    if let Some(dir) = &shared.json_dir {
        let tmp = dir.join(format!(".{segment}.json.tmp"));
        let path = dir.join(format!("{segment}.json"));
        if let Err(e) = std::fs::write(&tmp, &text).and_then(|()| std::fs::rename(&tmp, &path)) {
            eprintln!(
                "mmaudit-verify worker: segment {segment}: cannot write {} ({e}); the report is on record ({})",
                path.display(),
                report_subject(segment)
            );
        }
    }
    Ok(true)
}

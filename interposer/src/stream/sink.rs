//! The sink: records in, stream bytes out, to a file or a TCP connection.
//!
//! Records are queued, then framed (zstd, MAC chain) when a batch is large enough or
//! has waited `MMAUDIT_FLUSH_MS`, and written. The file sink is one stream, with the
//! prover's own nonce and sampling configuration (`MMAUDIT_CALL_RATE` etc.): its session
//! starts when it is opened.
//!
//! The TCP sink is non-blocking (mio). It connects in the background and first reads
//! the verifier's hello (docs/PROTOCOL.md, "Live sessions"), which must arrive within
//! [`HELLO_TIMEOUT`] and carry this key's id and a valid MAC; anything else closes the
//! connection, is logged once and retried with backoff. A valid hello begins a session
//! ([`crate::session`]): calls from then on are sampled with the hello's nonce and the
//! hello's sampling configuration (the verifier's rates; the library's own
//! `MMAUDIT_*_RATE` and `MMAUDIT_MAX_*` are not used with a live verifier), and the
//! stream segment written on that connection carries both in its header. Calls made
//! while there is no session (before the first hello, between connections) are
//! ledgered with NO_SESSION and not sampled; so are calls of a broken session whose
//! ledger records had not been written when it broke (their samples and gaps are lost
//! with it, as the new segment's first notice says). Each new connection starts a new
//! *segment* of the same stream (same stream id, `segment + 1`, `first_index` = the
//! first call whose ledger record was not written to the old connection, the new
//! hello's nonce and configuration); the old segment ends truncated, which the verifier reports honestly.
//!
//! When the hello offers tensors and `MMAUDIT_REFERENCES` is on, a sampled op(A) rows
//! or op(B) columns that are stored rows of an offered tensor (by the hello's keyed
//! fingerprints) are sent as an operand reference instead of the data. Never for a
//! file sink.
//!
//! It keeps a pending write buffer with an offset. Memory is bounded by
//! `MMAUDIT_BUFFER_MB`: beyond it queued sample records are replaced by gap records
//! (reason `SinkBackpressure`); if ledger records alone exceed it, [`Sink::push`] asks
//! for auditing to be disabled, and an audit-disabled notice is queued. Nothing is
//! dropped silently.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::ToSocketAddrs;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use std::sync::Arc;

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use mmaudit_protocol::call::{flags, GemmCall, GEMM_CALL_ENCODED_LEN, REPLAY_ENCODED_LEN};
use mmaudit_protocol::codec::{Reader, Writer};
use mmaudit_protocol::config::SamplingConfig;
use mmaudit_protocol::handshake::{HelloMode, HelloReader, OperandTable, ServerHello};
use mmaudit_protocol::keys::Key;
use mmaudit_protocol::record::{
    End, Gap, GapReason, Notice, NoticeKind, OperandData, Record, RECORD_HEAD_LEN,
};
use mmaudit_protocol::schedule::{Schedule, ScheduleVersion};
use mmaudit_protocol::stream::{Compression, Part, StreamHeader, StreamWriter};

use super::commit::{CommitSession, CommitTotals};
use super::Gathered;
use crate::config::SinkSpec;
use crate::log::{self, Level};
use crate::session::Ledger;

/// Raw bytes of records framed at once (a frame is at most 16 MiB raw). Small enough
/// that framing one batch (zstd, MAC, write: about 0.2 ms) takes less time than a
/// thread needs to fill half its ledger queue with back-to-back calls
/// (see docs/PERFORMANCE.md).
const BATCH_BYTES: usize = 1 << 17;
/// zstd level 1: on ledger records it compresses as well as level 3 (measured: within
/// 0.2% on a stream of repeated calls) for less CPU (docs/PERFORMANCE.md).
const COMPRESSION: Compression = Compression::Zstd { level: 1 };
/// Longest a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest the verifier's hello may take to arrive once connected.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// First and largest pause between connection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Why a sample or an opening became a gap while the buffer was full.
pub(super) const BACKPRESSURE: &str = "the sink could not keep up: MMAUDIT_BUFFER_MB is full";

/// Records of one segment, for its End record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts {
    calls: u64,
    samples: u64,
    gap_calls: u64,
}

impl Counts {
    fn add(&mut self, batch: &[Queued]) {
        for q in batch {
            match q {
                Queued::Ledgers(run) => self.calls += run.count,
                Queued::Record(r) => match &**r {
                    Record::Sample(_) | Record::Opening(_) => self.samples += 1,
                    Record::Gap(g) => self.gap_calls += g.indices.len() as u64,
                    _ => {}
                },
            }
        }
    }

    /// The End record for a writer that may have replaced oversized samples by gaps.
    fn end(&self, writer: &StreamWriter) -> Record {
        let replaced = writer.replaced_samples();
        Record::End(End {
            calls: self.calls,
            samples: self.samples - replaced.min(self.samples),
            gap_calls: self.gap_calls + replaced,
        })
    }
}

/// A live stream into a file.
struct FileOut {
    path: PathBuf,
    file: Option<File>,
    writer: StreamWriter,
    counts: Counts,
    /// The stream header when the sink is not a regular file, written with the first
    /// frame: by the background thread, never by the application's (whose write to a
    /// FIFO whose reader left would raise SIGPIPE in the application). Empty otherwise.
    header: Vec<u8>,
}

/// Opens a file sink's path for writing without ever blocking: a regular file (or a new
/// one) is created or truncated; anything else that exists (a FIFO, a character device)
/// is opened as it is, non-blocking so that a FIFO nobody reads fails at once (ENXIO)
/// instead of holding the application's first GEMM, then switched back to blocking
/// writes, which only the background thread makes.
fn open_sink_file(path: &std::path::Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::io::AsRawFd;
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() => {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(path)
                .map_err(|e| {
                    if e.raw_os_error() == Some(libc::ENXIO) {
                        std::io::Error::new(e.kind(), "a FIFO that nobody reads")
                    } else {
                        e
                    }
                })?;
            let fd = file.as_raw_fd();
            // SAFETY: fcntl on a descriptor this function owns.
            let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
            // SAFETY: as above.
            if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(file)
        }
        _ => File::create(path),
    }
}

enum Conn {
    Idle {
        retry_at: Instant,
        backoff: Duration,
    },
    Connecting {
        stream: TcpStream,
        since: Instant,
        backoff: Duration,
    },
    /// Connected; reading the verifier's hello.
    Hello(Box<Hello>),
    Up(Box<Up>),
}

struct Hello {
    stream: TcpStream,
    since: Instant,
    backoff: Duration,
    reader: HelloReader,
}

struct Up {
    stream: TcpStream,
    writer: StreamWriter,
    out: Vec<u8>,
    off: usize,
    /// Records of the frame in `out`, put back in the queue if it is not fully written.
    inflight: Vec<Queued>,
    counts: Counts,
    ended: bool,
}

/// A TCP stream in segments.
struct TcpOut {
    host: String,
    port: u16,
    poll: Option<Poll>,
    conn: Conn,
    /// The segment the next connection starts.
    segment: u32,
    /// The first call of the session of the segment being written, while there is
    /// one: the ledger records of calls below it get NO_SESSION, their samples and
    /// gaps are dropped (they belong to a broken session, or to none).
    session_first: Option<u64>,
    /// The operand table of the session's hello, when references are on and it holds
    /// tensors.
    table: Option<OperandTable>,
    /// Samples and gaps of broken sessions dropped since the last notice.
    lost: u64,
    /// Hellos refused since the last segment began, and the last reason.
    refused: u64,
    refused_why: String,
    connections: u64,
    /// The End record was written completely: the stream is over.
    done: bool,
    /// The session is in commit mode (docs/COMMIT.md): its commitments, kept calls and
    /// the verifier's challenges.
    commit: Option<Box<CommitSession>>,
    /// Commit-mode counters of the sessions that ended.
    commit_totals: CommitTotals,
}

enum Out {
    File(FileOut),
    Tcp(TcpOut),
    /// The file could not be written any more.
    Broken,
}

/// Totals over the whole process, for the exit line.
#[derive(Clone, Copy, Debug, Default)]
pub struct Totals {
    /// Ledger records queued.
    pub calls: u64,
    /// Sample records queued.
    pub samples: u64,
    /// Gap call indices queued.
    pub gaps: u64,
    /// Samples turned into gaps for backpressure.
    pub backpressure: u64,
    /// Bytes written to the sink.
    pub bytes: u64,
    /// Operands (op(A) rows or op(B) columns of a sample) sent as references.
    pub references: u64,
    /// Commit mode: commitments queued.
    pub commitments: u64,
    /// Commit mode: openings queued.
    pub openings: u64,
}

/// What waits in the sink's queue.
enum Queued {
    /// Ledger records of calls in index order, encoded already (each with the flags it
    /// is written with). Every ledger record is queued this way ([`Sink::push_ledger`]).
    Ledgers(Run),
    /// Any other record (boxed: a sample is much larger than a run's handle).
    Record(Box<Record>),
}

/// Encoded ledger records: a ledger record is encoded straight from where the
/// background thread found it into the run at the back of the queue, so that it is
/// neither copied as a structure nor encoded again when framed.
struct Run {
    bytes: Writer,
    /// The first record's call index.
    first: u64,
    /// Records in the run.
    count: u64,
}

/// Bytes at which a run is closed and a new one begun (framing takes whole runs).
const RUN_BYTES: usize = 16 << 10;
/// The longest ledger record: a run never grows past its first allocation.
const LEDGER_RECORD_MAX: usize = RECORD_HEAD_LEN + GEMM_CALL_ENCODED_LEN + REPLAY_ENCODED_LEN;

impl Queued {
    fn encoded_len(&self) -> usize {
        match self {
            Queued::Ledgers(run) => run.bytes.buf.len(),
            Queued::Record(r) => r.encoded_len(),
        }
    }

    fn part(&self) -> Part<'_> {
        match self {
            Queued::Ledgers(run) => Part::Encoded(&run.bytes.buf),
            Queued::Record(r) => Part::Record(r),
        }
    }
}

impl Run {
    /// Its records, decoded (only when a session begins with records of calls before
    /// it still queued: rare).
    fn records(&self) -> Vec<GemmCall> {
        let mut r = Reader::new(&self.bytes.buf, 0, "queued ledger records");
        let mut out = Vec::new();
        while !r.is_empty() {
            match Record::decode(&mut r) {
                Ok(Record::Ledger(c)) => out.push(c),
                // Nothing but this module writes runs, with Record::encode_ledger.
                _ => break,
            }
        }
        out
    }
}

/// The sink and its queue.
pub struct Sink {
    key: Key,
    header: StreamHeader,
    out: Out,
    queue: VecDeque<Queued>,
    queued_bytes: usize,
    buffer_bytes: usize,
    /// Queued bytes that make framing due: [`BATCH_BYTES`], or a quarter of the buffer
    /// when that is smaller, so that a healthy sink frames well before the bound.
    batch_bytes: usize,
    /// While set, new samples become gaps (the buffer was full).
    backpressure: bool,
    ledger_overflow: bool,
    oldest: Option<Instant>,
    flush_interval: Duration,
    next_ledger: u64,
    totals: Totals,
    name: String,
    ledger: Arc<Ledger>,
    references: bool,
    /// Commit mode: bytes of committed calls kept for their openings.
    retain_bytes: usize,
    /// Why auditing must stop, found while pumping (records the sink made itself, the
    /// answers to challenges, overflowed the buffer): [`Sink::pump`] returns it.
    stop: Option<String>,
}

/// A stream's writer (at the library's compression) and its header bytes.
fn stream_writer(key: &Key, header: &StreamHeader) -> (StreamWriter, Vec<u8>) {
    let (writer, bytes) = StreamWriter::new(key, header);
    (writer.with_compression(COMPRESSION), bytes)
}

/// The gap record of one call.
pub(super) fn gap(index: u64, reason: GapReason, detail: &str) -> Record {
    Record::Gap(Gap {
        indices: vec![index],
        reason,
        detail: detail.to_string(),
    })
}

fn record_index(r: &Record) -> Option<u64> {
    match r {
        Record::Sample(s) => Some(s.index),
        Record::Gap(g) => g.indices.first().copied(),
        Record::Commitment(c) => Some(c.index),
        Record::Opening(o) => Some(o.index),
        _ => None,
    }
}

impl TcpOut {
    /// A record about to be queued, seen by the session of the segment being written:
    /// a sample or gap of a call made before the session began is dropped (counted as
    /// lost; the ledger record of such a call gets NO_SESSION, see
    /// [`Sink::push_ledger`]). Between sessions everything is queued as it is (and looked
    /// at again when the next one begins).
    fn admit(&mut self, record: Record) -> Option<Record> {
        let Some(first) = self.session_first else {
            return Some(record);
        };
        match record {
            r @ (Record::Sample(_) | Record::Gap(_))
                if record_index(&r).is_some_and(|i| i < first) =>
            {
                self.lost += 1;
                None
            }
            r => Some(r),
        }
    }
}

/// `send(2)` with `MSG_NOSIGNAL`: a closed peer is an error, never a SIGPIPE that
/// would kill the host program.
fn send_nosignal(stream: &TcpStream, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: the fd is the open socket owned by `stream`; buf is valid for buf.len().
    let n = unsafe {
        libc::send(
            stream.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

impl Sink {
    /// Opens the sink. `header` is the stream's first header (segment 0, first index 0;
    /// its nonce and sampling configuration are the file sink's: a TCP sink takes both
    /// from each verifier hello instead). A file is created (truncated), its header
    /// written and its session begun now; a TCP sink connects in the background and
    /// begins a session with each verifier hello. `ledger` is the hooks' index counter, whose
    /// sessions the sink begins and ends; `references` allows operand references.
    pub fn open(
        spec: &SinkSpec,
        key: &Key,
        header: StreamHeader,
        buffer_bytes: usize,
        flush_interval: Duration,
        ledger: Arc<Ledger>,
        references: bool,
    ) -> Result<Sink, String> {
        let out = match spec {
            SinkSpec::File(path) => {
                let mut file = open_sink_file(path)
                    .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
                let (writer, mut bytes) = stream_writer(key, &header);
                // A regular file gets its header at once (a program killed before its
                // first frame leaves a truncated stream, not an empty file); writing to
                // one cannot raise SIGPIPE. Anything else gets it from the background
                // thread with the first frame.
                if file.metadata().is_ok_and(|m| m.is_file()) {
                    file.write_all(&bytes)
                        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                    bytes.clear();
                }
                ledger.begin(Schedule::for_header(key, &header));
                Out::File(FileOut {
                    path: path.clone(),
                    file: Some(file),
                    writer,
                    counts: Counts::default(),
                    header: bytes,
                })
            }
            SinkSpec::Tcp { host, port } => Out::Tcp(TcpOut {
                host: host.clone(),
                port: *port,
                poll: Poll::new().ok(),
                conn: Conn::Idle {
                    retry_at: Instant::now(),
                    backoff: BACKOFF_MIN,
                },
                segment: 0,
                session_first: None,
                table: None,
                lost: 0,
                refused: 0,
                refused_why: String::new(),
                connections: 0,
                done: false,
                commit: None,
                commit_totals: CommitTotals::default(),
            }),
        };
        Ok(Sink {
            key: key.clone(),
            header,
            out,
            queue: VecDeque::new(),
            queued_bytes: 0,
            buffer_bytes,
            batch_bytes: BATCH_BYTES.min(buffer_bytes / 4).max(1),
            backpressure: false,
            ledger_overflow: false,
            oldest: None,
            flush_interval,
            next_ledger: 0,
            totals: Totals::default(),
            name: spec.to_string(),
            ledger,
            references,
            retain_bytes: (crate::config::DEFAULT_RETAIN_MB << 20) as usize,
            stop: None,
        })
    }

    /// The same sink keeping at most `bytes` of committed calls in a commit-mode
    /// session (`MMAUDIT_RETAIN_MB`).
    pub fn with_retention(mut self, bytes: usize) -> Self {
        self.retain_bytes = bytes;
        self
    }

    /// The batching interval.
    pub fn flush_interval(&self) -> Duration {
        self.flush_interval
    }

    /// Whether there is anything to write (the thread then ticks fast).
    pub fn busy(&self) -> bool {
        if !self.queue.is_empty() {
            return true;
        }
        match &self.out {
            Out::Tcp(t) => match &t.conn {
                Conn::Up(u) => {
                    u.off < u.out.len() || t.commit.as_ref().is_some_and(|c| c.awaiting())
                }
                Conn::Connecting { .. } | Conn::Hello(_) => true,
                Conn::Idle { .. } => false,
            },
            _ => false,
        }
    }

    /// Totals so far.
    pub fn totals(&self) -> Totals {
        self.totals
    }

    /// Queues a sample record, first replacing its operands by references to tensors
    /// of the session's hello where they are stored rows of one (TCP sink with
    /// references on). Returns what [`Sink::push`] returns.
    pub fn push_sample(&mut self, gathered: Gathered) -> Option<String> {
        let Gathered {
            mut sample,
            operands,
            call,
            a_key,
            held,
            leaves,
            device,
        } = gathered;
        if let Out::Tcp(TcpOut {
            commit: Some(session),
            table,
            session_first: Some(first),
            ..
        }) = &mut self.out
        {
            if sample.index >= *first {
                // Commit mode: the sample is the whole call; its commitment goes out, the
                // data stays until the verifier's challenge.
                let index = sample.index;
                let record = match call {
                    Some(call) if call.index == index => {
                        match session.commit_or_refetch(
                            call,
                            sample,
                            table.as_ref(),
                            a_key,
                            held,
                            leaves,
                            device,
                        ) {
                            Ok(Some(r)) => r,
                            // Its vectors come back from device memory first.
                            Ok(None) => return None,
                            Err(e) => gap(index, GapReason::NotCommitted, &e),
                        }
                    }
                    _ => gap(
                        index,
                        GapReason::NotCommitted,
                        "the gathered data came without its call",
                    ),
                };
                self.totals.commitments += matches!(record, Record::Commitment(_)) as u64;
                return self.push_in_order(record);
            }
        }
        if held.is_some() || device.is_some() {
            // Gathered for a commit-mode session that ended before it arrived: op(A) is
            // not whole, or the call is in device memory, so it is no sample.
            return self.push(gap(
                sample.index,
                GapReason::Internal,
                "gathered for a commit-mode session (op(A) as evidence only, or kept in device memory), which has ended",
            ));
        }
        if let (Out::Tcp(t), Some(ops)) = (&self.out, &operands) {
            if let (Some(table), Some(first)) = (&t.table, t.session_first) {
                if sample.index >= first {
                    for (data, dtype, indices) in [
                        (&mut sample.a_rows, ops.a, &ops.rows),
                        (&mut sample.b_cols, ops.b, &ops.cols),
                    ] {
                        let found = match &*data {
                            OperandData::Inline(bytes) => {
                                table.reference(dtype, ops.k, indices, ops.batches, bytes)
                            }
                            OperandData::Reference { .. } => None,
                        };
                        if let Some(r) = found {
                            *data = r;
                            self.totals.references += 1;
                        }
                    }
                }
            }
        }
        self.push(Record::Sample(sample))
    }

    /// Queues a record. Returns a reason when auditing must stop because even the
    /// ledger cannot be kept within `MMAUDIT_BUFFER_MB`.
    pub fn push(&mut self, record: Record) -> Option<String> {
        if let Record::Ledger(call) = &record {
            return self.push_ledger(call, 0);
        }
        let record = match &mut self.out {
            // A record of a broken session is dropped here (counted as lost).
            Out::Tcp(t) => t.admit(record)?,
            _ => record,
        };
        let record = match (record, &self.out) {
            // In commit mode a sampled call is a call to commit to: one without data
            // is "not committed" (counted by the verifier's --max-uncommitted), whatever
            // kept its data from coming.
            (Record::Gap(mut g), Out::Tcp(t))
                if t.commit.is_some()
                    && g.reason != GapReason::NotRetained
                    && t.session_first
                        .is_some_and(|f| g.indices.iter().all(|&i| i >= f)) =>
            {
                g.reason = GapReason::NotCommitted;
                return self.push_in_order(Record::Gap(g));
            }
            (r, _) => r,
        };
        self.enqueue(record)
    }

    /// Commit mode: a commitment or "not committed" gap goes out in index order after
    /// those of the calls before it ([`CommitSession::order`]).
    fn push_in_order(&mut self, record: Record) -> Option<String> {
        let ready = match (&mut self.out, record_index(&record)) {
            (
                Out::Tcp(TcpOut {
                    commit: Some(session),
                    ..
                }),
                Some(index),
            ) => session.order(index, record),
            _ => vec![record],
        };
        let mut stop = None;
        for r in ready {
            if let Some(why) = self.enqueue(r) {
                stop.get_or_insert(why);
            }
        }
        stop
    }

    /// Queues a record as it is (a sample or an opening becomes a backpressure gap while
    /// the buffer is full).
    fn enqueue(&mut self, record: Record) -> Option<String> {
        let record = match record {
            r @ (Record::Sample(_) | Record::Opening(_)) if self.backpressure => {
                self.totals.backpressure += 1;
                let index = record_index(&r).unwrap_or(0);
                gap(index, GapReason::SinkBackpressure, BACKPRESSURE)
            }
            r => r,
        };
        match &record {
            Record::Sample(_) => self.totals.samples += 1,
            Record::Opening(_) => self.totals.openings += 1,
            Record::Gap(g) => self.totals.gaps += g.indices.len() as u64,
            _ => {}
        }
        self.queued_bytes += record.encoded_len();
        self.queue.push_back(Queued::Record(Box::new(record)));
        self.oldest.get_or_insert_with(Instant::now);
        self.enforce_bound()
    }

    /// Queues the ledger record of `call` with `extra` flags (REJECTED when the library
    /// answered with an error): encoded at once into the run at the back of the queue.
    /// A call made before the session of the segment being written gets NO_SESSION.
    /// Returns what [`Sink::push`] returns.
    pub fn push_ledger(&mut self, call: &GemmCall, extra: u16) -> Option<String> {
        let mut extra = extra;
        if let Out::Tcp(t) = &self.out {
            if t.session_first.is_some_and(|first| call.index < first) {
                extra |= flags::NO_SESSION;
            }
        }
        self.totals.calls += 1;
        self.next_ledger = call.index + 1;
        if let Out::Tcp(TcpOut {
            commit: Some(session),
            session_first: Some(first),
            ..
        }) = &mut self.out
        {
            // Auditable as the record is written (with the flags added here).
            let audited = extra & flags::NOT_AUDITED == 0;
            if call.index >= *first && audited && mmaudit_protocol::schedule::auditable(call) {
                session.expect(call.index);
            }
        }
        if !matches!(self.queue.back(), Some(Queued::Ledgers(run)) if run.bytes.buf.len() < RUN_BYTES)
        {
            self.queue.push_back(Queued::Ledgers(Run {
                bytes: Writer::with_capacity(RUN_BYTES + LEDGER_RECORD_MAX),
                first: call.index,
                count: 0,
            }));
        }
        let Some(Queued::Ledgers(run)) = self.queue.back_mut() else {
            return None;
        };
        let before = run.bytes.buf.len();
        Record::encode_ledger(call, extra, &mut run.bytes);
        run.count += 1;
        self.queued_bytes += run.bytes.buf.len() - before;
        self.oldest.get_or_insert_with(Instant::now);
        self.enforce_bound()
    }

    fn enforce_bound(&mut self) -> Option<String> {
        if self.queued_bytes <= self.buffer_bytes {
            if self.backpressure && self.queued_bytes <= self.buffer_bytes / 2 {
                self.backpressure = false;
            }
            return None;
        }
        if !self.backpressure {
            self.backpressure = true;
            log::once(
                Level::Warn,
                "backpressure",
                &format!(
                    "the sink {} cannot keep up ({} KiB queued, MMAUDIT_BUFFER_MB={}): sampled data is replaced by gap records until it catches up",
                    self.name,
                    self.queued_bytes >> 10,
                    self.buffer_bytes >> 20
                ),
            );
            for q in self.queue.iter_mut() {
                let Queued::Record(r) = q else { continue };
                let index = match &**r {
                    Record::Sample(s) => {
                        self.totals.samples -= 1;
                        s.index
                    }
                    Record::Opening(o) => {
                        self.totals.openings -= 1;
                        o.index
                    }
                    _ => continue,
                };
                let g = gap(index, GapReason::SinkBackpressure, BACKPRESSURE);
                self.queued_bytes = self.queued_bytes + g.encoded_len() - r.encoded_len();
                self.totals.gaps += 1;
                self.totals.backpressure += 1;
                **r = g;
            }
        }
        if self.queued_bytes > self.buffer_bytes && !self.ledger_overflow {
            self.ledger_overflow = true;
            let message = format!(
                "the sink {} could not take the ledger: more than MMAUDIT_BUFFER_MB ({} MiB) of records are waiting; auditing stopped after call {}",
                self.name,
                self.buffer_bytes >> 20,
                self.next_ledger.saturating_sub(1)
            );
            let n = Record::Notice(Notice {
                kind: NoticeKind::AuditDisabled,
                message: message.clone(),
            });
            self.queued_bytes += n.encoded_len();
            self.queue.push_back(Queued::Record(Box::new(n)));
            return Some(message);
        }
        None
    }

    /// Takes records from the queue for one frame (at most about [`BATCH_BYTES`]).
    fn take_batch(&mut self) -> Vec<Queued> {
        let mut bytes = 0;
        let mut batch = Vec::new();
        while let Some(r) = self.queue.front() {
            let len = r.encoded_len();
            if !batch.is_empty() && bytes + len > BATCH_BYTES {
                break;
            }
            bytes += len;
            self.queued_bytes -= len;
            if let Some(r) = self.queue.pop_front() {
                batch.push(r);
            }
        }
        if self.queue.is_empty() {
            self.oldest = None;
        } else {
            self.oldest = Some(Instant::now());
        }
        self.enforce_bound();
        batch
    }

    fn due(&self, now: Instant, force: bool) -> bool {
        !self.queue.is_empty()
            && (force
                || self.queued_bytes >= self.batch_bytes
                || self
                    .oldest
                    .is_some_and(|t| now.duration_since(t) >= self.flush_interval))
    }

    /// Makes progress without blocking: frames due records and writes what the sink
    /// takes; for TCP also connects, reconnects and detects a closed peer. `force`
    /// frames everything queued now. An error means the sink is unusable.
    pub fn pump(&mut self, now: Instant, force: bool) -> Result<(), String> {
        if matches!(self.out, Out::File(_)) {
            while self.due(now, force) {
                let batch = self.take_batch();
                self.write_file(&batch)?;
            }
            return Ok(());
        }
        if matches!(self.out, Out::Tcp(_)) {
            self.pump_tcp(now, force);
        }
        match self.stop.take() {
            Some(why) => Err(why),
            None => Ok(()),
        }
    }

    fn write_file(&mut self, batch: &[Queued]) -> Result<(), String> {
        let Out::File(f) = &mut self.out else {
            return Ok(());
        };
        let mut bytes = std::mem::take(&mut f.header);
        bytes.extend_from_slice(&f.writer.frame_parts(batch.iter().map(Queued::part)));
        f.counts.add(batch);
        let result = match &mut f.file {
            Some(file) => file.write_all(&bytes),
            None => Ok(()),
        };
        match result {
            Ok(()) => {
                self.totals.bytes += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                let msg = format!("cannot write {}: {e}; auditing stopped", f.path.display());
                self.out = Out::Broken;
                self.queue.clear();
                self.queued_bytes = 0;
                Err(msg)
            }
        }
    }

    fn pump_tcp(&mut self, now: Instant, force: bool) {
        let Out::Tcp(t) = &mut self.out else {
            return;
        };
        if let Some(poll) = &mut t.poll {
            let mut events = Events::with_capacity(4);
            let _ = poll.poll(&mut events, Some(Duration::ZERO));
        }
        // Idle -> Connecting
        if let Conn::Idle { retry_at, backoff } = t.conn {
            if now >= retry_at {
                t.conn = match connect(&t.host, t.port, t.poll.as_ref()) {
                    Ok(stream) => Conn::Connecting {
                        stream,
                        since: now,
                        backoff,
                    },
                    Err(e) => {
                        log::emit(Level::Debug, &format!("connecting to {}: {e}", self.name));
                        Conn::Idle {
                            retry_at: now + backoff,
                            backoff: (backoff * 2).min(BACKOFF_MAX),
                        }
                    }
                };
            }
        }
        // Connecting -> Up or Idle
        let Out::Tcp(t) = &mut self.out else {
            return;
        };
        if let Conn::Connecting {
            stream,
            since,
            backoff,
        } = &t.conn
        {
            let failed = match stream.take_error() {
                Ok(Some(e)) | Err(e) => Some(e.to_string()),
                Ok(None) => None,
            };
            let connected = failed.is_none() && stream.peer_addr().is_ok();
            let timed_out = now.duration_since(*since) > CONNECT_TIMEOUT;
            let backoff = *backoff;
            if connected {
                let old = std::mem::replace(
                    &mut t.conn,
                    Conn::Idle {
                        retry_at: now,
                        backoff,
                    },
                );
                if let Conn::Connecting { stream, .. } = old {
                    t.conn = Conn::Hello(Box::new(Hello {
                        stream,
                        since: now,
                        backoff,
                        reader: HelloReader::new(&self.key),
                    }));
                }
            } else if failed.is_some() || timed_out {
                log::emit(
                    Level::Debug,
                    &format!(
                        "connecting to {}: {}",
                        self.name,
                        failed.unwrap_or_else(|| "timed out".into())
                    ),
                );
                if let Out::Tcp(t) = &mut self.out {
                    t.conn = Conn::Idle {
                        retry_at: now + backoff,
                        backoff: (backoff * 2).min(BACKOFF_MAX),
                    };
                }
            }
        }
        // Hello -> Up, or refused
        self.read_hello(now);
        // Up: frame and write until the socket would block.
        loop {
            let need_batch = matches!(&self.out, Out::Tcp(t) if matches!(&t.conn, Conn::Up(u) if u.off >= u.out.len()));
            if need_batch {
                if !self.due(now, force) {
                    break;
                }
                let batch = self.take_batch();
                let Out::Tcp(t) = &mut self.out else { return };
                let Conn::Up(u) = &mut t.conn else { return };
                u.out = u.writer.frame_parts(batch.iter().map(Queued::part));
                u.off = 0;
                u.counts.add(&batch);
                u.inflight = batch;
            }
            let Out::Tcp(t) = &mut self.out else { return };
            let Conn::Up(u) = &mut t.conn else { return };
            if u.off >= u.out.len() {
                break;
            }
            match send_nosignal(&u.stream, &u.out[u.off..]) {
                Ok(0) => {
                    self.break_connection(now, "the connection closed");
                    return;
                }
                Ok(n) => {
                    u.off += n;
                    self.totals.bytes += n as u64;
                    if u.off >= u.out.len() {
                        u.inflight.clear();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.break_connection(now, &e.to_string());
                    return;
                }
            }
        }
        self.read_verifier(now);
    }

    /// Reads what the verifier sent after its hello: in commit mode its challenge
    /// frames, whose answers (openings, "not retained" gaps) are queued; otherwise
    /// nothing may come. A closed peer is noticed here, even with nothing to write.
    fn read_verifier(&mut self, now: Instant) {
        // Openings whose vectors have come from device memory go out first, and calls
        // whose vectors came back to be hashed on the host are committed to.
        if let Out::Tcp(TcpOut {
            commit: Some(session),
            table,
            ..
        }) = &mut self.out
        {
            let answers = session.poll_openings();
            let commitments = session.poll_refetches(table.as_ref());
            for answer in answers {
                if let Some(why) = self.enqueue(answer) {
                    self.stop.get_or_insert(why);
                }
            }
            for record in commitments {
                self.totals.commitments += matches!(record, Record::Commitment(_)) as u64;
                if let Some(why) = self.push_in_order(record) {
                    self.stop.get_or_insert(why);
                }
            }
        }
        let mut buf = [0u8; 16 << 10];
        let mut broken = None;
        // At most 1 MiB a pump: a verifier that floods cannot hold the thread.
        for _ in 0..64 {
            let Out::Tcp(t) = &mut self.out else { return };
            let Conn::Up(u) = &mut t.conn else { return };
            let n = match (&u.stream).read(&mut buf) {
                Ok(0) => {
                    broken = Some("the verifier closed the connection".to_string());
                    break;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    broken = Some(e.to_string());
                    break;
                }
            };
            // The session is taken out while its answers are queued one by one, so that
            // the buffer's bound applies to each (an answer made while it is full is a
            // gap, and its opening is never built).
            let Some(mut session) = t.commit.take() else {
                // A verifier in sampling mode sends nothing after its hello.
                broken = Some("the verifier sent bytes after its hello".to_string());
                break;
            };
            let answered = session.answer_bytes(&buf[..n], !self.backpressure, |answer| {
                if let Some(why) = self.enqueue(answer) {
                    self.stop.get_or_insert(why);
                }
                !self.backpressure
            });
            if let Out::Tcp(t) = &mut self.out {
                t.commit = Some(session);
            }
            if let Err(e) = answered {
                broken = Some(e);
                break;
            }
        }
        if let Some(why) = broken {
            self.break_connection(now, &why);
        }
    }

    /// Reads what has arrived of the verifier's hello; a complete, valid one starts
    /// the segment, anything else (another key, a bad MAC, garbage, a closed
    /// connection, [`HELLO_TIMEOUT`]) closes the connection and retries with backoff.
    fn read_hello(&mut self, now: Instant) {
        let Out::Tcp(t) = &mut self.out else { return };
        let Conn::Hello(h) = &mut t.conn else { return };
        let mut buf = [0u8; 16 << 10];
        let outcome = loop {
            match (&h.stream).read(&mut buf) {
                Ok(0) => {
                    break Err(match h.reader.finish() {
                        Err(e) => e.to_string(),
                        Ok(()) => "the connection closed".to_string(),
                    })
                }
                Ok(n) => match h.reader.push(&buf[..n]) {
                    Ok(Some(hello)) => break Ok(hello),
                    Ok(None) => {}
                    Err(e) => break Err(e.to_string()),
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if now.duration_since(h.since) > HELLO_TIMEOUT {
                        break Err(format!(
                            "no hello within {} s ({} bytes received)",
                            HELLO_TIMEOUT.as_secs(),
                            h.reader.bytes_received()
                        ));
                    }
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e.to_string()),
            }
        };
        // The hello's MAC: a commit-mode session's challenge frames chain from it.
        let outcome = outcome.and_then(|hello| {
            h.reader
                .mac()
                .map(|mac| (hello, mac))
                .ok_or_else(|| "the hello reader kept no MAC".to_string())
        });
        let backoff = h.backoff;
        let old = std::mem::replace(
            &mut t.conn,
            Conn::Idle {
                retry_at: now + backoff,
                backoff: (backoff * 2).min(BACKOFF_MAX),
            },
        );
        let Conn::Hello(h) = old else { return };
        let mut stream = h.stream;
        match outcome {
            Ok((hello, mac)) => self.start_segment(stream, hello, mac),
            Err(why) => {
                if let Some(poll) = &t.poll {
                    let _ = poll.registry().deregister(&mut stream);
                }
                drop(stream);
                t.refused += 1;
                t.refused_why = why.clone();
                log::once(
                    Level::Warn,
                    "refused hello",
                    &format!(
                        "{} did not open a session ({why}); the connection is closed and retried (calls until a session begins are recorded as not audited)",
                        self.name
                    ),
                );
                log::emit(
                    Level::Debug,
                    &format!("{}: hello refused: {why}", self.name),
                );
            }
        }
    }

    /// The verifier's hello arrived on `stream`: begin its session and start a stream
    /// segment with its nonce and its sampling configuration (the verifier's rates,
    /// not the environment's: the session's schedule and the segment's header both use
    /// the hello's).
    fn start_segment(&mut self, stream: TcpStream, hello: ServerHello, hello_mac: [u8; 32]) {
        let sampling = hello.sampling;
        if sampling != self.header.config {
            log::once(
                Level::Info,
                "hello rates",
                &format!(
                    "{} sets the sampling rates of the session: {}; MMAUDIT_* asked for {} (used only with a file sink)",
                    self.name,
                    rates(&sampling),
                    rates(&self.header.config)
                ),
            );
        }
        // The library follows the hello's mode; no setting of its own chooses it.
        let commit = hello.mode == HelloMode::Commit;
        let schedule = if commit {
            ScheduleVersion::Commit
        } else {
            self.header.schedule
        };
        // A new hello may offer other tensors: addresses found before are forgotten,
        // before any call of the new session can look them up.
        crate::held::begin(if commit && self.references {
            &hello.tensors
        } else {
            &[]
        });
        let session = self.ledger.begin(Schedule::with_version(
            &self.key,
            hello.nonce,
            sampling,
            schedule,
        ));
        let session_first = session.first_index;
        let first_index = self
            .queue
            .iter()
            .find_map(|q| match q {
                Queued::Ledgers(run) => Some(run.first),
                Queued::Record(_) => None,
            })
            .unwrap_or(self.next_ledger);
        let Out::Tcp(t) = &mut self.out else { return };
        let segment = t.segment;
        t.connections += 1;
        t.session_first = Some(session_first);
        t.table = (self.references && !hello.tensors.is_empty())
            .then(|| OperandTable::new(&self.key, hello.clone()));
        // Records queued before this session: ledger records of calls made in another
        // session (or none) are not audited in this one; their samples and gaps cannot
        // go in it (the verifier pairs them with its schedule).
        let mut removed_bytes = 0;
        let before = self.queue.len();
        self.queue.retain_mut(|q| match q {
            Queued::Ledgers(run) if run.first < session_first => {
                // Encoded with the flags of the session they were queued in: encoded
                // again, those before this session with NO_SESSION.
                let mut bytes = Writer::with_capacity(run.bytes.buf.len());
                for c in run.records() {
                    let extra = if c.index < session_first {
                        flags::NO_SESSION
                    } else {
                        0
                    };
                    Record::encode_ledger(&c, extra, &mut bytes);
                }
                run.bytes = bytes;
                true
            }
            // record_index names samples and gaps only.
            Queued::Record(r) if record_index(r).is_some_and(|i| i < session_first) => {
                removed_bytes += r.encoded_len();
                false
            }
            _ => true,
        });
        self.queued_bytes -= removed_bytes;
        t.lost += (before - self.queue.len()) as u64;
        let mut notices = Vec::new();
        if segment > 0 {
            notices.push(Notice {
                kind: NoticeKind::Warning,
                message: format!(
                    "the connection to the verifier was lost; this is segment {segment} of stream {:016x}, continuing from call {first_index} in a new session from call {session_first}; segment {} ends truncated, calls before {session_first} not written to it are recorded as not audited (no session), and {} sample or gap records of calls before {session_first} were lost",
                    self.header.stream_id,
                    segment - 1,
                    t.lost
                ),
            });
        }
        if t.refused > 0 {
            notices.push(Notice {
                kind: NoticeKind::Warning,
                message: format!(
                    "{} connections before this one did not open a session (last: {})",
                    t.refused, t.refused_why
                ),
            });
        }
        t.commit =
            commit.then(|| Box::new(CommitSession::new(&self.key, hello_mac, self.retain_bytes)));
        if commit {
            log::once(
                Level::Info,
                "commit mode",
                &format!(
                    "{} asked for commit mode: every auditable call is gathered whole and committed to, and kept (up to MMAUDIT_RETAIN_MB = {} MiB) until the verifier's challenge",
                    self.name,
                    self.retain_bytes >> 20
                ),
            );
        }
        t.lost = 0;
        t.refused = 0;
        for n in notices.into_iter().rev() {
            let n = Record::Notice(n);
            self.queued_bytes += n.encoded_len();
            self.queue.push_front(Queued::Record(Box::new(n)));
        }
        if !self.queue.is_empty() {
            self.oldest.get_or_insert_with(Instant::now);
        }
        let header = StreamHeader {
            nonce: hello.nonce,
            config: sampling,
            segment,
            first_index,
            schedule,
            ..self.header.clone()
        };
        let (writer, bytes) = stream_writer(&self.key, &header);
        log::emit(
            Level::Debug,
            &format!(
                "connected to {}: segment {segment} from call {first_index}, session from call {session_first}, {} tensors offered",
                self.name,
                hello.tensors.len()
            ),
        );
        t.conn = Conn::Up(Box::new(Up {
            stream,
            writer,
            out: bytes,
            off: 0,
            inflight: Vec::new(),
            counts: Counts::default(),
            ended: false,
        }));
    }

    fn break_connection(&mut self, now: Instant, why: &str) {
        let Out::Tcp(t) = &mut self.out else { return };
        // The session ends with its connection: calls from now on have none.
        self.ledger.end();
        t.session_first = None;
        t.table = None;
        if let Some(c) = t.commit.take() {
            t.commit_totals.add(&c.totals);
        }
        let old = std::mem::replace(
            &mut t.conn,
            Conn::Idle {
                retry_at: now + BACKOFF_MIN,
                backoff: BACKOFF_MIN * 2,
            },
        );
        if let Conn::Up(mut u) = old {
            if let Some(poll) = &t.poll {
                let _ = poll.registry().deregister(&mut u.stream);
            }
            if u.ended && u.off >= u.out.len() {
                // Everything, End record included, was written: nothing to resend.
                t.done = true;
                return;
            }
            t.segment += 1;
            log::emit(
                Level::Warn,
                &format!(
                    "lost the connection to {} ({why}); segment {} ends truncated, reconnecting",
                    self.name,
                    t.segment - 1
                ),
            );
            let unsent = std::mem::take(&mut u.inflight);
            for r in unsent.into_iter().rev() {
                self.queued_bytes += r.encoded_len();
                self.queue.push_front(r);
            }
            self.oldest.get_or_insert_with(Instant::now);
            self.enforce_bound();
        }
    }

    /// Ends the stream: frames everything queued, then the End record, and delivers it
    /// all by `deadline` (TCP: connecting or reconnecting as needed). Returns a summary
    /// line, or what could not be delivered.
    pub fn finish(&mut self, deadline: Instant) -> Result<String, String> {
        let summary = |t: Totals, name: &str| {
            let commit = if t.commitments > 0 {
                format!(", {} commitments, {} openings", t.commitments, t.openings)
            } else {
                String::new()
            };
            format!(
                "stream to {name} finished: {} calls, {} samples, {} gap calls ({} for backpressure), {} operands sent as references{commit}, {} bytes",
                t.calls, t.samples, t.gaps, t.backpressure, t.references, t.bytes
            )
        };
        match &self.out {
            Out::Broken => return Err(format!("the stream to {} was broken", self.name)),
            Out::File(_) => {
                self.pump(Instant::now(), true)?;
                let Out::File(f) = &mut self.out else {
                    return Err(format!("the stream to {} was broken", self.name));
                };
                let end = f.counts.end(&f.writer);
                let mut bytes = std::mem::take(&mut f.header);
                bytes.extend_from_slice(&f.writer.frame(&[end]));
                if let Some(file) = &mut f.file {
                    file.write_all(&bytes)
                        .and_then(|_| file.flush())
                        .map_err(|e| format!("cannot write {}: {e}", f.path.display()))?;
                }
                self.totals.bytes += bytes.len() as u64;
                return Ok(summary(self.totals, &self.name));
            }
            Out::Tcp(_) => {}
        }
        loop {
            let now = Instant::now();
            self.pump_tcp(now, true);
            let queue_empty = self.queue.is_empty();
            let Out::Tcp(t) = &mut self.out else {
                return Err(format!("the stream to {} was broken", self.name));
            };
            if t.done {
                return Ok(summary(self.totals, &self.name) + &commit_summary(t));
            }
            // In commit mode the stream ends only once the verifier has judged every
            // commitment (and its challenges are answered); nothing more will come, so
            // what waits for an earlier call goes now.
            let held = t.commit.as_mut().map(|c| c.flush()).unwrap_or_default();
            if !held.is_empty() {
                for r in held {
                    self.enqueue(r);
                }
                continue;
            }
            let Out::Tcp(t) = &mut self.out else {
                return Err(format!("the stream to {} was broken", self.name));
            };
            let awaiting = t.commit.as_ref().is_some_and(|c| c.awaiting());
            if let Conn::Up(u) = &mut t.conn {
                if queue_empty && u.off >= u.out.len() && !awaiting {
                    if u.ended {
                        let _ = u.stream.shutdown(std::net::Shutdown::Write);
                        t.done = true;
                        return Ok(summary(self.totals, &self.name) + &commit_summary(t));
                    }
                    // Everything queued is written: the End record follows.
                    let end = u.counts.end(&u.writer);
                    u.out = u.writer.frame(std::slice::from_ref(&end));
                    u.off = 0;
                    u.inflight = Vec::new();
                    u.ended = true;
                    continue;
                }
            }
            if now >= deadline {
                let challenges = if awaiting {
                    " (the verifier had not sent the challenges of every commitment)"
                } else {
                    ""
                };
                return Err(format!(
                    "exit: {} records ({} bytes) and the end record could not be delivered to {} within MMAUDIT_EXIT_TIMEOUT_MS{challenges}; the verifier will see the stream truncated",
                    self.queue.len(),
                    self.queued_bytes,
                    self.name
                ));
            }
            std::thread::sleep(Duration::from_micros(500));
        }
    }
}

/// The commit-mode counters of a TCP sink's sessions, for the exit line (empty when
/// no session was in commit mode).
fn commit_summary(t: &TcpOut) -> String {
    let mut c = t.commit_totals;
    if let Some(s) = &t.commit {
        c.add(&s.totals);
    }
    if c.committed == 0 {
        return String::new();
    }
    format!(
        "; commit mode: {} calls committed ({} with op(A) found to be a held tensor by its spot rows, not copied; {} hashed on the GPU, {} kept in GPU memory, {} operands whose GPU hashes disagreed with the host's and were hashed again on the host; {} calls kept in GPU memory copied back to host memory to be hashed there), {} challenges opened, {} answered \"not retained\", {} kept calls dropped for MMAUDIT_RETAIN_MB",
        c.committed, c.by_address, c.gpu_hashed, c.on_device, c.leaf_mismatches, c.refetched, c.opened, c.not_retained, c.dropped
    )
}

/// A sampling configuration for a log line: its rates in ppm, and any bounds other than
/// the defaults.
pub fn rates(c: &SamplingConfig) -> String {
    let mut out = format!(
        "{} ppm of calls, {} ppm of rows, {} ppm of columns, {} ppm of batch entries",
        c.call_ppm, c.row_ppm, c.col_ppm, c.batch_ppm
    );
    let d = SamplingConfig::default();
    for (name, v, default) in [
        ("min rows", c.min_rows, d.min_rows),
        ("min columns", c.min_cols, d.min_cols),
        ("min batch entries", c.min_batches, d.min_batches),
        ("max rows", c.max_rows, d.max_rows),
        ("max columns", c.max_cols, d.max_cols),
        ("max batch entries", c.max_batches, d.max_batches),
    ] {
        if v != default {
            out.push_str(&format!(", {name} {v}"));
        }
    }
    out
}

fn connect(host: &str, port: u16, poll: Option<&Poll>) -> io::Result<TcpStream> {
    let addr = (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the host has no address"))?;
    let mut stream = TcpStream::connect(addr)?;
    let _ = stream.set_nodelay(true);
    if let Some(poll) = poll {
        poll.registry().register(
            &mut stream,
            Token(0),
            Interest::READABLE | Interest::WRITABLE,
        )?;
    }
    Ok(stream)
}

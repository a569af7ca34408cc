//! One prover connection: the hello out, the stream in, audited as it arrives.
//!
//! The connection writes the verifier's hello from a pending buffer with an offset
//! (a short write is not an error), tees every received byte to its capture, feeds the
//! bytes to a [`StreamReader`] and the decoded records, one at a time, to the same
//! [`StreamAudit`] that `check` runs, so that a live verdict and the offline verdict of
//! its capture are the same. Its work per turn is bounded by a deadline, so that one
//! busy stream never starves the others; it never blocks.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use mio::net::TcpStream;
use mmaudit_protocol::commit::frames::ChallengeWriter;
use mmaudit_protocol::handshake::{self, HELLO_NONCE_OFFSET};
use mmaudit_protocol::keys::Key;
use mmaudit_protocol::record::Record;
use mmaudit_protocol::schedule::ScheduleVersion;
use mmaudit_protocol::stream::{Event, StreamError, StreamHeader, StreamReader, Unit, MAC_LEN};

use super::capture::{base_name, Capture};
use crate::audit::StreamAudit;
use crate::check::{decode_frame, OrderedFrames};
use crate::policy::Policy;
use crate::pool::Pool;
use crate::weights::WeightPolicy;

/// Settings every connection shares.
pub struct ConnConfig<'a> {
    /// the audit key
    pub key: &'a Key,
    /// held weights, if any
    pub weights: Option<&'a WeightPolicy>,
    /// failure details kept per stream
    pub max_failures: usize,
    /// the audit policy each stream is judged by
    pub policy: &'a Policy,
    /// where captures go
    pub capture_dir: Option<&'a std::path::Path>,
    /// largest partial frame buffered per connection
    pub conn_buffer: usize,
    /// threads shared by every connection's audit for recomputing samples
    pub workers: Option<&'a std::sync::Arc<crate::pool::Workers>>,
    /// commit mode: the verifier's challenge key
    pub challenge_key: Option<[u8; 32]>,
}

/// Frames of one connection decoded on the shared threads at once, at most; the others
/// the reader completed wait (at most one read's worth), and the connection reads no
/// more bytes until they are back.
const DECODE_AHEAD: usize = 1;

/// Most challenge bytes queued for a prover that does not read them: past it the
/// stream fails.
pub const MAX_CHALLENGE_BACKLOG: usize = 16 << 20;

/// Commit mode: the challenge frames of one connection, written from a buffer.
struct ChallengesOut {
    writer: ChallengeWriter,
    buf: Vec<u8>,
    off: usize,
}

/// What a turn of [`Conn::service`] ended with.
#[derive(Debug)]
pub enum Step {
    /// Everything available was handled: wait for readiness.
    Wait,
    /// The turn's deadline passed with work left: serve it again soon.
    More,
    /// The stream is over (end record, end of input, or an error): finish it.
    Finished(String),
    /// The connection carried no stream (bad bytes before an authenticated header, or
    /// closed before one): close it with this reason.
    Rejected(String),
}

/// Something for the server's log.
pub type LogLine = String;

/// The hello as one connection sends it: the shared encoded table with this
/// connection's nonce and MAC in place, written from an offset (no per-connection copy
/// of a table that may be megabytes long).
pub struct HelloOut {
    template: Arc<[u8]>,
    nonce: [u8; 16],
    mac: [u8; MAC_LEN],
    off: usize,
}

impl HelloOut {
    /// `template` (an encoded hello) with `nonce`.
    pub fn new(template: Arc<[u8]>, key: &Key, nonce: [u8; 16]) -> Self {
        let mac = handshake::nonce_mac(&template, key, nonce).unwrap_or([0; MAC_LEN]);
        HelloOut {
            template,
            nonce,
            mac,
            off: 0,
        }
    }

    fn len(&self) -> usize {
        self.template.len()
    }

    /// The bytes from the offset to the end of the piece it falls in.
    fn next(&self) -> &[u8] {
        let n = HELLO_NONCE_OFFSET;
        let mac_at = self.len() - MAC_LEN;
        let off = self.off;
        if off < n {
            &self.template[off..n]
        } else if off < n + 16 {
            &self.nonce[off - n..]
        } else if off < mac_at {
            &self.template[off..mac_at]
        } else {
            &self.mac[off - mac_at..]
        }
    }

    fn done(&self) -> bool {
        self.off >= self.len()
    }
}

/// One prover connection.
pub struct Conn {
    /// the socket
    pub stream: TcpStream,
    /// the peer's address
    pub peer: SocketAddr,
    /// when it was accepted
    pub accepted: Instant,
    /// when bytes last arrived
    pub last_rx: Instant,
    /// bytes received
    pub bytes_rx: u64,
    /// the nonce of this connection's hello
    pub nonce: [u8; 16],
    /// the authenticated header, once read
    pub header: Option<StreamHeader>,
    /// in the server's ready queue
    pub queued: bool,
    out: HelloOut,
    reader: StreamReader,
    /// with shared threads: the frames being decoded on them
    decoding: Option<OrderedFrames>,
    /// the error they stopped the stream with (before any of the reader's own)
    decode_error: Option<StreamError>,
    /// the audit (of the stream once its header is read)
    pub audit: StreamAudit,
    backlog: VecDeque<Record>,
    /// the stream's bytes failed to authenticate or decode: applied once the records
    /// before the failure are audited
    pending_error: Option<StreamError>,
    failed: bool,
    eof: bool,
    /// the capture
    pub capture: Capture,
    /// the capture's path, once named
    pub capture_path: Option<std::path::PathBuf>,
    /// file base name (stream id, segment, peer), once the header is known
    pub base: Option<String>,
    /// why the stream fails beyond its bytes (a nonce this verifier did not issue)
    pub nonce_mismatch: bool,
    /// messages for the log (capture errors), taken by the server
    pub log: Vec<LogLine>,
    /// ledger records decoded (received) so far
    pub received: u64,
    /// the server has noted this segment's start (`serve::continuity`)
    pub continuity_begun: bool,
    /// when this segment's received count was last written to the state
    pub continuity_written: Option<Instant>,
    /// the received count last written to the state
    pub continuity_count: u64,
    /// commit mode: challenge frames to the prover
    challenges: Option<ChallengesOut>,
    /// the stream is not of the mode the hello asked for
    mode_mismatch: bool,
    /// commit mode: BLAKE3 of every byte received (the capture's hash), recorded as
    /// graded when the stream ends (`serve::record_graded`)
    pub transcript: Option<blake3::Hasher>,
}

impl Conn {
    /// A connection that will send `hello`. With shared threads ([`ConnConfig::workers`])
    /// and `notify` (called on a thread when a frame is decoded, to wake the event loop
    /// for this connection) its frames are decoded on those threads.
    pub fn new(
        stream: TcpStream,
        peer: SocketAddr,
        hello: HelloOut,
        cfg: &ConnConfig<'_>,
        notify: Option<Box<dyn Fn() + Send + Sync>>,
    ) -> Self {
        let nonce = hello.nonce;
        let now = Instant::now();
        let mut audit = StreamAudit::new(&format!("tcp://{peer}"), cfg.key, cfg.max_failures)
            .with_policy(cfg.policy.clone());
        if let Some(policy) = cfg.weights {
            audit = audit.with_weights(policy.clone());
        }
        if let Some(workers) = cfg.workers {
            audit = audit.with_workers(workers.clone());
        }
        if let Some(k) = cfg.challenge_key {
            audit = audit.with_challenge_key(k).sending_challenges();
        }
        let decoding = cfg.workers.zip(notify).map(|(workers, notify)| {
            let pool = Pool::on(workers.clone(), decode_frame).notifying(notify);
            OrderedFrames::new(pool, (DECODE_AHEAD, usize::MAX))
        });
        let reader = match decoding {
            Some(_) => StreamReader::authenticating(cfg.key),
            None => StreamReader::new(cfg.key),
        };
        let challenges = cfg.challenge_key.map(|_| ChallengesOut {
            writer: ChallengeWriter::new(cfg.key, hello.mac),
            buf: Vec::new(),
            off: 0,
        });
        Conn {
            stream,
            peer,
            accepted: now,
            last_rx: now,
            bytes_rx: 0,
            nonce,
            header: None,
            queued: false,
            out: hello,
            reader,
            decoding,
            decode_error: None,
            audit,
            backlog: VecDeque::new(),
            pending_error: None,
            failed: false,
            eof: false,
            capture: Capture::new(cfg.capture_dir.is_some()),
            capture_path: None,
            base: None,
            nonce_mismatch: false,
            log: Vec::new(),
            received: 0,
            continuity_begun: false,
            continuity_written: None,
            continuity_count: 0,
            transcript: cfg.challenge_key.map(|_| blake3::Hasher::new()),
            challenges,
            mode_mismatch: false,
        }
    }

    /// Commit mode: frames what the audit challenged since the last turn and writes
    /// what it can. An error when the prover leaves too much unread.
    fn flush_challenges(&mut self) -> Result<(), String> {
        let Some(out) = &mut self.challenges else {
            return Ok(());
        };
        if let Some((through, list)) = self.audit.take_challenges() {
            if out.off == out.buf.len() {
                out.buf.clear();
                out.off = 0;
            }
            let frame = out.writer.frame(through, &list);
            out.buf.extend_from_slice(&frame);
        }
        while out.off < out.buf.len() {
            match self.stream.write(&out.buf[out.off..]) {
                Ok(0) => break,
                Ok(n) => out.off += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // What the prover sent is still read; its openings will be missing.
                Err(_) => {
                    out.off = out.buf.len();
                    break;
                }
            }
        }
        if out.buf.len() - out.off > MAX_CHALLENGE_BACKLOG {
            return Err(format!(
                "the prover leaves more than {MAX_CHALLENGE_BACKLOG} bytes of challenges unread"
            ));
        }
        Ok(())
    }

    /// Bytes received but not yet authenticated (a partial header or frame).
    pub fn buffered(&self) -> u64 {
        self.reader.bytes_received() - self.reader.bytes_consumed()
    }

    /// Records decoded and waiting for the audit, and frames being decoded.
    pub fn backlog(&self) -> usize {
        self.backlog.len() + self.decoding.as_ref().map_or(0, OrderedFrames::pending)
    }

    /// Waits for every frame still being decoded and queues its records (before the
    /// connection is closed).
    pub fn settle(&mut self) {
        self.take_decoded(true);
    }

    /// True while the hello is not completely written.
    pub fn hello_pending(&self) -> bool {
        !self.out.done()
    }

    /// Writes what it can of the hello.
    fn flush_hello(&mut self) -> Result<(), String> {
        while !self.out.done() {
            match self.stream.write(self.out.next()) {
                Ok(0) => return Err("the peer closed before reading the hello".into()),
                Ok(n) => self.out.off += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // A peer that sends its stream without reading the hello may reset;
                // what it sent is still read.
                Err(_) => {
                    self.out.off = self.out.len();
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// One turn: writes the hello, audits the backlog, reads and decodes, until the
    /// socket has nothing more, the stream is over, or `deadline` passes.
    pub fn service(&mut self, buf: &mut [u8], deadline: Instant, cfg: &ConnConfig<'_>) -> Step {
        if self.hello_pending() {
            if let Err(e) = self.flush_hello() {
                if self.header.is_none() {
                    return Step::Rejected(e);
                }
            }
        }
        loop {
            self.take_decoded(false);
            while let Some(record) = self.backlog.pop_front() {
                self.audit.on_record(record);
                if !self.backlog.is_empty() && Instant::now() >= deadline {
                    if let Err(e) = self.flush_challenges() {
                        self.audit.fail_integrity(e.clone());
                        return Step::Finished(e);
                    }
                    return Step::More;
                }
            }
            if let Err(e) = self.flush_challenges() {
                self.audit.fail_integrity(e.clone());
                return Step::Finished(e);
            }
            let decoding = self.decoding.as_ref().map_or(0, OrderedFrames::pending);
            if decoding == 0 {
                if let Some(e) = self.stream_error() {
                    self.audit.on_stream_error(&e);
                    self.failed = true;
                    return Step::Finished(format!("stream refused: {e}"));
                }
            }
            if self.nonce_mismatch {
                return Step::Finished("the stream's nonce is not this session's".into());
            }
            if self.mode_mismatch {
                return Step::Finished("the stream is not of the mode the hello asked for".into());
            }
            if decoding == 0 && self.ended() {
                return Step::Finished("end of stream".into());
            }
            // Frames still being decoded before the end or an error, or too many of
            // them: their threads wake this connection when one is back.
            if decoding > 0
                && (self.eof || self.pending_error.is_some() || decoding >= DECODE_AHEAD)
            {
                return Step::Wait;
            }
            if self.eof {
                return self.at_eof();
            }
            if Instant::now() >= deadline {
                return Step::More;
            }
            let n = match self.stream.read(buf) {
                Ok(0) => {
                    self.eof = true;
                    continue;
                }
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Step::Wait,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.eof = true;
                    self.log.push(format!("{}: read error: {e}", self.peer));
                    continue;
                }
            };
            self.last_rx = Instant::now();
            self.bytes_rx += n as u64;
            if let Some(t) = &mut self.transcript {
                t.update(&buf[..n]);
            }
            if let Some(msg) = self.capture.write(&buf[..n]) {
                self.log.push(msg);
            }
            if let Some(step) = self.decode(&buf[..n], cfg) {
                return step;
            }
        }
    }

    /// Feeds received bytes to the reader; queues their records (or, with shared
    /// threads, hands their frames to be decoded).
    fn decode(&mut self, bytes: &[u8], cfg: &ConnConfig<'_>) -> Option<Step> {
        let (units, error) = match self.reader.push_units(bytes) {
            Ok(units) => (units, None),
            Err(e) => (self.reader.take_units_before_error(), Some(e)),
        };
        for unit in units {
            match unit {
                Unit::Event(Event::Header(h)) => self.on_header(h, cfg),
                Unit::Event(Event::Frame { records, .. }) => self.queue(records),
                Unit::Frame(frame) => {
                    if let Some(d) = &mut self.decoding {
                        d.push(frame);
                    }
                }
            }
        }
        if let Some(e) = error {
            if self.header.is_none() {
                return Some(Step::Rejected(format!(
                    "not a stream for this verifier: {e}"
                )));
            }
            self.pending_error = Some(e);
            return None;
        }
        if self.buffered() > cfg.conn_buffer as u64 {
            self.eof = true;
            self.log.push(format!(
                "{}: closing: a frame larger than this server's per-connection buffer of {} bytes",
                self.peer, cfg.conn_buffer
            ));
        }
        None
    }

    /// Queues a frame's records for the audit.
    fn queue(&mut self, records: Vec<Record>) {
        self.received += records
            .iter()
            .filter(|r| matches!(r, Record::Ledger(_)))
            .count() as u64;
        self.backlog.extend(records);
    }

    /// Queues the records of the frames decoded since the last call (with `wait`, of
    /// every frame being decoded), in stream order, up to the error that stops the
    /// stream.
    fn take_decoded(&mut self, wait: bool) {
        while let Some(next) = self.decoding.as_mut().and_then(|d| d.next(wait)) {
            match next {
                Ok(Event::Frame { records, .. }) => self.queue(records),
                // a decoded frame is never a header
                Ok(Event::Header(_)) => {}
                Err(e) => self.decode_error = Some(e),
            }
        }
    }

    /// Once no frame is being decoded: the error that stops the stream, if any. A frame
    /// that did not decode comes before the reader's own error; after the End record
    /// anything more is [`StreamError::AfterEnd`], as the reader of `check` says.
    fn stream_error(&mut self) -> Option<StreamError> {
        let reader = self.pending_error.take();
        match &self.decoding {
            None => reader,
            Some(_) if self.decode_error.is_some() => self.decode_error.take(),
            Some(d) => d.after(reader, self.reader.bytes_received()),
        }
    }

    /// The frame holding the End record is read (decoded, with shared threads).
    fn ended(&self) -> bool {
        match &self.decoding {
            Some(d) => d.ended_at().is_some(),
            None => self.reader.is_ended(),
        }
    }

    fn on_header(&mut self, h: StreamHeader, cfg: &ConnConfig<'_>) {
        let base = base_name(&h, self.peer);
        if let Some(dir) = cfg.capture_dir {
            match self.capture.open(dir, &base) {
                Ok(path) => {
                    self.audit.report.name = path.display().to_string();
                    self.capture_path = Some(path);
                }
                Err(msg) => self.log.push(msg),
            }
        }
        self.base = Some(base);
        let mismatch = h.nonce != self.nonce;
        let commit = self.challenges.is_some();
        self.header = Some(h.clone());
        self.audit.on_event(Event::Header(h.clone()));
        if commit != (h.schedule == ScheduleVersion::Commit) {
            self.mode_mismatch = true;
            self.audit.fail_integrity(if commit {
                format!(
                    "this verifier's hello asked for commit mode; the stream follows schedule {:?} (a library without commit mode, or one that ignored the hello)",
                    h.schedule
                )
            } else {
                "a commit-mode stream on a connection whose hello asked for sampling".into()
            });
        }
        if mismatch {
            self.nonce_mismatch = true;
            self.audit.fail_integrity(format!(
                "schedule nonce not issued by this verifier: the stream's header carries nonce {}, this session's hello issued {}",
                hex(&h.nonce),
                hex(&self.nonce)
            ));
        }
    }

    /// End of input: a complete stream ended already; otherwise it is truncated (or
    /// was never a stream).
    fn at_eof(&mut self) -> Step {
        if self.header.is_none() {
            return Step::Rejected(if self.bytes_rx == 0 {
                "closed without sending a stream".into()
            } else {
                format!(
                    "closed after {} bytes, before a complete stream header",
                    self.bytes_rx
                )
            });
        }
        Step::Finished("the connection closed".into())
    }

    /// Ends the audit: a stream that is not complete is truncated (unless it already
    /// failed); the report is returned as `check` would give it for the capture.
    pub fn finish(mut self) -> crate::report::StreamReport {
        // Records already received are in the capture: audit them as `check` would
        // (the frames still being decoded too).
        self.take_decoded(true);
        while let Some(record) = self.backlog.pop_front() {
            self.audit.on_record(record);
        }
        // (a stream that failed in a turn has had its error)
        if let Some(e) = self.stream_error().filter(|_| !self.failed) {
            self.audit.on_stream_error(&e);
            self.failed = true;
        }
        if !self.failed && !self.nonce_mismatch && !self.mode_mismatch && !self.ended() {
            if let Err(e) = self.reader.finish() {
                self.audit.on_stream_error(&e);
            }
        }
        self.audit.finish()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

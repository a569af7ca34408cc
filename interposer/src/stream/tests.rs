//! Tests of the background thread and the sinks: file and TCP (a local listener that
//! accepts late, refuses at first, or drops the connection), backpressure, the exit
//! flush and its end record.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream as StdTcp};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mmaudit_protocol::call::{
    BatchForm, ComputeType, DType, EntryPoint, Epilogue, GemmCall, Op, Operand, Order, Scalar,
};
use mmaudit_protocol::config::SamplingConfig;
use mmaudit_protocol::handshake::{fingerprint, HelloMode, HelloTensor, ServerHello};
use mmaudit_protocol::keys::Key;
use mmaudit_protocol::record::{End, GapReason, NoticeKind, OperandData, Record, Sample};
use mmaudit_protocol::schedule::Schedule;
use mmaudit_protocol::stream::{Event, StreamError, StreamHeader, StreamReader};

use super::sink::Sink;
use super::*;
use crate::config::SinkSpec;
use crate::session::Ledger;

fn key() -> Key {
    Key::from_bytes([9; 32])
}

fn header() -> StreamHeader {
    StreamHeader {
        key_id: 0,
        nonce: [3; 16],
        config: SamplingConfig::default(),
        stream_id: 0x1234,
        segment: 0,
        first_index: 0,
        pid: 1,
        host: "test".into(),
        started_unix_ns: 0,
        devices: vec![],
        producer: crate::PRODUCER.into(),
        schedule: mmaudit_protocol::schedule::ScheduleVersion::V2,
    }
}

fn call(index: u64) -> GemmCall {
    let op = |ld| Operand {
        dtype: DType::F32,
        order: Order::Col,
        ld,
        batch_stride: 0,
    };
    GemmCall {
        index,
        entry: EntryPoint::GemmEx,
        device: 0,
        stream: 0,
        op_a: Op::N,
        op_b: Op::N,
        m: 8,
        n: 8,
        k: 8,
        batch: 1,
        batch_form: BatchForm::Single,
        a: op(8),
        b: op(8),
        c: op(8),
        d: op(8),
        compute: ComputeType::F32,
        scale_type: DType::F32,
        alpha: Scalar::Host(1.0),
        beta: Scalar::Host(0.0),
        epilogue: Epilogue::Default,
        bias_type: DType::F32,
        flags: 0,
        replay: None,
    }
}

fn sample(index: u64, bytes: usize) -> Sample {
    Sample {
        index,
        alpha: None,
        beta: None,
        scale_a: None,
        scale_b: None,
        scale_c: None,
        scale_d: None,
        a_rows: OperandData::Inline(vec![1; bytes]),
        b_cols: OperandData::Inline(vec![2; bytes]),
        c_in: vec![],
        d_out: vec![3; 4],
        bias: vec![],
        scale_rows: Vec::new(),
        scale_cols: Vec::new(),
    }
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mmaudit-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Decodes a stream; returns the header, the records and whether it is complete.
fn decode(bytes: &[u8]) -> (StreamHeader, Vec<Record>, Result<(), StreamError>) {
    let mut reader = StreamReader::new(&key());
    let mut header = None;
    let mut records = Vec::new();
    for chunk in bytes.chunks(777) {
        for e in reader.push(chunk).unwrap() {
            match e {
                Event::Header(h) => header = Some(h),
                Event::Frame { records: r, .. } => records.extend(r),
            }
        }
    }
    (header.unwrap(), records, reader.finish())
}

fn end_of(records: &[Record]) -> End {
    match records.last() {
        Some(Record::End(e)) => *e,
        other => panic!("no end record: {other:?}"),
    }
}

/// The ledger message of sampled call `index` (over the channel).
fn sampled_ledger(index: u64) -> Msg {
    Msg::Ledger {
        call: call(index),
        sampled: true,
    }
}

/// A gap message for call `index`.
fn gap_msg(index: u64, reason: GapReason, detail: &str) -> Msg {
    Msg::Gap {
        index,
        reason,
        detail: detail.into(),
    }
}

/// The settlement message of call `index`.
fn settled(index: u64, rejected: bool) -> Msg {
    Msg::Settle { index, rejected }
}

/// A gather in flight for call `index`, done after `polls` polls (`None`: never).
fn gathering(index: u64, polls: Option<u32>) -> Msg {
    Msg::Sample(Box::new(FakeGather { index, polls }))
}

/// The ledger message of unsampled call `index` (over the channel).
fn ledger(index: u64) -> Msg {
    Msg::Ledger {
        call: call(index),
        sampled: false,
    }
}

fn ledger_indices(records: &[Record]) -> Vec<u64> {
    records
        .iter()
        .filter_map(|r| match r {
            Record::Ledger(c) => Some(c.index),
            _ => None,
        })
        .collect()
}

#[test]
fn file_sink_writes_a_complete_stream() {
    let path = temp("file.mma");
    let spec = SinkSpec::File(path.clone());
    let mut sink = Sink::open(
        &spec,
        &key(),
        header(),
        1 << 20,
        Duration::from_millis(5),
        Arc::new(Ledger::default()),
        true,
    )
    .unwrap();
    for i in 0..50 {
        assert!(sink.push(Record::Ledger(call(i))).is_none());
        if i % 10 == 3 {
            sink.push(Record::Sample(sample(i, 32)));
        }
        if i == 7 {
            sink.push(Record::Gap(Gap {
                indices: vec![7],
                reason: GapReason::RingFull,
                detail: "full".into(),
            }));
        }
        sink.pump(Instant::now(), false).unwrap();
    }
    sink.finish(Instant::now() + Duration::from_secs(1))
        .unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let (h, records, done) = decode(&bytes);
    done.unwrap();
    assert_eq!((h.segment, h.first_index, h.stream_id), (0, 0, 0x1234));
    assert_eq!(ledger_indices(&records), (0..50).collect::<Vec<_>>());
    assert_eq!(
        end_of(&records),
        End {
            calls: 50,
            samples: 5,
            gap_calls: 1
        }
    );
}

#[test]
fn file_sink_error_is_reported() {
    let spec = SinkSpec::File("/nonexistent-dir/x.mma".into());
    let e = Sink::open(
        &spec,
        &key(),
        header(),
        1 << 20,
        Duration::from_millis(5),
        Arc::new(Ledger::default()),
        true,
    )
    .err()
    .unwrap();
    assert!(e.contains("cannot create /nonexistent-dir/x.mma"), "{e}");
}

#[test]
fn the_smallest_buffer_keeps_up_with_a_healthy_sink() {
    // MMAUDIT_BUFFER_MB=1, its documented minimum: framing was due only at 1 MiB
    // queued, which is already over the bound, so a healthy file sink turned every
    // sample into a gap and then stopped auditing.
    let path = temp("small-buffer.mma");
    let mut sink = Sink::open(
        &SinkSpec::File(path.clone()),
        &key(),
        header(),
        1 << 20,
        Duration::from_secs(60),
        Arc::new(Ledger::default()),
        true,
    )
    .unwrap();
    for i in 0..200 {
        assert!(sink.push(Record::Ledger(call(i))).is_none());
        assert!(sink.push(Record::Sample(sample(i, 16 << 10))).is_none());
        sink.pump(Instant::now(), false).unwrap();
    }
    assert_eq!(sink.totals().backpressure, 0);
    sink.finish(Instant::now() + Duration::from_secs(1))
        .unwrap();
    let (_, records, done) = decode(&std::fs::read(&path).unwrap());
    done.unwrap();
    assert_eq!(end_of(&records).samples, 200);
}

#[test]
fn backpressure_turns_samples_into_gaps_and_keeps_the_ledger() {
    let path = temp("backpressure.mma");
    let spec = SinkSpec::File(path.clone());
    // 64 KiB of buffer; samples of 2 x 8 KiB; nothing pumped until the end.
    let mut sink = Sink::open(
        &spec,
        &key(),
        header(),
        64 << 10,
        Duration::from_secs(60),
        Arc::new(Ledger::default()),
        true,
    )
    .unwrap();
    for i in 0..40 {
        assert!(sink.push(Record::Ledger(call(i))).is_none());
        sink.push(Record::Sample(sample(i, 8 << 10)));
    }
    assert!(sink.totals().backpressure > 0);
    sink.finish(Instant::now() + Duration::from_secs(1))
        .unwrap();
    let (_, records, done) = decode(&std::fs::read(&path).unwrap());
    done.unwrap();
    let gaps: Vec<&Gap> = records
        .iter()
        .filter_map(|r| match r {
            Record::Gap(g) => Some(g),
            _ => None,
        })
        .collect();
    assert!(!gaps.is_empty());
    assert!(gaps.iter().all(|g| g.reason == GapReason::SinkBackpressure));
    let samples = records
        .iter()
        .filter(|r| matches!(r, Record::Sample(_)))
        .count() as u64;
    assert_eq!(
        samples + gaps.len() as u64,
        40,
        "every sampled call has data or a gap"
    );
    assert_eq!(
        ledger_indices(&records).len(),
        40,
        "no ledger record is dropped"
    );
    let e = end_of(&records);
    assert_eq!(
        (e.calls, e.samples, e.gap_calls),
        (40, samples, gaps.len() as u64)
    );
}

#[test]
fn a_ledger_that_cannot_be_kept_disables_auditing_with_a_notice() {
    let path = temp("overflow.mma");
    let spec = SinkSpec::File(path.clone());
    let mut sink = Sink::open(
        &spec,
        &key(),
        header(),
        4096,
        Duration::from_secs(60),
        Arc::new(Ledger::default()),
        true,
    )
    .unwrap();
    let mut reasons = Vec::new();
    for i in 0..100 {
        reasons.extend(sink.push(Record::Ledger(call(i))));
    }
    assert_eq!(reasons.len(), 1, "asked to disable exactly once");
    assert!(
        reasons[0].contains("could not take the ledger"),
        "{}",
        reasons[0]
    );
    sink.finish(Instant::now() + Duration::from_secs(1))
        .unwrap();
    let (_, records, done) = decode(&std::fs::read(&path).unwrap());
    done.unwrap();
    assert!(records
        .iter()
        .any(|r| matches!(r, Record::Notice(n) if n.kind == NoticeKind::AuditDisabled)));
    assert_eq!(
        ledger_indices(&records).len(),
        100,
        "what was queued is still delivered"
    );
}

/// A gather that completes after `polls` polls (or never).
struct FakeGather {
    index: u64,
    polls: Option<u32>,
}

impl Pending for FakeGather {
    fn index(&self) -> u64 {
        self.index
    }
    fn poll(&mut self) -> Option<Resolved> {
        match &mut self.polls {
            None => None,
            Some(0) => Some(Resolved::Sample(Box::new(Gathered {
                leaves: Default::default(),
                sample: sample(self.index, 16),
                operands: None,
                call: None,
                a_key: None,
                held: None,
                device: None,
            }))),
            Some(n) => {
                *n -= 1;
                None
            }
        }
    }
}

#[test]
fn worker_resolves_gathers_and_abandons_the_unfinished_at_exit() {
    let path = temp("worker.mma");
    let spec = SinkSpec::File(path.clone());
    let sink = Sink::open(
        &spec,
        &key(),
        header(),
        1 << 20,
        Duration::from_millis(2),
        Arc::new(Ledger::default()),
        true,
    )
    .unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    let shared = Arc::new(Shared::default());
    let disabled = Arc::new(std::sync::Mutex::new(Vec::new()));
    let d2 = Arc::clone(&disabled);
    let worker = Worker::new(
        rx,
        sink,
        Arc::clone(&shared),
        Box::new(move |r| d2.lock().unwrap().push(r)),
    );
    let thread = std::thread::spawn(move || worker.run());
    for i in 0..6 {
        tx.send(ledger(i)).unwrap();
        tx.send(settled(i, false)).unwrap();
    }
    shared.inflight.fetch_add(3, Ordering::SeqCst);
    tx.send(gathering(1, Some(5))).unwrap();
    tx.send(gathering(3, None)).unwrap();
    tx.send(gap_msg(4, GapReason::QueueFull, "q")).unwrap();
    let (ack_tx, ack_rx) = crossbeam_channel::bounded(1);
    tx.send(Msg::Flush(ack_tx)).unwrap();
    ack_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    tx.send(Msg::Shutdown {
        deadline: Instant::now() + Duration::from_millis(300),
        notices: vec![notice(NoticeKind::Info, "bye")],
        done: done_tx,
    })
    .unwrap();
    done_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    thread.join().unwrap();
    assert_eq!(shared.inflight.load(Ordering::SeqCst), 0);
    assert!(disabled.lock().unwrap().is_empty());
    let (_, records, done) = decode(&std::fs::read(&path).unwrap());
    done.unwrap();
    let sample_at = records
        .iter()
        .position(|r| matches!(r, Record::Sample(s) if s.index == 1))
        .unwrap();
    let ledger_at = records
        .iter()
        .position(|r| matches!(r, Record::Ledger(c) if c.index == 1))
        .unwrap();
    assert!(sample_at > ledger_at, "a sample follows its ledger record");
    let exit_gap = records.iter().any(|r| {
        matches!(r, Record::Gap(g) if g.indices == [3] && g.reason == GapReason::GatherFailed && g.detail.contains("process exit"))
    });
    assert!(exit_gap, "{records:?}");
    assert!(records
        .iter()
        .any(|r| matches!(r, Record::Notice(n) if n.message == "bye")));
    assert_eq!(
        end_of(&records),
        End {
            calls: 6,
            samples: 1,
            gap_calls: 2
        }
    );
}

/// Reads everything from one accepted connection until EOF (or `limit` bytes, then
/// drops the connection).
fn read_conn(mut s: StdTcp, limit: Option<usize>) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => panic!("read: {e}"),
        }
        if limit.is_some_and(|l| out.len() >= l) {
            break;
        }
    }
    out
}

/// Plays the verifier's side of the handshake: sends a hello with `nonce` and
/// `tensors`, MACed with `key`, with the default sampling configuration (that of
/// [`header`]).
fn send_hello(s: &mut StdTcp, key: &Key, nonce: [u8; 16], tensors: Vec<HelloTensor>) {
    send_hello_with(s, key, nonce, SamplingConfig::default(), tensors);
}

/// [`send_hello`] with the verifier's sampling configuration `sampling`.
fn send_hello_with(
    s: &mut StdTcp,
    key: &Key,
    nonce: [u8; 16],
    sampling: SamplingConfig,
    tensors: Vec<HelloTensor>,
) {
    send_hello_mode(s, key, nonce, sampling, tensors, HelloMode::Sampling);
}

/// [`send_hello_with`] in `mode`.
fn send_hello_mode(
    s: &mut StdTcp,
    key: &Key,
    nonce: [u8; 16],
    sampling: SamplingConfig,
    tensors: Vec<HelloTensor>,
    mode: HelloMode,
) {
    let hello = ServerHello {
        key_id: key.id(),
        nonce,
        sampling,
        tensors,
        mode,
    };
    s.write_all(&hello.encode(key).unwrap()).unwrap();
}

/// The hooks' side for these tests: a ledger shared with a sink.
struct Prover {
    ledger: Arc<Ledger>,
    sink: Sink,
}

impl Prover {
    fn tcp(port: u16, references: bool) -> Prover {
        Prover::tcp_with(port, references, header())
    }

    /// A TCP prover whose environment gave `header` (its rates among it).
    fn tcp_with(port: u16, references: bool, header: StreamHeader) -> Prover {
        let spec = SinkSpec::Tcp {
            host: "127.0.0.1".into(),
            port,
        };
        let ledger = Arc::new(Ledger::default());
        let sink = Sink::open(
            &spec,
            &key(),
            header,
            16 << 20,
            Duration::from_millis(2),
            Arc::clone(&ledger),
            references,
        )
        .unwrap();
        Prover { ledger, sink }
    }

    /// A call as a hook makes it: index and session from the ledger, then its ledger
    /// record; returns its index and whether it was made in a session.
    fn call(&mut self) -> (u64, bool) {
        let mut c = call(0);
        let session = self.ledger.assign(&mut c).unwrap();
        let index = c.index;
        assert!(self.sink.push(Record::Ledger(c)).is_none());
        (index, session.is_some())
    }

    fn pump(&mut self) {
        self.sink.pump(Instant::now(), false).unwrap();
    }

    /// Pumps until a session has begun (the hello was read), at most 10 s.
    fn until_session(&mut self) {
        let start = Instant::now();
        loop {
            self.pump();
            if self.ledger.current().is_some() {
                return;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "no session");
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

fn no_session(c: &GemmCall) -> bool {
    c.has(mmaudit_protocol::call::flags::NO_SESSION)
}

#[test]
fn tcp_sink_connects_to_a_listener_that_appears_late() {
    // A free port, with nobody listening yet: the first attempts are refused.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut p = Prover::tcp(port, true);
    for _ in 0..20 {
        assert!(!p.call().1, "no session without a verifier");
        p.pump();
    }
    std::thread::sleep(Duration::from_millis(150));
    p.pump();
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    // ... and it accepts late, after the client has connected.
    let server = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        let (mut s, _) = listener.accept().unwrap();
        send_hello(&mut s, &key(), [0x11; 16], vec![]);
        read_conn(s, None)
    });
    p.until_session();
    let mut samples = 0;
    for _ in 20..40 {
        let (i, in_session) = p.call();
        assert!(in_session);
        p.sink.push(Record::Sample(sample(i, 8)));
        samples += 1;
        p.pump();
        std::thread::sleep(Duration::from_millis(5));
    }
    p.sink
        .finish(Instant::now() + Duration::from_secs(10))
        .unwrap();
    let bytes = server.join().unwrap();
    let (h, records, done) = decode(&bytes);
    done.unwrap();
    assert_eq!((h.segment, h.first_index, h.nonce), (0, 0, [0x11; 16]));
    assert_eq!(ledger_indices(&records), (0..40).collect::<Vec<_>>());
    for r in &records {
        if let Record::Ledger(c) = r {
            assert_eq!(no_session(c), c.index < 20, "call {}", c.index);
        }
    }
    assert_eq!(
        end_of(&records),
        End {
            calls: 40,
            samples,
            gap_calls: 0
        }
    );
}

#[test]
fn calls_before_the_hello_are_recorded_without_a_session_and_never_sampled() {
    // The verifier accepts at once but sends its hello late: the calls made meanwhile
    // have no nonce to be sampled with. Its policy samples every call.
    let every_call = SamplingConfig {
        call_ppm: 1_000_000,
        ..SamplingConfig::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        go_rx.recv().unwrap();
        send_hello_with(&mut s, &key(), [0x42; 16], every_call, vec![]);
        read_conn(s, None)
    });
    let mut p = Prover::tcp(port, true);
    let mut before = 0;
    for _ in 0..30 {
        let (_, in_session) = p.call();
        assert!(!in_session);
        before += 1;
        p.pump();
        std::thread::sleep(Duration::from_millis(1));
    }
    go_tx.send(()).unwrap();
    p.until_session();
    // The session's schedule is the hello's nonce and policy: with its call rate of
    // 100%, every call from now on is sampled.
    let schedule = Schedule::with_version(
        &key(),
        [0x42; 16],
        every_call,
        mmaudit_protocol::schedule::ScheduleVersion::V2,
    );
    for _ in 0..10 {
        let mut c = call(0);
        let session = p.ledger.assign(&mut c).unwrap().unwrap();
        assert_eq!(session.schedule.decide(&c), schedule.decide(&c));
        assert!(session.schedule.decide(&c).is_some() && session.first_index == before);
        let index = c.index;
        p.sink.push(Record::Ledger(c));
        p.sink.push(Record::Sample(sample(index, 8)));
        p.pump();
    }
    p.sink
        .finish(Instant::now() + Duration::from_secs(10))
        .unwrap();
    let (h, records, done) = decode(&server.join().unwrap());
    done.unwrap();
    assert_eq!(h.nonce, [0x42; 16], "the header carries the hello's nonce");
    let flags: Vec<bool> = records
        .iter()
        .filter_map(|r| match r {
            Record::Ledger(c) => Some(no_session(c)),
            _ => None,
        })
        .collect();
    assert_eq!(flags.len(), 40);
    assert!(flags[..30].iter().all(|&f| f) && flags[30..].iter().all(|&f| !f));
    let sampled: Vec<u64> = records
        .iter()
        .filter_map(|r| match r {
            Record::Sample(s) => Some(s.index),
            _ => None,
        })
        .collect();
    assert_eq!(sampled, (30..40).collect::<Vec<_>>());
}

#[test]
fn a_hello_with_another_key_or_garbage_is_refused_and_retried() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        // 1: a hello MACed with another key; 2: not a hello at all. The prover closes
        // both without sending anything.
        let (mut s, _) = listener.accept().unwrap();
        send_hello(&mut s, &Key::from_bytes([1; 32]), [1; 16], vec![]);
        let first = read_conn(s, None);
        let (mut s, _) = listener.accept().unwrap();
        s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").unwrap();
        let second = read_conn(s, None);
        // 3: the verifier.
        let (mut s, _) = listener.accept().unwrap();
        send_hello(&mut s, &key(), [3; 16], vec![]);
        (first, second, read_conn(s, None))
    });
    let mut p = Prover::tcp(port, true);
    p.call();
    p.until_session();
    let (i, in_session) = p.call();
    assert!(in_session);
    p.sink.push(Record::Sample(sample(i, 8)));
    p.sink
        .finish(Instant::now() + Duration::from_secs(10))
        .unwrap();
    let (first, second, third) = server.join().unwrap();
    assert!(
        first.is_empty() && second.is_empty(),
        "nothing is sent without a session"
    );
    let (h, records, done) = decode(&third);
    done.unwrap();
    assert_eq!((h.segment, h.nonce), (0, [3; 16]));
    assert_eq!(ledger_indices(&records), vec![0, 1]);
    let notice = records.iter().find_map(|r| match r {
        Record::Notice(n) if n.kind == NoticeKind::Warning => Some(n.message.clone()),
        _ => None,
    });
    let notice = notice.expect("a notice about the refused connections");
    assert!(
        notice.starts_with("2 connections before this one did not open a session"),
        "{notice}"
    );
}

#[test]
fn tcp_sink_starts_a_new_segment_with_a_new_session_after_the_connection_drops() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        // First connection: read a little, then hang up.
        let (mut s, _) = listener.accept().unwrap();
        send_hello(&mut s, &key(), [0xa0; 16], vec![]);
        let first = read_conn(s, Some(2000));
        // Second connection, a new session: read to the end.
        let (mut s, _) = listener.accept().unwrap();
        send_hello(&mut s, &key(), [0xb0; 16], vec![]);
        (first, read_conn(s, None))
    });
    let mut p = Prover::tcp(port, true);
    let mut i = 0;
    let start = Instant::now();
    while !server.is_finished() && start.elapsed() < Duration::from_secs(20) {
        let (index, in_session) = p.call();
        if index % 3 == 0 && in_session {
            p.sink.push(Record::Sample(sample(index, 64)));
        }
        p.pump();
        i = index + 1;
        std::thread::sleep(Duration::from_millis(1));
        if i > 3000 {
            // Enough traffic: end the stream (the server then reads to EOF).
            break;
        }
    }
    p.sink
        .finish(Instant::now() + Duration::from_secs(10))
        .unwrap();
    let (first, second) = server.join().unwrap();

    let (h0, r0, done0) = decode(&first);
    assert_eq!((h0.segment, h0.nonce), (0, [0xa0; 16]));
    assert!(
        matches!(done0, Err(StreamError::Truncated { .. })),
        "segment 0 ends truncated: {done0:?}"
    );
    let (h1, r1, done1) = decode(&second);
    done1.unwrap();
    assert_eq!(
        (h1.segment, h1.stream_id, h1.nonce),
        (1, h0.stream_id, [0xb0; 16]),
        "a new segment of the same stream, with the new hello's nonce"
    );
    let l1 = ledger_indices(&r1);
    assert_eq!(l1.first(), Some(&h1.first_index));
    assert_eq!(
        l1,
        (h1.first_index..i).collect::<Vec<_>>(),
        "consecutive to the last call"
    );
    let l0 = ledger_indices(&r0);
    assert!(l0.last().is_none_or(|&last| last < h1.first_index));
    // The new session began at some call F: the calls before it in this segment were
    // made without it (not audited), and only calls from F on have samples here.
    let first_sampleable = r1
        .iter()
        .find_map(|r| match r {
            Record::Ledger(c) if !no_session(c) => Some(c.index),
            _ => None,
        })
        .expect("calls in the new session");
    for r in &r1 {
        match r {
            Record::Ledger(c) => assert_eq!(no_session(c), c.index < first_sampleable),
            Record::Sample(s) => assert!(s.index >= first_sampleable),
            _ => {}
        }
    }
    assert!(r1.iter().any(|r| matches!(r, Record::Notice(n) if n.kind == NoticeKind::Warning && n.message.contains("segment 1"))));
    let e = end_of(&r1);
    let samples = r1.iter().filter(|r| matches!(r, Record::Sample(_))).count() as u64;
    assert_eq!((e.calls, e.samples), (l1.len() as u64, samples));
}

/// The environment's rates of a prover that wants nothing audited
/// (`MMAUDIT_CALL_RATE=0`, one row, column and batch entry at most).
fn lowered() -> SamplingConfig {
    SamplingConfig {
        call_ppm: 0,
        row_ppm: 0,
        col_ppm: 0,
        batch_ppm: 0,
        max_rows: 1,
        max_cols: 1,
        max_batches: 1,
        ..SamplingConfig::default()
    }
}

/// Two verifier policies, each different from [`lowered`] and from the default in
/// every rate.
fn policies() -> [SamplingConfig; 2] {
    [
        SamplingConfig {
            call_ppm: 1_000_000,
            row_ppm: 500_000,
            col_ppm: 250_000,
            batch_ppm: 1_000_000,
            min_rows: 2,
            ..SamplingConfig::default()
        },
        SamplingConfig {
            call_ppm: 300_000,
            row_ppm: 20_000,
            col_ppm: 2_000,
            batch_ppm: 20_000,
            max_cols: 64,
            ..SamplingConfig::default()
        },
    ]
}

#[test]
fn a_live_session_samples_with_the_hellos_rates_and_its_header_carries_them() {
    let [first, second] = policies();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        // Two sessions, each with its own policy: the first connection is dropped after
        // its header, the second read to the end.
        let (mut s, _) = listener.accept().unwrap();
        send_hello_with(&mut s, &key(), [0x51; 16], first, vec![]);
        let a = read_conn(s, Some(200));
        let (mut s, _) = listener.accept().unwrap();
        send_hello_with(&mut s, &key(), [0x52; 16], second, vec![]);
        (a, read_conn(s, None))
    });
    let env = StreamHeader {
        config: lowered(),
        ..header()
    };
    let mut p = Prover::tcp_with(port, true, env.clone());
    p.until_session();
    // The session's schedule is the hello's: every call is sampled, as it would not be
    // with the environment's call rate of 0.
    let session = p.ledger.current().unwrap();
    assert_eq!(*session.schedule.config(), first);
    assert_ne!(*session.schedule.config(), env.config);
    for _ in 0..20 {
        let mut c = call(0);
        let s = p.ledger.assign(&mut c).unwrap().unwrap();
        let plan = s.schedule.decide(&c).expect("every call is sampled");
        // min_rows 2 of the hello, not max_rows 1 of the environment.
        assert_eq!((plan.rows.len(), plan.cols.len()), (4, 2));
        let index = c.index;
        p.sink.push(Record::Ledger(c));
        p.sink.push(Record::Sample(sample(index, 8)));
        p.pump();
    }
    // The first connection drops; the next session follows the next hello.
    let start = Instant::now();
    loop {
        p.call();
        p.pump();
        if p.ledger.current().is_some_and(|s| s.epoch == 2) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no second session"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(*p.ledger.current().unwrap().schedule.config(), second);
    p.call();
    p.sink
        .finish(Instant::now() + Duration::from_secs(10))
        .unwrap();
    let (a, b) = server.join().unwrap();
    let (h0, _, _) = decode(&a);
    let (h1, _, done) = decode(&b);
    done.unwrap();
    assert_eq!((h0.segment, h0.nonce, h0.config), (0, [0x51; 16], first));
    assert_eq!((h1.segment, h1.nonce, h1.config), (1, [0x52; 16], second));
    // Everything else of the header is still the prover's.
    assert_eq!(
        (h1.stream_id, h1.pid, &h1.host, &h1.producer),
        (env.stream_id, env.pid, &env.host, &env.producer)
    );
}

/// The whole of `call(index)` (8 x 8 x 8, f32) as a commit-mode gather makes it, every
/// element distinct: op(A) rows, op(B) columns, D `[row][col]`.
fn whole_sample(index: u64) -> Sample {
    let f32s = |base: f32| -> Vec<u8> {
        (0..64)
            .flat_map(|i| (base + i as f32).to_le_bytes())
            .collect()
    };
    Sample {
        a_rows: OperandData::Inline(f32s(100.0)),
        b_cols: OperandData::Inline(f32s(200.0)),
        d_out: f32s(300.0),
        ..sample(index, 0)
    }
}

#[test]
fn a_commit_mode_hello_gets_commitments_and_openings_that_verify() {
    use mmaudit_protocol::commit::frames::{Challenge, ChallengeWriter};
    use mmaudit_protocol::schedule::{Plan, ScheduleVersion};
    // The verifier's side is played here: it reads the commitments, then challenges
    // call 0 with a plan and call 1 with a plan that does not fit the call, releasing
    // both; the sink must answer with an opening that verifies against the commitment
    // and a "not retained" gap, and end the stream only after that frame.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let plan = Plan {
        rows: vec![1, 6],
        cols: vec![0, 7],
        batches: vec![0],
    };
    let bad = Plan {
        rows: vec![8],
        ..plan.clone()
    };
    let challenges = vec![
        Challenge {
            index: 0,
            plan: plan.clone(),
        },
        Challenge {
            index: 1,
            plan: bad,
        },
    ];
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let hello = ServerHello {
            key_id: key().id(),
            nonce: [0x61; 16],
            sampling: SamplingConfig::default(),
            tensors: vec![],
            mode: HelloMode::Commit,
        }
        .encode(&key())
        .unwrap();
        s.write_all(&hello).unwrap();
        let mac: [u8; 32] = hello[hello.len() - 32..].try_into().unwrap();
        let mut reader = StreamReader::new(&key());
        let (mut header, mut records, mut sent) = (None, Vec::new(), false);
        let mut buf = [0u8; 4096];
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            for e in reader.push(&buf[..n]).unwrap() {
                match e {
                    Event::Header(h) => header = Some(h),
                    Event::Frame { records: r, .. } => records.extend(r),
                }
            }
            let committed = records
                .iter()
                .filter(|r| matches!(r, Record::Commitment(_)))
                .count();
            if committed == 2 && !sent {
                let frame = ChallengeWriter::new(&key(), mac).frame(1, &challenges);
                s.write_all(&frame).unwrap();
                sent = true;
            }
        }
        reader.finish().unwrap();
        (header.unwrap(), records, sent)
    });
    let mut p = Prover::tcp(port, false);
    p.until_session();
    for _ in 0..2 {
        let (index, in_session) = p.call();
        assert!(in_session);
        let mut c = call(index);
        c.index = index;
        assert!(p
            .sink
            .push_sample(Gathered {
                leaves: Default::default(),
                sample: whole_sample(index),
                operands: None,
                call: Some(c),
                a_key: None,
                held: None,
                device: None,
            })
            .is_none());
    }
    p.sink
        .finish(Instant::now() + Duration::from_secs(10))
        .unwrap();
    let (h, records, sent) = server.join().unwrap();
    assert!(sent, "the commitments arrived before the end");
    assert_eq!(h.schedule, ScheduleVersion::Commit);
    let commitment = records
        .iter()
        .find_map(|r| match r {
            Record::Commitment(c) if c.index == 0 => Some(c.commitment),
            _ => None,
        })
        .unwrap();
    let opening = records
        .iter()
        .find_map(|r| match r {
            Record::Opening(o) => Some(o),
            _ => None,
        })
        .unwrap();
    let opened = opening.verify(&call(0), &plan, &commitment).unwrap();
    // D's entries [row][col] of the plan, from the whole D `[row][col]` gathered.
    let d: Vec<u8> = [(1, 0), (1, 7), (6, 0), (6, 7)]
        .iter()
        .flat_map(|(r, c)| (300.0f32 + (r * 8 + c) as f32).to_le_bytes())
        .collect();
    assert_eq!(opened.d_out, d);
    // Call 1's challenge did not fit: a gap, never an opening; then the end.
    assert!(records.iter().any(|r| matches!(r,
        Record::Gap(g) if g.indices == [1] && g.reason == GapReason::NotRetained)));
    assert_eq!(
        records
            .iter()
            .filter(|r| matches!(r, Record::Opening(_)))
            .count(),
        1
    );
    let end = end_of(&records);
    assert_eq!((end.calls, end.samples, end.gap_calls), (2, 1, 1));
    // The same opening altered is refused by the commitment.
    let mut altered = opening.clone();
    if let mmaudit_protocol::record::OpenedSide::Inline(v) = &mut altered.b {
        v.vectors[0] ^= 1;
    }
    assert!(altered.verify(&call(0), &plan, &commitment).is_err());
}

#[test]
fn a_commit_mode_stream_does_not_end_before_the_verifier_judged_its_commitments() {
    // A verifier that never sends its challenges: the exit waits (to its deadline)
    // and says why, and no End record is written, so the verifier sees the stream
    // truncated, never complete without the openings it would have asked for.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        send_hello_mode(
            &mut s,
            &key(),
            [0x62; 16],
            SamplingConfig::default(),
            vec![],
            HelloMode::Commit,
        );
        read_conn(s, None)
    });
    let mut p = Prover::tcp(port, false);
    p.until_session();
    let (index, _) = p.call();
    let mut c = call(index);
    c.index = index;
    p.sink.push_sample(Gathered {
        leaves: Default::default(),
        sample: whole_sample(index),
        operands: None,
        call: Some(c),
        a_key: None,
        held: None,
        device: None,
    });
    let e = p
        .sink
        .finish(Instant::now() + Duration::from_millis(300))
        .unwrap_err();
    assert!(e.contains("challenges"), "{e}");
    drop(p);
    let (_, records, done) = decode(&server.join().unwrap());
    assert!(done.is_err(), "truncated");
    assert!(records.iter().any(|r| matches!(r, Record::Commitment(_))));
    assert!(!records.iter().any(|r| matches!(r, Record::End(_))));
}

#[test]
fn a_file_sink_samples_with_the_environments_rates() {
    // The counterpart: no verifier, no hello; the environment's rates are the stream's.
    let path = temp("env-rates.mma");
    let ledger = Arc::new(Ledger::default());
    let env = StreamHeader {
        config: policies()[1],
        ..header()
    };
    let mut sink = Sink::open(
        &SinkSpec::File(path.clone()),
        &key(),
        env.clone(),
        1 << 20,
        Duration::from_millis(5),
        Arc::clone(&ledger),
        true,
    )
    .unwrap();
    assert_eq!(*ledger.current().unwrap().schedule.config(), env.config);
    sink.push(Record::Ledger(call(0)));
    sink.finish(Instant::now() + Duration::from_secs(1))
        .unwrap();
    let (h, _, done) = decode(&std::fs::read(&path).unwrap());
    done.unwrap();
    assert_eq!(h.config, env.config);
}

#[test]
fn tcp_sink_reports_what_it_could_not_deliver() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut p = Prover::tcp(port, true);
    p.call();
    let e = p
        .sink
        .finish(Instant::now() + Duration::from_millis(200))
        .unwrap_err();
    assert!(e.contains("could not be delivered"), "{e}");
    assert!(e.contains("truncated"), "{e}");
}

/// A bf16 tensor of `rows` x `cols` whose element (r, c) is the bf16 value r + c/8,
/// its stored bytes and its hello entry.
fn held_tensor(id: u32, rows: u64, cols: u64) -> (Vec<u8>, HelloTensor) {
    let fk = key().fingerprint_key();
    let mut data = Vec::new();
    let mut fingerprints = Vec::new();
    for r in 0..rows {
        let row: Vec<u8> = (0..cols)
            .flat_map(|c| {
                let v = r as f32 + c as f32 / 8.0;
                ((v.to_bits() >> 16) as u16).to_le_bytes()
            })
            .collect();
        fingerprints.push(fingerprint(&fk, &row));
        data.extend_from_slice(&row);
    }
    (
        data,
        HelloTensor {
            id,
            dtype: DType::BF16,
            matrices: 1,
            rows,
            cols,
            fingerprints,
        },
    )
}

/// One sampled call whose op(A) rows 1 and 5 are rows of the held tensor and whose
/// op(B) column is not, through a sink to a verifier holding the tensor.
fn referenced_run(references: bool) -> Sample {
    let (k, rows) = (16u64, 8u64);
    let (data, tensor) = held_tensor(7, rows, k);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        send_hello(&mut s, &key(), [5; 16], vec![tensor]);
        read_conn(s, None)
    });
    let mut p = Prover::tcp(port, references);
    p.until_session();
    let (index, _) = p.call();
    let row = |r: usize| &data[r * 2 * k as usize..][..2 * k as usize];
    let a: Vec<u8> = [row(1), row(5)].concat();
    let b = vec![0x3c; 2 * k as usize];
    let mut s = sample(index, 0);
    s.a_rows = OperandData::Inline(a);
    s.b_cols = OperandData::Inline(b.clone());
    p.sink.push_sample(Gathered {
        leaves: Default::default(),
        sample: s,
        operands: Some(SampleOperands {
            k,
            a: DType::BF16,
            b: DType::BF16,
            rows: vec![1, 5],
            cols: vec![3],
            batches: 1,
        }),
        call: None,
        a_key: None,
        held: None,
        device: None,
    });
    p.sink
        .finish(Instant::now() + Duration::from_secs(10))
        .unwrap();
    let (_, records, done) = decode(&server.join().unwrap());
    done.unwrap();
    let sample = records
        .into_iter()
        .find_map(|r| match r {
            Record::Sample(s) => Some(s),
            _ => None,
        })
        .unwrap();
    assert_eq!(sample.b_cols, OperandData::Inline(b), "B is not held");
    sample
}

#[test]
fn a_file_sink_never_sends_references() {
    let path = temp("noref.mma");
    let ledger = Arc::new(Ledger::default());
    let spec = SinkSpec::File(path.clone());
    let mut sink = Sink::open(
        &spec,
        &key(),
        header(),
        1 << 20,
        Duration::from_millis(2),
        Arc::clone(&ledger),
        true,
    )
    .unwrap();
    let session = ledger
        .current()
        .expect("a file sink has a session from the start");
    assert_eq!((session.epoch, session.first_index), (1, 0));
    let mut c = call(0);
    assert!(ledger.assign(&mut c).unwrap().is_some());
    assert!(!no_session(&c));
    sink.push(Record::Ledger(c));
    sink.push_sample(Gathered {
        leaves: Default::default(),
        sample: sample(0, 32),
        operands: Some(SampleOperands {
            k: 16,
            a: DType::BF16,
            b: DType::BF16,
            rows: vec![0],
            cols: vec![0],
            batches: 1,
        }),
        call: None,
        a_key: None,
        held: None,
        device: None,
    });
    sink.finish(Instant::now() + Duration::from_secs(1))
        .unwrap();
    let (h, records, done) = decode(&std::fs::read(&path).unwrap());
    done.unwrap();
    assert_eq!(h.nonce, header().nonce, "the prover's own nonce");
    assert!(records.iter().any(
        |r| matches!(r, Record::Sample(s) if !s.a_rows.is_reference() && !s.b_cols.is_reference())
    ));
}

#[test]
fn stored_rows_of_a_held_tensor_are_sent_as_a_reference() {
    let (data, _) = held_tensor(7, 8, 16);
    let first = |r: usize| data[r * 32..][..2].to_vec();
    assert_eq!(
        referenced_run(true).a_rows,
        OperandData::Reference {
            tensor: 7,
            matrices: vec![0],
            evidence: [first(1), first(5)].concat(),
        }
    );
    // MMAUDIT_REFERENCES=0: the rows themselves.
    assert!(matches!(
        referenced_run(false).a_rows,
        OperandData::Inline(ref v) if v.len() == 2 * 32
    ));
}

/// Runs a worker over a file sink, feeds it `msgs`, shuts it down and returns the
/// records of the stream (which must be complete) and the inflight counter left.
fn worker_stream(name: &str, inflight: usize, msgs: Vec<Msg>) -> (Vec<Record>, usize) {
    let path = temp(name);
    let spec = SinkSpec::File(path.clone());
    let sink = Sink::open(
        &spec,
        &key(),
        header(),
        1 << 20,
        Duration::from_millis(2),
        Arc::new(Ledger::default()),
        true,
    )
    .unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    let shared = Arc::new(Shared::default());
    shared.inflight.store(inflight, Ordering::SeqCst);
    let worker = Worker::new(rx, sink, Arc::clone(&shared), Box::new(|r| panic!("{r}")));
    let thread = std::thread::spawn(move || worker.run());
    for m in msgs {
        tx.send(m).unwrap();
    }
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    tx.send(Msg::Shutdown {
        deadline: Instant::now() + Duration::from_millis(500),
        notices: vec![],
        done: done_tx,
    })
    .unwrap();
    done_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    thread.join().unwrap();
    let (_, records, done) = decode(&std::fs::read(&path).unwrap());
    done.unwrap();
    (records, shared.inflight.load(Ordering::SeqCst))
}

#[test]
fn ledger_records_are_written_in_index_order_as_they_settle() {
    // Calls 0..4 take their indices in order; the library answers 2, 3, 1 (rejected),
    // then 0. The sample of call 2 and the gap of call 3 arrive before call 0 settles:
    // they must follow their own ledger records, which follow 0 and 1.
    let settle = |index, rejected| Msg::Settle { index, rejected };
    let msgs = vec![
        ledger(0),
        ledger(1),
        ledger(2),
        ledger(3),
        settle(2, false),
        gathering(2, Some(0)),
        settle(3, false),
        gap_msg(3, GapReason::RingFull, "full"),
        settle(1, true),
        settle(0, false),
    ];
    let (records, inflight) = worker_stream("order.mma", 2, msgs);
    assert_eq!(inflight, 0);
    assert_eq!(ledger_indices(&records), vec![0, 1, 2, 3]);
    let position = |f: &dyn Fn(&Record) -> bool| records.iter().position(f).unwrap();
    let ledger_at = |i: u64| position(&|r| matches!(r, Record::Ledger(c) if c.index == i));
    assert!(position(&|r| matches!(r, Record::Sample(s) if s.index == 2)) > ledger_at(2));
    assert!(position(&|r| matches!(r, Record::Gap(g) if g.indices == [3])) > ledger_at(3));
    for r in &records {
        if let Record::Ledger(c) = r {
            assert_eq!(c.has(mmaudit_protocol::call::flags::REJECTED), c.index == 1);
        }
    }
    assert_eq!(
        end_of(&records),
        End {
            calls: 4,
            samples: 1,
            gap_calls: 1
        }
    );
}

/// The gather of a rejected call: it only frees its slot.
struct Discarded {
    index: u64,
    polls: u32,
}

impl Pending for Discarded {
    fn index(&self) -> u64 {
        self.index
    }
    fn poll(&mut self) -> Option<Resolved> {
        if self.polls == 0 {
            return Some(Resolved::Released);
        }
        self.polls -= 1;
        None
    }
    fn discards(&self) -> bool {
        true
    }
}

#[test]
fn a_rejected_call_gets_no_sample_and_no_gap_and_its_slot_waits_for_its_event() {
    let msgs = vec![
        ledger(0),
        ledger(1),
        settled(0, true),
        Msg::Sample(Box::new(Discarded { index: 0, polls: 3 })),
        // Still in the library at exit: recorded as made; its never-finishing
        // discarded gather is not a gap either.
        Msg::Sample(Box::new(Discarded {
            index: 1,
            polls: u32::MAX,
        })),
    ];
    let (records, inflight) = worker_stream("rejected.mma", 2, msgs);
    assert_eq!(
        inflight, 1,
        "the gather still running at exit was abandoned"
    );
    let flags: Vec<(u64, u16)> = records
        .iter()
        .filter_map(|r| match r {
            Record::Ledger(c) => Some((c.index, c.flags)),
            _ => None,
        })
        .collect();
    assert_eq!(
        flags,
        vec![(0, mmaudit_protocol::call::flags::REJECTED), (1, 0)]
    );
    assert!(!records
        .iter()
        .any(|r| matches!(r, Record::Sample(_) | Record::Gap(_))));
    assert_eq!(
        end_of(&records),
        End {
            calls: 2,
            samples: 0,
            gap_calls: 0
        }
    );
}

/// A file sink at `path` with a buffer of `buffer` bytes, flushed every 2 ms.
fn file_sink(path: &std::path::Path, buffer: usize) -> Sink {
    Sink::open(
        &SinkSpec::File(path.to_path_buf()),
        &key(),
        header(),
        buffer,
        Duration::from_millis(2),
        Arc::new(Ledger::default()),
        true,
    )
    .unwrap()
}

/// A worker with a file sink on its own thread, for exit tests: its sender, the shared
/// counters, the thread and the file.
fn exit_worker(
    name: &str,
) -> (
    crossbeam_channel::Sender<Msg>,
    Arc<Shared>,
    std::thread::JoinHandle<()>,
    PathBuf,
) {
    let path = temp(name);
    let sink = file_sink(&path, 1 << 20);
    let (tx, rx) = crossbeam_channel::unbounded();
    let shared = Arc::new(Shared::default());
    let worker = Worker::new(rx, sink, Arc::clone(&shared), Box::new(|r| panic!("{r}")));
    (tx, shared, std::thread::spawn(move || worker.run()), path)
}

fn shutdown_within(
    tx: &crossbeam_channel::Sender<Msg>,
    ms: u64,
) -> crossbeam_channel::Receiver<()> {
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    tx.send(Msg::Shutdown {
        deadline: Instant::now() + Duration::from_millis(ms),
        notices: vec![],
        done: done_tx,
    })
    .unwrap();
    done_rx
}

fn rejected(records: &[Record], index: u64) -> bool {
    records.iter().any(
        |r| matches!(r, Record::Ledger(c) if c.index == index && c.has(mmaudit_protocol::call::flags::REJECTED)),
    )
}

fn gap_of(records: &[Record], index: u64) -> Option<&Gap> {
    records.iter().find_map(|r| match r {
        Record::Gap(g) if g.indices == [index] => Some(g),
        _ => None,
    })
}

#[test]
fn what_a_hook_sends_while_the_exit_waits_is_recorded() {
    // Call 0's gather keeps the exit waiting; call 1 (over the channel) is still in the
    // library when the exit begins and returns, rejected, 100 ms into it; call 2's gap
    // arrives then too.
    let (tx, shared, thread, path) = exit_worker("exit-late.mma");
    shared.inflight.store(2, Ordering::SeqCst);
    tx.send(sampled_ledger(0)).unwrap();
    tx.send(settled(0, false)).unwrap();
    tx.send(gathering(0, None)).unwrap();
    for i in [1, 2] {
        tx.send(Msg::Ledger {
            call: call(i),
            sampled: i == 2,
        })
        .unwrap();
    }
    tx.send(settled(2, false)).unwrap();
    let done = shutdown_within(&tx, 800);
    std::thread::sleep(Duration::from_millis(100));
    tx.send(settled(1, true)).unwrap();
    tx.send(gap_msg(2, GapReason::RingFull, "late")).unwrap();
    done.recv_timeout(Duration::from_secs(5)).unwrap();
    thread.join().unwrap();
    let (_, records, end) = decode(&std::fs::read(&path).unwrap());
    end.unwrap();
    assert_eq!(ledger_indices(&records), vec![0, 1, 2]);
    assert!(rejected(&records, 1), "late settlement lost: {records:?}");
    assert_eq!(
        gap_of(&records, 2).map(|g| g.reason),
        Some(GapReason::RingFull)
    );
    // Call 0's gather never finished: a gap, as before.
    assert_eq!(
        gap_of(&records, 0).map(|g| g.reason),
        Some(GapReason::GatherFailed)
    );
    assert_eq!(shared.inflight.load(Ordering::SeqCst), 0);
}

#[test]
fn a_sampled_call_still_in_the_library_at_exit_gets_a_gap_and_an_unsampled_one_does_not() {
    let (tx, _shared, thread, path) = exit_worker("exit-inside.mma");
    for i in 0..4 {
        tx.send(Msg::Ledger {
            call: call(i),
            sampled: i == 1,
        })
        .unwrap();
    }
    // Calls 0 and 3 returned; 1 (sampled) and 2 (not) never do.
    for index in [0, 3] {
        tx.send(Msg::Settle {
            index,
            rejected: false,
        })
        .unwrap();
    }
    let done = shutdown_within(&tx, 300);
    done.recv_timeout(Duration::from_secs(5)).unwrap();
    thread.join().unwrap();
    let (_, records, end) = decode(&std::fs::read(&path).unwrap());
    end.unwrap();
    assert_eq!(ledger_indices(&records), vec![0, 1, 2, 3]);
    let g = gap_of(&records, 1).expect("a gap for the sampled call");
    assert_eq!(g.reason, GapReason::GatherFailed);
    assert!(g.detail.contains("inside the library"), "{}", g.detail);
    for i in [0, 2, 3] {
        assert!(gap_of(&records, i).is_none(), "no gap for call {i}");
    }
}

#[test]
fn a_call_stuck_in_the_library_bounds_what_waits_behind_it_and_loses_no_record() {
    // Call 0 (sampled) stays inside the library, its record made in this thread's
    // queue, with call 1 settled behind it there; calls 2.. come over the channel and
    // settle. Past MAX_WAITING waiting records, call 0 is written as made and the rest
    // follow in order; then call 0 returns accepted, rejected, or never.
    let n = MAX_WAITING as u64 + 100;
    for late in [Some(false), Some(true), None] {
        let path = temp(&format!("stuck-{late:?}.mma"));
        let sink = file_sink(&path, 64 << 20);
        let (_tx, rx) = crossbeam_channel::unbounded();
        let shared = Arc::new(Shared::default());
        let mut w = Worker::new(rx, sink, Arc::clone(&shared), Box::new(|r| panic!("{r}")));
        let stuck = shared.queues.push(&call(0), true).unwrap();
        let one = shared.queues.push(&call(1), false).unwrap();
        shared.queues.settle(one, false);
        for i in 2..n {
            w.handle(ledger(i));
            w.handle(settled(i, false));
            if i.is_multiple_of(1000) {
                w.take_queued(false);
                assert!(w.unsettled.len() <= MAX_WAITING + 1000, "{late:?}");
            }
        }
        w.take_queued(false);
        assert!(w.unsettled.len() <= MAX_WAITING, "{late:?}");
        assert!(w.base > 1, "call 0 written early ({late:?})");
        if let Some(rejected) = late {
            shared.queues.settle(stuck, rejected);
            w.take_queued(false);
        }
        w.shutdown(Instant::now() + Duration::from_secs(2), vec![]);
        let (_, records, end) = decode(&std::fs::read(&path).unwrap());
        end.unwrap();
        assert_eq!(
            ledger_indices(&records),
            (0..n).collect::<Vec<_>>(),
            "{late:?}"
        );
        let notices: Vec<&str> = records
            .iter()
            .filter_map(|r| match r {
                Record::Notice(x) => Some(x.message.as_str()),
                _ => None,
            })
            .collect();
        assert!(
            !notices.iter().any(|m| m.contains("never arrived")),
            "{late:?}: {notices:?}"
        );
        let rejected_late = notices
            .iter()
            .any(|m| m.contains("rejected by the library after"));
        assert_eq!(rejected_late, late == Some(true), "{late:?}: {notices:?}");
        // A sampled call that never ran, or never returned, has a gap; one that ran
        // and returned will have its sample.
        assert_eq!(
            gap_of(&records, 0).is_some(),
            late != Some(false),
            "{late:?}"
        );
        assert!(
            !rejected(&records, 0),
            "written before its rejection: {late:?}"
        );
    }
}

/// Calls 1..=n settled in the queues of threads that have exited, more than
/// MAX_WAITING of them, while call 0's record is not there yet.
fn worker_behind_an_absent_record(
    name: &str,
) -> (Worker, crossbeam_channel::Sender<Msg>, PathBuf, u64) {
    let n = MAX_WAITING as u64 + 10;
    let path = temp(name);
    let (tx, rx) = crossbeam_channel::unbounded();
    let shared = Arc::new(Shared::default());
    let w = Worker::new(
        rx,
        file_sink(&path, 64 << 20),
        Arc::clone(&shared),
        Box::new(|r| panic!("{r}")),
    );
    let per = (crate::handoff::SLOTS - 1) as u64;
    let mut first = 1u64;
    while first <= n {
        let last = (first + per - 1).min(n);
        let q = Arc::clone(&shared);
        std::thread::spawn(move || {
            for i in first..=last {
                let t = q.queues.push(&call(i), false).unwrap();
                q.queues.settle(t, false);
            }
        })
        .join()
        .unwrap();
        first = last + 1;
    }
    (w, tx, path, n)
}

#[test]
fn a_record_on_its_way_is_not_counted_missing_and_one_that_never_comes_is() {
    // On its way: call 0's record comes over the channel after the background thread
    // took the queues (its thread's queue was full).
    let (mut w, tx, path, n) = worker_behind_an_absent_record("absent-late.mma");
    w.take_queued(false);
    tx.send(ledger(0)).unwrap();
    tx.send(settled(0, false)).unwrap();
    w.take_queued(false);
    w.shutdown(Instant::now() + Duration::from_secs(2), vec![]);
    let (_, records, end) = decode(&std::fs::read(&path).unwrap());
    end.unwrap();
    assert_eq!(ledger_indices(&records), (0..=n).collect::<Vec<_>>());
    // Never: after MISSING_AFTER the records behind it are written, call 0 counted
    // missing (the verifier sees the hole).
    let (mut w, _tx, path, n) = worker_behind_an_absent_record("absent-never.mma");
    w.take_queued(false);
    assert_eq!(w.base, 0, "waits for it");
    std::thread::sleep(MISSING_AFTER + Duration::from_millis(50));
    w.take_queued(false);
    assert!(w.base > 0 && w.unsettled.len() <= MAX_WAITING);
    w.shutdown(Instant::now() + Duration::from_secs(2), vec![]);
    let (_, records, end) = decode(&std::fs::read(&path).unwrap());
    end.unwrap();
    assert_eq!(ledger_indices(&records), (1..=n).collect::<Vec<_>>());
    assert!(records.iter().any(
        |r| matches!(r, Record::Notice(x) if x.message.contains("never arrived (calls 0..=0"))
    ));
}

#[test]
fn a_graph_replay_still_running_at_exit_gets_gaps_for_its_sampled_calls_only() {
    // A replay's four records; the schedule sampled calls 1 and 2; its launch never
    // returns (no SettleRange). A second replay (4..6) returned: no gap.
    let (tx, _shared, thread, path) = exit_worker("exit-replay.mma");
    tx.send(Msg::Ledgers(Arc::new((0..4).map(call).collect())))
        .unwrap();
    tx.send(Msg::Sampled(vec![1, 2])).unwrap();
    tx.send(Msg::Ledgers(Arc::new((4..6).map(call).collect())))
        .unwrap();
    tx.send(Msg::Sampled(vec![5])).unwrap();
    tx.send(Msg::SettleRange {
        first: 4,
        count: 2,
        rejected: false,
    })
    .unwrap();
    tx.send(gap_msg(5, GapReason::RingFull, "its own")).unwrap();
    let done = shutdown_within(&tx, 300);
    done.recv_timeout(Duration::from_secs(5)).unwrap();
    thread.join().unwrap();
    let (_, records, end) = decode(&std::fs::read(&path).unwrap());
    end.unwrap();
    assert_eq!(ledger_indices(&records), (0..6).collect::<Vec<_>>());
    let gaps: Vec<(u64, GapReason)> = records
        .iter()
        .filter_map(|r| match r {
            Record::Gap(g) => Some((g.indices[0], g.reason)),
            _ => None,
        })
        .collect();
    assert_eq!(
        gaps,
        vec![
            (1, GapReason::GatherFailed),
            (2, GapReason::GatherFailed),
            (5, GapReason::RingFull)
        ]
    );
}

#[test]
fn a_sampled_call_that_returns_as_the_exit_ends_gets_its_sample_or_a_gap() {
    // Call 0 (sampled) returned: its queue slot is settled, and its sample is either
    // handed over (it must be written, with no gap) or not yet (a gap).
    for handed_over in [true, false] {
        let path = temp(&format!("exit-window-{handed_over}.mma"));
        let (tx, rx) = crossbeam_channel::unbounded();
        let shared = Arc::new(Shared::default());
        let mut w = Worker::new(
            rx,
            file_sink(&path, 1 << 20),
            Arc::clone(&shared),
            Box::new(|r| panic!("{r}")),
        );
        shared.inflight.store(1, Ordering::SeqCst);
        let t = shared.queues.push(&call(0), true).unwrap();
        shared.queues.settle(t, false);
        if handed_over {
            tx.send(gathering(0, Some(0))).unwrap();
        }
        w.shutdown(Instant::now() + Duration::from_secs(2), vec![]);
        let (_, records, end) = decode(&std::fs::read(&path).unwrap());
        end.unwrap();
        assert_eq!(ledger_indices(&records), vec![0]);
        let sample = records
            .iter()
            .any(|r| matches!(r, Record::Sample(s) if s.index == 0));
        assert_eq!(sample, handed_over);
        assert_eq!(gap_of(&records, 0).is_some(), !handed_over, "{records:?}");
    }
}

#[test]
fn a_sampled_call_settled_over_the_channel_during_the_exit_is_owed_too() {
    // Channel path (its queue was full): record, settlement, and the sample either
    // follows or not; a graph replay likewise (SettleRange, then its gathers).
    for handed_over in [true, false] {
        let (tx, shared, thread, path) = exit_worker(&format!("exit-channel-{handed_over}.mma"));
        shared.inflight.store(4, Ordering::SeqCst);
        tx.send(sampled_ledger(0)).unwrap();
        tx.send(Msg::Ledgers(Arc::new((1..3).map(call).collect())))
            .unwrap();
        tx.send(Msg::Sampled(vec![2])).unwrap();
        // Call 3's gather never finishes: the exit waits for it.
        tx.send(sampled_ledger(3)).unwrap();
        tx.send(settled(3, false)).unwrap();
        tx.send(gathering(3, None)).unwrap();
        let done = shutdown_within(&tx, 400);
        std::thread::sleep(Duration::from_millis(50));
        tx.send(settled(0, false)).unwrap();
        tx.send(Msg::SettleRange {
            first: 1,
            count: 2,
            rejected: false,
        })
        .unwrap();
        if handed_over {
            for index in [0, 2] {
                tx.send(gathering(index, Some(0))).unwrap();
            }
        }
        done.recv_timeout(Duration::from_secs(5)).unwrap();
        thread.join().unwrap();
        let (_, records, end) = decode(&std::fs::read(&path).unwrap());
        end.unwrap();
        assert_eq!(ledger_indices(&records), vec![0, 1, 2, 3]);
        for index in [0, 2] {
            let sample = records
                .iter()
                .any(|r| matches!(r, Record::Sample(s) if s.index == index));
            assert_eq!(sample, handed_over, "call {index}");
            assert_eq!(
                gap_of(&records, index).is_some(),
                !handed_over,
                "call {index}"
            );
        }
        assert!(gap_of(&records, 1).is_none());
    }
}

#[test]
fn a_held_weight_found_by_its_address_commits_as_when_gathered_whole() {
    use crate::model::gather::{HeldA, HeldKey, HeldRef};
    use crate::stream::commit::CommitSession;
    use mmaudit_protocol::handshake::OperandTable;
    use mmaudit_protocol::schedule::Plan;
    // op(A) is the verifier's tensor 7 (8 rows of 16 bf16). Gathered whole, the call is
    // bound to it by reference and its address remembered; gathered again as evidence
    // and one spot row, it must commit to exactly the same; a spot row that no longer
    // matches is refused and the address forgotten.
    let (m, k) = (8u64, 16u64);
    let (data, tensor) = held_tensor(7, m, k);
    let table = OperandTable::new(
        &key(),
        ServerHello {
            key_id: key().id(),
            nonce: [0x63; 16],
            sampling: SamplingConfig::default(),
            tensors: vec![tensor],
            mode: HelloMode::Commit,
        },
    );
    let mut c = call(0);
    (c.m, c.n, c.k) = (m, 1, k);
    c.a.dtype = DType::BF16;
    c.b.dtype = DType::BF16;
    let whole = Sample {
        a_rows: OperandData::Inline(data.clone()),
        b_cols: OperandData::Inline(vec![0x3f; 2 * k as usize]),
        d_out: vec![0x40; 4 * m as usize],
        ..sample(0, 0)
    };
    let key_at = HeldKey {
        device: 0,
        base: 0x7e57_0000_0000,
        batch_stride: 0,
        row_stride: 2,
        elem_stride: 16,
        m,
        k,
        batch: 1,
        dtype: DType::BF16,
    };
    let mut s = CommitSession::new(&key(), [0; 32], 1 << 20);
    let commitment = |r: Record| match r {
        Record::Commitment(c) => c.commitment,
        other => panic!("{other:?}"),
    };
    let first =
        commitment(commit_held(&mut s, c.clone(), whole.clone(), &table, key_at, None).unwrap());
    let reference = HeldRef {
        tensor: 7,
        matrices: vec![0],
    };
    assert_eq!(crate::held::known(&key_at), Some(reference.clone()));
    let row = |r: u64| data[(r * 2 * k) as usize..((r + 1) * 2 * k) as usize].to_vec();
    let evidence: Vec<u8> = (0..m).flat_map(|r| row(r)[..2].to_vec()).collect();
    let by_address = |spot_row: u64, spot: Vec<u8>| {
        let held = HeldA {
            key: key_at,
            reference: Some(reference.clone()),
            spot_row,
        };
        let sample = Sample {
            a_rows: OperandData::Inline(evidence.clone()),
            ..whole.clone()
        };
        (sample, Some((held, spot)))
    };
    let (sample, held) = by_address(3, row(3));
    let again = commitment(commit_held(&mut s, c.clone(), sample, &table, key_at, held).unwrap());
    assert_eq!(
        again, first,
        "the same binding, whichever way op(A) was gathered"
    );
    assert_eq!(s.totals.by_address, 1);
    // Its opening verifies, with the plan rows' first elements as evidence.
    let plan = Plan {
        rows: vec![2, 5],
        cols: vec![0],
        batches: vec![0],
    };
    let frame = mmaudit_protocol::commit::frames::ChallengeWriter::new(&key(), [0; 32]).frame(
        0,
        &[mmaudit_protocol::commit::frames::Challenge {
            index: 0,
            plan: plan.clone(),
        }],
    );
    let answers = s.on_bytes(&frame).unwrap();
    let Some(Record::Opening(o)) = answers.first() else {
        panic!("{answers:?}")
    };
    let opened = o.verify(&c, &plan, &first).unwrap();
    let OperandData::Reference { evidence: e, .. } = &opened.a_rows else {
        panic!("{:?}", opened.a_rows)
    };
    assert_eq!(*e, [row(2)[..2].to_vec(), row(5)[..2].to_vec()].concat());
    // The weights at the address changed to none the verifier holds: refused, forgotten.
    let (sample, held) = by_address(3, row(4));
    let e = commit_held(&mut s, c.clone(), sample, &table, key_at, held).unwrap_err();
    assert!(e.contains("matches none"), "{e}");
    assert_eq!(crate::held::known(&key_at), None);
    // A probe (the shape is offered, nothing known at the address): found by its spot
    // row, it commits as the whole gather did; a spot row of no offered tensor is not
    // committed and nothing is remembered.
    let probe = |at: u64, spot: Vec<u8>| {
        let key = HeldKey { base: at, ..key_at };
        let held = HeldA {
            key,
            reference: None,
            spot_row: 6,
        };
        let sample = Sample {
            a_rows: OperandData::Inline(evidence.clone()),
            ..whole.clone()
        };
        (key, sample, Some((held, spot)))
    };
    let (key, sample, held) = probe(0x7e58_0000_0000, row(6));
    let probed = commitment(commit_held(&mut s, c.clone(), sample, &table, key, held).unwrap());
    assert_eq!(probed, first);
    assert_eq!(crate::held::known(&key), Some(reference.clone()));
    let mut other = row(6);
    other[0] ^= 0x40;
    let (key, sample, held) = probe(0x7e59_0000_0000, other);
    let e = commit_held(&mut s, c.clone(), sample, &table, key, held).unwrap_err();
    assert!(e.contains("not a tensor"), "{e}");
    assert_eq!(crate::held::known(&key), None);
}

// ---- commit mode: reconnects

#[test]
fn a_reconnect_in_commit_mode_never_carries_old_commitments_into_the_new_segment() {
    // Segment 0 (commit mode): call 0's ledger record and commitment are queued, then
    // the verifier hangs up before they are framed. Segment 1 (a new session from a
    // later call): call 0 is before it (its ledger record is written with NO_SESSION),
    // so its commitment must not be written there. start_segment drops queued samples
    // and gaps of earlier calls (record_index names only those), not commitments or
    // openings: the new verifier would see "commitment record for call 0, which is not
    // an auditable call awaiting its commitment" (audit.rs on_commitment), an integrity
    // error that fails an honest run.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (closed_tx, closed_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        send_hello_mode(
            &mut s,
            &key(),
            [0x71; 16],
            SamplingConfig::default(),
            vec![],
            HelloMode::Commit,
        );
        // The header arrives with the session; hang up once the commitment is queued.
        let _ = read_conn(s.try_clone().unwrap(), Some(1));
        go_rx.recv().unwrap();
        drop(s);
        closed_tx.send(()).unwrap();
        let (mut s, _) = listener.accept().unwrap();
        send_hello_mode(
            &mut s,
            &key(),
            [0x72; 16],
            SamplingConfig::default(),
            vec![],
            HelloMode::Sampling,
        );
        read_conn(s, None)
    });
    let mut p = Prover::tcp(port, false);
    p.until_session();
    let before = Instant::now();
    let (index, in_session) = p.call();
    assert!(in_session);
    let mut c = call(index);
    c.index = index;
    assert!(p
        .sink
        .push_sample(Gathered {
            leaves: Default::default(),
            sample: whole_sample(index),
            operands: None,
            call: Some(c),
            a_key: None,
            held: None,
            device: None,
        })
        .is_none());
    assert_eq!(p.sink.totals().commitments, 1, "{:?}", p.sink.totals());
    go_tx.send(()).unwrap();
    closed_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    // Pump with a time before the records were queued: nothing is framed, the closed
    // connection is noticed by the read.
    let start = Instant::now();
    while p.ledger.current().is_some() {
        p.sink.pump(before, false).unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "close not noticed"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    // A call between the sessions, then the new session.
    p.call();
    p.until_session();
    p.call();
    p.sink
        .finish(Instant::now() + Duration::from_secs(10))
        .unwrap();
    let (h, records, done) = decode(&server.join().unwrap());
    done.unwrap();
    assert_eq!(h.segment, 1);
    for r in &records {
        if let Record::Commitment(c) = r {
            let ledgered = records
                .iter()
                .any(|l| matches!(l, Record::Ledger(l) if l.index == c.index && !no_session(l)));
            assert!(
                ledgered,
                "segment 1 (first index {}) carries a commitment of call {} from segment 0's session",
                h.first_index,
                c.index,
            );
        }
    }
}

/// Tensor `id` like [`held_tensor`], every row's first element xor-ed with `flip` (a
/// different weight of the same shape) except the rows in `keep` (rows both share).
fn held_tensor_variant(
    id: u32,
    rows: u64,
    cols: u64,
    flip: u8,
    keep: &[u64],
) -> (Vec<u8>, HelloTensor) {
    let (mut data, mut t) = held_tensor(id, rows, cols);
    let fk = key().fingerprint_key();
    let w = (2 * cols) as usize;
    for r in 0..rows {
        if !keep.contains(&r) {
            data[r as usize * w] ^= flip;
        }
        t.fingerprints[r as usize] = fingerprint(&fk, &data[r as usize * w..][..w]);
    }
    (data, t)
}

/// A hello table of `tensors`, an 8 x 1 x 16 bf16 call and op(A)'s key at `base`.
fn held_setup(
    tensors: Vec<HelloTensor>,
    base: u64,
) -> (
    mmaudit_protocol::handshake::OperandTable,
    GemmCall,
    crate::model::gather::HeldKey,
) {
    let (m, k) = (8u64, 16u64);
    let table = mmaudit_protocol::handshake::OperandTable::new(
        &key(),
        ServerHello {
            key_id: key().id(),
            nonce: [0x63; 16],
            sampling: SamplingConfig::default(),
            tensors,
            mode: HelloMode::Commit,
        },
    );
    let mut c = call(0);
    (c.m, c.n, c.k) = (m, 1, k);
    c.a.dtype = DType::BF16;
    c.b.dtype = DType::BF16;
    let key_at = crate::model::gather::HeldKey {
        device: 0,
        base,
        batch_stride: 0,
        row_stride: 2,
        elem_stride: 16,
        m,
        k,
        batch: 1,
        dtype: DType::BF16,
    };
    (table, c, key_at)
}

/// op(A) = `data` (8 rows of 16 bf16) gathered as evidence and spot row `spot_row`.
fn held_gather(
    data: &[u8],
    spot_row: u64,
    key_at: crate::model::gather::HeldKey,
    reference: Option<crate::model::gather::HeldRef>,
) -> (Sample, Option<(crate::model::gather::HeldA, Vec<u8>)>) {
    let (m, k) = (8u64, 16u64);
    let row = |r: u64| data[(r * 2 * k) as usize..((r + 1) * 2 * k) as usize].to_vec();
    let evidence: Vec<u8> = (0..m).flat_map(|r| row(r)[..2].to_vec()).collect();
    let sample = Sample {
        a_rows: OperandData::Inline(evidence),
        b_cols: OperandData::Inline(vec![0x3f; 2 * k as usize]),
        d_out: vec![0x40; 4 * m as usize],
        ..sample(0, 0)
    };
    let held = crate::model::gather::HeldA {
        key: key_at,
        reference,
        spot_row,
    };
    (sample, Some((held, row(spot_row))))
}

#[test]
fn a_reused_buffer_holding_another_offered_weight_is_rebound_not_refused() {
    use crate::model::gather::HeldRef;
    use crate::stream::commit::CommitSession;
    // A scratch buffer (an FSDP all-gather, offloading, a cast under autocast: the
    // caching allocator hands the same block to each same-shaped weight) holds tensor 7,
    // then tensor 8, both offered: the second call is bound to tensor 8.
    let (d7, t7) = held_tensor(7, 8, 16);
    let (d8, t8) = held_tensor_variant(8, 8, 16, 0x01, &[]);
    let (table, c, key_at) = held_setup(vec![t7, t8], 0x7e60_0000_0000);
    let mut s = CommitSession::new(&key(), [0; 32], 1 << 20);
    let (sample, held) = held_gather(&d7, 2, key_at, None);
    commit_held(&mut s, c.clone(), sample, &table, key_at, held).unwrap();
    let r7 = HeldRef {
        tensor: 7,
        matrices: vec![0],
    };
    assert_eq!(crate::held::known(&key_at), Some(r7.clone()));
    let mut c1 = c.clone();
    c1.index = 1;
    let (mut sample, held) = held_gather(&d8, 3, key_at, Some(r7));
    sample.index = 1;
    commit_held(&mut s, c1, sample, &table, key_at, held).expect("an honest call");
    let r8 = HeldRef {
        tensor: 8,
        matrices: vec![0],
    };
    assert_eq!(crate::held::known(&key_at), Some(r8));
}

#[test]
fn a_spot_row_two_tensors_share_neither_unbinds_nor_misbinds() {
    use crate::model::gather::HeldRef;
    use crate::stream::commit::CommitSession;
    // Tensors 7 and 8 share row 3 (zero padding rows of two tensors of one shape, say).
    let (_d7, t7) = held_tensor(7, 8, 16);
    let (d8, t8) = held_tensor_variant(8, 8, 16, 0x01, &[3]);
    // Known at the address: a spot row on the shared row still checks against it.
    let (table, c, key_at) = held_setup(vec![t7.clone(), t8.clone()], 0x7e61_0000_0000);
    let mut s = CommitSession::new(&key(), [0; 32], 1 << 20);
    let r8 = HeldRef {
        tensor: 8,
        matrices: vec![0],
    };
    crate::held::remember(key_at, r8.clone());
    let (sample, held) = held_gather(&d8, 3, key_at, Some(r8.clone()));
    commit_held(&mut s, c.clone(), sample, &table, key_at, held).expect("an honest call");
    assert_eq!(crate::held::known(&key_at), Some(r8.clone()));
    // A probe on the shared row cannot tell: not committed, nothing remembered; one on
    // another row binds tensor 8.
    let (table, c, key_at) = held_setup(vec![t7, t8], 0x7e62_0000_0000);
    let (sample, held) = held_gather(&d8, 3, key_at, None);
    let e = commit_held(&mut s, c.clone(), sample, &table, key_at, held).unwrap_err();
    assert!(e.contains("more than one tensor"), "{e}");
    assert_eq!(crate::held::known(&key_at), None);
    let (sample, held) = held_gather(&d8, 4, key_at, None);
    commit_held(&mut s, c, sample, &table, key_at, held).expect("an honest call");
    assert_eq!(crate::held::known(&key_at), Some(r8));
}

/// Commits `sample` of `call` in `s` with the hello's `table`, op(A) at `key` (and with
/// `held`, gathered as that tensor's evidence and spot rows), hashed on the host.
fn commit_held(
    s: &mut crate::stream::commit::CommitSession,
    call: GemmCall,
    sample: Sample,
    table: &mmaudit_protocol::handshake::OperandTable,
    key: crate::model::gather::HeldKey,
    held: Option<(crate::model::gather::HeldA, Vec<u8>)>,
) -> Result<Record, String> {
    s.commit(
        call,
        sample,
        Some(table),
        Some(key),
        held,
        Default::default(),
        None,
    )
}

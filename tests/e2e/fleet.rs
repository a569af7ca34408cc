//! The fleet against a real nats-server (JetStream, file storage) on a loopback port
//! this test picks: programs on the simulated GPU under `LD_PRELOAD=libmmaudit.so`
//! stream to `mmaudit-verify relay`, `mmaudit-verify worker` processes verify.
//!
//! Shown, each with the fault present and absent:
//! - 8 programs, 3 workers: every report passes, and each equals `check` of the segment
//!   exported to a file, and `check nats://...` of the stored segment;
//! - a worker killed (SIGKILL) while its segment is open: another worker takes the
//!   segment over (delivery 2) and gives the verdict of an uninterrupted run;
//! - a hello forged by a key holder (a nonce of its choosing, which no worker issued):
//!   the stream fails; the same program with a worker's hello passes;
//! - a segment's bytes published again as another segment (a replay): fails, "already
//!   used"; garbage published as a segment and as a work item: rejected, no report,
//!   and the honest segment next to them passes.
//!
//! nats-server comes from Debian's package (scripts/test.sh installs it); the test
//! fails, naming the package, when it is missing.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mmaudit_protocol::handshake::{HelloMode, ServerHello};
use mmaudit_protocol::keys::Key;
use mmaudit_tests::preload::{audit_env, run, scratch, tools, Output, EVERY_CALL, KEY};
use mmaudit_tests::simgpu::compile;
use serde_json::Value;

const WORKLOAD: [&str; 2] = ["--layers", "2"];

/// A child process killed when dropped.
struct Proc {
    child: Child,
    name: String,
    log: PathBuf,
}

impl Proc {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(dir: &Path, name: &str, exe: &Path, args: &[String]) -> Proc {
    let log = dir.join(format!("{name}.log"));
    let file = std::fs::File::create(&log).expect("create a log file");
    let child = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log file"))
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("start {name} ({}): {e}", exe.display()));
    Proc {
        child,
        name: name.into(),
        log,
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn nats_server() -> PathBuf {
    if let Ok(p) = std::env::var("MMAUDIT_NATS_SERVER") {
        return p.into();
    }
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/usr/bin"])
    {
        let p = Path::new(dir).join("nats-server");
        if p.is_file() {
            return p;
        }
    }
    panic!("nats-server is not installed (Debian: apt-get install nats-server; scripts/test.sh installs it), or set MMAUDIT_NATS_SERVER");
}

/// A private nats-server with JetStream, its store in the test's directory.
struct Fleet {
    dir: PathBuf,
    url: String,
    port: u16,
    server: Option<Proc>,
    key_file: PathBuf,
}

impl Fleet {
    fn new(name: &str) -> Fleet {
        Fleet::with_config(name, "")
    }

    /// A fleet whose server also reads `config` (nats-server configuration lines).
    fn with_config(name: &str, config: &str) -> Fleet {
        let dir = scratch(name);
        std::fs::write(dir.join("nats.conf"), config).expect("write the server's configuration");
        let key_file = dir.join("audit.key");
        std::fs::write(&key_file, format!("{KEY}\n")).expect("write the key");
        let port = free_port();
        let mut fleet = Fleet {
            url: format!("nats://127.0.0.1:{port}"),
            dir,
            port,
            server: None,
            key_file,
        };
        fleet.start_server();
        fleet
    }

    fn start_server(&mut self) {
        let args = [
            "-c",
            &self.dir.join("nats.conf").display().to_string(),
            "-js",
            "-sd",
            &self.dir.join("store").display().to_string(),
            "-a",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
        ]
        .map(String::from);
        let server = spawn(&self.dir, "nats-server", &nats_server(), &args);
        let port = self.port;
        wait_for("nats-server to listen", Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        self.server = Some(server);
    }

    fn worker(&self, name: &str, extra: &[&str]) -> Proc {
        let mut args: Vec<String> = [
            "worker",
            "--nats",
            &self.url,
            "--key-file",
            &self.key_file.display().to_string(),
            "--json-dir",
            &self.dir.join("reports").display().to_string(),
            "--min-call-rate",
            "100%",
            "--max-no-session",
            "100%",
            "--threads",
            "1",
        ]
        .map(String::from)
        .to_vec();
        args.extend(extra.iter().map(|s| s.to_string()));
        let w = spawn(&self.dir, name, &tools().verify, &args);
        wait_for(&format!("{name} to start"), Duration::from_secs(20), || {
            w.log().contains("taking segments")
        });
        w
    }

    /// A relay and the address programs connect to.
    fn relay(&self) -> (Proc, String) {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let args = ["relay", "--nats", &self.url, "--listen", &listen].map(String::from);
        let r = spawn(&self.dir, "relay", &tools().verify, &args);
        wait_for("the relay to listen", Duration::from_secs(20), || {
            r.log().contains("listening on")
        });
        (r, listen)
    }

    fn reports(&self) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(self.dir.join("reports"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "json") {
                let text = std::fs::read_to_string(&p).expect("read a report");
                let seg = p.file_stem().unwrap().to_string_lossy().into_owned();
                out.push((seg, serde_json::from_str(&text).expect("a JSON report")));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn wait_reports(&self, n: usize, procs: &[&Proc]) -> Vec<(String, Value)> {
        let start = Instant::now();
        loop {
            let r = self.reports();
            if r.len() >= n {
                return r;
            }
            if start.elapsed() > Duration::from_secs(90) {
                let logs: Vec<String> = procs
                    .iter()
                    .map(|p| format!("--- {}\n{}", p.name, p.log()))
                    .collect();
                panic!("{} of {n} reports after 90 s\n{}", r.len(), logs.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn verify(&self, args: &[String]) -> std::process::Output {
        Command::new(&tools().verify)
            .args(args)
            .output()
            .expect("run mmaudit-verify")
    }

    /// `check --json -` of `input` (a file or nats:// address) with the workers' policy.
    fn check(&self, input: &str) -> Value {
        let args = [
            "check",
            input,
            "--key-file",
            &self.key_file.display().to_string(),
            "--min-call-rate",
            "100%",
            "--max-no-session",
            "100%",
            "--json",
            "-",
        ]
        .map(String::from);
        let out = self.verify(&args);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "check {input}: no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    fn export(&self, segment: &str) -> PathBuf {
        let out = self.dir.join(format!("{segment}.mma"));
        let args = [
            "export",
            "--nats",
            &self.url,
            segment,
            "--out",
            &out.display().to_string(),
        ]
        .map(String::from);
        let o = self.verify(&args);
        assert!(
            o.status.success(),
            "export: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        out
    }

    /// Publishes `payload` on `subject` with the core protocol (no JetStream
    /// acknowledgement: what a garbage publisher can do).
    fn publish_raw(&self, subject: &str, payload: &[u8]) {
        self.publish_raw_with(subject, payload, None)
    }

    /// [`Fleet::publish_raw`], with one header line (`Name: value`).
    fn publish_raw_with(&self, subject: &str, payload: &[u8], header: Option<&str>) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to nats");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut line = String::new();
        r.read_line(&mut line).expect("INFO");
        s.write_all(b"CONNECT {\"verbose\":false,\"headers\":true}\r\n")
            .unwrap();
        match header {
            None => write!(s, "PUB {subject} {}\r\n", payload.len()).unwrap(),
            Some(h) => {
                let head = format!("NATS/1.0\r\n{h}\r\n\r\n");
                write!(
                    s,
                    "HPUB {subject} {} {}\r\n{head}",
                    head.len(),
                    head.len() + payload.len()
                )
                .unwrap();
            }
        }
        s.write_all(payload).unwrap();
        s.write_all(b"\r\nPING\r\n").unwrap();
        loop {
            line.clear();
            r.read_line(&mut line).expect("PONG");
            if line.starts_with("PONG") {
                return;
            }
            assert!(!line.starts_with("-ERR"), "nats: {line}");
        }
    }
}

/// Without the report's name (the input's path), the report `check` gives.
fn same_verdict(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(streams) = v.get_mut("streams").and_then(Value::as_array_mut) {
            for s in streams {
                s.as_object_mut().map(|o| o.remove("name"));
            }
        }
        v
    };
    strip(a) == strip(b)
}

fn verdict(v: &Value) -> &str {
    v["verdict"].as_str().unwrap_or("?")
}

fn program(sink: &str) -> Output {
    let exe = compile("llama_workload");
    run(
        &exe,
        &WORKLOAD,
        &audit_env(&format!("tcp://{sink}"), EVERY_CALL, None),
    )
}

#[test]
fn eight_programs_three_workers_pass_and_every_report_is_checks() {
    let fleet = Fleet::new("fleet-eight");
    let ports: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let workers: Vec<Proc> = (0..3)
        .map(|i| fleet.worker(&format!("worker{i}"), &["--metrics", &ports[i]]))
        .collect();
    let (relay, sink) = fleet.relay();
    let runs: Vec<_> = (0..8)
        .map(|_| {
            let sink = sink.clone();
            std::thread::spawn(move || program(&sink))
        })
        .collect();
    for r in runs {
        let out = r.join().expect("a program thread");
        assert_eq!(out.code, Some(0), "{}", out.transcript());
    }
    let mut procs: Vec<&Proc> = workers.iter().collect();
    procs.push(&relay);
    let reports = fleet.wait_reports(8, &procs);
    assert_eq!(reports.len(), 8);
    for (segment, report) in &reports {
        assert_eq!(verdict(report), "pass", "{segment}: {report:#}");
        let file = fleet.export(segment);
        let offline = fleet.check(&file.display().to_string());
        assert!(
            same_verdict(report, &offline),
            "{segment}: worker {report:#}\ncheck {offline:#}"
        );
        let stored = fleet.check(&format!("{}/{segment}", fleet.url));
        assert!(
            same_verdict(report, &stored),
            "{segment}: check nats:// {stored:#}"
        );
    }
    // Every worker answered or verified something only if the queue spread the work;
    // what matters is that each segment has exactly one report.
    let segments: std::collections::BTreeSet<_> = reports.iter().map(|(s, _)| s.clone()).collect();
    assert_eq!(segments.len(), 8);
    // The workers' counters add up to the same: 8 passed, at least 8 hellos, none open.
    let sum = |name: &str| -> u64 { ports.iter().map(|p| metric(p, name)).sum() };
    assert_eq!(sum("segments_passed_total"), 8);
    assert_eq!(sum("segments_failed_total"), 0);
    assert_eq!(sum("segments_in_progress"), 0);
    assert!(sum("hellos_issued_total") >= 8);
}

/// One counter of a worker's `--metrics` page.
fn metric(addr: &str, name: &str) -> u64 {
    let mut s = TcpStream::connect(addr).expect("connect to the metrics port");
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut page = String::new();
    s.read_to_string(&mut page).unwrap();
    let line = format!("mmaudit_worker_{name} ");
    page.lines()
        .find_map(|l| l.strip_prefix(&line))
        .unwrap_or_else(|| panic!("no {name} in {page}"))
        .trim()
        .parse()
        .expect("a count")
}

/// Forwards a program's connection to the relay; its stream after the first `hold`
/// bytes waits until `release` is sent.
fn gated_proxy(relay: String, hold: usize) -> (String, mpsc::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
    let addr = listener.local_addr().unwrap().to_string();
    let (release, gate) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let (mut program, _) = listener.accept().expect("the program connects");
        let mut upstream = TcpStream::connect(&relay).expect("connect to the relay");
        let (mut p2, mut u2) = (program.try_clone().unwrap(), upstream.try_clone().unwrap());
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut u2, &mut p2);
        });
        let mut all = Vec::new();
        let mut buf = [0u8; 1 << 16];
        let mut sent = 0;
        let mut released = false;
        loop {
            let n = program.read(&mut buf).unwrap_or(0);
            all.extend_from_slice(&buf[..n]);
            if !released && gate.try_recv().is_ok() {
                released = true;
            }
            let upto = if released {
                all.len()
            } else {
                all.len().min(hold)
            };
            if upto > sent {
                upstream.write_all(&all[sent..upto]).expect("forward");
                sent = upto;
            }
            if n == 0 {
                break;
            }
        }
        if !released {
            let _ = gate.recv();
        }
        upstream.write_all(&all[sent..]).expect("forward the rest");
        let _ = upstream.shutdown(std::net::Shutdown::Write);
        let mut rest = Vec::new();
        let _ = upstream.read_to_end(&mut rest);
    });
    (addr, release)
}

#[test]
fn a_worker_killed_mid_segment_is_taken_over_with_the_same_verdict() {
    let fleet = Fleet::new("fleet-kill");
    let mut first = fleet.worker("first", &["--ack-wait", "2"]);
    let (relay, sink) = fleet.relay();
    let (proxy, release) = gated_proxy(sink, 1024);
    let out = program(&proxy);
    assert_eq!(out.code, Some(0), "{}", out.transcript());
    // The segment is open (half of it stored) and the first worker has it.
    wait_for(
        "the first worker to take the segment",
        Duration::from_secs(30),
        || first.log().contains("verifying"),
    );
    first.kill();
    let metrics = format!("127.0.0.1:{}", free_port());
    let second = fleet.worker("second", &["--ack-wait", "2", "--metrics", &metrics]);
    release.send(()).expect("release the stream");
    let reports = fleet.wait_reports(1, &[&second, &relay]);
    let (segment, report) = &reports[0];
    assert_eq!(verdict(report), "pass", "{report:#}\n{}", second.log());
    assert!(
        second.log().contains("delivery 2"),
        "the second worker took over a redelivered segment:\n{}",
        second.log()
    );
    assert!(
        !first.log().contains("PASS"),
        "the first worker finished it:\n{}",
        first.log()
    );
    let offline = fleet.check(&fleet.export(segment).display().to_string());
    assert!(
        same_verdict(report, &offline),
        "worker {report:#}\ncheck {offline:#}"
    );
}

/// Answers hello requests with a hello that a key holder made: a nonce of its choosing.
fn forge_hellos(port: u16, nonce: [u8; 16]) -> TcpStream {
    let key = Key::from_hex(KEY).expect("the test key");
    let hello = ServerHello {
        key_id: key.id(),
        nonce,
        sampling: EVERY_CALL.config(),
        tensors: Vec::new(),
        mode: HelloMode::Sampling,
    }
    .encode(&key)
    .expect("encode a hello");
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to nats");
    s.write_all(b"CONNECT {\"verbose\":false}\r\nSUB mmaudit.hello 1\r\nPING\r\n")
        .unwrap();
    let stop = s.try_clone().expect("clone the socket");
    std::thread::spawn(move || {
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            // MSG <subject> <sid> <reply> <bytes>
            let parts: Vec<&str> = line.split_whitespace().collect();
            if parts.first() == Some(&"PING") {
                let _ = s.write_all(b"PONG\r\n");
            }
            if parts.first() != Some(&"MSG") || parts.len() != 5 {
                continue;
            }
            let n: usize = parts[4].parse().unwrap();
            let mut body = vec![0u8; n + 2];
            r.read_exact(&mut body).unwrap();
            let _ = write!(s, "PUB {} {}\r\n", parts[3], hello.len());
            let _ = s.write_all(&hello);
            let _ = s.write_all(b"\r\n");
        }
    });
    stop
}

#[test]
fn a_forged_hello_fails_and_a_workers_hello_passes() {
    let fleet = Fleet::new("fleet-forged");
    let (relay, sink) = fleet.relay();
    // Only the forger answers: the library accepts its hello (the forger holds the key).
    let forger = forge_hellos(fleet.port, [7; 16]);
    let out = program(&sink);
    assert_eq!(out.code, Some(0), "{}", out.transcript());
    wait_for(
        "the relay to store the segment",
        Duration::from_secs(30),
        || relay.log().contains("closed ("),
    );
    let worker = fleet.worker("worker", &[]);
    let reports = fleet.wait_reports(1, &[&worker, &relay]);
    let (_, forged) = &reports[0];
    assert_eq!(verdict(forged), "fail", "{forged:#}");
    let text = forged.to_string();
    assert!(text.contains("not issued by this fleet"), "{forged:#}");
    // The honest twin: the forger gone, the worker answers.
    let _ = forger.shutdown(std::net::Shutdown::Both);
    std::thread::sleep(Duration::from_millis(300));
    let out = program(&sink);
    assert_eq!(out.code, Some(0), "{}", out.transcript());
    let reports = fleet.wait_reports(2, &[&worker, &relay]);
    let verdicts: Vec<&str> = reports.iter().map(|(_, r)| verdict(r)).collect();
    assert_eq!(
        verdicts.iter().filter(|v| **v == "pass").count(),
        1,
        "{reports:#?}"
    );
}

#[test]
fn replayed_segments_and_garbage_fail_or_are_rejected_and_honest_ones_pass() {
    let fleet = Fleet::new("fleet-replay");
    let worker = fleet.worker("worker", &["--idle-timeout", "5"]);
    let (relay, sink) = fleet.relay();
    let out = program(&sink);
    assert_eq!(out.code, Some(0), "{}", out.transcript());
    let reports = fleet.wait_reports(1, &[&worker, &relay]);
    let (honest, report) = reports[0].clone();
    assert_eq!(verdict(&report), "pass", "{report:#}");
    // The same bytes as a new segment: its nonce was used.
    let bytes = std::fs::read(fleet.export(&honest)).expect("read the export");
    let replay = "1".repeat(32);
    for chunk in bytes.chunks(100_000) {
        fleet.publish_raw(&format!("mmaudit.seg.{replay}"), chunk);
    }
    fleet.publish_raw_with(
        &format!("mmaudit.seg.{replay}"),
        b"",
        Some("Mmaudit-End: closed"),
    );
    // Garbage as a segment and as work items.
    let garbage = "2".repeat(32);
    fleet.publish_raw(&format!("mmaudit.seg.{garbage}"), &[0x5a; 5000]);
    fleet.publish_raw("mmaudit.work", garbage.as_bytes());
    fleet.publish_raw("mmaudit.work", b"../../etc/passwd");
    fleet.publish_raw("mmaudit.work", replay.as_bytes());
    let reports = fleet.wait_reports(2, &[&worker, &relay]);
    let (_, replayed) = reports
        .iter()
        .find(|(s, _)| *s == replay)
        .unwrap_or_else(|| panic!("no report of the replay: {reports:?}"));
    assert_eq!(verdict(replayed), "fail", "{replayed:#}");
    assert!(
        replayed.to_string().contains("already used"),
        "{replayed:#}"
    );
    wait_for(
        "the garbage to be rejected",
        Duration::from_secs(90),
        || {
            worker
                .log()
                .contains(&format!("segment {garbage} rejected"))
        },
    );
    assert!(
        worker
            .log()
            .contains("dropping a work item that names no segment"),
        "{}",
        worker.log()
    );
    // The honest segment still passes, and nothing else was reported.
    let reports = fleet.reports();
    assert_eq!(reports.len(), 2, "{reports:?}");
    let after = fleet.check(&format!("{}/{honest}", fleet.url));
    assert_eq!(verdict(&after), "pass");
}

/// A reference prover's segment through the relay at `relay`: stream `id`, segment
/// `segment` from call `first`, `layers` layers of GEMMs; with `cut`, only the header
/// and first frame are sent and the socket is returned open.
fn prove(
    relay: &str,
    id: u64,
    (segment, first): (u32, u64),
    layers: u64,
    cut: bool,
) -> Option<(TcpStream, u64)> {
    prove_after(
        relay,
        id,
        (segment, first),
        layers,
        cut,
        (0, Duration::ZERO),
    )
}

/// [`prove`], sending `early` bytes at once and the rest `wait` after the hello arrived.
fn prove_after(
    relay: &str,
    id: u64,
    (segment, first): (u32, u64),
    layers: u64,
    cut: bool,
    (early, wait): (usize, Duration),
) -> Option<(TcpStream, u64)> {
    use mmaudit_protocol::call::{ComputeType, DType};
    use mmaudit_tests::refprover::{GemmSpec, RefProver};
    let key = Key::from_hex(KEY).expect("the test key");
    let addr = relay.parse().expect("the relay's address");
    let (mut socket, hello) =
        mmaudit_tests::session::connect(addr, &key, Duration::from_secs(30)).expect("a hello");
    let mut p = RefProver::new(&key, hello.sampling, id)
        .with_hello(&hello)
        .with_stream_id(id)
        .with_segment(segment, first);
    for _ in 0..layers {
        for (m, n, k) in [
            (768, 16, 256),
            (256, 16, 256),
            (688, 16, 256),
            (256, 16, 688),
        ] {
            p.gemm(&GemmSpec::new(
                m,
                n,
                k,
                DType::BF16,
                DType::BF16,
                ComputeType::F32,
            ));
        }
    }
    let mut c = p.finish(4);
    let early = early.min(c.header.len());
    socket
        .write_all(&c.header[..early])
        .expect("send early bytes");
    socket.flush().expect("send early bytes");
    c.header.drain(..early);
    std::thread::sleep(wait);
    if cut {
        socket
            .write_all(&[c.header.clone(), c.frames[0].clone()].concat())
            .expect("send the first frame");
        let mut reader = mmaudit_protocol::stream::StreamReader::new(&key);
        let sent: u64 = reader
            .push(&[c.header.clone(), c.frames[0].clone()].concat())
            .expect("the prover's own frame")
            .into_iter()
            .map(|e| match e {
                mmaudit_protocol::stream::Event::Frame { records, .. } => records
                    .iter()
                    .filter(|r| matches!(r, mmaudit_protocol::record::Record::Ledger(_)))
                    .count()
                    as u64,
                _ => 0,
            })
            .sum();
        return Some((socket, sent));
    }
    socket.write_all(&c.header).expect("send the header");
    for f in &c.frames {
        socket.write_all(f).expect("send a frame");
    }
    mmaudit_tests::session::close_and_wait(socket).expect("close");
    None
}

fn report_of(reports: &[(String, Value)], id: u64, segment: u32) -> &Value {
    reports
        .iter()
        .map(|(_, r)| r)
        .find(|r| {
            let h = &r["streams"][0]["header"];
            h["stream_id"] == format!("{id:016x}") && h["segment"] == segment
        })
        .unwrap_or_else(|| panic!("no report of segment {segment} of {id:x}: {reports:#?}"))
}

#[test]
fn segments_after_a_relay_restart_report_the_calls_no_worker_received() {
    let fleet = Fleet::new("fleet-relay-restart");
    let worker = fleet.worker("worker", &["--idle-timeout", "3"]);
    let (mut relay, addr) = fleet.relay();
    // Stream 0x71: segment 0 complete (20 calls). Stream 0x70: segment 0 sends its header
    // and first frame, then its relay dies.
    prove(&addr, 0x71, (0, 0), 5, false);
    let (socket, sent) = prove(&addr, 0x70, (0, 0), 5, true).expect("a cut segment");
    wait_for(
        "the first frame to be stored",
        Duration::from_secs(30),
        || relay.log().matches("segment ").count() >= 3,
    );
    std::thread::sleep(Duration::from_millis(300));
    relay.kill();
    drop(socket);
    // Segment 0 of 0x70 has no end marker: truncated after the idle timeout.
    let reports = fleet.wait_reports(2, &[&worker, &relay]);
    let cut = report_of(&reports, 0x70, 0);
    assert_eq!(verdict(cut), "fail", "{cut:#}");
    assert!(cut.to_string().contains("truncated"), "{cut:#}");
    assert_eq!(verdict(report_of(&reports, 0x71, 0)), "pass");
    // A new relay; each prover's next segment starts at call 20.
    let (relay, addr) = fleet.relay();
    prove(&addr, 0x71, (1, 20), 2, false);
    prove(&addr, 0x70, (1, 20), 2, false);
    // Stream 0x72 was never seen before its segment 1.
    prove(&addr, 0x72, (1, 7), 2, false);
    let reports = fleet.wait_reports(5, &[&worker, &relay]);
    // Absent: every call before 0x71's segment 1 was received.
    let r = report_of(&reports, 0x71, 1);
    assert_eq!(verdict(r), "pass", "{r:#}");
    assert_eq!(r["streams"][0]["unseen_calls"], 0, "{r:#}");
    // Present: the calls of 0x70 after its first frame, and all of 0x72's before 7.
    let r = report_of(&reports, 0x70, 1);
    assert_eq!(verdict(r), "fail", "{r:#}");
    assert_eq!(r["streams"][0]["unseen_calls"], 20 - sent, "{r:#}");
    let r = report_of(&reports, 0x72, 1);
    assert_eq!(verdict(r), "fail", "{r:#}");
    assert_eq!(r["streams"][0]["unseen_calls"], 7, "{r:#}");
}

#[test]
fn what_the_server_stored_survives_its_restart_and_the_fleet_reconnects() {
    let mut fleet = Fleet::new("fleet-server-restart");
    let worker = fleet.worker("worker", &[]);
    let (relay, sink) = fleet.relay();
    let out = program(&sink);
    assert_eq!(out.code, Some(0), "{}", out.transcript());
    let reports = fleet.wait_reports(1, &[&worker, &relay]);
    let (before, report) = reports[0].clone();
    assert_eq!(verdict(&report), "pass", "{report:#}");
    // The server stops and starts again on the same store.
    if let Some(mut s) = fleet.server.take() {
        let _ = Command::new("kill")
            .args(["-TERM", &s.child.id().to_string()])
            .status();
        let _ = s.child.wait();
    }
    fleet.start_server();
    // Acknowledged before: still there, with the same verdict.
    let stored = fleet.check(&format!("{}/{before}", fleet.url));
    assert!(same_verdict(&report, &stored), "{stored:#}");
    // Relay and worker reconnected by themselves: a new program passes.
    for _ in 0..5 {
        let out = program(&sink);
        assert_eq!(out.code, Some(0), "{}", out.transcript());
        let started = Instant::now();
        while fleet.reports().len() < 2 && started.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(100));
        }
        if fleet.reports().len() >= 2 {
            break;
        }
    }
    let reports = fleet.wait_reports(2, &[&worker, &relay]);
    for (seg, r) in &reports {
        assert_eq!(verdict(r), "pass", "{seg}: {r:#}");
    }
}

#[test]
fn a_nonce_held_past_the_handshake_timeout_fails_and_a_prompt_stream_passes() {
    let fleet = Fleet::new("fleet-stale");
    let worker = fleet.worker("worker", &["--handshake-timeout", "1"]);
    let (relay, addr) = fleet.relay();
    // Absent: the stream follows its hello at once.
    prove(&addr, 0x81, (0, 0), 2, false);
    // Present: the prover holds the hello for 2.5 s (computing, say) before sending;
    // or sends one byte at once and the rest of its header 2.5 s later.
    let late = Duration::from_millis(2500);
    prove_after(&addr, 0x82, (0, 0), 2, false, (0, late));
    prove_after(&addr, 0x83, (0, 0), 2, false, (1, late));
    let reports = fleet.wait_reports(3, &[&worker, &relay]);
    let prompt = report_of(&reports, 0x81, 0);
    assert_eq!(verdict(prompt), "pass", "{prompt:#}");
    let stale = report_of(&reports, 0x82, 0);
    assert_eq!(verdict(stale), "fail", "{stale:#}");
    assert!(stale.to_string().contains("after its nonce"), "{stale:#}");
    let trickled = report_of(&reports, 0x83, 0);
    assert_eq!(verdict(trickled), "fail", "{trickled:#}");
    assert!(
        trickled.to_string().contains("after its nonce"),
        "{trickled:#}"
    );
}

#[test]
fn chunks_fit_a_server_with_a_small_max_payload() {
    let fleet = Fleet::with_config("fleet-payload", "max_payload: 16384\n");
    let worker = fleet.worker("worker", &[]);
    let (relay, addr) = fleet.relay();
    prove(&addr, 0x91, (0, 0), 64, false);
    let reports = fleet.wait_reports(1, &[&worker, &relay]);
    let r = report_of(&reports, 0x91, 0);
    assert_eq!(verdict(r), "pass", "{r:#}");
    let bytes = std::fs::metadata(fleet.export(&reports[0].0))
        .expect("the export")
        .len();
    assert!(
        bytes > 3 * 16384,
        "a stream of {bytes} bytes crosses several chunks"
    );
}

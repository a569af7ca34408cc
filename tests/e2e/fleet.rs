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
    /// The fleet's streams, created by a worker that is then stopped (relays wait for
    /// them and never create them).
    fn create_streams(&self) {
        let mut w = self.worker("setup", &[]);
        wait_for("the setup worker", Duration::from_secs(20), || {
            w.log().contains("taking segments")
        });
        w.kill();
    }

    fn relay(&self) -> (Proc, String) {
        self.relay_with(&self.url, &[])
    }

    /// A relay connecting to `url` (a login of its own), with `extra` arguments.
    fn relay_with(&self, url: &str, extra: &[&str]) -> (Proc, String) {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut args = ["relay", "--nats", url, "--listen", &listen]
            .map(String::from)
            .to_vec();
        args.extend(extra.iter().map(|a| a.to_string()));
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
    fleet.create_streams();
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
    let key = Key::from_hex(KEY).expect("the test key");
    let addr = relay.parse().expect("the relay's address");
    let (mut socket, hello) =
        mmaudit_tests::session::connect(addr, &key, Duration::from_secs(30)).expect("a hello");
    let mut c = key_holder_capture(&hello, id, (segment, first), layers);
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
    // Present: the prover holds the hello for 2.5 s (computing, say) before sending:
    // its header is judged stale. Or it sends one byte at once and the rest of its
    // header 2.5 s later: the worker, which took the segment at its first byte, rejects
    // it for want of a header within the timeout, as `serve` closes such a connection.
    let late = Duration::from_millis(2500);
    prove_after(&addr, 0x82, (0, 0), 2, false, (0, late));
    prove_after(&addr, 0x83, (0, 0), 2, false, (1, late));
    let reports = fleet.wait_reports(2, &[&worker, &relay]);
    let prompt = report_of(&reports, 0x81, 0);
    assert_eq!(verdict(prompt), "pass", "{prompt:#}");
    let stale = report_of(&reports, 0x82, 0);
    assert_eq!(verdict(stale), "fail", "{stale:#}");
    assert!(stale.to_string().contains("after its nonce"), "{stale:#}");
    wait_for(
        "the trickled header's rejection",
        Duration::from_secs(30),
        || {
            worker
                .log()
                .contains("rejected: no complete stream header within 1.0 s")
        },
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(fleet.reports().len(), 2, "{}", worker.log());
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
    // The report on record fits too (cut to its counts when it would not).
    let list = std::process::Command::new(&tools().verify)
        .args(["export", "--nats", &fleet.url, "--list"])
        .output()
        .expect("run export --list");
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(
        text.contains(&format!("{}  ", reports[0].0)) && text.contains("PASS"),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------
// What a party that can publish on the broker (a relay's user, or anyone when the server
// has no authorization) tries against the fleet's records and workers.
// ---------------------------------------------------------------------------------

/// The authorization docs/FLEET.md gives ("Permissions"), with the test's passwords.
const DOC_AUTH: &str = r#"
authorization {
  users = [
    { user: worker, password: wpass }
    { user: relay-host1, password: rpass, permissions: {
        publish: ["mmaudit.seg.*", "mmaudit.work", "mmaudit.hello",
                  "$JS.API.STREAM.INFO.MMAUDIT_SEGMENTS", "$JS.API.STREAM.INFO.MMAUDIT_WORK"]
        subscribe: ["_INBOX_host1.>"] } }
  ]
}
"#;

/// A raw NATS client (the core protocol), optionally logged in as a user.
struct RawNats {
    s: TcpStream,
    r: BufReader<TcpStream>,
    inbox: String,
}

impl RawNats {
    fn connect(port: u16, user: Option<(&str, &str)>) -> RawNats {
        RawNats::connect_inbox(port, user, "_INBOX")
    }

    /// A client whose replies come under `inbox` (`_INBOX` or a relay's own prefix).
    fn connect_inbox(port: u16, user: Option<(&str, &str)>, inbox: &str) -> RawNats {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect to nats");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut line = String::new();
        r.read_line(&mut line).expect("INFO");
        let auth = match user {
            Some((u, p)) => format!(",\"user\":\"{u}\",\"pass\":\"{p}\""),
            None => String::new(),
        };
        let inbox = format!("{inbox}.raw{}", free_port());
        let mut n = RawNats { s, r, inbox };
        write!(
            n.s,
            "CONNECT {{\"verbose\":false,\"headers\":true{auth}}}\r\nSUB {} 1\r\n",
            n.inbox
        )
        .unwrap();
        n.ping();
        n
    }

    /// True when the server refuses a subscription to `subject`.
    fn subscribe_refused(&mut self, subject: &str) -> bool {
        write!(self.s, "SUB {subject} 2\r\nPING\r\n").unwrap();
        let mut line = String::new();
        let mut refused = false;
        loop {
            line.clear();
            self.r.read_line(&mut line).expect("PONG");
            refused |= line.starts_with("-ERR");
            if line.starts_with("PONG") {
                return refused;
            }
        }
    }

    /// Waits for the server's PONG; panics on an error line.
    fn ping(&mut self) {
        self.s.write_all(b"PING\r\n").unwrap();
        let mut line = String::new();
        loop {
            line.clear();
            self.r.read_line(&mut line).expect("PONG");
            assert!(!line.starts_with("-ERR"), "nats: {line}");
            if line.starts_with("PONG") {
                return;
            }
        }
    }

    /// Publishes `payload` on `subject` with an optional reply subject; Err(the error
    /// line) when the server refuses it.
    fn publish(
        &mut self,
        subject: &str,
        reply: Option<&str>,
        payload: &[u8],
    ) -> Result<(), String> {
        let reply = reply.map(|r| format!(" {r}")).unwrap_or_default();
        write!(self.s, "PUB {subject}{reply} {}\r\n", payload.len()).unwrap();
        self.s.write_all(payload).unwrap();
        self.s.write_all(b"\r\nPING\r\n").unwrap();
        let mut line = String::new();
        let mut err = None;
        loop {
            line.clear();
            self.r.read_line(&mut line).expect("PONG");
            if line.starts_with("-ERR") {
                err = Some(line.clone());
            }
            if line.starts_with("PONG") {
                return err.map_or(Ok(()), Err);
            }
        }
    }
}

/// A reference prover's capture for `hello` (a worker's, or one a key holder made):
/// stream `id`, segment `segment` from call `first`, `layers` layers of four GEMMs.
fn key_holder_capture(
    hello: &ServerHello,
    id: u64,
    (segment, first): (u32, u64),
    layers: u64,
) -> mmaudit_tests::refprover::Capture {
    use mmaudit_protocol::call::{ComputeType, DType};
    use mmaudit_tests::refprover::{GemmSpec, RefProver};
    let key = Key::from_hex(KEY).expect("the test key");
    let mut p = RefProver::new(&key, hello.sampling, id)
        .with_hello(hello)
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
    p.finish(4)
}

/// A hello a key holder makes with a nonce of its choosing.
fn own_hello(nonce: [u8; 16]) -> ServerHello {
    let key = Key::from_hex(KEY).expect("the test key");
    ServerHello {
        key_id: key.id(),
        nonce,
        sampling: EVERY_CALL.config(),
        tensors: Vec::new(),
        mode: HelloMode::Sampling,
    }
}

/// Connects to the relay (taking the worker's hello) and sends a stream made for
/// `hello` instead: what a key holder behind the relay can do.
fn send_for_hello(relay: &str, hello: &ServerHello, id: u64, layers: u64) {
    let key = Key::from_hex(KEY).expect("the test key");
    let (mut socket, _workers) =
        mmaudit_tests::session::connect(relay.parse().unwrap(), &key, Duration::from_secs(30))
            .expect("a hello");
    let c = key_holder_capture(hello, id, (0, 0), layers);
    socket.write_all(&c.header).unwrap();
    for f in &c.frames {
        socket.write_all(f).unwrap();
    }
    mmaudit_tests::session::close_and_wait(socket).expect("close");
}

/// With the permissions docs/FLEET.md gives, workers and a relay log in (their
/// passwords in the address, never in a report or a log) and an honest stream passes;
/// the relay's user cannot write the records that judge a stream (a nonce's, a
/// segment's calls received, a report) directly nor through the JetStream API (a stream
/// of its own that republishes into them), so a stream for a nonce no worker issued
/// still fails.
#[test]
fn the_documented_permissions_run_the_fleet_and_keep_relays_off_the_records() {
    let mut fleet = Fleet::with_config("auth", DOC_AUTH);
    // Absent: anonymous clients are refused.
    let refused = std::process::Command::new(&tools().verify)
        .args(["export", "--nats", &fleet.url, "--list"])
        .output()
        .expect("run export");
    let text = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{text}");
    assert!(text.contains("cannot connect"), "{text}");
    let relay_url = format!("nats://relay-host1:rpass@127.0.0.1:{}", fleet.port);
    fleet.url = format!("nats://worker:wpass@127.0.0.1:{}", fleet.port);
    let worker = fleet.worker("worker", &[]);
    let (relay, addr) = fleet.relay_with(&relay_url, &["--inbox-prefix", "_INBOX_host1"]);
    prove(&addr, 0xa0, (0, 0), 2, false);
    let reports = fleet.wait_reports(1, &[&worker, &relay]);
    let r = report_of(&reports, 0xa0, 0);
    assert_eq!(verdict(r), "pass", "{r:#}");
    for text in [r.to_string(), worker.log(), relay.log()] {
        assert!(!text.contains("wpass") && !text.contains("rpass"), "{text}");
    }
    // Present: the relay's user writing records.
    let mut evil =
        RawNats::connect_inbox(fleet.port, Some(("relay-host1", "rpass")), "_INBOX_host1");
    let forged = [8u8; 16];
    let nonce = format!("mmaudit.nonce.{}", "08".repeat(16));
    for subject in [
        nonce.as_str(),
        "mmaudit.seen.00000000000000a0.1",
        "mmaudit.report.0123456789abcdef0123456789abcdef",
    ] {
        assert!(evil.publish(subject, None, b"issued").is_err(), "{subject}");
    }
    let config = format!(
        r#"{{"name":"FORGE","subjects":["mmaudit.hello"],"storage":"memory","republish":{{"src":"mmaudit.hello","dest":"{nonce}"}}}}"#
    );
    let inbox = evil.inbox.clone();
    for api in [
        "$JS.API.STREAM.CREATE.FORGE",
        "$JS.API.STREAM.DELETE.MMAUDIT_NONCES",
        "$JS.API.STREAM.PURGE.MMAUDIT_SEEN",
    ] {
        assert!(
            evil.publish(api, Some(&inbox), config.as_bytes()).is_err(),
            "{api}"
        );
    }
    // Nor read the hellos and acknowledgements of other relays.
    assert!(evil.subscribe_refused("_INBOX.>"));
    send_for_hello(&addr, &own_hello(forged), 0xa2, 2);
    let reports = fleet.wait_reports(2, &[&worker, &relay]);
    let r = report_of(&reports, 0xa2, 0);
    assert_eq!(verdict(r), "fail", "{r:#}");
    assert!(r.to_string().contains("not issued"), "{r:#}");
}

/// A hello request's reply subject is the requester's choice: a worker answers only on
/// an inbox, never onto a record of calls received or of a nonce. (Absent such a
/// request, and present: the honest stream's next segment passes either way.)
#[test]
fn a_hello_request_cannot_make_a_worker_overwrite_a_record() {
    let fleet = Fleet::new("fleet-deputy");
    let worker = fleet.worker("worker", &["--idle-timeout", "3"]);
    let (relay, addr) = fleet.relay();
    prove(&addr, 0x71, (0, 0), 5, false);
    let reports = fleet.wait_reports(1, &[&worker, &relay]);
    assert_eq!(verdict(report_of(&reports, 0x71, 0)), "pass");
    // A publisher on mmaudit.hello only (what a relay may do): reply subject = a record.
    let mut evil = RawNats::connect(fleet.port, None);
    evil.publish(
        "mmaudit.hello",
        Some("mmaudit.seen.0000000000000071.0"),
        b"",
    )
    .expect("publish");
    std::thread::sleep(Duration::from_millis(500));
    prove(&addr, 0x71, (1, 20), 2, false);
    let reports = fleet.wait_reports(2, &[&worker, &relay]);
    let r = report_of(&reports, 0x71, 1);
    assert_eq!(verdict(r), "pass", "{r:#}");
    assert_eq!(r["streams"][0]["unseen_calls"], 0, "{r:#}");
}

/// A segment is judged once: finished as truncated (nothing for --idle-timeout), it keeps
/// that verdict when the rest of its stream is stored later, long after its hello, and
/// its work item is published again (otherwise re-reading it from its first byte would
/// find its nonce already claimed by itself and its freshness no longer judged).
#[test]
fn a_truncated_segment_keeps_its_verdict_when_its_work_item_comes_again() {
    let fleet = Fleet::new("fleet-requeue");
    let worker = fleet.worker(
        "worker",
        &["--idle-timeout", "2", "--handshake-timeout", "1"],
    );
    let (relay, addr) = fleet.relay();
    let key = Key::from_hex(KEY).expect("the test key");
    let (mut socket, hello) =
        mmaudit_tests::session::connect(addr.parse().unwrap(), &key, Duration::from_secs(30))
            .expect("a hello");
    let c = key_holder_capture(&hello, 0xc1, (0, 0), 3);
    socket.write_all(&c.header).unwrap();
    socket.flush().unwrap();
    let reports = fleet.wait_reports(1, &[&worker, &relay]);
    let (segment, first) = reports[0].clone();
    assert_eq!(verdict(&first), "fail", "{first:#}");
    assert!(first.to_string().contains("truncated"), "{first:#}");
    // Long after its hello (> --handshake-timeout), the rest of the stream.
    std::thread::sleep(Duration::from_secs(2));
    for f in &c.frames {
        socket.write_all(f).unwrap();
    }
    mmaudit_tests::session::close_and_wait(socket).expect("close");
    wait_for("the end marker", Duration::from_secs(30), || {
        relay.log().contains("closed (")
    });
    fleet.publish_raw("mmaudit.work", segment.as_bytes());
    wait_for("the second verification", Duration::from_secs(60), || {
        worker
            .log()
            .matches(&format!("segment {segment}: "))
            .count()
            >= 2
    });
    std::thread::sleep(Duration::from_secs(1));
    let again = fleet
        .reports()
        .into_iter()
        .find(|(s, _)| *s == segment)
        .unwrap()
        .1;
    let stored = fleet.check(&format!("{}/{segment}", fleet.url));
    assert_eq!(
        verdict(&again),
        "fail",
        "the report of {segment} turned to {}\n{}\ncheck nats:// says {}",
        verdict(&again),
        worker.log(),
        verdict(&stored)
    );
}

/// A publisher without the key cannot hold a worker's segment slot by storing a stream
/// header byte by byte: the worker rejects a segment whose header is not complete within
/// --handshake-timeout of taking it (as `serve` closes such a connection), and an honest
/// segment queued behind it is verified.
#[test]
fn a_trickled_header_does_not_hold_a_worker_past_the_handshake_timeout() {
    let fleet = Fleet::new("fleet-trickle");
    let worker = fleet.worker(
        "worker",
        &[
            "--max-segments",
            "1",
            "--idle-timeout",
            "3",
            "--handshake-timeout",
            "1",
        ],
    );
    let (relay, addr) = fleet.relay();
    let header = key_holder_capture(&own_hello([9; 16]), 0xd0, (0, 0), 1).header;
    let held = "6".repeat(32);
    fleet.publish_raw("mmaudit.work", held.as_bytes());
    wait_for(
        "the worker to take the held segment",
        Duration::from_secs(20),
        || worker.log().contains(&format!("segment {held}: verifying")),
    );
    let (stop, stopped) = mpsc::channel::<()>();
    let (port, subject) = (fleet.port, format!("mmaudit.seg.{held}"));
    let trickle = std::thread::spawn(move || {
        for b in header.iter().take(40) {
            if stopped.try_recv().is_ok() {
                return;
            }
            let mut n = RawNats::connect(port, None);
            let _ = n.publish(&subject, None, &[*b]);
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    let start = Instant::now();
    prove(&addr, 0xd1, (0, 0), 2, false);
    let mut honest = None;
    while start.elapsed() < Duration::from_secs(20) {
        if let Some((_, r)) = fleet.reports().into_iter().next() {
            honest = Some(r);
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = stop.send(());
    let _ = trickle.join();
    assert!(
        honest.is_some(),
        "no report of an honest segment within 20 s: a header trickled byte by byte holds the worker\n{}\n{}",
        worker.log(),
        relay.log()
    );
}

/// Segment 1 of an honest stream judged while its segment 0 is still being read (both
/// queued behind busy slots, then taken at once) waits for segment 0's final count of
/// calls received instead of naming its calls "seen by no verifier".
#[test]
fn segment_one_passes_when_segment_zero_is_verified_at_the_same_time() {
    let fleet = Fleet::new("fleet-seen-race");
    let worker = fleet.worker("worker", &["--max-segments", "2", "--idle-timeout", "4"]);
    let (relay, addr) = fleet.relay();
    // Two work items of segments nobody writes keep both slots for the idle timeout.
    for d in ["3", "4"] {
        fleet.publish_raw("mmaudit.work", d.repeat(32).as_bytes());
    }
    wait_for("both slots to be busy", Duration::from_secs(20), || {
        worker.log().matches(": verifying").count() >= 2
    });
    // An honest stream whose connection broke cleanly after segment 0: segment 1 starts
    // at the first call segment 0 did not send.
    prove(&addr, 0xe1, (0, 0), 60, false);
    prove(&addr, 0xe1, (1, 240), 2, false);
    let reports = fleet.wait_reports(2, &[&worker, &relay]);
    assert_eq!(verdict(report_of(&reports, 0xe1, 0)), "pass");
    let r = report_of(&reports, 0xe1, 1);
    assert_eq!(r["streams"][0]["unseen_calls"], 0, "{r:#}");
    assert_eq!(verdict(r), "pass", "{r:#}");
}

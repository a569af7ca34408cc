//! Running C test programs on the simulated GPU under `LD_PRELOAD=libmmaudit.so`, and
//! judging what they leave behind with `mmaudit-verify`: the helpers the end-to-end
//! tests of the library (`e2e/interposer.rs`, `e2e/policy.rs`) share.
//!
//! [`tools`] builds `libmmaudit.so` and `mmaudit-verify` (release) once per test
//! process; [`run`] runs a program with exactly the `SIMGPU_*` / `MMAUDIT_*` variables
//! given ([`audit_env`] preloads the library with a sink and [`Rates`]); [`check_args`]
//! runs `mmaudit-verify check --json` on captures; [`Serve`] waits for the reports of a
//! live verifier running in the test process. These helpers panic on any setup failure:
//! they are for tests only.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mmaudit_protocol::config::{parse_rate, SamplingConfig};
use mmaudit_protocol::keys::Key;
use mmaudit_protocol::stream::{Event, StreamHeader, StreamReader};
use serde_json::Value;

use crate::simgpu::{libraries, repo_root};

/// The audit key of every test (any 64 hex characters).
pub const KEY: &str = "6d6d61756469742d65326500112233445566778899aabbccddeeff0123456789";

/// No program here runs for more than a few seconds; this only stops a hang.
pub const TIMEOUT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------
// Building and locating things

/// What [`tools`] built.
pub struct Tools {
    /// `target/release/libmmaudit.so`
    pub preload: PathBuf,
    /// `target/release/mmaudit-verify`
    pub verify: PathBuf,
    /// a file holding [`KEY`], mode 600
    pub key_file: PathBuf,
}

/// Cargo's target directory (`CARGO_TARGET_DIR`, else `target/` of the repository).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
}

/// Builds libmmaudit.so and mmaudit-verify (release) once per process.
pub fn tools() -> &'static Tools {
    static TOOLS: OnceLock<Tools> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .current_dir(repo_root())
            .args([
                "build",
                "--release",
                "-p",
                "mmaudit-interposer",
                "-p",
                "mmaudit-verify",
            ])
            .output()
            .expect("run cargo build");
        assert!(
            out.status.success(),
            "cargo build --release -p mmaudit-interposer -p mmaudit-verify failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let release = target_dir().join("release");
        let tools = Tools {
            preload: release.join("libmmaudit.so"),
            verify: release.join("mmaudit-verify"),
            key_file: target_dir().join("tmp/e2e/key/audit.key"),
        };
        for p in [&tools.preload, &tools.verify] {
            assert!(p.exists(), "{} was not built", p.display());
        }
        // Written aside and renamed into place: test binaries running at the same time
        // never see it half-written.
        let dir = tools.key_file.parent().expect("a directory");
        std::fs::create_dir_all(dir).expect("create the key directory");
        let tmp = dir.join(format!("audit.key.{}", std::process::id()));
        std::fs::write(&tmp, format!("{KEY}\n")).expect("write the key file");
        // The verifier warns about a key file that others can read.
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .expect("chmod 600 the key file");
        std::fs::rename(&tmp, &tools.key_file).expect("move the key file into place");
        tools
    })
}

/// Where [`scratch`] puts the directory `name`, without touching it.
pub fn scratch_path(name: &str) -> PathBuf {
    target_dir().join("tmp").join("e2e").join(name)
}

/// A fresh, empty directory for one test's files, `target/tmp/e2e/NAME` (names are
/// shared by every test binary: prefix them).
pub fn scratch(name: &str) -> PathBuf {
    let dir = scratch_path(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}

/// What a program printed and how it ended.
#[derive(Debug, Clone)]
pub struct Output {
    /// exit status (None: killed by a signal)
    pub code: Option<i32>,
    /// standard output
    pub stdout: String,
    /// standard error (the library's `mmaudit:` lines among it)
    pub stderr: String,
}

impl Output {
    pub fn transcript(&self) -> String {
        format!(
            "exit {:?}\n--- stdout (last lines)\n{}\n--- stderr\n{}",
            self.code,
            last_lines(&self.stdout, 30),
            last_lines(&self.stderr, 60)
        )
    }

    pub fn field(&self, name: &str) -> &str {
        let prefix = format!("{name} ");
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no '{name}' line\n{}", self.transcript()))
    }

    /// The `calls N` line.
    pub fn calls(&self) -> u64 {
        self.field("calls").trim().parse().expect("calls N")
    }

    /// The `output-hash H` line.
    pub fn hash(&self) -> String {
        self.field("output-hash").trim().to_string()
    }

    /// The `--trace` lines, by call index.
    pub fn trace(&self) -> Vec<TraceLine> {
        self.stdout
            .lines()
            .filter(|l| l.starts_with("call "))
            .enumerate()
            .map(|(i, l)| {
                let t = TraceLine::parse(l);
                assert_eq!(t.index, i as u64, "trace out of order: {l}");
                t
            })
            .collect()
    }
}

pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// One `call I ENTRY m=M n=N k=K batch=B [hash=H] [what]` line.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceLine {
    pub index: u64,
    pub entry: String,
    pub m: u64,
    pub n: u64,
    pub k: u64,
    pub batch: u64,
    pub hash: Option<String>,
    /// what the call is, in llama_workload (`o_proj`, ...)
    pub label: Option<String>,
}

impl TraceLine {
    pub fn parse(line: &str) -> TraceLine {
        let words: Vec<&str> = line.split_whitespace().collect();
        let value = |key: &str| -> Option<&str> {
            words
                .iter()
                .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        };
        // Sizes as printed; a negative one (a call the library rejects) as 0.
        let num = |key: &str| -> u64 {
            value(key)
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or_else(|| panic!("no {key}= in '{line}'"))
                .max(0) as u64
        };
        TraceLine {
            index: words[1].parse().expect("call index"),
            entry: words[2].to_string(),
            m: num("m"),
            n: num("n"),
            k: num("k"),
            batch: num("batch"),
            hash: value("hash").map(str::to_string),
            label: words[3..]
                .iter()
                .rfind(|w| !w.contains('='))
                .map(|w| w.to_string()),
        }
    }

    pub fn flops(&self) -> f64 {
        2.0 * (self.m * self.n * self.k * self.batch) as f64
    }
}

/// Runs a program on the simulated GPU with exactly the `SIMGPU_*`/`MMAUDIT_*`
/// variables given, killing it after [`TIMEOUT`].
pub fn run(exe: &Path, args: &[&str], env: &[(&str, String)]) -> Output {
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .env("LD_LIBRARY_PATH", &libraries().lib_dir)
        .env_remove("LD_PRELOAD")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, _) in std::env::vars() {
        if key.starts_with("SIMGPU_") || key.starts_with("MMAUDIT_") {
            cmd.env_remove(key);
        }
    }
    for (key, value) in env {
        cmd.env(key, value);
    }
    let child = cmd.spawn().expect("start the test program");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(TIMEOUT) {
        Ok(out) => out.expect("wait for the test program"),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!(
                "{} {args:?} did not finish within {TIMEOUT:?} (env {env:?})",
                exe.display()
            );
        }
    };
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A run without the library (memoised: programs are deterministic).
pub fn reference(exe: &Path, args: &[&str], fault: Option<&str>) -> Output {
    static CACHE: OnceLock<Mutex<HashMap<String, Output>>> = OnceLock::new();
    let key = format!("{}|{args:?}|{fault:?}", exe.display());
    if let Some(out) = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key)
    {
        return out.clone();
    }
    let env: Vec<(&str, String)> = fault
        .map(|f| vec![("SIMGPU_FAULT", f.to_string())])
        .unwrap_or_default();
    let out = run(exe, args, &env);
    assert_eq!(
        out.code,
        Some(0),
        "the program fails without the library\n{}",
        out.transcript()
    );
    CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, out.clone());
    out
}

/// Sampling rates for a run (None: the library's default).
#[derive(Clone, Copy, Default)]
pub struct Rates {
    pub call: Option<&'static str>,
    pub row: Option<&'static str>,
    pub col: Option<&'static str>,
    pub batch: Option<&'static str>,
}

/// Every call sampled, every entry checked.
pub const FULL: Rates = Rates {
    call: Some("1"),
    row: Some("1"),
    col: Some("1"),
    batch: Some("1"),
};

/// Every call sampled, the default rows, columns and batch entries.
pub const EVERY_CALL: Rates = Rates {
    call: Some("1"),
    row: None,
    col: None,
    batch: None,
};

/// The environment that preloads the library with a sink and rates.
pub fn audit_env(sink: &str, rates: Rates, fault: Option<&str>) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("LD_PRELOAD", tools().preload.display().to_string()),
        ("MMAUDIT_KEY", KEY.to_string()),
        ("MMAUDIT_SINK", sink.to_string()),
    ];
    for (name, value) in [
        ("MMAUDIT_CALL_RATE", rates.call),
        ("MMAUDIT_ROW_RATE", rates.row),
        ("MMAUDIT_COL_RATE", rates.col),
        ("MMAUDIT_BATCH_RATE", rates.batch),
    ] {
        if let Some(v) = value {
            env.push((name, v.to_string()));
        }
    }
    if let Some(f) = fault {
        env.push(("SIMGPU_FAULT", f.to_string()));
    }
    env
}

/// The verifier's verdict on some captures.
#[derive(Debug)]
pub struct Check {
    /// exit status of `mmaudit-verify check`
    pub code: Option<i32>,
    /// its output, for assertion messages
    pub text: String,
    /// the `--json` report (Null if none was written)
    pub json: Value,
}

impl Check {
    pub fn n(&self, key: &str) -> u64 {
        self.json[key]
            .as_u64()
            .unwrap_or_else(|| panic!("no number '{key}' in the report\n{}", self.text))
    }

    pub fn verdict(&self) -> &str {
        self.json["verdict"].as_str().unwrap_or("?")
    }

    /// Every failure of every stream.
    pub fn failures(&self) -> Vec<&Value> {
        self.json["streams"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["failures"].as_array().into_iter().flatten())
            .collect()
    }

    pub fn failures_of(&self, kind: &str) -> Vec<&Value> {
        self.failures()
            .into_iter()
            .filter(|f| f["kind"] == kind)
            .collect()
    }
}

pub fn check(captures: &[PathBuf], dir: &Path) -> Check {
    check_args(captures, dir, &[])
}

/// The policy flag for runs whose first calls precede the verifier's hello.
pub const NO_SESSION_ALLOWED: &[&str] = &["--max-no-session", "100%"];

/// Runs `mmaudit-verify check` with extra arguments (policy flags).
pub fn check_args(captures: &[PathBuf], dir: &Path, extra: &[&str]) -> Check {
    let t = tools();
    let json_path = dir.join("report.json");
    let _ = std::fs::remove_file(&json_path);
    let out = Command::new(&t.verify)
        .arg("check")
        .args(captures)
        .arg("--key-file")
        .arg(&t.key_file)
        .arg("--json")
        .arg(&json_path)
        .args(["--max-failures", "100000"])
        .args(extra)
        .output()
        .expect("run mmaudit-verify check");
    let text = format!(
        "mmaudit-verify check exit {:?}\n{}{}",
        out.status.code(),
        last_lines(&String::from_utf8_lossy(&out.stdout), 40),
        String::from_utf8_lossy(&out.stderr)
    );
    let json = std::fs::read_to_string(&json_path)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null);
    Check {
        code: out.status.code(),
        text,
        json,
    }
}

/// The capture files (`*.mma`) in `dir`, sorted.
pub fn captures_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list the scratch directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "mma"))
        .collect();
    files.sort();
    files
}

/// The authenticated header of a capture, if its first bytes hold one.
pub fn header_of(capture: &Path) -> Option<StreamHeader> {
    let key = Key::from_hex(KEY).expect("the test key");
    let bytes = std::fs::read(capture).ok()?;
    let mut reader = StreamReader::new(&key);
    let events = reader.push(&bytes).unwrap_or_default();
    events.into_iter().find_map(|e| match e {
        Event::Header(h) => Some(h),
        _ => None,
    })
}

impl Rates {
    /// The [`SamplingConfig`] these rates describe (what `MMAUDIT_*_RATE` with them
    /// would make the library use with a file sink).
    pub fn config(&self) -> SamplingConfig {
        let rate =
            |v: Option<&str>, default: u32| v.map_or(default, |v| parse_rate(v).expect("a rate"));
        let d = SamplingConfig::default();
        SamplingConfig {
            call_ppm: rate(self.call, d.call_ppm),
            row_ppm: rate(self.row, d.row_ppm),
            col_ppm: rate(self.col, d.col_ppm),
            batch_ppm: rate(self.batch, d.batch_ppm),
            ..d
        }
    }
}

/// A live verifier (`mmaudit-verify serve`) running on a thread of this process, which
/// writes captures into `dir/captures` and one JSON report per stream into
/// `dir/reports`. Built by the test that started it (`Server::bind`, `Server::run` on a
/// thread), so that this crate needs no verifier; `S` is what the thread returns (the
/// server's summary). Dropping it stops the verifier.
pub struct Serve<S> {
    /// the verifier's address
    pub addr: SocketAddr,
    /// where its captures and reports go
    pub dir: PathBuf,
    stop: Box<dyn Fn() + Send>,
    thread: Option<JoinHandle<S>>,
}

/// Creates `dir/captures` and `dir/reports` for a [`Serve`] (before the verifier that
/// writes them is bound); returns them.
pub fn serve_dirs(dir: &Path) -> (PathBuf, PathBuf) {
    let (captures, reports) = (dir.join("captures"), dir.join("reports"));
    for d in [&captures, &reports] {
        std::fs::create_dir_all(d).expect("create a directory");
    }
    (captures, reports)
}

impl<S> Serve<S> {
    /// A verifier listening on `addr`, running on `thread` until `stop` is called.
    pub fn new(
        addr: SocketAddr,
        dir: &Path,
        stop: impl Fn() + Send + 'static,
        thread: JoinHandle<S>,
    ) -> Self {
        Serve {
            addr,
            dir: dir.to_path_buf(),
            stop: Box::new(stop),
            thread: Some(thread),
        }
    }

    /// Waits for `n` stream reports (at most 60 s), then stops the verifier; returns
    /// the reports (each the JSON of `check --json` for one stream) and what the
    /// verifier's thread returned.
    pub fn finish(mut self, n: usize) -> (Vec<Value>, S) {
        let start = Instant::now();
        let reports = loop {
            let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.join("reports"))
                .expect("list the reports")
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            files.sort();
            if files.len() >= n || start.elapsed() > Duration::from_secs(60) {
                break files
                    .iter()
                    .filter_map(|f| std::fs::read_to_string(f).ok())
                    .filter_map(|t| serde_json::from_str(&t).ok())
                    .collect::<Vec<Value>>();
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        (self.stop)();
        let summary = self
            .thread
            .take()
            .expect("running")
            .join()
            .expect("the verifier thread");
        (reports, summary)
    }
}

impl<S> Drop for Serve<S> {
    fn drop(&mut self) {
        (self.stop)();
    }
}

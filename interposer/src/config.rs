//! Configuration from the environment (`MMAUDIT_*`), documented in README.md
//! ("Configuration (libmmaudit.so)").
//!
//! Parsing is a pure function of a variable lookup and a file reader, so every rule is
//! unit-tested. Three outcomes: audit with a [`Config`]; off because no key was given
//! (the library forwards everything and says so once); or invalid (one clear stderr
//! line, auditing off, the program unaffected). Nothing here panics.

use std::path::PathBuf;
use std::time::Duration;

use mmaudit_protocol::config::{parse_rate, SamplingConfig};
use mmaudit_protocol::keys::Key;

use crate::log::Level;

/// Where the stream goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SinkSpec {
    /// `file:PATH`, with `%p` already replaced by the process id.
    File(PathBuf),
    /// `tcp://HOST:PORT`
    Tcp {
        /// host name or address (IPv6 without its brackets)
        host: String,
        /// port
        port: u16,
    },
}

impl std::fmt::Display for SinkSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SinkSpec::File(p) => write!(f, "file:{}", p.display()),
            SinkSpec::Tcp { host, port } if host.contains(':') => {
                write!(f, "tcp://[{host}]:{port}")
            }
            SinkSpec::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
        }
    }
}

/// Everything the library needs to audit.
#[derive(Clone, Debug)]
pub struct Config {
    /// The shared audit key.
    pub key: Key,
    /// Where the stream goes.
    pub sink: SinkSpec,
    /// Sampling rates and bounds of `MMAUDIT_CALL_RATE` etc.: used (and written into the
    /// stream header) only with a file sink. With a TCP sink each live verifier's hello
    /// sets the rates of its session instead.
    pub sampling: SamplingConfig,
    /// stderr verbosity.
    pub log: Level,
    /// Bytes of mapped pinned memory per CUDA context for in-flight samples.
    pub ring_bytes: usize,
    /// The same when the context's ring is made in a commit-mode session, which gathers
    /// every call whole: `ring_bytes` when `MMAUDIT_RING_MB` is set, else
    /// [`DEFAULT_COMMIT_RING_MB`].
    pub commit_ring_bytes: usize,
    /// Bytes of records held in memory while the sink cannot take them.
    pub buffer_bytes: usize,
    /// Commit mode (a verifier's hello asks for it): bytes of committed calls kept for
    /// their openings (`MMAUDIT_RETAIN_MB`).
    pub retain_bytes: usize,
    /// Most samples in flight (gathered, not yet completed) at once.
    pub queue_len: usize,
    /// `MMAUDIT_GRAPH_DEPTH`: replays of one executable graph that may be queued with
    /// samples before later replays' samples become gaps.
    pub graph_depth: u32,
    /// How long the exit flush may take.
    pub exit_timeout: Duration,
    /// Longest time a record waits before it is framed and written.
    pub flush_interval: Duration,
    /// Send operand references to tensors the verifier's hello offers, instead of the
    /// rows (`MMAUDIT_REFERENCES`, on by default; TCP sink only).
    pub references: bool,
    /// Test knob `MMAUDIT_TEST_PANIC=before:N|after:N`: make the hook of call N panic
    /// before or after forwarding it, to exercise the fall-back path.
    pub test_panic: Option<TestPanic>,
}

/// Where `MMAUDIT_TEST_PANIC` makes a hook panic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TestPanic {
    /// After the forward (else before it).
    pub after: bool,
    /// The call index.
    pub index: u64,
}

/// The outcome of reading the environment.
#[derive(Clone, Debug)]
pub enum Setup {
    /// Audit with this configuration.
    Audit(Config),
    /// No key: forward every call untouched.
    NoKey {
        /// stderr verbosity
        log: Level,
    },
    /// A variable has an invalid value: auditing is off.
    Invalid {
        /// One line naming the variable and the problem.
        message: String,
        /// stderr verbosity (Warn when MMAUDIT_LOG itself is invalid)
        log: Level,
    },
}

/// Default `MMAUDIT_SINK`.
pub const DEFAULT_SINK: &str = "file:mmaudit-%p.mma";
/// Default `MMAUDIT_RING_MB`.
pub const DEFAULT_RING_MB: u64 = 64;
/// Default `MMAUDIT_RING_MB` for a ring made in a commit-mode session (every call is
/// gathered whole: a 2048-token prefill through a 14336-wide bf16 MLP is about 72 MiB).
pub const DEFAULT_COMMIT_RING_MB: u64 = 256;
/// Default `MMAUDIT_BUFFER_MB`.
pub const DEFAULT_BUFFER_MB: u64 = 256;
/// Default `MMAUDIT_RETAIN_MB`.
pub const DEFAULT_RETAIN_MB: u64 = 1024;
/// Default `MMAUDIT_GRAPH_DEPTH`.
pub const DEFAULT_GRAPH_DEPTH: u64 = 16;
/// Default `MMAUDIT_QUEUE_LEN`.
pub const DEFAULT_QUEUE_LEN: u64 = 4096;
/// Default `MMAUDIT_EXIT_TIMEOUT_MS`.
pub const DEFAULT_EXIT_TIMEOUT_MS: u64 = 5000;
/// Default `MMAUDIT_FLUSH_MS`.
pub const DEFAULT_FLUSH_MS: u64 = 100;

/// Reads the configuration. `var` looks a variable up; a variable set to an empty (or
/// blank) value is an error naming it, never a silent default. `read_file` reads the
/// key file; `pid` expands `%p`.
pub fn from_env(
    var: impl Fn(&str) -> Option<String>,
    read_file: impl Fn(&str) -> std::io::Result<String>,
    pid: u32,
) -> Setup {
    let empty = std::cell::RefCell::new(None::<String>);
    let var = |name: &str| {
        let v = var(name);
        if v.as_deref().is_some_and(|v| v.trim().is_empty()) {
            empty.borrow_mut().get_or_insert_with(|| name.to_string());
            return None;
        }
        v
    };
    let log = match var("MMAUDIT_LOG") {
        None => Level::Warn,
        Some(v) => match Level::parse(&v) {
            Some(l) => l,
            None => {
                return Setup::Invalid {
                    message: format!(
                        "MMAUDIT_LOG='{v}' is not one of off, error, warn, info, debug: auditing is off"
                    ),
                    log: Level::Warn,
                }
            }
        },
    };
    let parsed = parse(&var, &read_file, pid, log);
    if let Some(name) = empty.into_inner() {
        return Setup::Invalid {
            message: format!(
                "{name} is set to an empty value (unset it for the default): auditing is off"
            ),
            log,
        };
    }
    match parsed {
        Ok(Some(c)) => Setup::Audit(c),
        Ok(None) => Setup::NoKey { log },
        Err(message) => Setup::Invalid {
            message: format!("{message}: auditing is off"),
            log,
        },
    }
}

fn parse(
    var: &impl Fn(&str) -> Option<String>,
    read_file: &impl Fn(&str) -> std::io::Result<String>,
    pid: u32,
    log: Level,
) -> Result<Option<Config>, String> {
    let key = match (var("MMAUDIT_KEY_FILE"), var("MMAUDIT_KEY")) {
        (Some(path), _) => {
            let text = read_file(&path)
                .map_err(|e| format!("MMAUDIT_KEY_FILE={path}: cannot read it ({e})"))?;
            Key::from_hex(&text).map_err(|e| format!("MMAUDIT_KEY_FILE={path}: {e}"))?
        }
        (None, Some(hex)) => Key::from_hex(&hex).map_err(|e| format!("MMAUDIT_KEY: {e}"))?,
        (None, None) => return Ok(None),
    };
    let sink_text = var("MMAUDIT_SINK").unwrap_or_else(|| DEFAULT_SINK.to_string());
    let sink =
        parse_sink(&sink_text, pid).map_err(|e| format!("MMAUDIT_SINK='{sink_text}': {e}"))?;

    let mut sampling = SamplingConfig::default();
    for (name, field) in [
        ("MMAUDIT_CALL_RATE", &mut sampling.call_ppm),
        ("MMAUDIT_ROW_RATE", &mut sampling.row_ppm),
        ("MMAUDIT_COL_RATE", &mut sampling.col_ppm),
        ("MMAUDIT_BATCH_RATE", &mut sampling.batch_ppm),
    ] {
        if let Some(v) = var(name) {
            *field = parse_rate(&v).map_err(|e| format!("{name}: {e}"))?;
        }
    }
    for (name, field) in [
        ("MMAUDIT_MAX_ROWS", &mut sampling.max_rows),
        ("MMAUDIT_MAX_COLS", &mut sampling.max_cols),
        ("MMAUDIT_MAX_BATCHES", &mut sampling.max_batches),
    ] {
        if let Some(v) = var(name) {
            *field = v.trim().parse::<u32>().map_err(|_| {
                format!("{name}='{v}' is not a whole number from 0 (no maximum) to 4294967295")
            })?;
        }
    }
    sampling.validate().map_err(|e| e.to_string())?;

    let number = |name: &str, default: u64, min: u64, max: u64| -> Result<u64, String> {
        match var(name) {
            None => Ok(default),
            Some(v) => match v.trim().parse::<u64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(format!(
                    "{name}='{v}' is not a whole number from {min} to {max}"
                )),
            },
        }
    };
    let mib = 1024 * 1024;
    let ring_mb = number("MMAUDIT_RING_MB", DEFAULT_RING_MB, 1, 16384)?;
    let ring_set = var("MMAUDIT_RING_MB").is_some();
    Ok(Some(Config {
        key,
        sink,
        sampling,
        log,
        ring_bytes: (ring_mb * mib) as usize,
        commit_ring_bytes: (if ring_set {
            ring_mb
        } else {
            DEFAULT_COMMIT_RING_MB
        } * mib) as usize,
        buffer_bytes: (number("MMAUDIT_BUFFER_MB", DEFAULT_BUFFER_MB, 1, 1 << 20)? * mib) as usize,
        retain_bytes: (number("MMAUDIT_RETAIN_MB", DEFAULT_RETAIN_MB, 1, 1 << 20)? * mib) as usize,
        queue_len: number("MMAUDIT_QUEUE_LEN", DEFAULT_QUEUE_LEN, 1, 1 << 20)? as usize,
        graph_depth: number("MMAUDIT_GRAPH_DEPTH", DEFAULT_GRAPH_DEPTH, 1, 4096)? as u32,
        exit_timeout: Duration::from_millis(number(
            "MMAUDIT_EXIT_TIMEOUT_MS",
            DEFAULT_EXIT_TIMEOUT_MS,
            0,
            600_000,
        )?),
        flush_interval: Duration::from_millis(number(
            "MMAUDIT_FLUSH_MS",
            DEFAULT_FLUSH_MS,
            1,
            60_000,
        )?),
        references: match var("MMAUDIT_REFERENCES").as_deref().map(str::trim) {
            None | Some("1") => true,
            Some("0") => false,
            Some(v) => return Err(format!("MMAUDIT_REFERENCES='{v}' is not 0 or 1")),
        },
        test_panic: match var("MMAUDIT_TEST_PANIC") {
            None => None,
            Some(v) => {
                Some(parse_test_panic(&v).ok_or_else(|| {
                    format!("MMAUDIT_TEST_PANIC='{v}' is not before:N or after:N")
                })?)
            }
        },
    }))
}

fn parse_test_panic(text: &str) -> Option<TestPanic> {
    let (when, n) = text.trim().split_once(':')?;
    let after = match when {
        "before" => false,
        "after" => true,
        _ => return None,
    };
    Some(TestPanic {
        after,
        index: n.trim().parse().ok()?,
    })
}

/// Parses `file:PATH` (`%p` = `pid`, `%%` = `%`) or `tcp://HOST:PORT`.
pub fn parse_sink(text: &str, pid: u32) -> Result<SinkSpec, String> {
    let t = text.trim();
    if let Some(path) = t.strip_prefix("file:") {
        if path.is_empty() {
            return Err("file: needs a path, e.g. file:mmaudit-%p.mma".into());
        }
        return Ok(SinkSpec::File(PathBuf::from(expand_pid(path, pid))));
    }
    if let Some(rest) = t.strip_prefix("tcp://") {
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (h, p) = v6
                .split_once("]:")
                .ok_or("an IPv6 address is written tcp://[ADDR]:PORT")?;
            (h, p)
        } else {
            rest.rsplit_once(':')
                .ok_or("the port is missing: tcp://HOST:PORT")?
        };
        if host.is_empty() {
            return Err("the host is missing: tcp://HOST:PORT".into());
        }
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("'{port}' is not a port number (1 to 65535)"))?;
        return Ok(SinkSpec::Tcp {
            host: host.to_string(),
            port,
        });
    }
    Err("a sink is file:PATH or tcp://HOST:PORT".into())
}

/// Replaces `%p` by `pid` and `%%` by `%`; any other `%` stays as it is.
pub fn expand_pid(template: &str, pid: u32) -> String {
    let mut out = String::with_capacity(template.len() + 8);
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '%' {
            match chars.peek() {
                Some('p') => {
                    chars.next();
                    out.push_str(&pid.to_string());
                    continue;
                }
                Some('%') => {
                    chars.next();
                    out.push('%');
                    continue;
                }
                _ => {}
            }
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn setup(vars: &[(&str, &str)]) -> Setup {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        from_env(
            |k| map.get(k).cloned(),
            |p| {
                if p == "/keys/good" {
                    Ok(format!("{KEY}\n"))
                } else if p == "/keys/short" {
                    Ok("abcd".into())
                } else {
                    Err(std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "No such file",
                    ))
                }
            },
            4242,
        )
    }

    fn audit(vars: &[(&str, &str)]) -> Config {
        match setup(vars) {
            Setup::Audit(c) => c,
            other => panic!("expected a config, got {other:?}"),
        }
    }

    fn invalid(vars: &[(&str, &str)]) -> String {
        match setup(vars) {
            Setup::Invalid { message, .. } => message,
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn no_key_means_off() {
        assert!(matches!(setup(&[]), Setup::NoKey { log: Level::Warn }));
        // A blank key is not "no key": it says so, at the requested log level.
        assert!(matches!(
            setup(&[("MMAUDIT_KEY", "  "), ("MMAUDIT_LOG", "info")]),
            Setup::Invalid {
                log: Level::Info,
                ..
            }
        ));
    }

    #[test]
    fn defaults() {
        let c = audit(&[("MMAUDIT_KEY", KEY)]);
        assert_eq!(c.key.to_hex(), KEY);
        assert_eq!(c.sink, SinkSpec::File("mmaudit-4242.mma".into()));
        assert_eq!(c.sampling, SamplingConfig::default());
        assert_eq!(c.log, Level::Warn);
        assert_eq!((c.ring_bytes, c.commit_ring_bytes), (64 << 20, 256 << 20));
        assert_eq!(c.buffer_bytes, 256 << 20);
        assert_eq!(c.retain_bytes, 1024 << 20);
        assert_eq!((c.queue_len, c.graph_depth), (4096, 16));
        assert_eq!(c.exit_timeout, Duration::from_millis(5000));
        assert_eq!(c.flush_interval, Duration::from_millis(100));
        assert_eq!(c.test_panic, None);
        assert!(c.references);
    }

    #[test]
    fn every_variable_is_read() {
        let c = audit(&[
            ("MMAUDIT_KEY_FILE", "/keys/good"),
            ("MMAUDIT_KEY", "ignored when a key file is given"),
            ("MMAUDIT_SINK", "tcp://auditor.example:7150"),
            ("MMAUDIT_CALL_RATE", "1"),
            ("MMAUDIT_ROW_RATE", "5%"),
            ("MMAUDIT_COL_RATE", "250ppm"),
            ("MMAUDIT_BATCH_RATE", "0.5"),
            ("MMAUDIT_MAX_ROWS", "64"),
            ("MMAUDIT_MAX_COLS", "8"),
            ("MMAUDIT_MAX_BATCHES", "2"),
            ("MMAUDIT_LOG", "debug"),
            ("MMAUDIT_RING_MB", "8"),
            ("MMAUDIT_BUFFER_MB", "16"),
            ("MMAUDIT_RETAIN_MB", "32"),
            ("MMAUDIT_QUEUE_LEN", "10"),
            ("MMAUDIT_GRAPH_DEPTH", "64"),
            ("MMAUDIT_EXIT_TIMEOUT_MS", "0"),
            ("MMAUDIT_FLUSH_MS", "5"),
            ("MMAUDIT_TEST_PANIC", "after:3"),
            ("MMAUDIT_REFERENCES", "0"),
        ]);
        assert!(!c.references);
        assert_eq!(c.key.to_hex(), KEY);
        assert_eq!(
            c.sink,
            SinkSpec::Tcp {
                host: "auditor.example".into(),
                port: 7150
            }
        );
        let s = c.sampling;
        assert_eq!(
            (s.call_ppm, s.row_ppm, s.col_ppm, s.batch_ppm),
            (1_000_000, 50_000, 250, 500_000)
        );
        assert_eq!((s.max_rows, s.max_cols, s.max_batches), (64, 8, 2));
        assert_eq!(c.log, Level::Debug);
        assert_eq!(
            (c.ring_bytes, c.buffer_bytes, c.queue_len, c.graph_depth),
            (8 << 20, 16 << 20, 10, 64)
        );
        assert_eq!(c.retain_bytes, 32 << 20);
        // a ring size that is set holds in commit mode too
        assert_eq!(c.commit_ring_bytes, 8 << 20);
        assert_eq!(c.exit_timeout, Duration::ZERO);
        assert_eq!(c.flush_interval, Duration::from_millis(5));
        assert_eq!(
            c.test_panic,
            Some(TestPanic {
                after: true,
                index: 3
            })
        );
    }

    #[test]
    fn invalid_values_name_the_variable() {
        let k = ("MMAUDIT_KEY", KEY);
        assert!(invalid(&[("MMAUDIT_KEY", "abc")]).starts_with("MMAUDIT_KEY: a key is 64 hex"));
        assert!(invalid(&[("MMAUDIT_KEY_FILE", "/keys/missing")])
            .contains("MMAUDIT_KEY_FILE=/keys/missing: cannot read it"));
        assert!(invalid(&[("MMAUDIT_KEY_FILE", "/keys/short")]).contains("64 hex"));
        assert!(invalid(&[k, ("MMAUDIT_SINK", "udp://x:1")]).contains("file:PATH or tcp://"));
        assert!(invalid(&[k, ("MMAUDIT_SINK", "tcp://host")]).contains("port is missing"));
        assert!(invalid(&[k, ("MMAUDIT_SINK", "tcp://host:0")]).contains("not a port"));
        assert!(invalid(&[k, ("MMAUDIT_SINK", "tcp://:80")]).contains("host is missing"));
        assert!(invalid(&[k, ("MMAUDIT_SINK", "file:")]).contains("needs a path"));
        assert!(invalid(&[k, ("MMAUDIT_CALL_RATE", "1.5")]).starts_with("MMAUDIT_CALL_RATE: "));
        assert!(invalid(&[k, ("MMAUDIT_ROW_RATE", "lots")]).starts_with("MMAUDIT_ROW_RATE: "));
        assert!(invalid(&[k, ("MMAUDIT_MAX_ROWS", "-1")]).starts_with("MMAUDIT_MAX_ROWS="));
        assert!(invalid(&[k, ("MMAUDIT_RING_MB", "0")]).contains("from 1 to 16384"));
        assert!(invalid(&[k, ("MMAUDIT_QUEUE_LEN", "x")]).starts_with("MMAUDIT_QUEUE_LEN="));
        assert!(invalid(&[k, ("MMAUDIT_GRAPH_DEPTH", "0")]).starts_with("MMAUDIT_GRAPH_DEPTH="));
        assert!(invalid(&[k, ("MMAUDIT_EXIT_TIMEOUT_MS", "700000")]).contains("0 to 600000"));
        assert!(invalid(&[k, ("MMAUDIT_FLUSH_MS", "0")]).starts_with("MMAUDIT_FLUSH_MS="));
        assert!(
            invalid(&[k, ("MMAUDIT_TEST_PANIC", "during:1")]).starts_with("MMAUDIT_TEST_PANIC=")
        );
        assert!(invalid(&[k, ("MMAUDIT_REFERENCES", "yes")]).starts_with("MMAUDIT_REFERENCES="));
        for name in [
            "MMAUDIT_SINK",
            "MMAUDIT_CALL_RATE",
            "MMAUDIT_LOG",
            "MMAUDIT_BUFFER_MB",
            "MMAUDIT_RETAIN_MB",
        ] {
            let m = invalid(&[k, (name, " ")]);
            assert!(
                m.starts_with(&format!("{name} is set to an empty value")),
                "{m}"
            );
        }
        assert!(invalid(&[("MMAUDIT_KEY", "")]).starts_with("MMAUDIT_KEY is set to an empty"));
        let m = invalid(&[k, ("MMAUDIT_LOG", "loud")]);
        assert!(m.starts_with("MMAUDIT_LOG='loud'"), "{m}");
        for m in [invalid(&[k, ("MMAUDIT_RING_MB", "0")]), m] {
            assert!(m.ends_with("auditing is off"), "{m}");
        }
    }

    #[test]
    fn sinks_parse() {
        assert_eq!(
            parse_sink("file:/tmp/run-%p-%%p.mma", 7),
            Ok(SinkSpec::File("/tmp/run-7-%p.mma".into()))
        );
        assert_eq!(
            parse_sink("tcp://[::1]:7150", 1),
            Ok(SinkSpec::Tcp {
                host: "::1".into(),
                port: 7150
            })
        );
        assert_eq!(
            parse_sink("tcp://10.0.0.1:9/", 1).map(|s| s.to_string()),
            Ok("tcp://10.0.0.1:9".into())
        );
        assert_eq!(
            parse_sink("tcp://[::1]:1", 1).map(|s| s.to_string()),
            Ok("tcp://[::1]:1".into())
        );
        assert!(parse_sink("tcp://[::1]", 1).is_err());
        assert_eq!(expand_pid("a%b%", 3), "a%b%");
    }
}

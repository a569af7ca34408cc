//! What the server shows on stderr: log lines, and a view of the open streams, one line
//! each — redrawn in place (at most twice a second) when stderr is a terminal, printed
//! as plain lines every few seconds otherwise.
//!
//! Final reports go to stdout, never through here. Nothing here may block the event loop
//! for long: a line is a few hundred bytes.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How the open streams are shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ViewMode {
    /// live on a terminal, plain lines otherwise
    Auto,
    /// redrawn in place (ANSI escapes)
    Live,
    /// a plain line per open stream every 10 seconds
    Log,
    /// log lines only
    Off,
}

/// One open connection, as the view shows it.
pub struct Row {
    /// peer address
    pub peer: String,
    /// "hello", or the stream id and segment
    pub stream: String,
    /// ledger calls
    pub calls: u64,
    /// sampled calls
    pub sampled: u64,
    /// verified calls
    pub verified: u64,
    /// failures so far
    pub failures: u64,
    /// gap calls
    pub gaps: u64,
    /// bytes received
    pub bytes: u64,
    /// bytes received but not yet verified (in the kernel, or a partial frame)
    pub lag: u64,
}

impl Row {
    fn line(&self) -> String {
        format!(
            "{:<22} {:<24} calls {:>9}  sampled {:>7}  verified {:>7}  failures {:>4}  gaps {:>5}  {:>9.1} MB  lag {:>6.1} MB",
            self.peer,
            self.stream,
            self.calls,
            self.sampled,
            self.verified,
            self.failures,
            self.gaps,
            self.bytes as f64 / 1e6,
            self.lag as f64 / 1e6,
        )
    }
}

/// Most stream lines shown at once.
const MAX_LINES: usize = 40;

/// The stderr view.
pub struct View {
    live: bool,
    off: bool,
    quiet: bool,
    drawn: usize,
    last: Option<Instant>,
    interval: Duration,
}

impl View {
    /// The view for `mode`; with `quiet`, log lines are not shown either.
    pub fn new(mode: ViewMode, quiet: bool) -> Self {
        let live = match mode {
            ViewMode::Auto => std::io::stderr().is_terminal(),
            ViewMode::Live => true,
            ViewMode::Log | ViewMode::Off => false,
        };
        View {
            live,
            off: mode == ViewMode::Off || quiet,
            quiet,
            drawn: 0,
            last: None,
            interval: if live {
                Duration::from_millis(500)
            } else {
                Duration::from_secs(10)
            },
        }
    }

    /// When the next refresh is due (None: never).
    pub fn next_due(&self) -> Option<Instant> {
        if self.off {
            return None;
        }
        Some(self.last.map_or_else(Instant::now, |l| l + self.interval))
    }

    /// Whether a refresh is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        !self.off && self.last.is_none_or(|l| now >= l + self.interval)
    }

    /// One log line (the live block is cleared first and redrawn at the next refresh).
    pub fn log(&mut self, line: &str) {
        if self.quiet {
            return;
        }
        let mut err = std::io::stderr().lock();
        self.clear_block(&mut err);
        let _ = writeln!(err, "mmaudit-verify serve: {line}");
        if self.live {
            self.last = None;
        }
    }

    fn clear_block(&mut self, err: &mut impl Write) {
        if self.live && self.drawn > 0 {
            let _ = write!(err, "\x1b[{}A\r\x1b[J", self.drawn);
            self.drawn = 0;
        }
    }

    /// Redraws (live) or prints (log) the rows, if a refresh is due.
    pub fn refresh(&mut self, rows: &[Row], summary: &str, now: Instant) {
        if !self.due(now) {
            return;
        }
        self.last = Some(now);
        if !self.live && rows.is_empty() {
            return;
        }
        let mut text = String::new();
        text.push_str(summary);
        text.push('\n');
        for r in rows.iter().take(MAX_LINES) {
            text.push_str("  ");
            text.push_str(&r.line());
            text.push('\n');
        }
        if rows.len() > MAX_LINES {
            text.push_str(&format!("  ... and {} more\n", rows.len() - MAX_LINES));
        }
        let mut err = std::io::stderr().lock();
        self.clear_block(&mut err);
        if self.live {
            let _ = err.write_all(text.as_bytes());
            self.drawn = text.lines().count();
        } else {
            for line in text.lines() {
                let _ = writeln!(err, "mmaudit-verify serve: {line}");
            }
        }
        let _ = err.flush();
    }

    /// Removes the live block (before exit).
    pub fn clear(&mut self) {
        let mut err = std::io::stderr().lock();
        self.clear_block(&mut err);
    }
}

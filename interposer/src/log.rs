//! Messages on standard error, prefixed `mmaudit:`, filtered by `MMAUDIT_LOG`.
//!
//! Writing never panics (a closed stderr is ignored) and never allocates a lock that a
//! hook could be holding. The host program's own output is never touched.

use std::collections::HashSet;
use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;

/// Verbosity of the library's stderr messages (`MMAUDIT_LOG`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    /// Nothing at all.
    Off = 0,
    /// Only errors (auditing turned off by an error).
    Error = 1,
    /// Errors and warnings (the default): configuration problems, auditing disabled,
    /// data that could not be delivered.
    Warn = 2,
    /// Also one line at start (sink, rates) and one at exit (totals).
    Info = 3,
    /// Also per-event detail (connections, unsupported calls).
    Debug = 4,
}

impl Level {
    /// Parses `off`, `error`, `warn`, `info`, `debug` (case-insensitive).
    pub fn parse(text: &str) -> Option<Level> {
        match text.trim().to_ascii_lowercase().as_str() {
            "off" | "none" | "0" => Some(Level::Off),
            "error" => Some(Level::Error),
            "warn" | "warning" => Some(Level::Warn),
            "info" => Some(Level::Info),
            "debug" => Some(Level::Debug),
            _ => None,
        }
    }
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Warn as u8);

/// Sets the level in force.
pub fn set_level(level: Level) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

/// Whether messages of `level` are shown.
pub fn enabled(level: Level) -> bool {
    level as u8 <= LEVEL.load(Ordering::Relaxed) && level != Level::Off
}

/// Writes one line at `level`.
pub fn emit(level: Level, message: &str) {
    if enabled(level) {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "mmaudit: {message}");
    }
}

/// [`emit`] at most once per `key` for the life of the process.
pub fn once(level: Level, key: &str, message: &str) {
    static SEEN: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    if !enabled(level) {
        return;
    }
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if seen
        .get_or_insert_with(HashSet::new)
        .insert(key.to_string())
    {
        drop(seen);
        emit(level, message);
    }
}

/// Writes a fixed message with `write(2)` only: async-signal-safe, for a fork child.
pub fn raw(level: Level, message: &'static str) {
    if enabled(level) {
        // SAFETY: `message` is a valid buffer of `message.len()` bytes for the duration
        // of the call; write(2) on fd 2 touches nothing else.
        unsafe {
            libc::write(2, message.as_ptr().cast(), message.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse() {
        assert_eq!(Level::parse("WARN"), Some(Level::Warn));
        assert_eq!(Level::parse(" debug "), Some(Level::Debug));
        assert_eq!(Level::parse("off"), Some(Level::Off));
        assert_eq!(Level::parse("loud"), None);
        assert!(Level::Error < Level::Info);
    }
}

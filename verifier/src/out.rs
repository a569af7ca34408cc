//! Report output that a closed pipe cannot break. `println!` panics when standard
//! output is a pipe whose reader has gone (`check ... | head`): the command died with
//! exit 101 and a panic message. Here a write to a closed pipe ends the output quietly
//! (nothing more is written to that stream) and the command finishes with its verdict.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);
static STDERR_CLOSED: AtomicBool = AtomicBool::new(false);

/// Where report text goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum To {
    /// standard output
    Stdout,
    /// standard error (`--json -` keeps standard output for the JSON)
    Stderr,
}

/// Writes `text` to `to`; once its reader has gone, writes nothing more there.
pub fn write(to: To, text: &str) {
    let closed = match to {
        To::Stdout => &STDOUT_CLOSED,
        To::Stderr => &STDERR_CLOSED,
    };
    if closed.load(Ordering::Relaxed) {
        return;
    }
    let result = match to {
        To::Stdout => {
            let mut o = std::io::stdout().lock();
            o.write_all(text.as_bytes()).and_then(|()| o.flush())
        }
        To::Stderr => std::io::stderr().lock().write_all(text.as_bytes()),
    };
    if result.is_err() {
        // A closed pipe, a full disk or a revoked terminal: the output is lost either
        // way, and the verdict is still the exit status.
        closed.store(true, Ordering::Relaxed);
    }
}

/// [`write()`] to standard output.
pub fn stdout(text: &str) {
    write(To::Stdout, text);
}

//! Whether any stream could be capturing a CUDA graph now, so that a GEMM hook asks the
//! driver (`cuStreamIsCapturing`) only when the answer could be yes.
//!
//! A stream captures only between a `BeginCapture` and its `EndCapture`; a stream that
//! joins a capture through an event waits inside such a window too. The library hooks
//! `cudaStreamBeginCapture`, `cuStreamBeginCapture_v2` and both `EndCapture`s, and
//! keeps the set of streams whose capture began and has not ended (the begin is noted
//! before it is forwarded, the end after, so no window is missed). While the set is
//! empty no stream captures, and the hooks skip the query.
//!
//! What this trusts: that every capture begins through a hooked entry point. One that
//! does not (`cudaStreamBeginCaptureToGraph`, the `_ptsz` or v1 driver forms, a
//! statically linked CUDA runtime) would go unseen; every sampled call therefore asks
//! the driver regardless ([`check_sampled`]), and the first time the driver says
//! "capturing" while the set is empty, the library stops trusting the set for the rest
//! of the process (it queries on every call again) and warns. Unsampled calls made in
//! such a capture before that are recorded as direct calls.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::driver::{Driver, Handle};
use crate::graph::PER_THREAD_STREAM;
use crate::log::{self, Level};

static OPEN: Mutex<Option<HashSet<(Handle, u64)>>> = Mutex::new(None);
static OPEN_COUNT: AtomicUsize = AtomicUsize::new(0);
static DISTRUSTED: AtomicBool = AtomicBool::new(false);

/// A capture's key: the stream, and for the per-thread default stream (each thread's
/// own) the thread.
fn key(stream: Handle) -> (Handle, u64) {
    if stream == PER_THREAD_STREAM {
        // SAFETY: gettid has no preconditions.
        (stream, unsafe { libc::gettid() } as u64)
    } else {
        (stream, 0)
    }
}

fn with_open<R>(f: impl FnOnce(&mut HashSet<(Handle, u64)>) -> R) -> R {
    let mut open = OPEN.lock().unwrap_or_else(|e| e.into_inner());
    let set = open.get_or_insert_with(HashSet::new);
    let r = f(set);
    OPEN_COUNT.store(set.len(), Ordering::Release);
    r
}

/// A capture is about to begin on `stream` (before it is forwarded).
pub fn begin(stream: Handle) {
    with_open(|s| s.insert(key(stream)));
}

/// The capture on `stream` ended, or its begin failed.
pub fn end(stream: Handle) {
    with_open(|s| s.remove(&key(stream)));
}

/// False only when no stream can be capturing now.
pub fn possible() -> bool {
    OPEN_COUNT.load(Ordering::Acquire) > 0 || DISTRUSTED.load(Ordering::Relaxed)
}

/// Whether `stream` captures: asks the driver only when a capture is possible.
pub fn is_capturing(drv: &Driver, stream: Handle) -> bool {
    possible() && drv.is_capturing(stream)
}

/// For a sampled call that [`is_capturing`] found not capturing without asking the
/// driver: asks it now. True (and the set distrusted from now on) when the stream does
/// capture after all: a capture began through a path the library does not follow.
pub fn check_sampled(drv: &Driver, stream: Handle) -> bool {
    if possible() || !drv.is_capturing(stream) {
        return false;
    }
    DISTRUSTED.store(true, Ordering::Relaxed);
    log::once(
        Level::Warn,
        "capture began unseen",
        "a stream captures a CUDA graph whose capture began through an entry point the library does not hook: calls made in it before now were recorded as direct calls; the capture status is asked of the driver on every call from now on",
    );
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_capture_is_possible_exactly_while_one_is_open() {
        assert!(!possible());
        begin(0x1000);
        begin(0x1000);
        assert!(possible());
        begin(0x2000);
        end(0x1000);
        assert!(possible(), "0x2000 still captures");
        end(0x2000);
        assert!(!possible());
        // Per-thread default streams of two threads are two captures.
        begin(PER_THREAD_STREAM);
        std::thread::spawn(|| {
            begin(PER_THREAD_STREAM);
            end(PER_THREAD_STREAM);
        })
        .join()
        .unwrap();
        assert!(possible(), "this thread's per-thread stream still captures");
        end(PER_THREAD_STREAM);
        assert!(!possible());
    }
}

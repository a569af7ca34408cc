//! The verifier library behind `mmaudit-verify`: the audit of a stream (`audit`), the
//! arithmetic that judges one entry (`recompute`), reports (`report`, drawn as HTML by
//! `html`), the commands `check` (and `report`), `keygen` (`keyfile`), `plan` and
//! `serve` (the live verifier), and the weight registry that tells which held tensors a
//! workload used (`weights`).
#![warn(missing_docs)]
// serde_json's json! macro recurses once per key: a stream report has many.
#![recursion_limit = "256"]

pub mod audit;
pub mod bench;
pub mod cheat;
pub mod check;
pub mod fleet;
pub mod html;
pub mod keyfile;
pub mod out;
pub mod plan;
pub mod policy;
pub mod pool;
pub mod recompute;
pub mod report;
pub mod serve;
pub mod weights;

/// Keeps the buffers of large records in the heap. Checking a capture allocates and
/// frees buffers of hundreds of KiB per record (a sample's rows and columns, decoded
/// frames); glibc serves every allocation above 128 KiB with its own mmap and returns
/// it with munmap, so each record paid page faults on fresh memory (12% of `check`'s
/// time on a decode-shaped capture). With glibc's mmap threshold at its maximum (32
/// MiB) and the heap trimmed only above 64 MiB free, they reuse the same pages. Call
/// once, at the start of a process that verifies; elsewhere it does nothing.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called before any thread
    // of this program allocates concurrently.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}

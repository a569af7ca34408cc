//! `libmmaudit.so`: an `LD_PRELOAD` library that audits every GEMM an unmodified program
//! sends to cuBLAS / cuBLASLt.
//!
//! Each exported hook (`cublasGemmEx`, `cublasLtMatmul`, ..., and `dlsym`) forwards to
//! the real function of the library the caller meant, and on the way describes the call
//! in the protocol's canonical form, writes it to the ledger and, for the calls the
//! keyed schedule selects, gathers the sampled rows, columns and entries on the GPU into
//! mapped pinned memory, on the call's own stream, without synchronising. A background
//! thread turns all of it into a MAC-chained stream for `mmaudit-verify`.
//!
//! Layers (all of the project's unsafe code lives in this crate):
//!
//! - [`sys`]: raw C types, constants and function-pointer types. Nothing is linked
//!   against a CUDA library; every function is resolved at run time.
//! - [`result`]: the one status -> `Result` choke point for the driver and for cuBLAS.
//! - [`real`] and [`driver`]: safe-ish access to the real cuBLAS functions and to the
//!   ~20 CUDA driver functions. The driver table is our own small dlsym table, not
//!   cudarc's `driver::sys`: cudarc's generated loader (`culib()`) calls
//!   `panic_no_lib_found` when libcuda cannot be loaded, and an interposer inside a host
//!   process must never panic; here a missing libcuda only turns samples into gaps.
//! - [`model`]: pure, unit-tested normalisation of every entry point's arguments to a
//!   [`mmaudit_protocol::call::GemmCall`], and the gather jobs of a sampled call.
//! - [`ring`], [`gpu`]: the pinned-memory ring allocator, module load per context,
//!   event pool, kernel launches.
//! - [`stream`]: the background thread, batching, the stream writer and the sinks
//!   (file, TCP via mio).
//! - [`config`], [`state`], [`log`]: environment parsing, the lifecycle state machine
//!   (uninitialised -> running -> disabled), re-entrancy guard, fork and exit handling.
//! - [`session`]: the call index counter and the verifier session in force (whose
//!   nonce and sampling configuration the schedule uses: a live verifier's hello sets
//!   both; `MMAUDIT_CALL_RATE` etc. apply only to a file sink), behind one lock.
//! - [`hooks`]: the exported symbols.
//!
//! What this library must never do: change a result, crash or block the host program,
//! synchronise on the application's thread, or create a CUDA context. Every hook body
//! runs under `catch_unwind`; any internal failure falls back to the plain forward and
//! disables auditing with a reason written into the stream.
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::todo)
)]

pub mod capture;
pub mod config;
pub mod driver;
pub mod gpu;
pub mod graph;
pub mod handoff;
pub mod held;
pub mod hooks;
pub mod log;
pub mod model;
pub mod real;
pub mod result;
pub mod ring;
pub mod session;
pub mod stack;
pub mod state;
pub mod stream;
pub mod sys;

/// Name and version written into every stream header.
pub const PRODUCER: &str = concat!("libmmaudit ", env!("CARGO_PKG_VERSION"));

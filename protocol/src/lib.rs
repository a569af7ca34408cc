//! The mmaudit protocol: the contract between the prover (`libmmaudit.so`) and the
//! verifier (`mmaudit-verify`).
//!
//! - [`call`]: the canonical description of one GEMM call.
//! - [`config`] and [`schedule`]: which calls and which entries are checked.
//! - [`keys`]: the shared key and its derived subkeys.
//! - [`codec`]: the byte-level reader and writer every decoder is built on.
//! - [`num`]: exact decoding of element encodings, and the roundings of each type.
//! - [`record`]: the records of a stream (ledger, sample, gap, notice, end).
//! - [`stream`]: the stream header, MAC-chained frames, the writer and the incremental
//!   reader of untrusted bytes.
//! - [`commit`]: commit-before-challenge: the hashes that bind a prover to a call's
//!   operands and result, and the verifier's secret challenge (docs/COMMIT.md).
//! - [`handshake`]: the verifier's hello that opens a live session (session nonce, table
//!   of verifier-held operands), and the prover's lookup in that table.
//!
//! This crate is pure computation on bytes: no I/O, no unsafe code, no panics on input.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod call;
pub mod codec;
pub mod commit;
pub mod config;
pub mod handshake;
pub mod keys;
pub mod num;
pub mod record;
pub mod schedule;
pub mod stream;

#[doc(hidden)]
pub mod fuzzing;

//! The verifier library behind `mmaudit-verify`: the audit of a stream (`audit`), the
//! arithmetic that judges one entry (`recompute`), reports (`report`, drawn as HTML by
//! `html`), the commands `check` (and `report`), `keygen` (`keyfile`), `plan` and
//! `serve` (the live verifier), and the weight registry that tells which held tensors a
//! workload used (`weights`).
#![warn(missing_docs)]

pub mod audit;
pub mod cheat;
pub mod check;
pub mod html;
pub mod keyfile;
pub mod out;
pub mod plan;
pub mod policy;
pub mod recompute;
pub mod report;
pub mod serve;
pub mod weights;

//! The verifier library behind `mmaudit-verify`.
pub mod plan;
pub mod recompute;

//! The verifier library behind `mmaudit-verify`.

//! Test infrastructure shared by the workspace's tests: helpers that build and locate
//! the simulated GPU, and (later) the reference prover. Never shipped.

/// The reference prover of commit mode (docs/COMMIT.md), honest or cheating.
pub mod commitprover;
/// Programs on the simulated GPU under `LD_PRELOAD=libmmaudit.so`, judged by
/// `mmaudit-verify`: the end-to-end tests' shared helpers.
pub mod preload;
pub mod refprover;
/// The prover's side of a live session with `mmaudit-verify serve`.
pub mod session;
/// Builds and runs the simulated GPU (tests/simgpu) for C test programs.
pub mod simgpu;

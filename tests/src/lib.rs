//! Test infrastructure shared by the workspace's tests: helpers that build and locate
//! the simulated GPU, and (later) the reference prover. Never shipped.

pub mod refprover;
/// The prover's side of a live session with `mmaudit-verify serve`.
pub mod session;
/// Builds and runs the simulated GPU (tests/simgpu) for C test programs.
pub mod simgpu;

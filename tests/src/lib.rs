//! Test infrastructure shared by the workspace's tests: helpers that build and locate
//! the simulated GPU, and (later) the reference prover. Never shipped.

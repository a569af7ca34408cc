//! Raw bindings: the C types, constants and function-pointer types of the parts of
//! cuBLAS, cuBLASLt and the CUDA driver that the interposer touches.
//!
//! Nothing here links against a CUDA library: every function is reached through a
//! pointer resolved at run time (see [`crate::real`] and [`crate::driver`]), so the
//! library loads in any process, with or without CUDA installed. Values are those of
//! CUDA 12/13's headers (the simulated GPU's headers in tests/simgpu/include match them).
//!
//! This module only declares; it never calls anything.

pub mod cublas;
pub mod driver;

//! The thin `Result` layer: the one place where a C status becomes a Rust `Result`.
//!
//! Every raw driver call goes through [`cu`] and every raw cuBLAS(Lt) status through
//! [`blas`] (the mio `syscall!` idea): nothing above this module looks at a raw status
//! code, and nothing here panics.

use std::fmt;

use crate::sys::cublas::{CublasStatus, CUBLAS_STATUS_SUCCESS};
use crate::sys::driver::{CuResult, CUDA_SUCCESS};

/// A failed CUDA driver call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DriverError {
    /// The `CUresult` returned.
    pub code: CuResult,
    /// The driver function that returned it.
    pub call: &'static str,
}

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} failed with {} ({})",
            self.call,
            driver_error_name(self.code),
            self.code
        )
    }
}

/// A failed cuBLAS / cuBLASLt call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlasError {
    /// The `cublasStatus_t` returned.
    pub status: CublasStatus,
    /// The function that returned it.
    pub call: &'static str,
}

impl fmt::Display for BlasError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} returned cuBLAS status {}", self.call, self.status)
    }
}

/// The driver choke point: `CUDA_SUCCESS` is `Ok`, anything else an error naming `call`.
pub fn cu(code: CuResult, call: &'static str) -> Result<(), DriverError> {
    if code == CUDA_SUCCESS {
        Ok(())
    } else {
        Err(DriverError { code, call })
    }
}

/// The cuBLAS choke point: `CUBLAS_STATUS_SUCCESS` is `Ok`.
pub fn blas(status: CublasStatus, call: &'static str) -> Result<(), BlasError> {
    if status == CUBLAS_STATUS_SUCCESS {
        Ok(())
    } else {
        Err(BlasError { status, call })
    }
}

/// The `CUresult` names the interposer is likely to meet (the driver's own
/// `cuGetErrorName` may be unusable when the error is about the driver itself).
pub fn driver_error_name(code: CuResult) -> &'static str {
    match code {
        0 => "CUDA_SUCCESS",
        1 => "CUDA_ERROR_INVALID_VALUE",
        2 => "CUDA_ERROR_OUT_OF_MEMORY",
        3 => "CUDA_ERROR_NOT_INITIALIZED",
        4 => "CUDA_ERROR_DEINITIALIZED",
        100 => "CUDA_ERROR_NO_DEVICE",
        101 => "CUDA_ERROR_INVALID_DEVICE",
        200 => "CUDA_ERROR_INVALID_IMAGE",
        201 => "CUDA_ERROR_INVALID_CONTEXT",
        218 => "CUDA_ERROR_INVALID_PTX",
        222 => "CUDA_ERROR_UNSUPPORTED_PTX_VERSION",
        400 => "CUDA_ERROR_INVALID_HANDLE",
        500 => "CUDA_ERROR_NOT_FOUND",
        600 => "CUDA_ERROR_NOT_READY",
        700 => "CUDA_ERROR_ILLEGAL_ADDRESS",
        701 => "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES",
        719 => "CUDA_ERROR_LAUNCH_FAILED",
        800 => "CUDA_ERROR_NOT_PERMITTED",
        801 => "CUDA_ERROR_NOT_SUPPORTED",
        900 => "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED",
        901 => "CUDA_ERROR_STREAM_CAPTURE_INVALIDATED",
        906 => "CUDA_ERROR_STREAM_CAPTURE_IMPLICIT",
        907 => "CUDA_ERROR_CAPTURED_EVENT",
        999 => "CUDA_ERROR_UNKNOWN",
        _ => "CUDA error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choke_points_map_success_and_failure() {
        assert_eq!(cu(0, "cuX"), Ok(()));
        let e = cu(700, "cuLaunchKernel").unwrap_err();
        assert_eq!(
            e.to_string(),
            "cuLaunchKernel failed with CUDA_ERROR_ILLEGAL_ADDRESS (700)"
        );
        assert_eq!(blas(0, "f"), Ok(()));
        assert_eq!(blas(7, "f").unwrap_err().status, 7);
    }
}

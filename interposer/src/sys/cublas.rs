//! cuBLAS and cuBLASLt: status codes, enum values, handle types and the signatures of
//! the hooked entry points and of the getters the hooks call.

use std::ffi::{c_int, c_void};

/// `cublasStatus_t`
pub type CublasStatus = c_int;
/// `CUBLAS_STATUS_SUCCESS`
pub const CUBLAS_STATUS_SUCCESS: CublasStatus = 0;
/// `CUBLAS_STATUS_NOT_INITIALIZED`: what a hook answers when no real function exists.
pub const CUBLAS_STATUS_NOT_INITIALIZED: CublasStatus = 1;

/// `cublasHandle_t`
pub type CublasHandle = *mut c_void;
/// `cublasLtHandle_t`
pub type LtHandle = *mut c_void;
/// `cublasLtMatmulDesc_t`
pub type LtMatmulDesc = *mut c_void;
/// `cublasLtMatrixLayout_t`
pub type LtLayout = *mut c_void;
/// `cudaStream_t` / `CUstream`
pub type Stream = *mut c_void;

/// `cublasOperation_t`
pub type Operation = c_int;
/// `CUBLAS_OP_N`
pub const OP_N: Operation = 0;
/// `CUBLAS_OP_T`
pub const OP_T: Operation = 1;
/// `cudaDataType_t`
pub type DataType = c_int;
/// `cublasComputeType_t`
pub type ComputeType = c_int;
/// `cublasGemmAlgo_t`
pub type GemmAlgo = c_int;

/// `CUBLAS_POINTER_MODE_DEVICE`
pub const POINTER_MODE_DEVICE: c_int = 1;

/// `cudaDataType_t` values.
pub mod data_type {
    use std::ffi::c_int;
    /// `CUDA_R_32F`
    pub const R_32F: c_int = 0;
    /// `CUDA_R_64F`
    pub const R_64F: c_int = 1;
    /// `CUDA_R_16F`
    pub const R_16F: c_int = 2;
    /// `CUDA_C_32F` (complex f32)
    pub const C_32F: c_int = 4;
    /// `CUDA_C_64F` (complex f64)
    pub const C_64F: c_int = 5;
    /// `CUDA_R_8I`
    pub const R_8I: c_int = 3;
    /// `CUDA_R_32I`
    pub const R_32I: c_int = 10;
    /// `CUDA_R_16BF`
    pub const R_16BF: c_int = 14;
    /// `CUDA_R_8F_E4M3`
    pub const R_8F_E4M3: c_int = 28;
    /// `CUDA_R_8F_E5M2`
    pub const R_8F_E5M2: c_int = 29;
}

/// `cublasComputeType_t` values.
pub mod compute {
    use std::ffi::c_int;
    /// `CUBLAS_COMPUTE_16F`
    pub const C16F: c_int = 64;
    /// `CUBLAS_COMPUTE_16F_PEDANTIC`
    pub const C16F_PEDANTIC: c_int = 65;
    /// `CUBLAS_COMPUTE_32F`
    pub const C32F: c_int = 68;
    /// `CUBLAS_COMPUTE_32F_PEDANTIC`
    pub const C32F_PEDANTIC: c_int = 69;
    /// `CUBLAS_COMPUTE_64F`
    pub const C64F: c_int = 70;
    /// `CUBLAS_COMPUTE_64F_PEDANTIC`
    pub const C64F_PEDANTIC: c_int = 71;
    /// `CUBLAS_COMPUTE_32I`
    pub const C32I: c_int = 72;
    /// `CUBLAS_COMPUTE_32I_PEDANTIC`
    pub const C32I_PEDANTIC: c_int = 73;
    /// `CUBLAS_COMPUTE_32F_FAST_16F`
    pub const C32F_FAST_16F: c_int = 74;
    /// `CUBLAS_COMPUTE_32F_FAST_16BF`
    pub const C32F_FAST_16BF: c_int = 75;
    /// `CUBLAS_COMPUTE_32F_FAST_TF32`
    pub const C32F_FAST_TF32: c_int = 77;
}

/// `cublasMath_t` values (the low four bits; bit 4 is a separate flag).
pub mod math {
    use std::ffi::c_int;
    /// `CUBLAS_TENSOR_OP_MATH` (deprecated: f32 inputs rounded to f16)
    pub const TENSOR_OP: c_int = 1;
    /// `CUBLAS_PEDANTIC_MATH`
    pub const PEDANTIC: c_int = 2;
    /// `CUBLAS_TF32_TENSOR_OP_MATH`
    pub const TF32_TENSOR_OP: c_int = 3;
    /// `CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION` (a flag bit)
    pub const DISALLOW_REDUCED_PRECISION_REDUCTION: c_int = 16;
}

/// `cublasLtMatmulAlgoConfigAttributes_t` values read by the Lt hook (both uint32).
pub mod algo_config {
    use std::ffi::c_int;
    /// `CUBLASLT_ALGO_CONFIG_SPLITK_NUM`: the number of k parts
    pub const SPLITK_NUM: c_int = 2;
    /// `CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME`: how the parts are added
    pub const REDUCTION_SCHEME: c_int = 3;
}

/// `cublasLtReductionScheme_t` bits.
pub mod reduction {
    /// `CUBLASLT_REDUCTION_SCHEME_INPLACE`: the parts are added in D, in D's type
    pub const INPLACE: u32 = 1;
    /// `CUBLASLT_REDUCTION_SCHEME_OUTPUT_TYPE`: the parts are kept in D's type
    pub const OUTPUT_TYPE: u32 = 4;
}

/// `cublasLtMatmulDescAttributes_t` values read by the Lt hook.
pub mod desc_attr {
    use std::ffi::c_int;
    /// int32 `cublasComputeType_t`
    pub const COMPUTE_TYPE: c_int = 0;
    /// int32 `cudaDataType`
    pub const SCALE_TYPE: c_int = 1;
    /// int32 `cublasLtPointerMode_t`
    pub const POINTER_MODE: c_int = 2;
    /// int32 `cublasOperation_t`
    pub const TRANSA: c_int = 3;
    /// int32 `cublasOperation_t`
    pub const TRANSB: c_int = 4;
    /// int32 `cublasOperation_t`
    pub const TRANSC: c_int = 5;
    /// uint32 `cublasLtEpilogue_t`
    pub const EPILOGUE: c_int = 7;
    /// `const void *`
    pub const BIAS_POINTER: c_int = 8;
    /// int64
    pub const BIAS_BATCH_STRIDE: c_int = 10;
    /// `const void *` (f32 on the device)
    pub const A_SCALE_POINTER: c_int = 17;
    /// `const void *`
    pub const B_SCALE_POINTER: c_int = 18;
    /// `const void *`
    pub const C_SCALE_POINTER: c_int = 19;
    /// `const void *`
    pub const D_SCALE_POINTER: c_int = 20;
    /// int8: fp8 fast accumulation (no periodic promotion to f32)
    pub const FAST_ACCUM: c_int = 25;
    /// int32 `cudaDataType`, -1 = default
    pub const BIAS_DATA_TYPE: c_int = 26;
    /// int32 `cublasLtMatmulMatrixScale_t` of A (then B, C, D: 32, 33, 34)
    pub const A_SCALE_MODE: c_int = 31;
    /// of B
    pub const B_SCALE_MODE: c_int = 32;
    /// of C
    pub const C_SCALE_MODE: c_int = 33;
    /// of D
    pub const D_SCALE_MODE: c_int = 34;
    /// of the epilogue's auxiliary output
    pub const EPILOGUE_AUX_SCALE_MODE: c_int = 35;
    /// `const void *`: the scale of D's block-scaled output (mxfp8, nvfp4)
    pub const D_OUT_SCALE_POINTER: c_int = 36;
    /// int32 `cublasLtMatmulMatrixScale_t` of that output scale
    pub const D_OUT_SCALE_MODE: c_int = 37;
}

/// `cublasLtMatmulMatrixScale_t`: how a scale pointer's data applies.
pub mod scale_mode {
    /// one f32 for the whole matrix (the default)
    pub const SCALAR_32F: i32 = 0;
    /// one f32 per row of D (A's scale) or per column of D (B's): fp8 rowwise scaling
    pub const OUTER_VEC_32F: i32 = 3;
    /// a name for each value, for messages
    pub fn name(mode: i32) -> String {
        match mode {
            0 => "SCALAR_32F".into(),
            1 => "VEC16_UE4M3 (nvfp4 block scales)".into(),
            2 => "VEC32_UE8M0 (mxfp8 block scales)".into(),
            3 => "OUTER_VEC_32F (per-row and per-column fp8 scales)".into(),
            4 => "VEC128_32F (1x128 block scales)".into(),
            5 => "BLK128x128_32F (128x128 block scales)".into(),
            6 => "PER_BATCH_SCALAR_32F (a scale per batch entry)".into(),
            other => format!("{other} (unknown)"),
        }
    }
}

/// `cublasLtMatrixLayoutAttribute_t` values read by the Lt hook.
pub mod layout_attr {
    use std::ffi::c_int;
    /// uint32 `cudaDataType`
    pub const TYPE: c_int = 0;
    /// int32 `cublasLtOrder_t`
    pub const ORDER: c_int = 1;
    /// uint64
    pub const ROWS: c_int = 2;
    /// uint64
    pub const COLS: c_int = 3;
    /// int64
    pub const LD: c_int = 4;
    /// int32
    pub const BATCH_COUNT: c_int = 5;
    /// int64, elements
    pub const STRIDED_BATCH_OFFSET: c_int = 6;
    /// int64
    pub const PLANE_OFFSET: c_int = 7;
    /// int32 `cublasLtBatchMode_t`
    pub const BATCH_MODE: c_int = 8;
}

/// `cublasLtOrder_t`: `CUBLASLT_ORDER_COL`
pub const LT_ORDER_COL: c_int = 0;
/// `cublasLtOrder_t`: `CUBLASLT_ORDER_ROW`
pub const LT_ORDER_ROW: c_int = 1;

/// `cublasLtEpilogue_t` values with a protocol meaning.
pub mod epilogue {
    /// `CUBLASLT_EPILOGUE_DEFAULT`
    pub const DEFAULT: u32 = 1;
    /// `CUBLASLT_EPILOGUE_RELU`
    pub const RELU: u32 = 2;
    /// `CUBLASLT_EPILOGUE_BIAS`
    pub const BIAS: u32 = 4;
    /// `CUBLASLT_EPILOGUE_RELU_BIAS`
    pub const RELU_BIAS: u32 = 6;
    /// `CUBLASLT_EPILOGUE_GELU`
    pub const GELU: u32 = 32;
    /// `CUBLASLT_EPILOGUE_GELU_BIAS`
    pub const GELU_BIAS: u32 = 36;
}

/// `cublasLtMatmul`
pub type LtMatmulFn = unsafe extern "C" fn(
    LtHandle,
    LtMatmulDesc,
    *const c_void,
    *const c_void,
    LtLayout,
    *const c_void,
    LtLayout,
    *const c_void,
    *const c_void,
    LtLayout,
    *mut c_void,
    LtLayout,
    *const c_void,
    *mut c_void,
    usize,
    Stream,
) -> CublasStatus;

/// `cublasGetStream_v2`
pub type GetStreamFn = unsafe extern "C" fn(CublasHandle, *mut Stream) -> CublasStatus;
/// `cublasGetPointerMode_v2`
pub type GetPointerModeFn = unsafe extern "C" fn(CublasHandle, *mut c_int) -> CublasStatus;
/// `cublasGetMathMode`
pub type GetMathModeFn = unsafe extern "C" fn(CublasHandle, *mut c_int) -> CublasStatus;
/// `cublasLtMatmulDescGetAttribute`
pub type DescGetAttrFn =
    unsafe extern "C" fn(LtMatmulDesc, c_int, *mut c_void, usize, *mut usize) -> CublasStatus;
/// `cublasLtMatmulAlgoConfigGetAttribute` (the algo is `const cublasLtMatmulAlgo_t *`)
pub type AlgoConfigGetAttrFn =
    unsafe extern "C" fn(*const c_void, c_int, *mut c_void, usize, *mut usize) -> CublasStatus;
/// `cublasLtMatrixLayoutGetAttribute`
pub type LayoutGetAttrFn =
    unsafe extern "C" fn(LtLayout, c_int, *mut c_void, usize, *mut usize) -> CublasStatus;

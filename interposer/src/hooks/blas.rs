//! The cuBLAS GEMM exports. Each one describes its call from its arguments and the
//! handle's state (stream, pointer mode, math mode, read through the real getters of
//! the same library) and hands everything to the shared hook body (`hooks::audited`).

#![allow(non_snake_case, clippy::too_many_arguments)]

use std::ffi::{c_int, c_void};

use mmaudit_protocol::call::{BatchForm, EntryPoint};

use super::{audited, missing, site_of, Call, Unmodelled};
use crate::model::{
    blas_scale_type, describe_blas, unmodelled_blas, BlasArgs, NotDescribed, ScalarArg,
};
use crate::real;
use crate::result::blas;
use crate::sys::cublas::{self as sys, compute as cc, data_type as dt, CublasHandle, CublasStatus};

/// The parts of a cuBLAS call that vary between entry points.
struct Parts {
    entry: EntryPoint,
    transa: c_int,
    transb: c_int,
    m: i64,
    n: i64,
    k: i64,
    types: (c_int, c_int, c_int),
    a: *const c_void,
    b: *const c_void,
    c: *const c_void,
    ld: (i64, i64, i64),
    strides: (i64, i64, i64),
    batch: i64,
    batch_form: BatchForm,
    compute: c_int,
    alpha: *const c_void,
    beta: *const c_void,
    /// gemv: no tensor-core path, so the handle's math mode does not apply; and why
    /// the call cannot be described, when it cannot.
    gemv: Option<Result<(), String>>,
}

/// Reads `size` bytes of a host scalar.
///
/// # Safety
/// `p` must be null or point to at least `size` (<= 8) readable bytes, as cuBLAS
/// requires of alpha and beta in host pointer mode.
pub(crate) unsafe fn host_scalar(p: *const c_void, size: usize) -> Option<ScalarArg> {
    if p.is_null() {
        return None;
    }
    let mut bytes = [0u8; 8];
    // SAFETY: per the contract, p points to `size` readable bytes; the buffer holds 8.
    unsafe { std::ptr::copy_nonoverlapping(p.cast::<u8>(), bytes.as_mut_ptr(), size.min(8)) };
    Some(ScalarArg::Host(bytes))
}

/// A helper function of the real library as type `T` (a function-pointer type).
pub(crate) fn getter<T: Copy>(sym: &real::RealSym) -> Result<T, NotDescribed> {
    const { assert!(std::mem::size_of::<T>() == std::mem::size_of::<usize>()) };
    let p = sym.get().ok_or_else(|| {
        NotDescribed::Unsupported(format!("{} is not available", sym.name.to_string_lossy()))
    })?;
    // SAFETY: T is the function-pointer type of `sym` (pointer-sized, checked above)
    // and p is that function's address.
    Ok(unsafe { std::mem::transmute_copy::<usize, T>(&p) })
}

/// Describes a cuBLAS call: exactly, or as a call outside the model with the
/// arguments as passed.
///
/// # Safety
/// `handle` must be what the application passed; `parts.alpha`/`beta` must be the
/// application's scalar pointers (host pointers are read only in host pointer mode).
unsafe fn describe(handle: CublasHandle, p: Parts) -> Result<Call, Box<Unmodelled>> {
    let mut stream: sys::Stream = std::ptr::null_mut();
    let mut mode: Option<c_int> = None;
    let mut math: c_int = 0;
    // SAFETY: the caller's contract.
    let state = unsafe { read_handle(handle, &mut stream, &mut mode, &mut math) };
    let state = match &p.gemv {
        Some(Err(why)) => state.and(Err(NotDescribed::Unsupported(why.clone()))),
        Some(Ok(())) => {
            math = 0;
            state
        }
        None => state,
    };
    let size = blas_scale_type(p.compute).size();
    let scalar = |ptr: *const c_void, what: &str| -> Result<ScalarArg, NotDescribed> {
        if ptr.is_null() {
            return Err(NotDescribed::Invalid(format!("{what} is a null pointer")));
        }
        match mode {
            Some(sys::POINTER_MODE_DEVICE) => Ok(ScalarArg::Device(ptr as u64)),
            // SAFETY: host pointer mode: cuBLAS itself reads a scale-type value here.
            Some(_) => unsafe { host_scalar(ptr, size) }
                .ok_or_else(|| NotDescribed::Invalid(format!("{what} is a null pointer"))),
            None => Err(NotDescribed::Unsupported(
                "the handle's pointer mode cannot be read".into(),
            )),
        }
    };
    let alpha = scalar(p.alpha, "alpha");
    let beta = scalar(p.beta, "beta");
    let (site, ctx) = site_of(stream as usize);
    let mut args = BlasArgs {
        entry: p.entry,
        transa: p.transa,
        transb: p.transb,
        m: p.m,
        n: p.n,
        k: p.k,
        a_type: p.types.0,
        b_type: p.types.1,
        c_type: p.types.2,
        a: p.a as u64,
        b: p.b as u64,
        c: p.c as u64,
        lda: p.ld.0,
        ldb: p.ld.1,
        ldc: p.ld.2,
        stride_a: p.strides.0,
        stride_b: p.strides.1,
        stride_c: p.strides.2,
        batch: p.batch,
        batch_form: p.batch_form,
        compute: p.compute,
        math_mode: math,
        alpha: ScalarArg::Host([0; 8]),
        beta: ScalarArg::Host([0; 8]),
        site,
    };
    let described = state.and_then(|()| {
        args.alpha = alpha.clone()?;
        args.beta = beta.clone()?;
        describe_blas(&args)
    });
    match described {
        Ok(described) => Ok(Call {
            described,
            stream: stream as usize,
            ctx,
        }),
        Err(why) => {
            if let Ok(a) = alpha {
                args.alpha = a;
            }
            if let Ok(b) = beta {
                args.beta = b;
            }
            Err(Box::new(Unmodelled {
                call: unmodelled_blas(&args),
                why,
            }))
        }
    }
}

/// Reads the handle's stream, pointer mode and math mode through the real getters;
/// what could not be read stays as it was (`mode` None).
///
/// # Safety
/// `handle` must be what the application passed.
unsafe fn read_handle(
    handle: CublasHandle,
    stream: &mut sys::Stream,
    mode: &mut Option<c_int>,
    math: &mut c_int,
) -> Result<(), NotDescribed> {
    let get_stream: sys::GetStreamFn = getter(&real::GET_STREAM)?;
    let get_mode: sys::GetPointerModeFn = getter(&real::GET_POINTER_MODE)?;
    let get_math: sys::GetMathModeFn = getter(&real::GET_MATH_MODE)?;
    let invalid = |e: crate::result::BlasError| NotDescribed::Invalid(e.to_string());
    let mut s: sys::Stream = std::ptr::null_mut();
    // SAFETY: the real getter with the application's handle and a valid out pointer.
    let r = unsafe { get_stream(handle, &mut s) };
    blas(r, "cublasGetStream_v2").map_err(invalid)?;
    *stream = s;
    let mut m: c_int = 0;
    // SAFETY: as above.
    let r = unsafe { get_mode(handle, &mut m) };
    blas(r, "cublasGetPointerMode_v2").map_err(invalid)?;
    *mode = Some(m);
    let mut x: c_int = 0;
    // SAFETY: as above.
    let r = unsafe { get_math(handle, &mut x) };
    blas(r, "cublasGetMathMode").map_err(invalid)?;
    *math = x;
    Ok(())
}

/// The real function of `sym` as type `T`, or the status to return.
pub(crate) fn real_fn<T: Copy>(sym: &real::RealSym) -> Result<T, CublasStatus> {
    const { assert!(std::mem::size_of::<T>() == std::mem::size_of::<usize>()) };
    let Some(p) = sym.get() else {
        return Err(missing(&sym.name.to_string_lossy()));
    };
    // SAFETY: T is the C signature of `sym` and p its address in the real library.
    Ok(unsafe { std::mem::transmute_copy::<usize, T>(&p) })
}

const F32: (c_int, c_int, c_int) = (dt::R_32F, dt::R_32F, dt::R_32F);
const F16: (c_int, c_int, c_int) = (dt::R_16F, dt::R_16F, dt::R_16F);

/// Hook of `cublasSgemm_v2`.
///
/// # Safety
/// The cuBLAS contract of `cublasSgemm_v2`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn cublasSgemm_v2(
    handle: CublasHandle,
    transa: c_int,
    transb: c_int,
    m: c_int,
    n: c_int,
    k: c_int,
    alpha: *const f32,
    a: *const f32,
    lda: c_int,
    b: *const f32,
    ldb: c_int,
    beta: *const f32,
    c: *mut f32,
    ldc: c_int,
) -> CublasStatus {
    let f: sys::SgemmFn = match real_fn(&real::SGEMM) {
        Ok(f) => f,
        Err(s) => return s,
    };
    audited(
        "cublasSgemm_v2",
        // SAFETY: the application's arguments, passed on unchanged.
        || unsafe {
            describe(
                handle,
                Parts {
                    entry: EntryPoint::SgemmV2,
                    transa,
                    transb,
                    m: m as i64,
                    n: n as i64,
                    k: k as i64,
                    types: F32,
                    a: a.cast(),
                    b: b.cast(),
                    c: c.cast_const().cast(),
                    ld: (lda as i64, ldb as i64, ldc as i64),
                    strides: (0, 0, 0),
                    batch: 1,
                    batch_form: BatchForm::Single,
                    compute: cc::C32F,
                    alpha: alpha.cast(),
                    beta: beta.cast(),
                    gemv: None,
                },
            )
        },
        // SAFETY: the real function with the caller's arguments, exactly once.
        || unsafe {
            f(
                handle, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc,
            )
        },
    )
}

/// Hook of `cublasSgemm_v2_64`.
///
/// # Safety
/// The cuBLAS contract of `cublasSgemm_v2_64`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn cublasSgemm_v2_64(
    handle: CublasHandle,
    transa: c_int,
    transb: c_int,
    m: i64,
    n: i64,
    k: i64,
    alpha: *const f32,
    a: *const f32,
    lda: i64,
    b: *const f32,
    ldb: i64,
    beta: *const f32,
    c: *mut f32,
    ldc: i64,
) -> CublasStatus {
    let f: sys::Sgemm64Fn = match real_fn(&real::SGEMM_64) {
        Ok(f) => f,
        Err(s) => return s,
    };
    audited(
        "cublasSgemm_v2_64",
        // SAFETY: the application's arguments, passed on unchanged.
        || unsafe {
            describe(
                handle,
                Parts {
                    entry: EntryPoint::SgemmV264,
                    transa,
                    transb,
                    m,
                    n,
                    k,
                    types: F32,
                    a: a.cast(),
                    b: b.cast(),
                    c: c.cast_const().cast(),
                    ld: (lda, ldb, ldc),
                    strides: (0, 0, 0),
                    batch: 1,
                    batch_form: BatchForm::Single,
                    compute: cc::C32F,
                    alpha: alpha.cast(),
                    beta: beta.cast(),
                    gemv: None,
                },
            )
        },
        // SAFETY: the real function with the caller's arguments, exactly once.
        || unsafe {
            f(
                handle, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc,
            )
        },
    )
}

/// Hook of `cublasHgemm`.
///
/// # Safety
/// The cuBLAS contract of `cublasHgemm`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn cublasHgemm(
    handle: CublasHandle,
    transa: c_int,
    transb: c_int,
    m: c_int,
    n: c_int,
    k: c_int,
    alpha: *const u16,
    a: *const u16,
    lda: c_int,
    b: *const u16,
    ldb: c_int,
    beta: *const u16,
    c: *mut u16,
    ldc: c_int,
) -> CublasStatus {
    let f: sys::HgemmFn = match real_fn(&real::HGEMM) {
        Ok(f) => f,
        Err(s) => return s,
    };
    audited(
        "cublasHgemm",
        // SAFETY: the application's arguments, passed on unchanged.
        || unsafe {
            describe(
                handle,
                Parts {
                    entry: EntryPoint::Hgemm,
                    transa,
                    transb,
                    m: m as i64,
                    n: n as i64,
                    k: k as i64,
                    types: F16,
                    a: a.cast(),
                    b: b.cast(),
                    c: c.cast_const().cast(),
                    ld: (lda as i64, ldb as i64, ldc as i64),
                    strides: (0, 0, 0),
                    batch: 1,
                    batch_form: BatchForm::Single,
                    compute: cc::C16F,
                    alpha: alpha.cast(),
                    beta: beta.cast(),
                    gemv: None,
                },
            )
        },
        // SAFETY: the real function with the caller's arguments, exactly once.
        || unsafe {
            f(
                handle, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc,
            )
        },
    )
}

/// Hook of `cublasSgemmStridedBatched`.
///
/// # Safety
/// The cuBLAS contract of `cublasSgemmStridedBatched`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn cublasSgemmStridedBatched(
    handle: CublasHandle,
    transa: c_int,
    transb: c_int,
    m: c_int,
    n: c_int,
    k: c_int,
    alpha: *const f32,
    a: *const f32,
    lda: c_int,
    stride_a: i64,
    b: *const f32,
    ldb: c_int,
    stride_b: i64,
    beta: *const f32,
    c: *mut f32,
    ldc: c_int,
    stride_c: i64,
    batch: c_int,
) -> CublasStatus {
    let f: sys::SgemmStridedBatchedFn = match real_fn(&real::SGEMM_STRIDED_BATCHED) {
        Ok(f) => f,
        Err(s) => return s,
    };
    audited(
        "cublasSgemmStridedBatched",
        // SAFETY: the application's arguments, passed on unchanged.
        || unsafe {
            describe(
                handle,
                Parts {
                    entry: EntryPoint::SgemmStridedBatched,
                    transa,
                    transb,
                    m: m as i64,
                    n: n as i64,
                    k: k as i64,
                    types: F32,
                    a: a.cast(),
                    b: b.cast(),
                    c: c.cast_const().cast(),
                    ld: (lda as i64, ldb as i64, ldc as i64),
                    strides: (stride_a, stride_b, stride_c),
                    batch: batch as i64,
                    batch_form: BatchForm::Strided,
                    compute: cc::C32F,
                    alpha: alpha.cast(),
                    beta: beta.cast(),
                    gemv: None,
                },
            )
        },
        // SAFETY: the real function with the caller's arguments, exactly once.
        || unsafe {
            f(
                handle, transa, transb, m, n, k, alpha, a, lda, stride_a, b, ldb, stride_b, beta,
                c, ldc, stride_c, batch,
            )
        },
    )
}

/// Hook of `cublasHgemmStridedBatched`.
///
/// # Safety
/// The cuBLAS contract of `cublasHgemmStridedBatched`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn cublasHgemmStridedBatched(
    handle: CublasHandle,
    transa: c_int,
    transb: c_int,
    m: c_int,
    n: c_int,
    k: c_int,
    alpha: *const u16,
    a: *const u16,
    lda: c_int,
    stride_a: i64,
    b: *const u16,
    ldb: c_int,
    stride_b: i64,
    beta: *const u16,
    c: *mut u16,
    ldc: c_int,
    stride_c: i64,
    batch: c_int,
) -> CublasStatus {
    let f: sys::HgemmStridedBatchedFn = match real_fn(&real::HGEMM_STRIDED_BATCHED) {
        Ok(f) => f,
        Err(s) => return s,
    };
    audited(
        "cublasHgemmStridedBatched",
        // SAFETY: the application's arguments, passed on unchanged.
        || unsafe {
            describe(
                handle,
                Parts {
                    entry: EntryPoint::HgemmStridedBatched,
                    transa,
                    transb,
                    m: m as i64,
                    n: n as i64,
                    k: k as i64,
                    types: F16,
                    a: a.cast(),
                    b: b.cast(),
                    c: c.cast_const().cast(),
                    ld: (lda as i64, ldb as i64, ldc as i64),
                    strides: (stride_a, stride_b, stride_c),
                    batch: batch as i64,
                    batch_form: BatchForm::Strided,
                    compute: cc::C16F,
                    alpha: alpha.cast(),
                    beta: beta.cast(),
                    gemv: None,
                },
            )
        },
        // SAFETY: the real function with the caller's arguments, exactly once.
        || unsafe {
            f(
                handle, transa, transb, m, n, k, alpha, a, lda, stride_a, b, ldb, stride_b, beta,
                c, ldc, stride_c, batch,
            )
        },
    )
}

/// Hook of `cublasGemmEx`.
///
/// # Safety
/// The cuBLAS contract of `cublasGemmEx`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn cublasGemmEx(
    handle: CublasHandle,
    transa: c_int,
    transb: c_int,
    m: c_int,
    n: c_int,
    k: c_int,
    alpha: *const c_void,
    a: *const c_void,
    a_type: c_int,
    lda: c_int,
    b: *const c_void,
    b_type: c_int,
    ldb: c_int,
    beta: *const c_void,
    c: *mut c_void,
    c_type: c_int,
    ldc: c_int,
    compute: c_int,
    algo: c_int,
) -> CublasStatus {
    let f: sys::GemmExFn = match real_fn(&real::GEMM_EX) {
        Ok(f) => f,
        Err(s) => return s,
    };
    audited(
        "cublasGemmEx",
        // SAFETY: the application's arguments, passed on unchanged.
        || unsafe {
            describe(
                handle,
                Parts {
                    entry: EntryPoint::GemmEx,
                    transa,
                    transb,
                    m: m as i64,
                    n: n as i64,
                    k: k as i64,
                    types: (a_type, b_type, c_type),
                    a,
                    b,
                    c: c.cast_const(),
                    ld: (lda as i64, ldb as i64, ldc as i64),
                    strides: (0, 0, 0),
                    batch: 1,
                    batch_form: BatchForm::Single,
                    compute,
                    alpha,
                    beta,
                    gemv: None,
                },
            )
        },
        // SAFETY: the real function with the caller's arguments, exactly once.
        || unsafe {
            f(
                handle, transa, transb, m, n, k, alpha, a, a_type, lda, b, b_type, ldb, beta, c,
                c_type, ldc, compute, algo,
            )
        },
    )
}

/// Hook of `cublasGemmEx_64`.
///
/// # Safety
/// The cuBLAS contract of `cublasGemmEx_64`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn cublasGemmEx_64(
    handle: CublasHandle,
    transa: c_int,
    transb: c_int,
    m: i64,
    n: i64,
    k: i64,
    alpha: *const c_void,
    a: *const c_void,
    a_type: c_int,
    lda: i64,
    b: *const c_void,
    b_type: c_int,
    ldb: i64,
    beta: *const c_void,
    c: *mut c_void,
    c_type: c_int,
    ldc: i64,
    compute: c_int,
    algo: c_int,
) -> CublasStatus {
    let f: sys::GemmEx64Fn = match real_fn(&real::GEMM_EX_64) {
        Ok(f) => f,
        Err(s) => return s,
    };
    audited(
        "cublasGemmEx_64",
        // SAFETY: the application's arguments, passed on unchanged.
        || unsafe {
            describe(
                handle,
                Parts {
                    entry: EntryPoint::GemmEx64,
                    transa,
                    transb,
                    m,
                    n,
                    k,
                    types: (a_type, b_type, c_type),
                    a,
                    b,
                    c: c.cast_const(),
                    ld: (lda, ldb, ldc),
                    strides: (0, 0, 0),
                    batch: 1,
                    batch_form: BatchForm::Single,
                    compute,
                    alpha,
                    beta,
                    gemv: None,
                },
            )
        },
        // SAFETY: the real function with the caller's arguments, exactly once.
        || unsafe {
            f(
                handle, transa, transb, m, n, k, alpha, a, a_type, lda, b, b_type, ldb, beta, c,
                c_type, ldc, compute, algo,
            )
        },
    )
}

/// Hook of `cublasGemmStridedBatchedEx`.
///
/// # Safety
/// The cuBLAS contract of `cublasGemmStridedBatchedEx`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn cublasGemmStridedBatchedEx(
    handle: CublasHandle,
    transa: c_int,
    transb: c_int,
    m: c_int,
    n: c_int,
    k: c_int,
    alpha: *const c_void,
    a: *const c_void,
    a_type: c_int,
    lda: c_int,
    stride_a: i64,
    b: *const c_void,
    b_type: c_int,
    ldb: c_int,
    stride_b: i64,
    beta: *const c_void,
    c: *mut c_void,
    c_type: c_int,
    ldc: c_int,
    stride_c: i64,
    batch: c_int,
    compute: c_int,
    algo: c_int,
) -> CublasStatus {
    let f: sys::GemmStridedBatchedExFn = match real_fn(&real::GEMM_STRIDED_BATCHED_EX) {
        Ok(f) => f,
        Err(s) => return s,
    };
    audited(
        "cublasGemmStridedBatchedEx",
        // SAFETY: the application's arguments, passed on unchanged.
        || unsafe {
            describe(
                handle,
                Parts {
                    entry: EntryPoint::GemmStridedBatchedEx,
                    transa,
                    transb,
                    m: m as i64,
                    n: n as i64,
                    k: k as i64,
                    types: (a_type, b_type, c_type),
                    a,
                    b,
                    c: c.cast_const(),
                    ld: (lda as i64, ldb as i64, ldc as i64),
                    strides: (stride_a, stride_b, stride_c),
                    batch: batch as i64,
                    batch_form: BatchForm::Strided,
                    compute,
                    alpha,
                    beta,
                    gemv: None,
                },
            )
        },
        // SAFETY: the real function with the caller's arguments, exactly once.
        || unsafe {
            f(
                handle, transa, transb, m, n, k, alpha, a, a_type, lda, stride_a, b, b_type, ldb,
                stride_b, beta, c, c_type, ldc, stride_c, batch, compute, algo,
            )
        },
    )
}

/// Hook of `cublasGemmStridedBatchedEx_64`.
///
/// # Safety
/// The cuBLAS contract of `cublasGemmStridedBatchedEx_64`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn cublasGemmStridedBatchedEx_64(
    handle: CublasHandle,
    transa: c_int,
    transb: c_int,
    m: i64,
    n: i64,
    k: i64,
    alpha: *const c_void,
    a: *const c_void,
    a_type: c_int,
    lda: i64,
    stride_a: i64,
    b: *const c_void,
    b_type: c_int,
    ldb: i64,
    stride_b: i64,
    beta: *const c_void,
    c: *mut c_void,
    c_type: c_int,
    ldc: i64,
    stride_c: i64,
    batch: i64,
    compute: c_int,
    algo: c_int,
) -> CublasStatus {
    let f: sys::GemmStridedBatchedEx64Fn = match real_fn(&real::GEMM_STRIDED_BATCHED_EX_64) {
        Ok(f) => f,
        Err(s) => return s,
    };
    audited(
        "cublasGemmStridedBatchedEx_64",
        // SAFETY: the application's arguments, passed on unchanged.
        || unsafe {
            describe(
                handle,
                Parts {
                    entry: EntryPoint::GemmStridedBatchedEx64,
                    transa,
                    transb,
                    m,
                    n,
                    k,
                    types: (a_type, b_type, c_type),
                    a,
                    b,
                    c: c.cast_const(),
                    ld: (lda, ldb, ldc),
                    strides: (stride_a, stride_b, stride_c),
                    batch,
                    batch_form: BatchForm::Strided,
                    compute,
                    alpha,
                    beta,
                    gemv: None,
                },
            )
        },
        // SAFETY: the real function with the caller's arguments, exactly once.
        || unsafe {
            f(
                handle, transa, transb, m, n, k, alpha, a, a_type, lda, stride_a, b, b_type, ldb,
                stride_b, beta, c, c_type, ldc, stride_c, batch, compute, algo,
            )
        },
    )
}

/// Hook of `cublasGemmBatchedEx`.
///
/// # Safety
/// The cuBLAS contract of `cublasGemmBatchedEx` (the arrays live in device memory).
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn cublasGemmBatchedEx(
    handle: CublasHandle,
    transa: c_int,
    transb: c_int,
    m: c_int,
    n: c_int,
    k: c_int,
    alpha: *const c_void,
    a: *const *const c_void,
    a_type: c_int,
    lda: c_int,
    b: *const *const c_void,
    b_type: c_int,
    ldb: c_int,
    beta: *const c_void,
    c: *const *mut c_void,
    c_type: c_int,
    ldc: c_int,
    batch: c_int,
    compute: c_int,
    algo: c_int,
) -> CublasStatus {
    let f: sys::GemmBatchedExFn = match real_fn(&real::GEMM_BATCHED_EX) {
        Ok(f) => f,
        Err(s) => return s,
    };
    audited(
        "cublasGemmBatchedEx",
        // SAFETY: the application's arguments, passed on unchanged.
        || unsafe {
            describe(
                handle,
                Parts {
                    entry: EntryPoint::GemmBatchedEx,
                    transa,
                    transb,
                    m: m as i64,
                    n: n as i64,
                    k: k as i64,
                    types: (a_type, b_type, c_type),
                    a: a.cast(),
                    b: b.cast(),
                    c: c.cast(),
                    ld: (lda as i64, ldb as i64, ldc as i64),
                    strides: (0, 0, 0),
                    batch: batch as i64,
                    batch_form: BatchForm::PointerArray,
                    compute,
                    alpha,
                    beta,
                    gemv: None,
                },
            )
        },
        // SAFETY: the real function with the caller's arguments, exactly once.
        || unsafe {
            f(
                handle, transa, transb, m, n, k, alpha, a, a_type, lda, b, b_type, ldb, beta, c,
                c_type, ldc, batch, compute, algo,
            )
        },
    )
}

/// Hook of `cublasGemmBatchedEx_64`.
///
/// # Safety
/// The cuBLAS contract of `cublasGemmBatchedEx_64` (the arrays live in device memory).
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn cublasGemmBatchedEx_64(
    handle: CublasHandle,
    transa: c_int,
    transb: c_int,
    m: i64,
    n: i64,
    k: i64,
    alpha: *const c_void,
    a: *const *const c_void,
    a_type: c_int,
    lda: i64,
    b: *const *const c_void,
    b_type: c_int,
    ldb: i64,
    beta: *const c_void,
    c: *const *mut c_void,
    c_type: c_int,
    ldc: i64,
    batch: i64,
    compute: c_int,
    algo: c_int,
) -> CublasStatus {
    let f: sys::GemmBatchedEx64Fn = match real_fn(&real::GEMM_BATCHED_EX_64) {
        Ok(f) => f,
        Err(s) => return s,
    };
    audited(
        "cublasGemmBatchedEx_64",
        // SAFETY: the application's arguments, passed on unchanged.
        || unsafe {
            describe(
                handle,
                Parts {
                    entry: EntryPoint::GemmBatchedEx64,
                    transa,
                    transb,
                    m,
                    n,
                    k,
                    types: (a_type, b_type, c_type),
                    a: a.cast(),
                    b: b.cast(),
                    c: c.cast(),
                    ld: (lda, ldb, ldc),
                    strides: (0, 0, 0),
                    batch,
                    batch_form: BatchForm::PointerArray,
                    compute,
                    alpha,
                    beta,
                    gemv: None,
                },
            )
        },
        // SAFETY: the real function with the caller's arguments, exactly once.
        || unsafe {
            f(
                handle, transa, transb, m, n, k, alpha, a, a_type, lda, b, b_type, ldb, beta, c,
                c_type, ldc, batch, compute, algo,
            )
        },
    )
}

const F64: (c_int, c_int, c_int) = (dt::R_64F, dt::R_64F, dt::R_64F);

/// The [`Parts`] of a plain (not batched) GEMM.
fn plain(
    entry: EntryPoint,
    (transa, transb): (c_int, c_int),
    (m, n, k): (c_int, c_int, c_int),
    types: (c_int, c_int, c_int),
    (a, b, c): (*const c_void, *const c_void, *const c_void),
    (lda, ldb, ldc): (c_int, c_int, c_int),
    compute: c_int,
    (alpha, beta): (*const c_void, *const c_void),
) -> Parts {
    Parts {
        entry,
        transa,
        transb,
        m: m as i64,
        n: n as i64,
        k: k as i64,
        types,
        a,
        b,
        c,
        ld: (lda as i64, ldb as i64, ldc as i64),
        strides: (0, 0, 0),
        batch: 1,
        batch_form: BatchForm::Single,
        compute,
        alpha,
        beta,
        gemv: None,
    }
}

/// Hook of `cublasDgemm_v2` (f64 GEMMs: PyTorch's float64 matmul).
///
/// # Safety
/// The cuBLAS contract of `cublasDgemm_v2`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn cublasDgemm_v2(
    handle: CublasHandle,
    transa: c_int,
    transb: c_int,
    m: c_int,
    n: c_int,
    k: c_int,
    alpha: *const f64,
    a: *const f64,
    lda: c_int,
    b: *const f64,
    ldb: c_int,
    beta: *const f64,
    c: *mut f64,
    ldc: c_int,
) -> CublasStatus {
    let f: sys::DgemmFn = match real_fn(&real::DGEMM) {
        Ok(f) => f,
        Err(s) => return s,
    };
    let parts = plain(
        EntryPoint::DgemmV2,
        (transa, transb),
        (m, n, k),
        F64,
        (a.cast(), b.cast(), c.cast_const().cast()),
        (lda, ldb, ldc),
        cc::C64F,
        (alpha.cast(), beta.cast()),
    );
    audited(
        "cublasDgemm_v2",
        // SAFETY: the application's arguments, passed on unchanged.
        || unsafe { describe(handle, parts) },
        // SAFETY: the real function with the caller's arguments, exactly once.
        || unsafe {
            f(
                handle, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc,
            )
        },
    )
}

/// Hook of `cublasDgemmStridedBatched`.
///
/// # Safety
/// The cuBLAS contract of `cublasDgemmStridedBatched`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn cublasDgemmStridedBatched(
    handle: CublasHandle,
    transa: c_int,
    transb: c_int,
    m: c_int,
    n: c_int,
    k: c_int,
    alpha: *const f64,
    a: *const f64,
    lda: c_int,
    stride_a: i64,
    b: *const f64,
    ldb: c_int,
    stride_b: i64,
    beta: *const f64,
    c: *mut f64,
    ldc: c_int,
    stride_c: i64,
    batch: c_int,
) -> CublasStatus {
    let f: sys::DgemmStridedBatchedFn = match real_fn(&real::DGEMM_STRIDED_BATCHED) {
        Ok(f) => f,
        Err(s) => return s,
    };
    let mut parts = plain(
        EntryPoint::DgemmStridedBatched,
        (transa, transb),
        (m, n, k),
        F64,
        (a.cast(), b.cast(), c.cast_const().cast()),
        (lda, ldb, ldc),
        cc::C64F,
        (alpha.cast(), beta.cast()),
    );
    parts.strides = (stride_a, stride_b, stride_c);
    parts.batch = batch as i64;
    parts.batch_form = BatchForm::Strided;
    audited(
        "cublasDgemmStridedBatched",
        // SAFETY: the application's arguments, passed on unchanged.
        || unsafe { describe(handle, parts) },
        // SAFETY: the real function with the caller's arguments, exactly once.
        || unsafe {
            f(
                handle, transa, transb, m, n, k, alpha, a, lda, stride_a, b, ldb, stride_b, beta,
                c, ldc, stride_c, batch,
            )
        },
    )
}

/// Hook of `cublasSgemmEx` (f32 scalars and accumulation, A/B/C of the given types).
///
/// # Safety
/// The cuBLAS contract of `cublasSgemmEx`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn cublasSgemmEx(
    handle: CublasHandle,
    transa: c_int,
    transb: c_int,
    m: c_int,
    n: c_int,
    k: c_int,
    alpha: *const f32,
    a: *const c_void,
    a_type: c_int,
    lda: c_int,
    b: *const c_void,
    b_type: c_int,
    ldb: c_int,
    beta: *const f32,
    c: *mut c_void,
    c_type: c_int,
    ldc: c_int,
) -> CublasStatus {
    let f: sys::SgemmExFn = match real_fn(&real::SGEMM_EX) {
        Ok(f) => f,
        Err(s) => return s,
    };
    let parts = plain(
        EntryPoint::SgemmEx,
        (transa, transb),
        (m, n, k),
        (a_type, b_type, c_type),
        (a, b, c.cast_const()),
        (lda, ldb, ldc),
        cc::C32F,
        (alpha.cast(), beta.cast()),
    );
    audited(
        "cublasSgemmEx",
        // SAFETY: the application's arguments, passed on unchanged.
        || unsafe { describe(handle, parts) },
        // SAFETY: the real function with the caller's arguments, exactly once.
        || unsafe {
            f(
                handle, transa, transb, m, n, k, alpha, a, a_type, lda, b, b_type, ldb, beta, c,
                c_type, ldc,
            )
        },
    )
}

/// The shared body of `cublasSgemmBatched` and `cublasHgemmBatched`.
///
/// # Safety
/// The cuBLAS contract of those functions (the arrays live in device memory).
unsafe fn gemm_batched(
    name: &'static str,
    sym: &real::RealSym,
    (entry, types, compute): (EntryPoint, (c_int, c_int, c_int), c_int),
    handle: CublasHandle,
    (transa, transb): (c_int, c_int),
    (m, n, k): (c_int, c_int, c_int),
    (alpha, beta): (*const c_void, *const c_void),
    (a, b, c): (
        *const *const c_void,
        *const *const c_void,
        *const *mut c_void,
    ),
    (lda, ldb, ldc): (c_int, c_int, c_int),
    batch: c_int,
) -> CublasStatus {
    let f: sys::GemmBatchedFn = match real_fn(sym) {
        Ok(f) => f,
        Err(s) => return s,
    };
    let mut parts = plain(
        entry,
        (transa, transb),
        (m, n, k),
        types,
        (a.cast(), b.cast(), c.cast()),
        (lda, ldb, ldc),
        compute,
        (alpha, beta),
    );
    parts.batch = batch as i64;
    parts.batch_form = BatchForm::PointerArray;
    audited(
        name,
        // SAFETY: the application's arguments, passed on unchanged.
        || unsafe { describe(handle, parts) },
        // SAFETY: the real function with the caller's arguments, exactly once.
        || unsafe {
            f(
                handle, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, batch,
            )
        },
    )
}

/// Hook of `cublasSgemmBatched`.
///
/// # Safety
/// The cuBLAS contract of `cublasSgemmBatched`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn cublasSgemmBatched(
    handle: CublasHandle,
    transa: c_int,
    transb: c_int,
    m: c_int,
    n: c_int,
    k: c_int,
    alpha: *const f32,
    a: *const *const c_void,
    lda: c_int,
    b: *const *const c_void,
    ldb: c_int,
    beta: *const f32,
    c: *const *mut c_void,
    ldc: c_int,
    batch: c_int,
) -> CublasStatus {
    // SAFETY: forwarded from the caller's contract.
    unsafe {
        gemm_batched(
            "cublasSgemmBatched",
            &real::SGEMM_BATCHED,
            (EntryPoint::SgemmBatched, F32, cc::C32F),
            handle,
            (transa, transb),
            (m, n, k),
            (alpha.cast(), beta.cast()),
            (a, b, c),
            (lda, ldb, ldc),
            batch,
        )
    }
}

/// Hook of `cublasHgemmBatched`.
///
/// # Safety
/// The cuBLAS contract of `cublasHgemmBatched`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn cublasHgemmBatched(
    handle: CublasHandle,
    transa: c_int,
    transb: c_int,
    m: c_int,
    n: c_int,
    k: c_int,
    alpha: *const u16,
    a: *const *const c_void,
    lda: c_int,
    b: *const *const c_void,
    ldb: c_int,
    beta: *const u16,
    c: *const *mut c_void,
    ldc: c_int,
    batch: c_int,
) -> CublasStatus {
    // SAFETY: forwarded from the caller's contract.
    unsafe {
        gemm_batched(
            "cublasHgemmBatched",
            &real::HGEMM_BATCHED,
            (EntryPoint::HgemmBatched, F16, cc::C16F),
            handle,
            (transa, transb),
            (m, n, k),
            (alpha.cast(), beta.cast()),
            (a, b, c),
            (lda, ldb, ldc),
            batch,
        )
    }
}

/// The shared body of `cublasSgemv_v2` and `cublasDgemv_v2`: y = alpha op(A) x + beta y
/// is the GEMM of op(A) (M x K) and x (K x 1), x taken as the transposed 1 x K row at
/// stride incx (op(B) = T, ldb = incx) and y as the M x 1 column C = D. A y with a
/// stride other than 1, or a negative stride, is outside the model.
///
/// # Safety
/// The cuBLAS contract of those functions.
unsafe fn gemv(
    name: &'static str,
    sym: &real::RealSym,
    (entry, dtype, compute): (EntryPoint, c_int, c_int),
    handle: CublasHandle,
    trans: c_int,
    (m, n): (c_int, c_int),
    (alpha, beta): (*const c_void, *const c_void),
    (a, lda): (*const c_void, c_int),
    (x, incx): (*const c_void, c_int),
    (y, incy): (*mut c_void, c_int),
) -> CublasStatus {
    let f: sys::GemvFn = match real_fn(sym) {
        Ok(f) => f,
        Err(s) => return s,
    };
    let (rows, cols) = if trans == sys::OP_N { (m, n) } else { (n, m) };
    let mut parts = plain(
        entry,
        (trans, sys::OP_T),
        (rows, 1, cols),
        (dtype, dtype, dtype),
        (a, x, y.cast_const()),
        (lda, incx, rows.max(1)),
        compute,
        (alpha, beta),
    );
    parts.gemv = Some(if incx < 1 || incy != 1 {
        Err(format!(
            "gemv with incx = {incx}, incy = {incy}: protocol v1 describes incx >= 1 and incy = 1"
        ))
    } else {
        Ok(())
    });
    audited(
        name,
        // SAFETY: the application's arguments, passed on unchanged.
        || unsafe { describe(handle, parts) },
        // SAFETY: the real function with the caller's arguments, exactly once.
        || unsafe { f(handle, trans, m, n, alpha, a, lda, x, incx, beta, y, incy) },
    )
}

/// Hook of `cublasSgemv_v2` (PyTorch's float32 `mv`).
///
/// # Safety
/// The cuBLAS contract of `cublasSgemv_v2`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn cublasSgemv_v2(
    handle: CublasHandle,
    trans: c_int,
    m: c_int,
    n: c_int,
    alpha: *const f32,
    a: *const f32,
    lda: c_int,
    x: *const f32,
    incx: c_int,
    beta: *const f32,
    y: *mut f32,
    incy: c_int,
) -> CublasStatus {
    // SAFETY: forwarded from the caller's contract.
    unsafe {
        gemv(
            "cublasSgemv_v2",
            &real::SGEMV,
            (EntryPoint::SgemvV2, dt::R_32F, cc::C32F),
            handle,
            trans,
            (m, n),
            (alpha.cast(), beta.cast()),
            (a.cast(), lda),
            (x.cast(), incx),
            (y.cast(), incy),
        )
    }
}

/// Hook of `cublasDgemv_v2`.
///
/// # Safety
/// The cuBLAS contract of `cublasDgemv_v2`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn cublasDgemv_v2(
    handle: CublasHandle,
    trans: c_int,
    m: c_int,
    n: c_int,
    alpha: *const f64,
    a: *const f64,
    lda: c_int,
    x: *const f64,
    incx: c_int,
    beta: *const f64,
    y: *mut f64,
    incy: c_int,
) -> CublasStatus {
    // SAFETY: forwarded from the caller's contract.
    unsafe {
        gemv(
            "cublasDgemv_v2",
            &real::DGEMV,
            (EntryPoint::DgemvV2, dt::R_64F, cc::C64F),
            handle,
            trans,
            (m, n),
            (alpha.cast(), beta.cast()),
            (a.cast(), lda),
            (x.cast(), incx),
            (y.cast(), incy),
        )
    }
}

/// Most groups of one grouped call whose arrays are read (more: one record says so).
const MAX_GROUPS: c_int = 1 << 16;

/// A grouped batched call's arguments (host arrays of `group_count` entries).
#[derive(Clone, Copy)]
struct Grouped {
    entry: EntryPoint,
    transa: *const c_int,
    transb: *const c_int,
    m: *const c_int,
    n: *const c_int,
    k: *const c_int,
    types: (c_int, c_int, c_int),
    a: *const *const c_void,
    b: *const *const c_void,
    c: *const *mut c_void,
    ld: (*const c_int, *const c_int, *const c_int),
    group_count: c_int,
    group_size: *const c_int,
    compute: c_int,
    alpha: *const c_void,
    beta: *const c_void,
}

/// The shared body of the grouped hooks: group g is described as the pointer-array
/// batch of its `group_size[g]` problems (its ops, sizes, leading dimensions and
/// scalars; the arrays at the group's offset) and audited like a batched call; all
/// groups are prepared before the one forward and completed after it.
///
/// # Safety
/// The cuBLAS contract of grouped calls: each array holds `group_count` readable
/// entries, alpha and beta `group_count` scalars (read only when `group_count` is in
/// 1..=MAX_GROUPS; a count outside it is forwarded with one empty record).
unsafe fn grouped(
    name: &'static str,
    handle: CublasHandle,
    g: Grouped,
    forward: impl FnOnce() -> CublasStatus,
) -> CublasStatus {
    let readable = (1..=MAX_GROUPS).contains(&g.group_count)
        && [
            g.transa,
            g.transb,
            g.m,
            g.n,
            g.k,
            g.ld.0,
            g.ld.1,
            g.ld.2,
            g.group_size,
        ]
        .iter()
        .all(|p| !p.is_null());
    let scalar = blas_scale_type(g.compute).size();
    let parts = |i: usize, offset: usize| {
        // SAFETY: i < group_count <= MAX_GROUPS (checked above), per the caller's
        // contract every array has group_count entries.
        let at = |p: *const c_int| unsafe { *p.add(i) };
        Parts {
            entry: g.entry,
            transa: at(g.transa),
            transb: at(g.transb),
            m: at(g.m) as i64,
            n: at(g.n) as i64,
            k: at(g.k) as i64,
            types: g.types,
            a: (g.a as usize + 8 * offset) as *const c_void,
            b: (g.b as usize + 8 * offset) as *const c_void,
            c: (g.c as usize + 8 * offset) as *const c_void,
            ld: (at(g.ld.0) as i64, at(g.ld.1) as i64, at(g.ld.2) as i64),
            strides: (0, 0, 0),
            batch: at(g.group_size) as i64,
            batch_form: BatchForm::PointerArray,
            compute: g.compute,
            alpha: (g.alpha as usize + i * scalar) as *const c_void,
            beta: (g.beta as usize + i * scalar) as *const c_void,
            gemv: None,
        }
    };
    let mut describes: Vec<super::Describe<'_>> = Vec::new();
    if readable {
        let mut offset = 0usize;
        for i in 0..g.group_count as usize {
            let p = parts(i, offset);
            offset += p.batch.max(0) as usize;
            // SAFETY: the application's arguments, as the caller's contract gives them.
            describes.push(Box::new(move || unsafe { describe(handle, p) }));
        }
    } else {
        let mut p = parts(0, 0);
        (p.m, p.n, p.k, p.batch) = (0, 0, 0, 0);
        p.gemv = Some(Err(format!("a grouped call with {} groups", g.group_count)));
        // SAFETY: as above (nothing of the arrays is read).
        describes.push(Box::new(move || unsafe { describe(handle, p) }));
    }
    super::audited_many(name, describes, forward)
}

/// Hook of `cublasGemmGroupedBatchedEx` (SGLang's grouped GEMM for mixture-of-experts
/// layers).
///
/// # Safety
/// The cuBLAS contract of `cublasGemmGroupedBatchedEx`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn cublasGemmGroupedBatchedEx(
    handle: CublasHandle,
    transa: *const c_int,
    transb: *const c_int,
    m: *const c_int,
    n: *const c_int,
    k: *const c_int,
    alpha: *const c_void,
    a: *const *const c_void,
    a_type: c_int,
    lda: *const c_int,
    b: *const *const c_void,
    b_type: c_int,
    ldb: *const c_int,
    beta: *const c_void,
    c: *const *mut c_void,
    c_type: c_int,
    ldc: *const c_int,
    group_count: c_int,
    group_size: *const c_int,
    compute: c_int,
) -> CublasStatus {
    let f: sys::GemmGroupedBatchedExFn = match real_fn(&real::GEMM_GROUPED_BATCHED_EX) {
        Ok(f) => f,
        Err(s) => return s,
    };
    let g = Grouped {
        entry: EntryPoint::GemmGroupedBatchedEx,
        transa,
        transb,
        m,
        n,
        k,
        types: (a_type, b_type, c_type),
        a,
        b,
        c,
        ld: (lda, ldb, ldc),
        group_count,
        group_size,
        compute,
        alpha,
        beta,
    };
    // SAFETY: forwarded from the caller's contract; the real function is called with
    // the caller's arguments, exactly once.
    unsafe {
        grouped("cublasGemmGroupedBatchedEx", handle, g, || {
            f(
                handle,
                transa,
                transb,
                m,
                n,
                k,
                alpha,
                a,
                a_type,
                lda,
                b,
                b_type,
                ldb,
                beta,
                c,
                c_type,
                ldc,
                group_count,
                group_size,
                compute,
            )
        })
    }
}

/// Hook of `cublasSgemmGroupedBatched`.
///
/// # Safety
/// The cuBLAS contract of `cublasSgemmGroupedBatched`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn cublasSgemmGroupedBatched(
    handle: CublasHandle,
    transa: *const c_int,
    transb: *const c_int,
    m: *const c_int,
    n: *const c_int,
    k: *const c_int,
    alpha: *const f32,
    a: *const *const c_void,
    lda: *const c_int,
    b: *const *const c_void,
    ldb: *const c_int,
    beta: *const f32,
    c: *const *mut c_void,
    ldc: *const c_int,
    group_count: c_int,
    group_size: *const c_int,
) -> CublasStatus {
    let f: sys::SgemmGroupedBatchedFn = match real_fn(&real::SGEMM_GROUPED_BATCHED) {
        Ok(f) => f,
        Err(s) => return s,
    };
    let g = Grouped {
        entry: EntryPoint::SgemmGroupedBatched,
        transa,
        transb,
        m,
        n,
        k,
        types: F32,
        a,
        b,
        c,
        ld: (lda, ldb, ldc),
        group_count,
        group_size,
        compute: cc::C32F,
        alpha: alpha.cast(),
        beta: beta.cast(),
    };
    // SAFETY: as above.
    unsafe {
        grouped("cublasSgemmGroupedBatched", handle, g, || {
            f(
                handle,
                transa,
                transb,
                m,
                n,
                k,
                alpha,
                a,
                lda,
                b,
                ldb,
                beta,
                c,
                ldc,
                group_count,
                group_size,
            )
        })
    }
}

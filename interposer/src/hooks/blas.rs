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

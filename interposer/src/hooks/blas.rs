//! The cuBLAS GEMM exports. Each one describes its call from its arguments and the
//! handle's state (stream, pointer mode, math mode, read through the real getters of
//! the same library) and hands everything to the shared hook body (`hooks::audited`).

#![allow(non_snake_case, clippy::too_many_arguments)]

use std::ffi::{c_int, c_void};

use mmaudit_protocol::call::{BatchForm, EntryPoint};

use super::{audited, handle, missing, site_of, Call, Unmodelled};
use crate::model::{
    blas_scale_type, describe_blas, unmodelled_blas, BlasArgs, NotDescribed, ScalarArg,
};
use crate::real;
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
    /// Why the call is outside the model whatever its values (complex types, a gemv
    /// stride protocol v1 cannot describe, ...), when it is.
    refused: Option<String>,
    /// gemv: no tensor-core path, so the handle's math mode does not apply.
    no_math_mode: bool,
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
    let size = blas_scale_type(p.compute).size();
    // A handle the library follows is read from its table; any other through the
    // real getters.
    // SAFETY: the caller's contract.
    let followed = unsafe { handle::lookup_for(handle, [p.alpha, p.beta], size) };
    let settings = match followed {
        Some(s) => Ok(s),
        // SAFETY: the caller's contract.
        None => unsafe { handle::read(handle) },
    };
    let (stream, mode, mut math) = match &settings {
        Ok(s) => (s.stream as sys::Stream, Some(s.pointer_mode), s.math_mode),
        Err(_) => (std::ptr::null_mut(), None, 0),
    };
    let state = settings.map(drop);
    let state = match &p.refused {
        Some(why) => state.and(Err(NotDescribed::Unsupported(why.clone()))),
        None => state,
    };
    if p.no_math_mode {
        math = 0;
    }
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
            followed: followed.map(|s| super::Followed::Handle(handle, s)),
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

const F64: (c_int, c_int, c_int) = (dt::R_64F, dt::R_64F, dt::R_64F);
const C32: (c_int, c_int, c_int) = (dt::C_32F, dt::C_32F, dt::C_32F);
const C64: (c_int, c_int, c_int) = (dt::C_64F, dt::C_64F, dt::C_64F);

/// Why every complex GEMM is outside the model.
const COMPLEX: &str = "complex GEMMs are outside protocol v1 (it has no complex types)";

/// The [`Parts`] of a plain (not batched) GEMM; sizes widened from the entry point's
/// integer type.
fn plain(
    entry: EntryPoint,
    (transa, transb): (c_int, c_int),
    (m, n, k): (i64, i64, i64),
    types: (c_int, c_int, c_int),
    (a, b, c): (*const c_void, *const c_void, *const c_void),
    ld: (i64, i64, i64),
    compute: c_int,
    (alpha, beta): (*const c_void, *const c_void),
) -> Parts {
    let refused = [types.0, types.1, types.2]
        .iter()
        .any(|&t| t == dt::C_32F || t == dt::C_64F)
        .then(|| COMPLEX.to_owned());
    Parts {
        entry,
        transa,
        transb,
        m,
        n,
        k,
        types,
        a,
        b,
        c,
        ld,
        strides: (0, 0, 0),
        batch: 1,
        batch_form: BatchForm::Single,
        compute,
        alpha,
        beta,
        refused,
        no_math_mode: false,
    }
}

/// `parts` as a strided batch.
fn strided(mut parts: Parts, strides: (i64, i64, i64), batch: i64) -> Parts {
    parts.strides = strides;
    parts.batch = batch;
    parts.batch_form = BatchForm::Strided;
    parts
}

/// `parts` as a batch of `batch` problems given by device arrays of pointers.
fn pointer_array(mut parts: Parts, batch: i64) -> Parts {
    parts.batch = batch;
    parts.batch_form = BatchForm::PointerArray;
    parts
}

/// The [`Parts`] of a gemv `y = alpha op(A) x + beta y`: the GEMM of op(A) (M x K) and
/// x (K x 1), x taken as the transposed 1 x K row at stride incx (op(B) = T, ldb =
/// incx) and y as the M x 1 column C = D. A y with a stride other than 1, or a
/// negative stride, is outside the model; gemv has no tensor-core path, so the
/// handle's math mode does not apply.
fn gemv(
    (entry, dtype, compute): (EntryPoint, c_int, c_int),
    trans: c_int,
    (m, n): (i64, i64),
    (alpha, beta): (*const c_void, *const c_void),
    (a, lda): (*const c_void, i64),
    (x, incx): (*const c_void, i64),
    (y, incy): (*const c_void, i64),
) -> Parts {
    let (rows, cols) = if trans == sys::OP_N { (m, n) } else { (n, m) };
    let mut parts = plain(
        entry,
        (trans, sys::OP_T),
        (rows, 1, cols),
        (dtype, dtype, dtype),
        (a, x, y),
        (lda, incx, rows.max(1)),
        compute,
        (alpha, beta),
    );
    parts.no_math_mode = true;
    if parts.refused.is_none() && (incx < 1 || incy != 1) {
        parts.refused = Some(format!(
            "gemv with incx = {incx}, incy = {incy}: protocol v1 describes incx >= 1 and incy = 1"
        ));
    }
    parts
}

/// Describes and audits a call of one GEMM record.
///
/// # Safety
/// `handle` and the pointers in `parts` are the application's arguments.
unsafe fn one(
    name: &'static str,
    handle: CublasHandle,
    parts: Parts,
    forward: impl FnOnce() -> CublasStatus,
) -> CublasStatus {
    // SAFETY: the caller's contract.
    audited(name, || unsafe { describe(handle, parts) }, forward)
}

/// Most groups of one grouped call whose arrays are read (more: one record says so).
const MAX_GROUPS: i64 = 1 << 16;

/// A grouped batched call's arguments: host arrays of `group_count` entries of the
/// entry point's integer type `I` (`c_int`, or `i64` for the `_64` forms).
#[derive(Clone, Copy)]
struct Grouped<I> {
    entry: EntryPoint,
    transa: *const c_int,
    transb: *const c_int,
    m: *const I,
    n: *const I,
    k: *const I,
    types: (c_int, c_int, c_int),
    a: *const *const c_void,
    b: *const *const c_void,
    c: *const *mut c_void,
    ld: (*const I, *const I, *const I),
    group_count: i64,
    group_size: *const I,
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
unsafe fn grouped<I: Copy + Into<i64> + 'static>(
    name: &'static str,
    handle: CublasHandle,
    g: Grouped<I>,
    forward: impl FnOnce() -> CublasStatus,
) -> CublasStatus {
    let arrays = [g.m, g.n, g.k, g.ld.0, g.ld.1, g.ld.2, g.group_size];
    let readable = (1..=MAX_GROUPS).contains(&g.group_count)
        && !g.transa.is_null()
        && !g.transb.is_null()
        && arrays.iter().all(|p| !p.is_null());
    let scalar = blas_scale_type(g.compute).size();
    let parts = |i: usize, offset: usize| {
        // SAFETY: i < group_count <= MAX_GROUPS (checked above), per the caller's
        // contract every array has group_count entries.
        let at = |p: *const I| -> i64 { unsafe { *p.add(i) }.into() };
        // SAFETY: as above.
        let op = |p: *const c_int| unsafe { *p.add(i) };
        pointer_array(
            plain(
                g.entry,
                (op(g.transa), op(g.transb)),
                (at(g.m), at(g.n), at(g.k)),
                g.types,
                (
                    (g.a as usize + 8 * offset) as *const c_void,
                    (g.b as usize + 8 * offset) as *const c_void,
                    (g.c as usize + 8 * offset) as *const c_void,
                ),
                (at(g.ld.0), at(g.ld.1), at(g.ld.2)),
                g.compute,
                (
                    (g.alpha as usize + i * scalar) as *const c_void,
                    (g.beta as usize + i * scalar) as *const c_void,
                ),
            ),
            at(g.group_size),
        )
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
        let mut p = pointer_array(
            plain(
                g.entry,
                (sys::OP_N, sys::OP_N),
                (0, 0, 0),
                g.types,
                (g.a.cast(), g.b.cast(), g.c.cast()),
                (1, 1, 1),
                g.compute,
                (g.alpha, g.beta),
            ),
            0,
        );
        p.refused = Some(format!("a grouped call with {} groups", g.group_count));
        // SAFETY: as above (nothing of the arrays is read).
        describes.push(Box::new(move || unsafe { describe(handle, p) }));
    }
    super::audited_many(name, describes, forward)
}

/// Defines exported hooks from a table, and [`address_of`] for them. Each entry names
/// the export, its real symbol in [`real`] and the C signature (the first argument is
/// `handle`); its body is an expression that describes and audits the call, given
/// `forward`, which calls the real function with the caller's arguments exactly once.
/// A real function that cannot be found answers as cuBLAS would without it.
macro_rules! exports {
    ($(
        $(#[$doc:meta])*
        fn $name:ident = $sym:ident ($($arg:ident: $ty:ty),* $(,)?) |$fwd:ident| $body:expr;
    )*) => {
        $(
            $(#[$doc])*
            ///
            /// # Safety
            #[doc = concat!("The cuBLAS contract of `", stringify!($name), "`.")]
            #[cfg_attr(not(test), no_mangle)]
            pub unsafe extern "C" fn $name($($arg: $ty),*) -> CublasStatus {
                type Real = unsafe extern "C" fn($($ty),*) -> CublasStatus;
                let f: Real = match real_fn(&real::$sym) {
                    Ok(f) => f,
                    Err(s) => return s,
                };
                // SAFETY: the real function with the caller's arguments, exactly once.
                let $fwd = move || unsafe { f($($arg),*) };
                // SAFETY: the body reads the arguments only as the cuBLAS contract of
                // this function allows (the caller's contract).
                #[allow(unused_unsafe)]
                unsafe { $body }
            }
        )*

        /// The address of a hook defined by [`exports!`], by symbol name.
        pub(crate) fn address_of(name: &[u8]) -> Option<usize> {
            $(
                if name == stringify!($name).as_bytes() {
                    return Some($name as *const () as usize);
                }
            )*
            None
        }
    };
}

type Ptr = *const c_void;
type Arr = *const *const c_void;
type OutArr = *const *mut c_void;

exports! {
    fn cublasSgemm_v2 = SGEMM(handle: CublasHandle, transa: c_int, transb: c_int, m: c_int,
        n: c_int, k: c_int, alpha: *const f32, a: Ptr, lda: c_int, b: Ptr, ldb: c_int,
        beta: *const f32, c: *mut c_void, ldc: c_int)
    |forward| one("cublasSgemm_v2", handle, plain(EntryPoint::SgemmV2, (transa, transb),
        (m.into(), n.into(), k.into()), F32, (a, b, c.cast_const()),
        (lda.into(), ldb.into(), ldc.into()), cc::C32F, (alpha.cast(), beta.cast())), forward);

    fn cublasSgemm_v2_64 = SGEMM_64(handle: CublasHandle, transa: c_int, transb: c_int, m: i64,
        n: i64, k: i64, alpha: *const f32, a: Ptr, lda: i64, b: Ptr, ldb: i64,
        beta: *const f32, c: *mut c_void, ldc: i64)
    |forward| one("cublasSgemm_v2_64", handle, plain(EntryPoint::SgemmV264, (transa, transb),
        (m, n, k), F32, (a, b, c.cast_const()), (lda, ldb, ldc), cc::C32F,
        (alpha.cast(), beta.cast())), forward);

    fn cublasHgemm = HGEMM(handle: CublasHandle, transa: c_int, transb: c_int, m: c_int,
        n: c_int, k: c_int, alpha: Ptr, a: Ptr, lda: c_int, b: Ptr, ldb: c_int, beta: Ptr,
        c: *mut c_void, ldc: c_int)
    |forward| one("cublasHgemm", handle, plain(EntryPoint::Hgemm, (transa, transb),
        (m.into(), n.into(), k.into()), F16, (a, b, c.cast_const()),
        (lda.into(), ldb.into(), ldc.into()), cc::C16F, (alpha, beta)), forward);

    fn cublasSgemmStridedBatched = SGEMM_STRIDED_BATCHED(handle: CublasHandle, transa: c_int,
        transb: c_int, m: c_int, n: c_int, k: c_int, alpha: *const f32, a: Ptr, lda: c_int,
        stride_a: i64, b: Ptr, ldb: c_int, stride_b: i64, beta: *const f32, c: *mut c_void,
        ldc: c_int, stride_c: i64, batch: c_int)
    |forward| one("cublasSgemmStridedBatched", handle, strided(plain(
        EntryPoint::SgemmStridedBatched, (transa, transb), (m.into(), n.into(), k.into()), F32,
        (a, b, c.cast_const()), (lda.into(), ldb.into(), ldc.into()), cc::C32F,
        (alpha.cast(), beta.cast())), (stride_a, stride_b, stride_c), batch.into()), forward);

    fn cublasHgemmStridedBatched = HGEMM_STRIDED_BATCHED(handle: CublasHandle, transa: c_int,
        transb: c_int, m: c_int, n: c_int, k: c_int, alpha: Ptr, a: Ptr, lda: c_int,
        stride_a: i64, b: Ptr, ldb: c_int, stride_b: i64, beta: Ptr, c: *mut c_void,
        ldc: c_int, stride_c: i64, batch: c_int)
    |forward| one("cublasHgemmStridedBatched", handle, strided(plain(
        EntryPoint::HgemmStridedBatched, (transa, transb), (m.into(), n.into(), k.into()), F16,
        (a, b, c.cast_const()), (lda.into(), ldb.into(), ldc.into()), cc::C16F, (alpha, beta)),
        (stride_a, stride_b, stride_c), batch.into()), forward);

    fn cublasGemmEx = GEMM_EX(handle: CublasHandle, transa: c_int, transb: c_int, m: c_int,
        n: c_int, k: c_int, alpha: Ptr, a: Ptr, a_type: c_int, lda: c_int, b: Ptr,
        b_type: c_int, ldb: c_int, beta: Ptr, c: *mut c_void, c_type: c_int, ldc: c_int,
        compute: c_int, algo: c_int)
    |forward| one("cublasGemmEx", handle, plain(EntryPoint::GemmEx, (transa, transb),
        (m.into(), n.into(), k.into()), (a_type, b_type, c_type), (a, b, c.cast_const()),
        (lda.into(), ldb.into(), ldc.into()), compute, (alpha, beta)), forward);

    fn cublasGemmEx_64 = GEMM_EX_64(handle: CublasHandle, transa: c_int, transb: c_int,
        m: i64, n: i64, k: i64, alpha: Ptr, a: Ptr, a_type: c_int, lda: i64, b: Ptr,
        b_type: c_int, ldb: i64, beta: Ptr, c: *mut c_void, c_type: c_int, ldc: i64,
        compute: c_int, algo: c_int)
    |forward| one("cublasGemmEx_64", handle, plain(EntryPoint::GemmEx64, (transa, transb),
        (m, n, k), (a_type, b_type, c_type), (a, b, c.cast_const()), (lda, ldb, ldc), compute,
        (alpha, beta)), forward);

    fn cublasGemmStridedBatchedEx = GEMM_STRIDED_BATCHED_EX(handle: CublasHandle,
        transa: c_int, transb: c_int, m: c_int, n: c_int, k: c_int, alpha: Ptr, a: Ptr,
        a_type: c_int, lda: c_int, stride_a: i64, b: Ptr, b_type: c_int, ldb: c_int,
        stride_b: i64, beta: Ptr, c: *mut c_void, c_type: c_int, ldc: c_int, stride_c: i64,
        batch: c_int, compute: c_int, algo: c_int)
    |forward| one("cublasGemmStridedBatchedEx", handle, strided(plain(
        EntryPoint::GemmStridedBatchedEx, (transa, transb), (m.into(), n.into(), k.into()),
        (a_type, b_type, c_type), (a, b, c.cast_const()), (lda.into(), ldb.into(), ldc.into()),
        compute, (alpha, beta)), (stride_a, stride_b, stride_c), batch.into()), forward);

    fn cublasGemmStridedBatchedEx_64 = GEMM_STRIDED_BATCHED_EX_64(handle: CublasHandle,
        transa: c_int, transb: c_int, m: i64, n: i64, k: i64, alpha: Ptr, a: Ptr,
        a_type: c_int, lda: i64, stride_a: i64, b: Ptr, b_type: c_int, ldb: i64,
        stride_b: i64, beta: Ptr, c: *mut c_void, c_type: c_int, ldc: i64, stride_c: i64,
        batch: i64, compute: c_int, algo: c_int)
    |forward| one("cublasGemmStridedBatchedEx_64", handle, strided(plain(
        EntryPoint::GemmStridedBatchedEx64, (transa, transb), (m, n, k),
        (a_type, b_type, c_type), (a, b, c.cast_const()), (lda, ldb, ldc), compute,
        (alpha, beta)), (stride_a, stride_b, stride_c), batch), forward);

    /// The arrays live in device memory.
    fn cublasGemmBatchedEx = GEMM_BATCHED_EX(handle: CublasHandle, transa: c_int,
        transb: c_int, m: c_int, n: c_int, k: c_int, alpha: Ptr, a: Arr, a_type: c_int,
        lda: c_int, b: Arr, b_type: c_int, ldb: c_int, beta: Ptr, c: OutArr, c_type: c_int,
        ldc: c_int, batch: c_int, compute: c_int, algo: c_int)
    |forward| one("cublasGemmBatchedEx", handle, pointer_array(plain(
        EntryPoint::GemmBatchedEx, (transa, transb), (m.into(), n.into(), k.into()),
        (a_type, b_type, c_type), (a.cast(), b.cast(), c.cast()),
        (lda.into(), ldb.into(), ldc.into()), compute, (alpha, beta)), batch.into()), forward);

    fn cublasGemmBatchedEx_64 = GEMM_BATCHED_EX_64(handle: CublasHandle, transa: c_int,
        transb: c_int, m: i64, n: i64, k: i64, alpha: Ptr, a: Arr, a_type: c_int, lda: i64,
        b: Arr, b_type: c_int, ldb: i64, beta: Ptr, c: OutArr, c_type: c_int, ldc: i64,
        batch: i64, compute: c_int, algo: c_int)
    |forward| one("cublasGemmBatchedEx_64", handle, pointer_array(plain(
        EntryPoint::GemmBatchedEx64, (transa, transb), (m, n, k), (a_type, b_type, c_type),
        (a.cast(), b.cast(), c.cast()), (lda, ldb, ldc), compute, (alpha, beta)), batch),
        forward);

    /// f64 GEMMs: PyTorch's float64 matmul.
    fn cublasDgemm_v2 = DGEMM(handle: CublasHandle, transa: c_int, transb: c_int, m: c_int,
        n: c_int, k: c_int, alpha: *const f64, a: Ptr, lda: c_int, b: Ptr, ldb: c_int,
        beta: *const f64, c: *mut c_void, ldc: c_int)
    |forward| one("cublasDgemm_v2", handle, plain(EntryPoint::DgemmV2, (transa, transb),
        (m.into(), n.into(), k.into()), F64, (a, b, c.cast_const()),
        (lda.into(), ldb.into(), ldc.into()), cc::C64F, (alpha.cast(), beta.cast())), forward);

    fn cublasDgemm_v2_64 = DGEMM_64(handle: CublasHandle, transa: c_int, transb: c_int, m: i64,
        n: i64, k: i64, alpha: *const f64, a: Ptr, lda: i64, b: Ptr, ldb: i64,
        beta: *const f64, c: *mut c_void, ldc: i64)
    |forward| one("cublasDgemm_v2_64", handle, plain(EntryPoint::DgemmV264, (transa, transb),
        (m, n, k), F64, (a, b, c.cast_const()), (lda, ldb, ldc), cc::C64F,
        (alpha.cast(), beta.cast())), forward);

    fn cublasHgemm_64 = HGEMM_64(handle: CublasHandle, transa: c_int, transb: c_int, m: i64,
        n: i64, k: i64, alpha: Ptr, a: Ptr, lda: i64, b: Ptr, ldb: i64, beta: Ptr,
        c: *mut c_void, ldc: i64)
    |forward| one("cublasHgemm_64", handle, plain(EntryPoint::Hgemm64, (transa, transb),
        (m, n, k), F16, (a, b, c.cast_const()), (lda, ldb, ldc), cc::C16F, (alpha, beta)),
        forward);

    fn cublasDgemmStridedBatched = DGEMM_STRIDED_BATCHED(handle: CublasHandle, transa: c_int,
        transb: c_int, m: c_int, n: c_int, k: c_int, alpha: *const f64, a: Ptr, lda: c_int,
        stride_a: i64, b: Ptr, ldb: c_int, stride_b: i64, beta: *const f64, c: *mut c_void,
        ldc: c_int, stride_c: i64, batch: c_int)
    |forward| one("cublasDgemmStridedBatched", handle, strided(plain(
        EntryPoint::DgemmStridedBatched, (transa, transb), (m.into(), n.into(), k.into()), F64,
        (a, b, c.cast_const()), (lda.into(), ldb.into(), ldc.into()), cc::C64F,
        (alpha.cast(), beta.cast())), (stride_a, stride_b, stride_c), batch.into()), forward);

    fn cublasDgemmStridedBatched_64 = DGEMM_STRIDED_BATCHED_64(handle: CublasHandle,
        transa: c_int, transb: c_int, m: i64, n: i64, k: i64, alpha: *const f64, a: Ptr,
        lda: i64, stride_a: i64, b: Ptr, ldb: i64, stride_b: i64, beta: *const f64,
        c: *mut c_void, ldc: i64, stride_c: i64, batch: i64)
    |forward| one("cublasDgemmStridedBatched_64", handle, strided(plain(
        EntryPoint::DgemmStridedBatched64, (transa, transb), (m, n, k), F64,
        (a, b, c.cast_const()), (lda, ldb, ldc), cc::C64F, (alpha.cast(), beta.cast())),
        (stride_a, stride_b, stride_c), batch), forward);

    fn cublasSgemmStridedBatched_64 = SGEMM_STRIDED_BATCHED_64(handle: CublasHandle,
        transa: c_int, transb: c_int, m: i64, n: i64, k: i64, alpha: *const f32, a: Ptr,
        lda: i64, stride_a: i64, b: Ptr, ldb: i64, stride_b: i64, beta: *const f32,
        c: *mut c_void, ldc: i64, stride_c: i64, batch: i64)
    |forward| one("cublasSgemmStridedBatched_64", handle, strided(plain(
        EntryPoint::SgemmStridedBatched64, (transa, transb), (m, n, k), F32,
        (a, b, c.cast_const()), (lda, ldb, ldc), cc::C32F, (alpha.cast(), beta.cast())),
        (stride_a, stride_b, stride_c), batch), forward);

    fn cublasHgemmStridedBatched_64 = HGEMM_STRIDED_BATCHED_64(handle: CublasHandle,
        transa: c_int, transb: c_int, m: i64, n: i64, k: i64, alpha: Ptr, a: Ptr, lda: i64,
        stride_a: i64, b: Ptr, ldb: i64, stride_b: i64, beta: Ptr, c: *mut c_void, ldc: i64,
        stride_c: i64, batch: i64)
    |forward| one("cublasHgemmStridedBatched_64", handle, strided(plain(
        EntryPoint::HgemmStridedBatched64, (transa, transb), (m, n, k), F16,
        (a, b, c.cast_const()), (lda, ldb, ldc), cc::C16F, (alpha, beta)),
        (stride_a, stride_b, stride_c), batch), forward);

    /// f32 scalars and accumulation, A/B/C of the given types.
    fn cublasSgemmEx = SGEMM_EX(handle: CublasHandle, transa: c_int, transb: c_int, m: c_int,
        n: c_int, k: c_int, alpha: *const f32, a: Ptr, a_type: c_int, lda: c_int, b: Ptr,
        b_type: c_int, ldb: c_int, beta: *const f32, c: *mut c_void, c_type: c_int, ldc: c_int)
    |forward| one("cublasSgemmEx", handle, plain(EntryPoint::SgemmEx, (transa, transb),
        (m.into(), n.into(), k.into()), (a_type, b_type, c_type), (a, b, c.cast_const()),
        (lda.into(), ldb.into(), ldc.into()), cc::C32F, (alpha.cast(), beta.cast())), forward);

    fn cublasSgemmEx_64 = SGEMM_EX_64(handle: CublasHandle, transa: c_int, transb: c_int,
        m: i64, n: i64, k: i64, alpha: *const f32, a: Ptr, a_type: c_int, lda: i64, b: Ptr,
        b_type: c_int, ldb: i64, beta: *const f32, c: *mut c_void, c_type: c_int, ldc: i64)
    |forward| one("cublasSgemmEx_64", handle, plain(EntryPoint::SgemmEx64, (transa, transb),
        (m, n, k), (a_type, b_type, c_type), (a, b, c.cast_const()), (lda, ldb, ldc),
        cc::C32F, (alpha.cast(), beta.cast())), forward);

    fn cublasSgemmBatched = SGEMM_BATCHED(handle: CublasHandle, transa: c_int, transb: c_int,
        m: c_int, n: c_int, k: c_int, alpha: *const f32, a: Arr, lda: c_int, b: Arr,
        ldb: c_int, beta: *const f32, c: OutArr, ldc: c_int, batch: c_int)
    |forward| one("cublasSgemmBatched", handle, pointer_array(plain(EntryPoint::SgemmBatched,
        (transa, transb), (m.into(), n.into(), k.into()), F32, (a.cast(), b.cast(), c.cast()),
        (lda.into(), ldb.into(), ldc.into()), cc::C32F, (alpha.cast(), beta.cast())),
        batch.into()), forward);

    fn cublasSgemmBatched_64 = SGEMM_BATCHED_64(handle: CublasHandle, transa: c_int,
        transb: c_int, m: i64, n: i64, k: i64, alpha: *const f32, a: Arr, lda: i64, b: Arr,
        ldb: i64, beta: *const f32, c: OutArr, ldc: i64, batch: i64)
    |forward| one("cublasSgemmBatched_64", handle, pointer_array(plain(
        EntryPoint::SgemmBatched64, (transa, transb), (m, n, k), F32,
        (a.cast(), b.cast(), c.cast()), (lda, ldb, ldc), cc::C32F,
        (alpha.cast(), beta.cast())), batch), forward);

    fn cublasHgemmBatched = HGEMM_BATCHED(handle: CublasHandle, transa: c_int, transb: c_int,
        m: c_int, n: c_int, k: c_int, alpha: Ptr, a: Arr, lda: c_int, b: Arr, ldb: c_int,
        beta: Ptr, c: OutArr, ldc: c_int, batch: c_int)
    |forward| one("cublasHgemmBatched", handle, pointer_array(plain(EntryPoint::HgemmBatched,
        (transa, transb), (m.into(), n.into(), k.into()), F16, (a.cast(), b.cast(), c.cast()),
        (lda.into(), ldb.into(), ldc.into()), cc::C16F, (alpha, beta)), batch.into()), forward);

    fn cublasHgemmBatched_64 = HGEMM_BATCHED_64(handle: CublasHandle, transa: c_int,
        transb: c_int, m: i64, n: i64, k: i64, alpha: Ptr, a: Arr, lda: i64, b: Arr, ldb: i64,
        beta: Ptr, c: OutArr, ldc: i64, batch: i64)
    |forward| one("cublasHgemmBatched_64", handle, pointer_array(plain(
        EntryPoint::HgemmBatched64, (transa, transb), (m, n, k), F16,
        (a.cast(), b.cast(), c.cast()), (lda, ldb, ldc), cc::C16F, (alpha, beta)), batch),
        forward);

    fn cublasDgemmBatched = DGEMM_BATCHED(handle: CublasHandle, transa: c_int, transb: c_int,
        m: c_int, n: c_int, k: c_int, alpha: *const f64, a: Arr, lda: c_int, b: Arr,
        ldb: c_int, beta: *const f64, c: OutArr, ldc: c_int, batch: c_int)
    |forward| one("cublasDgemmBatched", handle, pointer_array(plain(EntryPoint::DgemmBatched,
        (transa, transb), (m.into(), n.into(), k.into()), F64, (a.cast(), b.cast(), c.cast()),
        (lda.into(), ldb.into(), ldc.into()), cc::C64F, (alpha.cast(), beta.cast())),
        batch.into()), forward);

    fn cublasDgemmBatched_64 = DGEMM_BATCHED_64(handle: CublasHandle, transa: c_int,
        transb: c_int, m: i64, n: i64, k: i64, alpha: *const f64, a: Arr, lda: i64, b: Arr,
        ldb: i64, beta: *const f64, c: OutArr, ldc: i64, batch: i64)
    |forward| one("cublasDgemmBatched_64", handle, pointer_array(plain(
        EntryPoint::DgemmBatched64, (transa, transb), (m, n, k), F64,
        (a.cast(), b.cast(), c.cast()), (lda, ldb, ldc), cc::C64F,
        (alpha.cast(), beta.cast())), batch), forward);

    /// PyTorch's float32 `mv`; a GEMM with n = 1.
    fn cublasSgemv_v2 = SGEMV(handle: CublasHandle, trans: c_int, m: c_int, n: c_int,
        alpha: *const f32, a: Ptr, lda: c_int, x: Ptr, incx: c_int, beta: *const f32,
        y: *mut c_void, incy: c_int)
    |forward| one("cublasSgemv_v2", handle, gemv((EntryPoint::SgemvV2, dt::R_32F, cc::C32F),
        trans, (m.into(), n.into()), (alpha.cast(), beta.cast()), (a, lda.into()),
        (x, incx.into()), (y.cast_const(), incy.into())), forward);

    fn cublasSgemv_v2_64 = SGEMV_64(handle: CublasHandle, trans: c_int, m: i64, n: i64,
        alpha: *const f32, a: Ptr, lda: i64, x: Ptr, incx: i64, beta: *const f32,
        y: *mut c_void, incy: i64)
    |forward| one("cublasSgemv_v2_64", handle, gemv((EntryPoint::SgemvV264, dt::R_32F,
        cc::C32F), trans, (m, n), (alpha.cast(), beta.cast()), (a, lda), (x, incx),
        (y.cast_const(), incy)), forward);

    fn cublasDgemv_v2 = DGEMV(handle: CublasHandle, trans: c_int, m: c_int, n: c_int,
        alpha: *const f64, a: Ptr, lda: c_int, x: Ptr, incx: c_int, beta: *const f64,
        y: *mut c_void, incy: c_int)
    |forward| one("cublasDgemv_v2", handle, gemv((EntryPoint::DgemvV2, dt::R_64F, cc::C64F),
        trans, (m.into(), n.into()), (alpha.cast(), beta.cast()), (a, lda.into()),
        (x, incx.into()), (y.cast_const(), incy.into())), forward);

    fn cublasDgemv_v2_64 = DGEMV_64(handle: CublasHandle, trans: c_int, m: i64, n: i64,
        alpha: *const f64, a: Ptr, lda: i64, x: Ptr, incx: i64, beta: *const f64,
        y: *mut c_void, incy: i64)
    |forward| one("cublasDgemv_v2_64", handle, gemv((EntryPoint::DgemvV264, dt::R_64F,
        cc::C64F), trans, (m, n), (alpha.cast(), beta.cast()), (a, lda), (x, incx),
        (y.cast_const(), incy)), forward);

    /// SGLang's grouped GEMM for mixture-of-experts layers; one record per group.
    fn cublasGemmGroupedBatchedEx = GEMM_GROUPED_BATCHED_EX(handle: CublasHandle,
        transa: *const c_int, transb: *const c_int, m: *const c_int, n: *const c_int,
        k: *const c_int, alpha: Ptr, a: Arr, a_type: c_int, lda: *const c_int, b: Arr,
        b_type: c_int, ldb: *const c_int, beta: Ptr, c: OutArr, c_type: c_int,
        ldc: *const c_int, group_count: c_int, group_size: *const c_int, compute: c_int)
    |forward| grouped("cublasGemmGroupedBatchedEx", handle, Grouped {
        entry: EntryPoint::GemmGroupedBatchedEx, transa, transb, m, n, k,
        types: (a_type, b_type, c_type), a, b, c, ld: (lda, ldb, ldc),
        group_count: group_count.into(), group_size, compute, alpha, beta }, forward);

    fn cublasGemmGroupedBatchedEx_64 = GEMM_GROUPED_BATCHED_EX_64(handle: CublasHandle,
        transa: *const c_int, transb: *const c_int, m: *const i64, n: *const i64,
        k: *const i64, alpha: Ptr, a: Arr, a_type: c_int, lda: *const i64, b: Arr,
        b_type: c_int, ldb: *const i64, beta: Ptr, c: OutArr, c_type: c_int,
        ldc: *const i64, group_count: i64, group_size: *const i64, compute: c_int)
    |forward| grouped("cublasGemmGroupedBatchedEx_64", handle, Grouped {
        entry: EntryPoint::GemmGroupedBatchedEx64, transa, transb, m, n, k,
        types: (a_type, b_type, c_type), a, b, c, ld: (lda, ldb, ldc), group_count,
        group_size, compute, alpha, beta }, forward);

    fn cublasSgemmGroupedBatched = SGEMM_GROUPED_BATCHED(handle: CublasHandle,
        transa: *const c_int, transb: *const c_int, m: *const c_int, n: *const c_int,
        k: *const c_int, alpha: *const f32, a: Arr, lda: *const c_int, b: Arr,
        ldb: *const c_int, beta: *const f32, c: OutArr, ldc: *const c_int, group_count: c_int,
        group_size: *const c_int)
    |forward| grouped("cublasSgemmGroupedBatched", handle, Grouped {
        entry: EntryPoint::SgemmGroupedBatched, transa, transb, m, n, k, types: F32, a, b, c,
        ld: (lda, ldb, ldc), group_count: group_count.into(), group_size, compute: cc::C32F,
        alpha: alpha.cast(), beta: beta.cast() }, forward);

    fn cublasSgemmGroupedBatched_64 = SGEMM_GROUPED_BATCHED_64(handle: CublasHandle,
        transa: *const c_int, transb: *const c_int, m: *const i64, n: *const i64,
        k: *const i64, alpha: *const f32, a: Arr, lda: *const i64, b: Arr, ldb: *const i64,
        beta: *const f32, c: OutArr, ldc: *const i64, group_count: i64,
        group_size: *const i64)
    |forward| grouped("cublasSgemmGroupedBatched_64", handle, Grouped {
        entry: EntryPoint::SgemmGroupedBatched64, transa, transb, m, n, k, types: F32, a, b,
        c, ld: (lda, ldb, ldc), group_count, group_size, compute: cc::C32F,
        alpha: alpha.cast(), beta: beta.cast() }, forward);

    fn cublasDgemmGroupedBatched = DGEMM_GROUPED_BATCHED(handle: CublasHandle,
        transa: *const c_int, transb: *const c_int, m: *const c_int, n: *const c_int,
        k: *const c_int, alpha: *const f64, a: Arr, lda: *const c_int, b: Arr,
        ldb: *const c_int, beta: *const f64, c: OutArr, ldc: *const c_int, group_count: c_int,
        group_size: *const c_int)
    |forward| grouped("cublasDgemmGroupedBatched", handle, Grouped {
        entry: EntryPoint::DgemmGroupedBatched, transa, transb, m, n, k, types: F64, a, b, c,
        ld: (lda, ldb, ldc), group_count: group_count.into(), group_size, compute: cc::C64F,
        alpha: alpha.cast(), beta: beta.cast() }, forward);

    fn cublasDgemmGroupedBatched_64 = DGEMM_GROUPED_BATCHED_64(handle: CublasHandle,
        transa: *const c_int, transb: *const c_int, m: *const i64, n: *const i64,
        k: *const i64, alpha: *const f64, a: Arr, lda: *const i64, b: Arr, ldb: *const i64,
        beta: *const f64, c: OutArr, ldc: *const i64, group_count: i64,
        group_size: *const i64)
    |forward| grouped("cublasDgemmGroupedBatched_64", handle, Grouped {
        entry: EntryPoint::DgemmGroupedBatched64, transa, transb, m, n, k, types: F64, a, b,
        c, ld: (lda, ldb, ldc), group_count, group_size, compute: cc::C64F,
        alpha: alpha.cast(), beta: beta.cast() }, forward);
}

/// Defines the complex GEMM hooks: ledgered with their shapes and batch counts, always
/// outside the model ([`COMPLEX`]). One line per family: the plain, `_64`, strided,
/// strided `_64`, pointer-array and pointer-array `_64` forms; then the gemvs.
macro_rules! complex_exports {
    ($(
        $types:ident, $compute:ident:
        $plain:ident/$plain_sym:ident/$plain_e:ident,
        $plain64:ident/$plain64_sym:ident/$plain64_e:ident,
        $strided:ident/$strided_sym:ident/$strided_e:ident,
        $strided64:ident/$strided64_sym:ident/$strided64_e:ident,
        $batched:ident/$batched_sym:ident/$batched_e:ident,
        $batched64:ident/$batched64_sym:ident/$batched64_e:ident;
    )*) => {
        mod complex {
            use super::*;
            exports! {$(
                fn $plain = $plain_sym(handle: CublasHandle, transa: c_int, transb: c_int,
                    m: c_int, n: c_int, k: c_int, alpha: Ptr, a: Ptr, lda: c_int, b: Ptr,
                    ldb: c_int, beta: Ptr, c: *mut c_void, ldc: c_int)
                |forward| one(stringify!($plain), handle, plain(EntryPoint::$plain_e,
                    (transa, transb), (m.into(), n.into(), k.into()), $types,
                    (a, b, c.cast_const()), (lda.into(), ldb.into(), ldc.into()),
                    cc::$compute, (alpha, beta)), forward);

                fn $plain64 = $plain64_sym(handle: CublasHandle, transa: c_int, transb: c_int,
                    m: i64, n: i64, k: i64, alpha: Ptr, a: Ptr, lda: i64, b: Ptr, ldb: i64,
                    beta: Ptr, c: *mut c_void, ldc: i64)
                |forward| one(stringify!($plain64), handle, plain(EntryPoint::$plain64_e,
                    (transa, transb), (m, n, k), $types, (a, b, c.cast_const()),
                    (lda, ldb, ldc), cc::$compute, (alpha, beta)), forward);

                fn $strided = $strided_sym(handle: CublasHandle, transa: c_int, transb: c_int,
                    m: c_int, n: c_int, k: c_int, alpha: Ptr, a: Ptr, lda: c_int, sa: i64,
                    b: Ptr, ldb: c_int, sb: i64, beta: Ptr, c: *mut c_void, ldc: c_int,
                    sc: i64, batch: c_int)
                |forward| one(stringify!($strided), handle, strided(plain(
                    EntryPoint::$strided_e, (transa, transb), (m.into(), n.into(), k.into()),
                    $types, (a, b, c.cast_const()), (lda.into(), ldb.into(), ldc.into()),
                    cc::$compute, (alpha, beta)), (sa, sb, sc), batch.into()), forward);

                fn $strided64 = $strided64_sym(handle: CublasHandle, transa: c_int,
                    transb: c_int, m: i64, n: i64, k: i64, alpha: Ptr, a: Ptr, lda: i64,
                    sa: i64, b: Ptr, ldb: i64, sb: i64, beta: Ptr, c: *mut c_void, ldc: i64,
                    sc: i64, batch: i64)
                |forward| one(stringify!($strided64), handle, strided(plain(
                    EntryPoint::$strided64_e, (transa, transb), (m, n, k), $types,
                    (a, b, c.cast_const()), (lda, ldb, ldc), cc::$compute, (alpha, beta)),
                    (sa, sb, sc), batch), forward);

                fn $batched = $batched_sym(handle: CublasHandle, transa: c_int, transb: c_int,
                    m: c_int, n: c_int, k: c_int, alpha: Ptr, a: Arr, lda: c_int, b: Arr,
                    ldb: c_int, beta: Ptr, c: OutArr, ldc: c_int, batch: c_int)
                |forward| one(stringify!($batched), handle, pointer_array(plain(
                    EntryPoint::$batched_e, (transa, transb), (m.into(), n.into(), k.into()),
                    $types, (a.cast(), b.cast(), c.cast()), (lda.into(), ldb.into(),
                    ldc.into()), cc::$compute, (alpha, beta)), batch.into()), forward);

                fn $batched64 = $batched64_sym(handle: CublasHandle, transa: c_int,
                    transb: c_int, m: i64, n: i64, k: i64, alpha: Ptr, a: Arr, lda: i64,
                    b: Arr, ldb: i64, beta: Ptr, c: OutArr, ldc: i64, batch: i64)
                |forward| one(stringify!($batched64), handle, pointer_array(plain(
                    EntryPoint::$batched64_e, (transa, transb), (m, n, k), $types,
                    (a.cast(), b.cast(), c.cast()), (lda, ldb, ldc), cc::$compute,
                    (alpha, beta)), batch), forward);
            )*

                fn cublasCgemv_v2 = CGEMV(handle: CublasHandle, trans: c_int, m: c_int,
                    n: c_int, alpha: Ptr, a: Ptr, lda: c_int, x: Ptr, incx: c_int, beta: Ptr,
                    y: *mut c_void, incy: c_int)
                |forward| one("cublasCgemv_v2", handle, gemv((EntryPoint::CgemvV2, dt::C_32F,
                    cc::C32F), trans, (m.into(), n.into()), (alpha, beta), (a, lda.into()),
                    (x, incx.into()), (y.cast_const(), incy.into())), forward);

                fn cublasCgemv_v2_64 = CGEMV_64(handle: CublasHandle, trans: c_int, m: i64,
                    n: i64, alpha: Ptr, a: Ptr, lda: i64, x: Ptr, incx: i64, beta: Ptr,
                    y: *mut c_void, incy: i64)
                |forward| one("cublasCgemv_v2_64", handle, gemv((EntryPoint::CgemvV264,
                    dt::C_32F, cc::C32F), trans, (m, n), (alpha, beta), (a, lda), (x, incx),
                    (y.cast_const(), incy)), forward);

                fn cublasZgemv_v2 = ZGEMV(handle: CublasHandle, trans: c_int, m: c_int,
                    n: c_int, alpha: Ptr, a: Ptr, lda: c_int, x: Ptr, incx: c_int, beta: Ptr,
                    y: *mut c_void, incy: c_int)
                |forward| one("cublasZgemv_v2", handle, gemv((EntryPoint::ZgemvV2, dt::C_64F,
                    cc::C64F), trans, (m.into(), n.into()), (alpha, beta), (a, lda.into()),
                    (x, incx.into()), (y.cast_const(), incy.into())), forward);

                fn cublasZgemv_v2_64 = ZGEMV_64(handle: CublasHandle, trans: c_int, m: i64,
                    n: i64, alpha: Ptr, a: Ptr, lda: i64, x: Ptr, incx: i64, beta: Ptr,
                    y: *mut c_void, incy: i64)
                |forward| one("cublasZgemv_v2_64", handle, gemv((EntryPoint::ZgemvV264,
                    dt::C_64F, cc::C64F), trans, (m, n), (alpha, beta), (a, lda), (x, incx),
                    (y.cast_const(), incy)), forward);
            }
        }
    };
}

complex_exports! {
    C32, C32F:
        cublasCgemm_v2/CGEMM/CgemmV2, cublasCgemm_v2_64/CGEMM_64/CgemmV264,
        cublasCgemmStridedBatched/CGEMM_STRIDED_BATCHED/CgemmStridedBatched,
        cublasCgemmStridedBatched_64/CGEMM_STRIDED_BATCHED_64/CgemmStridedBatched64,
        cublasCgemmBatched/CGEMM_BATCHED/CgemmBatched,
        cublasCgemmBatched_64/CGEMM_BATCHED_64/CgemmBatched64;
    C32, C32F:
        cublasCgemm3m/CGEMM3M/Cgemm3m, cublasCgemm3m_64/CGEMM3M_64/Cgemm3m64,
        cublasCgemm3mStridedBatched/CGEMM3M_STRIDED_BATCHED/Cgemm3mStridedBatched,
        cublasCgemm3mStridedBatched_64/CGEMM3M_STRIDED_BATCHED_64/Cgemm3mStridedBatched64,
        cublasCgemm3mBatched/CGEMM3M_BATCHED/Cgemm3mBatched,
        cublasCgemm3mBatched_64/CGEMM3M_BATCHED_64/Cgemm3mBatched64;
    C64, C64F:
        cublasZgemm_v2/ZGEMM/ZgemmV2, cublasZgemm_v2_64/ZGEMM_64/ZgemmV264,
        cublasZgemmStridedBatched/ZGEMM_STRIDED_BATCHED/ZgemmStridedBatched,
        cublasZgemmStridedBatched_64/ZGEMM_STRIDED_BATCHED_64/ZgemmStridedBatched64,
        cublasZgemmBatched/ZGEMM_BATCHED/ZgemmBatched,
        cublasZgemmBatched_64/ZGEMM_BATCHED_64/ZgemmBatched64;
}

/// The address of any hook of this file defined through [`exports!`].
pub(crate) fn table_address(name: &[u8]) -> Option<usize> {
    address_of(name).or_else(|| complex::address_of(name))
}

//! The `cublasLtMatmul` export. Every descriptor and layout attribute the call model
//! needs is read inside the hook, through the real getters, because applications
//! destroy or reuse descriptors right after the call.

#![allow(non_snake_case, clippy::too_many_arguments)]

use std::ffi::{c_int, c_void};

use super::blas::{getter, host_scalar, real_fn};
use super::{audited, site_of, Call, Unmodelled};
use crate::model::{
    describe_lt, dtype_of, unmodelled_lt, LtArgs, LtDesc, LtLayout, LtPartial, NotDescribed,
    ScalarArg, Site,
};
use crate::real;
use crate::sys::cublas::{
    self as sys, desc_attr as da, layout_attr as la, CublasStatus, LtHandle, LtLayout as RawLayout,
    LtMatmulDesc,
};
use mmaudit_protocol::call::DType;

/// Reads one attribute of `N` bytes.
///
/// # Safety
/// `get` is the real attribute getter and `obj` the application's descriptor/layout.
unsafe fn attr<const N: usize>(
    get: unsafe extern "C" fn(*mut c_void, c_int, *mut c_void, usize, *mut usize) -> CublasStatus,
    obj: *mut c_void,
    id: c_int,
) -> Option<[u8; N]> {
    let mut buf = [0u8; N];
    let mut written = 0usize;
    // SAFETY: buf has N bytes; the getter writes at most N and the written count.
    let s = unsafe { get(obj, id, buf.as_mut_ptr().cast(), N, &mut written) };
    (crate::result::blas(s, "cublasLt*GetAttribute").is_ok() && written == N).then_some(buf)
}

fn i32_of(b: [u8; 4]) -> i32 {
    i32::from_le_bytes(b)
}

fn u64_of(b: [u8; 8]) -> u64 {
    u64::from_le_bytes(b)
}

/// Reads the matmul descriptor. Required attributes missing make the call invalid;
/// optional ones default as cuBLASLt defaults them.
///
/// # Safety
/// `desc` is the application's descriptor.
unsafe fn read_desc(get: sys::DescGetAttrFn, desc: LtMatmulDesc) -> Result<LtDesc, NotDescribed> {
    let req32 = |id: c_int, what: &str| -> Result<i32, NotDescribed> {
        // SAFETY: the real getter and the application's descriptor.
        unsafe { attr::<4>(get, desc, id) }
            .map(i32_of)
            .ok_or_else(|| NotDescribed::Invalid(format!("cannot read the descriptor's {what}")))
    };
    let opt32 = |id: c_int, default: i32| {
        // SAFETY: the real getter and the application's descriptor.
        unsafe { attr::<4>(get, desc, id) }.map_or(default, i32_of)
    };
    let opt64 = |id: c_int| {
        // SAFETY: the real getter and the application's descriptor.
        unsafe { attr::<8>(get, desc, id) }.map_or(0, u64_of)
    };
    Ok(LtDesc {
        compute: req32(da::COMPUTE_TYPE, "compute type")?,
        scale_type: req32(da::SCALE_TYPE, "scale type")?,
        pointer_mode: opt32(da::POINTER_MODE, 0),
        transa: opt32(da::TRANSA, 0),
        transb: opt32(da::TRANSB, 0),
        transc: opt32(da::TRANSC, 0),
        epilogue: opt32(da::EPILOGUE, sys::epilogue::DEFAULT as i32) as u32,
        bias: opt64(da::BIAS_POINTER),
        bias_batch_stride: opt64(da::BIAS_BATCH_STRIDE) as i64,
        bias_type: opt32(da::BIAS_DATA_TYPE, -1),
        scales: [
            opt64(da::A_SCALE_POINTER),
            opt64(da::B_SCALE_POINTER),
            opt64(da::C_SCALE_POINTER),
            opt64(da::D_SCALE_POINTER),
        ],
        scale_modes: [
            da::A_SCALE_MODE,
            da::B_SCALE_MODE,
            da::C_SCALE_MODE,
            da::D_SCALE_MODE,
            da::EPILOGUE_AUX_SCALE_MODE,
        ]
        .map(|id| opt32(id, sys::scale_mode::SCALAR_32F)),
        d_out_scale: opt64(da::D_OUT_SCALE_POINTER),
        // SAFETY: the real getter and the application's descriptor (an int8).
        fast_accum: unsafe { attr::<1>(get, desc, da::FAST_ACCUM) }
            .map_or(0, |b| b[0] as i8 as i32),
    })
}

/// Reads one matrix layout.
///
/// # Safety
/// `layout` is the application's layout.
unsafe fn read_layout(
    get: sys::LayoutGetAttrFn,
    layout: RawLayout,
    name: &str,
) -> Result<LtLayout, NotDescribed> {
    let missing = || NotDescribed::Invalid(format!("cannot read layout {name}"));
    let r32 = |id: c_int| {
        // SAFETY: the real getter and the application's layout.
        unsafe { attr::<4>(get, layout, id) }.map(i32_of)
    };
    let r64 = |id: c_int| {
        // SAFETY: the real getter and the application's layout.
        unsafe { attr::<8>(get, layout, id) }.map(u64_of)
    };
    Ok(LtLayout {
        dtype: r32(la::TYPE).ok_or_else(missing)?,
        order: r32(la::ORDER).unwrap_or(sys::LT_ORDER_COL),
        rows: r64(la::ROWS).ok_or_else(missing)?,
        cols: r64(la::COLS).ok_or_else(missing)?,
        ld: r64(la::LD).ok_or_else(missing)? as i64,
        batch: r32(la::BATCH_COUNT).unwrap_or(1),
        stride: r64(la::STRIDED_BATCH_OFFSET).unwrap_or(0) as i64,
        plane_offset: r64(la::PLANE_OFFSET).unwrap_or(0) as i64,
        batch_mode: r32(la::BATCH_MODE).unwrap_or(0),
    })
}

/// Whether the algorithm may add k parts in D's type (`INPLACE` or `OUTPUT_TYPE`
/// reduction of more than one part). Without an algorithm cuBLASLt chooses one itself,
/// and a configuration that cannot be read is assumed to allow it: both widen the
/// verifier's bounds, neither narrows them.
///
/// # Safety
/// `algo` is null or the application's `const cublasLtMatmulAlgo_t *`.
unsafe fn reduces_in_output_type(algo: *const c_void) -> bool {
    use sys::{algo_config as ac, reduction};
    if algo.is_null() {
        return true;
    }
    let Ok(get) = getter::<sys::AlgoConfigGetAttrFn>(&real::LT_ALGO_CONFIG_GET_ATTRIBUTE) else {
        return true;
    };
    let read = |id: c_int| {
        let mut buf = [0u8; 4];
        let mut written = 0usize;
        // SAFETY: the real getter, the application's algo and a 4-byte buffer.
        let s = unsafe { get(algo, id, buf.as_mut_ptr().cast(), 4, &mut written) };
        (crate::result::blas(s, "cublasLtMatmulAlgoConfigGetAttribute").is_ok() && written == 4)
            .then(|| u32::from_le_bytes(buf))
    };
    match (read(ac::SPLITK_NUM), read(ac::REDUCTION_SCHEME)) {
        (Some(parts), Some(scheme)) => {
            parts > 1 && scheme & (reduction::INPLACE | reduction::OUTPUT_TYPE) != 0
        }
        _ => true,
    }
}

/// Describes one `cublasLtMatmul` call: exactly, or as a call outside the model with
/// what could be read of it.
///
/// # Safety
/// The application's arguments of `cublasLtMatmul`.
unsafe fn describe(
    desc: LtMatmulDesc,
    alpha: *const c_void,
    beta: *const c_void,
    ptrs: [*const c_void; 4],
    layouts: [RawLayout; 4],
    algo: *const c_void,
    stream: sys::Stream,
) -> Result<Call, Box<Unmodelled>> {
    let (site, ctx) = site_of(stream as usize);
    let mut partial = LtPartial {
        c: ptrs[2] as u64,
        d: ptrs[3] as u64,
        site,
        ..LtPartial::default()
    };
    // SAFETY: the caller's contract.
    match unsafe { read_call(desc, alpha, beta, ptrs, layouts, algo, site, &mut partial) } {
        Ok(args) => match describe_lt(&args) {
            Ok(described) => Ok(Call {
                described,
                stream: stream as usize,
                ctx,
                followed: None,
            }),
            Err(why) => Err(Box::new(Unmodelled {
                call: unmodelled_lt(&LtPartial::from(&args)),
                why,
            })),
        },
        Err(why) => Err(Box::new(Unmodelled {
            call: unmodelled_lt(&partial),
            why,
        })),
    }
}

/// Reads the descriptor, the layouts and alpha/beta into `LtArgs`; what was read
/// before a failure is left in `partial`.
///
/// # Safety
/// The application's arguments of `cublasLtMatmul`.
unsafe fn read_call(
    desc: LtMatmulDesc,
    alpha: *const c_void,
    beta: *const c_void,
    ptrs: [*const c_void; 4],
    layouts: [RawLayout; 4],
    algo: *const c_void,
    site: Site,
    partial: &mut LtPartial,
) -> Result<LtArgs, NotDescribed> {
    let get_desc: sys::DescGetAttrFn = getter(&real::LT_DESC_GET_ATTRIBUTE)?;
    let get_layout: sys::LayoutGetAttrFn = getter(&real::LT_LAYOUT_GET_ATTRIBUTE)?;
    for (i, name) in ["A", "B", "C", "D"].into_iter().enumerate() {
        if !layouts[i].is_null() {
            // SAFETY: the real getter and the application's layout.
            partial.layouts[i] = unsafe { read_layout(get_layout, layouts[i], name) }.ok();
        }
    }
    if desc.is_null() || layouts.iter().any(|l| l.is_null()) {
        return Err(NotDescribed::Invalid("a null descriptor".into()));
    }
    // SAFETY: the real getter and the application's descriptor.
    let desc_attrs = unsafe { read_desc(get_desc, desc) }?;
    partial.desc = Some(desc_attrs);
    let scale = dtype_of(desc_attrs.scale_type).ok_or_else(|| {
        NotDescribed::Unsupported(format!(
            "scale type {} has no protocol v1 code",
            desc_attrs.scale_type
        ))
    })?;
    let scalar = |p: *const c_void, what: &str| -> Result<ScalarArg, NotDescribed> {
        if p.is_null() {
            Err(NotDescribed::Invalid(format!("{what} is a null pointer")))
        } else if desc_attrs.pointer_mode == 0 {
            // SAFETY: host pointer mode: cuBLASLt reads a scale-type value here.
            unsafe { host_scalar(p, scale.size()) }
                .ok_or_else(|| NotDescribed::Invalid(format!("{what} is a null pointer")))
        } else {
            // Device pointer mode (vector modes are refused by describe_lt): nothing
            // is read on the host.
            Ok(ScalarArg::Device(p as u64))
        }
    };
    let (alpha, beta) = (scalar(alpha, "alpha"), scalar(beta, "beta"));
    partial.alpha = alpha.clone().ok();
    partial.beta = beta.clone().ok();
    let mut ls = [LtLayout::new(0, 0, 0, 0); 4];
    for (i, name) in ["A", "B", "C", "D"].into_iter().enumerate() {
        ls[i] = partial.layouts[i]
            .ok_or_else(|| NotDescribed::Invalid(format!("cannot read layout {name}")))?;
    }
    Ok(LtArgs {
        desc: desc_attrs,
        a_layout: ls[0],
        b_layout: ls[1],
        c_layout: ls[2],
        d_layout: ls[3],
        a: ptrs[0] as u64,
        b: ptrs[1] as u64,
        c: ptrs[2] as u64,
        d: ptrs[3] as u64,
        alpha: alpha?,
        beta: beta?,
        site,
        // Only a 16- or 8-bit float D can round more than the accumulator (the algo
        // is read for those alone).
        // SAFETY: the application's algo argument.
        reduced_precision_reduction: dtype_of(ls[3].dtype).is_some_and(DType::is_narrow_float)
            && unsafe { reduces_in_output_type(algo) },
    })
}

/// Hook of `cublasLtMatmul`.
///
/// # Safety
/// The cuBLASLt contract of `cublasLtMatmul`.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn cublasLtMatmul(
    handle: LtHandle,
    desc: LtMatmulDesc,
    alpha: *const c_void,
    a: *const c_void,
    a_desc: RawLayout,
    b: *const c_void,
    b_desc: RawLayout,
    beta: *const c_void,
    c: *const c_void,
    c_desc: RawLayout,
    d: *mut c_void,
    d_desc: RawLayout,
    algo: *const c_void,
    workspace: *mut c_void,
    workspace_size: usize,
    stream: sys::Stream,
) -> CublasStatus {
    let f: sys::LtMatmulFn = match real_fn(&real::LT_MATMUL) {
        Ok(f) => f,
        Err(s) => return s,
    };
    audited(
        "cublasLtMatmul",
        // SAFETY: the application's arguments, passed on unchanged.
        || unsafe {
            describe(
                desc,
                alpha,
                beta,
                [a, b, c, d.cast_const()],
                [a_desc, b_desc, c_desc, d_desc],
                algo,
                stream,
            )
        },
        // SAFETY: the real function with the caller's arguments, exactly once.
        || unsafe {
            f(
                handle,
                desc,
                alpha,
                a,
                a_desc,
                b,
                b_desc,
                beta,
                c,
                c_desc,
                d,
                d_desc,
                algo,
                workspace,
                workspace_size,
                stream,
            )
        },
    )
}

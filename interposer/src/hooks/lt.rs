//! The `cublasLtMatmul` export, and the descriptor and layout creators, setters and
//! destroyers it follows. Every descriptor and layout attribute the call model needs
//! is read inside the hook (applications destroy or reuse descriptors right after the
//! call): from the library's table of followed objects ([`super::lt_follow`]) when it
//! has them, otherwise through the real getters.

#![allow(non_snake_case, clippy::too_many_arguments)]

use std::ffi::{c_int, c_void};

use super::blas::{getter, host_scalar, real_fn};
use super::lt_follow::{self as follow, Snapshot};
use super::{audited, site_of, Call, Followed, Unmodelled};
use crate::model::{
    describe_lt, dtype_of, unmodelled_lt, GatherSpec, LtArgs, LtDesc, LtLayout, LtPartial,
    NotDescribed, ScalarArg, Site,
};
use crate::real;
use crate::sys::cublas::{
    self as sys, desc_attr as da, layout_attr as la, CublasStatus, LtHandle, LtLayout as RawLayout,
    LtMatmulDesc,
};
use mmaudit_protocol::call::{flags, DType, GemmCall};

/// A real attribute getter (`cublasLtMatmulDescGetAttribute` or
/// `cublasLtMatrixLayoutGetAttribute`).
type GetAttr =
    unsafe extern "C" fn(*mut c_void, c_int, *mut c_void, usize, *mut usize) -> CublasStatus;

/// Reads one attribute of `N` bytes.
///
/// # Safety
/// `get` is the real attribute getter and `obj` the application's descriptor/layout.
unsafe fn attr<const N: usize>(get: GetAttr, obj: *mut c_void, id: c_int) -> Option<[u8; N]> {
    let mut buf = [0u8; N];
    // SAFETY: the caller's contract.
    unsafe { attr_into(get, obj, id, &mut buf) }.then_some(buf)
}

/// Reads attribute `id` into all of `buf`: true when the getter succeeded and wrote
/// exactly `buf.len()` bytes.
///
/// # Safety
/// As [`attr`].
unsafe fn attr_into(get: GetAttr, obj: *mut c_void, id: c_int, buf: &mut [u8]) -> bool {
    let mut written = 0usize;
    // SAFETY: the getter writes at most buf.len() bytes and the written count.
    let s = unsafe { get(obj, id, buf.as_mut_ptr().cast(), buf.len(), &mut written) };
    crate::result::blas(s, "cublasLt*GetAttribute").is_ok() && written == buf.len()
}

/// Where a descriptor's or a layout's attributes are read from.
enum Attrs<'a> {
    /// The real getter, on the application's object.
    Real(GetAttr, *mut c_void),
    /// The library's table ([`super::lt_follow`]).
    Followed(&'a Snapshot, &'static [follow::Spec]),
}

impl Attrs<'_> {
    fn get<const N: usize>(&self, id: c_int) -> Option<[u8; N]> {
        match self {
            // SAFETY: `Attrs::Real` is made in this module only with the real getter
            // and the application's object (`read_call`).
            Attrs::Real(get, obj) => unsafe { attr::<N>(*get, *obj, id) },
            Attrs::Followed(s, specs) => s.get::<N>(specs, id),
        }
    }
}

/// The real getter's view of every attribute of `specs` on `obj`.
///
/// # Safety
/// `get` is the real attribute getter and `obj` the application's descriptor/layout.
unsafe fn read_real(get: GetAttr, obj: *mut c_void, specs: &[follow::Spec]) -> Snapshot {
    Snapshot::read(specs, |id, size| {
        let mut buf = [0u8; 8];
        // SAFETY: the caller's contract; every spec's size is at most 8.
        unsafe { attr_into(get, obj, id, &mut buf[..size]) }.then(|| u64::from_le_bytes(buf))
    })
}

fn i32_of(b: [u8; 4]) -> i32 {
    i32::from_le_bytes(b)
}

fn u64_of(b: [u8; 8]) -> u64 {
    u64::from_le_bytes(b)
}

/// Reads the matmul descriptor. Required attributes missing make the call invalid;
/// optional ones default as cuBLASLt defaults them.
fn read_desc(desc: &Attrs) -> Result<LtDesc, NotDescribed> {
    let req32 = |id: c_int, what: &str| -> Result<i32, NotDescribed> {
        desc.get::<4>(id)
            .map(i32_of)
            .ok_or_else(|| NotDescribed::Invalid(format!("cannot read the descriptor's {what}")))
    };
    let opt32 = |id: c_int, default: i32| desc.get::<4>(id).map_or(default, i32_of);
    let opt64 = |id: c_int| desc.get::<8>(id).map_or(0, u64_of);
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
        // an int8
        fast_accum: desc
            .get::<1>(da::FAST_ACCUM)
            .map_or(0, |b| b[0] as i8 as i32),
    })
}

/// Reads one matrix layout.
fn read_layout(layout: &Attrs, name: &str) -> Result<LtLayout, NotDescribed> {
    let missing = || NotDescribed::Invalid(format!("cannot read layout {name}"));
    let r32 = |id: c_int| layout.get::<4>(id).map(i32_of);
    let r64 = |id: c_int| layout.get::<8>(id).map(u64_of);
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
unsafe fn describe(raw: LtRaw, tables: bool) -> Result<Call, Box<Unmodelled>> {
    let (site, ctx) = site_of(raw.stream as usize);
    // A call captured into a graph is read through the getters: every replay is
    // audited against this description, and no sampled call checks it.
    let tables = tables && !site.captured;
    let mut partial = LtPartial {
        c: raw.ptrs[2] as u64,
        d: raw.ptrs[3] as u64,
        site,
        ..LtPartial::default()
    };
    // SAFETY: the caller's contract.
    let described = match unsafe { read_call(&raw, tables, site, &mut partial) } {
        Ok((args, followed)) => match describe_lt(&args) {
            Ok(described) => Ok(Call {
                described,
                stream: raw.stream as usize,
                ctx,
                followed: followed.then_some(Followed::Lt(raw)),
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
    };
    if described.is_err() && tables {
        // A description from the tables that fails is made again from the getters:
        // a call left outside the model is never sampled, so never checked.
        // SAFETY: the caller's contract.
        return unsafe { describe(raw, false) };
    }
    described
}

/// The arguments of one `cublasLtMatmul` call that its description is read from.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LtRaw {
    desc: LtMatmulDesc,
    alpha: *const c_void,
    beta: *const c_void,
    ptrs: [*const c_void; 4],
    layouts: [RawLayout; 4],
    algo: *const c_void,
    stream: sys::Stream,
}

/// Reads the descriptor, the layouts and alpha/beta into `LtArgs` (with `tables`,
/// each object the library follows from its table, [`follow`]; the flag returned says
/// whether any was); what was read before a failure is left in `partial`.
///
/// # Safety
/// The application's arguments of `cublasLtMatmul`.
unsafe fn read_call(
    raw: &LtRaw,
    tables: bool,
    site: Site,
    partial: &mut LtPartial,
) -> Result<(LtArgs, bool), NotDescribed> {
    let LtRaw {
        desc,
        alpha,
        beta,
        ptrs,
        layouts,
        algo,
        ..
    } = *raw;
    let get_desc: GetAttr = getter(&real::LT_DESC_GET_ATTRIBUTE)?;
    let get_layout: GetAttr = getter(&real::LT_LAYOUT_GET_ATTRIBUTE)?;
    let mut followed = false;
    for (i, name) in ["A", "B", "C", "D"].into_iter().enumerate() {
        if !layouts[i].is_null() {
            let seen = tables
                .then(|| follow::LAYOUTS.get(layouts[i] as usize))
                .flatten();
            followed |= seen.is_some();
            let src = match &seen {
                Some(s) => Attrs::Followed(s, &follow::LAYOUT),
                None => Attrs::Real(get_layout, layouts[i]),
            };
            partial.layouts[i] = read_layout(&src, name).ok();
        }
    }
    if desc.is_null() || layouts.iter().any(|l| l.is_null()) {
        return Err(NotDescribed::Invalid("a null descriptor".into()));
    }
    let mut seen = tables.then(|| follow::DESCS.get(desc as usize)).flatten();
    let mut desc_attrs = match &seen {
        Some(s) => read_desc(&Attrs::Followed(s, &follow::DESC))?,
        None => read_desc(&Attrs::Real(get_desc, desc))?,
    };
    if seen.is_some() && desc_attrs.pointer_mode == 0 {
        // The table's host pointer mode is trusted for scalars in this thread's live
        // stack only (host memory whatever the mode); for any other, cuBLASLt is
        // asked, since reading a device pointer as host memory would crash.
        let size = dtype_of(desc_attrs.scale_type).map_or(16, |t| t.size());
        let on_stack = |p: *const c_void| crate::stack::on_live_stack(p.cast(), size);
        if !(on_stack(alpha) && on_stack(beta)) {
            seen = None;
            desc_attrs = read_desc(&Attrs::Real(get_desc, desc))?;
        }
    }
    followed |= seen.is_some();
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
    let args = LtArgs {
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
    };
    Ok((args, followed))
}

/// Before a sampled call described from the library's tables: true when the real
/// getters describe it (and where to gather it) the same. Otherwise its followed objects are dropped, the
/// tables are no longer read for the rest of the process (one warning says so), and
/// the call is to be a gap.
///
/// # Safety
/// `raw` holds the application's arguments of the call being served.
pub(crate) unsafe fn verify(raw: &LtRaw, described: &GemmCall, gather: &GatherSpec) -> bool {
    // SAFETY: the caller's contract.
    let again = unsafe { describe(*raw, false) };
    let same = again.is_ok_and(|c| {
        // The index and the flags the ledger adds are not the description's.
        let ledger = flags::NO_SESSION | flags::REJECTED;
        let mut call = c.described.call;
        call.index = described.index;
        call.flags = (call.flags & !ledger) | (described.flags & ledger);
        // The gather specification holds what the call does not: the bias and scale
        // pointers the gather reads.
        call == *described && c.described.gather == *gather
    });
    if !same {
        follow::DESCS.forget(raw.desc as usize);
        for l in raw.layouts {
            follow::LAYOUTS.forget(l as usize);
        }
        follow::stop_following();
        crate::log::once(
            crate::log::Level::Warn,
            "cuBLASLt objects changed behind the library",
            "a cuBLASLt matmul descriptor or layout differs from what the library followed through its setters (changed through a path it does not hook, or defaults it did not expect): cuBLASLt objects are read through the getters on every call from now on",
        );
    }
    same
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
                LtRaw {
                    desc,
                    alpha,
                    beta,
                    ptrs: [a, b, c, d.cast_const()],
                    layouts: [a_desc, b_desc, c_desc, d_desc],
                    algo,
                    stream,
                },
                follow::following(),
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

/// The address of our hook for a followed cuBLASLt object function, if we export one.
pub fn hook_address(name: &[u8]) -> Option<usize> {
    Some(match name {
        b"cublasLtMatmulDescCreate" => cublasLtMatmulDescCreate as *const () as usize,
        b"cublasLtMatmulDescSetAttribute" => cublasLtMatmulDescSetAttribute as *const () as usize,
        b"cublasLtMatmulDescDestroy" => cublasLtMatmulDescDestroy as *const () as usize,
        b"cublasLtMatrixLayoutCreate" => cublasLtMatrixLayoutCreate as *const () as usize,
        b"cublasLtMatrixLayoutSetAttribute" => {
            cublasLtMatrixLayoutSetAttribute as *const () as usize
        }
        b"cublasLtMatrixLayoutDestroy" => cublasLtMatrixLayoutDestroy as *const () as usize,
        _ => return None,
    })
}

type DescCreateFn = unsafe extern "C" fn(*mut LtMatmulDesc, c_int, c_int) -> CublasStatus;
type LayoutCreateFn = unsafe extern "C" fn(*mut RawLayout, c_int, u64, u64, i64) -> CublasStatus;
type SetAttrFn = unsafe extern "C" fn(*mut c_void, c_int, *const c_void, usize) -> CublasStatus;
type DestroyFn = unsafe extern "C" fn(*mut c_void) -> CublasStatus;

/// Runs the library's bookkeeping for the object `key` of `table`; a panic in it is
/// swallowed (the entry is then dropped, so the object is read through the getters).
fn quietly(table: &follow::Table, key: usize, work: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).is_err() {
        let _ = std::panic::catch_unwind(|| table.forget(key));
    }
}

/// Hook of `cublasLtMatmulDescCreate`.
///
/// # Safety
/// The cuBLASLt contract.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn cublasLtMatmulDescCreate(
    out: *mut LtMatmulDesc,
    compute: c_int,
    scale: c_int,
) -> CublasStatus {
    let f: DescCreateFn = match real_fn(&real::LT_DESC_CREATE) {
        Ok(f) => f,
        Err(s) => return s,
    };
    // SAFETY: the application's arguments, passed on unchanged.
    let status = unsafe { f(out, compute, scale) };
    if status == sys::CUBLAS_STATUS_SUCCESS && !out.is_null() {
        // SAFETY: the call succeeded, so cuBLASLt wrote a descriptor through `out`.
        let desc = unsafe { *out };
        let class = (compute as u32 as u64) << 32 | scale as u32 as u64;
        quietly(&follow::DESCS, desc as usize, || {
            let args: [(c_int, &[u8]); 2] = [
                (da::COMPUTE_TYPE, &compute.to_le_bytes()),
                (da::SCALE_TYPE, &scale.to_le_bytes()),
            ];
            follow::DESCS.created(desc as usize, class, &args, || {
                let get = getter::<GetAttr>(&real::LT_DESC_GET_ATTRIBUTE).ok()?;
                // SAFETY: the real getter and a descriptor cuBLASLt just made.
                Some(unsafe { read_real(get, desc, &follow::DESC) })
            });
        });
    }
    status
}

/// Hook of `cublasLtMatrixLayoutCreate`.
///
/// # Safety
/// The cuBLASLt contract.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn cublasLtMatrixLayoutCreate(
    out: *mut RawLayout,
    dtype: c_int,
    rows: u64,
    cols: u64,
    ld: i64,
) -> CublasStatus {
    let f: LayoutCreateFn = match real_fn(&real::LT_LAYOUT_CREATE) {
        Ok(f) => f,
        Err(s) => return s,
    };
    // SAFETY: the application's arguments, passed on unchanged.
    let status = unsafe { f(out, dtype, rows, cols, ld) };
    if status == sys::CUBLAS_STATUS_SUCCESS && !out.is_null() {
        // SAFETY: the call succeeded, so cuBLASLt wrote a layout through `out`.
        let layout = unsafe { *out };
        quietly(&follow::LAYOUTS, layout as usize, || {
            let args: [(c_int, &[u8]); 4] = [
                (la::TYPE, &dtype.to_le_bytes()),
                (la::ROWS, &rows.to_le_bytes()),
                (la::COLS, &cols.to_le_bytes()),
                (la::LD, &ld.to_le_bytes()),
            ];
            follow::LAYOUTS.created(layout as usize, dtype as u32 as u64, &args, || {
                let get = getter::<GetAttr>(&real::LT_LAYOUT_GET_ATTRIBUTE).ok()?;
                // SAFETY: the real getter and a layout cuBLASLt just made.
                Some(unsafe { read_real(get, layout, &follow::LAYOUT) })
            });
        });
    }
    status
}

/// A setter's hook: forwards, then stores the bytes set in the object's entry.
///
/// # Safety
/// The cuBLASLt contract of `sym`.
unsafe fn set_attr(
    sym: &real::RealSym,
    table: &follow::Table,
    obj: *mut c_void,
    id: c_int,
    buf: *const c_void,
    size: usize,
) -> CublasStatus {
    let f: SetAttrFn = match real_fn(sym) {
        Ok(f) => f,
        Err(s) => return s,
    };
    // SAFETY: the application's arguments, passed on unchanged.
    let status = unsafe { f(obj, id, buf, size) };
    if status == sys::CUBLAS_STATUS_SUCCESS {
        quietly(table, obj as usize, || {
            if buf.is_null() {
                table.forget(obj as usize);
            } else {
                // SAFETY: cuBLASLt just read `size` bytes there successfully.
                let bytes = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), size) };
                table.set(obj as usize, id, bytes);
            }
        });
    }
    status
}

/// A destroyer's hook: the entry goes before the object does.
///
/// # Safety
/// The cuBLASLt contract of `sym`.
unsafe fn destroy(sym: &real::RealSym, table: &follow::Table, obj: *mut c_void) -> CublasStatus {
    let f: DestroyFn = match real_fn(sym) {
        Ok(f) => f,
        Err(s) => return s,
    };
    quietly(table, obj as usize, || table.forget(obj as usize));
    // SAFETY: the application's argument, passed on unchanged.
    unsafe { f(obj) }
}

/// Hook of `cublasLtMatmulDescSetAttribute`.
///
/// # Safety
/// The cuBLASLt contract.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn cublasLtMatmulDescSetAttribute(
    desc: LtMatmulDesc,
    id: c_int,
    buf: *const c_void,
    size: usize,
) -> CublasStatus {
    // SAFETY: the caller's contract.
    unsafe {
        set_attr(
            &real::LT_DESC_SET_ATTRIBUTE,
            &follow::DESCS,
            desc,
            id,
            buf,
            size,
        )
    }
}

/// Hook of `cublasLtMatrixLayoutSetAttribute`.
///
/// # Safety
/// The cuBLASLt contract.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn cublasLtMatrixLayoutSetAttribute(
    layout: RawLayout,
    id: c_int,
    buf: *const c_void,
    size: usize,
) -> CublasStatus {
    // SAFETY: the caller's contract.
    unsafe {
        set_attr(
            &real::LT_LAYOUT_SET_ATTRIBUTE,
            &follow::LAYOUTS,
            layout,
            id,
            buf,
            size,
        )
    }
}

/// Hook of `cublasLtMatmulDescDestroy`.
///
/// # Safety
/// The cuBLASLt contract.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn cublasLtMatmulDescDestroy(desc: LtMatmulDesc) -> CublasStatus {
    // SAFETY: the caller's contract.
    unsafe { destroy(&real::LT_DESC_DESTROY, &follow::DESCS, desc) }
}

/// Hook of `cublasLtMatrixLayoutDestroy`.
///
/// # Safety
/// The cuBLASLt contract.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn cublasLtMatrixLayoutDestroy(layout: RawLayout) -> CublasStatus {
    // SAFETY: the caller's contract.
    unsafe { destroy(&real::LT_LAYOUT_DESTROY, &follow::LAYOUTS, layout) }
}

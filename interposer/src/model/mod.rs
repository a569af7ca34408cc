//! The call model: every hooked entry point's arguments, normalised to the protocol's
//! canonical [`GemmCall`] plus what the gather needs to find the operands in device
//! memory ([`GatherSpec`]).
//!
//! Pure functions on plain values (numbers and addresses); the hooks read the arguments
//! and the cuBLASLt descriptor attributes, this module decides what they mean. It never
//! dereferences an address. Conventions: cuBLAS is column-major; a cuBLASLt layout is
//! column-major (`ORDER_COL`) or row-major (`ORDER_ROW`) with its own leading dimension.
//! Stored element (i, j) of an operand is at `base + i*row_stride + j*col_stride` bytes,
//! and `op(X)[p, q]` is stored element (p, q) for op N and (q, p) for op T/C.
//!
//! Every hooked call is ledgered. A call this module cannot describe exactly (arguments
//! the library will reject, or a type, epilogue or mode protocol v1 has no code for) is
//! recorded by [`unmodelled_blas`] / [`unmodelled_lt`] with the UNMODELLED flag: its
//! entry point, m, n, k and batch count as passed (negative sizes as 0, a batch count
//! below 1 as the empty product batch 1, m 0), the other fields best effort.

pub mod gather;
#[cfg(test)]
mod tests;

use mmaudit_protocol::call::{
    flags, reduction_rounds_in_output_type, BatchForm, ComputeType, DType, EntryPoint, Epilogue,
    GemmCall, Op, Operand, Order, Scalar, MAX_DIM,
};
use mmaudit_protocol::num;

use crate::sys::cublas::{compute as cc, data_type as dt, epilogue as ep, math};

/// Where one operand lives, for the gather kernel (byte strides).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Device address of element (0, 0) of batch entry 0, or of the device array of
    /// per-batch pointers when `pointer_array` is set.
    pub base: u64,
    /// `base` is an array of u64 device pointers, one per batch entry.
    pub pointer_array: bool,
    /// Bytes between batch entries (strided batches).
    pub batch_stride: i64,
    /// Bytes between stored rows i and i+1.
    pub row_stride: i64,
    /// Bytes between stored columns j and j+1.
    pub col_stride: i64,
    /// Bytes per element.
    pub elem: u32,
}

/// What the gather needs besides the [`GemmCall`].
#[derive(Clone, Debug, PartialEq)]
pub struct GatherSpec {
    /// A as stored
    pub a: Placement,
    /// B as stored
    pub b: Placement,
    /// C as stored
    pub c: Placement,
    /// D as stored
    pub d: Placement,
    /// Device address of the bias vector (with [`flags::BIAS`]).
    pub bias: u64,
    /// Device address of alpha when it lives on the device.
    pub alpha: u64,
    /// Device address of beta when it lives on the device.
    pub beta: u64,
    /// Bytes between the bias vectors of consecutive batch entries (with
    /// [`flags::BIAS_PER_BATCH`]).
    pub bias_batch_stride: i64,
    /// Device addresses of the f32 scale factors of A, B, C, D (0 = none).
    pub scales: [u64; 4],
}

/// A call in protocol terms (its `index` is assigned later, at ledger time).
#[derive(Clone, Debug, PartialEq)]
pub struct Described {
    /// The canonical call.
    pub call: GemmCall,
    /// Where its operands are.
    pub gather: GatherSpec,
}

/// Why a call cannot be described exactly (it is then ledgered with the UNMODELLED
/// flag, see [`unmodelled_blas`] and [`unmodelled_lt`], and never sampled).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotDescribed {
    /// Arguments the library rejects (or a call that does nothing, batch count 0).
    /// The library normally answers with an error status, and the record also gets
    /// the REJECTED flag.
    Invalid(String),
    /// A valid call this protocol version cannot describe (a type, epilogue or mode it
    /// has no code for); the stream carries a warning notice the first time.
    Unsupported(String),
}

impl NotDescribed {
    /// The reason, for humans.
    pub fn reason(&self) -> &str {
        match self {
            NotDescribed::Invalid(s) | NotDescribed::Unsupported(s) => s,
        }
    }
}

/// alpha or beta as passed: the bytes read from host memory (the first
/// `scale_type.size()` bytes are meaningful), or a device address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScalarArg {
    /// Host pointer mode: the value's bytes, little-endian.
    Host([u8; 8]),
    /// Device pointer mode: where the value lives.
    Device(u64),
}

/// Where and how a call was made (filled by the hook from the driver).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Site {
    /// Device ordinal of the current context.
    pub device: u32,
    /// The stream handle as a number.
    pub stream: u64,
    /// The stream is capturing a CUDA graph.
    pub captured: bool,
}

/// Arguments of any cuBLAS (not Lt) GEMM entry point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlasArgs {
    /// which entry point
    pub entry: EntryPoint,
    /// `transa` (`cublasOperation_t`)
    pub transa: i32,
    /// `transb`
    pub transb: i32,
    /// m
    pub m: i64,
    /// n
    pub n: i64,
    /// k
    pub k: i64,
    /// `cudaDataType` of A (`CUDA_R_32F` for Sgemm, ...)
    pub a_type: i32,
    /// of B
    pub b_type: i32,
    /// of C
    pub c_type: i32,
    /// A, or the device array of A pointers
    pub a: u64,
    /// B, or the array of B pointers
    pub b: u64,
    /// C, or the array of C pointers
    pub c: u64,
    /// lda
    pub lda: i64,
    /// ldb
    pub ldb: i64,
    /// ldc
    pub ldc: i64,
    /// strideA in elements (strided entry points)
    pub stride_a: i64,
    /// strideB
    pub stride_b: i64,
    /// strideC
    pub stride_c: i64,
    /// batch count (1 for single products)
    pub batch: i64,
    /// how the batch is addressed
    pub batch_form: BatchForm,
    /// `cublasComputeType_t` (`CUBLAS_COMPUTE_32F` for Sgemm, `_16F` for Hgemm)
    pub compute: i32,
    /// the handle's `cublasMath_t`
    pub math_mode: i32,
    /// alpha
    pub alpha: ScalarArg,
    /// beta
    pub beta: ScalarArg,
    /// where it was made
    pub site: Site,
}

/// The cuBLASLt matmul descriptor attributes the hook reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LtDesc {
    /// `CUBLASLT_MATMUL_DESC_COMPUTE_TYPE`
    pub compute: i32,
    /// `SCALE_TYPE`
    pub scale_type: i32,
    /// `POINTER_MODE`
    pub pointer_mode: i32,
    /// `TRANSA`
    pub transa: i32,
    /// `TRANSB`
    pub transb: i32,
    /// `TRANSC`
    pub transc: i32,
    /// `EPILOGUE`
    pub epilogue: u32,
    /// `BIAS_POINTER`
    pub bias: u64,
    /// `BIAS_BATCH_STRIDE` (elements)
    pub bias_batch_stride: i64,
    /// `BIAS_DATA_TYPE` (-1 = default)
    pub bias_type: i32,
    /// `A/B/C/D_SCALE_POINTER`
    pub scales: [u64; 4],
    /// `A/B/C/D_SCALE_MODE` and `EPILOGUE_AUX_SCALE_MODE` (0 = SCALAR_32F, the default)
    pub scale_modes: [i32; 5],
    /// `D_OUT_SCALE_POINTER` (0 = none)
    pub d_out_scale: u64,
    /// `FAST_ACCUM` (0 = off)
    pub fast_accum: i32,
}

impl Default for LtDesc {
    fn default() -> Self {
        LtDesc {
            compute: cc::C32F,
            scale_type: dt::R_32F,
            pointer_mode: 0,
            transa: 0,
            transb: 0,
            transc: 0,
            epilogue: ep::DEFAULT,
            bias: 0,
            bias_batch_stride: 0,
            bias_type: -1,
            scales: [0; 4],
            scale_modes: [0; 5],
            d_out_scale: 0,
            fast_accum: 0,
        }
    }
}

/// One cuBLASLt matrix layout's attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LtLayout {
    /// `TYPE` (`cudaDataType`)
    pub dtype: i32,
    /// `ORDER` (`cublasLtOrder_t`)
    pub order: i32,
    /// `ROWS`
    pub rows: u64,
    /// `COLS`
    pub cols: u64,
    /// `LD`
    pub ld: i64,
    /// `BATCH_COUNT`
    pub batch: i32,
    /// `STRIDED_BATCH_OFFSET` (elements)
    pub stride: i64,
    /// `PLANE_OFFSET`
    pub plane_offset: i64,
    /// `BATCH_MODE`
    pub batch_mode: i32,
}

impl LtLayout {
    /// A layout with the defaults cuBLASLt gives `cublasLtMatrixLayoutCreate`.
    pub fn new(dtype: i32, rows: u64, cols: u64, ld: i64) -> Self {
        LtLayout {
            dtype,
            order: crate::sys::cublas::LT_ORDER_COL,
            rows,
            cols,
            ld,
            batch: 1,
            stride: 0,
            plane_offset: 0,
            batch_mode: 0,
        }
    }
}

/// Arguments of `cublasLtMatmul` with its descriptors read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LtArgs {
    /// the matmul descriptor
    pub desc: LtDesc,
    /// A's layout
    pub a_layout: LtLayout,
    /// B's layout
    pub b_layout: LtLayout,
    /// C's layout
    pub c_layout: LtLayout,
    /// D's layout
    pub d_layout: LtLayout,
    /// A
    pub a: u64,
    /// B
    pub b: u64,
    /// C
    pub c: u64,
    /// D
    pub d: u64,
    /// alpha
    pub alpha: ScalarArg,
    /// beta
    pub beta: ScalarArg,
    /// where it was made
    pub site: Site,
    /// The algorithm may add k parts in D's type: it splits k with the `INPLACE` or
    /// `OUTPUT_TYPE` reduction scheme, no algorithm was passed (cuBLASLt chooses), or
    /// its configuration could not be read.
    pub reduced_precision_reduction: bool,
}

/// The protocol dtype of a `cudaDataType`, if it has one.
pub fn dtype_of(t: i32) -> Option<DType> {
    Some(match t {
        dt::R_32F => DType::F32,
        dt::R_64F => DType::F64,
        dt::R_16F => DType::F16,
        dt::R_16BF => DType::BF16,
        dt::R_8I => DType::I8,
        dt::R_32I => DType::I32,
        dt::R_8F_E4M3 => DType::F8E4M3,
        dt::R_8F_E5M2 => DType::F8E5M2,
        _ => return None,
    })
}

fn dtype(t: i32, what: &str) -> Result<DType, NotDescribed> {
    dtype_of(t).ok_or_else(|| {
        NotDescribed::Unsupported(format!(
            "{what} has cudaDataType {t}, which protocol v1 cannot describe"
        ))
    })
}

/// The scale type (of alpha and beta) cuBLAS uses for a compute type.
pub fn blas_scale_type(compute: i32) -> DType {
    match compute {
        cc::C16F | cc::C16F_PEDANTIC => DType::F16,
        cc::C64F | cc::C64F_PEDANTIC => DType::F64,
        cc::C32I | cc::C32I_PEDANTIC => DType::I32,
        _ => DType::F32,
    }
}

/// The protocol compute type of a cuBLAS call: the compute type, refined by the math
/// mode exactly as cuBLAS applies it (TF32 or the deprecated f16 tensor-op mode round
/// f32 inputs of an all-f32, non-pedantic `COMPUTE_32F` GEMM).
pub fn blas_compute(
    compute: i32,
    math_mode: i32,
    all_f32: bool,
) -> Result<ComputeType, NotDescribed> {
    let mode = math_mode & 0xf;
    Ok(match compute {
        cc::C16F | cc::C16F_PEDANTIC => ComputeType::F16,
        cc::C32F if all_f32 && mode == math::TF32_TENSOR_OP => ComputeType::F32FastTf32,
        cc::C32F if all_f32 && mode == math::TENSOR_OP => ComputeType::F32FastF16,
        cc::C32F | cc::C32F_PEDANTIC => ComputeType::F32,
        cc::C32F_FAST_16F => ComputeType::F32FastF16,
        cc::C32F_FAST_16BF => ComputeType::F32FastBf16,
        cc::C32F_FAST_TF32 => ComputeType::F32FastTf32,
        cc::C64F | cc::C64F_PEDANTIC => ComputeType::F64,
        cc::C32I | cc::C32I_PEDANTIC => ComputeType::I32,
        other => {
            return Err(NotDescribed::Unsupported(format!(
                "compute type {other} has no protocol v1 code"
            )))
        }
    })
}

fn op_of(t: i32, what: &str) -> Result<Op, NotDescribed> {
    match t {
        0 => Ok(Op::N),
        1 => Ok(Op::T),
        2 => Ok(Op::C),
        // CUBLAS_OP_CONJG conjugates without transposing: on the real types the model
        // describes (a complex type is outside it anyway) that is exactly N.
        3 => Ok(Op::N),
        t => Err(NotDescribed::Invalid(format!(
            "{what} = {t} is not a cublasOperation_t"
        ))),
    }
}

fn scalar(arg: ScalarArg, scale_type: DType, what: &str) -> Result<(Scalar, u64), NotDescribed> {
    match arg {
        ScalarArg::Device(0) => Err(NotDescribed::Invalid(format!("{what} is a null pointer"))),
        ScalarArg::Device(addr) => Ok((Scalar::Device, addr)),
        ScalarArg::Host(bytes) => {
            let v = num::decode_one(scale_type, &bytes[..scale_type.size()])
                .map_err(|e| NotDescribed::Unsupported(format!("{what}: {e}")))?;
            if v.is_finite() {
                Ok((Scalar::Host(v), 0))
            } else {
                Err(NotDescribed::Unsupported(format!(
                    "{what} = {v} is not finite; protocol v1 records only finite host scalars"
                )))
            }
        }
    }
}

fn dim(v: i64, what: &str) -> Result<u64, NotDescribed> {
    let d =
        u64::try_from(v).map_err(|_| NotDescribed::Invalid(format!("{what} = {v} is negative")))?;
    if d > MAX_DIM {
        return Err(NotDescribed::Invalid(format!(
            "{what} = {v} is above 2^40, the protocol's largest dimension"
        )));
    }
    Ok(d)
}

/// Column-major placement (the cuBLAS API).
fn col_major(base: u64, pointer_array: bool, ld: u64, batch_stride: i64, d: DType) -> Placement {
    let e = d.size() as i64;
    Placement {
        base,
        pointer_array,
        batch_stride: batch_stride.wrapping_mul(e),
        row_stride: e,
        col_stride: (ld as i64).wrapping_mul(e),
        elem: e as u32,
    }
}

/// Describes a cuBLAS GEMM call (every entry point but `cublasLtMatmul`).
pub fn describe_blas(x: &BlasArgs) -> Result<Described, NotDescribed> {
    let op_a = op_of(x.transa, "transa")?;
    let op_b = op_of(x.transb, "transb")?;
    let (m, n, k) = (dim(x.m, "m")?, dim(x.n, "n")?, dim(x.k, "k")?);
    let batch = dim(x.batch, "batch count")?;
    if batch == 0 {
        return Err(NotDescribed::Invalid(
            "batch count 0: nothing is computed".into(),
        ));
    }
    let a_rows = if op_a == Op::N { m } else { k };
    let b_rows = if op_b == Op::N { k } else { n };
    for (name, ld, rows) in [
        ("lda", x.lda, a_rows),
        ("ldb", x.ldb, b_rows),
        ("ldc", x.ldc, m),
    ] {
        if ld < rows.max(1) as i64 {
            return Err(NotDescribed::Invalid(format!(
                "{name} = {ld} is below {}",
                rows.max(1)
            )));
        }
    }
    let (ta, tb, tc) = (
        dtype(x.a_type, "A")?,
        dtype(x.b_type, "B")?,
        dtype(x.c_type, "C")?,
    );
    let all_f32 = [ta, tb, tc].iter().all(|&t| t == DType::F32);
    let compute = blas_compute(x.compute, x.math_mode, all_f32)?;
    let scale_type = blas_scale_type(x.compute);
    let (alpha, alpha_at) = scalar(x.alpha, scale_type, "alpha")?;
    let (beta, beta_at) = scalar(x.beta, scale_type, "beta")?;
    for (name, p) in [("A", x.a), ("B", x.b), ("C", x.c)] {
        if p == 0 && m > 0 && n > 0 {
            return Err(NotDescribed::Invalid(format!("{name} is a null pointer")));
        }
    }
    let strided = x.batch_form == BatchForm::Strided;
    let pointer_array = x.batch_form == BatchForm::PointerArray;
    let stride = |s: i64| if strided { s } else { 0 };
    let operand = |dtype, ld: i64, s: i64| Operand {
        dtype,
        order: Order::Col,
        ld: ld as u64,
        batch_stride: stride(s),
    };
    let mut f = flags::IN_PLACE;
    if x.site.captured {
        f |= flags::CAPTURED;
    }
    if x.math_mode & math::DISALLOW_REDUCED_PRECISION_REDUCTION == 0
        && reduction_rounds_in_output_type(tc, compute)
    {
        f |= flags::REDUCED_PRECISION_REDUCTION;
    }
    let c = operand(tc, x.ldc, x.stride_c);
    let call = GemmCall {
        index: 0,
        entry: x.entry,
        device: x.site.device,
        stream: x.site.stream,
        op_a,
        op_b,
        m,
        n,
        k,
        batch,
        batch_form: x.batch_form,
        a: operand(ta, x.lda, x.stride_a),
        b: operand(tb, x.ldb, x.stride_b),
        c,
        d: c,
        compute,
        scale_type,
        alpha,
        beta,
        epilogue: Epilogue::Default,
        bias_type: tc,
        flags: f,
        replay: None,
    };
    let cp = col_major(x.c, pointer_array, x.ldc as u64, stride(x.stride_c), tc);
    let gather = GatherSpec {
        a: col_major(x.a, pointer_array, x.lda as u64, stride(x.stride_a), ta),
        b: col_major(x.b, pointer_array, x.ldb as u64, stride(x.stride_b), tb),
        c: cp,
        d: cp,
        bias: 0,
        bias_batch_stride: 0,
        alpha: alpha_at,
        beta: beta_at,
        scales: [0; 4],
    };
    Ok(Described { call, gather })
}

/// The protocol compute type of a cuBLASLt compute type (no math mode applies).
pub fn lt_compute(compute: i32) -> Result<ComputeType, NotDescribed> {
    blas_compute(compute, 0, false)
}

fn lt_placement(l: &LtLayout, base: u64, d: DType) -> Placement {
    let e = d.size() as i64;
    let ld = l.ld.wrapping_mul(e);
    let (row_stride, col_stride) = if l.order == crate::sys::cublas::LT_ORDER_ROW {
        (ld, e)
    } else {
        (e, ld)
    };
    Placement {
        base,
        pointer_array: false,
        batch_stride: l.stride.wrapping_mul(e),
        row_stride,
        col_stride,
        elem: e as u32,
    }
}

/// Describes a `cublasLtMatmul` call from its descriptor and layout attributes.
pub fn describe_lt(x: &LtArgs) -> Result<Described, NotDescribed> {
    use crate::sys::cublas::{LT_ORDER_COL, LT_ORDER_ROW};
    let d = &x.desc;
    let op_a = op_of(d.transa, "TRANSA")?;
    let op_b = op_of(d.transb, "TRANSB")?;
    if d.transc != 0 {
        return Err(NotDescribed::Invalid("TRANSC must be CUBLAS_OP_N".into()));
    }
    // One f32 scale per matrix is modelled, and per-row (A) / per-column (B) f32
    // scales; a block scale would make either model wrong, so such calls are recorded
    // as outside the model.
    use crate::sys::cublas::scale_mode::{self as sm, OUTER_VEC_32F, SCALAR_32F};
    for (i, (name, mode)) in ["A", "B", "C", "D", "the epilogue's auxiliary output"]
        .into_iter()
        .zip(d.scale_modes)
        .enumerate()
    {
        if mode != SCALAR_32F && !(i < 2 && mode == OUTER_VEC_32F) {
            return Err(NotDescribed::Unsupported(format!(
                "the scale mode of {name} is {}; protocol v1 models one f32 scale per matrix, or per row of A and column of B, only",
                sm::name(mode)
            )));
        }
    }
    let vector_scales = [
        d.scale_modes[0] == OUTER_VEC_32F,
        d.scale_modes[1] == OUTER_VEC_32F,
    ];
    if d.d_out_scale != 0 {
        return Err(NotDescribed::Unsupported(
            "D_OUT_SCALE_POINTER (a block-scaled output) has no protocol v1 code".into(),
        ));
    }
    let layouts = [
        ("A", &x.a_layout),
        ("B", &x.b_layout),
        ("C", &x.c_layout),
        ("D", &x.d_layout),
    ];
    for (name, l) in layouts {
        if l.order != LT_ORDER_COL && l.order != LT_ORDER_ROW {
            return Err(NotDescribed::Unsupported(format!(
                "layout {name} has order {}; protocol v1 describes column- and row-major only",
                l.order
            )));
        }
        if l.plane_offset != 0 {
            return Err(NotDescribed::Unsupported(format!(
                "layout {name} is planar complex"
            )));
        }
        if l.batch_mode != 0 {
            let mode = match l.batch_mode {
                1 => "pointer-array",
                2 => "grouped (sizes in device memory)",
                _ => "unknown",
            };
            return Err(NotDescribed::Unsupported(format!(
                "layout {name} is in batch mode {} ({mode}); protocol v1 describes strided \
                 cuBLASLt batches only",
                l.batch_mode
            )));
        }
        let rows = if l.order == LT_ORDER_ROW {
            l.cols
        } else {
            l.rows
        };
        if l.ld < rows.max(1) as i64 {
            return Err(NotDescribed::Invalid(format!(
                "layout {name}: ld {} is too small",
                l.ld
            )));
        }
        if l.batch < 1 {
            return Err(NotDescribed::Invalid(format!(
                "layout {name}: batch count {}",
                l.batch
            )));
        }
    }
    let (la, lb, lc, ld) = (&x.a_layout, &x.b_layout, &x.c_layout, &x.d_layout);
    let (m, n) = (ld.rows, ld.cols);
    let k = if op_a == Op::N { la.cols } else { la.rows };
    let a_m = if op_a == Op::N { la.rows } else { la.cols };
    let (b_k, b_n) = if op_b == Op::N {
        (lb.rows, lb.cols)
    } else {
        (lb.cols, lb.rows)
    };
    if a_m != m || b_k != k || b_n != n || lc.rows != m || lc.cols != n {
        return Err(NotDescribed::Invalid(format!(
            "layouts disagree: op(A) {a_m}x{k}, op(B) {b_k}x{b_n}, C {}x{}, D {m}x{n}",
            lc.rows, lc.cols
        )));
    }
    if la.batch != ld.batch || lb.batch != ld.batch || lc.batch != ld.batch {
        return Err(NotDescribed::Invalid(
            "the layouts' batch counts differ".into(),
        ));
    }
    if [m, n, k].iter().any(|&d| d > MAX_DIM) {
        return Err(NotDescribed::Invalid(format!(
            "m x n x k = {m} x {n} x {k}: a dimension is above 2^40, the protocol's largest"
        )));
    }
    let batch = ld.batch as u64;
    let (ta, tb, tc, td) = (
        dtype(la.dtype, "A")?,
        dtype(lb.dtype, "B")?,
        dtype(lc.dtype, "C")?,
        dtype(ld.dtype, "D")?,
    );
    let compute = lt_compute(d.compute)?;
    let scale_type = dtype(d.scale_type, "the scale type")?;
    let (epilogue, bias) = match d.epilogue {
        ep::DEFAULT => (Epilogue::Default, false),
        ep::RELU => (Epilogue::Relu, false),
        ep::BIAS => (Epilogue::Default, true),
        ep::RELU_BIAS => (Epilogue::Relu, true),
        ep::GELU => (Epilogue::GeluTanh, false),
        ep::GELU_BIAS => (Epilogue::GeluTanh, true),
        other => {
            return Err(NotDescribed::Unsupported(format!(
                "epilogue {other} has no protocol v1 code"
            )))
        }
    };
    let (alpha, alpha_at, beta, beta_at) = match d.pointer_mode {
        0 | 1 => {
            let (alpha, alpha_at) = scalar(x.alpha, scale_type, "alpha")?;
            let (beta, beta_at) = scalar(x.beta, scale_type, "beta")?;
            (alpha, alpha_at, beta, beta_at)
        }
        other => {
            return Err(NotDescribed::Unsupported(format!(
                "pointer mode {other} (alpha vectors) has no protocol v1 code"
            )))
        }
    };
    let fp8 = |t: DType| matches!(t, DType::F8E4M3 | DType::F8E5M2);
    let bias_type = if d.bias_type != -1 {
        dtype(d.bias_type, "the bias")?
    } else if fp8(td) {
        tc
    } else {
        td
    };
    let mut f = 0;
    let mut bias_batch_stride = 0;
    if bias {
        if d.bias == 0 {
            return Err(NotDescribed::Invalid(
                "a bias epilogue without a bias pointer".into(),
            ));
        }
        f |= flags::BIAS;
        // BIAS_BATCH_STRIDE (elements) moves to another bias vector per batch entry;
        // with one batch entry there is only the first.
        if batch > 1 && d.bias_batch_stride != 0 {
            f |= flags::BIAS_PER_BATCH;
            bias_batch_stride = d.bias_batch_stride.wrapping_mul(bias_type.size() as i64);
        }
    }
    for (i, (bit, p)) in [
        flags::SCALE_A,
        flags::SCALE_B,
        flags::SCALE_C,
        flags::SCALE_D,
    ]
    .into_iter()
    .zip(d.scales)
    .enumerate()
    {
        if i < 2 && vector_scales[i] {
            let which = ["A", "B"][i];
            if p == 0 {
                return Err(NotDescribed::Invalid(format!(
                    "{which}'s scale mode is OUTER_VEC_32F but it has no scale pointer"
                )));
            }
            if batch > 1 {
                return Err(NotDescribed::Unsupported(format!(
                    "per-row or per-column scales of {which} with a batch of {batch}: how they apply per batch entry is not modelled"
                )));
            }
            f |= [flags::SCALE_A_ROWS, flags::SCALE_B_COLS][i];
        } else if p != 0 {
            f |= bit;
        }
    }
    if x.c == x.d {
        f |= flags::IN_PLACE;
    }
    if x.site.captured {
        f |= flags::CAPTURED;
    }
    if x.reduced_precision_reduction && reduction_rounds_in_output_type(td, compute) {
        f |= flags::REDUCED_PRECISION_REDUCTION;
    }
    // cuBLASLt applies fast accumulation to fp8 inputs only.
    if d.fast_accum != 0 && (fp8(ta) || fp8(tb)) {
        f |= flags::FAST_ACCUM;
    }
    let operand = |l: &LtLayout, dtype| Operand {
        dtype,
        order: if l.order == LT_ORDER_ROW {
            Order::Row
        } else {
            Order::Col
        },
        ld: l.ld as u64,
        batch_stride: if batch > 1 { l.stride } else { 0 },
    };
    let call = GemmCall {
        index: 0,
        entry: EntryPoint::LtMatmul,
        device: x.site.device,
        stream: x.site.stream,
        op_a,
        op_b,
        m,
        n,
        k,
        batch,
        batch_form: if batch > 1 {
            BatchForm::Strided
        } else {
            BatchForm::Single
        },
        a: operand(la, ta),
        b: operand(lb, tb),
        c: operand(lc, tc),
        d: operand(ld, td),
        compute,
        scale_type,
        alpha,
        beta,
        epilogue,
        bias_type,
        flags: f,
        replay: None,
    };
    let gather = GatherSpec {
        a: lt_placement(la, x.a, ta),
        b: lt_placement(lb, x.b, tb),
        c: lt_placement(lc, x.c, tc),
        d: lt_placement(ld, x.d, td),
        bias: if bias { d.bias } else { 0 },
        bias_batch_stride,
        alpha: alpha_at,
        beta: beta_at,
        scales: d.scales,
    };
    Ok(Described { call, gather })
}

// ---------------------------------------------------------------- calls outside the model

/// The protocol dtype recorded for a `cudaDataType` in the ledger record of a call
/// outside the model: its own code when it has one, a complex type's component type,
/// an unsigned type's signed counterpart of the same size, otherwise f32.
pub fn dtype_best_effort(t: i32) -> DType {
    if let Some(d) = dtype_of(t) {
        return d;
    }
    match t {
        4 | 12 | 13 => DType::F32, // CUDA_C_32F; CUDA_R_32U, CUDA_C_32U as 4-byte
        5 => DType::F64,           // CUDA_C_64F
        6 => DType::F16,           // CUDA_C_16F
        15 => DType::BF16,         // CUDA_C_16BF
        7..=9 => DType::I8,        // CUDA_C_8I, CUDA_R_8U, CUDA_C_8U
        11 => DType::I32,          // CUDA_C_32I
        _ => DType::F32,
    }
}

/// `cublasOperation_t` as best as the record can say: `CUBLAS_OP_CONJG` (conjugate
/// without transpose) and unknown values as N.
fn op_best_effort(t: i32) -> Op {
    match t {
        1 => Op::T,
        2 => Op::C,
        _ => Op::N,
    }
}

/// A size as passed, for a record: negative as 0, at most 2^40 (what the protocol can
/// carry).
fn dim_best_effort(v: i64) -> u64 {
    v.clamp(0, MAX_DIM as i64) as u64
}

/// m and the batch count for a record: a batch count below 1 computes nothing and is
/// recorded as the equivalent empty product (batch 1, m 0), since the protocol has no
/// batch count 0.
fn batch_best_effort(m: u64, batch: i64) -> (u64, u64) {
    if batch < 1 {
        (0, 1)
    } else {
        (m, dim_best_effort(batch))
    }
}

fn scalar_best_effort(arg: ScalarArg, scale_type: DType) -> Scalar {
    match arg {
        ScalarArg::Device(_) => Scalar::Device,
        ScalarArg::Host(bytes) => match num::decode_one(scale_type, &bytes[..scale_type.size()]) {
            Ok(v) if v.is_finite() => Scalar::Host(v),
            // A non-finite host scalar cannot be written (the record requires finite
            // host values): 0 stands for it.
            _ => Scalar::Host(0.0),
        },
    }
}

/// The ledger record of a cuBLAS call outside the model (flag UNMODELLED, never
/// sampled): entry point, m, n, k, batch count, ops, leading dimensions and strides as
/// passed (see the module documentation for the sizes), types through
/// [`dtype_best_effort`], the compute type as cuBLAS would apply it (f32 when it has
/// no code), alpha/beta as passed when finite (0 otherwise).
pub fn unmodelled_blas(x: &BlasArgs) -> GemmCall {
    let strided = x.batch_form == BatchForm::Strided;
    let (m, batch) = batch_best_effort(dim_best_effort(x.m), x.batch);
    let operand = |t: i32, ld: i64, stride: i64| Operand {
        dtype: dtype_best_effort(t),
        order: Order::Col,
        ld: ld.max(0) as u64,
        batch_stride: if strided { stride } else { 0 },
    };
    let all_f32 = [x.a_type, x.b_type, x.c_type]
        .iter()
        .all(|&t| t == dt::R_32F);
    let scale_type = blas_scale_type(x.compute);
    let c = operand(x.c_type, x.ldc, x.stride_c);
    let mut f = flags::IN_PLACE | flags::UNMODELLED;
    if x.site.captured {
        f |= flags::CAPTURED;
    }
    GemmCall {
        index: 0,
        entry: x.entry,
        device: x.site.device,
        stream: x.site.stream,
        op_a: op_best_effort(x.transa),
        op_b: op_best_effort(x.transb),
        m,
        n: dim_best_effort(x.n),
        k: dim_best_effort(x.k),
        batch,
        batch_form: x.batch_form,
        a: operand(x.a_type, x.lda, x.stride_a),
        b: operand(x.b_type, x.ldb, x.stride_b),
        c,
        d: c,
        compute: blas_compute(x.compute, x.math_mode, all_f32).unwrap_or(ComputeType::F32),
        scale_type,
        alpha: scalar_best_effort(x.alpha, scale_type),
        beta: scalar_best_effort(x.beta, scale_type),
        epilogue: Epilogue::Default,
        bias_type: c.dtype,
        flags: f,
        replay: None,
    }
}

/// What the cuBLASLt hook could read of a call, for the record of a call outside the
/// model: the descriptor and each layout when they could be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LtPartial {
    /// the matmul descriptor's attributes
    pub desc: Option<LtDesc>,
    /// A, B, C, D layouts
    pub layouts: [Option<LtLayout>; 4],
    /// alpha, when it could be read
    pub alpha: Option<ScalarArg>,
    /// beta, when it could be read
    pub beta: Option<ScalarArg>,
    /// C
    pub c: u64,
    /// D
    pub d: u64,
    /// where it was made
    pub site: Site,
}

impl From<&LtArgs> for LtPartial {
    fn from(x: &LtArgs) -> Self {
        LtPartial {
            desc: Some(x.desc),
            layouts: [
                Some(x.a_layout),
                Some(x.b_layout),
                Some(x.c_layout),
                Some(x.d_layout),
            ],
            alpha: Some(x.alpha),
            beta: Some(x.beta),
            c: x.c,
            d: x.d,
            site: x.site,
        }
    }
}

/// The ledger record of a `cublasLtMatmul` call outside the model (flag UNMODELLED,
/// never sampled): m and n from D's layout (C's when D's is unreadable), k from A's
/// layout and TRANSA (B's and TRANSB when A's is unreadable), the batch count from D's
/// layout; sizes that cannot be read are 0. Types through [`dtype_best_effort`],
/// orders as set (other orders as column-major), the epilogue's activation when it has
/// a code (an aux or backward epilogue as its activation, or none), no bias or scale
/// flags.
pub fn unmodelled_lt(x: &LtPartial) -> GemmCall {
    use crate::sys::cublas::LT_ORDER_ROW;
    let d = x.desc.unwrap_or_default();
    let op_a = op_best_effort(d.transa);
    let op_b = op_best_effort(d.transb);
    let [la, lb, lc, ld] = x.layouts;
    let out = ld.or(lc);
    let clamp = |v: u64| v.min(MAX_DIM);
    let (m, n) = out.map_or((0, 0), |l| (clamp(l.rows), clamp(l.cols)));
    let k = match (la, lb) {
        (Some(a), _) => clamp(if op_a == Op::N { a.cols } else { a.rows }),
        (None, Some(b)) => clamp(if op_b == Op::N { b.rows } else { b.cols }),
        (None, None) => 0,
    };
    let (m, batch) = batch_best_effort(m, out.map_or(1, |l| l.batch as i64));
    let operand = |l: Option<LtLayout>| match l {
        Some(l) => Operand {
            dtype: dtype_best_effort(l.dtype),
            order: if l.order == LT_ORDER_ROW {
                Order::Row
            } else {
                Order::Col
            },
            ld: l.ld.max(0) as u64,
            batch_stride: if batch > 1 { l.stride } else { 0 },
        },
        None => Operand {
            dtype: DType::F32,
            order: Order::Col,
            ld: 0,
            batch_stride: 0,
        },
    };
    let scale_type = dtype_best_effort(d.scale_type);
    let scalar = |s: Option<ScalarArg>| match s {
        Some(s) => scalar_best_effort(s, scale_type),
        None if d.pointer_mode != 0 => Scalar::Device,
        None => Scalar::Host(0.0),
    };
    let epilogue = match d.epilogue & !(ep::BIAS | 128) {
        e if e == ep::RELU => Epilogue::Relu,
        e if e == ep::GELU => Epilogue::GeluTanh,
        _ => Epilogue::Default,
    };
    let (c, dd) = (operand(lc), operand(ld));
    let bias_type = if d.bias_type != -1 {
        dtype_best_effort(d.bias_type)
    } else {
        dd.dtype
    };
    let mut f = flags::UNMODELLED;
    if x.c == x.d {
        f |= flags::IN_PLACE;
    }
    if x.site.captured {
        f |= flags::CAPTURED;
    }
    GemmCall {
        index: 0,
        entry: EntryPoint::LtMatmul,
        device: x.site.device,
        stream: x.site.stream,
        op_a,
        op_b,
        m,
        n,
        k,
        batch,
        batch_form: if batch > 1 {
            BatchForm::Strided
        } else {
            BatchForm::Single
        },
        a: operand(la),
        b: operand(lb),
        c,
        d: dd,
        compute: lt_compute(d.compute).unwrap_or(ComputeType::F32),
        scale_type,
        alpha: scalar(x.alpha),
        beta: scalar(x.beta),
        epilogue,
        bias_type,
        flags: f,
        replay: None,
    }
}

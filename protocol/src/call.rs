//! The canonical description of one GEMM call, in cuBLAS column-major terms.
//!
//! Every entry point the interposer hooks (cublasSgemm_v2 ... cublasLtMatmul) is
//! normalised to one [`GemmCall`]. The prover writes it into the ledger; the verifier
//! re-derives the sampling plan from it, so its byte encoding ([`GemmCall::encode`]) is
//! part of the protocol and must never change within a protocol version.
//!
//! The mathematical meaning is always
//! `D[b] = scale_d * epilogue(alpha * scale_a * scale_b * op(A[b]) op(B[b]) + beta * scale_c * C[b] + bias)`
//! with `op(A)` m x k, `op(B)` k x n, `C`/`D` m x n, for each batch entry `b`.

/// Which API entry point the application called.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EntryPoint {
    /// `cublasSgemm_v2`
    SgemmV2 = 1,
    /// `cublasHgemm`
    Hgemm = 2,
    /// `cublasGemmEx`
    GemmEx = 3,
    /// `cublasSgemmStridedBatched`
    SgemmStridedBatched = 4,
    /// `cublasGemmStridedBatchedEx`
    GemmStridedBatchedEx = 5,
    /// `cublasGemmBatchedEx`
    GemmBatchedEx = 6,
    /// `cublasGemmEx_64`
    GemmEx64 = 7,
    /// `cublasGemmStridedBatchedEx_64`
    GemmStridedBatchedEx64 = 8,
    /// `cublasGemmBatchedEx_64`
    GemmBatchedEx64 = 9,
    /// `cublasLtMatmul`
    LtMatmul = 10,
    /// `cublasSgemm_v2_64`
    SgemmV264 = 11,
    /// `cublasHgemmStridedBatched`
    HgemmStridedBatched = 12,
    /// `cublasDgemm_v2`
    DgemmV2 = 13,
    /// `cublasDgemmStridedBatched`
    DgemmStridedBatched = 14,
    /// `cublasSgemmEx`
    SgemmEx = 15,
    /// `cublasSgemmBatched`
    SgemmBatched = 16,
    /// `cublasHgemmBatched`
    HgemmBatched = 17,
    /// `cublasSgemv_v2` (a GEMM with n = 1)
    SgemvV2 = 18,
    /// `cublasDgemv_v2` (a GEMM with n = 1)
    DgemvV2 = 19,
    /// `cublasGemmGroupedBatchedEx`: one ledger record per group
    GemmGroupedBatchedEx = 20,
    /// `cublasSgemmGroupedBatched`: one ledger record per group
    SgemmGroupedBatched = 21,
    /// `cublasDgemmBatched`
    DgemmBatched = 22,
    /// `cublasDgemmGroupedBatched`: one ledger record per group
    DgemmGroupedBatched = 23,
    /// `cublasHgemm_64`
    Hgemm64 = 24,
    /// `cublasSgemmStridedBatched_64`
    SgemmStridedBatched64 = 25,
    /// `cublasHgemmStridedBatched_64`
    HgemmStridedBatched64 = 26,
    /// `cublasDgemm_v2_64`
    DgemmV264 = 27,
    /// `cublasDgemmStridedBatched_64`
    DgemmStridedBatched64 = 28,
    /// `cublasSgemmEx_64`
    SgemmEx64 = 29,
    /// `cublasSgemmBatched_64`
    SgemmBatched64 = 30,
    /// `cublasHgemmBatched_64`
    HgemmBatched64 = 31,
    /// `cublasDgemmBatched_64`
    DgemmBatched64 = 32,
    /// `cublasSgemv_v2_64`
    SgemvV264 = 33,
    /// `cublasDgemv_v2_64`
    DgemvV264 = 34,
    /// `cublasGemmGroupedBatchedEx_64`
    GemmGroupedBatchedEx64 = 35,
    /// `cublasSgemmGroupedBatched_64`
    SgemmGroupedBatched64 = 36,
    /// `cublasDgemmGroupedBatched_64`
    DgemmGroupedBatched64 = 37,
    /// `cublasCgemm_v2` (complex: recorded, never modelled)
    CgemmV2 = 38,
    /// `cublasCgemm_v2_64` (complex: recorded, never modelled)
    CgemmV264 = 39,
    /// `cublasZgemm_v2` (complex: recorded, never modelled)
    ZgemmV2 = 40,
    /// `cublasZgemm_v2_64` (complex: recorded, never modelled)
    ZgemmV264 = 41,
    /// `cublasCgemm3m` (complex: recorded, never modelled)
    Cgemm3m = 42,
    /// `cublasCgemm3m_64` (complex: recorded, never modelled)
    Cgemm3m64 = 43,
    /// `cublasCgemmStridedBatched` (complex: recorded, never modelled)
    CgemmStridedBatched = 44,
    /// `cublasCgemmStridedBatched_64` (complex: recorded, never modelled)
    CgemmStridedBatched64 = 45,
    /// `cublasZgemmStridedBatched` (complex: recorded, never modelled)
    ZgemmStridedBatched = 46,
    /// `cublasZgemmStridedBatched_64` (complex: recorded, never modelled)
    ZgemmStridedBatched64 = 47,
    /// `cublasCgemm3mStridedBatched` (complex: recorded, never modelled)
    Cgemm3mStridedBatched = 48,
    /// `cublasCgemm3mStridedBatched_64` (complex: recorded, never modelled)
    Cgemm3mStridedBatched64 = 49,
    /// `cublasCgemmBatched` (complex: recorded, never modelled)
    CgemmBatched = 50,
    /// `cublasCgemmBatched_64` (complex: recorded, never modelled)
    CgemmBatched64 = 51,
    /// `cublasZgemmBatched` (complex: recorded, never modelled)
    ZgemmBatched = 52,
    /// `cublasZgemmBatched_64` (complex: recorded, never modelled)
    ZgemmBatched64 = 53,
    /// `cublasCgemm3mBatched` (complex: recorded, never modelled)
    Cgemm3mBatched = 54,
    /// `cublasCgemm3mBatched_64` (complex: recorded, never modelled)
    Cgemm3mBatched64 = 55,
    /// `cublasCgemv_v2` (complex: recorded, never modelled)
    CgemvV2 = 56,
    /// `cublasCgemv_v2_64` (complex: recorded, never modelled)
    CgemvV264 = 57,
    /// `cublasZgemv_v2` (complex: recorded, never modelled)
    ZgemvV2 = 58,
    /// `cublasZgemv_v2_64` (complex: recorded, never modelled)
    ZgemvV264 = 59,
}

impl EntryPoint {
    /// The complex GEMM entry points (`cublasC*`, `cublasZ*`): always outside the
    /// model, their records carry the component type.
    pub fn is_complex(self) -> bool {
        (EntryPoint::CgemmV2 as u8..=EntryPoint::ZgemvV264 as u8).contains(&(self as u8))
    }
}

/// Transpose operation applied to an input matrix (`cublasOperation_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Op {
    /// `CUBLAS_OP_N`
    N = 0,
    /// `CUBLAS_OP_T`
    T = 1,
    /// `CUBLAS_OP_C` (the same as T for the real types audited here)
    C = 2,
}

/// Element type of a matrix, vector or scalar in memory (`cudaDataType_t` subset).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DType {
    /// IEEE binary32
    F32 = 1,
    /// IEEE binary16
    F16 = 2,
    /// bfloat16
    BF16 = 3,
    /// fp8 E4M3 (OCP "FN" variant: no infinities, one NaN pattern per sign)
    F8E4M3 = 4,
    /// fp8 E5M2 (IEEE-like: infinities and NaNs)
    F8E5M2 = 5,
    /// signed 8-bit integer
    I8 = 6,
    /// signed 32-bit integer
    I32 = 7,
    /// IEEE binary64 (scalars only)
    F64 = 8,
}

/// Compute (accumulation) type (`cublasComputeType_t` subset, plus the legacy
/// math-mode TF32 switch folded into [`ComputeType::F32FastTf32`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ComputeType {
    /// `CUBLAS_COMPUTE_16F`: products and sums in binary16.
    F16 = 1,
    /// `CUBLAS_COMPUTE_32F`
    F32 = 2,
    /// `CUBLAS_COMPUTE_32F_FAST_TF32` (or 32F with `CUBLAS_TF32_TENSOR_OP_MATH`):
    /// inputs rounded to tf32, accumulation in binary32.
    F32FastTf32 = 3,
    /// `CUBLAS_COMPUTE_32F_FAST_16F`: inputs rounded to binary16.
    F32FastF16 = 4,
    /// `CUBLAS_COMPUTE_32F_FAST_16BF`: inputs rounded to bfloat16.
    F32FastBf16 = 5,
    /// `CUBLAS_COMPUTE_32I`: exact integer accumulation.
    I32 = 6,
    /// `CUBLAS_COMPUTE_64F`
    F64 = 7,
}

/// Memory order of a matrix (`cublasLtOrder_t` subset). The cuBLAS API is always `Col`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Order {
    /// column-major
    Col = 0,
    /// row-major
    Row = 1,
}

/// How the batch is addressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum BatchForm {
    /// a single matrix product (batch count 1)
    Single = 0,
    /// fixed strides between batch entries
    Strided = 1,
    /// an array of pointers per operand (`cublasGemmBatchedEx`)
    PointerArray = 2,
}

/// The epilogue applied after `alpha*AB + beta*C (+ bias)` (`cublasLtEpilogue_t` subset).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Epilogue {
    /// no epilogue
    Default = 0,
    /// `max(x, 0)`
    Relu = 1,
    /// GELU, tanh approximation (cuBLASLt `CUBLASLT_EPILOGUE_GELU`)
    GeluTanh = 2,
    /// GELU with the exact erf form
    GeluErf = 3,
}

/// A scalar (alpha or beta): its value when passed from the host, or a note that it
/// lives in device memory (its value then travels in the sample record).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scalar {
    /// The exact value, converted losslessly from the scale type to f64.
    Host(f64),
    /// `CUBLAS_POINTER_MODE_DEVICE`: the value is gathered with the sample.
    Device,
}

/// One operand's memory description.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Operand {
    /// element type
    pub dtype: DType,
    /// memory order
    pub order: Order,
    /// leading dimension, in elements
    pub ld: u64,
    /// distance between batch entries in elements (0 when not strided)
    pub batch_stride: i64,
}

/// Bit flags on a ledger entry.
pub mod flags {
    /// The call was made while its stream was capturing a CUDA graph: recorded, not audited.
    pub const CAPTURED: u16 = 1 << 0;
    /// The epilogue adds a bias vector (one value per row of D).
    pub const BIAS: u16 = 1 << 1;
    /// `C` and `D` are the same memory (in-place; the C entries were gathered before the GEMM).
    pub const IN_PLACE: u16 = 1 << 2;
    /// A per-tensor scale factor for A is applied (fp8).
    pub const SCALE_A: u16 = 1 << 3;
    /// A per-tensor scale factor for B is applied (fp8).
    pub const SCALE_B: u16 = 1 << 4;
    /// A per-tensor scale factor for C is applied (fp8).
    pub const SCALE_C: u16 = 1 << 5;
    /// A per-tensor scale factor for D is applied (fp8).
    pub const SCALE_D: u16 = 1 << 6;
    /// The call was made while the prover had no verifier session (before the first
    /// hello of a TCP sink, or between connections): recorded, not sampled. The verifier
    /// reports such calls as "not audited: no session".
    pub const NO_SESSION: u16 = 1 << 7;
    /// The library rejected the call (it returned an error status): nothing was
    /// computed. Recorded so that call indices stay consecutive; never sampled, and its
    /// FLOPs are not claimed.
    pub const REJECTED: u16 = 1 << 8;
    /// A call this protocol version cannot describe exactly (an epilogue, element type
    /// or layout outside the model): recorded with its shape, never sampled; the
    /// verifier reports it as "not audited: not modelled". Fields other than the entry
    /// point, m, n, k and the batch count are best effort.
    pub const UNMODELLED: u16 = 1 << 9;
    /// The bias vector differs per batch entry (cuBLASLt `BIAS_BATCH_STRIDE`): the
    /// sample's bias holds one vector per sampled batch entry, `[batch][row]`.
    pub const BIAS_PER_BATCH: u16 = 1 << 10;
    /// The call is one GEMM of a CUDA graph replay: [`crate::call::GemmCall::replay`] says which
    /// graph, replay and node. Alone it is audited like an eager call; with
    /// [`CAPTURED`] it is "replayed, not audited" (the library could not gather it).
    /// A CAPTURED call without it was recorded while its graph was being captured: it
    /// computed nothing then (its work is done, and ledgered, at each replay) and claims
    /// no FLOPs.
    pub const REPLAYED: u16 = 1 << 11;
    /// fp8 inputs with cuBLASLt's fast accumulation (`CUBLASLT_MATMUL_DESC_FAST_ACCUM`):
    /// the accumulator is not periodically promoted to full f32, so its error is larger
    /// than the f32 model's by an amount no public document bounds. The verifier reports
    /// an entry outside the f32 model's tolerance as unverifiable, not as wrong.
    pub const FAST_ACCUM: u16 = 1 << 12;
    /// A's scale is one f32 per row of op(A) (cuBLASLt `OUTER_VEC_32F`, fp8 rowwise
    /// scaling; without [`SCALE_A`]): the sample carries the sampled rows' scales.
    pub const SCALE_A_ROWS: u16 = 1 << 13;
    /// B's scale is one f32 per column of op(B) (`OUTER_VEC_32F`; without
    /// [`SCALE_B`]): the sample carries the sampled columns' scales.
    pub const SCALE_B_COLS: u16 = 1 << 14;
    /// cuBLAS may add this call's split-k partial sums in D's type (a "reduced
    /// precision reduction"): D is a 16-bit or 8-bit float type narrower than the
    /// accumulator, and the handle's math mode lacks
    /// `CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION` (cuBLAS), or the algorithm
    /// splits k with the `INPLACE` or `OUTPUT_TYPE` reduction scheme or was chosen by
    /// cuBLASLt itself (cuBLASLt). The verifier widens both of its bounds by what such
    /// a reduction can add (docs/PROTOCOL.md) and reports these calls; a policy can
    /// refuse them.
    pub const REDUCED_PRECISION_REDUCTION: u16 = 1 << 15;
    /// Flags whose calls are recorded but never sampled.
    pub const NOT_AUDITED: u16 = CAPTURED | NO_SESSION | REJECTED | UNMODELLED;
    /// Every flag defined in this protocol version.
    pub const ALL: u16 = CAPTURED
        | BIAS
        | IN_PLACE
        | SCALE_A
        | SCALE_B
        | SCALE_C
        | SCALE_D
        | NO_SESSION
        | REJECTED
        | UNMODELLED
        | BIAS_PER_BATCH
        | REPLAYED
        | FAST_ACCUM
        | SCALE_A_ROWS
        | SCALE_B_COLS
        | REDUCED_PRECISION_REDUCTION;
}

/// Where a replayed call comes from (present exactly when [`flags::REPLAYED`] is set).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReplayOf {
    /// The library's number of the captured graph (1, 2, ... in order of capture).
    pub graph: u32,
    /// The library's number of the executable graph that ran it (1, 2, ... in order of
    /// instantiation): a graph instantiated twice has two.
    pub exec: u32,
    /// The replay of that executable graph, counting from 0.
    pub replay: u64,
    /// The GEMM's position in the graph, counting from 0 in capture order.
    pub node: u32,
}

/// Bytes [`ReplayOf`] adds to the encoding of a replayed call.
pub const REPLAY_ENCODED_LEN: usize = 4 + 4 + 8 + 4;

/// The canonical description of one GEMM API call.
#[derive(Clone, Debug, PartialEq)]
pub struct GemmCall {
    /// Position of this call in the stream, counting from 0, every hooked call counted.
    pub index: u64,
    /// API entry point.
    pub entry: EntryPoint,
    /// Device ordinal.
    pub device: u32,
    /// Stream handle as an opaque number (0 = legacy default stream).
    pub stream: u64,
    /// op applied to A
    pub op_a: Op,
    /// op applied to B
    pub op_b: Op,
    /// rows of op(A), C and D
    pub m: u64,
    /// columns of op(B), C and D
    pub n: u64,
    /// inner dimension
    pub k: u64,
    /// batch count (1 for a single product)
    pub batch: u64,
    /// how the batch is addressed
    pub batch_form: BatchForm,
    /// A as stored
    pub a: Operand,
    /// B as stored
    pub b: Operand,
    /// C as stored (read when beta != 0)
    pub c: Operand,
    /// D as stored (the output; the same as C for the cuBLAS API)
    pub d: Operand,
    /// accumulation type
    pub compute: ComputeType,
    /// type of alpha and beta in memory
    pub scale_type: DType,
    /// alpha
    pub alpha: Scalar,
    /// beta
    pub beta: Scalar,
    /// epilogue
    pub epilogue: Epilogue,
    /// element type of the bias vector (meaningful only with [`flags::BIAS`])
    pub bias_type: DType,
    /// [`flags`] bits
    pub flags: u16,
    /// The graph replay that ran it: `Some` exactly when [`flags::REPLAYED`] is set.
    pub replay: Option<ReplayOf>,
}

impl GemmCall {
    /// Multiply-add count times two: the FLOPs this call claims (none for a call the
    /// library rejected, nor for one recorded during a graph capture, which computed
    /// nothing then).
    pub fn flops(&self) -> u128 {
        if self.has(flags::REJECTED) || self.is_capture_record() {
            return 0;
        }
        self.declared_flops()
    }

    /// A call recorded while its stream was capturing a graph (not a replay of it).
    pub fn is_capture_record(&self) -> bool {
        self.has(flags::CAPTURED) && !self.has(flags::REPLAYED)
    }

    /// `2 m n k batch` (`8 m n k batch` for the complex entry points: a complex
    /// multiply-add is four real ones) as the call's arguments declare it, whether or
    /// not it ran; `u128::MAX` when that does not fit (dimensions up to 2^40 each can
    /// reach 2^163).
    pub fn declared_flops(&self) -> u128 {
        let per_mac = if self.entry.is_complex() { 8 } else { 2 };
        [self.n, self.k, self.batch]
            .iter()
            .try_fold(per_mac * self.m as u128, |acc, &d| {
                acc.checked_mul(d as u128)
            })
            .unwrap_or(u128::MAX)
    }

    /// True when the given [`flags`] bit is set.
    pub fn has(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }

    /// Whether C must be read: beta is not known to be zero.
    pub fn reads_c(&self) -> bool {
        !matches!(self.beta, Scalar::Host(b) if b == 0.0)
    }
}

/// Implements `TryFrom<u8>` for a fieldless `#[repr(u8)]` enum: the decoder's only way
/// from a wire byte to an enum, so an unknown value is always an error.
macro_rules! wire_enum {
    ($ty:ident { $($variant:ident),+ $(,)? }) => {
        impl TryFrom<u8> for $ty {
            type Error = u8;
            fn try_from(v: u8) -> Result<Self, u8> {
                $(if v == $ty::$variant as u8 { return Ok($ty::$variant); })+
                Err(v)
            }
        }
    };
}
pub(crate) use wire_enum;

wire_enum!(EntryPoint {
    SgemmV2,
    Hgemm,
    GemmEx,
    SgemmStridedBatched,
    GemmStridedBatchedEx,
    GemmBatchedEx,
    GemmEx64,
    GemmStridedBatchedEx64,
    GemmBatchedEx64,
    LtMatmul,
    SgemmV264,
    HgemmStridedBatched,
    DgemmV2,
    DgemmStridedBatched,
    SgemmEx,
    SgemmBatched,
    HgemmBatched,
    SgemvV2,
    DgemvV2,
    GemmGroupedBatchedEx,
    SgemmGroupedBatched,
    DgemmBatched,
    DgemmGroupedBatched,
    Hgemm64,
    SgemmStridedBatched64,
    HgemmStridedBatched64,
    DgemmV264,
    DgemmStridedBatched64,
    SgemmEx64,
    SgemmBatched64,
    HgemmBatched64,
    DgemmBatched64,
    SgemvV264,
    DgemvV264,
    GemmGroupedBatchedEx64,
    SgemmGroupedBatched64,
    DgemmGroupedBatched64,
    CgemmV2,
    CgemmV264,
    ZgemmV2,
    ZgemmV264,
    Cgemm3m,
    Cgemm3m64,
    CgemmStridedBatched,
    CgemmStridedBatched64,
    ZgemmStridedBatched,
    ZgemmStridedBatched64,
    Cgemm3mStridedBatched,
    Cgemm3mStridedBatched64,
    CgemmBatched,
    CgemmBatched64,
    ZgemmBatched,
    ZgemmBatched64,
    Cgemm3mBatched,
    Cgemm3mBatched64,
    CgemvV2,
    CgemvV264,
    ZgemvV2,
    ZgemvV264,
});
wire_enum!(Op { N, T, C });
wire_enum!(DType {
    F32,
    F16,
    BF16,
    F8E4M3,
    F8E5M2,
    I8,
    I32,
    F64
});
wire_enum!(ComputeType {
    F16,
    F32,
    F32FastTf32,
    F32FastF16,
    F32FastBf16,
    I32,
    F64
});
wire_enum!(Order { Col, Row });
wire_enum!(BatchForm {
    Single,
    Strided,
    PointerArray
});
wire_enum!(Epilogue {
    Default,
    Relu,
    GeluTanh,
    GeluErf
});

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F8E4M3 | DType::F8E5M2 | DType::I8 => 1,
            DType::F16 | DType::BF16 => 2,
            DType::F32 | DType::I32 => 4,
            DType::F64 => 8,
        }
    }

    /// Short lower-case name, as used in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F8E4M3 => "e4m3",
            DType::F8E5M2 => "e5m2",
            DType::I8 => "i8",
            DType::I32 => "i32",
            DType::F64 => "f64",
        }
    }

    /// A 16- or 8-bit float type (f16, bf16, e4m3, e5m2).
    pub fn is_narrow_float(self) -> bool {
        matches!(
            self,
            DType::F16 | DType::BF16 | DType::F8E4M3 | DType::F8E5M2
        )
    }
}

/// Whether adding split-k parts in D's type rounds more than the accumulator: D is a
/// 16- or 8-bit float type and the accumulation is not itself 16F. The calls that may
/// carry [`flags::REDUCED_PRECISION_REDUCTION`], and the only ones whose bounds it
/// widens.
pub fn reduction_rounds_in_output_type(d: DType, compute: ComputeType) -> bool {
    d.is_narrow_float() && compute != ComputeType::F16
}

use crate::codec::{DecodeError, Reader, Writer};

/// A call's encoding as it is built: a fixed buffer on the stack, copied into the
/// output at once (one capacity check instead of one per field).
struct Fixed {
    buf: [u8; GEMM_CALL_ENCODED_LEN + REPLAY_ENCODED_LEN],
    len: usize,
}

impl Fixed {
    #[inline(always)]
    fn put<const N: usize>(&mut self, bytes: [u8; N]) {
        self.buf[self.len..self.len + N].copy_from_slice(&bytes);
        self.len += N;
    }

    #[inline(always)]
    fn u8(&mut self, v: u8) {
        self.put([v]);
    }

    #[inline(always)]
    fn u16(&mut self, v: u16) {
        self.put(v.to_le_bytes());
    }

    #[inline(always)]
    fn u32(&mut self, v: u32) {
        self.put(v.to_le_bytes());
    }

    #[inline(always)]
    fn u64(&mut self, v: u64) {
        self.put(v.to_le_bytes());
    }

    #[inline(always)]
    fn i64(&mut self, v: i64) {
        self.put(v.to_le_bytes());
    }

    #[inline(always)]
    fn scalar(&mut self, s: Scalar) {
        match s {
            Scalar::Host(v) => {
                self.u8(0);
                self.put(v.to_le_bytes());
            }
            Scalar::Device => {
                self.u8(1);
                self.put(0f64.to_le_bytes());
            }
        }
    }
}

fn read_scalar(r: &mut Reader<'_>, what: &'static str) -> Result<Scalar, DecodeError> {
    let at = r.offset();
    let tag = r.u8(what)?;
    let v = r.f64(what)?;
    match tag {
        0 if v.is_finite() => Ok(Scalar::Host(v)),
        0 => Err(r.error_at(at, what, "not a finite number")),
        1 if v.to_bits() == 0 => Ok(Scalar::Device),
        1 => Err(r.error_at(at, what, "a device-side scalar carries a value")),
        t => Err(r.error_at(at, what, format!("unknown scalar kind {t}"))),
    }
}

impl Operand {
    #[inline(always)]
    fn encode(&self, w: &mut Fixed) {
        w.u8(self.dtype as u8);
        w.u8(self.order as u8);
        w.u64(self.ld);
        w.i64(self.batch_stride);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Operand {
            dtype: r.enum_u8("operand dtype")?,
            order: r.enum_u8("operand order")?,
            ld: r.u64("operand leading dimension")?,
            batch_stride: r.i64("operand batch stride")?,
        })
    }
}

/// Size in bytes of [`GemmCall::encode`]'s output for a call that is not replayed
/// (a replayed call adds [`REPLAY_ENCODED_LEN`]).
pub const GEMM_CALL_ENCODED_LEN: usize =
    8 + 1 + 4 + 8 + 2 + 8 * 4 + 1 + 4 * 18 + 2 + 9 * 2 + 1 + 1 + 2;

impl GemmCall {
    /// The canonical byte encoding (little-endian; [`GemmCall::encoded_len`] bytes). It
    /// is both the ledger record's body and the input of the sampling schedule's keyed
    /// hash, so a replayed call's graph, replay and node are bound into its sampling.
    pub fn encode(&self, w: &mut Writer) {
        self.encode_flagged(w, 0);
    }

    /// [`GemmCall::encode`] with `extra` set in the flags field as written (the call
    /// itself is not changed): a producer adds REJECTED or NO_SESSION without copying
    /// the call.
    pub fn encode_flagged(&self, out: &mut Writer, extra: u16) {
        let w = &mut Fixed {
            buf: [0; GEMM_CALL_ENCODED_LEN + REPLAY_ENCODED_LEN],
            len: 0,
        };
        w.u64(self.index);
        w.u8(self.entry as u8);
        w.u32(self.device);
        w.u64(self.stream);
        w.u8(self.op_a as u8);
        w.u8(self.op_b as u8);
        w.u64(self.m);
        w.u64(self.n);
        w.u64(self.k);
        w.u64(self.batch);
        w.u8(self.batch_form as u8);
        for op in [&self.a, &self.b, &self.c, &self.d] {
            op.encode(w);
        }
        w.u8(self.compute as u8);
        w.u8(self.scale_type as u8);
        w.scalar(self.alpha);
        w.scalar(self.beta);
        w.u8(self.epilogue as u8);
        w.u8(self.bias_type as u8);
        w.u16(self.flags | extra);
        if let Some(r) = &self.replay {
            w.u32(r.graph);
            w.u32(r.exec);
            w.u64(r.replay);
            w.u32(r.node);
        }
        out.raw(&w.buf[..w.len]);
    }

    /// The length of [`GemmCall::encode`]'s output.
    pub fn encoded_len(&self) -> usize {
        GEMM_CALL_ENCODED_LEN
            + if self.replay.is_some() {
                REPLAY_ENCODED_LEN
            } else {
                0
            }
    }

    /// The encoding as a fresh vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(self.encoded_len());
        self.encode(&mut w);
        w.buf
    }

    /// Decodes and validates one call: unknown enum values, unknown flags, a zero batch
    /// count and dimensions whose FLOP count does not fit in 128 bits are errors.
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let at = r.offset();
        let mut call = GemmCall {
            index: r.u64("call index")?,
            entry: r.enum_u8("entry point")?,
            device: r.u32("device")?,
            stream: r.u64("stream")?,
            op_a: r.enum_u8("op(A)")?,
            op_b: r.enum_u8("op(B)")?,
            m: r.u64("m")?,
            n: r.u64("n")?,
            k: r.u64("k")?,
            batch: r.u64("batch count")?,
            batch_form: r.enum_u8("batch form")?,
            a: Operand::decode(r)?,
            b: Operand::decode(r)?,
            c: Operand::decode(r)?,
            d: Operand::decode(r)?,
            compute: r.enum_u8("compute type")?,
            scale_type: r.enum_u8("scale type")?,
            alpha: read_scalar(r, "alpha")?,
            beta: read_scalar(r, "beta")?,
            epilogue: r.enum_u8("epilogue")?,
            bias_type: r.enum_u8("bias type")?,
            flags: r.u16("flags")?,
            replay: None,
        };
        // Every one of the 16 bits is defined: none is unknown.
        const { assert!(flags::ALL == u16::MAX) };
        if call.has(flags::REPLAYED) {
            call.replay = Some(ReplayOf {
                graph: r.u32("replay graph")?,
                exec: r.u32("replay executable graph")?,
                replay: r.u64("replay number")?,
                node: r.u32("replay node")?,
            });
        }
        if call.has(flags::BIAS_PER_BATCH) && !call.has(flags::BIAS) {
            return Err(r.error_at(at, "call flags", "a per-batch bias without a bias"));
        }
        if (call.has(flags::SCALE_A_ROWS) && call.has(flags::SCALE_A))
            || (call.has(flags::SCALE_B_COLS) && call.has(flags::SCALE_B))
        {
            return Err(r.error_at(
                at,
                "call flags",
                "a scale both per tensor and per row or column",
            ));
        }
        if call.batch == 0 {
            return Err(r.error_at(at, "batch count", "is zero"));
        }
        for (name, dim) in [
            ("m", call.m),
            ("n", call.n),
            ("k", call.k),
            ("batch", call.batch),
        ] {
            if dim > MAX_DIM {
                return Err(r.error_at(
                    at,
                    "call dimensions",
                    format!("{name} = {dim} is above 2^40"),
                ));
            }
        }
        Ok(call)
    }
}

/// The largest dimension (m, n, k or batch count) a call may declare: 2^40. It keeps
/// every product of two dimensions inside u128 arithmetic with room to spare and far
/// exceeds any real GEMM.
pub const MAX_DIM: u64 = 1 << 40;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A plain f32 GEMM call, for tests.
    pub fn sample_call(index: u64, m: u64, n: u64, k: u64) -> GemmCall {
        let op = |ld| Operand {
            dtype: DType::F32,
            order: Order::Col,
            ld,
            batch_stride: 0,
        };
        GemmCall {
            index,
            entry: EntryPoint::SgemmV2,
            device: 0,
            stream: 0,
            op_a: Op::N,
            op_b: Op::N,
            m,
            n,
            k,
            batch: 1,
            batch_form: BatchForm::Single,
            a: op(m),
            b: op(k),
            c: op(m),
            d: op(m),
            compute: ComputeType::F32,
            scale_type: DType::F32,
            alpha: Scalar::Host(1.0),
            beta: Scalar::Host(0.0),
            epilogue: Epilogue::Default,
            bias_type: DType::F32,
            flags: 0,
            replay: None,
        }
    }

    #[test]
    fn a_replayed_call_carries_its_replay_and_round_trips() {
        let mut c = sample_call(9, 64, 8, 32);
        c.flags = flags::REPLAYED;
        c.replay = Some(ReplayOf {
            graph: 3,
            exec: 4,
            replay: 1 << 33,
            node: 17,
        });
        let bytes = c.to_bytes();
        assert_eq!(bytes.len(), GEMM_CALL_ENCODED_LEN + REPLAY_ENCODED_LEN);
        assert_eq!(bytes.len(), c.encoded_len());
        let back = GemmCall::decode(&mut Reader::new(&bytes, 0, "t")).unwrap();
        assert_eq!(back, c);
        // Cut short: the replay fields are required once the flag is set.
        let short = &bytes[..bytes.len() - 1];
        assert!(GemmCall::decode(&mut Reader::new(short, 0, "t")).is_err());
        // A capture record claims no FLOPs; a replay, and a replay not audited, do.
        let mut cap = sample_call(1, 4, 4, 4);
        cap.flags = flags::CAPTURED;
        assert_eq!(cap.flops(), 0);
        c.flags |= flags::CAPTURED;
        assert_eq!(c.flops(), 2 * 64 * 8 * 32);
    }

    #[test]
    fn encoding_has_fixed_length_and_round_trips() {
        let mut c = sample_call(7, 4096, 16, 4096);
        c.beta = Scalar::Device;
        c.flags = flags::BIAS | flags::IN_PLACE;
        let bytes = c.to_bytes();
        assert_eq!(bytes.len(), GEMM_CALL_ENCODED_LEN);
        let mut r = Reader::new(&bytes, 0, "t");
        assert_eq!(GemmCall::decode(&mut r).unwrap(), c);
        assert!(r.is_empty());
    }

    #[test]
    fn decode_rejects_unknown_values() {
        let c = sample_call(0, 2, 2, 2);
        let mut bytes = c.to_bytes();
        bytes[8] = 99; // entry point
        let e = GemmCall::decode(&mut Reader::new(&bytes, 0, "t")).unwrap_err();
        assert_eq!(e.what, "entry point");
        // Every flag bit is defined (the last, 0x8000, is REDUCED_PRECISION_REDUCTION);
        // BIAS_PER_BATCH without BIAS is still an error.
        let mut bytes = c.to_bytes();
        let n = bytes.len();
        bytes[n - 1] = 0x80;
        let d = GemmCall::decode(&mut Reader::new(&bytes, 0, "t")).unwrap();
        assert_eq!(d.flags, c.flags | flags::REDUCED_PRECISION_REDUCTION);
        let mut bytes = c.to_bytes();
        bytes[n - 2] = 0;
        bytes[n - 1] = (flags::BIAS_PER_BATCH >> 8) as u8;
        let e = GemmCall::decode(&mut Reader::new(&bytes, 0, "t")).unwrap_err();
        assert_eq!(e.what, "call flags");
    }
}

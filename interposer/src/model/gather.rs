//! The gather of one sampled call: the jobs of the `mmaudit_gather` kernel
//! (cuda/gather.cu), the layout of the call's slot in pinned memory, and the sample
//! record assembled from the slot once the device has filled it.
//!
//! A slot holds, in order: the jobs run before the GEMM (C entries, when beta may be
//! non-zero), the jobs run after it, the u64 index lists (rows, columns, batch entries
//! of the plan), then each gathered field. Jobs and lists are written by the host
//! before the launch and read by the device through the mapping; outputs are written
//! by the device and read by the background thread after the call's event completed.
//!
//! Pure: addresses are numbers here. The job ABI (88 bytes, little-endian):
//! `src out batch_idx idx_i idx_j: u64, batch_stride stride_i stride_j: i64,
//! nb ni nj elem_size flags reserved: u32`, and
//! `out[((b*ni)+i)*nj + j] = elem at base(bidx(b)) + idx_i(i)*stride_i + idx_j(j)*stride_j`.

use std::ops::Range;

use mmaudit_protocol::call::{flags, DType, GemmCall, Op, Scalar};
use mmaudit_protocol::num;
use mmaudit_protocol::record::{OperandData, Sample};
use mmaudit_protocol::schedule::Plan;

use super::{GatherSpec, Placement};

/// Bytes of one job.
pub const JOB_BYTES: usize = 88;
/// Job flag: `src` is an array of per-batch device pointers.
pub const FLAG_POINTER_ARRAY: u32 = 1;

/// One gather job with absolute device addresses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Job {
    /// base address, or address of the u64 pointer array
    pub src: u64,
    /// output address
    pub out: u64,
    /// address of `u64[nb]` batch indices, 0 = identity
    pub batch_idx: u64,
    /// address of `u64[ni]` indices, 0 = identity
    pub idx_i: u64,
    /// address of `u64[nj]` indices, 0 = identity
    pub idx_j: u64,
    /// bytes between batch entries
    pub batch_stride: i64,
    /// bytes per i
    pub stride_i: i64,
    /// bytes per j
    pub stride_j: i64,
    /// batch count
    pub nb: u32,
    /// i count
    pub ni: u32,
    /// j count
    pub nj: u32,
    /// 1, 2, 4 or 8
    pub elem_size: u32,
    /// [`FLAG_POINTER_ARRAY`]
    pub flags: u32,
}

impl Job {
    /// The 88-byte ABI encoding.
    pub fn encode(&self) -> [u8; JOB_BYTES] {
        let mut b = [0u8; JOB_BYTES];
        let words = [self.src, self.out, self.batch_idx, self.idx_i, self.idx_j];
        for (i, w) in words.iter().enumerate() {
            b[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        for (i, s) in [self.batch_stride, self.stride_i, self.stride_j]
            .iter()
            .enumerate()
        {
            b[40 + i * 8..48 + i * 8].copy_from_slice(&s.to_le_bytes());
        }
        let small = [self.nb, self.ni, self.nj, self.elem_size, self.flags, 0];
        for (i, v) in small.iter().enumerate() {
            b[64 + i * 4..68 + i * 4].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    /// Decodes the ABI encoding (for tests and the CPU emulation).
    pub fn decode(b: &[u8; JOB_BYTES]) -> Job {
        let u = |at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[at..at + 8]);
            u64::from_le_bytes(w)
        };
        let v = |at: usize| {
            let mut w = [0u8; 4];
            w.copy_from_slice(&b[at..at + 4]);
            u32::from_le_bytes(w)
        };
        Job {
            src: u(0),
            out: u(8),
            batch_idx: u(16),
            idx_i: u(24),
            idx_j: u(32),
            batch_stride: u(40) as i64,
            stride_i: u(48) as i64,
            stride_j: u(56) as i64,
            nb: v(64),
            ni: v(68),
            nj: v(72),
            elem_size: v(76),
            flags: v(80),
        }
    }

    /// Elements this job writes.
    pub fn elements(&self) -> u64 {
        self.nb as u64 * self.ni as u64 * self.nj as u64
    }
}

/// Which index list an axis uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Axis {
    Identity,
    Rows,
    Cols,
    Batches,
}

/// A job whose output and index lists are slot offsets, fixed up by [`SlotLayout::write`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Template {
    src: u64,
    pointer_array: bool,
    out: usize,
    batch: Axis,
    i: Axis,
    j: Axis,
    batch_stride: i64,
    stride_i: i64,
    stride_j: i64,
    nb: u32,
    ni: u32,
    nj: u32,
    elem: u32,
    /// `src` is an offset in the call's device retention slot ([`DeviceLayout`]).
    src_on_device: bool,
    /// `out` is an offset in the call's device retention slot, not in its pinned slot.
    out_on_device: bool,
}

/// Where op(A) of a call lies, as far as telling the same stored weights apart goes:
/// the key of [`crate::held`]'s map from addresses to tensors the verifier holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HeldKey {
    /// the device
    pub device: u32,
    /// op(A)'s placement: base address and strides (never a pointer array)
    pub base: u64,
    /// bytes between batch members
    pub batch_stride: i64,
    /// bytes between rows of op(A)
    pub row_stride: i64,
    /// bytes between elements of a row of op(A)
    pub elem_stride: i64,
    /// rows (m), row length (k), batch members
    pub m: u64,
    /// row length
    pub k: u64,
    /// batch members
    pub batch: u64,
    /// element type
    pub dtype: DType,
}

impl HeldKey {
    /// The key of `call`'s op(A), when it can have one: not a pointer array (whose
    /// pointers may change from call to call), k and m non-zero.
    pub fn of(call: &GemmCall, spec: &GatherSpec) -> Option<HeldKey> {
        let a = &spec.a;
        if a.pointer_array || call.k == 0 || call.m == 0 {
            return None;
        }
        let (row_stride, elem_stride) = op_strides(a, call.op_a);
        Some(HeldKey {
            device: call.device,
            base: a.base,
            batch_stride: a.batch_stride,
            row_stride,
            elem_stride,
            m: call.m,
            k: call.k,
            batch: call.batch,
            dtype: call.a.dtype,
        })
    }
}

/// A tensor of the verifier's hello that op(A) was found to be: its id and the matrix
/// of each batch member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldRef {
    /// the hello's tensor id
    pub tensor: u32,
    /// the matrix of each batch member
    pub matrices: Vec<u32>,
}

/// A whole-call gather (commit mode) whose op(A) is, or may be, a tensor the verifier
/// holds ([`crate::held`]): op(A) is gathered as the first element of each row (the
/// evidence an opening carries) and row `spot_row` of every batch member whole, to find
/// the tensor or check that it is still there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldA {
    /// where op(A) is
    pub key: HeldKey,
    /// the tensor found there before; `None`: a probe
    pub reference: Option<HeldRef>,
    /// the row gathered whole
    pub spot_row: u64,
}

/// Where each gathered field lies in the slot (byte ranges).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fields {
    /// op(A) rows, `[batch][row][k]` (with [`HeldA`]: the first element of each row)
    pub a_rows: Range<usize>,
    /// with [`HeldA`]: its spot row of every batch member, whole, `[batch][k]`; else
    /// empty
    pub a_spot: Range<usize>,
    /// op(B) columns, `[batch][col][k]`
    pub b_cols: Range<usize>,
    /// C entries before the call, `[batch][row][col]`
    pub c_in: Range<usize>,
    /// D entries after the call
    pub d_out: Range<usize>,
    /// bias entries per plan row (`[batch][row]` with a bias per batch entry)
    pub bias: Range<usize>,
    /// device alpha (scale type)
    pub alpha: Option<Range<usize>>,
    /// device beta (scale type)
    pub beta: Option<Range<usize>>,
    /// f32 scale factors of A, B, C, D
    pub scales: [Option<Range<usize>>; 4],
    /// per-row scales of A (f32, one per sampled row), empty when none
    pub scale_rows: Range<usize>,
    /// per-column scales of B (f32, one per sampled column), empty when none
    pub scale_cols: Range<usize>,
}

impl Fields {
    /// Calls `f` with every range of the slot's fields.
    fn each_mut(&mut self, mut f: impl FnMut(&mut Range<usize>)) {
        for r in [
            &mut self.a_rows,
            &mut self.a_spot,
            &mut self.b_cols,
            &mut self.c_in,
            &mut self.d_out,
            &mut self.bias,
            &mut self.scale_rows,
            &mut self.scale_cols,
        ] {
            f(r);
        }
        for r in [&mut self.alpha, &mut self.beta]
            .into_iter()
            .chain(self.scales.iter_mut())
            .flatten()
        {
            f(r);
        }
    }
}

/// The vector of a call's operand of `count` vectors whose copy the host hashes to
/// check the GPU's leaf hashes: another one at every call (`index`).
pub fn checked_vector(index: u64, count: usize) -> usize {
    ((index.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 16) % count.max(1) as u64) as usize
}

/// What the sink needs to offer a sample's operands as references to tensors the
/// verifier holds: their types, k and the plan's indices (the sample's vectors are in
/// `[batch][index][k]` order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SampleOperands {
    /// inner dimension
    pub k: u64,
    /// A's element type
    pub a: DType,
    /// B's element type
    pub b: DType,
    /// the plan's rows (op(A) vectors)
    pub rows: Vec<u64>,
    /// the plan's columns (op(B) vectors)
    pub cols: Vec<u64>,
    /// sampled batch entries
    pub batches: usize,
}

/// Bytes of one job of `mmaudit_commit_leaves` (cuda/README.md gives the ABI).
pub const COMMIT_JOB_BYTES: usize = 64;

/// One job of `mmaudit_commit_leaves`: vector `(b, v)` is the `len` elements at
/// `base(b) + v*vec_stride + e*elem_stride`, and its leaf hash goes to
/// `out + 32*(b*nv + v)` (`out` a slot offset until written).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitJob {
    /// base address, or address of the u64 pointer array
    pub src: u64,
    /// where the `nb*nv` leaf hashes go
    pub out: u64,
    /// bytes between batch members (ignored for a pointer array)
    pub batch_stride: i64,
    /// bytes between consecutive vectors
    pub vec_stride: i64,
    /// bytes between consecutive elements of a vector
    pub elem_stride: i64,
    /// batch members
    pub nb: u32,
    /// vectors per member
    pub nv: u32,
    /// elements per vector
    pub len: u32,
    /// 1, 2, 4 or 8
    pub elem_size: u32,
    /// `src` is an array of per-batch device pointers
    pub pointer_array: bool,
}

impl CommitJob {
    /// The 64-byte ABI encoding.
    pub fn encode(&self) -> [u8; COMMIT_JOB_BYTES] {
        let mut b = [0u8; COMMIT_JOB_BYTES];
        let words = [
            self.src,
            self.out,
            self.batch_stride as u64,
            self.vec_stride as u64,
            self.elem_stride as u64,
        ];
        for (i, w) in words.iter().enumerate() {
            b[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        let small = [
            self.nb,
            self.nv,
            self.len,
            self.elem_size,
            self.pointer_array as u32,
            0,
        ];
        for (i, v) in small.iter().enumerate() {
            b[40 + i * 4..44 + i * 4].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    /// Blocks of 256 threads along x that give every group of lanes one vector (the
    /// kernel's launch contract: a group of `min(2^ceil(log2 chunks), 256)` lanes hashes
    /// a vector of `chunks` BLAKE3 chunks).
    fn blocks(&self) -> u64 {
        let bytes = self.len as u64 * self.elem_size as u64;
        let group = bytes.div_ceil(1024).max(1).next_power_of_two().min(256);
        (self.nb as u64 * self.nv as u64).div_ceil(256 / group)
    }
}

/// Commit mode: the jobs that hash every vector of a whole call on the GPU, right where
/// the call's operands lie, into leaf hashes in the call's slot: C's columns before the
/// GEMM (it may be written in place), op(A)'s rows, op(B)'s columns and D's columns
/// after it. The host then builds the trees over them instead of hashing the data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafJobs {
    /// Offset of the jobs in the slot: the pre-GEMM ones first.
    pub at: usize,
    /// Jobs run before the GEMM (C) and after it (op(A), op(B), D).
    pub pre: u32,
    /// Jobs run after the GEMM.
    pub post: u32,
    /// Blocks along x for the pre and post launches.
    pub blocks_x: [u32; 2],
    /// Where the leaf hashes of op(A), op(B), C and D lie in the slot.
    pub ranges: [Option<Range<usize>>; 4],
    jobs: Vec<CommitJob>,
}

/// Leaf hashes the GPU computed for a whole call: op(A) rows, op(B) columns, C and D
/// columns (`[batch][vector]`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Leaves {
    /// op(A), op(B), C, D; `None` where the GPU hashed none.
    pub sides: [Option<Vec<[u8; 32]>>; 4],
}

/// Most blocks along x of a launch of `mmaudit_commit_leaves` (each loops over more
/// vectors when there are more).
const MAX_COMMIT_BLOCKS_X: u64 = 4096;

/// Most rows, columns and batch members (together) of a call gathered whole (commit
/// mode): the trees over its vectors take at most about 64 MiB on the background thread,
/// whatever the vectors' length.
pub const MAX_WHOLE_VECTORS: u64 = 1 << 20;

/// One operand of a whole call kept in device memory: its vectors back to back,
/// `[batch member][vector]`, each contiguous (C and D as columns).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceSide {
    /// Byte range in the device slot.
    pub range: Range<usize>,
    /// Bytes of one vector.
    pub width: usize,
    /// Bytes of one element.
    pub elem: u32,
    /// Vectors (batch members times vectors per member).
    pub count: usize,
    /// The vector also copied into the pinned slot, for the host's check of the GPU's
    /// leaf hash of it, and where that copy lies in the pinned slot.
    pub check: usize,
    /// Where the copy of vector `check` lies in the pinned slot.
    pub check_at: Range<usize>,
}

/// Commit mode: what of a whole call lies in its slot of the device retention ring.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceLayout {
    /// Bytes of the device slot.
    pub len: usize,
    /// The slot's device address ([`SlotLayout::place_device`]; 0 until placed).
    pub base: u64,
    /// op(A) rows, op(B) columns, C columns, D columns; `None`: in the pinned slot
    /// (or absent).
    pub sides: [Option<DeviceSide>; 4],
}

/// Vectors of one kept operand to open: vectors `picks` of batch members `batches`,
/// `per` vectors a member.
pub struct Picks<'a> {
    /// Vectors a batch member.
    pub per: u64,
    /// Batch members.
    pub batches: &'a [u64],
    /// Vectors of each member.
    pub picks: &'a [u64],
}

/// The pinned slot of an opening gathered from a call kept in device memory: one
/// gather job per operand opened there, its batch and vector lists, then the opened
/// vectors of each, `[batch][pick]`, as an opening carries them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpeningLayout {
    /// Bytes of the pinned slot.
    pub len: usize,
    /// Jobs (at the start of the slot).
    pub jobs: u32,
    /// The largest element count of one job (for the launch grid).
    pub max_elements: u64,
    /// Where the opened vectors of op(A), op(B), C, D land in the slot.
    pub outputs: [Option<Range<usize>>; 4],
    /// One per job.
    parts: Vec<OpenedPart>,
}

/// One operand of an [`OpeningLayout`]: where it is kept, where its two lists and its
/// opened vectors lie in the pinned slot, and what is opened.
#[derive(Clone, Debug, PartialEq, Eq)]
struct OpenedPart {
    side: DeviceSide,
    batches_at: usize,
    picks_at: usize,
    per: u64,
    batches: Vec<u64>,
    picks: Vec<u64>,
    out: Range<usize>,
}

impl OpeningLayout {
    /// The opening of `picks` (per operand; `None`: not kept in device memory, or not
    /// opened) from `device`; `None` when nothing is opened or a count does not fit a
    /// job.
    pub fn new(device: &DeviceLayout, picks: &[Option<Picks<'_>>; 4]) -> Option<OpeningLayout> {
        let mut opened = Vec::new();
        for (p, side) in picks.iter().zip(&device.sides) {
            if let (Some(p), Some(s)) = (p, side) {
                opened.push((p, s));
            }
        }
        if opened.is_empty() {
            return None;
        }
        let mut at = opened.len() * JOB_BYTES;
        let mut parts = Vec::new();
        let mut outputs: [Option<Range<usize>>; 4] = Default::default();
        let mut max_elements = 0u64;
        for (p, s) in &opened {
            let (nb, ni) = (p.batches.len(), p.picks.len());
            count(nb as u64, "batch members").ok()?;
            count(ni as u64, "vectors").ok()?;
            let nj = count((s.width / s.elem as usize) as u64, "vector length").ok()?;
            if nb == 0 || ni == 0 || nj == 0 {
                return None;
            }
            // u64 lists must be 8-aligned (the kernel skips a job whose are not), and
            // the previous operand's vectors may end anywhere.
            let lists = (align8(at), align8(at) + 8 * nb);
            at = align8(lists.1 + 8 * ni);
            let out = at..at + nb * ni * s.width;
            at = out.end;
            max_elements = max_elements.max((nb * ni) as u64 * nj as u64);
            let side = device.sides.iter().position(|d| d.as_ref() == Some(*s))?;
            outputs[side] = Some(out.clone());
            parts.push(OpenedPart {
                side: (*s).clone(),
                batches_at: lists.0,
                picks_at: lists.1,
                per: p.per,
                batches: p.batches.to_vec(),
                picks: p.picks.to_vec(),
                out,
            });
        }
        Some(OpeningLayout {
            len: at,
            jobs: parts.len() as u32,
            max_elements,
            outputs,
            parts,
        })
    }

    /// Writes the jobs and lists into the slot's host view `buf` ([`OpeningLayout::len`]
    /// bytes at least), for a pinned slot at device address `base` and a device slot at
    /// `device`.
    pub fn write(&self, base: u64, device: u64, buf: &mut [u8]) {
        for (i, p) in self.parts.iter().enumerate() {
            let s = &p.side;
            for (j, v) in p.batches.iter().enumerate() {
                let at = p.batches_at + 8 * j;
                buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
            }
            for (j, v) in p.picks.iter().enumerate() {
                let at = p.picks_at + 8 * j;
                buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
            }
            let job = Job {
                src: device + s.range.start as u64,
                out: base + p.out.start as u64,
                batch_idx: base + p.batches_at as u64,
                idx_i: base + p.picks_at as u64,
                idx_j: 0,
                batch_stride: (p.per as i64).wrapping_mul(s.width as i64),
                stride_i: s.width as i64,
                stride_j: s.elem as i64,
                nb: p.batches.len() as u32,
                ni: p.picks.len() as u32,
                nj: (s.width / s.elem as usize) as u32,
                elem_size: s.elem,
                flags: 0,
            };
            buf[i * JOB_BYTES..(i + 1) * JOB_BYTES].copy_from_slice(&job.encode());
        }
    }
}

/// Every vector of a device-kept operand starts at a multiple of this in the device
/// slot (the gather's element stores stay aligned, the opening's reads coalesce).
const DEVICE_ALIGN: usize = 256;

/// What a sampled call's gather covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pick {
    /// The schedule's plan (sampling mode).
    Plan(Plan),
    /// Every row, column and batch member (commit mode): no index lists, identity axes.
    Whole,
}

/// The slot of one sampled call: its size, its jobs and where each field lands.
#[derive(Clone, Debug, PartialEq)]
pub struct SlotLayout {
    /// Bytes of the slot.
    pub len: usize,
    /// Jobs `0..pre_jobs` run before the forwarded GEMM.
    pub pre_jobs: u32,
    /// Jobs `pre_jobs..pre_jobs + post_jobs` run after it.
    pub post_jobs: u32,
    /// Where the gathered fields are.
    pub fields: Fields,
    /// The call the sample belongs to (commit mode binds the commitment to its ledger
    /// encoding).
    pub call: GemmCall,
    /// Commit mode: op(A) gathered as a held tensor's evidence and spot row.
    pub held: Option<HeldA>,
    /// Where op(A) is ([`HeldKey::of`]), for remembering a tensor found there.
    pub a_key: Option<HeldKey>,
    /// Type of alpha and beta.
    pub scale_type: DType,
    templates: Vec<Template>,
    rows: Vec<u64>,
    cols: Vec<u64>,
    batches: Vec<u64>,
    lists_at: [usize; 3],
    /// The whole call: every axis is the identity (no lists).
    whole: bool,
    /// Commit mode: the jobs that hash the whole call's vectors on the GPU
    /// ([`SlotLayout::hashing_leaves`]).
    pub leaves: Option<LeafJobs>,
    /// Commit mode: the whole call's vectors go to a slot of the context's retention
    /// ring in device memory, not to this pinned slot ([`SlotLayout::to_device`]).
    pub device: Option<DeviceLayout>,
    /// The largest element count of one job (for the launch grid).
    pub max_elements: u64,
    k: u64,
    a_dtype: DType,
    b_dtype: DType,
}

fn count(n: u64, what: &str) -> Result<u32, String> {
    u32::try_from(n).map_err(|_| format!("{what} = {n} is too large for one gather job"))
}

fn align8(x: usize) -> usize {
    (x + 7) & !7
}

/// Strides of `op(X)[p, q]` for a stored operand: (p, q).
fn op_strides(p: &Placement, op: Op) -> (i64, i64) {
    match op {
        Op::N => (p.row_stride, p.col_stride),
        Op::T | Op::C => (p.col_stride, p.row_stride),
    }
}

impl SlotLayout {
    /// Plans the gather of `call` (with `spec`) sampled by `plan`.
    pub fn new(call: &GemmCall, spec: &GatherSpec, plan: &Plan) -> Result<SlotLayout, String> {
        Self::with_held(call, spec, &Pick::Plan(plan.clone()), None)
    }

    /// Plans the gather of `call` (with `spec`) for `pick`; a whole call (commit mode)
    /// whose op(A) is `held` gathers op(A) as the first element of each row and one
    /// whole row per batch member.
    pub fn with_held(
        call: &GemmCall,
        spec: &GatherSpec,
        pick: &Pick,
        held: Option<HeldA>,
    ) -> Result<SlotLayout, String> {
        let whole = matches!(pick, Pick::Whole);
        if let Some(h) = &held {
            if !whole || h.spot_row >= call.m || HeldKey::of(call, spec) != Some(h.key) {
                return Err(
                    "a held op(A) is gathered only for a whole call at its own address".into(),
                );
            }
        }
        let empty = Plan::default();
        let plan = match pick {
            Pick::Plan(p) => p,
            Pick::Whole => &empty,
        };
        let (rows, cols, batches) = match pick {
            Pick::Plan(p) => (
                p.rows.len() as u64,
                p.cols.len() as u64,
                p.batches.len() as u64,
            ),
            Pick::Whole => (call.m, call.n, call.batch),
        };
        if whole && rows.saturating_add(cols).saturating_add(batches) > MAX_WHOLE_VECTORS {
            return Err(format!(
                "the call is too large to gather whole: {rows} rows, {cols} columns and {batches} batch members (at most {MAX_WHOLE_VECTORS} together)"
            ));
        }
        let nb = count(batches, "sampled batch entries")?;
        let nr = count(rows, "sampled rows")?;
        let nc = count(cols, "sampled columns")?;
        let k = count(call.k, "k")?;
        let mut out_len = 0usize;
        let mut field = |elements: u64, elem: u32| -> Result<Range<usize>, String> {
            let bytes = elements
                .checked_mul(elem as u64)
                .and_then(|b| usize::try_from(b).ok())
                .ok_or("a gathered field does not fit in memory")?;
            let start = align8(out_len);
            out_len = start.checked_add(bytes).ok_or("slot size overflows")?;
            Ok(start..out_len)
        };
        let mut pre = Vec::new();
        let mut post = Vec::new();
        let mut fields = Fields::default();
        let entries = nb as u64 * nr as u64 * nc as u64;
        let batch_axis = Axis::Batches;

        if call.reads_c() {
            let c = &spec.c;
            fields.c_in = field(entries, c.elem)?;
            pre.push(Template {
                src: c.base,
                pointer_array: c.pointer_array,
                out: fields.c_in.start,
                batch: batch_axis,
                i: Axis::Rows,
                j: Axis::Cols,
                batch_stride: c.batch_stride,
                stride_i: c.row_stride,
                stride_j: c.col_stride,
                nb,
                ni: nr,
                nj: nc,
                elem: c.elem,
                src_on_device: false,
                out_on_device: false,
            });
        }
        if k > 0 {
            let a = &spec.a;
            let (si, sk) = op_strides(a, call.op_a);
            // A held op(A): one element a row, and the spot row whole.
            let per_row = if held.is_some() { 1 } else { k };
            fields.a_rows = field(nb as u64 * nr as u64 * per_row as u64, a.elem)?;
            post.push(Template {
                src: a.base,
                pointer_array: a.pointer_array,
                out: fields.a_rows.start,
                batch: batch_axis,
                i: Axis::Rows,
                j: Axis::Identity,
                batch_stride: a.batch_stride,
                stride_i: si,
                stride_j: sk,
                nb,
                ni: nr,
                nj: per_row,
                elem: a.elem,
                src_on_device: false,
                out_on_device: false,
            });
            if let Some(h) = &held {
                let members = count(call.batch, "batch members")?;
                fields.a_spot = field(members as u64 * k as u64, a.elem)?;
                post.push(Template {
                    src: a
                        .base
                        .wrapping_add((h.spot_row as i64).wrapping_mul(si) as u64),
                    pointer_array: false,
                    out: fields.a_spot.start,
                    batch: Axis::Identity,
                    i: Axis::Identity,
                    j: Axis::Identity,
                    batch_stride: a.batch_stride,
                    stride_i: 0,
                    stride_j: sk,
                    nb: members,
                    ni: 1,
                    nj: k,
                    elem: a.elem,
                    src_on_device: false,
                    out_on_device: false,
                });
            }
            let b = &spec.b;
            let (sk, sj) = op_strides(b, call.op_b);
            fields.b_cols = field(nb as u64 * nc as u64 * k as u64, b.elem)?;
            post.push(Template {
                src: b.base,
                pointer_array: b.pointer_array,
                out: fields.b_cols.start,
                batch: batch_axis,
                i: Axis::Cols,
                j: Axis::Identity,
                batch_stride: b.batch_stride,
                stride_i: sj,
                stride_j: sk,
                nb,
                ni: nc,
                nj: k,
                elem: b.elem,
                src_on_device: false,
                out_on_device: false,
            });
        } else {
            fields.a_rows = 0..0;
            fields.b_cols = 0..0;
        }
        let d = &spec.d;
        fields.d_out = field(entries, d.elem)?;
        post.push(Template {
            src: d.base,
            pointer_array: d.pointer_array,
            out: fields.d_out.start,
            batch: batch_axis,
            i: Axis::Rows,
            j: Axis::Cols,
            batch_stride: d.batch_stride,
            stride_i: d.row_stride,
            stride_j: d.col_stride,
            nb,
            ni: nr,
            nj: nc,
            elem: d.elem,
            src_on_device: false,
            out_on_device: false,
        });
        let single = |src: u64, out: usize, elem: u32| Template {
            src,
            pointer_array: false,
            out,
            batch: Axis::Identity,
            i: Axis::Identity,
            j: Axis::Identity,
            batch_stride: 0,
            stride_i: 0,
            stride_j: 0,
            nb: 1,
            ni: 1,
            nj: 1,
            elem,
            src_on_device: false,
            out_on_device: false,
        };
        if call.has(flags::BIAS) {
            // bias[r] per plan row; with a bias vector per batch entry, one such
            // vector per sampled batch entry, [batch][row].
            let e = call.bias_type.size() as u32;
            let per_batch = call.has(flags::BIAS_PER_BATCH);
            let nbb = if per_batch { nb } else { 1 };
            fields.bias = field(nbb as u64 * nr as u64, e)?;
            post.push(Template {
                src: spec.bias,
                pointer_array: false,
                out: fields.bias.start,
                batch: if per_batch {
                    Axis::Batches
                } else {
                    Axis::Identity
                },
                i: Axis::Rows,
                j: Axis::Identity,
                batch_stride: if per_batch { spec.bias_batch_stride } else { 0 },
                stride_i: e as i64,
                stride_j: 0,
                nb: nbb,
                ni: nr,
                nj: 1,
                elem: e,
                src_on_device: false,
                out_on_device: false,
            });
        } else {
            fields.bias = 0..0;
        }
        let st = call.scale_type.size() as u32;
        if call.alpha == Scalar::Device {
            let r = field(1, st)?;
            post.push(single(spec.alpha, r.start, st));
            fields.alpha = Some(r);
        }
        if call.beta == Scalar::Device {
            let r = field(1, st)?;
            post.push(single(spec.beta, r.start, st));
            fields.beta = Some(r);
        }
        let scale_flags = [
            flags::SCALE_A,
            flags::SCALE_B,
            flags::SCALE_C,
            flags::SCALE_D,
        ];
        for (i, bit) in scale_flags.into_iter().enumerate() {
            if call.has(bit) {
                let r = field(1, 4)?;
                post.push(single(spec.scales[i], r.start, 4));
                fields.scales[i] = Some(r);
            }
        }
        // Per-row scales of A (one f32 per row of D) and per-column scales of B: the
        // sampled rows' and columns' entries, in plan order.
        for (bit, src, axis, count, range) in [
            (
                flags::SCALE_A_ROWS,
                spec.scales[0],
                Axis::Rows,
                nr,
                &mut fields.scale_rows,
            ),
            (
                flags::SCALE_B_COLS,
                spec.scales[1],
                Axis::Cols,
                nc,
                &mut fields.scale_cols,
            ),
        ] {
            if call.has(bit) {
                *range = field(count as u64, 4)?;
                post.push(Template {
                    src,
                    pointer_array: false,
                    out: range.start,
                    batch: Axis::Identity,
                    i: axis,
                    j: Axis::Identity,
                    batch_stride: 0,
                    stride_i: 4,
                    stride_j: 0,
                    nb: 1,
                    ni: count,
                    nj: 1,
                    elem: 4,
                    src_on_device: false,
                    out_on_device: false,
                });
            }
        }

        // Slot: jobs, lists, then the outputs planned above (shifted).
        let njobs = pre.len() + post.len();
        let jobs_len = njobs * JOB_BYTES;
        let rows_at = jobs_len;
        let cols_at = rows_at + 8 * plan.rows.len();
        let batches_at = cols_at + 8 * plan.cols.len();
        let outputs_at = align8(batches_at + 8 * plan.batches.len());
        fields.each_mut(|r| *r = r.start + outputs_at..r.end + outputs_at);
        let mut templates = pre;
        let pre_jobs = templates.len() as u32;
        templates.extend(post);
        let mut max_elements = 0;
        for t in &mut templates {
            t.out += outputs_at;
            max_elements = max_elements.max(t.nb as u64 * t.ni as u64 * t.nj as u64);
        }
        Ok(SlotLayout {
            len: outputs_at + out_len,
            pre_jobs,
            post_jobs: (njobs as u32) - pre_jobs,
            fields,
            call: call.clone(),
            a_key: HeldKey::of(call, spec),
            held,
            scale_type: call.scale_type,
            templates,
            rows: plan.rows.clone(),
            cols: plan.cols.clone(),
            batches: plan.batches.clone(),
            whole,
            leaves: None,
            device: None,
            lists_at: [rows_at, cols_at, batches_at],
            max_elements,
            k: call.k,
            a_dtype: call.a.dtype,
            b_dtype: call.b.dtype,
        })
    }

    /// Commit mode: the same whole-call gather with the operands `sides` names (op(A)
    /// rows, op(B) columns, C columns, D columns) copied into a slot of the device
    /// retention ring instead of the pinned slot, C and D laid out as columns; for each,
    /// one vector (which one moves from call to call) is also copied into the pinned
    /// slot for the host's check of the GPU's leaf hashes. What stays pinned (a held
    /// op(A)'s evidence, scalars, bias, scales) is laid out again, packed. `None` when
    /// this is not a whole call, no side moves, or the leaf hashes were added already
    /// (call this first).
    pub fn to_device(&self, sides: [bool; 4]) -> Option<SlotLayout> {
        if !self.whole || self.leaves.is_some() || self.device.is_some() {
            return None;
        }
        let call = &self.call;
        let fields = [
            &self.fields.a_rows,
            &self.fields.b_cols,
            &self.fields.c_in,
            &self.fields.d_out,
        ];
        let mut out = self.clone();
        let mut device = DeviceLayout::default();
        let mut checks = Vec::new();
        for side in 0..4 {
            let range = fields[side];
            if !sides[side] || range.is_empty() || (side == 0 && self.held.is_some()) {
                continue;
            }
            let t = out.templates.iter_mut().find(|t| t.out == range.start)?;
            // op(A) rows and op(B) columns are k long; C and D columns m.
            let per = if side >= 2 { call.m } else { call.k };
            let width = usize::try_from(per.checked_mul(t.elem as u64)?).ok()?;
            let count = range.len() / width.max(1);
            if width == 0 || count * width != range.len() {
                return None;
            }
            let at = device.len.next_multiple_of(DEVICE_ALIGN);
            device.len = at.checked_add(range.len())?;
            t.out = at;
            t.out_on_device = true;
            if side >= 2 {
                // C and D as columns: i runs over columns, j down a column.
                std::mem::swap(&mut t.i, &mut t.j);
                std::mem::swap(&mut t.ni, &mut t.nj);
                std::mem::swap(&mut t.stride_i, &mut t.stride_j);
            }
            let check = checked_vector(call.index, count);
            checks.push(Template {
                src: (at + check * width) as u64,
                pointer_array: false,
                out: 0,
                batch: Axis::Identity,
                i: Axis::Identity,
                j: Axis::Identity,
                batch_stride: 0,
                stride_i: 0,
                stride_j: t.elem as i64,
                nb: 1,
                ni: 1,
                nj: (width / t.elem as usize) as u32,
                elem: t.elem,
                src_on_device: true,
                out_on_device: false,
            });
            device.sides[side] = Some(DeviceSide {
                range: at..at + range.len(),
                width,
                elem: t.elem,
                count,
                check,
                check_at: 0..0,
            });
        }
        if checks.is_empty() {
            return None;
        }
        // The checks run last, after every copy into the device slot.
        out.post_jobs += checks.len() as u32;
        out.templates.extend(checks);
        // Lay the pinned outputs out again, packed, after the jobs (a whole call has no
        // index lists).
        let jobs_len = out.templates.len() * JOB_BYTES;
        let outputs_at = align8(jobs_len);
        let mut moved = Vec::new();
        let mut end = outputs_at;
        out.max_elements = 0;
        for t in &mut out.templates {
            out.max_elements = out
                .max_elements
                .max(t.nb as u64 * t.ni as u64 * t.nj as u64);
            if t.out_on_device {
                continue;
            }
            let bytes = t.nb as usize * t.ni as usize * t.nj as usize * t.elem as usize;
            let at = align8(end);
            if !t.src_on_device {
                moved.push((t.out, at));
            }
            t.out = at;
            end = at + bytes;
        }
        let mut check_outs = out
            .templates
            .iter()
            .filter(|t| t.src_on_device)
            .map(|t| t.out..t.out + t.nj as usize * t.elem as usize);
        for side in device.sides.iter_mut().flatten() {
            side.check_at = check_outs.next()?;
        }
        // Every field moves with its template; a field moved to the device slot (its
        // template is no longer among them) or empty has no place here.
        out.fields.each_mut(|r| {
            *r = match moved.iter().find(|(from, _)| *from == r.start) {
                Some(&(_, to)) if r.end > r.start => to..to + r.len(),
                _ => 0..0,
            }
        });
        out.lists_at = [jobs_len; 3];
        out.len = end;
        out.device = Some(device);
        Some(out)
    }

    /// Sets the device address of the call's retention slot ([`SlotLayout::to_device`]).
    pub fn place_device(&mut self, base: u64) {
        if let Some(d) = &mut self.device {
            d.base = base;
        }
    }

    /// The copies of the checked vectors ([`DeviceSide::check`]) the slot's `bytes`
    /// hold once the gather completed: op(A), op(B), C, D.
    pub fn device_checks(&self, bytes: &[u8]) -> [Option<Vec<u8>>; 4] {
        let mut out: [Option<Vec<u8>>; 4] = Default::default();
        if let Some(d) = &self.device {
            for (o, side) in out.iter_mut().zip(&d.sides) {
                *o = side
                    .as_ref()
                    .and_then(|s| bytes.get(s.check_at.clone()))
                    .map(<[u8]>::to_vec);
            }
        }
        out
    }

    /// Adds the jobs that hash the whole call's vectors on the GPU ([`LeafJobs`]), when
    /// the slot then still fits in `capacity` bytes. Only for a whole call with k > 0
    /// (a held op(A), gathered as evidence and bound by reference, is not hashed; op(B),
    /// C and D are); otherwise, or when it would not fit, the layout is unchanged and
    /// the host hashes the vectors it gathered.
    pub fn hashing_leaves(mut self, spec: &GatherSpec, capacity: usize) -> SlotLayout {
        let call = &self.call;
        if !self.whole || call.k == 0 || self.leaves.is_some() {
            return self;
        }
        let (Ok(nb), Ok(m), Ok(n), Ok(k)) = (
            u32::try_from(call.batch),
            u32::try_from(call.m),
            u32::try_from(call.n),
            u32::try_from(call.k),
        ) else {
            return self;
        };
        let job = |p: &Placement, vec_stride: i64, elem_stride: i64, nv: u32, len: u32| CommitJob {
            src: p.base,
            out: 0,
            batch_stride: p.batch_stride,
            vec_stride,
            elem_stride,
            nb,
            nv,
            len,
            elem_size: p.elem,
            pointer_array: p.pointer_array,
        };
        let (a_row, a_elem) = op_strides(&spec.a, call.op_a);
        let (b_elem, b_col) = op_strides(&spec.b, call.op_b);
        // [side, job]: 0 op(A) rows, 1 op(B) columns, 2 C columns, 3 D columns.
        let mut pre = Vec::new();
        if call.reads_c() {
            pre.push((2, job(&spec.c, spec.c.col_stride, spec.c.row_stride, n, m)));
        }
        // A held op(A) is gathered as evidence and bound by reference: not hashed.
        let post = [
            (self.held.is_none()).then(|| (0, job(&spec.a, a_row, a_elem, m, k))),
            Some((1, job(&spec.b, b_col, b_elem, n, k))),
            Some((3, job(&spec.d, spec.d.col_stride, spec.d.row_stride, n, m))),
        ];
        let post: Vec<_> = post.into_iter().flatten().collect();
        let at = align8(self.len);
        let (npre, npost) = (pre.len() as u32, post.len() as u32);
        let mut end = at + (pre.len() + post.len()) * COMMIT_JOB_BYTES;
        let mut ranges: [Option<Range<usize>>; 4] = Default::default();
        let mut jobs = Vec::new();
        for (side, mut j) in pre.into_iter().chain(post) {
            let hashes = j.nb as usize * j.nv as usize * 32;
            j.out = end as u64;
            ranges[side] = Some(end..end + hashes);
            end += hashes;
            jobs.push(j);
        }
        if end > capacity {
            return self;
        }
        let blocks = |js: &[CommitJob]| {
            js.iter()
                .map(CommitJob::blocks)
                .max()
                .unwrap_or(1)
                .clamp(1, MAX_COMMIT_BLOCKS_X) as u32
        };
        let (p, q) = jobs.split_at(npre as usize);
        self.leaves = Some(LeafJobs {
            at,
            pre: npre,
            post: npost,
            blocks_x: [blocks(p), blocks(q)],
            ranges,
            jobs,
        });
        self.len = end;
        self
    }

    /// The commit jobs with absolute addresses for a slot at device address `base`.
    pub fn commit_jobs(&self, base: u64) -> Vec<CommitJob> {
        let Some(l) = &self.leaves else {
            return Vec::new();
        };
        l.jobs
            .iter()
            .map(|j| CommitJob {
                out: base + j.out,
                ..*j
            })
            .collect()
    }

    /// The leaf hashes the GPU wrote into the slot's `bytes`, once its commit jobs
    /// completed.
    pub fn leaf_hashes(&self, slot: &[u8]) -> Leaves {
        let mut out = Leaves::default();
        let Some(l) = &self.leaves else {
            return out;
        };
        for (side, range) in out.sides.iter_mut().zip(&l.ranges) {
            *side = range.as_ref().and_then(|r| slot.get(r.clone())).map(|b| {
                b.chunks_exact(32)
                    .map(|h| h.try_into().unwrap_or([0; 32]))
                    .collect()
            });
        }
        out
    }

    /// The jobs with absolute addresses for a slot whose device address is `base`.
    pub fn jobs(&self, base: u64) -> Vec<Job> {
        let list = |axis: Axis| match axis {
            Axis::Identity => 0,
            _ if self.whole => 0,
            Axis::Rows => base + self.lists_at[0] as u64,
            Axis::Cols => base + self.lists_at[1] as u64,
            Axis::Batches => base + self.lists_at[2] as u64,
        };
        let device = self.device.as_ref().map_or(0, |d| d.base);
        self.templates
            .iter()
            .map(|t| Job {
                src: if t.src_on_device {
                    device + t.src
                } else {
                    t.src
                },
                out: if t.out_on_device { device } else { base } + t.out as u64,
                batch_idx: list(t.batch),
                idx_i: list(t.i),
                idx_j: list(t.j),
                batch_stride: t.batch_stride,
                stride_i: t.stride_i,
                stride_j: t.stride_j,
                nb: t.nb,
                ni: t.ni,
                nj: t.nj,
                elem_size: t.elem,
                flags: if t.pointer_array {
                    FLAG_POINTER_ARRAY
                } else {
                    0
                },
            })
            .collect()
    }

    /// Writes the jobs and index lists into the slot's host view `buf` (at least
    /// [`SlotLayout::len`] bytes), for a slot at device address `base`.
    pub fn write(&self, base: u64, buf: &mut [u8]) -> Result<(), String> {
        if buf.len() < self.len {
            return Err(format!("slot of {} bytes, {} needed", buf.len(), self.len));
        }
        for (i, job) in self.jobs(base).iter().enumerate() {
            buf[i * JOB_BYTES..(i + 1) * JOB_BYTES].copy_from_slice(&job.encode());
        }
        if let Some(l) = &self.leaves {
            for (i, job) in self.commit_jobs(base).iter().enumerate() {
                let at = l.at + i * COMMIT_JOB_BYTES;
                buf[at..at + COMMIT_JOB_BYTES].copy_from_slice(&job.encode());
            }
        }
        for (list, at) in [&self.rows, &self.cols, &self.batches]
            .into_iter()
            .zip(self.lists_at)
        {
            for (i, v) in list.iter().enumerate() {
                buf[at + 8 * i..at + 8 * i + 8].copy_from_slice(&v.to_le_bytes());
            }
        }
        Ok(())
    }

    /// The sample record from the slot's bytes after the gather completed.
    pub fn assemble(&self, slot: &[u8]) -> Result<Sample, String> {
        if slot.len() < self.len {
            return Err(format!("slot of {} bytes, {} needed", slot.len(), self.len));
        }
        let take = |r: &Range<usize>| slot[r.clone()].to_vec();
        let scalar = |r: &Option<Range<usize>>| -> Result<Option<f64>, String> {
            match r {
                None => Ok(None),
                Some(r) => num::decode_one(self.scale_type, &slot[r.clone()])
                    .map(Some)
                    .map_err(|e| e.to_string()),
            }
        };
        let scale = |i: usize| {
            self.fields.scales[i].as_ref().map(|r| {
                let mut b = [0u8; 4];
                b.copy_from_slice(&slot[r.clone()]);
                f32::from_le_bytes(b)
            })
        };
        Ok(Sample {
            index: self.call.index,
            alpha: scalar(&self.fields.alpha)?,
            beta: scalar(&self.fields.beta)?,
            scale_a: scale(0),
            scale_b: scale(1),
            scale_c: scale(2),
            scale_d: scale(3),
            a_rows: OperandData::Inline(take(&self.fields.a_rows)),
            b_cols: OperandData::Inline(take(&self.fields.b_cols)),
            c_in: take(&self.fields.c_in),
            d_out: take(&self.fields.d_out),
            bias: take(&self.fields.bias),
            scale_rows: take(&self.fields.scale_rows),
            scale_cols: take(&self.fields.scale_cols),
        })
    }

    /// With [`HeldA`]: the spot rows' bytes (`[batch][k]`), once the gather completed.
    pub fn spot(&self, slot: &[u8]) -> Option<Vec<u8>> {
        self.held.as_ref()?;
        slot.get(self.fields.a_spot.clone()).map(<[u8]>::to_vec)
    }

    /// The operands' types, k and the plan's indices, for references.
    pub fn operands(&self) -> SampleOperands {
        let (rows, cols, batches) = if self.whole {
            let c = &self.call;
            ((0..c.m).collect(), (0..c.n).collect(), c.batch as usize)
        } else {
            (self.rows.clone(), self.cols.clone(), self.batches.len())
        };
        SampleOperands {
            k: self.k,
            a: self.a_dtype,
            b: self.b_dtype,
            rows,
            cols,
            batches,
        }
    }

    /// Byte offset of job `i` in the slot.
    pub fn job_offset(i: u32) -> usize {
        i as usize * JOB_BYTES
    }
}

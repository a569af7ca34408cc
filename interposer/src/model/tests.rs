//! Unit tests of the call model: every entry point's arguments -> GemmCall, and the
//! gather jobs checked end to end on a CPU emulation of the kernel over fake device
//! memory (matrices stored column-major, row-major, transposed, strided, by pointer
//! array), so that a wrong stride or a swapped axis fails here, not on a GPU.

use super::gather::{CommitJob, Job, SlotLayout, JOB_BYTES};
use super::*;
use crate::sys::cublas::LT_ORDER_ROW;
use mmaudit_protocol::record::OperandData;
use mmaudit_protocol::schedule::Plan;

// ---------------------------------------------------------------- fake device memory

struct Mem {
    regions: Vec<(u64, Vec<u8>)>,
    next: u64,
}

impl Mem {
    fn new() -> Self {
        Mem {
            regions: Vec::new(),
            next: 0x10_0000,
        }
    }

    fn alloc(&mut self, len: usize) -> u64 {
        let base = self.next;
        self.regions.push((base, vec![0xEE; len.max(1)]));
        self.next += (len as u64 + 0xFFFF) & !0xFFF;
        base
    }

    fn span(&mut self, addr: u64, len: usize) -> &mut [u8] {
        for (base, bytes) in &mut self.regions {
            if addr >= *base && addr + len as u64 <= *base + bytes.len() as u64 {
                let at = (addr - *base) as usize;
                return &mut bytes[at..at + len];
            }
        }
        panic!("illegal address {addr:#x} (+{len})");
    }

    fn u64_at(&mut self, addr: u64) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.span(addr, 8));
        u64::from_le_bytes(b)
    }

    /// The kernel's semantics (cuda/gather.cu), element by element; like the kernel, a
    /// job whose index lists are not 8-aligned is skipped.
    fn run(&mut self, jobs: &[Job]) {
        for j in jobs {
            if (j.batch_idx | j.idx_i | j.idx_j) & 7 != 0 {
                continue;
            }
            let e = j.elem_size as usize;
            for b in 0..j.nb as u64 {
                for i in 0..j.ni as u64 {
                    for jj in 0..j.nj as u64 {
                        let pick = |m: &mut Mem, list: u64, x: u64| {
                            if list == 0 {
                                x
                            } else {
                                m.u64_at(list + 8 * x)
                            }
                        };
                        let bi = pick(self, j.batch_idx, b);
                        let base = if j.flags & 1 != 0 {
                            self.u64_at(j.src + 8 * bi)
                        } else {
                            j.src.wrapping_add(bi.wrapping_mul(j.batch_stride as u64))
                        };
                        let ii = pick(self, j.idx_i, i);
                        let kk = pick(self, j.idx_j, jj);
                        let addr = base
                            .wrapping_add(ii.wrapping_mul(j.stride_i as u64))
                            .wrapping_add(kk.wrapping_mul(j.stride_j as u64));
                        let v = self.span(addr, e).to_vec();
                        let at = ((b * j.ni as u64 + i) * j.nj as u64 + jj) as usize * e;
                        self.span(j.out + at as u64, e).copy_from_slice(&v);
                    }
                }
            }
        }
    }
}

impl Mem {
    /// `mmaudit_commit_leaves`'s semantics (cuda/README.md), vector by vector.
    fn run_commit(&mut self, jobs: &[CommitJob]) {
        for j in jobs {
            let e = j.elem_size as usize;
            for b in 0..j.nb as u64 {
                let base = if j.pointer_array {
                    self.u64_at(j.src + 8 * b)
                } else {
                    j.src.wrapping_add(b.wrapping_mul(j.batch_stride as u64))
                };
                for v in 0..j.nv as u64 {
                    let mut vector = Vec::new();
                    for x in 0..j.len as u64 {
                        let addr = base
                            .wrapping_add(v.wrapping_mul(j.vec_stride as u64))
                            .wrapping_add(x.wrapping_mul(j.elem_stride as u64));
                        vector.extend_from_slice(self.span(addr, e));
                    }
                    let at = j.out + 32 * (b * j.nv as u64 + v);
                    self.span(at, 32)
                        .copy_from_slice(&mmaudit_protocol::commit::leaf_hash(&vector));
                }
            }
        }
    }
}

/// Gathers `d` whole with its leaf-hash jobs on the emulated device, as commit mode
/// does, and checks that the leaf hashes of op(A)'s rows, op(B)'s columns and C's and
/// D's columns are the hashes of those vectors as gathered.
fn check_whole_leaves(mem: &mut Mem, d: &Described) {
    use super::gather::{Pick, COMMIT_JOB_BYTES};
    use mmaudit_protocol::commit::leaf_hash;
    let call = &d.call;
    let whole = SlotLayout::with_held(call, &d.gather, &Pick::Whole, None).unwrap();
    let plain_len = whole.len;
    assert_eq!(
        whole.clone().hashing_leaves(&d.gather, plain_len),
        whole,
        "no room"
    );
    let layout = whole.hashing_leaves(&d.gather, usize::MAX);
    let leaves = layout.leaves.clone().expect("leaf jobs");
    assert!(leaves.at >= plain_len && layout.len > leaves.at);
    assert_eq!(leaves.pre, call.reads_c() as u32);
    let slot = mem.alloc(layout.len);
    let mut host = vec![0u8; layout.len];
    layout.write(slot, &mut host).unwrap();
    mem.span(slot, layout.len).copy_from_slice(&host);
    let written: Vec<[u8; COMMIT_JOB_BYTES]> = (0..(leaves.pre + leaves.post) as usize)
        .map(|i| {
            let at = slot + (leaves.at + i * COMMIT_JOB_BYTES) as u64;
            mem.span(at, COMMIT_JOB_BYTES).try_into().unwrap()
        })
        .collect();
    let jobs = layout.commit_jobs(slot);
    assert_eq!(
        written,
        jobs.iter().map(CommitJob::encode).collect::<Vec<_>>()
    );
    mem.run(&layout.jobs(slot));
    mem.run_commit(&jobs);
    let bytes = mem.span(slot, layout.len).to_vec();
    let s = layout.assemble(&bytes).unwrap();
    let got = layout.leaf_hashes(&bytes).sides;
    let hashes = |data: &[u8], count: u64| -> Vec<[u8; 32]> {
        let width = data.len() / count as usize;
        data.chunks_exact(width).map(leaf_hash).collect()
    };
    // [batch][row][col] entries as columns, [batch][col][row]
    let columns = |entries: &[u8]| -> Vec<u8> {
        let (m, n) = (call.m as usize, call.n as usize);
        let mut out = vec![0u8; entries.len()];
        for b in 0..call.batch as usize {
            for r in 0..m {
                for c in 0..n {
                    let from = ((b * m + r) * n + c) * 4;
                    let to = ((b * n + c) * m + r) * 4;
                    out[to..to + 4].copy_from_slice(&entries[from..from + 4]);
                }
            }
        }
        out
    };
    let (OperandData::Inline(a), OperandData::Inline(b)) = (&s.a_rows, &s.b_cols) else {
        panic!("the gather sends operands inline");
    };
    let vectors = call.batch;
    assert_eq!(got[0], Some(hashes(a, vectors * call.m)), "op(A) rows");
    assert_eq!(got[1], Some(hashes(b, vectors * call.n)), "op(B) columns");
    let c = call
        .reads_c()
        .then(|| hashes(&columns(&s.c_in), vectors * call.n));
    assert_eq!(got[2], c, "C columns");
    assert_eq!(
        got[3],
        Some(hashes(&columns(&s.d_out), vectors * call.n)),
        "D columns"
    );
}

/// A distinct, exactly representable value for (matrix, batch, row, col) of op(X).
fn tag(m: u32, b: u64, r: u64, c: u64) -> f32 {
    (m as u64 * 1_000_000 + b * 10_000 + r * 100 + c) as f32
}

/// Stores the logical op(X) (`prows` x `pcols` per batch entry, values `tag(id, ..)`)
/// as the stored matrix of `p` with operation `op`.
fn store(mem: &mut Mem, p: &Placement, op: Op, id: u32, batch: u64, prows: u64, pcols: u64) {
    for b in 0..batch {
        let base = if p.pointer_array {
            mem.u64_at(p.base + 8 * b)
        } else {
            p.base.wrapping_add((b as i64 * p.batch_stride) as u64)
        };
        for pr in 0..prows {
            for pc in 0..pcols {
                let (i, j) = if op == Op::N { (pr, pc) } else { (pc, pr) };
                let addr = base + i * p.row_stride as u64 + j * p.col_stride as u64;
                mem.span(addr, 4)
                    .copy_from_slice(&tag(id, b, pr, pc).to_le_bytes());
            }
        }
    }
}

fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Gathers `d` with `plan` on the emulated device and checks every field against the
/// logical matrices A (id 1), B (2), C (3), D (4, or C for in-place calls).
fn check_gather(mem: &mut Mem, d: &Described, plan: &Plan) {
    let call = &d.call;
    let layout = SlotLayout::new(call, &d.gather, plan).unwrap();
    let slot = mem.alloc(layout.len);
    let mut host = vec![0u8; layout.len];
    layout.write(slot, &mut host).unwrap();
    mem.span(slot, layout.len).copy_from_slice(&host);
    let jobs: Vec<Job> = (0..layout.pre_jobs + layout.post_jobs)
        .map(|i| {
            let at = slot + SlotLayout::job_offset(i) as u64;
            let mut b = [0u8; JOB_BYTES];
            b.copy_from_slice(mem.span(at, JOB_BYTES));
            Job::decode(&b)
        })
        .collect();
    assert_eq!(jobs, layout.jobs(slot));
    mem.run(&jobs);
    let bytes = mem.span(slot, layout.len).to_vec();
    let s = layout.assemble(&bytes).unwrap();
    s.check_shape(call, plan).unwrap();
    let d_id = if call.has(flags::IN_PLACE) { 3 } else { 4 };
    let (mut a, mut bc, mut cin, mut dout) = (vec![], vec![], vec![], vec![]);
    for &b in &plan.batches {
        for &r in &plan.rows {
            for kk in 0..call.k {
                a.push(tag(1, b, r, kk));
            }
        }
        for &c in &plan.cols {
            for kk in 0..call.k {
                bc.push(tag(2, b, kk, c));
            }
        }
        for &r in &plan.rows {
            for &c in &plan.cols {
                cin.push(tag(3, b, r, c));
                dout.push(tag(d_id, b, r, c));
            }
        }
    }
    let (OperandData::Inline(ar), OperandData::Inline(br)) = (&s.a_rows, &s.b_cols) else {
        panic!("the gather sends operands inline");
    };
    assert_eq!(floats(ar), a, "op(A) rows");
    assert_eq!(floats(br), bc, "op(B) columns");
    if call.reads_c() {
        assert_eq!(floats(&s.c_in), cin, "C entries");
    } else {
        assert!(s.c_in.is_empty());
    }
    assert_eq!(floats(&s.d_out), dout, "D entries");
}

fn plan(rows: &[u64], cols: &[u64], batches: &[u64]) -> Plan {
    Plan {
        rows: rows.to_vec(),
        cols: cols.to_vec(),
        batches: batches.to_vec(),
    }
}

fn host_f32(v: f32) -> ScalarArg {
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&v.to_le_bytes());
    ScalarArg::Host(b)
}

fn sgemm(transa: i32, transb: i32, m: i64, n: i64, k: i64) -> BlasArgs {
    let a_rows = if transa == 0 { m } else { k };
    let b_rows = if transb == 0 { k } else { n };
    BlasArgs {
        entry: EntryPoint::SgemmV2,
        transa,
        transb,
        m,
        n,
        k,
        a_type: dt::R_32F,
        b_type: dt::R_32F,
        c_type: dt::R_32F,
        a: 0x1000,
        b: 0x2000,
        c: 0x3000,
        lda: a_rows + 3,
        ldb: b_rows + 1,
        ldc: m + 2,
        stride_a: 0,
        stride_b: 0,
        stride_c: 0,
        batch: 1,
        batch_form: BatchForm::Single,
        compute: cc::C32F,
        math_mode: 0,
        alpha: host_f32(1.5),
        beta: host_f32(0.0),
        site: Site {
            device: 2,
            stream: 0xabc,
            captured: false,
        },
    }
}

// ---------------------------------------------------------------- cuBLAS mapping

#[test]
fn sgemm_maps_to_a_single_col_major_call() {
    let d = describe_blas(&sgemm(1, 0, 5, 7, 3)).unwrap();
    let c = &d.call;
    assert_eq!(
        (c.entry, c.device, c.stream),
        (EntryPoint::SgemmV2, 2, 0xabc)
    );
    assert_eq!(
        (c.op_a, c.op_b, c.m, c.n, c.k, c.batch),
        (Op::T, Op::N, 5, 7, 3, 1)
    );
    assert_eq!(c.batch_form, BatchForm::Single);
    assert_eq!(
        c.a,
        Operand {
            dtype: DType::F32,
            order: Order::Col,
            ld: 6,
            batch_stride: 0
        }
    );
    assert_eq!((c.b.ld, c.c.ld), (4, 7));
    assert_eq!(c.c, c.d);
    assert_eq!((c.compute, c.scale_type), (ComputeType::F32, DType::F32));
    assert_eq!((c.alpha, c.beta), (Scalar::Host(1.5), Scalar::Host(0.0)));
    assert_eq!((c.epilogue, c.flags), (Epilogue::Default, flags::IN_PLACE));
    assert!(!c.reads_c());
    let g = &d.gather;
    assert_eq!(
        g.a,
        Placement {
            base: 0x1000,
            pointer_array: false,
            batch_stride: 0,
            row_stride: 4,
            col_stride: 24,
            elem: 4
        }
    );
    assert_eq!(g.c, g.d);
    assert_eq!((g.alpha, g.beta, g.bias), (0, 0, 0));
}

#[test]
fn math_modes_and_compute_types() {
    let mut x = sgemm(0, 0, 4, 4, 4);
    x.math_mode = math::TF32_TENSOR_OP;
    assert_eq!(
        describe_blas(&x).unwrap().call.compute,
        ComputeType::F32FastTf32
    );
    x.math_mode = math::TF32_TENSOR_OP | 16; // + DISALLOW_REDUCED_PRECISION_REDUCTION
    assert_eq!(
        describe_blas(&x).unwrap().call.compute,
        ComputeType::F32FastTf32
    );
    x.math_mode = math::TENSOR_OP;
    assert_eq!(
        describe_blas(&x).unwrap().call.compute,
        ComputeType::F32FastF16
    );
    x.math_mode = math::PEDANTIC;
    assert_eq!(describe_blas(&x).unwrap().call.compute, ComputeType::F32);
    x.math_mode = math::TF32_TENSOR_OP;
    x.compute = cc::C32F_PEDANTIC;
    assert_eq!(describe_blas(&x).unwrap().call.compute, ComputeType::F32);
    // TF32 mode does not touch f16 inputs.
    let mut h = x;
    h.compute = cc::C32F;
    h.a_type = dt::R_16F;
    h.b_type = dt::R_16F;
    assert_eq!(describe_blas(&h).unwrap().call.compute, ComputeType::F32);
    for (code, want, scale) in [
        (cc::C32F_FAST_TF32, ComputeType::F32FastTf32, DType::F32),
        (cc::C32F_FAST_16F, ComputeType::F32FastF16, DType::F32),
        (cc::C32F_FAST_16BF, ComputeType::F32FastBf16, DType::F32),
        (cc::C64F, ComputeType::F64, DType::F64),
        (cc::C64F_PEDANTIC, ComputeType::F64, DType::F64),
        (cc::C32I, ComputeType::I32, DType::I32),
        (cc::C16F, ComputeType::F16, DType::F16),
    ] {
        let mut y = sgemm(0, 0, 4, 4, 4);
        y.entry = EntryPoint::GemmEx;
        y.compute = code;
        y.alpha = ScalarArg::Host([0, 0, 0, 0, 0, 0, 0, 0]);
        let c = describe_blas(&y).unwrap().call;
        assert_eq!((c.compute, c.scale_type), (want, scale), "compute {code}");
    }
    let mut z = sgemm(0, 0, 4, 4, 4);
    z.compute = 78; // CUBLAS_COMPUTE_32F_EMULATED_16BFX9
    assert!(matches!(
        describe_blas(&z),
        Err(NotDescribed::Unsupported(_))
    ));
}

#[test]
fn scalars_are_decoded_in_the_scale_type() {
    // Hgemm: alpha and beta are __half.
    let mut x = sgemm(0, 1, 8, 8, 8);
    x.entry = EntryPoint::Hgemm;
    x.compute = cc::C16F;
    x.a_type = dt::R_16F;
    x.b_type = dt::R_16F;
    x.c_type = dt::R_16F;
    x.alpha = ScalarArg::Host([0x00, 0x3e, 0, 0, 0, 0, 0, 0]); // 1.5 in f16
    x.beta = ScalarArg::Host([0x00, 0xb8, 0xff, 0xff, 0, 0, 0, 0]); // -0.5, junk after
    let c = describe_blas(&x).unwrap().call;
    assert_eq!((c.alpha, c.beta), (Scalar::Host(1.5), Scalar::Host(-0.5)));
    assert_eq!(c.scale_type, DType::F16);
    assert!(c.reads_c());
    // int32 scalars for COMPUTE_32I, f64 for COMPUTE_64F
    let mut y = sgemm(0, 0, 4, 4, 4);
    y.compute = cc::C32I;
    y.alpha = ScalarArg::Host([0xfe, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
    assert_eq!(describe_blas(&y).unwrap().call.alpha, Scalar::Host(-2.0));
    y.compute = cc::C64F;
    y.alpha = ScalarArg::Host(0.25f64.to_le_bytes());
    assert_eq!(describe_blas(&y).unwrap().call.alpha, Scalar::Host(0.25));
    // device pointer mode
    let mut z = sgemm(0, 0, 4, 4, 4);
    z.alpha = ScalarArg::Device(0xa1);
    z.beta = ScalarArg::Device(0xb1);
    let d = describe_blas(&z).unwrap();
    assert_eq!(
        (d.call.alpha, d.call.beta),
        (Scalar::Device, Scalar::Device)
    );
    assert_eq!((d.gather.alpha, d.gather.beta), (0xa1, 0xb1));
    assert!(d.call.reads_c());
    // non-finite host scalars cannot be ledgered
    let mut w = sgemm(0, 0, 4, 4, 4);
    w.alpha = host_f32(f32::NAN);
    assert!(matches!(
        describe_blas(&w),
        Err(NotDescribed::Unsupported(_))
    ));
    w.alpha = ScalarArg::Device(0);
    assert!(matches!(describe_blas(&w), Err(NotDescribed::Invalid(_))));
}

#[test]
fn batched_forms() {
    let mut x = sgemm(0, 1, 6, 5, 4);
    x.entry = EntryPoint::GemmStridedBatchedEx64;
    x.batch_form = BatchForm::Strided;
    x.batch = 3;
    x.stride_a = 100;
    x.stride_b = 200;
    x.stride_c = -300;
    let d = describe_blas(&x).unwrap();
    let c = &d.call;
    assert_eq!(
        (c.entry, c.batch, c.batch_form),
        (EntryPoint::GemmStridedBatchedEx64, 3, BatchForm::Strided)
    );
    assert_eq!(
        (
            c.a.batch_stride,
            c.b.batch_stride,
            c.c.batch_stride,
            c.d.batch_stride
        ),
        (100, 200, -300, -300)
    );
    assert_eq!(
        (d.gather.a.batch_stride, d.gather.c.batch_stride),
        (400, -1200)
    );
    // pointer arrays: strides are meaningless and recorded as 0
    let mut y = x;
    y.entry = EntryPoint::GemmBatchedEx;
    y.batch_form = BatchForm::PointerArray;
    let d = describe_blas(&y).unwrap();
    assert_eq!(d.call.batch_form, BatchForm::PointerArray);
    assert_eq!((d.call.a.batch_stride, d.gather.a.batch_stride), (0, 0));
    assert!(d.gather.a.pointer_array && d.gather.b.pointer_array && d.gather.c.pointer_array);
    // every entry point keeps its code
    for e in [
        EntryPoint::SgemmV264,
        EntryPoint::GemmEx64,
        EntryPoint::SgemmStridedBatched,
        EntryPoint::HgemmStridedBatched,
        EntryPoint::GemmBatchedEx64,
    ] {
        let mut z = sgemm(0, 0, 2, 2, 2);
        z.entry = e;
        assert_eq!(describe_blas(&z).unwrap().call.entry, e);
    }
}

#[test]
fn invalid_and_unsupported_blas_calls() {
    let inv = |x: BlasArgs| matches!(describe_blas(&x), Err(NotDescribed::Invalid(_)));
    let mut x = sgemm(0, 0, 4, 4, 4);
    x.m = -1;
    assert!(inv(x));
    let mut x = sgemm(0, 0, 4, 4, 4);
    x.lda = 3;
    assert!(inv(x));
    let mut x = sgemm(1, 0, 4, 4, 6);
    x.lda = 5; // op T: A is k x m, lda >= k = 6
    assert!(inv(x));
    let mut x = sgemm(0, 0, 4, 4, 4);
    x.batch = 0;
    assert!(inv(x));
    let mut x = sgemm(0, 0, 4, 4, 4);
    x.transa = 9;
    assert!(inv(x));
    let mut x = sgemm(0, 0, 4, 4, 4);
    x.a = 0;
    assert!(inv(x));
    let mut x = sgemm(0, 0, 4, 4, 4);
    x.a_type = 4; // CUDA_C_32F
    assert!(matches!(
        describe_blas(&x),
        Err(NotDescribed::Unsupported(_))
    ));
    // CUBLAS_OP_CONJG on real data: op N, described exactly
    let x = sgemm(3, 3, 4, 4, 4);
    let c = describe_blas(&x).unwrap().call;
    assert_eq!((c.op_a, c.op_b), (Op::N, Op::N));
    // m = 0 is a valid, empty call: ledgered
    let x = sgemm(0, 0, 0, 4, 4);
    assert_eq!(describe_blas(&x).unwrap().call.m, 0);
    // captured
    let mut x = sgemm(0, 0, 4, 4, 4);
    x.site.captured = true;
    assert_eq!(
        describe_blas(&x).unwrap().call.flags,
        flags::IN_PLACE | flags::CAPTURED
    );
}

// ---------------------------------------------------------------- cuBLASLt mapping

fn lt(transa: i32, transb: i32, order: i32, m: u64, n: u64, k: u64) -> LtArgs {
    let mk = |rows: u64, cols: u64, pad: i64| {
        let mut l = LtLayout::new(dt::R_32F, rows, cols, 0);
        l.order = order;
        l.ld = if order == LT_ORDER_ROW {
            cols as i64
        } else {
            rows as i64
        } + pad;
        l
    };
    let (ar, ac) = if transa == 0 { (m, k) } else { (k, m) };
    let (br, bc) = if transb == 0 { (k, n) } else { (n, k) };
    LtArgs {
        desc: LtDesc {
            transa,
            transb,
            ..LtDesc::default()
        },
        a_layout: mk(ar, ac, 1),
        b_layout: mk(br, bc, 2),
        c_layout: mk(m, n, 3),
        d_layout: mk(m, n, 0),
        a: 0x10_0000,
        b: 0x20_0000,
        c: 0x30_0000,
        d: 0x40_0000,
        alpha: host_f32(2.0),
        beta: host_f32(1.0),
        site: Site::default(),
        reduced_precision_reduction: false,
    }
}

#[test]
fn lt_batch_modes_other_than_strided_are_outside_the_model() {
    // cuBLASLt's grouped matmul (batch mode 2: per-problem sizes in device memory) and
    // pointer-array batches (1) go through cublasLtMatmul; the record says why it is
    // not modelled. Absent: the strided default describes exactly.
    assert!(describe_lt(&lt(0, 0, 0, 4, 4, 4)).is_ok());
    for (mode, what) in [(1, "pointer-array"), (2, "grouped")] {
        for layout in 0..4 {
            let mut x = lt(0, 0, 0, 4, 4, 4);
            [
                &mut x.a_layout,
                &mut x.b_layout,
                &mut x.c_layout,
                &mut x.d_layout,
            ][layout]
                .batch_mode = mode;
            match describe_lt(&x) {
                Err(NotDescribed::Unsupported(why)) => {
                    assert!(why.contains(what), "{why}");
                    let name = ["A", "B", "C", "D"][layout];
                    assert!(why.starts_with(&format!("layout {name} ")), "{why}");
                }
                other => panic!("batch mode {mode}: {:?}", other.map(|d| d.call)),
            }
        }
    }
}

#[test]
fn lt_element_types_without_a_protocol_code_are_outside_the_model() {
    // fp4 (nvfp4's E2M1), fp6 (E2M3, E3M2), the UE8M0 scale type and complex elements:
    // never described (so never sampled). Absent: f32 describes.
    let x = lt(0, 0, 0, 4, 4, 4);
    assert!(describe_lt(&x).is_ok());
    for t in [33, 31, 32, 30, dt::C_32F] {
        let mut y = x;
        y.a_layout.dtype = t;
        y.b_layout.dtype = t;
        assert!(
            matches!(describe_lt(&y), Err(NotDescribed::Unsupported(_))),
            "type {t}"
        );
    }
}

#[test]
fn lt_layouts_map_to_shapes_orders_and_strides() {
    let x = lt(1, 0, LT_ORDER_ROW, 5, 6, 7);
    let d = describe_lt(&x).unwrap();
    let c = &d.call;
    assert_eq!(
        (c.entry, c.op_a, c.op_b, c.m, c.n, c.k),
        (EntryPoint::LtMatmul, Op::T, Op::N, 5, 6, 7)
    );
    assert_eq!(
        (c.a.order, c.a.ld, c.b.ld, c.c.ld, c.d.ld),
        (Order::Row, 6, 8, 9, 6)
    );
    assert_eq!(c.flags, 0, "C and D differ: not in place");
    assert_eq!((c.alpha, c.beta), (Scalar::Host(2.0), Scalar::Host(1.0)));
    // row-major: rows are ld apart, columns one element apart
    assert_eq!((d.gather.a.row_stride, d.gather.a.col_stride), (24, 4));
    let y = lt(0, 1, crate::sys::cublas::LT_ORDER_COL, 5, 6, 7);
    let d = describe_lt(&y).unwrap();
    assert_eq!(
        (d.call.a.order, d.gather.a.row_stride, d.gather.a.col_stride),
        (Order::Col, 4, 24)
    );
    // batches and in place
    let mut z = lt(0, 0, 0, 4, 4, 4);
    for l in [
        &mut z.a_layout,
        &mut z.b_layout,
        &mut z.c_layout,
        &mut z.d_layout,
    ] {
        l.batch = 3;
        l.stride = 64;
    }
    z.d = z.c;
    z.d_layout = z.c_layout;
    let d = describe_lt(&z).unwrap();
    assert_eq!(
        (d.call.batch, d.call.batch_form, d.call.a.batch_stride),
        (3, BatchForm::Strided, 64)
    );
    assert_eq!(d.call.flags, flags::IN_PLACE);
    assert_eq!(d.gather.a.batch_stride, 256);
}

#[test]
fn lt_epilogues_bias_and_scales() {
    let mut x = lt(0, 0, 0, 8, 8, 8);
    x.desc.epilogue = ep::RELU_BIAS;
    x.desc.bias = 0xb1a5;
    let d = describe_lt(&x).unwrap();
    assert_eq!(
        (d.call.epilogue, d.call.flags, d.call.bias_type),
        (Epilogue::Relu, flags::BIAS, DType::F32)
    );
    assert_eq!(d.gather.bias, 0xb1a5);
    for (code, want, bias) in [
        (ep::DEFAULT, Epilogue::Default, false),
        (ep::RELU, Epilogue::Relu, false),
        (ep::BIAS, Epilogue::Default, true),
        (ep::GELU, Epilogue::GeluTanh, false),
        (ep::GELU_BIAS, Epilogue::GeluTanh, true),
    ] {
        x.desc.epilogue = code;
        let c = describe_lt(&x).unwrap().call;
        assert_eq!(
            (c.epilogue, c.has(flags::BIAS)),
            (want, bias),
            "epilogue {code}"
        );
    }
    x.desc.epilogue = 2 | 128; // RELU_AUX
    assert!(matches!(describe_lt(&x), Err(NotDescribed::Unsupported(_))));
    x.desc.epilogue = ep::BIAS;
    x.desc.bias = 0;
    assert!(matches!(describe_lt(&x), Err(NotDescribed::Invalid(_))));

    // fp8: bias type defaults to C's type when D is fp8; scale pointers become flags
    let mut f = lt(1, 0, 0, 16, 16, 32);
    f.a_layout.dtype = dt::R_8F_E4M3;
    f.b_layout.dtype = dt::R_8F_E4M3;
    f.c_layout.dtype = dt::R_16BF;
    f.d_layout.dtype = dt::R_8F_E4M3;
    f.desc.epilogue = ep::GELU_BIAS;
    f.desc.bias = 0x5000;
    f.desc.scales = [0xa, 0xb, 0, 0xd];
    let d = describe_lt(&f).unwrap();
    let c = &d.call;
    assert_eq!(c.bias_type, DType::BF16);
    assert_eq!(
        c.flags,
        flags::BIAS | flags::SCALE_A | flags::SCALE_B | flags::SCALE_D
    );
    assert_eq!(
        (c.a.dtype, c.c.dtype, c.d.dtype),
        (DType::F8E4M3, DType::BF16, DType::F8E4M3)
    );
    assert_eq!(d.gather.scales, [0xa, 0xb, 0, 0xd]);
    f.desc.bias_type = dt::R_16F;
    assert_eq!(describe_lt(&f).unwrap().call.bias_type, DType::F16);
    // fast accumulation: a flag for fp8 inputs (cuBLASLt ignores it otherwise)
    f.desc.fast_accum = 1;
    assert!(describe_lt(&f).unwrap().call.has(flags::FAST_ACCUM));
    let mut bf = lt(1, 0, 0, 16, 16, 32);
    bf.desc.fast_accum = 1;
    assert!(!describe_lt(&bf).unwrap().call.has(flags::FAST_ACCUM));
    // per-row scales of A and per-column scales of B: their own flags (batch 1 only)
    let mut v = f;
    v.desc.scale_modes = [3, 3, 0, 0, 0];
    let c = describe_lt(&v).unwrap().call;
    assert!(c.has(flags::SCALE_A_ROWS) && c.has(flags::SCALE_B_COLS));
    assert!(!c.has(flags::SCALE_A) && !c.has(flags::SCALE_B) && c.has(flags::SCALE_D));
    v.desc.scales[0] = 0;
    assert!(matches!(describe_lt(&v), Err(NotDescribed::Invalid(_))));
    // any other scale mode is outside the model, named
    for (i, mode, name) in [
        (2, 3, "OUTER_VEC_32F"),
        (1, 4, "VEC128_32F"),
        (1, 5, "BLK128x128_32F"),
        (0, 2, "VEC32_UE8M0"),
        (3, 1, "VEC16_UE4M3"),
        (4, 6, "PER_BATCH_SCALAR_32F"),
        (0, 99, "99 (unknown)"),
    ] {
        let mut g = f;
        g.desc.scale_modes[i] = mode;
        match describe_lt(&g) {
            Err(NotDescribed::Unsupported(why)) => assert!(why.contains(name), "{why}"),
            other => panic!("scale mode {mode}: {other:?}"),
        }
    }
    let mut g = f;
    g.desc.d_out_scale = 0x77;
    assert!(matches!(describe_lt(&g), Err(NotDescribed::Unsupported(_))));

    // per-batch bias: its own flag, the stride in bytes for the gather
    let mut b = lt(0, 0, 0, 4, 4, 4);
    for l in [
        &mut b.a_layout,
        &mut b.b_layout,
        &mut b.c_layout,
        &mut b.d_layout,
    ] {
        l.batch = 2;
    }
    b.desc.epilogue = ep::BIAS;
    b.desc.bias = 0x99;
    b.desc.bias_batch_stride = 4;
    b.desc.bias_type = dt::R_16F;
    let d = describe_lt(&b).unwrap();
    assert_eq!(d.call.flags, flags::BIAS | flags::BIAS_PER_BATCH);
    assert_eq!(d.gather.bias_batch_stride, 8);
    b.desc.bias_batch_stride = 0;
    let d = describe_lt(&b).unwrap();
    assert_eq!((d.call.flags, d.gather.bias_batch_stride), (flags::BIAS, 0));
    // one batch entry: one bias vector, whatever the stride
    let mut one = lt(0, 0, 0, 4, 4, 4);
    one.desc.epilogue = ep::BIAS;
    one.desc.bias = 0x99;
    one.desc.bias_batch_stride = 4;
    assert_eq!(describe_lt(&one).unwrap().call.flags, flags::BIAS);
}

/// Makes every operand of `x` a strided batch of `batch` matrices in fresh memory.
fn strided(mem: &mut Mem, x: &mut LtArgs, batch: u64) {
    let layouts = [
        &mut x.a_layout,
        &mut x.b_layout,
        &mut x.c_layout,
        &mut x.d_layout,
    ];
    let mut bases = [0u64; 4];
    for (i, l) in layouts.into_iter().enumerate() {
        let per = extent(l.rows, l.cols, l.ld, 1, 0);
        l.batch = batch as i32;
        l.stride = (per / 4) as i64;
        bases[i] = mem.alloc(per * batch as usize);
    }
    (x.a, x.b, x.c, x.d) = (bases[0], bases[1], bases[2], bases[3]);
}

#[test]
fn a_bias_per_batch_entry_is_gathered_batch_by_batch() {
    let mut mem = Mem::new();
    let (m, n, k, batch) = (6u64, 4u64, 3u64, 3u64);
    let mut x = lt(0, 0, 0, m, n, k);
    strided(&mut mem, &mut x, batch);
    // bias[b][r] = 100 b + r, vectors 8 elements apart
    let bias = mem.alloc(4 * 8 * batch as usize);
    for b in 0..batch {
        for r in 0..m {
            mem.span(bias + 4 * (8 * b + r), 4)
                .copy_from_slice(&((100 * b + r) as f32).to_le_bytes());
        }
    }
    x.desc.epilogue = ep::RELU_BIAS;
    x.desc.bias = bias;
    x.desc.bias_batch_stride = 8;
    let d = describe_lt(&x).unwrap();
    assert!(d.call.has(flags::BIAS_PER_BATCH));
    fill(&mut mem, &d);
    let p = plan(&[1, 4, 5], &[2], &[0, 2]);
    check_gather(&mut mem, &d, &p);
    let layout = SlotLayout::new(&d.call, &d.gather, &p).unwrap();
    let slot = mem.alloc(layout.len);
    let mut host = vec![0u8; layout.len];
    layout.write(slot, &mut host).unwrap();
    mem.span(slot, layout.len).copy_from_slice(&host);
    mem.run(&layout.jobs(slot));
    let bytes = mem.span(slot, layout.len).to_vec();
    let s = layout.assemble(&bytes).unwrap();
    assert_eq!(
        floats(&s.bias),
        vec![1.0, 4.0, 5.0, 201.0, 204.0, 205.0],
        "[batch][row]"
    );
    // The sample has the shape the protocol requires for the call and plan.
    s.check_shape(&d.call, &p).unwrap();
}

#[test]
fn lt_modes_and_invalid_layouts() {
    let mut x = lt(0, 0, 0, 4, 4, 4);
    x.desc.pointer_mode = 1;
    x.alpha = ScalarArg::Device(0x77);
    x.beta = ScalarArg::Device(0x88);
    let d = describe_lt(&x).unwrap();
    assert_eq!(
        (d.call.alpha, d.gather.alpha, d.gather.beta),
        (Scalar::Device, 0x77, 0x88)
    );
    x.desc.pointer_mode = 2; // DEVICE_VECTOR
    assert!(matches!(describe_lt(&x), Err(NotDescribed::Unsupported(_))));

    let inv = |x: LtArgs| matches!(describe_lt(&x), Err(NotDescribed::Invalid(_)));
    let mut y = lt(0, 0, 0, 4, 4, 4);
    y.b_layout.rows = 5;
    assert!(inv(y));
    let mut y = lt(0, 0, 0, 4, 4, 4);
    y.a_layout.batch = 2;
    assert!(inv(y));
    let mut y = lt(0, 0, 0, 4, 4, 4);
    y.desc.transc = 1;
    assert!(inv(y));
    let mut y = lt(0, 0, 0, 4, 4, 4);
    y.a_layout.ld = 2;
    assert!(inv(y));
    let mut y = lt(0, 0, 0, 4, 4, 4);
    y.c_layout.order = 2; // COL32
    assert!(matches!(describe_lt(&y), Err(NotDescribed::Unsupported(_))));
    let mut y = lt(0, 0, 0, 4, 4, 4);
    y.desc.compute = cc::C32I;
    y.desc.scale_type = dt::R_32I;
    y.a_layout.dtype = dt::R_8I;
    y.b_layout.dtype = dt::R_8I;
    y.c_layout.dtype = dt::R_32I;
    y.d_layout.dtype = dt::R_32I;
    y.alpha = ScalarArg::Host([3, 0, 0, 0, 0, 0, 0, 0]);
    let c = describe_lt(&y).unwrap().call;
    assert_eq!(
        (c.compute, c.scale_type, c.alpha),
        (ComputeType::I32, DType::I32, Scalar::Host(3.0))
    );
    let mut y = lt(0, 0, 0, 4, 4, 4);
    y.site = Site {
        device: 1,
        stream: 77,
        captured: true,
    };
    let c = describe_lt(&y).unwrap().call;
    assert_eq!((c.device, c.stream, c.flags), (1, 77, flags::CAPTURED));
}

// ---------------------------------------------------------------- gather end to end

/// Allocates and fills A, B, C (and D) for a described call made on fake memory.
fn fill(mem: &mut Mem, d: &Described) {
    let c = &d.call;
    let (ar, ac) = if c.op_a == Op::N {
        (c.m, c.k)
    } else {
        (c.k, c.m)
    };
    let (br, bc) = if c.op_b == Op::N {
        (c.k, c.n)
    } else {
        (c.n, c.k)
    };
    store(mem, &d.gather.a, c.op_a, 1, c.batch, c.m, c.k);
    store(mem, &d.gather.b, c.op_b, 2, c.batch, c.k, c.n);
    store(mem, &d.gather.c, Op::N, 3, c.batch, c.m, c.n);
    if !c.has(flags::IN_PLACE) {
        store(mem, &d.gather.d, Op::N, 4, c.batch, c.m, c.n);
    }
    let _ = (ar, ac, br, bc);
}

/// Bytes an operand needs, generously.
/// Gathers `d` whole into a device slot, as commit mode does when the context's
/// retention ring has room, and checks it against the whole gather into pinned memory:
/// the same vectors (C and D as columns), the same leaf hashes, the checked vectors'
/// copies, the small fields in the pinned slot; then opens a plan from the device slot
/// and checks the opened vectors.
fn check_device_whole(mem: &mut Mem, d: &Described, p: &Plan) {
    use super::gather::{OpeningLayout, Pick, Picks};
    let call = &d.call;
    let whole = SlotLayout::with_held(call, &d.gather, &Pick::Whole, None).unwrap();
    let pinned = whole.clone().hashing_leaves(&d.gather, usize::MAX);
    let mut dl = whole
        .to_device([true; 4])
        .expect("a whole call moves")
        .hashing_leaves(&d.gather, usize::MAX);
    assert!(dl.len < pinned.len, "the bulk left the pinned slot");
    let run = |mem: &mut Mem, l: &SlotLayout| -> Vec<u8> {
        let slot = mem.alloc(l.len);
        let mut host = vec![0u8; l.len];
        l.write(slot, &mut host).unwrap();
        mem.span(slot, l.len).copy_from_slice(&host);
        mem.run(&l.jobs(slot));
        mem.run_commit(&l.commit_jobs(slot));
        mem.span(slot, l.len).to_vec()
    };
    let reference = run(mem, &pinned);
    let s = pinned.assemble(&reference).unwrap();
    let device = dl.device.clone().unwrap();
    let dev = mem.alloc(device.len);
    dl.place_device(dev);
    let bytes = run(mem, &dl);
    let t = dl.assemble(&bytes).unwrap();
    assert_eq!(
        dl.leaf_hashes(&bytes),
        pinned.leaf_hashes(&reference),
        "leaves"
    );
    assert_eq!(
        (t.alpha, t.beta, t.scale_a, t.scale_b, t.scale_c, t.scale_d),
        (s.alpha, s.beta, s.scale_a, s.scale_b, s.scale_c, s.scale_d)
    );
    assert_eq!(
        (&t.bias, &t.scale_rows, &t.scale_cols),
        (&s.bias, &s.scale_rows, &s.scale_cols)
    );
    assert!(t.c_in.is_empty() && t.d_out.is_empty());
    // [batch][row][col] entries as columns, [batch][col][row]
    let columns = |entries: &[u8], elem: usize| -> Vec<u8> {
        let (m, n) = (call.m as usize, call.n as usize);
        let mut out = vec![0u8; entries.len()];
        for b in 0..call.batch as usize {
            for r in 0..m {
                for c in 0..n {
                    let from = ((b * m + r) * n + c) * elem;
                    let to = ((b * n + c) * m + r) * elem;
                    out[to..to + elem].copy_from_slice(&entries[from..from + elem]);
                }
            }
        }
        out
    };
    let (OperandData::Inline(a), OperandData::Inline(b)) = (&s.a_rows, &s.b_cols) else {
        panic!("the gather sends operands inline");
    };
    let expected = [
        Some(a.clone()),
        Some(b.clone()),
        call.reads_c()
            .then(|| columns(&s.c_in, call.c.dtype.size())),
        Some(columns(&s.d_out, call.d.dtype.size())),
    ];
    let checks = dl.device_checks(&bytes);
    for (i, want) in expected.iter().enumerate() {
        let side = device.sides[i].as_ref();
        let Some(want) = want else {
            assert!(side.is_none(), "side {i}");
            continue;
        };
        let side = side.unwrap_or_else(|| panic!("side {i} kept in device memory"));
        let got = mem
            .span(dev + side.range.start as u64, side.range.len())
            .to_vec();
        assert_eq!(&got, want, "side {i} in device memory");
        let v = &want[side.check * side.width..(side.check + 1) * side.width];
        assert_eq!(checks[i].as_deref(), Some(v), "side {i}'s checked vector");
    }
    // An opening of the plan, gathered from the device slot.
    let on = |i: usize| device.sides[i].is_some();
    fn pick<'a>(per: u64, p: &'a Plan, x: &'a [u64]) -> Picks<'a> {
        Picks {
            per,
            batches: &p.batches,
            picks: x,
        }
    }
    let all = [
        on(0).then(|| pick(call.m, p, &p.rows)),
        on(1).then(|| pick(call.n, p, &p.cols)),
        on(2).then(|| pick(call.n, p, &p.cols)),
        on(3).then(|| pick(call.n, p, &p.cols)),
    ];
    let (rows, cols) = (&p.rows, &p.cols);
    let o = OpeningLayout::new(&device, &all).expect("an opening");
    let slot = mem.alloc(o.len);
    let mut host = vec![0u8; o.len];
    o.write(slot, dev, &mut host);
    mem.span(slot, o.len).copy_from_slice(&host);
    let jobs: Vec<Job> = (0..o.jobs as usize)
        .map(|i| Job::decode(host[i * JOB_BYTES..(i + 1) * JOB_BYTES].try_into().unwrap()))
        .collect();
    mem.run(&jobs);
    for (i, want) in expected.iter().enumerate() {
        let (Some(want), Some(side)) = (want, &device.sides[i]) else {
            continue;
        };
        let (per, x) = if i == 0 {
            (call.m, rows)
        } else {
            (call.n, cols)
        };
        let mut opened = Vec::new();
        for &b in &p.batches {
            for &v in x {
                let at = (b * per + v) as usize * side.width;
                opened.extend_from_slice(&want[at..at + side.width]);
            }
        }
        let r = o.outputs[i].clone().unwrap();
        assert_eq!(
            mem.span(slot + r.start as u64, r.len()),
            &opened[..],
            "opened side {i}"
        );
    }
}

fn extent(rows: u64, cols: u64, ld: i64, batch: u64, stride: i64) -> usize {
    (((rows.max(cols) + 2) * ld.unsigned_abs() + 8) * 4 + batch * stride.unsigned_abs() * 4 + 64)
        as usize
}

#[test]
fn cublas_gathers_match_the_logical_matrices() {
    for (ta, tb) in [(0, 0), (1, 0), (0, 1), (1, 1), (2, 0)] {
        for batch_form in [
            BatchForm::Single,
            BatchForm::Strided,
            BatchForm::PointerArray,
        ] {
            let mut mem = Mem::new();
            let (m, n, k) = (7u64, 5u64, 6u64);
            let mut x = sgemm(ta, tb, m as i64, n as i64, k as i64);
            x.beta = host_f32(0.5);
            x.batch_form = batch_form;
            x.batch = if batch_form == BatchForm::Single {
                1
            } else {
                3
            };
            let batch = x.batch as u64;
            let ops = [(x.lda, 0usize), (x.ldb, 1), (x.ldc, 2)];
            let mut bases = [0u64; 3];
            for (ld, i) in ops {
                let per = extent(m.max(k), n.max(k), ld, 1, 0);
                bases[i] = match batch_form {
                    BatchForm::PointerArray => {
                        let arr = mem.alloc(8 * batch as usize);
                        for b in 0..batch {
                            let p = mem.alloc(per);
                            mem.span(arr + 8 * b, 8).copy_from_slice(&p.to_le_bytes());
                        }
                        arr
                    }
                    _ => mem.alloc(per * batch as usize),
                };
                if batch_form == BatchForm::Strided {
                    let s = (per / 4) as i64;
                    match i {
                        0 => x.stride_a = s,
                        1 => x.stride_b = s,
                        _ => x.stride_c = s,
                    }
                }
            }
            x.a = bases[0];
            x.b = bases[1];
            x.c = bases[2];
            let d = describe_blas(&x).unwrap();
            fill(&mut mem, &d);
            let p = if batch > 1 {
                plan(&[0, 3, 6], &[1, 4], &[0, 2])
            } else {
                plan(&[2, 5], &[0, 1, 4], &[0])
            };
            check_gather(&mut mem, &d, &p);
            check_whole_leaves(&mut mem, &d);
            check_device_whole(&mut mem, &d, &p);
        }
    }
}

#[test]
fn lt_gathers_match_the_logical_matrices() {
    for order in [crate::sys::cublas::LT_ORDER_COL, LT_ORDER_ROW] {
        for (ta, tb) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
            for batch in [1u64, 4] {
                let mut mem = Mem::new();
                let (m, n, k) = (6u64, 9u64, 5u64);
                let mut x = lt(ta, tb, order, m, n, k);
                // C of another type than f32 would change the tag encoding; keep f32.
                let layouts = [
                    &mut x.a_layout,
                    &mut x.b_layout,
                    &mut x.c_layout,
                    &mut x.d_layout,
                ];
                let mut bases = [0u64; 4];
                for (i, l) in layouts.into_iter().enumerate() {
                    let per = extent(l.rows, l.cols, l.ld, 1, 0);
                    l.batch = batch as i32;
                    l.stride = if batch > 1 { (per / 4) as i64 } else { 0 };
                    bases[i] = mem.alloc(per * batch as usize);
                }
                (x.a, x.b, x.c, x.d) = (bases[0], bases[1], bases[2], bases[3]);
                let d = describe_lt(&x).unwrap();
                fill(&mut mem, &d);
                let p = if batch > 1 {
                    plan(&[1, 5], &[0, 8], &[1, 3])
                } else {
                    plan(&[0, 2, 3], &[7], &[0])
                };
                check_gather(&mut mem, &d, &p);
                check_whole_leaves(&mut mem, &d);
                check_device_whole(&mut mem, &d, &p);
            }
        }
    }
}

#[test]
fn bias_scales_and_device_scalars_are_gathered() {
    let mut mem = Mem::new();
    let mut x = lt(0, 0, 0, 6, 4, 3);
    let bases: Vec<u64> = (0..4).map(|_| mem.alloc(4096)).collect();
    (x.a, x.b, x.c, x.d) = (bases[0], bases[1], bases[2], bases[3]);
    let bias = mem.alloc(64);
    for r in 0..6u64 {
        mem.span(bias + 4 * r, 4)
            .copy_from_slice(&(100.0 + r as f32).to_le_bytes());
    }
    let scalars = mem.alloc(64);
    mem.span(scalars, 4).copy_from_slice(&0.75f32.to_le_bytes()); // alpha
    mem.span(scalars + 8, 4)
        .copy_from_slice(&(-2.0f32).to_le_bytes()); // beta
    for i in 0..4u64 {
        mem.span(scalars + 16 + 4 * i, 4)
            .copy_from_slice(&(i as f32 + 0.5).to_le_bytes());
    }
    x.desc.epilogue = ep::GELU_BIAS;
    x.desc.bias = bias;
    x.desc.pointer_mode = 1;
    x.alpha = ScalarArg::Device(scalars);
    x.beta = ScalarArg::Device(scalars + 8);
    x.desc.scales = [scalars + 16, scalars + 20, scalars + 24, scalars + 28];
    let d = describe_lt(&x).unwrap();
    fill(&mut mem, &d);
    let p = plan(&[1, 4], &[2], &[0]);
    check_gather(&mut mem, &d, &p);
    let layout = SlotLayout::new(&d.call, &d.gather, &p).unwrap();
    assert_eq!(layout.pre_jobs, 1, "C entries are gathered before the GEMM");
    let slot = mem.alloc(layout.len);
    let mut host = vec![0u8; layout.len];
    layout.write(slot, &mut host).unwrap();
    mem.span(slot, layout.len).copy_from_slice(&host);
    mem.run(&layout.jobs(slot));
    let bytes = mem.span(slot, layout.len).to_vec();
    let s = layout.assemble(&bytes).unwrap();
    assert_eq!((s.alpha, s.beta), (Some(0.75), Some(-2.0)));
    assert_eq!(
        (s.scale_a, s.scale_b, s.scale_c, s.scale_d),
        (Some(0.5), Some(1.5), Some(2.5), Some(3.5))
    );
    assert_eq!(floats(&s.bias), vec![101.0, 104.0]);
}

#[test]
fn job_encoding_matches_the_abi_offsets() {
    let j = Job {
        src: 1,
        out: 2,
        batch_idx: 3,
        idx_i: 4,
        idx_j: 5,
        batch_stride: -6,
        stride_i: 7,
        stride_j: 8,
        nb: 9,
        ni: 10,
        nj: 11,
        elem_size: 2,
        flags: 1,
    };
    let b = j.encode();
    assert_eq!(b.len(), 88);
    assert_eq!(&b[40..48], &(-6i64).to_le_bytes());
    assert_eq!(&b[64..68], &9u32.to_le_bytes());
    assert_eq!(&b[76..80], &2u32.to_le_bytes());
    assert_eq!(&b[80..84], &1u32.to_le_bytes());
    assert_eq!(&b[84..88], &[0, 0, 0, 0], "reserved");
    assert_eq!(Job::decode(&b), j);
}

#[test]
fn k_zero_and_huge_plans() {
    let x = sgemm(0, 0, 4, 4, 0);
    let d = describe_blas(&x).unwrap();
    let l = SlotLayout::new(&d.call, &d.gather, &plan(&[1], &[1], &[0])).unwrap();
    assert_eq!(
        l.post_jobs, 1,
        "only D: op(A) rows and op(B) columns are empty"
    );
    assert!(l.fields.a_rows.is_empty() && l.fields.b_cols.is_empty());
    let mut big = d.call.clone();
    big.k = 1 << 33;
    assert!(SlotLayout::new(&big, &d.gather, &plan(&[1], &[1], &[0])).is_err());
}

// ---------------------------------------------------------------- calls outside the model

#[test]
fn calls_outside_the_model_keep_their_entry_and_sizes() {
    // Invalid arguments: the record says what was passed, flagged UNMODELLED.
    let mut x = sgemm(1, 0, 4, 5, 6);
    x.lda = 2;
    assert!(matches!(describe_blas(&x), Err(NotDescribed::Invalid(_))));
    let c = unmodelled_blas(&x);
    assert_eq!(
        (c.entry, c.m, c.n, c.k, c.batch, c.op_a, c.a.ld),
        (EntryPoint::SgemmV2, 4, 5, 6, 1, Op::T, 2)
    );
    assert_eq!((c.device, c.stream), (2, 0xabc));
    assert_eq!(c.flags, flags::IN_PLACE | flags::UNMODELLED);
    assert_eq!(c.alpha, Scalar::Host(1.5));
    // The encoding decodes (the verifier must be able to read it).
    let bytes = c.to_bytes();
    let mut r = mmaudit_protocol::codec::Reader::new(&bytes, 0, "t");
    assert_eq!(GemmCall::decode(&mut r).unwrap(), c);

    // Negative sizes as 0, a batch count of 0 as the empty product, CONJG as N,
    // a complex type as its component type, a non-finite alpha as 0.
    let mut x = sgemm(3, 0, -4, 5, 6);
    x.batch = 0;
    x.batch_form = BatchForm::Strided;
    x.a_type = 4; // CUDA_C_32F
    x.b_type = 6; // CUDA_C_16F
    x.alpha = host_f32(f32::INFINITY);
    x.site.captured = true;
    let c = unmodelled_blas(&x);
    assert_eq!((c.m, c.n, c.k, c.batch, c.op_a), (0, 5, 6, 1, Op::N));
    assert_eq!((c.a.dtype, c.b.dtype), (DType::F32, DType::F16));
    assert_eq!(c.alpha, Scalar::Host(0.0));
    assert!(c.has(flags::CAPTURED) && c.has(flags::UNMODELLED));
    assert_eq!(c.flops(), 0);
    let mut x = sgemm(0, 0, 4, 4, 4);
    x.m = 1 << 50;
    assert!(matches!(describe_blas(&x), Err(NotDescribed::Invalid(_))));
    assert_eq!(unmodelled_blas(&x).m, 1 << 40);
}

#[test]
fn lt_calls_outside_the_model_keep_their_entry_and_sizes() {
    let mut x = lt(1, 0, LT_ORDER_ROW, 6, 5, 7);
    x.desc.epilogue = 8 | 128; // DRELU
    assert!(matches!(describe_lt(&x), Err(NotDescribed::Unsupported(_))));
    let c = unmodelled_lt(&LtPartial::from(&x));
    assert_eq!(
        (c.entry, c.m, c.n, c.k, c.batch, c.op_a, c.a.order),
        (EntryPoint::LtMatmul, 6, 5, 7, 1, Op::T, Order::Row)
    );
    assert_eq!(
        (c.epilogue, c.flags),
        (Epilogue::Default, flags::UNMODELLED)
    );
    x.desc.epilogue = 2 | 128; // RELU_AUX
    assert_eq!(unmodelled_lt(&LtPartial::from(&x)).epilogue, Epilogue::Relu);

    // Only some layouts readable: sizes from what there is, 0 for the rest.
    let mut p = LtPartial::from(&x);
    p.layouts[0] = None;
    p.desc = None;
    let c = unmodelled_lt(&p);
    assert_eq!((c.m, c.n, c.k), (6, 5, 7), "k from B's layout");
    let c = unmodelled_lt(&LtPartial::default());
    assert_eq!((c.m, c.n, c.k, c.batch), (0, 0, 0, 1));
    assert!(c.has(flags::IN_PLACE), "C and D both unknown (0)");
    let bytes = c.to_bytes();
    let mut r = mmaudit_protocol::codec::Reader::new(&bytes, 0, "t");
    assert_eq!(GemmCall::decode(&mut r).unwrap(), c);
}

#[test]
fn a_held_op_a_is_gathered_as_evidence_and_one_spot_row_per_batch_member() {
    use super::gather::{HeldA, HeldKey, Pick};
    // Commit mode's gather of an op(A) that is (or may be) a held tensor: the first
    // element of every row, and row `spot_row` of every batch member whole; the rest of
    // the call as a whole gather. Strided batches, both orders, transposed or not.
    for order in [crate::sys::cublas::LT_ORDER_COL, LT_ORDER_ROW] {
        for ta in [0, 1] {
            let mut mem = Mem::new();
            let (m, n, k, batch) = (6u64, 3u64, 5u64, 4u64);
            let mut x = lt(ta, 0, order, m, n, k);
            strided(&mut mem, &mut x, batch);
            let d = describe_lt(&x).unwrap();
            fill(&mut mem, &d);
            let whole = plan(
                &(0..m).collect::<Vec<_>>(),
                &(0..n).collect::<Vec<_>>(),
                &(0..batch).collect::<Vec<_>>(),
            );
            let key = HeldKey::of(&d.call, &d.gather).unwrap();
            let held = HeldA {
                key,
                reference: None,
                spot_row: 2,
            };
            let layout =
                SlotLayout::with_held(&d.call, &d.gather, &Pick::Whole, Some(held)).unwrap();
            // Without a held op(A), the whole call gathers what the plan of every row,
            // column and batch member gathers, with identity axes instead of its lists.
            let gathered = |mem: &mut Mem, l: &SlotLayout| {
                let slot = mem.alloc(l.len);
                let mut host = vec![0u8; l.len];
                l.write(slot, &mut host).unwrap();
                mem.span(slot, l.len).copy_from_slice(&host);
                mem.run(&l.jobs(slot));
                let bytes = mem.span(slot, l.len).to_vec();
                l.assemble(&bytes).unwrap()
            };
            let listed = SlotLayout::new(&d.call, &d.gather, &whole).unwrap();
            let identity = SlotLayout::with_held(&d.call, &d.gather, &Pick::Whole, None).unwrap();
            assert_eq!(identity.len + 8 * (m + n + batch) as usize, listed.len);
            assert_eq!(gathered(&mut mem, &identity), gathered(&mut mem, &listed));
            assert_eq!(identity.operands(), listed.operands());
            let slot = mem.alloc(layout.len);
            let mut host = vec![0u8; layout.len];
            layout.write(slot, &mut host).unwrap();
            mem.span(slot, layout.len).copy_from_slice(&host);
            mem.run(&layout.jobs(slot));
            let bytes = mem.span(slot, layout.len).to_vec();
            let s = layout.assemble(&bytes).unwrap();
            let OperandData::Inline(first) = &s.a_rows else {
                panic!("inline evidence");
            };
            let want: Vec<f32> = (0..batch)
                .flat_map(|b| (0..m).map(move |r| tag(1, b, r, 0)))
                .collect();
            assert_eq!(floats(first), want, "first elements, order {order} ta {ta}");
            let spot: Vec<f32> = (0..batch)
                .flat_map(|b| (0..k).map(move |kk| tag(1, b, 2, kk)))
                .collect();
            assert_eq!(floats(&layout.spot(&bytes).unwrap()), spot, "spot rows");
            let OperandData::Inline(cols) = &s.b_cols else {
                panic!("inline op(B)");
            };
            assert_eq!(cols.len() as u64, batch * n * k * 4, "op(B) whole");
            // Not a whole plan, or another op(A): refused.
            let part = plan(&[0], &[0], &[0]);
            let part = Pick::Plan(part);
            assert!(SlotLayout::with_held(&d.call, &d.gather, &part, layout.held.clone()).is_err());
        }
    }
}

#[test]
fn a_call_too_large_to_gather_whole_is_refused_before_anything_is_built() {
    use super::gather::{Pick, MAX_WHOLE_VECTORS};
    let mut x = lt(0, 0, 0, 6, 4, 3);
    (x.a, x.b, x.c, x.d) = (0x1000, 0x2000, 0x3000, 0x4000);
    let mut d = describe_lt(&x).unwrap();
    assert!(SlotLayout::with_held(&d.call, &d.gather, &Pick::Whole, None).is_ok());
    d.call.m = MAX_WHOLE_VECTORS;
    let e = SlotLayout::with_held(&d.call, &d.gather, &Pick::Whole, None).unwrap_err();
    assert!(e.contains("too large to gather whole"), "{e}");
    // The same call sampled by a plan is not refused for its size.
    assert!(SlotLayout::new(&d.call, &d.gather, &plan(&[1], &[1], &[0])).is_ok());
}

// ---------------------------------------------------------------- reduced-precision reductions

#[test]
fn reduced_precision_reductions_are_flagged_where_the_call_allows_them() {
    let rpr = |d: &Described| d.call.has(flags::REDUCED_PRECISION_REDUCTION);
    // cuBLAS: a bf16 (or f16) output with f32 accumulation, math mode without
    // CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION (PyTorch's default).
    let mut x = sgemm(0, 0, 4, 4, 4);
    x.entry = EntryPoint::GemmEx;
    for t in [dt::R_16BF, dt::R_16F] {
        (x.a_type, x.b_type, x.c_type) = (t, t, t);
        x.math_mode = 0;
        assert!(rpr(&describe_blas(&x).unwrap()), "type {t}");
        x.math_mode = math::DISALLOW_REDUCED_PRECISION_REDUCTION;
        assert!(!rpr(&describe_blas(&x).unwrap()), "type {t}, disallowed");
    }
    // f32 output, or f16 accumulation: nothing rounds more than the accumulator.
    x.math_mode = 0;
    (x.a_type, x.b_type, x.c_type) = (dt::R_16BF, dt::R_16BF, dt::R_32F);
    assert!(!rpr(&describe_blas(&x).unwrap()));
    (x.a_type, x.b_type, x.c_type) = (dt::R_16F, dt::R_16F, dt::R_16F);
    x.compute = cc::C16F;
    assert!(!rpr(&describe_blas(&x).unwrap()));
    // cuBLASLt: what the hook read from the algorithm, for narrow outputs only.
    let mut l = lt(0, 0, 0, 4, 4, 4);
    for y in [
        &mut l.a_layout,
        &mut l.b_layout,
        &mut l.c_layout,
        &mut l.d_layout,
    ] {
        y.dtype = dt::R_16BF;
    }
    assert!(!rpr(&describe_lt(&l).unwrap()));
    l.reduced_precision_reduction = true;
    assert!(rpr(&describe_lt(&l).unwrap()));
    l.d_layout.dtype = dt::R_32F;
    l.c_layout.dtype = dt::R_32F;
    assert!(!rpr(&describe_lt(&l).unwrap()));
}

/// A whole call whose op(A) is a held tensor (gathered as evidence and a spot row, the
/// steady state of every weight GEMM when the verifier holds the weights) has no leaf
/// job for op(A), which is bound by reference, and still has op(B)'s and D's hashed on
/// the GPU, as a call whose op(A) is not held has all of them.
#[test]
fn a_held_op_a_still_has_b_c_and_d_hashed_on_the_gpu() {
    use super::gather::{HeldA, HeldKey, HeldRef, Pick};
    let mut mem = Mem::new();
    let (m, n, k) = (6u64, 9u64, 5u64);
    let mut x = lt(1, 0, crate::sys::cublas::LT_ORDER_COL, m, n, k);
    strided(&mut mem, &mut x, 1);
    let d = describe_lt(&x).unwrap();
    let key = HeldKey::of(&d.call, &d.gather).unwrap();
    let held = HeldA {
        key,
        reference: Some(HeldRef {
            tensor: 1,
            matrices: vec![0],
        }),
        spot_row: 0,
    };
    let plain = SlotLayout::with_held(&d.call, &d.gather, &Pick::Whole, None)
        .unwrap()
        .hashing_leaves(&d.gather, usize::MAX);
    assert!(plain.leaves.is_some(), "not held: hashed on the GPU");
    let layout = SlotLayout::with_held(&d.call, &d.gather, &Pick::Whole, Some(held))
        .unwrap()
        .hashing_leaves(&d.gather, usize::MAX);
    let ranges = layout.leaves.as_ref().map(|l| l.ranges.clone());
    assert!(
        matches!(ranges, Some([None, Some(_), _, Some(_)])),
        "held op(A): op(B) and D should still be hashed on the GPU, got {ranges:?}"
    );
}

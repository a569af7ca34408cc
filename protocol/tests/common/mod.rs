//! Proptest strategies and helpers shared by the protocol's integration tests.
#![allow(dead_code)]

use mmaudit_protocol::call::{
    flags, BatchForm, ComputeType, DType, EntryPoint, Epilogue, GemmCall, Op, Operand, Order,
    ReplayOf, Scalar, MAX_DIM,
};
use mmaudit_protocol::config::SamplingConfig;
use mmaudit_protocol::keys::Key;
use mmaudit_protocol::record::{
    End, Gap, GapReason, Notice, NoticeKind, OperandData, Record, Sample,
};
use mmaudit_protocol::stream::{Compression, StreamHeader, StreamWriter};
use proptest::prelude::*;

/// The key of `fuzzing::feed`, so streams written here can be fed through it.
pub fn key() -> Key {
    mmaudit_protocol::fuzzing::key()
}

pub fn other_key() -> Key {
    Key::from_bytes([0x43; 32])
}

fn arb_dtype() -> impl Strategy<Value = DType> {
    prop::sample::select(vec![
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::F8E4M3,
        DType::F8E5M2,
        DType::I8,
        DType::I32,
        DType::F64,
    ])
}

fn arb_operand() -> impl Strategy<Value = Operand> {
    (
        arb_dtype(),
        prop::sample::select(vec![Order::Col, Order::Row]),
        any::<u64>(),
        any::<i64>(),
    )
        .prop_map(|(dtype, order, ld, batch_stride)| Operand {
            dtype,
            order,
            ld,
            batch_stride,
        })
}

fn arb_scalar() -> impl Strategy<Value = Scalar> {
    prop_oneof![
        Just(Scalar::Device),
        (-1e300f64..1e300).prop_map(Scalar::Host),
        Just(Scalar::Host(0.0)),
        Just(Scalar::Host(-0.0)),
    ]
}

pub fn arb_call() -> impl Strategy<Value = GemmCall> {
    let head = (
        any::<u64>(),
        prop::sample::select(vec![
            EntryPoint::SgemmV2,
            EntryPoint::Hgemm,
            EntryPoint::GemmEx,
            EntryPoint::GemmStridedBatchedEx,
            EntryPoint::GemmBatchedEx,
            EntryPoint::LtMatmul,
            EntryPoint::HgemmStridedBatched,
        ]),
        any::<u32>(),
        any::<u64>(),
        prop::sample::select(vec![Op::N, Op::T, Op::C]),
        prop::sample::select(vec![Op::N, Op::T, Op::C]),
    );
    let dims = (0..=MAX_DIM, 0..=MAX_DIM, 0..=MAX_DIM, 1..=MAX_DIM);
    let operands = (arb_operand(), arb_operand(), arb_operand(), arb_operand());
    let tail = (
        prop::sample::select(vec![
            BatchForm::Single,
            BatchForm::Strided,
            BatchForm::PointerArray,
        ]),
        prop::sample::select(vec![
            ComputeType::F16,
            ComputeType::F32,
            ComputeType::F32FastTf32,
            ComputeType::I32,
            ComputeType::F64,
        ]),
        arb_dtype(),
        arb_scalar(),
        arb_scalar(),
        prop::sample::select(vec![
            Epilogue::Default,
            Epilogue::Relu,
            Epilogue::GeluTanh,
            Epilogue::GeluErf,
        ]),
        arb_dtype(),
        (0..=flags::ALL).prop_map(|f| {
            // a per-batch bias only comes with a bias
            let mut f = if f & flags::BIAS_PER_BATCH != 0 {
                f | flags::BIAS
            } else {
                f
            };
            // a scale is per tensor or per row (column), not both
            if f & flags::SCALE_A_ROWS != 0 {
                f &= !flags::SCALE_A;
            }
            if f & flags::SCALE_B_COLS != 0 {
                f &= !flags::SCALE_B;
            }
            f
        }),
    );
    (head, dims, operands, tail).prop_map(
        |(
            (index, entry, device, stream, op_a, op_b),
            (m, n, k, batch),
            (a, b, c, d),
            (batch_form, compute, scale_type, alpha, beta, epilogue, bias_type, fl),
        )| GemmCall {
            index,
            entry,
            device,
            stream,
            op_a,
            op_b,
            m,
            n,
            k,
            batch,
            batch_form,
            a,
            b,
            c,
            d,
            compute,
            scale_type,
            alpha,
            beta,
            epilogue,
            bias_type,
            flags: fl,
            // a replayed call names its replay (derived from the index: any values do)
            replay: (fl & flags::REPLAYED != 0).then(|| ReplayOf {
                graph: (index % 7) as u32,
                exec: (index % 5) as u32,
                replay: index.rotate_left(17),
                node: (index % 224) as u32,
            }),
        },
    )
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

fn finite_f64() -> impl Strategy<Value = f64> {
    prop_oneof![-1e300f64..1e300, Just(0.0), Just(-0.0), Just(f64::MAX)]
}

fn finite_f32() -> impl Strategy<Value = f32> {
    prop_oneof![-1e30f32..1e30, Just(-0.0), Just(f32::MIN_POSITIVE)]
}

/// Inline data, or a reference to a verifier-held tensor.
pub fn arb_operand_data() -> impl Strategy<Value = OperandData> {
    prop_oneof![
        3 => bytes(300).prop_map(OperandData::Inline),
        1 => (any::<u32>(), prop::collection::vec(any::<u32>(), 0..6), bytes(40)).prop_map(
            |(tensor, matrices, evidence)| OperandData::Reference {
                tensor,
                matrices,
                evidence,
            }
        ),
    ]
}

pub fn arb_sample() -> impl Strategy<Value = Sample> {
    (
        any::<u64>(),
        prop::option::of(finite_f64()),
        prop::option::of(finite_f64()),
        (
            prop::option::of(finite_f32()),
            prop::option::of(finite_f32()),
            prop::option::of(finite_f32()),
            prop::option::of(finite_f32()),
        ),
        (
            arb_operand_data(),
            arb_operand_data(),
            bytes(64),
            bytes(64),
            bytes(32),
        ),
        (bytes(16), bytes(16)),
    )
        .prop_map(
            |(
                index,
                alpha,
                beta,
                (scale_a, scale_b, scale_c, scale_d),
                (a, b, c_in, d_out, bias),
                (scale_rows, scale_cols),
            )| {
                Sample {
                    index,
                    alpha,
                    beta,
                    scale_a,
                    scale_b,
                    scale_c,
                    scale_d,
                    a_rows: a,
                    b_cols: b,
                    c_in,
                    d_out,
                    bias,
                    scale_rows,
                    scale_cols,
                }
            },
        )
}

pub fn arb_gap() -> impl Strategy<Value = Gap> {
    (
        prop::collection::btree_set(any::<u64>(), 1..40),
        prop::sample::select(vec![
            GapReason::RingFull,
            GapReason::QueueFull,
            GapReason::SinkBackpressure,
            GapReason::GatherFailed,
            GapReason::Internal,
        ]),
        ".{0,40}",
    )
        .prop_map(|(indices, reason, detail)| Gap {
            indices: indices.into_iter().collect(),
            reason,
            detail,
        })
}

pub fn arb_notice() -> impl Strategy<Value = Notice> {
    (
        prop::sample::select(vec![
            NoticeKind::Info,
            NoticeKind::Warning,
            NoticeKind::AuditDisabled,
        ]),
        ".{0,60}",
    )
        .prop_map(|(kind, message)| Notice { kind, message })
}

pub fn arb_end() -> impl Strategy<Value = End> {
    (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(calls, samples, gap_calls)| End {
        calls,
        samples,
        gap_calls,
    })
}

/// Any record but End.
pub fn arb_body_record() -> impl Strategy<Value = Record> {
    prop_oneof![
        3 => arb_call().prop_map(Record::Ledger),
        2 => arb_sample().prop_map(Record::Sample),
        1 => arb_gap().prop_map(Record::Gap),
        1 => arb_notice().prop_map(Record::Notice),
    ]
}

pub fn arb_record() -> impl Strategy<Value = Record> {
    prop_oneof![
        6 => arb_body_record(),
        1 => arb_end().prop_map(Record::End),
    ]
}

pub fn arb_config() -> impl Strategy<Value = SamplingConfig> {
    (
        (
            0..=1_000_000u32,
            0..=1_000_000u32,
            0..=1_000_000u32,
            0..=1_000_000u32,
        ),
        (0..100u32, 0..100u32, 0..100u32),
        (0..3u32, 0..3u32, 0..3u32),
    )
        .prop_map(
            |((call, row, col, batch), (mr, mc, mb), (xr, xc, xb))| SamplingConfig {
                call_ppm: call,
                row_ppm: row,
                col_ppm: col,
                batch_ppm: batch,
                min_rows: mr,
                min_cols: mc,
                min_batches: mb,
                // 0 (no maximum) or a maximum at least the minimum
                max_rows: if xr == 0 { 0 } else { mr + xr },
                max_cols: if xc == 0 { 0 } else { mc + xc },
                max_batches: if xb == 0 { 0 } else { mb + xb },
            },
        )
}

pub fn arb_header() -> impl Strategy<Value = StreamHeader> {
    (
        any::<[u8; 16]>(),
        arb_config(),
        any::<u64>(),
        any::<u32>(),
        ".{0,30}",
        any::<u64>(),
        prop::collection::vec(".{0,20}", 0..5),
        ".{0,30}",
    )
        .prop_map(
            |(nonce, config, stream_id, pid, host, started_unix_ns, devices, producer)| {
                StreamHeader {
                    key_id: key().id(),
                    nonce,
                    config,
                    stream_id,
                    segment: (stream_id % 3) as u32,
                    first_index: stream_id >> 3,
                    pid,
                    host,
                    started_unix_ns,
                    devices,
                    producer,
                    schedule: mmaudit_protocol::schedule::ScheduleVersion::V1,
                }
            },
        )
}

pub fn arb_compression() -> impl Strategy<Value = Compression> {
    prop_oneof![
        Just(Compression::None),
        (1..6i32).prop_map(|level| Compression::Zstd { level }),
    ]
}

/// Header bytes and the bytes of each frame, written with `key()`.
pub fn write_stream(
    header: &StreamHeader,
    frames: &[Vec<Record>],
    compression: Compression,
) -> (Vec<u8>, Vec<Vec<u8>>) {
    let (mut w, head) = StreamWriter::new(&key(), header);
    w.set_compression(compression);
    let frames = frames.iter().map(|f| w.frame(f)).collect();
    (head, frames)
}

pub fn concat(head: &[u8], frames: &[Vec<u8>]) -> Vec<u8> {
    let mut out = head.to_vec();
    for f in frames {
        out.extend_from_slice(f);
    }
    out
}

//! Pinned test vectors of the sampling schedule (docs/PROTOCOL.md, "Schedule test
//! vectors"). Any change to the call encoding, the hash input, the draw of the decision,
//! ChaCha20 seeding or Floyd's sampling changes these and fails here.

use mmaudit_protocol::call::{
    BatchForm, ComputeType, DType, EntryPoint, Epilogue, GemmCall, Op, Operand, Order, Scalar,
};
use mmaudit_protocol::config::SamplingConfig;
use mmaudit_protocol::keys::Key;
use mmaudit_protocol::schedule::{Plan, Schedule};

fn key() -> Key {
    Key::from_bytes(std::array::from_fn(|i| i as u8))
}

fn call(index: u64, m: u64, n: u64, k: u64, batch: u64) -> GemmCall {
    let op = |dtype, ld| Operand {
        dtype,
        order: Order::Col,
        ld,
        batch_stride: 0,
    };
    GemmCall {
        index,
        entry: EntryPoint::GemmEx,
        device: 0,
        stream: 0,
        op_a: Op::T,
        op_b: Op::N,
        m,
        n,
        k,
        batch,
        batch_form: if batch > 1 {
            BatchForm::Strided
        } else {
            BatchForm::Single
        },
        a: op(DType::BF16, k),
        b: op(DType::BF16, k),
        c: op(DType::BF16, m),
        d: op(DType::BF16, m),
        compute: ComputeType::F32,
        scale_type: DType::F32,
        alpha: Scalar::Host(1.0),
        beta: Scalar::Host(0.0),
        epilogue: Epilogue::Default,
        bias_type: DType::BF16,
        flags: 0,
        replay: None,
    }
}

/// (call, expected plan or None) under the key 00 01 .. 1f, nonce 16 x 0xaa.
fn vectors() -> Vec<(GemmCall, Option<Plan>)> {
    let p = |rows: &[u64], cols: &[u64], batches: &[u64]| {
        Some(Plan {
            rows: rows.to_vec(),
            cols: cols.to_vec(),
            batches: batches.to_vec(),
        })
    };
    vec![
        (
            call(0, 4096, 4096, 4096, 1),
            p(
                &[
                    36, 68, 128, 152, 190, 281, 329, 510, 623, 722, 1064, 1186, 1260, 1292, 1421,
                    1424, 1485, 1691, 1698, 1804, 1933, 2264, 2642, 2677, 2821, 2864, 2986, 2990,
                    3057, 3136, 3281, 3314, 3385, 3576, 3694, 3775, 3783, 3961, 4019, 4046,
                ],
                &[765, 1687, 3821, 3966],
                &[0],
            ),
        ),
        (
            call(2, 2048, 2048, 128, 32),
            p(
                &[
                    346, 361, 716, 753, 877, 1010, 1013, 1101, 1459, 1556, 1602, 1679, 1742, 1755,
                    1760, 1780, 1829, 1899, 1977, 2014,
                ],
                &[1172, 1648],
                &[29],
            ),
        ),
        (call(3, 1, 1, 1, 1), p(&[0], &[0], &[0])),
        (
            call(7, 300, 2000, 64, 1),
            p(&[0, 153, 198], &[846, 1210], &[0]),
        ),
    ]
}

fn schedule(config: SamplingConfig) -> Schedule {
    Schedule::new(&key(), [0xaa; 16], config)
}

#[test]
fn pinned_vectors_at_call_rate_one() {
    let s = schedule(SamplingConfig {
        call_ppm: 1_000_000,
        ..SamplingConfig::default()
    });
    for (c, expected) in vectors() {
        assert_eq!(s.decide(&c), expected, "call {}", c.index);
    }
}

#[test]
fn pinned_decisions_at_default_rate() {
    let s = schedule(SamplingConfig::default());
    let sampled: Vec<u64> = (0..200)
        .filter(|&i| s.decide(&call(i, 4096, 16, 4096, 1)).is_some())
        .collect();
    assert_eq!(
        sampled,
        vec![
            3, 18, 32, 37, 57, 65, 70, 76, 86, 87, 88, 91, 96, 98, 121, 146, 156, 167, 169, 179,
            188, 197
        ]
    );
}

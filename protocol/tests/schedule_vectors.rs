//! Pinned test vectors of the sampling schedule (docs/PROTOCOL.md, "Schedule test
//! vectors"). Any change to the call encoding, the hash input, the draw of the decision,
//! ChaCha20 seeding or Floyd's sampling changes these and fails here.

use mmaudit_protocol::call::{
    BatchForm, ComputeType, DType, EntryPoint, Epilogue, GemmCall, Op, Operand, Order, Scalar,
};
use mmaudit_protocol::config::SamplingConfig;
use mmaudit_protocol::keys::Key;
use mmaudit_protocol::schedule::{Plan, Schedule, ScheduleVersion};

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

// ---------------------------------------------------------------------------
// Schedule v2 (docs/PROTOCOL.md, "Schedule v2"): selection by index, eight calls per
// keyed hash; plans from the whole encoding.

fn schedule_v2(config: SamplingConfig) -> Schedule {
    Schedule::with_version(&key(), [0xaa; 16], config, ScheduleVersion::V2)
}

#[test]
fn pinned_v2_selection_words() {
    let s = schedule_v2(SamplingConfig::default());
    let hex = |w: [u64; 8]| -> Vec<String> { w.iter().map(|x| format!("{x:016x}")).collect() };
    assert_eq!(hex(s.selection_block(0)), V2_BLOCK_0);
    assert_eq!(hex(s.selection_block(1 << 40)), V2_BLOCK_2_40);
}

const V2_BLOCK_0: [&str; 8] = [
    "78f727e72813e0a6",
    "73e97c7501326851",
    "fdf862896058a72b",
    "7fb9572acad4abb6",
    "44dedde9645afcca",
    "557824507460404e",
    "a09cc9e681403271",
    "03daa9b5ec2faec2",
];
const V2_BLOCK_2_40: [&str; 8] = [
    "2eb2758664706c36",
    "48fdfca36165722b",
    "ac0464ba94be1199",
    "47e48036c2d16966",
    "335a460cb256456c",
    "c979c26ca5cc6aa8",
    "363988bfd40dd125",
    "f6f2fa3a0dbae9c1",
];

#[test]
fn pinned_v2_decisions_at_default_rate() {
    // The same calls as the v1 vector above, so the two versions differ visibly.
    let s = schedule_v2(SamplingConfig::default());
    let sampled: Vec<u64> = (0..200)
        .filter(|&i| s.decide(&call(i, 4096, 16, 4096, 1)).is_some())
        .collect();
    assert_eq!(sampled, V2_DECISIONS);
}

const V2_DECISIONS: &[u64] = &[
    7, 9, 11, 44, 53, 57, 66, 98, 112, 113, 130, 135, 147, 154, 170, 174, 175, 190, 192, 196,
];

#[test]
fn pinned_v2_plans_at_call_rate_one() {
    let s = schedule_v2(SamplingConfig {
        call_ppm: 1_000_000,
        ..SamplingConfig::default()
    });
    let plans: Vec<Option<Plan>> = vectors().iter().map(|(c, _)| s.decide(c)).collect();
    assert_eq!(format!("{plans:?}"), V2_PLANS);
}

const V2_PLANS: &str = "[Some(Plan { rows: [236, 353, 870, 910, 941, 950, 1042, 1138, 1154, 1303, 1520, 1601, 1746, 1858, 1876, 1884, 1886, 1899, 2167, 2304, 2325, 2393, 2620, 2631, 2727, 2801, 2890, 2952, 3013, 3014, 3078, 3228, 3345, 3459, 3469, 3569, 3828, 3893, 3905, 3932], cols: [1009, 1032, 1353, 2480], batches: [0] }), Some(Plan { rows: [197, 219, 513, 546, 633, 653, 841, 915, 927, 929, 975, 1099, 1106, 1269, 1391, 1420, 1619, 1635, 1672, 1923], cols: [549, 588], batches: [6] }), Some(Plan { rows: [0], cols: [0], batches: [0] }), Some(Plan { rows: [104, 202, 237], cols: [465, 1125], batches: [0] })]";

#[test]
fn v2_selection_depends_on_the_index_alone_and_plans_on_the_whole_call() {
    let s = schedule_v2(SamplingConfig::default());
    // Whether index i is sampled does not depend on the call's shape ...
    for i in 0..400 {
        let a = s.decide(&call(i, 4096, 16, 4096, 1)).is_some();
        let b = s.decide(&call(i, 64, 8, 32, 3)).is_some();
        assert_eq!(a, b, "index {i}");
    }
    // ... but a sampled call's rows depend on all of it.
    let all = schedule_v2(SamplingConfig {
        call_ppm: 1_000_000,
        ..SamplingConfig::default()
    });
    let a = all.decide(&call(5, 4096, 4096, 4096, 1)).unwrap();
    let b = all.decide(&call(5, 4096, 4096, 4095, 1)).unwrap();
    assert_ne!(a.rows, b.rows);
    // and v1 and v2 plans of the same call differ
    let v1 = schedule(SamplingConfig {
        call_ppm: 1_000_000,
        ..SamplingConfig::default()
    });
    assert_ne!(v1.decide(&call(5, 4096, 4096, 4096, 1)).unwrap(), a);
}

#[test]
fn v2_call_rate_is_respected() {
    for ppm in [1_000u32, 100_000, 500_000] {
        let s = schedule_v2(SamplingConfig {
            call_ppm: ppm,
            ..SamplingConfig::default()
        });
        let n = 200_000u64;
        let sampled = (0..n)
            .filter(|&i| s.decide(&call(i, 8, 8, 8, 1)).is_some())
            .count() as f64;
        let p = ppm as f64 / 1e6;
        let sd = (n as f64 * p * (1.0 - p)).sqrt();
        assert!(
            (sampled - n as f64 * p).abs() < 5.0 * sd,
            "{ppm} ppm: {sampled} of {n}"
        );
    }
}

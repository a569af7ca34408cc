//! Weight identity end to end: a safetensors file written here holds Llama-shaped bf16
//! weights; the reference prover multiplies by them (op(A) = W as nn.Linear does, op(A)
//! = W^T, op(B) = W^T, a stacked 3-D tensor per batch entry and one matrix of it); the
//! verifier, holding the file, must name each tensor used and how often, and must fail
//! with `--require-weights` once one element of one tensor differs, naming the tensor
//! and the calls.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use mmaudit_protocol::call::DType;
use mmaudit_protocol::config::SamplingConfig;
use mmaudit_protocol::keys::Key;
use mmaudit_protocol::num;
use mmaudit_protocol::schedule::Plan;
use mmaudit_tests::refprover::{Along, GemmSpec, RefProver, WeightOperand};
use mmaudit_verify::check::{audit_reader_with, NotChecked};
use mmaudit_verify::policy::Policy;
use mmaudit_verify::report::{FailureKind, StreamReport};
use mmaudit_verify::weights::{WeightPolicy, WeightRegistry};
use safetensors::tensor::TensorView;
use safetensors::Dtype;

const Q0: &str = "model.layers.0.self_attn.q_proj.weight";
const Q1: &str = "model.layers.1.self_attn.q_proj.weight";
const UP: &str = "model.layers.0.mlp.up_proj.weight";
const DOWN: &str = "model.layers.0.mlp.down_proj.weight";
const EXPERTS: &str = "model.layers.0.block_sparse_moe.experts.w1";

fn key() -> Key {
    Key::from_bytes([0x57; 32])
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mmaudit-weights-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One tensor of the model: its values (exact bf16) and their bytes.
#[derive(Clone)]
struct Tensor {
    name: &'static str,
    dtype: DType,
    shape: Vec<usize>,
    values: Vec<f64>,
}

impl Tensor {
    fn random(name: &'static str, shape: &[usize], seed: u64) -> Self {
        Tensor::random_of(DType::BF16, name, shape, seed)
    }

    fn random_of(dtype: DType, name: &'static str, shape: &[usize], seed: u64) -> Self {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let n: usize = shape.iter().product();
        let values = (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let u = (x >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
                match dtype {
                    DType::I8 => (u * 127.0).round(),
                    _ => num::round_to(dtype, u),
                }
            })
            .collect();
        Tensor {
            name,
            dtype,
            shape: shape.to_vec(),
            values,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        num::encode_into(self.dtype, &self.values, &mut out);
        out
    }

    fn operand(&self, along: Along) -> WeightOperand {
        WeightOperand::new(Arc::from(self.values.clone()), &self.shape, along)
    }

    /// Changes element `flat` by one bf16 ulp.
    fn nudge(&mut self, flat: usize) {
        let mut b = Vec::new();
        num::encode_into(DType::BF16, &self.values[flat..flat + 1], &mut b);
        b[0] ^= 1;
        let mut v = Vec::new();
        num::decode_into(DType::BF16, &b, &mut v).unwrap();
        self.values[flat] = v[0];
    }
}

fn model() -> Vec<Tensor> {
    vec![
        Tensor::random(Q0, &[256, 256], 1),
        Tensor::random(Q1, &[256, 256], 2),
        Tensor::random(UP, &[688, 256], 3),
        Tensor::random(DOWN, &[256, 688], 4),
        Tensor::random(EXPERTS, &[4, 64, 256], 5),
    ]
}

fn find<'a>(model: &'a [Tensor], name: &str) -> &'a Tensor {
    model.iter().find(|t| t.name == name).unwrap()
}

/// Writes the tensors, plus a 1-D norm and an I64 tensor (not GEMM operands), as one
/// safetensors file.
fn write_model(dir: &Path, file: &str, tensors: &[Tensor]) -> PathBuf {
    let bytes: Vec<Vec<u8>> = tensors.iter().map(Tensor::bytes).collect();
    let norm = vec![0u8; 2 * 256];
    let ids = vec![0u8; 8 * 16];
    let mut views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .zip(&bytes)
        .map(|(t, b)| {
            let dtype = match t.dtype {
                DType::F32 => Dtype::F32,
                DType::F16 => Dtype::F16,
                DType::BF16 => Dtype::BF16,
                DType::F8E4M3 => Dtype::F8_E4M3,
                DType::F8E5M2 => Dtype::F8_E5M2,
                DType::I8 => Dtype::I8,
                other => panic!("no safetensors type for {other:?}"),
            };
            (
                t.name.to_string(),
                TensorView::new(dtype, t.shape.clone(), b).unwrap(),
            )
        })
        .collect();
    views.push((
        "model.norm.weight".into(),
        TensorView::new(Dtype::BF16, vec![256], &norm).unwrap(),
    ));
    views.push((
        "position_ids".into(),
        TensorView::new(Dtype::I64, vec![1, 16], &ids).unwrap(),
    ));
    let path = dir.join(file);
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
    path
}

/// Every call sampled; default row and column rates (2 of 256 rows, 1 column).
fn config() -> SamplingConfig {
    SamplingConfig {
        call_ppm: 1_000_000,
        ..SamplingConfig::default()
    }
}

/// The workload, with its expected use of each tensor. Returns the plans of the calls,
/// by call index.
fn workload(p: &mut RefProver, m: &[Tensor]) -> Vec<Plan> {
    let bf16 = DType::BF16;
    let w = |name, along| find(m, name).operand(along);
    let mut specs = vec![
        // call 0, 1: nn.Linear q_proj of layer 0 on 16 and 32 tokens; call 2: layer 1
        GemmSpec::with_a_weight(w(Q0, Along::Rows), 16, bf16),
        GemmSpec::with_a_weight(w(Q0, Along::Rows), 32, bf16),
        GemmSpec::with_a_weight(w(Q1, Along::Rows), 16, bf16),
        // call 3: up_proj as nn.Linear (m = 688, k = 256)
        GemmSpec::with_a_weight(w(UP, Along::Rows), 16, bf16),
        // call 4: down_proj as nn.Linear (m = 256, k = 688)
        GemmSpec::with_a_weight(w(DOWN, Along::Rows), 16, bf16),
        // call 5: down_proj transposed, op(A) = W^T: m = 688, k = 256, the same shape as
        // up_proj's call 3
        GemmSpec::with_a_weight(w(DOWN, Along::Cols), 16, bf16),
        // call 6: up_proj on the B side, op(B) = W^T (n = 688, k = 256), 16 token rows
        GemmSpec::with_b_weight(w(UP, Along::Rows), 16, bf16),
    ];
    // call 7: the stacked experts, batch entry b multiplying by expert b
    let mut batched = GemmSpec::with_a_weight(w(EXPERTS, Along::Rows), 16, bf16);
    batched.batch = 4;
    specs.push(batched);
    // call 8: expert 2 alone
    specs.push(GemmSpec::with_a_weight(
        w(EXPERTS, Along::Rows).matrix(2),
        8,
        bf16,
    ));
    specs
        .iter()
        .map(|s| p.gemm(s).expect("every call is sampled"))
        .collect()
}

fn expected_counts() -> BTreeMap<String, u64> {
    [(Q0, 2), (Q1, 1), (UP, 2), (DOWN, 2), (EXPERTS, 2)]
        .into_iter()
        .map(|(n, c)| (n.to_string(), c))
        .collect()
}

fn capture(m: &[Tensor]) -> (Vec<u8>, Vec<Plan>) {
    let mut p = RefProver::new(&key(), config(), 7);
    let plans = workload(&mut p, m);
    (p.finish(4).bytes(), plans)
}

fn audit(bytes: &[u8], weights: &Path, required: bool) -> StreamReport {
    let policy = WeightPolicy {
        registry: Arc::new(WeightRegistry::load(&[weights]).unwrap()),
        required,
    };
    let audit_policy = Policy::lenient();
    match audit_reader_with(
        "test",
        bytes,
        &key(),
        100,
        &audit_policy,
        Some(&policy),
        |_| {},
    ) {
        Ok(r) => r,
        Err(NotChecked::Io(e)) => panic!("io: {e}"),
        Err(NotChecked::NotACapture(e)) => panic!("not a capture: {e}"),
    }
}

#[test]
fn honest_workload_passes_and_names_every_tensor_with_its_count() {
    let dir = scratch("honest");
    let m = model();
    let file = write_model(&dir, "model.safetensors", &m);
    let (bytes, _) = capture(&m);
    let r = audit(&bytes, &file, true);
    assert!(r.passed(), "{}", r.to_text());
    assert_eq!(r.verified, 9, "{}", r.to_text());
    let w = r.weights.as_ref().unwrap();
    assert_eq!(w.tensors, expected_counts(), "{}", r.to_text());
    assert_eq!((w.judged, w.matched, w.unmatched), (9, 9, 0));
    let forms = |name: &str| -> Vec<String> { w.forms[name].keys().cloned().collect() };
    assert_eq!(forms(Q0), ["op(A) = W"]);
    assert_eq!(forms(DOWN), ["op(A) = W", "op(A) = W^T"]);
    assert_eq!(forms(UP), ["op(A) = W", "op(B) = W^T"]);
    assert_eq!(forms(EXPERTS), ["op(A) = W[2]", "op(A)[b] = W[b]"]);
    let text = r.to_text();
    for name in [Q0, Q1, UP, DOWN, EXPERTS] {
        assert!(text.contains(name), "{text}");
    }
    let json = r.to_json();
    assert_eq!(json["weights"]["tensors"][UP], 2);
    assert_eq!(json["weights"]["unmatched"], 0);
    assert_eq!(json["weights"]["required"], true);
}

#[test]
fn one_changed_element_fails_the_calls_that_sampled_it_naming_the_tensor() {
    let dir = scratch("one-element");
    let honest = model();
    let (bytes, plans) = capture(&honest);
    // The verifier's copy of q_proj (layer 0) differs in one element, in a row that call
    // 0 sampled. Call 1 also used q_proj but fails only if it sampled that row too.
    let row = plans[0].rows[0] as usize;
    let mut held = honest.clone();
    held[0].nudge(row * 256 + 5);
    let file = write_model(&dir, "changed.safetensors", &held);
    let expect_fail: Vec<u64> = (0..2u64)
        .filter(|&i| plans[i as usize].rows.contains(&(row as u64)))
        .collect();
    assert!(expect_fail.contains(&0));

    let r = audit(&bytes, &file, true);
    assert!(!r.passed(), "{}", r.to_text());
    assert_eq!(r.mismatched, 0, "the arithmetic is still right");
    let w = r.weights.as_ref().unwrap();
    assert_eq!(w.unmatched, expect_fail.len() as u64);
    assert_eq!(w.unmatched_differing, expect_fail.len() as u64);
    let failures: Vec<_> = r
        .failures
        .iter()
        .filter(|f| f.kind == FailureKind::UnknownWeights)
        .collect();
    assert_eq!(failures.len(), expect_fail.len(), "{}", r.to_text());
    let sampled = plans[0].rows.len() * 256;
    for (f, index) in failures.iter().zip(&expect_fail) {
        let call = f.call.as_deref().unwrap();
        assert!(call.starts_with(&format!("call {index} ")), "{call}");
        assert!(
            f.message.contains(&format!(
                "closest: {Q0} as op(A) = W, 1 of {sampled} sampled elements differ"
            )),
            "{}",
            f.message
        );
    }
    let text = r.to_text();
    assert!(text.contains("FAIL unknown weights: call 0 "), "{text}");

    // Without --require-weights the stream passes and reports the unmatched calls.
    let r = audit(&bytes, &file, false);
    assert!(r.passed(), "{}", r.to_text());
    let w = r.weights.as_ref().unwrap();
    assert_eq!(w.unmatched, expect_fail.len() as u64);
    assert_eq!(r.to_json()["weights"]["unmatched"], expect_fail.len());
    assert_eq!(r.to_json()["weights"]["required"], false);
}

#[test]
fn substituted_tensor_fails_every_call_that_used_it() {
    let dir = scratch("substituted");
    let honest = model();
    let file = write_model(&dir, "model.safetensors", &honest);
    // The prover serves a "fine-tuned" up_proj: every 10th element one ulp off.
    let mut served = honest.clone();
    let up = served.iter_mut().find(|t| t.name == UP).unwrap();
    for i in (0..up.values.len()).step_by(10) {
        up.nudge(i);
    }
    let (bytes, _) = capture(&served);
    let r = audit(&bytes, &file, true);
    assert!(!r.passed());
    assert_eq!(r.mismatched, 0, "{}", r.to_text());
    let failed: Vec<String> = r
        .failures
        .iter()
        .filter(|f| f.kind == FailureKind::UnknownWeights)
        .map(|f| {
            assert!(
                f.message.contains(&format!("closest: {UP} as ")),
                "{}",
                f.message
            );
            f.call.clone().unwrap()
        })
        .collect();
    assert_eq!(failed.len(), 2, "{}", r.to_text());
    assert!(failed[0].starts_with("call 3 "), "{failed:?}");
    assert!(failed[1].starts_with("call 6 "), "{failed:?}");
    let w = r.weights.as_ref().unwrap();
    assert!(!w.tensors.contains_key(UP));
    assert_eq!(w.matched, 7);
}

#[test]
fn activation_only_calls_are_unmatched_without_candidates() {
    let dir = scratch("activations");
    let m = model();
    let file = write_model(&dir, "model.safetensors", &m);
    let mut p = RefProver::new(&key(), config(), 3);
    p.gemm(&GemmSpec::with_a_weight(
        find(&m, Q0).operand(Along::Rows),
        16,
        DType::BF16,
    ));
    // attention scores: Q K^T per head, no weight on either side
    let mut scores = GemmSpec::new(
        16,
        16,
        32,
        DType::BF16,
        DType::BF16,
        mmaudit_protocol::call::ComputeType::F32,
    );
    scores.batch = 8;
    p.gemm(&scores);
    let bytes = p.finish(8).bytes();
    let r = audit(&bytes, &file, false);
    assert!(r.passed(), "{}", r.to_text());
    let w = r.weights.as_ref().unwrap();
    assert_eq!((w.matched, w.unmatched, w.unmatched_differing), (1, 1, 0));
    let r = audit(&bytes, &file, true);
    assert!(!r.passed());
    let f = r
        .failures
        .iter()
        .find(|f| f.kind == FailureKind::UnknownWeights)
        .unwrap();
    assert!(f.call.as_deref().unwrap().starts_with("call 1 "));
    assert!(
        f.message.contains("no held tensor of this shape and type"),
        "{}",
        f.message
    );
    assert!(!f.message.contains("closest"), "{}", f.message);
}

#[test]
fn every_supported_element_type_matches_bit_for_bit() {
    use mmaudit_protocol::call::ComputeType;
    let dir = scratch("types");
    let m = vec![
        Tensor::random_of(DType::F32, "f32.weight", &[48, 32], 11),
        Tensor::random_of(DType::F16, "f16.weight", &[48, 32], 12),
        Tensor::random_of(DType::F8E4M3, "e4m3.weight", &[48, 32], 13),
        Tensor::random_of(DType::F8E5M2, "e5m2.weight", &[48, 32], 14),
        Tensor::random_of(DType::I8, "i8.weight", &[48, 32], 15),
    ];
    let file = write_model(&dir, "types.safetensors", &m);
    let mut p = RefProver::new(&key(), config(), 5);
    for t in &m {
        let (output, compute) = match t.dtype {
            DType::I8 => (DType::I32, ComputeType::I32),
            DType::F8E4M3 | DType::F8E5M2 => (DType::BF16, ComputeType::F32),
            d => (d, ComputeType::F32),
        };
        let mut spec = GemmSpec::new(48, 8, 32, t.dtype, output, compute);
        spec.a_weight = Some(t.operand(Along::Rows));
        p.gemm(&spec);
        // the same weight on the B side: op(B) = W, n = 32, k = 48
        let mut spec = GemmSpec::new(8, 32, 48, t.dtype, output, compute);
        spec.b_weight = Some(t.operand(Along::Cols));
        p.gemm(&spec);
    }
    let r = audit(&p.finish(4).bytes(), &file, true);
    assert!(r.passed(), "{}", r.to_text());
    let w = r.weights.as_ref().unwrap();
    for t in &m {
        assert_eq!(w.tensors.get(t.name), Some(&2), "{}", r.to_text());
        let forms: Vec<&String> = w.forms[t.name].keys().collect();
        assert_eq!(forms, ["op(A) = W", "op(B) = W"]);
    }
}

#[test]
fn loading_rejects_bad_files_naming_them_and_skips_unsupported_types() {
    let dir = scratch("load");
    let m = model();
    let good = write_model(&dir, "model.safetensors", &m);
    let r = WeightRegistry::load(&[&good]).unwrap();
    assert_eq!(
        r.len(),
        5,
        "the 1-D norm and the I64 tensor are not indexed"
    );
    assert_eq!(r.notes().len(), 1, "{:?}", r.notes());
    assert!(r.notes()[0].contains("I64") && r.notes()[0].contains("position_ids"));

    let err = |paths: &[&Path]| format!("{:#}", WeightRegistry::load(paths).unwrap_err());
    let missing = dir.join("absent.safetensors");
    assert!(err(&[&missing]).contains("absent.safetensors"));
    let garbage = dir.join("garbage.safetensors");
    std::fs::write(
        &garbage,
        b"\xff\x00\x00\x00\x00\x00\x00\x00this is not json",
    )
    .unwrap();
    let e = err(&[&garbage]);
    assert!(
        e.contains("garbage.safetensors is not a safetensors file"),
        "{e}"
    );
    let empty = dir.join("empty.safetensors");
    std::fs::write(&empty, b"").unwrap();
    assert!(err(&[&empty]).contains("empty.safetensors is not a safetensors file"));
    assert!(err(&[&dir]).contains("directory"));
    let copy = write_model(&dir, "copy.safetensors", &m[..1]);
    let e = err(&[&good, &copy]);
    assert!(e.contains(Q0) && e.contains("copy.safetensors"), "{e}");
    // only tensors of no matched type
    let ids = write_model(&dir, "ids.safetensors", &[]);
    assert!(err(&[&ids]).contains("holds no 2-D or 3-D tensor"));
}

// ---- the binary --------------------------------------------------------------------

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mmaudit-verify"))
}

fn write_key(dir: &Path) -> PathBuf {
    let p = dir.join("audit.key");
    std::fs::write(&p, key().to_hex() + "\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

fn check(capture: &Path, key: &Path, extra: &[&str], weights: &[&Path]) -> Output {
    let mut c = bin();
    c.arg("check").arg(capture).arg("--key-file").arg(key);
    c.args(extra);
    if !weights.is_empty() {
        c.arg("--weights").args(weights);
    }
    c.output().unwrap()
}

fn assert_could_not_run(o: &Output, mentions: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains(mentions), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn cli_lists_tensors_fails_changed_weights_and_refuses_bad_files() {
    let dir = scratch("cli");
    let k = write_key(&dir);
    let honest = model();
    let good = write_model(&dir, "model.safetensors", &honest);
    let (bytes, plans) = capture(&honest);
    let cap = dir.join("run.mma");
    std::fs::write(&cap, &bytes).unwrap();

    let json = dir.join("r.json");
    let o = check(
        &cap,
        &k,
        &["--require-weights", "--json", json.to_str().unwrap()],
        &[&good],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("weights  5 tensors"), "{out}");
    assert!(
        out.contains("note: ") && out.contains("position_ids"),
        "{out}"
    );
    for (name, count) in expected_counts() {
        assert!(
            out.lines()
                .any(|l| l.contains(&name) && l.trim_start().starts_with(&count.to_string())),
            "{name} x{count}: {out}"
        );
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let w = &report["streams"][0]["weights"];
    assert_eq!(w["tensors"][Q0], 2);
    assert_eq!(w["tensors"][EXPERTS], 2);
    assert_eq!(w["unmatched"], 0);
    assert_eq!(w["required"], true);

    // one element of q_proj changed, in a row call 0 sampled
    let mut held = honest.clone();
    held[0].nudge(plans[0].rows[0] as usize * 256 + 5);
    let changed = write_model(&dir, "changed.safetensors", &held);
    let o = check(&cap, &k, &["--require-weights"], &[&changed]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("FAIL unknown weights: call 0 "), "{out}");
    assert!(out.contains(&format!("closest: {Q0}")), "{out}");
    let o = check(&cap, &k, &[], &[&changed]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("unmatched"), "{out}");
    assert!(!out.contains("FAIL"), "{out}");

    // files that cannot be used: exit 2, one line
    let garbage = dir.join("garbage.safetensors");
    std::fs::write(&garbage, vec![0x5au8; 4096]).unwrap();
    assert_could_not_run(
        &check(&cap, &k, &[], &[&garbage]),
        "garbage.safetensors is not a safetensors file",
    );
    assert_could_not_run(
        &check(&cap, &k, &[], &[&dir.join("absent.safetensors")]),
        "absent.safetensors",
    );
    assert_could_not_run(
        &check(&cap, &k, &[], &[&good, &good]),
        "must be in one file only",
    );
    assert_could_not_run(
        &check(&cap, &k, &[], &[&cap]),
        "is an mmaudit capture, not a safetensors file",
    );
    let o = check(&cap, &k, &["--require-weights"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--weights"));

    let o = bin().args(["check", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&o.stdout);
    assert!(help.contains("--weights") && help.contains("--require-weights"));
    assert!(help.contains("mmaudit-verify check run.mma --key-file audit.key --weights"));
}

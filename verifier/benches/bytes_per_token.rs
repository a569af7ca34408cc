//! Stream bytes per generated token, with and without operand references to weights the
//! verifier holds, measured through `mmaudit-verify serve` with the reference prover,
//! and compared with what `mmaudit-verify plan` predicts for the same model and rates.
//! A benchmark, not a test: it prints a table (recorded in docs/PERFORMANCE.md) and
//! asserts only that every stream passed.
//!
//! The model is Llama-shaped and small enough to hold here (hidden 1024, intermediate
//! 2816, 2 layers, 8 heads of 128, 2 KV heads, vocab 8192; random bf16 weights in a
//! safetensors file the server holds). The prover plays the decode passes exactly as
//! `plan` models them — per layer q, k, v, attention scores and output (eager, batch =
//! heads, context = prompt + j for the j-th token), o, gate, up, down, then lm_head —
//! with the weights as op(A) (`nn.Linear`), connects to an in-process server, reads its
//! hello and sends each stream: once with every operand inline, once with the weight
//! rows replaced by references to the hello's tensors.
//!
//! This measures the protocol and the reference prover, not `libmmaudit.so`: the
//! library's own figure needs its TCP sink to perform the handshake.
//!
//! "again B/tok" counts the inline op(B) bytes of sampled calls whose input another
//! sampled call of the same token and layer already sent: q, k and v read the same
//! hidden state, gate and up the same one (the model's calls are separate here, as in
//! Hugging Face's eager Llama; serving stacks fuse them into one GEMM each). It is what
//! sending such a column once and referencing it would save, before compression (the
//! reference prover's operands are random, so the columns are not byte-identical here;
//! in a model they are).
//!
//! Run: cargo bench -p mmaudit-verify --bench bytes_per_token [-- TOKENS]

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use mmaudit_protocol::call::{ComputeType, DType};
use mmaudit_protocol::config::SamplingConfig;
use mmaudit_protocol::handshake::OperandTable;
use mmaudit_protocol::keys::Key;
use mmaudit_protocol::num;
use mmaudit_protocol::record::Record;
use mmaudit_tests::refprover::{Along, GemmSpec, RefProver, WeightOperand};
use mmaudit_tests::session;
use mmaudit_verify::plan::parse_hf_config;
use mmaudit_verify::serve::{ServeOptions, Server};
use mmaudit_verify::weights::{WeightPolicy, WeightRegistry};
use safetensors::tensor::TensorView;

const CONFIG: &str = r#"{"hidden_size": 1024, "intermediate_size": 2816, "num_hidden_layers": 2,
"num_attention_heads": 8, "num_key_value_heads": 2, "vocab_size": 8192}"#;
const PROMPT: u64 = 64;

struct Weight {
    name: String,
    rows: usize,
    cols: usize,
    values: Arc<[f64]>,
}

fn random_bf16(seed: u64, n: usize) -> Vec<f64> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            num::round_to(
                DType::BF16,
                (x >> 11) as f64 / (1u64 << 53) as f64 * 0.2 - 0.1,
            )
        })
        .collect()
}

fn main() {
    let tokens: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(64);
    let shape = parse_hf_config(CONFIG).expect("config");
    let dir = std::env::temp_dir().join(format!("mmaudit-bpt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config_path = dir.join("config.json");
    std::fs::write(&config_path, CONFIG).unwrap();

    // The weights, as nn.Linear stores them: (out_features, in_features).
    let (q, kv) = (
        shape.heads * shape.head_dim,
        shape.kv_heads * shape.head_dim,
    );
    let mut weights = Vec::new();
    let mut seed = 1;
    let mut add = |name: String, rows: u64, cols: u64| {
        seed += 1;
        let values: Arc<[f64]> = Arc::from(random_bf16(seed, (rows * cols) as usize));
        weights.push(Weight {
            name,
            rows: rows as usize,
            cols: cols as usize,
            values,
        });
        weights.len() - 1
    };
    let mut layers = Vec::new();
    for l in 0..shape.layers {
        let p = |n: &str| format!("model.layers.{l}.{n}.weight");
        layers.push([
            add(p("self_attn.q_proj"), q, shape.hidden),
            add(p("self_attn.k_proj"), kv, shape.hidden),
            add(p("self_attn.v_proj"), kv, shape.hidden),
            add(p("self_attn.o_proj"), shape.hidden, q),
            add(p("mlp.gate_proj"), shape.intermediate, shape.hidden),
            add(p("mlp.up_proj"), shape.intermediate, shape.hidden),
            add(p("mlp.down_proj"), shape.hidden, shape.intermediate),
        ]);
    }
    let lm_head = add("lm_head.weight".into(), shape.vocab, shape.hidden);
    let encoded: Vec<Vec<u8>> = weights
        .iter()
        .map(|w| {
            let mut b = Vec::new();
            num::encode_into(DType::BF16, &w.values, &mut b);
            b
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = weights
        .iter()
        .zip(&encoded)
        .map(|(w, b)| {
            (
                w.name.clone(),
                TensorView::new(safetensors::Dtype::BF16, vec![w.rows, w.cols], b).unwrap(),
            )
        })
        .collect();
    let model = dir.join("model.safetensors");
    safetensors::serialize_to_file(views, None, &model).unwrap();
    drop(encoded);
    let registry = Arc::new(WeightRegistry::load(&[&model]).expect("weights"));

    let key = Key::from_bytes([3; 32]);
    println!(
        "bytes per generated token: {} decode tokens after a {PROMPT}-token prompt, Llama-shaped model (hidden {}, intermediate {}, {} layers, {} heads x {}, {} KV heads, vocab {}), bf16",
        tokens,
        shape.hidden,
        shape.intermediate,
        shape.layers,
        shape.heads,
        shape.head_dim,
        shape.kv_heads,
        shape.vocab
    );
    for rate in [1.0, 0.1] {
        let mut opts = ServeOptions::new("127.0.0.1:0".parse().unwrap(), key.clone());
        opts.weights = Some(WeightPolicy {
            registry: registry.clone(),
            required: false,
        });
        let t = std::time::Instant::now();
        let server = Server::bind(opts).expect("bind");
        if rate == 1.0 {
            println!(
                "hello: {} tensors, {} bytes per connection; table fingerprinted in {:.1} ms ({:.0} MB of weights)",
                server.held_tensors(),
                server.hello_len(),
                t.elapsed().as_secs_f64() * 1e3,
                registry.indexed_bytes() as f64 / 1e6
            );
            println!(
                "{:<9} {:<11} {:>8} {:>9} {:>13} {:>13} {:>13} {:>13} {:>13}",
                "call rate",
                "weights",
                "sampled",
                "by ref",
                "records B/tok",
                "sent B/tok",
                "plan B/tok",
                "sent / plan",
                "again B/tok"
            );
        }
        let addr = server.local_addr();
        let stopper = server.stopper();
        let handle = std::thread::spawn(move || server.run().expect("serve"));
        let plan = plan_bytes(&config_path, tokens, rate);
        for references in [false, true] {
            let (mut socket, hello) =
                session::connect(addr, &key, Duration::from_secs(60)).expect("connect");
            let config = SamplingConfig {
                call_ppm: (rate * 1e6) as u32,
                ..SamplingConfig::default()
            };
            let mut p = RefProver::new(&key, config, 7).with_nonce(hello.nonce);
            // per call: the calls that read the same input share a number (the
            // first one's index; every other call its own)
            let mut input_of: Vec<u64> = Vec::new();
            if references {
                p.use_references(OperandTable::new(&key, hello));
            }
            let linear = |w: &Weight| {
                let op = WeightOperand::new(w.values.clone(), &[w.rows, w.cols], Along::Rows);
                GemmSpec::with_a_weight(op, 1, DType::BF16)
            };
            let attention = |m, k| {
                let mut g = GemmSpec::new(m, 1, k, DType::BF16, DType::BF16, ComputeType::F32);
                g.batch = shape.heads;
                g
            };
            for j in 1..=tokens {
                let context = PROMPT + j;
                for l in &layers {
                    let qkv = input_of.len() as u64;
                    for &w in &l[..3] {
                        p.gemm(&linear(&weights[w]));
                        input_of.push(qkv);
                    }
                    p.gemm(&attention(context, shape.head_dim));
                    p.gemm(&attention(shape.head_dim, context));
                    p.gemm(&linear(&weights[l[3]]));
                    for _ in 0..3 {
                        input_of.push(input_of.len() as u64);
                    }
                    let gate_up = input_of.len() as u64;
                    for &w in &l[4..6] {
                        p.gemm(&linear(&weights[w]));
                        input_of.push(gate_up);
                    }
                    p.gemm(&linear(&weights[l[6]]));
                    input_of.push(input_of.len() as u64);
                }
                p.gemm(&linear(&weights[lm_head]));
                input_of.push(input_of.len() as u64);
            }
            let mut inputs_sent = std::collections::HashSet::new();
            let again: usize = p
                .records
                .iter()
                .filter_map(|r| match r {
                    Record::Sample(s) => s.b_cols.inline().map(|b| (s.index, b.len())),
                    _ => None,
                })
                .filter(|&(index, _)| !inputs_sent.insert(input_of[index as usize]))
                .map(|(_, len)| len)
                .sum();
            let sampled = p
                .records
                .iter()
                .filter(|r| matches!(r, Record::Sample(_)))
                .count();
            let records: usize = p.records.iter().map(Record::encoded_len).sum();
            let capture = p.finish(64);
            let bytes = capture.bytes();
            std::io::Write::write_all(&mut socket, &bytes).expect("send");
            session::close_and_wait(socket).expect("close");
            let planned = if references { plan.1 } else { plan.0 };
            println!(
                "{:<9} {:<11} {:>8} {:>9} {:>13.0} {:>13.0} {:>13.0} {:>13.3} {:>13.0}",
                format!("{}%", rate * 100.0),
                if references { "references" } else { "inline" },
                sampled,
                p.referenced,
                records as f64 / tokens as f64,
                bytes.len() as f64 / tokens as f64,
                planned,
                bytes.len() as f64 / tokens as f64 / planned,
                again as f64 / tokens as f64
            );
        }
        stopper.stop();
        let summary = handle.join().unwrap();
        assert_eq!((summary.streams, summary.failed), (2, 0), "{summary:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `plan`'s expected decode bytes per generated token: (op(A) rows sent, weights held).
fn plan_bytes(config: &std::path::Path, tokens: u64, rate: f64) -> (f64, f64) {
    let json = config.with_extension(format!("plan-{rate}.json"));
    let out = Command::new(env!("CARGO_BIN_EXE_mmaudit-verify"))
        .arg("plan")
        .arg("--hf-config")
        .arg(config)
        .args(["--prompt-tokens", &PROMPT.to_string()])
        .args(["--tokens", &tokens.to_string()])
        .args(["--call-rate", &format!("{rate}")])
        .arg("--json")
        .arg(&json)
        .output()
        .expect("plan");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let d = &v["model"]["decode"];
    (
        d["bytes_per_token"].as_f64().unwrap(),
        d["bytes_per_token_weights_held"].as_f64().unwrap(),
    )
}

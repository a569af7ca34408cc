//! Cost of weight identity: loading safetensors files (`WeightRegistry::load`) and
//! matching one sampled call's operands against the held tensors
//! (`WeightRegistry::identify`). A benchmark, not a test: it prints a table (recorded in
//! docs/PERFORMANCE.md) and asserts nothing about time.
//!
//! Loading is timed on sparse files shaped like Llama-2-7B and Llama-2-70B (every tensor
//! of the real checkpoints, data left as holes: loading reads only the header). Matching
//! is timed on a file with real data: 8 layers of Llama-2-7B shapes (3.2 GB), so 32
//! tensors share the shape 4096 x 4096, with the page cache warm.
//!
//! Run: cargo bench -p mmaudit-verify --bench weights_match

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use mmaudit_protocol::call::{
    BatchForm, ComputeType, DType, EntryPoint, Epilogue, GemmCall, Op, Operand, Order, Scalar,
};
use mmaudit_protocol::schedule::Plan;
use mmaudit_verify::weights::{Identity, WeightRegistry};

/// (name, shape) of every tensor of a Llama checkpoint.
fn llama(
    layers: usize,
    hidden: usize,
    inter: usize,
    kv: usize,
    vocab: usize,
) -> Vec<(String, Vec<usize>)> {
    let mut t = vec![
        ("model.embed_tokens.weight".to_string(), vec![vocab, hidden]),
        ("lm_head.weight".to_string(), vec![vocab, hidden]),
        ("model.norm.weight".to_string(), vec![hidden]),
    ];
    for l in 0..layers {
        let p = format!("model.layers.{l}");
        for (n, s) in [
            ("self_attn.q_proj.weight", vec![hidden, hidden]),
            ("self_attn.k_proj.weight", vec![kv, hidden]),
            ("self_attn.v_proj.weight", vec![kv, hidden]),
            ("self_attn.o_proj.weight", vec![hidden, hidden]),
            ("mlp.gate_proj.weight", vec![inter, hidden]),
            ("mlp.up_proj.weight", vec![inter, hidden]),
            ("mlp.down_proj.weight", vec![hidden, inter]),
            ("input_layernorm.weight", vec![hidden]),
            ("post_attention_layernorm.weight", vec![hidden]),
        ] {
            t.push((format!("{p}.{n}"), s));
        }
    }
    t.sort();
    t
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Element `i` of tensor `t`: a finite bf16 (exponent below 128), as its bits.
fn element(t: usize, i: usize) -> u16 {
    (splitmix(((t as u64) << 40) | i as u64) >> 48) as u16 & 0xbfff
}

/// Writes a bf16 safetensors file; returns each tensor's (name, shape). With `sparse`,
/// the data are holes (zeros) and cost no disk.
fn write(path: &Path, tensors: &[(String, Vec<usize>)], sparse: bool) {
    let mut header = String::from("{");
    let mut offset = 0usize;
    for (i, (name, shape)) in tensors.iter().enumerate() {
        let bytes = 2 * shape.iter().product::<usize>();
        if i > 0 {
            header.push(',');
        }
        header += &format!(
            "\"{name}\":{{\"dtype\":\"BF16\",\"shape\":{shape:?},\"data_offsets\":[{offset},{}]}}",
            offset + bytes
        );
        offset += bytes;
    }
    header.push('}');
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let file = File::create(path).unwrap();
    let mut w = BufWriter::with_capacity(1 << 22, &file);
    w.write_all(&(header.len() as u64).to_le_bytes()).unwrap();
    w.write_all(header.as_bytes()).unwrap();
    if sparse {
        w.flush().unwrap();
        drop(w);
        file.set_len((8 + header.len() + offset) as u64).unwrap();
        return;
    }
    let mut chunk = Vec::with_capacity(1 << 20);
    for (t, (_, shape)) in tensors.iter().enumerate() {
        let n: usize = shape.iter().product();
        for i in 0..n {
            chunk.extend_from_slice(&element(t, i).to_le_bytes());
            if chunk.len() >= 1 << 20 {
                w.write_all(&chunk).unwrap();
                chunk.clear();
            }
        }
    }
    w.write_all(&chunk).unwrap();
    w.flush().unwrap();
}

fn call(m: u64, n: u64, k: u64) -> GemmCall {
    let op = |ld| Operand {
        dtype: DType::BF16,
        order: Order::Col,
        ld,
        batch_stride: 0,
    };
    GemmCall {
        index: 0,
        entry: EntryPoint::GemmEx,
        device: 0,
        stream: 0,
        op_a: Op::T,
        op_b: Op::N,
        m,
        n,
        k,
        batch: 1,
        batch_form: BatchForm::Single,
        a: op(k),
        b: op(k),
        c: op(m),
        d: op(m),
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

/// `count` distinct sorted indices below `dim`, as the schedule would draw them.
fn indices(dim: u64, count: usize, seed: u64) -> Vec<u64> {
    let mut v: Vec<u64> = Vec::new();
    let mut x = seed;
    while v.len() < count {
        x = splitmix(x);
        let i = x % dim;
        if !v.contains(&i) {
            v.push(i);
        }
    }
    v.sort();
    v
}

/// Bytes of the vectors `xs` of tensor `t` (rows x cols): rows or columns.
fn vectors(t: usize, cols: usize, rows: usize, xs: &[u64], along_rows: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for &x in xs {
        let x = x as usize;
        if along_rows {
            (0..cols).for_each(|j| out.extend_from_slice(&element(t, x * cols + j).to_le_bytes()));
        } else {
            (0..rows).for_each(|j| out.extend_from_slice(&element(t, j * cols + x).to_le_bytes()));
        }
    }
    out
}

fn noise(len: usize, seed: u64) -> Vec<u8> {
    (0..len / 2)
        .flat_map(|i| ((splitmix(seed ^ i as u64) >> 48) as u16 & 0xbfff).to_le_bytes())
        .collect()
}

struct Timed {
    case: String,
    per_call_us: f64,
    outcome: String,
}

fn time(case: &str, reps: usize, mut f: impl FnMut() -> Identity) -> Timed {
    let mut outcome = String::new();
    let mut best = f64::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        for _ in 0..reps {
            let id = f();
            outcome = match id {
                Identity::Matched(m) => format!("{} as {}", m[0].tensor, m[0].form()),
                Identity::Unmatched(u) => match u.closest {
                    Some(c) => format!(
                        "unmatched; closest {} ({} of {} differ)",
                        c.at.tensor, c.differing, c.compared
                    ),
                    None => "unmatched".into(),
                },
            };
        }
        best = best.min(start.elapsed().as_secs_f64() / reps as f64);
    }
    Timed {
        case: case.into(),
        per_call_us: best * 1e6,
        outcome,
    }
}

fn main() {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("mmaudit-bench-weights-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    println!("## Loading (sparse files, header only)\n");
    println!("| model shape | tensors | indexed | file GB | load ms (best of 5) |");
    println!("|---|---|---|---|---|");
    for (name, shape) in [
        ("Llama-2-7B", llama(32, 4096, 11008, 4096, 32000)),
        ("Llama-2-70B", llama(80, 8192, 28672, 1024, 32000)),
    ] {
        let path = dir.join(format!("{name}.safetensors"));
        write(&path, &shape, true);
        let mut best = f64::MAX;
        let mut indexed = 0;
        for _ in 0..5 {
            let start = Instant::now();
            let r = WeightRegistry::load(&[&path]).unwrap();
            best = best.min(start.elapsed().as_secs_f64());
            indexed = r.len();
        }
        let gb = std::fs::metadata(&path).unwrap().len() as f64 / 1e9;
        println!(
            "| {name} | {} | {indexed} | {gb:.1} | {:.2} |",
            shape.len(),
            best * 1e3
        );
        std::fs::remove_file(&path).unwrap();
    }

    let layers = 8;
    let tensors = llama(layers, 4096, 11008, 4096, 32000);
    let path = dir.join("llama-8-layers.safetensors");
    let start = Instant::now();
    write(&path, &tensors, false);
    let written = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let registry = WeightRegistry::load(&[&path]).unwrap();
    let load = start.elapsed().as_secs_f64();
    println!(
        "\n## Matching ({layers} layers of Llama-2-7B shapes, {:.2} GB written in {written:.1} s, loaded in {:.2} ms, page cache warm)\n",
        std::fs::metadata(&path).unwrap().len() as f64 / 1e9,
        load * 1e3
    );
    let id = |name: &str| tensors.iter().position(|(n, _)| n == name).unwrap();
    let last = layers - 1;
    let q_last = id(&format!("model.layers.{last}.self_attn.q_proj.weight"));
    let down_last = id(&format!("model.layers.{last}.mlp.down_proj.weight"));
    let up_last = id(&format!("model.layers.{last}.mlp.up_proj.weight"));

    // default rates: 1% of rows (40 of 4096, 110 of 11008), one column of 16 tokens
    let rows40 = indices(4096, 40, 1);
    let rows110 = indices(11008, 110, 2);
    let col = vec![3u64];
    let batch0 = vec![0u64];
    let plan = |rows: &[u64], cols: &[u64]| Plan {
        rows: rows.to_vec(),
        cols: cols.to_vec(),
        batches: batch0.clone(),
    };
    let activations = |n: usize, k: usize| noise(n * k * 2, 99);

    let mut out = Vec::new();
    {
        let (c, p) = (call(4096, 16, 4096), plan(&rows40, &col));
        let a = vectors(q_last, 4096, 4096, &rows40, true);
        let b = activations(1, 4096);
        out.push(time(
            "q_proj of layer 7, op(A) = W, 40 rows x k 4096 (30 tensors of its shape rejected first)",
            200,
            || registry.identify(&c, &p, Some(&a), Some(&b), false),
        ));
    }
    {
        let (c, p) = (call(11008, 16, 4096), plan(&rows110, &col));
        let a = vectors(up_last, 4096, 11008, &rows110, true);
        let b = activations(1, 4096);
        out.push(time(
            "up_proj, op(A) = W, 110 rows x k 4096 (24 candidates: gate, up, down^T)",
            200,
            || registry.identify(&c, &p, Some(&a), Some(&b), false),
        ));
    }
    {
        let (c, p) = (call(11008, 16, 4096), plan(&rows110, &col));
        let a = vectors(down_last, 11008, 4096, &rows110, false);
        let b = activations(1, 4096);
        out.push(time(
            "down_proj, op(A) = W^T, 110 strided columns x k 4096",
            50,
            || registry.identify(&c, &p, Some(&a), Some(&b), false),
        ));
    }
    {
        let (c, p) = (call(16, 4096, 4096), plan(&[5], &rows40));
        let a = activations(1, 4096);
        let b = vectors(q_last, 4096, 4096, &rows40, true);
        out.push(time(
            "q_proj on the B side, op(B) = W^T, 40 columns (A side tried first)",
            200,
            || registry.identify(&c, &p, Some(&a), Some(&b), false),
        ));
    }
    {
        let (c, p) = (call(4096, 16, 4096), plan(&rows40, &col));
        let a = activations(40, 4096);
        let b = activations(1, 4096);
        out.push(time(
            "unmatched: 40 rows of other data, 32 tensors of its shape x 2 orientations rejected",
            200,
            || registry.identify(&c, &p, Some(&a), Some(&b), false),
        ));
        out.push(time(
            "unmatched with --require-weights: 32 tensors x 2 orientations screened on one row, the closest counted in full",
            5,
            || registry.identify(&c, &p, Some(&a), Some(&b), true),
        ));
    }
    println!("| case | µs per sampled call | outcome |");
    println!("|---|---|---|");
    for t in out {
        println!("| {} | {:.1} | {} |", t.case, t.per_call_us, t.outcome);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

//! `mmaudit-refprover`: writes a capture of a small Llama-shaped workload computed by
//! the reference prover, honest or with a chosen fault, for demos and tests of the
//! verifier while no GPU is involved.

use std::path::PathBuf;
use std::process::ExitCode;

use mmaudit_protocol::call::{ComputeType, DType, Epilogue};
use mmaudit_protocol::config::{parse_rate, SamplingConfig};
use mmaudit_protocol::keys::Key;
use mmaudit_protocol::record::Record;
use mmaudit_tests::refprover::{GemmSpec, RefProver};

const USAGE: &str = "\
usage: mmaudit-refprover --key-file KEY --out FILE [--fault NAME] [--layers N] [--call-rate R] [--seed S]

Writes a capture of a Llama-shaped workload (QKV, attention bmm, output, gate/up/down
with bias and in-place beta=1 calls, bf16 inputs, f32 accumulation) computed on the CPU.
Faults: none (default), perturb (one checked result entry off by 5%), drop-sample
(a sample record removed), truncate (the end record left out).

example: mmaudit-refprover --key-file audit.key --out honest.mma";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mmaudit-refprover: error: {e}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<(), String> {
    let mut key_file = None;
    let mut out = None;
    let mut fault = "none".to_string();
    let mut layers = 4u64;
    let mut seed = 1u64;
    let mut config = SamplingConfig::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--key-file" => key_file = Some(PathBuf::from(value()?)),
            "--out" => out = Some(PathBuf::from(value()?)),
            "--fault" => fault = value()?,
            "--layers" => layers = value()?.parse().map_err(|e| format!("--layers: {e}"))?,
            "--seed" => seed = value()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--call-rate" => config.call_ppm = parse_rate(&value()?)?,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let key_file = key_file.ok_or("--key-file is required")?;
    let out = out.ok_or("--out is required")?;
    let text =
        std::fs::read_to_string(&key_file).map_err(|e| format!("{}: {e}", key_file.display()))?;
    let key = Key::from_hex(&text).map_err(|e| format!("{}: {e}", key_file.display()))?;

    let mut prover = RefProver::new(&key, config, seed);
    let (hidden, inter, heads, head_dim, tokens) = (256u64, 688u64, 8u64, 32u64, 64u64);
    let bf16 = |m, n, k| GemmSpec::new(m, n, k, DType::BF16, DType::BF16, ComputeType::F32);
    for _ in 0..layers {
        prover.gemm(&bf16(3 * hidden, tokens, hidden)); // fused QKV
        let mut scores = bf16(tokens, tokens, head_dim); // Q K^T per head
        scores.batch = heads;
        prover.gemm(&scores);
        let mut context = bf16(head_dim, tokens, tokens); // P V per head
        context.batch = heads;
        prover.gemm(&context);
        let mut o = bf16(hidden, tokens, hidden); // output projection, residual added in place
        o.beta = Some(1.0);
        prover.gemm(&o);
        let mut gate = bf16(inter, tokens, hidden);
        gate.bias = true;
        gate.epilogue = Epilogue::GeluTanh;
        prover.gemm(&gate);
        prover.gemm(&bf16(inter, tokens, hidden)); // up
        let mut down = bf16(hidden, tokens, inter);
        down.beta = Some(1.0);
        prover.gemm(&down);
    }
    let mut end = true;
    match fault.as_str() {
        "none" => {}
        "perturb" => {
            let s = prover
                .records
                .iter_mut()
                .find_map(|r| {
                    if let Record::Sample(s) = r {
                        Some(s)
                    } else {
                        None
                    }
                })
                .ok_or("no call was sampled; raise --call-rate or --layers")?;
            let mut v = Vec::new();
            mmaudit_protocol::num::decode_into(DType::BF16, &s.d_out, &mut v)
                .map_err(|e| e.to_string())?;
            v[0] = if v[0] == 0.0 { 0.5 } else { v[0] * 1.05 };
            s.d_out.clear();
            mmaudit_protocol::num::encode_into(DType::BF16, &v, &mut s.d_out);
        }
        "drop-sample" => {
            let at = prover
                .records
                .iter()
                .position(|r| matches!(r, Record::Sample(_)))
                .ok_or("no call was sampled; raise --call-rate or --layers")?;
            prover.records.remove(at);
        }
        "truncate" => end = false,
        other => return Err(format!("unknown fault '{other}'")),
    }
    let capture = prover.finish_with(16, end);
    std::fs::write(&out, capture.bytes()).map_err(|e| format!("{}: {e}", out.display()))?;
    eprintln!(
        "mmaudit-refprover: wrote {} ({} calls, {} checked entries, fault: {fault})",
        out.display(),
        7 * layers,
        prover.entries
    );
    Ok(())
}

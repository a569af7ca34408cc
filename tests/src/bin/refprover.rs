//! `mmaudit-refprover`: writes a capture of a small Llama-shaped workload computed by
//! the reference prover, honest or with a chosen fault, for demos and tests of the
//! verifier while no GPU is involved.

use std::io::Write;
use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use mmaudit_protocol::call::{ComputeType, DType, Epilogue};
use mmaudit_protocol::config::{parse_rate, SamplingConfig};
use mmaudit_protocol::handshake::OperandTable;
use mmaudit_protocol::keys::Key;
use mmaudit_protocol::record::Record;
use mmaudit_tests::refprover::{GemmSpec, RefProver};

const USAGE: &str = "\
usage: mmaudit-refprover --key-file KEY (--out FILE | --connect HOST:PORT) [--fault NAME]
                         [--layers N] [--call-rate R] [--seed S] [--stream-id N]
                         [--frame-delay-ms MS]

Writes a capture of a Llama-shaped workload (QKV, attention bmm, output, gate/up/down
with bias and in-place beta=1 calls, bf16 inputs, f32 accumulation) computed on the CPU.
With --connect it plays a prover of a live session instead: it connects to
`mmaudit-verify serve`, reads the verifier's hello, computes the workload with the
session's nonce and the hello's sampling rates (as libmmaudit.so does: --call-rate
applies to --out only) and sends the stream one frame at a time, pausing
--frame-delay-ms between frames (default 0).
Faults: none (default), perturb (one checked result entry off by 5%), drop-sample
(a sample record removed), truncate (the end record left out).

examples: mmaudit-refprover --key-file audit.key --out honest.mma
          mmaudit-refprover --key-file audit.key --connect 127.0.0.1:7150 --frame-delay-ms 50";

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
    let mut connect: Option<String> = None;
    let mut stream_id = None;
    let mut frame_delay = 0u64;
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
            "--connect" => connect = Some(value()?),
            "--stream-id" => {
                stream_id = Some(value()?.parse().map_err(|e| format!("--stream-id: {e}"))?)
            }
            "--frame-delay-ms" => {
                frame_delay = value()?
                    .parse()
                    .map_err(|e| format!("--frame-delay-ms: {e}"))?
            }
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
    if out.is_some() == connect.is_some() {
        return Err("give one of --out and --connect".into());
    }
    let text =
        std::fs::read_to_string(&key_file).map_err(|e| format!("{}: {e}", key_file.display()))?;
    let key = Key::from_hex(&text).map_err(|e| format!("{}: {e}", key_file.display()))?;

    let mut prover = RefProver::new(&key, config, seed);
    let mut session = None;
    if let Some(addr) = &connect {
        let addr = addr
            .to_socket_addrs()
            .map_err(|e| format!("--connect {addr}: {e}"))?
            .next()
            .ok_or(format!("--connect {addr}: no address"))?;
        let (socket, hello) = mmaudit_tests::session::connect(addr, &key, Duration::from_secs(30))
            .map_err(|e| format!("{addr}: {e}"))?;
        // The verifier sets the rates of its session.
        prover = prover.with_hello(&hello);
        if !hello.tensors.is_empty() {
            prover.use_references(OperandTable::new(&key, hello));
        }
        session = Some((socket, addr));
    }
    if let Some(id) = stream_id {
        prover = prover.with_stream_id(id);
    }
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
    if let Some((mut socket, addr)) = session {
        let pause = Duration::from_millis(frame_delay);
        let send = |socket: &mut std::net::TcpStream| -> std::io::Result<()> {
            socket.write_all(&capture.header)?;
            for frame in &capture.frames {
                std::thread::sleep(pause);
                socket.write_all(frame)?;
            }
            Ok(())
        };
        send(&mut socket).map_err(|e| format!("{addr}: {e}"))?;
        mmaudit_tests::session::close_and_wait(socket).map_err(|e| format!("{addr}: {e}"))?;
        eprintln!(
            "mmaudit-refprover: sent {} frames to {addr} ({} calls, {} checked entries, {} samples by reference, fault: {fault})",
            capture.frames.len(),
            7 * layers,
            prover.entries,
            prover.referenced
        );
        return Ok(());
    }
    let out = out.ok_or("--out is required")?;
    std::fs::write(&out, capture.bytes()).map_err(|e| format!("{}: {e}", out.display()))?;
    eprintln!(
        "mmaudit-refprover: wrote {} ({} calls, {} checked entries, fault: {fault})",
        out.display(),
        7 * layers,
        prover.entries
    );
    Ok(())
}

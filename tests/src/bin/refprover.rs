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
       mmaudit-refprover --key-file KEY --connect HOST:PORT --commit [--cheat NAME]
                         [--layers N] [--seed S] [--stream-id N]

Writes a capture of a Llama-shaped workload (QKV, attention bmm, output, gate/up/down
with bias and in-place beta=1 calls, bf16 inputs, f32 accumulation) computed on the CPU.
With --connect it plays a prover of a live session instead: it connects to
`mmaudit-verify serve`, reads the verifier's hello, computes the workload with the
session's nonce and the hello's sampling rates (as libmmaudit.so does: --call-rate
applies to --out only) and sends the stream one frame at a time, pausing
--frame-delay-ms between frames (default 0).
Faults: none (default), perturb (one checked result entry off by 5%), drop-sample
(a sample record removed), truncate (the end record left out).

With --commit it plays a commit-mode session (docs/COMMIT.md) against
`mmaudit-verify serve --commit`: every call's operands and result committed, each
challenge answered with an opening. Cheats (the prover holds everything but the
verifier's challenge key): none (default), fake-rows (half the output rows of every
call wrong), fake-rows-refuse (the same, refusing to open challenged fakes),
skip-calls (half the calls not computed), skip-calls-refuse, alter (openings changed
after committing).

examples: mmaudit-refprover --key-file audit.key --out honest.mma
          mmaudit-refprover --key-file audit.key --connect 127.0.0.1:7150 --frame-delay-ms 50";

/// The Llama-shaped workload: per layer fused QKV, attention scores and context per
/// head, the output projection (residual added in place), gate (bias, GELU), up, down
/// (residual added in place); bf16 inputs, f32 accumulation; `tokens` columns.
fn workload(layers: u64, tokens: u64) -> Vec<GemmSpec> {
    let (hidden, inter, heads, head_dim) = (256u64, 688u64, 8u64, 32u64);
    let bf16 = |m, n, k| GemmSpec::new(m, n, k, DType::BF16, DType::BF16, ComputeType::F32);
    let mut out = Vec::new();
    for _ in 0..layers {
        out.push(bf16(3 * hidden, tokens, hidden));
        let mut scores = bf16(tokens, tokens, head_dim);
        scores.batch = heads;
        out.push(scores);
        let mut context = bf16(head_dim, tokens, tokens);
        context.batch = heads;
        out.push(context);
        let mut o = bf16(hidden, tokens, hidden);
        o.beta = Some(1.0);
        out.push(o);
        let mut gate = bf16(inter, tokens, hidden);
        gate.bias = true;
        gate.epilogue = Epilogue::GeluTanh;
        out.push(gate);
        out.push(bf16(inter, tokens, hidden));
        let mut down = bf16(hidden, tokens, inter);
        down.beta = Some(1.0);
        out.push(down);
    }
    out
}

/// `--commit`: a live commit-mode session with `cheat`.
fn commit_session(
    key: &Key,
    addr: &str,
    cheat: &str,
    layers: u64,
    seed: u64,
    stream_id: Option<u64>,
) -> Result<(), String> {
    use mmaudit_protocol::handshake::HelloMode;
    use mmaudit_tests::commitprover::{Cheat, CommitProver};
    let half = 500_000;
    let cheat = match cheat {
        "none" => Cheat::None,
        "fake-rows" => Cheat::FakeRows {
            ppm: half,
            refuse: false,
        },
        "fake-rows-refuse" => Cheat::FakeRows {
            ppm: half,
            refuse: true,
        },
        "skip-calls" => Cheat::SkipCalls {
            ppm: half,
            refuse: false,
        },
        "skip-calls-refuse" => Cheat::SkipCalls {
            ppm: half,
            refuse: true,
        },
        "alter" => Cheat::AlterAfterCommit,
        other => return Err(format!("unknown cheat '{other}'")),
    };
    let sock = addr
        .to_socket_addrs()
        .map_err(|e| format!("--connect {addr}: {e}"))?
        .next()
        .ok_or(format!("--connect {addr}: no address"))?;
    let (stream, hello, mac) =
        mmaudit_tests::session::connect_with_mac(sock, key, Duration::from_secs(30))
            .map_err(|e| format!("{addr}: {e}"))?;
    if hello.mode != HelloMode::Commit {
        return Err(format!(
            "{addr} did not ask for commit mode (start it with `serve --commit --challenge-key FILE`)"
        ));
    }
    let mut prover = CommitProver::new(key, hello.nonce, hello.sampling, seed, cheat)
        .with_stream_id(stream_id.unwrap_or(0xc0));
    // Fewer tokens than the sampling mode: every operand is drawn and every entry of
    // D computed on the CPU.
    let specs = workload(layers, 16);
    mmaudit_tests::session::commit_session(stream, key, mac, &mut prover, &specs, 7)
        .map_err(|e| format!("{addr}: {e}"))?;
    eprintln!(
        "mmaudit-refprover: commit-mode session with {addr}: {} calls, {} challenges opened, {} refused (cheat: {cheat:?})",
        specs.len(),
        prover.opened,
        prover.refused
    );
    Ok(())
}

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
    let mut commit = false;
    let mut cheat = "none".to_string();
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
            "--commit" => commit = true,
            "--cheat" => cheat = value()?,
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
    if commit {
        let addr = connect.ok_or("--commit needs --connect (commit mode is live only)")?;
        if fault != "none" {
            return Err("--fault applies to the sampling mode; with --commit use --cheat".into());
        }
        return commit_session(&key, &addr, &cheat, layers, seed, stream_id);
    }
    if cheat != "none" {
        return Err("--cheat needs --commit".into());
    }

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
    for spec in workload(layers, 64) {
        prover.gemm(&spec);
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

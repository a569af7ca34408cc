//! Stream bytes per generated token sent by `libmmaudit.so` itself, with and without
//! operand references to weights the verifier holds, for the Llama-style workload
//! (tests/programs/llama_workload.c) on the simulated GPU, through an in-process
//! `mmaudit-verify serve` over the library's TCP sink; compared with what
//! `mmaudit-verify plan --hf-config` predicts for the same shapes and rates. A
//! benchmark, not a test: it prints a table (recorded in docs/PERFORMANCE.md, "Bytes
//! per generated token") and asserts only that every stream passed.
//!
//! The workload runs a 64-token prompt, then N decode passes of one token (KV cache,
//! eager attention with batch = heads), with its seeded weights also written to a
//! safetensors file the server holds (`--write-weights`; q, k and v as separate
//! tensors, `--separate-qkv`, as `plan` models them). Per configuration one run: the
//! library streams to the server, which verifies it (weights held in both cases, so
//! both are judged alike) and saves the capture; `MMAUDIT_REFERENCES=0` gives the
//! inline case. From the capture: "records" is the sum of the encoded ledger, sample
//! and gap records of the decode calls (index >= the workload's `decode-from`), before
//! compression, which is what `plan` models; "sent" is that times the whole stream's
//! ratio of bytes on the socket to record bytes (frames are zstd-compressed batches of
//! records of both phases, so the decode share of the socket bytes is apportioned, not
//! measured).
//!
//! Run: cargo bench -p mmaudit-tests --bench library_bytes_per_token [-- TOKENS]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mmaudit_protocol::call::flags;
use mmaudit_protocol::keys::Key;
use mmaudit_protocol::record::Record;
use mmaudit_protocol::stream::{Event, StreamReader};
use mmaudit_tests::simgpu::{compile, libraries};
use mmaudit_verify::policy::Unaudited;
use mmaudit_verify::serve::{ServeOptions, Server};
use mmaudit_verify::weights::{WeightPolicy, WeightRegistry};

const KEY: &str = "6d6d61756469742d62656e6300112233445566778899aabbccddeeff01234567";
const PROMPT: u64 = 64;
const CONFIG: &str = r#"{"hidden_size": 1024, "intermediate_size": 2816, "num_hidden_layers": 2,
"num_attention_heads": 8, "num_key_value_heads": 8, "vocab_size": 8192}"#;
const SHAPE: &[&str] = &[
    "--layers",
    "2",
    "--tokens",
    "64",
    "--hidden",
    "1024",
    "--heads",
    "8",
    "--kv-heads",
    "8",
    "--intermediate",
    "2816",
    "--vocab",
    "8192",
    "--separate-qkv",
];

fn main() {
    let tokens: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(64);
    // builds libmmaudit.so and mmaudit-verify (release) once
    let tools = mmaudit_tests::preload::tools();
    let exe = compile("llama_workload");
    let dir = std::env::temp_dir().join(format!("mmaudit-library-bpt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let key = Key::from_hex(KEY).unwrap();
    let weights = dir.join("model.safetensors");
    let config = dir.join("config.json");
    std::fs::write(&config, CONFIG).unwrap();

    let generate = tokens.to_string();
    let mut args: Vec<&str> = SHAPE.to_vec();
    args.extend(["--generate", &generate]);
    let w = weights.display().to_string();
    let mut write_args = args.clone();
    write_args.extend(["--write-weights", &w]);
    let out = run(&exe, &write_args, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let registry = Arc::new(WeightRegistry::load(&[&weights]).unwrap());

    println!(
        "libmmaudit.so, llama_workload {} --generate {tokens}; the server holds {} tensors ({:.1} MB)",
        SHAPE.join(" "),
        registry.len(),
        std::fs::metadata(&weights).unwrap().len() as f64 / 1e6
    );
    println!(
        "{:<9} {:<11} {:>8} {:>7} {:>13} {:>13} {:>13} {:>12} {:>8}",
        "call rate",
        "weights",
        "sampled",
        "by ref",
        "records B/tok",
        "sent B/tok",
        "plan B/tok",
        "records/plan",
        "seconds"
    );
    for rate in [1.0, 0.1] {
        let plan = plan_bytes(&tools.verify, &config, tokens, rate);
        for references in [false, true] {
            let run_dir = dir.join(format!("{rate}-{references}"));
            std::fs::create_dir_all(&run_dir).unwrap();
            let mut opts = ServeOptions::new("127.0.0.1:0".parse().unwrap(), key.clone());
            opts.capture_dir = Some(run_dir.clone());
            // The verifier's hello sets the rate; the program's first (prefill) call
            // precedes the session, far above the default no-session share: this
            // measures bytes, not the policy.
            opts.sampling.call_ppm = (rate * 1e6) as u32;
            opts.policy.set_limit(Unaudited::NoSession, 1.0);
            opts.weights = Some(WeightPolicy {
                registry: Arc::clone(&registry),
                required: false,
            });
            let server = Server::bind(opts).unwrap();
            let (addr, stopper) = (server.local_addr(), server.stopper());
            let handle = std::thread::spawn(move || server.run().unwrap());
            let env = [
                ("LD_PRELOAD", tools.preload.display().to_string()),
                ("MMAUDIT_KEY", KEY.to_string()),
                ("MMAUDIT_SINK", format!("tcp://{addr}")),
                (
                    "MMAUDIT_REFERENCES",
                    if references { "1" } else { "0" }.into(),
                ),
            ];
            let started = Instant::now();
            let out = run(&exe, &args, &env);
            let seconds = started.elapsed().as_secs_f64();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            let decode_from: u64 = stdout
                .lines()
                .find_map(|l| l.strip_prefix("decode-from "))
                .and_then(|v| v.trim().parse().ok())
                .expect("a decode-from line");
            // The stream ends with the program; give the server a moment to finish it.
            let deadline = Instant::now() + Duration::from_secs(30);
            let capture = loop {
                let c = captures(&run_dir);
                if c.len() == 1 || Instant::now() > deadline {
                    break c;
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            std::thread::sleep(Duration::from_millis(300));
            stopper.stop();
            let summary = handle.join().unwrap();
            assert_eq!((summary.streams, summary.passed), (1, 1), "{summary:?}");
            let bytes = std::fs::read(&capture[0]).unwrap();
            let m = measure(&key, &bytes, decode_from);
            let records = m.decode_records as f64 / tokens as f64;
            let sent = records * bytes.len() as f64 / m.all_records as f64;
            let planned = if references { plan.1 } else { plan.0 };
            assert_eq!(m.no_session_decode, 0, "decode calls without a session");
            println!(
                "{:<9} {:<11} {:>8} {:>7} {:>13.0} {:>13.0} {:>13.0} {:>12.3} {:>8.1}",
                format!("{}%", rate * 100.0),
                if references { "references" } else { "inline" },
                m.sampled,
                m.referenced,
                records,
                sent,
                planned,
                records / planned,
                seconds
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn run(exe: &Path, args: &[&str], env: &[(&str, String)]) -> std::process::Output {
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .env("LD_LIBRARY_PATH", &libraries().lib_dir)
        .env_remove("LD_PRELOAD");
    for (k, _) in std::env::vars() {
        if k.starts_with("MMAUDIT_") || k.starts_with("SIMGPU_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run the workload")
}

fn captures(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "mma"))
        .collect()
}

/// What one capture holds.
struct Measured {
    /// encoded bytes of every record
    all_records: usize,
    /// encoded bytes of the ledger, sample and gap records of decode calls
    decode_records: usize,
    /// sample records of decode calls
    sampled: usize,
    /// operands of decode samples sent as references
    referenced: usize,
    /// decode calls ledgered without a session
    no_session_decode: usize,
}

fn measure(key: &Key, bytes: &[u8], decode_from: u64) -> Measured {
    let mut reader = StreamReader::new(key);
    let mut m = Measured {
        all_records: 0,
        decode_records: 0,
        sampled: 0,
        referenced: 0,
        no_session_decode: 0,
    };
    for e in reader.push(bytes).expect("a capture") {
        let Event::Frame { records, .. } = e else {
            continue;
        };
        for r in records {
            let len = r.encoded_len();
            m.all_records += len;
            let index = match &r {
                Record::Ledger(c) => {
                    if c.index >= decode_from && c.has(flags::NO_SESSION) {
                        m.no_session_decode += 1;
                    }
                    Some(c.index)
                }
                Record::Sample(s) => Some(s.index),
                Record::Gap(g) => g.indices.first().copied(),
                _ => None,
            };
            if index.is_some_and(|i| i >= decode_from) {
                m.decode_records += len;
                if let Record::Sample(s) = &r {
                    m.sampled += 1;
                    m.referenced += [s.a_rows.is_reference(), s.b_cols.is_reference()]
                        .iter()
                        .filter(|&&x| x)
                        .count();
                }
            }
        }
    }
    m
}

/// `plan`'s expected decode bytes per generated token: (op(A) rows sent, weights held).
fn plan_bytes(verify: &Path, config: &Path, tokens: u64, rate: f64) -> (f64, f64) {
    let json = config.with_extension(format!("plan-{rate}.json"));
    let out = Command::new(verify)
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

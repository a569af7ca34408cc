//! `mmaudit-verify bench`: what checking costs on this machine, as the numbers that
//! `plan --verifier-bench` turns into verifier cores per GPU.
//!
//! It writes honest bf16 captures in memory (every call sampled, the default row rate):
//! a decode-shaped one (m = 4096, n = 16, k = 4096: 40 rows and one column per call,
//! about 1.6 capture bytes per multiply-add), a square one (4096 x 4096 x 4096 with 1%
//! of the columns: 40 x 40 entries per call, about 0.1 bytes per multiply-add), and the
//! decode shape again with op(A) a weight the verifier holds (a safetensors file written
//! to the temporary directory and removed after; its samples reference the weight's rows
//! instead of sending them; the calls take turns over a stack of 4096 x 4096 matrices
//! twice the size of the processor's last-level cache, so that the rows come from memory,
//! as a model's do), and times `check`'s whole path on each (authentication,
//! decompression, decoding, plans, reading held rows, recomputation), on one thread,
//! best of five. The first two give the time per capture as `seconds_per_mac *
//! multiply-adds + seconds_per_byte * bytes`; the third, once those are charged, the
//! time per byte of held rows (`seconds_per_held_byte`). `plan` charges a verifier that
//! holds the weights that much per referenced row byte.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use mmaudit_protocol::call::{ComputeType, DType, Op};
use mmaudit_protocol::config::SamplingConfig;
use mmaudit_protocol::keys::Key;
use mmaudit_protocol::num;
use mmaudit_protocol::record::{End, OperandData, Record, Sample};
use mmaudit_protocol::schedule::{Schedule, ScheduleVersion};
use mmaudit_protocol::stream::{StreamHeader, StreamWriter};
use serde::{Deserialize, Serialize};

use crate::check::{audit_reader_threads, NotChecked};
use crate::policy::Policy;
use crate::recompute::{self, Scalars};
use crate::report::StreamReport;
use crate::weights::{WeightPolicy, WeightRegistry};

/// Options of `mmaudit-verify bench`.
#[derive(Args, Debug)]
#[command(after_help = "\
Prints the time `check` spends per multiply-add, per capture byte and per byte of a
held weight's rows on this machine, measured on three honest bf16 captures built in
memory (a decode-shaped and a square GEMM, and the decode shape with its weight held:
a safetensors file in the temporary directory, removed after, twice the size of the
processor's last-level cache and at least 32 MiB, so that its rows come from memory as
a model's do: that much temporary disk and memory), one thread, best of five runs each;
a few seconds. With --json the result is saved for `plan`:

  mmaudit-verify bench --json bench.json
  mmaudit-verify plan --hf-config config.json --batch 16 --tokens-per-second 2500 \\
      --verifier-holds-weights --verifier-bench bench.json

The model (time = seconds_per_mac x multiply-adds + seconds_per_byte x bytes) and what it
leaves out are in docs/PERFORMANCE.md.")]
pub struct BenchArgs {
    /// Save the measurement as JSON here, for `plan --verifier-bench` ("-" for standard
    /// output, which then carries the JSON alone: the text goes to standard error).
    #[arg(long, value_name = "OUT")]
    pub json: Option<PathBuf>,
    /// Calls per capture (more: steadier, slower).
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub calls: u64,
}

/// What `bench` measured, as saved with `--json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Throughput {
    /// the processor, from /proc/cpuinfo ("unknown" elsewhere)
    pub cpu: String,
    /// seconds of one core per multiply-add recomputed
    pub seconds_per_mac: f64,
    /// seconds of one core per byte of capture
    pub seconds_per_byte: f64,
    /// seconds of one core per byte of a held weight's rows that a sample references
    /// (read from the verifier's copy), beyond `seconds_per_byte` of the capture's own
    /// bytes; absent in measurements saved before it was measured
    #[serde(default)]
    pub seconds_per_held_byte: Option<f64>,
    /// the captures timed
    pub cases: Vec<Case>,
}

/// One capture timed by `bench`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Case {
    /// its shape
    pub name: String,
    /// bytes of the capture
    pub bytes: u64,
    /// multiply-adds recomputed
    pub macs: u64,
    /// bytes of held weights' rows its samples reference
    #[serde(default)]
    pub held_bytes: u64,
    /// best of five, one thread
    pub seconds: f64,
}

/// A tiny deterministic generator (SplitMix64): the captures are the same every run.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A bf16 value in [-1, 1).
    fn bf16(&mut self) -> f64 {
        let x = (self.next() >> 11) as f64 * 2f64.powi(-53) * 2.0 - 1.0;
        num::round_to(DType::BF16, x)
    }
}

/// An honest capture of `calls` bf16 GEMMs of one shape, every call sampled, `col_ppm`
/// of the columns checked (the other rates the defaults); its bytes and the
/// multiply-adds its check recomputes.
pub fn honest_capture(
    key: &Key,
    shape: (u64, u64, u64),
    col_ppm: u32,
    calls: u64,
) -> (Vec<u8>, u64) {
    let (bytes, macs, _) = capture(key, shape, col_ppm, calls, None);
    (bytes, macs)
}

/// A verifier-held weight for [`held_capture`]: a stack of matrices of `m` rows of `k`
/// bf16 elements, the tensor `HELD_NAME` of a safetensors file.
pub struct HeldWeight {
    /// the tensor's bytes, matrix after matrix, row after row
    pub data: Vec<u8>,
    /// its id in the verifier's table
    pub tensor: u32,
    /// the matrices in the stack (call i of the capture uses matrix i mod `matrices`)
    pub matrices: u64,
}

/// The name of the tensor [`held_capture`] references.
pub const HELD_NAME: &str = "bench.weight";

/// `matrices` weights of `held_capture`'s shape `(m, _, k)`, one after the other:
/// deterministic bf16 values of either sign in [2^-8, 1) (four per generator step: a
/// stack of hundreds of MiB is made in a fraction of a second).
pub fn held_weight(matrices: u64, m: u64, k: u64) -> Vec<u8> {
    let mut rng = Mix(11);
    let n = (matrices * m * k) as usize;
    let mut out = Vec::with_capacity(2 * n + 8);
    while out.len() < 2 * n {
        let r = rng.next();
        for i in 0..4 {
            let h = (r >> (16 * i)) as u16;
            // sign and mantissa from the draw, the exponent 119 + (0..8)
            let bits = (h & 0x807f) | ((119 + ((h >> 7) & 7)) << 7);
            out.extend_from_slice(&bits.to_le_bytes());
        }
    }
    out.truncate(2 * n);
    out
}

/// Matrices of `matrix` bytes in `bench`'s held weight: enough for twice the
/// last-level cache of `llc` bytes, at least one and at most 32 (1 GiB of its 4096 x
/// 4096 bf16 matrices).
pub fn held_matrices(llc: Option<u64>, matrix: u64) -> u64 {
    llc.map_or(1, |c| c.saturating_mul(2).div_ceil(matrix))
        .clamp(1, 32)
}

/// The size in bytes of the processor's last-level cache, from Linux's sysfs (`None`
/// where it is not there).
pub fn last_level_cache() -> Option<u64> {
    let dir = std::fs::read_dir("/sys/devices/system/cpu/cpu0/cache").ok()?;
    dir.flatten()
        .filter_map(|e| {
            let read = |f: &str| std::fs::read_to_string(e.path().join(f)).ok();
            let level: u32 = read("level")?.trim().parse().ok()?;
            Some((level, cache_size(read("size")?.trim())?))
        })
        .max()
        .map(|(_, size)| size)
}

/// A sysfs cache size ("32768K", "260M", "1G", or bytes).
fn cache_size(s: &str) -> Option<u64> {
    let (digits, unit) = match s.char_indices().last()? {
        (i, 'K') => (&s[..i], 1 << 10),
        (i, 'M') => (&s[..i], 1 << 20),
        (i, 'G') => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    digits.parse::<u64>().ok()?.checked_mul(unit)
}

/// Writes `data` (`matrices` x `rows` x `cols` bf16; a 2-D tensor for one matrix) as
/// the one tensor [`HELD_NAME`] of a safetensors file at `path`.
pub fn write_held(
    path: &std::path::Path,
    (matrices, rows, cols): (u64, u64, u64),
    data: &[u8],
) -> Result<()> {
    let shape = if matrices == 1 {
        format!("{rows},{cols}")
    } else {
        format!("{matrices},{rows},{cols}")
    };
    let mut header = format!(
        "{{\"{HELD_NAME}\":{{\"dtype\":\"BF16\",\"shape\":[{shape}],\"data_offsets\":[0,{}]}}}}",
        data.len()
    );
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(path)?;
        f.write_all(&(header.len() as u64).to_le_bytes())?;
        f.write_all(header.as_bytes())?;
        f.write_all(data)
    };
    write().with_context(|| format!("cannot write {}", path.display()))
}

/// [`honest_capture`] where op(A) is the verifier-held weight `held` (W stored row by
/// row, as `nn.Linear` keeps it; op(A) = W): each sample references W's rows (the
/// tensor, the matrix, each row's first element as evidence) instead of sending them.
/// Returns also the bytes of held rows the check reads from the verifier's copy.
pub fn held_capture(
    key: &Key,
    shape: (u64, u64, u64),
    col_ppm: u32,
    calls: u64,
    held: &HeldWeight,
) -> (Vec<u8>, u64, u64) {
    capture(key, shape, col_ppm, calls, Some(held))
}

fn capture(
    key: &Key,
    (m, n, k): (u64, u64, u64),
    col_ppm: u32,
    calls: u64,
    held: Option<&HeldWeight>,
) -> (Vec<u8>, u64, u64) {
    let config = SamplingConfig {
        call_ppm: 1_000_000,
        col_ppm,
        ..SamplingConfig::default()
    };
    let header = StreamHeader {
        key_id: key.id(),
        nonce: *b"mmaudit bench 16",
        config,
        stream_id: 1,
        segment: 0,
        first_index: 0,
        pid: std::process::id(),
        host: "bench".into(),
        started_unix_ns: 0,
        devices: vec!["none: built by mmaudit-verify bench".into()],
        producer: "mmaudit-verify bench".into(),
        schedule: ScheduleVersion::V2,
    };
    let schedule = Schedule::for_header(key, &header);
    let (mut writer, mut bytes) = StreamWriter::new(key, &header);
    let mut rng = Mix(7);
    let mut macs = 0;
    let mut held_bytes = 0;
    let mut samples = 0;
    for index in 0..calls {
        let mut call = recompute_call(k);
        (call.index, call.m, call.n) = (index, m, n);
        call.a.ld = m;
        if held.is_some() {
            // W (m x k, row-major) is, to cuBLAS, a column-major k x m matrix: op(A) = W
            // is its transpose
            (call.op_a, call.a.ld) = (Op::T, k);
        }
        call.b.ld = k;
        (call.c.ld, call.d.ld) = (m, m);
        let mut records = vec![Record::Ledger(call.clone())];
        if let Some(draw) = schedule.draw(&call) {
            let plan = schedule.plan(&call, draw);
            let row_bytes = 2 * k as usize;
            // the held matrix this call multiplies, and where its row r starts
            let matrix = held.map_or(0, |w| index % w.matrices);
            let row_at = |r: u64| (matrix * m + r) as usize * row_bytes;
            let rows: Vec<Vec<f64>> = match held {
                Some(w) => plan
                    .rows
                    .iter()
                    .map(|&r| {
                        num::decode(DType::BF16, &w.data[row_at(r)..][..row_bytes])
                            .expect("bf16 decodes")
                    })
                    .collect(),
                None => plan
                    .rows
                    .iter()
                    .map(|_| (0..k).map(|_| rng.bf16()).collect())
                    .collect(),
            };
            let cols: Vec<Vec<f64>> = plan
                .cols
                .iter()
                .map(|_| (0..k).map(|_| rng.bf16()).collect())
                .collect();
            let encode = |vs: &[Vec<f64>]| {
                let mut out = Vec::new();
                vs.iter()
                    .flatten()
                    .for_each(|&x| num::encode_one(DType::BF16, x, &mut out));
                out
            };
            let mut d_out = Vec::new();
            for row in &rows {
                for col in &cols {
                    let r = recompute::reference(&call, &Scalars::UNIT, row, col, 0.0, None);
                    num::encode_one(DType::BF16, r.value, &mut d_out);
                }
            }
            macs += plan.entries() * k;
            if held.is_some() {
                held_bytes += (rows.len() * row_bytes) as u64;
            }
            samples += 1;
            records.push(Record::Sample(Sample {
                index,
                alpha: None,
                beta: None,
                scale_a: None,
                scale_b: None,
                scale_c: None,
                scale_d: None,
                a_rows: match held {
                    Some(w) => OperandData::Reference {
                        tensor: w.tensor,
                        matrices: vec![matrix as u32],
                        evidence: plan
                            .rows
                            .iter()
                            .flat_map(|&r| w.data[row_at(r)..][..2].to_vec())
                            .collect(),
                    },
                    None => OperandData::Inline(encode(&rows)),
                },
                b_cols: OperandData::Inline(encode(&cols)),
                c_in: Vec::new(),
                d_out,
                bias: Vec::new(),
                scale_rows: Vec::new(),
                scale_cols: Vec::new(),
            }));
        }
        bytes.extend(writer.frame(&records));
    }
    bytes.extend(writer.frame(&[Record::End(End {
        calls,
        samples,
        gap_calls: 0,
    })]));
    (bytes, macs, held_bytes)
}

/// A bf16 GEMM with f32 accumulation and inner dimension k (shape set by the caller).
fn recompute_call(k: u64) -> mmaudit_protocol::call::GemmCall {
    crate::cheat::linear_call(DType::BF16, ComputeType::F32, k)
}

/// The shortest of five runs of `f`, in seconds (the benchmarks' timing: the VM's noise
/// only ever adds time).
pub fn best_of_five(mut f: impl FnMut()) -> f64 {
    (0..5)
        .map(|_| {
            let t = std::time::Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// Checks an in-memory capture as `bench` times it: one thread, the lenient policy,
/// and the held weights a referencing capture needs.
pub fn check_capture(
    key: &Key,
    bytes: &[u8],
    weights: Option<&WeightPolicy>,
) -> Result<StreamReport, NotChecked> {
    audit_reader_threads(
        "bench",
        bytes,
        key,
        (1, 1),
        &Policy::lenient(),
        weights,
        |_| {},
    )
}

/// Times `check` on one capture (best of five), which must pass with every entry
/// checked.
fn time_case(
    name: &str,
    key: &Key,
    (bytes, macs, k): (&[u8], u64, u64),
    weights: Option<&WeightPolicy>,
) -> Result<Case> {
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        let report = check_capture(key, bytes, weights)
            .map_err(|e| anyhow::anyhow!("the bench capture {name} could not be read: {e:?}"))?;
        best = best.min(t.elapsed().as_secs_f64());
        if !report.passed() || report.entries_checked * k != macs {
            bail!(
                "the bench capture did not pass its own check (a verifier fault): {}",
                report.to_text()
            );
        }
    }
    Ok(Case {
        name: name.into(),
        bytes: bytes.len() as u64,
        macs,
        held_bytes: 0,
        seconds: best,
    })
}

/// A file removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Times `check` on the captures and fits the coefficients.
pub fn measure(calls: u64, mut progress: impl FnMut(&Case)) -> Result<Throughput> {
    let key = Key::from_bytes([0x5a; 32]);
    let mut cases = Vec::new();
    const DECODE: (u64, u64, u64) = (4096, 16, 4096);
    // Far apart in bytes per multiply-add (about 1.6 and 0.1), so that the two costs
    // separate well.
    for (name, shape, col_ppm, calls) in [
        ("bf16 4096x16x4096 (decode)", DECODE, 1000, calls * 2),
        (
            "bf16 4096x4096x4096, 40x40",
            (4096, 4096, 4096),
            10_000,
            calls / 4,
        ),
    ] {
        let (bytes, macs) = honest_capture(&key, shape, col_ppm, calls.max(4));
        let case = time_case(name, &key, (&bytes, macs, shape.2), None)?;
        progress(&case);
        cases.push(case);
    }
    let (a, b) = fit(&cases)?;
    // The decode shape again, op(A) a weight the verifier holds: what a held row's byte
    // costs once the multiply-adds and the capture's own bytes are charged as above.
    let (m, _, k) = DECODE;
    let file = Scratch(
        std::env::temp_dir().join(format!("mmaudit-bench-{}.safetensors", std::process::id())),
    );
    let matrices = held_matrices(last_level_cache(), m * k * 2);
    let data = held_weight(matrices, m, k);
    write_held(&file.0, (matrices, m, k), &data)?;
    let registry = WeightRegistry::load(&[&file.0])?;
    let tensor = registry
        .id_of(HELD_NAME)
        .context("the bench weight is not in its own file's table")?;
    let weights = WeightPolicy {
        registry: std::sync::Arc::new(registry),
        required: false,
    };
    let held = HeldWeight {
        data,
        tensor,
        matrices,
    };
    let (bytes, macs, held_bytes) = held_capture(&key, DECODE, 1000, (calls * 2).max(4), &held);
    drop(held); // the verifier reads its own copy, the file
    let mut case = time_case(
        &format!("bf16 4096x16x4096 (decode), held, {matrices} x 32 MiB"),
        &key,
        (&bytes, macs, k),
        Some(&weights),
    )?;
    case.held_bytes = held_bytes;
    progress(&case);
    // A timing below what its multiply-adds and capture bytes cost by the fit (a busy
    // machine) gives no figure: `plan` then charges held rows as capture bytes.
    let h = (case.seconds - a * macs as f64 - b * case.bytes as f64) / held_bytes as f64;
    cases.push(case);
    Ok(Throughput {
        cpu: cpu_name(),
        seconds_per_mac: a,
        seconds_per_byte: b,
        seconds_per_held_byte: usable(h).then_some(h),
        cases,
    })
}

/// Solves `seconds = a macs + b bytes` for the two cases. A coefficient that comes out
/// negative (the two timings too noisy to tell them apart) is refused.
fn fit(cases: &[Case]) -> Result<(f64, f64)> {
    let [p, q, ..] = cases else {
        bail!("two cases are needed");
    };
    let (m1, b1, t1) = (p.macs as f64, p.bytes as f64, p.seconds);
    let (m2, b2, t2) = (q.macs as f64, q.bytes as f64, q.seconds);
    let det = m1 * b2 - m2 * b1;
    let a = (t1 * b2 - t2 * b1) / det;
    let b = (m1 * t2 - m2 * t1) / det;
    if !usable(a) || !usable(b) {
        bail!(
            "the timings do not separate the cost per multiply-add from the cost per byte \
             ({a:.3e} s/MAC, {b:.3e} s/byte): the machine was too busy; run again"
        );
    }
    Ok((a, b))
}

/// A cost that can be used: positive and finite.
fn usable(seconds: f64) -> bool {
    seconds > 0.0 && seconds.is_finite()
}

fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|n| n.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Reads what `bench --json` saved.
pub fn load(path: &std::path::Path) -> Result<Throughput> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --verifier-bench {}", path.display()))?;
    let t: Throughput = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not the JSON of `mmaudit-verify bench --json`",
            path.display()
        )
    })?;
    if !usable(t.seconds_per_mac)
        || !usable(t.seconds_per_byte)
        || t.seconds_per_held_byte.is_some_and(|h| !usable(h))
    {
        bail!(
            "{}: seconds_per_mac, seconds_per_byte and seconds_per_held_byte must be positive numbers",
            path.display()
        );
    }
    Ok(t)
}

/// Runs `bench`.
pub fn run_bench(args: &BenchArgs) -> Result<()> {
    if args.calls == 0 {
        bail!("--calls must be at least 1");
    }
    let to_stdout = args.json.as_deref().is_some_and(|p| p.as_os_str() == "-");
    let text = if to_stdout {
        crate::out::To::Stderr
    } else {
        crate::out::To::Stdout
    };
    crate::out::write(text, &format!(
        "timing `check` on three honest bf16 captures, one thread, best of five ({}, {} and {} calls)\n",
        args.calls * 2,
        (args.calls / 4).max(4),
        args.calls * 2,
    ));
    let t = measure(args.calls, |c| {
        crate::out::write(
            text,
            &format!(
                "  {:<46} {:>8.1} MB {:>9.1} MMAC  {:>7.3} s  {:>7.1} MMAC/s  {:>6.1} MB/s\n",
                c.name,
                c.bytes as f64 / 1e6,
                c.macs as f64 / 1e6,
                c.seconds,
                c.macs as f64 / c.seconds / 1e6,
                c.bytes as f64 / c.seconds / 1e6
            ),
        );
    })?;
    crate::out::write(text, &format!(
        "cpu: {}\none core: {:.3} ns per multiply-add ({:.0} MMAC/s), {:.3} ns per capture byte ({:.0} MB/s)\n",
        t.cpu,
        t.seconds_per_mac * 1e9,
        1e-6 / t.seconds_per_mac,
        t.seconds_per_byte * 1e9,
        1e-6 / t.seconds_per_byte
    ));
    match t.seconds_per_held_byte {
        Some(h) => crate::out::write(
            text,
            &format!(
                "held weights: {:.3} ns per byte of referenced rows ({:.0} MB/s)\n",
                h * 1e9,
                1e-6 / h
            ),
        ),
        None => crate::out::write(
            text,
            "held weights: no figure (the held capture took less than its multiply-adds and \
             bytes cost by the fit: a busy machine); plan will charge held rows as capture \
             bytes, an upper bound. Run again for the figure.\n",
        ),
    }
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&t)? + "\n";
        if to_stdout {
            crate::out::stdout(&json);
        } else {
            std::fs::write(path, json)
                .with_context(|| format!("cannot write {}", path.display()))?;
            crate::out::write(
                text,
                &format!("saved to {} (for plan --verifier-bench)\n", path.display()),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fit_recovers_known_costs_and_refuses_noise() {
        let case = |macs: u64, bytes: u64, a: f64, b: f64| Case {
            name: String::new(),
            bytes,
            macs,
            held_bytes: 0,
            seconds: a * macs as f64 + b * bytes as f64,
        };
        let (a, b) = (2e-9, 3e-9);
        let (fa, fb) = fit(&[case(1000, 1600, a, b), case(4000, 1600, a, b)]).unwrap();
        assert!(
            (fa - a).abs() < 1e-15 && (fb - b).abs() < 1e-15,
            "{fa} {fb}"
        );
        // a faster run of the byte-heavy capture than the MAC model allows
        let mut noisy = [case(1000, 1600, a, b), case(4000, 1600, a, b)];
        noisy[1].seconds = noisy[0].seconds * 0.5;
        assert!(fit(&noisy).is_err());
    }

    #[test]
    fn a_small_bench_capture_passes_its_check() {
        let key = Key::from_bytes([3; 32]);
        let (bytes, macs) = honest_capture(&key, (64, 16, 256), 1000, 5);
        let r = check_capture(&key, &bytes, None).unwrap();
        assert!(r.passed(), "{}", r.to_text());
        assert_eq!(r.entries_checked * 256, macs);
        assert!(macs > 0);
    }

    #[test]
    fn a_held_weight_capture_passes_with_the_weight_and_fails_with_another() {
        let key = Key::from_bytes([4; 32]);
        // three matrices: the calls take turns over them
        let (s, m, k) = (3, 64, 256);
        let dir = std::env::temp_dir().join(format!("mmaudit-bench-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let load = |name: &str, data: &[u8]| {
            let path = dir.join(name);
            write_held(&path, (s, m, k), data).unwrap();
            let registry = WeightRegistry::load(&[&path]).unwrap();
            let tensor = registry.id_of(HELD_NAME).unwrap();
            let policy = WeightPolicy {
                registry: std::sync::Arc::new(registry),
                required: false,
            };
            (policy, tensor)
        };
        let data = held_weight(s, m, k);
        let (policy, tensor) = load("w.safetensors", &data);
        let held = HeldWeight {
            data,
            tensor,
            matrices: s,
        };
        let (bytes, macs, held_bytes) = held_capture(&key, (m, 16, k), 1000, 6, &held);
        let r = check_capture(&key, &bytes, Some(&policy)).unwrap();
        assert!(r.passed(), "{}", r.to_text());
        assert_eq!(r.entries_checked * k, macs);
        assert!(macs > 0 && held_bytes > 0);
        // without the weight the references cannot be resolved
        assert!(!check_capture(&key, &bytes, None).unwrap().passed());
        // another weight of the same shape and first column: every sampled row differs
        let mut other = held.data.clone();
        for row in other.chunks_exact_mut(2 * k as usize) {
            row[2..].iter_mut().for_each(|b| *b ^= 0x01);
        }
        let (policy, _) = load("other.safetensors", &other);
        let r = check_capture(&key, &bytes, Some(&policy)).unwrap();
        assert!(!r.passed() && r.mismatched > 0, "{}", r.to_text());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_held_weight_outgrows_the_last_level_cache() {
        const MIB32: u64 = 4096 * 4096 * 2;
        assert_eq!(cache_size("32768K"), Some(32 << 20));
        assert_eq!(cache_size("260M"), Some(260 << 20));
        assert_eq!(cache_size("1G"), Some(1 << 30));
        assert_eq!(cache_size("512"), Some(512));
        assert_eq!(cache_size(""), None);
        assert_eq!(cache_size("12X"), None);
        assert_eq!(held_matrices(None, MIB32), 1);
        assert_eq!(held_matrices(Some(8 << 20), MIB32), 1);
        assert_eq!(held_matrices(Some(32 << 20), MIB32), 2);
        assert_eq!(held_matrices(Some(260 << 20), MIB32), 17);
        assert_eq!(held_matrices(Some(1 << 40), MIB32), 32);
        assert_eq!(held_matrices(cache_size("18446744073709551615"), MIB32), 32);
        // every element a finite bf16 of magnitude in [2^-8, 1)
        for h in held_weight(1, 16, 256).chunks_exact(2) {
            let x = f32::from_bits(u32::from(u16::from_le_bytes([h[0], h[1]])) << 16).abs();
            assert!((2f32.powi(-8)..1.0).contains(&x), "{x}");
        }
    }
}

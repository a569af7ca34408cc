//! The stable-toolchain driver of a fuzz target: every corpus file, then N inputs made
//! by mutating corpus inputs (bit flips, random bytes, inserted, deleted and duplicated
//! ranges, splices of two inputs, boundary integers such as 2^36 and u64::MAX written
//! over 1, 2, 4 or 8 bytes, truncation), each under `catch_unwind` and a time limit.
//! Deterministic for a given `--seed`. The first failing input is saved under
//! `artifacts/<target>/` and ends the run with exit status 1.
//!
//! Without coverage feedback this finds less than libFuzzer does (`cargo fuzz run
//! <target>` on a nightly toolchain uses the same targets and corpus); it keeps every
//! target running on every build and replays the regression inputs.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mmaudit_verify::cheat::Sampler;

/// Longest a single input may take before it counts as a hang.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest input the mutator makes.
pub const DEFAULT_MAX_LEN: usize = 1 << 16;

const USAGE: &str = "\
usage: TARGET [N] [--seed S] [--corpus DIR] [--max-len BYTES] [--timeout SECS]
              [--artifacts DIR] [--write-seeds]

Runs every file of the corpus (default: the committed fuzz/corpus/TARGET), then N
inputs (default 10000) made by mutating corpus inputs, through the target; prints how
many inputs it tried. A panic or an input slower than --timeout (default 10 s) is saved
to --artifacts (default fuzz/artifacts/TARGET) and exits 1. --write-seeds writes the
target's built-in seeds into the corpus directory and exits.";

/// Reads every file of a corpus directory (sorted by name); none when it is missing.
pub fn corpus(dir: &Path) -> std::io::Result<Vec<(PathBuf, Vec<u8>)>> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    files.sort();
    files
        .into_iter()
        .map(|p| std::fs::read(&p).map(|b| (p, b)))
        .collect()
}

static PANIC_MESSAGE: Mutex<Option<String>> = Mutex::new(None);

/// Runs one input: `Err` with the panic message, or a note that it took longer than
/// `timeout`.
pub fn run_one(target: fn(&[u8]), data: &[u8], timeout: Duration) -> Result<(), String> {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|info| {
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        if let Ok(mut m) = PANIC_MESSAGE.lock() {
            *m = Some(format!("{msg}{place}"));
        }
    }));
    let started = Instant::now();
    let result = catch_unwind(AssertUnwindSafe(|| target(data)));
    std::panic::set_hook(previous);
    let took = started.elapsed();
    match result {
        Err(_) => Err(PANIC_MESSAGE
            .lock()
            .ok()
            .and_then(|mut m| m.take())
            .unwrap_or_else(|| "a panic".into())),
        Ok(()) if took > timeout => Err(format!(
            "took {:.1} s (limit {:.0} s): a hang",
            took.as_secs_f64(),
            timeout.as_secs_f64()
        )),
        Ok(()) => Ok(()),
    }
}

/// The deterministic generator of the mutations (splitmix64, as the verifier's
/// simulated cheats use).
struct Rng(Sampler);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Values that sit on the boundaries the decoders and the audit check.
const INTERESTING: &[u64] = &[
    0,
    1,
    2,
    0x7f,
    0x80,
    0xff,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    0xffff_ffff,
    1 << 20,
    1 << 36,
    1 << 40,
    (1 << 40) + 1,
    i64::MAX as u64,
    u64::MAX,
];

/// Applies 1 to 8 random mutations to `input`, drawing splices from `corpus`.
fn mutate(rng: &mut Rng, input: &mut Vec<u8>, corpus: &[Vec<u8>], max_len: usize) {
    for _ in 0..1 + rng.below(8) {
        let len = input.len();
        match rng.below(8) {
            0 if len > 0 => {
                let at = rng.below(len);
                input[at] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let at = rng.below(len);
                input[at] = rng.next() as u8;
            }
            2 => {
                let at = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                input.splice(at..at, bytes);
            }
            3 if len > 0 => {
                let at = rng.below(len);
                let n = (1 + rng.below(64)).min(len - at);
                input.drain(at..at + n);
            }
            4 if len > 0 => {
                let at = rng.below(len);
                let n = (1 + rng.below(64)).min(len - at);
                let piece = input[at..at + n].to_vec();
                let to = rng.below(len + 1);
                input.splice(to..to, piece);
            }
            5 if !corpus.is_empty() => {
                let other = &corpus[rng.below(corpus.len())];
                let at = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                input.truncate(at);
                input.extend_from_slice(&other[from..]);
            }
            6 if len > 0 => {
                let v = INTERESTING[rng.below(INTERESTING.len())];
                let width = [1usize, 2, 4, 8][rng.below(4)].min(len);
                let at = rng.below(len - width + 1);
                input[at..at + width].copy_from_slice(&v.to_le_bytes()[..width]);
            }
            7 if len > 0 => {
                let at = rng.below(len);
                input.truncate(at);
            }
            _ => input.push(rng.next() as u8),
        }
    }
    input.truncate(max_len);
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

struct Options {
    n: u64,
    seed: u64,
    corpus: PathBuf,
    max_len: usize,
    timeout: Duration,
    artifacts: PathBuf,
    write_seeds: bool,
}

fn parse(name: &str, args: &[String]) -> Result<Options, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut o = Options {
        n: 10_000,
        seed: 1,
        corpus: crate::corpus_dir(name),
        max_len: DEFAULT_MAX_LEN,
        timeout: DEFAULT_TIMEOUT,
        artifacts: root.join("artifacts").join(name),
        write_seeds: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |what: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{a} needs {what}"))
        };
        let number = |s: String, what: &str| {
            s.parse::<u64>()
                .map_err(|_| format!("{a}: '{s}' is not {what}"))
        };
        match a.as_str() {
            "-h" | "--help" => return Err(String::new()),
            "--seed" => o.seed = number(value("a number")?, "a number")?,
            "--corpus" => o.corpus = PathBuf::from(value("a directory")?),
            "--artifacts" => o.artifacts = PathBuf::from(value("a directory")?),
            "--max-len" => o.max_len = number(value("a size")?, "a size in bytes")? as usize,
            "--timeout" => {
                o.timeout = Duration::from_secs(number(value("seconds")?, "whole seconds")?)
            }
            "--write-seeds" => o.write_seeds = true,
            s if !s.starts_with('-') => o.n = number(s.to_string(), "a count of inputs")?,
            s => return Err(format!("unknown option {s}")),
        }
    }
    Ok(o)
}

/// The `main` of a target's binary on a stable toolchain.
pub fn main(name: &str, target: fn(&[u8])) -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let o = match parse(name, &args) {
        Ok(o) => o,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("fuzz {name}: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if o.write_seeds {
        if let Err(e) = std::fs::create_dir_all(&o.corpus) {
            eprintln!("fuzz {name}: cannot create {}: {e}", o.corpus.display());
            return ExitCode::from(2);
        }
        for (file, data) in crate::targets::seeds(name) {
            let path = o.corpus.join(file);
            if let Err(e) = std::fs::write(&path, data) {
                eprintln!("fuzz {name}: cannot write {}: {e}", path.display());
                return ExitCode::from(2);
            }
            println!("wrote {}", path.display());
        }
        return ExitCode::SUCCESS;
    }
    let corpus = match corpus(&o.corpus) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fuzz {name}: cannot read {}: {e}", o.corpus.display());
            return ExitCode::from(2);
        }
    };
    if corpus.is_empty() {
        eprintln!(
            "fuzz {name}: no corpus in {} (run with --write-seeds)",
            o.corpus.display()
        );
        return ExitCode::from(2);
    }
    let started = Instant::now();
    let mut last_note = Instant::now();
    let inputs: Vec<Vec<u8>> = corpus.iter().map(|(_, b)| b.clone()).collect();
    let mut rng = Rng(Sampler::new(o.seed));
    let total = corpus.len() as u64 + o.n;
    for i in 0..total {
        let data = match corpus.get(i as usize) {
            Some((_, b)) => b.clone(),
            None => {
                let mut d = inputs[rng.below(inputs.len())].clone();
                mutate(&mut rng, &mut d, &inputs, o.max_len);
                d
            }
        };
        if let Err(why) = run_one(target, &data, o.timeout) {
            let path = o.artifacts.join(format!("crash-{:016x}", fnv(&data)));
            let saved = std::fs::create_dir_all(&o.artifacts)
                .and_then(|()| std::fs::write(&path, &data))
                .map(|()| format!("saved to {}", path.display()))
                .unwrap_or_else(|e| format!("not saved ({e})"));
            eprintln!(
                "fuzz {name}: FAILED on input {i} ({} bytes, {saved}): {why}",
                data.len()
            );
            return ExitCode::from(1);
        }
        if last_note.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "fuzz {name}: {i} of {total} inputs, {:.0} s",
                started.elapsed().as_secs_f64()
            );
            last_note = Instant::now();
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "fuzz {name}: {total} inputs tried ({} corpus, {} mutated, seed {}) in {secs:.1} s ({:.0}/s); no failures",
        corpus.len(),
        o.n,
        o.seed,
        total as f64 / secs.max(1e-9)
    );
    ExitCode::SUCCESS
}

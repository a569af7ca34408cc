//! Builds and runs the simulated GPU (`tests/simgpu`): the CPU stand-in for
//! libcudart, libcuda, libcublas and libcublasLt that every test without a GPU
//! runs against.
//!
//! [`libraries`] runs `scripts/simgpu.sh` once per test process; [`compile`]
//! builds a C program against the simulator's headers with the system `cc`;
//! [`run`] runs a program with `LD_LIBRARY_PATH` pointing at the simulator and
//! the environment a test asks for (`SIMGPU_FAULT`, `SIMGPU_LATENCY_US`, ...).
//! These helpers panic on any setup failure: they are for tests only.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// Where the simulated GPU's libraries and headers are.
#[derive(Debug, Clone)]
pub struct Libraries {
    /// Directory holding `libcudart.so.13`, `libcuda.so.1`, `libcublas.so.13`,
    /// `libcublasLt.so.13` and their unversioned links.
    pub lib_dir: PathBuf,
    /// Directory holding the simulator's `cuda.h`, `cuda_runtime.h`,
    /// `cublas_v2.h`, `cublasLt.h`, ...
    pub include_dir: PathBuf,
}

/// The repository root (the parent of this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Builds the simulated GPU once per process and returns where it is.
pub fn libraries() -> &'static Libraries {
    static LIBS: OnceLock<Libraries> = OnceLock::new();
    LIBS.get_or_init(|| {
        let root = repo_root();
        let out = Command::new("bash")
            .arg(root.join("scripts/simgpu.sh"))
            .output()
            .expect("run scripts/simgpu.sh");
        assert!(
            out.status.success(),
            "scripts/simgpu.sh failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let last = stdout
            .lines()
            .last()
            .expect("scripts/simgpu.sh printed nothing");
        Libraries {
            lib_dir: PathBuf::from(last.trim()),
            include_dir: root.join("tests/simgpu/include"),
        }
    })
}

/// Compiles `tests/programs/<name>.c` against the simulator (once per
/// process) and returns the executable's path.
pub fn compile(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let built = BUILT.get_or_init(|| Mutex::new(HashMap::new()));
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(exe) = built.get(name) {
        return exe.clone();
    }
    let libs = libraries();
    let root = repo_root();
    let programs = root.join("tests/programs");
    let out_dir = root.join("target/simgpu/programs");
    std::fs::create_dir_all(&out_dir).expect("create target/simgpu/programs");
    // Built under a per-process name, then renamed into place: a concurrent
    // test binary never runs a half-written executable.
    let exe = out_dir.join(name);
    let tmp = out_dir.join(format!("{name}.{}.tmp", std::process::id()));
    let out = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args([
            "-std=c11",
            "-D_GNU_SOURCE",
            "-O1",
            "-Wall",
            "-Wextra",
            "-Werror",
        ])
        .arg("-I")
        .arg(&libs.include_dir)
        .arg("-I")
        .arg(&programs)
        .arg(programs.join(format!("{name}.c")))
        .arg("-L")
        .arg(&libs.lib_dir)
        .args([
            "-lcuda",
            "-lcudart",
            "-lcublas",
            "-lcublasLt",
            "-lm",
            "-lpthread",
            "-o",
        ])
        .arg(&tmp)
        .output()
        .expect("run cc");
    assert!(
        out.status.success(),
        "cc failed for {name}.c:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&tmp, &exe).expect("move the compiled program into place");
    built.insert(name.to_string(), exe.clone());
    exe
}

/// Compiles `tests/programs/<name>.c` (with the system `cc`, against the
/// simulator's headers) with `tests/programs/host_cuda.cpp` (with `c++`, or
/// `$CXX`): the program then runs the kernels of `cuda/gather.cu` themselves,
/// compiled for the host, behind the CUDA driver calls it makes, instead of the
/// simulator (see host_cuda.cpp for what it implements). Once per process;
/// returns the executable's path.
pub fn compile_host_cuda(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let built = BUILT.get_or_init(|| Mutex::new(HashMap::new()));
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(exe) = built.get(name) {
        return exe.clone();
    }
    let root = repo_root();
    let programs = root.join("tests/programs");
    let include = root.join("tests/simgpu/include");
    let out_dir = root.join("target/simgpu/host-cuda");
    std::fs::create_dir_all(&out_dir).expect("create target/simgpu/host-cuda");
    let tmp = |what: &str| out_dir.join(format!("{name}.{what}.{}.tmp", std::process::id()));
    let (object, driver, exe_tmp) = (tmp("o"), tmp("driver.o"), tmp("exe"));
    let build = |cmd: &mut Command| {
        let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
        assert!(
            out.status.success(),
            "{cmd:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let warnings = ["-O1", "-Wall", "-Wextra", "-Werror"];
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    build(
        Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
            .args(["-std=c11", "-D_GNU_SOURCE"])
            .args(warnings)
            .arg("-I")
            .arg(&include)
            .arg("-I")
            .arg(&programs)
            .arg("-c")
            .arg(programs.join(format!("{name}.c")))
            .arg("-o")
            .arg(&object),
    );
    build(
        Command::new(&cxx)
            .args(["-std=c++17", "-Wno-unknown-pragmas"])
            .args(warnings)
            .arg("-I")
            .arg(&include)
            .arg("-c")
            .arg(programs.join("host_cuda.cpp"))
            .arg("-o")
            .arg(&driver),
    );
    build(
        Command::new(&cxx)
            .arg(&object)
            .arg(&driver)
            .arg("-lm")
            .arg("-o")
            .arg(&exe_tmp),
    );
    let exe = out_dir.join(name);
    std::fs::rename(&exe_tmp, &exe).expect("move the compiled program into place");
    let _ = std::fs::remove_file(&object);
    let _ = std::fs::remove_file(&driver);
    built.insert(name.to_string(), exe.clone());
    exe
}

/// What a program run printed and how it ended.
#[derive(Debug)]
pub struct Run {
    /// Exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// The `FAIL ...` lines of a test program's output.
    pub fn failures(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .filter(|l| l.starts_with("FAIL"))
            .collect()
    }

    /// The number of `PASS ...` lines.
    pub fn passes(&self) -> usize {
        self.stdout
            .lines()
            .filter(|l| l.starts_with("PASS"))
            .count()
    }

    /// Everything printed, for assertion messages.
    pub fn transcript(&self) -> String {
        format!(
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs a program against the simulator with extra environment variables.
/// Any `SIMGPU_*` variable of the test process itself is removed first, so a
/// run sees exactly the knobs the test names.
pub fn run(exe: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let libs = libraries();
    let mut cmd = Command::new(exe);
    cmd.args(args).env("LD_LIBRARY_PATH", &libs.lib_dir);
    for (key, _) in std::env::vars() {
        if key.starts_with("SIMGPU_") {
            cmd.env_remove(key);
        }
    }
    for (key, value) in env {
        cmd.env(key, value);
    }
    let out = cmd.output().expect("run test program");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

"""The step runners of the GPU check (standard library only).

    steps.py STEP --ctx OUTDIR/work/ctx.json --deadline EPOCH_SECONDS

Each runner starts the workloads (wl_*.py) with and without libmmaudit.so, runs
`mmaudit-verify check` on the captures and records its findings as checks in
OUTDIR/steps/STEP.json (True pass, False fail, None could not be determined), with
tables and notes for the report. orchestrate.py runs each under `timeout`.
"""

import argparse
import glob
import os
import re
import shutil
import statistics
import sys
import threading
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import commit_check  # noqa: E402
from common import (  # noqa: E402
    REPO, Ctx, Deadline, Result, audited_env, child_output, commit_exit_line, cublas_log_counts,
    failure_text, gemm_trace, install_termination, live_env, lt_log_counts, median_spread, plain_env,
    python_has, read_json, rel, run_capture, run_child, say, serve_address, sha256_file, start_child,
    stop_child, summarize, verdict_line, verify, wait_output, wait_until, workload,
)

FULL_RATES = {"CALL_RATE": 1, "ROW_RATE": 0.05, "COL_RATE": 0.02, "BATCH_RATE": 1}


def ran(res, run, what):
    """True when the child succeeded; otherwise records a failed check."""
    if run["rc"] == 0 and not run["timed_out"]:
        return True
    res.check(what, False, failure_text(run, what))
    return False


def verdict_check(res, name, v, expect="pass"):
    if v.get("verdict") == "error":
        res.check(name, False, verdict_line(v))
    else:
        res.check(name, v.get("verdict") == expect, verdict_line(v))


def api_logs(prefix):
    """Environment for cuBLAS and cuBLASLt API logging into PREFIX.cublas.log and
    PREFIX.cublaslt.log (logs of an earlier run are removed first)."""
    for suffix in (".cublas.log", ".cublaslt.log"):
        if os.path.exists(prefix + suffix):
            os.remove(prefix + suffix)
    return {
        "CUBLAS_LOGINFO_DBG": "1",
        "CUBLAS_LOGDEST_DBG": prefix + ".cublas.log",
        "CUBLASLT_LOG_LEVEL": "5",
        "CUBLASLT_LOG_MASK": "16",
        "CUBLASLT_LOG_FILE": prefix + ".cublaslt.log",
    }


def count_check(res, name, ledger, prefix, others=None):
    """Compares the ledger's call count with the cuBLAS/cuBLASLt API logs written with
    api_logs(prefix); `others` are further counts shown for reference, and the first
    of them is the comparison when both logs are empty. Returns the trace counts."""
    cb = cublas_log_counts(prefix + ".cublas.log")
    lt = lt_log_counts(prefix + ".cublaslt.log")
    hooked, unhooked = gemm_trace(cb, lt)
    traced = sum(hooked.values())
    logged_anything = bool(cb) or bool(lt)
    text = "ledger %s; API logs %s (%s; of %s cuBLAS and %s cuBLASLt API calls logged)" % (
        ledger, traced, ", ".join("%s %d" % kv for kv in sorted(hooked.items())) or "none",
        sum((cb or {}).values()), sum((lt or {}).values()))
    for label, n in (others or {}).items():
        text += "; %s %s" % (label, n)
    fallback = [(label, n) for label, n in (others or {}).items() if isinstance(n, int)]
    if ledger is None:
        res.check(name, False, text + "; no ledger count (the verifier did not run)")
    elif logged_anything:
        res.check(name, ledger == traced, text)
    elif fallback:
        label, n = fallback[0]
        res.check(name, ledger == n, text + "; both API logs were empty, compared with " + label)
    else:
        res.check(name, None, text + "; both API logs were empty: no independent count")
    if unhooked:
        res.check(name + ": no GEMM through an entry point the library does not hook", False,
                  ", ".join("%s %d" % kv for kv in sorted(unhooked.items())))
    return {"hooked": hooked, "unhooked": unhooked,
            "cublas_functions": dict(cb or {}), "cublaslt_functions": dict(lt or {})}


def find_tool(name):
    path = shutil.which(name)
    if path:
        return path
    for pattern in ("/usr/local/cuda/bin/" + name, "/usr/local/cuda-*/bin/" + name,
                    "/opt/nvidia/nsight-compute/*/" + name):
        hits = sorted(glob.glob(pattern))
        if hits:
            return hits[-1]
    return None


def ensure_model(ctx, res, dl):
    """The model's safetensors file, made once per output directory; None on failure."""
    path = os.path.join(ctx.work, "model.safetensors")
    if os.path.exists(path):
        return path
    run = run_child(ctx, res.d["step"], "make-model",
                    workload(ctx, "wl_llama.py", "make-model", "--weights", path + ".part"),
                    env=plain_env(), timeout=dl.budget(30))
    if not ran(res, run, "model weights written"):
        return None
    os.replace(path + ".part", path)
    with open(run["log"]) as f:
        res.note(f.read().splitlines()[-1].replace(path + ".part", rel(path)))
    return path


# --- env -----------------------------------------------------------------------------


def step_env(ctx, res, dl):
    m = {}
    smi = run_capture(ctx, "env", "nvidia-smi-query",
                      ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,compute_cap",
                       "--format=csv,noheader"], env=plain_env(), timeout=dl.budget(10))
    if ran(res, smi, "nvidia-smi"):
        fields = [x.strip() for x in smi["out"].strip().splitlines()[0].split(",")]
        m.update(zip(("gpu", "driver", "gpu_memory", "compute_capability"), fields))
        full = run_capture(ctx, "env", "nvidia-smi", ["nvidia-smi"], env=plain_env(), timeout=dl.budget(10))
        hit = re.search(r"CUDA Version:\s*([\d.]+)", full["out"])
        if hit:
            m["driver_cuda"] = hit.group(1)
    out = os.path.join(ctx.work, "env.json")
    run = run_child(ctx, "env", "versions", workload(ctx, "wl_env.py", "--result", out),
                    env=plain_env(), timeout=dl.budget(20, reserve=8))
    if ran(res, run, "PyTorch sees the GPU"):
        info = read_json(out) or {}
        m["python"] = info.get("python")
        m["torch"] = info.get("torch")
        m["torch_cuda"] = info.get("torch_cuda")
        m["torch_gpu"] = info.get("gpu")
        m["multiprocessors"] = info.get("multiprocessors")
        m["preferred_blas"] = info.get("preferred_blas")
        lv = info.get("library_versions") or {}
        m["cublas"] = lv.get("cublas")
        m["cublasLt"] = lv.get("cublasLt")
        m["cudart"] = lv.get("cudart")
        m["cuda_driver_api"] = lv.get("cuda_driver_api")
        m["libraries"] = info.get("libraries")
        m["packages"] = info.get("packages")
        res.check("PyTorch sees the GPU", bool(info.get("cuda_available")),
                  "%s, capability %s" % (info.get("gpu"), info.get("capability")))
    # The library preloaded without a key: it must forward every call and say so.
    probe = "import torch; a = torch.ones(64, 64, device='cuda'); print((a @ a).sum().item())"
    run = run_capture(ctx, "env", "preload-without-key", [ctx.python, "-c", probe],
                      env=dict(plain_env(), LD_PRELOAD=ctx.lib), timeout=dl.budget(15, reserve=3))
    if ran(res, run, "libmmaudit.so preloaded into PyTorch without a key"):
        said = "auditing is off" in run["out"]
        right = "262144.0" in run["out"]
        res.check("libmmaudit.so preloaded into PyTorch without a key", said and right,
                  "GEMM result %s; %s" % ("right" if right else "WRONG",
                                          "says auditing is off" if said else "no 'auditing is off' message"))
    ver = run_capture(ctx, "env", "verifier-version", [ctx.verifier, "--version"], env=plain_env(), timeout=10)
    if ran(res, ver, "mmaudit-verify runs"):
        m["verifier"] = ver["out"].strip()
        res.check("mmaudit-verify runs", True, m["verifier"])
    for tool in ("ncu", "compute-sanitizer"):
        path = find_tool(tool)
        if path:
            v = run_capture(ctx, "env", tool + "-version", [path, "--version"], env=plain_env(), timeout=dl.budget(15))
            lines = [l for l in v["out"].splitlines() if l.strip()]
            m[tool] = "%s (%s)" % (lines[-1].strip() if lines else "?", path)
        else:
            m[tool] = "not installed"
    m["binaries"] = {os.path.basename(p): {"sha256": sha256_file(p), "bytes": os.path.getsize(p)}
                     for p in (ctx.lib, ctx.verifier)}
    git = run_capture(ctx, "env", "git", ["git", "-C", REPO, "rev-parse", "HEAD"], env=plain_env(), timeout=10) \
        if shutil.which("git") else None
    m["commit"] = git["out"].strip() if git and git["rc"] == 0 else None
    if m["commit"]:
        # The tree that ran, not only its base: uncommitted changes are named as such.
        dirty = run_capture(ctx, "env", "git-status",
                            ["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
                            env=plain_env(), timeout=10)
        if dirty["rc"] == 0 and dirty["out"].strip():
            m["commit"] += " with uncommitted changes (%d files)" % len(dirty["out"].strip().splitlines())
    res.detail("machine", m)
    res.summary("%s, driver %s (CUDA %s), cuBLAS %s, PyTorch %s" % (
        m.get("gpu"), m.get("driver"), m.get("driver_cuda"), m.get("cublas"), m.get("torch")))


# --- commit --------------------------------------------------------------------------

# Knobs of this step, read here and never passed on (plain_env drops MMAUDIT_*):
#   MMAUDIT_GPU_CHECK_LIBCUDA_DIR  the directory of the libcuda.so.1 that the "real" build
#       links and runs against, instead of the system's driver. Pointed at the simulator's
#       library directory it runs the whole step without a GPU (scripts/gpu/selftest.py);
#       the step then records its result as undetermined, never as a GPU's pass.
#   MMAUDIT_GPU_CHECK_COMMIT_MIB   the size of commit_bench's large job (default 256).

GPU_DIR = os.path.dirname(os.path.abspath(__file__))
SIM_INCLUDE = os.path.join(REPO, "tests", "simgpu", "include")
PROGRAMS = os.path.join(REPO, "tests", "programs")
# No -Werror: a newer compiler's new warning must not stop the one run on a GPU machine.
COMMIT_CFLAGS = ["-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra"]
# program: (source, optimisation); simgpu_commit as tests/src/simgpu.rs compiles it
COMMIT_PROGRAMS = {"simgpu_commit": (os.path.join(PROGRAMS, "simgpu_commit.c"), "-O1"),
                   "commit_bench": (os.path.join(GPU_DIR, "commit_bench.c"), "-O2")}
SIDES = {"sim": "the simulated GPU", "real": "the real driver"}
SIM_ONLY_LIBS = ("libsimgpu", "libcudart", "libcublas")


def commit_env(lib_dir=None):
    """plain_env without SIMGPU_* knobs, with lib_dir first on LD_LIBRARY_PATH."""
    env = {k: v for k, v in plain_env().items() if not k.startswith("SIMGPU_")}
    if lib_dir:
        env["LD_LIBRARY_PATH"] = ":".join([lib_dir] + [p for p in env.get("LD_LIBRARY_PATH", "").split(":") if p])
    return env


def find_ldconfig():
    return shutil.which("ldconfig") or next((p for p in ("/sbin/ldconfig", "/usr/sbin/ldconfig")
                                             if os.path.exists(p)), None)


def real_link_args(ctx, res, dl, override, sim_lib):
    """Linker arguments for the driver's libcuda.so.1 and the directories they name,
    or None (recorded as a failed check) when there is none."""
    if override:
        return ["-L", override, "-l:libcuda.so.1"], [override]
    ldconfig = find_ldconfig()
    cache = run_capture(ctx, "commit", "ldconfig", [ldconfig, "-p"], env=plain_env(),
                        timeout=dl.budget(10, reserve=15))["out"] if ldconfig else ""
    dirs = commit_check.libcuda_dirs(os.environ.get("LD_LIBRARY_PATH"), cache, exclude=[sim_lib])
    if dirs:
        return sum((["-L", d] for d in dirs), []) + ["-l:libcuda.so.1"], dirs
    nvcc = find_tool("nvcc")
    stubs = [os.path.join(os.path.dirname(os.path.dirname(nvcc)), "lib64", "stubs")] if nvcc else []
    for d in stubs + ["/usr/local/cuda/lib64/stubs"]:
        if os.path.exists(os.path.join(d, "libcuda.so")):
            res.note("no libcuda.so.1 to link against; linked against the toolkit's stub %s/libcuda.so "
                     "(the program loads the driver's libcuda.so.1 when it runs)" % d)
            return ["-L", d, "-lcuda"], []
    res.check("the driver's libcuda.so.1 found", False, "not in LD_LIBRARY_PATH, `ldconfig -p`, %s, nor a "
              "toolkit stub" % ", ".join(commit_check.COMMON_DRIVER_DIRS))
    return None, []


def loaded_libraries(ctx, res, dl, exe, env, side, sim_lib, override):
    """Checks with ldd which libcuda.so.1 a build loads; returns ldd's map or None."""
    ldd = shutil.which("ldd")
    if not ldd:
        if side == "real" and override:
            res.check("the real build loads the driver's libcuda.so.1", None,
                      "MMAUDIT_GPU_CHECK_LIBCUDA_DIR=%s: not the system's driver" % override)
        else:
            res.note("ldd not found: which libcuda.so.1 the %s build loads is not shown" % side)
        return None
    run = run_capture(ctx, "commit", "ldd-" + os.path.basename(exe), [ldd, exe], env=env, timeout=dl.budget(10))
    paths = commit_check.ldd_paths(run["out"])
    cuda = paths.get("libcuda.so.1")
    in_sim = lambda p: bool(p) and os.path.realpath(p).startswith(os.path.realpath(sim_lib) + os.sep)  # noqa: E731
    extra = sorted(n for n in paths if n.startswith(SIM_ONLY_LIBS))
    text = "libcuda.so.1 => %s; loads %s" % (cuda or "not found", ", ".join(sorted(paths)) or "nothing")
    if side == "sim":
        res.check("the simulator build loads the simulator's libcuda.so.1", in_sim(cuda), text)
    elif override:
        res.check("the real build loads the driver's libcuda.so.1", None,
                  text + " (MMAUDIT_GPU_CHECK_LIBCUDA_DIR=%s: not the system's driver)" % override)
    else:
        res.check("the real build loads the driver's libcuda.so.1 and nothing of the simulator",
                  bool(cuda) and not in_sim(cuda) and not extra and not any(in_sim(p) for p in paths.values()),
                  text + ("; simulator libraries: " + ", ".join(extra) if extra else ""))
    return paths


def header_crosscheck(ctx, res, dl, cc, work):
    """Both programs are built against the simulator's headers; where the CUDA toolkit's
    cuda.h is on the machine, both are also compiled against it, and the driver symbols
    each object calls (nm -u) must be the same: the simulator's cuda.h binds every call
    to the entry point NVIDIA's header binds it to (cuMemAlloc -> cuMemAlloc_v2, ...)."""
    nvcc = find_tool("nvcc")
    candidates = ([os.path.join(os.path.dirname(os.path.dirname(nvcc)), "include")] if nvcc else []) + \
        [os.path.join(os.environ[v], "include") for v in ("CUDA_HOME", "CUDA_PATH") if os.environ.get(v)] + \
        ["/usr/local/cuda/include"]
    toolkit = next((d for d in candidates if os.path.exists(os.path.join(d, "cuda.h"))), None)
    nm = shutil.which("nm")
    if not toolkit or not nm:
        res.note("no %s: the simulator's cuda.h was not compared with the CUDA toolkit's"
                 % ("CUDA toolkit cuda.h" if not toolkit else "nm"))
        return
    same, differ = [], []
    for prog, (src, opt) in COMMIT_PROGRAMS.items():
        symbols = {}
        for which, include, flags in (("sim", SIM_INCLUDE, COMMIT_CFLAGS), ("toolkit", toolkit, COMMIT_CFLAGS[:2] + ["-w"])):
            obj = os.path.join(work, "%s-%s-headers.o" % (prog, which))
            run = run_child(ctx, "commit", "cc-%s-%s-headers" % (prog, which),
                            [cc] + flags + [opt, "-I", include, "-I", PROGRAMS, "-c", src, "-o", obj],
                            env=plain_env(), timeout=dl.budget(10, reserve=1))
            if not ran(res, run, "%s compiled against the %s cuda.h" % (prog, which)):
                return
            listing = run_capture(ctx, "commit", "nm-%s-%s" % (prog, which), [nm, "-u", obj], env=plain_env(),
                                  timeout=dl.budget(5))
            symbols[which] = sorted({l.split()[-1] for l in listing["out"].splitlines()
                                     if l.split() and l.split()[-1].startswith("cu")})
        if symbols["sim"] == symbols["toolkit"]:
            same.append("%s: %d" % (prog, len(symbols["sim"])))
        else:
            differ.append("%s: only with the toolkit's: %s; only with the simulator's: %s" % (
                prog, ", ".join(sorted(set(symbols["toolkit"]) - set(symbols["sim"]))) or "-",
                ", ".join(sorted(set(symbols["sim"]) - set(symbols["toolkit"]))) or "-"))
    res.check("the simulator's cuda.h binds the same driver entry points as %s/cuda.h" % toolkit, not differ,
              "; ".join(differ) if differ else "driver symbols called, identical: " + ", ".join(same))


def kernel_registers(ctx, res, dl, work):
    """Registers per kernel when ptxas compiles the PTX for this GPU (a note: a block
    of 1024 threads needs at most 64 registers a thread)."""
    ptxas = find_tool("ptxas")
    smi = run_capture(ctx, "commit", "compute-cap", ["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
                      env=plain_env(), timeout=dl.budget(5)) if ptxas and shutil.which("nvidia-smi") else None
    cap = (smi["out"].strip().splitlines() or [""])[0].strip() if smi and smi["rc"] == 0 else ""
    if not ptxas or not re.match(r"^\d+\.\d+$", cap):
        return
    arch = "sm_" + cap.replace(".", "")
    run = run_capture(ctx, "commit", "ptxas", [ptxas, "-arch=" + arch, "-v", os.path.join(REPO, "cuda", "gather.ptx"),
                                               "-o", os.path.join(work, "gather.cubin")],
                      env=plain_env(), timeout=dl.budget(10))
    regs = commit_check.registers(run["out"])
    if regs:
        res.note("ptxas -arch=%s: registers per thread: %s (a block of 1024 threads, as simgpu_commit launches "
                 "mmaudit_commit_tree once, needs at most 64)" % (arch, ", ".join("%s %d" % kv for kv in sorted(regs.items()))))
        res.detail("registers", {"arch": arch, "per_kernel": regs})


def in_thread(fn):
    """Starts fn() in a thread; returns a function that waits for it and returns its
    result (None if it raised)."""
    box = {}

    def body():
        try:
            box["r"] = fn()
        except Exception:
            box["error"] = traceback.format_exc()

    t = threading.Thread(target=body, daemon=True)
    t.start()

    def wait():
        t.join()
        if "error" in box:
            say(box["error"])
        return box.get("r")

    return wait


def step_commit(ctx, res, dl):
    cc = shutil.which(os.environ.get("CC") or "cc") or shutil.which("gcc")
    if not cc:
        res.skip("no C compiler (cc)")
        return
    override = os.environ.get("MMAUDIT_GPU_CHECK_LIBCUDA_DIR") or None
    if override:
        override = os.path.abspath(override)
        res.note("MMAUDIT_GPU_CHECK_LIBCUDA_DIR=%s: the 'real' runs use the libcuda.so.1 there, not the system's "
                 "driver; the step's result is not a GPU's" % override)
    mib = int(os.environ.get("MMAUDIT_GPU_CHECK_COMMIT_MIB") or 256)
    check_mib = min(64, mib)  # the jobs compared with the simulator (its twins hash about 85 MB/s)
    work = os.path.join(ctx.work, "commit")
    os.makedirs(work, exist_ok=True)
    ptx = os.path.join(REPO, "cuda", "gather.ptx")
    res.detail("ptx", {"path": "cuda/gather.ptx", "sha256": sha256_file(ptx)})
    runs = []

    def log(what, run):
        runs.append([what, "%.1f" % run["seconds"], "killed at its limit" if run["timed_out"] else run["rc"]])
        res.detail("runs", runs)

    # The simulated GPU, built into OUTDIR/work/simgpu (not into the tree).
    build_dir = os.path.join(ctx.work, "simgpu")
    build = run_capture(ctx, "commit", "simgpu-build", ["bash", os.path.join(REPO, "scripts", "simgpu.sh")],
                        env=plain_env({"SIMGPU_BUILD_DIR": build_dir, "SIMGPU_CFLAGS": "-Wno-error"}),
                        timeout=dl.budget(30, reserve=15))
    log("build the simulated GPU (scripts/simgpu.sh)", build)
    sim_lib = os.path.join(build_dir, "lib")
    if not ran(res, build, "simulated GPU built (scripts/simgpu.sh)"):
        return
    real_link, driver_dirs = real_link_args(ctx, res, dl, override, sim_lib)
    if real_link is None:
        return
    res.detail("driver_dirs", driver_dirs)

    # Each program twice, from the same source and the simulator's headers; only the
    # libcuda.so.1 linked differs (the real build links nothing else of the simulator).
    links = {"sim": ["-L", sim_lib, "-Wl,--disable-new-dtags,-rpath," + sim_lib, "-l:libcuda.so.1"],
             "real": real_link}
    exes = {}
    for prog, (src, opt) in COMMIT_PROGRAMS.items():
        for side in ("sim", "real"):
            exe = os.path.join(work, "%s-%s" % (prog, side))
            run = run_child(ctx, "commit", "cc-%s-%s" % (prog, side),
                            [cc] + COMMIT_CFLAGS + [opt, "-I", SIM_INCLUDE, "-I", PROGRAMS, src, "-o", exe]
                            + links[side] + ["-lm"], env=plain_env(), timeout=dl.budget(15, reserve=10))
            log("compile %s against %s" % (prog, SIDES[side]), run)
            if ran(res, run, "%s built against %s" % (prog, SIDES[side])):
                exes[prog, side] = exe
    envs = {"sim": commit_env(sim_lib), "real": commit_env(override)}
    if ("simgpu_commit", "sim") in exes:
        loaded_libraries(ctx, res, dl, exes["simgpu_commit", "sim"], envs["sim"], "sim", sim_lib, override)
    if ("simgpu_commit", "real") in exes:
        paths = loaded_libraries(ctx, res, dl, exes["simgpu_commit", "real"], envs["real"], "real", sim_lib, override)
        res.detail("real_libraries", paths)
    if ("simgpu_commit", "sim") not in exes or ("simgpu_commit", "real") not in exes:
        return

    # The simulator on the CPU while the GPU runs: simgpu_commit, then the large job's roots.
    def on_cpu():
        p = run_capture(ctx, "commit", "simgpu_commit-sim", [exes["simgpu_commit", "sim"], ptx, "--no-fault"],
                        env=envs["sim"], timeout=dl.budget(15, reserve=3))
        b = None
        if ("commit_bench", "sim") in exes:
            b = run_capture(ctx, "commit", "commit_bench-sim",
                            [exes["commit_bench", "sim"], ptx, "--mib", str(check_mib), "--check-only"],
                            env=envs["sim"], timeout=dl.budget(20, reserve=1))
        return p, b

    wait_cpu = in_thread(on_cpu)
    real = run_capture(ctx, "commit", "simgpu_commit-real", [exes["simgpu_commit", "real"], ptx, "--no-fault"],
                       env=envs["real"], timeout=dl.budget(15, reserve=4))
    real_bench = None
    if ("commit_bench", "real") in exes:
        if dl.left() > 6:
            real_bench = run_capture(ctx, "commit", "commit_bench-real",
                                     [exes["commit_bench", "real"], ptx, "--mib", str(mib), "--check-mib",
                                      str(check_mib), "--reps", "5"],
                                     env=envs["real"], timeout=dl.budget(12, reserve=2))
        else:
            res.note("time limit near: commit_bench not run on the real driver")
    sim, sim_bench = wait_cpu() or (None, None)
    log("simgpu_commit on the real driver", real)
    if sim:
        log("simgpu_commit on the simulated GPU", sim)
    if real_bench:
        log("commit_bench (%d MiB checked, %d MiB timed 5 times per layout) on the real driver" % (check_mib, mib),
            real_bench)
    if sim_bench:
        log("commit_bench (%d MiB, --check-only) on the simulated GPU" % check_mib, sim_bench)

    # simgpu_commit: both pass every case; the same cases; every hash line identical.
    if sim is None:
        res.check("simulator: simgpu_commit passes every case", False, "the run did not happen (see the step's log)")
        return
    sim_p, real_p = commit_check.parse_program(sim["out"]), commit_check.parse_program(real["out"])
    for label, run, p in (("simulator", sim, sim_p), ("real GPU", real, real_p)):
        ok, detail = commit_check.program_ran(p, run["rc"])
        if run["timed_out"]:
            ok, detail = False, failure_text(run, "simgpu_commit") + "; " + detail
        res.check("%s: simgpu_commit %s --no-fault passes every case" % (label, "cuda/gather.ptx"), ok, detail)
        if label == "real GPU":
            real_ok, real_detail = ok, detail
    ok, detail = commit_check.pinned_check(sim_p)
    res.check("simulator: the protocol's pinned hashes (the reference is sound here)", ok, detail)
    checks, counts = commit_check.compare_programs(sim_p, real_p)
    for name, ok, detail in checks:
        res.check("real GPU = simulator: " + name, ok, detail)
    identical = all(ok for _, ok, _ in checks)
    res.detail("simgpu_commit", {"counts": counts, "pass": {"sim": len(sim_p["pass"]), "real": len(real_p["pass"])},
                                 "fail": {"sim": sim_p["fail"][:5], "real": real_p["fail"][:5]}})

    # commit_bench: the large job's roots agree; its timings.
    rows, bench = [], None
    if real_bench and sim_bench:
        sb, bench = commit_check.parse_bench(sim_bench["out"]), commit_check.parse_bench(real_bench["out"])
        if ran(res, sim_bench, "simulator: commit_bench --check-only") & \
                ran(res, real_bench, "real GPU: commit_bench"):
            ok, detail = commit_check.compare_bench(sb, bench)
            res.check("real GPU = simulator: roots of commit_bench's jobs (leaf hashes of large jobs)", ok, detail)
        for layout, t in sorted(bench["leaves"].items()):
            tree = bench["tree"].get(layout, {})
            nv, length, _ = bench["roots"].get(commit_check.bench_key(layout, t["bytes"]), ("?", "?", ""))
            rows.append([layout, "%s x %s" % (nv, length), "%.0f" % (t["bytes"] / 2**20),
                         "%.3f" % t["ms_median"], "%.3f - %.3f" % (t["ms_min"], t["ms_max"]), "%.1f" % t["gb_s"],
                         "%.3f" % tree["ms_median"] if tree else "-"])
        res.table("mmaudit_commit_leaves on one large job of bf16 vectors (%s), median of 5 launches timed with "
                  "CUDA events; then mmaudit_commit_tree over its leaf hashes"
                  % ("the real driver" if not override else "libcuda.so.1 of " + override),
                  ["layout", "vectors x elements", "MiB", "leaves ms", "min - max ms", "GB/s", "tree ms"], rows)
        res.detail("commit_bench", {"real": bench, "sim_roots": sb["roots"]})
        if bench.get("device"):
            res.note("commit_bench ran on %s, driver API version %s" % (bench["device"], bench["driver"]))
    elif ("commit_bench", "real") in exes:
        res.note("commit_bench: not compared (%s)" % ("no simulator run" if not sim_bench else "no real run"))

    # Diagnostics, when time is left: the headers against the toolkit's, registers.
    if dl.left() > 6:
        header_crosscheck(ctx, res, dl, cc, work)
    else:
        res.note("time limit near: the simulator's cuda.h was not compared with the toolkit's")
    if dl.left() > 4 and not override:
        kernel_registers(ctx, res, dl, work)
    res.table("What ran", ["what", "seconds", "exit"], runs)
    speed = ", ".join("%s %s GB/s" % (r[0], r[5]) for r in rows)
    if not real_ok:
        text = "simgpu_commit on the real driver: " + real_detail
    else:
        text = "%s: %s lines%s" % (
            "real GPU = simulator" if identical else "real GPU DIFFERS from the simulator",
            ", ".join("%d %s" % (counts[k], k) for k in commit_check.HASH_KINDS[:3]),
            "; %d MiB bf16 leaves: %s" % (mib, speed) if speed else "")
    res.summary(("(libcuda.so.1 of %s) " % override if override else "") + text)


# --- ops -----------------------------------------------------------------------------


def reduced_precision_check(ctx, res, dl, tag, lt, cap, v):
    """The ops under PyTorch's defaults (bf16 and fp16 reduced-precision reductions
    allowed) judged strictly (V) and with --allow-reduced-precision-reductions, and the
    same ops with them disallowed, judged strictly."""
    hint = "--allow-reduced-precision-reductions"
    # How many calls allow them is what cuBLAS and the cuBLASLt heuristic chose: a
    # measurement (tests/e2e/interposer.rs checks which calls the library flags).
    res.note("%s: PyTorch's defaults: %s of %s calls allow reduced-precision reductions" % (
        tag, v.get("reduced_precision_calls") or 0, v.get("calls")))
    unexplained = [f for f in v.get("failures", []) if hint not in f]
    res.check(tag + ": judged strictly, every failure is on a call that allowed them (or none fails)",
              v.get("verdict") == "pass" or (v.get("verdict") == "fail" and v.get("failures") and not unexplained),
              verdict_line(v) + ("; not explained: " + " | ".join(unexplained[:2]) if unexplained else ""))
    widened = verify(ctx, "ops", "lt%s-widened" % lt, cap, timeout=dl.budget(15), extra=[hint])
    verdict_check(res, tag + ": verifier at call rate 1.0 with " + hint, widened)
    prefix = os.path.join(ctx.work, "ops-lt%s-strict" % lt)
    strict_cap = prefix + ".mma"
    run = run_child(ctx, "ops", "audited-strict-lt" + lt,
                    workload(ctx, "wl_ops.py", "--no-profiler", "--no-reduced-precision-reduction",
                             "--result", prefix + ".json"),
                    env=audited_env(ctx, strict_cap, FULL_RATES, {"TORCH_BLAS_PREFER_CUBLASLT": lt}),
                    timeout=dl.budget(20, reserve=3))
    if ran(res, run, tag + ": ops with reduced-precision reductions disallowed"):
        s = verify(ctx, "ops", "lt%s-strict" % lt, strict_cap, timeout=dl.budget(15))
        verdict_check(res, tag + ": reduced-precision reductions disallowed: verifier at call rate 1.0, strict", s)
        res.note("%s: reduced-precision reductions disallowed: %s of %s calls still flagged" % (
            tag, s.get("reduced_precision_calls") or 0, s.get("calls")))
        res.detail(tag + " reductions disallowed", {"verifier": s})
    res.detail(tag + " widened", {"verifier": widened})


def step_ops(ctx, res, dl):
    rows, per_op = [], {}
    for lt in ("0", "1"):
        tag = "cublaslt=" + lt
        prefix = os.path.join(ctx.work, "ops-lt" + lt)
        cap, aud_json, ref_json = prefix + ".mma", prefix + "-audited.json", prefix + "-plain.json"
        extra = dict(api_logs(prefix), TORCH_BLAS_PREFER_CUBLASLT=lt)
        aud = run_child(ctx, "ops", "audited-lt" + lt, workload(ctx, "wl_ops.py", "--result", aud_json),
                        env=audited_env(ctx, cap, FULL_RATES, extra), timeout=dl.budget(25, reserve=5))
        ref = run_child(ctx, "ops", "plain-lt" + lt,
                        workload(ctx, "wl_ops.py", "--no-profiler", "--result", ref_json),
                        env=plain_env({"TORCH_BLAS_PREFER_CUBLASLT": lt}), timeout=dl.budget(20, reserve=3))
        # `&`, not `and`: both runs get their check
        if not (ran(res, aud, tag + ": ops under the library") & ran(res, ref, tag + ": ops without the library")):
            continue
        a, r = read_json(aud_json), read_json(ref_json)
        v = verify(ctx, "ops", "lt" + lt, cap, timeout=dl.budget(15))
        reduced_precision_check(ctx, res, dl, tag, lt, cap, v)
        prof = (a.get("profiler") or {})
        counts = count_check(res, tag + ": ledger calls = cuBLAS/cuBLASLt API log", v.get("calls"), prefix,
                             {"torch.profiler GEMM ops": prof.get("gemm_ops", "n/a (%s)" % prof.get("error")),
                              "ops issued": a.get("issued")})
        # outputs with and without the library
        ref_ops = {(o["op"], o["precision"]): o for o in r["ops"]}
        same, differ, lib_only_errors, not_run = 0, [], [], []
        for o in a["ops"]:
            key = (o["op"], o["precision"])
            p = ref_ops.get(key, {})
            cell = per_op.setdefault(key, {})
            if "error" in o and "error" in p:
                not_run.append("%s %s (%s)" % (o["precision"], o["op"], o["error"][:120]))
                cell[lt] = "not run: " + o["error"][:80]
            elif "error" in o:
                lib_only_errors.append("%s %s: %s" % (o["precision"], o["op"], o["error"][:160]))
                cell[lt] = "error only under the library"
            elif "error" in p:
                not_run.append("%s %s (fails without the library: %s)" % (o["precision"], o["op"], p["error"][:100]))
                cell[lt] = "fails without the library"
            elif o.get("sha256") == p.get("sha256"):
                same += 1
                cell[lt] = "identical"
            else:
                differ.append("%s %s" % (o["precision"], o["op"]))
                cell[lt] = "DIFFERS"
        if differ and dl.left() > 12:
            again = run_child(ctx, "ops", "plain-again-lt" + lt,
                              workload(ctx, "wl_ops.py", "--no-profiler", "--result", ref_json + ".2"),
                              env=plain_env({"TORCH_BLAS_PREFER_CUBLASLT": lt}), timeout=dl.budget(15))
            r2 = read_json(ref_json + ".2") if again["rc"] == 0 else None
            if r2:
                r2_ops = {(o["op"], o["precision"]): o for o in r2["ops"]}
                unstable = [k for k in ref_ops if ref_ops[k].get("sha256") != r2_ops.get(k, {}).get("sha256")]
                res.note("%s: two runs without the library gave %s" % (
                    tag, "different outputs for %d ops (cuBLAS not deterministic here)" % len(unstable)
                    if unstable else "identical outputs: the differences come with the library"))
        res.check(tag + ": outputs bit-identical with and without the library", not differ,
                  "%d identical%s" % (same, "; differ: " + ", ".join(differ) if differ else ""))
        if lib_only_errors:
            res.check(tag + ": no op fails only under the library", False, "; ".join(lib_only_errors))
        if not_run:
            res.note("%s: not run (also without the library): %s" % (tag, "; ".join(not_run)))
        res.detail(tag, {"verifier": v, "trace": counts, "profiler": prof,
                         "preferred_blas": a.get("preferred_blas"),
                         "reduced_precision_reduction": {"fp16": a.get("fp16_reduced_precision_reduction"),
                                                         "bf16": a.get("bf16_reduced_precision_reduction")}})
        rows.append([lt, a.get("preferred_blas"), v.get("verdict", "?").upper(), v.get("calls"),
                     sum(counts["hooked"].values()), prof.get("gemm_ops", "n/a"), a.get("issued"),
                     "%d/%d" % (same, same + len(differ))])
    res.table("Per configuration", ["TORCH_BLAS_PREFER_CUBLASLT", "PyTorch BLAS", "verdict", "ledger calls",
                                    "API log calls", "profiler GEMM ops", "ops issued", "outputs identical"], rows)
    odd = [[k[1], k[0], c.get("0", "-"), c.get("1", "-")] for k, c in per_op.items()
           if set(c.values()) != {"identical"}]
    res.note("%d of %d ops gave bit-identical outputs with and without the library in every configuration run" % (
        len(per_op) - len(odd), len(per_op)))
    if odd:
        res.table("Ops not identical in every configuration", ["precision", "op", "cublaslt=0", "cublaslt=1"], odd)
    res.summary("; ".join("lt=%s %s, ledger %s, API log %s, outputs identical %s" % (r[0], r[2], r[3], r[4], r[7])
                          for r in rows))


# --- llama ---------------------------------------------------------------------------


def step_llama(ctx, res, dl):
    weights = ensure_model(ctx, res, dl)
    if not weights:
        return
    rows = []
    for batch in (1, 16):
        tag = "batch %d" % batch
        cap = os.path.join(ctx.work, "llama-b%d.mma" % batch)
        out = os.path.join(ctx.work, "llama-b%d.json" % batch)
        run = run_child(ctx, "llama", "eager-b%d" % batch,
                        workload(ctx, "wl_llama.py", "eager", "--weights", weights, "--batch", batch,
                                 "--prefill", 2048, "--decode", 128, "--result", out),
                        env=audited_env(ctx, cap), timeout=dl.budget(25, reserve=5))
        if not ran(res, run, tag + ": prefill 2048 + decode 128 under the library"):
            continue
        w = read_json(out)
        v = verify(ctx, "llama", "b%d" % batch, cap, timeout=dl.budget(20), weights=weights, require_weights=True)
        verdict_check(res, tag + ": verifier with --weights --require-weights (default rates)", v)
        if v.get("verdict") == "error":
            continue
        res.check(tag + ": ledger calls = F.linear calls", v.get("calls") == w["gemm_calls"],
                  "ledger %s, model %s" % (v.get("calls"), w["gemm_calls"]))
        wt = v.get("weights") or {}
        res.check(tag + ": weight tensors named in the report", bool(wt.get("tensors_used")),
                  "%s of %s judged sampled calls matched a held tensor; %s tensors named" % (
                      wt.get("matched"), wt.get("judged"), wt.get("tensors_used")))
        if v.get("failure_kinds", {}).get("precision lower than declared") and dl.left() > 25:
            precision_diagnosis(ctx, res, dl, tag, batch, weights)
        res.detail(tag, {"workload": w, "verifier": v})
        rows.append([batch, "%.2f" % w["prefill_s"], "%.2f" % w["decode_s"], v.get("verdict", "?").upper(),
                     v.get("calls"), v.get("sampled"), v.get("verified"), wt.get("matched"), wt.get("tensors_used"),
                     "%.3g" % (v.get("worst_tolerance_ratio") or 0), "%.3g" % (v.get("worst_precision_ratio") or 0)])
    res.table("Eager prefill 2048 + decode 128 (default rates)",
              ["batch", "prefill s", "decode s", "verdict", "ledger calls", "sampled", "verified",
               "weights matched", "tensors named", "worst err/tol", "worst err/precision bound"], rows)
    res.summary("; ".join("batch %s %s (%s calls, %s sampled, %s tensors)" % (r[0], r[3], r[4], r[5], r[8])
                          for r in rows))


def precision_diagnosis(ctx, res, dl, tag, batch, weights):
    """'Precision lower than declared' on an honest run. PyTorch lets cuBLAS reduce
    split-k partial sums in bf16 by default, which the declared-precision bound does not
    model (docs/THREAT-MODEL.md): the same run with that disallowed tells whether it is
    the cause."""
    cap = os.path.join(ctx.work, "llama-b%d-norpr.mma" % batch)
    out = os.path.join(ctx.work, "llama-b%d-norpr.json" % batch)
    run = run_child(ctx, "llama", "eager-b%d-norpr" % batch,
                    workload(ctx, "wl_llama.py", "eager", "--weights", weights, "--batch", batch, "--prefill", 2048,
                             "--decode", 128, "--no-reduced-precision-reduction", "--result", out),
                    env=audited_env(ctx, cap), timeout=dl.budget(20, reserve=5))
    if run["rc"] != 0:
        res.note(tag + ": diagnosis run: " + failure_text(run, "wl_llama.py eager"))
        return
    v = verify(ctx, "llama", "b%d-norpr" % batch, cap, timeout=dl.budget(15), weights=weights, require_weights=True)
    res.note("%s: 'precision lower than declared' on an honest run; the same run with "
             "allow_bf16_reduced_precision_reduction = False: %s" % (tag, verdict_line(v)))
    res.detail(tag + " without reduced-precision reductions", v)


# --- graphs --------------------------------------------------------------------------


def step_graphs(ctx, res, dl):
    weights = ensure_model(ctx, res, dl)
    if not weights:
        return
    base = ["graph", "--weights", weights, "--prefill", 2048, "--decode", 128]
    cap = os.path.join(ctx.work, "graphs.mma")
    out, plain_out = os.path.join(ctx.work, "graphs.json"), os.path.join(ctx.work, "graphs-plain.json")
    run = run_child(ctx, "graphs", "audited", workload(ctx, "wl_llama.py", *base, "--result", out),
                    env=audited_env(ctx, cap), timeout=dl.budget(25, reserve=10))
    plain = run_child(ctx, "graphs", "plain", workload(ctx, "wl_llama.py", *base, "--result", plain_out),
                      env=plain_env(), timeout=dl.budget(20, reserve=8))
    # `&`, not `and`: both runs get their check
    both = ran(res, run, "capture and replay under the library") & ran(res, plain, "capture and replay without it")
    g = read_json(out) if run["rc"] == 0 else None
    p = read_json(plain_out) if plain["rc"] == 0 else None
    for label, x in (("under the library", g), ("without the library", p)):
        for b, r in (x or {}).get("batches", {}).items():
            res.check("batch %s, %s: replayed logits bit-identical to eager" % (b, label),
                      r["eager_vs_graph_identical"], "128 steps" if r["eager_vs_graph_identical"] else
                      "max |diff| %s from step %s" % (r.get("max_abs_diff"), r.get("first_differing_step")))
    if both:
        same = all(p["batches"][b]["graph_logits_sha256"] == r["graph_logits_sha256"] and
                   p["batches"][b]["eager_logits_sha256"] == r["eager_logits_sha256"]
                   for b, r in g["batches"].items())
        res.check("eager and graph logits identical with and without the library", same)
    if g:
        v = verify(ctx, "graphs", "sync", cap, timeout=dl.budget(20, reserve=6), weights=weights,
                   require_weights=True)
        gr = v.get("graphs") or {}
        calls = g["gemm_calls"]
        verdict_check(res, "verifier with --weights --require-weights (coverage as it reports it)", v)
        res.summary(verdict_line(v))
        res.table("Coverage of graph decode (batches 1 and 16, host reads each token)",
                  ["", "eager", "capture records", "replayed", "replayed sampled", "replayed verified",
                   "replayed, not audited"],
                  [["ledger (verifier)", gr.get("eager"), gr.get("capture_records"), gr.get("replayed"),
                    gr.get("replayed_sampled"), gr.get("replayed_verified"), gr.get("replayed_not_audited")],
                   ["issued by the model", calls["eager"], calls["captured"], calls["replayed"], "", "", ""]])
        res.detail("sync", {"workload": g, "verifier": v, "without_library": p})
    # Replays queued back to back (no host read between steps): the library keeps at
    # most 16 replays with samples in flight per executable graph; reported, not judged.
    cap2, out2 = os.path.join(ctx.work, "graphs-nosync.mma"), os.path.join(ctx.work, "graphs-nosync.json")
    run = run_child(ctx, "graphs", "audited-nosync",
                    workload(ctx, "wl_llama.py", *base, "--batches", "16", "--no-sync", "--result", out2),
                    env=audited_env(ctx, cap2), timeout=dl.budget(20, reserve=4))
    if run["rc"] == 0:
        v2 = verify(ctx, "graphs", "nosync", cap2, timeout=dl.budget(15), weights=weights, require_weights=True)
        g2 = read_json(out2) or {}
        same = all(r["eager_vs_graph_identical"] for r in g2.get("batches", {}).values())
        res.note("128 replays queued without host sync (batch 16): logits %s eager; %s" % (
            "identical to" if same else "DIFFERENT from", verdict_line(v2)))
        res.detail("nosync", {"workload": g2, "verifier": v2})
    else:
        res.note("queued-replay run: " + failure_text(run, "wl_llama.py graph --no-sync"))


# --- faults --------------------------------------------------------------------------


def step_faults(ctx, res, dl):
    weights = ensure_model(ctx, res, dl)
    if not weights:
        return
    for kind in ("swap", "row"):
        cap, out = os.path.join(ctx.work, "fault-%s.mma" % kind), os.path.join(ctx.work, "fault-%s.json" % kind)
        run = run_child(ctx, "faults", kind,
                        workload(ctx, "wl_llama.py", "fault", "--kind", kind, "--weights", weights,
                                 "--prefill", 256, "--decode", 128, "--result", out),
                        env=audited_env(ctx, cap), timeout=dl.budget(20, reserve=4))
        what = {"swap": "weights swapped mid-run", "row": "hidden-state row altered between layers"}[kind]
        if not ran(res, run, what + ": run"):
            continue
        f = read_json(out)
        v = verify(ctx, "faults", kind, cap, timeout=dl.budget(15), weights=weights, require_weights=True)
        res.check(what + ": the fault changed the model's outputs", f["outputs_changed"],
                  "from decode step %s, max |logit change| %.3g" % (f["first_changed_step"], f["max_logit_change"]))
        kinds = v.get("failure_kinds") or {}
        if kind == "swap":
            rate = (v.get("rates_ppm") or [100000])[0] / 1e6
            p = 1 - (1 - rate) ** f["calls_with_swapped_weight"]
            caught = v.get("verdict") == "fail" and "unknown weights" in kinds
            res.check(what + ": caught (expected: FAIL, unknown weights)", caught,
                      "%s; %d calls used the swapped %s after step %d, each sampled with probability %g: "
                      "P(caught) = %.4f" % (verdict_line(v), f["calls_with_swapped_weight"], f["swapped_tensor"],
                                             f["fault_at_step"], rate, p))
            others = sorted(set(kinds) - {"unknown weights"})
            if others:
                res.note("swap: other failure kinds as well: %s (the swapped GEMMs are arithmetically right; "
                         "only weight identity should object)" % ", ".join(others))
        else:
            res.check(what + ": audit outcome as expected (PASS: not caught)", v.get("verdict") == "pass",
                      "%s. Expected: the row is changed by an element-wise op after the GEMMs that produced it "
                      "were gathered, and the next GEMMs are computed correctly from the altered activations; "
                      "work outside cuBLAS is not audited (docs/THREAT-MODEL.md)" % verdict_line(v))
        res.detail(kind, {"workload": f, "verifier": v})
    res.summary("swap: %s; row: %s" % tuple(
        "ok" if all(c["ok"] for c in res.d["checks"] if c["name"].startswith(w)) else "see checks"
        for w in ("weights swapped", "hidden-state row")))


# --- commit-mode ---------------------------------------------------------------------

COMMIT_RUN = ["--batch", 1, "--prefill", 256, "--decode", 16]
# serve's policy: the default rates (the hello's call rate is the share of committed
# calls challenged); calls made before the hello reached the library have no session.
SERVE_POLICY = ["--max-no-session", "100%"]


def step_commit_mode(ctx, res, dl):
    """The library in commit mode (docs/COMMIT.md) under a live `serve --commit`: every
    auditable GEMM gathered whole and committed, the challenged ones opened."""
    weights = ensure_model(ctx, res, dl)
    if not weights:
        return
    work = os.path.join(ctx.work, "commit-mode")
    shutil.rmtree(work, ignore_errors=True)  # no capture or report of an earlier run here
    os.makedirs(work)
    caps, reports = os.path.join(work, "captures"), os.path.join(work, "reports")
    challenge = os.path.join(work, "challenge.key")  # the verifier's alone, not the audit key
    kg = run_child(ctx, "commit-mode", "keygen-challenge", [ctx.verifier, "keygen", "--out", challenge],
                   env=plain_env(), timeout=dl.budget(5))
    if not ran(res, kg, "challenge key made (mmaudit-verify keygen)"):
        return
    base = ["eager", "--weights", weights] + COMMIT_RUN
    plain_out, out = os.path.join(work, "plain.json"), os.path.join(work, "audited.json")
    serve = start_child(ctx, "commit-mode", "serve",
                        [ctx.verifier, "serve", "--listen", "127.0.0.1:0", "--key-file", ctx.key, "--commit",
                         "--challenge-key", challenge, "--weights", weights, "--capture-dir", caps,
                         "--json-dir", reports, "--view", "off"] + SERVE_POLICY, env=plain_env())
    # The audited run first: it is what the step is for, and serve is stopped before the
    # run without the library, which then has the machine to itself.
    addr, run = None, None
    try:
        addr = wait_output(serve, serve_address, dl.budget(10, reserve=25))
        if addr:
            run = run_child(ctx, "commit-mode", "audited", workload(ctx, "wl_llama.py", *base, "--result", out),
                            env=live_env(ctx, addr), timeout=dl.budget(15, reserve=10))
            # serve writes the report when the stream ends, just after the prover's exit (on
            # SIGTERM, that of a stream still open, as truncated)
            wait_until(lambda: glob.glob(os.path.join(reports, "*.json")),
                       dl.budget(4 if run["rc"] == 0 else 1, reserve=9))
    finally:
        exited = serve["p"] is None or serve["p"].poll() is not None  # before it was stopped
        stopped = stop_child(serve)
    if not addr:
        res.check("serve --commit listening", False, failure_text(stopped, "mmaudit-verify serve --commit")
                  if exited else "no 'listening on' line within its time (see %s)" % rel(serve["log"]))
        return
    res.check("serve --commit ran until the step stopped it (SIGTERM)", not exited and stopped["rc"] in (0, 1)
              and not stopped["timed_out"], "listening on %s; %s" % (
                  addr, "exited %s before it was stopped (see %s)" % (stopped["rc"], rel(serve["log"])) if exited
                  else "killed: still running 3 s after SIGTERM" if stopped["timed_out"]
                  else "exit %s after SIGTERM" % stopped["rc"]))
    plain = run_child(ctx, "commit-mode", "plain", workload(ctx, "wl_llama.py", *base, "--result", plain_out),
                      env=plain_env(), timeout=dl.budget(12, reserve=4))

    # The runs: under the library, and without it.
    audited_ok = ran(res, run, "run under the library in commit mode (TCP sink to serve --commit) exits 0")
    a = read_json(out) if audited_ok else None
    p = read_json(plain_out) if ran(res, plain, "the same run without the library") else None
    if a and p:
        same = a["logits_sha256"] == p["logits_sha256"] and a["first_tokens"] == p["first_tokens"]
        res.check("logits of every decode step bit-identical with and without the library", same,
                  "sha256 %s%s" % (a["logits_sha256"][:16], "" if same else " vs %s without" % p["logits_sha256"][:16]))
    lib = commit_exit_line(child_output(run))
    found = {"workload": a, "without_library": p, "exit_line": lib,
             "serve": {"address": addr, "rc": stopped["rc"], "log": rel(serve["log"])}}
    res.detail("commit_mode", found)

    # The live report (serve --json-dir), then the saved capture checked offline.
    files = sorted(glob.glob(os.path.join(reports, "*.json")))
    js = read_json(files[0]) if files else None
    if js is None:
        res.check("live report written (serve --json-dir)", False, "no report in %s; see %s" % (
            rel(reports), rel(serve["log"])))
        res.summary("no live report; " + ("library: %d calls committed, %d challenges opened" % (
            lib["committed"], lib["opened"]) if lib else "no commit-mode exit line from the library"))
        return
    if len(files) > 1:
        res.note("%d live reports (streams or segments): %s; the first is judged" % (
            len(files), ", ".join(os.path.basename(f) for f in files)))
    v = summarize(js)
    res.check("the stream is a commit-mode stream (the verifier's hello chose the mode)", v.get("mode") == "commit",
              "stream header mode: %s" % v.get("mode"))
    verdict_check(res, "live verdict (serve --commit --weights)", v)
    bad = [k for k in ("gaps", "missing", "mismatched", "integrity_errors") if v.get(k)]
    res.check("challenged calls: at least one, every one opened and verified, nothing missing",
              (v.get("sampled") or 0) > 0 and v.get("verified") == v.get("sampled") and not bad,
              "%s challenged, %s verified of %s calls%s" % (
                  v.get("sampled"), v.get("verified"), v.get("calls"),
                  "; " + ", ".join("%s %s" % (v[k], k.replace("_", " ")) for k in bad) if bad else
                  "; no gaps, missing, mismatched or integrity errors"))
    if a:
        res.check("ledger calls = F.linear calls", v.get("calls") == a["gemm_calls"],
                  "ledger %s, model %s" % (v.get("calls"), a["gemm_calls"]))
    captures = sorted(glob.glob(os.path.join(caps, "*.mma")))
    if captures:
        o = verify(ctx, "commit-mode", "offline", captures, timeout=dl.budget(10), weights=weights,
                   extra=["--challenge-key", challenge] + SERVE_POLICY)
        res.check("the saved capture checked offline (check --challenge-key --weights): PASS, the same challenges",
                  o.get("verdict") == "pass" and o.get("sampled") == v.get("sampled")
                  and o.get("verified") == v.get("verified"),
                  "%s; live: %s challenged, %s verified" % (verdict_line(o), v.get("sampled"), v.get("verified")))
    else:
        o = {}
        res.check("the stream saved (serve --capture-dir)", False, "no capture in " + rel(caps))

    # Recorded, not judged: the wall times, the library's own counts.
    rows = []
    for label, w in (("without the library", p), ("commit mode (serve --commit)", a)):
        if w:
            rows.append([label, "%.3f" % w["prefill_s"], "%.3f" % w["decode_s"], w["gemm_calls"],
                         w["logits_sha256"][:16]])
    if a and p:
        rows.append(["commit mode / without", "x%.2f" % (a["prefill_s"] / max(p["prefill_s"], 1e-9)),
                     "x%.2f" % (a["decode_s"] / max(p["decode_s"], 1e-9)), "", ""])
    res.table("Eager prefill 256 + decode 16 at batch 1 (wall time in the workload; during the run under the "
              "library the verifier recomputes on the same machine)",
              ["run", "prefill s", "decode s", "GEMM calls", "logits sha256"], rows)
    res.table("The verifier's reports", ["", "calls", "challenged", "verified", "gaps", "no session",
                                         "uncommitted", "verdict"],
              [[label, x.get("calls"), x.get("sampled"), x.get("verified"), x.get("gaps"),
                x.get("no_session_not_audited"), x.get("uncommitted"), str(x.get("verdict", "-")).upper()]
               for label, x in (("live (serve --commit)", v), ("offline (check --challenge-key)", o)) if x])
    if lib and lib.get("leaf_mismatches") is not None:
        # The library hashes each call's vectors on the GPU (mmaudit_commit_leaves) and
        # checks one vector per operand against its own hash: on a real GPU none differs.
        res.check("the GPU's leaf hashes agree with the library's check of one vector per operand",
                  lib["leaf_mismatches"] == 0 and lib["gpu_hashed"] > 0,
                  "%d calls hashed on the GPU, %d operands disagreed" % (lib["gpu_hashed"], lib["leaf_mismatches"]))
    if lib:
        res.table("The library's exit line (MMAUDIT_LOG=info)",
                  ["calls", "committed", "of them op(A) a held tensor bound by its address (not copied)",
                   "hashed on the GPU", "kept in GPU memory", "operands whose GPU hashes disagreed",
                   "challenges opened", "answered 'not retained'", "kept calls dropped (MMAUDIT_RETAIN_MB)"],
                  [[lib["calls"], lib["committed"], lib["by_address"], lib.get("gpu_hashed"),
                    lib.get("in_gpu_memory"), lib.get("leaf_mismatches"), lib["opened"], lib["not_retained"],
                    lib["dropped"]]])
    else:
        res.note("no commit-mode exit line in the audited run's output (see %s)" % rel(run["log"]))
    wt = v.get("weights") or {}
    if wt:
        res.note("held weights: %s operands sent as references; %s of %s judged challenged calls matched a held "
                 "tensor" % (wt.get("referenced"), wt.get("matched"), wt.get("judged")))
    found.update(live=v, offline=o)
    found["serve"].update(reports=[rel(f) for f in files], captures=[rel(c) for c in captures])
    res.detail("commit_mode", found)
    timing = "prefill %.2f -> %.2f s, decode %.2f -> %.2f s" % (
        p["prefill_s"], a["prefill_s"], p["decode_s"], a["decode_s"]) if a and p else "no timing"
    res.summary("live %s, offline %s: %s calls, %s challenged, %s verified; library: %s committed (%s by address), "
                "%s opened; %s" % (str(v.get("verdict")).upper(), str(o.get("verdict", "-")).upper(), v.get("calls"),
                                   v.get("sampled"), v.get("verified"), lib["committed"] if lib else "-",
                                   lib["by_address"] if lib else "-", lib["opened"] if lib else "-", timing))


# --- jax -----------------------------------------------------------------------------

JAX_CUBLAS_FLAGS = "--xla_gpu_enable_triton_gemm=false --xla_gpu_enable_command_buffer= --xla_gpu_autotune_level=0"


def run_jax(ctx, res, dl, name, env, out):
    """Runs wl_jax.py; if XLA rejects a flag, drops it and runs once more."""
    run = run_child(ctx, "jax", name, workload(ctx, "wl_jax.py", "--result", out), env=env,
                    timeout=dl.budget(20, reserve=4))
    if run["rc"] != 0 and "XLA_FLAGS" in env:
        with open(run["log"], errors="replace") as f:
            bad = set(re.findall(r"--(xla_\w+)", "".join(l for l in f if "nknown flag" in l)))
        if bad:
            env = dict(env, XLA_FLAGS=" ".join(fl for fl in env["XLA_FLAGS"].split()
                                                 if fl.lstrip("-").split("=")[0] not in bad))
            res.note("%s: XLA does not know %s; ran again without" % (name, ", ".join(sorted(bad))))
            run = run_child(ctx, "jax", name + "-again", workload(ctx, "wl_jax.py", "--result", out), env=env,
                            timeout=dl.budget(20, reserve=4))
    return run, env


def step_jax(ctx, res, dl):
    if not python_has("jax"):
        res.skip("jax not installed")
        return
    common = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    rows = []
    for variant, flags in (("cublas", JAX_CUBLAS_FLAGS), ("default", None)):
        prefix = os.path.join(ctx.work, "jax-" + variant)
        extra = dict(common, **api_logs(prefix))
        if flags:
            extra["XLA_FLAGS"] = flags
        cap, out = prefix + ".mma", prefix + ".json"
        run, env = run_jax(ctx, res, dl, variant, audited_env(ctx, cap, FULL_RATES, extra), out)
        label = "XLA %s" % ("cuBLAS-only flags" if flags else "default flags")
        if not ran(res, run, label + ": jitted jnp.dot under the library"):
            continue
        j = read_json(out)
        v = verify(ctx, "jax", variant, cap, timeout=dl.budget(10))
        # The library writes nothing in a process that never reached a hooked GEMM.
        ledger = 0 if v.get("no_capture") else v.get("calls")
        cb, lt = cublas_log_counts(prefix + ".cublas.log"), lt_log_counts(prefix + ".cublaslt.log")
        hooked, _ = gemm_trace(cb, lt)
        traced = sum(hooked.values())
        if ledger == 0 and traced == 0:
            res.note("%s: gap, not audited: XLA computed %d jnp.dot executions without any cuBLAS or cuBLASLt "
                     "GEMM call (its own Triton or emitted kernels, or cuBLAS reached through CUDA graphs "
                     "built by XLA); the ledger is empty" % (label, j["executions"]))
        else:
            count_check(res, label + ": ledger calls = cuBLAS/cuBLASLt API log", ledger, prefix,
                        {"executions": j["executions"]})
            verdict_check(res, label + ": verifier at call rate 1.0", v)
        if flags:
            plain_out = prefix + "-plain.json"
            pr = run_child(ctx, "jax", variant + "-plain", workload(ctx, "wl_jax.py", "--result", plain_out),
                           env=plain_env(dict(common, XLA_FLAGS=env.get("XLA_FLAGS", ""))),
                           timeout=dl.budget(20, reserve=2))
            if ran(res, pr, label + ": the same without the library"):
                p = read_json(plain_out)
                res.check(label + ": output bit-identical with and without the library", p["sha256"] == j["sha256"])
        res.detail(variant, {"workload": j, "verifier": v, "api_log": hooked, "xla_flags": env.get("XLA_FLAGS")})
        rows.append([label, j["executions"], ledger, traced, v.get("verdict", "?").upper()])
    res.table("JAX jnp.dot bf16 (jitted), call rate 1.0", ["XLA", "executions", "ledger calls",
                                                           "API log GEMM calls", "verdict"], rows)
    res.summary("; ".join("%s: %s calls, %s" % (r[0], r[2], r[4]) for r in rows))


# --- cupy ----------------------------------------------------------------------------


def step_cupy(ctx, res, dl):
    if not python_has("cupy"):
        res.skip("cupy not installed")
        return
    prefix = os.path.join(ctx.work, "cupy")
    cap, out, plain_out = prefix + ".mma", prefix + ".json", prefix + "-plain.json"
    run = run_child(ctx, "cupy", "audited", workload(ctx, "wl_cupy.py", "--result", out),
                    env=audited_env(ctx, cap, FULL_RATES, api_logs(prefix)), timeout=dl.budget(12, reserve=4))
    plain = run_child(ctx, "cupy", "plain", workload(ctx, "wl_cupy.py", "--result", plain_out),
                      env=plain_env(), timeout=dl.budget(10, reserve=3))
    # `&`, not `and`: both runs get their check
    if not (ran(res, run, "cupy.matmul under the library") & ran(res, plain, "cupy.matmul without the library")):
        return
    c, p = read_json(out), read_json(plain_out)
    v = verify(ctx, "cupy", "matmul", cap, timeout=dl.budget(10))
    verdict_check(res, "verifier at call rate 1.0", v)
    ledger = 0 if v.get("no_capture") else v.get("calls")  # no file: no hooked GEMM was reached
    count_check(res, "ledger calls = cuBLAS API log", ledger, prefix, {"ops issued": c["issued"]})
    pops = {o["op"]: o for o in p["ops"]}
    differ = [o["op"] for o in c["ops"] if o.get("sha256") != pops.get(o["op"], {}).get("sha256")]
    res.check("outputs bit-identical with and without the library", not differ,
              ", ".join(differ) if differ else "%d ops" % len(c["ops"]))
    res.detail("cupy", {"workload": c, "verifier": v})
    res.summary("CuPy %s: %s" % (c.get("cupy"), verdict_line(v)))


# --- hook ----------------------------------------------------------------------------

# Knob of this step, read here and never passed on: MMAUDIT_GPU_CHECK_CUDA_LIB_DIR, a
# directory holding libcudart.so, libcublas.so and libcuda.so to link instead of the
# toolkit's (the simulated GPU's build/lib, to run the step without a GPU; the
# simulator's libcudart does not load libcuda by itself, as CUDA's does).


def cuda_libs():
    """Paths of libcudart and libcublas (major 13, else 12) as the programs would load
    them, or None."""
    override = os.environ.get("MMAUDIT_GPU_CHECK_CUDA_LIB_DIR")
    if override:
        paths = [os.path.join(override, n) for n in ("libcudart.so", "libcublas.so", "libcuda.so")]
        return paths if all(os.path.exists(p) for p in paths) else None
    dirs = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d]
    dirs += ["/usr/local/cuda/lib64", "/usr/lib/x86_64-linux-gnu", "/usr/lib64"]
    for major in (13, 12):
        found = []
        for name in ("libcudart.so.%d" % major, "libcublas.so.%d" % major):
            found += [os.path.join(d, name) for d in dirs if os.path.exists(os.path.join(d, name))][:1]
        if len(found) == 2:
            return found
    return None


def step_hook(ctx, res, dl):
    """The hook's host cost on real cuBLAS, without PyTorch: interposer/benches/hook_cost.c
    (cublasGemmEx, f32, 16 x 16 x 16, the stream synchronised every 256 calls outside
    the timed enqueue) without the library, at call rate 0 and at the default rates."""
    cc = shutil.which(os.environ.get("CC") or "cc") or shutil.which("gcc")
    libs = cuda_libs()
    if not cc or not libs:
        res.skip("no C compiler" if not cc else "libcudart and libcublas (12 or 13) not found")
        return
    exe = os.path.join(ctx.work, "hook_cost")
    build = run_child(ctx, "hook", "cc", [cc, "-std=c11", "-D_GNU_SOURCE", "-O2", "-I", SIM_INCLUDE,
                                          os.path.join(REPO, "interposer", "benches", "hook_cost.c")] + libs
                      + ["-Wl,--disable-new-dtags,-rpath," + ":".join(sorted({os.path.dirname(p) for p in libs})),
                         "-o", exe],
                      env=plain_env(), timeout=dl.budget(15, reserve=10))
    if not ran(res, build, "hook_cost.c built against " + ", ".join(libs)):
        return
    calls, rounds = 20000, 5
    configs = (("without the library", None), ("call rate 0", 0), ("default rates", None))
    enq = {name: [] for name, _ in configs}
    bg = {name: [] for name, _ in configs}
    last_capture = None
    for r in range(rounds):
        for i in range(len(configs)):
            name, rate = configs[(i + r) % len(configs)]
            if dl.left() < 8:
                res.note("time limit near: round %d, %s and the runs after it were not started" % (r + 1, name))
                break
            if name == "without the library":
                env = plain_env()
            else:
                last_capture = os.path.join(ctx.work, "hook-%d.mma" % r)
                env = audited_env(ctx, last_capture, {"CALL_RATE": rate} if rate is not None else None)
            run = run_child(ctx, "hook", "%s-%d" % (name.replace(" ", "-"), r), [exe, str(calls), "16", "16", "3", "256"],
                            env=env, timeout=dl.budget(15, reserve=5))
            if run["rc"] != 0:
                res.check("%s, round %d" % (name, r + 1), False, failure_text(run, "hook_cost"))
                continue
            with open(run["log"], errors="replace") as f:
                per = [float(x) for x in re.findall(r"^enqueue_ns ([0-9.]+)", f.read(), re.M)]
            if per:
                enq[name].append(statistics.median(per))
            b = background_line(run["log"])
            if b:
                bg[name].append(b[0])
    res.detail("enqueue_ns", enq)
    res.detail("background_ns_per_record", bg)
    base = median_spread(enq["without the library"])
    rows = []
    for name, _ in configs:
        s = median_spread(enq[name])
        b = median_spread(bg[name])
        rows.append([name, "-" if not s else "%.0f [%.0f - %.0f]" % s,
                     "-" if not (s and base) or name == configs[0][0] else "%+.0f" % (s[0] - base[0]),
                     "-" if not b else "%.0f [%.0f - %.0f]" % b])
    res.table("cublasGemmEx f32 16 x 16 x 16, %d calls per run (3 timed repeats, median), median [min - max] of "
              "%d alternating rounds" % (calls, rounds),
              ["configuration", "enqueue ns per call", "added ns per call", "background thread ns per ledger record"],
              rows)
    res.check("every run completed", all(len(enq[n]) == rounds for n, _ in configs),
              ", ".join("%s %d" % (n, len(enq[n])) for n, _ in configs))
    if last_capture and os.path.exists(last_capture) and dl.left() > 4:
        v = verify(ctx, "hook", "default", last_capture, timeout=dl.budget(10))
        verdict_check(res, "default rates: the last run's capture passes the verifier", v)
    res.summary("unsampled call %s ns, default rates %s ns more than without the library (enqueue, median)" % (
        rows[1][2], rows[2][2]))


# --- overhead ------------------------------------------------------------------------


def background_line(log_path):
    """(ns per ledger record, records over the channel) from the library's exit summary
    (MMAUDIT_LOG=info) in a run's log, or None when it is not there."""
    try:
        with open(log_path, errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    m = re.search(r"background thread: [0-9.]+ ms CPU, ([0-9]+) ns per ledger record "
                  r"\(([0-9]+) records, ([0-9]+) of them", text)
    return (int(m.group(1)), int(m.group(3))) if m else None



def step_overhead(ctx, res, dl):
    # rate0: every call hooked and ledgered, none sampled (the hook's own cost)
    modes = ["off", "rate0", "default", "full"]
    audited_modes = ("rate0", "default", "full")
    rounds = 3
    runs = {m: [] for m in modes}
    last_capture = {}
    reserve = 12  # for the two verifications at the end
    for r in range(rounds):
        order = modes[r:] + modes[:r]  # rotate, so that no mode always runs first
        for mode in order:
            if dl.left() - reserve < 8:
                res.note("time limit near: round %d, %s and the runs after it were not started" % (r + 1, mode))
                break
            out = os.path.join(ctx.work, "overhead-%s-%d.json" % (mode, r))
            cap = os.path.join(ctx.work, "overhead-%s-%d.mma" % (mode, r))
            args = ["bench", "--prefill", 2048, "--decode", 64, "--result", out]
            args += ["--profile"] if mode in ("default", "full") and r == rounds - 1 else []
            if mode == "off":
                env = plain_env()
            else:
                env = audited_env(ctx, cap, {"CALL_RATE": {"full": 1, "rate0": 0}[mode]}
                                  if mode != "default" else None)
                last_capture[mode] = cap
            run = run_child(ctx, "overhead", "%s-%d" % (mode, r), workload(ctx, "wl_llama.py", *args),
                            env=env, timeout=dl.budget(20, reserve=reserve))
            if run["rc"] == 0:
                result = read_json(out)
                if isinstance(result, dict) and mode != "off":
                    result["background"] = background_line(run["log"])
                runs[mode].append(result)
            else:
                res.check("overhead run %s, round %d" % (mode, r + 1), False, failure_text(run, "bench"))
    res.detail("runs", runs)

    def stat(mode, key):
        return median_spread([x.get(key) for x in runs[mode]])

    def cell(s, fmt):
        return "-" if not s else (fmt % s[0]) + " [" + (fmt % s[1]) + " - " + (fmt % s[2]) + "]"

    for m in audited_modes:
        for x in runs[m]:
            bg = x.get("background") if isinstance(x, dict) else None
            if bg:
                x["background_ns_per_record"] = bg[0]
    rows = []
    for key, label, fmt, higher_better in (("prefill_tok_s", "prefill tokens/s (batch 1 x 2048)", "%.0f", True),
                                           ("decode_tok_s", "decode tokens/s (batch 16)", "%.0f", True),
                                           ("tiny_gemm_host_us", "host us per 64x64 GEMM call", "%.2f", False),
                                           ("background_ns_per_record",
                                            "library background thread CPU ns per ledger record", "%.0f", False)):
        base = stat("off", key)
        row = [label] + [cell(stat(m, key), fmt) for m in modes]
        for m in audited_modes:
            s = stat(m, key)
            if base and s and base[0]:
                change = (s[0] - base[0]) / base[0] * 100
                row.append("%+.1f%%" % change if key != "tiny_gemm_host_us" else "%+.2f us" % (s[0] - base[0]))
            else:
                row.append("-")
        rows.append(row)
    res.table("Median [min - max] of %d alternating rounds" % rounds,
              ["metric", "without library", "call rate 0", "default rates", "call rate 1.0",
               "rate 0 vs without", "default vs without", "rate 1.0 vs without"], rows)
    grows = []
    for m in ("default", "full"):
        g = next((x.get("gather") for x in runs[m] if x.get("gather")), None)
        if not g:
            continue
        if "error" in g:
            res.note("%s: torch.profiler: %s" % (m, g["error"]))
            continue
        grows.append([m, g["gather_kernels"], "%.0f" % g["gather_us"],
                      "%.1f" % g["gather_us_median"] if g["gather_us_median"] is not None else "-",
                      "%.2f%%" % (100 * g["gather_share"]) if g["gather_share"] is not None else "-",
                      "%.0f" % g["kernel_us"]])
        if not g["gather_kernels"]:
            res.check("%s: gather kernels seen by torch.profiler" % m, None,
                      "none among %d kernels" % g["kernels"])
    if grows:
        res.table("GPU time of the gather kernels (torch.profiler, one prefill + 8 decode steps)",
                  ["rates", "gather kernels", "gather us", "median us each", "share of kernel time",
                   "all kernels us"], grows)
    for m in ("default", "full"):
        if m in last_capture and os.path.exists(last_capture[m]) and dl.left() > 5:
            v = verify(ctx, "overhead", m, last_capture[m], timeout=dl.budget(10))
            verdict_check(res, "%s: the measured run was audited (verifier)" % m, v)
    res.check("all %d runs completed" % (rounds * len(modes)), all(len(runs[m]) == rounds for m in modes),
              ", ".join("%s %d" % (m, len(runs[m])) for m in modes))
    res.summary("; ".join("%s: %s / %s / %s" % (r[0].split(" (")[0], r[5], r[6], r[7]) for r in rows))


# --- sanitizer -----------------------------------------------------------------------


def step_sanitizer(ctx, res, dl):
    tool = find_tool("compute-sanitizer")
    if not tool:
        res.skip("compute-sanitizer not installed")
        return
    cap, out = os.path.join(ctx.work, "sanitizer.mma"), os.path.join(ctx.work, "sanitizer.json")
    argv = [tool, "--tool", "memcheck", "--target-processes", "all", "--error-exitcode", "86",
            "--print-limit", "20"] + workload(ctx, "wl_ops.py", "--short", "--no-profiler", "--result", out)
    run = run_child(ctx, "sanitizer", "memcheck", argv, env=audited_env(ctx, cap, FULL_RATES),
                    timeout=dl.budget(28, reserve=6))
    with open(run["log"], errors="replace") as f:
        text = f.read()
    summary = re.findall(r"ERROR SUMMARY:\s*(\d+) error", text)
    if run["timed_out"]:
        res.check("memcheck finished", False, failure_text(run, "compute-sanitizer"))
        return
    errors = sum(int(n) for n in summary) if summary else None
    res.check("memcheck: no errors", errors == 0 and run["rc"] == 0,
              "ERROR SUMMARY %s error(s), exit %s" % (errors if errors is not None else "not printed", run["rc"]))
    w = read_json(out) or {}
    v = verify(ctx, "sanitizer", "memcheck", cap, timeout=dl.budget(10))
    verdict_check(res, "verifier on the memcheck run's capture", v)
    res.detail("sanitizer", {"errors": errors, "rc": run["rc"], "issued": w.get("issued"), "verifier": v})
    res.summary("%s memcheck errors; %s" % (errors, verdict_line(v)))


# --- ncu -----------------------------------------------------------------------------


def step_ncu(ctx, res, dl):
    tool = find_tool("ncu")
    if not tool:
        res.skip("ncu not installed")
        return
    cap = os.path.join(ctx.work, "ncu.mma")
    argv = [tool, "--clock-control", "none", "--target-processes", "all", "--kernel-name",
            "regex:mmaudit_gather", "--launch-count", "40", "--metrics", "gpu__time_duration.sum",
            "--csv"] + workload(ctx, "wl_llama.py", "gathers")
    run = run_child(ctx, "ncu", "ncu", argv, env=audited_env(ctx, cap, {"CALL_RATE": 1}),
                    timeout=dl.budget(22, reserve=2))
    if not ran(res, run, "ncu run"):
        return
    times = []
    with open(run["log"], errors="replace") as f:
        for line in f:
            if "mmaudit_gather" in line and "gpu__time_duration" in line:
                cols = [c.strip('"') for c in re.findall(r'"[^"]*"|[^,]+', line.strip())]
                try:
                    unit, value = cols[-2], float(cols[-1].replace(",", ""))
                except (IndexError, ValueError):
                    continue
                scale = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3}
                if unit in scale:
                    times.append(value * scale[unit])
    s = median_spread(times)
    if s:
        res.check("ncu timed the gather kernels", True,
                  "%d launches: median %.2f us, min %.2f, max %.2f" % (len(times), s[0], s[1], s[2]))
    else:
        res.check("ncu timed the gather kernels", None, "no gather kernel in ncu's output (see %s)" % rel(run["log"]))
    res.detail("ncu", {"gather_us": times})
    res.summary("%d gather kernels, median %s us" % (len(times), "%.2f" % s[0] if s else "-"))


STEPS = {
    "env": step_env, "commit": step_commit, "ops": step_ops, "llama": step_llama, "graphs": step_graphs,
    "faults": step_faults, "commit-mode": step_commit_mode, "jax": step_jax, "cupy": step_cupy,
    "hook": step_hook, "overhead": step_overhead, "sanitizer": step_sanitizer, "ncu": step_ncu,
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("step", choices=sorted(STEPS))
    ap.add_argument("--ctx", required=True)
    ap.add_argument("--deadline", type=float, required=True)
    args = ap.parse_args()
    ctx = Ctx.load(args.ctx)
    res = Result(ctx, args.step)
    install_termination(lambda: res.note("stopped at the step's time limit"))
    try:
        STEPS[args.step](ctx, res, Deadline(args.deadline))
    except Exception:
        res.d["error"] = traceback.format_exc()
        res.save()
        say(res.d["error"])
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

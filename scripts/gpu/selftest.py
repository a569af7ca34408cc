"""Checks of the GPU check that need no GPU, no PyTorch, nothing beyond the standard
library (run by scripts/gpu-check-selftest.sh).

Every module of scripts/gpu imports with torch, jax, cupy, numpy and safetensors
blocked (they must be imported inside functions); the safetensors writer's files read
back; the cuBLAS/cuBLASLt log parsers count sample lines; statuses and the markdown
report come out of sample results; the `commit` step's comparison fails on altered
outputs. Where `cc` exists, the `commit` step also runs end to end without a GPU: its
"real" runs pointed at the simulator (MMAUDIT_GPU_CHECK_LIBCUDA_DIR), then at a
stand-in libcuda.so.1 that finds no device, then at one that hangs. The `commit-mode`
step's parsing of serve's port line and the library's exit line, and its background
children, are tested on samples; where libmmaudit.so and mmaudit-verify are built
(target/release, $CARGO_TARGET_DIR/release or MMAUDIT_BIN_DIR), the step runs end to
end with tests/programs/llama_workload on the simulated GPU standing in for wl_llama.py.
"""

import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BLOCKED = ("torch", "jax", "jaxlib", "cupy", "numpy", "safetensors")


class BlockHeavyImports:
    """A meta-path finder that refuses the GPU packages, installed or not."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError("%s imported at module level (the self-test blocks it)" % name)
        return None


def main():
    sys.meta_path.insert(0, BlockHeavyImports())
    sys.path.insert(0, HERE)
    names = sorted(f[:-3] for f in os.listdir(HERE) if f.endswith(".py") and f != "selftest.py")
    for name in names:
        importlib.import_module(name)
    checks = ["import of %d modules without torch, jax, cupy, numpy, safetensors" % len(names)]

    import common
    import orchestrate
    import plan
    import safetensors_io

    # the hand-written safetensors format
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "t.safetensors")
        safetensors_io.write(path, [("a.weight", "BF16", (2, 3), bytes(range(12))),
                                    ("b", "F32", (1,), b"\0\0\x80\x3f")], {"format": "pt"})
        header, meta, start = safetensors_io.read_header(path)
        assert header["a.weight"] == {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 12]}, header
        assert header["b"]["data_offsets"] == [12, 16] and meta == {"format": "pt"}, header
        assert start % 8 == 0, start
        with open(path, "rb") as f:
            f.seek(start + 12)
            assert f.read() == b"\0\0\x80\x3f"
    checks.append("safetensors written and read back")

    # API log parsers
    with tempfile.TemporaryDirectory() as tmp:
        cb, lt = os.path.join(tmp, "cublas.log"), os.path.join(tmp, "lt.log")
        with open(cb, "w") as f:
            f.write("I! cuBLAS (v13.1) function cublasStatus_t cublasGemmEx(cublasHandle_t, cublasOperation_t) called:\n"
                    "i!  handle: type=cublasHandle_t; val=POINTER (IN HEX:0x0x1)\n"
                    "I! cuBLAS (v13.1) function cublasStatus_t cublasSetStream_v2(cublasHandle_t, cudaStream_t) called:\n"
                    "I! cuBLAS (v13.1) function cublasStatus_t cublasGemmEx(cublasHandle_t, cublasOperation_t) called:\n"
                    "I! cuBLAS (v13.1) function cublasStatus_t cublasSgemmEx(cublasHandle_t, cublasOperation_t) called:\n")
        with open(lt, "w") as f:
            f.write("[2026-11-04 10:00:00][cublasLt][42][Api][cublasLtMatmulDescCreate] matmulDesc=0x1\n"
                    "[2026-11-04 10:00:00][cublasLt][42][Api][cublasLtMatmul] A=0x1 Adesc=[type=R_16BF]\n"
                    "[2026-11-04 10:00:00][cublasLt][42][Trace][cublasLtMatmul] A=0x1\n")
        hooked, other = common.gemm_trace(common.cublas_log_counts(cb), common.lt_log_counts(lt))
        assert hooked == {"cublasGemmEx": 2, "cublasLtMatmul": 1}, hooked
        assert other == {"cublasSgemmEx": 1}, other
        assert common.cublas_log_counts(os.path.join(tmp, "absent")) is None
    checks.append("cuBLAS and cuBLASLt API log counts")

    # verifier report summary
    report = {"verdict": "fail", "streams": [{
        "verdict": "fail", "calls": 40, "sampled": 40, "verified": 39, "mismatched": 1,
        "graphs": {"eager": 40, "replayed": 0}, "header": {"call_rate_ppm": 1000000},
        "not_audited": {"captured": {"calls": 0, "flops": 0.0}, "gaps": {"calls": 2, "flops": 1.0,
                                                                         "share_of_calls": 0.05, "limit": 0.01}},
        "weights": {"tensors": {"lm_head.weight": 3}, "matched": 3, "judged": 3, "unmatched": 0},
        "failures": [{"kind": "mismatch", "call": "call 7", "message": "entry (0, 1) off"}]}]}
    s = common.summarize(report)
    assert s["verdict"] == "fail" and s["calls"] == 40 and s["failure_kinds"] == {"mismatch": 1}, s
    assert list(s["not_audited"]) == ["gaps"] and s["weights"]["tensors_used"] == 1, s
    line = common.verdict_line(s)
    assert line.startswith("FAIL: 40 calls") and "gaps 2" in line and "mismatch x1" in line, line
    checks.append("verifier report summary")

    # the plan, statuses and the report
    assert len({s.name for s in plan.STEPS}) == len(plan.STEPS)
    assert plan.total_limit(plan.STEPS) <= 480, plan.total_limit(plan.STEPS)
    assert [s.name for s in plan.select("ops")] == ["env", "ops"]
    ok, bad, unknown = ({"name": "a", "ok": v, "detail": ""} for v in (True, False, None))
    assert orchestrate.status_of(0, {"checks": [ok]}) == "pass"
    assert orchestrate.status_of(0, {"checks": [ok, bad]}) == "fail"
    assert orchestrate.status_of(0, {"checks": [ok, unknown]}) == "undetermined"
    assert orchestrate.status_of(124, {"checks": [ok]}) == "timeout"
    assert orchestrate.status_of(1, {"checks": [ok], "error": "Traceback"}) == "error"
    assert orchestrate.status_of(0, {"checks": [], "skipped": "jax not installed"}) == "skipped: jax not installed"
    assert orchestrate.status_of(0, None) == "error"
    entry = {"name": "ops", "title": "t", "checks_planned": "c", "limit_s": 55, "seconds": 12.0, "rc": 0,
             "status": "fail", "summary": "a | b", "checks": [ok, bad], "notes": ["n"], "error": None,
             "tables": [{"title": "T", "columns": ["x", "y"], "rows": [[1, None]]}], "details": {}}
    md = orchestrate.markdown({"date": "d", "command": "c", "seconds": 12, "verdict": "v", "machine": {}}, [entry])
    assert "| ops | fail | a \\| b | 12 / 55 s |" in md and "- **FAIL**: a" in md and "| 1 |  |" in md, md
    assert "ops" in orchestrate.summary_text([entry])
    assert orchestrate.version_text(130100, 10000) == "13.1.0" and orchestrate.version_text(13000, 1000) == "13.0"
    checks.append("plan, statuses and markdown report")

    checks += commit_comparison()
    checks += commit_end_to_end(orchestrate)
    checks += commit_mode_lines()
    checks += background_children()
    checks += commit_mode_end_to_end(orchestrate)
    checks += hook_end_to_end(orchestrate)

    for c in checks:
        print("  ok  " + c)
    print("gpu-check selftest: %d checks passed" % len(checks))


# --- the commit step -----------------------------------------------------------------


def alter(text, prefix, index=0, what="flip"):
    """text with the index-th line starting with `prefix` altered: its last character
    flipped, or (what="drop") the line removed."""
    lines, seen = text.split("\n"), -1
    for i, line in enumerate(lines):
        if line.startswith(prefix):
            seen += 1
            if seen == index:
                if what == "drop":
                    del lines[i]
                else:
                    lines[i] = line[:-1] + ("0" if line[-1] != "0" else "1")
                return "\n".join(lines)
    raise AssertionError("no line %d starting %r" % (index, prefix))


def check_named(checks, start):
    hits = [c for c in checks if c[0].startswith(start)]
    assert len(hits) == 1, (start, checks)
    return hits[0]


def commit_comparison():
    """commit_check on made-up outputs of simgpu_commit and commit_bench."""
    import commit_check as cc

    h = lambda i: "%064x" % i  # noqa: E731
    pinned = "".join("%02x" % (j * 7 & 255) for j in range(2053))
    sim_text = "\n".join(
        ["$ simgpu_commit-sim cuda/gather.ptx --no-fault", "LEAF 0 0 0 - " + h(1), "LEAF 0 0 1 0102 " + h(2),
         "PASS case 0: the guard after its output is untouched", "CASE 0 two vectors",
         "LEAF 1 0 0 %s %s" % (pinned, cc.PINNED_LEAF_2053), "CASE 1 2048 + 5 bytes j*7"]
        + ["TREELEAF %d %s" % (i, h(100 + i)) for i in range(cc.TREE_LEAVES)]
        + ["ROOT %d %s" % (n, r) for n, r in enumerate(cc.PINNED_ROOTS)]
        + ["PASS tree of 7 leaves: nothing written past the root", "SUMMARY simgpu_commit: 2 cases, 0 failed"])
    sim = cc.parse_program(sim_text)
    assert cc.program_ran(sim, 0)[0], cc.program_ran(sim, 0)
    assert cc.pinned_check(sim)[0], cc.pinned_check(sim)
    same, counts = cc.compare_programs(sim, cc.parse_program(sim_text))
    assert all(c[1] for c in same) and counts == {"LEAF": 3, "TREELEAF": cc.TREE_LEAVES, "ROOT": 8, "CASE": 2}, same
    identical = "every hash line identical"
    for prefix, index, what, says in (("LEAF 0 0 1", 0, "flip", "LEAF: 1 of 3 differ"),
                                      ("TREELEAF", 4000, "flip", "TREELEAF: 1 of 4097 differ"),
                                      ("ROOT", 7, "drop", "ROOT: 8 lines on the simulator, 7 on the GPU"),
                                      ("CASE", 1, "flip", "CASE: 1 of 2 differ")):
        got = cc.compare_programs(sim, cc.parse_program(alter(sim_text, prefix, index, what)))[0]
        name, ok, detail = check_named(got, identical)
        assert ok is False and says in detail, (prefix, detail)
    detail = check_named(cc.compare_programs(sim, cc.parse_program(alter(sim_text, "LEAF 0 0 1")))[0], identical)[2]
    assert "LEAF case 0 b 0 v 1 (2 bytes): simulator %s, GPU %s" % (h(2), h(2)[:-1] + "0") in detail, detail
    # a case that failed, a setup failure, a run cut short
    failed = cc.parse_program(sim_text.replace("PASS tree", "FAIL tree").replace("0 failed", "1 failed"))
    assert cc.program_ran(failed, 1)[0] is False and "first: FAIL tree" in cc.program_ran(failed, 1)[1]
    assert check_named(cc.compare_programs(sim, failed)[0], "the same")[1] is True
    setup = cc.parse_program("FAIL setup cuInit(0) returned 100 (line 870)\nSUMMARY setup failed\n")
    ok, detail = cc.program_ran(setup, 2)
    assert ok is False and "cuInit(0) returned 100" in detail, detail
    cut = cc.parse_program(sim_text.split("ROOT 3")[0])
    assert cc.program_ran(cut, -9)[0] is False
    assert check_named(cc.compare_programs(sim, cut)[0], identical)[1] is False
    assert check_named(cc.compare_programs(sim, cut)[0], "the same")[1] is False
    assert cc.pinned_check(cc.parse_program(alter(sim_text, "ROOT", 3)))[0] is False
    # commit_bench
    bench_text = ("DEVICE NVIDIA H200\nDRIVER 13000\nROOT contiguous 33554432 4096 4096 %s\n"
                  "ROOT strided 33554432 4096 4096 %s\nROOT contiguous 268435456 32768 4096 %s\n"
                  "TIME contiguous leaves 268435456 5 1.2500 1.2000 1.4000 214.7\n"
                  "TIME contiguous tree 32768 5 0.3000 0.2900 0.3100\nROOT strided 268435456 32768 4096 %s\n"
                  "TIME strided leaves 268435456 5 9.0000 8.9000 9.5000 29.8\n"
                  "TIME strided tree 32768 5 0.3000 0.2900 0.3100\n" % (h(5), h(6), h(7), h(8)))
    real_b = cc.parse_bench(bench_text)
    sim_b = cc.parse_bench("\n".join(l for l in bench_text.splitlines() if " 33554432 " in l))
    assert real_b["device"] == "NVIDIA H200" and real_b["leaves"]["strided"]["gb_s"] == 29.8, real_b
    assert real_b["tree"]["contiguous"]["leaves"] == 32768 and not real_b["fail"], real_b
    assert sorted(sim_b["roots"]) == ["contiguous 32 MiB", "strided 32 MiB"] and len(real_b["roots"]) == 4, sim_b
    ok, detail = cc.compare_bench(sim_b, real_b)
    assert ok and detail.startswith("contiguous 32 MiB, 4096 vectors of 4096 bf16; strided"), detail
    ok, detail = cc.compare_bench(sim_b, cc.parse_bench(alter(bench_text, "ROOT strided")))
    assert ok is False and "strided 32 MiB: simulator " + h(6) in detail, detail
    ok, detail = cc.compare_bench(sim_b, cc.parse_bench(alter(bench_text, "ROOT contiguous", what="drop")))
    assert ok is False and "no GPU root for contiguous 32 MiB" in detail, detail
    assert cc.compare_bench(cc.parse_bench(""), real_b)[0] is False
    # where the driver is; ldd; ptxas
    with tempfile.TemporaryDirectory() as tmp:
        for d in ("a", "b", "stubs", "sim"):
            os.makedirs(os.path.join(tmp, d))
            open(os.path.join(tmp, d, "libcuda.so.1"), "w").close()
        j = lambda d: os.path.join(tmp, d)  # noqa: E731
        ldconfig = ("\tlibcuda.so.1 (libc6,x86-64) => %s/libcuda.so.1\n\tlibcuda.so.1 (libc6) => /nowhere/libcuda.so.1\n"
                    "\tlibcudart.so.13 (libc6,x86-64) => %s/libcudart.so.13\n" % (j("b"), j("a")))
        got = cc.libcuda_dirs(":".join([j("sim"), j("stubs"), "", j("a")]), ldconfig, exclude=[j("sim")])
        assert got[:2] == [j("a"), j("b")] and j("sim") not in got and j("stubs") not in got, got
    paths = cc.ldd_paths("\tlinux-vdso.so.1 (0x1)\n\tlibcuda.so.1 => /usr/lib/x86_64-linux-gnu/libcuda.so.1 (0x2)\n"
                         "\tlibm.so.6 => not found\n")
    assert paths == {"libcuda.so.1": "/usr/lib/x86_64-linux-gnu/libcuda.so.1", "libm.so.6": None}, paths
    regs = cc.registers("ptxas info    : Compiling entry function 'mmaudit_commit_tree' for 'sm_90'\n"
                        "ptxas info    : Function properties for mmaudit_commit_tree\n"
                        "ptxas info    : Used 64 registers, used 1 barriers, 9216 bytes smem\n")
    assert regs == {"mmaudit_commit_tree": 64}, regs
    return ["commit step: comparison of outputs, altered hashes, lines and roots fail it"]


# Every driver entry point simgpu_commit.c and commit_bench.c call, as the simulator's
# cuda.h names them; a stand-in libcuda.so.1 defines each to fail (or hang) at cuInit.
FAKE_DRIVER = r"""
#include <stdlib.h>
#include <unistd.h>
int cuInit(unsigned flags) {
    (void)flags;
    if (getenv("FAKE_LIBCUDA_HANG"))
        for (;;)
            pause();
    return 100; /* CUDA_ERROR_NO_DEVICE */
}
int cuGetErrorName(int e, const char **s) { (void)e; *s = "CUDA_ERROR_NO_DEVICE"; return 0; }
#define NONE(f) int f(void) { return 100; }
NONE(cuCtxSetCurrent) NONE(cuCtxSynchronize) NONE(cuDevicePrimaryCtxRetain) NONE(cuLaunchKernel)
NONE(cuMemAlloc_v2) NONE(cuMemHostAlloc) NONE(cuMemHostGetDevicePointer_v2) NONE(cuMemcpyDtoD_v2)
NONE(cuMemcpyDtoH_v2) NONE(cuMemcpyHtoD_v2) NONE(cuModuleGetFunction) NONE(cuModuleLoadData)
NONE(cuStreamCreate) NONE(cuStreamSynchronize) NONE(cuDeviceGet) NONE(cuDeviceGetName)
NONE(cuDriverGetVersion) NONE(cuEventCreate) NONE(cuEventDestroy_v2) NONE(cuEventElapsedTime_v2)
NONE(cuEventRecord) NONE(cuMemsetD8_v2)
"""


def commit_end_to_end(orchestrate):
    """The commit step run by steps.py as orchestrate.py runs it, without a GPU."""
    cc_path = shutil.which(os.environ.get("CC") or "cc")
    if not cc_path or not shutil.which("flock"):
        print("  --  commit step end to end: skipped (no cc or flock)")
        return []
    import commit_check

    repo = os.path.dirname(os.path.dirname(HERE))
    with tempfile.TemporaryDirectory() as out:
        work, logs = os.path.join(out, "work"), os.path.join(out, "logs")
        for d in (work, logs, os.path.join(out, "steps")):
            os.makedirs(d)
        ctx = os.path.join(work, "ctx.json")
        with open(ctx, "w") as f:
            json.dump({"out": out, "work": work, "logs": logs, "lib": "/nonexistent/libmmaudit.so",
                       "verifier": "/nonexistent/mmaudit-verify", "key": "/nonexistent/audit.key",
                       "python": sys.executable}, f)
        sim_lib = os.path.join(work, "simgpu", "lib")
        subprocess.run(["bash", os.path.join(repo, "scripts", "simgpu.sh")], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, env=dict(os.environ, SIMGPU_BUILD_DIR=os.path.join(work, "simgpu")))
        fake = os.path.join(out, "fake")
        os.makedirs(fake)
        with open(os.path.join(fake, "fake.c"), "w") as f:
            f.write(FAKE_DRIVER)
        subprocess.run([cc_path, "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o", os.path.join(fake, "libcuda.so.1"),
                        os.path.join(fake, "fake.c")], check=True)

        def step(driver_dir, seconds, extra=None):
            env = {k: v for k, v in os.environ.items() if not k.startswith(("MMAUDIT_", "SIMGPU_"))}
            env.update({"MMAUDIT_GPU_CHECK_LIBCUDA_DIR": driver_dir, "MMAUDIT_GPU_CHECK_COMMIT_MIB": "8",
                        "PYTHONDONTWRITEBYTECODE": "1"}, **(extra or {}))
            t0 = time.time()
            run = subprocess.run(["timeout", "-k", "5", str(seconds), sys.executable, os.path.join(HERE, "steps.py"),
                                  "commit", "--ctx", ctx, "--deadline", "%.1f" % (t0 + seconds - 3)],
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            with open(os.path.join(out, "steps", "commit.json")) as f:
                r = json.load(f)
            r["_elapsed"], r["_rc"], r["_out"] = time.time() - t0, run.returncode, run.stdout
            return r

        def named(r, start):
            hits = [c for c in r["checks"] if c["name"].startswith(start)]
            assert len(hits) == 1, (start, r["_out"])
            return hits[0]

        # 1. The "real" runs on the simulator: everything agrees, but it is no GPU's pass.
        r = step(sim_lib, 25)
        assert r["_rc"] == 0 and orchestrate.status_of(0, r) == "undetermined", r["_out"]
        undetermined = [c["name"] for c in r["checks"] if c["ok"] is not True]
        assert undetermined == ["the real build loads the driver's libcuda.so.1"], r["_out"]
        for start in ("simulator: simgpu_commit", "real GPU: simgpu_commit", "simulator: the protocol's pinned",
                      "real GPU = simulator: the same", "real GPU = simulator: every hash line",
                      "real GPU = simulator: roots of commit_bench"):
            assert named(r, start)["ok"] is True, (start, r["_out"])
        assert "4097 TREELEAF" in named(r, "real GPU = simulator: every hash line")["detail"], r["_out"]
        assert [t["title"][:30] for t in r["tables"]] == ["mmaudit_commit_leaves on one l", "What ran"], r["tables"]
        entry = {"name": "commit", "title": "t", "checks_planned": "c", "limit_s": 25, "seconds": r["_elapsed"],
                 "rc": 0, "status": "undetermined", "summary": r["summary"], "checks": r["checks"],
                 "notes": r["notes"], "tables": r["tables"], "details": r["details"], "error": None}
        md = orchestrate.markdown({"date": "d", "command": "c", "seconds": 1, "verdict": "v", "machine": {}}, [entry])
        assert "| contiguous | 1024 x 4096 | 8 |" in md and "real GPU = simulator: every hash line" in md, md
        # ... and the same comparison on those two outputs, one hash altered, fails.
        texts = {}
        for side in ("sim", "real"):
            with open(os.path.join(logs, "commit", "simgpu_commit-%s.log" % side)) as f:
                texts[side] = f.read()
        sim, real = commit_check.parse_program(texts["sim"]), commit_check.parse_program(texts["real"])
        assert all(ok for _, ok, _ in commit_check.compare_programs(sim, real)[0])
        for prefix, index in (("TREELEAF", 2049), ("LEAF", 150), ("ROOT", 45)):
            altered = commit_check.parse_program(alter(texts["real"], prefix, index))
            name, ok, detail = check_named(commit_check.compare_programs(sim, altered)[0], "every hash line")
            assert ok is False and "%s: 1 of" % prefix in detail, detail
        print("  ok  commit step, real runs on the simulator: %.1f s, %s" % (r["_elapsed"], r["summary"]))

        # 2. A libcuda.so.1 that finds no device: the step fails, quickly.
        r = step(fake, 25)
        c = named(r, "real GPU: simgpu_commit")
        assert orchestrate.status_of(r["_rc"], r) == "fail" and c["ok"] is False and "cuInit" in c["detail"], r["_out"]
        assert r["_elapsed"] < 20, r["_elapsed"]
        assert "simgpu_commit on the real driver: exit 2: FAIL setup cuInit" in r["summary"], r["summary"]
        print("  ok  commit step, no device: fails in %.1f s: %s" % (r["_elapsed"], c["detail"]))

        # 3. A libcuda.so.1 whose cuInit never returns: killed at the step's deadline.
        r = step(fake, 12, {"FAKE_LIBCUDA_HANG": "1"})
        c = named(r, "real GPU: simgpu_commit")
        assert orchestrate.status_of(r["_rc"], r) == "fail" and "killed at its time limit" in c["detail"], r["_out"]
        assert r["_elapsed"] < 12, r["_elapsed"]
        print("  ok  commit step, hanging driver: fails in %.1f s: %s" % (r["_elapsed"], c["detail"][:100]))
    return ["commit step end to end without a GPU (simulator as the driver, no device, a hanging driver)"]


# --- the commit-mode step ------------------------------------------------------------

# The exit line of libmmaudit.so (MMAUDIT_LOG=info) after a commit-mode session, as
# interposer/src/stream/sink.rs writes it.
COMMIT_EXIT = ('mmaudit: stream to tcp://127.0.0.1:40213 finished: 493 calls, 0 samples, 3 gap calls '
               '(0 for backpressure), 0 operands sent as references, 480 commitments, 52 openings, '
               '1234567 bytes; commit mode: 480 calls committed (436 with op(A) found to be a held tensor by its '
               'spot rows, not copied; 470 hashed on the GPU, 465 kept in GPU memory, 2 operands whose GPU hashes '
               'disagreed with the '
               'host\'s and were hashed again on the host), 52 challenges opened, 0 answered "not retained", '
               '0 kept calls dropped for MMAUDIT_RETAIN_MB')


def commit_mode_lines():
    """The port line of `serve` and the library's commit-mode exit line."""
    import common

    line = "mmaudit-verify serve: listening on 127.0.0.1:40213 (key id 0123456789abcdef)\n"
    assert common.serve_address("mmaudit-verify serve: hello table: 42 tensors\n" + line) == "127.0.0.1:40213"
    assert common.serve_address(line.replace("127.0.0.1", "[::1]")) == "[::1]:40213"
    # written in pieces: an address is taken only from the whole line
    assert common.serve_address("mmaudit-verify serve: listening on 127.0.0.1:402") is None
    assert common.serve_address("") is None
    got = common.commit_exit_line("mmaudit: started\n" + COMMIT_EXIT + "\n")
    assert got == {"committed": 480, "by_address": 436, "opened": 52, "not_retained": 0, "dropped": 0,
                   "calls": 493, "gpu_hashed": 470, "in_gpu_memory": 465, "leaf_mismatches": 2}, got
    # a library from before calls were kept in GPU memory
    older = common.commit_exit_line(COMMIT_EXIT.replace(" 465 kept in GPU memory,", ""))
    assert (older["in_gpu_memory"], older["leaf_mismatches"]) == (None, 2), older
    # a library from before the leaf hashes were computed on the GPU
    old = COMMIT_EXIT.replace("; 470 hashed on the GPU, 465 kept in GPU memory, 2 operands whose GPU hashes "
                              "disagreed with the host's and were hashed again on the host", "")
    assert common.commit_exit_line(old)["leaf_mismatches"] is None
    # the wording of the parenthesis may change; the counts stay where they are
    other = COMMIT_EXIT.replace("found to be a held tensor by its spot rows, not copied", "bound by its address")
    assert common.commit_exit_line(other)["by_address"] == 436
    assert common.commit_exit_line(COMMIT_EXIT.split("; commit mode")[0]) is None  # a sampling-mode session
    return ["commit-mode step: serve's port line and the library's exit line parsed"]


# A child that prints its port line in two writes, starts a grandchild in its process
# group and, unless told to ignore it, exits 0 on SIGTERM.
CHILD = r"""
import os, signal, subprocess, sys, time
g = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
with open(sys.argv[1], "w") as f:
    f.write(str(g.pid))
if sys.argv[2] == "ignore":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
sys.stderr.write("mmaudit-verify serve: listening on 127.0.0.1:")
sys.stderr.flush()
time.sleep(0.3)
sys.stderr.write("5 (key id 1)\n")
sys.stderr.flush()
time.sleep(60)
"""


def background_children():
    """start_child, wait_output and stop_child: a child and what it started in its
    process group are gone after stop_child, stopped by SIGTERM or killed."""
    import common

    with tempfile.TemporaryDirectory() as tmp:
        ctx = common.Ctx({"out": tmp, "work": tmp, "logs": os.path.join(tmp, "logs"), "lib": "", "verifier": "",
                          "key": "", "python": sys.executable})
        for mode, rc, killed in (("stop", 0, False), ("ignore", -9, True)):
            pidfile = os.path.join(tmp, mode + ".pid")
            child = common.start_child(ctx, "t", mode, [sys.executable, "-c", CHILD, pidfile, mode])
            assert common.wait_output(child, common.serve_address, 10) == "127.0.0.1:5", common.child_output(child)
            t0 = time.time()
            stopped = common.stop_child(child, grace=1.0)
            assert stopped["rc"] == rc and stopped["timed_out"] is killed, stopped
            assert time.time() - t0 < (5 if killed else 2), time.time() - t0
            with open(pidfile) as f:
                grandchild = int(f.read())
            gone = common.wait_until(lambda: not _alive(grandchild), 3)
            assert gone, "the grandchild %d survived stop_child" % grandchild
            assert child["p"] not in common._live
        # a child that exits before printing: wait_output returns at once
        child = common.start_child(ctx, "t", "exits", [sys.executable, "-c", "print('no port')"])
        t0 = time.time()
        assert common.wait_output(child, common.serve_address, 10) is None and time.time() - t0 < 5
        assert common.stop_child(child)["rc"] == 0
        child = common.start_child(ctx, "t", "absent", ["/nonexistent/mmaudit-verify"])
        assert child["p"] is None and common.stop_child(child)["rc"] == 127
    return ["start_child / wait_output / stop_child: SIGTERM, then SIGKILL, the whole process group"]


def _alive(pid):
    """True while pid exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


# Stands in for the GPU machine's python in the commit-mode step: `wl_llama.py
# make-model` and `wl_llama.py eager` run tests/programs/llama_workload on the simulated
# GPU instead (under the library when the step preloads it), and write what wl_llama.py
# writes. At 256 tokens, llama_workload's hidden size, the op(A) of its attention GEMMs
# has the type and row length of held weights: the library gathers such a call whole at
# its first use (docs/COMMIT.md, "The library"), so it is committed like any other.
FAKE_PYTHON = r"""#!%(python)s
import json, os, subprocess, sys, time
exe, lib = %(exe)r, %(lib)r
args = sys.argv[2:]
opt = lambda name: args[args.index(name) + 1]
env = dict(os.environ, LD_LIBRARY_PATH=lib)
if args[0] == "make-model":
    out = subprocess.run([exe, "--write-weights", opt("--weights")], env=env, stdout=subprocess.PIPE, text=True)
    print("wrote %%s: llama_workload's weights" %% opt("--weights"))
    sys.exit(out.returncode)
assert args[0] == "eager", args
if "libmmaudit" in os.environ.get("LD_PRELOAD", "") and os.environ.get("FAKE_AUDITED_EXIT"):
    print("crashed")
    sys.exit(int(os.environ["FAKE_AUDITED_EXIT"]))
t0 = time.time()
run = subprocess.run([exe, "--tokens", opt("--prefill"), "--generate", opt("--decode")], env=env,
                     stdout=subprocess.PIPE, text=True)
seconds = time.time() - t0
sys.stdout.write("".join(l + "\n" for l in run.stdout.splitlines() if not l.startswith("call ")))
field = lambda key: [l.split()[1] for l in run.stdout.splitlines() if l.startswith(key + " ")]
if run.returncode == 0:
    with open(opt("--result"), "w") as f:
        json.dump({"gemm_calls": int(field("calls")[0]), "prefill_s": seconds / 2, "decode_s": seconds / 2,
                   "logits_sha256": field("output-hash")[0], "first_tokens": field("next-token")[:4]}, f)
sys.exit(run.returncode)
"""


def binaries():
    """The directory of libmmaudit.so and mmaudit-verify, built (None when not)."""
    repo = os.path.dirname(os.path.dirname(HERE))
    for d in (os.environ.get("MMAUDIT_BIN_DIR"),
              os.path.join(os.environ["CARGO_TARGET_DIR"], "release") if os.environ.get("CARGO_TARGET_DIR") else None,
              os.path.join(repo, "target", "release")):
        if d and os.path.isfile(os.path.join(d, "libmmaudit.so")) and \
                os.access(os.path.join(d, "mmaudit-verify"), os.X_OK):
            return d
    return None


def step_sandbox(out, bins):
    """The folders, audit key and simulated GPU a step run by steps.py needs, under
    `out`: (work, logs, verifier, key, the simulator's lib folder)."""
    repo = os.path.dirname(os.path.dirname(HERE))
    work, logs = os.path.join(out, "work"), os.path.join(out, "logs")
    for d in (work, logs, os.path.join(out, "steps")):
        os.makedirs(d)
    verifier = os.path.join(bins, "mmaudit-verify")
    key = os.path.join(work, "audit.key")
    subprocess.run([verifier, "keygen", "--out", key], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    sim = subprocess.run(["bash", os.path.join(repo, "scripts", "simgpu.sh")], check=True, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True,
                         env=dict(os.environ, SIMGPU_BUILD_DIR=os.path.join(work, "simgpu")))
    return work, logs, verifier, key, sim.stdout.strip().splitlines()[-1]


def commit_mode_end_to_end(orchestrate):
    """The commit-mode step run by steps.py as orchestrate.py runs it, with the built
    library and verifier, the simulated GPU standing in for the GPU and
    tests/programs/llama_workload for wl_llama.py."""
    cc_path = shutil.which(os.environ.get("CC") or "cc")
    bins = binaries()
    if not cc_path or not shutil.which("flock") or not bins:
        print("  --  commit-mode step end to end: skipped (%s)" % (
            "no libmmaudit.so and mmaudit-verify in target/release (cargo build --release -p mmaudit-interposer "
            "-p mmaudit-verify)" if not bins else "no cc or flock"))
        return []
    repo = os.path.dirname(os.path.dirname(HERE))
    with tempfile.TemporaryDirectory() as out:
        work, logs, verifier, key, sim_lib = step_sandbox(out, bins)
        programs, exe = os.path.join(repo, "tests", "programs"), os.path.join(out, "llama_workload")
        subprocess.run([cc_path, "-std=c11", "-D_GNU_SOURCE", "-O1", "-I", os.path.join(repo, "tests", "simgpu",
                                                                                        "include"),
                        "-I", programs, os.path.join(programs, "llama_workload.c"), "-L", sim_lib, "-lcuda",
                        "-lcudart", "-lcublas", "-lcublasLt", "-lm", "-lpthread", "-o", exe], check=True)
        fake = os.path.join(out, "python")
        with open(fake, "w") as f:
            f.write(FAKE_PYTHON % {"python": sys.executable, "exe": exe, "lib": sim_lib})
        os.chmod(fake, 0o755)
        ctx = os.path.join(work, "ctx.json")
        with open(ctx, "w") as f:
            json.dump({"out": out, "work": work, "logs": logs, "lib": os.path.join(bins, "libmmaudit.so"),
                       "verifier": verifier, "key": key, "python": fake}, f)

        def step(extra=None):
            env = {k: v for k, v in os.environ.items() if not k.startswith(("MMAUDIT_", "SIMGPU_", "FAKE_"))}
            env.update(PYTHONDONTWRITEBYTECODE="1", **(extra or {}))
            env.pop("LD_PRELOAD", None)
            t0 = time.time()
            run = subprocess.run(["timeout", "-k", "5", str(seconds), sys.executable, os.path.join(HERE, "steps.py"),
                                  "commit-mode", "--ctx", ctx, "--deadline", "%.1f" % (t0 + seconds - 3)],
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            with open(os.path.join(out, "steps", "commit-mode.json")) as f:
                r = json.load(f)
            return r, orchestrate.status_of(run.returncode, r), run.stdout, time.time() - t0

        seconds = 35
        # The audited run crashes: the step fails, says why, and stops serve.
        r, status, text, _ = step({"FAKE_AUDITED_EXIT": "3"})
        failed = [c["name"] for c in r["checks"] if c["ok"] is False]
        assert status == "fail" and failed == [
            "run under the library in commit mode (TCP sink to serve --commit) exits 0",
            "live report written (serve --json-dir)"], text
        assert "exited 3: crashed" in r["checks"][1]["detail"], r["checks"]
        assert r["summary"] == "no live report; no commit-mode exit line from the library", r["summary"]
        assert not _alive_listener(r["details"]["commit_mode"]["serve"]["address"]), r["details"]
        # An honest run: every check passes.
        r, status, text, elapsed = step()
        assert status == "pass", "%s\n%s" % (status, text)
        d = r["details"]["commit_mode"]
        live, offline, lib = d["live"], d["offline"], d["exit_line"]
        assert live["mode"] == "commit" and live["sampled"] > 0 and offline["sampled"] == live["sampled"], d
        assert lib and lib["committed"] > 0 and lib["opened"] == live["sampled"], (lib, text)
        assert lib["by_address"] > 0, (lib, text)  # the verifier held llama_workload's weights
        # the calls gathered whole were hashed on the (simulated) GPU, none disagreeing
        assert lib["gpu_hashed"] > 0 and lib["leaf_mismatches"] == 0, (lib, text)
        assert any("leaf hashes agree" in c["name"] and c["ok"] for c in r["checks"]), r["checks"]
        assert [t["title"][:18] for t in r["tables"]] == ["Eager prefill 256 ", "The verifier's rep",
                                                          "The library's exit"], r["tables"]
        # serve was stopped: nothing of it is left listening
        assert not _alive_listener(d["serve"]["address"]), d["serve"]
        entry = {"name": "commit-mode", "title": "t", "checks_planned": "c", "limit_s": seconds, "seconds": elapsed,
                 "rc": 0, "status": status, "summary": r["summary"], "checks": r["checks"], "notes": r["notes"],
                 "tables": r["tables"], "details": r["details"], "error": None}
        md = orchestrate.markdown({"date": "d", "command": "c", "seconds": 1, "verdict": "v", "machine": {}}, [entry])
        assert "| live (serve --commit) |" in md and "| commit-mode | pass |" in md, md
        print("  ok  commit-mode step on the simulated GPU: %.1f s, %s" % (elapsed, r["summary"]))
    return ["commit-mode step end to end on the simulated GPU (llama_workload for wl_llama.py)"]


def _alive_listener(address):
    import socket

    host, port = address.rsplit(":", 1)
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=1).close()
        return True
    except OSError:
        return False



def hook_end_to_end(orchestrate):
    """The hook step run by steps.py with the built library and verifier, against the
    simulated GPU's libcudart, libcublas and libcuda (MMAUDIT_GPU_CHECK_CUDA_LIB_DIR)."""
    bins = binaries()
    if not shutil.which(os.environ.get("CC") or "cc") or not bins:
        print("  --  hook step end to end: skipped (no cc, or no libmmaudit.so and mmaudit-verify built)")
        return []
    with tempfile.TemporaryDirectory() as out:
        work, logs, verifier, key, sim_lib = step_sandbox(out, bins)
        ctx = os.path.join(work, "ctx.json")
        with open(ctx, "w") as f:
            json.dump({"out": out, "work": work, "logs": logs, "lib": os.path.join(bins, "libmmaudit.so"),
                       "verifier": verifier, "key": key, "python": sys.executable}, f)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MMAUDIT_", "SIMGPU_"))}
        env.pop("LD_PRELOAD", None)
        env.update(PYTHONDONTWRITEBYTECODE="1", MMAUDIT_GPU_CHECK_CUDA_LIB_DIR=sim_lib)
        seconds, t0 = 60, time.time()
        run = subprocess.run(["timeout", "-k", "5", str(seconds), sys.executable, os.path.join(HERE, "steps.py"),
                              "hook", "--ctx", ctx, "--deadline", "%.1f" % (t0 + seconds - 3)],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        with open(os.path.join(out, "steps", "hook.json")) as f:
            r = json.load(f)
        status = orchestrate.status_of(run.returncode, r)
        assert status == "pass", "%s\n%s" % (status, run.stdout)
        rows = r["tables"][0]["rows"]
        assert [row[0] for row in rows] == ["without the library", "call rate 0", "default rates"], rows
        assert all(row[1] != "-" for row in rows) and rows[1][2].startswith(("+", "-")), rows
        print("  ok  hook step on the simulated GPU: %.1f s, %s" % (time.time() - t0, r["summary"]))
    return ["hook step end to end on the simulated GPU (hook_cost.c against its libraries)"]


if __name__ == "__main__":
    main()

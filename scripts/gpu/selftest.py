"""Checks of the GPU check that need no GPU, no PyTorch, nothing beyond the standard
library (run by scripts/gpu-check-selftest.sh).

Every module of scripts/gpu imports with torch, jax, cupy, numpy and safetensors
blocked (they must be imported inside functions); the safetensors writer's files read
back; the cuBLAS/cuBLASLt log parsers count sample lines; statuses and the markdown
report come out of sample results.
"""

import importlib
import os
import sys
import tempfile

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

    for c in checks:
        print("  ok  " + c)
    print("gpu-check selftest: %d checks passed" % len(checks))


if __name__ == "__main__":
    main()

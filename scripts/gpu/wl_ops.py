"""PyTorch's GEMM entry points, each called once on fixed random inputs.

    wl_ops.py --result OUT.json [--short] [--no-profiler]

For every op it records the SHA-256 of the output's bytes (compared between runs with
and without the library) or the error it raised; it counts the ops issued (each one
cuBLAS or cuBLASLt call) and, independently, the GEMM operators torch.profiler saw.
TORCH_BLAS_PREFER_CUBLASLT is read by PyTorch from the environment.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

M, K, N, BATCH = 384, 512, 256, 4

# ATen operators that each make one cuBLAS/cuBLASLt GEMM call
PROFILER_GEMM_OPS = {"aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm", "aten::baddbmm",
                     "aten::baddbmm_", "aten::_scaled_mm", "aten::_int_mm"}


def float_ops(torch, label, dtype, seed, short):
    """(name, precision, fn) for the float GEMMs in one precision."""
    F = torch.nn.functional
    g = torch.Generator(device="cuda").manual_seed(seed)

    def rnd(*shape):
        return torch.randn(shape, generator=g, device="cuda", dtype=torch.float32).to(dtype)

    a, b, bt, bias, c = rnd(M, K), rnd(K, N), rnd(N, K), rnd(N), rnd(M, N)
    a3, b3, c3 = rnd(BATCH, M, K), rnd(BATCH, K, N), rnd(BATCH, M, N)
    x3, w = rnd(2, M // 2, K), rnd(N, K)
    linear = torch.nn.Linear(K, N, bias=True, device="cuda", dtype=dtype)
    with torch.no_grad():
        linear.weight.copy_(w)
        linear.bias.copy_(bias)

    def addmm_inplace():
        out = c.clone()
        return out.addmm_(a, b)  # beta = 1, C read and written in place

    ops = [
        ("mm", lambda: torch.mm(a, b)),
        ("addmm(bias)", lambda: torch.addmm(bias, a, b)),
        ("bmm", lambda: torch.bmm(a3, b3)),
        ("nn.Linear(bias), 3-D input", lambda: linear(x3)),
    ]
    if not short:
        ops += [
            ("mm(A, Bt.t())", lambda: torch.mm(a, bt.t())),
            ("addmm_ (beta=1, in place)", addmm_inplace),
            ("addmm(C, beta=0.5, alpha=2)", lambda: torch.addmm(c, a, b, beta=0.5, alpha=2.0)),
            ("baddbmm(alpha=0.5)", lambda: torch.baddbmm(c3, a3, b3, alpha=0.5)),
            ("F.linear (no bias)", lambda: F.linear(a, w)),
        ]
    return [(name, label, fn) for name, fn in ops]


def fp8_ops(torch, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)

    def rnd(*shape):
        return torch.randn(shape, generator=g, device="cuda", dtype=torch.float32)

    fp8 = torch.float8_e4m3fn
    a, bt = rnd(M, K).to(fp8), rnd(N, K).to(fp8)
    b = bt.t()  # column-major, as _scaled_mm requires
    one_a, one_b = torch.tensor(0.5, device="cuda"), torch.tensor(2.0, device="cuda")
    row_a = rnd(M, 1).abs() + 0.5
    row_b = rnd(1, N).abs() + 0.5

    def scaled(sa, sb, out_dtype):
        out = torch._scaled_mm(a, b, scale_a=sa, scale_b=sb, out_dtype=out_dtype)
        return out[0] if isinstance(out, tuple) else out

    return [
        ("_scaled_mm tensorwise -> bf16", "fp8", lambda: scaled(one_a, one_b, torch.bfloat16)),
        ("_scaled_mm tensorwise -> fp32", "fp8", lambda: scaled(one_a, one_b, torch.float32)),
        ("_scaled_mm rowwise -> bf16", "fp8", lambda: scaled(row_a, row_b, torch.bfloat16)),
    ]


def int8_ops(torch, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)
    a = torch.randint(-128, 128, (M, K), generator=g, device="cuda", dtype=torch.int8)
    bt = torch.randint(-128, 128, (N, K), generator=g, device="cuda", dtype=torch.int8)
    return [("_int_mm", "int8", lambda: torch._int_mm(a, bt.t()))]


def outermost_gemm_ops(events):
    """GEMM operators not called from inside another one (an implementation that
    composes one GEMM operator from another would otherwise count twice)."""
    n = 0
    for e in events:
        if e.name in PROFILER_GEMM_OPS:
            p = e.cpu_parent
            while p is not None and p.name not in PROFILER_GEMM_OPS:
                p = p.cpu_parent
            n += p is None
    return n


def sha256(torch, t):
    import hashlib

    return hashlib.sha256(t.detach().contiguous().cpu().view(torch.uint8).numpy().tobytes()).hexdigest()


def run(args):
    import torch

    if args.no_reduced_precision_reduction:
        torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False
        torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False
    records = []
    groups = [("fp32", torch.float32, "highest"), ("tf32", torch.float32, "high"),
              ("fp16", torch.float16, "highest"), ("bf16", torch.bfloat16, "highest")]
    if args.short:
        groups = [groups[0], groups[3]]
    ops = []
    for i, (label, dtype, precision) in enumerate(groups):
        try:
            ops += [(n, l, fn, precision) for n, l, fn in float_ops(torch, label, dtype, 100 + i, args.short)]
        except Exception as e:
            records.append({"op": "(inputs)", "precision": label, "error": "%s: %s" % (type(e).__name__, e)})
    if not args.short:
        for label, make in (("fp8", fp8_ops), ("int8", int8_ops)):
            try:
                ops += [(n, l, fn, "highest") for n, l, fn in make(torch, 200 + len(ops))]
            except Exception as e:
                records.append({"op": "(inputs)", "precision": label, "error": "%s: %s" % (type(e).__name__, e)})
    torch.cuda.synchronize()

    def run_all():
        issued = 0
        for name, label, fn, precision in ops:
            rec = {"op": name, "precision": label}
            torch.set_float32_matmul_precision(precision)
            try:
                with torch.no_grad():
                    out = fn()
                torch.cuda.synchronize()
                rec.update(shape=list(out.shape), dtype=str(out.dtype).replace("torch.", ""),
                           sha256=sha256(torch, out))
                issued += 1
            except Exception as e:
                rec["error"] = "%s: %s" % (type(e).__name__, str(e).splitlines()[0][:300] if str(e) else "")
            records.append(rec)
        return issued

    # torch.profiler (CPU activity only) counts the GEMM operators, independently of
    # the ops counted here and of the cuBLAS logs.
    profiler, prof = None, None
    if not args.no_profiler:
        try:
            from torch.profiler import ProfilerActivity, profile

            prof = profile(activities=[ProfilerActivity.CPU])
            prof.__enter__()
        except Exception as e:
            profiler, prof = {"error": "%s: %s" % (type(e).__name__, e)}, None
    issued = run_all()
    if prof is not None:
        try:
            prof.__exit__(None, None, None)
            counts = {e.key: e.count for e in prof.key_averages()
                      if "mm" in e.key or "linear" in e.key or "matmul" in e.key}
            profiler = {"counts": counts, "gemm_ops": outermost_gemm_ops(prof.events())}
        except Exception as e:
            profiler = {"error": "%s: %s" % (type(e).__name__, e)}
    m = torch.backends.cuda.matmul
    result = {
        "torch": torch.__version__,
        "preferred_blas": str(torch.backends.cuda.preferred_blas_library()),
        "TORCH_BLAS_PREFER_CUBLASLT": os.environ.get("TORCH_BLAS_PREFER_CUBLASLT"),
        "fp16_reduced_precision_reduction": getattr(m, "allow_fp16_reduced_precision_reduction", None),
        "bf16_reduced_precision_reduction": getattr(m, "allow_bf16_reduced_precision_reduction", None),
        "ops": records,
        "issued": issued,
        "profiler": profiler,
    }
    with open(args.result, "w") as f:
        json.dump(result, f, indent=1, sort_keys=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--result", required=True)
    ap.add_argument("--short", action="store_true", help="fp32 and bf16 mm, addmm, bmm, Linear only")
    ap.add_argument("--no-profiler", action="store_true")
    ap.add_argument("--no-reduced-precision-reduction", action="store_true",
                    help="disallow cuBLAS's bf16 and fp16 reduced-precision split-k reductions")
    run(ap.parse_args())


if __name__ == "__main__":
    main()

"""The steps of scripts/gpu-check.sh: name, time limit and what each one checks.

Standard library only: `--dry-run` prints this table on any machine.
"""

from collections import namedtuple

Step = namedtuple("Step", "name limit title checks")

# Limits are wall-clock seconds for the whole step (every process it starts, the
# verifier included). They add up to 8 minutes; typical runs take well under them.
STEPS = [
    Step(
        "env",
        30,
        "machine and versions",
        "GPU, driver, CUDA driver and runtime, cuBLAS/cuBLASLt, PyTorch, JAX, CuPy, "
        "safetensors, ncu and compute-sanitizer versions; libmmaudit.so loads into "
        "PyTorch and, without a key, forwards every call; mmaudit-verify runs",
    ),
    Step(
        "commit",
        25,
        "commitment kernels against the simulator",
        "tests/programs/simgpu_commit.c and scripts/gpu/commit_bench.c built with cc twice from "
        "the same source and headers, against the simulated GPU (scripts/simgpu.sh) and against "
        "the driver's libcuda.so.1, each run on the committed cuda/gather.ptx: both pass every "
        "case, and every leaf hash and root the real mmaudit_commit_leaves and "
        "mmaudit_commit_tree wrote is bit for bit the simulator's CPU twins' (which CI checks "
        "against the Rust reference); hashing throughput of a 256 MiB bf16 job (CUDA events)",
    ),
    Step(
        "ops",
        80,
        "PyTorch GEMM entry points",
        "torch.mm, addmm (bias; beta = 1 in place; alpha/beta), bmm, baddbmm, nn.Linear, "
        "F.linear in fp32 with TF32 off and on, fp16 and bf16; torch._scaled_mm fp8 "
        "tensorwise and rowwise; torch._int_mm; each with TORCH_BLAS_PREFER_CUBLASLT=0 "
        "and 1: the ledger's call count equals the cuBLAS/cuBLASLt API logs' "
        "(CUBLAS_LOGINFO_DBG, CUBLASLT_LOG_MASK=16) and torch.profiler's, outputs are "
        "bit-identical with and without the library; under PyTorch's defaults the verifier "
        "at call rate 1.0 passes with --allow-reduced-precision-reductions and, judged "
        "strictly, passes or fails only calls flagged as allowing those reductions (the "
        "flagged calls are counted); with the reductions disallowed it passes strictly",
    ),
    Step(
        "llama",
        50,
        "Llama-style model, eager",
        "4 layers, hidden 1024, 8/2 attention heads, MLP 2816, vocab 16384, random bf16 "
        "weights saved to safetensors; prefill 2048 + decode 128 at batch 1 and 16 at "
        "the default rates: the verifier passes with --weights --require-weights and "
        "names the tensors used",
    ),
    Step(
        "graphs",
        35,
        "the same decode under torch.cuda.graph",
        "capture and replay work under the library; logits of every replayed step are "
        "bit-identical to eager decode and to the same run without the library; the "
        "verifier's coverage (eager, capture records, replayed, replayed sampled and "
        "verified, not audited) is reported; a second run replays 128 steps back to "
        "back without reading tokens on the host (queued replays)",
    ),
    Step(
        "faults",
        20,
        "fault detection",
        "one weight tensor swapped in place halfway through decode (expected: FAIL, "
        "unknown weights, via --weights --require-weights); one row of the hidden state "
        "altered by a torch op between two layers (expected: PASS, not caught: the "
        "GEMMs are computed correctly from the altered activations, and element-wise "
        "work outside cuBLAS is not audited)",
    ),
    Step(
        "commit-mode",
        35,
        "commit mode under a live verifier",
        "mmaudit-verify serve --commit --challenge-key (a key of its own) --weights, the model's "
        "eager prefill 256 + decode 16 at batch 1 under the library with a TCP sink to it, then "
        "without the library: the audited run exits 0; logits bit-identical; the live report "
        "is a commit-mode stream, PASS, with calls challenged, every one opened and verified, "
        "no gap, missing or mismatched; the ledger has the model's F.linear calls; the saved "
        "capture passes check --challenge-key --weights with the same challenges; the wall "
        "times and the library's exit line (committed, bound by address, opened) recorded",
    ),
    Step(
        "jax",
        20,
        "JAX jnp.dot bf16, jitted",
        "XLA's default GEMM path and a cuBLAS-only path (Triton GEMM, command buffers "
        "and autotuning off): ledger calls against executions and the cuBLASLt API "
        "log, the verifier's verdict at call rate 1.0, outputs with and without the "
        "library; a GEMM path that bypasses cuBLAS is stated as a gap",
    ),
    Step(
        "cupy",
        15,
        "CuPy cupy.matmul",
        "fp32, fp16 and batched matmul: ledger calls against the cuBLAS API log, the "
        "verifier's verdict at call rate 1.0, outputs with and without the library",
    ),
    Step(
        "hook",
        30,
        "hook cost on real cuBLAS, without PyTorch",
        "interposer/benches/hook_cost.c built against the machine's libcudart and "
        "libcublas: 20000 cublasGemmEx calls (f32, 16 x 16 x 16, the stream synchronised "
        "every 256 calls outside the timed enqueue) without the library, at call rate 0 "
        "and at the default rates, 5 alternating rounds: the enqueue time per call and the "
        "library's background thread CPU per ledger record; the last audited capture verified",
    ),
    Step(
        "overhead",
        90,
        "overhead, side by side",
        "3 rounds alternating without the library, call rate 0 (every call hooked, none "
        "sampled), default rates and call rate 1.0: prefill tokens/s (batch 1 x 2048), decode tokens/s (batch 16, host sync per "
        "step), host time per tiny GEMM call (hook CPU cost), GPU time of the gather "
        "kernels (torch.profiler); median and spread; the audited runs verified",
    ),
    Step(
        "sanitizer",
        30,
        "compute-sanitizer memcheck",
        "a short audited PyTorch run (fp32 and bf16 ops, call rate 1.0) under "
        "compute-sanitizer --tool memcheck: no errors, and its capture passes",
    ),
    Step(
        "ncu",
        20,
        "gather kernel time, ncu",
        "Nsight Compute (--clock-control none) times the first 40 gather kernels of a "
        "short audited prefill at call rate 1.0",
    ),
]

BY_NAME = {s.name: s for s in STEPS}


def select(only):
    """The steps to run: all, or those named in `only` (comma-separated), in table
    order. `env` always runs: every report names the machine."""
    if not only:
        return list(STEPS)
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise ValueError(
            "unknown step(s): %s (steps: %s)"
            % (", ".join(unknown), ", ".join(s.name for s in STEPS))
        )
    return [s for s in STEPS if s.name in names or s.name == "env"]


def total_limit(steps):
    return sum(s.limit for s in steps)

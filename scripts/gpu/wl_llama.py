"""Llama-style workloads of the GPU check (run under the library or without it).

    wl_llama.py make-model --weights FILE
    wl_llama.py eager   --weights FILE --batch B --prefill T --decode N --result OUT.json
                        [--no-reduced-precision-reduction]
    wl_llama.py graph   --weights FILE --batches 1,16 --prefill T --decode N [--no-sync] --result OUT.json
    wl_llama.py fault   --weights FILE --kind swap|row --prefill T --decode N --result OUT.json
    wl_llama.py bench   --prefill T --decode N --result OUT.json [--profile]
    wl_llama.py gathers                  (a short prefill and decode, for ncu)

Each writes what it measured as JSON; GEMM calls are counted by the model itself
(one per F.linear).
"""

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import model as M  # noqa: E402


def write(path, value):
    with open(path, "w") as f:
        json.dump(value, f, indent=1, sort_keys=True)


def make_model(args):
    w = M.make_weights()
    writer = M.save_weights(args.weights, w)
    n = sum(t.numel() for t in w.values())
    print("wrote %s: %d tensors, %.1f M parameters, bf16 (%s)" % (args.weights, len(w), n / 1e6, writer))


def eager(args):
    import torch

    if args.no_reduced_precision_reduction:
        torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False
    w = M.load_weights(args.weights)
    m = M.Model(w, args.batch, args.prefill + args.decode)
    with torch.no_grad(), M.attention_backends():
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        m.prefill(M.prompt(args.batch, args.prefill))
        m.tok.tolist()
        t1 = time.perf_counter()
        hist = torch.empty(args.decode, args.batch, M.CONFIG["vocab"], device="cuda", dtype=torch.bfloat16)
        tokens = []
        for i in range(args.decode):
            m.decode_step()
            hist[i].copy_(m.logits)
            tokens.append(m.tok.tolist())  # the host reads every token, as a server does
        t2 = time.perf_counter()
    write(args.result, {
        "batch": args.batch, "prefill": args.prefill, "decode": args.decode,
        "gemm_calls": m.gemm_calls, "prefill_s": t1 - t0, "decode_s": t2 - t1,
        "logits_sha256": M.tensor_sha256(hist), "first_tokens": tokens[:4],
    })


def capture_decode(m):
    """A CUDA graph of one decode step (after PyTorch's recommended warm-up on a side
    stream); the model's state is left as it was."""
    import torch

    snap = m.snapshot()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            m.decode_step()
    torch.cuda.current_stream().wait_stream(side)
    m.restore(snap)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        m.decode_step()
    m.restore(snap)
    return g


def graph(args):
    import torch

    w = M.load_weights(args.weights)
    out = {"decode": args.decode, "prefill": args.prefill, "sync_each_step": not args.no_sync,
           "gemms_per_step": M.GEMMS_PER_TOKEN_STEP, "batches": {}}
    gemm_eager = gemm_captured = gemm_replayed = 0
    with torch.no_grad(), M.attention_backends():
        for b in [int(x) for x in args.batches.split(",")]:
            r = {}
            m = M.Model(w, b, args.prefill + args.decode)
            m.prefill(M.prompt(b, args.prefill))
            start = m.snapshot()
            shape = (args.decode, b, M.CONFIG["vocab"])
            eager_hist = torch.empty(shape, device="cuda", dtype=torch.bfloat16)
            t0 = time.perf_counter()
            for i in range(args.decode):
                m.decode_step()
                eager_hist[i].copy_(m.logits)
                if not args.no_sync:
                    m.tok.tolist()
            torch.cuda.synchronize()
            r["eager_s"] = time.perf_counter() - t0
            m.restore(start)
            before = m.gemm_calls
            g = capture_decode(m)
            captured = m.gemm_calls - before - 3 * M.GEMMS_PER_TOKEN_STEP
            gemm_eager += before + 3 * M.GEMMS_PER_TOKEN_STEP
            gemm_captured += captured
            graph_hist = torch.empty(shape, device="cuda", dtype=torch.bfloat16)
            t0 = time.perf_counter()
            for i in range(args.decode):
                g.replay()
                graph_hist[i].copy_(m.logits)
                if not args.no_sync:
                    m.tok.tolist()
            torch.cuda.synchronize()
            r["graph_s"] = time.perf_counter() - t0
            gemm_replayed += captured * args.decode
            same = torch.equal(eager_hist, graph_hist)
            r["eager_vs_graph_identical"] = same
            if not same:
                diff = (eager_hist.float() - graph_hist.float()).abs()
                r["max_abs_diff"] = diff.max().item()
                r["first_differing_step"] = int((diff.flatten(1).amax(1) > 0).nonzero()[0].item())
            r["gemms_captured"] = captured
            r["eager_logits_sha256"] = M.tensor_sha256(eager_hist)
            r["graph_logits_sha256"] = M.tensor_sha256(graph_hist)
            out["batches"][str(b)] = r
            del g
    out["gemm_calls"] = {"eager": gemm_eager, "captured": gemm_captured, "replayed": gemm_replayed}
    write(args.result, out)


def fault(args):
    import torch

    w = M.load_weights(args.weights)
    m = M.Model(w, 1, args.prefill + args.decode)
    at = args.decode // 2
    swapped = "model.layers.1.mlp.down_proj.weight"
    with torch.no_grad(), M.attention_backends():
        m.prefill(M.prompt(1, args.prefill))
        start = m.snapshot()
        hists = []
        for faulty in (False, True):
            m.restore(start)
            hist = torch.empty(args.decode, 1, M.CONFIG["vocab"], device="cuda", dtype=torch.bfloat16)
            for i in range(args.decode):
                if faulty and i == at:
                    if args.kind == "swap":
                        g = torch.Generator(device="cuda").manual_seed(99)
                        new = torch.randn(w[swapped].shape, generator=g, device="cuda") * 0.02
                        w[swapped].copy_(new.to(torch.bfloat16))
                    else:
                        m.fault_row_after_layer = 1
                m.decode_step()
                m.fault_row_after_layer = None
                hist[i].copy_(m.logits)
                m.tok.tolist()
            hists.append(hist)
    diff = (hists[0].float() - hists[1].float()).abs().flatten(1).amax(1)
    changed = (diff > 0).nonzero()
    write(args.result, {
        "kind": args.kind, "fault_at_step": at, "decode": args.decode, "prefill": args.prefill,
        "swapped_tensor": swapped if args.kind == "swap" else None,
        "calls_with_swapped_weight": args.decode - at if args.kind == "swap" else 0,
        "row_altered_after_layer": 1 if args.kind == "row" else None,
        "gemm_calls": m.gemm_calls,
        "outputs_changed": bool(changed.numel()),
        "first_changed_step": int(changed[0].item()) if changed.numel() else None,
        "max_logit_change": diff.max().item(),
    })


def bench(args):
    """Throughput and per-call host time; with --profile, the GPU time of the
    library's gather kernels as torch.profiler records it."""
    import torch

    res = {}
    w = M.make_weights()
    prefill_len, dec_batch, dec_prompt, dec_steps = args.prefill, 16, 128, args.decode
    with torch.no_grad(), M.attention_backends():
        m1 = M.Model(w, 1, prefill_len + 8)
        toks = M.prompt(1, prefill_len)
        for _ in range(2):
            m1.prefill(toks)
        torch.cuda.synchronize()
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            m1.prefill(toks)
            m1.tok.tolist()
            times.append(time.perf_counter() - t0)
        res["prefill_tok_s"] = prefill_len / statistics.median(times)

        m16 = M.Model(w, dec_batch, dec_prompt + dec_steps + 16)
        m16.prefill(M.prompt(dec_batch, dec_prompt))
        start = m16.snapshot()
        for _ in range(4):
            m16.decode_step()
        times = []
        for _ in range(3):
            m16.restore(start)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(dec_steps):
                m16.decode_step()
                m16.tok.tolist()
            times.append(time.perf_counter() - t0)
        res["decode_tok_s"] = dec_batch * dec_steps / statistics.median(times)

        a = torch.randn(64, 64, device="cuda", dtype=torch.float16)
        c = torch.empty_like(a)
        n = 2000
        for _ in range(200):
            torch.mm(a, a, out=c)
        torch.cuda.synchronize()
        per_call = []
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(n):
                torch.mm(a, a, out=c)
            per_call.append((time.perf_counter() - t0) / n * 1e6)
            torch.cuda.synchronize()
        res["tiny_gemm_host_us"] = statistics.median(per_call)

        if args.profile:
            res["gather"] = profile_gathers(m1, toks, m16)
    write(args.result, res)


def profile_gathers(m1, toks, m16):
    """Kernel time of the gather kernels (name mmaudit_gather*) against all kernels
    of one prefill and 8 decode steps."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    try:
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            m1.prefill(toks)
            for _ in range(8):
                m16.decode_step()
            torch.cuda.synchronize()
        kernels = [e for e in prof.events() if str(getattr(e, "device_type", "")).endswith("CUDA")]
        gathers = [e for e in kernels if "mmaudit_gather" in e.name]
        total = sum(e.time_range.elapsed_us() for e in kernels)
        gtime = [e.time_range.elapsed_us() for e in gathers]
        return {
            "kernels": len(kernels), "kernel_us": total, "gather_kernels": len(gathers),
            "gather_us": sum(gtime),
            "gather_us_median": statistics.median(gtime) if gtime else None,
            "gather_share": sum(gtime) / total if total else None,
        }
    except Exception as e:  # the profiler is a measuring aid: report, don't fail
        return {"error": "%s: %s" % (type(e).__name__, e)}


def gathers(args):
    import torch

    w = M.make_weights()
    with torch.no_grad(), M.attention_backends():
        m = M.Model(w, 1, 512 + 16)
        m.prefill(M.prompt(1, 512))
        for _ in range(8):
            m.decode_step()
        torch.cuda.synchronize()
    print("gemm calls:", m.gemm_calls)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["make-model", "eager", "graph", "fault", "bench", "gathers"])
    ap.add_argument("--weights")
    ap.add_argument("--result")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--prefill", type=int, default=2048)
    ap.add_argument("--decode", type=int, default=128)
    ap.add_argument("--no-sync", action="store_true")
    ap.add_argument("--kind", choices=["swap", "row"])
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--no-reduced-precision-reduction", action="store_true",
                    help="eager: disallow cuBLAS's bf16 reduced-precision split-k reductions")
    args = ap.parse_args()
    {"make-model": make_model, "eager": eager, "graph": graph, "fault": fault, "bench": bench,
     "gathers": gathers}[args.mode](args)


if __name__ == "__main__":
    main()

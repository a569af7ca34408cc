"""Runs the GPU check's steps, each under `timeout`, and writes the reports.

    orchestrate.py --dry-run [--only STEPS]
    orchestrate.py --out OUTDIR --lib LIBMMAUDIT --verifier MMAUDIT_VERIFY [--only STEPS]

Called by scripts/gpu-check.sh. Standard library only. Writes OUTDIR/results.json (every
step's checks, tables, notes and raw details), OUTDIR/GPU-RESULTS.md (the results
section of docs/GPU-RESULTS.md), OUTDIR/summary.txt (the table printed at the end),
OUTDIR/logs/STEP/*.log and OUTDIR/logs.tar.gz; captures, the model and other large
files stay in OUTDIR/work. Exit status 1 when a step failed, timed out or crashed.
"""

import argparse
import datetime
import os
import subprocess
import sys
import tarfile
import textwrap
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import plan  # noqa: E402
from common import HERE, REPO, read_json, write_json  # noqa: E402

BAD = ("fail", "timeout", "error")


def print_plan(steps, dry_run):
    total = plan.total_limit(steps)
    print("GPU check: %d steps; each runs as its own process group under `timeout`." % len(steps))
    print("%-11s %7s  %s" % ("step", "limit", "what it checks"))
    for s in steps:
        print("%-11s %5d s  %s" % (s.name, s.limit, s.title))
        if dry_run:
            for line in textwrap.wrap(s.checks, 76, break_on_hyphens=False):
                print("%21s%s" % ("", line))
    print("%-11s %5d s  (%d min %02d s; the machine's start and the build are not included)"
          % ("total", total, total // 60, total % 60))


def status_of(rc, r):
    if rc in (124, 137):
        return "timeout"
    if r is None:
        return "error"
    if r.get("skipped"):
        return "skipped: " + r["skipped"]
    oks = [c["ok"] for c in r.get("checks", [])]
    if any(ok is False for ok in oks):
        return "fail"
    if rc != 0 or r.get("error"):
        return "error"
    if not oks or any(ok is None for ok in oks):
        return "undetermined"
    return "pass"


def run_step(step, ctx_path, out):
    print("\n== %s: %s (limit %d s)" % (step.name, step.title, step.limit), flush=True)
    result_path = os.path.join(out, "steps", step.name + ".json")
    if os.path.exists(result_path):
        os.remove(result_path)
    t0 = time.time()
    # The runner budgets its children to end 3 s before `timeout` stops it.
    cmd = ["timeout", "-k", "5", str(step.limit), sys.executable, os.path.join(HERE, "steps.py"), step.name,
           "--ctx", ctx_path, "--deadline", "%.1f" % (t0 + step.limit - 3)]
    try:
        rc = subprocess.call(cmd, cwd=REPO, timeout=step.limit + 30)
    except subprocess.TimeoutExpired:
        rc = 137
    seconds = time.time() - t0
    r = read_json(result_path)
    entry = {"name": step.name, "title": step.title, "checks_planned": step.checks, "limit_s": step.limit,
             "seconds": round(seconds, 1), "rc": rc, "status": status_of(rc, r)}
    for k in ("summary", "checks", "notes", "tables", "details", "skipped", "error"):
        entry[k] = (r or {}).get(k)
    if entry["status"] == "timeout":
        entry["summary"] = "stopped at its time limit of %d s. %s" % (step.limit, entry["summary"] or "")
    elif entry["status"] == "error" and not entry["summary"]:
        last = (entry["error"] or "").strip().splitlines()
        entry["summary"] = last[-1] if last else "the step runner exited %d without a result" % rc
    elif not entry["summary"]:
        failed = [c for c in entry["checks"] or [] if c["ok"] is not True]
        if failed:
            entry["summary"] = "%s: %s" % (failed[0]["name"], failed[0]["detail"])
    print("-- %s: %s (%.0f s)" % (step.name, entry["status"].upper(), seconds), flush=True)
    return entry


# --- reports -------------------------------------------------------------------------


def version_text(n, scale):
    """130100 -> '13.1.0' (scale 10000: major, then minor*100 + patch); 13000 -> '13.0'."""
    if not isinstance(n, int):
        return n
    if scale == 10000:
        return "%d.%d.%d" % (n // 10000, n // 100 % 100, n % 100)
    return "%d.%d" % (n // 1000, n % 1000 // 10)


def machine_rows(m):
    pk = m.get("packages") or {}
    cupy = next((pk[k] for k in ("cupy-cuda13x", "cupy-cuda12x", "cupy") if k in pk), None)
    bins = m.get("binaries") or {}
    return [
        ["GPU", "%s (compute capability %s, %s, %s SMs)" % (m.get("gpu"), m.get("compute_capability"),
                                                          m.get("gpu_memory"), m.get("multiprocessors"))],
        ["driver", "%s (CUDA %s)" % (m.get("driver"), m.get("driver_cuda"))],
        ["CUDA runtime", "%s (PyTorch built for CUDA %s)" % (version_text(m.get("cudart"), 1000),
                                                             m.get("torch_cuda"))],
        ["cuBLAS / cuBLASLt", "%s / %s" % (m.get("cublas"), version_text(m.get("cublasLt"), 10000))],
        ["PyTorch", "%s (BLAS backend %s)" % (m.get("torch"), m.get("preferred_blas"))],
        ["JAX / jaxlib", "%s / %s" % (pk.get("jax", "not installed"), pk.get("jaxlib", "-"))],
        ["CuPy", cupy or "not installed"],
        ["safetensors", pk.get("safetensors", "not installed (written by hand)")],
        ["Python", m.get("python")],
        ["ncu", m.get("ncu")],
        ["compute-sanitizer", m.get("compute-sanitizer")],
        ["mmaudit commit", m.get("commit") or "unknown"],
        ["binaries (sha256)", "; ".join("%s %s" % (k, v["sha256"][:16]) for k, v in sorted(bins.items()))],
    ]


def cell(x):
    return str("" if x is None else x).replace("|", "\\|").replace("\n", " ")


def md_table(columns, rows):
    out = ["| " + " | ".join(cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return out


def markdown(meta, entries):
    m = meta.get("machine") or {}
    lines = ["## Results: %s, %s" % (m.get("gpu") or "GPU unknown", meta["date"]), "",
             "`%s`, %d s in all (%s)." % (meta["command"], meta["seconds"], meta["verdict"]), ""]
    lines += md_table(["", ""], machine_rows(m)) + [""]
    lines += md_table(["step", "status", "result", "time"],
                      [[e["name"], e["status"], e["summary"] or "", "%.0f / %d s" % (e["seconds"], e["limit_s"])]
                       for e in entries]) + [""]
    for e in entries:
        lines += ["### %s: %s" % (e["name"], e["title"]), "", "Status: **%s**. %s" % (e["status"], e["checks_planned"]), ""]
        mark = {True: "pass", False: "**FAIL**", None: "undetermined"}
        for c in e.get("checks") or []:
            lines.append("- %s: %s%s" % (mark[c["ok"]], c["name"], ": " + c["detail"] if c["detail"] else ""))
        if e.get("checks"):
            lines.append("")
        for t in e.get("tables") or []:
            lines += ["%s:" % t["title"], ""] + md_table(t["columns"], t["rows"]) + [""]
        for n in e.get("notes") or []:
            lines.append("- note: " + n)
        if e.get("notes"):
            lines.append("")
        if e.get("error"):
            lines += ["Runner error:", "", "```", e["error"].strip()[-1500:], "```", ""]
    return "\n".join(lines)


def summary_text(entries):
    lines = ["%-11s %-12s %-9s  %s" % ("step", "status", "time", "result")]
    for e in entries:
        status = e["status"] if len(e["status"]) <= 12 else "skipped"
        result = e["summary"] or (e["status"] if status != e["status"] else "")
        lines.append("%-11s %-12s %-9s  %s" % (e["name"], status.upper() if status in BAD else status,
                                               "%.0f/%d s" % (e["seconds"], e["limit_s"]), result[:160]))
    return "\n".join(lines)


# --- main ----------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--only", default="")
    ap.add_argument("--out")
    ap.add_argument("--lib")
    ap.add_argument("--verifier")
    ap.add_argument("--python", default=sys.executable, help="interpreter of the workloads (default: this one)")
    args = ap.parse_args()
    try:
        steps = plan.select(args.only)
    except ValueError as e:
        print("gpu-check: %s" % e, file=sys.stderr)
        return 2
    if args.dry_run:
        print_plan(steps, dry_run=True)
        return 0
    if not (args.out and args.lib and args.verifier):
        ap.error("--out, --lib and --verifier are required")

    out = os.path.abspath(args.out)
    work, logs = os.path.join(out, "work"), os.path.join(out, "logs")
    for d in (work, logs, os.path.join(out, "steps")):
        os.makedirs(d, exist_ok=True)
    key = os.path.join(work, "audit.key")
    if os.path.exists(key):
        os.remove(key)
    kg = subprocess.run([args.verifier, "keygen", "--out", key], capture_output=True, text=True)
    if kg.returncode != 0:
        print("gpu-check: mmaudit-verify keygen failed: %s" % kg.stderr.strip(), file=sys.stderr)
        return 2
    ctx_path = os.path.join(work, "ctx.json")
    write_json(ctx_path, {"out": out, "work": work, "logs": logs, "lib": os.path.abspath(args.lib),
                          "verifier": os.path.abspath(args.verifier), "key": key, "python": args.python})
    print_plan(steps, dry_run=False)

    t0 = time.time()
    entries = [run_step(s, ctx_path, out) for s in steps]
    env = next((e for e in entries if e["name"] == "env"), {})
    bad = [e["name"] for e in entries if e["status"] in BAD]
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "bash scripts/gpu-check.sh OUTDIR" + (" --only " + args.only if args.only else ""),
        "seconds": round(time.time() - t0),
        "verdict": "steps failed: " + ", ".join(bad) if bad else "no step failed",
        "machine": (env.get("details") or {}).get("machine"),
    }
    write_json(os.path.join(out, "results.json"), {"meta": meta, "steps": entries})
    with open(os.path.join(out, "GPU-RESULTS.md"), "w") as f:
        f.write(markdown(meta, entries) + "\n")
    table = summary_text(entries)
    with open(os.path.join(out, "summary.txt"), "w") as f:
        f.write(table + "\n")
    with tarfile.open(os.path.join(out, "logs.tar.gz"), "w:gz") as tar:
        tar.add(logs, arcname="logs")
    print("\n" + table)
    print("\n%s. Reports: %s/results.json, %s/GPU-RESULTS.md; logs: %s/logs.tar.gz" % (
        meta["verdict"][0].upper() + meta["verdict"][1:], out, out, out))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

"""Helpers shared by the GPU check's step runners. Standard library only.

A step runner (steps.py) starts the workloads (wl_*.py) as child processes, each in
its own process group with its own time limit, writes every child's output to
OUTDIR/logs/STEP/NAME.log, runs `mmaudit-verify check` on the captures and records
what it found as a list of checks in OUTDIR/steps/STEP.json.
"""

import collections
import hashlib
import json
import os
import re
import signal
import statistics
import subprocess
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
_OUT = None  # OUTDIR, once a context is loaded: paths in messages are relative to it


# --- context -------------------------------------------------------------------------


class Ctx:
    """Paths of one run, written by orchestrate.py into OUTDIR/work/ctx.json."""

    def __init__(self, d):
        self.out = d["out"]
        self.work = d["work"]
        self.logs = d["logs"]
        self.lib = d["lib"]
        self.verifier = d["verifier"]
        self.key = d["key"]
        self.python = d["python"]

    @staticmethod
    def load(path):
        global _OUT
        with open(path) as f:
            ctx = Ctx(json.load(f))
        _OUT = ctx.out
        return ctx


def write_json(path, value):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=1, sort_keys=True, default=str)
        f.write("\n")
    os.replace(tmp, path)


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


# --- child processes -----------------------------------------------------------------

_live = []  # Popen objects of running children (each the leader of its own group)


def _kill_children():
    for p in list(_live):
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except OSError:
            pass


def install_termination(on_term):
    """On SIGTERM/SIGINT (the step's `timeout`), kill every child's process group,
    call on_term() to save what is known, and exit 124."""

    def handler(signum, frame):
        _kill_children()
        try:
            on_term()
        finally:
            os._exit(124)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


class Deadline:
    """The step's end (epoch seconds); children get what is left, less a margin."""

    def __init__(self, end):
        self.end = end

    def left(self):
        return self.end - time.time()

    def budget(self, want, reserve=0.0):
        """Seconds a child may take: `want`, but never past the deadline less
        `reserve` (time kept for what must run after it)."""
        return max(1.0, min(want, self.left() - reserve))


def run_child(ctx, step, name, argv, env=None, timeout=60.0, cwd=None):
    """Runs argv with output to logs/STEP/NAME.log; returns a dict with rc, seconds,
    timed_out, log (path) and tail (last lines of output)."""
    log_path = _log_path(ctx, step, name)
    t0 = time.time()
    timed_out = False
    with open(log_path, "w") as log:
        body = _log_head(log, argv, env)
        try:
            p = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=cwd or REPO,
                start_new_session=True,
            )
        except OSError as e:
            log.write("cannot start: %s\n" % e)
            return {"rc": 127, "seconds": 0.0, "timed_out": False, "log": log_path,
                    "body": body, "tail": "cannot start: %s" % e}
        _live.append(p)
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
            rc = p.wait()
        finally:
            _live.remove(p)
        seconds = time.time() - t0
        if timed_out:
            log.write("\n[killed after %.0f s: time limit of this process]\n" % seconds)
    return {"rc": rc, "seconds": round(seconds, 2), "timed_out": timed_out,
            "log": log_path, "body": body, "tail": tail(log_path)}


def _log_path(ctx, step, name):
    log_dir = os.path.join(ctx.logs, step)
    os.makedirs(log_dir, exist_ok=True)
    return os.path.join(log_dir, name + ".log")


def _log_head(log, argv, env):
    """Writes the command line and its MMAUDIT_* (and similar) settings at the top of a
    log; returns the offset where the command's own output begins."""
    log.write("$ %s\n" % " ".join(_quote(a) for a in argv))
    for k in sorted(env or {}):
        if k.startswith(("MMAUDIT_", "LD_PRELOAD", "CUBLAS", "TORCH_", "XLA_")):
            log.write("  %s=%s\n" % (k, env[k]))
    log.flush()
    return log.tell()


def start_child(ctx, step, name, argv, env=None):
    """Starts argv in the background, in its own process group, with output to
    logs/STEP/NAME.log; returns a dict with p (the Popen), log, body and t0, or with p
    None when it could not start. stop_child ends it; until then the step's termination
    handler kills its group too."""
    log_path = _log_path(ctx, step, name)
    with open(log_path, "w") as log:
        body = _log_head(log, argv, env)
        try:
            p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env=env, cwd=REPO, start_new_session=True)
        except OSError as e:
            log.write("cannot start: %s\n" % e)
            return {"p": None, "log": log_path, "body": body, "t0": time.time(), "error": str(e)}
    _live.append(p)
    return {"p": p, "log": log_path, "body": body, "t0": time.time()}


def child_output(child):
    """What a child started by start_child has printed so far."""
    try:
        with open(child["log"], "rb") as f:
            f.seek(child["body"])
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def wait_output(child, parse, timeout):
    """Polls a started child's output until parse(text) returns something other than
    None (returned), the child exits or `timeout` seconds pass (None)."""
    end = time.time() + timeout
    while True:
        running = child["p"] is not None and child["p"].poll() is None
        found = parse(child_output(child))
        if found is not None or not running or time.time() >= end:
            return found
        time.sleep(0.05)


def wait_until(predicate, timeout, interval=0.1):
    """predicate()'s value once it is true, or its last value after `timeout` s."""
    end = time.time() + timeout
    while True:
        value = predicate()
        if value or time.time() >= end:
            return value
        time.sleep(interval)


def stop_child(child, grace=3.0):
    """Ends a child started by start_child: SIGTERM to its process group, SIGKILL to the
    group after `grace` seconds (and to what is left of the group either way). Returns
    a dict like run_child's; timed_out means it had to be killed."""
    p, killed = child["p"], False
    if p is None:
        return {"rc": 127, "seconds": 0.0, "timed_out": False, "log": child["log"], "body": child["body"],
                "tail": "cannot start: %s" % child.get("error")}
    try:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except OSError:
                pass
            try:
                p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                killed = True
        try:
            os.killpg(p.pid, signal.SIGKILL)  # the leader gone, what it left in its group
        except OSError:
            pass
        rc = p.wait()
    finally:
        if p in _live:
            _live.remove(p)
    seconds = time.time() - child["t0"]
    if killed:
        with open(child["log"], "a") as log:
            log.write("\n[killed: still running %.0f s after SIGTERM]\n" % grace)
    return {"rc": rc, "seconds": round(seconds, 2), "timed_out": killed, "log": child["log"],
            "body": child["body"], "tail": tail(child["log"])}


def run_capture(ctx, step, name, argv, env=None, timeout=30.0):
    """run_child for short commands whose output is wanted: also returns 'out', what
    the command printed (stdout and stderr)."""
    run = run_child(ctx, step, name, argv, env=env, timeout=timeout)
    try:
        with open(run["log"], "rb") as f:
            f.seek(run["body"])
            run["out"] = f.read().decode(errors="replace")
    except OSError:
        run["out"] = ""
    return run


def _quote(a):
    return a if re.match(r"^[\w@%+=:,./-]+$", a) else "'" + a.replace("'", "'\\''") + "'"


def tail(path, lines=12):
    try:
        with open(path, errors="replace") as f:
            return "".join(collections.deque(f, lines))
    except OSError:
        return ""


def failure_text(run, what):
    """One line saying why a child did not succeed."""
    if run["timed_out"]:
        return "%s: killed at its time limit (%.0f s); see %s" % (what, run["seconds"], rel(run["log"]))
    last = [l for l in run["tail"].strip().splitlines() if l.strip()]
    return "%s exited %s: %s (see %s)" % (what, run["rc"], last[-1][:200] if last else "no output", rel(run["log"]))


def rel(path):
    """A path in OUTDIR as OUTDIR/..., for messages."""
    if _OUT and os.path.abspath(path).startswith(_OUT + os.sep):
        return "OUTDIR/" + os.path.relpath(path, _OUT)
    return path


# --- environments --------------------------------------------------------------------

def plain_env(extra=None):
    """The environment without the library: no MMAUDIT_*, libmmaudit.so not preloaded."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMAUDIT_")}
    pre = [p for p in env.get("LD_PRELOAD", "").split(":") if p and "libmmaudit" not in p]
    if pre:
        env["LD_PRELOAD"] = ":".join(pre)
    else:
        env.pop("LD_PRELOAD", None)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def audited_env(ctx, capture, rates=None, extra=None):
    """The environment of an audited run: libmmaudit.so preloaded, the run's key, a
    file sink to `capture` (a capture left there by an earlier run is removed first),
    MMAUDIT_LOG=info (start and exit lines on stderr), and the given MMAUDIT_ settings
    without their prefix (CALL_RATE, ...)."""
    _remove(capture)
    return _preload_env(ctx, "file:" + capture, rates, extra)


def live_env(ctx, address, extra=None):
    """audited_env with a TCP sink to a listening `mmaudit-verify serve` at `address`
    (HOST:PORT): its hello sets the session's rates and mode, not MMAUDIT_*_RATE."""
    return _preload_env(ctx, "tcp://" + address, None, extra)


def _preload_env(ctx, sink, rates, extra):
    env = plain_env()
    env["LD_PRELOAD"] = ":".join([ctx.lib] + [p for p in env.get("LD_PRELOAD", "").split(":") if p])
    env["MMAUDIT_KEY_FILE"] = ctx.key
    env["MMAUDIT_SINK"] = sink
    env["MMAUDIT_LOG"] = "info"
    for k, v in (rates or {}).items():
        env["MMAUDIT_" + k] = str(v)
    env.update(extra or {})
    return env


def _remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def workload(ctx, script, *args):
    return [ctx.python, os.path.join(HERE, script)] + [str(a) for a in args]


# --- the verifier --------------------------------------------------------------------


def verify(ctx, step, name, captures, timeout, weights=None, require_weights=False, extra=()):
    """`mmaudit-verify check` on the captures; returns the summary of the first stream
    (see summarize) with rc, or {'verdict': 'error', ...} when it could not run."""
    if isinstance(captures, str):
        captures = [captures]
    missing = [c for c in captures if not os.path.exists(c)]
    if missing:
        # The library creates its file at the first hooked GEMM: no file, no such call.
        return {"verdict": "error", "no_capture": True, "calls": 0,
                "error": "no capture file (no hooked GEMM call was made): %s" % ", ".join(rel(m) for m in missing)}
    report = os.path.join(ctx.work, "%s-%s.report.json" % (step, name))
    _remove(report)
    argv = [ctx.verifier, "check"] + list(captures) + ["--key-file", ctx.key, "--json", report,
                                                       "--max-failures", "8"] + list(extra)
    if weights:
        argv += ["--weights", weights]
        if require_weights:
            argv.append("--require-weights")
    run = run_child(ctx, step, "verify-" + name, argv, env=plain_env(), timeout=timeout)
    js = read_json(report) if os.path.exists(report) else None
    if run["rc"] not in (0, 1) or js is None:
        return {"verdict": "error", "rc": run["rc"], "error": failure_text(run, "mmaudit-verify check")}
    s = summarize(js)
    s["rc"] = run["rc"]
    s["report"] = rel(report)
    return s


def summarize(js):
    """The numbers of one verifier report (JSON of `check --json`) worth keeping."""
    streams = js.get("streams") or [{}]
    st = streams[0]
    out = {"verdict": js.get("verdict", "?"), "streams": len(js.get("streams") or [])}
    for k in ("calls", "sampled", "verified", "mismatched", "missing", "gaps", "integrity_errors",
              "unverifiable", "rejected", "uncommitted", "unmodelled_not_audited", "no_session_not_audited",
              "captured_not_audited", "entries_checked", "worst_tolerance_ratio",
              "worst_precision_ratio", "worst_rel_error", "ended", "disabled"):
        if k in st:
            out[k] = st[k]
    if st.get("gap_reasons"):
        out["gap_reasons"] = st["gap_reasons"]
    if st.get("reduced_precision_reductions"):
        out["reduced_precision_calls"] = st["reduced_precision_reductions"].get("calls")
    if st.get("graphs"):
        out["graphs"] = st["graphs"]
    na = {}
    for cat, v in (st.get("not_audited") or {}).items():
        if v.get("calls") or v.get("flops"):
            na[cat] = {"calls": v.get("calls"), "share_of_calls": v.get("share_of_calls"),
                       "share_of_flops": v.get("share_of_flops"), "limit": v.get("limit")}
    if na:
        out["not_audited"] = na
    h = st.get("header") or {}
    if h:
        out["mode"] = h.get("mode")
        out["rates_ppm"] = [h.get("call_rate_ppm"), h.get("row_rate_ppm"), h.get("col_rate_ppm"),
                            h.get("batch_rate_ppm")]
        out["devices"] = h.get("devices")
    w = st.get("weights")
    if w:
        tensors = w.get("tensors") or {}
        out["weights"] = {k: w.get(k) for k in ("judged", "matched", "unmatched", "unmatched_differing",
                                                "referenced", "required")}
        out["weights"]["tensors_used"] = len(tensors)
        out["weights"]["tensors"] = tensors
    fails = st.get("failures") or []
    if fails:
        out["failure_kinds"] = dict(collections.Counter(f.get("kind") for f in fails))
        out["failures"] = ["%s: %s%s" % (f.get("kind"), f.get("message"),
                                         " [%s]" % f["call"] if f.get("call") else "") for f in fails[:5]]
        out["failures_not_shown"] = st.get("failures_not_shown", 0)
    if st.get("notices"):
        out["notices"] = [str(n)[:300] for n in st["notices"][:5]]
    return out


_LISTENING = re.compile(r"mmaudit-verify serve: listening on (\S+)[^\n]*\n")  # the whole line
_COMMIT_EXIT = re.compile(r"commit mode: (\d+) calls committed \((\d+) with op\(A\)[^)]*\), (\d+) challenges "
                          r"opened, (\d+) answered \"not retained\", (\d+) kept calls dropped")
_COMMIT_GPU = re.compile(r"; (\d+) hashed on the GPU, (?:(\d+) kept in GPU memory, )?(\d+) operands whose GPU "
                         r"hashes disagreed")
_STREAM_EXIT = re.compile(r"stream to .*? finished: (\d+) calls, (\d+) samples, (\d+) gap calls")


def serve_address(text):
    """HOST:PORT from `mmaudit-verify serve`'s 'listening on HOST:PORT (key id ...)'
    line on stderr (the port it bound with --listen ...:0), or None before it."""
    m = _LISTENING.search(text)
    return m.group(1) if m else None


def commit_exit_line(text):
    """The library's commit-mode counters from its exit line (MMAUDIT_LOG=info) in a
    run's output: committed, by_address (op(A) found to be a held tensor by its spot
    rows), opened, not_retained, dropped, gpu_hashed, in_gpu_memory and leaf_mismatches
    (calls whose vectors the GPU hashed, calls kept in the device retention ring,
    operands whose GPU hashes disagreed with the host's; None from a library that does
    not print them), and calls from the same line's 'stream to
    ... finished: N calls'; None when no commit-mode exit line is there (the library
    prints the commit part only when it committed a call)."""
    found = None
    for line in text.splitlines():
        m = _COMMIT_EXIT.search(line)
        if m:
            found = dict(zip(("committed", "by_address", "opened", "not_retained", "dropped"),
                             (int(x) for x in m.groups())))
            s = _STREAM_EXIT.search(line)
            found["calls"] = int(s.group(1)) if s else None
            g = _COMMIT_GPU.search(line)
            found["gpu_hashed"] = int(g.group(1)) if g else None
            found["in_gpu_memory"] = int(g.group(2)) if g and g.group(2) else None
            found["leaf_mismatches"] = int(g.group(3)) if g else None
    return found


def verdict_line(v):
    """A short line: PASS/FAIL and the main counts."""
    if v.get("verdict") == "error":
        return "verifier could not run: %s" % v.get("error")
    s = "%s: %s calls, %s sampled, %s verified" % (
        v.get("verdict", "?").upper(), v.get("calls"), v.get("sampled"), v.get("verified"))
    for k in ("mismatched", "missing", "gaps", "integrity_errors", "unverifiable"):
        if v.get(k):
            s += ", %s %s" % (v[k], k.replace("_", " "))
    if v.get("not_audited"):
        s += "; not audited: " + ", ".join(
            "%s %s (%.1f%% of calls)" % (c, d["calls"], 100 * (d["share_of_calls"] or 0))
            for c, d in v["not_audited"].items())
    if v.get("failure_kinds"):
        s += "; failures: " + ", ".join("%s x%d" % kv for kv in v["failure_kinds"].items())
    return s


# --- results -------------------------------------------------------------------------


class Result:
    """What a step found: checks (True pass, False fail, None undetermined), notes,
    tables and raw details. Saved after every change, so a step killed at its time
    limit still leaves what it had established."""

    def __init__(self, ctx, step):
        self.path = os.path.join(ctx.out, "steps", step + ".json")
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self.d = {"step": step, "checks": [], "notes": [], "tables": [], "details": {},
                  "skipped": None, "summary": ""}
        self.save()

    def check(self, name, ok, detail=""):
        self.d["checks"].append({"name": name, "ok": ok, "detail": detail})
        mark = {True: "ok  ", False: "FAIL", None: "??  "}[ok]
        say("  [%s] %s%s" % (mark, name, ": " + detail if detail else ""))
        self.save()

    def note(self, text):
        self.d["notes"].append(text)
        say("  note: " + text)
        self.save()

    def table(self, title, columns, rows):
        self.d["tables"].append({"title": title, "columns": columns, "rows": rows})
        self.save()

    def detail(self, key, value):
        self.d["details"][key] = value
        self.save()

    def skip(self, reason):
        self.d["skipped"] = reason
        say("  skipped: " + reason)
        self.save()

    def summary(self, text):
        self.d["summary"] = text
        self.save()

    def save(self):
        write_json(self.path, self.d)


def say(text):
    print(text, flush=True)


# --- small utilities -----------------------------------------------------------------


def median_spread(values):
    """(median, min, max) of the numbers present, or None."""
    v = [x for x in values if isinstance(x, (int, float))]
    if not v:
        return None
    return (statistics.median(v), min(v), max(v))


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def python_has(module):
    """Whether `module` can be imported by the run's python (found, not imported)."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


# cuBLAS entry points libmmaudit.so hooks (README, "What is recorded").
HOOKED_CUBLAS = {
    "cublasSgemm_v2", "cublasSgemm_v2_64", "cublasHgemm", "cublasSgemmStridedBatched",
    "cublasHgemmStridedBatched", "cublasGemmEx", "cublasGemmEx_64", "cublasGemmStridedBatchedEx",
    "cublasGemmStridedBatchedEx_64", "cublasGemmBatchedEx", "cublasGemmBatchedEx_64",
}

_CUBLAS_CALL = re.compile(r"^I! cuBLAS \(v[^)]*\) function .*?\b(cublas\w+)\(")
_LT_CALL = re.compile(r"\]\[Api\]\[(cublasLt\w+)\]")


def count_api_log(path, pattern):
    counts = collections.Counter()
    try:
        with open(path, errors="replace") as f:
            for line in f:
                m = pattern.search(line)
                if m:
                    counts[m.group(1)] += 1
    except OSError:
        return None
    return counts


def cublas_log_counts(path):
    """Calls per cuBLAS function in a CUBLAS_LOGINFO_DBG log, or None without a log.
    cuBLAS logs each API call as 'I! cuBLAS (vX) function ... NAME(...) called:'."""
    return count_api_log(path, _CUBLAS_CALL)


def lt_log_counts(path):
    """Calls per cuBLASLt function in a CUBLASLT_LOG_MASK=16 (API trace) log, or None;
    lines read '[time][cublasLt][pid][Api][NAME] ...'."""
    return count_api_log(path, _LT_CALL)


def gemm_trace(cublas_counts, lt_counts):
    """Splits API log counts into what the library should ledger (hooked cuBLAS GEMM
    entry points and cublasLtMatmul) and GEMM-like calls it does not hook."""
    hooked = {k: v for k, v in (cublas_counts or {}).items() if k in HOOKED_CUBLAS}
    if lt_counts and lt_counts.get("cublasLtMatmul"):
        hooked["cublasLtMatmul"] = lt_counts["cublasLtMatmul"]
    other = {k: v for k, v in (cublas_counts or {}).items()
             if k not in HOOKED_CUBLAS and re.search(r"gemm|gemv|matmul", k, re.I)}
    return hooked, other

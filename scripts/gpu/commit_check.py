"""The `commit` step's judgement, apart from running anything (standard library only).

The step (steps.py, step_commit) runs tests/programs/simgpu_commit.c and
scripts/gpu/commit_bench.c twice each, built from the same source and headers: on
the simulated GPU, whose CPU twins `cargo test -p mmaudit-tests --test simgpu commit`
checks against mmaudit_protocol::commit in CI, and on the real driver. The functions
here turn the two outputs into checks: both runs pass every case the program checks
itself, the same cases ran, and every hash line (CASE, LEAF, TREELEAF, ROOT) is the
same, line for line; the simulator's output also holds the protocol's pinned hashes,
so the reference itself is known good on the machine.
"""

import os
import re

# Lines of simgpu_commit that carry the kernels' results (tests/programs/simgpu_commit.c):
#   CASE <i> <name>                                  the case whose LEAF lines precede it
#   LEAF <case> <b> <v> <vector bytes, hex, or -> <leaf hash>
#   TREELEAF <i> <hash>                              leaf i of the tree input
#   ROOT <count> <root>                              mmaudit_commit_tree over the first count leaves
HASH_KINDS = ("LEAF", "TREELEAF", "ROOT", "CASE")

# The tree's input is this many leaves (TREE_LEAVES in simgpu_commit.c).
TREE_LEAVES = 4097

# tree_root of the first 0..7 leaves and the leaf hash of the 2048 + 5 bytes j*7, pinned
# in protocol/src/commit/tests.rs (and tests/e2e/simgpu.rs).
PINNED_ROOTS = [
    "f55abadb5f650f83e3856e52225a0e08f58f47d047a7961907b51f5062b0403d",
    "61187df22a46a9fc442b3f5a960468f407564dc49305c72c0c74acd984cfe955",
    "b6d81138eb1efceb0978d070566ccb0eb125fa395cc349a50726dfcff74a0603",
    "b39e60271232566cdf1b8896b0c5848032503995bda6d61bd2eb001b017c42d5",
    "dffef69f9d3903e2bc125a4520a3bdf8a4040c3c12ffdd23ac23dc0ca126855d",
    "fcc827a51e31ef6af51bab0eb4e6a5ddf133c0ba7ea8d4f3e28024acd826e343",
    "d04f5ef49329dab818a5b17c4bcaa40262321394020210c1368fbdcd67f92c68",
    "26e6d087c3949b1abb8b7915aa52463176894988f17442667541a4f7062089fa",
]
PINNED_LEAF_2053 = "bd754789b5630dad0a3f73856d5017b6a04078b41b6197de43dd8c7e44cc56f2"

_SUMMARY = re.compile(r"^SUMMARY \S+: (\d+) cases, (\d+) failed$")


def parse_program(text):
    """simgpu_commit's output: {'hash': {kind: [line, ...]}, 'pass': [name, ...],
    'fail': [line, ...], 'summary': (cases, failed) or None, 'setup': the 'FAIL setup'
    line or None}. Other lines (a log's header, stderr) are ignored."""
    out = {"hash": {k: [] for k in HASH_KINDS}, "pass": [], "fail": [], "summary": None, "setup": None}
    for line in text.splitlines():
        kind = line.split(" ", 1)[0]
        if kind in out["hash"]:
            out["hash"][kind].append(line)
        elif kind == "PASS":
            out["pass"].append(line[5:])
        elif kind == "FAIL":
            out["fail"].append(line)
            if line.startswith("FAIL setup") and out["setup"] is None:
                out["setup"] = line
        elif kind == "SUMMARY":
            m = _SUMMARY.match(line)
            out["summary"] = (int(m.group(1)), int(m.group(2))) if m else (None, None)
    return out


def _short(line):
    """A hash line for a message: LEAF lines without the vector's bytes."""
    f = line.split(" ")
    if f[0] == "LEAF" and len(f) == 6:
        return "LEAF case %s b %s v %s (%s bytes) %s" % (f[1], f[2], f[3], 0 if f[4] == "-" else len(f[4]) // 2,
                                                         f[5])
    return line if len(line) <= 120 else line[:117] + "..."


def _hash_of(line):
    return line.rsplit(" ", 1)[-1]


def program_ran(p, rc):
    """(ok, detail) for one run of simgpu_commit: exit 0, a summary of 0 failed, no FAIL."""
    if p["setup"]:
        return False, "exit %s: %s" % (rc, p["setup"])
    cases, failed = p["summary"] or (None, None)
    detail = "%d PASS, %d FAIL, summary %s, exit %s" % (
        len(p["pass"]), len(p["fail"]), "%s cases, %s failed" % (cases, failed) if p["summary"] else "missing", rc)
    ok = rc == 0 and p["summary"] is not None and failed == 0 and not p["fail"] and cases == len(p["pass"]) > 0
    if p["fail"]:
        detail += "; first: " + _short(p["fail"][0])
    return ok, detail


def compare_programs(sim, real):
    """Checks (name, ok, detail) that the real run printed what the simulator printed:
    the same cases (PASS and FAIL names) and every hash line identical, in order.
    `sim` and `real` are parse_program results. Also returns the counts per kind."""
    checks = []
    names = lambda p: p["pass"] + [l[5:] for l in p["fail"]]  # noqa: E731
    s_names, r_names = names(sim), names(real)
    if s_names == r_names:
        checks.append(("the same %d cases ran on both" % len(s_names), bool(s_names), ""))
    else:
        only_s = [n for n in s_names if n not in set(r_names)]
        only_r = [n for n in r_names if n not in set(s_names)]
        checks.append(("the same cases ran on both", False, "%d on the simulator, %d on the GPU; only on the "
                       "simulator: %s; only on the GPU: %s" % (len(s_names), len(r_names),
                                                             "; ".join(only_s[:3]) or "-", "; ".join(only_r[:3]) or "-")))
    counts, problems, first = {}, [], []
    for kind in HASH_KINDS:
        s, r = sim["hash"][kind], real["hash"][kind]
        counts[kind] = len(s)
        if not s:
            problems.append("the simulator printed no %s lines" % kind)
            continue
        differ = [i for i in range(min(len(s), len(r))) if s[i] != r[i]]
        if differ:
            problems.append("%s: %d of %d differ" % (kind, len(differ), len(s)))
            for i in differ[:2]:
                if kind == "CASE":
                    first.append("line %d: simulator '%s', GPU '%s'" % (i, _short(s[i]), _short(r[i])))
                else:
                    first.append("%s: simulator %s, GPU %s" % (_short(s[i]).rsplit(" ", 1)[0], _hash_of(s[i]),
                                                                _hash_of(r[i])))
        if len(s) != len(r):
            problems.append("%s: %d lines on the simulator, %d on the GPU" % (kind, len(s), len(r)))
    detail = ", ".join("%d %s" % (counts[k], k) for k in HASH_KINDS)
    if problems:
        checks.append(("every hash line identical (LEAF, TREELEAF, ROOT, CASE)", False,
                       "; ".join(problems) + (" (first: " + "; ".join(first[:3]) + ")" if first else "")))
    else:
        checks.append(("every hash line identical (LEAF, TREELEAF, ROOT, CASE)", True, detail + " lines, all the same"))
    return checks, counts


def pinned_check(sim):
    """(ok, detail): the simulator's output holds the protocol's pinned roots of 0..7
    leaves, the pinned hash of the 2053-byte vector and all TREE_LEAVES tree leaves."""
    roots = {}
    for line in sim["hash"]["ROOT"]:
        f = line.split(" ")
        if len(f) == 3:
            roots[f[1]] = f[2]
    wrong = [str(n) for n, want in enumerate(PINNED_ROOTS) if roots.get(str(n)) != want]
    leaf = any(_hash_of(l) == PINNED_LEAF_2053 and len(l.split(" ")[4]) == 2 * 2053 for l in sim["hash"]["LEAF"])
    ok = not wrong and leaf and len(sim["hash"]["TREELEAF"]) == TREE_LEAVES
    detail = "roots of 0..7 leaves %s; leaf hash of the 2053-byte vector %s; %d tree leaves" % (
        "as pinned" if not wrong else "NOT as pinned for " + ", ".join(wrong),
        "as pinned" if leaf else "missing or NOT as pinned", len(sim["hash"]["TREELEAF"]))
    return ok, detail


# --- commit_bench --------------------------------------------------------------------


def bench_key(layout, nbytes):
    return "%s %d MiB" % (layout, nbytes >> 20) if nbytes % (1 << 20) == 0 else "%s %d bytes" % (layout, nbytes)


def parse_bench(text):
    """commit_bench's output: {'device', 'driver', 'roots': {'LAYOUT N MiB': [vectors,
    len, root]}, 'leaves': {layout: {...}}, 'tree': {layout: {...}}, 'fail': [line, ...]}."""
    out = {"device": None, "driver": None, "roots": {}, "leaves": {}, "tree": {}, "fail": []}
    for line in text.splitlines():
        f = line.split(" ")
        try:
            if f[0] == "DEVICE":
                out["device"] = line[7:]
            elif f[0] == "DRIVER":
                out["driver"] = int(f[1])
            elif f[0] == "ROOT" and len(f) == 6:
                out["roots"][bench_key(f[1], int(f[2]))] = [int(f[3]), int(f[4]), f[5]]
            elif f[0] == "TIME" and len(f) >= 8 and f[2] == "leaves":
                out["leaves"][f[1]] = {"bytes": int(f[3]), "reps": int(f[4]), "ms_median": float(f[5]),
                                       "ms_min": float(f[6]), "ms_max": float(f[7]), "gb_s": float(f[8])}
            elif f[0] == "TIME" and len(f) >= 8 and f[2] == "tree":
                out["tree"][f[1]] = {"leaves": int(f[3]), "reps": int(f[4]), "ms_median": float(f[5]),
                                     "ms_min": float(f[6]), "ms_max": float(f[7])}
            elif f[0] == "FAIL":
                out["fail"].append(line)
        except (IndexError, ValueError):
            out["fail"].append("unreadable line: " + line[:120])
    return out


def compare_bench(sim, real):
    """(ok, detail): for every job the simulator printed a root of (layout and size),
    the real run printed the same vector count, length and root."""
    if not sim["roots"]:
        return False, "the simulator printed no root"
    differ, missing = [], []
    for key, (nv, length, root) in sorted(sim["roots"].items()):
        got = real["roots"].get(key)
        if got is None:
            missing.append(key)
        elif got != [nv, length, root]:
            differ.append("%s: simulator %s, GPU %s" % (key, root, got[2]))
    what = "; ".join("%s, %d vectors of %d bf16" % (k, v[0], v[1]) for k, v in sorted(sim["roots"].items()))
    if differ or missing:
        return False, what + ": " + "; ".join(differ + ["no GPU root for " + m for m in missing])
    return True, what + ": the same roots"


# --- where the driver is -------------------------------------------------------------

COMMON_DRIVER_DIRS = ["/usr/local/nvidia/lib64", "/usr/local/nvidia/lib", "/usr/lib/x86_64-linux-gnu",
                      "/usr/lib64", "/usr/lib/wsl/lib"]


def libcuda_dirs(ld_library_path, ldconfig_text, exclude=()):
    """Directories holding a libcuda.so.1, in the order the dynamic loader would look:
    LD_LIBRARY_PATH, then `ldconfig -p`'s cache, then common driver locations. Stub
    directories and `exclude` (the simulator's) are left out."""
    dirs = []

    def add(d):
        d = os.path.normpath(d)
        if d in dirs or "stubs" in d.split(os.sep) or any(os.path.normpath(x) == d for x in exclude):
            return
        if os.path.exists(os.path.join(d, "libcuda.so.1")):
            dirs.append(d)

    for d in (ld_library_path or "").split(":"):
        if d:
            add(d)
    for line in (ldconfig_text or "").splitlines():
        m = re.match(r"\s*libcuda\.so\.1 \(([^)]*)\) => (\S+)", line)
        if m and "64" in m.group(1):
            add(os.path.dirname(m.group(2)))
    for d in COMMON_DRIVER_DIRS:
        add(d)
    return dirs


def ldd_paths(text):
    """{soname: resolved path or None} from `ldd` output."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"\s*(\S+) => (not found|\S+)", line)
        if m:
            out[m.group(1)] = None if m.group(2) == "not found" else m.group(2)
    return out


def registers(ptxas_text):
    """{entry: registers} from `ptxas -v` output."""
    out, entry = {}, None
    for line in ptxas_text.splitlines():
        m = re.search(r"Compiling entry function '(\w+)'", line)
        if m:
            entry = m.group(1)
        m = re.search(r"Used (\d+) registers", line)
        if m and entry:
            out[entry] = int(m.group(1))
    return out

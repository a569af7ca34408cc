"""The ``mmaudit`` command: ``mmaudit run ... -- PROGRAM ARGS`` and ``mmaudit verify ...``."""

import argparse
import os
import sys

from . import __version__, library_path, verifier_path

RUN_EPILOG = """\
examples:
  mmaudit verify keygen --out audit.key
  mmaudit run --key-file audit.key --sink file:run.mma -- python serve.py
  mmaudit verify check run.mma --key-file audit.key
  mmaudit run --key-file audit.key --sink tcp://verifier:7150 -- python serve.py

The program's own exit status and signals are those of the command: mmaudit run
becomes the program (exec). Any MMAUDIT_* variable already in the environment is kept
unless an option here sets it; see the project's README for all of them.
"""


def _rate(text):
    """A rate as mmaudit-verify accepts it: 0.1, 10% or 100000ppm."""
    t = text.strip()
    try:
        if t.endswith("%"):
            value = float(t[:-1]) / 100
        elif t.endswith("ppm"):
            value = float(t[:-3]) / 1e6
        else:
            value = float(t)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a rate (0.1, 10%% or 100000ppm)" % text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError("%r is not between 0 and 1" % text)
    return repr(value)


def _parser():
    p = argparse.ArgumentParser(
        prog="mmaudit",
        description="Audit the GEMMs of an unmodified GPU program: run it under libmmaudit.so, "
        "then verify what it recorded.",
    )
    p.add_argument("--version", action="version", version="mmaudit %s" % __version__)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    run = sub.add_parser(
        "run",
        help="run a program with libmmaudit.so preloaded",
        description="Run PROGRAM with libmmaudit.so prepended to LD_PRELOAD and the "
        "audit configured by the options below.",
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--key-file", metavar="FILE",
                     help="the shared audit key (MMAUDIT_KEY_FILE); make one with "
                     "'mmaudit verify keygen --out FILE'")
    run.add_argument("--sink", metavar="SINK",
                     help="where the stream goes (MMAUDIT_SINK): file:PATH (%%p = pid) or "
                     "tcp://HOST:PORT of 'mmaudit verify serve'")
    run.add_argument("--call-rate", type=_rate, metavar="RATE",
                     help="share of calls sampled with a file sink (MMAUDIT_CALL_RATE); a live "
                     "verifier sets its own")
    run.add_argument("--log", choices=["off", "error", "warn", "info", "debug"],
                     help="the library's stderr verbosity (MMAUDIT_LOG)")
    run.add_argument("program", metavar="PROGRAM", help="the program to run (after --)")
    run.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS",
                     help="its arguments")
    sub.add_parser(
        "verify",
        help="run mmaudit-verify (check, serve, plan, keygen, ...); "
        "'mmaudit verify --help' lists them",
        add_help=False,
    )
    return p


def _run(opts):
    env = dict(os.environ)
    lib = library_path()
    preload = env.get("LD_PRELOAD", "").strip()
    env["LD_PRELOAD"] = lib + (":" + preload if preload else "")
    for name, value in (("MMAUDIT_KEY_FILE", opts.key_file), ("MMAUDIT_SINK", opts.sink),
                        ("MMAUDIT_CALL_RATE", opts.call_rate), ("MMAUDIT_LOG", opts.log)):
        if value is not None:
            env[name] = value
    if "MMAUDIT_KEY_FILE" not in env and "MMAUDIT_KEY" not in env:
        print("mmaudit run: no key: pass --key-file (or set MMAUDIT_KEY_FILE); without one "
              "the library forwards every call and records nothing", file=sys.stderr)
        return 2
    argv = [opts.program] + opts.args
    try:
        os.execvpe(opts.program, argv, env)
    except OSError as e:
        print("mmaudit run: cannot run %s: %s" % (opts.program, e.strerror), file=sys.stderr)
        return 127 if isinstance(e, FileNotFoundError) else 126


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    # `mmaudit verify ...` hands everything after `verify` to mmaudit-verify unchanged.
    if argv[:1] == ["verify"]:
        verifier = verifier_path()
        os.execv(verifier, [verifier] + argv[1:])
    if argv[:1] == ["run"] and "--" in argv:
        # Everything after the first `--` is the program and its arguments, verbatim.
        at = argv.index("--")
        opts = _parser().parse_args(argv[:at] + ["--", argv[at + 1] if at + 1 < len(argv) else ""])
        opts.program = argv[at + 1] if at + 1 < len(argv) else ""
        opts.args = argv[at + 2:]
    else:
        opts = _parser().parse_args(argv)
    if opts.command == "run":
        if not opts.program:
            print("mmaudit run: no program given (mmaudit run [OPTIONS] -- PROGRAM ARGS)",
                  file=sys.stderr)
            return 2
        return _run(opts)
    return 2


if __name__ == "__main__":
    sys.exit(main())

"""mmaudit: audit the matrix multiplications of unmodified GPU programs.

The package ships the two native parts of mmaudit and a launcher:

- ``libmmaudit.so``, preloaded into the audited program (``mmaudit run``), records
  every cuBLAS / cuBLASLt GEMM and streams keyed samples of them;
- ``mmaudit-verify`` recomputes the samples and gives the verdict
  (``mmaudit verify``, or :func:`check` from Python).
"""

import json
import os
import subprocess

__all__ = ["check", "library_path", "verifier_path", "VerifyError", "__version__"]

__version__ = "0.1.0"

_BIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_bin")


class VerifyError(RuntimeError):
    """mmaudit-verify could not run the check (exit status 2): a missing or unreadable
    capture, a malformed key file, a bad option. The message is the verifier's."""


def _shipped(name):
    path = os.path.join(_BIN, name)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            "%s is not in this installation of mmaudit (%s); reinstall the wheel" % (name, _BIN)
        )
    return path


def library_path():
    """The absolute path of the shipped libmmaudit.so."""
    return _shipped("libmmaudit.so")


def verifier_path():
    """The absolute path of the shipped mmaudit-verify."""
    return _shipped("mmaudit-verify")


def check(capture, key_file, *args):
    """Verifies capture file(s) with ``mmaudit-verify check`` and returns its JSON report
    as a dict; ``report["verdict"]`` is ``"pass"`` or ``"fail"``.

    ``capture`` is a path or a list of paths; ``args`` are further options of
    ``mmaudit-verify check`` (for example ``"--min-call-rate", "0.05"``). Raises
    :class:`VerifyError` when the verifier could not run the check.
    """
    captures = [capture] if isinstance(capture, (str, os.PathLike)) else list(capture)
    argv = [verifier_path(), "check", *map(os.fspath, captures), "--key-file",
            os.fspath(key_file), "--json", "-", *map(str, args)]
    done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if done.returncode not in (0, 1):
        raise VerifyError(done.stderr.decode(errors="replace").strip()
                          or "mmaudit-verify exited with status %d" % done.returncode)
    return json.loads(done.stdout)

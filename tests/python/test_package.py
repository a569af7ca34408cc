"""The installed `mmaudit` package, end to end on the simulated GPU.

Run by scripts/python-test.sh with the interpreter of a fresh virtual environment into
which the wheel was installed; the environment names the simulated GPU's libraries
(MMAUDIT_TEST_LIB_DIR) and the compiled Llama workload (MMAUDIT_TEST_WORKLOAD).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import mmaudit

HERE = os.path.dirname(os.path.abspath(__file__))
LIB_DIR = os.environ["MMAUDIT_TEST_LIB_DIR"]
WORKLOAD = os.environ["MMAUDIT_TEST_WORKLOAD"]
MMAUDIT = shutil.which("mmaudit")


def env(**extra):
    e = {k: v for k, v in os.environ.items() if not k.startswith("MMAUDIT_")}
    e["LD_LIBRARY_PATH"] = LIB_DIR
    e.pop("LD_PRELOAD", None)
    e.update(extra)
    return e


def mmaudit_cmd(*args, **extra):
    return subprocess.run([MMAUDIT, *args], env=env(**extra), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


class Package(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="mmaudit-py-")
        cls.key = os.path.join(cls.dir, "audit.key")
        r = mmaudit_cmd("verify", "keygen", "--out", cls.key)
        assert r.returncode == 0, r.stderr

    def capture(self, name):
        return os.path.join(self.dir, name + ".mma")

    def test_the_command_is_installed_with_its_binaries(self):
        self.assertIsNotNone(MMAUDIT)
        for path in (mmaudit.library_path(), mmaudit.verifier_path()):
            self.assertTrue(os.path.isfile(path), path)
        self.assertTrue(os.access(mmaudit.verifier_path(), os.X_OK))
        r = mmaudit_cmd("verify", "--version")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("protocol versions", r.stdout)
        r = mmaudit_cmd("run", "--help")
        self.assertEqual(r.returncode, 0)
        self.assertIn("mmaudit run --key-file audit.key", r.stdout)

    def test_run_audits_the_llama_workload_and_verify_passes_it(self):
        cap = self.capture("llama")
        r = mmaudit_cmd("run", "--key-file", self.key, "--sink", "file:" + cap,
                        "--call-rate", "50%", "--", WORKLOAD, "--layers", "2", "--tokens", "8")
        self.assertEqual(r.returncode, 0, r.stderr)
        r = mmaudit_cmd("verify", "check", cap, "--key-file", self.key)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        report = mmaudit.check(cap, self.key)
        self.assertEqual(report["verdict"], "pass")
        self.assertGreater(report["sampled"], 0)
        self.assertEqual(report["sampled"], report["verified"])
        # The same capture with a fault injected into the GEMMs fails.
        bad = self.capture("llama-fault")
        r = mmaudit_cmd("run", "--key-file", self.key, "--sink", "file:" + bad,
                        "--call-rate", "1", "--", WORKLOAD, "--layers", "2", "--tokens", "8",
                        SIMGPU_FAULT="zero")
        self.assertEqual(r.returncode, 0, r.stderr)
        report = mmaudit.check(bad, self.key)
        self.assertEqual(report["verdict"], "fail")
        self.assertGreater(report["mismatched"], 0)

    def test_a_python_program_calling_cublas_through_ctypes_is_audited(self):
        cap = self.capture("ctypes")
        r = mmaudit_cmd("run", "--key-file", self.key, "--sink", "file:" + cap,
                        "--call-rate", "1", "--", sys.executable,
                        os.path.join(HERE, "ctypes_sgemm.py"), "6")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("6 calls", r.stdout)
        report = mmaudit.check(cap, self.key)
        self.assertEqual(report["verdict"], "pass", json.dumps(report)[:2000])
        self.assertEqual((report["calls"], report["verified"]), (6, 6))

    def test_ld_preload_is_prepended_and_options_set_the_environment(self):
        r = mmaudit_cmd("run", "--key-file", self.key, "--sink", "file:/dev/null",
                        "--call-rate", "0.25", "--log", "off", "--", "sh", "-c",
                        'printf "%s|%s|%s|%s" "$LD_PRELOAD" "$MMAUDIT_SINK" '
                        '"$MMAUDIT_CALL_RATE" "$MMAUDIT_LOG"',
                        LD_PRELOAD="libm.so.6", MMAUDIT_ROW_RATE="0.5")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "%s:libm.so.6|file:/dev/null|0.25|off"
                         % mmaudit.library_path())
        # Variables the options do not set are kept.
        r = mmaudit_cmd("run", "--key-file", self.key, "--", "sh", "-c",
                        'printf %s "$MMAUDIT_ROW_RATE"', MMAUDIT_ROW_RATE="0.5")
        self.assertEqual(r.stdout, "0.5")

    def test_exit_status_and_signals_are_the_programs(self):
        r = mmaudit_cmd("run", "--key-file", self.key, "--", "sh", "-c", "exit 7")
        self.assertEqual(r.returncode, 7)
        r = mmaudit_cmd("run", "--key-file", self.key, "--", "sh", "-c", "kill -TERM $$")
        self.assertEqual(r.returncode, -15)

    def test_bad_input_is_named_with_a_nonzero_exit(self):
        r = mmaudit_cmd("run", "--key-file", self.key, "--", "/nonexistent/program")
        self.assertEqual(r.returncode, 127)
        self.assertIn("cannot run /nonexistent/program", r.stderr)
        r = mmaudit_cmd("run", "--", "true")
        self.assertEqual(r.returncode, 2)
        self.assertIn("no key", r.stderr)
        r = mmaudit_cmd("run", "--key-file", self.key, "--call-rate", "2", "--", "true")
        self.assertEqual(r.returncode, 2)
        self.assertIn("not between 0 and 1", r.stderr)
        r = mmaudit_cmd("run", "--key-file", self.key)
        self.assertEqual(r.returncode, 2)
        with self.assertRaises(mmaudit.VerifyError) as e:
            mmaudit.check(self.capture("absent"), self.key)
        self.assertIn("absent.mma", str(e.exception))


if __name__ == "__main__":
    unittest.main(verbosity=2)

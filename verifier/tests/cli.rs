//! The `mmaudit-verify` binary as a user meets it: exit codes, one-line errors on bad
//! input, the JSON report, keygen.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mmaudit_protocol::call::{ComputeType, DType};
use mmaudit_protocol::config::SamplingConfig;
use mmaudit_protocol::keys::Key;
use mmaudit_tests::refprover::{GemmSpec, RefProver};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mmaudit-verify"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mmaudit-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn key() -> Key {
    Key::from_bytes([9; 32])
}

fn write_key(dir: &Path) -> PathBuf {
    let p = dir.join("audit.key");
    std::fs::write(&p, key().to_hex() + "\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    p
}

fn capture(dir: &Path, tamper: bool) -> PathBuf {
    let config = SamplingConfig {
        call_ppm: 1_000_000,
        ..SamplingConfig::default()
    };
    let mut p = RefProver::new(&key(), config, 1);
    for _ in 0..5 {
        p.gemm(&GemmSpec::new(
            32,
            8,
            64,
            DType::F16,
            DType::F16,
            ComputeType::F32,
        ));
    }
    if tamper {
        if let Some(mmaudit_protocol::record::Record::Sample(s)) = p.records.get_mut(1) {
            s.d_out[1] ^= 0x40;
        }
    }
    let path = dir.join(if tamper { "bad.mma" } else { "good.mma" });
    std::fs::write(&path, p.finish(2).bytes()).unwrap();
    path
}

fn check(args: &[&Path], key: &Path) -> Output {
    bin()
        .arg("check")
        .args(args)
        .arg("--key-file")
        .arg(key)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit code 2 and a single line naming the problem; never a panic.
fn assert_could_not_run(o: &Output, mentions: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line expected: {err}"
    );
    assert!(err.contains(mentions), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn honest_capture_exits_0_and_tampered_exits_1_with_json() {
    let dir = scratch("verdicts");
    let k = write_key(&dir);
    let good = capture(&dir, false);
    let bad = capture(&dir, true);
    let json = dir.join("r.json");
    let o = bin()
        .args(["check"])
        .arg(&good)
        .arg("--key-file")
        .arg(&k)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.starts_with("PASS"), "{stdout}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    for key in [
        "verdict",
        "calls",
        "sampled",
        "verified",
        "mismatched",
        "missing",
        "gaps",
        "integrity_errors",
        "flops",
    ] {
        assert!(v.get(key).is_some(), "missing key {key}");
    }
    assert_eq!(v["verdict"], "pass");
    assert_eq!(v["calls"], 5);
    assert_eq!(v["sampled"], 5);
    assert_eq!(v["flops"], 5.0 * 2.0 * 32.0 * 8.0 * 64.0);

    let o = bin()
        .arg("check")
        .arg(&good)
        .arg(&bad)
        .arg("--key-file")
        .arg(&k)
        .args(["--json", "-"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    // With --json -, standard output holds the JSON alone, the text report stderr.
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stderr(&o).contains("FAIL mismatch: call 0 "),
        "{}",
        stderr(&o)
    );
    assert!(stdout.contains("\"verdict\": \"fail\""), "{stdout}");
    assert!(!stdout.contains("FAIL mismatch"), "{stdout}");
}

#[test]
fn garbage_inputs_never_pass_and_never_panic() {
    let dir = scratch("garbage");
    let k = write_key(&dir);
    let empty = dir.join("empty.mma");
    std::fs::write(&empty, b"").unwrap();
    assert_could_not_run(&check(&[&empty], &k), "empty");

    assert_could_not_run(&check(&[&dir], &k), "directory");
    assert_could_not_run(&check(&[&dir.join("absent.mma")], &k), "absent.mma");

    let random = dir.join("random.mma");
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let bytes: Vec<u8> = (0..100_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&random, &bytes).unwrap();
    assert_could_not_run(&check(&[&random], &k), "not an mmaudit capture");

    // A valid header followed by a frame that declares a 4 GiB payload.
    let good = std::fs::read(capture(&dir, false)).unwrap();
    let header_len = 14 + u32::from_le_bytes(good[10..14].try_into().unwrap()) as usize + 32;
    let mut huge = good[..header_len].to_vec();
    huge.extend_from_slice(&u32::MAX.to_le_bytes());
    huge.extend_from_slice(&[0u8; 13]);
    let huge_path = dir.join("huge.mma");
    std::fs::write(&huge_path, &huge).unwrap();
    let o = check(&[&huge_path], &k);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("FAIL integrity"));

    // Truncated in the middle of a frame: a failure, never a pass.
    let cut = dir.join("cut.mma");
    std::fs::write(&cut, &good[..good.len() - 10]).unwrap();
    assert_eq!(check(&[&cut], &k).status.code(), Some(1));
}

#[test]
fn bad_key_files_and_arguments_exit_2() {
    let dir = scratch("keys");
    let good = capture(&dir, false);
    assert_could_not_run(&check(&[&good], &dir.join("nokey")), "nokey");
    let short = dir.join("short.key");
    std::fs::write(&short, "abcd\n").unwrap();
    assert_could_not_run(&check(&[&good], &short), "64 hex characters");
    // Not a small regular file: refused at once, never read (/dev/zero) or waited on (a
    // FIFO nobody writes to).
    assert_could_not_run(
        &check(&[&good], Path::new("/dev/zero")),
        "not a regular file",
    );
    let fifo = dir.join("fifo.key");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let mut child = bin()
        .arg("check")
        .arg(&good)
        .arg("--key-file")
        .arg(&fifo)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > std::time::Duration::from_secs(20) {
            let _ = child.kill();
            panic!("check waited on a FIFO key file");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_could_not_run(&child.wait_with_output().unwrap(), "not a regular file");
    let o = bin().arg("check").arg(&good).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let o = bin()
        .args(["check", "--max-gap-rate", "2"])
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn keygen_writes_a_private_key_and_never_overwrites() {
    let dir = scratch("keygen");
    let path = dir.join("new.key");
    let o = bin()
        .arg("keygen")
        .arg("--out")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(Key::from_hex(&text).is_ok());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let o = bin()
        .arg("keygen")
        .arg("--out")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    let a = bin().arg("keygen").output().unwrap();
    let b = bin().arg("keygen").output().unwrap();
    assert_ne!(a.stdout, b.stdout);
}

#[test]
fn every_command_has_help_with_an_example() {
    for cmd in [
        &["--help"][..],
        &["check", "--help"],
        &["report", "--help"],
        &["bench", "--help"],
        &["keygen", "--help"],
        &["plan", "--help"],
        &["serve", "--help"],
        &["relay", "--help"],
        &["worker", "--help"],
        &["export", "--help"],
        &["completions", "--help"],
        &["man", "--help"],
    ] {
        let o = bin().args(cmd).output().unwrap();
        assert_eq!(o.status.code(), Some(0));
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(text.contains("mmaudit-verify "), "{cmd:?}: {text}");
    }
}

/// `check FILES` with standard output a pipe whose reader has gone before reading.
fn check_into_closed_pipe(files: &[PathBuf], key_file: &Path) -> Output {
    use std::process::Stdio;
    let mut child = bin()
        .arg("check")
        .args(files)
        .arg("--key-file")
        .arg(key_file)
        .args(["--min-call-rate", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    child.wait_with_output().unwrap()
}

#[test]
fn a_closed_pipe_ends_the_output_quietly_and_the_verdict_stays_the_exit_status() {
    // `check ... | head` used to panic (exit 101) once head had gone: println! panics
    // on a closed pipe.
    let dir = scratch("pipe");
    let key_file = write_key(&dir);
    let good = capture(&dir, false);
    let bad = capture(&dir, true);
    for (file, code) in [(&good, 0), (&bad, 1)] {
        // One file: its verdict is the exit status.
        let out = check_into_closed_pipe(std::slice::from_ref(file), &key_file);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(code), "{err}");
        // 400 copies: more text than the pipe's buffer holds; one stream given 400
        // times overlaps itself, which fails the combined verdict.
        let out = check_into_closed_pipe(&vec![file.clone(); 400], &key_file);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(out.status.code(), Some(1), "{err}");
    }
}

#[test]
fn json_to_standard_output_is_json_alone() {
    // `--json -` printed the text report and the JSON together on standard output.
    let dir = scratch("json-stdout");
    let key_file = write_key(&dir);
    for (file, verdict, code) in [
        (capture(&dir, false), "pass", 0),
        (capture(&dir, true), "fail", 1),
    ] {
        let out = bin()
            .arg("check")
            .arg(&file)
            .arg("--key-file")
            .arg(&key_file)
            .args(["--min-call-rate", "0", "--json", "-"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(code));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
        assert_eq!(v["verdict"], verdict);
        // the text report went to standard error
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&verdict.to_uppercase()), "{err}");
    }
    // `plan --json -` too (it used to write a file named "-")
    let out = bin()
        .current_dir(&dir)
        .args([
            "plan", "--m", "4096", "--n", "16", "--k", "4096", "--json", "-",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert!(v.is_object(), "{v}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("mmaudit plan"));
    assert!(!dir.join("-").exists());
}

#[test]
fn completions_complete_the_commands_and_their_options() {
    // bash: the script loads, and completing `mmaudit-verify ch` and
    // `mmaudit-verify check --thr` gives the command and the option.
    let o = bin().args(["completions", "bash"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    let dir = scratch("completions");
    let script = dir.join("mmaudit-verify.bash");
    std::fs::write(&script, &o.stdout).unwrap();
    let complete = |words: &str| -> String {
        let line = format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
             _mmaudit__verify mmaudit-verify; echo \"${{COMPREPLY[@]}}\"",
            script.display()
        );
        let out = Command::new("bash").args(["-c", &line]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(complete("mmaudit-verify ch")
        .split_whitespace()
        .any(|w| w == "check"));
    let opts = complete("mmaudit-verify check --thr");
    assert!(opts.split_whitespace().any(|w| w == "--threads"), "{opts}");
    for shell in ["zsh", "fish"] {
        let o = bin().args(["completions", shell]).output().unwrap();
        assert_eq!(o.status.code(), Some(0));
        assert!(String::from_utf8_lossy(&o.stdout).contains("state-dir"));
    }
    // An unknown shell is a usage error.
    assert_eq!(
        bin()
            .args(["completions", "nosh"])
            .output()
            .unwrap()
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn the_man_page_has_a_section_per_command_and_the_version_names_the_protocols() {
    let o = bin().arg("man").output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    let page = String::from_utf8(o.stdout).unwrap();
    assert!(
        page.starts_with(".ie") || page.starts_with(".TH"),
        "{page:.200}"
    );
    assert!(page.contains(".TH mmaudit-verify 1"), "{page:.400}");
    for cmd in [
        "KEYGEN",
        "CHECK",
        "PLAN",
        "SERVE",
        "RELAY",
        "WORKER",
        "EXPORT",
        "COMPLETIONS",
        "MAN",
    ] {
        assert!(
            page.contains(&format!(".SH \"MMAUDIT-VERIFY {cmd}\"")),
            "no section for {cmd}"
        );
    }
    assert!(page.contains("key\\-file"), "check's options are listed");
    // Rendered by man(1) where the machine has it.
    if let Ok(mut man) = Command::new("man")
        .args(["-l", "-"])
        .env("MANWIDTH", "100")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        use std::io::Write;
        man.stdin
            .take()
            .unwrap()
            .write_all(page.as_bytes())
            .unwrap();
        let out = man.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("MMAUDIT-VERIFY CHECK"), "{text:.400}");
    }
    let v = bin().arg("--version").output().unwrap();
    assert_eq!(v.status.code(), Some(0));
    let v = String::from_utf8_lossy(&v.stdout);
    // The text is written by hand: it must follow the protocol crate's versions.
    assert_eq!(
        mmaudit_protocol::stream::VERSION,
        3,
        "update VERSION in main.rs"
    );
    assert_eq!(
        mmaudit_protocol::handshake::HELLO_VERSION,
        3,
        "update VERSION in main.rs"
    );
    assert!(
        v.contains("protocol versions 1 to 3")
            && v.contains("commit mode")
            && v.contains("hello version 3"),
        "{v}"
    );
}

/// `report ARGS --html PAGE` and the page it wrote.
fn report(args: &[&Path], page: &Path) -> (Output, String) {
    let o = bin()
        .arg("report")
        .args(args)
        .arg("--html")
        .arg(page)
        .output()
        .unwrap();
    let html = std::fs::read_to_string(page).unwrap_or_default();
    let _ = std::fs::remove_file(page);
    (o, html)
}

/// The page without its footer, which names where it was drawn from.
fn without_footer(page: &str) -> String {
    page.lines()
        .filter(|l| !l.contains("id=\"footer\""))
        .collect()
}

#[test]
fn report_draws_the_verdict_of_a_capture_and_of_its_json_alike() {
    let dir = scratch("report");
    let key_file = write_key(&dir);
    let page = dir.join("page.html");
    let json = dir.join("r.json");
    for (file, verdict, code) in [
        (capture(&dir, false), "pass", 0),
        (capture(&dir, true), "fail", 1),
    ] {
        let (o, from_capture) = report(&[&file, Path::new("--key-file"), &key_file], &page);
        assert_eq!(o.status.code(), Some(code), "{}", stderr(&o));
        assert!(
            from_capture.contains(&format!("<h1 id=\"verdict\" class=\"{verdict}\">")),
            "{from_capture}"
        );
        // the text report as `check` prints it, then where the page went
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.starts_with(&verdict.to_uppercase()), "{out}");
        assert!(out.contains("HTML report written to"), "{out}");

        let o = bin()
            .arg("check")
            .arg(&file)
            .arg("--key-file")
            .arg(&key_file)
            .arg("--json")
            .arg(&json)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(code));
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        let (o, from_json) = report(&[&json], &page);
        assert_eq!(o.status.code(), Some(code), "{}", stderr(&o));
        assert_eq!(without_footer(&from_json), without_footer(&from_capture));
        // one row per failure of the JSON, the timeline and a histogram per types
        let failures = v["streams"][0]["failures"].as_array().unwrap().len();
        assert_eq!(
            from_json.matches("<tr class=\"failure\">").count(),
            failures
        );
        assert_eq!(failures > 0, verdict == "fail");
        assert_eq!(
            from_json.matches("<svg class=\"timeline calls\"").count(),
            1
        );
        assert_eq!(from_json.matches("<svg class=\"histogram\"").count(), 1);
        let bins = v["streams"][0]["timeline"]["bins"].as_array().unwrap();
        assert_eq!(bins.len(), 5, "five calls, one per bin");
        let verified: u64 = bins.iter().map(|b| b["verified"].as_u64().unwrap()).sum();
        assert_eq!(verified, v["verified"].as_u64().unwrap());
        let entries =
            &v["streams"][0]["error_histograms"]["by_types"]["f16xf16->f16 compute F32"]["entries"];
        let entries: u64 = entries
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_u64().unwrap())
            .sum();
        assert_eq!(entries, v["entries_checked"].as_u64().unwrap());

        // --html -: the page alone on standard output, the text report on stderr
        let o = bin()
            .arg("report")
            .arg(&json)
            .args(["--html", "-"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(code));
        assert_eq!(String::from_utf8_lossy(&o.stdout), from_json);
    }
}

#[test]
fn report_refuses_what_it_cannot_draw() {
    let dir = scratch("report-bad");
    let key_file = write_key(&dir);
    let good = capture(&dir, false);
    let page = dir.join("page.html");
    let (o, _) = report(&[&good], &page);
    assert_could_not_run(&o, "needs --key-file");
    let not_report = dir.join("x.json");
    std::fs::write(&not_report, "{\"hello\": 1}").unwrap();
    let (o, _) = report(&[&not_report], &page);
    assert_could_not_run(&o, "not an mmaudit-verify JSON report");
    let broken = dir.join("broken.json");
    std::fs::write(&broken, "{\"verdict\": ").unwrap();
    let (o, _) = report(&[&broken], &page);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("is not valid JSON"), "{}", stderr(&o));
    let (o, _) = report(
        &[&not_report, &good, Path::new("--key-file"), &key_file],
        &page,
    );
    assert_could_not_run(&o, "not both");
    let (o, _) = report(&[&dir], &page);
    assert_could_not_run(&o, "is a directory");
    let (o, _) = report(&[&dir.join("absent.json")], &page);
    assert_could_not_run(&o, "cannot open");
}

#[test]
fn report_reads_a_piped_json_report_and_never_trusts_its_top_verdict() {
    use std::io::Write;
    use std::process::Stdio;
    let dir = scratch("report-pipe");
    let key_file = write_key(&dir);
    let page = dir.join("page.html");
    let piped = |json: &[u8]| {
        let mut child = bin()
            .args(["report", "/dev/stdin", "--html"])
            .arg(&page)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(json).unwrap();
        let o = child.wait_with_output().unwrap();
        (o, std::fs::read_to_string(&page).unwrap_or_default())
    };
    // `check --json - | report /dev/stdin`, with a byte-order mark too
    for (file, verdict, code) in [
        (capture(&dir, false), "pass", 0),
        (capture(&dir, true), "fail", 1),
    ] {
        let o = bin()
            .arg("check")
            .arg(&file)
            .arg("--key-file")
            .arg(&key_file)
            .args(["--json", "-"])
            .output()
            .unwrap();
        for json in [o.stdout.clone(), [&b"\xef\xbb\xbf"[..], &o.stdout].concat()] {
            let (o, html) = piped(&json);
            assert_eq!(o.status.code(), Some(code), "{}", stderr(&o));
            assert!(html.contains(&format!("id=\"verdict\" class=\"{verdict}\"")));
        }
    }
    // the cheat: a report edited to say pass over a failed stream
    let forged = br#"{"verdict": "pass", "streams": [{"verdict": "fail", "calls": 1}]}"#;
    let (o, html) = piped(forged);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(html.contains("id=\"verdict\" class=\"fail\""));
    let (o, _) = piped(br#"{"verdict": "pass", "streams": []}"#);
    assert_could_not_run(&o, "no stream");
    // a capture from a pipe: a clear refusal, not a misleading parse error
    let bytes = std::fs::read(capture(&dir, false)).unwrap();
    let (o, _) = piped(&bytes);
    assert_could_not_run(&o, "a capture only from a file");
}

#[test]
fn report_shows_that_failures_were_left_out() {
    let dir = scratch("report-max0");
    let key_file = write_key(&dir);
    let bad = capture(&dir, true);
    let page = dir.join("page.html");
    let o = bin()
        .arg("report")
        .arg(&bad)
        .arg("--key-file")
        .arg(&key_file)
        .args(["--max-failures", "0", "--html"])
        .arg(&page)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        html.contains("more failures (raise --max-failures"),
        "{html}"
    );
}

//! `mmaudit-verify`: the auditor's side of mmaudit.
//!
//! Exit codes mean the same for every command: 0 the audit passed (or the command did
//! its job), 1 the audit found a violation, 2 the command could not run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use mmaudit_verify::{bench, check, fleet, keyfile, plan, serve};

/// The version line: the build, and the protocol versions it reads.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (reads streams of protocol versions 1 to 3: schedules v1 and v2, and commit mode with --challenge-key; speaks hello version 3)"
);

/// Verifies mmaudit audit streams: were the sampled GEMMs computed as claimed?
#[derive(Parser)]
#[command(name = "mmaudit-verify", version = VERSION, about, long_about = None)]
#[command(after_help = "\
Exit codes: 0 pass, 1 the capture fails the audit, 2 could not run.

Typical use:
  mmaudit-verify keygen --out audit.key
  LD_PRELOAD=libmmaudit.so MMAUDIT_KEY_FILE=audit.key MMAUDIT_SINK=file:run.mma ./app
  mmaudit-verify check run.mma --key-file audit.key --json report.json
  mmaudit-verify serve --listen 0.0.0.0:7150 --key-file audit.key --capture-dir captures")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new random 32-byte audit key (64 hex characters).
    #[command(after_help = "\
The key is shared by the prover (MMAUDIT_KEY_FILE) and the verifier (--key-file).
With --out, the file is created with mode 0600 and never overwritten.

Example:
  mmaudit-verify keygen --out audit.key")]
    Keygen {
        /// Write the key to this file (mode 0600) instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Verify capture files: authenticate, re-derive the sampling plans, recompute.
    Check(check::CheckArgs),
    /// Draw a report (captures, or a JSON report) as one self-contained HTML page.
    Report(check::ReportArgs),
    /// Measure what checking costs on this machine (for `plan --verifier-bench`).
    Bench(bench::BenchArgs),
    /// Estimate bandwidth, verifier work and detection probability for a GEMM or a model.
    Plan(plan::PlanArgs),
    /// Verify live streams from provers over TCP; save captures and reports.
    Serve(serve::ServeArgs),
    /// Fleet: accept libmmaudit.so connections and publish their streams to NATS JetStream.
    Relay(fleet::relay::RelayArgs),
    /// Fleet: answer hellos and verify the segments relays published to NATS JetStream.
    Worker(fleet::worker::WorkerArgs),
    /// Fleet: write a segment stored in NATS JetStream to a capture file, or list them.
    Export(fleet::export::ExportArgs),
    /// Print a shell completion script for mmaudit-verify on standard output.
    #[command(after_help = "\
Examples:
  mmaudit-verify completions bash > ~/.local/share/bash-completion/completions/mmaudit-verify
  mmaudit-verify completions zsh > ~/.zfunc/_mmaudit-verify
  mmaudit-verify completions fish > ~/.config/fish/completions/mmaudit-verify.fish")]
    Completions {
        /// The shell: bash, zsh, fish, elvish or powershell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) on standard output.
    #[command(after_help = "\
Examples:
  mmaudit-verify man | man -l -
  mmaudit-verify man > ~/.local/share/man/man1/mmaudit-verify.1")]
    Man,
}

/// The manual page: the command's help, each subcommand's as a section.
fn man_page() -> anyhow::Result<String> {
    let cmd = Cli::command();
    let mut out = Vec::new();
    let man = clap_mangen::Man::new(cmd.clone());
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    // Each subcommand is a section; its own sections become subsections.
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = sub.get_name();
        out.extend_from_slice(
            format!(".SH \"MMAUDIT-VERIFY {}\"\n", name.to_uppercase()).as_bytes(),
        );
        let page = clap_mangen::Man::new(sub.clone().bin_name(format!("mmaudit-verify {name}")));
        let mut part = Vec::new();
        page.render_synopsis_section(&mut part)?;
        page.render_description_section(&mut part)?;
        page.render_options_section(&mut part)?;
        page.render_extra_section(&mut part)?;
        let part = String::from_utf8_lossy(&part).replace(".SH ", ".SS ");
        out.extend_from_slice(part.as_bytes());
    }
    man.render_extra_section(&mut out)?;
    man.render_version_section(&mut out)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn main() -> ExitCode {
    mmaudit_verify::tune_allocator();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Keygen { out } => keyfile::keygen(out.as_deref()).map(|()| true),
        Command::Check(args) => check::run_check(args),
        Command::Report(args) => check::run_report(args),
        Command::Bench(args) => bench::run_bench(args).map(|()| true),
        Command::Plan(args) => plan::run_plan(args).map(|()| true),
        Command::Serve(args) => serve::run_serve(args),
        Command::Relay(args) => fleet::relay::run_relay(args),
        Command::Worker(args) => fleet::worker::run_worker(args),
        Command::Export(args) => fleet::export::run_export(args),
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "mmaudit-verify", &mut script);
            let mut text = String::from_utf8_lossy(&script).into_owned();
            if *shell == clap_complete::Shell::Bash {
                // clap_complete 4.6 names the subcommands' cases of a hyphenated program
                // `mmaudit__subcmd__verify__...` but matches `mmaudit__verify__...`, so
                // no subcommand option would complete; the test completes one.
                text = text.replace("mmaudit__subcmd__verify__", "mmaudit__verify__");
            }
            mmaudit_verify::out::stdout(&text);
            Ok(true)
        }
        Command::Man => man_page().map(|page| {
            mmaudit_verify::out::stdout(&page);
            true
        }),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("mmaudit-verify: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

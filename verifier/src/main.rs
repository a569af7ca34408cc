//! `mmaudit-verify`: the auditor's side of mmaudit.
//!
//! Exit codes mean the same for every command: 0 the audit passed (or the command did
//! its job), 1 the audit found a violation, 2 the command could not run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use mmaudit_verify::{check, keyfile, plan, serve};

/// Verifies mmaudit audit streams: were the sampled GEMMs computed as claimed?
#[derive(Parser)]
#[command(name = "mmaudit-verify", version, about, long_about = None)]
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
    /// Estimate bandwidth, verifier work and detection probability for a GEMM or a model.
    Plan(plan::PlanArgs),
    /// Verify live streams from provers over TCP; save captures and reports.
    Serve(serve::ServeArgs),
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Keygen { out } => keyfile::keygen(out.as_deref()).map(|()| true),
        Command::Check(args) => check::run_check(args),
        Command::Plan(args) => plan::run_plan(args).map(|()| true),
        Command::Serve(args) => serve::run_serve(args),
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

//! `netsleuth`: parse flags → run one command → documented exit code.
//!
//! Exit codes (all reporting commands): 0 no incident found, 1 incident(s) found, 2 error (bad usage,
//! unreadable input, missing privileges or tools). A broken pipe (e.g. `| head`) exits quietly.

mod cli;
mod cmd;
mod input;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    let code = match cmd::run(args) {
        Ok(code) => code,
        Err(e) => {
            if e.is_broken_pipe() {
                return ExitCode::from(0);
            }
            // Errors quote their inputs (file names, bundle members, environment values).
            eprintln!(
                "netsleuth: error: {}",
                netsleuth_core::report::escape::for_terminal(&e.to_string())
            );
            2
        }
    };
    ExitCode::from(code as u8)
}

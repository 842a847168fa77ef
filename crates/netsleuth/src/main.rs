//! `netsleuth`: parse flags → run one command → documented exit code.
//!
//! Exit codes: 0 nothing found (no incident; `diff`: no difference that matters; `lab run`: every run
//! proven), 1 something found (an incident; a difference; a run not proven), 2 error (bad usage,
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
            eprintln!("netsleuth: {}", cmd::describe(&e));
            2
        }
    };
    ExitCode::from(code as u8)
}

//! `netsleuth`: parse flags → run one command → documented exit code.
//!
//! Exit codes: 0 nothing found (no incident; `diff`: no difference that matters; `lab run`: every run
//! proven), 1 something found (an incident; a difference; a run not proven), 2 error (bad usage,
//! unreadable input, missing privileges or tools). A broken pipe (e.g. `| head`) drops the rest of the
//! output quietly and keeps the exit code of what was found.

mod build_info {
    /// `0.1.0 (commit …, release build, x86_64-unknown-linux-musl (static), features: none)`.
    pub const VERSION: &str = concat!(
        env!("CARGO_PKG_VERSION"),
        " (",
        env!("NETSLEUTH_BUILD"),
        ")"
    );
}
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

//! One function per command. Flags arrive as clap types and are turned into plain options here.

mod analyze;
mod catalogue;
mod lab;
mod node;

use crate::cli::{Cli, Command, Format};
use netsleuth_core::report::{self, Report};
use std::fmt;
use std::io::{self, Write};

/// What a command can fail with; every message says what failed and, where the user can act, how.
#[derive(Debug)]
pub enum CliError {
    Io { what: String, source: io::Error },
    Usage(String),
    Other(String),
}

impl CliError {
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, CliError::Io { source, .. } if source.kind() == io::ErrorKind::BrokenPipe)
    }
    pub fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> CliError {
        let what = what.into();
        move |source| CliError::Io { what, source }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Io { what, source } => write!(f, "{what}: {source}"),
            CliError::Usage(m) | CliError::Other(m) => f.write_str(m),
        }
    }
}

pub fn run(cli: Cli) -> Result<i32, CliError> {
    match cli.command {
        Command::Analyze(a) => analyze::run(a),
        Command::Check(a) => node::check(a),
        Command::Collect(a) => node::collect(a),
        Command::Diff(a) => node::diff(a),
        Command::Lab(a) => lab::run(a),
        Command::Catalogue(a) => catalogue::run(a),
    }
}

/// Render a report to stdout in the chosen format; returns the exit code it implies.
pub fn emit(r: &Report, format: Format) -> Result<i32, CliError> {
    let text = match format {
        Format::Human => report::human::render(r),
        Format::Json => report::json::render(r),
    };
    write_stdout(&text)?;
    Ok(report::json::exit_code(r))
}

pub fn write_stdout(text: &str) -> Result<(), CliError> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|_| out.flush())
        .map_err(CliError::io("writing the report"))
}

//! One function per command. Flags arrive as clap types and are turned into plain options here.

mod analyze;
mod catalogue;
mod http;
mod k8s_api;
mod lab;
mod metrics;
mod node;
mod terminal;
mod watch;

use crate::cli::{Cli, Command, Format, FormatArgs, ReportArgs};
use netsleuth_core::names::{Names, NamesError};
use netsleuth_core::report::escape::for_terminal;
use netsleuth_core::report::json::Document;
use netsleuth_core::report::{self, Report};
use netsleuth_lab::LabError;
use netsleuth_node::{BundleError, CollectError};
use std::error::Error;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

pub use terminal::Term;

/// What a command can fail with. The typed errors of the crates below keep their chain (each layer's
/// context, its source, its hint): [`describe`] prints them one layer per line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Collect(#[from] CollectError),
    #[error(transparent)]
    Lab(#[from] LabError),
    #[error("{} is not a node facts file (hint: give a bundle from `netsleuth collect`, or a lab run's facts.json)", path.display())]
    NodeFacts {
        path: PathBuf,
        #[source]
        source: NodeFactsError,
    },
    #[error("no capture could be read: {}", why.iter().map(|(name, e)| format!("{name}: {e}")).collect::<Vec<_>>().join("; "))]
    NoCapture {
        /// Each input with why it could not be read.
        why: Vec<(String, String)>,
    },
    /// Every frame of the inputs was undecodable: an all-clear would be a lie.
    #[error("nothing in {inputs} could be examined: none of its {records} frame(s) could be decoded ({why}); no incident can be decided from it (hint: netsleuth decodes Ethernet, Linux SLL/SLL2, raw IP and BSD loopback; capture with `tcpdump -i any`)")]
    NothingExamined {
        inputs: String,
        records: u64,
        why: String,
    },
    #[error("{} is not a file of Kubernetes objects (hint: write it with `kubectl get pods,services,endpointslices,nodes -A -o json > FILE`)", path.display())]
    K8s {
        path: PathBuf,
        #[source]
        source: NamesError,
    },
    #[error("{0}")]
    K8sApi(String),
    /// The live node cannot be read without privileges.
    #[error("reading the live node needs root (CAP_NET_ADMIN, and CAP_SYS_ADMIN to enter pod namespaces): without it the conntrack table and counters, the iptables/nftables rules and the pods' namespaces cannot be read, so no incident could be ruled out (hint: run it with sudo, or `sudo netsleuth collect -o node.tar.gz` and `netsleuth check --bundle node.tar.gz` anywhere)")]
    NeedsPrivilege,
}

/// Why a `--node FILE.json` is not node facts.
#[derive(Debug, thiserror::Error)]
pub enum NodeFactsError {
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error("it holds none of the fields of node facts (expected a JSON object with some of: {})", expected.join(", "))]
    NoKnownField { expected: Vec<String> },
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

/// The error as the user reads it, nextest style: what failed, then each cause on its own line, then
/// the hints, e.g.
///
/// ```text
/// error: bundle x.tar.gz is not a readable tar.gz
///   caused by: failed to fill whole buffer
///   hint: was it written by `netsleuth collect`?
/// ```
///
/// The crates below write their source and hint into their own message as well (`…: {source} (hint:
/// …)`, for callers that print one line); here each layer keeps only its own words. Errors quote their
/// inputs (file names, bundle members, environment values): each piece is escaped for the terminal,
/// and the line breaks are only ours.
pub fn describe(e: &(dyn Error + 'static)) -> String {
    let mut layers: Vec<String> = Vec::new();
    let mut hints: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let next = err.source();
        let (mut text, hint) = split_hint(&err.to_string());
        if let Some(n) = next {
            let (inner, _) = split_hint(&n.to_string());
            if let Some(own) = text.strip_suffix(&format!(": {inner}")) {
                text = own.to_string();
            }
        }
        // `#[error(transparent)]` layers repeat their source's message word for word.
        if layers.last() != Some(&text) {
            layers.push(text);
        }
        hints.extend(hint);
        cur = next;
    }
    hints.dedup();
    let mut out = format!("error: {}", for_terminal(&layers[0]));
    for l in &layers[1..] {
        out.push_str(&format!("\n  caused by: {}", for_terminal(l)));
    }
    for h in &hints {
        out.push_str(&format!("\n  hint: {}", for_terminal(h)));
    }
    out
}

/// `message (hint: what to do)` → (`message`, `what to do`).
fn split_hint(msg: &str) -> (String, Option<String>) {
    if let Some(at) = msg.rfind(" (hint: ") {
        if let Some(hint) = msg[at + " (hint: ".len()..].strip_suffix(')') {
            return (msg[..at].to_string(), Some(hint.to_string()));
        }
    }
    (msg.to_string(), None)
}

pub fn run(cli: Cli) -> Result<i32, CliError> {
    let term = Term::new(&cli.terminal);
    match cli.command {
        Command::Analyze(a) => analyze::run(a, &term),
        Command::Check(a) => node::check(a, &term),
        Command::Collect(a) => node::collect(a, &term),
        Command::Diff(a) => node::diff(a, &term),
        Command::Lab(a) => lab::run(a, &term),
        Command::Catalogue(a) => catalogue::run(a, &term),
        Command::Explain(a) => catalogue::explain(a, &term),
        Command::Completions(a) => {
            write_stdout_bytes(&crate::cli::completion_script(a.shell))?;
            Ok(0)
        }
        Command::Man => {
            let page = crate::cli::man_page().map_err(CliError::io("rendering the man page"))?;
            write_stdout_bytes(&page)?;
            Ok(0)
        }
        Command::Watch(a) => watch::run(a),
    }
}

/// The Kubernetes names of `--k8s FILE` and `--k8s-api` (the file's first where both name an
/// address); an empty table without either.
pub fn load_names(args: &crate::cli::ReportArgs) -> Result<Names, CliError> {
    let mut names = Names::default();
    if let Some(path) = &args.k8s {
        let bytes = std::fs::read(path).map_err(CliError::io(format!(
            "reading Kubernetes objects {}",
            path.display()
        )))?;
        names = Names::from_json(&bytes).map_err(|source| CliError::K8s {
            path: path.to_path_buf(),
            source,
        })?;
    }
    if args.k8s_api {
        names.merge(k8s_api::read()?);
    }
    Ok(names)
}

/// Where and how a command writes its report: the format, and `-o FILE` (stdout without it).
#[derive(Debug, Clone, Copy)]
pub struct Output<'a> {
    pub format: Format,
    pub path: Option<&'a Path>,
}

impl<'a> From<&'a FormatArgs> for Output<'a> {
    fn from(f: &'a FormatArgs) -> Self {
        Output {
            format: f.format,
            path: f.output.as_deref(),
        }
    }
}

impl<'a> From<&'a ReportArgs> for Output<'a> {
    fn from(f: &'a ReportArgs) -> Self {
        Output {
            format: f.format,
            path: f.output.as_deref(),
        }
    }
}

/// Render a report in the chosen format, its addresses named by `names`, to stdout or `-o FILE`;
/// returns the exit code it implies. A file never gets colour (it is read later, elsewhere).
pub fn emit(r: &Report, out: Output<'_>, names: &Names, term: &Term) -> Result<i32, CliError> {
    let text = match out.format {
        Format::Human => {
            let term = Term {
                color: term.color && out.path.is_none(),
                ..*term
            };
            term.with_style(Some(names), |st| report::human::render_with(r, st))
        }
        Format::Json => Document::from_report(r).with_names(names).to_json(),
        Format::Html => {
            report::html::render_named(&Document::from_report(r).with_names(names), names)
        }
    };
    Sink::new(out).write(&text)?;
    Ok(report::json::exit_code(r))
}

/// Write a document as JSON (or, with `--format html`, as the HTML page drawn from it) to stdout or
/// `-o FILE`; returns its exit code.
pub fn emit_document(doc: &Document, out: Output<'_>) -> Result<i32, CliError> {
    emit_document_named(doc, out, &Names::default())
}

/// `emit_document` with the HTML page's words naming addresses by `names` (the document itself
/// already carries the names: `Document::with_names`).
pub fn emit_document_named(
    doc: &Document,
    out: Output<'_>,
    names: &Names,
) -> Result<i32, CliError> {
    let text = match out.format {
        Format::Html => report::html::render_named(doc, names),
        Format::Json | Format::Human => doc.to_json(),
    };
    Sink::new(out).write(&text)?;
    Ok(doc.summary.exit_code)
}

/// Where a command's output goes: stdout, or the file of `-o` (created on the first write, then
/// appended to, so a command that reports piece by piece writes one file).
pub struct Sink {
    path: Option<PathBuf>,
    file: Option<std::fs::File>,
}

impl Sink {
    pub fn new(out: Output<'_>) -> Sink {
        Sink {
            path: out.path.map(Path::to_path_buf),
            file: None,
        }
    }

    pub fn write(&mut self, text: &str) -> Result<(), CliError> {
        let Some(path) = &self.path else {
            return write_stdout(text);
        };
        let what = || format!("writing the report to {}", path.display());
        if self.file.is_none() {
            self.file = Some(std::fs::File::create(path).map_err(CliError::io(what()))?);
        }
        let file = self.file.as_mut().expect("opened above");
        file.write_all(text.as_bytes())
            .map_err(CliError::io(what()))
    }
}

/// Set once stdout is closed (`| head`): the rest of the output is dropped, and the command still
/// ends with the exit code of what it found.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Whether stdout was closed by its reader (`| head`): a command that streams stops then.
pub fn stdout_closed() -> bool {
    STDOUT_CLOSED.load(Ordering::Relaxed)
}

pub fn write_stdout(text: &str) -> Result<(), CliError> {
    write_stdout_bytes(text.as_bytes())
}

pub fn write_stdout_bytes(bytes: &[u8]) -> Result<(), CliError> {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return Ok(());
    }
    let mut out = io::stdout().lock();
    match out.write_all(bytes).and_then(|_| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
            STDOUT_CLOSED.store(true, Ordering::Relaxed);
            Ok(())
        }
        r => r.map_err(CliError::io("writing the report")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_layer_keeps_its_own_words_and_hints_come_last() {
        let path = PathBuf::from("/x/b.tar.gz");
        let e = CliError::from(BundleError::Archive {
            path: path.clone(),
            source: io::Error::new(io::ErrorKind::UnexpectedEof, "failed to fill whole buffer"),
        });
        assert_eq!(
            describe(&e),
            "error: bundle /x/b.tar.gz is not a readable tar.gz\n  caused by: failed to fill whole buffer\n  hint: was it written by `netsleuth collect`?"
        );
        let e = CliError::from(LabError::NotRoot);
        assert_eq!(
            describe(&e),
            "error: the lab needs root (it creates network namespaces, veth pairs and netfilter rules)\n  hint: run it with sudo"
        );
        let e = CliError::Io {
            what: "reading hosts file h".into(),
            source: io::Error::from(io::ErrorKind::NotFound),
        };
        assert_eq!(
            describe(&e),
            "error: reading hosts file h\n  caused by: entity not found"
        );
    }
}

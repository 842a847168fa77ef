//! One error type for the lab, with the context a person needs to act: which command, which namespace,
//! what to install or enable.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("the lab needs root (it creates network namespaces, veth pairs and netfilter rules) (hint: run it with sudo)")]
    NotRoot,

    #[error("required tool `{tool}` was not found in PATH (hint: install the Debian/Ubuntu package `{package}`)")]
    MissingTool { tool: String, package: &'static str },

    #[error("kernel feature missing: {what} (hint: {hint})")]
    MissingKernelFeature { what: String, hint: String },

    #[error("unknown scenario `{0}` (hint: `netsleuth lab list` shows the scenarios)")]
    UnknownScenario(String),

    #[error("`{command}` failed{ns}: {detail}", ns = in_ns(.netns))]
    Command {
        command: String,
        netns: Option<String>,
        detail: String,
    },

    #[error("could not start `{command}`: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },

    #[error("{what} in namespace {netns}: {source}")]
    Netns {
        netns: String,
        what: String,
        source: std::io::Error,
    },

    #[error("{what} {path}: {source}")]
    File {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },

    #[error("scenario `{scenario}` could not drive its traffic: {detail}")]
    Traffic {
        scenario: &'static str,
        detail: String,
    },

    #[error("cannot run in namespace {netns}: {detail}")]
    Enter { netns: String, detail: String },

    #[error("collecting the lab's node facts: {0}")]
    Collect(#[from] netsleuth_node::CollectError),

    #[error("writing the lab's node bundle: {0}")]
    Bundle(#[from] netsleuth_node::BundleError),

    /// A scenario's scene names something its topology does not have (a bug in the scenario).
    #[error("the scene declares {detail}")]
    Scene { detail: String },

    #[error("interrupted by signal {0}; the lab's namespaces were removed")]
    Interrupted(i32),
}

fn in_ns(ns: &Option<String>) -> String {
    match ns {
        Some(n) => format!(" in namespace {n}"),
        None => String::new(),
    }
}

impl LabError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        LabError::Io {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn file(
        what: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        LabError::File {
            what,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn traffic(scenario: &'static str, detail: impl Into<String>) -> Self {
        LabError::Traffic {
            scenario,
            detail: detail.into(),
        }
    }
}

pub type Result<T, E = LabError> = std::result::Result<T, E>;

//! netsleuth lab: reproduces the catalogue's incidents on the running kernel, inside network namespaces
//! the lab creates, with real sockets; captures them from every vantage point the topology has (the
//! node's `tcpdump -i any`, the client's and the server's own views, the node's interface toward the
//! server, a routing-only node), records conntrack events, counters and kernel drop reasons, collects
//! its node namespace into a bundle with the node crate, and runs netsleuth's analysis on its own
//! captures with that bundle's facts, as `analyze --node` would.
//!
//! ```no_run
//! for s in netsleuth_lab::scenarios() {
//!     println!("{:28} {:26} {}", s.name, s.incident.map_or("healthy", |i| i.id), s.reproduction.label());
//! }
//! let scenario = netsleuth_core::detect::conntrack_dnat_rebalance::INCIDENT.id;
//! let report = netsleuth_lab::run(scenario, &netsleuth_lab::RunOptions::default())?;
//! println!("{}", report.render_text());
//! # Ok::<(), netsleuth_lab::LabError>(())
//! ```
//!
//! Code map: `scenarios` (one module per incident) each declare a `scene` — a [`topology`] of
//! namespaces, [`kube`]-proxy-style rules, servers, where it is recorded from — and keep only their
//! traffic ([`traffic`], [`dns`]) and their judgement of what the application saw; the scene builder
//! brings the declaration up in order and starts the recorders (`observe`: [`record`], [`counters`],
//! [`dropmon`]) before the traffic; `lab` owns the run directory and the teardown; `analysis` is the
//! one place that calls the analysis core.
//!
//! Invariant: nothing here changes the host's network namespace: every state-changing command runs
//! under `ip -n NS` / `ip netns exec NS` for a namespace named `nsl-<pid>-<n>-<role>`, and every such
//! namespace is removed on return, error, panic and SIGINT/SIGTERM (see [`registry`]).

pub mod cmd;
pub mod counters;
pub mod dns;
/// Kernel drop reasons: the node crate's monitor, shared with `netsleuth watch`.
pub use netsleuth_node::live::dropmon;
mod emulate;
mod error;
mod facts;
pub mod kube;
mod lab;
pub mod netns;
mod observe;
pub mod record;
pub mod registry;
mod report;
mod scenarios;
mod scene;
pub mod topology;
pub mod traffic;
pub mod watch;

mod analysis;

pub use error::LabError;
pub use report::{Artifact, ArtifactKind, Measurement, RunReport, Verdict};

use netsleuth_core::Incident;
use serde::Serialize;
use std::path::PathBuf;

/// How a scenario makes its incident happen on this kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Reproduction {
    /// The running kernel and real tools produce the incident as they would on a node.
    Native { how: &'static str },
    /// The old behaviour no longer exists here; the lab reproduces its wire picture faithfully and says
    /// how.
    Emulated {
        why: &'static str,
        how: &'static str,
    },
}

impl Reproduction {
    pub fn label(&self) -> &'static str {
        match self {
            Reproduction::Native { .. } => "native",
            Reproduction::Emulated { .. } => "emulated",
        }
    }

    /// One paragraph for `lab list` and the run output.
    pub fn explain(&self) -> String {
        match self {
            Reproduction::Native { how } => format!("native: {how}"),
            Reproduction::Emulated { why, how } => format!("EMULATED: {why} The lab {how}"),
        }
    }
}

/// A scenario as `lab list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioInfo {
    pub name: &'static str,
    /// The catalogue incident it reproduces (serialised as its id); `None` for the healthy scenario.
    #[serde(serialize_with = "incident_id")]
    pub incident: Option<&'static Incident>,
    pub reproduction: Reproduction,
    /// One line: what happens.
    pub summary: &'static str,
    /// What `--mitigated` changes (the documented fix).
    pub mitigation: &'static str,
    /// Builds the scene, drives the traffic and says what the application saw.
    #[serde(skip)]
    pub(crate) run: fn(&mut lab::Lab) -> error::Result<scene::Recorded>,
}

fn incident_id<S: serde::Serializer>(
    incident: &Option<&'static Incident>,
    s: S,
) -> Result<S::Ok, S::Error> {
    incident.map(|i| i.id).serialize(s)
}

/// Every scenario, in catalogue order, healthy last.
pub fn scenarios() -> &'static [ScenarioInfo] {
    scenarios::INFOS
}

pub fn scenario(name: &str) -> Option<&'static ScenarioInfo> {
    scenarios::INFOS.iter().find(|s| s.name == name)
}

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Apply the documented fix: the symptom and the finding must be gone.
    pub mitigated: bool,
    /// Where to write the captures, events and counters. Default: a new directory under the system
    /// temp dir (`netsleuth-lab-<scenario>-<pid>-<n>`), which is left in place.
    pub out_dir: Option<PathBuf>,
    /// Leave the namespaces in place after the run for inspection (`ip netns exec NAME …`); remove
    /// them later with [`cleanup`].
    pub keep: bool,
    /// Skip running the analysis on the captures (the report then has none).
    pub skip_analysis: bool,
    /// Run `netsleuth watch` on the run's namespaces while the incident happens; what it named is in
    /// the report (`RunReport::watch`).
    pub watch: bool,
}

/// Runs one scenario. Needs root and the tools of [`cmd::REQUIRED_TOOLS`]; see [`preflight`].
/// Installs SIGINT/SIGTERM/SIGHUP handlers that remove the lab's namespaces before the process dies.
pub fn run(name: &str, opts: &RunOptions) -> Result<RunReport, LabError> {
    let info = scenario(name).ok_or_else(|| LabError::UnknownScenario(name.to_string()))?;
    preflight()?;
    registry::install_signal_cleanup();
    registry::remove_stale(false);
    lab::run(info, opts)
}

/// Checks what the lab needs before it touches anything: root, the tools, network namespaces.
pub fn preflight() -> Result<(), LabError> {
    if unsafe { libc::geteuid() } != 0 {
        return Err(LabError::NotRoot);
    }
    for (tool, package) in cmd::REQUIRED_TOOLS {
        if cmd::which(tool).is_none() {
            return Err(LabError::MissingTool {
                tool: tool.to_string(),
                package,
            });
        }
    }
    if !std::path::Path::new("/proc/self/ns/net").exists() {
        return Err(LabError::MissingKernelFeature {
            what: "network namespaces".into(),
            hint: "use a kernel built with CONFIG_NET_NS".into(),
        });
    }
    Ok(())
}

/// Removes lab namespaces whose run is gone (and, with `all`, every lab namespace not owned by this
/// process, e.g. those left by `--keep`). Returns their names.
pub fn cleanup(all: bool) -> Vec<String> {
    registry::remove_stale(all)
}

/// The Debian/Ubuntu packages that provide the lab's tools (for CI and error messages).
pub const APT_PACKAGES: &[&str] = &[
    "iproute2",
    "iptables",
    "nftables",
    "conntrack",
    "tcpdump",
    "procps",
];

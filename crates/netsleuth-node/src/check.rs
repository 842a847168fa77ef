//! `check`: findings, diagnostics and a summary of what was looked at.

use crate::detect::{detect, CheckOptions};
use crate::facts::{NodeFacts, Presence};
use netsleuth_core::{Diagnostic, Finding, FindingKind};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct NamespaceSummary {
    pub id: String,
    pub is_node: bool,
    pub processes: Vec<String>,
    pub sysctls: usize,
    pub iptables_rules: usize,
    pub nft_rules: usize,
    pub services: usize,
    pub source_nat_rules: usize,
    pub links: usize,
    pub routes: usize,
    pub listeners: usize,
    pub established: usize,
    pub conntrack_entries: Option<u64>,
    pub samples: usize,
    /// Milliseconds between the first and the last counter sample.
    pub sample_span_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RootSummary {
    pub id: String,
    pub is_node: bool,
    pub processes: Vec<String>,
    pub nameservers: Vec<String>,
    pub options: Vec<String>,
    /// `present`, `absent` or `unknown`.
    pub nsswitch: &'static str,
    pub libc: Option<String>,
    pub go: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FactsSummary {
    pub source: String,
    pub collected_at: String,
    pub hostname: Option<String>,
    pub kernel: Option<String>,
    pub namespaces: Vec<NamespaceSummary>,
    pub roots: Vec<RootSummary>,
    pub probes: usize,
}

/// Not serialised as-is: the CLI turns it into the report document (`netsleuth_core::report::json`).
#[derive(Debug, Clone)]
pub struct CheckReport {
    pub findings: Vec<Finding>,
    pub diagnostics: Vec<Diagnostic>,
    pub summary: FactsSummary,
}

impl CheckReport {
    /// Whether any finding is an incident (the CLI's exit code 1).
    pub fn has_incident(&self) -> bool {
        self.findings
            .iter()
            .any(|f| f.kind == FindingKind::Incident)
    }
}

pub fn check(facts: &NodeFacts, opts: &CheckOptions) -> CheckReport {
    CheckReport {
        findings: detect(facts, opts),
        diagnostics: facts.diagnostics.clone(),
        summary: summarize(facts),
    }
}

pub fn summarize(facts: &NodeFacts) -> FactsSummary {
    let namespaces = facts
        .namespaces
        .iter()
        .map(|ns| NamespaceSummary {
            id: ns.id.clone(),
            is_node: ns.is_node,
            processes: ns.comms.clone(),
            sysctls: ns.sysctls.as_ref().map(|s| s.len()).unwrap_or(0),
            iptables_rules: ns.iptables.as_ref().map(|r| r.rules.len()).unwrap_or(0)
                + ns.ip6tables.as_ref().map(|r| r.rules.len()).unwrap_or(0),
            nft_rules: ns.nft.as_ref().map(|r| r.rules.len()).unwrap_or(0),
            services: ns.services().len(),
            source_nat_rules: ns.source_nat_rules().len(),
            links: ns.links.as_ref().map(Vec::len).unwrap_or(0),
            routes: ns.routes.as_ref().map(Vec::len).unwrap_or(0),
            listeners: ns
                .sockets
                .iter()
                .flatten()
                .filter(|s| s.state == "LISTEN")
                .count(),
            established: ns
                .sockets
                .iter()
                .flatten()
                .filter(|s| s.state == "ESTAB")
                .count(),
            conntrack_entries: ns.conntrack.as_ref().map(|c| c.entries),
            samples: ns.samples.len(),
            sample_span_ms: ns.samples.last().map(|s| s.offset_ms).unwrap_or(0),
        })
        .collect();
    let roots = facts
        .roots
        .iter()
        .map(|r| RootSummary {
            id: r.id.clone(),
            is_node: r.is_node,
            processes: r.comms.clone(),
            nameservers: r
                .resolv
                .present()
                .map(|c| c.nameservers.iter().map(|n| n.addr.clone()).collect())
                .unwrap_or_default(),
            options: r
                .resolv
                .present()
                .map(|c| c.options.iter().map(|(o, _)| o.clone()).collect())
                .unwrap_or_default(),
            nsswitch: match r.nsswitch {
                Presence::Present(_) => "present",
                Presence::Absent => "absent",
                Presence::Unknown => "unknown",
            },
            libc: r
                .libc
                .as_ref()
                .map(|l| format!("{} {}", l.kind, l.version.as_deref().unwrap_or("?"))),
            go: r
                .go_binaries
                .iter()
                .map(|g| format!("{} {}", g.path, g.info.go_version))
                .collect(),
        })
        .collect();
    FactsSummary {
        source: facts.manifest.target.clone(),
        collected_at: facts.manifest.collected_at.clone(),
        hostname: facts.manifest.hostname.clone(),
        kernel: facts.kernel.clone(),
        namespaces,
        roots,
        probes: facts.probes.len(),
    }
}

//! What a run hands back: whether the incident reproduced (the application's own outcome, measured),
//! the files it wrote, counter deltas, drop reasons, notes, and the analysis of its captures.

use crate::counters::CounterDelta;
use crate::dropmon::DropReasons;
use crate::Reproduction;
use netsleuth_core::node::NodeContext;
use netsleuth_core::report::escape::for_terminal as esc;
use netsleuth_core::FindingKind;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArtifactKind {
    /// The incident node's `tcpdump -i any` (pcap, LINUX_SLL2): each packet before and after NAT.
    NodeCapture,
    /// The client pod's own `tcpdump -i eth0` (pcap, Ethernet).
    ClientCapture,
    /// The server's own `tcpdump -i eth0` (a pod's, or the remote node's).
    ServerCapture,
    /// The node's interface toward the server (the server pod's veth on the node, else `eth0`).
    VethCapture,
    /// `tcpdump -i any` on a node that only routes (the remote node with pods, no NAT).
    RoutingCapture,
    /// `conntrack -E -o timestamp,id` in the node namespace.
    ConntrackEvents,
    /// `ip -ts monitor address route link` in the node namespace.
    NetlinkEvents,
    /// Counters before/after and their deltas (JSON), plus the raw texts.
    Counters,
    /// `node.tar.gz`: `netsleuth collect` of the recorded node's namespace and its pods.
    NodeBundle,
    /// Files of the node's state: the rules and nft rulesets the lab loaded, its resolv.conf,
    /// facts.json (the node facts the analysis read).
    NodeState,
    /// A file as a container sees it (resolv.conf, hosts, nsswitch.conf).
    ContainerFile,
    /// Logs of lab-run daemons (the DNS forwarder).
    Log,
}

#[derive(Debug, Clone, Serialize)]
pub struct Artifact {
    pub kind: ArtifactKind,
    pub path: PathBuf,
    pub description: String,
}

/// A number the scenario measured (a lookup's duration, resets seen, a counter delta it relies on).
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
}

impl Measurement {
    pub fn new(name: impl Into<String>, value: f64, unit: &'static str) -> Self {
        Measurement {
            name: name.into(),
            value,
            unit,
        }
    }
}

/// Whether a run proved what it should: the one judgement the CLI, the tests and the fixture
/// regeneration use. An incident run must show its symptom and, when its captures were analysed, the
/// analysis must name its id; a mitigated or healthy run must show neither the symptom nor any
/// incident finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub proven: bool,
    /// One line: what the run proved, or what it did not.
    pub why: String,
}

impl Verdict {
    /// The one judgement of a run: an incident run must show its symptom and the analysis must name
    /// its id; a mitigated or healthy run must show neither. `named` is what the analysis named
    /// (`None`: the captures were not analysed). Used for live runs and for recorded ones.
    pub fn judge(
        incident: Option<&str>,
        mitigated: bool,
        symptom_seen: bool,
        named: Option<&[&str]>,
    ) -> Verdict {
        let (proven, why) = match (incident, mitigated) {
            (Some(id), false) => match (symptom_seen, named) {
                (false, _) => (false, format!("{id} did NOT reproduce this time")),
                (true, None) => (
                    true,
                    format!("reproduced {id} (its captures were not analysed)"),
                ),
                (true, Some(n)) if n.contains(&id) => {
                    (true, format!("reproduced {id}, and the analysis named it"))
                }
                (true, Some(n)) => (
                    false,
                    format!("{id} reproduced but the analysis did not name it (it named: {n:?})"),
                ),
            },
            _ => {
                let what = if mitigated {
                    "mitigated run"
                } else {
                    "healthy run"
                };
                match (symptom_seen, named) {
                    (true, _) => (false, format!("{what}: the symptom still showed")),
                    (false, None) => (
                        true,
                        format!("{what}: no symptom (its captures were not analysed)"),
                    ),
                    (false, Some([])) => (true, format!("{what}: no symptom, no incident finding")),
                    (false, Some(n)) => (
                        false,
                        format!("{what}: no symptom, but the analysis named {n:?}"),
                    ),
                }
            }
        };
        Verdict { proven, why }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub scenario: &'static str,
    pub incident: Option<&'static str>,
    pub mitigated: bool,
    pub reproduction: Reproduction,
    /// The application saw the incident's symptom (for a mitigated or healthy run: it must not).
    pub symptom_seen: bool,
    /// One line: what the application saw, with numbers.
    pub outcome: String,
    /// Per-connection / per-lookup lines of what happened.
    pub events: Vec<String>,
    pub measurements: Vec<Measurement>,
    pub out_dir: PathBuf,
    pub artifacts: Vec<Artifact>,
    /// Counters that moved during the traffic.
    pub counter_deltas: Vec<CounterDelta>,
    pub counters_unavailable: Vec<String>,
    pub drop_reasons: DropReasons,
    /// The node facts the analysis read (from the run's bundle, `node.tar.gz`, plus
    /// `emulated_sysctls`); not repeated in run.json: they are its `facts.json`, which
    /// `analyze --node facts.json` reads.
    #[serde(skip)]
    pub node_context: NodeContext,
    /// Sysctls this kernel lacks that the scenario plays (e.g. tcp_tw_recycle), as the old node had
    /// them; they are in `node_context` too.
    pub emulated_sysctls: BTreeMap<String, String>,
    /// The emulation label, what was mitigated, and anything else worth knowing about this run.
    pub notes: Vec<String>,
    /// The namespaces of the run; removed unless `keep`.
    pub namespaces: Vec<String>,
    pub namespaces_kept: bool,
    pub wall_time: Duration,
    /// What `netsleuth watch` named while the run happened (`--watch` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watch: Option<crate::watch::WatchRecord>,
    /// netsleuth's analysis of the run's captures (node view and client view together).
    #[serde(skip)]
    pub analysis: Option<netsleuth_core::Analysis>,
}

impl RunReport {
    /// Did the run prove what it should? See [`Verdict`].
    pub fn verdict(&self) -> Verdict {
        let named: Option<Vec<&str>> = self.analysis.as_ref().map(|a| {
            a.findings
                .iter()
                .filter(|f| f.kind == FindingKind::Incident)
                .map(|f| f.id)
                .collect()
        });
        Verdict::judge(
            self.incident,
            self.mitigated,
            self.symptom_seen,
            named.as_deref(),
        )
    }

    pub fn artifact(&self, kind: ArtifactKind) -> Option<&Artifact> {
        self.artifacts.iter().find(|a| a.kind == kind)
    }

    /// The counter delta of `name` in a source whose label contains `source`.
    pub fn counter_delta(&self, source: &str, name: &str) -> i128 {
        self.counter_deltas
            .iter()
            .filter(|d| d.source.contains(source) && d.name == name)
            .map(|d| d.delta())
            .sum()
    }

    /// Human text: outcome, numbers, files, counters, drop reasons, notes. The analysis is rendered by
    /// the caller with the core's report renderer. Text that came from outside the lab's own code
    /// (tool output, kernel names, paths) is escaped as it is formatted.
    pub fn render_text(&self) -> String {
        let mut s = String::new();
        let verdict = match (self.incident, self.mitigated, self.symptom_seen) {
            (None, _, false) => "healthy traffic, no incident symptom".to_string(),
            (None, _, true) => "UNEXPECTED: the healthy scenario showed a symptom".to_string(),
            (Some(id), false, true) => format!("REPRODUCED {id}"),
            (Some(id), false, false) => format!("NOT reproduced: {id} did not show this time"),
            (Some(id), true, false) => format!("mitigated: {id} did not occur"),
            (Some(id), true, true) => format!("mitigation FAILED: {id} still occurred"),
        };
        let _ = writeln!(
            s,
            "lab {}{}: {verdict}",
            self.scenario,
            if self.mitigated { " --mitigated" } else { "" }
        );
        let _ = writeln!(s, "  {}", self.reproduction.explain());
        let _ = writeln!(s, "  outcome: {}", esc(&self.outcome));
        for e in &self.events {
            let _ = writeln!(s, "    {}", esc(e));
        }
        if !self.measurements.is_empty() {
            let _ = writeln!(s, "  measured:");
            for m in &self.measurements {
                let _ = writeln!(
                    s,
                    "    {:<44} {} {}",
                    esc(&m.name),
                    trim_float(m.value),
                    m.unit
                );
            }
        }
        if !self.counter_deltas.is_empty() {
            let _ = writeln!(s, "  counters that moved:");
            for d in self
                .counter_deltas
                .iter()
                .filter(|d| interesting_counter(&d.name))
            {
                let _ = writeln!(
                    s,
                    "    {:<38} {:<28} {:>8} → {:<8} ({:+})",
                    esc(&d.source),
                    esc(&d.name),
                    d.before,
                    d.after,
                    d.delta()
                );
            }
        }
        if self.drop_reasons.available {
            let mut reasons: Vec<_> = self.drop_reasons.by_location.iter().collect();
            reasons.sort_by(|a, b| b.1.cmp(a.1));
            let shown: Vec<String> = reasons
                .iter()
                .filter(|(k, _)| !k.starts_with("NOT_SPECIFIED"))
                .take(8)
                .map(|(k, v)| format!("{} ×{v}", esc(k)))
                .collect();
            let _ = writeln!(
                s,
                "  kernel drop reasons (kernel-wide): {}",
                if shown.is_empty() {
                    "none besides NOT_SPECIFIED".into()
                } else {
                    shown.join(", ")
                }
            );
        } else {
            let _ = writeln!(
                s,
                "  kernel drop reasons: unavailable ({})",
                esc(&self.drop_reasons.note)
            );
        }
        let _ = writeln!(
            s,
            "  files in {}:",
            esc(&self.out_dir.display().to_string())
        );
        for a in &self.artifacts {
            let rel = a.path.strip_prefix(&self.out_dir).unwrap_or(&a.path);
            let _ = writeln!(
                s,
                "    {:<34} {}",
                esc(&rel.display().to_string()),
                esc(&a.description)
            );
        }
        // The emulation label is the second line already.
        for n in self
            .notes
            .iter()
            .filter(|n| !n.starts_with("EMULATED on this kernel"))
        {
            let _ = writeln!(s, "  note: {}", esc(n));
        }
        if self.namespaces_kept {
            let _ = writeln!(
                s,
                "  namespaces kept: {} (remove with `netsleuth lab cleanup`)",
                esc(&self.namespaces.join(" "))
            );
        }
        let _ = writeln!(s, "  wall time: {:.1} s", self.wall_time.as_secs_f64());
        s
    }
}

fn trim_float(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.3}")
    }
}

/// Counters worth a line in the text output (the JSON has all).
fn interesting_counter(name: &str) -> bool {
    const NAMES: &[&str] = &[
        "insert_failed",
        "drop",
        "clash_resolve",
        "invalid",
        "early_drop",
        "TcpExt.ListenOverflows",
        "TcpExt.ListenDrops",
        "TcpExt.TCPReqQFullDrop",
        "TcpExt.TCPReqQFullDoCookies",
        "TcpExt.PAWSActive",
        "TcpExt.PAWSEstab",
        "TcpExt.TCPAbortOnData",
        "TcpExt.TCPSynRetrans",
        "TcpExt.TCPLossProbes",
        "Tcp.RetransSegs",
        "Tcp.OutRsts",
        "Tcp.AttemptFails",
        "Tcp.EstabResets",
        "Udp.NoPorts",
        "in_martian_src",
        "IpExt.InNoRoutes",
        "Ip.InAddrErrors",
    ];
    NAMES.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_tools_and_paths_is_escaped() {
        let h = || "\u{1b}]0;PWNED\u{7}\u{1b}[2J\nfake".to_string();
        let out_dir = std::env::temp_dir().join(h());
        let mut drop_reasons = DropReasons {
            available: true,
            ..Default::default()
        };
        drop_reasons.by_location.insert(h(), 3);
        let r = RunReport {
            scenario: "healthy",
            incident: None,
            mitigated: false,
            reproduction: Reproduction::Native { how: "test" },
            symptom_seen: false,
            outcome: h(),
            events: vec![h()],
            measurements: vec![Measurement::new(h(), 1.0, "s")],
            out_dir: out_dir.clone(),
            artifacts: vec![Artifact {
                kind: ArtifactKind::Log,
                path: out_dir.join(h()),
                description: h(),
            }],
            counter_deltas: vec![CounterDelta {
                source: h(),
                name: "drop".into(),
                before: 1,
                after: 2,
            }],
            counters_unavailable: vec![],
            drop_reasons,
            node_context: NodeContext::default(),
            emulated_sysctls: BTreeMap::new(),
            notes: vec![h()],
            namespaces: vec![h()],
            namespaces_kept: true,
            wall_time: Duration::from_secs(1),
            watch: None,
            analysis: None,
        };
        let text = r.render_text();
        assert!(!text.contains('\u{1b}'), "{text:?}");
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{text:?}"
        );
        assert!(!text.lines().any(|l| l.starts_with("fake")), "{text}");
        assert!(text.contains("\\x1b]0;PWNED\\x07\\x1b[2J\\nfake"));
        let mut unavailable = r.clone();
        unavailable.drop_reasons = DropReasons {
            note: h(),
            ..Default::default()
        };
        assert!(!unavailable.render_text().contains('\u{1b}'));
    }
}

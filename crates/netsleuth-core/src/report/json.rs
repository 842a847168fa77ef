//! The versioned JSON document (`--format json`): one shape for every command.
//!
//! These types are the format, not the core's: `Finding`, `Diagnostic` and the rest of the core stay
//! free to change, and are converted here once. `docs/netsleuth.schema.json` is generated from these
//! types (the `schema_file_is_current` test below fails when it is stale; rerun it with
//! `NETSLEUTH_WRITE_SCHEMA=1` to rewrite it), and the CLI tests validate every command's output against
//! that file.
//!
//! Every document has the same envelope: `schema`, `version`, `tool`, `command`, `inputs`, `summary`,
//! `findings`, `symptoms`, `blind_spots`, `diagnostics`, `stats`, `notes`. One section is added by the
//! commands that report something other than findings: `diff` (for `diff`), `runs` (for `lab run`, one
//! run or many: always an array), `catalogue` (for `catalogue`).
//!
//! Adding a field is compatible; renaming or removing one bumps [`SCHEMA_VERSION`] (and the README's
//! table of versions says what changed).

use super::Report;
use crate::finding as model;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::net::IpAddr;

pub const SCHEMA: &str = "netsleuth.report";
/// 2: one document for every command (`diff`, `lab run --all` and `catalogue` included), `symptoms`
/// and `blind_spots` arrays. 3: Kubernetes names (`names`, a frame's `src_name`/`dst_name`, with
/// `--k8s`), a diagnostic's `severity` (a snap length's cut payloads are `info`, not a problem).
pub const SCHEMA_VERSION: u32 = 3;

/// A JSON object whose keys are not fixed by this schema (figures that grow with the tool).
pub type Object = Map<String, Value>;

/// What every `--format json` output of netsleuth is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[cfg_attr(test, schemars(title = "netsleuth report document"))]
// Each command's own section is there when, and only when, the command wrote it.
#[cfg_attr(test, schemars(extend("allOf" = [
    {"if": {"properties": {"command": {"const": "diff"}}},
     "then": {"required": ["diff"]}, "else": {"not": {"required": ["diff"]}}},
    {"if": {"properties": {"command": {"const": "lab"}}},
     "then": {"required": ["runs"]}, "else": {"not": {"required": ["runs"]}}},
    {"if": {"properties": {"command": {"const": "catalogue"}}},
     "then": {"required": ["catalogue"]}, "else": {"not": {"required": ["catalogue"]}}}
])))]
pub struct Document {
    /// Always `netsleuth.report`.
    #[cfg_attr(test, schemars(extend("const" = "netsleuth.report")))]
    pub schema: String,
    /// The version of this shape.
    #[cfg_attr(test, schemars(extend("const" = 3)))]
    pub version: u32,
    pub tool: Tool,
    /// The command that wrote the document (`lab` for `lab run`).
    #[cfg_attr(test, schemars(extend("enum" = ["analyze", "check", "diff", "lab", "catalogue"])))]
    pub command: String,
    /// What was read: capture files, bundles, `live node`; for `lab`, every run's captures.
    pub inputs: Vec<String>,
    pub summary: Summary,
    /// Incidents and latent risks, incidents first. For `lab` they are per run, under `runs`.
    pub findings: Vec<Finding>,
    /// What the inputs show went wrong, whether or not a cause was named.
    #[serde(default)]
    pub symptoms: Vec<Symptom>,
    /// What the inputs could not show (and so what no finding can be about).
    #[serde(default)]
    pub blind_spots: Vec<BlindSpot>,
    /// Problems with the inputs themselves, counted and located; the rest was analysed.
    pub diagnostics: Vec<Diagnostic>,
    /// Command-specific figures: capture statistics (`analyze`), a summary of the node's facts
    /// (`check`); empty for the others.
    pub stats: Object,
    pub notes: Vec<String>,
    /// `diff` only: the differences between the two bundles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<Diff>,
    /// `lab` only: one entry per scenario run, in the order they ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runs: Option<Vec<LabRun>>,
    /// `catalogue` only: the incidents netsleuth knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalogue: Option<Vec<Incident>>,
    /// With `--k8s` (or a bundle that recorded its pods): the Kubernetes object of each address the
    /// document mentions. The addresses themselves stay as they are everywhere else.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<Name>,
}

/// The Kubernetes object an address of the document belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Name {
    pub address: IpAddr,
    #[cfg_attr(test, schemars(extend("enum" = ["pod", "service", "node"])))]
    pub kind: String,
    /// Absent for nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    /// How the human report names it: `pod default/client-7d9f`, `service default/web`, `node worker-2`.
    pub label: String,
    /// Services: their ports on this address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ServicePort>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct ServicePort {
    pub port: u16,
    /// `TCP`, `UDP`, `SCTP`.
    pub protocol: String,
    /// The port's name in the Service (may be empty).
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Tool {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Summary {
    /// Incident findings (for `lab`: over every run).
    pub incidents: usize,
    /// Latent-risk findings (for `lab`: over every run).
    pub latent_risks: usize,
    /// The process's exit code: 0 nothing found (no incident; no difference; every lab run proven),
    /// 1 something found.
    pub exit_code: i32,
}

/// How sure a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Confidence {
    Possible,
    Likely,
    Confirmed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum FindingKind {
    /// Evidence that the incident happened or is under way.
    Incident,
    /// A configuration known to cause the incident under some load; nothing shows it bit yet.
    LatentRisk,
}

/// A catalogue incident (or a latent risk of one), how sure, and the evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Finding {
    /// The catalogue id (`netsleuth catalogue`).
    pub id: String,
    pub kind: FindingKind,
    pub confidence: Confidence,
    /// One line, specific to this case.
    pub summary: String,
    pub evidence: Vec<Evidence>,
    /// Why this confidence and not a higher one.
    pub reasoning: Vec<String>,
    /// The mechanism.
    pub explanation: String,
    /// What to change, most effective first.
    pub remedy: String,
    /// Further cases of the same incident in the same report, one line each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cases: Vec<String>,
    /// Look-alike causes considered, and whether the evidence rules each out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub look_alikes: Vec<LookAlike>,
}

/// A cause that produces a similar picture, and the evidence that rules it out (or what would).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct LookAlike {
    /// A catalogue id, or a plain cause (`application`, `server-restart`, `middlebox-idle-timeout`, …).
    pub id: String,
    pub ruled_out: bool,
    pub why: String,
}

/// A symptom the input shows whatever its cause: counted, its worst examples, the causes considered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Symptom {
    /// `connection-resets`, `syn-retransmissions`, `dns-unanswered`, `dns-slow`, `icmp-errors`.
    pub kind: String,
    pub count: u64,
    pub summary: String,
    pub evidence: Vec<Evidence>,
    pub considered: Vec<Considered>,
    /// What is left when every listed cause was ruled out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otherwise: Option<String>,
}

/// A cause considered for a symptom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Considered {
    pub id: String,
    /// `explains` (a finding of the report names it) or `not-seen` (its signature is not in the input).
    pub verdict: String,
    pub why: String,
}

/// Something the input could not show, and the incidents it leaves undecided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct BlindSpot {
    pub what: String,
    pub undecided: Vec<String>,
}

impl From<&crate::symptoms::Symptom> for Symptom {
    fn from(s: &crate::symptoms::Symptom) -> Self {
        Symptom {
            kind: s.kind.as_str().to_string(),
            count: s.count,
            summary: s.summary.clone(),
            evidence: s.evidence.iter().map(Evidence::from).collect(),
            considered: s
                .considered
                .iter()
                .map(|c| Considered {
                    id: c.id.to_string(),
                    verdict: c.verdict.to_string(),
                    why: c.why.clone(),
                })
                .collect(),
            otherwise: s.otherwise.clone(),
        }
    }
}

impl From<&crate::symptoms::BlindSpot> for BlindSpot {
    fn from(b: &crate::symptoms::BlindSpot) -> Self {
        BlindSpot {
            what: b.what.clone(),
            undecided: b.undecided.iter().map(|u| u.to_string()).collect(),
        }
    }
}

/// One packet a finding points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct FrameRef {
    /// 1-based frame number within its file (as Wireshark numbers them).
    pub frame: u64,
    /// Capture timestamp, nanoseconds since the Unix epoch.
    pub ts_ns: i64,
    /// The same timestamp as RFC 3339 text.
    pub time: String,
    pub src: IpAddr,
    pub src_port: u16,
    pub dst: IpAddr,
    pub dst_port: u16,
    /// What the packet is, in tcpdump's terms.
    pub what: String,
    /// Interface name or index where the capture saw it, if the capture says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// TCP header fields (absent for UDP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpFields>,
    /// Transport payload length in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub len: Option<u32>,
    /// The connection (TCP, across its NAT legs) or DNS lookup (a resolver's A/AAAA queries from one
    /// socket) the packet belongs to: frames of one finding with the same `flow` are one of them.
    /// Absent when the detector did not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<u64>,
    /// The packet that decides the finding (the segment under a new tuple, the query never
    /// answered, the SYN the full queue dropped).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub decisive: bool,
    /// The DNS message, when the detector says which it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsFields>,
    /// The Kubernetes name of `src` (with `--k8s`): `pod default/client-7d9f`, `service default/web:80`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_name: Option<String>,
}

/// A TCP segment's header fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct TcpFields {
    /// The flags set, tcpdump's names joined by `|` (`SYN|ACK`, `RST`, `none`).
    pub flags: String,
    pub seq: u32,
    pub ack: u32,
}

/// A DNS message of a lookup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct DnsFields {
    pub id: u16,
    /// The question's type (`A`, `AAAA`).
    pub qtype: String,
    /// A response (else a query).
    pub response: bool,
    /// A query sent again after the resolver's timeout.
    #[serde(default)]
    pub retry: bool,
}

/// A piece of evidence; `type` says where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Evidence {
    /// Packets of one capture file.
    Packets {
        file: String,
        frames: Vec<FrameRef>,
        note: String,
    },
    /// A counter and how it moved (`before` absent when only one sample exists).
    Counter {
        source: String,
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before: Option<u64>,
        after: u64,
    },
    /// A line of a configuration: a sysctl, a rule, a resolv.conf line.
    Config {
        source: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        line: Option<u32>,
        text: String,
    },
    /// Any other fact with its source.
    Fact { source: String, text: String },
}

/// A problem with an input itself, counted and located.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Diagnostic {
    /// Which input (file name, `-` for stdin, a bundle member).
    pub source: String,
    /// Stable short code, e.g. `truncated-record`, `missing-from-bundle`.
    pub code: String,
    /// Byte offset of the first occurrence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// Occurrences of this code in this source.
    pub count: u64,
    pub message: String,
    /// `problem`: damage, counted and located, the rest analysed; `info`: how the input was made
    /// (a snap length cut payloads, headers complete).
    #[cfg_attr(test, schemars(extend("enum" = ["problem", "info"])))]
    pub severity: String,
}

/// `diff A B`: what differs, the differences that decide a catalogue incident first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Diff {
    /// Node A as its bundle names it.
    pub a: String,
    pub b: String,
    /// Sorted by rank, area, key. Empty: no difference that matters.
    pub items: Vec<DiffItem>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct DiffItem {
    /// 0 decides a catalogue incident, 1 node identity (kernel, libc, images), 2 other.
    pub rank: u8,
    /// `kernel`, `sysctl`, `module`, `nat-rule`, `resolver`, `image`, `finding`.
    pub area: String,
    pub key: String,
    /// The value on node A; null where A lacks it.
    pub a: Option<String>,
    pub b: Option<String>,
    /// The catalogue incident the difference can decide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident: Option<String>,
}

/// One `lab run`: the scenario, whether it proved what it should, and the analysis of its captures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct LabRun {
    pub scenario: String,
    /// The catalogue id the scenario reproduces; null for the healthy scenario.
    pub incident: Option<String>,
    /// The documented fix was applied: neither symptom nor finding may show.
    pub mitigated: bool,
    /// The run proved what it should (an incident run reproduced and the analysis named it; a
    /// mitigated or healthy run showed neither).
    pub proven: bool,
    /// Why (not) proven, in one line.
    pub verdict: String,
    /// The run's captures.
    pub inputs: Vec<String>,
    pub findings: Vec<Finding>,
    #[serde(default)]
    pub symptoms: Vec<Symptom>,
    #[serde(default)]
    pub blind_spots: Vec<BlindSpot>,
    pub diagnostics: Vec<Diagnostic>,
    /// `run`: the lab's record of the run (outcome, measurements, files, counters, drop reasons);
    /// `capture`: the capture statistics of its analysis.
    pub stats: Object,
    pub notes: Vec<String>,
}

/// A catalogue entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Incident {
    pub id: String,
    pub title: String,
    pub explanation: String,
    pub remedy: String,
    /// What shows it, source by source (capture, node state, live, lab).
    #[serde(default)]
    pub evidence: String,
}

impl From<model::Confidence> for Confidence {
    fn from(c: model::Confidence) -> Self {
        match c {
            model::Confidence::Possible => Confidence::Possible,
            model::Confidence::Likely => Confidence::Likely,
            model::Confidence::Confirmed => Confidence::Confirmed,
        }
    }
}

impl From<model::FindingKind> for FindingKind {
    fn from(k: model::FindingKind) -> Self {
        match k {
            model::FindingKind::Incident => FindingKind::Incident,
            model::FindingKind::LatentRisk => FindingKind::LatentRisk,
        }
    }
}

impl From<&model::FrameRef> for FrameRef {
    fn from(f: &model::FrameRef) -> Self {
        FrameRef {
            frame: f.frame,
            ts_ns: f.ts_ns,
            time: f.time.clone(),
            src: f.src,
            src_port: f.src_port,
            dst: f.dst,
            dst_port: f.dst_port,
            what: f.what.clone(),
            interface: f.interface.clone(),
            tcp: f.tcp.map(|t| TcpFields {
                flags: t.flag_names(),
                seq: t.seq,
                ack: t.ack,
            }),
            len: f.len,
            flow: f.flow,
            decisive: f.decisive,
            dns: f.dns.as_ref().map(|d| DnsFields {
                id: d.id,
                qtype: d.qtype.to_string(),
                response: d.response,
                retry: d.retry,
            }),
            src_name: None,
            dst_name: None,
        }
    }
}

impl From<&model::Evidence> for Evidence {
    fn from(e: &model::Evidence) -> Self {
        match e {
            model::Evidence::Packets { file, frames, note } => Evidence::Packets {
                file: file.clone(),
                frames: frames.iter().map(FrameRef::from).collect(),
                note: note.clone(),
            },
            model::Evidence::Counter {
                source,
                name,
                before,
                after,
            } => Evidence::Counter {
                source: source.clone(),
                name: name.clone(),
                before: *before,
                after: *after,
            },
            model::Evidence::Config { source, line, text } => Evidence::Config {
                source: source.clone(),
                line: *line,
                text: text.clone(),
            },
            model::Evidence::Fact { source, text } => Evidence::Fact {
                source: source.clone(),
                text: text.clone(),
            },
        }
    }
}

impl From<&model::Finding> for Finding {
    fn from(f: &model::Finding) -> Self {
        Finding {
            id: f.id.to_string(),
            kind: f.kind.into(),
            confidence: f.confidence.into(),
            summary: f.summary.clone(),
            evidence: f.evidence.iter().map(Evidence::from).collect(),
            reasoning: f.reasoning.clone(),
            explanation: f.explanation.to_string(),
            remedy: f.remedy.to_string(),
            cases: f.cases.clone(),
            look_alikes: f
                .look_alikes
                .iter()
                .map(|l| LookAlike {
                    id: l.id.to_string(),
                    ruled_out: l.ruled_out,
                    why: l.why.clone(),
                })
                .collect(),
        }
    }
}

impl From<&model::Diagnostic> for Diagnostic {
    fn from(d: &model::Diagnostic) -> Self {
        Diagnostic {
            source: d.source.clone(),
            code: d.code.to_string(),
            offset: d.offset,
            frame: d.frame,
            line: d.line,
            count: d.count,
            message: d.message.clone(),
            severity: if d.is_info() { "info" } else { "problem" }.into(),
        }
    }
}

impl From<&model::Incident> for Incident {
    fn from(i: &model::Incident) -> Self {
        Incident {
            id: i.id.to_string(),
            title: i.title.to_string(),
            explanation: i.explanation.to_string(),
            remedy: i.remedy.to_string(),
            evidence: i.evidence.to_string(),
        }
    }
}

/// A JSON object of a command's figures (a value that is not an object is kept under `value`).
pub fn object(v: Value) -> Object {
    match v {
        Value::Object(m) => m,
        Value::Null => Object::new(),
        other => Object::from_iter([("value".to_string(), other)]),
    }
}

/// Exit code convention shared by all reporting commands: 0 no incident, 1 incident(s) found.
/// (2, an error, is decided by the caller.)
pub fn exit_code(r: &Report) -> i32 {
    i32::from(
        r.findings
            .iter()
            .any(|f| f.kind == model::FindingKind::Incident),
    )
}

fn count(findings: &[Finding], kind: FindingKind) -> usize {
    findings.iter().filter(|f| f.kind == kind).count()
}

impl Document {
    /// An empty document of `command`.
    fn new(command: &str, inputs: Vec<String>) -> Document {
        Document {
            schema: SCHEMA.into(),
            version: SCHEMA_VERSION,
            tool: Tool {
                name: "netsleuth".into(),
                version: env!("CARGO_PKG_VERSION").into(),
            },
            command: command.into(),
            inputs,
            summary: Summary {
                incidents: 0,
                latent_risks: 0,
                exit_code: 0,
            },
            findings: Vec::new(),
            symptoms: Vec::new(),
            blind_spots: Vec::new(),
            diagnostics: Vec::new(),
            stats: Object::new(),
            notes: Vec::new(),
            diff: None,
            runs: None,
            catalogue: None,
            names: Vec::new(),
        }
    }

    /// The document of a command that reports findings (`analyze`, `check`).
    pub fn from_report(r: &Report) -> Document {
        let findings: Vec<Finding> = r.findings.iter().map(Finding::from).collect();
        Document {
            summary: Summary {
                incidents: count(&findings, FindingKind::Incident),
                latent_risks: count(&findings, FindingKind::LatentRisk),
                exit_code: exit_code(r),
            },
            findings,
            symptoms: r.symptoms.iter().map(Symptom::from).collect(),
            blind_spots: r.blind_spots.iter().map(BlindSpot::from).collect(),
            diagnostics: r.diagnostics.iter().map(Diagnostic::from).collect(),
            stats: object(r.stats.clone()),
            notes: r.notes.clone(),
            ..Document::new(r.command, r.inputs.clone())
        }
    }

    /// `diff`: exit code 1 when it lists a difference (what it lists is what matters).
    pub fn diff(inputs: Vec<String>, diff: Diff, notes: Vec<String>) -> Document {
        Document {
            summary: Summary {
                incidents: 0,
                latent_risks: 0,
                exit_code: i32::from(!diff.items.is_empty()),
            },
            notes,
            diff: Some(diff),
            ..Document::new("diff", inputs)
        }
    }

    /// `lab run`, one run or many: exit code 1 when some run did not prove what it should.
    pub fn lab(runs: Vec<LabRun>) -> Document {
        let inputs = runs.iter().flat_map(|r| r.inputs.iter().cloned()).collect();
        Document {
            summary: Summary {
                incidents: runs
                    .iter()
                    .map(|r| count(&r.findings, FindingKind::Incident))
                    .sum(),
                latent_risks: runs
                    .iter()
                    .map(|r| count(&r.findings, FindingKind::LatentRisk))
                    .sum(),
                exit_code: i32::from(runs.iter().any(|r| !r.proven)),
            },
            runs: Some(runs),
            ..Document::new("lab", inputs)
        }
    }

    /// `catalogue`.
    pub fn catalogue(incidents: &[&model::Incident]) -> Document {
        Document {
            catalogue: Some(incidents.iter().map(|i| Incident::from(*i)).collect()),
            ..Document::new("catalogue", Vec::new())
        }
    }

    /// The document with the Kubernetes names of its addresses: each frame's `src_name` and
    /// `dst_name`, and `names` for every address of the table the document mentions (in frames or in
    /// text). The addresses themselves are unchanged. An empty table changes nothing.
    pub fn with_names(mut self, names: &crate::names::Names) -> Document {
        if names.is_empty() {
            return self;
        }
        let name_frames = |evidence: &mut Vec<Evidence>| {
            for e in evidence {
                if let Evidence::Packets { frames, .. } = e {
                    for f in frames {
                        f.src_name = names.name(&f.src, Some(f.src_port));
                        f.dst_name = names.name(&f.dst, Some(f.dst_port));
                    }
                }
            }
        };
        let name_findings = |findings: &mut Vec<Finding>, symptoms: &mut Vec<Symptom>| {
            for f in findings {
                name_frames(&mut f.evidence);
            }
            for s in symptoms {
                name_frames(&mut s.evidence);
            }
        };
        name_findings(&mut self.findings, &mut self.symptoms);
        for run in self.runs.iter_mut().flatten() {
            name_findings(&mut run.findings, &mut run.symptoms);
        }
        let text = self.to_json();
        self.names = names
            .mentioned_in(&text)
            .into_iter()
            .filter_map(|addr| {
                let n = names.get(&addr)?;
                Some(Name {
                    address: addr,
                    kind: n.kind.as_str().into(),
                    namespace: n.namespace.clone(),
                    name: n.name.clone(),
                    label: n.label(),
                    ports: n
                        .ports
                        .iter()
                        .map(|p| ServicePort {
                            port: p.port,
                            protocol: p.protocol.clone(),
                            name: p.name.clone(),
                        })
                        .collect(),
                })
            })
            .collect();
        self
    }

    /// Pretty JSON with a final newline.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("report types serialise");
        s.push('\n');
        s
    }
}

impl LabRun {
    /// A run's entry: `report` is the analysis of its captures, rendered like `analyze`'s.
    pub fn new(
        scenario: &str,
        incident: Option<&str>,
        mitigated: bool,
        proven: bool,
        verdict: String,
        report: &Report,
    ) -> LabRun {
        let doc = Document::from_report(report);
        LabRun {
            scenario: scenario.into(),
            incident: incident.map(str::to_string),
            mitigated,
            proven,
            verdict,
            inputs: doc.inputs,
            findings: doc.findings,
            symptoms: doc.symptoms,
            blind_spots: doc.blind_spots,
            diagnostics: doc.diagnostics,
            stats: doc.stats,
            notes: doc.notes,
        }
    }
}

/// The document of a report (`analyze`, `check`) as JSON text.
pub fn render(r: &Report) -> String {
    Document::from_report(r).to_json()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::CATALOGUE;
    use std::path::PathBuf;

    fn schema_path() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/netsleuth.schema.json")
    }

    /// The schema of [`Document`] as the checked-in file holds it.
    fn generated_schema() -> String {
        let schema = schemars::schema_for!(Document);
        let mut text = serde_json::to_string_pretty(&schema).unwrap();
        text.push('\n');
        text
    }

    #[test]
    fn schema_file_is_current() {
        let want = generated_schema();
        let path = schema_path();
        if std::env::var_os("NETSLEUTH_WRITE_SCHEMA").is_some() {
            std::fs::write(&path, &want).unwrap();
            return;
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "{} is stale: the report types changed (hint: regenerate it with \
             `NETSLEUTH_WRITE_SCHEMA=1 cargo test -p netsleuth-core --lib schema_file_is_current`, \
             and bump SCHEMA_VERSION if a field was renamed or removed)",
            path.display()
        );
    }

    #[test]
    fn documents_read_back_as_written() {
        let catalogue = Document::catalogue(CATALOGUE);
        let back: Document = serde_json::from_str(&catalogue.to_json()).unwrap();
        assert_eq!(back, catalogue);
        let lab = Document::lab(vec![]);
        let back: Document = serde_json::from_str(&lab.to_json()).unwrap();
        assert_eq!(back, lab);
    }

    #[test]
    fn names_are_added_to_lab_runs_and_an_empty_table_changes_nothing() {
        let frame = model::FrameRef {
            frame: 1,
            ts_ns: 0,
            time: "1970-01-01T00:00:00.000000Z".into(),
            src: "10.244.1.10".parse().unwrap(),
            src_port: 40000,
            dst: "10.96.0.20".parse().unwrap(),
            dst_port: 80,
            what: "SYN".into(),
            interface: None,
            tcp: None,
            len: None,
            flow: None,
            decisive: false,
            dns: None,
        };
        let finding = model::Finding::new(
            CATALOGUE[0],
            model::FindingKind::Incident,
            model::Confidence::Likely,
            "connection 10.244.1.10:40000 → 10.96.0.20:80".into(),
        )
        .with_evidence(model::Evidence::Packets {
            file: "x.pcap".into(),
            frames: vec![frame],
            note: "n".into(),
        });
        let report = Report {
            command: "lab",
            inputs: vec!["x.pcap".into()],
            findings: vec![finding],
            diagnostics: Vec::new(),
            stats: Value::Null,
            notes: Vec::new(),
            symptoms: Vec::new(),
            blind_spots: Vec::new(),
        };
        let run = LabRun::new("s", None, false, true, "ok".into(), &report);
        let doc = Document::lab(vec![run]);
        assert_eq!(doc.clone().with_names(&Default::default()), doc);
        let names = crate::names::Names::from_json(
            br#"{"kind":"List","items":[
              {"kind":"Pod","metadata":{"name":"c","namespace":"d"},"status":{"podIP":"10.244.1.10"}},
              {"kind":"Service","metadata":{"name":"web","namespace":"d"},"spec":{"clusterIP":"10.96.0.20","ports":[{"port":80}]}},
              {"kind":"Node","metadata":{"name":"n1"},"status":{"addresses":[{"address":"192.168.0.1"}]}}]}"#,
        )
        .unwrap();
        let named = doc.with_names(&names);
        let f = &named.runs.as_ref().unwrap()[0].findings[0];
        let Evidence::Packets { frames, .. } = &f.evidence[0] else {
            panic!()
        };
        assert_eq!(frames[0].src_name.as_deref(), Some("pod d/c"));
        assert_eq!(frames[0].dst_name.as_deref(), Some("service d/web:80"));
        // Only the addresses the document mentions: not the node.
        let labels: Vec<&str> = named.names.iter().map(|n| n.label.as_str()).collect();
        assert_eq!(labels, ["service d/web", "pod d/c"]);
        let back: Document = serde_json::from_str(&named.to_json()).unwrap();
        assert_eq!(back, named);
    }
}

//! The one finding model shared by every command that reports (`analyze`, `check`, `lab`, later `watch`).
//!
//! A finding names a catalogue incident (or a latent risk of one), says how sure it is, and points at the
//! exact evidence: frames of a capture, counters, config lines, node facts. The explanation and the
//! remedy come from the incident's own detector module (see `detect::*::INCIDENT`), so that the words
//! that explain a mechanism live beside the code that recognises it.
//!
//! These types are free to change: the JSON document has its own types (`report::json`), converted
//! from these once, so a rename here changes no output.

use crate::versions::VersionFact;
use std::net::IpAddr;

/// How sure a finding is. Ordered: `Confirmed` > `Likely` > `Possible`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Confidence {
    /// Only what the evidence could also mean by chance; worth a look, not a conclusion.
    Possible,
    /// The evidence fits the mechanism and nothing else we know of, but a link of the chain is unseen
    /// (e.g. the capture shows one NAT leg only).
    Likely,
    /// Every link of the mechanism is in the evidence (e.g. both NAT legs of one connection are visible).
    Confirmed,
}

impl Confidence {
    pub fn as_str(self) -> &'static str {
        match self {
            Confidence::Possible => "possible",
            Confidence::Likely => "likely",
            Confidence::Confirmed => "confirmed",
        }
    }
}

/// Whether the finding is an incident that happened (or is happening), or a risk that the node's state
/// carries without evidence that it has bitten yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FindingKind {
    /// Evidence that the incident happened or is under way. Drives exit code 1.
    Incident,
    /// A configuration that is known to cause the incident under some load; nothing shows it bit yet.
    LatentRisk,
}

/// A catalogue entry: everything that is about one incident, in one value. Each incident's detector
/// module defines its `INCIDENT`; `detect::CATALOGUE` lists them, and every registry (capture
/// detectors, node detectors, lab scenarios, `diff`) is keyed by `&'static Incident`, never by the id.
#[derive(Debug)]
pub struct Incident {
    /// Stable id from `incidents.md`, used verbatim in JSON and tests.
    pub id: &'static str,
    /// One line: what goes wrong.
    pub title: &'static str,
    /// Two or three sentences: the mechanism.
    pub explanation: &'static str,
    /// The fix: what to change, most effective first.
    pub remedy: &'static str,
    /// The sysctls that decide whether the incident can happen (`diff` ranks differences in them first,
    /// the lab records them).
    pub sysctls: &'static [&'static str],
    /// The behaviour changes of the kernel and libraries that decide it, in the version table.
    pub versions: &'static [&'static VersionFact],
    /// What shows it, source by source (capture, node state, live, lab), in the catalogue's words:
    /// `netsleuth explain ID` and the JSON catalogue print it.
    pub evidence: &'static str,
}

/// An incident is its id: ids are unique in the catalogue (tested), so two references to one incident
/// compare equal wherever they were taken.
impl PartialEq for Incident {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for Incident {}

impl std::hash::Hash for Incident {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.id.hash(state)
    }
}

/// One packet that a finding points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameRef {
    /// 1-based frame number within its file (as Wireshark numbers them).
    pub frame: u64,
    /// Capture timestamp, nanoseconds since the Unix epoch.
    pub ts_ns: i64,
    /// Capture timestamp as RFC 3339 text, for humans reading the JSON.
    pub time: String,
    pub src: IpAddr,
    pub src_port: u16,
    pub dst: IpAddr,
    pub dst_port: u16,
    /// What the packet is, in tcpdump's terms (`SYN`, `RST`, `ACK len=1`, `DNS A? example.com id=0x1a2b`).
    pub what: String,
    /// Interface name or index where the capture saw it, if the capture says.
    pub interface: Option<String>,
    /// TCP flags and sequence numbers (absent for UDP).
    pub tcp: Option<TcpFields>,
    /// Transport payload length.
    pub len: Option<u32>,
    /// The connection (TCP, across its NAT legs) or DNS lookup (a resolver's A/AAAA queries from one
    /// socket) the packet belongs to: packets of one finding with the same value are one of them.
    /// Absent when the detector did not say (a report then draws one diagram per tuple).
    pub flow: Option<u64>,
    /// This packet is the one that decides the finding (the segment under a new tuple, the query that
    /// was never answered, the SYN the listener dropped).
    pub decisive: bool,
    /// The DNS message, for DNS packets whose detector says which it is.
    pub dns: Option<DnsFields>,
}

/// A TCP segment's header fields, as a ladder diagram shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpFields {
    /// `crate::wire::tcp_flags` bits.
    pub flags: u8,
    pub seq: u32,
    pub ack: u32,
}

impl TcpFields {
    /// `SYN|ACK`, tcpdump's names in its order; `none` for no flag.
    pub fn flag_names(&self) -> String {
        use crate::wire::tcp_flags::*;
        let names: Vec<&str> = [
            (SYN, "SYN"),
            (FIN, "FIN"),
            (RST, "RST"),
            (PSH, "PSH"),
            (ACK, "ACK"),
        ]
        .iter()
        .filter(|(bit, _)| self.flags & bit != 0)
        .map(|(_, n)| *n)
        .collect();
        if names.is_empty() {
            "none".into()
        } else {
            names.join("|")
        }
    }
}

/// A DNS message of a lookup, as a timeline shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsFields {
    pub id: u16,
    /// `A`, `AAAA`, …
    pub qtype: &'static str,
    /// A response (else a query).
    pub response: bool,
    /// A query sent again after the resolver's timeout.
    pub retry: bool,
}

/// A piece of evidence. Each variant says where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evidence {
    /// Packets of one capture file.
    Packets {
        file: String,
        frames: Vec<FrameRef>,
        /// What these packets show, in one sentence.
        note: String,
    },
    /// A counter and how it moved (or its value, when only one sample exists).
    Counter {
        source: String,
        name: String,
        before: Option<u64>,
        after: u64,
    },
    /// A line of a configuration: a sysctl, an iptables rule, a resolv.conf line.
    Config {
        source: String,
        line: Option<u32>,
        text: String,
    },
    /// Any other fact with its source (a kernel version, a libc version, a socket).
    Fact { source: String, text: String },
}

/// What netsleuth concluded, with the evidence and how sure it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub id: &'static str,
    pub kind: FindingKind,
    pub confidence: Confidence,
    /// One line, specific to this case: addresses, ports, counts.
    pub summary: String,
    pub evidence: Vec<Evidence>,
    /// Why this confidence and not a higher one: what was seen, what was not.
    pub reasoning: Vec<String>,
    /// Further cases of the same incident in the same input (one line each), when there were several.
    pub cases: Vec<String>,
    /// The look-alike causes considered, and the evidence that rules each out (or why it could not be).
    pub look_alikes: Vec<LookAlike>,
    pub explanation: &'static str,
    pub remedy: &'static str,
}

impl Finding {
    pub fn new(
        incident: &Incident,
        kind: FindingKind,
        confidence: Confidence,
        summary: String,
    ) -> Self {
        Finding {
            id: incident.id,
            kind,
            confidence,
            summary,
            evidence: Vec::new(),
            reasoning: Vec::new(),
            cases: Vec::new(),
            look_alikes: Vec::new(),
            explanation: incident.explanation,
            remedy: incident.remedy,
        }
    }

    pub fn with_evidence(mut self, e: Evidence) -> Self {
        self.evidence.push(e);
        self
    }

    pub fn because(mut self, why: impl Into<String>) -> Self {
        self.reasoning.push(why.into());
        self
    }

    /// A look-alike cause that the evidence rules out, and how.
    pub fn rules_out(mut self, id: &'static str, why: impl Into<String>) -> Self {
        self.look_alikes.push(LookAlike {
            id,
            ruled_out: true,
            why: why.into(),
        });
        self
    }

    /// A look-alike cause the evidence cannot tell apart, and what would.
    pub fn cannot_rule_out(mut self, id: &'static str, why: impl Into<String>) -> Self {
        self.look_alikes.push(LookAlike {
            id,
            ruled_out: false,
            why: why.into(),
        });
        self
    }
}

/// A cause that produces a similar picture, and whether the evidence rules it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookAlike {
    /// A catalogue id, or a plain cause (`application`, `server-restart`, `middlebox-idle-timeout`).
    pub id: &'static str,
    pub ruled_out: bool,
    /// The evidence that rules it out, or what would decide.
    pub why: String,
}

/// A problem with the input itself (a damaged record, an unknown link type, a truncated file): counted,
/// located, reported; never fatal to the rest of the analysis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Which input (file name, `-` for stdin, a node fact source).
    pub source: String,
    /// Stable short code, e.g. `truncated-record`, `unknown-linktype`, `snaplen-cut`.
    pub code: &'static str,
    /// Where: a byte offset into the file, a frame number, a line number.
    pub offset: Option<u64>,
    pub frame: Option<u64>,
    pub line: Option<u64>,
    /// How many times this code occurred in this source (the location is that of the first).
    pub count: u64,
    pub message: String,
}

impl Diagnostic {
    /// Whether it is a fact about how the input was made rather than damage to it: a capture taken
    /// with a snap length cuts payloads, which is normal and loses nothing the detectors read (a
    /// header cut by it is `snaplen-header-cut`, a problem).
    pub fn is_info(&self) -> bool {
        self.code == "snaplen-cut"
    }
}

/// Sort findings the way reports show them: incidents first, then by confidence, then by id.
pub fn sort_findings(findings: &mut [Finding]) {
    findings.sort_by(|a, b| {
        a.kind
            .cmp(&b.kind)
            .then(b.confidence.cmp(&a.confidence))
            .then(a.id.cmp(b.id))
            .then(a.summary.cmp(&b.summary))
    });
}

/// RFC 3339 UTC text of a nanosecond Unix timestamp, without pulling in a date crate.
pub fn format_ts(ts_ns: i64) -> String {
    let secs = ts_ns.div_euclid(1_000_000_000);
    let nanos = ts_ns.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        y,
        m,
        d,
        sod / 3600,
        (sod % 3600) / 60,
        sod % 60,
        nanos / 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_ts_matches_known_dates() {
        assert_eq!(format_ts(0), "1970-01-01T00:00:00.000000Z");
        // 2019-08-12T12:47:29.084019Z
        assert_eq!(
            format_ts(1_565_614_049_084_019_000),
            "2019-08-12T12:47:29.084019Z"
        );
        assert_eq!(
            format_ts(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000000Z"
        );
    }

    #[test]
    fn incidents_sort_before_risks_and_by_confidence() {
        let inc = Incident {
            id: "a",
            title: "",
            explanation: "",
            remedy: "",
            sysctls: &[],
            versions: &[],
            evidence: "",
        };
        let mut v = vec![
            Finding::new(
                &inc,
                FindingKind::LatentRisk,
                Confidence::Confirmed,
                "r".into(),
            ),
            Finding::new(
                &inc,
                FindingKind::Incident,
                Confidence::Possible,
                "p".into(),
            ),
            Finding::new(
                &inc,
                FindingKind::Incident,
                Confidence::Confirmed,
                "c".into(),
            ),
        ];
        sort_findings(&mut v);
        let s: Vec<_> = v.iter().map(|f| f.summary.as_str()).collect();
        assert_eq!(s, ["c", "p", "r"]);
    }
}

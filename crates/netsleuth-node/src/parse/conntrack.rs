//! conntrack text: table lines (`conntrack -L`, `-o extended`, `/proc/net/nf_conntrack`, `-E` events)
//! and statistics (`conntrack -S` in the per-CPU `key=value` form and the old one-field-per-line form).
//!
//! The table is summarised while it streams by ([`ConntrackSummarizer`]): a node can hold millions of
//! entries, and the detectors need counts (states, `[UNREPLIED]`, near expiry, per destination), never
//! the entries themselves.

use super::{add, numbered_lines, split_kv, IssueLog, Parsed};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

/// One side of a conntrack tuple, borrowed from the line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CtTuple<'a> {
    pub src: &'a str,
    pub dst: &'a str,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
}

/// One table line, borrowed from the text. Addresses stay text: most summaries never need them parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CtEntry<'a> {
    /// `[NEW]`, `[DESTROY]`, `[UPDATE]` for `conntrack -E` lines.
    pub event: Option<&'a str>,
    pub l3: Option<&'a str>,
    pub proto: &'a str,
    pub timeout_s: Option<u64>,
    /// TCP/SCTP/DCCP state (`ESTABLISHED`, `TIME_WAIT` …); `None` for UDP/ICMP.
    pub state: Option<&'a str>,
    pub orig: CtTuple<'a>,
    pub reply: CtTuple<'a>,
    pub unreplied: bool,
    pub assured: bool,
}

impl CtEntry<'_> {
    /// The reply comes from somewhere other than where the original went: destination NAT.
    pub fn is_dnat(&self) -> bool {
        !self.reply.src.is_empty() && self.reply.src != self.orig.dst
    }

    /// The reply goes to somewhere other than where the original came from: source NAT.
    pub fn is_snat(&self) -> bool {
        !self.reply.dst.is_empty() && self.reply.dst != self.orig.src
    }
}

const L3_NAMES: &[&str] = &["ipv4", "ipv6"];

/// Parses one table line. `Err(code)` when the line is not a conntrack entry.
pub fn parse_entry(line: &str) -> Result<CtEntry<'_>, &'static str> {
    let mut e = CtEntry::default();
    // ASCII splitting: conntrack never prints other whitespace, and this is the per-line hot path.
    let mut it = line.split([' ', '\t']).filter(|t| !t.is_empty()).peekable();
    let mut first = it.next().ok_or("empty")?;
    if first.starts_with('[') && first.ends_with(']') {
        e.event = Some(first);
        first = it.next().ok_or("truncated")?;
    }
    if L3_NAMES.contains(&first) {
        e.l3 = Some(first);
        it.next().ok_or("truncated")?; // l3 protocol number
        first = it.next().ok_or("truncated")?;
    }
    if first.contains('=') || first.parse::<u64>().is_ok() {
        return Err("unknown-line");
    }
    e.proto = first;
    let proto_num = it.next().ok_or("truncated")?;
    if proto_num.parse::<u16>().is_err() {
        return Err("unknown-line");
    }
    // Events of `conntrack -E` carry no timeout for DESTROY; the table always does.
    if let Some(t) = it.peek() {
        if let Ok(v) = t.parse::<u64>() {
            e.timeout_s = Some(v);
            it.next();
        }
    }
    let mut tuple = 0; // 0 = original, 1 = reply
    let mut seen_src = [false, false];
    for tok in it {
        if let Some((k, v)) = split_kv(tok) {
            let side = if tuple == 0 {
                &mut e.orig
            } else {
                &mut e.reply
            };
            match k {
                "src" => {
                    if seen_src[tuple] {
                        tuple = 1;
                    }
                    if tuple == 1 && seen_src[1] {
                        continue; // a third tuple (expectations): ignore
                    }
                    seen_src[tuple] = true;
                    let side = if tuple == 0 {
                        &mut e.orig
                    } else {
                        &mut e.reply
                    };
                    side.src = v;
                }
                "dst" => side.dst = v,
                "sport" => side.sport = v.parse().ok(),
                "dport" => side.dport = v.parse().ok(),
                _ => {}
            }
        } else if tok == "[UNREPLIED]" {
            e.unreplied = true;
        } else if tok == "[ASSURED]" {
            e.assured = true;
        } else if !tok.starts_with('[') && e.state.is_none() && !seen_src[0] {
            e.state = Some(tok);
        }
    }
    if e.orig.src.is_empty() {
        return Err("truncated");
    }
    Ok(e)
}

/// Per destination (original direction), kept while streaming.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestSummary {
    pub proto: String,
    pub dst: String,
    pub dport: Option<u16>,
    pub entries: u64,
    pub unreplied: u64,
    pub established: u64,
    /// Entries whose reply came from another address (DNAT): the backends seen, with counts.
    pub dnat_backends: BTreeMap<String, u64>,
}

/// What the table looked like, without the table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConntrackSummary {
    pub entries: u64,
    pub by_proto: BTreeMap<String, u64>,
    pub by_state: BTreeMap<String, u64>,
    pub unreplied: u64,
    pub assured: u64,
    pub dnat: u64,
    pub snat: u64,
    /// Threshold for `near_expiry`, seconds.
    pub near_expiry_threshold_s: u64,
    /// ESTABLISHED TCP entries whose timeout is below the threshold: idle flows about to lose their NAT.
    pub established_near_expiry: u64,
    /// Entries of any kind with a timeout below the threshold.
    pub near_expiry: u64,
    /// The busiest destinations plus every destination on port 53, most entries first.
    pub destinations: Vec<DestSummary>,
    /// Destinations not tracked because the per-destination map was full.
    pub untracked_destinations: u64,
    /// Lines that were not entries (counted by code; the first few kept).
    pub issues: IssueLog,
    /// Lines that were skipped as tool chatter (`conntrack v1.4.7 …: N flow entries have been shown.`).
    pub chatter_lines: u64,
}

impl ConntrackSummary {
    /// Entries `[UNREPLIED]` to `ip:53` (UDP or TCP), summed.
    pub fn unreplied_dns_to(&self, ip: &str) -> (u64, u64) {
        self.destinations
            .iter()
            .filter(|d| d.dport == Some(53) && d.dst == ip)
            .fold((0, 0), |(u, e), d| (u + d.unreplied, e + d.entries))
    }
}

/// Tuning of a [`ConntrackSummarizer`].
#[derive(Debug, Clone, Copy)]
pub struct SummaryLimits {
    pub near_expiry_threshold_s: u64,
    /// Most destinations tracked at once; beyond that new destinations are only counted.
    pub max_tracked_destinations: usize,
    /// How many destinations the summary lists (port 53 ones are always listed).
    pub listed_destinations: usize,
    /// Most DNAT backends kept per destination.
    pub max_backends: usize,
}

impl Default for SummaryLimits {
    fn default() -> Self {
        SummaryLimits {
            near_expiry_threshold_s: 60,
            max_tracked_destinations: 200_000,
            listed_destinations: 100,
            max_backends: 32,
        }
    }
}

/// One conntrack entry as the summary needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flow<'a> {
    pub proto: &'a str,
    pub state: Option<&'a str>,
    pub timeout_s: Option<u64>,
    pub unreplied: bool,
    pub assured: bool,
    /// Original-direction destination (`None` when unreadable: counted, not tracked per destination).
    pub dst: Option<IpAddr>,
    pub dport: Option<u16>,
    pub reply_src: Option<IpAddr>,
    pub reply_sport: Option<u16>,
    pub dnat: bool,
    pub snat: bool,
}

#[derive(Default)]
struct DestAcc {
    entries: u64,
    unreplied: u64,
    established: u64,
    backends: HashMap<(IpAddr, Option<u16>), u64, FxBuild>,
}

/// (protocol index, destination, port): parsed, so the per-line lookup allocates nothing.
type DestKey = (u8, IpAddr, Option<u16>);

/// A small multiplicative hasher (FxHash): the keys are ours, not attacker-chosen collisions worth
/// SipHash's cost on a million-line stream.
#[derive(Default, Clone, Copy)]
struct Fx(u64);

impl std::hash::Hasher for Fx {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(5) ^ *b as u64).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.0 = (self.0.rotate_left(5) ^ i as u64).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u16(&mut self, i: u16) {
        self.0 = (self.0.rotate_left(5) ^ i as u64).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u32(&mut self, i: u32) {
        self.0 = (self.0.rotate_left(5) ^ i as u64).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type FxBuild = std::hash::BuildHasherDefault<Fx>;

/// Streams table lines into a [`ConntrackSummary`]; memory is bounded by the destination limit.
pub struct ConntrackSummarizer {
    limits: SummaryLimits,
    s: ConntrackSummary,
    protos: Vec<String>,
    dests: HashMap<DestKey, DestAcc, FxBuild>,
    line_no: u64,
}

impl ConntrackSummarizer {
    pub fn new(limits: SummaryLimits) -> Self {
        ConntrackSummarizer {
            s: ConntrackSummary {
                near_expiry_threshold_s: limits.near_expiry_threshold_s,
                ..Default::default()
            },
            limits,
            protos: Vec::new(),
            dests: HashMap::default(),
            line_no: 0,
        }
    }

    fn proto_index(&mut self, p: &str) -> u8 {
        match self.protos.iter().position(|x| x == p) {
            Some(i) => i as u8,
            None if self.protos.len() < 255 => {
                self.protos.push(p.to_string());
                (self.protos.len() - 1) as u8
            }
            None => 255,
        }
    }

    pub fn feed_line(&mut self, line: &str) {
        self.line_no += 1;
        let t = line.trim();
        if t.is_empty() {
            return;
        }
        let e = match parse_entry(t) {
            Ok(e) => e,
            Err(_)
                if t.starts_with("conntrack v") || t.contains("flow entries have been shown") =>
            {
                self.s.chatter_lines += 1;
                return;
            }
            Err(code) => {
                self.s.issues.push(self.line_no, code, t);
                return;
            }
        };
        let dnat = e.is_dnat();
        let dst = match e.orig.dst.parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                self.s.issues.push(self.line_no, "bad-address", e.orig.dst);
                None
            }
        };
        self.feed_flow(&Flow {
            proto: e.proto,
            state: e.state,
            timeout_s: e.timeout_s,
            unreplied: e.unreplied,
            assured: e.assured,
            dst,
            dport: e.orig.dport,
            reply_src: if dnat { e.reply.src.parse().ok() } else { None },
            reply_sport: e.reply.sport,
            dnat,
            snat: e.is_snat(),
        });
    }

    /// Counts one entry, however it was read (a `conntrack -L` line or a ctnetlink message).
    pub fn feed_flow(&mut self, e: &Flow<'_>) {
        let s = &mut self.s;
        s.entries += 1;
        bump(&mut s.by_proto, e.proto);
        if let Some(st) = e.state {
            bump(&mut s.by_state, st);
        }
        s.unreplied += e.unreplied as u64;
        s.assured += e.assured as u64;
        s.dnat += e.dnat as u64;
        s.snat += e.snat as u64;
        let established = e.state == Some("ESTABLISHED");
        if let Some(t) = e.timeout_s {
            if t < self.limits.near_expiry_threshold_s {
                s.near_expiry += 1;
                s.established_near_expiry += established as u64;
            }
        }
        let Some(dst) = e.dst else { return };
        let key = (self.proto_index(e.proto), dst, e.dport);
        let tracked = self.dests.len() < self.limits.max_tracked_destinations;
        let acc = match self.dests.get_mut(&key) {
            Some(a) => a,
            None if tracked => self.dests.entry(key).or_default(),
            None => {
                self.s.untracked_destinations += 1;
                return;
            }
        };
        acc.entries += 1;
        acc.unreplied += e.unreplied as u64;
        acc.established += established as u64;
        if e.dnat {
            if let Some(b) = e.reply_src {
                let bk = (b, e.reply_sport);
                if let Some(n) = acc.backends.get_mut(&bk) {
                    *n += 1;
                } else if acc.backends.len() < self.limits.max_backends {
                    acc.backends.insert(bk, 1);
                }
            }
        }
    }

    /// Feeds every line of a text.
    pub fn feed_text(&mut self, text: &str) {
        for line in text.lines() {
            self.feed_line(line);
        }
    }

    pub fn finish(self) -> ConntrackSummary {
        let mut s = self.s;
        let protos = self.protos;
        let mut all: Vec<DestSummary> = self
            .dests
            .into_iter()
            .map(|((proto, dst, dport), a)| DestSummary {
                proto: protos
                    .get(proto as usize)
                    .cloned()
                    .unwrap_or_else(|| "other".into()),
                dst: dst.to_string(),
                dport,
                entries: a.entries,
                unreplied: a.unreplied,
                established: a.established,
                dnat_backends: a
                    .backends
                    .into_iter()
                    .map(|((ip, port), n)| {
                        (
                            port.map(|p| format_endpoint(&ip.to_string(), p))
                                .unwrap_or_else(|| ip.to_string()),
                            n,
                        )
                    })
                    .collect(),
            })
            .collect();
        all.sort_by(|a, b| {
            b.entries
                .cmp(&a.entries)
                .then_with(|| a.dst.cmp(&b.dst))
                .then(a.dport.cmp(&b.dport))
        });
        let listed = self.limits.listed_destinations;
        s.destinations = all
            .into_iter()
            .enumerate()
            .filter(|(i, d)| *i < listed || d.dport == Some(53))
            .map(|(_, d)| d)
            .collect();
        s
    }
}

fn bump(m: &mut BTreeMap<String, u64>, k: &str) {
    if let Some(v) = m.get_mut(k) {
        *v += 1;
    } else {
        m.insert(k.to_string(), 1);
    }
}

fn format_endpoint(ip: &str, port: u16) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// Summarises a whole table text (tests, bundles holding a table excerpt).
pub fn summarize_table(text: &str, limits: SummaryLimits) -> ConntrackSummary {
    let mut z = ConntrackSummarizer::new(limits);
    z.feed_text(text);
    z.finish()
}

/// `conntrack -S`: per-CPU `cpu=N key=value …` lines summed over CPUs; also the old form with one
/// `name<TAB>value` per line (conntrack-tools ≤ 1.4.4 reading `/proc/net/stat/nf_conntrack`).
pub fn parse_stats(text: &str) -> Parsed<BTreeMap<String, u64>> {
    let mut value = BTreeMap::new();
    let mut issues = IssueLog::default();
    for (n, line) in numbered_lines(text) {
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        if t.contains('=') {
            for tok in t.split_whitespace() {
                match split_kv(tok) {
                    Some(("cpu", _)) => {}
                    Some((k, v)) => match v.parse::<u64>() {
                        Ok(v) => add(&mut value, k, v),
                        Err(_) => issues.push(n, "bad-number", tok),
                    },
                    None => issues.push(n, "unknown-token", tok),
                }
            }
            continue;
        }
        let mut it = t.split_whitespace();
        match (it.next(), it.next(), it.next()) {
            (Some(k), Some(v), None) if v.parse::<u64>().is_ok() && k.parse::<u64>().is_err() => {
                add(&mut value, k, v.parse::<u64>().unwrap_or(0));
            }
            _ => issues.push(n, "unknown-line", t),
        }
    }
    Parsed { value, issues }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
tcp      6 431999 ESTABLISHED src=10.244.1.5 dst=10.96.0.10 sport=40000 dport=80 src=10.244.2.7 dst=10.244.1.5 sport=8080 dport=40000 [ASSURED] mark=0 use=1
udp      17 25 src=10.244.1.5 dst=10.225.30.181 sport=5353 dport=53 [UNREPLIED] src=10.225.30.181 dst=192.168.1.10 sport=53 dport=5353 mark=0 use=1
ipv4     2 tcp      6 5 ESTABLISHED src=10.0.0.1 dst=10.0.0.2 sport=1 dport=2 src=10.0.0.2 dst=10.0.0.1 sport=2 dport=1 [ASSURED] mark=0 zone=0 use=2
    [DESTROY] tcp      6 src=10.0.0.1 dst=10.0.0.2 sport=1 dport=2 src=10.0.0.2 dst=10.0.0.1 sport=2 dport=1 [ASSURED]
conntrack v1.4.7 (conntrack-tools): 3 flow entries have been shown.
garbage here
udp 17 30 src=10.0.0.1 dst=not-an-ip sport=1 dport=2
";

    #[test]
    fn summary_counts_states_nat_unreplied_and_expiry() {
        let s = summarize_table(TABLE, SummaryLimits::default());
        assert_eq!(s.entries, 5);
        assert_eq!(s.by_state["ESTABLISHED"], 2);
        assert_eq!(s.unreplied, 1);
        assert_eq!(s.dnat, 1);
        assert_eq!(s.snat, 1);
        assert_eq!(s.established_near_expiry, 1);
        assert_eq!(s.unreplied_dns_to("10.225.30.181"), (1, 1));
        let vip = s
            .destinations
            .iter()
            .find(|d| d.dst == "10.96.0.10")
            .unwrap();
        assert_eq!(vip.dnat_backends["10.244.2.7:8080"], 1);
        assert_eq!(s.chatter_lines, 1);
        assert_eq!(s.issues.count("unknown-line"), 1);
        assert_eq!(s.issues.first[0].line, 6);
        assert_eq!(s.issues.count("bad-address"), 1);
    }

    #[test]
    fn destination_map_is_bounded() {
        let mut text = String::new();
        for i in 0..100 {
            text.push_str(&format!("udp 17 30 src=10.0.0.1 dst=10.1.0.{i} sport=1 dport=9 src=10.1.0.{i} dst=10.0.0.1 sport=9 dport=1\n"));
        }
        let s = summarize_table(
            &text,
            SummaryLimits {
                max_tracked_destinations: 10,
                listed_destinations: 5,
                ..Default::default()
            },
        );
        assert_eq!(s.entries, 100);
        assert_eq!(s.untracked_destinations, 90);
        assert_eq!(s.destinations.len(), 5);
    }

    #[test]
    fn stats_new_and_old_forms() {
        let new = parse_stats(
            "cpu=0 found=1 insert_failed=2 drop=3\ncpu=1 found=1 insert_failed=5 drop=0\n",
        );
        assert_eq!(new.value["insert_failed"], 7);
        let old = parse_stats("entries\t\t90\ninsert_failed\t\t4\n");
        assert_eq!(old.value["insert_failed"], 4);
        assert!(old.issues.is_empty());
    }
}

//! The iptables-save parser as it was before rules became compact records (commit 5193e08), kept as
//! the oracle of `tests/iptables_lean.rs`: the lean parser must read every input as this one did.
//!
//! Original documentation: `iptables-save` / `ip6tables-save` text, with kube-proxy's structure
//! recognised.
//!
//! Each rule keeps its line and text; a few options are lifted into fields (chain, target, addresses,
//! ports, comment, NAT flags). kube-proxy's chains (`KUBE-SERVICES` → `KUBE-SVC-*` → `KUBE-SEP-*` with
//! `statistic` probabilities and `DNAT --to-destination`) are assembled into [`Service`]s. A line that is
//! not iptables-save syntax (e.g. an `iptables -L` listing pasted in) is counted, not fatal.

#![allow(dead_code)]

use netsleuth_node::parse::{IssueLog, Parsed};

fn numbered_lines(text: &str) -> impl Iterator<Item = (u64, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i as u64 + 1, l.strip_suffix('\r').unwrap_or(l)))
}
use std::borrow::Cow;
use std::collections::HashMap;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rule {
    pub line: u32,
    pub table: String,
    pub chain: String,
    /// The rule as written, without the `[packets:bytes]` prefix.
    pub text: String,
    pub target: Option<String>,
    pub protocol: Option<String>,
    pub src: Option<String>,
    pub dst: Option<String>,
    pub dport: Option<String>,
    pub in_iface: Option<String>,
    /// Output interface, `!` kept as a prefix (`!cni0`).
    pub out_iface: Option<String>,
    pub comment: Option<String>,
    pub probability: Option<f64>,
    pub to_destination: Option<String>,
    pub to_source: Option<String>,
    pub random_fully: bool,
    pub random: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChainDecl {
    pub table: String,
    pub name: String,
    /// `ACCEPT`/`DROP` for built-in chains, `-` for user chains.
    pub policy: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ruleset {
    pub tables: Vec<String>,
    pub chains: Vec<ChainDecl>,
    pub rules: Vec<Rule>,
}

/// A NAT rule that rewrites the source: what `snat-port-clash` and `conntrack-snat-remap` look at.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceNatRule {
    pub source: String,
    pub line: u32,
    pub text: String,
    pub masquerade: bool,
    pub out_iface: Option<String>,
    pub random_fully: bool,
}

/// A Service (or any DNAT target) as the ruleset programs it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Service {
    /// `namespace/name:port` from kube-proxy's comment, or the chain name.
    pub name: String,
    pub vip: String,
    pub port: Option<u16>,
    pub protocol: String,
    /// `cluster IP`, `loadbalancer IP`, `external IP`, `dnat` (a plain DNAT rule, not kube-proxy's).
    pub kind: String,
    /// Endpoints `ip:port` with the probability of choosing each (1.0 for the last).
    pub endpoints: Vec<(String, f64)>,
}

/// Splits a rule into shell words (`"…"` quoting with `\"` escapes, as iptables-save writes comments).
/// Words borrow from the line unless an escape forces a copy.
pub fn shell_words(s: &str) -> Vec<Cow<'_, str>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(24);
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let start = i;
        let mut owned: Option<String> = None;
        let mut quoted = false;
        while i < b.len() && (quoted || !b[i].is_ascii_whitespace()) {
            match b[i] {
                b'"' => {
                    // A quote ends the borrowed run: copy what came before, without the quotes.
                    let o = owned.get_or_insert_with(|| strip_quotes(&s[start..i]));
                    let _ = o;
                    quoted = !quoted;
                }
                b'\\' if quoted && i + 1 < b.len() => {
                    let o = owned.get_or_insert_with(|| strip_quotes(&s[start..i]));
                    i += 1;
                    let ch_len = s[i..].chars().next().map(char::len_utf8).unwrap_or(1);
                    o.push_str(&s[i..i + ch_len]);
                    i += ch_len;
                    continue;
                }
                _ => {
                    if let Some(o) = owned.as_mut() {
                        let ch_len = s[i..].chars().next().map(char::len_utf8).unwrap_or(1);
                        o.push_str(&s[i..i + ch_len]);
                        i += ch_len;
                        continue;
                    }
                }
            }
            i += 1;
        }
        out.push(match owned {
            Some(o) => Cow::Owned(o),
            None => Cow::Borrowed(&s[start..i]),
        });
    }
    out
}

fn strip_quotes(s: &str) -> String {
    s.replace('"', "")
}

pub fn parse_iptables_save(text: &str) -> Parsed<Ruleset> {
    let mut rs = Ruleset::default();
    let mut issues = IssueLog::default();
    let mut table = String::new();
    for (n, line) in numbered_lines(text) {
        let mut t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if let Some(name) = t.strip_prefix('*') {
            table = name.trim().to_string();
            rs.tables.push(table.clone());
            continue;
        }
        if t == "COMMIT" {
            continue;
        }
        if let Some(rest) = t.strip_prefix(':') {
            let mut it = rest.split_whitespace();
            match (it.next(), it.next()) {
                (Some(name), Some(policy)) => rs.chains.push(ChainDecl {
                    table: table.clone(),
                    name: name.to_string(),
                    policy: policy.to_string(),
                }),
                _ => issues.push(n, "bad-chain", t),
            }
            continue;
        }
        // `iptables-save -c` puts `[packets:bytes]` before the rule.
        if t.starts_with('[') {
            if let Some(end) = t.find(']') {
                t = t[end + 1..].trim_start();
            }
        }
        if !(t.starts_with("-A ") || t.starts_with("-I ")) {
            issues.push(n, "unknown-line", t);
            continue;
        }
        if table.is_empty() {
            issues.push(n, "rule-outside-table", t);
        }
        match parse_rule(t, &table, n as u32) {
            Some(r) => rs.rules.push(r),
            None => issues.push(n, "bad-rule", t),
        }
    }
    Parsed { value: rs, issues }
}

fn parse_rule(t: &str, table: &str, line: u32) -> Option<Rule> {
    let words = shell_words(t);
    let mut r = Rule {
        line,
        table: table.to_string(),
        text: t.to_string(),
        ..Default::default()
    };
    let mut i = 0;
    let mut negate = false;
    while i < words.len() {
        let w: &str = &words[i];
        let next: Option<&str> = words.get(i + 1).map(|c| c.as_ref());
        let neg = |v: &str| {
            if negate {
                format!("!{v}")
            } else {
                v.to_string()
            }
        };
        let mut consumed = 1;
        match w {
            "!" => {
                negate = true;
                i += 1;
                continue;
            }
            "-A" | "-I" => {
                r.chain = next?.to_string();
                consumed = 2;
            }
            "-j" | "--jump" | "-g" | "--goto" => {
                r.target = next.map(str::to_string);
                consumed = 2;
            }
            "-p" | "--protocol" => {
                r.protocol = next.map(neg);
                consumed = 2;
            }
            "-s" | "--source" => {
                r.src = next.map(neg);
                consumed = 2;
            }
            "-d" | "--destination" => {
                r.dst = next.map(neg);
                consumed = 2;
            }
            "--dport" | "--destination-port" | "--dports" => {
                r.dport = next.map(neg);
                consumed = 2;
            }
            "-i" | "--in-interface" => {
                r.in_iface = next.map(neg);
                consumed = 2;
            }
            "-o" | "--out-interface" => {
                r.out_iface = next.map(neg);
                consumed = 2;
            }
            "--comment" => {
                r.comment = next.map(str::to_string);
                consumed = 2;
            }
            "--probability" => {
                r.probability = next.and_then(|v| v.parse().ok());
                consumed = 2;
            }
            "--to-destination" => {
                r.to_destination = next.map(str::to_string);
                consumed = 2;
            }
            "--to-source" => {
                r.to_source = next.map(str::to_string);
                consumed = 2;
            }
            "--random-fully" => r.random_fully = true,
            "--random" => r.random = true,
            _ => {}
        }
        negate = false;
        i += consumed;
    }
    if r.chain.is_empty() {
        return None;
    }
    Some(r)
}

impl Ruleset {
    /// MASQUERADE and SNAT rules.
    pub fn source_nat_rules(&self, source: &str) -> Vec<SourceNatRule> {
        self.rules
            .iter()
            .filter(|r| matches!(r.target.as_deref(), Some("MASQUERADE") | Some("SNAT")))
            .map(|r| SourceNatRule {
                source: source.to_string(),
                line: r.line,
                text: r.text.clone(),
                masquerade: r.target.as_deref() == Some("MASQUERADE"),
                out_iface: r.out_iface.clone(),
                random_fully: r.random_fully,
            })
            .collect()
    }

    /// Services as kube-proxy (iptables mode) programs them, plus plain DNAT rules with a destination.
    pub fn services(&self) -> Vec<Service> {
        let mut by_chain: HashMap<&str, Vec<&Rule>> = HashMap::new();
        for r in &self.rules {
            if r.table == "nat" || r.table.is_empty() {
                by_chain.entry(r.chain.as_str()).or_default().push(r);
            }
        }
        let mut out = Vec::new();
        let sep_dest = |chain: &str| -> Option<String> {
            by_chain
                .get(chain)?
                .iter()
                .find_map(|r| r.to_destination.clone())
        };
        for r in by_chain
            .get("KUBE-SERVICES")
            .map(Vec::as_slice)
            .unwrap_or(&[])
        {
            let (Some(dst), Some(target)) = (&r.dst, &r.target) else {
                continue;
            };
            if dst.starts_with('!') {
                continue;
            }
            let comment = r.comment.clone().unwrap_or_default();
            let kind = if comment.contains("loadbalancer IP") {
                "loadbalancer IP"
            } else if comment.contains("external IP") {
                "external IP"
            } else {
                "cluster IP"
            };
            let name = comment
                .split(' ')
                .next()
                .filter(|s| s.contains('/'))
                .map(str::to_string)
                .unwrap_or_else(|| target.clone());
            // KUBE-FW-/KUBE-EXT- chains jump on to the KUBE-SVC- chain of the same hash.
            let svc_chain = if target.starts_with("KUBE-SVC-") {
                target.clone()
            } else {
                let hash = target.rsplit('-').next().unwrap_or("");
                format!("KUBE-SVC-{hash}")
            };
            let mut endpoints = Vec::new();
            for sr in by_chain
                .get(svc_chain.as_str())
                .map(Vec::as_slice)
                .unwrap_or(&[])
            {
                let Some(t) = &sr.target else { continue };
                if t.starts_with("KUBE-SEP-") {
                    if let Some(d) = sep_dest(t) {
                        endpoints.push((d, sr.probability.unwrap_or(1.0)));
                    }
                }
            }
            out.push(Service {
                name,
                vip: strip_prefix_len(dst).to_string(),
                port: r.dport.as_deref().and_then(|p| p.parse().ok()),
                protocol: r.protocol.clone().unwrap_or_else(|| "tcp".into()),
                kind: kind.to_string(),
                endpoints,
            });
        }
        // Plain DNAT rules (docker, hand-made VIPs): the destination is a NATed address all the same.
        for r in &self.rules {
            if r.target.as_deref() != Some("DNAT") || r.chain.starts_with("KUBE-SEP-") {
                continue;
            }
            let (Some(dst), Some(to)) = (&r.dst, &r.to_destination) else {
                continue;
            };
            if dst.starts_with('!') {
                continue;
            }
            out.push(Service {
                name: format!("{}:{}", r.chain, r.line),
                vip: strip_prefix_len(dst).to_string(),
                port: r.dport.as_deref().and_then(|p| p.parse().ok()),
                protocol: r.protocol.clone().unwrap_or_else(|| "all".into()),
                kind: "dnat".into(),
                endpoints: vec![(to.clone(), 1.0)],
            });
        }
        out
    }

    /// Whether kube-proxy (iptables or ipvs mode) programmed this ruleset.
    pub fn has_kube_proxy(&self) -> bool {
        self.chains
            .iter()
            .any(|c| c.name == "KUBE-SERVICES" || c.name == "KUBE-POSTROUTING")
    }
}

fn strip_prefix_len(cidr: &str) -> &str {
    cidr.strip_suffix("/32")
        .or_else(|| cidr.strip_suffix("/128"))
        .unwrap_or(cidr)
}

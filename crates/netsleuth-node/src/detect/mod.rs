//! Node detectors: pure functions from [`NodeFacts`] to findings.
//!
//! Two kinds, as the finding model says: an **incident** needs evidence that it is happening now (a
//! counter that rose between the two samples, a socket already idle past its NAT entry's life, a
//! nameserver that did not answer the probe); a **latent risk** is a configuration known to cause the
//! incident under some load. For a latent risk, the confidence says how many of the risk's conditions
//! were read from the node (`confirmed`: all; `likely`: the configuration, with the load unknown;
//! `possible`: some condition could not be read, e.g. an unreadable version).
//!
//! Invariant: a namespace with no rules, sockets, bridges or resolver files yields no finding.

pub mod catalog;
mod dns;
mod nat;
mod tcp;

use crate::facts::{NetnsFacts, NodeFacts};
use netsleuth_core::{Confidence, Evidence, Finding, FindingKind};
use std::net::IpAddr;

pub use catalog::incident;

#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Conntrack timeout assumed when the sysctl was not collected (kernel default 432000 s).
    pub default_tcp_timeout_established_s: u64,
    /// Established sockets idle less than this are not listed individually in dnat-rebalance evidence.
    pub min_listed_idle_ms: u64,
    /// Most evidence items per finding (the summary keeps the totals).
    pub max_evidence: usize,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            default_tcp_timeout_established_s: 432_000,
            min_listed_idle_ms: 0,
            max_evidence: 12,
        }
    }
}

pub(crate) struct Ctx<'a> {
    pub facts: &'a NodeFacts,
    pub opts: &'a CheckOptions,
}

impl Ctx<'_> {
    pub fn kernel(&self) -> Option<&str> {
        self.facts.kernel.as_deref()
    }

    pub fn node(&self) -> Option<&NetnsFacts> {
        self.facts.node_netns()
    }
}

pub(crate) fn finding(
    id: &str,
    kind: FindingKind,
    confidence: Confidence,
    summary: String,
) -> Finding {
    Finding::new(incident(id), kind, confidence, summary)
}

pub(crate) fn config(
    source: impl Into<String>,
    line: Option<u32>,
    text: impl Into<String>,
) -> Evidence {
    Evidence::Config {
        source: source.into(),
        line,
        text: text.into(),
    }
}

pub(crate) fn fact(source: impl Into<String>, text: impl Into<String>) -> Evidence {
    Evidence::Fact {
        source: source.into(),
        text: text.into(),
    }
}

pub(crate) fn counter(
    source: impl Into<String>,
    name: &str,
    before: Option<u64>,
    after: u64,
) -> Evidence {
    Evidence::Counter {
        source: source.into(),
        name: name.into(),
        before,
        after,
    }
}

/// Whether an address is one the internet could route (a public LB IP), as opposed to private,
/// shared, loopback or link-local space.
pub(crate) fn is_public(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v) => {
            let o = v.octets();
            !(v.is_private()
                || v.is_loopback()
                || v.is_link_local()
                || v.is_unspecified()
                || v.is_broadcast()
                || (o[0] == 100 && (64..128).contains(&o[1])))
        }
        IpAddr::V6(v) => {
            let s = v.segments();
            !(v.is_loopback()
                || v.is_unspecified()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80)
        }
    }
}

pub(crate) fn sysctl_evidence(ns: &NetnsFacts, name: &str) -> Option<Evidence> {
    let v = ns.sysctl(name)?;
    Some(config(
        format!("{}/sysctl.txt", ns.prefix()),
        None,
        format!("{name} = {v}"),
    ))
}

/// Runs every detector.
pub fn detect(facts: &NodeFacts, opts: &CheckOptions) -> Vec<Finding> {
    let ctx = Ctx { facts, opts };
    let mut out = Vec::new();
    for ns in &facts.namespaces {
        nat::snat_remap(&ctx, ns, &mut out);
        nat::snat_port_clash(&ctx, ns, &mut out);
        nat::dnat_rebalance(&ctx, ns, &mut out);
        nat::bridge_nf_bypass(&ctx, ns, &mut out);
        tcp::tw_recycle(&ctx, ns, &mut out);
        tcp::listen_overflow(&ctx, ns, &mut out);
        tcp::local_source_drop(&ctx, ns, &mut out);
    }
    for root in &facts.roots {
        dns::conntrack_race(&ctx, root, &mut out);
        dns::go_dns_first(&ctx, root, &mut out);
        dns::id_collision(&ctx, root, &mut out);
    }
    dns::upstream_unreachable(&ctx, &mut out);
    for f in &mut out {
        f.evidence.truncate(opts.max_evidence.max(1));
    }
    netsleuth_core::finding::sort_findings(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_classification() {
        let p = |s: &str| is_public(&s.parse().unwrap());
        assert!(p("203.0.113.10"));
        assert!(p("170.106.134.124"));
        assert!(!p("10.96.0.10"));
        assert!(!p("100.64.1.1"));
        assert!(!p("fd00::1"));
    }
}

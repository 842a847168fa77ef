//! `dns-upstream-unreachable` [seed 003]: a nameserver in the node's resolv.conf never answers, so
//! CoreDNS (forward . /etc/resolv.conf) times out whenever it picks it.

use crate::finding::Incident;

pub static INCIDENT: Incident = Incident {
    id: "dns-upstream-unreachable",
    title: "a DNS server never answers while the others do",
    explanation: "A resolver (a pod's libc, or CoreDNS forwarding to the node's /etc/resolv.conf) sends \
queries to a nameserver that never answers. Each query that goes to it times out before the next server is \
tried, so lookups fail or take seconds intermittently. Such entries are often injected behind the admin's \
back, e.g. by /etc/resolvconf/resolv.conf.d/base or cloud-init.",
    remedy: "Remove the dead nameserver from the node's resolv.conf and from where it is generated \
(/etc/resolvconf/resolv.conf.d/base|head, cloud-init, DHCP); restart CoreDNS so it re-reads the list.",
    sysctls: &[
        "net.netfilter.nf_conntrack_udp_timeout",
    ],
    versions: &[],
    evidence: "Node: a `nameserver` in `/etc/resolv.conf` that does not answer (probe it, opt-in); \
its origin (`/etc/resolvconf/resolv.conf.d/base|head`, cloud-init). CoreDNS with `forward . /etc/resolv.conf`. \
Capture: queries to that server never answered while the other upstreams answer. conntrack: UDP entries to it \
stay `[UNREPLIED]`.",
};

use super::{with_packets, Context};
use crate::finding::{Confidence, Evidence, Finding, FindingKind};
use crate::flow::dns::FinishedQuery;
use crate::flow::PktRef;
use std::collections::BTreeMap;
use std::net::IpAddr;

#[derive(Default)]
struct ServerStats {
    queries: u32,
    answered: u32,
    examples: Vec<PktRef>,
    first_ts: Option<i64>,
    last_ts: i64,
}

const MIN_UNANSWERED: u32 = 3;

/// Recognises a DNS server that answers none of its queries while other servers answer.
#[derive(Default)]
pub struct Detector {
    servers: BTreeMap<IpAddr, ServerStats>,
}

impl Detector {
    pub fn query(&mut self, f: &FinishedQuery) {
        let q = &f.query;
        // Attribute the query to the server at every point it was seen (VIP and backend).
        for (_, server) in &q.points {
            let s = self.servers.entry(server.ip).or_default();
            s.queries += 1;
            s.first_ts.get_or_insert(q.pkt.ts_ns);
            s.last_ts = s.last_ts.max(q.pkt.ts_ns);
            if q.response.is_some() {
                s.answered += 1;
            } else if s.examples.len() < 4 {
                s.examples.push(q.pkt);
            }
        }
    }

    pub fn finish(self, ctx: &Context<'_>, out: &mut Vec<Finding>) {
        let answering: Vec<IpAddr> = self
            .servers
            .iter()
            .filter(|(_, s)| s.answered > 0)
            .map(|(ip, _)| *ip)
            .collect();
        for (ip, s) in &self.servers {
            if s.answered > 0 || s.queries < MIN_UNANSWERED {
                continue;
            }
            // With no server answering at all, a one-way capture or a capture filter explains as much;
            // speak up only when the silence lasted.
            let span = s.last_ts.saturating_sub(s.first_ts.unwrap_or(s.last_ts));
            if answering.is_empty() && (s.queries < 5 || span < 10_000_000_000) {
                continue;
            }
            let in_resolv_conf = ctx.node.nameservers.contains(ip);
            let confidence = match (answering.is_empty(), in_resolv_conf) {
                (false, true) => Confidence::Confirmed,
                (false, false) => Confidence::Likely,
                (true, _) => Confidence::Possible,
            };
            let mut f = Finding::new(
                &INCIDENT,
                FindingKind::Incident,
                confidence,
                format!("DNS server {ip} answered none of {} queries", s.queries),
            );
            f = if answering.is_empty() {
                f.because("no DNS server answered in this capture, so the capture point itself (a filter, a one-way capture) is not ruled out")
            } else {
                f.because(format!(
                    "other servers answered in the same capture ({}), so the client's network works: this server is dead or unreachable",
                    answering.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ")
                ))
            };
            if in_resolv_conf {
                f = f
                    .because("the server is a nameserver of the node's resolv.conf")
                    .with_evidence(Evidence::Config {
                        source: ctx.node.source.clone(),
                        line: None,
                        text: format!("nameserver {ip}"),
                    });
            }
            let pkts: Vec<(PktRef, String)> = s
                .examples
                .iter()
                .map(|p| (*p, "query never answered".to_string()))
                .collect();
            f = f.rules_out(super::dns_conntrack_race::INCIDENT.id, "every query to this server went unanswered, not one of a parallel pair whose twin was answered");
            f = if answering.is_empty() {
                f.cannot_rule_out("capture-filter", "no server answered in this capture: a one-way capture or a filter would look the same")
            } else {
                f.rules_out(
                    "capture-filter",
                    "answers from other servers are in the same capture, so it does see replies",
                )
            };
            out.push(with_packets(
                f,
                ctx,
                &pkts,
                "queries to a server that never answers",
            ));
        }
    }
}

impl super::CaptureDetector for Detector {
    fn query(&mut self, q: &FinishedQuery) {
        Detector::query(self, q)
    }

    fn finish_stands_alone(&self) -> bool {
        true
    }

    fn finish(
        self: Box<Self>,
        ctx: &Context<'_>,
        _explained: &[u64],
        out: &mut Vec<Finding>,
    ) -> Vec<u64> {
        Detector::finish(*self, ctx, out);
        Vec::new()
    }
}

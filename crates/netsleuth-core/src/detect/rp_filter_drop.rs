//! `rp-filter-drop`: strict reverse-path filtering drops packets that arrive on an interface other
//! than the one the route back to their source uses (multi-NIC nodes, policy routing, some CNIs).

use crate::finding::Incident;
use crate::versions;

pub static INCIDENT: Incident = Incident {
    id: "rp-filter-drop",
    title: "strict reverse-path filtering drops packets that arrive on the 'wrong' interface",
    explanation: "With rp_filter=1 (strict), the kernel accepts a packet only if the route back to its \
source leaves through the interface the packet came in on. The value that applies to an interface is the \
maximum of net.ipv4.conf.all.rp_filter and net.ipv4.conf.<dev>.rp_filter. On a node with two links \
(a second NIC, a VLAN, an overlay), with policy routing, or behind a CNI that routes replies another way, \
packets from a source whose route back is another interface are dropped silently before any socket sees \
them: SYNs go unanswered from some sources on some interfaces only (TcpExt IPReversePathFilter counts \
them; drop reason IP_RPFILTER).",
    remedy: "Use loose mode (rp_filter=2) on the interfaces that see asymmetric traffic, and in `all` \
(the maximum applies: a strict `all` overrides a loose device); or make the path symmetric (a route back \
through the receiving interface, policy routing with `ip rule from <its address> table <its own>`). \
CNIs that need it set it on their own devices (Calico sets rp_filter on its interfaces).",
    sysctls: &[
        "net.ipv4.conf.all.rp_filter",
        "net.ipv4.conf.default.rp_filter",
    ],
    versions: &[&versions::DROP_REASON_IP_RPFILTER],
    evidence: "Node: `rp_filter` per interface (the max of `all` and the interface's own), interfaces \
with IPv4 addresses on more than one uplink, `ip rule` beyond the defaults; `TcpExt IPReversePathFilter` \
rising between samples; the kernel drop reason IP_RPFILTER. Capture (node `-i any`, which names the \
interface): SYNs from one source arriving on one interface and never answered, while the same source \
is answered on another interface (where the replies to it leave) and other sources are answered on the \
first one.",
};

use super::{capped_entry, with_packets, Context, Finished, SynRecord};
use crate::finding::{Confidence, Evidence, Finding, FindingKind};
use crate::flow::FxHashMap;
use std::net::IpAddr;

/// The loopback device's index in every Linux network namespace.
const LOOPBACK_IFINDEX: u32 = 1;

/// Unanswered SYN records kept per source.
const DROPS_PER_SOURCE: usize = 8;

#[derive(Default)]
struct Source {
    /// Interfaces on which this source's SYNs arrived and were answered, with counts.
    answered_in: Vec<(u32, u32)>,
    /// Interfaces the answers to this source left by: where its route back goes.
    replies_out: Vec<u32>,
    dropped: Vec<(u32, SynRecord)>,
    dropped_total: u32,
}

/// Recognises SYNs from one source that die on one interface while the source is answered on
/// another: a `-i any` capture names each packet's interface.
#[derive(Default)]
pub struct Detector {
    max_keys: usize,
    sources: FxHashMap<IpAddr, Source>,
    /// Interfaces on which some SYN was answered, with counts.
    answered_on: FxHashMap<u32, u32>,
}

fn bump(v: &mut Vec<(u32, u32)>, k: u32) {
    if let Some((_, n)) = v.iter_mut().find(|(i, _)| *i == k) {
        *n += 1;
    } else if v.len() < 16 {
        v.push((k, 1));
    }
}

impl Detector {
    pub fn connection(&mut self, c: &Finished<'_>) {
        if !c.roles_known {
            return;
        }
        let (Some(first), Some(leg)) = (c.syns.first(), c.legs.first()) else {
            return;
        };
        let Some(ifindex) = first.ifindex else {
            return; // a capture of one interface says nothing about where packets came in
        };
        let src = leg.client.ip;
        // Traffic the host sends itself (over `lo`, or to its own address) never passes the
        // reverse-path check; a source answered only there is the host's own address
        // (local-source-drop's picture), not one routed back elsewhere.
        if ifindex == LOOPBACK_IFINDEX || src == leg.server.ip {
            return;
        }
        if c.synack.is_some() {
            *self.answered_on.entry(ifindex).or_default() += 1;
            if let Some(s) = capped_entry(&mut self.sources, src, self.max_keys) {
                bump(&mut s.answered_in, ifindex);
                if let Some(out) = c.synack_ifindex {
                    if !s.replies_out.contains(&out) && s.replies_out.len() < 16 {
                        s.replies_out.push(out);
                    }
                }
            }
            return;
        }
        if c.syn_transmissions < 2 || c.legs.len() != 1 || c.rsts.iter().any(|r| !r.from_client) {
            return;
        }
        let Some(rec) = c.syn_record().cloned() else {
            return;
        };
        if let Some(s) = capped_entry(&mut self.sources, src, self.max_keys) {
            s.dropped_total += 1;
            if s.dropped.len() < DROPS_PER_SOURCE {
                s.dropped.push((ifindex, rec));
            }
        }
    }

    pub fn finish(self, ctx: &Context<'_>, explained: &[u64], out: &mut Vec<Finding>) -> Vec<u64> {
        let mut ids = Vec::new();
        let strict_all = ctx
            .node
            .sysctl("net.ipv4.conf.all.rp_filter")
            .map(|v| v.trim() == "1");
        let strict_devs: Vec<String> = ctx
            .node
            .sysctls
            .iter()
            .filter(|(k, v)| {
                k.starts_with("net.ipv4.conf.") && k.ends_with(".rp_filter") && v.trim() == "1"
            })
            .map(|(k, v)| format!("{k} = {}", v.trim()))
            .collect();
        let facts_known = ctx.node.sysctl("net.ipv4.conf.all.rp_filter").is_some();
        let mut sources: Vec<_> = self.sources.into_iter().collect();
        sources.sort_by_key(|(ip, _)| *ip);
        for (src, s) in sources {
            let dropped: Vec<&(u32, SynRecord)> = s
                .dropped
                .iter()
                .filter(|(_, r)| explained.binary_search(&r.conn).is_err())
                .collect();
            let Some(&&(bad_if, _)) = dropped.first() else {
                continue;
            };
            // Dropped only on interfaces where this source was never answered.
            if s.answered_in.iter().any(|(i, _)| *i == bad_if) {
                continue;
            }
            let good: Vec<u32> = s
                .answered_in
                .iter()
                .map(|(i, _)| *i)
                .chain(s.replies_out.iter().copied())
                .filter(|i| *i != bad_if)
                .collect();
            if good.is_empty() {
                continue;
            }
            let others_on_bad = self.answered_on.get(&bad_if).copied().unwrap_or(0);
            let confidence = match (strict_all, strict_devs.is_empty(), facts_known) {
                (Some(true), _, _) => Confidence::Confirmed,
                (_, true, true) => Confidence::Possible,
                _ => Confidence::Likely,
            };
            let mut f = Finding::new(
                &INCIDENT,
                FindingKind::Incident,
                confidence,
                format!(
                    "{} SYN(s) from {src} arriving on interface {bad_if} were never answered, while {src} was answered through interface {}: its route back leaves by another interface, and strict reverse-path filtering drops what comes in on {bad_if}",
                    s.dropped_total,
                    good[0]
                ),
            )
            .because(format!(
                "the same source was answered on interface {} (replies to it leave by interface {}): the host and the listener work for it, only the interface differs",
                good[0],
                s.replies_out.first().map(|i| i.to_string()).unwrap_or_else(|| "unseen".into())
            ));
            if others_on_bad > 0 {
                f = f.because(format!(
                    "{others_on_bad} SYN(s) from other sources were answered on interface {bad_if}: the interface itself works"
                ));
            }
            match (strict_all, facts_known) {
                (Some(true), _) => {
                    f = f
                        .because("the node facts say net.ipv4.conf.all.rp_filter = 1: every interface is strict (the maximum of all and the device applies)")
                        .with_evidence(Evidence::Config {
                            source: ctx.node.source.clone(),
                            line: None,
                            text: "net.ipv4.conf.all.rp_filter = 1".into(),
                        })
                }
                (_, true) if strict_devs.is_empty() => {
                    f = f.because("the node facts show no strict rp_filter: another per-interface filter (a firewall rule matching the input interface, an XDP or tc program) is more likely")
                }
                (_, true) => {
                    for d in strict_devs.iter().take(4) {
                        f = f.with_evidence(Evidence::Config { source: ctx.node.source.clone(), line: None, text: d.clone() });
                    }
                    f = f.because("strict rp_filter is set on some interfaces; which one is interface {bad_if} the capture does not say (its ifindex, not its name)".replace("{bad_if}", &bad_if.to_string()))
                }
                _ => {
                    f = f.because("rp_filter per interface is not in the capture (`netsleuth check`, or `analyze --node`, reads it); a firewall rule matching the input interface would look the same")
                }
            }
            f = f
                .rules_out(super::listen_queue_overflow::INCIDENT.id, "the listener answered this very source on another interface at the same time")
                .rules_out(super::local_source_drop::INCIDENT.id, "the source is answered on another interface, so it is not an address the node owns")
                .cannot_rule_out("firewall", "a filter rule matching the input interface (-i) drops the same SYNs; rp_filter and TcpExt IPReversePathFilter decide");
            let mut pkts = Vec::new();
            for (ifx, r) in dropped.iter().take(3) {
                for (p, what) in r.evidence() {
                    pkts.push((p, format!("{what} (in on interface {ifx})")));
                }
            }
            ids.extend(dropped.iter().map(|(_, r)| r.conn));
            out.push(with_packets(
                f,
                ctx,
                &pkts,
                "SYNs that arrived on an interface the route back does not use, never answered",
            ));
        }
        ids.sort_unstable();
        ids
    }
}

impl super::CaptureDetector for Detector {
    fn connection(&mut self, c: &Finished<'_>) {
        Detector::connection(self, c)
    }

    fn finish(
        self: Box<Self>,
        ctx: &Context<'_>,
        explained: &[u64],
        out: &mut Vec<Finding>,
    ) -> Vec<u64> {
        Detector::finish(*self, ctx, explained, out)
    }

    fn set_max_keys(&mut self, max_keys: usize) {
        self.max_keys = max_keys;
    }
}

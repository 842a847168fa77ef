//! `local-source-drop` [seed 003]: an LB IP bound on kube-ipvs0 is in table local, so packets whose
//! source is that IP (the LB's health checks) are dropped as martian.

use crate::finding::Incident;
use crate::versions;

pub static INCIDENT: Incident = Incident {
    id: "local-source-drop",
    title: "packets from the LoadBalancer IP dropped as martian (the node owns that address)",
    explanation: "kube-proxy in IPVS mode binds Service and LoadBalancer IPs to the dummy device kube-ipvs0, \
which puts them in the node's 'local' routing table. A packet that arrives from outside with one of those \
addresses as its SOURCE (a cloud LB's health check) fails reverse-path validation with accept_local=0 and \
is dropped as a martian (rt_cache in_martian_src; drop reason IP_LOCAL_SOURCE): the LB sees the node as \
unhealthy.",
    remedy: "Exclude LoadBalancer IPs from kube-ipvs0 (kube-proxy --exclude-external-ip / newer kube-proxy \
behaviour, or ipvs strictARP settings as the provider documents), or have the LB probe from another address; \
net.ipv4.conf.<dev>.accept_local=1 alone lets the probe in, but the reply must still route back.",
    // rp_filter also takes part in source validation; it is listed (once) by rp-filter-drop.
    sysctls: &["net.ipv4.conf.all.accept_local"],
    versions: &[&versions::DROP_REASON_IP_LOCAL_SOURCE],
    evidence: "Node: the Service's LoadBalancer IP is an address on `kube-ipvs0` (so `local <IP>` in table \
local) and `accept_local=0`; `externalTrafficPolicy: Local`. Counter: `/proc/net/stat/rt_cache` `in_martian_src`. \
Drop reason IP_LOCAL_SOURCE (≈6.13+). Capture: SYNs from the LB IP to the NodePort, never answered.",
};

use super::{one_flow, with_marked_packets, Context, Finished, SynRecord};
use crate::finding::{Confidence, Evidence, Finding, FindingKind};
use crate::flow::{Endpoint, FxHashMap};
use std::collections::BTreeSet;
use std::net::IpAddr;

const MAX_KEEP: usize = 1024;

/// Recognises a source address whose every SYN to a port goes unanswered while the port answers
/// others; with node facts, an address the node owns (kube-ipvs0, table local).
#[derive(Default)]
pub struct Detector {
    /// Most distinct keys kept (0: the default `MAX_KEYS`).
    max_keys: usize,
    by_pair: FxHashMap<(IpAddr, Endpoint), PairSyns>,
    answered_servers: FxHashMap<Endpoint, u32>,
    /// Addresses this capture point answered SYNs for: the host owns them.
    answering_ips: BTreeSet<IpAddr>,
    /// Addresses of connections carried over the loopback interface (ifindex 1 in a Linux `-i any`
    /// capture): only local addresses are routed over `lo`.
    loopback_ips: BTreeSet<IpAddr>,
}

/// The loopback device's index in every Linux network namespace.
const LOOPBACK_IFINDEX: u32 = 1;

/// Per source/server pair: whether any SYN was answered, full records only for those that were not.
#[derive(Default)]
struct PairSyns {
    answered: bool,
    unanswered: Vec<SynRecord>,
}

impl Detector {
    pub fn connection(&mut self, c: &Finished<'_>) {
        let Some(rec) = c.syn_record() else { return };
        // Key by the address the client addressed (the NodePort), not by the backend behind DNAT: the
        // dropped SYNs never got as far as a DNAT leg.
        let server = c
            .legs
            .first()
            .map(|l| l.server)
            .unwrap_or(rec.first_syn.dst);
        if c.synack.is_some() {
            if let Some(n) = super::capped_entry(&mut self.answered_servers, server, self.max_keys)
            {
                *n += 1;
            }
            // A connection seen at several points of one `-i any` capture was forwarded: its server
            // is beyond the node, whose owning the address that answered proves nothing.
            if c.copies == 0 && self.answering_ips.len() < 65_536 {
                self.answering_ips.insert(server.ip);
                if let Some(l) = c.legs.first() {
                    self.answering_ips.insert(l.server.ip);
                }
            }
        }
        if self.loopback_ips.len() < 65_536 {
            for leg in c
                .legs
                .iter()
                .filter(|l| l.first.ifindex == Some(LOOPBACK_IFINDEX))
            {
                self.loopback_ips.insert(leg.client.ip);
                self.loopback_ips.insert(leg.server.ip);
            }
        }
        if let Some(v) = super::capped_entry(
            &mut self.by_pair,
            (rec.first_syn.src.ip, server),
            self.max_keys,
        ) {
            if rec.answered {
                v.answered = true;
            } else if v.unanswered.len() < MAX_KEEP {
                v.unanswered.push(rec.clone());
            }
        }
    }

    pub fn finish(self, ctx: &Context<'_>, explained: &[u64], out: &mut Vec<Finding>) {
        let mut pairs: Vec<_> = self.by_pair.into_iter().collect();
        pairs.sort_by_key(|(k, _)| *k);
        for ((src, server), pair) in pairs {
            let recs = pair.unanswered;
            if pair.answered
                || recs
                    .iter()
                    .any(|r| explained.binary_search(&r.conn).is_ok())
            {
                continue;
            }
            let transmissions: u32 = recs.iter().map(|r| r.transmissions).sum();
            if recs.len() < 2 && transmissions < 3 {
                continue;
            }
            let others_answered = self.answered_servers.get(&server).copied().unwrap_or(0);
            let node_owned =
                ctx.node.ipvs_bound_addrs.contains(&src) || ctx.node.local_addrs.contains(&src);
            let seen_on_lo = self.loopback_ips.contains(&src) && !src.is_loopback();
            let seen_owned = self.answering_ips.contains(&src) || seen_on_lo;
            let confidence = if node_owned {
                Confidence::Confirmed
            } else if seen_owned && others_answered > 0 {
                Confidence::Likely
            } else if others_answered > 0 {
                Confidence::Possible
            } else {
                continue;
            };
            let mut f = Finding::new(
                &INCIDENT,
                FindingKind::Incident,
                confidence,
                format!("every SYN from {src} to {server} ({} connections, {transmissions} SYNs) was dropped without reply", recs.len()),
            )
            .because(format!("{server} answered {others_answered} connections from other sources in the same capture: the listener is up, only this source is dropped"));
            if node_owned {
                let text = if ctx.node.ipvs_bound_addrs.contains(&src) {
                    format!("{src} is bound on a kube-ipvs0-like device: in table local")
                } else {
                    format!("{src} is a local address of the node")
                };
                f = f.because("the node owns the source address, so with accept_local=0 the kernel drops these packets as martians").with_evidence(Evidence::Fact {
                    source: ctx.node.source.clone(),
                    text,
                });
            } else if seen_on_lo {
                f = f.because(format!("this capture shows connections to {src} carried over the node's loopback interface (ifindex {LOOPBACK_IFINDEX}): only local addresses are routed there, so the node owns {src} and packets arriving FROM it are martians (with accept_local=0)"));
            } else if seen_owned {
                f = f.because(format!("this capture shows the host answering connections to {src}: the host owns that address, so packets arriving FROM it are martians"));
            } else {
                f = f.because("why this source is dropped is not in the capture: a source address the node owns (table local) is one cause; give --node to check");
            }
            if !node_owned && seen_owned {
                f = f.because("not confirmed: the capture shows the address is local, not which device holds it nor the node's accept_local; the node's facts (--node: the address on kube-ipvs0, in table local, accept_local=0) would confirm it");
            }
            let mut pkts = Vec::new();
            for r in recs.iter().take(3) {
                // The first SYN is the one the kernel dropped as a martian.
                pkts.extend(one_flow(&r.evidence(), r.conn, &r.first_syn));
            }
            f = f
                .rules_out(super::listen_queue_overflow::INCIDENT.id, "every SYN from this one source went unanswered while other sources were answered at once: not bursts at a full queue")
                .cannot_rule_out("firewall", "a firewall rule or NetworkPolicy dropping this source looks the same from the wire; the node's routing table `local` or the drop reason (IP_LOCAL_SOURCE) decides");
            out.push(with_marked_packets(
                f,
                ctx,
                &pkts,
                "SYNs from one source, never answered",
            ));
        }
    }
}

impl super::CaptureDetector for Detector {
    fn set_max_keys(&mut self, max_keys: usize) {
        self.max_keys = max_keys;
    }

    fn connection(&mut self, c: &Finished<'_>) {
        Detector::connection(self, c)
    }

    fn finish(
        self: Box<Self>,
        ctx: &Context<'_>,
        explained: &[u64],
        out: &mut Vec<Finding>,
    ) -> Vec<u64> {
        Detector::finish(*self, ctx, explained, out);
        Vec::new()
    }
}

//! `hairpin-off`: a pod that backs a Service connects to that Service; DNAT picks the pod itself, and
//! the bridge does not send the frame back out of the port it came in on (hairpin mode off). The
//! connection times out, for that pod only, whenever the Service balances it to itself.

use crate::finding::Incident;

pub static INCIDENT: Incident = Incident {
    id: "hairpin-off",
    title: "a pod cannot reach its own Service: DNAT picks the pod itself and the bridge port has hairpin off",
    explanation: "With a bridge CNI (kubenet, bridge, flannel's cni0) and bridge-nf-call-iptables=1, \
kube-proxy's DNAT runs while the frame is being bridged. When a pod connects to a Service that it backs and \
the DNAT picks the pod itself, the frame must leave through the bridge port it arrived on. A bridge forwards \
a frame back out of its ingress port only when that port has hairpin mode on; with it off the frame is \
dropped silently. The pod's connects to its own Service time out whenever the Service balances them to \
itself (1/N of them with N backends); every other client is fine.",
    remedy: "Turn hairpin mode on for the pods' bridge ports: kubelet --hairpin-mode=hairpin-veth (or \
promiscuous-bridge for kubenet), the bridge CNI's `\"hairpinMode\": true`; by hand `ip link set <veth> type \
bridge_slave hairpin on` (or `echo 1 > /sys/class/net/<veth>/brport/hairpin_mode`). kube-proxy already \
masquerades hairpin traffic (KUBE-MARK-MASQ for the backend's own address).",
    sysctls: &[],
    versions: &[],
    evidence: "Node: the pod's bridge port (`ip -d link`: `hairpin off`, `/sys/class/net/<veth>/brport/\
hairpin_mode` = 0) with the pod's address an endpoint of a Service, and bridge-nf-call-iptables=1. Capture \
(node `-i any`): SYNs from a backend's own address to its Service's ClusterIP, retransmitted, never seen \
after DNAT and never answered, while other clients' connections to the Service were DNATed to that \
backend and answered.",
};

use super::{capped_entry, secs, with_packets, Context, Finished, SynRecord};
use crate::finding::{Confidence, Evidence, Finding, FindingKind};
use crate::flow::{Endpoint, FxHashMap};
use std::net::IpAddr;

/// Unanswered SYN records kept (further ones are counted).
const MAX_CANDIDATES: usize = 256;

#[derive(Default)]
struct Backends {
    /// Backend address → (its port, a connection from another client DNATed to it and answered).
    seen: Vec<(IpAddr, u16, u64)>,
}

/// Recognises SYNs from a Service's own backend to the Service that vanish without a DNATed copy.
#[derive(Default)]
pub struct Detector {
    max_keys: usize,
    /// Service address → the backends the capture saw it DNAT to (answered connections only).
    backends: FxHashMap<Endpoint, Backends>,
    /// (client, Service address) → connections of the client to it that were answered.
    answered: FxHashMap<(IpAddr, Endpoint), u32>,
    /// Unanswered SYNs to a Service, with the copy DNATed to the client itself when the capture saw it.
    candidates: Vec<(SynRecord, Option<(crate::flow::PktRef, u16)>)>,
    more_candidates: u32,
}

impl Detector {
    pub fn connection(&mut self, c: &Finished<'_>) {
        let Some(first) = c.legs.first() else { return };
        if !c.roles_known {
            return;
        }
        let service = first.server;
        let self_dnat = c
            .legs
            .iter()
            .enumerate()
            .skip(1)
            .find(|(_, l)| l.server.ip == first.client.ip && l.server.ip != service.ip);
        // Answered by another backend after the SYN had been DNATed to the client itself: the first
        // transmission died at the bridge and the retransmission was balanced elsewhere (conntrack
        // never confirmed the first choice), one retransmission timeout late.
        let late = self_dnat.is_some_and(|(_, l)| {
            c.syn_transmissions >= 2
                && c.synack.is_some_and(|a| {
                    a.src != l.server && a.ts_ns > c.syns.get(1).map_or(i64::MAX, |s| s.pkt.ts_ns)
                })
        });
        if late {
            if let Some(rec) = c.syn_record().cloned() {
                let (_, l) = self_dnat.expect("late implies a self-DNAT leg");
                if self.candidates.len() < MAX_CANDIDATES {
                    self.candidates.push((rec, Some((l.first, l.server.port))));
                } else {
                    self.more_candidates += 1;
                }
            }
        }
        // The same, seen from where the translated first SYN was not captured (the watch tap, a
        // capture on the pod's side of the bridge): the first transmission died inside the node and
        // the retransmission was answered. A candidate only if the client is shown to be a backend
        // of that Service (`finish`); otherwise this is another cause's (a port clash's) drop.
        if self_dnat.is_none()
            && c.syn_transmissions >= 2
            && c.synack
                .is_some_and(|a| a.ts_ns > c.syns.get(1).map_or(i64::MAX, |s| s.pkt.ts_ns))
        {
            if let Some(rec) = c.syn_record().filter(|r| r.lost_inside_node).cloned() {
                if self.candidates.len() < MAX_CANDIDATES {
                    self.candidates.push((rec, None));
                } else {
                    self.more_candidates += 1;
                }
            }
        }
        if c.synack.is_some() || c.established {
            if !late {
                if let Some(n) = capped_entry(
                    &mut self.answered,
                    (first.client.ip, service),
                    self.max_keys,
                ) {
                    *n += 1;
                }
            }
            // A leg to another server with the same client port is the DNATed copy.
            for leg in c.legs.iter().skip(1) {
                if leg.server.ip != service.ip && leg.client.ip != leg.server.ip {
                    if let Some(b) = capped_entry(&mut self.backends, service, self.max_keys) {
                        if b.seen.len() < 16
                            && !b.seen.iter().any(|(ip, _, _)| *ip == leg.server.ip)
                        {
                            b.seen.push((leg.server.ip, leg.server.port, c.id));
                        }
                    }
                }
            }
            return;
        }
        // Unanswered: retransmitted, never answered; either DNATed to the client's own address (a node
        // capture sees the translated copy leave for the bridge) or never seen after NAT at all.
        if c.syn_transmissions < 2 || c.rsts.iter().any(|r| !r.from_client) {
            return;
        }
        let self_dnat = self_dnat.map(|(_, l)| (l.first, l.server.port));
        if self_dnat.is_none() && c.legs.len() != 1 {
            return;
        }
        let Some(rec) = c.syn_record().cloned() else {
            return;
        };
        if self.candidates.len() < MAX_CANDIDATES {
            self.candidates.push((rec, self_dnat));
        } else {
            self.more_candidates += 1;
        }
    }

    pub fn finish(self, ctx: &Context<'_>, explained: &[u64], out: &mut Vec<Finding>) -> Vec<u64> {
        struct Case {
            rec: SynRecord,
            backend_port: u16,
            self_dnat: Option<crate::flow::PktRef>,
            from_capture: Option<u64>,
            from_node: Option<String>,
        }
        let mut cases: Vec<Case> = Vec::new();
        // Clients the capture saw DNATed to themselves by a Service: its backends.
        let proven: Vec<_> = self
            .candidates
            .iter()
            .filter(|(_, d)| d.is_some())
            .map(|(r, _)| (r.origin_ip, r.first_syn.dst))
            .collect();
        for (rec, self_dnat) in self.candidates {
            if explained.binary_search(&rec.conn).is_ok() {
                continue;
            }
            let client = rec.origin_ip;
            let service = rec.first_syn.dst;
            let seen = self
                .backends
                .get(&service)
                .and_then(|b| b.seen.iter().find(|(ip, _, _)| *ip == client));
            let node = ctx
                .node
                .service_for(service.ip, service.port)
                .and_then(|s| {
                    s.endpoints
                        .iter()
                        .find(|(ip, _)| *ip == client)
                        .map(|(_, port)| (s.name.clone(), *port))
                });
            let proven_backend = proven.contains(&(client, service));
            if self_dnat.is_none() && seen.is_none() && node.is_none() && !proven_backend {
                continue;
            }
            cases.push(Case {
                backend_port: self_dnat
                    .map(|d| d.1)
                    .or(seen.map(|s| s.1))
                    .or(node.as_ref().map(|n| n.1))
                    .unwrap_or(0),
                self_dnat: self_dnat.map(|d| d.0),
                from_capture: seen.map(|s| s.2),
                from_node: node.map(|n| n.0),
                rec,
            });
        }
        if cases.is_empty() {
            return Vec::new();
        }
        // The strongest case leads: one whose DNAT to the client itself the capture saw.
        cases.sort_by_key(|c| c.self_dnat.is_none());
        let lead = &cases[0];
        let client = lead.rec.origin_ip;
        let service = lead.rec.first_syn.dst;
        let answered_own = self.answered.get(&(client, service)).copied().unwrap_or(0);
        let mut f = Finding::new(
            &INCIDENT,
            FindingKind::Incident,
            Confidence::Likely,
            format!(
                "{} connection(s) from {client} to its own Service {service} lost their SYN ({} never answered, {} answered by another backend only after the retransmission): {}, and the bridge did not send the SYN back out of the port it came from (hairpin off)",
                cases.len() as u32 + self.more_candidates,
                cases.iter().filter(|c| !c.rec.answered).count(),
                cases.iter().filter(|c| c.rec.answered).count(),
                if lead.self_dnat.is_some() {
                    format!("DNAT sent them to {client}:{}, the client itself", lead.backend_port)
                } else {
                    format!("{client}:{} is a backend of that Service, so DNAT could choose the client itself, and nothing was seen after it", lead.backend_port)
                }
            ),
        );
        if let Some(p) = lead.self_dnat {
            f = f.because(format!(
                "the capture saw the SYN translated to {client}:{} — the client's own address — and it never came back to the client: the bridge dropped it at the port it came from",
                p.dst.port
            ));
        }
        if lead.from_capture.is_some() {
            f = f.because(format!(
                "the capture shows another client's connection to {service} DNATed to {client}:{} and answered: {client} backs the Service and its listener works",
                lead.backend_port
            ));
        }
        if let Some(name) = &lead.from_node {
            f = f
                .because(format!(
                    "the node's rules list {client}:{} as an endpoint of {name}",
                    lead.backend_port
                ))
                .with_evidence(Evidence::Fact {
                    source: ctx.node.source.clone(),
                    text: format!(
                        "Service {name} ({service}) has endpoint {client}:{}",
                        lead.backend_port
                    ),
                });
        }
        if answered_own > 0 {
            f = f.because(format!(
                "{answered_own} other connection(s) from {client} to {service} were answered at once (balanced to another backend): the client's path to the Service works"
            ));
        }
        f = f
            .because("the bridge port's hairpin mode is not in a capture (`netsleuth check` reads it); a NetworkPolicy that drops a pod's traffic to itself would look the same")
            .rules_out(
                super::listen_queue_overflow::INCIDENT.id,
                "the SYNs never reached the backend's listener (DNATed to the client itself, or not seen after DNAT), and that listener answered other clients",
            )
            .rules_out(
                super::bridge_nf_bypass::INCIDENT.id,
                "no reply came back at all, not a reply from the backend's own address",
            )
            .cannot_rule_out(
                "network-policy",
                "a policy dropping the pod's traffic to itself drops the same SYNs; the bridge port's hairpin_mode decides",
            );
        let mut pkts = Vec::new();
        for c in cases.iter().take(3) {
            for (p, what) in c.rec.evidence() {
                pkts.push((p, format!("{what} (to its own Service)")));
            }
            if let Some(p) = c.self_dnat {
                pkts.push((
                    p,
                    format!(
                        "the same SYN after DNAT: to {}:{}, the client itself",
                        p.dst.ip, p.dst.port
                    ),
                ));
            }
        }
        if let Some(w) = lead.rec.retransmits.first() {
            f.summary.push_str(&format!(
                "; the SYN was re-sent after {}",
                secs(w.ts_ns.saturating_sub(lead.rec.first_syn.ts_ns))
            ));
        }
        let ids = cases.iter().map(|c| c.rec.conn).collect();
        out.push(with_packets(
            f,
            ctx,
            &pkts,
            "SYNs from a backend to its own Service, DNATed to itself and lost",
        ));
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

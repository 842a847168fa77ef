//! `stale-udp-conntrack` in a node's state: UDP conntrack entries to a Service address whose DNAT
//! backend is not an endpoint of that Service any more (an incident under way: the flows behind them
//! are being sent to the removed backend).
//!
//! Blind spot: the conntrack summary lists per destination the busiest ones and every port-53 one, so
//! a quiet UDP Service on another port may not be examined.

use super::evidence::{fact, sysctl_evidence};
use super::Ctx;
use crate::facts::NetnsFacts;
use netsleuth_core::detect::stale_udp_conntrack::INCIDENT;
use netsleuth_core::{Confidence, Finding, FindingKind};

pub(super) fn check(_ctx: &Ctx, ns: &NetnsFacts, out: &mut Vec<Finding>) {
    let Some(ct) = &ns.conntrack else { return };
    let services = ns.services();
    if services.is_empty() {
        return;
    }
    for d in ct.destinations.iter().filter(|d| d.proto == "udp") {
        let Some(svc) = services.iter().find(|s| {
            s.kind != "ipvs"
                && s.vip == d.dst
                && (s.port.is_none() || s.port == d.dport)
                && (s.protocol == "udp" || s.protocol == "all")
        }) else {
            continue;
        };
        let stale: Vec<(&String, &u64)> = d
            .dnat_backends
            .iter()
            .filter(|(b, _)| {
                !svc.endpoints
                    .iter()
                    .any(|(e, _)| e == *b || ip_of(e) == ip_of(b))
            })
            .collect();
        if stale.is_empty() {
            continue;
        }
        let n: u64 = stale.iter().map(|(_, c)| **c).sum();
        let mut f = Finding::new(
            &INCIDENT,
            FindingKind::Incident,
            Confidence::Likely,
            format!(
                "{}: {n} UDP conntrack entr{} to {} {}:{} still DNAT to {}, which is not an endpoint of the Service (endpoints: {})",
                ns.id,
                if n == 1 { "y" } else { "ies" },
                svc.name,
                d.dst,
                d.dport.map(|p| p.to_string()).unwrap_or_else(|| "*".into()),
                stale.iter().map(|(b, _)| b.as_str()).collect::<Vec<_>>().join(", "),
                if svc.endpoints.is_empty() {
                    "none".to_string()
                } else {
                    svc.endpoints.iter().map(|(e, _)| e.as_str()).collect::<Vec<_>>().join(", ")
                }
            ),
        )
        .with_evidence(fact(
            format!("{}/conntrack-summary.json", ns.prefix()),
            format!(
                "udp entries to {}:{}: {} in all, {} unreplied; DNAT backends: {}",
                d.dst,
                d.dport.map(|p| p.to_string()).unwrap_or_else(|| "*".into()),
                d.entries,
                d.unreplied,
                d.dnat_backends
                    .iter()
                    .map(|(b, c)| format!("{b} ×{c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ))
        .with_evidence(fact(
            format!("{}/iptables-save.txt", ns.prefix()),
            format!(
                "{} {}:{} endpoints in the rules: {}",
                svc.name,
                svc.vip,
                svc.port.map(|p| p.to_string()).unwrap_or_else(|| "*".into()),
                svc.endpoints.iter().map(|(e, _)| e.as_str()).collect::<Vec<_>>().join(", ")
            ),
        ));
        for name in [
            "net.netfilter.nf_conntrack_udp_timeout",
            "net.netfilter.nf_conntrack_udp_timeout_stream",
        ] {
            if let Some(e) = sysctl_evidence(ns, name) {
                f = f.with_evidence(e);
            }
        }
        f = f
            .because("the rules no longer choose that backend, so these entries were made before it was removed and kept alive by their flows' own packets: their datagrams still go to the old address")
            .because("whether the old address still answers (a pod terminating slowly) or nothing is there any more is not in the node's state; a capture on the node shows the datagrams unanswered")
            .rules_out(netsleuth_core::detect::dns_upstream_unreachable::INCIDENT.id, "the Service's current endpoints are not involved: only flows pinned to the removed backend fail");
        out.push(f);
    }
}

fn ip_of(endpoint: &str) -> &str {
    match endpoint.rsplit_once(':') {
        Some((ip, port)) if port.chars().all(|c| c.is_ascii_digit()) && !ip.ends_with(':') => {
            ip.trim_start_matches('[').trim_end_matches(']')
        }
        _ => endpoint,
    }
}

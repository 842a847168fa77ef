//! `local-source-drop` in a node's state: LoadBalancer IPs on kube-ipvs0 (so in table local) with
//! accept_local=0; in_martian_src rising makes it an incident.

use super::evidence::{config, counter, fact, sysctl_evidence};
use super::Ctx;
use crate::facts::NetnsFacts;
use netsleuth_core::detect::local_source_drop::INCIDENT;
use netsleuth_core::versions;
use netsleuth_core::{Confidence, Finding, FindingKind};
use std::net::IpAddr;

pub(super) fn check(ctx: &Ctx, ns: &NetnsFacts, out: &mut Vec<Finding>) {
    let Some(links) = &ns.links else { return };
    let lb_kinds: Vec<String> = ns
        .services()
        .iter()
        .filter(|s| s.kind == "loadbalancer IP" || s.kind == "external IP")
        .map(|s| s.vip.clone())
        .collect();
    // kube-ipvs0, or a dummy device carrying only host routes, as kube-proxy's IPVS mode makes it.
    let ipvs_like = links.iter().filter(|l| {
        l.name == "kube-ipvs0"
            || (l.kind.as_deref() == Some("dummy")
                && !l.addrs.is_empty()
                && l.addrs
                    .iter()
                    .all(|a| a.prefixlen == 32 || a.prefixlen == 128))
    });
    let accept_all = ns.sysctl_u64("net.ipv4.conf.all.accept_local");
    if accept_all == Some(1) {
        return;
    }
    for dev in ipvs_like {
        let lb: Vec<&str> = dev
            .addrs
            .iter()
            .filter(|a| a.family == "inet")
            .map(|a| a.local.as_str())
            .filter(|ip| {
                lb_kinds.iter().any(|v| v == ip)
                    || ip.parse::<IpAddr>().map(|i| is_public(&i)).unwrap_or(false)
            })
            .collect();
        if lb.is_empty() {
            continue;
        }
        // Interfaces that would receive the LB's packets: any other device without accept_local=1.
        let ingress: Vec<&str> = links
            .iter()
            .filter(|l| l.name != "lo" && l.name != dev.name)
            .filter(|l| ns.sysctl_u64(&format!("net.ipv4.conf.{}.accept_local", l.name)) != Some(1))
            .map(|l| l.name.as_str())
            .collect();
        let in_local: Vec<&str> = ns
            .routes
            .iter()
            .flatten()
            .filter(|r| r.table == "local" && r.rtype == "local" && lb.contains(&r.dst.as_str()))
            .map(|r| r.dst.as_str())
            .collect();
        let martian = ns
            .delta(|s| &s.rt_cache, "in_martian_src")
            .filter(|(a, b, _)| b > a);
        let (kind, confidence) = match martian {
            Some(_) => (FindingKind::Incident, Confidence::Likely),
            None if !in_local.is_empty() => (FindingKind::LatentRisk, Confidence::Confirmed),
            None => (FindingKind::LatentRisk, Confidence::Likely),
        };
        let summary = match martian {
            Some((a, b, ms)) => format!(
                "in_martian_src rising in {} ({a} → {b} in {:.1} s) while LB IP(s) {} sit on {} in table local with accept_local=0",
                ns.id,
                ms as f64 / 1000.0,
                lb.join(", "),
                dev.name
            ),
            None => format!("LB IP(s) {} on {} in table local with accept_local=0 in {}: packets from those sources are dropped as martian", lb.join(", "), dev.name, ns.id),
        };
        let mut f = Finding::new(&INCIDENT, kind, confidence, summary).with_evidence(fact(
            format!("{}/ip-addr.json", ns.prefix()),
            format!(
                "{}: {}",
                dev.name,
                lb.iter()
                    .map(|ip| format!("{ip}/32"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
        for ip in &in_local {
            f = f.with_evidence(config(
                format!("{}/ip-route.json", ns.prefix()),
                None,
                format!("local {ip} dev {} table local", dev.name),
            ));
        }
        if let Some(e) = sysctl_evidence(ns, "net.ipv4.conf.all.accept_local") {
            f = f.with_evidence(e);
        }
        if let Some((a, b, _)) = martian {
            f = f.with_evidence(counter(
                format!("{}/sample-*/stat-rt_cache", ns.prefix()),
                "in_martian_src",
                Some(a),
                b,
            ));
            f = f.because("martian-source drops rose during the check; the counter does not name the source address");
        }
        if !ingress.is_empty() {
            f = f.because(format!(
                "interfaces without accept_local=1: {}",
                ingress
                    .iter()
                    .take(6)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if in_local.is_empty() && ns.routes.is_some() {
            f = f.because("the local-table route of the address was not found in the route dump");
        }
        if versions::DROP_REASON_IP_LOCAL_SOURCE.has(ctx.kernel().unwrap_or("")) == Some(true) {
            f = f.because("this kernel reports these drops as IP_LOCAL_SOURCE on the skb:kfree_skb tracepoint (tracing it on the node, e.g. `perf record -e skb:kfree_skb -a`, counts them)");
        }
        out.push(f);
    }
}

/// Whether an address is one the internet could route (a public LB IP), as opposed to private,
/// shared, loopback or link-local space.
fn is_public(ip: &IpAddr) -> bool {
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

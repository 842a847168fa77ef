//! `hairpin-off` in a node's state: a bridge that hands frames to iptables (bridge-nf-call-iptables=1,
//! so kube-proxy's DNAT runs while bridging), a pod on one of its ports whose address is a Service
//! endpoint, and hairpin mode off on that port. A latent risk: nothing in the state counts the dropped
//! frames; a capture of the pod's connects to its own Service shows them.

use super::evidence::{config, fact, reachable_services, sysctl_evidence};
use super::Ctx;
use crate::facts::NetnsFacts;
use crate::parse::ip::Link;
use netsleuth_core::detect::hairpin_off::INCIDENT;
use netsleuth_core::{Confidence, Finding, FindingKind};

/// The pod namespace behind a bridge port: the namespace with the veth peer of `port` (each end's
/// `link_index` is the other's ifindex), and that peer link.
fn pod_behind<'a>(
    ctx: &'a Ctx,
    ns: &NetnsFacts,
    port: &Link,
) -> Option<(&'a NetnsFacts, &'a Link)> {
    let peer_index = port.link_index?;
    ctx.facts
        .namespaces
        .iter()
        .filter(|p| p.id != ns.id)
        .find_map(|p| {
            p.links
                .iter()
                .flatten()
                .find(|l| l.ifindex == peer_index && l.link_index == Some(port.ifindex))
                .map(|l| (p, l))
        })
}

pub(super) fn check(ctx: &Ctx, ns: &NetnsFacts, out: &mut Vec<Finding>) {
    let Some(links) = &ns.links else { return };
    let sysctl_on = ns.sysctl_u64("net.bridge.bridge-nf-call-iptables") == Some(1);
    let services = reachable_services(ctx, ns);
    if services.is_empty() {
        return;
    }
    for bridge in links.iter().filter(|l| l.kind.as_deref() == Some("bridge")) {
        // Without br_netfilter's iptables call the DNAT happens when the frame is routed, and the
        // bridge sends it out as its own: no hairpin needed.
        if !(sysctl_on || bridge.bridge_nf_call_iptables == Some(true)) {
            continue;
        }
        for port in links.iter().filter(|l| {
            l.master.as_deref() == Some(bridge.name.as_str()) && l.hairpin == Some(false)
        }) {
            let Some((pod, peer)) = pod_behind(ctx, ns, port) else {
                continue;
            };
            let pod_ips: Vec<&str> = peer
                .addrs
                .iter()
                .filter(|a| a.family == "inet" || a.family == "inet6")
                .filter(|a| a.scope != "link" && a.scope != "host")
                .map(|a| a.local.as_str())
                .collect();
            let backed: Vec<String> = services
                .iter()
                .filter_map(|s| {
                    let ep = s.endpoints.iter().find(|(e, _)| {
                        let ip = crate::parse::ss::split_endpoint(e).0;
                        pod_ips.contains(&ip)
                    })?;
                    Some(format!(
                        "{} ({}{}) → {} (chosen with p={:.2})",
                        s.name,
                        s.vip,
                        s.port.map(|p| format!(":{p}")).unwrap_or_default(),
                        ep.0,
                        ep.1
                    ))
                })
                .collect();
            if backed.is_empty() {
                continue;
            }
            let who = pod.comms.first().map(String::as_str).unwrap_or("?");
            let mut f = Finding::new(
                &INCIDENT,
                FindingKind::LatentRisk,
                Confidence::Likely,
                format!(
                    "pod {} ({}, {who}) backs {} Service(s) but its port {} on {} has hairpin off: its connects to its own Service time out whenever DNAT picks itself",
                    pod_ips.join(", "),
                    pod.id,
                    backed.len(),
                    port.name,
                    bridge.name
                ),
            )
            .with_evidence(fact(
                format!("{}/ip-addr.json", ns.prefix()),
                format!(
                    "{} (ifindex {}): master {}, hairpin off; its veth peer is {} (ifindex {}) in {} with {}",
                    port.name,
                    port.ifindex,
                    bridge.name,
                    peer.name,
                    peer.ifindex,
                    pod.id,
                    pod_ips.join(", ")
                ),
            ));
            for b in backed.iter().take(ctx.opts.max_evidence.max(1)) {
                f = f.with_evidence(config(
                    format!("{}/iptables-save.txt", ns.prefix()),
                    None,
                    b.clone(),
                ));
            }
            if let Some(e) = sysctl_evidence(ns, "net.bridge.bridge-nf-call-iptables") {
                f = f.with_evidence(e);
            }
            f = f.because("the configuration is read; whether the pod calls its own Service is not in the node's state (a capture shows SYNs DNATed to the pod itself, never answered)");
            out.push(f);
        }
    }
}

//! `overlay-mtu-blackhole` in a node's state: an overlay device (vxlan, geneve, ipip, wireguard) whose
//! MTU is below the MTU of the pods' interfaces, so the pods can send packets the overlay cannot carry;
//! or an overlay device whose MTU plus its encapsulation exceeds the underlay's. A latent risk: it bites
//! when ICMP "fragmentation needed" is blocked on the path (a capture shows that).

use super::evidence::fact;
use super::Ctx;
use netsleuth_core::detect::overlay_mtu_blackhole::INCIDENT;
use netsleuth_core::{Confidence, Finding, FindingKind};

/// Bytes each encapsulation adds to an IPv4 packet (outer IP + its own headers).
fn overhead(kind: &str) -> Option<u32> {
    Some(match kind {
        "vxlan" => 50,
        "geneve" => 50,
        "ipip" => 20,
        "gre" => 24,
        "wireguard" => 60,
        _ => return None,
    })
}

pub(super) fn check(ctx: &Ctx, out: &mut Vec<Finding>) {
    let Some(node) = ctx.node() else { return };
    let Some(links) = &node.links else { return };
    for dev in links {
        let (Some(kind), Some(mtu)) = (dev.kind.as_deref(), dev.mtu) else {
            continue;
        };
        let Some(extra) = overhead(kind) else {
            continue;
        };
        // Pod-facing interfaces: the pods' own (other namespaces' veth ends) and the node's bridges
        // and their ports.
        let mut larger: Vec<String> = Vec::new();
        for ns in &ctx.facts.namespaces {
            for l in ns.links.iter().flatten() {
                let pod_facing = if ns.is_node {
                    l.kind.as_deref() == Some("bridge") || l.master.is_some()
                } else {
                    l.kind.as_deref() == Some("veth")
                };
                if pod_facing && l.mtu.is_some_and(|m| m > mtu) && larger.len() < 16 {
                    larger.push(format!("{}/{} mtu {}", ns.id, l.name, l.mtu.unwrap_or(0)));
                }
            }
        }
        let underlay = dev
            .link_index
            .and_then(|i| links.iter().find(|l| l.ifindex == i))
            .and_then(|l| l.mtu.map(|m| (l.name.as_str(), m)));
        let too_big_for_underlay = underlay.is_some_and(|(_, u)| mtu + extra > u);
        if larger.is_empty() && !too_big_for_underlay {
            continue;
        }
        let mut f = Finding::new(
            &INCIDENT,
            FindingKind::LatentRisk,
            Confidence::Likely,
            if larger.is_empty() {
                format!(
                    "{} ({kind}, MTU {mtu}) plus its {extra}-byte encapsulation exceeds the underlay {} MTU {}: full-size overlay packets cannot be sent",
                    dev.name,
                    underlay.map(|u| u.0).unwrap_or("?"),
                    underlay.map(|u| u.1).unwrap_or(0)
                )
            } else {
                format!(
                    "{} ({kind}) has MTU {mtu} but {} pod-facing interface(s) have more (e.g. {}): full-size pod packets do not fit the overlay, and only ICMP fragmentation-needed saves the connections",
                    dev.name,
                    larger.len(),
                    larger[0]
                )
            },
        )
        .with_evidence(fact(
            format!("{}/ip-addr.json", node.prefix()),
            format!(
                "{} kind {kind} mtu {mtu} (encapsulation {extra} bytes){}",
                dev.name,
                underlay
                    .map(|(n, m)| format!(" over {n} mtu {m}"))
                    .unwrap_or_default()
            ),
        ));
        for l in larger.iter().take(ctx.opts.max_evidence.max(2) - 1) {
            f = f.with_evidence(fact("ip-addr.json", l.clone()));
        }
        f = f.because("whether ICMP fragmentation-needed reaches the senders is not in the node's state: a capture of a stalled transfer shows it");
        out.push(f);
    }
}

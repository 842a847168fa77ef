//! Node facts as the capture analyser wants them (`analyze --node BUNDLE`).

use crate::facts::NodeFacts;
use netsleuth_core::node::{NodeContext, ResolverStack, ServiceInfo};
use std::net::IpAddr;

fn endpoint(s: &str) -> Option<(IpAddr, u16)> {
    let (h, p) = crate::parse::ss::split_endpoint(s);
    Some((h.parse().ok()?, p.unwrap_or(0)))
}

pub fn to_node_context(facts: &NodeFacts) -> NodeContext {
    let mut ctx = NodeContext {
        source: facts.manifest.target.clone(),
        kernel_release: facts.kernel.clone(),
        ..Default::default()
    };
    let Some(node) = facts.node_netns() else {
        return ctx;
    };
    if let Some(s) = &node.sysctls {
        ctx.sysctls = s.clone();
    }
    ctx.neighbour_table = crate::detect::neighbour_table(facts);
    for svc in node.services() {
        let Ok(vip) = svc.vip.parse() else { continue };
        ctx.services.push(ServiceInfo {
            name: svc.name.clone(),
            vip,
            port: svc.port.unwrap_or(0),
            protocol: svc.protocol.to_string(),
            endpoints: svc
                .endpoints
                .iter()
                .filter_map(|(e, _)| endpoint(e))
                .collect(),
        });
    }
    for l in node.links.iter().flatten() {
        for a in &l.addrs {
            let Ok(ip) = a.local.parse::<IpAddr>() else {
                continue;
            };
            ctx.local_addrs.push(ip);
            let ipvs_like = l.name == "kube-ipvs0"
                || (l.kind.as_deref() == Some("dummy")
                    && (a.prefixlen == 32 || a.prefixlen == 128));
            if ipvs_like {
                ctx.ipvs_bound_addrs.push(ip);
            }
        }
    }
    if let Some(rc) = facts.node_root().and_then(|r| r.resolv.present()) {
        ctx.nameservers = rc
            .nameservers
            .iter()
            .filter_map(|n| n.addr.split('%').next()?.parse().ok())
            .collect();
    }
    // Names pinned in the containers' /etc/hosts (loopback entries aside): a DNS query for one of them
    // in a capture means the asking program consults DNS before the hosts file.
    for root in facts.roots.iter().filter(|r| !r.is_node) {
        for e in root.hosts.present().into_iter().flatten() {
            let Ok(ip) = e.addr.parse::<IpAddr>() else {
                continue;
            };
            if ip.is_loopback() || ip.is_multicast() || ip.is_unspecified() {
                continue;
            }
            for n in &e.names {
                if !ctx.hosts.iter().any(|(a, h)| *a == ip && h == n) {
                    ctx.hosts.push((ip, n.clone()));
                }
            }
        }
    }
    for root in &facts.roots {
        ctx.resolvers.push(ResolverStack {
            name: root.describe(),
            libc: root.libc.as_ref().map(|l| l.kind.clone()),
            libc_version: root.libc.as_ref().and_then(|l| l.version.clone()),
            libc_evidence: root
                .libc
                .as_ref()
                .map(|l| l.evidence.clone())
                .unwrap_or_default(),
            has_nsswitch_conf: root.nsswitch.present().is_some(),
            go_programs: root
                .go_binaries
                .iter()
                .map(|g| (g.path.clone(), g.info.go_version.clone()))
                .collect(),
        });
    }
    // Each namespace's ephemeral port range, by the addresses it holds (a pod's address is how its
    // connections appear in a capture).
    for ns in &facts.namespaces {
        let Some(range) = ns
            .sysctl("net.ipv4.ip_local_port_range")
            .and_then(parse_port_range)
        else {
            continue;
        };
        for l in ns.links.iter().flatten() {
            for a in &l.addrs {
                let Ok(ip) = a.local.parse::<IpAddr>() else {
                    continue;
                };
                if ip.is_loopback() || ctx.local_port_ranges.iter().any(|(x, _, _)| *x == ip) {
                    continue;
                }
                ctx.local_port_ranges.push((ip, range.0, range.1));
            }
        }
    }
    for dev in node.offloads.iter().flatten() {
        let kind = node
            .links
            .iter()
            .flatten()
            .find(|l| l.name == dev.device)
            .and_then(|l| l.kind.as_deref())
            .unwrap_or("overlay");
        if let Some(on) = dev.is_on("tx-checksum-ip-generic") {
            ctx.overlay_tx_checksum_offload.push(format!(
                "{} ({kind}): tx-checksum-ip-generic {}",
                dev.device,
                if on { "on" } else { "off" }
            ));
        }
    }
    ctx.masquerade_without_random_fully = node
        .source_nat_rules()
        .iter()
        .filter(|r| !r.random_fully)
        .map(|r| r.text.clone())
        .collect();
    ctx
}

/// `32768\t60999` (as sysctl prints it) → (32768, 60999).
fn parse_port_range(v: &str) -> Option<(u16, u16)> {
    let mut w = v.split_whitespace();
    let lo = w.next()?.parse().ok()?;
    let hi = w.next()?.parse().ok()?;
    (lo <= hi).then_some((lo, hi))
}

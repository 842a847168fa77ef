//! `dns-truncation-fallback` in a node's state: a DNS Service (a Service on port 53 that a resolv.conf
//! of the node names, or named `dns`) programmed for 53/udp without 53/tcp, so that a truncated answer
//! cannot be re-asked over TCP through it. A latent risk: only answers larger than 512 bytes hit it.

use super::evidence::{config, fact};
use super::Ctx;
use crate::facts::NetnsFacts;
use netsleuth_core::detect::dns_truncation_fallback::INCIDENT;
use netsleuth_core::{Confidence, Finding, FindingKind};

pub(super) fn check(ctx: &Ctx, ns: &NetnsFacts, out: &mut Vec<Finding>) {
    let services = ns.services();
    let nameservers: Vec<String> = ctx
        .facts
        .roots
        .iter()
        .filter_map(|r| r.resolv.present())
        .flat_map(|rc| rc.nameservers.iter().map(|n| n.addr.to_string()))
        .collect();
    let mut seen: Vec<&str> = Vec::new();
    for s in services
        .iter()
        .filter(|s| s.port == Some(53) && s.protocol == "udp")
    {
        if seen.contains(&s.vip.as_str()) {
            continue;
        }
        let used = nameservers.contains(&s.vip);
        if !used && !s.name.contains("dns") {
            continue;
        }
        let has_tcp = services
            .iter()
            .any(|t| t.vip == s.vip && t.port == Some(53) && t.protocol == "tcp");
        if has_tcp {
            continue;
        }
        seen.push(s.vip.as_str());
        let mut f = Finding::new(
            &INCIDENT,
            FindingKind::LatentRisk,
            if used { Confidence::Likely } else { Confidence::Possible },
            format!(
                "DNS Service {} ({}:53) is programmed for udp only: an answer too large for UDP comes back truncated (TC=1) and the client's retry over TCP to {} is not DNATed",
                s.name, s.vip, s.vip
            ),
        )
        .with_evidence(config(
            format!("{}/iptables-save.txt", ns.prefix()),
            None,
            format!("{} {}:53/udp → {}", s.name, s.vip, s.endpoints.iter().map(|(e, _)| e.as_str()).collect::<Vec<_>>().join(", ")),
        ))
        .with_evidence(fact(
            format!("{}/iptables-save.txt", ns.prefix()),
            format!("no rule DNATs {}:53/tcp", s.vip),
        ));
        f = if used {
            f.because("a resolv.conf of this node names it; whether any answer exceeds 512 bytes is not in the node's state")
        } else {
            f.because("its name says DNS but no resolv.conf collected here names it")
        };
        out.push(f);
    }
}

//! `dns-upstream-unreachable` in a node's state: a resolv.conf nameserver that did not answer the
//! probe, or whose conntrack entries are all [UNREPLIED].

use super::evidence::{config, fact, resolv_source};
use super::Ctx;
use netsleuth_core::detect::dns_upstream_unreachable::INCIDENT;
use netsleuth_core::{Confidence, Finding, FindingKind};

pub(super) fn check(ctx: &Ctx, out: &mut Vec<Finding>) {
    let facts = ctx.facts;
    for root in &facts.roots {
        let Some(rc) = root.resolv.present() else {
            continue;
        };
        for ns in &rc.nameservers {
            let probe = facts
                .probes
                .iter()
                .find(|p| p.root == root.id && p.nameserver == ns.addr);
            let ct_ns = root
                .netns
                .as_deref()
                .and_then(|id| facts.netns(id))
                .or_else(|| ctx.node());
            let unreplied = ct_ns
                .and_then(|n| n.conntrack.as_ref())
                .map(|c| c.unreplied_dns_to(&ns.addr))
                .unwrap_or((0, 0));
            let dead_by_probe = probe.map(|p| !p.answered).unwrap_or(false);
            // Without a probe: several entries to it and none ever answered.
            let dead_by_conntrack =
                probe.is_none() && unreplied.1 >= 3 && unreplied.0 == unreplied.1;
            if !dead_by_probe && !dead_by_conntrack {
                continue;
            }
            let others_answer = facts
                .probes
                .iter()
                .any(|p| p.root == root.id && p.nameserver != ns.addr && p.answered);
            let confidence = if dead_by_probe && others_answer {
                Confidence::Confirmed
            } else if dead_by_probe {
                Confidence::Likely
            } else {
                Confidence::Possible
            };
            let origins: Vec<&str> = root
                .resolv_sources
                .iter()
                .filter(|(_, src)| src.nameservers.iter().any(|n| n.addr == ns.addr))
                .map(|(p, _)| p.as_str())
                .collect();
            let origin_text = if origins.is_empty() {
                String::new()
            } else {
                format!(" (from {})", origins.join(", "))
            };
            let mut f = Finding::new(
                &INCIDENT,
                FindingKind::Incident,
                confidence,
                format!(
                    "nameserver {} in {}'s resolv.conf does not answer{origin_text}",
                    ns.addr,
                    root.describe()
                ),
            )
            .with_evidence(config(
                resolv_source(root),
                Some(ns.line),
                format!("nameserver {}", ns.addr),
            ));
            if let Some(p) = probe {
                f = f.with_evidence(fact(
                    "probes.json",
                    format!(
                        "{} query(ies) for `. NS` from {}: {}",
                        p.attempts,
                        p.netns,
                        p.error.as_deref().unwrap_or("no answer")
                    ),
                ));
            }
            for (path, src) in &root.resolv_sources {
                if let Some(n) = src.nameservers.iter().find(|n| n.addr == ns.addr) {
                    f = f.with_evidence(config(
                        format!("{}{path}", root.prefix()),
                        Some(n.line),
                        format!("nameserver {}", n.addr),
                    ));
                }
            }
            if let Some(link) = &root.resolv_link {
                f = f.with_evidence(fact(
                    format!("{}/etc/resolv.conf", root.prefix()),
                    format!("symlink to {link}"),
                ));
            }
            if unreplied.1 > 0 {
                f = f.with_evidence(fact(
                    "conntrack-summary.json",
                    format!(
                        "{} of {} entries to {}:53 [UNREPLIED]",
                        unreplied.0, unreplied.1, ns.addr
                    ),
                ));
            }
            for r in &facts.roots {
                for c in r.corefile.iter().flatten() {
                    if c.to.iter().any(|t| t == "/etc/resolv.conf") {
                        f = f.with_evidence(config(
                            format!("{}/etc/coredns/Corefile", r.prefix()),
                            Some(c.line),
                            format!("{} {} {}", c.plugin, c.from, c.to.join(" ")),
                        ));
                    }
                }
            }
            if dead_by_probe && !others_answer {
                f = f.because("no other nameserver of this resolv.conf answered either: the probe's own path may be at fault");
            }
            if dead_by_conntrack {
                f = f.because(
                    "seen only in conntrack (no --probe): every entry to it is [UNREPLIED]",
                );
            }
            out.push(f);
        }
    }
}

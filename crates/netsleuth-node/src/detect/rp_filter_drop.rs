//! `rp-filter-drop` in a node's state: strict reverse-path filtering (the max of `all` and the
//! interface's own `rp_filter` is 1) on a namespace with more than one uplink or with policy routing,
//! where asymmetric paths are expected. `TcpExt IPReversePathFilter` rising between the samples makes
//! it an incident: the kernel counted the drops.

use super::evidence::{counter, fact, sysctl_evidence};
use super::Ctx;
use crate::facts::NetnsFacts;
use netsleuth_core::detect::rp_filter_drop::INCIDENT;
use netsleuth_core::{Confidence, Finding, FindingKind};

/// Device kinds that are not uplinks: replies to what arrives on them go back the same way.
const NOT_UPLINK: &[&str] = &[
    "bridge",
    "dummy",
    "vxlan",
    "geneve",
    "ipip",
    "wireguard",
    "tun",
    "gre",
    "sit",
];

/// The rules every namespace has (`ip rule` without policy routing).
fn default_rule(r: &str) -> bool {
    matches!(
        r.split_once(": ").map(|x| x.1),
        Some("from all lookup local" | "from all lookup main" | "from all lookup default")
    )
}

pub(super) fn check(_ctx: &Ctx, ns: &NetnsFacts, out: &mut Vec<Finding>) {
    let Some(links) = &ns.links else { return };
    let Some(all) = ns.sysctl_u64("net.ipv4.conf.all.rp_filter") else {
        return;
    };
    let uplinks: Vec<(&str, u64)> = links
        .iter()
        .filter(|l| l.name != "lo" && l.master.is_none())
        .filter(|l| !l.kind.as_deref().is_some_and(|k| NOT_UPLINK.contains(&k)))
        .filter(|l| {
            l.addrs
                .iter()
                .any(|a| a.family == "inet" && a.scope == "global")
        })
        .map(|l| {
            let dev = ns
                .sysctl_u64(&format!("net.ipv4.conf.{}.rp_filter", l.name))
                .unwrap_or(0);
            (l.name.as_str(), all.max(dev))
        })
        .collect();
    let strict: Vec<&str> = uplinks
        .iter()
        .filter(|(_, v)| *v == 1)
        .map(|(n, _)| *n)
        .collect();
    let policy_rules: Vec<&String> = ns
        .rules
        .iter()
        .flatten()
        .filter(|r| !default_rule(r))
        .collect();
    let counted = ns
        .delta(|s| &s.netstat, "TcpExt.IPReversePathFilter")
        .filter(|(a, b, _)| b > a);
    if strict.is_empty() {
        return;
    }
    let asymmetric_possible = uplinks.len() >= 2 || !policy_rules.is_empty();
    let mut f = match counted {
        Some((a, b, ms)) => Finding::new(
            &INCIDENT,
            FindingKind::Incident,
            Confidence::Confirmed,
            format!(
                "{}: TcpExt IPReversePathFilter rose {a} → {b} in {:.1} s: strict reverse-path filtering (rp_filter=1 on {}) is dropping packets",
                ns.id,
                ms as f64 / 1000.0,
                strict.join(", ")
            ),
        )
        .with_evidence(counter(
            format!("{}/sample-*/netstat", ns.prefix()),
            "TcpExt.IPReversePathFilter",
            Some(a),
            b,
        )),
        None if asymmetric_possible => Finding::new(
            &INCIDENT,
            FindingKind::LatentRisk,
            Confidence::Likely,
            format!(
                "{}: strict rp_filter on {} with {} uplink(s){}: packets whose route back leaves by another interface are dropped silently",
                ns.id,
                strict.join(", "),
                uplinks.len(),
                if policy_rules.is_empty() {
                    String::new()
                } else {
                    format!(" and {} policy routing rule(s)", policy_rules.len())
                }
            ),
        )
        .because("IPReversePathFilter did not rise between the samples (or one sample only): nothing was dropped while the check ran"),
        None => return,
    };
    for key in ["net.ipv4.conf.all.rp_filter".to_string()]
        .into_iter()
        .chain(
            strict
                .iter()
                .map(|d| format!("net.ipv4.conf.{d}.rp_filter")),
        )
    {
        if let Some(e) = sysctl_evidence(ns, &key) {
            f = f.with_evidence(e);
        }
    }
    f = f.with_evidence(fact(
        format!("{}/ip-addr.json", ns.prefix()),
        format!(
            "uplinks with IPv4 addresses (rp_filter = max(all, dev)): {}",
            uplinks
                .iter()
                .map(|(n, v)| format!("{n} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ));
    for r in policy_rules.iter().take(4) {
        f = f.with_evidence(fact(format!("{}/ip-rule.json", ns.prefix()), (*r).clone()));
    }
    out.push(f);
}

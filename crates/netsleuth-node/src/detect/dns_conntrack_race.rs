//! `dns-conntrack-race` in a node's state: a root whose nameserver is reached through DNAT, on a kernel
//! that still drops the A/AAAA clash, without a resolv.conf option that avoids the race (or with musl,
//! which ignores them).

use super::evidence::{config, counter, fact, reachable_services, resolv_source};
use super::Ctx;
use crate::facts::RootFacts;
use netsleuth_core::detect::dns_conntrack_race::INCIDENT;
use netsleuth_core::versions;
use netsleuth_core::{Confidence, Finding, FindingKind};

pub(super) fn check(ctx: &Ctx, root: &RootFacts, out: &mut Vec<Finding>) {
    let Some(rc) = root.resolv.present() else {
        return;
    };
    let ns = root
        .netns
        .as_deref()
        .and_then(|id| ctx.facts.netns(id))
        .or_else(|| ctx.node());
    let Some(ns) = ns else { return };
    let svcs = reachable_services(ctx, ns);
    // Only nameservers reached through DNAT race at conntrack insert this way.
    let dnat_ns: Vec<_> = rc
        .nameservers
        .iter()
        .filter_map(|n| {
            svcs.iter()
                .find(|s| s.vip == n.addr && (s.port.is_none() || s.port == Some(53)))
                .map(|s| (n, s))
        })
        .collect();
    if dnat_ns.is_empty() {
        return;
    }
    let kernel = ctx.kernel().unwrap_or("unknown");
    let fixed_all = versions::CLASH_INSERT_CLASHING.has(kernel);
    if fixed_all == Some(true) {
        return; // clashing UDP entries are inserted since ≈5.6: the race no longer drops
    }
    let fixed_matching = versions::CLASH_RESOLVE_MATCHING.has(kernel) == Some(true);
    let multi_backend = dnat_ns.iter().any(|(_, s)| s.endpoints.len() > 1);
    if fixed_matching && !multi_backend && dnat_ns.iter().all(|(_, s)| !s.endpoints.is_empty()) {
        return; // one backend: both queries DNAT to the same place, a clash the kernel resolves since 4.19
    }
    let options = rc.race_avoiding_options();
    let musl = is_musl(root);
    let libc_known = root
        .libc
        .as_ref()
        .map(|l| l.kind != "none")
        .unwrap_or(false);
    if !options.is_empty() && !musl && libc_known {
        return; // glibc honours single-request(-reopen)/use-vc
    }
    let node = ctx.node().unwrap_or(ns);
    let src = format!("{}/conntrack-S.txt", node.prefix());
    let insert_failed = node
        .delta(|s| &s.conntrack, "insert_failed")
        .filter(|(a, b, _)| b > a);
    let names: Vec<String> = dnat_ns
        .iter()
        .map(|(n, s)| format!("{} ({})", n.addr, s.name))
        .collect();
    let (kind, confidence) = match insert_failed {
        Some(_) => (FindingKind::Incident, Confidence::Possible),
        None if libc_known && fixed_all == Some(false) => {
            (FindingKind::LatentRisk, Confidence::Likely)
        }
        None => (FindingKind::LatentRisk, Confidence::Possible),
    };
    let why = if musl && !options.is_empty() {
        format!("musl ignores `options {}`", options.join(" "))
    } else {
        "no single-request-reopen/single-request/use-vc option".to_string()
    };
    let mut f = Finding::new(
        &INCIDENT,
        kind,
        confidence,
        format!(
            "{}: A/AAAA to DNATed nameserver {} race at conntrack insert ({why}; kernel {kernel})",
            root.describe(),
            names.join(", ")
        ),
    );
    for (n, _) in &dnat_ns {
        f = f.with_evidence(config(
            resolv_source(root),
            Some(n.line),
            format!("nameserver {}", n.addr),
        ));
    }
    for (o, line) in &rc.options {
        f = f.with_evidence(config(
            resolv_source(root),
            Some(*line),
            format!("options {o}"),
        ));
    }
    if let Some(l) = &root.libc {
        f = f.with_evidence(fact(
            format!("{}/libc.json", root.prefix()),
            format!(
                "{} {} ({})",
                l.kind,
                l.version.as_deref().unwrap_or("?"),
                l.evidence
            ),
        ));
    }
    f = f.with_evidence(fact(
        "node/kernel-release",
        versions::CLASH_INSERT_CLASHING.status(kernel),
    ));
    if let Some((a, b, _)) = insert_failed {
        f = f.with_evidence(counter(&src, "insert_failed", Some(a), b));
        f = f.because("insert_failed rose, but the counter does not say whether DNS or other SNAT/DNAT flows failed");
    }
    if let Some(c) = &node.conntrack {
        for (n, _) in &dnat_ns {
            let (u, e) = c.unreplied_dns_to(&n.addr);
            if e > 0 {
                f = f.with_evidence(fact(
                    format!("{}/conntrack-summary.json", node.prefix()),
                    format!("{u} of {e} entries to {}:53 [UNREPLIED]", n.addr),
                ));
            }
        }
    }
    if musl {
        f = f.because(format!(
            "musl reads only ndots/attempts/timeout ({})",
            versions::MUSL_RESOLV_OPTIONS.source
        ));
    }
    if !libc_known {
        f = f.because("the image's libc could not be identified");
    }
    out.push(f);
}

fn is_musl(root: &RootFacts) -> bool {
    root.libc
        .as_ref()
        .map(|l| l.kind == "musl")
        .unwrap_or(false)
}

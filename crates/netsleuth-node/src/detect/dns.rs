//! Resolvers: dns-conntrack-race, go-resolver-dns-first, dns-upstream-unreachable, dns-id-collision.

use super::nat::reachable_services;
use super::{config, counter, fact, finding, Ctx};
use crate::binary::version_lt;
use crate::facts::{Presence, RootFacts};
use crate::parse::resolver::custom_host_names;
use crate::versions::{self, has_change};
use netsleuth_core::{Confidence, Finding, FindingKind};

fn resolv_source(root: &RootFacts) -> String {
    format!("{}/etc/resolv.conf", root.prefix())
}

fn is_musl(root: &RootFacts) -> bool {
    root.libc
        .as_ref()
        .map(|l| l.kind == "musl")
        .unwrap_or(false)
}

pub(super) fn conntrack_race(ctx: &Ctx, root: &RootFacts, out: &mut Vec<Finding>) {
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
    let fixed_all = has_change(versions::CLASH_INSERT_CLASHING, kernel);
    if fixed_all == Some(true) {
        return; // clashing UDP entries are inserted since ≈5.6: the race no longer drops
    }
    let fixed_matching = has_change(versions::CLASH_RESOLVE_MATCHING, kernel) == Some(true);
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
    let mut f = finding(
        "dns-conntrack-race",
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
        versions::status(versions::CLASH_INSERT_CLASHING, kernel),
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
            versions::change(versions::MUSL_RESOLV_OPTIONS).source
        ));
    }
    if !libc_known {
        f = f.because("the image's libc could not be identified");
    }
    out.push(f);
}

pub(super) fn go_dns_first(_ctx: &Ctx, root: &RootFacts, out: &mut Vec<Finding>) {
    if !matches!(root.nsswitch, Presence::Absent) {
        return;
    }
    for b in &root.go_binaries {
        if has_change(
            versions::GO_FILES_FIRST_WITHOUT_NSSWITCH,
            &b.info.go_version,
        ) != Some(false)
        {
            continue;
        }
        let custom = match &root.hosts {
            Presence::Present(h) => custom_host_names(h),
            _ => Vec::new(),
        };
        let cgo = b.info.cgo_enabled;
        let confidence = if !custom.is_empty() && cgo != Some(true) {
            Confidence::Likely
        } else {
            Confidence::Possible
        };
        let mut f = finding(
            "go-resolver-dns-first",
            FindingKind::LatentRisk,
            confidence,
            format!("{}: {} built with {} and no /etc/nsswitch.conf: names in /etc/hosts are asked of DNS first", root.describe(), b.path, b.info.go_version),
        )
        .with_evidence(fact(format!("{}/go-binaries.json", root.prefix()), format!("{} (pid {}): {}", b.path, b.pid.unwrap_or(0), b.info.go_version)))
        .with_evidence(fact(format!("{}/etc/nsswitch.conf", root.prefix()), "absent"))
        .with_evidence(fact("versions", versions::status(versions::GO_FILES_FIRST_WITHOUT_NSSWITCH, &b.info.go_version)));
        if !custom.is_empty() {
            f = f.with_evidence(fact(
                format!("{}/etc/hosts", root.prefix()),
                format!("pinned names: {}", custom.join(", ")),
            ));
        } else {
            f = f.because(
                "/etc/hosts pins no names beyond localhost, so the wrong order may not matter yet",
            );
        }
        match cgo {
            Some(true) => f = f.because("built with cgo: the libc resolver may be used instead of the pure-Go one"),
            Some(false) => {}
            None => f = f.because("this Go version does not record CGO_ENABLED; the pure-Go resolver is the default on Linux"),
        }
        out.push(f);
    }
}

pub(super) fn id_collision(_ctx: &Ctx, root: &RootFacts, out: &mut Vec<Finding>) {
    let Some(l) = &root.libc else { return };
    if l.kind != "musl" {
        return;
    }
    let Some(rc) = root.resolv.present() else {
        return;
    };
    if rc.nameservers.is_empty() {
        return;
    }
    let (confidence, old) = match l.version.as_deref() {
        Some(v) => match version_lt(v, "1.2.4") {
            Some(true) => (Confidence::Likely, true),
            Some(false) => return,
            None => (Confidence::Possible, true),
        },
        None => (Confidence::Possible, true),
    };
    if !old {
        return;
    }
    let mut f = finding(
        "dns-id-collision",
        FindingKind::LatentRisk,
        confidence,
        format!(
            "{}: musl {} (< 1.2.4) can give parallel A and AAAA queries the same DNS ID",
            root.describe(),
            l.version.as_deref().unwrap_or("of unknown version")
        ),
    )
    .with_evidence(fact(
        format!("{}/libc.json", root.prefix()),
        format!(
            "musl {} ({})",
            l.version.as_deref().unwrap_or("?"),
            l.evidence
        ),
    ))
    .with_evidence(fact(
        "versions",
        versions::status(
            versions::MUSL_DNS_ID_UNIQUE,
            l.version.as_deref().unwrap_or("?"),
        ),
    ));
    f = f.because("whether IDs collide depends on the hardware's clock; a capture showing A and AAAA with one ID confirms it");
    if l.version.is_none() {
        f = f.because("the musl version could not be read from the image");
    }
    out.push(f);
}

pub(super) fn upstream_unreachable(ctx: &Ctx, out: &mut Vec<Finding>) {
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
            let mut f = finding(
                "dns-upstream-unreachable",
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

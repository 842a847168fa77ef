//! NAT and conntrack: conntrack-snat-remap, snat-port-clash, conntrack-dnat-rebalance, bridge-nf-bypass.

use super::{config, counter, fact, finding, sysctl_evidence, Ctx};
use crate::facts::NetnsFacts;
use crate::parse::iptables::Service;
use crate::versions::{self, has_change};
use netsleuth_core::{Confidence, Finding, FindingKind};

/// Services whose DNAT this namespace's traffic goes through: its own, and for a pod namespace the
/// node's (kube-proxy programs the node; pod traffic is DNATed there).
pub(super) fn reachable_services(ctx: &Ctx, ns: &NetnsFacts) -> Vec<Service> {
    let mut v = ns.services();
    if !ns.is_node {
        if let Some(node) = ctx.node() {
            v.extend(node.services());
        }
    }
    v
}

fn service_for<'a>(svcs: &'a [Service], ip: &str, port: Option<u16>) -> Option<&'a Service> {
    svcs.iter()
        .find(|s| s.vip == ip && (s.port.is_none() || port.is_none() || s.port == port))
}

pub(super) fn snat_remap(ctx: &Ctx, ns: &NetnsFacts, out: &mut Vec<Finding>) {
    let Some(links) = &ns.links else { return };
    let kernel = ctx.kernel().unwrap_or("unknown");
    let fixed = has_change(versions::MASQUERADE_FLUSH_PER_ADDRESS, kernel);
    if fixed == Some(true) {
        return; // after the fix only the deleted address's entries go, which is what should happen
    }
    for rule in ns.source_nat_rules().iter().filter(|r| r.masquerade) {
        // Devices the rule can masquerade on: the named one, or any non-loopback device.
        let devices: Vec<_> = links
            .iter()
            .filter(|l| l.name != "lo")
            .filter(|l| match rule.out_iface.as_deref() {
                Some(o) if o.starts_with('!') => l.name != o[1..],
                Some(o) if o.ends_with('+') => l.name.starts_with(&o[..o.len() - 1]),
                Some(o) => l.name == o,
                None => true,
            })
            .filter(|l| {
                l.addrs
                    .iter()
                    .filter(|a| a.family == "inet" && a.scope != "host")
                    .count()
                    >= 2
            })
            .collect();
        for dev in devices {
            let addrs: Vec<String> = dev
                .addrs
                .iter()
                .filter(|a| a.family == "inet")
                .map(|a| {
                    format!(
                        "{}/{}{}",
                        a.local,
                        a.prefixlen,
                        if a.secondary { " secondary" } else { "" }
                    )
                })
                .collect();
            let confidence = if fixed == Some(false) {
                Confidence::Likely
            } else {
                Confidence::Possible
            };
            let mut f = finding(
                "conntrack-snat-remap",
                FindingKind::LatentRisk,
                confidence,
                format!(
                    "MASQUERADE on {} which carries {} IPv4 addresses; deleting one (a moving VIP) flushes all its NAT entries on kernel {kernel}",
                    dev.name,
                    addrs.len()
                ),
            )
            .with_evidence(config(&rule.source, Some(rule.line), &rule.text))
            .with_evidence(fact(format!("{}/ip-addr.json", ns.prefix()), format!("{}: {}", dev.name, addrs.join(", "))))
            .with_evidence(fact("node/kernel-release", versions::status(versions::MASQUERADE_FLUSH_PER_ADDRESS, kernel)));
            f = f.because(match fixed {
                Some(false) => "the kernel predates the per-address flush fix and the device has more than one address",
                _ => "the kernel version could not be read, so whether it has the fix is unknown",
            });
            f = f.because("no address deletion was observed (that needs live RTM_DELADDR/conntrack events or a capture)");
            out.push(f);
        }
    }
}

pub(super) fn snat_port_clash(ctx: &Ctx, ns: &NetnsFacts, out: &mut Vec<Finding>) {
    let rules = ns.source_nat_rules();
    let unrandom: Vec<_> = rules.iter().filter(|r| !r.random_fully).collect();
    let kernel = ctx.kernel().unwrap_or("unknown");
    let separate_clash_stat = has_change(versions::CLASH_RESOLVE_STAT, kernel) == Some(true);
    let src = format!("{}/conntrack-S.txt", ns.prefix());
    let insert_failed = ns.delta(|s| &s.conntrack, "insert_failed");
    let drop = ns.delta(|s| &s.conntrack, "drop");
    let rose = |d: Option<(u64, u64, u64)>| d.filter(|(a, b, _)| b > a);
    let (if_rose, drop_rose) = (rose(insert_failed), rose(drop));
    if !rules.is_empty() && (if_rose.is_some() || drop_rose.is_some()) {
        // Before 5.10 insert_failed also counted clashes the kernel resolved; only `drop` means loss.
        let confidence = if !unrandom.is_empty() && (drop_rose.is_some() || separate_clash_stat) {
            Confidence::Likely
        } else {
            Confidence::Possible
        };
        let (a, b, ms) = if_rose.or(drop_rose).unwrap_or_default();
        let mut f = finding(
            "snat-port-clash",
            FindingKind::Incident,
            confidence,
            format!(
                "conntrack insert failures rising in {} ({} → {} in {:.1} s) with {} source-NAT rule(s), {} without --random-fully",
                ns.id,
                a,
                b,
                ms as f64 / 1000.0,
                rules.len(),
                unrandom.len()
            ),
        );
        if let Some((a, b, _)) = insert_failed {
            f = f.with_evidence(counter(&src, "insert_failed", Some(a), b));
        }
        if let Some((a, b, _)) = drop {
            f = f.with_evidence(counter(&src, "drop", Some(a), b));
        }
        for r in unrandom.iter().take(4) {
            f = f.with_evidence(config(&r.source, Some(r.line), &r.text));
        }
        f = f.because("the counters do not say which flow failed: a DNS A/AAAA race (dns-conntrack-race) raises the same ones");
        if !separate_clash_stat {
            f = f.because(format!(
                "kernel {kernel} counts resolved clashes in insert_failed too; `drop` is the loss"
            ));
        }
        out.push(f);
        return;
    }
    if unrandom.is_empty() {
        return;
    }
    let mut f = finding(
        "snat-port-clash",
        FindingKind::LatentRisk,
        Confidence::Likely,
        format!(
            "{} MASQUERADE/SNAT rule(s) in {} without --random-fully (nft: fully-random)",
            unrandom.len(),
            ns.id
        ),
    );
    for r in unrandom.iter() {
        f = f.with_evidence(config(&r.source, Some(r.line), &r.text));
    }
    if let Some(s) = ns.samples.last() {
        if let Some(v) = s.conntrack.get("insert_failed") {
            f = f.with_evidence(counter(&src, "insert_failed", None, *v));
        }
    }
    f = f.because("the clash needs concurrent connections to the same destination through this SNAT; no insert failures rose during the check");
    out.push(f);
}

pub(super) fn dnat_rebalance(ctx: &Ctx, ns: &NetnsFacts, out: &mut Vec<Finding>) {
    let Some(sockets) = &ns.sockets else { return };
    let svcs = reachable_services(ctx, ns);
    if svcs.is_empty() {
        return;
    }
    // The entries live where the DNAT happens: the node for pod traffic, this namespace otherwise.
    let ct_ns = if ns.is_node || ns.services().iter().any(|s| s.kind != "ipvs") {
        ns
    } else {
        ctx.node().unwrap_or(ns)
    };
    let timeout_name = "net.netfilter.nf_conntrack_tcp_timeout_established";
    let timeout_s = ct_ns
        .sysctl_u64(timeout_name)
        .unwrap_or(ctx.opts.default_tcp_timeout_established_s);
    let timeout_ms = timeout_s * 1000;
    let keepalive_time = ns.sysctl_u64("net.ipv4.tcp_keepalive_time");
    let mut risky = Vec::new();
    for s in sockets
        .iter()
        .filter(|s| s.state == "ESTAB" || s.state == "ESTABLISHED")
    {
        let Some(svc) = service_for(&svcs, s.peer_ip(), s.peer_port()) else {
            continue;
        };
        let long_keepalive =
            matches!(&s.timer, Some((n, ms)) if n == "keepalive" && *ms > timeout_ms);
        if s.has_keepalive() && !long_keepalive {
            continue;
        }
        risky.push((s, svc, long_keepalive));
    }
    if risky.is_empty() {
        return;
    }
    risky.sort_by_key(|(s, _, _)| std::cmp::Reverse(s.idle_ms().unwrap_or(0)));
    let expired: Vec<_> = risky
        .iter()
        .filter(|(s, _, _)| s.idle_ms().map(|i| i > timeout_ms).unwrap_or(false))
        .collect();
    let longest = risky[0].0.idle_ms();
    let without = risky.iter().filter(|(_, _, l)| !l).count();
    let (kind, confidence, summary) = if !expired.is_empty() {
        (
            FindingKind::Incident,
            Confidence::Likely,
            format!(
                "{} established socket(s) in {} to Service VIPs idle longer than nf_conntrack_tcp_timeout_established ({timeout_s} s): their NAT entries have expired",
                expired.len(),
                ns.id
            ),
        )
    } else {
        (
            FindingKind::LatentRisk,
            Confidence::Likely,
            format!(
                "{} established socket(s) in {} to Service VIPs {} (longest idle {}) while nf_conntrack_tcp_timeout_established is {timeout_s} s",
                risky.len(),
                ns.id,
                if without == risky.len() { "without keepalive".to_string() } else { format!("without keepalive ({without}) or with keepalive longer than the timeout") },
                longest.map(|ms| format!("{:.1} s", ms as f64 / 1000.0)).unwrap_or_else(|| "unknown".into())
            ),
        )
    };
    let mut f = finding("conntrack-dnat-rebalance", kind, confidence, summary);
    if let Some(e) = sysctl_evidence(ct_ns, timeout_name) {
        f = f.with_evidence(e);
    }
    for (s, svc, long) in risky
        .iter()
        .filter(|(s, _, _)| s.idle_ms().unwrap_or(u64::MAX) >= ctx.opts.min_listed_idle_ms)
    {
        f = f.with_evidence(config(
            format!("{}/ss.txt", ns.prefix()),
            Some(s.line),
            format!(
                "{} {} -> {} ({} {}, {} endpoint(s)) idle {} {}{}",
                s.state,
                s.local,
                s.peer,
                svc.kind,
                svc.name,
                svc.endpoints.len(),
                s.idle_ms()
                    .map(|ms| format!("{:.1} s", ms as f64 / 1000.0))
                    .unwrap_or_else(|| "?".into()),
                if *long {
                    "keepalive longer than the timeout"
                } else {
                    "no keepalive"
                },
                s.process
                    .as_deref()
                    .map(|p| format!(" {p}"))
                    .unwrap_or_default()
            ),
        ));
    }
    if let Some(k) = keepalive_time {
        if k * 1000 > timeout_ms {
            f = f.because(format!("net.ipv4.tcp_keepalive_time ({k} s) is longer than the conntrack timeout ({timeout_s} s): keepalive with default idle would not save them"));
        }
    }
    if kind == FindingKind::LatentRisk {
        f = f.because("the sockets have not idled past the timeout yet; the break needs an idle period longer than it");
    } else {
        f = f.because("no packet moved either way for longer than the entry's timeout, so the entry is gone; the next segment will be NATed anew");
    }
    out.push(f);
}

pub(super) fn bridge_nf_bypass(ctx: &Ctx, ns: &NetnsFacts, out: &mut Vec<Finding>) {
    let Some(links) = &ns.links else { return };
    let Some(sysctls) = &ns.sysctls else { return };
    let name = "net.bridge.bridge-nf-call-iptables";
    let setting = sysctls.get(name).map(String::as_str);
    let module_loaded = ctx
        .facts
        .modules
        .as_ref()
        .map(|m| m.iter().any(|x| x == "br_netfilter"));
    let off = match setting {
        Some(v) => v.trim() == "0",
        // No net.bridge tree at all: br_netfilter is not loaded (or built in and absent).
        None => module_loaded != Some(true),
    };
    if !off {
        return;
    }
    for br in links.iter().filter(|l| l.kind.as_deref() == Some("bridge")) {
        if br.bridge_nf_call_iptables == Some(true) {
            continue; // the bridge's own option turns it on for this bridge
        }
        let ports: Vec<&str> = links
            .iter()
            .filter(|l| {
                l.master.as_deref() == Some(br.name.as_str()) && l.kind.as_deref() == Some("veth")
            })
            .map(|l| l.name.as_str())
            .collect();
        if ports.is_empty() {
            continue;
        }
        let svcs = reachable_services(ctx, ns);
        let unreplied_vips: Vec<String> = ns
            .conntrack
            .iter()
            .flat_map(|c| c.destinations.iter())
            .filter(|d| {
                d.unreplied > 0
                    && !d.dnat_backends.is_empty()
                    && svcs.iter().any(|s| s.vip == d.dst)
            })
            .map(|d| {
                format!(
                    "{}:{} {} unreplied of {}",
                    d.dst,
                    d.dport.unwrap_or(0),
                    d.unreplied,
                    d.entries
                )
            })
            .collect();
        let (kind, confidence) = if !unreplied_vips.is_empty() {
            (FindingKind::Incident, Confidence::Likely)
        } else if !svcs.is_empty() {
            (FindingKind::LatentRisk, Confidence::Likely)
        } else {
            (FindingKind::LatentRisk, Confidence::Possible)
        };
        let why = match setting {
            Some(_) => format!("{name} = 0"),
            None => "br_netfilter is not loaded (no net.bridge sysctls)".to_string(),
        };
        let mut f = finding(
            "bridge-nf-bypass",
            kind,
            confidence,
            format!(
                "{why} in {} while bridge {} carries {} veth port(s)",
                ns.id,
                br.name,
                ports.len()
            ),
        )
        .with_evidence(match setting {
            Some(v) => config(
                format!("{}/sysctl.txt", ns.prefix()),
                None,
                format!("{name} = {v}"),
            ),
            None => fact(
                "node/modules",
                "br_netfilter not loaded; /proc/sys/net/bridge absent",
            ),
        })
        .with_evidence(fact(
            format!("{}/ip-addr.json", ns.prefix()),
            format!(
                "bridge {} ports: {}",
                br.name,
                ports.iter().take(8).cloned().collect::<Vec<_>>().join(", ")
            ),
        ));
        for u in &unreplied_vips {
            f = f.with_evidence(fact(
                format!("{}/conntrack-summary.json", ns.prefix()),
                format!("DNAT entries {u}"),
            ));
        }
        if !unreplied_vips.is_empty() {
            f = f.because("DNATed entries to Service VIPs stay [UNREPLIED]: replies bypass conntrack, as bridged replies do");
        } else if svcs.is_empty() {
            f = f.because("no Service DNAT rules were seen, so same-bridge ClusterIP traffic may not exist here");
        } else {
            f = f.because("Service DNAT rules exist; a pod reaching a backend on the same bridge will get un-NATed replies");
        }
        let per_netns = has_change(versions::BRIDGE_NF_PER_NETNS, ctx.kernel().unwrap_or(""));
        if per_netns == Some(false) && !ns.is_node {
            f = f.because(
                "on this kernel the bridge-nf sysctls are global (one value for every namespace)",
            );
        }
        out.push(f);
    }
}

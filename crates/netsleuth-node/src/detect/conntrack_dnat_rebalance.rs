//! `conntrack-dnat-rebalance` in a node's state: established sockets to Service VIPs without keepalive,
//! or with keepalive longer than the conntrack timeout: idle past the timeout (an incident) or not yet
//! (a latent risk).

use super::evidence::{config, reachable_services, sysctl_evidence};
use super::Ctx;
use crate::facts::NetnsFacts;
use crate::parse::iptables::Service;
use netsleuth_core::detect::conntrack_dnat_rebalance::INCIDENT;
use netsleuth_core::{Confidence, Finding, FindingKind};

pub(super) fn check(ctx: &Ctx, ns: &NetnsFacts, out: &mut Vec<Finding>) {
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
    let mut f = Finding::new(&INCIDENT, kind, confidence, summary);
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

fn service_for<'a>(svcs: &'a [Service], ip: &str, port: Option<u16>) -> Option<&'a Service> {
    svcs.iter()
        .find(|s| s.vip == ip && (s.port.is_none() || port.is_none() || s.port == port))
}

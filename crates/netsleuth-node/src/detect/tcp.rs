//! TCP and routing: tw-recycle-paws, listen-queue-overflow, local-source-drop.

use super::{config, counter, fact, finding, is_public, sysctl_evidence, Ctx};
use crate::facts::NetnsFacts;
use crate::versions::{self, has_change};
use netsleuth_core::{Confidence, Finding, FindingKind};
use std::net::IpAddr;

pub(super) fn tw_recycle(ctx: &Ctx, ns: &NetnsFacts, out: &mut Vec<Finding>) {
    if ns.sysctl_u64("net.ipv4.tcp_tw_recycle") != Some(1) {
        return; // off, or a kernel ≥ 4.12 where the option no longer exists
    }
    let timestamps = ns.sysctl_u64("net.ipv4.tcp_timestamps");
    if timestamps == Some(0) {
        return; // the per-host PAWS check needs timestamps
    }
    let src = format!("{}/sample-*/netstat", ns.prefix());
    let paws = ns.delta(|s| &s.netstat, "TcpExt.PAWSPassive");
    let kernel = ctx.kernel().unwrap_or("unknown");
    let mut f = match paws.filter(|(a, b, _)| b > a) {
        Some((a, b, ms)) => finding(
            "tw-recycle-paws",
            FindingKind::Incident,
            Confidence::Confirmed,
            format!("tcp_tw_recycle=1 in {} and PAWSPassive rising ({a} → {b} in {:.1} s): SYNs dropped by the per-host timestamp check", ns.id, ms as f64 / 1000.0),
        )
        .with_evidence(counter(&src, "TcpExt.PAWSPassive", Some(a), b)),
        None => finding(
            "tw-recycle-paws",
            FindingKind::LatentRisk,
            if timestamps.is_some() { Confidence::Confirmed } else { Confidence::Likely },
            format!("tcp_tw_recycle=1 with TCP timestamps on in {}: SYNs from clients behind NAT can be dropped", ns.id),
        ),
    };
    if let Some(e) = sysctl_evidence(ns, "net.ipv4.tcp_tw_recycle") {
        f = f.with_evidence(e);
    }
    if let Some(e) = sysctl_evidence(ns, "net.ipv4.tcp_timestamps") {
        f = f.with_evidence(e);
    }
    f = f.with_evidence(fact(
        "node/kernel-release",
        versions::status(versions::TS_OFFSET_PER_CONNECTION, kernel),
    ));
    if has_change(versions::TS_OFFSET_PER_CONNECTION, kernel) == Some(true) {
        f = f.because("this kernel randomises timestamp offsets per connection, so drops happen even without NAT");
    }
    if f.kind == FindingKind::LatentRisk {
        f = f.because("PAWSPassive did not rise during the check (or only one sample was taken)");
    }
    out.push(f);
}

pub(super) fn listen_overflow(ctx: &Ctx, ns: &NetnsFacts, out: &mut Vec<Finding>) {
    let _ = ctx;
    let src = format!("{}/sample-*/netstat", ns.prefix());
    let names = [
        "TcpExt.ListenOverflows",
        "TcpExt.ListenDrops",
        "TcpExt.TCPReqQFullDrop",
    ];
    let rising: Vec<(&str, (u64, u64, u64))> = names
        .iter()
        .filter_map(|n| {
            ns.delta(|s| &s.netstat, n)
                .filter(|(a, b, _)| b > a)
                .map(|d| (*n, d))
        })
        .collect();
    let full: Vec<_> = ns
        .sockets
        .iter()
        .flatten()
        .filter(|s| s.state == "LISTEN" && s.send_q > 0 && s.recv_q >= s.send_q)
        .collect();
    if rising.is_empty() && full.is_empty() {
        return;
    }
    let somaxconn = ns.sysctl_u64("net.core.somaxconn");
    let mut f = if let Some((name, (a, b, ms))) = rising.first().copied() {
        let confidence = if full.is_empty() {
            Confidence::Likely
        } else {
            Confidence::Confirmed
        };
        let who = full
            .first()
            .map(|s| {
                format!(
                    "; listener {} has {}/{} queued",
                    s.local, s.recv_q, s.send_q
                )
            })
            .unwrap_or_default();
        finding(
            "listen-queue-overflow",
            FindingKind::Incident,
            confidence,
            format!("{name} rising in {} ({a} → {b} in {:.1} s): SYNs to a listener are being dropped{who}", ns.id, ms as f64 / 1000.0),
        )
    } else {
        let s = full[0];
        finding(
            "listen-queue-overflow",
            FindingKind::LatentRisk,
            Confidence::Likely,
            format!(
                "listener {} in {} has its accept queue full ({}/{}); new SYNs will be dropped",
                s.local, ns.id, s.recv_q, s.send_q
            ),
        )
    };
    for (name, (a, b, _)) in &rising {
        f = f.with_evidence(counter(&src, name, Some(*a), *b));
    }
    for s in full.iter().take(6) {
        f = f.with_evidence(config(
            format!("{}/ss.txt", ns.prefix()),
            Some(s.line),
            format!(
                "LISTEN {} accept queue {} of backlog {}{}",
                s.local,
                s.recv_q,
                s.send_q,
                s.process
                    .as_deref()
                    .map(|p| format!(" {p}"))
                    .unwrap_or_default()
            ),
        ));
    }
    for n in [
        "net.core.somaxconn",
        "net.ipv4.tcp_max_syn_backlog",
        "net.ipv4.tcp_syncookies",
    ] {
        if let Some(e) = sysctl_evidence(ns, n) {
            f = f.with_evidence(e);
        }
    }
    if let Some(m) = somaxconn {
        if full.iter().any(|s| s.send_q == m) {
            f = f.because(format!("the backlog equals net.core.somaxconn ({m}): the application's own backlog was capped"));
        }
    }
    if rising.is_empty() {
        f = f.because(
            "the overflow counters did not rise during the check (or only one sample was taken)",
        );
    } else if full.is_empty() {
        f = f.because("no listener was caught with a full queue at the moment of the socket dump; the SYN queue may be the one overflowing");
    }
    out.push(f);
}

pub(super) fn local_source_drop(ctx: &Ctx, ns: &NetnsFacts, out: &mut Vec<Finding>) {
    let Some(links) = &ns.links else { return };
    let lb_kinds: Vec<String> = ns
        .services()
        .iter()
        .filter(|s| s.kind == "loadbalancer IP" || s.kind == "external IP")
        .map(|s| s.vip.clone())
        .collect();
    // kube-ipvs0, or a dummy device carrying only host routes, as kube-proxy's IPVS mode makes it.
    let ipvs_like = links.iter().filter(|l| {
        l.name == "kube-ipvs0"
            || (l.kind.as_deref() == Some("dummy")
                && !l.addrs.is_empty()
                && l.addrs
                    .iter()
                    .all(|a| a.prefixlen == 32 || a.prefixlen == 128))
    });
    let accept_all = ns.sysctl_u64("net.ipv4.conf.all.accept_local");
    if accept_all == Some(1) {
        return;
    }
    for dev in ipvs_like {
        let lb: Vec<&str> = dev
            .addrs
            .iter()
            .filter(|a| a.family == "inet")
            .map(|a| a.local.as_str())
            .filter(|ip| {
                lb_kinds.iter().any(|v| v == ip)
                    || ip.parse::<IpAddr>().map(|i| is_public(&i)).unwrap_or(false)
            })
            .collect();
        if lb.is_empty() {
            continue;
        }
        // Interfaces that would receive the LB's packets: any other device without accept_local=1.
        let ingress: Vec<&str> = links
            .iter()
            .filter(|l| l.name != "lo" && l.name != dev.name)
            .filter(|l| ns.sysctl_u64(&format!("net.ipv4.conf.{}.accept_local", l.name)) != Some(1))
            .map(|l| l.name.as_str())
            .collect();
        let in_local: Vec<&str> = ns
            .routes
            .iter()
            .flatten()
            .filter(|r| r.table == "local" && r.rtype == "local" && lb.contains(&r.dst.as_str()))
            .map(|r| r.dst.as_str())
            .collect();
        let martian = ns
            .delta(|s| &s.rt_cache, "in_martian_src")
            .filter(|(a, b, _)| b > a);
        let (kind, confidence) = match martian {
            Some(_) => (FindingKind::Incident, Confidence::Likely),
            None if !in_local.is_empty() => (FindingKind::LatentRisk, Confidence::Confirmed),
            None => (FindingKind::LatentRisk, Confidence::Likely),
        };
        let summary = match martian {
            Some((a, b, ms)) => format!(
                "in_martian_src rising in {} ({a} → {b} in {:.1} s) while LB IP(s) {} sit on {} in table local with accept_local=0",
                ns.id,
                ms as f64 / 1000.0,
                lb.join(", "),
                dev.name
            ),
            None => format!("LB IP(s) {} on {} in table local with accept_local=0 in {}: packets from those sources are dropped as martian", lb.join(", "), dev.name, ns.id),
        };
        let mut f = finding("local-source-drop", kind, confidence, summary).with_evidence(fact(
            format!("{}/ip-addr.json", ns.prefix()),
            format!(
                "{}: {}",
                dev.name,
                lb.iter()
                    .map(|ip| format!("{ip}/32"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
        for ip in &in_local {
            f = f.with_evidence(config(
                format!("{}/ip-route.json", ns.prefix()),
                None,
                format!("local {ip} dev {} table local", dev.name),
            ));
        }
        if let Some(e) = sysctl_evidence(ns, "net.ipv4.conf.all.accept_local") {
            f = f.with_evidence(e);
        }
        if let Some((a, b, _)) = martian {
            f = f.with_evidence(counter(
                format!("{}/sample-*/stat-rt_cache", ns.prefix()),
                "in_martian_src",
                Some(a),
                b,
            ));
            f = f.because("martian-source drops rose during the check; the counter does not name the source address");
        }
        if !ingress.is_empty() {
            f = f.because(format!(
                "interfaces without accept_local=1: {}",
                ingress
                    .iter()
                    .take(6)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if in_local.is_empty() && ns.routes.is_some() {
            f = f.because("the local-table route of the address was not found in the route dump");
        }
        if has_change(
            versions::DROP_REASON_IP_LOCAL_SOURCE,
            ctx.kernel().unwrap_or(""),
        ) == Some(true)
        {
            f = f.because("this kernel reports these drops as IP_LOCAL_SOURCE on the skb:kfree_skb tracepoint (tracing it on the node, e.g. `perf record -e skb:kfree_skb -a`, counts them)");
        }
        out.push(f);
    }
}

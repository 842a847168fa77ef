//! `timewait-paws-reject` in a node's state: SYNs rejected by PAWS in TIME_WAIT counted (TcpExt
//! PAWSTimewait on ≥ 6.16, PAWSEstab before) in a namespace whose servers close first (TIME_WAIT
//! sockets on its listening ports). Counters that rose between two samples are an incident under way;
//! many server-side TIME_WAIT sockets from one peer address are a latent risk.

use super::evidence::{config, counter, fact, sysctl_evidence};
use super::Ctx;
use crate::facts::NetnsFacts;
use netsleuth_core::detect::timewait_paws_reject::INCIDENT;
use netsleuth_core::versions;
use netsleuth_core::{Confidence, Finding, FindingKind};
use std::collections::{BTreeMap, BTreeSet};

/// Server-side TIME_WAIT sockets from one peer address to one listening port from which port reuse
/// within the 60 s of TIME_WAIT becomes likely if that address is a NAT shared by several hosts.
const RISKY_TIME_WAIT_PER_PEER: usize = 64;

fn port_of(endpoint: &str) -> Option<u16> {
    endpoint.rsplit_once(':')?.1.parse().ok()
}

fn host_of(endpoint: &str) -> &str {
    endpoint
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(endpoint)
}

pub(super) fn check(ctx: &Ctx, ns: &NetnsFacts, out: &mut Vec<Finding>) {
    let kernel = ctx.kernel().unwrap_or("unknown");
    // Where the kernel has its own counter for TIME_WAIT PAWS rejects, PAWSEstab no longer counts
    // them; before 6.16 PAWSEstab counts them among established-connection PAWS rejects.
    let names: &[&str] = match versions::PAWS_TW_COUNTER.has(kernel) {
        Some(true) => &["TcpExt.PAWSTimewait"],
        Some(false) => &["TcpExt.PAWSEstab"],
        None => &["TcpExt.PAWSTimewait", "TcpExt.PAWSEstab"],
    };
    let src = format!("{}/sample-*/netstat", ns.prefix());
    let rising: Vec<(&str, (u64, u64, u64))> = names
        .iter()
        .filter_map(|n| {
            ns.delta(|s| &s.netstat, n)
                .filter(|(a, b, _)| b > a)
                .map(|d| (*n, d))
        })
        .collect();
    let sockets = ns.sockets.as_deref().unwrap_or(&[]);
    let listening: BTreeSet<u16> = sockets
        .iter()
        .filter(|s| s.state == "LISTEN")
        .filter_map(|s| port_of(&s.local))
        .collect();
    // TIME_WAIT held by the server side: the socket's local port is a listening port.
    let mut server_tw: BTreeMap<(u16, &str), Vec<&crate::parse::ss::Socket>> = BTreeMap::new();
    for s in sockets.iter().filter(|s| s.state == "TIME-WAIT") {
        if let Some(p) = port_of(&s.local).filter(|p| listening.contains(p)) {
            server_tw.entry((p, host_of(&s.peer))).or_default().push(s);
        }
    }
    let server_tw_total: usize = server_tw.values().map(Vec::len).sum();
    let ss_src = format!("{}/ss.txt", ns.prefix());
    if let Some((name, (a, b, ms))) = rising.first().copied() {
        let confidence = if server_tw_total > 0 {
            Confidence::Likely
        } else {
            Confidence::Possible
        };
        let mut f = Finding::new(
            &INCIDENT,
            FindingKind::Incident,
            confidence,
            format!(
                "{name} rising in {} ({a} → {b} in {:.1} s): SYNs are being rejected by TIME_WAIT sockets' timestamp check{}",
                ns.id,
                ms as f64 / 1000.0,
                if server_tw_total > 0 {
                    format!("; {server_tw_total} server-side TIME_WAIT socket(s) on listening ports")
                } else {
                    String::new()
                }
            ),
        )
        .with_evidence(counter(&src, name, Some(a), b))
        .because("the counter counts SYNs answered by a TIME_WAIT socket with a bare ACK because their TCP timestamp was behind the one it holds");
        if name == "TcpExt.PAWSEstab" {
            f = f.because("before 6.16 PAWSEstab also counts old duplicate segments of established connections: a capture (a SYN answered by a bare ACK) tells the two apart");
        }
        f = if server_tw_total > 0 {
            f.because("the namespace's servers close connections first (TIME_WAIT on their listening ports): their TIME_WAIT meets reused client ports")
        } else {
            f.because(
                "no server-side TIME_WAIT socket was caught in the socket list (they last 60 s)",
            )
        };
        f = f.rules_out(
            netsleuth_core::detect::tw_recycle_paws::INCIDENT.id,
            "tcp_tw_recycle's drops count in PAWSPassive and leave no bare ACK; this counter is the TIME_WAIT socket's own",
        );
        out.push(with_sockets(f, ns, &server_tw, &ss_src, ctx));
        return;
    }
    nat_forgets_too_soon(ns, out);
    // Latent: one peer address holds many TIME_WAIT sockets toward one listening port. If it is a NAT
    // for several hosts with their own timestamp clocks, a reused port meets TIME_WAIT.
    let crowded: BTreeMap<(u16, &str), Vec<&crate::parse::ss::Socket>> = server_tw
        .into_iter()
        .filter(|(_, v)| v.len() >= RISKY_TIME_WAIT_PER_PEER)
        .collect();
    let Some(((port, peer), v)) = crowded.iter().max_by_key(|(_, v)| v.len()) else {
        return;
    };
    let f = Finding::new(
        &INCIDENT,
        FindingKind::LatentRisk,
        Confidence::Possible,
        format!(
            "{} server-side TIME_WAIT sockets from {peer} on listening port {port} in {}: if {peer} is a NAT for several hosts, a source port it reuses within 60 s meets TIME_WAIT and the SYN is rejected",
            v.len(),
            ns.id
        ),
    )
    .because(format!(
        "≥ {RISKY_TIME_WAIT_PER_PEER} TIME_WAIT sockets from one address to one port: the server closes first and that address cycles through its source ports"
    ))
    .because("whether the address hides several hosts (SNAT, a NAT gateway) is not in the node's state; the PAWS counter did not rise during the check (or one sample was taken)");
    out.push(with_sockets(f, ns, &crowded, &ss_src, ctx));
}

/// The server keeps TIME_WAIT for this long (TCP_TIMEWAIT_LEN); a NAT that forgets a closed
/// connection sooner may give its source port to another host meanwhile.
const SERVER_TIME_WAIT_S: u64 = 60;

/// A source-NAT namespace whose conntrack forgets closed connections before a server's TIME_WAIT ends:
/// the translated address:port of one host's connection can go to another host's next one.
fn nat_forgets_too_soon(ns: &NetnsFacts, out: &mut Vec<Finding>) {
    let key = "net.netfilter.nf_conntrack_tcp_timeout_time_wait";
    let Some(tw) = ns.sysctl_u64(key).filter(|t| *t < SERVER_TIME_WAIT_S) else {
        return;
    };
    let rules = ns.source_nat_rules();
    if rules.is_empty() {
        return;
    }
    let mut f = Finding::new(
        &INCIDENT,
        FindingKind::LatentRisk,
        Confidence::Likely,
        format!(
            "{} forgets closed connections after {tw} s ({key}) while it source-NATs ({} rule(s)): a server that closed first holds TIME_WAIT for {SERVER_TIME_WAIT_S} s, and a SYN from another host given the same address and port is rejected if its timestamp is behind",
            ns.id,
            rules.len()
        ),
    )
    .because(format!(
        "conntrack's TIME_WAIT entry is what keeps SNAT from reusing a tuple; at {tw} s (< {SERVER_TIME_WAIT_S} s) the tuple is free while the server still remembers it"
    ))
    .because("whether the servers reached close first, and whether reuse happens (few SNAT ports, many connections to one destination), is not in the node's state");
    if let Some(e) = sysctl_evidence(ns, key) {
        f = f.with_evidence(e);
    }
    for r in rules.iter().take(4) {
        f = f.with_evidence(config(r.source.to_string(), Some(r.line), r.text.clone()));
    }
    out.push(f);
}

fn with_sockets(
    mut f: Finding,
    ns: &NetnsFacts,
    server_tw: &BTreeMap<(u16, &str), Vec<&crate::parse::ss::Socket>>,
    ss_src: &str,
    ctx: &Ctx,
) -> Finding {
    let mut groups: Vec<_> = server_tw.iter().collect();
    groups.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
    for ((port, peer), v) in groups.iter().take(4) {
        let s = v[0];
        f = f.with_evidence(config(
            ss_src,
            Some(s.line),
            format!(
                "TIME-WAIT {} ← {} ({} TIME_WAIT socket(s) from {peer} on port {port})",
                s.local,
                s.peer,
                v.len()
            ),
        ));
    }
    for key in [
        "net.ipv4.tcp_timestamps",
        "net.netfilter.nf_conntrack_tcp_timeout_time_wait",
    ] {
        if let Some(e) = sysctl_evidence(ns, key) {
            f = f.with_evidence(e);
        }
    }
    if let Some(k) = ctx.kernel() {
        f = f.with_evidence(fact(
            "node/kernel-release",
            versions::SYN_RESEND_AFTER_BAD_ACK.status(k),
        ));
    }
    f
}

//! `ephemeral-port-exhaustion` in a node's state: in a namespace, the sockets toward one destination
//! (open, or in TIME_WAIT after the namespace closed first) hold every port of its
//! `ip_local_port_range` — connect() to that destination fails now; holding most of them is a latent
//! risk.

use super::evidence::{config, sysctl_evidence};
use super::Ctx;
use crate::facts::NetnsFacts;
use crate::parse::ss::{split_endpoint, Socket};
use netsleuth_core::detect::ephemeral_port_exhaustion::INCIDENT;
use netsleuth_core::{Confidence, Finding, FindingKind};
use std::collections::{BTreeMap, BTreeSet};

/// Share of the range held toward one destination from which running out is a latent risk.
const RISK_SHARE: f64 = 0.8;

fn port_range(ns: &NetnsFacts) -> Option<(u16, u16)> {
    let v = ns.sysctl("net.ipv4.ip_local_port_range")?;
    let mut w = v.split_whitespace();
    let lo: u16 = w.next()?.parse().ok()?;
    let hi: u16 = w.next()?.parse().ok()?;
    (lo <= hi).then_some((lo, hi))
}

pub(super) fn check(ctx: &Ctx, ns: &NetnsFacts, out: &mut Vec<Finding>) {
    let _ = ctx;
    let (Some((lo, hi)), Some(sockets)) = (port_range(ns), ns.sockets.as_deref()) else {
        return;
    };
    // Ports the namespace listens on are servers' ports, not ephemeral ones.
    let listening: BTreeSet<u16> = sockets
        .iter()
        .filter(|s| s.state == "LISTEN")
        .filter_map(|s| split_endpoint(&s.local).1)
        .collect();
    // Reserved ports are skipped by the ephemeral choice: they do not count toward the range.
    let reserved = ns
        .sysctl("net.ipv4.ip_local_reserved_ports")
        .map(count_reserved(lo, hi))
        .unwrap_or(0);
    let range_ports = (u32::from(hi - lo) + 1).saturating_sub(reserved);
    if range_ports == 0 {
        return;
    }
    // (local address, destination) → the sockets holding an ephemeral port toward it.
    let mut by_dest: BTreeMap<(&str, &str), Vec<&Socket>> = BTreeMap::new();
    for s in sockets {
        if matches!(s.state.as_str(), "LISTEN" | "UNCONN") {
            continue;
        }
        let (host, Some(port)) = split_endpoint(&s.local) else {
            continue;
        };
        if port < lo || port > hi || listening.contains(&port) {
            continue;
        }
        by_dest.entry((host, s.peer.as_str())).or_default().push(s);
    }
    let Some(((local, dest), held)) = by_dest.iter().max_by_key(|(_, v)| v.len()) else {
        return;
    };
    let n = held.len() as u32;
    let full = n >= range_ports;
    if !full && (n as f64) < RISK_SHARE * range_ports as f64 {
        return;
    }
    let time_wait = held.iter().filter(|s| s.state == "TIME-WAIT").count();
    let mut f = if full {
        Finding::new(
            &INCIDENT,
            FindingKind::Incident,
            Confidence::Confirmed,
            format!(
                "{local} in {} holds all {range_ports} ports of ip_local_port_range {lo}–{hi} toward {dest} ({time_wait} in TIME-WAIT): connect() to {dest} fails with EADDRNOTAVAIL now",
                ns.id
            ),
        )
        .because("every ephemeral port of the namespace's range is part of a 4-tuple toward this destination (open or in TIME_WAIT): the kernel finds no unique 4-tuple for a new connection to it")
    } else {
        Finding::new(
            &INCIDENT,
            FindingKind::LatentRisk,
            Confidence::Likely,
            format!(
                "{local} in {} holds {n} of the {range_ports} ports of ip_local_port_range {lo}–{hi} toward {dest} ({time_wait} in TIME-WAIT): a little more churn and connect() to {dest} fails with EADDRNOTAVAIL",
                ns.id
            ),
        )
        .because(format!(
            "≥ {:.0} % of the range is held toward one destination; how fast connections come and go is not in one socket list",
            RISK_SHARE * 100.0
        ))
    };
    if time_wait * 2 >= held.len() {
        f = f.because("most of them are in TIME_WAIT: this namespace closes first and opens a new connection per request (connection reuse, or the server closing first, frees them)");
    }
    if let Some(e) = sysctl_evidence(ns, "net.ipv4.ip_local_port_range") {
        f = f.with_evidence(e);
    }
    for key in ["net.ipv4.ip_local_reserved_ports", "net.ipv4.tcp_tw_reuse"] {
        if let Some(e) = sysctl_evidence(ns, key) {
            f = f.with_evidence(e);
        }
    }
    let src = format!("{}/ss.txt", ns.prefix());
    for s in held.iter().take(6) {
        f = f.with_evidence(config(
            &src,
            Some(s.line),
            format!("{} {} → {}", s.state, s.local, s.peer),
        ));
    }
    out.push(f);
}

/// How many ports of lo..=hi a `ip_local_reserved_ports` value (`8080,9000-9100`) reserves.
fn count_reserved(lo: u16, hi: u16) -> impl Fn(&str) -> u32 {
    move |v: &str| {
        v.split(',')
            .filter_map(|part| {
                let part = part.trim();
                let (a, b) = part.split_once('-').unwrap_or((part, part));
                let (a, b): (u16, u16) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                let (a, b) = (a.max(lo), b.min(hi));
                (a <= b).then(|| u32::from(b - a) + 1)
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reserved_ports_count_inside_the_range_only() {
        let f = super::count_reserved(40000, 40009);
        assert_eq!(f("40000,40005-40007"), 4);
        assert_eq!(f("8080, 39990-40001"), 2);
        assert_eq!(f(""), 0);
    }
}

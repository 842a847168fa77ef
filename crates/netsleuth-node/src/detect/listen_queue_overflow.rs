//! `listen-queue-overflow` in a node's state: listen-overflow counters rising, or a listener caught
//! with its accept queue full.

use super::evidence::{config, counter, sysctl_evidence};
use super::Ctx;
use crate::facts::NetnsFacts;
use netsleuth_core::detect::listen_queue_overflow::INCIDENT;
use netsleuth_core::{Confidence, Finding, FindingKind};

pub(super) fn check(ctx: &Ctx, ns: &NetnsFacts, out: &mut Vec<Finding>) {
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
        Finding::new(
&INCIDENT,
            FindingKind::Incident,
            confidence,
            format!("{name} rising in {} ({a} → {b} in {:.1} s): SYNs to a listener are being dropped{who}", ns.id, ms as f64 / 1000.0),
        )
    } else {
        let s = full[0];
        Finding::new(
            &INCIDENT,
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

//! `tw-recycle-paws` in a node's state: tcp_tw_recycle=1 with TCP timestamps on; PAWSPassive rising
//! makes it an incident.

use super::evidence::{counter, fact, sysctl_evidence};
use super::Ctx;
use crate::facts::NetnsFacts;
use netsleuth_core::detect::tw_recycle_paws::INCIDENT;
use netsleuth_core::versions;
use netsleuth_core::{Confidence, Finding, FindingKind};

pub(super) fn check(ctx: &Ctx, ns: &NetnsFacts, out: &mut Vec<Finding>) {
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
        Some((a, b, ms)) => Finding::new(
&INCIDENT,
            FindingKind::Incident,
            Confidence::Confirmed,
            format!("tcp_tw_recycle=1 in {} and PAWSPassive rising ({a} → {b} in {:.1} s): SYNs dropped by the per-host timestamp check", ns.id, ms as f64 / 1000.0),
        )
        .with_evidence(counter(&src, "TcpExt.PAWSPassive", Some(a), b)),
        None => Finding::new(
&INCIDENT,
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
        versions::TS_OFFSET_PER_CONNECTION.status(kernel),
    ));
    if versions::TS_OFFSET_PER_CONNECTION.has(kernel) == Some(true) {
        f = f.because("this kernel randomises timestamp offsets per connection, so drops happen even without NAT");
    }
    if f.kind == FindingKind::LatentRisk {
        f = f.because("PAWSPassive did not rise during the check (or only one sample was taken)");
    }
    out.push(f);
}

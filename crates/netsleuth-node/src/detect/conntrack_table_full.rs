//! `conntrack-table-full` in a node's state: nf_conntrack_count at nf_conntrack_max, or `drop` rising
//! between the two counter samples with the table nearly full (an incident under way); the table
//! filling past three quarters of its size (a latent risk).

use super::evidence::{counter, fact, sysctl_evidence};
use super::Ctx;
use crate::facts::NetnsFacts;
use netsleuth_core::detect::conntrack_table_full::INCIDENT;
use netsleuth_core::{Confidence, Finding, FindingKind};

/// At or above this share of the table (percent) new entries may already be refused: early_drop
/// finds nothing to evict when the buckets it scans hold only assured entries.
const FULL_PCT: u64 = 98;
/// Above this share the table is close enough to full that a burst fills it.
const RISK_PCT: u64 = 75;

pub(super) fn check(_ctx: &Ctx, ns: &NetnsFacts, out: &mut Vec<Finding>) {
    let (Some(count), Some(max)) = (
        ns.sysctl_u64("net.netfilter.nf_conntrack_count"),
        ns.sysctl_u64("net.netfilter.nf_conntrack_max"),
    ) else {
        return;
    };
    if max == 0 {
        return; // no limit
    }
    let pct = count * 100 / max;
    let src = format!("{}/conntrack-S.txt", ns.prefix());
    let rose = |name: &str| ns.delta(|s| &s.conntrack, name).filter(|(a, b, _)| b > a);
    let drop = rose("drop");
    let early_drop = rose("early_drop");
    let full = pct >= FULL_PCT;
    let incident = full || (drop.is_some() && pct >= RISK_PCT);
    if !incident && pct < RISK_PCT {
        return;
    }
    let (kind, confidence, summary) = if incident {
        let confidence = if full && drop.is_some() {
            Confidence::Confirmed
        } else {
            Confidence::Likely
        };
        (
            FindingKind::Incident,
            confidence,
            format!(
                "conntrack table of {} is {}full: nf_conntrack_count {count} of nf_conntrack_max {max} ({pct} %){}",
                ns.id,
                if full { "" } else { "nearly " },
                drop.map(|(a, b, ms)| format!(", `drop` rose {a} → {b} in {:.1} s", ms as f64 / 1000.0))
                    .unwrap_or_default()
            ),
        )
    } else {
        (
            FindingKind::LatentRisk,
            Confidence::Likely,
            format!(
                "conntrack table of {} is {pct} % full (nf_conntrack_count {count} of nf_conntrack_max {max}); a burst of new flows fills it",
                ns.id
            ),
        )
    };
    let mut f = Finding::new(&INCIDENT, kind, confidence, summary);
    for name in [
        "net.netfilter.nf_conntrack_count",
        "net.netfilter.nf_conntrack_max",
        "net.netfilter.nf_conntrack_buckets",
    ] {
        if let Some(e) = sysctl_evidence(ns, name) {
            f = f.with_evidence(e);
        }
    }
    for (name, d) in [("drop", drop), ("early_drop", early_drop)] {
        if let Some((a, b, _)) = d {
            f = f.with_evidence(counter(&src, name, Some(a), b));
        } else if let Some(v) = ns.samples.last().and_then(|s| s.conntrack.get(name)) {
            f = f.with_evidence(counter(&src, name, None, *v));
        }
    }
    if let Some(ct) = &ns.conntrack {
        let states: Vec<String> = ct
            .by_state
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .chain(
                ct.by_proto
                    .iter()
                    .filter(|(p, _)| p.as_str() != "tcp")
                    .map(|(p, n)| format!("{p} {n}")),
            )
            .collect();
        f = f.with_evidence(fact(
            format!("{}/conntrack-summary.json", ns.prefix()),
            format!(
                "what fills the table: {} entries, {} assured, {} unreplied; {}",
                ct.entries,
                ct.assured,
                ct.unreplied,
                states.join(", ")
            ),
        ));
        if let Some(d) = ct.destinations.first() {
            f = f.with_evidence(fact(
                format!("{}/conntrack-summary.json", ns.prefix()),
                format!(
                    "busiest destination: {} {}{} with {} entries",
                    d.proto,
                    d.dst,
                    d.dport.map(|p| format!(":{p}")).unwrap_or_default(),
                    d.entries
                ),
            ));
        }
    }
    f = match (full, drop.is_some()) {
        (true, true) => f.because("the table is at its limit and `drop` rose while the node was read: new flows are being refused now"),
        (true, false) => f.because("the table is at its limit; `drop` did not rise between the samples (or was not sampled): new flows are refused whenever early_drop finds no unassured entry to evict"),
        (false, true) => f.because(format!("`drop` rose with the table at {pct} %: it was full in between (or insertions clashed; snat-port-clash and dns-conntrack-race raise `drop` too)")),
        (false, false) => f.because("nothing was dropped while the node was read; the table fills with the next burst of new flows or a slower expiry"),
    };
    if early_drop.is_some() {
        f = f.because(
            "`early_drop` rose: the kernel is already evicting unassured entries to make room",
        );
    }
    if !full && drop.is_some() {
        f = f
            .cannot_rule_out(
                netsleuth_core::detect::snat_port_clash::INCIDENT.id,
                "insert clashes raise `drop` too; `insert_failed` rising beside it points there",
            )
            .cannot_rule_out(
                netsleuth_core::detect::dns_conntrack_race::INCIDENT.id,
                "the A/AAAA race raises `drop` too",
            );
    }
    out.push(f);
}

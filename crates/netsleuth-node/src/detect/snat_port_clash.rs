//! `snat-port-clash` in a node's state: conntrack insert failures rising beside source-NAT rules (an
//! incident), or source-NAT rules without --random-fully (a latent risk).

use super::evidence::{config, counter};
use super::Ctx;
use crate::facts::NetnsFacts;
use netsleuth_core::detect::snat_port_clash::INCIDENT;
use netsleuth_core::versions;
use netsleuth_core::{Confidence, Finding, FindingKind};

pub(super) fn check(ctx: &Ctx, ns: &NetnsFacts, out: &mut Vec<Finding>) {
    let rules = ns.source_nat_rules();
    let unrandom: Vec<_> = rules.iter().filter(|r| !r.random_fully).collect();
    let kernel = ctx.kernel().unwrap_or("unknown");
    let separate_clash_stat = versions::CLASH_RESOLVE_STAT.has(kernel) == Some(true);
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
        let mut f = Finding::new(
&INCIDENT,
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
    let mut f = Finding::new(
        &INCIDENT,
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

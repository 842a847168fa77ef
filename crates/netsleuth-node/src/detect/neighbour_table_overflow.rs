//! `neighbour-table-overflow` in a node's state. The neighbour tables and their thresholds are the
//! host's, so only the initial namespace's facts (`is_node`) decide: entries (`/proc/net/stat/
//! arp_cache` and `ndisc_cache`) against `gc_thresh2`/`gc_thresh3`. `table_fulls` rising between the
//! samples is an incident under way (the kernel refused neighbours just now), and so is the kernel
//! log's "neighbour table overflow"; entries above gc_thresh2 without either are a latent risk.

use super::evidence::{counter, fact, sysctl_evidence};
use super::Ctx;
use crate::facts::{paths, NetnsFacts, NodeFacts};
use netsleuth_core::detect::neighbour_table_overflow::INCIDENT;
use netsleuth_core::node::NeighbourTable;
use netsleuth_core::{Confidence, Finding, FindingKind};

/// One family's table as the facts show it.
struct Table<'a> {
    family: &'static str,
    /// `arp_cache` or `ndisc_cache`: the table's name in /proc and in the kernel's message.
    name: &'static str,
    entries: Option<u64>,
    /// Where `entries` came from.
    entries_source: String,
    host_wide: bool,
    fulls: Option<(u64, u64, u64)>,
    forced_gc: Option<(u64, u64, u64)>,
    ns: &'a NetnsFacts,
}

fn stat<'a>(ns: &'a NetnsFacts, v6: bool) -> impl Fn(&str) -> Option<(u64, u64, u64)> + 'a {
    move |name: &str| {
        let pick = |s: &crate::facts::CounterSample| {
            if v6 {
                s.ndisc_cache.get(name).copied()
            } else {
                s.arp_cache.get(name).copied()
            }
        };
        let first = ns.samples.first()?;
        let last = ns.samples.last()?;
        Some((pick(first)?, pick(last)?, last.offset_ms - first.offset_ms))
    }
}

fn tables<'a>(facts: &'a NodeFacts, node: &'a NetnsFacts) -> [Table<'a>; 2] {
    let one = |v6: bool| {
        let st = stat(node, v6);
        let name = if v6 { "ndisc_cache" } else { "arp_cache" };
        let host = st("entries").map(|(_, b, _)| b);
        // Without the host's counters (a namespace other than the initial one), /proc/net/arp of the
        // namespaces collected is a lower bound of the IPv4 table.
        // (`ip -j neigh`, both families, where /proc/net/arp is not there.)
        let fam = if v6 { "inet6" } else { "inet" };
        let rows: Option<u64> = facts
            .namespaces
            .iter()
            .filter_map(|n| match (&n.arp, &n.neighbours) {
                (Some(a), _) if !v6 => Some(a.entries()),
                (_, Some(s)) => Some(s.entries(fam)),
                _ => None,
            })
            .reduce(|a, b| a + b);
        Table {
            family: if v6 { "ipv6" } else { "ipv4" },
            name,
            entries: host.or(rows),
            entries_source: if host.is_some() {
                format!("{}/sample-*/stat-{name}", node.prefix())
            } else if v6 {
                "netns/*/ip-neigh.json".into()
            } else {
                "netns/*/proc-net-arp".into()
            },
            host_wide: host.is_some(),
            fulls: st("table_fulls"),
            forced_gc: st("forced_gc_runs"),
            ns: node,
        }
    };
    [one(false), one(true)]
}

/// What the facts say of the tables, for the capture analysis (`NodeContext`).
pub(crate) fn summary(facts: &NodeFacts) -> Option<NeighbourTable> {
    let node = facts.node_netns()?;
    let [v4, v6] = tables(facts, node);
    if v4.entries.is_none() && v6.entries.is_none() {
        return None;
    }
    let fulls = [v4.fulls, v6.fulls]
        .iter()
        .flatten()
        .map(|(_, b, _)| *b)
        .reduce(|a, b| a + b);
    Some(NeighbourTable {
        ipv4_entries: v4.entries,
        ipv6_entries: v6.entries,
        host_wide: v4.host_wide,
        table_fulls: fulls,
        overflow_log_lines: facts.kernel_log_overflow.as_ref().map(|(n, _)| *n),
    })
}

pub(super) fn check(ctx: &Ctx, out: &mut Vec<Finding>) {
    let Some(node) = ctx.node() else { return };
    let log = ctx.facts.kernel_log_overflow.as_ref();
    for t in tables(ctx.facts, node) {
        let thresh = |n: u8| {
            t.ns.sysctl_u64(&format!("net.{}.neigh.default.gc_thresh{n}", t.family))
        };
        let (Some(t2), Some(t3)) = (thresh(2), thresh(3)) else {
            // Not the initial namespace (the thresholds exist only there): nothing to compare with.
            continue;
        };
        let log_lines: Vec<&String> = log
            .map(|(_, l)| {
                l.iter()
                    .filter(|l| (t.name == "ndisc_cache") == l.contains("ndisc_cache"))
                    .collect()
            })
            .unwrap_or_default();
        let rising = t.fulls.filter(|(a, b, _)| b > a);
        let since_boot = t.fulls.map(|(_, b, _)| b).unwrap_or(0);
        let entries = t.entries.unwrap_or(0);
        let described = format!(
            "{} {} neighbour entries{} against gc_thresh2 = {t2}, gc_thresh3 = {t3}",
            t.entries
                .map(|e| e.to_string())
                .unwrap_or_else(|| "unknown".into()),
            t.family,
            if t.host_wide {
                ""
            } else {
                " (the namespaces' /proc/net/arp rows: a lower bound)"
            }
        );
        let mut f = if let Some((a, b, ms)) = rising {
            Finding::new(
                &INCIDENT,
                FindingKind::Incident,
                Confidence::Confirmed,
                format!(
                    "{}: table_fulls rose {a} → {b} in {:.1} s: the kernel refused new {} neighbours (ENOBUFS); {described}",
                    t.name,
                    ms as f64 / 1000.0,
                    t.family
                ),
            )
            .with_evidence(counter(t.entries_source.clone(), &format!("{}.table_fulls", t.name), Some(a), b))
        } else if !log_lines.is_empty() {
            let confidence = if entries >= t2 {
                Confidence::Confirmed
            } else {
                Confidence::Likely
            };
            let mut f = Finding::new(
                &INCIDENT,
                FindingKind::Incident,
                confidence,
                format!(
                    "the kernel log says the {} table overflowed ({} line(s)); {described}",
                    t.name,
                    log_lines.len()
                ),
            );
            if entries < t2 {
                f = f.because("the table is below gc_thresh2 now: the overflow may be over (the log keeps old lines)");
            }
            f
        } else if entries >= t3 {
            Finding::new(
                &INCIDENT,
                FindingKind::Incident,
                Confidence::Likely,
                format!("{described}: the table is full; a new neighbour is created only if forced collection frees an entry"),
            )
            .because("table_fulls did not rise between the samples (or was not readable): no refusal was counted while the check ran")
        } else if entries > t2 || since_boot > 0 {
            let mut f = Finding::new(
                &INCIDENT,
                FindingKind::LatentRisk,
                Confidence::Likely,
                if entries > t2 {
                    format!("{described}: above gc_thresh2, forced collection runs; at gc_thresh3 new neighbours are refused")
                } else {
                    format!("{}: table_fulls = {since_boot} since boot: the table overflowed before; {described}", t.name)
                },
            );
            if since_boot > 0 {
                f = f.because(format!("{} refused neighbours {since_boot} time(s) since boot, not while the check ran", t.name));
            }
            f
        } else {
            continue;
        };
        if let Some((a, b, _)) = t.forced_gc.filter(|(a, b, _)| b > a) {
            f = f.with_evidence(counter(
                t.entries_source.clone(),
                &format!("{}.forced_gc_runs", t.name),
                Some(a),
                b,
            ));
        }
        f = f.with_evidence(fact(t.entries_source.clone(), described.clone()));
        // Where the entries are, by state: the namespace holding the most.
        let fam = if t.family == "ipv6" { "inet6" } else { "inet" };
        if let Some((ns, states)) = ctx
            .facts
            .namespaces
            .iter()
            .filter_map(|n| n.neighbours.as_ref().map(|s| (n, s)))
            .max_by_key(|(_, s)| s.entries(fam))
            .filter(|(_, s)| s.entries(fam) > 0)
        {
            f = f.with_evidence(fact(
                format!("{}/{}", ns.prefix(), paths::IP_NEIGH),
                format!(
                    "{} {} neighbours: {}",
                    ns.id,
                    t.family,
                    states.describe(fam)
                ),
            ));
        }
        for n in 1..=3u8 {
            if let Some(e) = sysctl_evidence(
                t.ns,
                &format!("net.{}.neigh.default.gc_thresh{n}", t.family),
            ) {
                f = f.with_evidence(e);
            }
        }
        for l in log_lines.iter().take(2) {
            f = f.with_evidence(fact(paths::KERNEL_LOG_NEIGH, (*l).clone()));
        }
        if log.is_none() {
            f = f.because("the kernel log was not readable (no CAP_SYSLOG, or dmesg_restrict): its \"neighbour table overflow\" lines were not looked for");
        }
        f = f.because("the thresholds and the table are host-wide: every namespace's neighbours count against them, and only the initial namespace can raise them");
        out.push(f);
    }
}

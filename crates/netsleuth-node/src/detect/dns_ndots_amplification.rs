//! `dns-ndots-amplification` in a node's state: a root (a pod's filesystem) whose resolv.conf has
//! `options ndots:N` with N > 1 and a search list of three or more domains, so that every external name
//! is asked under each search domain first. A latent risk: the node's state shows the configuration,
//! not the query load (a capture or CoreDNS's metrics show that).

use super::evidence::{config, resolv_source};
use super::Ctx;
use crate::facts::RootFacts;
use netsleuth_core::detect::dns_ndots_amplification::INCIDENT;
use netsleuth_core::{Confidence, Finding, FindingKind};

/// Fewer search domains than this make a walk of at most two candidates: not worth a finding.
const MIN_SEARCH_DOMAINS: usize = 3;

pub(super) fn check(_ctx: &Ctx, root: &RootFacts, out: &mut Vec<Finding>) {
    let Some(rc) = root.resolv.present() else {
        return;
    };
    // The last `ndots:` option wins, as in glibc's and musl's parsers.
    let Some((ndots, line)) = rc.options.iter().rev().find_map(|(o, line)| {
        let n: u32 = o.strip_prefix("ndots:")?.parse().ok()?;
        Some((n.min(15), *line))
    }) else {
        return;
    };
    if ndots < 2 || rc.search.len() < MIN_SEARCH_DOMAINS {
        return;
    }
    let candidates = rc.search.len() + 1;
    let f = Finding::new(
        &INCIDENT,
        FindingKind::LatentRisk,
        Confidence::Likely,
        format!(
            "{}'s resolv.conf has ndots:{ndots} and {} search domains: a name with fewer than {ndots} dots (api.example.com) costs {} queries (A and AAAA under each search domain, then the name), {} of them NXDOMAIN",
            root.describe(),
            rc.search.len(),
            candidates * 2,
            (candidates - 1) * 2
        ),
    )
    .with_evidence(config(resolv_source(root), Some(line), format!("options ndots:{ndots}")))
    .with_evidence(config(
        resolv_source(root),
        None,
        format!("search {}", rc.search.join(" ")),
    ))
    .because("the configuration is read; the query rate it multiplies is not in the node's state (a capture, or CoreDNS's NXDOMAIN rate, shows it)");
    out.push(f);
}

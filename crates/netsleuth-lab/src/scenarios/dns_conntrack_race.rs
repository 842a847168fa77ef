//! [003] glibc sends A and AAAA back to back from one UDP socket to the DNS ClusterIP. Both packets
//! share a tuple and are DNATed to the same pod; on kernels before 5.0 the one whose conntrack entry
//! was inserted second was dropped. The client waits its 5 s timeout and re-sends.
//!
//! This kernel resolves the clash (clash_resolve), so the lost query is emulated: an nft set in the
//! node's prerouting (after conntrack, before DNAT) drops the second query of a same-socket pair that
//! arrives within 100 ms of the first. The emulated old kernel stays in place in the mitigated run:
//! the fix is the client's `single-request-reopen`.

use crate::dns::Zone;
use crate::error::Result;
use crate::lab::{Lab, Outcome};
use crate::scene::Recorded;
use std::net::Ipv4Addr;
use std::time::Duration;

const NAMES: &[&str] = &[
    "web.default.svc.cluster.local",
    "db.default.svc.cluster.local",
];
const TABLE: &str = "netsleuth_old_conntrack_race";

pub fn run(lab: &mut Lab) -> Result<Recorded> {
    let mitigated = lab.mitigated;
    let nft = format!(
        "table ip {TABLE} {{\n\
         \tset same_socket_pair {{ type ipv4_addr . inet_service; flags timeout; timeout 100ms; }}\n\
         \tchain prerouting {{\n\
         \t\ttype filter hook prerouting priority -150; policy accept;\n\
         \t\tip daddr {vip} udp dport 53 ip saddr . udp sport @same_socket_pair counter drop comment \"emulated: lost at conntrack insert (kernels < {fixed})\"\n\
         \t\tip daddr {vip} udp dport 53 add @same_socket_pair {{ ip saddr . udp sport }}\n\
         \t}}\n}}\n",
        vip = super::DNS_VIP,
        fixed = netsleuth_core::versions::CLASH_NAT_SAME_ORIGIN
            .mainline()
            .unwrap_or("?")
    );
    let zone = Zone::default()
        .with(NAMES[0], &[Ipv4Addr::new(10, 96, 0, 20)], &[])
        .with(NAMES[1], &[Ipv4Addr::new(10, 96, 0, 21)], &[]);
    let live = lab
        .build(
            super::dns_scene(if mitigated {
                "single-request-reopen"
            } else {
                ""
            })
            .nft("node", "emulation.nft", nft)
            .dns("coredns", zone),
        )?
        .observe()?;

    let lookups = live.run("client", super::glibc_lookups(NAMES, mitigated))?;
    let dropped = nft_counter(
        &live
            .node()
            .read(&["nft", "list", "table", "ip", TABLE])
            .unwrap_or_default(),
    );

    let mut out = Outcome::default();
    let mut slow = Vec::new();
    for l in &lookups {
        out.event(l.line());
        if l.elapsed >= Duration::from_secs(4) {
            slow.push(l.elapsed.as_secs_f64());
        }
    }
    out.measure(
        "queries dropped by the emulated insert clash",
        dropped as f64,
        "",
    );
    for (i, l) in lookups.iter().enumerate() {
        out.measure(
            format!("lookup {} duration", i + 1),
            l.elapsed.as_secs_f64(),
            "s",
        );
    }
    if slow.is_empty() {
        out.fine = format!("{} lookups answered in under a second each", lookups.len());
    } else {
        out.symptom = Some(format!(
            "{} of {} lookups took {:.1} s: one of the A/AAAA pair sent from one socket was lost after DNAT to {} and re-sent after glibc's 5 s timeout",
            slow.len(),
            lookups.len(),
            slow.iter().cloned().fold(0.0, f64::max),
            super::DNS_VIP
        ));
    }
    Ok(live.finish(out))
}

/// Packets of the first `counter packets N` in an nft listing.
pub(crate) fn nft_counter(listing: &str) -> u64 {
    listing
        .split("counter packets ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

//! [003] glibc sends A and AAAA back to back from one UDP socket to the DNS ClusterIP. Both packets
//! share a tuple and are DNATed to the same pod; on kernels before 5.0 the one whose conntrack entry
//! was inserted second was dropped. The client waits its 5 s timeout and re-sends.
//!
//! This kernel resolves the clash (clash_resolve), so the lost query is emulated: an nft set in the
//! node's prerouting (after conntrack, before DNAT) drops the second query of a same-socket pair that
//! arrives within 100 ms of the first. The emulated old kernel stays in place in the mitigated run:
//! the fix is the client's `single-request-reopen`.

use crate::dns::{self, Zone};
use crate::error::Result;
use crate::lab::{Lab, ObservePlan, Outcome};
use crate::traffic::addr;
use std::net::Ipv4Addr;
use std::time::Duration;

const NAME: &str = netsleuth_core::detect::dns_conntrack_race::INCIDENT.id;
const NAMES: &[&str] = &[
    "web.default.svc.cluster.local",
    "db.default.svc.cluster.local",
];

pub fn run(lab: &mut Lab) -> Result<Outcome> {
    let mitigated = lab.mitigated;
    super::dns_node(
        lab,
        false,
        vec![],
        if mitigated {
            "single-request-reopen"
        } else {
            ""
        },
    )?;
    let nft = format!(
        "table ip netsleuth_old_conntrack_race {{\n\
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
    lab.topo().node.exec_stdin("nft", &["-f", "-"], &nft)?;
    lab.write_file(
        "node/emulation.nft",
        &nft,
        crate::report::ArtifactKind::NodeState,
        "the nft rules that emulate the old kernel's lost query",
    )?;
    let zone = Zone::default()
        .with(NAMES[0], &[Ipv4Addr::new(10, 96, 0, 20)], &[])
        .with(NAMES[1], &[Ipv4Addr::new(10, 96, 0, 21)], &[]);
    let _dns = dns::serve(
        &lab.topo().pod("coredns").ns,
        addr(Ipv4Addr::UNSPECIFIED, 53),
        zone,
    )?;
    lab.observe(ObservePlan {
        node_role: "node",
        client_role: Some("client"),
        client_iface: "eth0",
        filter: None,
    })?;

    let h = lab.topo().pod("client").ns.spawn("client", move || {
        let mut v = Vec::new();
        for name in NAMES {
            v.push(dns::glibc_lookup(
                addr(super::DNS_VIP, 53),
                name,
                Duration::from_secs(5),
                2,
                mitigated,
            ));
        }
        Ok(v)
    })?;
    let lookups = super::join(NAME, h)?;
    let dropped = nft_counter(
        &lab.topo()
            .node
            .exec(
                "nft",
                &["list", "table", "ip", "netsleuth_old_conntrack_race"],
            )
            .unwrap_or_default(),
    );

    let mut out = Outcome::default();
    let mut slow = Vec::new();
    for l in &lookups {
        out.event(format!(
            "getaddrinfo({}) → {:?} in {:.2} s, {} queries sent{}{}",
            l.name,
            l.a,
            l.elapsed.as_secs_f64(),
            l.queries_sent,
            if l.retransmitted {
                ", re-sent after the 5 s timeout"
            } else {
                ""
            },
            l.error
                .as_deref()
                .map(|e| format!(", error: {e}"))
                .unwrap_or_default()
        ));
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
    Ok(out)
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

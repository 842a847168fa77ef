//! [003] musl 1.2.3 derives each query's ID from the clock; on a host whose clock reads coarsely the
//! A and AAAA queries of one lookup get the same ID. Answers are matched by ID alone, so the AAAA
//! answer (NODATA), arriving first, fills the A slot and the A answer the AAAA slot; each slot is
//! parsed for its own type and the name "does not resolve".
//!
//! The pod's resolv.conf lists two nameservers (two DNS Services), and musl sends each query to both
//! at once. Their DNS pods run on the other node, which only routes (flannel host-gw: no DNAT, no SNAT
//! on its path): its `tcpdump -i any` records every query and answer twice, on its uplink and on the
//! pod's veth — the vantage where copies must be folded, not taken for retries, while the same query
//! sent to the two nameservers stays two queries.

use crate::dns::{self, MuslIds, Zone};
use crate::error::Result;
use crate::kube::Service;
use crate::lab::{Lab, Outcome};
use crate::scene::{Recorded, Scene};
use crate::traffic::addr;
use std::net::Ipv4Addr;
use std::time::Duration;

const HOST: &str = "loginspub.example-inc.net";
const LOOKUPS: usize = 3;
/// The DNS pods, on the routing-only node's bridge, behind the two nameservers' ClusterIPs.
const REMOTE_DNS_POD: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 53);
const SECOND_DNS_POD: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 54);
const SECOND_DNS_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 11);

pub fn run(lab: &mut Lab) -> Result<Recorded> {
    let mut zone = Zone::default().with(HOST, &[Ipv4Addr::new(10, 0, 0, 80)], &[]);
    // The A answer is fetched upstream, the AAAA NODATA comes from cache: AAAA leaves first.
    zone.delay.insert(dns::rtype::A, Duration::from_millis(30));
    let ids = if lab.mitigated {
        MuslIds::Distinct124
    } else {
        MuslIds::Clock123CoarseClock
    };
    let live = lab
        .build(scene().dns("coredns", zone.clone()).dns("coredns-b", zone))?
        .observe()?;

    let lookups = live.run("client", move || {
        let mut v = Vec::new();
        for _ in 0..LOOKUPS {
            v.push(dns::musl_lookup(
                &[addr(super::DNS_VIP, 53), addr(SECOND_DNS_VIP, 53)],
                HOST,
                ids,
                Duration::from_secs(5),
            ));
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(v)
    })?;
    let mut out = Outcome::default();
    let mut failed = 0;
    for l in &lookups {
        out.event(l.line());
        for d in &l.detail {
            out.event(format!("  {d}"));
        }
        failed += usize::from(l.error.is_some());
    }
    out.measure("lookups", LOOKUPS as f64, "");
    out.measure(
        "lookups that failed although the server has an A record",
        failed as f64,
        "",
    );
    if failed > 0 {
        out.symptom = Some(format!(
            "{failed} of {LOOKUPS} lookups of {HOST} failed (\"Name does not resolve\") although the server answered A 10.0.0.80: A and AAAA carried the same ID and the AAAA answer, first, was taken for the A answer"
        ));
    } else {
        out.fine = format!("all {LOOKUPS} lookups of {HOST} returned 10.0.0.80");
    }
    Ok(live.finish(out))
}

/// The client pod on the node; two DNS ClusterIPs, DNATed by the node to DNS pods behind the other
/// node, which routes without NAT.
fn scene() -> Scene {
    Scene::new()
        .pod("client", super::DNS_CLIENT)
        .remote_pod("coredns", REMOTE_DNS_POD)
        .remote_pod("coredns-b", SECOND_DNS_POD)
        .service(Service::new(
            "kube-system/kube-dns:dns",
            super::DNS_VIP,
            53,
            "udp",
            &[(REMOTE_DNS_POD, 53)],
        ))
        .service(Service::new(
            "kube-system/kube-dns-b:dns",
            SECOND_DNS_VIP,
            53,
            "udp",
            &[(SECOND_DNS_POD, 53)],
        ))
        .file(
            "client",
            "etc/resolv.conf",
            &format!("nameserver {}\nnameserver {SECOND_DNS_VIP}\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n", super::DNS_VIP),
            "the client pod's /etc/resolv.conf (two nameservers: musl asks both at once)",
        )
}

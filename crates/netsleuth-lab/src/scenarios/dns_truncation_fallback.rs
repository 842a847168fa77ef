//! A name whose answer does not fit in 512 bytes (forty A records): the DNS server answers over UDP
//! with TC=1 and no records, and the client re-asks over TCP. The kube-dns Service exposes 53/udp
//! only, so the SYN to the ClusterIP's port 53/tcp is not DNATed and is lost beyond the node: the
//! lookup fails. With 53/tcp in the Service, the same truncated answer is re-asked over TCP and
//! answered (the healthy form).

use crate::dns::{self, Zone};
use crate::error::Result;
use crate::kube::Service;
use crate::lab::{Lab, Outcome};
use crate::scene::{Recorded, Scene};
use crate::traffic::addr;
use std::net::Ipv4Addr;
use std::time::Duration;

const NAME: &str = "pool.example.com";
const RECORDS: u8 = 40;
const LOOKUPS: usize = 2;
/// glibc's TCP connect waits for the kernel's SYN retries; the lab gives up sooner.
const TCP_TIMEOUT: Duration = Duration::from_secs(2);

pub fn run(lab: &mut Lab) -> Result<Recorded> {
    let addrs: Vec<Ipv4Addr> = (1..=RECORDS)
        .map(|i| Ipv4Addr::new(198, 51, 100, i))
        .collect();
    let zone = Zone::default().with(NAME, &addrs, &[]);
    let mut scene = Scene::new()
        .pod("client", super::DNS_CLIENT)
        .pod("coredns", super::DNS_POD)
        .service(super::kube_dns_service())
        .dns("coredns", zone.clone());
    if lab.mitigated {
        scene = scene.service(Service::new(
            "kube-system/kube-dns:dns-tcp",
            super::DNS_VIP,
            53,
            "tcp",
            &[(super::DNS_POD, 53)],
        ));
    }
    let net = lab.build(scene)?;
    // Traffic to a ClusterIP port the Service does not expose is not DNATed; on a node it follows
    // the default route and is lost upstream: here it is discarded silently.
    net.node()
        .ip(&["route", "add", "blackhole", "10.96.0.0/16"])?;
    let mut live = net.observe()?;
    // CoreDNS listens on 53/tcp as well; what decides is whether the Service reaches it.
    let tcp = dns::serve_tcp(live.ns("coredns")?, addr(Ipv4Addr::UNSPECIFIED, 53), zone)?;
    if !live.mitigated {
        live.note("the kube-dns Service exposes 53/udp only: TCP to 10.96.0.10:53 is not DNATed");
    }
    let lookups = live.run("client", move || {
        Ok((0..LOOKUPS)
            .map(|_| {
                dns::tc_fallback_lookup(
                    addr(super::DNS_VIP, 53),
                    NAME,
                    Duration::from_secs(5),
                    TCP_TIMEOUT,
                )
            })
            .collect::<Vec<_>>())
    })?;
    drop(tcp);
    let mut out = Outcome::default();
    for l in &lookups {
        out.event(l.line());
        for d in &l.detail {
            out.event(format!("  {d}"));
        }
    }
    let failed = lookups.iter().filter(|l| l.error.is_some()).count();
    out.measure(
        "lookups that failed after a truncated answer",
        failed as f64,
        "",
    );
    if failed > 0 {
        out.symptom = Some(format!(
            "{failed} of {LOOKUPS} lookups of {NAME} ({RECORDS} A records, more than fit in 512 bytes) failed: the UDP answer came back truncated (TC=1) and the TCP retry to {}:53 was never answered",
            super::DNS_VIP
        ));
    } else {
        out.fine = format!(
            "all {LOOKUPS} lookups of {NAME} answered with {} addresses over TCP after the truncated UDP answer",
            lookups.first().map_or(0, |l| l.a.len())
        );
    }
    Ok(live.finish(out))
}

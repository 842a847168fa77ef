//! [003] A Go < 1.16 binary with the pure-Go resolver, in an image without /etc/nsswitch.conf, asks
//! DNS before /etc/hosts: a name pinned in the pod's hosts file still costs a round of DNS queries
//! (each candidate of the search list, A and AAAA), and inherits every DNS problem (the 5 s race).
//!
//! The program also dials its sidecar at `localhost`: DNS-first, that name too is asked from DNS under
//! every search suffix before the hosts file answers it, which a capture shows without the pod's
//! hosts file. And it looks up a Service name that is not in its hosts file: asking DNS for that one
//! is right in either order (a healthy look-alike inside the run).

use crate::dns::{self, Zone};
use crate::error::Result;
use crate::lab::{Lab, Outcome};
use crate::scene::Recorded;
use crate::traffic::addr;
use std::net::Ipv4Addr;
use std::time::Duration;

const HOST: &str = "apiserver.cluster-b.internal";
const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);
const SEARCH: &[&str] = &[
    "default.svc.cluster.local",
    "svc.cluster.local",
    "cluster.local",
];
const LOOKUPS: usize = 2;
/// The sidecar the program dials (`localhost:15000`): every hosts file has the name.
const SIDECAR_HOST: &str = "localhost";
/// A Service the program reaches by its DNS name; not in /etc/hosts, so DNS is the right source.
const SERVICE_HOST: &str = "web.default.svc.cluster.local";
const SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 20);
/// The fix: the image gets an nsswitch.conf.
const NSSWITCH: &str = "hosts: files dns\n";

pub fn run(lab: &mut Lab) -> Result<Recorded> {
    let hosts = format!("127.0.0.1\tlocalhost\n{}\tclient\n# kubectl for cluster b: its internal LB has no DNS name\n{HOST_IP}\t{HOST}\n", super::DNS_CLIENT);
    let mut scene = super::dns_scene("")
        .file(
            "client",
            "etc/hosts",
            &hosts,
            "the client pod's /etc/hosts (has the name)",
        )
        .dns(
            "coredns",
            Zone::default().with(SERVICE_HOST, &[SERVICE_IP], &[]),
        );
    let nsswitch = lab.mitigated.then_some(NSSWITCH);
    match nsswitch {
        Some(text) => {
            scene = scene.file(
                "client",
                "etc/nsswitch.conf",
                text,
                "the client pod's /etc/nsswitch.conf (the fix)",
            )
        }
        None => lab.note("the client image has no /etc/nsswitch.conf (alpine); the resolver is Go 1.15's pure-Go one"),
    }
    let order = dns::go_lookup_order(nsswitch, true);
    let live = lab.build(scene)?.observe()?;

    let lookups = live.run("client", move || {
        let mut v = Vec::new();
        for _ in 0..LOOKUPS {
            v.push(dns::go_lookup(
                addr(super::DNS_VIP, 53),
                HOST,
                SEARCH,
                5,
                &hosts,
                order,
            ));
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut others = Vec::new();
        for name in [SIDECAR_HOST, SERVICE_HOST] {
            others.push(dns::go_lookup(
                addr(super::DNS_VIP, 53),
                name,
                SEARCH,
                5,
                &hosts,
                order,
            ));
        }
        Ok((v, others))
    })?;
    let (lookups, others) = lookups;
    let mut out = Outcome::default();
    let queries: u32 = lookups.iter().map(|l| l.queries_sent).sum();
    for l in lookups.iter().chain(&others) {
        out.event(format!(
            "net.LookupHost({}) → {:?} from {} in {:.1} ms after {} DNS queries",
            l.name,
            l.a,
            if l.from_hosts { "/etc/hosts" } else { "DNS" },
            l.elapsed.as_secs_f64() * 1e3,
            l.queries_sent
        ));
    }
    out.measure(
        "lookup order",
        if order == dns::GoOrder::DnsFiles {
            1.0
        } else {
            0.0
        },
        "(1 = dns,files)",
    );
    out.measure(
        "DNS queries for a name /etc/hosts answers",
        queries as f64,
        "",
    );
    let localhost_queries = others[0].queries_sent;
    out.measure(
        "DNS queries for localhost (in every hosts file)",
        localhost_queries as f64,
        "",
    );
    if others[1].a != [SERVICE_IP] {
        return Err(crate::error::LabError::traffic(
            netsleuth_core::detect::go_resolver_dns_first::INCIDENT.id,
            format!(
                "the Service name {SERVICE_HOST} did not resolve from DNS: {:?}",
                others[1].error
            ),
        ));
    }
    if queries > 0 {
        out.symptom = Some(format!(
            "{queries} DNS queries ({} lookups) were sent for {HOST}, which the pod's /etc/hosts maps to {HOST_IP}, and {localhost_queries} for {SIDECAR_HOST}: without /etc/nsswitch.conf Go < {} asks DNS first",
            lookups.len(),
            netsleuth_core::versions::GO_FILES_FIRST_WITHOUT_NSSWITCH.mainline().unwrap_or("?")
        ));
    } else {
        out.fine = format!("{HOST} was answered from /etc/hosts without any DNS query");
    }
    Ok(live.finish(out))
}

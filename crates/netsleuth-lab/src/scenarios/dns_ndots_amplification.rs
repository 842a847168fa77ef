//! A pod with Kubernetes' `ndots:5` and a search list that ends in the node's own domain looks up
//! external names: each is first asked under every search domain (A and AAAA, NXDOMAIN), and the
//! node's domain is answered by a slow upstream, so every external lookup waits for it. In-cluster
//! short names (`web`) hit the first search domain and cost nothing extra: the healthy form of the
//! same resolv.conf, in both runs.

use crate::dns::{self, Zone};
use crate::error::Result;
use crate::lab::{Lab, Outcome};
use crate::scene::Recorded;
use crate::scene::Scene;
use crate::traffic::addr;
use std::net::Ipv4Addr;
use std::time::Duration;

const SEARCH: &[&str] = &[
    "default.svc.cluster.local",
    "svc.cluster.local",
    "cluster.local",
    // The node's own domain, which kubelet copies into every ClusterFirst pod's search list.
    "c.example-project.internal",
];
const NODE_DOMAIN: &str = "c.example-project.internal";
/// How late the node domain's upstream answers (CoreDNS forwards it; the upstream recurses).
const NODE_DOMAIN_DELAY: Duration = Duration::from_millis(1200);
const EXTERNAL: &[(&str, Ipv4Addr)] = &[
    ("api.example.com", Ipv4Addr::new(198, 51, 100, 10)),
    ("cdn.example.net", Ipv4Addr::new(198, 51, 100, 11)),
];
/// In-cluster short names: the first search domain answers them.
const IN_CLUSTER: &[(&str, Ipv4Addr)] = &[
    ("web", Ipv4Addr::new(10, 96, 0, 20)),
    ("db", Ipv4Addr::new(10, 96, 0, 21)),
];

pub fn run(lab: &mut Lab) -> Result<Recorded> {
    let resolv = format!(
        "nameserver {}\nsearch {}\noptions ndots:5\n",
        super::DNS_VIP,
        SEARCH.join(" ")
    );
    let mut zone = Zone::default().with_slow_suffix(NODE_DOMAIN, NODE_DOMAIN_DELAY);
    for (name, ip) in EXTERNAL {
        zone = zone.with(name, &[*ip], &[]);
    }
    for (name, ip) in IN_CLUSTER {
        zone = zone.with(&format!("{name}.default.svc.cluster.local"), &[*ip], &[]);
    }
    let mitigated = lab.mitigated;
    if mitigated {
        lab.note("the application names external hosts as FQDNs with a trailing dot (api.example.com.): the resolver asks them as they are");
    }
    let live = lab
        .build(
            Scene::new()
                .pod("client", super::DNS_CLIENT)
                .pod("coredns", super::DNS_POD)
                .service(super::kube_dns_service())
                .file(
                    "client",
                    "etc/resolv.conf",
                    &resolv,
                    "the client pod's /etc/resolv.conf (kubelet's ClusterFirst, with the node's search domain)",
                )
                .dns("coredns", zone),
        )?
        .observe()?;

    let (external, in_cluster) = live.run("client", move || {
        let server = addr(super::DNS_VIP, 53);
        let timeout = Duration::from_secs(5);
        let external: Vec<dns::Lookup> = EXTERNAL
            .iter()
            .map(|(name, _)| {
                let asked = if mitigated {
                    format!("{name}.")
                } else {
                    name.to_string()
                };
                dns::glibc_search_lookup(server, &asked, SEARCH, 5, timeout)
            })
            .collect();
        let in_cluster: Vec<dns::Lookup> = IN_CLUSTER
            .iter()
            .map(|(name, _)| dns::glibc_search_lookup(server, name, SEARCH, 5, timeout))
            .collect();
        Ok((external, in_cluster))
    })?;

    let mut out = Outcome::default();
    for l in external.iter().chain(&in_cluster) {
        out.event(l.line());
        for d in &l.detail {
            out.event(format!("  {d}"));
        }
    }
    let answered = external.iter().filter(|l| l.error.is_none()).count()
        + in_cluster.iter().filter(|l| l.error.is_none()).count();
    let ext_queries: u32 = external.iter().map(|l| l.queries_sent).sum();
    let slow = external
        .iter()
        .filter(|l| l.elapsed >= Duration::from_secs(1))
        .count();
    let worst = external
        .iter()
        .map(|l| l.elapsed.as_secs_f64())
        .fold(0.0, f64::max);
    out.measure(
        "queries per external lookup",
        ext_queries as f64 / external.len().max(1) as f64,
        "",
    );
    out.measure("slowest external lookup", worst, "s");
    out.measure(
        "queries per in-cluster lookup",
        in_cluster.iter().map(|l| l.queries_sent).sum::<u32>() as f64
            / in_cluster.len().max(1) as f64,
        "",
    );
    let all = external.len() + in_cluster.len();
    if slow > 0 || ext_queries as usize > 2 * external.len() {
        out.symptom = Some(format!(
            "{slow} of {} external lookups took ≥ 1 s (the slowest {worst:.2} s) and they sent {ext_queries} queries where {} would do: each name was asked under {} search domains first, the node's domain answered {:.1} s late; {answered} of {all} lookups answered in the end",
            external.len(),
            2 * external.len(),
            SEARCH.len(),
            NODE_DOMAIN_DELAY.as_secs_f64()
        ));
    } else {
        out.fine = format!(
            "{answered} of {all} lookups answered; external names asked as FQDNs ({ext_queries} queries for {} lookups, the slowest {worst:.3} s), in-cluster short names hit the first search domain",
            external.len()
        );
    }
    Ok(live.finish(out))
}

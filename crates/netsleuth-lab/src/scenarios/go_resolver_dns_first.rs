//! [003] A Go < 1.16 binary with the pure-Go resolver, in an image without /etc/nsswitch.conf, asks
//! DNS before /etc/hosts: a name pinned in the pod's hosts file still costs a round of DNS queries
//! (each candidate of the search list, A and AAAA), and inherits every DNS problem (the 5 s race).

use crate::dns::{self, Zone};
use crate::error::Result;
use crate::lab::{Lab, ObservePlan, Outcome};
use crate::report::ArtifactKind;
use crate::traffic::addr;
use std::net::Ipv4Addr;
use std::time::Duration;

const NAME: &str = netsleuth_core::detect::go_resolver_dns_first::INCIDENT.id;
const HOST: &str = "apiserver.cluster-b.internal";
const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);
const SEARCH: &[&str] = &[
    "default.svc.cluster.local",
    "svc.cluster.local",
    "cluster.local",
];
const LOOKUPS: usize = 2;

pub fn run(lab: &mut Lab) -> Result<Outcome> {
    super::dns_node(lab, false, vec![], "")?;
    let hosts = format!("127.0.0.1\tlocalhost\n{}\tclient\n# kubectl for cluster b: its internal LB has no DNS name\n{HOST_IP}\t{HOST}\n", super::DNS_CLIENT);
    lab.write_file(
        "client/etc/hosts",
        &hosts,
        ArtifactKind::ContainerFile,
        "the client pod's /etc/hosts (has the name)",
    )?;
    let nsswitch = if lab.mitigated {
        let text = "hosts: files dns\n";
        lab.write_file(
            "client/etc/nsswitch.conf",
            text,
            ArtifactKind::ContainerFile,
            "the client pod's /etc/nsswitch.conf (the fix)",
        )?;
        Some(text.to_string())
    } else {
        lab.note("the client image has no /etc/nsswitch.conf (alpine); the resolver is Go 1.15's pure-Go one");
        None
    };
    lab.set_client_hosts(&[(HOST_IP, HOST)]);
    let order = dns::go_lookup_order(nsswitch.as_deref(), true);
    let _dns = dns::serve(
        &lab.topo().pod("coredns").ns,
        addr(Ipv4Addr::UNSPECIFIED, 53),
        Zone::default(),
    )?;
    lab.observe(ObservePlan {
        node_role: "node",
        client_role: Some("client"),
        client_iface: "eth0",
        filter: None,
    })?;

    let h = lab.topo().pod("client").ns.spawn("client", move || {
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
        Ok(v)
    })?;
    let lookups = super::join(NAME, h)?;
    let mut out = Outcome::default();
    let queries: u32 = lookups.iter().map(|l| l.queries_sent).sum();
    for l in &lookups {
        out.event(format!(
            "net.LookupHost({HOST}) → {:?} from {} in {:.1} ms after {} DNS queries",
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
    if queries > 0 {
        out.symptom = Some(format!(
            "{queries} DNS queries ({} lookups) were sent for {HOST}, which the pod's /etc/hosts maps to {HOST_IP}: without /etc/nsswitch.conf Go < {} asks DNS first",
            lookups.len(),
            netsleuth_core::versions::GO_FILES_FIRST_WITHOUT_NSSWITCH.mainline().unwrap_or("?")
        ));
    } else {
        out.fine = format!("{HOST} was answered from /etc/hosts without any DNS query");
    }
    Ok(out)
}

//! [003] The node's resolv.conf carries a nameserver that no longer exists (left by
//! /etc/resolvconf/resolv.conf.d/base). CoreDNS forwards to the nameservers of the node's resolv.conf
//! in turn; queries sent to the dead one get no answer until its timeout, and lookups through it are
//! slow or fail.

use crate::dns::{self, Zone};
use crate::error::Result;
use crate::lab::{Lab, ObservePlan, Outcome};
use crate::report::ArtifactKind;
use crate::topology::REMOTE_IP;
use crate::traffic::addr;
use std::net::Ipv4Addr;
use std::time::Duration;

const NAME: &str = netsleuth_core::detect::dns_upstream_unreachable::INCIDENT.id;
const DEAD: Ipv4Addr = Ipv4Addr::new(192, 168, 60, 99);
const GOOD: Ipv4Addr = Ipv4Addr::new(192, 168, 60, 53);
const NAMES: &[&str] = &[
    "accounts.example.com",
    "loginspub.example-inc.net",
    "api.example.org",
];
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

pub fn run(lab: &mut Lab) -> Result<Outcome> {
    super::dns_node(
        lab,
        true,
        vec!["-s 10.244.0.0/16 ! -d 10.244.0.0/16 -m comment --comment \"flanneld masq\" -j MASQUERADE --random-fully".into()],
        "",
    )?;
    let node = &lab.topo().node;
    node.ip(&[
        "route",
        "add",
        "192.168.60.0/24",
        "via",
        &REMOTE_IP.to_string(),
    ])?;
    let upstream_net = lab.topo().remote();
    upstream_net.ip(&["addr", "add", &format!("{GOOD}/32"), "dev", "lo"])?;
    // The retired server: packets to it vanish without an ICMP error, as to a host that is gone.
    upstream_net.ip(&["route", "add", "blackhole", &format!("{DEAD}/32")])?;
    let nameservers: Vec<Ipv4Addr> = if lab.mitigated {
        vec![GOOD]
    } else {
        vec![DEAD, GOOD]
    };
    let mut resolv = String::new();
    if !lab.mitigated {
        resolv.push_str(&format!(
            "# from /etc/resolvconf/resolv.conf.d/base (a retired server)\nnameserver {DEAD}\n"
        ));
    }
    resolv.push_str(&format!("nameserver {GOOD}\n"));
    lab.write_file(
        "node/etc/resolv.conf",
        &resolv,
        ArtifactKind::NodeState,
        "the node's /etc/resolv.conf (CoreDNS forwards to it)",
    )?;
    lab.set_node_nameservers(&nameservers);
    let mut zone = Zone::default();
    for (i, n) in NAMES.iter().enumerate() {
        zone = zone.with(n, &[Ipv4Addr::new(198, 51, 100, 10 + i as u8)], &[]);
    }
    let _upstream = dns::serve(lab.topo().remote(), addr(GOOD, 53), zone)?;
    let forwarder = dns::forward(
        &lab.topo().pod("coredns").ns,
        addr(Ipv4Addr::UNSPECIFIED, 53),
        nameservers,
        UPSTREAM_TIMEOUT,
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
            // One query at a time (single-request): every query's fate is its own.
            v.push(dns::glibc_lookup(
                addr(super::DNS_VIP, 53),
                name,
                Duration::from_secs(5),
                2,
                true,
            ));
        }
        Ok(v)
    })?;
    let lookups = super::join(NAME, h)?;
    let log = forwarder.log_lines();
    drop(forwarder);
    let log_text: String = log.iter().map(|l| format!("{l}\n")).collect();
    lab.write_file(
        "coredns.log",
        &log_text,
        ArtifactKind::Log,
        "the forwarder's error log (CoreDNS's format)",
    )?;

    let mut out = Outcome::default();
    let mut slow = 0;
    for l in &lookups {
        out.event(format!(
            "getaddrinfo({}) → {:?} in {:.2} s{}",
            l.name,
            l.a,
            l.elapsed.as_secs_f64(),
            l.error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        ));
        slow += usize::from(l.elapsed >= Duration::from_millis(1500) || l.error.is_some());
    }
    for line in &log {
        out.event(format!("coredns: {line}"));
    }
    out.measure(
        "upstream timeouts logged by the forwarder",
        log.len() as f64,
        "",
    );
    out.measure("lookups slowed ≥ 1.5 s or failed", slow as f64, "");
    if slow > 0 || !log.is_empty() {
        out.symptom = Some(format!(
            "{slow} of {} lookups took ≥ {:.0} s: the forwarder's queries to {DEAD} (first nameserver of the node's resolv.conf) never got an answer ({} i/o timeouts)",
            lookups.len(),
            UPSTREAM_TIMEOUT.as_secs_f64(),
            log.len()
        ));
    } else {
        out.fine = format!(
            "all {} lookups answered by {GOOD} without delay",
            lookups.len()
        );
    }
    Ok(out)
}

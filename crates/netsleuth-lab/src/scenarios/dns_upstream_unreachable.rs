//! [003] The node's resolv.conf carries a nameserver that no longer exists (left by
//! /etc/resolvconf/resolv.conf.d/base). CoreDNS forwards to the nameservers of the node's resolv.conf
//! in turn; queries sent to the dead one get no answer until its timeout, and lookups through it are
//! slow or fail.

use crate::dns::Zone;
use crate::error::Result;
use crate::lab::{Lab, Outcome};
use crate::report::ArtifactKind;
use crate::scene::Recorded;
use crate::topology::REMOTE_IP;
use crate::traffic::addr;
use std::net::Ipv4Addr;
use std::time::Duration;

const DEAD: Ipv4Addr = Ipv4Addr::new(192, 168, 60, 99);
const GOOD: Ipv4Addr = Ipv4Addr::new(192, 168, 60, 53);
const NAMES: &[&str] = &[
    "accounts.example.com",
    "loginspub.example-inc.net",
    "api.example.org",
];
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

pub fn run(lab: &mut Lab) -> Result<Recorded> {
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
    let mut zone = Zone::default();
    for (i, n) in NAMES.iter().enumerate() {
        zone = zone.with(n, &[Ipv4Addr::new(198, 51, 100, 10 + i as u8)], &[]);
    }
    let net = lab.build(
        super::dns_scene("")
            .remote()
            .postrouting("-s 10.244.0.0/16 ! -d 10.244.0.0/16 -m comment --comment \"flanneld masq\" -j MASQUERADE --random-fully")
            .file(
                "node",
                "etc/resolv.conf",
                &resolv,
                "the node's /etc/resolv.conf (CoreDNS forwards to it)",
            )
            // The upstream network is behind the remote node.
            .dns_at("remote", addr(GOOD, 53), zone)
            .dns_forwarder("coredns", nameservers, UPSTREAM_TIMEOUT)
            // The client's server is the forwarder.
            .server_view("coredns"),
    )?;
    net.node().ip(&[
        "route",
        "add",
        "192.168.60.0/24",
        "via",
        &REMOTE_IP.to_string(),
    ])?;
    let upstream_net = net.ns("remote")?;
    upstream_net.ip(&["addr", "add", &format!("{GOOD}/32"), "dev", "lo"])?;
    // The retired server: packets to it vanish without an ICMP error, as to a host that is gone.
    upstream_net.ip(&["route", "add", "blackhole", &format!("{DEAD}/32")])?;
    let mut live = net.observe()?;

    // One query at a time (single-request): every query's fate is its own.
    let lookups = live.run("client", super::glibc_lookups(NAMES, true))?;
    let log = live.server_log("coredns");
    let log_text: String = log.iter().map(|l| format!("{l}\n")).collect();
    live.write_file(
        "coredns.log",
        &log_text,
        ArtifactKind::Log,
        "the forwarder's error log (CoreDNS's format)",
    )?;

    let mut out = Outcome::default();
    let mut slow = 0;
    for l in &lookups {
        out.event(l.line());
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
    Ok(live.finish(out))
}

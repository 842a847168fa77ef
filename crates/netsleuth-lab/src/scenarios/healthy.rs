//! Busy but sound traffic that must not be mistaken for an incident: short connections through a
//! two-backend ClusterIP, one segment lost once and retransmitted, an application that closes with
//! unread data (its kernel sends RST), a connect to a port nobody listens on (RST), parallel A+AAAA
//! lookups from one socket that all get answers, and NXDOMAIN answers.

use crate::dns::{self, Zone};
use crate::error::{LabError, Result};
use crate::kube::{Rules, Service};
use crate::lab::{Lab, ObservePlan, Outcome};
use crate::topology::{Machine, Topology};
use crate::traffic::{self, addr, Behaviour, ConnectOpts};
use std::io::Write;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

const NAME: &str = "healthy";
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 20);
const CLIENT: Ipv4Addr = super::DNS_CLIENT;
const WEB_A: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 11);
const WEB_B: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 12);
const SHORT_CONNECTIONS: usize = 24;
const LOSSY_SOURCE_PORT: u16 = 45000;

pub fn run(lab: &mut Lab) -> Result<Outcome> {
    let mut t = Topology::new()?;
    t.add_remote(true)?;
    t.add_pod("client", CLIENT, Machine::Node)?;
    t.add_pod("coredns", super::DNS_POD, Machine::Node)?;
    t.add_pod("web-a", WEB_A, Machine::Remote)?;
    t.add_pod("web-b", WEB_B, Machine::Remote)?;
    lab.set_topology(t);
    lab.apply_rules(&Rules {
        services: vec![
            Service {
                name: "default/web:http".into(),
                vip: VIP,
                port: 80,
                protocol: "tcp",
                endpoints: vec![(WEB_A, 8080), (WEB_B, 8080)],
                node_port: None,
            },
            super::kube_dns_service(),
        ],
        ..Default::default()
    })?;
    // One segment of one connection is lost on the way once (its 6th packet); conntrack accounting
    // numbers the packets, so the retransmission (7th) passes.
    let node = &lab.topo().node;
    node.sysctl("net.netfilter.nf_conntrack_acct", "1")?;
    node.exec_stdin(
        "nft",
        &["-f", "-"],
        &format!(
            "table ip netsleuth_healthy_loss {{\n\tchain forward {{\n\t\ttype filter hook forward priority 0; policy accept;\n\
             \t\tip saddr {CLIENT} tcp sport {LOSSY_SOURCE_PORT} ct original packets 6 counter drop comment \"one lost segment\"\n\t}}\n}}\n"
        ),
    )?;
    let zone = Zone::default()
        .with("web.default.svc.cluster.local", &[VIP], &[])
        .with(
            "db.default.svc.cluster.local",
            &[Ipv4Addr::new(10, 96, 0, 21)],
            &[],
        );
    let _dns = dns::serve(
        &lab.topo().pod("coredns").ns,
        addr(Ipv4Addr::UNSPECIFIED, 53),
        zone,
    )?;
    let mut servers = Vec::new();
    for (role, name) in [("web-a", "web-a"), ("web-b", "web-b")] {
        let ns = &lab.topo().pod(role).ns;
        servers.push(traffic::serve(
            ns,
            name,
            addr(Ipv4Addr::UNSPECIFIED, 8080),
            128,
            Behaviour::RespondAndClose { bytes: 600 },
        )?);
        servers.push(traffic::serve(
            ns,
            name,
            addr(Ipv4Addr::UNSPECIFIED, 8081),
            128,
            Behaviour::CloseWithUnread,
        )?);
        servers.push(traffic::serve(
            ns,
            name,
            addr(Ipv4Addr::UNSPECIFIED, 8082),
            128,
            Behaviour::Echo,
        )?);
    }
    lab.observe(ObservePlan {
        node_role: "node",
        client_role: Some("client"),
        client_iface: "eth0",
        filter: None,
    })?;

    let h = lab.topo().pod("client").ns.spawn("client", move || {
        let mut ev: Vec<(String, bool)> = Vec::new();
        let dns_server = addr(super::DNS_VIP, 53);
        // Lookups: parallel A+AAAA from one socket (answered: no race symptom), and NXDOMAIN.
        for name in ["web.default.svc.cluster.local", "db.default.svc.cluster.local"] {
            let l = dns::glibc_lookup(dns_server, name, Duration::from_secs(5), 2, false);
            let ok = l.error.is_none() && l.elapsed < Duration::from_secs(1);
            ev.push((format!("getaddrinfo({name}) → {:?} in {:.1} ms", l.a, l.elapsed.as_secs_f64() * 1e3), ok));
        }
        for name in ["nosuch.default.svc.cluster.local", "typo.example.com"] {
            let l = dns::glibc_lookup(dns_server, name, Duration::from_secs(5), 2, false);
            let ok = l.error.as_deref() == Some("NXDOMAIN") && l.elapsed < Duration::from_secs(1);
            ev.push((format!("getaddrinfo({name}) → NXDOMAIN as expected in {:.1} ms", l.elapsed.as_secs_f64() * 1e3), ok));
        }
        // Short request/response connections through the ClusterIP.
        let mut served = 0;
        for i in 0..SHORT_CONNECTIONS {
            let r = traffic::connect(addr(VIP, 80), Duration::from_secs(2), ConnectOpts::default())
                .and_then(|mut s| traffic::request(&mut s, &format!("GET /{i} HTTP/1.0\r\n\r\n"), Duration::from_secs(2)));
            served += usize::from(r.is_ok());
        }
        ev.push((format!("{served} of {SHORT_CONNECTIONS} short connections through {VIP}:80 served"), served == SHORT_CONNECTIONS));
        // A longer exchange that loses one segment once.
        let t0 = Instant::now();
        let r = (|| -> std::io::Result<usize> {
            let mut s = traffic::connect(addr(WEB_A, 8082), Duration::from_secs(2), ConnectOpts { bind: Some(addr(CLIENT, LOSSY_SOURCE_PORT)), ..Default::default() })?;
            let mut echoed = 0;
            for i in 0..8 {
                echoed += traffic::request(&mut s, &format!("chunk {i} {}\n", "x".repeat(400)), Duration::from_secs(3))?.len();
            }
            Ok(echoed)
        })();
        ev.push((
            format!("echo exchange with one lost segment: {:?} in {:.2} s", r.as_ref().map_err(|e| e.to_string()), t0.elapsed().as_secs_f64()),
            r.is_ok(),
        ));
        // The application at :8081 closes with our data unread: its kernel resets the connection.
        let r = (|| -> std::io::Result<()> {
            let mut s = traffic::connect(addr(WEB_B, 8081), Duration::from_secs(2), ConnectOpts::default())?;
            s.write_all(b"0123456789abcdef")?;
            s.write_all(&[b'y'; 800])?;
            std::thread::sleep(Duration::from_millis(150));
            traffic::request(&mut s, "more\n", Duration::from_secs(1)).map(drop)
        })();
        let app_reset = matches!(&r, Err(e) if matches!(e.raw_os_error(), Some(libc::ECONNRESET) | Some(libc::EPIPE)));
        ev.push((format!("application close with unread data → {}", r.map(|_| "no reset".to_string()).unwrap_or_else(|e| traffic::errno_name(&e))), app_reset));
        // Nobody listens on :9999.
        let r = traffic::connect(addr(WEB_B, 9999), Duration::from_secs(2), ConnectOpts::default());
        let refused = matches!(&r, Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED));
        ev.push((format!("connect to closed port {WEB_B}:9999 → {}", r.map(|_| "connected?!".to_string()).unwrap_or_else(|e| traffic::errno_name(&e))), refused));
        Ok(ev)
    })?;
    let events = super::join(NAME, h)?;
    let lost = super::dns_conntrack_race::nft_counter(
        &lab.topo()
            .node
            .exec("nft", &["list", "table", "ip", "netsleuth_healthy_loss"])
            .unwrap_or_default(),
    );
    drop(servers);
    if lost == 0 {
        return Err(LabError::traffic(
            NAME,
            "the one-segment loss did not happen: the retransmission case is missing",
        ));
    }
    let mut out = Outcome::default();
    let mut unexpected = Vec::new();
    for (e, ok) in &events {
        out.event(format!("{}{e}", if *ok { "" } else { "UNEXPECTED: " }));
        if !ok {
            unexpected.push(e.clone());
        }
    }
    out.measure("segments lost once and retransmitted", lost as f64, "");
    out.measure("short connections", SHORT_CONNECTIONS as f64, "");
    if unexpected.is_empty() {
        out.fine = format!(
            "{SHORT_CONNECTIONS} short connections served, one lost segment recovered by retransmission, an application reset, a closed-port RST, lookups answered, NXDOMAIN answered"
        );
    } else {
        out.symptom = Some(format!(
            "healthy traffic misbehaved: {}",
            unexpected.join("; ")
        ));
    }
    Ok(out)
}

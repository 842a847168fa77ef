//! Busy but sound traffic that must not be mistaken for an incident: short connections through a
//! two-backend ClusterIP, one segment lost once and retransmitted, an application that closes with
//! unread data (its kernel sends RST), a connect to a port nobody listens on (RST), parallel A+AAAA
//! lookups from one socket that all get answers, and NXDOMAIN answers.
//!
//! And the look-alikes of the incidents, each sound: an application that resets a connection after a
//! silence (RST|ACK), a RST after the server's FIN (data sent to a closed connection after a silence),
//! one query of a parallel A/AAAA pair lost beyond the node (after DNAT, in the DNS pod) and re-sent
//! after the resolver's timeout, and a host-network probe of the node's own address (a SYN-ACK to a local address that is
//! no load balancer's).

use crate::dns::{self, Zone};
use crate::error::{LabError, Result};
use crate::kube::Service;
use crate::lab::{Lab, Outcome};
use crate::scene::{Recorded, Scene};
use crate::topology::NODE_POD_GW;
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
const LOSS_TABLE: &str = "netsleuth_healthy_loss";
const DNS_LOSS_TABLE: &str = "netsleuth_healthy_dns_loss";
/// The name whose first A query the DNS pod loses once. Its query is the only one of its length:
/// 12 (header) + 33 (name) + 4 (type, class) after the 8-byte UDP header, the type at byte 53.
const FLAKY_NAME: &str = "flaky.default.svc.cluster.local";
const FLAKY_UDP_LENGTH: usize = 8 + 12 + 33 + 4;
const FLAKY_QTYPE_BIT_OFFSET: usize = (8 + 12 + 33) * 8;
/// Longer than the conntrack-loss client view's 2 s silence: these resets come after an idle gap.
const IDLE: Duration = Duration::from_millis(2500);
/// kube-proxy's health port, served in the node namespace and probed by the node itself.
const HEALTHZ_PORT: u16 = 10256;

pub fn run(lab: &mut Lab) -> Result<Recorded> {
    let zone = Zone::default()
        .with("web.default.svc.cluster.local", &[VIP], &[])
        .with(
            "db.default.svc.cluster.local",
            &[Ipv4Addr::new(10, 96, 0, 21)],
            &[],
        )
        .with(FLAKY_NAME, &[Ipv4Addr::new(10, 96, 0, 22)], &[]);
    let mut scene = Scene::new()
        .pod("client", CLIENT)
        .pod("coredns", super::DNS_POD)
        .remote_pod("web-a", WEB_A)
        .remote_pod("web-b", WEB_B)
        .service(Service::new(
            "default/web:http",
            VIP,
            80,
            "tcp",
            &[(WEB_A, 8080), (WEB_B, 8080)],
        ))
        .service(super::kube_dns_service())
        // One segment of one connection is lost on the way once (its 6th packet); conntrack
        // accounting numbers the packets, so the retransmission (7th) passes.
        .sysctl("node", "net.netfilter.nf_conntrack_acct", "1")
        .nft(
            "node",
            "loss.nft",
            format!(
                "table ip {LOSS_TABLE} {{\n\tchain forward {{\n\t\ttype filter hook forward priority 0; policy accept;\n\
                 \t\tip saddr {CLIENT} tcp sport {LOSSY_SOURCE_PORT} ct original packets 6 counter drop comment \"one lost segment\"\n\t}}\n}}\n"
            ),
        )
        // One A query for FLAKY_NAME is lost once in the DNS pod (beyond the node, after DNAT); the
        // resolver re-sends it after its timeout.
        .nft(
            "coredns",
            "dns-loss.nft",
            format!(
                "table ip {DNS_LOSS_TABLE} {{\n\tset lost_once {{ type ipv4_addr; flags timeout; timeout 60s; }}\n\tchain input {{\n\t\ttype filter hook input priority 0; policy accept;\n\
                 \t\tudp dport 53 udp length {FLAKY_UDP_LENGTH} @th,{FLAKY_QTYPE_BIT_OFFSET},16 1 ip saddr @lost_once accept\n\
                 \t\tudp dport 53 udp length {FLAKY_UDP_LENGTH} @th,{FLAKY_QTYPE_BIT_OFFSET},16 1 add @lost_once {{ ip saddr }} counter drop comment \"one lost query\"\n\t}}\n}}\n"
            ),
        )
        .dns("coredns", zone);
    for role in ["web-a", "web-b"] {
        scene = scene
            .serve(role, 8080, Behaviour::RespondAndClose { bytes: 600 })
            .serve(role, 8081, Behaviour::CloseWithUnread)
            .serve(role, 8082, Behaviour::Echo)
            .serve(role, 8083, Behaviour::AbortOnSecondRequest);
    }
    scene = scene.serve(
        "node",
        HEALTHZ_PORT,
        Behaviour::RespondAndClose { bytes: 64 },
    );
    // web-b's own view has the application reset and the closed port's reset.
    let live = lab.build(scene.server_view("web-b"))?.observe()?;

    // The node probes its own address (host network, over lo): a SYN-ACK to a local address that is
    // no Service's load balancer IP.
    let node_probe = live.run("node", || {
        let r = traffic::connect(
            addr(NODE_POD_GW, HEALTHZ_PORT),
            Duration::from_secs(2),
            ConnectOpts::default(),
        )
        .and_then(|mut s| traffic::request(&mut s, "GET /healthz\n", Duration::from_secs(2)));
        Ok(r.map(drop).map_err(|e| traffic::errno_name(&e)))
    })?;
    let events = live.run("client", move || {
        let dns_server = addr(super::DNS_VIP, 53);
        // The slow cases run beside the rest: a lookup that waits out the resolver's timeout once,
        // and two resets after a silence.
        let flaky = std::thread::spawn(move || {
            // A and AAAA in parallel from one socket, as in the conntrack race, but the A query is
            // lost after DNAT, in the DNS pod: it left the node.
            let l = dns::glibc_lookup(dns_server, FLAKY_NAME, Duration::from_secs(5), 2, false);
            let ok = l.error.is_none() && l.retransmitted;
            (format!("getaddrinfo({FLAKY_NAME}) → {:?} in {:.1} s, its A query lost beyond the node and re-sent after the timeout: {}", l.a, l.elapsed.as_secs_f64(), l.retransmitted), ok)
        });
        let app_abort = std::thread::spawn(|| {
            let r = (|| -> std::io::Result<()> {
                let mut s = traffic::connect(addr(WEB_A, 8083), Duration::from_secs(2), ConnectOpts::default())?;
                traffic::request(&mut s, "hello\n", Duration::from_secs(2))?;
                std::thread::sleep(IDLE);
                traffic::request(&mut s, "again\n", Duration::from_secs(2)).map(drop)
            })();
            let reset = matches!(&r, Err(e) if matches!(e.raw_os_error(), Some(libc::ECONNRESET) | Some(libc::EPIPE)));
            (format!("application reset after {:.1} s idle (RST|ACK) → {}", IDLE.as_secs_f64(), r.map(|_| "no reset".to_string()).unwrap_or_else(|e| traffic::errno_name(&e))), reset)
        });
        let after_fin = std::thread::spawn(|| {
            let r = (|| -> std::io::Result<()> {
                let mut s = traffic::connect(addr(VIP, 80), Duration::from_secs(2), ConnectOpts::default())?;
                s.write_all(b"GET /closing HTTP/1.0\r\n\r\n")?;
                // Read the answer to the server's FIN, keep our side open, then write after a silence.
                let mut sink = [0u8; 1024];
                while matches!(std::io::Read::read(&mut s, &mut sink), Ok(n) if n > 0) {}
                std::thread::sleep(IDLE);
                s.write_all(b"late\n")?;
                std::thread::sleep(Duration::from_millis(100));
                s.write_all(b"later\n")?;
                std::io::Read::read(&mut s, &mut sink).map(drop)
            })();
            let reset = matches!(&r, Err(e) if matches!(e.raw_os_error(), Some(libc::ECONNRESET) | Some(libc::EPIPE)));
            (format!("data after the server's FIN and {:.1} s idle → {}", IDLE.as_secs_f64(), r.map(|_| "no reset".to_string()).unwrap_or_else(|e| traffic::errno_name(&e))), reset)
        });
        let mut ev: Vec<(String, bool)> = Vec::new();
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
        for slow in [flaky, app_abort, after_fin] {
            ev.push(slow.join().unwrap_or_else(|_| ("a traffic thread panicked".into(), false)));
        }
        Ok(ev)
    })?;
    let mut events = events;
    events.push((
        format!(
            "the node's own probe of {NODE_POD_GW}:{HEALTHZ_PORT} → {}",
            node_probe.as_ref().err().map_or("answered", String::as_str)
        ),
        node_probe.is_ok(),
    ));
    let dns_lost = super::dns_conntrack_race::nft_counter(
        &live
            .ns("coredns")?
            .read(&["nft", "list", "table", "ip", DNS_LOSS_TABLE])
            .unwrap_or_default(),
    );
    if dns_lost != 1 {
        return Err(LabError::traffic(
            NAME,
            format!("the DNS pod lost {dns_lost} queries for {FLAKY_NAME}, not one: the lost-query case is missing"),
        ));
    }
    let lost = super::dns_conntrack_race::nft_counter(
        &live
            .node()
            .read(&["nft", "list", "table", "ip", LOSS_TABLE])
            .unwrap_or_default(),
    );
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
    out.measure(
        "DNS queries lost beyond the node and re-sent",
        dns_lost as f64,
        "",
    );
    out.measure("short connections", SHORT_CONNECTIONS as f64, "");
    if unexpected.is_empty() {
        out.fine = format!(
            "{SHORT_CONNECTIONS} short connections served, one lost segment recovered by retransmission, application resets (one after idle), a RST after the server's FIN, a closed-port RST, lookups answered (one after a query lost beyond the node and re-sent), NXDOMAIN answered, the node's own probe of its address answered"
        );
    } else {
        out.symptom = Some(format!(
            "healthy traffic misbehaved: {}",
            unexpected.join("; ")
        ));
    }
    Ok(live.finish(out))
}

//! [issue 15; kubernetes #19029, #125467] A client keeps one UDP socket for its DNS queries to the
//! kube-dns ClusterIP. The DNS pod it was DNATed to is deleted and replaced; the Service's rules now
//! point at the new pod, but the socket's conntrack entry still points at the old one, and every query
//! refreshes it: the socket's queries vanish while a new socket's are answered. The mitigated run
//! deletes the Service's UDP entries toward the removed backend, as kube-proxy does on an endpoint
//! change.

use crate::error::{LabError, Result};
use crate::kube::{Rules, Service};
use crate::lab::{Lab, Outcome};
use crate::scene::{Recorded, Scene};
use netsleuth_core::wire::dns::DnsRepr;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const NAME: &str = netsleuth_core::detect::stale_udp_conntrack::INCIDENT.id;
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 10);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const OLD_POD: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 53);
const NEW_POD: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 54);
const NAMES: &[&str] = &[
    "api.default.svc.cluster.local",
    "db.default.svc.cluster.local",
];
const INTERVAL: Duration = Duration::from_millis(250);
const WAIT: Duration = Duration::from_millis(200);

fn service(endpoint: Ipv4Addr) -> Service {
    Service::new(
        "kube-system/kube-dns:dns",
        VIP,
        53,
        "udp",
        &[(endpoint, 53)],
    )
}

/// One query from `sock` to the ClusterIP; whether an answer with its ID came back in time.
fn ask(sock: &UdpSocket, id: u16, name: &str) -> bool {
    let q = DnsRepr::query(id, name, 1).emit();
    if sock.send_to(&q, SocketAddrV4::new(VIP, 53)).is_err() {
        return false;
    }
    let deadline = Instant::now() + WAIT;
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        let _ = sock.set_read_timeout(Some(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        ));
        match sock.recv(&mut buf) {
            Ok(n) if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id => return true,
            Ok(_) => continue,
            Err(_) => return false,
        }
    }
    false
}

pub fn run(lab: &mut Lab) -> Result<Recorded> {
    let zone = crate::dns::Zone::default()
        .with(NAMES[0], &[Ipv4Addr::new(10, 96, 1, 1)], &[])
        .with(NAMES[1], &[Ipv4Addr::new(10, 96, 1, 2)], &[]);
    let live = lab
        .build(
            Scene::new()
                .pod("client", CLIENT)
                .remote_pod("coredns-old", OLD_POD)
                .remote_pod("coredns-new", NEW_POD)
                .service(service(OLD_POD))
                .dns("coredns-old", zone.clone())
                .dns("coredns-new", zone),
        )?
        .observe()?;
    let mitigated = live.mitigated;

    let (tx_removed, rx_removed) = mpsc::channel::<()>();
    let (tx_phase, rx_phase) = mpsc::channel::<()>();
    let client = live.spawn("client", move || {
        let old = UdpSocket::bind("0.0.0.0:0")
            .map_err(|e| LabError::traffic(NAME, format!("binding the long-lived socket: {e}")))?;
        let port = old.local_addr().map(|a| a.port()).unwrap_or(0);
        let mut id = 0x4000u16;
        let mut before = (0, 0);
        for i in 0..4 {
            id += 1;
            before.0 += 1;
            before.1 += usize::from(ask(&old, id, NAMES[i % 2]));
            std::thread::sleep(INTERVAL);
        }
        let _ = tx_phase.send(());
        rx_removed
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| LabError::traffic(NAME, "the old DNS pod was not removed"))?;
        let fresh = UdpSocket::bind("0.0.0.0:0")
            .map_err(|e| LabError::traffic(NAME, format!("binding a new socket: {e}")))?;
        let fresh_port = fresh.local_addr().map(|a| a.port()).unwrap_or(0);
        let (mut after, mut fresh_counts) = ((0, 0), (0, 0));
        for i in 0..12 {
            id += 1;
            after.0 += 1;
            after.1 += usize::from(ask(&old, id, NAMES[i % 2]));
            if i % 3 == 1 {
                id += 1;
                fresh_counts.0 += 1;
                fresh_counts.1 += usize::from(ask(&fresh, id, NAMES[i % 2]));
            }
            std::thread::sleep(INTERVAL);
        }
        Ok((port, fresh_port, before, after, fresh_counts))
    })?;

    rx_phase
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| LabError::traffic(NAME, "the client never started"))?;
    // The old pod is deleted: its address answers no more, and kube-proxy's rules name the new one.
    live.ns("coredns-old")?
        .ip(&["link", "set", "eth0", "down"])?;
    Rules {
        services: vec![service(NEW_POD)],
        extra_postrouting: Vec::new(),
    }
    .apply(live.node())?;
    if mitigated {
        // kube-proxy's cleanup on an endpoint change (pkg/proxy/conntrack).
        let _ = live.node().exec(
            "conntrack",
            &[
                "-D",
                "-p",
                "udp",
                "--orig-dst",
                &VIP.to_string(),
                "--reply-src",
                &OLD_POD.to_string(),
            ],
        );
    }
    let _ = tx_removed.send(());
    let (port, fresh_port, before, after, fresh) = client.join()?;

    let mut out = Outcome::default();
    out.event(format!(
        "socket {CLIENT}:{port}: {} of {} queries to {VIP}:53 answered while {OLD_POD} was the endpoint",
        before.1, before.0
    ));
    out.event(format!(
        "{OLD_POD} deleted, the Service's rules now name {NEW_POD}{}",
        if mitigated {
            "; the Service's UDP conntrack entries toward the old pod deleted"
        } else {
            ""
        }
    ));
    out.event(format!(
        "socket {CLIENT}:{port} afterwards: {} of {} queries answered",
        after.1, after.0
    ));
    out.event(format!(
        "new socket {CLIENT}:{fresh_port}: {} of {} queries answered",
        fresh.1, fresh.0
    ));
    out.measure(
        "queries of the long-lived socket answered after the change",
        after.1 as f64,
        "",
    );
    out.measure(
        "queries of a new socket answered after the change",
        fresh.1 as f64,
        "",
    );
    if before.1 > 0 && after.1 == 0 && fresh.1 > 0 {
        out.symptom = Some(format!(
            "after {OLD_POD} was replaced by {NEW_POD}, none of {} queries from the long-lived socket {CLIENT}:{port} were answered (its conntrack entry still DNATs to {OLD_POD}) while a new socket got {} of {} answers",
            after.0, fresh.1, fresh.0
        ));
    } else {
        out.fine = format!(
            "the long-lived socket got {} of {} answers after the backend changed; a new socket {} of {}",
            after.1, after.0, fresh.1, fresh.0
        );
    }
    Ok(live.finish(out))
}

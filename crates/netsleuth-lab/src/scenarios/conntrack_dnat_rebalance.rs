//! [001] Long-idle connections to a Service outlive their conntrack entries; the next segment is
//! DNATed afresh and, half of the time, lands on the other backend, which resets it.
//!
//! Ten idle connections make the 50 % rebalance deterministic enough: the chance that none of them
//! moves is 2⁻¹⁰.

use crate::error::{LabError, Result};
use crate::kube::{Rules, Service};
use crate::lab::{Lab, ObservePlan, Outcome};
use crate::topology::{Machine, Topology};
use crate::traffic::{self, addr, Behaviour, ConnectOpts};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

const NAME: &str = netsleuth_core::detect::conntrack_dnat_rebalance::INCIDENT.id;
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 20);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 10);
const BACKEND_A: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 11);
const BACKEND_B: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 12);
const CONNECTIONS: usize = 10;
const CT_TIMEOUT_S: u32 = 2;
const IDLE: Duration = Duration::from_millis(3500);
const MAX_ROUNDS: usize = 3;

pub fn run(lab: &mut Lab) -> Result<Outcome> {
    let mut t = Topology::new()?;
    t.add_remote(true)?;
    t.add_pod("client", CLIENT, Machine::Node)?;
    t.add_pod("backend-a", BACKEND_A, Machine::Remote)?;
    t.add_pod("backend-b", BACKEND_B, Machine::Remote)?;
    lab.set_topology(t);
    lab.apply_rules(&Rules {
        services: vec![Service {
            name: "default/web:http".into(),
            vip: VIP,
            port: 80,
            protocol: "tcp",
            endpoints: vec![(BACKEND_A, 8080), (BACKEND_B, 8080)],
            node_port: None,
        }],
        ..Default::default()
    })?;
    // Stands for a day of idleness against kube-proxy's 86400 s: the mechanism is the same.
    lab.topo().node.sysctl(
        "net.netfilter.nf_conntrack_tcp_timeout_established",
        &CT_TIMEOUT_S.to_string(),
    )?;
    let _a = traffic::serve(
        &lab.topo().pod("backend-a").ns,
        "backend-a",
        addr(Ipv4Addr::UNSPECIFIED, 8080),
        128,
        Behaviour::Echo,
    )?;
    let _b = traffic::serve(
        &lab.topo().pod("backend-b").ns,
        "backend-b",
        addr(Ipv4Addr::UNSPECIFIED, 8080),
        128,
        Behaviour::Echo,
    )?;
    lab.observe(ObservePlan {
        node_role: "node",
        client_role: Some("client"),
        client_iface: "eth0",
        filter: None,
    })?;

    let mitigated = lab.mitigated;
    let keepalive = mitigated.then_some((1, 1));
    let h = lab.topo().pod("client").ns.spawn("client", move || {
        let mut conns: Vec<(std::net::TcpStream, String)> = Vec::new();
        for i in 0..CONNECTIONS {
            let mut s = traffic::connect(
                addr(VIP, 80),
                Duration::from_secs(3),
                ConnectOpts {
                    keepalive,
                    ..Default::default()
                },
            )
            .map_err(|e| LabError::traffic(NAME, format!("connect {i} to {VIP}:80: {e}")))?;
            let reply = traffic::request(&mut s, &format!("hello {i}\n"), Duration::from_secs(2))
                .map_err(|e| {
                LabError::traffic(NAME, format!("first request on connection {i}: {e}"))
            })?;
            let backend = reply.split(':').next().unwrap_or("?").to_string();
            conns.push((s, backend));
        }
        // Survivors idle again (their new entries picked the same backend) until one is reset; each
        // round moves each connection with probability 1/2.
        let mut results = Vec::new();
        for round in 0..MAX_ROUNDS {
            std::thread::sleep(IDLE);
            let mut alive = Vec::new();
            for (i, (mut s, backend)) in conns.into_iter().enumerate() {
                let port = traffic::local_port(&s);
                let t0 = Instant::now();
                let r = traffic::request(
                    &mut s,
                    &format!("after idle {round}.{i}\n"),
                    Duration::from_secs(2),
                );
                let ok = r.is_ok();
                results.push((
                    round,
                    port,
                    backend.clone(),
                    r.map(|x| x.split(':').next().unwrap_or("?").to_string()),
                    t0.elapsed(),
                ));
                if ok {
                    alive.push((s, backend));
                }
            }
            conns = alive;
            if mitigated || results.iter().any(|r| r.3.is_err()) {
                break;
            }
        }
        Ok(results)
    })?;
    let results = super::join(NAME, h)?;

    let mut out = Outcome::default();
    let mut resets = 0;
    for (round, port, first, r, took) in &results {
        match r {
            Ok(now) => out.event(format!(
                "round {round}: {CLIENT}:{port} → {VIP}:80 first served by {first}, after {:.1} s idle answered by {now} ({:.1} ms)",
                IDLE.as_secs_f64(),
                took.as_secs_f64() * 1e3
            )),
            Err(e) => {
                resets += usize::from(e.raw_os_error() == Some(libc::ECONNRESET));
                out.event(format!(
                    "round {round}: {CLIENT}:{port} → {VIP}:80 first served by {first}, after {:.1} s idle: {}",
                    IDLE.as_secs_f64(),
                    traffic::errno_name(e)
                ))
            }
        }
    }
    out.measure("idle connections", CONNECTIONS as f64, "");
    out.measure("idle time", IDLE.as_secs_f64(), "s");
    out.measure(
        "nf_conntrack_tcp_timeout_established",
        CT_TIMEOUT_S as f64,
        "s",
    );
    out.measure(
        "connections reset after idle (ECONNRESET)",
        resets as f64,
        "",
    );
    if resets > 0 {
        out.symptom = Some(format!(
            "{resets} of {CONNECTIONS} connections got ECONNRESET on their first send after {:.1} s idle (conntrack timeout {CT_TIMEOUT_S} s): DNATed to the other backend",
            IDLE.as_secs_f64()
        ));
    } else {
        out.fine = format!(
            "all {CONNECTIONS} connections kept their backend across {:.1} s idle{}",
            IDLE.as_secs_f64(),
            if mitigated {
                " (keepalive every 1 s kept their conntrack entries)"
            } else {
                ""
            }
        );
    }
    Ok(out)
}

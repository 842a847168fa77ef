//! [issue 15] A pod's connection through a load balancer outside the cluster sits idle longer than the
//! load balancer's idle timeout; the balancer forgets the flow and answers the next segment with a RST
//! of its own; the pod gets ECONNRESET.
//!
//! The load balancer is emulated by the remote node's namespace: its address 203.0.113.10
//! (TEST-NET-3) DNATs to a backend pod behind it, its own conntrack forgets established flows after
//! 3 s (standing for Azure LB's 4 min or AWS NLB's 350 s) and with nf_conntrack_tcp_loose=0 a
//! mid-stream segment creates no new entry: it reaches the balancer's own address, where no socket
//! exists, and the balancer's kernel answers RST — as AWS NLB, NAT gateway and Azure LB with TCP
//! reset do. The node and the pod are untouched.

use crate::error::{LabError, Result};
use crate::lab::{Lab, Outcome};
use crate::scene::{Recorded, Scene};
use crate::topology::REMOTE_IP;
use crate::traffic::{self, addr, Behaviour, ConnectOpts};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

const NAME: &str = netsleuth_core::detect::idle_timeout_reset::INCIDENT.id;
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 10);
const LB: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const BACKEND: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 80);
const LB_IDLE_TIMEOUT_S: u32 = 3;
const IDLE: Duration = Duration::from_millis(4000);

pub fn run(lab: &mut Lab) -> Result<Recorded> {
    let net = lab.build(
        Scene::new()
            .pod("client", CLIENT)
            .remote_pod("backend", BACKEND)
            .sysctl(
                "remote",
                "net.netfilter.nf_conntrack_tcp_timeout_established",
                &LB_IDLE_TIMEOUT_S.to_string(),
            )
            .sysctl("remote", "net.netfilter.nf_conntrack_tcp_loose", "0")
            .serve("backend", 8080, Behaviour::Echo),
    )?;
    // The balancer: its address, its DNAT to the backend; the node routes to it through the remote.
    let remote = net.ns("remote")?;
    remote.ip(&["addr", "add", &format!("{LB}/32"), "dev", "lo"])?;
    remote.exec(
        "iptables",
        &[
            "-w",
            "-t",
            "nat",
            "-A",
            "PREROUTING",
            "-d",
            &format!("{LB}/32"),
            "-p",
            "tcp",
            "--dport",
            "443",
            "-j",
            "DNAT",
            "--to-destination",
            &format!("{BACKEND}:8080"),
        ],
    )?;
    net.node().ip(&[
        "route",
        "add",
        "203.0.113.0/24",
        "via",
        &REMOTE_IP.to_string(),
    ])?;
    let live = net.observe()?;
    let mitigated = live.mitigated;
    let keepalive = mitigated.then_some((1, 1));
    let (port, first, after, took) = live.run("client", move || {
        let mut s = traffic::connect(
            addr(LB, 443),
            Duration::from_secs(3),
            ConnectOpts {
                keepalive,
                ..Default::default()
            },
        )
        .map_err(|e| LabError::traffic(NAME, format!("connect to {LB}:443: {e}")))?;
        let port = traffic::local_port(&s);
        let first = traffic::request(&mut s, "hello\n", Duration::from_secs(2))
            .map_err(|e| LabError::traffic(NAME, format!("first request: {e}")))?;
        std::thread::sleep(IDLE);
        let t = Instant::now();
        let after = traffic::request(&mut s, "after the idle time\n", Duration::from_secs(2));
        Ok((port, first, after, t.elapsed()))
    })?;

    let mut out = Outcome::default();
    out.event(format!(
        "{CLIENT}:{port} → {LB}:443 (load balancer, idle timeout {LB_IDLE_TIMEOUT_S} s) answered by {}",
        first.trim()
    ));
    match &after {
        Ok(r) => out.event(format!(
            "after {:.1} s idle answered by {} in {:.1} ms{}",
            IDLE.as_secs_f64(),
            r.trim(),
            took.as_secs_f64() * 1e3,
            if mitigated {
                " (keepalive every 1 s)"
            } else {
                ""
            }
        )),
        Err(e) => out.event(format!(
            "after {:.1} s idle: {}",
            IDLE.as_secs_f64(),
            traffic::errno_name(e)
        )),
    }
    out.measure(
        "load balancer idle timeout",
        f64::from(LB_IDLE_TIMEOUT_S),
        "s",
    );
    out.measure("idle time", IDLE.as_secs_f64(), "s");
    let reset = after
        .as_ref()
        .err()
        .is_some_and(|e| e.raw_os_error() == Some(libc::ECONNRESET));
    if reset {
        out.symptom = Some(format!(
            "after {:.1} s idle the connection {CLIENT}:{port} → {LB}:443 got ECONNRESET: the load balancer (idle timeout {LB_IDLE_TIMEOUT_S} s) had forgotten it and reset its next segment",
            IDLE.as_secs_f64()
        ));
    } else {
        out.fine = format!(
            "the connection {CLIENT}:{port} → {LB}:443 survived {:.1} s idle{}",
            IDLE.as_secs_f64(),
            if mitigated {
                " (keepalive every 1 s kept the load balancer's entry)"
            } else {
                ""
            }
        );
    }
    Ok(live.finish(out))
}

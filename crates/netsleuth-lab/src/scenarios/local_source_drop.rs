//! [003] kube-proxy in IPVS mode binds the LoadBalancer IP to the dummy `kube-ipvs0`, which puts it
//! in table `local`. The cloud LB's health checks come from that same IP to the NodePort; the node
//! sees a packet from one of its own addresses arriving on eth0 and drops it as martian
//! (`accept_local=0`): the node looks unhealthy although its backend is fine.
//!
//! A host-network agent on the node also probes the LB IP's kube-proxy health port: with the IP on
//! kube-ipvs0 that probe never leaves the node (it is carried over `lo`, source and destination the LB
//! IP), which is how a node's own capture proves the address local.

use crate::error::{LabError, Result};
use crate::kube::Service;
use crate::lab::{Lab, Outcome};
use crate::scene::{Recorded, Scene};
use crate::topology::{NODE_IP, REMOTE_IP};
use crate::traffic::{self, addr, Behaviour, ConnectOpts};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

const NAME: &str = netsleuth_core::detect::local_source_drop::INCIDENT.id;
const LB_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 40);
const BACKEND: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 20);
const NODE_PORT: u16 = 30080;
/// kube-proxy's health port (`--healthz-bind-address`, 0.0.0.0:10256), served in the node namespace.
const HEALTHZ_PORT: u16 = 10256;
const PROBE_TIMEOUT: Duration = Duration::from_millis(3500);

pub fn run(lab: &mut Lab) -> Result<Recorded> {
    let mut net = lab.build(
        Scene::new()
            .remote()
            .pod("backend", BACKEND)
            .service(
                Service::new("default/web-lb:http", VIP, 80, "tcp", &[(BACKEND, 8080)])
                    .with_node_port(NODE_PORT),
            )
            .sysctl("node", "net.ipv4.conf.all.accept_local", "0")
            .sysctl("node", "net.ipv4.conf.eth0.accept_local", "0")
            // The LB sources its health checks from its own VIP. It is not on the node's L2 in a
            // cloud, so its ARP must not carry the VIP either (arp_announce=2: ask with the eth0
            // address).
            .sysctl("remote", "net.ipv4.conf.all.arp_announce", "2")
            .sysctl("remote", "net.ipv4.conf.eth0.arp_announce", "2")
            .serve("backend", 8080, Behaviour::Echo)
            // Declared after the backend: the server whose own view is recorded stays the backend.
            .serve(
                "node",
                HEALTHZ_PORT,
                Behaviour::RespondAndClose { bytes: 64 },
            )
            // The "client" here is the LB side; its own view is the remote namespace's eth0.
            .client_view("remote", "eth0"),
    )?;
    let node = net.node();
    let mut device_note = None;
    if node
        .ip(&["link", "add", "kube-ipvs0", "type", "dummy"])
        .is_err()
    {
        // Kernels without the dummy driver: a bridge without ports is as inert, and an address on it
        // enters table local the same way.
        node.ip(&["link", "add", "kube-ipvs0", "type", "bridge"])?;
        device_note = Some("this kernel has no dummy driver; kube-ipvs0 is a port-less bridge, which puts its address in table local the same way");
    }
    if !net.mitigated {
        node.ip(&["addr", "add", &format!("{LB_IP}/32"), "dev", "kube-ipvs0"])?;
    }
    // The cloud LB is reached through the VPC, here the remote side of eth0.
    node.ip(&[
        "route",
        "add",
        &format!("{LB_IP}/32"),
        "via",
        &REMOTE_IP.to_string(),
    ])?;
    net.ns("remote")?
        .ip(&["addr", "add", &format!("{LB_IP}/32"), "dev", "lo"])?;
    if let Some(n) = device_note {
        net.note(n);
    }
    let live = net.observe()?;

    // The node's own probe of the LB IP: over lo while the IP is on kube-ipvs0 (SYN-ACK to the LB IP
    // delivered locally); with the fix it leaves for the LB, which has nothing on that port.
    let local_probe = live.run("node", move || {
        let t0 = Instant::now();
        let r = traffic::connect(
            addr(LB_IP, HEALTHZ_PORT),
            Duration::from_secs(2),
            ConnectOpts::default(),
        )
        .and_then(|mut s| traffic::request(&mut s, "GET /healthz\n", Duration::from_secs(2)));
        Ok((r.map(drop), t0.elapsed()))
    })?;
    let martian_before = martian_src();
    let results = live.run("remote", move || {
        let mut results = Vec::new();
        for (what, bind) in [
            ("health check from the LB IP", Some(addr(LB_IP, 0))),
            ("client from the VPC", None),
        ] {
            let t0 = Instant::now();
            let r = traffic::connect(
                addr(NODE_IP, NODE_PORT),
                PROBE_TIMEOUT,
                ConnectOpts {
                    bind,
                    ..Default::default()
                },
            )
            .and_then(|mut s| traffic::request(&mut s, "GET /healthz\n", Duration::from_secs(2)));
            results.push((
                what,
                bind.map(|b| *b.ip()).unwrap_or(REMOTE_IP),
                r.map(drop),
                t0.elapsed(),
            ));
        }
        Ok(results)
    })?;
    let martian = martian_src().saturating_sub(martian_before);

    let mut out = Outcome::default();
    out.event(format!(
        "host-network probe from the node to {LB_IP}:{HEALTHZ_PORT}: {} in {:.1} ms",
        match &local_probe.0 {
            Ok(()) => "answered by the node itself (the LB IP is local)".to_string(),
            Err(e) => traffic::errno_name(e),
        },
        local_probe.1.as_secs_f64() * 1e3
    ));
    let mut probe_failed = None;
    for (what, src, r, took) in &results {
        match r {
            Ok(()) => out.event(format!(
                "{what}: {src} → {NODE_IP}:{NODE_PORT} answered in {:.1} ms",
                took.as_secs_f64() * 1e3
            )),
            Err(e) => {
                out.event(format!(
                    "{what}: {src} → {NODE_IP}:{NODE_PORT} {} after {:.1} s",
                    traffic::errno_name(e),
                    took.as_secs_f64()
                ));
                if *src == LB_IP {
                    probe_failed = Some(took.as_secs_f64());
                }
            }
        }
    }
    out.measure("rt_cache in_martian_src (kernel-wide)", martian as f64, "");
    match probe_failed {
        Some(secs) => {
            out.measure("health check connect", secs, "s");
            out.symptom = Some(format!(
                "health checks from the LB IP {LB_IP} to NodePort {NODE_IP}:{NODE_PORT} got no answer for {secs:.1} s (in_martian_src +{martian}) while a client from {REMOTE_IP} was served: {LB_IP} is on kube-ipvs0, so in table local"
            ));
        }
        None => {
            out.fine = format!("health checks from {LB_IP} and clients reach NodePort {NODE_PORT}")
        }
    }
    if results.iter().any(|r| r.1 != LB_IP && r.2.is_err()) {
        return Err(LabError::traffic(
            NAME,
            "the ordinary client could not reach the NodePort either: the topology is broken",
        ));
    }
    Ok(live.finish(out))
}

fn martian_src() -> u64 {
    std::fs::read_to_string("/proc/net/stat/rt_cache")
        .map(|t| {
            netsleuth_node::parse::netstat::parse_stat_table(&t)
                .value
                .get("in_martian_src")
                .copied()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

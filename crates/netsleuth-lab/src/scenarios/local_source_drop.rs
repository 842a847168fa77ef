//! [003] kube-proxy in IPVS mode binds the LoadBalancer IP to the dummy `kube-ipvs0`, which puts it
//! in table `local`. The cloud LB's health checks come from that same IP to the NodePort; the node
//! sees a packet from one of its own addresses arriving on eth0 and drops it as martian
//! (`accept_local=0`): the node looks unhealthy although its backend is fine.

use crate::error::{LabError, Result};
use crate::kube::{Rules, Service};
use crate::lab::{Lab, ObservePlan, Outcome};
use crate::topology::{Machine, Topology, NODE_IP, REMOTE_IP};
use crate::traffic::{self, addr, Behaviour, ConnectOpts};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

const NAME: &str = netsleuth_core::detect::local_source_drop::INCIDENT.id;
const LB_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 40);
const BACKEND: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 20);
const NODE_PORT: u16 = 30080;
const PROBE_TIMEOUT: Duration = Duration::from_millis(3500);

pub fn run(lab: &mut Lab) -> Result<Outcome> {
    let mut t = Topology::new()?;
    t.add_remote(false)?;
    t.add_pod("backend", BACKEND, Machine::Node)?;
    lab.set_topology(t);
    let node = &lab.topo().node;
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
    if !lab.mitigated {
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
    node.sysctl("net.ipv4.conf.all.accept_local", "0")?;
    node.sysctl("net.ipv4.conf.eth0.accept_local", "0")?;
    // The LB sources its health checks from its own VIP. It is not on the node's L2 in a cloud, so its
    // ARP must not carry the VIP either (arp_announce=2: ask with the eth0 address).
    let lb = lab.topo().remote();
    lb.ip(&["addr", "add", &format!("{LB_IP}/32"), "dev", "lo"])?;
    lb.sysctl("net.ipv4.conf.all.arp_announce", "2")?;
    lb.sysctl("net.ipv4.conf.eth0.arp_announce", "2")?;
    lab.apply_rules(&Rules {
        services: vec![Service {
            name: "default/web-lb:http".into(),
            vip: VIP,
            port: 80,
            protocol: "tcp",
            endpoints: vec![(BACKEND, 8080)],
            node_port: Some(NODE_PORT),
        }],
        ..Default::default()
    })?;
    if let Some(n) = device_note {
        lab.note(n);
    }
    let _srv = traffic::serve(
        &lab.topo().pod("backend").ns,
        "backend",
        addr(Ipv4Addr::UNSPECIFIED, 8080),
        128,
        Behaviour::Echo,
    )?;
    // The "client" here is the LB side; its own view is the remote namespace's eth0, which is not a
    // pod: capture the node only, plus the LB's eth0 as the client view.
    lab.observe(ObservePlan {
        node_role: "node",
        client_role: Some("remote"),
        client_iface: "eth0",
        filter: None,
    })?;

    let martian_before = martian_src();
    let h = lab.topo().remote().spawn("lb", move || {
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
    let results = super::join(NAME, h)?;
    let martian = martian_src().saturating_sub(martian_before);

    let mut out = Outcome::default();
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
    Ok(out)
}

fn martian_src() -> u64 {
    std::fs::read_to_string("/proc/net/stat/rt_cache")
        .map(|t| {
            crate::counters::parse_proc_stat_table(&t)
                .get("in_martian_src")
                .copied()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

//! [002] With `bridge-nf-call-iptables=0`, a pod's connection to a ClusterIP whose backend hangs on the
//! same bridge gets its SYN-ACK bridged straight back from the backend's pod IP, without reverse NAT;
//! the client resets it and its connect times out. Via the pod IP everything works.

use crate::error::{LabError, Result};
use crate::kube::{Rules, Service};
use crate::lab::{Lab, ObservePlan, Outcome};
use crate::topology::{Machine, Topology};
use crate::traffic::{self, addr, Behaviour, ConnectOpts};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

const NAME: &str = netsleuth_core::detect::bridge_nf_bypass::INCIDENT.id;
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 30);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 10);
const BACKEND: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 20);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(3500);

pub fn run(lab: &mut Lab) -> Result<Outcome> {
    let mut t = Topology::new()?;
    t.add_pod("client", CLIENT, Machine::Node)?;
    t.add_pod("backend", BACKEND, Machine::Node)?;
    lab.set_topology(t);
    if lab
        .topo()
        .node
        .sysctl_get("net.bridge.bridge-nf-call-iptables")
        .is_none()
    {
        return Err(LabError::MissingKernelFeature {
            what: "net.bridge.bridge-nf-call-iptables is missing in the lab's node namespace (br_netfilter is not loaded)".into(),
            hint: "load it on the host with `modprobe br_netfilter` (the lab does not load modules)".into(),
        });
    }
    lab.apply_rules(&Rules {
        services: vec![Service {
            name: "spring-prod/frontend:http".into(),
            vip: VIP,
            port: 8080,
            protocol: "tcp",
            endpoints: vec![(BACKEND, 8080)],
            node_port: None,
        }],
        ..Default::default()
    })?;
    let value = if lab.mitigated { "1" } else { "0" };
    lab.topo()
        .node
        .sysctl("net.bridge.bridge-nf-call-iptables", value)?;
    let _srv = traffic::serve(
        &lab.topo().pod("backend").ns,
        "backend",
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

    let h = lab.topo().pod("client").ns.spawn("client", move || {
        let mut results = Vec::new();
        for dst in [addr(VIP, 8080), addr(BACKEND, 8080)] {
            let t0 = Instant::now();
            let r =
                traffic::connect(dst, CONNECT_TIMEOUT, ConnectOpts::default()).and_then(|mut s| {
                    traffic::request(&mut s, "GET / HTTP/1.1\r\n\r\n", Duration::from_secs(2))
                });
            results.push((dst, r, t0.elapsed()));
        }
        Ok(results)
    })?;
    let results = super::join(NAME, h)?;
    let mut out = Outcome::default();
    let mut vip_failed = None;
    for (dst, r, took) in &results {
        match r {
            Ok(_) => out.event(format!(
                "{CLIENT} → {dst}: connected and answered in {:.1} ms",
                took.as_secs_f64() * 1e3
            )),
            Err(e) => {
                out.event(format!(
                    "{CLIENT} → {dst}: {} after {:.2} s",
                    traffic::errno_name(e),
                    took.as_secs_f64()
                ));
                if *dst.ip() == VIP {
                    vip_failed = Some((traffic::errno_name(e), took.as_secs_f64()));
                }
            }
        }
    }
    out.measure(
        "net.bridge.bridge-nf-call-iptables (node)",
        if lab.mitigated { 1.0 } else { 0.0 },
        "",
    );
    match vip_failed {
        Some((err, secs)) => {
            out.measure("connect to ClusterIP", secs, "s");
            out.symptom = Some(format!(
                "connect to ClusterIP {VIP}:8080 failed ({err}) after {secs:.1} s while the same backend answered on its pod IP {BACKEND}:8080: the SYN-ACK came back bridged from the pod IP and the client reset it"
            ));
        }
        None => out.fine = format!("ClusterIP {VIP}:8080 and pod IP {BACKEND}:8080 both answered"),
    }
    Ok(out)
}

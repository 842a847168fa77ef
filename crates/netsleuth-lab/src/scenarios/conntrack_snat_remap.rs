//! [000] A pod's long connection leaves the node through MASQUERADE. keepalived moves a VIP off the
//! node's eth0; old kernels then flushed every masqueraded conntrack entry of eth0. The connection's
//! next segment gets a fresh entry and, with --random-fully, a new source port: the server has no such
//! connection and resets it.

use crate::error::{LabError, Result};
use crate::kube::Rules;
use crate::lab::{Lab, ObservePlan, Outcome};
use crate::topology::{Machine, Topology, NODE_IP, REMOTE_IP};
use crate::traffic::{self, addr, Behaviour, ConnectOpts};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

const NAME: &str = netsleuth_core::detect::conntrack_snat_remap::INCIDENT.id;
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 10);
const VIP: &str = "192.168.50.100/32";
const PORT: u16 = 8899;
const MAX_MOVES: usize = 3;

pub fn run(lab: &mut Lab) -> Result<Outcome> {
    let mut t = Topology::new()?;
    t.add_remote(false)?;
    t.add_pod("client", CLIENT, Machine::Node)?;
    lab.set_topology(t);
    lab.apply_rules(&Rules {
        // flannel's rule for pod traffic leaving the cluster network.
        extra_postrouting: vec![
            "-s 10.244.0.0/16 ! -d 10.244.0.0/16 -m comment --comment \"flanneld masq\" -j MASQUERADE --random-fully".into(),
        ],
        ..Default::default()
    })?;
    let _srv = traffic::serve(
        lab.topo().remote(),
        "server",
        addr(Ipv4Addr::UNSPECIFIED, PORT),
        128,
        Behaviour::Echo,
    )?;
    lab.observe(ObservePlan {
        node_role: "node",
        client_role: Some("client"),
        client_iface: "eth0",
        filter: None,
    })?;

    let (to_client, from_main) = std::sync::mpsc::channel::<()>();
    let (to_main, from_client) =
        std::sync::mpsc::channel::<(u16, std::io::Result<String>, Duration)>();
    let h = lab.topo().pod("client").ns.spawn("client", move || {
        let mut s = traffic::connect(
            addr(REMOTE_IP, PORT),
            Duration::from_secs(3),
            ConnectOpts::default(),
        )
        .map_err(|e| LabError::traffic(NAME, format!("connect to {REMOTE_IP}:{PORT}: {e}")))?;
        traffic::request(&mut s, "hello\n", Duration::from_secs(2))
            .map_err(|e| LabError::traffic(NAME, format!("first request: {e}")))?;
        let port = traffic::local_port(&s);
        // Each time the main thread has moved the VIP, send one line and report what happened.
        while from_main.recv().is_ok() {
            let t0 = Instant::now();
            let r = traffic::request(&mut s, "after vip move\n", Duration::from_secs(2));
            let failed = r.is_err();
            let _ = to_main.send((port, r, t0.elapsed()));
            if failed {
                break;
            }
        }
        Ok(())
    })?;
    std::thread::sleep(Duration::from_millis(300));
    let mut out = Outcome::default();
    let mut reset = None;
    let mut flushed_total = 0usize;
    for i in 0..MAX_MOVES {
        let node = &lab.topo().node;
        // keepalived: the VIP arrives, then leaves (RTM_NEWADDR, RTM_DELADDR on eth0).
        node.ip(&["addr", "add", VIP, "dev", "eth0"])?;
        std::thread::sleep(Duration::from_millis(200));
        node.ip(&["addr", "del", VIP, "dev", "eth0"])?;
        if !lab.mitigated {
            // The old kernel's masq_device_event/inet_cmp: every entry masqueraded out of eth0 goes.
            let listed = node
                .exec("conntrack", &["-L", "--src-nat"])
                .unwrap_or_default();
            flushed_total += listed.lines().filter(|l| l.contains("src=")).count();
            let _ = node.exec("conntrack", &["-D", "--src-nat"]);
        }
        std::thread::sleep(Duration::from_millis(100));
        if to_client.send(()).is_err() {
            break;
        }
        let Ok((port, r, took)) = from_client.recv_timeout(Duration::from_secs(5)) else {
            break;
        };
        match r {
            Ok(_) => out.event(format!(
                "VIP move {}: {CLIENT}:{port} → {REMOTE_IP}:{PORT} still answered ({:.1} ms)",
                i + 1,
                took.as_secs_f64() * 1e3
            )),
            Err(e) => {
                out.event(format!(
                    "VIP move {}: {CLIENT}:{port} → {REMOTE_IP}:{PORT}: {}",
                    i + 1,
                    traffic::errno_name(&e)
                ));
                reset = Some((i + 1, traffic::errno_name(&e)));
                break;
            }
        }
        if lab.mitigated {
            // One move shows the fixed kernel keeps the entry; more would only repeat it.
            break;
        }
    }
    drop(to_client);
    super::join(NAME, h)?;
    let entries = lab
        .topo()
        .node
        .exec(
            "conntrack",
            &["-L", "-p", "tcp", "--dport", &PORT.to_string()],
        )
        .unwrap_or_default();
    for l in entries.lines().filter(|l| l.contains("src=")) {
        out.event(format!("conntrack now: {}", l.trim()));
    }
    out.measure(
        "masqueraded conntrack entries deleted with the VIP (emulated old kernel)",
        flushed_total as f64,
        "",
    );
    match reset {
        Some((moves, err)) => {
            out.measure("VIP moves until the connection broke", moves as f64, "");
            out.symptom = Some(format!(
                "after the VIP {VIP} left eth0 the idle connection to {REMOTE_IP}:{PORT} got {err}: its next segment was masqueraded to {NODE_IP} with a new source port and the server reset it"
            ));
        }
        None => out.fine = format!("the connection to {REMOTE_IP}:{PORT} survived the VIP moving off eth0 (its conntrack entry stayed)"),
    }
    Ok(out)
}

//! [003] Several pods open connections at the same instant, all from the same source port, through
//! the node's SNAT to one server. SNAT picks a source port for each SYN before any of their conntrack
//! entries is confirmed; two SYNs that get the same port clash at insertion: the later one's insert
//! fails (`insert_failed`, `drop`), its SYN is dropped and the client retransmits it a second later.
//!
//! Each round sends two SYNs into a two-port SNAT range, so nothing is exhausted: every lost SYN is
//! a clash. Rounds repeat (each to a fresh server address, so earlier rounds' entries never collide)
//! until a clash shows or the time budget is spent; measured here it shows in the first rounds.

use crate::error::{LabError, Result};
use crate::kube::Rules;
use crate::lab::{Lab, ObservePlan, Outcome};
use crate::topology::{Machine, Topology, NODE_IP, REMOTE_IP};
use crate::traffic::{self, addr, Behaviour, ConnectOpts};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const NAME: &str = netsleuth_core::detect::snat_port_clash::INCIDENT.id;
/// SYNs per round.
const CLIENTS: usize = 2;
/// Client pods; each round takes the next pair. SNAT's starting point in the port range depends on
/// the source address (stable within a run), so a given pair may never collide; with three pods and
/// two ports, some pair always shares its starting point.
const PODS: usize = 3;
const PAIRS: [(usize, usize); 3] = [(0, 1), (0, 2), (1, 2)];
const SNAT_PORTS: &str = "40000-40001";
const SERVER_NET: &str = "10.200.0.0/16";
const SERVER_PORT: u16 = 9000;
const MAX_ROUNDS: u16 = 400;
/// The mitigated run shows the same simultaneous connects, fewer times (a clash is then a 1-in-10⁴
/// event per round, and 40 rounds of captures would only bloat the fixtures).
const MITIGATED_ROUNDS: u16 = 10;
const BUDGET: Duration = Duration::from_secs(16);
/// Inside the SNAT range: SNAT first tries to keep a source port that is in range and free, and a
/// SYN whose twin is not yet confirmed sees it free, so simultaneous SYNs from the same port pick the
/// same one (the seed's "same starting point of the port search").
const SOURCE_PORT: u16 = 40000;

pub fn run(lab: &mut Lab) -> Result<Outcome> {
    let mut t = Topology::new()?;
    t.add_remote(false)?;
    for i in 0..PODS {
        t.add_pod(
            &format!("client{i}"),
            Ipv4Addr::new(10, 244, 1, 11 + i as u8),
            Machine::Node,
        )?;
    }
    lab.set_topology(t);
    let snat = if lab.mitigated {
        format!("-j SNAT --to-source {NODE_IP} --random-fully")
    } else {
        format!("-j SNAT --to-source {NODE_IP}:{SNAT_PORTS}")
    };
    lab.apply_rules(&Rules {
        extra_postrouting: vec![format!(
            "-s 10.244.0.0/16 -o eth0 -p tcp -m comment --comment \"ip-masq-agent\" {snat}"
        )],
        ..Default::default()
    })?;
    // One server, many addresses (the remote answers for all of 10.200.0.0/16): each round goes to
    // a fresh destination, so earlier rounds' entries never collide, and SNAT's port choice, which
    // depends on the addresses, starts afresh.
    lab.topo()
        .remote()
        .ip(&["route", "add", "local", SERVER_NET, "dev", "lo"])?;
    lab.topo()
        .node
        .ip(&["route", "add", SERVER_NET, "via", &REMOTE_IP.to_string()])?;
    let server = traffic::serve(
        lab.topo().remote(),
        "server",
        addr(Ipv4Addr::UNSPECIFIED, SERVER_PORT),
        128,
        Behaviour::Echo,
    )?;
    // The client pods are renamed client0.. ; the first one's view is the "client view".
    lab.observe(ObservePlan {
        node_role: "node",
        client_role: Some("client0"),
        client_iface: "eth0",
        // SYNs (and any RST) only: hundreds of rounds of full conversations would overflow the
        // capture before the clash; the SYNs are the evidence.
        filter: Some(
            "tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn or tcp[tcpflags] & tcp-rst != 0",
        ),
    })?;

    let started = Instant::now();
    let mut out = Outcome::default();
    let mut slow = Vec::new();
    let mut rounds = 0;
    for r in 0..MAX_ROUNDS {
        rounds += 1;
        let dst = addr(
            Ipv4Addr::new(10, 200, (r / 250) as u8, (r % 250 + 1) as u8),
            SERVER_PORT,
        );
        let go = Arc::new(AtomicBool::new(false));
        let ready = Arc::new(AtomicUsize::new(0));
        let mut handles = Vec::new();
        let (p, q) = PAIRS[r as usize % PAIRS.len()];
        for i in [p, q] {
            let (go, ready) = (Arc::clone(&go), Arc::clone(&ready));
            let ns = &lab.topo().pod(&format!("client{i}")).ns;
            let src = addr(Ipv4Addr::new(10, 244, 1, 11 + i as u8), SOURCE_PORT);
            handles.push(ns.spawn("client", move || {
                // Everything but the SYN happens before the start signal.
                let sock = traffic::prepare(ConnectOpts {
                    bind: Some(src),
                    ..Default::default()
                });
                ready.fetch_add(1, Ordering::SeqCst);
                // Spin, not sleep: the SYNs must leave within microseconds of each other.
                while !go.load(Ordering::Acquire) {
                    std::hint::spin_loop();
                }
                let t0 = Instant::now();
                let r = sock
                    .and_then(|p| p.connect(dst, Duration::from_millis(3500)))
                    .and_then(|mut s| traffic::request(&mut s, "hi\n", Duration::from_secs(2)));
                Ok((src, r.map(|_| ()), t0.elapsed()))
            })?);
        }
        while ready.load(Ordering::SeqCst) < CLIENTS {
            std::thread::yield_now();
        }
        go.store(true, Ordering::Release);
        for h in handles {
            let (src, result, took) = super::join(NAME, h)?;
            match result {
                Err(e) => {
                    return Err(LabError::traffic(
                        NAME,
                        format!("{src} → {dst}: {e} after {:.1} s", took.as_secs_f64()),
                    ));
                }
                Ok(()) if took >= Duration::from_millis(900) => {
                    out.event(format!(
                        "round {r}: {src} → {dst} connected after {:.2} s (SYN retransmitted)",
                        took.as_secs_f64()
                    ));
                    slow.push(took);
                }
                Ok(()) => {}
            }
        }
        if !lab.mitigated && !slow.is_empty() {
            break;
        }
        if (lab.mitigated && rounds >= MITIGATED_ROUNDS as u32) || started.elapsed() > BUDGET {
            break;
        }
    }
    drop(server);
    out.measure("rounds of simultaneous connects", rounds as f64, "");
    out.measure("clients per round", CLIENTS as f64, "");
    out.measure(
        "connects delayed by a SYN retransmission",
        slow.len() as f64,
        "",
    );
    if let Some(max) = slow.iter().max() {
        out.measure("slowest connect", max.as_secs_f64(), "s");
        out.symptom = Some(format!(
            "{} connect(s) took ≥ 1 s ({:.2} s) in round {rounds} of simultaneous connects by {CLIENTS} pods from one source port (SNAT range of two ports): the first SYN was dropped at conntrack insertion after SNAT gave it a port another SYN had just taken, and was retransmitted",
            slow.len(),
            max.as_secs_f64()
        ));
    } else {
        out.fine = format!("{} connects in {rounds} rounds of {CLIENTS} simultaneous SYNs all completed without a retransmission", rounds * CLIENTS as u32);
    }
    Ok(out)
}

//! [issue 15] kube-proxy in IPVS mode on a kernel before 5.9 with `conn_reuse_mode=1`: a client that
//! reuses its source port toward a ClusterIP while the previous connection is still in IPVS's
//! TIME_WAIT loses that connection's first SYN and connects a second later.
//!
//! This kernel has no IPVS module (and since 5.9 IPVS no longer drops that SYN): the Service is
//! kube-proxy-style DNAT with its ClusterIP bound on kube-ipvs0, and [`IPVS_REUSE_RULES`] plays the old
//! IPVS's drop in the node's prerouting, before conntrack: the first SYN on a client address:port that
//! had a connection to the service within IPVS's 120 s TIME_WAIT is dropped, its retransmission
//! passes.

use crate::error::Result;
use crate::kube::Service;
use crate::lab::{Lab, Outcome};
use crate::scene::{Recorded, Scene};
use crate::traffic::{self, addr, Behaviour, ConnectOpts};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 30);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 10);
const BACKEND_A: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 11);
const BACKEND_B: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 12);
/// The client port the pod reuses (as `curl --local-port`, or a client cycling through few ports).
const REUSED_PORT: u16 = 45000;
const ROUNDS: usize = 3;
/// Longer than the emulation's memory of a rescheduled port (1.5 s), so every reuse is a new one.
const PAUSE: Duration = Duration::from_millis(1700);

/// The old IPVS's drop, in nft: a SYN to the ClusterIP from an address:port seen toward it within
/// 120 s (IPVS's TIME_WAIT; every packet refreshes it) is dropped once; its retransmission (within
/// 1.5 s) passes and is scheduled afresh.
fn ipvs_reuse_rules() -> String {
    format!(
        "table ip netsleuth_ipvs {{
\tset conns {{ type ipv4_addr . inet_service; flags dynamic,timeout; timeout 120s; }}
\tset rescheduled {{ type ipv4_addr . inet_service; flags dynamic,timeout; timeout 1500ms; }}
\tchain prerouting {{
\t\ttype filter hook prerouting priority -300; policy accept;
\t\tip daddr {VIP} tcp dport 80 tcp flags & (syn | ack) == syn ip saddr . tcp sport @conns ip saddr . tcp sport != @rescheduled add @rescheduled {{ ip saddr . tcp sport }} counter drop comment \"emulated IPVS conn_reuse_mode=1 before 5.9: first SYN of a reused port dropped\"
\t\tip daddr {VIP} tcp dport 80 update @conns {{ ip saddr . tcp sport }}
\t}}
}}
"
    )
}

pub fn run(lab: &mut Lab) -> Result<Recorded> {
    let mitigated = lab.mitigated;
    let mut scene = Scene::new()
        .pod("client", CLIENT)
        .remote_pod("backend-a", BACKEND_A)
        .remote_pod("backend-b", BACKEND_B)
        .service(Service::new(
            "default/web:http",
            VIP,
            80,
            "tcp",
            &[(BACKEND_A, 8080), (BACKEND_B, 8080)],
        ))
        // The backends close first (HTTP/1.0): the client's side has no TIME_WAIT and may reuse its port.
        .serve("backend-a", 8080, Behaviour::RespondAndClose { bytes: 256 })
        .serve("backend-b", 8080, Behaviour::RespondAndClose { bytes: 256 })
        .capture_filter("tcp");
    if !mitigated {
        scene = scene.nft("node", "ipvs-conn-reuse.nft", ipvs_reuse_rules());
    }
    let mut net = lab.build(scene)?;
    // IPVS binds every ClusterIP on the kube-ipvs0 dummy device.
    if net
        .node()
        .ip(&["link", "add", "kube-ipvs0", "type", "dummy"])
        .is_err()
    {
        // Kernels without the dummy driver: a port-less bridge holds the address the same way.
        net.node()
            .ip(&["link", "add", "kube-ipvs0", "type", "bridge"])?;
        net.note("this kernel has no dummy driver; kube-ipvs0 is a port-less bridge holding the ClusterIP");
    }
    net.node()
        .ip(&["addr", "add", &format!("{VIP}/32"), "dev", "kube-ipvs0"])?;
    net.emulated_sysctl("net.ipv4.vs.conntrack", "1");
    net.emulated_sysctl("net.ipv4.vs.conn_reuse_mode", "1");
    net.emulated_sysctl("net.ipv4.vs.expire_nodest_conn", "0");
    let live = net.observe()?;

    // Each round: a connection from a fresh port, then one from the reused port (its previous
    // connection closed by the backend within the last seconds).
    let results = live.run("client", move || {
        let mut results = Vec::new();
        for round in 0..=ROUNDS {
            for reuse in [false, true] {
                if round == 0 && !reuse {
                    continue;
                }
                let bind = reuse.then_some(addr(CLIENT, REUSED_PORT));
                let t0 = Instant::now();
                let r = traffic::connect(
                    addr(VIP, 80),
                    Duration::from_secs(4),
                    ConnectOpts {
                        bind,
                        ..Default::default()
                    },
                )
                .and_then(|mut s| {
                    let connected = t0.elapsed();
                    let syns_again = traffic::total_retransmissions(&s).unwrap_or(0);
                    let port = traffic::local_port(&s);
                    traffic::request(&mut s, "GET / HTTP/1.0\r\n\r\n", Duration::from_secs(2))?;
                    let mut sink = [0u8; 1024];
                    while matches!(std::io::Read::read(&mut s, &mut sink), Ok(n) if n > 0) {}
                    Ok((port, connected, syns_again))
                });
                results.push((round, reuse, r.map_err(|e| traffic::errno_name(&e))));
            }
            std::thread::sleep(PAUSE);
        }
        Ok(results)
    })?;

    let mut out = Outcome::default();
    let mut slow_reused = Vec::new();
    let mut slow_fresh = 0;
    for (round, reuse, r) in &results {
        match r {
            Ok((port, took, again)) => {
                out.event(format!(
                    "round {round}: {} port {port} → {VIP}:80 connected in {:.1} ms ({} SYN(s))",
                    if *reuse { "reused" } else { "fresh" },
                    took.as_secs_f64() * 1e3,
                    again + 1
                ));
                if *again > 0 {
                    if *reuse && *round > 0 {
                        slow_reused.push(*took);
                    } else {
                        slow_fresh += 1;
                    }
                }
            }
            Err(e) => out.event(format!("round {round}: connect to {VIP}:80: {e}")),
        }
    }
    out.measure("connects from the reused port", (ROUNDS + 1) as f64, "");
    out.measure(
        "reused-port connects that lost their first SYN",
        slow_reused.len() as f64,
        "",
    );
    out.measure(
        "fresh-port connects that lost their first SYN",
        slow_fresh as f64,
        "",
    );
    match slow_reused.iter().max() {
        Some(max) if slow_fresh == 0 => {
            out.measure("slowest reused-port connect", max.as_secs_f64(), "s");
            out.symptom = Some(format!(
                "{} of {ROUNDS} connects from the reused port {CLIENT}:{REUSED_PORT} to the ClusterIP {VIP}:80 took ≥ 1 s ({:.2} s): their first SYN was dropped, as IPVS with conn_reuse_mode=1 on kernels before 5.9 does while the port's previous connection is in its TIME_WAIT; connects from fresh ports were immediate",
                slow_reused.len(),
                max.as_secs_f64()
            ));
        }
        Some(_) => {
            out.symptom = Some(format!(
                "{slow_fresh} connect(s) from fresh ports lost a SYN too: the drops are not only the reused port's"
            ));
        }
        None => {
            out.fine = format!(
                "every connect to {VIP}:80, from fresh ports and from the reused port {REUSED_PORT}, completed with its first SYN"
            )
        }
    }
    Ok(live.finish(out))
}

//! [003] A burst of connects reaches a listener whose accept queue is small and which does not keep
//! up: once the queue is full the kernel drops SYNs (ListenOverflows, ListenDrops in the server
//! pod's namespace), clients retransmit them, and probes with a short timeout fail.

use crate::error::Result;
use crate::lab::{Lab, ObservePlan, Outcome};
use crate::topology::{Machine, Topology};
use crate::traffic::{self, addr, Behaviour};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

const NAME: &str = netsleuth_core::detect::listen_queue_overflow::INCIDENT.id;
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 10);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 20);
const BURST: usize = 20;
const PROBE_TIMEOUT: Duration = Duration::from_millis(2500);

pub fn run(lab: &mut Lab) -> Result<Outcome> {
    let mut t = Topology::new()?;
    t.add_pod("client", CLIENT, Machine::Node)?;
    t.add_pod("server", SERVER, Machine::Node)?;
    lab.set_topology(t);
    let backlog = if lab.mitigated { 128 } else { 2 };
    // The app is stuck (a GC pause, a full worker pool): it accepts nothing during the burst.
    let _srv = traffic::serve(
        &lab.topo().pod("server").ns,
        "server",
        addr(Ipv4Addr::UNSPECIFIED, 8080),
        backlog,
        Behaviour::NeverAccept,
    )?;
    lab.observe(ObservePlan {
        node_role: "node",
        client_role: Some("client"),
        client_iface: "eth0",
        filter: None,
    })?;

    let h = lab.topo().pod("client").ns.spawn("client", move || {
        Ok(connect_burst(addr(SERVER, 8080), BURST, PROBE_TIMEOUT))
    })?;
    let results = super::join(NAME, h)?;
    let server_ns = &lab.topo().pod("server").ns;
    let netstat = server_ns.proc_net("netstat").unwrap_or_default();
    let m = crate::counters::parse_proc_net_pairs(&netstat);
    let overflows = m.get("TcpExt.ListenOverflows").copied().unwrap_or(0);
    let drops = m.get("TcpExt.ListenDrops").copied().unwrap_or(0);

    let mut out = Outcome::default();
    let failed: Vec<_> = results.iter().filter(|r| r.1.is_err()).collect();
    let slow = results
        .iter()
        .filter(|r| r.1.is_ok() && r.2 >= Duration::from_millis(900))
        .count();
    for (i, r, took) in &results {
        if let Err(e) = r {
            out.event(format!(
                "probe {i}: {CLIENT} → {SERVER}:8080 {} after {:.1} s",
                e,
                took.as_secs_f64()
            ));
        }
    }
    out.measure("listen backlog", backlog as f64, "");
    out.measure("burst of connects", BURST as f64, "");
    out.measure("probes failed (connect timeout)", failed.len() as f64, "");
    out.measure("probes slowed ≥ 1 s (SYN retransmitted)", slow as f64, "");
    out.measure("TcpExt.ListenOverflows (server pod)", overflows as f64, "");
    out.measure("TcpExt.ListenDrops (server pod)", drops as f64, "");
    if !failed.is_empty() || slow > 0 {
        out.symptom = Some(format!(
            "{} of {BURST} probes to {SERVER}:8080 timed out after {:.1} s and {slow} needed a SYN retransmission; the server pod counted ListenOverflows={overflows} ListenDrops={drops} (backlog {backlog})",
            failed.len(),
            PROBE_TIMEOUT.as_secs_f64()
        ));
    } else {
        out.fine = format!("all {BURST} connects completed at once (backlog {backlog}, ListenOverflows={overflows})");
    }
    Ok(out)
}

/// Starts `n` non-blocking connects at once and waits for each up to `timeout`:
/// (index, Ok or error text, time to connect or give up).
fn connect_burst(
    dst: std::net::SocketAddrV4,
    n: usize,
    timeout: Duration,
) -> Vec<(usize, std::result::Result<(), String>, Duration)> {
    // One thread per connect, each waiting on its own socket; the sockets stay open until the whole
    // burst is over, as concurrent probes would.
    let handles: Vec<_> = (0..n)
        .map(|i| {
            std::thread::spawn(move || {
                let t0 = Instant::now();
                let r = traffic::connect(dst, timeout, Default::default());
                let took = t0.elapsed();
                if r.is_ok() {
                    std::thread::sleep(timeout.saturating_sub(took));
                }
                (i, r.map(drop).map_err(|e| traffic::errno_name(&e)), took)
            })
        })
        .collect();
    let mut out: Vec<_> = handles.into_iter().filter_map(|h| h.join().ok()).collect();
    out.sort_by_key(|r| r.0);
    out
}

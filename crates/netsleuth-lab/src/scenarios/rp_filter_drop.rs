//! A node with two links to the same neighbour and strict reverse-path filtering. Connections whose
//! source is routed back through the other link arrive on `eth1`, fail the reverse-path check
//! (`rp_filter` = max(all, eth1) = 1) and are dropped silently; the same source over `eth0`, and
//! `eth1`'s own subnet over `eth1`, are answered.
//!
//! ```text
//!   node eth0 192.168.50.10 ══ 192.168.50.20 eth0 remote     route back to 192.168.60.0/24: via eth0
//!   node eth1 192.168.51.10 ══ 192.168.51.20 eth1 remote     client 192.168.60.5 (on the remote's lo)
//! ```

use crate::error::Result;
use crate::lab::{Lab, Outcome};
use crate::scene::{Recorded, Scene};
use crate::topology::{NODE_IP, REMOTE_IP};
use crate::traffic::{self, addr, Behaviour, ConnectOpts};
use std::net::Ipv4Addr;
use std::time::Duration;

const NODE_ETH1: Ipv4Addr = Ipv4Addr::new(192, 168, 51, 10);
const REMOTE_ETH1: Ipv4Addr = Ipv4Addr::new(192, 168, 51, 20);
/// A client address behind the remote node (its loopback: a second NIC's, a VIP's).
const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 168, 60, 5);
const PORT: u16 = 8080;
/// eth1's own subnet is checked on another service of the node, so that no capture shows one
/// listener answering one source and not another (that picture is local-source-drop's).
const OTHER_PORT: u16 = 8081;
const NODE_ETH1_MAC: &str = "02:00:c0:a8:33:0a";
const CONNECTS: usize = 3;
/// One SYN retransmission (at 1 s) fits before the connect gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(1500);

pub fn run(lab: &mut Lab) -> Result<Recorded> {
    let mode = if lab.mitigated { "2" } else { "1" };
    let net = lab.build(
        Scene::new()
            .remote()
            .sysctl("node", "net.ipv4.conf.all.rp_filter", mode)
            .sysctl("node", "net.ipv4.conf.default.rp_filter", mode)
            .sysctl("remote", "net.ipv4.conf.all.rp_filter", "0")
            .serve("node", PORT, Behaviour::RespondAndClose { bytes: 200 })
            .serve(
                "node",
                OTHER_PORT,
                Behaviour::RespondAndClose { bytes: 200 },
            )
            .client_view("remote", "eth1")
            .server_view("node"),
    )?;
    let node = net.node();
    let remote = net.ns("remote")?;
    node.ip(&[
        "link",
        "add",
        "eth1",
        "address",
        NODE_ETH1_MAC,
        "type",
        "veth",
        "peer",
        "name",
        "eth1",
        "netns",
        remote.name(),
    ])?;
    node.ip(&["addr", "add", &format!("{NODE_ETH1}/24"), "dev", "eth1"])?;
    node.ip(&["link", "set", "eth1", "up"])?;
    node.sysctl("net.ipv4.conf.eth1.rp_filter", mode)?;
    remote.ip(&["addr", "add", &format!("{REMOTE_ETH1}/24"), "dev", "eth1"])?;
    remote.ip(&["link", "set", "eth1", "up"])?;
    remote.ip(&["addr", "add", &format!("{CLIENT}/32"), "dev", "lo"])?;
    // The node answers no ARP request whose sender address fails the same reverse-path check, so the
    // remote knows the node's eth1 address statically (as a router with a static or learned entry
    // would): what the filter drops is then the SYNs themselves, not the address resolution.
    remote.ip(&[
        "neigh",
        "replace",
        &NODE_ETH1.to_string(),
        "lladdr",
        NODE_ETH1_MAC,
        "dev",
        "eth1",
        "nud",
        "permanent",
    ])?;
    // The node's way back to the client's network is eth0; the remote reaches the node's eth1
    // subnet directly on eth1, whatever the source: an asymmetric path.
    node.ip(&[
        "route",
        "add",
        "192.168.60.0/24",
        "via",
        &REMOTE_IP.to_string(),
        "dev",
        "eth0",
    ])?;
    let live = net.observe()?;

    let tries = move |from: Ipv4Addr, to: Ipv4Addr, port: u16| {
        (0..CONNECTS)
            .map(|i| {
                let t0 = std::time::Instant::now();
                let r = traffic::connect(
                    addr(to, port),
                    CONNECT_TIMEOUT,
                    ConnectOpts {
                        bind: Some(addr(from, 0)),
                        ..Default::default()
                    },
                )
                .and_then(|mut s| {
                    traffic::request(
                        &mut s,
                        &format!("GET /{i} HTTP/1.0\r\n\r\n"),
                        Duration::from_secs(2),
                    )
                });
                let took = t0.elapsed();
                match r {
                    Ok(_) if took < Duration::from_millis(900) => (
                        format!(
                            "{from} → {to}:{port} answered in {:.1} ms",
                            took.as_secs_f64() * 1e3
                        ),
                        true,
                    ),
                    Ok(_) => (
                        format!(
                            "{from} → {to}:{port} answered only after {:.2} s",
                            took.as_secs_f64()
                        ),
                        false,
                    ),
                    Err(e) => (
                        format!("{from} → {to}:{port} failed: {}", traffic::errno_name(&e)),
                        false,
                    ),
                }
            })
            .collect::<Vec<_>>()
    };
    let results = live.run("remote", move || {
        Ok([
            (
                "asymmetric (in on eth1, route back via eth0)",
                tries(CLIENT, NODE_ETH1, PORT),
            ),
            ("symmetric over eth0", tries(CLIENT, NODE_IP, PORT)),
            (
                "eth1's own subnet over eth1",
                tries(REMOTE_ETH1, NODE_ETH1, OTHER_PORT),
            ),
        ])
    })?;
    let mut out = Outcome::default();
    let mut failed = [0usize; 3];
    for (k, (path, v)) in results.iter().enumerate() {
        for (e, ok) in v {
            out.event(format!("{path}: {e}"));
            failed[k] += usize::from(!ok);
        }
        out.measure(
            format!("failed or slow connects, {path}"),
            failed[k] as f64,
            "",
        );
    }
    let others = failed[1] + failed[2];
    if failed[0] > 0 && others == 0 {
        out.symptom = Some(format!(
            "{} of {CONNECTS} connects from {CLIENT} to {NODE_ETH1} (in on eth1, route back via eth0) timed out, while {CLIENT} over eth0 and {REMOTE_ETH1} over eth1 were answered: strict rp_filter (all={mode}) dropped the asymmetric path",
            failed[0]
        ));
    } else if failed.iter().all(|f| *f == 0) {
        out.fine = format!(
            "all {} connects answered, the asymmetric one too (rp_filter {mode}: loose)",
            3 * CONNECTS
        );
    } else {
        out.symptom = Some(format!(
            "unexpected: failed connects per path (asymmetric, eth0, eth1) = {failed:?}"
        ));
    }
    Ok(live.finish(out))
}

//! Two nodes joined by a VXLAN overlay (flannel's `flannel.1`, UDP 8472, as in overlay-mtu-blackhole).
//! Emulated: the remote node's VXLAN packets leave with a wrong non-zero outer UDP checksum, as a
//! kernel before 5.7 (ea64d8d6c675) writes them when it NATs its own VXLAN packets with tx checksum
//! offload on; the node drops them at its UDP checksum check (UDP InCsumErrors, drop reason UDP_CSUM)
//! before decapsulation, so the server pod's SYN-ACKs never reach the client pod and its connects
//! stall. The mitigated run sends the same traffic without the corruption (what a fixed kernel, or
//! `ethtool -K flannel.1 tx-checksum-ip-generic off` on the old one, puts on the wire).

use crate::error::Result;
use crate::lab::{Lab, Outcome};
use crate::scene::{Recorded, Scene};
use crate::topology::{NODE_IP, REMOTE_IP};
use crate::traffic::{self, addr, Behaviour, ConnectOpts};
use std::net::Ipv4Addr;
use std::time::Duration;

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 11);
const CLIENT: Ipv4Addr = super::DNS_CLIENT;
const REQUESTS: usize = 2;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const CSUM_TABLE: &str = "netsleuth_vxlan_csum";
/// What the emulated bug writes into the outer UDP checksum (any non-zero wrong value does).
pub(crate) const BAD_CHECKSUM: &str = "0xbad1";

pub fn run(lab: &mut Lab) -> Result<Recorded> {
    let scene = Scene::new()
        .pod("client", CLIENT)
        .remote_pod("web", SERVER)
        .serve("web", 8080, Behaviour::RespondAndClose { bytes: 200 })
        .server_view("web");
    let mitigated = lab.mitigated;
    let mut scene = scene;
    if !mitigated {
        // The emulated bug: the remote node's own VXLAN datagrams leave with a non-zero outer UDP
        // checksum where the device wrote 0 (none), as the old kernel's NAT "updated" it.
        scene = scene.nft(
            "remote",
            "vxlan-bad-checksum.nft",
            format!(
                "table ip {CSUM_TABLE} {{\n\tchain postrouting {{\n\t\ttype filter hook postrouting priority 300; policy accept;\n\
                 \t\tudp dport 8472 udp checksum set {BAD_CHECKSUM} counter comment \"emulated: pre-5.7 NAT of a zero VXLAN checksum\"\n\t}}\n}}\n"
            ),
        );
    }
    let net = lab.build(scene)?;
    super::flannel_vxlan(
        net.node(),
        NODE_IP,
        REMOTE_IP,
        "10.244.250.1",
        "10.244.250.2",
        "10.244.2.0/24",
    )?;
    let remote = net.ns("remote")?;
    super::flannel_vxlan(
        remote,
        REMOTE_IP,
        NODE_IP,
        "10.244.250.2",
        "10.244.250.1",
        "10.244.1.0/24",
    )?;
    // The receiving kernel treats a packet whose inner checksum is still left to offload
    // (CHECKSUM_PARTIAL, which a veth hands over as is) as verified: the remote node computes its
    // checksums itself, so the node verifies the outer one as a node behind a real NIC does. Both runs.
    remote.exec("ethtool", &["-K", "flannel.1", "tx", "off"])?;
    // flannel programs each peer's VTEP address as a permanent neighbour (no ARP across the overlay):
    // the pod traffic is then the first thing the tunnel carries.
    let mac = |ns: &crate::netns::Netns| -> Result<String> {
        let shown = ns.read(&["ip", "-o", "link", "show", "flannel.1"])?;
        Ok(shown
            .split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .unwrap_or_default()
            .to_string())
    };
    let (node_mac, remote_mac) = (mac(net.node())?, mac(remote)?);
    for (ns, peer, peer_mac) in [
        (net.node(), "10.244.250.2", &remote_mac),
        (remote, "10.244.250.1", &node_mac),
    ] {
        ns.ip(&[
            "neigh",
            "replace",
            peer,
            "lladdr",
            peer_mac,
            "dev",
            "flannel.1",
            "nud",
            "permanent",
        ])?;
    }
    let mut live = net.observe()?;
    live.note(if mitigated {
        "the remote node's VXLAN packets leave with outer UDP checksum 0 (none), as the device writes it".to_string()
    } else {
        format!("the remote node's VXLAN packets leave with outer UDP checksum {BAD_CHECKSUM} instead of 0 (an nft rule in its postrouting), as an old kernel's NAT of its own VXLAN packets with tx offload writes a wrong one")
    });
    let results = live.run("client", move || {
        Ok((0..REQUESTS)
            .map(|i| {
                let t0 = std::time::Instant::now();
                let r =
                    traffic::connect(addr(SERVER, 8080), CONNECT_TIMEOUT, ConnectOpts::default())
                        .and_then(|mut s| {
                            use std::io::{Read, Write};
                            s.write_all(format!("GET /{i} HTTP/1.0\r\n\r\n").as_bytes())?;
                            s.set_read_timeout(Some(CONNECT_TIMEOUT))?;
                            let mut body = Vec::new();
                            s.read_to_end(&mut body).map(|_| body.len())
                        });
                (r.map_err(|e| traffic::errno_name(&e)), t0.elapsed())
            })
            .collect::<Vec<_>>())
    })?;
    let mut out = Outcome::default();
    let mut stalled = 0;
    for (r, took) in &results {
        match r {
            Ok(n) => out.event(format!(
                "GET from {SERVER}:8080 (on the remote node) → {n} bytes in {:.2} s",
                took.as_secs_f64()
            )),
            Err(e) => {
                stalled += 1;
                out.event(format!(
                    "GET from {SERVER}:8080 (on the remote node) → {e} after {:.2} s",
                    took.as_secs_f64()
                ))
            }
        }
    }
    out.measure("connections that stalled", stalled as f64, "");
    if stalled > 0 {
        out.symptom = Some(format!(
            "{stalled} of {REQUESTS} connections from {CLIENT} to {SERVER}:8080 on the other node stalled: the server's packets came back in VXLAN with a wrong outer UDP checksum and the node dropped them before decapsulation"
        ));
    } else {
        out.fine = format!(
            "all {REQUESTS} requests from {CLIENT} to {SERVER}:8080 on the other node were answered through the VXLAN overlay"
        );
    }
    Ok(live.finish(out))
}

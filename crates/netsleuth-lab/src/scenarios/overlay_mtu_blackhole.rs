//! Two nodes joined by a VXLAN overlay (flannel's `flannel.1`, UDP 8472, MTU 1450 = the underlay's
//! 1500 less 50) while the pods keep MTU 1500. The server pod's full-size segments cannot leave its
//! node through the overlay; the node's ICMP "fragmentation needed" back to the pod is dropped (a
//! firewall that drops ICMP), so the server never learns the path MTU: the request goes through, the
//! large response stalls. The mitigated run lets the ICMP through: the path MTU adapts (the healthy
//! look-alike: frag-needed present, transfer completes).

use crate::error::Result;
use crate::lab::{Lab, Outcome};
use crate::scene::{Recorded, Scene};
use crate::topology::{NODE_IP, REMOTE_IP};
use crate::traffic::{self, addr, Behaviour, ConnectOpts};
use std::net::Ipv4Addr;
use std::time::Duration;

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 11);
const CLIENT: Ipv4Addr = super::DNS_CLIENT;
const RESPONSE_BYTES: usize = 6000;
const REQUESTS: usize = 2;
const READ_TIMEOUT: Duration = Duration::from_secs(3);
const ICMP_TABLE: &str = "netsleuth_drop_frag_needed";

pub fn run(lab: &mut Lab) -> Result<Recorded> {
    let mut scene = Scene::new()
        .pod("client", CLIENT)
        .remote_pod("web", SERVER)
        .serve(
            "web",
            8080,
            Behaviour::RespondAndClose {
                bytes: RESPONSE_BYTES,
            },
        )
        .server_view("web")
        // The incident happens on the server's node, where the response should enter the overlay:
        // that node's `-i any` (and its collected state) is the node view.
        .record_node("remote");
    if !lab.mitigated {
        // A firewall on the server's node that drops ICMP "fragmentation needed" it would send.
        scene = scene.nft(
            "remote",
            "drop-frag-needed.nft",
            format!(
                "table ip {ICMP_TABLE} {{\n\tchain output {{\n\t\ttype filter hook output priority 0; policy accept;\n\
                 \t\ticmp type destination-unreachable icmp code frag-needed counter drop comment \"ICMP blocked\"\n\t}}\n}}\n"
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
    super::flannel_vxlan(
        net.ns("remote")?,
        REMOTE_IP,
        NODE_IP,
        "10.244.250.2",
        "10.244.250.1",
        "10.244.1.0/24",
    )?;
    let link = net
        .node()
        .read(&["ip", "-o", "link", "show", "flannel.1"])
        .unwrap_or_default();
    let mtu: String = link
        .split_whitespace()
        .skip_while(|w| *w != "mtu")
        .nth(1)
        .unwrap_or("?")
        .to_string();
    let mut live = net.observe()?;
    live.note(format!(
        "flannel.1 (VXLAN over eth0) has MTU {}; the pods' eth0 keep 1500",
        mtu.trim()
    ));
    let results = live.run("client", move || {
        Ok((0..REQUESTS)
            .map(|i| {
                let t0 = std::time::Instant::now();
                let r = traffic::connect(
                    addr(SERVER, 8080),
                    Duration::from_secs(2),
                    ConnectOpts::default(),
                )
                .and_then(|mut s| {
                    use std::io::{Read, Write};
                    s.write_all(format!("GET /{i} HTTP/1.0\r\n\r\n").as_bytes())?;
                    s.set_read_timeout(Some(READ_TIMEOUT))?;
                    // The whole response, up to the server's close.
                    let mut body = Vec::new();
                    match s.read_to_end(&mut body) {
                        Ok(_) => Ok(body.len()),
                        Err(e) if body.is_empty() => Err(e),
                        Err(_) => Ok(body.len()),
                    }
                });
                (r.map_err(|e| traffic::errno_name(&e)), t0.elapsed())
            })
            .collect::<Vec<_>>())
    })?;
    let mut out = Outcome::default();
    let mut stalled = 0;
    for (r, took) in &results {
        match r {
            Ok(n) if *n >= RESPONSE_BYTES => out.event(format!(
                "GET from {SERVER}:8080 → {n} bytes in {:.2} s",
                took.as_secs_f64()
            )),
            Ok(n) => {
                stalled += 1;
                out.event(format!(
                    "GET from {SERVER}:8080 → only {n} of {RESPONSE_BYTES} bytes in {:.2} s",
                    took.as_secs_f64()
                ))
            }
            Err(e) => {
                stalled += 1;
                out.event(format!("GET from {SERVER}:8080 → {e} after {:.2} s (connected, the response never came)", took.as_secs_f64()))
            }
        }
    }
    out.measure("responses that stalled", stalled as f64, "");
    if stalled > 0 {
        out.symptom = Some(format!(
            "{stalled} of {REQUESTS} responses of {RESPONSE_BYTES} bytes from {SERVER} never arrived: the connection and the request went through, the full-size response segments did not fit flannel.1's MTU {} and the ICMP that would say so was dropped",
            mtu.trim()
        ));
    } else {
        out.fine = format!(
            "all {REQUESTS} responses of {RESPONSE_BYTES} bytes arrived: the ICMP fragmentation-needed reached the server and its path MTU adapted to flannel.1's {}",
            mtu.trim()
        );
    }
    Ok(live.finish(out))
}

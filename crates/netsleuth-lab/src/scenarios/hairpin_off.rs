//! A pod that backs a Service connects to that Service. kube-proxy's DNAT picks a backend at random;
//! when it picks the pod itself, the bridge (with bridge-nf-call-iptables=1, so the DNAT happens while
//! the frame is being bridged) must send the frame back out of the port it came in on, which it does
//! only with hairpin mode on that port. It is off: the SYN vanishes and the pod's connect times out,
//! for that pod only, about half the time. Another pod reaches the same Service without trouble.

use crate::error::{LabError, Result};
use crate::kube::Service;
use crate::lab::{Lab, Outcome};
use crate::scene::{Recorded, Scene};
use crate::traffic::{self, addr, Behaviour, ConnectOpts};
use std::net::Ipv4Addr;
use std::time::Duration;

const NAME: &str = "hairpin-off";
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 40);
/// The pod that backs the Service and also calls it.
const SELF_POD: Ipv4Addr = super::DNS_CLIENT;
const OTHER_BACKEND: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 11);
const PEER: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 12);
const CONNECTS: usize = 8;
/// DNAT picks the pod itself with probability ½ per connect: all of `CONNECTS` went to the other
/// backend once in 256 runs, and then the run showed nothing (a CI run's watch named nothing so).
/// The pod goes on connecting, one at a time, until one of its connects has been lost, or this
/// many (2⁻²⁴ to see none); each one answered at once takes a millisecond.
const MAX_OWN_CONNECTS: usize = 24;
/// One SYN retransmission (at 1 s) fits before the connect gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(1500);
/// A connect this slow waited for a SYN retransmission.
const SLOW_CONNECT: Duration = Duration::from_millis(900);

pub fn run(lab: &mut Lab) -> Result<Recorded> {
    let scene = Scene::new()
        .pod("client", SELF_POD)
        .pod("web-b", OTHER_BACKEND)
        .pod("peer", PEER)
        .service(Service::new(
            "default/web:http",
            VIP,
            80,
            "tcp",
            &[(SELF_POD, 8080), (OTHER_BACKEND, 8080)],
        ))
        // The bridge hands frames to iptables (kubenet and the bridge CNI need it for Services).
        .sysctl("node", "net.bridge.bridge-nf-call-iptables", "1")
        // One TCP timestamp clock per client host (no per-connection random offset, as before 4.10):
        // with random offsets a lost SYN's TSval is "behind" the last answered one half the time,
        // and a client-side capture of a few such drops would read as tw-recycle-paws by chance.
        .sysctl("client", "net.ipv4.tcp_timestamps", "2")
        .sysctl("peer", "net.ipv4.tcp_timestamps", "2")
        .serve("client", 8080, Behaviour::RespondAndClose { bytes: 200 })
        .serve("web-b", 8080, Behaviour::RespondAndClose { bytes: 200 })
        .server_view("web-b");
    let mitigated = lab.mitigated;
    let net = lab.build(scene)?;
    let port = net
        .host_veth("client")
        .ok_or_else(|| LabError::traffic(NAME, "the client pod has no bridge port"))?
        .to_string();
    let hairpin = if mitigated { "on" } else { "off" };
    // Explicit, so the run records the state it tests (off is the kernel's default for a new port).
    net.node().ip(&[
        "link",
        "set",
        &port,
        "type",
        "bridge_slave",
        "hairpin",
        hairpin,
    ])?;
    let mut live = net.observe()?;
    live.note(format!(
        "bridge port {port} (the client pod's veth on cni0) has hairpin mode {hairpin}"
    ));

    // `until_lost`: past `CONNECTS`, go on until a connect has been lost (`MAX_OWN_CONNECTS`).
    let call = |label: &'static str, until_lost: bool| {
        move || -> Result<Vec<(String, bool)>> {
            let mut v: Vec<(String, bool)> = Vec::new();
            for i in 0.. {
                let lost = v.iter().any(|(_, ok)| !ok);
                let more = until_lost && !lost && i < MAX_OWN_CONNECTS;
                if i >= CONNECTS && !more {
                    break;
                }
                let t0 = std::time::Instant::now();
                let connected =
                    traffic::connect(addr(VIP, 80), CONNECT_TIMEOUT, ConnectOpts::default());
                let took = t0.elapsed();
                let r = connected.and_then(|mut s| {
                    traffic::request(
                        &mut s,
                        &format!("GET /{i} HTTP/1.0\r\n\r\n"),
                        Duration::from_secs(2),
                    )
                });
                v.push(match r {
                    // A first SYN lost at the bridge and its retransmission balanced elsewhere: late.
                    Ok(_) if took >= SLOW_CONNECT => (
                        format!("{label}: connect {i} to {VIP}:80 answered after {:.2} s (the first SYN was lost)", took.as_secs_f64()),
                        false,
                    ),
                    Ok(_) => (format!("{label}: connect {i} to {VIP}:80 answered in {:.1} ms", took.as_secs_f64() * 1e3), true),
                    Err(e) => (
                        format!("{label}: connect {i} to {VIP}:80 failed: {}", traffic::errno_name(&e)),
                        false,
                    ),
                });
            }
            Ok(v)
        }
    };
    let own = live.run("client", call("client (a backend of the Service)", true))?;
    let peer = live.run("peer", call("peer", false))?;

    let mut out = Outcome::default();
    for (e, _) in own.iter().chain(&peer) {
        out.event(e.clone());
    }
    let own_failed = own.iter().filter(|(_, ok)| !ok).count();
    let peer_failed = peer.iter().filter(|(_, ok)| !ok).count();
    out.measure(
        "client connects to its own Service that failed or waited ≥ 0.9 s",
        own_failed as f64,
        "",
    );
    out.measure(
        "peer connects to the Service that failed or waited ≥ 0.9 s",
        peer_failed as f64,
        "",
    );
    if own_failed > 0 {
        out.symptom = Some(format!(
            "{own_failed} of {} connects from {SELF_POD} (a backend of {VIP}:80) to its own Service timed out or waited for a SYN retransmission, while {} of {CONNECTS} from {PEER} were answered at once: DNAT chose {SELF_POD} itself and the bridge did not send the SYN back out of port {port} (hairpin off)",
            own.len(),
            CONNECTS - peer_failed
        ));
    } else {
        out.fine = format!(
            "all {} connects from {SELF_POD} to its own Service and {} of {CONNECTS} from {PEER} were answered",
            own.len(),
            CONNECTS - peer_failed
        );
    }
    Ok(live.finish(out))
}

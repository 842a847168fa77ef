//! [issue 15] A client pod opens one short connection per request to one server and closes each
//! first, so each closed connection stays in the pod's TIME_WAIT for 60 s. Its namespace has a narrow
//! `ip_local_port_range` (10 ports, as a container runtime or a hand-tuned sysctl can leave it): after
//! ten requests every 4-tuple toward the server is taken and connect() fails with EADDRNOTAVAIL,
//! without a packet on the wire.
//!
//! Everything is this kernel's own behaviour: no emulation.

use crate::error::Result;
use crate::lab::{Lab, Outcome};
use crate::scene::{Recorded, Scene};
use crate::topology::REMOTE_IP;
use crate::traffic::{self, addr, Behaviour, ConnectOpts};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

const PORT: u16 = 80;
/// Ten ports: the range the incident run gives the client pod.
const NARROW_RANGE: &str = "40000 40009";
/// Linux's default range: the fix.
const WIDE_RANGE: &str = "32768 60999";
const REQUESTS: usize = 14;

pub fn run(lab: &mut Lab) -> Result<Recorded> {
    let range = if lab.mitigated {
        WIDE_RANGE
    } else {
        NARROW_RANGE
    };
    let net = lab.build(
        Scene::new()
            .remote()
            .pod("client", Ipv4Addr::new(10, 244, 1, 10))
            .sysctl("client", "net.ipv4.ip_local_port_range", range)
            .serve("remote", PORT, Behaviour::Echo)
            .capture_filter("tcp"),
    )?;
    let live = net.observe()?;

    let results = live.run("client", move || {
        let mut results = Vec::new();
        for _ in 0..REQUESTS {
            let t0 = Instant::now();
            let r = traffic::connect(
                addr(REMOTE_IP, PORT),
                Duration::from_secs(3),
                ConnectOpts::default(),
            )
            .and_then(|mut s| {
                let port = traffic::local_port(&s);
                traffic::request(&mut s, "GET /\n", Duration::from_secs(2))?;
                // The client closes first: this 4-tuple stays in the pod's TIME_WAIT for 60 s.
                drop(s);
                Ok(port)
            });
            results.push((r.map_err(|e| traffic::errno_name(&e)), t0.elapsed()));
        }
        Ok(results)
    })?;

    let mut out = Outcome::default();
    let mut ports = std::collections::BTreeSet::new();
    let mut failed = Vec::new();
    for (i, (r, took)) in results.iter().enumerate() {
        match r {
            Ok(port) => {
                ports.insert(*port);
                out.event(format!(
                    "request {}: connected from port {port} to {REMOTE_IP}:{PORT} in {:.1} ms, closed by the client",
                    i + 1,
                    took.as_secs_f64() * 1e3
                ));
            }
            Err(e) => {
                out.event(format!("request {}: connect(): {e}", i + 1));
                failed.push((i + 1, e.clone()));
            }
        }
    }
    out.measure("requests", REQUESTS as f64, "");
    out.measure("distinct source ports used", ports.len() as f64, "");
    out.measure("failed connects", failed.len() as f64, "");
    let addr_unavailable = failed.iter().filter(|(_, e)| e == "EADDRNOTAVAIL").count();
    match failed.first() {
        Some((n, e)) if addr_unavailable > 0 => {
            out.symptom = Some(format!(
                "connect() to {REMOTE_IP}:{PORT} failed with {e} from request {n} on ({addr_unavailable} of {REQUESTS} failed): the pod's ip_local_port_range {range} has {} ports and each was held by a connection it had closed (TIME_WAIT, 60 s)",
                ports.len()
            ));
        }
        Some((n, e)) => {
            out.symptom = Some(format!(
                "request {n} failed with {e} (not EADDRNOTAVAIL: something else broke the run)"
            ));
        }
        None => {
            out.fine = format!(
                "{REQUESTS} requests to {REMOTE_IP}:{PORT} each connected from its own port ({} ports used of ip_local_port_range {range})",
                ports.len()
            )
        }
    }
    Ok(live.finish(out))
}

//! [003] With `tcp_tw_recycle=1`, a server that closed a connection first remembers the peer IP's
//! last TCP timestamp and silently drops later SYNs from that IP whose TSval is behind it (per-host
//! PAWS). Pods behind one node's SNAT share the node IP but not their timestamp clocks: the pod whose
//! clock is behind cannot connect.
//!
//! The check no longer exists (removed in 4.12): [`PawsEmulator`] plays the old kernel in the server's
//! namespace.

use crate::emulate::PawsEmulator;
use crate::error::{LabError, Result};
use crate::lab::{Lab, Outcome};
use crate::scene::{Recorded, Scene};
use crate::topology::{NODE_IP, REMOTE_IP};
use crate::traffic::{self, addr, Behaviour, ConnectOpts};
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const NAME: &str = netsleuth_core::detect::tw_recycle_paws::INCIDENT.id;
const PORT: u16 = 80;
/// Each attempt after the first (nothing remembered yet) is blocked with probability ½ (below):
/// with 12 attempts, fewer than `BLOCKED_ATTEMPTS` were blocked about once in 170 runs, and the run
/// then proved nothing; with 24, once in ~350,000. A served attempt takes milliseconds, and the
/// run stops at the second blocked one.
const MAX_ATTEMPTS: usize = 24;
const MITIGATED_ATTEMPTS: usize = 6;
const CONNECT_TIMEOUT: Duration = Duration::from_millis(4500);
/// Blocked connects the run waits for: one is a coin toss (this kernel gives each connection its own
/// timestamp offset), two from one address are a pattern the server side can see.
const BLOCKED_ATTEMPTS: usize = 2;

pub fn run(lab: &mut Lab) -> Result<Recorded> {
    let mut net = lab.build(
        Scene::new()
            .remote()
            .pod("client-a", Ipv4Addr::new(10, 244, 1, 11))
            .pod("client-b", Ipv4Addr::new(10, 244, 1, 12))
            .postrouting("-s 10.244.0.0/16 ! -d 10.244.0.0/16 -m comment --comment \"ip-masq-agent\" -j MASQUERADE")
            .serve("remote", PORT, Behaviour::RespondAndClose { bytes: 512 })
            // The server's node is the one with the incident.
            .record_node("remote")
            // The client side as its node sees it (`-i any`): both pods before SNAT and their
            // connections after it, so the hosts behind the one SNAT address are on the wire.
            .client_view("node", "any")
            .capture_filter("tcp"),
    )?;
    let mitigated = net.mitigated;
    net.emulated_sysctl("net.ipv4.tcp_tw_recycle", if mitigated { "0" } else { "1" });
    let emulator = if mitigated {
        None
    } else {
        Some(PawsEmulator::start(net.ns("remote")?, PORT)?)
    };
    let live = net.observe()?;

    // Pods take turns, each connection answered and closed first by the server (TIME_WAIT there).
    // This kernel gives every connection its own random timestamp offset, so each new connection's
    // TSval is behind the remembered one with probability 1/2; the old kernel then dropped its SYNs.
    let mut out = Outcome::default();
    // The pods keep taking turns until BLOCKED_ATTEMPTS connects were blocked: the server side then
    // sees the drops repeat for the one SNAT address.
    let mut blocked = None;
    let mut blocked_attempts = 0;
    let mut served = 0u64;
    for attempt in 0..MAX_ATTEMPTS {
        let role = if attempt % 2 == 0 {
            "client-a"
        } else {
            "client-b"
        };
        if let Some(e) = &emulator {
            if served > 0
                && !crate::record::wait_until(Duration::from_secs(3), || {
                    e.installed.load(Ordering::SeqCst) >= served
                })
            {
                return Err(LabError::traffic(
                    NAME,
                    "the PAWS emulation saw no server-side close",
                ));
            }
        }
        let (r, took) = live.run(role, move || {
            let t0 = Instant::now();
            let r = traffic::connect(
                addr(REMOTE_IP, PORT),
                CONNECT_TIMEOUT,
                ConnectOpts::default(),
            )
            .and_then(|mut s| {
                let tsval = traffic::tcp_timestamp(&s);
                traffic::request(&mut s, "GET / HTTP/1.0\r\n\r\n", Duration::from_secs(2))?;
                // Read to EOF before closing: the server's FIN must come first, so that its side
                // goes to TIME_WAIT, where tw_recycle remembered the peer's timestamp.
                let mut sink = [0u8; 1024];
                while matches!(std::io::Read::read(&mut s, &mut sink), Ok(n) if n > 0) {}
                Ok(tsval)
            });
            Ok((r.map_err(|e| traffic::errno_name(&e)), t0.elapsed()))
        })?;
        match r {
            Ok(ts) => {
                served += 1;
                out.event(format!(
                "attempt {}: {role} → {REMOTE_IP}:{PORT} (SNAT {NODE_IP}) served in {:.1} ms, TS clock {}; server closed first",
                attempt + 1,
                took.as_secs_f64() * 1e3,
                ts.map(|t| t.to_string()).unwrap_or_else(|| "?".into())
            ))
            }
            Err(e) => {
                out.event(format!(
                    "attempt {}: {role} → {REMOTE_IP}:{PORT}: {e} after {:.1} s",
                    attempt + 1,
                    took.as_secs_f64()
                ));
                blocked = Some((role, e, took));
                blocked_attempts += 1;
                if blocked_attempts >= BLOCKED_ATTEMPTS {
                    break;
                }
            }
        }
        if mitigated && attempt + 1 >= MITIGATED_ATTEMPTS {
            break;
        }
    }
    let dropped = emulator.as_ref().map(|e| e.dropped()).unwrap_or(0);
    drop(emulator);
    out.measure(
        "emulated TcpExt.PAWSPassive (SYNs dropped)",
        dropped as f64,
        "",
    );
    match blocked {
        Some((role, e, took)) => {
            out.measure("blocked connect", took.as_secs_f64(), "s");
            out.measure("blocked connects", blocked_attempts as f64, "");
            out.symptom = Some(format!(
                "{blocked_attempts} connects from the pods behind {NODE_IP} to {REMOTE_IP}:{PORT} were blocked (the last, from {role}: {e} after {:.1} s; {dropped} SYNs dropped silently): each TSval was behind the one the server remembered for {NODE_IP} from the previous pod's connection",
                took.as_secs_f64()
            ));
        }
        None => {
            out.fine = format!(
                "every connection from the pods behind {NODE_IP} to {REMOTE_IP}:{PORT} was served"
            )
        }
    }
    Ok(live.finish(out))
}

//! [issue 15] Two pods leave through the node's SNAT with one address and port; the server closes each
//! connection first and holds TIME_WAIT. The node's conntrack forgets a closed connection after 1 s
//! (as NAT gateways that reuse ports sooner than the server's 60 s TIME_WAIT do), so the next pod's SYN
//! leaves with the same address and port. When that pod's timestamp clock is behind the other's, the
//! server's TIME_WAIT socket rejects the SYN on PAWS (TcpExt PAWSTimewait on ≥ 6.16, PAWSEstab before) and answers with a bare ACK of
//! the old connection; the pod resets it and connects on its SYN retransmission.
//!
//! Everything is this kernel's own behaviour: no emulation. The retransmission comes after the 1 s
//! initial RTO on client kernels before 5.6; since 9603d47bad46 a client retransmits 2 jiffies after
//! such an ACK, so here the delay is milliseconds: the symptom is the second SYN itself (TCP_INFO
//! `tcpi_total_retrans` of the connected socket) and the server's PAWS counter.

use crate::error::Result;
use crate::lab::{Lab, Outcome};
use crate::scene::{Recorded, Scene};
use crate::topology::{NODE_IP, REMOTE_IP};
use crate::traffic::{self, addr, Behaviour, ConnectOpts};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

const PORT: u16 = 80;
/// The one source port SNAT gives every pod's connection.
const SNAT_PORT: u16 = 40000;
const MAX_ATTEMPTS: usize = 8;
const MITIGATED_ATTEMPTS: usize = 4;
/// Longer than the node's conntrack TIME_WAIT timeout (1 s): the SNAT port is free again.
const PAUSE: Duration = Duration::from_millis(1300);

pub fn run(lab: &mut Lab) -> Result<Recorded> {
    let mitigated = lab.mitigated;
    let snat = if mitigated {
        // The fix: ports enough that none is reused while the server may hold TIME_WAIT, and
        // conntrack's own TIME_WAIT timeout (120 s) above the server's 60 s.
        format!("-j SNAT --to-source {NODE_IP} --random-fully")
    } else {
        format!("-j SNAT --to-source {NODE_IP}:{SNAT_PORT}")
    };
    let mut scene = Scene::new()
        .remote()
        .pod("client", Ipv4Addr::new(10, 244, 1, 10))
        .pod("client-b", Ipv4Addr::new(10, 244, 1, 12))
        .postrouting(format!(
            "-s 10.244.0.0/16 ! -d 10.244.0.0/16 -p tcp -m comment --comment \"ip-masq-agent\" {snat}"
        ))
        .serve("remote", PORT, Behaviour::RespondAndClose { bytes: 512 })
        // Either pod may be the one whose clock is behind: the node's bridge sees both before SNAT.
        .client_view("node", "cni0")
        .capture_filter("tcp");
    if !mitigated {
        scene = scene.sysctl(
            "node",
            "net.netfilter.nf_conntrack_tcp_timeout_time_wait",
            "1",
        );
    }
    let net = lab.build(scene)?;
    let live = net.observe()?;

    // Pods take turns; each connection is answered and closed first by the server (TIME_WAIT
    // there). The two pods' timestamp clocks have unrelated offsets (per address pair), so one of
    // any two consecutive connections from different pods carries a TSval behind the other's.
    let mut out = Outcome::default();
    let paws_before = live.run("remote", || Ok(paws_rejects()))?;
    let mut slow = None;
    let attempts = if mitigated {
        MITIGATED_ATTEMPTS
    } else {
        MAX_ATTEMPTS
    };
    for attempt in 0..attempts {
        let role = if attempt % 2 == 0 {
            "client"
        } else {
            "client-b"
        };
        if attempt > 0 {
            std::thread::sleep(PAUSE);
        }
        let (r, took) = live.run(role, move || {
            let t0 = Instant::now();
            let r = traffic::connect(
                addr(REMOTE_IP, PORT),
                Duration::from_secs(4),
                ConnectOpts::default(),
            )
            .and_then(|mut s| {
                let connected = t0.elapsed();
                let syns_again = traffic::total_retransmissions(&s).unwrap_or(0);
                let tsval = traffic::tcp_timestamp(&s);
                traffic::request(&mut s, "GET / HTTP/1.0\r\n\r\n", Duration::from_secs(2))?;
                // Read to EOF before closing: the server's FIN comes first, its side holds TIME_WAIT.
                let mut sink = [0u8; 1024];
                while matches!(std::io::Read::read(&mut s, &mut sink), Ok(n) if n > 0) {}
                Ok((connected, syns_again, tsval))
            });
            Ok((r.map_err(|e| traffic::errno_name(&e)), t0.elapsed()))
        })?;
        match r {
            Ok((connected, syns_again, ts)) => {
                out.event(format!(
                    "attempt {}: {role} → {REMOTE_IP}:{PORT} (SNAT {NODE_IP}{}) connected in {:.1} ms with {} SYN(s), TS clock {}; server closed first",
                    attempt + 1,
                    if mitigated { String::new() } else { format!(":{SNAT_PORT}") },
                    connected.as_secs_f64() * 1e3,
                    syns_again + 1,
                    ts.map(|t| t.to_string()).unwrap_or_else(|| "?".into())
                ));
                if syns_again > 0 {
                    slow = Some((role, connected, syns_again));
                    break;
                }
            }
            Err(e) => {
                out.event(format!(
                    "attempt {}: {role} → {REMOTE_IP}:{PORT}: {e} after {:.1} s",
                    attempt + 1,
                    took.as_secs_f64()
                ));
            }
        }
    }
    let paws_after = live.run("remote", || Ok(paws_rejects()))?;
    let paws = paws_after
        .zip(paws_before)
        .map(|(a, b)| a.saturating_sub(b));
    if let Some(p) = paws {
        out.measure(
            "server TIME_WAIT PAWS rejects (TcpExt PAWSTimewait, or PAWSEstab before 6.16)",
            p as f64,
            "",
        );
    }
    out.measure("connects", out.events.len() as f64, "");
    match slow {
        Some((role, took, syns_again)) => {
            out.measure("connect with a second SYN", took.as_secs_f64(), "s");
            out.symptom = Some(format!(
                "{role}'s connect to {REMOTE_IP}:{PORT} needed {} SYNs ({:.1} ms; client kernels before 5.6 wait 1 s): its SYN, sent from {NODE_IP}:{SNAT_PORT} like the other pod's connection just before it, met the server's TIME_WAIT with an older timestamp and was answered by a bare ACK (server PAWS rejects +{})",
                syns_again + 1,
                took.as_secs_f64() * 1e3,
                paws.map(|p| p.to_string()).unwrap_or_else(|| "?".into())
            ));
        }
        None => {
            out.fine = format!(
                "every connection from the pods behind {NODE_IP} to {REMOTE_IP}:{PORT} connected with its first SYN (server PAWS rejects +{})",
                paws.map(|p| p.to_string()).unwrap_or_else(|| "?".into())
            )
        }
    }
    Ok(live.finish(out))
}

/// SYNs rejected by PAWS in TIME_WAIT so far in the calling thread's namespace: TcpExt PAWSTimewait
/// where the kernel has it (≥ 6.16), else PAWSEstab, which counted them before.
fn paws_rejects() -> Option<u64> {
    traffic::tcp_ext_counter("PAWSTimewait").or_else(|| traffic::tcp_ext_counter("PAWSEstab"))
}

//! [003] With `tcp_tw_recycle=1`, a server that closed a connection first remembers the peer IP's
//! last TCP timestamp and silently drops later SYNs from that IP whose TSval is behind it (per-host
//! PAWS). Pods behind one node's SNAT share the node IP but not their timestamp clocks: the pod whose
//! clock is behind cannot connect.
//!
//! The check no longer exists (removed in 4.12), so a watcher thread in the server's namespace plays
//! the old kernel: it reads the server's packets (AF_PACKET), and when the server sends the first FIN
//! of a connection it installs an nft rule dropping SYNs from that peer IP whose TSval is more than
//! TCP_PAWS_WINDOW (1) behind the last TSval the peer sent.

use crate::error::{LabError, Result};
use crate::kube::Rules;
use crate::lab::{Lab, ObservePlan, Outcome};
use crate::netns::Netns;
use crate::topology::{Machine, Topology, NODE_IP, REMOTE_IP};
use crate::traffic::{self, addr, Behaviour, ConnectOpts};
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const NAME: &str = netsleuth_core::detect::tw_recycle_paws::INCIDENT.id;
const PORT: u16 = 80;
const MAX_ATTEMPTS: usize = 12;
const MITIGATED_ATTEMPTS: usize = 6;
const CONNECT_TIMEOUT: Duration = Duration::from_millis(4500);
const TABLE: &str = "netsleuth_tw_recycle";

pub fn run(lab: &mut Lab) -> Result<Outcome> {
    let mut t = Topology::new()?;
    t.add_remote(false)?;
    t.add_pod("client-a", Ipv4Addr::new(10, 244, 1, 11), Machine::Node)?;
    t.add_pod("client-b", Ipv4Addr::new(10, 244, 1, 12), Machine::Node)?;
    lab.set_topology(t);
    lab.apply_rules(&Rules {
        extra_postrouting: vec!["-s 10.244.0.0/16 ! -d 10.244.0.0/16 -m comment --comment \"ip-masq-agent\" -j MASQUERADE".into()],
        ..Default::default()
    })?;
    let server = lab.topo().remote();
    let _web = traffic::serve(
        server,
        "server",
        addr(Ipv4Addr::UNSPECIFIED, PORT),
        128,
        Behaviour::RespondAndClose { bytes: 512 },
    )?;

    lab.emulated_sysctl(
        "net.ipv4.tcp_tw_recycle",
        if lab.mitigated { "0" } else { "1" },
    );
    let emulator = if lab.mitigated {
        None
    } else {
        Some(PawsEmulator::start(lab.topo().remote())?)
    };
    lab.observe(ObservePlan {
        node_role: "remote",
        // Either pod may be the one blocked: the node's bridge sees both before SNAT.
        client_role: Some("node"),
        client_iface: "cni0",
        filter: Some("tcp"),
    })?;

    // Pods take turns, each connection answered and closed first by the server (TIME_WAIT there).
    // This kernel gives every connection its own random timestamp offset, so each new connection's
    // TSval is behind the remembered one with probability 1/2; the old kernel then dropped its SYNs.
    let mut out = Outcome::default();
    let mut blocked = None;
    for attempt in 0..MAX_ATTEMPTS {
        let role = if attempt % 2 == 0 {
            "client-a"
        } else {
            "client-b"
        };
        if let Some(e) = &emulator {
            if attempt > 0
                && !crate::record::wait_until(Duration::from_secs(3), || {
                    e.installed.load(Ordering::SeqCst) >= attempt as u64
                })
            {
                return Err(LabError::traffic(
                    NAME,
                    "the PAWS emulation saw no server-side close",
                ));
            }
        }
        let h = lab.topo().pod(role).ns.spawn("client", move || {
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
        let (r, took) = super::join(NAME, h)?;
        match r {
            Ok(ts) => out.event(format!(
                "attempt {}: {role} → {REMOTE_IP}:{PORT} (SNAT {NODE_IP}) served in {:.1} ms, TS clock {}; server closed first",
                attempt + 1,
                took.as_secs_f64() * 1e3,
                ts.map(|t| t.to_string()).unwrap_or_else(|| "?".into())
            )),
            Err(e) => {
                out.event(format!("attempt {}: {role} → {REMOTE_IP}:{PORT}: {e} after {:.1} s", attempt + 1, took.as_secs_f64()));
                blocked = Some((role, e, took));
                break;
            }
        }
        if lab.mitigated && attempt + 1 >= MITIGATED_ATTEMPTS {
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
            out.symptom = Some(format!(
                "{role} could not connect to {REMOTE_IP}:{PORT} ({e} after {:.1} s, {dropped} SYNs dropped silently): its TSval was behind the one the server remembered for {NODE_IP} from the previous pod's connection",
                took.as_secs_f64()
            ));
        }
        None => {
            out.fine = format!(
                "every connection from the pods behind {NODE_IP} to {REMOTE_IP}:{PORT} was served"
            )
        }
    }
    Ok(out)
}

/// The old kernel's per-host PAWS check, played by a packet watcher and nft in the server namespace.
struct PawsEmulator {
    stop: Arc<AtomicBool>,
    installed: Arc<AtomicU64>,
    ns_name: String,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl PawsEmulator {
    fn start(ns: &Netns) -> Result<PawsEmulator> {
        let stop = Arc::new(AtomicBool::new(false));
        let installed = Arc::new(AtomicU64::new(0));
        let (s, inst) = (Arc::clone(&stop), Arc::clone(&installed));
        let ns_name = ns.name().to_string();
        let name = ns_name.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = ns.spawn("paws", move || {
            // ETH_P_ALL: only "all protocols" taps see outgoing packets (the server's FIN).
            let fd = unsafe {
                libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_DGRAM,
                    (libc::ETH_P_ALL as u16).to_be() as i32,
                )
            };
            if fd < 0 {
                let e = std::io::Error::last_os_error();
                let _ = ready_tx.send(false);
                return Err(LabError::io("AF_PACKET socket for the PAWS emulation", e));
            }
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 20_000,
            };
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&tv as *const libc::timeval).cast(),
                    std::mem::size_of::<libc::timeval>() as u32,
                )
            };
            let _ = ready_tx.send(true);
            let mut last_ts: HashMap<(Ipv4Addr, u16), u32> = HashMap::new();
            let mut peer_fin: HashMap<(Ipv4Addr, u16), bool> = HashMap::new();
            let mut pending: Option<(Ipv4Addr, u16, Instant)> = None;
            let mut buf = [0u8; 2048];
            while !s.load(Ordering::SeqCst) {
                let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
                let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
                let n = unsafe {
                    libc::recvfrom(
                        fd,
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        0,
                        (&mut sll as *mut libc::sockaddr_ll).cast(),
                        &mut len,
                    )
                };
                if n > 0 && u16::from_be(sll.sll_protocol) == libc::ETH_P_IP as u16 {
                    if let Some(seg) = parse_tcp(&buf[..n as usize]) {
                        let outgoing = sll.sll_pkttype == libc::PACKET_OUTGOING;
                        if !outgoing && seg.dport == PORT {
                            let key = (seg.src, seg.sport);
                            if let Some(ts) = seg.tsval {
                                last_ts.insert(key, ts);
                            }
                            if seg.fin {
                                peer_fin.insert(key, true);
                            }
                        } else if outgoing && seg.sport == PORT && seg.fin {
                            let key = (seg.dst, seg.dport);
                            // The server closes first: its socket will sit in TIME_WAIT and (with
                            // tw_recycle) remember the peer's timestamp.
                            if !peer_fin.get(&key).copied().unwrap_or(false) {
                                pending = Some((
                                    seg.dst,
                                    seg.dport,
                                    Instant::now() + Duration::from_millis(50),
                                ));
                            }
                        }
                    }
                }
                if let Some((peer, pport, due)) = pending {
                    if Instant::now() >= due {
                        pending = None;
                        if let Some(&ts) = last_ts.get(&(peer, pport)) {
                            install_rule(&name, peer, ts)?;
                            inst.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            }
            unsafe { libc::close(fd) };
            Ok(())
        })?;
        if !ready_rx
            .recv_timeout(Duration::from_secs(2))
            .unwrap_or(false)
        {
            return Err(LabError::traffic(
                NAME,
                "the PAWS emulation could not open its packet socket",
            ));
        }
        Ok(PawsEmulator {
            stop,
            installed,
            ns_name,
            thread: Some(thread),
        })
    }

    /// SYNs the emulated check dropped (the old kernel's TcpExt.PAWSPassive).
    fn dropped(&self) -> u64 {
        let listing =
            crate::cmd::in_netns(&self.ns_name, "nft", &["list", "table", "ip", TABLE], None)
                .unwrap_or_default();
        listing
            .split("counter packets ")
            .skip(1)
            .filter_map(|r| {
                r.split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
            })
            .sum()
    }
}

impl Drop for PawsEmulator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Drops SYNs from `peer` to the server port whose TSval is behind `remembered` by more than the PAWS
/// window: (s32)(remembered - tsval) > 1, i.e. tsval in [remembered - 2³¹ + 1, remembered - 2] (mod 2³²).
fn install_rule(ns: &str, peer: Ipv4Addr, remembered: u32) -> Result<()> {
    let lo = remembered.wrapping_sub(0x7fff_ffff);
    let hi = remembered.wrapping_sub(2);
    let ranges: Vec<(u32, u32)> = if lo <= hi {
        vec![(lo, hi)]
    } else {
        vec![(lo, u32::MAX), (0, hi)]
    };
    let mut rules = String::new();
    for (a, b) in ranges {
        rules.push_str(&format!(
            "\t\tip saddr {peer} tcp dport {PORT} tcp flags & (syn | ack) == syn tcp option timestamp tsval {a}-{b} counter drop comment \"emulated tcp_tw_recycle PAWS: TSval behind {remembered}\"\n"
        ));
    }
    let text = format!(
        "table ip {TABLE} {{\n\tchain input {{\n\t\ttype filter hook input priority 0; policy accept;\n{rules}\t}}\n}}\n"
    );
    let _ = crate::cmd::in_netns(ns, "nft", &["delete", "table", "ip", TABLE], None);
    crate::cmd::in_netns(ns, "nft", &["-f", "-"], Some(&text)).map(|_| ())
}

struct Segment {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    fin: bool,
    tsval: Option<u32>,
}

/// IPv4 + TCP header of a packet (from the IP header on, as SOCK_DGRAM packet sockets deliver it).
fn parse_tcp(p: &[u8]) -> Option<Segment> {
    if p.len() < 20 || p[0] >> 4 != 4 || p[9] != 6 {
        return None;
    }
    let ihl = (p[0] & 0x0f) as usize * 4;
    let t = p.get(ihl..)?;
    if t.len() < 20 {
        return None;
    }
    let doff = (t[12] >> 4) as usize * 4;
    let opts = t.get(20..doff.min(t.len()))?;
    let mut tsval = None;
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            0 => break,
            1 => i += 1,
            kind => {
                let len = *opts.get(i + 1)? as usize;
                if len < 2 {
                    break;
                }
                if kind == 8 && len == 10 {
                    let v = opts.get(i + 2..i + 6)?;
                    tsval = Some(u32::from_be_bytes([v[0], v[1], v[2], v[3]]));
                }
                i += len;
            }
        }
    }
    Some(Segment {
        src: Ipv4Addr::new(p[12], p[13], p[14], p[15]),
        dst: Ipv4Addr::new(p[16], p[17], p[18], p[19]),
        sport: u16::from_be_bytes([t[0], t[1]]),
        dport: u16::from_be_bytes([t[2], t[3]]),
        fin: t[13] & 0x01 != 0,
        tsval,
    })
}

//! Old kernel behaviour that this kernel no longer has, played faithfully on the wire for the
//! scenarios whose reproduction is emulated (`Reproduction::Emulated` says so in every run).

use crate::error::{LabError, Result};
use crate::netns::Netns;
use netsleuth_core::wire;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TABLE: &str = "netsleuth_tw_recycle";

/// `tcp_tw_recycle=1`'s per-host PAWS check (removed in 4.12), played in the server's namespace: a
/// watcher thread reads the server's packets (AF_PACKET), and when the server sends the first FIN of
/// a connection it installs an nft rule dropping SYNs from that peer IP whose TSval is more than
/// TCP_PAWS_WINDOW (1) behind the last TSval the peer sent.
pub struct PawsEmulator {
    stop: Arc<AtomicBool>,
    /// Rules installed so far (one per server-side close).
    pub installed: Arc<AtomicU64>,
    ns_name: String,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl PawsEmulator {
    /// Starts watching the server's packets in `ns` for a server listening on `port`.
    pub fn start(ns: &Netns, port: u16) -> Result<PawsEmulator> {
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
            let mut last_ts: HashMap<(IpAddr, u16), u32> = HashMap::new();
            let mut peer_fin: HashMap<(IpAddr, u16), bool> = HashMap::new();
            let mut pending: Option<(IpAddr, u16, Instant)> = None;
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
                    if let Some(seg) = tcp_segment(&buf[..n as usize]) {
                        let outgoing = sll.sll_pkttype == libc::PACKET_OUTGOING;
                        if !outgoing && seg.dport == port {
                            let key = (seg.src, seg.sport);
                            if let Some(ts) = seg.tsval {
                                last_ts.insert(key, ts);
                            }
                            if seg.fin {
                                peer_fin.insert(key, true);
                            }
                        } else if outgoing && seg.sport == port && seg.fin {
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
                            install_rule(&name, peer, port, ts)?;
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
                netsleuth_core::detect::tw_recycle_paws::INCIDENT.id,
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
    pub fn dropped(&self) -> u64 {
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
fn install_rule(ns: &str, peer: IpAddr, port: u16, remembered: u32) -> Result<()> {
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
            "\t\tip saddr {peer} tcp dport {port} tcp flags & (syn | ack) == syn tcp option timestamp tsval {a}-{b} counter drop comment \"emulated tcp_tw_recycle PAWS: TSval behind {remembered}\"\n"
        ));
    }
    let text = format!(
        "table ip {TABLE} {{\n\tchain input {{\n\t\ttype filter hook input priority 0; policy accept;\n{rules}\t}}\n}}\n"
    );
    let _ = crate::cmd::in_netns(ns, "nft", &["delete", "table", "ip", TABLE], None);
    crate::cmd::in_netns(ns, "nft", &["-f", "-"], Some(&text)).map(|_| ())
}

struct Segment {
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    fin: bool,
    tsval: Option<u32>,
}

/// The TCP segment of a packet as SOCK_DGRAM packet sockets deliver it (from the IP header on).
fn tcp_segment(p: &[u8]) -> Option<Segment> {
    let pkt = wire::decode(u32::from(wire::proto::LinkType::Raw), p).ok()?;
    let wire::Transport::Tcp(t) = pkt.transport else {
        return None;
    };
    Some(Segment {
        src: pkt.ip.src,
        dst: pkt.ip.dst,
        sport: t.src_port,
        dport: t.dst_port,
        fin: t.has(wire::tcp_flags::FIN),
        tsval: t.options.timestamp().map(|(v, _)| v),
    })
}

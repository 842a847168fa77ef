//! [issue 15, kubernetes #74839] A pod's connection to a ClusterIP is established; one reply segment
//! from the backend falls far outside the TCP window conntrack tracks. The node's conntrack marks it
//! INVALID, NAT skips it, and with no `--ctstate INVALID -j DROP` rule (kube-proxy before 1.15) it
//! reaches the client from the backend pod's own address. The client's kernel answers RST to that
//! address (its sequence number is the segment's ACK), the RST reaches the backend untranslated and
//! resets its socket, and the client's next request gets ECONNRESET.
//!
//! The out-of-window segment stands for a late retransmission or a reordered segment after heavy
//! loss: the backend's namespace sends it with a raw socket, its sequence number 1 GiB past what the
//! backend had sent and its ACK exactly what the backend had received (read from the backend's own
//! `eth0` with a packet socket). Everything after it — conntrack's INVALID verdict, the skipped
//! reverse NAT, the client's RST, the reset — is the running kernel's.

use crate::error::{LabError, Result};
use crate::kube::Service;
use crate::lab::{Lab, Outcome};
use crate::scene::{Recorded, Scene};
use crate::traffic::{self, addr, Behaviour, ConnectOpts};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const NAME: &str = netsleuth_core::detect::conntrack_invalid_reset::INCIDENT.id;
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 10);
const BACKEND: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 11);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 30);
const PORT: u16 = 8080;
/// How far past the backend's next sequence number the late segment claims to be.
const SEQ_JUMP: u32 = 1 << 30;

pub fn run(lab: &mut Lab) -> Result<Recorded> {
    let mitigated = lab.mitigated;
    let net = lab.build(
        Scene::new()
            .pod("client", CLIENT)
            .remote_pod("backend", BACKEND)
            .service(Service::new(
                "default/api:http",
                VIP,
                80,
                "tcp",
                &[(BACKEND, PORT)],
            ))
            .sysctl("node", "net.netfilter.nf_conntrack_tcp_be_liberal", "0")
            .serve("backend", PORT, Behaviour::Echo),
    )?;
    if !mitigated {
        // kube-proxy before 1.15 (kubernetes #74840) had no INVALID drop in KUBE-FORWARD.
        net.node().exec(
            "iptables",
            &[
                "-w",
                "-D",
                "KUBE-FORWARD",
                "-m",
                "conntrack",
                "--ctstate",
                "INVALID",
                "-j",
                "DROP",
            ],
        )?;
    }
    let mut net = net;
    net.note(if mitigated {
        "KUBE-FORWARD drops INVALID packets (kube-proxy ≥ 1.15)"
    } else {
        "the KUBE-FORWARD rule `-m conntrack --ctstate INVALID -j DROP` was deleted after the rules were loaded, as kube-proxy before 1.15 had none"
    });
    let live = net.observe()?;

    let (tx_forge, rx_forge) = mpsc::channel::<u16>();
    let (tx_done, rx_done) = mpsc::channel::<std::result::Result<String, String>>();
    let sniffer_ready = std::sync::Arc::new(std::sync::Barrier::new(2));
    let ready = std::sync::Arc::clone(&sniffer_ready);
    let backend = live.spawn("backend", move || {
        let mut sniffer = Sniffer::open("eth0")?;
        ready.wait();
        let client_port = sniffer.watch_until(&rx_forge)?;
        let r = match (sniffer.backend_next, sniffer.client_next) {
            (Some(snd_nxt), Some(rcv_nxt)) => {
                let seq = snd_nxt.wrapping_add(SEQ_JUMP);
                send_segment(BACKEND, PORT, CLIENT, client_port, seq, rcv_nxt, b"late segment\n")
                    .map(|_| format!("sent from {BACKEND}:{PORT} to {CLIENT}:{client_port}: seq {seq} (backend's next was {snd_nxt}), ack {rcv_nxt}"))
                    .map_err(|e| format!("sending the out-of-window segment: {e}"))
            }
            _ => Err(format!("the backend's eth0 showed no segment of the connection ({} packets read)", sniffer.seen)),
        };
        let _ = tx_done.send(r);
        Ok(())
    })?;
    sniffer_ready.wait();

    let results = live.run("client", move || {
        let mut s = traffic::connect(
            addr(VIP, 80),
            Duration::from_secs(3),
            ConnectOpts::default(),
        )
        .map_err(|e| LabError::traffic(NAME, format!("connect to {VIP}:80: {e}")))?;
        let port = traffic::local_port(&s);
        let first = traffic::request(&mut s, "hello\n", Duration::from_secs(2))
            .map_err(|e| LabError::traffic(NAME, format!("first request: {e}")))?;
        // Let the delayed ACK go out, so that the backend's eth0 shows where both sides are.
        std::thread::sleep(Duration::from_millis(300));
        let _ = tx_forge.send(port);
        let forged = rx_done
            .recv_timeout(Duration::from_secs(5))
            .map_err(|_| LabError::traffic(NAME, "the backend did not send its segment"))?
            .map_err(|e| LabError::traffic(NAME, e))?;
        std::thread::sleep(Duration::from_millis(500));
        let t = Instant::now();
        let after = traffic::request(&mut s, "after the late segment\n", Duration::from_secs(2));
        Ok((port, first, forged, after, t.elapsed()))
    })?;
    backend.join()?;
    let (port, first, forged, after, took) = results;

    let mut out = Outcome::default();
    out.event(format!(
        "{CLIENT}:{port} → {VIP}:80 established, first request answered by {}",
        first.trim()
    ));
    out.event(format!("out-of-window segment {forged}"));
    match &after {
        Ok(r) => out.event(format!(
            "request after it answered by {} in {:.1} ms",
            r.trim(),
            took.as_secs_f64() * 1e3
        )),
        Err(e) => out.event(format!("request after it: {}", traffic::errno_name(e))),
    }
    let reset = after
        .as_ref()
        .err()
        .is_some_and(|e| matches!(e.raw_os_error(), Some(libc::ECONNRESET) | Some(libc::EPIPE)));
    out.measure("connections reset", f64::from(u8::from(reset)), "");
    if reset {
        out.symptom = Some(format!(
            "one out-of-window reply on the established connection {CLIENT}:{port} → {VIP}:80 reached the client from {BACKEND}:{PORT} un-NATed; the client's RST reset the backend and the next request got {}",
            after.as_ref().err().map(traffic::errno_name).unwrap_or_default()
        ));
    } else {
        out.fine = format!(
            "the connection {CLIENT}:{port} → {VIP}:80 survived the out-of-window reply{}",
            if mitigated {
                " (dropped as INVALID on the node)"
            } else {
                ""
            }
        );
    }
    Ok(live.finish(out))
}

/// A packet socket on the backend's `eth0`, following the one TCP connection on the backend's port:
/// where each side's sequence numbers have got to.
struct Sniffer {
    fd: OwnedFd,
    backend_next: Option<u32>,
    client_next: Option<u32>,
    /// Packets read, for the error when the connection's were not among them.
    seen: u64,
}

impl Sniffer {
    fn open(iface: &str) -> Result<Sniffer> {
        // ETH_P_ALL: outgoing packets reach only the taps of every protocol; other protocols (ARP)
        // are told apart by the IP version nibble below.
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket calls; the fd is owned from here on, buffers passed with their sizes.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                proto as i32,
            )
        };
        if fd < 0 {
            return Err(LabError::io(
                "opening a packet socket",
                std::io::Error::last_os_error(),
            ));
        }
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let name = std::ffi::CString::new(iface).expect("interface name");
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex as i32;
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 50_000,
        };
        unsafe {
            if libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            ) != 0
            {
                return Err(LabError::io(
                    format!("binding a packet socket to {iface}"),
                    std::io::Error::last_os_error(),
                ));
            }
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            );
        }
        Ok(Sniffer {
            fd,
            backend_next: None,
            client_next: None,
            seen: 0,
        })
    }

    /// Reads segments of the backend's port until the client names its port on `go`; returns it.
    fn watch_until(&mut self, go: &mpsc::Receiver<u16>) -> Result<u16> {
        let mut buf = [0u8; 2048];
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(port) = go.try_recv() {
                // What is still queued arrived before the signal.
                while self.read_one(&mut buf) {}
                return Ok(port);
            }
            if Instant::now() > deadline {
                return Err(LabError::traffic(NAME, "the client never connected"));
            }
            self.read_one(&mut buf);
        }
    }

    fn read_one(&mut self, buf: &mut [u8]) -> bool {
        // SAFETY: the buffer is passed with its length.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n <= 0 {
            return false;
        }
        self.seen += 1;
        let p = &buf[..n as usize];
        if p.len() < 40 || p[0] >> 4 != 4 || p[9] != 6 {
            return true;
        }
        let ihl = usize::from(p[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([p[2], p[3]])).min(p.len());
        let Some(tcp) = p.get(ihl..total) else {
            return true;
        };
        if tcp.len() < 20 {
            return true;
        }
        let (sport, dport) = (
            u16::from_be_bytes([tcp[0], tcp[1]]),
            u16::from_be_bytes([tcp[2], tcp[3]]),
        );
        let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
        let flags = tcp[13];
        let doff = usize::from(tcp[12] >> 4) * 4;
        let len = tcp.len().saturating_sub(doff) as u32;
        let end = seq
            .wrapping_add(len)
            .wrapping_add(u32::from(flags & 0x02 != 0))
            .wrapping_add(u32::from(flags & 0x01 != 0));
        if sport == PORT {
            self.backend_next = Some(end);
        } else if dport == PORT {
            self.client_next = Some(end);
        }
        true
    }
}

fn checksum(chunks: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for c in chunks {
        for w in c.chunks(2) {
            let v = if w.len() == 2 {
                u16::from_be_bytes([w[0], w[1]])
            } else {
                u16::from(w[0]) << 8
            };
            sum += u32::from(v);
        }
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends one TCP segment (ACK|PSH with `payload`) with the given addresses and numbers from a raw
/// socket in the calling thread's namespace.
fn send_segment(
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    seq: u32,
    ack: u32,
    payload: &[u8],
) -> std::io::Result<()> {
    let mut tcp = Vec::with_capacity(20 + payload.len());
    tcp.extend_from_slice(&sport.to_be_bytes());
    tcp.extend_from_slice(&dport.to_be_bytes());
    tcp.extend_from_slice(&seq.to_be_bytes());
    tcp.extend_from_slice(&ack.to_be_bytes());
    tcp.extend_from_slice(&[5 << 4, 0x18]); // header length 20, ACK|PSH
    tcp.extend_from_slice(&502u16.to_be_bytes()); // window
    tcp.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
    tcp.extend_from_slice(payload);
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
    let c = checksum(&[&pseudo, &tcp]);
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&((20 + tcp.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&[0x4e, 0x21, 0x40, 0, 64, 6, 0, 0]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let c = checksum(&[&ip]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip.extend_from_slice(&tcp);
    // SAFETY: plain socket calls on an fd owned here; buffers passed with their lengths.
    unsafe {
        let fd = libc::socket(
            libc::AF_INET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_RAW,
        );
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(dst.octets()),
            },
            sin_zero: [0; 8],
        };
        if libc::sendto(
            fd.as_raw_fd(),
            ip.as_ptr().cast(),
            ip.len(),
            0,
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        ) < 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

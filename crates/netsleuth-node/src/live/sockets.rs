//! sock_diag: the TCP sockets of a namespace (established and listening), with idle time and
//! keepalive timer from tcp_info and the socket's timer, decoded by `netlink-packet-sock-diag`; and
//! the process that owns a socket, from `/proc/*/fd` (read only when a finding names one).
//!
//! Two ways to ask: a dump ([`SockSource::tcp`]) walks the kernel's whole established hash, which every
//! namespace shares (~5 ms of CPU on a big machine, whatever the namespace holds); an exact request per
//! socket ([`SockSource::lookup`]) is one hash lookup. The watch loop looks up the few sockets it can
//! use where there are few, and dumps where there are many (`Correlator::socket_plan`).

use super::event::Socket;
use super::event::SocketTuple;
use super::sock;
use crate::parse::netlink::{messages, DumpEnd, NLMSG_ERROR};
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_sock_diag::inet::nlas::Nla;
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags, Timer};
use netlink_packet_sock_diag::SockDiagMessage;
use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::path::Path;

/// The sock_diag socket of one namespace.
pub struct SockSource {
    fd: OwnedFd,
    seq: u32,
}

/// Decodes one buffer of inet_diag replies into `out`; returns how the dump stands.
pub fn decode(buf: &[u8], out: &mut Vec<Socket>) -> DumpEnd {
    let mut end = DumpEnd::default();
    let mut off = 0;
    for m in messages(buf) {
        let len = 16 + m.body.len();
        let raw = &buf[off..off + len];
        off += crate::parse::netlink::align(len);
        if end.see(&m) {
            continue;
        }
        let Ok(nl) = NetlinkMessage::<SockDiagMessage>::deserialize(raw) else {
            continue;
        };
        let NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) = nl.payload else {
            continue;
        };
        let h = &r.header;
        let mut s = Socket {
            state: h.state,
            // An IPv6 socket carrying IPv4 (a dual-stack server's) has IPv4-mapped addresses; conntrack
            // has the IPv4 ones.
            local: h.socket_id.source_address.to_canonical(),
            local_port: h.socket_id.source_port,
            remote: h.socket_id.destination_address.to_canonical(),
            remote_port: h.socket_id.destination_port,
            recv_queue: h.recv_queue,
            send_queue: h.send_queue,
            inode: h.inode,
            idle_ms: None,
            keepalive_ms: match h.timer {
                Some(Timer::KeepAlive(d)) => Some(d.as_millis() as u32),
                _ => None,
            },
        };
        for nla in r.nlas.iter() {
            if let Nla::TcpInfo(info) = nla {
                // Any segment refreshes the conntrack entry: data either way, or an ACK received
                // (a keepalive probe's answer).
                s.idle_ms = Some(
                    info.last_data_recv
                        .min(info.last_data_sent)
                        .min(info.last_ack_recv),
                );
            }
        }
        out.push(s);
    }
    end
}

impl SockSource {
    /// Opens the socket in the calling thread's namespace.
    pub fn open() -> std::io::Result<SockSource> {
        Ok(SockSource {
            fd: sock::open(libc::NETLINK_SOCK_DIAG, 0, Some(1 << 20))?,
            seq: 1,
        })
    }

    /// Every established and listening TCP socket (IPv4 and IPv6) now.
    pub fn tcp(&mut self) -> std::io::Result<Vec<Socket>> {
        let mut out = Vec::new();
        for (family, id) in [
            (libc::AF_INET as u8, SocketId::new_v4()),
            (libc::AF_INET6 as u8, SocketId::new_v6()),
        ] {
            self.seq += 1;
            let mut header = NetlinkHeader::default();
            header.flags = NLM_F_REQUEST | NLM_F_DUMP;
            header.sequence_number = self.seq;
            let req = SockDiagMessage::InetRequest(InetRequest {
                family,
                protocol: libc::IPPROTO_TCP as u8,
                extensions: ExtensionFlags::INFO,
                states: StateFlags::ESTABLISHED | StateFlags::LISTEN,
                socket_id: id,
            });
            let mut msg = NetlinkMessage::new(header, NetlinkPayload::from(req));
            msg.finalize();
            let mut bytes = vec![0u8; msg.buffer_len()];
            msg.serialize(&mut bytes);
            sock::send(&self.fd, &bytes)?;
            sock::recv_dump(&self.fd, 5000, |b| decode(b, &mut out).done)?;
        }
        Ok(out)
    }
}

impl SockSource {
    /// The ESTABLISHED sockets among `tuples`, each found by the kernel's hash lookup (an exact
    /// sock_diag request, acknowledged) rather than a walk of the established hash; a tuple without
    /// an established socket is left out. All requests go in one send, the replies are read until
    /// every request is answered.
    pub fn lookup(&mut self, tuples: &[SocketTuple]) -> std::io::Result<Vec<Socket>> {
        let mut out = Vec::new();
        let mut bytes = Vec::new();
        let mut asked = 0usize;
        for &(local, local_port, remote, remote_port) in tuples {
            let family = match (local, remote) {
                (IpAddr::V4(_), IpAddr::V4(_)) => libc::AF_INET,
                (IpAddr::V6(_), IpAddr::V6(_)) => libc::AF_INET6,
                _ => continue,
            };
            self.seq += 1;
            let mut header = NetlinkHeader::default();
            header.flags = NLM_F_REQUEST | NLM_F_ACK;
            header.sequence_number = self.seq;
            let req = SockDiagMessage::InetRequest(InetRequest {
                family: family as u8,
                protocol: libc::IPPROTO_TCP as u8,
                extensions: ExtensionFlags::INFO,
                states: StateFlags::ESTABLISHED,
                socket_id: SocketId {
                    source_port: local_port,
                    destination_port: remote_port,
                    source_address: local,
                    destination_address: remote,
                    interface_id: 0,
                    // INET_DIAG_NOCOOKIE: any socket with this tuple.
                    cookie: [0xff; 8],
                },
            });
            let mut msg = NetlinkMessage::new(header, NetlinkPayload::from(req));
            msg.finalize();
            let at = bytes.len();
            bytes.resize(at + crate::parse::netlink::align(msg.buffer_len()), 0);
            msg.serialize(&mut bytes[at..at + msg.buffer_len()]);
            asked += 1;
        }
        if asked == 0 {
            return Ok(out);
        }
        sock::send(&self.fd, &bytes)?;
        let mut answered = 0usize;
        sock::recv_dump(&self.fd, 5000, |b| {
            // Each request ends with an NLMSG_ERROR: its acknowledgement, or ENOENT (no such socket).
            answered += messages(b).filter(|m| m.ty == NLMSG_ERROR).count();
            decode(b, &mut out);
            answered >= asked
        })?;
        // A lookup also finds TIME_WAIT and SYN_RECV sockets under the tuple; the dump asks for
        // ESTABLISHED only.
        out.retain(|s| s.state == super::event::TCP_ESTABLISHED);
        Ok(out)
    }
}

/// Socket inode → "comm (pid N)", by one walk of `/proc/*/fd` (cached per walk).
#[derive(Default)]
pub struct Owners {
    by_inode: HashMap<u32, String>,
}

impl Owners {
    /// Walks `proc_root` once.
    pub fn scan(proc_root: &Path) -> Owners {
        let mut by_inode = HashMap::new();
        let Ok(dir) = std::fs::read_dir(proc_root) else {
            return Owners { by_inode };
        };
        for p in dir.flatten() {
            let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let comm = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
            let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
                continue;
            };
            for fd in fds.flatten() {
                let Ok(link) = std::fs::read_link(fd.path()) else {
                    continue;
                };
                let l = link.to_string_lossy();
                if let Some(ino) = l
                    .strip_prefix("socket:[")
                    .and_then(|r| r.strip_suffix(']'))
                    .and_then(|n| n.parse::<u32>().ok())
                {
                    by_inode
                        .entry(ino)
                        .or_insert_with(|| format!("{} (pid {pid})", comm.trim()));
                }
            }
        }
        Owners { by_inode }
    }

    pub fn get(&self, inode: u32) -> Option<&str> {
        self.by_inode.get(&inode).map(String::as_str)
    }
}

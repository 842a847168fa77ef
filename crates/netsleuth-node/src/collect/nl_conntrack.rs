//! The conntrack table over ctnetlink (IPCTNL_MSG_CT_GET dump), decoded straight into the summariser.
//!
//! Why not only `conntrack -L`: the tool formats every entry as text (≈10 µs each here), which for a
//! million entries is longer than the whole check may take. The dump is read buffer by buffer and each
//! entry is counted and dropped: memory stays bounded by the summary, not by the table.
//!
//! [`decode`] is pure (bytes in, entries out) and never panics on damaged input; [`dump`] is the socket.

use super::nl_socket::{netfilter_request, recv_until};
use crate::parse::conntrack::{ConntrackSummarizer, Flow};
use crate::parse::netlink::{attrs, messages, value, DumpEnd, Request, Subsystem};
use netsleuth_core::wire::IpProtocol;
use std::fmt::Write as _;
use std::net::IpAddr;

/// ctnetlink messages (`linux/netfilter/nfnetlink_conntrack.h`).
pub(crate) const IPCTNL_MSG_CT_NEW: u16 = 0;
pub(crate) const IPCTNL_MSG_CT_GET: u16 = 1;
pub(crate) const IPCTNL_MSG_CT_DELETE: u16 = 2;
/// Per-CPU statistics (`insert_failed`, `drop`, …), one message per CPU.
pub(crate) const IPCTNL_MSG_CT_GET_STATS_CPU: u16 = 4;
/// A dump request for every family.
const AF_UNSPEC: u8 = 0;

const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_STATUS: u16 = 3;
const CTA_PROTOINFO: u16 = 4;
const CTA_TIMEOUT: u16 = 7;
const CTA_ID: u16 = 12;
/// Nested start/stop times (ns, wall clock), when `nf_conntrack_timestamp` is on.
const CTA_TIMESTAMP: u16 = 20;
const CTA_TIMESTAMP_START: u16 = 1;
const CTA_TIMESTAMP_STOP: u16 = 2;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const CTA_PROTOINFO_TCP: u16 = 1;
const CTA_PROTOINFO_TCP_STATE: u16 = 1;
const IPS_SEEN_REPLY: u32 = 1 << 1;
const IPS_ASSURED: u32 = 1 << 2;

/// One side of an entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tuple {
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    pub proto: u8,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
}

/// One decoded entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Entry {
    pub orig: Tuple,
    pub reply: Tuple,
    pub status: u32,
    pub tcp_state: Option<u8>,
    pub timeout_s: Option<u32>,
    /// The kernel's id of the entry (stable while it lives).
    pub id: Option<u32>,
    /// Creation and destruction times (ns since the epoch) when `nf_conntrack_timestamp` is on.
    pub start_ns: Option<u64>,
    pub stop_ns: Option<u64>,
}

/// The protocol as `conntrack -L` names it.
pub fn proto_name(p: u8) -> &'static str {
    match IpProtocol::from(p) {
        IpProtocol::Icmp => "icmp",
        IpProtocol::Tcp => "tcp",
        IpProtocol::Udp => "udp",
        IpProtocol::Dccp => "dccp",
        IpProtocol::Gre => "gre",
        IpProtocol::Icmpv6 => "icmpv6",
        IpProtocol::Sctp => "sctp",
        IpProtocol::UdpLite => "udplite",
        _ => "unknown",
    }
}

pub fn tcp_state_name(s: u8) -> &'static str {
    match s {
        0 => "NONE",
        1 => "SYN_SENT",
        2 => "SYN_RECV",
        3 => "ESTABLISHED",
        4 => "FIN_WAIT",
        5 => "CLOSE_WAIT",
        6 => "LAST_ACK",
        7 => "TIME_WAIT",
        8 => "CLOSE",
        9 => "SYN_SENT2",
        _ => "UNKNOWN",
    }
}

impl Entry {
    pub fn flow(&self) -> Flow<'static> {
        let unreplied = self.status & IPS_SEEN_REPLY == 0;
        Flow {
            proto: proto_name(self.orig.proto),
            state: self.tcp_state.map(tcp_state_name),
            timeout_s: self.timeout_s.map(u64::from),
            unreplied,
            assured: self.status & IPS_ASSURED != 0,
            dst: self.orig.dst,
            dport: self.orig.dport,
            reply_src: self.reply.src,
            reply_sport: self.reply.sport,
            dnat: self.reply.src.is_some() && self.reply.src != self.orig.dst,
            snat: self.reply.dst.is_some() && self.reply.dst != self.orig.src,
        }
    }

    /// The entry in `conntrack -L` form (for the bundle's readable excerpt).
    pub fn to_line(&self) -> String {
        let mut l = String::with_capacity(160);
        let f = self.flow();
        let _ = write!(l, "{:<8} {} ", f.proto, self.orig.proto);
        if let Some(t) = self.timeout_s {
            let _ = write!(l, "{t} ");
        }
        if let Some(st) = f.state {
            let _ = write!(l, "{st} ");
        }
        let side = |l: &mut String, t: &Tuple| {
            let ip = |a: Option<IpAddr>| a.map(|a| a.to_string()).unwrap_or_else(|| "?".into());
            let _ = write!(l, "src={} dst={} ", ip(t.src), ip(t.dst));
            if let (Some(s), Some(d)) = (t.sport, t.dport) {
                let _ = write!(l, "sport={s} dport={d} ");
            }
        };
        side(&mut l, &self.orig);
        if f.unreplied {
            l.push_str("[UNREPLIED] ");
        }
        side(&mut l, &self.reply);
        if f.assured {
            l.push_str("[ASSURED] ");
        }
        l.trim_end().to_string()
    }
}

fn ip(v: &[u8]) -> Option<IpAddr> {
    match v.len() {
        4 => <[u8; 4]>::try_from(v).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(v).ok().map(IpAddr::from),
        _ => None,
    }
}

fn tuple(v: &[u8]) -> Tuple {
    let mut t = Tuple::default();
    for (ty, x) in attrs(v) {
        match ty {
            CTA_TUPLE_IP => {
                for (k, a) in attrs(x) {
                    match k {
                        CTA_IP_V4_SRC | CTA_IP_V6_SRC => t.src = ip(a),
                        CTA_IP_V4_DST | CTA_IP_V6_DST => t.dst = ip(a),
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for (k, a) in attrs(x) {
                    match k {
                        CTA_PROTO_NUM => t.proto = a.first().copied().unwrap_or(0),
                        CTA_PROTO_SRC_PORT => t.sport = value::be16(a),
                        CTA_PROTO_DST_PORT => t.dport = value::be16(a),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    t
}

/// The entry that a ctnetlink message's attributes describe (a dump reply or an event).
pub fn entry(attributes: &[u8]) -> Entry {
    let mut e = Entry::default();
    for (k, v) in attrs(attributes) {
        match k {
            CTA_TUPLE_ORIG => e.orig = tuple(v),
            CTA_TUPLE_REPLY => e.reply = tuple(v),
            CTA_STATUS => e.status = value::be32(v).unwrap_or(0),
            CTA_TIMEOUT => e.timeout_s = value::be32(v),
            CTA_ID => e.id = value::be32(v),
            CTA_TIMESTAMP => {
                for (t, tv) in attrs(v) {
                    match t {
                        CTA_TIMESTAMP_START => e.start_ns = value::be64(tv),
                        CTA_TIMESTAMP_STOP => e.stop_ns = value::be64(tv),
                        _ => {}
                    }
                }
            }
            CTA_PROTOINFO => {
                for (p, pv) in attrs(v) {
                    if p == CTA_PROTOINFO_TCP {
                        for (q, qv) in attrs(pv) {
                            if q == CTA_PROTOINFO_TCP_STATE {
                                e.tcp_state = qv.first().copied();
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    e
}

/// What one received buffer held.
#[derive(Debug, Default)]
pub struct Decoded {
    pub entries: Vec<Entry>,
    pub done: bool,
    /// The kernel's error (positive errno) if the dump was refused.
    pub error: Option<i32>,
    /// Messages too short or malformed to read.
    pub damaged: u64,
}

/// Decodes one buffer of ctnetlink dump messages.
pub fn decode(buf: &[u8]) -> Decoded {
    let mut d = Decoded::default();
    let mut end = DumpEnd::default();
    let mut msgs = messages(buf);
    for m in &mut msgs {
        if end.see(&m) {
            continue;
        }
        if m.ty != Subsystem::Ctnetlink.message(IPCTNL_MSG_CT_NEW) {
            continue;
        }
        let Some(body) = m.nfnetlink() else {
            d.damaged += 1;
            continue;
        };
        let e = entry(body.attrs);
        d.entries.push(e);
    }
    if msgs.damaged {
        d.damaged += 1;
    }
    (d.done, d.error) = (end.done, end.error);
    d
}

/// The dump request: every entry of every family.
pub(crate) fn request(seq: u32) -> Vec<u8> {
    Request::dump(Subsystem::Ctnetlink, IPCTNL_MSG_CT_GET, seq, AF_UNSPEC).finish()
}

/// Dumps the calling thread's namespace's table into `z`; the first `head` entries are returned as
/// `conntrack -L` lines. Returns how many messages were damaged.
pub fn dump(
    z: &mut ConntrackSummarizer,
    head: usize,
    lines: &mut Vec<String>,
) -> std::io::Result<u64> {
    let fd = netfilter_request(&request(1), 10, Some(4 << 20))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut damaged = 0;
    let mut err = None;
    recv_until(&fd, &mut buf, |b| {
        let d = decode(b);
        damaged += d.damaged;
        for e in &d.entries {
            if lines.len() < head {
                lines.push(e.to_line());
            }
            z.feed_flow(&e.flow());
        }
        err = d.error;
        Ok(d.done || d.error.is_some())
    })?;
    match err {
        Some(e) => Err(std::io::Error::from_raw_os_error(e)),
        None => Ok(damaged),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(ty: u16, v: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        crate::parse::netlink::put_attr(&mut a, ty, v);
        a
    }

    fn tuple_attr(ty: u16, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let ipn = [attr(1, &src), attr(2, &dst)].concat();
        let proto = [
            attr(1, &[6]),
            attr(2, &sport.to_be_bytes()),
            attr(3, &dport.to_be_bytes()),
        ]
        .concat();
        attr(
            ty | 0x8000,
            &[attr(1 | 0x8000, &ipn), attr(2 | 0x8000, &proto)].concat(),
        )
    }

    #[test]
    fn decodes_a_dnated_established_entry() {
        let mut body = vec![2, 0, 0, 0];
        body.extend(tuple_attr(1, [10, 244, 1, 5], [10, 96, 0, 10], 40000, 80));
        body.extend(tuple_attr(2, [10, 244, 2, 7], [10, 244, 1, 5], 8080, 40000));
        body.extend(attr(3, &(IPS_SEEN_REPLY | IPS_ASSURED).to_be_bytes()));
        body.extend(attr(7, &431999u32.to_be_bytes()));
        body.extend(attr(4 | 0x8000, &attr(1 | 0x8000, &attr(1, &[3]))));
        let mut msg = Vec::new();
        msg.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&(1u16 << 8).to_ne_bytes());
        msg.extend_from_slice(&[0; 10]);
        msg.extend(body);
        let d = decode(&msg);
        assert_eq!(d.entries.len(), 1);
        let f = d.entries[0].flow();
        assert_eq!(f.state, Some("ESTABLISHED"));
        assert!(f.dnat && !f.unreplied && f.assured);
        assert_eq!(
            d.entries[0].to_line(),
            "tcp      6 431999 ESTABLISHED src=10.244.1.5 dst=10.96.0.10 sport=40000 dport=80 src=10.244.2.7 dst=10.244.1.5 sport=8080 dport=40000 [ASSURED]"
        );
        // The summariser reads the line form the same way.
        let mut a = ConntrackSummarizer::new(Default::default());
        a.feed_flow(&f);
        let mut b = ConntrackSummarizer::new(Default::default());
        b.feed_line(&d.entries[0].to_line());
        assert_eq!(a.finish(), b.finish());
        for cut in 0..msg.len() {
            let _ = decode(&msg[..cut]);
        }
    }

    /// The exact dump request `conntrack`'s netlink reader sends (little-endian host: netlink headers
    /// are in host order).
    #[test]
    #[cfg(target_endian = "little")]
    fn the_dump_request_is_byte_exact() {
        assert_eq!(
            request(1),
            [
                20, 0, 0, 0, // length: nlmsghdr + nfgenmsg
                1, 1, // IPCTNL_MSG_CT_GET of NFNL_SUBSYS_CTNETLINK
                1, 3, // NLM_F_REQUEST | NLM_F_DUMP
                1, 0, 0, 0, // seq
                0, 0, 0, 0, // pid
                0, 0, 0, 0, // nfgenmsg: AF_UNSPEC (every family), NFNETLINK_V0, res_id 0
            ]
        );
        let r = request(7);
        let m = messages(&r).next().unwrap();
        assert_eq!(
            (m.ty, m.seq),
            (Subsystem::Ctnetlink.message(IPCTNL_MSG_CT_GET), 7)
        );
    }
}

//! Test packet builder: frames (Ethernet, SLL, SLL2, raw, NULL) carrying IPv4/IPv6 with TCP (options
//! included), UDP or ICMP; VXLAN wrapping; DNS messages; pcap and pcapng file writers.
//!
//! ```ignore
//! let syn = tcp([10, 0, 0, 1], 40000, [10, 0, 0, 2], 80).seq(1000).flags(SYN).mss(1460).ts(1, 0);
//! let file = PcapWriter::new(LINKTYPE_LINUX_SLL2)
//!     .packet(1_000_000_000, &syn.sll2(3, PKTTYPE_OUTGOING))
//!     .packet(1_000_500_000, &udp([10, 0, 0, 1], 5353, [10, 0, 0, 53], 53)
//!         .payload(&dns_query(0x1234, "example.com", QTYPE_A).build()).ethernet())
//!     .finish();
//! ```
//!
//! Checksums are computed, so the frames also look right to tshark/tcpdump.
#![allow(dead_code)]

use netsleuth_core::wire::dns::{header_flags as dns_flags, DnsRepr, Record};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const LINKTYPE_NULL: u32 = 0;
pub const LINKTYPE_ETHERNET: u32 = 1;
pub const LINKTYPE_RAW: u32 = 101;
pub const LINKTYPE_LOOP: u32 = 108;
pub const LINKTYPE_LINUX_SLL: u32 = 113;
pub const LINKTYPE_IPV4: u32 = 228;
pub const LINKTYPE_IPV6: u32 = 229;
pub const LINKTYPE_LINUX_SLL2: u32 = 276;
pub const LINKTYPE_NFLOG: u32 = 239;

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

/// Linux `sll_pkttype` values.
pub const PKTTYPE_HOST: u8 = 0;
pub const PKTTYPE_BROADCAST: u8 = 1;
pub const PKTTYPE_MULTICAST: u8 = 2;
pub const PKTTYPE_OTHERHOST: u8 = 3;
pub const PKTTYPE_OUTGOING: u8 = 4;

pub const QTYPE_A: u16 = 1;
pub const QTYPE_CNAME: u16 = 5;
pub const QTYPE_AAAA: u16 = 28;

#[derive(Debug, Clone)]
enum L4 {
    Tcp(TcpFields),
    Udp {
        sport: u16,
        dport: u16,
        len_override: Option<u16>,
    },
    Icmp {
        icmp_type: u8,
        code: u8,
    },
    Proto(u8),
}

#[derive(Debug, Clone)]
struct TcpFields {
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    mss: Option<u16>,
    wscale: Option<u8>,
    sack_ok: bool,
    ts: Option<(u32, u32)>,
    raw_options: Option<Vec<u8>>,
}

/// An IP packet under construction; turn it into a frame with `ethernet()`, `sll2()`, `raw()`...
#[derive(Debug, Clone)]
pub struct PacketBuilder {
    src: IpAddr,
    dst: IpAddr,
    ttl: u8,
    ident: u16,
    /// (offset in bytes, more fragments)
    fragment: Option<(u32, bool)>,
    l4: L4,
    payload: Vec<u8>,
    vlans: Vec<(u16, u16)>,
    total_len_override: Option<u16>,
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    udp_checksum: UdpChecksumMode,
}

/// What a built UDP datagram carries in its checksum field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpChecksumMode {
    /// The right checksum (the default).
    Computed,
    /// 0: no checksum (allowed over IPv4).
    Zero,
    /// The pseudo-header sum only, as Linux leaves it for the NIC to complete (tx checksum offload).
    PseudoHeaderOnly,
    /// This value, whatever the right one is.
    Value(u16),
}

fn base(src: IpAddr, dst: IpAddr, l4: L4) -> PacketBuilder {
    assert_eq!(
        src.is_ipv4(),
        dst.is_ipv4(),
        "source and destination must be the same IP version"
    );
    PacketBuilder {
        src,
        dst,
        ttl: 64,
        ident: 0x1234,
        fragment: None,
        l4,
        payload: Vec::new(),
        vlans: Vec::new(),
        total_len_override: None,
        src_mac: [0x02, 0, 0, 0, 0, 1],
        dst_mac: [0x02, 0, 0, 0, 0, 2],
        udp_checksum: UdpChecksumMode::Computed,
    }
}

/// A TCP segment (flags ACK, window 65535 unless set).
pub fn tcp(
    src: impl Into<IpAddr>,
    sport: u16,
    dst: impl Into<IpAddr>,
    dport: u16,
) -> PacketBuilder {
    base(
        src.into(),
        dst.into(),
        L4::Tcp(TcpFields {
            sport,
            dport,
            seq: 0,
            ack: 0,
            flags: ACK,
            window: 65535,
            mss: None,
            wscale: None,
            sack_ok: false,
            ts: None,
            raw_options: None,
        }),
    )
}

pub fn tcp_v4(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> PacketBuilder {
    tcp(src, sport, dst, dport)
}

pub fn tcp_v6(src: &str, sport: u16, dst: &str, dport: u16) -> PacketBuilder {
    tcp(
        src.parse::<Ipv6Addr>().unwrap(),
        sport,
        dst.parse::<Ipv6Addr>().unwrap(),
        dport,
    )
}

pub fn udp(
    src: impl Into<IpAddr>,
    sport: u16,
    dst: impl Into<IpAddr>,
    dport: u16,
) -> PacketBuilder {
    base(
        src.into(),
        dst.into(),
        L4::Udp {
            sport,
            dport,
            len_override: None,
        },
    )
}

pub fn udp_v4(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> PacketBuilder {
    udp(src, sport, dst, dport)
}

pub fn udp_v6(src: &str, sport: u16, dst: &str, dport: u16) -> PacketBuilder {
    udp(
        src.parse::<Ipv6Addr>().unwrap(),
        sport,
        dst.parse::<Ipv6Addr>().unwrap(),
        dport,
    )
}

/// ICMP (v4) or ICMPv6 (v6 addresses) with the given type/code; payload follows the 4-byte header.
pub fn icmp(
    src: impl Into<IpAddr>,
    dst: impl Into<IpAddr>,
    icmp_type: u8,
    code: u8,
) -> PacketBuilder {
    base(src.into(), dst.into(), L4::Icmp { icmp_type, code })
}

/// An IP packet of any protocol number; the payload is the transport header and data as given.
pub fn ip_proto(src: impl Into<IpAddr>, dst: impl Into<IpAddr>, proto: u8) -> PacketBuilder {
    base(src.into(), dst.into(), L4::Proto(proto))
}

fn csum_add(mut sum: u32, bytes: &[u8]) -> u32 {
    let mut chunks = bytes.chunks_exact(2);
    for c in &mut chunks {
        sum += u16::from_be_bytes([c[0], c[1]]) as u32;
    }
    if let [last] = chunks.remainder() {
        sum += (*last as u32) << 8;
    }
    sum
}

fn csum_fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    !(sum as u16)
}

impl PacketBuilder {
    fn tcp_mut(&mut self) -> &mut TcpFields {
        match &mut self.l4 {
            L4::Tcp(t) => t,
            _ => panic!("not a TCP packet"),
        }
    }

    pub fn seq(mut self, seq: u32) -> Self {
        self.tcp_mut().seq = seq;
        self
    }
    pub fn ack(mut self, ack: u32) -> Self {
        self.tcp_mut().ack = ack;
        self
    }
    /// TCP flags (replaces the default ACK).
    pub fn flags(mut self, flags: u8) -> Self {
        self.tcp_mut().flags = flags;
        self
    }
    pub fn window(mut self, window: u16) -> Self {
        self.tcp_mut().window = window;
        self
    }
    pub fn mss(mut self, mss: u16) -> Self {
        self.tcp_mut().mss = Some(mss);
        self
    }
    pub fn wscale(mut self, shift: u8) -> Self {
        self.tcp_mut().wscale = Some(shift);
        self
    }
    pub fn sack_ok(mut self) -> Self {
        self.tcp_mut().sack_ok = true;
        self
    }
    /// TCP timestamps option (TSval, TSecr).
    pub fn ts(mut self, val: u32, ecr: u32) -> Self {
        self.tcp_mut().ts = Some((val, ecr));
        self
    }
    /// Raw TCP option bytes (padded to 4 with NOPs), instead of the ones set above.
    pub fn tcp_options_raw(mut self, bytes: &[u8]) -> Self {
        self.tcp_mut().raw_options = Some(bytes.to_vec());
        self
    }
    /// Override the UDP length field.
    pub fn udp_len(mut self, len: u16) -> Self {
        match &mut self.l4 {
            L4::Udp { len_override, .. } => *len_override = Some(len),
            _ => panic!("not a UDP packet"),
        }
        self
    }
    /// What the UDP checksum field carries (default: the right checksum).
    pub fn udp_checksum(mut self, mode: UdpChecksumMode) -> Self {
        self.udp_checksum = mode;
        self
    }
    pub fn payload(mut self, payload: &[u8]) -> Self {
        self.payload = payload.to_vec();
        self
    }
    pub fn ttl(mut self, ttl: u8) -> Self {
        self.ttl = ttl;
        self
    }
    pub fn ident(mut self, ident: u16) -> Self {
        self.ident = ident;
        self
    }
    /// Make this an IP fragment: `offset` in bytes (multiple of 8), `more` = more fragments follow.
    /// For a non-first fragment the payload is raw data (no transport header is written).
    pub fn fragment(mut self, offset: u32, more: bool) -> Self {
        self.fragment = Some((offset, more));
        self
    }
    /// Override the IPv4 total length / IPv6 payload length field.
    pub fn ip_len(mut self, len: u16) -> Self {
        self.total_len_override = Some(len);
        self
    }
    /// Add an 802.1Q tag (call twice for stacked tags; the first call is the outer tag).
    pub fn vlan(mut self, id: u16) -> Self {
        self.vlans.push((0x8100, id));
        self
    }
    /// Add an 802.1ad (QinQ service) tag.
    pub fn qinq(mut self, id: u16) -> Self {
        self.vlans.push((0x88A8, id));
        self
    }
    pub fn macs(mut self, src: [u8; 6], dst: [u8; 6]) -> Self {
        self.src_mac = src;
        self.dst_mac = dst;
        self
    }

    fn proto(&self) -> u8 {
        match (&self.l4, self.src.is_ipv4()) {
            (L4::Tcp(_), _) => 6,
            (L4::Udp { .. }, _) => 17,
            (L4::Icmp { .. }, true) => 1,
            (L4::Icmp { .. }, false) => 58,
            (L4::Proto(p), _) => *p,
        }
    }

    fn pseudo_header_sum(&self, l4_len: usize) -> u32 {
        let mut sum = 0;
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                sum = csum_add(sum, &s.octets());
                sum = csum_add(sum, &d.octets());
                sum += self.proto() as u32 + l4_len as u32;
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                sum = csum_add(sum, &s.octets());
                sum = csum_add(sum, &d.octets());
                sum += (l4_len as u32 >> 16) + (l4_len as u32 & 0xFFFF) + self.proto() as u32;
            }
            _ => unreachable!(),
        }
        sum
    }

    /// The transport header and payload.
    pub fn transport_bytes(&self) -> Vec<u8> {
        if matches!(self.fragment, Some((off, _)) if off != 0) {
            return self.payload.clone();
        }
        let mut l4 = Vec::new();
        let checksum_at = match &self.l4 {
            L4::Tcp(t) => {
                let mut opts = match &t.raw_options {
                    Some(raw) => raw.clone(),
                    None => {
                        let mut o = Vec::new();
                        if let Some(mss) = t.mss {
                            o.extend_from_slice(&[2, 4]);
                            o.extend_from_slice(&mss.to_be_bytes());
                        }
                        if t.sack_ok {
                            o.extend_from_slice(&[4, 2]);
                        }
                        if let Some((val, ecr)) = t.ts {
                            o.extend_from_slice(&[1, 1, 8, 10]);
                            o.extend_from_slice(&val.to_be_bytes());
                            o.extend_from_slice(&ecr.to_be_bytes());
                        }
                        if let Some(ws) = t.wscale {
                            o.extend_from_slice(&[1, 3, 3, ws]);
                        }
                        o
                    }
                };
                while opts.len() & 3 != 0 {
                    opts.push(1);
                }
                let header_len = 20 + opts.len();
                l4.extend_from_slice(&t.sport.to_be_bytes());
                l4.extend_from_slice(&t.dport.to_be_bytes());
                l4.extend_from_slice(&t.seq.to_be_bytes());
                l4.extend_from_slice(&t.ack.to_be_bytes());
                l4.push(((header_len / 4) as u8) << 4);
                l4.push(t.flags);
                l4.extend_from_slice(&t.window.to_be_bytes());
                l4.extend_from_slice(&[0, 0, 0, 0]);
                l4.extend_from_slice(&opts);
                16
            }
            L4::Udp {
                sport,
                dport,
                len_override,
            } => {
                let len = len_override.unwrap_or((8 + self.payload.len()) as u16);
                l4.extend_from_slice(&sport.to_be_bytes());
                l4.extend_from_slice(&dport.to_be_bytes());
                l4.extend_from_slice(&len.to_be_bytes());
                l4.extend_from_slice(&[0, 0]);
                6
            }
            L4::Icmp { icmp_type, code } => {
                l4.extend_from_slice(&[*icmp_type, *code, 0, 0]);
                2
            }
            L4::Proto(_) => {
                return self.payload.clone();
            }
        };
        l4.extend_from_slice(&self.payload);
        let mut sum = match (&self.l4, self.src.is_ipv4()) {
            (L4::Icmp { .. }, true) => 0,
            _ => self.pseudo_header_sum(l4.len()),
        };
        sum = csum_add(sum, &l4);
        let mut c = csum_fold(sum);
        if c == 0 && matches!(self.l4, L4::Udp { .. }) {
            c = 0xFFFF;
        }
        if matches!(self.l4, L4::Udp { .. }) {
            c = match self.udp_checksum {
                UdpChecksumMode::Computed => c,
                UdpChecksumMode::Zero => 0,
                UdpChecksumMode::PseudoHeaderOnly => !csum_fold(self.pseudo_header_sum(l4.len())),
                UdpChecksumMode::Value(v) => v,
            };
        }
        l4[checksum_at..checksum_at + 2].copy_from_slice(&c.to_be_bytes());
        l4
    }

    /// The IP packet (what LINKTYPE_RAW carries).
    pub fn ip(&self) -> Vec<u8> {
        let l4 = self.transport_bytes();
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let mut h = vec![0x45, 0];
                let total = self.total_len_override.unwrap_or((20 + l4.len()) as u16);
                h.extend_from_slice(&total.to_be_bytes());
                h.extend_from_slice(&self.ident.to_be_bytes());
                let (off, more) = self.fragment.unwrap_or((0, false));
                let field = ((off / 8) as u16 & 0x1FFF) | if more { 0x2000 } else { 0 };
                h.extend_from_slice(&field.to_be_bytes());
                h.push(self.ttl);
                h.push(self.proto());
                h.extend_from_slice(&[0, 0]);
                h.extend_from_slice(&s.octets());
                h.extend_from_slice(&d.octets());
                let c = csum_fold(csum_add(0, &h));
                h[10..12].copy_from_slice(&c.to_be_bytes());
                h.extend_from_slice(&l4);
                h
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let mut ext = Vec::new();
                let mut next = self.proto();
                if let Some((off, more)) = self.fragment {
                    ext.push(next);
                    ext.push(0);
                    let field = (off as u16 & 0xFFF8) | more as u16;
                    ext.extend_from_slice(&field.to_be_bytes());
                    ext.extend_from_slice(&(self.ident as u32).to_be_bytes());
                    next = 44;
                }
                let mut h = vec![0x60, 0, 0, 0];
                let plen = self
                    .total_len_override
                    .unwrap_or((ext.len() + l4.len()) as u16);
                h.extend_from_slice(&plen.to_be_bytes());
                h.push(next);
                h.push(self.ttl);
                h.extend_from_slice(&s.octets());
                h.extend_from_slice(&d.octets());
                h.extend_from_slice(&ext);
                h.extend_from_slice(&l4);
                h
            }
            _ => unreachable!(),
        }
    }

    /// Same as `ip()`.
    pub fn raw(&self) -> Vec<u8> {
        self.ip()
    }

    /// An Ethernet II frame (with the VLAN tags added), padded to the 60-byte minimum like a NIC.
    pub fn ethernet(&self) -> Vec<u8> {
        let mut f = Vec::with_capacity(64);
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        for (tpid, id) in &self.vlans {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&(id & 0x0FFF).to_be_bytes());
        }
        f.extend_from_slice(&self.ethertype().to_be_bytes());
        f.extend_from_slice(&self.ip());
        if f.len() < 60 {
            f.resize(60, 0);
        }
        f
    }

    fn ethertype(&self) -> u16 {
        if self.src.is_ipv4() {
            0x0800
        } else {
            0x86DD
        }
    }

    /// A Linux cooked (SLL, LINKTYPE 113) frame.
    pub fn sll(&self, pkttype: u8) -> Vec<u8> {
        let mut f = vec![0, pkttype, 0x00, 0x01, 0x00, 0x06];
        f.extend_from_slice(&self.src_mac);
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(&self.ethertype().to_be_bytes());
        f.extend_from_slice(&self.ip());
        f
    }

    /// A Linux cooked v2 (SLL2, LINKTYPE 276, `tcpdump -i any`) frame.
    pub fn sll2(&self, ifindex: u32, pkttype: u8) -> Vec<u8> {
        let mut f = Vec::with_capacity(20 + 60);
        f.extend_from_slice(&self.ethertype().to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(&ifindex.to_be_bytes());
        f.extend_from_slice(&[0x00, 0x01, pkttype, 6]);
        f.extend_from_slice(&self.src_mac);
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(&self.ip());
        f
    }

    /// A BSD loopback (LINKTYPE_NULL) frame, address family in little-endian (macOS AF_INET6 = 30).
    pub fn null(&self) -> Vec<u8> {
        let af: u32 = if self.src.is_ipv4() { 2 } else { 30 };
        let mut f = af.to_le_bytes().to_vec();
        f.extend_from_slice(&self.ip());
        f
    }

    /// The frame for a link type among those above (SLL2: ifindex 1, outgoing; SLL: outgoing).
    pub fn frame(&self, linktype: u32) -> Vec<u8> {
        match linktype {
            LINKTYPE_ETHERNET => self.ethernet(),
            LINKTYPE_LINUX_SLL => self.sll(PKTTYPE_OUTGOING),
            LINKTYPE_LINUX_SLL2 => self.sll2(1, PKTTYPE_OUTGOING),
            LINKTYPE_RAW | LINKTYPE_IPV4 | LINKTYPE_IPV6 => self.ip(),
            LINKTYPE_NULL => self.null(),
            other => panic!("no frame builder for link type {other}"),
        }
    }

    /// Wrap this packet's Ethernet frame in Geneve (UDP 6081) with `options_len` bytes of options.
    pub fn geneve(
        &self,
        vni: u32,
        outer_src: impl Into<IpAddr>,
        outer_dst: impl Into<IpAddr>,
        options_len: u8,
    ) -> PacketBuilder {
        let mut p = vec![options_len / 4, 0, 0x65, 0x58];
        p.extend_from_slice(&(vni << 8).to_be_bytes());
        p.resize(8 + options_len as usize, 0);
        let mut inner = self.ethernet();
        inner.truncate(14 + 4 * self.vlans.len() + self.ip().len());
        p.extend_from_slice(&inner);
        udp(outer_src, 45000, outer_dst, 6081).payload(&p)
    }

    /// Wrap this IP packet in IP-in-IP (Calico's IPIP mode; protocol 4, or 41 for IPv6 inside).
    pub fn ipip(
        &self,
        outer_src: impl Into<IpAddr>,
        outer_dst: impl Into<IpAddr>,
    ) -> PacketBuilder {
        let proto = if self.src.is_ipv4() { 4 } else { 41 };
        ip_proto(outer_src, outer_dst, proto).payload(&self.ip())
    }

    /// Wrap this IP packet in GRE (with a key if given).
    pub fn gre(
        &self,
        outer_src: impl Into<IpAddr>,
        outer_dst: impl Into<IpAddr>,
        key: Option<u32>,
    ) -> PacketBuilder {
        let mut p = vec![if key.is_some() { 0x20 } else { 0 }, 0];
        p.extend_from_slice(&self.ethertype().to_be_bytes());
        if let Some(k) = key {
            p.extend_from_slice(&k.to_be_bytes());
        }
        p.extend_from_slice(&self.ip());
        ip_proto(outer_src, outer_dst, 47).payload(&p)
    }

    /// An Ethernet frame carrying this packet over a PPPoE session.
    pub fn pppoe(&self) -> Vec<u8> {
        let ip = self.ip();
        let mut f = Vec::new();
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        f.extend_from_slice(&[0x88, 0x64, 0x11, 0x00, 0x00, 0x07]);
        f.extend_from_slice(&((ip.len() + 2) as u16).to_be_bytes());
        f.extend_from_slice(
            &(if self.src.is_ipv4() {
                0x0021u16
            } else {
                0x0057
            })
            .to_be_bytes(),
        );
        f.extend_from_slice(&ip);
        f
    }

    /// A LINKTYPE_NFLOG (239) record: header, a prefix attribute, then the packet (little-endian TLVs).
    pub fn nflog(&self, group: u16) -> Vec<u8> {
        let family = if self.src.is_ipv4() { 2 } else { 10 };
        let mut f = vec![family, 0];
        f.extend_from_slice(&group.to_be_bytes());
        let tlv = |f: &mut Vec<u8>, kind: u16, value: &[u8]| {
            f.extend_from_slice(&((4 + value.len()) as u16).to_le_bytes());
            f.extend_from_slice(&kind.to_le_bytes());
            f.extend_from_slice(value);
            while f.len() & 3 != 0 {
                f.push(0);
            }
        };
        tlv(&mut f, 10, b"k8s-drop\0");
        tlv(&mut f, 9, &self.ip());
        f
    }

    /// Wrap this packet's Ethernet frame in VXLAN (UDP to `dport`, 4789 or flannel's 8472) between two
    /// hosts; returns the outer UDP packet builder.
    pub fn vxlan(
        &self,
        vni: u32,
        outer_src: impl Into<IpAddr>,
        outer_dst: impl Into<IpAddr>,
        dport: u16,
    ) -> PacketBuilder {
        let mut p = vec![0x08, 0, 0, 0];
        p.extend_from_slice(&(vni << 8).to_be_bytes());
        let mut inner = self.ethernet();
        // VXLAN carries the frame without NIC padding.
        inner.truncate(14 + 4 * self.vlans.len() + self.ip().len());
        p.extend_from_slice(&inner);
        udp(outer_src, 45000, outer_dst, dport).payload(&p)
    }
}

/// A DNS message under construction: the core's own [`DnsRepr`], with shorthands for tests.
#[derive(Debug, Clone)]
pub struct DnsMsg(DnsRepr);

/// A recursive query (RD set) for `name`/`qtype`.
pub fn dns_query(id: u16, name: &str, qtype: u16) -> DnsMsg {
    DnsMsg(DnsRepr::query(id, name, qtype))
}

/// A NOERROR response (QR, RD, RA) to `name`/`qtype` with no answers yet.
pub fn dns_response(id: u16, name: &str, qtype: u16) -> DnsMsg {
    DnsMsg(DnsRepr::query(id, name, qtype).response(0))
}

impl DnsMsg {
    pub fn rcode(mut self, rcode: u8) -> Self {
        self.0.flags = (self.0.flags & !dns_flags::RCODE) | (rcode as u16 & dns_flags::RCODE);
        self
    }
    /// Set the TC (truncated) bit.
    pub fn tc(mut self) -> Self {
        self.0.flags |= dns_flags::TC;
        self
    }
    /// Replace the whole flags word.
    pub fn flags(mut self, flags: u16) -> Self {
        self.0.flags = flags;
        self
    }
    fn owner(&self) -> String {
        self.0
            .question
            .as_ref()
            .map(|q| q.name.clone())
            .unwrap_or_default()
    }
    pub fn answer_a(mut self, addr: [u8; 4]) -> Self {
        let owner = self.owner();
        self.0 = self.0.answer(Record::addr(&owner, IpAddr::from(addr), 60));
        self
    }
    pub fn answer_aaaa(mut self, addr: &str) -> Self {
        let owner = self.owner();
        let a: Ipv6Addr = addr.parse().unwrap();
        self.0 = self.0.answer(Record::addr(&owner, IpAddr::V6(a), 60));
        self
    }
    pub fn answer_cname(mut self, target: &str) -> Self {
        let owner = self.owner();
        self.0 = self.0.answer(Record::cname(&owner, target, 60));
        self
    }
    /// Any record (owner name, type, rdata).
    pub fn answer_raw(mut self, owner: &str, rtype: u16, rdata: &[u8]) -> Self {
        self.0 = self.0.answer(Record::new(owner, rtype, 60, rdata));
        self
    }

    /// The message bytes (answer owners equal to the question name are compressed to a pointer).
    pub fn build(&self) -> Vec<u8> {
        self.0.emit()
    }

    /// The message with its 2-byte TCP length prefix.
    pub fn tcp_framed(&self) -> Vec<u8> {
        let m = self.build();
        let mut v = (m.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(&m);
        v
    }
}

/// Nanoseconds: a fixed start time for synthetic captures, a millisecond and a second.
pub const T0: i64 = 1_700_000_000_000_000_000;
pub const MS: i64 = 1_000_000;
pub const S: i64 = 1_000_000_000;

/// A capture under construction as `tcpdump -i any` records it (SLL2, nanosecond pcap): each packet
/// gets a fresh IPv4 identification unless it is a copy of one already recorded at another point.
pub struct SllCapture {
    w: PcapWriter,
    ident: u16,
}

impl Default for SllCapture {
    fn default() -> Self {
        SllCapture {
            w: PcapWriter::nanos(LINKTYPE_LINUX_SLL2),
            ident: 1,
        }
    }
}

impl SllCapture {
    /// Record a packet on interface `ifindex` (seen as `pkttype`) with a fresh IPv4 identification,
    /// returned for recording its copies.
    pub fn record(&mut self, ts: i64, ifindex: u32, pkttype: u8, b: PacketBuilder) -> u16 {
        self.ident = self.ident.wrapping_add(1);
        let id = self.ident;
        self.w.push(ts, &b.ident(id).sll2(ifindex, pkttype));
        id
    }

    /// Record a copy of a packet (same identification) at another point.
    pub fn copy(&mut self, ts: i64, ifindex: u32, pkttype: u8, ident: u16, b: PacketBuilder) {
        self.w.push(ts, &b.ident(ident).sll2(ifindex, pkttype));
    }

    /// The analysis of the capture with these node facts.
    pub fn analyze_with(
        self,
        node: &netsleuth_core::node::NodeContext,
    ) -> netsleuth_core::Analysis {
        netsleuth_core::analyze(
            vec![netsleuth_core::Input::stream(
                "synthetic.pcap",
                Box::new(std::io::Cursor::new(self.w.finish())),
            )],
            node,
        )
    }
}

/// The incident findings of an analysis as (id, confidence), in report order.
pub fn incident_ids(
    a: &netsleuth_core::Analysis,
) -> Vec<(&'static str, netsleuth_core::Confidence)> {
    a.findings
        .iter()
        .filter(|f| f.kind == netsleuth_core::FindingKind::Incident)
        .map(|f| (f.id, f.confidence))
        .collect()
}

/// A classic pcap file writer.
#[derive(Debug, Clone)]
pub struct PcapWriter {
    buf: Vec<u8>,
    nanos: bool,
    big_endian: bool,
}

impl PcapWriter {
    /// Microsecond, little-endian, snap length 262144.
    pub fn new(linktype: u32) -> Self {
        Self::with(linktype, false, false, 262_144)
    }

    /// Nanosecond-resolution pcap.
    pub fn nanos(linktype: u32) -> Self {
        Self::with(linktype, true, false, 262_144)
    }

    /// `linktype` is written as given (include FCS bits in the upper bits to test them).
    pub fn with(linktype: u32, nanos: bool, big_endian: bool, snaplen: u32) -> Self {
        let mut w = PcapWriter {
            buf: Vec::new(),
            nanos,
            big_endian,
        };
        let magic: u32 = if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 };
        w.u32(magic);
        w.u16(2);
        w.u16(4);
        w.u32(0);
        w.u32(0);
        w.u32(snaplen);
        w.u32(linktype);
        w
    }

    fn u16(&mut self, v: u16) {
        let b = if self.big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        self.buf.extend_from_slice(&b);
    }

    fn u32(&mut self, v: u32) {
        let b = if self.big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        self.buf.extend_from_slice(&b);
    }

    /// Add a record (builder style).
    pub fn packet(mut self, ts_ns: i64, data: &[u8]) -> Self {
        self.push(ts_ns, data);
        self
    }

    /// Add a record.
    pub fn push(&mut self, ts_ns: i64, data: &[u8]) -> &mut Self {
        self.push_cut(ts_ns, data, data.len())
    }

    /// Add a record of which only the first `caplen` bytes were captured (snap length cut).
    pub fn push_cut(&mut self, ts_ns: i64, data: &[u8], caplen: usize) -> &mut Self {
        let caplen = caplen.min(data.len());
        let sec = ts_ns.div_euclid(1_000_000_000) as u32;
        let ns = ts_ns.rem_euclid(1_000_000_000) as u32;
        let frac = if self.nanos { ns } else { ns / 1000 };
        self.push_raw(sec, frac, caplen as u32, data.len() as u32, &data[..caplen])
    }

    /// Add a record header with arbitrary fields followed by `data` (for damaged files).
    pub fn push_raw(
        &mut self,
        ts_sec: u32,
        ts_frac: u32,
        caplen: u32,
        orig_len: u32,
        data: &[u8],
    ) -> &mut Self {
        self.u32(ts_sec);
        self.u32(ts_frac);
        self.u32(caplen);
        self.u32(orig_len);
        self.buf.extend_from_slice(data);
        self
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Take the bytes written so far (to stream a large file out in pieces).
    pub fn drain(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// A pcapng writer: sections, interfaces and packet blocks.
#[derive(Debug, Clone)]
pub struct PcapNgWriter {
    buf: Vec<u8>,
    big_endian: bool,
    /// tsresol of each interface of the current section.
    iface_resol: Vec<u8>,
}

impl Default for PcapNgWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl PcapNgWriter {
    /// Little-endian, with its first section header.
    pub fn new() -> Self {
        let mut w = PcapNgWriter {
            buf: Vec::new(),
            big_endian: false,
            iface_resol: Vec::new(),
        };
        w.section();
        w
    }

    pub fn big_endian() -> Self {
        let mut w = PcapNgWriter {
            buf: Vec::new(),
            big_endian: true,
            iface_resol: Vec::new(),
        };
        w.section();
        w
    }

    fn u16b(&self, v: u16) -> [u8; 2] {
        if self.big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    }

    fn u32b(&self, v: u32) -> [u8; 4] {
        if self.big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    }

    /// Write a block of any type with the given body (padded to 4 bytes).
    pub fn block(&mut self, block_type: u32, body: &[u8]) -> &mut Self {
        let padded = body.len().div_ceil(4) * 4;
        let total = (12 + padded) as u32;
        let (t, l) = (self.u32b(block_type), self.u32b(total));
        self.buf.extend_from_slice(&t);
        self.buf.extend_from_slice(&l);
        self.buf.extend_from_slice(body);
        self.buf.resize(self.buf.len() + padded - body.len(), 0);
        self.buf.extend_from_slice(&l);
        self
    }

    fn option(&self, body: &mut Vec<u8>, code: u16, value: &[u8]) {
        body.extend_from_slice(&self.u16b(code));
        body.extend_from_slice(&self.u16b(value.len() as u16));
        body.extend_from_slice(value);
        body.resize(body.len() + value.len().div_ceil(4) * 4 - value.len(), 0);
    }

    /// Start a new section (its interfaces are numbered from 0 again).
    pub fn section(&mut self) -> &mut Self {
        let mut body = Vec::new();
        body.extend_from_slice(&self.u32b(0x1A2B_3C4D));
        body.extend_from_slice(&self.u16b(1));
        body.extend_from_slice(&self.u16b(0));
        body.extend_from_slice(&[0xFF; 8]);
        self.iface_resol.clear();
        self.block(0x0A0D_0D0A, &body)
    }

    /// Describe an interface; returns its id within the section. `tsresol`: the if_tsresol byte
    /// (6 = µs, 9 = ns, 0x80|n = 2^-n); `None` writes no option (µs default).
    pub fn interface(
        &mut self,
        linktype: u16,
        name: Option<&str>,
        tsresol: Option<u8>,
        snaplen: u32,
    ) -> u32 {
        self.interface_with_offset(linktype, name, tsresol, snaplen, None)
    }

    /// `interface` with an if_tsoffset (seconds added to every timestamp).
    pub fn interface_with_offset(
        &mut self,
        linktype: u16,
        name: Option<&str>,
        tsresol: Option<u8>,
        snaplen: u32,
        tsoffset: Option<i64>,
    ) -> u32 {
        let mut body = Vec::new();
        body.extend_from_slice(&self.u16b(linktype));
        body.extend_from_slice(&[0, 0]);
        body.extend_from_slice(&self.u32b(snaplen));
        if let Some(n) = name {
            self.option(&mut body, 2, n.as_bytes());
        }
        if let Some(r) = tsresol {
            self.option(&mut body, 9, &[r]);
        }
        if let Some(off) = tsoffset {
            let b = if self.big_endian {
                off.to_be_bytes()
            } else {
                off.to_le_bytes()
            };
            self.option(&mut body, 14, &b);
        }
        if name.is_some() || tsresol.is_some() || tsoffset.is_some() {
            self.option(&mut body, 0, &[]);
        }
        self.block(1, &body);
        self.iface_resol.push(tsresol.unwrap_or(6));
        (self.iface_resol.len() - 1) as u32
    }

    fn ts_units(&self, iface: u32, ts_ns: i64) -> u64 {
        let r = self.iface_resol.get(iface as usize).copied().unwrap_or(6);
        let ns = ts_ns as u128;
        (if r & 0x80 != 0 {
            let n = r & 0x7F;
            let secs = ns / 1_000_000_000;
            let frac = ns % 1_000_000_000;
            (secs << n) + ((frac << n) / 1_000_000_000)
        } else if r <= 9 {
            ns / 10u128.pow(9 - r as u32)
        } else {
            ns * 10u128.pow(r as u32 - 9)
        }) as u64
    }

    /// An Enhanced Packet Block with the timestamp converted to the interface's resolution.
    pub fn packet(&mut self, iface: u32, ts_ns: i64, data: &[u8]) -> &mut Self {
        let units = self.ts_units(iface, ts_ns);
        self.epb_raw(iface, units, data.len() as u32, data.len() as u32, data)
    }

    /// An Enhanced Packet Block with raw fields (for damaged files: caplen may disagree with data).
    pub fn epb_raw(
        &mut self,
        iface: u32,
        ts_units: u64,
        caplen: u32,
        orig_len: u32,
        data: &[u8],
    ) -> &mut Self {
        let mut body = Vec::new();
        body.extend_from_slice(&self.u32b(iface));
        body.extend_from_slice(&self.u32b((ts_units >> 32) as u32));
        body.extend_from_slice(&self.u32b(ts_units as u32));
        body.extend_from_slice(&self.u32b(caplen));
        body.extend_from_slice(&self.u32b(orig_len));
        body.extend_from_slice(data);
        self.block(6, &body)
    }

    /// A Simple Packet Block (no timestamp, interface 0).
    pub fn spb(&mut self, data: &[u8]) -> &mut Self {
        let mut body = self.u32b(data.len() as u32).to_vec();
        body.extend_from_slice(data);
        self.block(3, &body)
    }

    /// An obsolete Packet Block.
    pub fn opb(&mut self, iface: u16, ts_ns: i64, data: &[u8]) -> &mut Self {
        let units = self.ts_units(iface as u32, ts_ns);
        let mut body = Vec::new();
        body.extend_from_slice(&self.u16b(iface));
        body.extend_from_slice(&self.u16b(0));
        body.extend_from_slice(&self.u32b((units >> 32) as u32));
        body.extend_from_slice(&self.u32b(units as u32));
        body.extend_from_slice(&self.u32b(data.len() as u32));
        body.extend_from_slice(&self.u32b(data.len() as u32));
        body.extend_from_slice(data);
        self.block(2, &body)
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Shorthand for an IPv4 address.
pub fn v4(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
    Ipv4Addr::new(a, b, c, d)
}

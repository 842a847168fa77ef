//! IPv4 and IPv6 (with extension headers), and tunnel decapsulation (VXLAN, Geneve, GRE, IP-in-IP),
//! which needs the outer addresses.
//!
//! Lengths come from the IP header, not from the frame: Ethernet pads short frames to 60 bytes and the
//! padding must not become payload; a frame cut by the snap length keeps the header's lengths and marks
//! the packet `truncated`.

use super::field::{self, get, Short};
use super::link;
use super::proto::{EtherType, Icmpv4Message, Icmpv6Message, IpProtocol};
use super::transport;
use super::{
    DecodeError, IpHeader, Layer, LinkMeta, Net, OuterUdp, Packet, Transport, Tunnel, UdpChecksum,
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IPv4 (RFC 791).
pub mod ipv4 {
    pub mod field {
        use crate::wire::field::Field;
        /// Version (4 bits) and header length in 32-bit words (4 bits).
        pub const VER_IHL: usize = 0;
        pub const DSCP_ECN: usize = 1;
        pub const LENGTH: Field = 2..4;
        pub const IDENT: Field = 4..6;
        /// Flags (3 bits) and fragment offset in 8-byte units (13 bits).
        pub const FLG_OFF: Field = 6..8;
        pub const TTL: usize = 8;
        pub const PROTOCOL: usize = 9;
        pub const CHECKSUM: Field = 10..12;
        pub const SRC_ADDR: Field = 12..16;
        pub const DST_ADDR: Field = 16..20;
    }
    /// The fixed part; options may follow.
    pub const HEADER_LEN: usize = field::DST_ADDR.end;
    pub const FLAG_MORE_FRAGMENTS: u16 = 0x2000;
    pub const FRAG_OFFSET_MASK: u16 = 0x1FFF;
}

/// IPv6 (RFC 8200) and the extension headers walked to find the transport.
pub mod ipv6 {
    pub mod field {
        use crate::wire::field::Field;
        /// Version (4 bits), traffic class (8), flow label (20).
        pub const VER_TC_FLOW: Field = 0..4;
        pub const LENGTH: Field = 4..6;
        pub const NXT_HDR: usize = 6;
        pub const HOP_LIMIT: usize = 7;
        pub const SRC_ADDR: Field = 8..24;
        pub const DST_ADDR: Field = 24..40;
    }
    pub const HEADER_LEN: usize = field::DST_ADDR.end;

    /// The start every extension header shares: the next header and a length.
    pub mod ext {
        pub const NXT_HDR: usize = 0;
        /// In 8-byte units not counting the first 8 (options headers), or 4-byte units not counting
        /// the first 8 (AH).
        pub const LENGTH: usize = 1;
        pub const HEADER_LEN: usize = 2;
    }

    /// The fragment header (always 8 bytes).
    pub mod frag {
        use crate::wire::field::Field;
        pub const NXT_HDR: usize = 0;
        pub const RESERVED: usize = 1;
        /// Fragment offset in 8-byte units (13 bits), 2 reserved bits, M flag.
        pub const FR_OF_M: Field = 2..4;
        pub const IDENT: Field = 4..8;
        pub const HEADER_LEN: usize = IDENT.end;
        pub const OFFSET_MASK: u16 = 0xFFF8;
        pub const FLAG_MORE: u16 = 0x0001;
    }
}

/// VXLAN (RFC 7348).
pub mod vxlan {
    pub mod field {
        use crate::wire::field::{Field, Rest};
        pub const FLAGS: usize = 0;
        pub const RESERVED1: Field = 1..4;
        /// 24 bits; the byte after it is reserved.
        pub const VNI: Field = 4..7;
        pub const RESERVED2: usize = 7;
        pub const PAYLOAD: Rest = 8..;
    }
    pub const HEADER_LEN: usize = field::PAYLOAD.start;
    /// The VNI is valid.
    pub const FLAG_I: u8 = 0x08;
    /// VXLAN's IANA port and the port Linux (flannel's default) uses.
    pub const PORTS: [u16; 2] = [4789, 8472];
}

/// Geneve (RFC 8926; OVN-Kubernetes, Antrea).
pub mod geneve {
    pub mod field {
        use crate::wire::field::{Field, Rest};
        /// Version (2 bits) and options length in 4-byte units (6 bits).
        pub const VER_OPT_LEN: usize = 0;
        pub const FLAGS: usize = 1;
        pub const PROTOCOL: Field = 2..4;
        pub const VNI: Field = 4..7;
        pub const RESERVED: usize = 7;
        pub const OPTIONS: Rest = 8..;
    }
    pub const HEADER_LEN: usize = field::OPTIONS.start;
    pub const PORT: u16 = 6081;
}

/// GRE (RFC 2784/2890): flags and version, protocol, then the optional fields the flags announce.
pub mod gre {
    pub mod field {
        use crate::wire::field::{Field, Rest};
        pub const FLAGS_VER: Field = 0..2;
        pub const PROTOCOL: Field = 2..4;
        pub const OPTIONAL: Rest = 4..;
    }
    pub const HEADER_LEN: usize = field::OPTIONAL.start;
    pub const FLAG_CHECKSUM: u16 = 0x8000;
    pub const FLAG_ROUTING: u16 = 0x4000;
    pub const FLAG_KEY: u16 = 0x2000;
    pub const FLAG_SEQUENCE: u16 = 0x1000;
    /// Version 0 is GRE; version 1 is PPTP's enhanced GRE.
    pub const VERSION_MASK: u16 = 0x0007;
    /// Each optional field (checksum + reserved, key, sequence number) is 4 bytes.
    pub const OPTIONAL_FIELD_LEN: usize = 4;
}

/// An IPv4 header whose fixed 20 bytes are there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Header<'a>(&'a [u8; ipv4::HEADER_LEN]);

impl<'a> Ipv4Header<'a> {
    #[inline(always)]
    pub fn new_checked(b: &'a [u8], at: usize) -> Result<Self, Short> {
        field::bytes(b, at).map(Ipv4Header)
    }
    #[inline(always)]
    pub fn version(&self) -> u8 {
        self.0[ipv4::field::VER_IHL] >> 4
    }
    /// Header length in bytes (options included).
    #[inline(always)]
    pub fn header_len(&self) -> usize {
        ((self.0[ipv4::field::VER_IHL] & 0x0F) as usize) * 4
    }
    #[inline(always)]
    pub fn total_len(&self) -> u16 {
        u16::from_be_bytes(get(self.0, ipv4::field::LENGTH))
    }
    #[inline(always)]
    pub fn ident(&self) -> u16 {
        u16::from_be_bytes(get(self.0, ipv4::field::IDENT))
    }
    #[inline(always)]
    pub fn more_fragments(&self) -> bool {
        u16::from_be_bytes(get(self.0, ipv4::field::FLG_OFF)) & ipv4::FLAG_MORE_FRAGMENTS != 0
    }
    /// Fragment offset in bytes.
    #[inline(always)]
    pub fn frag_offset(&self) -> u32 {
        (u16::from_be_bytes(get(self.0, ipv4::field::FLG_OFF)) & ipv4::FRAG_OFFSET_MASK) as u32 * 8
    }
    #[inline(always)]
    pub fn ttl(&self) -> u8 {
        self.0[ipv4::field::TTL]
    }
    #[inline(always)]
    pub fn protocol(&self) -> IpProtocol {
        self.0[ipv4::field::PROTOCOL].into()
    }
    #[inline(always)]
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(get::<4>(self.0, ipv4::field::SRC_ADDR))
    }
    #[inline(always)]
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(get::<4>(self.0, ipv4::field::DST_ADDR))
    }
}

/// An IPv6 header whose fixed 40 bytes are there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Header<'a>(&'a [u8; ipv6::HEADER_LEN]);

impl<'a> Ipv6Header<'a> {
    #[inline(always)]
    pub fn new_checked(b: &'a [u8], at: usize) -> Result<Self, Short> {
        field::bytes(b, at).map(Ipv6Header)
    }
    #[inline(always)]
    pub fn version(&self) -> u8 {
        self.0[ipv6::field::VER_TC_FLOW.start] >> 4
    }
    /// Payload length (extension headers included).
    #[inline(always)]
    pub fn payload_len(&self) -> u16 {
        u16::from_be_bytes(get(self.0, ipv6::field::LENGTH))
    }
    #[inline(always)]
    pub fn next_header(&self) -> IpProtocol {
        self.0[ipv6::field::NXT_HDR].into()
    }
    #[inline(always)]
    pub fn hop_limit(&self) -> u8 {
        self.0[ipv6::field::HOP_LIMIT]
    }
    #[inline(always)]
    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(get::<16>(self.0, ipv6::field::SRC_ADDR))
    }
    #[inline(always)]
    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(get::<16>(self.0, ipv6::field::DST_ADDR))
    }
}

/// Fragment information of an IPv4 packet or of an IPv6 packet with a Fragment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Fragment {
    /// Offset of this fragment's data in the original datagram, in bytes.
    pub offset: u32,
    /// More fragments follow (MF flag / M bit).
    pub more_fragments: bool,
    /// Identification: IPv4's 16 bits, or IPv6's 32-bit fragment identification.
    pub id: u32,
}

/// Bound on IPv6 extension headers walked, against crafted chains.
const MAX_IPV6_EXTENSIONS: usize = 16;

/// The network layer of a packet: its header and where its payload lies.
pub(super) struct NetLayer<'a> {
    pub ip: IpHeader,
    /// The captured bytes of the frame up to the end of the IP packet (link padding excluded).
    pub ip_bytes: &'a [u8],
    /// Where the IP payload (after IPv6 extension headers) starts in `ip_bytes`.
    pub payload_at: usize,
    /// IP payload length as the header declares it.
    pub payload_len: u32,
    /// The capture holds less of the IP packet than it declares.
    pub truncated: bool,
}

/// Decode the IP packet starting at `at` (and what it carries). `tunnel_allowed` is false inside a
/// tunnel: only one level of encapsulation is opened.
#[inline(always)]
pub(super) fn decode(
    frame: &[u8],
    at: usize,
    net: Net,
    link: LinkMeta,
    tunnel_allowed: bool,
) -> Result<Packet<'_>, DecodeError> {
    let n = network(frame, at, net)?;
    // A later fragment carries no transport header.
    if matches!(n.ip.fragment, Some(f) if f.offset != 0) {
        return Ok(Packet {
            link,
            tunnel: None,
            ip: n.ip,
            transport: Transport::Other,
            truncated: n.truncated,
        });
    }
    let fragmented = n.ip.fragment.is_some();
    let t = transport::decode(
        n.ip_bytes,
        n.payload_at,
        n.ip.proto,
        n.payload_len,
        fragmented,
    )?;
    if tunnel_allowed && !fragmented && may_be_tunnel(&t.transport, n.ip.proto) {
        if let Some(inner) = open_tunnel(&n, &t, link) {
            return Ok(inner);
        }
    }
    // Built once, in place: the packet is large and copies of it are what a decoder spends time on.
    Ok(Packet {
        link,
        tunnel: None,
        ip: n.ip,
        transport: t.transport,
        truncated: n.truncated || t.truncated,
    })
}

#[inline(always)]
pub(super) fn network(frame: &[u8], at: usize, net: Net) -> Result<NetLayer<'_>, DecodeError> {
    match net {
        Net::V4 => ipv4(frame, at),
        Net::V6 => ipv6(frame, at),
    }
}

#[inline(always)]
fn ipv4(frame: &[u8], at: usize) -> Result<NetLayer<'_>, DecodeError> {
    let Ok(h) = Ipv4Header::new_checked(frame, at) else {
        return Err(DecodeError::Truncated {
            layer: Layer::Ipv4,
            offset: at,
        });
    };
    if h.version() != 4 {
        return Err(DecodeError::Malformed {
            layer: Layer::Ipv4,
            offset: at,
            what: "IP version is not 4",
        });
    }
    let header_len = h.header_len();
    if header_len < ipv4::HEADER_LEN {
        return Err(DecodeError::Malformed {
            layer: Layer::Ipv4,
            offset: at,
            what: "IPv4 header length below 20",
        });
    }
    let declared = h.total_len() as usize;
    if frame.len() < at + header_len {
        return Err(DecodeError::Truncated {
            layer: Layer::Ipv4,
            offset: at,
        });
    }
    let captured = frame.len() - at;
    // Total length 0 is what Linux shows for TSO super-segments captured on the way out: trust the
    // captured bytes then.
    let total_len = if declared == 0 {
        captured
    } else if declared < header_len {
        return Err(DecodeError::Malformed {
            layer: Layer::Ipv4,
            offset: at + ipv4::field::LENGTH.start,
            what: "IPv4 total length below the header length",
        });
    } else {
        declared
    };
    let ip_truncated = captured < total_len;
    // Ignore link padding beyond the IP packet.
    let ip_bytes = &frame[..at + total_len.min(captured)];

    let ident = h.ident();
    let more_fragments = h.more_fragments();
    let frag_offset = h.frag_offset();
    let fragment = (more_fragments || frag_offset != 0).then_some(Ipv4Fragment {
        offset: frag_offset,
        more_fragments,
        id: ident as u32,
    });
    let ip = IpHeader {
        src: IpAddr::V4(h.src_addr()),
        dst: IpAddr::V4(h.dst_addr()),
        proto: h.protocol(),
        ttl: h.ttl(),
        ident,
        total_len: total_len as u32,
        fragment,
    };
    Ok(NetLayer {
        ip,
        ip_bytes,
        payload_at: at + header_len,
        payload_len: (total_len - header_len) as u32,
        truncated: ip_truncated,
    })
}

#[inline(always)]
fn ipv6(frame: &[u8], at: usize) -> Result<NetLayer<'_>, DecodeError> {
    let Ok(h) = Ipv6Header::new_checked(frame, at) else {
        return Err(DecodeError::Truncated {
            layer: Layer::Ipv6,
            offset: at,
        });
    };
    if h.version() != 6 {
        return Err(DecodeError::Malformed {
            layer: Layer::Ipv6,
            offset: at,
            what: "IP version is not 6",
        });
    }
    let declared = h.payload_len() as usize;
    let mut next = h.next_header();
    let captured = frame.len() - at - ipv6::HEADER_LEN;
    // Payload length 0: a jumbogram or a TSO super-segment; use what was captured.
    let payload_total = if declared == 0 { captured } else { declared };
    let ip_truncated = captured < payload_total;
    let ip_bytes = &frame[..at + ipv6::HEADER_LEN + payload_total.min(captured)];

    let mut p = at + ipv6::HEADER_LEN;
    let mut remaining = payload_total;
    let mut fragment = None;
    let mut later_fragment = false;
    let cut = |p: usize| {
        move |_: Short| DecodeError::Truncated {
            layer: Layer::Ipv6,
            offset: p,
        }
    };
    for _ in 0..MAX_IPV6_EXTENSIONS {
        let ext_len = match next {
            IpProtocol::Ipv6Frag => {
                let e = field::bytes::<{ ipv6::frag::HEADER_LEN }>(ip_bytes, p).map_err(cut(p))?;
                next = e[ipv6::frag::NXT_HDR].into();
                let fr_of_m = u16::from_be_bytes(get(e, ipv6::frag::FR_OF_M));
                let offset = (fr_of_m & ipv6::frag::OFFSET_MASK) as u32;
                fragment = Some(Ipv4Fragment {
                    offset,
                    more_fragments: fr_of_m & ipv6::frag::FLAG_MORE != 0,
                    id: u32::from_be_bytes(get(e, ipv6::frag::IDENT)),
                });
                later_fragment = offset != 0;
                ipv6::frag::HEADER_LEN
            }
            IpProtocol::Ah => {
                let e = field::bytes::<{ ipv6::ext::HEADER_LEN }>(ip_bytes, p).map_err(cut(p))?;
                next = e[ipv6::ext::NXT_HDR].into();
                (e[ipv6::ext::LENGTH] as usize + 2) * 4
            }
            proto if proto.is_ipv6_option_header() => {
                let e = field::bytes::<{ ipv6::ext::HEADER_LEN }>(ip_bytes, p).map_err(cut(p))?;
                next = e[ipv6::ext::NXT_HDR].into();
                (e[ipv6::ext::LENGTH] as usize + 1) * 8
            }
            _ => break,
        };
        if ext_len > remaining {
            return Err(DecodeError::Malformed {
                layer: Layer::Ipv6,
                offset: p,
                what: "IPv6 extension header longer than the payload",
            });
        }
        p += ext_len;
        remaining -= ext_len;
        if later_fragment {
            break;
        }
    }
    let ip = IpHeader {
        src: IpAddr::V6(h.src_addr()),
        dst: IpAddr::V6(h.dst_addr()),
        proto: next,
        ttl: h.hop_limit(),
        ident: 0,
        total_len: (ipv6::HEADER_LEN + payload_total) as u32,
        fragment,
    };
    Ok(NetLayer {
        ip,
        ip_bytes,
        payload_at: p,
        payload_len: remaining as u32,
        truncated: ip_truncated,
    })
}

/// Whether the transport may be a tunnel we open: the cheap test on the hot path.
#[inline(always)]
fn may_be_tunnel(t: &Transport<'_>, proto: IpProtocol) -> bool {
    match t {
        Transport::Udp(u) => vxlan::PORTS.contains(&u.dst_port) || u.dst_port == geneve::PORT,
        Transport::Other => matches!(proto, IpProtocol::IpIp | IpProtocol::Ipv6 | IpProtocol::Gre),
        _ => false,
    }
}

/// Decapsulate VXLAN, Geneve, GRE or IP-in-IP; `None` if it is not valid or the inner packet does not
/// decode (an ARP inside VXLAN, a capture cut inside the inner headers): the outer packet is then the
/// better answer.
#[cold]
#[inline(never)]
fn open_tunnel<'a>(
    n: &NetLayer<'a>,
    t: &transport::Decoded<'a>,
    link: LinkMeta,
) -> Option<Packet<'a>> {
    let (b, at) = (n.ip_bytes, t.payload_at);
    let udp_at = at - transport::udp::HEADER_LEN;
    let udp = match t.transport {
        Transport::Udp(u) => Some(OuterUdp {
            src_port: u.src_port,
            dst_port: u.dst_port,
            checksum: transport::udp_checksum(b, udp_at, n.ip.src, n.ip.dst, u.payload_len),
        }),
        _ => None,
    };
    let outer = Outer {
        src: n.ip.src,
        dst: n.ip.dst,
        link,
        truncated: n.truncated || t.truncated,
        udp,
        udp_at,
    };
    match t.transport {
        Transport::Udp(udp) if vxlan::PORTS.contains(&udp.dst_port) => vxlan(b, at, &outer),
        Transport::Udp(udp) if udp.dst_port == geneve::PORT => geneve(b, at, &outer),
        Transport::Other => match n.ip.proto {
            IpProtocol::IpIp => inner_packet(b, at, Inner::Ip(Net::V4), 0, &outer),
            IpProtocol::Ipv6 => inner_packet(b, at, Inner::Ip(Net::V6), 0, &outer),
            IpProtocol::Gre => gre(b, at, &outer),
            _ => None,
        },
        _ => None,
    }
}

/// What the inner packet inherits from the outer one.
struct Outer {
    src: IpAddr,
    dst: IpAddr,
    link: LinkMeta,
    truncated: bool,
    udp: Option<OuterUdp>,
    /// Where the outer UDP header starts (when `udp` is set).
    udp_at: usize,
}

/// What a tunnel carries.
enum Inner {
    Ethernet,
    Ip(Net),
}

impl Inner {
    /// What a Geneve or GRE protocol field announces.
    fn of(ethertype: EtherType) -> Option<Inner> {
        match ethertype {
            EtherType::TransparentEthernet => Some(Inner::Ethernet),
            EtherType::Ipv4 => Some(Inner::Ip(Net::V4)),
            EtherType::Ipv6 => Some(Inner::Ip(Net::V6)),
            _ => None,
        }
    }
}

/// Decode the packet a tunnel carries at `at`.
fn inner_packet<'a>(
    ip_bytes: &'a [u8],
    at: usize,
    inner: Inner,
    vni: u32,
    outer: &Outer,
) -> Option<Packet<'a>> {
    let (net, inner_at) = match inner {
        Inner::Ethernet => {
            let (net, inner_at, _inner_vlan) = link::ethernet(ip_bytes, at).ok()?;
            (net, inner_at)
        }
        Inner::Ip(net) => (net, at),
    };
    let mut packet = decode(ip_bytes, inner_at, net, outer.link, false).ok()?;
    let mut udp = outer.udp;
    if let Some(u) = &mut udp {
        if matches!(u.checksum, UdpChecksum::Invalid { .. })
            && local_checksum_offload(ip_bytes, outer, inner_at, net, &packet)
        {
            u.checksum = UdpChecksum::OffloadPending;
        }
    }
    packet.tunnel = Some(Tunnel {
        vni,
        outer_src: outer.src,
        outer_dst: outer.dst,
        udp,
    });
    packet.truncated |= outer.truncated;
    Some(packet)
}

/// Whether a wrong outer UDP checksum is local checksum offload at work: the inner TCP/UDP checksum
/// holds only its pseudo-header sum (the NIC fills it in) and the outer checksum was computed for the
/// packet as it will be then. Only for packets whose outer checksum is wrong.
#[cold]
fn local_checksum_offload(
    ip_bytes: &[u8],
    outer: &Outer,
    inner_ip_at: usize,
    net: Net,
    inner: &Packet<'_>,
) -> bool {
    if inner.ip.fragment.is_some() {
        return false;
    }
    let (l4_at, header_len) = match net {
        Net::V4 => {
            let Some(b) = ip_bytes.get(inner_ip_at) else {
                return false;
            };
            let ihl = ((b & 0x0F) as usize) * 4;
            (inner_ip_at + ihl, ihl)
        }
        // Extension headers would move the transport; a tunnel's inner IPv6 packet rarely has them.
        Net::V6 => {
            if ip_bytes.get(inner_ip_at + ipv6::field::NXT_HDR).copied()
                != Some(u8::from(inner.ip.proto))
            {
                return false;
            }
            (inner_ip_at + ipv6::HEADER_LEN, 0)
        }
    };
    let l4_len = match net {
        Net::V4 => (inner.ip.total_len as usize).saturating_sub(header_len),
        Net::V6 => (inner.ip.total_len as usize).saturating_sub(ipv6::HEADER_LEN),
    };
    transport::right_once_inner_completed(
        ip_bytes,
        outer.udp_at,
        (outer.src, outer.dst),
        l4_at,
        l4_len,
        (inner.ip.src, inner.ip.dst),
        inner.ip.proto,
    )
}

/// A 24-bit VNI (VXLAN, Geneve).
fn vni(h: &[u8; 8], f: field::Field) -> u32 {
    let [a, b, c] = get::<3>(h, f);
    u32::from_be_bytes([0, a, b, c])
}

/// VXLAN: flags with the I bit, 24-bit VNI, then an Ethernet frame.
fn vxlan<'a>(ip_bytes: &'a [u8], at: usize, outer: &Outer) -> Option<Packet<'a>> {
    let h = field::bytes::<{ vxlan::HEADER_LEN }>(ip_bytes, at).ok()?;
    // The I flag says the VNI is valid; without it this is not VXLAN as we know it.
    if h[vxlan::field::FLAGS] & vxlan::FLAG_I == 0 {
        return None;
    }
    let vni = vni(h, vxlan::field::VNI);
    inner_packet(
        ip_bytes,
        at + vxlan::HEADER_LEN,
        Inner::Ethernet,
        vni,
        outer,
    )
}

/// Geneve: 8 bytes plus options, protocol type, 24-bit VNI.
fn geneve<'a>(ip_bytes: &'a [u8], at: usize, outer: &Outer) -> Option<Packet<'a>> {
    let h = field::bytes::<{ geneve::HEADER_LEN }>(ip_bytes, at).ok()?;
    let ver_opt_len = h[geneve::field::VER_OPT_LEN];
    if ver_opt_len >> 6 != 0 {
        return None;
    }
    let options_len = ((ver_opt_len & 0x3F) as usize) * 4;
    let vni = vni(h, geneve::field::VNI);
    let inner = Inner::of(u16::from_be_bytes(get(h, geneve::field::PROTOCOL)).into())?;
    inner_packet(
        ip_bytes,
        at + geneve::HEADER_LEN + options_len,
        inner,
        vni,
        outer,
    )
}

/// GRE carrying IP or Ethernet; the key, if present, is reported as the VNI.
fn gre<'a>(ip_bytes: &'a [u8], at: usize, outer: &Outer) -> Option<Packet<'a>> {
    let h = field::bytes::<{ gre::HEADER_LEN }>(ip_bytes, at).ok()?;
    let flags = u16::from_be_bytes(get(h, gre::field::FLAGS_VER));
    // Version 0 only (version 1 is PPTP's enhanced GRE); no routing field.
    if flags & gre::VERSION_MASK != 0 || flags & gre::FLAG_ROUTING != 0 {
        return None;
    }
    let mut p = at + gre::HEADER_LEN;
    if flags & gre::FLAG_CHECKSUM != 0 {
        p += gre::OPTIONAL_FIELD_LEN;
    }
    let mut key = 0;
    if flags & gre::FLAG_KEY != 0 {
        key = field::be32(ip_bytes, field::at::<4>(p)).ok()?;
        p += gre::OPTIONAL_FIELD_LEN;
    }
    if flags & gre::FLAG_SEQUENCE != 0 {
        p += gre::OPTIONAL_FIELD_LEN;
    }
    let inner = Inner::of(u16::from_be_bytes(get(h, gre::field::PROTOCOL)).into())?;
    inner_packet(ip_bytes, p, inner, key, outer)
}

/// The packet quoted in an ICMP or ICMPv6 error (destination unreachable, time exceeded, parameter
/// problem, ...) of the IP packet at `at`, decoded as far as the quote goes (usually `truncated`).
pub(super) fn icmp_quote(frame: &[u8], at: usize, net: Net, link: LinkMeta) -> Option<Packet<'_>> {
    let n = network(frame, at, net).ok()?;
    if matches!(n.ip.fragment, Some(f) if f.offset != 0) {
        return None;
    }
    let t = transport::decode(
        n.ip_bytes,
        n.payload_at,
        n.ip.proto,
        n.payload_len,
        n.ip.fragment.is_some(),
    )
    .ok()?;
    let Transport::Icmp { v6, icmp_type, .. } = t.transport else {
        return None;
    };
    let quotes = if v6 {
        Icmpv6Message::from(icmp_type).quotes_packet()
    } else {
        Icmpv4Message::from(icmp_type).quotes_packet()
    };
    if !quotes {
        return None;
    }
    let inner = match n.ip_bytes.get(t.payload_at)? >> 4 {
        4 => Net::V4,
        6 => Net::V6,
        _ => return None,
    };
    decode(n.ip_bytes, t.payload_at, inner, link, false).ok()
}

#[cfg(test)]
mod tests {
    use crate::capture::test_support::*;
    use crate::wire::{
        decode, DecodeError, IpProtocol, Layer, PacketDirection, TcpOptions, Transport,
    };
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn header_views_check_once_then_read_every_field() {
        use crate::wire::ip::*;
        let f = tcp([10, 1, 2, 3], 1, [10, 9, 8, 7], 2)
            .ttl(63)
            .ident(0xBEEF)
            .fragment(1480, true)
            .raw();
        let h = Ipv4Header::new_checked(&f, 0).unwrap();
        assert_eq!((h.version(), h.header_len()), (4, 20));
        assert_eq!(
            (h.total_len() as usize, h.ident(), h.ttl()),
            (f.len(), 0xBEEF, 63)
        );
        assert_eq!((h.more_fragments(), h.frag_offset()), (true, 1480));
        assert_eq!(h.protocol(), IpProtocol::Tcp);
        assert_eq!(
            (h.src_addr().octets(), h.dst_addr().octets()),
            ([10, 1, 2, 3], [10, 9, 8, 7])
        );
        assert!(Ipv4Header::new_checked(&f[..19], 0).is_err());
        assert!(Ipv4Header::new_checked(&f[..20], 1).is_err());

        let f = udp_v6("fd00::1", 53, "fd00::2", 9).payload(b"abc").raw();
        let h = Ipv6Header::new_checked(&f, 0).unwrap();
        assert_eq!((h.version(), h.payload_len(), h.hop_limit()), (6, 11, 64));
        assert_eq!(h.next_header(), IpProtocol::Udp);
        assert_eq!(
            (IpAddr::V6(h.src_addr()), IpAddr::V6(h.dst_addr())),
            (ip("fd00::1"), ip("fd00::2"))
        );
        assert!(Ipv6Header::new_checked(&f[..39], 0).is_err());

        for f in [
            ipv4::field::LENGTH,
            ipv4::field::IDENT,
            ipv4::field::FLG_OFF,
            ipv4::field::CHECKSUM,
            ipv4::field::SRC_ADDR,
            ipv4::field::DST_ADDR,
        ] {
            assert!(f.end <= ipv4::HEADER_LEN, "{f:?}");
        }
        const { assert!(ipv4::field::PROTOCOL < ipv4::HEADER_LEN) };
        for f in [
            ipv6::field::VER_TC_FLOW,
            ipv6::field::LENGTH,
            ipv6::field::SRC_ADDR,
            ipv6::field::DST_ADDR,
        ] {
            assert!(f.end <= ipv6::HEADER_LEN, "{f:?}");
        }
        const { assert!(vxlan::field::VNI.end <= vxlan::HEADER_LEN) };
        const { assert!(geneve::field::VNI.end <= geneve::HEADER_LEN) };
        const { assert!(gre::field::PROTOCOL.end <= gre::HEADER_LEN) };
        assert_eq!(ipv6::frag::HEADER_LEN, 8);
    }

    #[test]
    fn ethernet_ipv4_tcp_with_options() {
        let f = tcp([10, 1, 2, 3], 40000, [10, 9, 8, 7], 443)
            .seq(0xDEAD_BEEF)
            .ack(7)
            .flags(SYN | ACK)
            .window(29200)
            .mss(1460)
            .sack_ok()
            .ts(111, 222)
            .wscale(7)
            .ttl(63)
            .ident(0xBEEF)
            .payload(b"hello")
            .ethernet();
        let p = decode(LINKTYPE_ETHERNET, &f).unwrap();
        assert_eq!(p.ip.src, ip("10.1.2.3"));
        assert_eq!(p.ip.dst, ip("10.9.8.7"));
        assert_eq!(
            (p.ip.proto, p.ip.ttl, p.ip.ident, p.ip.fragment),
            (IpProtocol::Tcp, 63, 0xBEEF, None)
        );
        assert_eq!(p.ip.total_len as usize, f.len() - 14);
        assert!(!p.truncated && p.tunnel.is_none() && p.link.vlan.is_none());
        let Transport::Tcp(t) = p.transport else {
            panic!("{:?}", p.transport)
        };
        assert_eq!(
            (t.src_port, t.dst_port, t.seq, t.ack, t.window),
            (40000, 443, 0xDEAD_BEEF, 7, 29200)
        );
        assert!(t.has(SYN) && t.has(ACK) && !t.has(RST));
        assert_eq!(
            t.options.parsed(),
            TcpOptions {
                mss: Some(1460),
                wscale: Some(7),
                sack_permitted: true,
                timestamp: Some((111, 222))
            }
        );
        assert_eq!((t.payload_len, t.payload), (5, &b"hello"[..]));
    }

    #[test]
    fn ethernet_padding_is_not_payload() {
        let f = udp([1, 1, 1, 1], 53, [2, 2, 2, 2], 5353)
            .payload(b"ab")
            .ethernet();
        assert_eq!(f.len(), 60);
        let p = decode(LINKTYPE_ETHERNET, &f).unwrap();
        let Transport::Udp(u) = p.transport else {
            panic!()
        };
        assert_eq!((u.payload_len, u.payload), (2, &b"ab"[..]));
        assert!(!p.truncated);
        // Same for TCP: a bare ACK padded by the NIC has no payload.
        let f = tcp([1, 1, 1, 1], 1, [2, 2, 2, 2], 2).ethernet();
        let Transport::Tcp(t) = decode(LINKTYPE_ETHERNET, &f).unwrap().transport else {
            panic!()
        };
        assert_eq!((t.payload_len, t.payload.len()), (0, 0));
    }

    #[test]
    fn snaplen_cuts_payload_then_headers() {
        let f = tcp([1, 1, 1, 1], 1, [2, 2, 2, 2], 2)
            .ts(1, 2)
            .payload(&[9; 100])
            .ethernet();
        let tcp_at = 14 + 20;
        let payload_at = tcp_at + 32;
        let p = decode(LINKTYPE_ETHERNET, &f[..payload_at + 10]).unwrap();
        assert!(p.truncated);
        let Transport::Tcp(t) = p.transport else {
            panic!()
        };
        assert_eq!((t.payload_len, t.payload.len()), (100, 10));
        // Cut inside the options: options as far as captured, marked truncated.
        let p = decode(LINKTYPE_ETHERNET, &f[..tcp_at + 24]).unwrap();
        assert!(p.truncated);
        let Transport::Tcp(t) = p.transport else {
            panic!()
        };
        assert_eq!(t.options.timestamp(), None);
        assert_eq!(t.payload.len(), 0);
        assert_eq!(
            decode(LINKTYPE_ETHERNET, &f[..tcp_at + 19]).unwrap_err(),
            DecodeError::Truncated {
                layer: Layer::Tcp,
                offset: tcp_at
            }
        );
        assert_eq!(
            decode(LINKTYPE_ETHERNET, &f[..30]).unwrap_err(),
            DecodeError::Truncated {
                layer: Layer::Ipv4,
                offset: 14
            }
        );
        assert_eq!(
            decode(LINKTYPE_ETHERNET, &f[..13]).unwrap_err(),
            DecodeError::Truncated {
                layer: Layer::Link,
                offset: 0
            }
        );
    }

    #[test]
    fn ipv4_fragments_only_the_first_has_a_transport() {
        let first = udp([1, 1, 1, 1], 53, [2, 2, 2, 2], 4000)
            .udp_len(8 + 3000)
            .payload(&[0; 1472])
            .ident(77)
            .fragment(0, true)
            .raw();
        let p = decode(LINKTYPE_RAW, &first).unwrap();
        let frag = p.ip.fragment.unwrap();
        assert_eq!((frag.offset, frag.more_fragments, frag.id), (0, true, 77));
        let Transport::Udp(u) = p.transport else {
            panic!()
        };
        assert_eq!((u.payload_len, u.payload.len()), (3000, 1472));
        assert!(!p.truncated);
        let later = udp([1, 1, 1, 1], 53, [2, 2, 2, 2], 4000)
            .payload(&[0; 1536])
            .ident(77)
            .fragment(1480, false)
            .raw();
        let p = decode(LINKTYPE_IPV4, &later).unwrap();
        assert_eq!(p.transport, Transport::Other);
        let frag = p.ip.fragment.unwrap();
        assert_eq!((frag.offset, frag.more_fragments), (1480, false));
    }

    #[test]
    fn ipv6_extension_headers_are_walked() {
        let base = tcp_v6("fd00::1", 5000, "fd00::2", 80)
            .flags(SYN)
            .mss(1440)
            .raw();
        // Insert hop-by-hop (8 bytes) and destination options (16 bytes) before TCP.
        let mut f = base[..40].to_vec();
        f[6] = 0; // next header: hop-by-hop
        let l4 = &base[40..];
        f.extend_from_slice(&[60, 0, 1, 4, 0, 0, 0, 0]);
        f.extend_from_slice(&[6, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        f.extend_from_slice(l4);
        let plen = (f.len() - 40) as u16;
        f[4..6].copy_from_slice(&plen.to_be_bytes());
        let p = decode(LINKTYPE_IPV6, &f).unwrap();
        assert_eq!(p.ip.proto, IpProtocol::Tcp);
        assert_eq!((p.ip.src, p.ip.ident), (ip("fd00::1"), 0));
        let Transport::Tcp(t) = p.transport else {
            panic!()
        };
        assert_eq!((t.dst_port, t.options.parsed().mss), (80, Some(1440)));
        // Cut inside the destination options header: the transport cannot be found.
        assert_eq!(
            decode(LINKTYPE_IPV6, &f[..49]).unwrap_err(),
            DecodeError::Truncated {
                layer: Layer::Ipv6,
                offset: 48
            }
        );
    }

    #[test]
    fn ipv6_fragments() {
        let first = udp_v6("fd00::1", 53, "fd00::2", 1000)
            .payload(&[1; 64])
            .ident(9)
            .fragment(0, true)
            .raw();
        let p = decode(LINKTYPE_RAW, &first).unwrap();
        assert_eq!(p.ip.proto, IpProtocol::Udp);
        let frag = p.ip.fragment.unwrap();
        assert_eq!((frag.offset, frag.more_fragments, frag.id), (0, true, 9));
        assert!(matches!(p.transport, Transport::Udp(_)));
        let later = udp_v6("fd00::1", 53, "fd00::2", 1000)
            .payload(&[1; 64])
            .ident(9)
            .fragment(72, false)
            .raw();
        let p = decode(LINKTYPE_RAW, &later).unwrap();
        assert_eq!(p.transport, Transport::Other);
        assert_eq!(p.ip.fragment.unwrap().offset, 72);
    }

    #[test]
    fn sll2_and_sll_and_null_links() {
        let pkt = udp_v6("2001:db8::1", 33000, "2001:db8::53", 53).payload(b"x");
        let f = pkt.sll2(12, PKTTYPE_OUTGOING);
        let p = decode(LINKTYPE_LINUX_SLL2, &f).unwrap();
        assert_eq!(p.link.ifindex, Some(12));
        assert_eq!(p.link.direction, Some(PacketDirection::Outgoing));
        assert_eq!(p.ip.dst, ip("2001:db8::53"));
        let f = pkt.sll(PKTTYPE_HOST);
        let p = decode(LINKTYPE_LINUX_SLL, &f).unwrap();
        assert_eq!(
            (p.link.ifindex, p.link.direction),
            (None, Some(PacketDirection::Incoming))
        );
        let f = pkt.null();
        let p = decode(LINKTYPE_NULL, &f).unwrap();
        assert_eq!(p.ip.src, ip("2001:db8::1"));
        let mut looped = pkt.null();
        looped[..4].copy_from_slice(&28u32.to_be_bytes());
        assert!(decode(LINKTYPE_LOOP, &looped).is_ok());
    }

    #[test]
    fn vlan_tags_are_skipped_and_the_outer_id_kept() {
        let f = tcp([1, 1, 1, 1], 1, [2, 2, 2, 2], 2)
            .qinq(100)
            .vlan(200)
            .ethernet();
        let p = decode(LINKTYPE_ETHERNET, &f).unwrap();
        assert_eq!(p.link.vlan, Some(100));
        assert!(matches!(p.transport, Transport::Tcp(_)));
    }

    #[test]
    fn vxlan_gives_the_inner_packet() {
        let inner = tcp([10, 244, 1, 5], 34567, [10, 244, 2, 9], 8080)
            .flags(SYN)
            .seq(42);
        for port in [4789, 8472] {
            let outer = inner
                .vxlan(1, [192, 168, 0, 1], [192, 168, 0, 2], port)
                .ethernet();
            let p = decode(LINKTYPE_ETHERNET, &outer).unwrap();
            let t = p.tunnel.unwrap();
            assert_eq!(
                (t.vni, t.outer_src, t.outer_dst),
                (1, ip("192.168.0.1"), ip("192.168.0.2"))
            );
            assert_eq!(p.ip.src, ip("10.244.1.5"));
            let Transport::Tcp(s) = p.transport else {
                panic!()
            };
            assert_eq!((s.dst_port, s.seq), (8080, 42));
        }
        // Not VXLAN on another port, and no I flag: the outer UDP packet.
        let outer = inner
            .vxlan(1, [192, 168, 0, 1], [192, 168, 0, 2], 4790)
            .ethernet();
        assert!(decode(LINKTYPE_ETHERNET, &outer).unwrap().tunnel.is_none());
        let mut f = inner
            .vxlan(1, [192, 168, 0, 1], [192, 168, 0, 2], 4789)
            .ethernet();
        f[14 + 20 + 8] = 0;
        let p = decode(LINKTYPE_ETHERNET, &f).unwrap();
        assert!(p.tunnel.is_none());
        assert!(matches!(p.transport, Transport::Udp(u) if u.dst_port == 4789));
    }

    #[test]
    fn the_outer_udp_checksum_of_a_tunnel_is_verified() {
        use crate::wire::UdpChecksum;
        let inner = tcp([10, 244, 1, 5], 34567, [10, 244, 2, 9], 8080)
            .flags(ACK)
            .payload(&[7; 101]);
        let checksum = |mode: UdpChecksumMode, v6: bool| {
            let outer = if v6 {
                let b = inner.vxlan(1, [0u8; 4], [0u8; 4], 4789);
                // The same VXLAN payload between two IPv6 hosts.
                udp_v6("fd00::1", 45000, "fd00::2", 4789).payload(&b.transport_bytes()[8..])
            } else {
                inner.vxlan(1, [192, 168, 0, 1], [192, 168, 0, 2], 8472)
            };
            let f = outer.udp_checksum(mode).ethernet();
            decode(LINKTYPE_ETHERNET, &f)
                .unwrap()
                .tunnel
                .unwrap()
                .udp
                .unwrap()
                .checksum
        };
        for v6 in [false, true] {
            assert_eq!(checksum(UdpChecksumMode::Computed, v6), UdpChecksum::Valid);
            assert_eq!(checksum(UdpChecksumMode::Zero, v6), UdpChecksum::Absent);
            assert_eq!(
                checksum(UdpChecksumMode::PseudoHeaderOnly, v6),
                UdpChecksum::OffloadPending
            );
            let UdpChecksum::Invalid { found, expected } =
                checksum(UdpChecksumMode::Value(0xBAD1), v6)
            else {
                panic!("a wrong checksum is invalid")
            };
            assert_eq!(found, 0xBAD1);
            // The value it should have carried verifies.
            assert_eq!(
                checksum(UdpChecksumMode::Value(expected), v6),
                UdpChecksum::Valid
            );
        }
        // Cut by the snap length inside the inner payload: the inner headers decode, the sum cannot.
        let f = inner
            .vxlan(1, [192, 168, 0, 1], [192, 168, 0, 2], 4789)
            .ethernet();
        let p = decode(LINKTYPE_ETHERNET, &f[..f.len() - 40]).unwrap();
        assert!(p.truncated);
        assert_eq!(
            p.tunnel.unwrap().udp.unwrap().checksum,
            UdpChecksum::Unverifiable
        );
        // Geneve's outer checksum is verified the same way.
        for (mode, want_valid) in [
            (UdpChecksumMode::Computed, true),
            (UdpChecksumMode::Value(0xBAD1), false),
        ] {
            let f = inner
                .geneve(9, [192, 168, 0, 1], [192, 168, 0, 2], 4)
                .udp_checksum(mode)
                .ethernet();
            let c = decode(LINKTYPE_ETHERNET, &f)
                .unwrap()
                .tunnel
                .unwrap()
                .udp
                .unwrap()
                .checksum;
            assert_eq!(c == UdpChecksum::Valid, want_valid, "{c:?}");
            assert!(want_valid || matches!(c, UdpChecksum::Invalid { found: 0xBAD1, .. }));
        }
        // GRE has no UDP header.
        let g = inner.gre([1, 1, 1, 1], [2, 2, 2, 2], None).ethernet();
        assert_eq!(
            decode(LINKTYPE_ETHERNET, &g).unwrap().tunnel.unwrap().udp,
            None
        );
    }

    #[test]
    fn geneve_gre_and_ipip_give_the_inner_packet() {
        let inner = udp([10, 1, 0, 5], 40000, [10, 96, 0, 10], 53)
            .payload(&dns_query(7, "kube-dns", 1).build());
        let cases = [
            (
                inner
                    .geneve(99, [192, 168, 0, 1], [192, 168, 0, 2], 8)
                    .ethernet(),
                99,
            ),
            (
                inner
                    .gre([192, 168, 0, 1], [192, 168, 0, 2], Some(1234))
                    .ethernet(),
                1234,
            ),
            (
                inner
                    .gre([192, 168, 0, 1], [192, 168, 0, 2], None)
                    .ethernet(),
                0,
            ),
            (inner.ipip([192, 168, 0, 1], [192, 168, 0, 2]).ethernet(), 0),
        ];
        for (f, vni) in cases {
            let p = decode(LINKTYPE_ETHERNET, &f).unwrap();
            let t = p
                .tunnel
                .unwrap_or_else(|| panic!("no tunnel for vni {vni}: {p:?}"));
            assert_eq!(
                (t.vni, t.outer_src, t.outer_dst),
                (vni, ip("192.168.0.1"), ip("192.168.0.2"))
            );
            assert_eq!((p.ip.src, p.ip.dst), (ip("10.1.0.5"), ip("10.96.0.10")));
            assert!(
                matches!(p.transport, Transport::Udp(u) if u.dst_port == 53 && u.payload.len() == u.payload_len as usize)
            );
        }
        let v6 = tcp_v6("fd00::1", 1, "fd00::2", 2)
            .flags(SYN)
            .ipip(ip("2001:db8::1"), ip("2001:db8::2"))
            .raw();
        let p = decode(LINKTYPE_RAW, &v6).unwrap();
        assert_eq!(
            (p.ip.src, p.tunnel.unwrap().outer_src),
            (ip("fd00::1"), ip("2001:db8::1"))
        );
    }

    #[test]
    fn pppoe_and_nflog_links() {
        let pkt = tcp([100, 64, 0, 1], 1, [8, 8, 8, 8], 53).payload(b"ab");
        let f = pkt.pppoe();
        let p = decode(LINKTYPE_ETHERNET, &f).unwrap();
        assert_eq!(p.ip.dst, ip("8.8.8.8"));
        let f = pkt.nflog(5);
        let p = decode(LINKTYPE_NFLOG, &f).unwrap();
        let Transport::Tcp(t) = p.transport else {
            panic!()
        };
        assert_eq!(t.payload, b"ab");
        // Without its payload attribute an NFLOG record is not IP.
        assert!(matches!(
            decode(LINKTYPE_NFLOG, &f[..20]),
            Err(DecodeError::NotIp { .. })
        ));
        assert!(matches!(
            decode(LINKTYPE_NFLOG, &f[..16]),
            Err(DecodeError::Truncated {
                layer: Layer::Link,
                offset: 4
            })
        ));
    }

    #[test]
    fn icmp_errors_give_the_quoted_packet() {
        let query = udp([10, 0, 0, 5], 35000, [10, 96, 0, 10], 53)
            .payload(&dns_query(0x4242, "svc.local", 28).build());
        let quoted = query.ip();
        let f = icmp([10, 96, 0, 10], [10, 0, 0, 5], 3, 3)
            .payload(&[&[0u8; 4][..], &quoted[..]].concat())
            .sll2(2, PKTTYPE_HOST);
        let outer = decode(LINKTYPE_LINUX_SLL2, &f).unwrap();
        assert_eq!(
            outer.transport,
            Transport::Icmp {
                v6: false,
                icmp_type: 3,
                code: 3
            }
        );
        let q = crate::wire::icmp_quote(LINKTYPE_LINUX_SLL2, &f).unwrap();
        assert_eq!((q.ip.src, q.ip.dst), (ip("10.0.0.5"), ip("10.96.0.10")));
        let Transport::Udp(u) = q.transport else {
            panic!()
        };
        assert_eq!(
            crate::wire::dns::parse(u.payload).unwrap().header.id,
            0x4242
        );
        // A quote cut after 8 bytes of UDP (the RFC 792 minimum) still gives the ports.
        let f = icmp([10, 96, 0, 10], [10, 0, 0, 5], 3, 3)
            .payload(&[&[0u8; 4][..], &quoted[..28]].concat())
            .raw();
        let q = crate::wire::icmp_quote(LINKTYPE_RAW, &f).unwrap();
        assert!(q.truncated);
        assert!(
            matches!(q.transport, Transport::Udp(u) if u.src_port == 35000 && u.payload.is_empty())
        );
        // Echo requests quote nothing.
        let f = icmp([1, 1, 1, 1], [2, 2, 2, 2], 8, 0)
            .payload(&quoted)
            .raw();
        assert!(crate::wire::icmp_quote(LINKTYPE_RAW, &f).is_none());
    }

    #[test]
    fn tso_zero_total_length_uses_the_captured_bytes() {
        let f = tcp([1, 1, 1, 1], 1, [2, 2, 2, 2], 2)
            .payload(&[5; 3000])
            .ip_len(0)
            .raw();
        let p = decode(LINKTYPE_RAW, &f).unwrap();
        let Transport::Tcp(t) = p.transport else {
            panic!()
        };
        assert_eq!(
            (t.payload_len, t.payload.len(), p.truncated),
            (3000, 3000, false)
        );
    }

    #[test]
    fn malformed_headers_say_where() {
        let mut f = tcp([1, 1, 1, 1], 1, [2, 2, 2, 2], 2).raw();
        f[0] = 0x44;
        assert_eq!(
            decode(LINKTYPE_RAW, &f).unwrap_err(),
            DecodeError::Malformed {
                layer: Layer::Ipv4,
                offset: 0,
                what: "IPv4 header length below 20"
            }
        );
        let mut f = tcp([1, 1, 1, 1], 1, [2, 2, 2, 2], 2).raw();
        f[2..4].copy_from_slice(&10u16.to_be_bytes());
        assert!(matches!(
            decode(LINKTYPE_RAW, &f),
            Err(DecodeError::Malformed {
                layer: Layer::Ipv4,
                offset: 2,
                ..
            })
        ));
        let mut f = tcp([1, 1, 1, 1], 1, [2, 2, 2, 2], 2).ethernet();
        f[14] = 0x65;
        assert!(matches!(
            decode(LINKTYPE_ETHERNET, &f),
            Err(DecodeError::Malformed {
                layer: Layer::Ipv4,
                ..
            })
        ));
        let mut f = tcp([1, 1, 1, 1], 1, [2, 2, 2, 2], 2).raw();
        f[20 + 12] = 0x20;
        assert!(matches!(
            decode(LINKTYPE_RAW, &f),
            Err(DecodeError::Malformed {
                layer: Layer::Tcp,
                offset: 32,
                ..
            })
        ));
    }

    #[test]
    fn icmp_type_and_code() {
        let f = icmp([1, 1, 1, 1], [2, 2, 2, 2], 3, 3)
            .payload(&[0; 28])
            .ethernet();
        assert_eq!(
            decode(LINKTYPE_ETHERNET, &f).unwrap().transport,
            Transport::Icmp {
                v6: false,
                icmp_type: 3,
                code: 3
            }
        );
        let f = icmp(ip("fe80::1"), ip("fe80::2"), 135, 0).raw();
        assert_eq!(
            decode(LINKTYPE_RAW, &f).unwrap().transport,
            Transport::Icmp {
                v6: true,
                icmp_type: 135,
                code: 0
            }
        );
    }

    fn samples() -> Vec<(u32, Vec<u8>)> {
        let t4 = tcp([10, 0, 0, 1], 1, [10, 0, 0, 2], 2)
            .ts(5, 6)
            .mss(1400)
            .payload(&[3; 40]);
        let u6 = udp_v6("fd00::1", 53, "fd00::2", 9).payload(&dns_query(1, "x.y", 28).build());
        vec![
            (LINKTYPE_ETHERNET, t4.clone().vlan(3).ethernet()),
            (
                LINKTYPE_ETHERNET,
                t4.vxlan(7, [1, 1, 1, 1], [2, 2, 2, 2], 8472).ethernet(),
            ),
            (LINKTYPE_LINUX_SLL2, u6.sll2(4, PKTTYPE_HOST)),
            (LINKTYPE_LINUX_SLL, t4.sll(PKTTYPE_OUTGOING)),
            (LINKTYPE_RAW, u6.clone().fragment(0, true).raw()),
            (LINKTYPE_NULL, u6.null()),
            (
                LINKTYPE_IPV4,
                icmp([1, 1, 1, 1], [2, 2, 2, 2], 11, 0)
                    .payload(&[1; 20])
                    .raw(),
            ),
            (
                LINKTYPE_ETHERNET,
                u6.geneve(5, [1, 1, 1, 1], [2, 2, 2, 2], 4).ethernet(),
            ),
            (
                LINKTYPE_RAW,
                t4.gre([1, 1, 1, 1], [2, 2, 2, 2], Some(3)).raw(),
            ),
            (LINKTYPE_NFLOG, t4.nflog(1)),
            (LINKTYPE_ETHERNET, t4.pppoe()),
        ]
    }

    #[test]
    fn every_prefix_of_a_valid_frame_decodes_or_reports_truncation() {
        for (lt, f) in samples() {
            let full = decode(lt, &f).unwrap();
            for n in 0..f.len() {
                match decode(lt, &f[..n]) {
                    Ok(p) => {
                        // Cuts in a VXLAN payload fall back to the outer packet; otherwise the same
                        // addresses, marked truncated once bytes are missing.
                        if p.tunnel.is_some() || full.tunnel.is_none() {
                            assert_eq!(p.ip.src, full.ip.src, "lt {lt} prefix {n}");
                        }
                        assert!(p.truncated || n >= f.len() - 2, "lt {lt} prefix {n}");
                    }
                    Err(DecodeError::Truncated { offset, .. }) => {
                        assert!(offset <= n, "lt {lt} prefix {n}")
                    }
                    // An NFLOG record cut at an attribute boundary is a record without its packet.
                    Err(DecodeError::NotIp { .. }) if lt == LINKTYPE_NFLOG => {}
                    Err(e) => panic!("lt {lt} prefix {n}: {e:?}"),
                }
            }
        }
    }

    #[test]
    fn random_bytes_and_bit_flips_never_panic() {
        let mut x: u64 = 0x0123_4567_89AB_CDEF;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let lts = [0, 1, 12, 14, 101, 108, 113, 228, 229, 239, 276, 999];
        let mut buf = [0u8; 128];
        for _ in 0..50_000 {
            for b in buf.iter_mut() {
                *b = next() as u8;
            }
            let lt = lts[next() as usize % lts.len()];
            let n = next() as usize % buf.len();
            let _ = decode(lt, &buf[..n]);
        }
        for (lt, f) in samples() {
            for _ in 0..5_000 {
                let mut g = f.clone();
                for _ in 0..3 {
                    let r = next() as usize;
                    g[r % f.len()] = (r >> 32) as u8;
                }
                if let Ok(p) = decode(lt, &g) {
                    match p.transport {
                        Transport::Tcp(t) => assert!(
                            t.payload.len() <= t.payload_len as usize || p.ip.total_len == 0
                        ),
                        Transport::Udp(u) => assert!(u.payload.len() <= u.payload_len as usize),
                        _ => {}
                    }
                }
            }
        }
    }
}

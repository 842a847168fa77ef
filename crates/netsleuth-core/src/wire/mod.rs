//! Wire types: zero-copy views of link, network and transport headers, decoded once per packet.
//!
//! `decode` turns a captured frame (its bytes and its link type) into a `Packet`: the addresses, ports,
//! TCP sequence space and payload slices that the flow engine needs, without allocating. A frame cut
//! by the snap length still decodes as far as its bytes go (`Packet::truncated`); a frame that cannot
//! be decoded at all returns a `DecodeError` that says which layer failed and at which byte.
//!
//! Invariant: nothing in this module allocates per packet or panics on any input.

pub mod arp;
pub mod dns;
mod fast;
pub mod field;
pub mod ip;
pub mod link;
pub mod proto;
pub mod transport;

pub use fast::Ipv4Tcp;
pub use ip::Ipv4Fragment;
pub use proto::{EtherType, Icmpv4Message, Icmpv6Message, IpProtocol, LinkType, PppProtocol};

use std::net::IpAddr;

/// Network protocol chosen by the link layer (or by a tunnel header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Net {
    V4,
    V6,
}

/// TCP flag bits as on the wire (low byte of the flags field).
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

/// Linux `sll_pkttype`: where the packet went relative to the capturing host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketDirection {
    /// To us (PACKET_HOST).
    Incoming,
    Broadcast,
    Multicast,
    /// To another host, seen promiscuously (PACKET_OTHERHOST).
    OtherHost,
    /// Sent by us (PACKET_OUTGOING).
    Outgoing,
    Unknown(u8),
}

/// What the link layer said about the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LinkMeta {
    /// Interface index from SLL2 (`tcpdump -i any`), if present.
    pub ifindex: Option<u32>,
    /// Direction from SLL/SLL2, if present.
    pub direction: Option<PacketDirection>,
    /// Outermost 802.1Q VLAN id, if tagged.
    pub vlan: Option<u16>,
}

/// The tunnel a packet was decapsulated from (VXLAN on UDP 4789 or flannel's 8472, Geneve on 6081,
/// GRE, IP-in-IP). `vni` is the VXLAN/Geneve VNI, the GRE key, or 0 for IP-in-IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tunnel {
    pub vni: u32,
    pub outer_src: IpAddr,
    pub outer_dst: IpAddr,
    /// The outer UDP header of VXLAN and Geneve (none for GRE and IP-in-IP).
    pub udp: Option<OuterUdp>,
}

/// The UDP header a VXLAN or Geneve packet travelled in, with its checksum verified at decapsulation
/// (the only UDP checksums the decoder computes: a receiver drops tunnel packets whose outer checksum
/// is wrong before it decapsulates them, so a capture can show what the receiver never saw).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OuterUdp {
    pub src_port: u16,
    pub dst_port: u16,
    pub checksum: UdpChecksum,
}

/// What the outer UDP checksum field of a tunnel packet says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpChecksum {
    /// 0: the sender computed none (allowed over IPv4, RFC 768, and for tunnels over IPv6, RFC 6935;
    /// Linux VXLAN devices send 0 unless `udpcsum` is set).
    Absent,
    /// The datagram sums to the checksum it carries.
    Valid,
    /// Not computed yet: the field holds the pseudo-header sum only, or a sum that is right once the
    /// inner packet's own checksum — itself holding only its pseudo-header sum — is filled in (local
    /// checksum offload). The sender left the rest to its NIC (tx checksum offload,
    /// `CHECKSUM_PARTIAL`) and the capture saw the packet before the NIC: normal on the sending host,
    /// and on a veth pair, where the packet never reaches a NIC. Not what a NIC puts on a wire.
    OffloadPending,
    /// A non-zero checksum that does not match the datagram: a receiver verifying it drops the packet.
    Invalid { found: u16, expected: u16 },
    /// The capture holds less of the datagram than its length says (snap length): not verifiable.
    Unverifiable,
}

/// The network layer of the innermost packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpHeader {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// The transport's protocol (after IPv6 extension headers).
    pub proto: IpProtocol,
    pub ttl: u8,
    /// IPv4 identification; 0 for IPv6.
    pub ident: u16,
    /// Length of the IP packet as its header says (not as captured).
    pub total_len: u32,
    /// Set when this is an IPv4/IPv6 fragment (first or later); transport is then only present for the
    /// first fragment.
    pub fragment: Option<Ipv4Fragment>,
}

/// TCP options we keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpOptions {
    pub mss: Option<u16>,
    pub wscale: Option<u8>,
    pub sack_permitted: bool,
    /// (TSval, TSecr)
    pub timestamp: Option<(u32, u32)>,
}

/// A segment's options: the bytes as captured, parsed only when read. The flow engine reads the
/// timestamps of a few segments (SYNs, bare ACKs) and nothing else does per packet, so parsing
/// them on every segment cost ~19 instructions a packet for nothing.
#[derive(Debug, Clone, Copy)]
pub enum SegmentOptions<'a> {
    /// The option bytes as captured (fewer when the snap length cut the header).
    Raw(&'a [u8]),
    /// Already parsed (a segment rebuilt from a compact form, or kept past its frame).
    Parsed(TcpOptions),
}

impl SegmentOptions<'_> {
    /// The options we keep; a malformed option ends the parse quietly, as in the kernel.
    #[inline]
    pub fn parsed(&self) -> TcpOptions {
        match self {
            SegmentOptions::Raw(bytes) => transport::parse_options(bytes),
            SegmentOptions::Parsed(o) => *o,
        }
    }

    /// (TSval, TSecr), when the segment carries the timestamps option.
    #[inline]
    pub fn timestamp(&self) -> Option<(u32, u32)> {
        self.parsed().timestamp
    }
}

/// Equal when the options we keep are: the same bytes parsed now or earlier compare equal.
impl PartialEq for SegmentOptions<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.parsed() == other.parsed()
    }
}

impl Eq for SegmentOptions<'_> {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSegment<'a> {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    /// Low 8 bits of the flags field (see `tcp_flags`).
    pub flags: u8,
    pub window: u16,
    pub options: SegmentOptions<'a>,
    /// Payload length according to the IP header (what was sent, not what was captured).
    pub payload_len: u32,
    /// The captured part of the payload (shorter than `payload_len` when the snap length cut it).
    pub payload: &'a [u8],
}

impl TcpSegment<'_> {
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpDatagram<'a> {
    pub src_port: u16,
    pub dst_port: u16,
    /// Payload length according to the UDP header.
    pub payload_len: u32,
    /// The captured part of the payload.
    pub payload: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport<'a> {
    Tcp(TcpSegment<'a>),
    Udp(UdpDatagram<'a>),
    /// ICMP/ICMPv6: type and code.
    Icmp {
        v6: bool,
        icmp_type: u8,
        code: u8,
    },
    /// A non-first fragment, or a protocol we do not decode.
    Other,
    /// Not IP: an ARP message ([`decode_arp`]), whose sender and target addresses are the packet's
    /// `ip.src` and `ip.dst` (the other IP fields are zero).
    Arp(arp::ArpOp),
}

/// A decoded frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    pub link: LinkMeta,
    pub tunnel: Option<Tunnel>,
    pub ip: IpHeader,
    pub transport: Transport<'a>,
    /// The frame was cut by the snap length somewhere inside the headers or payload we looked at.
    pub truncated: bool,
}

/// The layer at which decoding failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    Link,
    Vlan,
    Ipv4,
    Ipv6,
    Tcp,
    Udp,
    Vxlan,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// A link type we do not decode (counted per file).
    UnsupportedLinkType(u32),
    /// Not IP (ARP, LLDP, STP...). Not an error in the capture; counted, not reported as damage.
    NotIp { ethertype: u16 },
    /// The frame ended before a header that must be there; `offset` is from the frame start.
    Truncated { layer: Layer, offset: usize },
    /// A header field is impossible (IP version 7, header length below minimum...).
    Malformed {
        layer: Layer,
        offset: usize,
        what: &'static str,
    },
}

/// Decode one captured frame of the given link type (a pcap LINKTYPE_* value, see `LinkType`).
/// Inlined so that the fast path's packet is built where the caller keeps it.
#[inline(always)]
pub fn decode(linktype: u32, frame: &[u8]) -> Result<Packet<'_>, DecodeError> {
    if let Some(pkt) = fast::ipv4_tcp(linktype, frame) {
        return Ok(pkt);
    }
    decode_layered(linktype, frame)
}

/// The frame as an unfragmented IPv4 TCP segment outside a tunnel, when the fast path takes it (see
/// `fast`); `None` for any other frame, which `decode_layered` then decodes. For such a frame
/// `decode` gives exactly `decode_ipv4_tcp(..).to_packet()`.
#[inline(always)]
pub fn decode_ipv4_tcp(linktype: u32, frame: &[u8]) -> Option<Ipv4Tcp<'_>> {
    fast::ipv4_tcp_segment(linktype, frame)
}

/// `decode` through every layer, for every frame: the reference the fast path is tested against.
#[inline(never)]
pub fn decode_layered(linktype: u32, frame: &[u8]) -> Result<Packet<'_>, DecodeError> {
    let (net, at, end, link) = link::locate_ip(LinkType::from(linktype), frame)?;
    ip::decode(&frame[..end], at, net, link, true)
}

/// An ARP frame as a [`Packet`] (see [`Transport::Arp`]), for a frame `decode` called not IP; `None`
/// for any other. Costs a second look at the link header: call it only for non-IP frames.
pub fn decode_arp(linktype: u32, frame: &[u8]) -> Option<Packet<'static>> {
    let m = arp::decode(linktype, frame)?;
    Some(Packet {
        link: m.link,
        tunnel: None,
        ip: IpHeader {
            src: IpAddr::V4(m.sender),
            dst: IpAddr::V4(m.target),
            proto: IpProtocol::Unknown(0xff),
            ttl: 0,
            ident: 0,
            total_len: arp::LEN as u32,
            fragment: None,
        },
        transport: Transport::Arp(m.op),
        truncated: false,
    })
}

/// For an ICMP/ICMPv6 error (port unreachable, time exceeded...), the packet it quotes, decoded as far
/// as the quote goes (usually `truncated`; addresses and ports as the original sender sent them).
/// `None` for any other frame. Costs a second decode: call it only for ICMP errors.
pub fn icmp_quote(linktype: u32, frame: &[u8]) -> Option<Packet<'_>> {
    let (net, at, end, link) = link::locate_ip(LinkType::from(linktype), frame).ok()?;
    ip::icmp_quote(&frame[..end], at, net, link)
}

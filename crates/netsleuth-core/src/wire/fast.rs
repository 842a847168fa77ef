//! The decoder's fast path: the frames that make up nearly all of a node capture — Ethernet without
//! VLAN tags, Linux cooked v1/v2 (`tcpdump -i any`) or raw IP, carrying an unfragmented IPv4 TCP
//! segment — decoded in one straight pass over fixed offsets.
//!
//! It gives exactly the `Packet` the layered decoder gives for those frames, and `None` for any other
//! frame (or any doubt: damage, fragments, other protocols), which then takes the layered path
//! unchanged. What it saves is the layering itself: the link type, EtherType and IP protocol turned
//! into enums and matched again, and the packet built up through `NetLayer` and `Decoded` results —
//! a third of the decoder's instructions. `tests/decode_fast_path.rs` compares the two on
//! every lab fixture frame and on frames damaged at every byte.
//!
//! The analysis takes the segment itself ([`Ipv4Tcp`], `wire::decode_ipv4_tcp`) rather than its
//! `Packet`: the flow engine and the pipeline's compact form read the fields directly, and the
//! 184-byte `Packet` with its enums is never built for the frames that are most of a capture.

use super::transport::tcp_body;
use super::IpProtocol;
use super::{IpHeader, LinkMeta, Packet, PacketDirection, TcpSegment, Transport};
use std::net::{IpAddr, Ipv4Addr};

const ETHERTYPE_IPV4: [u8; 2] = [0x08, 0x00];
const TCP: u8 = 6;

#[inline(always)]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline(always)]
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Where the IPv4 header starts and what the link layer said, for the link types taken here.
#[inline(always)]
fn link(linktype: u32, frame: &[u8]) -> Option<(usize, LinkMeta)> {
    match linktype {
        // Ethernet, the IPv4 EtherType right after the addresses (no VLAN tag).
        1 => (frame.len() >= 14 && frame[12..14] == ETHERTYPE_IPV4)
            .then_some((14, LinkMeta::default())),
        // Linux cooked v2: protocol, reserved, ifindex, ARPHRD, pkttype, address length, address.
        276 => (frame.len() >= 20 && frame[0..2] == ETHERTYPE_IPV4).then(|| {
            let link = LinkMeta {
                ifindex: Some(be32(frame, 4)),
                direction: Some(PacketDirection::from_pkttype(frame[10] as u16)),
                vlan: None,
            };
            (20, link)
        }),
        // Linux cooked v1: pkttype, ARPHRD, address length, address, protocol.
        113 => (frame.len() >= 16 && frame[14..16] == ETHERTYPE_IPV4).then(|| {
            let link = LinkMeta {
                ifindex: None,
                direction: Some(PacketDirection::from_pkttype(be16(frame, 0))),
                vlan: None,
            };
            (16, link)
        }),
        // Raw IP under its several numbers: the version nibble decides.
        12 | 14 | 101 | 228 | 229 => {
            (frame.first().is_some_and(|b| b >> 4 == 4)).then_some((0, LinkMeta::default()))
        }
        _ => None,
    }
}

/// An unfragmented IPv4 TCP segment outside a tunnel as the fast path read it: the fields of its
/// `Packet` without the enums around them (`IpAddr`, `Transport`, no tunnel, no fragment), so a
/// consumer that knows it has such a segment (the analysis's flow engine, the pipeline's compact
/// form) reads them without matching, and nothing builds the full `Packet` it would not look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Tcp<'a> {
    pub link: LinkMeta,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub ident: u16,
    pub total_len: u32,
    pub tcp: TcpSegment<'a>,
    pub truncated: bool,
}

impl<'a> Ipv4Tcp<'a> {
    /// The `Packet` the decoder gives for the same frame.
    #[inline(always)]
    pub fn to_packet(&self) -> Packet<'a> {
        Packet {
            link: self.link,
            tunnel: None,
            ip: IpHeader {
                src: IpAddr::V4(self.src),
                dst: IpAddr::V4(self.dst),
                proto: IpProtocol::Tcp,
                ttl: self.ttl,
                ident: self.ident,
                total_len: self.total_len,
                fragment: None,
            },
            transport: Transport::Tcp(self.tcp),
            truncated: self.truncated,
        }
    }
}

/// The frame decoded, when it is one the fast path takes; `None` sends it down the layered path.
#[inline(always)]
pub(super) fn ipv4_tcp(linktype: u32, frame: &[u8]) -> Option<Packet<'_>> {
    ipv4_tcp_segment(linktype, frame).map(|s| s.to_packet())
}

/// The frame's segment, when it is one the fast path takes (see [`super::decode_ipv4_tcp`]).
#[inline(always)]
pub(super) fn ipv4_tcp_segment(linktype: u32, frame: &[u8]) -> Option<Ipv4Tcp<'_>> {
    let (at, link) = link(linktype, frame)?;
    // IPv4: version 4, a header of at least 20 bytes that is all captured, not a fragment, TCP.
    let ip = frame.get(at..at + 20)?;
    let ver_ihl = ip[0];
    let header_len = ((ver_ihl & 0x0F) as usize) * 4;
    if ver_ihl >> 4 != 4
        || header_len < 20
        || frame.len() < at + header_len
        || be16(ip, 6) & 0x3FFF != 0
        || ip[9] != TCP
    {
        return None;
    }
    let captured = frame.len() - at;
    let declared = be16(ip, 2) as usize;
    // Total length 0: a TSO super-segment, whose captured bytes are the truth (as the layered path).
    let total_len = match declared {
        0 => captured,
        d if d < header_len => return None,
        d => d,
    };
    let ip_truncated = captured < total_len;
    let ip_bytes = &frame[..at + total_len.min(captured)];

    // TCP: a 20-byte header that is all captured, a data offset that fits the IP payload.
    let tcp_at = at + header_len;
    let ip_payload_len = (total_len - header_len) as u32;
    let tcp = ip_bytes.get(tcp_at..tcp_at + 20)?;
    let tcp_header_len = ((tcp[12] >> 4) as usize) * 4;
    if ip_payload_len < 20 || tcp_header_len < 20 || tcp_header_len as u32 > ip_payload_len {
        return None;
    }
    let (options, payload_len, payload, tcp_truncated) =
        tcp_body(ip_bytes, tcp_at, tcp_header_len, ip_payload_len);
    Some(Ipv4Tcp {
        link,
        src: Ipv4Addr::from(be32(ip, 12)),
        dst: Ipv4Addr::from(be32(ip, 16)),
        ttl: ip[8],
        ident: be16(ip, 4),
        total_len: total_len as u32,
        tcp: TcpSegment {
            src_port: be16(tcp, 0),
            dst_port: be16(tcp, 2),
            seq: be32(tcp, 4),
            ack: be32(tcp, 8),
            flags: tcp[13],
            window: be16(tcp, 14),
            options,
            payload_len,
            payload,
        },
        truncated: ip_truncated || tcp_truncated,
    })
}

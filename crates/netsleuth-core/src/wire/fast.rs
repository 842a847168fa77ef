//! The decoder's fast path: the frames that make up nearly all of a node capture — Ethernet without
//! VLAN tags, Linux cooked v1/v2 (`tcpdump -i any`) or raw IP, carrying an unfragmented IPv4 TCP
//! segment — decoded in one straight pass over fixed offsets.
//!
//! It gives exactly the `Packet` the layered decoder gives for those frames, and `None` for any other
//! frame (or any doubt: damage, fragments, other protocols), which then takes the layered path
//! unchanged. What it saves is the layering itself: the link type, EtherType and IP protocol turned
//! into enums and matched again, and the packet built up through `NetLayer` and `Decoded` results —
//! a third of the decoder's instructions. `tests::fast_path_is_the_layered_decoder` compares the two on
//! every lab fixture frame and on frames damaged at every byte.

use super::transport::parse_options;
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

/// The frame decoded, when it is one the fast path takes; `None` sends it down the layered path.
#[inline(always)]
pub(super) fn ipv4_tcp(linktype: u32, frame: &[u8]) -> Option<Packet<'_>> {
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
    let ident = be16(ip, 4);
    let header = IpHeader {
        src: IpAddr::V4(Ipv4Addr::from(be32(ip, 12))),
        dst: IpAddr::V4(Ipv4Addr::from(be32(ip, 16))),
        proto: IpProtocol::Tcp,
        ttl: ip[8],
        ident,
        total_len: total_len as u32,
        fragment: None,
    };

    // TCP: a 20-byte header that is all captured, a data offset that fits the IP payload.
    let tcp_at = at + header_len;
    let ip_payload_len = (total_len - header_len) as u32;
    let tcp = ip_bytes.get(tcp_at..tcp_at + 20)?;
    let tcp_header_len = ((tcp[12] >> 4) as usize) * 4;
    if ip_payload_len < 20 || tcp_header_len < 20 || tcp_header_len as u32 > ip_payload_len {
        return None;
    }
    let header_end = tcp_at + tcp_header_len;
    let options = parse_options(
        ip_bytes
            .get(tcp_at + 20..header_end.min(ip_bytes.len()))
            .unwrap_or(&[]),
    );
    let payload_len = ip_payload_len - tcp_header_len as u32;
    let payload_end = header_end
        .saturating_add(payload_len as usize)
        .min(ip_bytes.len());
    let payload = ip_bytes.get(header_end..payload_end).unwrap_or(&[]);
    let tcp_truncated = ip_bytes.len() < header_end || payload.len() < payload_len as usize;
    Some(Packet {
        link,
        tunnel: None,
        ip: header,
        transport: Transport::Tcp(TcpSegment {
            src_port: be16(tcp, 0),
            dst_port: be16(tcp, 2),
            seq: be32(tcp, 4),
            ack: be32(tcp, 8),
            flags: tcp[13],
            window: be16(tcp, 14),
            options,
            payload_len,
            payload,
        }),
        truncated: ip_truncated || tcp_truncated,
    })
}

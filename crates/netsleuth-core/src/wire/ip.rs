//! IPv4 and IPv6 (with extension headers), and VXLAN decapsulation (which needs the outer addresses).
//!
//! Lengths come from the IP header, not from the frame: Ethernet pads short frames to 60 bytes and the
//! padding must not become payload; a frame cut by the snap length keeps the header's lengths and marks
//! the packet `truncated`.

use super::link;
use super::transport;
use super::{DecodeError, IpHeader, Layer, LinkMeta, Packet, Transport, Tunnel};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Network protocol chosen by the link layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Net {
    V4,
    V6,
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

/// VXLAN's IANA port and the port Linux (flannel's default) uses.
const VXLAN_PORTS: [u16; 2] = [4789, 8472];
/// Bound on IPv6 extension headers walked, against crafted chains.
const MAX_IPV6_EXTENSIONS: usize = 16;

const PROTO_HOPOPT: u8 = 0;
const PROTO_ROUTING: u8 = 43;
const PROTO_FRAGMENT: u8 = 44;
const PROTO_AH: u8 = 51;
const PROTO_DSTOPTS: u8 = 60;
const PROTO_MOBILITY: u8 = 135;
const PROTO_HIP: u8 = 139;
const PROTO_SHIM6: u8 = 140;
pub(super) const PROTO_UDP: u8 = 17;

/// Decode the IP packet starting at `at` (and what it carries). `tunnel_allowed` is false inside a
/// tunnel: only one level of VXLAN is opened.
#[inline]
pub(super) fn decode(
    frame: &[u8],
    at: usize,
    net: Net,
    link: LinkMeta,
    tunnel_allowed: bool,
) -> Result<Packet<'_>, DecodeError> {
    match net {
        Net::V4 => ipv4(frame, at, link, tunnel_allowed),
        Net::V6 => ipv6(frame, at, link, tunnel_allowed),
    }
}

#[inline]
fn ipv4(frame: &[u8], at: usize, link: LinkMeta, tunnel_allowed: bool) -> Result<Packet<'_>, DecodeError> {
    let Some(h) = frame.get(at..at + 20) else {
        return Err(DecodeError::Truncated { layer: Layer::Ipv4, offset: at });
    };
    if h[0] >> 4 != 4 {
        return Err(DecodeError::Malformed { layer: Layer::Ipv4, offset: at, what: "IP version is not 4" });
    }
    let header_len = ((h[0] & 0x0F) as usize) * 4;
    if header_len < 20 {
        return Err(DecodeError::Malformed { layer: Layer::Ipv4, offset: at, what: "IPv4 header length below 20" });
    }
    let declared = u16::from_be_bytes([h[2], h[3]]) as usize;
    let ident = u16::from_be_bytes([h[4], h[5]]);
    let frag_field = u16::from_be_bytes([h[6], h[7]]);
    let ttl = h[8];
    let proto = h[9];
    let src = Ipv4Addr::new(h[12], h[13], h[14], h[15]);
    let dst = Ipv4Addr::new(h[16], h[17], h[18], h[19]);
    if frame.len() < at + header_len {
        return Err(DecodeError::Truncated { layer: Layer::Ipv4, offset: at });
    }
    let captured = frame.len() - at;
    // Total length 0 is what Linux shows for TSO super-segments captured on the way out: trust the
    // captured bytes then.
    let total_len = if declared == 0 {
        captured
    } else if declared < header_len {
        return Err(DecodeError::Malformed {
            layer: Layer::Ipv4,
            offset: at + 2,
            what: "IPv4 total length below the header length",
        });
    } else {
        declared
    };
    let ip_truncated = captured < total_len;
    // Ignore link padding beyond the IP packet.
    let ip_bytes = &frame[..at + total_len.min(captured)];

    let more_fragments = frag_field & 0x2000 != 0;
    let frag_offset = ((frag_field & 0x1FFF) as u32) * 8;
    let fragment = (more_fragments || frag_offset != 0).then_some(Ipv4Fragment {
        offset: frag_offset,
        more_fragments,
        id: ident as u32,
    });
    let ip = IpHeader {
        src: IpAddr::V4(src),
        dst: IpAddr::V4(dst),
        proto,
        ttl,
        ident,
        total_len: total_len as u32,
        fragment,
    };
    let payload_at = at + header_len;
    let payload_len = (total_len - header_len) as u32;
    finish(ip_bytes, payload_at, payload_len, ip, link, ip_truncated, tunnel_allowed)
}

#[inline]
fn ipv6(frame: &[u8], at: usize, link: LinkMeta, tunnel_allowed: bool) -> Result<Packet<'_>, DecodeError> {
    let Some(h) = frame.get(at..at + 40) else {
        return Err(DecodeError::Truncated { layer: Layer::Ipv6, offset: at });
    };
    if h[0] >> 4 != 6 {
        return Err(DecodeError::Malformed { layer: Layer::Ipv6, offset: at, what: "IP version is not 6" });
    }
    let declared = u16::from_be_bytes([h[4], h[5]]) as usize;
    let mut next = h[6];
    let hop_limit = h[7];
    let mut a = [0u8; 16];
    a.copy_from_slice(&h[8..24]);
    let src = Ipv6Addr::from(a);
    a.copy_from_slice(&h[24..40]);
    let dst = Ipv6Addr::from(a);
    let captured = frame.len() - at - 40;
    // Payload length 0: a jumbogram or a TSO super-segment; use what was captured.
    let payload_total = if declared == 0 { captured } else { declared };
    let ip_truncated = captured < payload_total;
    let ip_bytes = &frame[..at + 40 + payload_total.min(captured)];

    let mut p = at + 40;
    let mut remaining = payload_total;
    let mut fragment = None;
    let mut later_fragment = false;
    for _ in 0..MAX_IPV6_EXTENSIONS {
        let ext_len = match next {
            PROTO_HOPOPT | PROTO_ROUTING | PROTO_DSTOPTS | PROTO_MOBILITY | PROTO_HIP | PROTO_SHIM6 => {
                let Some(e) = ip_bytes.get(p..p + 2) else {
                    return Err(DecodeError::Truncated { layer: Layer::Ipv6, offset: p });
                };
                next = e[0];
                (e[1] as usize + 1) * 8
            }
            PROTO_AH => {
                let Some(e) = ip_bytes.get(p..p + 2) else {
                    return Err(DecodeError::Truncated { layer: Layer::Ipv6, offset: p });
                };
                next = e[0];
                (e[1] as usize + 2) * 4
            }
            PROTO_FRAGMENT => {
                let Some(e) = ip_bytes.get(p..p + 8) else {
                    return Err(DecodeError::Truncated { layer: Layer::Ipv6, offset: p });
                };
                next = e[0];
                let field = u16::from_be_bytes([e[2], e[3]]);
                let offset = (field & 0xFFF8) as u32;
                let more_fragments = field & 1 != 0;
                fragment = Some(Ipv4Fragment {
                    offset,
                    more_fragments,
                    id: u32::from_be_bytes([e[4], e[5], e[6], e[7]]),
                });
                later_fragment = offset != 0;
                8
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
        src: IpAddr::V6(src),
        dst: IpAddr::V6(dst),
        proto: next,
        ttl: hop_limit,
        ident: 0,
        total_len: (40 + payload_total) as u32,
        fragment,
    };
    finish(ip_bytes, p, remaining as u32, ip, link, ip_truncated, tunnel_allowed)
}

/// Decode the transport (unless this is a non-first fragment) and open VXLAN if allowed.
#[inline]
fn finish<'a>(
    ip_bytes: &'a [u8],
    payload_at: usize,
    payload_len: u32,
    ip: IpHeader,
    link: LinkMeta,
    ip_truncated: bool,
    tunnel_allowed: bool,
) -> Result<Packet<'a>, DecodeError> {
    let first_or_whole = !matches!(ip.fragment, Some(f) if f.offset != 0);
    if !first_or_whole {
        return Ok(Packet { link, tunnel: None, ip, transport: Transport::Other, truncated: ip_truncated });
    }
    let fragmented = ip.fragment.is_some();
    let t = transport::decode(ip_bytes, payload_at, ip.proto, payload_len, fragmented)?;
    let packet = Packet { link, tunnel: None, ip, transport: t.transport, truncated: ip_truncated || t.truncated };
    if tunnel_allowed && !fragmented {
        if let Transport::Udp(udp) = t.transport {
            if VXLAN_PORTS.contains(&udp.dst_port) {
                if let Some(inner) = vxlan(ip_bytes, t.payload_at, udp.payload.len(), &packet) {
                    return Ok(inner);
                }
            }
        }
    }
    Ok(packet)
}

/// Open a VXLAN header at `at` (followed by an inner Ethernet frame). `None` when it is not valid
/// VXLAN or the inner frame does not decode: the outer UDP packet is then the better answer.
fn vxlan<'a>(ip_bytes: &'a [u8], at: usize, captured: usize, outer: &Packet<'a>) -> Option<Packet<'a>> {
    let h = ip_bytes.get(at..at + 8)?;
    // The I flag says the VNI is valid; without it this is not VXLAN as we know it.
    if h[0] & 0x08 == 0 {
        return None;
    }
    let vni = u32::from_be_bytes([0, h[4], h[5], h[6]]);
    let inner_frame = ip_bytes.get(..at + captured)?;
    let (net, inner_at, _inner_vlan) = link::ethernet(inner_frame, at + 8).ok()?;
    let mut inner = decode(inner_frame, inner_at, net, outer.link, false).ok()?;
    inner.tunnel = Some(Tunnel { vni, outer_src: outer.ip.src, outer_dst: outer.ip.dst });
    inner.truncated |= outer.truncated;
    Some(inner)
}

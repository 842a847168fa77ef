//! IPv4 and IPv6 (with extension headers), and tunnel decapsulation (VXLAN, Geneve, GRE, IP-in-IP),
//! which needs the outer addresses.
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
const GENEVE_PORT: u16 = 6081;
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
const PROTO_IPIP: u8 = 4;
const PROTO_IPV6_IN_IP: u8 = 41;
const PROTO_GRE: u8 = 47;

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
    let Some(h) = frame.get(at..at + 20) else {
        return Err(DecodeError::Truncated {
            layer: Layer::Ipv4,
            offset: at,
        });
    };
    if h[0] >> 4 != 4 {
        return Err(DecodeError::Malformed {
            layer: Layer::Ipv4,
            offset: at,
            what: "IP version is not 4",
        });
    }
    let header_len = ((h[0] & 0x0F) as usize) * 4;
    if header_len < 20 {
        return Err(DecodeError::Malformed {
            layer: Layer::Ipv4,
            offset: at,
            what: "IPv4 header length below 20",
        });
    }
    let declared = u16::from_be_bytes([h[2], h[3]]) as usize;
    let ident = u16::from_be_bytes([h[4], h[5]]);
    let frag_field = u16::from_be_bytes([h[6], h[7]]);
    let ttl = h[8];
    let proto = h[9];
    let src = Ipv4Addr::new(h[12], h[13], h[14], h[15]);
    let dst = Ipv4Addr::new(h[16], h[17], h[18], h[19]);
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
    let Some(h) = frame.get(at..at + 40) else {
        return Err(DecodeError::Truncated {
            layer: Layer::Ipv6,
            offset: at,
        });
    };
    if h[0] >> 4 != 6 {
        return Err(DecodeError::Malformed {
            layer: Layer::Ipv6,
            offset: at,
            what: "IP version is not 6",
        });
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
            PROTO_HOPOPT | PROTO_ROUTING | PROTO_DSTOPTS | PROTO_MOBILITY | PROTO_HIP
            | PROTO_SHIM6 => {
                let Some(e) = ip_bytes.get(p..p + 2) else {
                    return Err(DecodeError::Truncated {
                        layer: Layer::Ipv6,
                        offset: p,
                    });
                };
                next = e[0];
                (e[1] as usize + 1) * 8
            }
            PROTO_AH => {
                let Some(e) = ip_bytes.get(p..p + 2) else {
                    return Err(DecodeError::Truncated {
                        layer: Layer::Ipv6,
                        offset: p,
                    });
                };
                next = e[0];
                (e[1] as usize + 2) * 4
            }
            PROTO_FRAGMENT => {
                let Some(e) = ip_bytes.get(p..p + 8) else {
                    return Err(DecodeError::Truncated {
                        layer: Layer::Ipv6,
                        offset: p,
                    });
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
fn may_be_tunnel(t: &Transport<'_>, proto: u8) -> bool {
    match t {
        Transport::Udp(u) => VXLAN_PORTS.contains(&u.dst_port) || u.dst_port == GENEVE_PORT,
        Transport::Other => matches!(proto, PROTO_IPIP | PROTO_IPV6_IN_IP | PROTO_GRE),
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
    let outer = Outer {
        src: n.ip.src,
        dst: n.ip.dst,
        link,
        truncated: n.truncated || t.truncated,
    };
    let (b, at) = (n.ip_bytes, t.payload_at);
    match t.transport {
        Transport::Udp(udp) if VXLAN_PORTS.contains(&udp.dst_port) => vxlan(b, at, &outer),
        Transport::Udp(udp) if udp.dst_port == GENEVE_PORT => geneve(b, at, &outer),
        Transport::Other => match n.ip.proto {
            PROTO_IPIP => inner_packet(b, at, Inner::Ip(Net::V4), 0, &outer),
            PROTO_IPV6_IN_IP => inner_packet(b, at, Inner::Ip(Net::V6), 0, &outer),
            PROTO_GRE => gre(b, at, &outer),
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
}

/// What a tunnel carries.
enum Inner {
    Ethernet,
    Ip(Net),
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
    packet.tunnel = Some(Tunnel {
        vni,
        outer_src: outer.src,
        outer_dst: outer.dst,
    });
    packet.truncated |= outer.truncated;
    Some(packet)
}

/// VXLAN (RFC 7348): 8 bytes, flags with the I bit, 24-bit VNI, then an Ethernet frame.
fn vxlan<'a>(ip_bytes: &'a [u8], at: usize, outer: &Outer) -> Option<Packet<'a>> {
    let h = ip_bytes.get(at..at + 8)?;
    // The I flag says the VNI is valid; without it this is not VXLAN as we know it.
    if h[0] & 0x08 == 0 {
        return None;
    }
    let vni = u32::from_be_bytes([0, h[4], h[5], h[6]]);
    inner_packet(ip_bytes, at + 8, Inner::Ethernet, vni, outer)
}

/// Geneve (RFC 8926; OVN-Kubernetes, Antrea): 8 bytes plus options, protocol type, 24-bit VNI.
fn geneve<'a>(ip_bytes: &'a [u8], at: usize, outer: &Outer) -> Option<Packet<'a>> {
    let h = ip_bytes.get(at..at + 8)?;
    if h[0] >> 6 != 0 {
        return None;
    }
    let options_len = ((h[0] & 0x3F) as usize) * 4;
    let vni = u32::from_be_bytes([0, h[4], h[5], h[6]]);
    let inner = match u16::from_be_bytes([h[2], h[3]]) {
        0x6558 => Inner::Ethernet,
        0x0800 => Inner::Ip(Net::V4),
        0x86DD => Inner::Ip(Net::V6),
        _ => return None,
    };
    inner_packet(ip_bytes, at + 8 + options_len, inner, vni, outer)
}

/// GRE (RFC 2784/2890) carrying IP or Ethernet; the key, if present, is reported as the VNI.
fn gre<'a>(ip_bytes: &'a [u8], at: usize, outer: &Outer) -> Option<Packet<'a>> {
    let h = ip_bytes.get(at..at + 4)?;
    let flags = u16::from_be_bytes([h[0], h[1]]);
    // Version 0 only (version 1 is PPTP's enhanced GRE); no routing field.
    if flags & 0x0007 != 0 || flags & 0x4000 != 0 {
        return None;
    }
    let mut p = at + 4;
    if flags & 0x8000 != 0 {
        p += 4;
    }
    let mut key = 0;
    if flags & 0x2000 != 0 {
        let k = ip_bytes.get(p..p + 4)?;
        key = u32::from_be_bytes([k[0], k[1], k[2], k[3]]);
        p += 4;
    }
    if flags & 0x1000 != 0 {
        p += 4;
    }
    let inner = match u16::from_be_bytes([h[2], h[3]]) {
        0x6558 => Inner::Ethernet,
        0x0800 => Inner::Ip(Net::V4),
        0x86DD => Inner::Ip(Net::V6),
        _ => return None,
    };
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
    let is_error = if v6 {
        (1..=4).contains(&icmp_type)
    } else {
        matches!(icmp_type, 3 | 4 | 5 | 11 | 12)
    };
    if !is_error {
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
    use crate::wire::{decode, DecodeError, Layer, PacketDirection, TcpOptions, Transport};
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
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
            (6, 63, 0xBEEF, None)
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
            t.options,
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
        assert_eq!(t.options.timestamp, None);
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
        assert_eq!(p.ip.proto, 6);
        assert_eq!((p.ip.src, p.ip.ident), (ip("fd00::1"), 0));
        let Transport::Tcp(t) = p.transport else {
            panic!()
        };
        assert_eq!((t.dst_port, t.options.mss), (80, Some(1440)));
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
        assert_eq!(p.ip.proto, 17);
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

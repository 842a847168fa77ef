//! Link layers: Ethernet (with any number of 802.1Q/802.1ad tags), Linux cooked SLL and SLL2, raw IP,
//! BSD NULL/LOOP. Each finds where the IP header starts and what the link says about the frame, then
//! hands over to `ip`.

use super::ip::{self, Net};
use super::{linktype, DecodeError, Layer, LinkMeta, Packet, PacketDirection};

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86DD;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88A8;
/// Pre-standard QinQ tag still emitted by some switches.
const ETHERTYPE_QINQ_OLD: u16 = 0x9100;
const ETHERTYPE_PPPOE_SESSION: u16 = 0x8864;
const PPP_IPV4: u16 = 0x0021;
const PPP_IPV6: u16 = 0x0057;

/// Linux NFLOG (`tcpdump -i nflog:N`, iptables/nft `log group N`): packets logged by netfilter rules.
const LINKTYPE_NFLOG: u32 = 239;
const NFULA_PAYLOAD: u16 = 9;

/// LINKTYPE values of raw IP that some writers use instead of 101 (DLT_RAW's numbers on some systems).
const LINKTYPE_RAW_BSD: u32 = 12;
const LINKTYPE_RAW_OPENBSD: u32 = 14;

/// Decode one captured frame of the given link type into a `Packet`.
#[inline(always)]
pub fn decode(linktype: u32, frame: &[u8]) -> Result<Packet<'_>, DecodeError> {
    let (net, at, end, link) = locate_ip(linktype, frame)?;
    ip::decode(&frame[..end], at, net, link, true)
}

/// For an ICMP/ICMPv6 error (port unreachable, time exceeded...), the packet it quotes, decoded as far
/// as the quote goes (usually `truncated`; addresses and ports as the original sender sent them).
/// `None` for any other frame. Costs a second decode: call it only for ICMP errors.
pub fn icmp_quote(linktype: u32, frame: &[u8]) -> Option<Packet<'_>> {
    let (net, at, end, link) = locate_ip(linktype, frame).ok()?;
    ip::icmp_quote(&frame[..end], at, net, link)
}

/// Where the IP packet of a frame starts (and where the link layer's data ends), and what the link
/// layer said.
#[inline(always)]
fn locate_ip(linktype: u32, frame: &[u8]) -> Result<(Net, usize, usize, LinkMeta), DecodeError> {
    let mut link = LinkMeta::default();
    let mut end = frame.len();
    let (net, at) = match linktype {
        linktype::ETHERNET => {
            let (net, at, vlan) = ethernet(frame, 0)?;
            link.vlan = vlan;
            (net, at)
        }
        linktype::LINUX_SLL2 => sll2(frame, &mut link)?,
        linktype::LINUX_SLL => sll(frame, &mut link)?,
        // The version nibble decides, also for 228/229 (some writers label IPv6 as 228).
        linktype::RAW
        | LINKTYPE_RAW_BSD
        | LINKTYPE_RAW_OPENBSD
        | linktype::IPV4
        | linktype::IPV6 => (raw_version(frame)?, 0),
        linktype::NULL | linktype::LOOP => (null_family(frame)?, 4),
        LINKTYPE_NFLOG => {
            let (net, at, payload_end) = nflog(frame)?;
            end = payload_end;
            (net, at)
        }
        other => return Err(DecodeError::UnsupportedLinkType(other)),
    };
    Ok((net, at, end, link))
}

#[inline]
fn be16(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..at + 2).map(|s| u16::from_be_bytes([s[0], s[1]]))
}

/// Ethernet II header at `at` with its VLAN tags: the network protocol, where its header starts, and
/// the outermost VLAN id.
#[inline]
pub(super) fn ethernet(frame: &[u8], at: usize) -> Result<(Net, usize, Option<u16>), DecodeError> {
    let Some(ethertype) = be16(frame, at + 12) else {
        return Err(DecodeError::Truncated {
            layer: Layer::Link,
            offset: at,
        });
    };
    let (net, at, vlan) = ethertype_chain(frame, ethertype, at + 14)?;
    Ok((net, at, vlan))
}

/// Follow VLAN tags from an ethertype whose payload starts at `at`.
#[inline]
fn ethertype_chain(
    frame: &[u8],
    mut ethertype: u16,
    mut at: usize,
) -> Result<(Net, usize, Option<u16>), DecodeError> {
    let mut vlan = None;
    loop {
        match ethertype {
            ETHERTYPE_IPV4 => return Ok((Net::V4, at, vlan)),
            ETHERTYPE_IPV6 => return Ok((Net::V6, at, vlan)),
            ETHERTYPE_VLAN | ETHERTYPE_QINQ | ETHERTYPE_QINQ_OLD => {
                let (Some(tci), Some(inner)) = (be16(frame, at), be16(frame, at + 2)) else {
                    return Err(DecodeError::Truncated {
                        layer: Layer::Vlan,
                        offset: at,
                    });
                };
                if vlan.is_none() {
                    vlan = Some(tci & 0x0FFF);
                }
                ethertype = inner;
                at += 4;
            }
            ETHERTYPE_PPPOE_SESSION => {
                // PPPoE session header (6 bytes), then the PPP protocol.
                let Some(proto) = be16(frame, at + 6) else {
                    return Err(DecodeError::Truncated {
                        layer: Layer::Link,
                        offset: at,
                    });
                };
                return match proto {
                    PPP_IPV4 => Ok((Net::V4, at + 8, vlan)),
                    PPP_IPV6 => Ok((Net::V6, at + 8, vlan)),
                    _ => Err(DecodeError::NotIp {
                        ethertype: ETHERTYPE_PPPOE_SESSION,
                    }),
                };
            }
            other => return Err(DecodeError::NotIp { ethertype: other }),
        }
    }
}

/// NFLOG: a 4-byte header (address family, version, group) and type-length-value attributes in host
/// byte order; the packet is the NFULA_PAYLOAD attribute. Returns where it starts and ends.
fn nflog(frame: &[u8]) -> Result<(Net, usize, usize), DecodeError> {
    if frame.len() < 4 {
        return Err(DecodeError::Truncated {
            layer: Layer::Link,
            offset: 0,
        });
    }
    let mut p = 4;
    // Host byte order: almost always little-endian; big-endian if the first length is impossible so.
    let big_endian = frame
        .get(4..6)
        .is_some_and(|l| u16::from_le_bytes([l[0], l[1]]) < 4);
    let read = |b: &[u8], i: usize| {
        if big_endian {
            u16::from_be_bytes([b[i], b[i + 1]])
        } else {
            u16::from_le_bytes([b[i], b[i + 1]])
        }
    };
    while p < frame.len() {
        let Some(t) = frame.get(p..p + 4) else {
            return Err(DecodeError::Truncated {
                layer: Layer::Link,
                offset: p,
            });
        };
        let (len, kind) = (read(t, 0) as usize, read(t, 2));
        if len < 4 {
            return Err(DecodeError::Malformed {
                layer: Layer::Link,
                offset: p,
                what: "NFLOG attribute shorter than 4 bytes",
            });
        }
        // The top bits of the type are flags (nested, byte order).
        if kind & 0x3FFF == NFULA_PAYLOAD {
            let end = (p + len).min(frame.len());
            return Ok((
                raw_version(&frame[p + 4..end]).map_err(|_| DecodeError::Truncated {
                    layer: Layer::Link,
                    offset: p,
                })?,
                p + 4,
                end,
            ));
        }
        if p + len > frame.len() {
            return Err(DecodeError::Truncated {
                layer: Layer::Link,
                offset: p,
            });
        }
        p += len.div_ceil(4) * 4;
    }
    // A log record without the packet (e.g. `--nflog-size 0`).
    Err(DecodeError::NotIp { ethertype: 0 })
}

fn direction(pkttype: u16) -> PacketDirection {
    match pkttype {
        0 => PacketDirection::Incoming,
        1 => PacketDirection::Broadcast,
        2 => PacketDirection::Multicast,
        3 => PacketDirection::OtherHost,
        4 => PacketDirection::Outgoing,
        other => PacketDirection::Unknown(other.min(255) as u8),
    }
}

/// Linux cooked v2 (`tcpdump -i any` today): protocol, ifindex, ARPHRD, pkttype, address; 20 bytes.
#[inline]
fn sll2(frame: &[u8], link: &mut LinkMeta) -> Result<(Net, usize), DecodeError> {
    let Some(h) = frame.get(..20) else {
        return Err(DecodeError::Truncated {
            layer: Layer::Link,
            offset: 0,
        });
    };
    let protocol = u16::from_be_bytes([h[0], h[1]]);
    link.ifindex = Some(u32::from_be_bytes([h[4], h[5], h[6], h[7]]));
    link.direction = Some(direction(h[10] as u16));
    let (net, at, vlan) = ethertype_chain(frame, protocol, 20)?;
    link.vlan = vlan;
    Ok((net, at))
}

/// Linux cooked v1: pkttype, ARPHRD, address length, 8 address bytes, protocol; 16 bytes.
#[inline]
fn sll(frame: &[u8], link: &mut LinkMeta) -> Result<(Net, usize), DecodeError> {
    let Some(h) = frame.get(..16) else {
        return Err(DecodeError::Truncated {
            layer: Layer::Link,
            offset: 0,
        });
    };
    link.direction = Some(direction(u16::from_be_bytes([h[0], h[1]])));
    let protocol = u16::from_be_bytes([h[14], h[15]]);
    let (net, at, vlan) = ethertype_chain(frame, protocol, 16)?;
    link.vlan = vlan;
    Ok((net, at))
}

fn raw_version(frame: &[u8]) -> Result<Net, DecodeError> {
    match frame.first().map(|b| b >> 4) {
        Some(4) => Ok(Net::V4),
        Some(6) => Ok(Net::V6),
        Some(_) => Err(DecodeError::Malformed {
            layer: Layer::Link,
            offset: 0,
            what: "raw IP frame whose IP version is neither 4 nor 6",
        }),
        None => Err(DecodeError::Truncated {
            layer: Layer::Link,
            offset: 0,
        }),
    }
}

/// BSD loopback: a 4-byte address family, in the capturing host's byte order for NULL and in network
/// order for LOOP (both are seen in practice for both, so either order is accepted). AF_INET6 differs
/// by OS: 24 (NetBSD/OpenBSD), 28 (FreeBSD), 30 (macOS).
fn null_family(frame: &[u8]) -> Result<Net, DecodeError> {
    let Some(h) = frame.get(..4) else {
        return Err(DecodeError::Truncated {
            layer: Layer::Link,
            offset: 0,
        });
    };
    let a = [h[0], h[1], h[2], h[3]];
    let (le, be) = (u32::from_le_bytes(a), u32::from_be_bytes(a));
    let is_v6 = |af: u32| matches!(af, 24 | 28 | 30);
    if le == 2 || be == 2 {
        Ok(Net::V4)
    } else if is_v6(le) || is_v6(be) {
        Ok(Net::V6)
    } else if let Ok((net, _, _)) = ethertype_chain(h, u16::from_be_bytes([h[2], h[3]]), 4) {
        // Some writers put an Ethernet type in the low half instead of an address family.
        Ok(net)
    } else {
        // Report the family as the "ethertype": it is not IP either way.
        Err(DecodeError::NotIp {
            ethertype: le.min(be).min(u16::MAX as u32) as u16,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eth(ethertype: u16, rest: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(rest);
        f
    }

    #[test]
    fn ethernet_finds_ip_after_stacked_tags() {
        // 802.1ad outer tag VID 100, 802.1Q inner tag VID 200, then IPv4.
        let f = eth(0x88A8, &[0x00, 100, 0x81, 0x00, 0x00, 200, 0x08, 0x00]);
        let (net, at, vlan) = ethernet(&f, 0).unwrap();
        assert_eq!((net, at, vlan), (Net::V4, 22, Some(100)));
    }

    #[test]
    fn ethernet_non_ip_is_not_ip() {
        let f = eth(0x0806, &[0; 28]);
        assert_eq!(
            ethernet(&f, 0).unwrap_err(),
            DecodeError::NotIp { ethertype: 0x0806 }
        );
        let f = eth(0x8100, &[0x00, 5, 0x88, 0xCC]);
        assert_eq!(
            ethernet(&f, 0).unwrap_err(),
            DecodeError::NotIp { ethertype: 0x88CC }
        );
    }

    #[test]
    fn ethernet_cut_inside_tag_is_truncated_vlan() {
        let f = eth(0x8100, &[0x00]);
        assert_eq!(
            ethernet(&f, 0).unwrap_err(),
            DecodeError::Truncated {
                layer: Layer::Vlan,
                offset: 14
            }
        );
        assert_eq!(
            ethernet(&f[..10], 0).unwrap_err(),
            DecodeError::Truncated {
                layer: Layer::Link,
                offset: 0
            }
        );
    }

    #[test]
    fn sll2_carries_ifindex_and_direction() {
        let mut f = vec![0x08, 0x00, 0, 0, 0, 0, 0, 7, 0x00, 0x01, 4, 6];
        f.extend_from_slice(&[0; 8]);
        let mut link = LinkMeta::default();
        assert_eq!(sll2(&f, &mut link).unwrap(), (Net::V4, 20));
        assert_eq!(link.ifindex, Some(7));
        assert_eq!(link.direction, Some(PacketDirection::Outgoing));
    }

    #[test]
    fn sll_reads_pkttype_and_protocol() {
        let mut f = vec![0x00, 0x03, 0x00, 0x01, 0x00, 0x06];
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&[0x86, 0xDD]);
        let mut link = LinkMeta::default();
        assert_eq!(sll(&f, &mut link).unwrap(), (Net::V6, 16));
        assert_eq!(link.direction, Some(PacketDirection::OtherHost));
        assert_eq!(link.ifindex, None);
    }

    #[test]
    fn null_accepts_both_byte_orders_and_bsd_inet6_values() {
        assert_eq!(null_family(&[2, 0, 0, 0]).unwrap(), Net::V4);
        assert_eq!(null_family(&[0, 0, 0, 2]).unwrap(), Net::V4);
        for af in [24u32, 28, 30] {
            assert_eq!(null_family(&af.to_le_bytes()).unwrap(), Net::V6);
            assert_eq!(null_family(&af.to_be_bytes()).unwrap(), Net::V6);
        }
        assert!(matches!(
            null_family(&[7, 0, 0, 0]),
            Err(DecodeError::NotIp { .. })
        ));
        assert!(matches!(
            null_family(&[2, 0]),
            Err(DecodeError::Truncated {
                layer: Layer::Link,
                ..
            })
        ));
    }

    #[test]
    fn unknown_linktype_is_reported() {
        assert_eq!(
            decode(147, &[0; 40]).unwrap_err(),
            DecodeError::UnsupportedLinkType(147)
        );
    }

    #[test]
    fn raw_ip_needs_a_version() {
        assert_eq!(
            decode(linktype::RAW, &[]).unwrap_err(),
            DecodeError::Truncated {
                layer: Layer::Link,
                offset: 0
            }
        );
        assert!(matches!(
            decode(linktype::RAW, &[0x50; 20]),
            Err(DecodeError::Malformed {
                layer: Layer::Link,
                ..
            })
        ));
    }
}

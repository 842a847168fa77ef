//! Link layers: Ethernet (with any number of 802.1Q/802.1ad tags and PPPoE sessions), Linux cooked SLL
//! and SLL2, NFLOG, raw IP, BSD NULL/LOOP. Each finds where the IP header starts and what the link says
//! about the frame; `ip` takes over from there.
//!
//! A leaf: the link layer knows header layouts and EtherTypes, nothing of IP (tunnels that carry
//! Ethernet call `ethernet` from `ip`).

use super::field::{self, get, Short};
use super::proto::{EtherType, LinkType, PppProtocol};
use super::{DecodeError, Layer, LinkMeta, Net, PacketDirection};

/// Ethernet II (IEEE 802.3).
pub mod ethernet {
    pub mod field {
        use crate::wire::field::{Field, Rest};
        pub const DESTINATION: Field = 0..6;
        pub const SOURCE: Field = 6..12;
        pub const ETHERTYPE: Field = 12..14;
        pub const PAYLOAD: Rest = 14..;
    }
    pub const HEADER_LEN: usize = field::PAYLOAD.start;
}

/// An 802.1Q/802.1ad tag: it follows the EtherType that announced it.
pub mod vlan {
    pub mod field {
        use crate::wire::field::{Field, Rest};
        /// Priority (3 bits), drop eligible (1), VLAN id (12).
        pub const TCI: Field = 0..2;
        pub const ETHERTYPE: Field = 2..4;
        pub const PAYLOAD: Rest = 4..;
    }
    pub const HEADER_LEN: usize = field::PAYLOAD.start;
    pub const VID_MASK: u16 = 0x0FFF;
}

/// PPPoE session header (RFC 2516) and the PPP protocol after it.
pub mod pppoe {
    pub mod field {
        use crate::wire::field::{Field, Rest};
        pub const VER_TYPE: usize = 0;
        pub const CODE: usize = 1;
        pub const SESSION_ID: Field = 2..4;
        pub const LENGTH: Field = 4..6;
        pub const PPP_PROTOCOL: Field = 6..8;
        pub const PAYLOAD: Rest = 8..;
    }
    pub const HEADER_LEN: usize = field::PAYLOAD.start;
}

/// Linux cooked capture v1 (`LINKTYPE_LINUX_SLL`).
pub mod sll {
    pub mod field {
        use crate::wire::field::{Field, Rest};
        pub const PKTTYPE: Field = 0..2;
        pub const HATYPE: Field = 2..4;
        pub const HALEN: Field = 4..6;
        pub const ADDR: Field = 6..14;
        pub const PROTOCOL: Field = 14..16;
        pub const PAYLOAD: Rest = 16..;
    }
    pub const HEADER_LEN: usize = field::PAYLOAD.start;
}

/// Linux cooked capture v2 (`LINKTYPE_LINUX_SLL2`, `tcpdump -i any` today).
pub mod sll2 {
    pub mod field {
        use crate::wire::field::{Field, Rest};
        pub const PROTOCOL: Field = 0..2;
        pub const RESERVED: Field = 2..4;
        pub const IFINDEX: Field = 4..8;
        pub const HATYPE: Field = 8..10;
        pub const PKTTYPE: usize = 10;
        pub const HALEN: usize = 11;
        pub const ADDR: Field = 12..20;
        pub const PAYLOAD: Rest = 20..;
    }
    pub const HEADER_LEN: usize = field::PAYLOAD.start;
}

/// NFLOG (`LINKTYPE_NFLOG`): a 4-byte header, then type-length-value attributes in host byte order.
pub mod nflog {
    pub mod field {
        use crate::wire::field::{Field, Rest};
        pub const FAMILY: usize = 0;
        pub const VERSION: usize = 1;
        pub const RESOURCE_ID: Field = 2..4;
        pub const ATTRIBUTES: Rest = 4..;
    }
    /// One attribute: its length (header included, before padding to 4) and type.
    pub mod tlv {
        use crate::wire::field::{Field, Rest};
        pub const LENGTH: Field = 0..2;
        pub const TYPE: Field = 2..4;
        pub const VALUE: Rest = 4..;
        pub const HEADER_LEN: usize = VALUE.start;
        /// The top bits of the type are flags (nested, byte order).
        pub const TYPE_MASK: u16 = 0x3FFF;
    }
    pub const HEADER_LEN: usize = field::ATTRIBUTES.start;
    /// The attribute that holds the logged packet.
    pub const NFULA_PAYLOAD: u16 = 9;
}

/// BSD loopback (`LINKTYPE_NULL`, `LINKTYPE_LOOP`): a 4-byte address family.
pub mod null {
    pub mod field {
        use crate::wire::field::{Field, Rest};
        pub const FAMILY: Field = 0..4;
        pub const PAYLOAD: Rest = 4..;
    }
    pub const HEADER_LEN: usize = field::PAYLOAD.start;
    pub const AF_INET: u32 = 2;
    /// AF_INET6 differs by OS: NetBSD/OpenBSD, FreeBSD, macOS.
    pub const AF_INET6: [u32; 3] = [24, 28, 30];
}

/// An Ethernet II header whose 14 bytes are there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetHeader<'a>(&'a [u8; ethernet::HEADER_LEN]);

impl<'a> EthernetHeader<'a> {
    /// The header at `at` in `b`, if all of it is there.
    #[inline(always)]
    pub fn new_checked(b: &'a [u8], at: usize) -> Result<Self, Short> {
        field::bytes(b, at).map(EthernetHeader)
    }

    #[inline(always)]
    pub fn ethertype(&self) -> EtherType {
        u16::from_be_bytes(get(self.0, ethernet::field::ETHERTYPE)).into()
    }
}

/// A VLAN tag whose 4 bytes are there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanTag<'a>(&'a [u8; vlan::HEADER_LEN]);

impl<'a> VlanTag<'a> {
    #[inline(always)]
    pub fn new_checked(b: &'a [u8], at: usize) -> Result<Self, Short> {
        field::bytes(b, at).map(VlanTag)
    }

    #[inline(always)]
    pub fn vid(&self) -> u16 {
        u16::from_be_bytes(get(self.0, vlan::field::TCI)) & vlan::VID_MASK
    }

    /// The EtherType of what follows the tag.
    #[inline(always)]
    pub fn ethertype(&self) -> EtherType {
        u16::from_be_bytes(get(self.0, vlan::field::ETHERTYPE)).into()
    }
}

/// A Linux cooked v1 header whose 16 bytes are there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SllHeader<'a>(&'a [u8; sll::HEADER_LEN]);

impl<'a> SllHeader<'a> {
    #[inline(always)]
    pub fn new_checked(b: &'a [u8]) -> Result<Self, Short> {
        field::bytes(b, 0).map(SllHeader)
    }

    #[inline(always)]
    pub fn direction(&self) -> PacketDirection {
        PacketDirection::from_pkttype(u16::from_be_bytes(get(self.0, sll::field::PKTTYPE)))
    }

    #[inline(always)]
    pub fn protocol(&self) -> EtherType {
        u16::from_be_bytes(get(self.0, sll::field::PROTOCOL)).into()
    }
}

/// A Linux cooked v2 header whose 20 bytes are there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sll2Header<'a>(&'a [u8; sll2::HEADER_LEN]);

impl<'a> Sll2Header<'a> {
    #[inline(always)]
    pub fn new_checked(b: &'a [u8]) -> Result<Self, Short> {
        field::bytes(b, 0).map(Sll2Header)
    }

    #[inline(always)]
    pub fn protocol(&self) -> EtherType {
        u16::from_be_bytes(get(self.0, sll2::field::PROTOCOL)).into()
    }

    #[inline(always)]
    pub fn ifindex(&self) -> u32 {
        u32::from_be_bytes(get(self.0, sll2::field::IFINDEX))
    }

    #[inline(always)]
    pub fn direction(&self) -> PacketDirection {
        PacketDirection::from_pkttype(self.0[sll2::field::PKTTYPE] as u16)
    }
}

impl PacketDirection {
    /// From Linux's `sll_pkttype` (PACKET_HOST … PACKET_OUTGOING).
    #[inline]
    pub fn from_pkttype(pkttype: u16) -> PacketDirection {
        match pkttype {
            0 => PacketDirection::Incoming,
            1 => PacketDirection::Broadcast,
            2 => PacketDirection::Multicast,
            3 => PacketDirection::OtherHost,
            4 => PacketDirection::Outgoing,
            other => PacketDirection::Unknown(other.min(255) as u8),
        }
    }
}

/// A link header cut short: the frame ends inside it.
#[inline(always)]
fn truncated(layer: Layer, offset: usize) -> impl FnOnce(Short) -> DecodeError {
    move |_| DecodeError::Truncated { layer, offset }
}

/// Where the IP packet of a frame starts (and where the link layer's data ends), and what the link
/// layer said.
#[inline(always)]
pub(super) fn locate_ip(
    linktype: LinkType,
    frame: &[u8],
) -> Result<(Net, usize, usize, LinkMeta), DecodeError> {
    let mut link = LinkMeta::default();
    let mut end = frame.len();
    let (net, at) = match linktype {
        LinkType::Ethernet => {
            let (net, at, vlan) = ethernet(frame, 0)?;
            link.vlan = vlan;
            (net, at)
        }
        LinkType::LinuxSll2 => sll2(frame, &mut link)?,
        LinkType::LinuxSll => sll(frame, &mut link)?,
        // The version nibble decides, also for 228/229 (some writers label IPv6 as 228).
        LinkType::Raw
        | LinkType::RawBsd
        | LinkType::RawOpenBsd
        | LinkType::Ipv4
        | LinkType::Ipv6 => (raw_version(frame)?, 0),
        LinkType::Null | LinkType::Loop => (null_family(frame)?, null::HEADER_LEN),
        LinkType::Nflog => {
            let (net, at, payload_end) = self::nflog(frame)?;
            end = payload_end;
            (net, at)
        }
        LinkType::Unknown(other) => return Err(DecodeError::UnsupportedLinkType(other)),
    };
    Ok((net, at, end, link))
}

/// Where the payload of EtherType `wanted` starts in a frame that carries it (Ethernet with its VLAN
/// tags, Linux SLL/SLL2), with what the link layer said; `None` for any other frame. For the non-IP
/// protocols read beside IP (ARP), called only after `locate_ip` found no IP.
pub(super) fn locate(
    linktype: LinkType,
    frame: &[u8],
    wanted: EtherType,
) -> Option<(usize, LinkMeta)> {
    let mut link = LinkMeta::default();
    let (mut ethertype, mut at) = match linktype {
        LinkType::Ethernet => (
            EthernetHeader::new_checked(frame, 0).ok()?.ethertype(),
            ethernet::HEADER_LEN,
        ),
        LinkType::LinuxSll2 => {
            let h = Sll2Header::new_checked(frame).ok()?;
            link.ifindex = Some(h.ifindex());
            link.direction = Some(h.direction());
            (h.protocol(), sll2::HEADER_LEN)
        }
        LinkType::LinuxSll => {
            let h = SllHeader::new_checked(frame).ok()?;
            link.direction = Some(h.direction());
            (h.protocol(), sll::HEADER_LEN)
        }
        _ => return None,
    };
    // A frame has few tags; the bound keeps a hostile frame of tags from costing more.
    for _ in 0..8 {
        if ethertype == wanted {
            return Some((at, link));
        }
        if !ethertype.is_vlan_tag() {
            return None;
        }
        let tag = VlanTag::new_checked(frame, at).ok()?;
        link.vlan.get_or_insert(tag.vid());
        ethertype = tag.ethertype();
        at += vlan::HEADER_LEN;
    }
    None
}

/// Ethernet II header at `at` with its VLAN tags: the network protocol, where its header starts, and
/// the outermost VLAN id.
#[inline(always)]
pub(super) fn ethernet(frame: &[u8], at: usize) -> Result<(Net, usize, Option<u16>), DecodeError> {
    let h = EthernetHeader::new_checked(frame, at).map_err(truncated(Layer::Link, at))?;
    ethertype_chain(frame, h.ethertype(), at + ethernet::HEADER_LEN)
}

/// Follow VLAN tags (and a PPPoE session) from an EtherType whose payload starts at `at`.
#[inline(always)]
fn ethertype_chain(
    frame: &[u8],
    mut ethertype: EtherType,
    mut at: usize,
) -> Result<(Net, usize, Option<u16>), DecodeError> {
    let mut vlan = None;
    loop {
        match ethertype {
            EtherType::Ipv4 => return Ok((Net::V4, at, vlan)),
            EtherType::Ipv6 => return Ok((Net::V6, at, vlan)),
            t if t.is_vlan_tag() => {
                let tag = VlanTag::new_checked(frame, at).map_err(truncated(Layer::Vlan, at))?;
                if vlan.is_none() {
                    vlan = Some(tag.vid());
                }
                ethertype = tag.ethertype();
                at += vlan::HEADER_LEN;
            }
            EtherType::PppoeSession => {
                let h = field::slice(frame, at..at + pppoe::HEADER_LEN)
                    .map_err(truncated(Layer::Link, at))?;
                let proto = u16::from_be_bytes(get(h, pppoe::field::PPP_PROTOCOL));
                return match PppProtocol::from(proto) {
                    PppProtocol::Ipv4 => Ok((Net::V4, at + pppoe::HEADER_LEN, vlan)),
                    PppProtocol::Ipv6 => Ok((Net::V6, at + pppoe::HEADER_LEN, vlan)),
                    PppProtocol::Unknown(_) => Err(DecodeError::NotIp {
                        ethertype: EtherType::PppoeSession.into(),
                    }),
                };
            }
            other => {
                return Err(DecodeError::NotIp {
                    ethertype: other.into(),
                })
            }
        }
    }
}

/// NFLOG: the packet is the NFULA_PAYLOAD attribute. Returns where it starts and ends.
fn nflog(frame: &[u8]) -> Result<(Net, usize, usize), DecodeError> {
    use nflog::tlv;
    if frame.len() < nflog::HEADER_LEN {
        return Err(DecodeError::Truncated {
            layer: Layer::Link,
            offset: 0,
        });
    }
    let mut p = nflog::HEADER_LEN;
    // Host byte order: almost always little-endian; big-endian if the first length is impossible so.
    let order = match field::le16(frame, p..p + 2) {
        Ok(len) if (len as usize) < tlv::HEADER_LEN => field::Order::Big,
        _ => field::Order::Little,
    };
    while p < frame.len() {
        let Ok(t) = field::slice(frame, p..p + tlv::HEADER_LEN) else {
            return Err(DecodeError::Truncated {
                layer: Layer::Link,
                offset: p,
            });
        };
        // Both reads are within the 4 bytes just checked.
        let len = field::u16_in(order, t, tlv::LENGTH).unwrap_or(0) as usize;
        let kind = field::u16_in(order, t, tlv::TYPE).unwrap_or(0);
        if len < tlv::HEADER_LEN {
            return Err(DecodeError::Malformed {
                layer: Layer::Link,
                offset: p,
                what: "NFLOG attribute shorter than 4 bytes",
            });
        }
        if kind & tlv::TYPE_MASK == nflog::NFULA_PAYLOAD {
            let end = (p + len).min(frame.len());
            let value = p + tlv::VALUE.start;
            return Ok((
                raw_version(&frame[value..end]).map_err(|_| DecodeError::Truncated {
                    layer: Layer::Link,
                    offset: p,
                })?,
                value,
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

/// Linux cooked v2: protocol, ifindex, ARPHRD, pkttype, address.
#[inline(always)]
fn sll2(frame: &[u8], link: &mut LinkMeta) -> Result<(Net, usize), DecodeError> {
    let h = Sll2Header::new_checked(frame).map_err(truncated(Layer::Link, 0))?;
    link.ifindex = Some(h.ifindex());
    link.direction = Some(h.direction());
    let (net, at, vlan) = ethertype_chain(frame, h.protocol(), sll2::HEADER_LEN)?;
    link.vlan = vlan;
    Ok((net, at))
}

/// Linux cooked v1: pkttype, ARPHRD, address length, 8 address bytes, protocol.
#[inline]
fn sll(frame: &[u8], link: &mut LinkMeta) -> Result<(Net, usize), DecodeError> {
    let h = SllHeader::new_checked(frame).map_err(truncated(Layer::Link, 0))?;
    link.direction = Some(h.direction());
    let (net, at, vlan) = ethertype_chain(frame, h.protocol(), sll::HEADER_LEN)?;
    link.vlan = vlan;
    Ok((net, at))
}

/// Raw IP: the version nibble says which.
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

/// BSD loopback: the address family, in the capturing host's byte order for NULL and in network order
/// for LOOP (both are seen in practice for both, so either order is accepted).
fn null_family(frame: &[u8]) -> Result<Net, DecodeError> {
    let (Ok(le), Ok(be)) = (
        field::le32(frame, null::field::FAMILY),
        field::be32(frame, null::field::FAMILY),
    ) else {
        return Err(DecodeError::Truncated {
            layer: Layer::Link,
            offset: 0,
        });
    };
    let is_v6 = |af: u32| null::AF_INET6.contains(&af);
    if le == null::AF_INET || be == null::AF_INET {
        Ok(Net::V4)
    } else if is_v6(le) || is_v6(be) {
        Ok(Net::V6)
    } else if let Ok((net, _, _)) = ethertype_chain(
        &frame[..null::HEADER_LEN],
        EtherType::from(be as u16),
        null::HEADER_LEN,
    ) {
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
    use crate::wire::decode;

    #[test]
    fn header_views_check_once_then_read_every_field() {
        let f = eth(0x8100, &[0x20, 100, 0x86, 0xDD]);
        let h = EthernetHeader::new_checked(&f, 0).unwrap();
        assert_eq!(h.ethertype(), EtherType::Vlan);
        assert!(EthernetHeader::new_checked(&f[..13], 0).is_err());
        let tag = VlanTag::new_checked(&f, 14).unwrap();
        assert_eq!((tag.vid(), tag.ethertype()), (100, EtherType::Ipv6));
        assert_eq!(
            VlanTag::new_checked(&f, 15),
            Err(Short { end: 19, len: 18 })
        );
        let mut s = vec![0x86, 0xDD, 0, 0, 0, 0, 1, 2, 0, 1, 4, 6];
        s.extend_from_slice(&[0; 8]);
        let h = Sll2Header::new_checked(&s).unwrap();
        assert_eq!(
            (h.protocol(), h.ifindex(), h.direction()),
            (EtherType::Ipv6, 258, PacketDirection::Outgoing)
        );
        assert!(Sll2Header::new_checked(&s[..19]).is_err());
        let h = SllHeader::new_checked(&s[..16]).unwrap();
        assert_eq!(h.direction(), PacketDirection::Unknown(255));
        assert_eq!(h.protocol(), EtherType::Unknown(0));
        assert!(SllHeader::new_checked(&s[..15]).is_err());
        const { assert!(ethernet::field::ETHERTYPE.end <= ethernet::HEADER_LEN) };
        const { assert!(sll::field::PROTOCOL.end <= sll::HEADER_LEN) };
        const { assert!(sll2::field::ADDR.end <= sll2::HEADER_LEN) };
        const { assert!(pppoe::field::PPP_PROTOCOL.end <= pppoe::HEADER_LEN) };
    }

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
            decode(LinkType::Raw.into(), &[]).unwrap_err(),
            DecodeError::Truncated {
                layer: Layer::Link,
                offset: 0
            }
        );
        assert!(matches!(
            decode(LinkType::Raw.into(), &[0x50; 20]),
            Err(DecodeError::Malformed {
                layer: Layer::Link,
                ..
            })
        ));
    }
}

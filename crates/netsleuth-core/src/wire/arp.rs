//! ARP (RFC 826) for IPv4 over Ethernet: the one protocol beside IP the decoder reads, and only when
//! the link layer names it (EtherType 0x0806), so IP frames pay nothing for it. Neighbour discovery
//! (IPv6) needs no decoder of its own: it is ICMPv6 (types 135 and 136) and its addresses are the IP
//! header's.

use super::field::{self, get};
use super::link;
use super::proto::{EtherType, LinkType};
use super::LinkMeta;
use std::net::Ipv4Addr;

/// The fields of an ARP message for IPv4 over Ethernet (hardware type 1, protocol 0x0800).
pub mod field_of {
    use crate::wire::field::Field;
    pub const HTYPE: Field = 0..2;
    pub const PTYPE: Field = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Field = 6..8;
    pub const SENDER_HW: Field = 8..14;
    pub const SENDER_IP: Field = 14..18;
    pub const TARGET_HW: Field = 18..24;
    pub const TARGET_IP: Field = 24..28;
}
/// An ARP message for IPv4 over Ethernet is 28 bytes (frames are padded beyond it).
pub const LEN: usize = 28;

const HTYPE_ETHERNET: u16 = 1;
const PTYPE_IPV4: u16 = 0x0800;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArpOp {
    Request,
    Reply,
    Unknown(u16),
}

impl From<u16> for ArpOp {
    fn from(v: u16) -> ArpOp {
        match v {
            1 => ArpOp::Request,
            2 => ArpOp::Reply,
            other => ArpOp::Unknown(other),
        }
    }
}

/// One ARP message: who asks (or answers) for which address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpMessage {
    pub op: ArpOp,
    pub sender: Ipv4Addr,
    pub target: Ipv4Addr,
    pub link: LinkMeta,
}

impl ArpMessage {
    /// An announcement (gratuitous ARP: the sender asks for or announces its own address) or a
    /// duplicate-address probe (sender 0.0.0.0): no neighbour is being resolved.
    pub fn announces(&self) -> bool {
        self.sender == self.target || self.sender.is_unspecified()
    }
}

/// The ARP message of a frame, if the frame is one (Ethernet with any VLAN tags, Linux SLL/SLL2) and
/// is IPv4 over Ethernet; `None` for anything else, damaged or cut frames included.
pub fn decode(linktype: u32, frame: &[u8]) -> Option<ArpMessage> {
    let (at, link) = link::locate(LinkType::from(linktype), frame, EtherType::Arp)?;
    let b = field::slice(frame, at..at + LEN).ok()?;
    let htype = u16::from_be_bytes(get(b, field_of::HTYPE));
    let ptype = u16::from_be_bytes(get(b, field_of::PTYPE));
    if htype != HTYPE_ETHERNET
        || ptype != PTYPE_IPV4
        || b[field_of::HLEN] != 6
        || b[field_of::PLEN] != 4
    {
        return None;
    }
    let ip = |f| Ipv4Addr::from(get::<4>(b, f));
    Some(ArpMessage {
        op: ArpOp::from(u16::from_be_bytes(get(b, field_of::OPER))),
        sender: ip(field_of::SENDER_IP),
        target: ip(field_of::TARGET_IP),
        link,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ethernet ARP frame: `op` from `sender` for `target`.
    pub fn frame(op: u16, sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1]);
        f.extend_from_slice(&0x0806u16.to_be_bytes());
        f.extend_from_slice(&[0, 1, 8, 0, 6, 4]);
        f.extend_from_slice(&op.to_be_bytes());
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1]);
        f.extend_from_slice(&sender);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&target);
        f.extend_from_slice(&[0; 18]); // padding to 60 bytes
        f
    }

    #[test]
    fn a_request_and_a_gratuitous_announcement() {
        let m = decode(1, &frame(1, [10, 0, 0, 1], [10, 0, 0, 2])).unwrap();
        assert_eq!(m.op, ArpOp::Request);
        assert_eq!(
            (m.sender, m.target),
            (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2))
        );
        assert!(!m.announces());
        assert!(decode(1, &frame(1, [10, 0, 0, 1], [10, 0, 0, 1]))
            .unwrap()
            .announces());
        assert!(decode(1, &frame(1, [0, 0, 0, 0], [10, 0, 0, 9]))
            .unwrap()
            .announces());
    }

    #[test]
    fn cut_or_foreign_frames_are_not_arp() {
        let f = frame(2, [10, 0, 0, 2], [10, 0, 0, 1]);
        for n in 0..14 + LEN {
            assert!(decode(1, &f[..n]).is_none(), "cut at {n}");
        }
        assert_eq!(decode(1, &f).unwrap().op, ArpOp::Reply);
        let mut v6 = f.clone();
        v6[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
        assert!(decode(1, &v6).is_none());
        let mut token_ring = f.clone();
        token_ring[15] = 6;
        assert!(decode(1, &token_ring).is_none());
        assert!(decode(101, &f).is_none(), "raw IP has no ARP");
    }

    #[test]
    fn sll2_and_vlan_tagged_arp() {
        let eth = frame(1, [10, 0, 0, 1], [10, 0, 0, 3]);
        // SLL2: protocol, reserved, ifindex 7, ARPHRD_ETHER, pkttype outgoing, halen 6, address.
        let mut sll2 = Vec::new();
        sll2.extend_from_slice(&0x0806u16.to_be_bytes());
        sll2.extend_from_slice(&[0, 0]);
        sll2.extend_from_slice(&7u32.to_be_bytes());
        sll2.extend_from_slice(&1u16.to_be_bytes());
        sll2.extend_from_slice(&[4, 6]);
        sll2.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0, 0]);
        sll2.extend_from_slice(&eth[14..]);
        let m = decode(276, &sll2).unwrap();
        assert_eq!(m.target, Ipv4Addr::new(10, 0, 0, 3));
        assert_eq!(m.link.ifindex, Some(7));
        let mut tagged = eth[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x64]);
        tagged.extend_from_slice(&eth[12..]);
        let m = decode(1, &tagged).unwrap();
        assert_eq!(
            (m.link.vlan, m.target),
            (Some(100), Ipv4Addr::new(10, 0, 0, 3))
        );
    }
}

//! rtnetlink: address, link and route changes (multicast groups), and the dumps of links and
//! addresses that start the watcher's picture and resync it after a loss. Decoded by
//! `netlink-packet-route`; only the framing (message boundaries, already in `parse::netlink`) is ours.

use super::event::Event;
use super::sock::{self, Recv};
use crate::parse::netlink::messages;
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use netlink_packet_route::RouteNetlinkMessage;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_IFADDR | RTMGRP_IPV6_ROUTE.
pub const GROUPS: u32 = 0x1 | 0x10 | 0x40 | 0x100 | 0x400;

/// The events of one buffer of rtnetlink messages (damaged or unknown messages are skipped and
/// counted: the second value).
pub fn decode(buf: &[u8]) -> (Vec<Event>, u64) {
    let mut out = Vec::new();
    let mut damaged = 0;
    let mut msgs = messages(buf);
    // Message boundaries from our framing; each message decoded by the crate on its own, so one
    // damaged message costs only itself.
    let mut off = 0;
    for m in &mut msgs {
        let len = 16 + m.body.len();
        let raw = &buf[off..off + len];
        off += crate::parse::netlink::align(len);
        match NetlinkMessage::<RouteNetlinkMessage>::deserialize(raw) {
            Ok(nl) => {
                if let NetlinkPayload::InnerMessage(inner) = nl.payload {
                    out.extend(event(inner));
                }
            }
            Err(_) => damaged += 1,
        }
    }
    (out, damaged + u64::from(msgs.damaged))
}

fn event(m: RouteNetlinkMessage) -> Option<Event> {
    match m {
        RouteNetlinkMessage::NewAddress(a) => address(true, a),
        RouteNetlinkMessage::DelAddress(a) => address(false, a),
        RouteNetlinkMessage::NewLink(l) => link(true, l),
        RouteNetlinkMessage::DelLink(l) => link(false, l),
        RouteNetlinkMessage::NewRoute(r) => route(true, r),
        RouteNetlinkMessage::DelRoute(r) => route(false, r),
        _ => None,
    }
}

fn address(added: bool, a: AddressMessage) -> Option<Event> {
    let mut addr = None;
    let mut local = None;
    let mut ifname = None;
    for at in a.attributes {
        match at {
            AddressAttribute::Address(x) => addr = Some(x),
            AddressAttribute::Local(x) => local = Some(x),
            AddressAttribute::Label(l) => ifname = Some(l),
            _ => {}
        }
    }
    // IFA_LOCAL is the interface's own address (IFA_ADDRESS the peer on point-to-point links).
    Some(Event::Address {
        added,
        ifindex: a.header.index,
        ifname,
        addr: local.or(addr)?,
        prefix_len: a.header.prefix_len,
    })
}

fn link(added: bool, l: LinkMessage) -> Option<Event> {
    let ifname = l.attributes.into_iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n),
        _ => None,
    })?;
    Some(Event::Link {
        added,
        ifindex: l.header.index,
        ifname,
    })
}

fn route(added: bool, r: RouteMessage) -> Option<Event> {
    let mut dst = None;
    let mut oif = None;
    for a in r.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(x)) => dst = Some(x.to_string()),
            RouteAttribute::Destination(RouteAddress::Inet6(x)) => dst = Some(x.to_string()),
            RouteAttribute::Oif(i) => oif = Some(i),
            _ => {}
        }
    }
    let dst = match dst {
        Some(d) => format!("{d}/{}", r.header.destination_prefix_length),
        None => "default".to_string(),
    };
    Some(Event::Route {
        added,
        dst,
        ifindex: oif,
    })
}

/// The rtnetlink sources of one namespace: the event socket and a socket for dumps.
pub struct RtSource {
    events: OwnedFd,
    dumps: OwnedFd,
    seq: u32,
    pub losses: u64,
}

impl RtSource {
    pub fn open(rcvbuf: i32) -> std::io::Result<RtSource> {
        Ok(RtSource {
            events: sock::open(libc::NETLINK_ROUTE, GROUPS, Some(rcvbuf))?,
            dumps: sock::open(libc::NETLINK_ROUTE, 0, Some(1 << 20))?,
            seq: 1,
            losses: 0,
        })
    }

    pub fn fd(&self) -> RawFd {
        self.events.as_raw_fd()
    }

    /// Reads every waiting event; returns true when the kernel reported a loss.
    pub fn read(&mut self, buf: &mut [u8], out: &mut Vec<Event>) -> bool {
        let mut lost = false;
        loop {
            match sock::recv(self.events.as_raw_fd(), buf) {
                Ok(Recv::Data(n)) if n > 0 => out.extend(decode(&buf[..n]).0),
                Ok(Recv::Overrun) => {
                    self.losses += 1;
                    lost = true;
                }
                _ => return lost,
            }
        }
    }

    /// Every link and address now, as `added` events (the start, and the resync after a loss).
    pub fn dump(&mut self) -> std::io::Result<Vec<Event>> {
        let mut out = Vec::new();
        for req in [
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
        ] {
            self.seq += 1;
            let mut header = NetlinkHeader::default();
            header.flags = NLM_F_REQUEST | NLM_F_DUMP;
            header.sequence_number = self.seq;
            let mut msg = NetlinkMessage::new(header, NetlinkPayload::from(req));
            msg.finalize();
            let mut bytes = vec![0u8; msg.buffer_len()];
            msg.serialize(&mut bytes);
            sock::send(&self.dumps, &bytes)?;
            sock::recv_dump(&self.dumps, 5000, |b| {
                let mut end = crate::parse::netlink::DumpEnd::default();
                for m in messages(b) {
                    end.see(&m);
                }
                out.extend(decode(b).0);
                end.done
            })?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::address::AddressHeader;
    use netlink_packet_route::AddressFamily;
    use std::net::{IpAddr, Ipv4Addr};

    fn bytes(m: RouteNetlinkMessage) -> Vec<u8> {
        let mut msg = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(m));
        msg.finalize();
        let mut b = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut b);
        b
    }

    #[test]
    fn address_deletion_decodes_with_its_device() {
        let mut a = AddressMessage::default();
        a.header = AddressHeader {
            family: AddressFamily::Inet,
            prefix_len: 32,
            index: 2,
            ..Default::default()
        };
        a.attributes = vec![
            AddressAttribute::Local(IpAddr::V4(Ipv4Addr::new(192, 168, 50, 100))),
            AddressAttribute::Label("eth0".into()),
        ];
        let mut buf = bytes(RouteNetlinkMessage::DelAddress(a));
        let mut l = LinkMessage::default();
        l.header.index = 2;
        l.attributes = vec![LinkAttribute::IfName("eth0".into())];
        buf.extend(bytes(RouteNetlinkMessage::NewLink(l)));
        let (ev, damaged) = decode(&buf);
        assert_eq!(damaged, 0);
        assert_eq!(
            ev,
            [
                Event::Address {
                    added: false,
                    ifindex: 2,
                    ifname: Some("eth0".into()),
                    addr: "192.168.50.100".parse().unwrap(),
                    prefix_len: 32
                },
                Event::Link {
                    added: true,
                    ifindex: 2,
                    ifname: "eth0".into()
                }
            ]
        );
        for cut in 0..buf.len() {
            let _ = decode(&buf[..cut]);
        }
    }
}

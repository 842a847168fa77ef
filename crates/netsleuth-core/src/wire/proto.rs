//! Protocol numbers: the values other headers use to say what follows them (pcap link types, EtherTypes,
//! IP protocol numbers, ICMP message types). One leaf module, so that every header module names them the
//! same way and none has to import another to learn a number.
//!
//! Each is an enum with `Unknown(n)` for the values we have no name for; convert with `From` both ways
//! (construct through `From` so that a known value never ends up in `Unknown`).

macro_rules! enum_with_unknown {
    (
        $(#[$meta:meta])*
        pub enum $name:ident($ty:ty) {
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
            Unknown($ty),
        }

        impl From<$ty> for $name {
            #[inline(always)]
            fn from(value: $ty) -> Self {
                match value {
                    $( $value => $name::$variant, )+
                    other => $name::Unknown(other),
                }
            }
        }

        impl From<$name> for $ty {
            #[inline(always)]
            fn from(value: $name) -> Self {
                match value {
                    $( $name::$variant => $value, )+
                    $name::Unknown(other) => other,
                }
            }
        }
    };
}

enum_with_unknown! {
    /// pcap/pcapng link types (LINKTYPE_*, tcpdump.org).
    pub enum LinkType(u32) {
        /// BSD loopback, address family in host byte order.
        Null = 0,
        Ethernet = 1,
        /// Raw IP under DLT_RAW's number on some BSDs.
        RawBsd = 12,
        /// Raw IP under OpenBSD's DLT_RAW number.
        RawOpenBsd = 14,
        /// Raw IP, version from the first nibble.
        Raw = 101,
        /// OpenBSD loopback, address family in network byte order.
        Loop = 108,
        /// Linux cooked capture v1.
        LinuxSll = 113,
        Ipv4 = 228,
        Ipv6 = 229,
        /// Linux NFLOG (`tcpdump -i nflog:N`).
        Nflog = 239,
        /// Linux cooked capture v2 (`tcpdump -i any`).
        LinuxSll2 = 276,
    }
}

enum_with_unknown! {
    /// EtherTypes (IEEE 802), also the protocol field of SLL/SLL2 and of Geneve and GRE.
    pub enum EtherType(u16) {
        Ipv4 = 0x0800,
        Arp = 0x0806,
        /// Transparent Ethernet bridging: an Ethernet frame inside Geneve or GRE.
        TransparentEthernet = 0x6558,
        /// 802.1Q VLAN tag.
        Vlan = 0x8100,
        Ipv6 = 0x86DD,
        PppoeDiscovery = 0x8863,
        PppoeSession = 0x8864,
        /// 802.1ad service tag (QinQ).
        QinQ = 0x88A8,
        Lldp = 0x88CC,
        /// Pre-standard QinQ tag still emitted by some switches.
        QinQLegacy = 0x9100,
    }
}

impl EtherType {
    /// A VLAN tag of any kind (802.1Q, 802.1ad, pre-standard QinQ): 4 bytes, then another EtherType.
    #[inline(always)]
    pub fn is_vlan_tag(self) -> bool {
        matches!(
            self,
            EtherType::Vlan | EtherType::QinQ | EtherType::QinQLegacy
        )
    }
}

enum_with_unknown! {
    /// PPP protocol numbers (RFC 1661), inside a PPPoE session.
    pub enum PppProtocol(u16) {
        Ipv4 = 0x0021,
        Ipv6 = 0x0057,
    }
}

enum_with_unknown! {
    /// IP protocol numbers (IANA): IPv4's protocol field, IPv6's next header, conntrack's l4proto.
    pub enum IpProtocol(u8) {
        /// IPv6 hop-by-hop options.
        HopByHop = 0,
        Icmp = 1,
        Igmp = 2,
        /// IPv4 in IP.
        IpIp = 4,
        Tcp = 6,
        Udp = 17,
        Dccp = 33,
        /// IPv6 in IP (6in4, SIT).
        Ipv6 = 41,
        /// IPv6 routing header.
        Ipv6Route = 43,
        /// IPv6 fragment header.
        Ipv6Frag = 44,
        Gre = 47,
        Esp = 50,
        /// Authentication header.
        Ah = 51,
        Icmpv6 = 58,
        /// IPv6: no next header.
        Ipv6NoNxt = 59,
        /// IPv6 destination options.
        Ipv6Opts = 60,
        Sctp = 132,
        /// IPv6 mobility header.
        Mobility = 135,
        UdpLite = 136,
        /// Host Identity Protocol.
        Hip = 139,
        Shim6 = 140,
    }
}

impl IpProtocol {
    /// An IPv6 extension header whose length is `(n + 1) * 8` (hop-by-hop, routing, destination
    /// options, mobility, HIP, shim6); the fragment header (always 8) and AH (`(n + 2) * 4`) differ.
    #[inline(always)]
    pub fn is_ipv6_option_header(self) -> bool {
        matches!(
            self,
            IpProtocol::HopByHop
                | IpProtocol::Ipv6Route
                | IpProtocol::Ipv6Opts
                | IpProtocol::Mobility
                | IpProtocol::Hip
                | IpProtocol::Shim6
        )
    }
}

enum_with_unknown! {
    /// ICMP message types (RFC 792 and later).
    pub enum Icmpv4Message(u8) {
        EchoReply = 0,
        DstUnreachable = 3,
        SourceQuench = 4,
        Redirect = 5,
        EchoRequest = 8,
        RouterAdvert = 9,
        RouterSolicit = 10,
        TimeExceeded = 11,
        ParamProblem = 12,
        Timestamp = 13,
        TimestampReply = 14,
    }
}

impl Icmpv4Message {
    /// A message that quotes the IP header and first bytes of the packet it is about.
    #[inline]
    pub fn quotes_packet(self) -> bool {
        matches!(
            self,
            Icmpv4Message::DstUnreachable
                | Icmpv4Message::SourceQuench
                | Icmpv4Message::Redirect
                | Icmpv4Message::TimeExceeded
                | Icmpv4Message::ParamProblem
        )
    }
}

enum_with_unknown! {
    /// ICMPv6 message types (RFC 4443, RFC 4861).
    pub enum Icmpv6Message(u8) {
        DstUnreachable = 1,
        PktTooBig = 2,
        TimeExceeded = 3,
        ParamProblem = 4,
        EchoRequest = 128,
        EchoReply = 129,
        RouterSolicit = 133,
        RouterAdvert = 134,
        NeighborSolicit = 135,
        NeighborAdvert = 136,
        Redirect = 137,
    }
}

impl Icmpv6Message {
    /// An error message (types 1–127), which quotes as much of the offending packet as fits.
    #[inline]
    pub fn quotes_packet(self) -> bool {
        matches!(
            self,
            Icmpv6Message::DstUnreachable
                | Icmpv6Message::PktTooBig
                | Icmpv6Message::TimeExceeded
                | Icmpv6Message::ParamProblem
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip_and_unknowns_keep_their_value() {
        for n in 0..=255u8 {
            assert_eq!(u8::from(IpProtocol::from(n)), n);
            assert_eq!(u8::from(Icmpv4Message::from(n)), n);
            assert_eq!(u8::from(Icmpv6Message::from(n)), n);
        }
        for n in [
            0u16, 0x0800, 0x0806, 0x6558, 0x8100, 0x86DD, 0x88A8, 0x9100, 0xFFFF,
        ] {
            assert_eq!(u16::from(EtherType::from(n)), n);
        }
        for n in [0u32, 1, 12, 14, 101, 108, 113, 228, 229, 239, 276, 147] {
            assert_eq!(u32::from(LinkType::from(n)), n);
        }
        assert_eq!(IpProtocol::from(6), IpProtocol::Tcp);
        assert_eq!(IpProtocol::from(17), IpProtocol::Udp);
        assert_eq!(IpProtocol::from(253), IpProtocol::Unknown(253));
        assert_eq!(EtherType::from(0x86DD), EtherType::Ipv6);
        assert_eq!(LinkType::from(276), LinkType::LinuxSll2);
        assert_eq!(LinkType::from(147), LinkType::Unknown(147));
    }

    #[test]
    fn classes_of_numbers() {
        let v6_options: Vec<u8> = (0..=255u8)
            .filter(|n| IpProtocol::from(*n).is_ipv6_option_header())
            .collect();
        assert_eq!(v6_options, [0, 43, 60, 135, 139, 140]);
        let v4_errors: Vec<u8> = (0..=255u8)
            .filter(|n| Icmpv4Message::from(*n).quotes_packet())
            .collect();
        assert_eq!(v4_errors, [3, 4, 5, 11, 12]);
        let v6_errors: Vec<u8> = (0..=255u8)
            .filter(|n| Icmpv6Message::from(*n).quotes_packet())
            .collect();
        assert_eq!(v6_errors, [1, 2, 3, 4]);
        assert!([0x8100u16, 0x88A8, 0x9100]
            .into_iter()
            .all(|t| EtherType::from(t).is_vlan_tag()));
        assert!(!EtherType::Ipv4.is_vlan_tag());
    }
}

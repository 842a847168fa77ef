//! TCP (with the options the detectors need), UDP and ICMP.

use super::field::{self, get, Short};
use super::proto::IpProtocol;
use super::{
    DecodeError, Layer, SegmentOptions, TcpOptions, TcpSegment, Transport, UdpChecksum, UdpDatagram,
};
use std::net::IpAddr;
use tcp::option::{
    END, MSS, MSS_LEN, NOP, SACK_PERMITTED, SACK_PERMITTED_LEN, TIMESTAMPS, TIMESTAMPS_LEN, WSCALE,
    WSCALE_LEN,
};

/// TCP (RFC 9293).
pub mod tcp {
    pub mod field {
        use crate::wire::field::{Field, Rest};
        pub const SRC_PORT: Field = 0..2;
        pub const DST_PORT: Field = 2..4;
        pub const SEQ_NUM: Field = 4..8;
        pub const ACK_NUM: Field = 8..12;
        /// Data offset in 32-bit words (upper 4 bits).
        pub const DATA_OFF: usize = 12;
        /// The flag bits (`wire::tcp_flags`).
        pub const FLAGS: usize = 13;
        pub const WIN_SIZE: Field = 14..16;
        pub const CHECKSUM: Field = 16..18;
        pub const URGENT: Field = 18..20;
        pub const OPTIONS: Rest = 20..;
    }
    /// The fixed part; options may follow.
    pub const HEADER_LEN: usize = field::OPTIONS.start;

    /// Option kinds (and the lengths of the ones we keep), as on the wire.
    pub mod option {
        pub const END: u8 = 0;
        pub const NOP: u8 = 1;
        pub const MSS: u8 = 2;
        pub const MSS_LEN: u8 = 4;
        pub const WSCALE: u8 = 3;
        pub const WSCALE_LEN: u8 = 3;
        pub const SACK_PERMITTED: u8 = 4;
        pub const SACK_PERMITTED_LEN: u8 = 2;
        pub const TIMESTAMPS: u8 = 8;
        pub const TIMESTAMPS_LEN: u8 = 10;
    }
}

/// UDP (RFC 768).
pub mod udp {
    pub mod field {
        use crate::wire::field::{Field, Rest};
        pub const SRC_PORT: Field = 0..2;
        pub const DST_PORT: Field = 2..4;
        /// Header and payload; 0 for a jumbogram or a GSO super-datagram.
        pub const LENGTH: Field = 4..6;
        pub const CHECKSUM: Field = 6..8;
        pub const PAYLOAD: Rest = 8..;
    }
    pub const HEADER_LEN: usize = field::PAYLOAD.start;
}

/// ICMP and ICMPv6 share the first four bytes; the rest of the 8-byte header depends on the type,
/// and an error's quote follows it.
pub mod icmp {
    pub mod field {
        use crate::wire::field::{Field, Rest};
        pub const TYPE: usize = 0;
        pub const CODE: usize = 1;
        pub const CHECKSUM: Field = 2..4;
        pub const REST_OF_HEADER: Field = 4..8;
        pub const PAYLOAD: Rest = 8..;
    }
    pub const HEADER_LEN: usize = field::PAYLOAD.start;
}

/// A TCP header whose fixed 20 bytes are there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpHeader<'a>(&'a [u8; tcp::HEADER_LEN]);

impl<'a> TcpHeader<'a> {
    #[inline(always)]
    pub fn new_checked(b: &'a [u8], at: usize) -> Result<Self, Short> {
        field::bytes(b, at).map(TcpHeader)
    }
    #[inline(always)]
    pub fn src_port(&self) -> u16 {
        u16::from_be_bytes(get(self.0, tcp::field::SRC_PORT))
    }
    #[inline(always)]
    pub fn dst_port(&self) -> u16 {
        u16::from_be_bytes(get(self.0, tcp::field::DST_PORT))
    }
    #[inline(always)]
    pub fn seq_number(&self) -> u32 {
        u32::from_be_bytes(get(self.0, tcp::field::SEQ_NUM))
    }
    #[inline(always)]
    pub fn ack_number(&self) -> u32 {
        u32::from_be_bytes(get(self.0, tcp::field::ACK_NUM))
    }
    /// Header length in bytes (options included).
    #[inline(always)]
    pub fn header_len(&self) -> usize {
        ((self.0[tcp::field::DATA_OFF] >> 4) as usize) * 4
    }
    #[inline(always)]
    pub fn flags(&self) -> u8 {
        self.0[tcp::field::FLAGS]
    }
    #[inline(always)]
    pub fn window_len(&self) -> u16 {
        u16::from_be_bytes(get(self.0, tcp::field::WIN_SIZE))
    }
}

/// A UDP header whose 8 bytes are there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpHeader<'a>(&'a [u8; udp::HEADER_LEN]);

impl<'a> UdpHeader<'a> {
    #[inline(always)]
    pub fn new_checked(b: &'a [u8], at: usize) -> Result<Self, Short> {
        field::bytes(b, at).map(UdpHeader)
    }
    #[inline(always)]
    pub fn src_port(&self) -> u16 {
        u16::from_be_bytes(get(self.0, udp::field::SRC_PORT))
    }
    #[inline(always)]
    pub fn dst_port(&self) -> u16 {
        u16::from_be_bytes(get(self.0, udp::field::DST_PORT))
    }
    #[inline(always)]
    pub fn length(&self) -> u16 {
        u16::from_be_bytes(get(self.0, udp::field::LENGTH))
    }
}

/// A decoded transport and where its payload starts in the frame.
pub(super) struct Decoded<'a> {
    pub transport: Transport<'a>,
    /// The capture ended inside the transport header's options or payload.
    pub truncated: bool,
    pub payload_at: usize,
}

/// Decode the transport header at `at`. `ip_bytes` ends where the captured IP packet ends;
/// `payload_len` is the IP payload length the IP header declares; `fragmented` is set for the first
/// fragment of a fragmented datagram (whose transport length covers later fragments too).
#[inline(always)]
pub(super) fn decode(
    ip_bytes: &[u8],
    at: usize,
    proto: IpProtocol,
    payload_len: u32,
    fragmented: bool,
) -> Result<Decoded<'_>, DecodeError> {
    match proto {
        IpProtocol::Tcp => tcp(ip_bytes, at, payload_len),
        IpProtocol::Udp => udp(ip_bytes, at, payload_len, fragmented),
        IpProtocol::Icmp | IpProtocol::Icmpv6 => {
            Ok(match field::bytes::<2>(ip_bytes, at + icmp::field::TYPE) {
                Ok(h) => Decoded {
                    transport: Transport::Icmp {
                        v6: proto == IpProtocol::Icmpv6,
                        icmp_type: h[icmp::field::TYPE],
                        code: h[icmp::field::CODE],
                    },
                    truncated: false,
                    // The rest of the 8-byte ICMP header comes first; an error's quote follows it.
                    payload_at: at + icmp::HEADER_LEN,
                },
                Err(_) => Decoded {
                    transport: Transport::Other,
                    truncated: true,
                    payload_at: at,
                },
            })
        }
        _ => Ok(Decoded {
            transport: Transport::Other,
            truncated: false,
            payload_at: at,
        }),
    }
}

#[inline(always)]
fn tcp(ip_bytes: &[u8], at: usize, ip_payload_len: u32) -> Result<Decoded<'_>, DecodeError> {
    if ip_payload_len < tcp::HEADER_LEN as u32 {
        return Err(DecodeError::Malformed {
            layer: Layer::Tcp,
            offset: at,
            what: "IP payload shorter than a TCP header",
        });
    }
    let Ok(h) = TcpHeader::new_checked(ip_bytes, at) else {
        return Err(DecodeError::Truncated {
            layer: Layer::Tcp,
            offset: at,
        });
    };
    let header_len = h.header_len();
    if header_len < tcp::HEADER_LEN {
        return Err(DecodeError::Malformed {
            layer: Layer::Tcp,
            offset: at + tcp::field::DATA_OFF,
            what: "TCP data offset below 5",
        });
    }
    if header_len as u32 > ip_payload_len {
        return Err(DecodeError::Malformed {
            layer: Layer::Tcp,
            offset: at + tcp::field::DATA_OFF,
            what: "TCP header longer than the IP payload",
        });
    }
    let (options, payload_len, payload, truncated) =
        tcp_body(ip_bytes, at, header_len, ip_payload_len);
    Ok(Decoded {
        transport: Transport::Tcp(TcpSegment {
            src_port: h.src_port(),
            dst_port: h.dst_port(),
            seq: h.seq_number(),
            ack: h.ack_number(),
            flags: h.flags(),
            window: h.window_len(),
            options,
            payload_len,
            payload,
        }),
        truncated,
        payload_at: at + header_len,
    })
}

/// What follows a TCP header's fixed 20 bytes, for a header of `header_len` bytes at `at` in
/// `ip_bytes` (the IP packet as captured) and an IP payload of `ip_payload_len` bytes (header
/// lengths already checked): the options, the payload's length as the IP header declares it, the
/// payload bytes captured, and whether the header or payload was cut. One rule for the layered
/// decoder and `wire::fast`.
#[inline(always)]
pub(super) fn tcp_body(
    ip_bytes: &[u8],
    at: usize,
    header_len: usize,
    ip_payload_len: u32,
) -> (SegmentOptions<'_>, u32, &[u8], bool) {
    let header_end = at + header_len;
    let options = SegmentOptions::Raw(
        ip_bytes
            .get(at + tcp::HEADER_LEN..header_end.min(ip_bytes.len()))
            .unwrap_or(&[]),
    );
    let payload_len = ip_payload_len - header_len as u32;
    let payload_end = header_end
        .saturating_add(payload_len as usize)
        .min(ip_bytes.len());
    let payload = ip_bytes.get(header_end..payload_end).unwrap_or(&[]);
    let truncated = ip_bytes.len() < header_end || payload.len() < payload_len as usize;
    (options, payload_len, payload, truncated)
}

/// Parse the TCP options we keep, with a fast path for the layout Linux puts on every established
/// segment (NOP, NOP, Timestamps): the other options we keep only ever come on SYNs.
#[inline(always)]
pub(super) fn parse_options(o: &[u8]) -> TcpOptions {
    match o {
        [NOP, NOP, TIMESTAMPS, TIMESTAMPS_LEN, a, b, c, d, e, f, g, h, ..] => TcpOptions {
            timestamp: Some((
                u32::from_be_bytes([*a, *b, *c, *d]),
                u32::from_be_bytes([*e, *f, *g, *h]),
            )),
            ..TcpOptions::default()
        },
        _ => tcp_options(o),
    }
}

/// Parse the TCP options we keep; stop quietly at the first malformed option (as the kernel does).
#[inline]
fn tcp_options(mut o: &[u8]) -> TcpOptions {
    let mut opts = TcpOptions::default();
    // Fast path: Linux puts NOP, NOP, Timestamps on every segment after the handshake.
    if let [NOP, NOP, TIMESTAMPS, TIMESTAMPS_LEN, a, b, c, d, e, f, g, h] = *o {
        opts.timestamp = Some((
            u32::from_be_bytes([a, b, c, d]),
            u32::from_be_bytes([e, f, g, h]),
        ));
        return opts;
    }
    while let Some(&kind) = o.first() {
        match kind {
            END => break,
            NOP => {
                o = &o[1..];
                continue;
            }
            _ => {}
        }
        let Some(&len) = o.get(1) else { break };
        if len < 2 || len as usize > o.len() {
            break;
        }
        let v = &o[2..len as usize];
        match (kind, len, v) {
            (MSS, MSS_LEN, &[a, b]) => opts.mss = Some(u16::from_be_bytes([a, b])),
            (WSCALE, WSCALE_LEN, &[shift]) => opts.wscale = Some(shift),
            (SACK_PERMITTED, SACK_PERMITTED_LEN, _) => opts.sack_permitted = true,
            (TIMESTAMPS, TIMESTAMPS_LEN, &[a, b, c, d, e, f, g, h]) => {
                opts.timestamp = Some((
                    u32::from_be_bytes([a, b, c, d]),
                    u32::from_be_bytes([e, f, g, h]),
                ))
            }
            _ => {}
        }
        o = &o[len as usize..];
    }
    opts
}

#[inline(always)]
fn udp(
    ip_bytes: &[u8],
    at: usize,
    ip_payload_len: u32,
    fragmented: bool,
) -> Result<Decoded<'_>, DecodeError> {
    const HEADER_LEN: u32 = udp::HEADER_LEN as u32;
    if ip_payload_len < HEADER_LEN {
        return Err(DecodeError::Malformed {
            layer: Layer::Udp,
            offset: at,
            what: "IP payload shorter than a UDP header",
        });
    }
    let Ok(h) = UdpHeader::new_checked(ip_bytes, at) else {
        return Err(DecodeError::Truncated {
            layer: Layer::Udp,
            offset: at,
        });
    };
    let udp_len = h.length() as u32;
    let payload_len = if udp_len == 0 {
        // Jumbogram or GSO super-datagram: the IP length is the only length.
        ip_payload_len - HEADER_LEN
    } else if udp_len < HEADER_LEN {
        return Err(DecodeError::Malformed {
            layer: Layer::Udp,
            offset: at + udp::field::LENGTH.start,
            what: "UDP length below 8",
        });
    } else if fragmented {
        udp_len - HEADER_LEN
    } else {
        // A UDP length beyond the IP payload is a lie; the IP length bounds what was sent.
        udp_len.min(ip_payload_len) - HEADER_LEN
    };
    let start = at + udp::HEADER_LEN;
    let end = start
        .saturating_add(payload_len as usize)
        .min(ip_bytes.len());
    let payload = ip_bytes.get(start..end).unwrap_or(&[]);
    // A first fragment carries only part of the datagram by design; that is not a capture cut.
    let truncated = !fragmented && payload.len() < payload_len as usize;
    Ok(Decoded {
        transport: Transport::Udp(UdpDatagram {
            src_port: h.src_port(),
            dst_port: h.dst_port(),
            payload_len,
            payload,
        }),
        truncated,
        payload_at: start,
    })
}

/// The one's-complement sum of `bytes` as big-endian 16-bit words (an odd last byte padded with 0),
/// added to `sum`; fold it with [`fold`].
fn sum_words(mut sum: u64, bytes: &[u8]) -> u64 {
    // Eight bytes at a time: four 16-bit words summed in one add (the carries land above bit 63 only
    // after 2^32 additions, far beyond any datagram).
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        sum += (w >> 48) + ((w >> 32) & 0xFFFF) + ((w >> 16) & 0xFFFF) + (w & 0xFFFF);
    }
    let mut pairs = chunks.remainder().chunks_exact(2);
    for p in &mut pairs {
        sum += u16::from_be_bytes([p[0], p[1]]) as u64;
    }
    if let [last] = pairs.remainder() {
        sum += (*last as u64) << 8;
    }
    sum
}

/// A one's-complement sum folded to 16 bits (not complemented).
fn fold(mut sum: u64) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    sum as u16
}

/// The pseudo-header sum (not folded) of a `len`-byte transport segment between `src` and `dst`.
fn pseudo_sum(src: IpAddr, dst: IpAddr, proto: IpProtocol, len: usize) -> Option<u64> {
    let mut sum = u8::from(proto) as u64 + (len as u64 >> 16) + (len as u64 & 0xFFFF);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            sum = sum_words(sum, &s.octets());
            sum = sum_words(sum, &d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            sum = sum_words(sum, &s.octets());
            sum = sum_words(sum, &d.octets());
        }
        _ => return None,
    }
    Some(sum)
}

/// Whether the UDP datagram at `udp_at` (between `outer`) sums right once the inner TCP/UDP segment at
/// `l4_at` (`l4_len` bytes between `inner`), whose checksum field holds only its pseudo-header sum, has
/// its checksum filled in: local checksum offload (the outer checksum computed for the packet as the
/// NIC will send it).
pub(super) fn right_once_inner_completed(
    ip_bytes: &[u8],
    udp_at: usize,
    outer: (IpAddr, IpAddr),
    l4_at: usize,
    l4_len: usize,
    inner: (IpAddr, IpAddr),
    proto: IpProtocol,
) -> bool {
    let field_at = match proto {
        IpProtocol::Tcp => tcp::field::CHECKSUM.start,
        IpProtocol::Udp => udp::field::CHECKSUM.start,
        _ => return false,
    };
    let (Ok(h), Some(segment)) = (
        field::bytes::<{ udp::HEADER_LEN }>(ip_bytes, udp_at),
        l4_at
            .checked_add(l4_len)
            .and_then(|end| ip_bytes.get(l4_at..end)),
    ) else {
        return false;
    };
    let udp_len = u16::from_be_bytes(get(h, udp::field::LENGTH)) as usize;
    let Some(datagram) = udp_at
        .checked_add(udp_len)
        .and_then(|end| ip_bytes.get(udp_at..end))
    else {
        return false;
    };
    let (Some(inner_pseudo), Some(outer_pseudo)) = (
        pseudo_sum(inner.0, inner.1, proto, l4_len),
        pseudo_sum(outer.0, outer.1, IpProtocol::Udp, udp_len),
    ) else {
        return false;
    };
    let Some(&[a, b]) = segment.get(field_at..field_at + 2) else {
        return false;
    };
    let partial = u16::from_be_bytes([a, b]);
    if partial != fold(inner_pseudo) {
        return false;
    }
    // The inner checksum as the NIC will write it, then the outer sum with it in place of the partial.
    let complete = !fold(sum_words(inner_pseudo, segment) + (!partial) as u64);
    let complete = if complete == 0 && proto == IpProtocol::Udp {
        0xFFFF
    } else {
        complete
    };
    let outer_total = sum_words(outer_pseudo, datagram) + complete as u64 + (!partial) as u64;
    fold(outer_total) == 0xFFFF
}

/// Verifies the UDP checksum of the datagram whose header starts at `at` in `ip_bytes`, between `src`
/// and `dst` (`payload_len` as decoded). Costs one pass over the datagram: called for tunnel packets
/// only.
pub(super) fn udp_checksum(
    ip_bytes: &[u8],
    at: usize,
    src: IpAddr,
    dst: IpAddr,
    payload_len: u32,
) -> UdpChecksum {
    let Ok(h) = field::bytes::<{ udp::HEADER_LEN }>(ip_bytes, at) else {
        return UdpChecksum::Unverifiable;
    };
    let found = u16::from_be_bytes(get(h, udp::field::CHECKSUM));
    if found == 0 {
        return UdpChecksum::Absent;
    }
    let len = payload_len as usize + udp::HEADER_LEN;
    // A length field that disagrees with the datagram (0 for a GSO super-datagram seen before
    // segmentation, or a length beyond the IP packet) leaves no one sum to check.
    if u16::from_be_bytes(get(h, udp::field::LENGTH)) as usize != len {
        return UdpChecksum::Unverifiable;
    }
    let Some(datagram) = at.checked_add(len).and_then(|end| ip_bytes.get(at..end)) else {
        return UdpChecksum::Unverifiable;
    };
    let mut pseudo: u64 = u8::from(IpProtocol::Udp) as u64;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            pseudo = sum_words(pseudo, &s.octets());
            pseudo = sum_words(pseudo, &d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            pseudo = sum_words(pseudo, &s.octets());
            pseudo = sum_words(pseudo, &d.octets());
        }
        _ => return UdpChecksum::Unverifiable,
    }
    pseudo += (len as u64 >> 16) + (len as u64 & 0xFFFF);
    // Linux leaves `~csum_tcpudp_magic(...)`, the folded pseudo-header sum, for the NIC to complete.
    if found == fold(pseudo) {
        return UdpChecksum::OffloadPending;
    }
    let total = fold(sum_words(pseudo, datagram));
    if total == 0xFFFF {
        return UdpChecksum::Valid;
    }
    // The sum without the field, complemented, is what the field should hold (0 is sent as 0xFFFF).
    let without = fold(sum_words(pseudo, datagram) + (!found) as u64);
    let expected = match !without {
        0 => 0xFFFF,
        c => c,
    };
    UdpChecksum::Invalid { found, expected }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_views_check_once_then_read_every_field() {
        let mut b = [0u8; tcp::HEADER_LEN];
        for (i, x) in b.iter_mut().enumerate() {
            *x = i as u8 + 1;
        }
        let h = TcpHeader::new_checked(&b, 0).unwrap();
        assert_eq!((h.src_port(), h.dst_port()), (0x0102, 0x0304));
        assert_eq!((h.seq_number(), h.ack_number()), (0x0506_0708, 0x090A_0B0C));
        assert_eq!((h.header_len(), h.flags(), h.window_len()), (0, 14, 0x0F10));
        assert_eq!(
            TcpHeader::new_checked(&b, 1),
            Err(Short {
                end: tcp::HEADER_LEN + 1,
                len: tcp::HEADER_LEN
            })
        );
        let u = UdpHeader::new_checked(&b, 12).unwrap();
        assert_eq!(
            (u.src_port(), u.dst_port(), u.length()),
            (0x0D0E, 0x0F10, 0x1112)
        );
        assert!(UdpHeader::new_checked(&b, 13).is_err());
        assert!(UdpHeader::new_checked(&b[..7], 0).is_err());
        // Every named field lies inside its header's fixed part.
        for f in [
            tcp::field::SRC_PORT,
            tcp::field::DST_PORT,
            tcp::field::SEQ_NUM,
            tcp::field::ACK_NUM,
            tcp::field::WIN_SIZE,
            tcp::field::CHECKSUM,
            tcp::field::URGENT,
        ] {
            assert!(f.end <= tcp::HEADER_LEN, "{f:?}");
        }
        for f in [
            udp::field::SRC_PORT,
            udp::field::DST_PORT,
            udp::field::LENGTH,
            udp::field::CHECKSUM,
        ] {
            assert!(f.end <= udp::HEADER_LEN, "{f:?}");
        }
        const { assert!(icmp::field::REST_OF_HEADER.end <= icmp::HEADER_LEN) };
    }

    #[test]
    fn options_parse_all_kinds_we_keep() {
        let o = [
            2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 1, 3, 3, 7,
        ];
        let opts = tcp_options(&o);
        assert_eq!(opts.mss, Some(1460));
        assert!(opts.sack_permitted);
        assert_eq!(opts.timestamp, Some((1, 2)));
        assert_eq!(opts.wscale, Some(7));
    }

    #[test]
    fn the_nop_nop_timestamp_fast_path_agrees_with_the_full_parse() {
        let cases: [&[u8]; 5] = [
            &[1, 1, 8, 10, 0, 0, 0, 7, 0, 0, 0, 9],
            &[
                1, 1, 8, 10, 0, 0, 0, 7, 0, 0, 0, 9, 1, 1, 5, 10, 0, 0, 0, 1, 0, 0, 0, 2,
            ],
            &[1, 1, 8, 10, 0, 0, 0, 7, 0, 0],
            &[2, 4, 5, 180, 1, 1, 8, 10, 0, 0, 0, 7, 0, 0, 0, 9],
            &[],
        ];
        for o in cases {
            assert_eq!(parse_options(o), tcp_options(o), "{o:?}");
        }
        assert_eq!(parse_options(cases[0]).timestamp, Some((7, 9)));
    }

    #[test]
    fn options_stop_at_bad_length_and_survive_cuts() {
        assert_eq!(tcp_options(&[2, 0, 5, 180]), TcpOptions::default());
        assert_eq!(tcp_options(&[2, 9, 5, 180]), TcpOptions::default());
        let o = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
        for n in 0..o.len() {
            assert_eq!(tcp_options(&o[..n]).timestamp, None);
        }
        assert_eq!(tcp_options(&o).timestamp, Some((1, 2)));
    }

    #[test]
    fn udp_length_beyond_ip_is_clamped() {
        let d = [0, 53, 0x30, 0x39, 0x01, 0x00, 0, 0, 1, 2, 3, 4];
        let t = udp(&d, 0, 12, false).unwrap();
        let Transport::Udp(u) = t.transport else {
            panic!()
        };
        assert_eq!(
            (u.payload_len, u.payload, t.truncated),
            (4, &[1u8, 2, 3, 4][..], false)
        );
    }

    #[test]
    fn udp_short_length_is_malformed() {
        let d = [0, 53, 0, 53, 0, 4, 0, 0];
        assert!(matches!(
            udp(&d, 0, 8, false),
            Err(DecodeError::Malformed {
                layer: Layer::Udp,
                offset: 4,
                ..
            })
        ));
    }

    #[test]
    fn tcp_header_beyond_ip_payload_is_malformed() {
        let mut d = [0u8; 24];
        d[12] = 6 << 4;
        assert!(matches!(
            tcp(&d, 0, 20),
            Err(DecodeError::Malformed {
                layer: Layer::Tcp,
                ..
            })
        ));
        assert!(matches!(
            tcp(&d, 0, 19),
            Err(DecodeError::Malformed {
                layer: Layer::Tcp,
                ..
            })
        ));
        d[12] = 4 << 4;
        assert!(matches!(
            tcp(&d, 0, 24),
            Err(DecodeError::Malformed {
                layer: Layer::Tcp,
                offset: 12,
                ..
            })
        ));
    }
}

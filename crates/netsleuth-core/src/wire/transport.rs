//! TCP (with the options the detectors need), UDP and ICMP.

use super::{DecodeError, Layer, TcpOptions, TcpSegment, Transport, UdpDatagram};

const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = super::ip::PROTO_UDP;
const PROTO_ICMPV6: u8 = 58;

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
    proto: u8,
    payload_len: u32,
    fragmented: bool,
) -> Result<Decoded<'_>, DecodeError> {
    match proto {
        PROTO_TCP => tcp(ip_bytes, at, payload_len),
        PROTO_UDP => udp(ip_bytes, at, payload_len, fragmented),
        PROTO_ICMP | PROTO_ICMPV6 => Ok(match ip_bytes.get(at..at + 2) {
            Some(h) => Decoded {
                transport: Transport::Icmp {
                    v6: proto == PROTO_ICMPV6,
                    icmp_type: h[0],
                    code: h[1],
                },
                truncated: false,
                // The rest of the 8-byte ICMP header comes first; an error's quote follows it.
                payload_at: at + 8,
            },
            None => Decoded {
                transport: Transport::Other,
                truncated: true,
                payload_at: at,
            },
        }),
        _ => Ok(Decoded {
            transport: Transport::Other,
            truncated: false,
            payload_at: at,
        }),
    }
}

#[inline(always)]
fn tcp(ip_bytes: &[u8], at: usize, ip_payload_len: u32) -> Result<Decoded<'_>, DecodeError> {
    if ip_payload_len < 20 {
        return Err(DecodeError::Malformed {
            layer: Layer::Tcp,
            offset: at,
            what: "IP payload shorter than a TCP header",
        });
    }
    let Some(h) = ip_bytes.get(at..at + 20) else {
        return Err(DecodeError::Truncated {
            layer: Layer::Tcp,
            offset: at,
        });
    };
    let header_len = ((h[12] >> 4) as usize) * 4;
    if header_len < 20 {
        return Err(DecodeError::Malformed {
            layer: Layer::Tcp,
            offset: at + 12,
            what: "TCP data offset below 5",
        });
    }
    if header_len as u32 > ip_payload_len {
        return Err(DecodeError::Malformed {
            layer: Layer::Tcp,
            offset: at + 12,
            what: "TCP header longer than the IP payload",
        });
    }
    let header_end = at + header_len;
    let options_captured = ip_bytes
        .get(at + 20..header_end.min(ip_bytes.len()))
        .unwrap_or(&[]);
    let options = parse_options(options_captured);
    let payload_len = ip_payload_len - header_len as u32;
    let payload_end = header_end
        .saturating_add(payload_len as usize)
        .min(ip_bytes.len());
    let payload = ip_bytes.get(header_end..payload_end).unwrap_or(&[]);
    let truncated = ip_bytes.len() < header_end || payload.len() < payload_len as usize;
    Ok(Decoded {
        transport: Transport::Tcp(TcpSegment {
            src_port: u16::from_be_bytes([h[0], h[1]]),
            dst_port: u16::from_be_bytes([h[2], h[3]]),
            seq: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
            ack: u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
            flags: h[13],
            window: u16::from_be_bytes([h[14], h[15]]),
            options,
            payload_len,
            payload,
        }),
        truncated,
        payload_at: header_end,
    })
}

/// Parse the TCP options we keep, with a fast path for the layout Linux puts on every established
/// segment (NOP, NOP, Timestamps): the other options we keep only ever come on SYNs, and this runs once
/// per packet.
fn parse_options(o: &[u8]) -> TcpOptions {
    match o {
        [1, 1, 8, 10, a, b, c, d, e, f, g, h, ..] => TcpOptions {
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
    if let [1, 1, 8, 10, a, b, c, d, e, f, g, h] = *o {
        opts.timestamp = Some((
            u32::from_be_bytes([a, b, c, d]),
            u32::from_be_bytes([e, f, g, h]),
        ));
        return opts;
    }
    while let Some(&kind) = o.first() {
        match kind {
            0 => break,
            1 => {
                o = &o[1..];
                continue;
            }
            _ => {}
        }
        let Some(&len) = o.get(1) else { break };
        let len = len as usize;
        if len < 2 || len > o.len() {
            break;
        }
        let v = &o[2..len];
        match (kind, len) {
            (2, 4) => opts.mss = Some(u16::from_be_bytes([v[0], v[1]])),
            (3, 3) => opts.wscale = Some(v[0]),
            (4, 2) => opts.sack_permitted = true,
            (8, 10) => {
                opts.timestamp = Some((
                    u32::from_be_bytes([v[0], v[1], v[2], v[3]]),
                    u32::from_be_bytes([v[4], v[5], v[6], v[7]]),
                ))
            }
            _ => {}
        }
        o = &o[len..];
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
    if ip_payload_len < 8 {
        return Err(DecodeError::Malformed {
            layer: Layer::Udp,
            offset: at,
            what: "IP payload shorter than a UDP header",
        });
    }
    let Some(h) = ip_bytes.get(at..at + 8) else {
        return Err(DecodeError::Truncated {
            layer: Layer::Udp,
            offset: at,
        });
    };
    let udp_len = u16::from_be_bytes([h[4], h[5]]) as u32;
    let payload_len = if udp_len == 0 {
        // Jumbogram or GSO super-datagram: the IP length is the only length.
        ip_payload_len - 8
    } else if udp_len < 8 {
        return Err(DecodeError::Malformed {
            layer: Layer::Udp,
            offset: at + 4,
            what: "UDP length below 8",
        });
    } else if fragmented {
        udp_len - 8
    } else {
        // A UDP length beyond the IP payload is a lie; the IP length bounds what was sent.
        udp_len.min(ip_payload_len) - 8
    };
    let start = at + 8;
    let end = start
        .saturating_add(payload_len as usize)
        .min(ip_bytes.len());
    let payload = ip_bytes.get(start..end).unwrap_or(&[]);
    // A first fragment carries only part of the datagram by design; that is not a capture cut.
    let truncated = !fragmented && payload.len() < payload_len as usize;
    Ok(Decoded {
        transport: Transport::Udp(UdpDatagram {
            src_port: u16::from_be_bytes([h[0], h[1]]),
            dst_port: u16::from_be_bytes([h[2], h[3]]),
            payload_len,
            payload,
        }),
        truncated,
        payload_at: start,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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

//! First 4 bytes (little-endian u32, modulo the table) pick a link type netsleuth decodes; the rest is one
//! frame of that link type → `wire::decode`, `wire::icmp_quote` for ICMP errors, and `wire::decode_arp`
//! for frames that are not IP.
//!
//! Shared by the fuzz target (fuzz/fuzz_targets/packet_decoder.rs) and the stable replay tests, which include
//! this file with `#[path]`: a reproducer replays through exactly the code that found it.

use netsleuth_core::wire::{self, Transport};

/// Every link type `wire::link` handles (NFLOG 239, raw IP 12/14 included), and one it does not.
const LINKTYPES: [u32; 12] = [
    0,   // NULL
    1,   // Ethernet
    12,  // raw IP (BSD)
    14,  // raw IP (OpenBSD)
    101, // raw IP
    108, // LOOP
    113, // Linux SLL
    228, // raw IPv4
    229, // raw IPv6
    239, // NFLOG
    276, // Linux SLL2
    147, // a user link type netsleuth does not decode
];

/// One fuzz input: panics on any violated invariant, returns otherwise.
pub fn run(data: &[u8]) {
    if data.len() < 4 {
        return;
    }
    let sel = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
    let lt = LINKTYPES[(sel % LINKTYPES.len() as u32) as usize];
    let frame = &data[4..];
    match wire::decode(lt, frame) {
        Ok(p) => {
            match p.transport {
                Transport::Tcp(t) => assert!(t.payload.len() <= frame.len()),
                Transport::Udp(u) => assert!(u.payload.len() <= frame.len()),
                Transport::Icmp { .. } => {
                    if let Some(q) = wire::icmp_quote(lt, frame) {
                        let _ = format!("{q:?}");
                    }
                }
                // `decode` never returns ARP: only `decode_arp` does.
                Transport::Arp(_) => panic!("wire::decode returned an ARP message"),
                Transport::Other => {}
            }
            let _ = format!("{p:?}");
        }
        Err(e) => {
            let _ = format!("{e:?}");
        }
    }
    // decode_arp must be safe on any frame, and give ARP only for what `decode` found not IP.
    if let Some(a) = wire::decode_arp(lt, frame) {
        assert!(matches!(a.transport, Transport::Arp(_)));
        assert!(matches!(
            wire::decode(lt, frame),
            Err(wire::DecodeError::NotIp { ethertype: 0x0806 })
        ));
    }
    // icmp_quote must also be safe on any frame, not only on ICMP errors.
    let _ = wire::icmp_quote(lt, frame);
}

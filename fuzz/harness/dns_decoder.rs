//! DNS messages and DNS over TCP.
//!
//! Byte 0, bit 0 clear: the rest is one DNS message → `wire::dns::parse`, then everything the message
//! exposes (header, question, every answer and its address, names read at answer owners and in rdata,
//! counts, NODATA) and `read_name` at an offset taken from byte 0.
//!
//! Bit 0 set: the rest is a list of TCP segments for `flow::dns_tcp::DnsTcpReassembler` (bit 1 set: a
//! cap of 2 streams, so eviction runs), each `[ctl][seq delta: i16 LE][len: u16 LE][payload]`:
//! ctl bit 0 direction, bit 1 SYN, bit 2 FIN, bit 3 RST, bit 4 a second connection, bits 5-7 bytes the
//! snap length cut (`sent_len = len + 64 * n`). The sequence number is the direction's next one plus the
//! delta. Every message the reassembler completes is parsed and walked as above.
//!
//! Shared by the fuzz target (fuzz/fuzz_targets/dns_decoder.rs) and the stable replay tests, which include
//! this file with `#[path]`: a reproducer replays through exactly the code that found it.

use netsleuth_core::flow::dns_tcp::{DnsTcpReassembler, DEFAULT_MAX_STREAMS};
use netsleuth_core::flow::Endpoint;
use netsleuth_core::wire::dns::{self, rtype, DnsHeader};
use netsleuth_core::wire::tcp_flags;
use std::net::{IpAddr, Ipv4Addr};

fn walk(msg: &[u8], name_at: usize) {
    let h = DnsHeader::parse(msg);
    assert_eq!(h.is_some(), msg.len() >= 12);
    let m = match dns::parse(msg) {
        Ok(m) => m,
        Err(e) => {
            assert!(msg.len() < 12);
            let _ = e.to_string();
            return;
        }
    };
    assert_eq!(Some(m.header), h);
    assert_eq!(m.bytes(), msg);
    if let Some(e) = &m.error {
        let _ = e.to_string();
    }
    if let Some(q) = &m.question {
        assert!(q.name.len() <= 4 * 255, "name of {} chars", q.name.len());
    }
    let counts = m.answer_counts();
    let mut seen = 0u32;
    for a in m.answers() {
        seen += 1;
        assert!(seen <= m.header.ancount as u32);
        match a {
            Ok(a) => {
                let _ = a.addr();
                let mut name = String::new();
                let _ = dns::read_name(msg, a.name_at, &mut name);
                if matches!(a.rtype, rtype::CNAME | rtype::NS | rtype::PTR) {
                    // NS, CNAME, PTR: the rdata is a name, possibly compressed against the message.
                    let at = a.rdata.as_ptr() as usize - msg.as_ptr() as usize;
                    let mut target = String::new();
                    let _ = dns::read_name(msg, at, &mut target);
                }
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
    let total = counts.a as u32 + counts.aaaa as u32 + counts.cname as u32 + counts.other as u32;
    assert!(total <= seen);
    let _ = m.is_nodata();
    let mut name = String::new();
    let _ = dns::read_name(msg, name_at, &mut name);
}

/// One fuzz input: panics on any violated invariant, returns otherwise.
pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        walk(rest, (mode >> 1) as usize);
        return;
    }
    let cap = if mode & 2 != 0 {
        2
    } else {
        DEFAULT_MAX_STREAMS
    };
    let mut re = DnsTcpReassembler::with_max_streams(cap);
    let client = |conn: u16| Endpoint {
        ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        port: 40000 + conn,
    };
    let server = Endpoint {
        ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 53)),
        port: 53,
    };
    // Next sequence number per (connection, direction).
    let mut next = [1000u32, 5000, 9000, 13000];
    let mut b = rest;
    let mut frame = 0u64;
    while b.len() >= 5 {
        let ctl = b[0];
        let delta = i16::from_le_bytes([b[1], b[2]]) as i32 as u32;
        let len = (u16::from_le_bytes([b[3], b[4]]) as usize).min(b.len() - 5);
        let payload = &b[5..5 + len];
        b = &b[5 + len..];
        frame += 1;
        let dir = (ctl & 1) as usize;
        let conn = ((ctl >> 4) & 1) as u16;
        let k = conn as usize * 2 + dir;
        let mut flags = tcp_flags::ACK;
        if ctl & 2 != 0 {
            flags |= tcp_flags::SYN;
        }
        if ctl & 4 != 0 {
            flags |= tcp_flags::FIN;
        }
        if ctl & 8 != 0 {
            flags |= tcp_flags::RST;
        }
        let sent_len = len as u32 + 64 * (ctl >> 5) as u32;
        let seq = next[k].wrapping_add(delta);
        next[k] = seq
            .wrapping_add(sent_len)
            .wrapping_add((flags & tcp_flags::SYN != 0) as u32)
            .wrapping_add((flags & tcp_flags::FIN != 0) as u32);
        let (src, dst) = if dir == 0 {
            (client(conn), server)
        } else {
            (server, client(conn))
        };
        for m in re.push_raw(src, dst, seq, flags, payload, sent_len, frame) {
            assert!(m.bytes.len() <= 65535);
            assert!(m.first_frame <= m.frame);
            walk(&m.bytes, 12);
        }
        assert!(re.open_streams() <= cap);
        assert!(re.buffered_bytes() <= re.open_streams() * (2 + 65535));
    }
    let _ = re.stats();
}

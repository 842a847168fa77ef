//! The flow engine: packets become connections and DNS transactions.
//!
//! A TCP connection is recognised across its NAT legs: the same connection seen under several
//! address/port tuples (before/after DNAT, before/after SNAT, in captures from different hosts) is one
//! `Conn` with several `Leg`s, because NAT rewrites addresses and ports but not sequence numbers. A
//! `tcpdump -i any` copy of one packet on several interfaces is one packet seen at several points, not a
//! retransmission.
//!
//! Invariant: memory is proportional to the connections and DNS queries alive at a time (closed ones are
//! finalised and handed to the detectors), never to the packets.

pub mod dns;
pub mod dns_tcp;
pub mod tcp;

use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;

/// Index of an input capture in the order given on the command line.
pub type InputId = u16;

/// An IP address and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub port: u16,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.ip {
            IpAddr::V4(a) => write!(f, "{}:{}", a, self.port),
            IpAddr::V6(a) => write!(f, "[{}]:{}", a, self.port),
        }
    }
}

/// A compact reference to one observed packet, kept as evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PktRef {
    pub input: InputId,
    pub frame: u64,
    pub ts_ns: i64,
    pub src: Endpoint,
    pub dst: Endpoint,
    /// TCP flags (0 for UDP).
    pub flags: u8,
    /// Transport payload length.
    pub len: u32,
    pub seq: u32,
    pub ack: u32,
    pub ifindex: Option<u32>,
}

impl PktRef {
    /// tcpdump-like one-word description of a TCP packet.
    pub fn tcp_what(&self) -> String {
        use crate::wire::tcp_flags::*;
        let f = self.flags;
        let mut s = String::new();
        for (bit, name) in [
            (SYN, "SYN"),
            (FIN, "FIN"),
            (RST, "RST"),
            (PSH, "PSH"),
            (ACK, "ACK"),
        ] {
            if f & bit != 0 {
                if !s.is_empty() {
                    s.push('|');
                }
                s.push_str(name);
            }
        }
        if s.is_empty() {
            s.push_str("none");
        }
        format!(
            "TCP {} seq={} ack={} len={}",
            s, self.seq, self.ack, self.len
        )
    }
}

/// FxHash (rustc's hasher): the flow tables are hashed once per packet and keyed by data an attacker
/// controls only through a capture the user chose to analyse, so speed beats DoS resistance here.
#[derive(Default, Clone, Copy)]
pub struct FxHasher {
    hash: u64,
}

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(FX_SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes([
                c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7],
            ]));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(buf));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64)
    }
    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.add(i as u64)
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(i as u64)
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i)
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64)
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

pub type FxBuild = BuildHasherDefault<FxHasher>;
pub type FxHashMap<K, V> = std::collections::HashMap<K, V, FxBuild>;

/// Signed distance from `b` to `a` in 32-bit sequence space.
#[inline]
pub fn seq_diff(a: u32, b: u32) -> i64 {
    a.wrapping_sub(b) as i32 as i64
}

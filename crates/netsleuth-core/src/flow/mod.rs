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

mod deadlines;
pub mod dns;
pub mod dns_tcp;
pub mod tcp;

use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;

/// Index of an input capture in the order given on the command line.
pub type InputId = u16;

/// An IP address and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub port: u16,
}

impl std::hash::Hash for Endpoint {
    /// One well-mixed word: endpoints key the flow engine's and the detectors' tables, hashed for
    /// every handshake and every finalised connection; the derived `Hash` fed the family, a length
    /// and each address byte to the hasher one at a time.
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        let (ip, family) = ip_bits(self.ip);
        state.write_u64(mix3(ip, 0, family | self.port as u64));
    }
}

/// An address as an integer, and its family as bit 32 of a word (0 for IPv4, set for IPv6), so
/// that keys built of addresses hash and compare as plain integers.
#[inline(always)]
pub(crate) fn ip_bits(ip: IpAddr) -> (u128, u64) {
    match ip {
        IpAddr::V4(a) => (u32::from(a) as u128, 0),
        IpAddr::V6(a) => (u128::from(a), 1 << 32),
    }
}

/// Two addresses and a word of ports and flags mixed into one hash word. FxHash keeps the low bits
/// of its last input almost as they are and the tables index buckets by the low bits, so a key
/// hashed raw (many connections to one server port share the last word) would crowd a few buckets.
#[inline(always)]
pub(crate) fn mix3(a: u128, b: u128, c: u64) -> u64 {
    let fold = |x: u128| (x as u64) ^ ((x >> 64) as u64).rotate_left(29);
    let mut h = fold(a).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ fold(b).rotate_left(23).wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
        ^ c.wrapping_mul(0x1656_67B1_9E37_79F9);
    h ^= h >> 29;
    h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h ^= h >> 32;
    h
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

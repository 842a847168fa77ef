//! TCP connections across NAT legs.
//!
//! Identity: a connection is its pair of initial sequence numbers. A SYN (or SYN-ACK) seen under a new
//! tuple joins the connection whose client ISN it carries; a mid-stream segment under a new tuple joins
//! the connection whose sequence space it continues (both `seq` and `ack` within a window of what was
//! last seen). That is how a packet re-SNATed or re-DNATed after a conntrack entry vanished is recognised
//! as the old connection, not a new one.
//!
//! Copies: the same transmission seen at several points (`-i any` shows a forwarded packet on the pod's
//! veth, on the bridge and after NAT on the uplink) has the same seq, ack, flags, length and IPv4
//! identification; a retransmission gets a new identification from Linux (or, for IPv6, comes at least
//! an RTO later).

use super::deadlines::{Deadline, Deadlines};
use super::{ip_bits, mix3, seq_diff, Endpoint, FxHashMap, PktRef};
use crate::wire::tcp_flags::{ACK, FIN, RST, SYN};
use crate::wire::TcpSegment;
use std::collections::VecDeque;
use std::net::IpAddr;

/// Evidence lists are capped; counters are not.
pub const MAX_LEGS: usize = 16;
// A connection's per-leg bits (`Conn::legs_heard_from_server`) are a u16.
const _: () = assert!(MAX_LEGS <= 16);
pub const MAX_SYNS: usize = 8;
pub const MAX_RSTS: usize = 4;
/// SYN-ACK TTLs a connection keeps: one per leg, direction and capture point (an `-i any` capture of
/// a NATed connection sees its SYN-ACK at 2–4 of them).
pub const MAX_TTL_POINTS: usize = 16;

/// Two sightings with the same identity this close in capture time are one packet seen at two points.
const COPY_WINDOW_NS: i64 = 20_000_000;
/// Across different capture files (different hosts, different clocks) the window is wider.
const COPY_WINDOW_CROSS_INPUT_NS: i64 = 2_000_000_000;
/// A closed (FIN both ways, or RST) connection is finalised this long after it closed, so that late
/// copies and the client's reaction to a RST still land on it.
const CLOSE_LINGER_NS: i64 = 3_000_000_000;
/// A connection that never completed its handshake is finalised after this much silence (SYN
/// retransmissions go on for ~2 minutes).
const HALF_OPEN_IDLE_NS: i64 = 180_000_000_000;
/// An established connection is kept through idle gaps this long: conntrack-timeout incidents happen
/// after hours or days of silence (kernel default timeout 5 days).
const ESTABLISHED_IDLE_NS: i64 = 6 * 86_400_000_000_000;
/// A SYN under a new tuple joins a connection with the same ISN only if that connection's last SYN
/// was this recent (copies arrive within microseconds; ISN collisions between unrelated connections
/// are then very unlikely).
const SYN_JOIN_WINDOW_NS: i64 = 3_000_000_000;
/// How far a mid-stream segment's seq/ack may be from what was last seen and still continue the
/// connection's sequence space.
const SEQ_JOIN_WINDOW: i64 = 1 << 20;
/// Sequence-window index buckets: twice the join window, so a window around any sequence number
/// spans at most its own bucket and the two beside it.
const SEQ_BUCKET_SHIFT: u32 = 21;
const SEQ_BUCKETS: u32 = 1 << (32 - SEQ_BUCKET_SHIFT);
/// Connections sharing one client endpoint that a mid-stream segment is compared with (newest
/// first). Normally one or two; many only when roles were guessed wrongly (a server port above the
/// client's), and then the scan is cut here and counted.
pub const MAX_ENDPOINT_CANDIDATES: usize = 64;
const SWEEP_EVERY_NS: i64 = 1_000_000_000;
/// Default cap on live connections (see `analysis::Limits`).
pub const DEFAULT_MAX_LIVE: usize = 65_536;

/// One tuple under which a connection was seen.
#[derive(Debug, Clone)]
pub struct Leg {
    pub client: Endpoint,
    pub server: Endpoint,
    /// The packet that first showed this leg.
    pub first: PktRef,
    /// The leg's first packet was not a handshake packet: it appeared in the middle of the connection.
    pub mid_stream: bool,
    /// When it appeared mid-stream: the connection's previous unique packet, and the silence before.
    pub prev: Option<PktRef>,
    pub gap_before_ns: i64,
    /// The leg's first packet had already been seen on this earlier leg (a copy from before NAT).
    pub copy_of_leg: Option<u8>,
    /// For a mid-stream leg: how far its first packet's seq and ack were from where the connection's
    /// two directions had got to (0, 0 = it continues exactly).
    pub seq_offset: i64,
    pub ack_offset: i64,
}

/// One transmission of the client's SYN (copies at other points are folded into it).
#[derive(Debug, Clone)]
pub struct SynAttempt {
    pub pkt: PktRef,
    pub tsval: Option<u32>,
    /// Bit i set: seen on leg i.
    pub legs_seen: u32,
    /// Bit i set: seen in input i (capture file).
    pub inputs_seen: u32,
    /// The interface of its first sighting that named one (a `-i any` capture's ifindex), also when
    /// an earlier sighting came from a capture of one interface.
    pub ifindex: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct RstSeen {
    pub pkt: PktRef,
    pub leg: u8,
    pub from_client: bool,
    /// Legs on which copies of this RST were seen.
    pub legs_seen: u32,
    /// The first sighting of this RST (copies included) whose IP TTL differed from the one the
    /// SYN-ACK from the same side arrived with at the same point: whoever made the RST is at another
    /// distance from that point than whoever answered the SYN.
    pub ttl_differs: Option<TtlDiffers>,
}

impl RstSeen {
    /// A sighting of this RST on `leg` (from the client or not) with IP TTL `ttl`: the first whose
    /// TTL is not the SYN-ACK's from the same side at the same point is kept. A RST with SYN set is
    /// a handshake packet, not compared.
    #[cold]
    #[inline(never)]
    fn compare_ttl(
        &mut self,
        synack_ttls: &SynAckTtls,
        (leg, from_client): (u8, bool),
        pkt: &PktRef,
        ttl: u8,
    ) {
        if self.ttl_differs.is_some() || pkt.flags & SYN != 0 {
            return;
        }
        let Some(synack_ttl) = synack_ttls.at(leg, from_client, pkt.input, pkt.ifindex) else {
            return;
        };
        if synack_ttl != ttl {
            self.ttl_differs = Some(TtlDiffers {
                ts_ns: pkt.ts_ns,
                rst_ttl: ttl,
                synack_ttl,
            });
        }
    }
}

/// A RST sighting's IP TTL and the SYN-ACK's at the same point (see `RstSeen::ttl_differs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TtlDiffers {
    pub ts_ns: i64,
    pub rst_ttl: u8,
    pub synack_ttl: u8,
}

/// The IP TTL of the latest SYN-ACK sighting per leg, direction and capture point (input,
/// interface), in first-seen order, at most [`MAX_TTL_POINTS`]. Kept in the connection, which the
/// engine has in hand for every sighting: a map of its own keyed by tuple (the detector's, before)
/// cost two cache misses per SYN-ACK and two per finished leg, ~7 % of a node capture's analysis.
#[derive(Debug, Clone, Default)]
pub struct SynAckTtls {
    len: u8,
    inline: [u64; SynAckTtls::INLINE],
    more: Vec<u64>,
}

impl SynAckTtls {
    /// Sightings kept inline: a NATed connection's SYN-ACK, before and after NAT.
    const INLINE: usize = 2;
    const TTL: u64 = 0xff;

    /// Where, in one word: the input in bits 48–63, the leg in 42–46, bit 41 set from the client,
    /// bit 40 set for an interface whose index is in bits 8–39; the TTL in bits 0–7.
    fn word(leg: u8, from_client: bool, input: u16, ifindex: Option<u32>, ttl: u8) -> u64 {
        let interface = ifindex.map_or(0, |i| (1 << 40) | (u64::from(i) << 8));
        (u64::from(input) << 48)
            | (u64::from(leg & 0x1f) << 42)
            | (u64::from(from_client) << 41)
            | interface
            | u64::from(ttl)
    }

    fn iter(&self) -> impl Iterator<Item = &u64> {
        let len = self.len as usize;
        self.inline[..len.min(Self::INLINE)]
            .iter()
            .chain(&self.more)
    }

    /// The TTL of the latest SYN-ACK seen on `leg` from that side at that point.
    pub fn at(&self, leg: u8, from_client: bool, input: u16, ifindex: Option<u32>) -> Option<u8> {
        let place = Self::word(leg, from_client, input, ifindex, 0);
        self.iter()
            .find(|&&w| w & !Self::TTL == place)
            .map(|&w| (w & Self::TTL) as u8)
    }

    /// Every sighting kept: (leg, from the client, input, interface, TTL), in first-seen order.
    #[cfg(test)]
    fn sightings(&self) -> impl Iterator<Item = (u8, bool, u16, Option<u32>, u8)> + '_ {
        self.iter().map(|&w| {
            let ifindex = (w & (1 << 40) != 0).then_some((w >> 8) as u32);
            let (leg, from_client) = (((w >> 42) & 0x1f) as u8, w & (1 << 41) != 0);
            (
                leg,
                from_client,
                (w >> 48) as u16,
                ifindex,
                (w & Self::TTL) as u8,
            )
        })
    }

    // Out of line: SYN-ACKs are rare, and the per-packet path is inlined into one loop.
    #[cold]
    #[inline(never)]
    fn set(&mut self, leg: u8, from_client: bool, input: u16, ifindex: Option<u32>, ttl: u8) {
        let seen = Self::word(leg, from_client, input, ifindex, ttl);
        let len = self.len as usize;
        let (inline, more) = (&mut self.inline[..len.min(Self::INLINE)], &mut self.more);
        if let Some(w) = inline
            .iter_mut()
            .chain(more.iter_mut())
            .find(|w| **w & !Self::TTL == seen & !Self::TTL)
        {
            *w = seen;
            return;
        }
        if len < Self::INLINE {
            self.inline[len] = seen;
        } else if len < MAX_TTL_POINTS {
            self.more.push(seen);
        } else {
            return;
        }
        self.len += 1;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Obs {
    ts: i64,
    seq: u32,
    ack: u32,
    len: u32,
    ident: u16,
    flags: u8,
    from_client: bool,
    input: u16,
    valid: bool,
    /// Index into `syns` or `rsts` when the observation is one of those, to fold copies in.
    syn_idx: u8,
    rst_idx: u8,
}

/// A segment this large is near a full-size one on any Ethernet path (MSS 1460 less options and
/// overlay overhead): the kind an MTU too small for the path drops.
pub const BIG_SEGMENT: u32 = 1200;

/// A TCP connection and everything the detectors need to know about it.
#[derive(Debug, Clone)]
pub struct Conn {
    pub id: u64,
    pub legs: Vec<Leg>,
    /// Client/server roles are known from a handshake packet; otherwise guessed (higher port = client).
    pub roles_known: bool,
    pub client_isn: Option<u32>,
    pub server_isn: Option<u32>,
    pub syns: Vec<SynAttempt>,
    pub syn_transmissions: u32,
    pub synack: Option<PktRef>,
    /// The interface of the first SYN-ACK sighting that named one.
    pub synack_ifindex: Option<u32>,
    pub synack_transmissions: u32,
    pub synack_ttls: SynAckTtls,
    /// The server's first reply to the client's SYN when it was a bare ACK (no SYN, no RST) before any
    /// SYN-ACK, with the TSecr it echoed: a socket already synchronised on this tuple answered (one in
    /// TIME_WAIT rejecting the SYN, or one the server believes established), not the listener.
    pub syn_answered_by_ack: Option<(PktRef, Option<u32>)>,
    /// The client acknowledged the SYN-ACK or data flowed both ways.
    pub established: bool,
    pub first_ts: i64,
    pub last_ts: i64,
    /// Highest sequence number + length seen, per direction (0 = client, 1 = server).
    pub next_seq: [Option<u32>; 2],
    pub bytes: [u64; 2],
    pub packets: u64,
    pub copies: u64,
    pub data_retransmissions: u32,
    /// Largest payload seen per direction.
    pub max_len: [u32; 2],
    /// Retransmitted segments of at least [`BIG_SEGMENT`] bytes per direction, and the last one.
    pub big_retransmits: [u32; 2],
    pub big_retransmit: [Option<PktRef>; 2],
    /// Highest acknowledgement number sent per direction.
    pub highest_ack: [Option<u32>; 2],
    pub rsts: Vec<RstSeen>,
    pub rst_count: u32,
    pub fin: [bool; 2],
    /// When each direction's first FIN was seen.
    pub fin_ts: [Option<i64>; 2],
    pub closed_ts: Option<i64>,
    /// The longest silence between two unique packets, and the packet that ended it.
    pub longest_gap_ns: i64,
    pub longest_gap_end: Option<PktRef>,
    /// The last two unique packets (`last_pkt`, `prev_pkt`), the last at `last_at`: each packet
    /// overwrites the older one in place instead of moving the last one back (a copy of 88 bytes a
    /// packet).
    last_two: [Option<PktRef>; 2],
    last_at: u8,
    /// The silence between the last two unique packets.
    pub last_gap_ns: i64,
    last_leg: u8,
    /// Bit i set: a packet from the server was seen on leg i (`MAX_LEGS` is 16).
    legs_heard_from_server: u16,
    recent: [Obs; 8],
    /// `copy_key` of each of `recent`: scanned first (one cache line instead of five), so only a
    /// packet that may be a copy reads the observations themselves.
    recent_keys: [u32; 8],
    recent_pos: u8,
    /// The expiry deadline of this connection's live entry in the engine's deadline queue.
    queued_deadline: i64,
    /// Finalised, waiting in its slot for `drain_finished`: no longer live, whatever the queues say.
    finalised: bool,
    /// Filed in the engine's client-endpoint and sequence-window indexes (see
    /// `TcpEngine::unindexed`).
    indexed: bool,
}

impl Conn {
    fn new(id: u64, ts: i64) -> Self {
        Conn {
            id,
            legs: Vec::with_capacity(2),
            roles_known: false,
            client_isn: None,
            server_isn: None,
            syns: Vec::new(),
            syn_transmissions: 0,
            synack: None,
            synack_ifindex: None,
            synack_transmissions: 0,
            synack_ttls: SynAckTtls::default(),
            syn_answered_by_ack: None,
            established: false,
            first_ts: ts,
            last_ts: ts,
            next_seq: [None, None],
            bytes: [0, 0],
            packets: 0,
            copies: 0,
            data_retransmissions: 0,
            max_len: [0, 0],
            big_retransmits: [0, 0],
            big_retransmit: [None, None],
            highest_ack: [None, None],
            rsts: Vec::new(),
            rst_count: 0,
            fin: [false, false],
            fin_ts: [None, None],
            closed_ts: None,
            longest_gap_ns: 0,
            longest_gap_end: None,
            last_two: [None, None],
            last_at: 0,
            last_gap_ns: 0,
            last_leg: 0,
            legs_heard_from_server: 0,
            recent: [Obs::default(); 8],
            recent_keys: [copy_key(&Obs::default()); 8],
            recent_pos: 0,
            queued_deadline: i64::MAX,
            finalised: false,
            indexed: false,
        }
    }

    /// Capture time after which the connection is finalised if nothing more is seen.
    fn deadline(&self) -> i64 {
        match self.closed_ts {
            Some(t) => t.max(self.last_ts).saturating_add(CLOSE_LINGER_NS),
            None if !self.established => self.last_ts.saturating_add(HALF_OPEN_IDLE_NS),
            None => self.last_ts.saturating_add(ESTABLISHED_IDLE_NS),
        }
    }

    /// The last unique packet.
    #[inline]
    pub fn last_pkt(&self) -> Option<PktRef> {
        self.last_two[self.last_at as usize]
    }

    /// The unique packet before the last one.
    #[inline]
    pub fn prev_pkt(&self) -> Option<PktRef> {
        self.last_two[(self.last_at ^ 1) as usize]
    }

    /// The first leg: the view closest to the client that the capture had.
    pub fn origin(&self) -> Option<&Leg> {
        self.legs.first()
    }

    /// Whether any packet from the server was seen on leg `leg` (copies included).
    pub fn heard_from_server_on(&self, leg: usize) -> bool {
        leg < MAX_LEGS && self.legs_heard_from_server & (1 << leg) != 0
    }

    pub fn leg_of(&self, pkt: &PktRef) -> Option<usize> {
        self.legs.iter().position(|l| {
            (l.client == pkt.src && l.server == pkt.dst)
                || (l.client == pkt.dst && l.server == pkt.src)
        })
    }
}

/// What the engine concluded about one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpOutcome {
    pub slot: u32,
    pub from_client: bool,
    /// A copy of a transmission already seen at another point.
    pub copy: bool,
    /// This packet opened a new leg of an existing connection.
    pub new_leg: bool,
}

/// The TSval and TSecr of `seg` if [`TcpEngine::packet`] may read them (`reads_timestamps`),
/// parsing its options only then: for a compact form made before the engine sees the segment.
#[inline(always)]
pub fn segment_timestamp(seg: &TcpSegment<'_>) -> Option<(u32, u32)> {
    reads_timestamps(seg.flags, seg.payload_len)
        .then(|| seg.options.timestamp())
        .flatten()
}

/// Whether [`TcpEngine::packet`] reads a segment's TCP timestamps: a client's SYN (its TSval) and
/// a bare ACK (the TSecr of a socket answering a SYN with an ACK). Nothing else reads options per
/// packet, so the pipeline's reading half parses them only for these.
#[inline(always)]
pub fn reads_timestamps(flags: u8, payload_len: u32) -> bool {
    flags & (SYN | ACK) == SYN || (flags & (SYN | ACK | RST | FIN) == ACK && payload_len == 0)
}

/// A tuple without direction, as plain integers, with its hash: hashed and compared once per packet,
/// so it avoids the enum `IpAddr` (whose derived `Hash` and `Ord` branch on the family byte by
/// byte); the hash is compared first, so a probe that meets another key rejects it on one word. Words
/// of 64 bits, not `u128`s: 48 bytes aligned to 8, so a table bucket with its value is 56 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LegKey {
    hash: u64,
    lo: [u64; 2],
    hi: [u64; 2],
    /// Address family (bit 32) and the two ports, `lo`'s first.
    ports: u64,
}

impl std::hash::Hash for LegKey {
    /// The one mixed word computed with the key (see [`mix3`]).
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl LegKey {
    /// The key of the tuple `a`–`b`, and whether `a` is its `lo` end (so that a packet's direction
    /// on a known leg is one comparison of two flags, not of two endpoints).
    #[inline]
    fn of(a: Endpoint, b: Endpoint) -> (Self, bool) {
        if let (IpAddr::V4(x), IpAddr::V4(y)) = (a.ip, b.ip) {
            // The usual case without the enum's general path: the same key as below.
            let (x, y) = (u32::from(x), u32::from(y));
            let hash = leg_hash_v4(x, a.port, y, b.port);
            return (
                LegKey::of_v4_hashed(x, a.port, y, b.port, hash),
                hash.a_is_lo,
            );
        }
        let ((ia, fam), (ib, _)) = (ip_bits(a.ip), ip_bits(b.ip));
        let a_is_lo = (ia, a.port) <= (ib, b.port);
        let (lo, hi) = ordered((ia, a.port), (ib, b.port), a_is_lo);
        let ports = fam | (lo.1 as u64) << 16 | hi.1 as u64;
        let split = |x: u128| [x as u64, (x >> 64) as u64];
        let key = LegKey {
            hash: widen_leg_hash(fold_leg_hash(mix3(lo.0, hi.0, ports))),
            lo: split(lo.0),
            hi: split(hi.0),
            ports,
        };
        (key, a_is_lo)
    }

    /// The key of the IPv4 tuple `a`–`b` whose [`leg_hash_v4`] is `hash` (made by the caller,
    /// perhaps on another thread): no hashing here.
    #[inline(always)]
    fn of_v4_hashed(a_ip: u32, a_port: u16, b_ip: u32, b_port: u16, hash: LegHash) -> Self {
        let (lo, hi) = ordered((a_ip, a_port), (b_ip, b_port), hash.a_is_lo);
        LegKey {
            hash: widen_leg_hash(hash.hash),
            lo: [lo.0 as u64, 0],
            hi: [hi.0 as u64, 0],
            ports: (lo.1 as u64) << 16 | hi.1 as u64,
        }
    }
}

/// Each leg's connection slot, its index in the connection, and whether its client is the key's
/// `lo` end, by key: open addressing with linear probing, a bucket a 64-byte line, at most half
/// full. The bucket where a key's lookup begins follows from its hash alone, so the pipeline's back
/// fetches it a few packets ahead (`prefetch`), which `std`'s map (whose buckets are not
/// addressable) cannot; the lookup itself is a line and mostly one comparison of hashes. Against
/// `FxHashMap` on the snaplen-128 bench capture: one thread 1.02× and 1.07× as fast, two threads
/// with the prefetch 1.08× and 1.07× (101 and 61 interleaved rounds, BENCHMARKS.md "nineteenth
/// pass"). A hash made to collide costs a longer probe here as it did a longer one in the map
/// (neither is keyed); the live cap bounds the table either way.
#[derive(Default)]
struct LegTable {
    buckets: Vec<LegBucket>,
    len: usize,
}

/// One line: the key (48 bytes), its value and whether the bucket holds one.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct LegBucket {
    key: LegKey,
    val: (u32, u8, bool),
    used: bool,
}

const EMPTY_BUCKET: LegBucket = LegBucket {
    key: LegKey {
        hash: 0,
        lo: [0; 2],
        hi: [0; 2],
        ports: 0,
    },
    val: (0, 0, false),
    used: false,
};

impl LegTable {
    /// The bucket where the probe for a key hashed `hash` begins (the table is not empty; its
    /// size a power of two). The low bits: `widen_leg_hash` multiplies them from all 32 of the
    /// folded hash.
    #[inline(always)]
    fn home(&self, hash: u64) -> usize {
        hash as usize & (self.buckets.len() - 1)
    }

    /// Where `key` is, or the empty bucket where its probe ends (the table is not empty: it is
    /// never full, so a probe ends).
    #[inline(always)]
    fn find(&self, key: &LegKey) -> Result<usize, usize> {
        let mask = self.buckets.len() - 1;
        let mut i = self.home(key.hash);
        loop {
            let b = &self.buckets[i];
            if !b.used {
                return Err(i);
            }
            if b.key == *key {
                return Ok(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// What `key` maps to.
    #[inline(always)]
    fn get(&self, key: &LegKey) -> Option<&(u32, u8, bool)> {
        if self.buckets.is_empty() {
            return None;
        }
        self.find(key).ok().map(|i| &self.buckets[i].val)
    }

    /// `key` now maps to `val` (replacing what it mapped to). Grows first to stay at most half full.
    fn insert(&mut self, key: LegKey, val: (u32, u8, bool)) {
        if (self.len + 1) * 2 > self.buckets.len() {
            self.grow();
        }
        match self.find(&key) {
            Ok(i) => self.buckets[i].val = val,
            Err(i) => {
                self.buckets[i] = LegBucket {
                    key,
                    val,
                    used: true,
                };
                self.len += 1;
            }
        }
    }

    /// `key` maps to nothing.
    fn remove(&mut self, key: &LegKey) {
        if self.buckets.is_empty() {
            return;
        }
        let Ok(mut hole) = self.find(key) else { return };
        // Backward shift, no tombstones: each later key of the run whose probe passes the hole
        // (its home is not between the hole and it) moves into the hole, which moves on to where
        // that key was; the run's first empty bucket ends it.
        let mask = self.buckets.len() - 1;
        let mut j = (hole + 1) & mask;
        while self.buckets[j].used {
            let home = self.home(self.buckets[j].key.hash);
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(hole) & mask) {
                self.buckets[hole] = self.buckets[j];
                hole = j;
            }
            j = (j + 1) & mask;
        }
        self.buckets[hole].used = false;
        self.len -= 1;
    }

    /// Empties the table, keeping its buckets.
    fn clear(&mut self) {
        self.buckets.iter_mut().for_each(|b| b.used = false);
        self.len = 0;
    }

    /// Twice the buckets (64 at first), each key filed again.
    fn grow(&mut self) {
        let size = (self.buckets.len() * 2).max(64);
        let old = std::mem::replace(&mut self.buckets, vec![EMPTY_BUCKET; size]);
        self.len = 0;
        for b in old.into_iter().filter(|b| b.used) {
            let Err(i) = self.find(&b.key) else {
                unreachable!("keys are unique")
            };
            self.buckets[i] = b;
            self.len += 1;
        }
    }

    /// A hint to the cache to fetch the bucket where the probe for `hash` begins; changes nothing.
    #[inline(always)]
    fn prefetch(&self, hash: u64) {
        if self.buckets.is_empty() {
            return;
        }
        let bucket: *const LegBucket = &self.buckets[self.home(hash)];
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `_mm_prefetch` (SSE, which every x86-64 CPU has) only asks the cache for the line
        // at the address; it reads nothing the program sees and faults on no address, and this one
        // is a bucket of the table.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                bucket.cast::<i8>(),
            )
        };
        #[cfg(not(target_arch = "x86_64"))]
        let _ = bucket;
    }
}

/// A tuple's two ends, the `lo` one first.
#[inline(always)]
fn ordered<T>(a: T, b: T, a_is_lo: bool) -> (T, T) {
    if a_is_lo {
        (a, b)
    } else {
        (b, a)
    }
}

/// A leg key's hash, and which end of the tuple is its `lo` end, computed apart from the key: the
/// two-thread pipeline's reading half hashes each IPv4 segment's tuple, so that the flow engine's
/// thread, the slower half when this was written (BENCHMARKS.md, "Per-packet cost, eighth pass"),
/// only builds the key around the hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegHash {
    hash: u32,
    /// The first end given (a packet's source) is the key's `lo` end.
    pub a_is_lo: bool,
}

/// The hash of the IPv4 tuple `a`–`b`, whichever way round: what [`LegKey`] is hashed with.
#[inline(always)]
pub fn leg_hash_v4(a_ip: u32, a_port: u16, b_ip: u32, b_port: u16) -> LegHash {
    let a_is_lo = (a_ip, a_port) <= (b_ip, b_port);
    let (lo, hi) = ordered((a_ip, a_port), (b_ip, b_port), a_is_lo);
    let ports = (lo.1 as u64) << 16 | hi.1 as u64;
    let hash = fold_leg_hash(mix3(lo.0 as u128, hi.0 as u128, ports));
    LegHash { hash, a_is_lo }
}

impl LegHash {
    /// The hash word alone, to carry it compact.
    #[inline(always)]
    pub fn word(self) -> u32 {
        self.hash
    }

    /// The hash again from its word and order, as `word` and `a_is_lo` gave them.
    #[inline(always)]
    pub fn of_word(hash: u32, a_is_lo: bool) -> Self {
        LegHash { hash, a_is_lo }
    }
}

/// 32 bits of a mixed key (its high half, the better mixed): what crosses between the threads.
#[inline(always)]
fn fold_leg_hash(h: u64) -> u32 {
    (h >> 32) as u32
}

/// The table's hash word of a folded one: one multiply spreads it over 64 bits, so that both the
/// bucket index (low bits) and the tag (top 7 bits) depend on all 32.
#[inline(always)]
fn widen_leg_hash(h: u32) -> u64 {
    (h as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

#[derive(Debug, Default, Clone, Copy)]
pub struct TcpStats {
    pub connections: u64,
    pub packets: u64,
    pub copies: u64,
    pub legs: u64,
    pub mid_stream_legs: u64,
    pub peak_live: u64,
    /// Connections finalised early because the live cap was reached, by state.
    pub evicted_half_open: u64,
    pub evicted_established: u64,
    /// The first packet that met the cap.
    pub cap_reached_at: Option<PktRef>,
    /// Mid-stream lookups whose candidate list (one client endpoint) was cut at
    /// `MAX_ENDPOINT_CANDIDATES`.
    pub endpoint_scans_cut: u64,
}

/// The TCP side of the flow engine. Feed it packets in capture-time order; collect finalised
/// connections with `drain_finished`.
/// Key of the sequence-window index: a leg's client address and server endpoint, a direction
/// (0 = client → server) and the bucket of that direction's next sequence number. A segment seen
/// under a new tuple (re-SNAT keeps the client address, changes its port) is compared only with the
/// connections whose sequence space is near its own, so a capture started on a busy SNAT node costs
/// a few comparisons per new tuple, not one per live connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SeqWindowKey {
    client_ip: u128,
    server_ip: u128,
    /// Address family (bit 32), the server port (bits 16..32), the direction (bit 0..8).
    port_dir: u64,
    bucket: u32,
}

impl SeqWindowKey {
    #[inline]
    fn new(client_ip: IpAddr, server: Endpoint, dir: u8, bucket: u32) -> Self {
        let ((client_ip, fam), (server_ip, _)) = (ip_bits(client_ip), ip_bits(server.ip));
        SeqWindowKey {
            client_ip,
            server_ip,
            port_dir: fam | (server.port as u64) << 16 | dir as u64,
            bucket,
        }
    }
}

impl std::hash::Hash for SeqWindowKey {
    /// One well-mixed word, as for [`LegKey`].
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(mix3(
            self.client_ip,
            self.server_ip,
            self.port_dir ^ (self.bucket as u64) << 40,
        ));
    }
}

/// The slab slots of the connections filed under one index key, in order (lookups take the first
/// match, or the newest). Up to `N` are kept in place, so filing and unfiling allocate nothing and
/// read no second line; a longer list spills to the heap and comes back in place once it is down to
/// `N - 2` (not `N`: a list going back and forth across `N` would allocate on every crossing).
/// Lists of several are the rule, not the exception, in the sequence-window index: one client
/// talking to one Service files every connection under the same address pair, told apart only by
/// 2 MiB buckets of sequence space (on the benchmark capture, 90 % of that index's keys held
/// several).
#[derive(Debug, Clone)]
enum Slots<const N: usize> {
    Inline { len: u8, slots: [u32; N] },
    Spilled(Vec<u32>),
}

impl<const N: usize> Slots<N> {
    #[inline]
    fn one(slot: u32) -> Self {
        let mut slots = [0; N];
        slots[0] = slot;
        Slots::Inline { len: 1, slots }
    }

    #[inline]
    fn push(&mut self, slot: u32) {
        match self {
            Slots::Inline { len, slots } if (*len as usize) < N => {
                slots[*len as usize] = slot;
                *len += 1;
            }
            Slots::Inline { slots, .. } => {
                let mut v = Vec::with_capacity(2 * N);
                v.extend_from_slice(slots);
                v.push(slot);
                *self = Slots::Spilled(v);
            }
            Slots::Spilled(v) => v.push(slot),
        }
    }

    #[inline]
    fn as_slice(&self) -> &[u32] {
        match self {
            Slots::Inline { len, slots } => &slots[..*len as usize],
            Slots::Spilled(v) => v,
        }
    }

    /// Back in place once a spilled list is short again.
    #[inline]
    fn settle(&mut self) {
        if let Slots::Spilled(v) = self {
            if v.len() + 2 <= N {
                let mut slots = [0; N];
                slots[..v.len()].copy_from_slice(v);
                *self = Slots::Inline {
                    len: v.len() as u8,
                    slots,
                };
            }
        }
    }

    /// Remove `slot` keeping the order of the others; returns whether the list is now empty.
    fn remove_keeping_order(&mut self, slot: u32) -> bool {
        let empty = match self {
            Slots::Inline { len, slots } => {
                let mut kept = 0;
                for i in 0..*len as usize {
                    if slots[i] != slot {
                        slots[kept] = slots[i];
                        kept += 1;
                    }
                }
                *len = kept as u8;
                kept == 0
            }
            Slots::Spilled(v) => {
                v.retain(|&s| s != slot);
                v.is_empty()
            }
        };
        self.settle();
        empty
    }

    /// Remove the first `slot`, the last one taking its place; returns whether the list is now
    /// empty.
    fn swap_remove(&mut self, slot: u32) -> bool {
        let empty = match self {
            Slots::Inline { len, slots } => {
                let n = *len as usize;
                if let Some(i) = slots[..n].iter().position(|&s| s == slot) {
                    slots[i] = slots[n - 1];
                    *len -= 1;
                }
                *len == 0
            }
            Slots::Spilled(v) => {
                if let Some(i) = v.iter().position(|&s| s == slot) {
                    v.swap_remove(i);
                }
                v.is_empty()
            }
        };
        self.settle();
        empty
    }
}

/// Slots kept in place under a client endpoint (a list of several is rare there: one port, one
/// connection, unless NAT legs share it) and under a sequence window (see [`Slots`]). Five keep the
/// window index's entry at 80 bytes, as with one (its key is 48 bytes, aligned to 16).
const CLIENT_SLOTS: usize = 3;
const WINDOW_SLOTS: usize = 5;

/// File `slot` under `key`.
#[inline]
fn file<K: std::hash::Hash + Eq, const N: usize>(
    index: &mut FxHashMap<K, Slots<N>>,
    key: K,
    slot: u32,
) {
    match index.entry(key) {
        std::collections::hash_map::Entry::Occupied(mut e) => e.get_mut().push(slot),
        std::collections::hash_map::Entry::Vacant(e) => {
            e.insert(Slots::one(slot));
        }
    }
}

fn seq_bucket(seq: u32) -> u32 {
    seq >> SEQ_BUCKET_SHIFT
}

/// Slots per chunk of the [`Slab`] (256 connections, ~300 KB).
const SLAB_CHUNK_SHIFT: u32 = 8;
const SLAB_CHUNK: usize = 1 << SLAB_CHUNK_SHIFT;

/// The connections' storage, indexed by slot, in chunks of `SLAB_CHUNK` slots allocated as the
/// slots are first used: a connection never moves while it lives (growing the table copies
/// nothing, where one vector doubling copied megabytes), and no doubled block stands half-used —
/// the heap's high-water mark stays that of the connections.
#[derive(Default)]
pub struct Slab {
    chunks: Vec<Vec<Option<Conn>>>,
    len: u32,
}

impl Slab {
    /// A new slot holding `conn`, after the last one.
    fn push(&mut self, conn: Conn) -> u32 {
        if self.len as usize % SLAB_CHUNK == 0 {
            self.chunks.push(Vec::with_capacity(SLAB_CHUNK));
        }
        self.chunks
            .last_mut()
            .expect("a chunk with room")
            .push(Some(conn));
        self.len += 1;
        self.len - 1
    }

    /// The connection in `slot`, if the slot exists and holds one.
    #[inline]
    pub fn get(&self, slot: u32) -> Option<&Conn> {
        self.chunks
            .get((slot >> SLAB_CHUNK_SHIFT) as usize)?
            .get(slot as usize % SLAB_CHUNK)?
            .as_ref()
    }

    /// The connections held, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = &Conn> {
        self.chunks.iter().flatten().flatten()
    }
}

impl std::ops::Index<u32> for Slab {
    type Output = Option<Conn>;
    #[inline(always)]
    fn index(&self, slot: u32) -> &Option<Conn> {
        &self.chunks[(slot >> SLAB_CHUNK_SHIFT) as usize][slot as usize % SLAB_CHUNK]
    }
}

impl std::ops::IndexMut<u32> for Slab {
    #[inline(always)]
    fn index_mut(&mut self, slot: u32) -> &mut Option<Conn> {
        &mut self.chunks[(slot >> SLAB_CHUNK_SHIFT) as usize][slot as usize % SLAB_CHUNK]
    }
}

/// The TCP side of the flow engine. Feed it packets in capture-time order; collect finalised
/// connections with `drain_finished`.
///
/// Memory is bounded: at most `max_live` connections are live; past that the oldest half-open one
/// (never answered first) is finalised early, else the one closest to its expiry, and the eviction is
/// counted. Expiry uses a deadline queue (each connection is looked at when its deadline may have
/// come, not every capture second), so the cost is per packet, not per live connection and second.
pub struct TcpEngine {
    slab: Slab,
    free: Vec<u32>,
    live: u64,
    max_live: u64,
    /// Each leg's connection slot, its index in the connection, and whether its client is the
    /// key's `lo` end.
    legs: LegTable,
    by_isn: FxHashMap<u32, u32>,
    new_tuple: NewTupleIndex,
    /// Connections made since the last lookup of a segment under a new tuple, not yet filed in
    /// `new_tuple` (oldest first; lazily pruned): its two indexes serve only
    /// that lookup, which comes at the start of a capture and for stray segments, while filing and
    /// unfiling every connection's legs on the way was a fifth of the flow engine's time. The lookup
    /// files them first, so it sees every live connection, as if each had been filed as it came.
    unindexed: Vec<(u32, u64)>,
    /// (deadline, slot, connection id): lazily updated; stale entries are skipped when taken.
    deadlines: Deadlines,
    /// `expire`'s lists of the entries come due and, for each, its connection's deadline now
    /// (`None`: a stale entry); kept for their capacity.
    due: Vec<Deadline>,
    due_now: Vec<Option<i64>>,
    /// Connections created by a handshake packet, oldest first (lazily pruned): eviction candidates.
    half_open: VecDeque<(u32, u64)>,
    /// Slots of the connections finalised since the last `drain_finished`, in the order they were:
    /// a finalised connection stays in its slot until drained (moved nowhere) ...
    finished: Vec<u32>,
    /// ... unless a new connection took the slot first (the free list hands out the slot freed
    /// last, as it always did): then it waits here, with its slot.
    parked: Vec<(u32, Conn)>,
    next_id: u64,
    /// When the next sweep of expired connections is due: a second of capture time after the last.
    next_sweep_ts: i64,
    pub stats: TcpStats,
}

impl Default for TcpEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl TcpEngine {
    pub fn new() -> Self {
        Self::with_max_live(DEFAULT_MAX_LIVE)
    }

    /// An engine that keeps at most `max_live` connections live (at least 16).
    pub fn with_max_live(max_live: usize) -> Self {
        TcpEngine {
            slab: Slab::default(),
            free: Vec::new(),
            live: 0,
            max_live: max_live.max(16) as u64,
            legs: LegTable::default(),
            by_isn: FxHashMap::default(),
            new_tuple: NewTupleIndex::default(),
            unindexed: Vec::new(),
            deadlines: Deadlines::default(),
            due: Vec::new(),
            due_now: Vec::new(),
            half_open: VecDeque::new(),
            finished: Vec::new(),
            parked: Vec::new(),
            next_id: 0,
            next_sweep_ts: i64::MIN,
            stats: TcpStats::default(),
        }
    }

    /// The live connection in `slot`.
    pub fn conn(&self, slot: u32) -> Option<&Conn> {
        self.slab.get(slot).filter(|c| !c.finalised)
    }

    pub fn live_connections(&self) -> u64 {
        self.live
    }

    /// The cap on live connections.
    pub fn max_live(&self) -> u64 {
        self.max_live
    }

    /// Whether connections were finalised since the last `drain_finished`.
    #[inline]
    pub fn has_finished(&self) -> bool {
        !self.finished.is_empty()
    }

    /// Hands each connection finalised since the last call to `f`, in the order they were
    /// finalised, where it lies: `f` reads it in place or takes it (to send it elsewhere); it is
    /// dropped afterwards and its slot is free.
    pub fn drain_finished(&mut self, mut f: impl FnMut(&mut Option<Conn>)) {
        let mut finished = std::mem::take(&mut self.finished);
        for &slot in &finished {
            // A slot handed out again before this drain: its finished connection was parked (and
            // a slot is parked from once per finalisation, in the same order).
            if let Some(i) = self.parked.iter().position(|(s, _)| *s == slot) {
                let mut conn = Some(self.parked.remove(i).1);
                f(&mut conn);
            } else {
                let held = &mut self.slab[slot];
                debug_assert!(held.as_ref().is_some_and(|c| c.finalised));
                f(held);
                *held = None;
            }
        }
        finished.clear();
        self.finished = finished;
    }

    /// Finalise every live connection (end of input): the slab itself, the connections in slot
    /// order (the order `finalise` slot by slot gave), for the caller to go through in place — no
    /// connection is moved or copied. Connections finished before stay in `drain_finished` (drain
    /// them first: they ended earlier). The engine is empty afterwards; its indexes are cleared
    /// whole instead of entry by entry, which at the end of a capture was a third of the time after
    /// the last packet (thousands of live connections, each a few cache misses).
    pub fn finish(&mut self) -> Slab {
        debug_assert!(
            self.finished.is_empty() && self.parked.is_empty(),
            "drain_finished before finish"
        );
        self.legs.clear();
        self.by_isn.clear();
        self.new_tuple = NewTupleIndex::default();
        self.unindexed.clear();
        self.deadlines.clear();
        self.half_open.clear();
        self.free.clear();
        self.live = 0;
        std::mem::take(&mut self.slab)
    }

    /// Process one TCP segment. `pkt` carries the addresses, ports, seq/ack, flags and length;
    /// `ip_ident` and `ttl` are its IP header's identification and TTL; `timestamp` gives the
    /// segment's TSval and TSecr; it is called only for a segment [`reads_timestamps`] names, and
    /// only where they are read (a client's SYN, a server's bare ACK answering a SYN), so a caller
    /// holding the segment parses its options only then.
    #[inline(always)]
    pub fn packet(
        &mut self,
        pkt: &PktRef,
        ip_ident: u16,
        ttl: u8,
        timestamp: impl Fn() -> Option<(u32, u32)>,
    ) -> TcpOutcome {
        let (key, src_is_lo) = LegKey::of(pkt.src, pkt.dst);
        self.packet_keyed(pkt, key, src_is_lo, (ip_ident, ttl), timestamp)
    }

    /// Ask the cache for the leg table's line where the lookup of a tuple hashed `hash` will
    /// begin: the pipeline's back calls it for the packet a few ahead of the one it is at, whose
    /// lookup then finds the line there instead of waiting on memory for it.
    #[inline(always)]
    pub fn prefetch_leg(&self, hash: LegHash) {
        self.legs.prefetch(widen_leg_hash(hash.hash));
    }

    /// [`TcpEngine::packet`] for an IPv4 segment between `src` and `dst` (`pkt`'s addresses) whose
    /// tuple the caller has hashed with [`leg_hash_v4`].
    #[inline(always)]
    pub fn packet_v4_hashed(
        &mut self,
        pkt: &PktRef,
        (src, dst): (u32, u32),
        hash: LegHash,
        ip_ident: u16,
        ttl: u8,
        timestamp: impl Fn() -> Option<(u32, u32)>,
    ) -> TcpOutcome {
        let key = LegKey::of_v4_hashed(src, pkt.src.port, dst, pkt.dst.port, hash);
        debug_assert_eq!((key, hash.a_is_lo), LegKey::of(pkt.src, pkt.dst));
        self.packet_keyed(pkt, key, hash.a_is_lo, (ip_ident, ttl), timestamp)
    }

    #[inline(always)]
    fn packet_keyed(
        &mut self,
        pkt: &PktRef,
        key: LegKey,
        src_is_lo: bool,
        (ip_ident, ttl): (u16, u8),
        timestamp: impl Fn() -> Option<(u32, u32)>,
    ) -> TcpOutcome {
        let has = |flag: u8| pkt.flags & flag != 0;
        self.stats.packets += 1;
        if pkt.ts_ns >= self.next_sweep_ts {
            self.expire(pkt.ts_ns);
            self.next_sweep_ts = pkt.ts_ns.saturating_add(SWEEP_EVERY_NS);
        }
        let is_syn = has(SYN) && !has(ACK);
        let is_synack = has(SYN) && has(ACK);

        let mut new_leg = false;
        // `from_client` is known from the index for a known leg; for one just attached it is read
        // off the leg below.
        let (slot, leg_idx, known_from_client) = match self.legs.get(&key).copied() {
            Some((slot, leg, client_is_lo)) => {
                // A SYN with another ISN on a known tuple is a new connection reusing the 4-tuple
                // (e.g. after TIME_WAIT): the old one is over. (Only a SYN looks at the connection
                // here: it is looked up once, below, for every other packet.)
                let reused = is_syn && {
                    let conn = self.slab[slot]
                        .as_ref()
                        .expect("leg index points at a live slot");
                    conn.client_isn.is_some() && conn.client_isn != Some(pkt.seq)
                };
                if reused {
                    self.finalise(slot);
                    let (slot, leg) =
                        self.attach_new(*pkt, ip_ident, is_syn, is_synack, &mut new_leg);
                    (slot, leg, None)
                } else {
                    (slot, leg, Some(src_is_lo == client_is_lo))
                }
            }
            None => {
                let (slot, leg) = self.attach_new(*pkt, ip_ident, is_syn, is_synack, &mut new_leg);
                (slot, leg, None)
            }
        };

        let conn = self.slab[slot].as_mut().expect("attached slot is live");
        // A known leg's direction comes from the index: the leg itself (a line of its own, behind
        // a pointer) is read only for a leg just attached.
        let from_client =
            known_from_client.unwrap_or_else(|| pkt.src == conn.legs[leg_idx as usize].client);
        conn.legs_heard_from_server |= ((!from_client) as u16) << leg_idx;

        let obs = Obs {
            ts: pkt.ts_ns,
            seq: pkt.seq,
            ack: pkt.ack,
            len: pkt.len,
            ident: ip_ident,
            flags: pkt.flags,
            from_client,
            input: pkt.input,
            valid: true,
            syn_idx: u8::MAX,
            rst_idx: u8::MAX,
        };
        if is_synack {
            if !from_client && conn.synack_ifindex.is_none() {
                conn.synack_ifindex = pkt.ifindex;
            }
            // Every sighting, copies included: a TTL compares only with one seen at the same point.
            conn.synack_ttls
                .set(leg_idx, from_client, pkt.input, pkt.ifindex, ttl);
        }
        // A copy has the fingerprint of the observation it copies (`copy_key` is made of fields
        // `is_copy` compares): only those are compared in full, in the order `recent` holds them.
        let fingerprint = copy_key(&obs);
        let copy_of = conn
            .recent_keys
            .iter()
            .zip(&conn.recent)
            .find(|&(&key, o)| key == fingerprint && is_copy(o, &obs))
            .map(|(_, o)| *o);
        if let Some(prev) = copy_of {
            conn.copies += 1;
            self.stats.copies += 1;
            let bit = 1u32 << leg_idx.min(31);
            let input_bit = 1u32 << pkt.input.min(31);
            if let Some(s) = conn.syns.get_mut(prev.syn_idx as usize) {
                s.legs_seen |= bit;
                s.inputs_seen |= input_bit;
                s.ifindex = s.ifindex.or(pkt.ifindex);
            }
            if let Some(r) = conn.rsts.get_mut(prev.rst_idx as usize) {
                r.legs_seen |= bit;
                r.compare_ttl(&conn.synack_ttls, (leg_idx, from_client), pkt, ttl);
            }
            return TcpOutcome {
                slot,
                from_client,
                copy: true,
                new_leg,
            };
        }

        // A unique transmission.
        let dir = if from_client { 0 } else { 1 };
        let mut obs = obs;
        conn.packets += 1;
        if let Some(last) = conn.last_pkt() {
            let gap = pkt.ts_ns.saturating_sub(last.ts_ns);
            conn.last_gap_ns = gap;
            if gap > conn.longest_gap_ns {
                conn.longest_gap_ns = gap;
                conn.longest_gap_end = Some(*pkt);
            }
        }
        if is_syn && from_client {
            conn.syn_transmissions += 1;
            if conn.syns.len() < MAX_SYNS {
                obs.syn_idx = conn.syns.len() as u8;
                conn.syns.push(SynAttempt {
                    pkt: *pkt,
                    tsval: {
                        debug_assert!(reads_timestamps(pkt.flags, pkt.len));
                        timestamp().map(|t| t.0)
                    },
                    legs_seen: 1 << leg_idx.min(31),
                    inputs_seen: 1 << pkt.input.min(31),
                    ifindex: pkt.ifindex,
                });
            }
        }
        if is_synack && !from_client {
            conn.synack_transmissions += 1;
            conn.server_isn.get_or_insert(pkt.seq);
            conn.synack.get_or_insert(*pkt);
        }
        if has(RST) {
            conn.rst_count += 1;
            if conn.rsts.len() < MAX_RSTS {
                obs.rst_idx = conn.rsts.len() as u8;
                let mut rst = RstSeen {
                    pkt: *pkt,
                    leg: leg_idx,
                    from_client,
                    legs_seen: 1 << leg_idx.min(31),
                    ttl_differs: None,
                };
                rst.compare_ttl(&conn.synack_ttls, (leg_idx, from_client), pkt, ttl);
                conn.rsts.push(rst);
            }
            conn.closed_ts.get_or_insert(pkt.ts_ns);
        }
        if has(FIN) {
            conn.fin[dir] = true;
            conn.fin_ts[dir].get_or_insert(pkt.ts_ns);
            if conn.fin[0] && conn.fin[1] {
                conn.closed_ts.get_or_insert(pkt.ts_ns);
            }
        }
        // A bare ACK from the server answering the SYN acknowledges another connection's sequence
        // space (the old one on this tuple): it must not move this connection's.
        let stray_ack = !from_client
            && conn.synack.is_none()
            && !conn.syns.is_empty()
            && has(ACK)
            && !has(SYN)
            && !has(RST)
            && !has(FIN)
            && pkt.len == 0;
        if stray_ack && conn.syn_answered_by_ack.is_none() {
            debug_assert!(reads_timestamps(pkt.flags, pkt.len));
            conn.syn_answered_by_ack = Some((*pkt, timestamp().map(|t| t.1)));
        }
        conn.max_len[dir] = conn.max_len[dir].max(pkt.len);
        if has(ACK) && !stray_ack && conn.highest_ack[dir].is_none_or(|h| seq_diff(pkt.ack, h) > 0)
        {
            conn.highest_ack[dir] = Some(pkt.ack);
        }
        if !has(RST) && !stray_ack {
            let end = pkt
                .seq
                .wrapping_add(pkt.len)
                .wrapping_add(has(SYN) as u32)
                .wrapping_add(has(FIN) as u32);
            match conn.next_seq[dir] {
                Some(n) if seq_diff(end, n) <= 0 => {
                    if pkt.len > 0 {
                        conn.data_retransmissions += 1;
                    }
                    if pkt.len >= BIG_SEGMENT {
                        conn.big_retransmits[dir] += 1;
                        conn.big_retransmit[dir] = Some(*pkt);
                    }
                }
                old => {
                    conn.next_seq[dir] = Some(end);
                    if conn.indexed && old.map(seq_bucket) != Some(seq_bucket(end)) {
                        reindex_seq(
                            &mut self.new_tuple.by_seq_window,
                            slot,
                            conn,
                            dir,
                            old,
                            Some(end),
                        );
                    }
                }
            }
        }
        if has(ACK) && !has(SYN) && !has(RST) {
            if from_client && conn.synack.is_some() {
                conn.established = true;
            }
            if !conn.roles_known && pkt.len > 0 && conn.bytes[1 - dir] > 0 {
                conn.established = true;
            }
        }
        conn.bytes[dir] += pkt.len as u64;
        conn.last_ts = conn.last_ts.max(pkt.ts_ns);
        // A close (FIN both ways, RST) brings the deadline forward: queue the earlier one. Later
        // deadlines (activity) are picked up when the queued one comes due.
        let deadline = conn.deadline();
        if deadline < conn.queued_deadline {
            conn.queued_deadline = deadline;
            self.deadlines.push((deadline, slot, conn.id));
        }
        conn.last_at ^= 1;
        conn.last_two[conn.last_at as usize] = Some(*pkt);
        conn.last_leg = leg_idx;
        let pos = conn.recent_pos as usize % conn.recent.len();
        conn.recent[pos] = obs;
        conn.recent_keys[pos] = copy_key(&obs);
        conn.recent_pos = conn.recent_pos.wrapping_add(1);
        TcpOutcome {
            slot,
            from_client,
            copy: false,
            new_leg,
        }
    }

    /// Find (or create) the connection for a tuple not seen before, and add the tuple as a leg.
    fn attach_new(
        &mut self,
        pkt: PktRef,
        ip_ident: u16,
        is_syn: bool,
        is_synack: bool,
        new_leg: &mut bool,
    ) -> (u32, u8) {
        // 1. Handshake packets carry the client ISN.
        if is_syn || is_synack {
            let isn = if is_syn {
                pkt.seq
            } else {
                pkt.ack.wrapping_sub(1)
            };
            if let Some(&slot) = self.by_isn.get(&isn) {
                if let Some(conn) = self.slab[slot].as_ref() {
                    // A SYN joins only as a copy of a transmission already seen (same IPv4 identification,
                    // within the copy window): scanners reuse one ISN for many SYNs to many ports.
                    let join = if is_syn {
                        conn.recent.iter().any(|o| {
                            o.valid
                                && o.flags == pkt.flags
                                && o.seq == isn
                                && o.ident == ip_ident
                                && is_copy_time(o, pkt.ts_ns, pkt.input)
                        })
                    } else {
                        let recent_syn = conn
                            .syns
                            .last()
                            .map(|s| s.pkt.ts_ns)
                            .unwrap_or(conn.first_ts);
                        pkt.ts_ns.saturating_sub(recent_syn).saturating_abs() <= SYN_JOIN_WINDOW_NS
                    };
                    if conn.client_isn == Some(isn) && join {
                        let (client, server) = if is_syn {
                            (pkt.src, pkt.dst)
                        } else {
                            (pkt.dst, pkt.src)
                        };
                        if let Some(leg) = self.add_leg(slot, client, server, pkt, false) {
                            *new_leg = true;
                            return (slot, leg);
                        }
                    }
                }
            }
            let (client, server) = if is_syn {
                (pkt.src, pkt.dst)
            } else {
                (pkt.dst, pkt.src)
            };
            let slot = self.new_conn(&pkt);
            let conn = self.slab[slot].as_mut().expect("new slot");
            conn.roles_known = true;
            conn.client_isn = Some(isn);
            if is_synack {
                conn.server_isn = Some(pkt.seq);
            }
            self.by_isn.insert(isn, slot);
            let leg = self.add_leg(slot, client, server, pkt, false).unwrap_or(0);
            return (slot, leg);
        }
        // 2. A mid-stream segment: does it continue a known connection's sequence space?
        if let Some((slot, from_client)) = self.find_by_sequence(&pkt) {
            let (client, server) = if from_client {
                (pkt.src, pkt.dst)
            } else {
                (pkt.dst, pkt.src)
            };
            if let Some(leg) = self.add_leg(slot, client, server, pkt, true) {
                *new_leg = true;
                self.stats.mid_stream_legs += 1;
                return (slot, leg);
            }
        }
        // 3. A connection whose start the capture missed: guess roles from the ports.
        let (client, server) = if pkt.src.port > pkt.dst.port {
            (pkt.src, pkt.dst)
        } else {
            (pkt.dst, pkt.src)
        };
        let slot = self.new_conn(&pkt);
        let leg = self.add_leg(slot, client, server, pkt, false).unwrap_or(0);
        (slot, leg)
    }

    fn find_by_sequence(&mut self, pkt: &PktRef) -> Option<(u32, bool)> {
        self.index_new_connections();
        let has_ack = pkt.flags & ACK != 0;
        let near = |x: u32, n: u32| seq_diff(x, n).abs() <= SEQ_JOIN_WINDOW;
        // How far the segment is from where the connection had got to (both directions), if it
        // is near enough to continue it, and the connection's id.
        let distance = |slot: u32, from_client: bool| -> Option<(u64, u64)> {
            let c = self.slab.get(slot)?;
            if !c.established && c.next_seq[0].is_none() {
                return None;
            }
            let (mine, theirs) = if from_client { (0, 1) } else { (1, 0) };
            let d = if has_ack {
                let (seq, ack) = (c.next_seq[mine]?, c.next_seq[theirs]?);
                if !near(pkt.seq, seq) || !near(pkt.ack, ack) {
                    return None;
                }
                seq_diff(pkt.seq, seq).unsigned_abs() + seq_diff(pkt.ack, ack).unsigned_abs()
            } else if c.next_seq[mine] == Some(pkt.seq) {
                // A bare RST carries only seq: demand the exact next sequence number.
                0
            } else {
                return None;
            };
            Some((d, c.id))
        };
        let check = |slot: u32, from_client: bool| distance(slot, from_client).is_some();
        let mut cut = false;
        let mut found = None;
        'sides: for from_client in [true, false] {
            let (client, server) = if from_client {
                (pkt.src, pkt.dst)
            } else {
                (pkt.dst, pkt.src)
            };
            // Same client endpoint (DNAT chose another server), newest first.
            if let Some(list) = self.new_tuple.by_client.get(&client) {
                let list = list.as_slice();
                cut |= list.len() > MAX_ENDPOINT_CANDIDATES;
                for &slot in list.iter().rev().take(MAX_ENDPOINT_CANDIDATES) {
                    if check(slot, from_client) {
                        found = Some((slot, from_client));
                        break 'sides;
                    }
                }
            }
            // Same client address and server, another port (SNAT chose another port): only the
            // connections whose sequence number in this direction is near the segment's; of those,
            // the nearest (then the oldest). Many can be near where the connections' initial
            // sequence numbers are close (an old stack's, or a scanner's), and the nearest is both
            // the likeliest and independent of the order the index lists them in.
            let dir = if from_client { 0 } else { 1 };
            let mut best: Option<((u64, u64), u32)> = None;
            let b = seq_bucket(pkt.seq);
            for bucket in [
                b,
                (b + 1) % SEQ_BUCKETS,
                (b + SEQ_BUCKETS - 1) % SEQ_BUCKETS,
            ] {
                let key = SeqWindowKey::new(client.ip, server, dir, bucket);
                let list = self
                    .new_tuple
                    .by_seq_window
                    .get(&key)
                    .map_or(&[][..], Slots::as_slice);
                for &slot in list {
                    if let Some(d) = distance(slot, from_client) {
                        if best.is_none_or(|(b, _)| d < b) {
                            best = Some((d, slot));
                        }
                    }
                }
            }
            if let Some((_, slot)) = best {
                found = Some((slot, from_client));
                break 'sides;
            }
        }
        if cut {
            self.stats.endpoint_scans_cut += 1;
        }
        found
    }

    fn new_conn(&mut self, pkt: &PktRef) -> u32 {
        let ts = pkt.ts_ns;
        if self.live >= self.max_live {
            self.evict_one(pkt);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.stats.connections += 1;
        self.live += 1;
        self.stats.peak_live = self.stats.peak_live.max(self.live);
        let mut conn = Conn::new(id, ts);
        let deadline = conn.deadline();
        conn.queued_deadline = deadline;
        let slot = match self.free.pop() {
            Some(slot) => {
                if let Some(waiting) = self.slab[slot].take() {
                    // Finalised, not drained yet (an expiry or eviction in this same packet).
                    self.parked.push((slot, waiting));
                }
                self.slab[slot] = Some(conn);
                slot
            }
            None => self.slab.push(conn),
        };
        self.deadlines.push((deadline, slot, id));
        self.half_open.push_back((slot, id));
        self.unindexed.push((slot, id));
        self.compact_queues();
        slot
    }

    /// File the live connections made since the last call in `new_tuple`, in the order they were
    /// made, each leg as `add_leg` would.
    fn index_new_connections(&mut self) {
        for (slot, id) in std::mem::take(&mut self.unindexed) {
            let Some(conn) = self.slab[slot].as_mut() else {
                continue;
            };
            if conn.finalised || conn.id != id || conn.indexed {
                continue;
            }
            conn.indexed = true;
            for leg in &conn.legs {
                self.new_tuple.file(slot, leg, &conn.next_seq);
            }
        }
    }

    /// The live cap is reached: finalise the oldest connection that never completed a handshake,
    /// or else the one whose deadline comes first. Detectors see it as they would at its expiry.
    fn evict_one(&mut self, at: &PktRef) {
        while let Some((slot, id)) = self.half_open.pop_front() {
            let Some(c) = self.slab[slot].as_ref() else {
                continue;
            };
            if c.finalised || c.id != id || c.established {
                continue;
            }
            self.stats.evicted_half_open += 1;
            self.stats.cap_reached_at.get_or_insert(*at);
            self.finalise(slot);
            return;
        }
        while let Some((deadline, slot, id)) = self.deadlines.pop() {
            let Some(c) = self.slab[slot].as_ref() else {
                continue;
            };
            if c.finalised || c.id != id || c.queued_deadline != deadline {
                continue;
            }
            self.stats.evicted_established += 1;
            self.stats.cap_reached_at.get_or_insert(*at);
            self.finalise(slot);
            return;
        }
    }

    /// The queues hold stale entries of finalised connections until they come up; rebuild them
    /// when stale entries outnumber live ones, so their size stays proportional to the live set.
    fn compact_queues(&mut self) {
        let bound = 4 * self.live as usize + 1024;
        if self.deadlines.len() > bound {
            let slab = &self.slab;
            self.deadlines.retain(|&(d, slot, id)| {
                slab[slot]
                    .as_ref()
                    .is_some_and(|c| !c.finalised && c.id == id && c.queued_deadline == d)
            });
        }
        let slab = &self.slab;
        let live_and = |slot: u32, id: u64, also: fn(&Conn) -> bool| {
            slab[slot]
                .as_ref()
                .is_some_and(|c| !c.finalised && c.id == id && also(c))
        };
        if self.unindexed.len() > bound {
            self.unindexed
                .retain(|&(slot, id)| live_and(slot, id, |c| !c.indexed));
        }
        if self.half_open.len() > bound {
            self.half_open
                .retain(|&(slot, id)| live_and(slot, id, |c| !c.established));
        }
    }

    fn add_leg(
        &mut self,
        slot: u32,
        client: Endpoint,
        server: Endpoint,
        pkt: PktRef,
        mid: bool,
    ) -> Option<u8> {
        let conn = self.slab[slot].as_mut()?;
        if conn.legs.len() >= MAX_LEGS {
            return None;
        }
        // When this packet was already seen at another point (the pre-NAT copy came first), the
        // silence that matters is the one before that first sighting.
        let dir = if pkt.src == client { 0 } else { 1 };
        // Exact continuation: the packet starts where the direction had got to, or (when its copy at an
        // earlier point was already counted) ends there.
        let seq_offset = conn.next_seq[dir]
            .map(|n| {
                let a = seq_diff(pkt.seq, n);
                let b = seq_diff(pkt.seq.wrapping_add(pkt.len), n);
                if a.abs() <= b.abs() {
                    a
                } else {
                    b
                }
            })
            .unwrap_or(i64::MAX);
        let ack_offset = conn.next_seq[1 - dir]
            .map(|n| seq_diff(pkt.ack, n))
            .unwrap_or(i64::MAX);
        let (prev, gap, copy_of_leg) = match conn.last_pkt() {
            Some(last) if same_transmission(&last, &pkt) => {
                (conn.prev_pkt(), conn.last_gap_ns, Some(conn.last_leg))
            }
            Some(last) => (Some(last), pkt.ts_ns.saturating_sub(last.ts_ns), None),
            None => (None, 0, None),
        };
        conn.legs.push(Leg {
            client,
            server,
            first: pkt,
            mid_stream: mid,
            prev: if mid { prev } else { None },
            gap_before_ns: if mid { gap } else { 0 },
            copy_of_leg,
            seq_offset,
            ack_offset,
        });
        let idx = (conn.legs.len() - 1) as u8;
        self.stats.legs += 1;
        let (key, client_is_lo) = LegKey::of(client, server);
        self.legs.insert(key, (slot, idx, client_is_lo));
        if conn.indexed {
            let leg = conn.legs.last().expect("the leg just added");
            self.new_tuple.file(slot, leg, &conn.next_seq);
        }
        Some(idx)
    }

    fn finalise(&mut self, slot: u32) {
        let Some(conn) = self.slab[slot].as_mut().filter(|c| !c.finalised) else {
            return;
        };
        conn.finalised = true;
        let conn = &*conn;
        self.live -= 1;
        self.free.push(slot);
        for leg in &conn.legs {
            let (key, _) = LegKey::of(leg.client, leg.server);
            if self.legs.get(&key).is_some_and(|&(s, _, _)| s == slot) {
                self.legs.remove(&key);
            }
            if conn.indexed {
                self.new_tuple.unfile(slot, leg, &conn.next_seq);
            }
        }
        if let Some(isn) = conn.client_isn {
            if self.by_isn.get(&isn) == Some(&slot) {
                self.by_isn.remove(&isn);
            }
        }
        self.finished.push(slot);
    }

    /// Finalise every connection whose deadline is before `now`, in the order of the deadlines.
    ///
    /// In two passes over the entries come due. The first reads each one's connection (is the
    /// entry current, is the connection still due) and looks up what `finalise` will remove (its
    /// legs, its ISN): connections that ended a capture-second or more ago, gone from the caches,
    /// whose reads do not depend on each other, so the processor overlaps them, where finalising
    /// each in turn waited for them one after another. The second finalises or requeues. Neither
    /// changes what the first read of another entry: a connection has one current entry, and
    /// finalising or requeueing it touches no other connection.
    fn expire(&mut self, now: i64) {
        let (mut due, mut due_now) = (
            std::mem::take(&mut self.due),
            std::mem::take(&mut self.due_now),
        );
        self.deadlines.take_before(now, &mut due);
        let mut looked_up = 0u32;
        for &(deadline, slot, id) in &due {
            // A stale entry (the connection is gone or has an earlier one) is `None`.
            let current = self.slab[slot]
                .as_ref()
                .filter(|c| !c.finalised && c.id == id && c.queued_deadline == deadline);
            due_now.push(current.map(|c| {
                let actual = c.deadline();
                if actual < now {
                    for leg in &c.legs {
                        let (key, _) = LegKey::of(leg.client, leg.server);
                        looked_up ^= self.legs.get(&key).map_or(0, |v| v.0);
                    }
                    if let Some(isn) = c.client_isn {
                        looked_up ^= self.by_isn.get(&isn).copied().unwrap_or(0);
                    }
                }
                actual
            }));
        }
        // Used, so that the lookups are made.
        std::hint::black_box(looked_up);
        for (&(_, slot, id), &actual) in due.iter().zip(&due_now) {
            match actual {
                Some(actual) if actual < now => self.finalise(slot),
                Some(actual) => {
                    // Not due before a later sweep: the entry is not taken again by this one.
                    let c = self.slab[slot].as_mut().expect("current in the first pass");
                    c.queued_deadline = actual;
                    self.deadlines.push((actual, slot, id));
                }
                None => {}
            }
        }
        due.clear();
        due_now.clear();
        (self.due, self.due_now) = (due, due_now);
    }
}

/// The indexes of the lookup of a segment under a new tuple (`find_by_sequence`): the connections
/// by each leg's client endpoint, and by client address, server and window of sequence space.
#[derive(Default)]
struct NewTupleIndex {
    by_client: FxHashMap<Endpoint, Slots<CLIENT_SLOTS>>,
    by_seq_window: FxHashMap<SeqWindowKey, Slots<WINDOW_SLOTS>>,
}

impl NewTupleIndex {
    /// File one leg of the connection in `slot` under its client endpoint and, for each direction
    /// whose next sequence number is known, its sequence window.
    fn file(&mut self, slot: u32, leg: &Leg, next_seq: &[Option<u32>; 2]) {
        file(&mut self.by_client, leg.client, slot);
        for dir in 0..2u8 {
            if let Some(n) = next_seq[dir as usize] {
                let key = SeqWindowKey::new(leg.client.ip, leg.server, dir, seq_bucket(n));
                file(&mut self.by_seq_window, key, slot);
            }
        }
    }

    /// Undo [`Self::file`] for the same leg and sequence numbers.
    fn unfile(&mut self, slot: u32, leg: &Leg, next_seq: &[Option<u32>; 2]) {
        if let Some(list) = self.by_client.get_mut(&leg.client) {
            if list.remove_keeping_order(slot) {
                self.by_client.remove(&leg.client);
            }
        }
        for dir in 0..2u8 {
            if let Some(n) = next_seq[dir as usize] {
                let key = SeqWindowKey::new(leg.client.ip, leg.server, dir, seq_bucket(n));
                remove_from(&mut self.by_seq_window, &key, slot);
            }
        }
    }
}

/// Move a connection's entries in the sequence-window index when its next sequence number in `dir`
/// changed bucket (or was first known).
fn reindex_seq(
    index: &mut FxHashMap<SeqWindowKey, Slots<WINDOW_SLOTS>>,
    slot: u32,
    conn: &Conn,
    dir: usize,
    old: Option<u32>,
    new: Option<u32>,
) {
    for leg in &conn.legs {
        let key = |n: u32| SeqWindowKey::new(leg.client.ip, leg.server, dir as u8, seq_bucket(n));
        if let Some(o) = old {
            remove_from(index, &key(o), slot);
        }
        if let Some(n) = new {
            file(index, key(n), slot);
        }
    }
}

fn remove_from(
    index: &mut FxHashMap<SeqWindowKey, Slots<WINDOW_SLOTS>>,
    key: &SeqWindowKey,
    slot: u32,
) {
    if let Some(list) = index.get_mut(key) {
        if list.swap_remove(slot) {
            index.remove(key);
        }
    }
}

/// A word that two sightings of one transmission share (`is_copy` compares these fields and more):
/// mostly different for different packets, pure ACKs included (their `ack` moves).
#[inline(always)]
fn copy_key(o: &Obs) -> u32 {
    o.seq ^ o.ack.rotate_left(16) ^ o.len.rotate_left(8) ^ o.ident as u32
}

/// Called for each of the 8 recent observations of every packet: the sequence number, which differs
/// for nearly every pair, is compared first so most comparisons end at once.
#[inline(always)]
fn is_copy(prev: &Obs, obs: &Obs) -> bool {
    if prev.seq != obs.seq
        || prev.ack != obs.ack
        || prev.len != obs.len
        || prev.flags != obs.flags
        || prev.ident != obs.ident
        || prev.from_client != obs.from_client
        || !prev.valid
    {
        return false;
    }
    is_copy_time(prev, obs.ts, obs.input)
}

fn is_copy_time(prev: &Obs, ts: i64, input: u16) -> bool {
    let window = if prev.input == input {
        COPY_WINDOW_NS
    } else {
        COPY_WINDOW_CROSS_INPUT_NS
    };
    ts.saturating_sub(prev.ts).saturating_abs() <= window
}

fn same_transmission(a: &PktRef, b: &PktRef) -> bool {
    a.seq == b.seq
        && a.ack == b.ack
        && a.flags == b.flags
        && a.len == b.len
        && b.ts_ns.saturating_sub(a.ts_ns).saturating_abs() <= COPY_WINDOW_CROSS_INPUT_NS
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The leg table against `std`'s map, over a long run of inserts, replacements, removals and
    /// lookups whose keys share a few hashes (long runs, probes that wrap around the table's end,
    /// removals that shift keys back across it) and grow it several times.
    #[test]
    fn the_leg_table_maps_as_a_hash_map_does() {
        let key = |id: u64, hash: u64| LegKey {
            hash,
            lo: [id, 0],
            hi: [id.wrapping_mul(31), 1],
            ports: id << 16,
        };
        let mut table = LegTable::default();
        let mut model: std::collections::HashMap<LegKey, (u32, u8, bool)> = Default::default();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for step in 0..200_000u32 {
            let r = next();
            let id = r % 3_000;
            // Few homes: a hash near the top of a small table wraps to its start.
            let hash = match r >> 60 {
                0..=5 => u64::MAX - (id % 7),
                6..=11 => id % 13,
                _ => id.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            };
            let k = key(id, hash);
            match (r >> 40) % 4 {
                0 | 1 => {
                    let v = (step, (id % 5) as u8, r & 1 == 0);
                    table.insert(k, v);
                    model.insert(k, v);
                }
                2 => {
                    table.remove(&k);
                    model.remove(&k);
                }
                _ => assert_eq!(table.get(&k), model.get(&k), "step {step}"),
            }
            assert_eq!(table.len, model.len(), "step {step}");
            assert!(table.len * 2 <= table.buckets.len().max(1));
        }
        for (k, v) in &model {
            assert_eq!(table.get(k), Some(v));
        }
        table.clear();
        assert!(model.keys().all(|k| table.get(k).is_none()));
        assert_eq!(table.len, 0);
    }

    pub(crate) fn endpoint(ip: [u8; 4], port: u16) -> Endpoint {
        Endpoint {
            ip: IpAddr::from(ip),
            port,
        }
    }

    /// One segment without payload or options into `engine`: (source, destination), flags,
    /// (sequence, acknowledgement); its packet reference. Every segment carries IP identification
    /// 7, so that the same segment seen at two points is a copy.
    pub(crate) fn segment(
        engine: &mut TcpEngine,
        (frame, ts_ns): (u64, i64),
        (src, dst): (Endpoint, Endpoint),
        flags: u8,
        (seq, ack): (u32, u32),
    ) -> PktRef {
        let at = (None, 7, 64);
        segment_at(engine, (frame, ts_ns), (src, dst), flags, (seq, ack), at)
    }

    /// [`segment`] seen on interface `ifindex` with IP identification `ident` and TTL `ttl`.
    pub(crate) fn segment_at(
        engine: &mut TcpEngine,
        (frame, ts_ns): (u64, i64),
        (src, dst): (Endpoint, Endpoint),
        flags: u8,
        (seq, ack): (u32, u32),
        (ifindex, ident, ttl): (Option<u32>, u16, u8),
    ) -> PktRef {
        let pkt = PktRef {
            input: 0,
            frame,
            ts_ns,
            src,
            dst,
            flags,
            len: 0,
            seq,
            ack,
            ifindex,
        };
        engine.packet(&pkt, ident, ttl, || None);
        pkt
    }

    /// A connection seen before and after DNAT (`-i any`, interfaces 3 and 2): its SYN-ACK arrives
    /// with TTL 64 at both points; RSTs from the server's side are compared with the SYN-ACK seen
    /// on their leg at their point, every sighting, copies included.
    #[test]
    fn a_rst_whose_ttl_is_not_the_syn_acks_at_the_same_point_is_kept() {
        let (client, service, backend) = (
            endpoint([10, 0, 0, 1], 40000),
            endpoint([10, 96, 0, 10], 80),
            endpoint([10, 244, 0, 5], 8080),
        );
        // (frame, ts), (src, dst), flags, (seq, ack), ifindex, TTL; copies of one transmission share
        // their IP identification.
        let seen = |engine: &mut TcpEngine, at, tuple, flags, (seq, ack), ifindex, ttl| {
            let ident = (seq as u16) ^ u16::from(flags);
            segment_at(
                engine,
                at,
                tuple,
                flags,
                (seq, ack),
                (Some(ifindex), ident, ttl),
            )
        };
        let mut engine = TcpEngine::new();
        let syn_ack = SYN | ACK;
        #[rustfmt::skip]
        let sightings = [
            ((1, 0), (client, service), SYN, (100, 0), 3, 64),
            ((2, 1_000), (client, backend), SYN, (100, 0), 2, 63),
            // The SYN-ACK twice at the backend's point (the later one counts), once before
            // un-DNAT.
            ((3, 2_000), (backend, client), syn_ack, (500, 101), 2, 60),
            ((4, 3_000), (backend, client), syn_ack, (500, 101), 2, 64),
            ((5, 4_000), (service, client), syn_ack, (500, 101), 3, 63),
            ((6, 5_000), (client, service), ACK, (101, 501), 3, 64),
            // A RST from the server's side with the server's TTL at the backend's point: nothing;
            // its copy after un-DNAT with another TTL than the SYN-ACK's there: kept, the first
            // such sighting only.
            ((7, 9_000), (backend, client), RST, (501, 0), 2, 64),
            ((8, 9_500), (service, client), RST, (501, 0), 3, 250),
            ((9, 9_600), (service, client), RST, (501, 0), 4, 251),
            // A RST from the client's side: no SYN-ACK came from there, nothing to compare.
            ((10, 9_800), (client, service), RST, (101, 0), 3, 10),
        ];
        for (at, tuple, flags, seq_ack, ifindex, ttl) in sightings {
            seen(&mut engine, at, tuple, flags, seq_ack, ifindex, ttl);
        }
        let live = engine.finish();
        let conns: Vec<_> = live.iter().collect();
        assert_eq!(conns.len(), 1);
        let c = conns[0];
        let sightings: Vec<_> = c.synack_ttls.sightings().collect();
        assert_eq!(
            sightings,
            vec![(1, false, 0, Some(2), 64), (0, false, 0, Some(3), 63)]
        );
        assert_eq!(c.rsts.len(), 2);
        assert_eq!(
            c.rsts[0].ttl_differs,
            Some(TtlDiffers {
                ts_ns: 9_500,
                rst_ttl: 250,
                synack_ttl: 63
            })
        );
        assert_eq!(c.rsts[1].ttl_differs, None);
    }

    /// SYN-ACK TTLs: first-seen order, a place seen again updated in place, at most
    /// `MAX_TTL_POINTS` kept, across the inline part and the rest.
    #[test]
    fn syn_ack_ttls_keep_first_seen_order_update_in_place_and_stop_at_the_cap() {
        let mut ttls = SynAckTtls::default();
        let place = |i: usize| ((i % 3) as u8, i % 2 == 0, i as u16, Some(100 + i as u32));
        for i in 0..MAX_TTL_POINTS + 4 {
            let (leg, from_client, input, ifindex) = place(i);
            ttls.set(leg, from_client, input, ifindex, 60);
        }
        for (i, ttl) in [(1, 61), (6, 62), (MAX_TTL_POINTS + 1, 63)] {
            let (leg, from_client, input, ifindex) = place(i);
            ttls.set(leg, from_client, input, ifindex, ttl);
        }
        let mut expected: Vec<_> = (0..MAX_TTL_POINTS)
            .map(|i| {
                let (leg, from_client, input, ifindex) = place(i);
                (leg, from_client, input, ifindex, 60)
            })
            .collect();
        expected[1].4 = 61;
        expected[6].4 = 62;
        assert_eq!(ttls.sightings().collect::<Vec<_>>(), expected);
        let (leg, from_client, input, ifindex) = place(6);
        assert_eq!(ttls.at(leg, from_client, input, ifindex), Some(62));
        assert_eq!(ttls.at(leg, from_client, input, None), None);
        assert_eq!(ttls.at(leg, !from_client, input, ifindex), None);
        let (leg, from_client, input, ifindex) = place(MAX_TTL_POINTS + 1);
        assert_eq!(ttls.at(leg, from_client, input, ifindex), None);
    }

    /// Client endpoints `a` and `b` and their server.
    fn two_clients_and_a_server() -> (Endpoint, Endpoint, Endpoint) {
        (
            endpoint([10, 0, 0, 1], 40000),
            endpoint([10, 0, 0, 3], 40001),
            endpoint([10, 0, 0, 2], 80),
        )
    }

    /// The expiry sweep run by a packet finalises a connection and the same packet's new connection
    /// takes the slot it freed: the finished one is handed over whole, before the new one, which
    /// stays live in the slot.
    #[test]
    fn a_finished_connection_whose_slot_is_taken_before_the_drain_is_handed_over_whole() {
        let mut engine = TcpEngine::new();
        let (a, b, server) = two_clients_and_a_server();
        // Connection 0: a SYN refused by a RST, finalised when its linger (3 s) is over.
        segment(&mut engine, (1, 0), (a, server), SYN, (100, 0));
        segment(&mut engine, (2, 1_000), (server, a), RST | ACK, (0, 101));
        engine.drain_finished(|_| panic!("nothing has finished yet"));
        // Ten seconds on, another client's SYN: its sweep finalises connection 0, and the new
        // connection takes slot 0 before anything is drained.
        segment(&mut engine, (3, 10_000_000_000), (b, server), SYN, (500, 0));
        let mut drained = Vec::new();
        engine.drain_finished(|c| drained.push(c.take().expect("a finished connection")));
        assert_eq!(drained.len(), 1);
        assert_eq!((drained[0].id, drained[0].legs[0].client), (0, a));
        assert_eq!(drained[0].rst_count, 1);
        assert_eq!(
            engine.conn(0).map(|c| (c.id, c.legs[0].client)),
            Some((1, b))
        );
        engine.drain_finished(|_| panic!("drained already"));
        let live: Vec<u64> = engine.finish().iter().map(|c| c.id).collect();
        assert_eq!(live, vec![1]);
    }

    /// The indexes of the new-tuple lookup are filled only when a segment under a new tuple comes:
    /// then with every live connection (one whose handshake was seen before it is joined by
    /// its sequence numbers), and never with a finished one.
    #[test]
    fn connections_are_filed_for_the_new_tuple_lookup_when_it_comes() {
        let mut engine = TcpEngine::new();
        let (a, b, server) = two_clients_and_a_server();
        segment(&mut engine, (1, 0), (a, server), SYN, (1000, 0));
        segment(
            &mut engine,
            (2, 1_000),
            (server, a),
            SYN | ACK,
            (5000, 1001),
        );
        segment(&mut engine, (3, 2_000), (a, server), ACK, (1001, 5001));
        // A refused connection, finished before any lookup.
        segment(&mut engine, (4, 3_000), (b, server), SYN, (9000, 0));
        segment(&mut engine, (5, 4_000), (server, b), RST | ACK, (0, 9001));
        segment(
            &mut engine,
            (6, 5_000_000_000),
            (a, server),
            ACK,
            (1001, 5001),
        );
        let mut finished = Vec::new();
        engine.drain_finished(|c| finished.push(c.take().expect("finished").id));
        assert_eq!(finished, vec![1]);
        assert!(engine.new_tuple.by_client.is_empty() && engine.new_tuple.by_seq_window.is_empty());
        assert_eq!(engine.unindexed.len(), 2);
        // The client's port changed (SNAT chose another): found by its sequence numbers.
        let a2 = endpoint([10, 0, 0, 1], 50000);
        segment(&mut engine, (7, 5_001_000), (a2, server), ACK, (1001, 5001));
        assert_eq!(engine.stats.mid_stream_legs, 1);
        assert_eq!(engine.conn(0).map(|c| c.legs.len()), Some(2));
        assert!(engine.unindexed.is_empty());
        let filed = |e: &TcpEngine, ep: &Endpoint| {
            e.new_tuple.by_client.get(ep).map(|l| l.as_slice().to_vec())
        };
        assert_eq!(filed(&engine, &a), Some(vec![0]));
        assert_eq!(
            filed(&engine, &a2),
            Some(vec![0]),
            "a leg added later is filed at once"
        );
        assert_eq!(filed(&engine, &b), None);
        // Both legs (one client address, one server: one key a direction), both directions.
        assert_eq!(engine.new_tuple.by_seq_window.len(), 2);
        assert!(engine
            .new_tuple
            .by_seq_window
            .values()
            .all(|l| l.as_slice() == [0, 0]));
    }

    /// Two live connections of one client address and server whose sequence numbers are both
    /// near a segment under a new tuple: it joins the nearer, whichever was filed first.
    #[test]
    fn a_segment_under_a_new_tuple_joins_the_nearest_connection() {
        for (seq, ack, expected) in [(3001, 7001, 1), (1001, 5001, 0), (2990, 6990, 1)] {
            let mut engine = TcpEngine::new();
            let server = endpoint([10, 0, 0, 2], 80);
            for (i, (isn, server_isn)) in [(1000, 5000), (3000, 7000)].into_iter().enumerate() {
                let client = endpoint([10, 0, 0, 1], 40000 + i as u16);
                let f = 3 * i as u64;
                segment(&mut engine, (f, f as i64), (client, server), SYN, (isn, 0));
                let syn_ack = (server_isn, isn + 1);
                segment(
                    &mut engine,
                    (f + 1, f as i64 + 1),
                    (server, client),
                    SYN | ACK,
                    syn_ack,
                );
                let ack = (isn + 1, server_isn + 1);
                segment(
                    &mut engine,
                    (f + 2, f as i64 + 2),
                    (client, server),
                    ACK,
                    ack,
                );
            }
            let moved = endpoint([10, 0, 0, 1], 50000);
            segment(&mut engine, (9, 9), (moved, server), ACK, (seq, ack));
            assert_eq!(engine.stats.mid_stream_legs, 1);
            let joined: Vec<u64> = (0..2)
                .filter_map(|slot| engine.conn(slot))
                .filter(|c| c.legs.len() == 2)
                .map(|c| c.id)
                .collect();
            assert_eq!(joined, vec![expected], "seq {seq} ack {ack}");
        }
    }

    /// Without any new-tuple lookup, the connections waiting to be filed are pruned like the
    /// expiry queues: their number stays proportional to the live ones.
    #[test]
    fn connections_waiting_to_be_filed_stay_proportional_to_the_live_ones() {
        let mut engine = TcpEngine::new();
        let server = endpoint([10, 0, 0, 2], 80);
        let mut most = 0;
        for i in 0..20_000u32 {
            let client = endpoint([10, 1, (i >> 8) as u8, i as u8], 40000);
            let ts = i as i64 * 1_000_000;
            segment(
                &mut engine,
                (2 * i as u64, ts),
                (client, server),
                SYN,
                (i, 0),
            );
            segment(
                &mut engine,
                (2 * i as u64 + 1, ts + 1),
                (server, client),
                RST | ACK,
                (0, i + 1),
            );
            engine.drain_finished(|_| {});
            let bound = 4 * engine.live_connections() as usize + 1024;
            assert!(
                engine.unindexed.len() <= bound + 1,
                "{} waiting",
                engine.unindexed.len()
            );
            most = most.max(engine.unindexed.len());
        }
        assert!(most > 1024, "the pruning was reached ({most})");
        assert!(engine.new_tuple.by_client.is_empty() && engine.new_tuple.by_seq_window.is_empty());
    }

    #[test]
    fn slot_lists_keep_their_order_like_a_vec() {
        let mut index: FxHashMap<u8, Slots<3>> = FxHashMap::default();
        for s in [7, 3, 9, 3, 5] {
            file(&mut index, 1, s);
        }
        file(&mut index, 2, 4);
        assert_eq!(index[&1].as_slice(), &[7, 3, 9, 3, 5]);
        assert!(matches!(index[&1], Slots::Spilled(_)));
        assert_eq!(index[&2].as_slice(), &[4]);
        // `remove_keeping_order` is `Vec::retain` (every copy goes); `swap_remove` takes the first.
        let mut a = index[&1].clone();
        assert!(!a.remove_keeping_order(3));
        assert_eq!(a.as_slice(), &[7, 9, 5]);
        let mut b = index[&1].clone();
        assert!(!b.swap_remove(7));
        assert_eq!(b.as_slice(), &[5, 3, 9, 3]);
        // A slot not in the list changes nothing; the last one empties it.
        let mut one = index[&2].clone();
        assert!(!one.swap_remove(8));
        assert!(!one.remove_keeping_order(8));
        assert_eq!(one.as_slice(), &[4]);
        assert!(one.clone().swap_remove(4));
        assert!(one.remove_keeping_order(4));
        let mut two = Slots::<3>::one(1);
        two.push(2);
        assert!(!two.swap_remove(1));
        assert!(two.swap_remove(2));
    }

    /// Any sequence of pushes and removals leaves the same list as a `Vec` would, whether the list
    /// is in place, spilled, or crossed between the two on the way.
    #[test]
    fn slot_lists_in_place_or_spilled_match_a_vec_step_by_step() {
        fn run<const N: usize>(seed: u64) {
            let mut model: Vec<u32> = Vec::new();
            let mut list: Option<Slots<N>> = None;
            let mut x = seed;
            let mut spilled = 0;
            let mut back_in_place = 0;
            for _ in 0..4000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let slot = (x >> 8) as u32 % 9;
                let was_spilled = matches!(list, Some(Slots::Spilled(_)));
                match x % 8 {
                    0..=3 => {
                        model.push(slot);
                        match list.as_mut() {
                            Some(l) => l.push(slot),
                            None => list = Some(Slots::one(slot)),
                        }
                    }
                    4 | 5 => {
                        let Some(l) = list.as_mut() else { continue };
                        if let Some(i) = model.iter().position(|&s| s == slot) {
                            model.swap_remove(i);
                        }
                        assert_eq!(l.swap_remove(slot), model.is_empty());
                    }
                    _ => {
                        let Some(l) = list.as_mut() else { continue };
                        model.retain(|&s| s != slot);
                        assert_eq!(l.remove_keeping_order(slot), model.is_empty());
                    }
                }
                if model.is_empty() {
                    list = None; // the index drops an emptied key
                }
                let now_spilled = matches!(list, Some(Slots::Spilled(_)));
                spilled += (!was_spilled && now_spilled) as u32;
                back_in_place += (was_spilled && !now_spilled) as u32;
                assert_eq!(list.as_ref().map_or(&[][..], Slots::as_slice), &model[..]);
                if let Some(Slots::Inline { len, .. }) = &list {
                    assert!(*len as usize <= N);
                }
            }
            assert!(
                spilled > 0 && back_in_place > 0,
                "N={N}: both forms were crossed"
            );
        }
        for seed in [1, 0x9E37_79B9, 0xDEAD_BEEF_1234] {
            run::<4>(seed);
            run::<3>(seed);
            run::<5>(seed);
        }
    }

    #[test]
    fn a_leg_key_has_no_direction_and_says_which_end_a_packet_came_from() {
        let ep = |ip: IpAddr, port| Endpoint { ip, port };
        let v4 = |a: [u8; 4]| IpAddr::from(a);
        let client = ep(v4([10, 0, 0, 2]), 40000);
        let server = ep(v4([10, 0, 0, 1]), 80);
        let (k1, client_lo) = LegKey::of(client, server);
        let (k2, server_lo) = LegKey::of(server, client);
        assert_eq!(k1, k2);
        assert_ne!(client_lo, server_lo);
        // The same address on both ends: ordered by port.
        let (k3, lo) = LegKey::of(ep(v4([10, 0, 0, 1]), 80), ep(v4([10, 0, 0, 1]), 81));
        assert!(lo);
        assert_ne!(k3, k1);
        // One endpoint on both ends (hostile input): either order is "from the lo end".
        assert!(LegKey::of(client, client).1);
        // The IPv4 path gives what the general path gives: an IPv4 key differs from the key of
        // the same addresses mapped into IPv6 only by the family bit and the high words.
        let mapped = |e: Endpoint| match e.ip {
            IpAddr::V4(a) => ep(IpAddr::V6(a.to_ipv6_mapped()), e.port),
            IpAddr::V6(_) => e,
        };
        let (k6, lo6) = LegKey::of(mapped(client), mapped(server));
        assert_eq!(lo6, client_lo);
        assert_ne!(k6, k1);
        assert_eq!(k6.ports & !(1 << 32), k1.ports);
        assert_eq!(
            (k6.lo[0] as u32, k6.hi[0] as u32),
            (k1.lo[0] as u32, k1.hi[0] as u32)
        );
        assert_eq!(
            k1.hash,
            widen_leg_hash(fold_leg_hash(mix3(0x0a00_0001, 0x0a00_0002, k1.ports)))
        );
        // The hash made apart (the pipeline's reading thread) is the key's, either way round.
        let (a, b) = (0x0a00_0002, 0x0a00_0001);
        for (x, xp, y, yp) in [(a, 40000, b, 80), (b, 80, a, 40000)] {
            let hash = leg_hash_v4(x, xp, y, yp);
            let key = LegKey::of_v4_hashed(x, xp, y, yp, hash);
            let (ex, ey) = (ep(v4(x.to_be_bytes()), xp), ep(v4(y.to_be_bytes()), yp));
            assert_eq!((key, hash.a_is_lo), LegKey::of(ex, ey));
        }
    }

    #[test]
    fn sequence_window_keys_tell_families_ports_and_directions_apart() {
        let v4 = |a: [u8; 4], port| Endpoint {
            ip: IpAddr::from(a),
            port,
        };
        let mapped = Endpoint {
            ip: IpAddr::from(std::net::Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped()),
            port: 80,
        };
        let a = v4([10, 0, 0, 1], 80);
        let k = |ip, server, dir, bucket| SeqWindowKey::new(ip, server, dir, bucket);
        let c = IpAddr::from([10, 0, 0, 2]);
        assert_eq!(k(c, a, 0, 5), k(c, a, 0, 5));
        assert_ne!(k(c, a, 0, 5), k(c, a, 1, 5));
        assert_ne!(k(c, a, 0, 5), k(c, a, 0, 6));
        assert_ne!(k(c, a, 0, 5), k(c, v4([10, 0, 0, 1], 81), 0, 5));
        assert_ne!(k(c, a, 0, 5), k(c, mapped, 0, 5));
    }
}

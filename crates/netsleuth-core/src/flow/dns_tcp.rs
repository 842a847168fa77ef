//! DNS over TCP: the 2-byte-length-prefixed message stream of each TCP direction, reassembled in
//! sequence order.
//!
//! One stream per direction (`src` → `dst` endpoint pair). Bytes are taken in sequence order; a
//! segment entirely before the next expected byte is a retransmission and ignored, one that overlaps
//! contributes only its new tail.
//!
//! Resynchronisation heuristic: when bytes are missing (a sequence hole, a segment cut by the snap
//! length, a capture that starts mid-connection), the partial message is dropped and the stream waits
//! for a segment that *starts* a message: its first two bytes give a length of at least 12 (a DNS
//! header) and, when the header is captured, it looks like DNS (opcode 0–6, QDCOUNT ≤ 1, section counts
//! that fit in the length). Messages that straddle a hole are lost; messages after it are found again.
//! Out-of-order segments are not buffered (like tshark's default), so a segment that arrives before its
//! predecessor counts as a hole.
//!
//! Memory: a stream holds at most one incomplete message (≤ 2 + 65535 bytes); the number of streams is
//! capped (least recently used evicted first); RST forgets a stream; FIN frees its buffer and keeps a
//! small tombstone so that retransmissions after the FIN are not taken for new messages.

use super::{seq_diff, Endpoint, FxHashMap};
use crate::wire::{tcp_flags, TcpSegment};

/// Default cap on tracked directions.
pub const DEFAULT_MAX_STREAMS: usize = 4096;

/// A DNS message completed by a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsTcpMessage {
    /// The message without its length prefix (parse it with `wire::dns::parse`).
    pub bytes: Vec<u8>,
    /// Frame whose segment completed the message (where tshark reports it).
    pub frame: u64,
    /// Frame whose segment carried the message's first byte.
    pub first_frame: u64,
}

/// What the reassembler skipped, for the input's accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DnsTcpStats {
    /// Sequence holes (or captured bytes missing) that dropped a partial message or the stream's sync.
    pub gaps: u64,
    /// Times a stream found a message start again after losing sync (or joined mid-connection).
    pub resyncs: u64,
    /// Segments whose bytes were all seen before.
    pub retransmissions: u64,
    /// Length prefixes below 12 (not DNS framing): the stream lost sync there.
    pub bad_lengths: u64,
    /// Streams dropped because the cap was reached.
    pub evicted: u64,
}

#[derive(Debug)]
struct Stream {
    /// The next sequence number we expect.
    next_seq: u32,
    /// The stream position is at a message boundary or inside the message in `buf`.
    synced: bool,
    /// FIN seen: everything after `next_seq` is ignored until a new SYN.
    closed: bool,
    /// Bytes of the incomplete message, length prefix included.
    buf: Vec<u8>,
    first_frame: u64,
    last_used: u64,
}

/// Reassembles DNS messages from TCP segments of any number of connections.
#[derive(Debug)]
pub struct DnsTcpReassembler {
    streams: FxHashMap<(Endpoint, Endpoint), Stream>,
    max_streams: usize,
    stats: DnsTcpStats,
    /// Monotonic use counter for least-recently-used eviction.
    clock: u64,
}

impl Default for DnsTcpReassembler {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether `p` plausibly starts a length-prefixed DNS message.
fn looks_like_message_start(p: &[u8]) -> bool {
    let Some(l) = p.get(..2) else { return false };
    let len = u16::from_be_bytes([l[0], l[1]]) as usize;
    if len < 12 {
        return false;
    }
    let Some(h) = p.get(2..14) else { return true };
    let be = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]) as usize;
    let opcode = (h[2] >> 3) & 0x0F;
    let (qd, an, ns, ar) = (be(4), be(6), be(8), be(10));
    // A question takes at least 5 bytes, a record at least 11.
    opcode <= 6 && qd <= 1 && 12 + qd * 5 + (an + ns + ar) * 11 <= len
}

impl DnsTcpReassembler {
    pub fn new() -> Self {
        Self::with_max_streams(DEFAULT_MAX_STREAMS)
    }

    pub fn with_max_streams(max_streams: usize) -> Self {
        DnsTcpReassembler {
            streams: FxHashMap::default(),
            max_streams: max_streams.max(1),
            stats: DnsTcpStats::default(),
            clock: 0,
        }
    }

    pub fn stats(&self) -> DnsTcpStats {
        self.stats
    }

    /// Directions currently tracked.
    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }

    /// Bytes held in incomplete messages.
    pub fn buffered_bytes(&self) -> usize {
        self.streams.values().map(|s| s.buf.len()).sum()
    }

    /// Feed one TCP segment of the `src` → `dst` direction; returns the messages it completed.
    pub fn push(
        &mut self,
        src: Endpoint,
        dst: Endpoint,
        seg: &TcpSegment<'_>,
        frame: u64,
    ) -> Vec<DnsTcpMessage> {
        self.push_raw(
            src,
            dst,
            seg.seq,
            seg.flags,
            seg.payload,
            seg.payload_len,
            frame,
        )
    }

    /// `push` with the fields spelled out: `payload` is what was captured, `sent_len` what the
    /// segment carried (larger when the snap length cut it).
    #[allow(clippy::too_many_arguments)]
    pub fn push_raw(
        &mut self,
        src: Endpoint,
        dst: Endpoint,
        seq: u32,
        flags: u8,
        payload: &[u8],
        sent_len: u32,
        frame: u64,
    ) -> Vec<DnsTcpMessage> {
        let key = (src, dst);
        let mut out = Vec::new();
        if flags & tcp_flags::RST != 0 {
            self.streams.remove(&key);
            return out;
        }
        self.clock += 1;
        let clock = self.clock;
        let syn = flags & tcp_flags::SYN != 0;
        // Data starts after the SYN's sequence number.
        let data_seq = if syn { seq.wrapping_add(1) } else { seq };
        if syn {
            self.insert(
                key,
                Stream {
                    next_seq: data_seq,
                    synced: true,
                    closed: false,
                    buf: Vec::new(),
                    first_frame: frame,
                    last_used: clock,
                },
            );
        } else if !self.streams.contains_key(&key) {
            if payload.is_empty() {
                return out;
            }
            // Joining mid-connection: wait for a message start.
            self.insert(
                key,
                Stream {
                    next_seq: data_seq,
                    synced: false,
                    closed: false,
                    buf: Vec::new(),
                    first_frame: frame,
                    last_used: clock,
                },
            );
        }
        let Some(stream) = self.streams.get_mut(&key) else {
            return out;
        };
        stream.last_used = clock;
        let stats = &mut self.stats;

        let mut data = payload;
        let sent_len = sent_len.max(payload.len() as u32);
        let d = seq_diff(data_seq, stream.next_seq);
        if stream.closed {
            if d >= 0 && !data.is_empty() {
                // Data after our FIN's sequence: a new use of the 4-tuple without a SYN we saw.
                stream.closed = false;
                stream.synced = false;
            } else {
                if !data.is_empty() {
                    stats.retransmissions += 1;
                }
                return out;
            }
        }
        if d > 0 {
            // A hole before this segment.
            if stream.synced {
                stats.gaps += 1;
            }
            stream.buf.clear();
            stream.synced = false;
        } else if d < 0 {
            let seen = (-d) as u64;
            if seen >= data.len() as u64 {
                if !data.is_empty() {
                    stats.retransmissions += 1;
                }
                if flags & tcp_flags::FIN != 0 {
                    Self::close(stream, data_seq.wrapping_add(sent_len));
                }
                return out;
            }
            data = &data[seen as usize..];
        }
        if !stream.synced && !data.is_empty() {
            if looks_like_message_start(data) {
                stream.synced = true;
                stream.buf.clear();
                stats.resyncs += 1;
            } else {
                stream.next_seq = data_seq.wrapping_add(sent_len);
                if flags & tcp_flags::FIN != 0 {
                    Self::close(stream, stream.next_seq);
                }
                return out;
            }
        }
        // The new bytes end where the segment ends.
        stream.next_seq = data_seq.wrapping_add(sent_len);

        while !data.is_empty() {
            if stream.buf.is_empty() {
                stream.first_frame = frame;
                // Fast path: whole messages straight from the segment.
                if let Some(l) = data.get(..2) {
                    let len = u16::from_be_bytes([l[0], l[1]]) as usize;
                    if len < 12 {
                        stats.bad_lengths += 1;
                        stream.synced = false;
                        break;
                    }
                    if let Some(msg) = data.get(2..2 + len) {
                        out.push(DnsTcpMessage {
                            bytes: msg.to_vec(),
                            frame,
                            first_frame: frame,
                        });
                        data = &data[2 + len..];
                        continue;
                    }
                }
            }
            if stream.buf.len() < 2 {
                let take = (2 - stream.buf.len()).min(data.len());
                stream.buf.extend_from_slice(&data[..take]);
                data = &data[take..];
                if stream.buf.len() < 2 {
                    break;
                }
                let len = u16::from_be_bytes([stream.buf[0], stream.buf[1]]) as usize;
                if len < 12 {
                    stats.bad_lengths += 1;
                    stream.buf.clear();
                    stream.synced = false;
                    break;
                }
            }
            let len = u16::from_be_bytes([stream.buf[0], stream.buf[1]]) as usize;
            let take = (2 + len - stream.buf.len()).min(data.len());
            stream.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if stream.buf.len() == 2 + len {
                out.push(DnsTcpMessage {
                    bytes: stream.buf[2..].to_vec(),
                    frame,
                    first_frame: stream.first_frame,
                });
                stream.buf.clear();
            }
        }
        if (payload.len() as u32) < sent_len && stream.synced {
            // The snap length cut the segment: the rest of its bytes are unknown.
            stats.gaps += 1;
            stream.buf.clear();
            stream.synced = false;
        }
        if stream.buf.is_empty() && stream.buf.capacity() > 4096 {
            stream.buf = Vec::new();
        }
        if flags & tcp_flags::FIN != 0 {
            Self::close(stream, stream.next_seq.wrapping_add(1));
        }
        out
    }

    fn close(stream: &mut Stream, next_seq: u32) {
        stream.closed = true;
        stream.synced = false;
        stream.next_seq = next_seq;
        stream.buf = Vec::new();
    }

    fn insert(&mut self, key: (Endpoint, Endpoint), stream: Stream) {
        if !self.streams.contains_key(&key) && self.streams.len() >= self.max_streams {
            let oldest = self
                .streams
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                self.streams.remove(&k);
                self.stats.evicted += 1;
            }
        }
        self.streams.insert(key, stream);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::tcp_flags::{ACK, FIN, PSH, RST, SYN};
    use std::net::{IpAddr, Ipv4Addr};

    fn ep(last: u8, port: u16) -> Endpoint {
        Endpoint {
            ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)),
            port,
        }
    }

    /// A minimal query message of `n` bytes (n >= 17) with the given id.
    fn msg(id: u16, n: usize) -> Vec<u8> {
        let mut m = vec![(id >> 8) as u8, id as u8, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(b"\x00\x00\x01\x00\x01");
        m.resize(n, 0);
        m
    }

    fn framed(m: &[u8]) -> Vec<u8> {
        let mut v = (m.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(m);
        v
    }

    struct Conn {
        r: DnsTcpReassembler,
        seq: u32,
        frame: u64,
    }

    impl Conn {
        fn new() -> Self {
            let mut r = DnsTcpReassembler::new();
            r.push_raw(ep(1, 40000), ep(2, 53), 999, SYN, &[], 0, 1);
            Conn {
                r,
                seq: 1000,
                frame: 1,
            }
        }
        fn send(&mut self, bytes: &[u8]) -> Vec<DnsTcpMessage> {
            self.frame += 1;
            let out = self.r.push_raw(
                ep(1, 40000),
                ep(2, 53),
                self.seq,
                ACK | PSH,
                bytes,
                bytes.len() as u32,
                self.frame,
            );
            self.seq = self.seq.wrapping_add(bytes.len() as u32);
            out
        }
    }

    #[test]
    fn one_message_per_segment() {
        let mut c = Conn::new();
        let m = msg(7, 30);
        let out = c.send(&framed(&m));
        assert_eq!(
            out,
            vec![DnsTcpMessage {
                bytes: m,
                frame: 2,
                first_frame: 2
            }]
        );
    }

    #[test]
    fn several_messages_in_one_segment_and_one_over_several() {
        let mut c = Conn::new();
        let (a, b, x) = (msg(1, 20), msg(2, 40), msg(3, 300));
        let mut bytes = framed(&a);
        bytes.extend(framed(&b));
        let fx = framed(&x);
        bytes.extend_from_slice(&fx[..1]);
        let out = c.send(&bytes);
        assert_eq!(
            out.iter().map(|m| m.bytes.clone()).collect::<Vec<_>>(),
            vec![a, b]
        );
        assert!(c.send(&fx[1..100]).is_empty());
        let out = c.send(&fx[100..]);
        assert_eq!(
            out,
            vec![DnsTcpMessage {
                bytes: x,
                frame: 4,
                first_frame: 2
            }]
        );
        assert_eq!(c.r.buffered_bytes(), 0);
    }

    #[test]
    fn retransmissions_and_overlaps_do_not_duplicate() {
        let mut c = Conn::new();
        let m = framed(&msg(9, 60));
        assert!(c.send(&m[..30]).is_empty());
        // Retransmit the first 30 bytes plus 10 new ones.
        c.seq = 1000;
        assert!(c.send(&m[..40]).is_empty());
        c.seq = 1000;
        let out = c.send(&m);
        assert_eq!(out.len(), 1);
        c.seq = 1000;
        assert!(c.send(&m).is_empty());
        assert_eq!(c.r.stats().retransmissions, 1);
    }

    #[test]
    fn a_hole_drops_the_partial_message_and_resyncs_on_the_next_start() {
        let mut c = Conn::new();
        let lost = framed(&msg(1, 100));
        assert!(c.send(&lost[..50]).is_empty());
        c.seq = c.seq.wrapping_add(50); // the rest of it never shows up
        let m = msg(2, 25);
        let out = c.send(&framed(&m));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].bytes, m);
        assert_eq!(c.r.stats().gaps, 1);
        assert_eq!(c.r.stats().resyncs, 1);
    }

    #[test]
    fn mid_stream_join_waits_for_a_message_start() {
        let mut r = DnsTcpReassembler::new();
        let m = framed(&msg(5, 40));
        // A tail of some message first: not a start (its first two bytes are no DNS length).
        let tail = [0u8, 5, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(r
            .push_raw(ep(1, 1), ep(2, 53), 5000, ACK, &tail, 16, 1)
            .is_empty());
        let out = r.push_raw(ep(1, 1), ep(2, 53), 5016, ACK, &m, m.len() as u32, 2);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn snaplen_cut_segment_loses_sync_until_the_next_start() {
        let mut r = DnsTcpReassembler::new();
        r.push_raw(ep(1, 1), ep(2, 53), 0, SYN, &[], 0, 1);
        let m = framed(&msg(5, 200));
        assert!(r
            .push_raw(ep(1, 1), ep(2, 53), 1, ACK, &m[..60], m.len() as u32, 2)
            .is_empty());
        let m2 = framed(&msg(6, 30));
        let out = r.push_raw(
            ep(1, 1),
            ep(2, 53),
            1 + m.len() as u32,
            ACK,
            &m2,
            m2.len() as u32,
            3,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(r.stats().gaps, 1);
    }

    #[test]
    fn rst_forgets_and_fin_ignores_retransmissions() {
        let mut c = Conn::new();
        let m = framed(&msg(1, 30));
        c.frame += 1;
        let out = c.r.push_raw(
            ep(1, 40000),
            ep(2, 53),
            c.seq,
            ACK | FIN,
            &m,
            m.len() as u32,
            c.frame,
        );
        assert_eq!(out.len(), 1);
        // The same FIN segment again: a retransmission, not a new message.
        let out = c.r.push_raw(
            ep(1, 40000),
            ep(2, 53),
            c.seq,
            ACK | FIN,
            &m,
            m.len() as u32,
            c.frame + 1,
        );
        assert!(out.is_empty());
        c.r.push_raw(ep(1, 40000), ep(2, 53), 0, RST, &[], 0, c.frame + 2);
        assert_eq!(c.r.open_streams(), 0);
    }

    #[test]
    fn not_dns_framing_loses_sync_without_output() {
        let mut c = Conn::new();
        assert!(c.send(b"\x00\x03GET / HTTP/1.1\r\n").is_empty());
        assert_eq!(c.r.stats().bad_lengths, 1);
    }

    #[test]
    fn stream_count_is_capped() {
        let mut r = DnsTcpReassembler::with_max_streams(8);
        let m = framed(&msg(1, 40));
        for port in 0..100u16 {
            r.push_raw(
                ep(1, port),
                ep(2, 53),
                1,
                ACK,
                &m[..20],
                m.len() as u32,
                port as u64,
            );
        }
        assert_eq!(r.open_streams(), 8);
        assert_eq!(r.stats().evicted, 92);
        assert!(r.buffered_bytes() <= 8 * (2 + 65535));
    }
}

//! DNS transactions: queries matched to responses, copies at several points folded together, parallel
//! A/AAAA pairs and retries recognised.
//!
//! A query is identified at one point by (client socket, server socket, DNS id) and its question. The
//! same query seen at another point (before and after DNAT to the DNS ClusterIP, before and after SNAT)
//! has the same id, question and IPv4 identification within a few milliseconds: it is one query seen
//! at two points. A query re-sent after a timeout is a retry. Queries are finalised 30 s (capture time)
//! after they were sent, which bounds memory by the query rate, and handed out for the detectors with
//! their sibling (the parallel A/AAAA query of the same lookup) and their retry.

use super::{Endpoint, FxHashMap, PktRef};
use std::collections::VecDeque;
use std::hash::Hasher;
use std::net::IpAddr;

pub const QTYPE_A: u16 = 1;
pub const QTYPE_AAAA: u16 = 28;

/// One transmission of a query seen at one point, as the packet layer decoded it.
#[derive(Debug, Clone)]
pub struct DnsMessageObs<'a> {
    pub pkt: PktRef,
    pub ip_ident: u16,
    pub tcp: bool,
    pub id: u16,
    pub response: bool,
    pub rcode: u8,
    pub qname: &'a str,
    pub qtype: u16,
    pub answers: u16,
    pub answers_a: u16,
    pub answers_aaaa: u16,
    /// TC: the answer did not fit (a UDP answer the client should re-ask over TCP).
    pub truncated: bool,
}

#[derive(Debug, Clone)]
pub struct DnsResponse {
    pub pkt: PktRef,
    /// IPv4 identification, to recognise the same response seen at another point.
    pub ip_ident: u16,
    pub rcode: u8,
    pub answers: u16,
    pub answers_a: u16,
    pub answers_aaaa: u16,
    pub truncated: bool,
}

/// A query and what became of it.
#[derive(Debug, Clone)]
pub struct DnsQuery {
    /// Monotonic number of this query in the capture.
    pub seq: u64,
    /// First sighting (the point closest to the client that the capture had).
    pub pkt: PktRef,
    pub tcp: bool,
    pub id: u16,
    pub qtype: u16,
    pub qname: Box<str>,
    /// Every (client, server) tuple at which this transmission was seen, first one first.
    pub points: Vec<(Endpoint, Endpoint)>,
    /// The first response, at whatever point.
    pub response: Option<DnsResponse>,
    /// The first response seen at the origin point (the client's own view).
    pub response_at_origin: Option<DnsResponse>,
    pub responses: u32,
    /// The parallel A/AAAA query of the same lookup (same socket, same name, within 50 ms).
    pub sibling: Option<u64>,
    /// The same (client IP, name, type) sent again while this one was unanswered.
    pub retry: Option<PktRef>,
    /// This query is itself a retry.
    pub is_retry: bool,
    ident: u16,
}

impl DnsQuery {
    pub fn client(&self) -> Endpoint {
        self.points[0].0
    }
    pub fn server(&self) -> Endpoint {
        self.points[0].1
    }
}

/// A finalised query handed to the detectors, with a copy of its sibling if the sibling is younger
/// (so each parallel pair is handed out once, complete).
#[derive(Debug, Clone)]
pub struct FinishedQuery {
    pub query: DnsQuery,
    pub younger_sibling: Option<DnsQuery>,
}

const COPY_WINDOW_NS: i64 = 5_000_000;
const SIBLING_WINDOW_NS: i64 = 50_000_000;
/// A resend sooner than this is not a timeout retry (resolvers wait ≥ 1 s).
const RETRY_MIN_NS: i64 = 300_000_000;
const RETRY_MAX_NS: i64 = 15_000_000_000;
const FINALISE_AFTER_NS: i64 = 30_000_000_000;
/// Default cap on queries held in the window (see `analysis::Limits`).
pub const DEFAULT_MAX_LIVE: usize = 65_536;

#[derive(Debug, Default, Clone, Copy)]
pub struct DnsStats {
    pub queries: u64,
    pub responses: u64,
    pub unmatched_responses: u64,
    pub copies: u64,
    /// Queries finalised before their 30 s because the window was full (a flood of queries).
    pub evicted: u64,
    pub evicted_unanswered: u64,
    /// The first query that met the cap.
    pub cap_reached_at: Option<PktRef>,
}

/// Memory: at most `max_live` queries are held; past that the oldest is finalised early (counted in
/// `DnsStats::evicted`), so a flood of unanswered queries costs a bounded window, not the flood.
pub struct DnsTracker {
    max_live: usize,
    window: VecDeque<DnsQuery>,
    /// seq of window[0].
    base: u64,
    next_seq: u64,
    by_identity: FxHashMap<(u16, u16, u64, u16), u64>,
    /// (client, server, id, question type): a resolver may send its A and AAAA with one id to one
    /// server (musl < 1.2.4), and each answer names its question.
    by_tuple: FxHashMap<(Endpoint, Endpoint, u16, u16), u64>,
    /// (client socket, server, name): the parallel A/AAAA pair goes to one server; a resolver that
    /// asks several nameservers at once (musl) makes one pair per server.
    by_socket_name: FxHashMap<(Endpoint, Endpoint, u64), u64>,
    by_client_name_type: FxHashMap<(IpAddr, u64, u16), u64>,
    finished: Vec<FinishedQuery>,
    pub stats: DnsStats,
}

fn name_hash(name: &str) -> u64 {
    let mut h = super::FxHasher::default();
    for b in name.bytes() {
        h.write_u8(b.to_ascii_lowercase());
    }
    h.finish()
}

impl Default for DnsTracker {
    fn default() -> Self {
        Self::new()
    }
}

impl DnsTracker {
    pub fn new() -> Self {
        Self::with_max_live(DEFAULT_MAX_LIVE)
    }

    /// A tracker holding at most `max_live` queries (at least 16).
    pub fn with_max_live(max_live: usize) -> Self {
        DnsTracker {
            max_live: max_live.max(16),
            window: VecDeque::new(),
            base: 0,
            next_seq: 0,
            by_identity: FxHashMap::default(),
            by_tuple: FxHashMap::default(),
            by_socket_name: FxHashMap::default(),
            by_client_name_type: FxHashMap::default(),
            finished: Vec::new(),
            stats: DnsStats::default(),
        }
    }

    fn get(&self, seq: u64) -> Option<&DnsQuery> {
        seq.checked_sub(self.base)
            .and_then(|i| self.window.get(i as usize))
    }

    fn get_mut(&mut self, seq: u64) -> Option<&mut DnsQuery> {
        seq.checked_sub(self.base)
            .and_then(|i| self.window.get_mut(i as usize))
    }

    pub fn drain_finished(&mut self) -> std::vec::Drain<'_, FinishedQuery> {
        self.finished.drain(..)
    }

    pub fn live_queries(&self) -> usize {
        self.window.len()
    }

    /// The cap on queries held.
    pub fn max_live(&self) -> usize {
        self.max_live
    }

    pub fn message(&mut self, m: &DnsMessageObs<'_>) {
        self.expire(m.pkt.ts_ns);
        if m.response {
            self.response(m);
        } else {
            self.query(m);
        }
    }

    fn query(&mut self, m: &DnsMessageObs<'_>) {
        let nh = name_hash(m.qname);
        let tuple = (m.pkt.src, m.pkt.dst);
        let identity = (m.id, m.qtype, nh, m.ip_ident);
        // The same transmission at another point?
        if let Some(&seq) = self.by_identity.get(&identity) {
            if let Some(q) = self.get_mut(seq) {
                // Another point: another tuple (NAT), another capture file, or another interface
                // of one `-i any` capture (a routing node records a packet on its way in and out).
                let other_ifindex =
                    matches!((q.pkt.ifindex, m.pkt.ifindex), (Some(a), Some(b)) if a != b);
                if m.pkt.ts_ns.saturating_sub(q.pkt.ts_ns).saturating_abs() <= COPY_WINDOW_NS
                    && (!q.points.contains(&tuple) || q.pkt.input != m.pkt.input || other_ifindex)
                {
                    if !q.points.contains(&tuple) && q.points.len() < 8 {
                        q.points.push(tuple);
                    }
                    self.stats.copies += 1;
                    self.by_tuple.insert((tuple.0, tuple.1, m.id, m.qtype), seq);
                    return;
                }
            }
        }
        if self.window.len() >= self.max_live {
            if let Some(front) = self.window.front() {
                self.stats.evicted += 1;
                self.stats.evicted_unanswered += front.response.is_none() as u64;
                self.stats.cap_reached_at.get_or_insert(m.pkt);
            }
            self.pop_front();
        }
        self.stats.queries += 1;
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.window.is_empty() {
            self.base = seq;
        }
        let mut q = DnsQuery {
            seq,
            pkt: m.pkt,
            tcp: m.tcp,
            id: m.id,
            qtype: m.qtype,
            qname: m.qname.into(),
            points: vec![tuple],
            response: None,
            response_at_origin: None,
            responses: 0,
            sibling: None,
            retry: None,
            is_retry: false,
            ident: m.ip_ident,
        };
        // Parallel A/AAAA of one lookup: same socket, same name, the other type, sent together.
        if let Some(&other) = self.by_socket_name.get(&(m.pkt.src, m.pkt.dst, nh)) {
            if let Some(o) = self.get_mut(other) {
                let paired = (o.qtype == QTYPE_A && m.qtype == QTYPE_AAAA)
                    || (o.qtype == QTYPE_AAAA && m.qtype == QTYPE_A);
                if paired
                    && o.sibling.is_none()
                    && m.pkt.ts_ns.saturating_sub(o.pkt.ts_ns) <= SIBLING_WINDOW_NS
                {
                    o.sibling = Some(seq);
                    q.sibling = Some(other);
                }
            }
        }
        // A retry of an unanswered query for the same name and type from the same client address.
        let retry_key = (m.pkt.src.ip, nh, m.qtype);
        if let Some(&prev) = self.by_client_name_type.get(&retry_key) {
            if let Some(p) = self.get_mut(prev) {
                let gap = m.pkt.ts_ns.saturating_sub(p.pkt.ts_ns);
                if p.response.is_none()
                    && p.retry.is_none()
                    && (RETRY_MIN_NS..=RETRY_MAX_NS).contains(&gap)
                {
                    p.retry = Some(m.pkt);
                    q.is_retry = true;
                }
            }
        }
        self.by_identity.insert(identity, seq);
        self.by_tuple.insert((tuple.0, tuple.1, m.id, m.qtype), seq);
        self.by_socket_name.insert((m.pkt.src, m.pkt.dst, nh), seq);
        self.by_client_name_type.insert(retry_key, seq);
        self.window.push_back(q);
    }

    fn response(&mut self, m: &DnsMessageObs<'_>) {
        self.stats.responses += 1;
        // The response travels server → client.
        let key = (m.pkt.dst, m.pkt.src, m.id, m.qtype);
        let Some(&seq) = self.by_tuple.get(&key) else {
            self.stats.unmatched_responses += 1;
            return;
        };
        let Some(q) = self.get_mut(seq) else {
            self.stats.unmatched_responses += 1;
            return;
        };
        // Same id and type but another name: not this query's answer.
        if !q.qname.eq_ignore_ascii_case(m.qname) {
            self.stats.unmatched_responses += 1;
            return;
        }
        record_response(q, m);
    }

    /// Finalise queries older than the window.
    fn expire(&mut self, now: i64) {
        while let Some(front) = self.window.front() {
            if now.saturating_sub(front.pkt.ts_ns) <= FINALISE_AFTER_NS {
                break;
            }
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        let Some(q) = self.window.pop_front() else {
            return;
        };
        self.base += 1;
        let nh = name_hash(&q.qname);
        let seq = q.seq;
        let remove_if = |map_seq: Option<&u64>| map_seq == Some(&seq);
        if remove_if(self.by_identity.get(&(q.id, q.qtype, nh, q.ident))) {
            self.by_identity.remove(&(q.id, q.qtype, nh, q.ident));
        }
        for &(c, s) in &q.points {
            if remove_if(self.by_tuple.get(&(c, s, q.id, q.qtype))) {
                self.by_tuple.remove(&(c, s, q.id, q.qtype));
            }
        }
        let origin = q.points[0];
        if remove_if(self.by_socket_name.get(&(origin.0, origin.1, nh))) {
            self.by_socket_name.remove(&(origin.0, origin.1, nh));
        }
        if remove_if(self.by_client_name_type.get(&(origin.0.ip, nh, q.qtype))) {
            self.by_client_name_type.remove(&(origin.0.ip, nh, q.qtype));
        }
        let younger_sibling = q
            .sibling
            .filter(|&s| s > q.seq)
            .and_then(|s| self.get(s))
            .cloned();
        self.finished.push(FinishedQuery {
            query: q,
            younger_sibling,
        });
    }

    /// End of input: finalise up to `most` of the queries still live, oldest first; whether any
    /// are left. Drained between steps, the finished ones never pile up: a flood's twenty thousand
    /// live queries finished at once held 17 MB in `finished`, and its growth by doubling 28 MB.
    pub fn finish_some(&mut self, most: usize) -> bool {
        for _ in 0..most {
            if self.window.is_empty() {
                break;
            }
            self.pop_front();
        }
        !self.window.is_empty()
    }
}

fn record_response(q: &mut DnsQuery, m: &DnsMessageObs<'_>) {
    let at_origin = (m.pkt.dst, m.pkt.src) == q.points[0];
    // The same response seen at another point (another interface or tuple): not a second answer.
    let copy = q.response.as_ref().is_some_and(|r| {
        r.ip_ident == m.ip_ident
            && r.rcode == m.rcode
            && r.answers == m.answers
            && m.pkt.ts_ns.saturating_sub(r.pkt.ts_ns).saturating_abs() <= COPY_WINDOW_NS
            && (r.pkt.ifindex != m.pkt.ifindex
                || r.pkt.src != m.pkt.src
                || r.pkt.dst != m.pkt.dst
                || r.pkt.input != m.pkt.input)
    });
    if !copy {
        q.responses += 1;
    }
    let r = DnsResponse {
        pkt: m.pkt,
        ip_ident: m.ip_ident,
        rcode: m.rcode,
        answers: m.answers,
        answers_a: m.answers_a,
        answers_aaaa: m.answers_aaaa,
        truncated: m.truncated,
    };
    if at_origin && q.response_at_origin.is_none() {
        q.response_at_origin = Some(r.clone());
    }
    if q.response.is_none() {
        q.response = Some(r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// An A query for `name` with id `id` from port `port`, at `ts_ns`.
    fn query(port: u16, id: u16, ts_ns: i64, name: &str) -> DnsMessageObs<'_> {
        let ip = |last| IpAddr::V4(Ipv4Addr::new(10, 0, 0, last));
        DnsMessageObs {
            pkt: PktRef {
                input: 0,
                frame: u64::from(port),
                ts_ns,
                src: Endpoint { ip: ip(1), port },
                dst: Endpoint {
                    ip: ip(53),
                    port: 53,
                },
                flags: 0,
                len: 30,
                seq: 0,
                ack: 0,
                ifindex: None,
            },
            ip_ident: port,
            tcp: false,
            id,
            response: false,
            rcode: 0,
            qname: name,
            qtype: QTYPE_A,
            answers: 0,
            answers_a: 0,
            answers_aaaa: 0,
            truncated: false,
        }
    }

    /// At the end of the input the queries still live are finished at most a given number at a
    /// time, oldest first: a flood's tens of thousands never sit finished at once.
    #[test]
    fn the_live_queries_are_finished_a_few_at_a_time_oldest_first() {
        let mut dns = DnsTracker::with_max_live(10_000);
        let queries = 2_500u16;
        for i in 0..queries {
            let name = format!("host{i}.example.");
            dns.message(&query(20_000 + i, i, 1_000_000 * i64::from(i), &name));
        }
        assert_eq!(dns.live_queries(), usize::from(queries));
        assert_eq!(dns.drain_finished().count(), 0, "none is 30 s old yet");

        let mut steps = Vec::new();
        let mut ports = Vec::new();
        loop {
            let more = dns.finish_some(1_000);
            let finished: Vec<_> = dns.drain_finished().collect();
            steps.push(finished.len());
            ports.extend(finished.iter().map(|f| f.query.pkt.src.port));
            if !more {
                break;
            }
        }
        assert_eq!(steps, [1_000, 1_000, 500]);
        assert_eq!(dns.live_queries(), 0);
        assert!(!dns.finish_some(1_000), "nothing is left");
        let expected: Vec<u16> = (0..queries).map(|i| 20_000 + i).collect();
        assert_eq!(ports, expected, "oldest first");
    }
}

//! `ephemeral-port-exhaustion` [issue 15]: a client (or an SNAT address) runs out of source ports toward
//! one destination: every port of its range is held by an open connection or by its own TIME_WAIT, so
//! `connect()` fails with EADDRNOTAVAIL, or, with `tcp_tw_reuse`, SYNs go out on ports still in TIME_WAIT.

use crate::finding::Incident;

pub static INCIDENT: Incident = Incident {
    id: "ephemeral-port-exhaustion",
    title: "Source ports exhausted toward one destination: connect() fails with EADDRNOTAVAIL",
    explanation: "A TCP connection is a 4-tuple; toward one destination address:port, a client address can \
hold at most as many connections as its ephemeral port range (net.ipv4.ip_local_port_range, 32768–60999: \
28,232 ports by default) has ports. The side that closes first keeps each closed connection in TIME_WAIT for \
60 s, and that 4-tuple cannot be used again meanwhile. A client that opens and closes connections to one \
server faster than range ÷ 60 s per second (≈ 470/s by default) fills the range with TIME_WAIT: connect() \
then fails with EADDRNOTAVAIL (`Cannot assign requested address`), with no packet on the wire. With \
tcp_tw_reuse=1 the kernel takes ports still in TIME_WAIT (when timestamps allow), so SYNs reuse them within \
60 s. Behind SNAT the same limit applies per SNAT address, destination and port range of the rule.",
    remedy: "Reuse connections (HTTP keep-alive, connection pools) instead of one connection per request; \
widen net.ipv4.ip_local_port_range (e.g. 10240 65535) in the client's namespace; let the server close first \
where the protocol allows, so TIME_WAIT sits on the server; spread traffic over more destination addresses \
or SNAT addresses. net.ipv4.tcp_tw_reuse=1 lets a client reuse its TIME_WAIT ports for new connections \
(timestamps required); never use tcp_tw_recycle.",
    // ip_local_port_range is snat-port-clash's sysctl in the catalogue (one owner per sysctl); this
    // incident reads it too.
    sysctls: &["net.ipv4.tcp_tw_reuse", "net.ipv4.ip_local_reserved_ports"],
    versions: &[],
    evidence: "Node (the client's own namespace): `ss -tan` sockets toward one destination, in TIME-WAIT and \
ESTAB, as many as `ip_local_port_range` has ports (minus `ip_local_reserved_ports`); behind SNAT, conntrack \
entries per SNAT address and destination against the rule's port range. Application: EADDRNOTAVAIL from \
connect(). Capture: as many distinct source ports from one address to one destination held at once (open, or \
closed by the client within the last 60 s) as the range has ports, then no new connection; with tcp_tw_reuse, \
SYNs on 4-tuples the client closed less than 60 s before. Kernel: __inet_hash_connect returns \
-EADDRNOTAVAIL when no port of the range yields a unique 4-tuple (net/ipv4/inet_hashtables.c).",
};

use super::{secs, with_packets, Context, Finished};
use crate::finding::{Confidence, Evidence, Finding, FindingKind};
use crate::flow::tcp::Conn;
use crate::flow::{Endpoint, FxHashMap, PktRef};
use std::net::IpAddr;

/// TCP_TIMEWAIT_LEN.
const TIME_WAIT_NS: i64 = 60_000_000_000;
/// Linux's default ip_local_port_range, 32768–60999.
const DEFAULT_RANGE_PORTS: u32 = 60999 - 32768 + 1;
/// Occupancy intervals kept over all keys (24 bytes each), per key the detector may keep: past it new
/// connections are counted only (4 × 65,536 keys: 6 MB at the default memory budget).
const INTERVALS_PER_KEY: usize = 4;
/// SYNs on a tuple the client itself closed less than 60 s before, from one address to one server,
/// that make tcp_tw_reuse's port recycling worth naming without the range.
const MIN_TW_REUSES: u32 = 3;

/// One client address toward one server: the times its source ports were held.
#[derive(Default)]
struct PerDestination {
    /// (first SYN, end of occupancy): the close, or the close + 60 s when the client closed first.
    held: Vec<(i64, i64, u16)>,
    connections: u32,
    first_syn: Option<PktRef>,
    last_syn: Option<PktRef>,
    /// SYNs on a 4-tuple the client closed first less than 60 s earlier.
    tw_reuses: u32,
    tw_reuse_example: Option<(PktRef, PktRef)>,
}

/// Recognises a client address holding every port of its range toward one destination, and SYNs reusing
/// 4-tuples still in the client's TIME_WAIT.
#[derive(Default)]
pub struct Detector {
    /// Most distinct keys kept (0: the default `MAX_KEYS`).
    max_keys: usize,
    by_dest: FxHashMap<(IpAddr, Endpoint), PerDestination>,
    /// Per 4-tuple (client, server): when the client closed it first, and its last packet.
    client_closed: FxHashMap<(Endpoint, Endpoint), (i64, PktRef)>,
    intervals: usize,
    dropped_intervals: u64,
    next_prune_ts: i64,
}

impl Detector {
    pub fn connection(&mut self, c: &Conn) {
        // A port is the client's own only for connections that got an answer: a flood of unanswered
        // (often spoofed) SYNs holds no client's ports and adds no state here.
        if !c.roles_known || !c.established {
            return;
        }
        let (Some(first), Some(leg)) = (c.syns.first(), c.legs.first()) else {
            return;
        };
        let (client, server) = (leg.client, leg.server);
        let client_first = match c.fin_ts {
            [Some(cl), Some(sv)] => cl <= sv,
            [Some(_), None] => true,
            _ => false,
        };
        let close = c.closed_ts.unwrap_or(c.last_ts);
        let end = if client_first {
            close.saturating_add(TIME_WAIT_NS)
        } else {
            close
        };
        let reused = self
            .client_closed
            .get(&(client, server))
            .filter(|(t, _)| {
                first.pkt.ts_ns > *t && first.pkt.ts_ns.saturating_sub(*t) < TIME_WAIT_NS
            })
            .map(|(_, p)| *p);
        let max = if self.max_keys == 0 {
            super::MAX_KEYS
        } else {
            self.max_keys
        };
        if client_first {
            // Forget TIME_WAITs that are over when full, at most once per second of capture time.
            let now = first.pkt.ts_ns;
            if self.client_closed.len() >= max && now >= self.next_prune_ts {
                self.client_closed
                    .retain(|_, (t, _)| now.saturating_sub(*t) < TIME_WAIT_NS);
                self.next_prune_ts = now.saturating_add(1_000_000_000);
            }
            if self.client_closed.len() < max {
                if let Some(last) = c.last_pkt() {
                    self.client_closed.insert((client, server), (close, last));
                }
            }
        }
        let Some(d) = super::capped_entry(&mut self.by_dest, (client.ip, server), self.max_keys)
        else {
            return;
        };
        d.connections += 1;
        d.first_syn.get_or_insert(first.pkt);
        d.last_syn = Some(first.pkt);
        if let Some(old) = reused {
            d.tw_reuses += 1;
            d.tw_reuse_example.get_or_insert((old, first.pkt));
        }
        if self.intervals < INTERVALS_PER_KEY * max {
            d.held
                .push((first.pkt.ts_ns, end.max(first.pkt.ts_ns), client.port));
            self.intervals += 1;
        } else {
            self.dropped_intervals += 1;
        }
    }

    pub fn finish(self, ctx: &Context<'_>, out: &mut Vec<Finding>) {
        let mut cases = Vec::new();
        let mut keys: Vec<_> = self.by_dest.into_iter().collect();
        keys.sort_by_key(|((ip, server), _)| (*ip, *server));
        for ((ip, server), d) in keys {
            if let Some(f) = finding(ctx, ip, server, d, self.dropped_intervals) {
                cases.push(f);
            }
        }
        let n = cases.len() as u32;
        super::merge_cases(cases, n.max(1), out);
    }
}

/// The most ports held at once toward the destination, and when.
fn peak(held: &mut [(i64, i64, u16)]) -> (u32, i64) {
    let mut events: Vec<(i64, i32)> = Vec::with_capacity(held.len() * 2);
    for (a, b, _) in held.iter() {
        events.push((*a, 1));
        events.push((*b, -1));
    }
    // Ends before starts at the same instant: a port freed and taken at once is not held twice.
    events.sort_unstable();
    let (mut now, mut best, mut at) = (0i32, 0i32, 0i64);
    for (t, d) in events {
        now += d;
        if now > best {
            best = now;
            at = t;
        }
    }
    (best.max(0) as u32, at)
}

fn finding(
    ctx: &Context<'_>,
    ip: IpAddr,
    server: Endpoint,
    mut d: PerDestination,
    dropped: u64,
) -> Option<Finding> {
    let range = ctx.node.local_port_range(ip);
    let range_ports = range.map(|(lo, hi)| u32::from(hi - lo) + 1);
    let range_size = range_ports.unwrap_or(DEFAULT_RANGE_PORTS);
    let tw_reuse = d.tw_reuses >= MIN_TW_REUSES;
    // Fewer connections than the range has ports cannot have held it all at once: no peak to find
    // (sorting the intervals of every destination was most of this detector's time at the end).
    if !tw_reuse && (d.held.len() as u64) < u64::from(range_size) {
        return None;
    }
    let (held, at) = peak(&mut d.held);
    let full = held >= range_size;
    if !full && !tw_reuse {
        return None;
    }
    let confidence = match (full, range_ports.is_some(), tw_reuse) {
        (true, true, _) => Confidence::Confirmed,
        (true, false, _) => Confidence::Likely,
        (false, _, true) => Confidence::Possible,
        (false, _, false) => return None,
    };
    let summary = if full {
        format!(
            "{ip} held {held} source ports toward {server} at once (open, or closed by it within the last 60 s: TIME_WAIT){}: its port range was used up and further connect()s to {server} fail with EADDRNOTAVAIL",
            match range {
                Some((lo, hi)) => format!(", all of ip_local_port_range {lo}–{hi}"),
                None => format!(", as many as Linux's default range has ({DEFAULT_RANGE_PORTS})"),
            }
        )
    } else {
        format!(
            "{ip} sent {} SYN(s) to {server} on 4-tuples it had closed less than 60 s before (still in its TIME_WAIT): tcp_tw_reuse recycling ports under pressure",
            d.tw_reuses
        )
    };
    let mut f = Finding::new(&INCIDENT, FindingKind::Incident, confidence, summary);
    f = f.because(format!(
        "{} connection(s) from {ip} to {server}; at most {held} held a source port at the same moment (at {}), counting each connection the client closed first as held for the 60 s of its TIME_WAIT",
        d.connections,
        crate::finding::format_ts(at)
    ));
    f = match (range, full) {
        (Some((lo, hi)), true) => f.because(format!(
            "the node facts give {ip}'s namespace ip_local_port_range {lo}–{hi}: every port of it was held toward {server}, so the kernel had no 4-tuple left for a new connection (EADDRNOTAVAIL leaves no packet)"
        )).with_evidence(Evidence::Config {
            source: ctx.node.source.clone(),
            line: None,
            text: format!("net.ipv4.ip_local_port_range = {lo} {hi} (namespace of {ip})"),
        }),
        (None, true) => f.because(format!(
            "the client's port range is not known (no node facts for {ip}); {held} is as many ports as Linux's default range holds"
        )),
        (_, false) => f.because(format!(
            "whether the range was used up is not known ({held} held at most{}); a port reused while the client still held it in TIME_WAIT is what tcp_tw_reuse does when it takes TIME_WAIT ports",
            range_ports.map(|n| format!(" of {n}")).unwrap_or_default()
        )),
    };
    if d.tw_reuses > 0 {
        f = f.because(format!(
            "{} SYN(s) reused a 4-tuple the client had closed first less than 60 s before (tcp_tw_reuse)",
            d.tw_reuses
        ));
    }
    if dropped > 0 {
        f = f.because(format!(
            "{dropped} connection(s) past the detector's budget were counted, not timed: the peak may be higher"
        ));
    }
    f = f
        .rules_out(super::snat_port_clash::INCIDENT.id, "no SYN was dropped for a clashing translation: the ports were held by the client's own connections and TIME_WAIT")
        .rules_out(super::listen_queue_overflow::INCIDENT.id, "the server answered every connection it was sent; the limit is the client's 4-tuples")
        .rules_out(super::timewait_paws_reject::INCIDENT.id, "the TIME_WAIT that blocks is the client's own (it closed first), not the server's");
    let mut pkts = Vec::new();
    if let Some(p) = d.first_syn {
        pkts.push((p, format!("first SYN from {ip} to {server}")));
    }
    if let Some((old, new)) = d.tw_reuse_example {
        pkts.push((
            old,
            "end of a connection the client closed first (TIME_WAIT on the client)".to_string(),
        ));
        pkts.push((
            new,
            format!(
                "SYN on the same 4-tuple {} later, still inside TIME_WAIT",
                secs(new.ts_ns.saturating_sub(old.ts_ns))
            ),
        ));
    }
    if let Some(p) = d.last_syn {
        pkts.push((p, format!("last SYN from {ip} to {server}")));
    }
    Some(with_packets(
        f,
        ctx,
        &pkts,
        "connections from one address to one destination holding its source ports",
    ))
}

impl super::CaptureDetector for Detector {
    fn set_max_keys(&mut self, max_keys: usize) {
        self.max_keys = max_keys;
    }

    fn connection(&mut self, c: &Finished<'_>) {
        Detector::connection(self, c)
    }

    fn finish_stands_alone(&self) -> bool {
        true
    }

    fn finish(
        self: Box<Self>,
        ctx: &Context<'_>,
        _explained: &[u64],
        out: &mut Vec<Finding>,
    ) -> Vec<u64> {
        Detector::finish(*self, ctx, out);
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_counts_overlaps_not_connections() {
        let mut v = vec![(0, 10, 1), (5, 15, 2), (10, 20, 3), (30, 40, 4)];
        assert_eq!(peak(&mut v).0, 2);
        let mut v: Vec<(i64, i64, u16)> = (0..10).map(|i| (i, 100, i as u16)).collect();
        assert_eq!(peak(&mut v), (10, 9));
    }
}

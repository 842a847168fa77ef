//! `neighbour-table-overflow`: the host's ARP/ND table reaches `gc_thresh3` (big clusters, flat pod
//! networks): forced garbage collection finds nothing to free, new neighbours are refused ("neighbour
//! table overflow", ENOBUFS), and connections to peers without an entry fail at random.
//!
//! A capture cannot see the table. What it can see is the churn around a full one: one host asking
//! for very many neighbours within seconds (entries evicted and asked for again, or never answered)
//! while connections fail. That picture has other causes (a scan, a sweep of a dead subnet), so alone
//! it is `possible`; node facts that show the table at its limit raise it.

use crate::finding::Incident;

pub static INCIDENT: Incident = Incident {
    id: "neighbour-table-overflow",
    title: "the ARP/ND neighbour table is full: new neighbours are refused and connections fail at random",
    explanation: "The kernel keeps one neighbour table per family (ARP for IPv4, NDISC for IPv6) for the \
whole host, every network namespace included. Below net.ipv4.neigh.default.gc_thresh1 (default 128) \
nothing is collected; above gc_thresh2 (512) creating an entry forces a collection (at most every 5 s) of \
unused entries not confirmed for 5 s; at gc_thresh3 (1024) a new entry is created only if that forced \
collection frees one. On a big \
cluster or a flat pod network a node can have more live neighbours than that: forced collection fails, \
the kernel logs \"neighbour table overflow\" (\"arp_cache: neighbor table overflow!\"), counts table_fulls \
in /proc/net/stat/arp_cache, and the send that needed the entry fails with ENOBUFS (a forwarded packet \
is dropped). Connections to peers that have an entry keep working while those to the others fail, and \
the evicted entries are asked for again and again: an ARP (or ND) storm.",
    remedy: "Raise the thresholds on the node above the number of neighbours it has, keeping the order \
gc_thresh1 < gc_thresh2 < gc_thresh3 (for example 80000/90000/100000 on large clusters), for \
net.ipv4.neigh.default.* and net.ipv6.neigh.default.*: they exist only in the initial network \
namespace (a pod cannot set them) and apply to the host's table. Or make broadcast domains smaller (a \
routed pod network, per-node pod subnets instead of one flat L2 segment) so that a node has fewer \
neighbours.",
    sysctls: &[
        "net.ipv4.neigh.default.gc_thresh1",
        "net.ipv4.neigh.default.gc_thresh2",
        "net.ipv4.neigh.default.gc_thresh3",
        "net.ipv6.neigh.default.gc_thresh1",
        "net.ipv6.neigh.default.gc_thresh2",
        "net.ipv6.neigh.default.gc_thresh3",
    ],
    versions: &[],
    evidence: "Node (initial network namespace only: the table and its thresholds are host-wide): \
entries (`/proc/net/stat/arp_cache` and `ndisc_cache` `entries`, or `/proc/net/arp` rows) against \
gc_thresh2/gc_thresh3; `table_fulls` rising between samples (neighbours refused) and `forced_gc_runs` \
rising; the kernel log line \"neighbour table overflow\". Entries above gc_thresh2 without overflow are \
a latent risk. Capture: one host asking ARP (or ND) for very many distinct neighbours within seconds, \
unanswered or asked again soon after an answer, while connections fail (SYNs never answered, or never \
sent on: a refused neighbour is not even asked for): possible only, since a scan or a dead subnet \
looks the same on the wire. Lab: emulated (the thresholds are host-wide and the lab does not change \
the host).",
};

use super::{with_marked_packets, Context, Finished, Marked, SynRecord};
use crate::finding::{Confidence, Evidence, Finding, FindingKind};
use crate::flow::{FxHashMap, PktRef};
use std::net::{IpAddr, Ipv6Addr};

/// ICMPv6 neighbour solicitation and advertisement.
pub const ND_SOLICIT: u8 = 135;
pub const ND_ADVERT: u8 = 136;

/// An address-resolution message: a request for a neighbour's link address, or its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeighbourMsg {
    Request,
    Reply,
}

impl NeighbourMsg {
    pub fn of_arp(op: crate::wire::arp::ArpOp) -> Option<NeighbourMsg> {
        match op {
            crate::wire::arp::ArpOp::Request => Some(NeighbourMsg::Request),
            crate::wire::arp::ArpOp::Reply => Some(NeighbourMsg::Reply),
            crate::wire::arp::ArpOp::Unknown(_) => None,
        }
    }

    pub fn of_nd(icmp_type: u8) -> Option<NeighbourMsg> {
        match icmp_type {
            ND_SOLICIT => Some(NeighbourMsg::Request),
            ND_ADVERT => Some(NeighbourMsg::Reply),
            _ => None,
        }
    }
}

/// The window within which one host's requests count as one burst.
pub const WINDOW_NS: i64 = 10_000_000_000;
/// Distinct neighbours one host asks for within [`WINDOW_NS`] that make a storm. A node resolving its
/// pods and peers asks for a few per second at most; a full table's churn or a sweep asks for hundreds.
pub const STORM_TARGETS: usize = 100;
/// Distinct targets remembered per host and window (beyond it they are counted, not told apart).
const TARGETS_PER_WINDOW: usize = 4096;
/// One request seen again within this, at another point, is the same request (a resolver sends
/// again after a second: `retrans_time`).
const COPY_NS: i64 = 5_000_000;
/// Failed connections kept as evidence per 10 s of capture.
const FAILED_KEPT_PER_BUCKET: usize = 2;
/// How far around a storm a failing connection still counts as "while".
const AROUND_NS: i64 = 10_000_000_000;

/// The key of the neighbour asked for: the IPv4 address, or for IPv6 the solicited-node group of the
/// target (what a multicast solicitation is sent to: the low 24 bits of the target).
fn target_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(a) => {
            let o = a.octets();
            if o[..13] == Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 0).octets()[..13] {
                ip
            } else {
                IpAddr::V6(Ipv6Addr::new(
                    0xff02,
                    0,
                    0,
                    0,
                    0,
                    1,
                    0xff00 | u16::from(o[13]),
                    u16::from_be_bytes([o[14], o[15]]),
                ))
            }
        }
    }
}

#[derive(Default, Clone)]
struct Target {
    asks: u32,
    /// Where and when the last request was seen, to tell one request seen at two points (two
    /// captures, or a bridge and its port in one `-i any`) from a request sent again.
    last_ts: i64,
    last_at: (u16, Option<u32>),
    answered: bool,
    /// Asked for again after an answer: the entry was dropped soon after it was made.
    reasked: bool,
}

/// One host's burst of requests.
#[derive(Default, Clone)]
struct Burst {
    start_ns: i64,
    end_ns: i64,
    requests: u32,
    targets: FxHashMap<IpAddr, Target>,
    /// Distinct targets beyond [`TARGETS_PER_WINDOW`].
    targets_uncounted: u32,
    samples: Vec<PktRef>,
}

impl Burst {
    fn distinct(&self) -> usize {
        self.targets.len() + self.targets_uncounted as usize
    }
}

#[derive(Default)]
struct Asker {
    current: Burst,
    /// The largest burst so far that reached [`STORM_TARGETS`].
    storm: Option<Burst>,
    /// Targets answered to this host, for the re-ask test across windows.
    answered: FxHashMap<IpAddr, ()>,
}

/// Recognises one host asking for very many neighbours within seconds while connections fail.
#[derive(Default)]
pub struct Detector {
    max_keys: usize,
    askers: FxHashMap<IpAddr, Asker>,
    /// Every failed connection in brief (first SYN time, id, destination), up to the key budget.
    failed: Vec<(i64, u64, IpAddr)>,
    /// A few failed connections whole, per 10 s of capture, as evidence.
    failed_kept: FxHashMap<i64, Vec<SynRecord>>,
    /// Targets held in all bursts: bounded by the key budget, beyond it counted only.
    held: usize,
}

impl Detector {
    pub fn neighbour(&mut self, p: &PktRef, msg: NeighbourMsg) {
        let (src, dst) = (p.src.ip, p.dst.ip);
        match msg {
            NeighbourMsg::Request => {
                // Gratuitous ARP and duplicate-address probes resolve nothing.
                if src == dst || src.is_unspecified() {
                    return;
                }
                let key = target_key(dst);
                let max = self.max_keys;
                let Some(a) = super::capped_entry(&mut self.askers, src, max) else {
                    return;
                };
                let at = (p.input, p.ifindex);
                if let Some(t) = a.current.targets.get_mut(&key) {
                    if p.ts_ns - t.last_ts < COPY_NS && t.last_at != at {
                        return;
                    }
                    t.last_ts = p.ts_ns;
                    t.last_at = at;
                }
                if a.current.requests > 0 && p.ts_ns > a.current.start_ns + WINDOW_NS {
                    let done = std::mem::take(&mut a.current);
                    let dropped = keep_storm(&mut a.storm, done);
                    self.held = self.held.saturating_sub(dropped);
                }
                let b = &mut a.current;
                if b.requests == 0 {
                    b.start_ns = p.ts_ns;
                }
                b.end_ns = p.ts_ns;
                b.requests += 1;
                if b.samples.len() < 4 {
                    b.samples.push(*p);
                }
                let was_answered = a.answered.contains_key(&key);
                let budget = if max == 0 { super::MAX_KEYS } else { max } * 4;
                let room = b.targets.len() < TARGETS_PER_WINDOW && self.held < budget;
                match b.targets.get_mut(&key) {
                    Some(t) => {
                        t.asks += 1;
                        t.reasked |= t.answered || was_answered;
                    }
                    None if room => {
                        self.held += 1;
                        b.targets.insert(
                            key,
                            Target {
                                asks: 1,
                                last_ts: p.ts_ns,
                                last_at: (p.input, p.ifindex),
                                answered: false,
                                reasked: was_answered,
                            },
                        );
                    }
                    None => b.targets_uncounted += 1,
                }
            }
            NeighbourMsg::Reply => {
                // An unsolicited advertisement (to all nodes) or a gratuitous reply answers no one.
                if src == dst || dst.is_multicast() || dst.is_unspecified() {
                    return;
                }
                let key = target_key(src);
                let Some(a) = self.askers.get_mut(&dst) else {
                    return;
                };
                if let Some(t) = a.current.targets.get_mut(&key) {
                    t.answered = true;
                }
                if a.answered.len() < TARGETS_PER_WINDOW {
                    a.answered.insert(key, ());
                }
            }
        }
    }

    pub fn connection(&mut self, c: &Finished<'_>) {
        if !c.roles_known || c.syns.is_empty() || c.synack.is_some() {
            return;
        }
        if c.syn_transmissions < 2 || c.rsts.iter().any(|r| !r.from_client) {
            return;
        }
        let Some(rec) = c.syn_record().cloned() else {
            return;
        };
        let max = if self.max_keys == 0 {
            super::MAX_KEYS
        } else {
            self.max_keys
        };
        if self.failed.len() < max {
            self.failed
                .push((rec.first_syn.ts_ns, rec.conn, rec.first_syn.dst.ip));
        }
        let bucket = rec.first_syn.ts_ns.div_euclid(WINDOW_NS);
        if let Some(kept) = super::capped_entry(&mut self.failed_kept, bucket, max) {
            if kept.len() < FAILED_KEPT_PER_BUCKET {
                kept.push(rec);
            }
        }
    }

    pub fn finish(self, ctx: &Context<'_>, explained: &[u64], out: &mut Vec<Finding>) -> Vec<u64> {
        let mut storms: Vec<(IpAddr, Burst)> = self
            .askers
            .into_iter()
            .filter_map(|(ip, mut a)| {
                let last = std::mem::take(&mut a.current);
                let _ = keep_storm(&mut a.storm, last);
                a.storm.map(|s| (ip, s))
            })
            .collect();
        storms.sort_by_key(|(ip, s)| (std::cmp::Reverse(s.distinct()), *ip));
        let mut ids = Vec::new();
        for (asker, storm) in storms {
            let (from, to) = (storm.start_ns - AROUND_NS, storm.end_ns + AROUND_NS);
            let failing: Vec<&(i64, u64, IpAddr)> = self
                .failed
                .iter()
                .filter(|(_, conn, _)| explained.binary_search(conn).is_err())
                .filter(|(ts, _, _)| *ts >= from && *ts <= to)
                .collect();
            let mut examples: Vec<&SynRecord> = (from.div_euclid(WINDOW_NS)
                ..=to.div_euclid(WINDOW_NS))
                .filter_map(|b| self.failed_kept.get(&b))
                .flatten()
                .filter(|r| failing.iter().any(|(_, c, _)| *c == r.conn))
                .collect();
            examples.sort_by_key(|r| r.first_syn.ts_ns);
            if failing.is_empty() {
                // A burst of requests while everything works: a scan, a new node filling its table.
                continue;
            }
            let distinct = storm.distinct();
            let unanswered = storm.targets.values().filter(|t| !t.answered).count();
            let reasked = storm.targets.values().filter(|t| t.reasked).count();
            let repeated = storm.targets.values().filter(|t| t.asks > 1).count();
            // Failing destinations the host never asked for: consistent with neighbours the kernel
            // refused to create (no request is sent for those).
            let never_asked = failing
                .iter()
                .filter(|(_, _, dst)| !storm.targets.contains_key(&target_key(*dst)))
                .count();
            let span = storm.end_ns - storm.start_ns;
            let (confidence, facts_why) = facts_say(ctx, &asker);
            let family = if asker.is_ipv4() { "ARP" } else { "ND" };
            let mut f = Finding::new(
                &INCIDENT,
                FindingKind::Incident,
                confidence,
                format!(
                    "{asker} sent {} {family} request(s) for {distinct} distinct neighbours within {} ({unanswered} never answered, {reasked} asked again after an answer), while {} connection(s) failed (SYNs never answered): what a full neighbour table's churn looks like",
                    storm.requests,
                    super::secs(span.max(1)),
                    failing.len()
                ),
            )
            .because(format!(
                "{distinct} distinct neighbours asked for by one host within {} (a node resolving its pods and peers asks for a few per second); {repeated} of them asked more than once",
                super::secs(WINDOW_NS)
            ))
            .because(format!(
                "{} connection(s) whose SYNs were never answered began within {} of the burst",
                failing.len(),
                super::secs(AROUND_NS)
            ));
            if never_asked > 0 {
                f = f.because(format!(
                    "{never_asked} of the failing connections go to addresses the host never asked for: a neighbour the kernel refuses to create is not asked for either (ENOBUFS), while a dead peer would be"
                ));
            }
            f = f.because(facts_why);
            f = f
                .cannot_rule_out("scan", "a host scanning or sweeping many addresses asks for as many neighbours; its connections to absent hosts fail too")
                .cannot_rule_out("dead-subnet", "traffic toward a subnet whose hosts are gone (a drained node's pod range, a wrong route) is asked for and never answered")
                .cannot_rule_out(super::listen_queue_overflow::INCIDENT.id, "a capture alone cannot tell a SYN refused on the way from one the server dropped; the node's table_fulls and kernel log decide");
            if let Some(t) = ctx.node.sysctl("net.ipv4.neigh.default.gc_thresh3") {
                f = f.with_evidence(Evidence::Config {
                    source: ctx.node.source.clone(),
                    line: None,
                    text: format!("net.ipv4.neigh.default.gc_thresh3 = {}", t.trim()),
                });
            }
            let mut pkts: Vec<Marked> = storm
                .samples
                .iter()
                .map(|p| {
                    Marked::new(
                        *p,
                        format!("{family} request for {} from {}", p.dst.ip, p.src.ip),
                    )
                })
                .collect();
            for (i, r) in examples.iter().take(2).enumerate() {
                for (p, what) in r.evidence() {
                    pkts.push(
                        Marked::new(p, format!("{what} (never answered)"))
                            .flow(r.conn)
                            .decisive(i == 0 && p == r.first_syn),
                    );
                }
            }
            ids.extend(failing.iter().map(|(_, conn, _)| *conn));
            out.push(with_marked_packets(
                f,
                ctx,
                &pkts,
                "the first requests of the burst, and connections that failed meanwhile",
            ));
        }
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

/// Keeps `b` as the host's storm if it is one and the largest so far; returns how many targets the
/// burst it let go held.
fn keep_storm(best: &mut Option<Burst>, b: Burst) -> usize {
    if b.distinct() < STORM_TARGETS {
        return b.targets.len();
    }
    if best.as_ref().is_none_or(|s| s.distinct() < b.distinct()) {
        best.replace(b).map_or(0, |old| old.targets.len())
    } else {
        b.targets.len()
    }
}

/// Confidence and its reason from the node facts: the table at its limit, or overflow seen.
fn facts_say(ctx: &Context<'_>, asker: &IpAddr) -> (Confidence, String) {
    let v6 = asker.is_ipv6();
    let fam = if v6 { "ipv6" } else { "ipv4" };
    let thresh = |n: u8| {
        ctx.node
            .sysctl(&format!("net.{fam}.neigh.default.gc_thresh{n}"))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let table = ctx.node.neighbour_table.as_ref();
    let entries = table.and_then(|t| if v6 { t.ipv6_entries } else { t.ipv4_entries });
    let overflowed = table
        .is_some_and(|t| t.table_fulls.unwrap_or(0) > 0 || t.overflow_log_lines.unwrap_or(0) > 0);
    match (entries, thresh(2), thresh(3)) {
        _ if overflowed => (
            Confidence::Likely,
            "the node facts show the table overflowed (table_fulls or a \"neighbour table overflow\" log line)".into(),
        ),
        (Some(n), _, Some(t3)) if n >= t3 => (
            Confidence::Likely,
            format!("the node facts show {n} {fam} neighbour entries, at or past gc_thresh3 = {t3}: new entries are refused when forced collection frees none"),
        ),
        (Some(n), Some(t2), Some(t3)) => (
            Confidence::Possible,
            format!("the node facts show {n} {fam} neighbour entries against gc_thresh2 = {t2} / gc_thresh3 = {t3}: not at the limit when they were read"),
        ),
        _ => (
            Confidence::Possible,
            "a capture cannot see the neighbour table: the node's entries against gc_thresh3, table_fulls in /proc/net/stat/arp_cache and the kernel log (`netsleuth check`) decide".into(),
        ),
    }
}

impl super::CaptureDetector for Detector {
    fn connection(&mut self, c: &Finished<'_>) {
        Detector::connection(self, c)
    }

    fn neighbour(&mut self, p: &PktRef, msg: NeighbourMsg) {
        Detector::neighbour(self, p, msg)
    }

    fn finish(
        self: Box<Self>,
        ctx: &Context<'_>,
        explained: &[u64],
        out: &mut Vec<Finding>,
    ) -> Vec<u64> {
        Detector::finish(*self, ctx, explained, out)
    }

    fn set_max_keys(&mut self, max_keys: usize) {
        self.max_keys = max_keys;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_targets_are_keyed_by_their_solicited_node_group() {
        let target: IpAddr = "fd00::12:3456".parse().unwrap();
        let group: IpAddr = "ff02::1:ff12:3456".parse().unwrap();
        assert_eq!(target_key(target), group);
        assert_eq!(target_key(group), group);
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(target_key(v4), v4);
    }
}

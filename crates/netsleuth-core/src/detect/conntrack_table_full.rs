//! `conntrack-table-full` [issue 15]: the node's conntrack table holds `nf_conntrack_max` entries; every
//! packet that would need a new entry is dropped ("nf_conntrack: table full, dropping packet") while
//! the flows that already have one go on.

use crate::finding::Incident;

pub static INCIDENT: Incident = Incident {
    id: "conntrack-table-full",
    title: "the conntrack table is full: new connections and DNS queries are dropped while established ones go on",
    explanation: "Every flow through a node with conntrack loaded (kube-proxy, Docker, any NAT or stateful \
rule) needs an entry in the conntrack table. When nf_conntrack_count reaches nf_conntrack_max, \
__nf_conntrack_alloc first tries to evict an entry that is not ASSURED from the few hash buckets \
nearby (early_drop); when every one of them is ASSURED (established TCP, UDP that saw replies) the \
packet is dropped, the `drop` statistic rises and the kernel logs \"nf_conntrack: table full, dropping \
packet\". Packets of flows that already have an entry pass, so established connections keep working \
while new ones — SYNs and DNS queries to any destination — vanish at random until entries expire: \
connect timeouts, 1 s/3 s SYN retransmissions and 5 s DNS retries across unrelated services at once.",
    remedy: "Raise net.netfilter.nf_conntrack_max (and net.netfilter.nf_conntrack_buckets, max/4 to max/8) \
above the node's peak — kube-proxy sets it from --conntrack-max-per-core (32768 per core) and \
--conntrack-min; find what fills the table (`conntrack -L | awk '{print $3,$4}' | sort | uniq -c`) and \
shorten its timeouts (nf_conntrack_tcp_timeout_established, nf_conntrack_tcp_timeout_time_wait, \
nf_conntrack_udp_timeout_stream) or exempt it with a raw-table NOTRACK rule; alert on \
nf_conntrack_count / nf_conntrack_max above 80 %.",
    sysctls: &[
        "net.netfilter.nf_conntrack_max",
        "net.netfilter.nf_conntrack_count",
        "net.netfilter.nf_conntrack_buckets",
    ],
    versions: &[&crate::versions::CONNTRACK_MAX_INIT_NETNS_ONLY],
    evidence: "Node: `nf_conntrack_count` at or near `nf_conntrack_max` (sysctl, per network namespace), \
and its trend; `conntrack -S` `drop` rising (the packets refused) and `early_drop` rising (unassured \
entries evicted to make room); the kernel log line \"nf_conntrack: table full, dropping packet\" \
(net/netfilter/nf_conntrack_core.c, __nf_conntrack_alloc). What fills it: `conntrack -L` by state and \
destination. Capture: first packets of many unrelated flows unanswered at the same time (SYNs \
retransmitted after 1 s and 3 s, DNS queries retried) while connections that already existed keep \
exchanging data with the same servers; a node `-i any` capture shows the dropped SYNs arrive on the pod's \
interface and never leave. Not a listener's full queue (one listener, not many destinations), not \
snat-port-clash (those SYNs are answered on their retransmission a second later). Sources: kubernetes \
#58610 and kube-proxy's --conntrack-max-per-core; the nf_conntrack sysctl documentation \
(Documentation/networking/nf_conntrack-sysctl.rst).",
};

use super::{secs, with_packets, Context, Finished, SynRecord};
use crate::finding::{Confidence, Evidence, Finding, FindingKind};
use crate::flow::PktRef;
use std::net::IpAddr;

/// First SYNs and live connections kept (beyond, counted).
const MAX_RECORDS: usize = 4096;
/// Unanswered first packets this close together are one episode of a full table.
const WINDOW_NS: i64 = 5_000_000_000;
/// Distinct destinations whose new connections failed within the window: the table is the node's, so
/// it refuses new flows whatever their destination.
const MIN_DESTINATIONS: usize = 2;

/// A connection that carried data from its server: when, and from which address.
struct Alive {
    server: IpAddr,
    first_ts: i64,
    last_ts: i64,
    /// A packet from the server inside the connection's life, as evidence.
    sample: PktRef,
}

/// Recognises new connections to several unrelated destinations failing together (first SYN
/// unanswered) while a destination among them keeps answering on connections that already existed.
#[derive(Default)]
pub struct Detector {
    unanswered: Vec<(SynRecord, IpAddr)>,
    alive: Vec<Alive>,
    dropped_records: u64,
}

impl Detector {
    pub fn connection(&mut self, c: &Finished<'_>) {
        if let Some(rec) = c.syn_record() {
            if rec.first_unanswered() {
                // The destination the client meant (a Service address stays a Service address: a SYN
                // refused at the table never reaches DNAT).
                let server = c.legs[0].server.ip;
                if self.unanswered.len() < MAX_RECORDS {
                    self.unanswered.push((rec.clone(), server));
                } else {
                    self.dropped_records += 1;
                }
                return;
            }
        }
        // A connection that carried data from its server, over a span of time.
        if c.established && c.bytes[1] > 0 && c.packets >= 4 {
            let Some(sample) = c.last_pkt().filter(|p| c.leg_of(p).is_some()) else {
                return;
            };
            let server = c.legs[0].server.ip;
            if self.alive.len() < MAX_RECORDS {
                self.alive.push(Alive {
                    server,
                    first_ts: c.first_ts,
                    last_ts: c.last_ts,
                    sample,
                });
            } else {
                self.dropped_records += 1;
            }
        }
    }

    pub fn finish(self, ctx: &Context<'_>, explained: &[u64], out: &mut Vec<Finding>) -> Vec<u64> {
        // Failed first SYNs that no earlier detector explained and that had time to be retransmitted.
        let mut fails: Vec<&(SynRecord, IpAddr)> = self
            .unanswered
            .iter()
            .filter(|(r, _)| explained.binary_search(&r.conn).is_err())
            .filter(|(r, _)| {
                r.transmissions >= 2
                    || (!r.answered
                        && ctx.capture_end_ns.saturating_sub(r.first_syn.ts_ns) >= 3_000_000_000)
            })
            .collect();
        fails.sort_by_key(|(r, _)| r.first_syn.ts_ns);
        // The window with the most distinct destinations.
        let mut best: Option<(usize, usize, usize)> = None; // (distinct, lo, hi)
        for lo in 0..fails.len() {
            let t0 = fails[lo].0.first_syn.ts_ns;
            let hi = fails.partition_point(|(r, _)| r.first_syn.ts_ns <= t0 + WINDOW_NS);
            let mut ips: Vec<IpAddr> = fails[lo..hi].iter().map(|(_, ip)| *ip).collect();
            ips.sort_unstable();
            ips.dedup();
            if best.is_none_or(|b| ips.len() > b.0) {
                best = Some((ips.len(), lo, hi));
            }
        }
        let Some((distinct, lo, hi)) = best else {
            return Vec::new();
        };
        if distinct < MIN_DESTINATIONS {
            return Vec::new();
        }
        let window = &fails[lo..hi];
        let start = window[0].0.first_syn.ts_ns;
        let end = window[window.len() - 1].0.first_syn.ts_ns;
        let mut dests: Vec<IpAddr> = window.iter().map(|(_, ip)| *ip).collect();
        dests.sort_unstable();
        dests.dedup();
        // A destination among the failing ones answered on a connection that lived across the
        // episode: it was up and reachable, so its new connections were refused on the way.
        let proof = self
            .alive
            .iter()
            .filter(|a| a.first_ts < start && a.last_ts > end)
            .find(|a| dests.contains(&a.server));
        let Some(proof) = proof else {
            // Dead hosts, a stale endpoint list, a scan: the first packets of new flows to hosts
            // nothing proves alive. A symptom (retransmitted SYNs), not this incident.
            return Vec::new();
        };
        let count = ctx
            .node
            .sysctl("net.netfilter.nf_conntrack_count")
            .and_then(|v| v.trim().parse::<u64>().ok());
        let max = ctx
            .node
            .sysctl("net.netfilter.nf_conntrack_max")
            .and_then(|v| v.trim().parse::<u64>().ok());
        let near_full = match (count, max) {
            (Some(c), Some(m)) if m > 0 => Some(c * 100 >= m * 90),
            _ => None,
        };
        let mut confidence = if distinct >= 3 {
            Confidence::Likely
        } else {
            Confidence::Possible
        };
        match near_full {
            Some(true) => {
                confidence = if confidence == Confidence::Likely {
                    Confidence::Confirmed
                } else {
                    Confidence::Likely
                }
            }
            Some(false) => confidence = Confidence::Possible,
            None => {}
        }
        let mut f = Finding::new(
            &INCIDENT,
            FindingKind::Incident,
            confidence,
            format!(
                "{} new connection(s) to {} different destinations got no answer within {} while an existing connection to {} kept flowing",
                window.len(),
                distinct,
                secs((end - start).max(0)),
                proof.server
            ),
        )
        .because(format!(
            "the first SYNs of connections to {} went unanswered at the same time: a drop that does not depend on the destination",
            dests.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
        ))
        .because(format!(
            "{} answered on a connection that already existed throughout: the destination was up and reachable, only new flows were refused, which is how a full conntrack table behaves (entries that exist still match)",
            proof.server
        ));
        if distinct < 3 {
            f = f.because("only two destinations failed together: a full table is the simplest explanation, not the only one");
        }
        match (near_full, count, max) {
            (Some(true), Some(c), Some(m)) => {
                f = f
                    .because(format!("the node facts show nf_conntrack_count {c} of nf_conntrack_max {m}: the table is full"))
                    .with_evidence(Evidence::Config {
                        source: ctx.node.source.clone(),
                        line: None,
                        text: format!("net.netfilter.nf_conntrack_count = {c}"),
                    })
                    .with_evidence(Evidence::Config {
                        source: ctx.node.source.clone(),
                        line: None,
                        text: format!("net.netfilter.nf_conntrack_max = {m}"),
                    });
            }
            (Some(false), Some(c), Some(m)) => {
                f = f.because(format!("the node facts show nf_conntrack_count {c} of nf_conntrack_max {m} when they were read: not full then (it may have been during the capture; `conntrack -S` drop decides)"));
            }
            _ => {
                f = f.because("whether the table was full is a node fact (nf_conntrack_count against nf_conntrack_max, `conntrack -S` drop, the kernel's \"table full\" log line); give --node to decide");
            }
        }
        f = f
            .rules_out(super::listen_queue_overflow::INCIDENT.id, format!("{distinct} different destinations refused new connections at once; a full accept queue is one listener's"))
            .rules_out(super::snat_port_clash::INCIDENT.id, "the SYNs were not answered on their retransmission a second later, as a lost conntrack insert race's are")
            .rules_out("server-down", format!("{} answered an existing connection during the same seconds", proof.server))
            .cannot_rule_out("stateful-middlebox-full", "a firewall or NAT gateway with its own full state table on the same path looks the same from here; the node's conntrack counters decide");
        let mut pkts: Vec<(PktRef, String)> = Vec::new();
        for (r, _) in window.iter().take(4) {
            pkts.extend(r.evidence());
        }
        pkts.push((
            proof.sample,
            format!(
                "an existing connection's packet during the same seconds: {}",
                proof.sample.tcp_what()
            ),
        ));
        out.push(with_packets(
            f,
            ctx,
            &pkts,
            "new connections unanswered while an existing one flows",
        ));
        window.iter().map(|(r, _)| r.conn).collect()
    }
}

impl super::CaptureDetector for Detector {
    fn connection(&mut self, c: &Finished<'_>) {
        Detector::connection(self, c)
    }

    fn finish(
        self: Box<Self>,
        ctx: &Context<'_>,
        explained: &[u64],
        out: &mut Vec<Finding>,
    ) -> Vec<u64> {
        Detector::finish(*self, ctx, explained, out)
    }
}

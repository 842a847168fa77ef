//! `snat-port-clash` [seed 003]: concurrent SYNs get the same SNAT tuple; the second conntrack insert
//! fails and its SYN is dropped.

use crate::finding::Incident;
use crate::versions;

pub static INCIDENT: Incident = Incident {
    id: "snat-port-clash",
    title: "SYN dropped at conntrack insert after an SNAT port clash",
    explanation: "NAT picks a source port when a connection's first packet is processed, but the conntrack \
entry is inserted only at the end of the path, without a lock in between. Two connections leaving at the \
same moment can be given the same translated tuple; the second insert fails (conntrack stats \
insert_failed, drop), its SYN is dropped, and the client retransmits it about 1 s later.",
    remedy: "Add --random-fully to the MASQUERADE/SNAT rules (nft: 'masquerade fully-random'; kube-proxy \
and flannel do it on recent versions), widen the SNAT port range or the set of SNAT addresses, and \
avoid SNAT for pod-to-pod traffic.",
    // nf_conntrack_max decides conntrack-table-full (each sysctl names one incident for `diff`).
    sysctls: &["net.ipv4.ip_local_port_range"],
    versions: &[&versions::CLASH_RESOLVE_STAT, &versions::DROP_REASONS],
    evidence: "Counters: conntrack stats `insert_failed` and `drop` rising on the NATing node (before 5.10 \
`insert_failed` also counted resolved clashes; since 5.10 `clash_resolve` counts those). Drop reason (≥5.17): \
NETFILTER_DROP. Capture: client SYN retransmitted after ~1 s with the same source port; the node's egress shows \
only one of two near-simultaneous SYNs. Node: MASQUERADE/SNAT without `--random-fully` (nft: `fully-random`).",
};

use super::{secs, with_marked_packets, Context, Finished, Marked};
use crate::finding::{Confidence, Finding, FindingKind};
use crate::flow::tcp::Conn;
use crate::flow::{Endpoint, FxHashMap, PktRef};

const MAX_KEEP: usize = 4096;
/// Another connection's SYN this close to the dropped one makes the two concurrent.
const CONCURRENT_NS: i64 = 20_000_000;

#[derive(Debug, Clone)]
struct Drop {
    conn: u64,
    /// The first SYN, seen only before NAT.
    syn: PktRef,
    /// The retransmission that made it through, seen after NAT too.
    through: PktRef,
    through_after_nat: Option<PktRef>,
    /// True when the capture shows the point after NAT and the first SYN is missing there.
    nat_point_seen: bool,
}

/// Recognises SYNs that vanish between the node's ingress and egress (dropped at conntrack insert)
/// while another connection's SYN to the same destination goes through, then pass on retransmission.
#[derive(Default)]
pub struct Detector {
    /// Most distinct keys kept (0: the default `MAX_KEYS`).
    max_keys: usize,
    drops: Vec<Drop>,
    total_drops: u32,
    /// First-SYN times per destination (post-NAT server endpoint and pre-NAT), to prove concurrency.
    syn_times: FxHashMap<Endpoint, Vec<(i64, u64, PktRef)>>,
}

impl Detector {
    pub fn connection(&mut self, c: &Conn) {
        // A SYN answered by a TIME_WAIT socket's bare ACK reached the server: not a drop.
        if !c.roles_known || c.syns.is_empty() || c.syn_answered_by_ack.is_some() {
            return;
        }
        for leg in &c.legs {
            if let Some(v) = super::capped_entry(&mut self.syn_times, leg.server, self.max_keys) {
                if v.len() < MAX_KEEP {
                    v.push((c.syns[0].pkt.ts_ns, c.id, c.syns[0].pkt));
                }
            }
        }
        if c.syns.len() < 2 {
            return;
        }
        // A SYN DNATed to its own sender and lost there is the bridge's hairpin (hairpin-off), not a
        // clash: its retransmission may be balanced elsewhere and pass, which looks like one.
        let sender = c.legs[0].client.ip;
        if c.legs.iter().skip(1).any(|l| l.server.ip == sender) {
            return;
        }
        let first = &c.syns[0];
        let Some(later) = c.syns[1..]
            .iter()
            .find(|s| s.legs_seen & !first.legs_seen != 0)
        else {
            // Client view only: the first SYN unanswered, retransmitted ~1 s later, then answered.
            if c.legs.len() == 1 && c.synack.is_some_and(|a| a.ts_ns > c.syns[1].pkt.ts_ns) {
                let gap = c.syns[1].pkt.ts_ns.saturating_sub(first.pkt.ts_ns);
                if (700_000_000..=1_500_000_000).contains(&gap) {
                    self.total_drops += 1;
                    if self.drops.len() < MAX_KEEP {
                        self.drops.push(Drop {
                            conn: c.id,
                            syn: first.pkt,
                            through: c.syns[1].pkt,
                            through_after_nat: None,
                            nat_point_seen: false,
                        });
                    }
                }
            }
            return;
        };
        // The later transmission was seen on a leg the first never reached: the first SYN was lost
        // between the capture points, i.e. inside this node, after NAT chose its tuple.
        // The kernel re-sends an unanswered SYN after 1 s (then 3, 7 s): anything much sooner is a
        // duplicate on the wire, not a retransmission after a drop.
        let gap = later.pkt.ts_ns.saturating_sub(first.pkt.ts_ns);
        if !(500_000_000..=8_000_000_000).contains(&gap) {
            return;
        }
        let missing = (later.legs_seen & !first.legs_seen).trailing_zeros() as usize;
        let after_nat = c.legs.get(missing).map(|l| l.first);
        self.total_drops += 1;
        if self.drops.len() < MAX_KEEP {
            self.drops.push(Drop {
                conn: c.id,
                syn: first.pkt,
                through: later.pkt,
                through_after_nat: after_nat,
                nat_point_seen: true,
            });
        }
    }

    pub fn finish(self, ctx: &Context<'_>, explained: &[u64], out: &mut Vec<Finding>) -> Vec<u64> {
        let mut confirmed = Vec::new();
        let mut unproven = Vec::new();
        // Drops a more specific detector explained (a reused port's SYN dropped by IPVS) are its.
        for d in self
            .drops
            .iter()
            .filter(|d| explained.binary_search(&d.conn).is_err())
        {
            let concurrent = self
                .syn_times
                .get(&d.syn.dst)
                .and_then(|v| {
                    let near = |(t, id, _): &&(i64, u64, PktRef)| {
                        *id != d.conn
                            && t.saturating_sub(d.syn.ts_ns).saturating_abs() <= CONCURRENT_NS
                    };
                    // Prefer a partner from another host: that is what collides behind a NAT.
                    v.iter()
                        .filter(near)
                        .find(|x| x.2.src.ip != d.syn.src.ip)
                        .or_else(|| v.iter().find(near))
                })
                .map(|x| x.2);
            if d.nat_point_seen {
                confirmed.push((d, concurrent));
            } else if concurrent.is_some_and(|k| k.src.ip != d.syn.src.ip) {
                // Without the post-NAT view, only SYNs from several hosts behind one NAT colliding
                // point at the NAT; one host's SYN burst going unanswered is a listener's story.
                unproven.push((d, concurrent));
            }
        }
        let mut explained = Vec::new();
        let (cases, confidence) = if !confirmed.is_empty() {
            let c = if confirmed.iter().any(|(_, k)| k.is_some()) {
                Confidence::Confirmed
            } else {
                Confidence::Likely
            };
            (confirmed, c)
        } else if unproven.len() >= 2 {
            (unproven, Confidence::Possible)
        } else {
            return explained;
        };
        explained.extend(cases.iter().map(|(d, _)| d.conn));
        let first = cases[0].0;
        let mut f = Finding::new(
            &INCIDENT,
            FindingKind::Incident,
            confidence,
            format!(
                "{} SYN(s) to {} dropped inside the NATing node and retransmitted ~{} later",
                cases.len(),
                first.syn.dst,
                secs(first.through.ts_ns.saturating_sub(first.syn.ts_ns))
            ),
        );
        if confidence == Confidence::Possible {
            f = f
                .because("the capture shows only the client's side: SYNs sent together with other SYNs to the same destination went unanswered and were retransmitted about 1 s later with the same source port")
                .because("a capture on the NATing node (-i any) would show whether they died between its ingress and egress");
        } else {
            f = f.because("the first SYN was seen before NAT but not after it, while the retransmission was seen at both points: it was dropped inside the node between the NAT decision and transmission, where conntrack insert fails on a clash");
            if confidence == Confidence::Confirmed {
                f = f.because("another connection's SYN to the same destination passed at the same moment: the two were given the same translated tuple");
            } else {
                f = f.because("no concurrent SYN to the same destination is in the capture, so the clash partner is not shown");
            }
        }
        if !ctx.node.masquerade_without_random_fully.is_empty() {
            for rule in ctx.node.masquerade_without_random_fully.iter().take(3) {
                f = f.with_evidence(crate::finding::Evidence::Config {
                    source: ctx.node.source.clone(),
                    line: None,
                    text: rule.clone(),
                });
            }
            f = f.because("the node NATs with rules lacking --random-fully");
        }
        let mut pkts = Vec::new();
        for (d, concurrent) in cases.iter().take(3) {
            // The first SYN, lost between the NAT decision and the wire, decides.
            pkts.push(
                Marked::new(d.syn, "SYN seen before NAT only".to_string())
                    .flow(d.conn)
                    .decisive(true),
            );
            if let Some(k) = concurrent {
                pkts.push(Marked::new(
                    *k,
                    "concurrent SYN of another connection to the same destination".to_string(),
                ));
            }
            pkts.push(
                Marked::new(
                    d.through,
                    format!(
                        "retransmission after {}",
                        secs(d.through.ts_ns.saturating_sub(d.syn.ts_ns))
                    ),
                )
                .flow(d.conn),
            );
            if let Some(a) = d.through_after_nat {
                pkts.push(Marked::new(a, "the retransmission after NAT".to_string()).flow(d.conn));
            }
        }
        if self.total_drops as usize > cases.len() {
            f = f.because(format!(
                "{} SYN drops of this shape in all",
                self.total_drops
            ));
        }
        f = f
            .rules_out(super::listen_queue_overflow::INCIDENT.id, "the SYNs were lost between the node's NAT decision and its egress (or, from the client, only those sent together with another to the same destination), not at a listener that answered others in bursts")
            .rules_out(super::tw_recycle_paws::INCIDENT.id, "the lost SYN's retransmission with the same timestamp clock was answered: the server did not reject it for its timestamp")
            .cannot_rule_out("conntrack-table-full", "a full conntrack table also drops first packets; `conntrack -S` (insert_failed rising vs drop rising) decides");
        out.push(with_marked_packets(
            f,
            ctx,
            &pkts,
            "SYNs lost between the NAT decision and the wire",
        ));
        explained
    }
}

impl super::CaptureDetector for Detector {
    fn set_max_keys(&mut self, max_keys: usize) {
        self.max_keys = max_keys;
    }

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

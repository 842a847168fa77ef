//! `dns-conntrack-race` [seed 003]: parallel A and AAAA queries from one UDP socket race through DNAT;
//! one is dropped at conntrack insert and the client waits for its resolver timeout.

use crate::finding::Incident;
use crate::versions;

pub static INCIDENT: Incident = Incident {
    id: "dns-conntrack-race",
    title: "one of the parallel A/AAAA DNS queries lost at conntrack insert: 5 s lookups",
    explanation: "glibc and musl send the A and AAAA queries of one lookup together from the same UDP \
socket. Both packets create a conntrack entry for the same tuple at the same time; they race through DNAT \
to the DNS ClusterIP and the loser's insert fails (insert_failed), so that query is dropped. The client waits \
its timeout (5 s by default) and re-sends: lookups take 5 s. Clash resolution in kernels 4.19, 5.0 and \
~5.6 made it rarer.",
    remedy: "Add 'options single-request-reopen' (glibc; or single-request, or use-vc for TCP) to the \
pods' resolv.conf via dnsConfig; for musl-based images (which ignore those options) run NodeLocal \
DNSCache; upgrade the node kernel (clash resolution, 5.x).",
    sysctls: &[],
    versions: &[&versions::CLASH_RESOLVE_MATCHING, &versions::CLASH_NAT_SAME_ORIGIN, &versions::CLASH_INSERT_CLASHING, &versions::MUSL_RESOLV_OPTIONS],
    evidence: "Capture: A and AAAA from the same IP:port within microseconds to the DNS ClusterIP; one \
answered, the other re-sent after 5 s (glibc `timeout:5 attempts:2`). Counters: `insert_failed`/`drop`. Kernel \
history: clash resolution 4.19 (ed07d9a021df), 5.0 (4e35c1cb9460), ≈5.6 (6a757c07e51f). Node/containers: \
resolv.conf `options single-request-reopen` / `single-request` / `use-vc`, NodeLocal DNSCache; musl ignores \
those options (it parses only `ndots`, `attempts`, `timeout`).",
};

use super::{secs, with_marked_packets, Context, Marked};
use crate::finding::{Confidence, DnsFields, Finding, FindingKind};
use crate::flow::dns::{DnsQuery, FinishedQuery, QTYPE_A};

struct Case {
    lost: DnsQuery,
    answered: DnsQuery,
    /// The lost query was seen at fewer points than its answered sibling: it died at NAT.
    died_at_nat: bool,
}

/// Recognises a parallel A/AAAA pair from one socket where one query is answered and the other is
/// never answered and re-sent after the resolver's timeout.
#[derive(Default)]
pub struct Detector {
    cases: Vec<Case>,
    total: u32,
}

fn qt(q: &DnsQuery) -> &'static str {
    if q.qtype == QTYPE_A {
        "A"
    } else {
        "AAAA"
    }
}

impl Detector {
    pub fn query(&mut self, f: &FinishedQuery) {
        let Some(sib) = &f.younger_sibling else {
            return;
        };
        let q = &f.query;
        if q.tcp || sib.tcp || q.id == sib.id {
            // Same id is the musl collision, a different incident.
            return;
        }
        let (lost, answered) = match (q.response.is_some(), sib.response.is_some()) {
            (true, false) => (sib, q),
            (false, true) => (q, sib),
            _ => return,
        };
        // The resolver must have given up on it and re-sent it after its timeout (glibc and musl wait
        // 5 s by default; a quicker retry is another resolver's ordinary loss recovery).
        let Some(retry) = lost.retry else { return };
        if retry.ts_ns.saturating_sub(lost.pkt.ts_ns) < 2_000_000_000 {
            return;
        }
        if lost.points.len() > 1 && lost.points.len() >= answered.points.len() {
            // The lost query was seen on both sides of the DNAT, as far as its answered twin: it got
            // through conntrack, so it was lost beyond the node, not in the insert race.
            return;
        }
        self.total += 1;
        if self.cases.len() < 3 {
            let died_at_nat = answered.points.len() > lost.points.len();
            self.cases.push(Case {
                lost: lost.clone(),
                answered: answered.clone(),
                died_at_nat,
            });
        }
    }

    pub fn finish(self, ctx: &Context<'_>, out: &mut Vec<Finding>) {
        let Some(first) = self.cases.first() else {
            return;
        };
        let any_nat = self.cases.iter().any(|c| c.died_at_nat);
        // Seen at one point only, one lookup that lost one query of its pair is what any lost packet
        // looks like (a query lost beyond the node, on the way to an upstream): a symptom, listed with
        // the causes considered. The race repeats: it takes two such lookups to name it from one point.
        if !any_nat && self.total < 2 {
            return;
        }
        let confidence = if any_nat {
            Confidence::Confirmed
        } else {
            Confidence::Likely
        };
        let retry_after = first
            .lost
            .retry
            .map(|r| r.ts_ns.saturating_sub(first.lost.pkt.ts_ns))
            .unwrap_or(0);
        let mut f = Finding::new(
            &INCIDENT,
            FindingKind::Incident,
            confidence,
            format!(
                "{} lookup(s) from {} to {} lost one of their parallel A/AAAA queries and waited {} to retry",
                self.total,
                first.lost.client(),
                first.lost.server(),
                secs(retry_after)
            ),
        )
        .because("the A and AAAA queries left the same UDP socket together; one was answered, the other never, and the resolver re-sent it only after its timeout");
        if any_nat {
            f = f.because("the lost query was seen before DNAT but not after it, while its twin was seen at both points: it was dropped inside the node at NAT, where the conntrack insert of the second packet of a new UDP flow fails");
        } else {
            f = f.because(format!("{} lookups lost one query of their pair the same way: the race's pattern, where one lost packet would be chance", self.total))
                .because("the capture shows one point only, so where the queries died is not shown; a capture on the node (-i any) would prove it: a query seen before DNAT and not after it");
        }
        let mut pkts: Vec<Marked> = Vec::new();
        for (lookup, c) in self.cases.iter().enumerate() {
            let lookup = lookup as u64;
            let dns = |q: &DnsQuery, response: bool, retry: bool| DnsFields {
                id: q.id,
                qtype: qt(q),
                response,
                retry,
            };
            pkts.push(
                Marked::new(
                    c.answered.pkt,
                    format!(
                        "{} {}? id=0x{:04x}",
                        qt(&c.answered),
                        c.answered.qname,
                        c.answered.id
                    ),
                )
                .flow(lookup)
                .dns(dns(&c.answered, false, false)),
            );
            if let Some(r) = &c.answered.response {
                pkts.push(
                    Marked::new(
                        r.pkt,
                        format!("answer to {} id=0x{:04x}", qt(&c.answered), c.answered.id),
                    )
                    .flow(lookup)
                    .dns(dns(&c.answered, true, false)),
                );
            }
            pkts.push(
                Marked::new(
                    c.lost.pkt,
                    format!(
                        "{} {}? id=0x{:04x}: never answered",
                        qt(&c.lost),
                        c.lost.qname,
                        c.lost.id
                    ),
                )
                .flow(lookup)
                .decisive(true)
                .dns(dns(&c.lost, false, false)),
            );
            if let Some(r) = c.lost.retry {
                pkts.push(
                    Marked::new(
                        r,
                        format!(
                            "{} re-sent after {}",
                            qt(&c.lost),
                            secs(r.ts_ns.saturating_sub(c.lost.pkt.ts_ns))
                        ),
                    )
                    .flow(lookup)
                    .dns(dns(&c.lost, false, true)),
                );
            }
        }
        f = f
            .rules_out(super::dns_upstream_unreachable::INCIDENT.id, "the server answered the twin query from the same socket at the same moment: it is alive and reachable")
            .rules_out(super::dns_id_collision::INCIDENT.id, "the two queries carry different ids and only one was answered: no answer was taken for the wrong question");
        out.push(with_marked_packets(
            f,
            ctx,
            &pkts,
            "parallel A/AAAA queries, one lost",
        ));
    }
}

impl super::CaptureDetector for Detector {
    fn query(&mut self, q: &FinishedQuery) {
        Detector::query(self, q)
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

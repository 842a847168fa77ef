//! `dns-id-collision` [seed 003]: musl before 1.2.4 can give the parallel A and AAAA queries the same
//! ID; the AAAA answer arrives first and is taken for the A answer.

use crate::finding::Incident;
use crate::versions;

pub static INCIDENT: Incident = Incident {
    id: "dns-id-collision",
    title: "parallel A and AAAA queries share one DNS ID; the AAAA answer is taken for the A answer",
    explanation: "musl before 1.2.4 derives the query ID from the clock without a lock, so the A and AAAA \
queries of one lookup can carry the same ID. The client matches answers by ID; when the AAAA answer \
(NODATA or IPv6 records) arrives first it is taken for both, so the name looks unresolvable or resolves \
to an IPv6 address the pod cannot reach.",
    remedy: "Use an image with musl 1.2.4 or later (Alpine 3.18+), or a glibc-based image.",
    sysctls: &[],
    versions: &[&versions::MUSL_DNS_ID_UNIQUE],
    evidence: "Capture: A and AAAA from one socket carrying the same DNS ID; the AAAA response (NODATA or \
AAAA records) arrives first. Container: libc is musl < 1.2.4 (Alpine < 3.18; fix 6c858d6f).",
};

use super::{with_marked_packets, Context, Marked};
use crate::finding::{Confidence, DnsFields, Evidence, Finding, FindingKind};
use crate::flow::dns::{DnsQuery, FinishedQuery, QTYPE_AAAA};
use crate::flow::Endpoint;
use std::collections::VecDeque;

/// Recognises parallel A and AAAA queries of one lookup carrying the same DNS ID where the AAAA
/// answer reached the client first.
#[derive(Default)]
pub struct Detector {
    cases: Vec<(DnsQuery, DnsQuery)>,
    total: u32,
    same_id_pairs: u32,
    /// Lookups seen lately (client socket, id, name) and whether each was counted as AAAA-first: musl
    /// sends its pair to every nameserver at once, one pair per server, and that is one lookup.
    recent: VecDeque<(LookupKey, bool)>,
    /// Pairs that were the same lookup sent to a further nameserver.
    further_servers: u32,
}

type LookupKey = (Endpoint, u16, Box<str>);

/// Lookups remembered to recognise one lookup's pairs to several nameservers (finalised together).
const RECENT_LOOKUPS: usize = 64;

impl Detector {
    pub fn query(&mut self, f: &FinishedQuery) {
        let Some(sib) = &f.younger_sibling else {
            return;
        };
        let q = &f.query;
        if q.id != sib.id {
            return;
        }
        let key: LookupKey = (q.client(), q.id, q.qname.to_ascii_lowercase().into());
        let seen = self.recent.iter().position(|(k, _)| *k == key);
        if seen.is_none() {
            self.same_id_pairs += 1;
        } else {
            self.further_servers += 1;
        }
        let (a, aaaa) = if q.qtype == QTYPE_AAAA {
            (sib, q)
        } else {
            (q, sib)
        };
        let t = |x: &DnsQuery| {
            x.response_at_origin
                .as_ref()
                .or(x.response.as_ref())
                .map(|r| r.pkt.ts_ns)
        };
        let aaaa_first = match (t(a), t(aaaa)) {
            (Some(ta), Some(tb)) => tb < ta,
            (None, Some(_)) => true,
            _ => false,
        };
        match seen {
            Some(i) => {
                if self.recent[i].1 || !aaaa_first {
                    return;
                }
                self.recent[i].1 = true;
            }
            None => {
                if self.recent.len() == RECENT_LOOKUPS {
                    self.recent.pop_front();
                }
                self.recent.push_back((key, aaaa_first));
                if !aaaa_first {
                    return;
                }
            }
        }
        self.total += 1;
        if self.cases.len() < 3 {
            self.cases.push((a.clone(), aaaa.clone()));
        }
    }

    pub fn finish(self, ctx: &Context<'_>, out: &mut Vec<Finding>) {
        let Some((a, _)) = self.cases.first() else {
            return;
        };
        // A container on the node with a musl that lacks distinct query IDs is the client library
        // that does this.
        let fix = &versions::MUSL_DNS_ID_UNIQUE;
        let old_musl: Vec<_> = ctx
            .node
            .resolvers
            .iter()
            .filter(|r| r.libc.as_deref() == Some("musl"))
            .filter(|r| r.libc_version.as_deref().and_then(|v| fix.has(v)) == Some(false))
            .collect();
        let fixed_in = fix.mainline().unwrap_or("?");
        let confidence = if old_musl.is_empty() {
            Confidence::Likely
        } else {
            Confidence::Confirmed
        };
        let mut f = Finding::new(
            &INCIDENT,
            FindingKind::Incident,
            confidence,
            format!(
                "{} lookup(s) from {} sent A and AAAA with the same DNS ID and got the AAAA answer first (e.g. {} id=0x{:04x})",
                self.total,
                a.client(),
                a.qname,
                a.id
            ),
        )
        .because("both queries left one socket together with one ID, so a client that matches answers by ID alone takes the first answer, the AAAA one, for both")
        ;
        if old_musl.is_empty() {
            f = f.because(format!("the capture cannot show the client's libc; musl before {fixed_in} behaves this way (give --node with a bundle of the node to check the pods' images)"));
        } else {
            for r in old_musl.iter().take(3) {
                f = f.with_evidence(Evidence::Fact {
                    source: ctx.node.source.clone(),
                    text: format!(
                        "{}: musl {} ({})",
                        r.name,
                        r.libc_version.as_deref().unwrap_or("?"),
                        r.libc_evidence
                    ),
                });
            }
            f = f.because(format!("the node runs musl before {fixed_in} ({}), the library that gives both queries one ID and takes the first answer for both", fix.source));
        }
        if self.further_servers > 0 {
            f = f.because(format!(
                "{} further same-ID pair(s) were the same lookups sent to another nameserver at once (musl asks every nameserver of resolv.conf): counted once per lookup",
                self.further_servers
            ));
        }
        if self.same_id_pairs > self.total {
            f = f.because(format!(
                "{} same-ID pairs in all; in the others the A answer came first",
                self.same_id_pairs
            ));
        }
        let mut pkts: Vec<Marked> = Vec::new();
        for (lookup, (a, aaaa)) in self.cases.iter().enumerate() {
            let lookup = lookup as u64;
            let dns = |id: u16, qtype: &'static str, response: bool| DnsFields {
                id,
                qtype,
                response,
                retry: false,
            };
            pkts.push(
                Marked::new(a.pkt, format!("A {}? id=0x{:04x}", a.qname, a.id))
                    .flow(lookup)
                    .dns(dns(a.id, "A", false)),
            );
            pkts.push(
                Marked::new(
                    aaaa.pkt,
                    format!("AAAA {}? id=0x{:04x} (same ID)", aaaa.qname, aaaa.id),
                )
                .flow(lookup)
                .dns(dns(aaaa.id, "AAAA", false)),
            );
            // The AAAA answer, first in, is the one the client takes for both questions.
            if let Some(r) = aaaa.response_at_origin.as_ref().or(aaaa.response.as_ref()) {
                pkts.push(
                    Marked::new(
                        r.pkt,
                        format!(
                            "AAAA answer first ({} AAAA records, rcode {})",
                            r.answers_aaaa, r.rcode
                        ),
                    )
                    .flow(lookup)
                    .decisive(true)
                    .dns(dns(aaaa.id, "AAAA", true)),
                );
            }
            if let Some(r) = a.response_at_origin.as_ref().or(a.response.as_ref()) {
                pkts.push(
                    Marked::new(
                        r.pkt,
                        format!("A answer second ({} A records)", r.answers_a),
                    )
                    .flow(lookup)
                    .dns(dns(a.id, "A", true)),
                );
            }
        }
        f = f
            .rules_out(
                super::dns_conntrack_race::INCIDENT.id,
                "both queries were answered; none was lost at NAT",
            )
            .rules_out(
                super::dns_upstream_unreachable::INCIDENT.id,
                "the servers answered",
            );
        out.push(with_marked_packets(
            f,
            ctx,
            &pkts,
            "parallel queries sharing one DNS ID",
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

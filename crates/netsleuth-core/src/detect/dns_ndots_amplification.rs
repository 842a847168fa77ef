//! `dns-ndots-amplification`: with Kubernetes' `options ndots:5` and a search list of three or more
//! domains, every name with fewer than five dots is first asked under each search domain; an external
//! name costs 8–12 queries, most of them NXDOMAIN. Usually a latent risk or a contributing cause (the
//! walk multiplies the cost of a slow search-domain answer), rarely an incident on its own.

use crate::finding::Incident;
use crate::versions;

pub static INCIDENT: Incident = Incident {
    id: "dns-ndots-amplification",
    title: "search-list walk: every external name is asked under each search domain first",
    explanation: "A pod's resolv.conf (kubelet's ClusterFirst policy) has `options ndots:5` and a search \
list of `<ns>.svc.cluster.local svc.cluster.local cluster.local` plus the node's own domains. A name with \
fewer than five dots (`api.example.com`) is first tried under every search domain, A and AAAA each, and \
only then as itself: 8–12 queries per lookup, all but the last two NXDOMAIN. The DNS path (CoreDNS, \
conntrack, the upstream for the node's search domains) carries four to six times the load, and a lookup \
waits for every NXDOMAIN in turn, so one slow search domain makes every external lookup slow.",
    remedy: "Write external names as FQDNs with a trailing dot (`api.example.com.`) in the application's \
configuration; or lower ndots for the pod (`dnsConfig: options: [{name: ndots, value: \"2\"}]`); or \
drop the node's own search domains from pods (kubelet --resolv-conf pointing at a file without them). \
NodeLocal DNSCache absorbs the NXDOMAIN load; CoreDNS `autopath` answers the walk in one round trip.",
    sysctls: &[],
    versions: &[&versions::MUSL_RESOLV_OPTIONS],
    evidence: "Capture: from one client, queries for `NAME.<search domain>` answered NXDOMAIN for two or \
more search domains, then `NAME` itself answered (a search-list walk); the query count per lookup and the \
time the walk added before the name's own query. Node/containers: the pod's resolv.conf `options ndots:N` \
with N > 1 and a `search` line of three or more domains (`netsleuth check`). Query rate per pod: \
CoreDNS's `coredns_dns_requests_total` by rcode (NXDOMAIN share).",
};

use super::{capped_entry, secs, with_packets, Context};
use crate::finding::{Confidence, Finding, FindingKind};
use crate::flow::dns::{DnsQuery, FinishedQuery, QTYPE_A};
use crate::flow::{FxHashMap, PktRef};
use std::collections::VecDeque;
use std::net::IpAddr;

/// A walk's NXDOMAINs must come within this time before the name's own query.
const WALK_WINDOW_NS: i64 = 10_000_000_000;
/// NXDOMAIN answers kept per client while waiting for the name they belong to.
const MISSES_PER_CLIENT: usize = 24;
/// Distinct search domains tried before the name itself: two or more is a walk (one is the normal
/// in-cluster `svc` → `svc.<ns>.svc.cluster.local` hit on a later domain).
const MIN_SUFFIXES: usize = 2;
/// A walk that delayed the name's own query by this much made the lookup slow.
const COSTLY_WALK_NS: i64 = 1_000_000_000;

struct Miss {
    name: Box<str>,
    qtype: u16,
    pkt: PktRef,
    answer: Option<PktRef>,
}

/// One lookup whose name was asked under search domains first.
struct Walk {
    client: IpAddr,
    name: Box<str>,
    suffixes: Vec<Box<str>>,
    misses: Vec<Miss>,
    /// The name's own query, its type and its answer.
    query: PktRef,
    qtype: u16,
    answer: PktRef,
    /// From the first search-domain query to the name's own query.
    cost_ns: i64,
    /// The slowest NXDOMAIN answer of the walk.
    slowest_miss_ns: i64,
}

/// Recognises search-list walks: NXDOMAINs for `NAME.<suffix>` from one client, then `NAME` answered.
#[derive(Default)]
pub struct Detector {
    misses: FxHashMap<IpAddr, VecDeque<Miss>>,
    max_keys: usize,
    walks: u32,
    walk_queries: u64,
    lookups_queries: u64,
    clients: Vec<IpAddr>,
    worst: Option<Walk>,
    costly: u32,
    worst_costly: Option<Walk>,
}

fn qt(t: u16) -> &'static str {
    if t == QTYPE_A {
        "A"
    } else {
        "AAAA"
    }
}

impl Detector {
    pub fn query(&mut self, f: &FinishedQuery) {
        // Each query is handed out once as `query` (a younger sibling comes again on its own), in
        // the order it was sent: a walk's NXDOMAINs arrive before the name's own answer.
        self.one(&f.query);
    }

    fn one(&mut self, q: &DnsQuery) {
        if q.tcp {
            return;
        }
        let Some(r) = &q.response else { return };
        let client = q.client().ip;
        let now = q.pkt.ts_ns;
        if r.rcode == 3 {
            let Some(ring) = capped_entry(&mut self.misses, client, self.max_keys) else {
                return;
            };
            while ring
                .front()
                .is_some_and(|m| now.saturating_sub(m.pkt.ts_ns) > WALK_WINDOW_NS)
            {
                ring.pop_front();
            }
            if ring.len() >= MISSES_PER_CLIENT {
                ring.pop_front();
            }
            ring.push_back(Miss {
                name: q.qname.to_ascii_lowercase().into(),
                qtype: q.qtype,
                pkt: q.pkt,
                answer: Some(r.pkt),
            });
            return;
        }
        if r.rcode != 0 || r.answers == 0 {
            return;
        }
        let Some(ring) = self.misses.get_mut(&client) else {
            return;
        };
        let name = q.qname.trim_end_matches('.').to_ascii_lowercase();
        let prefix = format!("{name}.");
        let mut taken = Vec::new();
        let mut kept = VecDeque::with_capacity(ring.len());
        for m in ring.drain(..) {
            let in_window = now.saturating_sub(m.pkt.ts_ns) <= WALK_WINDOW_NS && m.pkt.ts_ns <= now;
            if in_window && m.name.len() > prefix.len() && m.name.starts_with(&prefix) {
                taken.push(m);
            } else {
                kept.push_back(m);
            }
        }
        *ring = kept;
        let mut suffixes: Vec<Box<str>> = Vec::new();
        for m in &taken {
            let s = m.name[prefix.len()..].trim_end_matches('.');
            if !suffixes.iter().any(|x| &**x == s) {
                suffixes.push(s.into());
            }
        }
        if suffixes.len() < MIN_SUFFIXES {
            return;
        }
        let first = taken.iter().map(|m| m.pkt.ts_ns).min().unwrap_or(now);
        let slowest_miss_ns = taken
            .iter()
            .filter_map(|m| m.answer.map(|a| a.ts_ns.saturating_sub(m.pkt.ts_ns)))
            .max()
            .unwrap_or(0);
        let walk = Walk {
            client,
            name: name.into(),
            suffixes,
            query: q.pkt,
            qtype: q.qtype,
            answer: r.pkt,
            cost_ns: now.saturating_sub(first),
            slowest_miss_ns,
            misses: taken,
        };
        self.walks += 1;
        self.walk_queries += walk.misses.len() as u64;
        // The name's own A and AAAA.
        self.lookups_queries += walk.misses.len() as u64 + 2;
        if self.clients.len() < 16 && !self.clients.contains(&client) {
            self.clients.push(client);
        }
        let answer_ns = walk.answer.ts_ns.saturating_sub(walk.query.ts_ns);
        if walk.cost_ns >= COSTLY_WALK_NS && answer_ns.saturating_mul(2) < walk.cost_ns {
            self.costly += 1;
            if self
                .worst_costly
                .as_ref()
                .is_none_or(|w| walk.cost_ns > w.cost_ns)
            {
                self.worst_costly = Some(walk);
            }
        } else if self
            .worst
            .as_ref()
            .is_none_or(|w| walk.misses.len() > w.misses.len())
        {
            self.worst = Some(walk);
        }
    }

    pub fn finish(self, ctx: &Context<'_>, out: &mut Vec<Finding>) {
        if self.walks == 0 {
            return;
        }
        let clients = self
            .clients
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let amplification = self.lookups_queries as f64 / (self.walks as f64 * 2.0);
        let (walk, mut f) = match self.worst_costly {
            Some(w) => {
                let f = Finding::new(
                    &INCIDENT,
                    FindingKind::Incident,
                    Confidence::Likely,
                    format!(
                        "{} lookup(s) from {clients} were slowed by the search-list walk: {} was asked under {} search domain(s) first (NXDOMAIN), which took {} before the name itself was asked and answered in {}",
                        self.costly,
                        w.name,
                        w.suffixes.len(),
                        secs(w.cost_ns),
                        secs(w.answer.ts_ns.saturating_sub(w.query.ts_ns)),
                    ),
                )
                .because(format!(
                    "the lookup's time went to the search candidates (the slowest NXDOMAIN took {}), not to the name, which was answered at once: ndots made the lookup wait for every search domain",
                    secs(w.slowest_miss_ns)
                ))
                .because("a contributing cause: the slow answer for a search domain is the other half, and the pod's resolv.conf (ndots, search) is not in the capture (`netsleuth check` reads it)");
                (w, f)
            }
            None => {
                let Some(w) = self.worst else { return };
                let f = Finding::new(
                    &INCIDENT,
                    FindingKind::LatentRisk,
                    Confidence::Likely,
                    format!(
                        "{} lookup(s) from {clients} walked the search list before asking the name itself: {} queries where {} would do (×{amplification:.1}), e.g. {} asked under {} search domain(s) first",
                        self.walks,
                        self.lookups_queries,
                        self.walks * 2,
                        w.name,
                        w.suffixes.len(),
                    ),
                )
                .because("every search candidate was answered quickly: the walk costs queries (load on CoreDNS, conntrack entries), not time, in this capture")
                .because("the pod's resolv.conf (ndots, search) is not in the capture (`netsleuth check` reads it)");
                (w, f)
            }
        };
        f = f.with_evidence(crate::finding::Evidence::Fact {
            source: "capture".into(),
            text: format!(
                "search domains tried for {} from {}: {}",
                walk.name,
                walk.client,
                walk.suffixes
                    .iter()
                    .map(|s| &**s)
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        });
        f = f
            .rules_out("application-nxdomain", "the NXDOMAIN names are the looked-up name with a search domain appended, and the name itself was answered: the resolver's search list, not a wrong name")
            .rules_out(super::dns_upstream_unreachable::INCIDENT.id, "every search candidate was answered (NXDOMAIN), none was lost")
            .rules_out(super::dns_conntrack_race::INCIDENT.id, "no query of the walk went unanswered");
        let mut pkts: Vec<(PktRef, String)> = Vec::new();
        for m in walk.misses.iter().take(8) {
            pkts.push((
                m.pkt,
                format!("DNS {}? {} (search candidate)", qt(m.qtype), m.name),
            ));
            if let Some(a) = m.answer {
                pkts.push((
                    a,
                    format!(
                        "NXDOMAIN for {} after {}",
                        m.name,
                        secs(a.ts_ns.saturating_sub(m.pkt.ts_ns))
                    ),
                ));
            }
        }
        pkts.push((
            walk.query,
            format!("DNS {}? {} (the name itself)", qt(walk.qtype), walk.name),
        ));
        pkts.push((walk.answer, format!("answer for {}", walk.name)));
        out.push(with_packets(
            f,
            ctx,
            &pkts,
            "a search-list walk: the search candidates answered NXDOMAIN, then the name itself",
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

    fn set_max_keys(&mut self, max_keys: usize) {
        self.max_keys = max_keys;
    }
}

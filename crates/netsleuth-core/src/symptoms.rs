//! Symptoms and blind spots: what the input shows whatever its cause, and what it could not show.
//!
//! A report never reads as "all is well" when the capture holds resets, retransmitted SYNs, unanswered
//! or slow DNS, or ICMP errors: each symptom is counted, its worst examples are kept as evidence, and the
//! catalogue causes that produce it are listed with what the detectors found (the finding that explains
//! it) or why none fits and what evidence would decide. Likewise, what the input could not show — frames
//! of a link type we do not decode, DNS payloads cut by the snap length, questions the capture ended
//! before they could be answered — is named with the incidents it leaves undecided.
//!
//! The collector sees finished connections and DNS queries (not packets), so it costs nothing per packet
//! beyond a counter for ICMP errors and cut DNS datagrams.

use crate::detect::{
    bridge_nf_bypass, conntrack_dnat_rebalance, conntrack_snat_remap, dns_conntrack_race,
    dns_id_collision, dns_upstream_unreachable, listen_queue_overflow, local_source_drop,
    snat_port_clash, tw_recycle_paws, Context,
};
use crate::finding::{Evidence, Finding, FindingKind, Incident};
use crate::flow::dns::FinishedQuery;
use crate::flow::tcp::Conn;
use crate::flow::PktRef;
use crate::wire::tcp_flags::ACK;

/// How many examples a symptom keeps (the worst first).
const EXAMPLES: usize = 5;
/// A copy of one ICMP error at another point of the capture arrives within this.
const ICMP_COPY_WINDOW_NS: i64 = 5_000_000;
/// ICMP errors remembered to recognise their copies.
const ICMP_RECENT: usize = 16;
/// A DNS answer this late is a symptom (resolvers time out after 1–5 s).
const SLOW_DNS_NS: i64 = 1_000_000_000;
/// A question asked this close to the end of the capture may have been answered after it.
const DNS_ANSWER_WINDOW_NS: i64 = 5_000_000_000;
const SYN_ANSWER_WINDOW_NS: i64 = 3_000_000_000;

/// What kind of trouble a symptom is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SymptomKind {
    ConnectionResets,
    SynRetransmissions,
    DnsUnanswered,
    DnsSlow,
    IcmpErrors,
}

impl SymptomKind {
    /// The kind's name in the JSON document.
    pub fn as_str(self) -> &'static str {
        match self {
            SymptomKind::ConnectionResets => "connection-resets",
            SymptomKind::SynRetransmissions => "syn-retransmissions",
            SymptomKind::DnsUnanswered => "dns-unanswered",
            SymptomKind::DnsSlow => "dns-slow",
            SymptomKind::IcmpErrors => "icmp-errors",
        }
    }
}

/// A catalogue cause considered for a symptom, and what the analysis made of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Considered {
    pub id: &'static str,
    /// `explains` (a finding of this id is in the report) or `not-seen` (its signature is not in the
    /// input).
    pub verdict: &'static str,
    /// Why, or what evidence would decide.
    pub why: String,
}

/// A symptom the input shows, counted, with its worst examples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Symptom {
    pub kind: SymptomKind,
    pub count: u64,
    pub summary: String,
    pub evidence: Vec<Evidence>,
    pub considered: Vec<Considered>,
    /// What is left when every listed cause was ruled out.
    pub otherwise: Option<String>,
}

/// Something the input could not show, and the incidents that leaves undecided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlindSpot {
    pub what: String,
    pub undecided: Vec<&'static str>,
}

/// Examples ranked by a score, the highest kept.
#[derive(Debug, Default)]
struct Worst {
    items: Vec<(i64, PktRef, String)>,
}

impl Worst {
    fn offer(&mut self, score: i64, p: PktRef, what: impl FnOnce() -> String) {
        if self.items.len() == EXAMPLES && self.items.last().is_some_and(|(s, _, _)| *s >= score) {
            return;
        }
        let at = self.items.partition_point(|(s, _, _)| *s >= score);
        self.items.insert(at, (score, p, what()));
        self.items.truncate(EXAMPLES);
    }

    fn packets(&self) -> Vec<(PktRef, String)> {
        let mut v: Vec<_> = self.items.iter().map(|(_, p, w)| (*p, w.clone())).collect();
        v.sort_by_key(|(p, _)| (p.input, p.frame));
        v
    }
}

/// Gathers symptoms from finished connections and queries.
#[derive(Debug)]
pub struct SymptomCollector {
    // Resets, by what they most likely are.
    resets: u64,
    resets_closed_port: u64,
    resets_by_application: u64,
    resets_bare_mid_stream: u64,
    resets_by_client: u64,
    resets_closing: u64,
    reset_examples: Worst,
    // SYNs.
    syn_retransmitted: u64,
    syn_retransmitted_answered: u64,
    syn_listeners: crate::flow::FxHashMap<crate::flow::Endpoint, u32>,
    syn_examples: Worst,
    syns_at_end: u64,
    // DNS.
    dns_unanswered: u64,
    dns_unanswered_at_end: u64,
    dns_unanswered_examples: Worst,
    dns_slow: u64,
    dns_slow_examples: Worst,
    dns_cut: u64,
    // Tunnel packets' outer UDP checksums that could not show a fault.
    tunnel_csum_cut: u64,
    tunnel_csum_partial: u64,
    // ICMP errors.
    icmp_errors: u64,
    icmp_examples: Worst,
    /// The last IPv4 ICMP errors (time, source, IP identification, type, code, where seen), to count
    /// a copy of one at another point (`-i any` on a routing or NATing node) once.
    icmp_recent: std::collections::VecDeque<(i64, std::net::IpAddr, u16, u8, u8, PktRef)>,
    /// The capture's end, once known (`i64::MAX` while streaming: whatever is finalised before the
    /// end waited its full window, so it is not a question the end cut off).
    capture_end_ns: i64,
}

impl Default for SymptomCollector {
    fn default() -> Self {
        SymptomCollector {
            resets: 0,
            resets_closed_port: 0,
            resets_by_application: 0,
            resets_bare_mid_stream: 0,
            resets_by_client: 0,
            resets_closing: 0,
            reset_examples: Worst::default(),
            syn_retransmitted: 0,
            syn_retransmitted_answered: 0,
            syn_listeners: Default::default(),
            syn_examples: Worst::default(),
            syns_at_end: 0,
            dns_unanswered: 0,
            dns_unanswered_at_end: 0,
            dns_unanswered_examples: Worst::default(),
            dns_slow: 0,
            dns_slow_examples: Worst::default(),
            dns_cut: 0,
            tunnel_csum_cut: 0,
            tunnel_csum_partial: 0,
            icmp_errors: 0,
            icmp_examples: Worst::default(),
            icmp_recent: Default::default(),
            capture_end_ns: i64::MAX,
        }
    }
}

impl SymptomCollector {
    /// The input ended at `ts`: what is finalised from now on may have been cut off by the end.
    pub fn input_ended(&mut self, ts: i64) {
        self.capture_end_ns = ts;
    }

    pub fn connection(&mut self, c: &Conn) {
        for r in &c.rsts {
            self.resets += 1;
            let (kind, score) = if !c.established && c.synack.is_none() && !r.from_client {
                self.resets_closed_port += 1;
                ("answering a SYN: closed port", 0)
            } else if c.fin_ts.iter().flatten().any(|&t| t <= r.pkt.ts_ns) {
                self.resets_closing += 1;
                ("after a FIN: the connection was closing", 0)
            } else if r.from_client {
                self.resets_by_client += 1;
                ("from the client", 1)
            } else if r.pkt.flags & ACK != 0 {
                self.resets_by_application += 1;
                ("RST|ACK from the server: an application abort", 2)
            } else {
                self.resets_bare_mid_stream += 1;
                ("bare RST (no ACK) inside the connection", 3)
            };
            let gap = c.last_gap_ns.max(0) / 1_000_000;
            self.reset_examples
                .offer(score * 1_000_000_000 + gap.min(999_999_999), r.pkt, || {
                    format!("{} ({kind})", r.pkt.tcp_what())
                });
        }
        if let Some(first) = c.syns.first() {
            if c.syn_transmissions >= 2 {
                self.syn_retransmitted += 1;
                let answered = c.synack.is_some();
                self.syn_retransmitted_answered += answered as u64;
                if let Some(l) = c.legs.first() {
                    if self.syn_listeners.len() < 65_536
                        || self.syn_listeners.contains_key(&l.server)
                    {
                        *self.syn_listeners.entry(l.server).or_default() += 1;
                    }
                }
                let last = c
                    .syns
                    .last()
                    .map(|s| s.pkt.ts_ns)
                    .unwrap_or(first.pkt.ts_ns);
                let waited = last.saturating_sub(first.pkt.ts_ns);
                let n = c.syn_transmissions;
                self.syn_examples.offer(waited, first.pkt, || {
                    format!(
                        "SYN sent {n} times over {}{}",
                        crate::detect::secs(waited),
                        if answered {
                            ", then answered"
                        } else {
                            ", never answered"
                        }
                    )
                });
            } else if c.synack.is_none()
                && c.rsts.is_empty()
                && self.capture_end_ns.saturating_sub(first.pkt.ts_ns) < SYN_ANSWER_WINDOW_NS
            {
                self.syns_at_end += 1;
            }
        }
    }

    pub fn dns(&mut self, f: &FinishedQuery) {
        for q in std::iter::once(&f.query).chain(f.younger_sibling.as_ref()) {
            self.query(q);
        }
    }

    fn query(&mut self, q: &crate::flow::dns::DnsQuery) {
        match &q.response {
            None => {
                if self.capture_end_ns.saturating_sub(q.pkt.ts_ns) < DNS_ANSWER_WINDOW_NS {
                    self.dns_unanswered_at_end += 1;
                    return;
                }
                self.dns_unanswered += 1;
                let server = q.server();
                self.dns_unanswered_examples
                    .offer(q.pkt.ts_ns.saturating_neg(), q.pkt, || {
                        format!(
                            "{} {}? to {server}: never answered",
                            qtype(q.qtype),
                            q.qname
                        )
                    });
            }
            Some(r) => {
                let took = r.pkt.ts_ns.saturating_sub(q.pkt.ts_ns);
                if took >= SLOW_DNS_NS {
                    self.dns_slow += 1;
                    self.dns_slow_examples.offer(took, q.pkt, || {
                        format!(
                            "{} {}? answered after {}",
                            qtype(q.qtype),
                            q.qname,
                            crate::detect::secs(took)
                        )
                    });
                }
            }
        }
    }

    /// A DNS datagram whose payload the snap length cut.
    pub fn dns_payload_cut(&mut self) {
        self.dns_cut += 1;
    }

    /// The outer UDP checksum of a VXLAN or Geneve packet: the ones that cannot be judged are counted.
    pub fn tunnel_checksum(&mut self, c: crate::wire::UdpChecksum) {
        match c {
            crate::wire::UdpChecksum::Unverifiable => self.tunnel_csum_cut += 1,
            crate::wire::UdpChecksum::OffloadPending => self.tunnel_csum_partial += 1,
            _ => {}
        }
    }

    /// An ICMP error (destination unreachable, time exceeded, parameter problem, packet too big);
    /// `ident` is the IPv4 identification, which a copy of the same error at another point keeps.
    pub fn icmp_error(&mut self, p: PktRef, v6: bool, ident: u16, icmp_type: u8, code: u8) {
        if !v6 {
            let copy = self.icmp_recent.iter().any(|(ts, src, id, t, c, at)| {
                *id == ident
                    && *t == icmp_type
                    && *c == code
                    && *src == p.src.ip
                    && p.ts_ns.saturating_sub(*ts).saturating_abs() <= ICMP_COPY_WINDOW_NS
                    && (at.ifindex != p.ifindex || at.input != p.input || at.dst != p.dst)
            });
            if copy {
                return;
            }
            if self.icmp_recent.len() == ICMP_RECENT {
                self.icmp_recent.pop_front();
            }
            self.icmp_recent
                .push_back((p.ts_ns, p.src.ip, ident, icmp_type, code, p));
        }
        self.icmp_errors += 1;
        let score = if self.icmp_errors as usize <= EXAMPLES {
            -(self.icmp_errors as i64)
        } else {
            return;
        };
        self.icmp_examples
            .offer(score, p, || icmp_what(v6, icmp_type, code).to_string());
    }

    /// The symptoms and blind spots, with the findings that explain them.
    pub fn finish(
        self,
        ctx: &Context<'_>,
        findings: &[Finding],
        undecoded_frames: u64,
    ) -> (Vec<Symptom>, Vec<BlindSpot>) {
        let found = |i: &Incident| {
            findings
                .iter()
                .any(|f| f.id == i.id && f.kind == FindingKind::Incident)
        };
        let consider = |i: &'static Incident, why_not: String| {
            if found(i) {
                Considered {
                    id: i.id,
                    verdict: "explains",
                    why: "a finding in this report names it (see above)".into(),
                }
            } else {
                Considered {
                    id: i.id,
                    verdict: "not-seen",
                    why: why_not,
                }
            }
        };
        let mut out = Vec::new();
        if self.resets > 0 {
            let mut considered = vec![
                consider(&conntrack_dnat_rebalance::INCIDENT, "looked for a connection whose segments went on to another backend without a handshake, then a bare RST from it; none here changed backend (a node capture with `-i any`, or `conntrack -E`, shows both NAT legs)".into()),
                consider(&conntrack_snat_remap::INCIDENT, "looked for a connection whose segments left under a new source port after a pause, then a RST; none here changed its source tuple".into()),
                consider(&bridge_nf_bypass::INCIDENT, "looked for a reply from the backend's own address instead of the Service address, answered by a RST; none seen".into()),
                consider(&crate::detect::idle_timeout_reset::INCIDENT, "looked for a RST after an idle period whose IP TTL differs from the server's (made by a box on the path); none seen".into()),
                consider(&crate::detect::conntrack_invalid_reset::INCIDENT, "looked for a client RST to a backend's own address inside an established connection to a Service address (one reply that skipped reverse NAT); none seen".into()),
            ];
            if self.resets_bare_mid_stream == 0 {
                considered.push(Considered {
                    id: "application",
                    verdict: "explains",
                    why: "every reset answered a SYN (closed port), came after a FIN, from the client, or as RST|ACK from a peer that had the connection (an application abort): the usual healthy causes".into(),
                });
            }
            let f = Symptom {
                kind: SymptomKind::ConnectionResets,
                count: self.resets,
                summary: format!(
                    "{} TCP reset(s): {} bare RST inside a connection, {} RST|ACK from the server (application abort), {} answering a SYN (closed port), {} after a FIN, {} from the client",
                    self.resets,
                    self.resets_bare_mid_stream,
                    self.resets_by_application,
                    self.resets_closed_port,
                    self.resets_closing,
                    self.resets_by_client
                ),
                evidence: ctx.packets(&self.reset_examples.packets(), "resets, the most suspicious first"),
                otherwise: (self.resets_bare_mid_stream > 0 && !considered.iter().any(|c| c.verdict == "explains")).then(|| {
                    "a bare RST inside an established connection means the peer had no such connection: from one end only, lost NAT state (conntrack expiry, a flush, an address change) or a middlebox's idle timeout are the usual causes; a capture on the node with `-i any` decides".into()
                }),
                considered,
            };
            out.push(f);
        }
        if self.syn_retransmitted > 0 {
            let busiest = self.syn_listeners.values().copied().max().unwrap_or(0);
            let listeners = self.syn_listeners.len();
            let considered = vec![
                consider(&crate::detect::rp_filter_drop::INCIDENT, "looked for a source whose SYNs died on one interface while it was answered on another (a node's `-i any` names the interface); not seen".into()),
                consider(&crate::detect::hairpin_off::INCIDENT, "looked for SYNs from a Service's own backend to the Service, DNATed to the client itself (or never seen after DNAT) and never answered; not seen".into()),
                consider(&tw_recycle_paws::INCIDENT, "looked for SYNs from one address whose TCP timestamps fell behind an earlier connection's and were dropped while newer ones were answered; not seen".into()),
                consider(&snat_port_clash::INCIDENT, "looked for concurrent SYNs from different clients that left with the same SNAT address and port, one of them dropped; not seen".into()),
                consider(&listen_queue_overflow::INCIDENT, format!("looked for ≥ 3 SYNs dropped in bursts to one listener that answered others; the retransmitted SYNs went to {listeners} listener(s), at most {busiest} to one. Node counters decide: TcpExt ListenOverflows/ListenDrops (`netsleuth check`)")),
                consider(&local_source_drop::INCIDENT, "looked for a source whose every SYN to a port went unanswered while the port answered others; not seen".into()),
                consider(&crate::detect::conntrack_table_full::INCIDENT, "looked for new connections to ≥ 2 destinations unanswered together while one of those destinations answered an existing connection; not seen (nf_conntrack_count against nf_conntrack_max and `conntrack -S` drop decide on the node)".into()),
                consider(&crate::detect::timewait_paws_reject::INCIDENT, "looked for a SYN answered by a bare ACK of the tuple's previous connection (a TIME_WAIT socket), then reset by the client and retried; not seen".into()),
                consider(&crate::detect::ipvs_conn_reuse::INCIDENT, "looked for first SYNs dropped exactly when they reused a client port whose previous connection to the same service ended within IPVS's 2-minute TIME_WAIT; not seen".into()),
                consider(&crate::detect::neighbour_table_overflow::INCIDENT, format!(
                    "looked for a host asking ARP or neighbour discovery for ≥ {} distinct neighbours within {} while connections failed; not seen (the node's neighbour entries against gc_thresh3 and \"neighbour table overflow\" in the kernel log decide: `netsleuth check`)",
                    crate::detect::neighbour_table_overflow::STORM_TARGETS,
                    crate::detect::secs(crate::detect::neighbour_table_overflow::WINDOW_NS)
                )),
            ];
            out.push(Symptom {
                kind: SymptomKind::SynRetransmissions,
                count: self.syn_retransmitted,
                summary: format!(
                    "{} connection(s) had to retransmit their SYN ({} answered in the end, {} never)",
                    self.syn_retransmitted,
                    self.syn_retransmitted_answered,
                    self.syn_retransmitted - self.syn_retransmitted_answered
                ),
                evidence: ctx.packets(&self.syn_examples.packets(), "SYNs retransmitted, the longest waits first"),
                otherwise: Some("a lost SYN or SYN-ACK (loss on the path, a firewall, a full conntrack table: `conntrack -S` drop, kernel log \"nf_conntrack: table full\") is what remains; the node's counters decide (`netsleuth check`, or `analyze --node BUNDLE`)".into()),
                considered,
            });
        }
        let dns_causes = || {
            vec![
                consider(&dns_conntrack_race::INCIDENT, "looked for parallel A/AAAA pairs from one socket that lost one query at NAT (seen before DNAT, not after) or, at one point, in ≥ 2 lookups; not seen".into()),
                consider(&dns_upstream_unreachable::INCIDENT, "looked for a DNS server that answered none of ≥ 3 queries while another answered; not seen".into()),
                consider(&dns_id_collision::INCIDENT, "looked for an A/AAAA pair with one id whose answers came from two servers; not seen".into()),
                consider(&crate::detect::stale_udp_conntrack::INCIDENT, "looked for one socket's queries to an address unanswered ≥ 3 times in a row while another socket's queries to the same address were answered; not seen".into()),
                consider(&crate::detect::dns_truncation_fallback::INCIDENT, "looked for a truncated answer (TC=1) whose retry over TCP 53 failed or was never made; not seen".into()),
                consider(&crate::detect::dns_ndots_amplification::INCIDENT, "looked for a search-list walk (NXDOMAIN for NAME.<search domain>, then NAME) that held a lookup back ≥ 1 s; not seen".into()),
            ]
        };
        if self.dns_unanswered > 0 {
            out.push(Symptom {
                kind: SymptomKind::DnsUnanswered,
                count: self.dns_unanswered,
                summary: format!("{} DNS quer(ies) never answered", self.dns_unanswered),
                evidence: ctx.packets(
                    &self.dns_unanswered_examples.packets(),
                    "queries never answered",
                ),
                considered: dns_causes(),
                otherwise: Some("the query or its answer was lost beyond the capture point; captures on the node (after DNAT) and on the DNS server decide where".into()),
            });
        }
        if self.dns_slow > 0 {
            out.push(Symptom {
                kind: SymptomKind::DnsSlow,
                count: self.dns_slow,
                summary: format!(
                    "{} DNS quer(ies) answered only after ≥ {}",
                    self.dns_slow,
                    crate::detect::secs(SLOW_DNS_NS)
                ),
                evidence: ctx.packets(&self.dns_slow_examples.packets(), "slow answers, the slowest first"),
                considered: dns_causes(),
                otherwise: Some("a slow upstream (the answer came, late) or a resolver retry after a loss the capture did not see; a capture on the DNS server's side decides".into()),
            });
        }
        if self.icmp_errors > 0 {
            out.push(Symptom {
                kind: SymptomKind::IcmpErrors,
                count: self.icmp_errors,
                summary: format!("{} ICMP error(s)", self.icmp_errors),
                evidence: ctx.packets(&self.icmp_examples.packets(), "ICMP errors, the first ones"),
                considered: Vec::new(),
                otherwise: Some("no catalogue incident is decided by ICMP errors: unreachable ports and hosts, expired TTLs and too-big packets are reported as they are".into()),
            });
        }

        let mut blind = Vec::new();
        if undecoded_frames > 0 {
            blind.push(BlindSpot {
                what: format!("{undecoded_frames} frame(s) of a link type or encapsulation netsleuth does not decode were not examined (see the input problems)"),
                undecided: crate::detect::CATALOGUE.iter().map(|i| i.id).collect(),
            });
        }
        if self.dns_cut > 0 {
            blind.push(BlindSpot {
                what: format!("{} DNS message(s) were cut by the snap length before their question: their ids, names and answers could not be read (capture with `-s 0` or at least `-s 512` for DNS)", self.dns_cut),
                undecided: vec![
                    dns_conntrack_race::INCIDENT.id,
                    dns_id_collision::INCIDENT.id,
                    dns_upstream_unreachable::INCIDENT.id,
                    crate::detect::go_resolver_dns_first::INCIDENT.id,
                ],
            });
        }
        if self.tunnel_csum_cut > 0 {
            blind.push(BlindSpot {
                what: format!("{} VXLAN/Geneve packet(s) were cut by the snap length: their outer UDP checksum could not be verified (capture with `-s 0` to verify every one)", self.tunnel_csum_cut),
                undecided: vec![crate::detect::vxlan_checksum_offload::INCIDENT.id],
            });
        }
        if self.tunnel_csum_partial > 0 {
            blind.push(BlindSpot {
                what: format!("{} VXLAN/Geneve packet(s) carried an outer UDP checksum not yet computed (the pseudo-header sum, or one that counts on an inner checksum the NIC fills in): captured on the sending host before a NIC completed it (tx checksum offload) — normal, not a fault, but such packets cannot show what went on the wire (a capture on the receiving node can)", self.tunnel_csum_partial),
                undecided: vec![crate::detect::vxlan_checksum_offload::INCIDENT.id],
            });
        }
        if self.dns_unanswered_at_end > 0 {
            blind.push(BlindSpot {
                what: format!("{} DNS quer(ies) were sent less than {} before the capture ended: whether they were answered is unknown", self.dns_unanswered_at_end, crate::detect::secs(DNS_ANSWER_WINDOW_NS)),
                undecided: vec![dns_conntrack_race::INCIDENT.id, dns_upstream_unreachable::INCIDENT.id],
            });
        }
        if self.syns_at_end > 0 {
            blind.push(BlindSpot {
                what: format!("{} SYN(s) were sent less than {} before the capture ended: whether they were answered or retransmitted is unknown", self.syns_at_end, crate::detect::secs(SYN_ANSWER_WINDOW_NS)),
                undecided: vec![listen_queue_overflow::INCIDENT.id, local_source_drop::INCIDENT.id],
            });
        }
        (out, blind)
    }
}

fn qtype(t: u16) -> String {
    match t {
        1 => "A".into(),
        28 => "AAAA".into(),
        5 => "CNAME".into(),
        12 => "PTR".into(),
        15 => "MX".into(),
        16 => "TXT".into(),
        33 => "SRV".into(),
        65 => "HTTPS".into(),
        other => format!("TYPE{other}"),
    }
}

fn icmp_what(v6: bool, t: u8, code: u8) -> &'static str {
    match (v6, t, code) {
        (false, 3, 0) => "ICMP net unreachable",
        (false, 3, 1) => "ICMP host unreachable",
        (false, 3, 3) => "ICMP port unreachable",
        (false, 3, 4) => "ICMP fragmentation needed",
        (false, 3, 9..=13) => "ICMP communication administratively prohibited",
        (false, 3, _) => "ICMP destination unreachable",
        (false, 11, _) => "ICMP time exceeded",
        (false, 12, _) => "ICMP parameter problem",
        (true, 1, 4) => "ICMPv6 port unreachable",
        (true, 1, 1) => "ICMPv6 administratively prohibited",
        (true, 1, _) => "ICMPv6 destination unreachable",
        (true, 2, _) => "ICMPv6 packet too big",
        (true, 3, _) => "ICMPv6 time exceeded",
        (true, 4, _) => "ICMPv6 parameter problem",
        _ => "ICMP error",
    }
}

/// Whether an ICMP type is an error (as opposed to echo, neighbour discovery, router advertisements).
pub fn is_icmp_error(v6: bool, t: u8) -> bool {
    if v6 {
        (1..=4).contains(&t)
    } else {
        matches!(t, 3 | 11 | 12)
    }
}

//! `dns-truncation-fallback`: a DNS answer too large for UDP comes back truncated (TC=1) and the
//! client's retry over TCP fails or is never made (musl < 1.2.4 has no TCP fallback; TCP 53 blocked or
//! not exposed by the DNS Service).

use crate::finding::Incident;
use crate::versions;

pub static INCIDENT: Incident = Incident {
    id: "dns-truncation-fallback",
    title: "a truncated DNS answer (TC=1) whose retry over TCP fails or is never made",
    explanation: "A DNS answer larger than 512 bytes (or the client's EDNS buffer) is sent over UDP \
truncated: TC=1, usually with no records. The client must ask again over TCP port 53. If TCP 53 is \
blocked (a firewall, a NetworkPolicy allowing only UDP), not exposed by the DNS Service (a kube-dns \
Service with only 53/udp: the SYN to the ClusterIP is not DNATed and is lost), or the resolver has no \
TCP fallback (musl before 1.2.4), the lookup fails or returns nothing, for large answers only: names \
with many A records, long CNAME chains, TXT/DNSSEC answers.",
    remedy: "Expose 53/tcp in the DNS Service and allow TCP 53 in NetworkPolicies and firewalls; \
upgrade musl to ≥ 1.2.4 (Alpine ≥ 3.18) or use a glibc image; keep answers small (fewer records per \
name, `bufsize`/EDNS settings in CoreDNS so that the upstream's answer is truncated where TCP works).",
    sysctls: &[],
    versions: &[&versions::MUSL_DNS_TCP_FALLBACK],
    evidence: "Capture: a UDP answer with TC=1, then no TCP 53 connection from the client (no \
fallback), or a TCP 53 SYN that is never answered or is reset. Node: the DNS Service's ports (53/udp \
without 53/tcp), NetworkPolicies and firewall rules on TCP 53; the client image's libc and version \
(version table).",
};

use super::{secs, with_packets, Context, Finished};
use crate::finding::{Confidence, Evidence, Finding, FindingKind};
use crate::flow::dns::FinishedQuery;
use crate::flow::tcp::Conn;
use crate::flow::{Endpoint, PktRef};
use std::net::IpAddr;

const MAX_KEEP: usize = 1024;
/// A TCP retry this soon after the truncated answer belongs to it.
const RETRY_WINDOW_NS: i64 = 15_000_000_000;
/// A truncated answer this close to the end of the capture may have been retried after it.
const END_MARGIN_NS: i64 = 5_000_000_000;

struct Truncated {
    client: IpAddr,
    server: Endpoint,
    name: Box<str>,
    query: PktRef,
    answer: PktRef,
}

struct TcpTry {
    client: IpAddr,
    server: Endpoint,
    conn: u64,
    first_syn: PktRef,
    syns: u32,
    answered: bool,
    /// The server sent data back over it: a DNS answer, whatever it said (a capture cut by its snap
    /// length cannot read an answer larger than the snap, and a truncated answer's retry is one).
    replied: bool,
    reset: Option<PktRef>,
}

/// Recognises truncated UDP answers not followed by a TCP query that was answered.
#[derive(Default)]
pub struct Detector {
    truncated: Vec<Truncated>,
    more: u32,
    /// DNS over TCP answered: (client, name, time).
    tcp_answers: Vec<(IpAddr, Box<str>, i64)>,
    tcp_tries: Vec<TcpTry>,
}

impl Detector {
    pub fn query(&mut self, f: &FinishedQuery) {
        let q = &f.query;
        let Some(r) = &q.response else { return };
        if q.tcp {
            if self.tcp_answers.len() < MAX_KEEP {
                self.tcp_answers.push((
                    q.client().ip,
                    q.qname.to_ascii_lowercase().into(),
                    r.pkt.ts_ns,
                ));
            }
            return;
        }
        if !r.truncated {
            return;
        }
        if self.truncated.len() >= MAX_KEEP {
            self.more += 1;
            return;
        }
        self.truncated.push(Truncated {
            client: q.client().ip,
            server: q.server(),
            name: q.qname.to_ascii_lowercase().into(),
            query: q.pkt,
            answer: r.pkt,
        });
    }

    pub fn connection(&mut self, c: &Conn) {
        let (Some(leg), Some(first)) = (c.legs.first(), c.syns.first()) else {
            return;
        };
        if !c.roles_known || leg.server.port != 53 || self.tcp_tries.len() >= MAX_KEEP {
            return;
        }
        self.tcp_tries.push(TcpTry {
            client: leg.client.ip,
            server: leg.server,
            conn: c.id,
            first_syn: first.pkt,
            syns: c.syn_transmissions,
            answered: c.synack.is_some(),
            replied: c.bytes[1] > 0,
            reset: c.rsts.iter().find(|r| !r.from_client).map(|r| r.pkt),
        });
    }

    pub fn finish(self, ctx: &Context<'_>, out: &mut Vec<Finding>) -> Vec<u64> {
        let mut failed: Vec<(&Truncated, &TcpTry)> = Vec::new();
        let mut never: Vec<&Truncated> = Vec::new();
        for t in &self.truncated {
            let after = |ts: i64| (t.answer.ts_ns..=t.answer.ts_ns + RETRY_WINDOW_NS).contains(&ts);
            if self
                .tcp_answers
                .iter()
                .any(|(c, n, ts)| *c == t.client && **n == *t.name && after(*ts))
            {
                continue; // re-asked over TCP and answered: the healthy fallback
            }
            let tries: Vec<&TcpTry> = self
                .tcp_tries
                .iter()
                .filter(|x| x.client == t.client && after(x.first_syn.ts_ns))
                .collect();
            if tries.iter().any(|x| x.replied) {
                continue; // the TCP retry got an answer back
            }
            match tries.first() {
                Some(x) => failed.push((t, x)),
                None if ctx.capture_end_ns.saturating_sub(t.answer.ts_ns) >= END_MARGIN_NS => {
                    never.push(t)
                }
                None => {}
            }
        }
        let old_musl: Vec<String> = ctx
            .node
            .resolvers
            .iter()
            .filter(|r| r.libc.as_deref() == Some("musl"))
            .filter(|r| {
                r.libc_version
                    .as_deref()
                    .is_some_and(|v| versions::MUSL_DNS_TCP_FALLBACK.has(v) == Some(false))
            })
            .map(|r| {
                format!(
                    "{} (musl {})",
                    r.name,
                    r.libc_version.as_deref().unwrap_or("?")
                )
            })
            .collect();
        let mut explained = Vec::new();
        if let Some(&(t, x)) = failed.first() {
            let how = match (x.answered, x.reset) {
                (false, Some(_)) => "was reset (nothing listens on TCP 53 there)".to_string(),
                (false, None) => format!("was never answered ({} SYN(s))", x.syns),
                (true, _) => "connected but no DNS answer came over it".to_string(),
            };
            let tcp_missing = ctx
                .node
                .service_for(t.server.ip, 53)
                .filter(|s| s.protocol == "udp")
                .filter(|_| {
                    !ctx.node
                        .services
                        .iter()
                        .any(|s| s.vip == t.server.ip && s.port == 53 && s.protocol == "tcp")
                });
            let mut f = Finding::new(
                &INCIDENT,
                FindingKind::Incident,
                if tcp_missing.is_some() { Confidence::Confirmed } else { Confidence::Likely },
                format!(
                    "{} truncated answer(s) (TC=1) for {} were not re-asked successfully over TCP: the retry from {} to {}:53/tcp {how}",
                    failed.len(),
                    t.name,
                    t.client,
                    x.server.ip
                ),
            )
            .because("the UDP answer said TC=1 and the client did open TCP 53 to ask again, as it should; that connection is where the lookup died")
            .rules_out(super::dns_upstream_unreachable::INCIDENT.id, "the server answered over UDP (truncated); only the TCP path failed")
            .rules_out(super::dns_conntrack_race::INCIDENT.id, "the UDP query was answered");
            if let Some(s) = tcp_missing {
                f = f
                    .because(format!("the node's rules expose {} as 53/udp only: nothing DNATs 53/tcp to a DNS pod", s.name))
                    .with_evidence(Evidence::Fact {
                        source: ctx.node.source.clone(),
                        text: format!("Service {} ({}:53) has udp and no tcp port", s.name, s.vip),
                    });
            } else {
                f = f.because("the DNS Service's ports and TCP 53 firewall rules are not in the capture (`--node` shows the Service's ports)");
            }
            let mut pkts = Vec::new();
            for (t, x) in failed.iter().take(3) {
                pkts.push((t.query, format!("DNS query for {} over UDP", t.name)));
                pkts.push((t.answer, "answer truncated (TC=1)".to_string()));
                pkts.push((x.first_syn, format!("retry over TCP: SYN to {}", x.server)));
                if let Some(r) = x.reset {
                    pkts.push((r, r.tcp_what()));
                }
            }
            explained.extend(failed.iter().map(|(_, x)| x.conn));
            out.push(with_packets(
                f,
                ctx,
                &pkts,
                "a truncated answer and its failed retry over TCP",
            ));
        }
        // A truncated answer with no TCP retry in sight is the missing fallback only when the client's
        // resolver is known to lack it: a capture that does not see the client's TCP path (the DNS
        // server's own view) shows the same.
        if let Some(t) = never.first().filter(|_| !old_musl.is_empty()) {
            let confidence = Confidence::Likely;
            let mut f = Finding::new(
                &INCIDENT,
                FindingKind::Incident,
                confidence,
                format!(
                    "{} truncated answer(s) (TC=1), e.g. for {} to {}, were never re-asked over TCP: the client took the truncated answer (no TCP fallback)",
                    never.len() as u32 + self.more,
                    t.name,
                    t.client
                ),
            )
            .because(format!(
                "no TCP connection to port 53 from {} followed within {} (the capture went on for at least {} after)",
                t.client,
                secs(RETRY_WINDOW_NS),
                secs(END_MARGIN_NS)
            ));
            {
                f = f.because(format!(
                    "the node runs musl without TCP fallback: {}",
                    old_musl.join(", ")
                ));
                f = f.with_evidence(Evidence::Fact {
                    source: "versions".into(),
                    text: versions::MUSL_DNS_TCP_FALLBACK.status(
                        old_musl[0]
                            .rsplit("musl ")
                            .next()
                            .unwrap_or("?")
                            .trim_end_matches(')'),
                    ),
                });
            }
            let pkts: Vec<(PktRef, String)> = never
                .iter()
                .take(3)
                .flat_map(|t| {
                    [
                        (t.query, format!("DNS query for {} over UDP", t.name)),
                        (
                            t.answer,
                            "answer truncated (TC=1), never re-asked over TCP".to_string(),
                        ),
                    ]
                })
                .collect();
            f = f.rules_out(
                super::dns_upstream_unreachable::INCIDENT.id,
                "the server answered (truncated)",
            );
            out.push(with_packets(
                f,
                ctx,
                &pkts,
                "truncated answers with no TCP retry",
            ));
        }
        explained.sort_unstable();
        explained
    }
}

impl super::CaptureDetector for Detector {
    fn query(&mut self, q: &FinishedQuery) {
        Detector::query(self, q)
    }

    fn connection(&mut self, c: &Finished<'_>) {
        Detector::connection(self, c)
    }

    fn finish(
        self: Box<Self>,
        ctx: &Context<'_>,
        _explained: &[u64],
        out: &mut Vec<Finding>,
    ) -> Vec<u64> {
        Detector::finish(*self, ctx, out)
    }
}

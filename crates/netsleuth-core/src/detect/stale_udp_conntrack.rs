//! `stale-udp-conntrack` [issue 15; kubernetes #19029, #48370, #125467, #139628]: a UDP flow to a
//! Service keeps its conntrack entry to a backend that is gone; every datagram from the same socket
//! refreshes the entry and is DNATed to the dead backend, while other sockets reach live backends.

use crate::finding::Incident;

pub static INCIDENT: Incident = Incident {
    id: "stale-udp-conntrack",
    title: "a UDP flow to a Service stays pinned by its conntrack entry to a backend that is gone",
    explanation: "kube-proxy's DNAT to a Service backend is decided once per conntrack entry, and a UDP \
entry lives as long as packets keep coming (nf_conntrack_udp_timeout 30 s unreplied, \
nf_conntrack_udp_timeout_stream 120 s once answered): a client that reuses one socket (a resolver with a \
fixed source port, statsd, syslog, DNS forwarders, Envoy) refreshes its entry with every datagram. When \
the backend is deleted, kube-proxy must delete the Service's UDP entries toward it (`conntrack -D`); when \
that does not happen (a missed or late cleanup, kube-proxy restarting or paused, the Service scaled to \
zero and back, bugs of particular versions), the socket's datagrams keep going to the dead address and \
are never answered, for as long as the client keeps sending, while new sockets reach the live backends.",
    remedy: "Delete the stale entries: `conntrack -D -p udp --orig-dst <ClusterIP> --reply-src <dead pod IP>` \
on every node (kube-proxy does this on endpoint changes; upgrade it past the cleanup bugs, e.g. \
kubernetes #139629 for Services scaled to zero). In the client, open a new socket (new source port) when \
queries time out, or use TCP; lower nf_conntrack_udp_timeout_stream only as a stop-gap.",
    // nf_conntrack_udp_timeout (unreplied entries) is dns-upstream-unreachable's key for `diff`.
    sysctls: &["net.netfilter.nf_conntrack_udp_timeout_stream"],
    versions: &[],
    evidence: "Node capture (`-i any`): datagrams of one client socket to the ClusterIP are DNATed to one \
backend address and never answered, over seconds, while other sockets' datagrams to the same ClusterIP \
go to other backends and are answered; often that backend answered the same socket earlier. Client \
capture: one socket's queries to the Service address stop being answered while other sockets' queries \
to it are answered. Node: `conntrack -L -p udp` entries whose reply source (the DNAT backend) is not an \
endpoint of the Service any more; the endpoint change time (kube-proxy log, EndpointSlice events). Not \
dns-upstream-unreachable (a dead nameserver fails every socket), not dns-conntrack-race (one query of a \
parallel pair lost, not a socket's every query). Sources: kubernetes #19029, #48370, #125467, #139628 \
(fix #139629); kube-proxy pkg/proxy/conntrack.",
};

use super::{capped_entry, secs, with_packets, Context};
use crate::finding::{Confidence, Evidence, Finding, FindingKind};
use crate::flow::dns::{DnsQuery, FinishedQuery};
use crate::flow::{Endpoint, FxHashMap, PktRef};

/// Unanswered datagrams in a row from one socket, and how long they went on, before it is a stale
/// entry rather than loss.
const MIN_STREAK: u32 = 3;
const MIN_STREAK_NS: i64 = 1_000_000_000;

#[derive(Default, Clone)]
struct Streak {
    count: u32,
    first_ts: i64,
    last_ts: i64,
    /// Where the capture saw them go after DNAT (node view), if it saw that.
    backend: Option<Endpoint>,
    examples: Vec<PktRef>,
    /// Up to two distinct names asked in the streak: a socket whose every name fails is cut off; one
    /// name retried unanswered is a name its resolver cannot resolve (yet).
    names: Vec<Box<str>>,
}

/// One client socket's queries to one server address (a Service address, as the client sent them).
#[derive(Default)]
struct Flow {
    answered: u32,
    answered_first_ts: Option<i64>,
    answered_last_ts: i64,
    answered_backend: Option<Endpoint>,
    answered_example: Option<PktRef>,
    current: Streak,
    best: Streak,
}

/// Recognises one socket's queries to a server address unanswered in a row while other sockets'
/// queries to the same address are answered.
#[derive(Default)]
pub struct Detector {
    max_keys: usize,
    flows: FxHashMap<(Endpoint, Endpoint), Flow>,
}

/// Where the query went after DNAT: the first point whose server differs from the origin's.
fn backend(q: &DnsQuery) -> Option<Endpoint> {
    let origin = q.server();
    q.points
        .iter()
        .skip(1)
        .map(|(_, s)| *s)
        .find(|s| s.ip != origin.ip)
}

impl Detector {
    fn one(&mut self, q: &DnsQuery) {
        if q.tcp {
            return;
        }
        let key = (q.client(), q.server());
        let Some(flow) = capped_entry(&mut self.flows, key, self.max_keys) else {
            return;
        };
        if q.response.is_some() {
            flow.answered += 1;
            flow.answered_first_ts.get_or_insert(q.pkt.ts_ns);
            flow.answered_last_ts = flow.answered_last_ts.max(q.pkt.ts_ns);
            flow.answered_backend = backend(q).or(flow.answered_backend);
            flow.answered_example.get_or_insert(q.pkt);
            if flow.current.count > flow.best.count {
                flow.best = std::mem::take(&mut flow.current);
            } else {
                flow.current = Streak::default();
            }
        } else {
            let s = &mut flow.current;
            if s.count == 0 {
                s.first_ts = q.pkt.ts_ns;
            }
            s.count += 1;
            s.last_ts = s.last_ts.max(q.pkt.ts_ns);
            s.backend = backend(q).or(s.backend);
            if s.examples.len() < 3 {
                s.examples.push(q.pkt);
            }
            if s.names.len() < 2 && !s.names.iter().any(|n| **n == *q.qname) {
                s.names.push(q.qname.clone());
            }
        }
    }

    pub fn finish(self, ctx: &Context<'_>, out: &mut Vec<Finding>) {
        let mut found = Vec::new();
        let mut total = 0;
        let mut keys: Vec<_> = self.flows.keys().copied().collect();
        keys.sort_unstable();
        for key in keys {
            let flow = &self.flows[&key];
            let streak = if flow.current.count >= flow.best.count {
                &flow.current
            } else {
                &flow.best
            };
            if streak.count < MIN_STREAK || streak.last_ts - streak.first_ts < MIN_STREAK_NS {
                continue;
            }
            let (client, server) = key;
            let answered_before =
                flow.answered > 0 && flow.answered_first_ts.is_some_and(|t| t < streak.first_ts);
            // One name retried unanswered (a slow or failing upstream for that name; the answer may come
            // 20 s later) is not a cut-off socket, even on a socket that was answered before.
            if streak.names.len() < 2 {
                continue;
            }
            // Another socket's query to the same address answered while this one's were not.
            let other = self.flows.iter().find(|((c, s), f)| {
                *s == server
                    && *c != client
                    && f.answered > 0
                    && f.answered_last_ts >= streak.first_ts
                    && f.answered_first_ts.is_some_and(|t| t <= streak.last_ts)
                    && (streak.backend.is_none() || f.answered_backend != streak.backend)
            });
            let Some(((other_client, _), other)) = other else {
                continue;
            };
            let service = ctx.node.service_for(server.ip, server.port);
            let gone = match (service, streak.backend) {
                (Some(svc), Some(b)) => Some(!svc.endpoints.iter().any(|(ip, _)| *ip == b.ip)),
                _ => None,
            };
            let confidence = match (streak.backend, gone) {
                (Some(_), Some(true)) => Confidence::Confirmed,
                (Some(_), _) => Confidence::Likely,
                (None, _) if answered_before => Confidence::Likely,
                (None, _) => Confidence::Possible,
            };
            total += 1;
            let mut f = Finding::new(
                &INCIDENT,
                FindingKind::Incident,
                confidence,
                format!(
                    "{} queries from {client} to {server}{} went unanswered over {} while {other_client}'s queries to {server}{} were answered",
                    streak.count,
                    streak.backend.map(|b| format!(" (DNATed to {b})")).unwrap_or_default(),
                    secs(streak.last_ts - streak.first_ts),
                    other.answered_backend.map(|b| format!(" (by {b})")).unwrap_or_default(),
                ),
            )
            .because(format!("every query of one socket ({client}) went unanswered {} times in a row while another socket's queries to the same address were answered at the same time: the address serves, this socket's flow does not reach a server that answers", streak.count));
            f = match streak.backend {
                Some(b) => f.because(format!("the capture shows where they went after DNAT: {b}{}; the other socket's went to {}", if flow.answered_backend == Some(b) && answered_before { ", which had answered this socket before: the backend went away and the socket's conntrack entry still points at it" } else { "" }, other.answered_backend.map(|x| x.to_string()).unwrap_or_else(|| "another backend".into()))),
                None => f.because("this capture does not show the DNAT (a node capture with -i any, or `conntrack -L -p udp --orig-port-src`, shows which backend the entry points at)"),
            };
            if answered_before && streak.backend.is_none() {
                f = f.because(
                    "the same socket had been answered before: its flow broke, the Service did not",
                );
            }
            match (gone, service, streak.backend) {
                (Some(true), Some(svc), Some(b)) => {
                    f = f
                        .because(format!("{b} is not an endpoint of {} in the node facts: the entry points at a backend that was removed", svc.name))
                        .with_evidence(Evidence::Fact {
                            source: ctx.node.source.clone(),
                            text: format!(
                                "Service {} {}:{}/{} endpoints: {}",
                                svc.name,
                                svc.vip,
                                svc.port,
                                svc.protocol,
                                svc.endpoints.iter().map(|(ip, p)| format!("{ip}:{p}")).collect::<Vec<_>>().join(", ")
                            ),
                        });
                }
                (Some(false), Some(svc), Some(b)) => {
                    f = f.because(format!("{b} is still an endpoint of {} in the node facts: the backend may be alive and not answering this socket (an overloaded or half-dead pod)", svc.name));
                }
                _ => {
                    f = f.because("whether the backend is still an endpoint of the Service is a node fact (give --node)");
                }
            }
            f = f
                .rules_out(super::dns_upstream_unreachable::INCIDENT.id, format!("{server} answered {other_client} during the same seconds; a dead server fails every socket"))
                .rules_out(super::dns_conntrack_race::INCIDENT.id, "every query of the socket was lost, one after the other, not one query of a parallel pair");
            let mut pkts: Vec<(PktRef, String)> = streak
                .examples
                .iter()
                .map(|p| (*p, "query never answered".to_string()))
                .collect();
            if let Some(p) = other.answered_example {
                pkts.push((p, format!("another socket's query to {server}, answered")));
            }
            found.push(with_packets(
                f,
                ctx,
                &pkts,
                "one socket's queries unanswered while another's are answered",
            ));
        }
        super::merge_cases(found, total, out);
    }
}

impl super::CaptureDetector for Detector {
    fn set_max_keys(&mut self, max_keys: usize) {
        self.max_keys = max_keys;
    }

    fn query(&mut self, f: &FinishedQuery) {
        self.one(&f.query);
        if let Some(s) = &f.younger_sibling {
            self.one(s);
        }
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

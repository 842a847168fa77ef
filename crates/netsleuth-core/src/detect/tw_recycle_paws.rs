//! `tw-recycle-paws` [seed 003]: tcp_tw_recycle's per-host PAWS check drops SYNs from clients behind one
//! SNAT address whose timestamp clocks differ.

use crate::finding::Incident;
use crate::versions;

pub static INCIDENT: Incident = Incident {
    id: "tw-recycle-paws",
    title: "SYNs silently dropped by the server's per-host PAWS check (tcp_tw_recycle)",
    explanation: "With net.ipv4.tcp_tw_recycle=1 and TCP timestamps on (kernels before 4.12), the server \
remembers the last TSval seen from each source IP and drops a SYN whose TSval is older. Clients behind one \
SNAT address (pods on a node, hosts behind a NAT gateway) have unrelated timestamp clocks, so a SYN from \
one of them looks 'old' and is dropped without a reply; the client retransmits at 1, 3, 7 s and may time \
out. TcpExt PAWSPassive counts these drops.",
    remedy: "Set net.ipv4.tcp_tw_recycle=0 on the server (the option was removed in Linux 4.12 because of \
this). Do not disable tcp_timestamps to work around it.",
    sysctls: &[
        "net.ipv4.tcp_tw_recycle",
        "net.ipv4.tcp_timestamps",
    ],
    versions: &[&versions::TW_RECYCLE_REMOVED, &versions::TS_OFFSET_PER_CONNECTION],
    evidence: "Node: `net.ipv4.tcp_tw_recycle=1` with `tcp_timestamps=1` (kernels < 4.12 only; per-connection \
random TS offsets since 4.10 broke it even without NAT). Counter: TcpExt `PAWSPassive` rising. Capture: SYNs \
from one source IP whose TSval goes backwards against that IP's previous connection; no SYN-ACK; SYN \
retransmits 1, 3, 7 s. No drop reasons exist on such kernels: counters and captures are the evidence.",
};

use super::{secs, with_marked_packets, Context, Finished, Marked, SynRecord};
use crate::finding::{Confidence, Evidence, Finding, FindingKind};
use crate::flow::FxHashMap;
use crate::flow::{seq_diff, Endpoint};
use std::net::IpAddr;

/// TCP_PAWS_MSL: the per-host timestamp is trusted for this long.
const PAWS_WINDOW_NS: i64 = 60_000_000_000;
const MAX_PER_KEY: usize = 4096;

/// Recognises SYNs that go unanswered exactly when their TSval is older than the last one the server
/// accepted from the same source address.
#[derive(Default)]
pub struct Detector {
    /// Most distinct keys kept (0: the default `MAX_KEYS`).
    max_keys: usize,
    by_pair: FxHashMap<(IpAddr, Endpoint), Vec<SynRecord>>,
}

impl Detector {
    pub fn connection(&mut self, c: &Finished<'_>) {
        // A SYN answered by a bare ACK met a TIME_WAIT socket (timewait-paws-reject): the server
        // answered it, which tcp_tw_recycle's check never does, and did not accept it either.
        if c.syn_answered_by_ack.is_some() {
            return;
        }
        let Some(rec) = c.syn_record().cloned() else {
            return;
        };
        // A first SYN the node's own capture saw die before its egress never reached the server's
        // PAWS check (snat-port-clash drops it at conntrack insert): it is neither a drop by the
        // server nor an acceptance.
        if rec.tsval.is_none() || rec.lost_inside_node {
            return;
        }
        // The server sees the connection under its last leg (after SNAT): that source address is the
        // one its per-host cache is keyed by.
        let Some(leg) = c.legs.last() else { return };
        if let Some(v) = super::capped_entry(
            &mut self.by_pair,
            (leg.client.ip, leg.server),
            self.max_keys,
        ) {
            if v.len() < MAX_PER_KEY {
                v.push(rec);
            }
        }
    }

    /// Returns the ids of connections it explained.
    pub fn finish(
        mut self,
        ctx: &Context<'_>,
        already: &[u64],
        out: &mut Vec<Finding>,
    ) -> Vec<u64> {
        // SYNs an earlier detector explained (a reused port's SYN dropped by IPVS) are neither drops
        // nor acceptances of this one's.
        if !already.is_empty() {
            for recs in self.by_pair.values_mut() {
                recs.retain(|r| already.binary_search(&r.conn).is_err());
            }
        }
        let mut explained = Vec::new();
        // Before SNAT (a client pod's own capture), the hosts that share the SNAT address show as
        // separate sources: compare them per server too, at `possible`, if no pair decided it.
        // The servers compared are the first 4,096 met; their records are copied only where
        // `across_sources` can find something: two sources or more, and a SYN dropped persistently.
        let mut servers_met: FxHashMap<Endpoint, AcrossSources> = FxHashMap::default();
        for ((_, server), recs) in &self.by_pair {
            if servers_met.len() < 4096 || servers_met.contains_key(server) {
                let seen = servers_met.entry(*server).or_default();
                for r in recs {
                    seen.add(r);
                }
            }
        }
        let mut by_server: FxHashMap<Endpoint, Vec<SynRecord>> = FxHashMap::default();
        for ((_, server), recs) in &self.by_pair {
            if servers_met.get(server).is_some_and(AcrossSources::may_find) {
                by_server
                    .entry(*server)
                    .or_default()
                    .extend(recs.iter().cloned());
            }
        }
        let recycle = ctx
            .node
            .sysctl("net.ipv4.tcp_tw_recycle")
            .map(|v| v.trim() == "1");
        for ((src, server), mut recs) in self.by_pair {
            recs.sort_by_key(|r| r.first_syn.ts_ns);
            let mut last_accepted: Option<(i64, u32, usize)> = None;
            let mut dropped_backwards = Vec::new();
            let mut dropped_forward = 0u32;
            let mut answered_backwards = 0u32;
            for (i, r) in recs.iter().enumerate() {
                let ts = r.tsval.expect("filtered on insert");
                let backwards = last_accepted.is_some_and(|(t, v, _)| {
                    r.first_syn.ts_ns.saturating_sub(t) <= PAWS_WINDOW_NS && seq_diff(ts, v) < 0
                });
                if r.first_unanswered() && r.transmissions >= 2 || !r.answered {
                    if backwards {
                        dropped_backwards.push((i, last_accepted.map(|(_, _, j)| j)));
                    } else {
                        dropped_forward += 1;
                    }
                }
                if r.answered && !r.first_unanswered() && backwards {
                    answered_backwards += 1;
                }
                // The per-host cache holds the timestamp of the peer's most recent connection (random
                // 32-bit TS clocks make "the highest" meaningless), so compare with the latest one.
                if r.answered && !r.first_unanswered() {
                    last_accepted = Some((r.first_syn.ts_ns, ts, i));
                }
            }
            // PAWS drops only SYNs whose TSval went backwards: a forward-moving SYN dropped means the
            // drops have another cause (per-connection random TS offsets make "backwards" a coin toss
            // for modern Linux clients, so one backwards drop alone is weak). A backwards SYN can still
            // be accepted: the per-host cache is refreshed only when the server closes first.
            if dropped_backwards.is_empty() || dropped_forward > 0 {
                continue;
            }
            // The hosts behind the SNAT address, when the capture saw the connections before SNAT
            // (a node's `-i any`): each with its own timestamp clock.
            let hosts_behind: std::collections::BTreeSet<IpAddr> = recs
                .iter()
                .map(|r| r.origin_ip)
                .filter(|ip| *ip != src)
                .collect();
            let accepted_ahead = recs
                .iter()
                .filter(|r| r.answered && !r.first_unanswered())
                .count();
            let both_legs = hosts_behind.len() >= 2 && accepted_ahead >= 1;
            let confidence = match recycle {
                Some(true) => Confidence::Confirmed,
                Some(false) => Confidence::Possible,
                None if both_legs => Confidence::Confirmed,
                None if dropped_backwards.len() >= 2 => Confidence::Likely,
                None => Confidence::Possible,
            };
            let mut f = Finding::new(
                &INCIDENT,
                FindingKind::Incident,
                confidence,
                format!(
                    "{} SYN(s) from {} to {} dropped without reply, each carrying a TCP timestamp older than one the server had just accepted from that address",
                    dropped_backwards.len(),
                    src,
                    server
                ),
            )
            .because(format!(
                "every unanswered SYN from {src} carries a TSval below the last accepted connection's from the same address within {}; {} unanswered SYN(s) had a forward-moving TSval",
                secs(PAWS_WINDOW_NS),
                dropped_forward
            ))
            ;
            f = if both_legs {
                f.because(format!(
                    "the capture shows the connections before SNAT: {} hosts ({}) with their own timestamp clocks reach the server as {src}; exactly the SYNs whose TSval was behind the last accepted one were dropped while {accepted_ahead} SYN(s) ahead were answered: the server's per-host PAWS check at work",
                    hosts_behind.len(),
                    hosts_behind.iter().take(4).map(|h| h.to_string()).collect::<Vec<_>>().join(", ")
                ))
            } else {
                f.because(format!("different TS clocks behind one source address mean several hosts behind SNAT (or per-connection TS offsets, Linux ≥ {}); the capture does not show the hosts before SNAT (a node's -i any would)", versions::TS_OFFSET_PER_CONNECTION.mainline().unwrap_or("?")))
            };
            if answered_backwards > 0 {
                f = f.because(format!(
                    "{answered_backwards} other backwards SYN(s) were accepted: the server's per-host timestamp is refreshed only by connections it closed first"
                ));
            }
            match recycle {
                Some(true) => {
                    f = f.with_evidence(Evidence::Config { source: ctx.node.source.clone(), line: None, text: "net.ipv4.tcp_tw_recycle = 1".into() })
                }
                Some(false) => f = f.because("the node facts say tcp_tw_recycle is 0: another PAWS-like drop is at work"),
                None => f = f.because(format!("whether the server has net.ipv4.tcp_tw_recycle=1 (kernels < {}) is not known from the capture", versions::TW_RECYCLE_REMOVED.mainline().unwrap_or("?"))),
            }
            let mut pkts = Vec::new();
            for (i, prev) in dropped_backwards.iter().take(3) {
                let r = &recs[*i];
                if let Some(j) = prev {
                    let p = &recs[*j];
                    pkts.push(
                        Marked::new(
                            p.first_syn,
                            format!("accepted SYN, TSval {}", p.tsval.unwrap_or(0)),
                        )
                        .flow(p.conn),
                    );
                    if let Some(a) = p.answer {
                        pkts.push(Marked::new(a, "SYN-ACK".to_string()).flow(p.conn));
                    }
                }
                // The SYN dropped for its older timestamp decides.
                pkts.push(
                    Marked::new(
                        r.first_syn,
                        format!("SYN with older TSval {}: no reply", r.tsval.unwrap_or(0)),
                    )
                    .flow(r.conn)
                    .decisive(true),
                );
                for x in r.retransmits.iter().take(3) {
                    pkts.push(
                        Marked::new(
                            *x,
                            format!(
                                "SYN retransmitted after {}",
                                secs(x.ts_ns.saturating_sub(r.first_syn.ts_ns))
                            ),
                        )
                        .flow(r.conn),
                    );
                }
            }
            explained.extend(dropped_backwards.iter().map(|(i, _)| recs[*i].conn));
            f = f
                .rules_out(super::listen_queue_overflow::INCIDENT.id, "the dropped SYNs are exactly those whose timestamps fell behind the last accepted one from the address; SYNs with newer timestamps were answered at the same time")
                .rules_out(super::snat_port_clash::INCIDENT.id, "the SYNs were dropped by the server (no SYN-ACK) according to their timestamps, not lost inside a NATing node")
                .rules_out(super::timewait_paws_reject::INCIDENT.id, "no SYN was answered by a bare ACK of an older connection: the SYNs were dropped without a reply, which a TIME_WAIT socket never does");
            out.push(with_marked_packets(
                f,
                ctx,
                &pkts,
                "SYNs from one address with timestamps going backwards",
            ));
        }
        let mut servers: Vec<_> = by_server.into_iter().collect();
        servers.sort_by_key(|(s, _)| *s);
        for (server, recs) in servers {
            if recs.iter().any(|r| explained.contains(&r.conn)) {
                continue;
            }
            if let Some((f, conns)) = across_sources(ctx, server, recs) {
                explained.extend(conns);
                out.push(f);
            }
        }
        explained
    }
}

/// What a server's records say of `across_sources` before they are copied for it.
#[derive(Default)]
struct AcrossSources {
    first_source: Option<IpAddr>,
    several_sources: bool,
    dropped_persistently: bool,
}

impl AcrossSources {
    fn add(&mut self, r: &SynRecord) {
        match self.first_source {
            None => self.first_source = Some(r.origin_ip),
            Some(ip) => self.several_sources |= ip != r.origin_ip,
        }
        self.dropped_persistently |= !r.answered && r.transmissions >= 3;
    }

    /// Whether `across_sources` can find anything: it needs two sources and a SYN it calls dropped.
    fn may_find(&self) -> bool {
        self.several_sources && self.dropped_persistently
    }
}

/// Several sources to one server, seen before SNAT: SYNs from one of them dropped exactly when their
/// TSval is behind the last one the server accepted from another (as it would be if both reach the
/// server through one SNAT address), each dropped persistently (a PAWS drop repeats on every
/// retransmission; a random loss rarely does three times).
fn across_sources(
    ctx: &Context<'_>,
    server: Endpoint,
    mut recs: Vec<SynRecord>,
) -> Option<(Finding, Vec<u64>)> {
    let sources: std::collections::BTreeSet<IpAddr> = recs.iter().map(|r| r.origin_ip).collect();
    if sources.len() < 2 {
        return None;
    }
    recs.sort_by_key(|r| r.first_syn.ts_ns);
    let mut last_accepted: Option<(i64, u32, IpAddr, usize)> = None;
    let mut dropped = Vec::new();
    for (i, r) in recs.iter().enumerate() {
        let ts = r.tsval?;
        let accepted = r.answered && !r.first_unanswered();
        // What `AcrossSources::may_find` looks for before the records are copied.
        if !r.answered && r.transmissions >= 3 {
            let behind_other = last_accepted.is_some_and(|(t, v, from, _)| {
                from != r.origin_ip
                    && r.first_syn.ts_ns.saturating_sub(t) <= PAWS_WINDOW_NS
                    && seq_diff(ts, v) < 0
            });
            if !behind_other {
                return None; // a persistent drop that timestamps do not explain
            }
            dropped.push((i, last_accepted.map(|(_, _, _, j)| j)));
        }
        if accepted {
            last_accepted = Some((r.first_syn.ts_ns, ts, r.origin_ip, i));
        }
    }
    if dropped.is_empty() {
        return None;
    }
    let victim = recs[dropped[0].0].origin_ip;
    let f = Finding::new(
        &INCIDENT,
        FindingKind::Incident,
        Confidence::Possible,
        format!(
            "{} connection(s) from {victim} to {server} never answered, each SYN's TCP timestamp behind one the server had just accepted from another client",
            dropped.len()
        ),
    )
    .because("every retransmission of these SYNs went unanswered while other clients' SYNs to the same server were answered; each carried a TSval behind the one the server had last accepted from another client")
    .because("that is a PAWS drop only if these clients reach the server through one SNAT address (pods of one node behind MASQUERADE): this capture shows them before SNAT, so that link is not seen; the node's -i any capture or the server's side would show one source address with its timestamps going backwards")
    .rules_out(super::local_source_drop::INCIDENT.id, "the dropped SYNs are exactly those whose timestamps fell behind another client's; a martian source would be dropped whatever its timestamps")
    .cannot_rule_out("network-loss", "without the SNAT address seen, a path that drops one client's packets looks the same; the timestamps' order is the only link");
    let mut pkts = Vec::new();
    for (i, prev) in dropped.iter().take(2) {
        if let Some(j) = prev {
            let p = &recs[*j];
            pkts.push(
                Marked::new(
                    p.first_syn,
                    format!(
                        "accepted SYN from another client, TSval {}",
                        p.tsval.unwrap_or(0)
                    ),
                )
                .flow(p.conn),
            );
        }
        let r = &recs[*i];
        pkts.push(
            Marked::new(
                r.first_syn,
                format!("SYN with older TSval {}: no reply", r.tsval.unwrap_or(0)),
            )
            .flow(r.conn)
            .decisive(true),
        );
        for x in r.retransmits.iter().take(2) {
            pkts.push(Marked::new(*x, "SYN retransmitted, no reply".to_string()).flow(r.conn));
        }
    }
    let conns = dropped.iter().map(|(i, _)| recs[*i].conn).collect();
    Some((
        with_marked_packets(
            f,
            ctx,
            &pkts,
            "SYNs whose timestamps fell behind another client's",
        ),
        conns,
    ))
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

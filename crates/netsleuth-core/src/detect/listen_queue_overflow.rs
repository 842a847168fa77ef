//! `listen-queue-overflow` [seed 003]: a listener's SYN or accept queue overflows under a burst; SYNs are
//! dropped and retransmitted, probes fail.

use crate::finding::Incident;
use crate::versions;

pub static INCIDENT: Incident = Incident {
    id: "listen-queue-overflow",
    title: "SYNs dropped because a listener's queue is full",
    explanation: "A listening socket holds at most min(backlog, net.core.somaxconn) established connections \
waiting for accept(), and a bounded number of half-open ones (tcp_max_syn_backlog). When a burst fills \
them, the kernel drops further SYNs (or the final ACK) without a reply: TcpExt ListenOverflows/ListenDrops \
rise and clients retransmit their SYN after 1, 3, 7 s; health probes time out.",
    remedy: "Raise the application's listen() backlog together with net.core.somaxconn and \
net.ipv4.tcp_max_syn_backlog (in the pod's network namespace), make the application accept faster, keep \
tcp_syncookies=1.",
    sysctls: &[
        "net.core.somaxconn",
        "net.ipv4.tcp_max_syn_backlog",
        "net.ipv4.tcp_syncookies",
    ],
    versions: &[&versions::DROP_REASON_LISTEN_OVERFLOW],
    evidence: "Counters (per network namespace — each pod has its own): TcpExt `ListenOverflows`, \
`ListenDrops`, `TCPReqQFullDrop`, `TCPReqQFullDoCookies`. Sockets: a listener's accept queue at its backlog. \
Sysctls: `net.core.somaxconn`, `net.ipv4.tcp_max_syn_backlog`, `tcp_syncookies`. Drop reason \
TCP_LISTEN_OVERFLOW (≈6.15+). Capture: SYN bursts with unanswered, retransmitted SYNs.",
};

use super::{one_flow, secs, with_marked_packets, Context, Finished, Marked, SynRecord};
use crate::finding::{Confidence, Finding, FindingKind};
use crate::flow::{Endpoint, FxHashMap, PktRef};

const MAX_PER_SERVER: usize = 8192;
const BURST_WINDOW_NS: i64 = 1_000_000_000;
const MIN_DROPS: usize = 3;
const MIN_BURST: usize = 5;

/// Recognises a listener that drops SYNs (or final ACKs) during bursts of new connections while it
/// answers others: the signature of a full SYN or accept queue.
#[derive(Default)]
pub struct Detector {
    /// Most distinct keys kept (0: the default `MAX_KEYS`).
    max_keys: usize,
    by_server: FxHashMap<Endpoint, ServerSyns>,
    /// Connections whose SYN-ACK the server had to retransmit although the client ACKed it: the
    /// final ACK was dropped because the accept queue was full.
    synack_retrans: FxHashMap<Endpoint, Vec<PktRef>>,
}

/// Per listener: every first-SYN time (for bursts), full records only for SYNs left unanswered.
#[derive(Default)]
struct ServerSyns {
    times: Vec<i64>,
    unanswered: Vec<SynRecord>,
    attempts: u32,
    answered_at_once: u32,
}

impl Detector {
    pub fn connection(&mut self, c: &Finished<'_>) {
        let Some(rec) = c.syn_record() else { return };
        let server = c.legs.last().map(|l| l.server).unwrap_or(rec.first_syn.dst);
        if c.synack_transmissions >= 2 && c.established {
            if let Some(sa) = c.synack {
                if let Some(v) =
                    super::capped_entry(&mut self.synack_retrans, server, self.max_keys)
                {
                    if v.len() < 16 {
                        v.push(sa);
                    }
                }
            }
        }
        if let Some(v) = super::capped_entry(&mut self.by_server, server, self.max_keys) {
            v.attempts += 1;
            if v.times.len() < MAX_PER_SERVER {
                v.times.push(rec.first_syn.ts_ns);
            }
            if rec.first_unanswered() {
                if v.unanswered.len() < MAX_PER_SERVER {
                    v.unanswered.push(rec.clone());
                }
            } else if rec.answered {
                v.answered_at_once += 1;
            }
        }
    }

    pub fn finish(self, ctx: &Context<'_>, explained: &[u64], out: &mut Vec<Finding>) -> Vec<u64> {
        let mut mine = Vec::new();
        let mut servers: Vec<_> = self.by_server.into_iter().collect();
        servers.sort_by_key(|(s, _)| *s);
        for (server, mut syns) in servers {
            syns.times.sort_unstable();
            syns.unanswered.sort_by_key(|r| r.first_syn.ts_ns);
            let times = &syns.times;
            let in_burst = |t: i64| {
                let lo = times.partition_point(|&x| x < t.saturating_sub(BURST_WINDOW_NS));
                let hi = times.partition_point(|&x| x <= t.saturating_add(BURST_WINDOW_NS));
                hi - lo >= MIN_BURST
            };
            let drops: Vec<&SynRecord> = syns
                .unanswered
                .iter()
                .filter(|r| explained.binary_search(&r.conn).is_err())
                .filter(|r| {
                    // A SYN sent once and never answered counts only if the capture went on long
                    // enough for the client to have retransmitted it (the first SYN RTO is 1 s).
                    r.first_unanswered()
                        && (r.transmissions >= 2
                            || (!r.answered
                                && ctx.capture_end_ns.saturating_sub(r.first_syn.ts_ns)
                                    >= 3_000_000_000))
                })
                .filter(|r| in_burst(r.first_syn.ts_ns))
                .collect();
            let synack_retrans = self.synack_retrans.get(&server).map(Vec::len).unwrap_or(0);
            if drops.len() < MIN_DROPS && synack_retrans < MIN_DROPS {
                continue;
            }
            let answered = syns.answered_at_once;
            let confidence = if answered > 0 {
                Confidence::Likely
            } else {
                Confidence::Possible
            };
            let mut f = Finding::new(
                &INCIDENT,
                FindingKind::Incident,
                confidence,
                format!(
                    "listener {server}: {} of {} connection attempts in bursts had their SYN ignored and retransmitted{}",
                    drops.len(),
                    syns.attempts,
                    if synack_retrans > 0 { format!("; {synack_retrans} SYN-ACKs re-sent although ACKed") } else { String::new() }
                ),
            )
            .because(format!(
                "the SYNs came in bursts (≥ {MIN_BURST} within {}) and the dropped ones got no reply at all, neither SYN-ACK nor RST, until retransmitted",
                secs(BURST_WINDOW_NS)
            ));
            f = if answered > 0 {
                f.because(format!("the same listener answered {answered} other SYNs at once: it is up, its queue was full"))
            } else {
                f.because("the listener answered no SYN on first try in this capture, so a firewall or routing drop is not ruled out")
            };
            f = f.because("the counters that would prove it (TcpExt ListenOverflows, ListenDrops, TCPReqQFullDrop) are node facts, not in a capture");
            let mut pkts = Vec::new();
            for r in drops.iter().take(3) {
                // The first SYN is the one the full queue dropped.
                pkts.extend(one_flow(&r.evidence(), r.conn, &r.first_syn));
            }
            if let Some(v) = self.synack_retrans.get(&server) {
                for p in v.iter().take(2) {
                    pkts.push(Marked::new(*p, "SYN-ACK the server had to re-send".into()));
                }
            }
            mine.extend(drops.iter().map(|r| r.conn));
            f = f
                .rules_out(super::local_source_drop::INCIDENT.id, "the unanswered SYNs came in bursts from sources whose other SYNs were answered, not every SYN of one source")
                .rules_out(super::tw_recycle_paws::INCIDENT.id, "SYNs explained by their timestamps falling behind were set aside before this finding was made");
            f = if answered > 0 {
                f.rules_out("network-loss", "the listener answered other SYNs in the same bursts; loss on the path would not pick the SYNs that arrive when the queue is full")
            } else {
                f.cannot_rule_out("network-loss", "no SYN was answered on the first try, so loss or a firewall on the path is as likely; TcpExt ListenOverflows on the server decides")
            };
            out.push(with_marked_packets(
                f,
                ctx,
                &pkts,
                "SYNs to a busy listener left unanswered",
            ));
        }
        mine
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

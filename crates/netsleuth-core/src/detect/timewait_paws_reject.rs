//! `timewait-paws-reject` [issue 15]: clients behind one SNAT address and port reach a server that
//! closes first; a new SYN meets the server's TIME_WAIT socket of the old connection, whose PAWS check
//! (or sequence check) rejects it with a bare ACK of the old connection; the client resets and retries
//! a second later. No `tcp_tw_recycle` involved: its fix would be wrong.

use crate::finding::Incident;
use crate::versions;

pub static INCIDENT: Incident = Incident {
    id: "timewait-paws-reject",
    title: "SYN rejected by the server's TIME_WAIT socket (PAWS): a bare ACK, a client RST and a 1 s retry",
    explanation: "A server that closes a connection first keeps it in TIME_WAIT for 60 s, remembering the \
peer's last TCP timestamp (ts_recent) and next sequence number. A new SYN on the same 4-tuple is accepted from \
TIME_WAIT only if its sequence number is beyond the old connection's or its TSval is newer \
(tcp_timewait_state_process). When several hosts share one source address and port (SNAT, a NAT gateway \
that reuses ports sooner than 60 s), their timestamp clocks differ: a SYN whose TSval is behind ts_recent \
fails the PAWS check (TcpExt PAWSEstab counts it; PAWSTimewait since 6.16) and is answered with a bare ACK of \
the old connection instead of a SYN-ACK. The client, in SYN-SENT, answers that ACK with a RST (which also ends \
the server's TIME_WAIT) and retransmits its SYN after its 1 s initial RTO (client kernels before 5.6 and other \
stacks; Linux ≥ 5.6 retransmits after a few milliseconds), which then succeeds: every such connect takes one \
second longer. tcp_tw_recycle plays no part (it drops SYNs silently and was removed in 4.12).",
    remedy: "Stop sharing one source address:port among hosts toward a server that closes first: give the \
NAT more addresses or ports so a port is not reused within the server's 60 s TIME_WAIT (conntrack's own \
TIME_WAIT timeout of 120 s does that on a Linux SNAT node; shorter NAT-gateway timeouts do not), or let the \
clients close first (HTTP keep-alive, the client sends FIN first) so TIME_WAIT sits on the client. Do not set \
tcp_tw_recycle (gone since 4.12) and do not turn tcp_timestamps off on the server: without timestamps the \
sequence check still rejects SYNs below the old connection's.",
    // tcp_timestamps is tw-recycle-paws's sysctl, ip_local_port_range snat-port-clash's (one owner each).
    sysctls: &[
        "net.ipv4.tcp_rfc1337",
        "net.netfilter.nf_conntrack_tcp_timeout_time_wait",
    ],
    versions: &[
        &versions::TW_RECYCLE_REMOVED,
        &versions::SYN_RESEND_AFTER_BAD_ACK,
        &versions::PAWS_TW_COUNTER,
    ],
    evidence: "Capture (either end or the server's node): on one 4-tuple, a connection the server closed \
first (its FIN before the client's), then within 60 s a SYN whose TSval is behind the TSecr the server \
echoes in its answer, a bare ACK (no SYN) acknowledging the old connection's sequence numbers, the client's \
RST with the ACK's ack number as its seq, and the SYN retransmitted ~1 s later (a few ms from Linux ≥ 5.6 \
clients) and answered. Two timestamp clocks on one source address:port show the hosts behind it (or \
per-connection timestamp offsets). Counter \
(server's namespace): TcpExt `PAWSEstab` (`PAWSTimewait` since 6.16) rising while `PAWSPassive` \
(tcp_tw_recycle) does not; drop reason TCP_RFC7323_TW_PAWS (6.16). Node: server-side TIME_WAIT sockets on a \
listening port. Real capture: ../shared/field/x07 (bonnefoa/flowstats tests/pcaps/reuse_port.pcap). Kernel: \
net/ipv4/tcp_minisocks.c tcp_timewait_state_process (PAWSESTABREJECTED → TCP_TW_ACK).",
};

use super::{merge_cases, secs, with_packets, Context, Finished};
use crate::finding::{Confidence, Finding, FindingKind};
use crate::flow::tcp::Conn;
use crate::flow::{seq_diff, Endpoint, FxHashMap, PktRef};

/// TCP_TIMEWAIT_LEN: how long the server keeps the old connection.
const TIME_WAIT_NS: i64 = 60_000_000_000;
/// TCP_PAWS_WINDOW: a TSval this far behind ts_recent still passes.
const PAWS_WINDOW: i64 = 1;
const MAX_KEEP: usize = 4096;

/// The last connection on a tuple that the server closed first: its TIME_WAIT socket.
#[derive(Debug, Clone, Copy)]
struct ServerClosed {
    /// When the close completed (the last FIN seen).
    closed_ts: i64,
    /// The connection's last packet (the end of the close).
    last: Option<PktRef>,
    /// The client's next sequence number: the TIME_WAIT socket's rcv_nxt.
    client_next: Option<u32>,
    server_next: Option<u32>,
    syn_tsval: Option<u32>,
}

#[derive(Debug, Clone)]
struct Reject {
    conn: u64,
    syn: PktRef,
    syn_tsval: Option<u32>,
    ack: PktRef,
    ack_tsecr: Option<u32>,
    client_rst: Option<PktRef>,
    retransmit: Option<PktRef>,
    synack: Option<PktRef>,
    old: Option<ServerClosed>,
}

impl Reject {
    /// The SYN's TSval is behind the timestamp the answering socket holds: PAWS rejected it.
    fn paws(&self) -> Option<bool> {
        Some(seq_diff(self.ack_tsecr?, self.syn_tsval?) > PAWS_WINDOW)
    }

    /// The ACK acknowledges exactly where the old connection's client had got to: it is that
    /// connection's socket answering.
    fn ack_continues_old(&self) -> bool {
        self.old.is_some_and(|o| {
            o.client_next == Some(self.ack.ack) && o.server_next.is_none_or(|s| s == self.ack.seq)
        })
    }
}

/// Recognises SYNs answered by a bare ACK of the previous connection on their tuple (a TIME_WAIT
/// socket rejecting them), which the client resets and retries.
#[derive(Default)]
pub struct Detector {
    /// Most distinct keys kept (0: the default `MAX_KEYS`).
    max_keys: usize,
    /// Per post-NAT tuple (client, server): the last connection closed by the server first.
    server_closed: FxHashMap<(Endpoint, Endpoint), ServerClosed>,
    rejects: Vec<Reject>,
    next_prune_ts: i64,
}

impl Detector {
    pub fn connection(&mut self, c: &Conn) {
        if !c.roles_known {
            return;
        }
        if let Some((ack, tsecr)) = c.syn_answered_by_ack {
            self.reject(c, ack, tsecr);
        }
        // FINs both ways, the server's first: the server holds TIME_WAIT for this tuple (with only its
        // own FIN seen it could still be in FIN_WAIT).
        let server_first = match c.fin_ts {
            [Some(client), Some(server)] => server < client,
            _ => false,
        };
        if !(c.established && server_first) {
            return;
        }
        let Some(leg) = c.legs.last() else { return };
        let closed_ts = c.fin_ts[0]
            .unwrap_or(c.last_ts)
            .max(c.fin_ts[1].unwrap_or(0));
        let max = if self.max_keys == 0 {
            super::MAX_KEYS
        } else {
            self.max_keys
        };
        // Entries whose TIME_WAIT is over cannot explain anything: drop them when the map is full, at
        // most once per second of capture time (a scan per connection would be quadratic).
        if self.server_closed.len() >= max && closed_ts >= self.next_prune_ts {
            self.server_closed
                .retain(|_, o| closed_ts.saturating_sub(o.closed_ts) <= TIME_WAIT_NS);
            self.next_prune_ts = closed_ts.saturating_add(1_000_000_000);
        }
        let key = (leg.client, leg.server);
        if self.server_closed.len() < max || self.server_closed.contains_key(&key) {
            self.server_closed.insert(
                key,
                ServerClosed {
                    closed_ts,
                    last: c.last_pkt(),
                    client_next: c.next_seq[0],
                    server_next: c.next_seq[1],
                    syn_tsval: c.syns.first().and_then(|s| s.tsval),
                },
            );
        }
    }

    fn reject(&mut self, c: &Conn, ack: PktRef, ack_tsecr: Option<u32>) {
        let Some(first) = c.syns.first() else { return };
        // A SYN-ACK without its SYN flag would acknowledge the SYN itself: this acknowledges another
        // connection's sequence space.
        if c.client_isn.map(|i| i.wrapping_add(1)) == Some(ack.ack) {
            return;
        }
        // The client's reaction: a RST whose seq is the ACK's ack number (RFC 793 reset for an
        // unacceptable ACK in SYN-SENT), or its SYN sent again after the ACK.
        let client_rst = c
            .rsts
            .iter()
            .find(|r| r.from_client && r.pkt.ts_ns >= ack.ts_ns && r.pkt.seq == ack.ack)
            .map(|r| r.pkt);
        let retransmit = c
            .syns
            .iter()
            .find(|s| s.pkt.ts_ns > ack.ts_ns)
            .map(|s| s.pkt);
        if client_rst.is_none() && retransmit.is_none() {
            return;
        }
        let old = self
            .server_closed
            .get(&(ack.dst, ack.src))
            .copied()
            .filter(|o| {
                first.pkt.ts_ns >= o.closed_ts
                    && first.pkt.ts_ns.saturating_sub(o.closed_ts) <= TIME_WAIT_NS
            });
        if self.rejects.len() < MAX_KEEP {
            self.rejects.push(Reject {
                conn: c.id,
                syn: first.pkt,
                syn_tsval: first.tsval,
                ack,
                ack_tsecr,
                client_rst,
                retransmit,
                synack: c.synack,
                old,
            });
        }
    }

    pub fn finish(self, ctx: &Context<'_>, out: &mut Vec<Finding>) -> Vec<u64> {
        let mut cases = Vec::new();
        let mut explained = Vec::new();
        for r in &self.rejects {
            let Some(f) = finding(ctx, r) else { continue };
            explained.push(r.conn);
            cases.push(f);
        }
        let n = cases.len() as u32;
        merge_cases(cases, n.max(1), out);
        explained
    }
}

fn finding(ctx: &Context<'_>, r: &Reject) -> Option<Finding> {
    let paws = r.paws();
    // Without timestamps the TIME_WAIT socket rejects a SYN whose sequence number is not beyond the
    // old connection's (the same rejection, without the PAWS counter).
    let seq_reject = seq_diff(r.syn.seq, r.ack.ack) <= 0;
    let continues = r.ack_continues_old();
    let (confidence, mechanism) = match (paws, continues) {
        (Some(true), true) => (Confidence::Confirmed, "PAWS"),
        (None, true) if seq_reject => (Confidence::Confirmed, "sequence"),
        (Some(true), false) => (Confidence::Likely, "PAWS"),
        (Some(false), _) => return None, // a newer TSval passes TIME_WAIT: another socket answered
        (None, _) => (Confidence::Possible, "sequence"),
    };
    let server = r.ack.src;
    let client = r.ack.dst;
    let retry = r
        .retransmit
        .map(|p| secs(p.ts_ns.saturating_sub(r.syn.ts_ns)))
        .unwrap_or_else(|| "no retry seen".into());
    let ts_text = match (r.syn_tsval, r.ack_tsecr) {
        (Some(v), Some(e)) => format!(": its TSval {v} is behind the {e} the server holds"),
        _ => String::new(),
    };
    let mut f = Finding::new(
        &INCIDENT,
        FindingKind::Incident,
        confidence,
        format!(
            "SYN from {client} to {server} answered by a bare ACK of the previous connection on that tuple (the server's TIME_WAIT rejected it{ts_text}); the client reset it and retried ({retry})"
        ),
    );
    f = match paws {
        Some(true) => f.because(format!(
            "the answer is an ACK without SYN whose TSecr {} is newer than the SYN's TSval {}: the server's socket for this tuple holds a later timestamp from {client} and failed the SYN on PAWS (TcpExt PAWSEstab, PAWSTimewait since 6.16)",
            r.ack_tsecr.unwrap_or(0),
            r.syn_tsval.unwrap_or(0)
        )),
        _ => f.because("the SYN carries no timestamp: the TIME_WAIT socket rejects a SYN whose sequence number is not beyond the old connection's"),
    };
    if let Some(o) = r.old {
        f = f.because(format!(
            "the previous connection on {client} → {server} was closed by the server first {} before this SYN, within the 60 s of TIME_WAIT, and the ACK acknowledges exactly where that connection's client had got to: its TIME_WAIT socket answered",
            secs(r.syn.ts_ns.saturating_sub(o.closed_ts))
        ));
        if let (Some(a), Some(b)) = (o.syn_tsval, r.syn_tsval) {
            if seq_diff(b, a) < 0 {
                f = f.because(format!(
                    "two timestamp clocks on {client}: the earlier connection's SYN carried TSval {a}, this later one {b}, behind it: several hosts share this address and port (SNAT), or the client's kernel gives each connection its own timestamp offset"
                ));
            }
        }
    } else {
        f = f.because(format!(
            "the previous connection on the tuple is not in the capture: that the server closed it first (TIME_WAIT) is inferred from the {mechanism} rejection, not seen"
        ));
    }
    if r.client_rst.is_some() && r.retransmit.is_some() {
        f = f.because(format!(
            "the client answered the ACK with a RST carrying the ACK's ack number and sent its SYN again after {retry} (1 s from clients before Linux 5.6 and most other stacks; milliseconds since {})",
            versions::SYN_RESEND_AFTER_BAD_ACK.source
        ));
    }
    f = f
        .rules_out(super::tw_recycle_paws::INCIDENT.id, "the server answered the SYN (a bare ACK of the old connection); tcp_tw_recycle drops such SYNs silently, and it does not exist on kernels ≥ 4.12: setting tcp_tw_recycle=0 or turning timestamps off is not the fix")
        .rules_out(super::snat_port_clash::INCIDENT.id, "the SYN reached the server and was answered; a clash at conntrack insert drops it inside the NATing node")
        .rules_out(super::listen_queue_overflow::INCIDENT.id, "the answer came from the old connection's socket (it acknowledges that connection's sequence numbers), not from a listener that dropped the SYN");
    f = if r.old.is_some() {
        f.rules_out("server-half-open", "the old connection was closed by FINs both ways, the server's first, before the SYN: the server held it in TIME_WAIT, not established")
    } else {
        f.cannot_rule_out("server-half-open", "a server that still believes the old connection established also answers a SYN with an ACK (RFC 5961 challenge ACK); the old connection's close, seen in a longer capture, decides")
    };
    let mut pkts = Vec::new();
    if let Some(o) = r.old {
        if let Some(last) = o.last {
            pkts.push((
                last,
                "end of the previous connection on this tuple, closed by the server first (TIME_WAIT on the server)".to_string(),
            ));
        }
    }
    pkts.push((
        r.syn,
        format!(
            "SYN, TSval {}",
            r.syn_tsval
                .map(|v| v.to_string())
                .unwrap_or_else(|| "none".into())
        ),
    ));
    pkts.push((
        r.ack,
        format!(
            "bare ACK of the old connection instead of a SYN-ACK, TSecr {}",
            r.ack_tsecr
                .map(|v| v.to_string())
                .unwrap_or_else(|| "none".into())
        ),
    ));
    if let Some(p) = r.client_rst {
        pkts.push((p, "client RST for the unexpected ACK".to_string()));
    }
    if let Some(p) = r.retransmit {
        pkts.push((
            p,
            format!(
                "SYN retransmitted after {}",
                secs(p.ts_ns.saturating_sub(r.syn.ts_ns))
            ),
        ));
    }
    if let Some(p) = r.synack {
        pkts.push((p, "SYN-ACK".to_string()));
    }
    Some(with_packets(
        f,
        ctx,
        &pkts,
        "a SYN rejected by the TIME_WAIT socket of the tuple's previous connection",
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
        _explained: &[u64],
        out: &mut Vec<Finding>,
    ) -> Vec<u64> {
        Detector::finish(*self, ctx, out)
    }
}

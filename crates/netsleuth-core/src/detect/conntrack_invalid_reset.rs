//! `conntrack-invalid-reset` [issue 15, kubernetes #74839]: inside an established connection to a
//! Service, conntrack marks one reply INVALID (out of its TCP window), so reverse NAT skips it; the
//! client gets a segment from the backend pod's own address, answers it with RST, and that RST,
//! untranslated too, kills the backend's end of the connection.

use crate::finding::Incident;

pub static INCIDENT: Incident = Incident {
    id: "conntrack-invalid-reset",
    title: "a reply conntrack marked INVALID skipped reverse NAT; the client reset it and the connection died",
    explanation: "NAT applies only to packets conntrack tracks. A segment of an established connection \
that falls outside the TCP window conntrack keeps (a retransmission after heavy loss or reordering, a \
late segment, window tracking that lost sync) is marked INVALID, and with nf_conntrack_tcp_be_liberal=0 \
and no rule dropping INVALID packets it is forwarded as it is: a reply from a Service backend then \
reaches the client with the pod's own address instead of the Service address. The client has no socket \
for that address and answers RST, with the segment's ACK as its sequence number; that RST is INVALID too \
(no entry matches it), reaches the backend untranslated, matches its socket exactly and resets it. The \
client's next segment then meets a backend without the connection: ECONNRESET on long transfers, \
seemingly at random (kubernetes #74839).",
    remedy: "Drop INVALID packets before they are forwarded: `iptables -I FORWARD -m conntrack --ctstate \
INVALID -j DROP` (kube-proxy ≥ 1.15 writes it in KUBE-FORWARD, kubernetes #74840), or make conntrack \
accept out-of-window segments: net.netfilter.nf_conntrack_tcp_be_liberal=1 (kube-proxy's \
--conntrack-tcp-be-liberal does this). Either way the stray segment no longer leaves un-NATed; TCP \
recovers by itself.",
    sysctls: &["net.netfilter.nf_conntrack_tcp_be_liberal"],
    versions: &[],
    evidence: "Capture (client side): inside an established connection to a Service address, a segment \
from the backend pod's own address to the client's port, then the client's RST to that pod address \
(its sequence number is the stray segment's ACK), then the connection to the Service is reset. Node \
`-i any`: the client's RST leaves only toward the backend's address, never toward the Service address \
(the pre-NAT view has no copy of it). Node: `conntrack -S` `invalid` rising; \
`nf_conntrack_tcp_be_liberal = 0`; no `-m conntrack --ctstate INVALID -j DROP` (nft: `ct state invalid \
drop`) in the forward path; kernel log with nf_log_all_netns or a LOG rule: \"nf_ct_tcp: SEQ is over the \
upper bound\". Not bridge-nf-bypass: there every reply skips NAT and the handshake never completes; here \
one segment of an established connection does. Sources: kubernetes #74839 (fix #74840, kube-proxy 1.15); \
net/netfilter/nf_conntrack_proto_tcp.c tcp_in_window.",
};

use super::{capped_entry, with_packets, Context, Finished};
use crate::finding::{Confidence, Evidence, Finding, FindingKind};
use crate::flow::tcp::Conn;
use crate::flow::{Endpoint, FxHashMap, PktRef};
use crate::wire::tcp_flags::{ACK, RST, SYN};

/// Strays (client view) and cases (node view) kept as evidence.
const MAX_CASES: usize = 16;

/// A segment from an address the client never connected to, to a client port, answered by the
/// client's RST: the client's own view of a reply that skipped reverse NAT.
struct Stray {
    client: Endpoint,
    from: Endpoint,
    pkt: PktRef,
    rst: PktRef,
}

/// An established connection, by the client endpoint it used.
#[derive(Default, Clone, Copy)]
struct Established {
    server: Option<Endpoint>,
    first_ts: i64,
    last_ts: i64,
    /// The connection was reset afterwards (by either side).
    reset: Option<PktRef>,
}

struct NodeCase {
    client: Endpoint,
    vip: Endpoint,
    backend: Endpoint,
    pkts: Vec<(PktRef, String)>,
}

/// Recognises a client RST sent to a backend's own address inside an established connection to a
/// Service address: from the node (`-i any`: the RST has no pre-NAT copy) or from the client (a stray
/// segment from the backend's address, reset, beside the established connection on the same port).
#[derive(Default)]
pub struct Detector {
    max_keys: usize,
    strays: Vec<Stray>,
    established: FxHashMap<Endpoint, Established>,
    node_cases: Vec<NodeCase>,
    total: u32,
}

impl Detector {
    pub fn connection(&mut self, c: &Conn) {
        // Node view: a client RST that left only toward a post-DNAT address of an established
        // connection whose pre-NAT leg went to another address.
        if c.established && c.legs.len() >= 2 {
            let origin = &c.legs[0];
            for r in c.rsts.iter().filter(|r| r.from_client) {
                let leg = &c.legs[r.leg as usize];
                if r.leg == 0 || r.legs_seen & 1 != 0 || leg.client != origin.client {
                    continue;
                }
                if leg.server.ip == origin.server.ip || !c.heard_from_server_on(0) {
                    continue;
                }
                // Inside the connection: nothing had closed or reset it yet (a stray segment after a
                // reset — a late FIN from a backend whose NAT entry is gone — is the aftermath of
                // another cause, not this one).
                let earlier_close = c.rsts.iter().any(|x| x.pkt.ts_ns < r.pkt.ts_ns)
                    || c.fin_ts.iter().flatten().any(|&t| t < r.pkt.ts_ns);
                if earlier_close {
                    continue;
                }
                self.total += 1;
                if self.node_cases.len() < MAX_CASES {
                    let mut pkts = Vec::new();
                    if let Some(p) = c.prev_pkt().filter(|p| p.ts_ns <= r.pkt.ts_ns) {
                        pkts.push((
                            p,
                            format!("earlier packet of the connection: {}", p.tcp_what()),
                        ));
                    }
                    pkts.push((
                        r.pkt,
                        format!(
                            "the client resets {} directly (no copy toward {}): it had received a segment from the backend's own address",
                            leg.server, origin.server
                        ),
                    ));
                    if let Some(later) = c.rsts.iter().find(|x| x.pkt.ts_ns > r.pkt.ts_ns) {
                        pkts.push((
                            later.pkt,
                            format!("the connection is then reset: {}", later.pkt.tcp_what()),
                        ));
                    }
                    self.node_cases.push(NodeCase {
                        client: origin.client,
                        vip: origin.server,
                        backend: leg.server,
                        pkts,
                    });
                }
                break;
            }
            return;
        }
        // Client view, part 1: a stray. One tuple, no handshake, opened by a segment from the
        // "server" side with ACK, answered by the client's RST carrying that segment's ACK.
        if c.legs.len() == 1 && !c.roles_known && c.syns.is_empty() && c.synack.is_none() {
            let leg = &c.legs[0];
            let first = leg.first;
            if first.src == leg.server && first.flags & ACK != 0 && first.flags & (SYN | RST) == 0 {
                if let Some(r) = c
                    .rsts
                    .iter()
                    .find(|r| r.from_client && r.pkt.seq == first.ack && r.pkt.flags & ACK == 0)
                {
                    if self.strays.len() < MAX_CASES {
                        self.strays.push(Stray {
                            client: leg.client,
                            from: leg.server,
                            pkt: first,
                            rst: r.pkt,
                        });
                    }
                }
            }
            return;
        }
        // Client view, part 2: established connections by client endpoint, to match strays with.
        if c.established && c.roles_known {
            let leg = &c.legs[0];
            let reset = c.rsts.first().map(|r| r.pkt);
            if let Some(e) = capped_entry(&mut self.established, leg.client, self.max_keys) {
                *e = Established {
                    server: Some(leg.server),
                    first_ts: c.first_ts,
                    last_ts: c.last_ts,
                    reset,
                };
            }
        }
    }

    pub fn finish(self, ctx: &Context<'_>, out: &mut Vec<Finding>) {
        let be_liberal = ctx
            .node
            .sysctl("net.netfilter.nf_conntrack_tcp_be_liberal")
            .map(|v| v.trim().to_string());
        let mut found = Vec::new();
        let mut total = self.total;
        for case in &self.node_cases {
            let confidence = if be_liberal.as_deref() == Some("0") {
                Confidence::Confirmed
            } else {
                Confidence::Likely
            };
            let mut f = Finding::new(
                &INCIDENT,
                FindingKind::Incident,
                confidence,
                format!(
                    "inside the established connection {} → {} (backend {}), the client reset the backend's own address: a reply had skipped reverse NAT",
                    case.client, case.vip, case.backend
                ),
            )
            .because(format!("the connection went through DNAT: its packets were seen toward {} and after DNAT toward {}, and it was established", case.vip, case.backend))
            .because(format!("the client's RST was seen only toward {}, never toward {}: the client addressed the backend itself, which it only knows from a segment that reached it untranslated", case.backend, case.vip))
            .because("one segment of an established connection skipping reverse NAT is what conntrack does with a packet it marks INVALID (out of its TCP window) when nothing drops INVALID packets");
            f = be_liberal_reason(f, ctx, be_liberal.as_deref());
            f = look_alikes(f);
            found.push(with_packets(f, ctx, &case.pkts, "an established Service connection and the client's RST to the backend's own address"));
        }
        for s in &self.strays {
            let Some(e) = self.established.get(&s.client) else {
                continue;
            };
            let Some(server) = e.server else { continue };
            if server.ip == s.from.ip
                || e.reset.is_some_and(|r| r.ts_ns < s.pkt.ts_ns)
                || s.pkt.ts_ns < e.first_ts
                || s.pkt.ts_ns > e.last_ts.saturating_add(3_000_000_000)
            {
                continue;
            }
            total += 1;
            let mut f = Finding::new(
                &INCIDENT,
                FindingKind::Incident,
                Confidence::Likely,
                format!(
                    "inside the established connection {} → {}, a segment came from {} instead; the client reset it{}",
                    s.client,
                    server,
                    s.from,
                    if e.reset.is_some_and(|r| r.ts_ns >= s.rst.ts_ns) { " and the connection was reset" } else { "" }
                ),
            )
            .because(format!("the client's port {} was in an established connection with {server}; a segment to that port from {} (no handshake, with ACK) is a reply of that connection that skipped reverse NAT", s.client.port, s.from))
            .because("the client answered it with a RST carrying the segment's ACK as its sequence number: it had no socket for that address, as expected")
            .because("this is the client's view: that conntrack marked the segment INVALID, and that no rule dropped it, are on the node (`conntrack -S` invalid, the FORWARD rules); a node capture (-i any) shows the RST leave toward the backend only");
            f = be_liberal_reason(f, ctx, be_liberal.as_deref());
            f = look_alikes(f);
            let mut pkts = vec![
                (
                    s.pkt,
                    format!(
                        "segment from {} instead of {server}: {}",
                        s.from,
                        s.pkt.tcp_what()
                    ),
                ),
                (s.rst, format!("the client resets it: {}", s.rst.tcp_what())),
            ];
            if let Some(r) = e.reset.filter(|r| r.ts_ns >= s.rst.ts_ns) {
                pkts.push((
                    r,
                    format!("the Service connection is reset: {}", r.tcp_what()),
                ));
            }
            found.push(with_packets(f, ctx, &pkts, "an established Service connection, a segment from the backend's own address and the client's RST"));
        }
        super::merge_cases(found, total, out);
    }
}

fn be_liberal_reason(f: Finding, ctx: &Context<'_>, be_liberal: Option<&str>) -> Finding {
    match be_liberal {
        Some("0") => f
            .because("the node has nf_conntrack_tcp_be_liberal = 0: out-of-window segments are INVALID")
            .with_evidence(Evidence::Config {
                source: ctx.node.source.clone(),
                line: None,
                text: "net.netfilter.nf_conntrack_tcp_be_liberal = 0".into(),
            }),
        Some(v) => f.because(format!("the node facts say nf_conntrack_tcp_be_liberal = {v}: out-of-window segments are not INVALID there; another INVALID cause (a checksum, a state conntrack lost) or another node did it")),
        None => f.because("nf_conntrack_tcp_be_liberal is not known to this analysis (give --node)"),
    }
}

fn look_alikes(f: Finding) -> Finding {
    f.rules_out(super::bridge_nf_bypass::INCIDENT.id, "the connection was established through the Service address and its other replies were translated; a bridge bypass leaves every reply untranslated and the handshake never completes")
        .rules_out(super::conntrack_dnat_rebalance::INCIDENT.id, "the connection kept its backend; what changed is one reply's source, not the backend the client's segments went to")
        .rules_out("application", "the RST came from the client's kernel, to an address the application never used")
}

impl super::CaptureDetector for Detector {
    fn set_max_keys(&mut self, max_keys: usize) {
        self.max_keys = max_keys;
    }

    fn connection(&mut self, c: &Finished<'_>) {
        Detector::connection(self, c)
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

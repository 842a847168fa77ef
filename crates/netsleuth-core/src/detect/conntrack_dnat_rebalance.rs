//! `conntrack-dnat-rebalance` [seed 001]: an idle connection's conntrack entry expired or was flushed;
//! its next packet was DNATed afresh, to another Service backend, which answered RST.

use crate::finding::Incident;

pub static INCIDENT: Incident = Incident {
    id: "conntrack-dnat-rebalance",
    title: "a long-lived connection lost its conntrack entry and was sent to a different Service backend",
    explanation: "kube-proxy's DNAT to a Service backend is decided once per conntrack entry. When the entry \
expired (nf_conntrack_tcp_timeout_established, 86400 s under kube-proxy) or was flushed while the socket \
stayed open, the next segment was treated as a new flow (nf_conntrack_tcp_loose=1) and load-balanced again; \
the new backend has no such connection and answered RST, so the client got ECONNRESET. With \
nf_conntrack_tcp_loose=0 the segment is INVALID instead and dropped: a silent hang.",
    remedy: "Enable TCP keepalive on long-lived connections with a keepalive time shorter than \
nf_conntrack_tcp_timeout_established (e.g. SO_KEEPALIVE with tcp_keepalive_time=600), or have the \
application send heartbeats; do not flush conntrack on nodes with live Service connections.",
    sysctls: &[
        "net.netfilter.nf_conntrack_tcp_timeout_established",
        "net.netfilter.nf_conntrack_tcp_loose",
        "net.ipv4.tcp_keepalive_time",
    ],
    versions: &[],
    evidence: "Capture: an idle gap on a flow, then a non-SYN segment; on the node it is DNATed to \
a backend other than the connection's original one; that backend answers RST. Gap vs \
`nf_conntrack_tcp_timeout_established` (kernel default 432000 s; kube-proxy sets 86400). With \
`nf_conntrack_tcp_loose=0` the segment is INVALID instead (kube-proxy drops INVALID → silent timeouts). Live: a \
DESTROY event for an ASSURED entry whose socket is still open. Node: established sockets without keepalive, or \
keepalive time (`tcp_keepalive_time` 7200 s default) longer than the conntrack timeout. Fix: keepalive shorter \
than the timeout.",
};

use super::{one_flow, remaps, secs, with_marked_packets, Context, Finished};
use crate::finding::{Confidence, Evidence, Finding, FindingKind};
use crate::flow::tcp::Conn;
use crate::flow::{Endpoint, PktRef};
use crate::wire::tcp_flags::{ACK, RST};

struct Case {
    client: Endpoint,
    vip: Option<Endpoint>,
    old_backend: Option<Endpoint>,
    new_backend: Endpoint,
    gap_ns: i64,
    pkts: Vec<(PktRef, String)>,
    /// The connection's flow-engine id, and the packet that decides the case.
    conn: u64,
    decisive: PktRef,
    /// The new tuple continues the sequence space exactly (client view: the RST's seq proves it).
    exact: bool,
    /// Only the client's view: an RST that a socketless server sends, after a silence.
    client_view_only: bool,
}

/// Recognises a connection whose server-side tuple changed mid-stream (a new DNAT decision) and was
/// then reset by the new backend; from the client's view alone, a no-socket RST after a silence.
#[derive(Default)]
pub struct Detector {
    cases: Vec<Case>,
    total: u32,
}

/// From the client's view alone, a reset right after a silence at least this long is worth a mention
/// (conntrack entries are forgotten after a timeout, a flush or a NAT box restart, so the silence can
/// be short; what matters is that the connection was quiet, then its next segment met no socket).
const CLIENT_VIEW_MIN_GAP_NS: i64 = 2_000_000_000;

/// Whether a server address is one a pod reaches through DNAT (a ClusterIP or another cluster-internal
/// address) rather than an external one it reaches through SNAT: private, shared (CGNAT), ULA.
fn cluster_internal(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(a) => {
            let o = a.octets();
            a.is_private() || a.is_loopback() || (o[0] == 100 && (64..128).contains(&o[1]))
        }
        std::net::IpAddr::V6(a) => (a.segments()[0] & 0xfe00) == 0xfc00 || a.is_loopback(),
    }
}

impl Detector {
    pub fn connection(&mut self, c: &Conn) {
        let mut found = false;
        for r in remaps(c).into_iter().filter(|r| r.server_changed) {
            let leg = &c.legs[r.leg];
            found = true;
            self.total += 1;
            if self.cases.len() >= 5 {
                continue;
            }
            let old = c.legs[..r.leg]
                .iter()
                .enumerate()
                .rev()
                .find(|(i, l)| l.client == leg.client && Some(*i) != r.pre_nat_leg)
                .map(|(_, l)| l);
            let vip = r.pre_nat_leg.map(|i| c.legs[i].server);
            let mut pkts = Vec::new();
            if let Some(p) = leg.prev {
                pkts.push((
                    p,
                    format!("last packet before the silence: {}", p.tcp_what()),
                ));
            }
            pkts.push((
                leg.first,
                format!(
                    "same connection now sent to another backend, no SYN: {}",
                    leg.first.tcp_what()
                ),
            ));
            pkts.push((
                r.rst,
                format!("new backend resets it: {}", r.rst.tcp_what()),
            ));
            self.cases.push(Case {
                client: leg.client,
                vip,
                old_backend: old.map(|l| l.server).filter(|s| Some(*s) != vip),
                new_backend: leg.server,
                gap_ns: leg.gap_before_ns,
                pkts,
                conn: c.id,
                decisive: leg.first,
                exact: r.exact,
                client_view_only: false,
            });
        }
        if found || c.legs.len() != 1 || !c.established {
            return;
        }
        // Client view only: a RST without ACK whose seq is exactly what the client had acknowledged is
        // what a host with no socket for the connection sends; after a long silence, the connection's
        // NAT state is the usual suspect.
        let Some(rst) = c.rsts.iter().find(|r| !r.from_client) else {
            return;
        };
        let Some(end) = c.longest_gap_end else { return };
        if rst.pkt.flags & ACK != 0
            || rst.pkt.flags & RST == 0
            || c.longest_gap_ns < CLIENT_VIEW_MIN_GAP_NS
        {
            return;
        }
        if !(end.src == c.legs[0].client && rst.pkt.ts_ns >= end.ts_ns && rst.pkt.seq == end.ack) {
            return;
        }
        if c.fin_ts.iter().flatten().any(|&t| t <= rst.pkt.ts_ns) {
            // A side had closed: a RST for data after a FIN is how TCP ends a half-closed connection.
            return;
        }
        if !cluster_internal(c.legs[0].server.ip) {
            // Toward an external address the client is SNATed, but captures from the open internet
            // show bare RSTs after a silence from load balancers and restarted servers all the time;
            // from the client's side alone nothing tells a lost SNAT entry from those, so it stays a
            // symptom (listed with the causes considered), not a finding.
            return;
        }
        self.total += 1;
        if self.cases.len() < 5 {
            self.cases.push(Case {
                client: c.legs[0].client,
                vip: Some(c.legs[0].server),
                old_backend: None,
                new_backend: c.legs[0].server,
                gap_ns: c.longest_gap_ns,
                pkts: vec![
                    (
                        end,
                        format!(
                            "first packet after {} of silence: {}",
                            secs(c.longest_gap_ns),
                            end.tcp_what()
                        ),
                    ),
                    (
                        rst.pkt,
                        format!(
                            "reset as from a host without this connection: {}",
                            rst.pkt.tcp_what()
                        ),
                    ),
                ],
                conn: c.id,
                decisive: rst.pkt,
                exact: true,
                client_view_only: true,
            });
        }
    }

    pub fn finish(self, ctx: &Context<'_>, out: &mut Vec<Finding>) {
        let timeout = ctx
            .node
            .sysctl("net.netfilter.nf_conntrack_tcp_timeout_established")
            .and_then(|v| v.trim().parse::<i64>().ok());
        let mut found = Vec::new();
        for case in self.cases {
            let confidence = if case.client_view_only {
                let is_service = case
                    .vip
                    .is_some_and(|v| ctx.node.service_for(v.ip, v.port).is_some());
                if is_service && timeout.is_some_and(|t| case.gap_ns >= t * 1_000_000_000) {
                    Confidence::Likely
                } else {
                    Confidence::Possible
                }
            } else if case.vip.is_some() {
                Confidence::Confirmed
            } else {
                Confidence::Likely
            };
            let summary =
                if case.client_view_only {
                    format!(
                    "connection {} → {} reset after {} idle, as by a server without the connection",
                    case.client,
                    case.new_backend,
                    secs(case.gap_ns)
                )
                } else {
                    format!(
                    "connection {} → {} was re-balanced{} to backend {} after {} idle and reset",
                    case.client,
                    case.vip.map(|v| v.to_string()).unwrap_or_else(|| "its Service".into()),
                    case.old_backend.map(|o| format!(" from backend {o}")).unwrap_or_default(),
                    case.new_backend,
                    secs(case.gap_ns)
                )
                };
            let mut f = Finding::new(&INCIDENT, FindingKind::Incident, confidence, summary);
            if case.client_view_only {
                f = f
                    .because("the capture shows only the client's side: the RST carries no ACK and its sequence number is exactly what the client had acknowledged, which is how a host answers a segment for a connection it does not have")
                    .because(format!("{} is a cluster-internal address (a Service is reached through DNAT), so a new backend choice after the entry was lost is the likelier cause than a re-SNAT; a node capture (-i any) or `conntrack -E` on the node would show the DNAT legs and confirm it", case.new_backend.ip))
                    .rules_out("application", "an application abort is RST|ACK; this RST has no ACK, and it came after the client's data, not after a FIN")
                    .cannot_rule_out(super::conntrack_snat_remap::INCIDENT.id, "if the client is SNATed on the way (hostNetwork peers, egress MASQUERADE), a lost SNAT entry looks the same from the client")
                    .cannot_rule_out("server-restart", "a server that restarted during the silence has no socket either")
                    .cannot_rule_out("middlebox-idle-timeout", "a load balancer in the path that forgot the idle connection answers the same way");
            } else {
                f = f.because("the segment after the silence continues the connection's sequence numbers under a new destination, without a handshake: DNAT chose a backend anew, so the connection's conntrack entry was gone");
                if case.vip.is_some() {
                    f = f.because("the client's own tuple (to the Service address) stayed the same while the backend changed: both NAT legs are visible");
                } else {
                    f = f.because(
                        "the pre-DNAT view (client → Service address) is not in the capture",
                    );
                }
                f = f.because(
                    "the new backend answered with a bare RST (no ACK): it has no such connection",
                );
                if !case.exact {
                    f = f.because("the sequence numbers continue only approximately (packets may be missing from the capture)");
                }
                f = f
                    .rules_out(super::conntrack_snat_remap::INCIDENT.id, "the client's side of the tuple stayed the same; only the backend changed")
                    .rules_out(super::bridge_nf_bypass::INCIDENT.id, "the new backend's packets were answered through the new DNAT entry, not from an un-NATed pod address to a client that expected the Service address")
                    .rules_out("application", "the backend's RST carries no ACK: it had no such connection, so it did not abort one")
                    .rules_out("middlebox-idle-timeout", "the segment after the silence went to another backend: the translation was chosen anew, which a middlebox's own timeout does not do");
            }
            if let Some(t) = timeout {
                let why = if case.gap_ns >= t * 1_000_000_000 {
                    format!("the silence ({}) exceeds nf_conntrack_tcp_timeout_established = {t} s: the entry expired", secs(case.gap_ns))
                } else {
                    format!("the silence ({}) is shorter than nf_conntrack_tcp_timeout_established = {t} s: the entry was removed (flush, conntrack -D, a restart of the NAT box)", secs(case.gap_ns))
                };
                f = f.because(why).with_evidence(Evidence::Config {
                    source: ctx.node.source.clone(),
                    line: None,
                    text: format!("net.netfilter.nf_conntrack_tcp_timeout_established = {t}"),
                });
            }
            found.push(with_marked_packets(
                f,
                ctx,
                &one_flow(&case.pkts, case.conn, &case.decisive),
                "one TCP connection before and after its silence",
            ));
        }
        super::merge_cases(found, self.total, out);
    }
}

impl super::CaptureDetector for Detector {
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

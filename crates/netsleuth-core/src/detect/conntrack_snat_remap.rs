//! `conntrack-snat-remap` [seed 000]: a live connection's conntrack entry vanished; its next packet was
//! SNATed to a new source port; the server, which knows only the old port, answered RST.

use crate::finding::Incident;
use crate::versions;

pub static INCIDENT: Incident = Incident {
    id: "conntrack-snat-remap",
    title: "a live connection was re-SNATed to a new source port and reset by the server",
    explanation: "The connection's conntrack entry disappeared while the connection was alive (old kernels' \
MASQUERADE flushed every entry of a device when any one of its addresses was deleted, e.g. a keepalived VIP \
moving). The next packet of the still-open socket created a new entry, and SNAT picked a new source port for \
it. The server has no connection on that port, so it answered RST, and the client got ECONNRESET.",
    remedy: "Upgrade to a kernel with 'netfilter: masquerade: don't flush all conntracks if only one address \
deleted on device' (097f95d319f8; 4.14.155, 4.19.85, mainline 4.20). Until then, keep VIPs off the \
MASQUERADE egress device, or use SNAT --to-source instead of MASQUERADE on it; never flush conntrack on a \
node with live NATed connections.",
    sysctls: &[],
    versions: &[&versions::MASQUERADE_FLUSH_PER_ADDRESS],
    evidence: "Capture on the node (`-i any`): the same TCP connection (same sequence space: the ISNs \
of both sides carry through NAT) leaves with a new SNAT source port, no SYN; the server answers RST; the client \
gets ECONNRESET. Live: RTM_DELADDR on the MASQUERADE egress device, then within ms a burst of conntrack \
DESTROY events. Node: `-j MASQUERADE` on the device that carries the VIP (keepalived); kernel lacking \
\"netfilter: masquerade: don't flush all conntracks if only one address deleted on device\" (097f95d319f8; \
mainline 2018, backported to 4.14.155 and 4.19.85; after it only entries of the deleted address go).",
};

use super::{one_flow, remaps, secs, with_marked_packets, Context, Finished};
use crate::finding::{Confidence, Finding, FindingKind};
use crate::flow::tcp::Conn;
use crate::flow::PktRef;

struct Case {
    old_client: crate::flow::Endpoint,
    new_client: crate::flow::Endpoint,
    server: crate::flow::Endpoint,
    gap_ns: i64,
    pkts: Vec<(PktRef, String)>,
    /// The connection's flow-engine id, and the packet that decides the case.
    conn: u64,
    decisive: PktRef,
    exact: bool,
    pre_nat_seen: bool,
}

/// Recognises a connection whose client-side tuple changed mid-stream (same sequence space, no new
/// handshake) and was then reset by the server.
#[derive(Default)]
pub struct Detector {
    cases: Vec<Case>,
    total: u32,
}

impl Detector {
    pub fn connection(&mut self, c: &Conn) {
        for r in remaps(c).into_iter().filter(|r| r.client_changed) {
            let leg = &c.legs[r.leg];
            // The tuple this socket used before: the last leg with the same server endpoint.
            let Some(old) = c.legs[..r.leg]
                .iter()
                .rev()
                .find(|l| l.server == leg.server)
            else {
                continue;
            };
            self.total += 1;
            if self.cases.len() >= 5 {
                continue;
            }
            let mut pkts = Vec::new();
            if let Some(p) = leg.prev {
                pkts.push((
                    p,
                    format!("last packet under the old tuple: {}", p.tcp_what()),
                ));
            }
            pkts.push((
                leg.first,
                format!(
                    "same connection under a new source port, no SYN: {}",
                    leg.first.tcp_what()
                ),
            ));
            pkts.push((
                r.rst,
                format!("server resets the unknown tuple: {}", r.rst.tcp_what()),
            ));
            self.cases.push(Case {
                old_client: old.client,
                new_client: leg.client,
                server: leg.server,
                gap_ns: leg.gap_before_ns,
                pkts,
                conn: c.id,
                decisive: leg.first,
                exact: r.exact,
                pre_nat_seen: r.pre_nat_leg.is_some(),
            });
        }
    }

    pub fn finish(self, ctx: &Context<'_>, out: &mut Vec<Finding>) {
        let mut found = Vec::new();
        for case in self.cases {
            let confidence = if case.exact {
                Confidence::Confirmed
            } else {
                Confidence::Likely
            };
            let mut f = Finding::new(
                &INCIDENT,
                FindingKind::Incident,
                confidence,
                format!(
                    "connection to {} moved from source {} to {} mid-stream and was reset by the server",
                    case.server, case.old_client, case.new_client
                ),
            )
            .because(format!(
                "the packet under the new source tuple continues the connection's sequence numbers {} where the old tuple \
left off, without a handshake: the same socket was translated anew ({} after its previous packet)",
                if case.exact { "exactly" } else { "close to" },
                secs(case.gap_ns)
            ))
            .because("the server answered it with a bare RST (no ACK), as a host does for a connection it does not have: it knows the connection only under the old port");
            if !case.exact {
                f = f.because("the sequence numbers continue only approximately (packets may be missing from the capture), so this is not confirmed");
            }
            if case.pre_nat_seen {
                f = f.because("the client-side (pre-SNAT) view kept its tuple while the post-SNAT tuple changed: both NAT legs are visible");
            }
            f = f
                .rules_out(super::conntrack_dnat_rebalance::INCIDENT.id, "the server side of the tuple stayed the same; only the client's translated source changed")
                .rules_out("application", "the server's RST carries no ACK: it had no connection under the new port, so it did not abort one")
                .rules_out(super::snat_port_clash::INCIDENT.id, "the new source port appeared mid-connection, not on a SYN: an existing connection was re-translated, not a new one dropped")
                .rules_out("middlebox-idle-timeout", "the segment left under a new source port: the node's own SNAT chose anew");
            found.push(with_marked_packets(
                f,
                ctx,
                &one_flow(&case.pkts, case.conn, &case.decisive),
                "same TCP sequence space under two source tuples",
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

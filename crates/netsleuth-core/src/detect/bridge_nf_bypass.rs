//! `bridge-nf-bypass` [seed 002]: with bridge-nf-call-iptables=0, a same-node pod→ClusterIP reply is
//! bridged without passing iptables, so its source is never translated back to the VIP.

use crate::finding::Incident;
use crate::versions;

pub static INCIDENT: Incident = Incident {
    id: "bridge-nf-bypass",
    title: "Service replies bypass reverse NAT on the bridge and are reset by the client",
    explanation: "The client's SYN to the ClusterIP was DNATed to a backend pod on the same bridge. The \
backend's reply goes straight back across the bridge; with net.bridge.bridge-nf-call-iptables=0 (or \
br_netfilter not loaded) bridged frames skip netfilter, so conntrack never rewrites the reply's source \
back to the ClusterIP. The client sees a SYN-ACK from an address it never contacted and answers RST; the \
connection attempt times out.",
    remedy: "modprobe br_netfilter and set net.bridge.bridge-nf-call-iptables=1 (and ...-ip6tables=1) on \
the node, persistently (/etc/sysctl.d, /etc/modules-load.d); or enable the bridge CNI's hairpin / \
masquerade settings that route same-node Service traffic through the host.",
    sysctls: &[
        "net.bridge.bridge-nf-call-iptables",
        "net.bridge.bridge-nf-call-ip6tables",
    ],
    versions: &[&versions::BRIDGE_NF_PER_NETNS],
    evidence: "Node: `/proc/sys/net/bridge/bridge-nf-call-iptables` = 0 (or `br_netfilter` absent) while \
pods hang on a Linux bridge (cni0/cbr0). Capture (client side): SYN to ClusterIP:port, SYN-ACK from the \
backend's pod IP (not the VIP), client RST; client retries then times out. conntrack: the DNAT entry stays \
`[UNREPLIED]`.",
};

use super::{one_flow, with_marked_packets, Context, Finished};
use crate::finding::{Confidence, Evidence, Finding, FindingKind};
use crate::flow::tcp::Conn;
use crate::flow::{Endpoint, PktRef};

struct Case {
    client: Endpoint,
    vip: Endpoint,
    backend: Endpoint,
    pkts: Vec<(PktRef, String)>,
    /// The connection's flow-engine id; the SYN-ACK that skipped reverse NAT decides.
    conn: u64,
    decisive: PktRef,
}

/// Recognises a SYN to one address answered by a SYN-ACK from another (un-reversed DNAT) that the
/// client resets.
#[derive(Default)]
pub struct Detector {
    cases: Vec<Case>,
    total: u32,
}

impl Detector {
    pub fn connection(&mut self, c: &Conn) {
        if !c.roles_known || c.legs.len() < 2 {
            return;
        }
        let origin = &c.legs[0];
        let Some(synack) = c.synack else { return };
        // The SYN-ACK reached the client's own tuple from an address the client never sent to...
        let Some(leg_idx) = c.leg_of(&synack) else {
            return;
        };
        let leg = &c.legs[leg_idx];
        if leg_idx == 0 || leg.client != origin.client || leg.server.ip == origin.server.ip {
            return;
        }
        // ...and never came back translated to the address the client did send to...
        if c.heard_from_server_on(0) {
            return;
        }
        // ...and the client reset it.
        let Some(rst) = c
            .rsts
            .iter()
            .find(|r| r.from_client && r.leg as usize == leg_idx)
        else {
            return;
        };
        self.total += 1;
        if self.cases.len() >= 5 {
            return;
        }
        let mut pkts = vec![(c.syns[0].pkt, format!("SYN to {}", origin.server))];
        pkts.push((
            synack,
            format!("SYN-ACK from {} instead of {}", leg.server, origin.server),
        ));
        pkts.push((rst.pkt, "client resets the unexpected SYN-ACK".to_string()));
        for s in c.syns.iter().skip(1).take(2) {
            pkts.push((s.pkt, "client retransmits its SYN".to_string()));
        }
        self.cases.push(Case {
            client: origin.client,
            vip: origin.server,
            backend: leg.server,
            pkts,
            conn: c.id,
            decisive: synack,
        });
    }

    pub fn finish(self, ctx: &Context<'_>, out: &mut Vec<Finding>) {
        let bridge_nf = ctx
            .node
            .sysctl("net.bridge.bridge-nf-call-iptables")
            .map(str::trim)
            .map(str::to_string);
        let mut found = Vec::new();
        for case in self.cases {
            let mut f = Finding::new(
                &INCIDENT,
                FindingKind::Incident,
                Confidence::Confirmed,
                format!(
                    "{} connected to {} but the reply came from backend {} untranslated; the client reset it",
                    case.client,
                    case.vip,
                    case.backend,
                ),
            )
            .because("the SYN-ACK acknowledges the client's SYN (same ISN) but comes from the backend's address, and no SYN-ACK from the Service address reached the client: the reply skipped reverse NAT")
            .because("the client answered it with RST, so the connection cannot be established");
            match bridge_nf.as_deref() {
                Some("0") => {
                    f = f.because("the node has net.bridge.bridge-nf-call-iptables = 0").with_evidence(Evidence::Config {
                        source: ctx.node.source.clone(),
                        line: None,
                        text: "net.bridge.bridge-nf-call-iptables = 0".into(),
                    })
                }
                Some(v) => f = f.because(format!("note: the node facts say bridge-nf-call-iptables = {v}; another path bypasses conntrack (e.g. a direct route or hairpin)")),
                None => f = f.because("the node's bridge-nf-call-iptables setting is not known to this analysis (give --node to check it)"),
            }
            f = f
                .rules_out(super::conntrack_dnat_rebalance::INCIDENT.id, "the reply from the backend's address answers the handshake of a new connection; no established connection changed backend")
                .rules_out("application", "the RST came from the client, refusing a SYN-ACK from an address it never contacted, not from the server");
            found.push(with_marked_packets(
                f,
                ctx,
                &one_flow(&case.pkts, case.conn, &case.decisive),
                "handshake whose reply skipped reverse NAT",
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

//! `idle-timeout-reset` [issue 15]: a middlebox on the path (a cloud load balancer, a NAT gateway, a
//! firewall, IPVS with its own timeout) forgot an idle connection; the next segment is answered with a
//! RST by the middlebox itself, or silently dropped.

use crate::finding::Incident;

pub static INCIDENT: Incident = Incident {
    id: "idle-timeout-reset",
    title: "a middlebox forgot an idle connection and reset (or dropped) its next segment",
    explanation: "Load balancers, NAT gateways and stateful firewalls keep a flow table with an idle \
timeout of their own, much shorter than a host's: Azure Load Balancer 4 min by default, AWS NLB and \
NAT gateway 350 s, GCP Cloud NAT 1200 s for established TCP, IPVS 900 s (ipvsadm --set), a node's \
conntrack nf_conntrack_tcp_timeout_established. When a connection stays silent longer, the box drops \
its entry; the next segment of either side matches nothing, and the box answers it with a RST of its \
own (AWS NLB and NAT gateway, Azure LB with TCP reset enabled, a Linux box whose address is the \
destination) or drops it silently (the sender retransmits until its timeout). The ends still have the \
connection: the first send after the idle period fails with ECONNRESET, or hangs.",
    remedy: "Send TCP keepalives (or application heartbeats) more often than the shortest idle timeout on \
the path: SO_KEEPALIVE with TCP_KEEPIDLE below it (net.ipv4.tcp_keepalive_time is 7200 s by default, \
far longer than any of them), or pool connections with a max idle time below it; raise the middlebox's \
idle timeout where it can be (Azure LB up to 30 min, enable TCP reset so that failures are fast).",
    // net.ipv4.tcp_keepalive_time decides it too, but is conntrack-dnat-rebalance's key for `diff`.
    sysctls: &["net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes"],
    versions: &[],
    evidence: "Capture: an established connection silent for longer than a middlebox's idle timeout, then \
the first segment after the silence answered by a RST whose IP TTL differs from every packet the server \
sent before (the RST was made by a box nearer than the server), or retransmitted without answer; the \
connection keeps its tuple (no re-DNAT to another backend, unlike conntrack-dnat-rebalance, no new \
source port, unlike conntrack-snat-remap). Known timeouts: Azure LB 240 s, AWS NLB/NAT gateway 350 s, \
IPVS 900 s, GCP Cloud NAT 1200 s. Node: established sockets to addresses outside the cluster without \
keepalive (or with keepalive longer than the timeout) idle longer than those timeouts (`ss -tnoe`: no \
timer:(keepalive,…)). Sources: AWS NLB and NAT gateway documentation (idle timeout 350 s, RST after it); \
Azure Load Balancer TCP idle timeout and TCP reset documentation; ipvsadm(8) --set.",
};

use super::{secs, with_packets, Context, Finished};
use crate::finding::{Confidence, Finding, FindingKind};
use crate::flow::tcp::Conn;
use crate::flow::PktRef;
use crate::wire::tcp_flags::ACK;

/// The shortest idle timeout of the common cloud middleboxes (Azure Load Balancer's default, 4 min).
const KNOWN_TIMEOUT_NS: i64 = 240_000_000_000;
/// A silence at least this long before the reset (the lab's emulated middlebox forgets after 3 s;
/// real ones after minutes): shorter gaps are the connection's normal pace.
const MIN_GAP_NS: i64 = 2_000_000_000;
const MAX_CASES: usize = 5;

/// Recognises a RST after an idle period that a box nearer than the server sent: its TTL differs
/// from the server's SYN-ACK's, seen at the same point.
#[derive(Default)]
pub struct Detector {
    cases: Vec<(Finding, Vec<(PktRef, String)>)>,
    total: u32,
}

impl Detector {
    pub fn connection(&mut self, c: &Conn) {
        if !c.established || !c.roles_known {
            return;
        }
        let Some(r) = c.rsts.iter().find(|r| !r.from_client && r.leg == 0) else {
            return;
        };
        // A tuple that changed before the reset is NAT on the capture's own path choosing anew
        // (conntrack-dnat-rebalance, conntrack-snat-remap); here the tuple must stay the same until
        // the reset. Legs after it are the aftermath (a late FIN from the backend, un-NATed by a
        // balancer that forgot the flow).
        if c.legs
            .iter()
            .skip(1)
            .any(|l| l.first.ts_ns <= r.pkt.ts_ns && l.mid_stream)
        {
            return;
        }
        // The same RST seen at any point (the connection keeps the first sighting; the differing
        // TTL may have been seen at another point, where the SYN-ACK was seen too), or sent again.
        let Some(f) = c
            .rsts
            .iter()
            .filter(|o| {
                o.pkt.seq == r.pkt.seq && o.pkt.ack == r.pkt.ack && o.pkt.flags == r.pkt.flags
            })
            .filter_map(|o| o.ttl_differs)
            .filter(|d| d.ts_ns.saturating_sub(r.pkt.ts_ns).saturating_abs() <= 1_000_000_000)
            .min_by_key(|d| d.ts_ns)
        else {
            return;
        };
        let Some(end) = c.longest_gap_end else { return };
        if c.longest_gap_ns < MIN_GAP_NS
            || end.src != c.legs[0].client
            || r.pkt.ts_ns < end.ts_ns
            || r.pkt.flags & ACK != 0
            || r.pkt.seq != end.ack
        {
            return;
        }
        if c.fin_ts.iter().flatten().any(|&t| t <= r.pkt.ts_ns) {
            return;
        }
        self.total += 1;
        if self.cases.len() >= MAX_CASES {
            return;
        }
        let gap = c.longest_gap_ns;
        let hops = i16::from(f.rst_ttl) - i16::from(f.synack_ttl);
        let mut finding = Finding::new(
            &INCIDENT,
            FindingKind::Incident,
            Confidence::Likely,
            format!(
                "connection {} → {} was reset after {} idle by a box on the path, not by the server (RST TTL {} vs the server's {})",
                c.legs[0].client,
                c.legs[0].server,
                secs(gap),
                f.rst_ttl,
                f.synack_ttl
            ),
        )
        .because(format!("the connection was silent for {} and the first segment after the silence was answered by a RST without ACK carrying exactly the segment's ACK: whoever answered had no such connection", secs(gap)))
        .because(format!("the RST's IP TTL is {}, the server's SYN-ACK arrived with {} at the same capture point: the RST was made {} hop(s) {} than the server, by a middlebox that forgot the idle flow", f.rst_ttl, f.synack_ttl, hops.unsigned_abs(), if hops > 0 { "nearer" } else { "farther" }))
        .because("the connection kept its tuple: no NAT on the capture's side of the path chose anew");
        finding = if gap >= KNOWN_TIMEOUT_NS {
            finding.because(format!("{} is beyond the shortest common cloud idle timeout (Azure LB 240 s; AWS NLB/NAT gateway 350 s; IPVS 900 s)", secs(gap)))
        } else {
            finding.because(format!("{} is shorter than the common cloud idle timeouts (240 s and more): the box on the path has a short timeout of its own (a firewall, a node's conntrack, IPVS --set)", secs(gap)))
        };
        finding = finding
            .rules_out(super::conntrack_dnat_rebalance::INCIDENT.id, "the segment after the silence kept its destination; a re-DNAT to another backend would show a new tuple, and that backend would answer with its own TTL")
            .rules_out("application", "the server did not send this RST (another TTL), and an application abort is RST|ACK")
            .rules_out("server-restart", "a restarted server answers with its own TTL")
            .cannot_rule_out("which-middlebox", "the TTL says how far, not which box: the load balancer, NAT gateway or firewall at that hop, and its idle timeout, decide");
        let pkts = vec![
            (
                end,
                format!(
                    "first packet after {} of silence: {}",
                    secs(gap),
                    end.tcp_what()
                ),
            ),
            (
                r.pkt,
                format!(
                    "RST with TTL {} (the server's packets: {}): {}",
                    f.rst_ttl,
                    f.synack_ttl,
                    r.pkt.tcp_what()
                ),
            ),
        ];
        self.cases.push((finding, pkts));
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
        let found = self
            .cases
            .into_iter()
            .map(|(f, pkts)| {
                with_packets(
                    f,
                    ctx,
                    &pkts,
                    "an idle connection and the RST a box on the path sent for it",
                )
            })
            .collect();
        super::merge_cases(found, self.total, out);
        Vec::new()
    }
}

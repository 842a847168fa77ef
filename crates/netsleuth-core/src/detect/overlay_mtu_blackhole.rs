//! `overlay-mtu-blackhole`: the pod MTU leaves no room for the overlay's encapsulation and ICMP
//! "fragmentation needed" is blocked or ignored: small segments pass, full-size ones vanish.

use crate::finding::Incident;

pub static INCIDENT: Incident = Incident {
    id: "overlay-mtu-blackhole",
    title: "full-size packets vanish on an overlay whose MTU the pods do not leave room for",
    explanation: "An overlay wraps every pod packet in an outer header (VXLAN 50 bytes, Geneve 50+, \
IPIP 20, WireGuard 60–80). If the pods' interfaces keep MTU 1500 while the overlay device has 1450, a \
full-size packet with DF set cannot be sent: the node drops it and answers ICMP \"fragmentation needed\" \
with the MTU that fits. When that ICMP is blocked (a firewall, a security group, a policy dropping ICMP) \
or never generated, the sender keeps retransmitting the full-size segment: handshakes and small \
requests work, large responses stall until the connection times out (a PMTU black hole).",
    remedy: "Set the pod MTU to the underlay MTU minus the encapsulation (the CNI's `mtu`: flannel \
derives it from the underlay, Calico `veth_mtu`, Cilium `--mtu`); let ICMP type 3 code 4 (and ICMPv6 \
type 2) through every firewall on the path; as a stopgap clamp the MSS (`iptables -t mangle -A FORWARD \
-p tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu`) or set net.ipv4.tcp_mtu_probing=1 on \
the senders.",
    sysctls: &["net.ipv4.tcp_mtu_probing", "net.ipv4.ip_no_pmtu_disc"],
    versions: &[],
    evidence: "Capture (the sender's side, or the node that should forward): full-size segments \
retransmitted and never acknowledged while the connection's small segments are; no ICMP \
frag-needed toward the sender (or one that arrives and is ignored). Node: interface MTUs — the pods' \
veths and the bridge against the overlay device (vxlan, geneve, ipip, wireguard) and the underlay, \
the overhead of each encapsulation.",
};

use super::{with_packets, Context, Finished};
use crate::finding::{Confidence, Finding, FindingKind};
use crate::flow::tcp::Conn;
use crate::flow::{seq_diff, PktRef};
use std::net::IpAddr;

const MAX_CASES: usize = 64;
/// Full-size retransmissions that make a stall, not a loss recovered.
const MIN_BIG_RETRANSMITS: u32 = 2;

struct Case {
    conn: u64,
    sender: IpAddr,
    segment: PktRef,
    retransmits: u32,
    max_len_other: u32,
}

/// Recognises connections whose full-size segments in one direction are retransmitted and never
/// acknowledged while smaller segments were; and frag-needed ICMP messages toward their senders.
#[derive(Default)]
pub struct Detector {
    cases: Vec<Case>,
    more: u32,
    /// ICMP "fragmentation needed" / "packet too big": (addressed to, the message).
    frag_needed: Vec<(IpAddr, PktRef)>,
}

impl Detector {
    pub fn connection(&mut self, c: &Conn) {
        if !c.established {
            return;
        }
        for dir in 0..2 {
            let (Some(seg), other) = (c.big_retransmit[dir], 1 - dir) else {
                continue;
            };
            if c.big_retransmits[dir] < MIN_BIG_RETRANSMITS {
                continue;
            }
            let end = seg.seq.wrapping_add(seg.len);
            // Never acknowledged: the receiver's acks stayed below the segment's end.
            if c.highest_ack[other].is_some_and(|a| seq_diff(a, end) >= 0) {
                continue;
            }
            if self.cases.len() < MAX_CASES {
                self.cases.push(Case {
                    conn: c.id,
                    sender: seg.src.ip,
                    segment: seg,
                    retransmits: c.big_retransmits[dir],
                    max_len_other: c.max_len[other],
                });
            } else {
                self.more += 1;
            }
        }
    }

    pub fn icmp_error(&mut self, p: &PktRef, v6: bool, icmp_type: u8, code: u8) {
        let too_big = if v6 {
            icmp_type == 2
        } else {
            icmp_type == 3 && code == 4
        };
        if too_big && self.frag_needed.len() < MAX_CASES {
            self.frag_needed.push((p.dst.ip, *p));
        }
    }

    pub fn finish(self, ctx: &Context<'_>, explained: &[u64], out: &mut Vec<Finding>) -> Vec<u64> {
        let cases: Vec<&Case> = self
            .cases
            .iter()
            .filter(|c| explained.binary_search(&c.conn).is_err())
            .collect();
        let Some(lead) = cases.first() else {
            return Vec::new();
        };
        let icmp_to_sender: Vec<&PktRef> = self
            .frag_needed
            .iter()
            .filter(|(to, _)| *to == lead.sender)
            .map(|(_, p)| p)
            .collect();
        let mut f = Finding::new(
            &INCIDENT,
            FindingKind::Incident,
            if icmp_to_sender.is_empty() { Confidence::Likely } else { Confidence::Possible },
            format!(
                "{} connection(s) stalled on full-size segments: {} sent {} bytes {} more time(s) and it was never acknowledged, while smaller segments of the same connection were",
                cases.len() as u32 + self.more,
                lead.segment.src,
                lead.segment.len,
                lead.retransmits
            ),
        )
        .because(format!(
            "the other direction's segments (up to {} bytes) and the handshake went through: the path works for small packets only",
            lead.max_len_other
        ));
        f = if icmp_to_sender.is_empty() {
            f.because(format!(
                "no ICMP \"fragmentation needed\" toward {} in the capture: it was blocked or never sent, so the sender never learned a smaller path MTU",
                lead.sender
            ))
            .because("which hop's MTU is too small is not in a capture (`netsleuth check` compares the node's interface MTUs with the overlay's overhead)")
        } else {
            f.because(format!(
                "{} ICMP \"fragmentation needed\" message(s) toward {} were seen and the sender kept sending full-size segments: it ignores them (ip_no_pmtu_disc, or a NAT/firewall that does not relate them to the connection) — or the loss is another cause",
                icmp_to_sender.len(),
                lead.sender
            ))
        };
        f = f
            .rules_out("packet-loss", "a lossy path loses small segments too; here only the full-size ones, every time")
            .rules_out(super::conntrack_dnat_rebalance::INCIDENT.id, "the connection never went idle and nothing reset it: its large segments were retransmitted in a row")
            .cannot_rule_out("middlebox", "a device dropping large packets for another reason (fragment filter, jumbo frame mismatch) looks the same; the interface MTUs decide");
        let mut pkts: Vec<(PktRef, String)> = cases
            .iter()
            .take(3)
            .map(|c| {
                (
                    c.segment,
                    format!(
                        "{} bytes, retransmitted {} time(s), never acknowledged",
                        c.segment.len, c.retransmits
                    ),
                )
            })
            .collect();
        for p in icmp_to_sender.iter().take(2) {
            pkts.push((**p, "ICMP fragmentation needed".into()));
        }
        let ids = {
            let mut v: Vec<u64> = cases.iter().map(|c| c.conn).collect();
            v.sort_unstable();
            v
        };
        out.push(with_packets(
            f,
            ctx,
            &pkts,
            "full-size segments retransmitted and never acknowledged",
        ));
        ids
    }
}

impl super::CaptureDetector for Detector {
    fn connection(&mut self, c: &Finished<'_>) {
        Detector::connection(self, c)
    }

    fn icmp_error(&mut self, p: &PktRef, v6: bool, icmp_type: u8, code: u8) {
        Detector::icmp_error(self, p, v6, icmp_type, code)
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

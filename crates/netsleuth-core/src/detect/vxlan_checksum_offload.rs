//! `vxlan-checksum-offload`: VXLAN packets leave one node with a wrong outer UDP checksum (kernels
//! before 5.7 NAT a VXLAN device's own packets with tx checksum offload on; some NIC drivers), the
//! receiving node drops them before decapsulation, and the connections inside stall.

use crate::finding::Incident;
use crate::versions::NAT_UDP_ZERO_CHECKSUM_KEPT;

pub static INCIDENT: Incident = Incident {
    id: "vxlan-checksum-offload",
    title: "VXLAN packets from one node carry a wrong outer UDP checksum and the receiving node drops them",
    explanation: "A Linux VXLAN device sends its outer UDP checksum as 0 (none) and lets the NIC finish \
the inner packet's checksum (tx-checksum-ip-generic, CHECKSUM_PARTIAL). When the node NATs its own VXLAN \
packets — kube-proxy's MASQUERADE --random-fully matches them — kernels before 5.7 (ea64d8d6c675) \
\"update\" that zero checksum for the new port as if it had been computed, and the packet leaves with a \
wrong non-zero checksum; some NIC drivers get tunnel checksum offload wrong the same way. The receiving \
node verifies the outer checksum before decapsulation and drops the packet (UDP InCsumErrors, \"UDP: bad \
checksum\", drop reason UDP_CSUM): the connections inside lose those packets, typically only the NATed \
ones (Service traffic), and stall until TCP's retransmissions (1, 3, 7 … 63 s) are sent without the \
fault, or fail.",
    remedy: "Upgrade the kernel to one with ea64d8d6c675 (5.7, or 5.6.13, 5.4.41, 4.19.123, 4.14.181 and \
later stable releases; distribution kernels: check their changelog). Until then turn the VXLAN device's \
tx checksum offload off on every node (`ethtool -K flannel.1 tx-checksum-ip-generic off`, \
`vxlan.calico`; made persistent by a udev rule or the CNI's option — flannel and Calico ship one), or \
keep the VXLAN packets out of MASQUERADE --random-fully (kube-proxy ≥ 1.16.13/1.17.9/1.18.6 masquerades \
only marked packets).",
    sysctls: &[],
    versions: &[&NAT_UDP_ZERO_CHECKSUM_KEPT],
    evidence: "Capture on the receiving node's underlay (or anywhere on the path): VXLAN (UDP 4789, 8472) \
or Geneve (6081) packets whose outer UDP checksum is non-zero and wrong in one direction while the other \
direction's are right or 0, and the inner segments they carried sent again (the receiver never got \
them). A capture on the sending host sees outgoing packets before the NIC: a pseudo-header-only checksum \
there is offload at work, not the fault. Node: `ethtool -k` of the VXLAN device (tx-checksum-ip-generic, \
tx-udp_tnl-csum-segmentation), the kernel version against the fix, MASQUERADE --random-fully rules; \
counters UDP InCsumErrors on the receiving node, drop reason UDP_CSUM.",
};

use super::{capped_entry, Context, Finished};
use crate::finding::{Confidence, Finding, FindingKind};
use crate::flow::tcp::Conn;
use crate::flow::{Endpoint, FxHashMap, PktRef};
use crate::wire::{PacketDirection, Tunnel, UdpChecksum};
use std::net::IpAddr;

/// Wrong checksums in one direction below this are not a pattern (one damaged packet is noise).
const MIN_INVALID: u64 = 2;
/// Inner packets (of bad-checksum datagrams) remembered to see them sent again.
const MAX_REMEMBERED: usize = 4096;
/// A copy of a packet at another capture point comes within this; a retransmission later.
const RESEND_AFTER_NS: i64 = 100_000_000;
const EXAMPLES: usize = 3;

/// The outer UDP flow of a tunnel in one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Direction {
    src: IpAddr,
    dst: IpAddr,
    port: u16,
}

#[derive(Default)]
struct Tally {
    valid: u64,
    absent: u64,
    invalid: u64,
    /// Invalid ones the capture saw leaving its own host (PACKET_OUTGOING).
    invalid_outgoing: u64,
    partial: u64,
    unverifiable: u64,
    examples: Vec<(PktRef, String)>,
}

/// The sightings of an inner packet first carried with a wrong checksum.
struct Seen {
    first_ts: i64,
    /// Seen again ≥ [`RESEND_AFTER_NS`] later: sent again, so the first never arrived.
    resent: bool,
    /// The last sighting that was not a copy, and where (capture, interface).
    last_ts: i64,
    last_at: (crate::flow::InputId, Option<u32>),
    /// The outer direction it travelled.
    dir: Direction,
    /// So far seen only leaving the capturing host (PACKET_OUTGOING).
    only_leaving: bool,
}

/// An inner packet carried by a datagram with a wrong checksum: (its endpoints, seq, flags, len).
type InnerKey = (Endpoint, Endpoint, u32, u8, u32);

/// Counts the outer UDP checksums of tunnel packets per direction, keeps examples of wrong ones, and
/// sees whether the inner packets they carried were sent again.
#[derive(Default)]
pub struct Detector {
    tallies: FxHashMap<Direction, Tally>,
    max_keys: usize,
    /// Inner packets of bad-checksum datagrams, and their sightings.
    bad_inner: FxHashMap<InnerKey, Seen>,
    resent: u64,
    resent_example: Option<PktRef>,
    /// Inner endpoint pairs (either order) with a bad-checksum packet: their connections are explained.
    bad_pairs: std::collections::HashSet<(Endpoint, Endpoint), crate::flow::FxBuild>,
    explained: Vec<u64>,
}

fn what(t: &Tunnel, outgoing: bool, found: u16, expected: u16) -> String {
    let udp = t.udp.map(|u| (u.src_port, u.dst_port)).unwrap_or((0, 0));
    format!(
        "{} {}:{} → {}:{} vni {}: outer UDP checksum 0x{found:04x}, should be 0x{expected:04x}{}",
        if udp.1 == crate::wire::ip::geneve::PORT {
            "Geneve"
        } else {
            "VXLAN"
        },
        t.outer_src,
        udp.0,
        t.outer_dst,
        udp.1,
        t.vni,
        if outgoing {
            " (seen leaving the capturing host)"
        } else {
            ""
        }
    )
}

impl Detector {
    pub fn tunnel_udp(&mut self, inner: &PktRef, t: &Tunnel, direction: Option<PacketDirection>) {
        let Some(udp) = t.udp else { return };
        let key = (inner.src, inner.dst, inner.seq, inner.flags, inner.len);
        let at = (inner.input, inner.ifindex);
        if let Some(seen) = self.bad_inner.get_mut(&key) {
            // The same datagram at another point (another capture, another `-i any` interface)
            // shortly after is one packet seen twice: counted once.
            if inner.ts_ns.saturating_sub(seen.last_ts) < RESEND_AFTER_NS && seen.last_at != at {
                // A packet first seen leaving one host and then arriving at another was seen on
                // the wire: it no longer counts as seen only leaving.
                if seen.only_leaving && direction != Some(PacketDirection::Outgoing) {
                    seen.only_leaving = false;
                    if let Some(t) = self.tallies.get_mut(&seen.dir) {
                        t.invalid_outgoing = t.invalid_outgoing.saturating_sub(1);
                    }
                }
                return;
            }
            if !seen.resent && inner.ts_ns.saturating_sub(seen.first_ts) >= RESEND_AFTER_NS {
                seen.resent = true;
                self.resent += 1;
                self.resent_example.get_or_insert(*inner);
            }
            seen.last_ts = inner.ts_ns;
            seen.last_at = at;
            // A new transmission: whether it was seen only leaving is its own question.
            seen.only_leaving = matches!(udp.checksum, UdpChecksum::Invalid { .. })
                && direction == Some(PacketDirection::Outgoing);
        }
        let dir = Direction {
            src: t.outer_src,
            dst: t.outer_dst,
            port: udp.dst_port,
        };
        let Some(tally) = capped_entry(&mut self.tallies, dir, self.max_keys) else {
            return;
        };
        match udp.checksum {
            UdpChecksum::Valid => tally.valid += 1,
            UdpChecksum::Absent => tally.absent += 1,
            UdpChecksum::OffloadPending => tally.partial += 1,
            UdpChecksum::Unverifiable => tally.unverifiable += 1,
            UdpChecksum::Invalid { found, expected } => {
                let outgoing = direction == Some(PacketDirection::Outgoing);
                tally.invalid += 1;
                if outgoing {
                    tally.invalid_outgoing += 1;
                }
                if tally.examples.len() < EXAMPLES {
                    tally
                        .examples
                        .push((*inner, what(t, outgoing, found, expected)));
                }
                if self.bad_inner.len() < MAX_REMEMBERED {
                    self.bad_inner.entry(key).or_insert(Seen {
                        first_ts: inner.ts_ns,
                        resent: false,
                        last_ts: inner.ts_ns,
                        last_at: at,
                        dir,
                        only_leaving: outgoing,
                    });
                }
                if self.bad_pairs.len() < MAX_REMEMBERED {
                    let pair = if inner.src <= inner.dst {
                        (inner.src, inner.dst)
                    } else {
                        (inner.dst, inner.src)
                    };
                    self.bad_pairs.insert(pair);
                }
            }
        }
    }

    pub fn connection(&mut self, c: &Conn) {
        if self.bad_pairs.is_empty() {
            return;
        }
        let hit = c.legs.iter().any(|l| {
            let pair = if l.client <= l.server {
                (l.client, l.server)
            } else {
                (l.server, l.client)
            };
            self.bad_pairs.contains(&pair)
        });
        if hit && self.explained.len() < MAX_REMEMBERED {
            self.explained.push(c.id);
        }
    }

    pub fn finish(self, ctx: &Context<'_>, _explained: &[u64], out: &mut Vec<Finding>) -> Vec<u64> {
        // The direction with the most wrong checksums leads; ties by address for a stable report.
        let mut bad: Vec<(&Direction, &Tally)> =
            self.tallies.iter().filter(|(_, t)| t.invalid > 0).collect();
        bad.sort_by_key(|(d, t)| (std::cmp::Reverse(t.invalid), d.src, d.dst, d.port));
        let Some((dir, lead)) = bad.first().copied() else {
            return Vec::new();
        };
        let reverse = self
            .tallies
            .iter()
            .find(|(d, _)| d.src == dir.dst && d.dst == dir.src)
            .map(|(_, t)| t);
        // Checksums left to offload are right as far as a capture can tell: not evidence of a fault.
        let reverse_good = reverse.map_or(0, |t| t.valid + t.absent + t.partial);
        let reverse_bad = reverse.map_or(0, |t| t.invalid);
        let received = lead.invalid - lead.invalid_outgoing;
        let one_direction = reverse_good > 0 && reverse_bad == 0;
        let confidence = if lead.invalid < MIN_INVALID || received == 0 || !one_direction {
            Confidence::Possible
        } else if self.resent > 0 {
            Confidence::Confirmed
        } else {
            Confidence::Likely
        };
        let total_bad: u64 = bad.iter().map(|(_, t)| t.invalid).sum();
        let mut f = Finding::new(
            &INCIDENT,
            FindingKind::Incident,
            confidence,
            format!(
                "{} of {} tunnel packets from {} to {} (UDP {}) carried a wrong outer UDP checksum{}: a receiver that verifies it drops them before decapsulation",
                lead.invalid,
                lead.invalid + lead.valid + lead.absent + lead.partial,
                dir.src,
                dir.dst,
                dir.port,
                if bad.len() > 1 {
                    format!(" ({total_bad} in {} directions)", bad.len())
                } else {
                    String::new()
                }
            ),
        );
        f = if one_direction {
            f.because(format!(
                "the other direction ({} → {}) showed a right, pending or no (0) checksum in {} sighting(s) and none wrong: the fault is on {}'s sending side, not the capture",
                dir.dst, dir.src, reverse_good, dir.src
            ))
        } else if reverse_bad > 0 {
            f.because(format!(
                "the other direction ({} → {}) is wrong too ({} packet(s)): a capture artefact or a device rewriting both ways is as likely as one node's offload",
                dir.dst, dir.src, reverse_bad
            ))
        } else {
            f.because(format!(
                "the capture holds no packets of the other direction ({} → {}) to show the fault is one node's",
                dir.dst, dir.src
            ))
        };
        if lead.invalid < MIN_INVALID {
            f = f.because("a single wrong checksum is not yet a pattern");
        }
        f = if self.resent > 0 {
            f.because(format!(
                "{} inner packet(s) first carried with a wrong checksum were sent again ≥ {} later: the receiver never got them",
                self.resent,
                super::secs(RESEND_AFTER_NS)
            ))
        } else {
            f.because("no inner packet carried with a wrong checksum was seen sent again: whether the receiver dropped them is not in this capture (its UDP InCsumErrors counter says)")
        };
        if lead.invalid_outgoing > 0 {
            f = f.because(format!(
                "{} of the wrong checksums were seen leaving the capturing host (PACKET_OUTGOING): a NIC could still rewrite a packet after the capture point, so those count for less than ones seen arriving",
                lead.invalid_outgoing
            ));
        }
        if let Some(k) = ctx.node.kernel_release.as_deref() {
            f = f.because(match NAT_UDP_ZERO_CHECKSUM_KEPT.has(k) {
                Some(false) => format!("the node's kernel {k} lacks ea64d8d6c675: NAT of the VXLAN device's own packets with tx checksum offload writes exactly this"),
                Some(true) => format!("the node's kernel {k} has ea64d8d6c675: if this node is the sender, the cause is elsewhere (a NIC driver's tunnel offload, a device on the path); the sending node's kernel and `ethtool -k` decide"),
                None => format!("the node's kernel version {k:?} cannot be read against ea64d8d6c675"),
            });
        }
        for dev in ctx.node.overlay_tx_checksum_offload.iter().take(3) {
            f = f.with_evidence(crate::finding::Evidence::Fact {
                source: "ethtool -k".into(),
                text: dev.clone(),
            });
        }
        let partial: u64 = self.tallies.values().map(|t| t.partial).sum();
        f = if lead.invalid_outgoing == lead.invalid && lead.invalid > 0 {
            f.cannot_rule_out("capture-offload", "every wrong checksum was seen leaving the capturing host; a capture on the receiving node decides")
        } else {
            f.rules_out("capture-offload", format!(
                "{received} of the wrong checksums were seen arriving, not leaving the capturing host, and none is the pseudo-header sum a sender leaves for its NIC (that pattern, seen {partial} time(s), is counted apart as a blind spot)"
            ))
        };
        f = f
            .rules_out(super::overlay_mtu_blackhole::INCIDENT.id, "packets are lost for their checksum whatever their size: small ones (handshakes, ACKs) too")
            .cannot_rule_out("nic-driver", "a kernel NAT bug and a NIC driver's tunnel offload write the same wrong checksums; the sending node's kernel version, `ethtool -k` of its VXLAN device and MASQUERADE --random-fully rules decide");
        let mut pkts: Vec<(PktRef, String)> = bad
            .iter()
            .flat_map(|(_, t)| t.examples.iter().cloned())
            .take(EXAMPLES + 1)
            .collect();
        if let Some(p) = self.resent_example {
            pkts.push((
                p,
                "the same inner packet sent again (the first never arrived)".into(),
            ));
        }
        out.push(super::with_packets(
            f,
            ctx,
            &pkts,
            "tunnel packets whose outer UDP checksum is wrong (inner addresses shown)",
        ));
        let mut ids = self.explained;
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

impl super::CaptureDetector for Detector {
    fn connection(&mut self, c: &Finished<'_>) {
        Detector::connection(self, c)
    }

    fn tunnel_udp(&mut self, inner: &PktRef, tunnel: &Tunnel, direction: Option<PacketDirection>) {
        Detector::tunnel_udp(self, inner, tunnel, direction)
    }

    fn wants_tunnel_udp(&self) -> bool {
        true
    }

    fn set_max_keys(&mut self, max_keys: usize) {
        self.max_keys = max_keys;
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

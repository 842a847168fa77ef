//! `ipvs-conn-reuse` [issue 15]: IPVS with `conn_reuse_mode=1` drops the first SYN that reuses the
//! client port of a connection still in its table (kernels < 5.9): a one-second delay per reused port.
//! With `conn_reuse_mode=0` it keeps sending a reused port to the old real server, even a removed one.

use crate::finding::Incident;
use crate::versions;

pub static INCIDENT: Incident = Incident {
    id: "ipvs-conn-reuse",
    title: "IPVS drops the first SYN of a reused client port (conn_reuse_mode=1, kernels < 5.9): 1 s connect delays",
    explanation: "IPVS keeps its own connection table (TIME_WAIT entries live 2 minutes). When a SYN arrives \
on a client address:port whose previous connection to the same virtual service is still in that table, \
conn_reuse_mode=1 makes IPVS expire the old entry and schedule the connection afresh; with \
net.ipv4.vs.conntrack=1 (kube-proxy's IPVS mode), kernels before 5.9 cannot redirect the still-confirmed \
conntrack entry, so IPVS drops that first SYN (\"drop first packet to redirect conntrack\", f719e3754ee2) and \
the client retransmits it 1 s later: under load, when clients cycle through their ports, connects to \
ClusterIPs take one second (kubernetes#70747, kube-router#544). Setting conn_reuse_mode=0 (kube-proxy did for \
kernels < 5.9, kubernetes#71114) avoids the drop but sends a reused port to the old real server without \
rescheduling, also after that server was removed: connections to a terminated pod fail until the entry \
expires (kubernetes#81775), unless expire_nodest_conn=1.",
    remedy: "Run a kernel ≥ 5.9 (\"ipvs: allow connection reuse for unconfirmed conntrack\" and the \
expire_nodest_conn fix), where kube-proxy leaves conn_reuse_mode=1 (kubernetes#102122) and neither problem \
occurs. On older kernels choose the lesser harm: conn_reuse_mode=0 with expire_nodest_conn=1 (no 1 s drops; \
removed backends expire), fewer reused client ports (connection pools, keep-alive, a wider \
ip_local_port_range), or kube-proxy in iptables/nftables mode.",
    sysctls: &[
        "net.ipv4.vs.conn_reuse_mode",
        "net.ipv4.vs.expire_nodest_conn",
        "net.ipv4.vs.conntrack",
    ],
    versions: &[&versions::IPVS_CONN_REUSE_UNCONFIRMED_CT, &versions::IPVS_EXPIRE_NODEST_CONN],
    evidence: "Node: `net.ipv4.vs.conn_reuse_mode=1` with `net.ipv4.vs.conntrack=1` on a kernel < 5.9 (version \
table), or `conn_reuse_mode=0` with `expire_nodest_conn=0` (traffic to removed real servers); virtual services \
in `ipvsadm -Ln` and their addresses on kube-ipvs0. Capture: a client port reused toward the same virtual \
service within IPVS's 2-minute TIME_WAIT after the previous connection closed; its first SYN dropped (on the \
node: seen arriving for the VIP, never forwarded to a real server), retransmitted ~1 s later and answered, while \
SYNs on fresh ports to the same service are answered at once. Sources: kubernetes#70747, #81775, #93297, \
#102122; kube-router#544; patchwork 20200701151719.4751-1-ja@ssi.bg.",
};

use super::{merge_cases, secs, with_packets, Context, Finished};
use crate::finding::{Confidence, Evidence, Finding, FindingKind};
use crate::flow::tcp::Conn;
use crate::flow::{Endpoint, FxHashMap, PktRef};

/// IPVS's TCP TIME_WAIT timeout (`ipvsadm --set` default 120 s for TIME_WAIT, 10 s for CLOSE).
const IPVS_TIME_WAIT_NS: i64 = 120_000_000_000;
/// The initial RTO a dropped SYN is re-sent after, with the scheduling slack seen in captures.
const RETRY_GAP: std::ops::RangeInclusive<i64> = 700_000_000..=1_500_000_000;
const MAX_KEEP: usize = 4096;

#[derive(Debug, Clone)]
struct Case {
    conn: u64,
    service: Endpoint,
    syn: PktRef,
    retransmit: PktRef,
    /// The retransmission as forwarded to a real server, when the capture shows that point.
    forwarded: Option<PktRef>,
    /// The node capture saw the point after the virtual service and the first SYN never reached it.
    dropped_in_node: bool,
    answer: Option<PktRef>,
    /// The previous connection on the same client port and service: its last packet.
    previous: PktRef,
}

#[derive(Default)]
struct Service {
    /// SYNs on client ports not recently used toward the service, answered at their first
    /// transmission, and those not.
    fresh_answered: u32,
    fresh_dropped: u32,
}

/// Recognises first SYNs dropped exactly when they reuse a client port whose previous connection to
/// the same service is still inside IPVS's TIME_WAIT.
#[derive(Default)]
pub struct Detector {
    /// Most distinct keys kept (0: the default `MAX_KEYS`).
    max_keys: usize,
    /// Per (client endpoint, service) as the client addressed it: when its last connection ended.
    last_close: FxHashMap<(Endpoint, Endpoint), (i64, PktRef)>,
    services: FxHashMap<Endpoint, Service>,
    cases: Vec<Case>,
    next_prune_ts: i64,
}

impl Detector {
    pub fn connection(&mut self, c: &Conn) {
        if !c.roles_known || c.syn_answered_by_ack.is_some() {
            return;
        }
        let (Some(first), Some(origin)) = (c.syns.first(), c.legs.first()) else {
            return;
        };
        let key = (origin.client, origin.server);
        let previous = self
            .last_close
            .get(&key)
            .filter(|(t, _)| {
                first.pkt.ts_ns > *t && first.pkt.ts_ns.saturating_sub(*t) <= IPVS_TIME_WAIT_NS
            })
            .map(|(_, p)| *p);
        let answer = c
            .synack
            .or_else(|| c.rsts.iter().find(|r| !r.from_client).map(|r| r.pkt));
        let retransmit = c.syns.get(1);
        let first_unanswered = match (answer, retransmit) {
            (None, _) => true,
            (Some(a), Some(r)) => a.ts_ns > r.pkt.ts_ns,
            (Some(_), None) => false,
        };
        match (previous, retransmit) {
            (Some(prev), Some(r))
                if first_unanswered
                    && answer.is_some()
                    && RETRY_GAP.contains(&r.pkt.ts_ns.saturating_sub(first.pkt.ts_ns)) =>
            {
                // A leg the retransmission reached and the first SYN did not: the point after the
                // virtual service (the real server's leg), seen on the node.
                let beyond = r.legs_seen & !first.legs_seen;
                let forwarded = (beyond != 0)
                    .then(|| c.legs.get(beyond.trailing_zeros() as usize))
                    .flatten()
                    .map(|l| l.first);
                if self.cases.len() < MAX_KEEP {
                    self.cases.push(Case {
                        conn: c.id,
                        service: origin.server,
                        syn: first.pkt,
                        retransmit: r.pkt,
                        forwarded,
                        dropped_in_node: beyond != 0,
                        answer,
                        previous: prev,
                    });
                }
            }
            (None, _) => {
                if let Some(s) =
                    super::capped_entry(&mut self.services, origin.server, self.max_keys)
                {
                    if first_unanswered {
                        s.fresh_dropped += 1;
                    } else {
                        s.fresh_answered += 1;
                    }
                }
            }
            _ => {}
        }
        // A closed connection's IPVS entry lives on for its TIME_WAIT; one never answered or still
        // open leaves nothing a reused port could meet (and a SYN flood adds no state here).
        let (Some(end), Some(last)) = (c.closed_ts, c.last_pkt()) else {
            return;
        };
        if !c.established {
            return;
        }
        let max = if self.max_keys == 0 {
            super::MAX_KEYS
        } else {
            self.max_keys
        };
        // When full, forget entries past IPVS's TIME_WAIT, at most once per second of capture time
        // (a scan per connection would make a long busy capture quadratic).
        if self.last_close.len() >= max && end >= self.next_prune_ts {
            self.last_close
                .retain(|_, (t, _)| end.saturating_sub(*t) <= IPVS_TIME_WAIT_NS);
            self.next_prune_ts = end.saturating_add(1_000_000_000);
        }
        if self.last_close.len() < max || self.last_close.contains_key(&key) {
            self.last_close.insert(key, (end, last));
        }
    }

    pub fn finish(self, ctx: &Context<'_>, out: &mut Vec<Finding>) -> Vec<u64> {
        let mut by_service: Vec<(Endpoint, Vec<&Case>)> = Vec::new();
        for c in &self.cases {
            match by_service.iter_mut().find(|(s, _)| *s == c.service) {
                Some((_, v)) => v.push(c),
                None => by_service.push((c.service, vec![c])),
            }
        }
        let reuse_mode = ctx
            .node
            .sysctl("net.ipv4.vs.conn_reuse_mode")
            .map(str::trim);
        let vs_conntrack = ctx.node.sysctl("net.ipv4.vs.conntrack").map(str::trim);
        let kernel_fixed = ctx
            .node
            .kernel_release
            .as_deref()
            .and_then(|k| versions::IPVS_CONN_REUSE_UNCONFIRMED_CT.has(k));
        let mut findings = Vec::new();
        let mut explained = Vec::new();
        for (service, cases) in by_service {
            let fresh = self.services.get(&service);
            let fresh_answered = fresh.map_or(0, |s| s.fresh_answered);
            let fresh_dropped = fresh.map_or(0, |s| s.fresh_dropped);
            // Fresh ports dropped as well: the drops are not about reuse.
            if fresh_dropped > 0 {
                continue;
            }
            let in_node = cases.iter().any(|c| c.dropped_in_node);
            let ipvs_vip = ctx.node.ipvs_bound_addrs.contains(&service.ip);
            let mut confidence = if in_node || (cases.len() >= 2 && fresh_answered > 0) {
                Confidence::Likely
            } else {
                Confidence::Possible
            };
            let node_says = reuse_mode == Some("1") && vs_conntrack != Some("0");
            if node_says && kernel_fixed != Some(true) && (in_node || ipvs_vip) {
                confidence = Confidence::Confirmed;
            } else if reuse_mode == Some("0") {
                confidence = Confidence::Possible;
            }
            let first = cases[0];
            let mut f = Finding::new(
                &INCIDENT,
                FindingKind::Incident,
                confidence,
                format!(
                    "{} connect(s) to {service} reusing a client port whose previous connection was still in IPVS's TIME_WAIT lost their first SYN and connected {} later (e.g. {})",
                    cases.len(),
                    secs(first.retransmit.ts_ns.saturating_sub(first.syn.ts_ns)),
                    first.syn.src
                ),
            );
            f = f.because(format!(
                "each dropped SYN reused the client port of a connection to {service} that had ended {} before (inside IPVS's 2-minute TIME_WAIT); its retransmission ~1 s later was answered",
                secs(first.syn.ts_ns.saturating_sub(first.previous.ts_ns))
            ));
            f = if fresh_answered > 0 {
                f.because(format!(
                    "{fresh_answered} SYN(s) on fresh client ports to the same service were answered at once: only reused ports lost a SYN"
                ))
            } else {
                f.because("no SYN on a fresh client port to this service is in the capture to compare with")
            };
            if in_node {
                f = f.because("the node capture shows the dropped SYN arriving for the virtual service and never forwarded to a real server, while its retransmission was: it died in the node's service proxy, not on the path");
            }
            match (reuse_mode, kernel_fixed) {
                (Some("1"), Some(true)) => {
                    f = f.because(format!(
                        "the node facts say conn_reuse_mode=1 on a kernel with the fix ({}): this kernel should not drop the SYN; a backport-less vendor kernel or an emulation would",
                        versions::IPVS_CONN_REUSE_UNCONFIRMED_CT.source
                    ))
                }
                (Some("1"), _) => {
                    f = f.because(format!(
                        "the node facts say net.ipv4.vs.conn_reuse_mode=1{}, and the kernel{} lacks {}",
                        if vs_conntrack == Some("1") { " with net.ipv4.vs.conntrack=1" } else { "" },
                        ctx.node.kernel_release.as_deref().map(|k| format!(" {k}")).unwrap_or_default(),
                        versions::IPVS_CONN_REUSE_UNCONFIRMED_CT.what
                    ));
                    f = f.with_evidence(Evidence::Config {
                        source: ctx.node.source.clone(),
                        line: None,
                        text: "net.ipv4.vs.conn_reuse_mode = 1".into(),
                    });
                }
                (Some("0"), _) => {
                    f = f.because("the node facts say conn_reuse_mode=0: IPVS does not reschedule reused ports there, so its drop cannot be the cause; another drop of port-reusing SYNs is at work")
                }
                _ => {
                    f = f.because("whether the service is IPVS with conn_reuse_mode=1 on a kernel < 5.9 is not known from the capture (node facts decide)")
                }
            }
            if ipvs_vip {
                f = f.because(format!("{} is bound on the node's IPVS dummy device (kube-ipvs0): an IPVS virtual service", service.ip));
            }
            f = f
                .rules_out(super::snat_port_clash::INCIDENT.id, "the lost SYNs are exactly those reusing a recently closed client port of one client, one after another; a clash needs concurrent SYNs from different clients given one translated tuple")
                .rules_out(super::listen_queue_overflow::INCIDENT.id, "SYNs on fresh client ports to the same service were answered at once; only reused ports lost their first SYN")
                .rules_out(super::timewait_paws_reject::INCIDENT.id, "nothing answered the first SYN (no bare ACK from a TIME_WAIT socket)")
                .rules_out(super::tw_recycle_paws::INCIDENT.id, "the retransmission, with the same timestamp clock, passed at once: no timestamp check dropped the SYN");
            let mut pkts = Vec::new();
            for c in cases.iter().take(3) {
                pkts.push((
                    c.previous,
                    "last packet of the previous connection on this client port and service"
                        .to_string(),
                ));
                pkts.push((
                    c.syn,
                    "SYN reusing the port: dropped, no answer".to_string(),
                ));
                pkts.push((
                    c.retransmit,
                    format!(
                        "SYN retransmitted after {}",
                        secs(c.retransmit.ts_ns.saturating_sub(c.syn.ts_ns))
                    ),
                ));
                if let Some(p) = c.forwarded {
                    pkts.push((
                        p,
                        "the retransmission forwarded to a real server".to_string(),
                    ));
                }
                if let Some(a) = c.answer {
                    pkts.push((a, a.tcp_what()));
                }
            }
            explained.extend(cases.iter().map(|c| c.conn));
            findings.push(with_packets(
                f,
                ctx,
                &pkts,
                "first SYNs of reused client ports dropped by the service proxy",
            ));
        }
        let n = findings.len() as u32;
        merge_cases(findings, n.max(1), out);
        explained.sort_unstable();
        explained
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
        _explained: &[u64],
        out: &mut Vec<Finding>,
    ) -> Vec<u64> {
        Detector::finish(*self, ctx, out)
    }
}

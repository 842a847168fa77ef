//! Detectors: one module per catalogue incident, each with its catalogue entry (`INCIDENT`: words,
//! fix, sysctls, version facts) beside the code that recognises it from capture evidence.
//! [`CATALOGUE`] lists the incidents and [`DETECTORS`] their capture detectors.
//!
//! Detectors see finalised connections (`flow::tcp::Conn`) and DNS queries (`flow::dns::FinishedQuery`)
//! as the flow engine hands them out (and ICMP errors, the only packets that reach them one by one),
//! keep bounded state, and produce findings at the end. Node facts
//! (`NodeContext`), when given, only raise or lower confidence and add evidence; a detector never
//! claims more than its evidence shows.

pub mod bridge_nf_bypass;
pub mod conntrack_dnat_rebalance;
pub mod conntrack_invalid_reset;
pub mod conntrack_snat_remap;
pub mod conntrack_table_full;
pub mod dns_conntrack_race;
pub mod dns_id_collision;
pub mod dns_ndots_amplification;
pub mod dns_truncation_fallback;
pub mod dns_upstream_unreachable;
pub mod ephemeral_port_exhaustion;
pub mod go_resolver_dns_first;
pub mod hairpin_off;
pub mod idle_timeout_reset;
pub mod ipvs_conn_reuse;
pub mod listen_queue_overflow;
pub mod local_source_drop;
pub mod neighbour_table_overflow;
pub mod overlay_mtu_blackhole;
pub mod rp_filter_drop;
pub mod snat_port_clash;
pub mod stale_udp_conntrack;
pub mod timewait_paws_reject;
pub mod tw_recycle_paws;
pub mod vxlan_checksum_offload;

use crate::finding::{format_ts, DnsFields, Evidence, Finding, FrameRef, Incident, TcpFields};
use crate::flow::dns::FinishedQuery;
use crate::flow::tcp::Conn;
use crate::flow::PktRef;
use crate::node::NodeContext;
use crate::wire::tcp_flags::ACK;
use crate::wire::{PacketDirection, Tunnel};

/// Every incident of the catalogue, in catalogue order (`incidents.md`).
pub static CATALOGUE: &[&Incident] = &[
    &conntrack_snat_remap::INCIDENT,
    &conntrack_dnat_rebalance::INCIDENT,
    &bridge_nf_bypass::INCIDENT,
    &tw_recycle_paws::INCIDENT,
    &snat_port_clash::INCIDENT,
    &dns_conntrack_race::INCIDENT,
    &go_resolver_dns_first::INCIDENT,
    &dns_upstream_unreachable::INCIDENT,
    &dns_id_collision::INCIDENT,
    &listen_queue_overflow::INCIDENT,
    &local_source_drop::INCIDENT,
    &conntrack_table_full::INCIDENT,
    &conntrack_invalid_reset::INCIDENT,
    &stale_udp_conntrack::INCIDENT,
    &idle_timeout_reset::INCIDENT,
    &dns_ndots_amplification::INCIDENT,
    &hairpin_off::INCIDENT,
    &rp_filter_drop::INCIDENT,
    &dns_truncation_fallback::INCIDENT,
    &overlay_mtu_blackhole::INCIDENT,
    &timewait_paws_reject::INCIDENT,
    &ephemeral_port_exhaustion::INCIDENT,
    &ipvs_conn_reuse::INCIDENT,
    &vxlan_checksum_offload::INCIDENT,
    &neighbour_table_overflow::INCIDENT,
];

/// The catalogue entry with this id, for ids that come from outside (a command line, a test).
pub fn incident(id: &str) -> Option<&'static Incident> {
    CATALOGUE.iter().copied().find(|i| i.id == id)
}

/// A finished connection as the detectors see it: the connection itself (`Deref`), and what several
/// of them derive from it, made once for all of them (its SYN history, read by seven detectors:
/// ~320 instructions each time, on every connection).
pub struct Finished<'a> {
    conn: &'a Conn,
    syn: std::cell::OnceCell<Option<SynRecord>>,
}

impl<'a> Finished<'a> {
    pub fn new(conn: &'a Conn) -> Self {
        Finished {
            conn,
            syn: std::cell::OnceCell::new(),
        }
    }

    /// The connection's SYN history ([`SynRecord::of`]), made on first use.
    pub(crate) fn syn_record(&self) -> Option<&SynRecord> {
        self.syn.get_or_init(|| SynRecord::of(self.conn)).as_ref()
    }
}

impl std::ops::Deref for Finished<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        self.conn
    }
}

/// A capture detector: it sees connections and DNS transactions as the flow engine finalises them,
/// keeps bounded state, and reports at the end.
pub trait CaptureDetector: Send {
    fn connection(&mut self, _c: &Finished<'_>) {}
    fn query(&mut self, _q: &FinishedQuery) {}
    /// An ICMP error packet (destination unreachable, too big, time exceeded): only those reach it,
    /// not every packet.
    fn icmp_error(&mut self, _p: &PktRef, _v6: bool, _icmp_type: u8, _code: u8) {}
    /// An address-resolution message (ARP, or ICMPv6 neighbour solicitation/advertisement), with the
    /// asker and the address asked for as `src`/`dst` (for an answer: the answerer and the asker).
    fn neighbour(&mut self, _p: &PktRef, _msg: neighbour_table_overflow::NeighbourMsg) {}
    /// Appends this detector's findings to `out`. `explained` holds the connections (ids, sorted) that
    /// detectors earlier in [`DETECTORS`] have explained; the return value is the ones this one
    /// explains, so that one dropped SYN is offered as evidence of one cause only.
    fn finish(
        self: Box<Self>,
        ctx: &Context<'_>,
        explained: &[u64],
        out: &mut Vec<Finding>,
    ) -> Vec<u64>;

    /// Whether this detector's `finish` neither reads `explained` nor explains connections (returns
    /// none): then it may run apart from the others' chain, on another thread
    /// ([`Detectors::finish_on`]). Default: no, it takes part in the chain.
    fn finish_stands_alone(&self) -> bool {
        false
    }

    /// The most distinct keys (servers, source/server pairs) this detector may keep (see
    /// [`MAX_KEYS`]); detectors without per-key state ignore it.
    fn set_max_keys(&mut self, _max_keys: usize) {}

    /// A packet that came out of a VXLAN or Geneve tunnel (`pkt` is the inner packet; `tunnel.udp`
    /// holds the outer UDP header with its checksum verified) and the capture's direction for it: the
    /// per-packet look for outer checksums, reached by tunnel packets only. Default: nothing.
    fn tunnel_udp(&mut self, _pkt: &PktRef, _tunnel: &Tunnel, _direction: Option<PacketDirection>) {
    }

    /// Whether this detector implements [`CaptureDetector::tunnel_udp`]: only those are called.
    fn wants_tunnel_udp(&self) -> bool {
        false
    }
}

/// A registry entry: an incident and how to make its capture detector.
pub struct DetectorEntry {
    pub incident: &'static Incident,
    pub new: fn() -> Box<dyn CaptureDetector>,
}

/// Every capture detector, one per incident, in the order `finish` runs them. The order matters for
/// the SYN-drop detectors, which share evidence: a connection explained by one cause is not offered as
/// evidence of another, so PAWS and NAT clashes (more specific) come before a full listen queue, which
/// comes before a source-address drop.
pub static DETECTORS: &[DetectorEntry] = &[
    DetectorEntry {
        incident: &conntrack_snat_remap::INCIDENT,
        new: || Box::<conntrack_snat_remap::Detector>::default(),
    },
    DetectorEntry {
        incident: &conntrack_dnat_rebalance::INCIDENT,
        new: || Box::<conntrack_dnat_rebalance::Detector>::default(),
    },
    DetectorEntry {
        incident: &bridge_nf_bypass::INCIDENT,
        new: || Box::<bridge_nf_bypass::Detector>::default(),
    },
    // Before the per-server SYN-drop detectors: new connections to several destinations refused
    // together, one of them answering an existing connection meanwhile, is the more specific picture;
    // it claims only those SYNs, so a single backwards TSval among them is not read as PAWS.
    // Before the SYN-drop detectors: a handshake whose packets crossed a tunnel with a wrong outer
    // checksum was lost to the receiver's checksum check, whatever else it looks like.
    DetectorEntry {
        incident: &vxlan_checksum_offload::INCIDENT,
        new: || Box::<vxlan_checksum_offload::Detector>::default(),
    },
    DetectorEntry {
        incident: &conntrack_table_full::INCIDENT,
        new: || Box::<conntrack_table_full::Detector>::default(),
    },
    // Before tw-recycle-paws and snat-port-clash: a first SYN lost exactly when it reused a recently
    // closed client port of the same service is IPVS's, whatever its timestamp, and one lost beside a
    // concurrent SYN of another client is a clash.
    DetectorEntry {
        incident: &ipvs_conn_reuse::INCIDENT,
        new: || Box::<ipvs_conn_reuse::Detector>::default(),
    },
    DetectorEntry {
        incident: &tw_recycle_paws::INCIDENT,
        new: || Box::<tw_recycle_paws::Detector>::default(),
    },
    // Before the port clash and the listen queue: SYNs to a Service from its own backend, never
    // DNATed onward, are the hairpin's. A hairpin's first SYN dies after the NAT decision and its
    // retransmission may be DNATed to another backend and answered, which is also the clash's
    // signature (fixtures/watch/hairpin-off-retry-to-another-backend).
    DetectorEntry {
        incident: &hairpin_off::INCIDENT,
        new: || Box::<hairpin_off::Detector>::default(),
    },
    DetectorEntry {
        incident: &snat_port_clash::INCIDENT,
        new: || Box::<snat_port_clash::Detector>::default(),
    },
    // A TCP 53 SYN after a truncated answer is the fallback's, not a listener's or a source's.
    DetectorEntry {
        incident: &dns_truncation_fallback::INCIDENT,
        new: || Box::<dns_truncation_fallback::Detector>::default(),
    },
    // Also before the listen queue: a source's SYNs dying on one interface while it is answered on
    // another are the reverse-path filter's.
    DetectorEntry {
        incident: &rp_filter_drop::INCIDENT,
        new: || Box::<rp_filter_drop::Detector>::default(),
    },
    // Before the detectors of silent SYN drops at a listener: SYNs that die while their host asks
    // for hundreds of neighbours are offered to the neighbour table first (only `possible` alone).
    DetectorEntry {
        incident: &neighbour_table_overflow::INCIDENT,
        new: || Box::<neighbour_table_overflow::Detector>::default(),
    },
    // Before the detectors of silent SYN drops: a SYN answered by a TIME_WAIT socket's bare ACK was
    // not dropped, and its retry a second later is this incident's, not a drop's.
    DetectorEntry {
        incident: &timewait_paws_reject::INCIDENT,
        new: || Box::<timewait_paws_reject::Detector>::default(),
    },
    DetectorEntry {
        incident: &listen_queue_overflow::INCIDENT,
        new: || Box::<listen_queue_overflow::Detector>::default(),
    },
    DetectorEntry {
        incident: &local_source_drop::INCIDENT,
        new: || Box::<local_source_drop::Detector>::default(),
    },
    DetectorEntry {
        incident: &dns_conntrack_race::INCIDENT,
        new: || Box::<dns_conntrack_race::Detector>::default(),
    },
    DetectorEntry {
        incident: &dns_id_collision::INCIDENT,
        new: || Box::<dns_id_collision::Detector>::default(),
    },
    DetectorEntry {
        incident: &dns_upstream_unreachable::INCIDENT,
        new: || Box::<dns_upstream_unreachable::Detector>::default(),
    },
    DetectorEntry {
        incident: &go_resolver_dns_first::INCIDENT,
        new: || Box::<go_resolver_dns_first::Detector>::default(),
    },
    DetectorEntry {
        incident: &conntrack_invalid_reset::INCIDENT,
        new: || Box::<conntrack_invalid_reset::Detector>::default(),
    },
    DetectorEntry {
        incident: &stale_udp_conntrack::INCIDENT,
        new: || Box::<stale_udp_conntrack::Detector>::default(),
    },
    DetectorEntry {
        incident: &idle_timeout_reset::INCIDENT,
        new: || Box::<idle_timeout_reset::Detector>::default(),
    },
    DetectorEntry {
        incident: &dns_ndots_amplification::INCIDENT,
        new: || Box::<dns_ndots_amplification::Detector>::default(),
    },
    DetectorEntry {
        incident: &overlay_mtu_blackhole::INCIDENT,
        new: || Box::<overlay_mtu_blackhole::Detector>::default(),
    },
    DetectorEntry {
        incident: &ephemeral_port_exhaustion::INCIDENT,
        new: || Box::<ephemeral_port_exhaustion::Detector>::default(),
    },
];

/// What detectors need to turn evidence into findings.
pub struct Context<'a> {
    /// Input names by `InputId`.
    pub inputs: &'a [String],
    pub node: &'a NodeContext,
    /// Capture time of the last packet of all inputs: what happened after it is unknown.
    pub capture_end_ns: i64,
}

impl Context<'_> {
    pub fn frame(&self, p: &PktRef, what: impl Into<String>) -> FrameRef {
        FrameRef {
            frame: p.frame,
            ts_ns: p.ts_ns,
            time: format_ts(p.ts_ns),
            src: p.src.ip,
            src_port: p.src.port,
            dst: p.dst.ip,
            dst_port: p.dst.port,
            what: what.into(),
            interface: p.ifindex.map(|i| format!("ifindex {i}")),
            // UDP packets carry no flags; a flagless TCP segment is shown without its header fields.
            tcp: (p.flags != 0).then_some(TcpFields {
                flags: p.flags,
                seq: p.seq,
                ack: p.ack,
            }),
            len: Some(p.len),
            flow: None,
            decisive: false,
            dns: None,
        }
    }

    /// Packets grouped by capture file, in frame order, as evidence items.
    pub fn packets(&self, pkts: &[(PktRef, String)], note: &str) -> Vec<Evidence> {
        let marked: Vec<Marked> = pkts
            .iter()
            .map(|(p, w)| Marked::new(*p, w.clone()))
            .collect();
        self.marked_packets(&marked, note)
    }

    /// Packets grouped by capture file, in frame order, as evidence items, with the connection or
    /// lookup each belongs to and the decisive one marked (what a report's diagrams draw).
    pub(crate) fn marked_packets(&self, pkts: &[Marked], note: &str) -> Vec<Evidence> {
        let mut by_input: Vec<(u16, Vec<FrameRef>)> = Vec::new();
        for m in pkts {
            let p = &m.pkt;
            let mut fr = self.frame(p, m.what.clone());
            fr.flow = m.flow;
            fr.decisive = m.decisive;
            fr.dns = m.dns.clone();
            match by_input.iter_mut().find(|(i, _)| *i == p.input) {
                Some((_, v)) => {
                    if !v.iter().any(|f| f.frame == fr.frame) {
                        v.push(fr)
                    }
                }
                None => by_input.push((p.input, vec![fr])),
            }
        }
        by_input
            .into_iter()
            .map(|(input, mut frames)| {
                frames.sort_by_key(|f| f.frame);
                Evidence::Packets {
                    file: self
                        .inputs
                        .get(input as usize)
                        .cloned()
                        .unwrap_or_else(|| format!("input {input}")),
                    frames,
                    note: note.to_string(),
                }
            })
            .collect()
    }
}

/// A packet offered as evidence, with what a report's diagram needs beyond the packet itself.
#[derive(Debug, Clone)]
pub(crate) struct Marked {
    pub pkt: PktRef,
    pub what: String,
    /// The connection (its flow-engine id) or DNS lookup (any id unique within the finding).
    pub flow: Option<u64>,
    pub decisive: bool,
    pub dns: Option<DnsFields>,
}

impl Marked {
    pub fn new(pkt: PktRef, what: String) -> Marked {
        Marked {
            pkt,
            what,
            flow: None,
            decisive: false,
            dns: None,
        }
    }

    pub fn flow(mut self, flow: u64) -> Marked {
        self.flow = Some(flow);
        self
    }

    pub fn decisive(mut self, decisive: bool) -> Marked {
        self.decisive = decisive;
        self
    }

    pub fn dns(mut self, dns: DnsFields) -> Marked {
        self.dns = Some(dns);
        self
    }
}

/// The packets of one connection, `decisive` marked.
pub(crate) fn one_flow(pkts: &[(PktRef, String)], flow: u64, decisive: &PktRef) -> Vec<Marked> {
    pkts.iter()
        .map(|(p, w)| {
            Marked::new(*p, w.clone())
                .flow(flow)
                .decisive(p == decisive)
        })
        .collect()
}

/// Add marked packet evidence to a finding.
pub(crate) fn with_marked_packets(
    mut f: Finding,
    ctx: &Context<'_>,
    pkts: &[Marked],
    note: &str,
) -> Finding {
    f.evidence.extend(ctx.marked_packets(pkts, note));
    f
}

/// Add packet evidence to a finding.
pub(crate) fn with_packets(
    mut f: Finding,
    ctx: &Context<'_>,
    pkts: &[(PktRef, String)],
    note: &str,
) -> Finding {
    f.evidence.extend(ctx.packets(pkts, note));
    f
}

pub fn secs(ns: i64) -> String {
    let s = ns as f64 / 1e9;
    if s >= 3600.0 {
        format!("{:.1} h", s / 3600.0)
    } else if s >= 1.0 {
        format!("{s:.1} s")
    } else {
        format!("{:.1} ms", s * 1000.0)
    }
}

/// All capture detectors of [`DETECTORS`], fed by the analysis loop.
pub struct Detectors {
    running: Vec<Box<dyn CaptureDetector>>,
    /// Each running detector's place in [`DETECTORS`]: the order `finish` takes them in, kept when
    /// the detectors are split between threads (`split_off`, `join`).
    place: Vec<usize>,
    /// Indices into `running` of the detectors that look at tunnel packets' outer UDP headers.
    tunnel: Vec<usize>,
}

impl Default for Detectors {
    fn default() -> Self {
        Self::new()
    }
}

impl Detectors {
    pub fn new() -> Self {
        Self::with_max_keys(MAX_KEYS)
    }

    /// Detectors that keep at most `max_keys` distinct keys each (from the memory budget).
    pub fn with_max_keys(max_keys: usize) -> Self {
        Self::of(
            DETECTORS
                .iter()
                .map(|d| {
                    let mut d = (d.new)();
                    d.set_max_keys(max_keys);
                    d
                })
                .enumerate()
                .collect(),
        )
    }

    /// The detectors given with their places in [`DETECTORS`], in that order.
    fn of(mut placed: Vec<(usize, Box<dyn CaptureDetector>)>) -> Self {
        placed.sort_by_key(|(place, _)| *place);
        let (place, running): (Vec<usize>, Vec<Box<dyn CaptureDetector>>) =
            placed.into_iter().unzip();
        let tunnel = (0..running.len())
            .filter(|&i| running[i].wants_tunnel_udp())
            .collect();
        Detectors {
            running,
            place,
            tunnel,
        }
    }

    /// No detectors: a placeholder while the real ones are elsewhere.
    pub(crate) fn none() -> Self {
        Self::of(Vec::new())
    }

    /// Takes out the detectors of the incidents `ids` names, which then get every call of theirs
    /// through the detectors returned; these keep the others. Detectors keep no state in common, so
    /// two sets each fed its own calls in order find what one set would; `join` puts them back
    /// together before `finish`.
    pub(crate) fn split_off(&mut self, ids: &[&str]) -> Detectors {
        let placed = std::mem::take(&mut self.place)
            .into_iter()
            .zip(std::mem::take(&mut self.running));
        let (taken, rest): (Vec<_>, Vec<_>) =
            placed.partition(|&(place, _)| ids.contains(&DETECTORS[place].incident.id));
        *self = Self::of(rest);
        Self::of(taken)
    }

    /// How many detectors these are.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.running.len()
    }

    /// The detectors of `self` and `other` as one set again, in [`DETECTORS`] order.
    pub(crate) fn join(self, other: Detectors) -> Detectors {
        let mut placed: Vec<_> = self.place.into_iter().zip(self.running).collect();
        placed.extend(other.place.into_iter().zip(other.running));
        Self::of(placed)
    }

    pub fn connection(&mut self, c: &Conn) {
        let c = Finished::new(c);
        for d in &mut self.running {
            d.connection(&c);
        }
    }

    /// The detectors in two sets, alternately by place (so that neither gets all of the costly
    /// ones), each to be fed its calls on a thread of its own and `join`ed back.
    pub(crate) fn halves(self) -> (Detectors, Detectors) {
        let (even, odd): (Vec<_>, Vec<_>) = self
            .place
            .into_iter()
            .zip(self.running)
            .enumerate()
            .partition(|(i, _)| i % 2 == 0);
        let strip = |v: Vec<(usize, _)>| Self::of(v.into_iter().map(|(_, d)| d).collect());
        (strip(even), strip(odd))
    }

    /// A packet out of a VXLAN or Geneve tunnel, for the detectors that verify outer checksums.
    pub fn tunnel_udp(&mut self, p: &PktRef, tunnel: &Tunnel, direction: Option<PacketDirection>) {
        for &i in &self.tunnel {
            self.running[i].tunnel_udp(p, tunnel, direction);
        }
    }

    /// An ICMP error (frag-needed, unreachable) for the detectors that look at them.
    pub fn icmp_error(&mut self, p: &PktRef, v6: bool, icmp_type: u8, code: u8) {
        for d in &mut self.running {
            d.icmp_error(p, v6, icmp_type, code);
        }
    }

    /// An ARP or ND message, for the detectors that count neighbour resolution.
    pub fn neighbour(&mut self, p: &PktRef, msg: neighbour_table_overflow::NeighbourMsg) {
        for d in &mut self.running {
            d.neighbour(p, msg);
        }
    }

    pub fn dns(&mut self, q: &FinishedQuery) {
        for d in &mut self.running {
            d.query(q);
        }
    }

    pub fn finish(self, ctx: &Context<'_>) -> Vec<Finding> {
        let all = self.running.into_iter().enumerate();
        finish_chain(all, ctx)
            .into_iter()
            .flat_map(|(_, out)| out)
            .collect()
    }

    /// `finish` on up to `threads` threads: with two or more, the detectors whose `finish` stands
    /// alone (reads and explains no connections) run on a second thread while this one runs the
    /// chain of the others: the same findings in the same order, each detector's put back in its
    /// place. Worth a thread after `connections` connections and queries or more (a standalone
    /// `finish` costs tens of nanoseconds per connection it saw, a thread's start and join tens of
    /// microseconds).
    pub fn finish_on(self, ctx: &Context<'_>, threads: usize, connections: u64) -> Vec<Finding> {
        const WORTH_A_THREAD: u64 = 2048;
        if threads < 2 || connections < WORTH_A_THREAD {
            return self.finish(ctx);
        }
        let (apart, chain): (Vec<_>, Vec<_>) = self
            .running
            .into_iter()
            .enumerate()
            .partition(|(_, d)| d.finish_stands_alone());
        let (mut found, apart) = std::thread::scope(|s| {
            let apart = s.spawn(|| {
                apart
                    .into_iter()
                    .map(|(i, d)| {
                        let mut out = Vec::new();
                        let explains = d.finish(ctx, &[], &mut out);
                        debug_assert!(explains.is_empty(), "a standalone finish explained");
                        (i, out)
                    })
                    .collect::<Vec<_>>()
            });
            let found = finish_chain(chain.into_iter(), ctx);
            let apart = match apart.join() {
                Ok(apart) => apart,
                Err(panic) => std::panic::resume_unwind(panic),
            };
            (found, apart)
        });
        found.extend(apart);
        found.sort_by_key(|(i, _)| *i);
        found.into_iter().flat_map(|(_, out)| out).collect()
    }
}

/// Each detector's `finish` in turn, each given the connections the ones before it explained:
/// their findings, by the detectors' places.
fn finish_chain(
    detectors: impl Iterator<Item = (usize, Box<dyn CaptureDetector>)>,
    ctx: &Context<'_>,
) -> Vec<(usize, Vec<Finding>)> {
    let mut explained: Vec<u64> = Vec::new();
    let mut found = Vec::new();
    for (i, d) in detectors {
        let mut out = Vec::new();
        let more = d.finish(ctx, &explained, &mut out);
        if !more.is_empty() {
            explained.extend(more);
            explained.sort_unstable();
        }
        found.push((i, out));
    }
    found
}

/// Most distinct keys (servers, source/server pairs) a detector tracks by default; `analysis::Limits`
/// scales it down with the memory budget. Detectors see finished connections, so without a cap their
/// state would grow with every server ever contacted; past the cap new keys are counted, not kept (a
/// capture with more distinct servers than this is analysed for the first ones only, and the finding
/// says so where it matters).
pub const MAX_KEYS: usize = 65_536;

/// `map.entry(key)` unless the map holds `max` keys already and the key is new (`max` 0: the default
/// [`MAX_KEYS`]).
pub(crate) fn capped_entry<K: std::hash::Hash + Eq, V: Default>(
    map: &mut crate::flow::FxHashMap<K, V>,
    key: K,
    max: usize,
) -> Option<&mut V> {
    let max = if max == 0 { MAX_KEYS } else { max };
    if map.len() >= max && !map.contains_key(&key) {
        return None;
    }
    Some(map.entry(key).or_default())
}

/// A connection's SYN history, kept compactly by the SYN-drop detectors.
#[derive(Debug, Clone)]
pub(crate) struct SynRecord {
    pub conn: u64,
    pub first_syn: PktRef,
    /// The client's address on the connection's first leg: before SNAT, when the capture saw that.
    pub origin_ip: std::net::IpAddr,
    pub transmissions: u32,
    pub tsval: Option<u32>,
    /// SYN-ACK or RST from the server.
    pub answered: bool,
    pub answer: Option<PktRef>,
    /// Later SYN transmissions (retransmissions) as evidence.
    pub retransmits: Vec<PktRef>,
    /// The capture saw the connection at several points (a node's `-i any`) and the first SYN never
    /// reached a point a later transmission reached: it died inside the capturing node (conntrack
    /// insert, a filter), not at the server.
    pub lost_inside_node: bool,
}

impl SynRecord {
    pub fn of(c: &Conn) -> Option<SynRecord> {
        let first = c.syns.first()?;
        if !c.roles_known {
            return None;
        }
        let rst_answer = c.rsts.iter().find(|r| !r.from_client).map(|r| r.pkt);
        // A bare ACK from a socket already synchronised on the tuple (TIME_WAIT) answers the SYN too:
        // the SYN reached the server and was not dropped on the way.
        let ack_answer = c.syn_answered_by_ack.map(|(p, _)| p);
        let answer = [c.synack, rst_answer, ack_answer]
            .into_iter()
            .flatten()
            .min_by_key(|p| p.ts_ns);
        Some(SynRecord {
            conn: c.id,
            first_syn: first.pkt,
            origin_ip: c
                .legs
                .first()
                .map(|l| l.client.ip)
                .unwrap_or(first.pkt.src.ip),
            transmissions: c.syn_transmissions,
            tsval: first.tsval,
            answered: answer.is_some(),
            answer,
            retransmits: c.syns.iter().skip(1).map(|s| s.pkt).collect(),
            lost_inside_node: c
                .syns
                .iter()
                .skip(1)
                .any(|s| s.legs_seen & !first.legs_seen != 0),
        })
    }

    /// The first transmission was not answered before the client retransmitted it.
    pub fn first_unanswered(&self) -> bool {
        match (self.answer, self.retransmits.first()) {
            (None, _) => true,
            (Some(a), Some(r)) => a.ts_ns > r.ts_ns,
            (Some(_), None) => false,
        }
    }

    pub fn evidence(&self) -> Vec<(PktRef, String)> {
        let mut v = vec![(self.first_syn, "SYN".to_string())];
        for r in self.retransmits.iter().take(3) {
            v.push((
                *r,
                format!(
                    "SYN retransmitted after {}",
                    secs(r.ts_ns.saturating_sub(self.first_syn.ts_ns))
                ),
            ));
        }
        if let Some(a) = self.answer {
            v.push((a, a.tcp_what()));
        }
        v
    }
}

/// A leg that appeared in the middle of an established connection: the connection's packets started
/// to travel under another tuple without a new handshake, i.e. NAT translated them differently.
#[derive(Debug, Clone)]
pub(crate) struct Remap {
    pub leg: usize,
    /// The client-side endpoint is one never seen on this connection before (SNAT chose anew).
    pub client_changed: bool,
    /// The server-side endpoint is one never seen before (DNAT chose anew).
    pub server_changed: bool,
    /// The server's RST on the new leg: one without ACK, as a host sends for a connection it does not
    /// have. Required: without it the re-translation did no visible harm.
    pub rst: PktRef,
    /// The new tuple continues the sequence space exactly (seq and ack where the connection was).
    pub exact: bool,
    /// An earlier leg that carried the very same packet: the view from before NAT.
    pub pre_nat_leg: Option<usize>,
}

pub(crate) fn remaps(c: &Conn) -> Vec<Remap> {
    let mut out = Vec::new();
    if !c.roles_known && !c.established {
        return out;
    }
    for (i, leg) in c.legs.iter().enumerate() {
        if !leg.mid_stream || i == 0 || leg.prev.is_none() {
            continue;
        }
        let earlier = &c.legs[..i];
        let client_changed = !earlier.iter().any(|l| l.client == leg.client);
        let server_changed = !earlier.iter().any(|l| l.server == leg.server);
        if client_changed == server_changed {
            // Both or neither changed: not a single re-translation we can attribute to one side.
            continue;
        }
        // Within a window's reach of where the connection was (old Windows stacks give consecutive
        // connections nearby ISNs, so "somewhere in the sequence space" is not enough). The ack may be
        // behind where the peer had got to by up to 1 MiB (data in flight), or ahead of what the
        // input showed of it by up to a window: the peer's data was not captured (a filtered tap keeps
        // a flow's first segment after idle but not the data before it; a capture may drop packets).
        if leg.seq_offset.abs() > 65_536 || !(-(1 << 20)..=65_536).contains(&leg.ack_offset) {
            continue;
        }
        let Some(rst) = c
            .rsts
            .iter()
            .find(|r| {
                !r.from_client
                    && r.leg as usize == i
                    && r.pkt.ts_ns >= leg.first.ts_ns
                    && r.pkt.flags & ACK == 0
            })
            .map(|r| r.pkt)
        else {
            continue;
        };
        let exact = leg.seq_offset == 0 && leg.ack_offset == 0;
        // The packet that opened the new leg had been seen on an earlier leg just before: that leg
        // is the pre-NAT view of the same socket, which kept its tuple.
        let pre_nat_leg = leg.copy_of_leg.map(|l| l as usize).filter(|&l| l < i);
        out.push(Remap {
            leg: i,
            client_changed,
            server_changed,
            rst,
            exact,
            pre_nat_leg,
        });
    }
    out
}

fn first_packet_ts(f: &Finding) -> i64 {
    f.evidence
        .iter()
        .filter_map(|e| match e {
            Evidence::Packets { frames, .. } => frames.iter().map(|fr| fr.ts_ns).min(),
            _ => None,
        })
        .min()
        .unwrap_or(i64::MAX)
}

/// One finding per incident id and kind in a report: several findings of one incident (two ports of one
/// overloaded listener, two dead nameservers) become one, led by the strongest and earliest, with the
/// others listed as its further cases and their evidence kept (the first few).
pub fn one_per_incident(findings: Vec<Finding>) -> Vec<Finding> {
    let mut out: Vec<Finding> = Vec::new();
    let mut groups: Vec<Vec<Finding>> = Vec::new();
    for f in findings {
        match groups
            .iter_mut()
            .find(|g| g[0].id == f.id && g[0].kind == f.kind)
        {
            Some(g) => g.push(f),
            None => groups.push(vec![f]),
        }
    }
    for mut g in groups {
        g.sort_by_key(|f| (std::cmp::Reverse(f.confidence), first_packet_ts(f)));
        let mut lead = g.remove(0);
        for other in g {
            lead.cases.push(other.summary);
            if lead.cases.len() <= 3 {
                lead.evidence.extend(other.evidence);
            }
            for why in other.reasoning {
                if !lead.reasoning.contains(&why) {
                    lead.reasoning.push(why);
                }
            }
            for l in other.look_alikes {
                if !lead.look_alikes.iter().any(|x| x.id == l.id) {
                    lead.look_alikes.push(l);
                }
            }
        }
        out.push(lead);
    }
    out
}

/// One finding per incident and capture: the strongest case leads, up to two more cases add their
/// packets, and the summary says how many connections showed it.
pub(crate) fn merge_cases(mut cases: Vec<Finding>, total: u32, out: &mut Vec<Finding>) {
    if cases.is_empty() {
        return;
    }
    // The strongest case leads; among equals the earliest, so the lead does not depend on the order
    // in which connections were finalised.
    cases.sort_by_key(|f| (std::cmp::Reverse(f.confidence), first_packet_ts(f)));
    let mut rest = cases.split_off(1);
    let mut lead = cases.pop().expect("one case");
    for other in rest.drain(..).take(2) {
        lead.evidence.extend(other.evidence);
    }
    if total > 1 {
        lead.summary = format!(
            "{} (and {} more connection(s) like it)",
            lead.summary,
            total - 1
        );
    }
    out.push(lead);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Detectors split off and joined back: every detector once, in the registry's order (the
    /// order `finish` explains SYN drops in), each with its own hooks.
    #[test]
    fn detectors_split_for_two_threads_join_back_in_registry_order() {
        let mut rest = Detectors::new();
        let ids = [
            "ephemeral-port-exhaustion",
            "vxlan-checksum-offload",
            "no-such-incident",
        ];
        let taken = rest.split_off(&ids);
        let id = |d: &Detectors, i: usize| DETECTORS[d.place[i]].incident.id;
        assert_eq!(taken.running.len(), 2);
        assert!((0..2).all(|i| ids.contains(&id(&taken, i))));
        assert!((0..rest.running.len()).all(|i| !ids.contains(&id(&rest, i))));
        assert_eq!(taken.running.len() + rest.running.len(), DETECTORS.len());
        assert!(
            taken.tunnel.len() == 1
                && taken.tunnel.len() + rest.tunnel.len() == Detectors::new().tunnel.len()
        );
        let joined = rest.join(taken);
        assert_eq!(joined.place, (0..DETECTORS.len()).collect::<Vec<_>>());
        let wants =
            |d: &Detectors| -> Vec<_> { d.running.iter().map(|d| d.wants_tunnel_udp()).collect() };
        assert_eq!(wants(&joined), wants(&Detectors::new()));
        assert_eq!(joined.tunnel, Detectors::new().tunnel);
        // Halves for the end's two threads: every detector in one of them, alternately, and
        // joined back in the registry's order.
        let (even, odd) = joined.halves();
        assert_eq!(even.len(), DETECTORS.len().div_ceil(2));
        assert_eq!(odd.len(), DETECTORS.len() / 2);
        assert!(even.place.iter().all(|p| p % 2 == 0) && odd.place.iter().all(|p| p % 2 == 1));
        let joined = odd.join(even);
        assert_eq!(joined.place, (0..DETECTORS.len()).collect::<Vec<_>>());
        assert_eq!(joined.tunnel, Detectors::new().tunnel);
    }

    #[test]
    fn every_incident_has_one_capture_detector_and_a_unique_id() {
        for i in CATALOGUE {
            let n = DETECTORS.iter().filter(|d| d.incident == *i).count();
            assert_eq!(n, 1, "{}: {n} capture detectors", i.id);
            assert_eq!(incident(i.id), Some(*i));
        }
        assert_eq!(DETECTORS.len(), CATALOGUE.len());
        let mut ids: Vec<_> = CATALOGUE.iter().map(|i| i.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), CATALOGUE.len());
    }

    #[test]
    fn every_version_fact_an_incident_names_is_in_the_table() {
        for i in CATALOGUE {
            for v in i.versions {
                assert!(
                    crate::versions::TABLE.iter().any(|t| std::ptr::eq(*t, *v)),
                    "{}: {}",
                    i.id,
                    v.id
                );
            }
        }
    }
}

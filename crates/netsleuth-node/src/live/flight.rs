//! The flight recorder: a namespace's tapped packets of the last [`WINDOW_NS`], kept as
//! `LINUX_SLL2` records, analysed every few seconds by the same core `Engine` that `analyze` runs.
//!
//! Why re-analyse a window rather than stream into one long-lived engine: the core reports findings
//! only at `finish`, when every connection and query is over, and that is what makes it deterministic
//! and honest (an unanswered SYN is unanswered only once the capture ends). A window analysed as a
//! capture that ends now is exactly what `analyze` would say of a `tcpdump` of those seconds, so a
//! finding named live can be written out (`write_pcap`) and re-found offline, byte for byte. Records
//! are pushed straight into `Engine::push` (no pcap round trip); the pcap written by `--record` holds
//! the same records in the same order, so its frame numbers are the finding's.
//!
//! The cost of a window's end: anything still in flight at the end looks unanswered. So a finding is
//! announced only when its decisive packets all lie at least [`SETTLE_NS`] (2 s: twice a SYN's first
//! retransmission timeout, far beyond any healthy DNS answer) before the window's end (a
//! later cycle, with the answer that might still come in the window, decides), and, once the window
//! has slid, at least [`EDGE_NS`] after its start (earlier packets were seen with their context by an
//! earlier cycle). The last cycle, when the watch ends, is a capture's end and announces everything.
//!
//! A case is announced once: findings of an id are compared by their decisive packets (time and
//! 5-tuple, which do not change as the window slides, unlike frame numbers); one that shares a packet
//! with a case already announced is that case, announced again only at a higher confidence.

use super::tap::TappedPacket;
use netsleuth_core::analysis::{Engine, Limits};
use netsleuth_core::capture::Record;
use netsleuth_core::detect::{
    conntrack_dnat_rebalance, conntrack_invalid_reset, conntrack_snat_remap, conntrack_table_full,
    idle_timeout_reset, overlay_mtu_blackhole, timewait_paws_reject, tw_recycle_paws,
    vxlan_checksum_offload,
};
use netsleuth_core::finding::{Confidence, Evidence, Finding, Incident};
use netsleuth_core::flow::InputId;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::io::Write;
use std::net::IpAddr;

/// Seconds of packets kept and analysed.
pub const WINDOW_NS: i64 = 30_000_000_000;
/// A finding's packets must be this much older than the window's end before it is announced.
pub const SETTLE_NS: i64 = 2_000_000_000;
/// After the window has slid, a finding's packets must be this far from its start.
pub const EDGE_NS: i64 = 5_000_000_000;
/// The recorder's byte cap (records with their SLL2 headers and their bookkeeping, see
/// `FRAME_OVERHEAD`): past it the oldest go first, counted.
pub const CAP_BYTES: usize = 32 << 20;
/// What all namespaces' recorders may hold together: each gets the smaller of [`CAP_BYTES`] and its
/// share of this.
pub const TOTAL_CAP_BYTES: usize = 64 << 20;
/// Memory budget of one cycle's engine (a window of control packets needs far less than `analyze`'s).
pub const CYCLE_MEMORY: usize = 48 << 20;

/// Incidents whose capture detector the tap's filter misleads, so the tap never names them (their
/// kernel-event side, where there is one, is the correlator's). Measured by replaying every lab
/// capture through the filter (`tests/tap.rs`): with only SYN/FIN/RST, DNS, ICMP errors and a flow
/// direction's first segment after a second of silence,
/// - `tw-recycle-paws` rests on SYNs that nothing answered, but the bare ACK by which a TIME_WAIT
///   socket answers a SYN (timewait-paws-reject) is passed only when its direction was silent, and
///   neither are the segments that tell a conntrack-table-full drop apart: the classic filter's
///   replays of both name tw-recycle-paws.
///
/// Those the filter only hides (found unfiltered, nothing through the filter) need no entry: they are
/// listed in the tap's notice ([`HIDDEN_BY_FILTER`], or [`HIDDEN_BY_CLASSIC_FILTER`] where the eBPF
/// filter could not be loaded).
pub static NOT_FROM_TAP: &[(&Incident, &str)] = &[(
    &tw_recycle_paws::INCIDENT,
    "the filter drops the bare ACK that answers a SYN meeting a TIME_WAIT socket (unless the socket's direction was silent for the idle gap), so an unanswered SYN cannot be told from one answered that way",
)];

/// The incidents whose capture evidence the tap's eBPF filter does not pass (the notice lists them).
pub static HIDDEN_BY_FILTER: &[&Incident] = &[
    // Needs the full-size segments that go unanswered; a flow's first segment after idle is rarely one.
    &overlay_mtu_blackhole::INCIDENT,
    // Outer checksums are verified over the whole tunnelled packet; the filter passes no underlay.
    &vxlan_checksum_offload::INCIDENT,
];

/// The incidents whose capture evidence the classic filter (the fallback where eBPF cannot be
/// loaded: no TCP segment but SYN/FIN/RST) does not pass. Six more than the eBPF filter's: the segment
/// after idle, or under a new tuple, is what shows each of them.
pub static HIDDEN_BY_CLASSIC_FILTER: &[&Incident] = &[
    &conntrack_dnat_rebalance::INCIDENT,
    &conntrack_snat_remap::INCIDENT,
    &conntrack_invalid_reset::INCIDENT,
    &idle_timeout_reset::INCIDENT,
    &overlay_mtu_blackhole::INCIDENT,
    &timewait_paws_reject::INCIDENT,
    &conntrack_table_full::INCIDENT,
    &vxlan_checksum_offload::INCIDENT,
];

const LINKTYPE_LINUX_SLL2: u32 = 276;
const SLL2_LEN: usize = 20;

struct Frame {
    ts_ns: i64,
    orig_len: u32,
    /// SLL2 header, then the tapped bytes.
    bytes: Box<[u8]>,
}

/// What a kept record costs beyond its bytes: its `Frame` in the deque and the allocator's header
/// and rounding of the boxed bytes. Counted against the cap, so that the cap bounds the recorder's
/// memory and not only its records: a control segment's record is ~100 bytes, and at 20 k events a
/// second in a soak the uncounted part was 17 MB beside 22 MB of records (BENCHMARKS.md "Watch").
const FRAME_OVERHEAD: usize = std::mem::size_of::<Frame>() + 16;

/// The memory a kept record takes, as counted against the cap.
fn footprint(f: &Frame) -> usize {
    f.bytes.len() + FRAME_OVERHEAD
}

/// A packet of a finding, as the dedupe compares them.
type PacketKey = (i64, IpAddr, u16, IpAddr, u16);

/// A finding announced by a cycle, and the window it came from.
#[derive(Debug, Clone)]
pub struct Announced {
    pub finding: Finding,
    /// The analysed window's first and last record time.
    pub window: (i64, i64),
    /// True when this case was announced before at a lower confidence.
    pub upgrade: bool,
}

/// What one cycle did.
#[derive(Debug, Clone, Copy, Default)]
pub struct CycleStats {
    pub packets: u64,
    pub findings: usize,
    /// Findings held back (packets too near the window's end or start): a later cycle decides.
    pub held: usize,
    /// Findings of incidents the tap does not name (`NOT_FROM_TAP`).
    pub excluded: usize,
}

pub struct FlightRecorder {
    name: String,
    frames: VecDeque<Frame>,
    bytes: usize,
    /// Packets let go because the byte cap was reached before they left the window.
    pub evicted_by_cap: u64,
    pub recorded: u64,
    first_ts: Option<i64>,
    fresh: bool,
    cap_bytes: usize,
}

impl FlightRecorder {
    /// `name` is the input name findings carry (`tap:<namespace>`).
    pub fn new(name: String) -> Self {
        Self::with_cap(name, CAP_BYTES)
    }

    pub fn with_cap(name: String, cap_bytes: usize) -> Self {
        FlightRecorder {
            name,
            frames: VecDeque::new(),
            bytes: 0,
            evicted_by_cap: 0,
            recorded: 0,
            first_ts: None,
            fresh: false,
            cap_bytes,
        }
    }

    /// Changes the byte cap (the oldest records go now if it is exceeded).
    pub fn set_cap(&mut self, cap_bytes: usize) {
        self.cap_bytes = cap_bytes;
        while self.bytes > self.cap_bytes {
            let Some(f) = self.frames.pop_front() else {
                break;
            };
            self.bytes -= footprint(&f);
            self.evicted_by_cap += 1;
        }
    }

    /// Asks for the next cycle even without new packets (the node context changed).
    pub fn touch(&mut self) {
        self.fresh = !self.frames.is_empty();
    }

    /// Packets arrived since the last cycle.
    pub fn has_new(&self) -> bool {
        self.fresh
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Keeps one tapped packet, framed as SLL2 (what `tcpdump -i any` writes).
    pub fn push(&mut self, p: &TappedPacket<'_>) {
        let mut b = Vec::with_capacity(SLL2_LEN + p.data.len());
        b.extend_from_slice(&p.protocol.to_be_bytes());
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&p.ifindex.to_be_bytes());
        b.extend_from_slice(&p.hatype.to_be_bytes());
        b.push(p.pkttype);
        b.push(0); // no link address: cooked from the network header
        b.extend_from_slice(&[0u8; 8]);
        b.extend_from_slice(p.data);
        let frame = Frame {
            ts_ns: p.ts_ns,
            orig_len: p.orig_len.saturating_add(SLL2_LEN as u32),
            bytes: b.into_boxed_slice(),
        };
        self.bytes += footprint(&frame);
        // CPUs hand packets to the ring a little out of time order: keep the records sorted, as the
        // engine wants them (the step back is a few records at most).
        let mut at = self.frames.len();
        while at > 0 && self.frames[at - 1].ts_ns > frame.ts_ns {
            at -= 1;
        }
        self.frames.insert(at, frame);
        self.first_ts.get_or_insert(p.ts_ns);
        self.recorded += 1;
        self.fresh = true;
        while self.bytes > self.cap_bytes {
            let Some(f) = self.frames.pop_front() else {
                break;
            };
            self.bytes -= footprint(&f);
            self.evicted_by_cap += 1;
        }
    }

    /// The input name findings carry.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn expire(&mut self, now_ns: i64) {
        while self
            .frames
            .front()
            .is_some_and(|f| f.ts_ns < now_ns.saturating_sub(WINDOW_NS))
        {
            if let Some(f) = self.frames.pop_front() {
                self.bytes -= footprint(&f);
            }
        }
    }

    /// Writes the records whose time lies in `window` as a nanosecond pcap (LINUX_SLL2).
    pub fn write_pcap(&self, window: (i64, i64), mut w: impl Write) -> std::io::Result<u64> {
        let mut hdr = Vec::with_capacity(24);
        hdr.extend_from_slice(&0xa1b2_3c4du32.to_le_bytes()); // nanosecond pcap
        hdr.extend_from_slice(&2u16.to_le_bytes());
        hdr.extend_from_slice(&4u16.to_le_bytes());
        hdr.extend_from_slice(&[0u8; 8]);
        hdr.extend_from_slice(&262_144u32.to_le_bytes());
        hdr.extend_from_slice(&LINKTYPE_LINUX_SLL2.to_le_bytes());
        w.write_all(&hdr)?;
        let mut n = 0;
        for f in self
            .frames
            .iter()
            .filter(|f| f.ts_ns >= window.0 && f.ts_ns <= window.1)
        {
            let mut r = Vec::with_capacity(16);
            r.extend_from_slice(&((f.ts_ns.div_euclid(1_000_000_000)) as u32).to_le_bytes());
            r.extend_from_slice(&((f.ts_ns.rem_euclid(1_000_000_000)) as u32).to_le_bytes());
            r.extend_from_slice(&(f.bytes.len() as u32).to_le_bytes());
            r.extend_from_slice(&f.orig_len.max(f.bytes.len() as u32).to_le_bytes());
            w.write_all(&r)?;
            w.write_all(&f.bytes)?;
            n += 1;
        }
        Ok(n)
    }
}

/// The cycles: every namespace's window analysed together, as `analyze` reads several captures of
/// one incident (a packet seen in two namespaces is one packet seen at two points, and a report has
/// one finding per incident), and the cases already announced.
#[derive(Default)]
pub struct Cycles {
    announced: BTreeMap<&'static str, (Confidence, BTreeSet<PacketKey>)>,
}

impl Cycles {
    pub fn new() -> Self {
        Self::default()
    }

    /// Analyses the windows ending `now_ns` (one input per recorder, in this order) with the core and
    /// returns the findings not announced before. `last` = the watch is ending: the window's end is
    /// the capture's end (nothing held).
    pub fn run(
        &mut self,
        recorders: &mut [&mut FlightRecorder],
        now_ns: i64,
        node: &netsleuth_core::node::NodeContext,
        last: bool,
    ) -> (Vec<Announced>, CycleStats) {
        let mut stats = CycleStats::default();
        let mut slid = false;
        for r in recorders.iter_mut() {
            r.fresh = false;
            r.expire(now_ns);
            slid |= r.evicted_by_cap > 0
                || r.frames
                    .front()
                    .zip(r.first_ts)
                    .is_some_and(|(f, t)| f.ts_ns > t);
        }
        let first = recorders
            .iter()
            .filter_map(|r| r.frames.front())
            .map(|f| f.ts_ns)
            .min();
        let end = recorders
            .iter()
            .filter_map(|r| r.frames.back())
            .map(|f| f.ts_ns)
            .max();
        let (Some(first), Some(end)) = (first, end) else {
            return (Vec::new(), stats);
        };
        let window = (first, end);
        let mut engine = Engine::new(
            recorders.iter().map(|r| r.name.clone()).collect(),
            &Limits {
                memory_budget: CYCLE_MEMORY,
            },
        );
        // Merge the inputs by time (ties: input order), as `analyze` merges files.
        let mut next: Vec<usize> = vec![0; recorders.len()];
        let mut heap: BinaryHeap<Reverse<(i64, usize)>> = recorders
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.frames.front().map(|f| Reverse((f.ts_ns, i))))
            .collect();
        while let Some(Reverse((_, i))) = heap.pop() {
            let r = &recorders[i];
            let at = next[i];
            if let Some(f) = r.frames.get(at) {
                engine.push(i as InputId, &record(at, f));
                stats.packets += 1;
            }
            next[i] += 1;
            if let Some(f) = r.frames.get(at + 1) {
                heap.push(Reverse((f.ts_ns, i)));
            }
        }
        let analysis = engine.finish(node);
        let mut out = Vec::new();
        for finding in analysis.findings {
            if NOT_FROM_TAP.iter().any(|(i, _)| i.id == finding.id) {
                stats.excluded += 1;
                continue;
            }
            let keys = packet_keys(&finding);
            if !last && !keys.is_empty() {
                let lo = keys.iter().map(|k| k.0).min().unwrap_or(0);
                let hi = keys.iter().map(|k| k.0).max().unwrap_or(0);
                if hi > now_ns.saturating_sub(SETTLE_NS)
                    || (slid && lo < window.0.saturating_add(EDGE_NS))
                {
                    stats.held += 1;
                    continue;
                }
            }
            let keys = if keys.is_empty() {
                // A finding without packets (never expected of the capture detectors): its summary
                // stands for its case.
                BTreeSet::from([summary_key(&finding)])
            } else {
                keys
            };
            let entry = self
                .announced
                .entry(finding.id)
                .or_insert((Confidence::Possible, BTreeSet::new()));
            let overlaps = !entry.1.is_disjoint(&keys);
            let upgrade = overlaps && finding.confidence > entry.0;
            entry.0 = entry.0.max(finding.confidence);
            entry.1.extend(keys);
            if overlaps && !upgrade {
                continue;
            }
            out.push(Announced {
                finding,
                window,
                upgrade,
            });
        }
        // Keys of packets long gone from the window can never match again.
        let horizon = window.0.saturating_sub(WINDOW_NS);
        for (_, keys) in self.announced.values_mut() {
            keys.retain(|k| k.0 < 0 || k.0 >= horizon);
        }
        stats.findings = out.len();
        (out, stats)
    }
}

fn record(i: usize, f: &Frame) -> Record<'_> {
    Record {
        frame: i as u64 + 1,
        offset: 0,
        ts_ns: f.ts_ns,
        linktype: LINKTYPE_LINUX_SLL2,
        interface: 0,
        orig_len: f.orig_len,
        data: &f.bytes,
    }
}

fn packet_keys(f: &Finding) -> BTreeSet<PacketKey> {
    let mut keys = BTreeSet::new();
    for e in &f.evidence {
        if let Evidence::Packets { frames, .. } = e {
            for r in frames {
                keys.insert((r.ts_ns, r.src, r.src_port, r.dst, r.dst_port));
            }
        }
    }
    keys
}

fn summary_key(f: &Finding) -> PacketKey {
    // A stable stand-in: the summary's hash in the time slot (never a real packet time: those are > 0
    // and this one is negative).
    let h = f.summary.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let ts = -((h >> 1) as i64) - 1;
    (
        ts,
        IpAddr::from([0, 0, 0, 0]),
        0,
        IpAddr::from([0, 0, 0, 0]),
        0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tapped(ts_ns: i64, data: &[u8]) -> TappedPacket<'_> {
        TappedPacket {
            ts_ns,
            ifindex: 2,
            pkttype: 0,
            protocol: 0x0800,
            hatype: 1,
            orig_len: data.len() as u32,
            data,
        }
    }

    /// The cap bounds what the records take in memory, their bookkeeping included, not only their
    /// bytes: small records (control segments) fill it with fewer of them.
    #[test]
    fn the_cap_counts_each_record_with_its_bookkeeping() {
        let cap = 64 << 10;
        let mut r = FlightRecorder::with_cap("tap:test".into(), cap);
        let data = [0u8; 60];
        for i in 0..10_000 {
            r.push(&tapped(i, &data));
        }
        let per_record = SLL2_LEN + data.len() + FRAME_OVERHEAD;
        assert!(FRAME_OVERHEAD >= std::mem::size_of::<Frame>());
        assert_eq!(r.len(), cap / per_record);
        assert!(r.len() * per_record <= cap);
        assert_eq!(r.evicted_by_cap, 10_000 - r.len() as u64);
        // Lowering the cap lets the oldest go at once, by the same count.
        r.set_cap(cap / 2);
        assert_eq!(r.len(), cap / 2 / per_record);
    }
}

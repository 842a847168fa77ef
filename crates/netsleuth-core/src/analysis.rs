//! The analysis loop: records from every input, merged in capture-time order, decoded, fed to the flow
//! engine; finished connections and DNS queries go to the detectors; findings come out.
//!
//! Several inputs are captures of the same incident from different places (a client pod, the client's
//! node, the server's node): a packet seen in two of them is one packet seen at two points.

use crate::capture::{CaptureReader, IdleWork, InMemory, Record};
use crate::detect::neighbour_table_overflow::NeighbourMsg;
use crate::detect::{Context, Detectors};
use crate::finding::{format_ts, sort_findings, Diagnostic, Finding};
use crate::flow::dns::{DnsMessageObs, DnsTracker, FinishedQuery};
use crate::flow::dns_tcp::DnsTcpReassembler;
use crate::flow::tcp::{Conn, Slab, TcpEngine};
use crate::flow::{Endpoint, InputId, PktRef};
use crate::node::NodeContext;
use crate::symptoms::{is_icmp_error, BlindSpot, Symptom, SymptomCollector};
use crate::wire::{self, tcp_flags, DecodeError, Ipv4Tcp, Packet, TcpSegment, Transport};
use serde::Serialize;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::io::Read;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// One capture to analyse: a name for reports and where its bytes come from.
pub struct Input {
    pub name: String,
    pub source: Source,
}

/// Where an input's bytes come from.
pub enum Source {
    /// Read in chunks into a buffer of the reader's own (a pipe, stdin, gzip, a test's bytes).
    Stream(Box<dyn Read + Send>),
    /// Already in memory as a whole (a mapped file): framed in place, without a copy.
    Memory(InMemory),
}

impl Input {
    /// An input read from `reader`.
    pub fn stream(name: impl Into<String>, reader: impl Read + Send + 'static) -> Self {
        Input {
            name: name.into(),
            source: Source::Stream(Box::new(reader)),
        }
    }

    /// An input whose bytes are all in memory.
    pub fn memory(name: impl Into<String>, bytes: InMemory) -> Self {
        Input {
            name: name.into(),
            source: Source::Memory(bytes),
        }
    }
}

/// What was seen, to describe a capture beyond its findings (healthy captures included).
#[derive(Debug, Default, Clone, Serialize)]
pub struct AnalysisStats {
    pub inputs: usize,
    pub records: u64,
    pub bytes: u64,
    pub ip_packets: u64,
    pub non_ip_frames: u64,
    pub undecodable_frames: u64,
    pub tcp_packets: u64,
    pub tcp_copies: u64,
    pub udp_packets: u64,
    pub tcp_connections: u64,
    pub tcp_connections_multi_leg: u64,
    pub tcp_mid_stream_legs: u64,
    pub tcp_peak_live_connections: u64,
    pub tcp_resets: u64,
    /// Resets answering a SYN: a closed port. Healthy.
    pub tcp_resets_closed_port: u64,
    /// RST with ACK from a peer that had the connection: an application abort. Healthy.
    pub tcp_resets_by_application: u64,
    pub tcp_syn_retransmissions: u64,
    pub tcp_data_retransmissions: u64,
    pub dns_queries: u64,
    pub dns_responses: u64,
    pub dns_unanswered: u64,
    pub dns_nxdomain: u64,
    pub dns_retries: u64,
    pub dns_parallel_pairs: u64,
    pub dns_peak_live_queries: u64,
    /// Connections and queries finalised early because their live cap was reached.
    pub tcp_evicted: u64,
    pub dns_evicted: u64,
    /// Records whose timestamp was taken as an outlier and analysed at the analysis clock.
    pub timestamp_outliers: u64,
    /// Capture time covered, nanoseconds.
    pub first_ts_ns: Option<i64>,
    pub last_ts_ns: Option<i64>,
}

#[derive(Debug, Default, Clone)]
pub struct Analysis {
    pub findings: Vec<Finding>,
    pub diagnostics: Vec<Diagnostic>,
    pub stats: AnalysisStats,
    /// Inputs that could not be opened at all, with why.
    pub failed_inputs: Vec<(String, String)>,
    /// What the input shows whatever its cause, and what the catalogue made of it.
    pub symptoms: Vec<Symptom>,
    /// What the input could not show.
    pub blind_spots: Vec<BlindSpot>,
    /// How many times the two-thread pipeline moved the detectors between its threads, as the rate
    /// of finished connections asked (0 on one thread). Not part of any report: it depends on the
    /// threads, which the findings never do.
    pub detector_moves: u32,
    /// The most calls the two-thread pipeline held at once for the detectors on the reading thread
    /// (finished connections and queries, each with its record), which its memory bound limits (0
    /// on one thread). Not part of any report either.
    pub peak_held_calls: usize,
    /// Where the wall time went. Measured, so it differs from run to run: never part of a report.
    pub timings: Timings,
}

/// Where an analysis's wall time went (`netsleuth analyze --timings`): what to read before
/// choosing `--threads`, and where a faster analysis would have to come from.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timings {
    /// From the first record read to the last packet analysed (zero when the analysis was pushed
    /// record by record, `Engine`, whose caller has the clock).
    pub packets: Duration,
    /// With two threads (the analysis ran on one without them): how each half spent `packets`.
    pub halves: Option<Halves>,
    /// After the last packet: the connections and DNS queries still live finished, and the
    /// detectors' conclusions.
    pub finish: Duration,
}

/// The two-thread pipeline's halves over the packets: each one's time working and waiting for the
/// other. The busier half bounds the run; the other half's wait is what a better balance could use.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Halves {
    /// The reading thread: framing, decoding, the packets' compact forms, and the detectors while
    /// they run there. It waits on a full queue to the back, and at the end for the back's last
    /// batches.
    pub reading: HalfTime,
    /// The back: the flow engine across NAT legs, DNS, and the detectors while they run there. It
    /// waits on an empty queue, and for the detectors it asked the reading thread for.
    pub back: HalfTime,
    /// Of the back's waiting, the time it spent on the inputs' idle work: faulting in a mapped
    /// capture's next pages for the reading thread (`InMemory::idle`).
    pub back_idle_work: Duration,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HalfTime {
    pub busy: Duration,
    pub waited: Duration,
}

impl Analysis {
    pub fn has_incident(&self) -> bool {
        self.findings
            .iter()
            .any(|f| f.kind == crate::finding::FindingKind::Incident)
    }
}

/// What one analysis may use. Every piece of per-flow and per-query state is capped from the memory
/// budget; past a cap the oldest (half-open, never answered) entries are finalised early, counted, and
/// reported as a `state-cap` diagnostic, so a flood costs a bounded window and is still seen whole by
/// the detectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes the analysis state may use (flow tables, DNS window, read buffers, detector state).
    pub memory_budget: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_budget: Limits::DEFAULT_MEMORY_BUDGET,
        }
    }
}

impl Limits {
    pub const DEFAULT_MEMORY_BUDGET: usize = 200 << 20;
    /// Measured cost of one live connection (the record, its legs, SYN and RST evidence, its index
    /// entries and their share of the tables' spare capacity): see BENCHMARKS.md "Hostile input".
    const CONNECTION_COST: usize = 3 << 10;
    /// Measured cost of one live DNS query (the record, its name, four index entries).
    const QUERY_COST: usize = 3 << 10;

    /// Live TCP connections: 40 % of the budget.
    pub fn max_live_connections(&self) -> usize {
        (self.memory_budget / 10 * 4 / Self::CONNECTION_COST).max(1024)
    }

    /// Live DNS queries: 30 % of the budget.
    pub fn max_live_dns_queries(&self) -> usize {
        (self.memory_budget / 10 * 3 / Self::QUERY_COST).max(1024)
    }

    /// Distinct keys (servers, source/server pairs) each detector keeps: 20 % of the budget at ~640 B
    /// a key over all detectors, at most `detect::MAX_KEYS` (measured: a 1 M-SYN flood from distinct
    /// sources peaks at 33 / 61 / 86 / 163 MB with budgets of 32 / 64 / 100 / 200 MiB).
    pub fn max_detector_keys(&self) -> usize {
        (self.memory_budget / 5 / 640).clamp(1024, crate::detect::MAX_KEYS)
    }

    /// Read buffer per input: 10 % of the budget shared by the inputs (64 KiB to 4 MiB each).
    pub fn input_buffer(&self, inputs: usize) -> usize {
        self.memory_budget / 10 / inputs.max(1)
    }
}

/// Analyse captures of one incident together. Never fails as a whole: an input that cannot be opened
/// is reported in `failed_inputs`, damaged records become diagnostics, the rest is analysed.
pub fn analyze(inputs: Vec<Input>, node: &NodeContext) -> Analysis {
    analyze_with(inputs, node, &Limits::default())
}

/// `analyze` within the given limits, on one thread (the reference the pipeline is tested against).
pub fn analyze_with(inputs: Vec<Input>, node: &NodeContext, limits: &Limits) -> Analysis {
    analyze_threads(inputs, node, limits, 1)
}

/// `analyze` on up to `threads` threads. With two or more, reading, framing and decoding run on one
/// thread and the flow engine and DNS tracking on another, the detectors on the first while
/// connections end at the pace of real traffic and on the second while they end at the packet rate
/// (`pipeline`); the second sees exactly the packets, in exactly the order, that the one-thread run
/// gives it, and each detector its calls, so the findings are the same byte for byte. More than two
/// threads give nothing more yet: the work after decoding is one ordered stream (NAT legs join
/// connections across tuples, so it cannot be split by flow).
pub fn analyze_threads(
    inputs: Vec<Input>,
    node: &NodeContext,
    limits: &Limits,
    threads: usize,
) -> Analysis {
    let names: Vec<String> = inputs.iter().map(|i| i.name.clone()).collect();
    let Engine {
        mut front,
        mut back,
    } = Engine::new(names.clone(), limits);
    let mut readers = Vec::new();
    let mut failed = Vec::new();
    let buffer = limits.input_buffer(inputs.len());
    let mut idle_work = Vec::new();
    for (idx, input) in inputs.into_iter().enumerate() {
        let opened = match input.source {
            Source::Stream(reader) => CaptureReader::new(reader, input.name.clone()),
            Source::Memory(mut bytes) => {
                idle_work.extend(bytes.idle.take());
                let none: Box<dyn Read + Send> = Box::new(std::io::empty());
                CaptureReader::in_memory(bytes, none, input.name.clone())
            }
        };
        match opened {
            Ok(mut r) => {
                r.set_working_buffer(buffer);
                readers.push((idx as InputId, r))
            }
            Err(e) => failed.push((input.name, e.to_string())),
        }
    }
    let mut queued = None;
    let mut halves = None;
    let started = Instant::now();
    if threads >= 2 && !readers.is_empty() {
        let (b, q, h) = pipeline::run(&mut front, back, readers, &idle_work);
        (back, queued, halves) = (b, q, Some(h));
    } else {
        feed(&mut front, &mut back, readers);
        front.flush_held(&mut back);
    }
    let packets = started.elapsed();
    let mut analysis = finish_parts(front, back, queued, node, threads);
    analysis.timings = Timings {
        packets,
        halves,
        finish: started.elapsed() - packets,
    };
    analysis.failed_inputs = failed;
    analysis.stats.inputs = names.len();
    analysis
}

/// Every record of every reader through the front into `sink`, in capture-time order.
fn feed<R: Read, S: PacketSink>(
    front: &mut Front,
    sink: &mut S,
    mut readers: Vec<(InputId, CaptureReader<R>)>,
) {
    if readers.len() == 1 {
        // The common case, kept zero-copy: no merge needed.
        let (idx, mut r) = readers.pop().expect("one reader");
        while let Some(rec) = r.next_record() {
            front.push(idx, &rec, sink);
        }
        front.diagnostics.extend(r.diagnostics());
    } else if !readers.is_empty() {
        merge(front, sink, readers);
    }
}

/// k-way merge by capture timestamp: each step takes the record of the input whose next record is
/// the earliest (ties go to the earlier input), so packets seen in several captures meet in time order.
/// A heap keyed by (next timestamp, input) makes each step O(log inputs).
fn merge<R: Read, S: PacketSink>(
    front: &mut Front,
    sink: &mut S,
    mut readers: Vec<(InputId, CaptureReader<R>)>,
) {
    let mut heap: BinaryHeap<Reverse<(i64, usize)>> = BinaryHeap::with_capacity(readers.len());
    for (i, (_, r)) in readers.iter_mut().enumerate() {
        if let Some(ts) = r.peek_ts() {
            heap.push(Reverse((ts, i)));
        }
    }
    while let Some(Reverse((_, i))) = heap.pop() {
        let (idx, r) = &mut readers[i];
        if let Some(rec) = r.next_record() {
            front.push(*idx, &rec, sink);
        }
        if let Some(ts) = r.peek_ts() {
            heap.push(Reverse((ts, i)));
        }
    }
    for (_, r) in &readers {
        front.diagnostics.extend(r.diagnostics());
    }
}

/// Forward jumps in capture time longer than this are held back one record: a jump the next record
/// confirms is real (a long idle), one it contradicts is a single outlying timestamp.
const SUSPECT_JUMP_NS: i64 = 10_000_000_000;
/// A record this far behind the analysis clock is taken as damaged and analysed at the clock.
const MAX_BACKWARD_NS: i64 = 3_600_000_000_000;
/// A jump no later record could confirm (the input's last record) is accepted up to this.
const MAX_UNCONFIRMED_JUMP_NS: i64 = 7 * 86_400_000_000_000;

/// A record held back because its timestamp jumped ahead (its bytes copied; rare).
struct HeldRecord {
    input: InputId,
    frame: u64,
    offset: u64,
    ts_ns: i64,
    linktype: u32,
    interface: u32,
    orig_len: u32,
    data: Vec<u8>,
}

impl HeldRecord {
    fn as_record(&self) -> Record<'_> {
        Record {
            frame: self.frame,
            offset: self.offset,
            ts_ns: self.ts_ns,
            linktype: self.linktype,
            interface: self.interface,
            orig_len: self.orig_len,
            data: &self.data,
        }
    }
}

/// Aggregates decode problems per (input, code): the first location and a count.
#[derive(Default)]
struct DecodeProblems {
    by_key: BTreeMap<(InputId, &'static str), Diagnostic>,
}

impl DecodeProblems {
    fn add(
        &mut self,
        input: InputId,
        source: &str,
        code: &'static str,
        frame: u64,
        offset: u64,
        msg: impl FnOnce() -> String,
    ) {
        self.by_key
            .entry((input, code))
            .and_modify(|d| d.count += 1)
            .or_insert_with(|| Diagnostic {
                source: source.to_string(),
                code,
                offset: Some(offset),
                frame: Some(frame),
                line: None,
                count: 1,
                message: msg(),
            });
    }
}

/// The sans-IO analysis engine: push capture records in capture-time order (time comes in the
/// record, never from the clock), then `finish` for the findings. `analyze` is a loop over it.
///
/// It is two halves: the `Front` keeps the analysis clock and decodes; the `Back` follows flows and
/// DNS and runs the detectors. One thread runs both here; `analyze_threads` runs them on two.
pub struct Engine {
    front: Front,
    back: Back,
}

impl Engine {
    /// An engine for inputs named `names` (indexed by `InputId`).
    pub fn new(names: Vec<String>, limits: &Limits) -> Self {
        let names_len = names.len();
        Engine {
            back: Back {
                names: names.clone(),
                tcp: TcpEngine::with_max_live(limits.max_live_connections()),
                dns: DnsTracker::with_max_live(limits.max_live_dns_queries()),
                dns_tcp: DnsTcpReassembler::new(),
                detectors: DetectorSink::Direct(Detectors::with_max_keys(
                    limits.max_detector_keys(),
                )),
                stats: AnalysisStats::default(),
                qname: String::new(),
                symptoms: SymptomCollector::default(),
                handed: 0,
                detector_moves: 0,
                peak_held_calls: 0,
            },
            front: Front {
                names,
                stats: AnalysisStats::default(),
                problems: DecodeProblems::default(),
                diagnostics: Vec::new(),
                cur_offset: 0,
                clock: None,
                held: None,
                snaplen_cuts: vec![0; names_len],
            },
        }
    }

    /// One capture record of input `input`. Records must come in capture-time order across inputs;
    /// a timestamp far from its neighbours (a damaged record, a clock jump, an interface's
    /// `if_tsoffset`) is analysed at the clock instead and reported, so one outlier cannot stop expiry
    /// or change what is found.
    pub fn push(&mut self, input: InputId, rec: &Record<'_>) {
        self.front.push(input, rec, &mut self.back);
    }

    /// End of input: finalise every connection and query and run the detectors.
    pub fn finish(self, node: &NodeContext) -> Analysis {
        let Engine {
            mut front,
            mut back,
        } = self;
        front.flush_held(&mut back);
        finish_parts(front, back, None, node, 1)
    }
}

/// Where the front hands each decoded packet: the back itself, or the pipeline's queue to it.
pub(crate) trait PacketSink {
    fn packet(&mut self, input: InputId, frame: u64, ts: i64, interface: u32, pkt: &Packet<'_>);

    /// A frame the fast path decoded (nearly every frame of a node capture): the same as `packet`
    /// with `seg.to_packet()`, without building that packet.
    fn ipv4_tcp(&mut self, input: InputId, frame: u64, ts: i64, interface: u32, seg: &Ipv4Tcp<'_>);
}

/// The engine's first half: the monotone analysis clock, decoding, and what decoding found wrong.
/// Its `stats` are the record-level ones (records, bytes, time span, IP/non-IP/undecodable).
struct Front {
    names: Vec<String>,
    stats: AnalysisStats,
    problems: DecodeProblems,
    diagnostics: Vec<Diagnostic>,
    /// Byte offset of the record being processed, for locating decode problems.
    cur_offset: u64,
    /// The analysis clock: the latest accepted capture time. Monotone; expiry runs on it.
    clock: Option<i64>,
    /// A record whose timestamp jumped ahead, waiting for the next record to confirm the jump.
    held: Option<HeldRecord>,
    /// Packets cut by the snap length per input (the diagnostic is made at the first, counted here).
    snaplen_cuts: Vec<u64>,
}

/// The engine's second half: TCP connections across NAT legs, DNS transactions, symptoms and the
/// detectors. Its `stats` are the packet-level ones.
struct Back {
    names: Vec<String>,
    tcp: TcpEngine,
    dns: DnsTracker,
    dns_tcp: DnsTcpReassembler,
    detectors: DetectorSink,
    stats: AnalysisStats,
    qname: String,
    symptoms: SymptomCollector,
    /// Finished connections and DNS queries handed to the detectors so far: the rate by which the
    /// pipeline places the detectors (`pipeline::Placement`).
    handed: u64,
    /// Moves of the detectors between the pipeline's threads (`Analysis::detector_moves`).
    detector_moves: u32,
    /// `Analysis::peak_held_calls`.
    peak_held_calls: usize,
}

impl Front {
    /// One capture record of input `input`. Records must come in capture-time order across inputs;
    /// a timestamp far from its neighbours (a damaged record, a clock jump, an interface's
    /// `if_tsoffset`) is analysed at the clock instead and reported, so one outlier cannot stop expiry
    /// or change what is found.
    #[inline(always)]
    fn push<S: PacketSink>(&mut self, input: InputId, rec: &Record<'_>, sink: &mut S) {
        if let Some(held) = self.held.take() {
            let (confirmed, instead) = match self.clock {
                // The first record: confirmed unless the second lies far before it.
                None => (
                    rec.ts_ns >= held.ts_ns.saturating_sub(SUSPECT_JUMP_NS),
                    rec.ts_ns,
                ),
                // A jump: confirmed when the next record is nearer the new time than the clock.
                Some(clock) => {
                    let half = ((held.ts_ns as i128 - clock as i128) / 2) as i64;
                    (rec.ts_ns >= clock.saturating_add(half), clock)
                }
            };
            let ts = if confirmed {
                held.ts_ns
            } else {
                self.outlier(&held.as_record(), held.input, instead)
            };
            self.clock = Some(self.clock.map_or(ts, |c| c.max(ts)));
            self.record(held.input, &held.as_record(), ts, sink);
        }
        let Some(clock) = self.clock else {
            // The very first record: nothing to compare with yet; the next one confirms it.
            self.hold(input, rec);
            return;
        };
        if rec.ts_ns > clock.saturating_add(SUSPECT_JUMP_NS) {
            self.hold(input, rec);
            return;
        }
        let ts = if rec.ts_ns < clock.saturating_sub(MAX_BACKWARD_NS) {
            self.outlier(rec, input, clock)
        } else {
            rec.ts_ns
        };
        self.clock = Some(clock.max(ts));
        self.record(input, rec, ts, sink);
    }

    fn hold(&mut self, input: InputId, rec: &Record<'_>) {
        self.held = Some(HeldRecord {
            input,
            frame: rec.frame,
            offset: rec.offset,
            ts_ns: rec.ts_ns,
            linktype: rec.linktype,
            interface: rec.interface,
            orig_len: rec.orig_len,
            data: rec.data.to_vec(),
        });
    }

    /// End of input: a record still held is the last one; its jump is accepted unless absurd.
    fn flush_held<S: PacketSink>(&mut self, sink: &mut S) {
        if let Some(held) = self.held.take() {
            let ts = match self.clock {
                None => held.ts_ns,
                Some(clock) if held.ts_ns <= clock.saturating_add(MAX_UNCONFIRMED_JUMP_NS) => {
                    held.ts_ns
                }
                Some(clock) => self.outlier(&held.as_record(), held.input, clock),
            };
            self.clock = Some(self.clock.map_or(ts, |c| c.max(ts)));
            self.record(held.input, &held.as_record(), ts, sink);
        }
    }

    /// Report a timestamp taken as an outlier; returns the time it is analysed at.
    fn outlier(&mut self, rec: &Record<'_>, input: InputId, clock: i64) -> i64 {
        let name = &self.names[input as usize];
        let (frame, ts) = (rec.frame, rec.ts_ns);
        self.problems
            .add(input, name, "timestamp-outlier", frame, rec.offset, || {
                format!(
                    "frame {frame}: timestamp {} is far from the packets around it (a damaged record, a clock jump or an interface's if_tsoffset); analysed as if at {}",
                    format_ts(ts),
                    format_ts(clock)
                )
            });
        clock
    }

    #[inline(always)]
    fn record<S: PacketSink>(&mut self, input: InputId, rec: &Record<'_>, ts: i64, sink: &mut S) {
        self.cur_offset = rec.offset;
        let (frame, linktype, interface, data, orig_len) = (
            rec.frame,
            rec.linktype,
            rec.interface,
            rec.data,
            rec.orig_len,
        );
        self.stats.records += 1;
        self.stats.bytes += data.len() as u64;
        if self.stats.first_ts_ns.is_none() {
            self.stats.first_ts_ns = Some(ts);
        }
        self.stats.last_ts_ns = Some(ts.max(self.stats.last_ts_ns.unwrap_or(ts)));
        // Nearly every frame of a node capture: `decode` would give `seg.to_packet()`.
        if let Some(seg) = wire::decode_ipv4_tcp(linktype, data) {
            if seg.truncated {
                self.snaplen_cut(input, frame, data.len());
            }
            self.stats.ip_packets += 1;
            sink.ipv4_tcp(input, frame, ts, interface, &seg);
            return;
        }
        // Borrowed where `decode` left it: moving the ~180-byte packet out of the `Result` was a
        // `memcpy` per packet, 5 % of the analysis of a small-snaplen capture.
        let decoded = wire::decode_layered(linktype, data);
        let pkt = match &decoded {
            Ok(p) => p,
            Err(e) => {
                let e = *e;
                self.decode_error(input, frame, e, data.len(), orig_len);
                // ARP is the one non-IP protocol a detector reads (neighbour-table-overflow): only
                // frames already found not to be IP are looked at again.
                if let DecodeError::NotIp { ethertype: 0x0806 } = e {
                    if let Some(arp) = wire::decode_arp(linktype, data) {
                        sink.packet(input, frame, ts, interface, &arp);
                    }
                }
                return;
            }
        };
        if pkt.truncated {
            self.snaplen_cut(input, frame, data.len());
        }
        self.stats.ip_packets += 1;
        sink.packet(input, frame, ts, interface, pkt);
    }

    /// A packet cut by the snap length. Per packet on a snaplen capture: after the first, only a
    /// counter (no map lookup).
    #[inline(always)]
    fn snaplen_cut(&mut self, input: InputId, frame: u64, captured: usize) {
        match self.snaplen_cuts.get_mut(input as usize) {
            Some(n) if *n > 0 => *n += 1,
            _ => self.first_snaplen_cut(input, frame, captured),
        }
    }

    #[cold]
    #[inline(never)]
    fn first_snaplen_cut(&mut self, input: InputId, frame: u64, captured: usize) {
        let name = &self.names[input as usize];
        self.problems
            .add(input, name, "snaplen-cut", frame, self.cur_offset, || {
                // Normal for `tcpdump -s N`: one info line, not a problem (the renderers tell it
                // from damage by its code).
                format!("captured with snaplen {captured}: headers complete")
            });
        if let Some(n) = self.snaplen_cuts.get_mut(input as usize) {
            *n = 1;
        }
    }

    fn decode_error(
        &mut self,
        input: InputId,
        frame: u64,
        e: DecodeError,
        caplen: usize,
        orig_len: u32,
    ) {
        let name = &self.names[input as usize];
        match e {
            DecodeError::NotIp { .. } => self.stats.non_ip_frames += 1,
            DecodeError::UnsupportedLinkType(lt) => {
                self.stats.undecodable_frames += 1;
                self.problems.add(input, name, "unsupported-linktype", frame, self.cur_offset, || {
                    format!("frame {frame}: link type {lt} is not decoded (supported: Ethernet, Linux SLL/SLL2, raw IP, BSD loopback); its frames are counted, not analysed")
                });
            }
            DecodeError::Truncated { layer, offset } => {
                self.stats.undecodable_frames += 1;
                // A header cut by the snap length is not analysed: a problem, unlike a cut payload.
                let code = if (caplen as u32) < orig_len {
                    "snaplen-header-cut"
                } else {
                    "truncated-packet"
                };
                self.problems.add(input, name, code, frame, self.cur_offset, || {
                    format!("frame {frame}: ends inside the {layer:?} header at byte {offset} ({caplen} of {orig_len} bytes captured)")
                });
            }
            DecodeError::Malformed {
                layer,
                offset,
                what,
            } => {
                self.stats.undecodable_frames += 1;
                self.problems.add(
                    input,
                    name,
                    "malformed-packet",
                    frame,
                    self.cur_offset,
                    || format!("frame {frame}: damaged {layer:?} header at byte {offset}: {what}"),
                );
            }
        }
    }
}

impl Back {
    /// Whether `packet` reads the payload of a packet between these ports (only DNS's): the pipeline
    /// copies those payloads across threads and no others.
    #[inline]
    pub(crate) fn reads_payload(src_port: u16, dst_port: u16) -> bool {
        src_port == 53 || dst_port == 53
    }
}

impl PacketSink for Back {
    #[inline]
    fn packet(&mut self, input: InputId, frame: u64, ts: i64, interface: u32, pkt: &Packet<'_>) {
        let ifindex = packet_ifindex(pkt.link.ifindex, interface);
        // The same packet reference for TCP and UDP; UDP has no flags or sequence numbers.
        let pkt_ref =
            |src_port: u16, dst_port: u16, flags: u8, len: u32, seq: u32, ack: u32| PktRef {
                input,
                frame,
                ts_ns: ts,
                src: Endpoint {
                    ip: pkt.ip.src,
                    port: src_port,
                },
                dst: Endpoint {
                    ip: pkt.ip.dst,
                    port: dst_port,
                },
                flags,
                len,
                seq,
                ack,
                ifindex,
            };
        // Tunnel packets only (VXLAN, Geneve): their outer UDP checksum, verified at decapsulation.
        if let Some(tunnel) = pkt.tunnel.as_ref().filter(|t| t.udp.is_some()) {
            self.tunnel_packet(pkt, tunnel, pkt_ref);
        }
        match &pkt.transport {
            Transport::Tcp(seg) => {
                let r = pkt_ref(
                    seg.src_port,
                    seg.dst_port,
                    seg.flags,
                    seg.payload_len,
                    seg.seq,
                    seg.ack,
                );
                self.tcp_segment(r, pkt.ip.ident, pkt.ip.ttl, seg);
            }
            Transport::Udp(d) => {
                self.stats.udp_packets += 1;
                if d.src_port == 53 || d.dst_port == 53 {
                    let r = pkt_ref(d.src_port, d.dst_port, 0, d.payload_len, 0, 0);
                    if !self.dns_message(r, pkt.ip.ident, false, d.payload) && pkt.truncated {
                        self.symptoms.dns_payload_cut();
                    }
                }
            }
            Transport::Icmp {
                v6,
                icmp_type,
                code,
            } => {
                if is_icmp_error(*v6, *icmp_type) {
                    let r = pkt_ref(0, 0, 0, 0, 0, 0);
                    self.symptoms
                        .icmp_error(r, *v6, pkt.ip.ident, *icmp_type, *code);
                    self.detectors.icmp_error(r, *v6, *icmp_type, *code);
                } else if *v6 {
                    if let Some(msg) = NeighbourMsg::of_nd(*icmp_type) {
                        self.detectors.neighbour(pkt_ref(0, 0, 0, 0, 0, 0), msg);
                    }
                }
            }
            Transport::Arp(op) => {
                if let Some(msg) = NeighbourMsg::of_arp(*op) {
                    self.detectors.neighbour(pkt_ref(0, 0, 0, 0, 0, 0), msg);
                }
            }
            Transport::Other => {}
        }
    }

    #[inline(always)]
    fn ipv4_tcp(&mut self, input: InputId, frame: u64, ts: i64, interface: u32, seg: &Ipv4Tcp<'_>) {
        let tcp = &seg.tcp;
        let r = PktRef {
            input,
            frame,
            ts_ns: ts,
            src: Endpoint {
                ip: IpAddr::V4(seg.src),
                port: tcp.src_port,
            },
            dst: Endpoint {
                ip: IpAddr::V4(seg.dst),
                port: tcp.dst_port,
            },
            flags: tcp.flags,
            len: tcp.payload_len,
            seq: tcp.seq,
            ack: tcp.ack,
            ifindex: packet_ifindex(seg.link.ifindex, interface),
        };
        self.tcp_segment(r, seg.ident, seg.ttl, tcp);
    }
}

/// The interface a packet was seen on: the link layer's (SLL2's ifindex), else the capture's (a
/// pcapng interface number), unless neither names one.
#[inline(always)]
fn packet_ifindex(link: Option<u32>, interface: u32) -> Option<u32> {
    link.or(Some(interface))
        .filter(|_| link.is_some() || interface != 0)
}

impl Back {
    /// A TCP segment (outside a tunnel, or the tunnel already seen to), as `packet` hands it on; the
    /// pipeline calls the flow engine directly for the segments it carries compact (never DNS's).
    #[inline(always)]
    fn tcp_segment(&mut self, r: PktRef, ident: u16, ttl: u8, seg: &TcpSegment<'_>) {
        self.stats.tcp_packets += 1;
        let outcome = self.tcp.packet(&r, ident, ttl, || seg.options.timestamp());
        if !outcome.copy
            && (seg.src_port == 53 || seg.dst_port == 53)
            && (seg.payload_len > 0
                || seg.flags & (tcp_flags::FIN | tcp_flags::RST | tcp_flags::SYN) != 0)
        {
            for m in self.dns_tcp.push(r.src, r.dst, seg, r.frame) {
                self.dns_message(r, ident, true, &m.bytes);
            }
        }
        self.drain_tcp();
    }

    #[cold]
    #[inline(never)]
    fn tunnel_packet(
        &mut self,
        pkt: &Packet<'_>,
        tunnel: &wire::Tunnel,
        pkt_ref: impl Fn(u16, u16, u8, u32, u32, u32) -> PktRef,
    ) {
        let r = match &pkt.transport {
            Transport::Tcp(s) => {
                pkt_ref(s.src_port, s.dst_port, s.flags, s.payload_len, s.seq, s.ack)
            }
            Transport::Udp(d) => pkt_ref(d.src_port, d.dst_port, 0, d.payload_len, 0, 0),
            _ => pkt_ref(0, 0, 0, 0, 0, 0),
        };
        if let Some(udp) = tunnel.udp {
            self.symptoms.tunnel_checksum(udp.checksum);
        }
        self.detectors.tunnel_udp(r, *tunnel, pkt.link.direction);
    }

    /// Returns whether the bytes were a DNS message with a question.
    fn dns_message(&mut self, r: PktRef, ident: u16, tcp: bool, bytes: &[u8]) -> bool {
        let Ok(msg) = wire::dns::parse(bytes) else {
            return false;
        };
        let Some(q) = &msg.question else { return false };
        if msg.header.opcode != 0 {
            return true;
        }
        let counts = if msg.header.qr {
            msg.answer_counts()
        } else {
            Default::default()
        };
        self.qname.clear();
        self.qname.push_str(&q.name);
        if msg.header.qr && msg.header.rcode == 3 {
            self.stats.dns_nxdomain += 1;
        }
        let obs = DnsMessageObs {
            pkt: r,
            ip_ident: ident,
            tcp,
            id: msg.header.id,
            response: msg.header.qr,
            rcode: msg.header.rcode,
            qname: &self.qname,
            qtype: q.qtype,
            answers: msg.header.ancount,
            answers_a: counts.a,
            answers_aaaa: counts.aaaa,
            truncated: msg.header.qr && msg.header.tc,
        };
        self.dns.message(&obs);
        self.stats.dns_peak_live_queries = self
            .stats
            .dns_peak_live_queries
            .max(self.dns.live_queries() as u64);
        self.drain_dns();
        true
    }

    #[inline(always)]
    fn drain_tcp(&mut self) {
        if self.tcp.has_finished() {
            self.drain_finished_tcp();
        }
    }

    #[inline(never)]
    fn drain_finished_tcp(&mut self) {
        let (stats, symptoms, detectors, handed) = (
            &mut self.stats,
            &mut self.symptoms,
            &mut self.detectors,
            &mut self.handed,
        );
        self.tcp.drain_finished(|c| {
            *handed += 1;
            Self::finished_connection(stats, symptoms, detectors, c)
        });
    }

    /// A finished connection to the figures, the symptoms and the detectors (fields, not `self`: the
    /// connection is borrowed from the flow engine).
    fn finished_connection(
        stats: &mut AnalysisStats,
        symptoms: &mut SymptomCollector,
        detectors: &mut DetectorSink,
        c: &mut Option<Conn>,
    ) {
        let Some(conn) = c.as_ref() else { return };
        conn_stats(stats, conn);
        symptoms.connection(conn);
        detectors.connection(c);
    }

    fn drain_dns(&mut self) {
        // The fields apart, so that the queries go to the detectors as they leave the tracker,
        // not gathered first (a copy of every finished query at once).
        let Back {
            dns,
            stats: s,
            symptoms,
            detectors,
            handed,
            ..
        } = self;
        for q in dns.drain_finished() {
            *handed += 1;
            if q.query.response.is_none() {
                s.dns_unanswered += 1;
            }
            if q.query.is_retry {
                s.dns_retries += 1;
            }
            if q.younger_sibling.is_some() {
                s.dns_parallel_pairs += 1;
            }
            symptoms.dns(&q);
            detectors.dns(q);
        }
    }
}

fn conn_stats(s: &mut AnalysisStats, c: &Conn) {
    {
        if c.legs.len() > 1 {
            s.tcp_connections_multi_leg += 1;
        }
        s.tcp_resets += c.rst_count as u64;
        for r in &c.rsts {
            if !c.established && c.synack.is_none() && !r.from_client {
                s.tcp_resets_closed_port += 1;
            } else if r.pkt.flags & tcp_flags::ACK != 0 {
                s.tcp_resets_by_application += 1;
            }
        }
        s.tcp_syn_retransmissions += c.syn_transmissions.saturating_sub(1) as u64;
        s.tcp_data_retransmissions += c.data_retransmissions as u64;
    }
}

impl Back {
    /// What the caps cost the analysis, if any was reached.
    fn cap_diagnostics(&mut self) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        let ts = self.tcp.stats;
        let evicted = ts.evicted_half_open + ts.evicted_established;
        self.stats.tcp_evicted = evicted;
        if let Some(at) = ts.cap_reached_at.filter(|_| evicted > 0) {
            out.push(Diagnostic {
                source: self.names.get(at.input as usize).cloned().unwrap_or_default(),
                code: "state-cap",
                offset: None,
                frame: Some(at.frame),
                line: None,
                count: evicted,
                message: format!(
                    "state cap reached at frame {}: more than {} connections live at once; {} connection(s) without a completed handshake and {} established one(s) were handed to the detectors early (oldest without a handshake first). SYN floods and unanswered SYNs are still counted, so listen-queue-overflow and the other SYN-drop causes are still decided; a SYN retransmitted after its connection was handed over starts a new record. Raise the budget with --memory-budget to keep more.",
                    at.frame, self.tcp.max_live(), ts.evicted_half_open, ts.evicted_established
                ),
            });
        }
        let ds = self.dns.stats;
        self.stats.dns_evicted = ds.evicted;
        if let Some(at) = ds.cap_reached_at.filter(|_| ds.evicted > 0) {
            out.push(Diagnostic {
                source: self.names.get(at.input as usize).cloned().unwrap_or_default(),
                code: "state-cap",
                offset: None,
                frame: Some(at.frame),
                line: None,
                count: ds.evicted,
                message: format!(
                    "DNS state cap reached at frame {}: more than {} queries in the 30 s window; {} queries ({} unanswered so far) were handed to the detectors before their 30 s (oldest first). A response arriving after its query was handed over is counted as unmatched. Raise the budget with --memory-budget to keep more.",
                    at.frame, self.dns.max_live(), ds.evicted, ds.evicted_unanswered
                ),
            });
        }
        if ts.endpoint_scans_cut > 0 {
            out.push(Diagnostic {
                source: self.names.join(", "),
                code: "state-cap",
                offset: None,
                frame: None,
                line: None,
                count: ts.endpoint_scans_cut,
                message: format!(
                    "{} segment(s) seen under a new tuple were compared with only the newest {} connections of their client endpoint (more were live): a NAT re-translation among the older ones could be missed",
                    ts.endpoint_scans_cut,
                    crate::flow::tcp::MAX_ENDPOINT_CANDIDATES
                ),
            });
        }
        out
    }
}

/// Where the back hands what the detectors see: to them directly (one thread), or, in the
/// `pipeline`, to a few directly and queued in order for the others, which run on the reading
/// thread. Either way each detector sees the same calls in the same order.
enum DetectorSink {
    Direct(Detectors),
    /// `on_back`: the detectors that run here, beside the flow engine
    /// (`pipeline::ON_THE_BACK`); `events`: the calls for the others, queued.
    Queued {
        on_back: Detectors,
        events: Vec<DetectorEvent>,
        /// Boxes of connections the reading thread is done with, emptied, for the next ones (a
        /// finished connection is ~1.2 KB): no malloc and free of a box for each.
        // The boxes are the point: each is an allocation handed over to an event and back.
        #[allow(clippy::vec_box)]
        spare: Vec<Box<Option<Conn>>>,
    },
}

/// Most emptied connection boxes kept for reuse (~1.2 KB each): more than a burst of finished
/// connections in one batch usually holds.
const SPARE_CONNECTIONS: usize = 2048;

/// One call to the detectors, queued. Every variant's payload is boxed, so a call is 16 bytes in
/// the batches' queues of calls, which keep their capacity: with a packet reference inline it was
/// 136, and the queues of a SYN flood's batches (thousands of calls each) held megabytes.
enum DetectorEvent {
    /// Always `Some`; the box goes back to the back's spares emptied.
    Connection(Box<Option<Conn>>),
    TunnelUdp(Box<(PktRef, wire::Tunnel, Option<wire::PacketDirection>)>),
    IcmpError(Box<(PktRef, bool, u8, u8)>),
    Neighbour(Box<(PktRef, NeighbourMsg)>),
    Dns(Box<FinishedQuery>),
}

const _: () = assert!(std::mem::size_of::<DetectorEvent>() == 16);

impl DetectorEvent {
    fn apply(&self, d: &mut Detectors) {
        match self {
            DetectorEvent::Connection(c) => {
                if let Some(c) = c.as_ref() {
                    d.connection(c)
                }
            }
            DetectorEvent::TunnelUdp(e) => d.tunnel_udp(&e.0, &e.1, e.2),
            DetectorEvent::IcmpError(e) => d.icmp_error(&e.0, e.1, e.2, e.3),
            DetectorEvent::Neighbour(e) => d.neighbour(&e.0, e.1),
            DetectorEvent::Dns(q) => d.dns(q),
        }
    }
}

impl DetectorSink {
    #[inline]
    fn send(&mut self, event: impl FnOnce() -> DetectorEvent, direct: impl FnOnce(&mut Detectors)) {
        match self {
            DetectorSink::Direct(d) => direct(d),
            DetectorSink::Queued {
                on_back, events, ..
            } => {
                direct(on_back);
                events.push(event());
            }
        }
    }
    /// A finished connection where the flow engine keeps it: read in place by detectors on this
    /// thread, taken to be sent to another.
    fn connection(&mut self, c: &mut Option<Conn>) {
        match self {
            DetectorSink::Direct(d) => {
                if let Some(c) = c.as_ref() {
                    d.connection(c)
                }
            }
            DetectorSink::Queued {
                on_back,
                events,
                spare,
            } => {
                if let Some(conn) = c.as_ref() {
                    on_back.connection(conn);
                    let mut held = spare.pop().unwrap_or_else(|| Box::new(None));
                    *held = c.take();
                    events.push(DetectorEvent::Connection(held))
                }
            }
        }
    }
    fn dns(&mut self, f: FinishedQuery) {
        match self {
            DetectorSink::Direct(d) => d.dns(&f),
            DetectorSink::Queued {
                on_back, events, ..
            } => {
                on_back.dns(&f);
                events.push(DetectorEvent::Dns(Box::new(f)))
            }
        }
    }
    fn tunnel_udp(&mut self, p: PktRef, t: wire::Tunnel, dir: Option<wire::PacketDirection>) {
        self.send(
            || DetectorEvent::TunnelUdp(Box::new((p, t, dir))),
            |d| d.tunnel_udp(&p, &t, dir),
        );
    }
    fn icmp_error(&mut self, p: PktRef, v6: bool, t: u8, c: u8) {
        self.send(
            || DetectorEvent::IcmpError(Box::new((p, v6, t, c))),
            |d| d.icmp_error(&p, v6, t, c),
        );
    }
    fn neighbour(&mut self, p: PktRef, m: NeighbourMsg) {
        self.send(
            || DetectorEvent::Neighbour(Box::new((p, m))),
            |d| d.neighbour(&p, m),
        );
    }

    /// The detectors, once every queued call has reached them (the pipeline puts them back before
    /// the end of the analysis).
    fn into_direct(self) -> Detectors {
        match self {
            DetectorSink::Direct(d) => d,
            DetectorSink::Queued { .. } => {
                unreachable!("the pipeline returns the detectors to the back")
            }
        }
    }
}

/// The reading thread's detectors at the end of a two-thread analysis, with the calls the back
/// queued for them and they have not had yet: the last batch's, which the back keeps rather than
/// sends (`Batch::last`), to be made beside the others of the end (`end_calls`).
struct QueuedAtEnd {
    detectors: Detectors,
    events: Vec<DetectorEvent>,
}

/// The detectors' calls at the end of the input: those still queued for the reading thread's
/// detectors (`queued`), then every detector's for each connection live at the end. With two or
/// more `threads` and enough calls, the detectors are shared out between two threads, each making
/// exactly its detectors' calls in order (detectors keep no state in common), so the findings are
/// those of one thread: at the end of a busy capture this is the last second's sweep (~1,300
/// connections on the benchmark capture, 0.9–1.3 ms of calls) and thousands of live connections
/// (2–4 ms), on the path nothing else overlaps. Returns all the detectors, and the queued calls
/// (their connections) for the caller to free.
fn end_calls(
    detectors: Detectors,
    queued: Option<QueuedAtEnd>,
    live: &Slab,
    threads: usize,
) -> (Detectors, Vec<DetectorEvent>) {
    /// Fewer calls than this are made on this thread: a thread's start and join cost tens of
    /// microseconds, a connection's calls a few.
    const WORTH_A_THREAD: usize = 256;
    let (front, events, rest) = match queued {
        Some(q) => (q.detectors, q.events, detectors),
        None => (detectors, Vec::new(), Detectors::none()),
    };
    let few = live.iter().nth(WORTH_A_THREAD).is_none() && events.len() < WORTH_A_THREAD;
    if threads < 2 || few {
        let mut front = front;
        events.iter().for_each(|e| e.apply(&mut front));
        let mut all = front.join(rest);
        live.iter().for_each(|c| all.connection(c));
        return (all, events);
    }
    let (mut here, mut there) = front.halves();
    let all = std::thread::scope(|s| {
        let other = s.spawn(|| {
            events.iter().for_each(|e| e.apply(&mut there));
            live.iter().for_each(|c| there.connection(c));
            there
        });
        events.iter().for_each(|e| e.apply(&mut here));
        let mut here = here.join(rest);
        live.iter().for_each(|c| here.connection(c));
        match other.join() {
            Ok(there) => here.join(there),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    });
    (all, events)
}

/// The end of the analysis: the connections still live to the detectors (with two or more
/// `threads`, shared out between two), then the back's findings, symptoms and figures with what
/// the front saw.
fn finish_parts(
    front: Front,
    mut back: Back,
    queued: Option<QueuedAtEnd>,
    node: &NodeContext,
    threads: usize,
) -> Analysis {
    let Front {
        stats: fstats,
        mut problems,
        diagnostics: front_diagnostics,
        snaplen_cuts,
        ..
    } = front;
    // Record-level figures are the front's; everything else is the back's.
    let s = &mut back.stats;
    s.records = fstats.records;
    s.bytes = fstats.bytes;
    s.ip_packets = fstats.ip_packets;
    s.non_ip_frames = fstats.non_ip_frames;
    s.undecodable_frames = fstats.undecodable_frames;
    s.first_ts_ns = fstats.first_ts_ns;
    s.last_ts_ns = fstats.last_ts_ns;
    back.symptoms
        .input_ended(back.stats.last_ts_ns.unwrap_or(i64::MIN));
    // Connections that ended before the input did, then those still live at its end.
    back.drain_tcp();
    let live = back.tcp.finish();
    for c in live.iter() {
        conn_stats(&mut back.stats, c);
        back.symptoms.connection(c);
    }
    let detectors = std::mem::replace(&mut back.detectors, DetectorSink::Direct(Detectors::none()));
    let (detectors, queued_events) = end_calls(detectors.into_direct(), queued, &live, threads);
    back.detectors = DetectorSink::Direct(detectors);
    // Finished and handed over a few thousand at a time (`DnsTracker::finish_some`).
    while back.dns.finish_some(4096) {
        back.drain_dns();
    }
    back.drain_dns();
    let ts = back.tcp.stats;
    back.stats.tcp_copies = ts.copies;
    back.stats.tcp_connections = ts.connections;
    back.stats.tcp_mid_stream_legs = ts.mid_stream_legs;
    back.stats.tcp_peak_live_connections = ts.peak_live;
    back.stats.dns_queries = back.dns.stats.queries;
    back.stats.dns_responses = back.dns.stats.responses;
    let mut diagnostics = front_diagnostics;
    diagnostics.extend(back.cap_diagnostics());
    let ctx = Context {
        inputs: &back.names,
        node,
        capture_end_ns: back.stats.last_ts_ns.unwrap_or(i64::MIN),
    };
    let seen = back.stats.tcp_connections + back.stats.dns_queries;
    let detectors = back.detectors.into_direct();
    let found = if threads >= 2 {
        free_aside((live, queued_events));
        detectors.finish_on(&ctx, threads, seen)
    } else {
        // First: what it frees, the chain's allocations can reuse.
        drop((live, queued_events));
        detectors.finish(&ctx)
    };
    let mut findings = crate::detect::one_per_incident(found);
    sort_findings(&mut findings);
    let undecoded = problems
        .by_key
        .iter()
        .filter(|((_, code), _)| *code == "unsupported-linktype")
        .map(|(_, d)| d.count)
        .sum();
    let (symptoms, blind_spots) = back.symptoms.finish(&ctx, &findings, undecoded);
    for (input, n) in snaplen_cuts.iter().enumerate() {
        if let Some(d) = problems.by_key.get_mut(&(input as InputId, "snaplen-cut")) {
            d.count += n.saturating_sub(1);
        }
    }
    let dt = back.dns_tcp.stats();
    back.stats.timestamp_outliers = problems
        .by_key
        .iter()
        .filter(|((_, code), _)| *code == "timestamp-outlier")
        .map(|(_, d)| d.count)
        .sum();
    diagnostics.extend(problems.by_key.into_values());
    if dt.gaps + dt.bad_lengths > 0 {
        diagnostics.push(Diagnostic {
            source: back.names.join(", "),
            code: "dns-tcp-gap",
            offset: None,
            frame: None,
            line: None,
            count: dt.gaps + dt.bad_lengths,
            message: format!("DNS over TCP: {} sequence gaps and {} bad length prefixes; the messages around them were skipped", dt.gaps, dt.bad_lengths),
        });
    }
    Analysis {
        findings,
        diagnostics,
        stats: back.stats,
        failed_inputs: Vec::new(),
        symptoms,
        blind_spots,
        detector_moves: back.detector_moves,
        peak_held_calls: back.peak_held_calls,
        timings: Timings::default(),
    }
}

/// Drops `value` on a thread of its own, not waited for, beside the detectors' `finish` and the
/// report: freeing the connections live at the end (an allocation or more each, their lines cold)
/// took 1.0–1.1 ms on the path to the report for the benchmark capture's 3,708, on whichever of
/// `finish`'s two threads was done first. Started before `finish`, not after: the memory is free
/// again by the time the report is built (freed after `finish`, a 2 M-SYN flood's two-thread peak
/// was 5 MB higher). A process that exits meanwhile skips the rest. Where no thread can be
/// started, dropped here.
fn free_aside<T: Send + 'static>(value: T) {
    // A failed spawn drops the closure, and `value` with it, here.
    let _ = std::thread::Builder::new()
        .name("netsleuth-free".into())
        .spawn(move || drop(value));
}

/// The two-thread analysis: this thread reads, frames and decodes (the `Front`); a second thread
/// follows flows and DNS (the `Back`), and queues its calls to the detectors, which this thread runs
/// as the batches come back — unless connections end at a good part of the packet rate, when the
/// back runs the detectors itself until the rate falls (`Placement`). Decoded packets cross in
/// batches whose buffers come back for reuse, so the steady state allocates nothing (a finished
/// connection or query handed to the detectors is boxed). The back gets exactly the packets, in
/// exactly the order, of the one-thread run, and the detectors exactly its calls, so the findings
/// are identical; what crosses is the decoded header with the payload bytes only where the back
/// reads them (`Back::reads_payload`).
mod pipeline {
    use super::{
        packet_ifindex, Back, CaptureReader, DetectorEvent, DetectorSink, Front, HalfTime, Halves,
        IdleWork, InputId, PacketSink, QueuedAtEnd,
    };
    use crate::detect::Detectors;
    use crate::flow::tcp::{leg_hash_v4, LegHash};
    use crate::flow::{Endpoint, PktRef};
    use crate::wire::{
        IpProtocol, Ipv4Tcp, Packet, SegmentOptions, TcpSegment, Transport, UdpDatagram,
    };
    use std::io::Read;
    use std::net::{IpAddr, Ipv4Addr};
    use std::ops::Range;
    use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TryRecvError, TrySendError};
    use std::time::{Duration, Instant};

    /// Packets per batch, and batches queued toward the back before the front waits: enough work in
    /// flight (~1 ms of the back's) that one half's hiccup does not stall the other, little memory
    /// (at most `QUEUED` + 3 batches of ~300 KB). Measured on the snaplen-128 capture, 2 cores: 4,096
    /// × 8 ran 10 % faster than 1,024 × 4; 8,192 × 8 and 4,096 × 16 no faster (BENCHMARKS.md).
    const BATCH: usize = 4096;
    const QUEUED: usize = 8;
    /// Most packets staged in full (`Staged`, 232 bytes and the payload kept) in one batch: a batch
    /// of them goes at a quarter of `BATCH`. A capture of nothing else (a DNS flood) kept ~15 MB in
    /// the batches out at `BATCH` each, ~4 MB at this; a node capture has a few in a batch.
    const STAGED_PER_BATCH: usize = BATCH / 4;
    /// The first batch's packets; each next batch has twice as many, up to `BATCH`. The back
    /// waits for the first batch, which at `BATCH` packets took the reading thread ~0.3 ms to
    /// fill; this one is there in an eighth of that, and the fourth batch is whole.
    const FIRST_BATCH: usize = 512;
    /// The detectors that run on the back, beside the flow engine, while the others run on the
    /// reading thread: the halves' balance. On the benchmark capture (snaplen 128, 1.38 M packets,
    /// 13,947 connections) the detectors' share of the finished connections is ~12 ms on the
    /// reading thread, ~3 of it this one's, and a connection the back has just finalised is in its
    /// cache; moved here, two threads ran 0.091 → 0.085 s (31 interleaved rounds; with
    /// conntrack-table-full as well, 0.087).
    pub(super) const ON_THE_BACK: &[&str] = &["ephemeral-port-exhaustion"];
    /// How many packets ahead of the one it is at the back asks for a packet's flow-table line
    /// (`TcpEngine::prefetch_leg`): about a memory access's time of the back's work. Two threads
    /// against one on the snaplen-128 bench capture (41 interleaved rounds): the leg table without
    /// the prefetch 1.46×, 8 ahead 1.49×, 16 ahead 1.46× (`FxHashMap`, before: 1.41×).
    const PREFETCH_AHEAD: usize = 8;
    /// Tries of a full or empty queue before sleeping on it (a few microseconds). Spinning longer
    /// (20,000 tries, ~1 ms) was as fast in the VM's quiet moments and up to 30 % slower in its busy
    /// ones, when the other half's core was taken away and the spinner burnt its own (BENCHMARKS.md,
    /// "Per-packet cost, fifth pass").
    const SPINS: usize = 200;

    /// One packet in a batch, in the 64 bytes of an IPv4 TCP segment that the back reads (nearly
    /// every packet of a node capture): one cache line each, the line the reading core writes and
    /// the back's core then fetches. Outside a tunnel the back reads neither the link's direction
    /// and VLAN nor the IP length, nor the TCP window, MSS, window scale or SACK permission (the
    /// flow engine and the detectors it calls take only the timestamps of the options); any other
    /// packet is `OTHER` and its `Staged` form is next in `Batch::others`. What crosses between the
    /// cores was 224 bytes a packet before, then 72 (two lines for most packets).
    #[derive(Clone, Copy)]
    #[repr(C, align(64))]
    struct Compact {
        frame: u64,
        ts: i64,
        src: u32,
        dst: u32,
        seq: u32,
        ack: u32,
        tsval: u32,
        tsecr: u32,
        payload_len: u32,
        /// `packet_ifindex` of the link's and the capture's interface (if `HAS_IFINDEX`).
        ifindex: u32,
        /// The tuple's leg hash (`leg_hash_v4`), made here so that the back does not: with
        /// `SRC_IS_LO`, what the flow engine's key is made of.
        leg_hash: u32,
        src_port: u16,
        dst_port: u16,
        ident: u16,
        input: InputId,
        flags: u8,
        ttl: u8,
        /// `HAS_*` bits; `OTHER` for a packet staged in full.
        bits: u8,
    }

    const OTHER: u8 = 1 << 0;
    const HAS_IFINDEX: u8 = 1 << 1;
    const HAS_TIMESTAMP: u8 = 1 << 4;
    const SRC_IS_LO: u8 = 1 << 5;
    // One line, and the back's reading of it one load of a line the front wrote.
    const _: () = assert!(std::mem::size_of::<Compact>() == 64);

    impl Compact {
        /// The compact form of an IPv4 TCP segment outside a tunnel, unfragmented, whose payload the
        /// back does not read; `None` for any other packet.
        #[inline(always)]
        fn of(
            input: InputId,
            frame: u64,
            ts: i64,
            interface: u32,
            pkt: &Packet<'_>,
        ) -> Option<Compact> {
            let (Transport::Tcp(seg), IpAddr::V4(src), IpAddr::V4(dst), None, None) = (
                &pkt.transport,
                pkt.ip.src,
                pkt.ip.dst,
                &pkt.tunnel,
                &pkt.ip.fragment,
            ) else {
                return None;
            };
            if pkt.ip.proto != IpProtocol::Tcp || Back::reads_payload(seg.src_port, seg.dst_port) {
                return None;
            }
            let ip = &pkt.ip;
            Some(Compact::of_segment(
                input,
                frame,
                ts,
                interface,
                (pkt.link.ifindex, src, dst, ip.ttl, ip.ident),
                seg,
            ))
        }

        /// `ip`: the link's interface index, the addresses, TTL and identification.
        #[inline(always)]
        fn of_segment(
            input: InputId,
            frame: u64,
            ts: i64,
            interface: u32,
            ip: (Option<u32>, Ipv4Addr, Ipv4Addr, u8, u16),
            seg: &TcpSegment<'_>,
        ) -> Compact {
            let (ifindex, src, dst, ttl, ident) = ip;
            let bit = |set: bool, b: u8| if set { b } else { 0 };
            // Options are parsed only for the segments whose timestamps the flow engine reads.
            let timestamp = crate::flow::tcp::segment_timestamp(seg);
            let (tsval, tsecr) = timestamp.unwrap_or((0, 0));
            let ifindex = packet_ifindex(ifindex, interface);
            let leg = leg_hash_v4(src.into(), seg.src_port, dst.into(), seg.dst_port);
            Compact {
                frame,
                ts,
                src: src.into(),
                dst: dst.into(),
                seq: seg.seq,
                ack: seg.ack,
                tsval,
                tsecr,
                payload_len: seg.payload_len,
                ifindex: ifindex.unwrap_or(0),
                leg_hash: leg.word(),
                src_port: seg.src_port,
                dst_port: seg.dst_port,
                ident,
                input,
                flags: seg.flags,
                ttl,
                bits: bit(ifindex.is_some(), HAS_IFINDEX)
                    | bit(timestamp.is_some(), HAS_TIMESTAMP)
                    | bit(leg.a_is_lo, SRC_IS_LO),
            }
        }

        /// The packet reference `Back::packet` makes of the packet this was made of.
        #[inline(always)]
        fn pkt_ref(&self) -> PktRef {
            let has = |b: u8| self.bits & b != 0;
            let ifindex = has(HAS_IFINDEX).then_some(self.ifindex);
            PktRef {
                input: self.input,
                frame: self.frame,
                ts_ns: self.ts,
                src: Endpoint {
                    ip: IpAddr::V4(Ipv4Addr::from(self.src)),
                    port: self.src_port,
                },
                dst: Endpoint {
                    ip: IpAddr::V4(Ipv4Addr::from(self.dst)),
                    port: self.dst_port,
                },
                flags: self.flags,
                len: self.payload_len,
                seq: self.seq,
                ack: self.ack,
                ifindex,
            }
        }

        /// The segment's timestamps as `TcpEngine::packet` takes them (`segment_timestamp`: read
        /// here only where the engine reads them).
        #[inline(always)]
        fn timestamp(&self) -> Option<(u32, u32)> {
            (self.bits & HAS_TIMESTAMP != 0).then_some((self.tsval, self.tsecr))
        }

        /// The place of a packet staged in full, in order.
        fn other() -> Compact {
            Compact {
                frame: 0,
                ts: 0,
                src: 0,
                dst: 0,
                seq: 0,
                ack: 0,
                tsval: 0,
                tsecr: 0,
                payload_len: 0,
                ifindex: 0,
                leg_hash: 0,
                src_port: 0,
                dst_port: 0,
                ident: 0,
                input: 0,
                flags: 0,
                ttl: 0,
                bits: OTHER,
            }
        }
    }

    /// A packet that is not an IPv4 TCP segment, decoded in full: its header fields, with its
    /// payload (if kept) in the batch's byte buffer.
    struct Staged {
        input: InputId,
        frame: u64,
        ts: i64,
        interface: u32,
        /// The packet with empty payload slices.
        pkt: Packet<'static>,
        payload: Range<usize>,
    }

    struct Batch {
        packets: Vec<Compact>,
        others: Vec<Staged>,
        payloads: Vec<u8>,
        /// On the way back: the calls to the detectors that the batch's packets made, in order
        /// (none while the detectors run on the back).
        events: Vec<DetectorEvent>,
        /// On the way back: the detectors, which the back ran up to this batch and hands back.
        detectors: Option<Detectors>,
        /// On the way back: the back asks for the detectors, once this batch's calls are made.
        wants_detectors: bool,
        /// On the way there: the input's last batch. Its calls for the reading thread's detectors
        /// stay on the back, to be made at the end beside the others there (`end_calls`), not on
        /// the reading thread after the back is done.
        last: bool,
        /// On the way there: the reading thread found the queue full when it sent this batch (it
        /// waited for the back): for `Balance`.
        front_waited: bool,
    }

    impl Batch {
        fn new() -> Batch {
            Batch {
                packets: Vec::with_capacity(BATCH),
                ..Batch::without_packets()
            }
        }

        /// A batch that only carries calls and the asking for the detectors back
        /// (`Placer::calls_queued`); the reading thread fills it like any other afterwards.
        fn without_packets() -> Batch {
            Batch {
                packets: Vec::new(),
                others: Vec::new(),
                payloads: Vec::new(),
                events: Vec::new(),
                detectors: None,
                wants_detectors: false,
                last: false,
                front_waited: false,
            }
        }
    }

    impl Staged {
        /// The packet as the front decoded it (payload bytes restored from the batch where kept).
        fn packet<'a>(&self, payloads: &'a [u8]) -> Packet<'a> {
            let payload = &payloads[self.payload.clone()];
            let transport = match self.pkt.transport {
                Transport::Tcp(seg) => Transport::Tcp(TcpSegment { payload, ..seg }),
                Transport::Udp(d) => Transport::Udp(UdpDatagram { payload, ..d }),
                Transport::Icmp {
                    v6,
                    icmp_type,
                    code,
                } => Transport::Icmp {
                    v6,
                    icmp_type,
                    code,
                },
                Transport::Other => Transport::Other,
                Transport::Arp(op) => Transport::Arp(op),
            };
            Packet {
                transport,
                ..self.pkt
            }
        }
    }

    /// Where the detectors run, which the back decides batch by batch from the finished
    /// connections and DNS queries it hands over and from which half has been waiting for the
    /// other.
    ///
    /// On the reading thread while they are few and the back has no room for them: their calls
    /// are what balances the two halves on a capture of real connections (the benchmark capture
    /// hands over 30 in a batch of 4,096 packets, on average). On the back while it keeps waiting
    /// for the reading thread (`Balance`), until the reading thread keeps waiting for it: the
    /// halves' balance moves within a capture and from run to run (at snaplen 128, two threads
    /// 1.41× → 1.50× one thread, medians of 201 interleaved rounds; BENCHMARKS.md, "eighteenth
    /// pass"). On the back while connections end at a good part of the packet rate (a SYN flood,
    /// a scan, queries left unanswered, anything that overflows a state cap), whatever the
    /// balance: carrying each across (a ~1.2 KB box there and back, read on the other core) made
    /// two threads 1.4–1.7× slower than one there, with twice the memory (BENCHMARKS.md,
    /// "Per-packet cost, tenth pass").
    ///
    /// The move keeps each detector's calls in order. To the back: the back asks with a batch and
    /// keeps the calls of the batches after it (`pending`) until the reading thread, having made
    /// the calls of every batch up to the asking one, sends the detectors; the back makes the kept
    /// calls and then its own. To the reading thread: the back hands them over with a batch whose
    /// calls it made, and queues the calls of the next batches as before.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Placement {
        Front,
        /// Asked for; the calls wait on the back.
        Asked,
        Back,
    }

    /// Finished connections and queries a batch hands over, on average, from which the detectors are
    /// asked to the back (one for every eight packets) and below which they go back to the reading
    /// thread (one for every sixteen). Measured (BENCHMARKS.md, "Per-packet cost, tenth pass"): on
    /// the back they are 5–15 % slower on captures handing over 30–130 a batch, as fast around 200,
    /// 1.3–1.5× faster on floods (3,000–4,096).
    const TO_BACK_AT: u64 = (BATCH / 8) as u64;
    const FRONT_BELOW: u64 = (BATCH / 16) as u64;
    /// The average is over the last batches (weights 1/8, 7/64, …): the flow engine hands finished
    /// connections over in bursts, when the analysis clock passes their timeouts (the benchmark
    /// capture: nothing for ten batches, then 1,000–1,350), while a flood hands thousands over in
    /// every batch (a SYN flood once it fills the live cap) and moves them within a batch or two.
    const AVERAGE_OVER: u64 = 8;
    /// Batches more for which the back waited for the reading thread than the other way round,
    /// from which the detectors move to the back; as many the other way, and they go back to the
    /// reading thread (`Balance`). 2, 4 and 8 measured alike (BENCHMARKS.md, "eighteenth pass").
    const BALANCE_AT: i32 = 4;
    /// Batches before the balance is counted: the back waits for the first, small ones.
    const BALANCE_FROM: u32 = 4;

    /// Which half has waited for the other lately, batch by batch: where the detectors, the work
    /// that can run on either side, should be. Which half is the busier changes within a capture
    /// (bursts of short connections load the back, long transfers the reading thread) and from one
    /// run to the next on a shared machine: over twelve runs the back waited up to 76 ms of a
    /// run in one and the reading thread up to 35 ms in another.
    #[derive(Default)]
    struct Balance {
        /// Batches for which the back waited, less those the reading thread waited to send, since
        /// the last move (within ±`BALANCE_AT`).
        value: i32,
        /// Batches seen, up to `BALANCE_FROM`.
        batches: u32,
    }

    impl Balance {
        /// A batch done: whether the back waited for it (its queue was empty), and whether the
        /// reading thread waited to send it (the queue was full).
        fn batch(&mut self, back_waited: bool, front_waited: bool) {
            if self.batches < BALANCE_FROM {
                self.batches += 1;
                return;
            }
            self.value = (self.value + i32::from(back_waited) - i32::from(front_waited))
                .clamp(-BALANCE_AT, BALANCE_AT);
        }
        /// The back has been waiting for the reading thread: it has room for the detectors.
        fn back_has_room(&self) -> bool {
            self.value >= BALANCE_AT
        }
        /// The reading thread has been waiting for the back: the detectors should leave it.
        fn back_is_behind(&self) -> bool {
            self.value <= -BALANCE_AT
        }
        /// The detectors moved: what was counted led to it.
        fn moved(&mut self) {
            self.value = 0;
        }
    }

    /// The front's sink in the pipeline: fills a batch, sends it when full.
    struct Batcher {
        current: Batch,
        to_back: Option<SyncSender<Batch>>,
        recycled: Receiver<Batch>,
        /// Batches back from the back, their detector calls made.
        free: std::collections::VecDeque<Batch>,
        /// The detectors, while they run here (`Placement`).
        detectors: Option<Detectors>,
        /// Where the detectors go when the back asks for them.
        detectors_to_back: Sender<Detectors>,
        /// The back thread has gone (it panicked): stop sending; its panic is raised at the join.
        back_gone: bool,
        /// Packets in the batch being filled before it goes (`FIRST_BATCH`, doubled each batch up
        /// to `BATCH`).
        batch_len: usize,
        /// Time spent waiting for the back: on a full queue, and at the end for its last batches.
        waited: Duration,
    }

    impl Batcher {
        fn new(
            to_back: SyncSender<Batch>,
            recycled: Receiver<Batch>,
            detectors: Option<Detectors>,
            detectors_to_back: Sender<Detectors>,
        ) -> Self {
            Batcher {
                current: Batch::new(),
                to_back: Some(to_back),
                recycled,
                free: std::collections::VecDeque::new(),
                detectors,
                detectors_to_back,
                back_gone: false,
                batch_len: FIRST_BATCH,
                waited: Duration::ZERO,
            }
        }

        /// Make the detector calls of every batch come back so far, in order; with `wait`, of every
        /// batch until the back has gone.
        fn take_back(&mut self, wait: bool) {
            while self.take_one_back(wait) {}
        }

        /// Make the detector calls of the next batch come back, if one has (with `wait`, once one
        /// has, unless the back has gone); whether there was one.
        fn take_one_back(&mut self, wait: bool) -> bool {
            let batch = if wait {
                let asked = Instant::now();
                let batch = self.recycled.recv().ok();
                self.waited += asked.elapsed();
                batch
            } else {
                self.recycled.try_recv().ok()
            };
            let Some(mut batch) = batch else { return false };
            // Handed back before the batch's calls, which the back queued for them.
            if let Some(detectors) = batch.detectors.take() {
                debug_assert!(self.detectors.is_none());
                self.detectors = Some(detectors);
            }
            if !batch.events.is_empty() {
                let detectors = self
                    .detectors
                    .as_mut()
                    .expect("calls come back only while the detectors run here");
                // Applied, not taken: the events (and the connections they carry) go back
                // to the back thread with the batch and are freed there, by the thread that
                // allocated them (a free from another thread contends for the allocator's
                // arena).
                for event in &batch.events {
                    event.apply(detectors);
                }
            }
            if std::mem::take(&mut batch.wants_detectors) {
                let detectors = self.detectors.take().expect("asked for while here");
                // The back gone (it panicked) keeps them: its panic is raised at the join.
                let _ = self.detectors_to_back.send(detectors);
            }
            self.free.push_back(batch);
            true
        }

        /// The batch to the back, then the calls of the batches come back. The batch goes first:
        /// the back never waits for this thread's detector calls (a second's sweep brings ~1,300
        /// finished connections back at once, ~1 ms of them). On a full queue, the calls that come
        /// back meanwhile are made while waiting; then a little spinning before sleeping on it: the
        /// back frees a place within microseconds, and a sleep and wake-up costs as much as
        /// hundreds of packets.
        fn send(&mut self) {
            if self.current.packets.is_empty() || self.back_gone {
                return;
            }
            // A batch back is reused before a new one is made: at most `QUEUED` + 3 exist.
            if self.free.is_empty() {
                self.take_one_back(false);
            }
            let next = self.free.pop_front().unwrap_or_else(Batch::new);
            let Some(to_back) = &self.to_back else { return };
            // Its own handle: the calls are made (`&mut self`) between tries.
            let to_back = to_back.clone();
            let mut full = std::mem::replace(&mut self.current, next);
            self.batch_len = (self.batch_len * 2).min(BATCH);
            let mut spins = 0;
            let mut waiting_since = None;
            loop {
                match to_back.try_send(full) {
                    Ok(()) => break,
                    Err(TrySendError::Full(b)) => {
                        full = b;
                        full.front_waited = true;
                    }
                    Err(TrySendError::Disconnected(_)) => {
                        self.back_gone = true;
                        return;
                    }
                }
                // Only the waiting is timed: the calls made between tries are this thread's work.
                if self.take_one_back(false) {
                    waiting_since = None;
                    continue;
                }
                let since = *waiting_since.get_or_insert_with(Instant::now);
                if spins < SPINS {
                    spins += 1;
                    std::hint::spin_loop();
                    let now = Instant::now();
                    self.waited += now - since;
                    waiting_since = Some(now);
                    continue;
                }
                let sent = to_back.send(full);
                self.waited += since.elapsed();
                if sent.is_err() {
                    self.back_gone = true;
                    return;
                }
                break;
            }
            self.take_back(false);
        }

        #[cold]
        #[inline(never)]
        fn stage_in_full(
            &mut self,
            input: InputId,
            frame: u64,
            ts: i64,
            interface: u32,
            pkt: &Packet<'_>,
        ) {
            let b = &mut self.current;
            let start = b.payloads.len();
            let transport = match pkt.transport {
                Transport::Tcp(seg) => {
                    if Back::reads_payload(seg.src_port, seg.dst_port) {
                        b.payloads.extend_from_slice(seg.payload);
                    }
                    Transport::Tcp(TcpSegment {
                        payload: &[],
                        // The option bytes stay with the frame: kept parsed.
                        options: SegmentOptions::Parsed(seg.options.parsed()),
                        ..seg
                    })
                }
                Transport::Udp(d) => {
                    if Back::reads_payload(d.src_port, d.dst_port) {
                        b.payloads.extend_from_slice(d.payload);
                    }
                    Transport::Udp(UdpDatagram { payload: &[], ..d })
                }
                Transport::Icmp {
                    v6,
                    icmp_type,
                    code,
                } => Transport::Icmp {
                    v6,
                    icmp_type,
                    code,
                },
                Transport::Other => Transport::Other,
                Transport::Arp(op) => Transport::Arp(op),
            };
            b.others.push(Staged {
                input,
                frame,
                ts,
                interface,
                pkt: Packet {
                    transport,
                    link: pkt.link,
                    tunnel: pkt.tunnel,
                    ip: pkt.ip,
                    truncated: pkt.truncated,
                },
                payload: start..b.payloads.len(),
            });
            self.push(Compact::other());
            if self.current.others.len() >= STAGED_PER_BATCH {
                self.send();
            }
        }

        /// A packet's place in the batch; the batch goes when full.
        #[inline(always)]
        fn push(&mut self, c: Compact) {
            self.current.packets.push(c);
            if self.current.packets.len() >= self.batch_len {
                self.send();
            }
        }
    }

    impl PacketSink for Batcher {
        #[inline]
        fn packet(
            &mut self,
            input: InputId,
            frame: u64,
            ts: i64,
            interface: u32,
            pkt: &Packet<'_>,
        ) {
            match Compact::of(input, frame, ts, interface, pkt) {
                Some(c) => self.push(c),
                None => self.stage_in_full(input, frame, ts, interface, pkt),
            }
        }

        #[inline(always)]
        fn ipv4_tcp(
            &mut self,
            input: InputId,
            frame: u64,
            ts: i64,
            interface: u32,
            seg: &Ipv4Tcp<'_>,
        ) {
            if Back::reads_payload(seg.tcp.src_port, seg.tcp.dst_port) {
                return self.stage_in_full(input, frame, ts, interface, &seg.to_packet());
            }
            // Built where it is pushed, not wrapped in an `Option` first: each move of the 72
            // bytes was 18 instructions a packet.
            self.push(Compact::of_segment(
                input,
                frame,
                ts,
                interface,
                (seg.link.ifindex, seg.src, seg.dst, seg.ttl, seg.ident),
                &seg.tcp,
            ));
        }
    }

    /// The back's side of `Placement`: where the detectors run, and the calls kept while they are
    /// on their way here.
    struct Placer {
        placement: Placement,
        /// While `Asked`: the calls of the batches since the asking one, in order.
        pending: Vec<DetectorEvent>,
        /// `AVERAGE_OVER` times the average handed over by a batch, recent batches weighing more.
        recent: u64,
        /// The detectors were (or are being) moved here because the back waited for the reading
        /// thread (`balance`), not for a flood (`recent`): they go back when the reading thread
        /// waits for the back, not when the flood is over.
        for_balance: bool,
        balance: Balance,
        detectors_given: Receiver<Detectors>,
        /// Calls queued for the reading thread's detectors and not yet dropped: in batches on their
        /// way there or back, and in `pending`. Each finished connection among them is ~2 KB (the
        /// record, its legs and SYNs), and nothing else bounds them: a SYN flood finishes one
        /// connection a packet, ~4,096 a batch, and with `QUEUED` + 3 batches out two threads
        /// peaked at 73 MB against one thread's 36 at a 32 MiB budget (BENCHMARKS.md, "twentieth
        /// pass").
        held: usize,
        /// Most calls held before the back stops to have the detectors brought here
        /// (`max_held_calls`).
        max_held: usize,
        /// Time the back stopped for the detectors to come (`calls_queued`): waiting for the
        /// reading thread, like an empty queue (`Halves::back`).
        waited: Duration,
    }

    /// Most calls to the reading thread's detectors the back lets be held at once: a quarter of the
    /// live connections the memory budget allows (~2 KB each against the 3 KB a live one is
    /// counted), so two threads' peak stays near one thread's. The benchmark capture's largest
    /// burst, a second's sweep, hands ~1,350 over, under the default budget's 6,826.
    fn max_held_calls(max_live_connections: u64) -> usize {
        (max_live_connections / 4).max(256) as usize
    }

    impl Placer {
        /// The placement at the start: the detectors on the reading thread, nothing held, at most
        /// `max_held_calls` of `max_live_connections` to be.
        fn with_detectors_on_the_front(
            detectors_given: Receiver<Detectors>,
            max_live_connections: u64,
        ) -> Placer {
            Placer {
                placement: Placement::Front,
                pending: Vec::new(),
                recent: 0,
                for_balance: false,
                balance: Balance::default(),
                detectors_given,
                held: 0,
                max_held: max_held_calls(max_live_connections),
                waited: Duration::ZERO,
            }
        }

        /// Before a batch: the detectors, if they have come since the back asked for them.
        fn batch_starts(&mut self, back: &mut Back) {
            if self.placement == Placement::Asked {
                if let Ok(detectors) = self.detectors_given.try_recv() {
                    self.arrived(back, detectors);
                }
            }
        }

        /// The detectors here: the calls kept for them made, then they run here.
        fn arrived(&mut self, back: &mut Back, mut detectors: Detectors) {
            self.held = self.held.saturating_sub(self.pending.len());
            for event in self.pending.drain(..) {
                event.apply(&mut detectors);
            }
            let sink =
                std::mem::replace(&mut back.detectors, DetectorSink::Direct(Detectors::none()));
            let DetectorSink::Queued {
                on_back, events, ..
            } = sink
            else {
                unreachable!("the detectors were asked for while their calls were queued")
            };
            // The calls of the batch at hand so far, after those of the batches before it (none
            // unless they arrived while the back held its calls, `Placer::calls_queued`).
            for event in &events {
                event.apply(&mut detectors);
            }
            back.detectors = DetectorSink::Direct(detectors.join(on_back));
            self.placement = Placement::Back;
            self.balance.moved();
            back.detector_moves += 1;
        }

        /// After a batch's packets, which handed `handed` connections and queries over: its calls
        /// sent with it, kept (for the detectors on their way here, or, the last batch's, for
        /// `end_calls`), or made here, and where the detectors go next.
        fn batch_done(
            &mut self,
            back: &mut Back,
            batch: &mut Batch,
            handed: u64,
            (back_waited, front_waited): (bool, bool),
        ) {
            self.recent = self.recent - self.recent / AVERAGE_OVER + handed;
            let flood = self.recent >= TO_BACK_AT * AVERAGE_OVER;
            self.balance.batch(back_waited, front_waited);
            let last = std::mem::take(&mut batch.last);
            match (&mut back.detectors, self.placement) {
                (DetectorSink::Queued { events, spare, .. }, placement) => {
                    // The calls the front made of this batch on its last trip: done with (their
                    // connections dropped here, their boxes kept for the next ones).
                    let mut stale = std::mem::take(&mut batch.events);
                    self.held = self.held.saturating_sub(stale.len());
                    if placement == Placement::Asked {
                        self.held += events.len();
                        self.pending.append(events);
                    } else if !last {
                        self.held += events.len();
                        batch.events = std::mem::take(events);
                        if flood || self.balance.back_has_room() {
                            batch.wants_detectors = true;
                            self.placement = Placement::Asked;
                            self.for_balance = !flood;
                        }
                    }
                    for event in stale.drain(..) {
                        if let DetectorEvent::Connection(mut held) = event {
                            *held = None;
                            if spare.len() < super::SPARE_CONNECTIONS {
                                spare.push(held);
                            }
                        }
                    }
                    if events.is_empty() {
                        // Its buffer for the next batch's calls.
                        *events = stale;
                    }
                }
                (DetectorSink::Direct(_), _) => {
                    // The batch's calls of its last trip, made before the detectors moved here,
                    // are dropped by the thread that made them.
                    self.held = self.held.saturating_sub(batch.events.len());
                    batch.events.clear();
                    if flood {
                        self.for_balance = false;
                    }
                    let go_back = if self.for_balance {
                        self.balance.back_is_behind()
                    } else {
                        self.recent < FRONT_BELOW * AVERAGE_OVER
                    };
                    if go_back {
                        let sink = std::mem::replace(
                            &mut back.detectors,
                            DetectorSink::Direct(Detectors::none()),
                        );
                        let DetectorSink::Direct(mut detectors) = sink else {
                            unreachable!("matched above")
                        };
                        let on_back = detectors.split_off(ON_THE_BACK);
                        batch.detectors = Some(detectors);
                        back.detectors = DetectorSink::Queued {
                            on_back,
                            events: Vec::new(),
                            spare: Vec::new(),
                        };
                        self.placement = Placement::Front;
                        self.balance.moved();
                        back.detector_moves += 1;
                    }
                }
            }
        }

        /// After the back queued calls for the reading thread's detectors: with more held than
        /// `max_held`, it makes no more until the detectors are here (then it calls them
        /// directly). If they are not asked for yet, the calls of the batch at hand so far go to
        /// the reading thread ahead of it, with the asking (a batch without packets), so that it
        /// makes them before it sends the detectors. While waiting, the back takes one batch off
        /// the queue into `stash`, to go through next: the reading thread, if asleep on a full
        /// queue, wakes and gets to the asking batch.
        fn calls_queued(
            &mut self,
            back: &mut Back,
            to_front: &Sender<Batch>,
            from_front: &Receiver<Batch>,
            stash: &mut Option<Batch>,
        ) {
            let DetectorSink::Queued { events, .. } = &mut back.detectors else {
                return;
            };
            back.peak_held_calls = back.peak_held_calls.max(self.held + events.len());
            if self.held + events.len() <= self.max_held {
                return;
            }
            if self.placement == Placement::Front {
                let mut asking = Batch::without_packets();
                self.held += events.len();
                asking.events = std::mem::take(events);
                asking.wants_detectors = true;
                self.placement = Placement::Asked;
                self.for_balance = false;
                // The front gone (it panicked): its panic is raised at the join.
                let _ = to_front.send(asking);
            }
            if self.placement != Placement::Asked {
                return;
            }
            let asked = Instant::now();
            let mut spins = 0;
            let arrived = loop {
                match self.detectors_given.try_recv() {
                    Ok(detectors) => break Some(detectors),
                    Err(TryRecvError::Disconnected) => break None,
                    Err(TryRecvError::Empty) => {}
                }
                // One batch taken is room on the queue: a reading thread asleep on a full one
                // wakes, and makes the calls of the batches come back (the asking one among them)
                // before it sends another. More would only let it queue batches anew beside them.
                // The stash is empty when a hold begins: a batch taken is gone through right after
                // the one at hand, before the detectors can have gone back to the reading thread.
                // A queue empty, or closed at the input's end: the detectors come all the same.
                if stash.is_none() {
                    if let Ok(batch) = from_front.try_recv() {
                        *stash = Some(batch);
                        continue;
                    }
                }
                if spins < SPINS {
                    spins += 1;
                    std::hint::spin_loop();
                } else {
                    // Rare (at a flood's start) and short: until the reading thread's next send.
                    std::thread::sleep(std::time::Duration::from_micros(20));
                }
            };
            self.waited += asked.elapsed();
            if let Some(detectors) = arrived {
                self.arrived(back, detectors);
            }
        }

        /// The input has ended: the detectors, if asked for, are waited for (the front sends them
        /// once the asking batch is back, which it waits for).
        fn input_ended(&mut self, back: &mut Back) {
            if self.placement == Placement::Asked {
                // The front gone (it panicked): nothing to finish; its panic is raised.
                let asked = Instant::now();
                let given = self.detectors_given.recv();
                self.waited += asked.elapsed();
                if let Ok(detectors) = given {
                    self.arrived(back, detectors);
                }
            }
        }
    }

    /// Runs the readers through `front` here and `back` on a second thread; returns the back once it
    /// has seen every packet. A panic in the back is raised here.
    pub(super) fn run<R: Read>(
        front: &mut Front,
        back: Back,
        readers: Vec<(InputId, CaptureReader<R>)>,
        idle_work: &[IdleWork],
    ) -> (Back, Option<QueuedAtEnd>, Halves) {
        let (to_back, from_front) = mpsc::sync_channel::<Batch>(QUEUED);
        let (to_front, recycled) = mpsc::channel::<Batch>();
        let (detectors_to_back, detectors_given) = mpsc::channel::<Detectors>();
        // The detectors move to this thread but for a few; the back queues its calls to them.
        let mut back = back;
        let mut detectors =
            match std::mem::replace(&mut back.detectors, DetectorSink::Direct(Detectors::none())) {
                DetectorSink::Direct(d) => d,
                DetectorSink::Queued { .. } => unreachable!("the detectors start on the back"),
            };
        back.detectors = DetectorSink::Queued {
            on_back: detectors.split_off(ON_THE_BACK),
            events: Vec::new(),
            spare: Vec::new(),
        };
        std::thread::scope(|scope| {
            let worker = scope.spawn(move || {
                let started = Instant::now();
                let mut waited = Duration::ZERO;
                let mut back = back;
                // Of the time waited, what the idle work took (`Halves::back_idle_work`).
                let idle_time = std::cell::Cell::new(Duration::ZERO);
                // On an empty queue: the inputs' idle work while there is any (the reading
                // thread's page faults taken here), then, like the sender, a little spinning
                // before sleeping on it.
                let next = || {
                    // Whether the queue was empty: the back waited for the reading thread.
                    let mut waited = false;
                    let mut spins = 0;
                    while spins < SPINS {
                        match from_front.try_recv() {
                            Ok(b) => return Some((b, waited)),
                            Err(TryRecvError::Empty) => {
                                waited = true;
                                let began = Instant::now();
                                if idle_work.iter().any(|work| work()) {
                                    idle_time.set(idle_time.get() + began.elapsed());
                                } else {
                                    spins += 1;
                                    std::hint::spin_loop();
                                }
                            }
                            Err(TryRecvError::Disconnected) => return None,
                        }
                    }
                    from_front.recv().ok().map(|b| (b, true))
                };
                let mut placer =
                    Placer::with_detectors_on_the_front(detectors_given, back.tcp.max_live());
                // A batch taken while the back held its calls (`Placer::calls_queued`), first.
                let mut stash = None;
                loop {
                    // Timed per batch, not per packet: a clock read (~25 ns) is half a packet's
                    // work, here once in up to 4,096 packets.
                    let asked = Instant::now();
                    let next_batch = stash.take().map(|b| (b, false)).or_else(next);
                    if next_batch
                        .as_ref()
                        .is_none_or(|&(_, back_waited)| back_waited)
                    {
                        waited += asked.elapsed();
                    }
                    let Some((mut batch, back_waited)) = next_batch else {
                        break;
                    };
                    placer.batch_starts(&mut back);
                    let handed = back.handed;
                    let mut others = batch.others.iter();
                    for (i, c) in batch.packets.iter().enumerate() {
                        // The flow table's line for a packet `PREFETCH_AHEAD` on, asked for now:
                        // by the time its lookup comes, it is in the cache.
                        if let Some(ahead) = batch.packets.get(i + PREFETCH_AHEAD) {
                            if ahead.bits & OTHER == 0 {
                                back.tcp
                                    .prefetch_leg(LegHash::of_word(ahead.leg_hash, false));
                            }
                        }
                        if c.bits & OTHER == 0 {
                            // What `Back::packet` makes of the packet this was made of, made here
                            // without building that packet (the test of two threads against one
                            // holds them equal): its segment is not DNS's (`Back::reads_payload`),
                            // so `Back::tcp_segment` is the flow engine's alone.
                            let r = c.pkt_ref();
                            let hash = LegHash::of_word(c.leg_hash, c.bits & SRC_IS_LO != 0);
                            let ips = (c.src, c.dst);
                            back.stats.tcp_packets += 1;
                            back.tcp
                                .packet_v4_hashed(&r, ips, hash, c.ident, c.ttl, || c.timestamp());
                            if back.tcp.has_finished() {
                                back.drain_finished_tcp();
                                placer.calls_queued(&mut back, &to_front, &from_front, &mut stash);
                            }
                        } else if let Some(s) = others.next() {
                            let pkt = s.packet(&batch.payloads);
                            back.packet(s.input, s.frame, s.ts, s.interface, &pkt);
                            placer.calls_queued(&mut back, &to_front, &from_front, &mut stash);
                        }
                    }
                    batch.packets.clear();
                    batch.others.clear();
                    batch.payloads.clear();
                    let handed = back.handed - handed;
                    let front_waited = std::mem::take(&mut batch.front_waited);
                    placer.batch_done(&mut back, &mut batch, handed, (back_waited, front_waited));
                    // The front waits for every batch to come back; it is gone only if it
                    // panicked, and then the batch is simply dropped.
                    let _ = to_front.send(batch);
                }
                placer.input_ended(&mut back);
                // Nothing is left to drain (every segment's is drained after it), but if it were,
                // its calls would belong after the last batch's, which are queued here.
                back.drain_tcp();
                let waited = waited + placer.waited;
                let time = HalfTime {
                    busy: started.elapsed().saturating_sub(waited),
                    waited,
                };
                (back, time, idle_time.get())
            });
            let mut batcher = Batcher::new(to_back, recycled, Some(detectors), detectors_to_back);
            let started = Instant::now();
            super::feed(front, &mut batcher, readers);
            front.flush_held(&mut batcher);
            batcher.current.last = true;
            batcher.send();
            // The end of the input for the back; then every batch comes back with its detector
            // calls, until the back has gone.
            batcher.to_back = None;
            batcher.take_back(true);
            let reading = HalfTime {
                busy: started.elapsed().saturating_sub(batcher.waited),
                waited: batcher.waited,
            };
            let (mut back, back_time, back_idle_work) = match worker.join() {
                Ok(back) => back,
                Err(panic) => std::panic::resume_unwind(panic),
            };
            let sink =
                std::mem::replace(&mut back.detectors, DetectorSink::Direct(Detectors::none()));
            let queued = match sink {
                DetectorSink::Queued {
                    on_back, events, ..
                } => {
                    back.detectors = DetectorSink::Direct(on_back);
                    let detectors = batcher
                        .detectors
                        .expect("the detectors are here while the back queues their calls");
                    Some(QueuedAtEnd { detectors, events })
                }
                direct @ DetectorSink::Direct(_) => {
                    debug_assert!(batcher.detectors.is_none());
                    back.detectors = direct;
                    None
                }
            };
            let halves = Halves {
                reading,
                back: back_time,
                back_idle_work,
            };
            (back, queued, halves)
        })
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// The detectors are wanted on the back once it has waited for `BALANCE_AT` batches more
        /// than the reading thread waited for it (not counting the first, small batches), and
        /// leave it once the reading thread has waited as many more; a half waiting now and then
        /// on both sides moves nothing.
        #[test]
        fn the_detectors_go_to_the_half_that_waits() {
            let mut b = Balance::default();
            for _ in 0..BALANCE_FROM {
                b.batch(true, false);
            }
            assert!(!b.back_has_room(), "the first batches are not counted");
            for _ in 0..100 {
                b.batch(true, true);
                b.batch(false, false);
            }
            assert!(
                !b.back_has_room() && !b.back_is_behind(),
                "both waited: no move"
            );
            for i in 0..BALANCE_AT {
                assert!(!b.back_has_room(), "{i} batches the back waited for");
                b.batch(true, false);
            }
            assert!(b.back_has_room());
            b.moved();
            assert!(!b.back_has_room() && !b.back_is_behind());
            for _ in 0..BALANCE_AT - 1 {
                b.batch(false, true);
            }
            b.batch(true, false);
            assert!(
                !b.back_is_behind(),
                "a batch the back waited for counts against"
            );
            b.batch(false, true);
            b.batch(false, true);
            assert!(b.back_is_behind());
            // Bounded: a long run of one side waiting is undone by `2 * BALANCE_AT` batches of the
            // other.
            for _ in 0..1000 {
                b.batch(false, true);
            }
            for _ in 0..2 * BALANCE_AT {
                b.batch(true, false);
            }
            assert!(b.back_has_room());
        }

        /// A reading thread's batcher on the given channels, its first batch `batch_len` packets,
        /// without the detectors.
        fn a_batcher(
            to_back: SyncSender<Batch>,
            recycled: Receiver<Batch>,
            detectors_to_back: Sender<Detectors>,
            batch_len: usize,
        ) -> Batcher {
            Batcher {
                batch_len,
                ..Batcher::new(to_back, recycled, None, detectors_to_back)
            }
        }

        /// The batches sent to the back: `FIRST_BATCH` packets, then twice as many each time up
        /// to `BATCH`, then `BATCH`; the input's last batch with what is left.
        #[test]
        fn the_first_batches_are_small_and_grow_to_the_full_size() {
            let (to_back, from_front) = mpsc::sync_channel::<Batch>(QUEUED);
            let (_to_front, recycled) = mpsc::channel::<Batch>();
            let (detectors_to_back, _detectors_given) = mpsc::channel::<Detectors>();
            let mut batcher = a_batcher(to_back, recycled, detectors_to_back, FIRST_BATCH);
            let packets = FIRST_BATCH * 2 + FIRST_BATCH * 4 + BATCH * 2 + 7;
            let mut sizes = Vec::new();
            for i in 0..packets {
                batcher.push(Compact::other());
                // Taken as they go, as the back would: the queue never fills.
                if i % 256 == 0 {
                    sizes.extend(from_front.try_iter().map(|b| b.packets.len()));
                }
            }
            batcher.current.last = true;
            batcher.send();
            sizes.extend(from_front.try_iter().map(|b| b.packets.len()));
            let mut expected = Vec::new();
            let mut len = FIRST_BATCH;
            while len < BATCH {
                expected.push(len);
                len *= 2;
            }
            let ramped: usize = expected.iter().sum();
            let whole = (packets - ramped) / BATCH;
            expected.extend(std::iter::repeat_n(BATCH, whole));
            expected.push(packets - ramped - whole * BATCH);
            assert_eq!(sizes, expected);
            assert_eq!(sizes.iter().sum::<usize>(), packets);
            assert!(
                sizes[0] < sizes[1] && sizes[1] < BATCH,
                "no ramp: {sizes:?}"
            );
        }

        /// Packets staged in full (here DNS queries, whose payload crosses too) go in batches of
        /// `STAGED_PER_BATCH`, not `BATCH`: a capture of nothing else (a DNS flood) otherwise kept
        /// a full batch of them (232 bytes and the payload each) in every batch out.
        #[test]
        fn a_batch_of_packets_staged_in_full_goes_at_a_quarter_of_the_size() {
            // Ethernet, IPv4 (checksum filled in below), UDP to port 53 (no checksum), 12 bytes.
            let mut frame = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 8, 0];
            let payload = [0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
            let total = (20 + 8 + payload.len()) as u16;
            let mut ip = vec![
                0x45, 0, 0, 0, 0, 1, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
            ];
            ip[2..4].copy_from_slice(&total.to_be_bytes());
            let sum = ip
                .chunks(2)
                .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
                .sum::<u32>();
            let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
            ip[10..12].copy_from_slice(&sum.to_be_bytes());
            frame.extend_from_slice(&ip);
            frame.extend_from_slice(&40000u16.to_be_bytes());
            frame.extend_from_slice(&53u16.to_be_bytes());
            frame.extend_from_slice(&(8 + payload.len() as u16).to_be_bytes());
            frame.extend_from_slice(&[0, 0]);
            frame.extend_from_slice(&payload);
            let pkt = crate::wire::decode_layered(1, &frame).expect("a DNS query over Ethernet");
            assert!(matches!(pkt.transport, Transport::Udp(d) if d.dst_port == 53));

            let (to_back, from_front) = mpsc::sync_channel::<Batch>(QUEUED);
            let (_to_front, recycled) = mpsc::channel::<Batch>();
            let (detectors_to_back, _detectors_given) = mpsc::channel::<Detectors>();
            let mut batcher = a_batcher(to_back, recycled, detectors_to_back, BATCH);
            let queries = STAGED_PER_BATCH * 2 + 5;
            let mut batches = Vec::new();
            for i in 0..queries {
                batcher.packet(0, i as u64 + 1, 0, 0, &pkt);
                batches.extend(from_front.try_iter());
            }
            batcher.current.last = true;
            batcher.send();
            batches.extend(from_front.try_iter());
            let sizes: Vec<(usize, usize, usize)> = batches
                .iter()
                .map(|b| (b.packets.len(), b.others.len(), b.payloads.len()))
                .collect();
            let n = STAGED_PER_BATCH;
            let p = payload.len();
            assert_eq!(sizes, [(n, n, n * p), (n, n, n * p), (5, 5, 5 * p)]);
        }

        /// A batch with one packet's place in it, as the reading thread sends it.
        fn a_batch() -> Batch {
            let mut batch = Batch::new();
            batch.packets.push(Compact::other());
            batch
        }

        /// The hold of `Placer::calls_queued`, in the one order that can deadlock: the reading
        /// thread asleep on a full queue when the back, holding too many calls for its detectors,
        /// asks for them and waits. The reading thread makes the calls of the batches that come
        /// back (the asking one among them) only once its send has gone; the back, by taking one
        /// batch off the queue, lets it go. Without that take the two wait for each other for
        /// ever, whatever the build: the flood test meets this order only when the reading
        /// thread runs far ahead (release builds, most runs; CI's debug build, rarely).
        #[test]
        fn a_back_holding_calls_wakes_a_reading_thread_asleep_on_a_full_queue() {
            use std::time::Duration;
            let (to_back, from_front) = mpsc::sync_channel::<Batch>(1);
            let (to_front, recycled) = mpsc::channel::<Batch>();
            let (detectors_to_back, detectors_given) = mpsc::channel::<Detectors>();
            // The queue full: a batch the back has not taken yet.
            to_back.send(a_batch()).expect("the queue has room for one");
            let mut batcher = a_batcher(to_back, recycled, detectors_to_back, BATCH);
            batcher.current = a_batch();
            batcher.detectors = Some(Detectors::none());
            let front = std::thread::spawn(move || {
                batcher.send();
                batcher
            });
            // Long enough for the reading thread's tries (`SPINS`) to end in a blocking send.
            std::thread::sleep(Duration::from_millis(200));
            assert!(
                !front.is_finished(),
                "the send waits while the queue is full"
            );

            let limits = super::super::Limits::default();
            let mut back = super::super::Engine::new(vec!["flood".into()], &limits).back;
            back.detectors = DetectorSink::Queued {
                on_back: Detectors::none(),
                events: Vec::new(),
                spare: Vec::new(),
            };
            // At the least cap (`max_held_calls`), and past it.
            let mut placer = Placer::with_detectors_on_the_front(detectors_given, 0);
            assert_eq!(placer.max_held, 256);
            placer.held = 300;
            let (done, held_done) = mpsc::channel();
            std::thread::spawn(move || {
                let mut stash = None;
                placer.calls_queued(&mut back, &to_front, &from_front, &mut stash);
                let _ = done.send((
                    placer.placement,
                    stash.is_some(),
                    back.detector_moves,
                    placer.waited,
                ));
            });
            let (placement, stashed, moves, waited) = held_done
                .recv_timeout(Duration::from_secs(60))
                .expect("the back and the reading thread waited for each other (deadlock)");
            assert!(
                placement == Placement::Back,
                "the detectors came to the back"
            );
            assert!(
                stashed,
                "the batch taken off the queue is kept to go through next"
            );
            assert_eq!(moves, 1);
            assert!(
                waited > Duration::ZERO,
                "the stop for the detectors is the back's waiting"
            );
            let batcher = front.join().expect("the reading thread's send ends");
            assert!(
                batcher.detectors.is_none(),
                "the reading thread gave its detectors"
            );
            assert!(!batcher.back_gone);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The back as it was fed before the fast path handed over segments: every packet built in
    /// full first.
    struct InFull<'a>(&'a mut Back);

    impl PacketSink for InFull<'_> {
        fn packet(
            &mut self,
            input: InputId,
            frame: u64,
            ts: i64,
            interface: u32,
            pkt: &Packet<'_>,
        ) {
            self.0.packet(input, frame, ts, interface, pkt);
        }
        fn ipv4_tcp(
            &mut self,
            input: InputId,
            frame: u64,
            ts: i64,
            interface: u32,
            s: &Ipv4Tcp<'_>,
        ) {
            self.0.packet(input, frame, ts, interface, &s.to_packet());
        }
    }

    fn analyse(path: &std::path::Path, in_full: bool) -> String {
        let file = std::fs::File::open(path).expect("fixture opens");
        let mut reader = CaptureReader::new(std::io::BufReader::new(file), "fixture")
            .expect("fixture is a capture");
        let mut engine = Engine::new(vec!["fixture".into()], &Limits::default());
        while let Some(rec) = reader.next_record() {
            if in_full {
                engine.front.push(0, &rec, &mut InFull(&mut engine.back));
            } else {
                engine.push(0, &rec);
            }
        }
        format!("{:?}", engine.finish(&NodeContext::default()))
    }

    /// `Back::ipv4_tcp` is `Back::packet` of `to_packet()`: the same analysis of every lab fixture.
    #[test]
    fn a_segment_handed_over_is_analysed_as_the_packet_it_stands_for() {
        let lab = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/lab");
        let mut seen = 0;
        for dir in std::fs::read_dir(&lab).expect("fixtures/lab") {
            let capture = dir.expect("entry").path().join("node.pcap");
            if !capture.exists() {
                continue;
            }
            let (fast, full) = (analyse(&capture, false), analyse(&capture, true));
            assert!(fast == full, "{} analysed differently", capture.display());
            seen += 1;
        }
        assert!(seen >= 20, "only {seen} lab fixtures found");
    }

    /// The detectors placed beside the flow engine are named by incident id: each name is one of a
    /// detector in the registry (a renamed incident would otherwise leave the back with none).
    #[test]
    fn the_detectors_on_the_back_are_in_the_registry() {
        let mut detectors = crate::detect::Detectors::new();
        let on_back = detectors.split_off(pipeline::ON_THE_BACK);
        assert_eq!(on_back.len(), pipeline::ON_THE_BACK.len());
    }
}

//! The analysis loop: records from every input, merged in capture-time order, decoded, fed to the flow
//! engine; finished connections and DNS queries go to the detectors; findings come out.
//!
//! Several inputs are captures of the same incident from different places (a client pod, the client's
//! node, the server's node): a packet seen in two of them is one packet seen at two points.

use crate::capture::CaptureReader;
use crate::detect::{Context, Detectors};
use crate::finding::{sort_findings, Diagnostic, Finding};
use crate::flow::dns::{DnsMessageObs, DnsTracker, FinishedQuery};
use crate::flow::dns_tcp::DnsTcpReassembler;
use crate::flow::tcp::{Conn, TcpEngine};
use crate::flow::{Endpoint, InputId, PktRef};
use crate::node::NodeContext;
use crate::wire::{self, tcp_flags, DecodeError, Packet, Transport};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Read;

/// One capture to analyse: a name for reports and the bytes.
pub struct Input {
    pub name: String,
    pub reader: Box<dyn Read + Send>,
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
}

impl Analysis {
    pub fn has_incident(&self) -> bool {
        self.findings
            .iter()
            .any(|f| f.kind == crate::finding::FindingKind::Incident)
    }
}

/// Analyse captures of one incident together. Never fails as a whole: an input that cannot be opened
/// is reported in `failed_inputs`, damage inside an input in `diagnostics`.
pub fn analyze(inputs: Vec<Input>, node: &NodeContext) -> Analysis {
    let names: Vec<String> = inputs.iter().map(|i| i.name.clone()).collect();
    let mut engine = Engine::new(names.clone());
    let mut readers = Vec::new();
    let mut failed = Vec::new();
    for (idx, input) in inputs.into_iter().enumerate() {
        match CaptureReader::new(input.reader, input.name.clone()) {
            Ok(r) => readers.push((idx as InputId, r)),
            Err(e) => failed.push((input.name, e.to_string())),
        }
    }
    if readers.len() == 1 {
        // The common case, kept zero-copy: no merge needed.
        let (idx, mut r) = readers.pop().expect("one reader");
        while let Some(rec) = r.next_record() {
            engine.cur_offset = rec.offset;
            engine.record(
                idx,
                rec.frame,
                rec.ts_ns,
                rec.linktype,
                rec.interface,
                rec.data,
                rec.orig_len,
            );
        }
        engine.diagnostics.extend(r.diagnostics());
    } else if !readers.is_empty() {
        merge(&mut engine, readers);
    }
    let mut analysis = engine.finish(node);
    analysis.failed_inputs = failed;
    analysis.stats.inputs = names.len();
    analysis
}

/// k-way merge by capture timestamp: each step takes the record of the input whose next record is
/// the earliest (ties go to the earlier input), so packets seen in several captures meet in time order.
fn merge<R: Read>(engine: &mut Engine, mut readers: Vec<(InputId, CaptureReader<R>)>) {
    loop {
        let mut best: Option<(i64, usize)> = None;
        for (i, (_, r)) in readers.iter_mut().enumerate() {
            if let Some(ts) = r.peek_ts() {
                if best.is_none_or(|(b, _)| ts < b) {
                    best = Some((ts, i));
                }
            }
        }
        let Some((_, i)) = best else { break };
        let (idx, r) = &mut readers[i];
        let Some(rec) = r.next_record() else { continue };
        engine.cur_offset = rec.offset;
        engine.record(
            *idx,
            rec.frame,
            rec.ts_ns,
            rec.linktype,
            rec.interface,
            rec.data,
            rec.orig_len,
        );
    }
    for (_, r) in &readers {
        engine.diagnostics.extend(r.diagnostics());
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

struct Engine {
    names: Vec<String>,
    tcp: TcpEngine,
    dns: DnsTracker,
    dns_tcp: DnsTcpReassembler,
    detectors: Detectors,
    stats: AnalysisStats,
    problems: DecodeProblems,
    diagnostics: Vec<Diagnostic>,
    qname: String,
    /// Byte offset of the record being processed, for locating decode problems.
    cur_offset: u64,
}

impl Engine {
    fn new(names: Vec<String>) -> Self {
        Engine {
            names,
            tcp: TcpEngine::new(),
            dns: DnsTracker::new(),
            dns_tcp: DnsTcpReassembler::new(),
            detectors: Detectors::new(),
            stats: AnalysisStats::default(),
            problems: DecodeProblems::default(),
            diagnostics: Vec::new(),
            qname: String::new(),
            cur_offset: 0,
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn record(
        &mut self,
        input: InputId,
        frame: u64,
        ts: i64,
        linktype: u32,
        interface: u32,
        data: &[u8],
        orig_len: u32,
    ) {
        self.stats.records += 1;
        self.stats.bytes += data.len() as u64;
        if self.stats.first_ts_ns.is_none() {
            self.stats.first_ts_ns = Some(ts);
        }
        self.stats.last_ts_ns = Some(ts.max(self.stats.last_ts_ns.unwrap_or(ts)));
        let pkt = match wire::decode(linktype, data) {
            Ok(p) => p,
            Err(e) => return self.decode_error(input, frame, e, data.len(), orig_len),
        };
        if pkt.truncated {
            let name = &self.names[input as usize];
            self.problems.add(input, name, "snaplen-cut", frame, self.cur_offset, || {
                format!("frame {frame}: packet cut by the snap length ({} of {orig_len} bytes captured); headers kept, payload partial", data.len())
            });
        }
        self.stats.ip_packets += 1;
        self.packet(input, frame, ts, interface, &pkt);
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
                let code = if (caplen as u32) < orig_len {
                    "snaplen-cut"
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

    #[inline]
    fn packet(&mut self, input: InputId, frame: u64, ts: i64, interface: u32, pkt: &Packet<'_>) {
        let ifindex = pkt
            .link
            .ifindex
            .or(Some(interface))
            .filter(|_| pkt.link.ifindex.is_some() || interface != 0);
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
        match &pkt.transport {
            Transport::Tcp(seg) => {
                self.stats.tcp_packets += 1;
                let r = pkt_ref(
                    seg.src_port,
                    seg.dst_port,
                    seg.flags,
                    seg.payload_len,
                    seg.seq,
                    seg.ack,
                );
                let outcome = self.tcp.packet(r, pkt.ip.ident, seg);
                if !outcome.copy
                    && (seg.src_port == 53 || seg.dst_port == 53)
                    && (seg.payload_len > 0
                        || seg.flags & (tcp_flags::FIN | tcp_flags::RST | tcp_flags::SYN) != 0)
                {
                    for m in self.dns_tcp.push(r.src, r.dst, seg, frame) {
                        self.dns_message(r, pkt.ip.ident, true, &m.bytes);
                    }
                }
                self.drain_tcp();
            }
            Transport::Udp(d) => {
                self.stats.udp_packets += 1;
                if d.src_port == 53 || d.dst_port == 53 {
                    let r = pkt_ref(d.src_port, d.dst_port, 0, d.payload_len, 0, 0);
                    self.dns_message(r, pkt.ip.ident, false, d.payload);
                }
            }
            _ => {}
        }
    }

    fn dns_message(&mut self, r: PktRef, ident: u16, tcp: bool, bytes: &[u8]) {
        let Ok(msg) = wire::dns::parse(bytes) else {
            return;
        };
        let Some(q) = &msg.question else { return };
        if msg.header.opcode != 0 {
            return;
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
        };
        self.dns.message(&obs);
        self.stats.dns_peak_live_queries = self
            .stats
            .dns_peak_live_queries
            .max(self.dns.live_queries() as u64);
        self.drain_dns();
    }

    #[inline]
    fn drain_tcp(&mut self) {
        for c in self.tcp.drain_finished() {
            conn_stats(&mut self.stats, &c);
            self.detectors.connection(&c);
        }
    }

    fn drain_dns(&mut self) {
        let finished: Vec<FinishedQuery> = self.dns.drain_finished().collect();
        for q in &finished {
            let s = &mut self.stats;
            if q.query.response.is_none() {
                s.dns_unanswered += 1;
            }
            if q.query.is_retry {
                s.dns_retries += 1;
            }
            if q.younger_sibling.is_some() {
                s.dns_parallel_pairs += 1;
            }
            self.detectors.dns(q);
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

impl Engine {
    fn finish(mut self, node: &NodeContext) -> Analysis {
        self.tcp.finish();
        self.drain_tcp();
        self.dns.finish();
        self.drain_dns();
        let ts = self.tcp.stats;
        self.stats.tcp_copies = ts.copies;
        self.stats.tcp_connections = ts.connections;
        self.stats.tcp_mid_stream_legs = ts.mid_stream_legs;
        self.stats.tcp_peak_live_connections = ts.peak_live;
        self.stats.dns_queries = self.dns.stats.queries;
        self.stats.dns_responses = self.dns.stats.responses;
        let ctx = Context {
            inputs: &self.names,
            node,
            capture_end_ns: self.stats.last_ts_ns.unwrap_or(i64::MIN),
        };
        let mut findings = self.detectors.finish(&ctx);
        sort_findings(&mut findings);
        let dt = self.dns_tcp.stats();
        let mut diagnostics = self.diagnostics;
        diagnostics.extend(self.problems.by_key.into_values());
        if dt.gaps + dt.bad_lengths > 0 {
            diagnostics.push(Diagnostic {
                source: self.names.join(", "),
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
            stats: self.stats,
            failed_inputs: Vec::new(),
        }
    }
}

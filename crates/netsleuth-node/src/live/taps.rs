//! The watch loop's wire side: one [`Tap`] and one [`FlightRecorder`] per watched namespace, their
//! counts read every second (ring drops are reported as they happen, never silent), their windows
//! analysed by the core every [`CYCLE`] when packets arrived, new findings handed back as outputs and,
//! with `--record`, written out so `analyze --node` re-finds them.
//!
//! Each namespace's node facts (`collect`, one sample, its processes not walked) are gathered once
//! on a background thread when its tap opens: the cycles use them as `check` and `analyze --node`
//! do (`to_node_context`); until they arrive a cycle uses none, and a finding that the facts later
//! raise is announced again at its higher confidence.

use super::correlate::Output;
use super::ebpf::{self, IdleFilter, IDLE_GAP, IDLE_MAP_ENTRIES};
use super::event::NsId;
use super::flight::{Announced, Cycles, FlightRecorder};
use super::tap::{Tap, BLOCKS, BLOCK_SIZE, POD_BLOCK_SIZE};
use crate::collect::run::in_netns;
use crate::{CollectOptions, NodeFacts, ProcessScope, Target};
use netsleuth_core::finding::Finding;
use netsleuth_core::node::NodeContext;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often a namespace's window is analysed (when packets arrived).
pub const CYCLE: Duration = Duration::from_secs(1);

/// The analysis cycles take at most one tenth of a core: the next cycle waits ten times the last
/// one's CPU time when that is longer than [`CYCLE`].
pub const CPU_SHARE: u32 = 10;

/// How long after its last packet a finding the tap can name is named, with margin: it must settle
/// ([`super::flight::SETTLE_NS`], 2 s), the ring hands a block over within 100 ms, and a cycle must run
/// (every [`CYCLE`] while cycles are cheap; later under load, see [`CPU_SHARE`]): ≈ 3.1 s on an idle
/// machine, measured up to 3.4 s on the shared test machine. The lab keeps the watcher this long after
/// the traffic before stopping it.
pub const ANNOUNCE_DELAY: Duration = Duration::from_millis(4_000);

/// What the tap does.
#[derive(Debug, Clone)]
pub struct TapOptions {
    /// Open a tap in each watched namespace.
    pub enabled: bool,
    /// Write each new finding's packets, node bundle and JSON here.
    pub record: Option<PathBuf>,
    /// Bytes the record directory's finding files may use; past it the oldest findings' files go.
    pub record_cap_bytes: u64,
}

impl Default for TapOptions {
    fn default() -> Self {
        TapOptions {
            enabled: true,
            record: None,
            record_cap_bytes: 256 << 20,
        }
    }
}

struct NsTap {
    id: NsId,
    label: String,
    tap: Option<Tap>,
    recorder: FlightRecorder,
    drops_reported: u64,
}

/// The taps' totals, for the summary and the benchmark.
#[derive(Debug, Clone, Copy, Default)]
pub struct TapTotals {
    pub passed: u64,
    pub dropped: u64,
    pub read: u64,
    pub cycles: u64,
    pub cycle_packets: u64,
    /// CPU time spent in analysis cycles (thread CPU clock), and the longest cycle.
    pub cycle_cpu: Duration,
    pub cycle_cpu_max: Duration,
    pub recorded_findings: u64,
}

pub struct Taps {
    opts: TapOptions,
    taps: Vec<NsTap>,
    /// The eBPF filter's shared map (made with the first tap), or why it could not be made.
    idle: Option<Result<IdleFilter, String>>,
    /// The first namespace's (the node's) facts, once collected: every cycle's context.
    facts: Arc<Mutex<Option<NodeFacts>>>,
    context: Option<NodeContext>,
    jobs: Option<mpsc::Sender<Option<PathBuf>>>,
    worker: Option<std::thread::JoinHandle<()>>,
    cycles: Cycles,
    held: bool,
    next_cycle: Instant,
    next_record: u64,
    pub totals: TapTotals,
    /// Every finding announced, for the summary.
    pub findings: Vec<Finding>,
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a plain clock read into a local.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

fn collect_facts(path: Option<&Path>) -> Option<NodeFacts> {
    let opts = CollectOptions {
        target: match path {
            Some(p) => Target::Netns(p.to_path_buf()),
            None => Target::Host,
        },
        processes: ProcessScope::None,
        samples: 1,
        interval: Duration::ZERO,
        command_timeout: Duration::from_secs(10),
        ..Default::default()
    };
    crate::collect_live(&opts).ok()
}

impl Taps {
    pub fn new(opts: TapOptions) -> Taps {
        let facts = Arc::new(Mutex::new(None));
        let (jobs, worker) = if opts.enabled {
            let (tx, rx) = mpsc::channel::<Option<PathBuf>>();
            let store = facts.clone();
            let worker = std::thread::Builder::new()
                .name("watch-facts".into())
                .spawn(move || {
                    // One job: the node's facts.
                    for path in rx {
                        if let Some(f) = collect_facts(path.as_deref()) {
                            *store.lock().unwrap_or_else(|e| e.into_inner()) = Some(f);
                        }
                    }
                })
                .ok();
            (Some(tx), worker)
        } else {
            (None, None)
        };
        Taps {
            opts,
            taps: Vec::new(),
            idle: None,
            facts,
            context: None,
            jobs,
            worker,
            cycles: Cycles::new(),
            held: false,
            next_cycle: Instant::now() + CYCLE,
            next_record: 1,
            totals: TapTotals::default(),
            findings: Vec::new(),
        }
    }

    /// Opens the tap of namespace `id` (inside it); returns the notice that says what it is, or why
    /// it is not there and what that costs.
    pub fn add(&mut self, id: NsId, label: &str, path: Option<&Path>, ts_ns: i64) -> Vec<Output> {
        if !self.opts.enabled {
            return if id == 0 {
                vec![Output::Notice {
                    ts_ns,
                    text: format!("packet tap: turned off (--no-tap): {}", blind_on_wire()),
                }]
            } else {
                Vec::new()
            };
        }
        let block_size = if self.taps.is_empty() {
            BLOCK_SIZE
        } else {
            POD_BLOCK_SIZE
        };
        // The eBPF filter (with the idle check), or the classic one and why.
        let idle = self.idle.get_or_insert_with(|| {
            IdleFilter::new(IDLE_MAP_ENTRIES, IDLE_GAP)
                .map_err(|e| format!("bpf(BPF_MAP_CREATE) failed: {e}"))
        });
        let mut program = match idle {
            Ok(f) => f.program(u32::try_from(self.taps.len()).unwrap_or(u32::MAX)),
            Err(e) => Err(e.clone()),
        };
        let mut opened = in_netns(path, || Tap::open_with(block_size, program.as_ref().ok()));
        if let Ok(Err(e)) = &opened {
            if program.is_ok() && e.step == "SO_ATTACH_BPF" {
                // Loaded but refused by the socket: the classic filter, and why.
                program = Err(e.to_string());
                opened = in_netns(path, || Tap::open_with(block_size, None));
            }
        }
        let (tap, text) = match opened {
            Ok(Ok(t)) => (
                Some(t),
                format!(
                    "packet tap in {label}: every interface, {} in the kernel (TCP SYN/FIN/RST{}, DNS on port 53 over UDP and TCP, ICMP/ICMPv6 errors, ARP and neighbour discovery; IPv4 and IPv6), ring {BLOCKS} × {} KiB; the last {} s analysed every {} s. {}",
                    match &program {
                        Ok(_) => format!(
                            "an eBPF filter ({} instructions, {} flow directions remembered)",
                            ebpf::tap_program(0, 0, IDLE_GAP).map(|p| p.len()).unwrap_or(0),
                            IDLE_MAP_ENTRIES
                        ),
                        Err(e) => format!(
                            "the classic BPF filter ({} instructions; the eBPF filter could not be loaded: {e})",
                            super::bpf::tap_filter().len()
                        ),
                    },
                    if program.is_ok() {
                        format!(
                            ", and a flow direction's first segment after {} s of silence or under a new tuple",
                            IDLE_GAP.as_secs()
                        )
                    } else {
                        String::new()
                    },
                    block_size >> 10,
                    super::flight::WINDOW_NS / 1_000_000_000,
                    CYCLE.as_secs(),
                    blind_with_filter(program.is_ok())
                ),
            ),
            Ok(Err(e)) => (None, format!("packet tap in {label} unavailable: {e}; {}", blind_on_wire())),
            Err(e) => (None, format!("packet tap in {label} unavailable: {e}; {}", blind_on_wire())),
        };
        if self.taps.is_empty() {
            if let Some(j) = self.jobs.take() {
                let _ = j.send(path.map(Path::to_path_buf));
            }
        }
        self.taps.push(NsTap {
            id,
            label: label.to_string(),
            tap,
            recorder: FlightRecorder::new(format!("tap:{label}")),
            drops_reported: 0,
        });
        // The recorders share one budget: more namespaces, a shorter memory each.
        let share =
            (super::flight::TOTAL_CAP_BYTES / self.taps.len()).min(super::flight::CAP_BYTES);
        for t in &mut self.taps {
            t.recorder.set_cap(share);
        }
        vec![Output::Notice { ts_ns, text }]
    }

    /// The namespace is gone: its tap is closed (its window stays, for the last cycle).
    pub fn close(&mut self, id: NsId) {
        if let Some(t) = self.taps.iter_mut().find(|t| t.id == id) {
            t.tap = None;
        }
    }

    /// The fds to poll, with their namespace.
    pub fn fds(&self) -> Vec<(RawFd, NsId)> {
        self.taps
            .iter()
            .filter_map(|t| t.tap.as_ref().map(|tap| (tap.fd(), t.id)))
            .collect()
    }

    /// Moves what the ring of `id` holds into its recorder.
    pub fn read(&mut self, id: NsId) {
        if let Some(t) = self.taps.iter_mut().find(|t| t.id == id) {
            if let Some(tap) = t.tap.as_mut() {
                let rec = &mut t.recorder;
                tap.drain(|p| rec.push(p));
            }
        }
    }

    /// Once a second: ring counts (every drop reported), and every [`CYCLE`] the windows that took
    /// new packets are analysed.
    /// Each namespace's tap: whether it is open, and its packets so far (passed by the filter,
    /// dropped by the ring).
    pub fn packet_counts(&self) -> Vec<(NsId, bool, u64, u64)> {
        self.taps
            .iter()
            .map(|t| match &t.tap {
                Some(tap) => (t.id, true, tap.stats.passed, tap.stats.dropped),
                None => (t.id, false, 0, 0),
            })
            .collect()
    }

    pub fn tick(&mut self, now_ns: i64) -> Vec<Output> {
        let mut out = Vec::new();
        for t in &mut self.taps {
            let Some(tap) = t.tap.as_mut() else { continue };
            let rec = &mut t.recorder;
            tap.drain(|p| rec.push(p));
            tap.poll_stats();
            if tap.stats.dropped > t.drops_reported {
                out.push(Output::Notice {
                    ts_ns: now_ns,
                    text: format!(
                        "packet tap in {}: the ring dropped {} packet(s) in the last second ({} of {} passed by the filter so far): the window has gaps, findings that need those packets may be missed",
                        t.label,
                        tap.stats.dropped - t.drops_reported,
                        tap.stats.dropped,
                        tap.stats.passed
                    ),
                });
                t.drops_reported = tap.stats.dropped;
            }
        }
        if Instant::now() >= self.next_cycle {
            let cpu = thread_cpu();
            out.extend(self.cycle(now_ns, false));
            // The analysis may use at most 1/CPU_SHARE of a core: a cycle that took 300 ms (a flood
            // filling the window) puts the next one 3 s away (BENCHMARKS.md "Watch").
            let spent = thread_cpu().saturating_sub(cpu);
            self.next_cycle = Instant::now() + CYCLE.max(spent * CPU_SHARE);
        }
        out
    }

    fn cycle(&mut self, now_ns: i64, last: bool) -> Vec<Output> {
        let mut out = Vec::new();
        if self.context.is_none() {
            if let Some(f) = self
                .facts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
            {
                self.context = Some(crate::to_node_context(f));
                // New facts may change a confidence: analyse the windows again.
                for t in &mut self.taps {
                    t.recorder.touch();
                }
            }
        }
        if !last && !self.held && !self.taps.iter().any(|t| t.recorder.has_new()) {
            return out;
        }
        let ctx = self.context.clone().unwrap_or_default();
        let cpu = thread_cpu();
        let mut recorders: Vec<&mut FlightRecorder> = self
            .taps
            .iter_mut()
            .take(usize::from(u16::MAX))
            .map(|t| &mut t.recorder)
            .collect();
        let (found, stats) = self.cycles.run(&mut recorders, now_ns, &ctx, last);
        // A finding held back (too fresh) is decided by a later cycle even if no packet comes.
        self.held = stats.held > 0;
        let spent = thread_cpu().saturating_sub(cpu);
        self.totals.cycles += 1;
        self.totals.cycle_packets += stats.packets;
        self.totals.cycle_cpu += spent;
        self.totals.cycle_cpu_max = self.totals.cycle_cpu_max.max(spent);
        for a in found {
            if let Some(dir) = self.opts.record.clone() {
                match self.record(&dir, &a) {
                    Ok(name) => out.push(Output::Notice {
                        ts_ns: now_ns,
                        text: format!(
                            "recorded {} as {}.*",
                            a.finding.id,
                            dir.join(name).display()
                        ),
                    }),
                    Err(e) => out.push(Output::Notice {
                        ts_ns: now_ns,
                        text: format!(
                            "--record: could not write {} into {}: {e}",
                            a.finding.id,
                            dir.display()
                        ),
                    }),
                }
            }
            let mut finding = a.finding;
            finding.reasoning.push(format!(
                "named live by the packet tap from the {:.1} s window ending {} ({} namespace(s) analysed together)",
                (a.window.1 - a.window.0) as f64 / 1e9,
                netsleuth_core::finding::format_ts(a.window.1),
                self.taps.len()
            ));
            self.findings.push(finding.clone());
            out.push(Output::Finding {
                ts_ns: now_ns,
                finding,
            });
        }
        out
    }

    fn record(&mut self, dir: &Path, a: &Announced) -> std::io::Result<String> {
        let n = self.next_record;
        self.next_record += 1;
        let facts = self.facts.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let recorders: Vec<&FlightRecorder> = self.taps.iter().map(|t| &t.recorder).collect();
        let stem = write_record(dir, n, &recorders, a, facts.as_ref())?;
        self.totals.recorded_findings += 1;
        trim_record_dir(dir, self.opts.record_cap_bytes)?;
        Ok(stem)
    }

    /// The last cycle (the watch's end is the capture's end) and the tap's closing notice.
    pub fn finish(mut self, now_ns: i64) -> (Vec<Output>, TapTotals, Vec<Finding>) {
        let mut out = Vec::new();
        for t in &mut self.taps {
            if let Some(tap) = t.tap.as_mut() {
                let rec = &mut t.recorder;
                tap.drain(|p| rec.push(p));
                tap.poll_stats();
                self.totals.passed += tap.stats.passed;
                self.totals.dropped += tap.stats.dropped;
                self.totals.read += tap.stats.read;
            }
        }
        out.extend(self.cycle(now_ns, true));
        let open = self.taps.iter().filter(|t| t.tap.is_some()).count();
        if self.opts.enabled && !self.taps.is_empty() {
            let tt = self.totals;
            out.push(Output::Notice {
                ts_ns: now_ns,
                text: format!(
                    "packet tap: {open} namespace(s); {} packet(s) passed the filter, {} dropped by the ring, {} analysed in {} cycle(s) using {:.0} ms of CPU (longest cycle {:.1} ms){}",
                    tt.passed,
                    tt.dropped,
                    tt.cycle_packets,
                    tt.cycles,
                    tt.cycle_cpu.as_secs_f64() * 1e3,
                    tt.cycle_cpu_max.as_secs_f64() * 1e3,
                    if tt.recorded_findings > 0 { format!("; {} finding(s) recorded", tt.recorded_findings) } else { String::new() }
                ),
            });
        }
        self.jobs = None; // the worker ends after its current collection
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
        let findings = std::mem::take(&mut self.findings);
        (out, self.totals, findings)
    }
}

/// What is not seen without a tap.
fn blind_on_wire() -> &'static str {
    "incidents seen only on the wire (bridge-nf-bypass, tw-recycle-paws, dns-id-collision, go-resolver-dns-first, dns-upstream-unreachable, and the RST itself) are not watched live; capture and `netsleuth analyze` them"
}

/// What the filter cannot show, even with the tap open.
fn blind_with_filter(ebpf: bool) -> String {
    use super::flight::{HIDDEN_BY_CLASSIC_FILTER, HIDDEN_BY_FILTER, NOT_FROM_TAP};
    let (what, hidden) = if ebpf {
        (
            "the data and bare ACKs of busy flows (a packet seen at several points under one tuple passes at its first)",
            HIDDEN_BY_FILTER,
        )
    } else {
        ("TCP data and bare ACKs", HIDDEN_BY_CLASSIC_FILTER)
    };
    let hidden: Vec<&str> = hidden.iter().map(|i| i.id).collect();
    let mut s = format!(
        "Not passed: {what}, and tunnel underlays (VXLAN/Geneve outer packets), so the capture evidence of {} is not on the tap (those with kernel events are followed through conntrack events, sockets and counters)",
        hidden.join(", ")
    );
    for (i, why) in NOT_FROM_TAP {
        s.push_str(&format!("; {} is not named from the tap: {why}", i.id));
    }
    s.push_str("; IPv6 behind extension headers is not tapped");
    s
}

/// Writes the finding's window: `finding-<n>-<id>.pcap` (one namespace) or `finding-<n>-<id>-<k>.pcap`
/// (the k-th namespace's, in the cycle's input order; empty ones left out), frame numbers as in the
/// finding; `finding-<n>-<id>.node.tar.gz` (the node's facts: the context the cycle used); and
/// `finding-<n>-<id>.json` (the finding in the report's shape, its window, and the command that
/// finds it again: `netsleuth analyze --node BUNDLE PCAP...`). Returns the files' common stem.
pub fn write_record(
    dir: &Path,
    n: u64,
    recorders: &[&FlightRecorder],
    a: &Announced,
    facts: Option<&NodeFacts>,
) -> std::io::Result<String> {
    std::fs::create_dir_all(dir)?;
    let stem = format!("finding-{n}-{}", a.finding.id);
    let with_packets: Vec<&&FlightRecorder> = recorders.iter().filter(|r| !r.is_empty()).collect();
    let mut pcaps = Vec::new();
    for (k, r) in with_packets.iter().enumerate() {
        let name = if with_packets.len() == 1 {
            format!("{stem}.pcap")
        } else {
            format!("{stem}-{k}.pcap")
        };
        let mut f = std::io::BufWriter::new(std::fs::File::create(dir.join(&name))?);
        r.write_pcap(a.window, &mut f)?;
        std::io::Write::flush(&mut f)?;
        pcaps.push(serde_json::json!({"file": name, "input": r.name()}));
    }
    let bundle = dir.join(format!("{stem}.node.tar.gz"));
    let bundle_name = match facts {
        Some(f) => {
            crate::write_bundle(f, &bundle).map_err(|e| std::io::Error::other(e.to_string()))?;
            Some(format!("{stem}.node.tar.gz"))
        }
        None => None,
    };
    let files: Vec<String> = pcaps
        .iter()
        .filter_map(|p| p["file"].as_str().map(str::to_string))
        .collect();
    let v = serde_json::json!({
        "window_start_ns": a.window.0,
        "window_end_ns": a.window.1,
        "pcaps": pcaps,
        "bundle": bundle_name,
        "bundle_missing_why": if bundle_name.is_none() { Some("the node's facts were not collected yet; the cycle used no node context") } else { None },
        "analyze": format!(
            "netsleuth analyze {}{}",
            bundle_name.as_ref().map(|b| format!("--node {b} ")).unwrap_or_default(),
            files.join(" ")
        ),
        "finding": netsleuth_core::report::json::Finding::from(&a.finding),
    });
    std::fs::write(
        dir.join(format!("{stem}.json")),
        serde_json::to_string_pretty(&v).unwrap_or_default() + "\n",
    )?;
    Ok(stem)
}

/// Removes the oldest findings' files (by their number) until the directory's `finding-*` files fit.
fn trim_record_dir(dir: &Path, cap: u64) -> std::io::Result<()> {
    let mut files: Vec<(u64, PathBuf, u64)> = Vec::new();
    for e in std::fs::read_dir(dir)?.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(n) = name
            .strip_prefix("finding-")
            .and_then(|r| r.split('-').next())
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        let size = e.metadata().map(|m| m.len()).unwrap_or(0);
        files.push((n, e.path(), size));
    }
    let mut total: u64 = files.iter().map(|f| f.2).sum();
    files.sort();
    let newest = files.last().map(|f| f.0);
    for (n, path, size) in files {
        if total <= cap || Some(n) == newest {
            break;
        }
        std::fs::remove_file(&path)?;
        total -= size;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::trim_record_dir;

    #[test]
    fn the_record_directory_keeps_the_newest_findings_within_its_cap() {
        let dir = std::env::temp_dir().join(format!("netsleuth-trim-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        for n in 1..=4 {
            for ext in ["pcap", "json"] {
                std::fs::write(dir.join(format!("finding-{n}-x.{ext}")), [0u8; 100])
                    .expect("write");
            }
        }
        std::fs::write(dir.join("notes.txt"), [0u8; 1000]).expect("write");
        trim_record_dir(&dir, 450).expect("trim");
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "finding-3-x.json",
                "finding-3-x.pcap",
                "finding-4-x.json",
                "finding-4-x.pcap",
                "notes.txt"
            ]
        );
        // The newest finding stays even when it alone exceeds the cap.
        trim_record_dir(&dir, 10).expect("trim");
        assert!(dir.join("finding-4-x.pcap").exists() && !dir.join("finding-3-x.pcap").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

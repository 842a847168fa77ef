use super::terminal::progress_bar;
use super::{emit, load_names, CliError, Term};
use crate::cli::AnalyzeArgs;
use crate::input::{open_capture_with, FileRead};
use netsleuth_core::analysis::{HalfTime, Timings};
use netsleuth_core::node::NodeContext;
use netsleuth_core::report::Report;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

pub fn run(a: AnalyzeArgs, term: &Term) -> Result<i32, CliError> {
    let begun = Instant::now();
    tune_allocator();
    if a.files.iter().filter(|f| f.as_os_str() == "-").count() > 1 {
        return Err(CliError::Usage("stdin (`-`) can be given only once".into()));
    }
    let mut k8s_names = load_names(&a.format)?;
    let (mut node, node_notes, bundle_names) = match &a.node {
        Some(bundle) => super::node::node_context(bundle)?,
        None => (NodeContext::default(), Vec::new(), Default::default()),
    };
    k8s_names.merge(bundle_names);
    if let Some(h) = &a.hosts {
        node.hosts.extend(read_hosts(h)?);
        if node.source.is_empty() {
            node.source = h.display().to_string();
        }
    }
    // A long input gets a progress bar on a terminal's stderr (its bytes as read from the files;
    // stdin's length is unknown).
    let total: u64 = a
        .files
        .iter()
        .filter(|f| f.as_os_str() != "-")
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let bar = progress_bar(term, total, "reading captures");
    let threads = a
        .threads
        .map(|n| n as usize)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get().min(2)));
    let read = file_read(a.no_mmap, threads);
    let mut mapping_budget = MAPPED_RESIDENT_MAX;
    let mut inputs = Vec::new();
    for f in &a.files {
        // Each file mapped may keep up to `MAPPED_FILE_RESIDENT` of itself resident; past the
        // budget, files are read through buffers (stdin has no length and is read anyway).
        let resident = std::fs::metadata(f).map_or(0, |m| m.len().min(MAPPED_FILE_RESIDENT));
        let read = match mapping_budget.checked_sub(resident) {
            Some(left) => {
                mapping_budget = left;
                read
            }
            None => FileRead::Buffered,
        };
        inputs.push(
            open_capture_with(f, bar.clone(), read)
                .map_err(CliError::io(format!("reading {}", f.display())))?,
        );
    }
    let names: Vec<String> = inputs.iter().map(|i| i.name.clone()).collect();
    let limits = netsleuth_core::analysis::Limits {
        memory_budget: (a.memory_budget as usize) << 20,
    };
    let opened = begun.elapsed();
    let analysis = netsleuth_core::analysis::analyze_threads(inputs, &node, &limits, threads);
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if analysis.failed_inputs.len() == names.len() {
        return Err(CliError::NoCapture {
            why: analysis.failed_inputs,
        });
    }
    let st = &analysis.stats;
    if st.records > 0 && st.ip_packets == 0 && st.non_ip_frames == 0 {
        // Every frame was of a link type we do not decode (or damaged): an all-clear would be a lie.
        let why: Vec<String> = analysis
            .diagnostics
            .iter()
            .map(|d| format!("{}: {} ×{}", d.source, d.code, d.count))
            .collect();
        return Err(CliError::NothingExamined {
            inputs: names.join(", "),
            records: st.records,
            why: why.join("; "),
        });
    }
    let mut notes: Vec<String> = analysis
        .failed_inputs
        .iter()
        .map(|(n, e)| format!("{n} was not analysed: {e}"))
        .collect();
    notes.extend(node_notes);
    if a.node.is_none() {
        notes.push("capture-only analysis: give --node BUNDLE (from `netsleuth collect`) to confirm causes with the node's facts".into());
    }
    let (timings, records, bytes) = (analysis.timings, st.records, st.bytes);
    let report = Report {
        command: "analyze",
        inputs: names,
        findings: analysis.findings,
        diagnostics: analysis.diagnostics,
        stats: serde_json::to_value(&analysis.stats).expect("stats serialise"),
        notes,
        symptoms: analysis.symptoms,
        blind_spots: analysis.blind_spots,
    };
    let reported = Instant::now();
    let code = emit(&report, (&a.format).into(), &k8s_names, term)?;
    if a.timings {
        let phases = Phases {
            opening: opened,
            analysis: timings,
            report: reported.elapsed(),
            total: begun.elapsed(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        eprint!("{}", render_timings(&phases, records, bytes));
    }
    Ok(code)
}

/// One run's wall time by phase (`--timings`).
struct Phases {
    /// From the start to the first record: the node bundle, names, the files opened and mapped.
    opening: Duration,
    analysis: Timings,
    /// The report rendered and written.
    report: Duration,
    total: Duration,
    /// Cores this process may run on: a second one is what `--threads 2` would use.
    cores: usize,
}

/// Halves whose shares of waiting differ by less than this many points are called balanced.
const BALANCED_POINTS: f64 = 3.0;

/// Packets analysed in less time than this say nothing of which half set the pace: the threads'
/// start and the first batches are most of it.
const PACE_AFTER: Duration = Duration::from_millis(20);

/// `1.234 s`, `12.3 ms`, `700 µs`: three figures at any scale, from a capture of a few packets to
/// one of hours.
fn human_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 1.0 {
        format!("{s:.3} s")
    } else if s >= 1e-3 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{:.0} µs", s * 1e6)
    }
}

/// `--timings`, for a person: each phase's time, the packets' rate, and with two threads which half
/// bounded the run — the one that waited less for the other.
fn render_timings(p: &Phases, records: u64, bytes: u64) -> String {
    use netsleuth_core::report::human::thousands;
    let t = &p.analysis;
    let threads = if t.halves.is_some() { 2 } else { 1 };
    let secs = human_duration;
    let packets_s = t.packets.as_secs_f64();
    let rate = if packets_s > 0.0 && records > 0 {
        format!(
            ": {:.2} GB/s of packet data, {:.1} M packets/s, {:.0} ns a packet",
            bytes as f64 / packets_s / 1e9,
            records as f64 / packets_s / 1e6,
            packets_s * 1e9 / records as f64
        )
    } else {
        String::new()
    };
    let mut out = format!(
        "timings, {} thread{} ({} records, {:.1} MB of packet data): {} in all\n",
        threads,
        if threads == 1 { "" } else { "s" },
        thousands(records),
        bytes as f64 / 1e6,
        secs(p.total)
    );
    out += &format!("  opening the inputs   {}\n", secs(p.opening));
    out += &format!("  the packets          {}{rate}\n", secs(t.packets));
    if let Some(h) = &t.halves {
        out += &format!(
            "    reading thread     {} busy (framing, decoding), {} waiting for the back\n",
            secs(h.reading.busy),
            secs(h.reading.waited)
        );
        let idle = if h.back_idle_work > Duration::ZERO {
            format!(
                " ({} of it mapping the reading thread's next pages)",
                secs(h.back_idle_work)
            )
        } else {
            String::new()
        };
        out += &format!(
            "    back               {} busy (flow engine, DNS), {} waiting for the reading thread{idle}\n",
            secs(h.back.busy),
            secs(h.back.waited)
        );
    }
    out += &format!(
        "  finishing            {} (connections still live, the detectors' conclusions)\n",
        secs(t.finish)
    );
    out += &format!("  the report           {}\n", secs(p.report));
    let waited = |h: &HalfTime| {
        let whole = (h.busy + h.waited).as_secs_f64();
        if whole > 0.0 {
            h.waited.as_secs_f64() / whole * 100.0
        } else {
            0.0
        }
    };
    match &t.halves {
        Some(_) if t.packets < PACE_AFTER => {
            out += "  too short a run to tell which half set the pace\n";
        }
        Some(h) => {
            let (reading, back) = (waited(&h.reading), waited(&h.back));
            out += &if (reading - back).abs() < BALANCED_POINTS {
                format!(
                    "  the halves were about equally busy (each waited {:.0}–{:.0} % of the time for the other)\n",
                    reading.min(back),
                    reading.max(back)
                )
            } else {
                let (busier, pace) = if back < reading {
                    ("back", "the flow engine")
                } else {
                    ("reading thread", "framing and decoding")
                };
                format!(
                    "  the {busier} bounded the packets ({pace} set the pace): it waited {:.0} % of the time, the other half {:.0} %\n",
                    reading.min(back),
                    reading.max(back)
                )
            };
        }
        None if p.cores >= 2 => {
            out += "  one thread: `--threads 2` runs framing and decoding beside the flow engine\n";
        }
        None => {}
    }
    out
}

/// Allocator settings for this one batch pass (glibc only; elsewhere the defaults, which are
/// correct too). Only for `analyze`: `watch` runs for days and should give memory back.
///
/// - An analysis grows its tables, frees the old ones and moves on; by default glibc hands large
///   blocks to `mmap` and returns the top of its heap to the kernel as soon as 128 KiB are free
///   there, so the same memory is faulted in and zeroed again and again. Kept instead (up to
///   256 MiB): 3–5 % faster on a snaplen-128 node capture, one or two threads, +0.6 MB peak RSS.
/// - The flow engine's work is a few cache misses per connection in a slab and hash tables of
///   megabytes, and in a VM each TLB miss is a two-level page walk. The first 64 MiB of the heap
///   are reserved up front and advised for transparent huge pages (`MADV_HUGEPAGE`; no effect where
///   THP is `never`), all threads allocating there (one arena): 6 % faster one thread, 13 % two,
///   for +1.6–2.4 MB of peak RSS — paid for by the flow engine's slab in chunks, which lowered it
///   by as much (BENCHMARKS.md, "Per-packet cost, fifth pass").
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const KEEP: libc::c_int = 256 << 20;
        const HUGE_PAGE: usize = 2 << 20;
        const ADVISED: usize = 64 << 20;
        // SAFETY: mallopt only sets glibc's allocator parameters; it is called before the analysis
        // allocates its tables, and a refusal (return 0) leaves the defaults. The reserved block is
        // ours between malloc and free; MADV_HUGEPAGE changes how its pages are backed, not what
        // they hold, and stays on the range after the block goes back to the top of the heap
        // (which is never trimmed below 256 MiB, see above). If malloc maps the block instead, the
        // advice leaves with it and nothing else changes.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, KEEP);
            libc::mallopt(libc::M_TRIM_THRESHOLD, KEEP);
            libc::mallopt(libc::M_ARENA_MAX, 1);
            let block = libc::malloc(ADVISED);
            if !block.is_null() {
                let start = (block as usize).next_multiple_of(HUGE_PAGE);
                let end = (block as usize + ADVISED) / HUGE_PAGE * HUGE_PAGE;
                if end > start {
                    libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
                }
                libc::free(block);
            }
        }
    }
}

/// What one mapped capture file may keep resident, at most: its pages behind the reader up to the
/// reader's next step and a step late (1 + 1 MiB), with two threads those mapped ahead (4 MiB),
/// and a folio's worth on either side. A smaller file: its size.
const MAPPED_FILE_RESIDENT: u64 = 8 << 20;
/// What the mapped files of one analysis may keep resident together (four large files, or many
/// small ones); the files past it are read through buffers that share one budget
/// (`Limits::input_buffer`). Merged, every mapped file keeps its pages resident at once: 100 files
/// of 3.2 MB of small records peaked at 313 MB on one thread and 325 MB on two, all mapped, and
/// 36 and 38 MB all read, 64 and 65 MB within this budget
/// (`many_capture_files_at_once_share_one_read_budget`); 1,000 files of 32 KB, all within it,
/// 41 and 54 MB, and 126 and 129 MB all read (each read buffer starts at 64 KiB).
const MAPPED_RESIDENT_MAX: u64 = 32 << 20;

/// How capture files are read for an analysis on `threads` threads, where the mapping budget
/// (`MAPPED_RESIDENT_MAX`) leaves room. With two, a mapped file's pages are mapped ahead of the
/// reading thread in the time either core waits for the other (a full-size file, read through a
/// buffer by one thread, is mapped too and its lines read ahead); with one, the reading thread
/// maps them.
fn file_read(no_mmap: bool, threads: usize) -> FileRead {
    match (no_mmap, threads) {
        (true, _) => FileRead::Buffered,
        (false, 1) => FileRead::Mapped,
        (false, _) => FileRead::MappedAhead,
    }
}

/// Parse an /etc/hosts file: `IP name [aliases...]`, comments and junk skipped.
pub fn read_hosts(path: &Path) -> Result<Vec<(IpAddr, String)>, CliError> {
    let text = std::fs::read_to_string(path).map_err(CliError::io(format!(
        "reading hosts file {}",
        path.display()
    )))?;
    Ok(parse_hosts(&text))
}

/// Each (address, name) pair of the hosts file, read with the node crate's parser.
pub fn parse_hosts(text: &str) -> Vec<(IpAddr, String)> {
    netsleuth_node::parse::resolver::parse_hosts(text)
        .value
        .into_iter()
        .filter_map(|e| Some((e.addr.parse::<IpAddr>().ok()?, e.names)))
        .flat_map(|(ip, names)| names.into_iter().map(move |n| (ip, n)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use netsleuth_core::analysis::Halves;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn phases(halves: Option<Halves>) -> Phases {
        Phases {
            opening: ms(1),
            analysis: Timings {
                packets: ms(100),
                halves,
                finish: ms(4),
            },
            report: ms(2),
            total: ms(108),
            cores: 2,
        }
    }

    fn half(busy: u64, waited: u64) -> HalfTime {
        HalfTime {
            busy: ms(busy),
            waited: ms(waited),
        }
    }

    #[test]
    fn the_timings_name_each_phase_the_rate_and_the_half_that_set_the_pace() {
        let one = render_timings(&phases(None), 1_000_000, 128_000_000);
        assert!(one.starts_with(
            "timings, 1 thread (1,000,000 records, 128.0 MB of packet data): 108.0 ms in all\n"
        ));
        assert!(one.contains(
            "the packets          100.0 ms: 1.28 GB/s of packet data, 10.0 M packets/s, 100 ns a packet"
        ));
        assert!(one.contains("finishing            4.0 ms"), "{one}");
        assert!(one.contains("`--threads 2`"), "{one}");

        // The back waited 2 % of the time, the reading thread 30 %: the back set the pace.
        let back_bound = Halves {
            reading: half(70, 30),
            back: half(98, 2),
            back_idle_work: ms(1),
        };
        let two = render_timings(&phases(Some(back_bound)), 1_000_000, 128_000_000);
        assert!(
            two.contains(
                "reading thread     70.0 ms busy (framing, decoding), 30.0 ms waiting for the back"
            ),
            "{two}"
        );
        assert!(two.contains(
            "back               98.0 ms busy (flow engine, DNS), 2.0 ms waiting for the reading thread (1.0 ms of it mapping the reading thread's next pages)\n"
        ), "{two}");
        assert!(two.contains(
            "the back bounded the packets (the flow engine set the pace): it waited 2 % of the time, the other half 30 %"
        ), "{two}");
        assert!(!two.contains("`--threads 2`"), "{two}");

        let reading_bound = Halves {
            reading: half(95, 5),
            back: half(60, 40),
            back_idle_work: Duration::ZERO,
        };
        let two = render_timings(&phases(Some(reading_bound)), 1_000_000, 128_000_000);
        assert!(
            two.contains("the reading thread bounded the packets (framing and decoding"),
            "{two}"
        );

        let balanced = Halves {
            reading: half(94, 6),
            back: half(93, 7),
            back_idle_work: Duration::ZERO,
        };
        let two = render_timings(&phases(Some(balanced)), 1_000_000, 128_000_000);
        assert!(
            two.contains("the halves were about equally busy (each waited 6–7 %"),
            "{two}"
        );
    }

    #[test]
    fn durations_read_in_the_unit_that_fits_and_a_short_run_names_no_pace() {
        assert_eq!(human_duration(Duration::from_millis(1500)), "1.500 s");
        assert_eq!(human_duration(Duration::from_micros(12_340)), "12.3 ms");
        assert_eq!(human_duration(Duration::from_micros(700)), "700 µs");
        let mut p = phases(Some(Halves {
            reading: half(1, 4),
            back: half(5, 0),
            back_idle_work: Duration::ZERO,
        }));
        p.analysis.packets = ms(5);
        let text = render_timings(&p, 1_000, 100_000);
        assert!(
            text.contains("too short a run to tell which half set the pace"),
            "{text}"
        );
        assert!(!text.contains("bounded"), "{text}");
    }

    #[test]
    fn no_records_means_no_rate_and_one_core_no_advice_of_two_threads() {
        let mut p = phases(None);
        p.cores = 1;
        let text = render_timings(&p, 0, 0);
        assert!(text.contains("the packets          100.0 ms\n"), "{text}");
        assert!(!text.contains("--threads"), "{text}");
    }
}

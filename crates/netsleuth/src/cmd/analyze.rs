use super::terminal::progress_bar;
use super::{emit, load_names, CliError, Term};
use crate::cli::AnalyzeArgs;
use crate::input::{open_capture_with, FileRead};
use netsleuth_core::node::NodeContext;
use netsleuth_core::report::Report;
use std::net::IpAddr;
use std::path::Path;

pub fn run(a: AnalyzeArgs, term: &Term) -> Result<i32, CliError> {
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
    emit(&report, (&a.format).into(), &k8s_names, term)
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

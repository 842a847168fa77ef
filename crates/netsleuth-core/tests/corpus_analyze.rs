//! The full analysis (not only framing and decoding) over every real-world capture of
//! ../shared/corpus: no panic, no hang, memory bounded by live state, and no incident finding on the
//! captures that are known to be ordinary traffic (other projects' protocol test suites).

use netsleuth_core::node::NodeContext;
use netsleuth_core::{analyze, FindingKind, Input};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus")
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n == "node") {
                continue;
            }
            walk(&p, out);
        } else if !p.extension().is_some_and(|x| x == "tsv" || x == "md") {
            out.push(p);
        }
    }
}

/// Captures in which the analysis finds something, with what it is and why that is right. Each was
/// checked against tshark: the DNS servers named really never answered in those captures.
const EXPECTED_FINDINGS: &[(&str, &str)] = &[
    // 200.85.32.2-4 get 15 queries each and never answer while 200.85.32.1 answers.
    ("monitoreo-trafico.pcap", "dns-upstream-unreachable"),
    // 72.82.204.32 gets 10 queries, never answers; 200.30.98.194 answers the same client.
    ("Lab-3B--de-Telemática.pcap", "dns-upstream-unreachable"),
    // No server answers at all over minutes (possible only): a one-way capture or a dead resolver.
    ("hari.pcap", "dns-upstream-unreachable"),
    ("smb-on-windows-10.pcapng", "dns-upstream-unreachable"),
    ("mgove413_3_5_10.pcap", "dns-upstream-unreachable"),
];

#[test]
fn full_analysis_of_every_corpus_capture() {
    let root = corpus();
    if !root.exists() {
        eprintln!("corpus not found at {}: skipped", root.display());
        return;
    }
    let mut files = Vec::new();
    walk(&root, &mut files);
    files.sort();
    let started = Instant::now();
    let mut unexpected = Vec::new();
    let mut peak_live = 0;
    let mut analysed = 0;
    for f in &files {
        let file = std::fs::File::open(f).unwrap();
        let reader: Box<dyn std::io::Read + Send> = if f.extension().is_some_and(|x| x == "gz") {
            Box::new(flate2::read::MultiGzDecoder::new(file))
        } else {
            Box::new(file)
        };
        let t = Instant::now();
        let a = analyze(
            vec![Input::stream(f.display().to_string(), reader)],
            &NodeContext::default(),
        );
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{} took {:?}",
            f.display(),
            t.elapsed()
        );
        if a.failed_inputs.is_empty() {
            analysed += 1;
        }
        peak_live = peak_live.max(a.stats.tcp_peak_live_connections);
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        for finding in a
            .findings
            .iter()
            .filter(|x| x.kind == FindingKind::Incident)
        {
            if !EXPECTED_FINDINGS
                .iter()
                .any(|(n, id)| *n == name && *id == finding.id)
            {
                unexpected.push(format!(
                    "{}: {} {:?}: {}",
                    f.display(),
                    finding.id,
                    finding.confidence,
                    finding.summary
                ));
            }
        }
    }
    eprintln!(
        "analysed {analysed} of {} files in {:?}; peak live TCP connections {peak_live}",
        files.len(),
        started.elapsed()
    );
    assert!(
        analysed > 1800,
        "only {analysed} captures could be analysed"
    );
    assert!(
        unexpected.is_empty(),
        "incident findings on ordinary captures:\n{}",
        unexpected.join("\n")
    );
}

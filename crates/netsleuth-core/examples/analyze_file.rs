//! The core's analysis on one capture file, one thread, without the CLI: what `valgrind
//! --tool=callgrind` and `perf record` profile when the per-packet cost is measured (BENCHMARKS.md,
//! "Where the instructions per packet go"). Builds in a fraction of the CLI's release time.
//!
//!   cargo build --release -p netsleuth-core --example analyze_file
//!   valgrind --tool=callgrind target/release/examples/analyze_file capture.pcap
//!
//! A second argument runs the analysis on that many threads (`analyze --threads N`); with
//! `--separate-threads=yes` callgrind then counts the instructions of each half of the pipeline.

use netsleuth_core::analysis::{analyze_threads, Limits};
use netsleuth_core::node::NodeContext;
use netsleuth_core::{InMemory, Input, MemoryBytes};

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: analyze_file CAPTURE [THREADS]");
        std::process::exit(2);
    };
    let threads = match std::env::args().nth(2).map(|t| t.parse::<usize>()) {
        None => 1,
        Some(Ok(n)) if n >= 1 => n,
        Some(_) => {
            eprintln!("analyze_file: THREADS must be a number of at least 1");
            std::process::exit(2);
        }
    };
    // Read whole before the analysis, so a profile shows the analysis, not the reads (as `analyze`
    // maps a file).
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("analyze_file: cannot read {path}: {e}");
            std::process::exit(2);
        }
    };
    let a = analyze_threads(
        vec![Input::memory(
            path,
            InMemory {
                bytes: MemoryBytes::Owned(bytes),
                consumed: None,
                idle: None,
            },
        )],
        &NodeContext::default(),
        &Limits::default(),
        threads,
    );
    println!("{} records, {} findings", a.stats.records, a.findings.len());
}

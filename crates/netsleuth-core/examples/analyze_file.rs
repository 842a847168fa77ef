//! The core's analysis on one capture file, one thread, without the CLI: what `valgrind
//! --tool=callgrind` and `perf record` profile when the per-packet cost is measured (BENCHMARKS.md,
//! "Where the instructions per packet go"). Builds in a fraction of the CLI's release time.
//!
//!   cargo build --release -p netsleuth-core --example analyze_file
//!   valgrind --tool=callgrind target/release/examples/analyze_file capture.pcap

use netsleuth_core::analysis::{analyze_with, Limits};
use netsleuth_core::node::NodeContext;
use netsleuth_core::{InMemory, Input, MemoryBytes};

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: analyze_file CAPTURE");
        std::process::exit(2);
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
    let a = analyze_with(
        vec![Input::memory(
            path,
            InMemory {
                bytes: MemoryBytes::Owned(bytes),
                consumed: None,
            },
        )],
        &NodeContext::default(),
        &Limits::default(),
    );
    println!("{} records, {} findings", a.stats.records, a.findings.len());
}

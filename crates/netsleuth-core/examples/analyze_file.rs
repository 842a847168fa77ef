//! The core's analysis on one capture file, one thread, without the CLI: what `valgrind
//! --tool=callgrind` and `perf record` profile when the per-packet cost is measured (BENCHMARKS.md,
//! "Where the instructions per packet go"). Builds in a fraction of the CLI's release time.
//!
//!   cargo build --release -p netsleuth-core --example analyze_file
//!   valgrind --tool=callgrind target/release/examples/analyze_file capture.pcap

use netsleuth_core::analysis::{analyze_with, Input, Limits};
use netsleuth_core::node::NodeContext;

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: analyze_file CAPTURE");
        std::process::exit(2);
    };
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("analyze_file: cannot open {path}: {e}");
            std::process::exit(2);
        }
    };
    let a = analyze_with(
        vec![Input {
            name: path,
            reader: Box::new(file),
        }],
        &NodeContext::default(),
        &Limits::default(),
    );
    println!("{} records, {} findings", a.stats.records, a.findings.len());
}

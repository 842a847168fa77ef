//! Bytes → `CaptureReader` (every record, every accessor), then the whole `analyze` pipeline on the same
//! bytes with an empty `NodeContext`, then both report renderers.
//!
//! Shared by the fuzz target (fuzz/fuzz_targets/capture_reader.rs) and the stable replay tests, which include
//! this file with `#[path]`: a reproducer replays through exactly the code that found it.

use netsleuth_core::capture::CaptureReader;
use netsleuth_core::node::NodeContext;
use netsleuth_core::report::{human, json, Report};
use netsleuth_core::{analyze, InMemory, Input, MemoryBytes};
use std::io::Cursor;

/// One fuzz input: panics on any violated invariant, returns otherwise.
pub fn run(data: &[u8]) {
    if let Ok(mut r) = CaptureReader::new(data, "fuzz") {
        let _ = r.format();
        let mut n = 0u64;
        let mut bytes = 0usize;
        loop {
            // Alternate peeking and plain reads, as the k-way merge does.
            if n % 2 == 0 {
                let _ = r.peek_ts();
            }
            let Some(rec) = r.next_record() else { break };
            n += 1;
            bytes += rec.data.len();
            assert!(
                rec.data.len() <= data.len(),
                "a record larger than its file"
            );
            let (iface, lt) = (rec.interface, rec.linktype);
            let _ = r.interface_name(iface);
            assert_eq!(r.interface_linktype(iface).unwrap_or(lt), lt);
        }
        assert!(bytes <= data.len());
        let _ = (r.truncated_file(), r.bytes_consumed(), r.buffer_capacity());
        let _ = r.diagnostics();
    }

    // The same bytes held in memory as a whole (how `analyze` reads a mapped file) frame alike.
    let in_memory = analyze(
        vec![Input::memory(
            "fuzz.pcap",
            InMemory {
                bytes: MemoryBytes::Owned(data.to_vec()),
                consumed: None,
                idle: None,
            },
        )],
        &NodeContext::default(),
    );
    let analysis = analyze(
        vec![Input::stream("fuzz.pcap", Cursor::new(data.to_vec()))],
        &NodeContext::default(),
    );
    let _ = in_memory.has_incident();
    let _ = analysis.has_incident();
    let report = Report {
        command: "analyze",
        inputs: vec!["fuzz.pcap".into()],
        findings: analysis.findings,
        diagnostics: analysis.diagnostics,
        stats: serde_json::to_value(&analysis.stats).expect("stats serialise"),
        notes: Vec::new(),
        symptoms: analysis.symptoms,
        blind_spots: analysis.blind_spots,
    };
    let _ = human::render(&report);
    let _ = json::render(&report);
    let _ = json::exit_code(&report);
}

//! Bytes → `bundle::read_bundle_from` → `check`, `to_node_context`, `diff` and the report renderers.
//!
//! Input that starts with the gzip magic is read as is (a whole `.tar.gz`); anything else is taken as
//! the tar itself and gzipped (stored, no compression) first, so that the fuzzer mutates tar headers and
//! members instead of deflate streams and CRCs. The bytes are read twice: with the default limits
//! (then checked and reported), and with tight ones (64 KiB in all, 16 KiB a member).
//!
//! Shared by the fuzz target (fuzz/fuzz_targets/bundle_reader.rs) and the stable replay tests, which include
//! this file with `#[path]`: a reproducer replays through exactly the code that found it.

use netsleuth_core::report::{human, json, Report};
use netsleuth_node::bundle::{read_bundle_from, read_bundle_from_with, ReadLimits};
use netsleuth_node::{check, diff, to_node_context, CheckOptions};
use std::io::Write;
use std::path::Path;

/// One fuzz input: panics on any violated invariant, returns otherwise.
pub fn run(data: &[u8]) {
    let gz;
    let bytes = if data.starts_with(&[0x1f, 0x8b]) {
        data
    } else {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
        e.write_all(data).unwrap();
        gz = e.finish().unwrap();
        &gz[..]
    };
    let tight = ReadLimits {
        total: 64 << 10,
        member: 16 << 10,
    };
    if let Err(e) = read_bundle_from_with(bytes, Path::new("fuzz.tar.gz"), &tight) {
        let _ = e.to_string();
    }
    let facts = match read_bundle_from(bytes, Path::new("fuzz.tar.gz")) {
        Ok(f) => f,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let r = check(&facts, &CheckOptions::default());
    let _ = r.has_incident();
    let _ = to_node_context(&facts);
    let d = diff(&facts, &facts);
    let _ = serde_json::to_string(&d);
    let report = Report {
        command: "check",
        inputs: vec!["fuzz.tar.gz".into()],
        findings: netsleuth_core::detect::one_per_incident(r.findings),
        diagnostics: r.diagnostics,
        stats: serde_json::to_value(&r.summary).expect("summary serialises"),
        notes: Vec::new(),
        symptoms: Vec::new(),
        blind_spots: Vec::new(),
    };
    let _ = human::render(&report);
    let _ = json::render(&report);
}

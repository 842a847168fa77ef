//! The packet tap: its filter on the lab's real captures (which incidents survive it), the flight
//! recorder's dedupe and `--record` round trip, and the kernel side (a ring in a private namespace).

use netsleuth_core::capture::CaptureReader;
use netsleuth_core::node::NodeContext;
use netsleuth_node::live::bpf::{run, tap_filter};
use netsleuth_node::live::flight::{FlightRecorder, HIDDEN_BY_FILTER, NOT_FROM_TAP};
use netsleuth_node::live::tap::TappedPacket;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/lab")
}

fn context(dir: &Path) -> NodeContext {
    let text = std::fs::read_to_string(dir.join("facts.json")).unwrap_or_default();
    serde_json::from_str(&text).unwrap_or_default()
}

/// Replays a `-i any` capture (LINUX_SLL2) into a recorder as the tap would have given it: through the
/// filter (by the same program the kernel runs, in the test interpreter), cut to its snap length.
/// Returns (records, passed).
fn replay(pcap: &Path, rec: &mut FlightRecorder, filtered: bool) -> (u64, u64) {
    let bytes = std::fs::read(pcap).expect("fixture");
    let mut r = CaptureReader::new(&bytes[..], pcap.display().to_string()).expect("pcap");
    let prog = tap_filter();
    let (mut n, mut passed) = (0, 0);
    while let Some(rec_) = r.next_record() {
        n += 1;
        let d = rec_.data;
        if rec_.linktype != 276 || d.len() < 20 {
            continue;
        }
        let protocol = u16::from_be_bytes([d[0], d[1]]);
        let net = &d[20..];
        let snap = if filtered {
            run(&prog, protocol, net) as usize
        } else {
            usize::MAX
        };
        if snap == 0 {
            continue;
        }
        passed += 1;
        rec.push(&TappedPacket {
            ts_ns: rec_.ts_ns,
            ifindex: u32::from_be_bytes([d[4], d[5], d[6], d[7]]),
            pkttype: d[10],
            protocol,
            hatype: u16::from_be_bytes([d[8], d[9]]),
            orig_len: rec_.orig_len.saturating_sub(20),
            data: &net[..net.len().min(snap)],
        });
    }
    (n, passed)
}

fn ids(dir: &Path, file: &str, filtered: bool) -> (BTreeSet<&'static str>, u64, u64) {
    let mut rec = FlightRecorder::new(format!("tap:{file}"));
    let (n, passed) = replay(&dir.join(file), &mut rec, filtered);
    let end = i64::MAX / 2;
    let _ = end;
    let (found, _) = rec.cycle(last_ts(&dir.join(file)), &context(dir), true);
    (found.iter().map(|a| a.finding.id).collect(), n, passed)
}

fn last_ts(pcap: &Path) -> i64 {
    let bytes = std::fs::read(pcap).expect("fixture");
    let mut r = CaptureReader::new(&bytes[..], "x").expect("pcap");
    let mut t = 0;
    while let Some(rec) = r.next_record() {
        t = t.max(rec.ts_ns);
    }
    t
}

/// Which incidents the node's `-i any` capture shows with and without the tap's filter.
#[test]
fn lab_captures_through_the_filter() {
    let mut rows = Vec::new();
    let mut dirs: Vec<_> = std::fs::read_dir(fixtures())
        .expect("fixtures/lab")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for dir in &dirs {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let (all, n, _) = ids(dir, "node.pcap", false);
        let (kept, _, passed) = ids(dir, "node.pcap", true);
        rows.push((name, all, kept, n, passed));
    }
    let mut failures = Vec::new();
    for (name, all, kept, n, passed) in &rows {
        eprintln!("{name}: {passed}/{n} passed; unfiltered {all:?}; filtered {kept:?}");
        let own = name.strip_suffix("-mitigated").unwrap_or(name);
        let mitigated = own != name.as_str();
        let hidden = HIDDEN_BY_FILTER.iter().any(|i| i.id == own)
            || NOT_FROM_TAP.iter().any(|(i, _)| i.id == own);
        // Through the filter: never an incident the full capture does not show.
        if let Some(extra) = kept.difference(all).next() {
            failures.push(format!("{name}: the filter made the core name {extra}"));
        }
        if !mitigated && own != "healthy" {
            match (hidden, kept.contains(own)) {
                (false, false) => failures.push(format!(
                    "{name}: not named through the filter (and not listed as hidden)"
                )),
                (true, true) => failures.push(format!(
                    "{name}: listed as hidden but named through the filter"
                )),
                _ => {}
            }
        }
        let _ = (n, passed);
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

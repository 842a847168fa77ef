//! Every capture of the shared corpus through `CaptureReader` and `wire::decode`: no panic, frame
//! counts equal to capinfos/tshark's (INDEX.tsv) except where an allowlist entry explains why, bounded
//! memory and time.
//!
//! The corpus lives outside the repository (`shared/corpus` next to the checkout, or
//! `NETSLEUTH_CORPUS`); without it the test prints a note and passes.

mod support;

use netsleuth_core::capture::{CaptureReader, OpenError};
use netsleuth_core::wire::{decode, decode_layered, DecodeError, Transport};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Files whose record count legitimately differs from INDEX.tsv's `packets`, and why.
const COUNT_ALLOWLIST: &[(&str, &str)] = &[
    (
        "wireshark-wiki/SampleCaptures/rarp_req_reply.pcap",
        "a pre-1.0 pcapng draft (SHB with a trailing length of 1): tshark refuses it as damaged and counts \
         0; we report bad-block and resynchronise on its blocks",
    ),
];

/// Files in a format we read but that must fail to open, and why.
const OPEN_ALLOWLIST: &[(&str, &str)] = &[];

/// Buffer capacity we accept: the working buffer (4 MiB) doubled once for a record at the limit of
/// the corpus's largest files (5 MB).
const MAX_BUFFER: usize = 16 << 20;

/// Under CI the shared material must be there: a test that skips would pass by not running.
fn required_under_ci(found: Option<PathBuf>, what: &str) -> Option<PathBuf> {
    assert!(
        found.is_some() || std::env::var("CI").is_err(),
        "{what} is missing next to the checkout (../shared) and CI is set: the test must run"
    );
    found
}

fn corpus_dir() -> Option<PathBuf> {
    required_under_ci(find_corpus_dir(), "../shared/corpus")
}

fn find_corpus_dir() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("NETSLEUTH_CORPUS") {
        return Some(PathBuf::from(p));
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    [manifest.join("../../../shared/corpus")]
        .into_iter()
        .find(|p| p.join("INDEX.tsv").is_file())
}

struct Row {
    path: String,
    format: String,
    packets: Option<u64>,
    tshark_ok: String,
    gzip: bool,
}

fn read_index(dir: &Path) -> Vec<Row> {
    let text = std::fs::read_to_string(dir.join("INDEX.tsv")).expect("INDEX.tsv readable");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("INDEX.tsv has no {name}"))
    };
    let (c_path, c_format, c_packets, c_ok, c_comp) = (
        col("path"),
        col("format"),
        col("packets"),
        col("tshark_ok"),
        col("compression"),
    );
    lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            Row {
                path: f[c_path].to_string(),
                format: f[c_format].to_string(),
                packets: f[c_packets].parse().ok(),
                tshark_ok: f[c_ok].to_string(),
                gzip: f[c_comp] == "gzip",
            }
        })
        .collect()
}

#[derive(Default)]
struct Totals {
    files: u64,
    opened: u64,
    not_opened: BTreeMap<String, u64>,
    records: u64,
    bytes: u64,
    decoded: u64,
    tcp: u64,
    udp: u64,
    tunnelled: u64,
    truncated_packets: u64,
    decode_errors: BTreeMap<String, u64>,
    diagnostics: BTreeMap<&'static str, u64>,
}

fn error_kind(e: &DecodeError) -> String {
    match e {
        DecodeError::UnsupportedLinkType(_) => "unsupported-linktype".into(),
        DecodeError::NotIp { .. } => "not-ip".into(),
        DecodeError::Truncated { layer, .. } => format!("truncated-packet({layer:?})"),
        DecodeError::Malformed { layer, .. } => format!("malformed-packet({layer:?})"),
    }
}

struct FileResult {
    records: u64,
    elapsed: Duration,
    max_buffer: usize,
}

fn walk<R: Read>(reader: R, name: &str, t: &mut Totals) -> Result<FileResult, OpenError> {
    let start = Instant::now();
    let mut r = CaptureReader::new(reader, name)?;
    let mut records = 0;
    let mut max_buffer = r.buffer_capacity();
    let mut last_frame = 0;
    while let Some(rec) = r.next_record() {
        records += 1;
        assert_eq!(
            rec.frame,
            last_frame + 1,
            "{name}: frame numbers are consecutive"
        );
        last_frame = rec.frame;
        t.bytes += rec.data.len() as u64;
        let decoded = decode(rec.linktype, rec.data);
        // The decoder's fast path gives what the layered decoder gives, on every real frame.
        assert_eq!(
            decoded,
            decode_layered(rec.linktype, rec.data),
            "{name}: frame {}: the fast path decodes differently",
            rec.frame
        );
        match decoded {
            Ok(p) => {
                t.decoded += 1;
                t.truncated_packets += p.truncated as u64;
                t.tunnelled += p.tunnel.is_some() as u64;
                match p.transport {
                    Transport::Tcp(s) => {
                        t.tcp += 1;
                        assert!(
                            s.payload.len() <= s.payload_len as usize,
                            "{name} frame {}",
                            rec.frame
                        );
                        assert!(
                            !s.payload.is_empty() || s.payload_len == 0 || p.truncated,
                            "{name} frame {}",
                            rec.frame
                        );
                    }
                    Transport::Udp(u) => {
                        t.udp += 1;
                        assert!(
                            u.payload.len() <= u.payload_len as usize,
                            "{name} frame {}",
                            rec.frame
                        );
                    }
                    _ => {}
                }
            }
            Err(e) => {
                if let DecodeError::Truncated { offset, .. }
                | DecodeError::Malformed { offset, .. } = e
                {
                    assert!(
                        offset <= rec.data.len(),
                        "{name} frame {}: offset {offset} beyond the frame",
                        rec.frame
                    );
                }
                *t.decode_errors.entry(error_kind(&e)).or_default() += 1;
            }
        }
        max_buffer = max_buffer.max(r.buffer_capacity());
    }
    for d in r.diagnostics() {
        assert!(d.count > 0 && !d.message.is_empty());
        assert!(d
            .offset
            .is_some_and(|o| o <= r.bytes_consumed().max(1 << 40)));
        *t.diagnostics.entry(d.code).or_default() += d.count;
    }
    t.records += records;
    Ok(FileResult {
        records,
        elapsed: start.elapsed(),
        max_buffer,
    })
}

#[test]
fn corpus_reads_and_decodes_with_tshark_frame_counts() {
    let Some(dir) = corpus_dir() else {
        eprintln!("note: no capture corpus found (set NETSLEUTH_CORPUS); corpus test skipped");
        return;
    };
    let rows = read_index(&dir);
    assert!(
        rows.len() > 100,
        "INDEX.tsv lists only {} files",
        rows.len()
    );
    let started = Instant::now();
    let mut t = Totals::default();
    let mut mismatches = Vec::new();
    let mut slowest = (Duration::ZERO, String::new());
    for row in rows.iter().filter(|r| !r.path.starts_with("node/")) {
        t.files += 1;
        let path = dir.join(&row.path);
        let file = BufReader::with_capacity(
            1 << 16,
            File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", row.path)),
        );
        let result = if row.gzip {
            walk(flate2::read::GzDecoder::new(file), &row.path, &mut t)
        } else {
            walk(file, &row.path, &mut t)
        };
        let readable_format = matches!(
            row.format.as_str(),
            "pcap" | "pcapng" | "nsecpcap" | "modpcap"
        );
        match result {
            Ok(res) => {
                t.opened += 1;
                assert!(
                    res.max_buffer <= MAX_BUFFER,
                    "{}: buffer grew to {}",
                    row.path,
                    res.max_buffer
                );
                assert!(
                    res.elapsed < Duration::from_secs(20),
                    "{}: took {:.2?}",
                    row.path,
                    res.elapsed
                );
                if res.elapsed > slowest.0 {
                    slowest = (res.elapsed, row.path.clone());
                }
                let allowed = COUNT_ALLOWLIST.iter().any(|(p, _)| *p == row.path);
                match row.packets {
                    Some(expected) if expected != res.records && !allowed => {
                        mismatches.push(format!(
                            "{}: {} records, INDEX.tsv says {} (tshark: {})",
                            row.path, res.records, expected, row.tshark_ok
                        ))
                    }
                    Some(expected) if expected == res.records && allowed => {
                        mismatches.push(format!(
                            "{}: allowlisted but now matches ({expected}); remove it",
                            row.path
                        ))
                    }
                    _ => {}
                }
            }
            Err(e) => {
                let msg = e.to_string();
                assert!(!msg.is_empty());
                *t.not_opened.entry(row.format.clone()).or_default() += 1;
                if readable_format && !OPEN_ALLOWLIST.iter().any(|(p, _)| *p == row.path) {
                    mismatches.push(format!(
                        "{}: a {} file that did not open: {msg}",
                        row.path, row.format
                    ));
                }
            }
        }
    }
    let elapsed = started.elapsed();
    eprintln!(
        "corpus: {} files ({} opened; not opened by format: {:?}), {} records, {:.1} MB of packet data in {:.2?} \
         ({:.0} MB/s, slowest file {} in {:.2?})",
        t.files,
        t.opened,
        t.not_opened,
        t.records,
        t.bytes as f64 / 1e6,
        elapsed,
        t.bytes as f64 / 1e6 / elapsed.as_secs_f64(),
        slowest.1,
        slowest.0
    );
    eprintln!(
        "decode: {} ok ({} TCP, {} UDP, {} from tunnels, {} truncated); errors: {:?}",
        t.decoded, t.tcp, t.udp, t.tunnelled, t.truncated_packets, t.decode_errors
    );
    eprintln!("diagnostics by code: {:?}", t.diagnostics);
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    assert!(
        t.records > 100_000,
        "suspiciously few records: {}",
        t.records
    );
    // Generous: debug builds on a loaded 2-core machine; release does the corpus in well under 1 s.
    assert!(
        elapsed < Duration::from_secs(120),
        "corpus walk took {elapsed:.2?}"
    );
}

/// A synthetic `tcpdump -i any`-like capture: SLL2 frames, TCP data and ACKs with timestamps, DNS
/// queries, some IPv6; about 580 bytes per record.
fn synthetic_capture(target_bytes: usize) -> Vec<u8> {
    use support::*;
    let data = tcp([10, 244, 1, 5], 40000, [10, 96, 0, 1], 443)
        .ts(1, 2)
        .payload(&[0x42; 1400])
        .sll2(3, PKTTYPE_OUTGOING);
    let ack = tcp([10, 96, 0, 1], 443, [10, 244, 1, 5], 40000)
        .ts(3, 4)
        .sll2(3, PKTTYPE_HOST);
    let dns = udp([10, 244, 1, 5], 53000, [10, 96, 0, 10], 53)
        .payload(&dns_query(1, "kubernetes.default.svc.cluster.local", 1).build())
        .sll2(3, PKTTYPE_OUTGOING);
    let v6 = tcp_v6("fd00::1", 1, "fd00::2", 2)
        .ts(1, 1)
        .payload(&[1; 400])
        .sll2(4, PKTTYPE_HOST);
    let frames = [&data, &ack, &data, &ack, &dns, &ack, &v6, &ack];
    let mut w = PcapWriter::new(LINKTYPE_LINUX_SLL2);
    let mut i = 0;
    while w.len() < target_bytes {
        w.push(
            1_700_000_000_000_000_000 + i as i64 * 1000,
            frames[i % frames.len()],
        );
        i += 1;
    }
    w.finish()
}

/// Read and decode everything; returns (records, decoded, elapsed).
fn read_and_decode<R: Read>(reader: R) -> (u64, u64, Duration) {
    let start = Instant::now();
    let mut r = CaptureReader::new(reader, "synthetic").unwrap();
    let (mut records, mut decoded, mut checksum) = (0u64, 0u64, 0u64);
    while let Some(rec) = r.next_record() {
        records += 1;
        if let Ok(p) = decode(rec.linktype, rec.data) {
            decoded += 1;
            if let Transport::Tcp(t) = p.transport {
                checksum = checksum.wrapping_add(t.seq as u64 + t.payload_len as u64);
            }
        }
    }
    std::hint::black_box(checksum);
    (records, decoded, start.elapsed())
}

#[test]
#[ignore = "throughput measurement: cargo test --release -p netsleuth-core --test corpus -- --ignored --nocapture"]
fn synthetic_capture_throughput() {
    let bytes = synthetic_capture(300 << 20);
    let mb = bytes.len() as f64 / 1e6;
    let mut best_mem = f64::MAX;
    let mut records = 0;
    for _ in 0..3 {
        let (n, decoded, t) = read_and_decode(&bytes[..]);
        assert_eq!(n, decoded);
        records = n;
        best_mem = best_mem.min(t.as_secs_f64());
    }
    // Through a file, as the CLI reads it (page cache warm after the write).
    let path =
        std::env::temp_dir().join(format!("netsleuth-throughput-{}.pcap", std::process::id()));
    std::fs::write(&path, &bytes).unwrap();
    let mut best_file = f64::MAX;
    for _ in 0..3 {
        let (n, _, t) = read_and_decode(File::open(&path).unwrap());
        assert_eq!(n, records);
        best_file = best_file.min(t.as_secs_f64());
    }
    std::fs::remove_file(&path).unwrap();
    eprintln!(
        "synthetic SLL2 capture, {mb:.0} MB, {records} records: in memory {:.0} MB/s ({:.1} Mpps), \
         from a file {:.0} MB/s ({:.1} Mpps)",
        mb / best_mem,
        records as f64 / 1e6 / best_mem,
        mb / best_file,
        records as f64 / 1e6 / best_file
    );
    if !cfg!(debug_assertions) {
        assert!(
            mb / best_file >= 1000.0,
            "framing + decoding below 1 GB/s: {:.0} MB/s",
            mb / best_file
        );
    }
}

use super::*;

use super::test_support::*;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Owned {
    frame: u64,
    offset: u64,
    ts_ns: i64,
    linktype: u32,
    interface: u32,
    orig_len: u32,
    data: Vec<u8>,
}

fn read_all<R: Read>(r: &mut CaptureReader<R>) -> Vec<Owned> {
    let mut v = Vec::new();
    while let Some(rec) = r.next_record() {
        v.push(Owned {
            frame: rec.frame,
            offset: rec.offset,
            ts_ns: rec.ts_ns,
            linktype: rec.linktype,
            interface: rec.interface,
            orig_len: rec.orig_len,
            data: rec.data.to_vec(),
        });
    }
    v
}

fn open(bytes: &[u8]) -> CaptureReader<&[u8]> {
    CaptureReader::new(bytes, "test").unwrap()
}

fn codes<R: Read>(r: &CaptureReader<R>) -> Vec<(&'static str, u64)> {
    r.diagnostics().iter().map(|d| (d.code, d.count)).collect()
}

/// A reader that returns at most `chunk` bytes per call, like a pipe.
struct Trickle<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.chunk.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fn sample_frames() -> Vec<Vec<u8>> {
    vec![
        tcp([10, 0, 0, 1], 40000, [10, 0, 0, 2], 80)
            .flags(SYN)
            .seq(7)
            .ethernet(),
        udp([10, 0, 0, 1], 5000, [10, 0, 0, 53], 53)
            .payload(&dns_query(1, "a.example", 1).build())
            .ethernet(),
        tcp([10, 0, 0, 2], 80, [10, 0, 0, 1], 40000)
            .flags(SYN | ACK)
            .payload(&[7; 300])
            .ethernet(),
    ]
}

#[test]
fn pcap_little_endian_microseconds() {
    let f = sample_frames();
    let mut w = PcapWriter::new(LINKTYPE_ETHERNET);
    w.push(1_500_000_000_123_456_000, &f[0])
        .push(1_500_000_001_000_001_000, &f[1])
        .push(1_500_000_002_999_999_000, &f[2]);
    let bytes = w.finish();
    let mut r = open(&bytes);
    assert_eq!(
        r.format(),
        CaptureFormat::Pcap {
            nanos: false,
            big_endian: false
        }
    );
    let recs = read_all(&mut r);
    assert_eq!(recs.len(), 3);
    assert_eq!(recs[0].offset, 24);
    assert_eq!(recs[1].offset, 24 + 16 + f[0].len() as u64);
    assert_eq!(recs.iter().map(|r| r.frame).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(recs[0].ts_ns, 1_500_000_000_123_456_000);
    assert_eq!(recs[2].ts_ns, 1_500_000_002_999_999_000);
    assert_eq!(recs[2].data, f[2]);
    assert_eq!(recs[2].linktype, LINKTYPE_ETHERNET);
    assert_eq!(r.bytes_consumed(), bytes.len() as u64);
    assert!(!r.truncated_file());
    assert!(r.diagnostics().is_empty());
}

#[test]
fn pcap_big_endian_nanoseconds_and_fcs_bits() {
    let f = sample_frames();
    // FCS-present flag and FCS length 2 (x16 bits) in the upper bits of the link type.
    let lt = LINKTYPE_ETHERNET | 0x0400_0000 | 0x2000_0000;
    let mut w = PcapWriter::with(lt, true, true, 65535);
    w.push(1_700_000_000_000_000_001, &f[0]);
    let bytes = w.finish();
    assert_eq!(&bytes[..4], &[0xa1, 0xb2, 0x3c, 0x4d]);
    let mut r = open(&bytes);
    assert_eq!(
        r.format(),
        CaptureFormat::Pcap {
            nanos: true,
            big_endian: true
        }
    );
    let recs = read_all(&mut r);
    assert_eq!(recs[0].ts_ns, 1_700_000_000_000_000_001);
    assert_eq!(recs[0].linktype, LINKTYPE_ETHERNET);
    assert_eq!(recs[0].data, f[0]);
}

#[test]
fn pcap_modified_kuznetzov_records_are_24_bytes() {
    let frame = &sample_frames()[0];
    let mut bytes = PcapWriter::new(LINKTYPE_ETHERNET).finish();
    bytes[..4].copy_from_slice(&0xa1b2_cd34u32.to_le_bytes());
    for i in 0..2u32 {
        for v in [100 + i, 5, frame.len() as u32, frame.len() as u32, 3, 0] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        bytes.extend_from_slice(frame);
    }
    let mut r = open(&bytes);
    let recs = read_all(&mut r);
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[1].ts_ns, 101_000_005_000);
    assert_eq!(recs[1].data, *frame);
    assert!(r.diagnostics().is_empty());
}

#[test]
fn pcap_cut_mid_record_sets_truncated_file() {
    let f = sample_frames();
    let bytes = PcapWriter::new(1)
        .packet(0, &f[0])
        .packet(0, &f[1])
        .finish();
    let second = 24 + 16 + f[0].len();
    for cut in [second + 3, second + 16, bytes.len() - 1] {
        let mut r = open(&bytes[..cut]);
        let recs = read_all(&mut r);
        assert_eq!(recs.len(), 1, "cut at {cut}");
        assert!(r.truncated_file());
        let d = r.diagnostics();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].code, "truncated-file");
        assert_eq!(d[0].offset, Some(second as u64));
        assert_eq!(d[0].frame, Some(2));
    }
    // Ending exactly on a record boundary is not truncation.
    let mut r = open(&bytes[..second]);
    assert_eq!(read_all(&mut r).len(), 1);
    assert!(!r.truncated_file());
}

#[test]
fn pcap_damaged_header_resyncs_on_the_next_records() {
    let f = sample_frames();
    let mut w = PcapWriter::new(1);
    w.push(1_000_000_000, &f[0]);
    // Garbage: a header claiming 1 GB, then 37 junk bytes.
    w.push_raw(1, 0, 1 << 30, 1 << 30, &[0x55; 37]);
    w.push(1_000_000_000, &f[1]).push(2_000_000_000, &f[2]);
    let bytes = w.finish();
    let mut r = open(&bytes);
    let recs = read_all(&mut r);
    assert_eq!(recs.len(), 3);
    assert_eq!(recs[1].data, f[1]);
    assert_eq!(recs[2].data, f[2]);
    assert_eq!(recs[1].frame, 2);
    assert_eq!(codes(&r), [("bad-record-length", 1)]);
    assert_eq!(r.diagnostics()[0].offset, Some(24 + 16 + f[0].len() as u64));
}

#[test]
fn pcap_garbage_tail_is_reported_not_fatal() {
    let f = sample_frames();
    let mut bytes = PcapWriter::new(1).packet(0, &f[0]).finish();
    bytes.extend_from_slice(&[0xEE; 1000]);
    let mut r = open(&bytes);
    assert_eq!(read_all(&mut r).len(), 1);
    let c = codes(&r);
    assert!(c.contains(&("bad-record-length", 1)), "{c:?}");
    assert!(c.contains(&("unreadable-tail", 1)), "{c:?}");
}

#[test]
fn pcap_caplen_over_snaplen_is_kept_and_noted() {
    let f = sample_frames();
    let bytes = PcapWriter::with(1, false, false, 64)
        .packet(0, &f[2])
        .packet(0, &f[0])
        .finish();
    let mut r = open(&bytes);
    let recs = read_all(&mut r);
    assert_eq!(recs.len(), 2);
    assert_eq!(codes(&r), [("oversized-record", 1)]);
}

#[test]
fn pcap_snaplen_cut_records_keep_orig_len() {
    let f = sample_frames();
    let mut w = PcapWriter::with(1, false, false, 80);
    w.push_cut(0, &f[2], 80);
    let bytes = w.finish();
    let recs = read_all(&mut open(&bytes));
    assert_eq!(recs[0].data.len(), 80);
    assert_eq!(recs[0].orig_len as usize, f[2].len());
}

#[test]
fn pcapng_sections_interfaces_and_block_kinds() {
    let f = sample_frames();
    let mut w = PcapNgWriter::new();
    let eth = w.interface(1, Some("eth0"), Some(9), 0);
    let any = w.interface(276, Some("any"), Some(0x80 | 20), 0);
    w.packet(eth, 1_600_000_000_123_456_789, &f[0]);
    w.block(4, &[0; 8]); // NRB
    w.block(0x0000_0BAD, &[1, 2, 3, 4, 5]); // custom
    let sll2 = tcp([10, 0, 0, 1], 1, [10, 0, 0, 2], 2).sll2(3, PKTTYPE_HOST);
    w.packet(any, 1_600_000_001_500_000_000, &sll2);
    w.block(5, &[0; 12]); // ISB
                          // Second section: interface ids restart at 0 and get global index 2.
    w.section();
    let lo = w.interface_with_offset(101, Some("lo"), None, 0, Some(100));
    w.packet(
        lo,
        1_000_000,
        &tcp([127, 0, 0, 1], 1, [127, 0, 0, 1], 2).ip(),
    );
    w.spb(&tcp([127, 0, 0, 1], 3, [127, 0, 0, 1], 4).ip());
    w.opb(
        0,
        2_000_000,
        &tcp([127, 0, 0, 1], 5, [127, 0, 0, 1], 6).ip(),
    );
    let bytes = w.finish();
    let mut r = open(&bytes);
    assert_eq!(r.format(), CaptureFormat::PcapNg);
    let recs = read_all(&mut r);
    assert!(r.diagnostics().is_empty(), "{:?}", r.diagnostics());
    assert_eq!(recs.len(), 5);
    assert_eq!(
        recs.iter().map(|r| r.frame).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(
        recs.iter().map(|r| r.interface).collect::<Vec<_>>(),
        [0, 1, 2, 2, 2]
    );
    assert_eq!(
        recs.iter().map(|r| r.linktype).collect::<Vec<_>>(),
        [1, 276, 101, 101, 101]
    );
    assert_eq!(recs[0].ts_ns, 1_600_000_000_123_456_789);
    // 2^-20 s resolution: within one unit (~954 ns).
    assert!(
        (recs[1].ts_ns - 1_600_000_001_500_000_000).abs() < 1000,
        "{}",
        recs[1].ts_ns
    );
    assert_eq!(recs[1].data, sll2);
    // if_tsoffset 100 s.
    assert_eq!(recs[2].ts_ns, 100_001_000_000);
    assert_eq!(recs[3].ts_ns, 0);
    assert_eq!(recs[4].ts_ns, 100_002_000_000);
    assert_eq!(r.interface_name(0), Some("eth0"));
    assert_eq!(r.interface_name(1), Some("any"));
    assert_eq!(r.interface_name(2), Some("lo"));
    assert_eq!(r.interface_name(3), None);
    assert_eq!(r.bytes_consumed(), bytes.len() as u64);
}

#[test]
fn pcapng_timestamps_beyond_the_limit_are_clamped_and_reported() {
    let f = sample_frames();
    let mut w = PcapNgWriter::new();
    // if_tsoffset ±2^62 s and if_tsresol 1 s with the largest count: far beyond ±2^62 ns.
    let late = w.interface_with_offset(1, None, Some(9), 0, Some(1 << 62));
    let early = w.interface_with_offset(1, None, Some(9), 0, Some(-(1 << 62)));
    let coarse = w.interface(1, None, Some(0), 0);
    let normal = w.interface(1, None, Some(9), 0);
    w.packet(late, 1_000, &f[0]);
    w.packet(early, 1_000, &f[0]);
    w.epb_raw(
        coarse,
        u64::MAX,
        f[0].len() as u32,
        f[0].len() as u32,
        &f[0],
    );
    w.packet(normal, 1_600_000_000_000_000_000, &f[0]);
    let bytes = w.finish();
    let mut r = open(&bytes);
    let recs = read_all(&mut r);
    assert_eq!(
        recs.iter().map(|r| r.ts_ns).collect::<Vec<_>>(),
        [MAX_TS_NS, -MAX_TS_NS, MAX_TS_NS, 1_600_000_000_000_000_000]
    );
    assert_eq!(codes(&r), [("timestamp-out-of-range", 3)]);
    // Any two differ by less than i64::MAX.
    assert!(MAX_TS_NS.checked_sub(-MAX_TS_NS).is_some());
}

#[test]
fn pcapng_big_endian_section() {
    let f = sample_frames();
    let mut w = PcapNgWriter::big_endian();
    let i = w.interface(1, None, Some(6), 65535);
    w.packet(i, 5_000_000_000, &f[1]);
    let bytes = w.finish();
    let recs = read_all(&mut open(&bytes));
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].ts_ns, 5_000_000_000);
    assert_eq!(recs[0].data, f[1]);
}

#[test]
fn pcapng_spb_is_cut_to_snaplen() {
    let f = sample_frames();
    let mut w = PcapNgWriter::new();
    w.interface(1, None, None, 64);
    w.spb(&f[2]);
    let bytes = w.finish();
    let recs = read_all(&mut open(&bytes));
    assert_eq!(recs[0].data.len(), 64);
    assert_eq!(recs[0].orig_len as usize, f[2].len());
}

#[test]
fn pcapng_unknown_interface_is_skipped_with_a_diagnostic() {
    let f = sample_frames();
    let mut w = PcapNgWriter::new();
    w.interface(1, None, None, 0);
    w.packet(3, 0, &f[0]);
    w.packet(0, 0, &f[1]);
    let bytes = w.finish();
    let mut r = open(&bytes);
    let recs = read_all(&mut r);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].data, f[1]);
    assert_eq!(codes(&r), [("unknown-interface", 1)]);
}

#[test]
fn pcapng_bad_lengths_resync() {
    let f = sample_frames();
    let mut w = PcapNgWriter::new();
    w.interface(1, None, None, 0);
    w.packet(0, 0, &f[0]);
    let damaged_at = w.len();
    w.packet(0, 0, &f[1]);
    w.packet(0, 0, &f[2]);
    let mut bytes = w.finish();
    // Break the trailing length of the second packet block.
    let second_len =
        u32::from_le_bytes(bytes[damaged_at + 4..damaged_at + 8].try_into().unwrap()) as usize;
    bytes[damaged_at + second_len - 4] ^= 0xFF;
    let mut r = open(&bytes);
    let recs = read_all(&mut r);
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[1].data, f[2]);
    assert_eq!(codes(&r), [("bad-block", 1)]);
    assert_eq!(r.diagnostics()[0].offset, Some(damaged_at as u64));

    // A length that is not a multiple of 4.
    bytes[damaged_at + second_len - 4] ^= 0xFF;
    bytes[damaged_at + 4] = bytes[damaged_at + 4].wrapping_add(1);
    let mut r = open(&bytes);
    assert_eq!(read_all(&mut r).len(), 2);
    assert_eq!(codes(&r), [("bad-block", 1)]);

    // Caplen larger than the block.
    let mut w = PcapNgWriter::new();
    w.interface(1, None, None, 0);
    w.epb_raw(0, 0, 5000, 5000, &f[0]);
    w.packet(0, 0, &f[1]);
    let bytes = w.finish();
    let mut r = open(&bytes);
    assert_eq!(read_all(&mut r).len(), 1);
    assert_eq!(codes(&r), [("bad-record-length", 1)]);
}

#[test]
fn pcapng_cut_mid_block() {
    let f = sample_frames();
    let mut w = PcapNgWriter::new();
    w.interface(1, None, None, 0);
    w.packet(0, 0, &f[0]);
    let at = w.len();
    w.packet(0, 0, &f[1]);
    let bytes = w.finish();
    let mut r = open(&bytes[..bytes.len() - 5]);
    assert_eq!(read_all(&mut r).len(), 1);
    assert!(r.truncated_file());
    assert_eq!(r.diagnostics()[0].code, "truncated-file");
    assert_eq!(r.diagnostics()[0].offset, Some(at as u64));
}

#[test]
fn tiny_reads_give_the_same_records() {
    let f = sample_frames();
    let mut w = PcapNgWriter::new();
    w.interface(1, Some("x"), None, 0);
    for i in 0..50 {
        w.packet(0, i * 1000, &f[i as usize % 3]);
    }
    let bytes = w.finish();
    let whole = read_all(&mut open(&bytes));
    for chunk in [1, 3, 7, 100] {
        let mut r = CaptureReader::new(
            Trickle {
                data: &bytes,
                chunk,
            },
            "pipe",
        )
        .unwrap();
        assert_eq!(read_all(&mut r), whole, "chunk {chunk}");
    }
}

#[test]
fn records_larger_than_the_buffer_grow_it_then_shrink_back() {
    let big = vec![0xAB; INITIAL_BUFFER + 12345];
    let small = sample_frames().remove(0);
    let bytes = PcapWriter::with(1, false, false, 0)
        .packet(0, &small)
        .packet(0, &big)
        .packet(0, &small)
        .packet(0, &small)
        .finish();
    let mut r = open(&bytes);
    let mut lens = Vec::new();
    let mut max_cap = 0;
    while let Some(rec) = r.next_record() {
        lens.push(rec.data.len());
        max_cap = max_cap.max(r.buffer_capacity());
    }
    assert_eq!(lens, [small.len(), big.len(), small.len(), small.len()]);
    assert!(max_cap > INITIAL_BUFFER);
    assert!(max_cap <= 2 * (INITIAL_BUFFER + 12345 + 16));
    assert!(
        r.buffer_capacity() <= INITIAL_BUFFER,
        "{}",
        r.buffer_capacity()
    );
}

#[test]
fn records_across_the_first_buffer_size() {
    // Records of 100 KB and 30 KB: larger than the first buffer, smaller than the working one.
    let (a, b) = (vec![1u8; 100_000], vec![2u8; 30_000]);
    let mut w = PcapWriter::with(1, false, false, 0);
    for i in 0..40 {
        w.push(i * 1000, if i % 3 == 0 { &a } else { &b });
    }
    let bytes = w.finish();
    for chunk in [usize::MAX, 4096] {
        let mut r = CaptureReader::new(
            Trickle {
                data: &bytes,
                chunk,
            },
            "x",
        )
        .unwrap();
        let recs = read_all(&mut r);
        assert_eq!(recs.len(), 40);
        assert!(recs
            .iter()
            .all(|r| r.data == *if (r.ts_ns / 1000) % 3 == 0 { &a } else { &b }));
        assert!(r.buffer_capacity() <= INITIAL_BUFFER);
    }
}

#[test]
fn peeking_merges_captures_by_time_without_copies() {
    let f = sample_frames();
    let a = PcapWriter::new(1)
        .packet(10_000, &f[0])
        .packet(30_000, &f[1])
        .packet(50_000, &f[2])
        .finish();
    let mut w = PcapNgWriter::new();
    w.interface(1, None, Some(9), 0);
    w.packet(0, 20_000, &f[2]).packet(0, 40_000, &f[0]);
    let b = w.finish();
    let mut readers = [open(&a), open(&b)];
    let mut order = Vec::new();
    loop {
        let next = (0..2)
            .filter_map(|i| readers[i].peek_ts().map(|ts| (ts, i)))
            .min();
        let Some((ts, i)) = next else { break };
        // Peeking again changes nothing.
        assert_eq!(readers[i].peek_ts(), Some(ts));
        let rec = readers[i].next_record().unwrap();
        assert_eq!(rec.ts_ns, ts);
        order.push((i, rec.frame, rec.data.len()));
    }
    assert_eq!(
        order,
        [
            (0, 1, f[0].len()),
            (1, 1, f[2].len()),
            (0, 2, f[1].len()),
            (1, 2, f[0].len()),
            (0, 3, f[2].len())
        ]
    );
}

#[test]
fn open_errors_say_what_the_file_is() {
    let msg = |b: &[u8]| CaptureReader::new(b, "x").err().unwrap().to_string();
    assert_eq!(msg(&[]), "empty input: no capture header");
    assert!(
        msg(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0]).starts_with("gzip-compressed: not handled here")
    );
    assert!(msg(&[0x28, 0xb5, 0x2f, 0xfd, 0]).starts_with("zstd-compressed"));
    assert!(msg(b"GMBU\x00\x02 some netmon").contains("Network Monitor"));
    assert!(msg(b"snoop\0\0\0\0\0\0\x02").contains("snoop"));
    let m = msg(b"hello world, this is text");
    assert!(
        m.starts_with("not a capture: starts with 68 65 6c 6c"),
        "{m}"
    );
    assert!(m.contains("\"hello wo\""), "{m}");
    assert!(msg(&[0xd4, 0xc3, 0xb2, 0xa1, 2, 0]).contains("too short"));
    assert!(msg(&[0x0a, 0x0d, 0x0d, 0x0a, 28, 0, 0, 0, 1, 2, 3, 4]).contains("byte-order magic"));
}

#[test]
fn every_prefix_and_random_damage_never_panics() {
    let f = sample_frames();
    let mut w = PcapNgWriter::new();
    w.interface(1, Some("eth0"), Some(9), 0);
    w.interface(276, None, Some(0x8a), 128);
    for i in 0..6u32 {
        w.packet(i % 2, i as i64 * 1_000_000, &f[i as usize % 3]);
    }
    w.spb(&f[1]);
    let ng = w.finish();
    let pcap = PcapWriter::new(1)
        .packet(0, &f[0])
        .packet(1, &f[1])
        .packet(2, &f[2])
        .finish();
    for file in [&ng, &pcap] {
        let full = read_all(&mut open(file));
        for n in 0..file.len() {
            if let Ok(mut r) = CaptureReader::new(&file[..n], "prefix") {
                let got = read_all(&mut r);
                assert!(got.len() <= full.len());
                assert_eq!(got[..], full[..got.len()], "prefix {n}");
            }
        }
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..3000 {
            let mut d = file.to_vec();
            for _ in 0..4 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let at = 4 + (x as usize % (d.len() - 4));
                d[at] = (x >> 32) as u8;
            }
            if let Ok(mut r) = CaptureReader::new(&d[..], "fuzz") {
                let n = read_all(&mut r).len();
                assert!(n <= 64);
                let _ = r.diagnostics();
            }
        }
    }
}

#[test]
fn the_read_buffer_grows_to_its_working_size_only_once_the_input_fills_the_first() {
    // 1,000 records of 1,000 bytes: ~1 MB, larger than the first buffer.
    let record = vec![7u8; 1000];
    let mut w = PcapWriter::with(1, false, false, 0);
    for i in 0..1000 {
        w.push(i * 1000, &record);
    }
    let bytes = w.finish();
    // (bytes read, working size set after `new`) → records, capacity after `new`, at the end.
    let cases: [(&[u8], Option<usize>, usize, usize); 3] = [
        // Sampled through the first buffer (the command's mapping decision): it never grows,
        // not even in `new`, before the working size is set.
        (&bytes, Some(0), 1000, FIRST_BUFFER),
        // Read with the working size: grown once the first buffer was full.
        (&bytes, None, 1000, INITIAL_BUFFER),
        // A small input stays in the first buffer.
        (&bytes[..10_000], None, 9, FIRST_BUFFER),
    ];
    for (data, working, records, at_end) in cases {
        let chunk = usize::MAX;
        let mut r = CaptureReader::new(Trickle { data, chunk }, "x").unwrap();
        assert_eq!(r.buffer_capacity(), FIRST_BUFFER, "grown in `new`");
        if let Some(w) = working {
            r.set_working_buffer(w);
        }
        assert_eq!(read_all(&mut r).len(), records, "{} bytes", data.len());
        assert_eq!(
            r.buffer_capacity(),
            at_end,
            "{} bytes, {working:?}",
            data.len()
        );
    }
}

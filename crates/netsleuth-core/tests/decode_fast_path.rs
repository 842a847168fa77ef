//! `wire::decode` takes a fast path for the frames that make up nearly all of a node capture (IPv4
//! TCP on Ethernet, Linux cooked v1/v2 or raw IP). It must give exactly what the layered decoder
//! (`wire::decode_layered`) gives: on every frame of the lab fixtures, and on those frames cut at
//! every length and with every byte of their headers changed (the corpus test compares the two on
//! every real-world frame).

use netsleuth_core::capture::CaptureReader;
use netsleuth_core::wire::{decode, decode_layered};
use std::path::{Path, PathBuf};

fn lab_captures() -> Vec<PathBuf> {
    let lab = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/lab");
    let mut out = Vec::new();
    for d in std::fs::read_dir(&lab).expect("fixtures/lab").flatten() {
        for f in std::fs::read_dir(d.path()).into_iter().flatten().flatten() {
            let p = f.path();
            if p.extension().is_some_and(|x| x == "pcap" || x == "pcapng") {
                out.push(p);
            }
        }
    }
    out.sort();
    assert!(
        out.len() > 20,
        "lab fixtures not found under {}",
        lab.display()
    );
    out
}

fn same(linktype: u32, frame: &[u8], what: &dyn Fn() -> String) {
    assert_eq!(
        decode(linktype, frame),
        decode_layered(linktype, frame),
        "{}: the fast path decodes differently",
        what()
    );
}

#[test]
fn fast_path_is_the_layered_decoder() {
    let mut frames = 0u64;
    let mut variants = 0u64;
    // Each (link type, header shape) is varied once: the fixtures repeat a few shapes many times.
    let mut varied = std::collections::HashSet::new();
    for path in lab_captures() {
        let bytes = std::fs::read(&path).unwrap();
        let mut r = CaptureReader::new(&bytes[..], path.display().to_string()).unwrap();
        while let Some(rec) = r.next_record() {
            frames += 1;
            let (lt, data) = (rec.linktype, rec.data);
            let at = || format!("{} frame {}", path.display(), rec.frame);
            same(lt, data, &at);
            let shape = (lt, data.len().min(80), data.get(..2).map(|b| b.to_vec()));
            if !varied.insert(shape) {
                continue;
            }
            // Cut at every length up to the end of the TCP options.
            let headers = data.len().min(96);
            for cut in 0..headers {
                variants += 1;
                same(lt, &data[..cut], &|| format!("{} cut to {cut} bytes", at()));
            }
            // Every header byte set to values that matter to a decoder.
            let mut copy = data.to_vec();
            for i in 0..headers {
                let orig = copy[i];
                for v in [
                    0x00, 0x01, 0x06, 0x0f, 0x11, 0x20, 0x3f, 0x40, 0x45, 0x4f, 0x50, 0x60, 0x80,
                    0xff,
                ] {
                    copy[i] = v;
                    variants += 1;
                    same(lt, &copy, &|| format!("{} byte {i} set to {v:#04x}", at()));
                }
                copy[i] = orig;
            }
        }
    }
    assert!(frames > 10_000, "only {frames} frames");
    assert!(variants > 1_000, "only {variants} variants");
}

#[test]
fn every_link_type_of_the_fast_path_agrees_on_a_synthetic_segment() {
    // An IPv4 TCP SYN with the options Linux sends, behind each link header the fast path takes.
    let ip: Vec<u8> = {
        let mut tcp = vec![
            0x9c, 0x40, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0xa0, 0x02, 0xfa, 0xf0, 0, 0, 0, 0,
        ];
        tcp.extend_from_slice(&[
            2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 7, 0, 0, 0, 0, 1, 3, 3, 7,
        ]);
        let total = 20 + tcp.len();
        let mut ip = vec![
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0x12,
            0x34,
            0x40,
            0,
            64,
            6,
            0,
            0,
            10,
            0,
            0,
            1,
            10,
            0,
            0,
            2,
        ];
        ip.extend_from_slice(&tcp);
        ip
    };
    let mut ether = vec![0u8; 12];
    ether.extend_from_slice(&[0x08, 0x00]);
    let mut sll = vec![0, 4, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x00];
    let mut sll2 = vec![
        0x08, 0x00, 0, 0, 0, 0, 0, 7, 0, 1, 4, 6, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    for (lt, mut head) in [
        (1u32, std::mem::take(&mut ether)),
        (113, std::mem::take(&mut sll)),
        (276, std::mem::take(&mut sll2)),
        (101, Vec::new()),
        (12, Vec::new()),
        (14, Vec::new()),
        (228, Vec::new()),
        (229, Vec::new()),
    ] {
        head.extend_from_slice(&ip);
        let p = decode(lt, &head).expect("decodes");
        assert!(
            matches!(p.transport, netsleuth_core::wire::Transport::Tcp(s) if s.options.parsed().mss == Some(1460))
        );
        same(lt, &head, &|| format!("link type {lt}"));
        // A fragment, a UDP datagram, an IPv4 header with options: all left to the layered path.
        for (i, v) in [(6usize, 0x20u8), (9, 17), (0, 0x46)] {
            let mut other = head.clone();
            other[head.len() - ip.len() + i] = v;
            same(lt, &other, &|| format!("link type {lt}, IP byte {i} = {v}"));
        }
    }
}

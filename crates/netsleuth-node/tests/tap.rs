//! The packet tap: its filter on the lab's real captures (which incidents survive it), the flight
//! recorder's dedupe and `--record` round trip, and the kernel side (a ring in a private namespace).

use netsleuth_core::capture::CaptureReader;
use netsleuth_core::node::NodeContext;
use netsleuth_node::live::bpf::{run, tap_filter};
use netsleuth_node::live::ebpf::{IdleModel, IDLE_GAP};
use netsleuth_node::live::flight::{
    Cycles, FlightRecorder, HIDDEN_BY_CLASSIC_FILTER, HIDDEN_BY_FILTER, NOT_FROM_TAP,
};
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

/// Which filter a replay goes through.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Filter {
    None,
    /// The classic program (the tap's fallback), in the test interpreter.
    Classic,
    /// The eBPF program the tap loads, as [`IdleModel`] decides (the kernel test below shows they agree).
    Ebpf,
}

/// Replays a `-i any` capture (LINUX_SLL2) into a recorder as the tap would have given it: through the
/// filter (by the same program the kernel runs, in the test interpreter), cut to its snap length.
/// Returns (records, passed).
fn replay(pcap: &Path, rec: &mut FlightRecorder, filter: Filter) -> (u64, u64) {
    let bytes = std::fs::read(pcap).expect("fixture");
    let mut r = CaptureReader::new(&bytes[..], pcap.display().to_string()).expect("pcap");
    let prog = tap_filter();
    let mut model = IdleModel::new(IDLE_GAP);
    let (mut n, mut passed) = (0, 0);
    while let Some(rec_) = r.next_record() {
        n += 1;
        let d = rec_.data;
        if rec_.linktype != 276 || d.len() < 20 {
            continue;
        }
        let protocol = u16::from_be_bytes([d[0], d[1]]);
        let net = &d[20..];
        let snap = match filter {
            Filter::None => usize::MAX,
            Filter::Classic => run(&prog, protocol, net) as usize,
            Filter::Ebpf => model.verdict(0, protocol, net, rec_.ts_ns) as usize,
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

fn ids(dir: &Path, file: &str, filtered: Filter) -> (BTreeSet<&'static str>, u64, u64) {
    let mut rec = FlightRecorder::new(format!("tap:{file}"));
    let (n, passed) = replay(&dir.join(file), &mut rec, filtered);
    let (found, _) = Cycles::new().run(
        &mut [&mut rec],
        last_ts(&dir.join(file)),
        &context(dir),
        true,
    );
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

/// Which incidents the node's `-i any` capture shows with and without the tap's filters: through either
/// filter never an incident the full capture does not show, and each incident named exactly unless
/// the filter's list says it is hidden.
#[test]
fn lab_captures_through_the_filter() {
    let mut dirs: Vec<_> = std::fs::read_dir(fixtures())
        .expect("fixtures/lab")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    let mut failures = Vec::new();
    for dir in &dirs {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let (all, n, _) = ids(dir, "node.pcap", Filter::None);
        let own = name.strip_suffix("-mitigated").unwrap_or(&name);
        let mitigated = own != name.as_str();
        for (filter, listed) in [
            (Filter::Ebpf, HIDDEN_BY_FILTER),
            (Filter::Classic, HIDDEN_BY_CLASSIC_FILTER),
        ] {
            let (kept, _, passed) = ids(dir, "node.pcap", filter);
            eprintln!(
                "{name} {filter:?}: {passed}/{n} passed; unfiltered {all:?}; filtered {kept:?}"
            );
            let hidden =
                listed.iter().any(|i| i.id == own) || NOT_FROM_TAP.iter().any(|(i, _)| i.id == own);
            if let Some(extra) = kept.difference(&all).next() {
                failures.push(format!(
                    "{name} {filter:?}: the filter made the core name {extra}"
                ));
            }
            if !mitigated && own != "healthy" {
                match (hidden, kept.contains(own)) {
                    (false, false) => failures.push(format!(
                        "{name} {filter:?}: not named through the filter (and not listed as hidden)"
                    )),
                    (true, true) => failures.push(format!(
                        "{name} {filter:?}: listed as hidden but named through the filter"
                    )),
                    _ => {}
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// A case is announced once: the next cycle over the same window (and one with more packets) stays
/// quiet; a finding whose packets are too near the window's end waits for a later cycle.
#[test]
fn a_case_is_announced_once_and_only_when_settled() {
    let dir = fixtures().join("dns-id-collision");
    let mut rec = FlightRecorder::new("tap:node".into());
    replay(&dir.join("node.pcap"), &mut rec, Filter::Ebpf);
    let end = last_ts(&dir.join("node.pcap"));
    let ctx = context(&dir);
    let mut cycles = Cycles::new();
    // At the capture's end the collision's packets are less than SETTLE old: held, not announced.
    let (early, stats) = cycles.run(&mut [&mut rec], end, &ctx, false);
    assert!(early.is_empty() && stats.held > 0, "{early:?} {stats:?}");
    let later = end + netsleuth_node::live::flight::SETTLE_NS + 1;
    rec.touch();
    let (first, _) = cycles.run(&mut [&mut rec], later, &ctx, false);
    let ids: Vec<_> = first.iter().map(|a| a.finding.id).collect();
    assert_eq!(ids, ["dns-id-collision"]);
    rec.touch();
    let (again, _) = cycles.run(&mut [&mut rec], later + 1_000_000_000, &ctx, false);
    assert!(again.is_empty(), "announced again: {again:?}");
    let (last, _) = cycles.run(&mut [&mut rec], later + 2_000_000_000, &ctx, true);
    assert!(last.is_empty(), "announced again at the end: {last:?}");
}

/// `--record`: the pcap, bundle and JSON written for a finding let `analyze --node` re-find it with
/// the same confidence and the same frames.
#[test]
fn a_recorded_finding_is_found_again_by_analyze_with_its_bundle() {
    use netsleuth_node::live::taps::write_record;
    for scenario in [
        "dns-id-collision",
        "snat-port-clash",
        "dns-upstream-unreachable",
    ] {
        let dir = fixtures().join(scenario);
        let facts = netsleuth_node::read_bundle(&dir.join("node.tar.gz")).expect("bundle");
        let ctx = netsleuth_node::to_node_context(&facts);
        let mut rec = FlightRecorder::new("tap:node".into());
        replay(&dir.join("node.pcap"), &mut rec, Filter::Ebpf);
        let (found, _) =
            Cycles::new().run(&mut [&mut rec], last_ts(&dir.join("node.pcap")), &ctx, true);
        let a = found
            .iter()
            .find(|a| a.finding.id == scenario)
            .unwrap_or_else(|| panic!("{scenario}: not named from the replay"));
        let out = std::env::temp_dir().join(format!("netsleuth-tap-record-{}", std::process::id()));
        let stem = write_record(&out, 7, &[&rec], a, Some(&facts)).expect("write");
        assert_eq!(stem, format!("finding-7-{scenario}"));
        // As `analyze --node BUNDLE PCAP` does: the bundle's facts as context, the pcap as input.
        let facts2 =
            netsleuth_node::read_bundle(&out.join(format!("{stem}.node.tar.gz"))).expect("bundle");
        let pcap = std::fs::File::open(out.join(format!("{stem}.pcap"))).expect("pcap");
        let again = netsleuth_core::analyze(
            vec![netsleuth_core::Input::stream(
                "finding.pcap",
                Box::new(pcap),
            )],
            &netsleuth_node::to_node_context(&facts2),
        );
        let f = again
            .findings
            .iter()
            .find(|f| f.id == scenario)
            .unwrap_or_else(|| {
                panic!(
                    "{scenario}: analyze did not re-find it: {:?}",
                    again.findings
                )
            });
        assert_eq!(f.confidence, a.finding.confidence, "{scenario}");
        let frames = |f: &netsleuth_core::Finding| -> Vec<(u64, i64)> {
            f.evidence
                .iter()
                .flat_map(|e| match e {
                    netsleuth_core::Evidence::Packets { frames, .. } => {
                        frames.iter().map(|r| (r.frame, r.ts_ns)).collect()
                    }
                    _ => Vec::new(),
                })
                .collect()
        };
        assert_eq!(frames(f), frames(&a.finding), "{scenario}: other frames");
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.join(format!("{stem}.json"))).expect("json"),
        )
        .expect("json");
        assert_eq!(json["finding"]["id"], scenario);
        let _ = std::fs::remove_dir_all(&out);
    }
}

/// The kernel side: a tap in a private namespace (loopback only) keeps what the filter passes, the
/// same verdict as the interpreter, and no data segment.
#[test]
fn the_kernel_ring_keeps_exactly_what_the_filter_passes() {
    for ebpf in [false, true] {
        ring_keeps_what_the_filter_passes(ebpf);
    }
}

/// One loopback exchange through a tap in a new namespace (DNS, UDP to another port, a 200 kB TCP
/// transfer): the ring holds exactly what the filter (classic or eBPF) decides, cut to its snap length.
fn ring_keeps_what_the_filter_passes(ebpf: bool) {
    use netsleuth_node::live::ebpf::IdleFilter;
    use netsleuth_node::live::tap::Tap;
    use std::io::{Read, Write};
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP: a packet socket in a new namespace needs root");
        return;
    }
    let got = std::thread::spawn(move || {
        // This thread alone enters a new namespace, gone when the thread ends.
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare");
        lo_up();
        let filter = IdleFilter::new(1024, IDLE_GAP).expect("map");
        let program = ebpf.then(|| filter.program(0).expect("program"));
        let mut tap = Tap::open_with(1 << 20, program.as_ref()).expect("tap");
        let dns = std::net::UdpSocket::bind("127.0.0.1:53").expect("bind 53");
        let other = std::net::UdpSocket::bind("127.0.0.1:9999").expect("bind 9999");
        let c = std::net::UdpSocket::bind("127.0.0.1:0").expect("client");
        c.send_to(&[0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0], "127.0.0.1:53")
            .expect("send");
        for _ in 0..5 {
            c.send_to(&[0u8; 100], "127.0.0.1:9999").expect("send");
        }
        let l = std::net::TcpListener::bind("127.0.0.1:8080").expect("listen");
        let mut s = std::net::TcpStream::connect("127.0.0.1:8080").expect("connect");
        let (mut a, _) = l.accept().expect("accept");
        let server = std::thread::spawn(move || {
            let mut sink = Vec::new();
            a.read_to_end(&mut sink).expect("read");
            sink.len()
        });
        s.write_all(&vec![7u8; 200_000]).expect("write");
        // Silence, then a few bytes more: after the gap the eBPF filter passes the client's segment
        // and the server's ACK of it (each direction's first after idle).
        std::thread::sleep(IDLE_GAP + std::time::Duration::from_millis(300));
        s.write_all(b"after idle").expect("write");
        std::thread::sleep(std::time::Duration::from_millis(100));
        drop(s);
        assert_eq!(server.join().expect("server"), 200_010);
        let _ = (dns, other);
        std::thread::sleep(std::time::Duration::from_millis(400));
        let mut seen: Vec<(u16, Vec<u8>, u32)> = Vec::new();
        let mut ts = Vec::new();
        tap.drain(|p| {
            seen.push((p.protocol, p.data.to_vec(), p.orig_len));
            ts.push(p.ts_ns);
        });
        tap.poll_stats();
        (seen, ts, tap.stats)
    })
    .join()
    .expect("tap thread");
    let (seen, ts, stats) = got;
    let prog = tap_filter();
    let mut model = IdleModel::new(IDLE_GAP);
    let mut dns = 0;
    let mut syn = 0;
    let mut fin = 0;
    let mut after_idle = 0;
    for (i, (proto, data, orig)) in seen.iter().enumerate() {
        // The kernel passed it, so the interpreter (or the model, at the packet's kernel timestamp)
        // must too, with the snap length it was cut to. (The model sees only what the kernel passed;
        // what it drops is then measured by the counts below.)
        let snap = if ebpf {
            model.verdict(0, *proto, data, ts[i])
        } else {
            run(&prog, *proto, data)
        };
        assert!(snap > 0, "kernel passed what the filter drops: {data:02x?}");
        assert_eq!(data.len() as u32, (*orig).min(snap));
        assert_eq!(data[9], if data[9] == 17 { 17 } else { 6 });
        if data[9] == 17 {
            assert_eq!(u16::from_be_bytes([data[22], data[23]]), 53);
            dns += 1;
        } else {
            let flags = data[33];
            syn += usize::from(flags & 0x02 != 0);
            fin += usize::from(flags & 0x01 != 0);
            after_idle += usize::from(flags & 0x07 == 0);
        }
    }
    // On loopback each packet is seen leaving and arriving.
    assert_eq!(dns, 2, "{seen:?}");
    assert_eq!(syn, 4, "SYN and SYN-ACK, twice each");
    assert!(fin >= 4, "both FINs, twice each");
    // The eBPF filter: each direction's first segment that is not SYN/FIN/RST (the handshake's ACK,
    // the server's first ACK), and after the silence the client's segment and the server's ACK of
    // it; each once (its arriving copy has the same tuple and comes within the gap): nothing else of
    // the 200 kB transfer.
    assert_eq!(
        after_idle,
        if ebpf { 4 } else { 0 },
        "ebpf {ebpf}: {seen:?}"
    );
    assert_eq!(stats.read, seen.len() as u64);
    assert_eq!(stats.passed, stats.read);
    assert_eq!(stats.dropped, 0);
    assert_eq!(stats.malformed, 0);
}

fn lo_up() {
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    assert!(fd >= 0);
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in b"lo".iter().enumerate() {
        req.ifr_name[i] = *b as libc::c_char;
    }
    unsafe {
        assert_eq!(libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req), 0);
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        assert_eq!(libc::ioctl(fd, libc::SIOCSIFFLAGS, &req), 0);
        libc::close(fd);
    }
}

/// Several namespaces' windows are analysed together, as `analyze` reads several captures: the same
/// incident seen in two namespaces is one finding, and the record (one pcap per namespace) re-finds it.
#[test]
fn namespaces_are_analysed_together_and_recorded_as_one_finding() {
    use netsleuth_node::live::taps::write_record;
    let dir = fixtures().join("dns-id-collision");
    let facts = netsleuth_node::read_bundle(&dir.join("node.tar.gz")).expect("bundle");
    let ctx = netsleuth_node::to_node_context(&facts);
    let mut node = FlightRecorder::new("tap:node".into());
    let mut routing = FlightRecorder::new("tap:pod routing".into());
    replay(&dir.join("node.pcap"), &mut node, Filter::Ebpf);
    replay(&dir.join("routing.pcap"), &mut routing, Filter::Ebpf);
    let end = last_ts(&dir.join("node.pcap")).max(last_ts(&dir.join("routing.pcap")));
    let (found, _) = Cycles::new().run(&mut [&mut node, &mut routing], end, &ctx, true);
    let ids: Vec<_> = found.iter().map(|a| a.finding.id).collect();
    assert_eq!(ids, ["dns-id-collision"]);
    let out = std::env::temp_dir().join(format!("netsleuth-tap-record2-{}", std::process::id()));
    let stem = write_record(&out, 1, &[&node, &routing], &found[0], Some(&facts)).expect("write");
    let inputs = (0..2)
        .map(|k| {
            netsleuth_core::Input::stream(
                format!("{k}.pcap"),
                Box::new(std::fs::File::open(out.join(format!("{stem}-{k}.pcap"))).expect("pcap")),
            )
        })
        .collect();
    let again = netsleuth_core::analyze(inputs, &ctx);
    let f = again
        .findings
        .iter()
        .find(|f| f.id == "dns-id-collision")
        .expect("re-found");
    assert_eq!(f.confidence, found[0].finding.confidence);
    assert_eq!(f.summary, found[0].finding.summary);
    let json = std::fs::read_to_string(out.join(format!("{stem}.json"))).expect("json");
    assert!(
        json.contains(&format!(
            "--node {stem}.node.tar.gz {stem}-0.pcap {stem}-1.pcap"
        )),
        "{json}"
    );
    let _ = std::fs::remove_dir_all(&out);
}

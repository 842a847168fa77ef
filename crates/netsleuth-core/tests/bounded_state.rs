//! The engine's state stays bounded under hostile input: floods of SYNs, unanswered DNS queries and
//! IPv4 first fragments, and connections first seen mid-stream, generated in-process from a seed and
//! pushed through the public sans-IO `Engine`. Peak live state never exceeds the caps derived from
//! the memory budget, what was evicted is reported, and a flood is still evidence.
//! (Peak RSS and time against packets are measured in BENCHMARKS.md "Hostile input".)

use netsleuth_core::analysis::{Engine, Limits};
use netsleuth_core::capture::Record;
use netsleuth_core::node::NodeContext;
use netsleuth_core::{Analysis, FindingKind};

const T0: i64 = 1_750_000_000_000_000_000;
const LINKTYPE_ETHERNET: u32 = 1;

/// xorshift64*: a seeded generator, so every run sees the same packets.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// An Ethernet + IPv4 frame with `l4` as its payload.
fn ipv4_frame(src: [u8; 4], dst: [u8; 4], proto: u8, ident: u16, frag: u16, l4: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(34 + l4.len());
    f.extend_from_slice(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0x08, 0x00]);
    let total = (20 + l4.len()) as u16;
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&ident.to_be_bytes());
    f.extend_from_slice(&frag.to_be_bytes());
    f.extend_from_slice(&[64, proto, 0, 0]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(l4);
    f
}

fn tcp_header(sport: u16, dport: u16, seq: u32, ack: u32, flags: u8) -> [u8; 20] {
    let mut h = [0u8; 20];
    h[0..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[4..8].copy_from_slice(&seq.to_be_bytes());
    h[8..12].copy_from_slice(&ack.to_be_bytes());
    h[12] = 5 << 4;
    h[13] = flags;
    h[14..16].copy_from_slice(&65_535u16.to_be_bytes());
    h
}

fn dns_query_udp(sport: u16, id: u16, name_index: u64, claimed_extra: u16) -> Vec<u8> {
    let mut q = Vec::new();
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    let label = format!("q{name_index:010}");
    q.push(label.len() as u8);
    q.extend_from_slice(label.as_bytes());
    q.extend_from_slice(b"\x07example\x03com\x00\x00\x01\x00\x01");
    let mut u = Vec::with_capacity(8 + q.len());
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&53u16.to_be_bytes());
    u.extend_from_slice(&(8 + q.len() as u16 + claimed_extra).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(&q);
    u
}

/// Push generated frames through an engine with `limits`, one every `gap_ns`.
fn run(limits: &Limits, n: u64, gap_ns: i64, mut frame: impl FnMut(u64) -> Vec<u8>) -> Analysis {
    let mut engine = Engine::new(vec!["generated.pcap".into()], limits);
    for i in 0..n {
        let data = frame(i);
        let rec = Record {
            frame: i + 1,
            offset: 24 + i * 100,
            ts_ns: T0 + i as i64 * gap_ns,
            linktype: LINKTYPE_ETHERNET,
            interface: 0,
            orig_len: data.len() as u32,
            data: &data,
        };
        engine.push(0, &rec);
    }
    engine.finish(&NodeContext::default())
}

fn state_cap_diagnostics(a: &Analysis) -> Vec<&str> {
    a.diagnostics
        .iter()
        .filter(|d| d.code == "state-cap")
        .map(|d| d.message.as_str())
        .collect()
}

#[test]
fn a_million_syn_flood_stays_within_the_connection_cap_and_is_still_found() {
    let limits = Limits::default();
    let mut rng = Rng(0x5eed_0001);
    // 1 M SYNs at 100 k/s, each from its own address and port, to one Service.
    let a = run(&limits, 1_000_000, 10_000, |i| {
        let src = 0x0a00_0000u32 | ((i as u32).wrapping_mul(7919) & 0x00ff_ffff);
        let sport = 1024 + (i % 64_000) as u16;
        let tcp = tcp_header(sport, 80, rng.next() as u32, 0, 0x02);
        ipv4_frame(src.to_be_bytes(), [10, 96, 0, 1], 6, i as u16, 0, &tcp)
    });
    let cap = limits.max_live_connections() as u64;
    assert!(
        a.stats.tcp_peak_live_connections <= cap,
        "peak {} live connections over the cap {cap}",
        a.stats.tcp_peak_live_connections
    );
    assert_eq!(a.stats.tcp_connections, 1_000_000);
    assert_eq!(a.stats.tcp_evicted, 1_000_000 - cap);
    let caps = state_cap_diagnostics(&a);
    assert_eq!(caps.len(), 1, "{:?}", a.diagnostics);
    assert!(
        caps[0].contains("state cap reached at frame"),
        "{}",
        caps[0]
    );
    assert!(
        a.findings
            .iter()
            .any(|f| f.kind == FindingKind::Incident && f.id == "listen-queue-overflow"),
        "the flood is still evidence: {:?}",
        a.findings.iter().map(|f| f.id).collect::<Vec<_>>()
    );
}

#[test]
fn a_million_unanswered_queries_stay_within_the_dns_cap() {
    let limits = Limits::default();
    let a = run(&limits, 1_000_000, 10_000, |i| {
        let src = [10, 244, (i >> 24) as u8, (i >> 16) as u8];
        let u = dns_query_udp(1024 + (i % 60_000) as u16, i as u16, i, 0);
        ipv4_frame(src, [10, 96, 0, 10], 17, i as u16, 0, &u)
    });
    let cap = limits.max_live_dns_queries() as u64;
    assert!(
        a.stats.dns_peak_live_queries <= cap,
        "peak {} live queries over the cap {cap}",
        a.stats.dns_peak_live_queries
    );
    assert_eq!(a.stats.dns_queries, 1_000_000);
    assert_eq!(
        a.stats.dns_unanswered, 1_000_000,
        "every query is still accounted for"
    );
    assert!(a.stats.dns_evicted > 0);
    assert_eq!(state_cap_diagnostics(&a).len(), 1, "{:?}", a.diagnostics);
}

#[test]
fn a_million_fragments_stay_bounded() {
    let limits = Limits::default();
    // Half first fragments carrying a UDP/53 header and a question, half middle fragments.
    let a = run(&limits, 1_000_000, 10_000, |i| {
        let src = [10, 1, (i >> 8) as u8, i as u8];
        let ident = (i as u16).wrapping_mul(40_503);
        if i % 2 == 0 {
            let u = dns_query_udp(1024 + (i % 60_000) as u16, 7, i, 1400);
            ipv4_frame(src, [10, 96, 0, 10], 17, ident, 0x2000, &u)
        } else {
            let off = 185 * (1 + (i % 5) as u16);
            ipv4_frame(src, [10, 96, 0, 10], 17, ident, 0x2000 | off, &[0u8; 64])
        }
    });
    assert!(a.stats.dns_peak_live_queries <= limits.max_live_dns_queries() as u64);
    assert!(a.stats.tcp_peak_live_connections == 0);
    assert_eq!(a.stats.records, 1_000_000);
}

#[test]
fn fifty_thousand_mid_stream_connections_are_matched_without_scanning_them_all() {
    // A capture started on a busy SNAT node: 50 k connections from one address to one server, each
    // first seen mid-stream. With a budget that holds them all, none is evicted and each is its own
    // connection; with a small budget the cap holds and the eviction is said.
    let mut rng = Rng(0x5eed_0003);
    let frames: Vec<Vec<u8>> = (0..50_000u64)
        .map(|i| {
            let cip = 0x0af4_0102u32 + (i / 64_000) as u32;
            let tcp = tcp_header(
                1024 + (i % 64_000) as u16,
                80,
                rng.next() as u32,
                rng.next() as u32,
                0x10,
            );
            ipv4_frame(cip.to_be_bytes(), [10, 96, 0, 1], 6, i as u16, 0, &tcp)
        })
        .collect();
    let roomy = Limits {
        memory_budget: 1 << 30,
    };
    let a = run(&roomy, 50_000, 10_000, |i| frames[i as usize].clone());
    assert_eq!(a.stats.tcp_connections, 50_000);
    assert_eq!(
        a.stats.tcp_mid_stream_legs, 0,
        "no segment joined another connection"
    );
    assert_eq!(a.stats.tcp_evicted, 0);
    assert!(state_cap_diagnostics(&a).is_empty());

    let small = Limits {
        memory_budget: 32 << 20,
    };
    let b = run(&small, 50_000, 10_000, |i| frames[i as usize].clone());
    assert!(b.stats.tcp_peak_live_connections <= small.max_live_connections() as u64);
    assert!(b.stats.tcp_evicted > 0);
    assert_eq!(state_cap_diagnostics(&b).len(), 1);
}

/// DNS to two servers: one answers, one never does (dns-upstream-unreachable), over two minutes.
fn upstream_capture(outlier_at: Option<u64>) -> Analysis {
    let limits = Limits::default();
    let mut engine = Engine::new(vec!["generated.pcap".into()], &limits);
    let mut frame = 0u64;
    let mut push = |engine: &mut Engine, ts: i64, data: Vec<u8>| {
        frame += 1;
        let ts = if Some(frame) == outlier_at {
            // A damaged record: stamped in 2106.
            4_294_967_280_000_000_000
        } else {
            ts
        };
        engine.push(
            0,
            &Record {
                frame,
                offset: frame * 100,
                ts_ns: ts,
                linktype: LINKTYPE_ETHERNET,
                interface: 0,
                orig_len: data.len() as u32,
                data: &data,
            },
        );
    };
    for i in 0..240u64 {
        let t = T0 + i as i64 * 500_000_000;
        let server = if i % 2 == 0 {
            [10, 0, 0, 2]
        } else {
            [10, 0, 0, 3]
        };
        let q = dns_query_udp(40_000 + i as u16, i as u16, i, 0);
        push(
            &mut engine,
            t,
            ipv4_frame([10, 244, 1, 5], server, 17, i as u16, 0, &q),
        );
        if server == [10, 0, 0, 2] {
            let mut r = q.clone();
            r.swap(0, 2);
            r.swap(1, 3);
            r[10] |= 0x80; // QR
            push(
                &mut engine,
                t + 1_000_000,
                ipv4_frame(server, [10, 244, 1, 5], 17, 9, 0, &r),
            );
        }
    }
    engine.finish(&NodeContext::default())
}

#[test]
fn one_future_stamped_record_changes_nothing_found() {
    let clean = upstream_capture(None);
    let ids = |a: &Analysis| {
        a.findings
            .iter()
            .map(|f| (f.id, f.confidence))
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&clean).len(), 1, "{:?}", ids(&clean));
    for at in [1, 2, 50, 359, 360] {
        let damaged = upstream_capture(Some(at));
        assert_eq!(ids(&damaged), ids(&clean), "outlier at frame {at}");
        assert!(
            damaged.stats.dns_peak_live_queries <= clean.stats.dns_peak_live_queries + 1,
            "expiry kept running: peak {} vs {}",
            damaged.stats.dns_peak_live_queries,
            clean.stats.dns_peak_live_queries
        );
        assert_eq!(damaged.stats.timestamp_outliers, 1, "outlier at frame {at}");
        assert!(damaged
            .diagnostics
            .iter()
            .any(|d| d.code == "timestamp-outlier" && d.frame == Some(at)));
    }
}

#[test]
fn a_long_idle_the_next_record_confirms_is_not_an_outlier() {
    // Two packets, then three hours of silence, then the capture goes on: a real idle.
    let limits = Limits::default();
    let mut engine = Engine::new(vec!["generated.pcap".into()], &limits);
    let h = 3 * 3_600_000_000_000i64;
    for (frame, ts) in [
        (1u64, T0),
        (2, T0 + 1_000),
        (3, T0 + h),
        (4, T0 + h + 1_000),
    ] {
        let tcp = tcp_header(40_000, 80, 1000 + frame as u32, 5000, 0x10);
        let data = ipv4_frame([10, 0, 0, 1], [10, 0, 0, 2], 6, frame as u16, 0, &tcp);
        engine.push(
            0,
            &Record {
                frame,
                offset: 0,
                ts_ns: ts,
                linktype: LINKTYPE_ETHERNET,
                interface: 0,
                orig_len: data.len() as u32,
                data: &data,
            },
        );
    }
    let a = engine.finish(&NodeContext::default());
    assert_eq!(a.stats.timestamp_outliers, 0, "{:?}", a.diagnostics);
    assert_eq!(a.stats.last_ts_ns, Some(T0 + h + 1_000));
}

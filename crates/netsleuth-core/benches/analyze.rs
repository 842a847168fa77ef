//! Throughput of the full analysis (`netsleuth_core::analyze`: framing → decode → TCP flow engine
//! across NAT legs → DNS tracker → detectors) over an in-memory capture.
//!
//! The capture is `NETSLEUTH_BENCH_PCAP` (a file, e.g. a 100–200 MB slice of a capture made with
//! `scripts/make-bench-capture.sh`) or, when that is unset, a synthetic one built here
//! (`NETSLEUTH_BENCH_SYNTH_MB`, default 150; `NETSLEUTH_BENCH_SAVE_SYNTH=PATH` also writes it out):
//! a node's `tcpdump -i any` view of many short request/response connections, some keep-alive ones
//! and a few bulk downloads, every packet seen twice (before and after DNAT + masquerade), Linux
//! SLL2, wire-sized segments.
//!
//! Each capture is also measured cut to a snap length of 128 bytes (`tcpdump -s 128`, `editcap -s
//! 128`: what node captures usually are), where the cost is per packet rather than per byte, and with
//! the two-thread pipeline (`analyze_threads(.., 2)`) beside the one-thread engine.
//!
//!   cargo bench -p netsleuth-core --bench analyze
//!   NETSLEUTH_BENCH_PCAP=/tmp/slice.pcap cargo bench -p netsleuth-core --bench analyze
//!
//! The capture is held once in memory and handed to `analyze` two ways: through a reader that copies
//! out of it, as reading a pipe or a file from the page cache does (`read`), and framed in place, as
//! `netsleuth analyze` does with a file it maps (`mapped`). No copy of the whole capture is made per
//! iteration.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use netsleuth_core::analysis::{analyze_threads, Limits};
use netsleuth_core::node::NodeContext;
use netsleuth_core::{analyze, InMemory, Input, MemoryBytes};
use std::io::{self, Read};
use std::sync::Arc;
use std::time::Duration;

/// A `Read` over a shared in-memory capture.
struct SharedBytes {
    data: Arc<[u8]>,
    pos: usize,
}

impl Read for SharedBytes {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let rest = &self.data[self.pos..];
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.pos += n;
        Ok(n)
    }
}

fn input(data: &Arc<[u8]>) -> Vec<Input> {
    vec![Input::stream(
        "bench.pcap".to_string(),
        Box::new(SharedBytes {
            data: Arc::clone(data),
            pos: 0,
        }),
    )]
}

fn load_capture() -> (Arc<[u8]>, String) {
    match std::env::var_os("NETSLEUTH_BENCH_PCAP") {
        Some(path) => {
            let bytes = std::fs::read(&path).unwrap_or_else(|e| {
                panic!(
                    "NETSLEUTH_BENCH_PCAP={}: cannot read it: {e} (unset it to use the synthetic capture)",
                    path.to_string_lossy()
                )
            });
            let name = std::path::Path::new(&path)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "file".into());
            (bytes.into(), name)
        }
        None => {
            let mb: usize = std::env::var("NETSLEUTH_BENCH_SYNTH_MB")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(150);
            let bytes = synth::capture(mb << 20);
            // To look at it with other tools (tshark, `netsleuth analyze`).
            if let Some(path) = std::env::var_os("NETSLEUTH_BENCH_SAVE_SYNTH") {
                std::fs::write(&path, &bytes).unwrap_or_else(|e| {
                    panic!("NETSLEUTH_BENCH_SAVE_SYNTH={}: {e}", path.to_string_lossy())
                });
            }
            (bytes.into(), format!("synthetic-{mb}MiB"))
        }
    }
}

fn bench_analyze(c: &mut Criterion) {
    let (data, name) = load_capture();
    // One run outside the timing, to show what the capture holds (and that it is analysed at all).
    let a = analyze(input(&data), &NodeContext::default());
    let s = &a.stats;
    eprintln!(
        "capture {name}: {:.1} MB, {} packets (mean {:.0} B), {} TCP connections ({} with NAT legs), \
         peak {} live, {} copies, {} findings, {} diagnostics",
        data.len() as f64 / 1e6,
        s.records,
        s.bytes as f64 / s.records.max(1) as f64,
        s.tcp_connections,
        s.tcp_connections_multi_leg,
        s.tcp_peak_live_connections,
        s.tcp_copies,
        a.findings.len(),
        a.diagnostics.len(),
    );
    assert!(
        s.tcp_packets > 0,
        "the bench capture has no TCP packets: nothing to measure"
    );

    let cut = snap(&data, 128);
    let cut: Arc<[u8]> = cut.into();
    let mut g = c.benchmark_group("analyze");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(8));
    g.warm_up_time(Duration::from_secs(2));
    for (label, bytes) in [(name.clone(), &data), (format!("{name}-snaplen128"), &cut)] {
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        // The bytes as `analyze` holds a mapped file: in memory for the rest of the process.
        let whole: &'static [u8] = Box::leak(bytes.to_vec().into_boxed_slice());
        for (how, threads) in [("read", 1), ("read", 2), ("mapped", 1), ("mapped", 2)] {
            g.bench_function(format!("{label}/{how}/threads-{threads}"), |b| {
                b.iter(|| {
                    let inputs = match how {
                        "read" => input(bytes),
                        _ => vec![Input::memory(
                            "bench.pcap",
                            InMemory {
                                bytes: MemoryBytes::Static(whole),
                                consumed: None,
                                idle: None,
                            },
                        )],
                    };
                    let a = analyze_threads(
                        inputs,
                        &NodeContext::default(),
                        &Limits::default(),
                        threads,
                    );
                    std::hint::black_box(a.stats.tcp_connections)
                })
            });
        }
    }
    g.finish();
}

/// The capture with every record cut to `snaplen` bytes, as `editcap -s` does (classic pcap only;
/// anything else is returned unchanged).
fn snap(data: &[u8], snaplen: usize) -> Vec<u8> {
    let le = match data.get(..4) {
        Some([0xd4, 0xc3, 0xb2, 0xa1]) | Some([0x4d, 0x3c, 0xb2, 0xa1]) => true,
        Some([0xa1, 0xb2, 0xc3, 0xd4]) | Some([0xa1, 0xb2, 0x3c, 0x4d]) => false,
        _ => return data.to_vec(),
    };
    let u32_at = |b: &[u8]| {
        let a = [b[0], b[1], b[2], b[3]];
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let put = |v: u32| if le { v.to_le_bytes() } else { v.to_be_bytes() };
    let mut out = Vec::with_capacity(data.len() / 4);
    out.extend_from_slice(&data[..24]);
    out[16..20].copy_from_slice(&put(snaplen as u32));
    let mut at = 24;
    while at + 16 <= data.len() {
        let caplen = u32_at(&data[at + 8..]) as usize;
        let end = (at + 16 + caplen).min(data.len());
        let keep = caplen.min(snaplen).min(end - at - 16);
        out.extend_from_slice(&data[at..at + 8]);
        out.extend_from_slice(&put(keep as u32));
        out.extend_from_slice(&data[at + 12..at + 16]);
        out.extend_from_slice(&data[at + 16..at + 16 + keep]);
        at = end;
    }
    out
}

criterion_group!(benches, bench_analyze);
criterion_main!(benches);

/// A synthetic node capture, deterministic (fixed seed), built at memory speed.
mod synth {
    use std::collections::VecDeque;

    const LINKTYPE_LINUX_SLL2: u32 = 276;
    const MSS: u32 = 1448;
    /// Conversations open at once: the flow engine's live set.
    const CONCURRENT: usize = 512;

    const FIN: u8 = 0x01;
    const SYN: u8 = 0x02;
    const PSH: u8 = 0x08;
    const ACK: u8 = 0x10;
    const PKTTYPE_HOST: u8 = 0;
    const PKTTYPE_OUTGOING: u8 = 4;

    // The same addressing as scripts/make-bench-capture.sh: client → service VIP on the pod side,
    // masqueraded node address → server after NAT.
    const CLIENT: [u8; 4] = [198, 18, 1, 2];
    const VIP: [u8; 4] = [198, 19, 0, 10];
    const NODE: [u8; 4] = [198, 18, 2, 1];
    const SERVER: [u8; 4] = [198, 18, 2, 2];
    const IF_CLIENT_SIDE: u32 = 2;
    const IF_SERVER_SIDE: u32 = 3;

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            // xorshift64*
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn range(&mut self, lo: u32, hi: u32) -> u32 {
            lo + (self.next() % u64::from(hi - lo + 1)) as u32
        }
        /// Log-uniform between 10^lo and 10^hi.
        fn log_uniform(&mut self, lo: f64, hi: f64) -> u32 {
            let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
            10f64.powf(lo + u * (hi - lo)) as u32
        }
    }

    #[derive(Clone, Copy)]
    struct Seg {
        from_client: bool,
        flags: u8,
        len: u32,
    }

    enum Kind {
        /// 1–4 requests, then close.
        Short { requests_left: u32 },
        /// Many small requests on one connection.
        KeepAlive { requests_left: u32 },
        /// One request, a response of tens of MB.
        Bulk { done: bool },
    }

    struct Conv {
        port: u16,
        next: [u32; 2],
        ident: [u16; 2],
        kind: Kind,
        queue: VecDeque<Seg>,
        closing: bool,
        server_closes: bool,
    }

    struct Writer {
        out: Vec<u8>,
        frame: Vec<u8>,
        ts: i64,
    }

    impl Writer {
        fn record(&mut self, ts: i64) {
            let len = self.frame.len() as u32;
            self.out
                .extend_from_slice(&((ts / 1_000_000_000) as u32).to_le_bytes());
            self.out
                .extend_from_slice(&((ts % 1_000_000_000) as u32).to_le_bytes());
            self.out.extend_from_slice(&len.to_le_bytes());
            self.out.extend_from_slice(&len.to_le_bytes());
            self.out.extend_from_slice(&self.frame);
        }
    }

    fn checksum(mut sum: u32, bytes: &[u8]) -> u32 {
        let mut chunks = bytes.chunks_exact(2);
        for c in &mut chunks {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [b] = chunks.remainder() {
            sum += u32::from(*b) << 8;
        }
        sum
    }

    fn fold(mut sum: u32) -> u16 {
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    #[allow(clippy::too_many_arguments)]
    fn build_frame(
        frame: &mut Vec<u8>,
        ifindex: u32,
        pkttype: u8,
        src: [u8; 4],
        sport: u16,
        dst: [u8; 4],
        dport: u16,
        ttl: u8,
        ident: u16,
        seq: u32,
        ack: u32,
        flags: u8,
        payload_len: u32,
    ) {
        frame.clear();
        // SLL2
        frame.extend_from_slice(&0x0800u16.to_be_bytes());
        frame.extend_from_slice(&[0, 0]);
        frame.extend_from_slice(&ifindex.to_be_bytes());
        frame.extend_from_slice(&[0x00, 0x01, pkttype, 6]);
        frame.extend_from_slice(&[0x02, 0, 0, 0, 0, ifindex as u8, 0, 0]);
        let options: &[u8] = if flags & SYN != 0 {
            &[2, 4, (1460u16 >> 8) as u8, (1460u16 & 0xff) as u8]
        } else {
            &[]
        };
        let tcp_len = 20 + options.len() as u32 + payload_len;
        let ip_start = frame.len();
        // IPv4, DF
        frame.extend_from_slice(&[0x45, 0]);
        frame.extend_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
        frame.extend_from_slice(&ident.to_be_bytes());
        frame.extend_from_slice(&[0x40, 0, ttl, 6, 0, 0]);
        frame.extend_from_slice(&src);
        frame.extend_from_slice(&dst);
        let ip_sum = fold(checksum(0, &frame[ip_start..]));
        frame[ip_start + 10..ip_start + 12].copy_from_slice(&ip_sum.to_be_bytes());
        let tcp_start = frame.len();
        frame.extend_from_slice(&sport.to_be_bytes());
        frame.extend_from_slice(&dport.to_be_bytes());
        frame.extend_from_slice(&seq.to_be_bytes());
        frame.extend_from_slice(&ack.to_be_bytes());
        frame.push(((20 + options.len()) as u8 / 4) << 4);
        frame.push(flags);
        frame.extend_from_slice(&[0xfa, 0xf0, 0, 0, 0, 0]);
        frame.extend_from_slice(options);
        frame.extend(
            (0..payload_len).map(|i| b'a' + (i.wrapping_mul(7).wrapping_add(seq) % 26) as u8),
        );
        let mut sum = checksum(0, &src);
        sum = checksum(sum, &dst);
        sum += 6 + tcp_len;
        let tcp_sum = fold(checksum(sum, &frame[tcp_start..]));
        frame[tcp_start + 16..tcp_start + 18].copy_from_slice(&tcp_sum.to_be_bytes());
    }

    impl Conv {
        fn new(rng: &mut Rng, port: u16) -> Conv {
            let roll = rng.range(0, 999);
            let kind = if roll < 5 {
                Kind::Bulk { done: false }
            } else if roll < 40 {
                Kind::KeepAlive {
                    requests_left: rng.range(50, 500),
                }
            } else {
                Kind::Short {
                    requests_left: rng.range(1, 4),
                }
            };
            let mut c = Conv {
                port,
                next: [rng.next() as u32, rng.next() as u32],
                ident: [rng.next() as u16, rng.next() as u16],
                kind,
                queue: VecDeque::new(),
                closing: false,
                server_closes: rng.range(0, 1) == 0,
            };
            c.push(true, SYN, 0);
            c.push(false, SYN | ACK, 0);
            c.push(true, ACK, 0);
            c
        }

        fn push(&mut self, from_client: bool, flags: u8, len: u32) {
            self.queue.push_back(Seg {
                from_client,
                flags,
                len,
            });
        }

        /// One request and its response (segments ACKed every second one, as delayed ACK does).
        fn exchange(&mut self, request: u32, response: u32) {
            self.push(true, PSH | ACK, request);
            let mut left = response;
            let mut unacked = 0;
            while left > 0 {
                let n = left.min(MSS);
                left -= n;
                self.push(false, if left == 0 { PSH | ACK } else { ACK }, n);
                unacked += 1;
                if unacked == 2 || left == 0 {
                    self.push(true, ACK, 0);
                    unacked = 0;
                }
            }
        }

        /// Queue the next phase; false when the conversation is over.
        fn refill(&mut self, rng: &mut Rng) -> bool {
            if self.closing {
                return false;
            }
            match &mut self.kind {
                Kind::Short { requests_left } | Kind::KeepAlive { requests_left }
                    if *requests_left > 0 =>
                {
                    *requests_left -= 1;
                    let short = matches!(self.kind, Kind::Short { .. });
                    let request = rng.range(40, 600);
                    let response = if short {
                        rng.log_uniform(2.0, 4.5)
                    } else {
                        rng.range(50, 3000)
                    };
                    self.exchange(request, response);
                }
                Kind::Bulk { done } if !*done => {
                    *done = true;
                    let response = rng.range(10, 60) << 20;
                    self.exchange(64, response);
                }
                _ => {
                    self.closing = true;
                    let first = !self.server_closes;
                    self.push(first, FIN | ACK, 0);
                    self.push(!first, FIN | ACK, 0);
                    self.push(first, ACK, 0);
                }
            }
            true
        }

        /// The next segment as seen on both sides of the node: (client-side frame, server-side frame),
        /// in the order the node sees them.
        fn emit(&mut self, seg: Seg, w: &mut Writer) {
            let dir = usize::from(!seg.from_client);
            let seq = self.next[dir];
            let ack = if seg.flags & ACK != 0 {
                self.next[1 - dir]
            } else {
                0
            };
            self.next[dir] = seq
                .wrapping_add(seg.len)
                .wrapping_add(u32::from(seg.flags & (SYN | FIN) != 0));
            let ident = self.ident[dir];
            self.ident[dir] = ident.wrapping_add(1);
            let ts = w.ts;
            if seg.from_client {
                build_frame(
                    &mut w.frame,
                    IF_CLIENT_SIDE,
                    PKTTYPE_HOST,
                    CLIENT,
                    self.port,
                    VIP,
                    80,
                    64,
                    ident,
                    seq,
                    ack,
                    seg.flags,
                    seg.len,
                );
                w.record(ts);
                build_frame(
                    &mut w.frame,
                    IF_SERVER_SIDE,
                    PKTTYPE_OUTGOING,
                    NODE,
                    self.port,
                    SERVER,
                    80,
                    63,
                    ident,
                    seq,
                    ack,
                    seg.flags,
                    seg.len,
                );
                w.record(ts + 2_000);
            } else {
                build_frame(
                    &mut w.frame,
                    IF_SERVER_SIDE,
                    PKTTYPE_HOST,
                    SERVER,
                    80,
                    NODE,
                    self.port,
                    64,
                    ident,
                    seq,
                    ack,
                    seg.flags,
                    seg.len,
                );
                w.record(ts);
                build_frame(
                    &mut w.frame,
                    IF_CLIENT_SIDE,
                    PKTTYPE_OUTGOING,
                    VIP,
                    80,
                    CLIENT,
                    self.port,
                    63,
                    ident,
                    seq,
                    ack,
                    seg.flags,
                    seg.len,
                );
                w.record(ts + 2_000);
            }
        }
    }

    /// A pcap (nanosecond, LINUX_SLL2) of about `target` bytes.
    pub fn capture(target: usize) -> Vec<u8> {
        let mut rng = Rng(0x6e65_7473_6c65_7574);
        let mut w = Writer {
            out: Vec::with_capacity(target + (1 << 16)),
            frame: Vec::with_capacity(2048),
            ts: 1_795_000_000_000_000_000,
        };
        w.out.extend_from_slice(&0xa1b2_3c4du32.to_le_bytes());
        w.out.extend_from_slice(&2u16.to_le_bytes());
        w.out.extend_from_slice(&4u16.to_le_bytes());
        w.out.extend_from_slice(&[0; 8]);
        w.out.extend_from_slice(&262_144u32.to_le_bytes());
        w.out.extend_from_slice(&LINKTYPE_LINUX_SLL2.to_le_bytes());

        let mut next_port: u16 = 1024;
        let mut new_port = || {
            let p = next_port;
            next_port = if next_port >= 65000 {
                1024
            } else {
                next_port + 1
            };
            p
        };
        let mut live: Vec<Conv> = (0..CONCURRENT)
            .map(|_| Conv::new(&mut rng, new_port()))
            .collect();
        while w.out.len() < target {
            let i = (rng.next() % live.len() as u64) as usize;
            // One flight of a conversation: a handshake, a request and its response, or up to 64
            // segments of a bulk transfer, back to back as on a fast link; then another conversation.
            w.ts += i64::from(rng.range(200_000, 1_000_000));
            if live[i].queue.is_empty() && !live[i].refill(&mut rng) {
                live[i] = Conv::new(&mut rng, new_port());
            }
            for _ in 0..64 {
                let Some(seg) = live[i].queue.pop_front() else {
                    break;
                };
                live[i].emit(seg, &mut w);
                w.ts += i64::from(rng.range(1_000, 10_000));
            }
        }
        w.out
    }
}

//! Benchmark of `watch`'s packet tap (BENCHMARKS.md "Watch"): how many packets per second it reads
//! through its filter, what the ring drops, and its CPU.
//!
//! ```sh
//! cargo build --release -p netsleuth-lab --example tap_bench
//! sudo target/release/examples/tap_bench MODE SECONDS [--classic]
//! ```
//!
//! Two lab namespaces joined by a veth pair (10.9.0.1 ↔ 10.9.0.2). The tap (`live::tap::Tap`, the
//! kernel filter and ring `watch` opens) is opened in the receiver, and a reader thread does what the
//! watch loop does: `poll`, drain the ring into the flight recorder, read `PACKET_STATISTICS` each
//! second. A sender thread floods from the other namespace, as fast as it can, with MODE:
//! - `udp`: UDP to port 9999 (the filter drops every one);
//! - `dns`: UDP to port 53 (the filter passes every one, cut to its DNS snap length);
//! - `syn`: TCP connects to a closed port (SYN in, RST out: both passed);
//! - `prog`: no traffic; the eBPF program alone, run by the kernel (`BPF_PROG_TEST_RUN`) SECONDS
//!   million times on each kind of packet, with the kernel's mean time a run;
//! - `bulk`: one TCP connection sending as fast as it can to a reader in the receiver (the eBPF
//!   filter passes each direction's first segment and drops the rest: "sent" counts bytes).
//!
//! The tap's filter is the eBPF one `watch` loads, or with `--classic` the classic one (compare the
//! two `bulk` rates to see what the idle check's map lookup per segment costs).
//!
//! Prints packets sent, passed by the filter, dropped by the ring, read, and the reader's CPU (its
//! thread CPU clock) per second of traffic; then one analysis cycle over the recorder's window
//! (the core on every namespace's packets of the last 30 s) and its CPU time. Namespaces are removed
//! on exit.

use netsleuth_core::node::NodeContext;
use netsleuth_lab::netns::Netns;
use netsleuth_node::live::flight::{Cycles, FlightRecorder};
use netsleuth_node::live::tap::Tap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: tap_bench udp|dns|syn|bulk|prog SECONDS [--classic]");
        std::process::exit(2);
    }
    let mode = args[1].clone();
    let secs: u64 = args[2].parse().expect("SECONDS");
    if mode == "prog" {
        program_cost(secs);
        return;
    }
    netsleuth_lab::registry::install_signal_cleanup();
    let tx = Netns::create("tapsend").expect("a namespace (needs root)");
    let rx = Netns::create("taprecv").expect("a namespace (needs root)");
    tx.ip(&[
        "link",
        "add",
        "v0",
        "type",
        "veth",
        "peer",
        "name",
        "v1",
        "netns",
        rx.name(),
    ])
    .expect("veth");
    tx.ip(&["addr", "add", "10.9.0.1/24", "dev", "v0"])
        .expect("addr");
    rx.ip(&["addr", "add", "10.9.0.2/24", "dev", "v1"])
        .expect("addr");
    for (ns, dev) in [(&tx, "v0"), (&rx, "v1")] {
        ns.ip(&["link", "set", dev, "up"]).expect("up");
        ns.ip(&["link", "set", "lo", "up"]).expect("lo up");
    }
    let classic = args.iter().any(|a| a == "--classic");
    let filter = netsleuth_node::live::ebpf::IdleFilter::new(
        netsleuth_node::live::ebpf::IDLE_MAP_ENTRIES,
        netsleuth_node::live::ebpf::IDLE_GAP,
    )
    .expect("the eBPF map");
    let program = (!classic).then(|| filter.program(0).expect("the eBPF program"));
    let mut tap = rx
        .run(|| Ok(Tap::open_with(1 << 20, program.as_ref())))
        .expect("enter")
        .expect("tap");
    if mode == "bulk" {
        rx.spawn("sink", || {
            let l = std::net::TcpListener::bind("10.9.0.2:5001").expect("listen");
            if let Ok((mut c, _)) = l.accept() {
                let _ = std::io::copy(&mut c, &mut std::io::sink());
            }
            Ok(())
        })
        .expect("sink");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let reader_stop = stop.clone();
    let reader = std::thread::spawn(move || {
        let mut rec = FlightRecorder::new("tap:taprecv".into());
        let cpu0 = thread_cpu();
        let mut next = Instant::now() + Duration::from_secs(1);
        while !reader_stop.load(Ordering::SeqCst) {
            let mut p = libc::pollfd {
                fd: tap.fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            unsafe { libc::poll(&mut p, 1, 200) };
            // As the watch loop: let packets gather a moment, then one drain.
            std::thread::sleep(Duration::from_millis(50));
            tap.drain(|pkt| rec.push(pkt));
            if Instant::now() >= next {
                next += Duration::from_secs(1);
                tap.poll_stats();
            }
        }
        tap.drain(|pkt| rec.push(pkt));
        tap.poll_stats();
        let cpu = thread_cpu() - cpu0;
        (tap.stats, cpu, rec)
    });
    std::thread::sleep(Duration::from_millis(300));
    let sent = Arc::new(AtomicU64::new(0));
    let s2 = sent.clone();
    let started = Instant::now();
    let m = mode.clone();
    let sender = tx
        .spawn("flood", move || {
            let end = Instant::now() + Duration::from_secs(secs);
            let mut n = 0u64;
            match m.as_str() {
                "udp" | "dns" => {
                    let port = if m == "dns" { 53 } else { 9999 };
                    let s = std::net::UdpSocket::bind("10.9.0.1:0").expect("bind");
                    s.connect(("10.9.0.2", port)).expect("connect");
                    let q = [
                        0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'a', 0, 0, 1, 0, 1,
                    ];
                    while Instant::now() < end {
                        for _ in 0..256 {
                            if s.send(&q).is_ok() {
                                n += 1;
                            }
                        }
                    }
                }
                "bulk" => {
                    use std::io::Write;
                    std::thread::sleep(Duration::from_millis(100));
                    let mut c = std::net::TcpStream::connect("10.9.0.2:5001").expect("connect");
                    let chunk = vec![0u8; 1 << 16];
                    while Instant::now() < end {
                        if c.write_all(&chunk).is_ok() {
                            n += chunk.len() as u64;
                        }
                    }
                }
                _ => {
                    while Instant::now() < end {
                        let _ = std::net::TcpStream::connect_timeout(
                            &"10.9.0.2:81".parse().expect("addr"),
                            Duration::from_millis(200),
                        );
                        n += 1;
                    }
                }
            }
            s2.store(n, Ordering::SeqCst);
            Ok(())
        })
        .expect("sender");
    let _ = sender.join();
    let wall = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    let (stats, cpu, mut rec) = reader.join().expect("reader");
    let sent = sent.load(Ordering::SeqCst);
    println!(
        "mode {mode} ({}): {wall:.1} s; sent {sent} ({:.0}/s); passed by the filter {} ({:.0}/s); dropped by the ring {}; read {} ({:.0}/s); malformed {}; reader CPU {:.2} s ({:.1} % of a core over the traffic)",
        if classic { "classic filter" } else { "eBPF filter" },
        sent as f64 / wall,
        stats.passed,
        stats.passed as f64 / wall,
        stats.dropped,
        stats.read,
        stats.read as f64 / wall,
        stats.malformed,
        cpu.as_secs_f64(),
        cpu.as_secs_f64() / wall * 100.0
    );
    let kept = rec.len();
    let c0 = thread_cpu();
    let (found, cs) = Cycles::new().run(&mut [&mut rec], now_ns(), &NodeContext::default(), true);
    let c = thread_cpu() - c0;
    println!(
        "one analysis cycle: {} packets in the window ({} kept by the recorder's {} MiB cap, {} let go), {:.0} ms CPU ({:.2} µs a packet), {} finding(s)",
        cs.packets,
        kept,
        netsleuth_node::live::flight::CAP_BYTES >> 20,
        rec.evicted_by_cap,
        c.as_secs_f64() * 1e3,
        c.as_secs_f64() * 1e6 / cs.packets.max(1) as f64,
        found.len()
    );
}

/// The eBPF filter's own cost per packet, measured by the kernel on crafted packets.
fn program_cost(millions: u64) {
    use netsleuth_node::live::ebpf::{IdleFilter, IDLE_GAP, IDLE_MAP_ENTRIES};
    let filter = IdleFilter::new(IDLE_MAP_ENTRIES, IDLE_GAP).expect("the eBPF map (needs root)");
    let prog = filter.program(0).expect("the eBPF program");
    let eth = |proto: u16, net: &[u8]| {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
        f.extend_from_slice(&proto.to_be_bytes());
        f.extend_from_slice(net);
        f
    };
    let v4 = |proto: u8, l4: &[u8]| {
        let mut p = vec![
            0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        p.extend_from_slice(l4);
        p
    };
    let tcp = |flags: u8| {
        let mut t = vec![
            0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0,
        ];
        t.extend_from_slice(&[0u8; 64]);
        t
    };
    let udp = |dport: u16| {
        let mut u = vec![0x9c, 0x41];
        u.extend_from_slice(&dport.to_be_bytes());
        u.extend_from_slice(&[0, 40, 0, 0]);
        u.extend_from_slice(&[0u8; 32]);
        u
    };
    let mut v6 = vec![0x60, 0, 0, 0, 0, 84, 6, 64];
    v6.extend_from_slice(&[0xfd; 32]);
    v6.extend_from_slice(&tcp(0x18));
    let cases = [
        (
            "TCP data of a busy flow (IPv4: map lookup, no pass)",
            eth(0x0800, &v4(6, &tcp(0x18))),
        ),
        ("TCP data of a busy flow (IPv6)", eth(0x86dd, &v6)),
        ("TCP SYN (passed, no map)", eth(0x0800, &v4(6, &tcp(0x02)))),
        ("UDP to port 53 (passed)", eth(0x0800, &v4(17, &udp(53)))),
        (
            "UDP to another port (dropped)",
            eth(0x0800, &v4(17, &udp(9999))),
        ),
    ];
    let repeat = u32::try_from(millions.max(1) * 1_000_000).unwrap_or(u32::MAX);
    for (what, frame) in &cases {
        let (ret, ns) = prog
            .test_run_repeated(frame, repeat)
            .expect("BPF_PROG_TEST_RUN");
        println!("{what}: returns {ret}, {ns} ns a run (kernel's mean over {repeat})");
    }
}

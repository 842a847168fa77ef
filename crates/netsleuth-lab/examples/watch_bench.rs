//! Benchmark of `netsleuth watch` following conntrack events (BENCHMARKS.md "Watch").
//!
//! ```sh
//! cargo build --release -p netsleuth -p netsleuth-lab --example watch_bench
//! sudo target/release/examples/watch_bench target/release/netsleuth 10000 10 [--no-drop-reasons] [--no-tap]
//! ```
//!
//! Makes a lab namespace whose conntrack tracks (an nf_tables `ct state` rule), starts
//! `netsleuth watch --netns NAME --format json --for …` on it as a child process, and opens TCP
//! connections to a closed port on the namespace's loopback at `EVENTS_PER_S / 2` per second for
//! `SECONDS`: each attempt is one NEW and one DESTROY event (the RST ends the entry at once). Prints
//! the events generated and received, the losses (ENOBUFS) watch reported, and its CPU time (user +
//! system, from wait4) per second of wall time. The namespace is removed on exit.
//!
//! `--ctnetlink` generates the events without TCP: each generator thread asks the namespace's
//! conntrack over ctnetlink to create a UDP entry and delete it again (IPCTNL_MSG_CT_NEW then
//! _DELETE, 64 pairs per `send`), which makes the same NEW and DESTROY events at a rate `connect()`
//! cannot reach here (one thread's `connect()` tops out near 20 k attempts/s). Only entries of the lab
//! namespace are made, and at most 64 per thread exist at a time.

use netsleuth_lab::netns::Netns;
use netsleuth_node::parse::netlink::{put_attr, Request, Subsystem};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

// The child is reaped by wait4 (not Child::wait), which also gives its own CPU time.
#[allow(clippy::zombie_processes)]
fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: watch_bench NETSLEUTH_BINARY EVENTS_PER_S SECONDS");
        std::process::exit(2);
    }
    let bin = &args[1];
    let rate: u64 = args[2].parse().expect("EVENTS_PER_S");
    let secs: u64 = args[3].parse().expect("SECONDS");
    let no_drops = args.iter().any(|a| a == "--no-drop-reasons");
    let by_ctnetlink = args.iter().any(|a| a == "--ctnetlink");
    let threads: u64 = args
        .iter()
        .position(|a| a == "--threads")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(1);
    netsleuth_lab::registry::install_signal_cleanup();
    let ns = Netns::create("bench").expect("a namespace (needs root)");
    ns.exec_stdin(
        "nft",
        &["-f", "-"],
        "table ip bench {\n chain out {\n  type filter hook output priority 0;\n  ct state new accept\n }\n}\n",
    )
    .expect("nft rule");
    let mut cmd = std::process::Command::new(bin);
    cmd.args(["watch", "--netns", ns.name(), "--format", "json"]);
    if no_drops {
        cmd.arg("--no-drop-reasons");
    }
    // The packet tap is on by default: each attempt is also a SYN and a RST it passes (twice each:
    // loopback shows a packet leaving and arriving).
    if args.iter().any(|a| a == "--no-tap") {
        cmd.arg("--no-tap");
    }
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("starting netsleuth watch");
    // Its sources are open once it has said what it watches.
    std::thread::sleep(Duration::from_millis(1500));
    // `threads` generators, each pacing its share: one thread's connect() tops out near 20 k/s here.
    let connects_per_s = (rate / 2 / threads).max(1);
    let started = Instant::now();
    let ns = &ns;
    let attempts: u64 = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                sc.spawn(move || {
                    if by_ctnetlink {
                        return ns
                            .run(|| Ok(ctnetlink_pairs(t as u16, connects_per_s, secs)))
                            .expect("generating");
                    }
                    ns.run(|| {
                        let start = Instant::now();
                        let mut n: u64 = 0;
                        let total = connects_per_s * secs;
                        while n < total {
                            // Paced: only the attempts due by now.
                            let due =
                                (start.elapsed().as_secs_f64() * connects_per_s as f64) as u64;
                            if n >= due {
                                std::thread::sleep(Duration::from_micros(200));
                                continue;
                            }
                            let _ = std::net::TcpStream::connect(("127.0.0.1", 9));
                            n += 1;
                        }
                        Ok(n)
                    })
                    .expect("generating")
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("generator")).sum()
    });
    let took = started.elapsed();
    // Let the last events arrive, then stop watch as an operator would (SIGINT to our own child).
    std::thread::sleep(Duration::from_secs(1));
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("piped")
        .read_to_string(&mut out)
        .expect("reading watch's output");
    let mut status = 0;
    // SAFETY: waiting for our own child, by its pid, with a zeroed rusage to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let summary: serde_json::Value = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["type"] == "summary")
        .expect("watch's summary line");
    let st = &summary["stats"];
    let cpu = usage.ru_utime.tv_sec as f64
        + usage.ru_utime.tv_usec as f64 / 1e6
        + usage.ru_stime.tv_sec as f64
        + usage.ru_stime.tv_usec as f64 / 1e6;
    let wall = st["seconds"].as_f64().unwrap_or(0.0);
    println!(
        "target {rate} events/s: generated {} events in {:.2} s ({:.0}/s); watch received {} conntrack events, {} loss(es), {} resync(s); CPU {:.2} s over {:.1} s wall = {:.1} % of a core; max RSS {} MiB",
        attempts * 2,
        took.as_secs_f64(),
        attempts as f64 * 2.0 / took.as_secs_f64(),
        st["conntrack_events"],
        st["losses"],
        st["resyncs"],
        cpu,
        wall,
        100.0 * cpu / wall.max(0.001),
        usage.ru_maxrss / 1024
    );
}

/// Pairs per `send` in `--ctnetlink` mode.
const PAIRS_PER_SEND: u64 = 64;

/// Creates and deletes `per_s` UDP conntrack entries a second for `secs` seconds through ctnetlink,
/// in the calling thread's namespace; returns the pairs the kernel accepted (a NEW and a DESTROY each).
fn ctnetlink_pairs(thread: u16, per_s: u64, secs: u64) -> u64 {
    const IPCTNL_MSG_CT_NEW: u16 = 0;
    const IPCTNL_MSG_CT_DELETE: u16 = 2;
    const NLM_F_CREATE: u16 = 0x400;
    const NESTED: u16 = 0x8000;
    let sock = netsleuth_node::live::sock::open(libc::NETLINK_NETFILTER, 0, Some(4 << 20))
        .expect("a ctnetlink socket");
    let tuple = |src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16| {
        let mut ip = Vec::new();
        put_attr(&mut ip, 1, &src); // CTA_IP_V4_SRC
        put_attr(&mut ip, 2, &dst); // CTA_IP_V4_DST
        let mut proto = Vec::new();
        put_attr(&mut proto, 1, &[libc::IPPROTO_UDP as u8]); // CTA_PROTO_NUM
        put_attr(&mut proto, 2, &sport.to_be_bytes()); // CTA_PROTO_SRC_PORT
        put_attr(&mut proto, 3, &dport.to_be_bytes()); // CTA_PROTO_DST_PORT
        let mut t = Vec::new();
        put_attr(&mut t, 1 | NESTED, &ip); // CTA_TUPLE_IP
        put_attr(&mut t, 2 | NESTED, &proto); // CTA_TUPLE_PROTO
        t
    };
    let (client, server) = ([10, 1, (thread >> 8) as u8, thread as u8], [10, 2, 0, 1]);
    let total = per_s * secs;
    let start = Instant::now();
    let mut n: u64 = 0;
    let mut seq = 0u32;
    let mut errors = 0u64;
    let mut replies = vec![0u8; 64 << 10];
    while n < total {
        let due = (start.elapsed().as_secs_f64() * per_s as f64) as u64;
        if n + PAIRS_PER_SEND > due.max(PAIRS_PER_SEND) {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        let mut batch = Vec::with_capacity(PAIRS_PER_SEND as usize * 2 * 96);
        for i in 0..PAIRS_PER_SEND {
            let sport = 1024 + ((n + i) % 60_000) as u16;
            let orig = tuple(client, sport, server, 53);
            let reply = tuple(server, 53, client, sport);
            seq += 1;
            batch.extend(
                Request::new(
                    Subsystem::Ctnetlink,
                    IPCTNL_MSG_CT_NEW,
                    NLM_F_CREATE,
                    seq,
                    libc::AF_INET as u8,
                )
                .attr(1 | NESTED, &orig) // CTA_TUPLE_ORIG
                .attr(2 | NESTED, &reply) // CTA_TUPLE_REPLY
                .attr(7, &30u32.to_be_bytes()) // CTA_TIMEOUT
                .finish(),
            );
        }
        for i in 0..PAIRS_PER_SEND {
            let sport = 1024 + ((n + i) % 60_000) as u16;
            seq += 1;
            batch.extend(
                Request::new(
                    Subsystem::Ctnetlink,
                    IPCTNL_MSG_CT_DELETE,
                    0,
                    seq,
                    libc::AF_INET as u8,
                )
                .attr(1 | NESTED, &tuple(client, sport, server, 53))
                .finish(),
            );
        }
        netsleuth_node::live::sock::send(&sock, &batch).expect("sending a batch");
        n += PAIRS_PER_SEND;
        // Errors come back as NLMSG_ERROR messages (no acks are asked for): count them.
        while let Ok(netsleuth_node::live::sock::Recv::Data(len)) =
            netsleuth_node::live::sock::recv(sock.as_raw_fd(), &mut replies)
        {
            if len == 0 {
                break;
            }
            errors += netsleuth_node::parse::netlink::messages(&replies[..len])
                .filter(|m| m.errno().is_some_and(|e| e != 0))
                .count() as u64;
        }
    }
    if errors > 0 {
        eprintln!("ctnetlink generator {thread}: {errors} request(s) refused: the figures of this run are not valid");
    }
    n
}

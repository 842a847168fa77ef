//! Memory of `netsleuth watch` over a long run on a busy namespace (BENCHMARKS.md "Watch").
//!
//! ```sh
//! cargo build --release -p netsleuth -p netsleuth-lab --bin netsleuth --example watch_soak
//! sudo target/release/examples/watch_soak target/release/netsleuth 3600 2000 rss.tsv [--metrics ADDR]
//! ```
//!
//! Makes a lab namespace with conntrack, a DNAT rule (`10.96.0.10:80` → `10.0.0.2:8080`, both on its
//! loopback) and a server on the backend, starts `netsleuth watch --netns NAME --format json` on it,
//! and for SECONDS keeps it busy at EVENTS_PER_S conntrack events: three attempts in four open a
//! connection to a closed port (a NEW and a DESTROY: table churn), one in four a DNATed connection
//! that sends a request and closes (NEW, UPDATEs, and a DESTROY 120 s later when its TIME_WAIT entry
//! expires: NATed entries the correlator tracks). Every minute it writes watch's resident set
//! (`VmRSS` of `/proc/PID/status`) to RSS_FILE as `seconds<TAB>kib`. The namespace is removed on exit.

use netsleuth_lab::netns::Netns;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

// The child is reaped by wait4 (not Child::wait), which also gives its own CPU time.
#[allow(clippy::zombie_processes)]
fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!(
            "usage: watch_soak NETSLEUTH_BINARY SECONDS EVENTS_PER_S RSS_FILE [--metrics ADDR]"
        );
        std::process::exit(2);
    }
    let bin = &args[1];
    let secs: u64 = args[2].parse().expect("SECONDS");
    let rate: u64 = args[3].parse().expect("EVENTS_PER_S");
    let rss_path = &args[4];
    let metrics = args
        .iter()
        .position(|a| a == "--metrics")
        .and_then(|i| args.get(i + 1));
    netsleuth_lab::registry::install_signal_cleanup();
    let ns = Netns::create("soak").expect("a namespace (needs root)");
    for a in ["10.96.0.10/32", "10.0.0.2/32"] {
        ns.ip(&["addr", "add", a, "dev", "lo"]).expect("address");
    }
    ns.exec_stdin(
        "nft",
        &["-f", "-"],
        "table ip soak {\n chain out {\n  type nat hook output priority -100;\n  ip daddr 10.96.0.10 tcp dport 80 dnat to 10.0.0.2:8080\n }\n}\n",
    )
    .expect("nft rule");
    let listener = ns
        .run(|| Ok(std::net::TcpListener::bind("10.0.0.2:8080")))
        .expect("entering the namespace")
        .expect("backend listener");
    let done = AtomicBool::new(false);
    let mut cmd = std::process::Command::new(bin);
    cmd.args(["watch", "--netns", ns.name(), "--format", "json"]);
    if let Some(m) = metrics {
        cmd.args(["--metrics", m]);
    }
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("starting netsleuth watch");
    let pid = child.id();
    let mut stdout = child.stdout.take().expect("piped");
    // Drain watch's output as it comes (a full pipe would stall it).
    let out_thread = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    std::thread::sleep(Duration::from_millis(1500));
    let mut rss = std::fs::File::create(rss_path).expect("RSS file");
    let _ = writeln!(rss, "seconds\trss_kib");
    let started = Instant::now();
    let attempts = AtomicU64::new(0);
    std::thread::scope(|sc| {
        sc.spawn(|| {
            listener.set_nonblocking(true).expect("non-blocking");
            while !done.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut c, _)) => {
                        let _ = c.set_nonblocking(false);
                        let _ = c.set_read_timeout(Some(Duration::from_millis(200)));
                        let mut b = [0u8; 64];
                        let _ = c.read(&mut b);
                        let _ = c.write_all(b"ok\n");
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        });
        sc.spawn(|| {
            ns.run(|| {
                let per_s = (rate / 2).max(1);
                let start = Instant::now();
                let total = per_s * secs;
                let mut n: u64 = 0;
                while n < total && !done.load(Ordering::Relaxed) {
                    let due = (start.elapsed().as_secs_f64() * per_s as f64) as u64;
                    if n >= due {
                        std::thread::sleep(Duration::from_micros(500));
                        continue;
                    }
                    if n % 4 == 3 {
                        if let Ok(mut c) = std::net::TcpStream::connect(("10.96.0.10", 80)) {
                            let _ = c.write_all(b"GET\n");
                            let _ = c.set_read_timeout(Some(Duration::from_millis(200)));
                            let mut b = [0u8; 8];
                            let _ = c.read(&mut b);
                        }
                    } else {
                        let _ = std::net::TcpStream::connect(("127.0.0.1", 9));
                    }
                    n += 1;
                    attempts.store(n, Ordering::Relaxed);
                }
                Ok(())
            })
            .expect("generating");
            done.store(true, Ordering::Relaxed);
        });
        let mut minute = 0u64;
        while !done.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(500));
            let elapsed = started.elapsed().as_secs();
            if elapsed >= minute * 60 {
                if let Some(k) = rss_kib(pid) {
                    let _ = writeln!(rss, "{elapsed}\t{k}");
                    let _ = rss.flush();
                }
                minute += 1;
            }
        }
    });
    if let Some(k) = rss_kib(pid) {
        let _ = writeln!(rss, "{}\t{k}", started.elapsed().as_secs());
    }
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let out = out_thread.join().unwrap_or_default();
    let mut status = 0;
    // SAFETY: waiting for our own child, by its pid, with a zeroed rusage to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::wait4(pid as i32, &mut status, 0, &mut usage) };
    let summary = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["type"] == "summary");
    let cpu = usage.ru_utime.tv_sec as f64
        + usage.ru_utime.tv_usec as f64 / 1e6
        + usage.ru_stime.tv_sec as f64
        + usage.ru_stime.tv_usec as f64 / 1e6;
    let took = started.elapsed().as_secs_f64();
    let n = attempts.load(Ordering::Relaxed);
    match summary {
        Some(s) => println!(
            "{n} attempts in {took:.0} s ({:.0} events/s generated); watch received {} conntrack events, {} loss(es), {} resync(s); CPU {cpu:.1} s = {:.1} % of a core; max RSS {} MiB",
            n as f64 * 2.0 / took,
            s["stats"]["conntrack_events"],
            s["stats"]["losses"],
            s["stats"]["resyncs"],
            100.0 * cpu / took,
            usage.ru_maxrss / 1024
        ),
        None => println!("watch gave no summary (status {status}); its output:\n{out}"),
    }
}

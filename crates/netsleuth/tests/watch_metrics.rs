//! `netsleuth watch --metrics` as a Prometheus server scrapes it (root only; prints why and passes
//! otherwise): on an ephemeral port of this test's own loopback, `GET /metrics` answers an exposition
//! that parses (HELP/TYPE lines, `name{labels} value` samples of declared families, `# EOF` last), and
//! conntrack events made in a lab namespace move its counters; other paths get 404; an address that is
//! taken is an error that names it.

use netsleuth_lab::netns::Netns;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> bool {
    if unsafe { libc::geteuid() } != 0 || netsleuth_lab::preflight().is_err() {
        eprintln!("SKIP: needs root and the lab's tools");
        return false;
    }
    true
}

/// Sends `n` TCP segments with SYN and FIN both set (a flag combination conntrack refuses: its
/// `invalid` statistic counts each) from a raw socket to 127.0.0.1 of the calling thread's namespace.
fn send_syn_fin(n: usize) {
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_TCP) };
    assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
    let mut seg = [0u8; 20];
    seg[0..2].copy_from_slice(&4242u16.to_be_bytes());
    seg[2..4].copy_from_slice(&9u16.to_be_bytes());
    seg[4..8].copy_from_slice(&1u32.to_be_bytes());
    seg[12] = 5 << 4; // data offset: 5 words
    seg[13] = 0x03; // FIN | SYN
    seg[14..16].copy_from_slice(&1024u16.to_be_bytes());
    // Checksum over the pseudo-header (127.0.0.1 → 127.0.0.1, TCP, 20 bytes) and the segment.
    // 127.0 and 0.1 of each address, the protocol and the length.
    let mut sum: u32 = 0x7f00 + 0x0001 + 0x7f00 + 0x0001 + 6 + 20;
    for w in seg.chunks(2) {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    seg[16..18].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    let mut to: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    to.sin_family = libc::AF_INET as u16;
    to.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
    for _ in 0..n {
        let r = unsafe {
            libc::sendto(
                fd,
                seg.as_ptr().cast(),
                seg.len(),
                0,
                &to as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            )
        };
        assert_eq!(r, 20, "sendto: {}", std::io::Error::last_os_error());
    }
    unsafe { libc::close(fd) };
}

/// One request; the status line and the body.
fn get(addr: &str, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").expect("a head and a body");
    (head.lines().next().unwrap().to_string(), body.to_string())
}

/// Parses an OpenMetrics text exposition strictly enough to fail on a malformed line: every sample
/// is `name{k="v",…} value` or `name value` of a family declared by a `# TYPE` line before it, every
/// family has a HELP, and `# EOF` ends it. Returns each sample line's series (`name{labels}`) → value.
fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helps: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = BTreeMap::new();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "no # EOF at the end");
    let is_name = |n: &str| {
        !n.is_empty()
            && !n.starts_with(|c: char| c.is_ascii_digit())
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    for line in &lines[..lines.len() - 1] {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut p = rest.splitn(3, ' ');
            let (kind, name, arg) = (p.next().unwrap(), p.next().unwrap_or(""), p.next());
            assert!(is_name(name), "bad family name in {line:?}");
            match kind {
                "TYPE" => {
                    let t = arg.unwrap_or("");
                    assert!(
                        [
                            "counter",
                            "gauge",
                            "info",
                            "histogram",
                            "summary",
                            "unknown"
                        ]
                        .contains(&t),
                        "bad type in {line:?}"
                    );
                    types.insert(name.to_string(), t.to_string());
                }
                "HELP" => {
                    helps.insert(name.to_string(), arg.unwrap_or("").to_string());
                }
                "UNIT" => {}
                _ => panic!("unknown descriptor {line:?}"),
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line:?}"));
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line:?}"));
        let name = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("{line:?}"));
                // k="v" pairs; values may hold escaped quotes, commas and braces.
                let mut rest = labels;
                while !rest.is_empty() {
                    let (k, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("{line:?}"));
                    assert!(is_name(k), "bad label name in {line:?}");
                    let mut end = None;
                    let mut escaped = false;
                    for (i, c) in after.char_indices() {
                        match (escaped, c) {
                            (false, '\\') => escaped = true,
                            (false, '"') => {
                                end = Some(i);
                                break;
                            }
                            _ => escaped = false,
                        }
                    }
                    let end = end.unwrap_or_else(|| panic!("unterminated label in {line:?}"));
                    rest = after[end + 1..]
                        .strip_prefix(',')
                        .unwrap_or(&after[end + 1..]);
                }
                name
            }
            None => series,
        };
        assert!(is_name(name), "bad sample name in {line:?}");
        let family = types
            .keys()
            .find(|f| {
                name == f.as_str() || name.strip_prefix(f.as_str()).is_some_and(|s| s == "_total")
            })
            .unwrap_or_else(|| panic!("sample of an undeclared family: {line:?}"));
        assert!(helps.contains_key(family), "no HELP for {family}");
        if types[family] == "counter" {
            assert!(
                name.ends_with("_total"),
                "counter sample without _total: {line:?}"
            );
            assert!(v >= 0.0, "negative counter: {line:?}");
        }
        samples.insert(series.to_string(), v);
    }
    assert!(!types.is_empty(), "no metric family");
    samples
}

struct Watch(Child);
impl Drop for Watch {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        let _ = self.0.wait();
    }
}

/// Starts watch on `ns` with metrics on an ephemeral port; returns it and the address it says.
fn start(ns: &Netns) -> (Watch, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_netsleuth"))
        .args([
            "watch",
            "--netns",
            ns.name(),
            "--format",
            "json",
            "--no-drop-reasons",
        ])
        .args(["--metrics", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("netsleuth watch: metrics on http://")
        .and_then(|s| s.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("watch did not say where its metrics are: {line:?}"))
        .to_string();
    (Watch(child), addr)
}

/// Scrapes until `ok` holds of the samples (or 10 s pass); returns the last samples.
fn scrape_until(addr: &str, ok: impl Fn(&BTreeMap<String, f64>) -> bool) -> BTreeMap<String, f64> {
    let t = Instant::now();
    loop {
        let (status, body) = get(addr, "/metrics");
        assert_eq!(status, "HTTP/1.1 200 OK");
        let s = parse(&body);
        if ok(&s) || t.elapsed() > Duration::from_secs(10) {
            return s;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn metrics_parse_and_conntrack_events_in_a_lab_namespace_move_the_counters() {
    if !root() {
        return;
    }
    netsleuth_lab::registry::install_signal_cleanup();
    let ns = Netns::create("metrics").unwrap();
    // Conntrack tracks only where a rule uses it.
    ns.exec_stdin(
        "nft",
        &["-f", "-"],
        "table ip m {\n chain out {\n  type filter hook output priority 0;\n  ct state new accept\n }\n}\n",
    )
    .unwrap();
    let (_watch, addr) = start(&ns);
    let n = ns.name();
    let up = format!(r#"netsleuth_watch_source_up{{namespace="{n}",source="conntrack events"}}"#);
    let events =
        format!(r#"netsleuth_watch_events_total{{namespace="{n}",source="conntrack events"}}"#);
    let invalid = format!(r#"netsleuth_conntrack_invalid_total{{namespace="{n}"}}"#);
    let tap_up = format!(r#"netsleuth_watch_source_up{{namespace="{n}",source="packet tap"}}"#);
    let tapped = format!(r#"netsleuth_watch_tap_packets_total{{namespace="{n}"}}"#);
    let before = scrape_until(&addr, |s| {
        s.get(&up) == Some(&1.0) && s.contains_key(&invalid) && s.contains_key(&tapped)
    });
    assert_eq!(
        before.get(&tap_up),
        Some(&1.0),
        "packet tap not up: {before:#?}"
    );
    let tapped_before = before[&tapped];
    assert_eq!(
        before.get(&up),
        Some(&1.0),
        "conntrack events never up: {before:#?}"
    );
    assert_eq!(before.get("netsleuth_watch_namespaces"), Some(&1.0));
    let events_before = before.get(&events).copied().unwrap_or(0.0);
    let invalid_before = before[&invalid];
    // 20 connections to a closed port (a NEW and a DESTROY event each), and 20 segments conntrack
    // finds invalid, for its per-CPU statistics (connections alone left `insert` and `found` at 0 on
    // kernel 6.18: the kernel no longer counts them on this path).
    ns.run(|| {
        for _ in 0..20 {
            let _ = TcpStream::connect(("127.0.0.1", 9));
        }
        send_syn_fin(20);
        Ok(())
    })
    .unwrap();
    // Each connect is a SYN and a RST the tap's filter passes (seen twice on loopback).
    let after = scrape_until(&addr, |s| {
        s.get(&events).copied().unwrap_or(0.0) >= events_before + 40.0
            && s.get(&invalid).copied().unwrap_or(0.0) >= invalid_before + 20.0
            && s.get(&tapped).copied().unwrap_or(0.0) >= tapped_before + 40.0
    });
    assert!(
        after.get(&tapped).copied().unwrap_or(0.0) >= tapped_before + 40.0,
        "{tapped}: {tapped_before} → {:?}",
        after.get(&tapped)
    );
    assert_eq!(
        after.get(&format!(
            r#"netsleuth_watch_tap_packets_dropped_total{{namespace="{n}"}}"#
        )),
        Some(&0.0)
    );
    assert!(
        after.get(&events).copied().unwrap_or(0.0) >= events_before + 40.0,
        "conntrack events did not move {events}: {events_before} → {:?}",
        after.get(&events)
    );
    assert!(
        after[&invalid] >= invalid_before + 20.0,
        "{invalid}: {invalid_before} → {}",
        after[&invalid]
    );
    assert_eq!(get(&addr, "/").0, "HTTP/1.1 404 Not Found");

    // The same address again: a clear error naming it, exit 2.
    let out = Command::new(env!("CARGO_BIN_EXE_netsleuth"))
        .args([
            "watch",
            "--netns",
            ns.name(),
            "--for",
            "1s",
            "--metrics",
            &addr,
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("cannot serve metrics on {addr}")) && err.contains("hint"),
        "{err}"
    );
}

//! `netsleuth watch` as a user runs it (root only; prints why and passes otherwise): on a namespace
//! whose listener overflows, it prints JSON Lines (notices, the finding in the report's finding shape),
//! ends on SIGINT or SIGTERM with a summary line, exits 1 (an incident was named) or 0 (none), and
//! leaves no tracefs instance or private mount point behind.

use netsleuth_lab::netns::Netns;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::Duration;

fn root() -> bool {
    if unsafe { libc::geteuid() } != 0 || netsleuth_lab::preflight().is_err() {
        eprintln!("SKIP: needs root and the lab's tools");
        return false;
    }
    true
}

/// A listener with backlog 0 that never accepts, and `n` connects to it: ListenOverflows rises.
fn overflow(ns: &Netns, n: usize) -> std::net::TcpListener {
    ns.run(|| {
        let l = std::net::TcpListener::bind("127.0.0.1:8088").unwrap();
        unsafe { libc::listen(l.as_raw_fd(), 0) };
        let mut held = Vec::new();
        for _ in 0..n {
            if let Ok(s) = std::net::TcpStream::connect_timeout(
                &"127.0.0.1:8088".parse().unwrap(),
                Duration::from_millis(200),
            ) {
                held.push(s);
            }
        }
        std::mem::forget(held);
        Ok(l)
    })
    .unwrap()
}

fn left_behind(pid: u32) -> Vec<String> {
    let prefix = format!("{}{pid}", netsleuth_node::live::dropmon::MOUNT_DIR_PREFIX);
    let mut v: Vec<String> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    for root in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        let i = std::path::Path::new(root).join(format!("instances/netsleuth-watch-{pid}"));
        if i.exists() {
            v.push(i.display().to_string());
        }
    }
    v
}

fn watch_until(
    ns: &Netns,
    signal: i32,
    traffic: impl FnOnce(),
) -> (i32, Vec<serde_json::Value>, u32) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_netsleuth"))
        .args(["watch", "--netns", ns.name(), "--format", "json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    std::thread::sleep(Duration::from_millis(1500));
    traffic();
    std::thread::sleep(Duration::from_millis(2500));
    unsafe { libc::kill(pid as i32, signal) };
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let status = child.wait().unwrap();
    let lines = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    (status.code().expect("exits, not killed"), lines, pid)
}

#[test]
fn watch_names_a_listen_overflow_as_it_happens_and_ends_with_a_summary_on_sigint_or_sigterm() {
    if !root() {
        return;
    }
    netsleuth_lab::registry::install_signal_cleanup();
    let ns = Netns::create("watchcli").unwrap();
    let mut listener = None;
    let (code, lines, pid) = watch_until(&ns, libc::SIGINT, || listener = Some(overflow(&ns, 8)));
    assert!(left_behind(pid).is_empty(), "{:?}", left_behind(pid));
    let last = lines.last().expect("output");
    assert_eq!(last["type"], "summary", "{last}");
    assert_eq!(last["command"], "watch");
    assert_eq!(last["summary"]["exit_code"], code);
    let finding = lines
        .iter()
        .find(|l| l["type"] == "finding")
        .unwrap_or_else(|| panic!("no finding: {lines:#?}"));
    assert_eq!(finding["schema"], "netsleuth.report");
    assert_eq!(finding["finding"]["id"], "listen-queue-overflow");
    // The same finding shape as `analyze`'s document: every finding line and the summary's findings
    // validate against the schema's Finding.
    let schema: serde_json::Value = serde_json::from_slice(
        &std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/netsleuth.schema.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let finding_schema = serde_json::json!({"$defs": schema["$defs"], "$ref": "#/$defs/Finding"});
    let v = jsonschema::validator_for(&finding_schema).unwrap();
    let mut all: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["type"] == "finding")
        .map(|l| &l["finding"])
        .collect();
    all.extend(last["findings"].as_array().unwrap());
    for f in all {
        let errors: Vec<String> = v.iter_errors(f).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:#?} in {f}");
    }
    assert_eq!(finding["finding"]["confidence"], "confirmed");
    assert!(finding["finding"]["summary"]
        .as_str()
        .unwrap()
        .contains("127.0.0.1:8088"));
    assert!(lines
        .iter()
        .any(|l| l["type"] == "notice" && l["text"].as_str().unwrap().contains("watching")));
    assert_eq!(code, 1, "an incident was named");
    drop(listener);

    // Nothing happens: SIGTERM ends it the same way, exit 0.
    let quiet = Netns::create("watchcli-quiet").unwrap();
    let (code, lines, pid) = watch_until(&quiet, libc::SIGTERM, || {});
    assert!(left_behind(pid).is_empty());
    assert_eq!(lines.last().unwrap()["type"], "summary");
    assert!(lines.iter().all(|l| l["type"] != "finding"), "{lines:#?}");
    assert_eq!(code, 0);
}

/// `netsleuth watch | head -1`: once its reader is gone, watch stops (its first line, the "watching"
/// notice, meets the closed pipe) instead of running on for nobody, and cleans up as on a signal.
#[test]
fn watch_stops_when_its_reader_closes_the_pipe() {
    if !root() {
        return;
    }
    netsleuth_lab::registry::install_signal_cleanup();
    let ns = Netns::create("watchpipe").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_netsleuth"))
        .args([
            "watch",
            "--netns",
            ns.name(),
            "--no-drop-reasons",
            "--for",
            "120s",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    drop(child.stdout.take());
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("watch still runs 20 s after its reader closed the pipe");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(0), "nothing was named: exit 0");
    assert!(left_behind(pid).is_empty(), "{:?}", left_behind(pid));
}

//! `lab run --watch`: `netsleuth watch` runs on the lab's namespaces while each scenario happens.
//! For every scenario whose evidence is live-visible (kernel events and counters, and the packet tap's
//! filtered packets analysed by the core), watch names the expected id with the expected confidence *during* the run (the
//! finding's time lies between the watcher being ready and being stopped, before the namespaces go);
//! no run makes watch name an incident other than its own; the healthy run and every mitigated run
//! give no incident finding.
//!
//! Needs root and the lab's tools (prints why and passes otherwise). Kernel-wide sources (drop
//! reasons, rt_cache's martian counter) see the whole machine: another lab running local-source-drop
//! on the same kernel at the same moment would show here too.

use netsleuth_core::report::json::{Confidence, FindingKind};
use netsleuth_lab::watch::WatchRecord;
use netsleuth_lab::{run, LabError, RunOptions};
use std::sync::Mutex;

static SERIAL: Mutex<()> = Mutex::new(());

/// What watch names live, per scenario: (scenario, id, confidence), exactly.
const LIVE: &[(&str, &str, Confidence)] = &[
    (
        "conntrack-snat-remap",
        "conntrack-snat-remap",
        Confidence::Confirmed,
    ),
    (
        "conntrack-dnat-rebalance",
        "conntrack-dnat-rebalance",
        Confidence::Confirmed,
    ),
    ("snat-port-clash", "snat-port-clash", Confidence::Likely),
    (
        "listen-queue-overflow",
        "listen-queue-overflow",
        Confidence::Confirmed,
    ),
    ("local-source-drop", "local-source-drop", Confidence::Likely),
    // Named by the packet tap (the core on the namespaces' last seconds of filtered packets).
    (
        "bridge-nf-bypass",
        "bridge-nf-bypass",
        Confidence::Confirmed,
    ),
    (
        "dns-conntrack-race",
        "dns-conntrack-race",
        Confidence::Confirmed,
    ),
    (
        "go-resolver-dns-first",
        "go-resolver-dns-first",
        Confidence::Possible,
    ),
    (
        "dns-upstream-unreachable",
        "dns-upstream-unreachable",
        Confidence::Likely,
    ),
    ("dns-id-collision", "dns-id-collision", Confidence::Likely),
    (
        "stale-udp-conntrack",
        "stale-udp-conntrack",
        Confidence::Likely,
    ),
    (
        "dns-ndots-amplification",
        "dns-ndots-amplification",
        Confidence::Likely,
    ),
    ("hairpin-off", "hairpin-off", Confidence::Likely),
    ("rp-filter-drop", "rp-filter-drop", Confidence::Confirmed),
    (
        "dns-truncation-fallback",
        "dns-truncation-fallback",
        Confidence::Confirmed,
    ),
    ("ipvs-conn-reuse", "ipvs-conn-reuse", Confidence::Likely),
    // Named by the tap through its eBPF filter's first segment after idle or under a new tuple (the
    // classic filter hid them).
    (
        "conntrack-invalid-reset",
        "conntrack-invalid-reset",
        Confidence::Confirmed,
    ),
    (
        "idle-timeout-reset",
        "idle-timeout-reset",
        Confidence::Likely,
    ),
    (
        "timewait-paws-reject",
        "timewait-paws-reject",
        Confidence::Confirmed,
    ),
    (
        "conntrack-table-full",
        "conntrack-table-full",
        Confidence::Possible,
    ),
    // The ARP storm passes the filter; the tap's context is the node's facts from watch's start, before
    // the table filled, so the capture's own grade.
    (
        "neighbour-table-overflow",
        "neighbour-table-overflow",
        Confidence::Possible,
    ),
];

fn is_root() -> bool {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP: the lab needs root");
        return false;
    }
    if let Err(e) = netsleuth_lab::preflight() {
        eprintln!("SKIP: {e}");
        return false;
    }
    true
}

fn watched(name: &str, mitigated: bool) -> Option<WatchRecord> {
    let dir = std::env::temp_dir().join(format!(
        "netsleuth-lab-watch-test-{name}{}-{}",
        if mitigated { "-mitigated" } else { "" },
        std::process::id()
    ));
    let opts = RunOptions {
        mitigated,
        out_dir: Some(dir.clone()),
        skip_analysis: true,
        watch: true,
        ..Default::default()
    };
    let r = run(name, &opts);
    let _ = std::fs::remove_dir_all(&dir);
    match r {
        Ok(r) => Some(r.watch.expect("--watch keeps the watcher's record")),
        Err(e @ LabError::MissingKernelFeature { .. }) => {
            eprintln!("SKIP: {name}: {e}");
            None
        }
        Err(e) => panic!("{name}: {e}"),
    }
}

fn incidents(w: &WatchRecord) -> Vec<(String, Confidence, i64)> {
    w.findings
        .iter()
        .filter(|f| f.finding.kind == FindingKind::Incident)
        .map(|f| (f.finding.id.clone(), f.finding.confidence, f.ts_ns))
        .collect()
}

#[test]
fn watch_names_each_live_visible_incident_while_it_happens_and_nothing_else() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !is_root() {
        return;
    }
    let mut failures = Vec::new();
    for s in netsleuth_lab::scenarios() {
        let Some(w) = watched(s.name, false) else {
            continue;
        };
        let named = incidents(&w);
        eprintln!(
            "{}: watch named {:?} ({} events, {} losses)",
            s.name, named, w.events, w.losses
        );
        let own = s.incident.map(|i| i.id);
        if let Some(other) = named.iter().find(|(id, _, _)| Some(id.as_str()) != own) {
            failures.push(format!(
                "{}: watch named {} ({:?}), not the run's incident",
                s.name, other.0, other.1
            ));
        }
        // The rebalance scenario's idle connections are named at risk before their entries expire.
        if s.name == "conntrack-dnat-rebalance" {
            let first_break = named.iter().map(|(_, _, ts)| *ts).min().unwrap_or(i64::MAX);
            let at_risk = w.findings.iter().find(|f| {
                f.finding.kind == FindingKind::LatentRisk
                    && f.finding.summary.contains("will be reset if idle another")
            });
            match at_risk {
                Some(f) if f.ts_ns < first_break => {}
                Some(f) => failures.push(format!(
                    "{}: at-risk list at {} is not before the first break at {first_break}",
                    s.name, f.ts_ns
                )),
                None => failures.push(format!("{}: no connection named at risk", s.name)),
            }
        }
        if let Some((_, id, conf)) = LIVE.iter().find(|(n, _, _)| *n == s.name) {
            match named.iter().find(|(i, c, _)| i == id && c == conf) {
                Some((_, _, ts)) => {
                    if !(w.ready_ns <= *ts && *ts <= w.stopped_ns) {
                        failures.push(format!("{}: {id} named at {ts}, outside the run ({}..{})", s.name, w.ready_ns, w.stopped_ns));
                    }
                }
                None => failures.push(format!("{}: watch did not name {id} at {conf:?} during the run (named {named:?}; notices {:?})", s.name, w.notices)),
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn healthy_and_mitigated_runs_give_watch_no_incident() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !is_root() {
        return;
    }
    let mut failures = Vec::new();
    for s in netsleuth_lab::scenarios() {
        // The healthy scenario has no fix to apply: it runs once, as it is.
        let mitigated = s.incident.is_some();
        let Some(w) = watched(s.name, mitigated) else {
            continue;
        };
        let named = incidents(&w);
        eprintln!("{} (mitigated: {mitigated}): watch named {named:?}", s.name);
        // With keepalive shorter than the timeout, no connection is at risk.
        if s.name == "conntrack-dnat-rebalance" {
            if let Some(f) = w
                .findings
                .iter()
                .find(|f| f.finding.summary.contains("will be reset if idle another"))
            {
                failures.push(format!(
                    "{} mitigated: at risk despite keepalive: {}",
                    s.name, f.finding.summary
                ));
            }
        }
        if !named.is_empty() {
            failures.push(format!("{} (mitigated: {mitigated}): {named:?}", s.name));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// A namespace whose conntrack tracks (an nf_tables rule uses it), removed on drop.
fn tracked_namespace(role: &str) -> netsleuth_lab::netns::Netns {
    netsleuth_lab::registry::install_signal_cleanup();
    let ns = netsleuth_lab::netns::Netns::create(role).expect("creating a namespace");
    ns.exec_stdin(
        "nft",
        &["-f", "-"],
        "table ip watchtest {\n chain out {\n  type filter hook output priority 0;\n  ct state new accept\n }\n}\n",
    )
    .expect("loading a conntrack-using rule");
    ns
}

/// `n` UDP datagrams to distinct ports on the namespace's loopback: `n` conntrack entries (NEW events).
fn udp_burst(ns: &netsleuth_lab::netns::Netns, n: u16) {
    ns.run(|| {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for p in 0..n {
            let _ = s.send_to(b"x", ("127.0.0.1", 20000 + p));
        }
        Ok(())
    })
    .unwrap();
}

/// A netlink event socket with a tiny receive buffer overruns under a burst: the loss is counted and
/// reported, and the conntrack table is dumped again so the watcher's state is whole.
#[test]
fn a_netlink_overrun_is_reported_and_followed_by_a_resync() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !is_root() {
        return;
    }
    let ns = tracked_namespace("overrun");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let opts = netsleuth_node::live::WatchOptions {
        targets: vec![netsleuth_node::live::NsTarget {
            label: "overrun".into(),
            path: Some(ns.path()),
        }],
        processes: false,
        drop_reasons: false,
        // The kernel's minimum: a couple of events fill it.
        rcvbuf: 1,
        ready: Some(ready_tx),
        ..Default::default()
    };
    let summary = std::thread::scope(|sc| {
        let watcher = sc.spawn(|| netsleuth_node::live::watch(&opts, &stop, |_| {}));
        ready_rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("watch ready");
        udp_burst(&ns, 3000);
        std::thread::sleep(std::time::Duration::from_millis(1500));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        watcher.join().unwrap()
    });
    eprintln!(
        "overrun: {} losses, {} resyncs, {} conntrack events; notices {:#?}",
        summary.losses, summary.resyncs, summary.conntrack_events, summary.notices
    );
    assert!(summary.losses >= 1, "no loss reported");
    assert!(summary.resyncs >= 1, "no resync after the loss");
    assert!(
        summary.conntrack_events < 3000,
        "every event arrived: the buffer was not tiny"
    );
    assert!(summary.notices.iter().any(|n| n.contains("ENOBUFS")));
    // The resync read the table: the entries the lost events announced are in it.
    let dumped: Vec<u64> = summary
        .notices
        .iter()
        .filter_map(|n| n.split("conntrack table dumped: ").nth(1))
        .filter_map(|r| r.split(' ').next()?.parse().ok())
        .collect();
    assert!(dumped.iter().any(|n| *n > 0), "resync dumps: {dumped:?}");
    // What the events lost, the last dump holds: more entries than events arrived.
    assert!(
        dumped.last().is_some_and(|n| *n > summary.conntrack_events),
        "resync dumps {dumped:?} vs {} events received",
        summary.conntrack_events
    );
}

/// Everything `watch` could change, as text: rules, sysctls, addresses, routes, conntrack entries
/// (without their countdown), of the namespace `ns` (or the host's).
fn node_state(ns: Option<&netsleuth_lab::netns::Netns>) -> Vec<(String, String)> {
    let run = |argv: &[&str]| -> String {
        let mut cmd = match ns {
            Some(ns) => {
                let mut c = std::process::Command::new("ip");
                c.args(["netns", "exec", ns.name()]).args(argv);
                c
            }
            None => {
                let mut c = std::process::Command::new(argv[0]);
                c.args(&argv[1..]);
                c
            }
        };
        let out = cmd.output().expect(argv[0]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let sysctls = run(&["sysctl", "-a"])
        .lines()
        // Counters and random values that move on their own.
        .filter(|l| {
            !l.contains("random")
                && !l.contains("stat")
                && !l.contains("count")
                && !l.starts_with("fs.")
                && !l.starts_with("kernel.")
                && !l.starts_with("vm.")
        })
        .collect::<Vec<_>>()
        .join("\n");
    let conntrack = {
        let mut v: Vec<String> = run(&["conntrack", "-L"])
            .lines()
            .map(|l| {
                // `udp 17 28 src=…`: drop the seconds left.
                let mut f: Vec<&str> = l.split_whitespace().collect();
                if f.len() > 2 {
                    f.remove(2);
                }
                f.join(" ")
            })
            .collect();
        v.sort();
        v.join("\n")
    };
    vec![
        ("nft".into(), run(&["nft", "list", "ruleset"])),
        (
            "iptables".into(),
            run(&["iptables-save"])
                .lines()
                .filter(|l| !l.starts_with('#'))
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        ("sysctl".into(), sysctls),
        ("addresses".into(), run(&["ip", "-o", "addr"])),
        (
            "routes".into(),
            run(&["ip", "route", "show", "table", "all"]),
        ),
        ("conntrack".into(), conntrack),
    ]
}

fn tracefs_left(pid: u32) -> Vec<String> {
    let mut left: Vec<String> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.starts_with(&format!(
                "{}{pid}",
                netsleuth_node::live::dropmon::MOUNT_DIR_PREFIX
            ))
        })
        .collect();
    for root in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        let i = std::path::Path::new(root).join(format!("instances/netsleuth-watch-{pid}"));
        if i.exists() {
            left.push(i.display().to_string());
        }
    }
    left
}

/// `watch` is read-only: the node's rules, sysctls, addresses, routes and conntrack entries are the
/// same before and after (a lab namespace with state, and the host's own namespace with every process
/// namespace), and its tracefs instance is gone.
#[test]
fn watch_changes_nothing_and_removes_its_tracefs_instance() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !is_root() {
        return;
    }
    let ns = tracked_namespace("readonly");
    ns.ip(&["addr", "add", "10.77.0.1/24", "dev", "lo"])
        .unwrap();
    udp_burst(&ns, 20);
    let before_ns = node_state(Some(&ns));
    let before_host = node_state(None);
    for (targets, processes) in [
        (
            vec![netsleuth_node::live::NsTarget {
                label: "readonly".into(),
                path: Some(ns.path()),
            }],
            false,
        ),
        (netsleuth_node::live::WatchOptions::default().targets, true),
    ] {
        let opts = netsleuth_node::live::WatchOptions {
            targets,
            processes,
            duration: Some(std::time::Duration::from_secs(3)),
            ..Default::default()
        };
        let stop = std::sync::atomic::AtomicBool::new(false);
        let s = netsleuth_node::live::watch(&opts, &stop, |_| {});
        assert!(s.events > 0);
        assert!(
            tracefs_left(std::process::id()).is_empty(),
            "{:?}",
            tracefs_left(std::process::id())
        );
    }
    for ((what, a), (_, b)) in before_ns.iter().zip(node_state(Some(&ns)).iter()) {
        assert_eq!(a, b, "the lab namespace's {what} changed");
    }
    for ((what, a), (_, b)) in before_host.iter().zip(node_state(None).iter()) {
        // The host is shared with other work on this machine: only what watch itself could change
        // is compared (its own conntrack table and addresses move with others' traffic).
        if what == "conntrack" {
            continue;
        }
        assert_eq!(a, b, "the host's {what} changed");
    }
}

/// Like `check`, watch follows the namespaces processes live in: one that appears while it runs is
/// picked up, and once its last process is gone its sources are closed (holding them would keep the
/// namespace alive).
#[test]
fn watch_picks_up_a_process_namespace_that_appears_and_lets_it_go_when_it_is_gone() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !is_root() {
        return;
    }
    let ns = tracked_namespace("appears");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let opts = netsleuth_node::live::WatchOptions {
        drop_reasons: false,
        ready: Some(ready_tx),
        ..Default::default()
    };
    let notices = std::sync::Mutex::new(Vec::<String>::new());
    let summary = std::thread::scope(|sc| {
        let watcher = sc.spawn(|| {
            netsleuth_node::live::watch(&opts, &stop, |o| {
                if let netsleuth_node::live::Output::Notice { text, .. } = o {
                    notices.lock().unwrap().push(text.clone());
                }
            })
        });
        ready_rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("ready");
        // A process (ours, killed below by its pid) that lives in the new namespace.
        let mut child = std::process::Command::new("ip")
            .args(["netns", "exec", ns.name(), "sleep", "30"])
            .spawn()
            .unwrap();
        let pid = child.id();
        std::thread::sleep(std::time::Duration::from_secs(5));
        let _ = child.kill();
        let _ = child.wait();
        std::thread::sleep(std::time::Duration::from_secs(5));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let s = watcher.join().unwrap();
        (s, pid)
    });
    let (summary, pid) = summary;
    let notices = notices.into_inner().unwrap();
    let label = format!("netns of pid {pid} ");
    assert!(
        summary.namespaces.iter().any(|n| n.starts_with(&label)),
        "not picked up: {:?}",
        summary.namespaces
    );
    assert!(
        notices
            .iter()
            .any(|n| n.starts_with(&format!("stopped watching {label}"))),
        "not let go: {notices:#?}"
    );
}

/// `watch --record` end to end: the tap names dns-id-collision from the kernel's packets during the
/// run, writes it out, and `analyze --node BUNDLE PCAP...` (the command in the JSON) finds it again
/// with the same confidence.
#[test]
fn a_finding_recorded_live_is_found_again_by_analyze() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !is_root() {
        return;
    }
    let dir =
        std::env::temp_dir().join(format!("netsleuth-lab-watch-record-{}", std::process::id()));
    let opts = RunOptions {
        out_dir: Some(dir.clone()),
        skip_analysis: true,
        watch: true,
        ..Default::default()
    };
    run("dns-id-collision", &opts).expect("run");
    let rec = dir.join("watch-record");
    let json = std::fs::read_dir(&rec)
        .expect("watch-record directory")
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().ends_with("-dns-id-collision.json"))
        })
        .expect("a recorded dns-id-collision");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("json");
    let bundle = rec.join(v["bundle"].as_str().expect("a bundle was written"));
    let facts = netsleuth_node::read_bundle(&bundle).expect("bundle");
    let inputs: Vec<netsleuth_core::Input> = v["pcaps"]
        .as_array()
        .expect("pcaps")
        .iter()
        .map(|p| {
            let f = rec.join(p["file"].as_str().expect("file"));
            netsleuth_core::Input::stream(
                f.display().to_string(),
                Box::new(std::fs::File::open(&f).expect("pcap")),
            )
        })
        .collect();
    assert!(!inputs.is_empty());
    let again = netsleuth_core::analyze(inputs, &netsleuth_node::to_node_context(&facts));
    let f = again
        .findings
        .iter()
        .find(|f| f.id == "dns-id-collision")
        .unwrap_or_else(|| panic!("not found again: {:?}", again.findings));
    assert_eq!(
        serde_json::to_value(netsleuth_core::report::json::Finding::from(f)).expect("json")
            ["confidence"],
        v["finding"]["confidence"]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

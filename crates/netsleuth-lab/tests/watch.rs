//! `lab run --watch`: `netsleuth watch` runs on the lab's namespaces while each scenario happens.
//! For every scenario whose evidence is live-visible (kernel events and counters; the packet tap is
//! not built yet), watch names the expected id with the expected confidence *during* the run (the
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
    ("conntrack-snat-remap", "conntrack-snat-remap", Confidence::Confirmed),
    ("conntrack-dnat-rebalance", "conntrack-dnat-rebalance", Confidence::Confirmed),
    ("snat-port-clash", "snat-port-clash", Confidence::Likely),
    ("listen-queue-overflow", "listen-queue-overflow", Confidence::Confirmed),
    ("local-source-drop", "local-source-drop", Confidence::Likely),
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
        let Some(w) = watched(s.name, false) else { continue };
        let named = incidents(&w);
        eprintln!("{}: watch named {:?} ({} events, {} losses)", s.name, named, w.events, w.losses);
        let own = s.incident.map(|i| i.id);
        if let Some(other) = named.iter().find(|(id, _, _)| Some(id.as_str()) != own) {
            failures.push(format!("{}: watch named {} ({:?}), not the run's incident", s.name, other.0, other.1));
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
        let Some(w) = watched(s.name, mitigated) else { continue };
        let named = incidents(&w);
        eprintln!("{} (mitigated: {mitigated}): watch named {named:?}", s.name);
        if !named.is_empty() {
            failures.push(format!("{} (mitigated: {mitigated}): {named:?}", s.name));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

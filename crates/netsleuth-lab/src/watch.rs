//! `lab run --watch`: `netsleuth watch`'s loop (the node crate's `live::watch`) on the lab's
//! namespaces while the incident happens. Started with the recorders, before any traffic, and stopped
//! with them, before the namespaces go (after `live::taps::ANNOUNCE_DELAY`, so the packet tap can name
//! what it saw); what it said, with when, is kept in the run's record.

use crate::topology::Topology;
use netsleuth_core::report::json;
use netsleuth_node::live::{self, NsTarget, Output, WatchOptions};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What the watcher said during a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WatchRecord {
    /// When the watcher was ready (its sources open) and when it was stopped (ns since the epoch):
    /// every finding between the two was named while the scenario ran.
    pub ready_ns: i64,
    pub stopped_ns: i64,
    /// Each finding as it was reported (a case reported again at a higher confidence appears twice).
    pub findings: Vec<WatchedFinding>,
    pub notices: Vec<String>,
    pub events: u64,
    pub conntrack_events: u64,
    pub losses: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct WatchedFinding {
    pub ts_ns: i64,
    pub finding: json::Finding,
}

pub(crate) struct LabWatcher {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<live::WatchSummary>>,
    findings: Arc<Mutex<Vec<WatchedFinding>>>,
    ready_ns: i64,
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

impl LabWatcher {
    /// Starts watching the node (`node_role`) and every other namespace of the topology; returns once
    /// every source is open. What the packet tap names is recorded under `out/watch-record/`
    /// (`watch --record`: each finding's packets, the node's bundle, the finding).
    pub fn start(topo: &Topology, node_role: &str, out: &std::path::Path) -> LabWatcher {
        let mut targets: Vec<NsTarget> = Vec::new();
        for ns in topo.all() {
            let t = NsTarget {
                label: if ns.role() == node_role {
                    "node".to_string()
                } else {
                    format!("pod {}", ns.role())
                },
                path: Some(ns.path()),
            };
            if ns.role() == node_role {
                targets.insert(0, t);
            } else {
                targets.push(t);
            }
        }
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let opts = WatchOptions {
            targets,
            processes: false,
            ready: Some(ready_tx),
            tap: live::TapOptions {
                record: Some(out.join("watch-record")),
                ..Default::default()
            },
            ..Default::default()
        };
        let stop = Arc::new(AtomicBool::new(false));
        let findings = Arc::new(Mutex::new(Vec::new()));
        let (s, f) = (stop.clone(), findings.clone());
        let thread = std::thread::Builder::new()
            .name("lab-watch".into())
            .spawn(move || {
                live::watch(&opts, &s, |o| {
                    if let Output::Finding { ts_ns, finding } = o {
                        f.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(WatchedFinding {
                                ts_ns: *ts_ns,
                                finding: json::Finding::from(finding),
                            });
                    }
                })
            })
            .ok();
        let _ = ready_rx.recv_timeout(Duration::from_secs(20));
        LabWatcher {
            stop,
            thread,
            findings,
            ready_ns: now_ns(),
        }
    }

    pub fn stop(mut self) -> WatchRecord {
        // The tap names a finding once its packets have settled and a cycle ran over them: the
        // namespaces (and the watcher) stay this long after the traffic, so a wire-only incident is
        // named while they exist.
        std::thread::sleep(live::taps::ANNOUNCE_DELAY);
        let stopped_ns = now_ns();
        self.stop.store(true, Ordering::SeqCst);
        let summary = self.thread.take().and_then(|t| t.join().ok());
        let findings =
            std::mem::take(&mut *self.findings.lock().unwrap_or_else(|e| e.into_inner()));
        let s = summary.unwrap_or_default();
        WatchRecord {
            ready_ns: self.ready_ns,
            stopped_ns,
            findings,
            notices: s.notices,
            events: s.events,
            conntrack_events: s.conntrack_events,
            losses: s.losses,
        }
    }
}

impl Drop for LabWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

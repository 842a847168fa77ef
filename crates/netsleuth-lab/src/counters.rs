//! Counter snapshots taken before and after a scenario's traffic: conntrack statistics (`conntrack -S`,
//! per namespace), `/proc/net/netstat` and `/proc/net/snmp` of each namespace, and
//! `/proc/net/stat/rt_cache` (kernel-wide: its per-CPU counters are not per namespace), read with the
//! node crate's parsers.

use crate::netns::Netns;
use netsleuth_node::parse::conntrack::parse_stats;
use netsleuth_node::parse::netstat::{parse_counters, parse_stat_table};
use serde::Serialize;
use std::collections::BTreeMap;

/// Counters by source (e.g. `node: conntrack -S`) then name (e.g. `insert_failed`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    pub values: BTreeMap<String, BTreeMap<String, u64>>,
    /// Raw text of each source, kept for the run directory.
    #[serde(skip)]
    pub raw: BTreeMap<String, String>,
    /// Sources that could not be read, and why.
    pub unavailable: Vec<String>,
}

/// One counter that moved during the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CounterDelta {
    pub source: String,
    pub name: String,
    pub before: u64,
    pub after: u64,
}

impl CounterDelta {
    pub fn delta(&self) -> i128 {
        self.after as i128 - self.before as i128
    }
}

impl Snapshot {
    pub fn take(namespaces: &[&Netns], conntrack_in: &[&Netns]) -> Snapshot {
        let mut s = Snapshot::default();
        for ns in conntrack_in {
            let source = format!("{}: conntrack -S", ns.role());
            match ns.read(&["conntrack", "-S"]) {
                Ok(text) => {
                    s.values.insert(source.clone(), parse_stats(&text).value);
                    s.raw.insert(source, text);
                }
                Err(e) => s.unavailable.push(format!("{source}: {e}")),
            }
        }
        for ns in namespaces {
            for file in ["netstat", "snmp"] {
                let source = format!("{}: /proc/net/{file}", ns.role());
                match ns.proc_net(file) {
                    Ok(text) => {
                        s.values.insert(source.clone(), parse_counters(&text).value);
                        s.raw.insert(source, text);
                    }
                    Err(e) => s.unavailable.push(format!("{source}: {e}")),
                }
            }
        }
        let source = "kernel-wide: /proc/net/stat/rt_cache".to_string();
        match std::fs::read_to_string("/proc/net/stat/rt_cache") {
            Ok(text) => {
                s.values
                    .insert(source.clone(), parse_stat_table(&text).value);
                s.raw.insert(source, text);
            }
            Err(e) => s.unavailable.push(format!("{source}: {e}")),
        }
        s
    }

    pub fn get(&self, source: &str, name: &str) -> u64 {
        self.values
            .get(source)
            .and_then(|m| m.get(name))
            .copied()
            .unwrap_or(0)
    }
}

/// Every counter that changed between two snapshots, in source then name order.
pub fn deltas(before: &Snapshot, after: &Snapshot) -> Vec<CounterDelta> {
    let mut out = Vec::new();
    for (source, values) in &after.values {
        for (name, &a) in values {
            let b = before
                .values
                .get(source)
                .and_then(|m| m.get(name))
                .copied()
                .unwrap_or(0);
            if a != b {
                out.push(CounterDelta {
                    source: source.clone(),
                    name: name.clone(),
                    before: b,
                    after: a,
                });
            }
        }
    }
    out
}

//! Counter snapshots taken before and after a scenario's traffic: conntrack statistics (`conntrack -S`,
//! per namespace), `/proc/net/netstat` and `/proc/net/snmp` of each namespace, and
//! `/proc/net/stat/rt_cache` (kernel-wide: its per-CPU counters are not per namespace).

use crate::netns::Netns;
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
            match ns.exec("conntrack", &["-S"]) {
                Ok(text) => {
                    s.values
                        .insert(source.clone(), parse_conntrack_stats(&text));
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
                        s.values.insert(source.clone(), parse_proc_net_pairs(&text));
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
                    .insert(source.clone(), parse_proc_stat_table(&text));
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

/// `conntrack -S`: one line per CPU of `key=value` pairs; summed over CPUs.
pub fn parse_conntrack_stats(text: &str) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for line in text.lines() {
        for tok in line.split_whitespace() {
            if let Some((k, v)) = tok.split_once('=') {
                if k == "cpu" {
                    continue;
                }
                if let Ok(n) = v.parse::<u64>() {
                    *m.entry(k.to_string()).or_insert(0) += n;
                }
            }
        }
    }
    m
}

/// `/proc/net/netstat` and `/proc/net/snmp`: pairs of lines `Prefix: names…` / `Prefix: values…`.
/// Names come out as `TcpExt.ListenOverflows`.
pub fn parse_proc_net_pairs(text: &str) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    let lines: Vec<&str> = text.lines().collect();
    for pair in lines.chunks(2) {
        let [names, values] = pair else { continue };
        let (Some((p1, n)), Some((p2, v))) = (names.split_once(':'), values.split_once(':')) else {
            continue;
        };
        if p1 != p2 {
            continue;
        }
        for (name, value) in n.split_whitespace().zip(v.split_whitespace()) {
            // Some snmp fields are negative (Tcp MaxConn -1): not counters, skip them.
            if let Ok(x) = value.parse::<u64>() {
                m.insert(format!("{p1}.{name}"), x);
            }
        }
    }
    m
}

/// `/proc/net/stat/*`: a header of names, then one line of hex values per CPU; summed over CPUs
/// (except `entries`, which every CPU line repeats).
pub fn parse_proc_stat_table(text: &str) -> BTreeMap<String, u64> {
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return BTreeMap::new();
    };
    let names: Vec<&str> = header.split_whitespace().collect();
    let mut m: BTreeMap<String, u64> = BTreeMap::new();
    for line in lines {
        for (name, hex) in names.iter().zip(line.split_whitespace()) {
            let Ok(v) = u64::from_str_radix(hex, 16) else {
                continue;
            };
            let e = m.entry(name.to_string()).or_insert(0);
            if *name == "entries" {
                *e = v;
            } else {
                *e += v;
            }
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conntrack_stats_sum_over_cpus() {
        let t = "cpu=0   \tfound=0 invalid=3 insert=0 insert_failed=2 drop=2 early_drop=0 error=0 search_restart=0 clash_resolve=1 chaintoolong=0 \n\
                 cpu=1   \tfound=1 invalid=0 insert=0 insert_failed=1 drop=1 early_drop=0 error=0 search_restart=0 clash_resolve=4 chaintoolong=0 \n";
        let m = parse_conntrack_stats(t);
        assert_eq!(m["insert_failed"], 3);
        assert_eq!(m["clash_resolve"], 5);
        assert!(!m.contains_key("cpu"));
    }

    #[test]
    fn netstat_pairs_are_prefixed() {
        let t =
            "TcpExt: SyncookiesSent ListenOverflows\nTcpExt: 0 7\nIpExt: InNoRoutes\nIpExt: 2\n";
        let m = parse_proc_net_pairs(t);
        assert_eq!(m["TcpExt.ListenOverflows"], 7);
        assert_eq!(m["IpExt.InNoRoutes"], 2);
    }

    #[test]
    fn stat_table_sums_hex_columns() {
        let t = "entries  in_hit in_martian_src\n00000004 00000001 0000000a\n00000004 00000002 00000001\n";
        let m = parse_proc_stat_table(t);
        assert_eq!(m["in_martian_src"], 11);
        assert_eq!(m["entries"], 4);
    }
}

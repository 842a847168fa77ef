//! Kernel counter files: `/proc/net/netstat` and `/proc/net/snmp` (header line + value line per
//! section), `/proc/net/snmp6` (name value per line), the per-CPU hex tables `/proc/net/stat/rt_cache`
//! and `/proc/net/stat/nf_conntrack`, and the human `netstat -s` text for the few counters we need.

use super::{add, numbered_lines, IssueLog, Parsed};
use std::collections::BTreeMap;

/// Counters by `Section.Name` (`TcpExt.ListenOverflows`, `Tcp.RetransSegs`, `Snmp6.Ip6InReceives`).
pub type Counters = BTreeMap<String, u64>;

/// Reads `/proc/net/netstat`, `/proc/net/snmp` and `/proc/net/snmp6` (the format is detected per line).
pub fn parse_counters(text: &str) -> Parsed<Counters> {
    let mut value = Counters::new();
    let mut issues = IssueLog::default();
    let mut pending: Option<(u64, &str, Vec<&str>)> = None;
    for (n, line) in numbered_lines(text) {
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        if let Some((section, rest)) = t.split_once(':') {
            if !section.contains(' ') {
                let fields: Vec<&str> = rest.split_whitespace().collect();
                let numeric = !fields.is_empty() && fields.iter().all(|f| f.parse::<i64>().is_ok());
                match pending.take() {
                    Some((hn, hsec, names)) if hsec == section && numeric => {
                        if names.len() != fields.len() {
                            issues.push(n, "column-mismatch", t);
                        }
                        for (name, v) in names.iter().zip(fields.iter()) {
                            // Some counters (Tcp MaxConn) are -1; keep them as 0 rather than fail.
                            let v = v.parse::<u64>().unwrap_or(0);
                            value.insert(format!("{section}.{name}"), v);
                        }
                        let _ = hn;
                    }
                    Some((hn, _, _)) => {
                        issues.push(hn, "header-without-values", t);
                        if !numeric {
                            pending = Some((n, section, fields));
                        }
                    }
                    None if !numeric => pending = Some((n, section, fields)),
                    None => issues.push(n, "values-without-header", t),
                }
                continue;
            }
        }
        // snmp6 style: `Ip6InReceives   1234`
        let mut it = t.split_whitespace();
        match (it.next(), it.next(), it.next()) {
            (Some(name), Some(v), None) if v.parse::<u64>().is_ok() => {
                value.insert(format!("Snmp6.{name}"), v.parse().unwrap_or(0));
            }
            _ => issues.push(n, "unknown-line", t),
        }
    }
    if let Some((hn, _, _)) = pending {
        issues.push(hn, "header-without-values", "");
    }
    Parsed { value, issues }
}

/// A per-CPU hex table (`/proc/net/stat/rt_cache`, `/proc/net/stat/nf_conntrack`): the header names the
/// columns, each later line is one CPU. Returns the sum over CPUs per column, except `entries`, which
/// every row repeats (it is the table size, not a per-CPU count) and is taken once.
pub fn parse_stat_table(text: &str) -> Parsed<Counters> {
    let mut value = Counters::new();
    let mut issues = IssueLog::default();
    let mut header: Option<Vec<&str>> = None;
    for (n, line) in numbered_lines(text) {
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        let fields: Vec<&str> = t.split_whitespace().collect();
        let Some(names) = &header else {
            if fields.iter().all(|f| u64::from_str_radix(f, 16).is_err()) {
                header = Some(fields);
            } else {
                issues.push(n, "values-without-header", t);
            }
            continue;
        };
        if fields.len() != names.len() {
            issues.push(n, "column-mismatch", t);
        }
        for (name, f) in names.iter().zip(fields.iter()) {
            match u64::from_str_radix(f, 16) {
                Ok(v) if *name == "entries" => {
                    value.insert((*name).to_string(), v);
                }
                Ok(v) => add(&mut value, name, v),
                Err(_) => issues.push(n, "bad-number", f),
            }
        }
    }
    Parsed { value, issues }
}

/// Phrases of `netstat -s` that carry counters the detectors use, with the `/proc` name they stand for.
const NETSTAT_S_PHRASES: &[(&str, &str)] = &[
    (
        "times the listen queue of a socket overflowed",
        "TcpExt.ListenOverflows",
    ),
    ("SYNs to LISTEN sockets dropped", "TcpExt.ListenDrops"),
    ("SYNs to LISTEN sockets ignored", "TcpExt.ListenDrops"),
    (
        "passive connections rejected because of time stamp",
        "TcpExt.PAWSPassive",
    ),
    (
        "packets rejects in established connections because of timestamp",
        "TcpExt.PAWSEstab",
    ),
    ("segments retransmited", "Tcp.RetransSegs"),
    ("segments retransmitted", "Tcp.RetransSegs"),
    ("active connections openings", "Tcp.ActiveOpens"),
    ("passive connection openings", "Tcp.PassiveOpens"),
    ("failed connection attempts", "Tcp.AttemptFails"),
    ("connection resets received", "Tcp.EstabResets"),
    ("resets sent", "Tcp.OutRsts"),
];

/// `netstat -s` (net-tools): maps the known phrases; other numbered lines are counted as `unmapped-line`.
pub fn parse_netstat_s(text: &str) -> Parsed<Counters> {
    let mut value = Counters::new();
    let mut issues = IssueLog::default();
    for (n, line) in numbered_lines(text) {
        let t = line.trim();
        if t.is_empty() || t.ends_with(':') {
            continue;
        }
        let Some(&(_, key)) = NETSTAT_S_PHRASES.iter().find(|(p, _)| t.contains(p)) else {
            issues.push(n, "unmapped-line", t);
            continue;
        };
        match t.split_whitespace().find_map(|w| w.parse::<u64>().ok()) {
            Some(v) => add(&mut value, key, v),
            None => issues.push(n, "bad-number", t),
        }
    }
    Parsed { value, issues }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netstat_pairs_and_snmp6_lines() {
        let p = parse_counters(
            "TcpExt: SyncookiesSent ListenOverflows ListenDrops\nTcpExt: 0 17 18\nTcp: RtoAlgorithm MaxConn\nTcp: 1 -1\nIp6InReceives 42\n",
        );
        assert_eq!(p.value["TcpExt.ListenOverflows"], 17);
        assert_eq!(p.value["TcpExt.ListenDrops"], 18);
        assert_eq!(p.value["Tcp.MaxConn"], 0);
        assert_eq!(p.value["Snmp6.Ip6InReceives"], 42);
        assert!(p.issues.is_empty());
    }

    #[test]
    fn stat_table_sums_cpus_but_not_entries() {
        let p = parse_stat_table(
            "entries  in_hit in_martian_src\n0000000a 00000001 00000002\n0000000a 00000001 00000003\n",
        );
        assert_eq!(p.value["entries"], 10);
        assert_eq!(p.value["in_martian_src"], 5);
    }

    #[test]
    fn netstat_s_maps_listen_overflows() {
        let p = parse_netstat_s("TcpExt:\n    1208 times the listen queue of a socket overflowed\n    1208 SYNs to LISTEN sockets dropped\n    3 other\n");
        assert_eq!(p.value["TcpExt.ListenOverflows"], 1208);
        assert_eq!(p.value["TcpExt.ListenDrops"], 1208);
        assert_eq!(p.issues.count("unmapped-line"), 1);
    }
}

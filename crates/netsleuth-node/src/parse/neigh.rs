//! The neighbour (ARP) table: `/proc/net/arp` rows of one namespace, and the kernel log lines that say
//! the host's table overflowed.

use super::{numbered_lines, IssueLog, Parsed};

/// ATF_COM: the entry has a link-layer address (reachable, stale, delay, probe).
const ATF_COM: u32 = 0x02;
/// ATF_PERM: a permanent (static) entry, which garbage collection never removes.
const ATF_PERM: u32 = 0x04;

/// `/proc/net/arp` summarised: rows by state and by device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArpTable {
    /// Entries with a link-layer address (not permanent).
    pub complete: u64,
    /// Entries still being resolved or whose resolution failed (flags 0x0): these count against
    /// gc_thresh3 like the others.
    pub incomplete: u64,
    pub permanent: u64,
    /// Rows per device, in first-seen order.
    pub by_device: Vec<(String, u64)>,
}

impl ArpTable {
    pub fn entries(&self) -> u64 {
        self.complete + self.incomplete + self.permanent
    }
}

/// `/proc/net/arp`: `IP address  HW type  Flags  HW address  Mask  Device`.
pub fn parse_proc_net_arp(text: &str) -> Parsed<ArpTable> {
    let mut value = ArpTable::default();
    let mut issues = IssueLog::default();
    for (n, line) in numbered_lines(text) {
        let t = line.trim();
        if t.is_empty() || t.starts_with("IP address") {
            continue;
        }
        let f: Vec<&str> = t.split_whitespace().collect();
        let flags = f
            .get(2)
            .and_then(|v| u32::from_str_radix(v.trim_start_matches("0x"), 16).ok());
        let (Some(ip), Some(flags), Some(dev)) = (f.first(), flags, f.get(5)) else {
            issues.push(n, "unknown-line", t);
            continue;
        };
        if ip.parse::<std::net::Ipv4Addr>().is_err() {
            issues.push(n, "bad-address", t);
            continue;
        }
        if flags & ATF_PERM != 0 {
            value.permanent += 1;
        } else if flags & ATF_COM != 0 {
            value.complete += 1;
        } else {
            value.incomplete += 1;
        }
        match value.by_device.iter_mut().find(|(d, _)| d == dev) {
            Some((_, c)) => *c += 1,
            None => value.by_device.push((dev.to_string(), 1)),
        }
    }
    Parsed { value, issues }
}

/// `ip -j neigh show` summarised: entries per family (`inet`, `inet6`) and NUD state, the states as
/// `ip` names them (REACHABLE, STALE, DELAY, PROBE, INCOMPLETE, FAILED, PERMANENT, NOARP).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NeighbourStates {
    pub counts: std::collections::BTreeMap<(String, String), u64>,
}

impl NeighbourStates {
    pub fn entries(&self, family: &str) -> u64 {
        self.counts
            .iter()
            .filter(|((f, _), _)| f == family)
            .map(|(_, n)| n)
            .sum()
    }

    /// "INCOMPLETE 300, REACHABLE 2" for one family.
    pub fn describe(&self, family: &str) -> String {
        self.counts
            .iter()
            .filter(|((f, _), _)| f == family)
            .map(|((_, st), n)| format!("{st} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `ip -j neigh show` (both families; a state list such as `["STALE"]`, none for NOARP entries).
pub fn parse_ip_neigh_json(text: &str) -> Parsed<NeighbourStates> {
    let mut value = NeighbourStates::default();
    let mut issues = IssueLog::default();
    for (n, chunk) in numbered_lines(text) {
        if chunk.trim().is_empty() {
            continue;
        }
        let rows = match serde_json::from_str::<serde_json::Value>(chunk) {
            Ok(serde_json::Value::Array(a)) => a,
            Ok(_) => {
                issues.push(n, "not-an-array", chunk);
                continue;
            }
            Err(e) => {
                issues.push(n, "bad-json", &e.to_string());
                continue;
            }
        };
        for r in rows {
            let Some(dst) = r.get("dst").and_then(|d| d.as_str()) else {
                issues.push(n, "no-dst", &r.to_string());
                continue;
            };
            let family = match dst.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V4(_)) => "inet",
                Ok(std::net::IpAddr::V6(_)) => "inet6",
                Err(_) => {
                    issues.push(n, "bad-address", dst);
                    continue;
                }
            };
            let state = r
                .get("state")
                .and_then(|s| s.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str())
                        .collect::<Vec<_>>()
                        .join("|")
                })
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "NOARP".into());
            *value.counts.entry((family.to_string(), state)).or_insert(0) += 1;
        }
    }
    Parsed { value, issues }
}

/// Whether a kernel log line is the neighbour table's overflow message (`neighbour: arp_cache:
/// neighbor table overflow!`; older kernels: `Neighbour table overflow.`).
pub fn is_overflow_line(line: &str) -> bool {
    let l = line.to_ascii_lowercase();
    (l.contains("neighbour table overflow") || l.contains("neighbor table overflow"))
        && !l.contains("netsleuth")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_by_state_and_device() {
        let t = "IP address       HW type     Flags       HW address            Mask     Device\n\
                 192.168.224.1    0x1         0x2         00:50:56:c0:00:08     *        ens33\n\
                 192.168.224.2    0x1         0x0         00:00:00:00:00:00     *        ens33\n\
                 10.0.0.9         0x1         0x6         02:00:00:00:00:09     *        cni0\n";
        let p = parse_proc_net_arp(t);
        assert!(p.issues.is_empty(), "{:?}", p.issues);
        assert_eq!(
            (p.value.complete, p.value.incomplete, p.value.permanent),
            (1, 1, 1)
        );
        assert_eq!(p.value.entries(), 3);
        assert_eq!(
            p.value.by_device,
            vec![("ens33".to_string(), 2), ("cni0".to_string(), 1)]
        );
        let bad = parse_proc_net_arp("garbage line\n1.2.3.4 0x1\n");
        assert_eq!(bad.issues.total, 2);
        assert_eq!(bad.value.entries(), 0);
    }

    #[test]
    fn ip_neigh_by_family_and_state() {
        let t = r#"[{"dst":"10.250.0.2","dev":"swp0","state":["INCOMPLETE"]},{"dst":"10.0.0.1","dev":"eth0","lladdr":"02:00:00:00:00:01","state":["REACHABLE"]},{"dst":"fd00::1","dev":"eth0","state":["FAILED"]},{"dst":"10.250.0.3","dev":"swp0","state":["INCOMPLETE"]},{"dev":"x"}]"#;
        let p = parse_ip_neigh_json(t);
        assert_eq!(p.issues.total, 1, "{:?}", p.issues);
        assert_eq!(p.value.entries("inet"), 3);
        assert_eq!(p.value.entries("inet6"), 1);
        assert_eq!(p.value.describe("inet"), "INCOMPLETE 2, REACHABLE 1");
        assert_eq!(parse_ip_neigh_json("not json").issues.total, 1);
    }

    #[test]
    fn the_overflow_message_of_old_and_new_kernels() {
        assert!(is_overflow_line(
            "<4>[ 1234.5] neighbour: arp_cache: neighbor table overflow!"
        ));
        assert!(is_overflow_line("Neighbour table overflow."));
        assert!(!is_overflow_line("eth0: entered promiscuous mode"));
    }
}

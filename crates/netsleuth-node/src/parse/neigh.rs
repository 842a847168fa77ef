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
    fn the_overflow_message_of_old_and_new_kernels() {
        assert!(is_overflow_line(
            "<4>[ 1234.5] neighbour: arp_cache: neighbor table overflow!"
        ));
        assert!(is_overflow_line("Neighbour table overflow."));
        assert!(!is_overflow_line("eth0: entered promiscuous mode"));
    }
}

//! `sysctl -a` text (`net.ipv4.tcp_tw_recycle = 0`), which is also the form the collector writes.

use super::{numbered_lines, IssueLog, Parsed};
use std::collections::BTreeMap;

/// Sysctls by dotted name; values as the kernel prints them (multi-value ones keep their tabs as spaces).
pub type Sysctls = BTreeMap<String, String>;

pub fn parse_sysctls(text: &str) -> Parsed<Sysctls> {
    let mut value = Sysctls::new();
    let mut issues = IssueLog::default();
    for (n, line) in numbered_lines(text) {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
            continue;
        }
        // `key = value`; some procps versions print `key=value`, and empty values as `key =`.
        match t.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() && !k.trim().contains(char::is_whitespace) => {
                let key = k.trim().replace('/', ".");
                value.insert(key, v.split_whitespace().collect::<Vec<_>>().join(" "));
            }
            _ => issues.push(n, "unknown-line", t),
        }
    }
    Parsed { value, issues }
}

/// The value of an integer sysctl, if present and numeric.
pub fn sysctl_u64(s: &Sysctls, name: &str) -> Option<u64> {
    s.get(name).and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_spaced_and_tabbed_values_and_counts_noise() {
        let p = parse_sysctls(
            "net.ipv4.tcp_tw_recycle = 1\nnet.ipv4.tcp_rmem = 4096\t87380\t6291456\nsysctl: reading key \"net.ipv6.conf.all.stable_secret\"\ndev.cdrom.info =\n",
        );
        assert_eq!(p.value["net.ipv4.tcp_tw_recycle"], "1");
        assert_eq!(p.value["net.ipv4.tcp_rmem"], "4096 87380 6291456");
        assert_eq!(p.value["dev.cdrom.info"], "");
        assert_eq!(p.issues.count("unknown-line"), 1);
        assert_eq!(p.issues.first[0].line, 3);
    }
}

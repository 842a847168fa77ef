//! Known behaviour changes of the kernel, musl and Go that the detectors depend on: ONE table, each row
//! with its source, so that a finding can say "this kernel still has the bug" and a reader can check why.
//!
//! Invariant: no detector compares a version against a literal; it asks [`status`] about a row here.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Component {
    Kernel,
    Musl,
    Go,
}

/// One behaviour change.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Change {
    pub id: &'static str,
    pub component: Component,
    /// First versions that have the change: a mainline version, plus stable lines it was backported to
    /// (`4.14.155` means 4.14.y from y = 155). Empty when no version has it (a standing behaviour).
    pub since: &'static [&'static str],
    pub what: &'static str,
    /// Commit, issue or document that establishes the row.
    pub source: &'static str,
    /// How sure the version boundary is, when it is not exact.
    pub note: &'static str,
}

pub const MASQUERADE_FLUSH_PER_ADDRESS: &str = "kernel-masquerade-flush-per-address";
pub const TW_RECYCLE_REMOVED: &str = "kernel-tcp-tw-recycle-removed";
pub const TS_OFFSET_PER_CONNECTION: &str = "kernel-tcp-ts-offset-per-connection";
pub const CLASH_RESOLVE_MATCHING: &str = "kernel-ct-clash-resolve-matching";
pub const CLASH_NAT_SAME_ORIGIN: &str = "kernel-ct-clash-nat-same-origin";
pub const CLASH_INSERT_CLASHING: &str = "kernel-ct-clash-insert-clashing-udp";
pub const CLASH_RESOLVE_STAT: &str = "kernel-ct-clash-resolve-stat";
pub const BRIDGE_NF_PER_NETNS: &str = "kernel-bridge-nf-per-netns";
pub const DROP_REASONS: &str = "kernel-kfree-skb-reason";
pub const DROP_REASON_IP_LOCAL_SOURCE: &str = "kernel-drop-reason-ip-local-source";
pub const DROP_REASON_LISTEN_OVERFLOW: &str = "kernel-drop-reason-tcp-listen-overflow";
pub const MUSL_DNS_ID_UNIQUE: &str = "musl-dns-query-ids-distinct";
pub const MUSL_RESOLV_OPTIONS: &str = "musl-resolv-conf-options";
pub const MUSL_NO_NSSWITCH: &str = "musl-no-nsswitch";
pub const GO_FILES_FIRST_WITHOUT_NSSWITCH: &str = "go-hosts-first-without-nsswitch";
pub const GO_BUILDINFO_INLINE: &str = "go-buildinfo-inline-strings";

pub static CHANGES: &[Change] = &[
    Change {
        id: MASQUERADE_FLUSH_PER_ADDRESS,
        component: Component::Kernel,
        since: &["4.20", "4.14.155", "4.19.85"],
        what: "netfilter: masquerade: don't flush all conntracks if only one address deleted on device; before \
               it, deleting any address (a keepalived VIP) flushed every MASQUERADE entry of the device",
        source: "https://git.kernel.org/torvalds/c/097f95d319f8",
        note: "merged 2018 (mainline 4.20 inferred from the merge date); stable backports 4.14.155 and 4.19.85",
    },
    Change {
        id: TW_RECYCLE_REMOVED,
        component: Component::Kernel,
        since: &["4.12"],
        what: "tcp: remove tcp_tw_recycle (the per-host PAWS check that drops SYNs from NATed clients)",
        source: "https://git.kernel.org/torvalds/c/4396e46187ca",
        note: "",
    },
    Change {
        id: TS_OFFSET_PER_CONNECTION,
        component: Component::Kernel,
        since: &["4.10"],
        what: "tcp: randomize tcp timestamp offsets for each connection (tcp_tw_recycle breaks even without NAT)",
        source: "https://git.kernel.org/torvalds/c/95a22caee396",
        note: "",
    },
    Change {
        id: CLASH_RESOLVE_MATCHING,
        component: Component::Kernel,
        since: &["4.19"],
        what: "netfilter: nf_conntrack: resolve clash for matching conntracks (identical UDP entries no longer drop)",
        source: "https://git.kernel.org/torvalds/c/ed07d9a021df",
        note: "",
    },
    Change {
        id: CLASH_NAT_SAME_ORIGIN,
        component: Component::Kernel,
        since: &["5.0"],
        what: "netfilter: nf_nat: skip nat clash resolution for same-origin entries",
        source: "https://git.kernel.org/torvalds/c/4e35c1cb9460",
        note: "",
    },
    Change {
        id: CLASH_INSERT_CLASHING,
        component: Component::Kernel,
        since: &["5.6"],
        what: "netfilter: conntrack: allow insertion of clashing entries (UDP A/AAAA DNATed to different \
               backends no longer drop)",
        source: "https://git.kernel.org/torvalds/c/6a757c07e51f",
        note: "release approximate (≈5.6, per incidents.md)",
    },
    Change {
        id: CLASH_RESOLVE_STAT,
        component: Component::Kernel,
        since: &["5.10"],
        what: "conntrack stats count resolved clashes in clash_resolve; before, insert_failed counted them too",
        source: "incidents.md (snat-port-clash); conntrack -S prints clash_resolve from 5.10",
        note: "",
    },
    Change {
        id: BRIDGE_NF_PER_NETNS,
        component: Component::Kernel,
        since: &["5.3"],
        what: "bridge-nf-call-iptables is per network namespace (before: one global value)",
        source: "netfilter: bridge: make bridge-nf-call-*tables respect network namespaces (v5.3)",
        note: "",
    },
    Change {
        id: DROP_REASONS,
        component: Component::Kernel,
        since: &["5.17"],
        what: "skb:kfree_skb carries a drop reason (NETFILTER_DROP among the first)",
        source: "https://git.kernel.org/torvalds/c/c504e5c2f964",
        note: "",
    },
    Change {
        id: DROP_REASON_IP_LOCAL_SOURCE,
        component: Component::Kernel,
        since: &["6.13"],
        what: "drop reason IP_LOCAL_SOURCE for martian local sources",
        source: "incidents.md (local-source-drop)",
        note: "release approximate (≈6.13)",
    },
    Change {
        id: DROP_REASON_LISTEN_OVERFLOW,
        component: Component::Kernel,
        since: &["6.15"],
        what: "drop reason TCP_LISTEN_OVERFLOW",
        source: "incidents.md (listen-queue-overflow)",
        note: "release approximate (≈6.15)",
    },
    Change {
        id: MUSL_DNS_ID_UNIQUE,
        component: Component::Musl,
        since: &["1.2.4"],
        what: "parallel A and AAAA queries get distinct IDs (before, both could get the same time-derived ID)",
        source: "https://git.musl-libc.org/cgit/musl/commit/?id=6c858d6f",
        note: "Alpine 3.18 is the first release with musl 1.2.4",
    },
    Change {
        id: MUSL_RESOLV_OPTIONS,
        component: Component::Musl,
        since: &[],
        what: "musl reads only ndots, attempts and timeout from resolv.conf options: single-request, \
               single-request-reopen and use-vc are ignored",
        source: "https://git.musl-libc.org/cgit/musl/tree/src/network/resolvconf.c",
        note: "",
    },
    Change {
        id: MUSL_NO_NSSWITCH,
        component: Component::Musl,
        since: &[],
        what: "musl does not read /etc/nsswitch.conf (hosts file first, then DNS, always)",
        source: "https://wiki.musl-libc.org/functional-differences-from-glibc.html",
        note: "",
    },
    Change {
        id: GO_FILES_FIRST_WITHOUT_NSSWITCH,
        component: Component::Go,
        since: &["1.16"],
        what: "without /etc/nsswitch.conf the pure-Go resolver looks in /etc/hosts before DNS (before 1.16: \
               DNS first)",
        source: "https://github.com/golang/go/issues/35305 (fix c80022204e8f)",
        note: "",
    },
    Change {
        id: GO_BUILDINFO_INLINE,
        component: Component::Go,
        since: &["1.18"],
        what: "build info strings stored inline after the header (before: pointers to Go string headers)",
        source: "https://go.dev/src/debug/buildinfo/buildinfo.go",
        note: "",
    },
];

pub fn change(id: &str) -> &'static Change {
    CHANGES
        .iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("versions table has no row {id}"))
}

/// Numeric components of a version (`5.10.0-21-amd64` → [5, 10, 0]; `go1.15.6` → [1, 15, 6]).
pub fn numeric(v: &str) -> Vec<u32> {
    let v = v.trim_start_matches("go");
    let mut out = Vec::new();
    for part in v.split('.') {
        let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
        match digits.parse() {
            Ok(n) => out.push(n),
            Err(_) => break,
        }
        if digits.len() != part.len() {
            break; // `0-21-amd64`: the rest is a distro suffix
        }
    }
    out
}

fn cmp(a: &[u32], b: &[u32]) -> std::cmp::Ordering {
    let n = a.len().max(b.len());
    for i in 0..n {
        let (x, y) = (
            a.get(i).copied().unwrap_or(0),
            b.get(i).copied().unwrap_or(0),
        );
        if x != y {
            return x.cmp(&y);
        }
    }
    std::cmp::Ordering::Equal
}

/// Whether `version` has the change: `Some(true)` if it does, `Some(false)` if not, `None` if the version
/// cannot be read. A stable-line entry (`4.19.85`) counts only for that line (4.19.y).
pub fn has_change(id: &str, version: &str) -> Option<bool> {
    let c = change(id);
    let v = numeric(version);
    if v.len() < 2 {
        return None;
    }
    if c.since.is_empty() {
        return Some(false);
    }
    for s in c.since {
        let sv = numeric(s);
        let same_line = sv.len() >= 3 && v[..2] == sv[..2];
        if same_line && cmp(&v, &sv).is_ge() {
            return Some(true);
        }
    }
    // Mainline: the entry with two components (or the smallest full one).
    let mainline = c
        .since
        .iter()
        .map(|s| numeric(s))
        .find(|s| s.len() == 2)
        .unwrap_or_else(|| numeric(c.since[0]));
    Some(cmp(&v, &mainline).is_ge())
}

/// Text for a finding: "kernel 4.19.30 lacks <what> (source)" or "has".
pub fn status(id: &str, version: &str) -> String {
    let c = change(id);
    match has_change(id, version) {
        Some(true) => format!("{version} has: {} [{}]", c.what, c.source),
        Some(false) => format!("{version} lacks: {} [{}]", c.what, c.source),
        None => format!("version {version:?} unreadable; {} [{}]", c.what, c.source),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backports_count_only_on_their_line() {
        assert_eq!(
            has_change(MASQUERADE_FLUSH_PER_ADDRESS, "4.19.85-generic"),
            Some(true)
        );
        assert_eq!(
            has_change(MASQUERADE_FLUSH_PER_ADDRESS, "4.19.84"),
            Some(false)
        );
        assert_eq!(
            has_change(MASQUERADE_FLUSH_PER_ADDRESS, "4.14.155"),
            Some(true)
        );
        assert_eq!(
            has_change(MASQUERADE_FLUSH_PER_ADDRESS, "4.15.0-65-generic"),
            Some(false)
        );
        assert_eq!(
            has_change(MASQUERADE_FLUSH_PER_ADDRESS, "5.4.0"),
            Some(true)
        );
        assert_eq!(
            has_change(TW_RECYCLE_REMOVED, "3.10.0-1062.el7.x86_64"),
            Some(false)
        );
        assert_eq!(has_change(MUSL_DNS_ID_UNIQUE, "1.2.3"), Some(false));
        assert_eq!(has_change(MUSL_DNS_ID_UNIQUE, "1.2.4-r0"), Some(true));
        assert_eq!(
            has_change(GO_FILES_FIRST_WITHOUT_NSSWITCH, "go1.15.6"),
            Some(false)
        );
        assert_eq!(has_change(MUSL_RESOLV_OPTIONS, "1.2.5"), Some(false));
        assert_eq!(has_change(TW_RECYCLE_REMOVED, "garbage"), None);
    }

    #[test]
    fn every_row_has_a_source() {
        for c in CHANGES {
            assert!(!c.source.is_empty(), "{}", c.id);
        }
    }
}

//! Known behaviour changes of the kernel, musl and Go that the detectors depend on: ONE table, each row
//! with its source, so that a finding can say "this kernel still has the bug" and a reader can check why.
//! Pure data: the core's capture detectors and the node's detectors both read it, and each catalogue
//! [`Incident`](crate::Incident) names the rows it depends on (`Incident::versions`).
//!
//! Invariant: no detector compares a version against a literal and no other code parses a version; it
//! asks a row here ([`VersionFact::has`], [`VersionFact::status`]), and [`Version::parse`] is the one
//! parser.

use serde::Serialize;
use std::cmp::Ordering;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Component {
    Kernel,
    Musl,
    Go,
}

/// One behaviour change.
#[derive(Debug, Serialize)]
pub struct VersionFact {
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

pub static MASQUERADE_FLUSH_PER_ADDRESS: VersionFact = VersionFact {
    id: "kernel-masquerade-flush-per-address",
    component: Component::Kernel,
    since: &["4.20", "4.14.155", "4.19.85"],
    what: "netfilter: masquerade: don't flush all conntracks if only one address deleted on device; before \
           it, deleting any address (a keepalived VIP) flushed every MASQUERADE entry of the device",
    source: "https://git.kernel.org/torvalds/c/097f95d319f8",
    note: "merged 2018 (mainline 4.20 inferred from the merge date); stable backports 4.14.155 and 4.19.85",
};

pub static TW_RECYCLE_REMOVED: VersionFact = VersionFact {
    id: "kernel-tcp-tw-recycle-removed",
    component: Component::Kernel,
    since: &["4.12"],
    what: "tcp: remove tcp_tw_recycle (the per-host PAWS check that drops SYNs from NATed clients)",
    source: "https://git.kernel.org/torvalds/c/4396e46187ca",
    note: "",
};

pub static TS_OFFSET_PER_CONNECTION: VersionFact = VersionFact {
    id: "kernel-tcp-ts-offset-per-connection",
    component: Component::Kernel,
    since: &["4.10"],
    what: "tcp: randomize tcp timestamp offsets for each connection (tcp_tw_recycle breaks even without NAT)",
    source: "https://git.kernel.org/torvalds/c/95a22caee396",
    note: "",
};

pub static CLASH_RESOLVE_MATCHING: VersionFact = VersionFact {
    id: "kernel-ct-clash-resolve-matching",
    component: Component::Kernel,
    since: &["4.19"],
    what: "netfilter: nf_conntrack: resolve clash for matching conntracks (identical UDP entries no longer drop)",
    source: "https://git.kernel.org/torvalds/c/ed07d9a021df",
    note: "",
};

pub static CLASH_NAT_SAME_ORIGIN: VersionFact = VersionFact {
    id: "kernel-ct-clash-nat-same-origin",
    component: Component::Kernel,
    since: &["5.0"],
    what: "netfilter: nf_nat: skip nat clash resolution for same-origin entries",
    source: "https://git.kernel.org/torvalds/c/4e35c1cb9460",
    note: "",
};

pub static CLASH_INSERT_CLASHING: VersionFact = VersionFact {
    id: "kernel-ct-clash-insert-clashing-udp",
    component: Component::Kernel,
    since: &["5.6"],
    what:
        "netfilter: conntrack: allow insertion of clashing entries (UDP A/AAAA DNATed to different \
           backends no longer drop)",
    source: "https://git.kernel.org/torvalds/c/6a757c07e51f",
    note: "release approximate (≈5.6, per incidents.md)",
};

pub static CLASH_RESOLVE_STAT: VersionFact = VersionFact {
    id: "kernel-ct-clash-resolve-stat",
    component: Component::Kernel,
    since: &["5.10"],
    what: "conntrack stats count resolved clashes in clash_resolve; before, insert_failed counted them too",
    source: "incidents.md (snat-port-clash); conntrack -S prints clash_resolve from 5.10",
    note: "",
};

pub static BRIDGE_NF_PER_NETNS: VersionFact = VersionFact {
    id: "kernel-bridge-nf-per-netns",
    component: Component::Kernel,
    since: &["5.3"],
    what: "bridge-nf-call-iptables is per network namespace (before: one global value)",
    source: "netfilter: bridge: make bridge-nf-call-*tables respect network namespaces (v5.3)",
    note: "",
};

pub static DROP_REASONS: VersionFact = VersionFact {
    id: "kernel-kfree-skb-reason",
    component: Component::Kernel,
    since: &["5.17"],
    what: "skb:kfree_skb carries a drop reason (NETFILTER_DROP among the first)",
    source: "https://git.kernel.org/torvalds/c/c504e5c2f964",
    note: "",
};

pub static DROP_REASON_IP_LOCAL_SOURCE: VersionFact = VersionFact {
    id: "kernel-drop-reason-ip-local-source",
    component: Component::Kernel,
    since: &["6.13"],
    what: "drop reason IP_LOCAL_SOURCE for martian local sources",
    source: "incidents.md (local-source-drop)",
    note: "release approximate (≈6.13)",
};

pub static DROP_REASON_LISTEN_OVERFLOW: VersionFact = VersionFact {
    id: "kernel-drop-reason-tcp-listen-overflow",
    component: Component::Kernel,
    since: &["6.15"],
    what: "drop reason TCP_LISTEN_OVERFLOW",
    source: "incidents.md (listen-queue-overflow)",
    note: "release approximate (≈6.15)",
};

pub static DROP_REASON_IP_RPFILTER: VersionFact = VersionFact {
    id: "kernel-drop-reason-ip-rpfilter",
    component: Component::Kernel,
    since: &["5.18"],
    what: "drop reason IP_RPFILTER for packets that fail the reverse-path check (ip_rcv_finish_core)",
    source: "include/net/dropreason-core.h SKB_DROP_REASON_IP_RPFILTER (net: ipv4: use kfree_skb_reason() in ip_rcv_finish_core())",
    note: "release approximate (≈5.18, not checked against a kernel tree here); TcpExt IPReversePathFilter counts the drops on every kernel netsleuth reads",
};

pub static MUSL_DNS_ID_UNIQUE: VersionFact = VersionFact {
    id: "musl-dns-query-ids-distinct",
    component: Component::Musl,
    since: &["1.2.4"],
    what: "parallel A and AAAA queries get distinct IDs (before, both could get the same time-derived ID)",
    source: "https://git.musl-libc.org/cgit/musl/commit/?id=6c858d6f",
    note: "Alpine 3.18 is the first release with musl 1.2.4",
};

pub static MUSL_RESOLV_OPTIONS: VersionFact = VersionFact {
    id: "musl-resolv-conf-options",
    component: Component::Musl,
    since: &[],
    what: "musl reads only ndots, attempts and timeout from resolv.conf options: single-request, \
           single-request-reopen and use-vc are ignored",
    source: "https://git.musl-libc.org/cgit/musl/tree/src/network/resolvconf.c",
    note: "",
};

pub static MUSL_DNS_TCP_FALLBACK: VersionFact = VersionFact {
    id: "musl-dns-tcp-fallback",
    component: Component::Musl,
    since: &["1.2.4"],
    what: "the stub resolver re-asks over TCP when a UDP answer is truncated (TC=1); before, the \
           truncated answer was all the application got",
    source: "https://musl.libc.org/releases.html (1.2.4: \"TCP fallback in DNS lookups\")",
    note: "Alpine 3.18 is the first release with musl 1.2.4",
};

pub static MUSL_NO_NSSWITCH: VersionFact = VersionFact {
    id: "musl-no-nsswitch",
    component: Component::Musl,
    since: &[],
    what: "musl does not read /etc/nsswitch.conf (hosts file first, then DNS, always)",
    source: "https://wiki.musl-libc.org/functional-differences-from-glibc.html",
    note: "",
};

pub static GO_FILES_FIRST_WITHOUT_NSSWITCH: VersionFact = VersionFact {
    id: "go-hosts-first-without-nsswitch",
    component: Component::Go,
    since: &["1.16"],
    what: "without /etc/nsswitch.conf the pure-Go resolver looks in /etc/hosts before DNS (before 1.16: \
           DNS first)",
    source: "https://github.com/golang/go/issues/35305 (fix c80022204e8f)",
    note: "",
};

pub static GO_BUILDINFO_INLINE: VersionFact = VersionFact {
    id: "go-buildinfo-inline-strings",
    component: Component::Go,
    since: &["1.18"],
    what:
        "build info strings stored inline after the header (before: pointers to Go string headers)",
    source: "https://go.dev/src/debug/buildinfo/buildinfo.go",
    note: "",
};

pub static CONNTRACK_MAX_INIT_NETNS_ONLY: VersionFact = VersionFact {
    id: "kernel-conntrack-max-init-netns-only",
    component: Component::Kernel,
    since: &[],
    what: "nf_conntrack_max is one value for the whole host, writable only in the initial network \
           namespace (0444 elsewhere), while nf_conntrack_count is kept per namespace and compared \
           with that one max: each namespace (each node of a kind cluster, each pod with its own \
           conntrack users) can fill up to the host's max on its own",
    source: "net/netfilter/nf_conntrack_standalone.c (nf_conntrack_standalone_init_sysctl: \
             \"Don't allow non-init_net ns to alter global sysctls\"); nf_conntrack_core.c \
             __nf_conntrack_alloc compares cnet->count with nf_conntrack_max",
    note: "standing behaviour; checked read-only in a child namespace on 6.18",
};

pub static SYN_RESEND_AFTER_BAD_ACK: VersionFact = VersionFact {
    id: "kernel-tcp-syn-resend-after-suspicious-ack",
    component: Component::Kernel,
    since: &["5.6"],
    what: "tcp: Reduce SYN resend delay if a suspicous ACK is received (a client in SYN-SENT that resets an \
           unacceptable ACK retransmits its SYN after 2 jiffies, not the 1 s initial RTO)",
    source: "https://git.kernel.org/torvalds/c/9603d47bad46",
    note: "committed Feb 2020 in the 5.6 cycle (release inferred from the date)",
};

pub static PAWS_TW_COUNTER: VersionFact = VersionFact {
    id: "kernel-tcp-paws-timewait-counter",
    component: Component::Kernel,
    since: &["6.16"],
    what: "tcp: add LINUX_MIB_PAWS_TW_REJECTED counter (TcpExt PAWSTimewait) and the TCP_RFC7323_TW_PAWS drop \
           reason; before, a SYN rejected by PAWS in TIME_WAIT counted in TcpExt PAWSEstab",
    source: "https://git.kernel.org/torvalds/c/c449d5f3a3d7 (drop reason: 04271411121a)",
    note: "merged into net-next in April 2025 (6.16 inferred from the date)",
};

pub static IPVS_CONN_REUSE_UNCONFIRMED_CT: VersionFact = VersionFact {
    id: "kernel-ipvs-conn-reuse-unconfirmed-conntrack",
    component: Component::Kernel,
    since: &["5.9"],
    what: "ipvs: allow connection reuse for unconfirmed conntrack (a SYN reusing a port of a connection in \
           IPVS's TIME_WAIT is rescheduled without dropping it; before, conn_reuse_mode=1 with conntrack dropped \
           that first SYN, since f719e3754ee2)",
    source: "https://patchwork.ozlabs.org/project/netfilter-devel/patch/20200701151719.4751-1-ja@ssi.bg/ \
             (kubernetes/kubernetes#93297, #102122)",
    note: "5.9 as kubernetes#93297 and kube-proxy's connReuseMinSupportedKernelVersion (#102122) state",
};

pub static IPVS_EXPIRE_NODEST_CONN: VersionFact = VersionFact {
    id: "kernel-ipvs-expire-nodest-conn-delayed-work",
    component: Component::Kernel,
    since: &["5.9"],
    what: "ipvs: queue delayed work to expire no destination connections if expire_nodest_conn=1 (a reused \
           port no longer reaches a removed real server)",
    source: "https://patchwork.ozlabs.org/project/netfilter-devel/patch/20200708161638.13584-1-kim.andrewsy@gmail.com/ \
             (kubernetes/kubernetes#81775, #93297)",
    note: "5.9 as kubernetes#93297 states",
};

pub static NAT_UDP_ZERO_CHECKSUM_KEPT: VersionFact = VersionFact {
    id: "kernel-nat-udp-zero-checksum-kept",
    component: Component::Kernel,
    since: &["5.7", "4.14.181", "4.19.123", "5.4.41", "5.6.13"],
    what: "netfilter: nat: never update the UDP checksum when it's 0 (before it, NAT of a VXLAN device's \
           own UDP packets — kube-proxy's MASQUERADE --random-fully — with tx checksum offload on \
           \"updated\" the disabled outer checksum into a wrong non-zero one, and the receiver dropped them)",
    source: "https://git.kernel.org/torvalds/c/ea64d8d6c675",
    note: "in netfilter/master for 5.7-rc4 (April 2020); stable 5.6.13, 5.4.41, 4.19.123, 4.14.181 \
           (kubernetes/kubernetes#88986); distribution kernels backported it separately (RHEL 8.4)",
};

/// Every row, in the order above.
pub static TABLE: &[&VersionFact] = &[
    &MASQUERADE_FLUSH_PER_ADDRESS,
    &TW_RECYCLE_REMOVED,
    &TS_OFFSET_PER_CONNECTION,
    &CLASH_RESOLVE_MATCHING,
    &CLASH_NAT_SAME_ORIGIN,
    &CLASH_INSERT_CLASHING,
    &CLASH_RESOLVE_STAT,
    &BRIDGE_NF_PER_NETNS,
    &DROP_REASONS,
    &DROP_REASON_IP_LOCAL_SOURCE,
    &DROP_REASON_LISTEN_OVERFLOW,
    &MUSL_DNS_ID_UNIQUE,
    &MUSL_RESOLV_OPTIONS,
    &MUSL_NO_NSSWITCH,
    &GO_FILES_FIRST_WITHOUT_NSSWITCH,
    &GO_BUILDINFO_INLINE,
    &CONNTRACK_MAX_INIT_NETNS_ONLY,
    &DROP_REASON_IP_RPFILTER,
    &MUSL_DNS_TCP_FALLBACK,
    &SYN_RESEND_AFTER_BAD_ACK,
    &PAWS_TW_COUNTER,
    &IPVS_CONN_REUSE_UNCONFIRMED_CT,
    &IPVS_EXPIRE_NODEST_CONN,
    &NAT_UDP_ZERO_CHECKSUM_KEPT,
];

/// A version as the components print it: `5.10.0-21-amd64`, `3.10.0-1062.el7.x86_64`, `1.2.3-r4`,
/// `go1.15.6`, `go1.16beta1`, `5.10.0-rc1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// The numeric release, at least major and minor: `[5, 10, 0]`. A distribution or package suffix
    /// (`-21-amd64`, `-r4`, `.el7.x86_64`) is not part of it.
    pub release: Vec<u32>,
    /// The pre-release tag of that release (`beta1`, `rc2`), if any.
    pub pre: Option<String>,
}

impl Version {
    /// `None` for text that does not start with `major.minor` (after an optional `go` or `v`), e.g.
    /// `devel +abc`, `musl`, `5`.
    pub fn parse(text: &str) -> Option<Version> {
        let t = text.trim();
        let mut rest = t
            .strip_prefix("go")
            .or_else(|| t.strip_prefix('v'))
            .unwrap_or(t);
        let mut release = Vec::new();
        loop {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                break;
            }
            release.push(rest[..digits].parse().ok()?);
            rest = &rest[digits..];
            match rest.strip_prefix('.') {
                Some(r) if r.starts_with(|c: char| c.is_ascii_digit()) => rest = r,
                _ => break,
            }
        }
        if release.len() < 2 {
            return None;
        }
        // `beta1`, `rc1` (Go), `-rc1` (Linux); `-r4` is an Alpine package revision, not a pre-release.
        let tag = rest.strip_prefix('-').unwrap_or(rest);
        let pre = ["alpha", "beta", "rc"].iter().find_map(|p| {
            let n = tag.strip_prefix(p)?;
            let digits = n.bytes().take_while(u8::is_ascii_digit).count();
            (digits > 0).then(|| tag[..p.len() + digits].to_string())
        });
        Some(Version { release, pre })
    }
}

/// Compares numeric releases, missing components counting as 0 (`4.20` = `4.20.0`).
fn cmp_release(a: &[u32], b: &[u32]) -> Ordering {
    let n = a.len().max(b.len());
    (0..n)
        .map(|i| {
            let (x, y) = (a.get(i).unwrap_or(&0), b.get(i).unwrap_or(&0));
            x.cmp(y)
        })
        .find(|o| o.is_ne())
        .unwrap_or(Ordering::Equal)
}

fn release(v: &str) -> Vec<u32> {
    Version::parse(v).map(|v| v.release).unwrap_or_default()
}

impl VersionFact {
    /// The mainline version that has the change (the entry with two components, or the first one);
    /// `None` for a standing behaviour.
    pub fn mainline(&self) -> Option<&'static str> {
        self.since
            .iter()
            .copied()
            .find(|s| release(s).len() == 2)
            .or_else(|| self.since.first().copied())
    }

    /// Whether `version` has the change: `Some(true)` if it does, `Some(false)` if not, `None` if the
    /// version cannot be read. A stable-line entry (`4.19.85`) counts only for that line (4.19.y).
    ///
    /// A pre-release counts as its release: Go cuts its betas after the release freeze with the release
    /// notes complete (golang.org/s/release), and Linux its `-rc1` after the merge window, so a
    /// `go1.16beta1` or a `5.10.0-rc1` already behaves as 1.16 or 5.10 does.
    pub fn has(&self, version: &str) -> Option<bool> {
        let v = Version::parse(version)?.release;
        let Some(mainline) = self.mainline() else {
            return Some(false);
        };
        for s in self.since {
            let sv = release(s);
            let same_line = sv.len() >= 3 && v[..2] == sv[..2];
            if same_line && cmp_release(&v, &sv).is_ge() {
                return Some(true);
            }
        }
        Some(cmp_release(&v, &release(mainline)).is_ge())
    }

    /// Text for a finding: "4.19.30 lacks: <what> [source]", "… has: …", or that it is unreadable.
    pub fn status(&self, version: &str) -> String {
        match self.has(version) {
            Some(true) => format!("{version} has: {} [{}]", self.what, self.source),
            Some(false) => format!("{version} lacks: {} [{}]", self.what, self.source),
            None => format!(
                "version {version:?} unreadable; {} [{}]",
                self.what, self.source
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backports_count_only_on_their_line() {
        let m = &MASQUERADE_FLUSH_PER_ADDRESS;
        assert_eq!(m.has("4.19.85-generic"), Some(true));
        assert_eq!(m.has("4.19.84"), Some(false));
        assert_eq!(m.has("4.14.155"), Some(true));
        assert_eq!(m.has("4.15.0-65-generic"), Some(false));
        assert_eq!(m.has("5.4.0"), Some(true));
        assert_eq!(
            TW_RECYCLE_REMOVED.has("3.10.0-1062.el7.x86_64"),
            Some(false)
        );
        assert_eq!(MUSL_DNS_ID_UNIQUE.has("1.2.3"), Some(false));
        assert_eq!(MUSL_DNS_ID_UNIQUE.has("1.2.4-r0"), Some(true));
        assert_eq!(MUSL_DNS_ID_UNIQUE.has("1.2.3-r4"), Some(false));
        assert_eq!(MUSL_DNS_ID_UNIQUE.has("1.2.10"), Some(true));
        assert_eq!(GO_FILES_FIRST_WITHOUT_NSSWITCH.has("go1.15.6"), Some(false));
        assert_eq!(MUSL_RESOLV_OPTIONS.has("1.2.5"), Some(false));
        assert_eq!(TW_RECYCLE_REMOVED.has("garbage"), None);
        assert_eq!(
            GO_FILES_FIRST_WITHOUT_NSSWITCH.has("devel +b7a85e0003"),
            None
        );
    }

    /// The four parsers this one replaced read `go1.16beta1` as 1.16.1, as 1.16.0 and as unreadable.
    /// It is 1.16 before its release, and it has 1.16's behaviour changes: the files-before-DNS default
    /// (CL 238629, golang/go#35305) was in the Go 1.16 release notes before Beta 1 (golang/go#42904).
    #[test]
    fn a_pre_release_has_its_release_changes() {
        assert_eq!(
            Version::parse("go1.16beta1"),
            Some(Version {
                release: vec![1, 16],
                pre: Some("beta1".into())
            })
        );
        assert_eq!(
            Version::parse("5.10.0-rc1").and_then(|v| v.pre),
            Some("rc1".into())
        );
        assert_eq!(Version::parse("1.2.3-r4").and_then(|v| v.pre), None);
        let go = &GO_FILES_FIRST_WITHOUT_NSSWITCH;
        assert_eq!(go.has("go1.16beta1"), Some(true));
        assert_eq!(go.has("go1.16rc1"), Some(true));
        assert_eq!(go.has("go1.15.15"), Some(false));
        assert_eq!(go.has("go1.16"), Some(true));
        assert_eq!(CLASH_RESOLVE_STAT.has("5.10.0-rc1"), Some(true));
        assert_eq!(CLASH_RESOLVE_STAT.has("5.9.16"), Some(false));
    }

    #[test]
    fn versions_parse_as_their_components_print_them() {
        let r = |v: &str| Version::parse(v).map(|v| v.release);
        assert_eq!(r("5.10.0-21-amd64"), Some(vec![5, 10, 0]));
        assert_eq!(r("3.10.0-1062.el7.x86_64"), Some(vec![3, 10, 0]));
        assert_eq!(r("go1.15.6"), Some(vec![1, 15, 6]));
        assert_eq!(r("go1.22.0 X:boringcrypto"), Some(vec![1, 22, 0]));
        assert_eq!(r("v1.2"), Some(vec![1, 2]));
        assert_eq!(r("musl"), None);
        assert_eq!(r("5"), None);
    }

    #[test]
    fn every_row_has_a_source_and_readable_versions() {
        for c in TABLE {
            assert!(!c.source.is_empty(), "{}", c.id);
            for s in c.since {
                assert!(Version::parse(s).is_some(), "{}: {s}", c.id);
            }
        }
        let mut ids: Vec<_> = TABLE.iter().map(|c| c.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), TABLE.len());
    }
}

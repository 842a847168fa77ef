//! Node facts: the raw artifacts of one collection (what a bundle holds, file by file) and what the
//! parsers made of them.
//!
//! Invariant: live checks and bundle checks go through the same path. The collector produces artifacts
//! (bytes by path) and a [`Manifest`]; [`NodeFacts::from_artifacts`] parses them; `write_bundle` stores the
//! same artifacts. So a bundle re-checked elsewhere gives the findings the live check gave.

use crate::binary::{GoBuildInfo, LibcInfo};
use crate::parse::conntrack::{parse_stats, ConntrackSummary};
use crate::parse::ip::{parse_addr_json, parse_route_json, parse_rule_json, Link, Route};
use crate::parse::iptables::{
    parse_iptables_save_within, RuleBudget, Ruleset, Service, SourceNatRule,
};
use crate::parse::ipvs::{parse_ipvs, VirtualService};
use crate::parse::netstat::{parse_counters, parse_stat_table, Counters};
use crate::parse::nft::{parse_nft_json, NftRuleset};
use crate::parse::proc_tcp::parse_proc_net_tcp;
use crate::parse::resolver::{
    parse_corefile, parse_hosts, parse_nsswitch, parse_resolv_conf, CorefileUpstream, HostsEntry,
    Nsswitch, ResolvConf,
};
use crate::parse::ss::{parse_ss, Socket};
use crate::parse::sysctl::{parse_sysctls, Sysctls};
use crate::parse::IssueLog;
use crate::probe::ProbeResult;
use netsleuth_core::Diagnostic;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Version of the bundle layout; bump when a path or a manifest field changes meaning.
pub const BUNDLE_SCHEMA: &str = "netsleuth-node-bundle/1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArtifactStatus {
    /// Collected; the bytes are in the bundle.
    Ok,
    /// The file does not exist there (meaningful: e.g. no `/etc/nsswitch.conf` in an image).
    Absent,
    /// Could not be collected (command missing, permission, timeout); `error` says why.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactEntry {
    pub path: String,
    pub status: ArtifactStatus,
    /// The file read or the command run.
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How long reading or running it took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceEntry {
    /// `node`, or `netns-<inode>`.
    pub id: String,
    pub inode: Option<u64>,
    pub is_node: bool,
    /// Some processes in it (at most 16) and their names: who this namespace belongs to.
    pub pids: Vec<u32>,
    pub comms: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootEntry {
    /// `node`, or `root-<pid>` (the first process seen with this root).
    pub id: String,
    pub is_node: bool,
    /// The namespace id its processes use.
    pub netns: Option<String>,
    pub pids: Vec<u32>,
    pub comms: Vec<String>,
    /// Where its files were read (`/`, `/proc/1234/root`).
    pub path: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampleEntry {
    pub index: u32,
    /// Milliseconds since the first sample of the same namespace.
    pub offset_ms: u64,
    pub netns: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub schema: String,
    pub tool: String,
    pub collected_at: String,
    pub collected_at_unix_ms: i64,
    pub hostname: Option<String>,
    pub kernel: Option<String>,
    /// `host`, or `netns <path>` when a namespace was audited as if it were the node.
    pub target: String,
    pub namespaces: Vec<NamespaceEntry>,
    pub roots: Vec<RootEntry>,
    pub samples: Vec<SampleEntry>,
    pub artifacts: Vec<ArtifactEntry>,
}

impl Manifest {
    pub fn artifact(&self, path: &str) -> Option<&ArtifactEntry> {
        self.artifacts.iter().rev().find(|a| a.path == path)
    }
}

/// Raw artifacts by bundle path.
pub type Artifacts = BTreeMap<String, Vec<u8>>;

/// One sample of a namespace's counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CounterSample {
    pub offset_ms: u64,
    /// `/proc/net/netstat` + `/proc/net/snmp` (`TcpExt.ListenOverflows` …).
    pub netstat: Counters,
    /// `/proc/net/stat/rt_cache`, summed over CPUs (`in_martian_src` …).
    pub rt_cache: Counters,
    /// conntrack statistics (`conntrack -S`, else `/proc/net/stat/nf_conntrack`), summed over CPUs.
    pub conntrack: Counters,
    /// `/proc/net/stat/arp_cache` (`entries` as is, the rest summed over CPUs): the host's IPv4
    /// neighbour table, readable only in the initial network namespace.
    pub arp_cache: Counters,
    /// `/proc/net/stat/ndisc_cache`: the host's IPv6 neighbour table, likewise.
    pub ndisc_cache: Counters,
}

#[derive(Debug, Clone, Default)]
pub struct NetnsFacts {
    pub id: String,
    pub inode: Option<u64>,
    pub is_node: bool,
    pub pids: Vec<u32>,
    pub comms: Vec<String>,
    pub sysctls: Option<Sysctls>,
    pub samples: Vec<CounterSample>,
    pub iptables: Option<Ruleset>,
    /// Rules of the legacy x_tables backend, when it holds tables beside nf_tables.
    pub iptables_legacy: Option<Ruleset>,
    pub ip6tables: Option<Ruleset>,
    pub nft: Option<NftRuleset>,
    pub ipvs: Option<Vec<VirtualService>>,
    pub links: Option<Vec<Link>>,
    /// Offload features of the overlay devices (`ethtool -k`); `None` when not collected (no overlay
    /// device, or no ethtool).
    pub offloads: Option<Vec<crate::parse::ethtool::DeviceFeatures>>,
    pub routes: Option<Vec<Route>>,
    pub rules: Option<Vec<String>>,
    pub sockets: Option<Vec<Socket>>,
    pub conntrack: Option<ConntrackSummary>,
    /// This namespace's `/proc/net/arp` rows by state.
    pub arp: Option<crate::parse::neigh::ArpTable>,
    /// This namespace's neighbours by family and state (`ip -j neigh show`).
    pub neighbours: Option<crate::parse::neigh::NeighbourStates>,
    /// Where to enter this namespace on the live node (never stored in a bundle).
    pub live_path: Option<PathBuf>,
    /// [`NetnsFacts::services`], assembled once: detectors ask for the node's Services per namespace,
    /// and on a node with 100 k rules each assembly is tens of milliseconds.
    services_cache: std::sync::OnceLock<Vec<Service>>,
    /// [`NetnsFacts::source_nat_rules`], listed once.
    source_nat_cache: std::sync::OnceLock<Vec<SourceNatRule>>,
}

impl NetnsFacts {
    pub fn sysctl(&self, name: &str) -> Option<&str> {
        self.sysctls.as_ref()?.get(name).map(String::as_str)
    }

    pub fn sysctl_u64(&self, name: &str) -> Option<u64> {
        self.sysctl(name)?.trim().parse().ok()
    }

    /// Every MASQUERADE/SNAT rule of iptables, ip6tables and native nft.
    pub fn source_nat_rules(&self) -> &[SourceNatRule] {
        self.source_nat_cache
            .get_or_init(|| self.list_source_nat_rules())
    }

    fn list_source_nat_rules(&self) -> Vec<SourceNatRule> {
        let mut v = Vec::new();
        let mut add = |s: Vec<SourceNatRule>| {
            if v.is_empty() {
                v = s;
            } else {
                v.extend(s);
            }
        };
        if let Some(r) = &self.iptables {
            add(r.source_nat_rules(&format!("{}/iptables-save.txt", self.prefix())));
        }
        if let Some(r) = &self.iptables_legacy {
            add(r.source_nat_rules(&format!("{}/iptables-legacy-save.txt", self.prefix())));
        }
        if let Some(r) = &self.ip6tables {
            add(r.source_nat_rules(&format!("{}/ip6tables-save.txt", self.prefix())));
        }
        if let Some(r) = &self.nft {
            add(r.source_nat_rules(&format!("{}/nft.json", self.prefix())));
        }
        v
    }

    /// Service VIPs and DNAT destinations programmed in this namespace (iptables, nft, IPVS).
    pub fn services(&self) -> &[Service] {
        self.services_cache.get_or_init(|| self.assemble_services())
    }

    fn assemble_services(&self) -> Vec<Service> {
        let mut v = Vec::new();
        // The first non-empty list is taken as it is, not copied (it can hold 750 k Services).
        let mut add = |s: Vec<Service>| {
            if v.is_empty() {
                v = s;
            } else {
                v.extend(s);
            }
        };
        if let Some(r) = &self.iptables {
            add(r.services());
        }
        if let Some(r) = &self.iptables_legacy {
            add(r.services());
        }
        if let Some(r) = &self.ip6tables {
            add(r.services());
        }
        if let Some(r) = &self.nft {
            add(r.services());
        }
        for vs in self.ipvs.iter().flatten() {
            let (ip, port) = crate::parse::ss::split_endpoint(&vs.address);
            v.push(Service {
                name: format!("ipvs {}", vs.address),
                vip: ip.to_string(),
                port,
                protocol: vs.protocol.clone().into(),
                kind: "ipvs",
                endpoints: vs
                    .real_servers
                    .iter()
                    .map(|r| (r.clone(), 1.0 / vs.real_servers.len().max(1) as f64))
                    .collect(),
            });
        }
        v
    }

    /// Bundle path prefix of this namespace's artifacts.
    pub fn prefix(&self) -> String {
        format!("netns/{}", self.id)
    }

    /// Counter delta between the first and the last sample (`None` with fewer than two samples).
    pub fn delta(
        &self,
        pick: fn(&CounterSample) -> &Counters,
        name: &str,
    ) -> Option<(u64, u64, u64)> {
        let (a, b) = (self.samples.first()?, self.samples.last()?);
        if self.samples.len() < 2 {
            return None;
        }
        let (x, y) = (*pick(a).get(name)?, *pick(b).get(name)?);
        Some((x, y, b.offset_ms.saturating_sub(a.offset_ms)))
    }
}

/// A file that may be absent: absence is a fact, distinct from "not collected".
#[derive(Debug, Clone, PartialEq)]
pub enum Presence<T> {
    Present(T),
    Absent,
    Unknown,
}

impl<T> Presence<T> {
    pub fn as_ref(&self) -> Presence<&T> {
        match self {
            Presence::Present(t) => Presence::Present(t),
            Presence::Absent => Presence::Absent,
            Presence::Unknown => Presence::Unknown,
        }
    }

    pub fn present(&self) -> Option<&T> {
        match self {
            Presence::Present(t) => Some(t),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoBinary {
    /// Where the binary was found (`/proc/PID/exe` → the path inside the root, as the kernel names it).
    pub path: String,
    pub pid: Option<u32>,
    pub info: GoBuildInfo,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RootFacts {
    pub id: String,
    pub is_node: bool,
    pub netns: Option<String>,
    pub pids: Vec<u32>,
    pub comms: Vec<String>,
    pub resolv: Presence<ResolvConf>,
    /// Target of `/etc/resolv.conf` when it is a symlink (systemd-resolved, resolvconf).
    pub resolv_link: Option<String>,
    /// Files that feed `/etc/resolv.conf` (resolvconf's head/base/tail, systemd-resolved's upstream file),
    /// with their nameservers.
    pub resolv_sources: Vec<(String, ResolvConf)>,
    pub nsswitch: Presence<Nsswitch>,
    pub hosts: Presence<Vec<HostsEntry>>,
    pub corefile: Option<Vec<CorefileUpstream>>,
    pub libc: Option<LibcInfo>,
    pub go_binaries: Vec<GoBinary>,
}

impl RootFacts {
    pub fn prefix(&self) -> String {
        format!("root/{}", self.id)
    }

    pub fn describe(&self) -> String {
        if self.is_node {
            "the node".to_string()
        } else {
            let who = self.comms.first().map(String::as_str).unwrap_or("?");
            match self.pids.first() {
                Some(pid) => format!("container {} ({who}, pid {pid})", self.id),
                // A container named by the collector's caller, not found through a process.
                None => format!("container {} ({who})", self.id),
            }
        }
    }
}

/// Everything known about one node.
#[derive(Debug, Clone, Default)]
pub struct NodeFacts {
    pub manifest: Manifest,
    pub kernel: Option<String>,
    /// Loaded kernel modules (`/proc/modules`), when collected.
    pub modules: Option<Vec<String>>,
    pub namespaces: Vec<NetnsFacts>,
    pub roots: Vec<RootFacts>,
    pub probes: Vec<ProbeResult>,
    /// The kernel log's "neighbour table overflow" lines (the last few) and their count; `None` when
    /// the log was not readable (a blind spot, not an error).
    pub kernel_log_overflow: Option<(u64, Vec<String>)>,
    /// Problems with the artifacts themselves: failed collection, lines not understood.
    pub diagnostics: Vec<Diagnostic>,
    pub(crate) artifacts: Artifacts,
}

/// Paths of the artifacts inside a bundle (one place, so the collector and the reader agree).
pub mod paths {
    pub const MANIFEST: &str = "manifest.json";
    pub const KERNEL: &str = "node/kernel-release";
    pub const HOSTNAME: &str = "node/hostname";
    pub const MODULES: &str = "node/modules";
    pub const PROBES: &str = "probes.json";
    /// The kernel log's "neighbour table overflow" lines: a count, then the last few lines.
    pub const KERNEL_LOG_NEIGH: &str = "node/kernel-log-neighbour-overflow.txt";
    /// The pods the node's container runtime knows, with their addresses (`crictl inspectp -o json`
    /// of every sandbox): the Kubernetes names of a bundle's addresses, read on another machine.
    pub const K8S_PODS: &str = "node/k8s-pods.json";
    pub const SYSCTL: &str = "sysctl.txt";
    pub const IPTABLES: &str = "iptables-save.txt";
    pub const IPTABLES_LEGACY: &str = "iptables-legacy-save.txt";
    pub const IP6TABLES: &str = "ip6tables-save.txt";
    pub const NFT: &str = "nft.json";
    pub const IPVS: &str = "ipvsadm.txt";
    pub const ADDR: &str = "ip-addr.json";
    /// `ethtool -k` of the namespace's overlay devices (vxlan, geneve), concatenated.
    pub const ETHTOOL_FEATURES: &str = "ethtool-k.txt";
    pub const ROUTE: &str = "ip-route.json";
    pub const RULE: &str = "ip-rule.json";
    pub const SS: &str = "ss.txt";
    /// `/proc/net/tcp` and `tcp6`, collected only when `ss` is missing.
    pub const PROC_TCP: &str = "proc-net-tcp";
    pub const PROC_TCP6: &str = "proc-net-tcp6";
    pub const CONNTRACK_SUMMARY: &str = "conntrack-summary.json";
    pub const CONNTRACK_HEAD: &str = "conntrack-head.txt";
    pub const NETSTAT: &str = "netstat";
    pub const SNMP: &str = "snmp";
    pub const RT_CACHE: &str = "stat-rt_cache";
    pub const CT_STAT: &str = "stat-nf_conntrack";
    pub const CT_S: &str = "conntrack-S.txt";
    pub const ARP_CACHE: &str = "stat-arp_cache";
    pub const NDISC_CACHE: &str = "stat-ndisc_cache";
    /// `/proc/net/arp` of a namespace.
    pub const PROC_ARP: &str = "proc-net-arp";
    /// `ip -j neigh show` of a namespace (both families, with their states).
    pub const IP_NEIGH: &str = "ip-neigh.json";
    pub const LIBC: &str = "libc.json";
    pub const GO_BINARIES: &str = "go-binaries.json";
    pub const RESOLV_LINK: &str = "resolv.conf.link";
    /// Files read from a root (node or container), relative to it.
    pub const ROOT_FILES: &[&str] = &[
        "etc/resolv.conf",
        "etc/nsswitch.conf",
        "etc/hosts",
        "etc/resolvconf/resolv.conf.d/head",
        "etc/resolvconf/resolv.conf.d/base",
        "etc/resolvconf/resolv.conf.d/tail",
        "etc/resolvconf/resolv.conf.d/original",
        "run/systemd/resolve/resolv.conf",
        "etc/coredns/Corefile",
    ];
    /// The subset of [`ROOT_FILES`] that feed `/etc/resolv.conf`.
    pub const RESOLV_SOURCES: &[&str] = &[
        "etc/resolvconf/resolv.conf.d/head",
        "etc/resolvconf/resolv.conf.d/base",
        "etc/resolvconf/resolv.conf.d/tail",
        "etc/resolvconf/resolv.conf.d/original",
        "run/systemd/resolve/resolv.conf",
    ];
    /// Artifacts of the node as a whole, at the top of the bundle.
    pub const NODE_FILES: &[&str] = &[
        KERNEL,
        HOSTNAME,
        MODULES,
        PROBES,
        K8S_PODS,
        KERNEL_LOG_NEIGH,
    ];
    /// Artifacts of one namespace: `netns/<id>/<name>`.
    pub const NETNS_FILES: &[&str] = &[
        SYSCTL,
        IPTABLES,
        IPTABLES_LEGACY,
        IP6TABLES,
        NFT,
        IPVS,
        ADDR,
        ETHTOOL_FEATURES,
        ROUTE,
        RULE,
        SS,
        PROC_TCP,
        PROC_TCP6,
        CONNTRACK_SUMMARY,
        CONNTRACK_HEAD,
        PROC_ARP,
        IP_NEIGH,
    ];
    /// Artifacts of one counter sample of a namespace: `netns/<id>/sample-<n>/<name>`.
    pub const SAMPLE_FILES: &[&str] = &[
        NETSTAT,
        SNMP,
        RT_CACHE,
        CT_STAT,
        CT_S,
        ARP_CACHE,
        NDISC_CACHE,
    ];
    /// What is recorded about a root besides its [`ROOT_FILES`]: `root/<id>/<name>`.
    pub const ROOT_FACTS: &[&str] = &[RESOLV_LINK, LIBC, GO_BINARIES];

    /// Whether `path` is a place of the bundle layout (this module's paths under their namespace, sample
    /// and root directories). The bundle reader keeps only these: anything else is skipped unread.
    pub fn is_layout_member(path: &str) -> bool {
        // One path segment: a namespace or root id, as the collector names them.
        let id = |s: &str| !s.is_empty() && s != "." && s != "..";
        if path == MANIFEST || NODE_FILES.contains(&path) {
            return true;
        }
        if let Some(rest) = path.strip_prefix("netns/") {
            let Some((ns, file)) = rest.split_once('/') else {
                return false;
            };
            if !id(ns) {
                return false;
            }
            if NETNS_FILES.contains(&file) {
                return true;
            }
            return file.split_once('/').is_some_and(|(sample, name)| {
                sample
                    .strip_prefix("sample-")
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                    && SAMPLE_FILES.contains(&name)
            });
        }
        if let Some(rest) = path.strip_prefix("root/") {
            return rest.split_once('/').is_some_and(|(root, file)| {
                id(root) && (ROOT_FILES.contains(&file) || ROOT_FACTS.contains(&file))
            });
        }
        false
    }
}

struct Reader<'a> {
    manifest: &'a Manifest,
    artifacts: &'a Artifacts,
    diagnostics: Vec<Diagnostic>,
    /// Shared by every ruleset of the bundle.
    rule_budget: RuleBudget,
}

impl Reader<'_> {
    fn text(&self, path: &str) -> Option<String> {
        self.artifacts
            .get(path)
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }

    fn status(&self, path: &str) -> Option<ArtifactStatus> {
        self.manifest.artifact(path).map(|a| a.status).or_else(|| {
            self.artifacts
                .contains_key(path)
                .then_some(ArtifactStatus::Ok)
        })
    }

    fn note(&mut self, path: &str, issues: &IssueLog) {
        if issues.is_empty() {
            return;
        }
        let first = &issues.first[0];
        let by: Vec<String> = issues
            .by_code
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        self.diagnostics.push(Diagnostic {
            source: path.to_string(),
            code: "unparsed-input",
            offset: None,
            frame: None,
            line: (first.line > 0).then_some(first.line),
            count: issues.total,
            message: format!(
                "{} item(s) not understood ({}); first at line {}: {}",
                issues.total,
                by.join(", "),
                first.line,
                first.text
            ),
        });
    }

    fn parse<T>(
        &mut self,
        path: &str,
        f: impl FnOnce(&str) -> crate::parse::Parsed<T>,
    ) -> Option<T> {
        // Borrowed when the bytes are UTF-8 (they are, but for damage): a big ruleset is not copied.
        let artifacts = self.artifacts;
        let text = String::from_utf8_lossy(artifacts.get(path)?);
        let p = f(&text);
        self.note(path, &p.issues);
        Some(p.value)
    }

    /// An `iptables-save` artifact, within the bundle's rule budget: what is past it is named.
    fn rules(&mut self, path: &str) -> Option<Ruleset> {
        let mut budget = self.rule_budget;
        let rs = self.parse(path, |t| parse_iptables_save_within(t, &mut budget))?;
        self.rule_budget = budget;
        if let Some(o) = &rs.overflow {
            self.diagnostics.push(Diagnostic {
                source: path.to_string(),
                code: "rule-budget",
                offset: None,
                frame: None,
                line: Some(o.line),
                count: o.rules,
                message: o.message(path),
            });
        }
        Some(rs)
    }

    fn json<T: for<'de> Deserialize<'de>>(&mut self, path: &str) -> Option<T> {
        let bytes = self.artifacts.get(path)?;
        match serde_json::from_slice(bytes) {
            Ok(v) => Some(v),
            Err(e) => {
                self.diagnostics.push(Diagnostic {
                    source: path.to_string(),
                    code: "bad-json",
                    offset: None,
                    frame: None,
                    line: Some(e.line() as u64),
                    count: 1,
                    message: format!("cannot read {path}: {e}"),
                });
                None
            }
        }
    }

    fn presence<T>(
        &mut self,
        path: &str,
        f: impl Fn(&str) -> crate::parse::Parsed<T>,
    ) -> Presence<T> {
        match self.status(path) {
            Some(ArtifactStatus::Absent) => Presence::Absent,
            Some(ArtifactStatus::Ok) => self
                .parse(path, f)
                .map(Presence::Present)
                .unwrap_or(Presence::Unknown),
            _ => Presence::Unknown,
        }
    }
}

impl NodeFacts {
    /// Parses a collection's artifacts. Never fails: what cannot be read becomes a diagnostic.
    pub fn from_artifacts(manifest: Manifest, artifacts: Artifacts) -> NodeFacts {
        let mut r = Reader {
            manifest: &manifest,
            artifacts: &artifacts,
            diagnostics: Vec::new(),
            rule_budget: RuleBudget::default(),
        };
        for a in &manifest.artifacts {
            if a.status == ArtifactStatus::Failed {
                r.diagnostics.push(Diagnostic {
                    source: a.path.clone(),
                    code: "collect-failed",
                    offset: None,
                    frame: None,
                    line: None,
                    count: 1,
                    message: format!(
                        "{} ({}): {}",
                        a.path,
                        a.source,
                        a.error.as_deref().unwrap_or("failed")
                    ),
                });
            }
        }
        let kernel = r
            .text(paths::KERNEL)
            .map(|s| s.trim().to_string())
            .or_else(|| manifest.kernel.clone());
        let modules = r.text(paths::MODULES).map(|t| {
            t.lines()
                .filter_map(|l| l.split_whitespace().next().map(str::to_string))
                .collect()
        });
        let mut namespaces = Vec::new();
        for ns in &manifest.namespaces {
            let pre = format!("netns/{}", ns.id);
            let p = |name: &str| format!("{pre}/{name}");
            let mut samples = Vec::new();
            for s in manifest.samples.iter().filter(|s| s.netns == ns.id) {
                let sp = |name: &str| format!("{pre}/sample-{}/{name}", s.index);
                let mut netstat = r
                    .parse(&sp(paths::NETSTAT), parse_counters)
                    .unwrap_or_default();
                netstat.extend(
                    r.parse(&sp(paths::SNMP), parse_counters)
                        .unwrap_or_default(),
                );
                let rt_cache = r
                    .parse(&sp(paths::RT_CACHE), parse_stat_table)
                    .unwrap_or_default();
                let conntrack = r
                    .parse(&sp(paths::CT_S), parse_stats)
                    .filter(|c| !c.is_empty())
                    .or_else(|| r.parse(&sp(paths::CT_STAT), parse_stat_table))
                    .unwrap_or_default();
                let arp_cache = r
                    .parse(&sp(paths::ARP_CACHE), parse_stat_table)
                    .unwrap_or_default();
                let ndisc_cache = r
                    .parse(&sp(paths::NDISC_CACHE), parse_stat_table)
                    .unwrap_or_default();
                samples.push(CounterSample {
                    offset_ms: s.offset_ms,
                    netstat,
                    rt_cache,
                    conntrack,
                    arp_cache,
                    ndisc_cache,
                });
            }
            let conntrack = r.json::<ConntrackSummary>(&p(paths::CONNTRACK_SUMMARY));
            if let Some(c) = &conntrack {
                let issues = c.issues.clone();
                r.note(&p(paths::CONNTRACK_SUMMARY), &issues);
            }
            let ipvs = r.parse(&p(paths::IPVS), parse_ipvs);
            namespaces.push(NetnsFacts {
                id: ns.id.clone(),
                inode: ns.inode,
                is_node: ns.is_node,
                pids: ns.pids.clone(),
                comms: ns.comms.clone(),
                sysctls: r.parse(&p(paths::SYSCTL), parse_sysctls),
                samples,
                iptables: r.rules(&p(paths::IPTABLES)),
                iptables_legacy: r.rules(&p(paths::IPTABLES_LEGACY)),
                ip6tables: r.rules(&p(paths::IP6TABLES)),
                nft: r.parse(&p(paths::NFT), parse_nft_json),
                ipvs,
                links: r.parse(&p(paths::ADDR), parse_addr_json),
                offloads: r.parse(
                    &p(paths::ETHTOOL_FEATURES),
                    crate::parse::ethtool::parse_ethtool_features,
                ),
                routes: r.parse(&p(paths::ROUTE), parse_route_json),
                rules: r.parse(&p(paths::RULE), parse_rule_json),
                sockets: r.parse(&p(paths::SS), parse_ss).or_else(|| {
                    let v4 = r.parse(&p(paths::PROC_TCP), parse_proc_net_tcp)?;
                    let v6 = r
                        .parse(&p(paths::PROC_TCP6), parse_proc_net_tcp)
                        .unwrap_or_default();
                    Some(v4.into_iter().chain(v6).collect())
                }),
                conntrack,
                arp: r.parse(&p(paths::PROC_ARP), crate::parse::neigh::parse_proc_net_arp),
                neighbours: r.parse(
                    &p(paths::IP_NEIGH),
                    crate::parse::neigh::parse_ip_neigh_json,
                ),
                live_path: None,
                services_cache: Default::default(),
                source_nat_cache: Default::default(),
            });
        }
        let mut roots = Vec::new();
        for root in &manifest.roots {
            let pre = format!("root/{}", root.id);
            let p = |name: &str| format!("{pre}/{name}");
            let mut resolv_sources = Vec::new();
            for src in paths::RESOLV_SOURCES {
                if let Some(rc) = r.parse(&p(src), parse_resolv_conf) {
                    resolv_sources.push((format!("/{src}"), rc));
                }
            }
            roots.push(RootFacts {
                id: root.id.clone(),
                is_node: root.is_node,
                netns: root.netns.clone(),
                pids: root.pids.clone(),
                comms: root.comms.clone(),
                resolv: r.presence(&p("etc/resolv.conf"), parse_resolv_conf),
                resolv_link: r.text(&p(paths::RESOLV_LINK)).map(|s| s.trim().to_string()),
                resolv_sources,
                nsswitch: r.presence(&p("etc/nsswitch.conf"), parse_nsswitch),
                hosts: r.presence(&p("etc/hosts"), parse_hosts),
                corefile: r.parse(&p("etc/coredns/Corefile"), parse_corefile),
                libc: r.json(&p(paths::LIBC)),
                go_binaries: r.json(&p(paths::GO_BINARIES)).unwrap_or_default(),
            });
        }
        let probes = r.json(paths::PROBES).unwrap_or_default();
        let kernel_log_overflow = r.text(paths::KERNEL_LOG_NEIGH).map(|t| {
            let mut lines = t.lines();
            let count = lines
                .next()
                .and_then(|l| l.trim().strip_prefix("count "))
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0);
            (count, lines.map(str::to_string).collect())
        });
        let diagnostics = r.diagnostics;
        NodeFacts {
            kernel,
            modules,
            namespaces,
            roots,
            probes,
            kernel_log_overflow,
            diagnostics,
            manifest,
            artifacts,
        }
    }

    pub fn node_netns(&self) -> Option<&NetnsFacts> {
        self.namespaces.iter().find(|n| n.is_node)
    }

    pub fn node_root(&self) -> Option<&RootFacts> {
        self.roots.iter().find(|r| r.is_node)
    }

    pub fn netns(&self, id: &str) -> Option<&NetnsFacts> {
        self.namespaces.iter().find(|n| n.id == id)
    }

    /// The raw artifacts (what `write_bundle` stores).
    pub fn artifacts(&self) -> &Artifacts {
        &self.artifacts
    }

    /// The text of one artifact, if collected.
    pub fn artifact_text(&self, path: &str) -> Option<String> {
        self.artifacts
            .get(path)
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }
}

//! Node facts that sharpen what a capture alone can say (`analyze --node BUNDLE`).
//!
//! The `netsleuth-node` crate builds this from a live node or a bundle; the core only reads it. Every
//! field is optional knowledge: an empty `NodeContext` means "capture only".

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// A Service as kube-proxy programmed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInfo {
    /// `namespace/name:port` as kube-proxy's comment says, or the chain name.
    pub name: String,
    pub vip: IpAddr,
    pub port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
    pub endpoints: Vec<(IpAddr, u16)>,
}

/// The resolver stack of one container (or of the node): what decides how its DNS queries look.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResolverStack {
    /// `container <id> (<comm>, pid N)` or `the node`.
    pub name: String,
    /// `musl`, `glibc`, `none`.
    pub libc: Option<String>,
    pub libc_version: Option<String>,
    /// Where the libc answer came from.
    pub libc_evidence: String,
    pub has_nsswitch_conf: bool,
    /// Go versions (`go1.15.6`) of the Go programs running there, with their paths.
    pub go_programs: Vec<(String, String)>,
}

/// Serialisable so that a lab run (and a bundle) can hand it over as `facts.json`; unknown fields are
/// ignored and missing ones default, so older and newer files still read.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeContext {
    /// Where these facts came from (bundle path or `live`).
    pub source: String,
    pub kernel_release: Option<String>,
    /// net.* sysctls, by dotted name.
    pub sysctls: BTreeMap<String, String>,
    pub services: Vec<ServiceInfo>,
    /// Addresses of the node itself (all namespaces' `local` tables are not included).
    pub local_addrs: Vec<IpAddr>,
    /// Addresses that are in table `local` on a kube-ipvs0-like dummy device (LB IPs, ClusterIPs).
    pub ipvs_bound_addrs: Vec<IpAddr>,
    /// `nameserver` lines of the node's resolv.conf.
    pub nameservers: Vec<IpAddr>,
    /// Names that the client's /etc/hosts answers (from a bundle's container, or `--hosts FILE`).
    pub hosts: Vec<(IpAddr, String)>,
    /// Resolver stacks of the node and its containers.
    pub resolvers: Vec<ResolverStack>,
    /// Whether some MASQUERADE/SNAT rule lacks --random-fully, with the rule text.
    pub masquerade_without_random_fully: Vec<String>,
    /// `net.ipv4.ip_local_port_range` of each namespace (the node's and its pods') by the addresses it
    /// holds: the source ports a client with that address picks from (first, last).
    pub local_port_ranges: Vec<(IpAddr, u16, u16)>,
    /// Overlay devices (vxlan, geneve) of the node and their tx checksum offload, as `ethtool -k` shows
    /// it: `flannel.1 (vxlan): tx-checksum-ip-generic on`.
    pub overlay_tx_checksum_offload: Vec<String>,
    /// The neighbour (ARP/NDISC) tables as the node showed them; `None` when they were not read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub neighbour_table: Option<NeighbourTable>,
}

/// What node facts say of the neighbour tables. The tables and their limits (`gc_thresh1/2/3`) are
/// host-wide: only the initial network namespace shows them whole.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NeighbourTable {
    /// IPv4 entries: the host's (`/proc/net/stat/arp_cache`) when `host_wide`, else the rows of one
    /// namespace's `/proc/net/arp` (a lower bound of the host's).
    pub ipv4_entries: Option<u64>,
    /// IPv6 entries (`/proc/net/stat/ndisc_cache`, host-wide only).
    pub ipv6_entries: Option<u64>,
    pub host_wide: bool,
    /// `table_fulls` of both tables since boot: neighbours the kernel refused to create.
    pub table_fulls: Option<u64>,
    /// Kernel log lines "neighbour table overflow"; `None` when the log was not readable.
    pub overflow_log_lines: Option<u64>,
}

impl NodeContext {
    pub fn sysctl(&self, name: &str) -> Option<&str> {
        self.sysctls.get(name).map(String::as_str)
    }

    /// The ephemeral port range of the namespace holding `ip`, when the facts know it.
    pub fn local_port_range(&self, ip: IpAddr) -> Option<(u16, u16)> {
        self.local_port_ranges
            .iter()
            .find(|(a, _, _)| *a == ip)
            .map(|(_, lo, hi)| (*lo, *hi))
    }

    pub fn service_for(&self, ip: IpAddr, port: u16) -> Option<&ServiceInfo> {
        self.services.iter().find(|s| s.vip == ip && s.port == port)
    }
}

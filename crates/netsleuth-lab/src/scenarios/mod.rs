//! One module per scenario. Each declares its scene (`crate::scene`), adds what setup is its own,
//! drives its traffic with real sockets once the scene records, and judges what the application saw.
//!
//! Addresses (inside the lab's namespaces only): node pods 10.244.1.0/24 on the node's cni0, remote
//! pods 10.244.2.0/24, node 192.168.50.10 ↔ remote node 192.168.50.20, ClusterIPs 10.96.0.0/16.

use crate::error::Result;
use crate::lab::Lab;
use crate::scene::{Recorded, Scene};
use crate::{Reproduction, ScenarioInfo};
use netsleuth_core::detect as core;

mod bridge_nf_bypass;
mod conntrack_dnat_rebalance;
mod conntrack_invalid_reset;
mod conntrack_snat_remap;
mod conntrack_table_full;
mod dns_conntrack_race;
mod dns_id_collision;
mod dns_ndots_amplification;
mod dns_truncation_fallback;
mod dns_upstream_unreachable;
mod ephemeral_port_exhaustion;
mod go_resolver_dns_first;
mod hairpin_off;
mod healthy;
mod idle_timeout_reset;
mod ipvs_conn_reuse;
mod listen_queue_overflow;
mod local_source_drop;
mod neighbour_table_overflow;
mod overlay_mtu_blackhole;
mod rp_filter_drop;
mod snat_port_clash;
mod stale_udp_conntrack;
mod timewait_paws_reject;
mod tw_recycle_paws;
mod vxlan_checksum_offload;

pub static INFOS: &[ScenarioInfo] = &[
    ScenarioInfo {
        name: core::conntrack_snat_remap::INCIDENT.id,
        incident: Some(&core::conntrack_snat_remap::INCIDENT),
        run: conntrack_snat_remap::run,
        reproduction: Reproduction::Emulated {
            why: "kernels before 4.14.155/4.19.85 (before 097f95d319f8) flushed every MASQUERADE conntrack entry of a device when any address of it was deleted; this kernel deletes only the entries of the deleted address.",
            how: "deletes the device's masqueraded conntrack entries itself (conntrack -D --src-nat) right after RTM_DELADDR, as the old kernel did; everything else (MASQUERADE --random-fully, the new SNAT port, the server's RST) is the running kernel's own behaviour.",
        },
        summary: "a pod's long connection through the node's MASQUERADE loses its conntrack entry when a keepalived VIP is removed from eth0; its next segment leaves with a new source port and the server resets it",
        mitigation: "a kernel with 097f95d319f8 (only the deleted address's entries go): the lab leaves conntrack alone, as this kernel does",
    },
    ScenarioInfo {
        name: core::conntrack_dnat_rebalance::INCIDENT.id,
        incident: Some(&core::conntrack_dnat_rebalance::INCIDENT),
        run: conntrack_dnat_rebalance::run,
        reproduction: Reproduction::Native {
            how: "nf_conntrack_tcp_timeout_established is set to 2 s inside the lab's node namespace; idle connections to a two-backend ClusterIP outlive their entries and their next segment is DNATed afresh by -m statistic.",
        },
        summary: "idle connections to a ClusterIP outlive their conntrack entries; the next segment goes to the other backend, which answers RST (ECONNRESET)",
        mitigation: "TCP keepalive (idle 1 s) shorter than the conntrack timeout keeps the entries alive",
    },
    ScenarioInfo {
        name: core::bridge_nf_bypass::INCIDENT.id,
        incident: Some(&core::bridge_nf_bypass::INCIDENT),
        run: bridge_nf_bypass::run,
        reproduction: Reproduction::Native {
            how: "net.bridge.bridge-nf-call-iptables=0 inside the lab's node namespace (per namespace on this kernel); client and backend pods share cni0.",
        },
        summary: "a pod connects to a ClusterIP whose backend is on the same bridge; the SYN-ACK is bridged back without reverse NAT, from the backend's pod IP, and the client resets it",
        mitigation: "net.bridge.bridge-nf-call-iptables=1 in the node namespace",
    },
    ScenarioInfo {
        name: core::tw_recycle_paws::INCIDENT.id,
        incident: Some(&core::tw_recycle_paws::INCIDENT),
        run: tw_recycle_paws::run,
        reproduction: Reproduction::Emulated {
            why: "net.ipv4.tcp_tw_recycle was removed in 4.12; this kernel has no per-host PAWS check on SYNs.",
            how: "emulates the old server's check with an nft rule on the server node, installed when the server closes a connection first: SYNs from that peer IP whose TSval is behind the last TSval seen from it (within 60 s) are dropped silently. Two client pods with different timestamp clocks (this kernel's per-address TS offsets) share the node IP through MASQUERADE.",
        },
        summary: "two pods behind the node's SNAT reach a server with tcp_tw_recycle=1; the pod whose timestamp clock is behind gets its SYNs dropped and its connect times out",
        mitigation: "tcp_tw_recycle=0 (the emulated PAWS rule is not installed)",
    },
    ScenarioInfo {
        name: core::snat_port_clash::INCIDENT.id,
        incident: Some(&core::snat_port_clash::INCIDENT),
        run: snat_port_clash::run,
        reproduction: Reproduction::Native {
            how: "pods connect simultaneously, all from the same source port, through SNAT to a --to-source range of two ports (two pods per round, three pods taking turns); conntrack insertion fails (insert_failed, drop) and the SYN is retransmitted a second later.",
        },
        summary: "concurrent SYNs from several pods get the same SNAT tuple; the losers' conntrack inserts fail, their SYNs are dropped and retransmitted ~1 s later",
        mitigation: "SNAT with the full port range and --random-fully",
    },
    ScenarioInfo {
        name: core::dns_conntrack_race::INCIDENT.id,
        incident: Some(&core::dns_conntrack_race::INCIDENT),
        run: dns_conntrack_race::run,
        reproduction: Reproduction::Emulated {
            why: "this kernel resolves the A/AAAA conntrack race (clash_resolve rises) and loses no reply; kernels before 5.0 dropped one of the two queries at conntrack insert.",
            how: "drops, in the node's prerouting, the second query of a same-socket pair to the DNS ClusterIP that arrives within 100 ms of the first (an nft set with a timeout), so the query enters the node and is never forwarded — the old kernels' wire picture; the glibc-like client then waits its 5 s timeout and re-sends.",
        },
        summary: "A and AAAA from one UDP socket race through DNAT to the DNS ClusterIP; one is lost and the lookup takes 5 s",
        mitigation: "options single-request-reopen in the pod's resolv.conf (each query from its own socket, one after the other)",
    },
    ScenarioInfo {
        name: core::go_resolver_dns_first::INCIDENT.id,
        incident: Some(&core::go_resolver_dns_first::INCIDENT),
        run: go_resolver_dns_first::run,
        reproduction: Reproduction::Emulated {
            why: "Go ≥ 1.16 reads /etc/hosts first even without /etc/nsswitch.conf (golang/go#35305), and no Go toolchain is needed for the lab.",
            how: "runs a resolver that follows Go 1.15's pure-Go lookup order (hostLookupDNSFiles without nsswitch.conf, the search list, A and AAAA from separate sockets) in a pod whose /etc/hosts (written in the run directory) has the name.",
        },
        summary: "a Go < 1.16 program in an image without /etc/nsswitch.conf asks DNS for a name its /etc/hosts answers",
        mitigation: "an /etc/nsswitch.conf with `hosts: files dns` in the image",
    },
    ScenarioInfo {
        name: core::dns_upstream_unreachable::INCIDENT.id,
        incident: Some(&core::dns_upstream_unreachable::INCIDENT),
        run: dns_upstream_unreachable::run,
        reproduction: Reproduction::Native {
            how: "the node's resolv.conf (in the run directory) lists a dead nameserver first; a CoreDNS-like forwarder in the DNS pod (forward . /etc/resolv.conf, round robin, 2 s upstream timeout) waits on it.",
        },
        summary: "a nameserver left in the node's resolv.conf never answers; the DNS forwarder's queries to it time out and lookups through it take 2 s",
        mitigation: "the dead nameserver removed from the node's resolv.conf",
    },
    ScenarioInfo {
        name: core::dns_id_collision::INCIDENT.id,
        incident: Some(&core::dns_id_collision::INCIDENT),
        run: dns_id_collision::run,
        reproduction: Reproduction::Emulated {
            why: "musl 1.2.3 derives the query ID from the clock, so on a coarse clock the A and AAAA queries share an ID; no musl binary is needed for the lab.",
            how: "runs a resolver that builds IDs as musl 1.2.3 does, reading CLOCK_REALTIME_COARSE, and matches answers by ID only as musl's __res_msend_rc does; the DNS server answers AAAA before A.",
        },
        summary: "A and AAAA leave one socket with the same DNS ID; the AAAA (NODATA) answer arrives first and is taken for the A answer: the name does not resolve",
        mitigation: "musl ≥ 1.2.4 (distinct IDs for the two queries)",
    },
    ScenarioInfo {
        name: core::listen_queue_overflow::INCIDENT.id,
        incident: Some(&core::listen_queue_overflow::INCIDENT),
        run: listen_queue_overflow::run,
        reproduction: Reproduction::Native {
            how: "a server pod listens with backlog 2 and does not accept; a burst of 20 connects overflows its accept queue (ListenOverflows/ListenDrops in the server pod's namespace).",
        },
        summary: "a burst of connects overflows a listener's accept queue; SYNs are dropped and retransmitted, probes time out",
        mitigation: "a listen backlog (128) larger than the burst",
    },
    ScenarioInfo {
        name: core::local_source_drop::INCIDENT.id,
        incident: Some(&core::local_source_drop::INCIDENT),
        run: local_source_drop::run,
        reproduction: Reproduction::Native {
            how: "the LoadBalancer IP is bound to a dummy kube-ipvs0 in the node namespace (so it is in table local) with accept_local=0; the LB's health checks come from that IP to the NodePort.",
        },
        summary: "health checks whose source is the LB IP reach the NodePort; the node owns that IP (kube-ipvs0) and drops them as martian",
        mitigation: "the LB IP not bound to kube-ipvs0 (kubernetes#79783's --exclude-external-ip): on this kernel deleting only its table-local route is not enough, as source validation also checks interface addresses when rp_filter=0",
    },
    ScenarioInfo {
        name: core::conntrack_table_full::INCIDENT.id,
        incident: Some(&core::conntrack_table_full::INCIDENT),
        run: conntrack_table_full::run,
        reproduction: Reproduction::Native {
            how: "nf_conntrack_max is the host's value and read-only in a child namespace, but the count is per namespace: the lab fills the node namespace's own table up to that max with assured UDP entries between documentation addresses (198.18.0.0/15), inserted over ctnetlink as `conntrack -I --status ASSURED` would; early_drop finds nothing to evict, so the kernel refuses new flows (drop rises, \"nf_conntrack: table full, dropping packet\").",
        },
        summary: "with the node's conntrack table full, a pod's new connections to two backends and a ClusterIP time out while its existing connection to one of them keeps working",
        mitigation: "a table with room for the load: the fill stops at 70 % of nf_conntrack_max (the same entries on a table 1.4× larger, which is what raising nf_conntrack_max gives; a child namespace cannot raise it)",
    },
    ScenarioInfo {
        name: core::conntrack_invalid_reset::INCIDENT.id,
        incident: Some(&core::conntrack_invalid_reset::INCIDENT),
        run: conntrack_invalid_reset::run,
        reproduction: Reproduction::Native {
            how: "a pod's connection to a ClusterIP whose backend is on the other node; the node has nf_conntrack_tcp_be_liberal=0 and, as kube-proxy before 1.15, no INVALID drop in KUBE-FORWARD. The backend's namespace sends one segment of the connection 1 GiB past its window (standing for a late retransmission after heavy loss; its ACK read from the backend's eth0); the node's conntrack marks it INVALID, reverse NAT skips it, and the client's RST to the pod address resets the backend — all the running kernel's doing.",
        },
        summary: "one out-of-window reply of an established Service connection skips reverse NAT; the client resets the pod address and the connection dies (ECONNRESET)",
        mitigation: "`-m conntrack --ctstate INVALID -j DROP` in KUBE-FORWARD (kube-proxy ≥ 1.15): the stray segment is dropped on the node",
    },
    ScenarioInfo {
        name: core::stale_udp_conntrack::INCIDENT.id,
        incident: Some(&core::stale_udp_conntrack::INCIDENT),
        run: stale_udp_conntrack::run,
        reproduction: Reproduction::Native {
            how: "a client pod queries the kube-dns ClusterIP from one long-lived UDP socket; the DNS pod behind it is deleted (its eth0 goes down) and the Service's rules are rewritten to a new DNS pod, as kube-proxy does, without deleting the Service's UDP conntrack entries (the missed cleanup of kubernetes #19029/#125467): the socket's entry keeps DNATing to the old address.",
        },
        summary: "a long-lived UDP socket's queries to a DNS Service stay pinned by conntrack to a deleted pod and are never answered, while a new socket's are",
        mitigation: "the Service's UDP conntrack entries toward the removed pod are deleted (`conntrack -D -p udp --orig-dst VIP --reply-src OLD`), as kube-proxy does on an endpoint change",
    },
    ScenarioInfo {
        name: core::idle_timeout_reset::INCIDENT.id,
        incident: Some(&core::idle_timeout_reset::INCIDENT),
        run: idle_timeout_reset::run,
        reproduction: Reproduction::Emulated {
            why: "a cloud load balancer (Azure LB 4 min, AWS NLB 350 s idle timeouts) is not in the lab, and minutes of idleness do not fit a test run.",
            how: "makes the remote node a load balancer: 203.0.113.10:443 DNATed to a backend pod, its own conntrack forgetting established flows after 3 s with nf_conntrack_tcp_loose=0, so a segment after the idle time reaches the balancer's own address and its kernel answers RST, as AWS NLB, NAT gateway and Azure LB with TCP reset do; the client's node and pod are untouched.",
        },
        summary: "a pod's connection through a load balancer outside the cluster idles past the balancer's timeout; the balancer resets the next segment (ECONNRESET)",
        mitigation: "TCP keepalive (idle 1 s) shorter than the balancer's idle timeout",
    },
    ScenarioInfo {
        name: core::dns_ndots_amplification::INCIDENT.id,
        incident: Some(&core::dns_ndots_amplification::INCIDENT),
        run: dns_ndots_amplification::run,
        reproduction: Reproduction::Native {
            how: "the client pod's resolver walks its search list as glibc's getaddrinfo does (ndots:5, four search domains, A and AAAA from one socket per candidate); the DNS pod answers names under the node's own search domain 1.2 s late, as CoreDNS forwarding them to a slow upstream does.",
        },
        summary: "with ndots:5 every external name is asked under four search domains first (8 NXDOMAIN queries per lookup); the node's search domain answers slowly, so every external lookup waits 1.2 s",
        mitigation: "external names written as FQDNs with a trailing dot (api.example.com.): 2 queries per lookup, no walk",
    },
    ScenarioInfo {
        name: core::hairpin_off::INCIDENT.id,
        incident: Some(&core::hairpin_off::INCIDENT),
        run: hairpin_off::run,
        reproduction: Reproduction::Native {
            how: "bridge-nf-call-iptables=1 in the node namespace and hairpin off on the client pod's cni0 port; the client pod is one of the two backends of the ClusterIP it calls, so DNAT sends about half of its connects to itself.",
        },
        summary: "a pod that backs a Service connects to it; when DNAT picks the pod itself the bridge drops the frame (hairpin off) and the connect times out, while another pod reaches the Service",
        mitigation: "hairpin on for the pod's bridge port (kubelet --hairpin-mode=hairpin-veth)",
    },
    ScenarioInfo {
        name: core::rp_filter_drop::INCIDENT.id,
        incident: Some(&core::rp_filter_drop::INCIDENT),
        run: rp_filter_drop::run,
        reproduction: Reproduction::Native {
            how: "the node namespace has two links to the remote node and rp_filter=1 (all and eth1); a client address behind the remote node is routed back via eth0 but connects to the node's eth1 address, arriving on eth1.",
        },
        summary: "connects that arrive on eth1 from a source whose route back is eth0 are dropped by strict reverse-path filtering (IPReversePathFilter rises); the same source over eth0 and eth1's own subnet are answered",
        mitigation: "loose reverse-path filtering (rp_filter=2 on all and eth1)",
    },
    ScenarioInfo {
        name: core::dns_truncation_fallback::INCIDENT.id,
        incident: Some(&core::dns_truncation_fallback::INCIDENT),
        run: dns_truncation_fallback::run,
        reproduction: Reproduction::Native {
            how: "the DNS pod answers a name with forty A records over UDP truncated (TC=1, as BIND and CoreDNS do past 512 bytes) and in full over TCP; the kube-dns Service exposes 53/udp only, so the client's TCP retry to the ClusterIP is not DNATed and is lost (a blackhole route for the Service range stands for the upstream that drops it). The client re-asks over TCP as glibc does; the lab gives its TCP connect 2 s.",
        },
        summary: "a DNS answer too large for UDP comes back truncated; the client's retry over TCP goes to a Service port that does not exist and the lookup fails",
        mitigation: "53/tcp in the kube-dns Service: the truncated answer is re-asked over TCP and answered",
    },
    ScenarioInfo {
        name: core::overlay_mtu_blackhole::INCIDENT.id,
        incident: Some(&core::overlay_mtu_blackhole::INCIDENT),
        run: overlay_mtu_blackhole::run,
        reproduction: Reproduction::Native {
            how: "the two nodes route pod traffic through a VXLAN device (flannel.1, UDP 8472, MTU 1450) while the pods keep MTU 1500; an nft rule in the server's node drops the ICMP fragmentation-needed it sends (a firewall dropping ICMP). The node view (node.pcap, the bundle) is the server's node.",
        },
        summary: "a pod's request to a pod on the other node goes through; the full-size segments of the response do not fit the overlay and the ICMP that would say so is dropped: the response stalls",
        mitigation: "ICMP fragmentation-needed let through: the server's path MTU adapts to the overlay (the lasting fix is the pods' MTU = underlay − 50, the CNI's mtu setting)",
    },
    ScenarioInfo {
        name: core::timewait_paws_reject::INCIDENT.id,
        incident: Some(&core::timewait_paws_reject::INCIDENT),
        run: timewait_paws_reject::run,
        reproduction: Reproduction::Native {
            how: "two pods leave through the node's SNAT with one address and port (--to-source NODE_IP:40000) to a server that closes first; the node's conntrack forgets closed connections after 1 s (nf_conntrack_tcp_timeout_time_wait=1 in the node namespace, as a NAT gateway that reuses ports within the server's 60 s TIME_WAIT), so the pods' connections share one 4-tuple; their timestamp clocks differ (per address pair offsets) and the server's TIME_WAIT rejects the SYN whose TSval is behind (PAWSEstab) with a bare ACK.",
        },
        summary: "pods behind one SNAT address:port reach a server that closes first; a SYN with an older timestamp meets the server's TIME_WAIT, gets a bare ACK, is reset by the pod and retried after 1 s",
        mitigation: "SNAT over the full port range with --random-fully and conntrack's default TIME_WAIT timeout (120 s): no source port is reused while the server holds TIME_WAIT",
    },
    ScenarioInfo {
        name: core::ephemeral_port_exhaustion::INCIDENT.id,
        incident: Some(&core::ephemeral_port_exhaustion::INCIDENT),
        run: ephemeral_port_exhaustion::run,
        reproduction: Reproduction::Native {
            how: "the client pod's namespace has net.ipv4.ip_local_port_range 40000 40009 (10 ports); it makes 14 one-connection requests to one server and closes each first, so each 4-tuple stays in its TIME_WAIT and connect() fails with EADDRNOTAVAIL once the ten are taken.",
        },
        summary: "a pod opens and closes (client first) one connection per request to one server; its ten-port ip_local_port_range fills with TIME_WAIT and connect() fails with EADDRNOTAVAIL",
        mitigation: "the default ip_local_port_range (32768 60999) in the pod's namespace",
    },
    ScenarioInfo {
        name: core::ipvs_conn_reuse::INCIDENT.id,
        incident: Some(&core::ipvs_conn_reuse::INCIDENT),
        run: ipvs_conn_reuse::run,
        reproduction: Reproduction::Emulated {
            why: "this kernel has no IPVS module, and since 5.9 IPVS no longer drops the first SYN of a reused port (\"ipvs: allow connection reuse for unconfirmed conntrack\"); kernels before 5.9 with conn_reuse_mode=1 and vs/conntrack=1 did.",
            how: "serves the ClusterIP with kube-proxy-style DNAT, binds it on a kube-ipvs0 dummy, and plays the old IPVS drop with an nft rule in the node's prerouting before conntrack: a SYN to the ClusterIP from an address:port seen toward it within 120 s (IPVS's TIME_WAIT) is dropped once and its retransmission passes. The client pod reuses one source port (the backends close first) between connects from fresh ports.",
        },
        summary: "a pod reuses its source port toward an IPVS ClusterIP while the previous connection is in IPVS's TIME_WAIT; conn_reuse_mode=1 on a kernel < 5.9 drops the first SYN and the connect takes 1 s",
        mitigation: "a kernel ≥ 5.9 (IPVS reschedules the reused port without dropping the SYN): the lab does not install the emulated drop",
    },
    ScenarioInfo {
        name: core::neighbour_table_overflow::INCIDENT.id,
        incident: Some(&core::neighbour_table_overflow::INCIDENT),
        run: neighbour_table_overflow::run,
        reproduction: Reproduction::Emulated {
            why: "gc_thresh1/2/3 and the neighbour table are host-wide (they exist only in the initial network namespace): the lab may not change them, nor fill the host's table to its real limit.",
            how: "real: the node namespace sends to 300 absent addresses on a /16 link that resolves slowly (6 requests 6 s apart: 300 incomplete neighbour entries in its /proc/net/arp for ~36 s, and the ARP storm on the wire). Emulated: gc_thresh1/2/3 = 64/128/256 in the run's facts only, and the refusal of a new neighbour past gc_thresh3: an nft rule drops the SYNs the node would route to a pod it has no entry for (its counter is the emulated table_fulls); a pod it already knows stays reachable.",
        },
        summary: "a node with more neighbour entries than gc_thresh3 refuses a new one: connects from a remote pod to a pod the node has no entry for time out, while a pod it knows answers; the node sends a storm of ARP requests meanwhile",
        mitigation: "gc_thresh1/2/3 raised to 1024/4096/8192 (emulated, above the entries): no neighbour is refused",
    },
    ScenarioInfo {
        name: "healthy",
        incident: None,
        run: healthy::run,
        reproduction: Reproduction::Native {
            how: "busy but sound traffic through a ClusterIP, a normal application reset, a reset from a closed port, one lost segment retransmitted, NXDOMAIN answers, parallel A+AAAA lookups that all get answers.",
        },
        summary: "normal traffic with benign resets, a retransmission and NXDOMAIN: no incident",
        mitigation: "nothing to mitigate: the same traffic runs",
    },
    ScenarioInfo {
        name: core::vxlan_checksum_offload::INCIDENT.id,
        incident: Some(&core::vxlan_checksum_offload::INCIDENT),
        run: vxlan_checksum_offload::run,
        reproduction: Reproduction::Emulated {
            why: "kernels before 5.7 (ea64d8d6c675; stable 5.6.13, 5.4.41, 4.19.123, 4.14.181) NATing a VXLAN device's own packets with tx checksum offload on turned the zero outer UDP checksum into a wrong one; this kernel keeps it zero.",
            how: "the two nodes route pod traffic through a VXLAN device (flannel.1, UDP 8472); both VXLAN devices send no outer checksum (0, noudpcsum, as flannel's do); an nft rule in the remote node's postrouting writes 0xbad1 into the outer UDP checksum of its VXLAN datagrams (one direction only: remote → node): a wrong non-zero checksum where the device wrote 0, which is what the old kernel's NAT put on the wire. Each node knows the other's VTEP as a permanent neighbour, as flannel programs it (no ARP across the overlay). The remote node's flannel.1 has tx checksum offload off in both runs so the node's kernel verifies the outer checksum (a veth hands a packet whose checksum is left to offload over as verified). Everything after the wire — the node's UDP checksum drop (InCsumErrors, UDP_CSUM), the lost SYN-ACKs, the retransmissions — is the running kernel's. The node view (node.pcap, veth.pcap = its eth0 underlay, the bundle) is the receiving node's.",
        },
        summary: "a pod's connects to a pod on the other node stall: the other node's VXLAN packets carry a wrong outer UDP checksum and this node drops them before decapsulation",
        mitigation: "no rewrite (outer checksum 0): what a fixed kernel, or tx-checksum-ip-generic off on the VXLAN device of the old one, puts on the wire",
    },
];

pub fn drive(lab: &mut Lab) -> Result<Recorded> {
    (lab.info.run)(lab)
}

pub(crate) const DNS_VIP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 96, 0, 10);
pub(crate) const DNS_POD: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 244, 1, 53);
pub(crate) const DNS_CLIENT: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 244, 1, 10);

/// The kube-dns Service: ClusterIP 10.96.0.10:53/udp → the DNS pod 10.244.1.53:53.
pub(crate) fn kube_dns_service() -> crate::kube::Service {
    crate::kube::Service::new(
        "kube-system/kube-dns:dns",
        DNS_VIP,
        53,
        "udp",
        &[(DNS_POD, 53)],
    )
}

/// glibc lookups of `names` one after the other through the kube-dns ClusterIP (`timeout:5
/// attempts:2`), each sending A and AAAA from one socket, or with `single-request-reopen`.
pub(crate) fn glibc_lookups(
    names: &'static [&'static str],
    single_request_reopen: bool,
) -> impl FnOnce() -> Result<Vec<crate::dns::Lookup>> + Send + 'static {
    move || {
        Ok(names
            .iter()
            .map(|name| {
                crate::dns::glibc_lookup(
                    crate::traffic::addr(DNS_VIP, 53),
                    name,
                    std::time::Duration::from_secs(5),
                    2,
                    single_request_reopen,
                )
            })
            .collect())
    }
}

/// A node with a client pod and a DNS pod behind the kube-dns ClusterIP, and the client's
/// resolv.conf (with `options resolv_options` when given).
pub(crate) fn dns_scene(resolv_options: &str) -> Scene {
    let mut resolv = format!("nameserver {DNS_VIP}\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n");
    if !resolv_options.is_empty() {
        resolv.push_str(&format!("options {resolv_options}\n"));
    }
    Scene::new()
        .pod("client", DNS_CLIENT)
        .pod("coredns", DNS_POD)
        .service(kube_dns_service())
        .file(
            "client",
            "etc/resolv.conf",
            &resolv,
            "the client pod's /etc/resolv.conf",
        )
}

/// Brings up `flannel.1` (VXLAN id 1 over eth0, UDP 8472, outer checksum 0 as the kernel's IPv4
/// default) in `ns` with `local`/`peer` tunnel addresses and routes the other node's pod subnet
/// through it: the overlay of the overlay-mtu and vxlan-checksum scenarios.
pub(crate) fn flannel_vxlan(
    ns: &crate::netns::Netns,
    local: std::net::Ipv4Addr,
    peer: std::net::Ipv4Addr,
    me: &str,
    other: &str,
    subnet: &str,
) -> Result<()> {
    ns.ip(&[
        "link",
        "add",
        "flannel.1",
        "type",
        "vxlan",
        "id",
        "1",
        "local",
        &local.to_string(),
        "remote",
        &peer.to_string(),
        "dstport",
        "8472",
        "dev",
        "eth0",
        // No outer checksum (0), as flannel's and Calico's VXLAN devices send over IPv4.
        "noudpcsum",
    ])?;
    ns.ip(&["addr", "add", &format!("{me}/24"), "dev", "flannel.1"])?;
    ns.ip(&["link", "set", "flannel.1", "up"])?;
    ns.ip(&[
        "route",
        "replace",
        subnet,
        "via",
        other,
        "dev",
        "flannel.1",
        "onlink",
    ])?;
    Ok(())
}

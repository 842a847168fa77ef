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
mod conntrack_snat_remap;
mod dns_conntrack_race;
mod dns_id_collision;
mod dns_upstream_unreachable;
mod ephemeral_port_exhaustion;
mod go_resolver_dns_first;
mod healthy;
mod ipvs_conn_reuse;
mod listen_queue_overflow;
mod local_source_drop;
mod snat_port_clash;
mod timewait_paws_reject;
mod tw_recycle_paws;

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
        name: "healthy",
        incident: None,
        run: healthy::run,
        reproduction: Reproduction::Native {
            how: "busy but sound traffic through a ClusterIP, a normal application reset, a reset from a closed port, one lost segment retransmitted, NXDOMAIN answers, parallel A+AAAA lookups that all get answers.",
        },
        summary: "normal traffic with benign resets, a retransmission and NXDOMAIN: no incident",
        mitigation: "nothing to mitigate: the same traffic runs",
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

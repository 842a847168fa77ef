//! The words of each incident (title, mechanism, remedy) as node findings use them.
//!
//! The lead keeps one `INCIDENT` const per incident in `netsleuth_core::detect::<module>`; until those
//! exist, the texts live here and every detector calls [`incident`], so switching over is one line in it.

use netsleuth_core::Incident;

pub static INCIDENTS: &[Incident] = &[
    Incident {
        id: "conntrack-snat-remap",
        title: "a live connection's conntrack entry vanished and its next packet was SNATed to a new port",
        explanation: "MASQUERADE ties each entry to the egress device. On kernels without 097f95d319f8, deleting any \
                      address of that device (a keepalived VIP moving away) flushes every MASQUERADE entry of the \
                      device, so live connections get a new source port mid-stream and the server resets them.",
        remedy: "Upgrade to a kernel with the fix (≥ 4.20, 4.19.85, 4.14.155); or SNAT to a fixed --to-source \
                 instead of MASQUERADE on devices whose addresses move; or keep VIPs on a device that does not \
                 carry the MASQUERADE traffic.",
    },
    Incident {
        id: "conntrack-dnat-rebalance",
        title: "a long-idle connection lost its conntrack entry and was DNATed to another backend",
        explanation: "A Service connection lives only as long as its conntrack entry. When the connection idles past \
                      nf_conntrack_tcp_timeout_established (kube-proxy sets 86400 s), the entry expires; the next \
                      segment is DNATed anew, possibly to another backend, which answers RST (or, with \
                      nf_conntrack_tcp_loose=0, the segment is INVALID and dropped).",
        remedy: "Enable TCP keepalive on long-lived client connections with an idle time well below the conntrack \
                 timeout (SO_KEEPALIVE + TCP_KEEPIDLE, or net.ipv4.tcp_keepalive_time below the timeout); or raise \
                 nf_conntrack_tcp_timeout_established above the longest expected idle period.",
    },
    Incident {
        id: "bridge-nf-bypass",
        title: "bridged pod traffic skips iptables: same-node ClusterIP replies miss reverse NAT",
        explanation: "With net.bridge.bridge-nf-call-iptables=0 (or br_netfilter not loaded), frames switched between \
                      two ports of a Linux bridge never traverse iptables. A pod reaching a ClusterIP whose backend \
                      is on the same bridge sends through DNAT, but the backend's reply is bridged directly back: it \
                      arrives from the backend's pod IP instead of the VIP and the client resets it.",
        remedy: "modprobe br_netfilter and set net.bridge.bridge-nf-call-iptables=1 (and ...-ip6tables=1) \
                 persistently (/etc/modules-load.d, /etc/sysctl.d); kubeadm preflight checks this.",
    },
    Incident {
        id: "tw-recycle-paws",
        title: "tcp_tw_recycle drops SYNs from clients behind NAT (per-host PAWS)",
        explanation: "With tcp_tw_recycle=1 and timestamps on, the kernel remembers the last TCP timestamp per peer IP \
                      and silently drops SYNs whose timestamp is older. Clients behind one SNAT address have \
                      unrelated timestamp clocks, so some of their SYNs are dropped (PAWSPassive rises); since 4.10 \
                      per-connection timestamp offsets break it even without NAT.",
        remedy: "Set net.ipv4.tcp_tw_recycle=0 (the option was removed in 4.12); use tcp_tw_reuse for outgoing \
                 connections if TIME_WAIT pressure was the reason.",
    },
    Incident {
        id: "snat-port-clash",
        title: "concurrent connections got the same SNAT tuple; the loser's SYN was dropped at conntrack insert",
        explanation: "SNAT picks a source port before the conntrack entry is confirmed. Two near-simultaneous \
                      connections can be given the same tuple; the second insert fails (insert_failed), its packet \
                      is dropped and the client retransmits the SYN about a second later.",
        remedy: "Add --random-fully to MASQUERADE/SNAT rules (nft: fully-random; kube-proxy and most CNIs do it \
                 when the iptables version supports it); spread SNAT over more addresses; avoid SNAT where the \
                 network can route pod IPs.",
    },
    Incident {
        id: "dns-conntrack-race",
        title: "parallel A/AAAA queries race through DNAT; one is dropped at conntrack insert (5 s delays)",
        explanation: "glibc and musl send the A and AAAA queries together from one UDP socket. Both packets create \
                      conntrack entries at once; after DNAT to the DNS Service they can clash and one is dropped \
                      (insert_failed), so the client waits its timeout (5 s) and retries. Kernels from ≈5.6 resolve \
                      most such clashes.",
        remedy: "options single-request-reopen (or use-vc) in the pods' resolv.conf (glibc only: musl ignores \
                 them); run NodeLocal DNSCache so pods do not DNAT DNS; upgrade the kernel.",
    },
    Incident {
        id: "go-resolver-dns-first",
        title: "a Go program asks DNS before /etc/hosts because the image has no /etc/nsswitch.conf",
        explanation: "Go's pure resolver decides the lookup order from /etc/nsswitch.conf. Before Go 1.16, a missing \
                      file meant 'DNS first, then files', so names pinned in /etc/hosts are still sent to DNS (and \
                      inherit its timeouts and races).",
        remedy: "Add an /etc/nsswitch.conf with 'hosts: files dns' to the image (or mount one); rebuild with \
                 Go ≥ 1.16.",
    },
    Incident {
        id: "dns-upstream-unreachable",
        title: "a nameserver in resolv.conf never answers",
        explanation: "Resolvers (and CoreDNS forwarding to /etc/resolv.conf) spread queries over every nameserver \
                      listed. One that never answers makes a share of lookups time out, intermittently. Such \
                      entries often come from a file that feeds resolv.conf (resolvconf's base/head, cloud-init, \
                      DHCP) rather than from whoever manages DNS.",
        remedy: "Remove the dead nameserver at its origin (the file named in the evidence), regenerate \
                 /etc/resolv.conf, and restart CoreDNS pods that copied it.",
    },
    Incident {
        id: "dns-id-collision",
        title: "musl < 1.2.4 gives parallel A and AAAA queries the same DNS ID",
        explanation: "musl derives query IDs from the clock without a lock; on some hardware the A and AAAA queries \
                      of one lookup get the same ID. If the AAAA answer arrives first it is taken for the A answer: \
                      names without AAAA fail to resolve, names with it resolve to IPv6 only.",
        remedy: "Use musl ≥ 1.2.4 (Alpine ≥ 3.18) or a glibc-based image.",
    },
    Incident {
        id: "listen-queue-overflow",
        title: "a listener's SYN/accept queue overflows: SYNs are dropped",
        explanation: "When the accept queue of a listening socket is full (the application accepts too slowly or its \
                      backlog is small, capped by net.core.somaxconn) or the SYN queue is full \
                      (tcp_max_syn_backlog), the kernel drops SYNs (ListenOverflows/ListenDrops); clients \
                      retransmit after 1, 3, 7 s and probes fail.",
        remedy: "Raise the application's listen backlog and net.core.somaxconn (per network namespace), \
                 net.ipv4.tcp_max_syn_backlog; keep tcp_syncookies=1; make the application accept faster.",
    },
    Incident {
        id: "local-source-drop",
        title: "packets whose source is a LoadBalancer IP bound on kube-ipvs0 are dropped as martian",
        explanation: "kube-proxy in IPVS mode binds LoadBalancer IPs to kube-ipvs0, which puts them in the local \
                      routing table. A packet arriving from outside with such a source (the cloud LB's health \
                      check) looks spoofed: with accept_local=0 the kernel drops it as martian (in_martian_src), so \
                      externalTrafficPolicy: Local health checks fail.",
        remedy: "Upgrade kube-proxy (newer versions do not bind LB IPs for such cases / support \
                 --ipvs-exclude-cidrs), or set net.ipv4.conf.<ingress>.accept_local=1 on the receiving interface; \
                 or have the LB health-check from a different source address.",
    },
];

/// The catalogue entry for `id`. One place to switch to `netsleuth_core::detect::<id>::INCIDENT`.
pub fn incident(id: &str) -> &'static Incident {
    INCIDENTS
        .iter()
        .find(|i| i.id == id)
        .unwrap_or_else(|| panic!("no catalogue entry {id}"))
}

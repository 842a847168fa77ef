//! Real misconfigured "nodes" built in network namespaces this test creates: `check` must name each
//! incident, stay quiet on a clean one, and leave every node as it found it.
//!
//! Needs root (skips with a message otherwise). Traffic stays inside the namespaces; the host's own
//! sysctls, rules, addresses and routes are never touched. With NETSLEUTH_UPDATE_FIXTURES=1 the bundles
//! collected here are written to fixtures/node/ for the bundle tests.

mod common;

use common::*;
use netsleuth_node::{
    check, collect_live, write_bundle, CheckOptions, CheckReport, CollectOptions, Container,
    NodeFacts, ProbeOptions, ProcessScope, Target,
};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::time::Duration;

fn opts(ns: &Netns, root: &Path, interval_ms: u64) -> CollectOptions {
    CollectOptions {
        target: Target::Netns(ns.path()),
        root: root.to_path_buf(),
        processes: ProcessScope::None,
        interval: Duration::from_millis(interval_ms),
        ..Default::default()
    }
}

fn collect_and_check(o: &CollectOptions, fixture: &str) -> (NodeFacts, CheckReport) {
    let facts = collect_live(o).expect("collect");
    let report = check(&facts, &CheckOptions::default());
    // The bundle reader keeps exactly what the collector writes: no member outside its layout, no
    // claimed artifact missing.
    let mut bundle = Vec::new();
    netsleuth_node::bundle::write_bundle_to(&facts, &mut bundle).unwrap();
    let again = netsleuth_node::bundle::read_bundle_from(bundle.as_slice(), Path::new(fixture))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.artifacts(), facts.artifacts(), "{fixture}");
    for d in &again.diagnostics {
        assert!(
            d.code != "unknown-member" && d.code != "missing-from-bundle",
            "{fixture}: {}",
            d.message
        );
    }
    if update_fixtures() {
        let dir = fixtures_dir();
        std::fs::create_dir_all(&dir).unwrap();
        write_bundle(&facts, &dir.join(format!("{fixture}.tar.gz"))).unwrap();
    }
    (facts, report)
}

fn find<'a>(r: &'a CheckReport, id: &str) -> Option<&'a netsleuth_core::Finding> {
    r.findings.iter().find(|f| f.id == id)
}

/// A kube-proxy-style Service in the namespace's nat table: VIP:port → one endpoint.
fn kube_service(ns: &Netns, vip: &str, port: u16, proto: &str, endpoints: &[&str]) {
    let hash: String = format!("{vip}{port}")
        .chars()
        .filter(|c| c.is_ascii_digit())
        .collect();
    let svc = format!("KUBE-SVC-T{hash}");
    ns.run("iptables -t nat -N KUBE-SERVICES 2>/dev/null; iptables -t nat -C OUTPUT -j KUBE-SERVICES 2>/dev/null || iptables -t nat -A OUTPUT -j KUBE-SERVICES; iptables -t nat -C PREROUTING -j KUBE-SERVICES 2>/dev/null || iptables -t nat -A PREROUTING -j KUBE-SERVICES");
    ns.run(&format!("iptables -t nat -N {svc}"));
    ns.run(&format!(
        "iptables -t nat -A KUBE-SERVICES -d {vip}/32 -p {proto} -m comment --comment \"test/svc{hash}:p cluster IP\" -m {proto} --dport {port} -j {svc}"
    ));
    let n = endpoints.len();
    for (i, ep) in endpoints.iter().enumerate() {
        let sep = format!("KUBE-SEP-E{hash}X{i}");
        ns.run(&format!("iptables -t nat -N {sep}"));
        ns.run(&format!(
            "iptables -t nat -A {sep} -p {proto} -m {proto} -j DNAT --to-destination {ep}"
        ));
        if i + 1 < n {
            let p = 1.0 / (n - i) as f64;
            ns.run(&format!(
                "iptables -t nat -A {svc} -m statistic --mode random --probability {p:.5} -j {sep}"
            ));
        } else {
            ns.run(&format!("iptables -t nat -A {svc} -j {sep}"));
        }
    }
}

#[test]
fn clean_namespace_gives_no_finding() {
    if !can_make_namespaces() {
        return;
    }
    let ns = Netns::new();
    let root = TempDir::new("nsn-clean-root");
    let (facts, r) = collect_and_check(&opts(&ns, root.path(), 500), "clean");
    assert!(
        r.findings.is_empty(),
        "clean namespace gave findings: {}",
        show(&r)
    );
    let node = facts.node_netns().unwrap();
    assert!(
        node.sysctls
            .as_ref()
            .map(|s| s.len() > 100)
            .unwrap_or(false),
        "sysctls not collected"
    );
    assert_eq!(node.samples.len(), 2);
    assert!(node.links.as_ref().unwrap().iter().any(|l| l.name == "lo"));
    // An empty table is not dumped (a dump walks the node-wide table), yet summarised as empty.
    let ct = facts
        .manifest
        .artifact("netns/node/conntrack-summary.json")
        .expect("conntrack summary");
    assert!(
        ct.source.contains("nf_conntrack_count = 0"),
        "{}",
        ct.source
    );
    assert_eq!(node.conntrack.as_ref().unwrap().entries, 0);
}

/// A container the caller names (as the lab names its pods) is collected without any process: its
/// namespace beside the node's, its root's files, and what they say reaches the analysis context.
#[test]
fn declared_containers_are_collected_without_processes() {
    if !can_make_namespaces() {
        return;
    }
    let (node, pod) = (Netns::new(), Netns::new());
    let node_root = TempDir::new("nsn-declared-node");
    let pod_root = TempDir::new("nsn-declared-pod");
    pod_root.write("etc/hosts", "127.0.0.1 localhost\n10.0.0.5 api.internal\n");
    let mut o = opts(&node, node_root.path(), 0);
    o.samples = 1;
    o.containers = vec![
        Container {
            name: "client".into(),
            netns: Some(pod.path()),
            root: Some(pod_root.path().to_path_buf()),
        },
        Container {
            name: "sidecar".into(),
            netns: Some(pod.path()),
            root: None,
        },
    ];
    let (facts, _) = collect_and_check(&o, "declared-containers");
    assert_eq!(
        facts.namespaces.len(),
        2,
        "one namespace per distinct netns"
    );
    let pod_ns = facts.namespaces.iter().find(|n| !n.is_node).unwrap();
    assert_eq!(pod_ns.comms, ["client", "sidecar"]);
    assert!(pod_ns.sysctls.is_some(), "the pod's namespace is collected");
    let root = facts.roots.iter().find(|r| r.id == "root-client").unwrap();
    assert_eq!(root.netns.as_deref(), Some(pod_ns.id.as_str()));
    assert_eq!(root.describe(), "container root-client (client)");
    assert_eq!(facts.roots.len(), 2, "no root for a container without one");
    let ctx = netsleuth_node::to_node_context(&facts);
    assert!(ctx
        .hosts
        .contains(&("10.0.0.5".parse().unwrap(), "api.internal".to_string())));
}

#[test]
fn bridge_with_nf_call_iptables_off_is_named() {
    if !can_make_namespaces() {
        return;
    }
    let ns = Netns::new();
    ns.run("ip link add cni0 type bridge && ip link add veth0 type veth peer name veth1 && ip link set veth0 master cni0 && ip addr add 10.244.0.1/24 dev cni0 && ip link set cni0 up && ip link set veth0 up && ip link set veth1 up");
    ns.run("sysctl -qw net.bridge.bridge-nf-call-iptables=0");
    kube_service(&ns, "10.96.0.30", 80, "tcp", &["10.244.0.5:8080"]);
    let root = TempDir::new("nsn-br-root");
    let (_, r) = collect_and_check(&opts(&ns, root.path(), 500), "bridge-nf-off");
    let f = find(&r, "bridge-nf-bypass")
        .unwrap_or_else(|| panic!("bridge-nf-bypass not named: {}", show(&r)));
    assert!(f.summary.contains("cni0"), "{}", f.summary);
    assert_eq!(f.confidence, netsleuth_core::Confidence::Likely);

    // The same bridge with the sysctl on is quiet.
    ns.run("sysctl -qw net.bridge.bridge-nf-call-iptables=1");
    let (_, r2) = collect_and_check(
        &CollectOptions {
            samples: 1,
            ..opts(&ns, root.path(), 0)
        },
        "bridge-nf-on",
    );
    assert!(find(&r2, "bridge-nf-bypass").is_none(), "{}", show(&r2));
}

#[test]
fn masquerade_without_random_fully_is_named() {
    if !can_make_namespaces() {
        return;
    }
    let ns = Netns::new();
    // An uplink carrying a primary and a secondary (VIP) address, masqueraded without --random-fully.
    ns.run("ip link add uplink type bridge && ip addr add 192.0.2.10/24 dev uplink && ip addr add 192.0.2.99/24 dev uplink && ip link set uplink up");
    ns.run("iptables -t nat -A POSTROUTING -s 10.244.0.0/16 -o uplink -j MASQUERADE");
    ns.run(
        "iptables -t nat -A POSTROUTING -s 10.245.0.0/16 -o uplink -j MASQUERADE --random-fully",
    );
    let root = TempDir::new("nsn-masq-root");
    let (facts, r) = collect_and_check(&opts(&ns, root.path(), 500), "masquerade");
    let f = find(&r, "snat-port-clash")
        .unwrap_or_else(|| panic!("snat-port-clash not named: {}", show(&r)));
    assert_eq!(f.kind, netsleuth_core::FindingKind::LatentRisk);
    assert!(
        f.summary.starts_with("1 MASQUERADE"),
        "only the rule without --random-fully counts: {}",
        f.summary
    );
    // This kernel flushes per address, so the VIP-deletion risk is not claimed …
    assert!(find(&r, "conntrack-snat-remap").is_none(), "{}", show(&r));
    // … but the same node on a kernel without 097f95d319f8 carries it.
    let mut old = facts.clone();
    old.kernel = Some("4.19.84".into());
    let r_old = check(&old, &CheckOptions::default());
    let remap = find(&r_old, "conntrack-snat-remap").unwrap_or_else(|| panic!("{}", show(&r_old)));
    assert!(remap.summary.contains("uplink"), "{}", remap.summary);
}

#[test]
fn lb_ip_on_kube_ipvs0_in_table_local_is_named() {
    if !can_make_namespaces() {
        return;
    }
    let ns = Netns::new();
    // No dummy driver everywhere: any device named kube-ipvs0 carrying the LB IP as /32 will do.
    ns.run("ip link add kube-ipvs0 type bridge && ip addr add 203.0.113.10/32 dev kube-ipvs0 && ip addr add 10.96.0.1/32 dev kube-ipvs0");
    ns.run(
        "ip link add eth0 type veth peer name eth0p && ip link set eth0 up && ip link set eth0p up",
    );
    ns.run("sysctl -qw net.ipv4.conf.all.accept_local=0");
    let root = TempDir::new("nsn-ipvs-root");
    let (_, r) = collect_and_check(&opts(&ns, root.path(), 500), "lb-ip-local");
    let f = find(&r, "local-source-drop")
        .unwrap_or_else(|| panic!("local-source-drop not named: {}", show(&r)));
    assert!(f.summary.contains("203.0.113.10"), "{}", f.summary);
    assert!(
        !f.summary.contains("10.96.0.1,"),
        "ClusterIPs are not LB IPs: {}",
        f.summary
    );
    assert_eq!(
        f.confidence,
        netsleuth_core::Confidence::Confirmed,
        "route seen in table local"
    );
}

#[test]
fn overflowing_listener_is_named_as_under_way() {
    if !can_make_namespaces() {
        return;
    }
    let ns = Netns::new();
    // A listener with backlog 1 that never accepts, and clients that keep knocking: their SYNs and
    // retransmissions overflow the queue while check samples the counters.
    let (listener, clients) = ns.within(|| {
        let l = socket2_listen("127.0.0.1:8080", 1);
        let mut c = Vec::new();
        for _ in 0..8 {
            c.push(nonblocking_connect("127.0.0.1:8080"));
        }
        (l, c)
    });
    let root = TempDir::new("nsn-listen-root");
    let (_, r) = collect_and_check(&opts(&ns, root.path(), 3000), "listen-overflow");
    let f = find(&r, "listen-queue-overflow")
        .unwrap_or_else(|| panic!("listen-queue-overflow not named: {}", show(&r)));
    assert_eq!(
        f.kind,
        netsleuth_core::FindingKind::Incident,
        "{}",
        show(&r)
    );
    assert!(f.summary.contains("127.0.0.1:8080"), "{}", f.summary);
    drop((listener, clients));
}

/// A server that closes first, and a client that reconnects from the same address and port while the
/// server holds TIME_WAIT, with two timestamp clocks as two hosts behind one NAT would have: the
/// namespace's tcp_timestamps alternates between 1 (random offset) and 2 (none), so every other switch
/// sends a SYN whose timestamp is behind, and the TIME_WAIT socket rejects it on PAWS with a bare ACK.
/// The PAWS counter rises while `check` samples it: an incident under way.
#[test]
fn timewait_paws_rejects_are_named_as_under_way() {
    if !can_make_namespaces() {
        return;
    }
    let ns = Netns::new();
    ns.run("ip link set lo up");
    let listener = ns.within(|| socket2_listen("127.0.0.1:8081", 16));
    let root = TempDir::new("nsn-twpaws-root");
    let r = std::thread::scope(|scope| {
        let traffic = scope.spawn(|| {
            ns.within(|| {
                std::thread::sleep(Duration::from_millis(400));
                let listener = TcpListener::from(listener);
                for i in 0..16 {
                    let clock = if i % 2 == 0 { "1" } else { "2" };
                    std::fs::write("/proc/sys/net/ipv4/tcp_timestamps", clock).unwrap();
                    let client = bound_connect("127.0.0.1:40000", "127.0.0.1:8081");
                    let (mut server, _) = listener.accept().unwrap();
                    std::io::Write::write_all(&mut server, b"x").unwrap();
                    drop(server); // the server closes first: TIME_WAIT on its side
                    let mut client = client;
                    let mut sink = [0u8; 16];
                    while matches!(std::io::Read::read(&mut client, &mut sink), Ok(n) if n > 0) {}
                    drop(client);
                    std::thread::sleep(Duration::from_millis(60));
                }
            })
        });
        let (_, r) = collect_and_check(&opts(&ns, root.path(), 3000), "timewait-paws");
        traffic.join().unwrap();
        r
    });
    let f = find(&r, "timewait-paws-reject")
        .unwrap_or_else(|| panic!("timewait-paws-reject not named: {}", show(&r)));
    assert_eq!(
        f.kind,
        netsleuth_core::FindingKind::Incident,
        "{}",
        show(&r)
    );
    assert!(f.summary.contains("rising"), "{}", f.summary);
}

/// Connects from `src` (SO_REUSEADDR, so the same port every time) to `dst`, blocking.
fn bound_connect(src: &str, dst: &str) -> TcpStream {
    use std::os::fd::FromRawFd;
    let (src, dst): (std::net::SocketAddrV4, std::net::SocketAddrV4) =
        (src.parse().unwrap(), dst.parse().unwrap());
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            &one as *const _ as *const libc::c_void,
            4,
        );
        let s = sockaddr(src);
        let len = std::mem::size_of::<libc::sockaddr_in>() as u32;
        assert_eq!(
            libc::bind(fd, &s as *const _ as *const libc::sockaddr, len),
            0
        );
        let d = sockaddr(dst);
        assert_eq!(
            libc::connect(fd, &d as *const _ as *const libc::sockaddr, len),
            0,
            "{}",
            std::io::Error::last_os_error()
        );
        TcpStream::from_raw_fd(fd)
    }
}

#[test]
fn idle_service_sockets_without_keepalive_are_named() {
    if !can_make_namespaces() {
        return;
    }
    let ns = Netns::new();
    // A default route, as a node has: the VIP must be routable before OUTPUT DNAT rewrites it.
    ns.run("ip addr add 10.0.0.2/32 dev lo && ip link add eth0 type bridge && ip addr add 10.1.0.1/24 dev eth0 && ip link set eth0 up && ip route add default dev eth0");
    kube_service(&ns, "10.96.0.20", 80, "tcp", &["10.0.0.2:8080"]);
    let held = ns.within(|| {
        let l = TcpListener::bind("10.0.0.2:8080").unwrap();
        let idle = TcpStream::connect("10.96.0.20:80").unwrap();
        let kept = TcpStream::connect("10.96.0.20:80").unwrap();
        set_keepalive(&kept, 60);
        let a = l.accept().unwrap().0;
        let b = l.accept().unwrap().0;
        (l, idle, kept, a, b)
    });
    std::thread::sleep(Duration::from_millis(1200));
    let root = TempDir::new("nsn-idle-root");
    let (_, r) = collect_and_check(&opts(&ns, root.path(), 500), "idle-no-keepalive");
    let f = find(&r, "conntrack-dnat-rebalance")
        .unwrap_or_else(|| panic!("conntrack-dnat-rebalance not named: {}", show(&r)));
    assert_eq!(f.kind, netsleuth_core::FindingKind::LatentRisk);
    assert!(
        f.summary.starts_with("1 established socket"),
        "only the socket without keepalive: {}",
        f.summary
    );
    assert!(
        f.summary.contains("432000")
            || f.summary.contains("86400")
            || f.summary.contains("timeout_established is"),
        "{}",
        f.summary
    );
    drop(held);
}

#[test]
fn dead_nameserver_is_named_with_its_origin() {
    if !can_make_namespaces() {
        return;
    }
    let ns = Netns::new();
    // 10.99.0.53 is routed into a device that delivers nowhere: queries vanish, as to a retired server.
    ns.run(
        "ip link add sink type bridge && ip addr add 10.99.0.1/24 dev sink && ip link set sink up",
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let responder = {
        let sock = ns.within(|| UdpSocket::bind("127.0.0.1:53").unwrap());
        let stop = stop.clone();
        std::thread::spawn(move || dns_responder(sock, stop))
    };
    let root = TempDir::new("nsn-dns-root");
    root.write(
        "etc/resolv.conf",
        "nameserver 127.0.0.1\nnameserver 10.99.0.53\n",
    );
    root.write(
        "etc/resolvconf/resolv.conf.d/base",
        "nameserver 10.99.0.53\n",
    );
    root.write("etc/nsswitch.conf", "hosts: files dns\n");
    let o = CollectOptions {
        probe: Some(ProbeOptions {
            timeout: Duration::from_millis(400),
            attempts: 2,
        }),
        ..opts(&ns, root.path(), 300)
    };
    let (facts, r) = collect_and_check(&o, "dead-nameserver");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    responder.join().unwrap();
    let f = find(&r, "dns-upstream-unreachable")
        .unwrap_or_else(|| panic!("dns-upstream-unreachable not named: {}", show(&r)));
    assert!(f.summary.contains("10.99.0.53"), "{}", f.summary);
    assert!(
        f.summary.contains("/etc/resolvconf/resolv.conf.d/base"),
        "origin not named: {}",
        f.summary
    );
    assert_eq!(
        f.confidence,
        netsleuth_core::Confidence::Confirmed,
        "the other nameserver answered"
    );
    assert_eq!(
        r.findings
            .iter()
            .filter(|f| f.id == "dns-upstream-unreachable")
            .count(),
        1,
        "the live one is not flagged: {}",
        show(&r)
    );
    assert!(facts
        .probes
        .iter()
        .any(|p| p.nameserver == "127.0.0.1" && p.answered));
}

#[test]
fn musl_container_without_nsswitch_running_old_go_is_named() {
    if !can_make_namespaces() {
        return;
    }
    let build_dir = TempDir::new("nsn-gosleeper");
    let Some(sleeper) = build_fake_go_sleeper(build_dir.path()) else {
        eprintln!("SKIP: musl-gcc not available to build the container's program");
        return;
    };
    let Ok(musl) = std::fs::read("/usr/lib/x86_64-linux-musl/libc.so") else {
        eprintln!("SKIP: no musl libc (apt-get install musl) to put in the container root");
        return;
    };
    let node = Netns::new();
    kube_service(
        &node,
        "10.96.0.10",
        53,
        "udp",
        &["10.244.0.2:53", "10.244.0.3:53"],
    );
    let pod = Netns::new();
    let croot = TempDir::new("nsn-musl-root");
    croot.write("etc/resolv.conf", "nameserver 10.96.0.10\nsearch default.svc.cluster.local\noptions ndots:5 single-request-reopen\n");
    croot.write(
        "etc/hosts",
        "127.0.0.1 localhost\n10.0.0.5 apiserver.internal\n",
    );
    std::fs::create_dir_all(croot.path().join("lib")).unwrap();
    std::fs::write(croot.path().join("lib/ld-musl-x86_64.so.1"), &musl).unwrap();
    std::fs::copy(&sleeper, croot.path().join("app")).unwrap();
    let proc_guard = pod.spawn(&["chroot", croot.path().to_str().unwrap(), "/app"]);
    // Wait until the process has entered its root.
    let mut tries = 0;
    while std::fs::read_link(format!("/proc/{}/root", proc_guard.pid()))
        .map(|p| p == Path::new("/"))
        .unwrap_or(true)
    {
        tries += 1;
        assert!(tries < 100, "chrooted process did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    // `ip netns exec` forks chroot, which execs /app: the pid we hold is the container's process.
    let node_root = TempDir::new("nsn-musl-node");
    let o = CollectOptions {
        processes: ProcessScope::Pids(vec![proc_guard.pid()]),
        ..opts(&node, node_root.path(), 300)
    };
    let (facts, r) = collect_and_check(&o, "musl-container");
    let go = find(&r, "go-resolver-dns-first")
        .unwrap_or_else(|| panic!("go-resolver-dns-first not named: {}", show(&r)));
    assert!(go.summary.contains("go1.15.6"), "{}", go.summary);
    assert_eq!(
        go.confidence,
        netsleuth_core::Confidence::Likely,
        "apiserver.internal is pinned in /etc/hosts"
    );
    let id = find(&r, "dns-id-collision")
        .unwrap_or_else(|| panic!("dns-id-collision not named: {}", show(&r)));
    assert!(id.summary.contains("musl 1.2.3"), "{}", id.summary);
    let croot_facts = facts
        .roots
        .iter()
        .find(|r| !r.is_node)
        .expect("container root found");
    assert_eq!(
        croot_facts.netns.as_deref(),
        facts
            .namespaces
            .iter()
            .find(|n| !n.is_node)
            .map(|n| n.id.as_str())
    );
    // On this kernel clashing A/AAAA entries are inserted, so the race is not claimed …
    assert!(find(&r, "dns-conntrack-race").is_none(), "{}", show(&r));
    // … on 4.19 with two DNS backends it is, and musl ignoring single-request-reopen is the reason.
    let mut old = facts.clone();
    old.kernel = Some("4.19.0".into());
    let r_old = check(&old, &CheckOptions::default());
    let race = find(&r_old, "dns-conntrack-race").unwrap_or_else(|| panic!("{}", show(&r_old)));
    assert!(
        race.summary
            .contains("musl ignores `options single-request-reopen`"),
        "{}",
        race.summary
    );
}

#[test]
fn collect_and_check_leave_the_node_unchanged() {
    if !can_make_namespaces() {
        return;
    }
    let ns = Netns::new();
    // No IPv6 link-local address (its route appears when DAD ends) and no multicast (the kernel's own
    // IGMP reports make conntrack entries): either would look like a change made by the check.
    ns.run("ip link add cni0 type bridge && ip link set cni0 addrgenmode none multicast off && ip addr add 10.244.0.1/24 dev cni0 && ip link set cni0 up && ip route add 10.250.0.0/16 via 10.244.0.9 dev cni0 onlink");
    ns.run("iptables -t nat -A POSTROUTING -s 10.244.0.0/16 -j MASQUERADE && nft add table inet t && nft add chain inet t o \"{ type filter hook output priority 0; }\" && nft add rule inet t o ct state new accept");
    // Conntrack entries exist before the check (UDP to a local port: [UNREPLIED] entries).
    ns.within(|| {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        for p in 9000..9010 {
            let _ = s.send_to(b"x", ("127.0.0.1", p));
        }
    });
    let snapshot = |ns: &Netns| -> Vec<String> {
        vec![
            // Counters move with any packet the kernel sends by itself (IGMP reports after a link comes
            // up): the rules are compared, not their counters.
            ns.out("iptables-save | grep -v '^#' | sed -E 's/\\[[0-9]+:[0-9]+\\]//'"),
            ns.out("nft list ruleset | sed -E 's/counter packets [0-9]+ bytes [0-9]+/counter/'"),
            ns.out("ip -o addr show | grep -v valid_lft | sed -E 's/ tentative//'"),
            ns.out("ip -o link show"),
            ns.out("ip route show table all"),
            ns.out("ip rule"),
            ns.out("sysctl -a 2>/dev/null | grep ^net\\. | grep -v -E 'nf_conntrack_count|stable_secret'"),
            // IGMP (protocol 2) entries come from the kernel's own membership reports.
            ns.out("conntrack -L 2>/dev/null | grep -v -E \"^unknown +2 \" | sed -E 's/^([a-z]+ +[0-9]+) [0-9]+ /\\1 /' | sort"),
        ]
    };
    let before = snapshot(&ns);
    let root = TempDir::new("nsn-ro-root");
    let facts = collect_live(&opts(&ns, root.path(), 300)).unwrap();
    // The ctnetlink decoder and the conntrack tool agree on the table.
    let ct = facts
        .node_netns()
        .unwrap()
        .conntrack
        .as_ref()
        .expect("conntrack summary");
    let tool_lines: Vec<String> = before[7].lines().map(str::to_string).collect();
    // The kernel's own IGMP membership reports (protocol 2) make entries at any moment; they are left
    // out of the tool's lines above and out of this count.
    let igmp: u64 = ct
        .by_proto
        .iter()
        .filter(|(p, _)| matches!(p.as_str(), "igmp" | "2" | "unknown"))
        .map(|(_, n)| *n)
        .sum();
    assert_eq!(
        (ct.entries - igmp) as usize,
        tool_lines.len(),
        "entries: ctnetlink vs conntrack -L (by protocol: {:?})",
        ct.by_proto
    );
    assert_eq!(
        (ct.unreplied - igmp) as usize,
        tool_lines
            .iter()
            .filter(|l| l.contains("[UNREPLIED]"))
            .count(),
        "unreplied: ctnetlink vs conntrack -L (by protocol: {:?})",
        ct.by_proto
    );
    let src = &facts
        .manifest
        .artifact("netns/node/conntrack-summary.json")
        .unwrap()
        .source;
    assert!(src.starts_with("ctnetlink dump"), "{src}");
    let _ = check(&facts, &CheckOptions::default());
    let after = snapshot(&ns);
    let names = [
        "iptables",
        "nft",
        "addresses",
        "links",
        "routes",
        "rules",
        "sysctls",
        "conntrack",
    ];
    for ((b, a), n) in before.iter().zip(after.iter()).zip(names) {
        let gone: Vec<&str> = b.lines().filter(|l| !a.lines().any(|x| x == *l)).collect();
        let new: Vec<&str> = a.lines().filter(|l| !b.lines().any(|x| x == *l)).collect();
        assert!(
            gone.is_empty() && new.is_empty(),
            "{n} changed by collect/check: before only {gone:?}, after only {new:?}"
        );
    }
    assert!(
        before[7].lines().count() >= 10,
        "conntrack entries were present to compare: {}",
        before[7]
    );
}

#[test]
fn host_collection_runs_read_only_without_error() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP: needs root");
        return;
    }
    // The host's own state is not asserted on (tests must not depend on it): only that collecting works.
    let facts = collect_live(&CollectOptions {
        samples: 1,
        processes: ProcessScope::None,
        ..Default::default()
    })
    .expect("collect host");
    assert!(facts.node_netns().is_some());
    assert!(facts.kernel.is_some());
    let _ = check(&facts, &CheckOptions::default());
}

// ---- helpers that make sockets the way a misbehaving application would ----

fn socket2_listen(addr: &str, backlog: i32) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    let sa: std::net::SocketAddrV4 = addr.parse().unwrap();
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            &one as *const _ as *const libc::c_void,
            4,
        );
        let sin = sockaddr(sa);
        assert_eq!(
            libc::bind(
                fd,
                &sin as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as u32
            ),
            0
        );
        assert_eq!(libc::listen(fd, backlog), 0);
        std::os::fd::OwnedFd::from_raw_fd(fd)
    }
}

fn nonblocking_connect(addr: &str) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    let sa: std::net::SocketAddrV4 = addr.parse().unwrap();
    unsafe {
        let fd = libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        );
        assert!(fd >= 0);
        let sin = sockaddr(sa);
        libc::connect(
            fd,
            &sin as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        );
        std::os::fd::OwnedFd::from_raw_fd(fd)
    }
}

fn sockaddr(sa: std::net::SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: sa.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*sa.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn set_keepalive(s: &TcpStream, idle_s: i32) {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_KEEPALIVE,
            &one as *const _ as *const libc::c_void,
            4,
        );
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_KEEPIDLE,
            &idle_s as *const _ as *const libc::c_void,
            4,
        );
    }
}

/// Answers every query with an empty NOERROR response, until `stop`.
fn dns_responder(sock: UdpSocket, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut buf = [0u8; 512];
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        if let Ok((n, peer)) = sock.recv_from(&mut buf) {
            if n >= 12 {
                let mut r = buf[..n].to_vec();
                r[2] |= 0x80;
                r[3] = 0x80;
                let _ = sock.send_to(&r, peer);
            }
        }
    }
}

/// A static musl program that sleeps, carrying a Go ≤ 1.17-style build-info section (go1.15.6): what
/// netsleuth reads from a real Go binary, without needing a Go toolchain.
fn build_fake_go_sleeper(dir: &Path) -> Option<std::path::PathBuf> {
    let src = dir.join("s.c");
    std::fs::write(
        &src,
        r#"#include <unistd.h>
struct gostr { const char *p; long n; };
static const char ver[] = "go1.15.6";
static const struct gostr vs = { ver, sizeof(ver) - 1 };
static const struct gostr ms = { "", 0 };
struct bi { char magic[14]; unsigned char ptrsize; unsigned char flags; const struct gostr *v; const struct gostr *m; };
__attribute__((section(".go.buildinfo"), aligned(16), used))
const struct bi buildinfo = { "\xff Go buildinf:", 8, 0, &vs, &ms };
int main(void) { for (;;) pause(); }
"#,
    )
    .ok()?;
    let out = dir.join("sleeper");
    let ok = std::process::Command::new("musl-gcc")
        .args(["-static", "-O1", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    ok.then_some(out)
}

/// `watch` reads the few sockets it can use by exact sock_diag requests (a hash lookup each) instead
/// of a dump (a walk of the whole established hash): the sockets found are the ones a dump lists, a
/// tuple without a socket is left out, and a dual-stack IPv6 server's IPv4 connection is found (and
/// given) under its IPv4 addresses, as conntrack has them.
#[test]
fn sockets_looked_up_one_by_one_are_those_a_dump_lists() {
    use netsleuth_node::live::sockets::SockSource;
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP: a new network namespace needs root");
        return;
    }
    std::thread::spawn(|| {
        // This thread alone enters a new namespace, gone when the thread ends.
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare");
        let up = std::process::Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .expect("ip");
        assert!(up.success());
        let lo = "127.0.0.1".parse::<std::net::IpAddr>().unwrap();
        let l4 = TcpListener::bind("127.0.0.1:8080").expect("listen");
        let c4 = TcpStream::connect("127.0.0.1:8080").expect("connect");
        let (_s4, _) = l4.accept().expect("accept");
        let l6 = TcpListener::bind("[::]:8081").expect("listen (dual stack)");
        let c6 = TcpStream::connect("127.0.0.1:8081").expect("connect");
        let (_s6, _) = l6.accept().expect("accept");
        let (p4, p6) = (
            c4.local_addr().unwrap().port(),
            c6.local_addr().unwrap().port(),
        );
        let mut src = SockSource::open().expect("sock_diag");
        let dump = src.tcp().expect("dump");
        let client = (lo, p4, lo, 8080);
        let server = (lo, 8080, lo, p4);
        let dual = (lo, 8081, lo, p6);
        let nothing = (lo, 1, lo, 2);
        let found = src
            .lookup(&[client, nothing, server, dual])
            .expect("lookup");
        let tuple = |s: &netsleuth_node::live::event::Socket| {
            (s.local, s.local_port, s.remote, s.remote_port)
        };
        let got: Vec<_> = found.iter().map(tuple).collect();
        assert_eq!(got, [client, server, dual], "{found:?}");
        for s in &found {
            let d = dump
                .iter()
                .find(|d| tuple(d) == tuple(s))
                .unwrap_or_else(|| panic!("{s:?} is not in the dump {dump:?}"));
            assert_eq!((d.state, d.inode), (s.state, s.inode));
            assert!(s.idle_ms.is_some(), "tcp_info asked for and given");
        }
        // What a lookup costs, for the limit past which watch dumps instead (SOCKET_LOOKUP_MAX).
        let many: Vec<_> = (0..256u16).map(|i| (lo, 30000 + i, lo, 80)).collect();
        let t = std::time::Instant::now();
        for _ in 0..10 {
            assert!(src.lookup(&many).expect("lookup").is_empty());
        }
        let lookups = t.elapsed().as_secs_f64() * 1e6 / 2560.0;
        let t = std::time::Instant::now();
        for _ in 0..10 {
            src.tcp().expect("dump");
        }
        eprintln!(
            "{lookups:.2} µs a lookup (256 a request, 10 requests); {:.0} µs a dump (two sockets here, the whole host's hash walked)",
            t.elapsed().as_secs_f64() * 1e6 / 10.0
        );
    })
    .join()
    .expect("the namespace's thread");
}

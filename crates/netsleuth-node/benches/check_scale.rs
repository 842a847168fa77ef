//! Scale benchmark: `check` on a node holding 1 M conntrack entries and a kube-proxy ruleset for 10 k
//! Services (~110 k rules). Prints wall time per stage and the process's peak RSS.
//!
//!   cargo bench -p netsleuth-node --bench check_scale               # synthetic table text, 1 M entries
//!   cargo bench -p netsleuth-node --bench check_scale -- --entries N --services N
//!   cargo bench -p netsleuth-node --bench check_scale -- --live     # root: a real namespace (see below)
//!   cargo bench -p netsleuth-node --bench check_scale -- --live --legacy   # rules in the x_tables backend
//!   cargo bench -p netsleuth-node --bench check_scale -- --live --pods 3   # + 3 pod namespaces, each full
//!
//! Synthetic mode writes `conntrack -L`-format text and an `iptables-save` of kube-proxy's shape to a
//! temporary directory (not timed), then times what `check` does with them: the conntrack table streamed
//! through the summariser from a reader (as the collector streams `conntrack -L`'s pipe), the ruleset
//! parsed, facts built, detectors run. Before that it times the ruleset parse and the Service assembly
//! alone, `--repeat N` times (default 9), and prints the median and best of each.
//!
//! Live mode builds a namespace with the same ruleset loaded by iptables-restore and as many real
//! conntrack entries as the host's nf_conntrack_max allows (UDP flows on loopback; the host's limit is
//! not raised, and since kernel 6.x a namespace's own limit cannot exceed it), then times
//! `collect_live` (one sample) + `check`. With `--pods N`, N more namespaces each get as many entries
//! and a process (`sleep`) through which `collect` finds them, as it finds a node's pods: the way to
//! make `check` read more entries than one namespace may hold.

use netsleuth_node::facts::{
    paths, ArtifactEntry, ArtifactStatus, Artifacts, Manifest, NamespaceEntry, RootEntry,
    SampleEntry, BUNDLE_SCHEMA,
};
use netsleuth_node::parse::conntrack::{ConntrackSummarizer, SummaryLimits};
use netsleuth_node::{check, CheckOptions, NodeFacts};
use std::io::{BufRead, BufWriter, Write};
use std::time::Instant;

fn peak_rss_mb() -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    ru.ru_maxrss as f64 / 1024.0
}

fn arg(name: &str, default: usize) -> usize {
    let a: Vec<String> = std::env::args().collect();
    a.iter()
        .position(|x| x == name)
        .and_then(|i| a.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn ip(base: u32, i: u32) -> String {
    std::net::Ipv4Addr::from(base + i).to_string()
}

/// kube-proxy (iptables mode) ruleset for `n` Services with 3 endpoints each.
fn kube_ruleset(n: u32) -> (String, usize) {
    let mut chains = String::new();
    let mut rules = String::new();
    let mut count = 0;
    chains.push_str("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-POSTROUTING - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n");
    rules.push_str("-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0\n-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n");
    count += 7;
    let vip0 = u32::from(std::net::Ipv4Addr::new(10, 96, 0, 0));
    let pod0 = u32::from(std::net::Ipv4Addr::new(10, 244, 0, 0));
    for s in 0..n {
        let svc = format!("KUBE-SVC-{s:016X}");
        let name = format!("ns{}/svc{s}:http", s % 50);
        let vip = ip(vip0, s + 1);
        chains.push_str(&format!(":{svc} - [0:0]\n"));
        rules.push_str(&format!("-A KUBE-SERVICES -d {vip}/32 -p tcp -m comment --comment \"{name} cluster IP\" -m tcp --dport 80 -j {svc}\n"));
        rules.push_str(&format!("-A {svc} ! -s 10.244.0.0/16 -d {vip}/32 -p tcp -m comment --comment \"{name} cluster IP\" -m tcp --dport 80 -j KUBE-MARK-MASQ\n"));
        count += 2;
        for e in 0..3u32 {
            let sep = format!("KUBE-SEP-{s:012X}{e:04X}");
            let ep = ip(pod0, s * 3 + e + 2);
            chains.push_str(&format!(":{sep} - [0:0]\n"));
            let prob = match e {
                0 => " -m statistic --mode random --probability 0.33333333349".to_string(),
                1 => " -m statistic --mode random --probability 0.50000000000".to_string(),
                _ => String::new(),
            };
            rules.push_str(&format!(
                "-A {svc} -m comment --comment \"{name} -> {ep}:8080\"{prob} -j {sep}\n"
            ));
            rules.push_str(&format!(
                "-A {sep} -s {ep}/32 -m comment --comment \"{name}\" -j KUBE-MARK-MASQ\n"
            ));
            rules.push_str(&format!("-A {sep} -p tcp -m comment --comment \"{name}\" -m tcp -j DNAT --to-destination {ep}:8080\n"));
            count += 3;
        }
    }
    (
        format!("# Generated by iptables-save v1.8.9 (nf_tables)\n{chains}{rules}COMMIT\n"),
        count,
    )
}

/// `conntrack -L` text: TCP to Service VIPs (DNATed), UDP DNS (some unreplied), TIME_WAIT.
fn write_table(path: &std::path::Path, entries: u32, services: u32) -> u64 {
    let f = std::fs::File::create(path).unwrap();
    let mut w = BufWriter::with_capacity(1 << 20, f);
    let vip0 = u32::from(std::net::Ipv4Addr::new(10, 96, 0, 0));
    let pod0 = u32::from(std::net::Ipv4Addr::new(10, 244, 0, 0));
    for i in 0..entries {
        let client = ip(pod0, 100_000 + (i % 50_000));
        let sport = 1024 + (i % 60_000);
        match i % 10 {
            0..=5 => {
                let s = i % services.max(1);
                let vip = ip(vip0, s + 1);
                let ep = ip(pod0, s * 3 + (i % 3) + 2);
                let t = 86_400 - (i % 86_400);
                writeln!(w, "tcp      6 {t} ESTABLISHED src={client} dst={vip} sport={sport} dport=80 src={ep} dst={client} sport=8080 dport={sport} [ASSURED] mark=0 use=1").unwrap();
            }
            6 | 7 => {
                let unrep = i % 20 == 6;
                let reply = if unrep { "[UNREPLIED] " } else { "" };
                writeln!(w, "udp      17 {} src={client} dst=10.96.0.10 sport={sport} dport=53 {reply}src=10.244.0.2 dst={client} sport=53 dport={sport} mark=0 use=1", i % 30).unwrap();
            }
            _ => {
                writeln!(w, "tcp      6 {} TIME_WAIT src={client} dst=192.0.2.{} sport={sport} dport=443 src=192.0.2.{} dst=192.168.0.10 sport=443 dport={sport} [ASSURED] mark=0 use=1", i % 120, i % 250, i % 250).unwrap();
            }
        }
    }
    writeln!(
        w,
        "conntrack v1.4.7 (conntrack-tools): {entries} flow entries have been shown."
    )
    .unwrap();
    w.flush().unwrap();
    std::fs::metadata(path).unwrap().len()
}

fn synthetic(entries: u32, services: u32) {
    let dir = std::env::temp_dir().join(format!("nsn-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let table = dir.join("conntrack-L.txt");
    let t = Instant::now();
    let bytes = write_table(&table, entries, services);
    let (ruleset, nrules) = kube_ruleset(services);
    eprintln!("generated {entries} entries ({:.0} MB) and {nrules} rules ({:.1} MB) in {:.1} s (not timed)", bytes as f64 / 1e6, ruleset.len() as f64 / 1e6, t.elapsed().as_secs_f64());
    let rss0 = peak_rss_mb();
    rules_alone(&ruleset, arg("--repeat", 9));

    let start = Instant::now();
    let mut z = ConntrackSummarizer::new(SummaryLimits::default());
    let mut r = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(&table).unwrap());
    let mut line = String::new();
    while r.read_line(&mut line).unwrap() > 0 {
        z.feed_line(line.trim_end());
        line.clear();
    }
    let summary = z.finish();
    let t_ct = start.elapsed();

    let mut arts = Artifacts::new();
    let mut entries_m = Vec::new();
    let mut put = |p: &str, b: Vec<u8>| {
        entries_m.push(ArtifactEntry {
            path: p.into(),
            status: ArtifactStatus::Ok,
            source: "bench".into(),
            error: None,
            duration_ms: None,
        });
        arts.insert(p.to_string(), b);
    };
    put(paths::KERNEL, b"6.1.0\n".to_vec());
    put(
        &format!("netns/node/{}", paths::IPTABLES),
        ruleset.into_bytes(),
    );
    put(
        &format!("netns/node/{}", paths::CONNTRACK_SUMMARY),
        serde_json::to_vec(&summary).unwrap(),
    );
    put(&format!("netns/node/{}", paths::SYSCTL), b"net.netfilter.nf_conntrack_tcp_timeout_established = 86400\nnet.netfilter.nf_conntrack_max = 1048576\n".to_vec());
    for k in 1..=2 {
        put(
            &format!("netns/node/sample-{k}/{}", paths::CT_S),
            format!("cpu=0 found=0 insert=0 insert_failed={} drop=0\n", k * 3).into_bytes(),
        );
    }
    let manifest = Manifest {
        schema: BUNDLE_SCHEMA.into(),
        namespaces: vec![NamespaceEntry {
            id: "node".into(),
            is_node: true,
            ..Default::default()
        }],
        roots: vec![RootEntry {
            id: "node".into(),
            is_node: true,
            netns: Some("node".into()),
            ..Default::default()
        }],
        samples: vec![
            SampleEntry {
                index: 1,
                offset_ms: 0,
                netns: "node".into(),
            },
            SampleEntry {
                index: 2,
                offset_ms: 3000,
                netns: "node".into(),
            },
        ],
        artifacts: entries_m,
        ..Default::default()
    };
    let t1 = Instant::now();
    let facts = NodeFacts::from_artifacts(manifest, arts);
    let t_parse = t1.elapsed();
    let t2 = Instant::now();
    let report = check(&facts, &CheckOptions::default());
    let t_check = t2.elapsed();
    let total = start.elapsed();
    let svcs = facts.node_netns().unwrap().services().len();
    println!(
        "synthetic: {entries} conntrack entries, {nrules} rules ({svcs} services recognised): conntrack stream {:.3} s, parse {:.3} s, detectors {:.3} s, total {:.3} s; peak RSS {:.0} MB (before timed part {:.0} MB); {} finding(s): {:?}",
        t_ct.as_secs_f64(),
        t_parse.as_secs_f64(),
        t_check.as_secs_f64(),
        total.as_secs_f64(),
        peak_rss_mb(),
        rss0,
        report.findings.len(),
        report.findings.iter().map(|f| f.id).collect::<Vec<_>>()
    );
    assert_eq!(summary.entries, entries as u64);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The ruleset parse and the Service assembly alone, `repeat` times: median and best wall time.
fn rules_alone(text: &str, repeat: usize) {
    use netsleuth_node::parse::iptables::parse_iptables_save;
    let (mut parse, mut assemble) = (Vec::new(), Vec::new());
    let mut found = (0, 0);
    for _ in 0..repeat.max(1) {
        let t = Instant::now();
        let p = parse_iptables_save(text);
        parse.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let svcs = p.value.services();
        assemble.push(t.elapsed().as_secs_f64());
        found = (p.value.rules.len(), svcs.len());
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[0])
    };
    let ((pm, pb), (am, ab)) = (med(&mut parse), med(&mut assemble));
    println!(
        "rules alone ({} rules, {} services, {} runs): parse median {:.1} ms (best {:.1}), services median {:.1} ms (best {:.1})",
        found.0,
        found.1,
        parse.len(),
        pm * 1e3,
        pb * 1e3,
        am * 1e3,
        ab * 1e3
    );
}

fn live(services: u32, entries: u32) {
    use std::process::Command;
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP live: needs root");
        return;
    }
    let name = format!("nsnbench{}", std::process::id());
    sh(&format!("ip netns add {name}"));
    struct Del(String);
    impl Drop for Del {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &self.0])
                .status();
        }
    }
    let _guard = Del(name.clone());
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let max: u32 = std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(65536);
    let want = entries.min(max.saturating_sub(2000));
    let path = std::path::PathBuf::from(format!("/run/netns/{name}"));
    let t = Instant::now();
    fill(&name, want);
    let pods: u32 = arg("--pods", 0) as u32;
    let mut pod_guards = Vec::new();
    let mut sleepers = Vec::new();
    for k in 0..pods {
        let pod = format!("{name}p{k}");
        sh(&format!("ip netns add {pod}"));
        pod_guards.push(Del(pod.clone()));
        fill(&pod, want);
        let child = Command::new("ip")
            .args(["netns", "exec", &pod, "sleep", "3600"])
            .spawn()
            .unwrap();
        sleepers.push(Kill(child));
    }
    let (ruleset, nrules) = kube_ruleset(services);
    let rs_path = std::env::temp_dir().join(format!("{name}.rules"));
    std::fs::write(&rs_path, ruleset).unwrap();
    let restore = if std::env::args().any(|a| a == "--legacy") {
        "iptables-legacy-restore"
    } else {
        "iptables-restore"
    };
    sh(&format!(
        "ip netns exec {name} {restore} < {}",
        rs_path.display()
    ));
    let _ = std::fs::remove_file(&rs_path);
    eprintln!("live namespace ready: {nrules} rules, {want} UDP flows sent in each of {} namespace(s) (host nf_conntrack_max {max}) in {:.1} s (not timed)", 1 + pods, t.elapsed().as_secs_f64());
    std::thread::sleep(std::time::Duration::from_millis(300));
    let root = std::env::temp_dir().join(format!("{name}-root"));
    std::fs::create_dir_all(&root).unwrap();
    let rss0 = peak_rss_mb();
    let start = Instant::now();
    let facts = netsleuth_node::collect_live(&netsleuth_node::CollectOptions {
        target: netsleuth_node::Target::Netns(path.clone()),
        root: root.clone(),
        processes: if pods > 0 {
            netsleuth_node::ProcessScope::Pids(sleepers.iter().map(|c| c.0.id()).collect())
        } else {
            netsleuth_node::ProcessScope::None
        },
        samples: 1,
        ..Default::default()
    })
    .unwrap();
    let t_collect = start.elapsed();
    let report = check(&facts, &CheckOptions::default());
    let total = start.elapsed();
    let node = facts.node_netns().unwrap();
    let mut slow: Vec<_> = facts
        .manifest
        .artifacts
        .iter()
        .filter_map(|a| Some((a.duration_ms?, a.source.clone())))
        .collect();
    slow.sort();
    slow.reverse();
    for (ms, src) in slow.iter().take(6) {
        println!("  {ms:>6} ms  {src}");
    }
    let all_entries: u64 = facts
        .namespaces
        .iter()
        .map(|n| n.conntrack.as_ref().map(|c| c.entries).unwrap_or(0))
        .sum();
    println!(
        "live: {} conntrack entries in {} namespace(s) ({} in the node's), {} rules ({} services recognised): collect {:.3} s, total {:.3} s; peak RSS {:.0} MB (before {:.0} MB); {} finding(s)",
        all_entries,
        facts.namespaces.len(),
        node.conntrack.as_ref().map(|c| c.entries).unwrap_or(0),
        node.iptables.as_ref().map(|r| r.rules.len()).unwrap_or(0)
            + node.iptables_legacy.as_ref().map(|r| r.rules.len()).unwrap_or(0),
        node.services().len(),
        t_collect.as_secs_f64(),
        total.as_secs_f64(),
        peak_rss_mb(),
        rss0,
        report.findings.len()
    );
    let _ = std::fs::remove_dir_all(&root);
}

/// Runs a shell command of the benchmark's setup; panics if it fails.
fn sh(c: &str) {
    let ok = std::process::Command::new("sh")
        .args(["-c", c])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "failed: {c}");
}

/// Fills namespace `name` with `want` long-lived UDP conntrack entries (loopback flows).
fn fill(name: &str, want: u32) {
    sh(&format!("ip -n {name} link set lo up"));
    sh(&format!("ip netns exec {name} nft add table inet track && ip netns exec {name} nft add chain inet track o '{{ type filter hook output priority 0; }}' && ip netns exec {name} nft add rule inet track o ct state new accept"));
    // Long-lived UDP entries (this namespace's own timeout), made before the NAT rules exist so that
    // making them does not pay 10 k linear nat rules per packet.
    sh(&format!(
        "ip netns exec {name} sysctl -qw net.netfilter.nf_conntrack_udp_timeout=3600"
    ));
    let path = std::path::PathBuf::from(format!("/run/netns/{name}"));
    netsleuth_node::collect::run::in_netns(Some(&path), || {
        // Many clients, few servers, as on a node: distinct source tuples (a fresh socket per flow,
        // closed after one datagram; its entry lives on) towards a handful of DNS and HTTP endpoints.
        for i in 0..want {
            let src = std::net::Ipv4Addr::new(127, 1, (i % 64) as u8, 1 + ((i / 64) % 200) as u8);
            let Ok(s) = std::net::UdpSocket::bind((src, 0)) else {
                continue;
            };
            let dst = std::net::SocketAddrV4::new(
                std::net::Ipv4Addr::new(127, 0, 0, 10 + (i % 8) as u8),
                if i % 3 == 0 { 53 } else { 80 },
            );
            let _ = s.send_to(b"x", dst);
        }
    })
    .unwrap();
}

fn main() {
    let entries = arg("--entries", 1_000_000) as u32;
    let services = arg("--services", 10_000) as u32;
    if std::env::args().any(|a| a == "--live") {
        live(services, arg("--entries", 250_000) as u32);
    } else {
        synthetic(entries, services);
    }
}

//! Every real node artifact in the shared corpus goes through its parser (and, for robustness, through
//! every other parser too) without a panic; what a parser did not understand is counted, and the files
//! that are exactly the format a parser targets must parse without unknown lines.

mod common;

use netsleuth_node::parse::{
    conntrack, ip, iptables, ipvs, neigh, netstat, nft, proc_tcp, resolver, ss, sysctl, IssueLog,
};
use std::path::{Path, PathBuf};

fn corpus_dir() -> Option<PathBuf> {
    common::node_corpus_dir()
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Runs every parser on `text` (robustness) and returns the designated parser's name, issues and a
/// measure of what it found.
fn parse_all(rel: &str, text: &str) -> (&'static str, IssueLog, usize) {
    let every: Vec<(&'static str, IssueLog, usize)> = vec![
        ("sysctl", {
            let p = sysctl::parse_sysctls(text);
            (p.issues, p.value.len())
        }),
        ("counters", {
            let p = netstat::parse_counters(text);
            (p.issues, p.value.len())
        }),
        ("stat-table", {
            let p = netstat::parse_stat_table(text);
            (p.issues, p.value.len())
        }),
        ("netstat-s", {
            let p = netstat::parse_netstat_s(text);
            (p.issues, p.value.len())
        }),
        ("conntrack-table", {
            let s = conntrack::summarize_table(text, Default::default());
            (s.issues.clone(), s.entries as usize)
        }),
        ("conntrack-stats", {
            let p = conntrack::parse_stats(text);
            (p.issues, p.value.len())
        }),
        ("iptables-save", {
            let p = iptables::parse_iptables_save(text);
            let n = p.value.rules.len();
            let _ = p.value.services();
            let _ = p.value.source_nat_rules("x");
            (p.issues, n)
        }),
        ("nft-json", {
            let p = nft::parse_nft_json(text);
            let _ = p.value.services();
            let _ = p.value.source_nat_rules("x");
            let v = &p.value;
            (
                p.issues,
                v.tables.len() + v.chains.len() + v.rules.len() + v.maps.len(),
            )
        }),
        ("nft-text", {
            let p = nft::parse_nft_text(text);
            (p.issues, p.value.rules as usize)
        }),
        ("ip-addr-json", {
            let p = ip::parse_addr_json(text);
            (p.issues, p.value.len())
        }),
        ("ip-addr-text", {
            let p = ip::parse_addr_text(text);
            (p.issues, p.value.len())
        }),
        ("ip-route-text", {
            let p = ip::parse_route_text(text);
            (p.issues, p.value.len())
        }),
        ("ip-route-json", {
            let p = ip::parse_route_json(text);
            (p.issues, p.value.len())
        }),
        ("ipvs", {
            let p = ipvs::parse_ipvs(text);
            (p.issues, p.value.len())
        }),
        ("ss", {
            let p = ss::parse_ss(text);
            (p.issues, p.value.len())
        }),
        ("proc-tcp", {
            let p = proc_tcp::parse_proc_net_tcp(text);
            (p.issues, p.value.len())
        }),
        ("proc-net-arp", {
            let p = neigh::parse_proc_net_arp(text);
            (p.issues, p.value.entries() as usize)
        }),
        ("resolv.conf", {
            let p = resolver::parse_resolv_conf(text);
            (p.issues, p.value.nameservers.len())
        }),
        ("nsswitch", {
            let p = resolver::parse_nsswitch(text);
            (p.issues, p.value.hosts.is_some() as usize)
        }),
        ("hosts", {
            let p = resolver::parse_hosts(text);
            (p.issues, p.value.len())
        }),
        ("corefile", {
            let p = resolver::parse_corefile(text);
            (p.issues, p.value.len())
        }),
    ]
    .into_iter()
    .map(|(n, (i, c))| (n, i, c))
    .collect();
    let name = rel.to_lowercase();
    let pick = if name.ends_with(".json") && name.starts_with("nft/") {
        "nft-json"
    } else if name.starts_with("nft/") {
        "nft-text"
    } else if name.starts_with("iptables/") && name.contains("ipset") {
        "ipvs" // ipset listings: no parser of ours targets them; any is fine for the count
    } else if name.starts_with("iptables/") {
        "iptables-save"
    } else if name.starts_with("conntrack/") && (text.contains("cpu=") && !text.contains("src=")) {
        "conntrack-stats"
    } else if name.starts_with("conntrack/") && text.starts_with("entries") {
        "stat-table"
    } else if name.starts_with("conntrack/") {
        "conntrack-table"
    } else if name.starts_with("resolver/") && name.contains("nsswitch") {
        "nsswitch"
    } else if name.starts_with("resolver/") && name.contains("corefile") {
        "corefile"
    } else if name.starts_with("resolver/") {
        "resolv.conf"
    } else if name.starts_with("ip/")
        && (name.contains("net_arp")
            || name.contains("proc-net.arp")
            || name.contains("proc-net-arp"))
    {
        "proc-net-arp"
    } else if name.starts_with("ip/") && name.ends_with(".json") {
        "ip-addr-json"
    } else if name.starts_with("ip/")
        && (name.contains("ipvs") || name.contains("ip_vs") || name.contains("ipv.txt"))
    {
        "ipvs"
    } else if name.starts_with("ip/")
        && (name.contains("addr") || name.contains("link") || name.contains("br_add"))
    {
        "ip-addr-text"
    } else if name.starts_with("ip/") {
        "ip-route-text"
    } else if name.contains("sysctl") {
        "sysctl"
    } else if name.contains("netstat_s") || name.contains("netstat_-s") {
        "netstat-s"
    } else if name.contains("ss_") || name.contains("ss-") || name.contains("ss_-") {
        "ss"
    } else if name.ends_with("net_tcp")
        || name.ends_with("net_tcp6")
        || name.ends_with(".tcp")
        || name.ends_with(".tcp6")
    {
        "proc-tcp"
    } else if name.contains("stat_") || name.contains("softnet") || name.contains("conntrack") {
        "stat-table"
    } else {
        "counters"
    };
    let (n, i, c) = every.into_iter().find(|(n, _, _)| *n == pick).unwrap();
    (n, i, c)
}

#[test]
fn every_corpus_file_parses_without_panic_and_unknowns_are_counted() {
    let Some(dir) = corpus_dir() else {
        eprintln!("SKIP: ../shared/corpus/node absent (set NETSLEUTH_NODE_CORPUS)");
        return;
    };
    let mut total_unknown = 0u64;
    let mut n_files = 0;
    let mut report = String::new();
    let mut strict_failures = Vec::new();
    for f in files(&dir) {
        let rel = f.strip_prefix(&dir).unwrap().to_string_lossy().into_owned();
        if rel.ends_with(".md") {
            continue;
        }
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned();
        let (parser, issues, found) = parse_all(&rel, &text);
        n_files += 1;
        total_unknown += issues.total;
        report.push_str(&format!(
            "{:<16} {:>6} found {:>5} unknown  {rel}\n",
            parser, found, issues.total
        ));
        // Files that are exactly a parser's format must be read whole (transcript excerpts, which their
        // authors trimmed with "..." lines, are exempt).
        let excerpt = text
            .lines()
            .any(|l| l.trim() == "..." || l.trim().starts_with("... "));
        let strict = !excerpt
            && (rel.ends_with(".iptables-save")
                || rel.ends_with("ip6tables-save")
                || rel.ends_with("iptables-save-v1.4.21")
                || (rel.starts_with("nft/") && rel.ends_with(".json"))
                || rel.ends_with(".snmp")
                || rel.ends_with("netstat")
                || rel.contains("stat_nf_conntrack")
                || rel.contains("stat_arp_cache")
                || rel.contains("stat_ndisc_cache")
                || rel.ends_with("net_arp")
                || rel.ends_with("sysctl-a.txt"));
        if strict && (issues.total > 0 || found == 0) {
            strict_failures.push(format!(
                "{rel}: {parser} found {found}, issues {:?}",
                issues.first.first()
            ));
        }
    }
    println!("{report}{n_files} files, {total_unknown} unknown items counted");
    assert!(
        n_files > 300,
        "expected the whole corpus, read {n_files} files"
    );
    assert!(
        strict_failures.is_empty(),
        "files in a parser's own format not read whole:\n{}",
        strict_failures.join("\n")
    );
}

#[test]
fn corpus_kube_content_is_recognised() {
    let Some(dir) = corpus_dir() else {
        eprintln!("SKIP: corpus absent");
        return;
    };
    let read = |rel: &str| std::fs::read_to_string(dir.join(rel)).ok();
    // The RHCOS node's nft ruleset: kube-proxy's KUBE-POSTROUTING masquerade without fully-random.
    if let Some(t) = read("nft/sos-rhcos-master1.nft_list_ruleset.txt") {
        let p = nft::parse_nft_text(&t);
        assert!(
            p.value
                .source_nat
                .iter()
                .any(|r| r.masquerade && !r.random_fully),
            "{:?}",
            p.value.source_nat
        );
    }
    // An old-format `conntrack -S` and a procfs stat table read into the same counter names.
    if let Some(t) =
        read("conntrack/arthurchiao.2020-08-09.L1258.cat_proc_net_stat_nf_conntrack.txt")
    {
        let p = netstat::parse_stat_table(&t);
        assert!(p.value.contains_key("insert_failed"));
        assert_eq!(p.value["entries"], 0x8e3);
    }
    if let Some(t) = read("ip/kep265-ipvs.L137.ipvsadm_ln.txt") {
        let p = ipvs::parse_ipvs(&t);
        assert_eq!(p.value[0].real_servers.len(), 2);
    }
}

//! Every public parser of node state. Byte 0 (modulo the number of parsers) picks one; the rest is its
//! input, as text (lossy UTF-8) for the text parsers and as bytes for the binary and netlink readers.
//! What each parser returns is walked through the methods that consume it (services, SNAT rules,
//! rendering back to iptables-save, …).
//!
//! Shared by the fuzz target (fuzz/fuzz_targets/node_parsers.rs) and the stable replay tests, which include
//! this file with `#[path]`: a reproducer replays through exactly the code that found it.

use netsleuth_core::versions::{self, Version};
use netsleuth_node::binary;
use netsleuth_node::collect::{nl_conntrack, nl_tables};
use netsleuth_node::parse::conntrack::{self, ConntrackSummarizer, SummaryLimits};
use netsleuth_node::parse::{
    ip, iptables, ipvs, netlink, netstat, nft, nft_netlink, proc_tcp, resolver, ss, sysctl,
    IssueLog,
};
use netsleuth_node::probe;

/// Parser names, in selector order (the seed script uses the same order).
pub const PARSERS: [&str; 30] = [
    "sysctl",
    "counters",
    "stat-table",
    "netstat-s",
    "conntrack-table",
    "conntrack-table-tiny",
    "conntrack-stats",
    "iptables-save",
    "nft-json",
    "nft-text",
    "ip-addr-json",
    "ip-addr-text",
    "ip-route-json",
    "ip-route-text",
    "ip-rule-json",
    "ipvs",
    "ss",
    "proc-tcp",
    "resolv.conf",
    "nsswitch",
    "hosts",
    "corefile",
    "elf",
    "libc-banner",
    "package-db",
    "netlink",
    "nft-netlink",
    "ctnetlink",
    "nft-tables-netlink",
    "dns-probe-response",
];

fn issues(i: &IssueLog) {
    assert!(i.first.len() as u64 <= i.total);
    assert!(i.first.len() <= 16);
    assert_eq!(i.by_code.values().sum::<u64>(), i.total);
}

fn walk_attrs(b: &[u8], depth: u32) {
    for (ty, v) in netlink::attrs(b) {
        let _ = ty;
        if depth < 4 {
            walk_attrs(v, depth + 1);
        }
    }
}

fn conntrack_text(text: &str, limits: SummaryLimits) {
    let s = conntrack::summarize_table(text, limits);
    issues(&s.issues);
    assert!(s.destinations.len() <= limits.max_tracked_destinations.max(1) + 1);
    for d in &s.destinations {
        assert!(d.dnat_backends.len() <= limits.max_backends.max(1));
        let _ = s.unreplied_dns_to(&d.dst);
    }
    // The streaming interface, line by line, must agree with the whole-text one.
    let mut z = ConntrackSummarizer::new(limits);
    for l in text.lines() {
        z.feed_line(l);
        if let Ok(e) = conntrack::parse_entry(l.trim()) {
            let _ = (e.is_dnat(), e.is_snat());
        }
    }
    let _ = z.finish();
}

fn text_of(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// One fuzz input: panics on any violated invariant, returns otherwise.
pub fn run(data: &[u8]) {
    let Some((&sel, b)) = data.split_first() else {
        return;
    };
    let which = PARSERS[sel as usize % PARSERS.len()];
    match which {
        "sysctl" => {
            let p = sysctl::parse_sysctls(&text_of(b));
            issues(&p.issues);
            for k in p.value.keys() {
                let _ = sysctl::sysctl_u64(&p.value, k);
            }
        }
        "counters" => issues(&netstat::parse_counters(&text_of(b)).issues),
        "stat-table" => issues(&netstat::parse_stat_table(&text_of(b)).issues),
        "netstat-s" => issues(&netstat::parse_netstat_s(&text_of(b)).issues),
        "conntrack-table" => conntrack_text(&text_of(b), SummaryLimits::default()),
        "conntrack-table-tiny" => conntrack_text(
            &text_of(b),
            SummaryLimits {
                near_expiry_threshold_s: 5,
                max_tracked_destinations: 2,
                listed_destinations: 1,
                max_backends: 1,
            },
        ),
        "conntrack-stats" => issues(&conntrack::parse_stats(&text_of(b)).issues),
        "iptables-save" => {
            let t = text_of(b);
            let p = iptables::parse_iptables_save(&t);
            issues(&p.issues);
            let _ = p.value.services();
            let _ = p.value.has_kube_proxy();
            let _ = p.value.source_nat_rules("iptables-save");
            for l in t.lines().take(64) {
                let _ = iptables::shell_words(l);
            }
        }
        "nft-json" => {
            let p = nft::parse_nft_json(&text_of(b));
            issues(&p.issues);
            let _ = p.value.services();
            let _ = p.value.has_kube_proxy();
            let _ = p.value.source_nat_rules("nft");
            let _ = p.value.uses("jump");
        }
        "nft-text" => issues(&nft::parse_nft_text(&text_of(b)).issues),
        "ip-addr-json" => issues(&ip::parse_addr_json(&text_of(b)).issues),
        "ip-addr-text" => issues(&ip::parse_addr_text(&text_of(b)).issues),
        "ip-route-json" => issues(&ip::parse_route_json(&text_of(b)).issues),
        "ip-route-text" => issues(&ip::parse_route_text(&text_of(b)).issues),
        "ip-rule-json" => issues(&ip::parse_rule_json(&text_of(b)).issues),
        "ipvs" => issues(&ipvs::parse_ipvs(&text_of(b)).issues),
        "ss" => {
            let t = text_of(b);
            let p = ss::parse_ss(&t);
            issues(&p.issues);
            for s in &p.value {
                let _ = (s.has_keepalive(), s.idle_ms(), s.local_ip(), s.peer_ip());
                let _ = (s.local_port(), s.peer_port());
            }
            for w in t.split_whitespace().take(256) {
                let _ = ss::split_endpoint(w);
                let _ = ss::parse_ss_duration(w);
            }
        }
        "proc-tcp" => {
            let t = text_of(b);
            issues(&proc_tcp::parse_proc_net_tcp(&t).issues);
            for w in t.split_whitespace().take(256) {
                let _ = proc_tcp::decode_endpoint(w);
            }
        }
        "resolv.conf" => {
            let p = resolver::parse_resolv_conf(&text_of(b));
            issues(&p.issues);
            let _ = p.value.has_option("ndots");
            let _ = p.value.race_avoiding_options();
        }
        "nsswitch" => issues(&resolver::parse_nsswitch(&text_of(b)).issues),
        "hosts" => {
            let p = resolver::parse_hosts(&text_of(b));
            issues(&p.issues);
            let _ = resolver::custom_host_names(&p.value);
        }
        "corefile" => issues(&resolver::parse_corefile(&text_of(b)).issues),
        "elf" => {
            if let Some(g) = binary::go_build_info(&b) {
                let _ = Version::parse(&g.go_version);
            }
            let _ = binary::elf_interpreter(&b);
        }
        "libc-banner" => {
            let m = binary::musl_version_from_bytes(b);
            let g = binary::glibc_version_from_bytes(b);
            for v in [m, g].iter().flatten() {
                let _ = Version::parse(v);
            }
        }
        "package-db" => {
            let t = text_of(b);
            let a = binary::apk_package_version(&t, "musl");
            let d = binary::dpkg_package_version(&t, "libc6");
            for v in [a, d].iter().flatten() {
                let _ = Version::parse(v);
            }
            // Every version row against every line: the one version parser and comparison.
            for l in t.lines().take(64) {
                let _ = Version::parse(l);
                for f in versions::TABLE {
                    let _ = (f.has(l), f.status(l), f.mainline());
                }
            }
        }
        "netlink" => {
            let mut end = netlink::DumpEnd::default();
            let mut msgs = netlink::messages(b);
            for m in &mut msgs {
                let _ = m.errno();
                let _ = end.see(&m);
                // Past the nfgenmsg / nlmsgerr header, where attributes start.
                walk_attrs(m.body.get(4..).unwrap_or(&[]), 0);
            }
            let _ = msgs.damaged;
        }
        "nft-netlink" => {
            let c = nft_netlink::parse_chunk(b);
            let family = c
                .rules
                .first()
                .map(|r| r.family)
                .unwrap_or(nft_netlink::NFPROTO_IPV4);
            let mut t = nft_netlink::TableRenderer::new(family, "filter", &c.chains);
            for name in t.chain_order() {
                let _ = nft_netlink::is_xtables_base_chain(name);
            }
            for r in &c.rules {
                let _ = nft_netlink::render_rule(r.family, r);
                t.push(r);
            }
            let out = t.finish();
            assert!(out.rules + out.unrendered.len() == c.rules.len());
            // What is rendered is iptables-save text: it must read back.
            let _ = iptables::parse_iptables_save(&out.text);
        }
        "ctnetlink" => {
            let d = nl_conntrack::decode(b);
            let mut z = ConntrackSummarizer::new(SummaryLimits::default());
            for e in &d.entries {
                let f = e.flow();
                z.feed_flow(&f);
                let line = e.to_line();
                let _ = conntrack::parse_entry(&line);
                z.feed_line(&line);
            }
            let _ = z.finish();
        }
        "nft-tables-netlink" => {
            let _ = nl_tables::parse_chunk(b);
        }
        "dns-probe-response" => {
            let id = u16::from_be_bytes([
                b.first().copied().unwrap_or(0),
                b.get(1).copied().unwrap_or(0),
            ]);
            let _ = probe::response_rcode(b, id);
            let _ = probe::response_rcode(b, id ^ 1);
        }
        _ => unreachable!(),
    }
}

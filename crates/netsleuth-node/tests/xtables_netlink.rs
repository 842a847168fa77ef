//! The nf_tables netlink reader of iptables-nft rules must print exactly what `iptables-save` prints.
//!
//! Needs root and the iptables tools with the nf_tables backend (skips with a message otherwise). Each
//! test loads a ruleset into a namespace it creates, then compares table by table with iptables-save.

mod common;

use common::*;
use netsleuth_node::collect::nl_tables;
use netsleuth_node::facts::paths;
use netsleuth_node::{collect_live, CollectOptions, ProcessScope, Target};
use std::collections::BTreeMap;

const RICH4: &str = include_str!("data/xtables-rich.rules");
const RICH6: &str = include_str!("data/xtables-rich6.rules");

fn nft_backend() -> bool {
    if !can_make_namespaces() {
        return false;
    }
    let v = std::process::Command::new("iptables-save")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if !v.contains("nf_tables") {
        eprintln!(
            "SKIP: iptables-save is not the nf_tables backend ({})",
            v.trim()
        );
        return false;
    }
    true
}

/// `*table … COMMIT` blocks of iptables-save text by table, comments dropped.
fn blocks(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut cur: Option<(String, String)> = None;
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        if let Some(t) = l.strip_prefix('*') {
            cur = Some((t.to_string(), String::new()));
        }
        if let Some((_, b)) = cur.as_mut() {
            b.push_str(l);
            b.push('\n');
        }
        if l == "COMMIT" {
            if let Some((t, b)) = cur.take() {
                out.insert(t, b);
            }
        }
    }
    out
}

fn restore(ns: &Netns, tool: &str, rules: &str) {
    let dir = TempDir::new("nsn-xt");
    dir.write("r", rules);
    ns.run(&format!("{tool} < {}", dir.path().join("r").display()));
}

#[test]
fn every_rule_iptables_can_show_reads_back_exactly() {
    if !nft_backend() {
        return;
    }
    let ns = Netns::new();
    restore(&ns, "iptables-restore", RICH4);
    restore(&ns, "ip6tables-restore", RICH6);
    for (family, save, unknown_table) in [
        (2u8, "iptables-save", Some("mangle")),
        (10, "ip6tables-save", None),
    ] {
        let save_text = ns.out(save);
        let theirs = blocks(&save_text);
        let dump = ns
            .within(|| nl_tables::xtables(family))
            .expect("netlink dump");
        assert!(!dump.unstable && dump.damaged == 0);
        let their_order: Vec<String> = save_text
            .lines()
            .filter_map(|l| l.strip_prefix('*'))
            .map(String::from)
            .collect();
        let our_order: Vec<String> = dump.tables.iter().map(|(t, _)| t.clone()).collect();
        assert_eq!(our_order, their_order, "{save}: table order");
        assert_eq!(dump.tables.len(), theirs.len(), "{save}: tables differ");
        for (table, r) in &dump.tables {
            if Some(table.as_str()) == unknown_table {
                // multiport is not read natively: that rule is named, the table left to iptables-save.
                assert_eq!(r.unrendered.len(), 1, "{table}: {:?}", r.unrendered);
                assert!(r.unrendered[0].reason.contains("multiport"));
                continue;
            }
            assert!(
                r.unrendered.is_empty(),
                "{save} {table}: {:?}",
                r.unrendered
            );
            assert_eq!(r.text, theirs[table], "{save} -t {table} differs");
        }
    }
}

#[test]
fn collect_reads_rules_natively_and_falls_back_per_table() {
    if !nft_backend() {
        return;
    }
    let ns = Netns::new();
    restore(&ns, "iptables-restore", RICH4);
    restore(&ns, "ip6tables-restore", RICH6);
    let root = TempDir::new("nsn-xt-root");
    let facts = collect_live(&CollectOptions {
        target: Target::Netns(ns.path()),
        root: root.path().to_path_buf(),
        processes: ProcessScope::None,
        samples: 1,
        ..Default::default()
    })
    .expect("collect");
    let path = format!("netns/node/{}", paths::IPTABLES);
    let text = facts.artifact_text(&path).expect("iptables artifact");
    assert_eq!(blocks(&text), blocks(&ns.out("iptables-save")));
    let entry = facts
        .manifest
        .artifacts
        .iter()
        .find(|a| a.path == path)
        .unwrap();
    assert!(
        entry.source.starts_with("nf_tables netlink"),
        "{}",
        entry.source
    );
    assert!(
        entry.source.contains("taken from iptables-save -t mangle"),
        "{}",
        entry.source
    );
    // The kube-proxy structure is recognised from the netlink text as from iptables-save's.
    let svcs = facts.node_netns().unwrap().services();
    let dns = svcs
        .iter()
        .find(|s| s.vip == "10.96.0.10")
        .expect("kube-dns");
    assert_eq!(dns.endpoints.len(), 2);
    // Dual stack: the IPv6 Service comes from the ip6tables rules read the same way.
    let dns6 = svcs
        .iter()
        .find(|s| s.vip == "fd00:10:96::a")
        .expect("kube-dns IPv6");
    assert_eq!(
        dns6.endpoints,
        vec![("[fd00:10:244::2]:53".to_string(), 1.0)]
    );
    let text6 = facts
        .artifact_text(&format!("netns/node/{}", paths::IP6TABLES))
        .expect("ip6tables artifact");
    assert_eq!(blocks(&text6), blocks(&ns.out("ip6tables-save")));
}

#[test]
fn many_chains_are_read_by_two_threads_in_order() {
    if !nft_backend() {
        return;
    }
    // 700 Services with 2 endpoints: 2,100 chains, past the two-thread threshold.
    let mut chains = String::from("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n");
    let mut rules = String::from("-A OUTPUT -j KUBE-SERVICES\n");
    for s in 0..700u32 {
        let vip = format!("10.96.{}.{}", s / 250, s % 250 + 1);
        chains.push_str(&format!(":KUBE-SVC-{s:05} - [0:0]\n"));
        rules.push_str(&format!("-A KUBE-SERVICES -d {vip}/32 -p tcp -m comment --comment \"ns/s{s}:http cluster IP\" -m tcp --dport 80 -j KUBE-SVC-{s:05}\n"));
        for e in 0..2u32 {
            let ep = format!("10.244.{}.{}", s / 100, (s % 100) * 2 + e + 2);
            chains.push_str(&format!(":KUBE-SEP-{s:05}{e} - [0:0]\n"));
            let prob = if e == 0 {
                " -m statistic --mode random --probability 0.50000000000"
            } else {
                ""
            };
            rules.push_str(&format!("-A KUBE-SVC-{s:05} -m comment --comment \"ns/s{s}:http -> {ep}:8080\"{prob} -j KUBE-SEP-{s:05}{e}\n"));
            rules.push_str(&format!("-A KUBE-SEP-{s:05}{e} -p tcp -m comment --comment \"ns/s{s}:http\" -m tcp -j DNAT --to-destination {ep}:8080\n"));
        }
    }
    let ns = Netns::new();
    restore(&ns, "iptables-restore", &format!("{chains}{rules}COMMIT\n"));
    let dump = ns.within(|| nl_tables::xtables(2)).expect("netlink dump");
    assert_eq!(dump.tables.len(), 1);
    let (_, r) = &dump.tables[0];
    assert!(r.unrendered.is_empty(), "{:?}", r.unrendered);
    assert_eq!(r.rules, 1 + 700 * 5);
    assert_eq!(r.text, blocks(&ns.out("iptables-save"))["nat"]);
}

//! The compact ruleset reads every input as the parser before it did (`reference/iptables_v1.rs`, the
//! old parser kept as an oracle): the shared corpus (every file, as `corpus.rs` feeds every file to
//! every parser), the fixture bundles, the netlink test rules and generated kube-proxy rulesets. And the
//! rule budget: past it the rest is counted, not kept, and a diagnostic says so.

mod common;

#[path = "reference/iptables_v1.rs"]
mod v1;

use netsleuth_node::facts::{
    paths, ArtifactEntry, ArtifactStatus, Artifacts, Manifest, NamespaceEntry, BUNDLE_SCHEMA,
};
use netsleuth_node::parse::iptables::{
    self, parse_iptables_save, parse_iptables_save_within, Rule, RuleBudget, Service, MAX_RULES,
};
use netsleuth_node::{check, CheckOptions, NodeFacts};
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

/// The old parser's Services without those of rules shadowed by an identical earlier rule (same table,
/// same text): the one difference the compact parser means to make.
fn unshadowed(old: &v1::Ruleset, svcs: Vec<v1::Service>) -> Vec<v1::Service> {
    let mut seen = std::collections::HashSet::new();
    let mut seen_dnat = std::collections::HashSet::new();
    // Which rule made each Service: kube-proxy's from KUBE-SERVICES (in order), then plain DNAT rules.
    let kube: Vec<&v1::Rule> = old
        .rules
        .iter()
        .filter(|r| (r.table == "nat" || r.table.is_empty()) && r.chain == "KUBE-SERVICES")
        .filter(|r| matches!((&r.dst, &r.target), (Some(d), Some(_)) if !d.starts_with('!')))
        .collect();
    let dnat: Vec<&v1::Rule> = old
        .rules
        .iter()
        .filter(|r| r.target.as_deref() == Some("DNAT") && !r.chain.starts_with("KUBE-SEP-"))
        .filter(
            |r| matches!((&r.dst, &r.to_destination), (Some(d), Some(_)) if !d.starts_with('!')),
        )
        .collect();
    assert_eq!(kube.len() + dnat.len(), svcs.len());
    svcs.into_iter()
        .zip(
            kube.iter()
                .map(|r| (true, r))
                .chain(dnat.iter().map(|r| (false, r))),
        )
        .filter(|(_, (k, r))| {
            let set = if *k { &mut seen } else { &mut seen_dnat };
            set.insert((r.table.clone(), r.text.clone()))
        })
        .map(|(s, _)| s)
        .collect()
}

fn same_service(a: &Service, b: &v1::Service) -> bool {
    a.name == b.name
        && a.vip == b.vip
        && a.port == b.port
        && a.protocol == b.protocol
        && a.kind == b.kind
        && a.endpoints == b.endpoints
}

/// Everything the old parser made of `text`, the compact one makes too. Returns the rule count.
fn agrees(what: &str, text: &str) -> usize {
    let old = v1::parse_iptables_save(text);
    let new = parse_iptables_save(text);
    assert_eq!(new.issues, old.issues, "{what}: issues");
    let (o, n) = (&old.value, &new.value);
    assert!(n.overflow.is_none(), "{what}");
    assert_eq!(n.tables, o.tables, "{what}: tables");
    let chains: Vec<(String, String, String)> = n
        .declared_chains()
        .map(|(t, c, p)| (t.into(), c.into(), p.into()))
        .collect();
    let old_chains: Vec<(String, String, String)> = o
        .chains
        .iter()
        .map(|c| (c.table.clone(), c.name.clone(), c.policy.clone()))
        .collect();
    assert_eq!(chains, old_chains, "{what}: chains");
    assert_eq!(n.rules.len(), o.rules.len(), "{what}: rules");
    let s = |a: Option<iptables::Arg<'_>>| a.map(|a| a.to_string());
    for (r, w) in n.iter().zip(&o.rules) {
        let at = format!("{what}:{}", w.line);
        assert_eq!(r.line(), w.line, "{at}");
        assert_eq!(r.table(), w.table, "{at}");
        assert_eq!(r.chain(), w.chain, "{at}");
        assert_eq!(r.text(), w.text, "{at}");
        assert_eq!(r.target(), w.target.as_deref(), "{at}");
        assert_eq!(s(r.protocol()), w.protocol, "{at}");
        assert_eq!(s(r.dst()), w.dst, "{at}");
        assert_eq!(s(r.dport()), w.dport, "{at}");
        assert_eq!(s(r.out_iface()), w.out_iface, "{at}");
        assert_eq!(r.comment(), w.comment.as_deref(), "{at}");
        assert_eq!(
            r.probability().map(f64::to_bits),
            w.probability.map(f64::to_bits),
            "{at}"
        );
        assert_eq!(r.to_destination(), w.to_destination.as_deref(), "{at}");
        assert_eq!(r.random_fully(), w.random_fully, "{at}");
        // What is not lifted is read from the text again, the same way.
        assert_eq!(s(r.option(&["-s", "--source"])), w.src, "{at}");
        assert_eq!(s(r.option(&["-i", "--in-interface"])), w.in_iface, "{at}");
        assert_eq!(
            r.option(&["--to-source"]).map(|a| a.value.into_owned()),
            w.to_source,
            "{at}"
        );
        assert_eq!(r.has("--random"), w.random, "{at}");
    }
    assert_eq!(n.has_kube_proxy(), o.has_kube_proxy(), "{what}");
    let svcs = n.services();
    let old_svcs = unshadowed(o, o.services());
    assert_eq!(svcs.len(), old_svcs.len(), "{what}: services");
    for (a, b) in svcs.iter().zip(&old_svcs) {
        assert!(same_service(a, b), "{what}: {a:?} != {b:?}");
    }
    let snat: Vec<_> = n
        .source_nat_rules("x")
        .into_iter()
        .map(|r| (r.line, r.text, r.masquerade, r.out_iface, r.random_fully))
        .collect();
    let mut seen = std::collections::HashSet::new();
    let old_snat: Vec<_> = o
        .source_nat_rules("x")
        .into_iter()
        .zip(
            o.rules
                .iter()
                .filter(|r| matches!(r.target.as_deref(), Some("MASQUERADE") | Some("SNAT"))),
        )
        .filter(|(_, r)| seen.insert((r.table.clone(), r.text.clone())))
        .map(|(r, _)| (r.line, r.text, r.masquerade, r.out_iface, r.random_fully))
        .collect();
    assert_eq!(snat, old_snat, "{what}: source NAT");
    n.rules.len()
}

#[test]
fn every_corpus_file_reads_as_before() {
    let Some(dir) = corpus_dir() else {
        eprintln!("SKIP: node corpus absent (set NETSLEUTH_NODE_CORPUS)");
        return;
    };
    let (mut n_files, mut n_rules) = (0, 0);
    for f in files(&dir) {
        let bytes = std::fs::read(&f).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        n_rules += agrees(&f.display().to_string(), &text);
        n_files += 1;
    }
    eprintln!("{n_files} corpus files, {n_rules} rules read as before");
    assert!(n_files > 100 && n_rules > 1000, "{n_files} {n_rules}");
}

#[test]
fn fixture_and_test_rulesets_read_as_before() {
    let mut n = 0;
    for e in std::fs::read_dir(common::fixtures_dir()).unwrap().flatten() {
        if !e.file_name().to_string_lossy().ends_with(".tar.gz") {
            continue;
        }
        let facts = netsleuth_node::read_bundle(&e.path()).unwrap();
        for (path, bytes) in facts.artifacts() {
            if path.ends_with("tables-save.txt") || path.ends_with("legacy-save.txt") {
                n += agrees(path, &String::from_utf8_lossy(bytes));
            }
        }
    }
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    for name in ["xtables-rich.rules", "xtables-rich6.rules"] {
        n += agrees(name, &std::fs::read_to_string(data.join(name)).unwrap());
    }
    assert!(n > 50, "{n}");
}

/// A kube-proxy ruleset of `services` Services with 3 endpoints, plus the shapes the parser must not
/// lose: counters, negations, quoted comments with escapes, load balancer chains, node ports, plain
/// DNAT, SNAT with and without --random-fully, duplicated rules.
fn kube_ruleset(services: u32) -> String {
    let ip = |base: [u8; 4], i: u32| std::net::Ipv4Addr::from(u32::from_be_bytes(base) + i);
    let mut chains = String::from("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-POSTROUTING - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n:KUBE-NODEPORTS - [0:0]\n");
    let mut rules = String::from(concat!(
        "[12:720] -A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n",
        "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n",
        "-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n",
        "-A POSTROUTING -s 10.244.0.0/16 ! -o cni0 -j MASQUERADE\n",
        "-A POSTROUTING -s 10.244.0.0/16 ! -o cni0 -j MASQUERADE\n",
        "-A POSTROUTING -s 172.17.0.0/16 -o eth0 -j SNAT --to-source 192.0.2.7 --random\n",
        "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n",
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n",
        "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n",
        "-A PREROUTING -d 192.0.2.1/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.0.0.2:8080\n",
        "-A PREROUTING -d 192.0.2.1/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.0.0.2:8080\n",
        "-A PREROUTING ! -d 192.0.2.2/32 -p tcp -j DNAT --to-destination 10.0.0.3\n",
        "-A PREROUTING -d 192.0.2.3/32 ! -p udp -m multiport ! --dports 1000:2000 -j DNAT --to-destination 10.0.0.4\n",
        "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n",
    ));
    for s in 0..services {
        let svc = format!("KUBE-SVC-{s:016X}");
        let name = format!("ns{}/svc{s}:http", s % 50);
        let vip = ip([10, 96, 0, 0], s + 1);
        chains.push_str(&format!(":{svc} - [0:0]\n"));
        rules.push_str(&format!("-A KUBE-SERVICES -d {vip}/32 -p tcp -m comment --comment \"{name} cluster IP\" -m tcp --dport 80 -j {svc}\n"));
        if s % 7 == 0 {
            // A load balancer: KUBE-FW- on to the Service chain of the same hash; an escaped comment.
            let fw = format!("KUBE-FW-{s:016X}");
            chains.push_str(&format!(":{fw} - [0:0]\n"));
            rules.push_str(&format!("-A KUBE-SERVICES -d 203.0.113.{}/32 -p tcp -m comment --comment \"{name} loadbalancer IP \\\"x\\\"\" -m tcp --dport 443 -j {fw}\n", s % 250));
            rules.push_str(&format!(
                "-A {fw} -m comment --comment \"{name} loadbalancer IP\" -j {svc}\n"
            ));
            rules.push_str(&format!("-A KUBE-NODEPORTS -p tcp -m comment --comment \"{name}\" -m tcp --dport {} -j {svc}\n", 30000 + s % 2000));
        }
        rules.push_str(&format!("-A {svc} ! -s 10.244.0.0/16 -d {vip}/32 -p tcp -m comment --comment \"{name} cluster IP\" -m tcp --dport 80 -j KUBE-MARK-MASQ\n"));
        for e in 0..3u32 {
            let sep = format!("KUBE-SEP-{s:012X}{e:04X}");
            let ep = ip([10, 244, 0, 0], s * 3 + e + 2);
            chains.push_str(&format!(":{sep} - [0:0]\n"));
            let prob = match e {
                0 => " -m statistic --mode random --probability 0.33333333349",
                1 => " -m statistic --mode random --probability 0.50000000000",
                _ => "",
            };
            rules.push_str(&format!(
                "-A {svc} -m comment --comment \"{name} -> {ep}:8080\"{prob} -j {sep}\n"
            ));
            rules.push_str(&format!(
                "-A {sep} -s {ep}/32 -m comment --comment \"{name}\" -j KUBE-MARK-MASQ\n"
            ));
            rules.push_str(&format!("-A {sep} -p tcp -m comment --comment \"{name}\" -m tcp -j DNAT --to-destination {ep}:8080\n"));
        }
    }
    format!("# Generated by iptables-save v1.8.9 (nf_tables)\n{chains}{rules}COMMIT\n*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -i lo -j ACCEPT\n-A INPUT -p tcp --dport 22 -j DNAT --to-destination 1.2.3.4\nCOMMIT\n")
}

#[test]
fn generated_kube_proxy_rulesets_read_as_before() {
    let text = kube_ruleset(2_000);
    let n = agrees("kube_ruleset(2000)", &text);
    assert!(n > 22_000, "{n}");
    let rs = parse_iptables_save(&text).value;
    let svcs = rs.services();
    // Shadowed duplicates make no second Service or source-NAT rule.
    assert_eq!(svcs.iter().filter(|s| s.vip == "192.0.2.1").count(), 1);
    assert_eq!(
        rs.source_nat_rules("x")
            .iter()
            .filter(|r| r.out_iface.as_deref() == Some("!cni0"))
            .count(),
        1
    );
    let lb = svcs.iter().find(|s| s.kind == "loadbalancer IP").unwrap();
    assert_eq!(lb.name, "ns0/svc0:http");
    assert_eq!(lb.endpoints.len(), 3);
    assert_eq!(lb.endpoints[0].1, 0.33333333349);
    // The escaped comment is unescaped, and the rule's text is kept as written.
    let r = rs
        .iter()
        .find(|r| r.comment().is_some_and(|c| c.ends_with("\"x\"")))
        .unwrap();
    assert_eq!(r.comment(), Some("ns0/svc0:http loadbalancer IP \"x\""));
    assert!(r.text().contains(r#"\"x\""#));
}

/// A record stays small: what the compact form is for (the old `Rule` was 336 bytes and up to a dozen
/// allocations).
#[test]
fn a_rule_is_a_small_fixed_record() {
    assert!(
        std::mem::size_of::<Rule>() <= 56,
        "{}",
        std::mem::size_of::<Rule>()
    );
    let text = kube_ruleset(1_000);
    let rs = parse_iptables_save(&text).value;
    // Text once, plus a fixed record per rule; per chain a 12-byte declaration and its name once in
    // the name table (its bytes, an 8-byte range and at most four 8-byte slots); a few other names.
    let names: usize = rs.declared_chains().map(|(_, c, _)| c.len()).sum();
    let bound = text.len()
        + rs.rules.len() * std::mem::size_of::<Rule>()
        + rs.chains.len() * (12 + 8 + 32)
        + names
        + (64 << 10);
    assert!(rs.heap_bytes() <= bound, "{} > {bound}", rs.heap_bytes());
    assert!(
        rs.heap_bytes() < 2 * text.len(),
        "{} vs {}",
        rs.heap_bytes(),
        text.len()
    );
}

#[test]
fn the_budget_is_what_the_readme_says() {
    assert_eq!(MAX_RULES, 750_000);
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    assert!(
        readme.contains("750,000 rules per bundle"),
        "README's reliability section states the rule budget"
    );
}

#[test]
fn past_the_budget_rules_are_counted_not_kept() {
    let text = kube_ruleset(100); // 1,161 rules, 427 declarations
    let mut budget = RuleBudget::new(1_000);
    let p = parse_iptables_save_within(&text, &mut budget);
    let rs = &p.value;
    assert_eq!(rs.rules.len(), 1_000);
    assert_eq!(budget.rules, 0);
    let o = rs.overflow.expect("overflow");
    let all = parse_iptables_save(&text).value;
    assert_eq!(o.rules as usize + 1_000, all.rules.len());
    // The first rule not kept is the 1,001st.
    assert_eq!(o.line, all.rule(1_000).line() as u64);
    // Two declarations (`*filter`, `:INPUT`) come after it: counted too.
    assert_eq!(o.declarations, 2);
    assert_eq!(rs.tables, vec!["nat".to_string()]);
    assert_eq!((o.line, o.rules), (1_426, 161));
    assert_eq!(
        o.message("netns/node/iptables-save.txt"),
        "rule budget (1,000 rules per bundle) reached at line 1,426 of netns/node/iptables-save.txt: 161 further rules (and 2 chain or table declaration(s)) counted, not analysed; Service assembly is incomplete"
    );
    // What was kept is still assembled.
    assert!(!rs.services().is_empty());
    // Nothing left: the next ruleset keeps nothing, from its first rule on.
    let q = parse_iptables_save_within("*nat\n:A - [0:0]\n-A A -j B\n", &mut budget);
    assert!(q.value.rules.is_empty());
    assert_eq!(q.value.chains.len(), 1);
    let o = q.value.overflow.unwrap();
    assert_eq!((o.line, o.rules, o.declarations), (3, 1, 0));
    // An empty or rule-less text does not overflow.
    let q = parse_iptables_save_within("# nothing\n", &mut budget);
    assert!(q.value.overflow.is_none());
}

fn facts_of(members: &[(&str, Vec<u8>)]) -> NodeFacts {
    let mut arts = Artifacts::new();
    let mut entries = Vec::new();
    for (p, b) in members {
        arts.insert(p.to_string(), b.clone());
        entries.push(ArtifactEntry {
            path: p.to_string(),
            status: ArtifactStatus::Ok,
            source: "test".into(),
            error: None,
            duration_ms: None,
        });
    }
    let manifest = Manifest {
        schema: BUNDLE_SCHEMA.into(),
        namespaces: vec![NamespaceEntry {
            id: "node".into(),
            is_node: true,
            ..Default::default()
        }],
        artifacts: entries,
        ..Default::default()
    };
    NodeFacts::from_artifacts(manifest, arts)
}

/// One budget per bundle: rulesets of 500,000 and 300,000 rules (IPv4 and IPv6) overflow it in the
/// second, whose diagnostic names the line and the count; `check` still reports what it found.
#[test]
fn the_rule_budget_diagnostic_names_the_member_line_and_count() {
    assert_eq!(MAX_RULES, 750_000);
    let rules = |n: u32, vip: &str| {
        let mut t = format!("*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-A - [0:0]\n:KUBE-SEP-A - [0:0]\n-A KUBE-SERVICES -d {vip} -p tcp -m tcp --dport 80 -j KUBE-SVC-A\n-A KUBE-SVC-A -j KUBE-SEP-A\n-A KUBE-SEP-A -p tcp -j DNAT --to-destination 10.244.0.2:8080\n");
        t.reserve(n as usize * 16);
        for i in 3..n {
            t.push_str(&format!("-A X{} -j Y\n", i % 1000));
        }
        t.push_str("COMMIT\n");
        t.into_bytes()
    };
    let v4 = format!("netns/node/{}", paths::IPTABLES);
    let v6 = format!("netns/node/{}", paths::IP6TABLES);
    let facts = facts_of(&[
        (&v4, rules(500_000, "10.96.0.10/32")),
        (&v6, rules(300_000, "fd00::a/128")),
    ]);
    let ns = facts.node_netns().unwrap();
    assert_eq!(ns.iptables.as_ref().unwrap().rules.len(), 500_000);
    assert!(ns.iptables.as_ref().unwrap().overflow.is_none());
    let v6rs = ns.ip6tables.as_ref().unwrap();
    assert_eq!(v6rs.rules.len(), 250_000);
    let budget: Vec<_> = facts
        .diagnostics
        .iter()
        .filter(|d| d.code == "rule-budget")
        .collect();
    assert_eq!(budget.len(), 1, "{:?}", facts.diagnostics);
    let d = budget[0];
    assert_eq!(d.source, v6);
    // Rule k of the IPv6 file is on line k + 4 (a table and three chains first): the 250,001st.
    assert_eq!(d.line, Some(250_005));
    assert_eq!(d.count, 50_000);
    assert_eq!(d.message, format!("rule budget (750,000 rules per bundle) reached at line 250,005 of {v6}: 50,000 further rules counted, not analysed; Service assembly is incomplete"));
    // check still reports what it found: both Services (kept before the budget ran out) and the notice.
    let report = check(&facts, &CheckOptions::default());
    assert!(report.diagnostics.iter().any(|d| d.code == "rule-budget"));
    let vips: Vec<&str> = ns.services().iter().map(|s| s.vip.as_str()).collect();
    assert_eq!(vips, ["10.96.0.10", "fd00::a"]);
    assert_eq!(report.summary.namespaces[0].iptables_rules, 750_000);
}

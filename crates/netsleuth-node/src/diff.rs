//! `diff A B`: what differs between two nodes, the differences that matter for the catalogue first
//! (the seeds' authors found tcp_tw_recycle=1 and a small tcp_max_syn_backlog exactly this way).

use crate::check::check;
use crate::detect::CheckOptions;
use crate::facts::{NodeFacts, Presence};
use netsleuth_core::detect::{self as core, CATALOGUE};
use netsleuth_core::Incident;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// The catalogue incident a sysctl decides (`Incident::sysctls`), if any.
pub fn relevant_sysctl(key: &str) -> Option<&'static Incident> {
    CATALOGUE.iter().copied().find(|i| i.sysctls.contains(&key))
}

/// Keys whose values differ on every node or every boot, never by configuration.
fn volatile(key: &str) -> bool {
    key.ends_with("_count")
        || key.contains("secret")
        || key.contains("fastopen_key")
        || key.contains("boot_id")
        || key.ends_with(".mtu")
        || key.contains("base_reachable_time")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiffItem {
    /// 0 = decides a catalogue incident, 1 = node identity (kernel, libc, resolvers), 2 = other.
    pub rank: u8,
    /// `kernel`, `sysctl`, `module`, `nat-rule`, `resolver`, `libc`, `go`, `finding`.
    pub area: String,
    pub key: String,
    pub a: Option<String>,
    pub b: Option<String>,
    /// The id of the catalogue incident the difference decides.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incident: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DiffReport {
    pub a: String,
    pub b: String,
    pub items: Vec<DiffItem>,
}

fn item(
    rank: u8,
    area: &str,
    key: impl Into<String>,
    a: Option<String>,
    b: Option<String>,
    incident: Option<&'static Incident>,
) -> DiffItem {
    DiffItem {
        rank,
        area: area.into(),
        key: key.into(),
        a,
        b,
        incident: incident.map(|i| i.id.to_string()),
    }
}

pub fn diff(a: &NodeFacts, b: &NodeFacts) -> DiffReport {
    let mut items = Vec::new();
    if a.kernel != b.kernel {
        items.push(item(
            1,
            "kernel",
            "release",
            a.kernel.clone(),
            b.kernel.clone(),
            None,
        ));
    }
    let has_brnf = |f: &NodeFacts| {
        f.modules
            .as_ref()
            .map(|m| m.iter().any(|x| x == "br_netfilter").to_string())
    };
    if has_brnf(a) != has_brnf(b) {
        items.push(item(
            0,
            "module",
            "br_netfilter loaded",
            has_brnf(a),
            has_brnf(b),
            Some(&core::bridge_nf_bypass::INCIDENT),
        ));
    }
    let (na, nb) = (a.node_netns(), b.node_netns());
    let empty = BTreeMap::new();
    let sa = na.and_then(|n| n.sysctls.as_ref()).unwrap_or(&empty);
    let sb = nb.and_then(|n| n.sysctls.as_ref()).unwrap_or(&empty);
    let keys: BTreeSet<&String> = sa.keys().chain(sb.keys()).collect();
    for k in keys {
        let (va, vb) = (sa.get(k), sb.get(k));
        if va == vb || volatile(k) {
            continue;
        }
        match relevant_sysctl(k) {
            Some(inc) => items.push(item(
                0,
                "sysctl",
                k.clone(),
                va.cloned(),
                vb.cloned(),
                Some(inc),
            )),
            // A key only one node has is mostly a device name (conf.veth1234.*): noise, unless relevant.
            None if va.is_some() && vb.is_some() => {
                items.push(item(2, "sysctl", k.clone(), va.cloned(), vb.cloned(), None))
            }
            None => {}
        }
    }
    let nat = |f: &NodeFacts| -> BTreeSet<String> {
        f.node_netns()
            .map(|n| {
                n.source_nat_rules()
                    .iter()
                    .map(|r| {
                        format!(
                            "{} {}{}",
                            if r.masquerade { "MASQUERADE" } else { "SNAT" },
                            r.out_iface
                                .as_deref()
                                .map(|o| format!("-o {o} "))
                                .unwrap_or_default(),
                            if r.random_fully {
                                "--random-fully"
                            } else {
                                "(no --random-fully)"
                            }
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let (ra, rb) = (nat(a), nat(b));
    for r in ra.symmetric_difference(&rb) {
        items.push(item(
            0,
            "nat-rule",
            r.clone(),
            ra.contains(r).then(|| "present".into()),
            rb.contains(r).then(|| "present".into()),
            Some(&core::snat_port_clash::INCIDENT),
        ));
    }
    let resolver = |f: &NodeFacts| -> (Option<String>, Option<String>, &'static str) {
        match f.node_root() {
            Some(r) => (
                r.resolv.present().map(|c| {
                    c.nameservers
                        .iter()
                        .map(|n| n.addr.clone())
                        .collect::<Vec<_>>()
                        .join(" ")
                }),
                r.resolv.present().map(|c| {
                    c.options
                        .iter()
                        .map(|(o, _)| o.clone())
                        .collect::<Vec<_>>()
                        .join(" ")
                }),
                match r.nsswitch {
                    Presence::Present(_) => "present",
                    Presence::Absent => "absent",
                    Presence::Unknown => "unknown",
                },
            ),
            None => (None, None, "unknown"),
        }
    };
    let (xa, xb) = (resolver(a), resolver(b));
    if xa.0 != xb.0 {
        items.push(item(
            0,
            "resolver",
            "node nameservers",
            xa.0,
            xb.0,
            Some(&core::dns_upstream_unreachable::INCIDENT),
        ));
    }
    if xa.1 != xb.1 {
        items.push(item(
            0,
            "resolver",
            "node resolv.conf options",
            xa.1,
            xb.1,
            Some(&core::dns_conntrack_race::INCIDENT),
        ));
    }
    if xa.2 != xb.2 {
        items.push(item(
            0,
            "resolver",
            "node nsswitch.conf",
            Some(xa.2.into()),
            Some(xb.2.into()),
            Some(&core::go_resolver_dns_first::INCIDENT),
        ));
    }
    // Container images are matched by their processes' names (pids differ between nodes).
    let images = |f: &NodeFacts| -> BTreeMap<String, String> {
        f.roots
            .iter()
            .filter(|r| !r.is_node)
            .map(|r| {
                let libc = r
                    .libc
                    .as_ref()
                    .map(|l| format!("{} {}", l.kind, l.version.as_deref().unwrap_or("?")))
                    .unwrap_or_default();
                let go: Vec<String> = r
                    .go_binaries
                    .iter()
                    .map(|g| g.info.go_version.clone())
                    .collect();
                (
                    r.comms.join(","),
                    format!(
                        "{libc}{}{}",
                        if go.is_empty() { "" } else { "; " },
                        go.join(" ")
                    ),
                )
            })
            .collect()
    };
    let (ia, ib) = (images(a), images(b));
    for k in ia.keys().chain(ib.keys()).collect::<BTreeSet<_>>() {
        if ia.get(k) != ib.get(k) {
            items.push(item(
                1,
                "image",
                k.clone(),
                ia.get(k).cloned(),
                ib.get(k).cloned(),
                None,
            ));
        }
    }
    let opts = CheckOptions::default();
    let fa: BTreeSet<(&'static str, String)> = check(a, &opts)
        .findings
        .iter()
        .map(|f| (f.id, format!("{:?}", f.kind)))
        .collect();
    let fb: BTreeSet<(&'static str, String)> = check(b, &opts)
        .findings
        .iter()
        .map(|f| (f.id, format!("{:?}", f.kind)))
        .collect();
    for (id, kind) in fa.symmetric_difference(&fb) {
        let has =
            |s: &BTreeSet<(&str, String)>| s.contains(&(*id, kind.clone())).then(|| kind.clone());
        items.push(item(
            0,
            "finding",
            *id,
            has(&fa),
            has(&fb),
            core::incident(id),
        ));
    }
    items.sort_by(|x, y| {
        x.rank
            .cmp(&y.rank)
            .then(x.area.cmp(&y.area))
            .then(x.key.cmp(&y.key))
    });
    DiffReport {
        a: a.manifest.target.clone(),
        b: b.manifest.target.clone(),
        items,
    }
}

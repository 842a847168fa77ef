//! iproute2 output: `ip -j -d addr show` (links with kind/master and their addresses), `ip -j route show
//! table all` and `ip -j rule`, plus the text forms `ip addr` / `ip route` for artifacts pasted by people.

use super::{numbered_lines, IssueLog, Parsed};
use serde_json::Value;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Addr {
    /// `inet` or `inet6`.
    pub family: String,
    pub local: String,
    pub prefixlen: u8,
    pub scope: String,
    pub secondary: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Link {
    pub ifindex: u32,
    pub name: String,
    /// `bridge`, `veth`, `dummy`, `vxlan` … (`ip -d`); `None` for plain devices.
    pub kind: Option<String>,
    /// The bridge (or bond) this link is a port of.
    pub master: Option<String>,
    pub operstate: String,
    pub flags: Vec<String>,
    /// A bridge's own `nf_call_iptables` option (it overrides a 0 sysctl for that bridge).
    pub bridge_nf_call_iptables: Option<bool>,
    /// A bridge port's hairpin mode (`ip -d`: `info_slave_data.hairpin`).
    pub hairpin: Option<bool>,
    /// The peer's ifindex of a veth (in the namespace `link_netnsid` names), or the lower device's.
    pub link_index: Option<u32>,
    pub mtu: Option<u32>,
    pub addrs: Vec<Addr>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Route {
    pub table: String,
    /// `unicast`, `local`, `broadcast`, `blackhole` …
    pub rtype: String,
    pub dst: String,
    pub dev: Option<String>,
    pub gateway: Option<String>,
    pub prefsrc: Option<String>,
    pub protocol: Option<String>,
}

fn s(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(|x| {
        x.as_str()
            .map(str::to_string)
            .or_else(|| x.as_u64().map(|n| n.to_string()))
    })
}

fn json_array(text: &str, issues: &mut IssueLog) -> Vec<Value> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(a)) => a,
        Ok(_) => {
            issues.push(0, "not-an-array", "expected a JSON array");
            Vec::new()
        }
        Err(e) => {
            issues.push(e.line() as u64, "bad-json", &e.to_string());
            Vec::new()
        }
    }
}

/// `ip -j -d addr show`.
pub fn parse_addr_json(text: &str) -> Parsed<Vec<Link>> {
    let mut issues = IssueLog::default();
    let mut links = Vec::new();
    for (i, l) in json_array(text, &mut issues).iter().enumerate() {
        let Some(name) = s(l, "ifname") else {
            issues.push(0, "link-without-name", &format!("item {i}"));
            continue;
        };
        let info = l.get("linkinfo");
        let addrs = l
            .get("addr_info")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| {
                        Some(Addr {
                            family: s(x, "family")?,
                            local: s(x, "local")?,
                            prefixlen: x.get("prefixlen").and_then(Value::as_u64).unwrap_or(0)
                                as u8,
                            scope: s(x, "scope").unwrap_or_default(),
                            secondary: x.get("secondary").and_then(Value::as_bool).unwrap_or(false),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        links.push(Link {
            ifindex: l.get("ifindex").and_then(Value::as_u64).unwrap_or(0) as u32,
            name,
            kind: info.and_then(|i| s(i, "info_kind")),
            master: s(l, "master"),
            operstate: s(l, "operstate").unwrap_or_default(),
            flags: l
                .get("flags")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|f| f.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            bridge_nf_call_iptables: info
                .and_then(|i| i.get("info_data"))
                .and_then(|d| d.get("nf_call_iptables"))
                .and_then(Value::as_u64)
                .map(|v| v != 0),
            hairpin: info
                .and_then(|i| i.get("info_slave_data"))
                .and_then(|d| d.get("hairpin"))
                .and_then(|h| h.as_bool().or_else(|| h.as_u64().map(|v| v != 0))),
            link_index: l
                .get("link_index")
                .and_then(Value::as_u64)
                .map(|v| v as u32),
            mtu: l.get("mtu").and_then(Value::as_u64).map(|v| v as u32),
            addrs,
        });
    }
    Parsed {
        value: links,
        issues,
    }
}

/// `ip -j route show table all` (IPv4 and IPv6 dumps may be concatenated as two arrays on two lines).
pub fn parse_route_json(text: &str) -> Parsed<Vec<Route>> {
    let mut issues = IssueLog::default();
    let mut routes = Vec::new();
    for chunk in text.lines().filter(|l| !l.trim().is_empty()) {
        for r in json_array(chunk, &mut issues) {
            routes.push(Route {
                table: s(&r, "table").unwrap_or_else(|| "main".into()),
                rtype: s(&r, "type").unwrap_or_else(|| "unicast".into()),
                dst: s(&r, "dst").unwrap_or_default(),
                dev: s(&r, "dev"),
                gateway: s(&r, "gateway"),
                prefsrc: s(&r, "prefsrc"),
                protocol: s(&r, "protocol"),
            });
        }
    }
    Parsed {
        value: routes,
        issues,
    }
}

/// `ip -j rule` (kept as `priority: text` strings; the detectors only show them).
pub fn parse_rule_json(text: &str) -> Parsed<Vec<String>> {
    let mut issues = IssueLog::default();
    let mut out = Vec::new();
    for chunk in text.lines().filter(|l| !l.trim().is_empty()) {
        for r in json_array(chunk, &mut issues) {
            let prio = r.get("priority").and_then(Value::as_u64).unwrap_or(0);
            let src = s(&r, "src").unwrap_or_else(|| "all".into());
            let table = s(&r, "table").unwrap_or_default();
            out.push(format!("{prio}: from {src} lookup {table}"));
        }
    }
    Parsed { value: out, issues }
}

const ROUTE_TYPES: &[&str] = &[
    "unicast",
    "local",
    "broadcast",
    "multicast",
    "anycast",
    "blackhole",
    "unreachable",
    "prohibit",
    "throw",
    "nat",
];

/// `ip route` / `ip route show table all` text.
pub fn parse_route_text(text: &str) -> Parsed<Vec<Route>> {
    let mut issues = IssueLog::default();
    let mut routes = Vec::new();
    for (n, line) in numbered_lines(text) {
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        let words: Vec<&str> = t.split_whitespace().collect();
        let (rtype, rest) = if ROUTE_TYPES.contains(&words[0]) {
            (words[0], &words[1..])
        } else {
            ("unicast", &words[..])
        };
        let Some(dst) = rest.first() else {
            issues.push(n, "unknown-line", t);
            continue;
        };
        if dst.contains('=')
            || dst.ends_with(':')
            || !(dst.contains('.') || dst.contains(':') || *dst == "default")
        {
            issues.push(n, "unknown-line", t);
            continue;
        }
        let mut r = Route {
            table: "main".into(),
            rtype: rtype.into(),
            dst: dst.to_string(),
            ..Default::default()
        };
        let mut i = 1;
        while i < rest.len() {
            let v = rest.get(i + 1).map(|s| s.to_string());
            match rest[i] {
                "dev" => r.dev = v,
                "via" => r.gateway = v,
                "src" => r.prefsrc = v,
                "table" => r.table = v.unwrap_or_default(),
                "proto" => r.protocol = v,
                _ => {
                    i += 1;
                    continue;
                }
            }
            i += 2;
        }
        routes.push(r);
    }
    Parsed {
        value: routes,
        issues,
    }
}

/// `ip addr` / `ip -d addr` text.
pub fn parse_addr_text(text: &str) -> Parsed<Vec<Link>> {
    let mut issues = IssueLog::default();
    let mut links: Vec<Link> = Vec::new();
    let kinds = [
        "bridge",
        "veth",
        "dummy",
        "vxlan",
        "ipip",
        "bond",
        "macvlan",
        "ipvlan",
        "tun",
        "ifb",
        "geneve",
        "wireguard",
    ];
    let mut after_link_line = false;
    for (n, line) in numbered_lines(text) {
        if line.trim().is_empty() {
            continue;
        }
        let indented = line.starts_with(' ') || line.starts_with('\t');
        let t = line.trim();
        if !indented {
            // `2: eth0@if5: <BROADCAST,…> mtu 1500 … master cni0 state UP …`
            let mut parts = t.splitn(3, ": ");
            let (Some(idx), Some(name)) = (parts.next(), parts.next()) else {
                issues.push(n, "unknown-line", t);
                continue;
            };
            let Ok(ifindex) = idx.parse::<u32>() else {
                issues.push(n, "unknown-line", t);
                continue;
            };
            let rest = parts.next().unwrap_or("");
            let words: Vec<&str> = rest.split_whitespace().collect();
            let after = |k: &str| {
                words
                    .iter()
                    .position(|w| *w == k)
                    .and_then(|i| words.get(i + 1))
                    .map(|s| s.to_string())
            };
            let flags = rest
                .strip_prefix('<')
                .and_then(|r| r.split('>').next())
                .map(|f| f.split(',').map(str::to_string).collect())
                .unwrap_or_default();
            links.push(Link {
                ifindex,
                name: name.split('@').next().unwrap_or(name).to_string(),
                master: after("master"),
                operstate: after("state").unwrap_or_default(),
                flags,
                mtu: after("mtu").and_then(|m| m.parse().ok()),
                ..Default::default()
            });
            after_link_line = false;
            continue;
        }
        let Some(link) = links.last_mut() else {
            issues.push(n, "address-before-link", t);
            continue;
        };
        let words: Vec<&str> = t.split_whitespace().collect();
        match words[0] {
            "inet" | "inet6" => {
                let Some((local, plen)) = words.get(1).and_then(|a| a.split_once('/')) else {
                    issues.push(n, "bad-address", t);
                    continue;
                };
                let scope = words
                    .iter()
                    .position(|w| *w == "scope")
                    .and_then(|i| words.get(i + 1))
                    .unwrap_or(&"");
                link.addrs.push(Addr {
                    family: words[0].to_string(),
                    local: local.to_string(),
                    prefixlen: plen.parse().unwrap_or(0),
                    scope: scope.to_string(),
                    secondary: words.contains(&"secondary"),
                });
            }
            w if w.starts_with("link/") => after_link_line = true,
            w if after_link_line && kinds.contains(&w) && link.kind.is_none() => {
                link.kind = Some(w.to_string());
                if w == "bridge" {
                    if let Some(i) = words.iter().position(|x| *x == "nf_call_iptables") {
                        link.bridge_nf_call_iptables = words.get(i + 1).map(|v| *v != "0");
                    }
                }
            }
            _ => {}
        }
    }
    Parsed {
        value: links,
        issues,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addr_json_links_kinds_and_masters() {
        let j = r#"[{"ifindex":2,"ifname":"cni0","flags":["UP"],"operstate":"UP","linkinfo":{"info_kind":"bridge","info_data":{"nf_call_iptables":0}},"addr_info":[{"family":"inet","local":"10.1.0.1","prefixlen":24,"scope":"global"},{"family":"inet","local":"10.1.0.9","prefixlen":24,"scope":"global","secondary":true}]},
        {"ifindex":4,"ifname":"veth0","master":"cni0","linkinfo":{"info_kind":"veth","info_slave_kind":"bridge"},"addr_info":[]}]"#;
        let p = parse_addr_json(j);
        assert!(p.issues.is_empty());
        assert_eq!(p.value[0].kind.as_deref(), Some("bridge"));
        assert_eq!(p.value[0].bridge_nf_call_iptables, Some(false));
        assert!(p.value[0].addrs[1].secondary);
        assert_eq!(p.value[1].master.as_deref(), Some("cni0"));
    }

    #[test]
    fn route_text_and_json_agree_on_local_table() {
        let t = parse_route_text("local 203.0.113.10 dev kube-ipvs0 table local proto kernel scope host src 203.0.113.10\ndefault via 10.0.0.1 dev eth0\n");
        assert_eq!(t.value[0].rtype, "local");
        assert_eq!(t.value[0].table, "local");
        assert_eq!(t.value[1].gateway.as_deref(), Some("10.0.0.1"));
        let j = parse_route_json(
            r#"[{"type":"local","dst":"203.0.113.10","dev":"kube-ipvs0","table":"local"}]"#,
        );
        assert_eq!(j.value[0].dev.as_deref(), Some("kube-ipvs0"));
    }

    #[test]
    fn addr_text_reads_secondary_and_master() {
        let p = parse_addr_text("4: veth0@veth1: <BROADCAST,MULTICAST> mtu 1500 qdisc noop master cni0 state DOWN group default\n    link/ether 36:d5 brd ff:ff\n    veth \n    inet 10.1.0.9/24 scope global secondary veth0\n");
        assert_eq!(p.value[0].name, "veth0");
        assert_eq!(p.value[0].master.as_deref(), Some("cni0"));
        assert_eq!(p.value[0].kind.as_deref(), Some("veth"));
        assert!(p.value[0].addrs[0].secondary);
    }
}

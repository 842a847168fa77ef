//! nftables rulesets: `nft -j list ruleset` (lenient: typed envelopes, expressions kept as JSON values,
//! unknown objects counted) and, for what the detectors need, the text form `nft list ruleset`.
//!
//! Rules that carry an `xt` expression were written by iptables-nft; `iptables-save` shows them with all
//! their flags (`--random-fully`), while the JSON hides the target's options. Their NAT meaning is taken
//! from iptables-save, never from here, so that an iptables-nft MASQUERADE is not misread as lacking
//! `--random-fully`.

use super::iptables::{Service, SourceNatRule};
use super::{numbered_lines, IssueLog, Parsed};
use serde_json::Value;
use std::collections::HashMap;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct NftRule {
    pub family: String,
    pub table: String,
    pub chain: String,
    pub handle: Option<u64>,
    /// Position in the `nftables` array (for JSON), or the line (for text).
    pub index: u32,
    pub expr: Vec<Value>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct NftRuleset {
    pub tables: Vec<(String, String)>,
    pub chains: Vec<(String, String, String)>,
    pub rules: Vec<NftRule>,
    /// Named maps and sets: (table, name, the JSON object).
    pub maps: Vec<(String, String, Value)>,
    /// Objects of kinds this model does not know (flowtable, ct helper …): kind → count.
    pub other_objects: HashMap<String, u64>,
}

/// Reads `nft -j` output: one document, or several one after another (one per table, as the collector
/// writes them).
pub fn parse_nft_json(text: &str) -> Parsed<NftRuleset> {
    let mut rs = NftRuleset::default();
    let mut issues = IssueLog::default();
    let mut base = 0u32;
    for doc in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
        let doc = match doc {
            Ok(v) => v,
            Err(e) => {
                issues.push(e.line() as u64, "bad-json", &e.to_string());
                break;
            }
        };
        let Some(items) = doc.get("nftables").and_then(Value::as_array) else {
            issues.push(
                0,
                "no-nftables-array",
                "top-level object has no `nftables` array",
            );
            continue;
        };
        for (i, item) in items.iter().enumerate() {
            let i = base + i as u32;
            let Some(obj) = item.as_object() else {
                issues.push(0, "bad-object", &format!("item {i} is not an object"));
                continue;
            };
            for (kind, body) in obj {
                let s = |k: &str| {
                    body.get(k)
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string()
                };
                match kind.as_str() {
                    "metainfo" => {}
                    "table" => rs.tables.push((s("family"), s("name"))),
                    "chain" => rs.chains.push((s("family"), s("table"), s("name"))),
                    "rule" => match body.get("expr").and_then(Value::as_array) {
                        Some(expr) => rs.rules.push(NftRule {
                            family: s("family"),
                            table: s("table"),
                            chain: s("chain"),
                            handle: body.get("handle").and_then(Value::as_u64),
                            index: i,
                            expr: expr.clone(),
                        }),
                        None => issues.push(0, "rule-without-expr", &format!("item {i}")),
                    },
                    "map" | "set" => rs.maps.push((s("table"), s("name"), body.clone())),
                    other => *rs.other_objects.entry(other.to_string()).or_insert(0) += 1,
                }
            }
        }
        base += items.len() as u32;
    }
    Parsed { value: rs, issues }
}

fn has_key(v: &Value, key: &str) -> bool {
    match v {
        Value::Object(m) => m.contains_key(key) || m.values().any(|x| has_key(x, key)),
        Value::Array(a) => a.iter().any(|x| has_key(x, key)),
        _ => false,
    }
}

fn flags_contain(v: Option<&Value>, flag: &str) -> bool {
    match v {
        Some(Value::String(s)) => s == flag,
        Some(Value::Array(a)) => a.iter().any(|x| x.as_str() == Some(flag)),
        _ => false,
    }
}

/// `oifname` match of a rule, `!` prefixed when negated; sets are written `{a,b}`.
fn oifname(expr: &[Value]) -> Option<String> {
    for e in expr {
        let Some(m) = e.get("match") else { continue };
        let key = m
            .get("left")
            .and_then(|l| l.get("meta"))
            .and_then(|m| m.get("key"))
            .and_then(Value::as_str);
        if !matches!(key, Some("oifname") | Some("oif")) {
            continue;
        }
        let right = match m.get("right") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Object(o)) if o.contains_key("set") => {
                let items: Vec<String> = o["set"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                format!("{{{}}}", items.join(","))
            }
            Some(other) => other.to_string(),
            None => continue,
        };
        let neg = m.get("op").and_then(Value::as_str) == Some("!=");
        return Some(if neg { format!("!{right}") } else { right });
    }
    None
}

fn rule_text(r: &NftRule) -> String {
    format!(
        "{} {} {} handle {}: {}",
        r.family,
        r.table,
        r.chain,
        r.handle
            .map(|h| h.to_string())
            .unwrap_or_else(|| "-".into()),
        Value::Array(r.expr.clone())
    )
}

impl NftRuleset {
    /// masquerade/snat statements of native nft rules (iptables-nft rules are skipped; see module doc).
    pub fn source_nat_rules(&self, source: &str) -> Vec<SourceNatRule> {
        let mut out = Vec::new();
        for r in &self.rules {
            if r.expr.iter().any(|e| e.get("xt").is_some()) {
                continue;
            }
            for e in &r.expr {
                let (masquerade, body) = match (e.get("masquerade"), e.get("snat")) {
                    (Some(b), _) => (true, b),
                    (_, Some(b)) => (false, b),
                    _ => continue,
                };
                out.push(SourceNatRule {
                    source: source.into(),
                    line: r.index,
                    text: rule_text(r),
                    masquerade,
                    out_iface: oifname(&r.expr),
                    random_fully: flags_contain(body.get("flags"), "fully-random"),
                });
            }
        }
        out
    }

    /// Services of kube-proxy's nftables mode (`service-ips` map → service chain → endpoint chains with
    /// `dnat`), plus native `dnat` rules matching an `ip daddr`.
    pub fn services(&self) -> Vec<Service> {
        let mut out = Vec::new();
        let chain_rules = |table: &str, chain: &str| -> Vec<&NftRule> {
            self.rules
                .iter()
                .filter(|r| r.table == table && r.chain == chain)
                .collect()
        };
        for (table, name, body) in &self.maps {
            if name != "service-ips" {
                continue;
            }
            let Some(elems) = body.get("elem").and_then(Value::as_array) else {
                continue;
            };
            for el in elems {
                let Some(pair) = el.as_array() else { continue };
                let (Some(key), Some(verdict)) = (pair.first(), pair.get(1)) else {
                    continue;
                };
                let Some(concat) = key.get("concat").and_then(Value::as_array) else {
                    continue;
                };
                let vip = concat
                    .first()
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let protocol = concat
                    .get(1)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let port = concat.get(2).and_then(Value::as_u64).map(|p| p as u16);
                let Some(svc_chain) = jump_targets(verdict).into_iter().next() else {
                    continue;
                };
                let mut endpoints = Vec::new();
                let ep_chains: Vec<String> = chain_rules(table, &svc_chain)
                    .iter()
                    .flat_map(|r| jump_targets(&Value::Array(r.expr.clone())))
                    .collect();
                let n = ep_chains
                    .iter()
                    .filter(|c| c.starts_with("endpoint-"))
                    .count()
                    .max(1);
                for ep in ep_chains.iter().filter(|c| c.starts_with("endpoint-")) {
                    for r in chain_rules(table, ep) {
                        if let Some(d) = r.expr.iter().find_map(|e| e.get("dnat")) {
                            endpoints.push((dnat_text(d), 1.0 / n as f64));
                        }
                    }
                }
                // Chain names read `service-HASH-namespace/name/proto/portname`.
                let name = svc_chain
                    .splitn(3, '-')
                    .nth(2)
                    .unwrap_or(&svc_chain)
                    .to_string();
                out.push(Service {
                    name,
                    vip,
                    port,
                    protocol: protocol.into(),
                    kind: "cluster IP",
                    endpoints,
                });
            }
        }
        for r in &self.rules {
            if r.expr.iter().any(|e| e.get("xt").is_some()) {
                continue;
            }
            let Some(d) = r.expr.iter().find_map(|e| e.get("dnat")) else {
                continue;
            };
            let daddr = r.expr.iter().find_map(|e| {
                let m = e.get("match")?;
                let p = m.get("left")?.get("payload")?;
                (p.get("field")?.as_str()? == "daddr"
                    && m.get("op").and_then(Value::as_str) != Some("!="))
                .then(|| m.get("right")?.as_str().map(str::to_string))?
            });
            let dport = r.expr.iter().find_map(|e| {
                let m = e.get("match")?;
                let p = m.get("left")?.get("payload")?;
                (p.get("field")?.as_str()? == "dport")
                    .then(|| m.get("right")?.as_u64().map(|p| p as u16))?
            });
            if let Some(vip) = daddr {
                out.push(Service {
                    name: format!("{} {} {}", r.table, r.chain, r.handle.unwrap_or(0)),
                    vip,
                    port: dport,
                    protocol: "all".into(),
                    kind: "dnat",
                    endpoints: vec![(dnat_text(d), 1.0)],
                });
            }
        }
        out
    }

    pub fn has_kube_proxy(&self) -> bool {
        self.tables.iter().any(|(_, n)| n == "kube-proxy")
    }

    /// Whether any rule uses an expression this model treats as opaque JSON (for diagnostics).
    pub fn uses(&self, key: &str) -> bool {
        self.rules
            .iter()
            .any(|r| r.expr.iter().any(|e| has_key(e, key)))
    }
}

fn dnat_text(d: &Value) -> String {
    let addr = d
        .get("addr")
        .map(|a| {
            a.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| a.to_string())
        })
        .unwrap_or_default();
    match d.get("port").and_then(Value::as_u64) {
        Some(p) => format!("{addr}:{p}"),
        None => addr,
    }
}

fn jump_targets(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    if k == "goto" || k == "jump" {
                        if let Some(t) = x.get("target").and_then(Value::as_str) {
                            out.push(t.to_string());
                        }
                    } else {
                        walk(x, out);
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    walk(v, &mut out);
    out
}

/// The text form (`nft list ruleset`): tables, chains and the masquerade/snat statements.
pub fn parse_nft_text(text: &str) -> Parsed<NftTextRuleset> {
    let mut rs = NftTextRuleset::default();
    let mut issues = IssueLog::default();
    let mut table = String::new();
    let mut chain = String::new();
    let mut depth = 0i32;
    for (n, line) in numbered_lines(text) {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let opens = t.matches('{').count() as i32;
        let closes = t.matches('}').count() as i32;
        if depth == 0 {
            if let Some(rest) = t.strip_prefix("table ") {
                table = rest.trim_end_matches('{').trim().to_string();
                rs.tables.push(table.clone());
            } else if !t.starts_with('}') && !t.starts_with("flush") && !t.starts_with("add ") {
                issues.push(n, "unknown-line", t);
            }
        } else if depth == 1 {
            if let Some(rest) = t.strip_prefix("chain ") {
                chain = rest.trim_end_matches('{').trim().to_string();
            }
        } else if depth == 2 && !chain.is_empty() && !t.starts_with("type ") && !t.starts_with('}')
        {
            let masquerade = t.contains("masquerade");
            let snat = t.contains("snat ");
            if masquerade || snat {
                let out_iface = oifname_text(t);
                rs.source_nat.push(SourceNatRule {
                    source: "".into(),
                    line: n as u32,
                    text: format!("{table} {chain}: {t}"),
                    masquerade,
                    out_iface,
                    random_fully: t.contains("fully-random"),
                });
            }
            rs.rules += 1;
        }
        depth += opens - closes;
        if depth < 2 {
            chain.clear();
        }
        if depth < 0 {
            issues.push(n, "unbalanced-brace", t);
            depth = 0;
        }
    }
    Parsed { value: rs, issues }
}

fn oifname_text(t: &str) -> Option<String> {
    let i = t.find("oifname ")?;
    let rest = &t[i + 8..];
    let (neg, rest) = match rest.strip_prefix("!= ") {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let name = rest.split_whitespace().next()?.trim_matches('"');
    Some(if neg {
        format!("!{name}")
    } else {
        name.to_string()
    })
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct NftTextRuleset {
    pub tables: Vec<String>,
    pub rules: u64,
    pub source_nat: Vec<SourceNatRule>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_masquerade_flags_and_xt_rules_skipped() {
        let j = r#"{"nftables":[{"metainfo":{"version":"1.0.6"}},{"table":{"family":"ip","name":"t"}},
        {"rule":{"family":"ip","table":"t","chain":"c","handle":2,"expr":[{"match":{"op":"==","left":{"meta":{"key":"oifname"}},"right":"eth1"}},{"masquerade":{"flags":["fully-random","persistent"]}}]}},
        {"rule":{"family":"ip","table":"t","chain":"c","handle":3,"expr":[{"masquerade":{"flags":"random"}}]}},
        {"rule":{"family":"ip","table":"nat","chain":"POSTROUTING","handle":4,"expr":[{"xt":{"type":"target","name":"MASQUERADE"}}]}},
        {"flowtable":{"name":"f"}}]}"#;
        let p = parse_nft_json(j);
        assert!(p.issues.is_empty());
        let m = p.value.source_nat_rules("nft");
        assert_eq!(m.len(), 2);
        assert!(m[0].random_fully);
        assert_eq!(m[0].out_iface.as_deref(), Some("eth1"));
        assert!(!m[1].random_fully);
        assert_eq!(p.value.other_objects["flowtable"], 1);
    }

    #[test]
    fn several_documents_one_per_table() {
        let j = "{\"nftables\":[{\"table\":{\"family\":\"inet\",\"name\":\"a\"}}]}\n{\"nftables\":[{\"table\":{\"family\":\"ip\",\"name\":\"b\"}}]}\n";
        let p = parse_nft_json(j);
        assert!(p.issues.is_empty(), "{:?}", p.issues);
        assert_eq!(p.value.tables.len(), 2);
        assert_eq!(
            parse_nft_json("{\"nftables\":[]} {broken")
                .issues
                .count("bad-json"),
            1
        );
    }

    #[test]
    fn kube_proxy_nft_service_map() {
        let j = r#"{"nftables":[{"table":{"family":"ip","name":"kube-proxy"}},
        {"map":{"family":"ip","table":"kube-proxy","name":"service-ips","type":["ipv4_addr","inet_proto","inet_service"],"map":"verdict",
          "elem":[[{"concat":["10.96.0.10","udp",53]},{"goto":{"target":"service-ABC-kube-system/kube-dns/udp/dns"}}]]}},
        {"rule":{"family":"ip","table":"kube-proxy","chain":"service-ABC-kube-system/kube-dns/udp/dns","expr":[{"vmap":{"key":{"numgen":{"mode":"random","mod":2,"offset":0}},"data":{"set":[[0,{"goto":{"target":"endpoint-1"}}],[1,{"goto":{"target":"endpoint-2"}}]]}}}]}},
        {"rule":{"family":"ip","table":"kube-proxy","chain":"endpoint-1","expr":[{"dnat":{"addr":"10.244.0.2","port":53}}]}},
        {"rule":{"family":"ip","table":"kube-proxy","chain":"endpoint-2","expr":[{"dnat":{"addr":"10.244.0.3","port":53}}]}}]}"#;
        let p = parse_nft_json(j);
        let s = p.value.services();
        let dns = s.iter().find(|s| s.kind == "cluster IP").unwrap();
        assert_eq!(dns.vip, "10.96.0.10");
        assert_eq!(dns.port, Some(53));
        assert_eq!(dns.name, "kube-system/kube-dns/udp/dns");
        assert_eq!(dns.endpoints.len(), 2);
    }

    #[test]
    fn text_form_masquerade() {
        let p = parse_nft_text("table ip nat {\n\tchain KUBE-POSTROUTING {\n\t\t mark and 0x4000 == 0x4000 counter packets 0 bytes 0 masquerade \n\t}\n\tchain P {\n\t\toifname != \"cni0\" masquerade fully-random\n\t}\n}\n");
        assert!(p.issues.is_empty(), "{:?}", p.issues);
        assert_eq!(p.value.source_nat.len(), 2);
        assert!(!p.value.source_nat[0].random_fully);
        assert_eq!(p.value.source_nat[1].out_iface.as_deref(), Some("!cni0"));
    }
}

//! Resolver configuration: `resolv.conf`, `nsswitch.conf`, `hosts`, and CoreDNS Corefiles (which
//! upstreams `forward`/`proxy` use).

use super::{numbered_lines, IssueLog, Parsed};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nameserver {
    pub addr: String,
    pub line: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvConf {
    pub nameservers: Vec<Nameserver>,
    pub search: Vec<String>,
    /// `options` words in order (`ndots:5`, `single-request-reopen`, `use-vc` …), with their line.
    pub options: Vec<(String, u32)>,
}

impl ResolvConf {
    pub fn has_option(&self, name: &str) -> bool {
        self.options
            .iter()
            .any(|(o, _)| o == name || o.split(':').next() == Some(name))
    }

    /// The options that keep A and AAAA from racing on one socket (glibc only).
    pub fn race_avoiding_options(&self) -> Vec<&str> {
        self.options
            .iter()
            .map(|(o, _)| o.as_str())
            .filter(|o| {
                matches!(
                    *o,
                    "single-request-reopen" | "single-request" | "use-vc" | "usevc" | "tcp"
                )
            })
            .collect()
    }
}

pub fn parse_resolv_conf(text: &str) -> Parsed<ResolvConf> {
    let mut rc = ResolvConf::default();
    let mut issues = IssueLog::default();
    for (n, line) in numbered_lines(text) {
        // `;` and `#` start comments anywhere on the line (glibc accepts both at line start; people
        // write them at the end too).
        let t = line.split(['#', ';']).next().unwrap_or("").trim();
        if t.is_empty() {
            continue;
        }
        let mut w = t.split_whitespace();
        let key = w.next().unwrap_or("");
        let args: Vec<&str> = w.collect();
        match key {
            "nameserver" => match args.first() {
                Some(a) => rc.nameservers.push(Nameserver {
                    addr: a.to_string(),
                    line: n as u32,
                }),
                None => issues.push(n, "nameserver-without-address", t),
            },
            "search" | "domain" => rc.search.extend(args.iter().map(|s| s.to_string())),
            "options" => rc
                .options
                .extend(args.iter().map(|o| (o.to_string(), n as u32))),
            "sortlist" | "lookup" | "family" => {}
            _ => issues.push(n, "unknown-keyword", t),
        }
    }
    Parsed { value: rc, issues }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nsswitch {
    /// Sources of the `hosts:` database in order (`files`, `dns`, `myhostname` …), if the line exists.
    pub hosts: Option<Vec<String>>,
    pub hosts_line: Option<u32>,
}

pub fn parse_nsswitch(text: &str) -> Parsed<Nsswitch> {
    let mut ns = Nsswitch::default();
    let mut issues = IssueLog::default();
    for (n, line) in numbered_lines(text) {
        let t = line.split('#').next().unwrap_or("").trim();
        if t.is_empty() {
            continue;
        }
        let Some((db, rest)) = t.split_once(':') else {
            issues.push(n, "unknown-line", t);
            continue;
        };
        if db.trim() == "hosts" {
            ns.hosts = Some(
                rest.split_whitespace()
                    .filter(|s| !s.starts_with('['))
                    .map(str::to_string)
                    .collect(),
            );
            ns.hosts_line = Some(n as u32);
        }
    }
    Parsed { value: ns, issues }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostsEntry {
    pub addr: String,
    pub names: Vec<String>,
    pub line: u32,
}

pub fn parse_hosts(text: &str) -> Parsed<Vec<HostsEntry>> {
    let mut out = Vec::new();
    let mut issues = IssueLog::default();
    for (n, line) in numbered_lines(text) {
        let t = line.split('#').next().unwrap_or("").trim();
        if t.is_empty() {
            continue;
        }
        let mut w = t.split_whitespace();
        let addr = w.next().unwrap_or("");
        let names: Vec<String> = w.map(str::to_string).collect();
        if addr.parse::<std::net::IpAddr>().is_err() || names.is_empty() {
            issues.push(n, "unknown-line", t);
            continue;
        }
        out.push(HostsEntry {
            addr: addr.to_string(),
            names,
            line: n as u32,
        });
    }
    Parsed { value: out, issues }
}

/// Names in `/etc/hosts` beyond the ones every image carries (localhost, ip6-*, the container's own
/// hostname is not known here): those are the names a DNS-first resolver would ask DNS for.
pub fn custom_host_names(entries: &[HostsEntry]) -> Vec<String> {
    entries
        .iter()
        .flat_map(|e| e.names.iter())
        .filter(|n| !(n.starts_with("localhost") || n.starts_with("ip6-") || n.starts_with("ip6_")))
        .cloned()
        .collect()
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorefileUpstream {
    /// `forward` or `proxy`.
    pub plugin: String,
    /// Zone the plugin serves (`.` for everything).
    pub from: String,
    /// Upstreams as written (`/etc/resolv.conf`, `8.8.8.8`, `tls://…`).
    pub to: Vec<String>,
    pub line: u32,
}

pub fn parse_corefile(text: &str) -> Parsed<Vec<CorefileUpstream>> {
    let mut out = Vec::new();
    let issues = IssueLog::default();
    for (n, line) in numbered_lines(text) {
        let t = line
            .split('#')
            .next()
            .unwrap_or("")
            .trim()
            .trim_end_matches('{')
            .trim();
        let mut w = t.split_whitespace();
        let plugin = w.next().unwrap_or("");
        if plugin != "forward" && plugin != "proxy" {
            continue;
        }
        let from = w.next().unwrap_or("").to_string();
        out.push(CorefileUpstream {
            plugin: plugin.into(),
            from,
            to: w.map(str::to_string).collect(),
            line: n as u32,
        });
    }
    Parsed { value: out, issues }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_comments_options_and_lines() {
        let p = parse_resolv_conf("nameserver 75.75.75.75        ; c\n    nameserver 2001:558:feed::1\noptions ndots:5 single-request-reopen\nbogus x\n");
        assert_eq!(p.value.nameservers[1].addr, "2001:558:feed::1");
        assert_eq!(p.value.nameservers[1].line, 2);
        assert!(p.value.has_option("ndots"));
        assert_eq!(
            p.value.race_avoiding_options(),
            vec!["single-request-reopen"]
        );
        assert_eq!(p.issues.count("unknown-keyword"), 1);
    }

    #[test]
    fn nsswitch_hosts_and_custom_hosts() {
        let n = parse_nsswitch("passwd: files\nhosts:  files [NOTFOUND=return] dns\n");
        assert_eq!(
            n.value.hosts,
            Some(vec!["files".to_string(), "dns".to_string()])
        );
        let h = parse_hosts(
            "127.0.0.1 localhost\n::1 localhost ip6-localhost\n10.0.0.5 apiserver.example\n",
        );
        assert_eq!(custom_host_names(&h.value), vec!["apiserver.example"]);
    }

    #[test]
    fn corefile_forward_and_proxy() {
        let c = parse_corefile(".:53 {\n    proxy . /etc/resolv.conf\n    forward . 8.8.8.8 1.1.1.1 {\n      max_concurrent 1000\n    }\n}\n");
        assert_eq!(c.value.len(), 2);
        assert_eq!(c.value[0].to, vec!["/etc/resolv.conf"]);
        assert_eq!(c.value[1].to, vec!["8.8.8.8", "1.1.1.1"]);
    }
}

//! IPVS virtual services: `ipvsadm -Ln` text and `/proc/net/ip_vs` (hex addresses).

use super::{numbered_lines, IssueLog, Parsed};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VirtualService {
    pub protocol: String,
    /// `ip:port`, or `fwmark N` for FWM services.
    pub address: String,
    pub scheduler: String,
    pub real_servers: Vec<String>,
}

pub fn parse_ipvs(text: &str) -> Parsed<Vec<VirtualService>> {
    let mut out: Vec<VirtualService> = Vec::new();
    let mut issues = IssueLog::default();
    for (n, line) in numbered_lines(text) {
        let t = line.trim();
        if t.is_empty()
            || t.starts_with("IP Virtual Server")
            || t.starts_with("Prot ")
            || t.starts_with("Port ")
            || t.starts_with("-> RemoteAddress")
            || t == "..."
        {
            continue;
        }
        let w: Vec<&str> = t.split_whitespace().collect();
        if w[0] == "->" {
            match (out.last_mut(), w.get(1)) {
                (Some(vs), Some(addr)) => vs.real_servers.push(decode(addr)),
                _ => issues.push(n, "real-server-without-service", t),
            }
            continue;
        }
        if matches!(w[0], "TCP" | "UDP" | "SCTP" | "FWM") && w.len() >= 2 {
            let address = if w[0] == "FWM" {
                format!("fwmark {}", w[1])
            } else {
                decode(w[1])
            };
            out.push(VirtualService {
                protocol: w[0].to_lowercase(),
                address,
                scheduler: w.get(2).unwrap_or(&"").to_string(),
                real_servers: Vec::new(),
            });
            continue;
        }
        issues.push(n, "unknown-line", t);
    }
    Parsed { value: out, issues }
}

/// `/proc/net/ip_vs` writes `C0A80016:0CEA` and `[2620:0000:…]:0050`; ipvsadm writes them decoded.
fn decode(addr: &str) -> String {
    if addr.len() == 13
        && addr.as_bytes()[8] == b':'
        && addr.chars().all(|c| c.is_ascii_hexdigit() || c == ':')
    {
        if let (Ok(ip), Ok(port)) = (
            u32::from_str_radix(&addr[..8], 16),
            u16::from_str_radix(&addr[9..], 16),
        ) {
            return format!("{}:{port}", std::net::Ipv4Addr::from(ip));
        }
    }
    if let Some(rest) = addr.strip_prefix('[') {
        if let Some((a, p)) = rest.split_once("]:") {
            if a.len() == 39 {
                if let (Ok(ip), Ok(port)) =
                    (a.parse::<std::net::Ipv6Addr>(), u16::from_str_radix(p, 16))
                {
                    return format!("[{ip}]:{port}");
                }
            }
        }
    }
    addr.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipvsadm_and_proc_forms() {
        let a = parse_ipvs("IP Virtual Server version 1.2.1 (size=4096)\nProt LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\nTCP  10.102.128.4:3080 rr\n  -> 10.244.0.235:8080            Masq    1      0          0\n");
        assert_eq!(a.value[0].address, "10.102.128.4:3080");
        assert_eq!(a.value[0].real_servers, vec!["10.244.0.235:8080"]);
        let p = parse_ipvs(
            "TCP  C0A80016:0CEA wlc\n  -> C0A85216:0CEA      Tunnel  100    248        2\n",
        );
        assert_eq!(p.value[0].address, "192.168.0.22:3306");
        assert!(p.issues.is_empty());
    }
}

//! kube-proxy-style iptables rules (iptables mode), loaded with `iptables-restore` inside the node
//! namespace: KUBE-SERVICES → KUBE-SVC-… → KUBE-SEP-… balanced with `-m statistic --mode random`,
//! KUBE-NODEPORTS, KUBE-MARK-MASQ and KUBE-POSTROUTING MASQUERADE, KUBE-FORWARD dropping INVALID.
//! The shape follows what kube-proxy 1.2x writes, so that the node's `iptables-save` in a lab run
//! looks like a real node's.

use crate::error::Result;
use crate::netns::Netns;
use crate::topology::CLUSTER_CIDR;
use std::fmt::Write;
use std::net::Ipv4Addr;

#[derive(Debug, Clone)]
pub struct Service {
    /// `namespace/name:port`, as kube-proxy's comments say.
    pub name: String,
    pub vip: Ipv4Addr,
    pub port: u16,
    /// `tcp` or `udp`.
    pub protocol: &'static str,
    pub endpoints: Vec<(Ipv4Addr, u16)>,
    pub node_port: Option<u16>,
}

impl Service {
    /// A ClusterIP Service `name` at `vip:port`/`protocol` balanced over `endpoints`.
    pub fn new(
        name: &str,
        vip: Ipv4Addr,
        port: u16,
        protocol: &'static str,
        endpoints: &[(Ipv4Addr, u16)],
    ) -> Service {
        Service {
            name: name.into(),
            vip,
            port,
            protocol,
            endpoints: endpoints.to_vec(),
            node_port: None,
        }
    }

    /// The same Service also exposed on every node's `port` (NodePort, externalTrafficPolicy: Local).
    pub fn with_node_port(mut self, port: u16) -> Service {
        self.node_port = Some(port);
        self
    }
}

#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub services: Vec<Service>,
    /// Extra nat POSTROUTING rules after KUBE-POSTROUTING (ip-masq-agent, a CNI's MASQUERADE), in
    /// iptables-save syntax without the leading `-A POSTROUTING`.
    pub extra_postrouting: Vec<String>,
}

impl Rules {
    pub fn render(&self) -> String {
        let mut chains = vec![
            "KUBE-SERVICES".to_string(),
            "KUBE-NODEPORTS".to_string(),
            "KUBE-POSTROUTING".to_string(),
            "KUBE-MARK-MASQ".to_string(),
        ];
        let mut body = String::new();
        let b = &mut body;
        wl(
            b,
            "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
        );
        wl(
            b,
            "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
        );
        wl(b, "-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING");
        for r in &self.extra_postrouting {
            wl(b, &format!("-A POSTROUTING {r}"));
        }
        wl(b, "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000");
        wl(
            b,
            "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
        );
        wl(b, "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0");
        wl(
            b,
            "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully",
        );
        for svc in &self.services {
            let svc_chain = format!(
                "KUBE-SVC-{}",
                chain_hash(&format!("{}{}", svc.name, svc.protocol))
            );
            chains.push(svc_chain.clone());
            let p = svc.protocol;
            wl(
                b,
                &format!(
                    "-A KUBE-SERVICES -d {}/32 -p {p} -m comment --comment \"{} cluster IP\" -m {p} --dport {} -j {svc_chain}",
                    svc.vip, svc.name, svc.port
                ),
            );
            wl(
                b,
                &format!(
                    "-A {svc_chain} ! -s {CLUSTER_CIDR} -d {}/32 -p {p} -m comment --comment \"{} cluster IP\" -m {p} --dport {} -j KUBE-MARK-MASQ",
                    svc.vip, svc.name, svc.port
                ),
            );
            if let Some(np) = svc.node_port {
                let ext = format!(
                    "KUBE-EXT-{}",
                    chain_hash(&format!("{}{}", svc.name, svc.protocol))
                );
                chains.push(ext.clone());
                wl(b, &format!("-A KUBE-NODEPORTS -p {p} -m comment --comment \"{}\" -m {p} --dport {np} -j {ext}", svc.name));
                // externalTrafficPolicy: Local keeps the client's source: no KUBE-MARK-MASQ here.
                wl(b, &format!("-A {ext} -j {svc_chain}"));
            }
            let n = svc.endpoints.len();
            for (i, (ip, port)) in svc.endpoints.iter().enumerate() {
                let sep = format!(
                    "KUBE-SEP-{}",
                    chain_hash(&format!("{}{}{ip}:{port}", svc.name, svc.protocol))
                );
                chains.push(sep.clone());
                let remaining = n - i;
                let comment = format!("-m comment --comment \"{} -> {ip}:{port}\"", svc.name);
                if remaining > 1 {
                    // kube-proxy's even split: endpoint i of n is taken with probability 1/(n-i).
                    wl(
                        b,
                        &format!(
                            "-A {svc_chain} {comment} -m statistic --mode random --probability {:.11} -j {sep}",
                            1.0 / remaining as f64
                        ),
                    );
                } else {
                    wl(b, &format!("-A {svc_chain} {comment} -j {sep}"));
                }
                wl(
                    b,
                    &format!(
                        "-A {sep} -s {ip}/32 -m comment --comment \"{}\" -j KUBE-MARK-MASQ",
                        svc.name
                    ),
                );
                wl(b, &format!("-A {sep} -p {p} -m comment --comment \"{}\" -m {p} -j DNAT --to-destination {ip}:{port}", svc.name));
            }
        }
        wl(
            b,
            "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS",
        );

        let mut out = String::from("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n");
        for c in &chains {
            let _ = writeln!(out, ":{c} - [0:0]");
        }
        out.push_str(&body);
        out.push_str("COMMIT\n");
        out.push_str(
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:KUBE-FORWARD - [0:0]\n\
             -A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD\n\
             -A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\n\
             -A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark 0x4000/0x4000 -j ACCEPT\n\
             -A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
             COMMIT\n",
        );
        out
    }

    /// Loads the rules into `node` with `iptables-restore` (and keeps a copy of the text it loaded).
    pub fn apply(&self, node: &Netns) -> Result<String> {
        let text = self.render();
        node.exec_stdin("iptables-restore", &["-w"], &text)?;
        Ok(text)
    }
}

fn wl(b: &mut String, line: &str) {
    b.push_str(line);
    b.push('\n');
}

/// 16 upper-case base32-ish characters, like kube-proxy's chain suffixes (it hashes with SHA-256; any
/// stable hash serves the lab, which only needs distinct, deterministic names).
fn chain_hash(s: &str) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in s.bytes() {
        h ^= byte as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut h2 = h.rotate_left(29) ^ 0x9e37_79b9_7f4a_7c15;
    let mut out = String::with_capacity(16);
    for i in 0..16 {
        let v = if i < 12 {
            (h >> (i * 5)) & 31
        } else {
            h2 = h2.wrapping_mul(0x0100_0000_01b3);
            (h2 >> 7) & 31
        };
        out.push(ALPHABET[v as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_endpoints_split_evenly_and_chains_are_declared() {
        let r = Rules {
            services: vec![Service {
                name: "default/web:http".into(),
                vip: Ipv4Addr::new(10, 96, 0, 20),
                port: 80,
                protocol: "tcp",
                endpoints: vec![
                    (Ipv4Addr::new(10, 244, 2, 11), 8080),
                    (Ipv4Addr::new(10, 244, 2, 12), 8080),
                ],
                node_port: None,
            }],
            extra_postrouting: vec![],
        };
        let text = r.render();
        assert!(text.contains("--probability 0.50000000000"));
        assert_eq!(text.matches("-j DNAT --to-destination").count(), 2);
        for line in text.lines().filter(|l| l.starts_with("-A KUBE-")) {
            let chain = line.split_whitespace().nth(1).unwrap();
            assert!(
                text.contains(&format!(":{chain} - [0:0]")),
                "undeclared chain {chain}"
            );
        }
    }
}

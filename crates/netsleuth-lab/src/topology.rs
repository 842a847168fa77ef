//! A small Kubernetes-like node built from network namespaces:
//!
//! ```text
//!   pod ns (eth0 10.244.1.x) ─ veth ─┐                           ┌─ veth ─ pod ns (10.244.2.x)
//!   pod ns (eth0 10.244.1.y) ─ veth ─┤ cni0 10.244.1.1/24        │ cni0 10.244.2.1/24
//!                                    node ns ── eth0 192.168.50.10/24 ══ 192.168.50.20/24 eth0 ── remote ns
//! ```
//!
//! The node namespace routes between its bridge and the remote node and holds the kube-proxy-style
//! rules (see [`crate::kube`]). Every name is lab-owned; the host's namespace is never touched.

use crate::error::{LabError, Result};
use crate::netns::Netns;
use std::net::Ipv4Addr;

pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 10);
pub const REMOTE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 20);
pub const NODE_POD_GW: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 1);
pub const REMOTE_POD_GW: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 1);
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";

/// Which machine a pod runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Machine {
    Node,
    Remote,
}

pub struct Pod {
    pub role: String,
    pub ip: Ipv4Addr,
    pub on: Machine,
    /// The pod's veth end in its machine's namespace (a cni0 port).
    pub host_veth: String,
    pub ns: Netns,
}

pub struct Topology {
    pub node: Netns,
    pub remote: Option<Netns>,
    pub pods: Vec<Pod>,
    remote_bridge: bool,
    veth_counter: u32,
}

impl Topology {
    /// The node namespace with its bridge `cni0` (10.244.1.1/24). IPv6 is disabled in every lab
    /// namespace so that captures hold only the scenario's own traffic (no router solicitations, MLD).
    pub fn new() -> Result<Topology> {
        let node = Netns::create("node")?;
        quiet_ipv6(&node)?;
        node.sysctl("net.ipv4.ip_forward", "1")?;
        make_bridge(&node, NODE_POD_GW)?;
        Ok(Topology {
            node,
            remote: None,
            pods: Vec::new(),
            remote_bridge: false,
            veth_counter: 0,
        })
    }

    /// Adds the remote node, linked to the node by a veth pair named `eth0` on both sides. With
    /// `with_pods`, the remote gets its own cni0 (10.244.2.1/24) and the two nodes route each other's
    /// pod subnets, as flannel's host-gw mode does.
    pub fn add_remote(&mut self, with_pods: bool) -> Result<()> {
        let remote = Netns::create("remote")?;
        quiet_ipv6(&remote)?;
        remote.sysctl("net.ipv4.ip_forward", "1")?;
        self.node.ip(&[
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            remote.name(),
        ])?;
        self.node
            .ip(&["addr", "add", &format!("{NODE_IP}/24"), "dev", "eth0"])?;
        self.node.ip(&["link", "set", "eth0", "up"])?;
        remote.ip(&["addr", "add", &format!("{REMOTE_IP}/24"), "dev", "eth0"])?;
        remote.ip(&["link", "set", "eth0", "up"])?;
        remote.ip(&["route", "add", "10.244.1.0/24", "via", &NODE_IP.to_string()])?;
        if with_pods {
            make_bridge(&remote, REMOTE_POD_GW)?;
            self.node.ip(&[
                "route",
                "add",
                "10.244.2.0/24",
                "via",
                &REMOTE_IP.to_string(),
            ])?;
            self.remote_bridge = true;
        }
        self.remote = Some(remote);
        Ok(())
    }

    /// A pod namespace with `eth0` on `on`'s bridge, default route via the bridge address.
    pub fn add_pod(&mut self, role: &str, ip: Ipv4Addr, on: Machine) -> Result<&Pod> {
        let (host, gw) = match on {
            Machine::Node => (&self.node, NODE_POD_GW),
            Machine::Remote => {
                assert!(
                    self.remote_bridge,
                    "add_remote(true) must come before remote pods"
                );
                (self.remote.as_ref().expect("remote exists"), REMOTE_POD_GW)
            }
        };
        let ns = Netns::create(role)?;
        quiet_ipv6(&ns)?;
        let veth = format!("veth{}", self.veth_counter);
        self.veth_counter += 1;
        host.ip(&[
            "link",
            "add",
            &veth,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns.name(),
        ])?;
        host.ip(&["link", "set", &veth, "master", "cni0", "up"])?;
        ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
        ns.ip(&["link", "set", "eth0", "up"])?;
        ns.ip(&["route", "add", "default", "via", &gw.to_string()])?;
        self.pods.push(Pod {
            role: role.to_string(),
            ip,
            on,
            host_veth: veth,
            ns,
        });
        Ok(self.pods.last().expect("just pushed"))
    }

    /// The pod of `role`, if it is one.
    pub fn pod(&self, role: &str) -> Option<&Pod> {
        self.pods.iter().find(|p| p.role == role)
    }

    /// Whether the remote node has pods behind it (it then routes for them, without NAT).
    pub fn remote_has_pods(&self) -> bool {
        self.remote_bridge
    }

    /// Every namespace, node first.
    pub fn all(&self) -> Vec<&Netns> {
        let mut v = vec![&self.node];
        v.extend(self.remote.iter());
        v.extend(self.pods.iter().map(|p| &p.ns));
        v
    }

    pub fn by_role(&self, role: &str) -> Option<&Netns> {
        self.all().into_iter().find(|n| n.role() == role)
    }

    /// The namespace of `role` (`node`, `remote` or a pod's role), as a scene names it.
    pub fn ns(&self, role: &str) -> Result<&Netns> {
        self.by_role(role).ok_or_else(|| LabError::Scene {
            detail: format!("the namespace `{role}`, which is not in its topology"),
        })
    }

    pub fn keep_all(&mut self) {
        self.node.keep();
        if let Some(r) = self.remote.as_mut() {
            r.keep();
        }
        for p in &mut self.pods {
            p.ns.keep();
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // Pods before their machines: a pod's veth peer then disappears with the pod, and the node's
        // bridge is never left with a dangling port in between.
        self.pods.clear();
    }
}

fn quiet_ipv6(ns: &Netns) -> Result<()> {
    // Absent when the kernel has no IPv6: nothing to quiet then.
    if ns.sysctl_get("net.ipv6.conf.all.disable_ipv6").is_some() {
        ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
        ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
    }
    Ok(())
}

fn make_bridge(ns: &Netns, gw: Ipv4Addr) -> Result<()> {
    ns.ip(&["link", "add", "cni0", "type", "bridge"])?;
    ns.ip(&["addr", "add", &format!("{gw}/24"), "dev", "cni0"])?;
    ns.ip(&["link", "set", "cni0", "up"])?;
    Ok(())
}

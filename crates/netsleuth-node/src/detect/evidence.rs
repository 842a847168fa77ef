//! Evidence helpers shared by the node detectors: the words for a config line, a fact, a counter and a
//! sysctl, and the node facts several incidents read (the Services a namespace's traffic goes through,
//! where a resolv.conf lives).

use super::Ctx;
use crate::facts::{NetnsFacts, RootFacts};
use crate::parse::iptables::Service;
use netsleuth_core::Evidence;

pub(crate) fn config(
    source: impl Into<String>,
    line: Option<u32>,
    text: impl Into<String>,
) -> Evidence {
    Evidence::Config {
        source: source.into(),
        line,
        text: text.into(),
    }
}

pub(crate) fn fact(source: impl Into<String>, text: impl Into<String>) -> Evidence {
    Evidence::Fact {
        source: source.into(),
        text: text.into(),
    }
}

pub(crate) fn counter(
    source: impl Into<String>,
    name: &str,
    before: Option<u64>,
    after: u64,
) -> Evidence {
    Evidence::Counter {
        source: source.into(),
        name: name.into(),
        before,
        after,
    }
}

pub(crate) fn sysctl_evidence(ns: &NetnsFacts, name: &str) -> Option<Evidence> {
    let v = ns.sysctl(name)?;
    Some(config(
        format!("{}/sysctl.txt", ns.prefix()),
        None,
        format!("{name} = {v}"),
    ))
}

/// Services whose DNAT this namespace's traffic goes through: its own, and for a pod namespace the
/// node's (kube-proxy programs the node; pod traffic is DNATed there).
pub(crate) fn reachable_services(ctx: &Ctx, ns: &NetnsFacts) -> Vec<Service> {
    let mut v = ns.services();
    if !ns.is_node {
        if let Some(node) = ctx.node() {
            v.extend(node.services());
        }
    }
    v
}

pub(crate) fn resolv_source(root: &RootFacts) -> String {
    format!("{}/etc/resolv.conf", root.prefix())
}

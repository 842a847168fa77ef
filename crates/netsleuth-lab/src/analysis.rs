//! The one place the lab calls the analysis core: the run's captures (node view and client view,
//! analysed together as two points of one incident) with the node facts the run measured.

use crate::report::NodeFacts;
use netsleuth_core::node::{NodeContext, ServiceInfo};
use netsleuth_core::{Analysis, Input};
use std::net::IpAddr;
use std::path::PathBuf;

pub fn node_context(f: &NodeFacts) -> NodeContext {
    NodeContext {
        source: "lab".into(),
        kernel_release: f.kernel_release.clone(),
        sysctls: f.sysctls.clone(),
        services: f
            .services
            .iter()
            .map(|s| ServiceInfo {
                name: s.name.clone(),
                vip: IpAddr::V4(s.vip),
                port: s.port,
                protocol: s.protocol.to_string(),
                endpoints: s
                    .endpoints
                    .iter()
                    .map(|(ip, p)| (IpAddr::V4(*ip), *p))
                    .collect(),
            })
            .collect(),
        local_addrs: f.local_addrs.clone(),
        resolvers: Vec::new(),
        ipvs_bound_addrs: f.ipvs_bound_addrs.clone(),
        nameservers: f.nameservers.clone(),
        hosts: f.hosts.clone(),
        masquerade_without_random_fully: f.masquerade_without_random_fully.clone(),
    }
}

pub fn analyze_captures(paths: &[PathBuf], facts: &NodeFacts) -> Analysis {
    let mut inputs = Vec::new();
    let mut failed = Vec::new();
    for p in paths {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match std::fs::File::open(p) {
            Ok(f) => inputs.push(Input {
                name,
                reader: Box::new(std::io::BufReader::new(f)),
            }),
            Err(e) => failed.push((name, format!("cannot open {}: {e}", p.display()))),
        }
    }
    let mut analysis = netsleuth_core::analyze(inputs, &node_context(facts));
    analysis.failed_inputs.extend(failed);
    analysis
}

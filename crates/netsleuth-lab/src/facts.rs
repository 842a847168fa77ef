//! The run's node facts, read the way `netsleuth collect --netns` reads a node: the recorded node's
//! namespace, with the pods on the same machine as its containers (their namespaces, and the files
//! the scene wrote for them as their roots), into a bundle beside the captures (`node.tar.gz`). The
//! analysis gets them as `analyze --node node.tar.gz` would (`NodeFacts` → `NodeContext`), plus the
//! sysctls an emulated scenario plays, which this kernel cannot show (said in the run's notes).
//! `facts.json` is that context, as `analyze --node facts.json` reads it.

use crate::error::{LabError, Result};
use crate::report::{Artifact, ArtifactKind};
use crate::topology::{Machine, Topology};
use netsleuth_core::node::NodeContext;
use netsleuth_node::{CollectOptions, Container, ProcessScope, Target};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// Where the node's facts went, and the context the analysis reads.
pub(crate) struct RunFacts {
    pub context: NodeContext,
    pub artifacts: Vec<Artifact>,
}

/// Collects the namespace of `node_role` into `out/node.tar.gz` and writes `out/facts.json`.
/// The node's own files (its `etc/resolv.conf`) are those the scene wrote under `out/<node_role>/`.
pub(crate) fn collect(
    topo: &Topology,
    node_role: &str,
    out: &Path,
    emulated_sysctls: &BTreeMap<String, String>,
) -> Result<RunFacts> {
    let node = topo.ns(node_role)?;
    let machine = if node_role == "remote" {
        Machine::Remote
    } else {
        Machine::Node
    };
    let node_root = out.join(node_role);
    std::fs::create_dir_all(&node_root)
        .map_err(|e| LabError::file("creating directory", &node_root, e))?;
    let containers = topo
        .pods
        .iter()
        .filter(|p| p.on == machine)
        .map(|p| {
            let root = out.join(&p.role);
            Container {
                name: p.role.clone(),
                netns: Some(p.ns.path()),
                // Only a pod the scene wrote files for has a known root; for the others the bundle
                // says nothing rather than "no resolv.conf".
                root: root.is_dir().then_some(root),
            }
        })
        .collect();
    let opts = CollectOptions {
        target: Target::Netns(node.path()),
        root: node_root,
        processes: ProcessScope::None,
        containers,
        // One sample after the traffic: the run's own counters (before/after) are in counters.json.
        samples: 1,
        interval: Duration::ZERO,
        command_timeout: Duration::from_secs(30),
        ..Default::default()
    };
    let facts = netsleuth_node::collect_live(&opts)?;
    let bundle = out.join("node.tar.gz");
    netsleuth_node::write_bundle(&facts, &bundle)?;
    let mut context = netsleuth_node::to_node_context(&facts);
    for (k, v) in emulated_sysctls {
        context.sysctls.insert(k.clone(), v.clone());
    }
    let facts_json = out.join("facts.json");
    let text = serde_json::to_string_pretty(&context).unwrap_or_default();
    std::fs::write(&facts_json, text + "\n")
        .map_err(|e| LabError::file("writing", &facts_json, e))?;
    Ok(RunFacts {
        context,
        artifacts: vec![
            Artifact {
                kind: ArtifactKind::NodeBundle,
                path: bundle,
                description: format!(
                    "netsleuth collect of the {node_role} namespace and its pods (read it with `netsleuth check --bundle` or `analyze --node`)"
                ),
            },
            Artifact {
                kind: ArtifactKind::NodeState,
                path: facts_json,
                description: "the node facts the analysis read (the bundle's, with the emulated sysctls): `analyze --node facts.json`".into(),
            },
        ],
    })
}

//! The one place the lab calls the analysis core: the run's captures (node view and client view,
//! analysed together as two points of one incident) with the node facts the run collected (see
//! `facts`).

use netsleuth_core::node::NodeContext;
use netsleuth_core::{Analysis, Input};
use std::path::PathBuf;

pub fn analyze_captures(paths: &[PathBuf], node: &NodeContext) -> Analysis {
    let mut inputs = Vec::new();
    let mut failed = Vec::new();
    for p in paths {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match std::fs::File::open(p) {
            Ok(f) => inputs.push(Input::stream(name, Box::new(std::io::BufReader::new(f)))),
            Err(e) => failed.push((name, format!("cannot open {}: {e}", p.display()))),
        }
    }
    let mut analysis = netsleuth_core::analyze(inputs, node);
    analysis.failed_inputs.extend(failed);
    analysis
}

//! netsleuth-node: the state of a node and of its containers, read-only, and what it says about the
//! incident catalogue.
//!
//! Code map:
//! - `parse::*` — pure parsers of node-state text (sysctl, /proc counters, conntrack, iptables-save,
//!   `nft -j`, iproute2, ss, resolver files). Never fail whole: unknown lines are counted with their line.
//! - `binary` — libc and Go build-info readers over bounded byte reads.
//! - `facts` — raw artifacts + manifest → [`NodeFacts`]; the same path for live checks and bundles.
//! - `collect` — the live adapter: `/proc`, `setns` per thread, the read-only tools; `--probe`.
//! - `bundle` — tar.gz of manifest.json + raw artifacts.
//! - `detect` — one module per catalogue incident (the core's module names), incident vs latent risk;
//!   `check` and `diff` on top. Version facts come from `netsleuth_core::versions`.
//! - `context` — facts for the capture analyser (`netsleuth_core::node::NodeContext`).
//!
//! Invariant: nothing in this crate changes the node. The only packets it sends are `--probe` queries.

pub mod binary;
pub mod bundle;
pub mod check;
pub mod collect;
pub mod context;
pub mod detect;
pub mod diff;
pub mod facts;
pub mod live;
pub mod parse;
pub mod probe;

pub use bundle::{read_bundle, write_bundle, BundleError};
pub use check::{check, CheckReport, FactsSummary};
pub use collect::{
    attach_probes, collect_live, probe_nameservers, CollectError, CollectOptions, Container,
    ProcessScope, Target,
};
pub use context::to_node_context;
pub use detect::CheckOptions;
pub use diff::{diff, DiffItem, DiffReport};
pub use facts::NodeFacts;
pub use probe::{ProbeOptions, ProbeResult};

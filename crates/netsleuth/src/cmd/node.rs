use super::CliError;
use crate::cli::{CheckArgs, CollectArgs, DiffArgs};
use netsleuth_core::node::NodeContext;
use std::path::Path;

pub fn node_context(_bundle: &Path) -> Result<NodeContext, CliError> {
    Err(CliError::Other("--node is not wired yet".into()))
}
pub fn check(_a: CheckArgs) -> Result<i32, CliError> {
    Err(CliError::Other("check is not wired yet".into()))
}
pub fn collect(_a: CollectArgs) -> Result<i32, CliError> {
    Err(CliError::Other("collect is not wired yet".into()))
}
pub fn diff(_a: DiffArgs) -> Result<i32, CliError> {
    Err(CliError::Other("diff is not wired yet".into()))
}

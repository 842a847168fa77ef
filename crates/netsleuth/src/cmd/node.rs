use super::CliError;
use crate::cli::{CheckArgs, CollectArgs, DiffArgs};
use netsleuth_core::node::NodeContext;
use std::path::Path;

/// Node facts for `analyze --node`: a bundle from `netsleuth collect`, or a `facts.json` (the shape
/// `netsleuth lab` writes beside its captures).
pub fn node_context(path: &Path) -> Result<NodeContext, CliError> {
    if path.extension().is_some_and(|e| e == "json") {
        let text = std::fs::read_to_string(path).map_err(CliError::io(format!(
            "reading node facts {}",
            path.display()
        )))?;
        let mut ctx: NodeContext = serde_json::from_str(&text)
            .map_err(|e| CliError::Other(format!("{} is not a node facts file: {e} (hint: give a bundle from `netsleuth collect` or a lab run's facts.json)", path.display())))?;
        if ctx.source.is_empty() {
            ctx.source = path.display().to_string();
        }
        return Ok(ctx);
    }
    Err(CliError::Other(
        "reading node bundles is not wired yet".into(),
    ))
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

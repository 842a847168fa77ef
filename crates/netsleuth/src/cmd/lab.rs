use super::CliError;
use crate::cli::LabArgs;

pub fn run(_a: LabArgs) -> Result<i32, CliError> {
    Err(CliError::Other("lab is not wired yet".into()))
}

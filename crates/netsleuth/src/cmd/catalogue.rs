use super::{emit_document, CliError, Sink};
use crate::cli::{Format, FormatArgs};
use netsleuth_core::detect::CATALOGUE;
use netsleuth_core::report::json::Document;

pub fn run(a: FormatArgs) -> Result<i32, CliError> {
    match a.format {
        Format::Human => {
            let mut s = String::new();
            for i in CATALOGUE {
                s.push_str(&format!("{:<26} {}\n", i.id, i.title));
            }
            Sink::new(&a).write(&s)?;
            Ok(0)
        }
        Format::Json | Format::Html => emit_document(&Document::catalogue(CATALOGUE), &a),
    }
}

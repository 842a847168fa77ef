use super::{write_stdout, CliError};
use crate::cli::{Format, FormatArgs};
use netsleuth_core::detect::CATALOGUE;

pub fn run(a: FormatArgs) -> Result<i32, CliError> {
    let text = match a.format {
        Format::Human => {
            let mut s = String::new();
            for i in CATALOGUE {
                s.push_str(&format!("{:<26} {}\n", i.id, i.title));
            }
            s
        }
        Format::Json => {
            let v: Vec<_> = CATALOGUE
                .iter()
                .map(|i| serde_json::json!({"id": i.id, "title": i.title, "explanation": i.explanation, "remedy": i.remedy}))
                .collect();
            serde_json::to_string_pretty(&v).expect("json") + "\n"
        }
    };
    write_stdout(&text)?;
    Ok(0)
}

//! `netsleuth lab list|run`: the lab crate runs scenarios; this adapter prints them with the same
//! report renderer as `analyze`.
//!
//! Exit codes: 0 every run proved what it should (an incident run reproduced its symptom and the
//! analysis named its id; a mitigated or healthy run showed neither), 1 some run did not, 2 error.

use super::{write_stdout, CliError};
use crate::cli::{Format, LabArgs, LabCommand, LabRunArgs};
use netsleuth_core::report::{self, Report};
use netsleuth_lab::RunOptions;

pub fn run(a: LabArgs) -> Result<i32, CliError> {
    match a.command {
        LabCommand::List(f) => list(f.format),
        LabCommand::Run(r) => run_scenarios(r),
        LabCommand::Cleanup => {
            netsleuth_lab::preflight().map_err(|e| CliError::Other(e.to_string()))?;
            // Only namespaces whose run is over (its process gone): a lab running beside us keeps its own.
            let removed = netsleuth_lab::cleanup(false);
            write_stdout(&format!(
                "removed {} lab namespace(s){}{}\n",
                removed.len(),
                if removed.is_empty() { "" } else { ": " },
                report::escape::for_terminal(&removed.join(", "))
            ))?;
            Ok(0)
        }
    }
}

fn list(format: Format) -> Result<i32, CliError> {
    let scenarios = netsleuth_lab::scenarios();
    let text = match format {
        Format::Json => {
            serde_json::to_string_pretty(scenarios).expect("scenario info serialises") + "\n"
        }
        Format::Human => {
            let mut s = String::new();
            for sc in scenarios {
                s.push_str(&format!(
                    "{:<28} {:<26} {:<9} {}\n{:<28} {}\n{:<28} mitigated: {}\n\n",
                    sc.name,
                    sc.incident.unwrap_or("(healthy)"),
                    sc.reproduction.label(),
                    sc.summary,
                    "",
                    sc.reproduction.explain(),
                    "",
                    sc.mitigation
                ));
            }
            s
        }
    };
    write_stdout(&text)?;
    Ok(0)
}

fn run_scenarios(a: LabRunArgs) -> Result<i32, CliError> {
    let names: Vec<&'static str> = if a.all {
        netsleuth_lab::scenarios().iter().map(|s| s.name).collect()
    } else {
        let name = a.scenario.as_deref().unwrap_or_default();
        vec![netsleuth_lab::scenario(name)
            .ok_or_else(|| CliError::Usage(format!("unknown scenario `{name}` (hint: `netsleuth lab list` shows the scenarios)")))?
            .name]
    };
    let mut all_ok = true;
    let mut json_runs = Vec::new();
    for name in names {
        let opts = RunOptions {
            mitigated: a.mitigated,
            out_dir: a
                .out
                .as_ref()
                .map(|d| if a.all { d.join(name) } else { d.clone() }),
            keep: a.keep,
            skip_analysis: false,
        };
        let r = netsleuth_lab::run(name, &opts).map_err(|e| CliError::Other(e.to_string()))?;
        let netsleuth_lab::Verdict { proven: ok, why } = r.verdict();
        all_ok &= ok;
        let analysis = r.analysis.clone().unwrap_or_default();
        let mut notes = vec![format!(
            "{}: {}",
            if ok { "PROVEN" } else { "NOT PROVEN" },
            why
        )];
        notes.extend(r.notes.iter().cloned());
        let rep = Report {
            command: "lab",
            inputs: r
                .artifacts
                .iter()
                .filter(|x| {
                    x.path
                        .extension()
                        .is_some_and(|e| e == "pcap" || e == "pcapng")
                })
                .map(|x| x.path.display().to_string())
                .collect(),
            findings: analysis.findings,
            diagnostics: analysis.diagnostics,
            stats: serde_json::json!({ "run": &r, "capture": analysis.stats }),
            notes,
            symptoms: analysis.symptoms,
            blind_spots: analysis.blind_spots,
        };
        match a.format.format {
            Format::Human => {
                let mut text = r.render_text();
                text.push_str("\nAnalysis of the run's captures:\n");
                text.push_str(&report::human::render(&rep));
                text.push_str(&format!(
                    "\n=> {}: {}\n\n",
                    if ok { "PROVEN" } else { "NOT PROVEN" },
                    report::escape::for_terminal(&why)
                ));
                write_stdout(&text)?;
            }
            Format::Json => json_runs.push(
                serde_json::from_str::<serde_json::Value>(&report::json::render(&rep))
                    .expect("own json"),
            ),
        }
    }
    if a.format.format == Format::Json {
        let doc = if json_runs.len() == 1 {
            json_runs.pop().expect("one")
        } else {
            serde_json::Value::Array(json_runs)
        };
        write_stdout(&(serde_json::to_string_pretty(&doc).expect("json") + "\n"))?;
    }
    Ok(if all_ok { 0 } else { 1 })
}

//! `netsleuth lab list|run`: the lab crate runs scenarios; this adapter prints them with the same
//! report renderer as `analyze`.
//!
//! Exit codes: 0 every run proved what it should (an incident run reproduced its symptom and the
//! analysis named its id; a mitigated or healthy run showed neither), 1 some run did not, 2 error.

use super::{emit_document_named, load_names, write_stdout, CliError, Sink, Term};
use crate::cli::{Format, FormatArgs, LabArgs, LabCommand, LabRunArgs};
use netsleuth_core::report::json::{Document, LabRun};
use netsleuth_core::report::{self, Report};
use netsleuth_core::{Analysis, FindingKind};
use netsleuth_lab::{RunOptions, RunReport};

pub fn run(a: LabArgs, term: &Term) -> Result<i32, CliError> {
    match a.command {
        LabCommand::List(f) => list(&f),
        LabCommand::Run(r) => run_scenarios(r, term),
        LabCommand::Cleanup => {
            netsleuth_lab::preflight()?;
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

fn list(f: &FormatArgs) -> Result<i32, CliError> {
    let scenarios = netsleuth_lab::scenarios();
    let text = match f.format {
        Format::Html => {
            return Err(CliError::Usage(
                "`lab list` has no HTML form (hint: use --format human or json)".into(),
            ))
        }
        Format::Json => {
            serde_json::to_string_pretty(scenarios).expect("scenario info serialises") + "\n"
        }
        Format::Human => {
            // Each scenario: its name, incident and reproduction on one line, then what it shows,
            // how, and its fix, wrapped within 80 columns.
            let st = report::human::Style::default();
            let mut s = String::new();
            for sc in scenarios {
                let head = format!(
                    "{}  {}  {}",
                    sc.name,
                    sc.incident.map_or("(healthy)", |i| i.id),
                    sc.reproduction.label()
                );
                st.wrap(&mut s, "", "    ", &head);
                st.wrap(&mut s, "  ", "  ", sc.summary);
                st.wrap(&mut s, "  ", "  ", &sc.reproduction.explain());
                st.wrap(&mut s, "  mitigated: ", "    ", sc.mitigation);
                s.push('\n');
            }
            s
        }
    };
    Sink::new(f.into()).write(&text)?;
    Ok(0)
}

/// One run as the CLI reports it: the facts the verdict needs, the lab's record of the run, and the
/// analysis of its captures. A recorded run (a lab fixture's run.json and captures) makes one too,
/// which is how the tests check the JSON of `lab run` without root.
struct RunView {
    scenario: String,
    incident: Option<String>,
    mitigated: bool,
    symptom_seen: bool,
    /// The lab's record of the run (its `run.json`).
    record: serde_json::Value,
    /// The run's captures.
    captures: Vec<String>,
    analysis: Analysis,
    notes: Vec<String>,
}

impl RunView {
    fn of(r: &RunReport) -> RunView {
        RunView {
            scenario: r.scenario.to_string(),
            incident: r.incident.map(str::to_string),
            mitigated: r.mitigated,
            symptom_seen: r.symptom_seen,
            record: serde_json::to_value(r).expect("run report serialises"),
            captures: r
                .artifacts
                .iter()
                .filter(|x| {
                    x.path
                        .extension()
                        .is_some_and(|e| e == "pcap" || e == "pcapng")
                })
                .map(|x| x.path.display().to_string())
                .collect(),
            analysis: r.analysis.clone().unwrap_or_default(),
            notes: r.notes.clone(),
        }
    }

    /// Whether the run proved what it should, and why not: the lab's one judgement.
    fn verdict(&self) -> (bool, String) {
        let named: Vec<&str> = self
            .analysis
            .findings
            .iter()
            .filter(|f| f.kind == FindingKind::Incident)
            .map(|f| f.id)
            .collect();
        let v = netsleuth_lab::Verdict::judge(
            self.incident.as_deref(),
            self.mitigated,
            self.symptom_seen,
            Some(&named),
        );
        (v.proven, v.why)
    }

    /// The analysis of the run's captures as a report, its first note the verdict.
    fn report(&self, ok: bool, why: &str) -> Report {
        let mut notes = vec![format!(
            "{}: {}",
            if ok { "PROVEN" } else { "NOT PROVEN" },
            why
        )];
        notes.extend(self.notes.iter().cloned());
        Report {
            command: "lab",
            inputs: self.captures.clone(),
            findings: self.analysis.findings.clone(),
            diagnostics: self.analysis.diagnostics.clone(),
            stats: serde_json::json!({ "run": &self.record, "capture": self.analysis.stats }),
            notes,
            symptoms: self.analysis.symptoms.clone(),
            blind_spots: self.analysis.blind_spots.clone(),
        }
    }

    /// The run's entry in the JSON document.
    fn json(&self) -> LabRun {
        let (ok, why) = self.verdict();
        LabRun::new(
            &self.scenario,
            self.incident.as_deref(),
            self.mitigated,
            ok,
            why.clone(),
            &self.report(ok, &why),
        )
    }
}

fn run_scenarios(a: LabRunArgs, term: &Term) -> Result<i32, CliError> {
    let k8s_names = load_names(&a.format)?;
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
    let mut sink = Sink::new((&a.format).into());
    // A file (`-o`) never gets colour.
    let term = &Term {
        color: term.color && a.format.output.is_none(),
        ..*term
    };
    // (scenario, proven) of each run, for the tally of `--all`.
    let mut tally: Vec<(&'static str, bool)> = Vec::new();
    for name in names {
        let opts = RunOptions {
            mitigated: a.mitigated,
            out_dir: a
                .out
                .as_ref()
                .map(|d| if a.all { d.join(name) } else { d.clone() }),
            keep: a.keep,
            skip_analysis: false,
            watch: a.watch,
        };
        let r = netsleuth_lab::run(name, &opts)?;
        let view = RunView::of(&r);
        match a.format.format {
            Format::Human => {
                let (ok, why) = view.verdict();
                all_ok &= ok;
                tally.push((name, ok));
                let text = term.with_style(Some(&k8s_names), |st| {
                    let mut text = String::new();
                    if !st.headline_only {
                        // The lab's record of the run, its addresses named too (`--k8s`).
                        let mut record = r.render_text();
                        if let Some(names) = st.names {
                            record = record
                                .lines()
                                .map(|l| names.annotate(l).into_owned() + "\n")
                                .collect();
                        }
                        text.push_str(&report::human::fit(&record, st.width));
                        if let Some(w) = &r.watch {
                            text.push_str(&super::watch::render_lab_record(w));
                        }
                        text.push_str("\nAnalysis of the run's captures:\n");
                    }
                    text.push_str(&report::human::render_with(&view.report(ok, &why), st));
                    st.wrap(
                        &mut text,
                        "\n=> ",
                        "   ",
                        &format!("{}: {}", st.verdict(ok), st.text(&why)),
                    );
                    text.push('\n');
                    text
                });
                sink.write(&text)?;
            }
            // One document for one run or many: `runs` is always an array.
            Format::Json | Format::Html => json_runs.push(view.json()),
        }
    }
    match a.format.format {
        Format::Json | Format::Html => emit_document_named(
            &Document::lab(json_runs).with_names(&k8s_names),
            (&a.format).into(),
            &k8s_names,
        ),
        Format::Human => {
            if a.all {
                sink.write(&term.with_style(None, |st| render_tally(&tally, st)))?;
            }
            Ok(if all_ok { 0 } else { 1 })
        }
    }
}

/// The end of `lab run --all`: how many runs proved what they should, and which did not.
fn render_tally(tally: &[(&str, bool)], st: &report::human::Style<'_>) -> String {
    let proven = tally.iter().filter(|(_, ok)| *ok).count();
    let failed: Vec<&str> = tally
        .iter()
        .filter(|(_, ok)| !*ok)
        .map(|(n, _)| *n)
        .collect();
    let mut s = String::new();
    let head = format!(
        "Tally: {proven} of {} run(s) {}",
        tally.len(),
        st.verdict(true)
    );
    let line = if failed.is_empty() {
        head
    } else {
        format!(
            "{head}; {} {}: {}",
            failed.len(),
            st.verdict(false),
            failed.join(", ")
        )
    };
    st.wrap(&mut s, "", "  ", &line);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/lab")
    }

    /// A recorded run: its run.json and the analysis of its captures.
    fn recorded(dir: &Path) -> RunView {
        let record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("run.json")).unwrap()).unwrap();
        let mut captures: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "pcap"))
            .collect();
        captures.sort();
        let inputs = captures
            .iter()
            .map(|p| {
                netsleuth_core::Input::stream(
                    p.display().to_string(),
                    Box::new(std::fs::File::open(p).unwrap()),
                )
            })
            .collect();
        let facts = dir.join("facts.json");
        let node = if facts.is_file() {
            crate::cmd::node::node_context(&facts).unwrap().0
        } else {
            Default::default()
        };
        let text = |k: &str| record[k].as_str().map(str::to_string);
        RunView {
            scenario: text("scenario").unwrap(),
            incident: text("incident"),
            mitigated: record["mitigated"].as_bool().unwrap(),
            symptom_seen: record["symptom_seen"].as_bool().unwrap(),
            notes: serde_json::from_value(record["notes"].clone()).unwrap(),
            captures: captures.iter().map(|p| p.display().to_string()).collect(),
            analysis: netsleuth_core::analyze(inputs, &node),
            record,
        }
    }

    fn schema() -> jsonschema::Validator {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/netsleuth.schema.json");
        let schema: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        jsonschema::validator_for(&schema).unwrap()
    }

    fn assert_valid(what: &str, doc: &serde_json::Value) {
        let errors: Vec<String> = schema()
            .iter_errors(doc)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{what}: {errors:#?}");
    }

    /// `lab run SCENARIO` and `lab run --all` print one document shape, valid against the schema.
    #[test]
    fn lab_run_json_of_recorded_runs_follows_the_schema() {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(fixtures())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.join("run.json").is_file())
            .collect();
        dirs.sort();
        assert!(dirs.len() >= 12, "{dirs:?}");
        let runs: Vec<LabRun> = dirs.iter().map(|d| recorded(d).json()).collect();
        for run in &runs {
            let one: serde_json::Value =
                serde_json::from_str(&Document::lab(vec![run.clone()]).to_json()).unwrap();
            assert_valid(&run.scenario, &one);
            assert_eq!(one["runs"].as_array().unwrap().len(), 1);
            assert_eq!(one["summary"]["exit_code"], i32::from(!run.proven));
            assert!(
                one["runs"][0]["stats"]["run"]["outcome"].is_string(),
                "the lab's record is kept"
            );
        }
        let all: serde_json::Value =
            serde_json::from_str(&Document::lab(runs.clone()).to_json()).unwrap();
        assert_valid("--all", &all);
        assert_eq!(all["runs"].as_array().unwrap().len(), runs.len());
        // Every recorded run proves what its name says.
        for run in &runs {
            assert!(run.proven, "{}: {}", run.scenario, run.verdict);
        }
    }

    #[test]
    fn lab_run_all_ends_with_a_tally() {
        let st = report::human::Style::default();
        let all = render_tally(&[("a", true), ("b", true)], &st);
        assert_eq!(all, "Tally: 2 of 2 run(s) PROVEN\n");
        let some = render_tally(&[("a", true), ("b", false), ("c", false)], &st);
        assert_eq!(some, "Tally: 1 of 3 run(s) PROVEN; 2 NOT PROVEN: b, c\n");
    }
}

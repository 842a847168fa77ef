//! `catalogue` (the incidents netsleuth knows) and `explain ID` (one entry in full).

use super::{emit_document, CliError, Sink, Term};
use crate::cli::{ExplainArgs, Format, FormatArgs};
use netsleuth_core::detect::CATALOGUE;
use netsleuth_core::finding::Incident;
use netsleuth_core::report::human::Style;
use netsleuth_core::report::json::Document;

pub fn run(a: FormatArgs, term: &Term) -> Result<i32, CliError> {
    match a.format {
        Format::Human => {
            let text = term.with_style(None, |st| {
                let mut s = String::new();
                for i in CATALOGUE {
                    let line = format!("{:<26} {}", st.bold(i.id), i.title);
                    st.wrap(&mut s, "", &" ".repeat(27), &line);
                }
                s
            });
            Sink::new((&a).into()).write(&text)?;
            Ok(0)
        }
        Format::Json | Format::Html => emit_document(&Document::catalogue(CATALOGUE), (&a).into()),
    }
}

/// `netsleuth explain ID`: the catalogue entry — mechanism, evidence per source, fix, the sysctls that
/// decide it, the version facts it depends on.
pub fn explain(a: ExplainArgs, term: &Term) -> Result<i32, CliError> {
    let Some(incident) = netsleuth_core::detect::incident(&a.id) else {
        let ids: Vec<&str> = CATALOGUE.iter().map(|i| i.id).collect();
        return Err(CliError::Usage(format!(
            "unknown incident `{}` (hint: one of {})",
            a.id,
            ids.join(", ")
        )));
    };
    match a.format.format {
        Format::Json | Format::Html => {
            emit_document(&Document::catalogue(&[incident]), (&a.format).into())
        }
        Format::Human => {
            let text = term.with_style(None, |st| render_explain(incident, st));
            Sink::new((&a.format).into()).write(&text)?;
            Ok(0)
        }
    }
}

/// The labels that start each source's part of an incident's evidence text (`Capture: … Node: …`).
const SOURCES: &[&str] = &[
    "Capture:",
    "Node:",
    "Live:",
    "Lab:",
    "Counter:",
    "Counters:",
    "Container:",
    "Sockets:",
    "Sysctls:",
    "Required:",
    "Fix:",
];

/// An incident's evidence text cut where each source's part starts (a label after a sentence end).
pub fn evidence_by_source(text: &str) -> Vec<&str> {
    let mut cuts = vec![0];
    for label in SOURCES {
        for (at, _) in text.match_indices(label) {
            if at > 0 && text[..at].ends_with(". ") {
                cuts.push(at);
            }
        }
    }
    cuts.sort_unstable();
    cuts.dedup();
    cuts.push(text.len());
    cuts.windows(2)
        .map(|w| text[w[0]..w[1]].trim())
        .filter(|p| !p.is_empty())
        .collect()
}

fn render_explain(i: &Incident, st: &Style<'_>) -> String {
    let mut s = String::new();
    st.wrap(
        &mut s,
        "",
        "  ",
        &format!("{} — {}", st.bold(i.id), i.title),
    );
    s.push('\n');
    s.push_str(&st.bold("Mechanism"));
    s.push('\n');
    st.wrap(&mut s, "  ", "  ", i.explanation);
    s.push('\n');
    s.push_str(&st.bold("Evidence, by source"));
    s.push('\n');
    for part in evidence_by_source(i.evidence) {
        st.wrap(&mut s, "  - ", "    ", part);
    }
    s.push('\n');
    s.push_str(&st.bold("Fix"));
    s.push('\n');
    st.wrap(&mut s, "  ", "  ", i.remedy);
    if !i.sysctls.is_empty() {
        s.push('\n');
        s.push_str(&st.bold("Sysctls that decide it"));
        s.push('\n');
        for k in i.sysctls {
            s.push_str(&format!("  {k}\n"));
        }
    }
    if !i.versions.is_empty() {
        s.push('\n');
        s.push_str(&st.bold("Version facts"));
        s.push('\n');
        for v in i.versions {
            let since = if v.since.is_empty() {
                "no version has it".to_string()
            } else {
                format!("since {}", v.since.join(", "))
            };
            let line = format!(
                "{} ({:?}, {since}): {} [{}]",
                v.id, v.component, v.what, v.source
            );
            st.wrap(&mut s, "  - ", "    ", &line);
            if !v.note.is_empty() {
                st.wrap(&mut s, "    ", "    ", &format!("note: {}", v.note));
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_explains_each_source_on_its_own_line() {
        let st = Style::default();
        for i in CATALOGUE {
            let text = render_explain(i, &st);
            for needle in ["Mechanism", "Evidence, by source", "Fix"] {
                assert!(text.contains(needle), "{}: {needle}", i.id);
            }
            for v in i.versions {
                assert!(text.contains(v.id), "{}: {}", i.id, v.id);
            }
            for k in i.sysctls {
                assert!(text.contains(k), "{}: {k}", i.id);
            }
            assert!(text.lines().all(|l| l.chars().count() <= 80), "{text}");
            // Nothing of the catalogue's words is lost in the cut.
            let parts = evidence_by_source(i.evidence);
            assert_eq!(
                parts.concat().replace(' ', ""),
                i.evidence.replace(' ', ""),
                "{}",
                i.id
            );
        }
        let parts = evidence_by_source("Capture: a. b. Node: c. Live: d");
        assert_eq!(parts, ["Capture: a. b.", "Node: c.", "Live: d"]);
    }
}

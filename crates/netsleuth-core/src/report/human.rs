//! The human report: causes first, then the evidence for each, then what else was seen.
//!
//! Every string that can hold input-derived text (file names, summaries quoting config lines, evidence,
//! notes, diagnostics) goes through [`esc`] as it is formatted; the line breaks and indentation are the
//! renderer's own. `id`, `explanation` and `remedy` are the catalogue's compiled-in text.

use super::escape::for_terminal as esc;
use super::Report;
use crate::finding::{Evidence, FindingKind};
use std::fmt::Write;

pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let incidents: Vec<_> = r
        .findings
        .iter()
        .filter(|f| f.kind == FindingKind::Incident)
        .collect();
    let risks: Vec<_> = r
        .findings
        .iter()
        .filter(|f| f.kind == FindingKind::LatentRisk)
        .collect();
    let inputs = esc(&r.inputs.join(", ")).into_owned();
    if incidents.is_empty() {
        let _ = writeln!(out, "No incident found in {inputs}.");
    } else {
        let _ = writeln!(out, "{} incident finding(s) in {inputs}:", incidents.len());
        for f in &incidents {
            let _ = writeln!(
                out,
                "  [{}] {}: {}",
                f.confidence.as_str(),
                f.id,
                esc(&f.summary)
            );
            if !f.cases.is_empty() {
                let _ = writeln!(out, "      and {} more case(s) of it", f.cases.len());
            }
        }
    }
    if !r.symptoms.is_empty() {
        let _ = writeln!(
            out,
            "{} symptom(s) seen{}:",
            r.symptoms.len(),
            if r.symptoms
                .iter()
                .any(|s| !s.considered.iter().any(|c| c.verdict == "explains"))
            {
                " (some with no catalogue cause: see \"Symptoms\" below)"
            } else {
                ""
            }
        );
        for s in &r.symptoms {
            let by: Vec<&str> = s
                .considered
                .iter()
                .filter(|c| c.verdict == "explains")
                .map(|c| c.id)
                .collect();
            let by = if by.is_empty() {
                String::new()
            } else {
                format!(" — explained by {}", by.join(", "))
            };
            let _ = writeln!(out, "  {}{by}", esc(&s.summary));
        }
    }
    if !r.blind_spots.is_empty() {
        let _ = writeln!(
            out,
            "{} blind spot(s): see \"Not examined\" below",
            r.blind_spots.len()
        );
    }
    if !risks.is_empty() {
        let _ = writeln!(out, "{} latent risk(s):", risks.len());
        for f in &risks {
            let _ = writeln!(
                out,
                "  [{}] {}: {}",
                f.confidence.as_str(),
                f.id,
                esc(&f.summary)
            );
        }
    }
    for (i, f) in r.findings.iter().enumerate() {
        let kind = match f.kind {
            FindingKind::Incident => "incident",
            FindingKind::LatentRisk => "latent risk",
        };
        let _ = writeln!(
            out,
            "\n{}. {} ({}, {})",
            i + 1,
            f.id,
            kind,
            f.confidence.as_str()
        );
        let _ = writeln!(out, "   {}", esc(&f.summary));
        for c in &f.cases {
            let _ = writeln!(out, "   also: {}", esc(c));
        }
        if !f.reasoning.is_empty() {
            let _ = writeln!(out, "   Why {}:", f.confidence.as_str());
            for why in &f.reasoning {
                let _ = writeln!(out, "     - {}", esc(why));
            }
        }
        if !f.look_alikes.is_empty() {
            let _ = writeln!(out, "   Look-alikes:");
            for l in &f.look_alikes {
                let verdict = if l.ruled_out {
                    "not"
                } else {
                    "cannot rule out"
                };
                let _ = writeln!(out, "     - {verdict} {}: {}", l.id, esc(&l.why));
            }
        }
        if !f.evidence.is_empty() {
            let _ = writeln!(out, "   Evidence:");
        }
        for e in &f.evidence {
            write_evidence(&mut out, e, "     ");
        }
        let _ = writeln!(out, "   Mechanism: {}", f.explanation);
        let _ = writeln!(out, "   Fix: {}", f.remedy);
    }
    for (i, sy) in r.symptoms.iter().enumerate() {
        if i == 0 {
            let _ = writeln!(
                out,
                "\nSymptoms (what the input shows, whatever the cause):"
            );
        }
        let _ = writeln!(out, "\n  {}", esc(&sy.summary));
        for e in &sy.evidence {
            write_evidence(&mut out, e, "     ");
        }
        if !sy.considered.is_empty() {
            let _ = writeln!(out, "   Causes considered:");
        }
        for c in &sy.considered {
            let _ = writeln!(out, "     - {} ({}): {}", c.id, c.verdict, esc(&c.why));
        }
        if let Some(o) = &sy.otherwise {
            let _ = writeln!(out, "   Otherwise: {}", esc(o));
        }
    }
    if !r.blind_spots.is_empty() {
        let _ = writeln!(out, "\nNot examined (no finding is claimed for these):");
        for b in &r.blind_spots {
            let _ = writeln!(out, "  - {}", esc(&b.what));
            if !b.undecided.is_empty() {
                let _ = writeln!(out, "    undecided: {}", b.undecided.join(", "));
            }
        }
    }
    if !r.notes.is_empty() {
        let _ = writeln!(out);
        for n in &r.notes {
            let _ = writeln!(out, "note: {}", esc(n));
        }
    }
    if !r.diagnostics.is_empty() {
        let _ = writeln!(out, "\nInput problems (counted, the rest was analysed):");
        for d in &r.diagnostics {
            let mut loc = String::new();
            if let Some(o) = d.offset {
                let _ = write!(loc, " at byte {o}");
            }
            if let Some(fr) = d.frame {
                let _ = write!(loc, " (first at frame {fr})");
            }
            if let Some(l) = d.line {
                let _ = write!(loc, " (first at line {l})");
            }
            let _ = writeln!(
                out,
                "  {}: {} ×{}{}: {}",
                esc(&d.source),
                d.code,
                d.count,
                loc,
                esc(&d.message)
            );
        }
    }
    out
}

/// One piece of evidence, indented by `indent`; input-derived text escaped.
fn write_evidence(out: &mut String, e: &Evidence, indent: &str) {
    match e {
        Evidence::Packets { file, frames, note } => {
            let _ = writeln!(out, "{indent}{}: {}", esc(file), esc(note));
            for fr in frames {
                let _ = writeln!(
                    out,
                    "{indent}  #{:<6} {}  {}:{} > {}:{}  {}",
                    fr.frame,
                    esc(time_of_day(&fr.time)),
                    fr.src,
                    fr.src_port,
                    fr.dst,
                    fr.dst_port,
                    esc(&fr.what)
                );
            }
        }
        Evidence::Counter {
            source,
            name,
            before,
            after,
        } => {
            let (source, name) = (esc(source), esc(name));
            let _ = match before {
                Some(b) => writeln!(
                    out,
                    "{indent}{source}: {name} {b} → {after} (+{})",
                    after.saturating_sub(*b)
                ),
                None => writeln!(out, "{indent}{source}: {name} = {after}"),
            };
        }
        Evidence::Config { source, line, text } => {
            let (source, text) = (esc(source), esc(text));
            let _ = match line {
                Some(l) => writeln!(out, "{indent}{source}:{l}: {text}"),
                None => writeln!(out, "{indent}{source}: {text}"),
            };
        }
        Evidence::Fact { source, text } => {
            let _ = writeln!(out, "{indent}{}: {}", esc(source), esc(text));
        }
    }
}

/// `08:24:34.685334` of `2026-11-23T08:24:34.685334Z`; the whole text when it is not of that shape (a
/// timestamp far outside the calendar's four-digit years).
fn time_of_day(rfc3339: &str) -> &str {
    rfc3339
        .get(11..rfc3339.len().saturating_sub(1))
        .filter(|_| rfc3339.as_bytes().get(10) == Some(&b'T'))
        .unwrap_or(rfc3339)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::CATALOGUE;
    use crate::finding::{Confidence, Diagnostic, Finding, FrameRef};

    const HOSTILE: &str = "\u{1b}]0;PWNED\u{7}\u{1b}[2J\nfake line\u{9b}";

    fn hostile_report() -> Report {
        let h = || HOSTILE.to_string();
        let frame = FrameRef {
            frame: 1,
            ts_ns: 0,
            time: h(),
            src: "10.0.0.1".parse().unwrap(),
            src_port: 1,
            dst: "10.0.0.2".parse().unwrap(),
            dst_port: 53,
            what: h(),
            interface: Some(h()),
            tcp: None,
            len: None,
            flow: None,
            decisive: false,
            dns: None,
        };
        let finding = |kind| {
            Finding::new(CATALOGUE[0], kind, Confidence::Likely, h())
                .because(h())
                .with_evidence(Evidence::Packets {
                    file: h(),
                    frames: vec![frame.clone()],
                    note: h(),
                })
                .with_evidence(Evidence::Counter {
                    source: h(),
                    name: h(),
                    before: Some(1),
                    after: 2,
                })
                .with_evidence(Evidence::Config {
                    source: h(),
                    line: Some(3),
                    text: h(),
                })
                .with_evidence(Evidence::Fact {
                    source: h(),
                    text: h(),
                })
        };
        Report {
            command: "check",
            inputs: vec![h(), h()],
            findings: vec![
                finding(FindingKind::Incident),
                finding(FindingKind::LatentRisk),
            ],
            diagnostics: vec![Diagnostic {
                source: h(),
                code: "unparsed-input",
                offset: Some(1),
                frame: Some(2),
                line: Some(3),
                count: 1,
                message: h(),
            }],
            stats: serde_json::Value::Null,
            notes: vec![h()],
            symptoms: Vec::new(),
            blind_spots: Vec::new(),
        }
    }

    #[test]
    fn input_text_cannot_reach_the_terminal_raw() {
        let text = render(&hostile_report());
        assert!(text.contains("\\x1b]0;PWNED\\x07\\x1b[2J\\nfake line\\u{9b}"));
        assert!(
            !text
                .chars()
                .any(|c| (c.is_control() && c != '\n') || c == '\u{9b}'),
            "{text:?}"
        );
        // Only the renderer's own lines: the hostile "\nfake line" never starts one.
        assert!(!text.lines().any(|l| l.starts_with("fake line")));
    }

    #[test]
    fn odd_timestamps_do_not_panic() {
        let mut r = hostile_report();
        for time in ["", "2026", "-1234-01-01T00:00:00.000000Z", "é"] {
            if let Evidence::Packets { frames, .. } = &mut r.findings[0].evidence[0] {
                frames[0].time = time.to_string();
            }
            render(&r);
        }
        assert_eq!(
            time_of_day("2026-11-23T08:24:34.685334Z"),
            "08:24:34.685334"
        );
    }
}

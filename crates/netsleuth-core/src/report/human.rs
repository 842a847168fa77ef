//! The human report: causes first, then the evidence for each, then what else was seen.

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
    if incidents.is_empty() {
        let _ = writeln!(out, "No incident found in {}.", r.inputs.join(", "));
    } else {
        let _ = writeln!(
            out,
            "{} incident finding(s) in {}:",
            incidents.len(),
            r.inputs.join(", ")
        );
        for f in &incidents {
            let _ = writeln!(out, "  [{}] {}: {}", f.confidence.as_str(), f.id, f.summary);
        }
    }
    if !risks.is_empty() {
        let _ = writeln!(out, "{} latent risk(s):", risks.len());
        for f in &risks {
            let _ = writeln!(out, "  [{}] {}: {}", f.confidence.as_str(), f.id, f.summary);
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
        let _ = writeln!(out, "   {}", f.summary);
        if !f.reasoning.is_empty() {
            let _ = writeln!(out, "   Why {}:", f.confidence.as_str());
            for why in &f.reasoning {
                let _ = writeln!(out, "     - {why}");
            }
        }
        if !f.evidence.is_empty() {
            let _ = writeln!(out, "   Evidence:");
        }
        for e in &f.evidence {
            match e {
                Evidence::Packets { file, frames, note } => {
                    let _ = writeln!(out, "     {file}: {note}");
                    for fr in frames {
                        let _ = writeln!(
                            out,
                            "       #{:<6} {}  {}:{} > {}:{}  {}",
                            fr.frame,
                            &fr.time[11..fr.time.len().saturating_sub(1).max(11)],
                            fr.src,
                            fr.src_port,
                            fr.dst,
                            fr.dst_port,
                            fr.what
                        );
                    }
                }
                Evidence::Counter {
                    source,
                    name,
                    before,
                    after,
                } => {
                    let _ = match before {
                        Some(b) => writeln!(
                            out,
                            "     {source}: {name} {b} → {after} (+{})",
                            after.saturating_sub(*b)
                        ),
                        None => writeln!(out, "     {source}: {name} = {after}"),
                    };
                }
                Evidence::Config { source, line, text } => {
                    let _ = match line {
                        Some(l) => writeln!(out, "     {source}:{l}: {text}"),
                        None => writeln!(out, "     {source}: {text}"),
                    };
                }
                Evidence::Fact { source, text } => {
                    let _ = writeln!(out, "     {source}: {text}");
                }
            }
        }
        let _ = writeln!(out, "   Mechanism: {}", f.explanation);
        let _ = writeln!(out, "   Fix: {}", f.remedy);
    }
    if !r.notes.is_empty() {
        let _ = writeln!(out);
        for n in &r.notes {
            let _ = writeln!(out, "note: {n}");
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
                d.source, d.code, d.count, loc, d.message
            );
        }
    }
    out
}

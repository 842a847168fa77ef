//! The versioned JSON document (`--format json`).
//!
//! Shape (version 1):
//! `{ "schema": "netsleuth.report", "version": 1, "tool": {..}, "command": "analyze", "inputs": [..],
//!    "summary": {"incidents": n, "latent_risks": n, "exit_code": n}, "findings": [Finding..],
//!    "diagnostics": [Diagnostic..], "stats": {..}, "notes": [..], "symptoms": [Symptom..],
//!    "blind_spots": [BlindSpot..] }`
//! A `Symptom` carries `kind`, `count`, `summary`, `evidence`, `considered` (`id`, `verdict`, `why`) and
//! `otherwise`; a `BlindSpot` `what` and `undecided` (incident ids).
//! A `Finding` carries `id`, `kind`, `confidence`, `summary`, `evidence`, `reasoning`, `explanation`,
//! `remedy`. Adding a field is compatible; renaming or removing one bumps `SCHEMA_VERSION`.

use super::Report;
use crate::finding::FindingKind;
use serde::Serialize;

pub const SCHEMA: &str = "netsleuth.report";
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Serialize)]
struct Tool {
    name: &'static str,
    version: &'static str,
}

#[derive(Serialize)]
struct Summary {
    incidents: usize,
    latent_risks: usize,
    exit_code: i32,
}

#[derive(Serialize)]
struct Document<'a> {
    schema: &'static str,
    version: u32,
    tool: Tool,
    command: &'a str,
    inputs: &'a [String],
    summary: Summary,
    findings: &'a [crate::finding::Finding],
    diagnostics: &'a [crate::finding::Diagnostic],
    stats: &'a serde_json::Value,
    notes: &'a [String],
    symptoms: &'a [crate::symptoms::Symptom],
    blind_spots: &'a [crate::symptoms::BlindSpot],
}

/// Exit code convention shared by all reporting commands: 0 no incident, 1 incident(s) found.
/// (2, an error, is decided by the caller.)
pub fn exit_code(r: &Report) -> i32 {
    if r.findings.iter().any(|f| f.kind == FindingKind::Incident) {
        1
    } else {
        0
    }
}

pub fn render(r: &Report) -> String {
    let doc = Document {
        schema: SCHEMA,
        version: SCHEMA_VERSION,
        tool: Tool {
            name: "netsleuth",
            version: env!("CARGO_PKG_VERSION"),
        },
        command: r.command,
        inputs: &r.inputs,
        summary: Summary {
            incidents: r
                .findings
                .iter()
                .filter(|f| f.kind == FindingKind::Incident)
                .count(),
            latent_risks: r
                .findings
                .iter()
                .filter(|f| f.kind == FindingKind::LatentRisk)
                .count(),
            exit_code: exit_code(r),
        },
        findings: &r.findings,
        diagnostics: &r.diagnostics,
        stats: &r.stats,
        notes: &r.notes,
        symptoms: &r.symptoms,
        blind_spots: &r.blind_spots,
    };
    let mut s = serde_json::to_string_pretty(&doc).expect("report types serialise");
    s.push('\n');
    s
}

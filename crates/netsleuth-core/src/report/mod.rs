//! Reports: the versioned JSON document (`json`, its own types, converted from the core's) and the
//! human text and the HTML page (`html`, drawn from the JSON document), shared by every command
//! (`analyze`, `check`, `diff`, `lab`, `catalogue`).

pub mod escape;
pub mod html;
pub mod human;
pub mod json;

use crate::finding::{Diagnostic, Finding};

/// Everything a command reports, before rendering.
#[derive(Debug, Clone)]
pub struct Report {
    /// `analyze`, `check`, `lab`.
    pub command: &'static str,
    /// What was read: capture files, a bundle, `live`.
    pub inputs: Vec<String>,
    pub findings: Vec<Finding>,
    pub diagnostics: Vec<Diagnostic>,
    /// Command-specific figures (capture statistics, node facts summary, lab outcome).
    pub stats: serde_json::Value,
    /// Free-form lines a command adds (e.g. the lab's emulation label).
    pub notes: Vec<String>,
    /// Symptoms the input shows, with the causes considered for each (captures).
    pub symptoms: Vec<crate::symptoms::Symptom>,
    /// What the input could not show, and the incidents that leaves undecided.
    pub blind_spots: Vec<crate::symptoms::BlindSpot>,
}

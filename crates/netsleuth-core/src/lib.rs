//! netsleuth's analysis core: bytes and capture timestamps in, findings out.
//!
//! Data flow: `capture` (pcap/pcapng framing) → `wire` (header views) → `flow` (connections with their
//! NAT legs, DNS transactions) → `detect` (one detector per catalogue incident) → `finding` → `report`.
//! `versions` is the table of kernel/musl/Go behaviour changes that the detectors of every crate consult.
//!
//! Invariant: this crate opens no files, sockets or processes and reads no clock; time is the capture's.
//! Callers hand it `Read` implementations (a file, stdin, a buffer) and optional node facts.

// The test packet builder (`tests/support`) is also compiled into the unit tests: let it name this
// crate as the integration tests do.
#[cfg(test)]
extern crate self as netsleuth_core;

pub mod analysis;
pub mod capture;
pub mod detect;
pub mod finding;
pub mod flow;
pub mod names;
pub mod node;
pub mod report;
pub mod symptoms;
pub mod versions;
pub mod wire;

pub use analysis::{analyze, Analysis, AnalysisStats, Input, Source};
pub use capture::{IdleWork, InMemory, MemoryBytes};
pub use finding::{Confidence, Diagnostic, Evidence, Finding, FindingKind, FrameRef, Incident};

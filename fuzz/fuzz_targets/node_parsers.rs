//! cargo-fuzz entry point; the harness is in ../harness/node_parsers.rs (see there for the input format).
#![no_main]

#[path = "../harness/node_parsers.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));

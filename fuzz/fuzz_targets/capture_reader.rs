//! cargo-fuzz entry point; the harness is in ../harness/capture_reader.rs (see there for the input format).
#![no_main]

#[path = "../harness/capture_reader.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));

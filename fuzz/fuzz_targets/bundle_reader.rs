//! cargo-fuzz entry point; the harness is in ../harness/bundle_reader.rs (see there for the input format).
#![no_main]

#[path = "../harness/bundle_reader.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));

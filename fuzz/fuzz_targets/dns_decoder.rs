//! cargo-fuzz entry point; the harness is in ../harness/dns_decoder.rs (see there for the input format).
#![no_main]

#[path = "../harness/dns_decoder.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));

//! cargo-fuzz target `headers`: see `tessera_fuzz::run_headers`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tessera_fuzz::run_headers(data));

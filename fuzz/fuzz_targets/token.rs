//! cargo-fuzz target `token`: see `tessera_fuzz::run_token`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tessera_fuzz::run_token(data));

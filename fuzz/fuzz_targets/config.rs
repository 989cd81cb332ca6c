//! cargo-fuzz target `config`: see `tessera_fuzz::run_config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tessera_fuzz::run_config(data));

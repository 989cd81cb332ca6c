//! cargo-fuzz target `status_list`: see `tessera_fuzz::run_status_list`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tessera_fuzz::run_status_list(data));

//! cargo-fuzz target `headers`: see `tessera_fuzz::run_headers`.
#![no_main]

// The keys (RSA generation takes seconds) are made before the first input, so libFuzzer's
// per-input timeout never counts them.
libfuzzer_sys::fuzz_target!(init: { tessera_fuzz::fixture(); }, |data: &[u8]| tessera_fuzz::run_headers(data));

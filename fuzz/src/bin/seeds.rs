//! Writes the seed corpora: `seeds <dir>` creates `<dir>/<target>/seed-NNN` for every
//! target (keys and tokens generated now by testkit), then exits. Run by `cargo xtask
//! fuzz` before the targets.
//!
//! It is built by `cargo fuzz build` with the targets, so it carries the same coverage
//! instrumentation and must link libFuzzer like them: the writing happens in libFuzzer's
//! initialisation hook, which exits before any fuzzing starts.
#![no_main]

use std::path::PathBuf;

fn write_all() -> i32 {
    // libFuzzer's own flags start with '-'; the first other argument is the directory.
    let Some(dir) = std::env::args_os()
        .skip(1)
        .find(|a| !a.to_string_lossy().starts_with('-'))
        .map(PathBuf::from)
    else {
        eprintln!("usage: seeds <corpus-dir>");
        return 2;
    };
    for (target, seeds) in tessera_fuzz::all_seeds() {
        let d = dir.join(target);
        if let Err(e) = std::fs::create_dir_all(&d) {
            eprintln!("could not create {}: {e}", d.display());
            return 1;
        }
        for (i, seed) in seeds.iter().enumerate() {
            let f = d.join(format!("seed-{i:03}"));
            if let Err(e) = std::fs::write(&f, seed) {
                eprintln!("could not write {}: {e}", f.display());
                return 1;
            }
        }
        println!("{target}: {} seeds in {}", seeds.len(), d.display());
    }
    0
}

/// Returns `()` rather than `!`, so the macro's code after the hook stays reachable.
fn write_and_exit() {
    std::process::exit(write_all())
}

libfuzzer_sys::fuzz_target!(init: write_and_exit(), |_data: &[u8]| {});

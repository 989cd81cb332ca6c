//! `cargo xtask fuzz`: coverage-guided fuzzing of core (and the control plane's request
//! bodies) with cargo-fuzz and libFuzzer, on the stable toolchain.
//!
//! The targets live in `fuzz/` (its own workspace, as cargo-fuzz expects). They are built
//! once by `cargo fuzz build` into `target/fuzz/`, without a sanitizer: core and the
//! control plane forbid `unsafe`, so what a run looks for is a panic (an overflow too: debug
//! assertions are on), an endless loop or unbounded memory, which libFuzzer catches by
//! itself; AddressSanitizer would roughly halve the executions per second and build every
//! dependency a second time. The seed corpora are written at run time by `fuzz/`'s `seeds`
//! binary (testkit keys and tokens); what a run learns is kept in `target/fuzz/corpus/`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::tools::{self, Result};
use crate::wasm;

/// The cargo-fuzz version installed when none is found.
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Every target, and whether it needs the `control-plane` feature (a larger build).
pub const TARGETS: [(&str, bool); 5] = [
    ("token", false),
    ("config", false),
    ("status_list", false),
    ("headers", false),
    ("cp_bodies", true),
];

const TRIPLE: &str = "x86_64-unknown-linux-gnu";

/// What one target's run did.
#[derive(Debug)]
pub struct Stats {
    pub target: String,
    pub seconds: u64,
    pub executions: u64,
    pub exec_per_sec: u64,
    /// Coverage: edges (libFuzzer's `cov`) and features (`ft`).
    pub edges: u64,
    pub features: u64,
    pub corpus: u64,
}

fn cargo_fuzz_version(bin: &Path) -> Option<String> {
    let out = tools::output_of(Command::new(bin).arg("fuzz").arg("--version"))?;
    out.split_whitespace().nth(1).map(str::to_string)
}

/// Finds cargo-fuzz (`tools/cargo-fuzz/bin`, then `PATH`), installing it into
/// `tools/cargo-fuzz` when there is none.
pub fn ensure_cargo_fuzz(root: &Path) -> Result<PathBuf> {
    let local = tools::tools_dir(root).join("cargo-fuzz");
    let local_bin = local.join("bin").join("cargo-fuzz");
    for bin in [local_bin.clone(), PathBuf::from("cargo-fuzz")] {
        if let Some(v) = cargo_fuzz_version(&bin) {
            println!("cargo-fuzz {v}: {}", bin.display());
            return Ok(bin);
        }
    }
    tools::announce(&format!(
        "installing cargo-fuzz {CARGO_FUZZ_VERSION} into {} (about 30 seconds) ...",
        local.display()
    ));
    tools::run(
        Command::new(wasm::outer_cargo())
            .current_dir(root)
            .args([
                "install",
                "cargo-fuzz",
                "--locked",
                "--version",
                CARGO_FUZZ_VERSION,
                "--root",
            ])
            .arg(&local)
            // Only a command-line driver: a debug build compiles much faster.
            .args(["--debug"])
            .env("CARGO_PROFILE_DEV_DEBUG", "0")
            .stdin(Stdio::null()),
    )
    .map_err(|e| {
        format!(
            "{e}\ncould not install cargo-fuzz; try by hand:\n    \
             cargo install cargo-fuzz --locked --version {CARGO_FUZZ_VERSION} --root tools/cargo-fuzz"
        )
    })?;
    match cargo_fuzz_version(&local_bin) {
        Some(_) => Ok(local_bin),
        None => Err(format!(
            "installed cargo-fuzz but {} does not run",
            local_bin.display()
        )),
    }
}

fn fuzz_dir(root: &Path) -> PathBuf {
    root.join("target").join("fuzz")
}

/// Builds every target (and the `seeds` binary) with cargo-fuzz.
fn build(root: &Path, cargo_fuzz: &Path, targets: &[(&str, bool)]) -> Result<()> {
    let base = |cmd: &mut Command| {
        cmd.current_dir(root)
            .env("RUSTC_BOOTSTRAP", "1")
            .args(["fuzz", "build", "--sanitizer", "none", "--debug-assertions"])
            .args(["--fuzz-dir", "fuzz", "--target-dir"])
            .arg(fuzz_dir(root));
    };
    // Without a target, cargo-fuzz builds every binary that needs no feature.
    let mut cmd = Command::new(cargo_fuzz);
    base(&mut cmd);
    tools::run(&mut cmd)?;
    for (target, _) in targets.iter().filter(|(_, cp)| *cp) {
        let mut cmd = Command::new(cargo_fuzz);
        base(&mut cmd);
        cmd.args(["--features", "control-plane", target]);
        tools::run(&mut cmd)?;
    }
    Ok(())
}

fn binary(root: &Path, name: &str) -> PathBuf {
    fuzz_dir(root).join(TRIPLE).join("release").join(name)
}

/// The number after `key` in libFuzzer's output (`cov: 123`, `stat::...: 45`), last one.
fn number_after(text: &str, key: &str) -> Option<u64> {
    text.rmatch_indices(key).find_map(|(i, _)| {
        text[i + key.len()..]
            .trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
    })
}

/// Runs one target for `seconds`; an error (with the crash's path and how to reproduce
/// it) when libFuzzer finds a failure.
fn run_target(root: &Path, target: &str, seconds: u64) -> Result<Stats> {
    let dir = fuzz_dir(root);
    let corpus = dir.join("corpus").join(target);
    let seeds = dir.join("seeds").join(target);
    let artifacts = dir.join("artifacts").join(target);
    let logs = dir.join("logs");
    for d in [&corpus, &artifacts, &logs] {
        fs::create_dir_all(d).map_err(|e| format!("could not create {}: {e}", d.display()))?;
    }
    let log = logs.join(format!("{target}.log"));
    let log_file =
        fs::File::create(&log).map_err(|e| format!("could not create {}: {e}", log.display()))?;
    let mut cmd = Command::new(binary(root, target));
    cmd.arg(&corpus)
        .arg(&seeds)
        .arg(format!("-max_total_time={seconds}"))
        .arg("-print_final_stats=1")
        // A single input slower than this, or a process above this, is a finding.
        .arg("-timeout=10")
        .arg("-rss_limit_mb=2048")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file);
    println!(
        "$ {}  (log: {})",
        tools::display_command(&cmd),
        log.display()
    );
    let started = Instant::now();
    let status = cmd
        .status()
        .map_err(|e| format!("could not start the fuzz target {target}: {e}"))?;
    let text = fs::read_to_string(&log).unwrap_or_default();
    if !status.success() {
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        let found = fs::read_dir(&artifacts)
            .map(|rd| {
                rd.filter_map(|e| e.ok().map(|e| e.path().display().to_string()))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        return Err(format!(
            "fuzz target {target} failed ({status}) after {:.0} s.\n{}\n\
             input(s): {found}\n\
             reproduce: {} <input>; then add the input as a regression test in core/tests/",
            started.elapsed().as_secs_f64(),
            tail.join("\n"),
            binary(root, target).display()
        ));
    }
    let executions = number_after(&text, "stat::number_of_executed_units:").unwrap_or(0);
    Ok(Stats {
        target: target.to_string(),
        seconds,
        executions,
        exec_per_sec: number_after(&text, "stat::average_exec_per_sec:").unwrap_or(0),
        edges: number_after(&text, "DONE   cov:")
            .or_else(|| number_after(&text, "cov:"))
            .unwrap_or(0),
        features: number_after(&text, "ft:").unwrap_or(0),
        corpus: number_after(&text, "corp:").unwrap_or(0),
    })
}

/// The markers around `--record`'s section of BENCHMARKS.md (a full `cargo xtask bench`
/// run, which rewrites that file, carries the section over).
pub const SECTION_BEGIN: &str = "<!-- cargo xtask fuzz --record: begin -->";
/// See [`SECTION_BEGIN`].
pub const SECTION_END: &str = "<!-- cargo xtask fuzz --record: end -->";

/// The recorded fuzzing section of a BENCHMARKS.md text, markers included.
pub fn recorded_section(text: &str) -> Option<&str> {
    let start = text.find(SECTION_BEGIN)?;
    let end = text[start..].find(SECTION_END)? + start + SECTION_END.len();
    Some(&text[start..end])
}

const ROW_HEADER: &str = "| target | date (UTC) | commit | seconds | executions | exec/s | coverage (edges) | features | corpus |\n|---|---|---|---:|---:|---:|---:|---:|---:|";

fn row(s: &Stats, date: &str, commit: &str) -> String {
    format!(
        "| `{}` | {date} | `{commit}` | {} | {} | {} | {} | {} | {} |",
        s.target, s.seconds, s.executions, s.exec_per_sec, s.edges, s.features, s.corpus
    )
}

fn first_line(cmd: &mut Command) -> String {
    tools::output_of(cmd)
        .and_then(|o| o.lines().next().map(|l| l.trim().to_string()))
        .unwrap_or_else(|| "unknown".into())
}

/// Writes (or updates) the fuzzing section of BENCHMARKS.md: one row per target, the rows
/// of the targets just run replaced, the others kept.
pub fn record(root: &Path, stats: &[Stats]) -> Result<()> {
    let path = root.join("BENCHMARKS.md");
    let text = fs::read_to_string(&path).unwrap_or_default();
    let date = first_line(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M"]));
    let commit =
        first_line(
            Command::new("git")
                .current_dir(root)
                .args(["rev-parse", "--short", "HEAD"]),
        );
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':').map(|(_, v)| v.trim().to_string()))
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let rustc = first_line(Command::new("rustc").arg("--version"));
    let machine = format!("{cpu} ({cores} logical cores, shared with other work); {rustc}");
    let updated = with_rows(&text, stats, &date, &commit, &machine);
    fs::write(&path, updated).map_err(|e| format!("writing {}: {e}", path.display()))?;
    println!("recorded in {}", path.display());
    Ok(())
}

/// `text` with its fuzzing section rewritten: the rows of the targets in `stats` replaced
/// by new ones, every other row of the section's own table kept, and whatever was written
/// by hand after that table (notes on the runs) kept as it is. Only the lines of the table
/// that follows [`ROW_HEADER`] are rows: a table elsewhere in the section, or in the rest of
/// the file, is never read as one.
fn with_rows(text: &str, stats: &[Stats], date: &str, commit: &str, machine: &str) -> String {
    let old = recorded_section(text);
    let (mut rows, notes) = match old.and_then(|sec| sec.split_once(ROW_HEADER)) {
        Some((_, after)) => {
            let after = after.strip_prefix('\n').unwrap_or(after);
            let body = after.strip_suffix(SECTION_END).unwrap_or(after);
            let table_len = body
                .lines()
                .take_while(|l| l.starts_with("| `"))
                .map(|l| l.len() + 1)
                .sum::<usize>()
                .min(body.len());
            let rows: Vec<String> = body[..table_len]
                .lines()
                .filter(|l| {
                    !stats
                        .iter()
                        .any(|s| l.starts_with(&format!("| `{}` |", s.target)))
                })
                .map(str::to_string)
                .collect();
            (rows, body[table_len..].trim().to_string())
        }
        None => (Vec::new(), String::new()),
    };
    rows.extend(stats.iter().map(|s| row(s, date, commit)));
    let order = |l: &String| {
        TARGETS
            .iter()
            .position(|(t, _)| l.starts_with(&format!("| `{t}` |")))
    };
    rows.sort_by_key(order);
    let notes = if notes.is_empty() {
        String::new()
    } else {
        format!("\n{notes}\n")
    };
    let section = format!(
        "{SECTION_BEGIN}\n## Fuzzing (cargo-fuzz, libFuzzer)\n\n\
         Written by `cargo xtask fuzz --seconds N --record` (xtask/src/fuzz.rs), one target at a \
         time under `nice -n 10`, each row from its own run (date and commit per row). Targets \
         in `fuzz/` (see ARCHITECTURE.md), built without a sanitizer and with debug assertions; \
         seeds written at run time by `fuzz/src/bin/seeds.rs`, plus the corpus kept from earlier \
         runs in `target/fuzz/corpus/`. Coverage is libFuzzer's: `cov` (edges of the \
         instrumented code reached) and `ft` (features: edges with hit counts and compared \
         values). A crash fails the run; none was found in the runs below.\n\n\
         Machine: {machine}.\n\n\
         {ROW_HEADER}\n{}\n{notes}{SECTION_END}",
        rows.join("\n")
    );
    match old {
        Some(old) => text.replacen(old, &section, 1),
        None => format!("{}\n\n{section}\n", text.trim_end()),
    }
}

/// The results as a Markdown table (for BENCHMARKS.md).
pub fn table(stats: &[Stats]) -> String {
    let mut t = String::from(
        "| target | seconds | executions | exec/s | coverage (edges) | features | corpus |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
    );
    for s in stats {
        t.push_str(&format!(
            "| `{}` | {} | {} | {} | {} | {} | {} |\n",
            s.target, s.seconds, s.executions, s.exec_per_sec, s.edges, s.features, s.corpus
        ));
    }
    t
}

/// Builds the targets, writes the seeds and runs each selected target for `seconds`, one
/// after the other.
pub fn run(root: &Path, seconds: u64, only: Option<&[String]>) -> Result<Vec<Stats>> {
    let targets: Vec<(&str, bool)> = match only {
        None => TARGETS.to_vec(),
        Some(names) => {
            let mut picked = Vec::new();
            for n in names {
                match TARGETS.iter().find(|(t, _)| t == n) {
                    Some(t) => picked.push(*t),
                    None => {
                        return Err(format!(
                            "unknown fuzz target `{n}` (targets: {})",
                            TARGETS.map(|(t, _)| t).join(", ")
                        ))
                    }
                }
            }
            picked
        }
    };
    let cargo_fuzz = ensure_cargo_fuzz(root)?;
    build(root, &cargo_fuzz, &targets)?;
    let seeds = fuzz_dir(root).join("seeds");
    let _ = fs::remove_dir_all(&seeds);
    tools::run(Command::new(binary(root, "seeds")).arg(&seeds))?;
    // libFuzzer runs on one core: the targets run in pairs, one per core of the 2-core
    // machines this runs on (CI and the recorded runs), halving the wall time.
    let mut stats = Vec::new();
    for pair in targets.chunks(PARALLEL) {
        let results: Vec<Result<Stats>> = std::thread::scope(|scope| {
            let running: Vec<_> = pair
                .iter()
                .map(|(target, _)| scope.spawn(move || run_target(root, target, seconds)))
                .collect();
            running
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err("a fuzz runner thread panicked".into()))
                })
                .collect()
        });
        for r in results {
            let s = r?;
            println!(
                "{}: {} executions in {} s ({} exec/s), coverage {} edges, {} features, corpus {}",
                s.target, s.executions, s.seconds, s.exec_per_sec, s.edges, s.features, s.corpus
            );
            stats.push(s);
        }
    }
    Ok(stats)
}

/// Targets run at once.
const PARALLEL: usize = 2;

#[cfg(test)]
mod tests {
    use super::number_after;

    #[test]
    fn finds_the_recorded_section() {
        let text = format!(
            "# B\n\nx\n{}\n## F\n| `token` |\n{}\ntail",
            super::SECTION_BEGIN,
            super::SECTION_END
        );
        let sec = super::recorded_section(&text).unwrap();
        assert!(sec.starts_with(super::SECTION_BEGIN) && sec.ends_with(super::SECTION_END));
        assert!(sec.contains("| `token` |"));
        assert_eq!(super::recorded_section("# B"), None);
    }

    fn stats(target: &str, executions: u64) -> super::Stats {
        super::Stats {
            target: target.to_string(),
            seconds: 600,
            executions,
            exec_per_sec: executions / 600,
            edges: 1,
            features: 2,
            corpus: 3,
        }
    }

    #[test]
    fn recording_replaces_only_the_rows_of_the_targets_run() {
        let first = super::with_rows("# B\n\nintro\n", &[stats("token", 600)], "d1", "c1", "m");
        assert!(first.starts_with("# B\n\nintro\n"));
        assert!(first.contains("| `token` | d1 | `c1` | 600 | 600 |"));
        // Hand-written notes after the table, and a foreign table in them, and a table
        // before the section.
        let by_hand = first.replace(
            super::SECTION_END,
            "\nNotes by hand.\n\n| `config` | not a row |\n"
                .to_string()
                .as_str(),
        ) + super::SECTION_END;
        let by_hand = format!("| `status_list` | elsewhere |\n{by_hand}\n## After\n");
        let second = super::with_rows(&by_hand, &[stats("headers", 900)], "d2", "c2", "m");
        let sec = super::recorded_section(&second).unwrap();
        let table: Vec<&str> = sec
            .split_once(super::ROW_HEADER)
            .unwrap()
            .1
            .lines()
            .skip(1)
            .take_while(|l| l.starts_with("| `"))
            .collect();
        assert_eq!(table.len(), 2, "{sec}");
        assert!(table[0].starts_with("| `token` | d1 |"));
        assert!(table[1].starts_with("| `headers` | d2 | `c2` | 600 | 900 |"));
        assert!(sec.contains("Notes by hand.\n\n| `config` | not a row |\n"));
        assert!(second.starts_with("| `status_list` | elsewhere |\n# B"));
        assert!(second.ends_with("\n## After\n"));
        // Recording again changes nothing else.
        let third = super::with_rows(&second, &[stats("headers", 900)], "d2", "c2", "m");
        assert_eq!(third, second);
    }

    #[test]
    fn reads_libfuzzer_figures() {
        let text = "#1\tINITED cov: 10 ft: 11 corp: 3/1b\n\
                    #2048\tDONE   cov: 1711 ft: 3032 corp: 383/118Kb lim: 569\n\
                    stat::number_of_executed_units: 18652\n";
        assert_eq!(number_after(text, "DONE   cov:"), Some(1711));
        assert_eq!(number_after(text, "ft:"), Some(3032));
        assert_eq!(number_after(text, "corp:"), Some(383));
        assert_eq!(
            number_after(text, "stat::number_of_executed_units:"),
            Some(18652)
        );
        assert_eq!(number_after(text, "missing:"), None);
    }
}

//! `tessera`: the control-plane server and its command-line client. The commands live in
//! `tessera_control_plane::cli`; this entry point parses, runs, and maps errors to exit codes.

use clap::Parser;
use std::io::{self, Write};
use tessera_control_plane::cli::{self, Cli, CliError};

fn main() {
    let args = Cli::parse();
    return_large_buffers();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => fail(&format!("cannot start the runtime: {e}")),
    };
    match rt.block_on(cli::run(args)) {
        Ok(()) => {}
        // The reader went away (`tessera tokens list | head -2`): nothing more to say.
        Err(CliError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => {}
        Err(CliError::Output(e)) => fail(&format!("cannot write the output: {e}")),
        Err(CliError::Msg(msg)) => fail(&msg),
        Err(CliError::Reported) => std::process::exit(1),
    }
}

/// Every allocation of 1 MiB or more is its own mapping, given back to the system when
/// freed. glibc's default raises this threshold to the size of the last large block
/// freed (up to 32 MiB), after which each thread's arena keeps argon2id's 19 MiB
/// buffers: measured, a flood of 64 clients left the server 80 MiB larger, with the
/// fixed threshold it peaks 42 MiB above idle and returns to it (ARCHITECTURE.md,
/// "Password work").
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn return_large_buffers() {
    // SAFETY: mallopt only sets an allocator parameter; it is called before any thread
    // other than this one exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn return_large_buffers() {}

fn fail(msg: &str) -> ! {
    let _ = writeln!(io::stderr(), "tessera: {msg}");
    std::process::exit(1)
}

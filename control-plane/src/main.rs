//! `tessera`: the control-plane server and its command-line client. The commands live in
//! `tessera_control_plane::cli`; this entry point parses, runs, and maps errors to exit codes.

use clap::Parser;
use std::io::{self, Write};
use tessera_control_plane::cli::{self, Cli, CliError};

fn main() {
    let args = Cli::parse();
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

fn fail(msg: &str) -> ! {
    let _ = writeln!(io::stderr(), "tessera: {msg}");
    std::process::exit(1)
}

//! PostgreSQL for `cargo xtask test` and `bench`: Debian's `postgresql` installed when
//! missing, and a throwaway cluster (host-tests' [`PgCluster`]) under `target/pg`, on its
//! own loopback port, stopped when the value drops (also when a step fails).

use std::path::{Path, PathBuf};

use tessera_host_tests::postgres::pg_bin_dir;
use tessera_host_tests::{PgCluster, PgOptions};

use crate::tools::{self, Result};

/// Installs Debian's `postgresql` when it is missing; the server's binary directory.
pub fn ensure_postgres() -> Result<PathBuf> {
    tools::ensure_debs(
        &["postgresql"],
        "the control plane's PostgreSQL backend is tested against a real server",
    )?;
    pg_bin_dir()
}

/// Starts a throwaway cluster under `<root>/target/pg`.
pub fn start_cluster(root: &Path, options: &PgOptions) -> Result<PgCluster> {
    let parent = root.join("target").join("pg");
    tools::announce(&format!(
        "starting a throwaway PostgreSQL cluster under {} (as the postgres user)",
        parent.display()
    ));
    let cluster = PgCluster::start(&parent, options)?;
    println!("PostgreSQL listens on {}", cluster.addr());
    Ok(cluster)
}

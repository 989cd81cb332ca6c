//! A PostgreSQL database of a test's own on the cluster `TESSERA_TEST_POSTGRES` names,
//! dropped at the end (also on failure): shared by `postgres.rs` and `upgrade.rs`.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use tessera_control_plane::store::postgres::{Connect, PostgresStore};

pub const NEEDS: &str = "needs PostgreSQL: run through cargo xtask test";

/// A client as the store connects (the URL's sslmode and sslrootcert, over rustls).
pub fn connect(url: &str) -> Result<postgres::Client, String> {
    let c = Connect::parse(url)?;
    c.open().map_err(|e| c.explain(&e))
}

/// A database of its own, dropped (with its connections) at the end, also on failure.
pub struct Db {
    pub admin: String,
    pub name: String,
    pub url: String,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

impl Db {
    pub fn new() -> Db {
        let admin = std::env::var("TESSERA_TEST_POSTGRES")
            .unwrap_or_else(|_| panic!("TESSERA_TEST_POSTGRES is not set: these tests {NEEDS}"));
        let name = format!(
            "tessera_pgtest_{}_{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let mut c = connect(&admin).expect("admin connection");
        c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .unwrap();
        c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        // The admin URL's database replaced, its parameters (sslmode, sslrootcert) kept.
        let (path, query) = admin.split_once('?').unwrap_or((&admin, ""));
        let base = path
            .rsplit_once('/')
            .map(|(b, _)| b.to_string())
            .expect("admin URL ends in /database");
        let url = if query.is_empty() {
            format!("{base}/{name}")
        } else {
            format!("{base}/{name}?{query}")
        };
        Db { admin, name, url }
    }

    pub fn store(&self) -> PostgresStore {
        PostgresStore::open(&self.url).expect("open store")
    }

    pub fn client(&self) -> postgres::Client {
        connect(&self.url).unwrap()
    }

    pub fn admin(&self) -> postgres::Client {
        connect(&self.admin).unwrap()
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Ok(mut c) = connect(&self.admin) {
            // One statement per call: DROP DATABASE refuses to run in a multi-statement
            // (implicitly transactional) query.
            let _ = c.batch_execute(&format!(
                "ALTER DATABASE {} ALLOW_CONNECTIONS true",
                self.name
            ));
            if let Err(e) = c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            )) {
                eprintln!("dropping test database {}: {e}", self.name);
            }
        }
    }
}

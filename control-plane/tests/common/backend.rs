//! The backend matrix. Every test gets its database from here: SQLite by default, or a
//! fresh database of a real PostgreSQL when `TESSERA_TEST_POSTGRES` holds an admin URL
//! (`cargo xtask test` starts a throwaway cluster and runs the whole suite a second time
//! with it set). A plain `cargo test` runs the suite on SQLite only and says so once.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;
use tessera_control_plane::store::{self, DbLocation, Store};

/// The admin URL of the PostgreSQL cluster the suite runs against.
pub const ENV_POSTGRES: &str = "TESSERA_TEST_POSTGRES";

static NOTICE: Once = Once::new();
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The PostgreSQL admin URL when the suite runs on PostgreSQL.
pub fn postgres_admin() -> Option<String> {
    let url = std::env::var(ENV_POSTGRES).ok().filter(|u| !u.is_empty());
    NOTICE.call_once(|| match &url {
        Some(u) => eprintln!("backend matrix: PostgreSQL ({u})"),
        None => eprintln!(
            "backend matrix: SQLite only; `cargo xtask test` also runs this suite on PostgreSQL ({ENV_POSTGRES})"
        ),
    });
    url
}

/// `psql` of the cluster's installation (`TESSERA_PG_BIN`), else the one on PATH.
fn psql() -> PathBuf {
    std::env::var_os("TESSERA_PG_BIN")
        .map(|d| PathBuf::from(d).join("psql"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("psql"))
}

fn run_sql(admin: &str, sql: &str) -> Result<(), String> {
    let out = Command::new(psql())
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", admin, "-c", sql])
        .output()
        .map_err(|e| format!("psql: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `postgres://user@host:port/admin_db?x` with the database replaced by `db`.
fn with_database(admin: &str, db: &str) -> String {
    let (base, query) = match admin.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (admin, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut url = format!("{}/{db}", &base[..host_end]);
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    url
}

/// One test's database; a PostgreSQL one is dropped with this value.
pub enum TestDb {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A database of the test cluster.
    Postgres { admin: String, name: String },
}

impl TestDb {
    /// A new, empty database: `dir/t.db` on SQLite, a fresh database on PostgreSQL.
    pub fn new(dir: &Path) -> TestDb {
        match postgres_admin() {
            None => TestDb::Sqlite(dir.join("t.db")),
            Some(admin) => TestDb::postgres(&admin),
        }
    }

    /// A fresh database of the cluster at `admin`.
    pub fn postgres(admin: &str) -> TestDb {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "t_{}_{}_{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        if let Err(e) = run_sql(admin, &format!("CREATE DATABASE \"{name}\"")) {
            panic!("could not create a test database on {admin}: {e}");
        }
        TestDb::Postgres {
            admin: admin.to_string(),
            name,
        }
    }

    /// What `--db` (or `TESSERA_DB`) takes.
    pub fn arg(&self) -> String {
        match self {
            TestDb::Sqlite(p) => p.display().to_string(),
            TestDb::Postgres { admin, name } => with_database(admin, name),
        }
    }

    pub fn location(&self) -> DbLocation {
        match DbLocation::parse(&self.arg()) {
            Ok(l) => l,
            Err(e) => panic!("{e}"),
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, TestDb::Postgres { .. })
    }

    /// Opens the store (from a blocking context: the PostgreSQL driver is synchronous).
    pub fn open(&self) -> Box<dyn Store> {
        match store::open(&self.location()) {
            Ok(s) => s,
            Err(e) => panic!("could not open {}: {e}", self.location().describe()),
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let TestDb::Postgres { admin, name } = self {
            // FORCE ends the connections a store still holds.
            let _ = run_sql(
                admin,
                &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
            );
        }
    }
}

/// The store of an in-process control plane: SQLite in memory, or a fresh PostgreSQL
/// database (kept alive by the returned guard).
pub async fn world_store() -> (Box<dyn Store>, Option<TestDb>) {
    match postgres_admin() {
        None => match store::sqlite::SqliteStore::open_in_memory() {
            Ok(s) => (Box::new(s), None),
            Err(e) => panic!("in-memory SQLite: {e}"),
        },
        Some(admin) => {
            let opened = tokio::task::spawn_blocking(move || {
                let db = TestDb::postgres(&admin);
                let store = db.open();
                (store, db)
            })
            .await;
            match opened {
                Ok((store, db)) => (store, Some(db)),
                Err(e) => panic!("opening the test database: {e}"),
            }
        }
    }
}

/// A test's scratch directory and database: the real `tessera` binary runs in the
/// directory with `TESSERA_DB` naming the database.
pub struct Scratch {
    // The database is dropped before the directory (a SQLite file lives in it).
    pub db: TestDb,
    dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        let dir = match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => panic!("temporary directory: {e}"),
        };
        Scratch {
            db: TestDb::new(dir.path()),
            dir,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A `tessera` command run in the directory on this database.
    pub fn command(&self, bin: &str) -> Command {
        let mut cmd = Command::new(bin);
        cmd.current_dir(self.path())
            .env("TESSERA_DB", self.db.arg());
        cmd
    }
}

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        self.path()
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        self.path()
    }
}

//! Upgrades from every past schema version, on SQLite and on PostgreSQL: for each version N, a database is
//! made with the first N migrations and one row in every table (each NOT NULL column
//! given a value of its type, each nullable one NULL, so a token is live and its user
//! enabled), then opened by today's store, which runs the remaining migrations. Each
//! upgrade must succeed, lose no row (a table a migration replaces hands its rows to its
//! successor: [`REPLACED`]), end at the latest version with the same tables, columns and
//! indexes as a new database, and leave rows today's code reads.
//!
//! The data-moving migrations (token search, the scope catalogue made from tokens' scopes,
//! the SSO domain claims) each have their own test of what they compute; this one proves
//! that no migration fails or drops data on a database that is not empty.
// Test helpers outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod pgdb;

use rusqlite::Connection;
use std::collections::BTreeMap;
use std::path::Path;
use tessera_control_plane::store::migrations::{latest, MIGRATIONS};
use tessera_control_plane::store::sqlite::SqliteStore;
use tessera_control_plane::store::{run, Store, StoreError};

/// Tables a migration drops on purpose, with the table their rows move to.
const REPLACED: &[(&str, &str)] = &[("sso_domains", "sso_domain_claims")];

/// Values today's code must be able to read back (an enum stored as text, a JSON column);
/// every other NOT NULL text column gets `x`, so that all keys and references agree.
const READABLE: &[(&str, &str)] = &[
    ("key_alg", "EdDSA"),
    ("alg", "EdDSA"),
    ("role", "admin"),
    ("default_role", "user"),
    ("group_roles", "[]"),
    ("events", "[]"),
    ("muted", "[]"),
    ("scopes", "read"),
    ("ip_allow", "[]"),
];

/// The ordinary tables (not SQLite's own, not a full-text index or its shadow tables).
fn tables(c: &Connection) -> Vec<String> {
    let virtuals: Vec<String> = c
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND sql LIKE 'CREATE VIRTUAL%'",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    c.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(Result::unwrap)
        .filter(|t| {
            !t.starts_with("sqlite_")
                && !virtuals
                    .iter()
                    .any(|v| t == v || t.starts_with(&format!("{v}_")))
        })
        .collect()
}

/// `(name, declared type, not null)` of each column of `table`; a primary key's columns
/// count as not null (SQLite lets a TEXT key be NULL; the store never writes one).
fn columns(c: &Connection, table: &str) -> Vec<(String, String, bool)> {
    c.prepare(&format!("PRAGMA table_info(\"{table}\")"))
        .unwrap()
        .query_map([], |r| {
            Ok((
                r.get(1)?,
                r.get(2)?,
                r.get::<_, i64>(3)? == 1 || r.get::<_, i64>(5)? > 0,
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn count(c: &Connection, table: &str) -> i64 {
    c.query_row(&format!("SELECT count(*) FROM \"{table}\""), [], |r| {
        r.get(0)
    })
    .unwrap()
}

/// The shape of the schema: every table's columns and every index's definition.
fn shape(c: &Connection) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for t in tables(c) {
        out.insert(format!("table {t}"), format!("{:?}", columns(c, &t)));
    }
    let mut s = c
        .prepare("SELECT name, sql FROM sqlite_master WHERE type IN ('index', 'trigger') AND sql IS NOT NULL")
        .unwrap();
    for row in s
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .unwrap()
    {
        let (name, sql) = row.unwrap();
        out.insert(format!("object {name}"), sql);
    }
    out
}

/// A database at version `n` with one row in each of its tables; returns the row counts.
fn at_version(path: &Path, n: usize) -> BTreeMap<String, i64> {
    let mut c = Connection::open(path).unwrap();
    let tx = c.transaction().unwrap();
    for m in &MIGRATIONS[..n] {
        tx.execute_batch(m.sqlite).unwrap();
    }
    tx.pragma_update(None, "user_version", n as i64).unwrap();
    tx.commit().unwrap();
    // Rows go in table by table; every reference is `x` or 1, so they all resolve once all
    // are in (checked below).
    c.pragma_update(None, "foreign_keys", false).unwrap();
    for t in tables(&c) {
        let cols = columns(&c, &t);
        let names: Vec<String> = cols.iter().map(|(n, _, _)| format!("\"{n}\"")).collect();
        let values: Vec<String> = cols
            .iter()
            .map(|(name, ty, not_null)| {
                if !not_null {
                    return "NULL".to_string();
                }
                if let Some((_, v)) = READABLE.iter().find(|(c, _)| c == name) {
                    return format!("'{v}'");
                }
                match ty.to_ascii_uppercase().as_str() {
                    t if t.contains("INT") => "1".into(),
                    t if t.contains("BLOB") => "x'00'".into(),
                    t if t.contains("REAL") => "1.0".into(),
                    _ => "'x'".into(),
                }
            })
            .collect();
        c.execute(
            &format!(
                "INSERT OR IGNORE INTO \"{t}\" ({}) VALUES ({})",
                names.join(", "),
                values.join(", ")
            ),
            [],
        )
        .unwrap_or_else(|e| panic!("version {n}: a row in {t}: {e}"));
    }
    tables(&c)
        .into_iter()
        .map(|t| {
            let n = count(&c, &t);
            (t, n)
        })
        .collect()
}

#[test]
fn every_past_schema_version_upgrades_without_losing_a_row() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = {
        let path = dir.path().join("fresh.db");
        drop(SqliteStore::open(&path).unwrap());
        shape(&Connection::open(&path).unwrap())
    };
    for n in 1..MIGRATIONS.len() {
        let path = dir.path().join(format!("v{n}.db"));
        let before = at_version(&path, n);
        assert!(before.values().all(|&c| c >= 1), "version {n}: {before:?}");
        let store =
            SqliteStore::open(&path).unwrap_or_else(|e| panic!("upgrading from version {n}: {e}"));
        assert_eq!(store.schema_version().unwrap(), latest(), "from {n}");
        // Today's code reads the old rows.
        let (org, user, token) = run::<_, StoreError>(&store, false, |tx| {
            Ok((tx.get_org("x")?, tx.get_user("x")?, tx.get_token("x")?))
        })
        .unwrap_or_else(|e| panic!("reading rows upgraded from version {n}: {e}"));
        assert!(
            org.is_some() && user.is_some() && token.is_some(),
            "from {n}"
        );
        drop(store);
        let c = Connection::open(&path).unwrap();
        for (table, was) in &before {
            let now = match REPLACED.iter().find(|(old, _)| old == table) {
                Some((_, new)) if !tables(&c).contains(table) => count(&c, new),
                _ => count(&c, table),
            };
            assert!(now >= *was, "from {n}: {table} had {was} rows, now {now}");
        }
        assert_eq!(
            shape(&c),
            fresh,
            "the schema upgraded from {n} differs from a new one"
        );
    }
}

/// The PostgreSQL twin of [`tables`]: ordinary and partitioned tables, not partitions
/// (rows reach them through their parent), not the migrations' own record.
fn pg_tables(c: &mut postgres::Client) -> Vec<String> {
    c.query(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND NOT c.relispartition \
           AND c.relname <> 'tessera_migrations' ORDER BY 1",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// `(name, type, not null)` of each column of `table`.
fn pg_columns(c: &mut postgres::Client, table: &str) -> Vec<(String, String, bool)> {
    c.query(
        "SELECT column_name::text, data_type::text, is_nullable = 'NO' FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
        &[&table],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

fn pg_count(c: &mut postgres::Client, table: &str) -> i64 {
    c.query_one(&format!("SELECT count(*) FROM \"{table}\""), &[])
        .unwrap()
        .get(0)
}

/// The PostgreSQL twin of [`shape`]: columns (with defaults) and index definitions.
fn pg_shape(c: &mut postgres::Client) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for r in c
        .query(
            "SELECT table_name::text, column_name::text, data_type::text, is_nullable::text, \
                    coalesce(column_default, '')::text \
             FROM information_schema.columns WHERE table_schema = current_schema() \
             ORDER BY table_name, ordinal_position",
            &[],
        )
        .unwrap()
    {
        let (t, col): (String, String) = (r.get(0), r.get(1));
        let v: (String, String, String) = (r.get(2), r.get(3), r.get(4));
        out.insert(format!("column {t}.{col}"), format!("{v:?}"));
    }
    for r in c
        .query(
            "SELECT indexname::text, indexdef FROM pg_indexes WHERE schemaname = current_schema()",
            &[],
        )
        .unwrap()
    {
        out.insert(format!("index {}", r.get::<_, String>(0)), r.get(1));
    }
    out
}

#[test]
#[ignore = "needs PostgreSQL: run through cargo xtask test"]
fn every_past_schema_version_upgrades_without_losing_a_row_on_postgres() {
    let fresh = {
        let db = pgdb::Db::new();
        drop(db.store());
        pg_shape(&mut db.client())
    };
    for n in 1..MIGRATIONS.len() {
        let db = pgdb::Db::new();
        let mut c = db.client();
        c.batch_execute(
            "CREATE TABLE tessera_migrations (\
             version BIGINT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .unwrap();
        for (i, m) in MIGRATIONS[..n].iter().enumerate() {
            c.batch_execute(m.postgres)
                .unwrap_or_else(|e| panic!("migration {}: {e}", i + 1));
            c.execute(
                "INSERT INTO tessera_migrations (version) VALUES ($1)",
                &[&(i as i64 + 1)],
            )
            .unwrap();
        }
        // Rows go in table by table with the reference checks off for this session (the
        // test cluster's superuser may); every reference is `x` or 1, so they all resolve.
        c.batch_execute("SET session_replication_role = replica")
            .unwrap();
        let mut before = BTreeMap::new();
        for t in pg_tables(&mut c) {
            let cols = pg_columns(&mut c, &t);
            let names: Vec<String> = cols.iter().map(|(n, _, _)| format!("\"{n}\"")).collect();
            let values: Vec<String> = cols
                .iter()
                .map(|(name, ty, not_null)| {
                    if !not_null {
                        return "NULL".to_string();
                    }
                    if let Some((_, v)) = READABLE.iter().find(|(c, _)| c == name) {
                        return format!("'{v}'");
                    }
                    match ty.as_str() {
                        "bigint" | "integer" | "smallint" => "1".into(),
                        "boolean" => "TRUE".into(),
                        "bytea" => "'\\x00'::bytea".into(),
                        _ => "'x'".into(),
                    }
                })
                .collect();
            c.batch_execute(&format!(
                "INSERT INTO \"{t}\" ({}) VALUES ({}) ON CONFLICT DO NOTHING",
                names.join(", "),
                values.join(", ")
            ))
            .unwrap_or_else(|e| panic!("version {n}: a row in {t}: {e}"));
            let rows = pg_count(&mut c, &t);
            before.insert(t, rows);
        }
        drop(c);
        assert!(before.values().all(|&c| c >= 1), "version {n}: {before:?}");
        let store = db.store();
        assert_eq!(store.schema_version().unwrap(), latest(), "from {n}");
        let (org, user, token) = run::<_, StoreError>(&store, false, |tx| {
            Ok((tx.get_org("x")?, tx.get_user("x")?, tx.get_token("x")?))
        })
        .unwrap_or_else(|e| panic!("reading rows upgraded from version {n}: {e}"));
        assert!(
            org.is_some() && user.is_some() && token.is_some(),
            "from {n}"
        );
        drop(store);
        let mut c = db.client();
        let now_tables = pg_tables(&mut c);
        for (table, was) in &before {
            let now = match REPLACED.iter().find(|(old, _)| old == table) {
                Some((_, new)) if !now_tables.contains(table) => pg_count(&mut c, new),
                _ => pg_count(&mut c, table),
            };
            assert!(now >= *was, "from {n}: {table} had {was} rows, now {now}");
        }
        assert_eq!(
            pg_shape(&mut c),
            fresh,
            "the schema upgraded from {n} differs from a new one"
        );
    }
}

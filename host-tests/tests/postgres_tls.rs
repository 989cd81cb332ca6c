//! TLS between the real control plane and a real PostgreSQL: a throwaway cluster with
//! `ssl = on`, a CA and server certificate made at run time and a `pg_hba.conf` that takes
//! TCP clients only over TLS. The `tessera` binary connects as its `--db` URL's `sslmode`
//! and `sslrootcert` say, and is refused, in words naming the problem, where it must be.
//! Needs `TESSERA_CP_BIN` (set by `cargo xtask test`) and PostgreSQL's binaries.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use tessera_host_tests::{control_plane_path, repo_root, ControlPlane, ControlPlaneOptions};
use tessera_host_tests::{PgCluster, PgOptions, TempDir};

/// `tessera admin bootstrap` on `url`: its stderr when it failed, `None` when it worked.
fn bootstrap_error(bin: &std::path::Path, dir: &TempDir, url: &str) -> Option<String> {
    let out = Command::new(bin)
        .args([
            "admin",
            "bootstrap",
            "--org",
            "o2",
            "--admin",
            "root",
            "--db",
            url,
        ])
        .env("TESSERA_MASTER_KEY_FILE", dir.path().join("master.key"))
        .output()
        .expect("running tessera");
    (!out.status.success()).then(|| String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn the_control_plane_speaks_tls_to_postgres_as_its_url_asks() {
    let bin = control_plane_path();
    let pg = PgCluster::start(
        &repo_root().join("target").join("pg"),
        &PgOptions {
            fsync: false,
            max_connections: 50,
            tls: true,
            hostssl_only: true,
        },
    )
    .unwrap_or_else(|e| panic!("PostgreSQL: {e}"));
    let ca = pg.ca_file().expect("a CA").to_path_buf();

    // verify-full with the cluster's CA: the service works, and every connection it holds
    // is encrypted.
    let db = pg.create_database("tessera_tls").unwrap();
    assert!(db.contains("sslmode=verify-full"), "{db}");
    let cp = ControlPlane::start(&ControlPlaneOptions::new(&bin).database(&db))
        .unwrap_or_else(|e| panic!("control plane on {db}: {e}"));
    let listed = cp
        .api("GET", "/v1/tokens", Some(cp.admin_token()), None)
        .unwrap_or_else(|e| panic!("listing tokens: {e}"));
    assert!(listed.is_object(), "{listed}");
    let counts = pg
        .psql(
            "postgres",
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl) \
             FROM pg_stat_activity a JOIN pg_stat_ssl s ON s.pid = a.pid \
             WHERE a.application_name = 'tessera'",
        )
        .unwrap();
    let (tls, plain) = counts.split_once('|').expect("two counts");
    assert!(
        tls.parse::<u32>().unwrap() >= 1,
        "no TLS connection of tessera: {counts}"
    );
    assert_eq!(
        plain, "0",
        "tessera holds unencrypted connections: {counts}"
    );

    let key_dir = TempDir::new("tls-key").unwrap();
    let key = Command::new(&bin)
        .args(["admin", "gen-master-key"])
        .output()
        .unwrap();
    std::fs::write(key_dir.path().join("master.key"), &key.stdout).unwrap();
    // The commands below run with a master key of their own: on a database of their own.
    pg.create_database("tessera_tls_cli").unwrap();
    let plain_url = pg.plain_url("tessera_tls_cli");

    // verify-full with another CA: refused, naming the CA file.
    let other = TempDir::new("tls-other-ca").unwrap();
    let other_ca = other.path().join("other-ca.crt");
    {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(&other_ca, issuer.pem()).unwrap();
    }
    let wrong = format!(
        "{plain_url}?sslmode=verify-full&sslrootcert={}",
        other_ca.display()
    );
    let e = bootstrap_error(&bin, &key_dir, &wrong).expect("a wrong CA is refused");
    eprintln!("refused: {e}");
    assert!(
        e.contains("not signed by the CA in sslrootcert") && e.contains("other-ca.crt"),
        "{e}"
    );

    // verify-full to a name the certificate does not carry (the host by another name).
    let renamed = format!(
        "postgres://postgres@127.0.0.2:{}/tessera_tls_cli?sslmode=verify-full&sslrootcert={}&hostaddr=127.0.0.1",
        pg.port(),
        ca.display()
    );
    let e = bootstrap_error(&bin, &key_dir, &renamed).expect("a wrong host name is refused");
    assert!(e.contains("does not name the host"), "{e}");
    // verify-ca checks the CA only: the same URL connects.
    let ca_only = renamed.replace("verify-full", "verify-ca");
    if let Some(e) = bootstrap_error(&bin, &key_dir, &ca_only) {
        panic!("verify-ca with the right CA failed: {e}");
    }
    // require with a CA checks it (as libpq): another CA is refused.
    let e = bootstrap_error(&bin, &key_dir, &wrong.replace("verify-full", "require"))
        .expect("require with a wrong CA is refused");
    assert!(e.contains("not signed by the CA in sslrootcert"), "{e}");

    // No TLS: the server's hostssl-only pg_hba.conf refuses the client.
    let e = bootstrap_error(&bin, &key_dir, &format!("{plain_url}?sslmode=disable"))
        .expect("a client without TLS is refused");
    assert!(
        e.contains("pg_hba.conf") && e.contains("no encryption"),
        "{e}"
    );

    // sslmode=require to a server with TLS off: refused by the client before it sends
    // anything of its own.
    drop(cp);
    pg.psql("postgres", "ALTER SYSTEM SET ssl = off").unwrap();
    pg.psql("postgres", "SELECT pg_reload_conf()").unwrap();
    // The reload is asynchronous: wait until a new backend sees it.
    let mut seen = String::new();
    for _ in 0..100 {
        seen = pg.psql("postgres", "SHOW ssl").unwrap();
        if seen == "off" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(seen, "off", "the server did not turn TLS off");
    let e = bootstrap_error(&bin, &key_dir, &format!("{plain_url}?sslmode=require"))
        .expect("require to a server without TLS is refused");
    assert!(
        e.contains("sslmode=require asks for TLS, but the server does not offer it"),
        "{e}"
    );
}

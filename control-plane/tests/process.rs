//! The real `tessera` binary: the CLI against `tessera serve`, and durability of
//! acknowledged writes across SIGKILL. Every process started here is stopped here.
// Test helpers outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::backend::Scratch;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tessera_control_plane::client::Client;
use tessera_control_plane::store::Store;

const BIN: &str = env!("CARGO_BIN_EXE_tessera");
const MASTER: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

/// Kills the server when dropped, so a failing assertion leaves no process behind.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tessera(dir: &Scratch, args: &[&str], token: Option<&str>, url: Option<&str>) -> Output {
    let mut cmd = dir.command(BIN);
    cmd.args(args)
        .env("TESSERA_MASTER_KEY", MASTER)
        .env_remove("TESSERA_TOKEN");
    if let Some(t) = token {
        cmd.env("TESSERA_TOKEN", t);
    }
    if let Some(u) = url {
        cmd.env("TESSERA_URL", u);
    }
    cmd.output().unwrap()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn bootstrap(dir: &Scratch) -> String {
    let out = ok(tessera(
        dir,
        &[
            "admin",
            "bootstrap",
            "--org",
            "acme",
            "--admin",
            "alice",
            "--scopes",
            "read write admin",
            "--base-url",
            "http://cp.test",
            "-o",
            "json",
        ],
        None,
        None,
    ));
    let v: Value = serde_json::from_str(&out).unwrap();
    v["token"].as_str().unwrap().to_string()
}

/// Starts `tessera serve` on a free port and waits for its "listening" line.
fn serve(dir: &Scratch) -> Server {
    let mut child = dir
        .command(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("TESSERA_MASTER_KEY", MASTER)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    Server { child, url }
}

#[test]
fn cli_bootstrap_create_download_revoke() {
    let dir = Scratch::new();
    let d = &dir;
    let admin = bootstrap(d);
    let server = serve(d);
    let run = |args: &[&str], token: &str| tessera(d, args, Some(token), Some(&server.url));

    let me: Value = serde_json::from_str(&ok(run(&["whoami", "-o", "json"], &admin))).unwrap();
    assert_eq!(me["user"]["username"], "alice");
    let user: Value = serde_json::from_str(&ok(run(
        &[
            "users", "create", "--org", "acme", "bob", "--role", "user", "-o", "json",
        ],
        &admin,
    )))
    .unwrap();
    let bob_id = user["id"].as_str().unwrap().to_string();

    // The admin creates a token for bob: Pending, and only bob can download it.
    let t: Value = serde_json::from_str(&ok(run(
        &[
            "tokens",
            "create",
            "--name",
            "bob's, \"first\"",
            "--user",
            "bob",
            "--scope",
            "read",
            "--ip",
            "10.0.0.0/8",
            "-o",
            "json",
        ],
        &admin,
    )))
    .unwrap();
    let id = t["id"].as_str().unwrap().to_string();
    assert_eq!(t["status"], "pending");
    let refused = run(&["tokens", "download", &id], &admin);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("403"));

    // The admin's own token: create, download once (table output is just the JWT), revoke.
    ok(run(
        &[
            "tokens",
            "create",
            "--name",
            "mine",
            "--lifetime-days",
            "30",
        ],
        &admin,
    ));
    let list: Value = serde_json::from_str(&ok(run(
        &["tokens", "list", "--q", "mine", "-o", "json"],
        &admin,
    )))
    .unwrap();
    let mine = list[0]["id"].as_str().unwrap().to_string();
    let jwt = ok(run(&["tokens", "download", &mine], &admin))
        .trim()
        .to_string();
    assert_eq!(jwt.split('.').count(), 3);
    assert!(
        !run(&["tokens", "download", &mine], &admin).status.success(),
        "download once"
    );
    let me: Value = serde_json::from_str(&ok(run(&["whoami", "-o", "json"], &jwt))).unwrap();
    assert_eq!(me["token"], mine.as_str());
    let access = ok(run(&["exchange", &jwt], &admin)).trim().to_string();
    assert_eq!(access.split('.').count(), 3);
    ok(run(&["tokens", "revoke", &mine], &admin));
    assert!(
        !run(&["whoami"], &jwt).status.success(),
        "revoked token refused"
    );
    assert!(
        !run(&["whoami"], &access).status.success(),
        "its access token too"
    );

    // Leaked tokens from the CLI: the org's policy, and a report read from stdin (no
    // sign-in needed).
    let policy = |args: &[&str]| -> Value { serde_json::from_str(&ok(run(args, &admin))).unwrap() };
    assert_eq!(
        policy(&["orgs", "leak-policy", "acme", "-o", "json"])["policy"],
        "revoke"
    );
    ok(run(
        &[
            "tokens",
            "create",
            "--name",
            "leaky",
            "--lifetime-days",
            "30",
        ],
        &admin,
    ));
    let list: Value = serde_json::from_str(&ok(run(
        &["tokens", "list", "--q", "leaky", "-o", "json"],
        &admin,
    )))
    .unwrap();
    let leaky = list[0]["id"].as_str().unwrap().to_string();
    let leaked = ok(run(&["tokens", "download", &leaky], &admin))
        .trim()
        .to_string();
    ok(run(&["whoami"], &leaked));
    let mut report = d.command(BIN);
    report
        .args([
            "report-leak",
            "-",
            "--found-at",
            "https://paste.example/1",
            "-o",
            "json",
        ])
        .env("TESSERA_URL", &server.url)
        .env_remove("TESSERA_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = report.spawn().unwrap();
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{leaked}\nnot-a-token").unwrap();
    }
    let received: Value = serde_json::from_str(&ok(child.wait_with_output().unwrap())).unwrap();
    assert_eq!(received["received"], 2);
    assert!(
        !run(&["whoami"], &leaked).status.success(),
        "the reported token is revoked"
    );
    assert_eq!(
        policy(&[
            "orgs",
            "leak-policy",
            "acme",
            "--set",
            "notify_only",
            "-o",
            "json"
        ])["policy"],
        "notify_only"
    );

    // Table, CSV and edit output.
    let table = ok(run(&["tokens", "list"], &admin));
    assert!(table.lines().next().unwrap().starts_with("ID"));
    assert!(table.contains("revoked"));
    let csv = ok(run(&["tokens", "export", "--user", &bob_id], &admin));
    let rows = tessera_control_plane::csv::parse(&csv);
    assert_eq!(rows.len(), 2);
    assert!(rows[1].contains(&"bob's, \"first\"".to_string()));
    let edited = ok(run(
        &["tokens", "edit", &id, "--description", "new", "-o", "json"],
        &admin,
    ));
    assert_eq!(
        serde_json::from_str::<Value>(&edited).unwrap()["token"]["description"],
        "new"
    );
    ok(run(&["tokens", "delete", &id], &admin));
    assert!(!run(&["tokens", "show", &id], &admin).status.success());
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = Scratch::new();
    let d = &dir;
    let admin = bootstrap(d);
    let mut server = serve(d);
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let writers: Vec<_> = (0..4)
        .map(|n| {
            let client = Client::new(&server.url, Some(admin.clone())).unwrap();
            let acked = acked.clone();
            rt.spawn(async move {
                for i in 0.. {
                    let body = json!({"name": format!("burst-{n}-{i}")});
                    match client.json("POST", "/v1/tokens", &body).await {
                        Ok(r) if r.status == 201 => {
                            let id = r.json().unwrap()["id"].as_str().unwrap().to_string();
                            acked.lock().unwrap().push(id);
                        }
                        Ok(r) => panic!("unexpected {}", r.error_text()),
                        Err(_) => break, // the server is gone
                    }
                }
            })
        })
        .collect();
    // Kill in the middle of the burst.
    let start = Instant::now();
    while acked.lock().unwrap().len() < 200 && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(5));
    }
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    for w in writers {
        rt.block_on(w).unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 200,
        "only {} writes acknowledged",
        acked.len()
    );
    drop(server);

    // Every acknowledged write is in the database.
    let store: Box<dyn Store> = d.db.open();
    let missing: Vec<&String> = acked
        .iter()
        .filter(|id| store.read(|tx| tx.get_token(id)).unwrap().is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes lost",
        missing.len(),
        acked.len()
    );
    drop(store);
    // And the service comes back on the same database.
    let server = serve(d);
    let client = Client::new(&server.url, Some(admin)).unwrap();
    let r = rt
        .block_on(client.get("/v1/tokens?q=burst&per_page=1"))
        .unwrap();
    assert!(r.ok_json().unwrap()["total"].as_i64().unwrap() >= acked.len() as i64);
}

/// A bad `--sqlite-cache-mib` is refused before anything opens, naming the flag and what
/// it takes.
#[test]
fn serve_refuses_a_bad_sqlite_cache_budget() {
    let dir = Scratch::new();
    for bad in ["0", "-5", "lots", "70000"] {
        // `=`: a value with a leading `-` is still the flag's value.
        let flag = format!("--sqlite-cache-mib={bad}");
        let out = tessera(
            &dir,
            &["serve", "--listen", "127.0.0.1:0", &flag],
            None,
            None,
        );
        assert!(!out.status.success(), "--sqlite-cache-mib {bad} was taken");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--sqlite-cache-mib"), "{err}");
        assert!(
            bad == "lots" || bad == "-5" || err.contains("1..=65536"),
            "{err}"
        );
    }
}

#[test]
fn cli_scope_catalogue() {
    let dir = Scratch::new();
    let d = &dir;
    let admin = bootstrap(d);
    let server = serve(d);
    let run = |args: &[&str]| tessera(d, args, Some(&admin), Some(&server.url));
    let json = |args: &[&str]| -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&ok(run(&a))).unwrap()
    };
    // Bootstrap's --scopes start the catalogue, granted to every role.
    let list = json(&["scopes", "list", "--org", "acme"]);
    let find = |list: &Value, name: &str| {
        list["scopes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
    };
    assert_eq!(find(&list, "tessera:manage").unwrap()["builtin"], true);
    assert_eq!(
        find(&list, "write").unwrap()["roles"],
        serde_json::json!(["admin", "user", "partner", "readonly"])
    );
    let made = json(&[
        "scopes",
        "create",
        "--org",
        "acme",
        "billing",
        "--description",
        "Bills",
    ]);
    assert_eq!(made["description"], "Bills");
    let table = ok(run(&[
        "scopes",
        "update",
        "--org",
        "acme",
        "billing",
        "--description",
        "Invoices",
    ]));
    assert!(table.contains("Invoices"), "{table}");
    ok(run(&[
        "users", "create", "--org", "acme", "bob", "--role", "user",
    ]));

    // Withdrawn from the user role: a token for bob with it is refused, naming it.
    ok(run(&[
        "scopes", "withdraw", "--org", "acme", "write", "--role", "user",
    ]));
    let refused = run(&[
        "tokens", "create", "--name", "w", "--user", "bob", "--scope", "write",
    ]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr).to_string();
    assert!(
        err.contains("403") && err.contains("\"write\"") && err.contains("bob is granted"),
        "{err}"
    );
    let granted = json(&["scopes", "granted", "--user", "bob"]);
    assert!(find(&granted, "write").is_none(), "{granted}");
    // Granted to bob by name: allowed.
    let g = json(&["scopes", "grant", "--org", "acme", "write", "--user", "bob"]);
    assert_eq!(g["users"][0]["username"], "bob");
    ok(run(&[
        "tokens", "create", "--name", "w", "--user", "bob", "--scope", "write",
    ]));
    // Exactly one of --role and --user.
    assert!(!run(&["scopes", "grant", "--org", "acme", "write"])
        .status
        .success());
    ok(run(&["scopes", "delete", "--org", "acme", "billing"]));
    let list = json(&["scopes", "list", "--org", "acme"]);
    assert!(find(&list, "billing").is_none());
    assert!(
        !run(&["scopes", "delete", "--org", "acme", "tessera:manage"])
            .status
            .success()
    );
}

#[test]
fn cli_rotate_and_webhooks() {
    let dir = Scratch::new();
    let d = &dir;
    let admin = bootstrap(d);
    let server = serve(d);
    let run = |args: &[&str]| tessera(d, args, Some(&admin), Some(&server.url));
    let json = |out: Output| -> Value { serde_json::from_str(&ok(out)).unwrap() };

    // A token of the admin's, downloaded, then rotated by its name with a 5 min grace.
    let t = json(run(&[
        "tokens", "create", "--name", "deploy", "--scope", "read", "-o", "json",
    ]));
    let id = t["id"].as_str().unwrap().to_string();
    ok(run(&["tokens", "download", &id]));
    let r = json(run(&[
        "tokens", "rotate", "deploy", "--grace", "5m", "-o", "json",
    ]));
    assert_eq!(r["token"]["id"], id.as_str());
    assert_eq!(r["successor"]["name"], "deploy #2");
    assert_eq!(r["successor"]["status"], "pending");
    assert_eq!(r["rotation"]["grace_secs"], 300);
    let shown = json(run(&["tokens", "rotation", &id, "-o", "json"]));
    assert_eq!(shown["successor"], r["successor"]["id"]);
    // A second rotation is refused, naming the successor; a bad grace names the flag.
    let again = run(&["tokens", "rotate", &id, "--grace", "5m"]);
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr).to_string();
    assert!(
        err.contains("already rotated") && err.contains("deploy #2"),
        "{err}"
    );
    let bad = run(&["tokens", "rotate", &id, "--grace", "soon"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--grace"));
    let long = run(&["tokens", "rotate", "deploy #2", "--grace", "8d"]);
    assert!(!long.status.success());
    let err = String::from_utf8_lossy(&long.stderr).to_string();
    assert!(err.contains("grace_secs"), "{err}");

    // Webhooks: create (secret once), list, the delivery log of a revoke, resend, delete.
    let w = json(run(&[
        "webhooks",
        "create",
        "--org",
        "acme",
        "--endpoint",
        "http://127.0.0.1:9/never",
        "--events",
        "token.revoked,token.rotated",
        "-o",
        "json",
    ]));
    assert!(w["secret"].as_str().unwrap().starts_with("whsec_"));
    let hook = w["webhook"]["id"].as_str().unwrap().to_string();
    let list = ok(run(&["webhooks", "list", "--org", "acme"]));
    assert!(list.contains(&hook) && !list.contains("whsec_"), "{list}");
    ok(run(&["tokens", "revoke", &id]));
    let log = json(run(&[
        "webhooks",
        "deliveries",
        "--org",
        "acme",
        &hook,
        "-o",
        "json",
    ]));
    let msg = log[0]["id"].as_str().unwrap().to_string();
    assert_eq!(log[0]["event"], "token.revoked");
    let again = json(run(&[
        "webhooks", "resend", "--org", "acme", &hook, &msg, "-o", "json",
    ]));
    assert_eq!(again["id"], msg.as_str());
    ok(run(&["webhooks", "delete", "--org", "acme", &hook]));
    let bad = run(&["webhooks", "create", "--org", "acme", "--endpoint", "x"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("url"));
}

/// `tessera introspect` (the token from a file or stdin, never argv; an edge credential
/// authenticates) and `tessera orgs update --owners-manage-tokens`, through the binary.
#[test]
fn cli_introspect_and_owners_manage_tokens() {
    let dir = Scratch::new();
    let d = &dir;
    let admin = bootstrap(d);
    let server = serve(d);
    let run = |args: &[&str], token: &str| tessera(d, args, Some(token), Some(&server.url));
    let json_of = |out: Output| -> Value { serde_json::from_str(&ok(out)).unwrap() };

    let edge = json_of(run(
        &["edges", "create", "--org", "acme", "rs-1", "-o", "json"],
        &admin,
    ));
    let secret = edge["secret"].as_str().unwrap().to_string();
    let made = json_of(run(
        &[
            "tokens", "create", "--name", "probe", "--scope", "read", "-o", "json",
        ],
        &admin,
    ));
    let id = made["id"].as_str().unwrap().to_string();
    let jwt = ok(run(&["tokens", "download", &id], &admin))
        .trim()
        .to_string();
    // From a file.
    let file = d.path().join("token.txt");
    std::fs::write(&file, format!("{jwt}\n")).unwrap();
    let v = json_of(run(
        &["introspect", file.to_str().unwrap(), "-o", "json"],
        &secret,
    ));
    assert_eq!(v["active"], true, "{v}");
    assert_eq!(v["scope"], "read");
    assert_eq!(v["jti"], id.as_str());
    // From stdin (the default), after a revoke: inactive, with the reason.
    ok(run(&["tokens", "revoke", &id], &admin));
    let mut cmd = d.command(BIN);
    cmd.args(["introspect", "-o", "json"])
        .env("TESSERA_URL", &server.url)
        .env("TESSERA_TOKEN", &secret)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    {
        use std::io::Write as _;
        writeln!(child.stdin.take().unwrap(), "{jwt}").unwrap();
    }
    let v = json_of(child.wait_with_output().unwrap());
    assert_eq!(v, json!({"active": false, "reason": "revoked"}));
    // A Tessera token is not an edge credential: refused, and the message says so.
    let refused = run(&["introspect", file.to_str().unwrap()], &admin);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // The org's setting, on by default, off and back, shown by `orgs show`.
    let show = || json_of(run(&["orgs", "show", "acme", "-o", "json"], &admin));
    assert_eq!(show()["owners_manage_tokens"], true);
    let v = json_of(run(
        &[
            "orgs",
            "update",
            "acme",
            "--owners-manage-tokens",
            "false",
            "-o",
            "json",
        ],
        &admin,
    ));
    assert_eq!(v["owners_manage_tokens"], false);
    assert_eq!(show()["owners_manage_tokens"], false);
    ok(run(
        &["orgs", "update", "acme", "--owners-manage-tokens", "true"],
        &admin,
    ));
    assert_eq!(show()["owners_manage_tokens"], true);
}

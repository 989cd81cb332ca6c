//! Mail (`service::mail`, `api::mail`) through a real SMTP server: PyPI's `aiosmtpd`, which
//! `cargo xtask test` installs into tools/venv and names in `TESSERA_AIOSMTPD`, listening
//! on a loopback port and writing every message it accepts into a Maildir (with the
//! envelope's recipients in `X-RcptTo`). The events are made through the API and the
//! schedulers with the test's clock; the worker's pass (`api::mail::deliver_due`) sends
//! them. The server is stopped when the test ends, also when it fails.
// Test helpers outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::World;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tessera_control_plane::api::mail::{deliver_due, MailServer};
use tessera_control_plane::service;
use tessera_control_plane::store::notifications::MailRecord;

const AIOSMTPD_ENV: &str = "TESSERA_AIOSMTPD";
const DAY: i64 = 86_400;

/// A running aiosmtpd, killed when dropped (so also when an assertion fails).
struct Smtpd {
    child: Child,
    port: u16,
    maildir: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Smtpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn aiosmtpd() -> PathBuf {
    match std::env::var_os(AIOSMTPD_ENV) {
        Some(p) if Path::new(&p).is_file() => PathBuf::from(p),
        Some(p) => panic!(
            "{AIOSMTPD_ENV}={} is not a file: it must name the `aiosmtpd` command (cargo xtask \
             test installs PyPI aiosmtpd into tools/venv and sets it)",
            Path::new(&p).display()
        ),
        None => panic!(
            "{AIOSMTPD_ENV} is not set: this test sends mail through a real SMTP server. `cargo \
             xtask test` installs PyPI aiosmtpd into tools/venv and sets it; by hand: \
             {AIOSMTPD_ENV}=tools/venv/bin/aiosmtpd after `tools/venv/bin/pip install aiosmtpd==1.4.6`"
        ),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Smtpd {
    /// aiosmtpd on 127.0.0.1:`port`, keeping messages in a Maildir.
    fn start(port: u16) -> Smtpd {
        Smtpd::start_with(port, &[])
    }

    /// [`Smtpd::start`] with more of aiosmtpd's flags (`--tlscert …` for STARTTLS,
    /// `--smtpscert …` for SMTPS).
    fn start_with(port: u16, flags: &[&str]) -> Smtpd {
        let dir = tempfile::tempdir().unwrap();
        let maildir = dir.path().join("maildir");
        let child = Command::new(aiosmtpd())
            .args(["-n", "-l", &format!("127.0.0.1:{port}")])
            .args(flags)
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start aiosmtpd");
        let mut s = Smtpd {
            child,
            port,
            maildir,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = s.child.try_wait() {
                panic!("aiosmtpd exited before listening: {status}");
            }
            assert!(Instant::now() < deadline, "aiosmtpd did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    /// Every message received so far, parsed.
    fn messages(&self) -> Vec<Mail> {
        let new = self.maildir.join("new");
        let Ok(entries) = std::fs::read_dir(&new) else {
            return Vec::new();
        };
        let mut out: Vec<Mail> = entries
            .map(|e| Mail::parse(&std::fs::read_to_string(e.unwrap().path()).unwrap()))
            .collect();
        out.sort_by(|a, b| a.subject.cmp(&b.subject).then(a.rcpt.cmp(&b.rcpt)));
        out
    }
}

/// A received message: envelope recipients, headers that matter, body.
#[derive(Debug)]
struct Mail {
    rcpt: String,
    to: String,
    from: String,
    subject: String,
    body: String,
    raw: String,
}

impl Mail {
    fn parse(raw: &str) -> Mail {
        let raw = raw.replace("\r\n", "\n");
        let (head, body) = raw.split_once("\n\n").unwrap();
        // Unfold continued header lines.
        let head = head.replace("\n ", " ").replace("\n\t", " ");
        let header = |name: &str| -> String {
            head.lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
                })
                .unwrap_or_default()
        };
        let body = if header("Content-Transfer-Encoding").eq_ignore_ascii_case("quoted-printable") {
            let bytes = quoted_printable::decode(body, quoted_printable::ParseMode::Robust)
                .expect("quoted-printable body");
            String::from_utf8(bytes).expect("UTF-8 body")
        } else {
            body.to_string()
        };
        Mail {
            rcpt: header("X-RcptTo"),
            to: header("To"),
            from: header("From"),
            subject: header("Subject"),
            body,
            raw: raw.clone(),
        }
    }
}

async fn set_email(w: &World, user: &str, body: Value) -> Value {
    let r = w
        .call(
            "PUT",
            "/v1/me/notifications",
            Some(&w.jwt(user)),
            Some(body),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// A token of ula expiring in `secs`, made by ada and downloaded by ula: (id, JWT).
async fn token(w: &World, name: &str, secs: i64) -> (String, String) {
    let r = w
        .call(
            "POST",
            "/v1/tokens",
            Some(&w.jwt("ada")),
            Some(json!({"name": name, "user": "ula", "expires_at": w.now() + secs})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    let r = w
        .call(
            "POST",
            &format!("/v1/tokens/{id}/download"),
            Some(&w.jwt("ula")),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    (id, r.json()["jwt"].as_str().unwrap().to_string())
}

async fn outbox(w: &World, user: &str) -> Vec<MailRecord> {
    let uid = w.uid(user);
    w.state
        .read(move |tx, _| Ok(tx.list_mail(&uid, 100)?))
        .await
        .unwrap()
}

/// Runs the expiry scheduler once, as `tessera serve` does.
async fn warn_expiring(w: &World) {
    w.state
        .write(service::notifications::warn_expiring)
        .await
        .unwrap();
}

fn find<'a>(mails: &'a [Mail], rcpt: &str, subject_part: &str) -> &'a Mail {
    let found: Vec<&Mail> = mails
        .iter()
        .filter(|m| m.rcpt.contains(rcpt) && m.subject.contains(subject_part))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one mail to {rcpt} about {subject_part:?}; all: {:#?}",
        mails
            .iter()
            .map(|m| (&m.rcpt, &m.subject))
            .collect::<Vec<_>>()
    );
    found[0]
}

/// STARTTLS and SMTPS against a real aiosmtpd whose certificate a CA made at run time
/// signed: without that CA the server is not trusted and nothing is sent (the outbox says
/// why); with it (`--smtp-ca`, [`MailServer::with_ca`]) the mail goes. `--smtp-ca` with a
/// plain `smtp://` URL, or with a file that holds no PEM certificate, is refused naming the
/// flag.
#[tokio::test]
async fn mail_goes_over_starttls_and_smtps_checked_against_the_operators_ca() {
    const FROM: &str = "Tessera <tessera@example.test>";
    let _ = aiosmtpd();
    let pki = common::TestPki::new();
    let ca = pki.ca_pem.as_bytes();
    let e = MailServer::with_ca("smtp://127.0.0.1:2525", FROM, Some(ca)).unwrap_err();
    assert!(e.starts_with("--smtp-ca: the --smtp-url has no TLS"), "{e}");
    let e = MailServer::with_ca("smtps://127.0.0.1:2525", FROM, Some(b"hello")).unwrap_err();
    assert!(e.starts_with("--smtp-ca: not a PEM file"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("server.pem"), dir.path().join("server.key"));
    std::fs::write(&cert, &pki.cert_pem).unwrap();
    std::fs::write(&key, &pki.key_pem).unwrap();
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let w = World::new().await;
    set_email(&w, "ula", json!({"email": "ula@example.test"})).await;
    let _ = w.state.clone().with_mail();
    for (mode, flags) in [
        ("starttls", ["--tlscert", cert, "--tlskey", key]),
        ("smtps", ["--smtpscert", cert, "--smtpskey", key]),
    ] {
        let port = free_port();
        let smtpd = Smtpd::start_with(port, &flags);
        let url = match mode {
            "smtps" => format!("smtps://127.0.0.1:{port}"),
            _ => format!("smtp://127.0.0.1:{port}?tls=required"),
        };
        // ada revokes ula's token: one mail to ula.
        let name = format!("{mode}-token");
        let (id, _) = token(&w, &name, 90 * DAY).await;
        let r = w
            .call(
                "POST",
                &format!("/v1/tokens/{id}/revoke"),
                Some(&w.jwt("ada")),
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let untrusted = MailServer::new(&url, FROM).unwrap();
        assert_eq!(
            deliver_due(&w.state, &untrusted).await,
            0,
            "{mode}: mail sent to a server whose certificate nobody vouched for"
        );
        let why = outbox(&w, "ula")
            .await
            .into_iter()
            .find(|m| m.sent_at.is_none())
            .and_then(|m| m.last_error)
            .unwrap_or_default();
        assert!(why.to_lowercase().contains("certificate"), "{mode}: {why}");
        assert!(smtpd.messages().is_empty(), "{mode}");
        w.advance(5);
        let trusted = MailServer::with_ca(&url, FROM, Some(ca)).unwrap();
        assert_eq!(deliver_due(&w.state, &trusted).await, 1, "{mode}");
        let mails = smtpd.messages();
        assert_eq!(mails.len(), 1, "{mode}: {mails:#?}");
        assert!(
            mails[0].rcpt.contains("ula@example.test"),
            "{mode}: {mails:#?}"
        );
        assert!(
            mails[0].subject.contains(&name) || mails[0].body.contains(&name),
            "{mode}: {mails:#?}"
        );
    }
}

#[tokio::test]
async fn token_events_are_mailed_to_the_owner_and_the_admins_through_a_real_smtp_server() {
    let smtpd_bin = aiosmtpd();
    let w = World::new().await;
    // Addresses: ula and ada give theirs; ned has none (gets nothing); ada mutes new
    // networks.
    let v = set_email(&w, "ula", json!({"email": "ula@example.test"})).await;
    assert_eq!(v["email"], "ula@example.test");
    assert_eq!(v["email_source"], "own");
    assert_eq!(v["mail_configured"], false);
    set_email(
        &w,
        "ada",
        json!({"email": "Ada.Admin@example.test", "muted": ["token.used_from_new_network"]}),
    )
    .await;
    let r = w
        .call(
            "PUT",
            "/v1/me/notifications",
            Some(&w.jwt("ned")),
            Some(json!({"email": "not an address"})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.json()["message"].as_str().unwrap().starts_with("email: "));
    let r = w
        .call(
            "PUT",
            "/v1/me/notifications",
            Some(&w.jwt("ned")),
            Some(json!({"muted": ["token.nope"]})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .starts_with("muted[0]: "));

    // Without mail configured, events write no mail.
    let (quiet, _) = token(&w, "quiet", 90 * DAY).await;
    let r = w
        .call(
            "POST",
            &format!("/v1/tokens/{quiet}/revoke"),
            Some(&w.jwt("ada")),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(outbox(&w, "ula").await.is_empty());

    // From here on the server mails (what `tessera serve --smtp-url` sets).
    let _ = w.state.clone().with_mail();
    let port = free_port();
    let server = MailServer::new(
        &format!("smtp://127.0.0.1:{port}"),
        "Tessera <tessera@example.test>",
    )
    .unwrap();

    // 1. An expiring token, while the SMTP server is down: the attempt fails and is
    // retried 5 s later.
    let (deploy, _) = token(&w, "deploy", 40 * DAY).await;
    w.advance(10 * DAY);
    warn_expiring(&w).await;
    assert_eq!(deliver_due(&w.state, &server).await, 0);
    let pending = outbox(&w, "ula").await;
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].attempts, 1);
    assert!(pending[0].sent_at.is_none() && pending[0].failed_at.is_none());
    assert!(pending[0].last_error.is_some(), "{pending:?}");
    let smtpd = {
        let _ = &smtpd_bin;
        Smtpd::start(port)
    };
    assert_eq!(
        deliver_due(&w.state, &server).await,
        0,
        "not due before 5 s"
    );
    w.advance(5);
    assert_eq!(deliver_due(&w.state, &server).await, 2, "ula's and ada's");

    // 2. ada revokes one of ula's tokens: ula is told (ada, who did it, is not).
    let (ci, _) = token(&w, "ci", 90 * DAY).await;
    let r = w
        .call(
            "POST",
            &format!("/v1/tokens/{ci}/revoke"),
            Some(&w.jwt("ada")),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());

    // 3. A token reported leaked: revoked by the org's policy; both are told.
    let (leaky, leaky_jwt) = token(&w, "leaky", 90 * DAY).await;
    let r = w
        .call(
            "POST",
            "/v1/leaks",
            None,
            Some(json!({"tokens": [leaky_jwt], "url": "https://paste.example/abc", "source": "paste"})),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text());

    // 4. A token used from a new network: ula is told; ada muted these.
    let (roaming, _) = token(&w, "roaming", 90 * DAY).await;
    let edge = w.edge_secret("ada", "acme", "edge-paris").await;
    for ip in ["198.51.100.7", "203.0.113.9"] {
        let r = w
            .call(
                "POST",
                "/v1/usage",
                Some(&edge),
                Some(json!({"events": [{"token_id": roaming, "at": w.now(), "ip": ip, "outcome": "allow", "method": "GET", "path": "/x"}]})),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(deliver_due(&w.state, &server).await, 4);
    assert_eq!(deliver_due(&w.state, &server).await, 0);

    let mails = smtpd.messages();
    assert_eq!(mails.len(), 6, "{mails:#?}");
    for m in &mails {
        assert!(m.from.contains("tessera@example.test"), "{}", m.raw);
        assert!(m.body.contains("What to do"), "{}", m.raw);
        assert!(m.body.contains("http://cp.test/#/"), "{}", m.raw);
        // Never a token.
        assert!(
            !m.raw.contains("tsr_") && !m.raw.contains("eyJ"),
            "{}",
            m.raw
        );
    }
    let e = find(&mails, "ula@example.test", "\"deploy\" expires in 30 days");
    assert_eq!(e.to, "ula@example.test");
    assert!(e.body.starts_with("Hello ula,"), "{}", e.body);
    assert!(
        e.body.contains(&format!("\"deploy\" (id {deploy})")),
        "{}",
        e.body
    );
    assert!(
        e.body
            .contains(&format!("tessera tokens rotate {deploy} --grace 1h")),
        "{}",
        e.body
    );
    assert!(
        e.body.contains("http://cp.test/#/tokens?q=deploy"),
        "{}",
        e.body
    );
    assert!(e.body.contains("because you own the token"), "{}", e.body);
    let e = find(&mails, "Ada.Admin@example.test", "\"deploy\" expires");
    assert!(e.body.starts_with("Hello ada,"), "{}", e.body);
    assert!(
        e.body.contains("because you are an administrator of acme"),
        "{}",
        e.body
    );
    let r = find(&mails, "ula@example.test", "\"ci\" was revoked");
    assert!(
        r.body.contains("ada revoked this token in acme on "),
        "{}",
        r.body
    );
    assert!(
        r.body.contains(&format!("\"ci\" (id {ci}) of ula")),
        "{}",
        r.body
    );
    assert!(!mails
        .iter()
        .any(|m| m.rcpt.contains("Ada") && m.subject.contains("\"ci\"")));
    for who in ["ula@example.test", "Ada.Admin@example.test"] {
        let x = find(&mails, who, "\"leaky\" was found exposed");
        assert!(x.body.contains(&leaky), "{}", x.body);
        assert!(x.body.contains("https://paste.example/abc"), "{}", x.body);
        assert!(x.body.contains("every edge refuses it now"), "{}", x.body);
    }
    let n = find(
        &mails,
        "ula@example.test",
        "\"roaming\" was used from a new network",
    );
    assert!(
        n.body.contains("203.0.113.9 (network 203.0.113.0/24)"),
        "{}",
        n.body
    );
    assert!(n.body.contains("\"edge-paris\""), "{}", n.body);
    assert!(n.body.contains(&roaming), "{}", n.body);
    // Every row is marked sent.
    for user in ["ula", "ada"] {
        for m in outbox(&w, user).await {
            assert!(m.sent_at.is_some(), "{m:?}");
        }
    }
    // A user without an address got nothing, and says so.
    let v = w
        .call("GET", "/v1/me/notifications", Some(&w.jwt("ned")), None)
        .await
        .json();
    assert_eq!(v["email"], Value::Null);
    assert_eq!(v["mail_configured"], true);
    assert_eq!(v["events"].as_array().unwrap().len(), 5);
    drop(smtpd);
}

const BIN: &str = env!("CARGO_BIN_EXE_tessera");
const MASTER: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

/// Kills `tessera serve` when dropped, so a failing assertion leaves no process behind.
struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tessera(
    dir: &common::backend::Scratch,
    args: &[&str],
    token: Option<&str>,
    url: &str,
) -> String {
    let mut cmd = dir.command(BIN);
    cmd.args(args)
        .env("TESSERA_MASTER_KEY", MASTER)
        .env("TESSERA_URL", url)
        .env_remove("TESSERA_TOKEN")
        .stdin(Stdio::null());
    if let Some(t) = token {
        cmd.env("TESSERA_TOKEN", t);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "tessera {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn tessera_serve_with_smtp_url_mails_a_leaked_tokens_owner() {
    use std::io::BufRead as _;
    let smtpd_port = free_port();
    let smtpd = Smtpd::start(smtpd_port);
    let dir = common::backend::Scratch::new();
    let d = &dir;
    let boot: Value = serde_json::from_str(&tessera(
        d,
        &[
            "admin",
            "bootstrap",
            "--org",
            "acme",
            "--admin",
            "alice",
            "--base-url",
            "http://cp.test",
            "-o",
            "json",
        ],
        None,
        "",
    ))
    .unwrap();
    let admin = boot["token"].as_str().unwrap().to_string();
    // A wrong --smtp-url stops the server before it listens, naming the flag.
    let bad = d
        .command(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args([
            "--smtp-url",
            "ftp://127.0.0.1:1",
            "--smtp-from",
            "t@example.test",
        ])
        .env("TESSERA_MASTER_KEY", MASTER)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--smtp-url"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    let mut child = d
        .command(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(["--smtp-url", &format!("smtp://127.0.0.1:{smtpd_port}")])
        .args(["--smtp-from", "Tessera <tessera@example.test>"])
        .env("TESSERA_MASTER_KEY", MASTER)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let server = Served(child);
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    let run = |args: &[&str]| tessera(d, args, Some(&admin), &url);

    let set: Value = serde_json::from_str(&run(&[
        "notifications",
        "set",
        "--email",
        "alice@example.test",
        "--mute",
        "token.expiring,token.revoked",
        "--unmute",
        "token.revoked",
        "-o",
        "json",
    ]))
    .unwrap();
    assert_eq!(set["email"], "alice@example.test");
    assert_eq!(set["mail_configured"], true);
    let muted: Vec<&str> = set["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["mail"] == false)
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(muted, vec!["token.expiring"]);
    let shown = run(&["notifications", "show"]);
    assert!(shown.contains("alice@example.test"), "{shown}");
    assert!(shown.contains("muted"), "{shown}");

    run(&[
        "tokens",
        "create",
        "--name",
        "leaky",
        "--lifetime-days",
        "30",
    ]);
    let list: Value =
        serde_json::from_str(&run(&["tokens", "list", "--q", "leaky", "-o", "json"])).unwrap();
    let leaky = list[0]["id"].as_str().unwrap().to_string();
    let jwt = run(&["tokens", "download", &leaky]).trim().to_string();
    // Reported by anyone: revoked, and alice is mailed within the worker's second.
    tessera(
        d,
        &["report-leak", &jwt, "--found-at", "https://paste.example/1"],
        None,
        &url,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let mails = loop {
        let m = smtpd.messages();
        if !m.is_empty() || Instant::now() > deadline {
            break m;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(mails.len(), 1, "{mails:#?}");
    let m = &mails[0];
    assert_eq!(m.rcpt, "alice@example.test");
    assert!(
        m.subject.contains("\"leaky\" was found exposed"),
        "{}",
        m.raw
    );
    assert!(m.body.contains(&format!("(id {leaky})")), "{}", m.body);
    assert!(m.body.contains("https://paste.example/1"), "{}", m.body);
    assert!(!m.raw.contains(&jwt) && !m.raw.contains("eyJ"), "{}", m.raw);
    drop(server);
}

#[tokio::test]
async fn with_mail_invitation_and_reset_links_are_only_mailed_to_their_user() {
    let smtpd = Smtpd::start(free_port());
    let port = smtpd.port;
    let w = World::new().await;
    let _ = w.state.clone().with_mail();
    let server = MailServer::new(
        &format!("smtp://127.0.0.1:{port}"),
        "Tessera <tessera@example.test>",
    )
    .unwrap();
    // Creating a user needs their address: the invitation goes there, and only there.
    let r = w
        .call(
            "POST",
            "/v1/orgs/acme/users",
            Some(&w.jwt("ada")),
            Some(json!({"username": "bea", "role": "user"})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .starts_with("email: required"));
    let r = w
        .call(
            "POST",
            "/v1/orgs/acme/users",
            Some(&w.jwt("ada")),
            Some(json!({"username": "bea", "role": "user", "email": "bea@example.test"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let made = r.json();
    assert!(made.get("link").is_none(), "{made}");
    assert_eq!(made["link_mailed_to"], "bea@example.test");
    let bea = made["id"].as_str().unwrap().to_string();
    // The store keeps no usable link: the message's body is sealed until it is sent.
    let waiting = {
        let bea = bea.clone();
        w.state
            .read(move |tx, _| Ok(tx.list_mail(&bea, 10)?))
            .await
            .unwrap()
    };
    assert_eq!(waiting.len(), 1);
    assert!(waiting[0].body.starts_with("sealed:"), "{:?}", waiting[0]);
    assert!(!waiting[0].body.contains("#/invite/"));
    assert_eq!(deliver_due(&w.state, &server).await, 1);
    let mails = smtpd.messages();
    let invite = find(&mails, "bea@example.test", "your invitation to acme");
    let secret = invite
        .body
        .split("http://cp.test/#/invite/")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no invitation link in {}", invite.body))
        .to_string();
    // Sent: the body is blanked; the mailed link works, once.
    let sent = w
        .state
        .read(move |tx, _| Ok(tx.list_mail(&bea, 10)?))
        .await
        .unwrap();
    assert!(sent[0].sent_at.is_some() && !sent[0].body.contains(&secret));
    let r = w
        .call(
            "POST",
            "/v1/links/accept",
            None,
            Some(json!({"secret": secret, "password": "bea's long password"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The user's own address is the one the admin gave (theirs to change).
    let bea = made["id"].as_str().unwrap().to_string();
    let address = w
        .state
        .read(move |tx, _| service::mail::address_of(tx, &bea))
        .await
        .unwrap();
    assert_eq!(address, Some(("bea@example.test".to_string(), "own")));

    // A reset: mailed to the user's address, not in the answer; a user with no address
    // cannot be reset (nobody could receive the link but the admin).
    set_email(&w, "ula", json!({"email": "ula@example.test"})).await;
    let r = w
        .call(
            "POST",
            &format!("/v1/users/{}/reset-link", w.uid("ula")),
            Some(&w.jwt("ada")),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert!(v.get("link").is_none(), "{v}");
    assert_eq!(v["link_mailed_to"], "ula@example.test");
    let r = w
        .call(
            "POST",
            &format!("/v1/users/{}/reset-link", w.uid("ned")),
            Some(&w.jwt("ada")),
            None,
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("ned has no mail address"),
        "{}",
        r.text()
    );
    assert_eq!(deliver_due(&w.state, &server).await, 1);
    let mails = smtpd.messages();
    let reset = find(&mails, "ula@example.test", "reset your password (acme)");
    assert!(
        reset.body.contains("http://cp.test/#/reset/"),
        "{}",
        reset.body
    );
    assert!(reset.body.starts_with("Hello ula,"), "{}", reset.body);
    assert!(!mails.iter().any(|m| m.rcpt.contains("ada")), "{mails:#?}");
}

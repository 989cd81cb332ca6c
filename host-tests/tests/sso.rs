//! Single sign-on with OpenID Connect in real Chromium (Debian's, through chromedriver)
//! against a real OpenID provider on loopback — the npm package `oidc-provider`, run by
//! `host-tests/oidc/provider.mjs` with a key, client and secret made at start — and a real
//! `tessera serve`. One provider, one control plane and one browser for every case: the
//! admin sets the connection up on the Organization page; a first sign-in creates the user
//! just in time with the mapped role (and the default role when no group maps); a returning
//! sign-in finds the same user; a tampered `state`, a replayed callback and a replayed code,
//! an ID token for another audience and an expired one, and a domain with no connection are
//! refused with their own reasons; "require SSO" refuses a user's password while the
//! admin's break-glass password sign-in works and is marked in the audit log. Every process
//! is stopped when the test ends, also on failure.
// Test code may fail loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tessera_host_tests::{
    control_plane_path, lookup_tool, ControlPlane, ControlPlaneOptions, TempDir,
};

const CHROMIUM_ENV: &str = "TESSERA_CHROMIUM";
const AXE_ENV: &str = "TESSERA_AXE";
const CHROMEDRIVER_ENV: &str = "TESSERA_CHROMEDRIVER";
const OIDC_PROVIDER_ENV: &str = "TESSERA_OIDC_PROVIDER";
const DOMAIN: &str = "example.com";

/// A child in its own process group, killed with its group when dropped.
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.wait();
    }
}

fn spawn(cmd: &mut Command) -> Group {
    use std::os::unix::process::CommandExt;
    Group(
        cmd.process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}")),
    )
}

/// The provider: its issuer, client id and secret (from its first line of output).
struct Provider {
    _child: Group,
    /// Kept open: the provider may write more, and a closed pipe would stop it.
    _out: BufReader<std::process::ChildStdout>,
    issuer: String,
    client_id: String,
    client_secret: String,
}

impl Provider {
    fn start(module: &Path, redirect_uri: &str) -> Provider {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("oidc/provider.mjs");
        let mut child = spawn(
            Command::new("node")
                .arg(&script)
                .arg(module)
                .arg(redirect_uri)
                .arg(DOMAIN)
                .stdout(Stdio::piped())
                .stderr(Stdio::null()),
        );
        let out = child.0.stdout.take().unwrap();
        let mut line = String::new();
        let mut out = BufReader::new(out);
        out.read_line(&mut line).unwrap();
        let v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the provider said {line:?}: {e}"));
        Provider {
            _child: child,
            _out: out,
            issuer: v["issuer"].as_str().unwrap().to_string(),
            client_id: v["client_id"].as_str().unwrap().to_string(),
            client_secret: v["client_secret"].as_str().unwrap().to_string(),
        }
    }
}

struct Ui {
    c: Client,
    base: String,
    /// axe-core's source, injected into a page to check it.
    axe: String,
}

impl Ui {
    async fn goto(&self, url: &str) {
        let url = if url.starts_with("http") {
            url.to_string()
        } else {
            format!("{}{url}", self.base)
        };
        self.c.goto(&url).await.unwrap();
    }

    /// Runs `op` on the element `css` until it works (the page re-renders after answers).
    async fn with<T, F, Fut>(&self, css: &str, what: &str, op: F) -> T
    where
        F: Fn(fantoccini::elements::Element) -> Fut,
        Fut: std::future::Future<Output = Result<T, fantoccini::error::CmdError>>,
    {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let last = match self.c.find(Locator::Css(css)).await {
                Ok(e) => match op(e).await {
                    Ok(v) => return v,
                    Err(e) => e.to_string(),
                },
                Err(e) => e.to_string(),
            };
            assert!(
                Instant::now() < deadline,
                "{what} {css}: {last} (at {:?})",
                self.c.current_url().await.map(|u| u.to_string())
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn fill(&self, css: &str, value: &str) {
        self.with(css, "fill", |e| async move {
            e.clear().await?;
            e.send_keys(value).await
        })
        .await
    }

    async fn click(&self, css: &str) {
        self.with(css, "click", |e| async move { e.click().await })
            .await
    }

    async fn text_of(&self, css: &str) -> String {
        self.with(css, "text of", |e| async move { e.text().await })
            .await
    }

    async fn attr_of(&self, css: &str, attr: &str) -> String {
        self.with(css, "attribute of", |e| async move {
            e.attr(attr).await.map(|a| a.unwrap_or_default())
        })
        .await
    }

    /// Waits until the page's `h1` reads `title`.
    async fn title(&self, title: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let got = match self.c.find(Locator::Css("main h1")).await {
                Ok(h) => h.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if got == title {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "page title {got:?}, want {title:?} (at {:?})",
                self.c.current_url().await.map(|u| u.to_string())
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// axe-core's serious and critical findings on the page as it is now.
    async fn axe_findings(&self) -> Vec<String> {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let loaded = self
            .c
            .execute("return typeof window.axe", vec![])
            .await
            .unwrap();
        if loaded != json!("object") {
            self.c.execute(&self.axe, vec![]).await.unwrap();
        }
        let found = self
            .c
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document).then(r => done(r.violations
                     .filter(v => v.impact === 'serious' || v.impact === 'critical')
                     .map(v => v.id + ' (' + v.impact + '): ' + v.nodes.map(n => n.target.join(' ')).join(', '))));",
                vec![],
            )
            .await
            .unwrap();
        serde_json::from_value(found).unwrap_or_default()
    }

    /// Waits until the element `css` reads `want`.
    async fn wait_text(&self, css: &str, want: &str) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let got = match self.c.find(Locator::Css(css)).await {
                Ok(e) => e.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if got == want {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("{css} reads {got:?}, want {want:?}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The signed-in session as the page sees it (`null` when signed out).
    async fn session(&self) -> Value {
        self.c
            .execute_async(
                "const done = arguments[0];
                 fetch('/v1/session').then(r => r.ok ? r.json() : null).then(done, () => done(null));",
                vec![],
            )
            .await
            .unwrap()
    }

    /// Signs out; a session signed in through the provider ends there too: the page sends
    /// the browser to the provider's logout confirmation, which sends it back here. Answers
    /// whether it went through the provider.
    async fn sign_out(&self) -> bool {
        self.goto("/#/tokens").await;
        self.click("#who button").await;
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut via_provider = false;
        loop {
            if let Ok(yes) = self
                .c
                .find(Locator::Css("button[name=logout][value=yes]"))
                .await
            {
                if yes.click().await.is_ok() {
                    via_provider = true;
                }
            }
            let here = self.c.current_url().await.map(|u| u.to_string());
            let on_page = here.as_ref().is_ok_and(|u| u.starts_with(&self.base));
            if on_page {
                if let Ok(h) = self.c.find(Locator::Css("main h1")).await {
                    if h.text().await.unwrap_or_default() == "Sign in" {
                        return via_provider;
                    }
                }
            }
            assert!(Instant::now() < deadline, "signing out: still at {here:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Forgets the provider's session (its cookies on its own host), so the next sign-in
    /// there asks for a login again.
    async fn forget_provider(&self, issuer: &str) {
        self.goto(&format!("{issuer}/.well-known/openid-configuration"))
            .await;
        self.c.delete_all_cookies().await.unwrap();
    }

    /// From the sign-in page: "Sign in with SSO" with `email`.
    async fn start_sso(&self, email: &str) {
        self.goto("/#/signin").await;
        self.title("Sign in").await;
        self.fill("#f-sso-email", email).await;
        self.click("#sso-start").await;
    }

    /// The provider's own login form: any login and password.
    async fn provider_login(&self, login: &str) {
        self.fill("input[name=login]", login).await;
        self.fill("input[name=password]", "any password").await;
        self.click("button[type=submit]").await;
    }

    /// The refusal the page shows after a failed sign-in: (reason, words).
    async fn refusal(&self) -> (String, String) {
        self.title("Sign in").await;
        let css = "main [data-sso-reason]";
        (
            self.attr_of(css, "data-sso-reason").await,
            self.text_of(css).await,
        )
    }

    /// The callback URL a `hold` login stopped at.
    async fn held_callback(&self) -> String {
        self.text_of("#callback").await
    }
}

#[tokio::test]
async fn single_sign_on_in_chromium_against_a_real_openid_provider() {
    let started = Instant::now();
    let need = |var: &str| {
        lookup_tool(var).unwrap_or_else(|e| {
            panic!("{e} (cargo xtask test installs Chromium, chromedriver and oidc-provider)")
        })
    };
    let (chromium, chromedriver, module, axe) = (
        need(CHROMIUM_ENV),
        need(CHROMEDRIVER_ENV),
        need(OIDC_PROVIDER_ENV),
        need(AXE_ENV),
    );
    let mut options = ControlPlaneOptions::new(&control_plane_path());
    options.admins = vec!["alice".into()];
    // Every sign-in below comes from one address: room for them under the rate limit.
    options.serve_args = vec!["--unauth-burst".into(), "500".into()];
    let cp = ControlPlane::start(&options).unwrap();
    let provider = Provider::start(&module, &format!("{}/v1/sso/callback", cp.url()));

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _driver = spawn(
        Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    let profile = TempDir::new("chrome-sso").unwrap();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium.display().to_string(),
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", format!("--user-data-dir={}", profile.path().display()),
                     "--window-size=1280,900"],
        }),
    );
    let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a WebDriver session in Chromium");
    let ui = Ui {
        c,
        base: cp.url(),
        axe: std::fs::read_to_string(&axe).expect("axe-core's source"),
    };
    let result = cases(&ui, &cp, &provider).await;
    let _ = ui.c.clone().close().await;
    println!(
        "single sign-on test: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    if let Err(e) = result {
        panic!("{e}\ncontrol plane log (end):\n{}", tail(&cp.log(), 40));
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The org's users by username: (id, role).
fn users(cp: &ControlPlane, admin: &str) -> Result<Vec<(String, String, String)>, String> {
    let v = cp.api("GET", "/v1/orgs/acme/users?per_page=100", Some(admin), None)?;
    Ok(v["users"]
        .as_array()
        .ok_or(format!("users: {v}"))?
        .iter()
        .map(|u| {
            (
                u["username"].as_str().unwrap_or_default().to_string(),
                u["id"].as_str().unwrap_or_default().to_string(),
                u["role"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect())
}

fn user(cp: &ControlPlane, admin: &str, name: &str) -> Result<Option<(String, String)>, String> {
    Ok(users(cp, admin)?
        .into_iter()
        .find(|(n, _, _)| n == name)
        .map(|(_, id, role)| (id, role)))
}

async fn expect_refusal(ui: &Ui, case: &str, reason: &str, words: &str) -> Result<(), String> {
    let (got, text) = ui.refusal().await;
    if got != reason || !text.contains(words) {
        return Err(format!(
            "{case}: the page says {got:?} {text:?}, want {reason:?} with {words:?}"
        ));
    }
    if !ui.session().await.is_null() {
        return Err(format!("{case}: a session was started"));
    }
    Ok(())
}

async fn cases(ui: &Ui, cp: &ControlPlane, p: &Provider) -> Result<(), String> {
    let admin = cp.admin_token().to_string();
    let pw = "correct horse battery staple";

    // 1. The admin signs in (bootstrap link, then a password) and sets the connection up
    //    on the Organization page: the domain, the provider, a group mapping to admin and
    //    readonly as the default role.
    let link = cp
        .sign_in_link_of("alice")
        .ok_or("no bootstrap link")?
        .to_string();
    ui.goto(&link).await;
    ui.fill("#f-password", pw).await;
    ui.fill("#f-again", pw).await;
    ui.click("main form button[type=submit]").await;
    ui.title("API tokens").await;
    ui.goto("/#/org").await;
    ui.title("Organization acme").await;
    ui.fill("#f-sso-issuer", &p.issuer).await;
    ui.fill("#f-sso-client-id", &p.client_id).await;
    ui.fill("#f-sso-client-secret", &p.client_secret).await;
    ui.fill("#f-sso-domains", DOMAIN).await;
    ui.with(
        "#f-sso-default-role option[value='readonly']",
        "select",
        |e| async move { e.click().await },
    )
    .await;
    ui.fill("#f-sso-group-roles", "tessera-admins=admin").await;
    ui.click("#sso-save").await;
    let shown = ui.text_of("#sso-redirect-uri").await;
    let want_redirect = format!("{}/v1/sso/callback", cp.url());
    if shown != want_redirect {
        return Err(format!(
            "1: the page shows redirect URI {shown:?}, want {want_redirect:?}"
        ));
    }
    let conn = cp.api("GET", "/v1/orgs/acme/sso", Some(&admin), None)?;
    if conn["issuer"] != json!(p.issuer)
        || conn["domains"] != json!([DOMAIN])
        || conn["default_role"] != json!("readonly")
        || conn["group_roles"] != json!([{"group": "tessera-admins", "role": "admin"}])
        || conn.get("client_secret").is_some()
    {
        return Err(format!("1: the connection saved is {conn}"));
    }

    // 1b. The operator's list of domain claims, on the same page (alice is a root admin):
    //     the root organization's own domain needs no approval. Withdrawn from the page, it
    //     routes nobody; approved again, it does.
    let state_cell = format!("#domain-claims tr[data-domain='{DOMAIN}'] td[data-column=state]");
    let action = format!("#domain-claims tr[data-domain='{DOMAIN}'] button");
    ui.wait_text(&state_cell, "approved").await?;
    ui.click(&action).await;
    ui.click("dialog[open] button[type=submit]").await;
    ui.wait_text(&state_cell, "pending").await?;
    let claims = cp.api("GET", "/v1/sso/domains?pending=true", Some(&admin), None)?;
    if claims["domains"][0]["domain"] != json!(DOMAIN) {
        return Err(format!("1b: pending claims after Withdraw: {claims}"));
    }
    ui.text_of("#sso-pending").await;
    ui.click(&action).await;
    ui.click("dialog[open] button[type=submit]").await;
    ui.wait_text(&state_cell, "approved").await?;
    let findings = ui.axe_findings().await;
    if !findings.is_empty() {
        return Err(format!(
            "1b: axe-core on the Organization page: {findings:?}"
        ));
    }
    let _ = ui.sign_out().await;

    // 2. A domain with no connection: said in the sign-in form, nothing leaves for a provider.
    ui.start_sso("someone@nowhere.example").await;
    let msg = ui.text_of("#sso-box [role=alert]").await;
    if !msg.contains("no organization signs in nowhere.example addresses") {
        return Err(format!("2: the page says {msg:?}"));
    }

    // 3. First sign-in: ana (group staff, not mapped) is created just in time as readonly.
    ui.start_sso(&format!("ana@{DOMAIN}")).await;
    ui.provider_login("ana").await;
    ui.title("API tokens").await;
    let s = ui.session().await;
    let ana = format!("ana@{DOMAIN}");
    if s["user"]["username"] != json!(ana) || s["user"]["role"] != json!("readonly") {
        return Err(format!("3: signed in as {s}"));
    }
    let (ana_id, _) = user(cp, &admin, &ana)?.ok_or("3: ana was not created")?;
    let count = users(cp, &admin)?.len();
    // She has no password and no token, yet she is in: active, not "invited".
    let state = cp.api("GET", &format!("/v1/users/{ana_id}"), Some(&admin), None)?;
    if state["state"] != json!("active") {
        return Err(format!("3: the SSO user's state: {state}"));
    }

    // 4. Signing out ends the provider's session too (RP-Initiated Logout: the provider's
    //    confirmation, then back to the page), so the provider asks for a login again; the
    //    returning sign-in is the same user, no new one.
    if !ui.sign_out().await {
        return Err("4: signing out did not go through the provider".into());
    }
    ui.start_sso(&ana).await;
    ui.provider_login("ana").await;
    ui.title("API tokens").await;
    let s = ui.session().await;
    if s["user"]["id"] != json!(ana_id) || users(cp, &admin)?.len() != count {
        return Err(format!("4: returning sign-in gave {s}"));
    }
    let _ = ui.sign_out().await;

    // 5. A user in a mapped group: created as admin.
    ui.forget_provider(&p.issuer).await;
    ui.start_sso(&format!("admin-ops@{DOMAIN}")).await;
    ui.provider_login("admin-ops").await;
    ui.title("API tokens").await;
    let s = ui.session().await;
    if s["user"]["role"] != json!("admin") {
        return Err(format!("5: the mapped user signed in as {s}"));
    }
    let _ = ui.sign_out().await;

    // 6. An ID token for another audience, signed by the provider's own key: refused.
    ui.forget_provider(&p.issuer).await;
    ui.start_sso(&format!("wrong-aud@{DOMAIN}")).await;
    ui.provider_login("wrong-aud").await;
    expect_refusal(ui, "6", "sso_audience_mismatch", "audience").await?;
    // The single sign-on screens pass axe-core: the sign-in page with its refusal, and
    // the Organization page's section (checked in 1b's page by the web page test's axe
    // run as well).
    let findings = ui.axe_findings().await;
    if !findings.is_empty() {
        return Err(format!("6: axe-core on the refused sign-in: {findings:?}"));
    }

    // 7. An expired ID token: refused.
    ui.forget_provider(&p.issuer).await;
    ui.start_sso(&format!("expired@{DOMAIN}")).await;
    ui.provider_login("expired").await;
    expect_refusal(ui, "7", "sso_id_token_expired", "expired").await?;
    for who in ["wrong-aud", "expired"] {
        if user(cp, &admin, &format!("{who}@{DOMAIN}"))?.is_some() {
            return Err(format!("6-7: {who} was created although refused"));
        }
    }

    // 8. A wrong `state`: the provider's real answer with another state is refused.
    ui.forget_provider(&p.issuer).await;
    ui.start_sso(&format!("hold-1@{DOMAIN}")).await;
    ui.provider_login("hold-1").await;
    let callback = ui.held_callback().await;
    let tampered = replace_param(&callback, "state", "not-the-state-we-sent");
    ui.goto(&tampered).await;
    expect_refusal(ui, "8", "sso_state_invalid", "unknown or was already used").await?;

    // 9. Replays: the whole callback again after it signed in (the state is used once),
    //    then its code under a new sign-in's state (the provider refuses a used code).
    ui.start_sso(&format!("hold-1@{DOMAIN}")).await;
    let first = ui.held_callback().await;
    ui.goto(&first).await;
    ui.title("API tokens").await;
    let _ = ui.sign_out().await;
    ui.goto(&first).await;
    expect_refusal(
        ui,
        "9 (callback replayed)",
        "sso_state_invalid",
        "already used",
    )
    .await?;
    // Signing out ended the provider's session too: it asks for the login again.
    ui.start_sso(&format!("hold-1@{DOMAIN}")).await;
    ui.provider_login("hold-1").await;
    let second = ui.held_callback().await;
    let old_code = param(&first, "code").ok_or("9: no code")?;
    ui.goto(&replace_param(&second, "code", &old_code)).await;
    expect_refusal(
        ui,
        "9 (code replayed)",
        "sso_code_refused",
        "refused the sign-in code",
    )
    .await?;

    // 10. "Require SSO": a user's password is refused; the admin's break-glass password
    //     sign-in works and the audit log marks it.
    let carol = cp.api(
        "POST",
        "/v1/orgs/acme/users",
        Some(&admin),
        Some(&json!({"username": "carol", "role": "user"})),
    )?;
    let secret = carol["link"]["url"]
        .as_str()
        .and_then(|l| l.rsplit('/').next())
        .ok_or(format!("10: no invitation: {carol}"))?
        .to_string();
    cp.api(
        "POST",
        "/v1/links/accept",
        None,
        Some(&json!({"secret": secret, "password": pw})),
    )?;
    let mut conn = cp.api("GET", "/v1/orgs/acme/sso", Some(&admin), None)?;
    conn["require_sso"] = json!(true);
    let body = json!({
        "issuer": conn["issuer"], "client_id": conn["client_id"], "domains": conn["domains"],
        "require_sso": true, "default_role": conn["default_role"], "group_roles": conn["group_roles"],
    });
    cp.api("PUT", "/v1/orgs/acme/sso", Some(&admin), Some(&body))?;
    ui.goto("/#/signin").await;
    ui.title("Sign in").await;
    for (f, v) in [
        ("#f-org", "acme"),
        ("#f-username", "carol"),
        ("#f-password", pw),
    ] {
        ui.fill(f, v).await;
    }
    ui.click("#signin-form button[type=submit]").await;
    let msg = ui.text_of("#signin-form [role=alert]").await;
    if !msg.contains("signs in with single sign-on") {
        return Err(format!("10: carol's password sign-in says {msg:?}"));
    }
    for (f, v) in [
        ("#f-org", "acme"),
        ("#f-username", "alice"),
        ("#f-password", pw),
    ] {
        ui.fill(f, v).await;
    }
    ui.click("#signin-form button[type=submit]").await;
    ui.title("API tokens").await;
    let audit = cp.api("GET", "/v1/audit-log?per_page=200", Some(&admin), None)?;
    let entries = audit["entries"]
        .as_array()
        .ok_or(format!("10: audit {audit}"))?;
    let has = |action: &str, pred: &dyn Fn(&Value) -> bool| {
        entries
            .iter()
            .any(|e| e["action"] == json!(action) && pred(&e["detail"]))
    };
    if !has("session.sign_in", &|d| d["break_glass"] == json!(true)) {
        return Err("10: no break-glass sign-in in the audit log".into());
    }
    if !has("session.sign_in_failed", &|d| {
        d["why"] == json!("single sign-on required")
    }) {
        return Err("10: carol's refused sign-in is not in the audit log".into());
    }
    // The refusals at the ID-token step (6, 7) are in the org's log, with the reason.
    for why in ["sso_audience_mismatch", "sso_id_token_expired"] {
        if !has("session.sign_in_failed", &|d| {
            d["why"] == json!(why) && d["sso"] == json!(true)
        }) {
            return Err(format!(
                "10: the refused sign-in {why} is not in the audit log"
            ));
        }
    }
    for action in ["sso.create", "sso.update"] {
        if !has(action, &|_| true) {
            return Err(format!("10: no {action} in the audit log"));
        }
    }
    if !has("user.create", &|d| d["via"] == json!("sso")) {
        return Err("10: no just-in-time user.create in the audit log".into());
    }
    Ok(())
}

/// A query parameter of `url`, decoded.
fn param(url: &str, name: &str) -> Option<String> {
    let q = url.split_once('?')?.1;
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `url` with the query parameter `name` set to `value` (percent-encoded).
fn replace_param(url: &str, name: &str, value: &str) -> String {
    let (base, q) = url.split_once('?').unwrap_or((url, ""));
    let enc: String = value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let parts: Vec<String> = q
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if k == name => format!("{k}={enc}"),
            _ => kv.to_string(),
        })
        .collect();
    format!("{base}?{}", parts.join("&"))
}

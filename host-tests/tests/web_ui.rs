//! The web page in real Chromium (Debian's, driven through chromedriver over WebDriver),
//! against a real `tessera serve` on SQLite and a real Envoy with the Tessera module: the
//! ten scenarios of issue 11, a screenshot of every page visited under
//! `target/ui-screenshots/`, and axe-core on every page (no serious or critical
//! violation). Every process it starts (control plane, Envoy, upstream, chromedriver and
//! the browsers it runs) is stopped when the test ends, also on failure.
// Test code may fail loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tessera_host_tests::webhook::{verifies, Receiver};
use tessera_host_tests::{
    control_plane_path, lookup_tool, tools, ControlPlane, ControlPlaneOptions, EchoUpstream, Envoy,
    EnvoyOptions, Request, TempDir,
};

const CHROMIUM_ENV: &str = "TESSERA_CHROMIUM";
const CHROMEDRIVER_ENV: &str = "TESSERA_CHROMEDRIVER";
const AXE_ENV: &str = "TESSERA_AXE";
const CP_CLUSTER: &str = "tessera_control_plane";

/// chromedriver in its own process group: dropping it kills the group, so the browsers it
/// started go with it even when the test fails before closing its session.
struct Driver {
    child: Child,
    port: u16,
    _profile: TempDir,
}

impl Driver {
    fn start(driver: &Path) -> Driver {
        use std::os::unix::process::CommandExt;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", driver.display()));
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Driver {
            child,
            port,
            _profile: TempDir::new("chrome").unwrap(),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}

/// The browser session, the pages' screenshots and axe-core's findings.
struct Ui {
    c: Client,
    base: String,
    shots: PathBuf,
    axe: String,
    n: usize,
    /// page → serious or critical violations found there.
    violations: BTreeMap<String, Vec<String>>,
    pages: Vec<(String, PathBuf)>,
}

impl Ui {
    async fn open(driver: &Driver, chromium: &Path, base: &str, axe: String) -> Ui {
        let profile = driver._profile.path().display().to_string();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium.display().to_string(),
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                         "--disable-background-networking", "--disable-component-update", "--disable-sync",
                         "--disable-dev-shm-usage", format!("--user-data-dir={profile}"), "--window-size=1280,900"],
            }),
        );
        let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", driver.port))
            .await
            .expect("a WebDriver session in Chromium");
        let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/ui-screenshots");
        let _ = std::fs::remove_dir_all(&shots);
        std::fs::create_dir_all(&shots).unwrap();
        Ui {
            c,
            base: base.to_string(),
            shots,
            axe,
            n: 0,
            violations: BTreeMap::new(),
            pages: Vec::new(),
        }
    }

    async fn goto(&mut self, path: &str) {
        self.c.goto(&format!("{}{path}", self.base)).await.unwrap();
    }

    async fn find(&self, css: &str) -> Element {
        self.c
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
    }

    async fn has(&self, css: &str) -> bool {
        self.c.find(Locator::Css(css)).await.is_ok()
    }

    /// Waits until the page's `h1` reads `title` (the page finished rendering).
    async fn title(&self, title: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
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
                "page title {got:?}, want {title:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The page re-renders after every answer, so an element found may be replaced before
    /// it is used: each use finds it again until it works (10 s at most).
    async fn with<T, F, Fut>(&self, css: &str, what: &str, op: F) -> T
    where
        F: Fn(Element) -> Fut,
        Fut: std::future::Future<Output = Result<T, fantoccini::error::CmdError>>,
    {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let last = match self.c.find(Locator::Css(css)).await {
                Ok(e) => match op(e).await {
                    Ok(v) => return v,
                    Err(e) => e.to_string(),
                },
                Err(e) => e.to_string(),
            };
            assert!(Instant::now() < deadline, "{what} {css}: {last}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn text_of(&self, css: &str) -> String {
        self.with(css, "text of", |e| async move { e.text().await })
            .await
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

    /// Runs `script` (with `arguments`) in the page and returns its value.
    async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.c.execute(script, args).await.unwrap()
    }

    /// A screenshot of the current page, and axe-core's serious and critical findings.
    async fn page(&mut self, name: &str) {
        tokio::time::sleep(Duration::from_millis(150)).await;
        self.n += 1;
        let path = self.shots.join(format!("{:02}-{name}.png", self.n));
        let png = self.c.screenshot().await.unwrap();
        std::fs::write(&path, png).unwrap();
        self.pages.push((name.to_string(), path));
        if self.js("return typeof window.axe", vec![]).await != json!("object") {
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
        let list: Vec<String> = serde_json::from_value(found).unwrap();
        if !list.is_empty() {
            self.violations.insert(name.to_string(), list);
        }
    }

    /// `fetch` from the page (the session cookie goes along), with the session's CSRF
    /// token for a state-changing method: (status, body).
    async fn fetch(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let v = self
            .c
            .execute_async(
                "const [method, path, body, done] = arguments;
                 (async () => {
                   const s = await (await fetch('/v1/session')).json();
                   const r = await fetch(path, { method, body: body === null ? undefined : JSON.stringify(body),
                     headers: { 'content-type': 'application/json', 'x-csrf-token': s.csrf } });
                   done([r.status, await r.text()]);
                 })().catch(e => done([0, String(e)]));",
                vec![json!(method), json!(path), body.unwrap_or(Value::Null)],
            )
            .await
            .unwrap();
        let status = v[0].as_u64().unwrap() as u16;
        let body = serde_json::from_str(v[1].as_str().unwrap_or("null")).unwrap_or(Value::Null);
        (status, body)
    }

    async fn sign_out(&self) {
        self.click("#who button").await;
        self.title("Sign in").await;
    }

    async fn sign_in(&self, org: &str, user: &str, password: &str) {
        self.fill("#f-org", org).await;
        self.fill("#f-username", user).await;
        self.fill("#f-password", password).await;
        self.click("main form button[type=submit]").await;
    }

    /// Opens a one-time link and sets the password.
    async fn use_link(&mut self, url: &str, password: &str) {
        self.c.goto(url).await.unwrap();
        // The set-password form (not the sign-in form it may replace).
        self.find("#f-again").await;
        self.fill("#f-password", password).await;
        self.fill("#f-again", password).await;
        self.click("main form button[type=submit]").await;
    }

    /// Reloads the page and waits until `css` is on it (the page rendered again).
    async fn reload(&self, css: &str) {
        self.c.refresh().await.unwrap();
        self.find(css).await;
    }

    /// The secret shown in the open dialog, then closes it.
    async fn take_secret(&self) -> String {
        let v = self
            .with("dialog[open] #secret-value", "value of", |e| async move {
                e.prop("value").await
            })
            .await
            .unwrap_or_default();
        self.click("dialog[open] button[type=submit]").await;
        v
    }

    /// The status badge of a token's row.
    async fn badge(&self, id: &str) -> String {
        self.text_of(&format!("tr[data-token='{id}'] .badge")).await
    }
}

fn db_exec(db: &Path, sql: &str, param: &str) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    let n = conn.execute(sql, [param]).unwrap();
    assert!(n > 0, "{sql} changed nothing");
}

#[tokio::test]
async fn the_web_page_in_chromium() {
    let started = Instant::now();
    let need = |var: &str| {
        lookup_tool(var).unwrap_or_else(|e| {
            panic!("{e} (cargo xtask test installs Chromium, chromedriver and axe-core)")
        })
    };
    let (chromium, chromedriver, axe) = (need(CHROMIUM_ENV), need(CHROMEDRIVER_ENV), need(AXE_ENV));
    let (envoy_bin, wasm) = tools();
    let mut options = ControlPlaneOptions::new(&control_plane_path());
    options.admins = vec!["alice".into()];
    // The webhook receiver of the Webhooks page's scenario listens on loopback.
    options.serve_args = vec!["--webhook-private-destinations".into()];
    let cp = ControlPlane::start(&options).unwrap();
    let alice = cp.admin_token().to_string();
    let driver = Driver::start(&chromedriver);
    let mut ui = Ui::open(
        &driver,
        &chromium,
        &cp.url(),
        std::fs::read_to_string(&axe).unwrap(),
    )
    .await;
    let result = scenarios(&mut ui, &cp, &alice, &envoy_bin, &wasm).await;
    let _ = ui.c.clone().close().await;
    drop(driver);
    println!("web UI test: {:.1} s", started.elapsed().as_secs_f64());
    for (page, path) in &ui.pages {
        println!("  page {page}: {}", path.display());
    }
    if let Err(e) = result {
        panic!("{e}");
    }
    assert!(
        ui.violations.is_empty(),
        "axe-core found serious or critical violations: {:#?}",
        ui.violations
    );
}

async fn scenarios(
    ui: &mut Ui,
    cp: &ControlPlane,
    alice: &str,
    envoy_bin: &Path,
    wasm: &Path,
) -> Result<(), String> {
    let pw = "correct horse battery staple";
    // 1. The admin signs in with the bootstrap link and invites bob; bob accepts, sets a
    //    password and signs in.
    ui.goto("/").await;
    ui.title("Sign in").await;
    ui.page("sign-in").await;
    let link = cp
        .sign_in_link_of("alice")
        .ok_or("no bootstrap link")?
        .to_string();
    ui.use_link(&link, pw).await;
    ui.title("API tokens").await;
    ui.goto("/#/users").await;
    ui.title("Users").await;
    ui.click("#new-user").await;
    ui.fill("dialog[open] #f-username", "bob").await;
    ui.click("dialog[open] button[type=submit]").await;
    ui.find("dialog[open] #secret-value").await;
    ui.page("invitation").await;
    let invite = ui.take_secret().await;
    if !invite.contains("/#/invite/") {
        return Err(format!("1: the invitation is not a link: {invite}"));
    }
    ui.title("Users").await;
    ui.page("users").await;
    ui.sign_out().await;
    ui.c.goto(&invite).await.unwrap();
    ui.title("Accept your invitation").await;
    ui.page("accept-invitation").await;
    ui.use_link(&invite, pw).await;
    ui.title("API tokens").await;
    ui.sign_out().await;
    ui.sign_in("acme", "bob", pw).await;
    ui.title("API tokens").await;
    ui.page("tokens-empty").await;
    // A user sees only their own tokens: no Owner filter that could show nobody else.
    if ui.has("#owner").await {
        return Err("1: a user's token page offers an Owner filter".into());
    }

    // 2. Bob creates a token: 30 days, scope read, an IP filter. It shows Pending.
    ui.click("#new-token").await;
    ui.fill("dialog[open] #f-name", "bob-ci").await;
    // The server's own message for a bad field is shown next to it.
    ui.fill("dialog[open] #f-ip_allow", "not-an-address").await;
    ui.find("dialog[open] #f-lifetime option[value='30']")
        .await
        .click()
        .await
        .unwrap();
    // Scopes are picked from what bob is granted, each with its description.
    ui.click("dialog[open] #f-scopes input[value='read']").await;
    ui.click("dialog[open] button[type=submit]").await;
    let msg = ui.text_of("dialog[open] .field-error").await;
    if !msg.starts_with("ip_allow[0]:") {
        return Err(format!("2: the IP filter's error: {msg:?}"));
    }
    ui.page("new-token-error").await;
    ui.fill("dialog[open] #f-ip_allow", "127.0.0.1").await;
    // A rate limit over the largest allowed is refused next to its field, in words (0
    // never leaves the page: the field's own minimum is 1).
    ui.fill("dialog[open] #f-limit-per_minute", "2000000000000")
        .await;
    ui.click("dialog[open] button[type=submit]").await;
    let msg = ui
        .text_of("dialog[open] #f-limit-per_minute + .field-error")
        .await;
    if !msg.starts_with("limits.per_minute: must be a whole number") {
        return Err(format!("2: the rate limit's error: {msg:?}"));
    }
    ui.fill("dialog[open] #f-limit-per_minute", "").await;
    ui.click("dialog[open] button[type=submit]").await;
    ui.title("API tokens").await;
    let row = ui.find("#tokens tbody tr").await;
    let id = row
        .attr("data-token")
        .await
        .unwrap()
        .ok_or("2: no token row")?;
    let t = cp.api("GET", &format!("/v1/tokens/{id}"), Some(alice), None)?;
    if t["scopes"] != json!(["read"])
        || t["ip_allow"] != json!(["127.0.0.1"])
        || t["lifetime_days"] != json!(30)
    {
        return Err(format!("2: the token made is {t}"));
    }
    if ui.badge(&id).await != "Pending" {
        return Err(format!("2: badge {}", ui.badge(&id).await));
    }
    ui.page("tokens-pending").await;

    // 3. He downloads it: the JWT is shown once; the status becomes Enabled; a reload does
    //    not show it again.
    ui.click(&format!(
        "tr[data-token='{id}'] button[data-action='download']"
    ))
    .await;
    ui.find("dialog[open] #secret-value").await;
    let note = ui.text_of("dialog[open] .notice").await;
    if !note.contains("You will not see this token again") {
        return Err(format!("3: the download note: {note}"));
    }
    // The token is already issued: nothing to cancel, so the dialog has only Done.
    let buttons = ui
        .js(
            "return [...document.querySelectorAll('dialog[open] .buttons button')].map(b => b.textContent);",
            vec![],
        )
        .await;
    if buttons != json!(["Done"]) {
        return Err(format!("3: the download dialog's buttons are {buttons}"));
    }
    ui.page("download-once").await;
    let jwt = ui.take_secret().await;
    if jwt.split('.').count() != 3 {
        return Err(format!("3: not a JWT: {jwt}"));
    }
    ui.title("API tokens").await;
    wait_for(|| async { ui.badge(&id).await == "Enabled" }, "3: Enabled").await?;
    ui.c.refresh().await.unwrap();
    ui.title("API tokens").await;
    let page_text = ui.text_of("main").await;
    if page_text.contains(&jwt[..40])
        || ui
            .has(&format!(
                "tr[data-token='{id}'] button[data-action='download']"
            ))
            .await
    {
        return Err("3: the JWT or a download control is still offered after a reload".into());
    }
    ui.page("tokens-enabled").await;

    // 3b. Bob, a user, manages his own token (issue 22, owners_manage_tokens on by
    //     default): the Edit dialog says before saving which changes revoke the JWT; he
    //     saves a description (the JWT keeps working), then disables and enables it.
    ui.click(&format!("tr[data-token='{id}'] button[data-action='edit']"))
        .await;
    ui.find("dialog[open] #edit-effect").await;
    ui.fill("dialog[open] #f-description", "bob's CI").await;
    edit_effect_says(ui, "The current JWT keeps working").await?;
    ui.fill("dialog[open] #f-ip_allow", "127.0.0.2").await;
    edit_effect_says(ui, "saving revokes the current JWT").await?;
    ui.page("edit-says-jwt-revoked").await;
    ui.fill("dialog[open] #f-ip_allow", "127.0.0.1").await;
    edit_effect_says(ui, "The current JWT keeps working").await?;
    ui.click("dialog[open] button[type=submit]").await;
    ui.title("API tokens").await;
    // The list's title was there before the save: wait for the save itself.
    let saved = || async {
        cp.api("GET", &format!("/v1/tokens/{id}"), Some(alice), None)
            .is_ok_and(|t| t["description"] == "bob's CI")
    };
    wait_for(saved, "3b: bob's edit saved").await?;
    let t = cp.api("GET", &format!("/v1/tokens/{id}"), Some(alice), None)?;
    if t["status"] != "enabled" {
        return Err(format!("3b: after bob's edit the token is {t}"));
    }
    ui.click(&format!(
        "tr[data-token='{id}'] button[data-action='disable']"
    ))
    .await;
    wait_for(
        || async { ui.badge(&id).await == "Disabled" },
        "3b: Disabled",
    )
    .await?;
    ui.click(&format!(
        "tr[data-token='{id}'] button[data-action='enable']"
    ))
    .await;
    wait_for(|| async { ui.badge(&id).await == "Enabled" }, "3b: Enabled").await?;

    // 4. Search, hide a column (still hidden after a reload), CSV equals the table.
    cp.api(
        "POST",
        "/v1/tokens",
        Some(alice),
        Some(&json!({"name": "alice-other", "scopes": ["read"]})),
    )?;
    ui.fill("#q", "bob-ci").await;
    ui.click("form[role=search] button[type=submit]").await;
    wait_for(
        || async {
            ui.js(
                "return document.querySelectorAll('#tokens tbody tr').length",
                vec![],
            )
            .await
                == json!(1)
        },
        "4: one row",
    )
    .await?;
    ui.click(".columns summary").await;
    ui.click(".columns input[data-column='scopes']").await;
    wait_for(|| async { ui.js("return document.querySelectorAll('th').length && !document.querySelector('td[data-column=scopes]')", vec![]).await == json!(true) }, "4: scopes hidden").await?;
    ui.c.refresh().await.unwrap();
    ui.title("API tokens").await;
    ui.find("#tokens").await;
    if ui.has("td[data-column='scopes']").await {
        return Err("4: the hidden column is back after a reload".into());
    }
    ui.page("tokens-search-columns").await;
    let csv = ui
        .c
        .execute_async("const done = arguments[0]; fetch(document.getElementById('csv').href).then(r => r.text()).then(done);", vec![])
        .await
        .unwrap();
    let csv = csv.as_str().unwrap_or("");
    let table_ids: Vec<String> = serde_json::from_value(
        ui.js(
            "return [...document.querySelectorAll('#tokens tbody tr')].map(r => r.dataset.token)",
            vec![],
        )
        .await,
    )
    .unwrap();
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let csv_ids: Vec<String> = reader
        .records()
        .map(|r| r.unwrap()[0].to_string())
        .collect();
    if csv_ids != table_ids {
        return Err(format!("4: CSV rows {csv_ids:?}, table rows {table_ids:?}"));
    }

    // 5. A request with the token through Envoy: 200, and the authentication log page shows
    //    it with its address.
    let secret = cp.edge_credential(alice, "ui-envoy")?;
    let upstream = EchoUpstream::start().map_err(|e| format!("upstream: {e}"))?;
    let filter = cp.filter_config(
        "closed",
        60,
        Some(cp.usage_config(CP_CLUSTER, &secret, 10_000)),
    );
    let sync = cp.sync_service_config(CP_CLUSTER, 20);
    let options = EnvoyOptions::new(envoy_bin)
        .filter(wasm, &filter)
        .upstream(upstream.addr())
        .cluster(CP_CLUSTER, cp.addr())
        .sync_service(&sync)
        .concurrency(1);
    let proxy = Envoy::start(&options).map_err(|e| format!("envoy: {e}"))?;
    let request = Request::get("/api/orders").bearer(&jwt);
    let deadline = Instant::now() + Duration::from_secs(15);
    let first = loop {
        let r = proxy.send(&request).map_err(|e| format!("request: {e}"))?;
        if r.status != 503 || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    if first.status != 200 {
        return Err(format!(
            "5: through Envoy: {} {}",
            first.status,
            first.text()
        ));
    }
    ui.goto("/#/auth-log").await;
    ui.title("Authentication log").await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        ui.click("form[role=search] button[type=submit]").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let seen = ui.js("return [...document.querySelectorAll('#auth-log td[data-column=ip]')].map(t => t.textContent)", vec![]).await;
        if seen
            .as_array()
            .is_some_and(|a| a.iter().any(|v| v == "127.0.0.1"))
        {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "5: the log page never showed the use from 127.0.0.1: {seen}"
            ));
        }
    }
    // Its Token and User columns are filled (issue 24: the page read fields the API does
    // not send), in the table and in the CSV the page makes.
    let row = ui
        .js(
            "const r = [...document.querySelectorAll('#auth-log tbody tr')]
               .find(r => r.querySelector('td[data-column=ip]').textContent === '127.0.0.1');
             const t = r.querySelector('td[data-column=token]'), u = r.querySelector('td[data-column=user]');
             return [t.dataset.id, t.textContent, u.dataset.id, u.textContent];",
            vec![],
        )
        .await;
    // Names for people, the ids beside them (issue 24, item 9).
    let token_text = row[1].as_str().unwrap_or_default();
    if row[0] != id.as_str()
        || !token_text.starts_with("bob-ci")
        || !token_text.contains(id.as_str())
        || row[2].as_str().is_none_or(|u| !u.starts_with("usr_"))
        || row[3] != t["username"]
    {
        return Err(format!(
            "5: the log row of 127.0.0.1 shows token and user {row}, not bob-ci ({id}) and {}",
            t["username"]
        ));
    }
    // The pager counts (issue 24, item 10): the total and the pages, and a button that
    // cannot be used looks it; the page has an icon.
    let pager = ui
        .js(
            "const p = document.querySelector('main .pager');
             const prev = p.querySelector('button');
             return [p.querySelector('.pager-where').textContent, prev.disabled,
                     getComputedStyle(prev).opacity,
                     !!document.querySelector('link[rel=icon]')];",
            vec![],
        )
        .await;
    let where_ = pager[0].as_str().unwrap_or_default();
    let opacity: f64 = pager[2]
        .as_str()
        .and_then(|o| o.parse().ok())
        .unwrap_or(1.0);
    if !where_.starts_with("Page 1 of 1 · ")
        || !where_.ends_with(" events")
        || pager[1] != true
        || opacity >= 0.9
        || pager[3] != true
    {
        return Err(format!(
            "5: the log's pager (text, disabled, opacity, icon) is {pager}"
        ));
    }
    let csv = ui
        .js(
            "const click = HTMLAnchorElement.prototype.click;
             let text = '';
             HTMLAnchorElement.prototype.click = function () {
               text = decodeURIComponent(this.href.slice(this.href.indexOf(',') + 1));
             };
             try { document.getElementById('auth-csv').click(); }
             finally { HTMLAnchorElement.prototype.click = click; }
             return text;",
            vec![],
        )
        .await;
    let csv = csv.as_str().unwrap_or("");
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .map(|h| h.iter().map(str::to_string).collect())
        .unwrap_or_default();
    let col = |name: &str| header.iter().position(|h| h == name);
    let filled = reader.records().flatten().any(|r| {
        col("ip").and_then(|i| r.get(i)) == Some("127.0.0.1")
            && col("token").and_then(|i| r.get(i)) == Some(id.as_str())
            && col("user")
                .and_then(|i| r.get(i))
                .is_some_and(|u| u.starts_with("usr_"))
    });
    if !filled {
        return Err(format!(
            "5: the log's CSV has no row of 127.0.0.1 with token {id} and its user:\n{csv}"
        ));
    }
    ui.page("auth-log").await;

    // 6. The admin revokes it; bob's Refresh shows Revoked; Envoy refuses the token.
    ui.goto("/#/tokens").await;
    ui.title("API tokens").await;
    let revoked_at = Instant::now();
    cp.revoke(alice, &id)?;
    ui.click("#refresh").await;
    wait_for(
        || async { ui.badge(&id).await == "Revoked" },
        "6: Revoked after Refresh",
    )
    .await?;
    ui.page("tokens-revoked").await;
    let refused = loop {
        let r = proxy.send(&request).map_err(|e| format!("request: {e}"))?;
        if r.status != 200 || revoked_at.elapsed() > Duration::from_secs(10) {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    if refused.status != 401 {
        return Err(format!(
            "6: Envoy still accepts the revoked token: {}",
            refused.status
        ));
    }
    println!(
        "6: Envoy refused the revoked token {:.0} ms after the revoke call",
        revoked_at.elapsed().as_secs_f64() * 1000.0
    );
    drop(proxy);
    drop(upstream);

    // 7. A partner sees a delegating customer user's token and revokes it; no download
    //    control, and the API refuses one.
    cp.api(
        "POST",
        "/v1/orgs",
        Some(alice),
        Some(&json!({"id": "cust", "name": "Customer", "managed_by": "acme"})),
    )?;
    let carl = cp.api(
        "POST",
        "/v1/orgs/cust/users",
        Some(alice),
        Some(&json!({"username": "carl", "role": "user", "delegated": true})),
    )?;
    let pete = cp.api(
        "POST",
        &format!("/v1/orgs/{}/users", cp.org()),
        Some(alice),
        Some(&json!({"username": "pete", "role": "partner"})),
    )?;
    ui.sign_out().await;
    ui.use_link(pete["link"]["url"].as_str().unwrap_or(""), pw)
        .await;
    ui.title("API tokens").await;
    let (status, made) = ui
        .fetch(
            "POST",
            "/v1/tokens",
            // No scopes: the customer org has no admin of its own yet, so its catalogue
            // holds only `tessera:manage` (only an org's own admins add scopes).
            Some(json!({"name": "carl-ci", "user": carl["id"]})),
        )
        .await;
    if status != 201 {
        return Err(format!("7: the partner creates for carl: {status} {made}"));
    }
    let carl_token = made["id"].as_str().unwrap_or("").to_string();
    ui.goto("/#/partner").await;
    ui.title("Customers").await;
    let row = format!("section[data-org='cust'] tr[data-token='{carl_token}']");
    ui.find(&row).await;
    if ui
        .has(&format!("{row} button[data-action='download']"))
        .await
    {
        return Err("7: a download control is offered to the partner".into());
    }
    ui.page("partner").await;
    let (status, body) = ui
        .fetch("POST", &format!("/v1/tokens/{carl_token}/download"), None)
        .await;
    if status != 403 {
        return Err(format!(
            "7: the API let the partner download: {status} {body}"
        ));
    }
    ui.click(&format!("{row} button[data-action='revoke']"))
        .await;
    ui.find("dialog[open]").await;
    ui.page("confirm-revoke").await;
    ui.click("dialog[open] button[type=submit]").await;
    wait_for(
        || async { ui.badge(&carl_token).await == "Revoked" },
        "7: Revoked",
    )
    .await?;

    // 8. A readonly user: no New API token control, and the API answers 403.
    let rita = cp.api(
        "POST",
        &format!("/v1/orgs/{}/users", cp.org()),
        Some(alice),
        Some(&json!({"username": "rita", "role": "readonly"})),
    )?;
    ui.sign_out().await;
    ui.use_link(rita["link"]["url"].as_str().unwrap_or(""), pw)
        .await;
    ui.title("API tokens").await;
    if ui.has("#new-token").await || ui.has("#revoke-all").await {
        return Err("8: the readonly user is offered a create or revoke control".into());
    }
    ui.page("readonly").await;
    let (status, _) = ui
        .fetch(
            "POST",
            "/v1/tokens",
            Some(json!({"name": "nope", "scopes": ["read"]})),
        )
        .await;
    if status != 403 {
        return Err(format!("8: the API answered {status} to a readonly create"));
    }

    // 9. Failures as they happen: a wrong password, an expired invitation, a session that
    //    times out.
    ui.sign_out().await;
    ui.sign_in("acme", "bob", "not bob's password").await;
    let err = ui.text_of("main .error").await;
    if err != "wrong organization, username or password" {
        return Err(format!("9: wrong password shows {err:?}"));
    }
    ui.page("wrong-password").await;
    let late = cp.api(
        "POST",
        &format!("/v1/orgs/{}/users", cp.org()),
        Some(alice),
        Some(&json!({"username": "late", "role": "user"})),
    )?;
    // Time passes: the link's expiry is moved into the past in the database.
    db_exec(
        cp.db_path(),
        "UPDATE sign_in_links SET expires_at = 0 WHERE user_id = ?1",
        late["id"].as_str().unwrap_or(""),
    );
    ui.use_link(late["link"]["url"].as_str().unwrap_or(""), pw)
        .await;
    let err = ui.text_of("main .error, main .field-error").await;
    if !err.contains("expired") {
        return Err(format!("9: an expired invitation shows {err:?}"));
    }
    ui.page("expired-invitation").await;
    ui.goto("/").await;
    ui.sign_in("acme", "bob", pw).await;
    ui.title("API tokens").await;
    let bob = cp.api(
        "GET",
        &format!("/v1/orgs/{}/users", cp.org()),
        Some(alice),
        None,
    )?;
    let bob_id = bob["users"]
        .as_array()
        .and_then(|u| u.iter().find(|u| u["username"] == "bob"))
        .map(|u| u["id"].as_str().unwrap_or("").to_string())
        .unwrap_or_default();
    // 31 idle minutes pass.
    db_exec(cp.db_path(), "UPDATE sessions SET last_seen_at = last_seen_at - 1860 WHERE user_id = ?1 AND ended_at IS NULL", &bob_id);
    ui.click("#refresh").await;
    ui.title("Sign in").await;
    let err = ui.text_of("main .error").await;
    if !err.contains("session has ended") {
        return Err(format!("9: a timed-out session shows {err:?}"));
    }
    ui.page("session-timed-out").await;

    // The admin's pages (10: axe-core ran on every page above and runs on these).
    ui.sign_in("acme", "alice", pw).await;
    ui.title("API tokens").await;
    ui.page("tokens-admin").await;
    // The admin filters by owner, and sorts by a column: ascending, then descending.
    ui.find("#owner").await;
    let names = || async {
        ui.js(
            "return [...document.querySelectorAll('#tokens td[data-column=name] strong')].map(s => s.textContent);",
            vec![],
        )
        .await
    };
    for (order, reverse) in [("ascending", false), ("descending", true)] {
        ui.click("#tokens th button[data-sort='name']").await;
        wait_for(
            || async {
                ui.js(
                    "const h = document.querySelector('#tokens th button[data-sort=name]');
                     return h && h.parentElement.getAttribute('aria-sort');",
                    vec![],
                )
                .await
                    == json!(order)
            },
            "sorted by name",
        )
        .await?;
        let shown: Vec<String> = serde_json::from_value(names().await).unwrap_or_default();
        let mut expected = shown.clone();
        expected.sort_by_key(|n| n.to_lowercase());
        if reverse {
            expected.reverse();
        }
        if shown.len() < 2 || shown != expected {
            return Err(format!("sort by name, {order}: {shown:?}"));
        }
    }
    ui.page("tokens-sorted").await;
    // A token's own page: its facts and the chart of its uses (plain SVG, with a table of
    // the same numbers), reached from its name in the list; axe-core checks it.
    let first = ui
        .js(
            "const a = document.querySelector('#tokens a.token-link'); return a ? a.textContent : null;",
            vec![],
        )
        .await;
    let first = first
        .as_str()
        .ok_or("no token link in the list")?
        .to_string();
    ui.click("#tokens a.token-link").await;
    ui.title(&format!("API token {first}")).await;
    ui.find("#usage-chart").await;
    let limits = ui.text_of("#token-limits").await;
    if limits.is_empty() {
        return Err("token page: no rate limits line".into());
    }
    let label = ui
        .js(
            "return document.getElementById('usage-chart').getAttribute('aria-label');",
            vec![],
        )
        .await;
    if !label
        .as_str()
        .is_some_and(|l| l.contains("per hour") && l.contains("allowed"))
    {
        return Err(format!("token page: the chart says {label}"));
    }
    ui.page("token-detail").await;
    ui.click("#usage-bucket").await;
    wait_for(
        || async {
            ui.js(
                "const c = document.getElementById('usage-chart'); return c ? c.getAttribute('aria-label') : '';",
                vec![],
            )
            .await
            .as_str()
            .is_some_and(|l| l.contains("per day"))
        },
        "the chart per day",
    )
    .await?;
    ui.goto("/#/tokens").await;
    ui.title("API tokens").await;
    for (hash, title, name) in [
        ("#/audit", "Audit log", "audit-log"),
        ("#/org", "Organization acme", "organization"),
    ] {
        ui.goto(&format!("/{hash}")).await;
        ui.title(title).await;
        if hash == "#/audit" {
            // Who acted, by name (the id is the cell's title).
            let actors = ui
                .js(
                    "return [...document.querySelectorAll('#audit td[data-column=actor]')]
                       .map(c => [c.textContent, c.title]);",
                    vec![],
                )
                .await;
            let named = actors.as_array().is_some_and(|rows| {
                rows.iter().any(|r| {
                    r[0] == "alice" && r[1].as_str().is_some_and(|id| id.starts_with("usr_"))
                })
            });
            if !named {
                return Err(format!(
                    "the audit log shows its actors as {actors}, not alice"
                ));
            }
        }
        ui.page(name).await;
    }
    // Notifications: the caller's mail address and the events mailed to them.
    ui.goto("/#/notifications").await;
    ui.title("Notifications").await;
    ui.fill("#f-email", "alice@example.test").await;
    ui.click("#f-mail-token-used_from_new_network").await;
    ui.click("#notifications button[type=submit]").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, v) = ui.fetch("GET", "/v1/me/notifications", None).await;
        let muted: Vec<&str> = v["events"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|e| e["mail"] == false)
                    .filter_map(|e| e["event"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        if status == 200
            && v["email"] == "alice@example.test"
            && muted == ["token.used_from_new_network"]
        {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("the notifications form saved {status} {v}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ui.page("notifications").await;
    ui.goto("/#/org").await;
    ui.title("Organization acme").await;
    ui.click("#new-edge").await;
    ui.fill("dialog[open] #f-name", "edge-ui").await;
    ui.click("dialog[open] button[type=submit]").await;
    ui.find("dialog[open] #secret-value").await;
    ui.page("edge-secret").await;
    ui.take_secret().await;
    // SCIM on the same page: a credential made (secret shown once), listed, revoked.
    ui.click("#new-scim").await;
    ui.fill("dialog[open] #f-scim-name", "okta").await;
    ui.click("dialog[open] button[type=submit]").await;
    ui.find("dialog[open] #secret-value").await;
    ui.take_secret().await;
    let state = "#scim-credentials tbody tr:first-child td[data-column=state]";
    wait_for(
        || async { ui.text_of(state).await == "active" },
        "the SCIM credential listed",
    )
    .await?;
    ui.page("scim-credentials").await;
    ui.click("#scim-credentials tbody tr:first-child button[data-action=revoke]")
        .await;
    ui.click("dialog[open] button[type=submit]").await;
    wait_for(
        || async { ui.text_of(state).await.starts_with("revoked") },
        "the SCIM credential revoked",
    )
    .await?;
    webhooks(ui, cp, alice).await?;
    // A narrow (mobile) window.
    ui.c.set_window_size(390, 844).await.unwrap();
    ui.goto("/#/tokens").await;
    ui.title("API tokens").await;
    ui.page("tokens-narrow").await;
    // Keyboard only: Tab reaches the New API token button, Enter opens the dialog, Escape
    // closes it.
    ui.c.set_window_size(1280, 900).await.unwrap();
    ui.goto("/#/tokens").await;
    ui.title("API tokens").await;
    let reached =
        ui.c.execute_async(
            "const done = arguments[0]; document.getElementById('main').focus(); done(true);",
            vec![],
        )
        .await
        .unwrap();
    let _ = reached;
    let mut found = false;
    for _ in 0..40 {
        ui.c.active_element()
            .await
            .unwrap()
            .send_keys("\u{E004}")
            .await
            .unwrap();
        if ui
            .js(
                "return document.activeElement && document.activeElement.id",
                vec![],
            )
            .await
            == json!("new-token")
        {
            found = true;
            break;
        }
    }
    if !found {
        return Err("keyboard: Tab never reached New API token".into());
    }
    ui.c.active_element()
        .await
        .unwrap()
        .send_keys("\u{E007}")
        .await
        .unwrap();
    ui.find("dialog[open] #f-name").await;
    ui.c.active_element()
        .await
        .unwrap()
        .send_keys("\u{E00C}")
        .await
        .unwrap();
    wait_for(
        || async { !ui.has("dialog[open]").await },
        "keyboard: Escape closes the dialog",
    )
    .await?;

    // Leaked tokens: the admin sets the org's policy on the Organization page; anyone
    // reports a token on the public report page (linked from the sign-in page), and it is
    // revoked by the default policy.
    ui.goto("/#/org").await;
    ui.title("Organization acme").await;
    // Which key signs new tokens is said in words.
    let active = ui
        .text_of("#keys tbody tr:first-child td[data-column=state]")
        .await;
    if !active.starts_with("Active") {
        return Err(format!("org: the first key's state is {active:?}"));
    }
    // The admin shortens the org's longest token lifetime on the page.
    ui.fill("#org-settings #f-max_lifetime_days", "90").await;
    ui.click("#org-settings button[type=submit]").await;
    wait_for(
        || async {
            cp.api("GET", "/v1/orgs/acme", Some(alice), None)
                .is_ok_and(|o| o["max_lifetime_days"] == json!(90))
        },
        "org lifetime saved",
    )
    .await?;
    ui.title("Organization acme").await;
    // acme is the root organization, so its admin may lengthen it again too.
    let back = cp.api(
        "PATCH",
        "/v1/orgs/acme",
        Some(alice),
        Some(&json!({"max_lifetime_days": 365})),
    )?;
    if back["max_lifetime_days"] != json!(365) {
        return Err(format!("org: lengthening back gave {back}"));
    }
    // Whether owners manage their own tokens: shown, and turned off and on again here.
    ui.find("#org-owners-manage").await;
    for (on, words) in [(false, "No: only admins"), (true, "Yes: they edit")] {
        ui.click("#org-settings #f-owners-manage").await;
        ui.click("#org-settings button[type=submit]").await;
        wait_for(
            || async {
                cp.api("GET", "/v1/orgs/acme", Some(alice), None)
                    .is_ok_and(|o| o["owners_manage_tokens"] == json!(on))
            },
            "org owners_manage_tokens saved",
        )
        .await?;
        wait_for(
            || async { ui.text_of("#org-owners-manage").await.starts_with(words) },
            "org owners_manage_tokens shown",
        )
        .await?;
    }
    ui.find("#f-policy option[value='notify_only']")
        .await
        .click()
        .await
        .unwrap();
    ui.click("#leak-policy button[type=submit]").await;
    let policy = || async {
        cp.api("GET", "/v1/orgs/acme/leak-policy", Some(alice), None)
            .map(|v| v["policy"].clone())
            .unwrap_or_default()
    };
    wait_for(
        || async { policy().await == json!("notify_only") },
        "leak policy saved",
    )
    .await?;
    ui.find("#f-policy option[value='revoke']")
        .await
        .click()
        .await
        .unwrap();
    ui.click("#leak-policy button[type=submit]").await;
    wait_for(
        || async { policy().await == json!("revoke") },
        "leak policy back",
    )
    .await?;
    let (leak_id, leaked) = cp.create_and_download(alice, "leaky", &["read"])?;
    ui.sign_out().await;
    ui.title("Sign in").await;
    ui.click("a[href='#/report-leak']").await;
    ui.title("Report a leaked token").await;
    ui.fill("#f-tokens", &leaked).await;
    ui.fill("#f-url", "https://paste.example/ui").await;
    ui.click("#report-leak button[type=submit]").await;
    let thanks = ui.text_of("#report-leak .notice").await;
    if !thanks.contains("1 received") {
        return Err(format!("report: {thanks}"));
    }
    ui.page("report-leak").await;
    let status = cp.api("GET", &format!("/v1/tokens/{leak_id}"), Some(alice), None)?;
    if status["status"] != "revoked" {
        return Err(format!("report: the token is {status}"));
    }
    first_run(ui, pw).await
}

/// First run (issue 24): a `tessera serve` on an empty database. Its sign-in page says how
/// to begin instead of showing a form that cannot succeed; the setup link it printed opens
/// the setup form, which names a bad field, then creates the first organization and its
/// admin and signs them in; the link works once.
async fn first_run(ui: &mut Ui, pw: &str) -> Result<(), String> {
    let mut options = ControlPlaneOptions::new(&control_plane_path());
    options.admins = Vec::new();
    let empty = ControlPlane::start(&options)?;
    let link = empty
        .setup_link()
        .ok_or_else(|| format!("first run: no setup link in the log:\n{}", empty.log()))?;
    if !link.starts_with(&format!("{}/#/setup/", empty.url())) {
        return Err(format!("first run: the setup link is {link}"));
    }
    ui.base = empty.url();
    ui.goto("/").await;
    ui.title("Set up Tessera").await;
    if ui.has("#signin-form").await || ui.has("input[type=password]").await {
        return Err(
            "first run: the sign-in page offers a password form on an empty database".into(),
        );
    }
    let said = ui.text_of("main").await;
    if !said.contains("no organization yet") || !said.contains("tessera admin bootstrap") {
        return Err(format!("first run: the sign-in page says {said:?}"));
    }
    ui.page("first-run-sign-in").await;
    // A pasted text that is not the link is refused next to its field; the link opens
    // the setup form.
    ui.fill("#f-link", "the link").await;
    ui.click("#first-run-form button[type=submit]").await;
    let msg = ui.text_of("#first-run-form .field-error").await;
    if !msg.starts_with("link: paste the whole link") {
        return Err(format!("first run: the pasted link's error is {msg:?}"));
    }
    ui.fill("#f-link", &link).await;
    ui.click("#first-run-form button[type=submit]").await;
    ui.title("Create the first organization").await;
    ui.fill("#f-org", "firstco").await;
    ui.fill("#f-org_name", "First Co").await;
    ui.fill("#f-username", "founder").await;
    ui.fill("#f-email", "founder@example.com").await;
    ui.fill("#f-password", pw).await;
    ui.fill("#f-again", pw).await;
    ui.page("first-run-setup").await;
    // The server's own words for a bad field, next to it.
    ui.fill("#f-org", "First Co").await;
    ui.click("#setup-form button[type=submit]").await;
    let msg = ui.text_of("#setup-form #f-org + .field-error").await;
    if !msg.starts_with("org: 1-63 characters of a-z") {
        return Err(format!("first run: the organization's error is {msg:?}"));
    }
    ui.fill("#f-org", "firstco").await;
    ui.click("#setup-form button[type=submit]").await;
    ui.title("API tokens").await;
    let who = ui.text_of("#who").await;
    if !who.contains("founder · firstco · admin") {
        return Err(format!("first run: signed in as {who:?}"));
    }
    let state = empty.api("GET", "/v1/setup", None, None)?;
    if state["needed"] != json!(false) {
        return Err(format!("first run: after setup, GET /v1/setup is {state}"));
    }
    // The link worked once: opened again, the form says the setup is done.
    ui.c.goto(&link).await.unwrap();
    ui.title("Create the first organization").await;
    ui.fill("#f-org", "second").await;
    ui.fill("#f-username", "intruder").await;
    ui.fill("#f-password", pw).await;
    ui.fill("#f-again", pw).await;
    ui.click("#setup-form button[type=submit]").await;
    let msg = ui.text_of("#setup-form .error").await;
    if !msg.contains("already set up") {
        return Err(format!("first run: a second use says {msg:?}"));
    }
    Ok(())
}

/// The Webhooks page: an endpoint made for `token.revoked` on a loopback port where nothing
/// listens yet (its signing secret shown once), a revoke whose delivery fails there, the
/// delivery log showing the failure; then a receiver on that port, Resend clicked: the
/// message arrives signed with the secret the page showed, and a second Resend sends it
/// again with the same webhook-id. Last, the endpoint deleted from the page.
async fn webhooks(ui: &mut Ui, cp: &ControlPlane, alice: &str) -> Result<(), String> {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("a free port: {e}"))?;
    ui.goto("/#/webhooks").await;
    ui.title("Webhooks").await;
    ui.click("#new-webhook").await;
    ui.fill(
        "dialog[open] #f-webhook-url",
        &format!("http://{port}/hook"),
    )
    .await;
    ui.click("dialog[open] #f-event-token-revoked").await;
    ui.fill("dialog[open] #f-webhook-description", "security team")
        .await;
    ui.click("dialog[open] button[type=submit]").await;
    ui.find("dialog[open] #secret-value").await;
    let secret = ui.take_secret().await;
    if !secret.starts_with("whsec_") {
        return Err(format!("webhook secret: {secret:?}"));
    }
    let row = "#webhooks tbody tr:first-child";
    wait_for(
        || async { ui.text_of(&format!("{row} td:nth-child(2)")).await == "token.revoked" },
        "the endpoint listed with its event",
    )
    .await?;
    ui.page("webhooks").await;
    let (id, _) = cp.create_and_download(alice, "hooked", &["read"])?;
    cp.revoke(alice, &id)?;
    ui.click(&format!("{row} a[data-action=deliveries]")).await;
    let answer = "#deliveries tbody tr:first-child td[data-column=answer]";
    // The first attempt fails (nothing listens); the page shows why after a reload.
    wait_for(
        || async {
            ui.reload("#deliveries, #no-deliveries").await;
            ui.has(answer).await && !ui.text_of(answer).await.starts_with('—')
        },
        "the failed first attempt in the delivery log",
    )
    .await?;
    let state = ui
        .text_of("#deliveries tbody tr:first-child td[data-column=state]")
        .await;
    if !state.starts_with("Pending") || !state.contains("next try") {
        return Err(format!("delivery state after a failure: {state:?}"));
    }
    let why = ui.text_of(answer).await;
    if why != format!("could not connect to {port}: connection refused") {
        return Err(format!("the failed attempt is told as {why:?}"));
    }
    ui.page("webhook-deliveries").await;
    let receiver = Receiver::start(port).map_err(|e| format!("the webhook receiver: {e}"))?;
    ui.click("#deliveries tbody tr:first-child button[data-action=resend]")
        .await;
    wait_for(
        || async { !receiver.received().is_empty() },
        "the resent message received",
    )
    .await?;
    wait_for(
        || async {
            ui.reload("#deliveries, #no-deliveries").await;
            ui.has("#deliveries tbody tr:first-child").await
                && ui
                    .text_of("#deliveries tbody tr:first-child td[data-column=state]")
                    .await
                    .starts_with("Delivered")
        },
        "the delivery shown as delivered",
    )
    .await?;
    let before = receiver.received().len();
    ui.click("#deliveries tbody tr:first-child button[data-action=resend]")
        .await;
    wait_for(
        || async { receiver.received().len() > before },
        "the message sent again",
    )
    .await?;
    let got = receiver.received();
    let ids: Vec<_> = got.iter().map(|r| r.header("webhook-id")).collect();
    if !got.iter().all(|r| verifies(&secret, r))
        || ids.windows(2).any(|w| w[0] != w[1])
        || !got[0].body.contains("\"token.revoked\"")
        || !got[0].body.contains(&id)
    {
        return Err(format!("webhook messages: {got:?}"));
    }
    ui.click("a[href='#/webhooks']").await;
    ui.title("Webhooks").await;
    ui.click(&format!("{row} button[data-action=delete]")).await;
    ui.click("dialog[open] button[type=submit]").await;
    ui.find("#no-webhooks").await;
    Ok(())
}

/// Waits until the open Edit dialog's note on the JWT contains `want`.
async fn edit_effect_says(ui: &Ui, want: &str) -> Result<(), String> {
    wait_for(
        || async { ui.text_of("dialog[open] #edit-effect").await.contains(want) },
        &format!("3b: the Edit dialog says {want:?}"),
    )
    .await
}

/// Polls `cond` for up to 10 s.
async fn wait_for<F, Fut>(mut cond: F, what: &str) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond().await {
        if Instant::now() > deadline {
            return Err(format!("{what}: not reached in 10 s"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

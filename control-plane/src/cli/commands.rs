//! The client commands: each builds its API request, sends it, and renders the answer.

use super::render::{self, Output};
use super::{
    encode, query_string, CliResult, Client, Command, EdgesCmd, GranteeArgs, LinksCmd,
    NotificationsCmd, OrgsCmd, ScimCmd, ScopesCmd, SsoCmd, TokensCmd, UsersCmd, WebhooksCmd,
};
use serde_json::{json, Map, Value};
use std::io::{self, Write};

/// Runs a client command. `client(token)` makes the API client (with or without a token).
pub(super) async fn run(
    client: impl Fn(Option<String>) -> Result<Client, String>,
    token: Option<String>,
    out: Output,
    command: Command,
) -> CliResult {
    match command {
        Command::Tokens(cmd) => tokens(&client(token)?, out, cmd).await,
        Command::Orgs(cmd) => orgs(&client(token)?, out, cmd).await,
        Command::Users(cmd) => users(&client(token)?, out, cmd).await,
        Command::Scopes(cmd) => scopes(&client(token)?, out, cmd).await,
        Command::Webhooks(cmd) => webhooks(&client(token)?, out, cmd).await,
        Command::Sso(cmd) => sso(&client(token)?, out, cmd).await,
        Command::Notifications(cmd) => notifications(&client(token)?, out, cmd).await,
        Command::Edges(EdgesCmd::Create { org, name }) => {
            let v = client(token)?
                .json(
                    "POST",
                    &format!("/v1/orgs/{}/edge-credentials", encode(&org)),
                    &json!({"name": name}),
                )
                .await?
                .ok_json()?;
            show(out, &v)
        }
        Command::Edges(EdgesCmd::List { org }) => {
            let v = client(token)?
                .get(&format!("/v1/orgs/{}/edge-credentials", encode(&org)))
                .await?
                .ok_json()?;
            show_list(
                out,
                v.get("edges")
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or(&[]),
                &["name", "id", "org", "created_at", "revoked_at"],
            )
        }
        Command::Edges(EdgesCmd::Revoke { org, id }) => {
            let v = client(token)?
                .json(
                    "POST",
                    &format!(
                        "/v1/orgs/{}/edge-credentials/{}/revoke",
                        encode(&org),
                        encode(&id)
                    ),
                    &json!({}),
                )
                .await?
                .ok_json()?;
            show(out, &v)
        }
        Command::Scim(ScimCmd::Create { org, name }) => {
            let v = client(token)?
                .json(
                    "POST",
                    &format!("/v1/orgs/{}/scim-credentials", encode(&org)),
                    &json!({"name": name}),
                )
                .await?
                .ok_json()?;
            show(out, &v)
        }
        Command::Scim(ScimCmd::List { org }) => {
            let v = client(token)?
                .get(&format!("/v1/orgs/{}/scim-credentials", encode(&org)))
                .await?
                .ok_json()?;
            show_list(
                out,
                v.get("credentials")
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or(&[]),
                &[
                    "name",
                    "id",
                    "org",
                    "created_by",
                    "created_at",
                    "last_used_at",
                    "revoked_at",
                ],
            )
        }
        Command::Scim(ScimCmd::Revoke { org, id }) => {
            let v = client(token)?
                .json(
                    "POST",
                    &format!(
                        "/v1/orgs/{}/scim-credentials/{}/revoke",
                        encode(&org),
                        encode(&id)
                    ),
                    &json!({}),
                )
                .await?
                .ok_json()?;
            show(out, &v)
        }
        Command::AuditLog {
            org,
            target,
            page,
            per_page,
        } => {
            let query = query_string(&[
                ("org", org),
                ("target", target),
                ("page", page.map(|p| p.to_string())),
                ("per_page", per_page.map(|p| p.to_string())),
            ]);
            let v = client(token)?
                .get(&format!("/v1/audit-log{query}"))
                .await?
                .ok_json()?;
            let entries = v
                .get("entries")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            if out == Output::Json {
                return show(out, &v);
            }
            // People read names: who acted and on what, by name where there is one (the
            // ids stay in their own columns, and in `-o json`).
            let rows: Vec<Value> = entries
                .iter()
                .map(|e| {
                    let named = |name: &str, id: &str| {
                        e.get(name)
                            .filter(|n| !n.is_null())
                            .or_else(|| e.get(id))
                            .cloned()
                            .unwrap_or(Value::Null)
                    };
                    let mut row = e.clone();
                    if let Some(m) = row.as_object_mut() {
                        m.insert("by".into(), named("actor_name", "actor"));
                        m.insert("on".into(), named("target_name", "target"));
                    }
                    row
                })
                .collect();
            show_list(
                out,
                &rows,
                &["at", "by", "action", "on", "target", "credential"],
            )
        }
        Command::Exchange { api_token } => {
            let t = api_token
                .or(token)
                .ok_or("give the API token (or --token)")?;
            let c = client(None)?;
            let v = c
                .json("POST", "/v1/auth/accesstoken", &json!({"refreshToken": t}))
                .await?
                .ok_json()?;
            match out {
                Output::Table => {
                    show_line(v.get("access_token").and_then(Value::as_str).unwrap_or(""))
                }
                o => show(o, &v),
            }
        }
        Command::AuthLog(filters) => {
            let v = client(token)?
                .get(&format!("/v1/auth-log{}", filters.query()))
                .await?
                .ok_json()?;
            show_events(out, &v)
        }
        Command::Links(LinksCmd::Accept) => {
            let secret = stdin_line("the link (or its secret)")?;
            // The web page's link is `<base>/#/link/<secret>`: its last part is the secret.
            let secret = secret.rsplit('/').next().unwrap_or_default().to_string();
            let password = stdin_line("the new password")?;
            let v = client(None)?
                .json(
                    "POST",
                    "/v1/links/accept",
                    &json!({"secret": secret, "password": password}),
                )
                .await?
                .ok_json()?;
            match out {
                Output::Table => {
                    let who = v.pointer("/user/username").and_then(Value::as_str);
                    let org = v.pointer("/org/id").and_then(Value::as_str);
                    show_line(&format!(
                        "Password set for {} of {}: sign in on the web page, or create a token there.",
                        who.unwrap_or("you"),
                        org.unwrap_or("your organization")
                    ))
                }
                o => show(o, &v),
            }
        }
        Command::ReportLeak {
            tokens,
            found_at,
            source,
        } => {
            let mut all = Vec::new();
            for t in tokens {
                if t == "-" {
                    let mut text = String::new();
                    io::Read::read_to_string(&mut io::stdin().lock(), &mut text)
                        .map_err(|e| format!("stdin: {e}"))?;
                    all.extend(
                        text.lines()
                            .map(str::trim)
                            .filter(|l| !l.is_empty())
                            .map(str::to_string),
                    );
                } else {
                    all.push(t);
                }
            }
            let v = client(None)?
                .json(
                    "POST",
                    "/v1/leaks",
                    &json!({"tokens": all, "url": found_at, "source": source}),
                )
                .await?
                .ok_json()?;
            show(out, &v)
        }
        Command::Introspect { file, client_ip } => {
            let from = if file.as_os_str() == "-" {
                "stdin".to_string()
            } else {
                file.display().to_string()
            };
            let jwt = super::read_secret(&file, "the token to introspect")?;
            introspect(client, token, out, &jwt, client_ip, &from).await
        }
        Command::Whoami => {
            let v = client(token)?.get("/v1/me").await?.ok_json()?;
            show(out, &v)
        }
        Command::Serve(_) | Command::Admin(_) => {
            Err("serve and admin commands run in this process, not against --url".into())
        }
    }
}

/// `tessera introspect`: `POST /v1/introspect` with the token read from `from` (a file or
/// stdin), authenticated by the edge credential in `credential`.
async fn introspect(
    client: impl Fn(Option<String>) -> Result<Client, String>,
    credential: Option<String>,
    out: Output,
    jwt: &str,
    client_ip: Option<String>,
    from: &str,
) -> CliResult {
    let credential = credential.ok_or(
        "authenticate with an edge credential of the token's organization: TESSERA_TOKEN=tse_... or --token-file",
    )?;
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("token", jwt);
    if let Some(ip) = &client_ip {
        form.append_pair("client_ip", ip);
    }
    let v = client(Some(credential))?
        .send(
            "POST",
            "/v1/introspect",
            "application/x-www-form-urlencoded",
            form.finish().into_bytes(),
        )
        .await?
        .ok_json()
        .map_err(|e| format!("introspecting the token from {from}: {e}"))?;
    show(out, &v)
}

/// An authentication log's events as a table (JSON: the whole answer, with its total).
fn show_events(out: Output, v: &Value) -> CliResult {
    if out == Output::Json {
        return show(out, v);
    }
    let list = v
        .get("events")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    show_list(
        out,
        list,
        &[
            "at",
            "username",
            "token_name",
            "outcome",
            "reason",
            "ip",
            "method",
            "path",
            "source",
        ],
    )
}

/// One line of stdin, trimmed; an empty one is an error naming `what`.
fn stdin_line(what: &str) -> Result<String, String> {
    let mut line = String::new();
    io::stdin()
        .read_line(&mut line)
        .map_err(|e| format!("reading {what} from stdin: {e}"))?;
    let line = line.trim().to_string();
    if line.is_empty() {
        return Err(format!("give {what} on stdin, one line each"));
    }
    Ok(line)
}

fn grantee(to: &GranteeArgs) -> Value {
    match (&to.role, &to.user) {
        (Some(r), _) => json!({"role": r}),
        (None, u) => json!({"user": u}),
    }
}

/// A scope as a table row: its grants as words.
fn scope_row(v: &Value) -> Value {
    let users: Vec<Value> = v["users"]
        .as_array()
        .map(|a| a.iter().map(|u| u["username"].clone()).collect())
        .unwrap_or_default();
    json!({
        "name": v["name"], "description": v["description"], "builtin": v["builtin"],
        "roles": v["roles"], "users": users,
    })
}

async fn webhooks(c: &Client, out: Output, cmd: WebhooksCmd) -> CliResult {
    let base = |org: &str| format!("/v1/orgs/{}/webhooks", encode(org));
    let one = |org: &str, id: &str| format!("{}/{}", base(org), encode(id));
    match cmd {
        WebhooksCmd::Create {
            org,
            endpoint,
            events,
            description,
        } => {
            let body = json!({"url": endpoint, "events": events, "description": description});
            let v = c.json("POST", &base(&org), &body).await?.ok_json()?;
            if out == Output::Table {
                render::note("The secret is shown once: give it to the receiver now.");
            }
            show(out, &v)
        }
        WebhooksCmd::List { org } => {
            let v = c.get(&base(&org)).await?.ok_json()?;
            show_list(
                out,
                v.get("webhooks")
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or(&[]),
                &["id", "url", "events", "description", "created_at"],
            )
        }
        WebhooksCmd::Delete { org, id } => {
            let v = c
                .json("DELETE", &one(&org, &id), &json!({}))
                .await?
                .ok_json()?;
            show(out, &v)
        }
        WebhooksCmd::Deliveries { org, id } => {
            let path = format!("{}/deliveries?per_page=500", one(&org, &id));
            let v = c.get(&path).await?.ok_json()?;
            show_list(
                out,
                v.get("deliveries")
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or(&[]),
                &[
                    "id",
                    "event",
                    "status",
                    "attempts",
                    "created_at",
                    "next_attempt_at",
                    "last_status",
                    "last_error",
                ],
            )
        }
        WebhooksCmd::Resend { org, id, message } => {
            let path = format!("{}/deliveries/{}/resend", one(&org, &id), encode(&message));
            let v = c.json("POST", &path, &json!({})).await?.ok_json()?;
            show(out, &v)
        }
    }
}

async fn notifications(c: &Client, out: Output, cmd: NotificationsCmd) -> CliResult {
    const PATH: &str = "/v1/me/notifications";
    let v = match cmd {
        NotificationsCmd::Show => c.get(PATH).await?.ok_json()?,
        NotificationsCmd::Set {
            email,
            mute,
            unmute,
        } => {
            let mut body = json!({});
            if let Some(e) = email {
                body["email"] = json!(e);
            }
            if !mute.is_empty() || !unmute.is_empty() {
                // The muted list is replaced whole: start from what is muted now.
                let now = c.get(PATH).await?.ok_json()?;
                let mut muted: Vec<String> = now["events"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter(|e| e["mail"] == false)
                            .filter_map(|e| e["event"].as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                for m in mute {
                    if !muted.contains(&m) {
                        muted.push(m);
                    }
                }
                muted.retain(|m| !unmute.contains(m));
                body["muted"] = json!(muted);
            }
            c.json("PUT", PATH, &body).await?.ok_json()?
        }
    };
    if matches!(out, Output::Json) {
        return show(out, &v);
    }
    let mut flat = json!({
        "email": v["email"],
        "email_source": v["email_source"],
        "mail_configured": v["mail_configured"],
    });
    if let Some(events) = v["events"].as_array() {
        for e in events {
            if let Some(name) = e["event"].as_str() {
                flat[name] = json!(if e["mail"] == true { "mailed" } else { "muted" });
            }
        }
    }
    show(out, &flat)
}

async fn scopes(c: &Client, out: Output, cmd: ScopesCmd) -> CliResult {
    let base = |org: &str| format!("/v1/orgs/{}/scopes", encode(org));
    let one = |org: &str, name: &str, tail: &str| {
        format!("/v1/orgs/{}/scopes/{}{tail}", encode(org), encode(name))
    };
    let v = match cmd {
        ScopesCmd::List { org } => {
            let v = c.get(&base(&org)).await?.ok_json()?;
            let rows: Vec<Value> = v["scopes"]
                .as_array()
                .map(|a| a.iter().map(scope_row).collect())
                .unwrap_or_default();
            if matches!(out, Output::Json) {
                return show(out, &v);
            }
            return show_list(
                out,
                &rows,
                &["name", "description", "builtin", "roles", "users"],
            );
        }
        ScopesCmd::Granted { user } => {
            let path = match user {
                Some(u) => format!("/v1/users/{}/scopes", encode(&u)),
                None => "/v1/me/scopes".into(),
            };
            let v = c.get(&path).await?.ok_json()?;
            if matches!(out, Output::Json) {
                return show(out, &v);
            }
            return show_list(
                out,
                v["scopes"].as_array().map(Vec::as_slice).unwrap_or(&[]),
                &["name", "description"],
            );
        }
        ScopesCmd::Create {
            org,
            name,
            description,
        } => c
            .json(
                "POST",
                &base(&org),
                &json!({"name": name, "description": description}),
            )
            .await?
            .ok_json()?,
        ScopesCmd::Update {
            org,
            name,
            description,
        } => c
            .json(
                "PATCH",
                &one(&org, &name, ""),
                &json!({"description": description}),
            )
            .await?
            .ok_json()?,
        ScopesCmd::Delete { org, name } => c
            .send(
                "DELETE",
                &one(&org, &name, ""),
                "application/json",
                Vec::new(),
            )
            .await?
            .ok_json()?,
        ScopesCmd::Grant { org, name, to } => c
            .json("POST", &one(&org, &name, "/grant"), &grantee(&to))
            .await?
            .ok_json()?,
        ScopesCmd::Withdraw { org, name, to } => c
            .json("POST", &one(&org, &name, "/withdraw"), &grantee(&to))
            .await?
            .ok_json()?,
    };
    if matches!(out, Output::Json) {
        show(out, &v)
    } else {
        show(out, &scope_row(&v))
    }
}

/// `tessera sso ...`: the organization's single sign-on connection.
async fn sso(c: &Client, out: Output, cmd: SsoCmd) -> CliResult {
    let path = |org: &str| format!("/v1/orgs/{}/sso", encode(org));
    let verb = match &cmd {
        SsoCmd::Withdraw { .. } => "withdraw",
        _ => "approve",
    };
    let v = match cmd {
        SsoCmd::Show { org } => c.get(&path(&org)).await?.ok_json()?,
        SsoCmd::Delete { org } => c
            .send("DELETE", &path(&org), "application/json", Vec::new())
            .await?
            .ok_json()?,
        SsoCmd::Domains { pending } => {
            let q = if pending { "?pending=true" } else { "" };
            let v = c.get(&format!("/v1/sso/domains{q}")).await?.ok_json()?;
            let rows = v["domains"].as_array().cloned().unwrap_or_default();
            return show_list(
                out,
                &rows,
                &[
                    "domain",
                    "org_name",
                    "org",
                    "state",
                    "claimed_at",
                    "approved_by_name",
                ],
            );
        }
        SsoCmd::Approve { domain, org } | SsoCmd::Withdraw { domain, org } => c
            .json(
                "POST",
                &format!("/v1/sso/domains/{}/{verb}", encode(&domain)),
                &json!({ "org": org }),
            )
            .await?
            .ok_json()?,
        SsoCmd::Set {
            org,
            issuer,
            client_id,
            client_secret_file,
            domains,
            require_sso,
            default_role,
            group_roles,
            sync_roles,
        } => {
            let secret = match &client_secret_file {
                Some(p) => Some(super::read_secret(p, "--client-secret-file")?),
                None => None,
            };
            let mut mappings = Vec::new();
            for g in &group_roles {
                let (group, role) = g.rsplit_once('=').ok_or_else(|| {
                    format!("--group-role {g:?}: write GROUP=ROLE, e.g. tessera-admins=admin")
                })?;
                mappings.push(json!({"group": group, "role": role}));
            }
            let mut body = json!({
                "issuer": issuer,
                "client_id": client_id,
                "domains": domains,
                "require_sso": require_sso,
                "group_roles": mappings,
                "sync_roles": sync_roles,
            });
            if let Some(s) = secret {
                body["client_secret"] = json!(s);
            }
            if let Some(r) = default_role {
                body["default_role"] = json!(r);
            }
            c.json("PUT", &path(&org), &body).await?.ok_json()?
        }
    };
    show(out, &v)
}

fn show(out: Output, v: &Value) -> CliResult {
    Ok(render::one(&mut io::stdout().lock(), out, v)?)
}

fn show_list(out: Output, rows: &[Value], cols: &[&str]) -> CliResult {
    Ok(render::list(&mut io::stdout().lock(), out, rows, cols)?)
}

fn show_token(out: Output, token: &Value) -> CliResult {
    Ok(render::token(&mut io::stdout().lock(), out, token)?)
}

fn show_tokens(out: Output, tokens: &[Value]) -> CliResult {
    Ok(render::tokens(&mut io::stdout().lock(), out, tokens)?)
}

fn show_line(text: &str) -> CliResult {
    Ok(render::line(&mut io::stdout().lock(), text)?)
}

/// `--grace`: `0`, or a duration such as `30s`, `5m`, `2h`, `7d` (humantime), as seconds.
fn grace_secs(text: &str) -> Result<u64, String> {
    let t = text.trim();
    if let Ok(n) = t.parse::<u64>() {
        return Ok(n);
    }
    humantime::parse_duration(t)
        .map(|d| d.as_secs())
        .map_err(|e| format!("--grace: {e}; give e.g. 0, 30s, 5m, 2h or 7d (at most 7 days)"))
}

fn id_path(id: &str, suffix: &str) -> String {
    // A token's name may hold spaces: in a path they are %20 (form encoding's `+` is a
    // space only in a query; a literal `+` is already %2B).
    format!("/v1/tokens/{}{suffix}", encode(id).replace('+', "%20"))
}

async fn tokens(c: &Client, out: Output, cmd: TokensCmd) -> CliResult {
    match cmd {
        TokensCmd::Create {
            name,
            description,
            user,
            lifetime_days,
            expires_at,
            not_before,
            scopes,
            ips,
            disabled,
            limits,
        } => {
            let mut body = json!({"name": name, "description": description, "scopes": scopes, "ip_allow": ips, "enabled": !disabled});
            let m = body.as_object_mut().ok_or("internal")?;
            if !limits.members().is_empty() {
                m.insert("limits".into(), limits.over(None));
            }
            if let Some(u) = user {
                m.insert("user".into(), json!(u));
            }
            if let Some(d) = lifetime_days {
                m.insert("lifetime_days".into(), json!(d));
            }
            if let Some(e) = expires_at {
                m.insert("expires_at".into(), json!(e));
            }
            if let Some(n) = not_before {
                m.insert("not_before".into(), json!(n));
            }
            let v = c.json("POST", "/v1/tokens", &body).await?.ok_json()?;
            show_token(out, &v)
        }
        TokensCmd::List(f) => {
            let v = c
                .get(&format!("/v1/tokens{}", f.query()))
                .await?
                .ok_json()?;
            let list = v
                .get("tokens")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            show_tokens(out, &list)?;
            if out == Output::Table {
                render::note(&format!(
                    "{} of {} (page {})",
                    list.len(),
                    v.get("total").and_then(Value::as_i64).unwrap_or(0),
                    v.get("page").and_then(Value::as_i64).unwrap_or(1)
                ));
            }
            Ok(())
        }
        TokensCmd::Export(f) => {
            let r = c.get(&format!("/v1/tokens.csv{}", f.query())).await?;
            if r.status != 200 {
                return Err(r.error_text().into());
            }
            let mut stdout = io::stdout().lock();
            stdout.write_all(&r.body)?;
            Ok(stdout.flush()?)
        }
        TokensCmd::Show { id } => {
            let v = c.get(&id_path(&id, "")).await?.ok_json()?;
            show_token(out, &v)
        }
        TokensCmd::Download { id } => mint_cmd(c, out, &id_path(&id, "/download")).await,
        TokensCmd::Regenerate { id } => mint_cmd(c, out, &id_path(&id, "/regenerate")).await,
        TokensCmd::Rotate {
            id,
            grace,
            deadline,
            name,
        } => {
            let grace_secs = grace_secs(&grace)?;
            let mut body = json!({"grace_secs": grace_secs});
            let m = body.as_object_mut().ok_or("internal")?;
            if let Some(d) = deadline {
                m.insert("deadline".into(), json!(d));
            }
            if let Some(n) = name {
                m.insert("name".into(), json!(n));
            }
            let v = c
                .json("POST", &id_path(&id, "/rotate"), &body)
                .await?
                .ok_json()?;
            if out == Output::Table {
                let succ = v["successor"]["id"].as_str().unwrap_or("");
                render::note(&format!(
                    "The successor is pending: its owner downloads it with `tessera tokens download {succ}`."
                ));
            }
            show(out, &v)
        }
        TokensCmd::Rotation { id } => {
            let v = c.get(&id_path(&id, "/rotation")).await?.ok_json()?;
            show(out, &v)
        }
        TokensCmd::Revoke { id } => simple(c, out, "POST", &id_path(&id, "/revoke")).await,
        TokensCmd::Enable { id } => simple(c, out, "POST", &id_path(&id, "/enable")).await,
        TokensCmd::Disable { id } => simple(c, out, "POST", &id_path(&id, "/disable")).await,
        TokensCmd::Delete { id } => {
            let v = c
                .send("DELETE", &id_path(&id, ""), "application/json", Vec::new())
                .await?
                .ok_json()?;
            show(out, &v)
        }
        TokensCmd::RevokeAll { user, org } => {
            let body = match (user, org) {
                (Some(u), _) => json!({"user": u}),
                (None, Some(o)) => json!({"org": o}),
                (None, None) => return Err("give --user or --org".into()),
            };
            let v = c
                .json("POST", "/v1/tokens/revoke-all", &body)
                .await?
                .ok_json()?;
            if out == Output::Json {
                return show(out, &v);
            }
            // One id a line under a count, so a thousand ids stay readable and greppable.
            let ids: Vec<Value> = v
                .get("ids")
                .and_then(Value::as_array)
                .map(|ids| ids.iter().map(|id| json!({ "id": id })).collect())
                .unwrap_or_default();
            if out == Output::Table {
                render::note(&format!(
                    "{} token{} revoked.",
                    ids.len(),
                    if ids.len() == 1 { "" } else { "s" }
                ));
            }
            show_list(out, &ids, &["id"])
        }
        TokensCmd::Edit {
            id,
            name,
            description,
            expires_at,
            lifetime_days,
            not_before,
            scopes,
            clear_scopes,
            ips,
            clear_ips,
            enable,
            disable,
            limits,
            clear_limits,
        } => {
            let mut m = Map::new();
            if clear_limits {
                m.insert("limits".into(), json!({}));
            } else if !limits.members().is_empty() {
                // The flags change those limits only: the others the token has are kept.
                let now = c.get(&id_path(&id, "/rate-limits")).await?.ok_json()?;
                m.insert("limits".into(), limits.over(now.get("own")));
            }
            if let Some(v) = name {
                m.insert("name".into(), json!(v));
            }
            if let Some(v) = description {
                m.insert("description".into(), json!(v));
            }
            if let Some(v) = expires_at {
                m.insert("expires_at".into(), json!(v));
            }
            if let Some(v) = lifetime_days {
                m.insert("lifetime_days".into(), json!(v));
            }
            if let Some(v) = not_before {
                m.insert("not_before".into(), json!(v));
            }
            if clear_scopes || !scopes.is_empty() {
                m.insert("scopes".into(), json!(scopes));
            }
            if clear_ips || !ips.is_empty() {
                m.insert("ip_allow".into(), json!(ips));
            }
            if enable || disable {
                m.insert("enabled".into(), json!(enable));
            }
            let v = c
                .json("PATCH", &id_path(&id, ""), &Value::Object(m))
                .await?
                .ok_json()?;
            if out == Output::Table && v.get("jwt_revoked") == Some(&json!(true)) {
                render::note("The outstanding JWT was revoked: the token is Pending until its user downloads it again.");
            }
            let token = v.get("token").cloned().unwrap_or(Value::Null);
            match out {
                Output::Json => show(out, &v),
                _ => show_token(out, &token),
            }
        }
        TokensCmd::RateLimits { id } => {
            let v = c.get(&id_path(&id, "/rate-limits")).await?.ok_json()?;
            show(out, &v)
        }
        TokensCmd::AuthLog { id } => {
            let v = c.get(&id_path(&id, "/auth-log")).await?.ok_json()?;
            show_events(out, &v)
        }
        TokensCmd::Usage {
            id,
            bucket,
            buckets,
        } => {
            let q = query_string(&[
                ("bucket", bucket),
                ("buckets", buckets.map(|b| b.to_string())),
            ]);
            let v = c
                .get(&format!("{}{q}", id_path(&id, "/usage")))
                .await?
                .ok_json()?;
            if out != Output::Table {
                return show(out, &v);
            }
            let series = v["series"].as_array().cloned().unwrap_or_default();
            show_list(out, &series, &["start", "allowed", "refused"])?;
            render::note(&format!(
                "{}: {} allowed, {} refused per {} from {} to {}",
                v["name"].as_str().unwrap_or_default(),
                v["allowed"],
                v["refused"],
                v["bucket"].as_str().unwrap_or_default(),
                v["since"].as_str().unwrap_or_default(),
                v["until"].as_str().unwrap_or_default()
            ));
            let nets = v["networks"].as_array().cloned().unwrap_or_default();
            if !nets.is_empty() {
                show_list(out, &nets, &["network", "uses", "last_used_at"])?;
            }
            Ok(())
        }
    }
}

/// Download or regenerate: the table output is only the JWT, for `$(tessera tokens download ...)`.
async fn mint_cmd(c: &Client, out: Output, path: &str) -> CliResult {
    let v = c.json("POST", path, &json!({})).await?.ok_json()?;
    match out {
        Output::Table => {
            render::note("This JWT is shown once; store it now.");
            show_line(v.get("jwt").and_then(Value::as_str).unwrap_or(""))
        }
        o => show(o, &v),
    }
}

async fn simple(c: &Client, out: Output, method: &str, path: &str) -> CliResult {
    let v = c.json(method, path, &json!({})).await?.ok_json()?;
    show_token(out, &v)
}

async fn orgs(c: &Client, out: Output, cmd: OrgsCmd) -> CliResult {
    let cols = [
        "id",
        "name",
        "partner",
        "managed_by",
        "key_alg",
        "max_lifetime_days",
        "issuer",
    ];
    match cmd {
        OrgsCmd::List => {
            let v = c.get("/v1/orgs").await?.ok_json()?;
            show_list(
                out,
                v.get("orgs")
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or(&[]),
                &cols,
            )
        }
        OrgsCmd::Show { id } => show(
            out,
            &c.get(&format!("/v1/orgs/{}", encode(&id)))
                .await?
                .ok_json()?,
        ),
        OrgsCmd::Create {
            id,
            name,
            partner,
            managed_by,
            alg,
            max_lifetime_days,
            audience,
        } => {
            let mut m = Map::new();
            m.insert("id".into(), json!(id));
            m.insert("partner".into(), json!(partner));
            for (k, v) in [
                ("name", name),
                ("managed_by", managed_by),
                ("key_alg", alg),
                ("audience", audience),
            ] {
                if let Some(v) = v {
                    m.insert(k.into(), json!(v));
                }
            }
            if let Some(d) = max_lifetime_days {
                m.insert("max_lifetime_days".into(), json!(d));
            }
            show(
                out,
                &c.json("POST", "/v1/orgs", &Value::Object(m))
                    .await?
                    .ok_json()?,
            )
        }
        OrgsCmd::Update {
            id,
            name,
            max_lifetime_days,
            owners_manage_tokens,
        } => {
            let mut m = serde_json::Map::new();
            if let Some(n) = name {
                m.insert("name".into(), json!(n));
            }
            if let Some(d) = max_lifetime_days {
                m.insert("max_lifetime_days".into(), json!(d));
            }
            if let Some(on) = owners_manage_tokens {
                m.insert("owners_manage_tokens".into(), json!(on));
            }
            let v = c
                .json(
                    "PATCH",
                    &format!("/v1/orgs/{}", encode(&id)),
                    &Value::Object(m),
                )
                .await?
                .ok_json()?;
            show(out, &v)
        }
        OrgsCmd::Keys { id } => {
            let v = c
                .get(&format!("/v1/orgs/{}/keys", encode(&id)))
                .await?
                .ok_json()?;
            show_list(
                out,
                v.get("keys")
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or(&[]),
                &[
                    "kid",
                    "alg",
                    "active",
                    "created_at",
                    "retired_at",
                    "published_until",
                ],
            )
        }
        OrgsCmd::RotateKey { id, alg } => {
            let body = match alg {
                Some(a) => json!({"alg": a}),
                None => json!({}),
            };
            let v = c
                .json(
                    "POST",
                    &format!("/v1/orgs/{}/keys/rotate", encode(&id)),
                    &body,
                )
                .await?
                .ok_json()?;
            show(out, &v)
        }
        OrgsCmd::RateLimits {
            id,
            default,
            ceiling,
            limits,
            clear,
        } => {
            let path = format!("/v1/orgs/{}/rate-limits", encode(&id));
            let member = match (default, ceiling) {
                (true, _) => "default",
                (_, true) => "ceiling",
                _ if clear || !limits.members().is_empty() => {
                    return Err("say which to change: --default or --ceiling".into())
                }
                _ => return show(out, &c.get(&path).await?.ok_json()?),
            };
            let value = if clear {
                json!({})
            } else {
                let now = c.get(&path).await?.ok_json()?;
                limits.over(now.get(member))
            };
            let v = c
                .json("PUT", &path, &json!({ member: value }))
                .await?
                .ok_json()?;
            show(out, &v)
        }
        OrgsCmd::LeakPolicy { id, set } => {
            let path = format!("/v1/orgs/{}/leak-policy", encode(&id));
            let v = match set {
                Some(p) => c.json("PUT", &path, &json!({"policy": p})).await?,
                None => c.get(&path).await?,
            }
            .ok_json()?;
            show(out, &v)
        }
    }
}

async fn users(c: &Client, out: Output, cmd: UsersCmd) -> CliResult {
    let cols = ["id", "org", "username", "display_name", "role", "delegated"];
    match cmd {
        UsersCmd::List { org } => {
            let v = c
                .get(&format!("/v1/orgs/{}/users", encode(&org)))
                .await?
                .ok_json()?;
            show_list(
                out,
                v.get("users")
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or(&[]),
                &cols,
            )
        }
        UsersCmd::Show { id } => show(
            out,
            &c.get(&format!("/v1/users/{}", encode(&id)))
                .await?
                .ok_json()?,
        ),
        UsersCmd::Create {
            org,
            username,
            role,
            display_name,
            delegated,
            email,
        } => {
            let mut body = json!({"username": username, "role": role, "delegated": delegated});
            if let (Some(d), Some(m)) = (display_name, body.as_object_mut()) {
                m.insert("display_name".into(), json!(d));
            }
            if let (Some(e), Some(m)) = (email, body.as_object_mut()) {
                m.insert("email".into(), json!(e));
            }
            let v = c
                .json("POST", &format!("/v1/orgs/{}/users", encode(&org)), &body)
                .await?
                .ok_json()?;
            show(out, &v)
        }
        UsersCmd::Update {
            id,
            role,
            display_name,
            delegated,
        } => {
            let mut m = Map::new();
            if let Some(r) = role {
                m.insert("role".into(), json!(r));
            }
            if let Some(d) = display_name {
                m.insert("display_name".into(), json!(d));
            }
            if let Some(d) = delegated {
                m.insert("delegated".into(), json!(d));
            }
            let v = c
                .json(
                    "PATCH",
                    &format!("/v1/users/{}", encode(&id)),
                    &Value::Object(m),
                )
                .await?
                .ok_json()?;
            show(out, &v)
        }
        UsersCmd::Disable { id } => user_action(c, out, &id, "POST", "disable").await,
        UsersCmd::Enable { id } => user_action(c, out, &id, "POST", "enable").await,
        UsersCmd::ResetLink { id } => user_action(c, out, &id, "POST", "reset-link").await,
        UsersCmd::Delete { id } => {
            let v = c
                .send(
                    "DELETE",
                    &format!("/v1/users/{}", encode(&id)),
                    "application/json",
                    Vec::new(),
                )
                .await?
                .ok_json()?;
            show(out, &v)
        }
    }
}

/// `POST /v1/users/{id}/{action}`, the answer shown.
async fn user_action(c: &Client, out: Output, id: &str, method: &str, action: &str) -> CliResult {
    let v = c
        .json(
            method,
            &format!("/v1/users/{}/{action}", encode(id)),
            &json!({}),
        )
        .await?
        .ok_json()?;
    show(out, &v)
}

#[cfg(test)]
mod tests {
    use super::grace_secs;

    #[test]
    fn grace_takes_seconds_and_human_durations() {
        assert_eq!(grace_secs("0"), Ok(0));
        assert_eq!(grace_secs("90"), Ok(90));
        assert_eq!(grace_secs("5m"), Ok(300));
        assert_eq!(grace_secs("2h 30m"), Ok(9000));
        assert_eq!(grace_secs("7d"), Ok(604_800));
        let e = grace_secs("soon").unwrap_err();
        assert!(e.starts_with("--grace: ") && e.contains("5m"), "{e}");
    }
}

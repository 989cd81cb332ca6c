//! `/openapi.json` against the real router: every route is called for a success and for an
//! error, and every answer must be documented for that route and status and match the
//! documented schema (JSON Schema 2020-12, as OpenAPI 3.1 uses it).
// Test helpers outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Resp, World};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use tessera_control_plane::api::routes;
use tessera_control_plane::service;

/// The document, with its named schemas ready to resolve `$ref`s against.
struct Doc {
    doc: Value,
    /// `components.schemas`, with references rewritten to `#/$defs/...`.
    defs: Value,
}

fn rewrite_refs(v: &Value) -> Value {
    let text = v
        .to_string()
        .replace("\"#/components/schemas/", "\"#/$defs/");
    serde_json::from_str(&text).unwrap()
}

impl Doc {
    fn new(doc: Value) -> Doc {
        let defs = rewrite_refs(&doc["components"]["schemas"]);
        Doc { doc, defs }
    }

    /// Checks one answer of `method template` against the document.
    fn check(&self, method: &str, template: &str, resp: &Resp) -> Result<(), String> {
        let op = &self.doc["paths"][template][method.to_ascii_lowercase()];
        if !op.is_object() {
            return Err(format!("{method} {template} is not documented"));
        }
        let status = resp.status.as_u16().to_string();
        let documented = &op["responses"][&status];
        if !documented.is_object() {
            return Err(format!(
                "{method} {template} answered {status}, which is not documented: {}",
                resp.text()
            ));
        }
        let Some(content) = documented["content"].as_object() else {
            return if resp.body.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{method} {template} {status}: documented without a body, got {}",
                    resp.text()
                ))
            };
        };
        let ctype = resp
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        let Some(media) = content.get(&ctype) else {
            return Err(format!(
                "{method} {template} {status}: content type {ctype:?} is not documented (documented: {:?})",
                content.keys().collect::<Vec<_>>()
            ));
        };
        let instance = if ctype.ends_with("json") {
            serde_json::from_slice::<Value>(&resp.body)
                .map_err(|e| format!("{method} {template} {status}: not JSON: {e}"))?
        } else {
            Value::String(resp.text())
        };
        let schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$defs": self.defs,
            "allOf": [rewrite_refs(&media["schema"])],
        });
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .build(&schema)
            .map_err(|e| format!("{method} {template} {status}: bad schema: {e}"))?;
        let errors: Vec<String> = validator
            .iter_errors(&instance)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{method} {template} {status} does not match its schema: {errors:?}\nbody: {}",
                resp.text()
            ))
        }
    }
}

/// Calls routes and checks every answer, remembering which routes answered a success
/// (2xx/304) and which an error.
struct Run<'a> {
    w: &'a World,
    /// Another router over the world's state to send through (`None`: the world's).
    via: Option<axum::Router>,
    doc: &'a Doc,
    seen: BTreeMap<(String, String), (usize, usize)>,
    failures: Vec<String>,
    answers: usize,
}

impl Run<'_> {
    #[allow(clippy::too_many_arguments)]
    async fn raw(
        &mut self,
        method: &str,
        template: &str,
        path: &str,
        token: Option<&str>,
        ctype: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
        expect: u16,
    ) -> Resp {
        let app = self.via.as_ref().unwrap_or(&self.w.app);
        let resp = common::send(app, method, path, token, ctype, body, headers).await;
        if resp.status.as_u16() != expect {
            self.failures.push(format!(
                "{method} {path}: expected {expect}, got {} {}",
                resp.status,
                resp.text()
            ));
        }
        if let Err(e) = self.doc.check(method, template, &resp) {
            self.failures.push(e);
        }
        self.answers += 1;
        let entry = self
            .seen
            .entry((method.to_string(), template.to_string()))
            .or_default();
        // A documented redirect (304, the single sign-on callback's 303) is an answer too.
        if resp.status.is_success() || resp.status.is_redirection() {
            entry.0 += 1;
        } else {
            entry.1 += 1;
        }
        resp
    }

    async fn call(
        &mut self,
        method: &str,
        template: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        expect: u16,
    ) -> Resp {
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        self.raw(
            method,
            template,
            path,
            token,
            "application/json",
            body,
            &[],
            expect,
        )
        .await
    }
}

fn documented_operations(doc: &Value) -> BTreeSet<(String, String)> {
    doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.to_ascii_uppercase(), path.clone()))
        })
        .collect()
}

#[tokio::test]
async fn every_answer_matches_its_documented_schema() {
    let w = World::new().await;
    let raw = w.call("GET", "/openapi.json", None, None).await.json();
    assert_eq!(raw["openapi"], "3.1.0");
    let doc = Doc::new(raw.clone());

    // The router and the document name the same operations.
    let routed: BTreeSet<(String, String)> = routes()
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect();
    assert_eq!(routed, documented_operations(&raw));
    assert_eq!(routed.len(), routes().len(), "a route is listed twice");

    let mut run = Run {
        w: &w,
        via: None,
        doc: &doc,
        seen: BTreeMap::new(),
        failures: Vec::new(),
        answers: 0,
    };
    let root = w.jwt("root-admin");
    let ada = w.jwt("ada");
    let ula = w.jwt("ula");
    let ula_id = w.uid("ula");

    // Public routes.
    run.call("GET", "/healthz", "/healthz", None, None, 200)
        .await;
    let r = run.call("GET", "/readyz", "/readyz", None, None, 200).await;
    assert_eq!(r.json(), json!({"status": "ready"}));
    run.call("GET", "/openapi.json", "/openapi.json", None, None, 200)
        .await;
    let t = "/v1/orgs/{org}/jwks.json";
    run.call("GET", t, "/v1/orgs/acme/jwks.json", None, None, 200)
        .await;
    run.call("GET", t, "/v1/orgs/nope/jwks.json", None, None, 404)
        .await;
    let t = "/v1/orgs/{org}/status-list";
    let r = run
        .call("GET", t, "/v1/orgs/acme/status-list", None, None, 200)
        .await;
    let version = r.headers["tessera-status-version"]
        .to_str()
        .unwrap()
        .to_string();
    run.call(
        "GET",
        t,
        "/v1/orgs/acme/status-list?format=jwt",
        None,
        None,
        200,
    )
    .await;
    run.raw(
        "GET",
        t,
        "/v1/orgs/acme/status-list",
        None,
        "",
        vec![],
        &[("accept", "application/statuslist+jwt")],
        200,
    )
    .await;
    run.call(
        "GET",
        t,
        &format!("/v1/orgs/acme/status-list?since={version}&wait=0"),
        None,
        None,
        304,
    )
    .await;
    run.call(
        "GET",
        t,
        "/v1/orgs/acme/status-list?format=xml",
        None,
        None,
        400,
    )
    .await;
    run.call("GET", t, "/v1/orgs/nope/status-list", None, None, 404)
        .await;

    // Organizations.
    run.call("GET", "/v1/me", "/v1/me", Some(&ada), None, 200)
        .await;
    run.call("GET", "/v1/me", "/v1/me", Some("garbage"), None, 401)
        .await;
    run.call("GET", "/v1/orgs", "/v1/orgs", Some(&root), None, 200)
        .await;
    run.call("GET", "/v1/orgs", "/v1/orgs", None, None, 401)
        .await;
    let create_org = json!({"id": "newco", "managed_by": "partnerco", "key_alg": "ES256"});
    run.call(
        "POST",
        "/v1/orgs",
        "/v1/orgs",
        Some(&root),
        Some(create_org.clone()),
        201,
    )
    .await;
    run.call(
        "POST",
        "/v1/orgs",
        "/v1/orgs",
        Some(&root),
        Some(create_org),
        409,
    )
    .await;
    run.call(
        "POST",
        "/v1/orgs",
        "/v1/orgs",
        Some(&ula),
        Some(json!({"id": "ulaco"})),
        403,
    )
    .await;
    run.call(
        "POST",
        "/v1/orgs",
        "/v1/orgs",
        Some(&root),
        Some(json!({"id": "UPPER"})),
        400,
    )
    .await;
    let t = "/v1/orgs/{org}";
    run.call("GET", t, "/v1/orgs/acme", Some(&ada), None, 200)
        .await;
    run.call("GET", t, "/v1/orgs/acme", None, None, 401).await;
    run.call(
        "PATCH",
        t,
        "/v1/orgs/acme",
        Some(&ada),
        Some(json!({"name": "Acme Corp", "max_lifetime_days": 200, "owners_manage_tokens": true})),
        200,
    )
    .await;
    run.call(
        "PATCH",
        t,
        "/v1/orgs/acme",
        Some(&ada),
        Some(json!({"max_lifetime_days": 400})),
        403,
    )
    .await;
    run.call(
        "PATCH",
        t,
        "/v1/orgs/acme",
        Some(&root),
        Some(json!({"max_lifetime_days": 0})),
        400,
    )
    .await;
    run.call(
        "PATCH",
        t,
        "/v1/orgs/acme",
        Some(&root),
        Some(json!({"max_lifetime_days": 365})),
        200,
    )
    .await;
    let t = "/v1/orgs/{org}/keys";
    run.call("GET", t, "/v1/orgs/acme/keys", Some(&ada), None, 200)
        .await;
    run.call("GET", t, "/v1/orgs/acme/keys", Some(&ula), None, 403)
        .await;
    let t = "/v1/orgs/{org}/keys/rotate";
    run.call(
        "POST",
        t,
        "/v1/orgs/acme/keys/rotate",
        Some(&ada),
        Some(json!({"alg": "ES256"})),
        200,
    )
    .await;
    run.call(
        "POST",
        t,
        "/v1/orgs/acme/keys/rotate",
        Some(&ula),
        Some(json!({})),
        403,
    )
    .await;
    let t = "/v1/orgs/{org}/edge-credentials";
    let edge = run
        .call(
            "POST",
            t,
            "/v1/orgs/acme/edge-credentials",
            Some(&ada),
            Some(json!({"name": "edge-1"})),
            201,
        )
        .await
        .json();
    let edge_secret = edge["secret"].as_str().unwrap().to_string();
    run.call(
        "POST",
        t,
        "/v1/orgs/acme/edge-credentials",
        Some(&ada),
        Some(json!({"name": 7})),
        400,
    )
    .await;

    // Users.
    let t = "/v1/orgs/{org}/users";
    run.call("GET", t, "/v1/orgs/acme/users", Some(&ada), None, 200)
        .await;
    run.call("GET", t, "/v1/orgs/acme/users", Some(&ula), None, 403)
        .await;
    run.call(
        "POST",
        t,
        "/v1/orgs/acme/users",
        Some(&ada),
        Some(json!({"username": "zed", "display_name": "Zed", "role": "readonly"})),
        201,
    )
    .await;
    run.call(
        "POST",
        t,
        "/v1/orgs/acme/users",
        Some(&ada),
        Some(json!({"username": "zed", "role": "user"})),
        409,
    )
    .await;
    let t = "/v1/users/{id}";
    let user_path = format!("/v1/users/{ula_id}");
    run.call("GET", t, &user_path, Some(&ada), None, 200).await;
    run.call("GET", t, "/v1/users/nobody", Some(&ada), None, 404)
        .await;
    run.call(
        "PATCH",
        t,
        &user_path,
        Some(&ada),
        Some(json!({"display_name": "Ula", "role": "user"})),
        200,
    )
    .await;
    run.call(
        "PATCH",
        t,
        &user_path,
        Some(&ada),
        Some(json!({"role": "god"})),
        400,
    )
    .await;

    // Tokens.
    let r = run
        .call(
            "POST",
            "/v1/tokens",
            "/v1/tokens",
            Some(&ada),
            Some(
                json!({"name": "ci", "description": "CI", "lifetime_days": 30,
                "not_before": "2020-01-01", "ip_allow": ["10.0.0.0/8"], "scopes": ["read"]}),
            ),
            201,
        )
        .await;
    let tid = r.json()["id"].as_str().unwrap().to_string();
    run.call(
        "POST",
        "/v1/tokens",
        "/v1/tokens",
        Some(&ada),
        Some(json!({"name": "ci"})),
        409,
    )
    .await;
    run.call(
        "POST",
        "/v1/tokens",
        "/v1/tokens",
        Some(&ada),
        Some(json!({"name": "x", "expires_at": "9999-99-99"})),
        400,
    )
    .await;
    for template in ["/v1/tokens", "/v1/tokens.csv"] {
        run.call(
            "GET",
            template,
            &format!("{template}?q=ci&sort=name&per_page=5"),
            Some(&ada),
            None,
            200,
        )
        .await;
        run.call(
            "GET",
            template,
            &format!("{template}?sort=nope"),
            Some(&ada),
            None,
            400,
        )
        .await;
    }
    let tok = |suffix: &str| format!("/v1/tokens/{tid}{suffix}");
    let t = "/v1/tokens/{id}";
    run.call("GET", t, &tok(""), Some(&ada), None, 200).await;
    run.call("GET", t, "/v1/tokens/tok_none", Some(&ada), None, 404)
        .await;
    run.call(
        "PATCH",
        t,
        &tok(""),
        Some(&ada),
        Some(json!({"description": "CI, nightly", "not_before": null,
            "expires_at": common::T0 + 60 * 86_400})),
        200,
    )
    .await;
    run.call(
        "PATCH",
        t,
        &tok(""),
        Some(&ada),
        Some(json!({"ip_allow": ["::/129"]})),
        400,
    )
    .await;
    let t = "/v1/tokens/{id}/download";
    let minted = run
        .call("POST", t, &tok("/download"), Some(&ada), None, 200)
        .await
        .json();
    let api_token = minted["jwt"].as_str().unwrap().to_string();
    run.call("POST", t, &tok("/download"), Some(&ada), None, 409)
        .await;
    let t = "/v1/tokens/{id}/regenerate";
    run.call("POST", t, &tok("/regenerate"), Some(&ada), None, 200)
        .await;
    run.call("POST", t, &tok("/regenerate"), Some(&ula), None, 403)
        .await;
    let t = "/v1/tokens/{id}/disable";
    run.call("POST", t, &tok("/disable"), Some(&ada), None, 200)
        .await;
    run.call("POST", t, &tok("/disable"), None, None, 401).await;
    let t = "/v1/tokens/{id}/enable";
    run.call("POST", t, &tok("/enable"), Some(&ada), None, 200)
        .await;
    run.call("POST", t, &tok("/enable"), None, None, 401).await;
    let t = "/v1/tokens/{id}/auth-log";
    run.call(
        "GET",
        t,
        &tok("/auth-log?per_page=10"),
        Some(&ada),
        None,
        200,
    )
    .await;
    run.call("GET", t, &tok("/auth-log?page=0"), Some(&ada), None, 400)
        .await;
    let t = "/v1/tokens/{id}/usage";
    run.call("GET", t, &tok("/usage?bucket=day"), Some(&ada), None, 200)
        .await;
    run.call("GET", t, &tok("/usage?bucket=week"), Some(&ada), None, 400)
        .await;
    run.call("GET", t, &tok("/usage"), None, None, 401).await;

    // The exchange, by JSON and by the RFC 8693 form; the fresh JWT is the API token.
    let regenerated = run
        .call("GET", "/v1/tokens/{id}", &tok(""), Some(&ada), None, 200)
        .await;
    assert_eq!(regenerated.json()["status"], "enabled");
    let t = "/v1/auth/accesstoken";
    let fresh = w.login(&w.uid("ada")).await;
    run.call(
        "POST",
        t,
        t,
        None,
        Some(json!({"refreshToken": fresh})),
        200,
    )
    .await;
    let form = format!(
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange\
         &subject_token={fresh}\
         &subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt"
    );
    run.raw(
        "POST",
        t,
        t,
        None,
        "application/x-www-form-urlencoded",
        form.into_bytes(),
        &[],
        200,
    )
    .await;
    // The regenerated token's first JWT was revoked by the regeneration.
    run.call(
        "POST",
        t,
        t,
        None,
        Some(json!({"refreshToken": api_token})),
        400,
    )
    .await;
    run.raw(
        "POST",
        t,
        t,
        None,
        "application/x-www-form-urlencoded",
        b"grant_type=password&subject_token=x&subject_token_type=y".to_vec(),
        &[],
        400,
    )
    .await;

    // Leaked tokens: a signed scanner post (keys from a loopback URL), a public report,
    // the org's policy.
    let scanner_key = common::scanner::new_key();
    let keys = common::scanner::key_server(&[("k1", &scanner_key)]).await;
    let _ = w.state.clone().with_scanner_keys_url(&keys.url);
    let t = common::scanner::GITHUB;
    let post = json!([{"token": "tsr_eyJ9.eyJ9.AA", "type": "tessera_api_token", "url": "https://x", "source": "content"}]);
    let bytes = post.to_string().into_bytes();
    let sig = common::scanner::sign(&scanner_key, &bytes);
    let signed = [
        ("github-public-key-identifier", "k1"),
        ("github-public-key-signature", sig.as_str()),
    ];
    run.raw(
        "POST",
        t,
        t,
        None,
        "application/json",
        bytes.clone(),
        &signed,
        200,
    )
    .await;
    run.raw(
        "POST",
        t,
        t,
        None,
        "application/json",
        bytes.clone(),
        &[],
        400,
    )
    .await;
    run.raw(
        "POST",
        t,
        t,
        None,
        "application/json",
        b"[]".to_vec(),
        &signed,
        401,
    )
    .await;
    let t = "/v1/leaks";
    run.call(
        "POST",
        t,
        t,
        None,
        Some(json!({"tokens": ["tsr_x"], "url": "https://x"})),
        202,
    )
    .await;
    run.call("POST", t, t, None, Some(json!({"tokens": "x"})), 400)
        .await;
    let t = "/v1/orgs/{org}/leak-policy";
    run.call("GET", t, "/v1/orgs/acme/leak-policy", Some(&ada), None, 200)
        .await;
    run.call("GET", t, "/v1/orgs/acme/leak-policy", Some(&ula), None, 403)
        .await;
    run.call(
        "PUT",
        t,
        "/v1/orgs/acme/leak-policy",
        Some(&ada),
        Some(json!({"policy": "revoke"})),
        200,
    )
    .await;
    run.call(
        "PUT",
        t,
        "/v1/orgs/acme/leak-policy",
        Some(&ada),
        Some(json!({"policy": "never"})),
        400,
    )
    .await;
    // Rate limits (issue 25): the org's defaults and ceiling, a token's limits.
    let t = "/v1/orgs/{org}/rate-limits";
    run.call("GET", t, "/v1/orgs/acme/rate-limits", Some(&ada), None, 200)
        .await;
    run.call("GET", t, "/v1/orgs/acme/rate-limits", Some(&ula), None, 403)
        .await;
    run.call(
        "PUT",
        t,
        "/v1/orgs/acme/rate-limits",
        Some(&ada),
        Some(json!({"default": {"per_second": 10}, "ceiling": {"per_second": 100, "per_day": 100_000}})),
        200,
    )
    .await;
    run.call(
        "PUT",
        t,
        "/v1/orgs/acme/rate-limits",
        Some(&ada),
        Some(json!({"ceiling": {"per_second": 0}})),
        400,
    )
    .await;
    let t = "/v1/tokens/{id}/rate-limits";
    run.call("GET", t, &tok("/rate-limits"), Some(&ada), None, 200)
        .await;
    run.call(
        "GET",
        t,
        "/v1/tokens/tok_unknown/rate-limits",
        Some(&ada),
        None,
        404,
    )
    .await;

    // Rotation with a grace period.
    let rot = w.token_in_state(&ula_id, "enabled").await;
    let rot_path = format!("/v1/tokens/{rot}/rotate");
    let t = "/v1/tokens/{id}/rotate";
    let grace = |g: i64| Some(json!({ "grace_secs": g }));
    run.call("POST", t, &rot_path, Some(&ula), grace(-1), 400)
        .await;
    run.call("POST", t, &rot_path, Some(&ula), grace(300), 201)
        .await;
    run.call("POST", t, &rot_path, Some(&ula), grace(300), 409)
        .await;
    let t = "/v1/tokens/{id}/rotation";
    let rotation_path = format!("/v1/tokens/{rot}/rotation");
    run.call("GET", t, &rotation_path, Some(&ula), None, 200)
        .await;
    run.call("GET", t, "/v1/tokens/nope/rotation", Some(&ula), None, 404)
        .await;

    // Webhooks: an endpoint, an event for it, its delivery log, a resend, deletion.
    let t = "/v1/orgs/{org}/webhooks";
    let hooks = "/v1/orgs/acme/webhooks";
    let r = run
        .call(
            "POST",
            t,
            hooks,
            Some(&ada),
            Some(json!({"url": "https://hooks.example/tessera"})),
            201,
        )
        .await;
    let hook = r.json()["webhook"]["id"].as_str().unwrap().to_string();
    run.call(
        "POST",
        t,
        hooks,
        Some(&ada),
        Some(json!({"url": "nope"})),
        400,
    )
    .await;
    run.call("GET", t, hooks, Some(&ada), None, 200).await;
    run.call("GET", t, hooks, Some(&ula), None, 403).await;
    let ev = w.token_in_state(&ula_id, "enabled").await;
    let r = w
        .call("POST", &format!("/v1/tokens/{ev}/revoke"), Some(&ada), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let t = "/v1/orgs/{org}/webhooks/{id}/deliveries";
    let r = run
        .call(
            "GET",
            t,
            &format!("{hooks}/{hook}/deliveries"),
            Some(&ada),
            None,
            200,
        )
        .await;
    let msg = r.json()["deliveries"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    run.call(
        "GET",
        t,
        &format!("{hooks}/nope/deliveries"),
        Some(&ada),
        None,
        404,
    )
    .await;
    let t = "/v1/orgs/{org}/webhooks/{id}/deliveries/{message}/resend";
    let resend = |m: &str| format!("{hooks}/{hook}/deliveries/{m}/resend");
    run.call("POST", t, &resend(&msg), Some(&ada), None, 200)
        .await;
    run.call("POST", t, &resend("nope"), Some(&ada), None, 404)
        .await;
    let t = "/v1/orgs/{org}/webhooks/{id}";
    let one = format!("{hooks}/{hook}");
    run.call("DELETE", t, &one, Some(&ada), None, 200).await;
    run.call("DELETE", t, &one, Some(&ada), None, 404).await;

    // Usage from an edge, and the logs.
    let t = "/v1/usage";
    run.call(
        "POST",
        t,
        t,
        Some(&edge_secret),
        Some(json!({"events": [
            {"token_id": tid, "at": common::T0 - 120, "ip": "192.0.2.1",
             "outcome": "allow", "method": "GET", "path": "/v1/things"},
            {"token_id": tid, "at": common::T0 - 60, "outcome": "deny", "reason": "token_expired",
             "method": "GET", "path": "/v1/things"},
            {"token_id": "tok_unknown", "at": common::T0 - 30, "outcome": "allow",
             "method": "POST", "path": "/"},
        ]})),
        200,
    )
    .await;
    // With the edge's spend: the answer carries its leases.
    run.call(
        "POST",
        t,
        t,
        Some(&edge_secret),
        Some(json!({"events": [], "spend": {"edge": "envoy-1", "tokens": [
            {"token_id": tid, "window": "per_second", "index": common::T0, "admitted": 3, "refused": 1}]}})),
        200,
    )
    .await;
    run.call("POST", t, t, None, Some(json!({"events": []})), 401)
        .await;
    run.call(
        "POST",
        t,
        t,
        Some(&edge_secret),
        Some(json!({"events": [{"token_id": tid}]})),
        400,
    )
    .await;
    // Introspection (RFC 7662) by an edge credential: active, inactive, and refusals.
    let t = "/v1/introspect";
    let introspect_form = |token: &str| {
        form_urlencoded::Serializer::new(String::new())
            .append_pair("token", token)
            .finish()
            .into_bytes()
    };
    let ctype = "application/x-www-form-urlencoded";
    for (token, credential, status) in [
        (ula.as_str(), Some(edge_secret.as_str()), 200),
        ("not-a-jwt", Some(edge_secret.as_str()), 200),
        ("", Some(edge_secret.as_str()), 400),
        (ula.as_str(), None, 401),
        (ula.as_str(), Some("tse_wrong"), 401),
    ] {
        run.raw(
            "POST",
            t,
            t,
            credential,
            ctype,
            introspect_form(token),
            &[],
            status,
        )
        .await;
    }
    run.call(
        "POST",
        t,
        t,
        Some(&edge_secret),
        Some(json!({"token": ula})),
        415,
    )
    .await;
    let t = "/v1/auth-log";
    let events = run
        .call("GET", t, "/v1/auth-log?outcome=deny", Some(&ada), None, 200)
        .await;
    assert!(!events.json()["events"].as_array().unwrap().is_empty());
    run.call("GET", t, "/v1/auth-log?since=never", Some(&ada), None, 400)
        .await;
    let t = "/v1/audit-log";
    let audit = run
        .call("GET", t, "/v1/audit-log?org=acme", Some(&ada), None, 200)
        .await;
    assert!(!audit.json()["entries"].as_array().unwrap().is_empty());
    run.call("GET", t, "/v1/audit-log", Some(&ula), None, 403)
        .await;

    // Sessions, links, users' states, edge credentials, the page's choices.
    let link = {
        let uid = w.uid("rita");
        w.state
            .write(move |tx, ctx| {
                let user = tx.get_user(&uid)?.unwrap();
                service::accounts::issue_link(tx, ctx, &user, "reset", 3600)
            })
            .await
            .unwrap()
    };
    let secret = link.url.rsplit('/').next().unwrap().to_string();
    let t = "/v1/links/accept";
    let body = json!({"secret": secret, "password": "rita's long password"});
    let r = run.call("POST", t, t, None, Some(body.clone()), 200).await;
    let cookie = r.headers["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let csrf = r.json()["csrf"].as_str().unwrap().to_string();
    run.call("POST", t, t, None, Some(body), 400).await;
    let t = "/v1/session";
    let session = [("cookie", cookie.as_str()), ("x-csrf-token", csrf.as_str())];
    run.raw("GET", t, t, None, "application/json", vec![], &session, 200)
        .await;
    run.call("GET", t, t, Some(&ada), None, 400).await;
    let sign_in = |pw: &str| Some(json!({"org": "acme", "username": "rita", "password": pw}));
    run.call("POST", t, t, None, sign_in("rita's long password"), 200)
        .await;
    run.call("POST", t, t, None, sign_in("wrong password"), 401)
        .await;
    run.raw(
        "DELETE",
        t,
        t,
        None,
        "application/json",
        vec![],
        &session,
        200,
    )
    .await;
    run.call("DELETE", t, t, Some(&ada), None, 400).await;
    let rita_id = w.uid("rita");
    let t = "/v1/users/{id}/reset-link";
    run.call(
        "POST",
        t,
        &format!("/v1/users/{ula_id}/reset-link"),
        Some(&ada),
        None,
        200,
    )
    .await;
    run.call(
        "POST",
        t,
        &format!("/v1/users/{rita_id}/reset-link"),
        Some(&ula),
        None,
        403,
    )
    .await;
    for (t, op) in [
        ("/v1/users/{id}/disable", "disable"),
        ("/v1/users/{id}/enable", "enable"),
    ] {
        let p = format!("/v1/users/{rita_id}/{op}");
        run.call("POST", t, &p, Some(&ada), None, 200).await;
        run.call("POST", t, &p, Some(&ada), None, 409).await;
    }
    let gone = w
        .call(
            "POST",
            "/v1/orgs/acme/users",
            Some(&ada),
            Some(json!({"username": "gone", "role": "user"})),
        )
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let t = "/v1/users/{id}";
    run.call(
        "DELETE",
        t,
        &format!("/v1/users/{gone}"),
        Some(&ada),
        None,
        200,
    )
    .await;
    run.call(
        "DELETE",
        t,
        &format!("/v1/users/{gone}"),
        Some(&ada),
        None,
        404,
    )
    .await;
    let t = "/v1/orgs/{org}/edge-credentials";
    run.call(
        "GET",
        t,
        "/v1/orgs/acme/edge-credentials",
        Some(&ada),
        None,
        200,
    )
    .await;
    run.call(
        "GET",
        t,
        "/v1/orgs/acme/edge-credentials",
        Some(&ula),
        None,
        403,
    )
    .await;
    let edge_id = w
        .call(
            "POST",
            "/v1/orgs/acme/edge-credentials",
            Some(&ada),
            Some(json!({"name": "to-revoke"})),
        )
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let t = "/v1/orgs/{org}/edge-credentials/{id}/revoke";
    let p = format!("/v1/orgs/acme/edge-credentials/{edge_id}/revoke");
    run.call("POST", t, &p, Some(&ada), None, 200).await;
    run.call("POST", t, &p, Some(&ada), None, 409).await;
    let t = "/v1/me/prefs";
    run.call(
        "PUT",
        t,
        t,
        Some(&ada),
        Some(json!({"prefs": {"hidden_columns": ["scopes"]}})),
        200,
    )
    .await;
    run.call("PUT", t, t, Some(&ada), Some(json!({"prefs": 1})), 400)
        .await;
    let r = run.call("GET", t, t, Some(&ada), None, 200).await;
    assert_eq!(r.json()["prefs"]["hidden_columns"], json!(["scopes"]));
    run.call("GET", t, t, None, None, 401).await;
    // Notification settings (the caller's mail address and muted events).
    let t = "/v1/me/notifications";
    let r = run
        .call(
            "PUT",
            t,
            t,
            Some(&ula),
            Some(json!({"email": "ula@example.com", "muted": ["token.expiring"]})),
            200,
        )
        .await;
    assert_eq!(r.json()["email"], "ula@example.com");
    run.call("PUT", t, t, Some(&ula), Some(json!({"email": "no"})), 400)
        .await;
    run.call("PUT", t, t, Some(&ula), Some(json!({"muted": ["x"]})), 400)
        .await;
    let r = run.call("GET", t, t, Some(&ula), None, 200).await;
    assert_eq!(r.json()["events"][0]["mail"], false);
    run.call("GET", t, t, None, None, 401).await;

    // The scope catalogue.
    let t = "/v1/orgs/{org}/scopes";
    run.call("GET", t, "/v1/orgs/acme/scopes", Some(&ada), None, 200)
        .await;
    run.call("GET", t, "/v1/orgs/acme/scopes", Some(&ula), None, 403)
        .await;
    let body = json!({"name": "orders:read", "description": "Read orders"});
    run.call(
        "POST",
        t,
        "/v1/orgs/acme/scopes",
        Some(&ada),
        Some(body.clone()),
        201,
    )
    .await;
    run.call(
        "POST",
        t,
        "/v1/orgs/acme/scopes",
        Some(&ada),
        Some(body),
        409,
    )
    .await;
    let t = "/v1/orgs/{org}/scopes/{name}";
    let p = "/v1/orgs/acme/scopes/orders:read";
    run.call(
        "PATCH",
        t,
        p,
        Some(&ada),
        Some(json!({"description": "Orders"})),
        200,
    )
    .await;
    run.call(
        "PATCH",
        t,
        "/v1/orgs/acme/scopes/nope",
        Some(&ada),
        Some(json!({"description": ""})),
        404,
    )
    .await;
    let t = "/v1/orgs/{org}/scopes/{name}/grant";
    let p = "/v1/orgs/acme/scopes/orders:read/grant";
    run.call("POST", t, p, Some(&ada), Some(json!({"user": "ula"})), 200)
        .await;
    run.call("POST", t, p, Some(&ada), Some(json!({})), 400)
        .await;
    let t = "/v1/orgs/{org}/scopes/{name}/withdraw";
    let p = "/v1/orgs/acme/scopes/orders:read/withdraw";
    run.call("POST", t, p, Some(&ada), Some(json!({"user": "ula"})), 200)
        .await;
    run.call("POST", t, p, Some(&ada), Some(json!({"user": "ula"})), 409)
        .await;
    let t = "/v1/me/scopes";
    run.call("GET", t, t, Some(&ula), None, 200).await;
    run.call("GET", t, t, None, None, 401).await;
    let t = "/v1/users/{id}/scopes";
    run.call("GET", t, "/v1/users/ula/scopes", Some(&ada), None, 200)
        .await;
    run.call("GET", t, "/v1/users/nobody/scopes", Some(&ada), None, 404)
        .await;
    let t = "/v1/orgs/{org}/scopes/{name}";
    run.call(
        "DELETE",
        t,
        "/v1/orgs/acme/scopes/orders:read",
        Some(&ada),
        None,
        200,
    )
    .await;
    run.call(
        "DELETE",
        t,
        "/v1/orgs/acme/scopes/tessera:manage",
        Some(&ada),
        None,
        409,
    )
    .await;

    // SCIM: the credentials, discovery, Users and Groups.
    let t = "/v1/orgs/{org}/scim-credentials";
    let created = run
        .call(
            "POST",
            t,
            "/v1/orgs/acme/scim-credentials",
            Some(&ada),
            Some(json!({"name": "idp"})),
            201,
        )
        .await;
    let scim_secret = created.json()["secret"].as_str().unwrap().to_string();
    let scim_id = created.json()["id"].as_str().unwrap().to_string();
    run.call(
        "POST",
        t,
        "/v1/orgs/acme/scim-credentials",
        Some(&ula),
        Some(json!({"name": "idp"})),
        403,
    )
    .await;
    run.call(
        "GET",
        t,
        "/v1/orgs/acme/scim-credentials",
        Some(&ada),
        None,
        200,
    )
    .await;
    run.call(
        "GET",
        t,
        "/v1/orgs/acme/scim-credentials",
        Some(&ula),
        None,
        403,
    )
    .await;
    let sc = Some(scim_secret.as_str());
    let scim_json = "application/scim+json";
    for (t, p) in [
        (
            "/scim/v2/{org}/ServiceProviderConfig",
            "/scim/v2/acme/ServiceProviderConfig".to_string(),
        ),
        (
            "/scim/v2/{org}/ResourceTypes",
            "/scim/v2/acme/ResourceTypes".to_string(),
        ),
        (
            "/scim/v2/{org}/ResourceTypes/{id}",
            "/scim/v2/acme/ResourceTypes/User".to_string(),
        ),
        (
            "/scim/v2/{org}/Schemas",
            "/scim/v2/acme/Schemas".to_string(),
        ),
        (
            "/scim/v2/{org}/Schemas/{id}",
            "/scim/v2/acme/Schemas/urn:ietf:params:scim:schemas:core:2.0:Group".to_string(),
        ),
    ] {
        run.call("GET", t, &p, None, None, 200).await;
    }
    run.call(
        "GET",
        "/scim/v2/{org}/ResourceTypes/{id}",
        "/scim/v2/acme/ResourceTypes/Nope",
        None,
        None,
        404,
    )
    .await;
    run.call(
        "GET",
        "/scim/v2/{org}/Schemas/{id}",
        "/scim/v2/acme/Schemas/nope",
        None,
        None,
        404,
    )
    .await;
    let t = "/scim/v2/{org}/Users";
    let body = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "scimmed",
        "name": {"givenName": "S"}, "emails": [{"value": "s@example.com", "type": "work"}]});
    let r = run
        .raw(
            "POST",
            t,
            "/scim/v2/acme/Users",
            sc,
            scim_json,
            body.to_string().into_bytes(),
            &[],
            201,
        )
        .await;
    let sid = r.json()["id"].as_str().unwrap().to_string();
    run.raw(
        "POST",
        t,
        "/scim/v2/acme/Users",
        sc,
        scim_json,
        body.to_string().into_bytes(),
        &[],
        409,
    )
    .await;
    run.call(
        "GET",
        t,
        "/scim/v2/acme/Users?filter=userName%20eq%20%22scimmed%22&count=5",
        sc,
        None,
        200,
    )
    .await;
    run.call(
        "GET",
        t,
        "/scim/v2/acme/Users?filter=userName%20gt%20%22a%22",
        sc,
        None,
        400,
    )
    .await;
    run.call("GET", t, "/scim/v2/acme/Users", None, None, 401)
        .await;
    let t = "/scim/v2/{org}/Users/{id}";
    let p = format!("/scim/v2/acme/Users/{sid}");
    let r = run.call("GET", t, &p, sc, None, 200).await;
    let tag = r.headers["etag"].to_str().unwrap().to_string();
    run.raw(
        "GET",
        t,
        &p,
        sc,
        scim_json,
        vec![],
        &[("if-none-match", &tag)],
        304,
    )
    .await;
    run.call("GET", t, "/scim/v2/acme/Users/usr_nope", sc, None, 404)
        .await;
    let put = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "scimmed", "displayName": "Scim Med"});
    run.raw(
        "PUT",
        t,
        &p,
        sc,
        scim_json,
        put.to_string().into_bytes(),
        &[],
        200,
    )
    .await;
    run.raw(
        "PUT",
        t,
        &p,
        sc,
        scim_json,
        put.to_string().into_bytes(),
        &[("if-match", "W/\"999\"")],
        412,
    )
    .await;
    let deactivate = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "active", "value": false}]});
    run.raw(
        "PATCH",
        t,
        &p,
        sc,
        scim_json,
        deactivate.to_string().into_bytes(),
        &[],
        200,
    )
    .await;
    run.raw(
        "PATCH",
        t,
        &p,
        sc,
        scim_json,
        json!({"Operations": [{"op": "move"}]})
            .to_string()
            .into_bytes(),
        &[],
        400,
    )
    .await;
    let search = json!({"filter": "userName eq \"scimmed\"", "attributes": ["userName"]});
    for (t, p) in [
        ("/scim/v2/{org}/.search", "/scim/v2/acme/.search"),
        (
            "/scim/v2/{org}/Users/.search",
            "/scim/v2/acme/Users/.search",
        ),
    ] {
        let r = run
            .raw(
                "POST",
                t,
                p,
                sc,
                scim_json,
                search.to_string().into_bytes(),
                &[],
                200,
            )
            .await;
        assert_eq!(r.json()["totalResults"], 1, "{}", r.text());
        run.raw(
            "POST",
            t,
            p,
            sc,
            scim_json,
            json!({"filter": "(x)"}).to_string().into_bytes(),
            &[],
            400,
        )
        .await;
    }
    let t = "/scim/v2/{org}/Groups";
    run.call("GET", t, "/scim/v2/acme/Groups", sc, None, 200)
        .await;
    run.call("GET", t, "/scim/v2/acme/Groups?count=x", sc, None, 400)
        .await;
    let t = "/scim/v2/{org}/Groups/{id}";
    run.call("GET", t, "/scim/v2/acme/Groups/readonly", sc, None, 200)
        .await;
    run.call("GET", t, "/scim/v2/acme/Groups/nope", sc, None, 404)
        .await;
    let add = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "add", "path": "members", "value": [{"value": sid}]}]});
    run.raw(
        "PATCH",
        t,
        "/scim/v2/acme/Groups/readonly",
        sc,
        scim_json,
        add.to_string().into_bytes(),
        &[],
        200,
    )
    .await;
    run.raw(
        "PATCH",
        t,
        "/scim/v2/acme/Groups/user",
        sc,
        scim_json,
        json!({"Operations": [{"op": "remove", "path": "members"}]})
            .to_string()
            .into_bytes(),
        &[],
        400,
    )
    .await;
    let members = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "readonly", "members": [{"value": sid}]});
    run.raw(
        "PUT",
        t,
        "/scim/v2/acme/Groups/readonly",
        sc,
        scim_json,
        members.to_string().into_bytes(),
        &[],
        200,
    )
    .await;
    run.raw(
        "PUT",
        t,
        "/scim/v2/acme/Groups/readonly",
        sc,
        scim_json,
        json!({"displayName": "admin"}).to_string().into_bytes(),
        &[],
        400,
    )
    .await;
    let t = "/scim/v2/{org}/Users/{id}";
    run.call("DELETE", t, &p, sc, None, 204).await;
    run.call("DELETE", t, &p, sc, None, 404).await;
    let t = "/v1/orgs/{org}/scim-credentials/{id}/revoke";
    let p = format!("/v1/orgs/acme/scim-credentials/{scim_id}/revoke");
    run.call("POST", t, &p, Some(&ada), None, 200).await;
    run.call("POST", t, &p, Some(&ada), None, 409).await;

    // Single sign-on: the connection (acme's own admin), and the sign-in's start against a
    // provider's discovery document served on loopback.
    let provider = discovery_server().await;
    let sso = json!({"issuer": provider.0, "client_id": "tessera", "client_secret": "s",
                     "domains": ["example.com"], "group_roles": [{"group": "g", "role": "admin"}]});
    let t = "/v1/orgs/{org}/sso";
    run.call("GET", t, "/v1/orgs/acme/sso", Some(&ada), None, 404)
        .await;
    run.call(
        "PUT",
        t,
        "/v1/orgs/acme/sso",
        Some(&ula),
        Some(sso.clone()),
        403,
    )
    .await;
    run.call("PUT", t, "/v1/orgs/acme/sso", Some(&ada), Some(sso), 200)
        .await;
    run.call("GET", t, "/v1/orgs/acme/sso", Some(&ada), None, 200)
        .await;
    // acme's claim of example.com routes sign-ins once the operator approved it.
    let t = "/v1/sso/domains";
    run.call("GET", t, "/v1/sso/domains", Some(&ada), None, 403)
        .await;
    run.call(
        "GET",
        t,
        "/v1/sso/domains?pending=true",
        Some(&root),
        None,
        200,
    )
    .await;
    let t = "/v1/sso/domains/{domain}/approve";
    let acme = json!({"org": "acme"});
    for (domain, who, want) in [
        ("example.com", &ada, 403),
        ("unclaimed.example", &root, 404),
        ("example.com", &root, 200),
    ] {
        let p = format!("/v1/sso/domains/{domain}/approve");
        run.call("POST", t, &p, Some(who), Some(acme.clone()), want)
            .await;
    }
    let t = "/v1/sso/start";
    let r = run
        .call(
            "GET",
            t,
            "/v1/sso/start?email=ana%40example.com",
            None,
            None,
            200,
        )
        .await;
    assert!(
        r.json()["authorize_url"]
            .as_str()
            .unwrap_or_default()
            .contains("code_challenge="),
        "{}",
        r.text()
    );
    run.call(
        "GET",
        t,
        "/v1/sso/start?email=ana%40nowhere.example",
        None,
        None,
        403,
    )
    .await;
    run.call("GET", t, "/v1/sso/start?email=nobody", None, None, 400)
        .await;
    let t = "/v1/sso/callback";
    run.call("GET", t, "/v1/sso/callback?code=c&state=s", None, None, 303)
        .await;
    let t = "/v1/sso/domains/{domain}/withdraw";
    let p = "/v1/sso/domains/example.com/withdraw";
    run.call("POST", t, p, Some(&ada), Some(acme.clone()), 403)
        .await;
    run.call("POST", t, p, Some(&root), Some(acme), 200).await;
    let t = "/v1/orgs/{org}/sso";
    run.call("DELETE", t, "/v1/orgs/acme/sso", Some(&ada), None, 200)
        .await;
    run.call("DELETE", t, "/v1/orgs/acme/sso", Some(&ada), None, 404)
        .await;
    provider.1.abort();

    // Revocations and the delete, last.
    // ned has the fixture's login token.
    let ned = w.uid("ned");
    let t = "/v1/tokens/revoke-all";
    let r = run
        .call("POST", t, t, Some(&ada), Some(json!({"user": ned})), 200)
        .await;
    assert_eq!(r.json()["revoked"], 1, "{}", r.text());
    run.call(
        "POST",
        t,
        t,
        Some(&ada),
        Some(json!({"user": "nobody"})),
        400,
    )
    .await;
    let t = "/v1/tokens/{id}/revoke";
    run.call("POST", t, &tok("/revoke"), Some(&ada), None, 200)
        .await;
    run.call("POST", t, &tok("/revoke"), Some(&ada), None, 409)
        .await;
    let t = "/v1/tokens/{id}";
    run.call("DELETE", t, &tok(""), Some(&ada), None, 200).await;
    run.call("DELETE", t, &tok(""), Some(&ula), None, 404).await;

    // First run (issue 24): on a router over an empty database of its own, the setup link
    // `tessera serve` issues creates the first organization once.
    let t = "/v1/setup";
    run.call("GET", t, t, None, None, 200).await;
    let (empty_store, _empty_db) = common::backend::world_store().await;
    let empty = tessera_control_plane::AppState::new(
        empty_store,
        tessera_control_plane::Config {
            base_url: common::BASE.into(),
            master: tessera_control_plane::crypto::MasterKey::generate().unwrap(),
            access_ttl: 1800,
        },
    );
    let (link, _) = empty.write(service::setup::issue).await.unwrap().unwrap();
    run.via = Some(tessera_control_plane::app(empty.clone()));
    run.call("GET", t, t, None, None, 200).await;
    let setup = |secret: &str| {
        Some(
            json!({"secret": secret, "org": "first", "username": "alice",
                    "password": "correct horse battery staple"}),
        )
    };
    run.call("POST", t, t, None, setup(&"ab".repeat(32)), 400)
        .await;
    let secret = link.rsplit('/').next().unwrap().to_string();
    run.call("POST", t, t, None, setup(&secret), 200).await;
    run.call("POST", t, t, None, setup(&secret), 409).await;
    run.via = None;

    // The per-address rate limit of public routes (as `tessera serve` sets it), on a
    // router of its own over the same state: past the burst, 429.
    run.via = Some(tessera_control_plane::app(w.state.clone().with_rate_limit(
        tessera_control_plane::api::limit::RateLimit {
            per_minute: 1,
            burst: 1,
        },
    )));
    run.call("GET", "/readyz", "/readyz", None, None, 200).await;
    run.call("GET", "/readyz", "/readyz", None, None, 429).await;
    let t = "/v1/sso/callback";
    run.call("GET", t, "/v1/sso/callback?code=c&state=s", None, None, 429)
        .await;
    run.via = None;

    let Run {
        seen,
        failures,
        answers,
        ..
    } = run;
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // Every documented operation answered a success, and an error when it documents one.
    for (method, path) in documented_operations(&raw) {
        let (ok, err) = seen
            .get(&(method.clone(), path.clone()))
            .copied()
            .unwrap_or_default();
        let responses = raw["paths"][&path][method.to_ascii_lowercase()]["responses"]
            .as_object()
            .unwrap();
        let documents_error = responses.keys().any(|s| s.starts_with('4'));
        assert!(ok > 0, "{method} {path}: no success answer was checked");
        assert!(
            err > 0 || !documents_error,
            "{method} {path}: no error answer was checked"
        );
    }
    assert!(answers >= 2 * routes().len(), "{answers}");
}

#[tokio::test]
async fn a_response_that_does_not_match_its_schema_is_caught() {
    let w = World::new().await;
    let raw = w.call("GET", "/openapi.json", None, None).await.json();
    let ada = w.jwt("ada");
    let org = w.call("GET", "/v1/orgs/acme", Some(&ada), None).await;
    let refused = w.call("GET", "/v1/orgs/acme", None, None).await;
    let doc = Doc::new(raw.clone());
    doc.check("GET", "/v1/orgs/{org}", &org).unwrap();
    doc.check("GET", "/v1/orgs/{org}", &refused).unwrap();

    // A view that says `root` is a string: the real `true` no longer matches.
    let mut mutated = raw.clone();
    mutated["components"]["schemas"]["OrgView"]["properties"]["root"] = json!({"type": "string"});
    let e = Doc::new(mutated)
        .check("GET", "/v1/orgs/{org}", &org)
        .unwrap_err();
    assert!(e.contains("does not match") && e.contains("/root"), "{e}");

    // An error body that requires a field the API does not send.
    let mut mutated = raw.clone();
    mutated["components"]["schemas"]["ErrorBody"]["required"] = json!(["error", "code"]);
    let e = Doc::new(mutated)
        .check("GET", "/v1/orgs/{org}", &refused)
        .unwrap_err();
    assert!(e.contains("does not match") && e.contains("code"), "{e}");

    // A status the route does not document, and a content type it does not.
    let mut mutated = raw.clone();
    mutated["paths"]["/v1/orgs/{org}"]["get"]["responses"]
        .as_object_mut()
        .unwrap()
        .remove("401");
    let e = Doc::new(mutated)
        .check("GET", "/v1/orgs/{org}", &refused)
        .unwrap_err();
    assert!(e.contains("not documented"), "{e}");
    let csv = w.call("GET", "/v1/tokens.csv", Some(&ada), None).await;
    let e = doc.check("GET", "/v1/tokens", &csv).unwrap_err();
    assert!(e.contains("content type"), "{e}");
}

#[tokio::test]
async fn the_document_names_real_statuses_types_and_security() {
    let w = World::new().await;
    let doc = w.call("GET", "/openapi.json", None, None).await.json();
    let responses = |method: &str, path: &str| -> Vec<String> {
        let mut v: Vec<String> = doc["paths"][path][method]["responses"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    };
    for path in [
        "/v1/orgs",
        "/v1/orgs/{org}/users",
        "/v1/orgs/{org}/edge-credentials",
        "/v1/tokens",
    ] {
        let r = responses("post", path);
        assert!(
            r.contains(&"201".to_string()) && !r.contains(&"200".to_string()),
            "{path}: {r:?}"
        );
    }
    assert!(responses("get", "/v1/orgs/{org}/status-list").contains(&"304".to_string()));
    let ok = |method: &str, path: &str, status: &str| -> Value {
        doc["paths"][path][method]["responses"][status]["content"].clone()
    };
    assert!(ok("get", "/v1/tokens.csv", "200")["text/csv"].is_object());
    assert!(ok("get", "/v1/orgs/{org}/jwks.json", "200")["application/jwk-set+json"].is_object());
    assert!(
        ok("get", "/v1/orgs/{org}/status-list", "200")["application/statuslist+jwt"].is_object()
    );
    assert_eq!(
        ok("get", "/v1/me", "401")["application/json"]["schema"]["$ref"],
        "#/components/schemas/ErrorBody"
    );
    let request = &doc["paths"]["/v1/auth/accesstoken"]["post"]["requestBody"]["content"];
    assert!(request["application/json"]["schema"]["$ref"].is_string());
    assert!(request["application/x-www-form-urlencoded"]["schema"]["$ref"].is_string());
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["tessera"]["scheme"], "bearer");
    assert_eq!(schemes["edge"]["scheme"], "bearer");
    assert_eq!(
        doc["paths"]["/v1/usage"]["post"]["security"],
        json!([{"edge": []}])
    );
    // Path and query parameters are typed.
    let params = doc["paths"]["/v1/tokens/{id}/auth-log"]["get"]["parameters"]
        .as_array()
        .unwrap();
    let by_name = |n: &str| params.iter().find(|p| p["name"] == n).unwrap().clone();
    assert_eq!(by_name("id")["in"], "path");
    assert_eq!(by_name("id")["required"], true);
    assert_eq!(by_name("per_page")["in"], "query");
    assert!(by_name("per_page")["schema"]["type"]
        .to_string()
        .contains("integer"));
    // A request timestamp is documented as what it accepts: a string (RFC 3339 or
    // YYYY-MM-DD) or Unix seconds.
    let ts = &doc["components"]["schemas"]["Timestamp"]["oneOf"];
    assert_eq!(ts.as_array().map(Vec::len), Some(2));
}

/// An OpenID provider's discovery document and (empty) key set on a loopback port: the
/// issuer, and the server's task (abort it when done).
async fn discovery_server() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let meta = json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/auth"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    });
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get(move || {
                let m = meta.clone();
                async move { axum::Json(m) }
            }),
        )
        .route(
            "/jwks",
            axum::routing::get(|| async { axum::Json(json!({"keys": []})) }),
        );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (issuer, task)
}

//! RFC 7662 introspection against real Envoy: a real control plane (`tessera serve`) and a
//! real Envoy whose filter syncs that control plane's keys and status list. Every token of
//! the table below goes through Envoy and through `POST /v1/introspect` (with an edge
//! credential of the org), and the two must decide alike: Envoy lets the request through
//! exactly when introspection says `active` and the token holds the route's scopes (what a
//! resource server applies to the answer's `scope`, as the filter's route rule does), and
//! Envoy's refusal reason is introspection's `reason`.
//!
//! Why this table and not `scenarios.rs`'s: every row there is a token signed by keys the
//! test generates (`ScenarioKeys`), with testkit's issuer and a status list written into
//! Envoy's configuration; the control plane verifies only with its orgs' own keys (made and
//! sealed inside it; no key is imported, by design) and its own status list, so every row
//! would be `key_unknown` there, and the RS256 rows have no counterpart (the control plane
//! signs with EdDSA and ES256). A third of the rows are about the request, not the token
//! (extraction from several headers and schemes, ambiguity, path normalisation, identity
//! headers), which introspection — one token in a form — never sees. So the table here is
//! made of the control plane's own tokens in every state it can give them, plus the
//! forgeries of the scenario table that need no private key (`alg: none`, HS256 keyed with
//! the org's public key, an altered signature, garbage), made with testkit's builders.
//! Expiry is left to `control-plane/tests/introspect.rs`, which moves a clock.
//!
//! Needs `TESSERA_ENVOY`, `TESSERA_FILTER_WASM` and `TESSERA_CP_BIN`.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tessera_host_tests::{
    control_plane_path, tools, ControlPlane, ControlPlaneOptions, EchoUpstream, Envoy,
    EnvoyOptions, Request, Response,
};
use tessera_testkit::{b64url_decode, now, TokenBuilder};

const CP_CLUSTER: &str = "tessera_control_plane";
/// The filter's route rule (`ControlPlane::filter_config`): `/admin` needs `admin`.
const ADMIN_PREFIX: &str = "/admin";
const ADMIN_SCOPE: &str = "admin";

/// A decision: `(allowed, refusal reason or "")`.
type Said = (bool, String);

fn envoy_says(envoy: &Envoy, token: &str, path: &str) -> Said {
    let r = envoy
        .send(&Request::get(path).bearer(token))
        .unwrap_or_else(|e| panic!("Envoy: {e}"));
    match (r.status, r.upstream(), r.reason()) {
        (200, Some(_), _) => (true, String::new()),
        (_, None, Some(reason)) => (false, reason),
        _ => panic!(
            "Envoy answered neither allow nor a refusal: {}",
            r.summary()
        ),
    }
}

fn introspect(cp: &ControlPlane, edge: &str, token: &str) -> Response {
    let body = format!("token={}&client_ip=127.0.0.1", percent_encode(token));
    Request::new("POST", "/v1/introspect")
        .header("host", &cp.addr().to_string())
        .header("content-type", "application/x-www-form-urlencoded")
        .bearer(edge)
        .body(body)
        .send(cp.addr())
        .unwrap_or_else(|e| panic!("introspect: {e}"))
}

/// What a resource server decides for `path` from the introspection answer: active and
/// holding the route's scopes, else introspection's reason (or `insufficient_scope`).
fn introspection_says(cp: &ControlPlane, edge: &str, token: &str, path: &str) -> Said {
    let r = introspect(cp, edge, token);
    assert_eq!(r.status, 200, "introspect: {}", r.text());
    let v = r.json().unwrap_or(Value::Null);
    if v["active"] != true {
        return (false, v["reason"].as_str().unwrap_or("").to_string());
    }
    let held = v["scope"].as_str().unwrap_or("");
    if path.starts_with(ADMIN_PREFIX) && !held.split(' ').any(|s| s == ADMIN_SCOPE) {
        return (false, "insufficient_scope".into());
    }
    (true, String::new())
}

/// Form-encodes a token (its characters are base64url, dots and the `tsr_` prefix, plus
/// whatever a garbage row holds).
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A signed-in session of a user from their one-time link: (cookie, CSRF token).
fn session_from_link(cp: &ControlPlane, link: &str) -> (String, String) {
    let secret = link.rsplit('/').next().unwrap_or_default();
    let r = Request::new("POST", "/v1/links/accept")
        .header("host", &cp.addr().to_string())
        .header("content-type", "application/json")
        .body(json!({"secret": secret, "password": "correct horse battery staple"}).to_string())
        .send(cp.addr())
        .unwrap();
    assert_eq!(r.status, 200, "accept: {}", r.text());
    let cookie = r
        .header("set-cookie")
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .to_string();
    let csrf = r.json().unwrap()["csrf"].as_str().unwrap().to_string();
    (cookie, csrf)
}

/// A token with `scopes` made and downloaded by the session's user: its JWT.
fn token_with_session(
    cp: &ControlPlane,
    (cookie, csrf): &(String, String),
    scopes: &[&str],
) -> String {
    let call = |path: &str, body: Value| {
        let r = Request::new("POST", path)
            .header("host", &cp.addr().to_string())
            .header("content-type", "application/json")
            .header("cookie", cookie)
            .header("x-csrf-token", csrf)
            .body(body.to_string())
            .send(cp.addr())
            .unwrap();
        assert!((200..300).contains(&r.status), "{path}: {}", r.text());
        r.json().unwrap()
    };
    let made = call("/v1/tokens", json!({"name": "mine", "scopes": scopes}));
    let id = made["id"].as_str().unwrap();
    call(&format!("/v1/tokens/{id}/download"), json!({}))["jwt"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn introspection_decides_as_envoy_on_every_token() {
    let (envoy_bin, wasm) = tools();
    let cp = ControlPlane::start(&ControlPlaneOptions::new(&control_plane_path()))
        .unwrap_or_else(|e| panic!("control plane: {e}"));
    let alice = cp.admin_token().to_string();
    let edge = cp.edge_credential(&alice, "resource-server").unwrap();
    let upstream = EchoUpstream::start().expect("echo upstream");
    let options = EnvoyOptions::new(&envoy_bin)
        .filter(&wasm, &cp.filter_config("closed", 30, None))
        .upstream(upstream.addr())
        .cluster(CP_CLUSTER, cp.addr())
        .sync_service(&cp.sync_service_config(CP_CLUSTER, 20))
        .concurrency(1);
    let envoy = Envoy::start(&options).unwrap_or_else(|e| panic!("envoy: {e}"));

    // The table: (name, token).
    let mut rows: Vec<(String, String)> = Vec::new();
    let mut add = |name: &str, token: String| rows.push((name.to_string(), token));
    add("admin's bootstrap token (every scope)", alice.clone());
    let bare = alice.strip_prefix("tsr_").unwrap_or(&alice).to_string();
    add("the same without its tsr_ prefix", bare);
    let (_, read_only) = cp
        .create_and_download(&alice, "read-only", &["read"])
        .unwrap();
    add("scope read only", read_only.clone());
    add("access token", cp.exchange(&read_only).unwrap());
    let (revoked_id, revoked) = cp
        .create_and_download(&alice, "revoked", &["read"])
        .unwrap();
    cp.revoke(&alice, &revoked_id).unwrap();
    add("revoked", revoked);
    let (disabled_id, disabled) = cp
        .create_and_download(&alice, "disabled", &["read"])
        .unwrap();
    cp.disable(&alice, &disabled_id).unwrap();
    add("disabled", disabled);
    let (regen_id, old) = cp.create_and_download(&alice, "regen", &["read"]).unwrap();
    let new = cp.regenerate(&alice, &regen_id).unwrap();
    add("regenerated: the old JWT", old);
    add("regenerated: the new JWT", new);
    for (name, cidr) in [
        ("IP filter holding the client", "127.0.0.1/32"),
        ("IP filter without the client", "10.0.0.0/8"),
    ] {
        let id = cp
            .create_token(
                &alice,
                &json!({"name": name, "scopes": ["read"], "ip_allow": [cidr]}),
            )
            .unwrap();
        add(name, cp.download(&alice, &id).unwrap());
    }
    // A token of another org (its first admin signs in through the link the root admin
    // receives, and makes one).
    cp.api(
        "POST",
        "/v1/orgs",
        Some(&alice),
        Some(&json!({"id": "globex"})),
    )
    .unwrap();
    let gus = cp
        .api(
            "POST",
            "/v1/orgs/globex/users",
            Some(&alice),
            Some(&json!({"username": "gus", "role": "admin"})),
        )
        .unwrap();
    let session = session_from_link(&cp, gus["link"]["url"].as_str().unwrap());
    add(
        "another org's token",
        token_with_session(&cp, &session, &[]),
    );
    // Forgeries of the scenario table that need no private key, naming the org's real kid.
    let jwks = cp
        .api(
            "GET",
            &format!("/v1/orgs/{}/jwks.json", cp.org()),
            None,
            None,
        )
        .unwrap();
    let key = &jwks["keys"][0];
    let kid = key["kid"].as_str().unwrap().to_string();
    let t = now();
    add(
        "alg none naming the org's kid",
        TokenBuilder::new(t).header("kid", kid.as_str()).unsigned(),
    );
    let public = b64url_decode(key["x"].as_str().unwrap()).unwrap();
    add(
        "HS256 keyed with the org's public key",
        TokenBuilder::new(t)
            .header("kid", kid.as_str())
            .sign_hs256(&public),
    );
    add(
        "signature altered",
        tessera_testkit::tamper_signature(&alice),
    );
    add("garbage", "not-a-jwt".into());
    add("three parts of garbage", "a.b.c".into());
    // bob (an admin) disabled: his tokens are suspended.
    let bob = cp.token_of("bob").unwrap().to_string();
    cp.api(
        "POST",
        &format!("/v1/users/{}/disable", cp.user_id_of("bob").unwrap()),
        Some(&alice),
        None,
    )
    .unwrap();
    add("its user disabled", bob);
    // A key rotation: a token of the new key (Envoy fetches the keys when it meets it).
    cp.rotate_key(&alice).unwrap();
    let (_, rotated) = cp
        .create_and_download(&alice, "new-key", &["read", "admin"])
        .unwrap();
    add("signed by the rotated key", rotated);
    // A grant withdrawn: carl (role user) loses `admin` from his live token, at Envoy and
    // here; the admins keep theirs.
    let carl = cp
        .api(
            "POST",
            &format!("/v1/orgs/{}/users", cp.org()),
            Some(&alice),
            Some(&json!({"username": "carl", "role": "user"})),
        )
        .unwrap();
    let carl = session_from_link(&cp, carl["link"]["url"].as_str().unwrap());
    add(
        "admin scope withdrawn after issue",
        token_with_session(&cp, &carl, &["read", ADMIN_SCOPE]),
    );
    cp.api(
        "POST",
        &format!("/v1/orgs/{}/scopes/{ADMIN_SCOPE}/withdraw", cp.org()),
        Some(&alice),
        Some(&json!({"role": "user"})),
    )
    .unwrap();

    // Envoy has every change once it refuses a token revoked after all of them (one list,
    // versions in order). A safety net, not a measurement: the bound is generous.
    let (sentinel_id, sentinel) = cp
        .create_and_download(&alice, "sentinel", &["read"])
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while envoy_says(&envoy, &sentinel, "/api/orders") != (true, String::new()) {
        assert!(
            Instant::now() < deadline,
            "Envoy never allowed the sentinel"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    cp.revoke(&alice, &sentinel_id).unwrap();
    while envoy_says(&envoy, &sentinel, "/api/orders") != (false, "revoked".into()) {
        assert!(
            Instant::now() < deadline,
            "Envoy never refused the sentinel"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let mut wrong = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (name, token) in &rows {
        for path in ["/api/orders", "/admin/users"] {
            let at_envoy = envoy_says(&envoy, token, path);
            let introspected = introspection_says(&cp, &edge, token, path);
            println!("{name} {path}: Envoy {at_envoy:?}, introspection {introspected:?}");
            seen.insert(at_envoy.clone());
            if at_envoy != introspected {
                wrong.push(format!(
                    "{name} {path}: Envoy {at_envoy:?}, introspection {introspected:?}"
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} rows differ:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    // The table reaches what it is for.
    for want in [
        (true, ""),
        (false, "revoked"),
        (false, "suspended"),
        (false, "ip_not_allowed"),
        (false, "key_unknown"),
        (false, "alg_not_allowed"),
        (false, "signature_invalid"),
        (false, "token_malformed"),
        (false, "insufficient_scope"),
    ] {
        assert!(
            seen.contains(&(want.0, want.1.to_string())),
            "no row was decided {want:?}: {seen:?}"
        );
    }
    // Unauthenticated: 401 with a challenge.
    let r = Request::new("POST", "/v1/introspect")
        .header("host", &cp.addr().to_string())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={}", percent_encode(&alice)))
        .send(cp.addr())
        .unwrap();
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"Bearer realm="tessera""#)
    );
}

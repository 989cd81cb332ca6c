//! The scenario table machinery shared by the scenario tests of both hosts: a [`Case`]
//! says what to send and what must come back; [`run_table`] sends every case to a
//! [`Target`] (Envoy or workerd: one checker, the host a parameter) and reports every
//! mismatch at once.

#![allow(dead_code)]

use std::fmt::Write as _;

use std::net::SocketAddr;

use serde_json::{json, Value};
use tessera_host_tests::workerd::Workerd;
use tessera_host_tests::{Envoy, Request};
use tessera_testkit::{
    jwks, tamper_signature, Alg, TestKey, TokenBuilder, DEFAULT_AUDIENCE, DEFAULT_ISSUER,
};

/// A host the scenario tables run against.
pub trait Target {
    /// Where to send a case, or `None` if this host has no such listener.
    fn addr(&self, via: Via) -> Option<SocketAddr>;
}

impl Target for Envoy {
    fn addr(&self, via: Via) -> Option<SocketAddr> {
        match via {
            Via::V4 => Some(Envoy::addr(self)),
            Via::V6 => self.addr_v6(),
        }
    }
}

impl Target for Workerd {
    fn addr(&self, via: Via) -> Option<SocketAddr> {
        match via {
            Via::V4 => Some(Workerd::addr(self)),
            Via::V6 => None,
        }
    }
}

/// `WWW-Authenticate` expectations.
#[derive(Clone, Debug)]
pub enum Www {
    /// Exactly this value, once.
    Exact(String),
    /// Absent, or present without an `error` parameter.
    NoErrorParam,
    /// Not checked.
    Ignore,
}

impl Www {
    /// `Bearer realm="tessera"` (no error: no credentials were sent).
    pub fn challenge() -> Www {
        Www::Exact(r#"Bearer realm="tessera""#.into())
    }

    /// `Bearer realm="tessera", error="<error>"`.
    pub fn error(error: &str) -> Www {
        Www::Exact(format!(r#"Bearer realm="tessera", error="{error}""#))
    }

    /// `Bearer realm="tessera", error="invalid_token"`.
    pub fn invalid_token() -> Www {
        Www::error("invalid_token")
    }

    /// `Bearer realm="tessera", error="insufficient_scope", scope="<scope>"`.
    pub fn insufficient_scope(scope: &str) -> Www {
        Www::Exact(format!(
            r#"Bearer realm="tessera", error="insufficient_scope", scope="{scope}""#
        ))
    }
}

/// Which listener a case is sent to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    V4,
    V6,
}

/// One row of a scenario table.
#[derive(Clone, Debug)]
pub struct Case {
    pub name: String,
    pub request: Request,
    pub via: Via,
    pub status: u16,
    /// `None`: the request must be allowed and reach the upstream.
    pub reason: Option<&'static str>,
    pub www: Www,
    /// Request headers the upstream must have received with exactly these values (an
    /// empty list: the header must not have reached it).
    pub upstream: Vec<(&'static str, Vec<String>)>,
}

/// The identity the default test token carries.
pub const ALICE: [&str; 4] = ["alice", "acme", "tok_1", "read"];

impl Case {
    /// An allowed request whose upstream must see `identity` = `[user, org, token_id,
    /// scopes]` in the default identity headers, each exactly once.
    pub fn allow(name: &str, request: Request, identity: [&str; 4]) -> Case {
        let names = [
            "x-tessera-user",
            "x-tessera-org",
            "x-tessera-token-id",
            "x-tessera-scopes",
        ];
        Case {
            name: name.to_owned(),
            request,
            via: Via::V4,
            status: 200,
            reason: None,
            www: Www::Ignore,
            upstream: names
                .iter()
                .zip(identity)
                .map(|(n, v)| (*n, vec![v.to_owned()]))
                .collect(),
        }
    }

    /// A denied request.
    pub fn deny(name: &str, request: Request, status: u16, reason: &'static str, www: Www) -> Case {
        Case {
            name: name.to_owned(),
            request,
            via: Via::V4,
            status,
            reason: Some(reason),
            www,
            upstream: Vec::new(),
        }
    }

    /// `401 <reason>` with `error="invalid_token"`.
    pub fn invalid(name: &str, request: Request, reason: &'static str) -> Case {
        Case::deny(name, request, 401, reason, Www::invalid_token())
    }

    /// Also requires the upstream to have received `header` with exactly `values`.
    pub fn upstream(mut self, header: &'static str, values: &[&str]) -> Case {
        self.upstream.retain(|(h, _)| *h != header);
        self.upstream
            .push((header, values.iter().map(|v| (*v).to_owned()).collect()));
        self
    }

    /// Sends the case to the IPv6 listener.
    pub fn via(mut self, via: Via) -> Case {
        self.via = via;
        self
    }
}

/// What the filter decided for one request, as seen from outside: `Allow` (the request
/// reached the upstream) or `Deny(reason)` from the deny body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Allow,
    Deny(String),
    Other,
}

/// Sends one case and compares. Returns what happened, and `Err` describing every
/// mismatch.
pub fn check(host: &impl Target, case: &Case) -> (Outcome, Result<(), String>) {
    let (outcome, result) = check_inner(host, case);
    (outcome.unwrap_or(Outcome::Other), result)
}

fn check_inner(host: &impl Target, case: &Case) -> (Option<Outcome>, Result<(), String>) {
    let Some(to) = host.addr(case.via) else {
        return (
            None,
            Err(format!("this host has no {:?} listener", case.via)),
        );
    };
    let resp = match case.request.send(to) {
        Ok(r) => r,
        Err(e) => return (None, Err(format!("request failed: {e}"))),
    };
    let outcome = match (resp.upstream(), resp.reason()) {
        (Some(_), _) => Some(Outcome::Allow),
        (None, Some(reason)) => Some(Outcome::Deny(reason)),
        _ => None,
    };
    let mut problems = Vec::new();
    if resp.status != case.status {
        problems.push(format!("status {} (want {})", resp.status, case.status));
    }
    match case.reason {
        Some(reason) => {
            if resp.upstream().is_some() {
                problems.push("the request reached the upstream".into());
            }
            // The body is exactly {"error": <code>, "reason": <reason>}.
            let want_body = json!({"error": resp.error(), "reason": reason});
            if resp.json() != Some(want_body) || resp.error().is_none() {
                problems.push(format!("body {:?} (want reason {reason:?})", resp.text()));
            }
            if resp.header("content-type") != Some("application/json") {
                problems.push(format!(
                    "content-type {:?} (want application/json)",
                    resp.header("content-type")
                ));
            }
            if resp.header("cache-control") != Some("no-store") {
                problems.push(format!(
                    "cache-control {:?} (want no-store)",
                    resp.header("cache-control")
                ));
            }
        }
        None => {
            if resp.upstream().is_none() {
                problems.push("the request did not reach the upstream".into());
            }
        }
    }
    let www = resp.header_all("www-authenticate");
    match &case.www {
        Www::Exact(want) => {
            if www != [want.as_str()] {
                problems.push(format!("www-authenticate {www:?} (want [{want:?}])"));
            }
        }
        Www::NoErrorParam => {
            if www.iter().any(|v| v.contains("error=")) {
                problems.push(format!(
                    "www-authenticate {www:?} (want no error parameter)"
                ));
            }
        }
        Www::Ignore => {}
    }
    for (header, want) in &case.upstream {
        let got = resp.upstream_header(header);
        if &got != want {
            problems.push(format!("upstream {header}: {got:?} (want {want:?})"));
        }
    }
    let result = if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{} | got: {}", problems.join("; "), resp.summary()))
    };
    (outcome, result)
}

/// Runs every case, prints one line per case and returns one line per failed case and
/// the outcome of every request.
pub fn run_table(label: &str, host: &impl Target, cases: &[Case]) -> (Vec<String>, Vec<Outcome>) {
    let mut failed = Vec::new();
    let mut outcomes = Vec::new();
    for case in cases {
        let (outcome, result) = check(host, case);
        outcomes.push(outcome);
        match result {
            Ok(()) => println!("[{label}] ok   {}", case.name),
            Err(e) => {
                println!("[{label}] FAIL {}: {e}", case.name);
                failed.push(format!("[{label}] {}: {e}", case.name));
            }
        }
    }
    println!(
        "[{label}] {} of {} scenarios as expected",
        cases.len() - failed.len(),
        cases.len()
    );
    (failed, outcomes)
}

/// Panics listing `failures` (if any).
pub fn finish(failures: &[String]) {
    if !failures.is_empty() {
        let mut msg = format!("{} check(s) failed:\n", failures.len());
        for f in failures {
            let _ = writeln!(msg, "  - {f}");
        }
        panic!("{msg}");
    }
}

/// The keys the scenario tables sign with.
pub struct ScenarioKeys {
    /// EdDSA, kid `ed-1`: signs the default tokens.
    pub ed: TestKey,
    /// ES256, kid `es-1`.
    pub es: TestKey,
    /// RS256, kid `rs-1`.
    pub rs: TestKey,
    /// A different key with `ed`'s kid (the wrong key).
    pub impostor: TestKey,
    /// A key whose kid the verifier does not know.
    pub ghost: TestKey,
}

impl ScenarioKeys {
    /// Fresh keys.
    pub fn generate() -> ScenarioKeys {
        ScenarioKeys {
            ed: TestKey::generate(Alg::EdDSA, "ed-1"),
            es: TestKey::generate(Alg::ES256, "es-1"),
            rs: TestKey::generate(Alg::RS256, "rs-1"),
            impostor: TestKey::generate(Alg::EdDSA, "ed-1"),
            ghost: TestKey::generate(Alg::EdDSA, "ghost"),
        }
    }

    /// The configuration both hosts run the table with: these keys, `Bearer`/`Token`
    /// schemes and `csp-auth-token`, `/admin` needing scope `admin`, and `lists`.
    pub fn config(&self, lists: Value) -> Value {
        json!({
            "issuers": [DEFAULT_ISSUER],
            "audiences": [DEFAULT_AUDIENCE],
            "jwks": jwks(&[&self.ed, &self.es, &self.rs]),
            "token_sources": [
                {"header": "authorization", "schemes": ["Bearer", "Token"]},
                {"header": "csp-auth-token"}
            ],
            "routes": [{"path_prefix": "/admin", "scopes": ["admin"]}],
            "status": {"lists": lists},
        })
    }
}

/// A non-default `identity_headers`: the user id off, the username on under `X-Who`, the
/// org renamed `x-tenant`, the token id as it was, the scopes off under `x-perm`.
pub fn configured_identity_headers() -> Value {
    json!({"user": false, "username": "X-Who", "org": "x-tenant",
           "scopes": {"header": "x-perm", "send": false}})
}

/// The cases both hosts answer under [`configured_identity_headers`] (tokens signed with
/// `key` at `t`): exactly the sent headers reach the upstream, with the token's values,
/// whatever the client sent under any identity header's name, sent or not; a token without
/// `preferred_username` sends no username, and the client's copy is still removed.
pub fn configured_identity_cases(t: u64, key: &TestKey) -> Vec<Case> {
    let named = TokenBuilder::new(t)
        .claim("preferred_username", json!("alice.smith"))
        .sign(key);
    let unnamed = TokenBuilder::new(t).sign(key);
    let spoofed = |token: &str| {
        Request::get("/api/things")
            .bearer(token)
            .header("x-tessera-user", "mallory")
            .header("x-who", "mallory")
            .header("X-Who", "eve")
            .header("x-tenant", "evil")
            .header("x-tessera-token-id", "tok_evil")
            .header("x-perm", "admin")
    };
    // Every identity name, and the default names no longer in use: exactly these values.
    let exact = |name: &str, request: Request, who: &[&str]| {
        let mut case = Case::allow(name, request, ALICE);
        case.upstream.clear();
        case.upstream("x-who", who)
            .upstream("x-tenant", &["acme"])
            .upstream("x-tessera-token-id", &["tok_1"])
            .upstream("x-tessera-user", &[])
            .upstream("x-perm", &[])
            .upstream("x-tessera-username", &[])
            .upstream("x-tessera-org", &[])
            .upstream("x-tessera-scopes", &[])
    };
    vec![
        exact(
            "configured identity headers: username on, user id and scopes off, org renamed",
            Request::get("/api/things").bearer(&named),
            &["alice.smith"],
        ),
        exact(
            "configured identity headers: every client copy replaced or removed",
            spoofed(&named),
            &["alice.smith"],
        ),
        exact(
            "configured identity headers: a token without a username sends none",
            spoofed(&unnamed),
            &[],
        ),
    ]
}

/// The scenario table both hosts must answer alike (at time `t`, with `ScenarioKeys::config`);
/// each host's test adds only the cases about its own client address.
pub fn scenario_table(t: u64, keys: &ScenarioKeys) -> Vec<Case> {
    let ScenarioKeys {
        ed,
        es,
        rs,
        impostor,
        ghost,
    } = keys;
    let tok = |b: TokenBuilder| b.sign(ed);
    let valid = tok(TokenBuilder::new(t));
    let other_valid = tok(TokenBuilder::new(t).claim("jti", "tok_other"));
    let get = |path: &str| Request::get(path);
    let bearer = |token: &str| get("/api/things").bearer(token);

    vec![
        // --- allowed, one per algorithm, identity headers as documented ---
        Case::allow("valid EdDSA token", bearer(&valid), ALICE)
            .upstream("authorization", &[&format!("Bearer {valid}")]),
        Case::allow(
            "valid ES256 token",
            bearer(&TokenBuilder::new(t).sign(es)),
            ALICE,
        ),
        Case::allow(
            "valid RS256 token",
            bearer(&TokenBuilder::new(t).sign(rs)),
            ALICE,
        ),
        Case::allow(
            "identity headers follow the claims",
            bearer(&tok(TokenBuilder::new(t)
                .claim("sub", "bob")
                .claim("org", "globex")
                .claim("jti", "tok_42")
                .claim("scope", "read write"))),
            ["bob", "globex", "tok_42", "read write"],
        ),
        Case::allow(
            "Authorization: Token scheme",
            get("/api/things").header("authorization", &format!("Token {valid}")),
            ALICE,
        ),
        Case::allow(
            "custom header source csp-auth-token",
            get("/api/things").header("csp-auth-token", &valid),
            ALICE,
        ),
        Case::allow(
            "same token in two sources is not ambiguous",
            bearer(&valid).header("csp-auth-token", &valid),
            ALICE,
        ),
        Case::allow(
            "spoofed identity headers are replaced",
            bearer(&valid)
                .header("x-tessera-user", "mallory")
                .header("x-tessera-user", "eve")
                .header("X-Tessera-Org", "evil")
                .header("x-tessera-token-id", "forged")
                .header("x-tessera-scopes", "admin"),
            ALICE,
        ),
        Case::allow(
            "scoped route with the scope",
            Request::new("POST", "/admin/users")
                .bearer(&tok(TokenBuilder::new(t).claim("scope", "read admin"))),
            ["alice", "acme", "tok_1", "read admin"],
        ),
        Case::allow(
            "path prefix matches whole segments only",
            get("/administrator").bearer(&valid),
            ALICE,
        ),
        // --- token extraction ---
        Case::deny(
            "no token",
            get("/api/things"),
            401,
            "token_missing",
            Www::challenge(),
        ),
        Case::deny(
            "unlisted scheme counts as no token",
            get("/api/things").header("authorization", "Basic YWxpY2U6c2VjcmV0"),
            401,
            "token_missing",
            Www::challenge(),
        ),
        Case::deny(
            "two different tokens in two sources",
            bearer(&valid).header("csp-auth-token", &other_valid),
            400,
            "token_ambiguous",
            Www::error("invalid_request"),
        ),
        // --- 401 invalid_token, one per reason ---
        Case::invalid("malformed token", bearer("not-a-jwt"), "token_malformed"),
        Case::invalid(
            "malformed: three parts of garbage",
            bearer("a.b.c"),
            "token_malformed",
        ),
        Case::invalid(
            "signature bytes altered",
            bearer(&tamper_signature(&valid)),
            "signature_invalid",
        ),
        Case::invalid(
            "signed by another key with a configured kid",
            bearer(&TokenBuilder::new(t).sign(impostor)),
            "signature_invalid",
        ),
        Case::invalid(
            "unknown kid",
            bearer(&TokenBuilder::new(t).sign(ghost)),
            "key_unknown",
        ),
        Case::invalid(
            "alg none",
            bearer(&TokenBuilder::new(t).header("kid", ed.kid()).unsigned()),
            "alg_not_allowed",
        ),
        Case::invalid(
            "HS256 keyed with the Ed25519 public key, real kid",
            bearer(
                &TokenBuilder::new(t)
                    .header("kid", ed.kid())
                    .sign_hs256(&ed.public_key_bytes()),
            ),
            "alg_not_allowed",
        ),
        Case::invalid(
            "HS256 keyed with the RSA public key, real kid",
            bearer(
                &TokenBuilder::new(t)
                    .header("kid", rs.kid())
                    .sign_hs256(&rs.public_key_bytes()),
            ),
            "alg_not_allowed",
        ),
        Case::invalid(
            "ES256 token naming the EdDSA key's kid",
            bearer(&TokenBuilder::new(t).header("kid", ed.kid()).sign(es)),
            "alg_not_allowed",
        ),
        Case::invalid(
            "expired",
            bearer(&tok(TokenBuilder::new(t - 7200))),
            "expired",
        ),
        Case::invalid(
            "nbf in the future",
            bearer(&tok(TokenBuilder::new(t).claim("nbf", t + 1800))),
            "not_yet_valid",
        ),
        Case::invalid(
            "wrong issuer",
            bearer(&tok(
                TokenBuilder::new(t).claim("iss", "https://evil.test/v1/orgs/acme")
            )),
            "issuer_mismatch",
        ),
        Case::invalid(
            "wrong audience",
            bearer(&tok(TokenBuilder::new(t).claim("aud", "someone-else"))),
            "audience_mismatch",
        ),
        Case::invalid(
            "token larger than 8192 bytes",
            bearer(&tok(TokenBuilder::new(t).claim("pad", "x".repeat(9000)))),
            "token_too_large",
        ),
        Case::invalid(
            "exp missing",
            bearer(&tok(TokenBuilder::new(t).remove_claim("exp"))),
            "claim_missing",
        ),
        Case::invalid(
            "revoked in the status list",
            bearer(&tok(TokenBuilder::new(t).status_idx(1))),
            "revoked",
        ),
        Case::invalid(
            "suspended in the status list",
            bearer(&tok(TokenBuilder::new(t).status_idx(2))),
            "suspended",
        ),
        Case::deny(
            "status index beyond the list (fail closed)",
            bearer(&tok(TokenBuilder::new(t).status_idx(1000))),
            503,
            "status_unavailable",
            Www::NoErrorParam,
        ),
        // --- scopes ---
        Case::deny(
            "scoped route without the scope",
            Request::new("POST", "/admin/users").bearer(&valid),
            403,
            "insufficient_scope",
            Www::insufficient_scope("admin"),
        ),
        Case::deny(
            "dot segments cannot sidestep a route rule",
            get("/public/../admin/users").bearer(&valid),
            403,
            "insufficient_scope",
            Www::insufficient_scope("admin"),
        ),
        Case::deny(
            "doubled slashes cannot sidestep a route rule",
            get("//admin//users").bearer(&valid),
            403,
            "insufficient_scope",
            Www::insufficient_scope("admin"),
        ),
        Case::allow(
            "access token (typ at+jwt) exchanged from an API token",
            bearer(&tok(TokenBuilder::access_token(t, "tok_1"))),
            ["alice", "acme", "at_1", "read"],
        ),
        Case::allow(
            "typ compared case-insensitively, application/ prefix ignored",
            bearer(&tok(
                TokenBuilder::new(t).header("typ", "application/Tessera-API+JWT")
            )),
            ALICE,
        ),
        Case::allow(
            "same token in two Authorization headers is not ambiguous",
            bearer(&valid).bearer(&valid),
            ALICE,
        ),
        Case::deny(
            "two different csp-auth-token headers",
            get("/api/things")
                .header("csp-auth-token", &valid)
                .header("csp-auth-token", &other_valid),
            400,
            "token_ambiguous",
            Www::error("invalid_request"),
        ),
        Case::deny(
            // Envoy joins repeated Authorization headers into one value with ","
            // ("Bearer A,Bearer B"): the filter sees a single, comma-separated value.
            "two different Authorization headers",
            bearer(&valid).bearer(&other_valid),
            400,
            "token_ambiguous",
            Www::error("invalid_request"),
        ),
        Case::invalid(
            "status claim missing (status.required defaults to true)",
            bearer(&tok(TokenBuilder::new(t).remove_claim("status"))),
            "claim_missing",
        ),
        Case::invalid(
            "crit header",
            bearer(&tok(TokenBuilder::new(t).header("crit", json!(["exp"])))),
            "crit_unsupported",
        ),
        Case::invalid(
            "typ JWT is not a Tessera token type",
            bearer(&tok(TokenBuilder::new(t).header("typ", "JWT"))),
            "type_mismatch",
        ),
        Case::invalid(
            "iat in the future",
            bearer(&tok(TokenBuilder::new(t)
                .claim("iat", t + 1800)
                .remove_claim("nbf"))),
            "issued_in_future",
        ),
        Case::invalid(
            "lifetime over the 400-day maximum",
            bearer(&tok(TokenBuilder::new(t).claim("exp", t + 401 * 86_400))),
            "lifetime_too_long",
        ),
        Case::allow(
            "non-ASCII claims reach the origin as UTF-8",
            bearer(&tok(TokenBuilder::new(t).claim("sub", "b\u{f8}b \u{2603}"))),
            ["b\u{f8}b \u{2603}", "acme", "tok_1", "read"],
        ),
        Case::deny(
            "percent-encoded letters cannot sidestep a route rule",
            get("/%61dmin/users").bearer(&valid),
            403,
            "insufficient_scope",
            Www::insufficient_scope("admin"),
        ),
        Case::deny(
            "encoded dot segments cannot sidestep a route rule",
            get("/public/%2e%2e/admin/users").bearer(&valid),
            403,
            "insufficient_scope",
            Www::insufficient_scope("admin"),
        ),
    ]
}

//! What the fuzz targets share: the verifier they attack (keys generated at run time by
//! testkit), one `run_*` function per target, and the seed corpora, made by code
//! (`seeds` binary, run by `cargo xtask fuzz` before each run).
//!
//! A target panics only when core (or the control plane's input types) breaks a rule:
//! a panic inside core, or the two signature paths (`check`, and `begin` + the host's
//! verdict + `finish`) giving different decisions for the same request.

use std::cell::RefCell;
use std::sync::OnceLock;

use serde_json::{json, Value};
use tessera_core::extract;
use tessera_core::ip;
use tessera_core::{Request, StatusList, Step, TokenCache, Verifier};
use tessera_testkit::{
    Alg, TestKey, TokenBuilder, DEFAULT_AUDIENCE, DEFAULT_ISSUER, DEFAULT_STATUS_URI,
};

/// The time every target checks at, and every seed token is minted for.
pub const NOW: u64 = 1_800_000_000;

/// The verifier's keys, one per algorithm, with fixed `kid`s. Seed tokens are minted with
/// keys generated in another process, so their signatures fail here, but their `kid` and
/// `alg` match: the host path with a "valid" verdict then reaches every claim check.
pub struct Fixture {
    /// `ed`: Ed25519.
    pub ed: TestKey,
    /// `es`: P-256.
    pub es: TestKey,
    /// `rs`: RSA 2048.
    pub rs: TestKey,
    /// The verifier built from [`config_json`] with these keys.
    pub verifier: Verifier,
}

/// The keys and the verifier, made once per process.
pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let ed = TestKey::generate(Alg::EdDSA, "ed");
        let es = TestKey::generate(Alg::ES256, "es");
        let rs = TestKey::generate(Alg::RS256, "rs");
        let config = config_json(&[&ed, &es, &rs]);
        let verifier = match Verifier::from_config_json(&config.to_string()) {
            Ok(v) => v,
            Err(e) => panic!("the fuzz configuration is refused: {e}"),
        };
        Fixture {
            ed,
            es,
            rs,
            verifier,
        }
    })
}

/// A configuration that uses every part of core: three token sources, routes with scopes,
/// a status list (index 0 valid, 1 revoked, 2 suspended, 3 reserved), the client address
/// from X-Forwarded-For, both token types.
pub fn config_json(keys: &[&TestKey]) -> Value {
    json!({
        "issuers": [DEFAULT_ISSUER],
        "audiences": [DEFAULT_AUDIENCE, "other"],
        "jwks": tessera_testkit::jwks(keys),
        "token_types": ["tessera-api+jwt", "at+jwt"],
        "token_sources": [
            {"header": "authorization", "schemes": ["Bearer", "Token"]},
            {"header": "csp-auth-token"}
        ],
        "client_ip": {"source": "x_forwarded_for", "trusted_hops": 1},
        "routes": [
            {"path_prefix": "/admin", "methods": ["POST", "DELETE"], "scopes": ["admin:write"]},
            {"path_prefix": "/admin", "scopes": ["admin:read"]}
        ],
        "clock_skew_secs": 30,
        "status": {
            "fail_policy": "closed",
            "lists": [tessera_testkit::status_list_json(DEFAULT_STATUS_URI, &[0, 1, 2, 3, 0, 0, 0, 0])]
        },
        "realm": "fuzz"
    })
}

/// Runs one request through both signature paths; panics when they disagree.
fn both_paths(verifier: &Verifier, req: &Request<'_>) {
    let pure = verifier.check(req, NOW, None);
    let hosted = match verifier.begin(req, NOW, None) {
        Step::Done(o) => o,
        Step::Verify(p) => {
            let ok = verifier.verify_signature(&p);
            verifier.finish(p, ok, req, NOW, None)
        }
    };
    if pure.decision != hosted.decision {
        panic!(
            "the signature paths disagree: check {:?}, begin/finish {:?}",
            pure.decision, hosted.decision
        );
    }
}

thread_local! {
    static CACHE: RefCell<Option<TokenCache>> = const { RefCell::new(None) };
}

/// The token text of a `token` input: with a NUL byte, the input is `header NUL payload
/// [NUL signature]` in raw bytes and is encoded here, so the fuzzer mutates the JSON itself
/// rather than its base64; without one, it is the token text as sent.
pub fn token_text(data: &[u8]) -> String {
    let mut parts = data.splitn(3, |b| *b == 0);
    match (parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(p), sig) => format!(
            "{}.{}.{}",
            tessera_testkit::b64url(h),
            tessera_testkit::b64url(p),
            tessera_testkit::b64url(sig.unwrap_or_default())
        ),
        _ => String::from_utf8_lossy(data).into_owned(),
    }
}

/// `token` target: the input is a token ([`token_text`]). Both signature paths must agree;
/// then the host path is given a "valid" verdict, so the claim checks see every payload;
/// then the cached path runs (the cache must never change a decision about a token it holds).
pub fn run_token(data: &[u8]) {
    let f = fixture();
    let text = token_text(data);
    for (method, path) in [("GET", "/api"), ("POST", "/admin/users")] {
        let headers = vec![
            ("authorization".to_string(), format!("Bearer {text}")),
            ("x-forwarded-for".to_string(), "10.1.2.3".to_string()),
        ];
        let req = Request {
            method,
            path,
            headers: &headers,
            source_address: Some("127.0.0.1:4000"),
        };
        both_paths(&f.verifier, &req);
        if let Step::Verify(p) = f.verifier.begin(&req, NOW, None) {
            let forged = f.verifier.finish(p, true, &req, NOW, None);
            // A token accepted on a forged verdict is cached; the cache must then answer
            // exactly what an uncached forged check answers.
            CACHE.with(|c| {
                let mut c = c.borrow_mut();
                let cache = c.get_or_insert_with(|| f.verifier.new_cache());
                if let Step::Verify(p) = f.verifier.begin(&req, NOW, Some(cache)) {
                    let again = f.verifier.finish(p, true, &req, NOW, Some(cache));
                    let hit = f.verifier.check(&req, NOW, Some(cache));
                    if again.decision != forged.decision
                        || (again.subject.is_some() && hit.decision != forged.decision)
                    {
                        panic!(
                            "the cache changed a decision: {:?} then {:?}",
                            forged.decision, hit.decision
                        );
                    }
                }
            });
        }
    }
}

/// `config` target: the input is a configuration document.
pub fn run_config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(v) = Verifier::from_config_json(text) {
            // An accepted configuration must be usable at once.
            let headers = vec![("authorization".to_string(), "Bearer a.b.c".to_string())];
            let req = Request {
                method: "GET",
                path: "/",
                headers: &headers,
                source_address: Some("[::1]:1"),
            };
            let _ = v.check(&req, NOW, Some(&mut v.new_cache()));
        }
    }
}

/// `status_list` target: the input is the zlib stream (base64url-encoded here, as `lst`
/// carries it). A list that decodes must read at every index and survive a round trip.
pub fn run_status_list(data: &[u8]) {
    let lst = tessera_testkit::b64url(data);
    if let Ok(list) = StatusList::from_lst(&lst) {
        let n = list.len() as u64;
        for idx in [0, 1, n / 2, n.saturating_sub(1), n, n + 1, u64::MAX] {
            let got = list.get(idx);
            if (idx < n) != got.is_some() {
                panic!("index {idx} of a {n}-entry list gave {got:?}");
            }
        }
        match StatusList::from_lst(&list.to_lst()) {
            Ok(again) if again == list => {}
            other => panic!("a decoded list does not survive re-encoding: {other:?}"),
        }
    }
}

/// `headers` target: the input is a header block (`name: value` lines) whose first line is
/// the peer address. Extraction and the client address must decide; the verifier too.
pub fn run_headers(data: &[u8]) {
    let f = fixture();
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let peer = lines.next().unwrap_or_default();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    let sources = &f.verifier.config().token_sources;
    let _ = extract::extract(sources, &headers);
    let xff: Vec<&str> = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("x-forwarded-for"))
        .map(|(_, v)| v.as_str())
        .collect();
    for source in [
        tessera_core::config::ClientIpSource::Peer,
        tessera_core::config::ClientIpSource::XForwardedFor { trusted_hops: 1 },
        tessera_core::config::ClientIpSource::XForwardedFor { trusted_hops: 3 },
    ] {
        let _ = ip::client_address(source, Some(peer), &xff);
    }
    for value in headers.iter().map(|(_, v)| v) {
        let _ = ip::Cidr::parse(value.trim());
    }
    let req = Request {
        method: "GET",
        path: "/admin",
        headers: &headers,
        source_address: Some(peer),
    };
    both_paths(&f.verifier, &req);
}

/// Seed tokens: valid ones for each key and kind, and the hostile shapes testkit makes.
pub fn token_seeds() -> Vec<Vec<u8>> {
    let ed = TestKey::generate(Alg::EdDSA, "ed");
    let es = TestKey::generate(Alg::ES256, "es");
    let rs = TestKey::generate(Alg::RS256, "rs");
    let base = TokenBuilder::new(NOW);
    let mut tokens = vec![
        base.sign(&ed),
        base.sign(&es),
        base.sign(&rs),
        TokenBuilder::access_token(NOW, "tok_1").sign(&ed),
        base.clone()
            .claim("scope", "admin:read admin:write")
            .sign(&ed),
        base.clone()
            .claim("ip_allow", json!(["10.0.0.0/8", "2001:db8::/32"]))
            .sign(&ed),
        base.clone()
            .claim("aud", json!(["x", DEFAULT_AUDIENCE]))
            .sign(&ed),
        base.clone().status_idx(1).sign(&ed),
        base.clone().status_idx(2).sign(&ed),
        base.clone().status_idx(99).sign(&ed),
        base.clone().claim("exp", NOW - 10).sign(&ed),
        base.clone().claim("nbf", NOW + 600).sign(&ed),
        base.clone().remove_claim("iat").sign(&ed),
        base.clone().header("crit", json!(["exp"])).sign(&ed),
        base.clone().header("cty", "JWT").sign(&ed),
        base.unsigned(),
        base.clone()
            .header("kid", "ed")
            .sign_hs256(&ed.public_key_bytes()),
    ];
    tokens.push(tessera_testkit::tamper_signature(&tokens[0]));
    // The same tokens in the raw form (`header NUL payload NUL signature`).
    let raw: Vec<Vec<u8>> = tokens
        .iter()
        .filter_map(|t| {
            let parts: Vec<Vec<u8>> = t
                .split('.')
                .map(tessera_testkit::b64url_decode)
                .collect::<Option<_>>()?;
            Some(parts.join(&0u8))
        })
        .collect();
    tokens
        .into_iter()
        .map(String::into_bytes)
        .chain(raw)
        .collect()
}

/// Seed configurations.
pub fn config_seeds() -> Vec<Vec<u8>> {
    let ed = TestKey::generate(Alg::EdDSA, "ed");
    let es = TestKey::generate(Alg::ES256, "es");
    let rs = TestKey::generate(Alg::RS256, "rs");
    let full = config_json(&[&ed, &es, &rs]);
    let minimal = json!({
        "issuers": [DEFAULT_ISSUER],
        "audiences": [DEFAULT_AUDIENCE],
        "jwks": tessera_testkit::jwks(&[&ed]),
    });
    let synced = json!({
        "issuers": [DEFAULT_ISSUER],
        "audiences": [DEFAULT_AUDIENCE],
        "status": {"required": false, "fail_policy": "open"},
        "sync": {"max_staleness_secs": 60},
        "identity_headers": {"user": "x-u", "org": "x-o", "token_id": "x-t", "scopes": "x-s"},
        "forward_token": false,
        "cache_size": 16,
        "max_token_bytes": 4096,
        "max_lifetime_secs": 86400,
    });
    [full, minimal, synced]
        .iter()
        .map(|v| v.to_string().into_bytes())
        .collect()
}

/// Seed status lists: the zlib streams of a few lists.
pub fn status_list_seeds() -> Vec<Vec<u8>> {
    let lists: [Vec<u8>; 4] = [
        vec![],
        vec![0, 1, 2, 3],
        vec![1; 1000],
        (0..4096).map(|i| (i % 7 % 4) as u8).collect(),
    ];
    lists
        .iter()
        .filter_map(|l| tessera_testkit::b64url_decode(&tessera_testkit::status_list_lst(l)))
        .collect()
}

/// Seed header blocks.
pub fn header_seeds() -> Vec<Vec<u8>> {
    let ed = TestKey::generate(Alg::EdDSA, "ed");
    let t = TokenBuilder::new(NOW).sign(&ed);
    [
        format!("10.0.0.1:443\nauthorization: Bearer {t}\nx-forwarded-for: 1.2.3.4, 10.0.0.2"),
        format!("[2001:db8::1]:8080\nAuthorization: token {t}\ncsp-auth-token: {t}"),
        format!("::1\nauthorization: Basic abc, Bearer {t}\nauthorization: Bearer x.y.z"),
        "127.0.0.1\ncsp-auth-token:   \nx-forwarded-for: ::ffff:10.0.0.1".to_string(),
    ]
    .into_iter()
    .map(String::into_bytes)
    .collect()
}

/// Names of the control plane's request-body types, in the order the `cp_bodies` target
/// picks them with the input's first byte.
pub const CP_BODY_TYPES: [&str; 9] = [
    "CreateOrg",
    "RotateKey",
    "CreateEdge",
    "CreateUser",
    "UpdateUser",
    "CreateToken",
    "RevokeAll",
    "EditToken",
    "UsageBatch",
];

/// Seed request bodies for `cp_bodies`: a selector byte, then the JSON body.
pub fn cp_body_seeds() -> Vec<Vec<u8>> {
    let bodies = [
        json!({"id": "acme", "name": "Acme", "partner": false, "key_alg": "EdDSA", "max_lifetime_days": 90, "audience": "tessera"}),
        json!({"alg": "ES256"}),
        json!({"name": "edge-1"}),
        json!({"username": "alice", "display_name": "Alice", "role": "admin", "delegated": false}),
        json!({"display_name": "Al", "role": "readonly"}),
        json!({"name": "ci", "description": "d", "lifetime_days": 30, "ip_allow": ["10.0.0.0/8"], "scopes": ["read", "admin:write"], "not_before": "2026-11-29T12:00:00Z"}),
        json!({"user": "alice"}),
        json!({"name": "n", "not_before": null, "expires_at": 1_900_000_000, "enabled": false}),
        json!({"events": [{"token_id": "tok_1", "at": 1_795_953_600, "outcome": "deny", "reason": "expired", "ip": "10.0.0.1", "method": "GET", "path": "/a"}]}),
    ];
    bodies
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let mut out = vec![i as u8];
            out.extend_from_slice(b.to_string().as_bytes());
            out
        })
        .collect()
}

/// Every target's seeds, by target name.
pub fn all_seeds() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    vec![
        ("token", token_seeds()),
        ("config", config_seeds()),
        ("status_list", status_list_seeds()),
        ("headers", header_seeds()),
        ("cp_bodies", cp_body_seeds()),
    ]
}

//! Core's own JWS parser checked against an independent implementation, jwt-compact.
//!
//! One table of tokens: well-formed ones minted by jwt-compact (through testkit) for every
//! algorithm, each with one claim or header varied, and hostile ones put together by hand
//! (`alg: none`, HS256 keyed with public key bytes, `crit`, forged `alg`, bad signatures,
//! broken segments). Each goes to core's `Verifier` and to a reference verifier made of
//! jwt-compact (signature with the key's own algorithm, `exp`, `nbf`) plus the rules of
//! ARCHITECTURE.md's token format written out plainly over the shared `Claims` type. The
//! two must agree on accept or refuse for every token, and core must give the expected
//! reason.

#![cfg(all(feature = "rust-ecdsa", feature = "rust-rsa"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jwt_compact::{AlgorithmExt as _, TimeOptions, UntrustedToken};
use serde_json::{json, Map, Value};
use tessera_core::token::{Claims, TokenType};
use tessera_core::{Decision, Reason, Request, StatusList, TokenStatus, Verifier};
use tessera_testkit::{
    compact, default_claims, tamper_signature, Alg, TestKey, TokenBuilder, DEFAULT_AUDIENCE,
    DEFAULT_ISSUER, DEFAULT_STATUS_URI,
};

const NOW: u64 = 1_800_000_000;
const SKEW: u64 = 60;
const MAX_LIFETIME: u64 = 400 * 86400;

struct Keys {
    keys: Vec<TestKey>,
    /// Same kid as the EdDSA key, different key.
    impostor: TestKey,
}

fn keys() -> &'static Keys {
    static K: std::sync::OnceLock<Keys> = std::sync::OnceLock::new();
    K.get_or_init(|| Keys {
        keys: vec![
            TestKey::generate(Alg::EdDSA, "ed"),
            TestKey::generate(Alg::ES256, "es"),
            TestKey::generate(Alg::RS256, "rs"),
        ],
        impostor: TestKey::generate(Alg::EdDSA, "ed"),
    })
}

/// Index 0 valid, 1 revoked, 2 suspended; 8 entries.
const STATUSES: [u8; 8] = [0, 1, 2, 0, 0, 0, 0, 0];

fn core_verifier() -> Verifier {
    let k = keys();
    let jwks = tessera_testkit::jwks(&k.keys.iter().collect::<Vec<_>>());
    let list = StatusList::from_entries(
        STATUSES.len(),
        STATUSES
            .iter()
            .enumerate()
            .map(|(i, s)| (i, TokenStatus::from_bits(*s))),
    );
    let config = tessera_core::Config::builder()
        .issuer(DEFAULT_ISSUER)
        .audience(DEFAULT_AUDIENCE)
        .jwks(jwks)
        .clock_skew_secs(SKEW)
        .max_lifetime_secs(MAX_LIFETIME)
        .status_list(DEFAULT_STATUS_URI, list)
        .build()
        .unwrap();
    Verifier::new(config)
}

/// Core's verdict: `Ok` or the reason.
fn core_decides(v: &Verifier, token: &str) -> Result<(), Reason> {
    let headers = [("authorization".to_string(), format!("Bearer {token}"))];
    let req = Request {
        method: "GET",
        path: "/",
        headers: &headers,
        source_address: Some("127.0.0.1:1"),
    };
    match v.check(&req, NOW, None).decision {
        Decision::Allow(_) => Ok(()),
        Decision::Deny(d) => Err(d.reason),
    }
}

fn b64(jwk: &Value, member: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(jwk[member].as_str().unwrap())
        .unwrap()
}

/// jwt-compact's check of the signature with the key's own algorithm (never the token's),
/// returning the claims it read.
fn jwt_compact_signature(
    key: &TestKey,
    token: &UntrustedToken<'_, Map<String, Value>>,
) -> Option<jwt_compact::Claims<Map<String, Value>>> {
    let jwk = key.public_jwk();
    let claims = match key.alg() {
        Alg::EdDSA => {
            let x: [u8; 32] = b64(&jwk, "x").try_into().unwrap();
            let vk = ed25519_dalek::VerifyingKey::from_bytes(&x).unwrap();
            jwt_compact::alg::Ed25519
                .validator::<Map<String, Value>>(&vk)
                .validate(token)
                .ok()?
                .into_parts()
                .1
        }
        Alg::ES256 => {
            let mut sec1 = vec![4u8];
            sec1.extend(b64(&jwk, "x"));
            sec1.extend(b64(&jwk, "y"));
            let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).unwrap();
            jwt_compact::alg::Es256
                .validator::<Map<String, Value>>(&vk)
                .validate(token)
                .ok()?
                .into_parts()
                .1
        }
        Alg::RS256 => {
            let n = rsa::BigUint::from_bytes_be(&b64(&jwk, "n"));
            let e = rsa::BigUint::from_bytes_be(&b64(&jwk, "e"));
            let vk = rsa::RsaPublicKey::new(n, e).unwrap();
            jwt_compact::alg::Rsa::rs256()
                .validator::<Map<String, Value>>(&vk)
                .validate(token)
                .ok()?
                .into_parts()
                .1
        }
    };
    Some(claims)
}

fn clean(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(char::is_control)
}

/// The reference: jwt-compact for the JWS and the time claims, then the token format's
/// rules, read through the shared `Claims` type.
fn reference_accepts(token: &str) -> bool {
    let Ok(untrusted) = UntrustedToken::<Map<String, Value>>::try_from(token) else {
        return false;
    };
    let header = untrusted.header();
    // RFC 7515 §4.1.11: no extension is understood, so any `crit` refuses.
    if header.other_fields.contains_key("crit") {
        return false;
    }
    let Some(typ) = header.token_type.as_deref() else {
        return false;
    };
    if TokenType::from_typ(typ).is_none() {
        return false;
    }
    let Some(kid) = header.key_id.as_deref() else {
        return false;
    };
    let Some(key) = keys().keys.iter().find(|k| k.kid() == kid) else {
        return false;
    };
    let Some(jc_claims) = jwt_compact_signature(key, &untrusted) else {
        return false;
    };
    let now = chrono::DateTime::from_timestamp(NOW as i64, 0).unwrap();
    let time = TimeOptions::new(chrono::Duration::seconds(SKEW as i64), move || now);
    if jc_claims.validate_expiration(&time).is_err() {
        return false;
    }
    if jc_claims.not_before.is_some() && jc_claims.validate_maturity(&time).is_err() {
        return false;
    }
    // Our own claims, through the shared type (which also wants whole-second times). Read
    // from the payload as jwt-compact verified it: its own `Claims` would take the time
    // claims for itself.
    let Some(Ok(c)) = payload(token).map(serde_json::from_value::<Claims>) else {
        return false;
    };
    let now = NOW as i64;
    let strings_ok = [&c.iss, &c.sub, &c.org, &c.jti].iter().all(|s| clean(s))
        && [&c.scope, &c.parent].iter().all(|s| {
            s.as_deref()
                .is_none_or(|s| !s.chars().any(char::is_control))
        });
    let iat_ok = c.iat.is_none_or(|i| i <= now + SKEW as i64);
    let start = c.iat.filter(|i| *i > 0).unwrap_or(now);
    let lifetime_ok = c.exp - start <= MAX_LIFETIME as i64;
    let status_ok = match c.status_list() {
        Some(s) if s.uri == DEFAULT_STATUS_URI && !s.uri.is_empty() => {
            STATUSES.get(s.idx as usize) == Some(&0)
        }
        _ => false,
    };
    strings_ok
        && c.iss == DEFAULT_ISSUER
        && c.aud.contains(DEFAULT_AUDIENCE)
        && iat_ok
        && lifetime_ok
        && status_ok
}

/// A token signed by hand over raw header and payload bytes.
fn by_hand(key: &TestKey, header: &Value, payload: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let sig = key.sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

struct Case {
    name: String,
    token: String,
    want: Result<(), Reason>,
}

fn cases() -> Vec<Case> {
    use Reason::*;
    let k = keys();
    let now = NOW as i64;
    let mut out = Vec::new();
    let mut add = |name: String, token: String, want: Result<(), Reason>| {
        out.push(Case { name, token, want })
    };
    for key in &k.keys {
        let alg = key.alg();
        let base = || default_claims(NOW);
        let minted = |c: Claims| key.mint(TokenType::Api, &c);
        let t = || TokenBuilder::new(NOW);
        // --- Minted by jwt-compact from the shared type ---
        add(format!("{alg} valid"), minted(base()), Ok(()));
        add(
            format!("{alg} valid access token"),
            key.mint(
                TokenType::Access,
                &Claims {
                    parent: Some("tok_1".into()),
                    client_id: Some("tok_1".into()),
                    exp: now + 300,
                    ..base()
                },
            ),
            Ok(()),
        );
        add(
            format!("{alg} expired"),
            minted(Claims {
                iat: Some(now - 7200),
                nbf: Some(now - 7200),
                exp: now - 3600,
                ..base()
            }),
            Err(Expired),
        );
        add(
            format!("{alg} expired within the skew"),
            minted(Claims {
                exp: now - 30,
                iat: Some(now - 600),
                nbf: Some(now - 600),
                ..base()
            }),
            Ok(()),
        );
        add(
            format!("{alg} nbf in the future"),
            minted(Claims {
                nbf: Some(now + 3600),
                ..base()
            }),
            Err(NotYetValid),
        );
        add(
            format!("{alg} iat in the future"),
            minted(Claims {
                iat: Some(now + 3600),
                nbf: None,
                exp: now + 7200,
                ..base()
            }),
            Err(IssuedInFuture),
        );
        add(
            format!("{alg} lifetime too long"),
            minted(Claims {
                exp: now + 500 * 86400,
                ..base()
            }),
            Err(LifetimeTooLong),
        );
        add(
            format!("{alg} no iat, no nbf"),
            minted(Claims {
                iat: None,
                nbf: None,
                ..base()
            }),
            Ok(()),
        );
        add(
            format!("{alg} wrong aud"),
            minted(Claims {
                aud: "someone-else".into(),
                ..base()
            }),
            Err(AudienceMismatch),
        );
        add(
            format!("{alg} aud array with ours"),
            minted(Claims {
                aud: tessera_core::token::Audience::Many(vec!["x".into(), DEFAULT_AUDIENCE.into()]),
                ..base()
            }),
            Ok(()),
        );
        add(
            format!("{alg} wrong iss"),
            minted(Claims {
                iss: "https://evil.example".into(),
                ..base()
            }),
            Err(IssuerMismatch),
        );
        add(
            format!("{alg} revoked"),
            minted(Claims {
                status: t()
                    .status_idx(1)
                    .claims()
                    .get("status")
                    .map(|s| serde_json::from_value(s.clone()).unwrap()),
                ..base()
            }),
            Err(Revoked),
        );
        add(
            format!("{alg} suspended"),
            key.mint(
                TokenType::Api,
                &serde_json::from_value(Value::Object(t().status_idx(2).claims().clone())).unwrap(),
            ),
            Err(Suspended),
        );
        add(
            format!("{alg} control character in sub"),
            minted(Claims {
                sub: "al\nice".into(),
                ..base()
            }),
            Err(ClaimMissing),
        );
        for claim in ["iss", "sub", "org", "jti", "aud", "exp", "status"] {
            add(
                format!("{alg} without {claim}"),
                t().remove_claim(claim).sign(key),
                Err(ClaimMissing),
            );
        }
        add(
            format!("{alg} sub of the wrong type"),
            t().claim("sub", 42).sign(key),
            Err(ClaimMissing),
        );
        add(
            format!("{alg} exp as text"),
            t().claim("exp", "soon").sign(key),
            Err(TokenMalformed),
        );
        add(
            format!("{alg} exp with a fraction"),
            t().claim("exp", json!(NOW as f64 + 100.5)).sign(key),
            Err(TokenMalformed),
        );
        add(
            format!("{alg} typ JWT"),
            t().header("typ", "JWT").sign(key),
            Err(TypeMismatch),
        );
        add(
            format!("{alg} typ with application/ prefix"),
            t().header("typ", "application/tessera-api+jwt").sign(key),
            Ok(()),
        );
        add(
            format!("{alg} no typ"),
            t().remove_header("typ").sign(key),
            Err(TypeMismatch),
        );
        add(
            format!("{alg} crit, validly signed"),
            t().header("crit", json!(["exp"])).sign(key),
            Err(CritUnsupported),
        );
        add(
            format!("{alg} tampered signature"),
            tamper_signature(&minted(base())),
            Err(SignatureInvalid),
        );
        add(
            format!("{alg} tampered payload"),
            {
                let good = minted(base());
                let other = minted(Claims {
                    scope: Some("admin".into()),
                    ..base()
                });
                let (h, rest) = good.split_once('.').unwrap();
                let (_, sig) = rest.split_once('.').unwrap();
                let payload = other.split('.').nth(1).unwrap();
                format!("{h}.{payload}.{sig}")
            },
            Err(SignatureInvalid),
        );
        add(
            format!("{alg} unknown kid"),
            key.with_kid("nope").mint(TokenType::Api, &base()),
            Err(KeyUnknown),
        );
        add(
            format!("{alg} no kid"),
            t().remove_header("kid").sign(key),
            Err(KeyUnknown),
        );
        // --- Hostile, by hand ---
        add(
            format!("{alg} alg none"),
            t().header("kid", key.kid()).unsigned(),
            Err(AlgNotAllowed),
        );
        add(
            format!("{alg} HS256 keyed with the public key"),
            t().header("kid", key.kid())
                .sign_hs256(&key.public_key_bytes()),
            Err(AlgNotAllowed),
        );
        let forged = match alg {
            Alg::EdDSA => "ES256",
            Alg::ES256 => "RS256",
            Alg::RS256 => "EdDSA",
        };
        add(
            format!("{alg} key signed, header says {forged}"),
            t().header("alg", forged).sign(key),
            Err(AlgNotAllowed),
        );
        add(
            format!("{alg} header says PS256"),
            t().header("alg", "PS256").sign(key),
            Err(AlgNotAllowed),
        );
        add(
            format!("{alg} no alg"),
            t().remove_header("alg").sign(key),
            Err(TokenMalformed),
        );
        add(
            format!("{alg} signed by hand, valid"),
            t().sign_by_hand(key),
            Ok(()),
        );
        add(
            format!("{alg} signature of zeros"),
            t().header("kid", key.kid())
                .with_signature(alg.name(), &[0; 64]),
            Err(SignatureInvalid),
        );
        add(
            format!("{alg} signature too short"),
            t().header("kid", key.kid())
                .with_signature(alg.name(), &[1; 10]),
            Err(SignatureInvalid),
        );
        add(
            format!("{alg} payload is an array"),
            by_hand(
                key,
                &json!({"alg": alg.name(), "kid": key.kid(), "typ": "tessera-api+jwt"}),
                b"[1]",
            ),
            Err(TokenMalformed),
        );
        add(
            format!("{alg} payload is not JSON"),
            by_hand(
                key,
                &json!({"alg": alg.name(), "kid": key.kid(), "typ": "tessera-api+jwt"}),
                b"not json",
            ),
            Err(TokenMalformed),
        );
        add(
            format!("{alg} cty not JSON"),
            t().header("cty", "text/plain").sign(key),
            Err(TokenMalformed),
        );
    }
    // Same kid as a configured key, another key.
    add(
        "EdDSA impostor key".into(),
        k.impostor.mint(TokenType::Api, &default_claims(NOW)),
        Err(Reason::SignatureInvalid),
    );
    add(
        "header is not JSON".into(),
        compact(b"{alg", b"{}", &[1; 64]),
        Err(Reason::TokenMalformed),
    );
    let good = k.keys[0].mint(TokenType::Api, &default_claims(NOW));
    add(
        "two segments".into(),
        good.rsplit_once('.').unwrap().0.to_string(),
        Err(Reason::TokenMalformed),
    );
    add(
        "four segments".into(),
        format!("{good}.x"),
        Err(Reason::TokenMalformed),
    );
    add(
        "padded signature".into(),
        format!("{good}="),
        Err(Reason::TokenMalformed),
    );
    out
}

fn payload(token: &str) -> Option<Value> {
    let p = token.split('.').nth(1)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).ok()?).ok()
}

#[test]
fn core_and_jwt_compact_agree_on_every_token() {
    let v = core_verifier();
    let cases = cases();
    let mut failures = Vec::new();
    for c in &cases {
        let core = core_decides(&v, &c.token);
        let reference = reference_accepts(&c.token);
        if core != c.want {
            failures.push(format!(
                "{}: core said {core:?}, expected {:?}",
                c.name, c.want
            ));
        }
        if core.is_ok() != reference {
            failures.push(format!(
                "{}: core {core:?} but jwt-compact reference {}",
                c.name,
                if reference { "accepts" } else { "refuses" }
            ));
        }
        // Core checks exactly the shared type: what it accepts deserialises into Claims.
        if core.is_ok() {
            let p = payload(&c.token).expect("accepted token has a JSON payload");
            if let Err(e) = serde_json::from_value::<Claims>(p) {
                failures.push(format!("{}: accepted but not a Claims: {e}", c.name));
            }
        }
    }
    let accepted = cases.iter().filter(|c| c.want.is_ok()).count();
    println!(
        "{} cases ({accepted} accepted, {} refused): core and jwt-compact agree on {}",
        cases.len(),
        cases.len() - accepted,
        cases.len() - failures.len().min(cases.len())
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(cases.len() >= 100, "{}", cases.len());
}

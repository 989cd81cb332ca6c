//! RFC 7515 (JWS) §4 and §5.2, RFC 7519 (JWT) §2, §4 and §7.2, and RFC 8725 (JWT BCP)
//! §2–3, clause by clause: every MUST and MUST NOT a verifier is bound by has a test here
//! named after its clause (`rfc7515_s4_1_1_...` is RFC 7515 §4.1.1). Where Tessera is
//! stricter than the text on purpose, the test's comment says "Stricter on purpose" and
//! ARCHITECTURE.md's "Conformance" table lists it.
//!
//! Every token runs through both signature paths (`check`, and `begin` + a host check +
//! `finish`), which must agree. Keys and tokens come from testkit at run time; tokens no
//! library writes (duplicate names, broken base64, bad UTF-8) are put together byte by
//! byte here and signed with the real key, so only the clause under test can refuse them.

#![cfg(all(feature = "rust-ecdsa", feature = "rust-rsa"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::OnceLock;

use serde_json::{json, Value};
use tessera_core::{Decision, Identity, Reason, Request, Step, Verifier};
use tessera_testkit::{
    b64url, b64url_decode, Alg, TestKey, TokenBuilder, ACCESS_TOKEN_TYPE, API_TOKEN_TYPE,
    DEFAULT_AUDIENCE, DEFAULT_ISSUER, DEFAULT_STATUS_URI,
};

const NOW: u64 = 1_800_000_000;
const OTHER_ISSUER: &str = "https://cp.tessera.test/v1/orgs/globex";

struct Keys {
    ed: TestKey,
    es: TestKey,
    rs: TestKey,
    /// Same kid as `ed`, not configured: an attacker's key.
    attacker: TestKey,
}

fn keys() -> &'static Keys {
    static K: OnceLock<Keys> = OnceLock::new();
    K.get_or_init(|| Keys {
        ed: TestKey::generate(Alg::EdDSA, "ed"),
        es: TestKey::generate(Alg::ES256, "es"),
        rs: TestKey::generate(Alg::RS256, "rs"),
        attacker: TestKey::generate(Alg::EdDSA, "ed"),
    })
}

fn config(extra: Value) -> Value {
    let k = keys();
    let mut c = json!({
        "issuers": [DEFAULT_ISSUER],
        "audiences": [DEFAULT_AUDIENCE],
        "jwks": tessera_testkit::jwks(&[&k.ed, &k.es, &k.rs]),
        "clock_skew_secs": 0,
        "status": {"lists": [tessera_testkit::status_list_json(DEFAULT_STATUS_URI, &[0, 1, 2, 3])]}
    });
    for (name, v) in extra.as_object().cloned().unwrap_or_default() {
        c[name] = v;
    }
    c
}

fn verifier(extra: Value) -> Verifier {
    Verifier::from_config_json(&config(extra).to_string()).expect("test configuration loads")
}

fn default_verifier() -> &'static Verifier {
    static V: OnceLock<Verifier> = OnceLock::new();
    V.get_or_init(|| verifier(json!({})))
}

/// Decides `token` at `now` on both signature paths; they must agree.
fn decide_at(v: &Verifier, token: &str, now: u64) -> Result<Identity, Reason> {
    let headers = vec![("authorization".to_string(), format!("Bearer {token}"))];
    let req = Request {
        method: "GET",
        path: "/",
        headers: &headers,
        source_address: Some("127.0.0.1:1"),
    };
    let pure = v.check(&req, now, None).decision;
    let hosted = match v.begin(&req, now, None) {
        Step::Done(o) => o.decision,
        Step::Verify(p) => {
            let ok = v.verify_signature(&p);
            v.finish(p, ok, &req, now, None).decision
        }
    };
    assert_eq!(pure, hosted, "the two signature paths disagree on {token}");
    match pure {
        Decision::Allow(id) => Ok(id),
        Decision::Deny(d) => Err(d.reason),
    }
}

fn decide(token: &str) -> Result<Identity, Reason> {
    decide_at(default_verifier(), token, NOW)
}

fn accepted(token: &str) -> Identity {
    match decide(token) {
        Ok(id) => id,
        Err(r) => panic!("refused with {r}: {token}"),
    }
}

fn refused(token: &str, reason: Reason) {
    assert_eq!(decide(token).err(), Some(reason), "{token}");
}

fn base() -> TokenBuilder {
    TokenBuilder::new(NOW)
}

/// The default header's and claims' JSON text, for byte-level edits.
fn header_text(key: &TestKey) -> String {
    format!(
        r#"{{"alg":"{}","kid":"{}","typ":"{API_TOKEN_TYPE}"}}"#,
        key.alg().name(),
        key.kid()
    )
}

fn claims_text() -> String {
    Value::Object(base().claims().clone()).to_string()
}

/// A token from raw header and claims bytes, correctly signed by `key` over exactly the
/// encoded segments.
fn raw_signed(key: &TestKey, header: &[u8], claims: &[u8]) -> String {
    let input = format!("{}.{}", b64url(header), b64url(claims));
    let sig = key.sign(input.as_bytes());
    format!("{input}.{}", b64url(&sig))
}

/// `{... "name": value}` with one more member appended (a duplicate when `name` is there).
fn with_member(object_text: &str, name: &str, value: &str) -> String {
    let body = object_text.strip_suffix('}').expect("a JSON object");
    format!("{body},\"{name}\":{value}}}")
}

// ---------------------------------------------------------------------------------------
// RFC 7515 §4: the JOSE header
// ---------------------------------------------------------------------------------------

/// RFC 7515 §4: header parameter names MUST be unique; a parser MUST refuse duplicates or
/// keep only the last. We refuse them, also for parameters we otherwise ignore.
#[test]
fn rfc7515_s4_duplicate_header_parameter_names_are_refused() {
    let k = &keys().ed;
    let claims = claims_text();
    // The plain header, signed the same way, passes: only the duplicate refuses.
    accepted(&raw_signed(k, header_text(k).as_bytes(), claims.as_bytes()));
    for (name, value) in [
        ("alg", "\"EdDSA\""),
        ("kid", "\"ed\""),
        ("typ", "\"at+jwt\""),
    ] {
        let header = with_member(&header_text(k), name, value);
        refused(
            &raw_signed(k, header.as_bytes(), claims.as_bytes()),
            Reason::TokenMalformed,
        );
    }
    let header = with_member(&with_member(&header_text(k), "x", "1"), "x", "2");
    refused(
        &raw_signed(k, header.as_bytes(), claims.as_bytes()),
        Reason::TokenMalformed,
    );
}

/// RFC 7515 §4: header parameters not defined by the specification and not listed in
/// `crit` MUST be ignored when not understood.
#[test]
fn rfc7515_s4_unknown_header_parameters_are_ignored() {
    let k = keys();
    for key in [&k.ed, &k.es, &k.rs] {
        accepted(
            &base()
                .header("x-vendor", json!({"nested": [1, 2]}))
                .header("b64", true)
                .sign(key),
        );
    }
}

/// RFC 7515 §4.1.1: `alg` MUST be present; an algorithm that is not supported makes the
/// JWS invalid.
#[test]
fn rfc7515_s4_1_1_alg_must_be_present_and_supported() {
    let k = &keys().ed;
    refused(
        &base().remove_header("alg").sign_by_hand(k),
        Reason::TokenMalformed,
    );
    for alg in ["PS256", "ES384", "ES512", "RS512", "EdDSA25519", ""] {
        refused(
            &base().header("alg", alg).sign_by_hand(k),
            Reason::AlgNotAllowed,
        );
    }
    refused(
        &base().header("alg", 5).sign_by_hand(k),
        Reason::TokenMalformed,
    );
}

/// RFC 7515 §4.1.1: the `alg` value is a case-sensitive string.
#[test]
fn rfc7515_s4_1_1_alg_is_case_sensitive() {
    let k = keys();
    refused(
        &base().header("alg", "eddsa").sign_by_hand(&k.ed),
        Reason::AlgNotAllowed,
    );
    refused(
        &base().header("alg", "es256").sign_by_hand(&k.es),
        Reason::AlgNotAllowed,
    );
    refused(
        &base().header("alg", "Rs256").sign_by_hand(&k.rs),
        Reason::AlgNotAllowed,
    );
}

/// RFC 7515 §4.1.2 (`jku`), §4.1.3 (`jwk`), §4.1.5 (`x5u`), §4.1.6 (`x5c`): keys a token
/// names or carries are not trusted; Tessera takes keys only from its configuration (and
/// core does no I/O, so nothing is ever fetched). A token signed by a key it embeds is
/// refused.
#[test]
fn rfc7515_s4_1_2_to_4_1_6_keys_named_by_the_token_are_not_used() {
    let k = keys();
    let forged = base()
        .header("jwk", k.attacker.public_jwk())
        .header("jku", "https://attacker.test/jwks.json")
        .header("x5u", "https://attacker.test/cert.pem")
        .header("x5c", json!(["MIIB"]))
        .sign(&k.attacker);
    refused(&forged, Reason::SignatureInvalid);
    // The same headers on a token our key signed change nothing.
    accepted(
        &base()
            .header("jwk", k.attacker.public_jwk())
            .header("jku", "https://attacker.test/jwks.json")
            .sign(&k.ed),
    );
}

/// RFC 7515 §4.1.4: `kid` is a case-sensitive string.
#[test]
fn rfc7515_s4_1_4_kid_is_a_case_sensitive_string() {
    let k = &keys().ed;
    refused(
        &base().header("kid", "ED").sign_by_hand(k),
        Reason::KeyUnknown,
    );
    refused(
        &base().header("kid", 7).sign_by_hand(k),
        Reason::TokenMalformed,
    );
    // Tessera requires `kid` (Stricter on purpose: it selects among several org keys).
    refused(
        &base().remove_header("kid").sign_by_hand(k),
        Reason::KeyUnknown,
    );
}

/// RFC 7515 §4.1.9: `typ` is a media type, compared case-insensitively, and a value
/// without '/' MUST be read as if `application/` were prepended.
#[test]
fn rfc7515_s4_1_9_typ_is_a_media_type() {
    let k = &keys().ed;
    accepted(&base().header("typ", "application/tessera-api+jwt").sign(k));
    accepted(&base().header("typ", "Tessera-API+JWT").sign(k));
    accepted(&base().header("typ", "APPLICATION/tessera-api+jwt").sign(k));
    refused(
        &base().header("typ", "text/tessera-api+jwt").sign(k),
        Reason::TypeMismatch,
    );
    refused(
        &base().header("typ", 1).sign_by_hand(k),
        Reason::TokenMalformed,
    );
}

/// RFC 7515 §4.1.10: `cty` follows the same media-type rule: `json` is `application/json`.
/// RFC 7519 §5.2 and §7.2 step 8: `cty: JWT` announces a nested JWT. Stricter on purpose:
/// Tessera tokens are never nested, so any content type but JSON is refused.
#[test]
fn rfc7515_s4_1_10_cty() {
    let k = &keys().ed;
    for cty in ["json", "JSON", "application/json", "Application/JSON"] {
        accepted(&base().header("cty", cty).sign(k));
    }
    for cty in ["JWT", "application/jwt", "text/plain", "jose+json"] {
        refused(&base().header("cty", cty).sign(k), Reason::TokenMalformed);
    }
}

/// RFC 7515 §4.1.11: extensions listed in `crit` that the recipient does not understand
/// make the JWS invalid. Stricter on purpose: this verifier understands no extension, so
/// any `crit` (even an empty list, or one naming a standard parameter) is refused.
#[test]
fn rfc7515_s4_1_11_crit() {
    let k = &keys().ed;
    for crit in [json!(["x-ext"]), json!([]), json!(["exp"]), json!("x-ext")] {
        refused(
            &base().header("crit", crit).header("x-ext", true).sign(k),
            Reason::CritUnsupported,
        );
    }
}

// ---------------------------------------------------------------------------------------
// RFC 7515 §5.2: validating a JWS (compact serialization)
// ---------------------------------------------------------------------------------------

/// RFC 7515 §5.2 step 1 (and RFC 7519 §7.2 step 1): the compact form is exactly three
/// base64url parts separated by two periods.
#[test]
fn rfc7515_s5_2_step1_three_parts() {
    let t = base().sign(&keys().ed);
    let parts: Vec<&str> = t.split('.').collect();
    refused("abc", Reason::TokenMalformed);
    refused(
        &format!("{}.{}", parts[0], parts[1]),
        Reason::TokenMalformed,
    );
    refused(&format!("{t}.{}", parts[2]), Reason::TokenMalformed);
    refused(
        &format!("{}..{}", parts[0], parts[2]),
        Reason::TokenMalformed,
    );
    refused(
        &format!(".{}.{}", parts[1], parts[2]),
        Reason::TokenMalformed,
    );
    refused(
        &format!("{}.{}.", parts[0], parts[1]),
        Reason::SignatureInvalid,
    );
}

/// RFC 7515 §5.2 steps 2, 6 and 7: each part is base64url-decoded with no padding, line
/// breaks, whitespace or other characters (RFC 7515 §2 defines base64url without `=`).
/// Non-canonical trailing bits are refused too, so one token has one encoding.
#[test]
fn rfc7515_s5_2_steps_2_6_7_strict_base64url() {
    let t = base().sign(&keys().ed);
    accepted(&t);
    let parts: Vec<String> = t.split('.').map(str::to_string).collect();
    for i in 0..3 {
        let edit = |f: &dyn Fn(&str) -> String| {
            let mut p = parts.clone();
            p[i] = f(&p[i]);
            p.join(".")
        };
        refused(&edit(&|s| format!("{s}=")), Reason::TokenMalformed);
        refused(&edit(&|s| format!("{s}==")), Reason::TokenMalformed);
        let mid = parts[i].len() / 2;
        for inserted in [" ", "\n", "\t", "\r\n", "%", "\u{00e9}"] {
            refused(
                &edit(&|s| format!("{}{inserted}{}", &s[..mid], &s[mid..])),
                Reason::TokenMalformed,
            );
        }
        // The standard alphabet's `+` and `/` are not base64url.
        refused(
            &edit(&|s| format!("{}+{}", &s[..mid], &s[mid + 1..])),
            Reason::TokenMalformed,
        );
        refused(
            &edit(&|s| format!("{}/{}", &s[..mid], &s[mid + 1..])),
            Reason::TokenMalformed,
        );
    }
    // The Ed25519 signature is 64 bytes: 86 characters whose last one carries 4 unused
    // bits. Setting one of them decodes to the same bytes in a lenient decoder.
    let sig = &parts[2];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let last = sig.as_bytes()[sig.len() - 1];
    let v = alphabet.iter().position(|c| *c == last).unwrap();
    assert_eq!(
        v & 0xf,
        0,
        "canonical encoding leaves the unused bits clear"
    );
    let odd = format!("{}{}", &sig[..sig.len() - 1], alphabet[v | 1] as char);
    refused(
        &format!("{}.{}.{odd}", parts[0], parts[1]),
        Reason::TokenMalformed,
    );
}

/// RFC 7515 §5.2 step 3 (and RFC 7519 §7.2 step 4, RFC 8725 §3.7): the header MUST be the
/// UTF-8 encoding of a completely valid JSON object.
#[test]
fn rfc7515_s5_2_step3_header_is_a_utf8_json_object() {
    let k = &keys().ed;
    let claims = claims_text();
    let h = header_text(k);
    let cases: Vec<Vec<u8>> = vec![
        format!("[{h}]").into_bytes(),
        b"\"EdDSA\"".to_vec(),
        format!("{h} x").into_bytes(),
        format!("{h}{h}").into_bytes(),
        h.as_bytes()[..h.len() - 1].to_vec(),
        // Invalid UTF-8 inside a string member.
        [&h.as_bytes()[..h.len() - 1], b",\"x\":\"\xff\xfe\"}"].concat(),
        // A lone surrogate is not a Unicode scalar value.
        with_member(&h, "x", "\"\\ud800\"").into_bytes(),
        // UTF-16 is not UTF-8.
        h.encode_utf16().flat_map(u16::to_le_bytes).collect(),
        // Single quotes and trailing commas are not JSON.
        h.replace('"', "'").into_bytes(),
        format!("{},}}", &h[..h.len() - 1]).into_bytes(),
    ];
    for header in cases {
        refused(
            &raw_signed(k, &header, claims.as_bytes()),
            Reason::TokenMalformed,
        );
    }
}

/// RFC 7515 §5.2 step 5: every field the recipient must process is understood: an
/// algorithm's own header fields and `crit` (see §4.1.1 and §4.1.11 above), and `b64`
/// (RFC 7797) only in its default, `true`, meaning.
#[test]
fn rfc7515_s5_2_step5_only_understood_fields_change_processing() {
    let k = &keys().ed;
    // `b64: false` is only meaningful when listed in `crit`; with it, it is refused.
    refused(
        &base()
            .header("b64", false)
            .header("crit", json!(["b64"]))
            .sign(k),
        Reason::CritUnsupported,
    );
}

/// RFC 7515 §5.2 step 8: the signature is validated over exactly
/// `ASCII(BASE64URL(header) '.' BASE64URL(payload))` with the algorithm `alg` names; any
/// change to either encoded part, or to the signature, fails.
#[test]
fn rfc7515_s5_2_step8_signature_over_the_exact_signing_input() {
    let k = keys();
    for key in [&k.ed, &k.es, &k.rs] {
        let t = base().sign(key);
        accepted(&t);
        refused(
            &tessera_testkit::tamper_signature(&t),
            Reason::SignatureInvalid,
        );
        let parts: Vec<&str> = t.split('.').collect();
        // The same header and claims, encoded differently (whitespace in the JSON).
        let header = b64url_decode(parts[0]).unwrap();
        let spaced = [b" ".as_slice(), &header].concat();
        refused(
            &format!("{}.{}.{}", b64url(&spaced), parts[1], parts[2]),
            Reason::SignatureInvalid,
        );
        let other = base().claim("sub", "mallory").sign(key);
        let other_payload = other.split('.').nth(1).unwrap();
        refused(
            &format!("{}.{other_payload}.{}", parts[0], parts[2]),
            Reason::SignatureInvalid,
        );
    }
    refused(&base().sign(&k.attacker), Reason::SignatureInvalid);
}

/// RFC 7515 §5.2 step 8: the algorithm MUST be accurately represented by `alg`; RFC 8725
/// §3.1: each key is used with exactly one algorithm, checked at the cryptographic
/// operation. A token's `alg` that differs from its key's pinned one is refused.
#[test]
fn rfc7515_s5_2_step8_alg_must_be_the_keys_algorithm() {
    let k = keys();
    refused(
        &base()
            .header("alg", "ES256")
            .header("kid", "ed")
            .sign_by_hand(&k.es),
        Reason::AlgNotAllowed,
    );
    refused(
        &base()
            .header("alg", "RS256")
            .header("kid", "es")
            .sign_by_hand(&k.rs),
        Reason::AlgNotAllowed,
    );
    refused(
        &base()
            .header("alg", "EdDSA")
            .header("kid", "rs")
            .sign_by_hand(&k.ed),
        Reason::AlgNotAllowed,
    );
}

// ---------------------------------------------------------------------------------------
// RFC 7519 §2: NumericDate
// ---------------------------------------------------------------------------------------

/// RFC 7519 §2: a NumericDate is a JSON number of seconds since the epoch. Stricter on
/// purpose: Tessera takes whole seconds only (the control plane mints integers); a
/// fraction, an exponent or a string is `token_malformed`, never rounded.
#[test]
fn rfc7519_s2_numericdate() {
    let k = &keys().ed;
    let exp = NOW + 600;
    accepted(&base().claim("exp", exp).sign(k));
    for bad in [
        json!(exp as f64 + 0.5),
        json!(format!("{exp}")),
        json!(true),
        json!([exp]),
    ] {
        for claim in ["exp", "nbf", "iat"] {
            refused(
                &base().claim(claim, bad.clone()).sign(k),
                Reason::TokenMalformed,
            );
        }
    }
    // `1.8e9` is a JSON number without an integer form.
    let claims = with_member(&claims_text(), "x", "0").replace(
        &format!("\"exp\":{}", NOW + 3600),
        &format!("\"exp\":{}e0", NOW + 3600),
    );
    refused(
        &raw_signed(k, header_text(k).as_bytes(), claims.as_bytes()),
        Reason::TokenMalformed,
    );
    // Beyond what any clock reaches: not a NumericDate we can compare.
    refused(
        &base().claim("exp", u64::MAX).sign(k),
        Reason::TokenMalformed,
    );
    // Times before 1970 are NumericDates too: an `exp` there is simply past, an `nbf`
    // there is simply reached.
    refused(&base().claim("exp", -1).sign(k), Reason::Expired);
    accepted(&base().claim("nbf", -86_400).sign(k));
}

// ---------------------------------------------------------------------------------------
// RFC 7519 §4: claims
// ---------------------------------------------------------------------------------------

/// RFC 7519 §4: claim names MUST be unique; a parser MUST refuse duplicates or keep only
/// the last. We refuse them, so no two readers can disagree about a claim.
#[test]
fn rfc7519_s4_duplicate_claim_names_are_refused() {
    let k = &keys().ed;
    let h = header_text(k);
    for (name, value) in [
        ("sub", "\"mallory\""),
        ("exp", &(NOW + 60).to_string()),
        ("aud", "\"other\""),
        ("scope", "\"admin\""),
    ] {
        let claims = with_member(&claims_text(), name, value);
        refused(
            &raw_signed(k, h.as_bytes(), claims.as_bytes()),
            Reason::TokenMalformed,
        );
    }
}

/// RFC 7519 §4: claims that are not understood MUST be ignored (unless the application
/// requires them).
#[test]
fn rfc7519_s4_unknown_claims_are_ignored() {
    let k = &keys().ed;
    accepted(
        &base()
            .claim("x-vendor", json!({"deep": [1, {"a": null}]}))
            .claim("email", "alice@example.test")
            .sign(k),
    );
}

/// RFC 7519 §4.1.1: `iss` is a case-sensitive string. Stricter on purpose: it is required
/// and must be one of the configured issuers.
#[test]
fn rfc7519_s4_1_1_iss() {
    let k = &keys().ed;
    refused(
        &base().claim("iss", DEFAULT_ISSUER.to_uppercase()).sign(k),
        Reason::IssuerMismatch,
    );
    refused(
        &base().claim("iss", OTHER_ISSUER).sign(k),
        Reason::IssuerMismatch,
    );
    refused(&base().remove_claim("iss").sign(k), Reason::ClaimMissing);
    refused(&base().claim("iss", 5).sign(k), Reason::ClaimMissing);
}

/// RFC 7519 §4.1.2: `sub` is a case-sensitive string (passed on exactly). Stricter on
/// purpose: it is required, non-empty and free of control characters (it becomes an
/// upstream header).
#[test]
fn rfc7519_s4_1_2_sub() {
    let k = &keys().ed;
    assert_eq!(
        accepted(&base().claim("sub", "Alice").sign(k)).user,
        "Alice"
    );
    refused(&base().remove_claim("sub").sign(k), Reason::ClaimMissing);
    refused(&base().claim("sub", "").sign(k), Reason::ClaimMissing);
    refused(
        &base().claim("sub", "a\r\nx-admin: 1").sign(k),
        Reason::ClaimMissing,
    );
}

/// RFC 7519 §4.1.3: a recipient that does not identify itself with a value in `aud`
/// MUST reject the JWT; `aud` is a case-sensitive string or an array of them. Stricter on
/// purpose (and RFC 8725 §3.9): `aud` is required, and an array entry that is not a string
/// makes the claim invalid.
#[test]
fn rfc7519_s4_1_3_aud() {
    let k = &keys().ed;
    accepted(&base().claim("aud", DEFAULT_AUDIENCE).sign(k));
    accepted(&base().claim("aud", json!(["x", DEFAULT_AUDIENCE])).sign(k));
    refused(
        &base().claim("aud", "someone-else").sign(k),
        Reason::AudienceMismatch,
    );
    refused(
        &base().claim("aud", json!(["a", "b"])).sign(k),
        Reason::AudienceMismatch,
    );
    refused(
        &base().claim("aud", DEFAULT_AUDIENCE.to_uppercase()).sign(k),
        Reason::AudienceMismatch,
    );
    refused(
        &base().claim("aud", json!([])).sign(k),
        Reason::ClaimMissing,
    );
    refused(
        &base().claim("aud", json!([DEFAULT_AUDIENCE, 1])).sign(k),
        Reason::ClaimMissing,
    );
    refused(&base().remove_claim("aud").sign(k), Reason::ClaimMissing);
}

/// RFC 7519 §4.1.4: the current time MUST be before `exp` (with an allowed leeway of a
/// few minutes at most). Stricter on purpose: `exp` is required.
#[test]
fn rfc7519_s4_1_4_exp() {
    let k = &keys().ed;
    let v = default_verifier();
    let t = base().claim("exp", NOW + 100).sign(k);
    assert!(decide_at(v, &t, NOW + 99).is_ok());
    assert_eq!(decide_at(v, &t, NOW + 100).err(), Some(Reason::Expired));
    assert_eq!(decide_at(v, &t, NOW + 101).err(), Some(Reason::Expired));
    let skewed = verifier(json!({"clock_skew_secs": 30}));
    assert!(decide_at(&skewed, &t, NOW + 129).is_ok());
    assert_eq!(
        decide_at(&skewed, &t, NOW + 130).err(),
        Some(Reason::Expired)
    );
    refused(&base().remove_claim("exp").sign(k), Reason::ClaimMissing);
}

/// RFC 7519 §4.1.5: the current time MUST be after or equal to `nbf`.
#[test]
fn rfc7519_s4_1_5_nbf() {
    let k = &keys().ed;
    let v = default_verifier();
    let t = base().claim("nbf", NOW + 100).sign(k);
    assert_eq!(decide_at(v, &t, NOW + 99).err(), Some(Reason::NotYetValid));
    assert!(decide_at(v, &t, NOW + 100).is_ok());
    accepted(&base().remove_claim("nbf").sign(k));
}

/// RFC 7519 §4.1.6: `iat` MUST be a NumericDate (see §2 above). Stricter on purpose: an
/// `iat` after now (beyond the skew) is refused, and `exp - iat` is bounded.
#[test]
fn rfc7519_s4_1_6_iat() {
    let k = &keys().ed;
    refused(
        &base().claim("iat", NOW + 1).sign(k),
        Reason::IssuedInFuture,
    );
    refused(&base().claim("iat", "now").sign(k), Reason::TokenMalformed);
    accepted(&base().remove_claim("iat").sign(k));
    refused(
        &base()
            .claim("iat", NOW - 10)
            .claim("exp", NOW + 400 * 86_400)
            .sign(k),
        Reason::LifetimeTooLong,
    );
}

/// RFC 7519 §4.1.7: `jti` is a case-sensitive string (passed on exactly). Stricter on
/// purpose: required (usage records and revocation are keyed by it).
#[test]
fn rfc7519_s4_1_7_jti() {
    let k = &keys().ed;
    assert_eq!(
        accepted(&base().claim("jti", "Tok_A").sign(k)).token_id,
        "Tok_A"
    );
    refused(&base().remove_claim("jti").sign(k), Reason::ClaimMissing);
    refused(&base().claim("jti", 17).sign(k), Reason::ClaimMissing);
}

// ---------------------------------------------------------------------------------------
// RFC 7519 §7.2: validating a JWT
// ---------------------------------------------------------------------------------------

/// RFC 7519 §7.2 steps 6 and 7: the JWT is a JWS or a JWE (RFC 7516 §9: five parts, or an
/// `enc` header). Stricter on purpose: Tessera takes JWS only; a JWE is malformed.
#[test]
fn rfc7519_s7_2_steps_6_7_jwe_is_not_accepted() {
    let t = base().sign(&keys().ed);
    let parts: Vec<&str> = t.split('.').collect();
    let jwe = format!("{}.{}.{}.{}.{}", parts[0], "", parts[1], "AAAA", parts[2]);
    refused(&jwe, Reason::TokenMalformed);
}

/// RFC 7519 §7.2 step 8: with `cty: JWT` the payload is itself a JWT. Stricter on purpose:
/// nesting is refused (see `rfc7515_s4_1_10_cty`); a JWS whose payload is a JWT
/// is not a JSON object, so it is malformed even without `cty`.
#[test]
fn rfc7519_s7_2_step8_nested_jwts_are_refused() {
    let k = &keys().ed;
    let inner = base().sign(k);
    let h = header_text(k);
    refused(
        &raw_signed(k, h.as_bytes(), inner.as_bytes()),
        Reason::TokenMalformed,
    );
    let h = with_member(&h, "cty", "\"JWT\"");
    refused(
        &raw_signed(k, h.as_bytes(), inner.as_bytes()),
        Reason::TokenMalformed,
    );
}

/// RFC 7519 §7.2 steps 9 and 10 (and RFC 8725 §3.7): the claims set MUST be the UTF-8
/// encoding of a completely valid JSON object.
#[test]
fn rfc7519_s7_2_step10_claims_are_a_utf8_json_object() {
    let k = &keys().ed;
    let h = header_text(k);
    let c = claims_text();
    let cases: Vec<Vec<u8>> = vec![
        format!("[{c}]").into_bytes(),
        b"\"claims\"".to_vec(),
        b"null".to_vec(),
        format!("{c} {c}").into_bytes(),
        [&c.as_bytes()[..c.len() - 1], b",\"x\":\"\xc3\x28\"}"].concat(),
        c.encode_utf16().flat_map(u16::to_be_bytes).collect(),
        with_member(&c, "x", "\"\\udc00\"").into_bytes(),
        Vec::new(),
    ];
    for claims in cases {
        refused(
            &raw_signed(k, h.as_bytes(), &claims),
            Reason::TokenMalformed,
        );
    }
}

// ---------------------------------------------------------------------------------------
// RFC 8725 §3: best current practices (§2 lists the threats; each is answered below)
// ---------------------------------------------------------------------------------------

/// RFC 8725 §3.1 (threat §2.1): the verifier fixes the algorithms and uses no other; the
/// token's `alg` must name the key's algorithm. `none` and HS256 keyed with the public key
/// (the classic substitution) are refused before any key is used.
#[test]
fn rfc8725_s3_1_algorithm_verification() {
    let k = keys();
    refused(
        &base().header("kid", "ed").unsigned(),
        Reason::AlgNotAllowed,
    );
    refused(
        &base().header("kid", "ed").header("alg", "None").unsigned(),
        Reason::AlgNotAllowed,
    );
    for key in [&k.ed, &k.es, &k.rs] {
        refused(
            &base()
                .header("kid", key.kid())
                .sign_hs256(&key.public_key_bytes()),
            Reason::AlgNotAllowed,
        );
    }
    // A JWK whose `alg` contradicts its key type is refused at load.
    let mut jwk = k.ed.public_jwk();
    jwk["alg"] = json!("ES256");
    let err = Verifier::from_config_json(&config(json!({"jwks": {"keys": [jwk]}})).to_string())
        .unwrap_err();
    assert_eq!(err.field, "jwks.keys[0].alg", "{err}");
}

/// RFC 8725 §3.2: only current algorithms; `none` MUST NOT be accepted for a secured JWT.
/// RSA keys under 2048 bits are refused when the keys are loaded.
#[test]
fn rfc8725_s3_2_appropriate_algorithms() {
    let weak = TestKey::generate_rsa_bits("rs", 1024);
    let err = Verifier::from_config_json(
        &config(json!({"jwks": tessera_testkit::jwks(&[&weak])})).to_string(),
    )
    .unwrap_err();
    assert_eq!(err.field, "jwks.keys[0].n", "{err}");
    refused(
        &base().header("kid", "rs").unsigned(),
        Reason::AlgNotAllowed,
    );
}

/// RFC 8725 §3.3: every cryptographic operation is validated and the whole JWT refused if
/// one fails (nested JWTs included: they are refused outright, see RFC 7519 §7.2 step 8).
#[test]
fn rfc8725_s3_3_validate_all_cryptographic_operations() {
    let k = keys();
    for key in [&k.ed, &k.es, &k.rs] {
        let t = base().sign(key);
        refused(
            &tessera_testkit::tamper_signature(&t),
            Reason::SignatureInvalid,
        );
        let (input, _) = t.rsplit_once('.').unwrap();
        refused(&format!("{input}."), Reason::SignatureInvalid);
    }
}

/// Adds the Ed25519 group order L to the little-endian scalar `s` (32 bytes).
fn add_l(s: &mut [u8]) {
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut carry = 0u16;
    for (b, l) in s.iter_mut().zip(L) {
        let sum = u16::from(*b) + u16::from(l) + carry;
        *b = sum as u8;
        carry = sum >> 8;
    }
}

/// RFC 8725 §3.4: cryptographic inputs MUST be validated: points off the curve are refused
/// when keys load; malleable or out-of-range signatures (Ed25519 `S` ≥ L, ECDSA `r`/`s`
/// zero or ≥ n) and small-order Ed25519 keys never verify.
#[test]
fn rfc8725_s3_4_validate_cryptographic_inputs() {
    let k = keys();
    // A P-256 key whose point is not on the curve.
    let mut jwk = k.es.public_jwk();
    let mut y = b64url_decode(jwk["y"].as_str().unwrap()).unwrap();
    y[31] ^= 1;
    jwk["y"] = json!(b64url(&y));
    let err = Verifier::from_config_json(&config(json!({"jwks": {"keys": [jwk]}})).to_string())
        .unwrap_err();
    assert_eq!(err.field, "jwks.keys[0].x", "{err}");

    // Ed25519: `S + L` verifies in a lenient implementation; it must not here.
    let t = base().sign(&k.ed);
    let (input, sig) = t.rsplit_once('.').unwrap();
    let mut sig = b64url_decode(sig).unwrap();
    add_l(&mut sig[32..]);
    refused(
        &format!("{input}.{}", b64url(&sig)),
        Reason::SignatureInvalid,
    );

    // ECDSA: r or s zero, or s = n.
    let t = base().sign(&k.es);
    let (input, sig) = t.rsplit_once('.').unwrap();
    let sig = b64url_decode(sig).unwrap();
    let n = hex32("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551");
    for bad in [
        [[0u8; 32].as_slice(), &sig[32..]].concat(),
        [&sig[..32], [0u8; 32].as_slice()].concat(),
        [&sig[..32], n.as_slice()].concat(),
        [n.as_slice(), &sig[32..]].concat(),
    ] {
        refused(
            &format!("{input}.{}", b64url(&bad)),
            Reason::SignatureInvalid,
        );
    }

    // A small-order Ed25519 key (the identity point) with the all-zero `R || S` signature
    // would verify every message in a lenient implementation. Refused either at load or
    // at verification.
    let mut x = [0u8; 32];
    x[0] = 1;
    let weak = json!({"kty": "OKP", "crv": "Ed25519", "kid": "weak", "x": b64url(&x)});
    if let Ok(v) =
        Verifier::from_config_json(&config(json!({"jwks": {"keys": [weak]}})).to_string())
    {
        let mut rs = [0u8; 64];
        rs[0] = 1;
        let t = base().header("kid", "weak").with_signature("EdDSA", &rs);
        assert_eq!(decide_at(&v, &t, NOW).err(), Some(Reason::SignatureInvalid));
    }
}

fn hex32(s: &str) -> Vec<u8> {
    (0..32)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// RFC 8725 §3.5: keys need enough entropy; a human-memorisable password MUST NOT key a
/// MAC. Tessera accepts no MAC algorithm and no symmetric key at all: an `oct` JWK (or any
/// private member) is refused at load.
#[test]
fn rfc8725_s3_5_no_symmetric_keys() {
    let oct = json!({"kty": "oct", "kid": "hs", "k": b64url(b"password")});
    let err = Verifier::from_config_json(&config(json!({"jwks": {"keys": [oct]}})).to_string())
        .unwrap_err();
    assert_eq!(err.field, "jwks.keys[0].k", "{err}");
    let mut private = keys().ed.private_jwk();
    private["kid"] = json!("p");
    let err = Verifier::from_config_json(&config(json!({"jwks": {"keys": [private]}})).to_string())
        .unwrap_err();
    assert_eq!(err.field, "jwks.keys[0].d", "{err}");
}

/// RFC 8725 §3.8: the keys used MUST belong to the issuer the token names. A key whose JWK
/// names its issuer (`iss`, as the control plane publishes it) signs only for that issuer,
/// even when the verifier trusts several issuers.
#[test]
fn rfc8725_s3_8_keys_belong_to_their_issuer() {
    let k = keys();
    let mut acme = k.ed.public_jwk();
    acme["iss"] = json!(DEFAULT_ISSUER);
    let globex_key = TestKey::generate(Alg::EdDSA, "globex-1");
    let mut globex = globex_key.public_jwk();
    globex["iss"] = json!(OTHER_ISSUER);
    let v = verifier(json!({
        "issuers": [DEFAULT_ISSUER, OTHER_ISSUER],
        "jwks": {"keys": [acme, globex]}
    }));
    assert!(decide_at(&v, &base().sign(&k.ed), NOW).is_ok());
    assert!(decide_at(
        &v,
        &base().claim("iss", OTHER_ISSUER).sign(&globex_key),
        NOW
    )
    .is_ok());
    // Globex's key minting a token in Acme's name, and the other way round.
    assert_eq!(
        decide_at(&v, &base().sign(&globex_key), NOW).err(),
        Some(Reason::IssuerMismatch)
    );
    assert_eq!(
        decide_at(&v, &base().claim("iss", OTHER_ISSUER).sign(&k.ed), NOW).err(),
        Some(Reason::IssuerMismatch)
    );
    // An `iss` member that is not a string is refused when the keys load.
    let mut bad = k.ed.public_jwk();
    bad["iss"] = json!(1);
    let err = Verifier::from_config_json(&config(json!({"jwks": {"keys": [bad]}})).to_string())
        .unwrap_err();
    assert_eq!(err.field, "jwks.keys[0].iss", "{err}");
}

/// RFC 8725 §3.9: when an issuer serves several relying parties, the audience MUST be
/// validated, and a JWT without one, or for another party, refused.
#[test]
fn rfc8725_s3_9_audience() {
    let k = &keys().ed;
    refused(&base().remove_claim("aud").sign(k), Reason::ClaimMissing);
    refused(
        &base().claim("aud", "billing").sign(k),
        Reason::AudienceMismatch,
    );
    let billing = verifier(json!({"audiences": ["billing"]}));
    assert_eq!(
        decide_at(&billing, &base().sign(k), NOW).err(),
        Some(Reason::AudienceMismatch)
    );
}

/// RFC 8725 §3.10: received claims are not trusted: `kid` only selects among configured
/// keys (whatever it contains), and URLs in the header are never fetched (core does no
/// I/O; see RFC 7515 §4.1.2–§4.1.6 above).
#[test]
fn rfc8725_s3_10_kid_is_only_a_lookup_key() {
    let k = &keys().ed;
    for kid in ["../../etc/passwd", "ed' OR '1'='1", "ed\u{0}", "*", "ed "] {
        refused(
            &base().header("kid", kid).sign_by_hand(k),
            Reason::KeyUnknown,
        );
    }
}

/// RFC 8725 §3.11: explicit typing. Tessera tokens carry `typ`, and a JWT of another kind
/// (no `typ`, plain `JWT`, an ID token's) is refused even when signed by a trusted key.
#[test]
fn rfc8725_s3_11_explicit_typing() {
    let k = &keys().ed;
    refused(&base().remove_header("typ").sign(k), Reason::TypeMismatch);
    refused(&base().header("typ", "JWT").sign(k), Reason::TypeMismatch);
    refused(
        &base().header("typ", "secevent+jwt").sign(k),
        Reason::TypeMismatch,
    );
}

/// RFC 8725 §3.12: the validation rules of different kinds of JWT from one issuer MUST be
/// mutually exclusive. API tokens (`tessera-api+jwt`) and access tokens (`at+jwt`) differ
/// by `typ`, and a verifier configured for one kind refuses the other.
#[test]
fn rfc8725_s3_12_mutually_exclusive_kinds() {
    let k = &keys().ed;
    let api = base().sign(k);
    let access = TokenBuilder::access_token(NOW, "tok_1").sign(k);
    let only_access = verifier(json!({"token_types": [ACCESS_TOKEN_TYPE]}));
    let only_api = verifier(json!({"token_types": [API_TOKEN_TYPE]}));
    assert_eq!(
        decide_at(&only_access, &api, NOW).err(),
        Some(Reason::TypeMismatch)
    );
    assert!(decide_at(&only_access, &access, NOW).is_ok());
    assert_eq!(
        decide_at(&only_api, &access, NOW).err(),
        Some(Reason::TypeMismatch)
    );
    assert!(decide_at(&only_api, &api, NOW).is_ok());
}

//! Signature and static-claim checks: everything about a token that does not depend on the
//! request or on the passing of time, so its result may be cached.
//!
//! The compact JWS is parsed here (base64url without padding, strict; JSON header and
//! payload) and the signature is checked with the key's pinned algorithm by the
//! primitives' own crates. The order of the checks is fixed and shared with the host
//! signature path ([`crate::Verifier::begin`]): form and header, key selection, signature
//! form, claims, then the signature itself.
//!
//! The token's shape is [`crate::token`]'s ([`crate::token::Header`], [`crate::token::Claims`]),
//! but it is read here member by member rather than through the derived `Deserialize`: a
//! derived reader would stop at the first member that fails and could not say *which* fault
//! it met, while each has a stable reason code in a fixed order (a wrong `iss` is
//! `issuer_mismatch` even when `sub` is also missing; a claim of the wrong type is
//! `claim_missing`; a non-integer time is `token_malformed`). Strings bound for upstream
//! headers must also be free of control characters. The members read, and the sub-types
//! built ([`StatusListRef`], [`Cidr`], scopes), are the shared ones; a test checks that every
//! payload accepted here deserialises into [`crate::token::Claims`].

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use crate::config::Config;
use crate::decision::Reason;
use crate::ip::Cidr;
use crate::jwks::{Key, KeyAlg, KeyMaterial};
use crate::token::{self, normalise_typ, StatusListRef};

/// The protected header parameters we read. Others are ignored (RFC 7515 §4), except
/// `crit`, which we refuse, and `cty`, which must say JSON. Members are optional here so
/// that a missing `kid` is `key_unknown` and a missing `typ` is `type_mismatch`; the form
/// minted is [`crate::token::Header`].
#[derive(Debug, Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    cty: Option<String>,
    #[serde(default)]
    crit: Option<Value>,
}

/// A JSON object whose member names are unique: RFC 7515 §4 and RFC 7519 §4 let a parser
/// either refuse duplicate names or keep the last one; we refuse them, in the header and
/// in the claims, so no two readers of one token can see different values.
struct UniqueObject(Map<String, Value>);

impl<'de> Deserialize<'de> for UniqueObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> Visitor<'de> for Members {
            type Value = UniqueObject;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<UniqueObject, A::Error> {
                let mut m = Map::new();
                while let Some(name) = a.next_key::<String>()? {
                    let value: Value = a.next_value()?;
                    if m.insert(name, value).is_some() {
                        return Err(de::Error::custom("duplicate member name"));
                    }
                }
                Ok(UniqueObject(m))
            }
        }
        d.deserialize_map(Members)
    }
}

/// Parses one JSON object with unique member names, or `token_malformed`. Read as text
/// (JSON that is not UTF-8 is malformed either way): every other parse in the wasm
/// modules reads text, and a second, byte-slice instance of serde_json's parser cost the
/// filter module about 10 KB.
fn unique_object(bytes: &[u8]) -> Result<Map<String, Value>, Reason> {
    let text = std::str::from_utf8(bytes).map_err(|_| Reason::TokenMalformed)?;
    serde_json::from_str::<UniqueObject>(text)
        .map(|o| o.0)
        .map_err(|_| Reason::TokenMalformed)
}

/// Where a token's status lives (the shared [`StatusListRef`]).
pub type StatusRef = StatusListRef;

/// A token whose signature and static claims passed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedToken {
    /// `sub`.
    pub sub: String,
    /// `org`.
    pub org: String,
    /// `jti`.
    pub jti: String,
    /// Normalised header `typ`.
    pub typ: String,
    /// Scopes.
    pub scopes: Vec<String>,
    /// `exp`.
    pub exp: u64,
    /// `nbf`, if present.
    pub nbf: Option<u64>,
    /// IP filter; empty means any address.
    pub ip_allow: Vec<Cidr>,
    /// Status reference, if the token has one.
    pub status: Option<StatusRef>,
    /// Parent API token, for access tokens.
    pub parent: Option<String>,
    /// `preferred_username`, if the token carries it.
    pub username: Option<String>,
}

fn string_claim(m: &Map<String, Value>, name: &str) -> Result<String, Reason> {
    match m.get(name) {
        Some(Value::String(s)) if !s.is_empty() && !s.chars().any(char::is_control) => {
            Ok(s.clone())
        }
        _ => Err(Reason::ClaimMissing),
    }
}

fn optional_string(m: &Map<String, Value>, name: &str) -> Result<Option<String>, Reason> {
    match m.get(name) {
        None | Some(Value::Null) => Ok(None),
        // Claims end up in upstream headers: control characters are never acceptable.
        Some(Value::String(s)) if !s.chars().any(char::is_control) => Ok(Some(s.clone())),
        Some(_) => Err(Reason::ClaimMissing),
    }
}

fn audience_ok(m: &Map<String, Value>, audiences: &[String]) -> Result<(), Reason> {
    match m.get("aud") {
        Some(Value::String(a)) => {
            if audiences.iter().any(|x| x == a) {
                Ok(())
            } else {
                Err(Reason::AudienceMismatch)
            }
        }
        Some(Value::Array(list)) => {
            // RFC 7519 §4.1.3: an array of strings. Every entry is checked, so the answer
            // does not depend on where a bad entry sits.
            let mut names = Vec::with_capacity(list.len());
            for v in list {
                match v {
                    Value::String(a) => names.push(a),
                    _ => return Err(Reason::ClaimMissing),
                }
            }
            if names.is_empty() {
                Err(Reason::ClaimMissing)
            } else if names.iter().any(|a| audiences.contains(a)) {
                Ok(())
            } else {
                Err(Reason::AudienceMismatch)
            }
        }
        _ => Err(Reason::ClaimMissing),
    }
}

fn status_claim(m: &Map<String, Value>) -> Result<Option<StatusRef>, Reason> {
    let status = match m.get("status") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(s)) => s,
        Some(_) => return Err(Reason::ClaimMissing),
    };
    let sl = match status.get("status_list") {
        Some(Value::Object(sl)) => sl,
        _ => return Err(Reason::ClaimMissing),
    };
    let idx = sl
        .get("idx")
        .and_then(Value::as_u64)
        .ok_or(Reason::ClaimMissing)?;
    let uri = match sl.get("uri") {
        Some(Value::String(u)) if !u.is_empty() => u.clone(),
        _ => return Err(Reason::ClaimMissing),
    };
    Ok(Some(StatusRef { idx, uri }))
}

/// The signature in the form the key's algorithm requires (length, and values in range
/// for ECDSA), or `None`. Checked before the claims are read, on both signature paths.
enum Signature {
    Ed25519([u8; 64]),
    Es256(#[cfg_attr(not(feature = "rust-ecdsa"), allow(dead_code))] p256::ecdsa::Signature),
    Rs256,
}

fn signature_form(material: &KeyMaterial, signature: &[u8]) -> Option<Signature> {
    match material {
        KeyMaterial::Ed25519(_) => <[u8; 64]>::try_from(signature).ok().map(Signature::Ed25519),
        KeyMaterial::Es256(_) => p256::ecdsa::Signature::from_slice(signature)
            .ok()
            .map(Signature::Es256),
        KeyMaterial::Rs256(_) => Some(Signature::Rs256),
    }
}

/// Whether this build verifies `material`'s algorithm in Rust (Ed25519 always; ES256 and
/// RS256 with the `rust-ecdsa` and `rust-rsa` features).
pub fn verifies_in_rust(material: &KeyMaterial) -> bool {
    match material {
        KeyMaterial::Ed25519(_) => true,
        KeyMaterial::Es256(_) => cfg!(feature = "rust-ecdsa"),
        KeyMaterial::Rs256(_) => cfg!(feature = "rust-rsa"),
    }
}

/// Verifies raw JWS signature bytes over `message` with the key's pinned algorithm; false
/// for an algorithm this build does not verify in Rust ([`verifies_in_rust`]).
pub(crate) fn signature_ok(material: &KeyMaterial, message: &[u8], signature: &[u8]) -> bool {
    match (material, signature_form(material, signature)) {
        // As ed25519-dalek's verify_strict: canonical `s`, and no small-order key or `R`
        // (RFC 8032 §5.1.7 plus the checks that make a signature unmalleable).
        (KeyMaterial::Ed25519(k), Some(Signature::Ed25519(sig))) => k.verify(message, &sig),
        #[cfg(feature = "rust-ecdsa")]
        (KeyMaterial::Es256(k), Some(Signature::Es256(sig))) => {
            use p256::ecdsa::signature::Verifier as _;
            k.verify(message, &sig).is_ok()
        }
        #[cfg(feature = "rust-rsa")]
        (KeyMaterial::Rs256(k), Some(Signature::Rs256)) => {
            use sha2::{Digest as _, Sha256};
            let digest = Sha256::digest(message);
            k.public_key()
                .verify(rsa::Pkcs1v15Sign::new::<Sha256>(), &digest, signature)
                .is_ok()
        }
        _ => false,
    }
}

/// What `prepare` learnt from a token that does not borrow from it, kept so that the
/// signature's verdict can be applied without parsing the token again.
#[derive(Clone, Debug)]
pub(crate) struct Parsed {
    /// Normalised header `typ`.
    typ: String,
    /// The payload's members.
    claims: Map<String, Value>,
    /// The issuer the selected key belongs to, if its JWK names one.
    key_issuer: Option<String>,
}

/// A token whose form and key selection passed; its signature is still to be checked.
pub(crate) struct Prepared<'c, 't> {
    key: &'c Key,
    signing_input: &'t str,
    signature: Vec<u8>,
    parsed: Parsed,
}

impl Prepared<'_, '_> {
    /// The selected key.
    pub(crate) fn key(&self) -> &Key {
        self.key
    }
    /// The bytes the signature covers (`header.payload`).
    pub(crate) fn signing_input(&self) -> &str {
        self.signing_input
    }
    /// Splits off what the signature's verdict will be applied to.
    pub(crate) fn into_parts(self) -> (Vec<u8>, Parsed) {
        (self.signature, self.parsed)
    }
}

/// Decodes one base64url segment (no padding, canonical trailing bits).
fn segment(text: &str) -> Result<Vec<u8>, Reason> {
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| Reason::TokenMalformed)
}

/// Whether the token's header names a `kid` (a string): what tells a token whose key may
/// have rotated since the keys were fetched from one that names no key at all. Only read
/// for tokens refused `key_unknown`.
pub(crate) fn names_kid(token: &str) -> bool {
    token
        .split('.')
        .next()
        .and_then(|h| segment(h).ok())
        // The header's own parser: no second JSON reader in the wasm modules.
        .and_then(|bytes| unique_object(&bytes).ok())
        .is_some_and(|header| header.get("kid").is_some_and(Value::is_string))
}

/// Parses the token and selects its key: everything before the signature check.
pub(crate) fn prepare<'c, 't>(
    config: &'c Config,
    token: &'t str,
) -> Result<Prepared<'c, 't>, Reason> {
    if token.len() > config.max_token_bytes {
        return Err(Reason::TokenTooLarge);
    }
    let (signing_input, signature_b64) = token.rsplit_once('.').ok_or(Reason::TokenMalformed)?;
    let (header_b64, payload_b64) = signing_input
        .split_once('.')
        .ok_or(Reason::TokenMalformed)?;
    if payload_b64.contains('.') {
        return Err(Reason::TokenMalformed);
    }
    let header = unique_object(&segment(header_b64)?)?;
    let header = Header::deserialize(Value::Object(header)).map_err(|_| Reason::TokenMalformed)?;
    let signature = segment(signature_b64)?;
    // RFC 7515 §4.1.10: `json` means `application/json`. Anything else (a nested `JWT`
    // above all) is refused: Tessera tokens are never nested.
    if header
        .cty
        .as_deref()
        .is_some_and(|c| normalise_typ(c) != "json")
    {
        return Err(Reason::TokenMalformed);
    }
    if header.crit.is_some() {
        return Err(Reason::CritUnsupported);
    }
    // RFC 8725 §3.1: the accepted algorithms are fixed by us; `none` and HS* end here.
    let alg = KeyAlg::from_name(&header.alg).ok_or(Reason::AlgNotAllowed)?;
    // RFC 8725 §3.10: `kid` only selects among the configured keys.
    let kid = header.kid.as_deref().ok_or(Reason::KeyUnknown)?;
    let key = match config.keys.get(kid) {
        Some(k) => k,
        // Keys come from sync and none have arrived: not the token's fault.
        None if config.keys.is_empty() => return Err(Reason::KeysUnavailable),
        None => return Err(Reason::KeyUnknown),
    };
    if key.alg != alg {
        return Err(Reason::AlgNotAllowed);
    }
    let typ = header
        .typ
        .as_deref()
        .map(normalise_typ)
        .ok_or(Reason::TypeMismatch)?;
    // Signature form, then claims, then the signature itself: the same order on both
    // signature paths, so a host-checked signature and a Rust-checked one give the same
    // reason for every token.
    if signature_form(&key.material, &signature).is_none() {
        return Err(Reason::SignatureInvalid);
    }
    let claims = unique_object(&segment(payload_b64)?)?;
    // The registered time claims are integers (NumericDate as whole seconds) or absent.
    for name in ["exp", "nbf", "iat"] {
        match claims.get(name) {
            None | Some(Value::Null) => {}
            Some(v) if v.as_i64().is_some() => {}
            Some(_) => return Err(Reason::TokenMalformed),
        }
    }
    Ok(Prepared {
        key,
        signing_input,
        signature,
        parsed: Parsed {
            typ,
            claims,
            key_issuer: key.issuer.clone(),
        },
    })
}

/// Checks the token's form, signature and the claims that do not depend on the request.
/// `now` is only used for `iat` (which, once acceptable, stays acceptable) and the lifetime
/// of tokens without `iat`.
pub fn verify(config: &Config, token: &str, now: u64) -> Result<VerifiedToken, Reason> {
    let p = prepare(config, token)?;
    if !signature_ok(&p.key.material, p.signing_input.as_bytes(), &p.signature) {
        return Err(Reason::SignatureInvalid);
    }
    static_claims(config, &p.parsed, now)
}

/// As [`verify`], with the signature already checked by the host (WebCrypto, Envoy's
/// BoringSSL): `signature_valid` is the host's verdict on `prepare`'s signing input.
pub(crate) fn verify_parsed(
    config: &Config,
    parsed: &Parsed,
    signature_valid: bool,
    now: u64,
) -> Result<VerifiedToken, Reason> {
    if !signature_valid {
        return Err(Reason::SignatureInvalid);
    }
    static_claims(config, parsed, now)
}

fn time_claim(m: &Map<String, Value>, name: &str) -> Option<i64> {
    m.get(name).and_then(Value::as_i64)
}

fn static_claims(config: &Config, parsed: &Parsed, now: u64) -> Result<VerifiedToken, Reason> {
    let typ = &parsed.typ;
    if !config.token_types.iter().any(|t| t == typ) {
        return Err(Reason::TypeMismatch);
    }
    let typ = typ.clone();

    let m = &parsed.claims;
    let iss = string_claim(m, "iss")?;
    if !config.issuers.contains(&iss) {
        return Err(Reason::IssuerMismatch);
    }
    // RFC 8725 §3.8: the key must belong to the issuer the token names.
    if parsed.key_issuer.as_ref().is_some_and(|k| *k != iss) {
        return Err(Reason::IssuerMismatch);
    }
    audience_ok(m, &config.audiences)?;

    let (exp, nbf, iat) = (
        time_claim(m, "exp"),
        time_claim(m, "nbf"),
        time_claim(m, "iat"),
    );
    let exp = exp.ok_or(Reason::ClaimMissing)?;
    if exp <= 0 {
        return Err(Reason::Expired);
    }
    let exp = exp as u64;
    let skew = config.clock_skew_secs;
    let nbf = match nbf {
        Some(n) if n < 0 => Some(0),
        Some(n) => Some(n as u64),
        None => None,
    };
    if let Some(iat) = iat {
        if iat > 0 && (iat as u64) > now.saturating_add(skew) {
            return Err(Reason::IssuedInFuture);
        }
    }
    let start = match iat {
        Some(i) if i > 0 => i as u64,
        _ => now,
    };
    if exp.saturating_sub(start) > config.max_lifetime_secs {
        return Err(Reason::LifetimeTooLong);
    }

    let sub = string_claim(m, "sub")?;
    let org = string_claim(m, "org")?;
    let jti = string_claim(m, "jti")?;
    let scopes = match optional_string(m, "scope")? {
        Some(s) => token::scopes(&s).map(str::to_string).collect(),
        None => Vec::new(),
    };
    let ip_allow = match m.get("ip_allow") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for it in items {
                // An unparsable entry must not silently widen or narrow the filter.
                let c = it
                    .as_str()
                    .and_then(Cidr::parse)
                    .ok_or(Reason::ClaimMissing)?;
                out.push(c);
            }
            out
        }
        Some(_) => return Err(Reason::ClaimMissing),
    };
    let status = status_claim(m)?;
    if status.is_none() && config.status_required {
        return Err(Reason::ClaimMissing);
    }
    let parent = optional_string(m, "parent")?;
    // The username at issuance, for the identity headers; tokens minted before it existed
    // have none. Like every claim that reaches a header, it must be a string without
    // control characters.
    let username = optional_string(m, "preferred_username")?;

    Ok(VerifiedToken {
        sub,
        org,
        jti,
        typ,
        scopes,
        exp,
        nbf,
        ip_allow,
        status,
        parent,
        username,
    })
}

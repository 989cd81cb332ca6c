//! Signature and static-claim checks: everything about a token that does not depend on the
//! request or on the passing of time, so its result may be cached.

use jwt_compact::alg::{Es256, Rsa};
use jwt_compact::{Algorithm, AlgorithmSignature, Claims, UntrustedToken};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::{normalise_typ, Config};
use crate::decision::Reason;
use crate::eddsa::EdDsa;
use crate::ip::Cidr;
use crate::jwks::{Key, KeyAlg, KeyMaterial};

/// Header parameters we read beyond what jwt-compact parses.
#[derive(Clone, Debug, Default, Deserialize)]
struct ExtraHeader {
    #[serde(default)]
    crit: Option<Value>,
}

/// Where a token's status lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusRef {
    /// Index in the list.
    pub idx: u64,
    /// The list's uri.
    pub uri: String,
}

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
}

fn to_ts<T>(c: &Claims<T>) -> (Option<i64>, Option<i64>, Option<i64>) {
    (
        c.expiration.map(|d| d.timestamp()),
        c.not_before.map(|d| d.timestamp()),
        c.issued_at.map(|d| d.timestamp()),
    )
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
            let mut any_string = false;
            for v in list {
                match v {
                    Value::String(a) => {
                        any_string = true;
                        if audiences.iter().any(|x| x == a) {
                            return Ok(());
                        }
                    }
                    _ => return Err(Reason::ClaimMissing),
                }
            }
            if any_string {
                Err(Reason::AudienceMismatch)
            } else {
                Err(Reason::ClaimMissing)
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

/// Whether `signature` has the form the key's algorithm requires (length, and values in
/// range): jwt-compact checks this before it parses the claims, and so do we.
fn signature_well_formed(material: &KeyMaterial, signature: &[u8]) -> bool {
    fn form<A: Algorithm>(signature: &[u8]) -> bool {
        if let Some(len) = A::Signature::LENGTH {
            if signature.len() != len.get() {
                return false;
            }
        }
        A::Signature::try_from_slice(signature).is_ok()
    }
    match material {
        KeyMaterial::Ed25519(_) => form::<EdDsa>(signature),
        KeyMaterial::Es256(_) => form::<Es256>(signature),
        KeyMaterial::Rs256(_) => form::<Rsa>(signature),
    }
}

/// Verifies raw JWS signature bytes over `message` with the key's pinned algorithm.
pub(crate) fn signature_ok(material: &KeyMaterial, message: &[u8], signature: &[u8]) -> bool {
    fn check<A: Algorithm>(
        alg: &A,
        key: &A::VerifyingKey,
        message: &[u8],
        signature: &[u8],
    ) -> bool {
        if let Some(len) = A::Signature::LENGTH {
            if signature.len() != len.get() {
                return false;
            }
        }
        match A::Signature::try_from_slice(signature) {
            Ok(sig) => alg.verify_signature(&sig, key, message),
            Err(_) => false,
        }
    }
    match material {
        KeyMaterial::Ed25519(k) => check(&EdDsa, k, message, signature),
        KeyMaterial::Es256(k) => check(&Es256, k, message, signature),
        KeyMaterial::Rs256(k) => check(&Rsa::rs256(), k, message, signature),
    }
}

/// A token whose form and key selection passed; its signature is still to be checked.
pub(crate) struct Prepared<'c, 't> {
    untrusted: UntrustedToken<'t, ExtraHeader>,
    key: &'c Key,
    typ: String,
    signing_input: &'t str,
    claims: Claims<Map<String, Value>>,
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
    /// The decoded signature bytes.
    pub(crate) fn signature(&self) -> &[u8] {
        self.untrusted.signature_bytes()
    }
}

/// Parses the token and selects its key: everything before the signature check.
pub(crate) fn prepare<'c, 't>(
    config: &'c Config,
    token: &'t str,
) -> Result<Prepared<'c, 't>, Reason> {
    if token.len() > config.max_token_bytes {
        return Err(Reason::TokenTooLarge);
    }
    let untrusted =
        UntrustedToken::<ExtraHeader>::try_from(token).map_err(|_| Reason::TokenMalformed)?;
    let header = untrusted.header();
    if header.other_fields.crit.is_some() {
        return Err(Reason::CritUnsupported);
    }
    // RFC 8725 §3.1: the accepted algorithms are fixed by us; `none` and HS* end here.
    let alg = KeyAlg::from_name(untrusted.algorithm()).ok_or(Reason::AlgNotAllowed)?;
    let kid = header.key_id.as_deref().ok_or(Reason::KeyUnknown)?;
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
        .token_type
        .as_deref()
        .map(normalise_typ)
        .ok_or(Reason::TypeMismatch)?;
    // Same order as jwt-compact's validator, so a host-checked signature and a Rust-checked
    // one give the same reason: signature form, then claims, then the signature itself.
    if !signature_well_formed(&key.material, untrusted.signature_bytes()) {
        return Err(Reason::SignatureInvalid);
    }
    let claims = untrusted
        .deserialize_claims_unchecked::<Map<String, Value>>()
        .map_err(|_| Reason::TokenMalformed)?;
    let signing_input = token.rsplit_once('.').map(|(a, _)| a).unwrap_or("");
    Ok(Prepared {
        untrusted,
        key,
        typ,
        signing_input,
        claims,
    })
}

/// Checks the token's form, signature and the claims that do not depend on the request.
/// `now` is only used for `iat` (which, once acceptable, stays acceptable) and the lifetime
/// of tokens without `iat`.
pub fn verify(config: &Config, token: &str, now: u64) -> Result<VerifiedToken, Reason> {
    let p = prepare(config, token)?;
    if !signature_ok(&p.key.material, p.signing_input.as_bytes(), p.signature()) {
        return Err(Reason::SignatureInvalid);
    }
    static_claims(config, &p.claims, &p.typ, now)
}

/// As [`verify`], with the signature already checked by the host (WebCrypto, Envoy's
/// BoringSSL): `signature_valid` is the host's verdict on `prepare`'s signing input.
pub(crate) fn verify_prepared(
    config: &Config,
    p: &Prepared<'_, '_>,
    signature_valid: bool,
    now: u64,
) -> Result<VerifiedToken, Reason> {
    if !signature_valid {
        return Err(Reason::SignatureInvalid);
    }
    static_claims(config, &p.claims, &p.typ, now)
}

fn static_claims(
    config: &Config,
    claims: &Claims<Map<String, Value>>,
    typ: &str,
    now: u64,
) -> Result<VerifiedToken, Reason> {
    if !config.token_types.iter().any(|t| t == typ) {
        return Err(Reason::TypeMismatch);
    }
    let typ = typ.to_string();

    let m = &claims.custom;
    let iss = string_claim(m, "iss")?;
    if !config.issuers.contains(&iss) {
        return Err(Reason::IssuerMismatch);
    }
    audience_ok(m, &config.audiences)?;

    let (exp, nbf, iat) = to_ts(claims);
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
        Some(s) => s
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
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
    })
}

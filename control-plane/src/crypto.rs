//! Keys and signatures: the master key that seals org private keys, org key generation,
//! JWKS entries, and JWT signing (EdDSA and ES256) with jwt-compact. Tokens are checked by
//! core's verifier only (`auth`), never by a second implementation here.

use crate::model::KeyAlg;
use crate::service::{Error as ApiError, Result as ApiResult};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use jwt_compact::AlgorithmExt as _;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tessera_core::{Claims, TokenType};

pub fn random_bytes<const N: usize>() -> ApiResult<[u8; N]> {
    let mut buf = [0u8; N];
    getrandom::getrandom(&mut buf).map_err(|e| ApiError::internal(format!("getrandom: {e}")))?;
    Ok(buf)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An identifier with a type prefix, e.g. `tok_0193a1f2c4de5f0c...`: the creation time in
/// milliseconds (48 bits, hex) then 64 random bits. Ids made later sort after earlier ones,
/// so listings ordered by a whole-second time and then by id keep creation order within
/// a second; ids are names, never credentials (every use is authorized on its own).
pub fn new_id(prefix: &str) -> ApiResult<String> {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    // 48 bits of milliseconds last until the year 10889.
    let ms = u64::try_from(ms).unwrap_or(u64::MAX) & 0xFFFF_FFFF_FFFF;
    Ok(format!("{prefix}_{ms:012x}{}", hex(&random_bytes::<8>()?)))
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

pub fn b64url(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

/// The 256-bit key that seals org private keys at rest (XChaCha20-Poly1305).
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        MasterKey(bytes)
    }

    /// Parses 64 hex digits or the standard/url-safe base64 of 32 bytes.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            (0..32)
                .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .map_err(|e| e.to_string())?
        } else {
            STANDARD
                .decode(text)
                .or_else(|_| URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')))
                .map_err(|_| {
                    "master key: expected 64 hex digits or base64 of 32 bytes".to_string()
                })?
        };
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "master key: must be exactly 32 bytes".to_string())?;
        Ok(MasterKey(arr))
    }

    pub fn generate() -> ApiResult<Self> {
        Ok(MasterKey(random_bytes()?))
    }

    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// `nonce || ciphertext`; `aad` binds the ciphertext to its record (the key id).
    pub fn seal(&self, aad: &str, plaintext: &[u8]) -> ApiResult<Vec<u8>> {
        let cipher = XChaCha20Poly1305::new((&self.0).into());
        let nonce = random_bytes::<24>()?;
        let ct = cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| ApiError::internal("seal failed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Ok(out)
    }

    pub fn open(&self, aad: &str, sealed: &[u8]) -> ApiResult<Vec<u8>> {
        if sealed.len() < 24 {
            return Err(ApiError::internal("sealed value too short"));
        }
        let (nonce, ct) = sealed.split_at(24);
        let nonce: [u8; 24] = nonce
            .try_into()
            .map_err(|_| ApiError::internal("sealed value too short"))?;
        let cipher = XChaCha20Poly1305::new((&self.0).into());
        cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: ct,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| ApiError::internal("cannot open a sealed key: wrong master key?"))
    }
}

/// A freshly generated key pair: the 32-byte private scalar/seed and the public JWK
/// (with `kid` = its RFC 7638 thumbprint, `alg` and `use`).
pub struct GeneratedKey {
    pub kid: String,
    pub secret: [u8; 32],
    pub public_jwk: Value,
}

pub fn generate_key(alg: KeyAlg) -> ApiResult<GeneratedKey> {
    let secret: [u8; 32] = random_bytes()?;
    let (secret, members) = match alg {
        KeyAlg::EdDSA => {
            let kp = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(secret));
            (
                secret,
                json!({"crv": "Ed25519", "kty": "OKP", "x": b64url(kp.pk.as_ref())}),
            )
        }
        KeyAlg::ES256 => {
            // A random 32-byte string is a valid scalar except with negligible probability;
            // draw again rather than fail.
            let mut secret = secret;
            let sk = loop {
                match p256::ecdsa::SigningKey::from_slice(&secret) {
                    Ok(sk) => break sk,
                    Err(_) => secret = random_bytes()?,
                }
            };
            let point = sk.verifying_key().to_encoded_point(false);
            let (Some(x), Some(y)) = (point.x(), point.y()) else {
                return Err(ApiError::internal("P-256 point has no coordinates"));
            };
            (
                secret,
                json!({"crv": "P-256", "kty": "EC", "x": b64url(x), "y": b64url(y)}),
            )
        }
    };
    // serde_json's map is ordered by key, which is the RFC 7638 canonical form.
    let kid = b64url(&Sha256::digest(members.to_string().as_bytes()));
    let mut jwk = members;
    if let Value::Object(m) = &mut jwk {
        m.insert("kid".into(), json!(kid));
        m.insert("alg".into(), json!(alg.as_str()));
        m.insert("use".into(), json!("sig"));
    }
    Ok(GeneratedKey {
        kid,
        secret,
        public_jwk: jwk,
    })
}

/// jwt-compact's signing key for `alg` from the stored 32-byte secret (Ed25519 seed or
/// P-256 scalar), and the signature over `header.claims` as a compact JWS.
fn jwt_compact_sign<C: serde::Serialize>(
    alg: KeyAlg,
    secret: &[u8],
    header: &jwt_compact::Header,
    claims: &C,
) -> ApiResult<String> {
    let claims = jwt_compact::Claims::new(claims);
    let token = match alg {
        KeyAlg::EdDSA => {
            let seed: [u8; 32] = secret
                .try_into()
                .map_err(|_| ApiError::internal("bad Ed25519 seed"))?;
            let sk = ed25519_dalek::SigningKey::from_bytes(&seed);
            jwt_compact::alg::Ed25519.token(header, &claims, &sk)
        }
        KeyAlg::ES256 => {
            let sk = p256::ecdsa::SigningKey::from_slice(secret)
                .map_err(|_| ApiError::internal("bad P-256 key"))?;
            jwt_compact::alg::Es256.token(header, &claims, &sk)
        }
    };
    token.map_err(|e| ApiError::internal(format!("cannot sign a JWT: {e}")))
}

/// Signs a Tessera token: header `{alg, kid, typ}` and the shared claims type
/// ([`tessera_core::Claims`], what core's verifier checks), with jwt-compact.
pub fn sign_token(
    alg: KeyAlg,
    kid: &str,
    secret: &[u8],
    typ: TokenType,
    claims: &Claims,
) -> ApiResult<String> {
    let header = jwt_compact::Header::empty()
        .with_key_id(kid)
        .with_token_type(typ.as_str());
    jwt_compact_sign(alg, secret, &header, claims)
}

/// The length of the compact JWS [`sign_token`] would make, computed without a key: the
/// header's and the claims' JSON (jwt-compact writes compact JSON, so the length does not
/// depend on member order), base64url without padding, and a signature of 64 bytes (both
/// Ed25519 and ES256's fixed-size `r || s`).
pub fn token_len(alg: KeyAlg, kid: &str, typ: TokenType, claims: &Claims) -> ApiResult<usize> {
    let header = serde_json::json!({"alg": alg.as_str(), "kid": kid, "typ": typ.as_str()});
    let b64 = |n: usize| (n * 4).div_ceil(3);
    let header = serde_json::to_vec(&header)
        .map_err(ApiError::internal)?
        .len();
    let claims = serde_json::to_vec(claims)
        .map_err(ApiError::internal)?
        .len();
    const SIGNATURE: usize = 64;
    Ok(b64(header) + 1 + b64(claims) + 1 + b64(SIGNATURE))
}

/// Signs any JSON-object `claims` (e.g. a `statuslist+jwt`) as a compact JWS with header
/// `{alg, kid, typ}`, with jwt-compact. Tessera tokens go through [`sign_token`].
pub fn sign_jws(
    alg: KeyAlg,
    kid: &str,
    secret: &[u8],
    typ: &str,
    claims: &Value,
) -> ApiResult<String> {
    if !claims.is_object() {
        return Err(ApiError::internal("JWT claims must be a JSON object"));
    }
    let header = jwt_compact::Header::empty()
        .with_key_id(kid)
        .with_token_type(typ);
    jwt_compact_sign(alg, secret, &header, claims)
}

/// A compact JWS split and decoded, signature not checked: for reading a token that core's
/// verifier has already accepted. It verifies nothing.
pub struct UntrustedJws {
    pub header: serde_json::Map<String, Value>,
    pub claims: serde_json::Map<String, Value>,
}

impl UntrustedJws {
    pub fn parse(token: &str) -> Result<Self, &'static str> {
        let mut parts = token.splitn(4, '.');
        let (Some(h), Some(c), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("not a compact JWS");
        };
        let decode = |p: &str| URL_SAFE_NO_PAD.decode(p).map_err(|_| "bad base64url");
        let header: Value =
            serde_json::from_slice(&decode(h)?).map_err(|_| "header is not JSON")?;
        let claims: Value =
            serde_json::from_slice(&decode(c)?).map_err(|_| "claims are not JSON")?;
        let (Value::Object(header), Value::Object(claims)) = (header, claims) else {
            return Err("header and claims must be JSON objects");
        };
        Ok(UntrustedJws { header, claims })
    }

    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header.get(name).and_then(Value::as_str)
    }

    /// The claims as the shared Tessera type.
    pub fn tessera_claims(&self) -> Result<Claims, serde_json::Error> {
        serde_json::from_value(Value::Object(self.claims.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_made_later_sort_later() {
        let mut ids = Vec::new();
        for _ in 0..50 {
            ids.push(new_id("tok").unwrap());
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted, "ids must sort in creation order");
        assert!(
            ids.iter()
                .all(|i| i.len() == "tok_".len() + 28
                    && i[4..].bytes().all(|b| b.is_ascii_hexdigit()))
        );
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
    }

    use tessera_core::config::Config;
    use tessera_core::token::{Status, StatusListRef};
    use tessera_core::{Decision, Reason, Request, Verifier};

    fn claims(now: i64) -> Claims {
        Claims {
            iss: "https://cp/v1/orgs/acme".into(),
            sub: "usr_1".into(),
            preferred_username: Some("alice".into()),
            org: "acme".into(),
            jti: "tok_1".into(),
            aud: "tessera".into(),
            iat: Some(now),
            nbf: Some(now),
            exp: now + 60,
            scope: Some("read".into()),
            ip_allow: vec![],
            status: Some(Status {
                status_list: StatusListRef {
                    idx: 0,
                    uri: "https://cp/v1/orgs/acme/status-list".into(),
                },
            }),
            parent: None,
            client_id: None,
        }
    }

    /// Core's decision on `jwt` with the public JWK `jwk` (pinned to its `alg`).
    fn decide(jwk: &Value, jwt: &str, now: i64) -> Decision {
        let config = Config::builder()
            .issuer("https://cp/v1/orgs/acme")
            .audience("tessera")
            .jwks(json!({ "keys": [jwk] }))
            .status_list(
                "https://cp/v1/orgs/acme/status-list",
                tessera_core::StatusList::new(4),
            )
            .build()
            .unwrap();
        let headers = [("authorization".to_string(), format!("Bearer {jwt}"))];
        let req = Request {
            method: "GET",
            path: "/",
            headers: &headers,
            source_address: None,
        };
        Verifier::new(config).check(&req, now as u64, None).decision
    }

    #[test]
    fn minted_tokens_pass_cores_verifier_for_both_algorithms() {
        let now = 1_800_000_000;
        for alg in [KeyAlg::EdDSA, KeyAlg::ES256] {
            let k = generate_key(alg).unwrap();
            let c = claims(now);
            let jwt = sign_token(alg, &k.kid, &k.secret, TokenType::Api, &c).unwrap();
            assert!(matches!(
                decide(&k.public_jwk, &jwt, now),
                Decision::Allow(_)
            ));
            let parsed = UntrustedJws::parse(&jwt).unwrap();
            assert_eq!(parsed.header_str("kid"), Some(k.kid.as_str()));
            assert_eq!(parsed.header_str("alg"), Some(alg.as_str()));
            assert_eq!(parsed.header_str("typ"), Some("tessera-api+jwt"));
            assert_eq!(parsed.tessera_claims().unwrap(), c);
            // The token never chooses the algorithm: the other algorithm's key refuses it.
            let other = generate_key(match alg {
                KeyAlg::EdDSA => KeyAlg::ES256,
                KeyAlg::ES256 => KeyAlg::EdDSA,
            })
            .unwrap();
            let mut other_jwk = other.public_jwk.clone();
            other_jwk["kid"] = json!(k.kid);
            assert_eq!(
                decide(&other_jwk, &jwt, now).reason(),
                Some(Reason::AlgNotAllowed)
            );
            // A flipped signature bit fails.
            let tampered = tessera_testkit::tamper_signature(&jwt);
            assert_eq!(
                decide(&k.public_jwk, &tampered, now).reason(),
                Some(Reason::SignatureInvalid)
            );
            // Untyped claims sign the same way (the status list JWT).
            let raw = sign_jws(
                alg,
                &k.kid,
                &k.secret,
                "statuslist+jwt",
                &json!({"sub": "u"}),
            );
            let raw = UntrustedJws::parse(&raw.unwrap()).unwrap();
            assert_eq!(raw.claims.get("sub"), Some(&json!("u")));
            assert!(sign_jws(alg, &k.kid, &k.secret, "x", &json!([1])).is_err());
        }
    }

    /// The computed length is the signed token's, for both algorithms and claims of every
    /// size (escaped characters, IP filters, the exchange's extra claims, no status).
    #[test]
    fn the_computed_length_is_the_signed_tokens() {
        let now = 1_800_000_000;
        for alg in [KeyAlg::EdDSA, KeyAlg::ES256] {
            let k = generate_key(alg).unwrap();
            let mut c = claims(now);
            for step in 0..40 {
                for typ in [TokenType::Api, TokenType::Access] {
                    let jwt = sign_token(alg, &k.kid, &k.secret, typ, &c).unwrap();
                    assert_eq!(
                        token_len(alg, &k.kid, typ, &c).unwrap(),
                        jwt.len(),
                        "{alg:?} {step}"
                    );
                }
                c.scope = Some(format!(
                    "{} s{step}\"é/",
                    c.scope.clone().unwrap_or_default()
                ));
                c.ip_allow
                    .push(format!("10.{step}.0.0/16").parse().unwrap());
                if let Some(st) = c.status.as_mut() {
                    st.status_list.idx = u64::from(u32::MAX) >> (step % 30);
                }
                if step == 20 {
                    c.parent = Some("tok_parent".into());
                    c.client_id = Some("tok_parent".into());
                }
                if step == 30 {
                    c.status = None;
                    c.nbf = None;
                }
            }
        }
    }

    #[test]
    fn master_key_seals_and_binds_aad() {
        let mk = MasterKey::generate().unwrap();
        let sealed = mk.seal("kid1", b"secret").unwrap();
        assert_eq!(mk.open("kid1", &sealed).unwrap(), b"secret");
        assert!(mk.open("kid2", &sealed).is_err());
        assert!(MasterKey::generate()
            .unwrap()
            .open("kid1", &sealed)
            .is_err());
        let again = MasterKey::parse(&mk.to_hex()).unwrap();
        assert_eq!(again.open("kid1", &sealed).unwrap(), b"secret");
        assert!(MasterKey::parse("short").is_err());
    }
}

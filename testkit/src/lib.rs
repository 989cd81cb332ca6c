//! Test fixtures generated at run time: signing keys (Ed25519, P-256, RSA-2048), JWKS
//! documents, Tessera tokens — valid ones and deliberately hostile ones — and token status
//! lists.
//!
//! Nothing here is checked in: every key is generated fresh, so no test depends on a
//! fixture file, and no private key ever lands in the repository.
//!
//! Well-formed tokens are minted from the shared token types (`tessera_core::token`) and
//! signed by `jwt-compact` ([`TestKey::mint`], [`TokenBuilder::sign`]), an implementation
//! independent of core's parser. The hostile ones (forged `alg`, `none`, HS256 keyed with
//! public key bytes, arbitrary signature bytes, raw segments) are put together by hand here,
//! because no library will produce them.
//!
//! ```
//! use tessera_testkit::{jwks, now, Alg, TestKey, TokenBuilder};
//!
//! let key = TestKey::generate(Alg::EdDSA, "k1");
//! let set = jwks(&[&key]);
//! let token = TokenBuilder::new(now()).claim("scope", "read write").sign(&key);
//! assert_eq!(token.split('.').count(), 3);
//! assert_eq!(set["keys"][0]["kid"], "k1");
//! ```

use std::collections::BTreeSet;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use jwt_compact::AlgorithmExt as _;
use rand_core::OsRng;
use rsa::pkcs1::EncodeRsaPublicKey;
use rsa::traits::{PrivateKeyParts, PublicKeyParts};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use tessera_core::token::{Claims, Status, StatusListRef, TokenType};

/// The issuer every default token carries (`<control-plane-base>/v1/orgs/<org-id>`).
pub const DEFAULT_ISSUER: &str = "https://cp.tessera.test/v1/orgs/acme";
/// The audience every default token carries.
pub const DEFAULT_AUDIENCE: &str = "tessera";
/// The status list URI every default token points to.
pub const DEFAULT_STATUS_URI: &str = "https://cp.tessera.test/v1/orgs/acme/status-list";
/// The `typ` of a Tessera API token (core's constant).
pub const API_TOKEN_TYPE: &str = tessera_core::token::TYP_API_TOKEN;
/// The `typ` of a short-lived access token (RFC 9068; core's constant).
pub const ACCESS_TOKEN_TYPE: &str = tessera_core::token::TYP_ACCESS_TOKEN;
/// RSA modulus size used for every generated RSA key.
pub const RSA_BITS: usize = 2048;

/// Current Unix time in seconds.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// base64url without padding (the JOSE encoding).
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url without padding; `None` if it is not valid.
pub fn b64url_decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// Joins raw header bytes, raw claims bytes and raw signature bytes into a compact JWS.
/// Useful for byte-level hostile tokens (non-JSON header, duplicate members, ...).
pub fn compact(header: &[u8], claims: &[u8], signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64url(header),
        b64url(claims),
        b64url(signature)
    )
}

/// Returns `token` with one bit of its signature flipped (same length, wrong bytes).
/// The token must be a compact JWS with a non-empty signature.
pub fn tamper_signature(token: &str) -> String {
    let (input, sig) = token.rsplit_once('.').expect("token has three parts");
    let mut bytes = b64url_decode(sig).expect("signature part is base64url");
    let last = bytes.last_mut().expect("signature is not empty");
    *last ^= 0x01;
    format!("{input}.{}", b64url(&bytes))
}

/// HMAC-SHA-256 of `message` keyed with `secret`.
pub fn hmac_sha256(secret: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// The JWS algorithms Tessera keys pin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Alg {
    /// Ed25519.
    EdDSA,
    /// ECDSA P-256 with SHA-256.
    ES256,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
}

impl Alg {
    /// The JOSE name: `"EdDSA"`, `"ES256"` or `"RS256"`.
    pub fn name(self) -> &'static str {
        match self {
            Alg::EdDSA => "EdDSA",
            Alg::ES256 => "ES256",
            Alg::RS256 => "RS256",
        }
    }

    /// All supported algorithms.
    pub const ALL: [Alg; 3] = [Alg::EdDSA, Alg::ES256, Alg::RS256];
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Clone)]
enum KeyMaterial {
    Ed25519(ed25519_compact::KeyPair),
    P256(p256::ecdsa::SigningKey),
    Rsa(Box<rsa::RsaPrivateKey>),
}

/// A freshly generated signing key (private and public half), its `kid` and pinned `alg`.
#[derive(Clone)]
pub struct TestKey {
    kid: String,
    alg: Alg,
    material: KeyMaterial,
}

impl fmt::Debug for TestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl TestKey {
    /// Generates a new key for `alg` (RSA: 2048 bits) with the given `kid`.
    pub fn generate(alg: Alg, kid: &str) -> TestKey {
        let material = match alg {
            Alg::EdDSA => KeyMaterial::Ed25519(ed25519_compact::KeyPair::generate()),
            Alg::ES256 => KeyMaterial::P256(p256::ecdsa::SigningKey::random(&mut OsRng)),
            Alg::RS256 => KeyMaterial::Rsa(Box::new(
                rsa::RsaPrivateKey::new(&mut OsRng, RSA_BITS).expect("RSA key generation"),
            )),
        };
        TestKey {
            kid: kid.to_owned(),
            alg,
            material,
        }
    }

    /// Generates an RSA key of a given size (e.g. 1024 bits, to test that short moduli are
    /// refused). The key is labelled `RS256`.
    pub fn generate_rsa_bits(kid: &str, bits: usize) -> TestKey {
        TestKey {
            kid: kid.to_owned(),
            alg: Alg::RS256,
            material: KeyMaterial::Rsa(Box::new(
                rsa::RsaPrivateKey::new(&mut OsRng, bits).expect("RSA key generation"),
            )),
        }
    }

    /// The same key material under another `kid`.
    pub fn with_kid(&self, kid: &str) -> TestKey {
        TestKey {
            kid: kid.to_owned(),
            ..self.clone()
        }
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The algorithm the key is pinned to.
    pub fn alg(&self) -> Alg {
        self.alg
    }

    /// The public JWK (RFC 7517/7518/8037), base64url members without padding:
    /// OKP `{"kty","crv":"Ed25519","x"}`, EC `{"kty","crv":"P-256","x","y"}` or
    /// RSA `{"kty","n","e"}`, each with `"kid"`, `"alg"` and `"use":"sig"`.
    pub fn public_jwk(&self) -> Value {
        let mut jwk = match &self.material {
            KeyMaterial::Ed25519(kp) => json!({
                "kty": "OKP",
                "crv": "Ed25519",
                "x": b64url(kp.pk.as_ref()),
            }),
            KeyMaterial::P256(sk) => {
                let point = sk.verifying_key().to_encoded_point(false);
                json!({
                    "kty": "EC",
                    "crv": "P-256",
                    "x": b64url(point.x().expect("uncompressed point has x")),
                    "y": b64url(point.y().expect("uncompressed point has y")),
                })
            }
            KeyMaterial::Rsa(sk) => json!({
                "kty": "RSA",
                "n": b64url(&sk.n().to_bytes_be()),
                "e": b64url(&sk.e().to_bytes_be()),
            }),
        };
        if let Value::Object(map) = &mut jwk {
            map.insert("kid".into(), Value::String(self.kid.clone()));
            map.insert("alg".into(), Value::String(self.alg.name().into()));
            map.insert("use".into(), Value::String("sig".into()));
        }
        jwk
    }

    /// The private JWK: [`TestKey::public_jwk`] plus the private members (`d`, and for RSA
    /// `p`, `q`, `dp`, `dq`, `qi`). A verifier must refuse this in its configuration.
    pub fn private_jwk(&self) -> Value {
        let mut jwk = self.public_jwk();
        let Value::Object(map) = &mut jwk else {
            return jwk;
        };
        match &self.material {
            KeyMaterial::Ed25519(kp) => {
                // ed25519-compact's secret key is seed || public key; the JWK `d` is the seed.
                map.insert("d".into(), Value::String(b64url(kp.sk.seed().as_ref())));
            }
            KeyMaterial::P256(sk) => {
                map.insert("d".into(), Value::String(b64url(&sk.to_bytes())));
            }
            KeyMaterial::Rsa(sk) => {
                map.insert("d".into(), Value::String(b64url(&sk.d().to_bytes_be())));
                let primes = sk.primes();
                if primes.len() >= 2 {
                    map.insert("p".into(), Value::String(b64url(&primes[0].to_bytes_be())));
                    map.insert("q".into(), Value::String(b64url(&primes[1].to_bytes_be())));
                }
            }
        }
        jwk
    }

    /// Signs `signing_input` and returns the raw JWS signature bytes:
    /// Ed25519 (64 bytes), ES256 `r || s` (64 bytes, not DER) or RS256 PKCS#1 v1.5 with
    /// SHA-256 (256 bytes for a 2048-bit key).
    pub fn sign(&self, signing_input: &[u8]) -> Vec<u8> {
        match &self.material {
            KeyMaterial::Ed25519(kp) => kp.sk.sign(signing_input, None).to_vec(),
            KeyMaterial::P256(sk) => {
                use p256::ecdsa::signature::Signer;
                let sig: p256::ecdsa::Signature = sk.sign(signing_input);
                sig.to_bytes().to_vec()
            }
            KeyMaterial::Rsa(sk) => {
                let digest = Sha256::digest(signing_input);
                sk.sign(rsa::Pkcs1v15Sign::new::<Sha256>(), &digest)
                    .expect("RSA PKCS#1 v1.5 signing")
            }
        }
    }

    /// A well-formed Tessera token: header `{alg, kid, typ}` and the shared [`Claims`],
    /// signed by jwt-compact with this key.
    pub fn mint(&self, typ: TokenType, claims: &Claims) -> String {
        let header = jwt_compact::Header::empty()
            .with_key_id(self.kid.clone())
            .with_token_type(typ.as_str());
        self.sign_with_jwt_compact(&header, &jwt_compact::Claims::new(claims))
    }

    /// Signs any header and claims with jwt-compact (the algorithm, hence `alg`, is the
    /// key's).
    fn sign_with_jwt_compact<H: serde::Serialize, C: serde::Serialize>(
        &self,
        header: &jwt_compact::Header<H>,
        claims: &jwt_compact::Claims<C>,
    ) -> String {
        let token = match &self.material {
            KeyMaterial::Ed25519(kp) => {
                let seed: [u8; 32] = *kp.sk.seed();
                let sk = ed25519_dalek::SigningKey::from_bytes(&seed);
                jwt_compact::alg::Ed25519.token(header, claims, &sk)
            }
            KeyMaterial::P256(sk) => jwt_compact::alg::Es256.token(header, claims, sk),
            KeyMaterial::Rsa(sk) => jwt_compact::alg::Rsa::rs256().token(header, claims, sk),
        };
        token.expect("jwt-compact signs JSON-object headers and claims")
    }

    /// Public key bytes an attacker could know, for the HS256 key-confusion attack:
    /// Ed25519 raw 32 bytes, P-256 SEC1 uncompressed point (65 bytes), RSA PKCS#1
    /// `RSAPublicKey` DER.
    pub fn public_key_bytes(&self) -> Vec<u8> {
        match &self.material {
            KeyMaterial::Ed25519(kp) => kp.pk.as_ref().to_vec(),
            KeyMaterial::P256(sk) => sk
                .verifying_key()
                .to_encoded_point(false)
                .as_bytes()
                .to_vec(),
            KeyMaterial::Rsa(sk) => sk
                .to_public_key()
                .to_pkcs1_der()
                .expect("PKCS#1 DER encoding")
                .as_bytes()
                .to_vec(),
        }
    }
}

/// A JWKS document `{"keys": [<public JWK>...]}`.
pub fn jwks(keys: &[&TestKey]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.public_jwk()).collect::<Vec<_>>() })
}

/// The claims of the default valid API token at `now` (Unix seconds): `iss`
/// [`DEFAULT_ISSUER`], `sub` "alice", `org` "acme", `jti` "tok_1", `aud`
/// [`DEFAULT_AUDIENCE`], `iat` and `nbf` now, `exp` now+3600, `scope` "read", `status`
/// index 0 of [`DEFAULT_STATUS_URI`].
pub fn default_claims(now: u64) -> Claims {
    let now = i64::try_from(now).expect("a Unix time fits i64");
    Claims {
        iss: DEFAULT_ISSUER.into(),
        sub: "alice".into(),
        preferred_username: None,
        org: "acme".into(),
        jti: "tok_1".into(),
        aud: DEFAULT_AUDIENCE.into(),
        iat: Some(now),
        nbf: Some(now),
        exp: now + 3600,
        scope: Some("read".into()),
        ip_allow: Vec::new(),
        status: Some(Status {
            status_list: StatusListRef {
                idx: 0,
                uri: DEFAULT_STATUS_URI.into(),
            },
        }),
        parent: None,
        client_id: None,
    }
}

/// Builds Tessera tokens: starts from a valid API token ([`default_claims`]) and lets a test
/// change any header member or claim, including into something no valid token has.
#[derive(Clone, Debug)]
pub struct TokenBuilder {
    header: Map<String, Value>,
    claims: Map<String, Value>,
    /// Header members set with [`TokenBuilder::header`] (never overwritten by `sign*`).
    explicit_header: BTreeSet<String>,
}

impl TokenBuilder {
    /// A valid Tessera API token's header and claims at `now` (Unix seconds):
    /// header `typ: "tessera-api+jwt"`; claims `iss` [`DEFAULT_ISSUER`], `sub` "alice",
    /// `org` "acme", `jti` "tok_1", `aud` [`DEFAULT_AUDIENCE`], `iat` now, `nbf` now,
    /// `exp` now+3600, `scope` "read",
    /// `status {"status_list": {"idx": 0, "uri": DEFAULT_STATUS_URI}}`.
    pub fn new(now: u64) -> Self {
        TokenBuilder::from_claims(TokenType::Api, &default_claims(now))
    }

    /// Starts from the given header `typ` and claims.
    pub fn from_claims(typ: TokenType, claims: &Claims) -> Self {
        let mut header = Map::new();
        header.insert("typ".into(), Value::String(typ.as_str().into()));
        let claims = match serde_json::to_value(claims).expect("claims serialise") {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        TokenBuilder {
            header,
            claims,
            explicit_header: BTreeSet::new(),
        }
    }

    /// A valid access token (RFC 9068 `typ: "at+jwt"`) exchanged from API token `parent`:
    /// like [`TokenBuilder::new`] but `jti` "at_1", `parent` and `client_id` = `parent`,
    /// `exp` now+300.
    pub fn access_token(now: u64, parent: &str) -> Self {
        TokenBuilder::new(now)
            .header("typ", ACCESS_TOKEN_TYPE)
            .claim("jti", "at_1")
            .claim("parent", parent)
            .claim("client_id", parent)
            .claim("exp", now + 300)
    }

    /// Sets (or replaces) a claim.
    pub fn claim(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.claims.insert(name.to_owned(), value.into());
        self
    }

    /// Removes a claim.
    pub fn remove_claim(mut self, name: &str) -> Self {
        self.claims.remove(name);
        self
    }

    /// Sets a header member explicitly; `sign*` will not overwrite it (so
    /// `.header("alg", "HS256")` followed by `.sign(&key)` keeps `HS256`).
    pub fn header(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.header.insert(name.to_owned(), value.into());
        self.explicit_header.insert(name.to_owned());
        self
    }

    /// Removes a header member. Removing `alg` or `kid` is explicit too: `sign` will then
    /// not add them back (a token without `kid`, or without `alg`).
    pub fn remove_header(mut self, name: &str) -> Self {
        self.header.remove(name);
        self.explicit_header.insert(name.to_owned());
        self
    }

    /// Sets the status list index claim (`status.status_list.idx`), keeping the URI.
    pub fn status_idx(self, idx: u64) -> Self {
        self.status(idx, DEFAULT_STATUS_URI)
    }

    /// Sets the status claim to `{"status_list": {"idx": idx, "uri": uri}}`.
    pub fn status(self, idx: u64, uri: &str) -> Self {
        self.claim("status", json!({"status_list": {"idx": idx, "uri": uri}}))
    }

    /// The claims as they are now.
    pub fn claims(&self) -> &Map<String, Value> {
        &self.claims
    }

    /// The header as it is now (before `sign*` fills in `alg`/`kid`).
    pub fn header_map(&self) -> &Map<String, Value> {
        &self.header
    }

    /// The final header for a given default `alg` and optional default `kid`.
    fn final_header(&self, alg: &str, kid: Option<&str>) -> Map<String, Value> {
        let mut header = self.header.clone();
        if !self.explicit_header.contains("alg") {
            header.insert("alg".into(), Value::String(alg.to_owned()));
        }
        if let Some(kid) = kid {
            if !self.explicit_header.contains("kid") {
                header.insert("kid".into(), Value::String(kid.to_owned()));
            }
        }
        header
    }

    fn signing_input_for(&self, header: &Map<String, Value>) -> String {
        let header = serde_json::to_vec(header).expect("header serialises");
        let claims = serde_json::to_vec(&self.claims).expect("claims serialise");
        format!("{}.{}", b64url(&header), b64url(&claims))
    }

    /// The JWS signing input `b64(header).b64(claims)` that [`TokenBuilder::sign_by_hand`]
    /// with `key` signs.
    pub fn signing_input(&self, key: &TestKey) -> String {
        self.signing_input_for(&self.final_header(key.alg().name(), Some(key.kid())))
    }

    /// Signs with `key`. Header `alg` and `kid` come from the key unless they were set (or
    /// removed) explicitly with [`TokenBuilder::header`] / [`TokenBuilder::remove_header`].
    /// jwt-compact signs, unless `alg` was set or removed (a forged `alg` no library
    /// writes): then it is signed by hand, as [`TokenBuilder::sign_by_hand`].
    pub fn sign(&self, key: &TestKey) -> String {
        if self.explicit_header.contains("alg") {
            return self.sign_by_hand(key);
        }
        let mut other = self.final_header(key.alg().name(), Some(key.kid()));
        other.remove("alg");
        let mut header = jwt_compact::Header::new(Map::new());
        // jwt-compact writes `kid` and `typ` from its own fields; strings go there, anything
        // else (a hostile `"kid": 5`) stays a plain member.
        if let Some(Value::String(kid)) = other.get("kid").cloned() {
            other.remove("kid");
            header = header.with_key_id(kid);
        }
        if let Some(Value::String(typ)) = other.get("typ").cloned() {
            other.remove("typ");
            header = header.with_token_type(typ);
        }
        header.other_fields = other;
        key.sign_with_jwt_compact(&header, &jwt_compact::Claims::new(&self.claims))
    }

    /// Signs with `key` by hand (header and claims serialised here, signature from the
    /// key's crate): the forging path, for tokens whose header a library would not write.
    pub fn sign_by_hand(&self, key: &TestKey) -> String {
        let input = self.signing_input(key);
        let sig = key.sign(input.as_bytes());
        format!("{input}.{}", b64url(&sig))
    }

    /// An HS256 token (HMAC-SHA-256 keyed with `secret`), header `alg` "HS256" unless
    /// overridden. Combine with `.header("kid", key.kid())` and `key.public_key_bytes()`
    /// for the key-confusion attack.
    pub fn sign_hs256(&self, secret: &[u8]) -> String {
        let input = self.signing_input_for(&self.final_header("HS256", None));
        let sig = hmac_sha256(secret, input.as_bytes());
        format!("{input}.{}", b64url(&sig))
    }

    /// An unsecured JWS: header `alg` "none" (unless overridden) and an empty signature
    /// part: `"<h>.<c>."`.
    pub fn unsigned(&self) -> String {
        let input = self.signing_input_for(&self.final_header("none", None));
        format!("{input}.")
    }

    /// A token whose header `alg` is `signing_input_alg` (this argument wins over
    /// `.header("alg", ..)`) and whose signature part is the given arbitrary bytes.
    pub fn with_signature(&self, signing_input_alg: &str, signature: &[u8]) -> String {
        let mut header = self.header.clone();
        header.insert("alg".into(), Value::String(signing_input_alg.to_owned()));
        let input = self.signing_input_for(&header);
        format!("{input}.{}", b64url(signature))
    }
}

/// The raw status list bytes, 2 bits per entry: entry `i` in byte `i / 4` at bit offset
/// `2 * (i % 4)` (least significant bits first). Values above 3 are masked to 2 bits.
pub fn status_list_bytes(statuses: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0u8; statuses.len().div_ceil(4)];
    for (i, status) in statuses.iter().enumerate() {
        bytes[i / 4] |= (status & 0b11) << (2 * (i % 4));
    }
    bytes
}

/// The Token Status List draft's `lst`: base64url (no padding) of the zlib-compressed
/// [`status_list_bytes`].
pub fn status_list_lst(statuses: &[u8]) -> String {
    b64url(&miniz_oxide::deflate::compress_to_vec_zlib(
        &status_list_bytes(statuses),
        9,
    ))
}

/// One entry of the plugin configuration's `status.lists`:
/// `{"uri": uri, "bits": 2, "lst": status_list_lst(statuses)}`.
pub fn status_list_json(uri: &str, statuses: &[u8]) -> Value {
    json!({"uri": uri, "bits": 2, "lst": status_list_lst(statuses)})
}

/// Status values of the Token Status List draft as Tessera uses them.
pub mod status {
    /// Valid.
    pub const VALID: u8 = 0;
    /// Revoked (the draft's "invalid").
    pub const REVOKED: u8 = 1;
    /// Suspended.
    pub const SUSPENDED: u8 = 2;
    /// Rotated (the draft's application-specific value): refused with reason `rotated`.
    pub const ROTATED: u8 = 3;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(token: &str) -> (Value, Value, Vec<u8>, String) {
        let mut it = token.split('.');
        let h = it.next().expect("header");
        let c = it.next().expect("claims");
        let s = it.next().expect("signature");
        assert!(it.next().is_none());
        let header = serde_json::from_slice(&b64url_decode(h).expect("b64 header")).expect("json");
        let claims = serde_json::from_slice(&b64url_decode(c).expect("b64 claims")).expect("json");
        (
            header,
            claims,
            b64url_decode(s).expect("b64 sig"),
            format!("{h}.{c}"),
        )
    }

    fn jwk_bytes(jwk: &Value, member: &str) -> Vec<u8> {
        b64url_decode(jwk[member].as_str().expect("member is a string")).expect("b64 member")
    }

    /// Verifies a token with the crypto crates directly, from the public JWK only.
    fn verify_with_jwk(jwk: &Value, input: &[u8], sig: &[u8]) -> bool {
        match jwk["kty"].as_str() {
            Some("OKP") => {
                let pk = ed25519_compact::PublicKey::from_slice(&jwk_bytes(jwk, "x")).expect("pk");
                let sig = ed25519_compact::Signature::from_slice(sig).expect("sig len");
                pk.verify(input, &sig).is_ok()
            }
            Some("EC") => {
                use p256::ecdsa::signature::Verifier;
                let mut sec1 = vec![4u8];
                sec1.extend(jwk_bytes(jwk, "x"));
                sec1.extend(jwk_bytes(jwk, "y"));
                let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).expect("vk");
                let sig = p256::ecdsa::Signature::from_slice(sig).expect("sig r||s");
                vk.verify(input, &sig).is_ok()
            }
            Some("RSA") => {
                let n = rsa::BigUint::from_bytes_be(&jwk_bytes(jwk, "n"));
                let e = rsa::BigUint::from_bytes_be(&jwk_bytes(jwk, "e"));
                let pk = rsa::RsaPublicKey::new(n, e).expect("rsa pk");
                let digest = Sha256::digest(input);
                pk.verify(rsa::Pkcs1v15Sign::new::<Sha256>(), &digest, sig)
                    .is_ok()
            }
            other => panic!("unexpected kty {other:?}"),
        }
    }

    #[test]
    fn signed_tokens_verify_with_the_public_jwk_for_every_alg() {
        let now = 1_700_000_000;
        for alg in Alg::ALL {
            let key = TestKey::generate(alg, &format!("kid-{}", alg.name()));
            let token = TokenBuilder::new(now).sign(&key);
            let (header, claims, sig, input) = parts(&token);
            assert_eq!(header["alg"], alg.name());
            assert_eq!(header["kid"], key.kid());
            assert_eq!(header["typ"], "tessera-api+jwt");
            assert_eq!(claims["exp"], now + 3600);
            assert_eq!(claims["iss"], DEFAULT_ISSUER);
            let expected_len = match alg {
                Alg::EdDSA | Alg::ES256 => 64,
                Alg::RS256 => 256,
            };
            assert_eq!(sig.len(), expected_len, "{alg}");
            let jwk = key.public_jwk();
            assert_eq!(jwk["alg"], alg.name());
            assert_eq!(jwk["use"], "sig");
            assert_eq!(jwk["kid"], key.kid());
            assert!(verify_with_jwk(&jwk, input.as_bytes(), &sig), "{alg}");
            // A flipped bit no longer verifies.
            let (_, _, bad_sig, _) = parts(&tamper_signature(&token));
            assert!(!verify_with_jwk(&jwk, input.as_bytes(), &bad_sig), "{alg}");
            // Another key of the same alg does not verify it either.
            let other = TestKey::generate(alg, "other");
            assert!(
                !verify_with_jwk(&other.public_jwk(), input.as_bytes(), &sig),
                "{alg}"
            );
        }
    }

    #[test]
    fn minted_tokens_carry_exactly_the_shared_types() {
        let claims = default_claims(1_700_000_000);
        for alg in Alg::ALL {
            let key = TestKey::generate(alg, "k");
            let token = key.mint(TokenType::Access, &claims);
            let (header, payload, sig, input) = parts(&token);
            let header: tessera_core::token::Header = serde_json::from_value(header).expect("h");
            assert_eq!(header.alg.name(), alg.name());
            assert_eq!(header.kid, "k");
            assert_eq!(header.typ, TokenType::Access);
            assert_eq!(
                serde_json::from_value::<Claims>(payload).expect("claims"),
                claims
            );
            assert!(
                verify_with_jwk(&key.public_jwk(), input.as_bytes(), &sig),
                "{alg}"
            );
            // The builder's default token is the same claims, signed the same way.
            let (_, built, _, _) = parts(&TokenBuilder::new(1_700_000_000).sign(&key));
            assert_eq!(serde_json::from_value::<Claims>(built).expect("c"), claims);
        }
    }

    #[test]
    fn jwk_shapes() {
        let ed = TestKey::generate(Alg::EdDSA, "e").public_jwk();
        assert_eq!(ed["kty"], "OKP");
        assert_eq!(ed["crv"], "Ed25519");
        assert_eq!(jwk_bytes(&ed, "x").len(), 32);
        assert!(ed.get("d").is_none());
        let ec = TestKey::generate(Alg::ES256, "p").public_jwk();
        assert_eq!(ec["kty"], "EC");
        assert_eq!(ec["crv"], "P-256");
        assert_eq!(jwk_bytes(&ec, "x").len(), 32);
        assert_eq!(jwk_bytes(&ec, "y").len(), 32);
        let rsa_key = TestKey::generate(Alg::RS256, "r");
        let rs = rsa_key.public_jwk();
        assert_eq!(rs["kty"], "RSA");
        assert_eq!(jwk_bytes(&rs, "n").len(), 256);
        assert_eq!(jwk_bytes(&rs, "e"), vec![1, 0, 1]);
        assert!(rs.get("d").is_none());
        assert!(rsa_key.private_jwk().get("d").is_some());
        // No padding anywhere.
        for jwk in [&ed, &ec, &rs] {
            assert!(!jwk.to_string().contains('='));
        }
        let set = jwks(&[&rsa_key]);
        assert_eq!(set["keys"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn builder_defaults_and_overrides() {
        let key = TestKey::generate(Alg::EdDSA, "k1");
        let token = TokenBuilder::new(100)
            .claim("scope", "read write")
            .remove_claim("nbf")
            .header("kid", "forced")
            .sign(&key);
        let (header, claims, _, _) = parts(&token);
        assert_eq!(header["kid"], "forced");
        assert_eq!(header["alg"], "EdDSA");
        assert_eq!(claims["scope"], "read write");
        assert!(claims.get("nbf").is_none());
        assert_eq!(claims["status"]["status_list"]["idx"], 0);
        assert_eq!(claims["status"]["status_list"]["uri"], DEFAULT_STATUS_URI);

        let (header, _, _, _) = parts(&TokenBuilder::new(100).remove_header("kid").sign(&key));
        assert!(header.get("kid").is_none());
        assert_eq!(header["alg"], "EdDSA");

        let unsigned = TokenBuilder::new(100).unsigned();
        assert!(unsigned.ends_with('.'));
        let (header, _, sig, _) = parts(&unsigned);
        assert_eq!(header["alg"], "none");
        assert!(sig.is_empty());

        let (header, _, sig, _) = parts(&TokenBuilder::new(100).with_signature("ES256", &[7; 10]));
        assert_eq!(header["alg"], "ES256");
        assert_eq!(sig, vec![7; 10]);

        let (header, claims, _, _) = parts(&TokenBuilder::access_token(100, "tok_1").sign(&key));
        assert_eq!(header["typ"], "at+jwt");
        assert_eq!(claims["parent"], "tok_1");
        assert_eq!(claims["client_id"], "tok_1");
    }

    #[test]
    fn hs256_key_confusion_token() {
        let key = TestKey::generate(Alg::RS256, "rsa");
        let secret = key.public_key_bytes();
        assert_eq!(secret.first(), Some(&0x30)); // DER SEQUENCE
        let token = TokenBuilder::new(100)
            .header("kid", key.kid())
            .sign_hs256(&secret);
        let (header, _, sig, input) = parts(&token);
        assert_eq!(header["alg"], "HS256");
        assert_eq!(header["kid"], "rsa");
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&secret).expect("hmac");
        mac.update(input.as_bytes());
        assert!(mac.verify_slice(&sig).is_ok());

        assert_eq!(
            TestKey::generate(Alg::EdDSA, "e").public_key_bytes().len(),
            32
        );
        assert_eq!(
            TestKey::generate(Alg::ES256, "p").public_key_bytes().len(),
            65
        );
    }

    #[test]
    fn status_list_bit_layout() {
        // Entry i in byte i/4 at bit offset 2*(i%4), LSB first.
        assert_eq!(status_list_bytes(&[1]), vec![0b0000_0001]);
        assert_eq!(status_list_bytes(&[0, 1]), vec![0b0000_0100]);
        assert_eq!(status_list_bytes(&[0, 0, 2]), vec![0b0010_0000]);
        assert_eq!(status_list_bytes(&[0, 0, 0, 3]), vec![0b1100_0000]);
        assert_eq!(
            status_list_bytes(&[1, 2, 0, 3, 2]),
            vec![0b1100_1001, 0b0000_0010]
        );
        assert!(status_list_bytes(&[]).is_empty());

        // The draft's own example: statuses [1,2,0,3,0,1,0,1,1,2,3,3] → c9 44 f9.
        let draft = [1, 2, 0, 3, 0, 1, 0, 1, 1, 2, 3, 3];
        assert_eq!(status_list_bytes(&draft), vec![0xc9, 0x44, 0xf9]);

        let lst = status_list_lst(&draft);
        assert!(!lst.contains('='));
        let compressed = b64url_decode(&lst).expect("b64");
        let raw = miniz_oxide::inflate::decompress_to_vec_zlib(&compressed).expect("zlib");
        assert_eq!(raw, vec![0xc9, 0x44, 0xf9]);

        let entry = status_list_json(DEFAULT_STATUS_URI, &[0, 1]);
        assert_eq!(entry["bits"], 2);
        assert_eq!(entry["uri"], DEFAULT_STATUS_URI);
    }

    #[test]
    fn compact_and_tamper_helpers() {
        let t = compact(b"{\"alg\":\"EdDSA\"}", b"not json", &[1, 2, 3]);
        assert_eq!(t.split('.').count(), 3);
        let tampered = tamper_signature(&t);
        assert_ne!(t, tampered);
        assert_eq!(
            t.rsplit_once('.').map(|p| p.0),
            tampered.rsplit_once('.').map(|p| p.0)
        );
        assert!(now() > 1_600_000_000);
    }
}

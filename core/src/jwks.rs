//! Verification keys from a JWKS document (RFC 7517), each pinned to one algorithm.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::Value;

use crate::config::ConfigError;

/// The algorithms a key can be pinned to; serialised as the JOSE `alg` name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum KeyAlg {
    /// Ed25519 (RFC 8037).
    EdDSA,
    /// ECDSA P-256 with SHA-256.
    ES256,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
}

impl KeyAlg {
    /// The JOSE `alg` name.
    pub fn name(self) -> &'static str {
        match self {
            KeyAlg::EdDSA => "EdDSA",
            KeyAlg::ES256 => "ES256",
            KeyAlg::RS256 => "RS256",
        }
    }

    /// Maps a JOSE `alg` name to one we accept; anything else (`none`, HS*, PS*, ...) is
    /// refused before a key is even looked up.
    pub fn from_name(name: &str) -> Option<KeyAlg> {
        match name {
            "EdDSA" => Some(KeyAlg::EdDSA),
            "ES256" => Some(KeyAlg::ES256),
            "RS256" => Some(KeyAlg::RS256),
            _ => None,
        }
    }
}

/// Public key material for one algorithm.
#[derive(Clone)]
pub enum KeyMaterial {
    /// Ed25519 public key.
    Ed25519(crate::ed25519::Ed25519Key),
    /// P-256 public key.
    Es256(p256::ecdsa::VerifyingKey),
    /// RSA public key (2048 to 4096 bits).
    Rs256(RsaKey),
}

/// An RSA public key: its modulus and exponent (big-endian, no leading zeros), checked
/// when loaded; with the `rust-rsa` feature also ready for verification in Rust.
#[derive(Clone)]
pub struct RsaKey {
    n: Vec<u8>,
    e: Vec<u8>,
    #[cfg(feature = "rust-rsa")]
    key: rsa::RsaPublicKey,
}

impl RsaKey {
    /// The modulus, big-endian.
    pub fn n(&self) -> &[u8] {
        &self.n
    }
    /// The public exponent, big-endian.
    pub fn e(&self) -> &[u8] {
        &self.e
    }
    /// The key for Rust verification.
    #[cfg(feature = "rust-rsa")]
    pub fn public_key(&self) -> &rsa::RsaPublicKey {
        &self.key
    }
}

/// Accepted RSA sizes (the rsa crate's own limits; the same on every build).
const RSA_MIN_BITS: usize = 2048;
const RSA_MAX_BITS: usize = 4096;
/// Largest public exponent accepted (2^33 - 1, the rsa crate's limit).
const RSA_MAX_EXPONENT: u64 = (1 << 33) - 1;

fn strip_zeros(v: &[u8]) -> &[u8] {
    let first = v.iter().position(|b| *b != 0).unwrap_or(v.len());
    &v[first..]
}

fn rsa_key(n: &[u8], e: &[u8], path: &str) -> Result<RsaKey, ConfigError> {
    let n = strip_zeros(n);
    let e = strip_zeros(e);
    let bits = match n.first() {
        Some(top) => (n.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
        None => 0,
    };
    if bits < RSA_MIN_BITS {
        return Err(ConfigError::new(
            format!("{path}.n"),
            format!("RSA modulus of {bits} bits is too small (at least {RSA_MIN_BITS})"),
        ));
    }
    if bits > RSA_MAX_BITS {
        return Err(ConfigError::new(
            format!("{path}.n"),
            format!("RSA modulus of {bits} bits is too large (at most {RSA_MAX_BITS})"),
        ));
    }
    if n.last().is_some_and(|b| b & 1 == 0) {
        return Err(ConfigError::new(
            format!("{path}.n"),
            "RSA modulus must be odd",
        ));
    }
    let exponent = (e.len() <= 8).then(|| e.iter().fold(0u64, |a, b| (a << 8) | u64::from(*b)));
    match exponent {
        Some(x) if (3..=RSA_MAX_EXPONENT).contains(&x) && x & 1 == 1 => {}
        _ => {
            return Err(ConfigError::new(
                format!("{path}.e"),
                format!("RSA exponent must be odd, from 3 to {RSA_MAX_EXPONENT}"),
            ))
        }
    }
    #[cfg(feature = "rust-rsa")]
    let key = rsa::RsaPublicKey::new(
        rsa::BigUint::from_bytes_be(n),
        rsa::BigUint::from_bytes_be(e),
    )
    .map_err(|err| {
        ConfigError::new(
            format!("{path}.n"),
            format!("invalid RSA public key: {err}"),
        )
    })?;
    Ok(RsaKey {
        n: n.to_vec(),
        e: e.to_vec(),
        #[cfg(feature = "rust-rsa")]
        key,
    })
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyMaterial::Ed25519(_) => "Ed25519",
            KeyMaterial::Es256(_) => "P-256",
            KeyMaterial::Rs256(_) => "RSA",
        })
    }
}

/// One verification key.
#[derive(Clone, Debug)]
pub struct Key {
    /// The key id tokens refer to.
    pub kid: String,
    /// The algorithm this key verifies, and the only one.
    pub alg: KeyAlg,
    /// The key itself.
    pub material: KeyMaterial,
    /// The public JWK as configured (no private members: those are refused), for hosts
    /// that import the key into their own crypto (WebCrypto).
    pub jwk: Value,
    /// The issuer this key belongs to, from the JWK's `iss` member (Tessera's own member;
    /// RFC 7517 §4 lets a JWK carry members others ignore). A token signed with a key
    /// that names an issuer must carry that `iss` (RFC 8725 §3.8); a key without one may
    /// sign for any configured issuer (a single-issuer configuration).
    pub issuer: Option<String>,
    p256_point: Option<Vec<u8>>,
    spki: Option<Vec<u8>>,
}

impl Key {
    /// For a P-256 key, its SEC1 uncompressed point (`04 || x || y`), as hosts with native
    /// crypto import it; computed once when the JWKS is loaded.
    pub fn p256_point(&self) -> Option<&[u8]> {
        self.p256_point.as_deref()
    }

    /// For a P-256 or RSA key, its DER SubjectPublicKeyInfo, as native crypto (Envoy's
    /// BoringSSL) imports it; computed once when the JWKS is loaded.
    pub fn spki(&self) -> Option<&[u8]> {
        self.spki.as_deref()
    }
}

/// The keys a verifier trusts.
#[derive(Clone, Debug, Default)]
pub struct KeySet {
    keys: Vec<Key>,
}

const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

fn str_field<'a>(
    obj: &'a serde_json::Map<String, Value>,
    path: &str,
    name: &str,
) -> Result<&'a str, ConfigError> {
    match obj.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(ConfigError::new(
            format!("{path}.{name}"),
            "must be a string",
        )),
        None => Err(ConfigError::new(format!("{path}.{name}"), "is required")),
    }
}

fn b64_field(
    obj: &serde_json::Map<String, Value>,
    path: &str,
    name: &str,
) -> Result<Vec<u8>, ConfigError> {
    let s = str_field(obj, path, name)?;
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| ConfigError::new(format!("{path}.{name}"), "is not valid base64url"))
}

impl KeySet {
    /// Loads a JWKS value. `path` is the field path used in errors.
    pub fn from_jwks(jwks: &Value, path: &str) -> Result<KeySet, ConfigError> {
        let keys = match jwks.get("keys") {
            Some(Value::Array(k)) => k,
            Some(_) => return Err(ConfigError::new(format!("{path}.keys"), "must be an array")),
            None => return Err(ConfigError::new(format!("{path}.keys"), "is required")),
        };
        if keys.is_empty() {
            return Err(ConfigError::new(
                format!("{path}.keys"),
                "must not be empty",
            ));
        }
        let mut set = KeySet::default();
        for (i, k) in keys.iter().enumerate() {
            let kpath = format!("{path}.keys[{i}]");
            let key = parse_key(k, &kpath)?;
            if set.keys.iter().any(|existing| existing.kid == key.kid) {
                return Err(ConfigError::new(
                    format!("{kpath}.kid"),
                    format!("{:?} appears twice", key.kid),
                ));
            }
            set.keys.push(key);
        }
        Ok(set)
    }

    /// The key with this id, if any.
    pub fn get(&self, kid: &str) -> Option<&Key> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    /// This set plus the keys of `other` whose `kid` is not already here (keys pinned
    /// in configuration win over synced ones).
    pub fn merged_with(&self, other: &KeySet) -> KeySet {
        let mut keys = self.keys.clone();
        for k in &other.keys {
            if self.get(&k.kid).is_none() {
                keys.push(k.clone());
            }
        }
        KeySet { keys }
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn parse_key(k: &Value, path: &str) -> Result<Key, ConfigError> {
    let obj = k
        .as_object()
        .ok_or_else(|| ConfigError::new(path, "must be an object"))?;
    for m in PRIVATE_MEMBERS {
        if obj.contains_key(m) {
            return Err(ConfigError::new(
                format!("{path}.{m}"),
                "private or symmetric key material is not accepted",
            ));
        }
    }
    let kid = str_field(obj, path, "kid")?;
    if kid.is_empty() {
        return Err(ConfigError::new(format!("{path}.kid"), "must not be empty"));
    }
    let issuer = match obj.get("iss") {
        None => None,
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(_) => {
            return Err(ConfigError::new(
                format!("{path}.iss"),
                "must be a non-empty string (the issuer the key belongs to)",
            ))
        }
    };
    if let Some(u) = obj.get("use") {
        if u.as_str() != Some("sig") {
            return Err(ConfigError::new(format!("{path}.use"), "must be \"sig\""));
        }
    }
    let kty = str_field(obj, path, "kty")?;
    let mut point = None;
    let (alg, material) = match kty {
        "OKP" => {
            let crv = str_field(obj, path, "crv")?;
            if crv != "Ed25519" {
                return Err(ConfigError::new(
                    format!("{path}.crv"),
                    format!("unsupported curve {crv:?} (only Ed25519 for OKP)"),
                ));
            }
            let x = b64_field(obj, path, "x")?;
            let pk = <[u8; 32]>::try_from(x.as_slice())
                .ok()
                .and_then(|x| crate::ed25519::Ed25519Key::from_bytes(&x))
                .ok_or_else(|| {
                    ConfigError::new(
                        format!("{path}.x"),
                        "is not a 32-byte Ed25519 public key of large order",
                    )
                })?;
            (KeyAlg::EdDSA, KeyMaterial::Ed25519(pk))
        }
        "EC" => {
            let crv = str_field(obj, path, "crv")?;
            if crv != "P-256" {
                return Err(ConfigError::new(
                    format!("{path}.crv"),
                    format!("unsupported curve {crv:?} (only P-256 for EC)"),
                ));
            }
            let x = b64_field(obj, path, "x")?;
            let y = b64_field(obj, path, "y")?;
            if x.len() != 32 {
                return Err(ConfigError::new(format!("{path}.x"), "must be 32 bytes"));
            }
            if y.len() != 32 {
                return Err(ConfigError::new(format!("{path}.y"), "must be 32 bytes"));
            }
            let mut sec1 = Vec::with_capacity(65);
            sec1.push(4u8);
            sec1.extend_from_slice(&x);
            sec1.extend_from_slice(&y);
            let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1)
                .map_err(|_| ConfigError::new(format!("{path}.x"), "is not a point on P-256"))?;
            point = Some(sec1);
            (KeyAlg::ES256, KeyMaterial::Es256(vk))
        }
        "RSA" => {
            let n = b64_field(obj, path, "n")?;
            let e = b64_field(obj, path, "e")?;
            (KeyAlg::RS256, KeyMaterial::Rs256(rsa_key(&n, &e, path)?))
        }
        other => {
            return Err(ConfigError::new(
                format!("{path}.kty"),
                format!("unsupported key type {other:?} (OKP, EC or RSA)"),
            ))
        }
    };
    if let Some(a) = obj.get("alg") {
        if a.as_str() != Some(alg.name()) {
            return Err(ConfigError::new(
                format!("{path}.alg"),
                format!("must be {:?} for this key type", alg.name()),
            ));
        }
    }
    let spki = match &material {
        KeyMaterial::Ed25519(_) => None,
        KeyMaterial::Es256(_) => point.as_deref().and_then(crate::der::p256_spki),
        KeyMaterial::Rs256(rsa) => Some(crate::der::rsa_spki(rsa.n(), rsa.e())),
    };
    Ok(Key {
        kid: kid.to_string(),
        alg,
        material,
        jwk: k.clone(),
        issuer,
        p256_point: point,
        spki,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tessera_testkit::{Alg, TestKey};

    #[test]
    fn loads_all_three_key_types() {
        let a = TestKey::generate(Alg::EdDSA, "a");
        let b = TestKey::generate(Alg::ES256, "b");
        let c = TestKey::generate(Alg::RS256, "c");
        let set = KeySet::from_jwks(&tessera_testkit::jwks(&[&a, &b, &c]), "jwks").unwrap();
        assert_eq!(set.len(), 3);
        assert_eq!(set.get("a").unwrap().alg, KeyAlg::EdDSA);
        assert_eq!(set.get("b").unwrap().alg, KeyAlg::ES256);
        assert_eq!(set.get("c").unwrap().alg, KeyAlg::RS256);
        // The point hosts import for native ES256 equals the key's own encoding.
        let point = set.get("b").unwrap().p256_point().unwrap();
        match &set.get("b").unwrap().material {
            KeyMaterial::Es256(vk) => assert_eq!(point, vk.to_encoded_point(false).as_bytes()),
            other => panic!("{other:?}"),
        }
        assert!(set.get("a").unwrap().p256_point().is_none());
        assert!(set.get("d").is_none());
    }

    #[test]
    fn refuses_bad_keys_naming_the_field() {
        let ed = TestKey::generate(Alg::EdDSA, "a").public_jwk();
        let ec = TestKey::generate(Alg::ES256, "b").public_jwk();
        let patch = |mut k: Value, f: &str, v: Value| {
            k[f] = v;
            k
        };
        let cases: Vec<(Value, &str)> = vec![
            (json!({"keys": "x"}), "jwks.keys"),
            (json!({}), "jwks.keys"),
            (json!({"keys": [1]}), "jwks.keys[0]"),
            (
                json!({"keys": [patch(ed.clone(), "crv", json!("X25519"))]}),
                "jwks.keys[0].crv",
            ),
            (
                json!({"keys": [patch(ed.clone(), "x", json!("AAAA"))]}),
                "jwks.keys[0].x",
            ),
            (
                json!({"keys": [patch(ed.clone(), "x", json!("@@"))]}),
                "jwks.keys[0].x",
            ),
            (
                json!({"keys": [patch(ed.clone(), "d", json!("AAAA"))]}),
                "jwks.keys[0].d",
            ),
            (
                json!({"keys": [patch(ed.clone(), "alg", json!("ES256"))]}),
                "jwks.keys[0].alg",
            ),
            (
                json!({"keys": [patch(ed.clone(), "use", json!("enc"))]}),
                "jwks.keys[0].use",
            ),
            (
                json!({"keys": [patch(ed.clone(), "kid", json!(""))]}),
                "jwks.keys[0].kid",
            ),
            (
                json!({"keys": [patch(ed.clone(), "kid", json!(7))]}),
                "jwks.keys[0].kid",
            ),
            (
                json!({"keys": [patch(ed.clone(), "kty", json!("oct"))]}),
                "jwks.keys[0].k",
            ),
            (
                json!({"keys": [ed.clone(), ed.clone()]}),
                "jwks.keys[1].kid",
            ),
            (
                json!({"keys": [patch(ec.clone(), "crv", json!("P-384"))]}),
                "jwks.keys[0].crv",
            ),
            (
                json!({"keys": [patch(ec.clone(), "y", json!(URL_SAFE_NO_PAD.encode([1u8; 32])))]}),
                "jwks.keys[0].x",
            ),
            (
                json!({"keys": [{"kty": "RSA", "kid": "r", "n": URL_SAFE_NO_PAD.encode([0xffu8; 128]), "e": "AQAB"}]}),
                "jwks.keys[0].n",
            ),
        ];
        for (jwks, field) in cases {
            let mut jwks = jwks;
            // The "oct" case must also carry "k" to be refused as symmetric material.
            if jwks["keys"][0]["kty"] == json!("oct") {
                jwks["keys"][0]["k"] = json!("c2VjcmV0");
            }
            match KeySet::from_jwks(&jwks, "jwks") {
                Ok(_) => panic!("accepted {jwks}"),
                Err(e) => assert_eq!(e.field, field, "{jwks} -> {e}"),
            }
        }
    }
}

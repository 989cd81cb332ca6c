//! Keys and signatures: the master key that seals org private keys, org key generation,
//! JWKS entries, and compact-JWS signing and verification (EdDSA and ES256).

use crate::model::KeyAlg;
use crate::service::{Error as ApiError, Result as ApiResult};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub fn random_bytes<const N: usize>() -> ApiResult<[u8; N]> {
    let mut buf = [0u8; N];
    getrandom::getrandom(&mut buf).map_err(|e| ApiError::internal(format!("getrandom: {e}")))?;
    Ok(buf)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A random identifier with a type prefix, e.g. `tok_5f0c...` (96 random bits).
pub fn new_id(prefix: &str) -> ApiResult<String> {
    Ok(format!("{prefix}_{}", hex(&random_bytes::<12>()?)))
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

/// Signs `claims` as a compact JWS with header `{alg, kid, typ}`.
pub fn sign_jws(
    alg: KeyAlg,
    kid: &str,
    secret: &[u8],
    typ: &str,
    claims: &Value,
) -> ApiResult<String> {
    let header = json!({"alg": alg.as_str(), "kid": kid, "typ": typ});
    let input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let sig: Vec<u8> = match alg {
        KeyAlg::EdDSA => {
            let seed: [u8; 32] = secret
                .try_into()
                .map_err(|_| ApiError::internal("bad Ed25519 seed"))?;
            let kp = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(seed));
            kp.sk.sign(input.as_bytes(), None).to_vec()
        }
        KeyAlg::ES256 => {
            let sk = p256::ecdsa::SigningKey::from_slice(secret)
                .map_err(|_| ApiError::internal("bad P-256 key"))?;
            let sig: p256::ecdsa::Signature = sk.sign(input.as_bytes());
            sig.to_bytes().to_vec()
        }
    };
    Ok(format!("{input}.{}", b64url(&sig)))
}

/// A compact JWS split and decoded, signature not yet checked.
pub struct UntrustedJws<'a> {
    pub header: serde_json::Map<String, Value>,
    pub claims: serde_json::Map<String, Value>,
    signing_input: &'a str,
    signature: Vec<u8>,
}

impl<'a> UntrustedJws<'a> {
    pub fn parse(token: &'a str) -> Result<Self, &'static str> {
        let mut parts = token.splitn(4, '.');
        let (Some(h), Some(c), Some(s), None) =
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
        Ok(UntrustedJws {
            header,
            claims,
            signing_input: &token[..h.len() + 1 + c.len()],
            signature: decode(s)?,
        })
    }

    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header.get(name).and_then(Value::as_str)
    }

    /// Verifies with `jwk`, whose algorithm is pinned to `alg`: the header must agree.
    pub fn verify(&self, alg: KeyAlg, jwk: &Value) -> Result<(), &'static str> {
        if self.header_str("alg") != Some(alg.as_str()) {
            return Err("alg does not match the key");
        }
        if self.header.contains_key("crit") {
            return Err("crit is not supported");
        }
        let member = |name: &str| -> Result<Vec<u8>, &'static str> {
            let s = jwk
                .get(name)
                .and_then(Value::as_str)
                .ok_or("key member missing")?;
            URL_SAFE_NO_PAD.decode(s).map_err(|_| "bad key member")
        };
        let msg = self.signing_input.as_bytes();
        match alg {
            KeyAlg::EdDSA => {
                let pk =
                    ed25519_compact::PublicKey::from_slice(&member("x")?).map_err(|_| "bad key")?;
                let sig = ed25519_compact::Signature::from_slice(&self.signature)
                    .map_err(|_| "bad signature")?;
                pk.verify(msg, &sig).map_err(|_| "bad signature")
            }
            KeyAlg::ES256 => {
                let mut sec1 = vec![4u8];
                sec1.extend(member("x")?);
                sec1.extend(member("y")?);
                let vk =
                    p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).map_err(|_| "bad key")?;
                let sig = p256::ecdsa::Signature::from_slice(&self.signature)
                    .map_err(|_| "bad signature")?;
                vk.verify(msg, &sig).map_err(|_| "bad signature")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify_both_algorithms() {
        for alg in [KeyAlg::EdDSA, KeyAlg::ES256] {
            let k = generate_key(alg).unwrap();
            let jws = sign_jws(
                alg,
                &k.kid,
                &k.secret,
                "tessera-api+jwt",
                &json!({"sub": "u"}),
            )
            .unwrap();
            let parsed = UntrustedJws::parse(&jws).unwrap();
            assert_eq!(parsed.header_str("kid"), Some(k.kid.as_str()));
            parsed.verify(alg, &k.public_jwk).unwrap();
            // The token never chooses the algorithm.
            let other = if alg == KeyAlg::EdDSA {
                KeyAlg::ES256
            } else {
                KeyAlg::EdDSA
            };
            assert!(parsed.verify(other, &k.public_jwk).is_err());
            // A flipped signature bit fails.
            let mut bad = jws.clone().into_bytes();
            let last = bad.len() - 3;
            bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
            let bad = String::from_utf8(bad).unwrap();
            assert!(UntrustedJws::parse(&bad)
                .unwrap()
                .verify(alg, &k.public_jwk)
                .is_err());
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

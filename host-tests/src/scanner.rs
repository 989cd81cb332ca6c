//! A secret scanner speaking GitHub's partner protocol, for tests and the bench: a P-256
//! key made at run time, its public half published in GitHub's key-document format by a
//! loopback server (point the control plane at [`Scanner::keys_url`] with
//! `tessera serve --secret-scanning-keys-url`), and posts of found tokens signed over the
//! exact bytes sent (`Github-Public-Key-Identifier`, `Github-Public-Key-Signature`: base64
//! of the DER ECDSA signature).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{EncodePublicKey as _, LineEnding};
use serde_json::{json, Value};

use crate::{EchoUpstream, Request, Response};

/// The identifier the scanner's key is published under.
pub const KEY_ID: &str = "scanner-1";
/// The token type a scanner posts for Tessera tokens (echoed in the labels).
pub const TOKEN_TYPE: &str = "tessera_api_token";

/// A scanner with its own key and a loopback server publishing it.
pub struct Scanner {
    key: SigningKey,
    keys: EchoUpstream,
}

impl Scanner {
    /// Makes a key and starts publishing it.
    pub fn start() -> io::Result<Scanner> {
        let key = loop {
            let mut b = [0u8; 32];
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
            if let Ok(k) = SigningKey::from_slice(&b) {
                break k;
            }
        };
        let pem = key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| io::Error::other(format!("PEM of the scanner's key: {e}")))?;
        let keys = EchoUpstream::serving(json!({"public_keys": [{
            "key_identifier": KEY_ID,
            "key": pem,
            "is_current": true,
        }]}))?;
        Ok(Scanner { key, keys })
    }

    /// The URL the key document is served at (any path answers it).
    pub fn keys_url(&self) -> String {
        format!(
            "http://{}/meta/public_keys/secret_scanning",
            self.keys.addr()
        )
    }

    /// How many times the key document was fetched.
    pub fn keys_fetched(&self) -> usize {
        self.keys.request_count()
    }

    /// The body a scanner posts for `found`: `(token, url where it was found)` pairs.
    pub fn body(found: &[(&str, &str)]) -> String {
        Value::Array(
            found
                .iter()
                .map(|(token, url)| {
                    json!({"token": token, "type": TOKEN_TYPE, "url": url, "source": "content"})
                })
                .collect(),
        )
        .to_string()
    }

    /// The signed `POST /v1/secret-scanning/github` of `body` to the control plane at `cp`.
    pub fn request(&self, cp: SocketAddr, body: &str) -> Request {
        let sig: Signature = self.key.sign(body.as_bytes());
        let sig = base64::engine::general_purpose::STANDARD.encode(sig.to_der().as_bytes());
        Request::new("POST", "/v1/secret-scanning/github")
            .header("host", &cp.to_string())
            .header("content-type", "application/json")
            .header("github-public-key-identifier", KEY_ID)
            .header("github-public-key-signature", &sig)
            .body(body.as_bytes().to_vec())
            .timeout(Duration::from_secs(30))
    }

    /// Posts `found` to the control plane at `cp`, signed.
    pub fn post(&self, cp: SocketAddr, found: &[(&str, &str)]) -> io::Result<Response> {
        self.request(cp, &Scanner::body(found)).send(cp)
    }
}

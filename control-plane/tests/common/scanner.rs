//! A secret scanner for tests: a P-256 key made at run time, GitHub's key document served
//! on a loopback port (counting its fetches, stopped when dropped), and signed posts.

use super::{Resp, World};
use base64::Engine as _;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{EncodePublicKey as _, LineEnding};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub const GITHUB: &str = "/v1/secret-scanning/github";

pub fn new_key() -> SigningKey {
    loop {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).unwrap();
        if let Ok(k) = SigningKey::from_slice(&seed) {
            return k;
        }
    }
}

/// GitHub's key document on a loopback port; aborted when dropped.
pub struct KeyServer {
    pub url: String,
    pub fetches: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for KeyServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn key_server(keys: &[(&str, &SigningKey)]) -> KeyServer {
    let doc = json!({
        "public_keys": keys
            .iter()
            .map(|(id, k)| json!({
                "key_identifier": id,
                "key": k.verifying_key().to_public_key_pem(LineEnding::LF).unwrap(),
                "is_current": true,
            }))
            .collect::<Vec<_>>()
    });
    let fetches = Arc::new(AtomicUsize::new(0));
    let f = fetches.clone();
    let app = axum::Router::new().route(
        "/meta/public_keys/secret_scanning",
        axum::routing::get(move || {
            f.fetch_add(1, Ordering::SeqCst);
            let doc = doc.clone();
            async move { axum::Json(doc) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    KeyServer {
        url: format!("http://{addr}/meta/public_keys/secret_scanning"),
        fetches,
        task,
    }
}

pub fn sign(key: &SigningKey, body: &[u8]) -> String {
    let sig: Signature = key.sign(body);
    base64::engine::general_purpose::STANDARD.encode(sig.to_der().as_bytes())
}

pub async fn post_signed(w: &World, key_id: &str, key: &SigningKey, body: &Value) -> Resp {
    let bytes = body.to_string().into_bytes();
    let sig = sign(key, &bytes);
    w.raw(
        "POST",
        GITHUB,
        None,
        "application/json",
        bytes,
        &[
            ("github-public-key-identifier", key_id),
            ("github-public-key-signature", &sig),
        ],
    )
    .await
}

//! Leaked-token reports over HTTP: GitHub's secret-scanning partner endpoint and the public
//! "report a leaked token" endpoint. Both are unauthenticated, so both sit under the
//! per-address rate limit (`Route::limited`, checked before the handler runs) and check
//! what costs nothing (headers, body size, the number of tokens) before anything
//! expensive; the scanner's signature is checked before any token is looked at, and the
//! signing keys are fetched only for a request that carries a signature, at most once per
//! [`MIN_REFETCH`] and kept for [`FRESH`].
//!
//! GitHub's protocol: a POST of a JSON array of `{token, type, url, source}`, signed with
//! ECDSA P-256 over SHA-256 of the raw body; `Github-Public-Key-Identifier` names the key
//! and `Github-Public-Key-Signature` carries the DER signature in base64. The keys are
//! published as `{"public_keys": [{"key_identifier", "key" (PEM), "is_current"}]}` at the
//! configured URL (`tessera serve --secret-scanning-keys-url`). The answer is a JSON array of
//! `{token_hash, token_type, label}`, `token_hash` the SHA-256 (hex) of the token as posted.

use super::error::{ApiError, ApiResult};
use super::extract::read_body;
use super::AppState;
use crate::crypto;
use crate::service::leaks::{self, Found, Verdict, MAX_TOKENS_PER_REPORT};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{DerSignature, VerifyingKey};
use p256::pkcs8::DecodePublicKey as _;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use utoipa::ToSchema;

/// GitHub's published secret-scanning keys (the default of `--secret-scanning-keys-url`).
pub const GITHUB_KEYS_URL: &str = "https://api.github.com/meta/public_keys/secret_scanning";

/// Header naming the key that signed a scanner post.
pub const KEY_ID_HEADER: &str = "github-public-key-identifier";
/// Header carrying the signature (base64 of the DER ECDSA signature).
pub const SIGNATURE_HEADER: &str = "github-public-key-signature";

/// How long fetched keys are used without asking again.
pub const FRESH: Duration = Duration::from_secs(600);
/// The least time between two fetches (an unknown key identifier asks again, at most this
/// often, so forged identifiers cannot make us hammer the key URL).
pub const MIN_REFETCH: Duration = Duration::from_secs(10);
/// The longest key document read.
const MAX_KEYS_BYTES: usize = 64 * 1024;

/// The scanner's keys, fetched from their URL and cached.
pub struct ScannerKeys {
    url: String,
    http: Option<reqwest::Client>,
    cache: tokio::sync::Mutex<KeyCache>,
}

#[derive(Default)]
struct KeyCache {
    keys: HashMap<String, VerifyingKey>,
    fetched: Option<Instant>,
    tried: Option<Instant>,
}

#[derive(Deserialize)]
struct KeyDocument {
    public_keys: Vec<PublishedKey>,
}

#[derive(Deserialize)]
struct PublishedKey {
    key_identifier: String,
    key: String,
}

impl ScannerKeys {
    pub fn new(url: &str) -> Self {
        // reqwest uses the process's rustls provider (ring), as the CLI's client does.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| tracing::error!(error = %e, "secret-scanning key client"))
            .ok();
        ScannerKeys {
            url: url.to_string(),
            http,
            cache: tokio::sync::Mutex::new(KeyCache::default()),
        }
    }

    async fn fetch(&self) -> Result<HashMap<String, VerifyingKey>, String> {
        let http = self.http.as_ref().ok_or("no HTTP client")?;
        let resp = http
            .get(&self.url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("answered {}", resp.status()));
        }
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_KEYS_BYTES as u64)
        {
            return Err("key document too large".into());
        }
        let body = resp.bytes().await.map_err(|e| e.to_string())?;
        if body.len() > MAX_KEYS_BYTES {
            return Err("key document too large".into());
        }
        let doc: KeyDocument =
            serde_json::from_slice(&body).map_err(|e| format!("not a key document: {e}"))?;
        let mut keys = HashMap::new();
        for k in doc.public_keys {
            match VerifyingKey::from_public_key_pem(&k.key) {
                Ok(v) => {
                    keys.insert(k.key_identifier, v);
                }
                Err(e) => {
                    tracing::warn!(key = %k.key_identifier, error = %e, "secret-scanning key skipped: not a P-256 public key")
                }
            }
        }
        Ok(keys)
    }

    /// The key named `id`: from the cache while fresh, else fetched (at most once per
    /// [`MIN_REFETCH`]; a failed fetch keeps the keys held). `Err` only when no key could
    /// ever be had.
    async fn key(&self, id: &str) -> Result<Option<VerifyingKey>, String> {
        let mut c = self.cache.lock().await;
        let fresh = c.fetched.is_some_and(|t| t.elapsed() < FRESH);
        if fresh {
            if let Some(k) = c.keys.get(id) {
                return Ok(Some(*k));
            }
        }
        if c.tried.is_none_or(|t| t.elapsed() >= MIN_REFETCH) {
            c.tried = Some(Instant::now());
            match self.fetch().await {
                Ok(keys) => {
                    c.keys = keys;
                    c.fetched = Some(Instant::now());
                }
                Err(e) => {
                    tracing::warn!(url = %self.url, error = %e, "secret-scanning keys not fetched");
                    if c.keys.is_empty() {
                        return Err(e);
                    }
                }
            }
        }
        Ok(c.keys.get(id).copied())
    }
}

/// One token a scanner found.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ScannerMatch {
    /// The string found.
    pub token: String,
    /// The token type the scanner registered (echoed back).
    #[serde(rename = "type", default)]
    pub token_type: String,
    /// Where it was found.
    #[serde(default)]
    pub url: Option<String>,
    /// What kind of place (`content`, `commit`, `issue`, ...).
    #[serde(default)]
    pub source: Option<String>,
}

/// What a scanner posts: the tokens it found.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(transparent)]
pub struct ScannerMatches(pub Vec<ScannerMatch>);

/// The answer to a scanner: one label per token, in the order posted.
#[derive(Debug, Serialize, ToSchema)]
#[serde(transparent)]
pub struct ScannerLabels(pub Vec<ScannerLabel>);

/// The label of one found token.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScannerLabel {
    /// SHA-256 (hex) of the token as posted.
    pub token_hash: String,
    pub token_type: String,
    /// `true_positive` for a token one of our keys signed, `false_positive` otherwise.
    pub label: String,
}

/// A public report of leaked tokens.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeakReport {
    /// The tokens found (at most 1,000).
    pub tokens: Vec<String>,
    /// Where they were found.
    #[serde(default)]
    pub url: Option<String>,
    /// What kind of place.
    #[serde(default)]
    pub source: Option<String>,
}

/// The answer to a report: how many tokens were received. It does not say which were
/// ours, so the endpoint cannot be used to test guesses.
#[derive(Debug, Serialize, ToSchema)]
pub struct LeakReceived {
    pub received: usize,
}

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> ApiResult<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "signature_missing",
                format!("{name}: required (the scanner's key identifier and signature)"),
            )
        })
}

fn bad_signature(why: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "signature_invalid",
        format!("{SIGNATURE_HEADER}: {why}"),
    )
}

fn too_many(n: usize) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_body",
        format!("body: {n} tokens; at most {MAX_TOKENS_PER_REPORT} per request"),
    )
}

/// `POST /v1/secret-scanning/github`.
pub(super) async fn github(
    State(s): State<AppState>,
    req: Request,
) -> ApiResult<Json<ScannerLabels>> {
    // Cheap checks first: both headers, a decodable signature, the body within its limit.
    let key_id = header(req.headers(), KEY_ID_HEADER)?.to_string();
    let signature = header(req.headers(), SIGNATURE_HEADER)?;
    let signature = STANDARD
        .decode(signature)
        .ok()
        .and_then(|der| DerSignature::from_bytes(&der).ok())
        .ok_or_else(|| bad_signature("not a base64 DER ECDSA signature"))?;
    let body = read_body(req, &()).await?;
    let key = s.scanner_keys().key(&key_id).await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "keys_unavailable",
            format!("the scanner's public keys could not be fetched ({e}); try again later"),
        )
    })?;
    let Some(key) = key else {
        return Err(bad_signature(&format!(
            "{KEY_ID_HEADER} names no key the scanner publishes"
        )));
    };
    key.verify(&body, &signature)
        .map_err(|_| bad_signature("does not verify over the body with the named key"))?;
    let ScannerMatches(matches) = super::extract::parse_json(&body)?;
    if matches.len() > MAX_TOKENS_PER_REPORT {
        return Err(too_many(matches.len()));
    }
    let found: Vec<Found> = matches
        .iter()
        .map(|m| Found {
            token: m.token.clone(),
            url: m.url.clone(),
            source: m.source.clone(),
        })
        .collect();
    let ours = confirm_and_apply(&s, "github", found).await?;
    Ok(Json(ScannerLabels(
        matches
            .into_iter()
            .zip(ours)
            .map(|(m, ours)| ScannerLabel {
                token_hash: crypto::sha256_hex(m.token.as_bytes()),
                token_type: m.token_type,
                label: if ours {
                    "true_positive"
                } else {
                    "false_positive"
                }
                .into(),
            })
            .collect(),
    )))
}

/// `POST /v1/leaks`: anyone may report tokens they found.
pub(super) async fn report(
    State(s): State<AppState>,
    req: Request,
) -> ApiResult<(StatusCode, Json<LeakReceived>)> {
    let body = read_body(req, &()).await?;
    let r: LeakReport = super::extract::parse_json(&body)?;
    if r.tokens.len() > MAX_TOKENS_PER_REPORT {
        return Err(too_many(r.tokens.len()));
    }
    let received = r.tokens.len();
    let found: Vec<Found> = r
        .tokens
        .into_iter()
        .map(|token| Found {
            token,
            url: r.url.clone(),
            source: r.source.clone(),
        })
        .collect();
    confirm_and_apply(&s, "report", found).await?;
    Ok((StatusCode::ACCEPTED, Json(LeakReceived { received })))
}

/// Which of `found` are ours (a read), then the leak policy for those only (a write, only
/// when there is one).
async fn confirm_and_apply(
    s: &AppState,
    reporter: &'static str,
    found: Vec<Found>,
) -> ApiResult<Vec<bool>> {
    let st = s.clone();
    let (found, ours) = s
        .read(move |tx, ctx| {
            let ours = leaks::ours(tx, ctx, st.verifiers(), &found)?;
            Ok((found, ours))
        })
        .await?;
    let confirmed: Vec<Found> = found
        .into_iter()
        .zip(&ours)
        .filter_map(|(f, o)| o.then_some(f))
        .collect();
    if !confirmed.is_empty() {
        let st = s.clone();
        let verdicts = s
            .write(move |tx, ctx| leaks::report(tx, ctx, st.verifiers(), reporter, &confirmed))
            .await?;
        if verdicts.contains(&Verdict::NotOurs) {
            // The org's keys changed between the read and the write: the write's answer
            // is what was acted on.
            tracing::info!(
                reporter,
                "a reported token stopped verifying between read and write"
            );
        }
    }
    Ok(ours)
}

//! The relying party's network half of single sign-on, through the `openidconnect` crate
//! (OpenID Connect Core, Discovery, PKCE): provider discovery (metadata and JWKS, kept a
//! few minutes per issuer), the authorization URL with `state`, `nonce` and a PKCE S256
//! challenge, the code exchange with the verifier, and the ID token's checks (signature
//! by a key of the provider's JWKS, `iss`, `aud`, `exp`, `iat`, `nonce`). The HTTP client
//! is the reqwest 0.13 over rustls the CLI uses, given to openidconnect as its async
//! client (its own `reqwest` feature would bring reqwest 0.12 and a second TLS stack):
//! no redirects followed, a timeout, and answers capped in size.

use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreErrorResponseType,
    CoreGenderClaim, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
    CoreRevocableToken, CoreRevocationErrorResponse, CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AdditionalClaims, AuthorizationCode, ClaimsVerificationError, Client, ClientId, ClientSecret,
    CsrfToken, EmptyExtraTokenFields, EndpointMaybeSet, EndpointNotSet, EndpointSet, HttpRequest,
    HttpResponse, IdTokenFields, IssuerUrl, LogoutRequest, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, PostLogoutRedirectUrl, ProviderMetadataWithLogout, RedirectUrl, Scope,
    StandardErrorResponse, StandardTokenResponse, TokenResponse as _,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::service::sso::{Refusal, Verified};

/// How long discovery (metadata and JWKS) is reused for an issuer.
const DISCOVERY_TTL: Duration = Duration::from_secs(300);
/// A provider's answer larger than this is refused.
const MAX_ANSWER_BYTES: usize = 1 << 20;
/// The whole of one request to the provider.
const TIMEOUT: Duration = Duration::from_secs(10);
/// An ID token issued longer ago than this (or later than now + skew) is refused.
const MAX_ID_TOKEN_AGE_SECS: i64 = 600;
const SKEW_SECS: i64 = 60;

/// The `groups` claim, kept as sent: an array of strings (a single string is taken as one
/// group; anything else as none).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GroupsClaim {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    groups: Option<serde_json::Value>,
}

impl AdditionalClaims for GroupsClaim {}

impl GroupsClaim {
    fn names(&self) -> Vec<String> {
        match &self.groups {
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            Some(serde_json::Value::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        }
    }
}

type TokenFields = IdTokenFields<
    GroupsClaim,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type TokenResponse = StandardTokenResponse<TokenFields, CoreTokenType>;
type RpClient = Client<
    GroupsClaim,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    TokenResponse,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// A failed call to the provider.
#[derive(Debug)]
pub struct HttpError(String);

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HttpError {}

/// The relying party: one HTTP client and the discovery cache. Cheap to share.
pub struct RelyingParty {
    http: reqwest::Client,
    discovered: Mutex<HashMap<String, (Instant, ProviderMetadataWithLogout)>>,
}

impl Default for RelyingParty {
    fn default() -> Self {
        Self::new()
    }
}

/// What the start of a sign-in hands back: where to send the browser, and what to keep.
pub struct Begun {
    pub authorize_url: String,
    pub state: String,
    pub nonce: String,
    pub verifier: String,
}

impl RelyingParty {
    pub fn new() -> Self {
        // reqwest uses the process's rustls provider (ring), as the CLI's client does.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(TIMEOUT)
            // A connection per call: calls are rare (discovery is cached; one code exchange
            // per sign-in), and a provider may close an idle kept-alive connection just
            // as it is reused (seen: "connection reset" on the code exchange).
            .pool_max_idle_per_host(0)
            .build()
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "the single sign-on HTTP client");
                reqwest::Client::new()
            });
        RelyingParty {
            http,
            discovered: Mutex::new(HashMap::new()),
        }
    }

    async fn call(http: reqwest::Client, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let (mut parts, body) = req.into_parts();
        // reqwest writes the body's length and the host itself: a second Content-Length
        // (oauth2 sets one) makes a strict server drop the connection.
        parts
            .headers
            .remove(openidconnect::http::header::CONTENT_LENGTH);
        parts.headers.remove(openidconnect::http::header::HOST);
        let mut out = http
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body)
            .send()
            .await
            .map_err(|e| HttpError(chain(&e)))?;
        let status = out.status();
        let headers = out.headers().clone();
        let mut bytes = Vec::new();
        while let Some(chunk) = out.chunk().await.map_err(|e| HttpError(format!("{e}")))? {
            if bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(HttpError(format!(
                    "the answer is larger than {MAX_ANSWER_BYTES} bytes"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        let mut resp = openidconnect::http::Response::new(bytes);
        *resp.status_mut() = status;
        *resp.headers_mut() = headers;
        Ok(resp)
    }

    /// The provider's metadata and keys (discovery), reused for [`DISCOVERY_TTL`]; `fresh`
    /// fetches them again whatever the cache holds.
    async fn discover(
        &self,
        issuer: &str,
        fresh: bool,
    ) -> Result<ProviderMetadataWithLogout, Refusal> {
        if !fresh {
            if let Ok(cache) = self.discovered.lock() {
                if let Some((at, m)) = cache.get(issuer) {
                    if at.elapsed() < DISCOVERY_TTL {
                        return Ok(m.clone());
                    }
                }
            }
        }
        let url = IssuerUrl::new(issuer.to_string()).map_err(|e| {
            Refusal::new("sso_provider_unreachable", format!("issuer {issuer}: {e}"))
        })?;
        let http = self.http.clone();
        let client = move |req: HttpRequest| Self::call(http.clone(), req);
        let m = ProviderMetadataWithLogout::discover_async(url, &client)
            .await
            .map_err(|e| {
                tracing::warn!(issuer, error = %chain(&e), "OpenID Connect discovery failed");
                Refusal::new(
                    "sso_provider_unreachable",
                    format!("the identity provider at {issuer} could not be reached or described itself wrongly; try again later or ask an admin"),
                )
            })?;
        if let Ok(mut cache) = self.discovered.lock() {
            cache.insert(issuer.to_string(), (Instant::now(), m.clone()));
        }
        Ok(m)
    }

    fn client(
        m: ProviderMetadataWithLogout,
        client_id: &str,
        secret: &str,
        redirect_uri: &str,
    ) -> Result<RpClient, Refusal> {
        let redirect = RedirectUrl::new(redirect_uri.to_string())
            .map_err(|e| Refusal::new("sso_misconfigured", format!("redirect URI: {e}")))?;
        Ok(RpClient::from_provider_metadata(
            m,
            ClientId::new(client_id.to_string()),
            Some(ClientSecret::new(secret.to_string())),
        )
        .set_redirect_uri(redirect))
    }

    /// Where to send the browser to end its session at the provider too (OpenID Connect
    /// RP-Initiated Logout 1.0): the provider's `end_session_endpoint` with `client_id`
    /// and `post_logout_redirect_uri` (which the provider must have registered for the
    /// client). `None` when the provider publishes no such endpoint or cannot be reached:
    /// the Tessera session is ended either way.
    pub async fn end_session_url(
        &self,
        issuer: &str,
        client_id: &str,
        back_to: &str,
    ) -> Option<String> {
        let m = self.discover(issuer, false).await.ok()?;
        let endpoint = m.additional_metadata().end_session_endpoint.clone()?;
        let back = PostLogoutRedirectUrl::new(back_to.to_string()).ok()?;
        Some(
            LogoutRequest::from(endpoint)
                .set_client_id(ClientId::new(client_id.to_string()))
                .set_post_logout_redirect_uri(back)
                .http_get_url()
                .to_string(),
        )
    }

    /// Discovery, then the authorization URL with fresh `state`, `nonce` and PKCE (S256).
    pub async fn begin(
        &self,
        issuer: &str,
        client_id: &str,
        secret: &str,
        redirect_uri: &str,
        login_hint: &str,
    ) -> Result<Begun, Refusal> {
        let m = self.discover(issuer, false).await?;
        let client = Self::client(m, client_id, secret, redirect_uri)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scope(Scope::new("email".into()))
            .add_scope(Scope::new("profile".into()))
            .add_extra_param("login_hint", login_hint)
            .set_pkce_challenge(challenge)
            .url();
        Ok(Begun {
            authorize_url: url.to_string(),
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            verifier: verifier.secret().clone(),
        })
    }

    /// The code exchanged (with the PKCE verifier) and the ID token checked; `now` is the
    /// service's clock (seconds).
    #[allow(clippy::too_many_arguments)]
    pub async fn finish(
        &self,
        issuer: &str,
        client_id: &str,
        secret: &str,
        redirect_uri: &str,
        code: &str,
        verifier: &str,
        nonce: &str,
        now: i64,
    ) -> Result<Verified, Refusal> {
        let m = self.discover(issuer, false).await?;
        let client = Self::client(m, client_id, secret, redirect_uri)?;
        let http = self.http.clone();
        let call = move |req: HttpRequest| Self::call(http.clone(), req);
        let answer = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| Refusal::new("sso_misconfigured", format!("the provider has no token endpoint: {e}")))?
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_string()))
            .request_async(&call)
            .await
            .map_err(|e| {
                tracing::info!(issuer, error = %chain(&e), "the identity provider refused the code");
                Refusal::new(
                    "sso_code_refused",
                    "the identity provider refused the sign-in code (used already, expired, or not issued for this sign-in); start again",
                )
            })?;
        let id_token = answer.id_token().ok_or_else(|| {
            Refusal::new(
                "sso_id_token_invalid",
                "the identity provider sent no ID token",
            )
        })?;
        let verifier = checks(&client, now);
        let nonce = Nonce::new(nonce.to_string());
        let claims = match id_token.claims(&verifier, &nonce) {
            Ok(c) => c,
            Err(ClaimsVerificationError::SignatureVerification(_)) => {
                // The provider may have rotated its keys since discovery: fetch them again,
                // once, and check again.
                let m = self.discover(issuer, true).await?;
                let client = Self::client(m, client_id, secret, redirect_uri)?;
                let verifier = checks(&client, now);
                match id_token.claims(&verifier, &nonce) {
                    Ok(c) => return Ok(verified(issuer, c)),
                    Err(e) => return Err(refusal_of(issuer, &e)),
                }
            }
            Err(e) => return Err(refusal_of(issuer, &e)),
        };
        Ok(verified(issuer, claims))
    }
}

/// The ID token's checks beyond openidconnect's defaults: the service's clock for `exp`,
/// `iat` within [`MAX_ID_TOKEN_AGE_SECS`] before now and [`SKEW_SECS`] after, and the
/// asymmetric algorithms only (never an HMAC keyed with the client secret, never `none`).
fn checks(client: &RpClient, now: i64) -> openidconnect::IdTokenVerifier<'_, CoreJsonWebKey> {
    let now_dt = chrono::DateTime::from_timestamp(now, 0).unwrap_or_default();
    client
        .id_token_verifier()
        .set_allowed_algs([
            CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
            CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
            CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
            CoreJwsSigningAlgorithm::RsaSsaPssSha256,
            CoreJwsSigningAlgorithm::EcdsaP256Sha256,
            CoreJwsSigningAlgorithm::EcdsaP384Sha384,
            CoreJwsSigningAlgorithm::EdDsa,
        ])
        .set_time_fn(move || now_dt)
        .set_issue_time_verifier_fn(move |iat| {
            let iat = iat.timestamp();
            if iat > now + SKEW_SECS {
                Err(format!("issued in the future ({iat})"))
            } else if iat < now - MAX_ID_TOKEN_AGE_SECS {
                Err(format!("issued too long ago ({iat})"))
            } else {
                Ok(())
            }
        })
}

fn verified(
    issuer: &str,
    c: &openidconnect::IdTokenClaims<GroupsClaim, CoreGenderClaim>,
) -> Verified {
    Verified {
        issuer: issuer.to_string(),
        subject: c.subject().as_str().to_string(),
        email: c.email().map(|e| e.as_str().to_string()),
        email_verified: c.email_verified(),
        name: c
            .name()
            .and_then(|n| n.get(None))
            .map(|n| n.as_str().to_string()),
        groups: c.additional_claims().names(),
    }
}

/// The stable reason and the words for a refused ID token.
fn refusal_of(issuer: &str, e: &ClaimsVerificationError) -> Refusal {
    tracing::info!(issuer, error = %e, "ID token refused");
    match e {
        ClaimsVerificationError::InvalidAudience(_) => Refusal::new(
            "sso_audience_mismatch",
            "the identity provider's ID token was not issued to Tessera's client (audience); ask an admin to check the client id",
        ),
        ClaimsVerificationError::Expired(_) => Refusal::new(
            "sso_id_token_expired",
            "the identity provider's ID token has expired (or was issued at a wrong time); start again, and ask an admin to check the clocks if it persists",
        ),
        ClaimsVerificationError::InvalidIssuer(_) => Refusal::new(
            "sso_issuer_mismatch",
            "the ID token was issued by another identity provider",
        ),
        ClaimsVerificationError::InvalidNonce(_) => Refusal::new(
            "sso_nonce_mismatch",
            "the ID token belongs to another sign-in (nonce); start again",
        ),
        ClaimsVerificationError::SignatureVerification(_) => Refusal::new(
            "sso_signature_invalid",
            "the ID token's signature does not verify with the identity provider's keys",
        ),
        _ => Refusal::new(
            "sso_id_token_invalid",
            "the identity provider's ID token was refused",
        ),
    }
}

/// An error with its sources, for the log.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

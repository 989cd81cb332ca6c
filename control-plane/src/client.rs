//! The HTTP client of the CLI and the tests: `http://` and `https://` (rustls, ring), built
//! on `reqwest`.
//!
//! Server certificates are checked against the system's roots, or, when a CA certificate is
//! given ([`Client::with_ca_cert`], the CLI's `--ca-cert` / `TESSERA_CA_CERT`), against that
//! CA alone, as `curl --cacert` does. Proxy variables are not read: the CLI talks straight to
//! `--url`.

use serde_json::Value;

pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Result<Value, String> {
        serde_json::from_slice(&self.body)
            .map_err(|e| format!("the server sent invalid JSON ({e})"))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The JSON body of a 2xx reply, or the server's `{error, message}` as an error.
    pub fn ok_json(&self) -> Result<Value, String> {
        if (200..300).contains(&self.status) {
            self.json()
        } else {
            Err(self.error_text())
        }
    }

    pub fn error_text(&self) -> String {
        let json = self.json();
        if self.status == 401
            && json
                .as_ref()
                .is_ok_and(|v| v.get("reason").and_then(Value::as_str) == Some("token_missing"))
        {
            return "401: no API token was given: set TESSERA_TOKEN to your token (or pass \
                    --token-file FILE); `tessera admin bootstrap` prints the first one"
                .to_string();
        }
        match json {
            Ok(v) => format!(
                "{} {}: {}",
                self.status,
                v.get("error").and_then(Value::as_str).unwrap_or("error"),
                v.get("message").and_then(Value::as_str).unwrap_or("")
            ),
            Err(_) => format!("{}: {}", self.status, self.text()),
        }
    }
}

impl Client {
    /// A client for `base` (`http://…` or `https://…`), trusting the system's CA roots.
    pub fn new(base: &str, token: Option<String>) -> Result<Self, String> {
        Self::with_ca_cert(base, token, None)
    }

    /// A client for `base` that, when `ca_pem` is given, trusts only the CA certificates in
    /// that PEM text (a private CA, a self-signed server).
    pub fn with_ca_cert(
        base: &str,
        token: Option<String>,
        ca_pem: Option<&[u8]>,
    ) -> Result<Self, String> {
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(format!(
                "--url must start with http:// or https:// (got {base:?})"
            ));
        }
        // reqwest is built without a crypto provider of its own: it uses the process default,
        // which is ring here. Installing fails harmlessly when one already is.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // No redirects: the old client followed none, and a token stays with `--url`.
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none());
        if let Some(pem) = ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| format!("--ca-cert: not a PEM certificate ({})", chain(&e)))?;
            if certs.is_empty() {
                return Err("--ca-cert: no certificate in the PEM file".into());
            }
            builder = builder.tls_certs_only(certs);
        } else if base.starts_with("http://") {
            // Plain http never verifies a certificate: skip loading the system's roots
            // (slow, and absent on a minimal machine).
            builder = builder.tls_certs_only(Vec::new());
        }
        let http = builder.build().map_err(|e| {
            format!(
                "cannot set up the HTTP client: {} (for https with a private CA, pass --ca-cert)",
                chain(&e)
            )
        })?;
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            token,
            http,
        })
    }

    pub async fn send(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<Reply, String> {
        let uri = format!("{}{}", self.base, path);
        let method =
            reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| format!("{uri}: {e}"))?;
        let mut req = self
            .http
            .request(method, &uri)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| transport_error(&uri, &e))?;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = resp
            .bytes()
            .await
            .map_err(|e| transport_error(&uri, &e))?
            .to_vec();
        Ok(Reply {
            status,
            content_type,
            body,
        })
    }

    pub async fn get(&self, path: &str) -> Result<Reply, String> {
        self.send("GET", path, "application/json", Vec::new()).await
    }

    pub async fn json(&self, method: &str, path: &str, body: &Value) -> Result<Reply, String> {
        self.send(
            method,
            path,
            "application/json",
            body.to_string().into_bytes(),
        )
        .await
    }
}

/// `<url>: <cause>`, with a hint when the cause is the server's certificate. The URL, not
/// the request: the token travels in a header and never reaches the message.
fn transport_error(uri: &str, e: &reqwest::Error) -> String {
    // reqwest's own message repeats the URL; its causes say what happened.
    let why = match std::error::Error::source(e) {
        Some(cause) => chain(cause),
        None => chain(e),
    };
    let hint = if why.contains("certificate") || why.contains("UnknownIssuer") {
        " (is the server's CA trusted? pass it with --ca-cert or TESSERA_CA_CERT)"
    } else {
        ""
    };
    format!("{uri}: {why}{hint}")
}

/// The error and its causes, `a: b: c`, without repeats (reqwest's own message is generic).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = err.source();
    }
    parts.join(": ")
}

/// Percent-encodes a query value.
pub fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

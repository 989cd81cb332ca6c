//! A small HTTP/1.1 client for the CLI and the tests (plain `http://` only).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

pub struct Client {
    base: String,
    token: Option<String>,
    http: HyperClient<HttpConnector, Full<Bytes>>,
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
        match self.json() {
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
    pub fn new(base: &str, token: Option<String>) -> Result<Self, String> {
        if !base.starts_with("http://") {
            return Err(format!(
                "--url must start with http:// (got {base:?}); put TLS in front with a proxy"
            ));
        }
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            token,
            http: HyperClient::builder(TokioExecutor::new()).build_http(),
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
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(&uri)
            .header("content-type", content_type);
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("{uri}: {e}"))?;
        let resp = self
            .http
            .request(req)
            .await
            .map_err(|e| format!("{uri}: {e}"))?;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("{uri}: {e}"))?
            .to_bytes()
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

/// Percent-encodes a query value.
pub fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

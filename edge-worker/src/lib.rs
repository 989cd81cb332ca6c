//! Tessera's verifier for workerd and Cloudflare Workers: a thin wasm-bindgen adapter on
//! `tessera-core`.
//!
//! The JS entry (`js/worker.mjs`) builds one [`EdgeVerifier`] per isolate from the
//! `TESSERA_CONFIG` binding (the Envoy filter's configuration schema) and calls
//! [`EdgeVerifier::check`] for every request. The answer is a plain object:
//!
//! ```text
//! {allow: true,  path, headers_to_set: [[name, value]...], headers_to_remove: [name...],
//!  limit_token, user, org, status_fail_open, usage, cache, refresh, refresh_uri}
//! {allow: false, status, headers: [[name, value]...], body, reason, usage, cache,
//!  refresh, refresh_uri}
//! ```
//!
//! `refresh` is core's "refresh needed" (`null`, `"keys"` or `"status_list"` with the
//! list's `refresh_uri`): the entry fetches that document, waiting at most
//! `refresh_wait_ms()`, and decides again; the second verdict is final.
//!
//! `usage` is core's usage record as JSON text (`null` when no token's signature
//! verified): the entry joins records into `{"events": [...]}` unchanged.
//!
//! `limit_token` (issue 25) is the API token an allowed request counts against: the entry
//! asks `rate_limit(limit_token, now_ms, may_wait)` before forwarding, adds
//! `spend_report(now_ms)` to its usage batches and hands their answers to
//! `apply_usage_answer(...)` (the Envoy filter's lease protocol, per isolate).
//!
//! `begin` / `finish` split the same check around the signature, so the entry can verify
//! it with WebCrypto (`crypto.subtle`) and fall back to `check` (pure Rust) when the
//! runtime lacks the algorithm:
//!
//! ```text
//! begin(...) → verdict | {pending: PendingCheck{alg, kid, signing_input, signature}}
//! finish(pending, valid) → verdict
//! ```
//!
//! The decision logic lives in [`adapter`] (plain Rust, tested natively); this file only
//! converts between JS values and Rust values. No randomness, no clock and no I/O here
//! either: the JS entry passes the time and does the fetches.

pub mod adapter;

use js_sys::{Array, Object, Reflect};
use tessera_core::{CacheUse, Plan, Refresh};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

/// One verifier and its token cache (keep one per isolate).
#[wasm_bindgen]
pub struct EdgeVerifier {
    inner: adapter::EdgeVerifier,
}

#[wasm_bindgen]
impl EdgeVerifier {
    /// Parses and validates the configuration JSON. Throws an `Error` whose message names
    /// the offending field, e.g. `invalid configuration: client_ip.source: ...`.
    #[wasm_bindgen(constructor)]
    pub fn new(config_json: &str) -> Result<EdgeVerifier, JsError> {
        adapter::EdgeVerifier::from_config_json(config_json)
            .map(|inner| EdgeVerifier { inner })
            .map_err(|e| JsError::new(&format!("invalid configuration: {e}")))
    }

    /// Decides one request, signature included (pure Rust). `headers` is an array of
    /// `[name, value]` pairs (as `[...request.headers]` gives them); `cf_connecting_ip`
    /// the `CF-Connecting-IP` value; `now_secs` the current Unix time in seconds.
    pub fn check(
        &mut self,
        method: &str,
        path: &str,
        headers: &Array,
        cf_connecting_ip: Option<String>,
        now_secs: f64,
    ) -> Result<Object, JsError> {
        let headers = headers_from_js(headers)?;
        let ip = cf_connecting_ip.as_deref();
        let verdict = self
            .inner
            .check(method, path, &headers, ip, unix_secs(now_secs));
        Ok(verdict_to_js(verdict))
    }

    /// Like `check`, but leaves the signature to the caller (WebCrypto): returns either
    /// the verdict, or `{pending: PendingCheck}` whose signature the caller verifies and
    /// passes to `finish`.
    pub fn begin(
        &mut self,
        method: &str,
        path: &str,
        headers: &Array,
        cf_connecting_ip: Option<String>,
        now_secs: f64,
    ) -> Result<Object, JsError> {
        let headers = headers_from_js(headers)?;
        let ip = cf_connecting_ip.as_deref();
        match self
            .inner
            .begin(method, path, &headers, ip, unix_secs(now_secs))
        {
            adapter::Begun::Done(verdict) => Ok(verdict_to_js(verdict)),
            adapter::Begun::Verify(pending) => {
                let out = Object::new();
                let jwk = self
                    .inner
                    .key_jwk(&pending.signature().kid)
                    .map(str::to_owned);
                set(&out, "pending", PendingCheck { pending, jwk }.into());
                Ok(out)
            }
        }
    }

    /// Completes a `begin` with the caller's verdict on the signature. Consumes `pending`.
    pub fn finish(&mut self, pending: PendingCheck, signature_valid: bool) -> Object {
        verdict_to_js(self.inner.finish(pending.pending, signature_valid))
    }

    /// Declares that the list at `uri` is fetched by the caller (from `now_secs` on, its
    /// age counts toward `sync.max_staleness_secs`).
    pub fn track_status_list(&mut self, uri: &str, now_secs: f64) {
        self.inner.track_status_list(uri, unix_secs(now_secs));
    }

    /// Replaces the status list published at `uri` (a token's `status.status_list.uri`)
    /// with the JSON document `json` (`{"bits": 2, "lst": ...}`), fetched at `now_secs`.
    /// Returns the number of entries; throws naming the bad member otherwise (the old list
    /// stays in force, and so does its age).
    pub fn set_status_list(
        &mut self,
        uri: &str,
        json: &str,
        now_secs: f64,
    ) -> Result<u32, JsError> {
        self.inner
            .set_status_list_json(uri, json, unix_secs(now_secs))
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
            .map_err(|e| JsError::new(&e))
    }

    /// The list at `uri` was revalidated at `now_secs` and has not changed (`304`).
    /// Returns false if no list was fetched for `uri` yet.
    pub fn status_list_unchanged(&mut self, uri: &str, now_secs: f64) -> bool {
        self.inner.status_list_unchanged(uri, unix_secs(now_secs))
    }

    /// The staleness bound without a `sync` section (`TESSERA_STATUS_MAX_STALE_MS`).
    pub fn set_default_max_staleness_secs(&mut self, secs: f64) {
        self.inner.set_default_max_staleness_secs(unix_secs(secs));
    }

    /// Whether the fetched status lists are current at `now_secs` (the filter's rule).
    pub fn status_fresh(&self, now_secs: f64) -> bool {
        self.inner.status_fresh(unix_secs(now_secs))
    }

    /// How long a request waits at most for the fetch its verdict's `refresh` asks for, or
    /// for a rate-limit lease, in milliseconds: the configuration's `max_wait_ms` (the same
    /// field bounds the wait in Envoy).
    pub fn refresh_wait_ms(&self) -> f64 {
        self.inner.max_wait_ms() as f64
    }

    /// Declares that the JWKS at `url` is fetched by the caller (fixes the union's order).
    pub fn track_jwks(&mut self, url: &str) {
        self.inner.track_jwks(url);
    }

    /// Replaces the JWKS fetched from `url` with the document `json`, validated as the
    /// configuration's `jwks` is. Returns the number of keys in force; throws naming the
    /// URL and the bad member otherwise (the previous keys stay).
    pub fn set_jwks(&mut self, url: &str, json: &str) -> Result<u32, JsError> {
        self.inner
            .set_jwks_json(url, json)
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
            .map_err(|e| JsError::new(&e))
    }

    /// Turns rate limiting on (the isolate sends usage reports), as `edge` in its spend.
    pub fn enable_rate_limits(&mut self, edge: &str) {
        self.inner.enable_rate_limits(edge);
    }

    /// The rate-limit decision for an allowed verdict's `limit_token` at `now_ms`:
    /// `{step: "go"}`, `{step: "ask"}` (send a report now, wait for its answer, apply it,
    /// then ask again with `may_wait` false), or `{step: "refuse", status, headers, body,
    /// reason}`.
    pub fn rate_limit(&mut self, token: &str, now_ms: f64, may_wait: bool) -> Object {
        let out = Object::new();
        match self.inner.rate_limit(token, unix_ms(now_ms), may_wait) {
            adapter::RateLimit::Go => set(&out, "step", "go".into()),
            adapter::RateLimit::Ask => set(&out, "step", "ask".into()),
            adapter::RateLimit::Refuse(reply) => {
                set(&out, "step", "refuse".into());
                set(&out, "status", reply.status.into());
                set(&out, "headers", pairs(&reply.headers).into());
                set(&out, "body", reply.body.into());
                set(&out, "reason", reply.reason.as_str().into());
            }
        }
        out
    }

    /// Whether tokens wait to be asked about (a report naming them should go now).
    pub fn asking(&self) -> bool {
        self.inner.asking()
    }

    /// Whether a request of `token` would still ask for a lease (nothing is decided): the
    /// entry waits while this holds, at most `refresh_wait_ms()`.
    pub fn lease_pending(&self, token: &str, now_ms: f64) -> bool {
        self.inner.lease_pending(token, unix_ms(now_ms))
    }

    /// The `spend` member (JSON text) for the next usage batch sent at `now_ms`, or
    /// `undefined` while rate limiting is off. Takes the tokens asked for; the report
    /// counts as unanswered until `apply_usage_answer` (the fallback's clock).
    pub fn spend_report(&mut self, now_ms: f64) -> Option<String> {
        self.inner.spend_report(unix_ms(now_ms))
    }

    /// The isolate's rate-limit counters at `now_ms`: `{admitted, refused, asked,
    /// unleased, fallback, lost}` (`fallback`: requests decided on the local share while
    /// the control plane was lost; `lost`: whether it is lost now).
    pub fn rate_limit_counters(&mut self, now_ms: f64) -> Object {
        let c = self.inner.rate_limit_counters(unix_ms(now_ms));
        let out = Object::new();
        for (k, v) in [
            ("admitted", c.admitted),
            ("refused", c.refused),
            ("asked", c.asked),
            ("unleased", c.unleased),
            ("fallback", c.fallback),
        ] {
            set(&out, k, (v as f64).into());
        }
        set(&out, "lost", c.lost.into());
        out
    }

    /// Merges the answer (JSON text) to a batch that carried `spend`; returns the leases
    /// merged, throws when it is unreadable (nothing changes).
    pub fn apply_usage_answer(&mut self, text: &str, now_ms: f64) -> Result<u32, JsError> {
        self.inner
            .apply_usage_answer(text, unix_ms(now_ms))
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
            .map_err(|e| JsError::new(&e))
    }
}

/// A check waiting for the caller's signature verdict (see `EdgeVerifier.begin`).
#[wasm_bindgen]
pub struct PendingCheck {
    pending: adapter::Pending,
    jwk: Option<String>,
}

#[wasm_bindgen]
impl PendingCheck {
    /// The key's pinned algorithm: `EdDSA`, `ES256` or `RS256`.
    #[wasm_bindgen(getter)]
    pub fn alg(&self) -> String {
        self.pending.signature().alg.name().to_owned()
    }

    /// The key id (in the configuration's `jwks` or a fetched JWKS).
    #[wasm_bindgen(getter)]
    pub fn kid(&self) -> String {
        self.pending.signature().kid.clone()
    }

    /// The public JWK (JSON text) of the key core would verify with, if known.
    #[wasm_bindgen(getter)]
    pub fn jwk(&self) -> Option<String> {
        self.jwk.clone()
    }

    /// The JWS signing input (`base64url(header) "." base64url(payload)`), as bytes.
    #[wasm_bindgen(getter)]
    pub fn signing_input(&self) -> Vec<u8> {
        self.pending.signature().signing_input.clone()
    }

    /// The signature bytes (raw `r || s` for ES256, as WebCrypto's ECDSA expects).
    #[wasm_bindgen(getter)]
    pub fn signature(&self) -> Vec<u8> {
        self.pending.signature().signature.clone()
    }
}

fn verdict_to_js(verdict: adapter::Verdict) -> Object {
    let out = Object::new();
    match verdict.plan {
        Plan::Forward {
            set: to_set,
            remove,
        } => {
            set(&out, "allow", true.into());
            set(&out, "path", verdict.path.into());
            set(&out, "headers_to_set", pairs(&to_set).into());
            set(
                &out,
                "headers_to_remove",
                remove
                    .iter()
                    .map(|n| JsValue::from_str(n))
                    .collect::<Array>()
                    .into(),
            );
            let limit = verdict.limit_token.map_or(JsValue::NULL, JsValue::from);
            set(&out, "limit_token", limit);
            if let Some(identity) = verdict.identity {
                set(&out, "user", identity.user.into());
                set(&out, "org", identity.org.into());
                set(&out, "status_fail_open", identity.status_fail_open.into());
            }
        }
        Plan::Reply(reply) => {
            set(&out, "allow", false.into());
            set(&out, "status", reply.status.into());
            set(&out, "headers", pairs(&reply.headers).into());
            set(&out, "body", reply.body.into());
            set(&out, "reason", reply.reason.as_str().into());
        }
    }
    let usage = verdict.usage.map_or(JsValue::NULL, |r| {
        let mut json = String::new();
        r.write_json(&mut json);
        JsValue::from(json)
    });
    set(&out, "usage", usage);
    let cache = match verdict.cache {
        CacheUse::Hit => "hit",
        CacheUse::Miss => "miss",
        CacheUse::NotUsed => "not_used",
    };
    set(&out, "cache", cache.into());
    let (refresh, uri) = match verdict.refresh {
        None => (JsValue::NULL, JsValue::NULL),
        Some(Refresh::Keys) => (JsValue::from_str("keys"), JsValue::NULL),
        Some(Refresh::StatusList { uri }) => (JsValue::from_str("status_list"), JsValue::from(uri)),
    };
    set(&out, "refresh", refresh);
    set(&out, "refresh_uri", uri);
    out
}

/// Seconds as a whole number; anything that is not a finite positive number is 0 (then
/// every token looks issued in the future, which refuses rather than accepts).
fn unix_secs(now: f64) -> u64 {
    if now.is_finite() && now > 0.0 {
        now.floor() as u64
    } else {
        0
    }
}

/// Milliseconds as a whole number (0 for anything that is not a finite positive number).
fn unix_ms(now: f64) -> u64 {
    unix_secs(now)
}

fn set(obj: &Object, key: &str, value: JsValue) {
    // Setting a data property on a fresh plain object cannot fail.
    let _ = Reflect::set(obj, &JsValue::from_str(key), &value);
}

fn pairs<N: AsRef<str>>(list: &[(N, String)]) -> Array {
    list.iter()
        .map(|(n, v)| {
            let pair = Array::new();
            pair.push(&JsValue::from_str(n.as_ref()));
            pair.push(&JsValue::from_str(v));
            JsValue::from(pair)
        })
        .collect()
}

fn headers_from_js(headers: &Array) -> Result<Vec<(String, String)>, JsError> {
    let mut out = Vec::with_capacity(headers.length() as usize);
    for (i, entry) in headers.iter().enumerate() {
        let pair = entry
            .dyn_into::<Array>()
            .map_err(|_| JsError::new(&format!("headers[{i}]: not a [name, value] array")))?;
        match (pair.get(0).as_string(), pair.get(1).as_string()) {
            (Some(name), Some(value)) => out.push((name, value)),
            _ => {
                return Err(JsError::new(&format!(
                    "headers[{i}]: name and value must be strings"
                )))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::unix_secs;

    #[test]
    fn seconds_from_js_numbers() {
        assert_eq!(unix_secs(1_700_000_000.9), 1_700_000_000);
        assert_eq!(unix_secs(f64::NAN), 0);
        assert_eq!(unix_secs(-5.0), 0);
        assert_eq!(unix_secs(f64::INFINITY), 0);
    }
}

//! The verifier the API authenticates with: `tessera_core::Verifier`, the same code the
//! data plane runs, configured from the database (every org's issuer, audience, published
//! keys and current status list).
//!
//! Building it encodes and decodes every status list, so it is cached. The cache key is a
//! fingerprint read in the caller's transaction (each org's id, audience and status-list
//! version, and the kids its JWKS publishes at `now`): a request is always checked against
//! exactly what the database says at that moment, including writes made by another
//! process on the same database, and the verifier is rebuilt only when something moved.

use crate::error::{ApiError, ApiResult};
use crate::service::{self, Ctx};
use crate::store::Tx;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use tessera_core::config::TokenSource;
use tessera_core::{Deny, Reason, Verifier};

/// The `WWW-Authenticate` realm of the API (also core's default).
pub const REALM: &str = "tessera";

/// A cached verifier, keyed by the fingerprint of the state it was built from.
#[derive(Default)]
pub struct Verifiers {
    cached: Mutex<Option<(String, Arc<Verifier>)>>,
}

/// What a verifier is built from.
struct Material {
    fingerprint: String,
    issuers: Vec<String>,
    audiences: Vec<String>,
    keys: Vec<Value>,
    orgs: Vec<String>,
}

fn material(tx: &mut dyn Tx, ctx: &Ctx) -> ApiResult<Material> {
    let mut m = Material {
        fingerprint: String::new(),
        issuers: Vec::new(),
        audiences: Vec::new(),
        keys: Vec::new(),
        orgs: Vec::new(),
    };
    let mut orgs = tx.list_orgs()?;
    orgs.sort_by(|a, b| a.id.cmp(&b.id));
    for org in orgs {
        let _ = write!(
            m.fingerprint,
            "{}\u{1}{}\u{1}{}\u{1}{}",
            org.id, org.audience, org.status_version, org.next_status_idx
        );
        let jwks = service::jwks(tx, ctx, &org.id)?;
        for k in jwks["keys"].as_array().into_iter().flatten() {
            let _ = write!(m.fingerprint, "\u{1}{}", k["kid"].as_str().unwrap_or(""));
            m.keys.push(k.clone());
        }
        m.fingerprint.push('\u{2}');
        m.issuers.push(ctx.issuer(&org.id));
        if !m.audiences.contains(&org.audience) {
            m.audiences.push(org.audience.clone());
        }
        m.orgs.push(org.id);
    }
    Ok(m)
}

/// The core configuration for the API: all orgs' issuers, audiences, keys and status
/// lists; both token types; `Authorization: Bearer|Token`; client address from the peer;
/// fail closed; no route scopes (the API authorizes by role, see `policy`). `None` while
/// no org has a key (an empty database).
pub fn config_json(tx: &mut dyn Tx, ctx: &Ctx) -> ApiResult<Option<Value>> {
    let m = material(tx, ctx)?;
    build_config(tx, ctx, &m)
}

fn build_config(tx: &mut dyn Tx, ctx: &Ctx, m: &Material) -> ApiResult<Option<Value>> {
    if m.keys.is_empty() {
        return Ok(None);
    }
    let mut lists = Vec::with_capacity(m.orgs.len());
    for org in &m.orgs {
        let (_, list) = service::status_list(tx, org)?;
        lists.push(json!({"uri": ctx.status_uri(org), "bits": 2, "lst": list["lst"]}));
    }
    Ok(Some(json!({
        "issuers": m.issuers,
        "audiences": m.audiences,
        "jwks": {"keys": m.keys},
        "token_types": [service::TYP_API, service::TYP_ACCESS],
        "token_sources": token_sources()
            .iter()
            .map(|t| json!({"header": t.header, "schemes": t.schemes}))
            .collect::<Vec<_>>(),
        "clock_skew_secs": service::SKEW,
        "client_ip": {"source": "peer"},
        "status": {"required": true, "fail_policy": "closed", "lists": lists},
        "routes": [],
        "cache_size": 0,
        "realm": REALM,
    })))
}

/// Where the API takes tokens from: `Authorization: Bearer|Token` (core's default).
fn token_sources() -> Vec<TokenSource> {
    vec![TokenSource {
        header: "authorization".into(),
        schemes: vec!["bearer".into(), "token".into()],
    }]
}

/// Core's refusal of a request that carries no usable token (`token_missing`, or
/// `token_ambiguous`), decided with core's extractor before anything else is read, so a
/// call without a credential is a 401 whatever its body.
pub fn early_refusal(headers: &[(String, String)]) -> Option<Deny> {
    match tessera_core::extract::extract(&token_sources(), headers) {
        Ok(Some(_)) => None,
        Ok(None) => Some(Deny::new(Reason::TokenMissing, REALM, &[])),
        Err(reason) => Some(Deny::new(reason, REALM, &[])),
    }
}

impl Verifiers {
    pub fn new() -> Self {
        Self::default()
    }

    /// The verifier for the database as `tx` sees it; `None` while there are no keys.
    pub fn current(&self, tx: &mut dyn Tx, ctx: &Ctx) -> ApiResult<Option<Arc<Verifier>>> {
        let m = material(tx, ctx)?;
        {
            let cached = self
                .cached
                .lock()
                .map_err(|_| ApiError::internal("verifier cache poisoned"))?;
            if let Some((fp, v)) = cached.as_ref() {
                if *fp == m.fingerprint {
                    return Ok(Some(Arc::clone(v)));
                }
            }
        }
        let Some(config) = build_config(tx, ctx, &m)? else {
            return Ok(None);
        };
        let verifier = Verifier::from_config_json(&config.to_string())
            .map_err(|e| ApiError::internal(format!("verifier configuration: {e}")))?;
        let verifier = Arc::new(verifier);
        let mut cached = self
            .cached
            .lock()
            .map_err(|_| ApiError::internal("verifier cache poisoned"))?;
        *cached = Some((m.fingerprint, Arc::clone(&verifier)));
        Ok(Some(verifier))
    }
}

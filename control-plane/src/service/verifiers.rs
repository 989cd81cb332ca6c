//! The verifiers the API authenticates with: `tessera_core::Verifier`, the same code the
//! data plane runs, one per organization, configured from the database (the org's issuer,
//! audience, published keys and status list).
//!
//! A request costs a few point reads, whatever the number of orgs or the size of the
//! lists: the token's `kid` names its org (a lookup key only: the org's verifier then
//! checks everything), the org row gives its status-list version, and the org's keys are
//! listed. A verifier is built once per org; when the list version moved, only the entries
//! changed since are read and applied to that org's list; when the published keys changed,
//! that org's verifier is rebuilt. Everything is read in the caller's transaction, so a
//! request is checked against exactly what the database says at that moment, including
//! writes made by another process on the same database.

use super::keys::{jwks_keys, status_list_of, status_of};
use super::{Ctx, Error, Result, SKEW};
use crate::model::Org;
use crate::store::Tx;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use tessera_core::config::{ClientIpSource, TokenSource};
use tessera_core::jwks::KeySet;
use tessera_core::token::TokenType;
use tessera_core::withdrawn::WithdrawnScopes;
use tessera_core::{Config, Deny, FailPolicy, Reason, Verifier};

/// The `WWW-Authenticate` realm of the API (also core's default).
pub const REALM: &str = "tessera";

/// One org's verifier and the state it was built from.
pub struct OrgVerifier {
    pub verifier: Verifier,
    /// The org's audience the verifier accepts.
    audience: String,
    /// The kids the verifier holds, in the order the JWKS publishes them.
    kids: Vec<String>,
    /// The status-list version the verifier's list is at.
    version: i64,
    /// The list encoded at `version`, once asked for (served to every edge polling).
    encoded: Option<(i64, String)>,
    /// The withdrawn-scopes member at `version` (`None` inside: nothing withdrawn).
    withdrawn: Option<(i64, Option<Value>)>,
    /// The version whose withdrawn scopes the verifier holds (`Verifier::set_withdrawn`),
    /// for introspection; the API's own authentication narrows by the grants instead.
    withdrawn_held: Option<i64>,
}

/// Per-org verifiers, built on first use and kept current incrementally.
#[derive(Default)]
pub struct Verifiers {
    orgs: Mutex<HashMap<String, Arc<Mutex<OrgVerifier>>>>,
}

fn lock<T>(m: &Mutex<T>) -> Result<MutexGuard<'_, T>> {
    m.lock()
        .map_err(|_| Error::internal("verifier cache lock poisoned"))
}

/// Where the API takes tokens from: `Authorization: Bearer|Token` (core's default).
fn token_sources() -> &'static [TokenSource] {
    static SOURCES: LazyLock<Vec<TokenSource>> = LazyLock::new(|| {
        vec![TokenSource {
            header: "authorization".into(),
            schemes: vec!["bearer".into(), "token".into()],
        }]
    });
    &SOURCES
}

/// Core's refusal of a request that carries no usable token (`token_missing`, or
/// `token_ambiguous`), decided with core's extractor before anything else is read, so a
/// call without a credential is a 401 whatever its body.
pub fn early_refusal(headers: &[(String, String)]) -> Option<Deny> {
    match tessera_core::extract::extract(token_sources(), headers) {
        Ok(Some(_)) => None,
        Ok(None) => Some(Deny::new(Reason::TokenMissing, REALM, &[])),
        Err(reason) => Some(Deny::new(reason, REALM, &[])),
    }
}

/// The presented token's text, as core extracts it.
pub fn presented_token(headers: &[(String, String)]) -> Option<&str> {
    tessera_core::extract::extract(token_sources(), headers)
        .ok()
        .flatten()
        .map(|f| f.token)
}

/// The `kid` of a token's protected header, read without any trust: it only chooses which
/// org's verifier judges the token.
pub fn unverified_kid(token: &str) -> Option<String> {
    let header = token.split('.').next()?;
    if header.len() > 4096 {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(header).ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    Some(v.get("kid")?.as_str()?.to_string())
}

/// One org's verifier, from core's configuration builder: its issuer and audience, its
/// published keys, both token types, `Authorization: Bearer|Token`, the client address from
/// the peer, its status list (fail closed), no route scopes (the API authorizes by role,
/// see `policy`), no cache (every call is checked against the database anyway).
fn build(tx: &mut dyn Tx, ctx: &Ctx, org: &Org, keys: Vec<Value>) -> Result<OrgVerifier> {
    let (version, list) = status_list_of(tx, &org.id)?;
    let kids = kids_of(&keys);
    let key_set = KeySet::from_jwks(&json!({ "keys": keys }), "jwks")
        .map_err(|e| Error::internal(format!("published keys of {}: {e}", org.id)))?;
    let config = Config::builder()
        .issuer(ctx.issuer(&org.id))
        .audience(org.audience.clone())
        .keys(key_set)
        .token_types([TokenType::Api, TokenType::Access])
        .token_sources(token_sources().iter().cloned())
        .clock_skew_secs(SKEW.unsigned_abs())
        .client_ip(ClientIpSource::Peer)
        .status_required(true)
        .fail_policy(FailPolicy::Closed)
        .status_list(ctx.status_uri(&org.id), list)
        .cache_size(0)
        .realm(REALM)
        .build()
        .map_err(|e| Error::internal(format!("verifier configuration of {}: {e}", org.id)))?;
    Ok(OrgVerifier {
        verifier: Verifier::new(config),
        audience: org.audience.clone(),
        kids,
        version,
        encoded: None,
        withdrawn: None,
        withdrawn_held: None,
    })
}

fn kids_of(keys: &[Value]) -> Vec<String> {
    keys.iter()
        .map(|k| k["kid"].as_str().unwrap_or("").to_string())
        .collect()
}

impl Verifiers {
    pub fn new() -> Self {
        Self::default()
    }

    /// The verifier of `org` as `tx` sees the database, brought up to date: rebuilt when
    /// the org's published keys or audience changed, else only the status-list entries
    /// changed since its version are applied.
    pub fn for_org(
        &self,
        tx: &mut dyn Tx,
        ctx: &Ctx,
        org: &Org,
    ) -> Result<Arc<Mutex<OrgVerifier>>> {
        let keys = jwks_keys(tx, ctx, &org.id)?;
        let cached = lock(&self.orgs)?.get(&org.id).cloned();
        if let Some(entry) = cached {
            let mut v = lock(&entry)?;
            if v.kids == kids_of(&keys) && v.audience == org.audience {
                if v.version != org.status_version {
                    if v.version > org.status_version {
                        // Another process restored an older database: start over.
                        *v = build(tx, ctx, org, keys)?;
                    } else {
                        let uri = ctx.status_uri(&org.id);
                        for (idx, value) in tx.status_changes_since(&org.id, v.version)? {
                            let Ok(i) = usize::try_from(idx) else {
                                continue;
                            };
                            v.verifier.set_status(&uri, i, status_of(value));
                        }
                        v.version = org.status_version;
                    }
                }
                drop(v);
                return Ok(entry);
            }
        }
        let entry = Arc::new(Mutex::new(build(tx, ctx, org, keys)?));
        lock(&self.orgs)?.insert(org.id.clone(), Arc::clone(&entry));
        Ok(entry)
    }

    /// Drops every cached verifier; each is rebuilt from the database on its next use.
    /// Called after a write failed in the store: a verifier brought up to date inside
    /// that write may hold status entries that never committed.
    pub fn forget_all(&self) {
        if let Ok(mut orgs) = self.orgs.lock() {
            orgs.clear();
        }
    }

    /// The org's status list encoded (`lst`) at the version `tx` sees, with that version;
    /// encoded once per version however many edges ask.
    pub fn encoded_list(&self, tx: &mut dyn Tx, ctx: &Ctx, org: &Org) -> Result<(i64, String)> {
        let entry = self.for_org(tx, ctx, org)?;
        let mut v = lock(&entry)?;
        let version = v.version;
        if let Some((at, lst)) = &v.encoded {
            if *at == version {
                return Ok((version, lst.clone()));
            }
        }
        let uri = ctx.status_uri(&org.id);
        let lst = v
            .verifier
            .config()
            .status_lists
            .iter()
            .find(|(u, _)| *u == uri)
            .map(|(_, l)| l.to_lst())
            .ok_or_else(|| Error::internal(format!("no status list for {}", org.id)))?;
        v.encoded = Some((version, lst.clone()));
        Ok((version, lst))
    }

    /// The org's `withdrawn` member (scopes withdrawn from live tokens' indices) at the
    /// version `tx` sees; computed once per version. Grants change the version too.
    pub fn encoded_withdrawn(
        &self,
        tx: &mut dyn Tx,
        ctx: &Ctx,
        org: &Org,
    ) -> Result<(i64, Option<Value>)> {
        let entry = self.for_org(tx, ctx, org)?;
        let mut v = lock(&entry)?;
        let doc = withdrawn_at(&mut v, tx, org)?;
        Ok((v.version, doc))
    }

    /// Decides a token as the org's edges do (RFC 7662 introspection): the org's verifier
    /// — its issuer, audience, published keys and status list — at the version `tx` sees,
    /// holding the very `withdrawn` member the edges poll at that version, with `client`
    /// (`ip:port`) as the client address for the IP filter (none: a token with an IP filter
    /// is refused, as core refuses it at an edge that cannot tell the client). The token is
    /// presented as `Authorization: Bearer <token>`, so core's extractor removes the `tsr_`
    /// prefix as at every edge. The outcome is final: the control plane holds the newest
    /// keys and list, so a refresh could change nothing.
    pub fn judge(
        &self,
        tx: &mut dyn Tx,
        ctx: &Ctx,
        org: &Org,
        token: &str,
        client: Option<&str>,
    ) -> Result<tessera_core::Outcome> {
        let entry = self.for_org(tx, ctx, org)?;
        let mut v = lock(&entry)?;
        if v.withdrawn_held != Some(v.version) {
            let doc = withdrawn_at(&mut v, tx, org)?;
            let scopes = match &doc {
                Some(d) => WithdrawnScopes::from_json(d).map_err(|e| {
                    Error::internal(format!("withdrawn scopes of {}: {}", org.id, e.0))
                })?,
                None => WithdrawnScopes::new(),
            };
            v.verifier.set_withdrawn(&ctx.status_uri(&org.id), scopes);
            v.withdrawn_held = Some(v.version);
        }
        let headers = [("authorization".to_string(), format!("Bearer {token}"))];
        let req = tessera_core::Request {
            method: "POST",
            path: "/v1/introspect",
            headers: &headers,
            source_address: client,
        };
        let now = u64::try_from(ctx.now).unwrap_or(0);
        Ok(v.verifier.check(&req, now, None).settled())
    }
}

/// The org's `withdrawn` member at the version `v` is at; computed once per version.
fn withdrawn_at(v: &mut OrgVerifier, tx: &mut dyn Tx, org: &Org) -> Result<Option<Value>> {
    if let Some((at, doc)) = &v.withdrawn {
        if *at == v.version {
            return Ok(doc.clone());
        }
    }
    let doc = super::scopes::withdrawn_scopes(tx, &org.id)?;
    let doc = (!doc.is_empty()).then(|| doc.to_json());
    v.withdrawn = Some((v.version, doc.clone()));
    Ok(doc)
}

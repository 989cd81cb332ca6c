//! The operations behind the API, one module per resource. Each operation runs inside one
//! store transaction (`&mut dyn Tx`), checks the caller's authority (`policy`), validates
//! its input (`input`), changes records and status lists, writes the audit log, and
//! returns a typed view (`views`) or a [`Error`]. Nothing here knows HTTP.
//!
//! - [`orgs`]: bootstrap, organizations, signing keys, edge credentials;
//! - [`setup`]: the first-run setup link (the first organization and admin in the browser);
//! - [`keys`]: minting and signing, JWKS, status lists;
//! - [`users`]: users of an organization;
//! - [`tokens`]: the API-token lifecycle and search;
//! - [`authn`]: presented tokens (API authentication, token exchange) and the API's
//!   verifier cache;
//! - [`logs`]: usage reports from the edges, the authentication and audit logs;
//! - [`authority`]: what a credential may do (management scope, access tokens, bounds);
//! - [`accounts`]: passwords, invitation and reset links, sessions, sign-in throttling,
//!   disabling and deleting users, edge credentials' list and revocation;
//! - [`rotation`]: token rotation with a grace period, ended at every edge;
//! - [`webhooks`]: webhook endpoints, the outbox written with each event, delivery;
//! - [`notifications`]: `token.expiring` and `token.used_from_new_network`, raised once;
//! - [`mail`]: the mail written with each event people act on, and users' mail settings;
//! - [`scim`]: SCIM credentials and SCIM 2.0 provisioning of users and role groups.

pub mod accounts;
pub mod authn;
pub mod authority;
pub mod error;
pub mod input;
pub mod introspect;
pub mod keys;
pub mod leaks;
pub mod leases;
pub mod limits;
pub mod logs;
pub mod mail;
pub mod notifications;
pub mod orgs;
pub mod quotas;
pub mod rotation;
pub mod scim;
pub mod scopes;
pub mod sessions;
pub mod setup;
pub mod sso;
pub mod tokens;
pub mod users;
pub mod verifiers;
pub mod views;
pub mod webhooks;

pub use error::{Error, Result};
pub use tessera_core::config::{TYP_ACCESS_TOKEN as TYP_ACCESS, TYP_API_TOKEN as TYP_API};
pub use verifiers::Verifiers;

use crate::crypto::MasterKey;
use crate::model::{AuditEntry, Org, Token, User};
use crate::policy::{self, Action, Actor};
use crate::store::Tx;
use serde_json::Value;
use std::cell::{Cell, RefCell};

/// The `typ` of a signed status list (Token Status List draft).
pub const TYP_STATUS_LIST: &str = "statuslist+jwt";
/// Leeway on `exp`/`nbf` when the control plane checks a presented token.
pub const SKEW: i64 = 60;
/// A token's lifetime when none is asked for (capped by the org's maximum).
pub const DEFAULT_LIFETIME_DAYS: i64 = 90;

/// What every operation may read: where the API is reached, the master key, the time.
pub struct Ctx<'a> {
    pub base_url: &'a str,
    pub master: &'a MasterKey,
    pub now: i64,
    /// Lifetime of exchanged access tokens, seconds.
    pub access_ttl: i64,
    /// Set when the operation changed what the edges sync (a status list or keys), so
    /// that only such a commit wakes the status-list long polls.
    edges_changed: Cell<bool>,
    /// The acting credential (`Credential::label`), written into every audit entry.
    credential: RefCell<String>,
    /// How many tokens, users and customer orgs may be held.
    pub quotas: quotas::Quotas,
    /// Whether the server sends mail (`tessera serve --smtp-url`): events then write the
    /// mail outbox too (`mail::on_audit`).
    pub mail: bool,
}

impl<'a> Ctx<'a> {
    pub fn new(base_url: &'a str, master: &'a MasterKey, now: i64, access_ttl: i64) -> Self {
        Ctx {
            base_url,
            master,
            now,
            access_ttl,
            edges_changed: Cell::new(false),
            credential: RefCell::new(String::new()),
            quotas: quotas::Quotas::default(),
            mail: false,
        }
    }

    /// The same context, mailing events when `mail` is set.
    pub fn with_mail(mut self, mail: bool) -> Self {
        self.mail = mail;
        self
    }

    /// The same context with these quotas.
    pub fn with_quotas(mut self, quotas: quotas::Quotas) -> Self {
        self.quotas = quotas;
        self
    }

    pub fn issuer(&self, org_id: &str) -> String {
        format!("{}/v1/orgs/{org_id}", self.base_url)
    }

    pub fn status_uri(&self, org_id: &str) -> String {
        format!("{}/v1/orgs/{org_id}/status-list", self.base_url)
    }

    /// Records that this operation changed a status list or a key set.
    pub fn mark_edges_changed(&self) {
        self.edges_changed.set(true);
    }

    /// Names the credential the operation acts with, for the audit log.
    pub fn act_with(&self, credential: String) {
        *self.credential.borrow_mut() = credential;
    }

    /// The credential the operation acts with (empty when none was named).
    pub fn credential(&self) -> String {
        self.credential.borrow().clone()
    }

    /// Whether the operation changed a status list or a key set.
    pub fn edges_changed(&self) -> bool {
        self.edges_changed.get()
    }
}

/// Writes one audit-log entry in the operation's transaction; `actor` is a user id, or
/// `bootstrap` for the operator.
pub(crate) fn audit(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    actor: &str,
    org_id: &str,
    action: &str,
    target: &str,
    detail: Value,
) -> Result<()> {
    let entry = AuditEntry {
        id: 0,
        at: ctx.now,
        org_id: org_id.to_string(),
        actor: actor.to_string(),
        action: action.to_string(),
        target: target.to_string(),
        detail,
        credential: ctx.credential(),
    };
    tx.insert_audit(&entry)?;
    // The webhook events the entry stands for, in the same transaction (the outbox), and
    // the mail it calls for.
    webhooks::on_audit(tx, ctx, &entry)?;
    mail::on_audit(tx, ctx, &entry)
}

pub(crate) fn load_org(tx: &mut dyn Tx, id: &str) -> Result<Org> {
    tx.get_org(id)?
        .ok_or_else(|| Error::not_found(format!("no organization {id:?}")))
}

pub(crate) fn load_user(tx: &mut dyn Tx, id: &str) -> Result<User> {
    tx.get_user(id)?
        .ok_or_else(|| Error::not_found(format!("no user {id:?}")))
}

/// A live (not deleted) token.
pub(crate) fn load_token(tx: &mut dyn Tx, id: &str) -> Result<Token> {
    tx.get_token(id)?
        .filter(|t| t.deleted_at.is_none())
        .ok_or_else(|| Error::not_found(format!("no token {id:?}")))
}

/// Loads a token with its owner and the owner's org, and checks `action` for the caller.
pub(crate) fn token_for(
    tx: &mut dyn Tx,
    actor: &Actor,
    id: &str,
    action: Action,
) -> Result<(Token, User, Org)> {
    let token = load_token(tx, id)?;
    let owner = load_user(tx, &token.user_id)?;
    let org = load_org(tx, &token.org_id)?;
    if let Err(e) = policy::check(actor, &owner, &org, action) {
        // A token the caller has no relation to is answered like an unknown one, so that
        // its id's existence does not leak across organizations.
        if policy::relation(actor, &owner, &org) == policy::Relation::Unrelated {
            return Err(Error::not_found(format!("no token {id:?}")));
        }
        return Err(e);
    }
    Ok((token, owner, org))
}

//! Webhooks (issue 26): per-org endpoints with an event filter, messages signed as the
//! Standard Webhooks specification says (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature: v1,<base64 HMAC-SHA256(secret, "id.timestamp.body")>`, secret
//! `whsec_<base64 of 32 bytes>`, shown once and stored sealed with the master key).
//!
//! **Outbox.** Events are read off the audit log's seam: [`on_audit`] runs inside
//! `service::audit`, so a message row for every matching endpoint is written in the very
//! transaction that made the event (a revoke, a rotation's end, a leak's notification, a
//! deprovisioning) — committed with it or not at all. The delivery worker (`tessera serve`,
//! `api::webhooks`) claims due rows ([`claim`]: on PostgreSQL `FOR UPDATE SKIP LOCKED`, so
//! replicas take different rows; a claim lapses after [`CLAIM_SECS`], so a crashed
//! worker's rows are taken again), posts them, and records each attempt ([`record`]). A
//! failed attempt is retried after [`RETRY_SCHEDULE`] (about 37 hours in all), then the
//! message is marked failed. So delivery is at least once across restarts and replicas;
//! receivers de-duplicate on `webhook-id`, the same on every attempt and on a resend.

use super::{audit, load_org, Ctx, Error, Result};
use crate::crypto;
use crate::model::AuditEntry;
use crate::policy::{self, Actor};
use crate::store::webhooks::{AttemptRecord, OutboxRecord, WebhookRecord};
use crate::store::Tx;
use crate::timefmt;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

/// The event types an endpoint may ask for.
pub const EVENT_TYPES: [&str; 7] = [
    "token.expiring",
    "token.revoked",
    "token.rotated",
    "token.exposed",
    "token.revoked_but_presented",
    "token.used_from_new_network",
    "user.deprovisioned",
];

/// The events a `notification.needed` audit entry may stand for (its `event`).
const NOTICE_EVENTS: [&str; 4] = [
    "token.exposed",
    "token.revoked_but_presented",
    "token.expiring",
    "token.used_from_new_network",
];

/// Seconds from a failed attempt to the next: 5 s, 5 min, 30 min, 2 h, 5 h, then 10 h
/// three times (37.6 h from the first attempt to the last), then the message fails.
pub const RETRY_SCHEDULE: [i64; 8] = [5, 300, 1_800, 7_200, 18_000, 36_000, 36_000, 36_000];

/// How long a worker holds the messages it claimed (longer than a delivery's timeout).
pub const CLAIM_SECS: i64 = 30;

/// Messages one worker claims at once.
const CLAIM_BATCH: i64 = 20;

/// Most endpoints per org.
const MAX_WEBHOOKS: usize = 20;

/// A new endpoint.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// Where messages are POSTed: an `http` or `https` URL.
    pub url: String,
    /// The event types to receive (empty: every type): `token.expiring`, `token.revoked`,
    /// `token.rotated`, `token.exposed`, `token.revoked_but_presented`,
    /// `token.used_from_new_network`, `user.deprovisioned`.
    #[serde(default)]
    pub events: Vec<String>,
    #[serde(default)]
    pub description: String,
}

/// An endpoint (never its secret).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct WebhookView {
    pub id: String,
    pub org: String,
    pub url: String,
    /// Empty: every event type.
    pub events: Vec<String>,
    pub description: String,
    pub created_by: String,
    pub created_at: String,
}

impl WebhookView {
    fn new(w: &WebhookRecord) -> Self {
        WebhookView {
            id: w.id.clone(),
            org: w.org_id.clone(),
            url: w.url.clone(),
            events: w.events.clone(),
            description: w.description.clone(),
            created_by: w.created_by.clone(),
            created_at: timefmt::format(w.created_at),
        }
    }
}

/// A new endpoint and its signing secret, shown once.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct WebhookCreated {
    pub webhook: WebhookView,
    /// `whsec_` + base64 of 32 random bytes: the Standard Webhooks key. Shown once.
    pub secret: String,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct WebhookList {
    pub webhooks: Vec<WebhookView>,
}

/// One message to one endpoint, as the delivery log shows it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    /// The `webhook-id` (the same on every attempt and on a resend).
    pub id: String,
    pub webhook: String,
    pub event: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    pub attempts: i64,
    pub created_at: String,
    pub next_attempt_at: Option<String>,
    pub delivered_at: Option<String>,
    pub failed_at: Option<String>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    /// The JSON body sent.
    pub payload: Value,
}

impl DeliveryView {
    fn new(m: &OutboxRecord) -> Self {
        let status = if m.delivered_at.is_some() {
            "delivered"
        } else if m.failed_at.is_some() {
            "failed"
        } else {
            "pending"
        };
        DeliveryView {
            id: m.id.clone(),
            webhook: m.webhook_id.clone(),
            event: m.event.clone(),
            status: status.into(),
            attempts: m.attempts,
            created_at: timefmt::format(m.created_at),
            next_attempt_at: (status == "pending").then(|| timefmt::format(m.next_at)),
            delivered_at: m.delivered_at.map(timefmt::format),
            failed_at: m.failed_at.map(timefmt::format),
            last_status: m.last_status,
            last_error: m.last_error.clone(),
            payload: serde_json::from_str(&m.payload).unwrap_or(Value::Null),
        }
    }
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct DeliveryList {
    pub deliveries: Vec<DeliveryView>,
}

fn check_url(url: &str) -> Result<()> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| Error::field("url", format!("not a URL ({e}); give http(s)://host/path")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(Error::field(
            "url",
            "give an http:// or https:// URL with a host",
        ));
    }
    if url.len() > 2048 || !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(Error::field(
            "url",
            "at most 2048 characters, without a user name or password",
        ));
    }
    Ok(())
}

/// `POST /v1/orgs/{org}/webhooks` (org admin).
pub fn create(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    actor: &Actor,
    org_id: &str,
    req: CreateWebhook,
) -> Result<WebhookCreated> {
    let org = load_org(tx, org_id)?;
    policy::require_org_admin(actor, &org, false)?;
    check_url(&req.url)?;
    super::input::check_text("description", &req.description, 2000, true)?;
    let mut events = Vec::new();
    for (i, e) in req.events.iter().enumerate() {
        if !EVENT_TYPES.contains(&e.as_str()) {
            return Err(Error::field(
                &format!("events[{i}]"),
                format!(
                    "{e:?} is not an event type: one of {}",
                    EVENT_TYPES.join(", ")
                ),
            ));
        }
        if !events.contains(e) {
            events.push(e.clone());
        }
    }
    if tx.list_webhooks(&org.id)?.len() >= MAX_WEBHOOKS {
        return Err(Error::conflict(format!(
            "{} has {MAX_WEBHOOKS} webhooks already, the most allowed; delete one first",
            org.id
        )));
    }
    let id = crypto::new_id("whk")?;
    let key = crypto::random_bytes::<32>()?;
    let sealed = ctx.master.seal(&id, &key)?;
    let record = WebhookRecord {
        id,
        org_id: org.id.clone(),
        url: req.url,
        events,
        secret_sealed: sealed,
        description: req.description,
        created_by: actor.user.id.clone(),
        created_at: ctx.now,
        deleted_at: None,
    };
    tx.insert_webhook(&record)?;
    audit(
        tx,
        ctx,
        &actor.user.id,
        &org.id,
        "webhook.create",
        &record.id,
        json!({"url": record.url, "events": record.events}),
    )?;
    Ok(WebhookCreated {
        webhook: WebhookView::new(&record),
        secret: format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(key)
        ),
    })
}

/// `GET /v1/orgs/{org}/webhooks` (org admin, or an admin of the org managing it).
pub fn list(tx: &mut dyn Tx, actor: &Actor, org_id: &str) -> Result<WebhookList> {
    let org = load_org(tx, org_id)?;
    policy::require_org_admin(actor, &org, true)?;
    Ok(WebhookList {
        webhooks: tx
            .list_webhooks(&org.id)?
            .iter()
            .map(WebhookView::new)
            .collect(),
    })
}

fn hook_of(tx: &mut dyn Tx, org_id: &str, id: &str) -> Result<WebhookRecord> {
    tx.get_webhook(id)?
        .filter(|w| w.org_id == org_id && w.deleted_at.is_none())
        .ok_or_else(|| Error::not_found(format!("no webhook {id:?} in {org_id}")))
}

/// `DELETE /v1/orgs/{org}/webhooks/{id}` (org admin): nothing more is sent to it.
pub fn delete(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    actor: &Actor,
    org_id: &str,
    id: &str,
) -> Result<WebhookView> {
    let org = load_org(tx, org_id)?;
    policy::require_org_admin(actor, &org, false)?;
    let mut hook = hook_of(tx, &org.id, id)?;
    hook.deleted_at = Some(ctx.now);
    tx.update_webhook(&hook)?;
    audit(
        tx,
        ctx,
        &actor.user.id,
        &org.id,
        "webhook.delete",
        &hook.id,
        json!({"url": hook.url}),
    )?;
    Ok(WebhookView::new(&hook))
}

/// `GET /v1/orgs/{org}/webhooks/{id}/deliveries`: the delivery log, newest first.
pub fn deliveries(
    tx: &mut dyn Tx,
    actor: &Actor,
    org_id: &str,
    id: &str,
    page: super::input::Page,
) -> Result<DeliveryList> {
    let org = load_org(tx, org_id)?;
    policy::require_org_admin(actor, &org, true)?;
    let hook = hook_of(tx, &org.id, id)?;
    Ok(DeliveryList {
        deliveries: tx
            .list_outbox(&hook.id, page.per_page, page.offset())?
            .iter()
            .map(DeliveryView::new)
            .collect(),
    })
}

/// `POST /v1/orgs/{org}/webhooks/{id}/deliveries/{msg}/resend` (org admin): the message
/// is sent again now, with the same `webhook-id`, and retried as a new one would be.
pub fn resend(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    actor: &Actor,
    org_id: &str,
    id: &str,
    message_id: &str,
) -> Result<DeliveryView> {
    let org = load_org(tx, org_id)?;
    policy::require_org_admin(actor, &org, false)?;
    let hook = hook_of(tx, &org.id, id)?;
    let mut m = tx
        .get_outbox(message_id)?
        .filter(|m| m.webhook_id == hook.id)
        .ok_or_else(|| Error::not_found(format!("no message {message_id:?} for {}", hook.id)))?;
    m.attempts = 0;
    m.next_at = ctx.now;
    m.claimed_until = None;
    m.delivered_at = None;
    m.failed_at = None;
    tx.update_outbox(&m)?;
    audit(
        tx,
        ctx,
        &actor.user.id,
        &org.id,
        "webhook.resend",
        &m.id,
        json!({"webhook": hook.id, "event": m.event}),
    )?;
    Ok(DeliveryView::new(&m))
}

/// The webhook events an audit entry stands for, each with its `data`.
fn events_of(e: &AuditEntry) -> Vec<(&'static str, Value)> {
    let d = &e.detail;
    let base = |extra: Value| {
        let mut v = json!({"org": e.org_id, "target": e.target, "actor": e.actor});
        if let (Some(m), Some(x)) = (v.as_object_mut(), extra.as_object()) {
            for (k, val) in x {
                m.insert(k.clone(), val.clone());
            }
        }
        v
    };
    match e.action.as_str() {
        "token.revoke" => vec![("token.revoked", base(json!({"token": e.target})))],
        "token.revoke_all" => d["revoked"]
            .as_array()
            .map(|ids| {
                ids.iter()
                    .map(|id| ("token.revoked", base(json!({"token": id}))))
                    .collect()
            })
            .unwrap_or_default(),
        "token.leaked" if d["action"] == "revoked" => vec![(
            "token.revoked",
            base(json!({"token": e.target, "because": "leaked"})),
        )],
        "token.rotated" => vec![(
            "token.rotated",
            base(json!({"token": e.target, "successor": d["successor"]})),
        )],
        "notification.needed" => d["event"]
            .as_str()
            .and_then(|ev| NOTICE_EVENTS.iter().find(|t| **t == ev))
            .map(|t| vec![(*t, base(d.clone()))])
            .unwrap_or_default(),
        "user.disable" | "user.delete" => vec![(
            "user.deprovisioned",
            base(json!({"user": e.target, "how": e.action.trim_start_matches("user.")})),
        )],
        _ => Vec::new(),
    }
}

/// Writes the outbox rows an audit entry calls for, in the entry's transaction. Entries
/// that are no webhook event cost nothing; the others one read of the org's endpoints.
pub(crate) fn on_audit(tx: &mut dyn Tx, ctx: &Ctx, e: &AuditEntry) -> Result<()> {
    let events = events_of(e);
    if events.is_empty() {
        return Ok(());
    }
    let hooks = tx.list_webhooks(&e.org_id)?;
    for (event, data) in events {
        for h in hooks
            .iter()
            .filter(|h| h.events.is_empty() || h.events.iter().any(|x| x == event))
        {
            let payload = json!({
                "type": event,
                "timestamp": timefmt::format(ctx.now),
                "data": data,
            });
            tx.insert_outbox(&OutboxRecord {
                id: crypto::new_id("msg")?,
                webhook_id: h.id.clone(),
                org_id: h.org_id.clone(),
                event: event.to_string(),
                payload: payload.to_string(),
                created_at: ctx.now,
                attempts: 0,
                next_at: ctx.now,
                claimed_until: None,
                delivered_at: None,
                failed_at: None,
                last_status: None,
                last_error: None,
            })?;
        }
    }
    Ok(())
}

/// A claimed message, ready to send: where, the body, and the endpoint's key.
#[derive(Clone)]
pub struct Delivery {
    pub id: String,
    pub url: String,
    pub payload: String,
    pub key: Vec<u8>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("id", &self.id)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// Claims the due messages (see the module's text) and opens their endpoints' keys.
pub fn claim(tx: &mut dyn Tx, ctx: &Ctx) -> Result<Vec<Delivery>> {
    let mut out = Vec::new();
    for m in tx.claim_outbox(ctx.now, ctx.now + CLAIM_SECS, CLAIM_BATCH)? {
        let Some(hook) = tx.get_webhook(&m.webhook_id)? else {
            continue;
        };
        if hook.deleted_at.is_some() {
            // A deleted endpoint gets nothing more: its messages fail.
            let mut m = m;
            m.failed_at = Some(ctx.now);
            m.claimed_until = None;
            m.last_error = Some("the webhook was deleted".into());
            tx.update_outbox(&m)?;
            continue;
        }
        let key = ctx.master.open(&hook.id, &hook.secret_sealed)?;
        out.push(Delivery {
            id: m.id,
            url: hook.url,
            payload: m.payload,
            key,
        });
    }
    Ok(out)
}

/// Whether any message is due (the cheap read before [`claim`]'s write).
pub fn any_due(tx: &mut dyn Tx, ctx: &Ctx) -> Result<bool> {
    Ok(tx.count_due_outbox(ctx.now)? > 0)
}

/// Records an attempt: delivered (a 2xx answer), or retried after [`RETRY_SCHEDULE`], or
/// failed after the last retry. `status` is the HTTP status when an answer came.
pub fn record(
    tx: &mut dyn Tx,
    ctx: &Ctx,
    id: &str,
    status: Option<u16>,
    error: Option<String>,
) -> Result<()> {
    let Some(mut m) = tx.get_outbox(id)? else {
        return Ok(());
    };
    let ok = status.is_some_and(|s| (200..300).contains(&s));
    tx.insert_attempt(&AttemptRecord {
        message_id: m.id.clone(),
        webhook_id: m.webhook_id.clone(),
        org_id: m.org_id.clone(),
        at: ctx.now,
        status: status.map(i64::from),
        error: error.clone(),
    })?;
    if m.delivered_at.is_some() {
        return Ok(());
    }
    m.attempts += 1;
    m.claimed_until = None;
    m.last_status = status.map(i64::from);
    m.last_error = if ok {
        None
    } else {
        Some(error.unwrap_or_else(|| format!("HTTP {}", status.unwrap_or(0))))
    };
    if ok {
        m.delivered_at = Some(ctx.now);
    } else {
        match usize::try_from(m.attempts - 1)
            .ok()
            .and_then(|i| RETRY_SCHEDULE.get(i))
        {
            Some(wait) => m.next_at = ctx.now + wait,
            None => m.failed_at = Some(ctx.now),
        }
    }
    tx.update_outbox(&m)?;
    Ok(())
}

/// The Standard Webhooks signature header value: `v1,` + base64(HMAC-SHA256(key,
/// "{id}.{timestamp}.{body}")).
pub fn signature(key: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    use hmac::{Hmac, Mac};
    // HMAC takes a key of any length.
    let mut mac = match Hmac::<sha2::Sha256>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_specifications_example() {
        // The Standard Webhooks specification's example (secret, id, timestamp, payload).
        let key = base64::engine::general_purpose::STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap();
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            signature(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn the_retries_last_more_than_a_day() {
        assert!(RETRY_SCHEDULE.iter().sum::<i64>() >= 86_400);
    }
}

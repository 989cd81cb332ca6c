//! What the store keeps for webhooks (`service::webhooks`): each organization's endpoints
//! (URL, event filter, the signing secret sealed with the master key), the outbox — one row
//! per event and endpoint, written in the transaction that made the event — and the
//! delivery log (one row per attempt). A supertrait of `Tx`, so every transaction has it.

use super::StoreResult;

/// One endpoint of an organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRecord {
    pub id: String,
    pub org_id: String,
    pub url: String,
    /// The event types it receives; empty means every type.
    pub events: Vec<String>,
    /// The signing secret's 32 bytes, sealed with the master key (`aad` = the id).
    pub secret_sealed: Vec<u8>,
    pub description: String,
    pub created_by: String,
    pub created_at: i64,
    pub deleted_at: Option<i64>,
}

/// One message for one endpoint; `id` is the `webhook-id` (the same on every attempt).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRecord {
    pub id: String,
    pub webhook_id: String,
    pub org_id: String,
    pub event: String,
    /// The JSON body, exactly as signed and sent.
    pub payload: String,
    pub created_at: i64,
    pub attempts: i64,
    pub next_at: i64,
    /// A delivery worker holds it until then (a crashed worker's claim lapses).
    pub claimed_until: Option<i64>,
    pub delivered_at: Option<i64>,
    /// Given up after the last retry.
    pub failed_at: Option<i64>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
}

/// One delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    pub message_id: String,
    pub webhook_id: String,
    pub org_id: String,
    pub at: i64,
    /// The HTTP status, if an answer came.
    pub status: Option<i64>,
    pub error: Option<String>,
}

pub trait WebhooksTx {
    fn insert_webhook(&mut self, w: &WebhookRecord) -> StoreResult<()>;
    fn update_webhook(&mut self, w: &WebhookRecord) -> StoreResult<()>;
    fn get_webhook(&mut self, id: &str) -> StoreResult<Option<WebhookRecord>>;
    /// The organization's endpoints that are not deleted, oldest first.
    fn list_webhooks(&mut self, org_id: &str) -> StoreResult<Vec<WebhookRecord>>;
    fn insert_outbox(&mut self, m: &OutboxRecord) -> StoreResult<()>;
    fn update_outbox(&mut self, m: &OutboxRecord) -> StoreResult<()>;
    /// A message (locked in a PostgreSQL write).
    fn get_outbox(&mut self, id: &str) -> StoreResult<Option<OutboxRecord>>;
    /// Claims up to `limit` messages due at `now` and not claimed by anyone (or whose claim
    /// lapsed) until `until`. On PostgreSQL the rows are taken with `FOR UPDATE SKIP
    /// LOCKED`, so replicas claiming at once take different rows.
    fn claim_outbox(&mut self, now: i64, until: i64, limit: i64) -> StoreResult<Vec<OutboxRecord>>;
    /// How many messages are due at `now` and not claimed (at most 1 is counted).
    fn count_due_outbox(&mut self, now: i64) -> StoreResult<i64>;
    /// An endpoint's messages, newest first.
    fn list_outbox(
        &mut self,
        webhook_id: &str,
        limit: i64,
        offset: i64,
    ) -> StoreResult<Vec<OutboxRecord>>;
    fn insert_attempt(&mut self, a: &AttemptRecord) -> StoreResult<()>;
    /// A message's attempts, oldest first.
    fn list_attempts(&mut self, message_id: &str) -> StoreResult<Vec<AttemptRecord>>;
}

//! What the store keeps for notifications (`service::notifications`, `service::mail`): the
//! notices sent per token (`token.expiring` at each threshold: a row claims it, so each is
//! sent once across restarts and replicas), the networks each token was used from (the
//! last [`crate::service::notifications::MAX_NETWORKS`] per token, for
//! `token.used_from_new_network`), the mail outbox (one row per message and recipient,
//! written in the transaction that made the event) and each user's mail settings (their
//! own address, the events they muted). A supertrait of `Tx`, so every transaction has it.

use super::StoreResult;

/// One network a token was used from (an IPv4 /24 or an IPv6 /48).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkRecord {
    pub token_id: String,
    /// `203.0.113.0/24`, `2001:db8:1::/48`.
    pub network: String,
    pub org_id: String,
    pub first_seen_at: i64,
    pub last_seen_at: i64,
    /// When its `token.used_from_new_network` was raised (none for a token's first network).
    pub alerted_at: Option<i64>,
    /// The edge credential that reported it first (or again after 30 days).
    pub edge_id: String,
}

/// One mail message to one person; written with its event, sent by the mail worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailRecord {
    pub id: String,
    pub org_id: String,
    pub user_id: String,
    pub to_addr: String,
    pub event: String,
    pub subject: String,
    /// Plain text.
    pub body: String,
    pub created_at: i64,
    pub attempts: i64,
    pub next_at: i64,
    /// A mail worker holds it until then (a crashed worker's claim lapses).
    pub claimed_until: Option<i64>,
    pub sent_at: Option<i64>,
    /// Given up (the server refused it for good, or after the last retry).
    pub failed_at: Option<i64>,
    pub last_error: Option<String>,
}

/// A user's own mail settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MailSettings {
    pub user_id: String,
    pub org_id: String,
    /// The address the user gave; none: the identity provider's (SCIM, then SSO).
    pub email: Option<String>,
    /// Events the user receives no mail for.
    pub muted: Vec<String>,
    pub updated_at: i64,
}

pub trait NotificationsTx {
    /// Claims notice `kind` at threshold `days` of a token: `false` when it was claimed
    /// already (by this process earlier, or by another replica, which then waited for
    /// that one's commit). The claim is written in the transaction that raises the notice.
    fn claim_notice(
        &mut self,
        token_id: &str,
        org_id: &str,
        kind: &str,
        days: i64,
        at: i64,
    ) -> StoreResult<bool>;
    /// Live, downloaded, enabled tokens expiring in `(now, now + days]` whose lifetime was
    /// longer than `days`, with no `expiring` notice at `days` or fewer yet: at most
    /// `limit` ids, the soonest to expire first.
    fn expiring_tokens(&mut self, now: i64, days: i64, limit: i64) -> StoreResult<Vec<String>>;

    /// The networks kept for a token, most recently seen first.
    fn token_networks(&mut self, token_id: &str) -> StoreResult<Vec<NetworkRecord>>;
    /// Inserts or replaces the row of (`token_id`, `network`).
    fn put_token_network(&mut self, n: &NetworkRecord) -> StoreResult<()>;
    /// Moves a kept network's last sighting forward.
    fn touch_token_network(&mut self, token_id: &str, network: &str, at: i64) -> StoreResult<()>;
    fn delete_token_network(&mut self, token_id: &str, network: &str) -> StoreResult<()>;

    fn insert_mail(&mut self, m: &MailRecord) -> StoreResult<()>;
    fn update_mail(&mut self, m: &MailRecord) -> StoreResult<()>;
    /// A message (locked in a PostgreSQL write).
    fn get_mail(&mut self, id: &str) -> StoreResult<Option<MailRecord>>;
    /// Claims up to `limit` messages due at `now` and not claimed (or whose claim lapsed)
    /// until `until`; `FOR UPDATE SKIP LOCKED` on PostgreSQL, as the webhook outbox.
    fn claim_mail(&mut self, now: i64, until: i64, limit: i64) -> StoreResult<Vec<MailRecord>>;
    /// Whether a message is due at `now` and not claimed.
    fn any_due_mail(&mut self, now: i64) -> StoreResult<bool>;
    /// A user's messages, newest first.
    fn list_mail(&mut self, user_id: &str, limit: i64) -> StoreResult<Vec<MailRecord>>;

    fn get_mail_settings(&mut self, user_id: &str) -> StoreResult<Option<MailSettings>>;
    /// Inserts or replaces.
    fn put_mail_settings(&mut self, s: &MailSettings) -> StoreResult<()>;
    /// The email of the user's most recent single sign-on, if any.
    fn sso_email_of(&mut self, user_id: &str) -> StoreResult<Option<String>>;
}

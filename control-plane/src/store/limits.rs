//! What the store keeps for per-token rate limits and quotas (issue 25): one row per
//! subject of an organization — `token:<id>` (the token's own limits), `org:default` (what
//! a token without its own value gets) and `org:ceiling` (the most any token of the org
//! may have). A supertrait of `Tx`, so every transaction has it.

use super::StoreResult;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The subject of an organization's defaults.
pub const ORG_DEFAULT: &str = "org:default";
/// The subject of an organization's ceiling.
pub const ORG_CEILING: &str = "org:ceiling";

/// The subject of a token's own limits.
pub fn token_subject(token_id: &str) -> String {
    format!("token:{token_id}")
}

/// Rate limits (per second, minute, hour) and quotas (per UTC day, per UTC month, in
/// total), each a count of requests; absent means "not set here".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimits {
    /// Requests per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_second: Option<i64>,
    /// Requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_minute: Option<i64>,
    /// Requests per hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_hour: Option<i64>,
    /// Requests per UTC day (a quota).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_day: Option<i64>,
    /// Requests per UTC calendar month (a quota).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_month: Option<i64>,
    /// Requests over the token's whole life (a quota).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<i64>,
}

impl RateLimits {
    /// The field names, in the order [`RateLimits::values`] gives them.
    pub const FIELDS: [&'static str; 6] = [
        "per_second",
        "per_minute",
        "per_hour",
        "per_day",
        "per_month",
        "total",
    ];

    pub fn values(&self) -> [Option<i64>; 6] {
        [
            self.per_second,
            self.per_minute,
            self.per_hour,
            self.per_day,
            self.per_month,
            self.total,
        ]
    }

    pub fn from_values(v: [Option<i64>; 6]) -> Self {
        RateLimits {
            per_second: v[0],
            per_minute: v[1],
            per_hour: v[2],
            per_day: v[3],
            per_month: v[4],
            total: v[5],
        }
    }

    /// Whether no limit is set.
    pub fn is_empty(&self) -> bool {
        self.values().iter().all(Option::is_none)
    }
}

/// A lease granted to one edge: at most `per_window` admissions of the token in each
/// window of `kind` with index `first..=last`; `demand` is what the edge wanted when it
/// was granted (the next split's weight).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    pub token_id: String,
    pub kind: String,
    pub edge: String,
    pub first: i64,
    pub last: i64,
    pub per_window: i64,
    pub demand: i64,
    pub granted_at: i64,
}

pub trait LimitsTx {
    /// Every edge's leases of the token and kind that end at or after window `from`,
    /// by edge then first window (locked for the grant on PostgreSQL).
    fn leases_from(
        &mut self,
        token_id: &str,
        kind: &str,
        from: i64,
    ) -> StoreResult<Vec<LeaseRecord>>;
    /// Adds a lease, or raises the one of the same edge and first window.
    fn put_lease(&mut self, lease: &LeaseRecord) -> StoreResult<()>;
    /// Forgets the token's leases of `kind` that ended before window `before`.
    fn forget_leases(&mut self, token_id: &str, kind: &str, before: i64) -> StoreResult<()>;
    /// The limits kept for `subject` of the organization, if any.
    fn get_limits(&mut self, org_id: &str, subject: &str) -> StoreResult<Option<RateLimits>>;
    /// Sets (an empty set removes) the limits of `subject`.
    fn put_limits(
        &mut self,
        org_id: &str,
        subject: &str,
        limits: &RateLimits,
        now: i64,
    ) -> StoreResult<()>;
    /// Every token subject of the organization with limits of its own, by subject.
    fn list_token_limits(&mut self, org_id: &str) -> StoreResult<Vec<(String, RateLimits)>>;
    /// The ids of at most `limit` of the organization's downloaded, unrevoked tokens used
    /// or downloaded at or after `since`, the most recent first (the tokens an org's
    /// default limits are leased for ahead of their requests).
    fn recent_tokens(&mut self, org_id: &str, since: i64, limit: i64) -> StoreResult<Vec<String>>;
}

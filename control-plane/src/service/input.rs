//! Request inputs, as the API deserializes them, and the checks that turn them into values
//! an operation can trust. Every check names the offending field.

use super::{Error, Result};
use crate::model::{KeyAlg, Role};
use crate::timefmt;
use serde::{Deserialize, Deserializer};
use std::borrow::Cow;
use tessera_core::token::{is_scope_token, Cidr};
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{IntoParams, PartialSchema, ToSchema};

/// A timestamp in JSON: RFC 3339 string, `YYYY-MM-DD`, or Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp(pub i64);

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(i64),
            S(String),
        }
        let raw = Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom("expected an RFC 3339 timestamp or Unix seconds")
        })?;
        match raw {
            Raw::N(n) if (0..=253_402_300_799).contains(&n) => Ok(Timestamp(n)),
            Raw::N(_) => Err(serde::de::Error::custom("timestamp out of range")),
            Raw::S(s) => timefmt::parse(&s)
                .map(Timestamp)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// Written by hand because the `Deserialize` above is: the same three forms.
impl PartialSchema for Timestamp {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .description(Some(
                "An RFC 3339 timestamp, a date (YYYY-MM-DD, midnight UTC), or Unix seconds",
            ))
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some("RFC 3339 (2030-01-01T00:00:00Z) or YYYY-MM-DD")),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .description(Some("Unix seconds"))
                    .minimum(Some(0_i64))
                    .maximum(Some(253_402_300_799_i64)),
            )
            .into()
    }
}

impl ToSchema for Timestamp {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Timestamp")
    }
}

pub fn check_text(field: &str, value: &str, max: usize, allow_empty: bool) -> Result<()> {
    if !allow_empty && value.trim().is_empty() {
        return Err(Error::field(field, "must not be empty"));
    }
    if value.chars().count() > max {
        return Err(Error::field(field, format!("at most {max} characters")));
    }
    if let Some((at, c)) = value.chars().enumerate().find(|(_, c)| is_control(*c)) {
        return Err(Error::field(
            field,
            format!(
                "must not contain control characters (U+{:04X} at character {})",
                c as u32,
                at + 1
            ),
        ));
    }
    Ok(())
}

/// Characters no name, description or logged field may carry (one rule for the whole
/// service): the Unicode general categories Cc (C0, DEL, C1: also CR, LF, TAB, ESC),
/// Cf (format characters: the bidirectional marks, embeddings, overrides and isolates
/// that reorder the text after them, U+061C, zero-width spaces and joiners, U+FEFF),
/// Zl and Zp (line and paragraph separators), and the Hangul fillers, which are letters
/// by category but draw nothing.
pub fn is_control(c: char) -> bool {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    matches!(
        c.general_category(),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
    ) || matches!(c, '\u{115f}' | '\u{1160}' | '\u{3164}' | '\u{ffa0}')
}

pub fn check_org_id(field: &str, id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 63
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::field(
            field,
            "1-63 characters of a-z, 0-9 and '-', not starting with '-'",
        ))
    }
}

pub fn check_username(field: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::field(
            field,
            "1-64 characters of A-Z, a-z, 0-9, '.', '_', '@', '-'",
        ))
    }
}

/// A CIDR or a bare address (a single host), parsed by core (the verifier's own parser);
/// a single host is shown bare. A block written with host bits (`10.0.0.1/8`) is refused
/// with both readings offered: core would match it as `10.0.0.0/8`, which may not be what
/// the person meant.
pub fn check_cidr(field: &str, s: &str) -> Result<String> {
    let c = s
        .parse::<Cidr>()
        .map_err(|e| Error::field(field, format!("{s:?} {e}")))?;
    // A block written with host bits (10.0.0.1/8) is refused rather than silently widened
    // or narrowed: the user meant either the block or the one address.
    let written = s
        .split('/')
        .next()
        .and_then(|a| a.parse::<std::net::IpAddr>().ok());
    if written.is_some_and(|a| a != c.address()) {
        return Err(Error::field(
            field,
            format!(
                "{s:?} has bits set past its /{} prefix: write the block as {c}, or one address as {}",
                c.prefix(),
                s.split('/').next().unwrap_or(s)
            ),
        ));
    }
    Ok(c.to_string())
}

pub fn check_ip_allow(list: &[String]) -> Result<Vec<String>> {
    if list.len() > 100 {
        return Err(Error::field("ip_allow", "at most 100 entries"));
    }
    list.iter()
        .enumerate()
        .map(|(i, s)| check_cidr(&format!("ip_allow[{i}]"), s))
        .collect()
}

/// RFC 6749 §3.3 scope-tokens (core's definition), at most 100 of at most 200 bytes;
/// duplicates are dropped.
pub fn check_scopes(list: &[String]) -> Result<Vec<String>> {
    if list.len() > 100 {
        return Err(Error::field("scopes", "at most 100 scopes"));
    }
    let mut out: Vec<String> = Vec::new();
    for (i, s) in list.iter().enumerate() {
        if s.len() > 200 || !is_scope_token(s) {
            return Err(Error::field(
                &format!("scopes[{i}]"),
                "printable ASCII without spaces, '\"' or '\\'",
            ));
        }
        if out.contains(s) {
            return Err(Error::field(
                &format!("scopes[{i}]"),
                format!("{s:?} is listed twice; give each scope once"),
            ));
        }
        out.push(s.clone());
    }
    Ok(out)
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrg {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    /// A partner organization (may manage customer organizations).
    #[serde(default)]
    pub partner: bool,
    /// The partner organization that manages this one.
    #[serde(default)]
    pub managed_by: Option<String>,
    #[serde(default)]
    pub key_alg: Option<KeyAlg>,
    #[serde(default)]
    pub max_lifetime_days: Option<i64>,
    #[serde(default)]
    pub audience: Option<String>,
}

/// A change to an organization: only the fields given change.
#[derive(Debug, Clone, Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateOrg {
    /// Its name as people read it.
    #[serde(default)]
    pub name: Option<String>,
    /// The longest token lifetime its users may choose, in days (1 to 400). Its own admins
    /// may shorten it; lengthening it is for root admins and its managing partner's admins.
    #[serde(default)]
    pub max_lifetime_days: Option<i64>,
    /// Whether a token's owner may edit, enable, disable and delete their own tokens (on by
    /// default). Off, owners still create, download, regenerate, rotate and revoke them.
    #[serde(default)]
    pub owners_manage_tokens: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateKey {
    #[serde(default)]
    pub alg: Option<KeyAlg>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEdge {
    pub name: String,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub username: String,
    #[serde(default)]
    pub display_name: Option<String>,
    pub role: Role,
    #[serde(default)]
    pub delegated: bool,
    /// Days the invitation link stays usable (1 to 30; default 7).
    #[serde(default)]
    pub invite_days: Option<i64>,
    /// The new user's mail address (theirs to change afterwards). When this server sends
    /// mail, the invitation is mailed there and never shown to whoever creates the user,
    /// so it is then required.
    #[serde(default)]
    pub email: Option<String>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub role: Option<Role>,
    #[serde(default)]
    pub delegated: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// User id or username (of the caller's org); default: the caller.
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub lifetime_days: Option<i64>,
    /// A custom expiry instead of `lifetime_days`.
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
    #[serde(default)]
    pub not_before: Option<Timestamp>,
    #[serde(default)]
    pub ip_allow: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Rate limits and quotas of the token's own (`service::limits`); unset fields take
    /// the organization's default.
    #[serde(default)]
    pub limits: Option<crate::store::limits::RateLimits>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize, Default, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    #[serde(default)]
    pub q: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    /// Only tokens of this organization (its id): a partner's customer organization, or
    /// the caller's own.
    #[serde(default)]
    pub org: Option<String>,
    #[serde(default)]
    pub expires_before: Option<String>,
    /// Only tokens expiring at or after this time (RFC 3339).
    #[serde(default)]
    pub expires_after: Option<String>,
    /// A column name, `-` first for descending; default `-created_at`.
    #[serde(default)]
    pub sort: Option<String>,
    #[serde(default)]
    pub page: Option<i64>,
    #[serde(default)]
    pub per_page: Option<i64>,
    /// The `next` of the previous page: the page after it, found by the index (its cost
    /// does not grow with the depth, unlike `page`). Same filters and sort as that page.
    #[serde(default)]
    pub after: Option<String>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeAll {
    /// Revoke every token of this user (id or username)...
    #[serde(default)]
    pub user: Option<String>,
    /// ...or of this whole organization (org admins only).
    #[serde(default)]
    pub org: Option<String>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EditToken {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub ip_allow: Option<Vec<String>>,
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
    #[serde(default)]
    pub lifetime_days: Option<i64>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<Timestamp>)]
    pub not_before: Option<Option<Timestamp>>,
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Replaces the token's own rate limits and quotas; `{}` leaves only the
    /// organization's default.
    #[serde(default)]
    pub limits: Option<crate::store::limits::RateLimits>,
}

fn double_option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<Timestamp>>, D::Error> {
    Option::<Timestamp>::deserialize(d).map(Some)
}

/// The body of `POST /v1/usage`: core's usage wire type, the one the filter and the edge
/// worker write (`tessera_core::plan`), read as it is.
pub use tessera_core::plan::{UsageBatch, UsageOutcome, UsageRecord};

#[derive(Debug, Clone, Deserialize, Default, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogParams {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub outcome: Option<String>,
    #[serde(default)]
    pub since: Option<String>,
    #[serde(default)]
    pub until: Option<String>,
    #[serde(default)]
    pub page: Option<i64>,
    #[serde(default)]
    pub per_page: Option<i64>,
}

/// Paging of a listing that has no other filter.
#[derive(Debug, Clone, Deserialize, Default, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    #[serde(default)]
    pub page: Option<i64>,
    #[serde(default)]
    pub per_page: Option<i64>,
}

#[derive(Debug, Clone, Deserialize, Default, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    #[serde(default)]
    pub org: Option<String>,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub page: Option<i64>,
    #[serde(default)]
    pub per_page: Option<i64>,
}

/// A page of a listing: `page` (from 1) and `per_page` (1..=`max`, `default` when absent),
/// checked once here for every listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub page: i64,
    pub per_page: i64,
}

impl Page {
    pub const MAX_PAGE: i64 = 1_000_000;

    pub fn parse(page: Option<i64>, per_page: Option<i64>, default: i64, max: i64) -> Result<Page> {
        let per_page = per_page.unwrap_or(default);
        if !(1..=max).contains(&per_page) {
            return Err(Error::field("per_page", format!("must be 1..={max}")));
        }
        let page = page.unwrap_or(1);
        if !(1..=Self::MAX_PAGE).contains(&page) {
            return Err(Error::field(
                "page",
                format!("must be 1..={}", Self::MAX_PAGE),
            ));
        }
        Ok(Page { page, per_page })
    }

    pub fn offset(&self) -> i64 {
        (self.page - 1) * self.per_page
    }
}

/// An optional RFC 3339 time given as a query parameter (empty means absent).
pub fn optional_time(field: &str, v: Option<&str>) -> Result<Option<i64>> {
    match v.filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => timefmt::parse(s)
            .map(Some)
            .map_err(|e| Error::field(field, e)),
    }
}

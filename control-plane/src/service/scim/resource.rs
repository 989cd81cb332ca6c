//! The SCIM wire types (RFC 7643): User, Group, ListResponse, the error of a SCIM
//! operation, and what of a user Tessera keeps beside its own record.

use super::Error;
use crate::store::StoreError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
pub const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
pub const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// A user's name (RFC 7643 4.1.1).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Name {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub formatted: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub middle_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub honorific_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub honorific_suffix: Option<String>,
}

/// One e-mail address (RFC 7643 4.1.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Email {
    pub value: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
}

/// A reference to a member or a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Member {
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
    #[serde(rename = "$ref", default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

/// A resource's metadata (RFC 7643 3.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    pub resource_type: String,
    pub created: String,
    pub last_modified: String,
    pub location: String,
    /// The ETag (weak), as in the `ETag` header; absent for groups.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
}

/// A User resource. Attributes Tessera does not keep are ignored on input; `groups` and
/// `meta` are read-only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScimUserResource {
    #[serde(default)]
    pub schemas: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// Tessera's username: 1-64 characters of A-Z, a-z, 0-9, '.', '_', '@', '-'.
    pub user_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Name>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub emails: Vec<Email>,
    /// `false`: deprovisioned (disabled, every token suspended at every edge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    /// The group of the user's role (read-only here; change it through `/Groups`).
    #[serde(default, skip_serializing)]
    #[schema(read_only)]
    pub groups: Vec<Member>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(read_only)]
    pub meta: Option<Meta>,
}

/// What the user record has no column for, kept as given.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StoredAttrs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Name>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub emails: Vec<Email>,
    /// The provider gave no displayName: Tessera's display name was derived.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub derived_display_name: bool,
    /// The provider left `active` unassigned (the account is enabled).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub active_unset: bool,
}

/// A Group resource: one per role, its members the users holding it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupResource {
    #[serde(default)]
    pub schemas: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub display_name: String,
    #[serde(default)]
    pub members: Vec<Member>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(read_only)]
    pub meta: Option<Meta>,
}

/// A page of resources (RFC 7644 3.4.2). Documented per resource type by
/// [`UserListResponse`] and [`GroupListResponse`].
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListResponse<T> {
    pub schemas: Vec<String>,
    pub total_results: usize,
    pub start_index: i64,
    pub items_per_page: usize,
    #[serde(rename = "Resources")]
    pub resources: Vec<T>,
}

impl<T> ListResponse<T> {
    pub fn new(total: usize, start: i64, resources: Vec<T>) -> Self {
        ListResponse {
            schemas: vec![LIST_SCHEMA.to_string()],
            total_results: total,
            start_index: start,
            items_per_page: resources.len(),
            resources,
        }
    }
}

macro_rules! list_doc {
    ($name:ident, $t:ty, $what:literal) => {
        #[doc = concat!("A page of ", $what, " (RFC 7644 3.4.2), as `/openapi.json` shows it.")]
        #[derive(Debug, Clone, Serialize, ToSchema)]
        #[serde(rename_all = "camelCase")]
        pub struct $name {
            pub schemas: Vec<String>,
            pub total_results: usize,
            pub start_index: i64,
            pub items_per_page: usize,
            #[serde(rename = "Resources")]
            pub resources: Vec<$t>,
        }
    };
}
list_doc!(UserListResponse, ScimUserResource, "users");
list_doc!(GroupListResponse, GroupResource, "groups");

/// The body of a SCIM error (RFC 7644 3.12), `application/scim+json`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScimErrorBody {
    pub schemas: Vec<String>,
    /// The HTTP status, as a string.
    pub status: String,
    /// `invalidFilter`, `invalidPath`, `invalidValue`, `invalidSyntax`, `mutability`,
    /// `noTarget`, `uniqueness`, `tooMany`, ... (RFC 7644 table 9).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scim_type: Option<String>,
    /// What went wrong, naming the attribute.
    pub detail: String,
}

/// Why a SCIM operation failed: its own status and `scimType`, or a service error
/// (answered with the status the rest of the API gives it).
#[derive(Debug)]
pub enum Fault {
    Scim {
        status: u16,
        scim_type: Option<&'static str>,
        detail: String,
    },
    Service(Error),
}

impl Fault {
    pub fn new(status: u16, scim_type: Option<&'static str>, detail: String) -> Self {
        Fault::Scim {
            status,
            scim_type,
            detail,
        }
    }

    pub fn not_found(detail: String) -> Self {
        Fault::new(404, None, detail)
    }

    pub fn invalid_value(detail: String) -> Self {
        Fault::new(400, Some("invalidValue"), detail)
    }

    pub fn invalid_filter(detail: String) -> Self {
        Fault::new(400, Some("invalidFilter"), detail)
    }

    pub fn invalid_path(detail: String) -> Self {
        Fault::new(400, Some("invalidPath"), detail)
    }

    pub fn uniqueness(detail: String) -> Self {
        Fault::new(409, Some("uniqueness"), detail)
    }

    /// A field check of the service (`input`), as an invalid value.
    pub fn from_invalid(e: Error) -> Self {
        match e {
            Error::Invalid { field, message } => {
                Fault::invalid_value(format!("{field}: {message}"))
            }
            other => Fault::Service(other),
        }
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        Fault::Service(Error::internal(e))
    }
}

impl From<Error> for Fault {
    fn from(e: Error) -> Self {
        match e {
            Error::Invalid { .. } => Fault::from_invalid(e),
            other => Fault::Service(other),
        }
    }
}

impl From<StoreError> for Fault {
    fn from(e: StoreError) -> Self {
        Fault::Service(Error::from(e))
    }
}

/// The core schemas' URN prefix, which a fully qualified attribute name starts with.
const CORE_PREFIX: &str = "urn:ietf:params:scim:schemas:core:2.0:";

/// An attribute name of `attributes`/`excludedAttributes`, as `(attribute, sub)`, lower
/// case, without the core schema's URN.
fn attribute_name(raw: &str) -> Option<(String, Option<String>)> {
    let t = raw.trim().to_ascii_lowercase();
    let t = match t.strip_prefix(CORE_PREFIX) {
        Some(rest) => rest.split_once(':').map_or(rest, |(_, a)| a).to_string(),
        None => t,
    };
    if t.is_empty() {
        return None;
    }
    Some(match t.split_once('.') {
        Some((a, s)) => (a.to_string(), Some(s.to_string())),
        None => (t, None),
    })
}

fn names(list: Option<&str>) -> Vec<(String, Option<String>)> {
    list.map(|l| l.split(',').filter_map(attribute_name).collect())
        .unwrap_or_default()
}

/// Applies `attributes` (only these, with those always returned: `id`, `schemas`,
/// `meta`) or else `excludedAttributes` (all but these; never `id` or `schemas`) to a
/// resource's JSON (RFC 7644 3.4.2.5, 3.9).
pub fn project(doc: &mut serde_json::Value, attributes: Option<&str>, excluded: Option<&str>) {
    let serde_json::Value::Object(m) = doc else {
        return;
    };
    let always = ["id", "schemas", "meta"];
    let wanted = names(attributes);
    if !wanted.is_empty() {
        m.retain(|k, v| {
            let k = k.to_ascii_lowercase();
            if always.contains(&k.as_str()) {
                return true;
            }
            let subs: Vec<&String> = wanted
                .iter()
                .filter(|(a, _)| *a == k)
                .filter_map(|(_, s)| s.as_ref())
                .collect();
            if !wanted.iter().any(|(a, _)| *a == k) {
                return false;
            }
            let whole = wanted.iter().any(|(a, s)| *a == k && s.is_none());
            if !whole {
                keep_subs(v, &subs);
            }
            true
        });
        return;
    }
    for (a, sub) in names(excluded) {
        if always[..2].contains(&a.as_str()) {
            continue;
        }
        let key = m.keys().find(|k| k.eq_ignore_ascii_case(&a)).cloned();
        if let Some(key) = key {
            match sub {
                None => {
                    m.remove(&key);
                }
                Some(s) => {
                    if let Some(v) = m.get_mut(&key) {
                        drop_sub(v, &s);
                    }
                }
            }
        }
    }
}

fn keep_subs(v: &mut serde_json::Value, subs: &[&String]) {
    match v {
        serde_json::Value::Object(o) => {
            o.retain(|k, _| subs.iter().any(|s| k.eq_ignore_ascii_case(s)))
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|i| keep_subs(i, subs)),
        _ => {}
    }
}

fn drop_sub(v: &mut serde_json::Value, sub: &str) {
    match v {
        serde_json::Value::Object(o) => o.retain(|k, _| !k.eq_ignore_ascii_case(sub)),
        serde_json::Value::Array(items) => items.iter_mut().for_each(|i| drop_sub(i, sub)),
        _ => {}
    }
}

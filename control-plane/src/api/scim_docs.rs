//! The SCIM discovery documents (RFC 7644 4, RFC 7643 5–7): ServiceProviderConfig,
//! ResourceTypes and Schemas, as typed values. They say exactly what `api::scim` does.

use crate::service::scim::resource::{GROUP_SCHEMA, USER_SCHEMA};
use crate::service::scim::MAX_COUNT;
use serde::Serialize;
use utoipa::ToSchema;

pub const SPC_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";
pub const RESOURCE_TYPE_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
pub const SCHEMA_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";

/// A feature switch of the ServiceProviderConfig.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Supported {
    pub supported: bool,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkConfig {
    pub supported: bool,
    pub max_operations: u32,
    pub max_payload_size: u32,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FilterConfig {
    pub supported: bool,
    pub max_results: usize,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthScheme {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub description: String,
    pub primary: bool,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DocMeta {
    pub resource_type: String,
    pub location: String,
}

/// What this SCIM service provider does (RFC 7643 5).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceProviderConfig {
    pub schemas: Vec<String>,
    pub documentation_uri: String,
    pub patch: Supported,
    pub bulk: BulkConfig,
    pub filter: FilterConfig,
    pub change_password: Supported,
    pub sort: Supported,
    pub etag: Supported,
    pub authentication_schemes: Vec<AuthScheme>,
    pub meta: DocMeta,
}

pub fn service_provider_config(base: &str) -> ServiceProviderConfig {
    ServiceProviderConfig {
        schemas: vec![SPC_SCHEMA.into()],
        documentation_uri: format!("{base}/openapi.json"),
        patch: Supported { supported: true },
        bulk: BulkConfig {
            supported: false,
            max_operations: 0,
            max_payload_size: 0,
        },
        filter: FilterConfig {
            supported: true,
            max_results: MAX_COUNT,
        },
        change_password: Supported { supported: false },
        sort: Supported { supported: false },
        etag: Supported { supported: true },
        authentication_schemes: vec![AuthScheme {
            kind: "oauthbearertoken".into(),
            name: "SCIM credential".into(),
            description:
                "Authorization: Bearer <SCIM credential>, created by an admin of the organization"
                    .into(),
            primary: true,
        }],
        meta: DocMeta {
            resource_type: "ServiceProviderConfig".into(),
            location: format!("{base}/ServiceProviderConfig"),
        },
    }
}

/// A resource type (RFC 7643 6).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceType {
    pub schemas: Vec<String>,
    pub id: String,
    pub name: String,
    pub endpoint: String,
    pub description: String,
    pub schema: String,
    pub meta: DocMeta,
}

pub fn resource_types(base: &str) -> Vec<ResourceType> {
    let one = |name: &str, endpoint: &str, schema: &str, description: &str| ResourceType {
        schemas: vec![RESOURCE_TYPE_SCHEMA.into()],
        id: name.into(),
        name: name.into(),
        endpoint: endpoint.into(),
        description: description.into(),
        schema: schema.into(),
        meta: DocMeta {
            resource_type: "ResourceType".into(),
            location: format!("{base}/ResourceTypes/{name}"),
        },
    };
    vec![
        one("User", "/Users", USER_SCHEMA, "A user of the organization"),
        one(
            "Group",
            "/Groups",
            GROUP_SCHEMA,
            "A role of the organization; its members hold it",
        ),
    ]
}

/// An attribute definition (RFC 7643 7).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Attribute {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub multi_valued: bool,
    pub description: String,
    pub required: bool,
    pub case_exact: bool,
    pub mutability: String,
    pub returned: String,
    pub uniqueness: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(no_recursion)]
    pub sub_attributes: Vec<Attribute>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reference_types: Vec<String>,
}

fn attr(name: &str, kind: &str, description: &str) -> Attribute {
    Attribute {
        name: name.into(),
        kind: kind.into(),
        multi_valued: false,
        description: description.into(),
        required: false,
        case_exact: false,
        mutability: "readWrite".into(),
        returned: "default".into(),
        uniqueness: "none".into(),
        sub_attributes: Vec::new(),
        reference_types: Vec::new(),
    }
}

impl Attribute {
    fn required(mut self) -> Self {
        self.required = true;
        self
    }
    fn multi(mut self) -> Self {
        self.multi_valued = true;
        self
    }
    fn read_only(mut self) -> Self {
        self.mutability = "readOnly".into();
        self
    }
    fn unique(mut self) -> Self {
        self.uniqueness = "server".into();
        self
    }
    fn exact(mut self) -> Self {
        self.case_exact = true;
        self
    }
    fn subs(mut self, subs: Vec<Attribute>) -> Self {
        self.sub_attributes = subs;
        self
    }
    fn refs(mut self, r: &[&str]) -> Self {
        self.reference_types = r.iter().map(|s| s.to_string()).collect();
        self
    }
}

/// A schema (RFC 7643 7).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchemaDoc {
    pub schemas: Vec<String>,
    pub id: String,
    pub name: String,
    pub description: String,
    pub attributes: Vec<Attribute>,
    pub meta: DocMeta,
}

pub fn schemas(base: &str) -> Vec<SchemaDoc> {
    let meta = |id: &str| DocMeta {
        resource_type: "Schema".into(),
        location: format!("{base}/Schemas/{id}"),
    };
    let member = |refs: &[&str]| {
        vec![
            attr("value", "string", "The member's id").exact(),
            attr("display", "string", "The member's name").read_only(),
            attr("$ref", "reference", "The member's URI")
                .refs(refs)
                .read_only(),
        ]
    };
    vec![
        SchemaDoc {
            schemas: vec![SCHEMA_SCHEMA.into()],
            id: USER_SCHEMA.into(),
            name: "User".into(),
            description: "A user of the organization".into(),
            attributes: vec![
                attr(
                    "userName",
                    "string",
                    "Tessera's username: 1-64 characters of A-Z, a-z, 0-9, '.', '_', '@', '-'",
                )
                .required()
                .unique(),
                attr("name", "complex", "The user's name").subs(vec![
                    attr("formatted", "string", "The full name"),
                    attr("familyName", "string", "The family name"),
                    attr("givenName", "string", "The given name"),
                    attr("middleName", "string", "The middle name"),
                    attr("honorificPrefix", "string", "Honorific prefix"),
                    attr("honorificSuffix", "string", "Honorific suffix"),
                ]),
                attr(
                    "displayName",
                    "string",
                    "The name shown (at most 200 characters)",
                ),
                attr(
                    "active",
                    "boolean",
                    "false: deprovisioned (disabled; every token suspended at every edge)",
                ),
                attr("emails", "complex", "E-mail addresses")
                    .multi()
                    .subs(vec![
                        attr("value", "string", "The address"),
                        attr("type", "string", "work, home, other"),
                        attr("primary", "boolean", "The primary address"),
                        attr("display", "string", "A display form"),
                    ]),
                attr(
                    "groups",
                    "complex",
                    "The group of the user's role (change it through /Groups)",
                )
                .multi()
                .read_only()
                .subs(member(&["Group"])),
            ],
            meta: meta(USER_SCHEMA),
        },
        SchemaDoc {
            schemas: vec![SCHEMA_SCHEMA.into()],
            id: GROUP_SCHEMA.into(),
            name: "Group".into(),
            description: "A role of the organization (admin, user, readonly, partner)".into(),
            attributes: vec![
                attr("displayName", "string", "The role")
                    .required()
                    .unique()
                    .read_only(),
                attr("members", "complex", "The users holding the role")
                    .multi()
                    .subs(member(&["User"])),
            ],
            meta: meta(GROUP_SCHEMA),
        },
    ]
}

//! `/openapi.json`, built from the route table the router is built from: the request,
//! query and answer types each route names there are the handler's own types, and their
//! schemas are derived from those types (`utoipa::ToSchema`).

use crate::api::{routes, schema_ref, Auth, Body, ErrorBody, Schemas};
use axum::http::Method;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, PathItem, Paths,
    Required, ResponseBuilder, ServerBuilder,
};
use utoipa::PartialSchema;

fn http_method(m: &Method) -> Option<HttpMethod> {
    Some(match *m {
        Method::GET => HttpMethod::Get,
        Method::POST => HttpMethod::Post,
        Method::PUT => HttpMethod::Put,
        Method::PATCH => HttpMethod::Patch,
        Method::DELETE => HttpMethod::Delete,
        _ => return None,
    })
}

fn content(b: &Body, schemas: &mut Schemas) -> utoipa::openapi::Content {
    ContentBuilder::new()
        .schema(Some((b.schema)(schemas)))
        .build()
}

fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad request: the message names the offending field or parameter",
        401 => "No usable credential; `reason` names why, `WWW-Authenticate` the challenge",
        403 => "Forbidden: the caller may not do this, or the token may not be used from here",
        404 => "Not found",
        409 => "Conflict with the current state (a duplicate name, a revoked token, ...)",
        412 => "Precondition failed: the resource moved past the version in If-Match",
        413 => "The body is larger than 1 MiB",
        500 => "Internal error (the detail is in the server log)",
        503 => "The database is unavailable; try again",
        _ => "Error",
    }
}

/// The document as a typed value.
pub fn openapi(base_url: &str) -> OpenApi {
    let mut schemas: Schemas = Vec::new();
    let error_schema = schema_ref::<ErrorBody>;
    let mut paths = Paths::new();
    for r in routes() {
        let Some(method) = http_method(&r.method) else {
            continue;
        };
        let mut op = OperationBuilder::new()
            .summary(Some(r.summary))
            .operation_id(Some(format!("{} {}", r.method, r.path)));
        // The command that does the same, for people reading the document.
        if let Some(crate::api::CliCommand::Command(words)) = r.cli {
            op = op.extensions(Some(
                utoipa::openapi::extensions::ExtensionsBuilder::new()
                    .add("x-tessera-cli", format!("tessera {words}"))
                    .build(),
            ));
        }
        for name in r
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        {
            op = op.parameter(
                ParameterBuilder::new()
                    .name(name)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .schema(Some(String::schema())),
            );
        }
        if let Some(query) = r.query {
            op = op.parameters(Some(query()));
        }
        if !r.request.is_empty() {
            let mut body = RequestBodyBuilder::new().required(Some(Required::True));
            for b in &r.request {
                let mut c = content(b, &mut schemas);
                // The example is the JSON body's, or the only body's (a form).
                if b.media_type == "application/json" || r.request.len() == 1 {
                    c.example = r.body.clone();
                }
                body = body.content(b.media_type, c);
            }
            op = op.request_body(Some(body.build()));
        }
        for a in &r.answers {
            let mut resp = ResponseBuilder::new().description(a.description);
            for b in &a.bodies {
                resp = resp.content(b.media_type, content(b, &mut schemas));
            }
            op = op.response(a.status.to_string(), resp.build());
        }
        // SCIM routes answer SCIM errors (RFC 7644 3.12) in their own media type.
        let (error_type, error_body): (&str, crate::api::SchemaFn) = if r.path.starts_with("/scim/")
        {
            (
                crate::api::scim::SCIM_JSON,
                schema_ref::<crate::service::scim::resource::ScimErrorBody>,
            )
        } else {
            ("application/json", error_schema)
        };
        for status in &r.errors {
            let resp = ResponseBuilder::new()
                .description(reason(*status))
                .content(
                    error_type,
                    ContentBuilder::new()
                        .schema(Some(error_body(&mut schemas)))
                        .build(),
                )
                .build();
            op = op.response(status.to_string(), resp);
        }
        let none = Vec::<String>::new;
        // A session's state-changing request also carries the session's CSRF token.
        let session = if r.method == Method::GET {
            SecurityRequirement::new("session", none())
        } else {
            SecurityRequirement::new("session", none()).add("csrf", none())
        };
        let security = match r.auth {
            Auth::Public => vec![],
            Auth::Token => vec![SecurityRequirement::new("tessera", none()), session],
            Auth::Session => vec![session],
            Auth::Edge => vec![SecurityRequirement::new("edge", none())],
            Auth::Scim => vec![SecurityRequirement::new("scim", none())],
        };
        op = op.securities(Some(security));
        let item = PathItem::new(method, op.build());
        match paths.paths.get_mut(r.path) {
            Some(existing) => existing.merge_operations(item),
            None => {
                paths.paths.insert(r.path.to_string(), item);
            }
        }
    }
    let mut components = ComponentsBuilder::new()
        .security_scheme(
            "tessera",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT (tessera-api+jwt or at+jwt)")
                    .description(Some(
                        "A Tessera API token, or an access token exchanged for one",
                    ))
                    .build(),
            ),
        )
        .security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::service::sessions::COOKIE,
                "The web page's session: set by POST /v1/session or POST /v1/links/accept \
                 (HttpOnly, SameSite=Strict); ends after 30 min idle or 12 h",
            ))),
        )
        .security_scheme(
            "csrf",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                crate::service::sessions::CSRF_HEADER,
                "The session's CSRF token (from GET /v1/session), required with the \
                 session cookie on every request that changes something",
            ))),
        )
        .security_scheme(
            "edge",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An edge credential (tse_...)"))
                    .build(),
            ),
        )
        .security_scheme(
            "scim",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A SCIM credential (tsc_...) of the organization in the path",
                    ))
                    .build(),
            ),
        );
    schemas.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, schema) in schemas {
        components = components.schema(name, schema);
    }
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Tessera control plane")
                .version(env!("CARGO_PKG_VERSION"))
                .build(),
        )
        .servers(Some([ServerBuilder::new().url(base_url).build()]))
        .paths(paths)
        .components(Some(components.build()))
        .build()
}

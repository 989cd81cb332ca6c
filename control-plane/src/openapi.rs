//! `/openapi.json`, generated from the same route table the router is built from.

use crate::api::{routes, Auth};
use serde_json::{json, Map, Value};

fn path_params(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect()
}

pub fn document(base_url: &str) -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for r in routes() {
        let mut params = path_params(r.path);
        params.extend(r.query.iter().map(
            |q| json!({"name": q, "in": "query", "required": false, "schema": {"type": "string"}}),
        ));
        let mut op = json!({
            "summary": r.summary,
            "operationId": format!("{} {}", r.method, r.path),
            "parameters": params,
            "responses": {
                "200": {"description": "OK"},
                "400": {"$ref": "#/components/responses/Error"},
                "401": {"$ref": "#/components/responses/Error"},
                "403": {"$ref": "#/components/responses/Error"},
                "404": {"$ref": "#/components/responses/Error"},
                "409": {"$ref": "#/components/responses/Error"},
            },
        });
        match r.auth {
            Auth::Public => op["security"] = json!([]),
            Auth::Token => op["security"] = json!([{"tessera": []}]),
            Auth::Edge => op["security"] = json!([{"edge": []}]),
        }
        if let Some(example) = r.body {
            op["requestBody"] = json!({
                "required": true,
                "content": {"application/json": {"schema": {"type": "object"}, "example": example}},
            });
        }
        let entry = paths.entry(r.path.to_string()).or_insert_with(|| json!({}));
        entry[r.method.as_str().to_ascii_lowercase()] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Tessera control plane", "version": env!("CARGO_PKG_VERSION")},
        "servers": [{"url": base_url}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "tessera": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT (tessera-api+jwt or at+jwt)"},
                "edge": {"type": "http", "scheme": "bearer", "description": "an edge credential (tse_...)"},
            },
            "responses": {
                "Error": {
                    "description": "An error",
                    "content": {"application/json": {"schema": {
                        "type": "object",
                        "required": ["error", "message"],
                        "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
                    }}},
                },
            },
        },
    })
}

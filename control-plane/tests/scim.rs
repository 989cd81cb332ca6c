//! SCIM 2.0 provisioning (issue 23): SCIM credentials, `/scim/v2/{org}/Users` and
//! `/Groups`, and the deprovisioning cascade to the status list the edges poll.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{decode_jwt, Resp, World};
use serde_json::{json, Value};

const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

/// A SCIM credential of acme made by its admin ada: (id, secret).
async fn credential(w: &World) -> (String, String) {
    let r = w
        .call(
            "POST",
            "/v1/orgs/acme/scim-credentials",
            Some(&w.jwt("ada")),
            Some(json!({"name": "okta"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    (
        v["id"].as_str().unwrap().to_string(),
        v["secret"].as_str().unwrap().to_string(),
    )
}

async fn scim(w: &World, method: &str, path: &str, secret: &str, body: Option<Value>) -> Resp {
    scim_with(w, method, path, secret, body, &[]).await
}

async fn scim_with(
    w: &World,
    method: &str,
    path: &str,
    secret: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> Resp {
    let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    w.raw(
        method,
        &format!("/scim/v2/acme{path}"),
        Some(secret),
        "application/scim+json",
        body,
        headers,
    )
    .await
}

/// A SCIM error answer: status, the error schema, `scimType`, the media type.
fn assert_scim_error(r: &Resp, status: u16, scim_type: Option<&str>) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.headers["content-type"], "application/scim+json");
    let v = r.json();
    assert_eq!(v["schemas"], json!([ERROR]), "{v}");
    assert_eq!(v["status"], status.to_string(), "{v}");
    assert_eq!(v["scimType"].as_str(), scim_type, "{v}");
    assert!(v["detail"].as_str().is_some_and(|d| !d.is_empty()), "{v}");
}

fn patch(ops: Value) -> Value {
    json!({"schemas": [PATCH], "Operations": ops})
}

async fn create_user(w: &World, secret: &str, user_name: &str) -> Value {
    let r = scim(
        w,
        "POST",
        "/Users",
        secret,
        Some(json!({
            "schemas": [USER],
            "userName": user_name,
            "externalId": format!("ext-{user_name}"),
            "name": {"givenName": "Barbara", "familyName": "Jensen"},
            "emails": [{"value": format!("{user_name}@example.com"), "type": "work", "primary": true}],
        })),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()
}

#[tokio::test]
async fn scim_credentials_are_listed_revocable_audited_and_kept_hashed() {
    let w = World::new().await;
    let ada = w.jwt("ada");
    let r = w
        .call(
            "POST",
            "/v1/orgs/acme/scim-credentials",
            Some(&ada),
            Some(json!({"name": "okta"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.headers["cache-control"], "no-store");
    let v = r.json();
    let (id, secret) = (
        v["id"].as_str().unwrap().to_string(),
        v["secret"].as_str().unwrap().to_string(),
    );
    assert!(secret.starts_with("tsc_"), "{v}");
    assert_eq!(v["base_url"], format!("{}/scim/v2/acme", common::BASE));

    // Listed without its secret; stored only as its SHA-256.
    let list = w
        .call("GET", "/v1/orgs/acme/scim-credentials", Some(&ada), None)
        .await
        .json();
    assert_eq!(list["credentials"][0]["id"], id.as_str(), "{list}");
    assert_eq!(list["credentials"][0]["created_by"], w.uid("ada").as_str());
    assert!(!list.to_string().contains(&secret));
    let stored = w
        .state
        .read(|tx, _| Ok(tx.list_scim_credentials("acme")?))
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_ne!(stored[0].secret_sha256, secret);
    assert_eq!(
        stored[0].secret_sha256,
        tessera_control_plane::crypto::sha256_hex(secret.as_bytes())
    );

    // It works on its org's SCIM base only.
    assert_eq!(scim(&w, "GET", "/Users", &secret, None).await.status, 200);
    let other = w
        .raw(
            "GET",
            "/scim/v2/partnerco/Users",
            Some(&secret),
            "application/scim+json",
            vec![],
            &[],
        )
        .await;
    assert_scim_error(&other, 401, None);
    assert!(other.headers["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer"));
    let none = w
        .raw(
            "GET",
            "/scim/v2/acme/Users",
            None,
            "application/scim+json",
            vec![],
            &[],
        )
        .await;
    assert_scim_error(&none, 401, None);
    // Not an API credential.
    assert_eq!(
        w.call("GET", "/v1/me", Some(&secret), None).await.status,
        401
    );

    // Only the org's own admins make one: not a user, not the managing partner's or the
    // root org's admins, not an access token.
    for who in ["ula", "rita", "root-admin"] {
        let r = w
            .call(
                "POST",
                "/v1/orgs/acme/scim-credentials",
                Some(&w.jwt(who)),
                Some(json!({"name": "x"})),
            )
            .await;
        assert_eq!(r.status, 403, "{who}: {}", r.text());
    }
    let access = w.access_token(&ada).await;
    let r = w
        .call(
            "POST",
            "/v1/orgs/acme/scim-credentials",
            Some(&access),
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());

    // Revoked: refused at once, listed as revoked, a second revoke is a conflict.
    let r = w
        .call(
            "POST",
            &format!("/v1/orgs/acme/scim-credentials/{id}/revoke"),
            Some(&ada),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["revoked_at"].is_string());
    let refused = scim(&w, "GET", "/Users", &secret, None).await;
    assert_scim_error(&refused, 401, None);
    assert!(refused.json()["detail"]
        .as_str()
        .unwrap()
        .contains("revoked"));
    let again = w
        .call(
            "POST",
            &format!("/v1/orgs/acme/scim-credentials/{id}/revoke"),
            Some(&ada),
            None,
        )
        .await;
    assert_eq!(again.status, 409);

    let log = w
        .call("GET", "/v1/audit-log?org=acme", Some(&ada), None)
        .await
        .json()
        .to_string();
    assert!(log.contains("scim_credential.create"), "{log}");
    assert!(log.contains("scim_credential.revoke"), "{log}");
}

#[tokio::test]
async fn a_scim_credential_never_outranks_its_creator() {
    let w = World::new().await;
    let (_, secret) = credential(&w).await;
    // Another admin of acme, who then demotes ada.
    let root = w.jwt("root-admin");
    let r = w
        .call(
            "PATCH",
            &format!("/v1/users/{}", w.uid("ned")),
            Some(&root),
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let ned = w.login(&w.uid("ned")).await;

    // Acting as ada: the credential cannot deprovision ada herself.
    let r = scim(
        &w,
        "PATCH",
        &format!("/Users/{}", w.uid("ada")),
        &secret,
        Some(patch(
            json!([{"op": "replace", "path": "active", "value": false}]),
        )),
    )
    .await;
    assert_scim_error(&r, 403, None);

    assert_eq!(scim(&w, "GET", "/Users", &secret, None).await.status, 200);
    let r = w
        .call(
            "PATCH",
            &format!("/v1/users/{}", w.uid("ada")),
            Some(&ned),
            Some(json!({"role": "user"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Ada is no longer an admin: her credential is refused.
    let r = scim(&w, "GET", "/Users", &secret, None).await;
    assert_scim_error(&r, 401, None);
    assert!(r.json()["detail"].as_str().unwrap().contains("no longer"));

    // Made admin again, then disabled: refused too.
    let r = w
        .call(
            "PATCH",
            &format!("/v1/users/{}", w.uid("ada")),
            Some(&ned),
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(scim(&w, "GET", "/Users", &secret, None).await.status, 200);
    let r = w
        .call(
            "POST",
            &format!("/v1/users/{}/disable", w.uid("ada")),
            Some(&ned),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_scim_error(&scim(&w, "GET", "/Users", &secret, None).await, 401, None);
}

#[tokio::test]
async fn discovery_documents_describe_what_is_served() {
    let w = World::new().await;
    let get = |p: &'static str| {
        let w = &w;
        async move {
            let r = w
                .raw(
                    "GET",
                    &format!("/scim/v2/acme{p}"),
                    None,
                    "application/scim+json",
                    vec![],
                    &[],
                )
                .await;
            assert_eq!(r.status, 200, "{p}: {}", r.text());
            assert_eq!(r.headers["content-type"], "application/scim+json");
            r.json()
        }
    };
    let spc = get("/ServiceProviderConfig").await;
    assert_eq!(spc["patch"]["supported"], true);
    assert_eq!(spc["filter"]["supported"], true);
    assert_eq!(spc["etag"]["supported"], true);
    assert_eq!(spc["bulk"]["supported"], false);
    assert_eq!(spc["sort"]["supported"], false);
    let types = get("/ResourceTypes").await;
    assert_eq!(types["totalResults"], 2);
    assert_eq!(types["Resources"][0]["endpoint"], "/Users");
    assert_eq!(
        get("/ResourceTypes/Group").await["schema"],
        "urn:ietf:params:scim:schemas:core:2.0:Group"
    );
    let schemas = get("/Schemas").await;
    assert_eq!(schemas["Resources"][0]["id"], USER);
    let user = get("/Schemas/urn:ietf:params:scim:schemas:core:2.0:User").await;
    assert!(user["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["name"] == "userName" && a["required"] == true && a["uniqueness"] == "server"));
    let missing = w
        .raw(
            "GET",
            "/scim/v2/acme/Schemas/nope",
            None,
            "application/scim+json",
            vec![],
            &[],
        )
        .await;
    assert_scim_error(&missing, 404, None);
}

#[tokio::test]
async fn users_are_provisioned_read_filtered_paged_replaced_patched_and_deleted() {
    let w = World::new().await;
    let (_, secret) = credential(&w).await;
    let created = create_user(&w, &secret, "bjensen").await;
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["userName"], "bjensen");
    // No displayName given: Tessera's display name is derived from the name, and not
    // shown to the provider as if it had sent it.
    assert_eq!(created["displayName"], Value::Null, "{created}");
    let api = w
        .call("GET", &format!("/v1/users/{id}"), Some(&w.jwt("ada")), None)
        .await
        .json();
    assert_eq!(api["display_name"], "Barbara Jensen", "{api}");
    // Sent without `active`: unassigned (the account is enabled).
    assert_eq!(created["active"], Value::Null);
    assert_eq!(created["externalId"], "ext-bjensen");
    assert_eq!(created["meta"]["resourceType"], "User");
    assert_eq!(created["meta"]["version"], "W/\"1\"");
    assert_eq!(
        created["meta"]["location"],
        format!("{}/scim/v2/acme/Users/{id}", common::BASE)
    );
    assert_eq!(
        created["groups"],
        Value::Null,
        "groups are not sent back: {created}"
    );

    // The same userName again (any case is the same person to the provider): 409.
    let dup = scim(
        &w,
        "POST",
        "/Users",
        &secret,
        Some(json!({"schemas": [USER], "userName": "bjensen"})),
    )
    .await;
    assert_scim_error(&dup, 409, Some("uniqueness"));
    let bad = scim(
        &w,
        "POST",
        "/Users",
        &secret,
        Some(json!({"schemas": [USER], "userName": "has space"})),
    )
    .await;
    assert_scim_error(&bad, 400, Some("invalidValue"));
    let bad = scim(
        &w,
        "POST",
        "/Users",
        &secret,
        Some(json!({"schemas": [USER]})),
    )
    .await;
    assert_scim_error(&bad, 400, Some("invalidSyntax"));

    // Read, with its ETag; If-None-Match of that version: 304.
    let r = scim(&w, "GET", &format!("/Users/{id}"), &secret, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["etag"], "W/\"1\"");
    let r = scim_with(
        &w,
        "GET",
        &format!("/Users/{id}"),
        &secret,
        None,
        &[("if-none-match", "W/\"1\"")],
    )
    .await;
    assert_eq!(r.status, 304);
    assert_scim_error(
        &scim(&w, "GET", "/Users/usr_nope", &secret, None).await,
        404,
        None,
    );
    // Another org's user is not found either.
    assert_scim_error(
        &scim(
            &w,
            "GET",
            &format!("/Users/{}", w.uid("pat")),
            &secret,
            None,
        )
        .await,
        404,
        None,
    );

    // Filter and pages. acme has ada, ula, ned, uma, rita and bjensen.
    let r = scim(
        &w,
        "GET",
        "/Users?filter=userName%20eq%20%22BJENSEN%22",
        &secret,
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["totalResults"], 1, "{v}");
    assert_eq!(v["Resources"][0]["id"], id.as_str());
    let v = scim(
        &w,
        "GET",
        "/Users?filter=externalId%20eq%20%22ext-bjensen%22",
        &secret,
        None,
    )
    .await
    .json();
    assert_eq!(v["totalResults"], 1, "{v}");
    let all = scim(&w, "GET", "/Users", &secret, None).await.json();
    assert_eq!(all["totalResults"], 6, "{all}");
    let mut seen = Vec::new();
    for start in [1, 3, 5] {
        let p = scim(
            &w,
            "GET",
            &format!("/Users?startIndex={start}&count=2"),
            &secret,
            None,
        )
        .await
        .json();
        assert_eq!(p["totalResults"], 6);
        assert_eq!(p["startIndex"], start);
        assert_eq!(p["itemsPerPage"], 2, "{p}");
        for u in p["Resources"].as_array().unwrap() {
            seen.push(u["id"].as_str().unwrap().to_string());
        }
    }
    let mut listed: Vec<String> = all["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(seen, listed);
    listed.dedup();
    assert_eq!(listed.len(), 6);
    let bad = scim(
        &w,
        "GET",
        "/Users?filter=userName%20gt%20%22a%22",
        &secret,
        None,
    )
    .await;
    assert_scim_error(&bad, 400, Some("invalidFilter"));

    // PUT: replace.
    let r = scim(
        &w,
        "PUT",
        &format!("/Users/{id}"),
        &secret,
        Some(json!({
            "schemas": [USER], "userName": "bjensen", "displayName": "Babs",
            "emails": [{"value": "babs@example.com", "type": "home"}],
        })),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["displayName"], "Babs");
    assert_eq!(v["emails"][0]["value"], "babs@example.com");
    assert_eq!(v["name"], Value::Null);
    assert_eq!(v["externalId"], Value::Null);
    assert_eq!(v["meta"]["version"], "W/\"2\"");
    // A stale If-Match: 412, nothing changed.
    let r = scim_with(
        &w,
        "PUT",
        &format!("/Users/{id}"),
        &secret,
        Some(json!({"schemas": [USER], "userName": "x1"})),
        &[("if-match", "W/\"1\"")],
    )
    .await;
    assert_scim_error(&r, 412, None);

    // PATCH: replace, add and remove of name, emails, displayName, userName.
    let r = scim_with(&w, "PATCH", &format!("/Users/{id}"), &secret, Some(patch(json!([
        {"op": "add", "path": "name", "value": {"givenName": "Barbara"}},
        {"op": "replace", "path": "name.familyName", "value": "Jensen"},
        {"op": "add", "path": "emails", "value": [{"value": "bj@work.example", "type": "work"}]},
        {"op": "remove", "path": "emails[type eq \"home\"]"},
        {"op": "replace", "path": "displayName", "value": "Barbara J."},
        {"op": "replace", "path": "userName", "value": "barbara.jensen"},
    ]))), &[("if-match", "W/\"2\"")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(
        v["name"],
        json!({"givenName": "Barbara", "familyName": "Jensen"})
    );
    assert_eq!(
        v["emails"],
        json!([{"value": "bj@work.example", "type": "work"}])
    );
    assert_eq!(v["displayName"], "Barbara J.");
    assert_eq!(v["userName"], "barbara.jensen");
    let r = scim(
        &w,
        "PATCH",
        &format!("/Users/{id}"),
        &secret,
        Some(patch(json!([
            {"op": "remove", "path": "displayName"},
            {"op": "replace", "path": "userName", "value": "ula"},
        ]))),
    )
    .await;
    assert_scim_error(&r, 409, Some("uniqueness"));
    let r = scim(
        &w,
        "PATCH",
        &format!("/Users/{id}"),
        &secret,
        Some(patch(
            json!([{"op": "remove", "path": "emails[type eq \"other\"]"}]),
        )),
    )
    .await;
    assert_scim_error(&r, 400, Some("noTarget"));
    // The user record moved with it: the API shows the new username.
    let api = w
        .call("GET", &format!("/v1/users/{id}"), Some(&w.jwt("ada")), None)
        .await
        .json();
    assert_eq!(api["username"], "barbara.jensen", "{api}");

    // DELETE: gone from SCIM, deleted in the API.
    let r = scim(&w, "DELETE", &format!("/Users/{id}"), &secret, None).await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_scim_error(
        &scim(&w, "GET", &format!("/Users/{id}"), &secret, None).await,
        404,
        None,
    );
    assert_eq!(
        scim(&w, "GET", "/Users", &secret, None).await.json()["totalResults"],
        5
    );
    let log = w
        .call("GET", "/v1/audit-log?org=acme", Some(&w.jwt("ada")), None)
        .await
        .json()
        .to_string();
    assert!(
        log.contains(r#""credential":"scim:"#) || log.contains("scim:scim_"),
        "{log}"
    );
    // The userName is free again: the provider may provision a new person under it.
    let again = scim(
        &w,
        "POST",
        "/Users",
        &secret,
        Some(json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "barbara.jensen",
        })),
    )
    .await;
    assert_eq!(again.status, 201, "{}", again.text());
    assert_ne!(again.json()["id"], id.as_str());
}

#[tokio::test]
async fn groups_are_the_roles_and_membership_sets_the_role() {
    let w = World::new().await;
    let (_, secret) = credential(&w).await;
    let v = scim(&w, "GET", "/Groups", &secret, None).await.json();
    let names: Vec<&str> = v["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["displayName"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["admin", "user", "readonly"],
        "acme is no partner org: {v}"
    );
    let v = scim(
        &w,
        "GET",
        "/Groups?filter=displayName%20eq%20%22readonly%22",
        &secret,
        None,
    )
    .await
    .json();
    assert_eq!(v["totalResults"], 1);
    assert_eq!(
        v["Resources"][0]["members"][0]["value"],
        w.uid("rita").as_str()
    );

    let ula = w.uid("ula");
    let r = scim(
        &w,
        "PATCH",
        "/Groups/readonly",
        &secret,
        Some(patch(json!([
            {"op": "add", "path": "members", "value": [{"value": ula}]}
        ]))),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let api = w
        .call(
            "GET",
            &format!("/v1/users/{ula}"),
            Some(&w.jwt("ada")),
            None,
        )
        .await
        .json();
    assert_eq!(api["role"], "readonly");
    let u = scim(&w, "GET", &format!("/Users/{ula}"), &secret, None)
        .await
        .json();
    assert_eq!(u["groups"], Value::Null);
    let r = scim(
        &w,
        "PATCH",
        "/Groups/readonly",
        &secret,
        Some(patch(json!([
            {"op": "remove", "path": format!("members[value eq \"{ula}\"]")}
        ]))),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let api = w
        .call(
            "GET",
            &format!("/v1/users/{ula}"),
            Some(&w.jwt("ada")),
            None,
        )
        .await
        .json();
    assert_eq!(api["role"], "user");
    let r = scim(
        &w,
        "PATCH",
        "/Groups/user",
        &secret,
        Some(patch(json!([
            {"op": "remove", "path": format!("members[value eq \"{ula}\"]")}
        ]))),
    )
    .await;
    assert_scim_error(&r, 400, Some("mutability"));
    // The creator keeps the admin role while its credential is used.
    let r = scim(
        &w,
        "PATCH",
        "/Groups/admin",
        &secret,
        Some(patch(json!([
            {"op": "remove", "path": "members"}
        ]))),
    )
    .await;
    assert_scim_error(&r, 403, None);
    assert_scim_error(
        &scim(&w, "GET", "/Groups/partner", &secret, None).await,
        404,
        None,
    );
    // No group is created or deleted: the methods are not served.
    assert_eq!(
        scim(
            &w,
            "POST",
            "/Groups",
            &secret,
            Some(json!({"displayName": "x"}))
        )
        .await
        .status,
        405
    );
    assert_eq!(
        scim(&w, "DELETE", "/Groups/user", &secret, None)
            .await
            .status,
        405
    );
}

/// The status-list index a token names.
fn status_idx(jwt: &str) -> usize {
    let (_, claims) = decode_jwt(jwt);
    claims["status"]["status_list"]["idx"].as_u64().unwrap() as usize
}

#[tokio::test]
async fn deprovisioning_suspends_every_token_and_reprovisioning_restores_none() {
    let w = World::new().await;
    let (_, secret) = credential(&w).await;
    let ula = w.uid("ula");
    let api = w.jwt("ula");
    let access = w.access_token(&api).await;
    let (cookie, _) = w.session(&ula).await;
    assert_eq!(
        w.call("GET", "/v1/me", Some(&access), None).await.status,
        200
    );

    let r = scim(
        &w,
        "PATCH",
        &format!("/Users/{ula}"),
        &secret,
        Some(patch(json!([
            {"op": "replace", "value": {"active": false}}
        ]))),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["active"], false);

    // The edges' list marks the token's index (and so the access token's, which is the
    // parent's) suspended; the API refuses both; the session is over.
    let idx = status_idx(&api);
    assert_eq!(status_idx(&access), idx);
    assert_eq!(w.status_values("acme").await[idx], 2);
    assert_eq!(w.call("GET", "/v1/me", Some(&api), None).await.status, 401);
    assert_eq!(
        w.call("GET", "/v1/me", Some(&access), None).await.status,
        401
    );
    let r = w
        .raw(
            "GET",
            "/v1/me",
            None,
            "application/json",
            vec![],
            &[("cookie", &cookie)],
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.text());
    // No new access token from it either (RFC 6749: invalid_grant).
    let r = w
        .call(
            "POST",
            "/v1/auth/accesstoken",
            None,
            Some(json!({"refreshToken": api})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"], "invalid_grant");

    // Re-provisioned: the user is active again, every token stays suspended.
    let r = scim(
        &w,
        "PUT",
        &format!("/Users/{ula}"),
        &secret,
        Some(json!({"schemas": [USER], "userName": "ula", "active": true})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["active"], true);
    assert_eq!(w.status_values("acme").await[idx], 2);
    assert_eq!(w.call("GET", "/v1/me", Some(&api), None).await.status, 401);
    let view = w
        .call(
            "GET",
            &format!("/v1/users/{ula}"),
            Some(&w.jwt("ada")),
            None,
        )
        .await
        .json();
    assert_ne!(view["state"], "disabled", "{view}");
    // An admin may enable a token again, deliberately.
    let token_id = decode_jwt(&api).1["jti"].as_str().unwrap().to_string();
    let r = w
        .call(
            "POST",
            &format!("/v1/tokens/{token_id}/enable"),
            Some(&w.jwt("ada")),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(w.status_values("acme").await[idx], 0);
}

#[tokio::test]
async fn delete_revokes_the_tokens_a_partner_holds_for_a_delegating_user() {
    let w = World::new().await;
    let (_, secret) = credential(&w).await;
    let uma = w.uid("uma");
    let pat = w.jwt("pat");
    // The partner makes a token for uma, who delegates to it.
    let r = w
        .call(
            "POST",
            "/v1/tokens",
            Some(&pat),
            Some(json!({"name": "held", "user": uma, "lifetime_days": 30})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let held = r.json()["id"].as_str().unwrap().to_string();
    let r = w
        .call(
            "POST",
            &format!("/v1/tokens/{held}/download"),
            Some(&pat),
            None,
        )
        .await;
    let held_jwt = if r.status == 200 {
        r.json()["jwt"].as_str().unwrap().to_string()
    } else {
        // Only the owner downloads: uma does, the partner holds the record.
        let r = w
            .call(
                "POST",
                &format!("/v1/tokens/{held}/download"),
                Some(&w.jwt("uma")),
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["jwt"].as_str().unwrap().to_string()
    };
    let own = w.jwt("uma");
    let access = w.access_token(&held_jwt).await;
    assert_eq!(
        w.call("GET", "/v1/me", Some(&access), None).await.status,
        200
    );

    let r = scim(&w, "DELETE", &format!("/Users/{uma}"), &secret, None).await;
    assert_eq!(r.status, 204, "{}", r.text());
    let values = w.status_values("acme").await;
    for jwt in [&held_jwt, &own] {
        assert_eq!(values[status_idx(jwt)], 1, "revoked at the edges");
        assert_eq!(w.call("GET", "/v1/me", Some(jwt), None).await.status, 401);
    }
    assert_eq!(
        w.call("GET", "/v1/me", Some(&access), None).await.status,
        401
    );
    let t = w
        .call("GET", &format!("/v1/tokens/{held}"), Some(&pat), None)
        .await;
    assert!(
        t.status == 404 || t.json()["status"] == "revoked",
        "{}",
        t.text()
    );
}

#[tokio::test]
async fn bad_bodies_are_scim_errors_naming_the_attribute() {
    let w = World::new().await;
    let (_, secret) = credential(&w).await;
    let ula = w.uid("ula");
    for (method, path, body, names) in [
        (
            "POST",
            "/Users".to_string(),
            &b"{\"userName\": "[..],
            "body",
        ),
        ("POST", "/Users".to_string(), &b"[1, 2]"[..], "body"),
        (
            "POST",
            "/Users".to_string(),
            &b"{\"userName\": 7}"[..],
            "userName",
        ),
        (
            "POST",
            "/Users".to_string(),
            &b"{\"userName\": \"a\", \"active\": \"yes\"}"[..],
            "active",
        ),
        (
            "PUT",
            format!("/Users/{ula}"),
            &b"{\"userName\": \"ula\", \"emails\": [{}]}"[..],
            "emails[0]",
        ),
        (
            "PATCH",
            format!("/Users/{ula}"),
            &b"{\"Operations\": 1}"[..],
            "Operations",
        ),
        (
            "PATCH",
            "/Groups/user".to_string(),
            &[0xff, 0xfe][..],
            "body",
        ),
    ] {
        let r = w
            .raw(
                method,
                &format!("/scim/v2/acme{path}"),
                Some(&secret),
                "application/scim+json",
                body.to_vec(),
                &[],
            )
            .await;
        assert_scim_error(&r, 400, Some("invalidSyntax"));
        let detail = r.json()["detail"].as_str().unwrap().to_string();
        assert!(detail.starts_with(names), "{method} {path}: {detail}");
    }
    // A body in another media type than JSON.
    let r = w
        .raw(
            "POST",
            "/scim/v2/acme/Users",
            Some(&secret),
            "text/plain",
            b"{}".to_vec(),
            &[],
        )
        .await;
    assert_scim_error(&r, 415, None);
}

#[tokio::test]
async fn attributes_search_and_unassigned_active() {
    let w = World::new().await;
    let (_, secret) = credential(&w).await;
    let ula = w.uid("ula");
    // attributes: only those (and id, schemas, meta); excludedAttributes: all but those.
    let v = scim(
        &w,
        "GET",
        &format!("/Users/{ula}?attributes=userName"),
        &secret,
        None,
    )
    .await
    .json();
    let mut keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["id", "meta", "schemas", "userName"], "{v}");
    let v = scim(
        &w,
        "GET",
        "/Users?excludedAttributes=meta,active&count=1",
        &secret,
        None,
    )
    .await
    .json();
    let u = &v["Resources"][0];
    assert!(
        u.get("meta").is_none() && u.get("active").is_none() && u.get("userName").is_some(),
        "{v}"
    );
    // POST /Users/.search and the root /.search (users, then the role groups).
    let r = scim(
        &w,
        "POST",
        "/Users/.search",
        &secret,
        Some(json!({"filter": "userName eq \"ula\"", "excludedAttributes": ["groups"]})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["Resources"][0]["id"], ula.as_str());
    let r = scim(
        &w,
        "POST",
        "/.search",
        &secret,
        Some(json!({"filter": "displayName eq \"admin\""})),
    )
    .await;
    assert_eq!(r.json()["totalResults"], 1, "{}", r.text());
    assert_eq!(r.json()["Resources"][0]["id"], "admin");
    // Unknown paths and methods under /scim answer SCIM errors.
    assert_scim_error(&scim(&w, "GET", "/Nope", &secret, None).await, 404, None);
    assert_scim_error(
        &scim(&w, "POST", "/Groups", &secret, Some(json!({}))).await,
        405,
        None,
    );

    // `active` removed from an enabled user: unassigned, the account stays enabled; from
    // a deprovisioned one: refused.
    let r = scim(
        &w,
        "PATCH",
        &format!("/Users/{ula}"),
        &secret,
        Some(patch(json!([{"op": "remove", "path": "active"}]))),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["active"], Value::Null);
    assert_eq!(
        w.call("GET", "/v1/me", Some(&w.jwt("ula")), None)
            .await
            .status,
        200
    );
    let r = scim(
        &w,
        "PATCH",
        &format!("/Users/{ula}"),
        &secret,
        Some(patch(
            json!([{"op": "add", "path": "active", "value": false}]),
        )),
    )
    .await;
    assert_eq!(r.json()["active"], false);
    let r = scim(
        &w,
        "PATCH",
        &format!("/Users/{ula}"),
        &secret,
        Some(patch(json!([{"op": "remove", "path": "active"}]))),
    )
    .await;
    assert_scim_error(&r, 400, Some("mutability"));
}

//! The scope catalogue (issue 22): org admins define scopes and grant them to roles and
//! users; a token carries only scopes its user is granted; a withdrawn grant narrows the
//! user's live tokens at the API (and, through the withdrawn-scopes document, at the edges).
// Test helpers outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::World;
use serde_json::{json, Value};

fn names(list: &Value) -> Vec<String> {
    list["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_new_org_has_the_builtin_scope_granted_to_every_role_and_only_its_admins_manage_it() {
    let w = World::new().await;
    let root = w.jwt("root-admin");
    let r = w
        .call(
            "POST",
            "/v1/orgs",
            Some(&root),
            Some(json!({"id": "fresh"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    // Before any fixture token (which adds the suites' scopes): only the built-in one.
    let made: Vec<String> = w
        .state
        .read(|tx, _| Ok::<_, tessera_control_plane::service::Error>(tx.list_scopes("fresh")?))
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(made, ["tessera:manage"]);
    let r = w
        .call(
            "POST",
            "/v1/orgs/fresh/users",
            Some(&root),
            Some(json!({"username": "fay", "role": "admin"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let fay = w.login(r.json()["id"].as_str().unwrap()).await;
    let list = w
        .call("GET", "/v1/orgs/fresh/scopes", Some(&fay), None)
        .await;
    assert_eq!(list.status, 200, "{}", list.text());
    let list = list.json();
    let manage = list["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "tessera:manage")
        .unwrap();
    assert_eq!(manage["builtin"], true);
    assert_eq!(
        manage["roles"],
        json!(["admin", "user", "partner", "readonly"])
    );

    // The built-in scope is never deleted; its description may change.
    let r = w
        .call(
            "DELETE",
            "/v1/orgs/fresh/scopes/tessera:manage",
            Some(&fay),
            None,
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("built in"), "{}", r.text());
    let r = w
        .call(
            "PATCH",
            "/v1/orgs/fresh/scopes/tessera:manage",
            Some(&fay),
            Some(json!({"description": "Manage"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["description"], "Manage");

    // Only that org's admins manage its catalogue: not its users, not another org's admin
    // (nor the root admin, which manages orgs, not their scopes).
    for (who, org) in [
        ("ula", "acme"),
        ("rita", "acme"),
        ("pat", "acme"),
        ("ada", "fresh"),
        ("root-admin", "fresh"),
    ] {
        for (method, path, body) in [
            ("GET", format!("/v1/orgs/{org}/scopes"), None),
            (
                "POST",
                format!("/v1/orgs/{org}/scopes"),
                Some(json!({"name": "x"})),
            ),
            (
                "POST",
                format!("/v1/orgs/{org}/scopes/tessera:manage/withdraw"),
                Some(json!({"role": "user"})),
            ),
            (
                "POST",
                format!("/v1/orgs/{org}/scopes/tessera:manage/grant"),
                Some(json!({"role": "user"})),
            ),
            ("DELETE", format!("/v1/orgs/{org}/scopes/read"), None),
        ] {
            let r = w.call(method, &path, Some(&w.jwt(who)), body).await;
            assert_eq!(r.status, 403, "{who} {method} {path}: {}", r.text());
        }
    }
}

#[tokio::test]
async fn catalogue_rules_create_update_delete_grant_withdraw() {
    let w = World::new().await;
    let ada = w.jwt("ada");
    let post = |path: &str, body: Value| {
        let path = path.to_string();
        let ada = ada.clone();
        let w = &w;
        async move { w.call("POST", &path, Some(&ada), Some(body)).await }
    };
    let r = post(
        "/v1/orgs/acme/scopes",
        json!({"name": "orders:read", "description": "Read orders"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["roles"], json!([]));
    let r = post("/v1/orgs/acme/scopes", json!({"name": "orders:read"})).await;
    assert_eq!(r.status, 409, "{}", r.text());
    for bad in ["", "has space", "quote\"", "back\\slash", &"x".repeat(201)] {
        let r = post("/v1/orgs/acme/scopes", json!({"name": bad})).await;
        assert_eq!(r.status, 400, "{bad:?}: {}", r.text());
        assert!(
            r.json()["message"].as_str().unwrap().starts_with("name:"),
            "{}",
            r.text()
        );
    }
    let r = post(
        "/v1/orgs/acme/scopes/orders:read/grant",
        json!({"role": "user", "user": "ula"}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = post(
        "/v1/orgs/acme/scopes/orders:read/grant",
        json!({"user": "nobody"}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = post("/v1/orgs/acme/scopes/nope/grant", json!({"role": "user"})).await;
    assert_eq!(r.status, 404, "{}", r.text());
    let r = post(
        "/v1/orgs/acme/scopes/orders:read/grant",
        json!({"user": "ula"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["users"][0]["username"], "ula");
    // Granting twice changes nothing; withdrawing what is not granted is a 409.
    let r = post(
        "/v1/orgs/acme/scopes/orders:read/grant",
        json!({"user": w.uid("ula")}),
    )
    .await;
    assert_eq!(r.json()["users"].as_array().unwrap().len(), 1);
    let r = post(
        "/v1/orgs/acme/scopes/orders:read/withdraw",
        json!({"role": "admin"}),
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.text());

    // What each user may put on a token.
    let mine = w
        .call("GET", "/v1/me/scopes", Some(&w.jwt("ula")), None)
        .await;
    assert_eq!(mine.status, 200, "{}", mine.text());
    assert!(names(&mine.json()).contains(&"orders:read".to_string()));
    let neds = w
        .call("GET", "/v1/users/ned/scopes", Some(&ada), None)
        .await;
    assert!(!names(&neds.json()).contains(&"orders:read".to_string()));
    let r = w
        .call("GET", "/v1/users/ned/scopes", Some(&w.jwt("ula")), None)
        .await;
    assert_eq!(r.status, 403, "{}", r.text());

    let r = w
        .call(
            "DELETE",
            "/v1/orgs/acme/scopes/orders:read",
            Some(&ada),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let list = w
        .call("GET", "/v1/orgs/acme/scopes", Some(&ada), None)
        .await
        .json();
    assert!(!names(&list).contains(&"orders:read".to_string()));

    // Every change is in the audit log.
    let log = w
        .call(
            "GET",
            "/v1/audit-log?org=acme&per_page=100",
            Some(&ada),
            None,
        )
        .await
        .json();
    let actions: Vec<&str> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["target"] == "orders:read")
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for a in ["scope.create", "scope.grant", "scope.delete"] {
        assert!(actions.contains(&a), "{a} in {actions:?}");
    }
}

#[tokio::test]
async fn a_token_carries_only_granted_scopes() {
    let w = World::new().await;
    let ada = w.jwt("ada");
    let ula = w.jwt("ula");
    let create = |jwt: String, body: Value| {
        let w = &w;
        async move { w.call("POST", "/v1/tokens", Some(&jwt), Some(body)).await }
    };
    // Not in the catalogue: 400 naming the scope and what is granted.
    let r = create(
        ula.clone(),
        json!({"name": "a", "scopes": ["read", "superuser"]}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .starts_with("scopes[1]:"),
        "{}",
        r.text()
    );
    assert!(
        r.text().contains("superuser") && r.text().contains("ula is granted"),
        "{}",
        r.text()
    );
    // In the catalogue, not granted to ula: 403 scope_not_granted, for ula and for her admin.
    let r = w
        .call(
            "POST",
            "/v1/orgs/acme/scopes",
            Some(&ada),
            Some(json!({"name": "billing"})),
        )
        .await;
    assert_eq!(r.status, 201);
    for (jwt, body) in [
        (ula.clone(), json!({"name": "b", "scopes": ["billing"]})),
        (
            ada.clone(),
            json!({"name": "b", "user": "ula", "scopes": ["billing"]}),
        ),
    ] {
        let r = create(jwt, body).await;
        assert_eq!(r.status, 403, "{}", r.text());
        assert_eq!(r.json()["reason"], "scope_not_granted", "{}", r.text());
        assert!(
            r.text().contains("\\\"billing\\\"") || r.text().contains("billing"),
            "{}",
            r.text()
        );
    }
    let r = w
        .call(
            "POST",
            "/v1/orgs/acme/scopes/billing/grant",
            Some(&ada),
            Some(json!({"user": "ula"})),
        )
        .await;
    assert_eq!(r.status, 200);
    // Through a session: ula's token does not carry billing (the creator's bound).
    let session = w.credential(common::Cred::Session, &w.uid("ula")).await;
    let r = w
        .call_as(
            "POST",
            "/v1/tokens",
            &session,
            Some(json!({"name": "b", "scopes": ["billing", "read"]})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    // An edit (by the org admin: users do not edit) adding a scope not granted to the
    // token's user is refused the same way; ned is not granted billing.
    let session = w.credential(common::Cred::Session, &w.uid("ada")).await;
    let r = w
        .call_as(
            "PATCH",
            &format!("/v1/tokens/{id}"),
            &session,
            Some(json!({"scopes": ["billing", "read", "write", "nope"]})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = create(w.jwt("ned"), json!({"name": "n", "scopes": ["billing"]})).await;
    assert_eq!(r.status, 403, "{}", r.text());
    // Withdrawn from ula: an edit keeping it is refused; one dropping it passes.
    let r = w
        .call(
            "POST",
            "/v1/orgs/acme/scopes/billing/withdraw",
            Some(&ada),
            Some(json!({"user": "ula"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = w
        .call_as(
            "PATCH",
            &format!("/v1/tokens/{id}"),
            &session,
            Some(json!({"scopes": ["billing"]})),
        )
        .await;
    assert_eq!(r.json()["reason"], "scope_not_granted", "{}", r.text());
    let r = w
        .call(
            "PATCH",
            &format!("/v1/tokens/{id}"),
            Some(&ada),
            Some(json!({"scopes": ["read"]})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn withdrawing_the_management_scope_narrows_live_tokens_at_the_api_and_exchange() {
    let w = World::new().await;
    let ada = w.jwt("ada");
    let ula = w.jwt("ula");
    let r = w.call("GET", "/v1/tokens", Some(&ula), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = w
        .call(
            "POST",
            "/v1/orgs/acme/scopes/tessera:manage/withdraw",
            Some(&ada),
            Some(json!({"role": "user"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // ula's token still carries tessera:manage in its JWT, but she is no longer granted it.
    let r = w.call("GET", "/v1/tokens", Some(&ula), None).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["reason"], "management_scope_required");
    // Her exchanged access tokens no longer carry it either; the kept scopes stay.
    let at = w.access_token(&ula).await;
    let (_, claims) = common::decode_jwt(&at);
    let scopes: Vec<&str> = claims["scope"].as_str().unwrap().split(' ').collect();
    assert!(!scopes.contains(&"tessera:manage"), "{scopes:?}");
    assert!(scopes.contains(&"read"), "{scopes:?}");
    // A user granted it by name keeps it; the admin role keeps it.
    let r = w
        .call(
            "POST",
            "/v1/orgs/acme/scopes/tessera:manage/grant",
            Some(&ada),
            Some(json!({"user": "ula"})),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = w.call("GET", "/v1/tokens", Some(&ula), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = w.call("GET", "/v1/tokens", Some(&w.jwt("ned")), None).await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = w.call("GET", "/v1/tokens", Some(&ada), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn the_status_list_carries_what_was_withdrawn_from_each_live_token() {
    let w = World::new().await;
    let ada = w.jwt("ada");
    let list = || async {
        let r = w.call("GET", "/v1/orgs/acme/status-list", None, None).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let version = r.headers["tessera-status-version"]
            .to_str()
            .unwrap()
            .to_string();
        (version, r.text())
    };
    let (v0, doc) = list().await;
    assert!(
        tessera_core::synced::withdrawn_document(&doc)
            .unwrap()
            .is_empty(),
        "{doc}"
    );
    // ula's and ned's login tokens carry write; withdraw it from the user role.
    let idx = |name: &str| {
        let (_, claims) = common::decode_jwt(&w.jwt(name));
        claims["status"]["status_list"]["idx"].as_u64().unwrap()
    };
    let r = w
        .call(
            "POST",
            "/v1/orgs/acme/scopes/write/withdraw",
            Some(&ada),
            Some(json!({"role": "user"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let (v1, doc) = list().await;
    assert_ne!(v0, v1, "the version moves, so the edges fetch the list");
    // The signed form carries the same document, under the org's signature.
    let r = w
        .call("GET", "/v1/orgs/acme/status-list?format=jwt", None, None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let (_, claims) = common::decode_jwt(&r.text());
    let plain: serde_json::Value = serde_json::from_str(&doc).unwrap();
    assert!(plain["withdrawn"].is_object(), "{doc}");
    assert_eq!(claims["status_list"]["withdrawn"], plain["withdrawn"]);
    assert_eq!(claims["status_list"]["lst"], plain["lst"]);
    let withdrawn = tessera_core::synced::withdrawn_document(&doc).unwrap();
    assert_eq!(withdrawn.scopes().collect::<Vec<_>>(), ["write"]);
    for (name, lost) in [
        ("ula", true),
        ("ned", true),
        ("ada", false),
        ("rita", false),
    ] {
        assert_eq!(withdrawn.is_withdrawn(idx(name), "write"), lost, "{name}");
        assert!(!withdrawn.is_withdrawn(idx(name), "read"), "{name}");
    }
    // A role change moves the grants with it: ula promoted to admin gets write back, ada
    // then demoted to user loses it; ned granted it by name gets it back.
    let r = w
        .call(
            "PATCH",
            &format!("/v1/users/{}", w.uid("ula")),
            Some(&ada),
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = w
        .call(
            "PATCH",
            &format!("/v1/users/{}", w.uid("ada")),
            Some(&ada),
            Some(json!({"role": "user"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = w
        .call(
            "POST",
            "/v1/orgs/acme/scopes/write/grant",
            Some(&w.jwt("ula")),
            Some(json!({"user": "ned"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let (_, doc) = list().await;
    let withdrawn = tessera_core::synced::withdrawn_document(&doc).unwrap();
    for (name, lost) in [
        ("ula", false),
        ("ned", false),
        ("ada", true),
        ("uma", true),
        ("rita", false),
    ] {
        assert_eq!(withdrawn.is_withdrawn(idx(name), "write"), lost, "{name}");
    }
}

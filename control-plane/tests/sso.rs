//! Single sign-on (issue 23): the organization's OpenID Connect connection — only its own
//! admins set it up, the client secret is sealed and never shown, a domain belongs to one
//! organization, every change is in the audit log — and the public routes' cheap checks
//! (no connection for a domain, an unknown state) answered before any network call. The
//! flow against a real provider is `host-tests/tests/sso.rs`.
// Test helpers outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{World, BASE};
use serde_json::{json, Value};

fn connection(domain: &str) -> Value {
    json!({
        "issuer": "https://login.example.com/",
        "client_id": "tessera",
        "client_secret": "s3cret-from-the-provider",
        "domains": [domain, "Example.ORG"],
        "default_role": "readonly",
        "group_roles": [{"group": "tessera-admins", "role": "admin"}],
    })
}

/// An admin `pia` of the partner org, made by the root admin: (user id, JWT).
async fn partner_admin(w: &World) -> (String, String) {
    let r = w
        .call(
            "POST",
            "/v1/orgs/partnerco/users",
            Some(&w.jwt("root-admin")),
            Some(json!({"username": "pia", "role": "admin"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    let jwt = w.login(&id).await;
    (id, jwt)
}

/// `POST /v1/sso/domains/{domain}/{verb}` for `org`'s claim, as `who`.
async fn decide(w: &World, who: &str, verb: &str, domain: &str, org: &str) -> common::Resp {
    w.call(
        "POST",
        &format!("/v1/sso/domains/{domain}/{verb}"),
        Some(who),
        Some(json!({ "org": org })),
    )
    .await
}

#[tokio::test]
async fn only_the_orgs_own_admins_set_up_single_sign_on_and_every_change_is_audited() {
    let w = World::new().await;
    let ada = w.jwt("ada");
    // Not a user, not the managing root admin.
    for who in ["ula", "root-admin"] {
        let r = w
            .call(
                "PUT",
                "/v1/orgs/acme/sso",
                Some(&w.jwt(who)),
                Some(connection("example.com")),
            )
            .await;
        assert_eq!(r.status, 403, "{who}: {}", r.text());
    }
    let r = w.call("GET", "/v1/orgs/acme/sso", Some(&ada), None).await;
    assert_eq!(r.status, 404, "{}", r.text());

    let r = w
        .call(
            "PUT",
            "/v1/orgs/acme/sso",
            Some(&ada),
            Some(connection("example.com")),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["issuer"], "https://login.example.com");
    assert_eq!(v["domains"], json!(["example.com", "example.org"]));
    // Claimed, not yet approved by the operator.
    assert_eq!(v["pending_domains"], json!(["example.com", "example.org"]));
    assert_eq!(v["client_secret_set"], true);
    assert_eq!(v["redirect_uri"], format!("{BASE}/v1/sso/callback"));
    assert!(
        !r.text().contains("s3cret"),
        "the secret is never shown: {}",
        r.text()
    );

    // A change without the secret keeps it (sealed, opened only for a sign-in).
    let mut change = connection("example.com");
    change.as_object_mut().unwrap().remove("client_secret");
    change["require_sso"] = json!(true);
    let r = w
        .call("PUT", "/v1/orgs/acme/sso", Some(&ada), Some(change))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["require_sso"], true);
    let secret = w
        .state
        .read(|tx, ctx| {
            let c = tx.get_sso_connection("acme")?.unwrap();
            assert!(!String::from_utf8_lossy(&c.secret_enc).contains("s3cret"));
            Ok(tessera_control_plane::service::sso::route_org(tx, ctx, "acme")?.client_secret)
        })
        .await
        .unwrap();
    assert_eq!(secret, "s3cret-from-the-provider");

    // Bad fields are named.
    for (field, body) in [
        (
            "issuer",
            json!({"issuer": "http://login.example.com", "client_id": "x", "domains": ["a.example"]}),
        ),
        (
            "domains[0]",
            json!({"issuer": "https://l.example", "client_id": "x", "domains": ["not a domain"]}),
        ),
        (
            "default_role",
            json!({"issuer": "https://l.example", "client_id": "x", "domains": ["a.example"], "default_role": "partner"}),
        ),
    ] {
        let r = w
            .call("PUT", "/v1/orgs/acme/sso", Some(&ada), Some(body))
            .await;
        assert_eq!(r.status, 400, "{field}: {}", r.text());
        assert!(
            r.json()["message"].as_str().unwrap().starts_with(field),
            "{}",
            r.text()
        );
    }

    // A domain belongs to one organization: once the operator approved acme's claim,
    // another organization cannot claim it.
    let root = w.jwt("root-admin");
    let r = decide(&w, &root, "approve", "example.com", "acme").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let (_, pia) = partner_admin(&w).await;
    let r = w
        .call(
            "PUT",
            "/v1/orgs/partnerco/sso",
            Some(&pia),
            Some(connection("example.com")),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("example.com already signs in through another organization"),
        "{}",
        r.text()
    );

    let r = w
        .call("DELETE", "/v1/orgs/acme/sso", Some(&ada), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = w.call("GET", "/v1/orgs/acme/sso", Some(&ada), None).await;
    assert_eq!(r.status, 404, "{}", r.text());
    // Free again for another organization.
    let r = w
        .call(
            "PUT",
            "/v1/orgs/partnerco/sso",
            Some(&pia),
            Some(connection("example.com")),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());

    let r = w
        .call(
            "GET",
            "/v1/audit-log?org=acme&per_page=200",
            Some(&ada),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let log = r.json();
    let actions: Vec<&str> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .filter(|a| a.starts_with("sso."))
        .collect();
    assert_eq!(actions.len(), 4, "{actions:?}");
    for a in [
        "sso.create",
        "sso.update",
        "sso.domain_approve",
        "sso.delete",
    ] {
        assert!(actions.contains(&a), "{a} missing: {actions:?}");
    }
    assert!(!r.text().contains("s3cret"), "the secret is never logged");
}

#[tokio::test]
async fn the_public_routes_refuse_cheaply_before_any_network_call() {
    let w = World::new().await;
    // No connection for the domain: said in words, nothing fetched.
    let r = w
        .call(
            "GET",
            "/v1/sso/start?email=ana%40nowhere.example",
            None,
            None,
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["reason"], "sso_not_configured");
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("nowhere.example"));
    let r = w
        .call("GET", "/v1/sso/start?email=not-an-email", None, None)
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.json()["message"].as_str().unwrap().starts_with("email"));

    // A state no sign-in was started with, and the provider's own refusal: to the page,
    // with the reason.
    let r = w
        .call("GET", "/v1/sso/callback?code=abc&state=forged", None, None)
        .await;
    assert_eq!(r.status, 303);
    assert_eq!(r.headers["location"], "/#/sso-failed/sso_state_invalid");
    let r = w
        .call(
            "GET",
            "/v1/sso/callback?error=access_denied&state=x",
            None,
            None,
        )
        .await;
    assert_eq!(r.headers["location"], "/#/sso-failed/sso_provider_refused");

    // A stored sign-in used from another browser (no binding cookie) is refused, and
    // consumed: the same state is unknown afterwards.
    let ada = w.jwt("ada");
    let r = w
        .call(
            "PUT",
            "/v1/orgs/acme/sso",
            Some(&ada),
            Some(connection("example.com")),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    w.state
        .write(|tx, ctx| {
            tessera_control_plane::service::sso::record_login(
                tx,
                ctx,
                "acme",
                "the-state",
                "n",
                "verifier",
                "browser-secret",
            )
        })
        .await
        .unwrap();
    let r = w
        .call(
            "GET",
            "/v1/sso/callback?code=abc&state=the-state",
            None,
            None,
        )
        .await;
    assert_eq!(r.headers["location"], "/#/sso-failed/sso_browser_mismatch");
    let r = w
        .raw(
            "GET",
            "/v1/sso/callback?code=abc&state=the-state",
            None,
            "application/json",
            Vec::new(),
            &[("cookie", "tessera_sso=browser-secret")],
        )
        .await;
    assert_eq!(r.headers["location"], "/#/sso-failed/sso_state_invalid");
    // An expired one.
    w.state
        .write(|tx, ctx| {
            tessera_control_plane::service::sso::record_login(
                tx,
                ctx,
                "acme",
                "late-state",
                "n",
                "verifier",
                "browser-secret",
            )
        })
        .await
        .unwrap();
    w.advance(tessera_control_plane::service::sso::LOGIN_TTL_SECS + 1);
    let r = w
        .raw(
            "GET",
            "/v1/sso/callback?code=abc&state=late-state",
            None,
            "application/json",
            Vec::new(),
            &[("cookie", "tessera_sso=browser-secret")],
        )
        .await;
    assert_eq!(r.headers["location"], "/#/sso-failed/sso_login_expired");
}

/// The email domain an org admin types is only a claim: it sends nobody to that org's
/// identity provider until the operator (a root admin) approves it, so an admin cannot
/// squat another company's domain (phish its people, or block it from routing them).
#[tokio::test]
async fn a_domain_routes_sign_ins_only_once_the_operator_approved_the_claim() {
    use tessera_control_plane::service::sso;
    let w = World::new().await;
    let ada = w.jwt("ada");
    let root = w.jwt("root-admin");
    let routed = |email: &'static str| {
        let state = w.state.clone();
        async move {
            state
                .read(move |tx, ctx| Ok(sso::route_email(tx, ctx, email).map(|r| r.org_id)))
                .await
                .unwrap()
        }
    };
    // A squatter (a customer org's admin) claims a domain first; so does its real owner.
    let r = w
        .call(
            "PUT",
            "/v1/orgs/acme/sso",
            Some(&ada),
            Some(connection("victim.example")),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let (pia_id, pia) = partner_admin(&w).await;
    let r = w
        .call(
            "PUT",
            "/v1/orgs/partnerco/sso",
            Some(&pia),
            Some(json!({
                "issuer": "https://idp.victim.example",
                "client_id": "tessera",
                "client_secret": "other-secret",
                "domains": ["victim.example"],
                "require_sso": true,
            })),
        )
        .await;
    assert_eq!(r.status, 200, "a pending claim blocks nobody: {}", r.text());
    assert_eq!(r.json()["pending_domains"], json!(["victim.example"]));

    // Nobody is routed by a pending claim, and the public answer does not tell that
    // someone claimed it.
    let e = routed("ana@victim.example").await.unwrap_err();
    assert!(
        e.to_string()
            .contains("no organization signs in victim.example"),
        "{e}"
    );
    let r = w
        .call(
            "GET",
            "/v1/sso/start?email=ana%40victim.example",
            None,
            None,
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["reason"], "sso_not_configured");

    // "Require SSO" does not lock anyone out while no domain is approved.
    let pia_user = pia_id.clone();
    let refused = w
        .state
        .read(move |tx, _| {
            let u = tx.get_user(&pia_user)?.unwrap();
            let mut plain = u.clone();
            plain.role = tessera_control_plane::model::Role::User;
            sso::password_refused(tx, &plain)
        })
        .await
        .unwrap();
    assert_eq!(refused, None);

    // Only the operator sees and decides claims.
    for who in [&ada, &pia] {
        let r = w.call("GET", "/v1/sso/domains", Some(who), None).await;
        assert_eq!(r.status, 403, "{}", r.text());
        let r = decide(&w, who, "approve", "victim.example", "acme").await;
        assert_eq!(r.status, 403, "{}", r.text());
    }
    let r = w
        .call("GET", "/v1/sso/domains?pending=true", Some(&root), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let claims: Vec<(String, String, String)> = r.json()["domains"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["domain"].as_str().unwrap().to_string(),
                c["org"].as_str().unwrap().to_string(),
                c["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        claims.contains(&("victim.example".into(), "acme".into(), "pending".into()))
            && claims.contains(&(
                "victim.example".into(),
                "partnerco".into(),
                "pending".into()
            )),
        "{claims:?}"
    );
    assert!(r.json()["domains"][0]["org_name"].is_string());

    // A claim that does not exist, and a bad domain, are named.
    let r = decide(&w, &root, "approve", "unclaimed.example", "acme").await;
    assert_eq!(r.status, 404, "{}", r.text());
    let r = decide(&w, &root, "approve", "not_a_domain", "acme").await;
    assert_eq!(r.status, 400, "{}", r.text());

    // The operator approves the real owner's claim: its people are routed, and its
    // "require SSO" takes effect; the other claim cannot be approved too.
    let r = decide(&w, &root, "approve", "victim.example", "partnerco").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["state"], "approved");
    assert_eq!(r.json()["approved_by"], w.uid("root-admin"));
    assert_eq!(routed("ana@victim.example").await.unwrap(), "partnerco");
    let pia_user = pia_id.clone();
    let refused = w
        .state
        .read(move |tx, _| {
            let mut u = tx.get_user(&pia_user)?.unwrap();
            u.role = tessera_control_plane::model::Role::User;
            sso::password_refused(tx, &u)
        })
        .await
        .unwrap();
    assert!(refused.unwrap().contains("victim.example"));
    let r = decide(&w, &root, "approve", "victim.example", "acme").await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.json()["message"].as_str().unwrap().contains("withdraw"));

    // Withdrawn: nobody is routed any more, and the claim is pending again.
    let r = decide(&w, &root, "withdraw", "victim.example", "partnerco").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["state"], "pending");
    assert!(routed("ana@victim.example").await.is_err());

    // Both decisions are in the claiming org's audit log and in the operator's.
    for (log, who) in [("partnerco", &pia), ("root", &root)] {
        let r = w
            .call(
                "GET",
                &format!("/v1/audit-log?org={log}&per_page=200"),
                Some(who),
                None,
            )
            .await;
        let text = r.text();
        assert!(
            text.contains("sso.domain_approve") && text.contains("sso.domain_withdraw"),
            "{log}: {text}"
        );
    }

    // The operator's own organization needs no approval.
    let r = w
        .call(
            "PUT",
            "/v1/orgs/root/sso",
            Some(&root),
            Some(connection("operator.example")),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["pending_domains"], json!([]));
    assert_eq!(routed("ops@operator.example").await.unwrap(), "root");
}

/// Upgrading a database that has a connection with domains (schema 12, when domains were
/// first come): migration 13 keeps those domains approved, so the upgrade locks nobody
/// out, and they keep routing.
#[test]
fn the_upgrade_keeps_existing_domains_approved_and_routing() {
    use tessera_control_plane::store::migrations::MIGRATIONS;
    use tessera_control_plane::store::run;
    use tessera_control_plane::store::sqlite::SqliteStore;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v12.db");
    {
        let mut c = rusqlite::Connection::open(&path).unwrap();
        let tx = c.transaction().unwrap();
        for m in &MIGRATIONS[..12] {
            tx.execute_batch(m.sqlite).unwrap();
        }
        tx.execute_batch(
            "INSERT INTO orgs (id, name, partner_org_id, is_partner, is_root, max_lifetime_days, \
                 audience, key_alg, status_version, next_status_idx, created_at) \
             VALUES ('acme', 'Acme', NULL, 0, 0, 365, 'tessera', 'EdDSA', 0, 0, 1000); \
             INSERT INTO sso_connections (org_id, issuer, client_id, secret_enc, domains, \
                 require_sso, default_role, group_roles, created_at, updated_at) \
             VALUES ('acme', 'https://login.acme.example', 'tessera', x'00', \
                 'acme.example acme.example.org', 1, 'user', '[]', 1000, 1000); \
             INSERT INTO sso_domains (domain, org_id) VALUES ('acme.example', 'acme'); \
             INSERT INTO sso_domains (domain, org_id) VALUES ('acme.example.org', 'acme'); \
             PRAGMA user_version = 12;",
        )
        .unwrap();
        tx.commit().unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len() as i64);
    let (owner, claims) = run::<_, tessera_control_plane::store::StoreError>(&store, false, |tx| {
        Ok((
            tx.sso_domain_owner("acme.example.org")?,
            tx.sso_domain_claims(Some("acme"), false)?,
        ))
    })
    .unwrap();
    assert_eq!(owner.as_deref(), Some("acme"));
    assert_eq!(claims.len(), 2, "{claims:?}");
    for c in &claims {
        assert_eq!(c.approved_at, Some(1000), "{c:?}");
        assert_eq!(c.approved_by, None, "{c:?}");
    }
}

/// With `sync_roles`, the role follows the identity provider's groups at every sign-in
/// (audited, the grants going with it); without it, only the first sign-in reads them. The
/// last enabled admin is never demoted by a sign-in.
#[tokio::test]
async fn roles_follow_the_groups_at_every_sign_in_when_the_connection_says_so() {
    use tessera_control_plane::service::sso::{self, Verified};
    let w = World::new().await;
    let root = w.jwt("root-admin");
    let mut conn = connection("operator.example");
    conn["sync_roles"] = json!(true);
    let r = w
        .call("PUT", "/v1/orgs/root/sso", Some(&root), Some(conn.clone()))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["sync_roles"], true);
    let sign_in = |subject: &'static str, groups: &[&str]| {
        let who = Verified {
            issuer: "https://login.example.com".into(),
            subject: subject.into(),
            email: Some(format!("{subject}@operator.example")),
            email_verified: Some(true),
            name: None,
            groups: groups.iter().map(|g| g.to_string()).collect(),
        };
        let state = w.state.clone();
        async move {
            state
                .write(move |tx, ctx| {
                    let started = sso::complete(tx, ctx, "root", &who, None)?;
                    Ok(started.map(|s| s.actor.user.role.as_str().to_string()))
                })
                .await
                .unwrap()
                .expect("signed in")
        }
    };
    // First sign-in in the admins' group: admin. Out of it later: the default role.
    assert_eq!(sign_in("ops", &["tessera-admins"]).await, "admin");
    assert_eq!(sign_in("ops", &["staff"]).await, "readonly");
    assert_eq!(sign_in("ops", &["tessera-admins"]).await, "admin");
    let r = w
        .call(
            "GET",
            "/v1/audit-log?org=root&per_page=200",
            Some(&root),
            None,
        )
        .await;
    let synced = r.json()["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "user.update" && e["detail"]["via"] == "sso")
        .count();
    assert_eq!(synced, 2, "{}", r.text());

    // Without it the role stays what Tessera has.
    conn["sync_roles"] = json!(false);
    conn.as_object_mut().unwrap().remove("client_secret");
    let r = w
        .call("PUT", "/v1/orgs/root/sso", Some(&root), Some(conn.clone()))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(sign_in("ops", &["staff"]).await, "admin");

    // The last enabled admin stays one: root-admin leaves, ops is then the only admin.
    conn["sync_roles"] = json!(true);
    let r = w
        .call("PUT", "/v1/orgs/root/sso", Some(&root), Some(conn))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let root_admin = w.uid("root-admin");
    w.state
        .write(move |tx, ctx| {
            let mut a = tessera_control_plane::service::accounts::account_of(tx, &root_admin)?;
            a.disabled_at = Some(ctx.now);
            tx.put_account(&a)?;
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(sign_in("ops", &["staff"]).await, "admin");
}

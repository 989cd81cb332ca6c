//! Per-token rate limits and quotas (issue 25), the policy: an org's defaults and
//! ceiling, a token's own limits set with the token, what the edges enforce, the creator
//! bound, the 400s naming the field, and the audit log.
// Test helpers outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::World;
use serde_json::{json, Value};
use std::collections::BTreeMap;

async fn audit_actions(w: &World, admin: &str, target: &str) -> Vec<(String, Value)> {
    let log = w
        .call(
            "GET",
            "/v1/audit-log?org=acme&per_page=100",
            Some(admin),
            None,
        )
        .await;
    assert_eq!(log.status, 200, "{}", log.text());
    log.json()["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["target"] == target)
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_string(),
                e["detail"].clone(),
            )
        })
        .collect()
}

/// The field a 400 names: its message is `<field>: <what is wrong>`.
fn error_field(body: &Value) -> String {
    let m = body["message"].as_str().unwrap_or_default();
    m.split_once(": ").map_or("", |(f, _)| f).to_string()
}

#[tokio::test]
async fn org_defaults_and_ceiling_bound_every_token_and_changes_are_audited() {
    let w = World::new().await;
    let ada = w.jwt("ada");
    let ula = w.jwt("ula");
    let path = "/v1/orgs/acme/rate-limits";

    // Nothing is limited at first.
    let r = w.call("GET", path, Some(&ada), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"org": "acme", "default": {}, "ceiling": {}})
    );

    // Only the org's admins set them.
    let r = w
        .call(
            "PUT",
            path,
            Some(&ula),
            Some(json!({"ceiling": {"per_second": 1}})),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());

    // Counts out of range, and a default above the ceiling, are 400 naming the field.
    for (body, field) in [
        (json!({"ceiling": {"per_minute": 0}}), "ceiling.per_minute"),
        (json!({"default": {"total": -5}}), "default.total"),
        (
            json!({"default": {"per_second": 1_000_000_000_001_i64}}),
            "default.per_second",
        ),
        (
            json!({"default": {"per_second": 200}, "ceiling": {"per_second": 100}}),
            "default.per_second",
        ),
    ] {
        let r = w.call("PUT", path, Some(&ada), Some(body.clone())).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert_eq!(error_field(&r.json()), field, "{body}: {}", r.text());
    }
    // An unknown window is refused too.
    let r = w
        .call(
            "PUT",
            path,
            Some(&ada),
            Some(json!({"ceiling": {"per_fortnight": 3}})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("per_fortnight"), "{}", r.text());

    let r = w
        .call(
            "PUT",
            path,
            Some(&ada),
            Some(json!({"default": {"per_second": 10}, "ceiling": {"per_second": 100, "per_day": 1000}})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"org": "acme", "default": {"per_second": 10},
               "ceiling": {"per_second": 100, "per_day": 1000}})
    );
    let audited = audit_actions(&w, &ada, "acme").await;
    let (_, detail) = audited
        .iter()
        .find(|(a, _)| a == "org.rate_limits")
        .expect("org.rate_limits in the audit log");
    assert_eq!(detail["before"], json!({"default": {}, "ceiling": {}}));
    assert_eq!(
        detail["after"]["ceiling"],
        json!({"per_second": 100, "per_day": 1000})
    );

    // A token's own limit above the ceiling: 400 naming the field and the most allowed.
    let ula_id = w.uid("ula");
    let r = w
        .call(
            "POST",
            "/v1/tokens",
            Some(&ada),
            Some(json!({"name": "fast", "user": ula_id, "limits": {"per_second": 500}})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(error_field(&r.json()), "limits.per_second");
    assert!(r.text().contains("at most 100"), "{}", r.text());

    // Within it: own values, the default for what it leaves out, the ceiling for the rest.
    let r = w
        .call(
            "POST",
            "/v1/tokens",
            Some(&ada),
            Some(json!({"name": "steady", "user": ula_id,
                        "limits": {"per_second": 50, "per_minute": 600}})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let steady = r.json()["id"].as_str().unwrap().to_string();
    let limits_of = |id: &str| format!("/v1/tokens/{id}/rate-limits");
    let r = w.call("GET", &limits_of(&steady), Some(&ula), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["own"],
        json!({"per_second": 50, "per_minute": 600})
    );
    assert_eq!(
        r.json()["effective"],
        json!({"per_second": 50, "per_minute": 600, "per_day": 1000})
    );
    let r = w
        .call(
            "POST",
            "/v1/tokens",
            Some(&ada),
            Some(json!({"name": "plain", "user": ula_id})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let plain = r.json()["id"].as_str().unwrap().to_string();
    let r = w.call("GET", &limits_of(&plain), Some(&ada), None).await;
    assert_eq!(
        r.json()["effective"],
        json!({"per_second": 10, "per_day": 1000})
    );
    // Another org's admin does not see it.
    let r = w
        .call("GET", &limits_of(&plain), Some(&w.jwt("pam")), None)
        .await;
    assert_eq!(r.status, 404, "{}", r.text());

    // Editing the limits changes no JWT, and is in the audit log with before and after.
    w.call(
        "POST",
        &format!("/v1/tokens/{steady}/download"),
        Some(&ula),
        Some(json!({})),
    )
    .await;
    let r = w
        .call(
            "PATCH",
            &format!("/v1/tokens/{steady}"),
            Some(&ada),
            Some(json!({"limits": {"per_minute": 60}})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["changed"], json!(["limits"]));
    assert_eq!(r.json()["jwt_revoked"], json!(false));
    let r = w
        .call(
            "PATCH",
            &format!("/v1/tokens/{steady}"),
            Some(&ada),
            Some(json!({"limits": {"per_hour": 0}})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(error_field(&r.json()), "limits.per_hour");
    let audited = audit_actions(&w, &ada, &steady).await;
    let changes: Vec<&Value> = audited
        .iter()
        .filter(|(a, _)| a == "token.rate_limits")
        .map(|(_, d)| d)
        .collect();
    assert_eq!(changes.len(), 2, "{audited:?}");
    let edited = changes
        .iter()
        .find(|d| d["after"] == json!({"per_minute": 60}))
        .expect("the edit's entry");
    assert_eq!(
        edited["before"],
        json!({"per_second": 50, "per_minute": 600})
    );
    let edit = audited.iter().find(|(a, _)| a == "token.edit").unwrap();
    assert_eq!(edit.1["changed"], json!(["limits"]));

    // A lower ceiling tightens existing tokens at once.
    let r = w
        .call(
            "PUT",
            path,
            Some(&ada),
            Some(json!({"ceiling": {"per_minute": 30}, "default": {}})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = w.call("GET", &limits_of(&steady), Some(&ula), None).await;
    assert_eq!(r.json()["effective"], json!({"per_minute": 30}));
}

#[tokio::test]
async fn a_token_never_makes_a_token_with_looser_limits_than_its_own() {
    let w = World::new().await;
    let ada = w.jwt("ada");
    // Ada makes herself a limited management token and takes its JWT.
    let r = w
        .call(
            "POST",
            "/v1/tokens",
            Some(&ada),
            Some(json!({"name": "limited", "scopes": ["tessera:manage"],
                        "lifetime_days": 365, "limits": {"per_second": 5, "per_day": 100}})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    let r = w
        .call(
            "POST",
            &format!("/v1/tokens/{id}/download"),
            Some(&ada),
            Some(json!({})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let limited = r.json()["jwt"].as_str().unwrap().to_string();
    let ula_id = w.uid("ula");

    // Looser than its own: 403 exceeds_creator, naming the field and the most allowed.
    let r = w
        .call(
            "POST",
            "/v1/tokens",
            Some(&limited),
            Some(json!({"name": "looser", "user": ula_id, "limits": {"per_second": 10}})),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["reason"], "exceeds_creator", "{}", r.text());
    assert!(
        r.text().contains("limits.per_second: at most 5"),
        "{}",
        r.text()
    );

    // Unset limits take the creator's; tighter ones are kept.
    let r = w
        .call(
            "POST",
            "/v1/tokens",
            Some(&limited),
            Some(json!({"name": "inherits", "user": ula_id, "limits": {"per_second": 2}})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let child = r.json()["id"].as_str().unwrap().to_string();
    let r = w
        .call(
            "GET",
            &format!("/v1/tokens/{child}/rate-limits"),
            Some(&ada),
            None,
        )
        .await;
    assert_eq!(
        r.json()["effective"],
        json!({"per_second": 2, "per_day": 100})
    );
    let r = w
        .call(
            "POST",
            "/v1/tokens",
            Some(&limited),
            Some(json!({"name": "silent", "user": ula_id})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let silent = r.json()["id"].as_str().unwrap().to_string();
    let r = w
        .call(
            "GET",
            &format!("/v1/tokens/{silent}/rate-limits"),
            Some(&ada),
            None,
        )
        .await;
    assert_eq!(
        r.json()["effective"],
        json!({"per_second": 5, "per_day": 100})
    );

    // Editing through it is bound the same way; a session is bound only by the ceiling.
    let r = w
        .call(
            "PATCH",
            &format!("/v1/tokens/{child}"),
            Some(&limited),
            Some(json!({"limits": {"per_day": 1000}})),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        r.text().contains("limits.per_day: at most 100"),
        "{}",
        r.text()
    );
    let r = w
        .call(
            "PATCH",
            &format!("/v1/tokens/{child}"),
            Some(&ada),
            Some(json!({"limits": {"per_day": 1000}})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());

    // The org's limits are changed only with a session or an unlimited token.
    let r = w
        .call(
            "PUT",
            "/v1/orgs/acme/rate-limits",
            Some(&limited),
            Some(json!({"ceiling": {}})),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
}

/// The leases granted to every edge, by (window kind, index): per edge the largest
/// allowance it was given for that window (what it may admit there, `Budget::grant`).
type Held = std::collections::HashMap<(String, u64), std::collections::HashMap<String, u64>>;

fn note_leases(held: &mut Held, edge: &str, answer: &Value, token: &str) {
    for l in answer["leases"].as_array().cloned().unwrap_or_default() {
        if l["token_id"] != token {
            continue;
        }
        let (first, last) = (l["first"].as_u64().unwrap(), l["last"].as_u64().unwrap());
        for i in first..=last {
            let per_edge = held
                .entry((l["window"].as_str().unwrap().to_string(), i))
                .or_default();
            let a = per_edge.entry(edge.to_string()).or_insert(0);
            *a = (*a).max(l["per_window"].as_u64().unwrap());
        }
    }
}

#[tokio::test]
async fn leases_follow_demand_and_never_sum_past_the_limit_in_any_window() {
    let w = World::new().await;
    let ada = w.jwt("ada");
    let secret = w.edge_secret("ada", "acme", "fleet").await;
    let r = w
        .call(
            "POST",
            "/v1/tokens",
            Some(&ada),
            Some(json!({"name": "metered", "user": w.uid("ula"),
                        "limits": {"per_second": 20, "per_minute": 600, "per_day": 5000}})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let token = r.json()["id"].as_str().unwrap().to_string();
    let report = |edge: &str, spent: &[(&str, u64, u64, u64)]| {
        let tokens: Vec<Value> = spent
            .iter()
            .map(|(window, index, admitted, refused)| {
                json!({"token_id": token, "window": window, "index": index,
                       "admitted": admitted, "refused": refused})
            })
            .collect();
        json!({"events": [], "spend": {"edge": edge, "tokens": tokens}})
    };

    // A first report naming nothing already brings a small lease of every window (a
    // quarter of the usual floor, at least 1, for an edge that wanted nothing yet): the
    // token's first request at that edge need not wait.
    let r = w
        .call("POST", "/v1/usage", Some(&secret), Some(report("a", &[])))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let first = r.json();
    let windows: Vec<(&str, u64, u64)> = first["leases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["window"].as_str().unwrap(),
                l["per_window"].as_u64().unwrap(),
                l["limit"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        windows,
        vec![
            ("per_second", 1, 20),
            ("per_minute", 7, 600),
            ("per_day", 62, 5000)
        ]
    );

    // Bad reports name the field.
    for (body, field) in [
        (
            json!({"events": [], "spend": {"edge": "", "tokens": []}}),
            "spend.edge",
        ),
        (
            json!({"events": [], "spend": {"edge": "a", "tokens": [
                {"token_id": token, "window": "per_week", "index": 0, "admitted": 1, "refused": 0}]}}),
            "spend.tokens[0].window",
        ),
    ] {
        let r = w.call("POST", "/v1/usage", Some(&secret), Some(body)).await;
        assert_eq!(r.status, 400, "{}", r.text());
        assert_eq!(error_field(&r.json()), field, "{}", r.text());
    }

    // Three edges, skewed demand (90/5/5), reporting round after round as time passes:
    // the busy edge's share grows, and in no window do the allowances of all edges sum
    // past the limit.
    let mut held = Held::new();
    let edges = ["a", "b", "c"];
    for round in 0..40u64 {
        for (n, edge) in edges.iter().enumerate() {
            let now = u64::try_from(w.now()).unwrap();
            let busy = if n == 0 { 90 } else { 5 };
            let spent = [
                ("per_second", now - 1, busy / 5, busy / 10),
                ("per_minute", now / 60, busy * 6, 0),
                ("per_day", now / 86_400, busy * 10, 0),
            ];
            let r = w
                .call(
                    "POST",
                    "/v1/usage",
                    Some(&secret),
                    Some(report(edge, &spent)),
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.text());
            note_leases(&mut held, edge, &r.json(), &token);
        }
        if round % 3 == 2 {
            w.advance(1);
        }
    }
    let limit = |window: &str| match window {
        "per_second" => 20,
        "per_minute" => 600,
        _ => 5000,
    };
    for ((window, i), per_edge) in &held {
        let total: u64 = per_edge.values().sum();
        assert!(
            total <= limit(window),
            "{window} window {i}: {per_edge:?} sum to {total}"
        );
    }
    // The busy edge ends up with most of the per-second limit.
    let now = u64::try_from(w.now()).unwrap();
    let a_now = held[&("per_second".to_string(), now)]["a"];
    assert!(a_now >= 12, "the busy edge holds {a_now} of 20 per second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn simultaneous_grants_to_many_edges_share_one_budget() {
    // Eight edges ask at once, each wanting the whole limit: the grants are store
    // transactions (serializable on PostgreSQL, retried on conflict), so whichever order
    // they commit in, no window is leased past the limit.
    let w = World::new().await;
    let ada = w.jwt("ada");
    let secret = w.edge_secret("ada", "acme", "fleet").await;
    let r = w
        .call(
            "POST",
            "/v1/tokens",
            Some(&ada),
            Some(json!({"name": "shared", "user": w.uid("ula"), "limits": {"per_minute": 100}})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let token = r.json()["id"].as_str().unwrap().to_string();
    let minute = u64::try_from(w.now()).unwrap() / 60;
    let mut calls = Vec::new();
    for n in 0..8 {
        let app = w.app.clone();
        let secret = secret.clone();
        let body = json!({"events": [], "spend": {"edge": format!("e{n}"), "tokens": [
            {"token_id": token, "window": "per_minute", "index": minute, "admitted": 100, "refused": 50}]}});
        calls.push(tokio::spawn(async move {
            let r = common::send(
                &app,
                "POST",
                "/v1/usage",
                Some(&secret),
                "application/json",
                body.to_string().into_bytes(),
                &[],
            )
            .await;
            (format!("e{n}"), r)
        }));
    }
    let mut held = Held::new();
    for c in calls {
        let (edge, r) = c.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        note_leases(&mut held, &edge, &r.json(), &token);
    }
    let mut granted = 0;
    for ((window, i), per_edge) in &held {
        let total: u64 = per_edge.values().sum();
        assert!(
            total <= 100,
            "{window} window {i}: {per_edge:?} sum to {total}"
        );
        granted = granted.max(total);
    }
    assert!(granted > 0, "nothing was leased: {held:?}");
}

#[tokio::test]
async fn an_org_default_is_leased_ahead_and_an_edge_learns_which_tokens_are_unlimited() {
    // An edge holds nothing for a token until the control plane answers it: the answer
    // says whether the org limits tokens at all (`limited`), leases every token the org's
    // defaults limit that was used or downloaded lately — before its first request
    // reaches the edge — and names `unlimited` the tokens the edge asked about that have
    // no limit. Core's parser (what the filter and the worker run) reads the answer.
    use tessera_core::ratelimit::{OrgMode, UsageAnswer};
    let w = World::new().await;
    let ada = w.jwt("ada");
    let secret = w.edge_secret("ada", "acme", "fleet").await;
    let downloaded = w.token_in_state(&w.uid("ula"), "enabled").await;
    let pending = w.token_in_state(&w.uid("ula"), "pending").await;
    let ask = |wanted: &[&str]| json!({"events": [], "spend": {"edge": "e1", "tokens": [], "wanted": wanted}});
    let mine = |answer: &Value, id: &str| -> Vec<(String, u64, u64)> {
        answer["leases"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter(|l| l["token_id"] == id)
            .map(|l| {
                (
                    l["window"].as_str().unwrap().to_string(),
                    l["per_window"].as_u64().unwrap(),
                    l["limit"].as_u64().unwrap(),
                )
            })
            .collect()
    };

    // No limits anywhere: nothing is leased, the asked token is unlimited.
    let r = w
        .call(
            "POST",
            "/v1/usage",
            Some(&secret),
            Some(ask(&[&downloaded])),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let a = r.json();
    assert_eq!(a["limited"], false, "{a}");
    assert_eq!(a["unlimited"], json!([downloaded]), "{a}");
    assert!(a.get("leases").is_none(), "{a}");
    let parsed = UsageAnswer::from_json(r.text().as_bytes()).unwrap();
    assert_eq!(parsed.org_mode(), OrgMode::Unlimited);
    // A batch without spend says nothing of limits.
    let r = w
        .call(
            "POST",
            "/v1/usage",
            Some(&secret),
            Some(json!({"events": []})),
        )
        .await;
    assert!(r.json().get("limited").is_none(), "{}", r.text());

    // The org sets a default: the recently downloaded token is leased unasked; the
    // pending one only when asked; an id of no token of the org is unlimited.
    let r = w
        .call(
            "PUT",
            "/v1/orgs/acme/rate-limits",
            Some(&ada),
            Some(json!({"default": {"per_minute": 50}})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = w
        .call("POST", "/v1/usage", Some(&secret), Some(ask(&[])))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let a = r.json();
    assert_eq!(a["limited"], true, "{a}");
    // An edge that wanted nothing yet keeps a quarter of the floor, at least 1 (its first
    // request need not wait; `apportion` gives no edge a floor it would leave unspent).
    assert_eq!(
        mine(&a, &downloaded),
        vec![("per_minute".to_string(), 1, 50)],
        "{a}"
    );
    assert_eq!(a["edges"], 1, "{a}");
    assert!(mine(&a, &pending).is_empty(), "{a}");
    // Reported again while idle, and still holding a lease that reaches into the next
    // minute: not re-granted (no new lease, no row rewritten), and still not unlimited.
    let r = w
        .call(
            "POST",
            "/v1/usage",
            Some(&secret),
            Some(ask(&[&downloaded])),
        )
        .await;
    let again = r.json();
    assert!(mine(&again, &downloaded).is_empty(), "{again}");
    assert_eq!(again["unlimited"], Value::Null, "{again}");
    let r = w
        .call(
            "POST",
            "/v1/usage",
            Some(&secret),
            Some(ask(&[&pending, "tok_of_nobody"])),
        )
        .await;
    let a = r.json();
    assert_eq!(mine(&a, &pending), vec![("per_minute".to_string(), 1, 50)]);
    assert_eq!(a["unlimited"], json!(["tok_of_nobody"]), "{a}");
    let parsed = UsageAnswer::from_json(r.text().as_bytes()).unwrap();
    assert_eq!(parsed.org_mode(), OrgMode::Limited);
    assert!(parsed
        .leases
        .iter()
        .any(|l| l.token_id == pending && l.lease().is_some()));

    // Too many asks name the field.
    let many: Vec<String> = (0..1001).map(|n| format!("tok_{n}")).collect();
    let r = w
        .call(
            "POST",
            "/v1/usage",
            Some(&secret),
            Some(json!({"events": [], "spend": {"edge": "e1", "wanted": many}})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(error_field(&r.json()), "spend.wanted");
}

/// Six simulated edges over `seconds` of the test clock: each reports its spend every
/// second (core's `Budget`, fed by the answers' leases, as the filter and the worker keep
/// it), then admits its share of a steady offered load of 1.2× `limit` per window, 90 % of
/// it at the first edge and the rest spread evenly. Returns the admissions per window and
/// the leases noted per window and edge.
async fn simulate_fleet(window: &str, limit: u64, seconds: u64) -> (BTreeMap<u64, u64>, Held) {
    use tessera_core::ratelimit::{Admission, Budget, Lease, Window};
    let w = World::new().await;
    let ada = w.jwt("ada");
    let secret = w.edge_secret("ada", "acme", "fleet").await;
    let r = w
        .call(
            "POST",
            "/v1/tokens",
            Some(&ada),
            Some(json!({"name": "skewed", "user": w.uid("ula"), "limits": {window: limit}})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let token = r.json()["id"].as_str().unwrap().to_string();
    let kind = Window::parse(window).unwrap();
    let window_secs = kind.policy_seconds().unwrap();
    let edges = 6;
    let per_sec = 1.2 * limit as f64 / window_secs as f64;
    let rates: Vec<f64> = (0..edges)
        .map(|e| {
            if e == 0 {
                per_sec * 0.9
            } else {
                per_sec * 0.1 / (edges - 1) as f64
            }
        })
        .collect();
    let mut budgets: Vec<Budget> = (0..edges).map(|_| Budget::new()).collect();
    let mut owed = vec![0.0f64; edges];
    let mut admitted: BTreeMap<u64, u64> = BTreeMap::new();
    let mut held = Held::new();
    let mut edges_said = 0;
    for _ in 0..seconds {
        let now_ms = u64::try_from(w.now()).unwrap() * 1000;
        for (e, budget) in budgets.iter_mut().enumerate() {
            let spend: Vec<Value> = budget
                .spend(&token)
                .iter()
                .map(|t| {
                    json!({"token_id": t.token_id, "window": t.window, "index": t.index,
                           "admitted": t.admitted, "refused": t.refused})
                })
                .collect();
            let wanted = if spend.is_empty() {
                vec![token.clone()]
            } else {
                Vec::new()
            };
            let edge = format!("e{e}");
            let body =
                json!({"events": [], "spend": {"edge": edge, "tokens": spend, "wanted": wanted}});
            let r = w.call("POST", "/v1/usage", Some(&secret), Some(body)).await;
            assert_eq!(r.status, 200, "{}", r.text());
            let answer = r.json();
            // Every edge learns how many share the limit (its fallback's divisor).
            edges_said = answer["edges"].as_u64().unwrap();
            note_leases(&mut held, &edge, &answer, &token);
            for l in answer["leases"].as_array().cloned().unwrap_or_default() {
                let n = |k: &str| l[k].as_u64().unwrap();
                budget.grant(
                    Lease {
                        window: kind,
                        first: n("first"),
                        last: n("last"),
                        per_window: n("per_window"),
                        limit: n("limit"),
                    },
                    now_ms,
                );
            }
        }
        // The second's requests, spread over it after the reports.
        for (e, budget) in budgets.iter_mut().enumerate() {
            owed[e] += rates[e];
            let n = owed[e].floor() as u64;
            owed[e] -= n as f64;
            for j in 0..n {
                let t = now_ms + 100 + j * 800 / n.max(1);
                if budget.admit(t) == Admission::Admit {
                    *admitted.entry(kind.index(t)).or_insert(0) += 1;
                }
            }
        }
        w.advance(1);
    }
    assert_eq!(edges_said, edges as u64);
    (admitted, held)
}

/// The share of the limit the fleet admits in each complete window after the first two
/// (the leases follow the demand the edges report), as the quota bench measures it.
fn shares(admitted: &BTreeMap<u64, u64>, limit: u64) -> Vec<f64> {
    let windows: Vec<u64> = admitted.values().copied().collect();
    // The first window is partial, the next one follows the first demand; the last is
    // partial too.
    windows[2..windows.len() - 1]
        .iter()
        .map(|n| *n as f64 / limit as f64)
        .collect()
}

fn assert_never_leased_past(held: &Held, limit: u64) {
    for ((window, i), per_edge) in held {
        let total: u64 = per_edge.values().sum();
        assert!(
            total <= limit,
            "{window} window {i}: {per_edge:?} sum to {total}"
        );
    }
}

#[tokio::test]
async fn a_skewed_fleet_uses_99_percent_of_a_per_minute_limit() {
    let limit = 600;
    let (admitted, held) = simulate_fleet("per_minute", limit, 6 * 60).await;
    assert_never_leased_past(&held, limit);
    let s = shares(&admitted, limit);
    println!("per-minute share per window: {s:?} (admitted {admitted:?})");
    assert!(admitted.values().all(|n| *n <= limit), "{admitted:?}");
    assert!(s.len() >= 2, "{admitted:?}");
    assert!(s.iter().all(|x| *x >= 0.99), "{s:?}");
}

#[tokio::test]
async fn a_skewed_fleet_uses_90_percent_of_a_per_second_limit() {
    let limit = 50;
    let (admitted, held) = simulate_fleet("per_second", limit, 60).await;
    assert_never_leased_past(&held, limit);
    let s = shares(&admitted, limit);
    let least = s.iter().copied().fold(f64::MAX, f64::min);
    let mean = s.iter().sum::<f64>() / s.len() as f64;
    println!(
        "per-second share: least {least:.3}, mean {mean:.3} over {} windows",
        s.len()
    );
    assert!(admitted.values().all(|n| *n <= limit), "{admitted:?}");
    assert!(least >= 0.90, "{s:?}");
}

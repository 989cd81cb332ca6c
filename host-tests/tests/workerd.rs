//! The edge worker bundle in a real workerd, in front of the echo upstream: the filter's
//! scenario table (minus the Envoy-only cases), the client address from
//! `CF-Connecting-IP`, refused configurations, status lists fetched from a control-plane
//! stand-in (revocation within the TTL), and usage reports.
//!
//! Needs `TESSERA_WORKERD` and `TESSERA_EDGE_WORKER_DIR`; `cargo xtask test` sets both.

mod common;
#[allow(dead_code)]
use tessera_host_tests::workerd;

use std::time::{Duration, Instant};

use common::{
    configured_identity_cases, configured_identity_headers, finish, run_table, scenario_table,
    Case, ScenarioKeys, Www, ALICE,
};
use serde_json::{json, Value};
// `crate::` names the workerd module uses.
#[allow(unused_imports)]
use tessera_host_tests::{repo_root, Response, TempDir};
use tessera_host_tests::{EchoUpstream, Request};
use tessera_testkit::{
    jwks, now, status_list_json, Alg, TestKey, TokenBuilder, DEFAULT_AUDIENCE, DEFAULT_ISSUER,
    DEFAULT_STATUS_URI,
};
use workerd::{workerd_tools, ControlStub, Origin, Workerd, WorkerdOptions};

fn start(options: &WorkerdOptions) -> Workerd {
    Workerd::start(options).unwrap_or_else(|e| panic!("workerd with the worker did not start: {e}"))
}

/// Status list used by the inline configuration: idx 0 valid, 1 revoked, 2 suspended.
fn status_lists() -> Value {
    json!([status_list_json(DEFAULT_STATUS_URI, &[0, 1, 2, 0])])
}

/// The filter's scenario table, through workerd, with the client address from
/// `CF-Connecting-IP` and the origin as an `ORIGIN` URL.
#[test]
fn workerd_scenarios() {
    let (workerd_bin, bundle) = workerd_tools();
    let t = now();
    let keys = ScenarioKeys::generate();
    let config = keys.config(status_lists());
    let tok = |b: TokenBuilder| b.sign(&keys.ed);
    let bearer = |token: &str| Request::get("/api/things").bearer(token);
    let pinned = tok(TokenBuilder::new(t).claim("ip_allow", json!(["127.0.0.1/32"])));
    let pinned_v6 = tok(TokenBuilder::new(t).claim("ip_allow", json!(["2001:db8::/32"])));
    let from = |ip: &str, token: &str| bearer(token).header("cf-connecting-ip", ip);
    let mut cases = scenario_table(t, &keys);
    cases.extend(vec![
        // --- the client address is CF-Connecting-IP ---
        Case::allow(
            "ip_allow 127.0.0.1/32, CF-Connecting-IP 127.0.0.1",
            from("127.0.0.1", &pinned),
            ALICE,
        )
        .upstream("cf-connecting-ip", &["127.0.0.1"]),
        Case::allow(
            "ip_allow 2001:db8::/32, CF-Connecting-IP 2001:db8::7",
            from("2001:db8::7", &pinned_v6),
            ALICE,
        ),
        Case::allow(
            "ip_allow ::1 (bare address), CF-Connecting-IP ::1",
            from(
                "::1",
                &tok(TokenBuilder::new(t).claim("ip_allow", json!(["::1"]))),
            ),
            ALICE,
        ),
        Case::deny(
            "ip_allow 127.0.0.1/32, CF-Connecting-IP 127.0.0.2",
            from("127.0.0.2", &pinned),
            403,
            "ip_not_allowed",
            Www::NoErrorParam,
        ),
        Case::deny(
            "ip_allow 127.0.0.1/32, CF-Connecting-IP ::1",
            from("::1", &pinned),
            403,
            "ip_not_allowed",
            Www::NoErrorParam,
        ),
        Case::deny(
            "ip_allow without CF-Connecting-IP: address unknown",
            bearer(&pinned),
            403,
            "ip_not_allowed",
            Www::NoErrorParam,
        ),
        Case::deny(
            "X-Forwarded-For is not trusted",
            bearer(&pinned).header("x-forwarded-for", "127.0.0.1"),
            403,
            "ip_not_allowed",
            Www::NoErrorParam,
        ),
        Case::deny(
            "unparsable CF-Connecting-IP",
            from("not-an-ip", &pinned),
            403,
            "ip_not_allowed",
            Www::NoErrorParam,
        ),
    ]);

    // Signatures checked with WebCrypto (the default), then in Rust only: same table.
    let mut failures = Vec::new();
    for webcrypto in ["auto", "off"] {
        let upstream = EchoUpstream::start().expect("echo upstream");
        let options = WorkerdOptions::new(
            &workerd_bin,
            &bundle,
            &config,
            Origin::Url(format!("http://{}", upstream.addr())),
        )
        .var("TESSERA_WEBCRYPTO", webcrypto);
        let worker = start(&options);
        let label = format!("workerd, webcrypto {webcrypto}");
        failures.extend(run_table(&label, &worker, &cases).0);
        let allowed = cases.iter().filter(|c| c.reason.is_none()).count();
        if upstream.request_count() != allowed {
            failures.push(format!(
                "[{label}] the upstream saw {} requests, want {allowed} (one per allowed case)",
                upstream.request_count()
            ));
        }
        // Which path checked the signatures, per key, as the worker logs it.
        let deadline = Instant::now() + Duration::from_secs(5);
        while webcrypto == "auto"
            && worker.log().matches("verified with WebCrypto").count() < 3
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = worker.log();
        for line in log.lines().filter(|l| l.contains("tessera: key")) {
            println!("[{label}] {line}");
        }
        for kid in ["ed-1", "es-1", "rs-1"] {
            let webcrypto_used = log.lines().any(|l| {
                l.contains(&format!("key {kid} ")) && l.contains("verified with WebCrypto")
            });
            if webcrypto_used != (webcrypto == "auto") {
                failures.push(format!(
                    "[{label}] key {kid}: WebCrypto used = {webcrypto_used}\n{log}"
                ));
            }
        }
    }
    finish(&failures);
}

/// The origin as a service binding, `forward_token: false`, and the path the origin gets
/// (normalised as Envoy's `normalize_path` + `merge_slashes` would, query kept).
#[test]
fn workerd_service_binding_forwards_normalised_path_without_token() {
    let (workerd_bin, bundle) = workerd_tools();
    let t = now();
    let ed = TestKey::generate(Alg::EdDSA, "ed-svc");
    let config = json!({
        "issuers": [DEFAULT_ISSUER],
        "audiences": [DEFAULT_AUDIENCE],
        "jwks": jwks(&[&ed]),
        "forward_token": false,
        "identity_headers": {"user": "x-user"},
        "status": {"lists": status_lists()},
    });
    let token = TokenBuilder::new(t).sign(&ed);
    let upstream = EchoUpstream::start().expect("echo upstream");
    let worker = start(&WorkerdOptions::new(
        &workerd_bin,
        &bundle,
        &config,
        Origin::Service(upstream.addr()),
    ));

    let resp = Request::new("POST", "/a/./b/../c//d?q=1//2")
        .bearer(&token)
        .header("x-user", "mallory")
        .body("hello")
        .send(worker.addr())
        .expect("request");
    let echo = resp
        .upstream()
        .unwrap_or_else(|| panic!("not from the origin: {}", resp.summary()));
    assert_eq!(resp.status, 200);
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/a/c/d?q=1//2");
    assert_eq!(echo["body_bytes"], 5);
    assert_eq!(resp.upstream_header("authorization"), Vec::<String>::new());
    assert_eq!(resp.upstream_header("x-user"), ["alice"]);
    assert_eq!(resp.upstream_header("x-tessera-org"), ["acme"]);

    // `forward_token: false` removes a custom-source header too, and denials never
    // reach the origin.
    let denied = Request::get("/x").send(worker.addr()).expect("request");
    assert_eq!(denied.status, 401);
    assert_eq!(denied.reason().as_deref(), Some("token_missing"));
    assert_eq!(upstream.request_count(), 1);
}

/// A non-default `identity_headers` in a real workerd: the same cases as in Envoy, the
/// same headers at the origin.
#[test]
fn workerd_configured_identity_headers() {
    let (workerd_bin, bundle) = workerd_tools();
    let t = now();
    let ed = TestKey::generate(Alg::EdDSA, "ed-ids");
    let config = json!({
        "issuers": [DEFAULT_ISSUER],
        "audiences": [DEFAULT_AUDIENCE],
        "jwks": jwks(&[&ed]),
        "identity_headers": configured_identity_headers(),
        "status": {"lists": status_lists()},
    });
    let cases = configured_identity_cases(t, &ed);
    let upstream = EchoUpstream::start().expect("echo upstream");
    let worker = start(&WorkerdOptions::new(
        &workerd_bin,
        &bundle,
        &config,
        Origin::Url(format!("http://{}", upstream.addr())),
    ));
    let (mut failures, _) = run_table("workerd identity headers", &worker, &cases);
    if upstream.request_count() != cases.len() {
        failures.push(format!(
            "the upstream saw {} requests, want {}",
            upstream.request_count(),
            cases.len()
        ));
    }
    finish(&failures);
}

/// A configuration the worker cannot honour fails closed (500 `filter_error`) and the log
/// names the field, as the filter's refusal does.
#[test]
fn workerd_refuses_bad_configurations_naming_the_field() {
    let (workerd_bin, bundle) = workerd_tools();
    let ed = TestKey::generate(Alg::EdDSA, "ed-bad");
    let good = json!({
        "issuers": [DEFAULT_ISSUER],
        "audiences": [DEFAULT_AUDIENCE],
        "jwks": jwks(&[&ed]),
    });
    let mut xff = good.clone();
    xff["client_ip"] = json!({"source": "x_forwarded_for", "trusted_hops": 1});
    let mut bad_key = good.clone();
    bad_key["jwks"]["keys"][0]["crv"] = json!("P-384");
    // Usage reports of the Envoy filter name an Envoy cluster: the worker has bindings.
    let mut usage = good.clone();
    usage["sync"] = json!({"usage": {"cluster": "control_plane", "credential": "s"}});
    let upstream = EchoUpstream::start().expect("echo upstream");
    let token = TokenBuilder::new(now()).sign(&ed);

    for (config, field) in [
        (xff, "client_ip.source"),
        (bad_key, "jwks.keys[0].crv"),
        (usage, "sync.usage"),
    ] {
        let worker = start(&WorkerdOptions::new(
            &workerd_bin,
            &bundle,
            &config,
            Origin::Url(format!("http://{}", upstream.addr())),
        ));
        let resp = Request::get("/x")
            .bearer(&token)
            .send(worker.addr())
            .expect("request");
        assert_eq!(resp.status, 500, "{field}: {}", resp.summary());
        assert_eq!(resp.reason().as_deref(), Some("filter_error"));
        assert_eq!(resp.error().as_deref(), Some("server_error"));
        // console.error reaches the log when the request has been answered.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !worker.log().contains(field) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = worker.log();
        assert!(
            log.contains("invalid configuration") && log.contains(field),
            "the log does not name {field}:\n{log}"
        );
    }
    assert_eq!(upstream.request_count(), 0);
}

const LIST_URI: &str = "https://cp.tessera.test/v1/orgs/acme/status-list";
const LIST_PATH: &str = "/v1/orgs/acme/status-list";

fn list_doc(statuses: &[u8]) -> Value {
    let entry = status_list_json(LIST_URI, statuses);
    json!({"bits": 2, "lst": entry["lst"]})
}

/// Revocation through a status list fetched from the control plane, with the default
/// refresh (`TESSERA_STATUS_TTL_MS` unset: 900 ms): refused within about a second
/// (measured and printed), revalidated with ETag in the background in between.
#[test]
fn workerd_revocation_within_a_second_by_default() {
    const DEFAULT_TTL_MS: u64 = 900;
    let (workerd_bin, bundle) = workerd_tools();
    let t = now();
    let ed = TestKey::generate(Alg::EdDSA, "ed-rev");
    let config = json!({
        "issuers": [DEFAULT_ISSUER],
        "audiences": [DEFAULT_AUDIENCE],
        "jwks": jwks(&[&ed]),
        "status": {"fail_policy": "closed"},
    });
    let stub = ControlStub::start().expect("control stub");
    stub.set_status_list(LIST_PATH, &list_doc(&[0, 0, 0, 0, 0, 0]));
    let upstream = EchoUpstream::start().expect("echo upstream");
    let worker = start(
        &WorkerdOptions::new(
            &workerd_bin,
            &bundle,
            &config,
            Origin::Url(format!("http://{}", upstream.addr())),
        )
        .var(
            "TESSERA_STATUS_URLS",
            &json!({ LIST_URI: stub.url(LIST_PATH) }).to_string(),
        ),
    );
    let token = TokenBuilder::new(t).status(5, LIST_URI).sign(&ed);
    let send = || {
        Request::get("/api")
            .bearer(&token)
            .send(worker.addr())
            .expect("request")
    };

    let started = Instant::now();
    let first = send();
    assert_eq!(first.status, 200, "{}", first.summary());
    // Past the refresh period the list is revalidated in the background; unchanged, the
    // stub answers 304.
    std::thread::sleep(Duration::from_millis(DEFAULT_TTL_MS + 300));
    let second = send();
    assert_eq!(second.status, 200, "{}", second.summary());
    let revalidated = || {
        stub.requests().iter().any(|r| {
            r.status == 304 && r.header("if-none-match") == Some("\"1\"") && r.path == LIST_PATH
        })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !revalidated() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(
        revalidated(),
        "no If-None-Match revalidation answered 304: {:?}",
        stub.requests()
    );

    // Revoke: refused within about a second (the bound adds a generous allowance for a
    // loaded machine; the time is printed, the benchmark measures it).
    stub.set_status_list(LIST_PATH, &list_doc(&[0, 0, 0, 0, 0, 1]));
    let bound = Duration::from_millis(DEFAULT_TTL_MS) + Duration::from_secs(5);
    let (refused, took) = send_until(&worker, &token, bound, |r| r.status != 200);
    println!("revoked → refused by workerd after {took:?} (default refresh {DEFAULT_TTL_MS} ms)");
    assert_eq!(refused.status, 401, "{}", refused.summary());
    assert_eq!(refused.reason().as_deref(), Some("revoked"));
    assert!(took <= bound, "took {took:?}, bound {bound:?}");

    // Suspend, then reinstate: both follow the list.
    stub.set_status_list(LIST_PATH, &list_doc(&[0, 0, 0, 0, 0, 2]));
    let (suspended, _) = send_until(&worker, &token, bound, |r| {
        r.reason().as_deref() == Some("suspended")
    });
    assert_eq!(suspended.reason().as_deref(), Some("suspended"));
    stub.set_status_list(LIST_PATH, &list_doc(&[0, 0, 0, 0, 0, 0]));
    let (back, _) = send_until(&worker, &token, bound, |r| r.status == 200);
    assert_eq!(back.status, 200, "{}", back.summary());
    // Requests were sent every 25 ms or so throughout, yet the list was fetched at most
    // once a refresh period (one fetch in flight, the next a period after it started).
    let fetches = stub
        .requests()
        .iter()
        .filter(|r| r.path == LIST_PATH)
        .count() as u128;
    let ms = started.elapsed().as_millis();
    println!("{fetches} status-list fetches in {ms} ms");
    assert!(
        fetches <= ms / u128::from(DEFAULT_TTL_MS) + 2,
        "{fetches} fetches in {ms} ms"
    );
}

/// A worker that had no requests for a while decides the next one on a fresh list: a
/// token revoked during the quiet spell is refused at the first request after it, and a
/// valid one is not refused as stale (`status_unavailable`) while the control plane is up,
/// even past `sync.max_staleness_secs`.
#[test]
fn workerd_after_a_quiet_spell_decides_on_a_fresh_list() {
    const TTL_MS: u64 = 300;
    let (workerd_bin, bundle) = workerd_tools();
    let ed = TestKey::generate(Alg::EdDSA, "ed-quiet");
    let config = json!({
        "issuers": [DEFAULT_ISSUER],
        "audiences": [DEFAULT_AUDIENCE],
        "jwks": jwks(&[&ed]),
        "status": {"fail_policy": "closed"},
        "sync": {"max_staleness_secs": 1},
    });
    let stub = ControlStub::start().expect("control stub");
    stub.set_status_list(LIST_PATH, &list_doc(&[0, 0, 0, 0]));
    let upstream = EchoUpstream::start().expect("echo upstream");
    let worker = start(
        &WorkerdOptions::new(
            &workerd_bin,
            &bundle,
            &config,
            Origin::Url(format!("http://{}", upstream.addr())),
        )
        .var(
            "TESSERA_STATUS_URLS",
            &json!({ LIST_URI: stub.url(LIST_PATH) }).to_string(),
        )
        .var("TESSERA_STATUS_TTL_MS", &TTL_MS.to_string()),
    );
    let token = |idx: u64| TokenBuilder::new(now()).status(idx, LIST_URI).sign(&ed);
    let send = |t: &str| {
        Request::get("/api")
            .bearer(t)
            .send(worker.addr())
            .expect("request")
    };
    let mut list = [0u8, 0, 0, 0];
    for round in 0..3u64 {
        let (kept, gone) = (token(0), token(round + 1));
        let r = send(&gone);
        assert_eq!(r.status, 200, "round {round}: {}", r.summary());
        // Quiet: no requests. The token is revoked part-way through.
        std::thread::sleep(Duration::from_millis(1000));
        list[usize::try_from(round + 1).unwrap()] = 1;
        stub.set_status_list(LIST_PATH, &list_doc(&list));
        std::thread::sleep(Duration::from_millis(1500));
        // The first request after the quiet spell: refused, not let through once.
        let r = send(&gone);
        assert_eq!(r.status, 401, "round {round}: {}", r.summary());
        assert_eq!(r.reason().as_deref(), Some("revoked"), "round {round}");
        // Quiet again, past max_staleness_secs: a valid token is allowed, not 503.
        std::thread::sleep(Duration::from_millis(2500));
        let r = send(&kept);
        assert_eq!(r.status, 200, "round {round}: {}", r.summary());
    }
}

/// A status list that cannot be fetched: the fail policy decides, as in the filter.
#[test]
fn workerd_unreachable_status_list_follows_the_fail_policy() {
    let (workerd_bin, bundle) = workerd_tools();
    let ed = TestKey::generate(Alg::EdDSA, "ed-fail");
    // A port that was just free: nothing listens there.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let upstream = EchoUpstream::start().expect("echo upstream");
    let token = TokenBuilder::new(now()).status(0, LIST_URI).sign(&ed);
    for (policy, status, reason) in [
        ("closed", 503, Some("status_unavailable")),
        ("open", 200, None),
    ] {
        let config = json!({
            "issuers": [DEFAULT_ISSUER],
            "audiences": [DEFAULT_AUDIENCE],
            "jwks": jwks(&[&ed]),
            "status": {"fail_policy": policy},
        });
        let worker = start(
            &WorkerdOptions::new(
                &workerd_bin,
                &bundle,
                &config,
                Origin::Url(format!("http://{}", upstream.addr())),
            )
            .var(
                "TESSERA_STATUS_URLS",
                &json!({ LIST_URI: format!("http://{dead}{LIST_PATH}") }).to_string(),
            ),
        );
        let resp = Request::get("/api")
            .bearer(&token)
            .send(worker.addr())
            .expect("request");
        assert_eq!(resp.status, status, "{policy}: {}", resp.summary());
        assert_eq!(resp.reason().as_deref(), reason, "{policy}");
    }
}

const JWKS_PATH: &str = "/v1/orgs/acme/jwks.json";

/// Sends `token` to `/api` until `done(response)` or `bound` passes; returns the last
/// response and how long it took.
fn send_until(
    worker: &Workerd,
    token: &str,
    bound: Duration,
    done: impl Fn(&Response) -> bool,
) -> (Response, Duration) {
    let start = Instant::now();
    loop {
        let r = Request::get("/api")
            .bearer(token)
            .send(worker.addr())
            .expect("request");
        if done(&r) || start.elapsed() > bound {
            return (r, start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Keys only from a fetched JWKS (`TESSERA_JWKS_URLS`, no `jwks` in the config): 503
/// `keys_unavailable` before the first one, accepted once it arrives, revalidated with
/// ETag, a refused document keeps the keys, and a rotated key is accepted within the
/// JWKS TTL (measured and printed).
#[test]
fn workerd_keys_from_fetched_jwks() {
    const TTL_MS: u64 = 1000;
    let (workerd_bin, bundle) = workerd_tools();
    let t = now();
    let old = TestKey::generate(Alg::EdDSA, "ed-old");
    let new = TestKey::generate(Alg::ES256, "es-new");
    let config = json!({
        "issuers": [DEFAULT_ISSUER],
        "audiences": [DEFAULT_AUDIENCE],
        // Inline lists with `sync` but nothing fetched: nothing goes stale.
        "status": {"lists": status_lists()},
        "sync": {"max_staleness_secs": 60},
    });
    let stub = ControlStub::start().expect("control stub");
    let upstream = EchoUpstream::start().expect("echo upstream");
    let worker = start(
        &WorkerdOptions::new(
            &workerd_bin,
            &bundle,
            &config,
            Origin::Url(format!("http://{}", upstream.addr())),
        )
        .var(
            "TESSERA_JWKS_URLS",
            &json!([stub.url(JWKS_PATH)]).to_string(),
        )
        .var("TESSERA_JWKS_TTL_MS", &TTL_MS.to_string()),
    );
    let old_token = TokenBuilder::new(t).claim("jti", "old").sign(&old);
    let new_token = TokenBuilder::new(t).claim("jti", "new").sign(&new);

    // Nothing published yet (the stub answers 404): no keys.
    let first = Request::get("/api")
        .bearer(&old_token)
        .send(worker.addr())
        .expect("request");
    assert_eq!(first.status, 503, "{}", first.summary());
    assert_eq!(first.reason().as_deref(), Some("keys_unavailable"));
    assert_eq!(first.error().as_deref(), Some("temporarily_unavailable"));
    assert_eq!(upstream.request_count(), 0);

    stub.set_status_list(JWKS_PATH, &jwks(&[&old]));
    let bound = Duration::from_millis(TTL_MS) + Duration::from_secs(5);
    let (ok, took) = send_until(&worker, &old_token, bound, |r| r.status == 200);
    println!("first JWKS published → accepted by workerd after {took:?}");
    assert_eq!(ok.status, 200, "{}", ok.summary());
    assert_eq!(ok.upstream_header("x-tessera-token-id"), ["old"]);

    // Past the TTL the JWKS is revalidated in the background with If-None-Match (304).
    std::thread::sleep(Duration::from_millis(TTL_MS + 300));
    let (again, _) = send_until(&worker, &old_token, Duration::ZERO, |_| true);
    assert_eq!(again.status, 200, "{}", again.summary());
    let revalidated = || {
        stub.requests().iter().any(|r| {
            r.path == JWKS_PATH && r.status == 304 && r.header("if-none-match") == Some("\"1\"")
        })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !revalidated() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(
        revalidated(),
        "no If-None-Match revalidation of the JWKS: {:?}",
        stub.requests()
    );

    // A document core refuses (a private member) keeps the keys in force.
    let mut private = jwks(&[&new]);
    private["keys"][0]["d"] = json!("AAAA");
    stub.set_status_list(JWKS_PATH, &private);
    std::thread::sleep(Duration::from_millis(TTL_MS + 300));
    let (kept, _) = send_until(&worker, &old_token, Duration::ZERO, |_| true);
    assert_eq!(kept.status, 200, "{}", kept.summary());
    let (unknown, _) = send_until(&worker, &new_token, Duration::ZERO, |_| true);
    assert_eq!(unknown.reason().as_deref(), Some("key_unknown"));

    // Rotation: the new key is accepted within the TTL; once the old one leaves the
    // JWKS, its tokens are refused (the isolate's token cache does not keep them).
    stub.set_status_list(JWKS_PATH, &jwks(&[&new, &old]));
    let rotated_at = Instant::now();
    let (r, took) = send_until(&worker, &new_token, bound, |r| r.status == 200);
    println!("rotated key published → accepted by workerd after {took:?} (JWKS TTL {TTL_MS} ms)");
    assert_eq!(r.status, 200, "{}", r.summary());
    assert!(
        rotated_at.elapsed() <= bound,
        "took {took:?}, bound {bound:?}"
    );
    assert_eq!(r.upstream_header("x-tessera-token-id"), ["new"]);
    stub.set_status_list(JWKS_PATH, &jwks(&[&new]));
    let (gone, took) = send_until(&worker, &old_token, bound, |r| r.status != 200);
    println!("old key withdrawn → refused by workerd after {took:?}");
    assert_eq!(gone.status, 401, "{}", gone.summary());
    assert_eq!(gone.reason().as_deref(), Some("key_unknown"));
}

/// A token whose `kid` is not in the fetched JWKS makes the worker revalidate the JWKS at
/// once and wait for it (issue 24, item 7): with the regular refresh ten minutes away, the
/// first token of a rotated key is accepted. Forged kids cannot flood the control plane:
/// at most one fetch a second per JWKS URL, each forged token refused `key_unknown`.
#[test]
fn workerd_unknown_kid_refreshes_the_jwks_at_once() {
    let (workerd_bin, bundle) = workerd_tools();
    let t = now();
    let old = TestKey::generate(Alg::EdDSA, "ed-before");
    let new = TestKey::generate(Alg::ES256, "es-after");
    let config = json!({
        "issuers": [DEFAULT_ISSUER],
        "audiences": [DEFAULT_AUDIENCE],
        "status": {"lists": status_lists()},
        "sync": {"max_staleness_secs": 60},
    });
    let stub = ControlStub::start().expect("control stub");
    stub.set_status_list(JWKS_PATH, &jwks(&[&old]));
    let upstream = EchoUpstream::start().expect("echo upstream");
    let worker = start(
        &WorkerdOptions::new(
            &workerd_bin,
            &bundle,
            &config,
            Origin::Url(format!("http://{}", upstream.addr())),
        )
        .var(
            "TESSERA_JWKS_URLS",
            &json!([stub.url(JWKS_PATH)]).to_string(),
        )
        .var("TESSERA_JWKS_TTL_MS", "600000"),
    );
    let old_token = TokenBuilder::new(t).claim("jti", "old").sign(&old);
    let new_token = TokenBuilder::new(t).claim("jti", "new").sign(&new);
    let jwks_fetches = || {
        stub.requests()
            .iter()
            .filter(|r| r.path == JWKS_PATH)
            .count()
    };
    let (ok, _) = send_until(&worker, &old_token, Duration::ZERO, |_| true);
    assert_eq!(ok.status, 200, "{}", ok.summary());
    assert_eq!(jwks_fetches(), 1);

    // The key rotates at the control plane.
    stub.set_status_list(JWKS_PATH, &jwks(&[&new, &old]));
    let rotated_at = Instant::now();
    let (r, _) = send_until(&worker, &new_token, Duration::ZERO, |_| true);
    println!(
        "unknown kid → JWKS fetched while the request waited → the first token of the new \
         key accepted {:?} after the rotation (regular refresh 600 s)",
        rotated_at.elapsed()
    );
    assert_eq!(r.status, 200, "{}\n{}", r.summary(), worker.log());
    assert_eq!(r.upstream_header("x-tessera-token-id"), ["new"]);

    // Forged kids for two seconds: at most one JWKS fetch a second.
    let before = jwks_fetches();
    let forged_at = Instant::now();
    let mut forged = 0;
    while forged_at.elapsed() < Duration::from_secs(2) {
        let token = TokenBuilder::new(t)
            .header("kid", format!("forged-{forged}"))
            .with_signature("EdDSA", &[7; 64]);
        let (r, _) = send_until(&worker, &token, Duration::ZERO, |_| true);
        assert_eq!(
            r.reason().as_deref(),
            Some("key_unknown"),
            "{}",
            r.summary()
        );
        forged += 1;
    }
    std::thread::sleep(Duration::from_millis(300));
    let fetched = jwks_fetches() - before;
    let secs = forged_at.elapsed().as_secs() + 1;
    println!("{forged} forged kids in 2 s → {fetched} JWKS fetches");
    assert!(
        fetched as u64 <= secs + 1,
        "{fetched} JWKS fetches for {forged} forged kids in {secs} s"
    );
}

/// Stale status lists follow the filter's policy: `sync.max_staleness_secs` after the
/// last successful fetch, valid entries are unknown (`closed` → 503 `status_unavailable`,
/// `open` → allowed), while what the last list revoked stays 401 `revoked`.
#[test]
fn workerd_stale_status_lists_follow_the_filter() {
    const TTL_MS: u64 = 300;
    let (workerd_bin, bundle) = workerd_tools();
    let ed = TestKey::generate(Alg::EdDSA, "ed-stale");
    let upstream = EchoUpstream::start().expect("echo upstream");
    let valid = TokenBuilder::new(now()).status(0, LIST_URI).sign(&ed);
    let revoked = TokenBuilder::new(now())
        .claim("jti", "gone")
        .status(1, LIST_URI)
        .sign(&ed);
    for (policy, stale_status, stale_reason) in [
        ("closed", 503, Some("status_unavailable")),
        ("open", 200, None),
    ] {
        let config = json!({
            "issuers": [DEFAULT_ISSUER],
            "audiences": [DEFAULT_AUDIENCE],
            "jwks": jwks(&[&ed]),
            "status": {"fail_policy": policy},
            "sync": {"max_staleness_secs": 1},
        });
        let stub = ControlStub::start().expect("control stub");
        stub.set_status_list(LIST_PATH, &list_doc(&[0, 1]));
        let usage = ControlStub::start().expect("usage stub");
        let worker = start(
            &WorkerdOptions::new(
                &workerd_bin,
                &bundle,
                &config,
                Origin::Url(format!("http://{}", upstream.addr())),
            )
            .var(
                "TESSERA_STATUS_URLS",
                &json!({ LIST_URI: stub.url(LIST_PATH) }).to_string(),
            )
            .var("TESSERA_STATUS_TTL_MS", &TTL_MS.to_string())
            .var("TESSERA_STATUS_TIMEOUT_MS", "500")
            .var("TESSERA_USAGE_URL", &usage.url("/v1/usage"))
            .var("TESSERA_USAGE_BATCH", "1"),
        );
        let (fresh, _) = send_until(&worker, &valid, Duration::ZERO, |_| true);
        assert_eq!(fresh.status, 200, "{policy}: {}", fresh.summary());
        let (gone, _) = send_until(&worker, &revoked, Duration::ZERO, |_| true);
        assert_eq!(gone.reason().as_deref(), Some("revoked"), "{policy}");

        // The control plane goes away: after max_staleness_secs the policy decides.
        drop(stub);
        let lost_at = Instant::now();
        let bound = Duration::from_secs(1) + Duration::from_millis(TTL_MS) + Duration::from_secs(5);
        // `open` allows either way: the usage report says whether the policy did.
        let fail_open_reported = || {
            usage.requests().iter().any(|r| {
                serde_json::from_slice::<Value>(&r.body).is_ok_and(|v| {
                    v["events"]
                        .as_array()
                        .is_some_and(|e| e.iter().any(|e| e["reason"] == "status_fail_open"))
                })
            })
        };
        let (stale, took) = send_until(&worker, &valid, bound, |r| {
            r.status != 200 || fail_open_reported()
        });
        println!(
            "{policy}: control plane gone → stale answer after {took:?} ({:?} since)",
            lost_at.elapsed()
        );
        assert_eq!(stale.status, stale_status, "{policy}: {}", stale.summary());
        assert_eq!(stale.reason().as_deref(), stale_reason, "{policy}");
        if stale_status == 200 {
            assert_eq!(stale.upstream_header("x-tessera-token-id").len(), 1);
            assert!(
                fail_open_reported(),
                "open: no status_fail_open usage event"
            );
        }
        // Revocation is final: the stale list still refuses what it revoked.
        let (still, _) = send_until(&worker, &revoked, Duration::ZERO, |_| true);
        assert_eq!(still.status, 401, "{policy}: {}", still.summary());
        assert_eq!(still.reason().as_deref(), Some("revoked"), "{policy}");
        assert!(
            worker.log().contains("keeping what is in force"),
            "{policy}: the failed fetch is not logged:\n{}",
            worker.log()
        );
    }
}

/// Usage reports reach the control plane in batches, after the responses.
#[test]
fn workerd_usage_reports_are_batched() {
    let (workerd_bin, bundle) = workerd_tools();
    let ed = TestKey::generate(Alg::EdDSA, "ed-usage");
    let config = json!({
        "issuers": [DEFAULT_ISSUER],
        "audiences": [DEFAULT_AUDIENCE],
        "jwks": jwks(&[&ed]),
        "status": {"lists": status_lists()},
    });
    let stub = ControlStub::start().expect("control stub");
    let upstream = EchoUpstream::start().expect("echo upstream");
    let worker = start(
        &WorkerdOptions::new(
            &workerd_bin,
            &bundle,
            &config,
            Origin::Url(format!("http://{}", upstream.addr())),
        )
        .var("TESSERA_USAGE_URL", &stub.url("/v1/usage"))
        .var("TESSERA_USAGE_TOKEN", "edge-secret")
        .var("TESSERA_USAGE_BATCH", "3")
        .var("TESSERA_USAGE_FLUSH_MS", "600000"),
    );
    let token = TokenBuilder::new(now()).claim("jti", "tok_u").sign(&ed);
    // The first event flushes at once (nothing sent yet); then batches of 3.
    for i in 0..4 {
        let resp = Request::get(&format!("/items/{i}?secret=x"))
            .bearer(&token)
            .header("cf-connecting-ip", "203.0.113.7")
            .send(worker.addr())
            .expect("request");
        assert_eq!(resp.status, 200, "{}", resp.summary());
    }
    // Refusals of a verified token are reported too; a token-less one is not.
    let revoked = TokenBuilder::new(now())
        .claim("jti", "tok_r")
        .status_idx(1)
        .sign(&ed);
    for i in 0..3 {
        let resp = Request::get(&format!("/gone/{i}?q=1"))
            .bearer(&revoked)
            .send(worker.addr())
            .expect("request");
        assert_eq!(resp.reason().as_deref(), Some("revoked"));
    }
    let denied = Request::get("/x").send(worker.addr()).expect("request");
    assert_eq!(denied.status, 401);

    let deadline = Instant::now() + Duration::from_secs(10);
    let events = loop {
        let posts: Vec<_> = stub
            .requests()
            .into_iter()
            .filter(|r| r.method == "POST")
            .collect();
        let events: Vec<Value> = posts
            .iter()
            .flat_map(|r| {
                let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
                v["events"].as_array().cloned().unwrap_or_default()
            })
            .collect();
        if events.len() >= 7 || Instant::now() > deadline {
            for p in &posts {
                assert_eq!(p.path, "/v1/usage");
                assert_eq!(p.header("authorization"), Some("Bearer edge-secret"));
                assert_eq!(p.header("content-type"), Some("application/json"));
            }
            // With usage reports the worker also limits rates (issue 25): the first
            // request asked for a lease in a POST of its own (no events, `spend` naming
            // the token), which this stub's empty answer settles (no leases: nothing is
            // limited); the record batches are as before.
            let with_events = |r: &&tessera_host_tests::workerd::StubRequest| {
                serde_json::from_slice::<Value>(&r.body)
                    .is_ok_and(|v| v["events"].as_array().is_some_and(|e| !e.is_empty()))
            };
            let batches = posts.iter().filter(with_events).count();
            println!(
                "{} usage POSTs ({batches} with records) carried {} events",
                posts.len(),
                events.len()
            );
            assert_eq!(batches, 3, "batches: 1, then 3, then 3");
            for p in posts.iter().filter(|p| !with_events(p)) {
                let v: Value = serde_json::from_slice(&p.body).unwrap_or(Value::Null);
                assert!(
                    v["spend"]["edge"].is_string(),
                    "a POST without records: {v}"
                );
            }
            break events;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(events.len(), 7, "{events:?}");
    for (i, e) in events[..4].iter().enumerate() {
        assert_eq!(e["token_id"], "tok_u");
        assert_eq!(e["outcome"], "allow");
        assert_eq!(e["reason"], Value::Null);
        assert_eq!(e["ip"], "203.0.113.7");
        assert_eq!(e["method"], "GET");
        assert_eq!(e["path"], format!("/items/{i}"), "no query string");
        assert!(e["at"].as_u64().is_some_and(|at| at >= now() - 60));
    }
    for (i, e) in events[4..].iter().enumerate() {
        assert_eq!(e["token_id"], "tok_r");
        assert_eq!(e["outcome"], "deny");
        assert_eq!(e["reason"], "revoked");
        assert_eq!(e["ip"], Value::Null);
        assert_eq!(e["path"], format!("/gone/{i}"));
    }
}

/// The example workerd config (examples/edge-worker/tessera.capnp) runs as it is: copied
/// beside a copy of the bundle at the same relative path, it serves the example
/// configuration (a token-less request gets the filter's 401).
#[test]
fn example_workerd_config_serves() {
    let (workerd_bin, bundle) = workerd_tools();
    let dir = TempDir::new("workerd-example").expect("temp dir");
    let example = dir.path().join("examples/edge-worker");
    let built = dir.path().join("target/wasm/edge-worker");
    std::fs::create_dir_all(&example).expect("mkdir");
    std::fs::create_dir_all(&built).expect("mkdir");
    for file in ["tessera.capnp", "tessera-config.json"] {
        std::fs::copy(
            repo_root().join("examples/edge-worker").join(file),
            example.join(file),
        )
        .expect("copy example");
    }
    for file in workerd::BUNDLE_FILES {
        std::fs::copy(bundle.join(file), built.join(file)).expect("copy bundle");
    }
    let capnp = example.join("tessera.capnp");
    let worker = Workerd::start_config(&workerd_bin, dir, &capnp, "http")
        .unwrap_or_else(|e| panic!("the example config did not start: {e}"));
    let resp = Request::get("/hello").send(worker.addr()).expect("request");
    assert_eq!(resp.status, 401, "{}", resp.summary());
    assert_eq!(resp.reason().as_deref(), Some("token_missing"));
    assert_eq!(
        resp.header("www-authenticate"),
        Some(r#"Bearer realm="tessera""#)
    );
    let resp = Request::get("/hello")
        .bearer("not-a-jwt")
        .send(worker.addr())
        .expect("request");
    assert_eq!(resp.reason().as_deref(), Some("token_malformed"));
}

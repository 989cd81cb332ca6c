//! The Verifier narrows a live token by the withdrawn-scopes document (issue 22): a route
//! needing a scope withdrawn from the token's index is `insufficient_scope`, its other
//! scopes keep working, the identity names only the scopes held, and a refused document
//! keeps the last good one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::json;
use tessera_core::synced::withdrawn_document;
use tessera_core::withdrawn::WithdrawnScopes;
use tessera_core::{Decision, Reason, Request, Verifier};
use tessera_testkit::{
    status_list_lst, Alg, TestKey, TokenBuilder, DEFAULT_AUDIENCE, DEFAULT_ISSUER,
    DEFAULT_STATUS_URI,
};

const NOW: u64 = 1_800_000_000;

fn decide(v: &Verifier, token: &str, path: &str) -> Result<Vec<String>, Reason> {
    let headers = vec![("authorization".to_string(), format!("Bearer {token}"))];
    let req = Request {
        method: "GET",
        path,
        headers: &headers,
        source_address: Some("192.0.2.7:1234"),
    };
    match v.check(&req, NOW, None).decision {
        Decision::Allow(id) => Ok(id.scopes),
        Decision::Deny(d) => Err(d.reason),
    }
}

#[test]
fn a_withdrawn_scope_is_refused_and_the_others_kept() {
    let key = TestKey::generate(Alg::EdDSA, "ed");
    let mut v = Verifier::from_config_json(
        &json!({
            "issuers": [DEFAULT_ISSUER],
            "audiences": [DEFAULT_AUDIENCE],
            "jwks": tessera_testkit::jwks(&[&key]),
            "status": {"lists": [{"uri": DEFAULT_STATUS_URI, "bits": 2, "lst": status_list_lst(&[0; 8])}]},
            "routes": [
                {"path_prefix": "/write", "scopes": ["write"]},
                {"path_prefix": "/read", "scopes": ["read"]}
            ]
        })
        .to_string(),
    )
    .unwrap();
    let token = |idx: u64| {
        TokenBuilder::new(NOW)
            .claim("scope", "read write")
            .status_idx(idx)
            .sign(&key)
    };
    let (t3, t4) = (token(3), token(4));
    assert_eq!(
        decide(&v, &t3, "/write"),
        Ok(vec!["read".into(), "write".into()])
    );

    // `write` withdrawn from index 3, delivered in the status-list document.
    let doc = json!({"bits": 2, "lst": status_list_lst(&[0; 8]),
        "withdrawn": WithdrawnScopes::from_entries([("write", 3)]).to_json()});
    v.set_withdrawn(
        DEFAULT_STATUS_URI,
        withdrawn_document(&doc.to_string()).unwrap(),
    );
    assert_eq!(decide(&v, &t3, "/write"), Err(Reason::InsufficientScope));
    assert_eq!(decide(&v, &t3, "/read"), Ok(vec!["read".into()]));
    assert_eq!(decide(&v, &t3, "/other"), Ok(vec!["read".into()]));
    assert_eq!(
        decide(&v, &t4, "/write"),
        Ok(vec!["read".into(), "write".into()])
    );

    // A bad document is refused by the parser, so the host keeps the last good one.
    for bad in [
        json!({"bits": 2, "lst": "", "withdrawn": {"write": "!!"}}),
        json!({"bits": 2, "lst": "", "withdrawn": []}),
    ] {
        assert!(withdrawn_document(&bad.to_string()).is_err(), "{bad}");
    }
    assert_eq!(decide(&v, &t3, "/write"), Err(Reason::InsufficientScope));

    // Granted again: a document without the member gives it back.
    let doc = json!({"bits": 2, "lst": status_list_lst(&[0; 8])});
    v.set_withdrawn(
        DEFAULT_STATUS_URI,
        withdrawn_document(&doc.to_string()).unwrap(),
    );
    assert_eq!(
        decide(&v, &t3, "/write"),
        Ok(vec!["read".into(), "write".into()])
    );
}

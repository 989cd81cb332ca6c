//! "Refresh needed" (issue 24, item 7): a token whose `kid` no key held has, or whose
//! status index lies beyond the list held, gets an outcome that says which fetch could
//! change it, on both signature paths and on a cache hit; the decision beside it is the
//! stable refusal a host carries out when it cannot fetch; and once the data is there the
//! same token decides with no refresh asked.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{json, Value};
use tessera_core::{
    Decision, Outcome, Reason, Refresh, Request, StatusList, Step, TokenCache, Verifier,
};
use tessera_testkit::{
    jwks, Alg, TestKey, TokenBuilder, DEFAULT_AUDIENCE, DEFAULT_ISSUER, DEFAULT_STATUS_URI,
};

const NOW: u64 = 1_800_000_000;

fn verifier(keys: &[&TestKey], list: &[u8], policy: &str) -> Verifier {
    let c = json!({
        "issuers": [DEFAULT_ISSUER],
        "audiences": [DEFAULT_AUDIENCE],
        "jwks": jwks(keys),
        "status": {
            "fail_policy": policy,
            "lists": [{"uri": DEFAULT_STATUS_URI, "bits": 2,
                       "lst": tessera_testkit::status_list_lst(list)}]
        }
    });
    Verifier::from_config_json(&c.to_string()).unwrap()
}

fn headers(token: &str) -> Vec<(String, String)> {
    vec![("authorization".into(), format!("Bearer {token}"))]
}

fn request(h: &[(String, String)]) -> Request<'_> {
    Request {
        method: "GET",
        path: "/",
        headers: h,
        source_address: None,
    }
}

/// Both signature paths, and a second look through a cache (a hit when the first verified).
fn outcomes(v: &Verifier, token: &str) -> Vec<Outcome> {
    let h = headers(token);
    let req = request(&h);
    let one = v.check(&req, NOW, None);
    let two = match v.begin(&req, NOW, None) {
        Step::Done(o) => o,
        Step::Verify(p) => {
            let ok = v.verify_signature(&p);
            v.finish(p, ok, &req, NOW, None)
        }
    };
    let mut cache = TokenCache::new(8);
    v.check(&req, NOW, Some(&mut cache));
    let three = v.check(&req, NOW, Some(&mut cache));
    vec![one, two, three]
}

fn reason(o: &Outcome) -> Option<Reason> {
    o.decision.reason()
}

#[test]
fn an_unknown_kid_asks_for_the_keys_and_is_key_unknown_meanwhile() {
    let held = TestKey::generate(Alg::EdDSA, "held");
    let rotated = TestKey::generate(Alg::EdDSA, "rotated");
    let v = verifier(&[&held], &[0, 0, 0, 0], "closed");
    let token = TokenBuilder::new(NOW).status_idx(0).sign(&rotated);
    for o in outcomes(&v, &token) {
        assert_eq!(reason(&o), Some(Reason::KeyUnknown));
        assert_eq!(o.refresh, Some(Refresh::Keys));
        assert_eq!(o.subject, None, "no trustworthy id before the signature");
        // What a host carries out when it cannot wait: the stable refusal.
        let settled = o.settled();
        assert_eq!(settled.refresh, None);
        assert_eq!(reason(&settled), Some(Reason::KeyUnknown));
    }
    // With the rotated key fetched, the same token passes and asks for nothing.
    let v = verifier(&[&held, &rotated], &[0, 0, 0, 0], "closed");
    for o in outcomes(&v, &token) {
        assert!(matches!(o.decision, Decision::Allow(_)), "{o:?}");
        assert_eq!(o.refresh, None);
    }
}

#[test]
fn a_token_without_a_kid_or_with_a_bad_one_asks_for_nothing() {
    let held = TestKey::generate(Alg::EdDSA, "held");
    let v = verifier(&[&held], &[0, 0, 0, 0], "closed");
    for (name, kid) in [("no kid", None), ("a number", Some(json!(7)))] {
        let mut b = TokenBuilder::new(NOW).status_idx(0);
        b = match kid {
            None => b.remove_header("kid"),
            Some(k) => b.header("kid", k),
        };
        let token = b.sign(&held);
        for o in outcomes(&v, &token) {
            assert_eq!(o.refresh, None, "{name}: {o:?}");
            assert!(o.decision.reason().is_some(), "{name}: refused");
        }
    }
    // Refused before the key is looked up (malformed, alg none): nothing to fetch.
    for token in [
        "a.b".to_owned(),
        TokenBuilder::new(NOW).unsigned(),
        TokenBuilder::new(NOW)
            .header("kid", Value::from("forged"))
            .with_signature("none", &[]),
    ] {
        for o in outcomes(&v, &token) {
            assert_eq!(o.refresh, None, "{token}: {o:?}");
        }
    }
}

#[test]
fn an_index_beyond_the_list_asks_for_that_list() {
    let key = TestKey::generate(Alg::EdDSA, "k");
    // Four entries held: index 4 was minted after this list was fetched.
    let list = [0u8, 1, 0, 0];
    let want = Some(Refresh::StatusList {
        uri: DEFAULT_STATUS_URI.into(),
    });
    let fresh = TokenBuilder::new(NOW).status_idx(4).sign(&key);
    let forged = TokenBuilder::new(NOW).status_idx(u64::MAX).sign(&key);

    let closed = verifier(&[&key], &list, "closed");
    for token in [&fresh, &forged] {
        for o in outcomes(&closed, token) {
            assert_eq!(reason(&o), Some(Reason::StatusUnavailable));
            assert_eq!(o.refresh, want);
            assert!(o.subject.is_some(), "verified: usage can name it");
        }
    }
    // Fail open: allowed as unknown meanwhile, and still a refresh is asked for (the
    // token may have been revoked since it was minted).
    let open = verifier(&[&key], &list, "open");
    for o in outcomes(&open, &fresh) {
        match &o.decision {
            Decision::Allow(id) => assert!(id.status_fail_open),
            d => panic!("{d:?}"),
        }
        assert_eq!(o.refresh, want);
    }
    // Within the list (revoked, valid): nothing to fetch.
    let revoked = TokenBuilder::new(NOW).status_idx(1).sign(&key);
    for o in outcomes(&closed, &revoked) {
        assert_eq!(reason(&o), Some(Reason::Revoked));
        assert_eq!(o.refresh, None);
    }
    // The fetched list holds the index: decided, nothing asked. The forged one still is.
    let mut v = closed.clone();
    v.set_status_list(DEFAULT_STATUS_URI, StatusList::new(8));
    for o in outcomes(&v, &fresh) {
        assert!(matches!(o.decision, Decision::Allow(_)), "{o:?}");
        assert_eq!(o.refresh, None);
    }
    for o in outcomes(&v, &forged) {
        assert_eq!(o.refresh, want);
    }
}

#[test]
fn a_list_not_held_at_all_asks_for_nothing() {
    let key = TestKey::generate(Alg::EdDSA, "k");
    let v = verifier(&[&key], &[0, 0, 0, 0], "closed");
    let token = TokenBuilder::new(NOW)
        .status(0, "https://elsewhere.example/status")
        .sign(&key);
    for o in outcomes(&v, &token) {
        assert_eq!(reason(&o), Some(Reason::StatusUnavailable));
        assert_eq!(
            o.refresh, None,
            "no fetch of ours holds another issuer's list"
        );
    }
}

#[test]
fn an_expired_token_beyond_the_list_asks_for_nothing() {
    // Time is checked before status: no list can make an expired token pass.
    let key = TestKey::generate(Alg::EdDSA, "k");
    let v = verifier(&[&key], &[0, 0, 0, 0], "closed");
    let token = TokenBuilder::new(NOW - 100_000).status_idx(9).sign(&key);
    for o in outcomes(&v, &token) {
        assert_eq!(reason(&o), Some(Reason::Expired));
        assert_eq!(o.refresh, None);
    }
}

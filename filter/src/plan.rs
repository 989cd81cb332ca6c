//! Turns a core [`Outcome`] into the header edits or local reply the host must perform.
//! Kept free of host calls so the translation is unit-tested natively.

use tessera_core::config::Config;
use tessera_core::{Decision, Outcome};

/// What to do with the request.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// Forward after editing headers: remove every value of `remove`, then add `add`.
    Forward {
        /// Header names to remove (all values): the identity headers the client sent, and
        /// the token's header when it is not forwarded.
        remove: Vec<String>,
        /// Headers to add.
        add: Vec<(String, String)>,
    },
    /// Answer locally.
    Reply {
        /// HTTP status.
        status: u32,
        /// Response headers.
        headers: Vec<(&'static str, String)>,
        /// Response body.
        body: String,
    },
}

/// Keeps a value that came from a signed token safe to put in a header: control
/// characters cannot appear (core refuses such claims), but a host must never be handed
/// a header that could split a request, so they are dropped here too.
fn header_safe(v: &str) -> String {
    v.chars().filter(|c| !c.is_control()).collect()
}

/// Plans the host actions for `outcome` on a request with `headers`. Identity headers
/// are only removed when the request carries them (one host call each saved per request
/// otherwise); ours are then added, so exactly our values reach the upstream.
pub fn plan(config: &Config, outcome: &Outcome, headers: &[(String, String)]) -> Plan {
    match &outcome.decision {
        Decision::Allow(id) => {
            let h = &config.identity_headers;
            let sent = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
            let mut remove: Vec<String> = h
                .all()
                .iter()
                .filter(|name| sent(name))
                .map(|s| s.to_string())
                .collect();
            if !config.forward_token {
                if let Some(t) = &outcome.token_header {
                    remove.push(t.clone());
                }
            }
            let add = vec![
                (h.user.clone(), header_safe(&id.user)),
                (h.org.clone(), header_safe(&id.org)),
                (h.token_id.clone(), header_safe(&id.token_id)),
                (h.scopes.clone(), header_safe(&id.scopes.join(" "))),
            ];
            Plan::Forward { remove, add }
        }
        Decision::Deny(d) => {
            let mut headers = vec![
                ("content-type", "application/json".to_string()),
                ("cache-control", "no-store".to_string()),
            ];
            if let Some(w) = &d.www_authenticate {
                headers.push(("www-authenticate", w.clone()));
            }
            Plan::Reply {
                status: u32::from(d.status),
                headers,
                body: d.body(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_core::{CacheUse, Deny, Identity, Reason};

    fn config(extra: &str) -> Config {
        let key = tessera_testkit::TestKey::generate(tessera_testkit::Alg::EdDSA, "k");
        let jwks = tessera_testkit::jwks(&[&key]);
        let json = format!(r#"{{"issuers":["i"],"audiences":["a"],"jwks":{jwks}{extra}}}"#);
        Config::from_json(&json).unwrap()
    }

    fn allow(token_header: Option<&str>) -> Outcome {
        Outcome {
            decision: Decision::Allow(Identity {
                user: "alice\r\nx-evil: 1".into(),
                org: "acme".into(),
                token_id: "tok_1".into(),
                scopes: vec!["read".into(), "write".into()],
                token_type: "tessera-api+jwt".into(),
                parent: None,
                expires_at: 0,
                status_fail_open: false,
            }),
            token_header: token_header.map(str::to_string),
            cache: CacheUse::Miss,
            subject: None,
        }
    }

    fn sent(names: &[&str]) -> Vec<(String, String)> {
        names
            .iter()
            .map(|n| ((*n).to_owned(), "spoofed".to_owned()))
            .collect()
    }

    #[test]
    fn allow_strips_then_adds_identity() {
        let c = config("");
        let spoofed = sent(&[
            ":path",
            "x-tessera-user",
            "X-Tessera-Org",
            "x-tessera-token-id",
            "x-tessera-scopes",
            "x-tessera-user",
        ]);
        let p = plan(&c, &allow(Some("authorization")), &spoofed);
        assert_eq!(
            p,
            Plan::Forward {
                remove: vec![
                    "x-tessera-user".into(),
                    "x-tessera-org".into(),
                    "x-tessera-token-id".into(),
                    "x-tessera-scopes".into()
                ],
                add: vec![
                    ("x-tessera-user".into(), "alicex-evil: 1".into()),
                    ("x-tessera-org".into(), "acme".into()),
                    ("x-tessera-token-id".into(), "tok_1".into()),
                    ("x-tessera-scopes".into(), "read write".into()),
                ],
            }
        );
    }

    #[test]
    fn only_sent_identity_headers_are_removed() {
        let c = config("");
        match plan(&c, &allow(None), &sent(&[":path", "x-tessera-org"])) {
            Plan::Forward { remove, add } => {
                assert_eq!(remove, vec!["x-tessera-org".to_string()]);
                assert_eq!(add.len(), 4);
            }
            other => panic!("{other:?}"),
        }
        match plan(&c, &allow(None), &sent(&[":path"])) {
            Plan::Forward { remove, .. } => assert!(remove.is_empty()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn token_removed_when_not_forwarded() {
        let c = config(r#","forward_token":false"#);
        match plan(&c, &allow(Some("csp-auth-token")), &[]) {
            Plan::Forward { remove, .. } => assert!(remove.contains(&"csp-auth-token".to_string())),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn deny_replies_with_challenge_and_body() {
        let c = config("");
        let o = Outcome {
            decision: Decision::Deny(Deny::new(Reason::Expired, "tessera", &[])),
            token_header: None,
            cache: CacheUse::Miss,
            subject: None,
        };
        assert_eq!(
            plan(&c, &o, &[]),
            Plan::Reply {
                status: 401,
                headers: vec![
                    ("content-type", "application/json".into()),
                    ("cache-control", "no-store".into()),
                    (
                        "www-authenticate",
                        "Bearer realm=\"tessera\", error=\"invalid_token\"".into()
                    ),
                ],
                body: "{\"error\":\"invalid_token\",\"reason\":\"expired\"}".into(),
            }
        );
    }
}

//! What a host does with an [`Outcome`]: the one plan every host (the Envoy filter, the
//! edge worker) carries out with its own calls, so the hosts cannot drift apart.
//!
//! - a refusal is a [`Reply`]: status, headers (RFC 6750 `WWW-Authenticate`,
//!   `cache-control: no-store`) and the JSON body;
//! - an allowed request gets the identity headers that are sent (`identity_headers`)
//!   *set*: every value the client sent under those names is replaced by ours, so exactly
//!   our values reach the upstream (one rule, one host call per header whether or not the
//!   client sent it); every identity header *not* sent (turned off, or the username of a
//!   token without one) is *removed*, so a client can never speak under an identity
//!   header's name; and the token's header is removed when it is not forwarded;
//! - a decision about a verified token becomes one [`UsageRecord`], the wire type every
//!   host reports to the control plane.

use std::borrow::Cow;
use std::net::IpAddr;

use serde::Deserialize;

use crate::config::Config;
use crate::decision::{Decision, Reason};
use crate::{Outcome, Request};

/// What to do with the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Forward after editing headers.
    Forward {
        /// Headers to set, replacing every value the request carries under that name.
        set: Vec<(String, String)>,
        /// Header names to remove (all values): the token's header when not forwarded, and
        /// the identity headers not sent (turned off, or without a value for this token).
        remove: Vec<String>,
    },
    /// Answer locally.
    Reply(Reply),
}

/// A local reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: Vec<(&'static str, String)>,
    /// Response body: `{"error": <RFC 6750 code>, "reason": <stable reason>}`.
    pub body: String,
    /// The stable reason code.
    pub reason: Reason,
}

/// Keeps a value that came from a signed token safe to put in a header: control
/// characters cannot appear (core refuses such claims), but a host must never be handed
/// a header that could split a request, so they are dropped here too.
fn header_safe(v: &str) -> String {
    v.chars().filter(|c| !c.is_control()).collect()
}

/// The plan for `outcome` under `config`.
pub fn plan(config: &Config, outcome: &Outcome) -> Plan {
    match &outcome.decision {
        Decision::Allow(id) => {
            let h = &config.identity_headers;
            let scopes = id.scopes.join(" ");
            let values = [
                Some(id.user.as_str()),
                id.username.as_deref(),
                Some(id.org.as_str()),
                Some(id.token_id.as_str()),
                Some(scopes.as_str()),
            ];
            let mut set = Vec::with_capacity(values.len());
            let mut remove = match (&outcome.token_header, config.forward_token) {
                (Some(t), false) => vec![t.clone()],
                _ => Vec::new(),
            };
            for ((_, header), value) in h.all().into_iter().zip(values) {
                match (header.send, value) {
                    (true, Some(v)) => set.push((header.name.clone(), header_safe(v))),
                    // Sent, but this token has no value (a username minted before the
                    // claim existed): the client's copy must not pass for ours.
                    (true, None) => remove.push(header.name.clone()),
                    (false, _) => {}
                }
            }
            // The headers not sent: whatever the client put under their names goes too.
            remove.extend(h.strip().into_iter().map(str::to_string));
            Plan::Forward { set, remove }
        }
        Decision::Deny(d) => {
            let mut headers = vec![
                ("content-type", "application/json".to_string()),
                ("cache-control", "no-store".to_string()),
            ];
            if let Some(w) = &d.www_authenticate {
                headers.push(("www-authenticate", w.clone()));
            }
            Plan::Reply(Reply {
                status: d.status,
                headers,
                body: d.body(),
                reason: d.reason,
            })
        }
    }
}

/// Allowed or refused, as usage reports say it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum UsageOutcome {
    /// `"allow"`.
    Allow,
    /// `"deny"`.
    Deny,
}

impl UsageOutcome {
    /// The wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            UsageOutcome::Allow => "allow",
            UsageOutcome::Deny => "deny",
        }
    }
}

/// The reason a usage record gives for an allow that only passed because the token's
/// status was unknown and the fail policy is open.
pub const STATUS_FAIL_OPEN: &str = "status_fail_open";

/// The longest path a usage record carries (the control plane's limit), in bytes.
pub const MAX_USAGE_PATH: usize = 2048;

/// One decision about a verified token, as the control plane's `POST /v1/usage` takes it
/// (`{"events": [record...]}`, [`UsageBatch`]). The filter and the edge worker write
/// exactly this ([`UsageRecord::write_json`]), and the control plane's ingest reads it with
/// this same type's `Deserialize`: one wire type for all three.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UsageRecord {
    /// `jti`.
    pub token_id: String,
    /// `parent`, for exchanged access tokens.
    #[serde(default)]
    pub parent: Option<String>,
    /// Unix seconds.
    pub at: u64,
    /// The client address the decision used, if known.
    #[serde(default)]
    pub ip: Option<String>,
    /// Allow or deny.
    pub outcome: UsageOutcome,
    /// The reason code of a refusal, or [`STATUS_FAIL_OPEN`] for a fail-open allow.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schema(value_type = Option<String>))]
    pub reason: Option<Cow<'static, str>>,
    /// HTTP method.
    pub method: String,
    /// Request path, without the query string (it may carry secrets), at most
    /// [`MAX_USAGE_PATH`] bytes.
    pub path: String,
}

/// A batch of usage records: the body of `POST /v1/usage` ([`UsageRecord::batch_json`]
/// writes it).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UsageBatch {
    /// The records, oldest first.
    pub events: Vec<UsageRecord>,
    /// What the edge spent of its rate-limit leases (`ratelimit`); the answer carries
    /// its next leases.
    #[serde(default)]
    pub spend: Option<crate::ratelimit::SpendReport>,
}

impl UsageRecord {
    /// The record for `outcome` on `req` at `now`; `None` when no token's signature
    /// verified (a token refused before that has no trustworthy id). `client` is the
    /// address the host resolved ([`crate::Verifier::client_address`]).
    pub fn of(
        outcome: &Outcome,
        req: &Request<'_>,
        client: Option<IpAddr>,
        now: u64,
    ) -> Option<UsageRecord> {
        let subject = outcome.subject.as_ref()?;
        let (result, reason) = match &outcome.decision {
            Decision::Allow(id) => (
                UsageOutcome::Allow,
                id.status_fail_open
                    .then_some(Cow::Borrowed(STATUS_FAIL_OPEN)),
            ),
            Decision::Deny(d) => (UsageOutcome::Deny, Some(Cow::Borrowed(d.reason.as_str()))),
        };
        let path = req.path.split('?').next().unwrap_or("");
        let mut end = path.len().min(MAX_USAGE_PATH);
        while !path.is_char_boundary(end) {
            end -= 1;
        }
        Some(UsageRecord {
            token_id: subject.token_id.clone(),
            parent: subject.parent.clone(),
            at: now,
            ip: client.map(|ip| ip.to_string()),
            outcome: result,
            reason,
            method: req.method.to_string(),
            path: path[..end].to_string(),
        })
    }

    /// Appends the JSON form (absent options are left out).
    // Written by hand: the filter module otherwise needs no JSON serializer, and
    // serde_json's would add tens of kilobytes to it.
    pub fn write_json(&self, out: &mut String) {
        out.push_str("{\"token_id\":");
        json_str(out, &self.token_id);
        if let Some(p) = &self.parent {
            out.push_str(",\"parent\":");
            json_str(out, p);
        }
        out.push_str(",\"at\":");
        out.push_str(&self.at.to_string());
        if let Some(ip) = &self.ip {
            out.push_str(",\"ip\":");
            json_str(out, ip);
        }
        out.push_str(",\"outcome\":");
        json_str(out, self.outcome.as_str());
        if let Some(r) = &self.reason {
            out.push_str(",\"reason\":");
            json_str(out, r);
        }
        out.push_str(",\"method\":");
        json_str(out, &self.method);
        out.push_str(",\"path\":");
        json_str(out, &self.path);
        out.push('}');
    }

    /// A batch as `POST /v1/usage` takes it: `{"events":[...]}`.
    pub fn batch_json(records: &[UsageRecord]) -> String {
        UsageRecord::batch_json_with(records, None)
    }

    /// [`UsageRecord::batch_json`] with the edge's rate-limit `spend` (the answer then
    /// carries its leases).
    pub fn batch_json_with(
        records: &[UsageRecord],
        spend: Option<&crate::ratelimit::SpendReport>,
    ) -> String {
        let mut out = String::from("{\"events\":[");
        for (i, r) in records.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            r.write_json(&mut out);
        }
        out.push(']');
        if let Some(spend) = spend {
            out.push_str(",\"spend\":");
            spend.write_json(&mut out);
        }
        out.push('}');
        out
    }
}

/// Appends `s` as a JSON string literal.
pub(crate) fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::{Deny, Identity};
    use crate::{CacheUse, Subject};

    fn config(extra: &str) -> Config {
        let key = tessera_testkit::TestKey::generate(tessera_testkit::Alg::EdDSA, "k");
        let jwks = tessera_testkit::jwks(&[&key]);
        let json = format!(r#"{{"issuers":["i"],"audiences":["a"],"jwks":{jwks}{extra}}}"#);
        match Config::from_json(&json) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    fn allow(token_header: Option<&str>, fail_open: bool) -> Outcome {
        Outcome {
            decision: Decision::Allow(Identity {
                user: "alice\r\nx-evil: 1".into(),
                username: Some("alice.smith".into()),
                org: "acme".into(),
                token_id: "tok_1".into(),
                scopes: vec!["read".into(), "write".into()],
                token_type: "tessera-api+jwt".into(),
                parent: None,
                expires_at: 0,
                status_fail_open: fail_open,
            }),
            token_header: token_header.map(str::to_string),
            cache: CacheUse::Miss,
            subject: Some(Subject {
                token_id: "tok_1".into(),
                org: "acme".into(),
                parent: Some("tok_0".into()),
            }),
            refresh: None,
        }
    }

    fn deny(reason: Reason) -> Outcome {
        Outcome {
            decision: Decision::Deny(Deny::new(reason, "tessera", &[])),
            token_header: None,
            cache: CacheUse::Miss,
            subject: None,
            refresh: None,
        }
    }

    #[test]
    fn allow_sets_identity_and_keeps_the_token() {
        let p = plan(&config(""), &allow(Some("authorization"), false));
        assert_eq!(
            p,
            Plan::Forward {
                set: vec![
                    ("x-tessera-user".into(), "alicex-evil: 1".into()),
                    ("x-tessera-org".into(), "acme".into()),
                    ("x-tessera-token-id".into(), "tok_1".into()),
                    ("x-tessera-scopes".into(), "read write".into()),
                ],
                // The username is not sent by default: the client's copy is removed.
                remove: vec!["x-tessera-username".into()],
            }
        );
    }

    #[test]
    fn token_removed_when_not_forwarded() {
        let c = config(r#","forward_token":false"#);
        match plan(&c, &allow(Some("csp-auth-token"), false)) {
            Plan::Forward { remove, .. } => assert_eq!(
                remove,
                vec!["csp-auth-token".to_string(), "x-tessera-username".into()]
            ),
            other => panic!("{other:?}"),
        }
    }

    fn forward(p: Plan) -> (Vec<(String, String)>, Vec<String>) {
        match p {
            Plan::Forward { set, remove } => (set, remove),
            other => panic!("{other:?}"),
        }
    }

    fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    /// Some headers off, some renamed, the username on: exactly the sent ones are set, in
    /// the documented order, and every other identity name is removed once.
    #[test]
    fn configured_identity_headers_set_what_is_sent_and_strip_the_rest() {
        let c = config(
            r#","identity_headers":{"user":false,"username":"X-Who","org":{"header":"x-tenant","send":false},"token_id":"x-token","scopes":{"send":false}}"#,
        );
        let (set, remove) = forward(plan(&c, &allow(None, false)));
        assert_eq!(
            set,
            owned(&[("x-who", "alice.smith"), ("x-token", "tok_1")])
        );
        assert_eq!(remove, ["x-tessera-user", "x-tenant", "x-tessera-scopes"]);

        // A token without a username sends none, and the client's copy still goes.
        let mut old = allow(None, false);
        if let Decision::Allow(id) = &mut old.decision {
            id.username = None;
        }
        let (set, remove) = forward(plan(&c, &old));
        assert_eq!(set, owned(&[("x-token", "tok_1")]));
        assert_eq!(
            remove,
            ["x-who", "x-tessera-user", "x-tenant", "x-tessera-scopes"]
        );

        // The username under the user's default name, the user id off: one header, set,
        // never also removed.
        let c = config(r#","identity_headers":{"user":false,"username":"x-tessera-user"}"#);
        let (set, remove) = forward(plan(&c, &allow(None, false)));
        assert_eq!(
            set,
            owned(&[
                ("x-tessera-user", "alice.smith"),
                ("x-tessera-org", "acme"),
                ("x-tessera-token-id", "tok_1"),
                ("x-tessera-scopes", "read write"),
            ])
        );
        assert!(remove.is_empty(), "{remove:?}");
    }

    /// A refusal touches no header: the request does not go upstream.
    #[test]
    fn a_refusal_sets_and_strips_nothing() {
        let c = config(r#","identity_headers":{"username":true,"org":false}"#);
        assert!(matches!(plan(&c, &deny(Reason::Expired)), Plan::Reply(_)));
    }

    #[test]
    fn deny_replies_with_challenge_and_body() {
        assert_eq!(
            plan(&config(""), &deny(Reason::Expired)),
            Plan::Reply(Reply {
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
                reason: Reason::Expired,
            })
        );
        match plan(&config(""), &deny(Reason::StatusUnavailable)) {
            Plan::Reply(r) => {
                assert_eq!(r.status, 503);
                assert!(r.headers.iter().all(|(n, _)| *n != "www-authenticate"));
            }
            other => panic!("{other:?}"),
        }
    }

    fn request<'a>(path: &'a str, headers: &'a [(String, String)]) -> Request<'a> {
        Request {
            method: "GET",
            path,
            headers,
            source_address: None,
        }
    }

    #[test]
    fn usage_records() {
        let ip: Option<IpAddr> = "192.0.2.7".parse().ok();
        let r = UsageRecord::of(
            &allow(None, true),
            &request("/a/b?secret=1", &[]),
            ip,
            1_700_000_000,
        );
        let Some(r) = r else {
            panic!("a verified token has a record")
        };
        let mut json = String::new();
        r.write_json(&mut json);
        assert_eq!(
            json,
            "{\"token_id\":\"tok_1\",\"parent\":\"tok_0\",\"at\":1700000000,\
             \"ip\":\"192.0.2.7\",\"outcome\":\"allow\",\"reason\":\"status_fail_open\",\
             \"method\":\"GET\",\"path\":\"/a/b\"}"
        );
        // A refusal before the signature verified reports nothing.
        assert!(UsageRecord::of(&deny(Reason::Expired), &request("/", &[]), None, 0).is_none());
        // A refusal of a verified token carries its reason.
        let mut revoked = allow(None, false);
        revoked.decision = Decision::Deny(Deny::new(Reason::Revoked, "r", &[]));
        let r = UsageRecord::of(&revoked, &request("/", &[]), None, 0);
        assert_eq!(
            r.map(|r| (r.outcome, r.reason)),
            Some((UsageOutcome::Deny, Some(Cow::Borrowed("revoked"))))
        );
    }

    #[test]
    fn usage_path_is_bounded_at_a_char_boundary() {
        let long = format!("/{}", "é".repeat(3000));
        let r = UsageRecord::of(&allow(None, false), &request(&long, &[]), None, 0);
        let Some(r) = r else { panic!("record") };
        assert!(r.path.len() <= MAX_USAGE_PATH && r.path.len() >= MAX_USAGE_PATH - 1);
    }

    #[test]
    fn usage_json_escapes() {
        let mut out = String::new();
        json_str(&mut out, "a\"b\\c\u{1}\u{7f}é");
        assert_eq!(out, "\"a\\\"b\\\\c\\u0001\\u007fé\"");
        let batch = UsageRecord::batch_json(&[]);
        assert_eq!(batch, "{\"events\":[]}");
    }

    /// What the hosts write is what the ingest reads: every record shape survives
    /// `write_json` → `Deserialize` unchanged, and the reader refuses what no host writes.
    #[test]
    fn usage_records_read_back_as_written() {
        let record = |outcome, reason: Option<&'static str>| UsageRecord {
            token_id: "tok_1".into(),
            parent: None,
            at: 1_800_000_000,
            ip: None,
            outcome,
            reason: reason.map(Cow::Borrowed),
            method: "GET".into(),
            path: "/".into(),
        };
        let mut full = record(UsageOutcome::Allow, None);
        full.parent = Some("tok_0".into());
        full.ip = Some("2001:db8::7".into());
        full.path = "/caf\u{e9}/\"q\"\\x\u{1}\u{7f}".into();
        let records = vec![
            full,
            record(UsageOutcome::Allow, Some(STATUS_FAIL_OPEN)),
            record(UsageOutcome::Deny, Some(Reason::Revoked.as_str())),
            record(UsageOutcome::Deny, Some(Reason::InsufficientScope.as_str())),
        ];
        let json = UsageRecord::batch_json(&records);
        let read: UsageBatch = match serde_json::from_str(&json) {
            Ok(b) => b,
            Err(e) => panic!("{json}: {e}"),
        };
        assert_eq!(read.events, records);
        for bad in [
            r#"{"events":[{"token_id":"t","at":1,"outcome":"maybe","method":"GET","path":"/"}]}"#,
            r#"{"events":[{"token_id":"t","at":-1,"outcome":"allow","method":"GET","path":"/"}]}"#,
            r#"{"events":[{"token_id":"t","at":"2030-01-01","outcome":"allow","method":"GET","path":"/"}]}"#,
            r#"{"events":[{"token_id":"t","at":1,"outcome":"allow","path":"/"}]}"#,
            r#"{"events":[{"token_id":"t","at":1,"outcome":"allow","method":"GET","path":"/","x":1}]}"#,
            r#"{"events":[],"more":[]}"#,
        ] {
            assert!(serde_json::from_str::<UsageBatch>(bad).is_err(), "{bad}");
        }
    }
}

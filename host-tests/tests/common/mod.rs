//! The scenario table machinery shared by the scenario tests: a [`Case`] says what to
//! send and what must come back; [`run_table`] sends every case and reports every
//! mismatch at once.

#![allow(dead_code)]

use std::fmt::Write as _;

use tessera_host_tests::{Envoy, Request};

/// `WWW-Authenticate` expectations.
#[derive(Clone, Debug)]
pub enum Www {
    /// Exactly this value, once.
    Exact(String),
    /// Absent, or present without an `error` parameter.
    NoErrorParam,
    /// Not checked.
    Ignore,
}

impl Www {
    /// `Bearer realm="tessera"` (no error: no credentials were sent).
    pub fn challenge() -> Www {
        Www::Exact(r#"Bearer realm="tessera""#.into())
    }

    /// `Bearer realm="tessera", error="<error>"`.
    pub fn error(error: &str) -> Www {
        Www::Exact(format!(r#"Bearer realm="tessera", error="{error}""#))
    }

    /// `Bearer realm="tessera", error="invalid_token"`.
    pub fn invalid_token() -> Www {
        Www::error("invalid_token")
    }

    /// `Bearer realm="tessera", error="insufficient_scope", scope="<scope>"`.
    pub fn insufficient_scope(scope: &str) -> Www {
        Www::Exact(format!(
            r#"Bearer realm="tessera", error="insufficient_scope", scope="{scope}""#
        ))
    }
}

/// Which listener a case is sent to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    V4,
    V6,
}

/// One row of a scenario table.
#[derive(Clone, Debug)]
pub struct Case {
    pub name: String,
    pub request: Request,
    pub via: Via,
    pub status: u16,
    /// `None`: the request must be allowed and reach the upstream.
    pub reason: Option<&'static str>,
    pub www: Www,
    /// Request headers the upstream must have received with exactly these values (an
    /// empty list: the header must not have reached it).
    pub upstream: Vec<(&'static str, Vec<String>)>,
}

/// The identity the default test token carries.
pub const ALICE: [&str; 4] = ["alice", "acme", "tok_1", "read"];

impl Case {
    /// An allowed request whose upstream must see `identity` = `[user, org, token_id,
    /// scopes]` in the default identity headers, each exactly once.
    pub fn allow(name: &str, request: Request, identity: [&str; 4]) -> Case {
        let names = [
            "x-tessera-user",
            "x-tessera-org",
            "x-tessera-token-id",
            "x-tessera-scopes",
        ];
        Case {
            name: name.to_owned(),
            request,
            via: Via::V4,
            status: 200,
            reason: None,
            www: Www::Ignore,
            upstream: names
                .iter()
                .zip(identity)
                .map(|(n, v)| (*n, vec![v.to_owned()]))
                .collect(),
        }
    }

    /// A denied request.
    pub fn deny(name: &str, request: Request, status: u16, reason: &'static str, www: Www) -> Case {
        Case {
            name: name.to_owned(),
            request,
            via: Via::V4,
            status,
            reason: Some(reason),
            www,
            upstream: Vec::new(),
        }
    }

    /// `401 <reason>` with `error="invalid_token"`.
    pub fn invalid(name: &str, request: Request, reason: &'static str) -> Case {
        Case::deny(name, request, 401, reason, Www::invalid_token())
    }

    /// Also requires the upstream to have received `header` with exactly `values`.
    pub fn upstream(mut self, header: &'static str, values: &[&str]) -> Case {
        self.upstream.retain(|(h, _)| *h != header);
        self.upstream
            .push((header, values.iter().map(|v| (*v).to_owned()).collect()));
        self
    }

    /// Sends the case to the IPv6 listener.
    pub fn via(mut self, via: Via) -> Case {
        self.via = via;
        self
    }
}

/// What the filter decided for one request, as seen from outside: `Allow` (the request
/// reached the upstream) or `Deny(reason)` from the deny body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Allow,
    Deny(String),
    Other,
}

/// Sends one case and compares. Returns what happened, and `Err` describing every
/// mismatch.
pub fn check(envoy: &Envoy, case: &Case) -> (Outcome, Result<(), String>) {
    let (outcome, result) = check_inner(envoy, case);
    (outcome.unwrap_or(Outcome::Other), result)
}

fn check_inner(envoy: &Envoy, case: &Case) -> (Option<Outcome>, Result<(), String>) {
    let to = match case.via {
        Via::V4 => envoy.addr(),
        Via::V6 => match envoy.addr_v6() {
            Some(a) => a,
            None => return (None, Err("this Envoy has no IPv6 listener".into())),
        },
    };
    let resp = match case.request.send(to) {
        Ok(r) => r,
        Err(e) => return (None, Err(format!("request failed: {e}"))),
    };
    let outcome = match (resp.upstream(), resp.reason()) {
        (Some(_), _) => Some(Outcome::Allow),
        (None, Some(reason)) => Some(Outcome::Deny(reason)),
        _ => None,
    };
    let mut problems = Vec::new();
    if resp.status != case.status {
        problems.push(format!("status {} (want {})", resp.status, case.status));
    }
    match case.reason {
        Some(reason) => {
            if resp.upstream().is_some() {
                problems.push("the request reached the upstream".into());
            }
            if resp.reason().as_deref() != Some(reason) {
                problems.push(format!("reason {:?} (want {reason:?})", resp.reason()));
            }
            if resp.error().is_none() {
                problems.push("deny body has no \"error\" member".into());
            }
            let ct = resp.header("content-type").unwrap_or_default();
            if !ct.starts_with("application/json") {
                problems.push(format!("content-type {ct:?} (want application/json)"));
            }
        }
        None => {
            if resp.upstream().is_none() {
                problems.push("the request did not reach the upstream".into());
            }
        }
    }
    let www = resp.header_all("www-authenticate");
    match &case.www {
        Www::Exact(want) => {
            if www != [want.as_str()] {
                problems.push(format!("www-authenticate {www:?} (want [{want:?}])"));
            }
        }
        Www::NoErrorParam => {
            if www.iter().any(|v| v.contains("error=")) {
                problems.push(format!(
                    "www-authenticate {www:?} (want no error parameter)"
                ));
            }
        }
        Www::Ignore => {}
    }
    for (header, want) in &case.upstream {
        let got = resp.upstream_header(header);
        if &got != want {
            problems.push(format!("upstream {header}: {got:?} (want {want:?})"));
        }
    }
    let result = if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{} | got: {}", problems.join("; "), resp.summary()))
    };
    (outcome, result)
}

/// Runs every case, prints one line per case and returns one line per failed case and
/// the outcome of every request.
pub fn run_table(label: &str, envoy: &Envoy, cases: &[Case]) -> (Vec<String>, Vec<Outcome>) {
    let mut failed = Vec::new();
    let mut outcomes = Vec::new();
    for case in cases {
        let (outcome, result) = check(envoy, case);
        outcomes.push(outcome);
        match result {
            Ok(()) => println!("[{label}] ok   {}", case.name),
            Err(e) => {
                println!("[{label}] FAIL {}: {e}", case.name);
                failed.push(format!("[{label}] {}: {e}", case.name));
            }
        }
    }
    println!(
        "[{label}] {} of {} scenarios as expected",
        cases.len() - failed.len(),
        cases.len()
    );
    (failed, outcomes)
}

/// Panics listing `failures` (if any).
pub fn finish(failures: &[String]) {
    if !failures.is_empty() {
        let mut msg = format!("{} check(s) failed:\n", failures.len());
        for f in failures {
            let _ = writeln!(msg, "  - {f}");
        }
        panic!("{msg}");
    }
}

//! The sync service: one per Envoy process (a singleton `envoy.bootstrap.wasm` service),
//! it long-polls the control plane's status-list change feed and refreshes the JWKS, and
//! publishes both to shared data (see [`crate::shared`]) for the filter's worker VMs.
//!
//! The state machine is kept free of host calls ([`Poller`]); [`crate::SyncRoot`] wires
//! it to `dispatch_http_call`, ticks and shared data.

use std::collections::HashMap;

use serde_json::Value;
use tessera_core::config::ConfigError;
use tessera_core::jwks::KeySet;
use tessera_core::StatusList;

use crate::shared::{Meta, PublishedList, State};

/// How long past `poll_wait_secs` an open long poll still counts as live.
pub const POLL_GRACE_SECS: u64 = 2;

/// The sync service's validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncServiceConfig {
    /// Envoy cluster that reaches the control plane.
    pub cluster: String,
    /// `:authority` sent with each call.
    pub authority: String,
    /// Status list uris (as tokens carry them); fetched at their path through `cluster`.
    pub status_lists: Vec<String>,
    /// JWKS URLs; fetched at their path through `cluster`.
    pub jwks_urls: Vec<String>,
    /// Long-poll wait, seconds.
    pub poll_wait_secs: u64,
    /// JWKS refresh period, seconds.
    pub jwks_refresh_secs: u64,
    /// Pause after a failed call, seconds.
    pub retry_secs: u64,
    /// The edge credential sent with the status-list polls (`Authorization: Bearer`), so
    /// that they hold places of the credential's reserved share at the control plane.
    pub credential: Option<String>,
}

/// Whether a plugin configuration is for the sync service (`"role": "sync"`).
pub fn is_sync_config(json: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|v| v.get("role").and_then(|r| r.as_str()).map(|r| r == "sync"))
        .unwrap_or(false)
}

/// The path (and query) of a URL, or the value itself when it is already a path.
pub fn path_of(url: &str) -> Option<String> {
    if url.starts_with('/') {
        return Some(url.to_string());
    }
    let rest = url.split_once("://")?.1;
    let idx = rest.find('/')?;
    Some(rest[idx..].to_string())
}

fn cerr(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        message: message.into(),
    }
}

type Obj = serde_json::Map<String, Value>;

fn bounded(obj: &Obj, field: &str, default: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
    let v = match obj.get(field) {
        None => default,
        Some(v) => v
            .as_u64()
            .ok_or_else(|| cerr(field, "must be a non-negative integer"))?,
    };
    if v < min || v > max {
        return Err(cerr(field, format!("{v} is out of range {min}..={max}")));
    }
    Ok(v)
}

fn string(obj: &Obj, field: &str) -> Result<Option<String>, ConfigError> {
    match obj.get(field) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(cerr(field, "must be a string")),
    }
}

fn urls(obj: &Obj, field: &str) -> Result<Vec<String>, ConfigError> {
    let Some(v) = obj.get(field) else {
        return Ok(Vec::new());
    };
    let items = v
        .as_array()
        .ok_or_else(|| cerr(field, "must be an array"))?;
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let path = format!("{field}[{i}]");
        let u = item
            .as_str()
            .ok_or_else(|| cerr(&path, "must be a string"))?;
        if path_of(u).is_none() {
            return Err(cerr(&path, "must be a URL or a path"));
        }
        out.push(u.to_string());
    }
    Ok(out)
}

const FIELDS: [&str; 9] = [
    "role",
    "credential",
    "cluster",
    "authority",
    "status_lists",
    "jwks_urls",
    "poll_wait_secs",
    "jwks_refresh_secs",
    "retry_secs",
];

// Parsed by hand over `Value` rather than with a derive: the derive's monomorphisations
// cost the wasm module more than this code does.
impl SyncServiceConfig {
    /// Parses and validates the service configuration; errors name the field.
    pub fn from_json(json: &str) -> Result<SyncServiceConfig, ConfigError> {
        let v: Value = serde_json::from_str(json).map_err(|e| cerr(".", e.to_string()))?;
        let obj = v
            .as_object()
            .ok_or_else(|| cerr(".", "must be a JSON object"))?;
        if let Some(unknown) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(cerr(unknown, "unknown field"));
        }
        if string(obj, "role")?.as_deref() != Some("sync") {
            return Err(cerr("role", "must be \"sync\""));
        }
        let cluster = string(obj, "cluster")?.unwrap_or_default();
        if cluster.trim().is_empty() {
            return Err(cerr("cluster", "is required and must not be empty"));
        }
        let status_lists = urls(obj, "status_lists")?;
        let jwks_urls = urls(obj, "jwks_urls")?;
        if status_lists.is_empty() && jwks_urls.is_empty() {
            return Err(cerr(
                "status_lists",
                "nothing to sync: give status_lists and/or jwks_urls",
            ));
        }
        let credential = string(obj, "credential")?;
        if credential.as_deref().is_some_and(|c| {
            c.is_empty() || c.chars().any(|ch| ch.is_whitespace() || ch.is_control())
        }) {
            return Err(cerr(
                "credential",
                "must be an edge credential (tse_...), without spaces or line breaks",
            ));
        }
        Ok(SyncServiceConfig {
            credential,
            authority: string(obj, "authority")?.unwrap_or_else(|| cluster.clone()),
            cluster,
            status_lists,
            jwks_urls,
            poll_wait_secs: bounded(obj, "poll_wait_secs", 20, 1, 60)?,
            jwks_refresh_secs: bounded(obj, "jwks_refresh_secs", 30, 1, 3600)?,
            retry_secs: bounded(obj, "retry_secs", 1, 1, 300)?,
        })
    }
}

/// One HTTP call the host must make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// Which resource it is for.
    pub target: Target,
    /// `:path`.
    pub path: String,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
    /// Timeout, milliseconds.
    pub timeout_ms: u64,
}

/// What a call fetches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// Status list `i`.
    List(usize),
    /// JWKS `i`.
    Jwks(usize),
}

#[derive(Debug, Default)]
struct ListState {
    version: Option<i64>,
    lst: Option<String>,
    /// The document's `withdrawn` member as `(scope, lst)` pairs, checked by core.
    withdrawn: Vec<(String, String)>,
    last_success: u64,
    /// The last call succeeded, so a long poll dispatched now continues an unbroken
    /// chain: the control plane would answer it at once on any change.
    healthy: bool,
    busy: bool,
    /// When the call in flight was dispatched.
    started: u64,
    next_attempt: u64,
}

#[derive(Debug, Default)]
struct JwksState {
    /// The last accepted JWKS, as fetched.
    doc: Option<String>,
    etag: Option<String>,
    busy: bool,
    next_attempt: u64,
    /// When a refresh was last brought forward for an unknown `kid` (seconds).
    forced_at: Option<u64>,
    /// The next call is one brought forward for an unknown `kid`.
    forced: bool,
    /// An unknown `kid` was met while a call was in flight (that call may predate the
    /// rotation): one more call, brought forward, once it ends.
    owed: bool,
    /// When the call in flight was dispatched (milliseconds).
    started_ms: u64,
    /// When the last call that has ended (answered or failed) was dispatched
    /// (milliseconds; 0 before the first).
    ended_ms: u64,
}

/// The sync state machine.
#[derive(Debug)]
pub struct Poller {
    config: SyncServiceConfig,
    lists: Vec<ListState>,
    jwks: Vec<JwksState>,
    version: u64,
}

/// A response as the host reports it: `status` is `None` when the call failed outright.
#[derive(Debug)]
pub struct Response<'a> {
    /// HTTP status.
    pub status: Option<u16>,
    /// Response headers (lower-case names).
    pub headers: &'a HashMap<String, String>,
    /// Body.
    pub body: &'a [u8],
}

/// What changed after a response.
#[derive(Debug, PartialEq, Eq)]
pub enum Publish {
    /// Nothing to publish.
    Nothing,
    /// Only the freshness moved.
    Meta,
    /// The lists or keys changed.
    State,
}

impl Poller {
    /// A poller with nothing synced yet.
    pub fn new(config: SyncServiceConfig) -> Poller {
        Poller {
            lists: config
                .status_lists
                .iter()
                .map(|_| ListState::default())
                .collect(),
            jwks: config
                .jwks_urls
                .iter()
                .map(|_| JwksState::default())
                .collect(),
            config,
            version: 0,
        }
    }

    /// Continues from what an earlier poller of the same process published (lease mode,
    /// on takeover): versions go on above `published.version`, and the published lists and
    /// key sets are the starting point, so an unchanged list or JWKS publishes no new
    /// state and workers keep what they have. Each list is still fetched in full once.
    pub fn resume(&mut self, published: Option<Meta>, state: Option<&State>) {
        if let Some(meta) = published {
            self.version = self.version.max(meta.version);
        }
        let Some(state) = state else { return };
        for (l, uri) in self.lists.iter_mut().zip(&self.config.status_lists) {
            if let Some(p) = state.lists.iter().find(|p| &p.uri == uri) {
                l.lst = Some(p.lst.clone());
                l.withdrawn = p.withdrawn.clone();
            }
        }
        // `state()` lists the documents of the JWKS URLs in order, skipping those not yet
        // fetched; only a complete set can be matched to the URLs.
        if state.jwks.len() == self.jwks.len() {
            for (j, doc) in self.jwks.iter_mut().zip(&state.jwks) {
                j.doc = Some(doc.clone());
            }
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SyncServiceConfig {
        &self.config
    }

    /// Calls due at `now` (seconds); each is marked busy until [`Poller::on_response`] or
    /// [`Poller::on_dispatch_failed`]. Also refreshes freshness: a long poll that is open
    /// and follows a success keeps its list current (a change would end it at once, a
    /// dead control plane fails it), so it counts as a successful sync while it waits.
    pub fn due(&mut self, now: u64) -> Vec<Call> {
        self.due_ms(now.saturating_mul(1000))
    }

    /// [`Poller::due`] at `now_ms` (milliseconds): the JWKS calls remember when they left,
    /// so workers waiting for keys know when a fetch that left after them has ended.
    pub fn due_ms(&mut self, now_ms: u64) -> Vec<Call> {
        let now = now_ms / 1000;
        // The control plane answers a long poll by `wait` (304) at the latest; an open
        // poll older than that (plus a little grace) means a hung or partitioned control
        // plane, and stops counting as fresh long before the call's own timeout.
        let live_until = self.config.poll_wait_secs + POLL_GRACE_SECS;
        for l in &mut self.lists {
            if l.busy && l.healthy && now <= l.started + live_until {
                l.last_success = now;
            }
        }
        let mut calls = Vec::new();
        let wait = self.config.poll_wait_secs;
        for (i, l) in self.lists.iter_mut().enumerate() {
            if l.busy || now < l.next_attempt {
                continue;
            }
            let base = path_of(&self.config.status_lists[i]).unwrap_or_default();
            let sep = if base.contains('?') { '&' } else { '?' };
            // Without a version yet, ask for the list at once; then long-poll for changes.
            let path = match l.version {
                None => base,
                Some(v) => format!("{base}{sep}since={v}&wait={wait}"),
            };
            l.busy = true;
            l.started = now;
            // A long poll that follows a success keeps the list current while it is open:
            // a change would end it at once, and a dead control plane fails it.
            if l.healthy {
                l.last_success = now;
            }
            let headers = self
                .config
                .credential
                .iter()
                .map(|c| ("authorization".to_string(), format!("Bearer {c}")))
                .collect();
            calls.push(Call {
                target: Target::List(i),
                path,
                headers,
                timeout_ms: (wait + 5) * 1000,
            });
        }
        for (i, j) in self.jwks.iter_mut().enumerate() {
            if j.busy || now < j.next_attempt {
                continue;
            }
            let mut headers = Vec::new();
            if let Some(e) = &j.etag {
                headers.push(("if-none-match".to_string(), e.clone()));
            }
            j.busy = true;
            j.started_ms = now_ms;
            if std::mem::take(&mut j.forced) {
                j.forced_at = Some(now);
            }
            calls.push(Call {
                target: Target::Jwks(i),
                path: path_of(&self.config.jwks_urls[i]).unwrap_or_default(),
                headers,
                timeout_ms: 5000,
            });
        }
        calls
    }

    /// A worker met a token whose `kid` no key in force has (a key rotated since the last
    /// refresh, or a forged kid): refresh every JWKS now, at most once a second per JWKS
    /// URL whoever asks, so forged kids cannot flood the control plane. A refresh asked
    /// for within the same second is deferred to the next one (never lost: a worker may
    /// be waiting for it), and one asked for while a call is in flight follows that call.
    /// Returns how many refreshes were brought forward.
    pub fn refresh_jwks_now(&mut self, now: u64) -> usize {
        let mut n = 0;
        for j in &mut self.jwks {
            if j.busy {
                j.owed = true;
                continue;
            }
            let earliest = j.forced_at.map_or(now, |t| now.max(t + 1));
            if j.next_attempt > earliest {
                j.next_attempt = earliest;
                j.forced = true;
                n += 1;
            }
        }
        n
    }

    /// A JWKS call ended (answered, refused or failed) at `now`.
    fn jwks_ended(j: &mut JwksState, now: u64) {
        j.busy = false;
        j.ended_ms = j.started_ms;
        if std::mem::take(&mut j.owed) {
            let earliest = j.forced_at.map_or(now, |t| now.max(t + 1));
            if j.next_attempt > earliest {
                j.next_attempt = earliest;
                j.forced = true;
            }
        }
    }

    /// The host could not even dispatch the call (unknown cluster, ...): retry later.
    pub fn on_dispatch_failed(&mut self, target: Target, now: u64) {
        let retry = now + self.config.retry_secs;
        match target {
            Target::List(i) => {
                if let Some(l) = self.lists.get_mut(i) {
                    l.busy = false;
                    l.healthy = false;
                    l.next_attempt = retry;
                }
            }
            Target::Jwks(i) => {
                if let Some(j) = self.jwks.get_mut(i) {
                    j.next_attempt = retry;
                    Poller::jwks_ended(j, now);
                }
            }
        }
    }

    /// Applies a response; returns what must be published and an error to log, if any.
    pub fn on_response(
        &mut self,
        target: Target,
        r: &Response<'_>,
        now: u64,
    ) -> (Publish, Option<String>) {
        match target {
            Target::List(i) => self.list_response(i, r, now),
            Target::Jwks(i) => self.jwks_response(i, r, now),
        }
    }

    fn list_response(&mut self, i: usize, r: &Response<'_>, now: u64) -> (Publish, Option<String>) {
        let retry = now + self.config.retry_secs;
        let uri = self.config.status_lists.get(i).cloned().unwrap_or_default();
        let Some(l) = self.lists.get_mut(i) else {
            return (Publish::Nothing, None);
        };
        l.busy = false;
        match r.status {
            Some(200) => {
                let parsed = std::str::from_utf8(r.body)
                    .ok()
                    .and_then(|t| serde_json::from_str::<Value>(t).ok())
                    .and_then(|v| {
                        let bits = v.get("bits")?.as_u64()?;
                        let lst = v.get("lst")?.as_str()?.to_string();
                        let withdrawn = v.get("withdrawn").filter(|w| !w.is_null()).cloned();
                        (bits == 2).then_some((lst, withdrawn))
                    });
                let Some((lst, withdrawn)) = parsed else {
                    l.healthy = false;
                    l.next_attempt = retry;
                    return (
                        Publish::Nothing,
                        Some(format!("{uri}: response is not a 2-bit status list")),
                    );
                };
                if let Err(e) = StatusList::from_lst(&lst) {
                    l.healthy = false;
                    l.next_attempt = retry;
                    return (Publish::Nothing, Some(format!("{uri}: lst {e}")));
                }
                // A bad or oversized withdrawn-scopes member refuses the whole document:
                // the last good list and narrowing stay published.
                let mut pairs: Vec<(String, String)> = Vec::new();
                if let Some(w) = &withdrawn {
                    if let Err(e) = tessera_core::withdrawn::WithdrawnScopes::from_json(w) {
                        l.healthy = false;
                        l.next_attempt = retry;
                        return (Publish::Nothing, Some(format!("{uri}: {e}")));
                    }
                    if let Some(obj) = w.as_object() {
                        for (scope, lst) in obj {
                            pairs.push((scope.clone(), lst.as_str().unwrap_or("").to_string()));
                        }
                    }
                }
                l.version = r
                    .headers
                    .get("tessera-status-version")
                    .and_then(|v| v.trim().parse::<i64>().ok());
                l.last_success = now;
                l.healthy = true;
                l.next_attempt = now;
                let changed = l.lst.as_deref() != Some(lst.as_str()) || l.withdrawn != pairs;
                l.lst = Some(lst);
                l.withdrawn = pairs;
                if changed {
                    self.version += 1;
                    (Publish::State, None)
                } else {
                    (Publish::Meta, None)
                }
            }
            // The long poll ended without a change: we are current.
            Some(304) => {
                l.last_success = now;
                l.healthy = true;
                l.next_attempt = now;
                (Publish::Meta, None)
            }
            Some(s) => {
                l.healthy = false;
                l.next_attempt = retry;
                (
                    Publish::Nothing,
                    Some(format!("{uri}: control plane answered {s}")),
                )
            }
            None => {
                l.healthy = false;
                l.next_attempt = retry;
                (Publish::Nothing, Some(format!("{uri}: call failed")))
            }
        }
    }

    fn jwks_response(&mut self, i: usize, r: &Response<'_>, now: u64) -> (Publish, Option<String>) {
        let url = self.config.jwks_urls.get(i).cloned().unwrap_or_default();
        let refresh = now + self.config.jwks_refresh_secs;
        let retry = now + self.config.retry_secs;
        let Some(j) = self.jwks.get_mut(i) else {
            return (Publish::Nothing, None);
        };
        let ended = Poller::jwks_response_in(j, r, refresh, retry, &url);
        Poller::jwks_ended(j, now);
        if ended.0 == Publish::State {
            self.version += 1;
        }
        ended
    }

    fn jwks_response_in(
        j: &mut JwksState,
        r: &Response<'_>,
        refresh: u64,
        retry: u64,
        url: &str,
    ) -> (Publish, Option<String>) {
        match r.status {
            Some(200) => {
                let doc = match std::str::from_utf8(r.body)
                    .map_err(|e| e.to_string())
                    .and_then(|t| serde_json::from_str::<Value>(t).map_err(|e| e.to_string()))
                {
                    Ok(d) => d,
                    Err(e) => {
                        j.next_attempt = retry;
                        return (Publish::Nothing, Some(format!("{url}: not JSON: {e}")));
                    }
                };
                // Refuse a set that core would refuse, so workers never see it.
                if let Err(e) = KeySet::from_jwks(&doc, "jwks") {
                    j.next_attempt = retry;
                    return (Publish::Nothing, Some(format!("{url}: {e}")));
                }
                j.etag = r.headers.get("etag").cloned();
                j.next_attempt = refresh;
                let text = String::from_utf8_lossy(r.body).into_owned();
                if j.doc.as_deref() != Some(text.as_str()) {
                    j.doc = Some(text);
                    (Publish::State, None)
                } else {
                    (Publish::Nothing, None)
                }
            }
            Some(304) => {
                j.next_attempt = refresh;
                (Publish::Nothing, None)
            }
            Some(s) => {
                j.next_attempt = retry;
                (
                    Publish::Nothing,
                    Some(format!("{url}: control plane answered {s}")),
                )
            }
            None => {
                j.next_attempt = retry;
                (Publish::Nothing, Some(format!("{url}: call failed")))
            }
        }
    }

    /// The small record workers read per request.
    pub fn meta(&self) -> Meta {
        let last_success = if self.lists.is_empty() {
            // Nothing to go stale: keys only.
            u64::MAX
        } else {
            self.lists.iter().map(|l| l.last_success).min().unwrap_or(0)
        };
        Meta {
            version: self.version,
            last_success,
            keys_fetched_ms: self.jwks.iter().map(|j| j.ended_ms).min().unwrap_or(0),
        }
    }

    /// The document workers read when the version moves.
    pub fn state(&self) -> State {
        State {
            lists: self
                .lists
                .iter()
                .zip(&self.config.status_lists)
                .filter_map(|(l, uri)| {
                    l.lst.as_ref().map(|lst| PublishedList {
                        uri: uri.clone(),
                        lst: lst.clone(),
                        withdrawn: l.withdrawn.clone(),
                    })
                })
                .collect(),
            jwks: self.jwks.iter().filter_map(|j| j.doc.clone()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SyncServiceConfig {
        SyncServiceConfig::from_json(
            r#"{"role":"sync","cluster":"cp","status_lists":["http://cp:8080/v1/orgs/acme/status-list"],
                "jwks_urls":["http://cp:8080/v1/orgs/acme/jwks.json"],"poll_wait_secs":10}"#,
        )
        .unwrap()
    }

    fn resp<'a>(
        status: Option<u16>,
        headers: &'a HashMap<String, String>,
        body: &'a [u8],
    ) -> Response<'a> {
        Response {
            status,
            headers,
            body,
        }
    }

    #[test]
    fn config_errors_name_fields() {
        for (json, field) in [
            (
                r#"{"role":"x","cluster":"c","status_lists":["/a"]}"#,
                "role",
            ),
            (
                r#"{"role":"sync","cluster":"","status_lists":["/a"]}"#,
                "cluster",
            ),
            (r#"{"role":"sync","cluster":"c"}"#, "status_lists"),
            (
                r#"{"role":"sync","cluster":"c","status_lists":["nope"]}"#,
                "status_lists[0]",
            ),
            (
                r#"{"role":"sync","cluster":"c","status_lists":["/a"],"poll_wait_secs":0}"#,
                "poll_wait_secs",
            ),
            (
                r#"{"role":"sync","cluster":"c","status_lists":["/a"],"extra":1}"#,
                "extra",
            ),
            (
                r#"{"role":"sync","cluster":"c","status_lists":["/a"],"credential":"tse_a b"}"#,
                "credential",
            ),
        ] {
            assert_eq!(
                SyncServiceConfig::from_json(json).unwrap_err().field,
                field,
                "{json}"
            );
        }
        assert!(is_sync_config(r#"{"role":"sync"}"#));
        assert!(!is_sync_config(r#"{"issuers":[]}"#));
        assert_eq!(path_of("http://h:1/a/b?c=d").as_deref(), Some("/a/b?c=d"));
        assert_eq!(path_of("/x").as_deref(), Some("/x"));
        assert_eq!(path_of("http://h"), None);
    }

    #[test]
    fn the_edge_credential_goes_with_the_status_list_polls_only() {
        let c = SyncServiceConfig::from_json(
            r#"{"role":"sync","cluster":"cp","status_lists":["/v1/orgs/acme/status-list"],
                "jwks_urls":["/v1/orgs/acme/jwks.json"],"credential":"tse_edge"}"#,
        )
        .unwrap();
        let calls = Poller::new(c).due(100);
        let auth = |call: &Call| {
            call.headers
                .iter()
                .find(|(k, _)| k == "authorization")
                .map(|(_, v)| v.clone())
        };
        assert_eq!(auth(&calls[0]).as_deref(), Some("Bearer tse_edge"));
        assert_eq!(auth(&calls[1]), None, "the JWKS is public");
        // Without one, no header.
        assert!(Poller::new(config()).due(100)[0].headers.is_empty());
    }

    #[test]
    fn first_fetch_then_long_poll_then_retry() {
        let mut p = Poller::new(config());
        let none = HashMap::new();
        let calls = p.due(100);
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].path, "/v1/orgs/acme/status-list");
        // Busy calls are not repeated.
        assert!(p.due(100).is_empty());

        let mut h = HashMap::new();
        h.insert("tessera-status-version".to_string(), "5".to_string());
        let lst = tessera_core::StatusList::new(8).to_lst();
        let body = format!(r#"{{"bits":2,"lst":"{lst}"}}"#);
        let (publish, err) =
            p.on_response(Target::List(0), &resp(Some(200), &h, body.as_bytes()), 101);
        assert_eq!((publish, err), (Publish::State, None));
        assert_eq!(p.meta().last_success, 101);
        let next = p.due(101);
        assert_eq!(next[0].path, "/v1/orgs/acme/status-list?since=5&wait=10");
        assert_eq!(next[0].timeout_ms, 15_000);

        // While that long poll is open after a success, later ticks keep the list fresh,
        // but only until the control plane should have answered it (wait 10 + grace 2).
        assert!(p.due(108).is_empty());
        assert_eq!(p.meta().last_success, 108);
        p.due(113);
        assert_eq!(p.meta().last_success, 113);
        p.due(120);
        assert_eq!(
            p.meta().last_success,
            113,
            "a hung poll is not proof of freshness"
        );

        // A long poll that times out keeps us fresh.
        assert_eq!(
            p.on_response(Target::List(0), &resp(Some(304), &none, b""), 111)
                .0,
            Publish::Meta
        );
        assert_eq!(p.meta().last_success, 111);

        // Failures keep the last good list, back off, and stop refreshing freshness.
        p.due(111);
        let (publish, err) = p.on_response(Target::List(0), &resp(None, &none, b""), 112);
        assert_eq!(publish, Publish::Nothing);
        assert!(err.is_some());
        assert!(p.due(112).is_empty());
        assert_eq!(p.due(113).len(), 1);
        // The retry is open but follows a failure: it proves nothing yet.
        assert!(p.due(120).is_empty());
        assert_eq!(p.state().lists.len(), 1);
        assert_eq!(
            p.meta().last_success,
            111,
            "a retry after a failure is not proof of freshness"
        );

        // Garbage is refused, not published.
        let (publish, err) = p.on_response(
            Target::List(0),
            &resp(Some(200), &h, b"{\"bits\":2,\"lst\":\"!!\"}"),
            114,
        );
        assert_eq!(publish, Publish::Nothing);
        assert!(err.is_some());

        // Scopes withdrawn from the list's tokens (issue 22) are published with it; a bad
        // member refuses the whole document, keeping the last good one.
        let lst = tessera_core::StatusList::new(8).to_lst();
        let w = tessera_core::withdrawn::WithdrawnScopes::from_entries([("admin", 3)]);
        let with = serde_json::json!({"bits": 2, "lst": lst, "withdrawn": w.to_json()}).to_string();
        let (publish, err) =
            p.on_response(Target::List(0), &resp(Some(200), &h, with.as_bytes()), 115);
        assert_eq!((publish, err), (Publish::State, None));
        let published = p.state().lists[0].withdrawn.clone();
        assert_eq!(published.len(), 1);
        assert_eq!(published[0].0, "admin");
        let bad =
            serde_json::json!({"bits": 2, "lst": lst, "withdrawn": {"admin": "!!"}}).to_string();
        let (publish, err) =
            p.on_response(Target::List(0), &resp(Some(200), &h, bad.as_bytes()), 116);
        assert_eq!(publish, Publish::Nothing);
        assert!(err.is_some_and(|e| e.contains("withdrawn.admin")));
        assert_eq!(p.state().lists[0].withdrawn, published);
    }

    #[test]
    fn a_resumed_poller_continues_versions_and_publishes_only_changes() {
        let none = HashMap::new();
        let lst = tessera_core::StatusList::new(8).to_lst();
        let body = format!(r#"{{"bits":2,"lst":"{lst}"}}"#);
        let key = tessera_testkit::TestKey::generate(tessera_testkit::Alg::EdDSA, "k");
        let doc = tessera_testkit::jwks(&[&key]).to_string();
        let published = State {
            lists: vec![PublishedList {
                uri: "http://cp:8080/v1/orgs/acme/status-list".into(),
                lst: lst.clone(),
                withdrawn: vec![],
            }],
            jwks: vec![doc.clone()],
        };
        let mut p = Poller::new(config());
        p.resume(
            Some(Meta {
                version: 9,
                last_success: 50,
                keys_fetched_ms: 0,
            }),
            Some(&published),
        );
        assert_eq!(p.state(), published);
        // Not fresh until its own first answer.
        assert_eq!(p.meta().version, 9);
        assert_eq!(p.meta().last_success, 0);
        let calls = p.due(100);
        // The list is fetched in full once (no `since` yet).
        assert_eq!(calls[0].path, "/v1/orgs/acme/status-list");
        let (publish, _) = p.on_response(
            Target::List(0),
            &resp(Some(200), &none, body.as_bytes()),
            100,
        );
        assert_eq!(publish, Publish::Meta, "the same list is no new state");
        let (publish, _) = p.on_response(
            Target::Jwks(0),
            &resp(Some(200), &none, doc.as_bytes()),
            100,
        );
        assert_eq!(publish, Publish::Nothing, "the same keys are no new state");
        assert_eq!(p.meta().version, 9);
        // A change moves the version past the one the earlier poller published.
        let mut changed = tessera_core::StatusList::new(8);
        changed.set(1, tessera_core::TokenStatus::Revoked);
        let body = format!(r#"{{"bits":2,"lst":"{}"}}"#, changed.to_lst());
        p.due(101);
        let (publish, _) = p.on_response(
            Target::List(0),
            &resp(Some(200), &none, body.as_bytes()),
            101,
        );
        assert_eq!(publish, Publish::State);
        assert_eq!(p.meta().version, 10);
        // A partial key publication cannot be matched to the URLs and is not used.
        let mut q = Poller::new(config());
        q.resume(
            None,
            Some(&State {
                lists: vec![],
                jwks: vec![],
            }),
        );
        assert!(q.state().jwks.is_empty());
    }

    #[test]
    fn unknown_kid_brings_the_jwks_refresh_forward_at_most_once_a_second() {
        let none = HashMap::new();
        let key = tessera_testkit::TestKey::generate(tessera_testkit::Alg::EdDSA, "k");
        let doc = tessera_testkit::jwks(&[&key]).to_string();
        let mut p = Poller::new(config());
        // Asked for while the first fetch is in flight (it may predate a rotation): one
        // more follows it.
        assert_eq!(p.due(100).len(), 2);
        assert_eq!(p.refresh_jwks_now(100), 0);
        p.on_response(
            Target::Jwks(0),
            &resp(Some(200), &none, doc.as_bytes()),
            100,
        );
        assert!(p.due(100).iter().any(|c| c.target == Target::Jwks(0)));
        p.on_response(Target::Jwks(0), &resp(Some(304), &none, b""), 100);
        // Next regular refresh in 30 s. Within the same second as that forced fetch, more
        // unknown kids are deferred to the next second (a worker may be waiting for them),
        // never more than one call a second.
        assert!(p.due(100).iter().all(|c| c.target != Target::Jwks(0)));
        assert_eq!(p.refresh_jwks_now(100), 1);
        assert_eq!(p.refresh_jwks_now(100), 0, "already deferred");
        assert!(p.due(100).iter().all(|c| c.target != Target::Jwks(0)));
        assert!(p.due(101).iter().any(|c| c.target == Target::Jwks(0)));
        // Asked for while that call is in flight: one more once it ends, a second later.
        assert_eq!(p.refresh_jwks_now(101), 0);
        p.on_response(Target::Jwks(0), &resp(Some(304), &none, b""), 101);
        assert!(p.due(101).iter().all(|c| c.target != Target::Jwks(0)));
        assert!(p.due(102).iter().any(|c| c.target == Target::Jwks(0)));
    }

    #[test]
    fn workers_learn_when_a_key_fetch_that_left_after_them_ended() {
        let mut p = Poller::new(config());
        let none = HashMap::new();
        assert_eq!(p.meta().keys_fetched_ms, 0);
        let calls = p.due_ms(100_250);
        assert!(calls.iter().any(|c| c.target == Target::Jwks(0)));
        // In flight: not ended yet.
        assert_eq!(p.meta().keys_fetched_ms, 0);
        // Failed: ended all the same (a worker waiting decides now, not at its bound).
        p.on_response(Target::Jwks(0), &resp(None, &none, b""), 100);
        assert_eq!(p.meta().keys_fetched_ms, 100_250);
        // A kick brings the next call forward (after retry_secs anyway); it left later.
        p.refresh_jwks_now(101);
        assert!(p
            .due_ms(101_040)
            .iter()
            .any(|c| c.target == Target::Jwks(0)));
        p.on_response(Target::Jwks(0), &resp(Some(304), &none, b""), 101);
        assert_eq!(p.meta().keys_fetched_ms, 101_040);
        // Round trip through shared data.
        assert_eq!(Meta::decode(&p.meta().encode()), Some(p.meta()));
    }

    #[test]
    fn jwks_refresh_and_refusal() {
        let mut p = Poller::new(config());
        let none = HashMap::new();
        p.due(0);
        assert_eq!(
            p.on_response(
                Target::Jwks(0),
                &resp(Some(200), &none, b"{\"keys\":[]}"),
                1
            )
            .0,
            Publish::Nothing
        );
        assert!(p.state().jwks.is_empty());
        // Retried after retry_secs (1).
        assert!(p.due(2).iter().any(|c| c.target == Target::Jwks(0)));
        let key = tessera_testkit::TestKey::generate(tessera_testkit::Alg::EdDSA, "k");
        let doc = tessera_testkit::jwks(&[&key]).to_string();
        let mut h = HashMap::new();
        h.insert("etag".to_string(), "\"e1\"".to_string());
        assert_eq!(
            p.on_response(Target::Jwks(0), &resp(Some(200), &h, doc.as_bytes()), 3)
                .0,
            Publish::State
        );
        assert_eq!(p.state().jwks.len(), 1);
        // Not due again before jwks_refresh_secs (30); then with If-None-Match.
        assert!(!p.due(10).iter().any(|c| c.target == Target::Jwks(0)));
        let again = p.due(33);
        let call = again.iter().find(|c| c.target == Target::Jwks(0)).unwrap();
        assert_eq!(
            call.headers,
            vec![("if-none-match".to_string(), "\"e1\"".to_string())]
        );
    }
}

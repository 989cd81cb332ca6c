//! The HTTP API: the state, the route table (also the source of `/openapi.json`) and the
//! router with its request log. Extractors live in `extract`, handlers in `handlers`,
//! the mapping of service errors to responses in `error`. Handlers only translate: each
//! runs one service operation in one store transaction.

pub mod accounts;
pub mod error;
pub mod extract;
pub mod handlers;
pub mod introspect;
pub mod limit;
pub mod limits;
pub mod mail;
pub mod scanning;
pub mod scim;
pub mod scim_docs;
pub mod scopes;
pub mod server;
pub mod setup;
pub mod sso;
pub mod web;
pub mod webhooks;

pub use error::{ApiError, ApiResult, ErrorBody};

use crate::crypto::MasterKey;
use crate::policy::Actor;
use crate::service::{self, Ctx, Verifiers};
use crate::store::{Store, Tx};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{IntoParams, PartialSchema, ToSchema};

/// Everything the service needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    store: Box<dyn Store>,
    master: MasterKey,
    base_url: String,
    access_ttl: i64,
    clock: Box<dyn Fn() -> i64 + Send + Sync>,
    /// Bumped after every commit that changed a status list or a key set; wakes the
    /// status-list long polls.
    changes: watch::Sender<u64>,
    /// The core verifiers API calls are authenticated with.
    verifiers: Verifiers,
    /// Set once the server begins to shut down: long polls answer at once.
    closing: watch::Sender<bool>,
    /// The per-address limit of unauthenticated requests (`tessera serve` sets one).
    limit: std::sync::OnceLock<limit::AddressLimit>,
    /// Uses of tokens against this API not yet in the authentication log.
    api_uses: Mutex<Vec<crate::model::AuthEvent>>,
    /// Status-list long polls held per client address, and how many one may hold
    /// (`tessera serve` sets half its per-address connection share).
    long_polls: server::Shares,
    long_poll_share: std::sync::OnceLock<usize>,
    /// Long polls held per edge credential (polls that name their edge), and the share.
    edge_long_polls: server::Shares<String>,
    edge_long_poll_share: std::sync::OnceLock<usize>,
    /// Password hashes computed or checked at once (argon2id takes 19 MiB and a core
    /// each): one per core, so a flood of sign-ins queues instead of growing memory.
    hashing: tokio::sync::Semaphore,
    /// Tokens per user, users per org, orgs per partner (`tessera serve` sets them).
    quotas: std::sync::OnceLock<service::quotas::Quotas>,
    /// The last readiness check of the database and when it ran: `/readyz` callers within
    /// [`READY_REUSE`] of it share it, and concurrent ones wait for one check.
    readiness: tokio::sync::Mutex<Option<(std::time::Instant, Result<(), String>)>>,
    /// The secret scanner's public keys (`--secret-scanning-keys-url`; GitHub's by default).
    scanner_keys: std::sync::OnceLock<scanning::ScannerKeys>,
    /// Set when the server sends mail (`--smtp-url`): events write the mail outbox.
    mail: std::sync::OnceLock<bool>,
    /// The status-list versions long polls read, per org, for one value of `changes`: all
    /// the polls woken by one change share one store read per org ([`AppState::poll_version`]).
    poll_versions: Mutex<PollVersions>,
    /// Store reads of a version made for long polls (tests and figures).
    poll_version_reads: std::sync::atomic::AtomicU64,
}

/// One generation of shared version reads: the value of `changes` they are for, and a cell
/// per org filled by the first poll that asks.
#[derive(Default)]
struct PollVersions {
    generation: u64,
    by_org: std::collections::HashMap<String, Arc<tokio::sync::OnceCell<i64>>>,
}

/// Orgs one generation shares reads for; past it (a flood of polls for made-up orgs) a
/// poll reads for itself, so the map stays small.
const POLL_VERSIONS_MAX: usize = 4096;

/// How long one readiness check of the database answers `/readyz` for.
const READY_REUSE: std::time::Duration = std::time::Duration::from_millis(500);

/// How long a password check waits for a free core before answering 503.
const HASHING_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A long poll's place, given back when dropped.
pub(crate) enum PollPlace {
    Address { _share: server::Share },
    Edge { _share: server::Share<String> },
    Uncounted,
}

/// Long polls one edge credential may hold when `tessera serve` does not say.
pub const DEFAULT_EDGE_LONG_POLLS: usize = 1024;

/// Noted API uses that make the next one write them at once (else the periodic flush of
/// `tessera serve`, or a read of the log, does).
const API_USES_BATCH: usize = 500;

pub struct Config {
    /// Scheme, host and port the API is reached at, without a trailing slash. Token
    /// issuers and status-list URIs are built from it.
    pub base_url: String,
    pub master: MasterKey,
    /// Lifetime of exchanged access tokens, seconds.
    pub access_ttl: i64,
}

impl AppState {
    pub fn new(store: Box<dyn Store>, config: Config) -> Self {
        Self::with_clock(store, config, Box::new(crate::timefmt::now))
    }

    /// With an injected clock (tests move time forward).
    pub fn with_clock(
        store: Box<dyn Store>,
        config: Config,
        clock: Box<dyn Fn() -> i64 + Send + Sync>,
    ) -> Self {
        let (changes, _) = watch::channel(0);
        let (closing, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            store,
            master: config.master,
            base_url: config.base_url.trim_end_matches('/').to_string(),
            access_ttl: config.access_ttl,
            clock,
            changes,
            verifiers: Verifiers::new(),
            closing,
            limit: std::sync::OnceLock::new(),
            api_uses: Mutex::new(Vec::new()),
            long_polls: server::Shares::default(),
            edge_long_polls: server::Shares::default(),
            edge_long_poll_share: std::sync::OnceLock::new(),
            long_poll_share: std::sync::OnceLock::new(),
            readiness: tokio::sync::Mutex::new(None),
            quotas: std::sync::OnceLock::new(),
            scanner_keys: std::sync::OnceLock::new(),
            mail: std::sync::OnceLock::new(),
            poll_versions: Mutex::new(PollVersions::default()),
            poll_version_reads: std::sync::atomic::AtomicU64::new(0),
            hashing: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            ),
        });
        // Changes committed by other processes on the same database wake the long polls
        // too (PostgreSQL replicas). Weak: the watcher does not keep the state alive.
        let weak = Arc::downgrade(&inner);
        inner.store.watch_remote_changes(Box::new(move || {
            if let Some(i) = weak.upgrade() {
                i.changes.send_modify(|v| *v += 1);
            }
        }));
        AppState { inner }
    }

    /// Limits unauthenticated requests per client address (see [`limit`]). Set once,
    /// before the router is built (`app` reads it); a second call changes nothing.
    pub fn with_rate_limit(self, rate: limit::RateLimit) -> Self {
        if let Some(l) = limit::AddressLimit::new(rate) {
            let _ = self.inner.limit.set(l);
        }
        self
    }

    /// Status-list long polls one client address may hold at once; past it, a poll that
    /// would wait is answered 429. Set once; unset means no share.
    /// Sets the quotas (once; the defaults otherwise).
    pub fn with_quotas(self, quotas: service::quotas::Quotas) -> Self {
        let _ = self.inner.quotas.set(quotas);
        self
    }

    pub fn with_long_poll_share(self, share: usize) -> Self {
        let _ = self.inner.long_poll_share.set(share.max(1));
        self
    }

    /// A place for a long poll: an edge that named itself with its credential (`edge`,
    /// the credential's id) takes one of the credential's reserved share, anyone else one
    /// of `peer`'s address's share; `None` past it. Without shares set (in-process use),
    /// a place that counts nothing.
    pub(crate) fn long_poll_place(
        &self,
        peer: Option<std::net::SocketAddr>,
        edge: Option<&str>,
    ) -> Option<PollPlace> {
        if let Some(id) = edge {
            let share = self
                .inner
                .edge_long_poll_share
                .get()
                .copied()
                .unwrap_or(DEFAULT_EDGE_LONG_POLLS);
            return self
                .inner
                .edge_long_polls
                .take_for(id.to_string(), share)
                .map(|_share| PollPlace::Edge { _share });
        }
        let Some(share) = self.inner.long_poll_share.get() else {
            return Some(PollPlace::Uncounted);
        };
        let ip = peer.map_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), |p| {
            p.ip()
        });
        self.inner
            .long_polls
            .take(ip, *share)
            .map(|_share| PollPlace::Address { _share })
    }

    /// How many long polls one edge credential may hold (`--max-long-polls-per-edge`).
    pub fn with_edge_long_poll_share(self, share: usize) -> Self {
        let _ = self.inner.edge_long_poll_share.set(share.max(1));
        self
    }

    /// Runs password work (argon2id hashing or checking) on a blocking thread, at most one
    /// per core at a time; past [`HASHING_WAIT`] in the queue, 503 `busy`.
    pub(crate) async fn password_work<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> ApiResult<T> {
        let permit = tokio::time::timeout(HASHING_WAIT, self.inner.hashing.acquire())
            .await
            .map_err(|_| {
                let mut e = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "too many sign-ins are being checked right now; try again in a few seconds",
                );
                e.reason = Some("busy");
                e
            })?
            .map_err(ApiError::internal)?;
        let out = tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| ApiError::internal(format!("worker: {e}")))?;
        drop(permit);
        Ok(out)
    }

    pub fn address_limit(&self) -> Option<&limit::AddressLimit> {
        self.inner.limit.get()
    }

    /// Notes a use of a token against this API for the authentication log; a full batch
    /// is written at once, in the background.
    pub(crate) fn note_api_use(&self, e: crate::model::AuthEvent) {
        let full = match self.inner.api_uses.lock() {
            Ok(mut v) => {
                v.push(e);
                v.len() >= API_USES_BATCH
            }
            Err(_) => false,
        };
        if full {
            let st = self.clone();
            tokio::spawn(async move {
                if let Err(e) = st.flush_api_uses().await {
                    tracing::error!(error = %e, "writing API uses to the authentication log failed");
                }
            });
        }
    }

    /// Writes the noted API uses to the authentication log (and last-use data), in one
    /// transaction. `tessera serve` calls it every second and at shutdown; reads of the
    /// authentication log call it first, so they see every use before them.
    pub async fn flush_api_uses(&self) -> ApiResult<()> {
        let batch = match self.inner.api_uses.lock() {
            Ok(mut v) => std::mem::take(&mut *v),
            Err(_) => return Err(ApiError::internal("API-use buffer lock poisoned")),
        };
        if batch.is_empty() {
            return Ok(());
        }
        self.write(move |tx, ctx| service::logs::record_api_uses(tx, ctx, &batch))
            .await
    }

    /// Removes authentication-log events older than `keep_days` days (and, on
    /// PostgreSQL, creates the coming days' partitions). Returns how many were removed.
    pub async fn prune_auth_log(&self, keep_days: i64) -> ApiResult<u64> {
        let st = self.clone();
        tokio::task::spawn_blocking(move || {
            let now = (st.inner.clock)();
            st.inner.store.prune_auth_log(now, keep_days)
        })
        .await
        .map_err(|e| ApiError::internal(format!("worker: {e}")))?
        .map_err(|e| ApiError::from(service::Error::from(e)))
    }

    /// Whether the database answers (`/readyz`): [`Store::ready`] on a blocking thread, at
    /// most once per [`READY_REUSE`] whoever asks. Any failure is "unavailable".
    pub async fn ready(&self) -> ApiResult<()> {
        let mut last = self.inner.readiness.lock().await;
        let fresh = last
            .as_ref()
            .filter(|(at, _)| at.elapsed() < READY_REUSE)
            .map(|(_, r)| r.clone());
        let result = match fresh {
            Some(r) => r,
            None => {
                let st = self.clone();
                let r = tokio::task::spawn_blocking(move || st.inner.store.ready())
                    .await
                    .map_err(|e| ApiError::internal(format!("worker: {e}")))?
                    .map_err(|e| match e {
                        crate::store::StoreError::Unavailable(m) => m,
                        other => other.to_string(),
                    });
                *last = Some((std::time::Instant::now(), r.clone()));
                r
            }
        };
        drop(last);
        result.map_err(|m| {
            ApiError::from(service::Error::Store(
                crate::store::StoreError::Unavailable(m),
            ))
        })
    }

    /// The server stops: long polls answer now instead of at their deadline.
    pub fn begin_shutdown(&self) {
        self.inner.closing.send_replace(true);
    }

    /// Resolves once [`Self::begin_shutdown`] was called.
    pub(crate) async fn closing(&self) {
        let mut rx = self.inner.closing.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }

    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    pub(crate) fn verifiers(&self) -> &Verifiers {
        &self.inner.verifiers
    }

    /// Where the secret scanner's public keys are fetched from (set once; GitHub's
    /// published keys otherwise).
    pub fn with_scanner_keys_url(self, url: &str) -> Self {
        let _ = self.inner.scanner_keys.set(scanning::ScannerKeys::new(url));
        self
    }

    /// Events are mailed from now on (`tessera serve --smtp-url`; the mail worker sends).
    pub fn with_mail(self) -> Self {
        let _ = self.inner.mail.set(true);
        self
    }

    pub(crate) fn scanner_keys(&self) -> &scanning::ScannerKeys {
        self.inner
            .scanner_keys
            .get_or_init(|| scanning::ScannerKeys::new(scanning::GITHUB_KEYS_URL))
    }

    /// Runs `f` in one transaction on a blocking thread. A write that changed a status
    /// list or a key set wakes the long polls once it is committed.
    pub async fn run<T: Send + 'static>(
        &self,
        write: bool,
        f: impl FnOnce(&mut dyn Tx, &Ctx) -> service::Result<T> + Clone + Send + 'static,
    ) -> ApiResult<T> {
        let st = self.clone();
        let (result, changed) = tokio::task::spawn_blocking(move || {
            let i = &st.inner;
            let now = (i.clock)();
            // The body may run again when PostgreSQL retries a transaction that lost a
            // deadlock or a serialization race: each attempt starts from a fresh context
            // and its own copy of the body.
            let mut changed = false;
            let r = crate::store::run(i.store.as_ref(), write, |tx| {
                let ctx = Ctx::new(&i.base_url, &i.master, now, i.access_ttl)
                    .with_quotas(i.quotas.get().copied().unwrap_or_default())
                    .with_mail(i.mail.get().copied().unwrap_or(false));
                let v = f.clone()(tx, &ctx);
                changed = ctx.edges_changed();
                let v = v?;
                if changed {
                    // Other replicas' long polls learn of it on commit.
                    tx.announce_edges_changed()?;
                }
                Ok(v)
            });
            (r, changed)
        })
        .await
        .map_err(|e| ApiError::internal(format!("worker: {e}")))?;
        if write && matches!(result, Err(service::Error::Store(_))) {
            self.inner.verifiers.forget_all();
        }
        if changed && result.is_ok() {
            self.inner.changes.send_modify(|v| *v += 1);
        }
        result.map_err(ApiError::from)
    }

    pub async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Tx, &Ctx) -> service::Result<T> + Clone + Send + 'static,
    ) -> ApiResult<T> {
        self.run(true, f).await
    }

    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Tx, &Ctx) -> service::Result<T> + Clone + Send + 'static,
    ) -> ApiResult<T> {
        self.run(false, f).await
    }

    /// A write on behalf of an authenticated caller. The caller was authenticated before
    /// the write began (in its own read); the credential is checked again inside the
    /// write, so a credential revoked in between cannot act.
    pub async fn write_as<T: Send + 'static>(
        &self,
        actor: Actor,
        f: impl FnOnce(&mut dyn Tx, &Ctx, &Actor) -> service::Result<T> + Clone + Send + 'static,
    ) -> ApiResult<T> {
        self.write(move |tx, ctx| {
            service::authority::still_valid(tx, ctx, &actor)?;
            ctx.act_with(actor.credential.label());
            f(tx, ctx, &actor)
        })
        .await
    }

    /// A read on behalf of an authenticated caller.
    pub async fn read_as<T: Send + 'static>(
        &self,
        actor: Actor,
        f: impl FnOnce(&mut dyn Tx, &Ctx, &Actor) -> service::Result<T> + Clone + Send + 'static,
    ) -> ApiResult<T> {
        self.read(move |tx, ctx| f(tx, ctx, &actor)).await
    }

    /// How many commits have woken the long polls so far (each changed a status list or
    /// a key set).
    pub fn edge_changes(&self) -> u64 {
        *self.inner.changes.borrow()
    }

    /// A receiver of the change counter (long polls wait on it).
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// The status-list version of `org` for a long poll that has seen change `generation`
    /// (the value of [`AppState::subscribe`]'s receiver): the first poll of a generation
    /// reads it from the store, every other poll of that generation on this process gets
    /// the same answer. A change committed after that read bumps the generation (and wakes
    /// the polls), so no poll keeps an answer older than the change it waits for. A failed
    /// read is not shared: the next poll tries again.
    pub(crate) async fn poll_version(&self, generation: u64, org: &str) -> ApiResult<i64> {
        let cell = {
            let mut v = self
                .inner
                .poll_versions
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if generation > v.generation {
                v.generation = generation;
                v.by_org.clear();
            }
            if generation < v.generation
                || (v.by_org.len() >= POLL_VERSIONS_MAX && !v.by_org.contains_key(org))
            {
                None
            } else {
                Some(v.by_org.entry(org.to_string()).or_default().clone())
            }
        };
        let read = || async {
            self.inner
                .poll_version_reads
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let o = org.to_string();
            self.read(move |tx, _| service::keys::status_version(tx, &o))
                .await
        };
        match cell {
            Some(cell) => cell.get_or_try_init(read).await.copied(),
            None => read().await,
        }
    }

    /// How many store reads long polls have made for a version (see
    /// [`AppState::poll_version`]).
    pub fn poll_version_reads(&self) -> u64 {
        self.inner
            .poll_version_reads
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

// ---------------------------------------------------------------------------------------
// The route table

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    Public,
    /// A Tessera token (bearer), or the web page's session cookie (with the CSRF header
    /// on a state-changing request).
    Token,
    /// The session cookie only (the session's own routes).
    Session,
    Edge,
    /// A SCIM credential (bearer), on the `/scim/v2/{org}` routes.
    Scim,
}

impl Auth {
    /// Authenticated as a person (token or session): refusals are 401 and 403, and a
    /// path or body may name what the caller cannot see (404).
    pub fn personal(self) -> bool {
        matches!(self, Auth::Token | Auth::Session)
    }
}

/// Named schemas a schema refers to, collected for `components.schemas`.
pub type Schemas = Vec<(String, RefOr<Schema>)>;

/// The schema of a body: a reference to a named schema (registered in `Schemas`), or an
/// inline one.
pub type SchemaFn = fn(&mut Schemas) -> RefOr<Schema>;

/// A body the route takes or answers with: its media type and schema.
#[derive(Clone, Copy)]
pub struct Body {
    pub media_type: &'static str,
    pub schema: SchemaFn,
}

/// One documented answer of a route.
#[derive(Clone)]
pub struct Answer {
    pub status: u16,
    pub description: &'static str,
    /// Empty for an answer without a body (304).
    pub bodies: Vec<Body>,
}

/// One operation: the router and `/openapi.json` are both built from these, and the
/// request, query and response types named here are the ones the handler uses.
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub summary: &'static str,
    pub auth: Auth,
    /// An example request body; `None` when the operation takes none.
    pub body: Option<Value>,
    /// The request bodies the operation accepts, by media type.
    pub request: Vec<Body>,
    /// The query parameters, from the handler's query type.
    pub query: Option<fn() -> Vec<Parameter>>,
    /// Successful answers.
    pub answers: Vec<Answer>,
    /// Error statuses the operation can answer with; each carries an [`ErrorBody`].
    pub errors: Vec<u16>,
    /// Whole route under the per-address rate limit of unauthenticated requests.
    pub limited: bool,
    /// The `tessera` command that does the same, or why there is none; `None` only
    /// while unmapped, which a test refuses.
    pub cli: Option<CliCommand>,
    pub handler: MethodRouter<AppState>,
}

/// Where the command line does what a route does (`x-tessera-cli` in `/openapi.json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CliCommand {
    /// `tessera <words>`, e.g. `tokens create`.
    Command(&'static str),
    /// No command, and why: a route only the edges or the web page call.
    NotForPeople(&'static str),
}

/// A reference to `T`'s named schema, registering it and what it refers to.
pub fn schema_ref<T: ToSchema>(out: &mut Schemas) -> RefOr<Schema> {
    let name = T::name().into_owned();
    if !out.iter().any(|(n, _)| *n == name) {
        out.push((name.clone(), T::schema()));
        T::schemas(out);
    }
    RefOr::Ref(Ref::from_schema_name(name))
}

fn string_schema(_: &mut Schemas) -> RefOr<Schema> {
    String::schema()
}

fn any_object(_: &mut Schemas) -> RefOr<Schema> {
    ObjectBuilder::new().schema_type(Type::Object).into()
}

fn json<T: ToSchema>() -> Body {
    Body {
        media_type: "application/json",
        schema: schema_ref::<T>,
    }
}

fn route(
    method: Method,
    path: &'static str,
    summary: &'static str,
    auth: Auth,
    handler: MethodRouter<AppState>,
) -> Route {
    // Every route reads the store (503 when it is unavailable, 500 when it fails); an
    // authenticated one may be refused (401; 403 for a token used from a refused
    // address or for a forbidden action), and a path names something that may not exist.
    let mut errors = vec![500, 503];
    match auth {
        Auth::Public => {}
        Auth::Token | Auth::Session => errors.extend([401, 403]),
        Auth::Edge => errors.push(401),
        // A refused credential counts against the per-address rate (429).
        Auth::Scim => errors.extend([401, 403, 429]),
    }
    // A state-changing request a browser sent from another site: 403 before anything.
    if !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS) && !errors.contains(&403) {
        errors.push(403);
    }
    if path.contains('{') {
        errors.push(404);
    }
    if auth.personal() && method != Method::GET {
        errors.push(409);
    }
    Route {
        method,
        path,
        summary,
        auth,
        body: None,
        request: Vec::new(),
        query: None,
        answers: Vec::new(),
        errors,
        limited: false,
        cli: None,
        handler,
    }
}

impl Route {
    /// A JSON request body of type `T`, with an example. A bad body is a 400 (413 when
    /// too large); an authenticated caller's body may name something that does not
    /// exist (404).
    fn body<T: ToSchema>(mut self, example: Value) -> Self {
        self.body = Some(example);
        self.request.push(json::<T>());
        let names = if self.auth.personal() { 404 } else { 400 };
        self.error(&[400, 413, 415, names])
    }

    /// An `application/x-www-form-urlencoded` request body of type `T`.
    fn form<T: ToSchema>(mut self) -> Self {
        self.request.push(Body {
            media_type: "application/x-www-form-urlencoded",
            schema: schema_ref::<T>,
        });
        self
    }

    /// An `application/x-www-form-urlencoded` request body of type `T` as the operation's
    /// only body, with an example (its fields as an object). A bad body is a 400 (413 when
    /// too large, 415 when not a form).
    fn form_only<T: ToSchema>(mut self, example: Value) -> Self {
        self.body = Some(example);
        self.form::<T>().error(&[400, 413, 415])
    }

    /// Query parameters from the handler's query type; bad ones are a 400.
    fn query<T: IntoParams>(mut self) -> Self {
        self.query = Some(|| T::into_params(|| Some(ParameterIn::Query)));
        self.error(&[400])
    }

    /// A JSON answer of type `T` with this status.
    fn ok<T: ToSchema>(self, status: u16) -> Self {
        let description = if status == 201 { "Created" } else { "OK" };
        self.answer(status, description, vec![json::<T>()])
    }

    fn answer(mut self, status: u16, description: &'static str, bodies: Vec<Body>) -> Self {
        self.answers.push(Answer {
            status,
            description,
            bodies,
        });
        self
    }

    fn error(mut self, statuses: &[u16]) -> Self {
        for s in statuses {
            if !self.errors.contains(s) {
                self.errors.push(*s);
            }
        }
        self.errors.sort_unstable();
        self
    }

    /// Under the per-address rate limit (429 with `Retry-After` past it).
    pub fn limited(mut self) -> Self {
        self.limited = true;
        self.error(&[429])
    }

    /// `tessera <words>` does what this route does.
    fn cli(mut self, words: &'static str) -> Self {
        self.cli = Some(CliCommand::Command(words));
        self
    }

    /// No command does this, because of `why` (a route of the edges or the web page).
    fn no_cli(mut self, why: &'static str) -> Self {
        self.cli = Some(CliCommand::NotForPeople(why));
        self
    }

    /// A route that touches nothing and cannot fail.
    fn infallible(mut self) -> Self {
        self.errors.clear();
        self
    }
}

macro_rules! h {
    ($m:ident, $f:expr) => {
        on(MethodFilter::$m, $f)
    };
}

pub fn routes() -> Vec<Route> {
    use handlers::{ExchangeForm, ExchangeJson, StatusParams};
    use service::input::*;
    use service::views::*;
    use Auth::*;
    let csv = Body {
        media_type: "text/csv",
        schema: string_schema,
    };
    let status_jwt = Body {
        media_type: "application/statuslist+jwt",
        schema: string_schema,
    };
    let jwk_set = Body {
        media_type: "application/jwk-set+json",
        schema: schema_ref::<Jwks>,
    };
    let openapi = Body {
        media_type: "application/json",
        schema: any_object,
    };
    let mut routes = vec![
        route(Method::GET, "/healthz", "Liveness", Public, h!(GET, handlers::health))
            .ok::<Health>(200).infallible().no_cli("a probe for load balancers and orchestrators"),
        // Readiness: the database answers. Public and cheap (one check per half second
        // whoever asks), under the per-address rate limit like the other public routes
        // that cost work.
        route(Method::GET, "/readyz", "Readiness: 200 when the database answers, 503 database_unavailable otherwise", Public, h!(GET, handlers::ready))
            .ok::<Ready>(200)
            .limited()
            .no_cli("a probe for load balancers and orchestrators"),
        route(Method::GET, "/openapi.json", "This description", Public, h!(GET, handlers::openapi))
            .answer(200, "The OpenAPI 3.1 document", vec![openapi]).infallible().no_cli("read by tools; `curl <url>/openapi.json`"),
        route(Method::GET, "/v1/me", "The authenticated user and organization", Token, h!(GET, handlers::me))
            .ok::<Me>(200).cli("whoami"),
        route(Method::GET, "/v1/orgs", "Organizations visible to the caller", Token, h!(GET, handlers::orgs_list))
            .ok::<OrgList>(200).cli("orgs list"),
        route(Method::POST, "/v1/orgs", "Create an organization (root admin; partner admin for customers)", Token, h!(POST, handlers::orgs_create))
            .body::<CreateOrg>(json!({"id": "acme", "name": "Acme", "partner": false, "managed_by": null, "key_alg": "EdDSA", "max_lifetime_days": 365, "audience": "tessera"}))
            .ok::<OrgView>(201).cli("orgs create"),
        route(Method::GET, "/v1/orgs/{org}", "One organization", Token, h!(GET, handlers::orgs_get))
            .ok::<OrgView>(200).cli("orgs show"),
        route(Method::PATCH, "/v1/orgs/{org}", "Rename an organization, change its longest token lifetime (org admin: shorten only; root or managing partner admin: either way), or say whether token owners edit, enable, disable and delete their own tokens (`owners_manage_tokens`, org admin)", Token, h!(PATCH, handlers::orgs_update))
            .body::<UpdateOrg>(json!({"name": "Acme Corp", "max_lifetime_days": 90, "owners_manage_tokens": true}))
            .ok::<OrgView>(200).cli("orgs update"),
        route(Method::GET, "/v1/orgs/{org}/jwks.json", "The organization's public keys (JWKS)", Public, h!(GET, handlers::jwks))
            .answer(200, "The JWK Set", vec![jwk_set]).no_cli("read by edges and resource servers that verify tokens"),
        route(Method::GET, "/v1/orgs/{org}/status-list", "Token status list (raw JSON, or statuslist+jwt); ETag; long-poll with since/wait", Public, h!(GET, handlers::status_list))
            .query::<StatusParams>()
            .answer(200, "The list: JSON, or a signed statuslist+jwt (`format=jwt` or `Accept: application/statuslist+jwt`)", vec![json::<StatusListView>(), status_jwt])
            .answer(304, "Not modified: the list is still at version `since` (or matches `If-None-Match`)", vec![])
            // Past the address's (or the edge credential's) share of waiting polls, or the
            // address's rate of signed lists; an edge credential that is refused.
            .error(&[401, 429]).no_cli("polled by the edges"),
        route(Method::GET, "/v1/orgs/{org}/keys", "The signing keys: which one is active, and until when retired ones stay published (org admin)", Token, h!(GET, handlers::keys_list))
            .ok::<KeyList>(200).cli("orgs keys"),
        route(Method::POST, "/v1/orgs/{org}/keys/rotate", "Rotate the signing key (org admin)", Token, h!(POST, handlers::keys_rotate))
            .body::<RotateKey>(json!({"alg": "ES256"}))
            .ok::<KeyRotated>(200).cli("orgs rotate-key"),
        route(Method::POST, "/v1/orgs/{org}/edge-credentials", "Create an edge credential for /v1/usage (org admin); the secret is shown once", Token, h!(POST, handlers::edges_create))
            .body::<CreateEdge>(json!({"name": "edge-eu-1"}))
            .ok::<EdgeCreated>(201).cli("edges create"),
        route(Method::GET, "/v1/orgs/{org}/users", "Users of an organization (org admin)", Token, h!(GET, handlers::users_list))
            .query::<PageParams>()
            .ok::<UserList>(200).cli("users list"),
        route(Method::POST, "/v1/orgs/{org}/users", "Create a user (org admin)", Token, h!(POST, handlers::users_create))
            .body::<CreateUser>(json!({"username": "bob", "display_name": "Bob", "role": "user", "delegated": false}))
            .ok::<UserView>(201).cli("users create"),
        route(Method::GET, "/v1/users/{id}", "One user, by id or by username in your organization (self or org admin)", Token, h!(GET, handlers::users_get))
            .ok::<UserView>(200).cli("users show"),
        route(Method::PATCH, "/v1/users/{id}", "Change a user (org admin; self: display_name, delegated)", Token, h!(PATCH, handlers::users_update))
            .body::<UpdateUser>(json!({"display_name": "Bob B.", "delegated": true}))
            .ok::<UserView>(200).cli("users update"),
        route(Method::GET, "/v1/tokens", "Search API tokens", Token, h!(GET, handlers::tokens_search))
            .query::<SearchParams>()
            .ok::<TokenPage>(200).cli("tokens list"),
        route(Method::POST, "/v1/tokens", "Create an API token (Pending until its user downloads it)", Token, h!(POST, handlers::tokens_create))
            .body::<CreateToken>(json!({"name": "ci", "description": "CI pipeline", "user": null, "lifetime_days": 90, "not_before": null, "ip_allow": ["10.0.0.0/8"], "scopes": ["read"], "enabled": true}))
            .ok::<TokenView>(201).cli("tokens create"),
        route(Method::GET, "/v1/tokens.csv", "Export API tokens as CSV (same filters as search)", Token, h!(GET, handlers::tokens_csv))
            .query::<SearchParams>()
            .answer(200, "Every matching token, one row each, streamed (columns as in `TokenView`)", vec![csv]).cli("tokens export"),
        route(Method::POST, "/v1/tokens/revoke-all", "Revoke every token of a user, or of an org (org admin)", Token, h!(POST, handlers::tokens_revoke_all))
            .body::<RevokeAll>(json!({"user": "bob"}))
            .ok::<RevokedAll>(200).cli("tokens revoke-all"),
        route(Method::GET, "/v1/tokens/{id}", "One API token", Token, h!(GET, handlers::tokens_get))
            .ok::<TokenView>(200).cli("tokens show"),
        route(Method::PATCH, "/v1/tokens/{id}", "Edit; changing a field inside the JWT revokes the outstanding JWT (back to Pending)", Token, h!(PATCH, handlers::tokens_edit))
            .body::<EditToken>(json!({"name": "ci-2", "description": "", "ip_allow": [], "expires_at": "2030-01-01T00:00:00Z", "not_before": null, "scopes": ["read"], "enabled": true}))
            .ok::<Edited>(200).cli("tokens edit"),
        route(Method::DELETE, "/v1/tokens/{id}", "Delete (cannot be undone; the JWT stays revoked)", Token, h!(DELETE, handlers::tokens_delete))
            .ok::<Deleted>(200).cli("tokens delete"),
        route(Method::POST, "/v1/tokens/{id}/download", "Mint and return the JWT, once (owner only)", Token, h!(POST, handlers::tokens_download))
            .ok::<Minted>(200).cli("tokens download"),
        route(Method::POST, "/v1/tokens/{id}/regenerate", "Mint a new JWT; the previous one is revoked (owner only)", Token, h!(POST, handlers::tokens_regenerate))
            .ok::<Minted>(200).cli("tokens regenerate"),
        route(Method::POST, "/v1/tokens/{id}/rotate", "Rotate: a successor with the same settings (Pending until its owner downloads it); the token keeps working until the successor's first use + grace_secs, or the deadline, then every edge refuses it (`rotated`). `id` may also be the name of one of your tokens", Token, h!(POST, handlers::tokens_rotate))
            .body::<crate::service::rotation::RotateToken>(json!({"grace_secs": 300, "deadline": "2030-01-01T00:00:00Z"}))
            .ok::<crate::service::rotation::Rotated>(201).cli("tokens rotate"),
        route(Method::GET, "/v1/tokens/{id}/rotation", "The rotation of a token, as the old token or as the successor", Token, h!(GET, handlers::tokens_rotation))
            .ok::<crate::service::rotation::RotationView>(200).cli("tokens rotation"),
        route(Method::POST, "/v1/tokens/{id}/revoke", "Revoke (final)", Token, h!(POST, handlers::tokens_revoke))
            .ok::<TokenView>(200).cli("tokens revoke"),
        route(Method::POST, "/v1/tokens/{id}/enable", "Enable a disabled token", Token, h!(POST, handlers::tokens_enable))
            .ok::<TokenView>(200).cli("tokens enable"),
        route(Method::POST, "/v1/tokens/{id}/disable", "Disable (suspend) a token; reversible", Token, h!(POST, handlers::tokens_disable))
            .ok::<TokenView>(200).cli("tokens disable"),
        route(Method::GET, "/v1/tokens/{id}/auth-log", "Authentication log of one token", Token, h!(GET, handlers::tokens_auth_log))
            .query::<LogParams>()
            .ok::<AuthEvents>(200).cli("tokens auth-log"),
        route(Method::GET, "/v1/tokens/{id}/usage", "One token's uses per hour or day, allowed and refused, and the networks they came from (from the authentication log)", Token, h!(GET, handlers::tokens_usage))
            .query::<crate::service::logs::UsageParams>()
            .ok::<crate::service::views::TokenUsage>(200).cli("tokens usage"),
        route(Method::GET, "/v1/auth-log", "Authentication log of the caller's tokens (the org's, for admins)", Token, h!(GET, handlers::auth_log))
            .query::<LogParams>()
            .ok::<AuthEvents>(200).cli("auth-log"),
        route(Method::GET, "/v1/audit-log", "Audit log of management actions (org admin)", Token, h!(GET, handlers::audit_log))
            .query::<AuditParams>()
            .ok::<AuditEntries>(200)
            // `org` names an organization that may not exist.
            .error(&[404]).cli("audit-log"),
        route(Method::POST, "/v1/auth/accesstoken", "Exchange an API token for a short-lived at+jwt (JSON, or RFC 8693 form)", Public, h!(POST, handlers::exchange))
            .body::<ExchangeJson>(json!({"refreshToken": "<api token>"}))
            .form::<ExchangeForm>()
            .ok::<AccessToken>(200)
            .limited().cli("exchange"),
        route(Method::POST, "/v1/secret-scanning/github", "GitHub secret-scanning partner endpoint: found tokens, signed by GitHub; answers each token's label and applies the org's leak policy", Public, h!(POST, scanning::github))
            .body::<scanning::ScannerMatches>(json!([{"token": "tsr_eyJ…", "type": "tessera_api_token", "url": "https://github.com/octo/repo/blob/main/.env", "source": "content"}]))
            .ok::<scanning::ScannerLabels>(200)
            // No or a bad signature; the scanner's keys cannot be fetched (503).
            .error(&[401])
            .limited()
            .no_cli("called by GitHub's secret scanning, signed with GitHub's key"),
        route(Method::POST, "/v1/leaks", "Report leaked tokens (up to 1,000): each one confirmed as ours gets its org's leak policy", Public, h!(POST, scanning::report))
            .body::<scanning::LeakReport>(json!({"tokens": ["tsr_eyJ…"], "url": "https://paste.example/abc", "source": "paste"}))
            .ok::<scanning::LeakReceived>(202)
            .limited()
            .cli("report-leak"),
        route(Method::GET, "/v1/orgs/{org}/leak-policy", "What a confirmed leak of the org's token does (org admin)", Token, h!(GET, handlers::leak_policy_get))
            .ok::<service::leaks::LeakPolicyView>(200)
            .cli("orgs leak-policy"),
        route(Method::PUT, "/v1/orgs/{org}/leak-policy", "Set what a confirmed leak does: revoke (default) or notify_only (org admin)", Token, h!(PUT, handlers::leak_policy_put))
            .body::<service::leaks::SetLeakPolicy>(json!({"policy": "notify_only"}))
            .ok::<service::leaks::LeakPolicyView>(200)
            .cli("orgs leak-policy"),
        route(Method::POST, "/v1/usage", "Usage events from an edge (edge credential)", Edge, h!(POST, handlers::usage))
            .body::<UsageBatch>(json!({"events": [{"token_id": "tok_0123", "at": 1_767_225_600, "ip": "192.0.2.1", "outcome": "allow", "reason": null, "method": "GET", "path": "/v1/things"}]}))
            .ok::<UsageAccepted>(200)
            // A refused edge credential counts against the per-address rate.
            .error(&[429]).no_cli("sent by the edges with their edge credential"),
    ];
    routes.extend(accounts::routes());
    routes.extend(setup::routes());
    routes.extend(scim::routes());
    routes.extend(scopes::routes());
    routes.extend(limits::routes());
    routes.extend(webhooks::routes());
    routes.extend(mail::routes());
    routes.extend(sso::routes());
    routes.extend(introspect::routes());
    routes
}

pub fn app(state: AppState) -> Router {
    let mut router = Router::new();
    for r in routes() {
        let handler = match state.address_limit() {
            Some(limit) if r.limited => r.handler.layer(limit.layer()),
            _ => r.handler,
        };
        router = router.route(r.path, handler);
    }
    router
        .merge(web::router())
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no_route",
                "no such route; see /openapi.json",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this route; see /openapi.json",
            )
        })
        .layer(axum::middleware::from_fn(scim::scim_errors))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            api_use_log,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            same_origin_writes,
        ))
        .layer(axum::middleware::from_fn(request_log))
        .with_state(state)
}

/// Stable reason: a state-changing request a browser sent from another site.
pub const CROSS_SITE: &str = "cross_site_request";

/// A state-changing request (any method but GET, HEAD, OPTIONS) that a browser marks as
/// sent from another site is refused before anything runs: `Sec-Fetch-Site` other than
/// `same-origin` or `none` (typed by the user), or an `Origin` that is neither this
/// service's base URL nor the `Host` the request was sent to. Clients that are not
/// browsers (the CLI, the edges) send neither header. This stands beside the session's
/// CSRF token and the JSON-only bodies, so a sign-in form on another site cannot sign a
/// browser in.
async fn same_origin_writes(
    axum::extract::State(s): axum::extract::State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    use axum::response::IntoResponse as _;
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe {
        if let Some(why) = cross_site(req.headers(), s.base_url()) {
            let mut e = ApiError::new(StatusCode::FORBIDDEN, "forbidden", why);
            e.reason = Some(CROSS_SITE);
            return e.into_response();
        }
    }
    next.run(req).await
}

/// Why the request is a cross-site one, if it is.
fn cross_site(h: &axum::http::HeaderMap, base_url: &str) -> Option<String> {
    let text = |n: &str| {
        h.get(n)
            .map(|v| v.to_str().unwrap_or("?").trim().to_string())
    };
    if let Some(site) = text("sec-fetch-site") {
        if !(site.eq_ignore_ascii_case("same-origin") || site.eq_ignore_ascii_case("none")) {
            return Some(format!(
                "this request came from another site (Sec-Fetch-Site: {site}); changes are accepted only from this service's own page"
            ));
        }
    }
    let origin = text("origin")?;
    let host = text("host").unwrap_or_default();
    let same = |o: &str| {
        let o = o.trim_end_matches('/');
        o.eq_ignore_ascii_case(base_url)
            || o.split_once("://")
                .is_some_and(|(_, rest)| !host.is_empty() && rest.eq_ignore_ascii_case(&host))
    };
    if same(&origin) {
        None
    } else {
        Some(format!(
            "this request came from another origin ({origin}); changes are accepted only from {base_url}"
        ))
    }
}

/// Who acted in a request, filled in by the authenticating extractor for the request log.
#[derive(Clone, Default)]
pub struct ActingSlot(Arc<Mutex<Option<(String, String)>>>);

impl ActingSlot {
    pub fn set(&self, user: &str, credential: &str) {
        if let Ok(mut s) = self.0.lock() {
            *s = Some((user.to_string(), credential.to_string()));
        }
    }

    fn get(&self) -> Option<(String, String)> {
        self.0.lock().ok().and_then(|s| s.clone())
    }
}

/// The use of an API token in a request, filled in by the authenticating extractor and
/// noted once the answer is known ([`api_use_log`]).
#[derive(Clone, Default)]
pub struct PendingUse(Arc<Mutex<Option<crate::model::AuthEvent>>>);

impl PendingUse {
    pub(crate) fn put(&self, e: crate::model::AuthEvent) {
        if let Ok(mut s) = self.0.lock() {
            *s = Some(e);
        }
    }

    fn take(&self) -> Option<crate::model::AuthEvent> {
        self.0.lock().ok().and_then(|mut s| s.take())
    }
}

/// Notes each API use in the authentication log with the decision the caller got: a token
/// that authenticated but was then refused (403: no `tessera:manage` on a management route,
/// an access token there, a role or creator bound; 401: revoked meanwhile) is a `deny` with
/// the reason of the answer, not an `allow`.
async fn api_use_log(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let pending = PendingUse::default();
    req.extensions_mut().insert(pending.clone());
    let resp = next.run(req).await;
    if let Some(mut e) = pending.take() {
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let answered = resp
                .extensions()
                .get::<error::RefusalReason>()
                .and_then(|r| r.0);
            let fallback = if status == StatusCode::FORBIDDEN {
                "forbidden"
            } else {
                "unauthorized"
            };
            e.reason = Some(
                answered
                    .map(str::to_string)
                    .or(e.reason.take())
                    .unwrap_or_else(|| fallback.to_string()),
            );
            e.outcome = "deny".into();
        }
        s.note_api_use(e);
    }
    resp
}

static REQUEST_IDS: AtomicU64 = AtomicU64::new(1);

/// One log line per request: a request id (the client's `x-request-id` when it sent a
/// sane one), method, route (never the raw path, which may carry ids), status, latency,
/// the acting user and credential id, and the refusal reason. Never a token or secret.
async fn request_log(mut req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| format!("r{}", REQUEST_IDS.fetch_add(1, Ordering::Relaxed)));
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("(no route)", |p| p.as_str())
        .to_string();
    let slot = ActingSlot::default();
    req.extensions_mut().insert(slot.clone());
    let span = tracing::info_span!("request", id = %id, method = %method, route = %route);
    let _enter = span.enter();
    drop(_enter);
    let mut resp = {
        use tracing::Instrument as _;
        next.run(req).instrument(span.clone()).await
    };
    let status = resp.status().as_u16();
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let reason = resp
        .extensions()
        .get::<error::RefusalReason>()
        .and_then(|r| r.0)
        .unwrap_or("");
    let (user, credential) = slot.get().unwrap_or_default();
    let _enter = span.enter();
    tracing::info!(status, latency_ms, user = %user, credential = %credential, reason, "request");
    if let Ok(v) = axum::http::HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    // An answer that says nothing of caching is never stored: many carry a secret (a JWT
    // downloaded once, a link, an edge secret, a CSRF token) or a person's data. Lists
    // and keys meant for caches (status lists, JWKS, the page's files) say their own.
    resp.headers_mut()
        .entry(axum::http::header::CACHE_CONTROL)
        .or_insert(axum::http::HeaderValue::from_static("no-store"));
    resp
}

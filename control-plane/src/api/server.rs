//! The listener of `tessera serve`: HTTP/1.1 connections served by hyper with its
//! header-read timeout, tower-http's request-body timeout, a cap on open connections with
//! a share per client address, and a graceful shutdown bounded in time (hyper-util's
//! `GracefulShutdown`).
//!
//! One address (an IPv6 client by its /64) holds at most `max_connections_per_address`
//! of the open connections: past its share, a new connection of that address gets one
//! 429 answer and is closed, so a single client can neither take every connection nor
//! starve `/healthz` and the edges' status-list polls.
//!
//! hyper starts its header-read timer whenever a connection waits for a request head, so
//! the same timeout drops a client that sends its headers too slowly and a keep-alive
//! connection left idle after its last answer. A body that stalls longer than the body
//! timeout between two chunks ends the request (408), and so does a body still arriving
//! when the body deadline, counted from the request head, has passed: a client dripping a
//! byte just inside every stall timeout cannot hold a connection for long.

use super::AppState;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceBuilder;
use tower_http::timeout::RequestBodyTimeoutLayer;

/// When a request's body must have arrived in full (request extension; `read_body`
/// answers 408 past it).
#[derive(Debug, Clone, Copy)]
pub struct BodyDeadline(pub tokio::time::Instant);

/// How connections are held.
#[derive(Debug, Clone, Copy)]
pub struct ServerOptions {
    /// Longest wait for a complete request head, also the idle keep-alive timeout.
    pub header_timeout: Duration,
    /// Longest wait for the next chunk of a request body.
    pub body_timeout: Duration,
    /// Longest time to receive a whole request body, from the request head.
    pub body_deadline: Duration,
    /// Connections open at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// Connections one client address (IPv6: its /64) may hold open at once; past it, a
    /// new connection is answered 429 and closed.
    pub max_connections_per_address: usize,
    /// After the shutdown signal: the longest wait for requests in flight to finish.
    pub shutdown_grace: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            body_deadline: Duration::from_secs(30),
            max_connections: 512,
            max_connections_per_address: 64,
            shutdown_grace: Duration::from_secs(4),
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes; then stops accepting, ends
/// the long polls (`AppState::begin_shutdown`), lets the requests in flight finish, and
/// returns within `shutdown_grace`, closing whatever is still open (a half-sent request).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    state: AppState,
    opts: ServerOptions,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(opts.max_connections.max(1)));
    let shares = Shares::default();
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(opts.header_timeout);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors, or a connection reset before it was accepted:
                    // pause briefly instead of spinning on the error.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let Some(share) = shares.take(peer.ip(), opts.max_connections_per_address) else {
            drop(permit);
            let conn = http.serve_connection(
                TokioIo::new(stream),
                hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(over_share())
                }),
            );
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
            });
            continue;
        };
        let svc = ServiceBuilder::new()
            .map_request(move |mut req: axum::http::Request<_>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req.extensions_mut().insert(BodyDeadline(
                    tokio::time::Instant::now() + opts.body_deadline,
                ));
                req
            })
            .layer(RequestBodyTimeoutLayer::new(opts.body_timeout))
            .service(router.clone());
        let conn = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
            drop(share);
            drop(permit);
        });
    }
    drop(listener);
    state.begin_shutdown();
    if tokio::time::timeout(opts.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_ms = opts.shutdown_grace.as_millis() as u64,
            "connections still open after the shutdown grace; closing them"
        );
    }
}

/// The answer to a connection past its address's share: 429, then the connection closes.
fn over_share() -> axum::response::Response {
    let mut resp = super::ApiError::retry_after(
        "too_many_requests",
        Some("too_many_connections"),
        "too many open connections from this address; close some and retry",
        1,
    );
    resp.headers_mut().insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    resp
}

/// Places held per holder: open connections or long polls per client address (IPv6 by
/// its /64, as the rate limit counts), long polls per edge credential.
#[derive(Clone)]
pub struct Shares<K: Hash + Eq + Clone = IpAddr>(Arc<Mutex<HashMap<K, usize>>>);

impl<K: Hash + Eq + Clone> Default for Shares<K> {
    fn default() -> Self {
        Shares(Arc::default())
    }
}

/// One place counted against its holder; dropping it gives the place back.
pub struct Share<K: Hash + Eq + Clone = IpAddr> {
    shares: Shares<K>,
    key: K,
}

impl Shares<IpAddr> {
    /// Counts one more for `ip`'s address, unless it already holds `max`.
    pub fn take(&self, ip: IpAddr, max: usize) -> Option<Share> {
        self.take_for(super::limit::bucket(ip), max)
    }
}

impl<K: Hash + Eq + Clone> Shares<K> {
    /// Counts one more for `key`, unless it already holds `max`.
    pub fn take_for(&self, key: K, max: usize) -> Option<Share<K>> {
        let mut map = self.0.lock().ok()?;
        let n = map.entry(key.clone()).or_insert(0);
        if *n >= max.max(1) {
            return None;
        }
        *n += 1;
        Some(Share {
            shares: self.clone(),
            key,
        })
    }
}

impl<K: Hash + Eq + Clone> Drop for Share<K> {
    fn drop(&mut self) {
        if let Ok(mut map) = self.shares.0.lock() {
            if let Some(n) = map.get_mut(&self.key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(&self.key);
                }
            }
        }
    }
}

//! The per-address rate limit of unauthenticated requests: token exchange, usage reports
//! with a refused edge credential (and sign-in, through the same [`AddressLimit::layer`]).
//! Past the rate a client gets 429 `rate_limited` with `Retry-After`. The buckets are
//! governor's (through tower_governor), keyed by the peer's IP address — an IPv6 client
//! by its /64, which one host usually holds whole.

use super::ApiError;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tower_governor::governor::{GovernorConfig, GovernorConfigBuilder};
use tower_governor::key_extractor::KeyExtractor;
use tower_governor::{GovernorError, GovernorLayer};

/// Requests per minute per address, after a burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// The sustained rate; 0 turns the limit off.
    pub per_minute: u32,
    /// How many may come at once before the rate applies.
    pub burst: u32,
}

/// The bucket key of a request: its peer's address (`tessera serve` records it on every
/// request); an in-process request without one counts as loopback.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddress;

/// An address as the limit counts it: IPv4 whole, IPv6 by its /64.
pub fn bucket(ip: IpAddr) -> IpAddr {
    crate::service::sessions::address_bucket(ip)
}

impl KeyExtractor for PeerAddress {
    type Key = IpAddr;

    fn extract<T>(&self, req: &Request<T>) -> Result<IpAddr, GovernorError> {
        Ok(bucket(
            req.extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |c| c.0.ip()),
        ))
    }
}

type Config = GovernorConfig<PeerAddress, NoOpMiddleware>;

/// One set of per-address buckets, shared by every route it guards.
#[derive(Clone)]
pub struct AddressLimit {
    config: Arc<Config>,
}

impl AddressLimit {
    /// `None` when the rate is 0 (no limit).
    pub fn new(rate: RateLimit) -> Option<Self> {
        if rate.per_minute == 0 {
            return None;
        }
        let period = Duration::from_millis(60_000 / u64::from(rate.per_minute))
            .max(Duration::from_millis(1));
        let config = GovernorConfigBuilder::default()
            .key_extractor(PeerAddress)
            .period(period)
            .burst_size(rate.burst.max(1))
            .finish()?;
        Some(AddressLimit {
            config: Arc::new(config),
        })
    }

    /// The tower layer that answers 429 past the rate; apply it to a route.
    pub fn layer(&self) -> GovernorLayer<PeerAddress, NoOpMiddleware, Body> {
        GovernorLayer::new(self.config.clone()).error_handler(|e| match e {
            GovernorError::TooManyRequests { wait_time, .. } => too_many(wait_time),
            other => ApiError::internal(other).into_response_body(),
        })
    }

    /// Counts one request from `peer` against the same buckets (for a request that is
    /// limited only when it fails, such as a refused edge credential); past the rate, the
    /// 429 to answer with.
    pub fn check(&self, peer: Option<SocketAddr>) -> Option<Response<Body>> {
        let ip = bucket(peer.map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |p| p.ip()));
        let not_until = self.config.limiter().check_key(&ip).err()?;
        Some(too_many(
            not_until
                .wait_time_from(DefaultClock::default().now())
                .as_secs(),
        ))
    }

    /// Forgets the buckets of addresses that are back to full (call now and then, so
    /// that the map does not grow with every address ever seen).
    pub fn forget_idle(&self) {
        self.config.limiter().retain_recent();
    }
}

/// 429 `rate_limited` with `Retry-After`.
fn too_many(wait_secs: u64) -> Response<Body> {
    let wait = wait_secs.max(1);
    ApiError::retry_after(
        "rate_limited",
        None,
        format!("too many requests from this address; retry in {wait} s"),
        wait,
    )
}

impl ApiError {
    fn into_response_body(self) -> Response<Body> {
        axum::response::IntoResponse::into_response(self)
    }
}

//! Tessera's control plane: organizations, users, roles, the API-token lifecycle, status
//! lists, token exchange and logs, served over HTTP from an embedded SQLite database.
//!
//! Three layers, each knowing only the one below: `api` (HTTP: extractors, handlers, the
//! mapping of errors to responses), `service` (the operations, by resource, with typed
//! inputs, views and errors), `store` (transactions over the database, behind traits).

#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod client;
pub mod crypto;
pub mod csv;
pub mod model;
pub mod oidc;
pub mod openapi;
pub mod policy;
pub mod service;
pub mod store;
pub mod telemetry;
pub mod timefmt;

pub use api::{app, AppState, Config};

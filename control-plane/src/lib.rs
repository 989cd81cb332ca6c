//! Tessera's control plane: organizations, users, roles, the API-token lifecycle, status
//! lists, token exchange and logs, served over HTTP from an embedded SQLite database.

#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod cli;
pub mod client;
pub mod crypto;
pub mod csv;
pub mod error;
pub mod model;
pub mod openapi;
pub mod policy;
pub mod service;
pub mod statuslist;
pub mod store;
pub mod telemetry;
pub mod timefmt;

pub use api::{app, AppState, Config};

//! `doc-server`: serves a directory of Markdown documents as a small JSON API
//! with health, readiness and Prometheus metrics endpoints.
//!
//! The binary is a thin wrapper around this library ([`cli::main`]); keeping
//! the router and the serve loop here lets integration tests run the real
//! server in-process.

pub mod cli;
pub mod client;
pub mod config;
pub mod conn;
pub mod docs;
pub mod metrics;
pub mod server;
pub mod smoke;

pub use config::{Config, ConfigError, DocsLimits, Limits, SearchLimits};
pub use conn::{CutOff, DrainEnd, ServeConfig, ServeOutcome, serve, serve_admin};
pub use docs::{Answer, Doc, DocStore, LoadError};
pub use server::{
    AppState, Phase, SERVICE_NAME, admin_app, admin_routes, app, routes, with_middleware,
};

use std::fmt::Display;
use std::io::Write;

/// Writes one log line to stderr.
///
/// Lines carry no timestamp: the container runtime already stamps each line,
/// and a second clock in the message only adds noise. Write errors are
/// ignored on purpose, because a closed stderr must not take the server down
/// (unlike `eprintln!`, which would panic).
pub fn log(msg: impl Display) {
    let _ = writeln!(std::io::stderr().lock(), "doc-server: {msg}");
}

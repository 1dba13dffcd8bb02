//! Portcullis: an authorization enforcement gateway on pingora.
//!
//! Every request flows one way: canonicalize → route → authenticate → build the Cedar request
//! → authorize → forward or deny → log. The stages are pure modules (`canonical`, `routes`,
//! `authn`, `authz`, `pipeline`, `response`); `proxy` and `server` are the thin pingora glue,
//! and `upstream` holds the pools behind it.

pub mod admin;
pub mod authn;
pub mod authz;
pub mod bundle;
pub mod canonical;
pub mod check;
pub mod cli;
pub mod config;
pub mod decision_log;
pub mod demo;
pub mod directory;
pub mod explain;
pub mod ext_authz;
pub mod http_body;
pub mod http_server;
pub mod identity_headers;
pub mod inputs;
pub mod metrics;
pub mod offline;
pub mod pipeline;
pub mod policy_test;
pub mod proxy;
pub mod reload;
pub mod response;
pub mod routes;
pub mod secret;
pub mod server;
pub mod snapshot;
pub mod telemetry;
pub mod tls;
pub mod trust;
pub mod upstream;

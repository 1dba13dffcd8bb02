//! The integration tests, in one binary (pingora, cedar and the gateway are linked once): each
//! module is one area, exercised with the real gateway over real sockets; `edge` is the edge
//! data plane with third-party clients and proxies (curl, nginx, Caddy, a registry).

#[path = "../common/mod.rs"]
mod common;
mod config_errors;
mod connection_limits;
mod context_and_audit;
mod edge;
mod explain;
mod gateway;
mod header_trust;
mod identity_providers;
mod lifecycle;
mod operations;
mod path_corpus;
mod policy_suites;
mod properties;
mod run_command;
mod scope_slicing;
mod smuggling;
mod token_attacks;

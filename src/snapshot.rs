//! Everything one request needs, swapped atomically as a whole on reload.
//!
//! A request loads the current snapshot once and uses it to the end, so a reload never mixes
//! old routes with new policies. Static settings and the issuers' key stores live beside it in
//! `Gateway`: they outlive reloads.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::authn::Authenticator;
use crate::authz::{PolicyBundle, RouteAuthz};
use crate::config::Settings;
use crate::routes::RouteTable;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// A valid bearer token is required.
    Required,
    /// No token is looked at; the principal is the configured anonymous entity.
    Anonymous,
}

/// What happens when the policies deny a request on a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnforcementMode {
    /// The request is refused (403).
    Enforce,
    /// The request is forwarded anyway; the decision log records the deny (shadow mode).
    Audit,
}

impl EnforcementMode {
    pub fn as_str(self) -> &'static str {
        match self {
            EnforcementMode::Enforce => "enforce",
            EnforcementMode::Audit => "audit",
        }
    }
}

#[derive(Debug)]
pub struct Upstream {
    pub name: String,
    /// Resolved when the snapshot is built, never on the request path.
    pub address: std::net::SocketAddr,
}

/// A route as the request path needs it.
#[derive(Debug)]
pub struct CompiledRoute {
    pub id: String,
    /// Line of the route in routes.toml.
    pub line: usize,
    pub upstream: Arc<Upstream>,
    pub auth: AuthMode,
    pub mode: EnforcementMode,
    pub authz: RouteAuthz,
}

/// Routes and policies, compiled together.
pub struct Snapshot {
    pub version: u64,
    pub routes: RouteTable<CompiledRoute>,
    pub bundle: PolicyBundle,
}

/// The running gateway's state.
pub struct Gateway {
    pub settings: Settings,
    pub authenticator: Arc<Authenticator>,
    snapshot: ArcSwap<Snapshot>,
}

impl Gateway {
    pub fn new(settings: Settings, authenticator: Authenticator, snapshot: Snapshot) -> Self {
        Gateway {
            settings,
            authenticator: Arc::new(authenticator),
            snapshot: ArcSwap::from_pointee(snapshot),
        }
    }

    /// The snapshot a new request should use.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Fetches every issuer's keys once. Returns the issuers whose keys could not be fetched.
    pub async fn fetch_keys(&self) -> Vec<String> {
        self.authenticator.fetch_keys().await
    }

    /// Starts the background key refresh of every issuer on the current tokio runtime.
    pub fn spawn_key_refresh(&self) {
        for issuer in self.authenticator.issuers() {
            tokio::spawn(
                self.authenticator
                    .clone()
                    .refresh_periodically(issuer.clone()),
            );
        }
    }
}

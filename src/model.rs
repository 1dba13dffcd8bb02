//! The compiled model a request is decided with: routes as the pipeline needs them, and the
//! snapshot that holds routes, policies, caches and upstream pools together. Built by
//! `config::load_snapshot`, held by `snapshot::Gateway`.

use std::sync::Arc;

use crate::authz::{DecisionCache, PolicyBundle, PrincipalMemo, RouteAuthz};
use crate::routes::RouteTable;
use crate::upstream::{Pool, Pools};

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

/// A route as the request path needs it.
#[derive(Debug)]
pub struct CompiledRoute {
    pub id: Arc<str>,
    /// The Cedar action, as the decision log names it.
    pub action_name: Arc<str>,
    /// Line of the route in routes.toml.
    pub line: usize,
    pub upstream: Arc<Pool>,
    pub auth: AuthMode,
    pub mode: EnforcementMode,
    pub authz: RouteAuthz,
    /// Protocol upgrades tunneled after a permit (`"websocket"`); empty: `Upgrade` is stripped.
    pub upgrades: Vec<String>,
    pub max_body_bytes: u64,
}

/// Routes and policies, compiled together.
pub struct Snapshot {
    pub version: u64,
    /// The version of the synced directory merged into the bundle's entities, if any.
    pub directory: Option<Arc<str>>,
    /// Synced entities that `entities.json` overrides.
    pub directory_conflicts: usize,
    pub routes: RouteTable<CompiledRoute>,
    pub bundle: PolicyBundle,
    /// Principals built for this snapshot, by identity.
    pub principals: PrincipalMemo,
    /// Decisions made with this snapshot, by everything they depend on.
    pub decisions: DecisionCache,
    /// The upstream pools the routes send to.
    pub pools: Pools,
}

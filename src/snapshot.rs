//! Everything one request needs, swapped atomically as a whole on reload.
//!
//! A request loads the current snapshot once and uses it to the end, so a reload never mixes
//! old routes with new policies. Static settings and the issuers' key stores live beside it in
//! `Gateway`: they outlive reloads.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::authn::Authenticator;
use crate::authz::{DecisionCache, PolicyBundle, PrincipalMemo, RouteAuthz};
use crate::config::{load_snapshot, ConfigError, Settings};
use crate::metrics::Metrics;
use crate::reload::fingerprint;
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
    pub routes: RouteTable<CompiledRoute>,
    pub bundle: PolicyBundle,
    /// Principals built for this snapshot, by identity.
    pub principals: PrincipalMemo,
    /// Decisions made with this snapshot, by everything they depend on.
    pub decisions: DecisionCache,
    /// The upstream pools the routes send to.
    pub pools: Pools,
}

/// The running gateway's state.
pub struct Gateway {
    pub settings: Settings,
    pub authenticator: Arc<Authenticator>,
    pub metrics: Metrics,
    snapshot: ArcSwap<Snapshot>,
    /// Serializes reloads, so versions increase in the order snapshots are swapped in; holds
    /// the fingerprint of the files the last load (good or bad) read.
    last_inputs: Mutex<Vec<u8>>,
    /// Set once a shutdown or upgrade has begun.
    draining: AtomicBool,
    /// Set once upstream pools run their discovery and health checks; the pools of every
    /// later snapshot are started as it is swapped in.
    pools_started: AtomicBool,
}

impl Gateway {
    pub fn new(settings: Settings, authenticator: Authenticator, snapshot: Snapshot) -> Self {
        let metrics = Metrics::new();
        metrics.snapshot_loaded(snapshot.version);
        let inputs = fingerprint(&settings.routes_file, &settings.policies_dir);
        Gateway {
            settings,
            authenticator: Arc::new(authenticator),
            metrics,
            snapshot: ArcSwap::from_pointee(snapshot),
            last_inputs: Mutex::new(inputs),
            draining: AtomicBool::new(false),
            pools_started: AtomicBool::new(false),
        }
    }

    /// Marks the gateway as shutting down (readiness turns false).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// The snapshot a new request should use.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Loads routes and policies from disk into a new snapshot and swaps it in. Requests that
    /// already pinned the old snapshot finish on it. On any error the running snapshot stays,
    /// and the failure is counted. Returns the new version.
    pub fn reload(&self) -> Result<u64, ConfigError> {
        let mut last_inputs = self.lock_reloads();
        *last_inputs = fingerprint(&self.settings.routes_file, &self.settings.policies_dir);
        self.load_next()
    }

    /// `reload`, only if the files differ from those the last load (good or bad) read: a file
    /// event that changed nothing makes no new snapshot, and a broken file is not retried
    /// until it changes. `None` when nothing changed.
    pub fn reload_if_changed(&self) -> Option<Result<u64, ConfigError>> {
        let mut last_inputs = self.lock_reloads();
        let current = fingerprint(&self.settings.routes_file, &self.settings.policies_dir);
        if *last_inputs == current {
            return None;
        }
        *last_inputs = current;
        Some(self.load_next())
    }

    fn lock_reloads(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.last_inputs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts the upstream pools' discovery and health checks on the current tokio runtime,
    /// now and for every snapshot swapped in later.
    pub fn start_pools(&self) {
        // Under the reload lock: a reload in between cannot swap in pools that nobody starts.
        let _reloads = self.lock_reloads();
        self.pools_started.store(true, Ordering::Release);
        self.snapshot.load().pools.start();
    }

    fn load_next(&self) -> Result<u64, ConfigError> {
        let current = self.snapshot.load_full();
        let version = current.version + 1;
        match load_snapshot(&self.settings, version, Some(&current)) {
            Ok(snapshot) => {
                if self.pools_started.load(Ordering::Acquire) {
                    snapshot.pools.start();
                }
                self.snapshot.store(Arc::new(snapshot));
                self.metrics.snapshot_loaded(version);
                Ok(version)
            }
            Err(e) => {
                self.metrics.reload_failed();
                Err(e)
            }
        }
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

//! The running gateway: the current snapshot (`model::Snapshot`, everything one request
//! needs), swapped atomically as a whole on reload, beside what outlives reloads (settings,
//! the issuers' key stores, metrics, the directory and bundle status).
//!
//! A request loads the current snapshot once and uses it to the end, so a reload never mixes
//! old routes with new policies.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::authn::Authenticator;
use crate::bundle::puller::{self, BundleStatus};
use crate::bundle::registry;
use crate::config::{load_snapshot, ConfigError, Settings};
use crate::directory::{Directory, DirectoryStatus, SyncError, Syncer};
use crate::inputs::fingerprint;
use crate::metrics::Metrics;
pub use crate::model::{AuthMode, CompiledRoute, EnforcementMode, Snapshot};

/// What the next snapshot is built from, besides the settings.
struct ReloadInputs {
    /// The fingerprint of the files the last load (good or bad) read.
    files: Vec<u8>,
    /// The synced directory the running snapshot uses.
    directory: Option<Arc<Directory>>,
}

/// The running gateway's state.
pub struct Gateway {
    pub settings: Settings,
    pub authenticator: Arc<Authenticator>,
    pub metrics: Metrics,
    snapshot: ArcSwap<Snapshot>,
    /// Serializes reloads, so versions increase in the order snapshots are swapped in.
    reloads: Mutex<ReloadInputs>,
    /// How the directory sources are doing (empty without `[directory]`).
    pub directory_status: Arc<DirectoryStatus>,
    /// The active policy bundle (empty without `[bundle]`).
    pub bundle_status: Arc<BundleStatus>,
    /// Set once a shutdown or upgrade has begun.
    draining: AtomicBool,
    /// Set once upstream pools run their discovery and health checks; the pools of every
    /// later snapshot are started as it is swapped in.
    pools_started: AtomicBool,
}

impl Gateway {
    /// `directory` is the synced directory `snapshot` was built with (from the cache file).
    pub fn new(
        settings: Settings,
        authenticator: Authenticator,
        snapshot: Snapshot,
        directory: Option<Arc<Directory>>,
    ) -> Self {
        let metrics = Metrics::new();
        metrics.snapshot_loaded(snapshot.version);
        let files = fingerprint(&settings.routes_file, &settings.policies_dir);
        let directory_status = Arc::new(DirectoryStatus::new(
            settings
                .directory
                .iter()
                .flat_map(|d| d.sources.iter().map(|s| s.name.clone())),
        ));
        if let Some(directory) = &directory {
            directory_status.restored(directory, snapshot.directory_conflicts);
        }
        Gateway {
            settings,
            authenticator: Arc::new(authenticator),
            metrics,
            snapshot: ArcSwap::from_pointee(snapshot),
            reloads: Mutex::new(ReloadInputs { files, directory }),
            directory_status,
            bundle_status: Arc::default(),
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
        let mut inputs = self.lock_reloads();
        inputs.files = fingerprint(&self.settings.routes_file, &self.settings.policies_dir);
        self.load_next(inputs.directory.as_ref())
    }

    /// `reload`, only if the files differ from those the last load (good or bad) read: a file
    /// event that changed nothing makes no new snapshot, and a broken file is not retried
    /// until it changes. `None` when nothing changed.
    pub fn reload_if_changed(&self) -> Option<Result<u64, ConfigError>> {
        let mut inputs = self.lock_reloads();
        let current = fingerprint(&self.settings.routes_file, &self.settings.policies_dir);
        if inputs.files == current {
            return None;
        }
        inputs.files = current;
        Some(self.load_next(inputs.directory.as_ref()))
    }

    /// Builds a snapshot with a newly synced directory and swaps it in; the directory is kept
    /// for later reloads only if that worked. Returns how many synced entities
    /// `entities.json` overrides.
    pub fn apply_directory(&self, directory: Arc<Directory>) -> Result<usize, ConfigError> {
        let mut inputs = self.lock_reloads();
        self.load_next(Some(&directory))?;
        inputs.directory = Some(directory);
        Ok(self.snapshot().directory_conflicts)
    }

    fn lock_reloads(&self) -> std::sync::MutexGuard<'_, ReloadInputs> {
        self.reloads
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

    fn load_next(&self, directory: Option<&Arc<Directory>>) -> Result<u64, ConfigError> {
        let current = self.snapshot.load_full();
        let version = current.version + 1;
        match load_snapshot(&self.settings, version, Some(&current), directory) {
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

    /// Starts the directory sync (now, then every interval) on the current tokio runtime,
    /// when `[directory]` is configured.
    pub fn spawn_directory_sync(self: &Arc<Self>) -> Result<(), SyncError> {
        let Some(settings) = &self.settings.directory else {
            return Ok(());
        };
        let current = self.lock_reloads().directory.clone();
        let syncer = Syncer::new(settings, self.directory_status.clone(), current)?;
        let gateway = self.clone();
        tokio::spawn(syncer.run(Box::new(move |directory| {
            gateway
                .apply_directory(directory)
                .map_err(|e| e.to_string())
        })));
        Ok(())
    }

    /// Polls the bundle's registry every `poll_seconds` on the current tokio runtime, when
    /// `[bundle]` is configured: a new, verified, newer bundle is swapped in and reloaded; a
    /// refused one (or one the reload refuses) leaves the active one.
    pub fn spawn_bundle_poll(self: &Arc<Self>) {
        let Some(settings) = self.settings.bundle.clone() else {
            return;
        };
        let gateway = self.clone();
        tokio::spawn(async move {
            let registry = match registry::for_settings(&settings) {
                Ok(registry) => registry,
                Err(e) => {
                    log::error!("bundle polling cannot start: {e}");
                    return;
                }
            };
            loop {
                tokio::time::sleep(settings.poll).await;
                let status = &gateway.bundle_status;
                let verified =
                    match puller::check(&registry, &settings.reference, &settings.trusted, status)
                        .await
                    {
                        Ok(Some(verified)) => verified,
                        Ok(None) => continue,
                        Err(e) => {
                            puller::refused(status, &e);
                            continue;
                        }
                    };
                let swapping = gateway.clone();
                let cache_dir = settings.cache_dir.clone();
                let swapped = tokio::task::spawn_blocking(move || {
                    swapping.swap_bundle(&cache_dir, &verified)
                })
                .await;
                match swapped {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => puller::refused(&gateway.bundle_status, &e),
                    Err(e) => log::error!("the bundle swap did not finish: {e}"),
                }
            }
        });
    }

    /// Unpacks `verified`, points the active bundle at it and reloads; on a refused reload,
    /// points back.
    fn swap_bundle(
        &self,
        cache_dir: &std::path::Path,
        verified: &registry::Verified,
    ) -> Result<(), crate::bundle::BundleError> {
        let (active, previous) = puller::install(cache_dir, verified)?;
        match self.reload() {
            Ok(version) => {
                puller::record_active(cache_dir, &active, previous.as_deref())?;
                log::info!(
                    "bundle {} (version {}, signed by {}) active: snapshot {version}",
                    active.digest,
                    active.version,
                    active.key_id
                );
                self.bundle_status.set_active(active, true);
                Ok(())
            }
            Err(e) => {
                if let Some(previous) = previous {
                    puller::point_active(cache_dir, &previous)?;
                }
                Err(crate::bundle::BundleError::Format(format!(
                    "bundle {} does not load, the active one stays: {e}",
                    active.digest
                )))
            }
        }
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

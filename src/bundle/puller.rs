//! The gateway side: the active bundle lives in `<cache_dir>/<digest>/`, and
//! `<cache_dir>/active` is a symlink to it, which `routes.toml` and `policies/` are read
//! through (as from a Kubernetes ConfigMap volume). A poll asks the registry for the
//! reference's digest (one HEAD); a new one is pulled and verified (`registry`), refused if
//! older than the active version (unless the reference pins a digest), unpacked beside the
//! active one, and switched to by swapping the symlink and reloading; if the reload refuses
//! it, the symlink goes back. The active bundle stays on disk for a restart with the
//! registry down.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::registry::{Registry, Verified};
use super::signature::TrustedKey;
use super::BundleError;

/// Where the active bundle is read from, relative to the cache directory.
pub const ACTIVE: &str = "active";
const ACTIVE_RECORD: &str = "active.json";

/// What the gateway knows about its bundle, for `/readyz` and the metrics.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ActiveBundle {
    pub digest: String,
    pub version: u64,
    pub key_id: String,
    /// When it became active (Unix seconds).
    pub activated_at: u64,
}

#[derive(Debug, Default)]
pub struct BundleStatus {
    inner: Mutex<StatusInner>,
}

#[derive(Debug, Default)]
struct StatusInner {
    active: Option<ActiveBundle>,
    last_check: Option<u64>,
    last_error: Option<String>,
    activations: u64,
    failures: std::collections::BTreeMap<&'static str, u64>,
}

impl BundleStatus {
    fn lock(&self) -> std::sync::MutexGuard<'_, StatusInner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn active(&self) -> Option<ActiveBundle> {
        self.lock().active.clone()
    }

    pub fn activations(&self) -> u64 {
        self.lock().activations
    }

    pub fn failures(&self) -> Vec<(&'static str, u64)> {
        self.lock().failures.iter().map(|(k, v)| (*k, *v)).collect()
    }

    pub fn describe(&self) -> Value {
        let inner = self.lock();
        let now = unix_now();
        json!({
            "digest": inner.active.as_ref().map(|a| &a.digest),
            "version": inner.active.as_ref().map(|a| a.version),
            "signed_by": inner.active.as_ref().map(|a| &a.key_id),
            "age_seconds": inner.active.as_ref().map(|a| now.saturating_sub(a.activated_at)),
            "last_check_seconds_ago": inner.last_check.map(|c| now.saturating_sub(c)),
            "last_error": inner.last_error,
        })
    }

    pub fn set_active(&self, active: ActiveBundle, counted: bool) {
        let mut inner = self.lock();
        inner.active = Some(active);
        inner.last_error = None;
        if counted {
            inner.activations += 1;
        }
    }

    fn checked(&self) {
        self.lock().last_check = Some(unix_now());
    }

    fn failed(&self, kind: &'static str, error: &str) {
        let mut inner = self.lock();
        inner.last_error = Some(error.to_string());
        *inner.failures.entry(kind).or_default() += 1;
    }
}

/// Why a bundle was refused, as the metric's label.
pub fn failure_kind(error: &BundleError) -> &'static str {
    match error {
        BundleError::Signature(message) if message.contains("not signed") => "unsigned",
        BundleError::Signature(message) if message.contains("not trusted") => "untrusted_key",
        BundleError::Signature(message) if message.contains("tampered") => "tampered",
        BundleError::Signature(_) => "bad_signature",
        BundleError::Downgrade(_) => "downgrade",
        BundleError::Format(_) => "invalid",
        BundleError::Registry(_) => "registry",
        BundleError::Io { .. } => "io",
    }
}

/// The active bundle's record in the cache directory, if there is one.
pub fn read_active(cache_dir: &Path) -> Option<ActiveBundle> {
    let text = std::fs::read_to_string(cache_dir.join(ACTIVE_RECORD)).ok()?;
    let active: ActiveBundle = serde_json::from_str(&text).ok()?;
    cache_dir
        .join(ACTIVE)
        .join("routes.toml")
        .exists()
        .then_some(active)
}

/// Unpacks a verified bundle beside the active one and points `active` at it. Returns the
/// directory `active` pointed at before, to go back to.
pub fn activate(cache_dir: &Path, verified: &Verified) -> Result<Option<PathBuf>, BundleError> {
    std::fs::create_dir_all(cache_dir).map_err(|e| io(cache_dir, e))?;
    let name = verified.digest.replace(':', "-");
    let target = cache_dir.join(&name);
    if !target.exists() {
        let staging = cache_dir.join(format!("{name}.partial"));
        let _ = std::fs::remove_dir_all(&staging);
        verified.bundle.unpack(&staging)?;
        std::fs::rename(&staging, &target).map_err(|e| io(&target, e))?;
    }
    let previous = std::fs::read_link(cache_dir.join(ACTIVE)).ok();
    point_active(cache_dir, Path::new(&name))?;
    Ok(previous)
}

/// Swaps the `active` symlink to `target` (relative to the cache directory) atomically.
pub fn point_active(cache_dir: &Path, target: &Path) -> Result<(), BundleError> {
    let link = cache_dir.join(format!("{ACTIVE}.new"));
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(target, &link).map_err(|e| io(&link, e))?;
    std::fs::rename(&link, cache_dir.join(ACTIVE)).map_err(|e| io(cache_dir, e))
}

/// Records the active bundle, and removes bundles older than it and the one before.
pub fn record_active(
    cache_dir: &Path,
    active: &ActiveBundle,
    keep: Option<&Path>,
) -> Result<(), BundleError> {
    let path = cache_dir.join(ACTIVE_RECORD);
    let temporary = cache_dir.join(format!("{ACTIVE_RECORD}.new"));
    let text = serde_json::to_vec(active).map_err(|e| BundleError::Format(e.to_string()))?;
    std::fs::write(&temporary, text).map_err(|e| io(&temporary, e))?;
    std::fs::rename(&temporary, &path).map_err(|e| io(&path, e))?;
    let current = active.digest.replace(':', "-");
    if let Ok(entries) = std::fs::read_dir(cache_dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let kept = name == current || keep.is_some_and(|k| k.as_os_str() == name.as_str());
            if name.starts_with("sha256-") && !kept {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    Ok(())
}

/// One poll: `Ok(None)` when the digest has not changed, the verified new bundle otherwise.
/// An older version than the active one is refused unless the reference pins a digest.
pub async fn check(
    registry: &Registry,
    reference: &str,
    trusted: &[TrustedKey],
    status: &BundleStatus,
) -> Result<Option<Verified>, BundleError> {
    status.checked();
    let active = status.active();
    let digest = registry.current_digest(reference).await?;
    if active.as_ref().is_some_and(|a| a.digest == digest) {
        return Ok(None);
    }
    let verified = registry.pull_verified(reference, trusted).await?;
    let pinned = reference.contains("@sha256:");
    if let Some(active) = active {
        if !pinned && verified.bundle.version <= active.version && verified.digest != active.digest
        {
            return Err(BundleError::Downgrade(format!(
                "the registry offers version {} ({}), not newer than the active {}: a downgrade is refused (pin a digest to roll back)",
                verified.bundle.version, verified.digest, active.version
            )));
        }
    }
    Ok(Some(verified))
}

/// Records a refused bundle: status, log line (the metric reads the status).
pub fn refused(status: &BundleStatus, error: &BundleError) {
    let kind = failure_kind(error);
    log::error!("bundle refused ({kind}), keeping the active one: {error}");
    status.failed(kind, &error.to_string());
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn io(path: &Path, error: std::io::Error) -> BundleError {
    BundleError::Io {
        path: path.display().to_string(),
        reason: error.to_string(),
    }
}

/// Makes a verified bundle the active one on disk and records it; returns the directory the
/// previous `active` pointed at.
pub fn install(
    cache_dir: &Path,
    verified: &Verified,
) -> Result<(ActiveBundle, Option<PathBuf>), BundleError> {
    let previous = activate(cache_dir, verified)?;
    let active = ActiveBundle {
        digest: verified.digest.clone(),
        version: verified.bundle.version,
        key_id: verified.key_id.clone(),
        activated_at: unix_now(),
    };
    Ok((active, previous))
}

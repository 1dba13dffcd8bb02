//! How each source's syncs went, for `/readyz` and `/metrics` (read when they are asked).

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

/// One source's record.
#[derive(Debug, Clone, Default)]
pub struct SourceStatus {
    pub name: String,
    /// Entities in the source's last good result.
    pub entities: usize,
    /// When the last good result was fetched (possibly by an earlier process: the cache file).
    pub last_success: Option<SystemTime>,
    pub last_duration: Option<Duration>,
    pub successes: u64,
    pub failures: u64,
    pub rate_limited: u64,
    /// Why the last sync failed, when the last one did.
    pub last_error: Option<String>,
}

/// Every source's record, and the directory the running snapshot uses.
#[derive(Debug, Default)]
pub struct DirectoryStatus {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    sources: Vec<SourceStatus>,
    version: Option<String>,
    /// Synced entities that `entities.json` overrides.
    conflicts: usize,
}

impl DirectoryStatus {
    pub fn new(names: impl IntoIterator<Item = String>) -> Self {
        let sources = names
            .into_iter()
            .map(|name| SourceStatus {
                name,
                ..SourceStatus::default()
            })
            .collect();
        DirectoryStatus {
            inner: Mutex::new(Inner {
                sources,
                ..Inner::default()
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn update(&self, name: &str, change: impl FnOnce(&mut SourceStatus)) {
        if let Some(source) = self.lock().sources.iter_mut().find(|s| s.name == name) {
            change(source);
        }
    }

    /// Records the directory read from the cache file at start.
    pub fn restored(&self, directory: &super::Directory, conflicts: usize) {
        for source in &directory.sources {
            self.update(&source.source, |s| {
                s.entities = source.entities.len();
                s.last_success =
                    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(source.synced_at));
            });
        }
        self.applied(&directory.version, conflicts);
    }

    /// Records the directory a new snapshot was built with.
    pub fn applied(&self, version: &str, conflicts: usize) {
        let mut inner = self.lock();
        inner.version = Some(version.to_string());
        inner.conflicts = conflicts;
    }

    pub fn sources(&self) -> Vec<SourceStatus> {
        self.lock().sources.clone()
    }

    pub fn conflicts(&self) -> usize {
        self.lock().conflicts
    }

    /// A directory is in use (synced now, or read from the cache file).
    pub fn has_directory(&self) -> bool {
        self.lock().version.is_some()
    }

    /// The age of the oldest source's last good result.
    pub fn age(&self, now: SystemTime) -> Option<Duration> {
        let inner = self.lock();
        let oldest = inner.sources.iter().map(|s| s.last_success).min()??;
        Some(now.duration_since(oldest).unwrap_or_default())
    }

    /// `/readyz`'s account.
    pub fn describe(&self, now: SystemTime) -> Value {
        let age = self.age(now).map(|a| a.as_secs());
        let inner = self.lock();
        let sources: Vec<Value> = inner
            .sources
            .iter()
            .map(|s| {
                json!({
                    "name": s.name,
                    "entities": s.entities,
                    "age_seconds": s.last_success.map(|t| now.duration_since(t).unwrap_or_default().as_secs()),
                    "last_error": s.last_error,
                })
            })
            .collect();
        json!({
            "version": inner.version,
            "age_seconds": age,
            "conflicts": inner.conflicts,
            "sources": sources,
        })
    }
}

//! The sync loop: every source in turn, then one new snapshot if anything changed, then
//! sleep for the interval. A source that fails keeps its last good entities; a directory the
//! snapshot builder refuses (an entity the schema rejects) is not kept, and the running
//! snapshot stays. What was applied is written to the cache file.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::api::ApiClient;
use super::auth0::Auth0;
use super::cache_file::write_cache_file;
use super::okta::Okta;
use super::settings::{DirectorySettings, SourceKind};
use super::status::DirectoryStatus;
use super::{Directory, SourceEntities, SyncError, SyncedEntity};

enum Reader {
    Auth0(Auth0),
    Okta(Okta),
}

struct Source {
    name: String,
    reader: Reader,
    client: ApiClient,
}

impl Source {
    async fn fetch(&self) -> Result<(Vec<SyncedEntity>, usize), SyncError> {
        match &self.reader {
            Reader::Auth0(auth0) => auth0.fetch(&self.client).await,
            Reader::Okta(okta) => okta.fetch(&self.client).await,
        }
    }
}

/// Builds and swaps in a snapshot with the given directory; says why not on failure.
pub type Apply = Box<dyn Fn(Arc<Directory>) -> Result<usize, String> + Send + Sync>;

pub struct Syncer {
    settings: DirectorySettings,
    sources: Vec<Source>,
    status: Arc<DirectoryStatus>,
    /// What the running snapshot uses.
    current: Option<Arc<Directory>>,
}

impl Syncer {
    /// `current` is the directory the first snapshot was built with (from the cache file).
    pub fn new(
        settings: &DirectorySettings,
        status: Arc<DirectoryStatus>,
        current: Option<Arc<Directory>>,
    ) -> Result<Self, SyncError> {
        let sources = settings
            .sources
            .iter()
            .map(|source| {
                let reader = match &source.kind {
                    SourceKind::Auth0(auth0) => Reader::Auth0(Auth0::new(source, auth0)),
                    SourceKind::Okta {
                        auth,
                        groups,
                        group_search,
                    } => Reader::Okta(Okta::new(
                        source,
                        auth,
                        groups.as_ref(),
                        group_search.as_deref(),
                    )),
                };
                Ok(Source {
                    name: source.name.clone(),
                    reader,
                    client: ApiClient::new(settings.request_timeout)?,
                })
            })
            .collect::<Result<_, SyncError>>()?;
        Ok(Syncer {
            settings: settings.clone(),
            sources,
            status,
            current,
        })
    }

    /// Syncs now and then every interval, for ever. `apply` runs on a blocking thread.
    pub async fn run(mut self, apply: Apply) {
        let apply = Arc::new(apply);
        loop {
            self.sync_once(&apply).await;
            tokio::time::sleep(self.settings.interval).await;
        }
    }

    /// One full sync of every source; applies the result when it differs from the current
    /// directory.
    pub async fn sync_once(&mut self, apply: &Arc<Apply>) {
        let mut results = Vec::new();
        let mut fetched = Vec::new();
        for source in &self.sources {
            let started = Instant::now();
            let result = source.fetch().await;
            let duration = started.elapsed();
            let rate_limited = source.client.rate_limited();
            self.status.update(&source.name, |s| {
                s.last_duration = Some(duration);
                s.rate_limited = rate_limited;
            });
            match result {
                Ok((entities, unmapped)) => {
                    log::info!(
                        "directory source {}: {} entities in {:.1} s{}",
                        source.name,
                        entities.len(),
                        duration.as_secs_f64(),
                        if unmapped > 0 {
                            format!("; {unmapped} records without an id were skipped")
                        } else {
                            String::new()
                        }
                    );
                    fetched.push(source.name.clone());
                    results.push(SourceEntities {
                        source: source.name.clone(),
                        synced_at: unix_now(),
                        entities,
                    });
                }
                Err(e) => {
                    log::warn!(
                        "directory source {}: sync failed, keeping its last good entities: {e}",
                        source.name
                    );
                    self.status
                        .update(&source.name, |s| failed(s, e.to_string()));
                    // The source's last good entities, if it ever had any.
                    if let Some(previous) = self
                        .current
                        .as_ref()
                        .and_then(|d| d.sources.iter().find(|s| s.source == source.name))
                    {
                        results.push(previous.clone());
                    }
                }
            }
        }
        if results.is_empty() {
            // No source has ever synced: there is no directory to use yet.
            return;
        }
        let candidate = Arc::new(Directory::new(results));
        if self
            .current
            .as_ref()
            .is_none_or(|current| current.version != candidate.version)
        {
            let applying = candidate.clone();
            let apply = apply.clone();
            let applied = tokio::task::spawn_blocking(move || apply(applying))
                .await
                .map_err(|e| e.to_string())
                .and_then(|result| result);
            match applied {
                Ok(conflicts) => {
                    log::info!(
                        "directory {} in use ({} entities{})",
                        candidate.version,
                        candidate.entity_count(),
                        if conflicts > 0 {
                            format!("; entities.json overrides {conflicts} of them")
                        } else {
                            String::new()
                        }
                    );
                    self.status.applied(&candidate.version, conflicts);
                }
                Err(reason) => {
                    log::error!(
                        "directory sync: the synced entities were not applied, the running snapshot stays: {reason}"
                    );
                    for name in &fetched {
                        self.status.update(name, |s| failed(s, reason.clone()));
                    }
                    return;
                }
            }
        }
        for source in &candidate.sources {
            if fetched.contains(&source.source) {
                self.status.update(&source.source, |s| {
                    s.entities = source.entities.len();
                    s.successes += 1;
                    s.last_success = Some(UNIX_EPOCH + Duration::from_secs(source.synced_at));
                    s.last_error = None;
                });
            }
        }
        self.persist(&candidate);
        self.current = Some(candidate);
    }

    fn persist(&self, directory: &Directory) {
        if let Some(path) = &self.settings.cache_file {
            if let Err(e) = write_cache_file(path, directory) {
                log::warn!("{e}; a restart while the API is down would serve an older directory");
            }
        }
    }
}

fn failed(status: &mut super::SourceStatus, reason: String) {
    status.failures += 1;
    status.last_error = Some(reason);
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

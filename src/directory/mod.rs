//! Directory sync: users, roles, groups and organizations read from the identity provider's
//! management API (Auth0, Okta) become Cedar entities, merged with `policies/entities.json`
//! into every snapshot.
//!
//! A source only produces entities, off the request path; the snapshot builder merges them and
//! validates the result against the schema like any reload. Each source keeps its last good
//! result: a failed or partial sync changes nothing, and the last good directory is persisted
//! so that a restart while the API is down still serves it.
//!
//! The parts: `settings` (what `[directory]` compiles to), `builder` (IdP records → entities,
//! pure), `api` (HTTP with rate limits and retries), `auth0` and `okta` (the two APIs),
//! `cache_file` (the persisted directory), `sync` (the loop) and `status` (what `/readyz` and
//! the metrics report).

mod api;
mod auth0;
mod builder;
mod cache_file;
mod okta;
mod settings;
mod status;
mod sync;

use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use builder::{DirectoryBuilder, EntityMapping, FieldPath, Uid};
pub use cache_file::{read_cache_file, CacheFileError};
pub use settings::{
    Auth0Settings, DirectorySettings, OktaAuth, OrganizationRoles, Secret, SourceKind,
    SourceSettings,
};
pub use status::{DirectoryStatus, SourceStatus};
pub use sync::Syncer;

/// One synced entity, in Cedar's entity JSON shape (`uid`, `attrs`, `parents`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncedEntity {
    pub uid: EntityRef,
    pub attrs: Map<String, Value>,
    pub parents: Vec<EntityRef>,
}

/// A Cedar entity uid as entity JSON writes it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntityRef {
    #[serde(rename = "type")]
    pub entity_type: String,
    pub id: String,
}

impl std::fmt::Display for EntityRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}::{}", self.entity_type, Value::from(self.id.as_str()))
    }
}

/// What one source's last good sync produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceEntities {
    pub source: String,
    /// Seconds since the Unix epoch.
    pub synced_at: u64,
    pub entities: Vec<SyncedEntity>,
}

/// The synced directory: every source's last good entities. Sources are in configuration
/// order; when two produce the same uid, the first one's entity is used.
#[derive(Debug, Clone, PartialEq)]
pub struct Directory {
    pub sources: Vec<SourceEntities>,
    /// A digest of the content, as the decision log and `/readyz` name it.
    pub version: Arc<str>,
}

impl Directory {
    pub fn new(sources: Vec<SourceEntities>) -> Self {
        let version = content_version(&sources);
        Directory { sources, version }
    }

    pub fn entity_count(&self) -> usize {
        self.sources.iter().map(|s| s.entities.len()).sum()
    }

    /// When the oldest source was last synced.
    pub fn oldest_sync(&self) -> Option<SystemTime> {
        self.sources
            .iter()
            .map(|s| SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(s.synced_at))
            .min()
    }
}

/// The first 16 hex digits of the SHA-256 of the sources' entities (not their sync times: a
/// sync that changed nothing keeps the version).
fn content_version(sources: &[SourceEntities]) -> Arc<str> {
    let mut hash = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for source in sources {
        hash.update(source.source.as_bytes());
        hash.update(b"\0");
        // Plain data: serialization cannot fail.
        hash.update(&serde_json::to_vec(&source.entities).unwrap_or_default());
    }
    hash.finish()
        .as_ref()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        .into()
}

/// Why a source's sync failed. Messages name the source and the URL, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{0}")]
    Secret(String),
    #[error("GET/POST {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url}: still rate limited after {waits} waits")]
    RateLimited { url: String, waits: u32 },
    #[error("{url}: the response is larger than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error("{url}: {reason}")]
    Malformed { url: String, reason: String },
    #[error("credentials: {0}")]
    Credentials(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entity(id: &str) -> SyncedEntity {
        SyncedEntity {
            uid: EntityRef {
                entity_type: "User".into(),
                id: id.into(),
            },
            attrs: Map::new(),
            parents: vec![],
        }
    }

    #[test]
    fn the_version_follows_content_not_sync_time() {
        let source = |at, ids: &[&str]| SourceEntities {
            source: "auth0".into(),
            synced_at: at,
            entities: ids.iter().map(|id| entity(id)).collect(),
        };
        let first = Directory::new(vec![source(1, &["a"])]);
        assert_eq!(
            first.version,
            Directory::new(vec![source(2, &["a"])]).version
        );
        assert_ne!(
            first.version,
            Directory::new(vec![source(1, &["b"])]).version
        );
        assert_eq!(first.version.len(), 16);
    }
}

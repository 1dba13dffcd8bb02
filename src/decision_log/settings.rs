//! What `[decision_log]` compiles to (`config::decision_log` checks it).

use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;

use crate::secret::Secret;

/// Where decision records go.
#[derive(Debug, Clone)]
pub enum DecisionSink {
    Stdout,
    File(PathBuf),
    Http(HttpSink),
}

/// Decision records shipped to a collector: spooled on disk first, POSTed in batches, deleted
/// once the collector answered 2xx.
#[derive(Debug, Clone)]
pub struct HttpSink {
    pub url: Url,
    pub format: ShipFormat,
    pub token: Option<Secret>,
    pub spool_dir: PathBuf,
    pub spool_max_bytes: u64,
    pub batch_bytes: u64,
    pub batch_interval: Duration,
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShipFormat {
    /// One JSON record per line, `Content-Type: application/x-ndjson`.
    Ndjson,
    /// Splunk's HTTP Event Collector: `{"event": record, ...}` objects, `Authorization: Splunk`.
    SplunkHec,
}

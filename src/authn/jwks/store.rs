//! The live key set of one issuer: the last good set, a generation bumped on every change
//! (which invalidates cached tokens), one fetch at a time, at most one fetch per cooldown for
//! tokens naming an unknown `kid`, and the background refresh schedule.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;

use super::fetch::{FetchPolicy, Fetcher, KeySource};
use super::keys::{JwksError, KeySet};

/// The live key set of one issuer.
pub struct KeyStore {
    fetcher: Fetcher,
    policy: FetchPolicy,
    keys: ArcSwapOption<KeySet>,
    /// Bumped whenever the key set changes.
    generation: AtomicU64,
    /// Delay before the next background refresh, in milliseconds.
    next_refresh_ms: AtomicU64,
    /// Held while a fetch runs (single flight); holds the time of the last fetch triggered
    /// by an unknown `kid`, which the cooldown is measured from.
    fetch_gate: tokio::sync::Mutex<Option<Instant>>,
    fetch_successes: AtomicU64,
    fetch_failures: AtomicU64,
}

/// How many key fetches succeeded and failed since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FetchCounts {
    pub successes: u64,
    pub failures: u64,
}

impl KeyStore {
    pub fn new(source: KeySource, policy: FetchPolicy) -> Result<Self, JwksError> {
        Ok(KeyStore {
            fetcher: Fetcher::new(source, &policy)?,
            policy,
            keys: ArcSwapOption::empty(),
            generation: AtomicU64::new(0),
            next_refresh_ms: AtomicU64::new(duration_ms(policy.refresh_every)),
            fetch_gate: tokio::sync::Mutex::new(None),
            fetch_successes: AtomicU64::new(0),
            fetch_failures: AtomicU64::new(0),
        })
    }

    /// A store holding `keys` for good; refreshing it changes nothing.
    pub fn preloaded(keys: KeySet, policy: FetchPolicy) -> Result<Self, JwksError> {
        let store = KeyStore::new(KeySource::Inline, policy)?;
        store.keys.store(Some(Arc::new(keys)));
        store.generation.store(1, Ordering::Release);
        Ok(store)
    }

    /// The current key set, if one was ever fetched.
    pub fn current(&self) -> Option<Arc<KeySet>> {
        self.keys.load_full()
    }

    pub fn fetch_counts(&self) -> FetchCounts {
        FetchCounts {
            successes: self.fetch_successes.load(Ordering::Relaxed),
            failures: self.fetch_failures.load(Ordering::Relaxed),
        }
    }

    /// Changes every time the key set changes; 0 until the first fetch succeeds.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Fetches now (after any fetch already running). Returns whether the key set changed.
    pub async fn refresh(&self) -> bool {
        let _gate = self.fetch_gate.lock().await;
        self.fetch_and_store().await
    }

    /// Called when a token names a `kid` the current set lacks: fetches unless the last such
    /// fetch was less than the cooldown ago. Concurrent callers wait for the one fetch in
    /// flight instead of starting their own. Returns whether the key set changed.
    pub async fn refresh_for_unknown_kid(&self) -> bool {
        let mut last_on_demand = self.fetch_gate.lock().await;
        if last_on_demand.is_some_and(|at| at.elapsed() < self.policy.unknown_kid_cooldown) {
            return false;
        }
        *last_on_demand = Some(Instant::now());
        self.fetch_and_store().await
    }

    async fn fetch_and_store(&self) -> bool {
        let (next, changed) = match self.fetcher.fetch().await {
            Ok((set, max_age)) => {
                self.fetch_successes.fetch_add(1, Ordering::Relaxed);
                let changed = self
                    .current()
                    .is_none_or(|old| old.fingerprint != set.fingerprint);
                if changed {
                    log::info!(
                        "{}: key set loaded ({} keys)",
                        self.fetcher.describe(),
                        set.len()
                    );
                    self.keys.store(Some(Arc::new(set)));
                    self.generation.fetch_add(1, Ordering::AcqRel);
                }
                (self.policy.refresh_after(max_age), changed)
            }
            Err(e) => {
                self.fetch_failures.fetch_add(1, Ordering::Relaxed);
                log::warn!("{e}; keeping the last good key set");
                let retry = if self.current().is_some() {
                    self.policy.unknown_kid_cooldown
                } else {
                    // Until the first success, retry soon (but never in a tight loop).
                    self.policy.unknown_kid_cooldown.min(Duration::from_secs(5))
                };
                (retry, false)
            }
        };
        self.next_refresh_ms
            .store(duration_ms(next), Ordering::Release);
        changed
    }

    /// How long the background refresh should wait before the next fetch.
    pub fn next_refresh(&self) -> Duration {
        Duration::from_millis(self.next_refresh_ms.load(Ordering::Acquire))
    }
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

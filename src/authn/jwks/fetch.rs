//! Fetching an issuer's key set over HTTP(S): OIDC discovery when no `jwks_uri` is configured,
//! the JWKS itself, its `Cache-Control: max-age`, a deadline per request and a cap on every body
//! (a hostile or broken issuer cannot make the gateway read without end). What a fetch returns
//! is parsed by `keys`; keeping it is `store`'s job.

use std::time::Duration;

use serde::Deserialize;

use super::keys::{JwksError, KeySet};

/// Where an issuer's keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    JwksUri(String),
    /// OIDC discovery: `{issuer}/.well-known/openid-configuration` names the `jwks_uri`.
    Discovery {
        issuer: String,
    },
    /// A key set given at construction and never fetched (`portcullis test` and `explain`
    /// sign their tokens with keys of their own).
    Inline,
}

/// Timing of fetches for one issuer.
#[derive(Debug, Clone, Copy)]
pub struct FetchPolicy {
    /// Refresh interval when the JWKS response carries no `max-age`.
    pub refresh_every: Duration,
    /// Bounds on the refresh interval, whatever `max-age` says.
    pub refresh_min: Duration,
    pub refresh_max: Duration,
    /// Minimum time between two fetches triggered by unknown `kid`s; also the retry delay
    /// after a failed background fetch.
    pub unknown_kid_cooldown: Duration,
    pub timeout: Duration,
}

impl FetchPolicy {
    /// The delay before the next background refresh after a successful fetch.
    pub(super) fn refresh_after(&self, max_age: Option<Duration>) -> Duration {
        max_age
            .unwrap_or(self.refresh_every)
            .clamp(self.refresh_min, self.refresh_max.max(self.refresh_min))
    }
}

/// `max-age` of a `Cache-Control` value; `no-cache`/`no-store` count as zero.
fn max_age(cache_control: &str) -> Option<Duration> {
    let mut found = None;
    for directive in cache_control.split(',') {
        let directive = directive.trim();
        let (name, value) = directive.split_once('=').unwrap_or((directive, ""));
        if name.eq_ignore_ascii_case("no-cache") || name.eq_ignore_ascii_case("no-store") {
            return Some(Duration::ZERO);
        }
        if name.eq_ignore_ascii_case("max-age") {
            found = value
                .trim_matches('"')
                .parse()
                .ok()
                .map(Duration::from_secs);
        }
    }
    found
}

/// The largest discovery document or JWKS read. Auth0's and Okta's are a few KiB; a larger
/// answer is an error (the last good key set stays), not a reason to fill memory.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// Fetches one issuer's key set from where its `KeySource` says.
pub(super) struct Fetcher {
    source: KeySource,
    client: reqwest::Client,
    /// `jwks_uri` found by discovery, kept once known.
    discovered_uri: tokio::sync::Mutex<Option<String>>,
}

impl Fetcher {
    pub(super) fn new(source: KeySource, policy: &FetchPolicy) -> Result<Self, JwksError> {
        let client = reqwest::Client::builder()
            .timeout(policy.timeout)
            .redirect(reqwest::redirect::Policy::limited(3))
            // Fetches are rare and may run on different runtimes (startup, refresh thread,
            // proxy workers): pooled connections would be tied to one of them.
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| JwksError::Fetch {
                url: String::new(),
                reason: e.to_string(),
            })?;
        Ok(Fetcher {
            source,
            client,
            discovered_uri: tokio::sync::Mutex::new(None),
        })
    }

    /// What the log calls this source.
    pub(super) fn describe(&self) -> &str {
        match &self.source {
            KeySource::JwksUri(uri) => uri,
            KeySource::Discovery { issuer } => issuer,
            KeySource::Inline => "inline key set",
        }
    }

    /// The key set, parsed, and the JWKS response's `max-age`.
    pub(super) async fn fetch(&self) -> Result<(KeySet, Option<Duration>), JwksError> {
        let uri = self.jwks_uri().await?;
        let (body, max_age) = self.get(&uri).await?;
        Ok((KeySet::parse(&uri, &body)?, max_age))
    }

    async fn jwks_uri(&self) -> Result<String, JwksError> {
        let issuer = match &self.source {
            KeySource::JwksUri(uri) => return Ok(uri.clone()),
            KeySource::Discovery { issuer } => issuer,
            KeySource::Inline => {
                return Err(JwksError::Fetch {
                    url: String::new(),
                    reason: "an inline key set is never fetched".to_string(),
                })
            }
        };
        let mut known = self.discovered_uri.lock().await;
        if let Some(uri) = known.as_ref() {
            return Ok(uri.clone());
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let (body, _) = self.get(&url).await?;
        #[derive(Deserialize)]
        struct Discovery {
            issuer: String,
            jwks_uri: String,
        }
        let document: Discovery =
            serde_json::from_slice(&body).map_err(|e| JwksError::Document {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        if document.issuer != *issuer {
            return Err(JwksError::Document {
                url,
                reason: format!(
                    "it names issuer {:?}, not the configured {issuer:?}",
                    document.issuer
                ),
            });
        }
        *known = Some(document.jwks_uri.clone());
        Ok(document.jwks_uri)
    }

    /// GETs a JSON document; returns its body and `Cache-Control: max-age`.
    async fn get(&self, url: &str) -> Result<(bytes::Bytes, Option<Duration>), JwksError> {
        let fail = |reason: String| JwksError::Fetch {
            url: url.to_string(),
            reason,
        };
        let response = self
            .client
            .get(url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| fail(e.to_string()))?;
        if !response.status().is_success() {
            return Err(fail(format!("status {}", response.status())));
        }
        let max_age = response
            .headers()
            .get(http::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(max_age);
        let body = crate::http_body::read_capped(response, MAX_DOCUMENT_BYTES)
            .await
            .map_err(|e| fail(e.to_string()))?;
        Ok((bytes::Bytes::from(body), max_age))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_sets_the_refresh_interval_within_bounds() {
        assert_eq!(
            max_age("public, max-age=15, stale-if-error=86400"),
            Some(Duration::from_secs(15))
        );
        assert_eq!(max_age("Max-Age=\"600\""), Some(Duration::from_secs(600)));
        assert_eq!(max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(max_age("public"), None);
        assert_eq!(max_age("max-age=soon"), None);
        let policy = FetchPolicy {
            refresh_every: Duration::from_secs(300),
            refresh_min: Duration::from_secs(60),
            refresh_max: Duration::from_secs(3600),
            unknown_kid_cooldown: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
        };
        let secs = |s| Some(Duration::from_secs(s));
        assert_eq!(policy.refresh_after(None), Duration::from_secs(300));
        assert_eq!(policy.refresh_after(secs(15)), Duration::from_secs(60));
        assert_eq!(policy.refresh_after(secs(900)), Duration::from_secs(900));
        assert_eq!(policy.refresh_after(secs(86400)), Duration::from_secs(3600));
    }
}

//! HTTP for the management APIs: a size cap on every body, a deadline on every request,
//! rate limits honoured and transient failures retried, so that one 429 or 503 slows a sync
//! down instead of failing it.
//!
//! Auth0 answers 429 with `X-RateLimit-Reset` (Unix seconds); Okta sends
//! `X-Rate-Limit-Remaining` / `X-Rate-Limit-Reset` on every response. Either reset time is
//! waited for (bounded); without one, the wait doubles from half a second.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::SyncError;
use crate::http_body::{self, BodyError};

/// The largest response body read (a page of 200 Okta users is about 400 KiB).
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;
/// The largest compressed export file read (a 100,000-user export is a few MiB).
const MAX_EXPORT_BYTES: usize = 1024 * 1024 * 1024;
/// How many 429s one request may wait out before the sync gives up.
const MAX_RATE_LIMIT_WAITS: u32 = 30;
/// How many times one request is tried when the API fails (5xx, timeout, connection).
const MAX_ATTEMPTS: u32 = 4;
/// The longest single wait, whatever a reset header says.
const MAX_WAIT: Duration = Duration::from_secs(60);
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// A response that arrived whole.
pub struct Answer {
    pub body: Value,
    pub headers: HeaderMap,
}

pub struct ApiClient {
    http: reqwest::Client,
    /// When Okta said no calls remain in the window: no request before then.
    quiet_until: Mutex<Option<Instant>>,
    rate_limited: AtomicU64,
}

impl ApiClient {
    pub fn new(timeout: Duration) -> Result<Self, SyncError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            // A redirect would carry the API credentials elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| SyncError::Credentials(format!("cannot build the HTTP client: {e}")))?;
        Ok(ApiClient {
            http,
            quiet_until: Mutex::new(None),
            rate_limited: AtomicU64::new(0),
        })
    }

    /// How many rate-limit waits this client has made.
    pub fn rate_limited(&self) -> u64 {
        self.rate_limited.load(Ordering::Relaxed)
    }

    pub async fn get(&self, url: &Url, authorization: &str) -> Result<Answer, SyncError> {
        self.send(Method::GET, url, Some(authorization), None).await
    }

    /// POSTs a JSON `body` with credentials (creating an export job).
    pub async fn post_authorized(
        &self,
        url: &Url,
        authorization: &str,
        body: String,
    ) -> Result<Answer, SyncError> {
        self.send(
            Method::POST,
            url,
            Some(authorization),
            Some(("application/json", body)),
        )
        .await
    }

    /// POSTs `body` (of `content_type`), for a token exchange.
    pub async fn post(
        &self,
        url: &Url,
        content_type: &'static str,
        body: String,
    ) -> Result<Answer, SyncError> {
        self.send(Method::POST, url, None, Some((content_type, body)))
            .await
    }

    async fn send(
        &self,
        method: Method,
        url: &Url,
        authorization: Option<&str>,
        body: Option<(&'static str, String)>,
    ) -> Result<Answer, SyncError> {
        let response = self
            .send_until_answered(method, url, authorization, body)
            .await?;
        let headers = response.headers().clone();
        let bytes = read_capped(response, url).await?;
        let body = serde_json::from_slice(&bytes).map_err(|e| SyncError::Malformed {
            url: url.to_string(),
            reason: format!("the body is not JSON: {e}"),
        })?;
        Ok(Answer { body, headers })
    }

    /// GETs a gzip-compressed file of JSON lines (an Auth0 export), without credentials (its
    /// URL is signed), and hands each line to `each` as it is decompressed: a 100,000-user
    /// export is never held whole.
    pub async fn get_gzip_lines(
        &self,
        url: &Url,
        mut each: impl FnMut(&[u8]) -> Result<(), SyncError>,
    ) -> Result<(), SyncError> {
        let mut response = self
            .send_until_answered(Method::GET, url, None, None)
            .await?;
        let mut decoder = flate2::write::GzDecoder::new(Vec::new());
        let mut read = 0;
        let corrupt = |e: std::io::Error| SyncError::Malformed {
            url: url.to_string(),
            reason: format!("the export is not gzip: {e}"),
        };
        loop {
            let chunk = response.chunk().await.map_err(|e| SyncError::Unreachable {
                url: url.to_string(),
                reason: format!("the body was cut off: {e}"),
            })?;
            let Some(chunk) = chunk else { break };
            read += chunk.len();
            if read > MAX_EXPORT_BYTES {
                return Err(SyncError::TooLarge {
                    url: url.to_string(),
                    limit: MAX_EXPORT_BYTES,
                });
            }
            decoder.write_all(&chunk).map_err(corrupt)?;
            let lines = decoder.get_mut();
            let complete = lines.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            for line in lines[..complete].split(|b| *b == b'\n') {
                each(line)?;
            }
            lines.drain(..complete);
            if lines.len() > MAX_BODY_BYTES {
                return Err(SyncError::TooLarge {
                    url: url.to_string(),
                    limit: MAX_BODY_BYTES,
                });
            }
        }
        let rest = decoder.finish().map_err(corrupt)?;
        for line in rest.split(|b| *b == b'\n') {
            each(line)?;
        }
        Ok(())
    }

    /// Sends until the API answers with success: 429s are waited out, failures (5xx,
    /// timeouts, refused connections) retried with a doubling backoff. Any other status is an
    /// error with the start of its body.
    async fn send_until_answered(
        &self,
        method: Method,
        url: &Url,
        authorization: Option<&str>,
        body: Option<(&'static str, String)>,
    ) -> Result<reqwest::Response, SyncError> {
        let mut rate_limit_waits = 0;
        let mut failures = 0;
        let mut backoff = FIRST_BACKOFF;
        loop {
            self.wait_for_quota().await;
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .header(ACCEPT, "application/json");
            if let Some(authorization) = authorization {
                let mut value = HeaderValue::from_str(authorization).map_err(|_| {
                    SyncError::Credentials("the credential is not a valid header value".into())
                })?;
                value.set_sensitive(true);
                request = request.header(AUTHORIZATION, value);
            }
            if let Some((content_type, body)) = &body {
                request = request
                    .header(CONTENT_TYPE, *content_type)
                    .body(body.clone());
            }
            let reason = match request.send().await {
                Ok(response) => {
                    self.note_quota(response.headers()).await;
                    let status = response.status();
                    if status == StatusCode::TOO_MANY_REQUESTS {
                        rate_limit_waits += 1;
                        self.rate_limited.fetch_add(1, Ordering::Relaxed);
                        if rate_limit_waits > MAX_RATE_LIMIT_WAITS {
                            return Err(SyncError::RateLimited {
                                url: url.to_string(),
                                waits: MAX_RATE_LIMIT_WAITS,
                            });
                        }
                        let wait = reset_wait(response.headers()).unwrap_or(backoff);
                        backoff = (backoff * 2).min(MAX_WAIT);
                        log::debug!("{url}: rate limited; waiting {wait:?}");
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    if status.is_success() {
                        return Ok(response);
                    }
                    if !status.is_server_error() {
                        let bytes = read_capped(response, url).await.unwrap_or_default();
                        return Err(SyncError::Status {
                            url: url.to_string(),
                            status: status.as_u16(),
                            body: excerpt(&bytes),
                        });
                    }
                    format!("answered {status}")
                }
                Err(e) => e.to_string(),
            };
            failures += 1;
            if failures >= MAX_ATTEMPTS {
                return Err(SyncError::Unreachable {
                    url: url.to_string(),
                    reason: format!("{reason} ({failures} attempts)"),
                });
            }
            log::debug!("{url}: {reason}; retrying in {backoff:?}");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_WAIT);
        }
    }

    async fn wait_for_quota(&self) {
        let until = *self.quiet_until.lock().await;
        if let Some(until) = until {
            tokio::time::sleep_until(until).await;
        }
    }

    /// Okta's headers: with no calls left in the window, the next request waits for its reset.
    async fn note_quota(&self, headers: &HeaderMap) {
        let remaining = header_number(headers, "x-rate-limit-remaining");
        let mut quiet_until = self.quiet_until.lock().await;
        *quiet_until = match (remaining, reset_wait(headers)) {
            (Some(0), Some(wait)) => Some(Instant::now() + wait),
            _ => None,
        };
    }
}

/// The wait until the rate-limit window resets, from `X-RateLimit-Reset` (Auth0) or
/// `X-Rate-Limit-Reset` (Okta), both in Unix seconds; at least a tenth of a second (the
/// header's resolution is a second), at most `MAX_WAIT`.
fn reset_wait(headers: &HeaderMap) -> Option<Duration> {
    let reset = header_number(headers, "x-ratelimit-reset")
        .or_else(|| header_number(headers, "x-rate-limit-reset"))?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
    let wait = Duration::from_secs(reset).saturating_sub(now);
    Some(wait.clamp(Duration::from_millis(100), MAX_WAIT))
}

fn header_number(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

async fn read_capped(response: reqwest::Response, url: &Url) -> Result<Vec<u8>, SyncError> {
    http_body::read_capped(response, MAX_BODY_BYTES)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge(limit) => SyncError::TooLarge {
                url: url.to_string(),
                limit,
            },
            BodyError::CutOff(reason) => SyncError::Unreachable {
                url: url.to_string(),
                reason: format!("the body was cut off: {reason}"),
            },
        })
}

/// The start of an error body, for the log (APIs explain a 403 there: a missing scope).
fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out: String = text.chars().take(300).collect();
    if text.chars().count() > 300 {
        out.push('…');
    }
    out
}

/// The `rel="next"` target of a `Link` header (Okta's pagination), if any.
pub fn next_link(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(reqwest::header::LINK)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find_map(|link| {
            let (target, params) = link.trim().split_once(';')?;
            let is_next = params.split(';').any(|param| {
                param
                    .trim()
                    .strip_prefix("rel=")
                    .is_some_and(|rel| rel.trim_matches('"').split(' ').any(|r| r == "next"))
            });
            let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
            is_next.then(|| target.to_string())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn links() {
        let okta = headers(&[
            (
                "link",
                "<https://o.okta.com/api/v1/users?limit=2>; rel=\"self\"",
            ),
            (
                "link",
                "<https://o.okta.com/api/v1/users?after=00u2&limit=2>; rel=\"next\"",
            ),
        ]);
        assert_eq!(
            next_link(&okta).as_deref(),
            Some("https://o.okta.com/api/v1/users?after=00u2&limit=2")
        );
        let one_header = headers(&[("link", "<a>; rel=\"self\", <b>; rel=next")]);
        assert_eq!(next_link(&one_header).as_deref(), Some("b"));
        assert_eq!(next_link(&headers(&[("link", "<a>; rel=\"self\"")])), None);
        assert_eq!(next_link(&HeaderMap::new()), None);
    }

    #[test]
    fn reset_waits_are_bounded() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let wait = |reset: u64| reset_wait(&headers(&[("x-ratelimit-reset", &reset.to_string())]));
        assert_eq!(wait(now - 10), Some(Duration::from_millis(100)));
        assert!(wait(now + 2).unwrap() <= Duration::from_secs(2));
        assert_eq!(wait(now + 3600), Some(MAX_WAIT));
        let okta = headers(&[("x-rate-limit-reset", &(now + 1).to_string())]);
        assert!(reset_wait(&okta).is_some());
        assert_eq!(reset_wait(&HeaderMap::new()), None);
    }
}

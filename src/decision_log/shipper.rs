//! The HTTP sink's shipper: sends the spool's sealed segments to the collector, oldest first,
//! one POST each, and deletes a segment only after a 2xx. Failures are retried with a backoff
//! doubling from 200 ms to 30 s, for as long as it takes: records leave the spool only by
//! delivery (at least once: a 2xx lost on the way means the batch is sent again). Runs on a
//! thread and runtime of its own, so that requests never wait on the collector.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntGauge};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};

use super::spool::{sealed_segments, SpoolBytes};
use super::{HttpSink, ShipFormat};

const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often an idle shipper looks for sealed segments.
const IDLE_POLL: Duration = Duration::from_millis(50);
/// Least time between two warnings about a failing collector.
const WARNING_EVERY: Duration = Duration::from_secs(10);

/// The shipper's counters.
pub struct ShipperMetrics {
    pub shipped: IntCounter,
    pub failures: IntCounter,
    pub spool_bytes: IntGauge,
}

pub fn start(
    settings: HttpSink,
    bytes: Arc<SpoolBytes>,
    metrics: ShipperMetrics,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = reqwest::Client::builder()
        .timeout(settings.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(std::io::Error::other)?;
    std::thread::Builder::new()
        .name("portcullis-shipper".to_string())
        .spawn(move || {
            runtime.block_on(
                Shipper {
                    settings,
                    client,
                    bytes,
                    metrics,
                    last_warning: None,
                }
                .run(),
            )
        })?;
    Ok(())
}

struct Shipper {
    settings: HttpSink,
    client: reqwest::Client,
    bytes: Arc<SpoolBytes>,
    metrics: ShipperMetrics,
    last_warning: Option<Instant>,
}

impl Shipper {
    async fn run(mut self) {
        loop {
            self.metrics
                .spool_bytes
                .set(i64::try_from(self.bytes.get()).unwrap_or(i64::MAX));
            let segments = match sealed_segments(&self.settings.spool_dir) {
                Ok(segments) => segments,
                Err(e) => {
                    self.warn(&format!(
                        "cannot read the decision log spool {}: {e}",
                        self.settings.spool_dir.display()
                    ));
                    Vec::new()
                }
            };
            if segments.is_empty() {
                tokio::time::sleep(IDLE_POLL).await;
                continue;
            }
            for segment in segments {
                self.deliver(&segment).await;
            }
        }
    }

    /// Sends one segment until the collector takes it, then deletes it.
    async fn deliver(&mut self, segment: &Path) {
        let body = match std::fs::read(segment) {
            Ok(body) => body,
            Err(e) => {
                self.warn(&format!("cannot read {}: {e}", segment.display()));
                tokio::time::sleep(FIRST_BACKOFF).await;
                return;
            }
        };
        let lines = body.iter().filter(|b| **b == b'\n').count() as u64;
        let payload = payload(self.settings.format, &body);
        let mut backoff = FIRST_BACKOFF;
        loop {
            match self.post(payload.clone()).await {
                Ok(()) => break,
                Err(reason) => {
                    self.metrics.failures.inc();
                    self.warn(&format!(
                        "the decision log collector {} did not take a batch ({reason}); \
                         retrying, records wait in {} ({} bytes)",
                        self.settings.url,
                        self.settings.spool_dir.display(),
                        self.bytes.get()
                    ));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        if let Err(e) = std::fs::remove_file(segment) {
            // Left in place it would be sent again: at least once, never lost.
            self.warn(&format!(
                "cannot delete the sent {}: {e}",
                segment.display()
            ));
            return;
        }
        self.bytes.release(body.len() as u64);
        self.metrics.shipped.inc_by(lines);
    }

    async fn post(&self, payload: Vec<u8>) -> Result<(), String> {
        let content_type = match self.settings.format {
            ShipFormat::Ndjson => "application/x-ndjson",
            ShipFormat::SplunkHec => "application/json",
        };
        let mut request = self
            .client
            .post(self.settings.url.clone())
            .header(CONTENT_TYPE, content_type)
            .body(payload);
        if let Some(token) = &self.settings.token {
            let token = token.read().map_err(|e| e.to_string())?;
            let scheme = match self.settings.format {
                ShipFormat::Ndjson => "Bearer",
                ShipFormat::SplunkHec => "Splunk",
            };
            let mut value = reqwest::header::HeaderValue::from_str(&format!("{scheme} {token}"))
                .map_err(|_| "the token is not a valid header value".to_string())?;
            value.set_sensitive(true);
            request = request.header(AUTHORIZATION, value);
        }
        match request.send().await {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(format!("answered {}", response.status())),
            Err(e) => Err(e.to_string()),
        }
    }

    fn warn(&mut self, message: &str) {
        if self
            .last_warning
            .is_none_or(|at| at.elapsed() >= WARNING_EVERY)
        {
            log::warn!("{message}");
            self.last_warning = Some(Instant::now());
        }
    }
}

/// The POST body for a segment of JSON lines: as is (NDJSON), or each line wrapped as a Splunk
/// HEC event.
fn payload(format: ShipFormat, lines: &[u8]) -> Vec<u8> {
    match format {
        ShipFormat::Ndjson => lines.to_vec(),
        ShipFormat::SplunkHec => {
            let mut out = Vec::with_capacity(lines.len() + lines.len() / 4);
            for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                out.extend_from_slice(b"{\"sourcetype\":\"portcullis:decision\",\"event\":");
                out.extend_from_slice(line);
                out.extend_from_slice(b"}\n");
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hec_wraps_each_record_and_ndjson_sends_it_as_is() {
        let lines = b"{\"a\":1}\n{\"b\":2}\n";
        assert_eq!(payload(ShipFormat::Ndjson, lines), lines.to_vec());
        let hec = String::from_utf8(payload(ShipFormat::SplunkHec, lines)).unwrap();
        let events: Vec<serde_json::Value> = hec
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(events.len(), 2);
        assert_eq!(events[1]["event"]["b"], 2);
        assert_eq!(events[0]["sourcetype"], "portcullis:decision");
    }
}
